//! Compiling a mapping file: every check that can be made before a row is read.

use std::collections::HashMap;

use indexmap::IndexMap;
use regex::Regex;
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use super::expr::Expr;
use super::spec::{ColumnSpec, FieldSpec, MappingSpec, SourceSpec, TrailerSpec};
use super::transforms::{DateFormat, PeriodFormat};
use super::{JsonType, MappingDiagnostic, MappingError, SchemaLookup, TargetSchema, did_you_mean};
use crate::formats::csv::{ControlMatch, CsvOptions};
use crate::formats::encoding::Encoding;
use crate::formats::fixed_width::{FixedColumn, FixedWidthOptions, RecordKind, RecordLayout};
use crate::formats::json::JsonOptions;
use crate::formats::spreadsheet::{SheetRef, SpreadsheetOptions};
use crate::formats::xml::XmlOptions;
use crate::formats::{ColumnRef, FormatOptions, Header};
use crate::pii::PiiClass;

/// What to do when a file's control totals do not match what was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlPolicy {
    /// Keep the batch's messages back until an operator releases them.
    Hold,
    /// Publish anyway; the mismatch is still reported.
    Publish,
}

/// The control-record checks of a feed.
#[derive(Debug, Clone)]
pub struct ControlSpec {
    /// Trailer column with the detail-row count.
    pub count_column: Option<ColumnRef>,
    /// Trailer column with the control total.
    pub total_column: Option<ColumnRef>,
    /// Source column summed (as money) for the control total.
    pub total_of: Option<ColumnRef>,
    /// Amounts in the trailer and the summed column are whole pence (`0012345`), not pounds.
    pub amounts_in_pence: bool,
}

/// How to read the feed's files.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The format and its decoding options.
    pub format: FormatOptions,
    /// Control checks, when the file has a trailer.
    pub control: Option<ControlSpec>,
    /// What a control mismatch does.
    pub on_control_mismatch: ControlPolicy,
}

/// Where a value comes from: a column of the record, or where the record is (`$file`,
/// `$line`, `$row`), for sources whose rows carry no identifier of their own.
#[derive(Debug, Clone)]
pub(super) enum SourceRef {
    Column(ColumnRef),
    Meta(Meta),
}

/// A record's place, usable as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Meta {
    File,
    Line,
    Row,
    /// The feed's "as at" date (`as_at:` in council.yaml), empty when it supplies none.
    AsAt,
    /// Where `$as_at` came from: `configuration` or `received`.
    AsAtSource,
}

const META: &[(&str, Meta)] = &[
    ("$file", Meta::File),
    ("$line", Meta::Line),
    ("$row", Meta::Row),
    ("$as_at", Meta::AsAt),
    ("$as_at_source", Meta::AsAtSource),
];

/// A source reference resolved against a header.
#[derive(Debug, Clone)]
pub(super) enum Bound {
    Column(usize, String),
    Meta(Meta),
    /// A path the record does not have (tree formats): the value is empty.
    Missing(String),
    /// A value the feed supplies (`$as_at`), the same for every record of the file.
    Supplied(String),
}

/// When a field is filled.
#[derive(Debug, Clone)]
pub(super) struct Condition {
    pub source: SourceRef,
    pub test: ConditionTest,
    pub negate: bool,
}

#[derive(Debug, Clone)]
pub(super) enum ConditionTest {
    Equals(String),
    In(Vec<String>),
    Matches(Regex),
}

impl Condition {
    pub(super) fn holds(&self, value: &str) -> bool {
        let v = value.trim().to_lowercase();
        let result = match &self.test {
            ConditionTest::Equals(e) => v == *e,
            ConditionTest::In(list) => list.contains(&v),
            ConditionTest::Matches(r) => r.is_match(value.trim()),
        };
        result != self.negate
    }
}

#[derive(Debug, Clone)]
pub(super) enum FieldSource {
    Column(SourceRef),
    Concat(Vec<SourceRef>, String),
    Coalesce(Vec<SourceRef>),
    Literal(Value),
    /// `each:`: an array of objects, one per occurrence of a repeated element.
    Each(std::sync::Arc<Each>),
}

/// An `each:` field: the repeated element's path and the mapping of one element (its fields,
/// with no key), applied to each occurrence as a record of the paths below the element.
#[derive(Debug)]
pub(super) struct Each {
    pub element: String,
    pub mapping: Mapping,
}

/// The fields of one element of an array of objects, as a target for the element's fields.
struct ItemTarget<'a> {
    target: &'a dyn TargetSchema,
    array: &'a str,
}

impl TargetSchema for ItemTarget<'_> {
    fn field(&self, path: &str) -> Option<super::TargetField> {
        self.target.item_field(self.array, path)
    }
    fn fields(&self) -> Vec<String> {
        self.target.item_fields(self.array).unwrap_or_default()
    }
    fn required(&self) -> Vec<String> {
        self.target.item_required(self.array)
    }
}

#[derive(Debug, Clone)]
pub(super) enum Transform {
    Trim,
    Upper,
    Lower,
    Compact,
    Digits,
    Date(Vec<DateFormat>),
    /// A month, quarter, range or financial period: `{start, end, precision}`.
    Period(Vec<PeriodFormat>),
    Money,
    Pence,
    Integer,
    Decimal,
    Boolean,
    Map {
        values: HashMap<String, Value>,
        default: Option<Value>,
    },
    Split {
        separator: String,
        index: usize,
    },
    Pad {
        length: usize,
        with: char,
        left: bool,
    },
    Regex {
        pattern: Regex,
        group: usize,
    },
    Multiply(f64),
    Divide(f64),
    Round(u32),
    /// A jq program; its output may be of any type.
    Expr(Expr),
}

impl Transform {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Transform::Trim => "trim",
            Transform::Upper => "upper",
            Transform::Lower => "lower",
            Transform::Compact => "compact",
            Transform::Digits => "digits",
            Transform::Date(_) => "date",
            Transform::Period(_) => "period",
            Transform::Money => "money",
            Transform::Pence => "pence",
            Transform::Integer => "integer",
            Transform::Decimal => "decimal",
            Transform::Boolean => "boolean",
            Transform::Map { .. } => "map",
            Transform::Split { .. } => "split",
            Transform::Pad { .. } => "pad",
            Transform::Regex { .. } => "regex",
            Transform::Multiply(_) => "multiply",
            Transform::Divide(_) => "divide",
            Transform::Round(_) => "round",
            Transform::Expr(_) => "expr",
        }
    }
}

const TRANSFORMS: &[&str] = &[
    "trim", "upper", "lower", "compact", "digits", "date", "period", "money", "pence", "integer",
    "decimal", "split", "pad", "regex", "multiply", "divide", "round", "lookup", "boolean", "map",
    "expr",
];

#[derive(Debug, Clone)]
pub(super) struct CompiledField {
    pub path: String,
    pub segments: Vec<String>,
    pub source: FieldSource,
    pub transforms: Vec<Transform>,
    pub required: bool,
    pub default: Option<Value>,
    pub null_if: Vec<String>,
    /// Marker (lower case) → null reason.
    pub null_reasons: Vec<(String, String)>,
    pub pii: Option<PiiClass>,
    /// Where the field is in the mapping file.
    pub line: u64,
    pub column: u64,
    pub when: Option<Condition>,
}

/// A compiled mapping: immutable, cheap to apply, shared by every record of a feed.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Mapping id.
    pub id: String,
    /// Mapping version.
    pub version: u32,
    /// Canonical entity (`payroll.pay_result`).
    pub entity: String,
    /// Event action (`upserted`).
    pub action: String,
    /// The mapping file.
    pub file: String,
    /// How to read the source.
    pub source: SourceOptions,
    /// Key fields, in order.
    pub key: Vec<String>,
    pub(super) fields: Vec<CompiledField>,
    /// The further records each source row makes (`also:`), each of its own entity, with this
    /// mapping's id, version and source.
    pub also: Vec<Mapping>,
}

/// A mapping's columns resolved against one file's header.
#[derive(Debug, Clone)]
pub struct Binding {
    pub(super) columns: Vec<Vec<Bound>>,
    pub(super) conditions: Vec<Option<Bound>>,
    public_columns: Vec<bool>,
}

impl Binding {
    /// Gives `$as_at` the feed's "as at" date (`YYYY-MM-DD`) and `$as_at_source` its
    /// provenance (`configuration`, `received`); without one they read as empty.
    pub fn supply_as_at(mut self, as_at: Option<(&str, &str)>) -> Self {
        let Some((date, source)) = as_at else {
            return self;
        };
        for b in self
            .columns
            .iter_mut()
            .flatten()
            .chain(self.conditions.iter_mut().flatten())
        {
            match b {
                Bound::Meta(Meta::AsAt) => *b = Bound::Supplied(date.to_string()),
                Bound::Meta(Meta::AsAtSource) => *b = Bound::Supplied(source.to_string()),
                _ => {}
            }
        }
        self
    }

    /// Whether the value at a 0-based column may be shown unmasked: true only for columns that
    /// feed canonical fields none of which is classified as personal data. Unmapped columns are
    /// masked too, since nothing says what they hold.
    pub fn is_public_column(&self, index: usize) -> bool {
        self.public_columns.get(index).copied().unwrap_or(false)
    }
}

impl Mapping {
    /// Resolves the mapping's columns against a record's header the way its format wants:
    /// strictly for tabular files (one header for the whole file), leniently for tree formats
    /// (XML, JSON), whose records each carry their own paths and may leave optional ones out.
    pub fn bind_for(&self, header: &Header) -> Result<Binding, MappingError> {
        if self.source.format.per_record_header() {
            Ok(self.bind_lenient(header))
        } else {
            self.bind(header)
        }
    }

    /// Resolves the columns of one tree record: a path it lacks reads as empty.
    pub fn bind_lenient(&self, header: &Header) -> Binding {
        match self.bind_inner(header, false) {
            Ok(b) => b,
            Err(_) => unreachable!("lenient binding reports no missing column"),
        }
    }

    /// Resolves the mapping's columns against a file's header. A mapped column missing from the
    /// file makes the whole file unusable with this mapping.
    pub fn bind(&self, header: &Header) -> Result<Binding, MappingError> {
        self.bind_inner(header, true)
    }

    fn bind_inner(&self, header: &Header, strict: bool) -> Result<Binding, MappingError> {
        let mut diagnostics = Vec::new();
        let mut columns = Vec::with_capacity(self.fields.len());
        let mut conditions = Vec::with_capacity(self.fields.len());
        let mut public: Vec<Option<bool>> = vec![None; header.names().len()];
        for field in &self.fields {
            let mut refs: Vec<&SourceRef> = match &field.source {
                FieldSource::Column(c) => vec![c],
                FieldSource::Concat(cs, _) | FieldSource::Coalesce(cs) => cs.iter().collect(),
                FieldSource::Literal(_) | FieldSource::Each(_) => vec![],
            };
            // The condition's column is resolved with the others, then taken off the end.
            if let Some(w) = &field.when {
                refs.push(&w.source);
            }
            let mut resolved = Vec::new();
            for r in refs {
                let c = match r {
                    SourceRef::Meta(m) => {
                        resolved.push(Bound::Meta(*m));
                        continue;
                    }
                    SourceRef::Column(c) => c,
                };
                match c.resolve(header) {
                    Some(i)
                        if !matches!(c, ColumnRef::Position(_))
                            || i < header.names().len()
                            || header.names().is_empty() =>
                    {
                        let name = header
                            .names()
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| (i + 1).to_string());
                        if let Some(p) = public.get_mut(i) {
                            *p = Some(p.unwrap_or(true) && field.pii.is_none());
                        }
                        resolved.push(Bound::Column(i, name));
                    }
                    _ if !strict => resolved.push(Bound::Missing(c.to_string())),
                    _ => {
                        let hint = match c {
                            ColumnRef::Name(n) | ColumnRef::Occurrence(n, _) => {
                                did_you_mean(n, header.names().iter().map(String::as_str))
                                    .map(|s| format!(" Did you mean \"{s}\"?"))
                                    .unwrap_or_default()
                            }
                            ColumnRef::Position(_) => String::new(),
                        };
                        diagnostics.push(MappingDiagnostic {
                            file: self.file.clone(),
                            line: field.line,
                            column: field.column,
                            field: Some(field.path.clone()),
                            // The header's names are not listed: when a title row is missing
                            // the "header" is the first data row (names, pay, bank details).
                            message: format!(
                                "the file has no column {c} (its header row has {} columns; \
                                 compare it with the mapping, and check `skip_rows` or \
                                 `header_match` if the header is not the first row).{hint}",
                                header.names().len()
                            ),
                            excerpt: None,
                        });
                    }
                }
            }
            conditions.push(if field.when.is_some() {
                resolved.pop()
            } else {
                None
            });
            columns.push(resolved);
        }
        if diagnostics.is_empty() {
            Ok(Binding {
                columns,
                conditions,
                public_columns: public.into_iter().map(|p| p.unwrap_or(false)).collect(),
            })
        } else {
            Err(MappingError::Invalid {
                file: self.file.clone(),
                diagnostics,
            })
        }
    }

    /// The records each source row makes: this mapping's own, then those of `also:`.
    pub fn records(&self) -> impl Iterator<Item = &Mapping> {
        std::iter::once(self).chain(self.also.iter())
    }

    /// The canonical field paths this mapping fills, in file order.
    pub fn field_paths(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.path.as_str())
    }
}

struct Ctx<'a> {
    file: &'a str,
    diagnostics: Vec<MappingDiagnostic>,
    tables: &'a dyn Fn(&str) -> Result<String, String>,
}

impl Ctx<'_> {
    fn at(&mut self, loc: &Location, field: Option<&str>, message: impl Into<String>) {
        self.diagnostics.push(MappingDiagnostic {
            file: self.file.to_string(),
            line: loc.line(),
            column: loc.column(),
            field: field.map(str::to_owned),
            message: message.into(),
            excerpt: None,
        });
    }
}

pub(super) fn compile(
    file: &str,
    text: &str,
    schemas: &dyn SchemaLookup,
    tables: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Mapping, MappingError> {
    compile_inner(file, text, schemas, tables, false).map(|(m, _)| m)
}

/// As [`compile`], but for a draft being previewed: when the YAML reads, the entity exists and
/// the source options compile, the fields that compile make a mapping, returned with the
/// problems of the rest (missing required fields, a bad transform, an empty key).
pub(super) fn compile_draft(
    file: &str,
    text: &str,
    schemas: &dyn SchemaLookup,
    tables: &dyn Fn(&str) -> Result<String, String>,
) -> Result<(Mapping, Vec<MappingDiagnostic>), MappingError> {
    compile_inner(file, text, schemas, tables, true)
}

fn compile_inner(
    file: &str,
    text: &str,
    schemas: &dyn SchemaLookup,
    tables: &dyn Fn(&str) -> Result<String, String>,
    lenient: bool,
) -> Result<(Mapping, Vec<MappingDiagnostic>), MappingError> {
    let spec: MappingSpec = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        MappingError::Invalid {
            file: file.to_string(),
            diagnostics: vec![MappingDiagnostic {
                file: file.to_string(),
                line,
                column,
                field: None,
                message: first_line(&e.to_string()),
                excerpt: (line as usize)
                    .checked_sub(1)
                    .and_then(|i| text.lines().nth(i))
                    .map(str::to_owned),
            }],
        }
    })?;
    let mut cx = Ctx {
        file,
        diagnostics: Vec::new(),
        tables,
    };

    let source = compile_source(&mut cx, &spec.source);
    let main = compile_record(
        &mut cx,
        schemas,
        &spec.entity,
        spec.action.as_ref(),
        &spec.key,
        &spec.fields,
    );
    let mut also = Vec::new();
    for a in &spec.also {
        also.push(compile_record(
            &mut cx,
            schemas,
            &a.value.entity,
            a.value.action.as_ref(),
            &a.value.key,
            &a.value.fields,
        ));
    }
    for (i, a) in spec.also.iter().enumerate() {
        let entity = &a.value.entity;
        let before = std::iter::once(&spec.entity.value)
            .chain(spec.also[..i].iter().map(|b| &b.value.entity.value));
        if before.into_iter().any(|e| *e == entity.value) {
            cx.at(
                &entity.referenced,
                None,
                format!("the mapping already makes a `{}` record from each row: each record of `also:` is of another entity", entity.value),
            );
        }
    }
    let all_known = main.known && also.iter().all(|a| a.known);

    if !cx.diagnostics.is_empty() {
        let lines: Vec<&str> = text.lines().collect();
        for d in &mut cx.diagnostics {
            d.excerpt = (d.line as usize)
                .checked_sub(1)
                .and_then(|i| lines.get(i))
                .map(|l| l.to_string());
        }
        if !(lenient && all_known && source.is_some()) {
            return Err(MappingError::Invalid {
                file: file.to_string(),
                diagnostics: cx.diagnostics,
            });
        }
    }
    let source = source.expect("no diagnostics (or a lenient draft) means source compiled");
    let make = |r: RecordParts| Mapping {
        id: spec.mapping.value.clone(),
        version: spec.version,
        entity: r.entity,
        action: r.action,
        file: file.to_string(),
        source: source.clone(),
        key: r.key,
        fields: r.fields,
        also: Vec::new(),
    };
    let mut mapping = make(main);
    mapping.also = also.into_iter().map(make).collect();
    Ok((mapping, cx.diagnostics))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

fn source_ref(c: &ColumnSpec) -> SourceRef {
    match c {
        ColumnSpec::Name(n) if n.starts_with('$') => {
            match META.iter().find(|(name, _)| name == n) {
                Some((_, m)) => SourceRef::Meta(*m),
                // Unknown `$names` are reported by `check_meta`; treat as a column until then.
                None => SourceRef::Column(column_ref(c)),
            }
        }
        _ => SourceRef::Column(column_ref(c)),
    }
}

fn check_meta(cx: &mut Ctx, loc: &Location, path: &str, c: &ColumnSpec) {
    if let ColumnSpec::Name(n) = c
        && n.starts_with('$')
        && !META.iter().any(|(name, _)| name == n)
    {
        let names: Vec<&str> = META.iter().map(|(n, _)| *n).collect();
        cx.at(
            loc,
            Some(path),
            format!(
                "unknown record property `{n}` (known: {})",
                names.join(", ")
            ),
        );
    }
}

fn column_ref(c: &ColumnSpec) -> ColumnRef {
    match c {
        ColumnSpec::Position(p) => ColumnRef::Position(*p),
        ColumnSpec::Name(n) => ColumnRef::Name(n.clone()),
        ColumnSpec::Occurrence { name, occurrence } => {
            ColumnRef::Occurrence(name.clone(), *occurrence)
        }
    }
}

fn one_byte(cx: &mut Ctx, s: &Option<Spanned<String>>, what: &str, default: u8) -> u8 {
    match s {
        None => default,
        Some(sp) => {
            let v = if sp.value == "\\t" || sp.value == "tab" {
                "\t"
            } else {
                sp.value.as_str()
            };
            if v.len() == 1 {
                v.as_bytes()[0]
            } else {
                cx.at(
                    &sp.referenced,
                    None,
                    format!("`{what}` must be a single character"),
                );
                default
            }
        }
    }
}

const FORMATS: &[&str] = &["csv", "fixed_width", "xml", "json", "ndjson", "spreadsheet"];

fn regex(cx: &mut Ctx, spec: Option<&Spanned<String>>, what: &str) -> Option<Regex> {
    let p = spec?;
    match Regex::new(&p.value) {
        Ok(r) => Some(r),
        Err(e) => {
            cx.at(
                &p.referenced,
                None,
                format!(
                    "`{what}` is not a valid regular expression: {}",
                    first_line(&e.to_string())
                ),
            );
            None
        }
    }
}

fn compile_source(cx: &mut Ctx, spec: &Spanned<SourceSpec>) -> Option<SourceOptions> {
    let s = &spec.value;
    let format = s.format.value.as_str();
    if !FORMATS.contains(&format) {
        let hint = did_you_mean(format, FORMATS.iter().copied())
            .map(|f| format!(" Did you mean `{f}`?"))
            .unwrap_or_default();
        cx.at(
            &s.format.referenced,
            None,
            format!(
                "unknown source format `{format}` (formats: {}).{hint}",
                FORMATS.join(", ")
            ),
        );
        return None;
    }
    // Options that belong to another format are mistakes, not silently ignored.
    let options: [(&str, Option<Location>, &[&str]); 8] = [
        (
            "delimiter",
            s.delimiter.as_ref().map(|d| d.referenced),
            &["csv"],
        ),
        ("quote", s.quote.as_ref().map(|d| d.referenced), &["csv"]),
        (
            "header_match",
            s.header_match.as_ref().map(|d| d.referenced),
            &["csv", "spreadsheet"],
        ),
        (
            "records",
            s.records.as_ref().map(|d| d.referenced),
            &["fixed_width"],
        ),
        (
            "record_path",
            s.record_path.as_ref().map(|d| d.referenced),
            &["xml"],
        ),
        (
            "control_path",
            s.control_path.as_ref().map(|d| d.referenced),
            &["xml"],
        ),
        (
            "records_at",
            s.records_at.as_ref().map(|d| d.referenced),
            &["json"],
        ),
        (
            "sheet",
            s.sheet.as_ref().map(|d| d.referenced),
            &["spreadsheet"],
        ),
    ];
    for (name, loc, formats) in options {
        if let Some(loc) = loc
            && !formats.contains(&format)
        {
            cx.at(
                &loc,
                None,
                format!(
                    "`{name}` does not apply to `format: {format}` (only to {})",
                    formats.join(", ")
                ),
            );
        }
    }
    let encoding = match &s.encoding {
        None => Encoding::AUTO,
        Some(e) => Encoding::for_label(&e.value).unwrap_or_else(|| {
            cx.at(
                &e.referenced,
                None,
                format!(
                    "unknown encoding `{}` (try utf-8, windows-1252, iso-8859-1, utf-16le)",
                    e.value
                ),
            );
            Encoding::UTF_8
        }),
    };
    let on_control_mismatch = match s
        .on_control_mismatch
        .as_ref()
        .map(|p| (p.value.as_str(), p.referenced))
    {
        None | Some(("hold", _)) => ControlPolicy::Hold,
        Some(("publish", _)) => ControlPolicy::Publish,
        Some((other, loc)) => {
            cx.at(
                &loc,
                None,
                format!("`on_control_mismatch` is `hold` or `publish`, not `{other}`"),
            );
            ControlPolicy::Hold
        }
    };
    let (control_match, control) = match &s.trailer {
        None => (None, None),
        Some(t) => compile_trailer(cx, t, format),
    };
    let options = match format {
        "csv" => FormatOptions::Csv(CsvOptions {
            encoding,
            delimiter: one_byte(cx, &s.delimiter, "delimiter", b','),
            quote: one_byte(cx, &s.quote, "quote", b'"'),
            skip_rows: s.skip_rows,
            header: s.header,
            header_match: regex(cx, s.header_match.as_ref(), "header_match"),
            control_match,
        }),
        "spreadsheet" => FormatOptions::Spreadsheet(SpreadsheetOptions {
            sheet: match s.sheet.as_ref().map(|s| &s.value) {
                None => SheetRef::Index(1),
                Some(ColumnSpec::Position(i)) => SheetRef::Index(*i),
                Some(ColumnSpec::Name(n)) => SheetRef::Name(n.clone()),
                Some(ColumnSpec::Occurrence { name, .. }) => SheetRef::Name(name.clone()),
            },
            skip_rows: s.skip_rows,
            header: s.header,
            header_match: regex(cx, s.header_match.as_ref(), "header_match"),
            control_match,
        }),
        "xml" => {
            let Some(path) = &s.record_path else {
                cx.at(&spec.referenced, None, "`format: xml` needs `record_path`, the element path of one record (e.g. `Invoice/InvoiceLine`)");
                return None;
            };
            FormatOptions::Xml(XmlOptions {
                encoding: s.encoding.as_ref().map(|_| encoding),
                record_path: path.value.clone(),
                control_path: s.control_path.as_ref().map(|p| p.value.clone()),
            })
        }
        "json" | "ndjson" => {
            let records_at = s
                .records_at
                .as_ref()
                .map(|p| p.value.clone())
                .unwrap_or_default();
            if let Err(e) = crate::formats::json::parse_pointer(&records_at) {
                let loc = s
                    .records_at
                    .as_ref()
                    .map(|p| p.referenced)
                    .unwrap_or(spec.referenced);
                cx.at(
                    &loc,
                    None,
                    format!("`records_at` is not a JSON pointer: {e}"),
                );
            }
            FormatOptions::Json(JsonOptions {
                records_at,
                ndjson: format == "ndjson",
            })
        }
        _ => FormatOptions::FixedWidth(compile_records(cx, s, encoding, &spec.referenced)?),
    };
    Some(SourceOptions {
        format: options,
        control,
        on_control_mismatch,
    })
}

fn compile_records(
    cx: &mut Ctx,
    s: &SourceSpec,
    encoding: Encoding,
    at: &Location,
) -> Option<FixedWidthOptions> {
    let Some(records) = &s.records else {
        cx.at(
            at,
            None,
            "`format: fixed_width` needs `records:`, the layout of each record type",
        );
        return None;
    };
    let mut layouts = Vec::new();
    for r in &records.value {
        let kind = match r.kind.as_str() {
            "detail" => RecordKind::Detail,
            "trailer" => RecordKind::Control,
            "skip" => RecordKind::Skip,
            other => {
                cx.at(
                    &records.referenced,
                    None,
                    format!("record `kind` is detail, trailer or skip, not `{other}`"),
                );
                continue;
            }
        };
        for c in &r.columns {
            if c.start == 0 || c.length == 0 {
                cx.at(
                    &records.referenced,
                    None,
                    format!(
                        "column `{}`: `start` is 1-based and `length` at least 1",
                        c.name
                    ),
                );
            }
        }
        if kind != RecordKind::Skip && r.columns.is_empty() {
            cx.at(
                &records.referenced,
                None,
                format!("a `{}` record needs `columns`", r.kind),
            );
        }
        layouts.push(RecordLayout {
            prefix: r.prefix.clone(),
            kind,
            columns: r
                .columns
                .iter()
                .map(|c| FixedColumn {
                    name: c.name.clone(),
                    start: c.start,
                    length: c.length,
                })
                .collect(),
        });
    }
    if layouts
        .iter()
        .filter(|l| l.kind == RecordKind::Detail)
        .count()
        != 1
    {
        cx.at(
            &records.referenced,
            None,
            "`records` must have exactly one `kind: detail` layout",
        );
    }
    Some(FixedWidthOptions {
        encoding,
        records: layouts,
    })
}

fn compile_trailer(
    cx: &mut Ctx,
    t: &Spanned<TrailerSpec>,
    format: &str,
) -> (Option<ControlMatch>, Option<ControlSpec>) {
    let spec = &t.value;
    if spec.total_column.is_some() != spec.total_of.is_some() {
        cx.at(
            &t.referenced,
            None,
            "trailer `total_column` and `total_of` go together: name both or neither",
        );
    }
    let control = ControlSpec {
        count_column: spec.count_column.as_ref().map(column_ref),
        total_column: spec.total_column.as_ref().map(column_ref),
        total_of: spec.total_of.as_ref().map(column_ref),
        amounts_in_pence: match spec.amounts.as_deref() {
            None | Some("pounds") => false,
            Some("pence") => true,
            Some(other) => {
                cx.at(
                    &t.referenced,
                    None,
                    format!("trailer `amounts` is `pounds` or `pence`, not `{other}`"),
                );
                false
            }
        },
    };
    let by_row = matches!(format, "csv" | "spreadsheet");
    let control_match = match (&spec.match_, by_row) {
        (Some(m), true) => match Regex::new(&m.pattern) {
            Ok(pattern) => Some(ControlMatch {
                column: column_ref(&m.column),
                pattern,
            }),
            Err(e) => {
                cx.at(
                    &t.referenced,
                    None,
                    format!(
                        "trailer `match.pattern` is not a valid regular expression: {}",
                        first_line(&e.to_string())
                    ),
                );
                None
            }
        },
        (None, true) => {
            cx.at(
                &t.referenced,
                None,
                format!("a {format} trailer needs `match: {{column, pattern}}` to recognise the trailer row"),
            );
            None
        }
        (Some(_), false) => {
            cx.at(
                &t.referenced,
                None,
                format!("`format: {format}` recognises its control record by layout (fixed_width `kind: trailer`, xml `control_path`); remove `match`"),
            );
            None
        }
        (None, false) => None,
    };
    (control_match, Some(control))
}

/// The JSON type a value has.
fn type_of(v: &Value) -> JsonType {
    match v {
        Value::Null => JsonType::Null,
        Value::Bool(_) => JsonType::Boolean,
        Value::Number(n) if n.is_i64() || n.is_u64() => JsonType::Integer,
        Value::Number(_) => JsonType::Number,
        Value::String(_) => JsonType::String,
        Value::Array(_) => JsonType::Array,
        Value::Object(_) => JsonType::Object,
    }
}

fn accepts(allowed: &[JsonType], got: JsonType) -> bool {
    allowed.contains(&got) || (got == JsonType::Integer && allowed.contains(&JsonType::Number))
}

fn type_name(t: JsonType) -> &'static str {
    match t {
        JsonType::String => "string",
        JsonType::Integer => "integer",
        JsonType::Number => "number",
        JsonType::Boolean => "boolean",
        JsonType::Object => "object",
        JsonType::Array => "array",
        JsonType::Null => "null",
    }
}

fn compile_field(
    cx: &mut Ctx,
    path: &str,
    fs: &Spanned<FieldSpec>,
    target: Option<&dyn TargetSchema>,
) -> Option<CompiledField> {
    let loc = fs.referenced;
    let spec = &fs.value;
    let target_field = target.and_then(|t| t.field(path));
    if let Some(t) = target
        && target_field.is_none()
    {
        let all = t.fields();
        let hint = did_you_mean(path, all.iter().map(String::as_str))
            .map(|s| format!(" Did you mean `{s}`?"))
            .unwrap_or_default();
        cx.at(
            &loc,
            Some(path),
            format!("the canonical entity has no such field.{hint}"),
        );
    }
    let when = compile_when(cx, path, fs);
    if spec.each.is_some() || spec.fields.is_some() {
        return compile_each(cx, path, fs, target, target_field, when);
    }

    const REASONS: [&str; 4] = ["redacted", "not_available", "not_applicable", "vacant"];
    for (marker, reason) in &spec.null_reasons {
        if !REASONS.contains(&reason.as_str()) {
            cx.at(
                &loc,
                Some(path),
                format!(
                    "null reason `{reason}` for `{marker}` is not one of {}",
                    REASONS.join(", ")
                ),
            );
        }
    }
    if !spec.null_reasons.is_empty()
        && let Some(t) = target
        && t.field(&format!("null_reasons.{path}")).is_none()
    {
        cx.at(&loc, Some(path), "the canonical entity records no null reason for this field (no `null_reasons` property for it); use `null_if` to leave it empty");
    }
    let sources = [
        spec.from.is_some(),
        spec.value.is_some(),
        spec.concat.is_some(),
        spec.coalesce.is_some(),
    ];
    let source = match sources.iter().filter(|b| **b).count() {
        1 => {
            if let Some(cs) = &spec.coalesce {
                for c in cs {
                    check_meta(cx, &loc, path, c);
                }
                FieldSource::Coalesce(cs.iter().map(source_ref).collect())
            } else if let Some(c) = &spec.from {
                check_meta(cx, &loc, path, c);
                FieldSource::Column(source_ref(c))
            } else if let Some(v) = &spec.value {
                FieldSource::Literal(v.clone())
            } else {
                let c = spec.concat.as_ref().expect("counted");
                if c.from.is_empty() {
                    cx.at(
                        &loc,
                        Some(path),
                        "`concat.from` must list at least one column",
                    );
                }
                for f in &c.from {
                    check_meta(cx, &loc, path, f);
                }
                FieldSource::Concat(
                    c.from.iter().map(source_ref).collect(),
                    c.separator.clone().unwrap_or_else(|| " ".into()),
                )
            }
        }
        0 => {
            cx.at(
                &loc,
                Some(path),
                "says nowhere where its value comes from: give one of `from`, `value`, `concat` or `coalesce`",
            );
            return None;
        }
        _ => {
            cx.at(
                &loc,
                Some(path),
                "give only one of `from`, `value`, `concat` or `coalesce`",
            );
            return None;
        }
    };
    let mut transforms = Vec::new();
    let mut out = JsonType::String;
    let mut chain_complete = true;
    // After an `expr` the type is unknown until a typing transform: nothing is checked
    // against it (the transforms and the schema validation check the value at run time).
    let mut any = false;
    for t in &spec.transforms {
        let Some(tr) = compile_transform(cx, path, t) else {
            // The output type is unknown now: checking it would only repeat this error.
            chain_complete = false;
            continue;
        };
        let numeric = matches!(
            tr,
            Transform::Multiply(_) | Transform::Divide(_) | Transform::Round(_)
        );
        let expr = matches!(tr, Transform::Expr(_));
        if expr || any {
            // Takes any value, or follows one whose type is unknown.
        } else if numeric && !matches!(out, JsonType::Integer | JsonType::Number) {
            cx.at(
                &t.referenced,
                Some(path),
                format!(
                    "`{}` works on numbers: put `integer`, `decimal` or `money` before it",
                    tr.name()
                ),
            );
        } else if !numeric && out != JsonType::String {
            cx.at(&t.referenced, Some(path), format!("`{}` reads text, but the value is already a {} here; put it earlier in the list", tr.name(), type_name(out)));
        }
        out = match &tr {
            Transform::Multiply(_) | Transform::Divide(_) => JsonType::Number,
            Transform::Round(0) => JsonType::Integer,
            Transform::Round(_) => JsonType::Number,
            Transform::Money | Transform::Pence | Transform::Integer => JsonType::Integer,
            Transform::Decimal => JsonType::Number,
            Transform::Boolean => JsonType::Boolean,
            Transform::Period(_) => JsonType::Object,
            Transform::Map { values, .. } => {
                let types: Vec<JsonType> = values.values().map(type_of).collect();
                types
                    .first()
                    .copied()
                    .filter(|f| types.iter().all(|t| t == f))
                    .unwrap_or(JsonType::String)
            }
            _ => JsonType::String,
        };
        any = expr;
        transforms.push(tr);
    }
    if let FieldSource::Literal(v) = &source {
        if !transforms.is_empty() {
            cx.at(
                &loc,
                Some(path),
                "a literal `value` is used as written; remove its `transforms`",
            );
        }
        out = type_of(v);
    }
    if let Some(tf) = target_field.as_ref().filter(|_| chain_complete) {
        if !any && !accepts(&tf.types, out) {
            let want: Vec<&str> = tf.types.iter().map(|t| type_name(*t)).collect();
            let hint = if tf.types.contains(&JsonType::Integer) && path.ends_with("_pence") {
                " Add the `money` transform."
            } else if tf.types.contains(&JsonType::Integer) {
                " Add the `integer` transform."
            } else if tf.types.contains(&JsonType::Number) {
                " Add the `decimal` transform."
            } else if tf.types.contains(&JsonType::Boolean) {
                " Add the `boolean` transform."
            } else {
                ""
            };
            cx.at(
                &loc,
                Some(path),
                format!(
                    "the canonical model wants {} here but the mapping produces {}.{hint}",
                    want.join(" or "),
                    type_name(out)
                ),
            );
        }
        if let Some(d) = &spec.default
            && !accepts(&tf.types, type_of(d))
        {
            cx.at(
                &loc,
                Some(path),
                format!(
                    "the default is a {} but the canonical model wants {}",
                    type_name(type_of(d)),
                    tf.types
                        .iter()
                        .map(|t| type_name(*t))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            );
        }
    }
    Some(CompiledField {
        path: path.to_string(),
        segments: path.split('.').map(str::to_owned).collect(),
        source,
        transforms,
        required: spec.required,
        default: spec.default.clone(),
        null_if: spec
            .null_if
            .iter()
            .map(|v| v.trim().to_lowercase())
            .collect(),
        null_reasons: spec
            .null_reasons
            .iter()
            .map(|(m, r)| (m.trim().to_lowercase(), r.clone()))
            .collect(),
        pii: target_field.and_then(|f| f.pii),
        line: loc.line(),
        column: loc.column(),
        when,
    })
}

fn pattern_groups(pattern: &str) -> usize {
    Regex::new(pattern)
        .map(|r| r.captures_len() - 1)
        .unwrap_or(0)
}

fn compile_transform(cx: &mut Ctx, path: &str, t: &Spanned<Value>) -> Option<Transform> {
    let loc = t.referenced;
    let (name, arg) = match &t.value {
        Value::String(s) => (s.as_str(), None),
        Value::Object(o) if o.len() == 1 => {
            let (k, v) = o.iter().next().expect("len 1");
            (k.as_str(), Some(v))
        }
        _ => {
            cx.at(
                &loc,
                Some(path),
                "a transform is a name (`trim`) or a name with options (`date: dd/mm/yyyy`)",
            );
            return None;
        }
    };
    let simple = |t: Transform| Some(t);
    match (name, arg) {
        ("trim", None) => simple(Transform::Trim),
        ("upper", None) => simple(Transform::Upper),
        ("lower", None) => simple(Transform::Lower),
        ("compact", None) => simple(Transform::Compact),
        ("digits", None) => simple(Transform::Digits),
        ("money", None) => simple(Transform::Money),
        ("pence", None) => simple(Transform::Pence),
        ("integer", None) => simple(Transform::Integer),
        ("decimal", None) => simple(Transform::Decimal),
        ("boolean", None) => simple(Transform::Boolean),
        ("date", Some(arg)) => {
            let list: Vec<&Value> = match arg {
                Value::Array(a) => a.iter().collect(),
                v => vec![v],
            };
            let mut formats = Vec::new();
            for v in list {
                match v.as_str().map(DateFormat::new) {
                    Some(Ok(f)) => formats.push(f),
                    Some(Err(e)) => cx.at(&loc, Some(path), e),
                    None => cx.at(&loc, Some(path), "`date` takes a format or a list of formats, e.g. `date: [dd/mm/yyyy, d-MMM-yyyy]`"),
                }
            }
            if formats.is_empty() {
                cx.at(&loc, Some(path), "`date` needs at least one format");
                return None;
            }
            Some(Transform::Date(formats))
        }
        ("period", Some(arg)) => {
            let list: Vec<&Value> = match arg {
                Value::Array(a) => a.iter().collect(),
                v => vec![v],
            };
            let mut formats = Vec::new();
            for v in list {
                match v.as_str().map(PeriodFormat::new) {
                    Some(Ok(f)) => formats.push(f),
                    Some(Err(e)) => cx.at(&loc, Some(path), e),
                    None => cx.at(&loc, Some(path), "`period` takes a format or a list of formats, e.g. `period: [MMMM yyyy, yyyy-mm]`"),
                }
            }
            if formats.is_empty() {
                cx.at(&loc, Some(path), "`period` needs at least one format");
                return None;
            }
            Some(Transform::Period(formats))
        }
        ("map", Some(Value::Object(o))) => {
            let mut values = HashMap::new();
            let mut default = None;
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("values", Value::Object(m)) => {
                        for (code, to) in m {
                            values.insert(code.trim().to_string(), to.clone());
                        }
                    }
                    ("default", Value::String(s)) if s == "error" => default = None,
                    ("default", v) => default = Some(v.clone()),
                    (other, _) => cx.at(
                        &loc,
                        Some(path),
                        format!("`map` takes `values` and `default`, not `{other}`"),
                    ),
                }
            }
            if values.is_empty() {
                cx.at(&loc, Some(path), "`map` needs `values: {CODE: value, ...}`");
            }
            Some(Transform::Map { values, default })
        }
        ("lookup", Some(Value::Object(o))) => {
            let get = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
            let (Some(table), Some(key), Some(value)) = (get("table"), get("key"), get("value"))
            else {
                cx.at(&loc, Some(path), "`lookup` takes `table` (a CSV file next to the mapping), `key` and `value` (its columns) and optionally `default`");
                return None;
            };
            let text = match (cx.tables)(&table) {
                Ok(t) => t,
                Err(e) => {
                    cx.at(&loc, Some(path), format!("`lookup`: {e}"));
                    return None;
                }
            };
            let mut reader = ::csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(text.as_bytes());
            let header = reader.headers().cloned().unwrap_or_default();
            let position = |name: &str| {
                header.iter().position(|h| {
                    crate::formats::normalise_name(h) == crate::formats::normalise_name(name)
                })
            };
            let (Some(k), Some(v)) = (position(&key), position(&value)) else {
                cx.at(
                    &loc,
                    Some(path),
                    format!(
                        "`lookup`: {table} has no column `{key}` or `{value}` (its columns: {})",
                        header.iter().collect::<Vec<_>>().join(", ")
                    ),
                );
                return None;
            };
            let mut values = HashMap::new();
            for row in reader.records().flatten() {
                if let (Some(kk), Some(vv)) = (row.get(k), row.get(v)) {
                    values.insert(kk.trim().to_string(), Value::String(vv.trim().to_string()));
                }
            }
            let default = match o.get("default") {
                None => None,
                Some(Value::String(s)) if s == "error" => None,
                Some(d) => Some(d.clone()),
            };
            Some(Transform::Map { values, default })
        }
        ("split", Some(Value::Object(o))) => {
            let separator = o
                .get("separator")
                .and_then(Value::as_str)
                .unwrap_or(",")
                .to_string();
            let index = o.get("index").and_then(Value::as_u64).unwrap_or(1) as usize;
            if separator.is_empty()
                || index == 0
                || o.keys().any(|k| k != "separator" && k != "index")
            {
                cx.at(
                    &loc,
                    Some(path),
                    "`split` takes `separator` (text) and `index` (1-based part)",
                );
                return None;
            }
            Some(Transform::Split { separator, index })
        }
        ("pad", Some(Value::Object(o))) => {
            let length = o.get("length").and_then(Value::as_u64).unwrap_or(0) as usize;
            let with = o.get("with").and_then(Value::as_str).unwrap_or(" ");
            let side = o.get("side").and_then(Value::as_str).unwrap_or("left");
            if length == 0
                || with.chars().count() != 1
                || !matches!(side, "left" | "right")
                || o.keys()
                    .any(|k| !["length", "with", "side"].contains(&k.as_str()))
            {
                cx.at(&loc, Some(path), "`pad` takes `length`, `with` (one character, default space) and `side` (left or right)");
                return None;
            }
            Some(Transform::Pad {
                length,
                with: with.chars().next().unwrap_or(' '),
                left: side == "left",
            })
        }
        ("regex", Some(arg)) => {
            let (pattern, group) = match arg {
                Value::String(p) => (p.clone(), 1),
                Value::Object(o) => (
                    o.get("pattern")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    o.get("group").and_then(Value::as_u64).unwrap_or(1) as usize,
                ),
                _ => (String::new(), 1),
            };
            match Regex::new(&pattern) {
                Ok(r) if r.captures_len() > group => Some(Transform::Regex { pattern: r, group }),
                Ok(_) => {
                    cx.at(&loc, Some(path), format!("`regex` extracts group {group}, but the pattern has {} group(s): put the part to keep in (...)", pattern_groups(&pattern)));
                    None
                }
                Err(e) => {
                    cx.at(
                        &loc,
                        Some(path),
                        format!(
                            "`regex` is not a valid regular expression: {}",
                            first_line(&e.to_string())
                        ),
                    );
                    None
                }
            }
        }
        ("expr", Some(Value::String(program))) => match Expr::compile(program) {
            Ok(e) => Some(Transform::Expr(e)),
            Err(e) => {
                cx.at(&loc, Some(path), e);
                None
            }
        },
        ("expr", _) => {
            cx.at(
                &loc,
                Some(path),
                "`expr` takes a jq program as text, e.g. `expr: '. + \" \" + $record.Surname'`",
            );
            None
        }
        ("multiply" | "divide", Some(v)) => match v.as_f64() {
            Some(x) if name == "divide" && x == 0.0 => {
                cx.at(&loc, Some(path), "`divide` by zero");
                None
            }
            Some(x) if name == "multiply" => Some(Transform::Multiply(x)),
            Some(x) => Some(Transform::Divide(x)),
            None => {
                cx.at(
                    &loc,
                    Some(path),
                    format!("`{name}` takes a number, e.g. `{name}: 37`"),
                );
                None
            }
        },
        ("round", Some(v)) => match v.as_u64() {
            Some(n) if n <= 10 => Some(Transform::Round(n as u32)),
            _ => {
                cx.at(
                    &loc,
                    Some(path),
                    "`round` takes a number of decimal places, 0 to 10",
                );
                None
            }
        },
        (
            "date" | "period" | "map" | "split" | "pad" | "regex" | "multiply" | "divide" | "round"
            | "lookup",
            _,
        ) => {
            cx.at(
                &loc,
                Some(path),
                format!("`{name}` needs options, see docs/mapping-format.md"),
            );
            None
        }
        (name, Some(_)) if TRANSFORMS.contains(&name) => {
            cx.at(
                &loc,
                Some(path),
                format!("`{name}` takes no options; write it as `- {name}`"),
            );
            None
        }
        (name, _) => {
            let hint = did_you_mean(name, TRANSFORMS.iter().copied())
                .map(|s| format!(" Did you mean `{s}`?"))
                .unwrap_or_else(|| format!(" Known transforms: {}.", TRANSFORMS.join(", ")));
            cx.at(
                &loc,
                Some(path),
                format!("unknown transform `{name}`.{hint}"),
            );
            None
        }
    }
}

fn compile_when(cx: &mut Ctx, path: &str, fs: &Spanned<FieldSpec>) -> Option<Condition> {
    let loc = fs.referenced;
    let w = fs.value.when.as_ref()?;
    check_meta(cx, &loc, path, &w.column);
    let tests = [w.equals.is_some(), w.in_.is_some(), w.matches.is_some()];
    if tests.iter().filter(|t| **t).count() != 1 {
        cx.at(&loc, Some(path), "`when` takes `column` and one of `equals`, `in` or `matches` (and optionally `not: true`)");
        return None;
    }
    let test = if let Some(e) = &w.equals {
        ConditionTest::Equals(e.trim().to_lowercase())
    } else if let Some(list) = &w.in_ {
        ConditionTest::In(list.iter().map(|v| v.trim().to_lowercase()).collect())
    } else {
        match Regex::new(w.matches.as_deref().unwrap_or_default()) {
            Ok(r) => ConditionTest::Matches(r),
            Err(e) => {
                cx.at(
                    &loc,
                    Some(path),
                    format!(
                        "`when.matches` is not a valid regular expression: {}",
                        first_line(&e.to_string())
                    ),
                );
                return None;
            }
        }
    };
    Some(Condition {
        source: source_ref(&w.column),
        test,
        negate: w.not,
    })
}

/// An `each:` field: checks that it fills an array of objects and compiles the element's
/// fields against the element's schema (diagnostics name them `lines[].amount_pence`).
fn compile_each(
    cx: &mut Ctx,
    path: &str,
    fs: &Spanned<FieldSpec>,
    target: Option<&dyn TargetSchema>,
    target_field: Option<super::TargetField>,
    when: Option<Condition>,
) -> Option<CompiledField> {
    let loc = fs.referenced;
    let spec = &fs.value;
    let Some(element) = spec.each.as_ref() else {
        cx.at(&loc, Some(path), "`fields:` under a field goes with `each:`, the repeated element whose occurrences fill the array");
        return None;
    };
    let Some(inner) = spec.fields.as_ref().filter(|f| !f.is_empty()) else {
        cx.at(
            &loc,
            Some(path),
            "`each` needs `fields:`, the fields of one element",
        );
        return None;
    };
    if spec.from.is_some()
        || spec.value.is_some()
        || spec.concat.is_some()
        || spec.coalesce.is_some()
        || !spec.transforms.is_empty()
        || spec.default.is_some()
        || !spec.null_if.is_empty()
        || !spec.null_reasons.is_empty()
    {
        cx.at(&loc, Some(path), "`each` takes `fields` (and optionally `required` and `when`): sources, transforms and defaults go on the fields of the element");
    }
    let element = element.trim().trim_end_matches('/').to_string();
    if element.is_empty() || element.contains('[') {
        cx.at(&loc, Some(path), "`each` names the repeated element by its path in the record, without an index (`Employment/NIlettersAndValues`)");
    }
    let scoped = match (target, &target_field) {
        (Some(t), Some(tf)) => {
            match t.item_fields(path) {
                Some(_) => Some(ItemTarget {
                    target: t,
                    array: path,
                }),
                None => {
                    let types: Vec<&str> = tf.types.iter().map(|t| type_name(*t)).collect();
                    cx.at(&loc, Some(path), format!("`each` fills an array of objects, but the canonical model wants {} here", types.join(" or ")));
                    None
                }
            }
        }
        _ => None,
    };
    let before = cx.diagnostics.len();
    let mut fields = Vec::new();
    for (p, f) in inner {
        let t = scoped.as_ref().map(|s| s as &dyn TargetSchema);
        if let Some(c) = compile_field(cx, p, f, t) {
            fields.push(c);
        }
    }
    if let Some(s) = &scoped {
        for req in s.required() {
            if !inner.contains_key(&req) && !inner.keys().any(|k| k.starts_with(&format!("{req}.")))
            {
                cx.at(&loc, Some(&req), format!("every element of `{path}` needs this field but `each` does not fill it; add it under the element's `fields:`"));
            }
        }
    }
    for d in &mut cx.diagnostics[before..] {
        if let Some(f) = &d.field {
            d.field = Some(format!("{path}[].{f}"));
        }
    }
    let mapping = Mapping {
        id: String::new(),
        version: 0,
        entity: String::new(),
        action: String::new(),
        file: cx.file.to_string(),
        source: SourceOptions {
            format: FormatOptions::Json(JsonOptions::default()),
            control: None,
            on_control_mismatch: ControlPolicy::Hold,
        },
        key: Vec::new(),
        fields,
        also: Vec::new(),
    };
    Some(CompiledField {
        path: path.to_string(),
        segments: path.split('.').map(str::to_owned).collect(),
        source: FieldSource::Each(std::sync::Arc::new(Each { element, mapping })),
        transforms: Vec::new(),
        required: spec.required,
        default: None,
        null_if: Vec::new(),
        null_reasons: Vec::new(),
        pii: target_field.and_then(|f| f.pii),
        line: loc.line(),
        column: loc.column(),
        when,
    })
}

/// One record a source row makes: the mapping's own, or one of its `also:` blocks.
struct RecordParts {
    entity: String,
    known: bool,
    action: String,
    key: Vec<String>,
    fields: Vec<CompiledField>,
}

/// Compiles the entity, fields, key and action of one record the mapping makes.
fn compile_record(
    cx: &mut Ctx,
    schemas: &dyn SchemaLookup,
    entity_spec: &Spanned<String>,
    action_spec: Option<&Spanned<String>>,
    key_spec: &Spanned<Vec<String>>,
    fields_spec: &IndexMap<String, Spanned<FieldSpec>>,
) -> RecordParts {
    let entity = entity_spec.value.clone();
    let target = schemas.target(&entity);
    if target.is_none() {
        let all = schemas.entities();
        let hint = did_you_mean(&entity, all.iter().map(String::as_str))
            .map(|s| format!(" Did you mean `{s}`?"))
            .unwrap_or_else(|| format!(" Known entities: {}.", all.join(", ")));
        cx.at(
            &entity_spec.referenced,
            None,
            format!("unknown canonical entity `{entity}`.{hint}"),
        );
    }

    let mut fields = Vec::new();
    for (path, fs) in fields_spec {
        if let Some(f) = compile_field(cx, path, fs, target) {
            fields.push(f);
        }
    }
    if let Some(target) = target {
        for req in target.required() {
            if !fields_spec.contains_key(&req)
                && !fields_spec
                    .keys()
                    .any(|k| k.starts_with(&format!("{req}.")))
            {
                cx.at(
                    &fields_spec.values().next().map(|f| f.referenced).unwrap_or(entity_spec.referenced),
                    Some(&req),
                    format!("`{entity}` requires this field but the mapping does not fill it; add it under `fields:`"),
                );
            }
        }
        for group in target.one_of_groups() {
            let filled = group.iter().any(|alt| {
                fields_spec
                    .keys()
                    .any(|k| k == alt || k.starts_with(&format!("{alt}.")))
                    || (alt == "null_reasons"
                        && fields_spec
                            .values()
                            .any(|f| !f.value.null_reasons.is_empty()))
            });
            if !filled {
                let names = group.join(", ");
                cx.at(
                    &entity_spec.referenced,
                    Some(&format!("one of {names}")),
                    format!("`{entity}` needs one of {names} in every record, and the mapping fills none of them; add one under `fields:`"),
                );
            }
        }
    }
    for k in &key_spec.value {
        match fields.iter_mut().find(|f| &f.path == k) {
            None => cx.at(
                &key_spec.referenced,
                Some(k),
                "a key field must be one of the mapped fields",
            ),
            Some(f) => {
                if f.pii.is_some() {
                    cx.at(&key_spec.referenced, Some(k), "is personal data (x-pii) and cannot be part of the record key, which travels in message headers");
                }
                // A key field is required whether or not it says so: a record without its key
                // cannot be published.
                f.required = true;
            }
        }
    }
    if key_spec.value.is_empty() {
        cx.at(
            &key_spec.referenced,
            None,
            "`key` must name at least one field",
        );
    }
    let action = action_spec
        .map(|a| a.value.clone())
        .unwrap_or_else(|| "upserted".into());
    if !action.chars().all(|c| c.is_ascii_lowercase() || c == '_') || action.is_empty() {
        let loc = action_spec
            .map(|a| a.referenced)
            .unwrap_or(entity_spec.referenced);
        cx.at(
            &loc,
            None,
            "`action` must be lower-case letters and `_` (it is part of the routing key)",
        );
    }

    // A draft's key keeps only the fields that compiled.
    let key = key_spec
        .value
        .iter()
        .filter(|k| fields.iter().any(|f| &f.path == *k))
        .cloned()
        .collect();
    RecordParts {
        known: target.is_some(),
        entity,
        action,
        key,
        fields,
    }
}
