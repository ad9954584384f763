//! The mapping file as written: serde structures read with serde-saphyr, keeping the line of
//! every field so diagnostics can point at it. Nothing here interprets values; see `compile`.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A mapping file, format v1 (see docs/mapping-format.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// Mapping id, unique in the installation.
    pub mapping: Spanned<String>,
    /// Version of this mapping; bumped on every change.
    pub version: u32,
    /// Canonical entity, `<domain>.<entity>`.
    pub entity: Spanned<String>,
    /// Event action in the routing key.
    #[serde(default)]
    pub action: Option<Spanned<String>>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// How to read the source file.
    pub source: Spanned<SourceSpec>,
    /// Canonical fields whose values identify a record.
    pub key: Spanned<Vec<String>>,
    /// Canonical field → how to fill it.
    pub fields: IndexMap<String, Spanned<FieldSpec>>,
    /// Further records each source row makes, each of another entity (person + employment).
    #[serde(default)]
    pub also: Vec<Spanned<AlsoSpec>>,
}

/// One `also:` block: a further record made from the same source row.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlsoSpec {
    /// Canonical entity, `<domain>.<entity>`.
    pub entity: Spanned<String>,
    /// Event action in the routing key.
    #[serde(default)]
    pub action: Option<Spanned<String>>,
    /// Canonical fields whose values identify the record.
    pub key: Spanned<Vec<String>>,
    /// Canonical field → how to fill it.
    pub fields: IndexMap<String, Spanned<FieldSpec>>,
}

/// The `source:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// `csv`.
    pub format: Spanned<String>,
    /// Character encoding label.
    #[serde(default)]
    pub encoding: Option<Spanned<String>>,
    /// One-character delimiter.
    #[serde(default)]
    pub delimiter: Option<Spanned<String>>,
    /// One-character quote.
    #[serde(default)]
    pub quote: Option<Spanned<String>>,
    /// Rows before the header.
    #[serde(default)]
    pub skip_rows: usize,
    /// Whether there is a header row.
    #[serde(default = "yes")]
    pub header: bool,
    /// Pattern of a header cell: the header is the first row with a matching cell.
    #[serde(default)]
    pub header_match: Option<Spanned<String>>,
    /// Fixed-width record layouts.
    #[serde(default)]
    pub records: Option<Spanned<Vec<RecordSpec>>>,
    /// XML: element path of a record (`Invoice/InvoiceLine`).
    #[serde(default)]
    pub record_path: Option<Spanned<String>>,
    /// XML: element path of the control (trailer or header) element.
    #[serde(default)]
    pub control_path: Option<Spanned<String>>,
    /// JSON: pointer to the array of records (`/workers`; empty for a top-level array).
    #[serde(default)]
    pub records_at: Option<Spanned<String>>,
    /// Spreadsheets: sheet by name or 1-based number (default: the first).
    #[serde(default)]
    pub sheet: Option<Spanned<ColumnSpec>>,
    /// Control (trailer) row.
    #[serde(default)]
    pub trailer: Option<Spanned<TrailerSpec>>,
    /// `hold` or `publish`.
    #[serde(default)]
    pub on_control_mismatch: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

/// A column, by name or by 1-based number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ColumnSpec {
    /// By 1-based position.
    Position(usize),
    /// By header name.
    Name(String),
    /// The n-th column of a repeated header name: `{name: Class Code, occurrence: 2}`.
    Occurrence {
        /// Header name.
        name: String,
        /// 1-based occurrence.
        occurrence: usize,
    },
}

/// The `trailer:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrailerSpec {
    /// Which rows are trailers (csv; fixed-width files say so by record layout).
    #[serde(rename = "match", default)]
    pub match_: Option<MatchSpec>,
    /// Trailer column with the detail-row count.
    #[serde(default)]
    pub count_column: Option<ColumnSpec>,
    /// Trailer column with a money control total.
    #[serde(default)]
    pub total_column: Option<ColumnSpec>,
    /// Source column summed for the control total.
    #[serde(default)]
    pub total_of: Option<ColumnSpec>,
    /// `pounds` (default: `1,234.56`) or `pence` (`0123456`).
    #[serde(default)]
    pub amounts: Option<String>,
}

/// One fixed-width record type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSpec {
    /// Lines starting with this are of this type (none: any other line).
    #[serde(default)]
    pub prefix: Option<String>,
    /// `detail`, `trailer` or `skip`.
    pub kind: String,
    /// Field positions.
    #[serde(default)]
    pub columns: Vec<FixedColumnSpec>,
}

/// `{name, start, length}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedColumnSpec {
    /// Column name.
    pub name: String,
    /// First character, 1-based.
    pub start: usize,
    /// Number of characters.
    pub length: usize,
}

/// `match: {column, pattern}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Column to test.
    pub column: ColumnSpec,
    /// Regular expression.
    pub pattern: String,
}

/// One canonical field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Source column.
    #[serde(default)]
    pub from: Option<ColumnSpec>,
    /// Literal value.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// Several columns joined.
    #[serde(default)]
    pub concat: Option<ConcatSpec>,
    /// An array of objects: one element per occurrence of this repeated element (path in the
    /// record, `Employment/NIlettersAndValues`), each filled by `fields`.
    #[serde(default)]
    pub each: Option<String>,
    /// With `each`: the fields of one element, their `from` relative to the repeated element.
    #[serde(default)]
    pub fields: Option<IndexMap<String, Spanned<FieldSpec>>>,
    /// The first non-empty of several columns.
    #[serde(default)]
    pub coalesce: Option<Vec<ColumnSpec>>,
    /// Markers that say why there is no value (`REDACTED: redacted`): the field is left out and
    /// the reason recorded in the record's `null_reasons`.
    #[serde(default)]
    pub null_reasons: indexmap::IndexMap<String, String>,
    /// Transform chain.
    #[serde(default)]
    pub transforms: Vec<Spanned<serde_json::Value>>,
    /// Empty is a failure.
    #[serde(default)]
    pub required: bool,
    /// Used when empty.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// Fill the field only when this holds for the record.
    #[serde(default)]
    pub when: Option<WhenSpec>,
    /// Placeholders that mean "no value" (`NA`, `N/A`, `Not yet available`), matched ignoring
    /// case and surrounding spaces: the field is then empty.
    #[serde(default)]
    pub null_if: Vec<String>,
}

/// `when: {column, equals | in | matches, not}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenSpec {
    /// The column (or `$file`, `$line`, `$row`) to test.
    pub column: ColumnSpec,
    /// Equal to this (ignoring case and surrounding spaces).
    #[serde(default)]
    pub equals: Option<String>,
    /// One of these (ignoring case and surrounding spaces).
    #[serde(default, rename = "in")]
    pub in_: Option<Vec<String>>,
    /// Matching this regular expression.
    #[serde(default)]
    pub matches: Option<String>,
    /// The opposite of the test.
    #[serde(default)]
    pub not: bool,
}

/// `concat: {from: [...], separator}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcatSpec {
    /// Columns, in order.
    pub from: Vec<ColumnSpec>,
    /// Put between non-empty values (default one space).
    #[serde(default)]
    pub separator: Option<String>,
}
