//! Declarative mapping files: load and compile once, then apply to every source record.
//!
//! A mapping turns a [`SourceRecord`] into a canonical JSON object plus its record key, or
//! into a list of [`FieldError`]s naming the field, column and rule that failed. Mapping does no
//! I/O beyond reading its own file in [`load`]; it sees the canonical model only through the
//! [`SchemaLookup`] trait, so it never depends on how schemas are stored or validated.

mod compile;
pub mod control;
mod each;
mod eval;
mod expr;
pub mod golden;
pub mod spec;
pub mod transforms;

use std::path::Path;

pub use compile::{Binding, ControlPolicy, ControlSpec, Mapping, SourceOptions};

use crate::formats::SourceRecord;
use crate::pii::PiiClass;

/// JSON types a schema property may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    /// `string`
    String,
    /// `integer`
    Integer,
    /// `number`
    Number,
    /// `boolean`
    Boolean,
    /// `object`
    Object,
    /// `array`
    Array,
    /// `null`
    Null,
}

/// What a mapping needs to know of one canonical field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetField {
    /// Types the schema allows.
    pub types: Vec<JsonType>,
    /// Personal-data class, from `x-pii`.
    pub pii: Option<PiiClass>,
}

/// The canonical entity a mapping writes, as the mapping compiler sees it.
pub trait TargetSchema {
    /// A field by dotted path (`pay_period.end`), or `None` when the schema has no such field.
    fn field(&self, path: &str) -> Option<TargetField>;
    /// Dotted paths of every leaf field, for suggestions.
    fn fields(&self) -> Vec<String>;
    /// Dotted paths of the fields every record must have.
    fn required(&self) -> Vec<String>;
    /// "At least one of" groups (`anyOf` of `required`): a record needs one field of each.
    fn one_of_groups(&self) -> Vec<Vec<String>> {
        Vec::new()
    }
    /// A field (dotted path) of one element of the array of objects `array`, for `each:`.
    fn item_field(&self, _array: &str, _path: &str) -> Option<TargetField> {
        None
    }
    /// Every leaf field of one element of `array`, or `None` when `array` is not an array of
    /// objects.
    fn item_fields(&self, _array: &str) -> Option<Vec<String>> {
        None
    }
    /// The fields every element of `array` must have.
    fn item_required(&self, _array: &str) -> Vec<String> {
        Vec::new()
    }
}

/// Finds canonical entities by name (`payroll.pay_result`).
pub trait SchemaLookup {
    /// The entity, or `None` when there is no schema for it.
    fn target(&self, entity: &str) -> Option<&dyn TargetSchema>;
    /// Names of every entity, for suggestions.
    fn entities(&self) -> Vec<String>;
}

/// A problem in a mapping file, pointing at the line to fix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MappingDiagnostic {
    /// The mapping file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// The canonical field concerned, if any.
    pub field: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
    /// The mapping's line the problem is on, for a caret excerpt.
    pub excerpt: Option<String>,
}

impl std::fmt::Display for MappingDiagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A mapping that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The file could not be read.
    #[error("cannot read mapping {file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file has mistakes.
    #[error("{} problem(s) in mapping {file}:\n{}", diagnostics.len(), render(diagnostics))]
    Invalid {
        /// The file.
        file: String,
        /// Each mistake.
        diagnostics: Vec<MappingDiagnostic>,
    },
}

fn render(diagnostics: &[MappingDiagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| match &d.excerpt {
            Some(line) if d.line > 0 => {
                let number = d.line.to_string();
                let pad = " ".repeat(number.len());
                let caret = " ".repeat(d.column.saturating_sub(1) as usize);
                format!("  {d}\n    {number} | {line}\n    {pad} | {caret}^")
            }
            _ => format!("  {d}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why one field of one record could not be mapped. `value` is the raw value, kept apart from
/// the message so that what is shown can be masked.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// Canonical field (dotted path).
    pub field: String,
    /// Source column name, when the field comes from one.
    pub column: Option<String>,
    /// The rule that failed: `required`, `date`, `money`, `map`, `schema`...
    pub rule: String,
    /// What is wrong (never contains the value).
    pub message: String,
    /// The raw value.
    pub value: Option<String>,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`", self.field)?;
        if let Some(c) = &self.column {
            write!(f, " (column \"{c}\")")?;
        }
        write!(f, ": {} [{}]", self.message, self.rule)
    }
}

/// A record turned into the canonical model (not yet validated against the schema).
#[derive(Debug, Clone, PartialEq)]
pub struct MappedRecord {
    /// Record key: the key fields' values joined with `/`.
    pub key: String,
    /// The canonical object.
    pub body: serde_json::Map<String, serde_json::Value>,
}

/// Reads and compiles a mapping file against the canonical model.
pub fn load(path: &Path, schemas: &dyn SchemaLookup) -> Result<Mapping, MappingError> {
    let text = std::fs::read_to_string(path).map_err(|source| MappingError::Io {
        file: path.display().to_string(),
        source,
    })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let tables = move |name: &str| {
        let table = dir.join(name);
        std::fs::read_to_string(&table).map_err(|e| format!("cannot read {}: {e}", table.display()))
    };
    compile::compile(&path.display().to_string(), &text, schemas, &tables)
}

/// Reads a mapping being drafted for a preview: the fields that compile make a mapping, returned
/// with the problems of the rest. `Err` only when the YAML does not read, the entity is unknown
/// or the source options are wrong (nothing can be decoded then).
pub fn load_draft(
    path: &Path,
    schemas: &dyn SchemaLookup,
) -> Result<(Mapping, Vec<MappingDiagnostic>), MappingError> {
    let text = std::fs::read_to_string(path).map_err(|source| MappingError::Io {
        file: path.display().to_string(),
        source,
    })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let tables = move |name: &str| {
        let table = dir.join(name);
        std::fs::read_to_string(&table).map_err(|e| format!("cannot read {}: {e}", table.display()))
    };
    compile::compile_draft(&path.display().to_string(), &text, schemas, &tables)
}

/// Compiles a draft's text as [`load_draft`] does (no reference tables).
pub fn compile_draft_str(
    file: &str,
    text: &str,
    schemas: &dyn SchemaLookup,
) -> Result<(Mapping, Vec<MappingDiagnostic>), MappingError> {
    let no_tables = |name: &str| -> Result<String, String> {
        Err(format!(
            "reference table {name}: tables are read next to a mapping file (mapping::load)"
        ))
    };
    compile::compile_draft(file, text, schemas, &no_tables)
}

/// Compiles mapping text (named `file` in diagnostics) against the canonical model.
pub fn compile_str(
    file: &str,
    text: &str,
    schemas: &dyn SchemaLookup,
) -> Result<Mapping, MappingError> {
    let no_tables = |name: &str| -> Result<String, String> {
        Err(format!(
            "reference table {name}: tables are read next to a mapping file (mapping::load)"
        ))
    };
    compile::compile(file, text, schemas, &no_tables)
}

/// Compiles mapping text whose reference tables are given by name (for tests and previews).
pub fn compile_with_tables(
    file: &str,
    text: &str,
    schemas: &dyn SchemaLookup,
    tables: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Mapping, MappingError> {
    compile::compile(file, text, schemas, tables)
}

impl Mapping {
    /// Applies the mapping to one record. `binding` comes from [`Mapping::bind`] on the
    /// record's header.
    pub fn apply(
        &self,
        binding: &Binding,
        record: &SourceRecord,
    ) -> Result<MappedRecord, Vec<FieldError>> {
        eval::apply(self, binding, record)
    }
}

/// The name closest to `wanted` among `candidates`, when close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::normalized_damerau_levenshtein(wanted, c), c))
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
