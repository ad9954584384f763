//! Drafting a mapping from a sample export.
//!
//! [`scaffold`] reads a sample file; everything else works on bytes ([`scaffold_bytes`]) so that
//! it can be tested without files. The steps, each a function of its own:
//!
//! 1. the format, by the first bytes ([`sniff_format`]): gzip is unwrapped; `PK`/OLE bytes are a
//!    spreadsheet, `{`/`[` JSON (or NDJSON), `<` XML, aligned lines without delimiters
//!    fixed-width, anything else CSV;
//! 2. for CSV, the encoding ([`detect_encoding`]), the delimiter ([`detect_delimiter`]: the one
//!    giving the most consistent field counts), the header row after any title rows
//!    ([`find_header`]) and a trailer ([`detect_trailer`]); spreadsheets, JSON and XML are read
//!    with the decoders the pipeline uses;
//! 3. a profile of each column over the first [`PROFILE_ROWS`] rows ([`profile_column`]): the
//!    share of empty values, placeholders (`NA`), and the shape of the values (dates and their
//!    format, money, numbers, yes/no, NI numbers, postcodes, sort codes, codes with leading
//!    zeros, emails);
//! 4. for each canonical field, a score per column from the header (normalised, abbreviations
//!    expanded, Damerau-Levenshtein and token overlap, a synonym table) and from the values (a
//!    date field wants dates, a `_pence` field money, a `uk-nino` field NI numbers); columns are
//!    assigned greedily, best score first, each column once;
//! 5. the draft, in the format of `docs/mapping-format.md`, every entry commented with why it was
//!    chosen, and every required field without a column a commented-out `TODO` block.

mod file_name;
mod null_reasons;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{Cursor, Read};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::ToolkitError;
use crate::canonical::{Entity, uk_formats};
use crate::formats::json::{JsonDecoder, JsonOptions};
use crate::formats::spreadsheet::{
    SheetRef, SpreadsheetDecoder, SpreadsheetKind, SpreadsheetOptions,
};
use crate::formats::xml::{XmlDecoder, XmlOptions};
use crate::formats::{FormatError, Item, normalise_name};
use crate::mapping::transforms::{self, DateFormat};
use crate::mapping::{JsonType, TargetSchema};

/// Data rows profiled at most.
pub const PROFILE_ROWS: usize = 1000;

/// Date formats tried on a column, in order (written as mappings write them).
pub const DATE_FORMATS: &[&str] = &[
    "dd/mm/yyyy",
    "d/m/yyyy",
    "yyyy-mm-dd",
    "dd-MMM-yyyy",
    "d-MMM-yyyy",
    "dd.mm.yyyy",
    "yyyymmdd",
    "dd-mm-yyyy",
    "dd MMM yyyy",
    "d MMM yyyy",
    "yyyy/mm/dd",
    "dd/mm/yy",
    "dd-MMM-yy",
];

/// A draft mapping and what was found on the way.
#[derive(Debug, Clone, Serialize)]
pub struct Scaffold {
    /// The draft's mapping id: `<council>-<entity short name>`.
    pub mapping_id: String,
    /// The canonical entity.
    pub entity: String,
    /// The sample's file name.
    pub file: String,
    /// The format and its options, as detected.
    pub source: SourceGuess,
    /// A profile of each column of the sample.
    pub columns: Vec<ColumnProfile>,
    /// The canonical fields the draft fills, in schema order.
    pub fields: Vec<FieldMatch>,
    /// The proposed record key (empty: no guess, the draft has a TODO).
    pub key: Vec<String>,
    /// Why that key.
    pub key_reason: String,
    /// Required fields (and "one of" groups) no column was found for.
    pub missing_required: Vec<String>,
    /// Optional fields no column was found for.
    pub unmatched_optional: Vec<String>,
    /// Columns the draft does not use.
    pub unused_columns: Vec<String>,
    /// Findings in words (format, encoding, quirks).
    pub notes: Vec<String>,
    /// The draft mapping file.
    pub yaml: String,
}

/// A format as detected from a file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectedFormat {
    /// Delimited text.
    Csv,
    /// Aligned columns without delimiters.
    FixedWidth,
    /// XML.
    Xml,
    /// One JSON document.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// XLSX, XLS or ODS.
    Spreadsheet,
}

impl DetectedFormat {
    /// The name a mapping's `source.format` uses.
    pub fn name(self) -> &'static str {
        match self {
            DetectedFormat::Csv => "csv",
            DetectedFormat::FixedWidth => "fixed_width",
            DetectedFormat::Xml => "xml",
            DetectedFormat::Json => "json",
            DetectedFormat::Ndjson => "ndjson",
            DetectedFormat::Spreadsheet => "spreadsheet",
        }
    }
}

/// How to read the sample, as detected: what the draft's `source:` says.
#[derive(Debug, Clone, Serialize)]
pub struct SourceGuess {
    /// The format.
    pub format: DetectedFormat,
    /// The bytes were gzip-compressed.
    pub gzip: bool,
    /// Text encoding label (`utf-8`, `windows-1252`, `utf-16le`), for text formats.
    pub encoding: Option<String>,
    /// Why that encoding.
    pub encoding_reason: String,
    /// CSV delimiter.
    pub delimiter: Option<char>,
    /// There is a header row naming the columns.
    pub header: bool,
    /// Rows above the header (title and preamble rows): `skip_rows`.
    pub title_rows: usize,
    /// A pattern finding the header below a title block: `header_match`.
    pub header_match: Option<String>,
    /// Spreadsheets: the sheet read.
    pub sheet: Option<String>,
    /// The trailer (control) row, when the last row looks like one.
    pub trailer: Option<TrailerGuess>,
    /// JSON: pointer to the array of records.
    pub records_at: Option<String>,
    /// XML: element path of one record, when one could be guessed.
    pub record_path: Option<String>,
    /// Data rows in the sample (records, for JSON and XML), trailer excluded.
    pub data_rows: usize,
    /// Data rows profiled (at most [`PROFILE_ROWS`]).
    pub profiled_rows: usize,
}

/// A trailer row, as detected.
#[derive(Debug, Clone, Serialize)]
pub struct TrailerGuess {
    /// 1-based column whose value marks the trailer.
    pub column: usize,
    /// Pattern of that value.
    pub pattern: String,
    /// 1-based column holding the number of data rows.
    pub count_column: Option<usize>,
    /// 1-based column holding a money total.
    pub total_column: Option<usize>,
    /// The source column that total is the sum of.
    pub total_of: Option<String>,
    /// Why the row was taken for a trailer.
    pub why: String,
}

/// The shape of a column's values.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shape {
    /// Empty on every row.
    Empty,
    /// Dates, readable with these formats (tried in order).
    Date {
        /// Formats as mappings write them.
        formats: Vec<String>,
    },
    /// Amounts of money (`£`, commas, brackets, two decimals).
    Money,
    /// Whole numbers.
    Integer,
    /// Decimal numbers.
    Decimal,
    /// Yes/no values.
    Boolean,
    /// National Insurance numbers.
    Nino,
    /// UK postcodes.
    Postcode,
    /// Sort codes (6 digits, with dashes or spaces).
    SortCode,
    /// Digit codes with leading zeros: text, not numbers.
    LeadingZeros,
    /// Email addresses.
    Email,
    /// Web addresses.
    Url,
    /// Anything else.
    Text,
}

impl Shape {
    /// The shape in words, for comments.
    pub fn describe(&self) -> String {
        match self {
            Shape::Empty => "empty on every sample row".into(),
            Shape::Date { formats } => format!("dates {}", formats.join(" or ")),
            Shape::Money => "money".into(),
            Shape::Integer => "whole numbers".into(),
            Shape::Decimal => "decimals".into(),
            Shape::Boolean => "yes/no".into(),
            Shape::Nino => "NI numbers".into(),
            Shape::Postcode => "postcodes".into(),
            Shape::SortCode => "sort codes".into(),
            Shape::LeadingZeros => "codes with leading zeros (kept as text)".into(),
            Shape::Email => "email addresses".into(),
            Shape::Url => "web addresses".into(),
            Shape::Text => "text".into(),
        }
    }
}

/// What the values of one column look like.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnProfile {
    /// 0-based position.
    pub index: usize,
    /// Header name (`""` when the header leaves it blank; the number when there is no header).
    pub name: String,
    /// Rows profiled.
    pub rows: usize,
    /// Rows where it is empty.
    pub empty: usize,
    /// `empty / rows`.
    pub empty_share: f64,
    /// Placeholders found (`NA`, `N/A`, `-`...), as written.
    pub placeholders: Vec<String>,
    /// The shape of the other values.
    pub shape: Shape,
    /// Share of the non-empty values that fit the shape.
    pub fit: f64,
    /// Distinct non-empty values.
    pub distinct: usize,
    /// Every non-empty value differs from the others (and there are at least two).
    pub unique: bool,
    /// The distinct values, when there are at most 20 (codes).
    pub codes: Vec<String>,
    /// Every value is 6 digits (once dashes and spaces are removed): could be a sort code.
    pub six_digits: bool,
}

/// One canonical field of the draft.
#[derive(Debug, Clone, Serialize)]
pub struct FieldMatch {
    /// Dotted path.
    pub field: String,
    /// Where its value comes from.
    pub source: MatchedSource,
    /// How good the match is (1 is an exact header; below 0.6 the values alone decided).
    pub score: f64,
    /// `required: true` in the draft.
    pub required: bool,
    /// Transforms, as written in the draft.
    pub transforms: Vec<String>,
    /// `null_if` placeholders.
    pub null_if: Vec<String>,
    /// Why this source (the draft's comment).
    pub why: String,
    /// What to check (`TODO` comments in the draft).
    pub todo: Vec<String>,
}

/// Where a drafted field comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MatchedSource {
    /// A column of the sample.
    Column {
        /// 0-based position.
        index: usize,
        /// Header name.
        name: String,
    },
    /// A literal (`value: GBP`).
    Literal {
        /// The value.
        value: Value,
    },
    /// The record's place: `concat: {from: [$file, $line]}`.
    FileLine,
    /// The file's name, by pattern (`from: $file` with a `regex`): an "as at" date or a period
    /// the rows do not state.
    FileName {
        /// The regular expression whose group 1 is the value.
        pattern: String,
    },
}

/// Reads `sample` and drafts a mapping of it to `entity` for `council`.
pub fn scaffold(sample: &Path, entity: &Entity, council: &str) -> Result<Scaffold, ToolkitError> {
    let bytes = std::fs::read(sample).map_err(|source| ToolkitError::Io {
        file: sample.display().to_string(),
        source,
    })?;
    let file = sample
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| sample.display().to_string());
    scaffold_bytes(&file, &bytes, entity, council)
}

/// Drafts a mapping of the sample `bytes` (named `file`) to `entity` for `council`.
pub fn scaffold_bytes(
    file: &str,
    bytes: &[u8],
    entity: &Entity,
    council: &str,
) -> Result<Scaffold, ToolkitError> {
    let sample = read_sample(file, bytes)?;
    let columns: Vec<ColumnProfile> = (0..sample.table.header.len())
        .map(|i| {
            let values: Vec<&str> = sample
                .table
                .rows
                .iter()
                .map(|r| r.get(i).map(String::as_str).unwrap_or(""))
                .collect();
            profile_column(i, &sample.table.header[i], &values)
        })
        .collect();
    let fields = entity_fields(entity);
    let groups = any_of_groups(&entity.schema);
    let proposal = propose(&fields, &groups, &columns, &sample);
    let mapping_id = draft_id(council, &entity.short_name, file);
    let mut yaml = render(&RenderInput {
        file,
        mapping_id: &mapping_id,
        entity: &entity.name,
        sample: &sample,
        fields: &fields,
        proposal: &proposal,
    });
    let mut notes = sample.notes.clone();
    notes.extend(proposal.notes.iter().cloned());
    let mut missing_required = proposal.missing_required.clone();
    let mut matches = proposal.matches.clone();
    file_name::supply(
        file,
        entity,
        &mut yaml,
        &mut matches,
        &mut missing_required,
        &mut notes,
    );
    null_reasons::supply(entity, &sample.table.rows, &matches, &mut yaml, &mut notes);
    Ok(Scaffold {
        mapping_id,
        entity: entity.name.clone(),
        file: file.to_string(),
        source: sample.guess.clone(),
        columns,
        fields: matches,
        key: proposal.key.clone(),
        key_reason: proposal.key_reason.clone(),
        missing_required,
        unmatched_optional: proposal.unmatched_optional.clone(),
        unused_columns: proposal.unused_columns.clone(),
        notes,
        yaml,
    })
}

// ---------------------------------------------------------------------------------------------
// Reading the sample
// ---------------------------------------------------------------------------------------------

/// The sample as rows of named columns.
#[derive(Debug, Clone, Default)]
struct Table {
    /// Column names (trimmed; numbers when there is no header).
    header: Vec<String>,
    /// The header row names the columns.
    named: bool,
    /// Profiled data rows.
    rows: Vec<Vec<String>>,
}

#[derive(Debug, Clone)]
struct Sample {
    guess: SourceGuess,
    table: Table,
    notes: Vec<String>,
}

fn sample_error(file: &str, message: impl Into<String>) -> ToolkitError {
    ToolkitError::Sample {
        file: file.to_string(),
        message: message.into(),
    }
}

fn read_sample(file: &str, raw: &[u8]) -> Result<Sample, ToolkitError> {
    let mut notes = Vec::new();
    let gzip = raw.starts_with(&[0x1f, 0x8b]);
    let bytes: Cow<[u8]> = if gzip {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw)
            .read_to_end(&mut out)
            .map_err(|e| {
                sample_error(
                    file,
                    format!("is gzip-compressed but cannot be decompressed: {e}"),
                )
            })?;
        notes.push(
            "the file is gzip-compressed: council-bridge reads it decompressed, whatever its name"
                .to_string(),
        );
        Cow::Owned(out)
    } else {
        Cow::Borrowed(raw)
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(sample_error(
            file,
            "is empty: scaffold needs a sample with data rows",
        ));
    }
    let format = sniff_format(&bytes);
    let mut sample = match format {
        DetectedFormat::Csv => read_delimited(&bytes, &mut notes),
        DetectedFormat::FixedWidth => {
            let (text, encoding, reason) = detect_encoding(&bytes);
            notes.push(
                "the lines are aligned columns without a delimiter: this looks like a fixed-width \
                 file; describe its record layouts under `source.records`"
                    .to_string(),
            );
            let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
            Sample {
                guess: SourceGuess {
                    encoding: Some(encoding.to_string()),
                    encoding_reason: reason,
                    data_rows: lines,
                    ..guess(DetectedFormat::FixedWidth)
                },
                table: Table::default(),
                notes: Vec::new(),
            }
        }
        DetectedFormat::Spreadsheet => read_spreadsheet(file, &bytes, &mut notes)?,
        DetectedFormat::Json | DetectedFormat::Ndjson => {
            read_json(file, &bytes, format == DetectedFormat::Ndjson, &mut notes)?
        }
        DetectedFormat::Xml => read_xml(file, &bytes, &mut notes)?,
    };
    sample.guess.gzip = gzip;
    sample.notes.splice(0..0, notes);
    Ok(sample)
}

fn guess(format: DetectedFormat) -> SourceGuess {
    SourceGuess {
        format,
        gzip: false,
        encoding: None,
        encoding_reason: String::new(),
        delimiter: None,
        header: true,
        title_rows: 0,
        header_match: None,
        sheet: None,
        trailer: None,
        records_at: None,
        record_path: None,
        data_rows: 0,
        profiled_rows: 0,
    }
}

/// Tells the format from the first bytes (already decompressed).
pub fn sniff_format(bytes: &[u8]) -> DetectedFormat {
    if SpreadsheetKind::sniff(bytes).is_some() {
        return DetectedFormat::Spreadsheet;
    }
    let head = &bytes[..bytes.len().min(64 * 1024)];
    let (text, _, _) = detect_encoding(head);
    let trimmed = text.trim_start();
    if trimmed.starts_with('<') {
        return DetectedFormat::Xml;
    }
    if trimmed.starts_with('[') {
        return DetectedFormat::Json;
    }
    if trimmed.starts_with('{') {
        // NDJSON: every line a whole object (the window's last line may be cut short).
        let lines: Vec<&str> = trimmed.lines().filter(|l| !l.trim().is_empty()).collect();
        let whole = if lines.len() > 3 {
            &lines[..3]
        } else {
            &lines[..]
        };
        let objects = whole
            .iter()
            .all(|l| serde_json::from_str::<serde_json::Map<String, Value>>(l).is_ok());
        return if lines.len() >= 2 && objects {
            DetectedFormat::Ndjson
        } else {
            DetectedFormat::Json
        };
    }
    if looks_fixed_width(&text) {
        return DetectedFormat::FixedWidth;
    }
    DetectedFormat::Csv
}

/// Aligned lines of one length, with runs of spaces and no delimiter in common.
fn looks_fixed_width(text: &str) -> bool {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .take(50)
        .collect();
    if lines.len() < 3 {
        return false;
    }
    let delimited = [',', ';', '|', '\t'].iter().any(|d| {
        let with = lines.iter().filter(|l| l.contains(*d)).count();
        with * 2 > lines.len()
    });
    if delimited {
        return false;
    }
    let lengths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
    let (len, n) = mode(lengths.iter().copied()).unwrap_or((0, 0));
    let spaced = lines.iter().filter(|l| l.contains("  ")).count();
    len >= 10 && n * 2 >= lines.len() && spaced * 2 >= lines.len()
}

/// Decodes text the way an undeclared encoding is read: a BOM wins, valid UTF-8 is UTF-8,
/// anything else Windows-1252. Returns the text, the label for the mapping, and why.
pub fn detect_encoding(bytes: &[u8]) -> (Cow<'_, str>, &'static str, String) {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        let (text, _) = encoding_rs::UTF_8.decode_without_bom_handling(rest);
        return (text, "utf-8", "UTF-8 with a byte-order mark".into());
    }
    if bytes.starts_with(&[0xFF, 0xFE]) {
        let (text, _, _) = encoding_rs::UTF_16LE.decode(bytes);
        return (
            text,
            "utf-16le",
            "UTF-16 (little-endian byte-order mark)".into(),
        );
    }
    if bytes.starts_with(&[0xFE, 0xFF]) {
        let (text, _, _) = encoding_rs::UTF_16BE.decode(bytes);
        return (
            text,
            "utf-16be",
            "UTF-16 (big-endian byte-order mark)".into(),
        );
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => (Cow::Borrowed(text), "utf-8", "valid UTF-8".into()),
        // A character cut at the end of a window is still UTF-8.
        Err(e) if e.error_len().is_none() => (
            String::from_utf8_lossy(bytes),
            "utf-8",
            "valid UTF-8".into(),
        ),
        Err(e) => {
            let (text, _, _) = encoding_rs::WINDOWS_1252.decode(bytes);
            let at = e.valid_up_to();
            (
                text,
                "windows-1252",
                format!(
                    "not UTF-8 (byte 0x{:02X} at offset {at}): read as Windows-1252, where 0xA3 is £",
                    bytes[at]
                ),
            )
        }
    }
}

/// The delimiter (`,` `;` `|` tab) that splits the first rows into the most consistent number
/// of fields (more than one).
pub fn detect_delimiter(text: &str) -> u8 {
    let mut best = (b',', 0.0f64);
    for d in [b',', b';', b'|', b'\t'] {
        let counts: Vec<usize> = records(text, d, 60).iter().map(Vec::len).collect();
        if counts.is_empty() {
            continue;
        }
        let Some((fields, n)) = mode(counts.iter().copied().filter(|c| *c > 1)) else {
            continue;
        };
        // Consistency first; more fields break ties (a comma inside text splits less often).
        let score = n as f64 / counts.len() as f64 + (fields as f64).ln() / 100.0;
        if score > best.1 {
            best = (d, score);
        }
    }
    best.0
}

/// The first `limit` records of delimited text (every record, blank-celled ones included, as the
/// decoder counts them for `skip_rows`).
fn records(text: &str, delimiter: u8, limit: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for_each_record(text, delimiter, |_, r| {
        out.push(r);
        out.len() < limit
    });
    out
}

fn for_each_record(text: &str, delimiter: u8, mut f: impl FnMut(usize, Vec<String>) -> bool) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let mut record = csv::StringRecord::new();
    let mut i = 0;
    while let Ok(true) = reader.read_record(&mut record) {
        if !f(i, record.iter().map(str::to_owned).collect()) {
            break;
        }
        i += 1;
    }
}

/// Position after the last non-empty cell.
fn width(row: &[String]) -> usize {
    row.iter()
        .rposition(|c| !c.trim().is_empty())
        .map_or(0, |i| i + 1)
}

fn is_blank(row: &[String]) -> bool {
    row.iter().all(|c| c.trim().is_empty())
}

/// The most common value and how often it occurs (the smallest value on a tie... of the first
/// seen, which is what callers want for widths).
fn mode(values: impl Iterator<Item = usize>) -> Option<(usize, usize)> {
    let mut counts: Vec<(usize, usize)> = Vec::new();
    for v in values {
        match counts.iter_mut().find(|(x, _)| *x == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    counts
        .into_iter()
        .fold(None, |best: Option<(usize, usize)>, (v, n)| match best {
            Some((_, bn)) if bn >= n => best,
            _ => Some((v, n)),
        })
}

/// The header row: the first row (within the first 50) whose cells are mostly distinct,
/// non-numeric labels and which is about as wide as the data rows. `None` when no row looks
/// like one (the file has no header).
pub fn find_header(rows: &[Vec<String>]) -> Option<usize> {
    let widths: Vec<usize> = rows.iter().map(|r| width(r)).collect();
    let data_width = mode(widths.iter().copied().filter(|w| *w >= 2))
        .map(|(w, _)| w)
        .unwrap_or(1);
    // How many cells a data row fills: a merged-cell export leaves blank columns between the
    // named ones, in the header and the rows alike.
    let filled_of = |r: &Vec<String>| r.iter().filter(|c| !c.trim().is_empty()).count();
    let data_filled = mode(rows.iter().map(filled_of).filter(|n| *n >= 2))
        .map(|(n, _)| n)
        .unwrap_or(1);
    for (i, row) in rows.iter().enumerate().take(50) {
        let cells: Vec<&str> = row
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .collect();
        if cells.is_empty() {
            continue;
        }
        let w = widths[i] as f64;
        let filled = cells.len() as f64;
        if data_width >= 2
            && (cells.len() < 2
                || (filled < 0.5 * data_width as f64 && filled < 0.8 * data_filled as f64)
                || w < 0.6 * data_width as f64)
        {
            continue;
        }
        let labels = cells.iter().filter(|c| is_label(c)).count() as f64;
        let distinct = cells.iter().collect::<HashSet<_>>().len() as f64;
        if labels >= 0.7 * filled && distinct >= 0.8 * filled {
            return Some(i);
        }
    }
    None
}

/// A cell that reads as a column name: has letters, and is not a number, an amount or a date.
fn is_label(cell: &str) -> bool {
    cell.chars().any(char::is_alphabetic)
        && cell.chars().count() <= 80
        && transforms::parse_money(cell).is_err()
        && date_formats().iter().all(|f| f.parse(cell).is_none())
        && !cell.contains('@')
}

fn date_formats() -> &'static [DateFormat] {
    static FORMATS: std::sync::LazyLock<Vec<DateFormat>> = std::sync::LazyLock::new(|| {
        DATE_FORMATS
            .iter()
            .map(|f| DateFormat::new(f).expect("built-in date formats are valid"))
            .collect()
    });
    &FORMATS
}

static TRAILER_WORD: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(
        r"(?i)^(grand\s+)?(totals?|trailer|trl|control|end|eof|footer|summary|record\s*count|count)\b",
    )
    .expect("valid regex")
});

/// Whether the last row is a trailer: its first cell says so (`TOTAL`, `TRAILER`...), or it is
/// much narrower than the data rows and carries a number. `data_rows` counts the rows before it;
/// `sums` is each column's sum as money (pence), to find what a control total adds up.
pub fn detect_trailer(
    last: &[String],
    data_width: usize,
    data_rows: usize,
    header: &[String],
    sums: &[Option<i64>],
) -> Option<TrailerGuess> {
    let (col, first) = last
        .iter()
        .enumerate()
        .find(|(_, c)| !c.trim().is_empty())?;
    let first = first.trim();
    let numeric = |c: &str| transforms::parse_money(c).is_ok();
    let worded = col <= 1 && TRAILER_WORD.is_match(first);
    let narrow = data_width >= 4
        && width(last) * 2 <= data_width
        && !numeric(first)
        && last.iter().skip(col + 1).any(|c| numeric(c.trim()));
    if !worded && !narrow {
        return None;
    }
    let why = if worded {
        format!("the last row starts with \"{first}\"")
    } else {
        format!(
            "the last row has {} of the {data_width} columns and carries numbers",
            width(last)
        )
    };
    let cells: Vec<(usize, &str)> = last
        .iter()
        .enumerate()
        .skip(col + 1)
        .map(|(i, c)| (i, c.trim()))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let count_column = cells
        .iter()
        .find(|(_, c)| transforms::parse_integer(c).ok() == Some(data_rows as i64))
        .map(|(i, _)| i + 1);
    let mut total_column = None;
    let mut total_of = None;
    for (i, c) in &cells {
        if Some(i + 1) == count_column {
            continue;
        }
        let Ok(total) = transforms::parse_money(c) else {
            continue;
        };
        if let Some(k) = sums.iter().position(|s| *s == Some(total))
            && let Some(name) = header.get(k).filter(|n| !n.is_empty())
        {
            total_column = Some(i + 1);
            total_of = Some(name.clone());
            break;
        }
    }
    Some(TrailerGuess {
        column: col + 1,
        pattern: format!("^{}$", regex::escape(first)),
        count_column,
        total_column,
        total_of,
        why,
    })
}

fn read_delimited(bytes: &[u8], notes: &mut Vec<String>) -> Sample {
    let (text, encoding, encoding_reason) = detect_encoding(bytes);
    let delimiter = detect_delimiter(&text);
    let head = records(&text, delimiter, PROFILE_ROWS + 150);
    let header_at = find_header(&head);
    let first_data = header_at.map_or(0, |h| h + 1);
    // Second pass over the whole file: data rows, the last row and each column's money sum.
    let columns = header_at.map_or_else(
        || head.iter().map(Vec::len).max().unwrap_or(0),
        |h| head[h].len(),
    );
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut data_rows = 0usize;
    let mut last: Option<Vec<String>> = None;
    let mut sums: Vec<Option<i64>> = vec![Some(0); columns];
    let mut previous_sums = sums.clone();
    let mut widths: Vec<usize> = Vec::new();
    for_each_record(&text, delimiter, |i, row| {
        if i < first_data || is_blank(&row) {
            return true;
        }
        data_rows += 1;
        if widths.len() < 200 {
            widths.push(width(&row));
        }
        previous_sums.clone_from(&sums);
        for (k, s) in sums.iter_mut().enumerate() {
            let v = row.get(k).map(|v| v.trim()).unwrap_or("");
            if v.is_empty() {
                continue;
            }
            if let (Some(total), Ok(p)) = (*s, transforms::parse_money(v)) {
                *s = total.checked_add(p);
            }
        }
        if rows.len() <= PROFILE_ROWS {
            rows.push(row.clone());
        }
        last = Some(row);
        true
    });
    let data_width = mode(widths.iter().copied().filter(|w| *w >= 2))
        .map(|(w, _)| w)
        .unwrap_or(1);
    let header: Vec<String> = match header_at {
        Some(h) => head[h].iter().map(|c| c.trim().to_string()).collect(),
        None => (1..=columns).map(|i| i.to_string()).collect(),
    };
    let trailer = match &last {
        Some(last) if data_rows >= 2 => {
            detect_trailer(last, data_width, data_rows - 1, &header, &previous_sums)
        }
        _ => None,
    };
    if trailer.is_some() {
        data_rows -= 1;
        if rows.len() > data_rows {
            rows.truncate(data_rows);
        }
    }
    rows.truncate(PROFILE_ROWS);
    let wider = rows.iter().filter(|r| width(r) > header.len()).count();
    if header_at.is_some() && wider > 0 {
        notes.push(format!(
            "{wider} of the first {} data rows have values beyond the header's {} columns: those values have no column name and cannot be mapped by name",
            rows.len(),
            header.len()
        ));
    }
    if header_at.is_none() {
        notes.push(
            "no row looks like a header (labels about as wide as the data): the draft says \
             `header: false` and refers to columns by number"
                .to_string(),
        );
    }
    let title_rows = header_at.unwrap_or(0);
    let header_match = (title_rows > 0)
        .then(|| header_pattern(&header, &head[..title_rows]))
        .flatten();
    let profiled_rows = rows.len();
    Sample {
        guess: SourceGuess {
            encoding: Some(encoding.to_string()),
            encoding_reason,
            delimiter: Some(delimiter as char),
            header: header_at.is_some(),
            title_rows,
            header_match,
            trailer,
            data_rows,
            profiled_rows,
            ..guess(DetectedFormat::Csv)
        },
        table: Table {
            header,
            named: header_at.is_some(),
            rows,
        },
        notes: Vec::new(),
    }
}

/// A `header_match` pattern: a header cell that is unique in the header and absent from the
/// title rows (the first such cell; a later step prefers a required field's column).
fn header_pattern(header: &[String], titles: &[Vec<String>]) -> Option<String> {
    header_cells_usable(header, titles)
        .first()
        .map(|i| format!("^{}$", regex::escape(&header[*i])))
}

fn header_cells_usable(header: &[String], titles: &[Vec<String>]) -> Vec<usize> {
    let in_titles: HashSet<String> = titles.iter().flatten().map(|c| normalise_name(c)).collect();
    header
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.is_empty() && !in_titles.contains(&normalise_name(h)))
        .filter(|(_, h)| {
            header
                .iter()
                .filter(|o| normalise_name(o) == normalise_name(h))
                .count()
                == 1
        })
        .map(|(i, _)| i)
        .collect()
}

fn read_spreadsheet(
    file: &str,
    bytes: &[u8],
    notes: &mut Vec<String>,
) -> Result<Sample, ToolkitError> {
    let kind = SpreadsheetKind::sniff(bytes).map_or("spreadsheet", SpreadsheetKind::name);
    let names = calamine::open_workbook_auto_from_rs(Cursor::new(bytes.to_vec()))
        .map(|b| calamine::Reader::sheet_names(&b))
        .unwrap_or_default();
    // The sheet with the most rows (the first, on a tie).
    let mut best: Option<(String, Vec<Vec<String>>)> = None;
    let candidates: Vec<SheetRef> = if names.is_empty() {
        vec![SheetRef::Index(1)]
    } else {
        names
            .iter()
            .take(10)
            .map(|n| SheetRef::Name(n.clone()))
            .collect()
    };
    let mut last_error = None;
    for sheet in candidates {
        let name = match &sheet {
            SheetRef::Name(n) => n.clone(),
            SheetRef::Index(i) => i.to_string(),
        };
        let options = SpreadsheetOptions {
            sheet,
            header: false,
            ..SpreadsheetOptions::default()
        };
        let decoder = match SpreadsheetDecoder::new(file, Cursor::new(bytes.to_vec()), &options) {
            Ok(d) => d,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let mut rows = Vec::new();
        for item in decoder {
            match item {
                Ok(Item::Record(r) | Item::Control(r)) => rows.push(r.values),
                Ok(Item::Failure(f)) => {
                    if let Some(r) = f.record {
                        rows.push(r.values);
                    }
                }
                Err(e) => {
                    last_error = Some(e);
                    break;
                }
            }
        }
        if best.as_ref().is_none_or(|(_, b)| rows.len() > b.len()) {
            best = Some((name, rows));
        }
    }
    let Some((sheet, all)) = best else {
        return Err(last_error.map_or_else(
            || sample_error(file, "the workbook has no sheet to read"),
            ToolkitError::Format,
        ));
    };
    notes.push(format!(
        "a {kind} workbook; the sheet \"{sheet}\" has the most rows{}",
        if names.len() > 1 {
            format!(" (sheets: {})", names.join(", "))
        } else {
            String::new()
        }
    ));
    let rows = all;
    let mut sample = tabulate(rows, notes);
    sample.guess.format = DetectedFormat::Spreadsheet;
    sample.guess.sheet = (names.len() > 1).then_some(sheet);
    Ok(sample)
}

/// Header, trailer and profile rows of rows already split into cells (spreadsheets).
fn tabulate(all: Vec<Vec<String>>, notes: &mut Vec<String>) -> Sample {
    let header_at = find_header(&all[..all.len().min(PROFILE_ROWS + 150)]);
    let first_data = header_at.map_or(0, |h| h + 1);
    let columns = header_at.map_or_else(
        || all.iter().map(Vec::len).max().unwrap_or(0),
        |h| all[h].len(),
    );
    let header: Vec<String> = match header_at {
        Some(h) => all[h].iter().map(|c| c.trim().to_string()).collect(),
        None => (1..=columns).map(|i| i.to_string()).collect(),
    };
    let mut data: Vec<Vec<String>> = all[first_data.min(all.len())..]
        .iter()
        .filter(|r| !is_blank(r))
        .cloned()
        .collect();
    let data_width = mode(data.iter().map(|r| width(r)).filter(|w| *w >= 2))
        .map(|(w, _)| w)
        .unwrap_or(1);
    let mut trailer = None;
    if data.len() >= 2 {
        let before = &data[..data.len() - 1];
        let sums: Vec<Option<i64>> = (0..columns)
            .map(|k| {
                before.iter().try_fold(0i64, |acc, r| {
                    let v = r.get(k).map(|v| v.trim()).unwrap_or("");
                    if v.is_empty() {
                        return Some(acc);
                    }
                    Some(acc + transforms::parse_money(v).unwrap_or(0))
                })
            })
            .collect();
        trailer = detect_trailer(
            data.last().expect("two rows"),
            data_width,
            before.len(),
            &header,
            &sums,
        );
        if trailer.is_some() {
            data.pop();
        }
    }
    if header_at.is_none() {
        notes.push(
            "no row looks like a header: the draft says `header: false` and refers to columns by number"
                .to_string(),
        );
    }
    let data_rows = data.len();
    data.truncate(PROFILE_ROWS);
    let title_rows = header_at.unwrap_or(0);
    let header_match = (title_rows > 0)
        .then(|| header_pattern(&header, &all[..title_rows]))
        .flatten();
    Sample {
        guess: SourceGuess {
            header: header_at.is_some(),
            title_rows,
            header_match,
            trailer,
            data_rows,
            profiled_rows: data.len(),
            ..guess(DetectedFormat::Csv)
        },
        table: Table {
            header,
            named: header_at.is_some(),
            rows: data,
        },
        notes: Vec::new(),
    }
}

/// JSON pointer to the array of records: `""` for a top-level array, else the first array of
/// objects found under the top-level object (breadth first, three levels deep, the longest at
/// the shallowest level).
pub fn guess_records_at(doc: &Value) -> Option<String> {
    if doc.is_array() {
        return Some(String::new());
    }
    let mut level: Vec<(String, &Value)> = vec![(String::new(), doc)];
    for _ in 0..3 {
        let mut next = Vec::new();
        let mut found: Option<(String, usize)> = None;
        for (pointer, v) in &level {
            let Some(map) = v.as_object() else { continue };
            for (k, child) in map {
                let p = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                match child {
                    Value::Array(items)
                        if !items.is_empty()
                            && items.iter().all(Value::is_object)
                            && found.as_ref().is_none_or(|(_, n)| items.len() > *n) =>
                    {
                        found = Some((p, items.len()));
                    }
                    Value::Object(_) => next.push((p, child)),
                    _ => {}
                }
            }
        }
        if let Some((p, _)) = found {
            return Some(p);
        }
        level = next;
    }
    None
}

fn read_json(
    file: &str,
    bytes: &[u8],
    ndjson: bool,
    notes: &mut Vec<String>,
) -> Result<Sample, ToolkitError> {
    let records_at = if ndjson {
        Some(String::new())
    } else {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(doc) => guess_records_at(&doc),
            Err(e) => {
                return Err(sample_error(file, format!("is not valid JSON: {e}")));
            }
        }
    };
    let mut guess_ = guess(if ndjson {
        DetectedFormat::Ndjson
    } else {
        DetectedFormat::Json
    });
    let Some(pointer) = records_at else {
        notes.push(
            "this is JSON, but no array of records was found: set `records_at` to the JSON pointer \
             of the records"
                .to_string(),
        );
        return Ok(Sample {
            guess: guess_,
            table: Table::default(),
            notes: Vec::new(),
        });
    };
    let options = JsonOptions {
        records_at: pointer.clone(),
        ndjson,
    };
    let decoder = JsonDecoder::new(file, Cursor::new(bytes.to_vec()), &options)?;
    let records = tree_records(decoder, notes)?;
    notes.push(if ndjson {
        "NDJSON: one record per line, flattened to path columns".to_string()
    } else {
        format!(
            "JSON with the records at `{}`, flattened to path columns",
            if pointer.is_empty() { "/" } else { &pointer }
        )
    });
    guess_.records_at = (!ndjson).then_some(pointer);
    Ok(tree_sample(guess_, records))
}

/// Flattened records of a tree format: each record's (path, value) pairs.
fn tree_records(
    decoder: impl Iterator<Item = Result<Item, FormatError>>,
    notes: &mut Vec<String>,
) -> Result<Vec<Vec<(String, String)>>, ToolkitError> {
    let mut out = Vec::new();
    let mut failures = 0;
    for item in decoder {
        match item? {
            Item::Record(r) => {
                if out.len() < PROFILE_ROWS {
                    out.push(
                        r.header
                            .names()
                            .iter()
                            .cloned()
                            .zip(r.values.iter().cloned())
                            .collect(),
                    );
                }
            }
            Item::Control(_) => {}
            Item::Failure(_) => failures += 1,
        }
    }
    if failures > 0 {
        notes.push(format!("{failures} record(s) could not be read"));
    }
    Ok(out)
}

/// A table of tree records: the union of their paths, in the order first seen.
fn tree_sample(mut guess: SourceGuess, records: Vec<Vec<(String, String)>>) -> Sample {
    let mut header: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in &records {
        for (path, _) in r {
            if !index.contains_key(path) {
                index.insert(path.clone(), header.len());
                header.push(path.clone());
            }
        }
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let mut row = vec![String::new(); header.len()];
            for (path, v) in r {
                row[index[path]] = v.clone();
            }
            row
        })
        .collect();
    guess.data_rows = rows.len();
    guess.profiled_rows = rows.len();
    Sample {
        guess,
        table: Table {
            header,
            named: true,
            rows,
        },
        notes: Vec::new(),
    }
}

/// The namespace prefix of every OASIS UBL 2.x document.
const UBL_NAMESPACE: &str = "urn:oasis:names:specification:ubl:schema:xsd:";

/// The element path of one record and how many there are: the outermost repeated element
/// that has child elements (the most frequent, then the shallowest), else the root.
pub fn guess_record_path(bytes: &[u8]) -> Option<(String, usize)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::reader::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut parents: HashSet<String> = HashSet::new();
    let mut order: Vec<String> = Vec::new();
    let mut ubl = false;
    loop {
        let event = reader.read_event_into(&mut buf).ok()?;
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            if stack.is_empty() && order.is_empty() {
                ubl = e
                    .attributes()
                    .flatten()
                    .any(|a| a.value.contains(UBL_NAMESPACE));
            }
            if !stack.is_empty() {
                parents.insert(stack.join("/"));
            }
            let local = e.local_name();
            let name: &str = local.as_ref();
            stack.push(name.to_string());
            let path = stack.join("/");
            let n = counts.entry(path.clone()).or_insert(0);
            if *n == 0 {
                order.push(path);
            }
            *n += 1;
            if empty {
                stack.pop();
            }
        }
        match event {
            Event::End(_) => {
                stack.pop();
            }
            Event::DocType(_) => return None,
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    // A UBL document (invoice, credit note, order) is one record per file, whatever repeats
    // inside it (its lines, tax subtotals, allowances).
    if ubl {
        return order.first().map(|root| (root.clone(), 1));
    }
    // The outermost repeated element with children: records repeat, and what repeats inside
    // a record (its lines, its NI letters) is part of it.
    let repeated = |p: &str| counts.get(p).is_some_and(|n| *n >= 2);
    let outermost = |p: &str| {
        let parts: Vec<&str> = p.split('/').collect();
        (1..parts.len()).all(|k| !repeated(&parts[..k].join("/")))
    };
    let found = order
        .iter()
        .filter(|p| parents.contains(*p) && repeated(p) && outermost(p))
        .map(|p| (p.clone(), counts[p]))
        .fold(None, |best: Option<(String, usize)>, (p, n)| match &best {
            Some((bp, bn))
                if *bn > n || (*bn == n && bp.matches('/').count() <= p.matches('/').count()) =>
            {
                best
            }
            _ => Some((p, n)),
        });
    // Nothing repeats: the whole document is one record.
    found.or_else(|| order.first().map(|root| (root.clone(), 1)))
}

fn read_xml(file: &str, bytes: &[u8], notes: &mut Vec<String>) -> Result<Sample, ToolkitError> {
    let mut guess_ = guess(DetectedFormat::Xml);
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    if head.contains("<!DOCTYPE") {
        notes.push(
            "this is XML with a DTD (`<!DOCTYPE`), which council-bridge refuses: ask for the export \
             without it"
                .to_string(),
        );
    }
    let Some((path, count)) = guess_record_path(bytes) else {
        notes.push(
            "this is XML: set `record_path` to the element path of one record (no repeated \
             element was found to suggest)"
                .to_string(),
        );
        return Ok(Sample {
            guess: guess_,
            table: Table::default(),
            notes: Vec::new(),
        });
    };
    notes.push(if count > 1 {
        format!(
            "this is XML: `record_path` is a guess, the outermost repeated element ({count} times): check it"
        )
    } else {
        "this is XML: nothing repeats, so `record_path` is the root (one record per file): check it"
            .to_string()
    });
    let options = XmlOptions {
        encoding: None,
        record_path: path.clone(),
        control_path: None,
    };
    let decoder = XmlDecoder::new(file, Cursor::new(bytes.to_vec()), &options)?;
    let records = tree_records(decoder, notes)?;
    guess_.record_path = Some(path);
    Ok(tree_sample(guess_, records))
}

// ---------------------------------------------------------------------------------------------
// Profiling
// ---------------------------------------------------------------------------------------------

const PLACEHOLDERS: &[&str] = &[
    "na",
    "n/a",
    "n.a.",
    "n.a",
    "null",
    "none",
    "#n/a",
    "-",
    "--",
    "nil",
    "not applicable",
    "not available",
];

/// Placeholders the `money` transform reads as 0 (so they need no `null_if` on money fields).
const MONEY_ZEROS: &[&str] = &["nil", "-", "n/a"];

fn is_placeholder(v: &str) -> bool {
    PLACEHOLDERS.contains(&v.trim().to_lowercase().as_str())
}

static INTEGER: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)$").expect("valid regex")
});
static SORT_CODE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^\d{2}[- ]?\d{2}[- ]?\d{2}$").expect("valid regex")
});
static EMAIL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^[^@\s]+@[^@\s]+\.[^@\s]+$").expect("valid regex")
});

fn is_boolean_token(v: &str) -> bool {
    transforms::parse_boolean(v).is_ok()
}

fn is_postcode(v: &str) -> bool {
    let up = v.trim().to_uppercase();
    let compact: String = up.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() < 5 || compact.len() > 7 {
        return false;
    }
    let (out, inward) = compact.split_at(compact.len() - 3);
    uk_formats::is_uk_postcode(&format!("{out} {inward}"))
}

fn is_nino(v: &str) -> bool {
    uk_formats::is_nino(&transforms::compact(v).to_uppercase())
}

/// A date in a plausible year (so that `yyyymmdd` does not read every 8-digit code).
fn parses_date(f: &DateFormat, v: &str) -> bool {
    use chrono::Datelike;
    f.parse(v)
        .is_some_and(|d| (1900..=2100).contains(&d.year()))
}

/// Profiles one column from its values (one per row, `""` when the row lacks it).
pub fn profile_column(index: usize, name: &str, values: &[&str]) -> ColumnProfile {
    let rows = values.len();
    let empty = values.iter().filter(|v| v.trim().is_empty()).count();
    let mut placeholders: Vec<String> = Vec::new();
    let mut present: Vec<&str> = Vec::new();
    for v in values {
        let t = v.trim();
        if t.is_empty() {
            continue;
        }
        if is_placeholder(t) {
            if !placeholders.iter().any(|p| p == t) {
                placeholders.push(t.to_string());
            }
        } else {
            present.push(t);
        }
    }
    let distinct_set: HashSet<&str> = present.iter().copied().collect();
    let distinct = distinct_set.len();
    let mut codes: Vec<String> = Vec::new();
    if distinct <= 20 {
        for v in &present {
            if !codes.iter().any(|c| c == v) {
                codes.push(v.to_string());
            }
        }
    }
    let six_digits = !present.is_empty()
        && present
            .iter()
            .all(|v| SORT_CODE.is_match(v) && transforms::digits(v).len() == 6);
    let (shape, fit) = shape_of(&present);
    ColumnProfile {
        index,
        name: name.to_string(),
        rows,
        empty,
        empty_share: if rows == 0 {
            0.0
        } else {
            empty as f64 / rows as f64
        },
        placeholders,
        shape,
        fit,
        distinct,
        unique: present.len() >= 2 && distinct == present.len(),
        codes,
        six_digits,
    }
}

type Predicate = dyn Fn(&str) -> bool;

/// The shape of non-empty values and the share of them that fit it.
fn shape_of(values: &[&str]) -> (Shape, f64) {
    let n = values.len();
    if n == 0 {
        return (Shape::Empty, 1.0);
    }
    let share =
        |pred: &dyn Fn(&str) -> bool| values.iter().filter(|v| pred(v)).count() as f64 / n as f64;
    let distinct: HashSet<String> = values.iter().map(|v| v.to_lowercase()).collect();
    let all_digits = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit());
    if share(&is_boolean_token) == 1.0
        && distinct.len() <= 4
        && values.iter().any(|v| !all_digits(v))
    {
        return (Shape::Boolean, 1.0);
    }
    if let Some((formats, fit)) = date_shape(values) {
        return (Shape::Date { formats }, fit);
    }
    let is_email = |v: &str| EMAIL.is_match(v);
    let checks: [(Shape, &Predicate); 3] = [
        (Shape::Nino, &is_nino),
        (Shape::Postcode, &is_postcode),
        (Shape::Email, &is_email),
    ];
    for (shape, pred) in checks {
        let s = share(pred);
        if s >= 0.8 {
            return (shape, s);
        }
    }
    let sort = share(&|v: &str| SORT_CODE.is_match(v));
    if sort >= 0.9 && values.iter().any(|v| v.contains(['-', ' '])) {
        return (Shape::SortCode, sort);
    }
    let url = share(&|v: &str| v.starts_with("http://") || v.starts_with("https://"));
    if url >= 0.9 {
        return (Shape::Url, url);
    }
    let digits = share(&all_digits);
    if digits >= 0.9 && values.iter().any(|v| v.len() > 1 && v.starts_with('0')) {
        return (Shape::LeadingZeros, digits);
    }
    let integer = share(&|v: &str| INTEGER.is_match(v));
    if integer >= 0.95 {
        return (Shape::Integer, integer);
    }
    let money = share(&|v: &str| transforms::parse_money(v).is_ok());
    let money_like = values.iter().any(|v| {
        v.contains(['£', ',', '('])
            || v.ends_with('-')
            || v.split_once('.').is_some_and(|(_, f)| f.trim().len() == 2)
    });
    if money >= 0.9 && money_like {
        return (Shape::Money, money);
    }
    let decimal = share(&|v: &str| transforms::parse_decimal(v).is_ok());
    if decimal >= 0.9 {
        return (Shape::Decimal, decimal);
    }
    (Shape::Text, 1.0)
}

/// The date format(s) that read the values: one that reads them all, else two that do
/// together, else the best one when it reads at least 80%.
fn date_shape(values: &[&str]) -> Option<(Vec<String>, f64)> {
    let formats = date_formats();
    let hits: Vec<Vec<bool>> = formats
        .iter()
        .map(|f| values.iter().map(|v| parses_date(f, v)).collect())
        .collect();
    let counts: Vec<usize> = hits
        .iter()
        .map(|h| h.iter().filter(|x| **x).count())
        .collect();
    let n = values.len();
    if let Some(i) = counts.iter().position(|c| *c == n) {
        return Some((vec![formats[i].written.clone()], 1.0));
    }
    let best = (0..formats.len()).max_by_key(|i| (counts[*i], std::cmp::Reverse(*i)))?;
    if counts[best] == 0 {
        return None;
    }
    for j in 0..formats.len() {
        if j != best && (0..n).all(|k| hits[best][k] || hits[j][k]) {
            return Some((
                vec![formats[best].written.clone(), formats[j].written.clone()],
                1.0,
            ));
        }
    }
    let fit = counts[best] as f64 / n as f64;
    (fit >= 0.8).then(|| (vec![formats[best].written.clone()], fit))
}

// ---------------------------------------------------------------------------------------------
// The canonical fields
// ---------------------------------------------------------------------------------------------

/// What a field wants, for matching and transforms.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Constant(Value),
    Date,
    Pence,
    Integer,
    Number,
    Boolean,
    Enum(Vec<String>),
    Nino,
    Postcode,
    SortCode,
    Email,
    OtherFormat(String),
    Text,
}

#[derive(Debug, Clone)]
struct FieldInfo {
    path: String,
    leaf: String,
    kind: Kind,
    pii: bool,
    required: bool,
    /// Its object requires it (for nested fields of optional objects).
    required_in_parent: bool,
    /// Normalised token lists naming the field: the leaf, the whole path.
    phrases: Vec<Vec<String>>,
    /// Normalised synonyms, best first.
    synonyms: Vec<Vec<String>>,
}

impl FieldInfo {
    fn id_like(&self) -> bool {
        ["_id", "_number", "_reference", "_ref", "_no", "_code"]
            .iter()
            .any(|s| self.leaf.ends_with(s))
            || self.leaf == "id"
            || self.leaf == "reference"
    }
}

/// Every property under `node`: dotted path, schema, and whether its parent requires it.
fn schema_nodes<'a>(node: &'a Value, prefix: &str, out: &mut Vec<(String, &'a Value, bool)>) {
    if let Some(Value::Object(props)) = node.get("properties") {
        let required: Vec<&str> = node
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (k, v) in props {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push((path.clone(), v, required.contains(&k.as_str())));
            schema_nodes(v, &path, out);
        }
    }
}

/// The leaf fields of an entity in schema order (objects, arrays and `null_reasons` left out).
fn entity_fields(entity: &Entity) -> Vec<FieldInfo> {
    let required: HashSet<String> = entity.required().into_iter().collect();
    let mut nodes = Vec::new();
    schema_nodes(&entity.schema, "", &mut nodes);
    let mut out = Vec::new();
    for (path, node, required_in_parent) in nodes {
        if path == "null_reasons" || path.starts_with("null_reasons.") {
            continue;
        }
        let Some(target) = entity.field(&path) else {
            continue;
        };
        let ty = target
            .types
            .iter()
            .copied()
            .find(|t| *t != JsonType::Null)
            .unwrap_or(JsonType::String);
        if matches!(ty, JsonType::Object | JsonType::Array) {
            continue;
        }
        let leaf = path.rsplit('.').next().unwrap_or(&path).to_string();
        let enums: Vec<Value> = node
            .get("enum")
            .and_then(Value::as_array)
            .cloned()
            .or_else(|| node.get("const").map(|c| vec![c.clone()]))
            .unwrap_or_default();
        let format = node.get("format").and_then(Value::as_str);
        let kind = if enums.len() == 1 {
            Kind::Constant(enums[0].clone())
        } else {
            match ty {
                JsonType::Integer if leaf.ends_with("_pence") || leaf.ends_with("_minor") => {
                    Kind::Pence
                }
                JsonType::Integer => Kind::Integer,
                JsonType::Number => Kind::Number,
                JsonType::Boolean => Kind::Boolean,
                _ if !enums.is_empty() => Kind::Enum(
                    enums
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                ),
                _ => match format {
                    Some("date") => Kind::Date,
                    Some("uk-nino") => Kind::Nino,
                    Some("uk-postcode") => Kind::Postcode,
                    Some("uk-sort-code") => Kind::SortCode,
                    Some("email") => Kind::Email,
                    Some(other) => Kind::OtherFormat(other.to_string()),
                    None => Kind::Text,
                },
            }
        };
        let strip = |s: &str| {
            let mut t = tokens(&s.replace(['_', '.'], " "));
            if t.len() > 1 && matches!(t.last().map(String::as_str), Some("pence" | "minor")) {
                t.pop();
            }
            t
        };
        let mut phrases = vec![strip(&leaf)];
        if path.contains('.') {
            phrases.push(strip(&path));
        }
        let synonyms = SYNONYMS
            .iter()
            .filter(|(k, _)| *k == path)
            .chain(SYNONYMS.iter().filter(|(k, _)| *k == leaf && *k != path))
            .chain(TRANSPARENCY_SYNONYMS.iter().filter(|(k, _)| *k == path))
            .flat_map(|(_, list)| list.iter())
            .map(|s| tokens(s))
            .collect();
        out.push(FieldInfo {
            required: required.contains(&path),
            required_in_parent,
            pii: target.pii.is_some(),
            path,
            leaf,
            kind,
            phrases,
            synonyms,
        });
    }
    out
}

/// "At least one of" groups: `allOf[*].anyOf[*].required` and `anyOf[*].required`.
fn any_of_groups(schema: &Value) -> Vec<Vec<String>> {
    let group = |any: &Value| -> Option<Vec<String>> {
        let alts: Vec<String> = any
            .as_array()?
            .iter()
            .filter_map(|a| a.get("required")?.as_array()?.first()?.as_str())
            .map(str::to_owned)
            .collect();
        (alts.len() >= 2).then_some(alts)
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    if let Some(g) = schema.get("anyOf").and_then(group) {
        out.push(g);
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(g) = part.get("anyOf").and_then(group) {
            out.push(g);
        }
    }
    out
}

/// Synonyms of canonical fields (by dotted path or by leaf name), as headers write them.
/// Header names the Local Government Transparency Code files (spend, procurement cards, senior
/// salaries, organograms) use, seen in the real files of ../shared/data/real; after [`SYNONYMS`].
const TRANSPARENCY_SYNONYMS: &[(&str, &[&str])] = &[
    ("supplier_name", &["name", "supplier id t"]),
    (
        "merchant_name",
        &[
            "merchant",
            "merchant name",
            "beneficiary",
            "beneficiary name",
            "mch merchant name",
        ],
    ),
    ("transaction_date", &["date", "fin transaction date"]),
    ("amount_pence", &["fin transaction amount"]),
    // Not "document number" or "transaction number": transaction_id takes those, and a
    // document reference is not unique, so it must not become the key.
    ("document_reference", &["hbc ref no", "voucher"]),
    (
        "directorate",
        &[
            "department area",
            "entity",
            "strgrpcc t",
            "parent department",
        ],
    ),
    (
        "service_area",
        &[
            "organisational unit",
            "service sercop",
            "service cost centre",
        ],
    ),
    (
        "expense_type",
        &[
            "expenditure account",
            "account detail",
            "cipfsubs t",
            "expenditure code",
            "transaction description",
        ],
    ),
    (
        "expense_category",
        &[
            "sercop expenditure category",
            "cipfsubj t",
            "expenditure category",
        ],
    ),
    ("capital_or_revenue", &["type", "capital revenue"]),
    ("org_unit", &["transaction description 2"]),
    ("payment_period", &["period"]),
    (
        "reports_to_post_reference",
        &[
            "reports to senior post",
            "reporting senior post",
            "reports to",
        ],
    ),
    (
        "minimum_salary_pence",
        &[
            "payscale minimum",
            "actual pay floor",
            "pay floor",
            "salary minimum",
        ],
    ),
    (
        "maximum_salary_pence",
        &[
            "payscale maximum",
            "actual pay ceiling",
            "pay ceiling",
            "salary maximum",
        ],
    ),
    (
        "profession",
        &["professional occupational group", "occupational group"],
    ),
    ("fte", &["fte", "fte of minimum contracted hours"]),
    (
        "number_of_posts",
        &["number of posts in fte", "number of posts"],
    ),
    (
        "actual_salary_pence",
        &["fte salary", "niable pay", "actual salary"],
    ),
    (
        "employer_pension_pence",
        &[
            "ers pension contribution",
            "ers pension",
            "employer pension contribution",
        ],
    ),
    ("grade", &["grade or equivalent"]),
    ("service", &["unit", "service area"]),
    ("organisation_uri", &["body"]),
    ("organisation_name", &["body name", "organisation"]),
    ("post_reference", &["post unique reference"]),
];

const SYNONYMS: &[(&str, &[&str])] = &[
    (
        "transaction_id",
        &[
            "transaction number",
            "transaction reference",
            "trans number",
            "transaction",
            "payment reference",
            "payment number",
            "payment id",
            "reference",
            "document number",
            "voucher number",
        ],
    ),
    (
        "supplier_id",
        &[
            "supplier number",
            "supplier code",
            "supplier account",
            "supplier reference",
            "vendor id",
            "vendor number",
            "creditor number",
            "creditor id",
            "creditor code",
            "account number",
        ],
    ),
    (
        "supplier_name",
        &[
            "supplier",
            "vendor",
            "vendor name",
            "payee",
            "payee name",
            "creditor",
            "creditor name",
            "beneficiary",
            "merchant name",
            "paid to",
        ],
    ),
    (
        "payment_date",
        &[
            "date paid",
            "paid",
            "paid date",
            "date of payment",
            "transaction date",
            "pay date",
            "payment run date",
            "date",
        ],
    ),
    (
        "amount_pence",
        &[
            "amount",
            "gross",
            "gross amount",
            "value",
            "total",
            "amount paid",
            "payment amount",
            "total amount",
            "gross value",
            "amount gbp",
            "total value",
            "amount including vat",
        ],
    ),
    (
        "net_pence",
        &[
            "net",
            "net amount",
            "net value",
            "net total",
            "amount excluding vat",
            "net of vat",
        ],
    ),
    (
        "vat_pence",
        &["vat", "vat amount", "vat value", "tax amount"],
    ),
    (
        "payment_method",
        &["method", "payment type", "pay method", "payment means"],
    ),
    (
        "expense_type",
        &[
            "expenditure type",
            "detailed expenditure type",
            "expense description",
            "subjective description",
            "subjective",
            "account description",
            "expense code",
            "expenditure description",
            "expense area",
        ],
    ),
    (
        "expense_category",
        &[
            "expenditure category",
            "category",
            "subjective group",
            "spend category",
            "expense group",
        ],
    ),
    (
        "cost_centre",
        &[
            "cost center",
            "cost code",
            "cost centre code",
            "cost centre number",
            "cost centre description",
        ],
    ),
    (
        "service_area",
        &[
            "service",
            "service label",
            "service area",
            "department",
            "directorate",
            "division",
            "service division",
            "service expenditure area",
        ],
    ),
    (
        "capital_or_revenue",
        &[
            "capital revenue",
            "cap rev",
            "c r",
            "capital or revenue indicator",
        ],
    ),
    (
        "invoice_reference",
        &[
            "invoice number",
            "invoice reference",
            "invoice",
            "supplier invoice",
            "supplier invoice number",
        ],
    ),
    (
        "purpose",
        &[
            "description",
            "narrative",
            "details",
            "purpose of spend",
            "payment description",
            "reason",
            "purpose of expenditure",
        ],
    ),
    ("currency", &["currency code", "ccy"]),
    (
        "employee_number",
        &[
            "employee number",
            "pay id",
            "staff number",
            "staff id",
            "payroll number",
            "employee id",
            "employee reference",
            "person number",
            "worker id",
            "assignment number",
            "payroll id",
        ],
    ),
    (
        "payroll_id",
        &[
            "payroll number",
            "employee number",
            "staff number",
            "payroll reference",
            "pay number",
        ],
    ),
    (
        "person_id",
        &["person number", "person reference", "person id"],
    ),
    (
        "nino",
        &[
            "ni number",
            "national insurance",
            "national insurance number",
            "ni",
        ],
    ),
    ("date_of_birth", &["birth date", "birthdate", "born"]),
    ("postcode", &["post code", "postal code", "zip"]),
    (
        "line1",
        &[
            "address 1",
            "address line 1",
            "address",
            "street",
            "house street",
        ],
    ),
    ("line2", &["address 2", "address line 2", "locality"]),
    ("line3", &["address 3", "address line 3"]),
    ("town", &["city", "post town", "town city"]),
    (
        "forenames",
        &[
            "first name",
            "first names",
            "given",
            "given name",
            "given names",
            "forename",
            "christian name",
        ],
    ),
    (
        "surname",
        &["last name", "family name", "family", "second name"],
    ),
    (
        "title",
        &["salutation", "preferred salutation code", "honorific"],
    ),
    ("gender", &["sex"]),
    ("email", &["email address", "e mail", "work email", "email"]),
    (
        "start_date",
        &[
            "start",
            "date started",
            "hire date",
            "date joined",
            "employment start",
            "commencement date",
            "continuous service date",
        ],
    ),
    (
        "end_date",
        &[
            "leaving date",
            "leave date",
            "termination date",
            "date left",
            "end",
            "contract end date",
        ],
    ),
    (
        "job_title",
        &[
            "post title",
            "position",
            "role",
            "job",
            "position title",
            "job name",
        ],
    ),
    (
        "department_code",
        &["department", "dept code", "directorate code"],
    ),
    (
        "contract_type",
        &[
            "contract",
            "contract basis",
            "employment type",
            "contract status",
            "assignment type",
        ],
    ),
    ("fte", &["full time equivalent", "wte", "fte value"]),
    (
        "status",
        &["employment status", "status code", "assignment status"],
    ),
    (
        "pay_period.start",
        &[
            "period start",
            "period from",
            "start of period",
            "period start date",
        ],
    ),
    (
        "pay_period.end",
        &[
            "period end",
            "period to",
            "end of period",
            "period end date",
        ],
    ),
    ("pay_date", &["payment date", "paid date", "date paid"]),
    ("pay_frequency", &["frequency", "pay cycle"]),
    (
        "ni_letter",
        &[
            "ni category",
            "ni letter",
            "ni table",
            "nic letter",
            "ni code",
        ],
    ),
    (
        "gross_pay_pence",
        &["gross", "gross pay", "total gross", "gross earnings"],
    ),
    (
        "net_pay_pence",
        &[
            "net",
            "net pay",
            "take home",
            "pay after statutory deductions",
        ],
    ),
    ("tax_pence", &["tax", "paye", "income tax", "tax paid"]),
    ("taxable_pay_pence", &["taxable pay", "taxable"]),
    ("employee_ni_pence", &["employee ni", "ni employee"]),
    ("employer_ni_pence", &["employer ni", "ni employer"]),
    (
        "pension_employee_pence",
        &["employee pension", "employee contribution"],
    ),
    (
        "pension_employer_pence",
        &["employer pension", "employer contribution"],
    ),
    ("is_adjustment", &["adjustment", "adjustment flag"]),
    ("sort_code", &["sort code", "sortcode", "bank sort code"]),
    (
        "account_number",
        &[
            "account number",
            "bank account",
            "account",
            "bank account number",
        ],
    ),
    ("account_name", &["account name", "bank account name"]),
    (
        "effective_date",
        &["as at", "as at date", "effective from", "date"],
    ),
    (
        "organisation_name",
        &[
            "organisation label",
            "organisation",
            "body name",
            "body",
            "council",
            "employer",
        ],
    ),
    ("organisation_uri", &["organisation url", "body uri"]),
    ("level", &["tier", "grade level", "reporting level"]),
    (
        "holder_name",
        &[
            "name",
            "post holder",
            "holder",
            "employee name",
            "officer name",
        ],
    ),
    ("grade", &["pay grade", "salary grade"]),
    ("shared_post", &["shared", "shared post"]),
    (
        "contact_email",
        &["contact details", "contact", "email", "email address"],
    ),
    ("salary_band", &["salary range", "pay band", "salary band"]),
    (
        "maximum_salary_pence",
        &["max salary", "salary max", "maximum salary", "top of scale"],
    ),
    ("vacant", &["vacancy", "vacant post", "vacancy status"]),
    ("comments", &["notes", "remarks", "comment", "note"]),
    (
        "post_reference",
        &["post number", "post id", "position number", "position id"],
    ),
];

/// Abbreviations councils write in headers, expanded before comparing.
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("no", "number"),
    ("num", "number"),
    ("nbr", "number"),
    ("nr", "number"),
    ("ref", "reference"),
    ("dob", "date birth"),
    ("emp", "employee"),
    ("ee", "employee"),
    ("ees", "employee"),
    ("er", "employer"),
    ("ers", "employer"),
    ("amt", "amount"),
    ("dept", "department"),
    ("desc", "description"),
    ("descr", "description"),
    ("addr", "address"),
    ("acc", "account"),
    ("acct", "account"),
    ("trans", "transaction"),
    ("txn", "transaction"),
    ("inv", "invoice"),
    ("cat", "category"),
    ("freq", "frequency"),
    ("adj", "adjustment"),
    ("qty", "quantity"),
    ("tel", "telephone"),
    ("subj", "subjective"),
    ("nett", "net"),
    ("org", "organisation"),
    ("organization", "organisation"),
    ("center", "centre"),
    ("supp", "supplier"),
    ("pen", "pension"),
    ("postcode", "post code"),
    ("sortcode", "sort code"),
    ("email", "email"),
    ("mail", "mail"),
    ("yr", "year"),
    ("mth", "month"),
    ("wk", "week"),
    ("max", "maximum"),
    ("min", "minimum"),
    ("cap", "capital"),
    ("rev", "revenue"),
    ("pmt", "payment"),
    ("stat", "statutory"),
    ("dedns", "deductions"),
    ("empee", "employee"),
    ("contribns", "contributions"),
];

const STOP_WORDS: &[&str] = &[
    "of", "the", "and", "or", "a", "an", "to", "for", "in", "by", "is",
];

/// A header or field name as comparable tokens: camelCase and digits split, lower case,
/// punctuation dropped, abbreviations expanded, stop words removed.
fn tokens(s: &str) -> Vec<String> {
    let mut spaced = String::new();
    let chars: Vec<char> = s.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if i > 0 {
            let p = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let boundary = (p.is_lowercase() && c.is_uppercase())
                || (p.is_uppercase() && c.is_uppercase() && next_lower)
                || (p.is_alphabetic() && c.is_ascii_digit())
                || (p.is_ascii_digit() && c.is_alphabetic() && !(*c == 'w' || *c == 'W'));
            if boundary {
                spaced.push(' ');
            }
        }
        spaced.push(*c);
    }
    let lower = spaced
        .to_lowercase()
        .replace("e-mail", "email")
        .replace("(s)", "s");
    let mut out = Vec::new();
    for word in lower.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() || STOP_WORDS.contains(&word) {
            continue;
        }
        match ABBREVIATIONS.iter().find(|(a, _)| *a == word) {
            Some((_, full)) => out.extend(full.split(' ').map(str::to_owned)),
            None => out.push(word.to_string()),
        }
    }
    out
}

fn singular(t: &str) -> &str {
    if t.len() > 3 && t.ends_with('s') && !t.ends_with("ss") {
        &t[..t.len() - 1]
    } else {
        t
    }
}

/// How alike two tokens are: 1 equal (or plural), 0.8 a prefix or a typo, else 0.
fn token_match(a: &str, b: &str) -> f64 {
    let (a, b) = (singular(a), singular(b));
    if a == b {
        return 1.0;
    }
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if short.len() >= 4 && long.starts_with(short) && short.len() * 2 >= long.len() {
        return 0.8;
    }
    if short.len() >= 5 && strsim::normalized_damerau_levenshtein(a, b) >= 0.8 {
        return 0.8;
    }
    0.0
}

/// Token overlap (Dice, with fuzzy token equality) of two token lists.
fn overlap(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut used = vec![false; b.len()];
    let mut total = 0.0;
    for x in a {
        let best = b
            .iter()
            .enumerate()
            .filter(|(j, _)| !used[*j])
            .map(|(j, y)| (j, token_match(x, y)))
            .max_by(|p, q| p.1.total_cmp(&q.1));
        if let Some((j, s)) = best
            && s > 0.0
        {
            used[j] = true;
            total += s;
        }
    }
    2.0 * total / (a.len() + b.len()) as f64
}

/// Similarity of two token lists: token overlap, or the normalised Damerau-Levenshtein
/// similarity of the joined words (weighted down: one letter apart is not one word apart).
fn similarity(a: &[String], b: &[String]) -> f64 {
    let joined = |t: &[String]| t.iter().map(|s| singular(s)).collect::<Vec<_>>().join(" ");
    let (ja, jb) = (joined(a), joined(b));
    if ja == jb && !ja.is_empty() {
        return 1.0;
    }
    let mut sorted_a: Vec<&str> = a.iter().map(|s| singular(s)).collect();
    let mut sorted_b: Vec<&str> = b.iter().map(|s| singular(s)).collect();
    sorted_a.sort_unstable();
    sorted_b.sort_unstable();
    if sorted_a == sorted_b && !sorted_a.is_empty() {
        return 0.98;
    }
    overlap(a, b).max(0.5 * strsim::normalized_damerau_levenshtein(&ja, &jb))
}

/// The ways a column name may be read: the whole name, and for paths (`person/name/given`)
/// the last segment and the last two.
fn header_variants(name: &str) -> Vec<(Vec<String>, f64)> {
    let clean = |s: &str| -> String {
        s.split('/')
            .map(|seg| {
                let seg = seg.trim_start_matches('@');
                seg.split('[').next().unwrap_or(seg).to_string()
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = vec![(tokens(&clean(name)), 1.0)];
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() > 1 {
        out.push((
            tokens(&clean(&segments[segments.len() - 2..].join("/"))),
            0.99,
        ));
        out.push((tokens(&clean(segments[segments.len() - 1])), 0.97));
    }
    out.retain(|(t, _)| !t.is_empty());
    out
}

/// How well a column's name names a field, and how (for the draft's comment).
fn name_score(field: &FieldInfo, header: &str) -> (f64, String) {
    let (score, how) = name_score_inner(field, header);
    let squashed: String = header
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect();
    let to_date = squashed.contains("ytd") || squashed.contains("todate");
    let wants_to_date = field.path.contains("year_to_date") || field.path.contains("ytd");
    if to_date && !wants_to_date {
        (score - 0.1, format!("{how}, year to date"))
    } else {
        (score, how)
    }
}

fn name_score_inner(field: &FieldInfo, header: &str) -> (f64, String) {
    let mut best = (0.0, String::new());
    for (h, weight) in header_variants(header) {
        let mut consider = |score: f64, how: String| {
            if score * weight > best.0 {
                best = (score * weight, how);
            }
        };
        for p in &field.phrases {
            let s = similarity(p, &h);
            consider(s, format!("similarity {s:.2}"));
        }
        for (rank, syn) in field.synonyms.iter().enumerate() {
            if syn.is_empty() {
                continue;
            }
            let s = similarity(syn, &h);
            if s >= 0.98 {
                consider(
                    0.95 - 0.002 * rank as f64,
                    format!("synonym of {}", field.path),
                );
                continue;
            }
            // The header contains the synonym's words ("Invoice Nett Amount" ⊇ "net amount").
            let contained = syn
                .iter()
                .all(|t| h.iter().any(|x| token_match(t, x) >= 1.0));
            if contained && h.len() > syn.len() {
                let s = 0.5 + 0.35 * syn.len() as f64 / h.len() as f64;
                consider(
                    s,
                    format!(
                        "contains \"{}\", a synonym of {}",
                        syn.join(" "),
                        field.path
                    ),
                );
            }
            // Close to a synonym: only when it is close indeed.
            let s = 0.9 * s;
            if s >= 0.7 {
                consider(s, format!("similarity {s:.2} to \"{}\"", syn.join(" ")));
            }
        }
    }
    best
}

// ---------------------------------------------------------------------------------------------
// Values against fields
// ---------------------------------------------------------------------------------------------

/// Codes as councils write them, for enum values.
const CODE_SYNONYMS: &[(&str, &str)] = &[
    ("chq", "cheque"),
    ("cheq", "cheque"),
    ("chk", "cheque"),
    ("bacs", "bacs"),
    ("ftc", "fixed_term"),
    ("temp", "fixed_term"),
    ("temporary", "fixed_term"),
    ("fixed", "fixed_term"),
    ("u", "not_known"),
    ("unknown", "not_known"),
    ("x", "other"),
    ("w", "weekly"),
    ("wk", "weekly"),
    ("2w", "fortnightly"),
    ("fn", "fortnightly"),
    ("4w", "four_weekly"),
    ("m", "monthly"),
    ("mth", "monthly"),
    ("terminated", "leaver"),
    ("left", "leaver"),
    ("cap", "capital"),
    ("rev", "revenue"),
    ("zero hours", "casual"),
    ("relief", "casual"),
    ("f", "female"),
    ("m", "male"),
    ("purchase card", "card"),
    ("pcard", "card"),
    ("p card", "card"),
];

/// The enum value a code stands for, when there is exactly one candidate.
fn map_code(code: &str, enums: &[String]) -> Option<String> {
    let c = code.trim().to_lowercase();
    let c_us = c.replace([' ', '-', '/'], "_");
    if c.is_empty() {
        return None;
    }
    if let Some(e) = enums
        .iter()
        .find(|e| **e == c_us || e.replace('_', " ") == c)
    {
        return Some(e.clone());
    }
    if let Some((_, e)) = CODE_SYNONYMS
        .iter()
        .find(|(k, v)| *k == c && enums.iter().any(|e| e == v))
    {
        return Some(e.to_string());
    }
    let unique = |cands: Vec<&String>| (cands.len() == 1).then(|| cands[0].clone());
    let c_bare = c_us.replace('_', "");
    if let Some(e) = unique(
        enums
            .iter()
            .filter(|e| e.starts_with(&c_us) || e.replace('_', "").starts_with(&c_bare))
            .collect(),
    ) {
        return Some(e);
    }
    if c.len() >= 3
        && let Some(e) = unique(
            enums
                .iter()
                .filter(|e| e.len() >= 3 && c.contains(&e.replace('_', " ")))
                .collect(),
        )
    {
        return Some(e);
    }
    let initials = |e: &str| -> String { e.split('_').filter_map(|p| p.chars().next()).collect() };
    unique(
        enums
            .iter()
            .filter(|e| e.contains('_') && initials(e) == c_bare)
            .collect(),
    )
}

/// A yes/no reading of a code: `Y`/`N`..., or the field's own word (`Vacant` for `vacant`).
fn map_bool(code: &str, field: &FieldInfo) -> Option<bool> {
    if let Ok(b) = transforms::parse_boolean(code) {
        return Some(b);
    }
    let t = tokens(code);
    let negated = t.iter().any(|w| matches!(w.as_str(), "not" | "non" | "no"));
    let words: Vec<String> = t
        .into_iter()
        .filter(|w| !matches!(w.as_str(), "not" | "non" | "no"))
        .collect();
    let own = field.phrases.first().cloned().unwrap_or_default();
    let hit = !words.is_empty()
        && words
            .iter()
            .all(|w| own.iter().any(|o| token_match(w, o) > 0.0));
    hit.then_some(!negated)
}

/// How well a column's values suit a field: 1 a perfect fit, 0 no evidence, -1 wrong. Returns
/// the words for the draft's comment too.
fn shape_fit(field: &FieldInfo, col: &ColumnProfile) -> (f64, String) {
    let shape = &col.shape;
    let described = shape.describe();
    if *shape == Shape::Empty {
        return (0.0, described);
    }
    let fit = match &field.kind {
        Kind::Constant(v) => {
            let want = v.as_str().unwrap_or_default().to_lowercase();
            if !col.codes.is_empty() && col.codes.iter().all(|c| c.to_lowercase() == want) {
                1.0
            } else {
                -1.0
            }
        }
        Kind::Date => match shape {
            Shape::Date { .. } => col.fit,
            _ => -1.0,
        },
        Kind::Pence => match shape {
            Shape::Money => 1.0,
            Shape::Integer | Shape::Decimal => 0.6,
            Shape::LeadingZeros => 0.4,
            _ => -1.0,
        },
        Kind::Integer => match shape {
            Shape::Integer => 1.0,
            Shape::LeadingZeros => 0.3,
            Shape::Money | Shape::Decimal => 0.2,
            _ => -1.0,
        },
        Kind::Number => match shape {
            Shape::Decimal | Shape::Integer => 1.0,
            Shape::Money => 0.7,
            _ => -1.0,
        },
        Kind::Boolean => match shape {
            Shape::Boolean => 1.0,
            _ if !col.codes.is_empty()
                && col.codes.iter().all(|c| map_bool(c, field).is_some()) =>
            {
                0.8
            }
            _ if !col.codes.is_empty() && col.codes.len() <= 3 => 0.2,
            _ => -0.7,
        },
        Kind::Enum(enums) => {
            if col.codes.is_empty() {
                -0.7
            } else {
                let mapped = col
                    .codes
                    .iter()
                    .filter(|c| map_code(c, enums).is_some())
                    .count() as f64;
                let share = mapped / col.codes.len() as f64;
                if share >= 1.0 { 1.0 } else { 2.0 * share - 1.0 }
            }
        }
        Kind::Nino => match shape {
            Shape::Nino => 1.0,
            Shape::Text => -0.3,
            _ => -0.8,
        },
        Kind::Postcode => match shape {
            Shape::Postcode => 1.0,
            Shape::Text => -0.3,
            _ => -0.8,
        },
        Kind::SortCode => match shape {
            Shape::SortCode => 1.0,
            _ if col.six_digits => 0.7,
            _ => -0.8,
        },
        Kind::Email => match shape {
            Shape::Email => 1.0,
            Shape::Text => -0.3,
            _ => -0.8,
        },
        Kind::OtherFormat(_) => match shape {
            Shape::Text | Shape::LeadingZeros | Shape::Integer => 0.2,
            _ => -0.5,
        },
        Kind::Text => match shape {
            Shape::Integer | Shape::LeadingZeros if field.id_like() => 0.3,
            Shape::Text => 0.2,
            Shape::LeadingZeros | Shape::Integer | Shape::Url | Shape::Email | Shape::Postcode => {
                0.1
            }
            Shape::Date { .. } | Shape::Money | Shape::Decimal => -0.4,
            _ => -0.2,
        },
    };
    let words = match &field.kind {
        Kind::Boolean if *shape != Shape::Boolean && !col.codes.is_empty() => {
            let pairs: Vec<String> = col
                .codes
                .iter()
                .take(6)
                .map(|c| match map_bool(c, field) {
                    Some(b) => format!("{c} → {b}"),
                    None => format!("{c} → ?"),
                })
                .collect();
            format!("codes {}", pairs.join(", "))
        }
        Kind::Enum(enums) if !col.codes.is_empty() => {
            let pairs: Vec<String> = col
                .codes
                .iter()
                .take(6)
                .map(|c| match map_code(c, enums) {
                    Some(e) => format!("{c} → {e}"),
                    None => format!("{c} → ?"),
                })
                .collect();
            format!("codes {}", pairs.join(", "))
        }
        _ => described,
    };
    (fit, words)
}

// ---------------------------------------------------------------------------------------------
// Proposing
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Proposal {
    matches: Vec<FieldMatch>,
    key: Vec<String>,
    key_reason: String,
    missing_required: Vec<String>,
    /// Required fields without a column, for the draft's TODO blocks.
    todo_fields: Vec<String>,
    /// "One of" groups with no field filled.
    todo_groups: Vec<Vec<String>>,
    unmatched_optional: Vec<String>,
    unused_columns: Vec<String>,
    /// Columns without a name and empty on every row, counted rather than listed.
    unnamed_empty: usize,
    notes: Vec<String>,
    header_match: Option<String>,
}

struct Candidate {
    field: usize,
    column: usize,
    total: f64,
    how: String,
    values: String,
    by_values: bool,
}

/// A column of a one-record sample (an XML or JSON document), filled: it cannot repeat there.
fn one_record(col: &ColumnProfile) -> bool {
    col.rows == 1 && col.empty == 0
}

fn propose(
    fields: &[FieldInfo],
    groups: &[Vec<String>],
    columns: &[ColumnProfile],
    sample: &Sample,
) -> Proposal {
    let mut p = Proposal::default();
    let usable = |c: &ColumnProfile| !(c.name.is_empty() && c.shape == Shape::Empty);
    let in_group = |path: &str| groups.iter().any(|g| g.iter().any(|f| f == path));
    // 1. Name-based candidates (with the values' support).
    let mut candidates = Vec::new();
    for (fi, f) in fields.iter().enumerate() {
        for (ci, c) in columns.iter().enumerate() {
            if !usable(c) {
                continue;
            }
            let (name, how) = if sample.table.named {
                name_score(f, &c.name)
            } else {
                (0.0, String::new())
            };
            let (shape, values) = shape_fit(f, c);
            let ok = (name >= 0.7 && shape > -0.5) || (name >= 0.55 && shape >= 0.5);
            if ok {
                candidates.push(Candidate {
                    field: fi,
                    column: ci,
                    total: name + 0.35 * shape,
                    how,
                    values,
                    by_values: false,
                });
            }
        }
    }
    candidates.sort_by(|a, b| b.total.total_cmp(&a.total));
    let mut field_taken: Vec<Option<Candidate>> = fields.iter().map(|_| None).collect();
    let mut column_taken = vec![false; columns.len()];
    for c in candidates {
        if field_taken[c.field].is_none() && !column_taken[c.column] {
            column_taken[c.column] = true;
            let fi = c.field;
            field_taken[fi] = Some(c);
        }
    }
    // 2. By values alone: distinctive shapes (and dates or money only for required fields).
    let mut order: Vec<usize> = (0..fields.len()).collect();
    order.sort_by_key(|i| !(fields[*i].required || in_group(&fields[*i].path)));
    for fi in order {
        if field_taken[fi].is_some() {
            continue;
        }
        let f = &fields[fi];
        let needed = f.required || in_group(&f.path);
        let distinctive = match &f.kind {
            Kind::Nino | Kind::Postcode | Kind::SortCode | Kind::Email => true,
            Kind::Enum(_) => true,
            Kind::Date | Kind::Pence => needed,
            _ => false,
        };
        if !distinctive {
            continue;
        }
        let fits: Vec<(usize, f64, String, f64, String)> = columns
            .iter()
            .enumerate()
            .filter(|(ci, c)| !column_taken[*ci] && usable(c))
            .filter_map(|(ci, c)| {
                let (shape, values) = shape_fit(f, c);
                let strong = match (&f.kind, &c.shape) {
                    (Kind::Enum(_), _) => shape >= 1.0 && c.codes.len() >= 2,
                    (Kind::Pence, s) => *s == Shape::Money,
                    (Kind::SortCode, s) => *s == Shape::SortCode,
                    _ => shape >= 0.9,
                };
                if !strong {
                    return None;
                }
                let (name, how) = if sample.table.named {
                    name_score(f, &c.name)
                } else {
                    (0.0, String::new())
                };
                Some((ci, shape, values, name, how))
            })
            .collect();
        // Only when the values leave no doubt: one column of that shape left.
        let pick = if fits.len() == 1 {
            fits.into_iter().next()
        } else {
            None
        };
        if let Some((ci, shape, values, name, how)) = pick {
            column_taken[ci] = true;
            field_taken[fi] = Some(Candidate {
                field: fi,
                column: ci,
                total: name.min(0.5) + 0.35 * shape,
                how,
                values,
                by_values: true,
            });
        }
    }
    // 3. The key.
    let key_candidates: Vec<(usize, &Candidate)> = field_taken
        .iter()
        .enumerate()
        .filter_map(|(fi, c)| c.as_ref().map(|c| (fi, c)))
        .filter(|(fi, c)| {
            let f = &fields[*fi];
            !f.pii
                && matches!(f.kind, Kind::Text | Kind::Integer | Kind::OtherFormat(_))
                && f.id_like()
                && (columns[c.column].unique || one_record(&columns[c.column]))
        })
        .collect();
    // The schema's own identifiers first (required, or one of an "at least one of" group),
    // then a column filled on every row; a few empty rows are allowed (they will fail).
    let best_key = key_candidates
        .iter()
        .filter(|(_, c)| columns[c.column].empty_share <= 0.1)
        .max_by_key(|(fi, c)| {
            let f = &fields[*fi];
            (
                f.required,
                in_group(&f.path),
                columns[c.column].empty == 0,
                std::cmp::Reverse(*fi),
            )
        });
    let mut file_line = false;
    let source_reference = fields.iter().position(|f| f.path == "source_reference");
    if let Some((fi, c)) = best_key {
        let col = &columns[c.column];
        p.key = vec![fields[*fi].path.clone()];
        p.key_reason = if one_record(col) {
            format!(
                "the sample has one record: \"{}\" is taken to identify it; check with a larger sample",
                col.name
            )
        } else if col.empty == 0 {
            format!(
                "\"{}\" is filled and unique on all {} sample rows",
                col.name, col.rows
            )
        } else {
            format!(
                "\"{}\" is unique where filled, but empty on {} of {} sample rows: those rows will fail",
                col.name, col.empty, col.rows
            )
        };
        // Records per pay period: add the period's end when the entity has one.
        if let Some(end) = fields.iter().enumerate().find(|(i, f)| {
            (f.required || f.required_in_parent)
                && f.kind == Kind::Date
                && f.path.contains("period")
                && f.path.ends_with("end")
                && field_taken[*i].is_some()
        }) {
            p.key.push(end.1.path.clone());
            p.key_reason
                .push_str(&format!(", with {} for one record per period", end.1.path));
        }
    } else if let Some(sr) = source_reference {
        if field_taken[sr].is_none() {
            file_line = true;
        }
        p.key = vec!["source_reference".into()];
        p.key_reason = if key_candidates.is_empty() {
            "no column identifies a row (none is an identifier that is unique over the sample): the file name and line do".into()
        } else {
            let names: Vec<String> = key_candidates
                .iter()
                .map(|(_, c)| format!("\"{}\"", columns[c.column].name))
                .collect();
            format!(
                "{} is unique but often empty: the file name and line identify a row instead",
                names.join(", ")
            )
        };
    } else {
        let repeated: Vec<String> = field_taken
            .iter()
            .enumerate()
            .filter_map(|(fi, c)| c.as_ref().map(|c| (fi, c)))
            .filter(|(fi, _)| fields[*fi].id_like() && !fields[*fi].pii)
            .map(|(_, c)| format!("\"{}\"", columns[c.column].name))
            .collect();
        p.key_reason = if repeated.is_empty() {
            "no mapped column identifies a record".into()
        } else {
            format!(
                "{} repeat(s) over the sample, so cannot identify a record alone",
                repeated.join(", ")
            )
        };
    }
    if let Some(sr) = source_reference
        && fields[sr].required
        && field_taken[sr].is_none()
    {
        file_line = true;
    }
    // 4. The matches, in schema order.
    let mut group_required: HashSet<String> = HashSet::new();
    for g in groups {
        // An alternative is filled by its field, or (an object) by any field inside it.
        let fills =
            |alt: &str, f: &FieldInfo| f.path == alt || f.path.starts_with(&format!("{alt}."));
        let filled = g.iter().find(|alt| {
            fields.iter().enumerate().any(|(i, f)| {
                fills(alt, f)
                    && (field_taken[i].is_some()
                        || matches!(f.kind, Kind::Constant(_))
                        || (file_line && f.path == "source_reference"))
            })
        });
        match filled {
            Some(alt) => {
                // The filled alternative is required; inside an object, the fields it requires.
                for (i, f) in fields.iter().enumerate() {
                    if f.path == *alt
                        || (fills(alt, f) && f.required_in_parent && field_taken[i].is_some())
                    {
                        group_required.insert(f.path.clone());
                    }
                }
            }
            None => {
                p.todo_groups.push(g.clone());
                p.missing_required.push(format!("one of {}", g.join(", ")));
            }
        }
    }
    for (fi, f) in fields.iter().enumerate() {
        let required = f.required || p.key.contains(&f.path) || group_required.contains(&f.path);
        if let Some(c) = &field_taken[fi] {
            let col = &columns[c.column];
            let (transforms, todo) = transforms_for(f, Some(col));
            let mut why = if c.by_values {
                format!(
                    "header \"{}\": matched by its values only ({}), check",
                    col.name, c.values
                )
            } else {
                format!("header \"{}\" ({}), {}", col.name, c.how, c.values)
            };
            if col.empty_share > 0.0 {
                let _ = write!(why, ", {:.0}% empty", col.empty_share * 100.0);
            }
            let null_if: Vec<String> = col
                .placeholders
                .iter()
                .filter(|ph| {
                    !(f.kind == Kind::Pence && MONEY_ZEROS.contains(&ph.to_lowercase().as_str()))
                })
                .cloned()
                .collect();
            p.matches.push(FieldMatch {
                field: f.path.clone(),
                source: MatchedSource::Column {
                    index: col.index,
                    name: col.name.clone(),
                },
                score: (c.total * 100.0).round() / 100.0,
                required,
                transforms,
                null_if,
                why,
                todo,
            });
            continue;
        }
        if f.path == "source_reference" && file_line {
            p.matches.push(FieldMatch {
                field: f.path.clone(),
                source: MatchedSource::FileLine,
                score: 1.0,
                required: true,
                transforms: Vec::new(),
                null_if: Vec::new(),
                why: "no column identifies a row: the file name and line do".into(),
                todo: Vec::new(),
            });
            continue;
        }
        if let Kind::Constant(v) = &f.kind {
            p.matches.push(FieldMatch {
                field: f.path.clone(),
                source: MatchedSource::Literal { value: v.clone() },
                score: 1.0,
                required: false,
                transforms: Vec::new(),
                null_if: Vec::new(),
                why: format!("the schema allows only {v}"),
                todo: Vec::new(),
            });
            continue;
        }
        if f.required {
            p.todo_fields.push(f.path.clone());
            p.missing_required.push(f.path.clone());
        } else if !in_group(&f.path) || !p.todo_groups.iter().any(|g| g.contains(&f.path)) {
            p.unmatched_optional.push(f.path.clone());
        }
    }
    // 5. Columns left over.
    for (ci, c) in columns.iter().enumerate() {
        if column_taken[ci] {
            continue;
        }
        if c.name.is_empty() && c.shape == Shape::Empty {
            p.unnamed_empty += 1;
        } else if c.name.is_empty() {
            p.unused_columns.push(format!("column {}", ci + 1));
        } else {
            p.unused_columns.push(c.name.clone());
        }
    }
    // 6. Prefer a required field's column for `header_match`.
    if sample.guess.header_match.is_some() {
        let usable_cells = header_cells_usable(&sample.table.header, &[]);
        let preferred = p
            .matches
            .iter()
            .filter(|m| m.required)
            .find_map(|m| match &m.source {
                MatchedSource::Column { index, .. } if usable_cells.contains(index) => Some(*index),
                _ => None,
            });
        p.header_match = preferred
            .map(|i| format!("^{}$", regex::escape(&sample.table.header[i])))
            .or_else(|| sample.guess.header_match.clone());
    }
    let by_values: Vec<&str> = p
        .matches
        .iter()
        .filter(|m| m.score < 0.6 && matches!(m.source, MatchedSource::Column { .. }))
        .map(|m| m.field.as_str())
        .collect();
    if !by_values.is_empty() {
        p.notes.push(format!(
            "matched by their values only, check: {}",
            by_values.join(", ")
        ));
    }
    p
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// A YAML scalar: plain when it is a simple word, else quoted.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s)
            if !s.is_empty()
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !s.chars().next().is_some_and(|c| c.is_ascii_digit())
                && !matches!(
                    s.to_lowercase().as_str(),
                    "y" | "n" | "yes" | "no" | "true" | "false" | "on" | "off" | "null"
                ) =>
        {
            s.clone()
        }
        Value::String(s) => quote(s),
        other => other.to_string(),
    }
}

/// The transforms of a field fed by `col` (or, for a TODO block, by an unknown column), and
/// what to check.
fn transforms_for(f: &FieldInfo, col: Option<&ColumnProfile>) -> (Vec<String>, Vec<String>) {
    let mut todo = Vec::new();
    let shape = col.map(|c| &c.shape);
    let codes = col.map(|c| c.codes.as_slice()).unwrap_or(&[]);
    let t: Vec<String> = match &f.kind {
        Kind::Constant(_) => vec!["trim".into(), "upper".into()],
        Kind::Date => {
            match shape {
                Some(Shape::Date { formats }) if formats.len() == 1 => {
                    vec![format!("{{ date: {} }}", quote(&formats[0]))]
                }
                Some(Shape::Date { formats }) => {
                    let list: Vec<String> = formats.iter().map(|f| quote(f)).collect();
                    vec![format!("{{ date: [{}] }}", list.join(", "))]
                }
                _ => {
                    if col.is_some_and(|c| c.shape != Shape::Empty) {
                        todo.push("the values did not read as dates in any usual format: set the date format".into());
                    } else {
                        todo.push("check the date format".into());
                    }
                    vec![format!("{{ date: {} }}", quote("dd/mm/yyyy"))]
                }
            }
        }
        Kind::Pence => match shape {
            Some(Shape::LeadingZeros) => {
                todo.push("zero-filled digits: `pence` reads them as pence; use `money` if they are pounds".into());
                vec!["pence".into()]
            }
            _ => vec!["money".into()],
        },
        Kind::Integer => match shape {
            Some(Shape::Decimal | Shape::Money) => {
                vec!["decimal".into(), "{ round: 0 }".into()]
            }
            _ => vec!["integer".into()],
        },
        Kind::Number => vec!["decimal".into()],
        Kind::Boolean => {
            if codes.iter().all(|c| transforms::parse_boolean(c).is_ok()) {
                vec!["boolean".into()]
            } else {
                let mut pairs = Vec::new();
                let mut unknown = Vec::new();
                for c in codes {
                    match map_bool(c, f) {
                        Some(b) => pairs.push(format!("{}: {b}", quote(&c.to_uppercase()))),
                        None => unknown.push(c.clone()),
                    }
                }
                if codes.is_empty() {
                    todo.push(
                        "too many different values to map to yes/no: check the column".into(),
                    );
                    vec!["boolean".into()]
                } else {
                    if !unknown.is_empty() {
                        todo.push(format!(
                            "values with no yes/no reading: {}",
                            unknown
                                .iter()
                                .map(|u| quote(u))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    vec![
                        "trim".into(),
                        "upper".into(),
                        format!("{{ map: {{ values: {{ {} }} }} }}", pairs.join(", ")),
                    ]
                }
            }
        }
        Kind::Enum(enums) => {
            let allowed = enums.join(", ");
            if codes.is_empty() {
                if col.is_some_and(|c| c.shape != Shape::Empty) {
                    todo.push(format!(
                        "more than 20 different values: map them to {allowed}"
                    ));
                } else {
                    todo.push(format!("map the codes to {allowed}"));
                }
                vec!["trim".into(), "lower".into()]
            } else if codes.iter().all(|c| enums.contains(&c.to_string())) {
                vec!["trim".into()]
            } else if codes.iter().all(|c| enums.contains(&c.to_lowercase())) {
                vec!["trim".into(), "lower".into()]
            } else {
                let mut pairs = Vec::new();
                let mut unknown = Vec::new();
                let mut seen = HashSet::new();
                for c in codes {
                    let key = c.to_uppercase();
                    if !seen.insert(key.clone()) {
                        continue;
                    }
                    match map_code(c, enums) {
                        Some(e) => {
                            pairs.push(format!("{}: {}", quote(&key), scalar(&Value::String(e))))
                        }
                        None => unknown.push(c.clone()),
                    }
                }
                if !unknown.is_empty() {
                    todo.push(format!(
                        "codes with no canonical value: {} (allowed: {allowed}); unknown codes fail",
                        unknown.iter().map(|u| quote(u)).collect::<Vec<_>>().join(", ")
                    ));
                }
                vec![
                    "trim".into(),
                    "upper".into(),
                    format!("{{ map: {{ values: {{ {} }} }} }}", pairs.join(", ")),
                ]
            }
        }
        Kind::Nino => vec!["compact".into(), "upper".into()],
        Kind::Postcode => vec!["trim".into(), "upper".into()],
        Kind::SortCode => vec!["digits".into()],
        Kind::Email => vec!["trim".into(), "lower".into()],
        Kind::OtherFormat(f) if matches!(f.as_str(), "uk-vat-number" | "uk-tax-code") => {
            vec!["compact".into(), "upper".into()]
        }
        Kind::OtherFormat(_) => vec!["trim".into(), "upper".into()],
        Kind::Text if f.leaf == "account_number" => vec!["digits".into()],
        Kind::Text if shape == Some(&Shape::Email) => vec!["trim".into(), "lower".into()],
        Kind::Text => vec!["trim".into()],
    };
    (t, todo)
}

// ---------------------------------------------------------------------------------------------
// The draft
// ---------------------------------------------------------------------------------------------

struct RenderInput<'a> {
    file: &'a str,
    mapping_id: &'a str,
    entity: &'a str,
    sample: &'a Sample,
    fields: &'a [FieldInfo],
    proposal: &'a Proposal,
}

/// `from:` for a column: its name (by occurrence when the header repeats it), or its number.
fn from_column(table: &Table, index: usize) -> String {
    let name = &table.header[index];
    if !table.named || name.is_empty() {
        return (index + 1).to_string();
    }
    let occurrence = table.header[..index]
        .iter()
        .filter(|h| normalise_name(h) == normalise_name(name))
        .count()
        + 1;
    if occurrence > 1 {
        format!("{{ name: {}, occurrence: {occurrence} }}", quote(name))
    } else {
        quote(name)
    }
}

fn comment_line(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{indent}# {line}");
    }
}

fn render(r: &RenderInput) -> String {
    let g = &r.sample.guess;
    let p = r.proposal;
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# DRAFT mapping written by the onboarding toolkit from the sample {} ({} data rows read).",
        r.file, g.profiled_rows
    );
    y.push_str(
        "# Every match below is a guess, with its reason beside it: check each one, fill the\n",
    );
    y.push_str("# TODOs, then run `council-bridge mapping check` on this file and preview it on the sample.\n");
    let _ = writeln!(y, "mapping: {}", r.mapping_id);
    y.push_str("version: 1\n");
    let _ = writeln!(y, "entity: {}", r.entity);
    let _ = writeln!(
        y,
        "description: {}",
        quote(&format!(
            "DRAFT generated from {}: review every field before use",
            r.file
        ))
    );
    y.push_str("\nsource:\n");
    let _ = writeln!(y, "  format: {}", g.format.name());
    if g.gzip {
        y.push_str(
            "  # the sample is gzip-compressed: it is read decompressed, whatever its name\n",
        );
    }
    match g.format {
        DetectedFormat::Csv => {
            if let Some(e) = &g.encoding {
                let _ = writeln!(y, "  encoding: {e}  # {}", g.encoding_reason);
            }
            if let Some(d) = g.delimiter {
                let widths = r.sample.table.header.len();
                let _ = writeln!(
                    y,
                    "  delimiter: {}  # {widths} columns",
                    quote(&d.to_string())
                );
            }
        }
        DetectedFormat::Spreadsheet => {
            if let Some(s) = &g.sheet {
                let _ = writeln!(y, "  sheet: {}  # the sheet with the most rows", quote(s));
            }
        }
        DetectedFormat::Json => {
            let at = g.records_at.clone().unwrap_or_default();
            if g.records_at.is_none() {
                y.push_str("  # TODO: this is JSON: set records_at to the JSON pointer of the array of records\n");
            }
            let _ = writeln!(y, "  records_at: {}", quote(&at));
        }
        DetectedFormat::Ndjson => {}
        DetectedFormat::Xml => match &g.record_path {
            Some(path) => {
                let _ = writeln!(
                    y,
                    "  record_path: {}  # TODO: check: the outermost repeated element (or the root)",
                    quote(path)
                );
            }
            None => {
                y.push_str("  # TODO: this is XML: set record_path to the element path of one record from the root\n");
                y.push_str("  record_path: TODO\n");
            }
        },
        DetectedFormat::FixedWidth => {
            if let Some(e) = &g.encoding {
                let _ = writeln!(y, "  encoding: {e}  # {}", g.encoding_reason);
            }
            y.push_str(
                "  # TODO: this looks like a fixed-width file: describe its record layouts, e.g.\n",
            );
            y.push_str("  # records:\n");
            y.push_str("  #   - prefix: \"D\"\n");
            y.push_str("  #     kind: detail\n");
            y.push_str("  #     columns: [{ name: Employee No, start: 2, length: 8 }]\n");
        }
    }
    if matches!(g.format, DetectedFormat::Csv | DetectedFormat::Spreadsheet) {
        if !g.header {
            y.push_str("  header: false  # no row looks like a header: columns are referred to by number\n");
        } else if g.title_rows > 0 {
            match &p.header_match {
                Some(pattern) => {
                    let _ = writeln!(
                        y,
                        "  header_match: {}  # {} title row(s) above the header{}",
                        quote(pattern),
                        g.title_rows,
                        if g.format == DetectedFormat::Csv {
                            format!(" (or skip_rows: {})", g.title_rows)
                        } else {
                            String::new()
                        }
                    );
                }
                None => {
                    let _ = writeln!(
                        y,
                        "  skip_rows: {}  # title rows above the header",
                        g.title_rows
                    );
                }
            }
        }
        if let Some(t) = &g.trailer {
            let _ = writeln!(y, "  trailer:  # {}", t.why);
            let _ = writeln!(
                y,
                "    match: {{ column: {}, pattern: {} }}",
                t.column,
                quote(&t.pattern)
            );
            if let Some(c) = t.count_column {
                let _ = writeln!(
                    y,
                    "    count_column: {c}  # equals the number of data rows ({})",
                    g.data_rows
                );
            }
            if let (Some(c), Some(of)) = (t.total_column, &t.total_of) {
                let _ = writeln!(y, "    total_column: {c}");
                let _ = writeln!(
                    y,
                    "    total_of: {}  # its sum equals the trailer's total",
                    quote(of)
                );
            }
            if t.count_column.is_none() && t.total_column.is_none() {
                y.push_str("    # TODO: no trailer cell equals the row count or a column's sum: set count_column / total_column and total_of if it carries them\n");
            }
        } else if let Some(last) = r.sample.table.rows.last()
            && let Some((data_width, _)) = mode(
                r.sample
                    .table
                    .rows
                    .iter()
                    .map(|row| width(row))
                    .filter(|w| *w >= 2),
            )
            && data_width >= 4
            && width(last) * 2 <= data_width
        {
            y.push_str("  # the last row is much shorter than the others: is it a trailer? see `trailer:`\n");
        }
    }

    y.push('\n');
    if p.key.is_empty() {
        let _ = writeln!(
            y,
            "key: []  # TODO: name the fields that identify a record ({})",
            p.key_reason
        );
    } else {
        let _ = writeln!(y, "key: [{}]  # {}", p.key.join(", "), p.key_reason);
    }

    y.push('\n');
    if p.matches.is_empty() {
        y.push_str("fields: {}\n");
    } else {
        y.push_str("fields:\n");
    }
    for m in &p.matches {
        let _ = writeln!(y, "  {}:  # {}", m.field, m.why);
        for t in &m.todo {
            comment_line(&mut y, "    ", &format!("TODO: {t}"));
        }
        match &m.source {
            MatchedSource::Column { index, .. } => {
                let _ = writeln!(y, "    from: {}", from_column(&r.sample.table, *index));
            }
            MatchedSource::Literal { value } => {
                let _ = writeln!(y, "    value: {}", scalar(value));
            }
            MatchedSource::FileLine => {
                y.push_str("    concat: { from: [$file, $line], separator: \":\" }\n");
            }
            MatchedSource::FileName { .. } => y.push_str("    from: $file\n"),
        }
        if !m.transforms.is_empty() {
            let _ = writeln!(y, "    transforms: [{}]", m.transforms.join(", "));
        }
        if !m.null_if.is_empty() {
            let list: Vec<String> = m.null_if.iter().map(|s| quote(s)).collect();
            let _ = writeln!(
                y,
                "    null_if: [{}]  # placeholders read as no value",
                list.join(", ")
            );
        }
        if m.required {
            y.push_str("    required: true\n");
        }
    }
    for path in &p.todo_fields {
        let f = r
            .fields
            .iter()
            .find(|f| &f.path == path)
            .expect("a TODO field is a field");
        y.push('\n');
        let _ = writeln!(y, "  # TODO: {path} is required: which column holds it?");
        let (transforms, _) = transforms_for(f, None);
        let _ = writeln!(y, "  # {path}:");
        y.push_str("  #   from: \"?\"\n");
        let _ = writeln!(y, "  #   transforms: [{}]", transforms.join(", "));
        y.push_str("  #   required: true\n");
    }
    for g in &p.todo_groups {
        y.push('\n');
        let _ = writeln!(
            y,
            "  # TODO: the schema needs at least one of {}: which column holds one?",
            g.join(", ")
        );
    }
    if !p.unmatched_optional.is_empty() {
        y.push('\n');
        comment_line(
            &mut y,
            "",
            &wrap(
                &format!(
                    "Optional fields with no column found: {}",
                    p.unmatched_optional.join(", ")
                ),
                96,
            ),
        );
    }
    if !p.unused_columns.is_empty() || p.unnamed_empty > 0 {
        y.push('\n');
        if !p.unused_columns.is_empty() {
            let names: Vec<String> = p.unused_columns.iter().map(|c| quote(c)).collect();
            comment_line(
                &mut y,
                "",
                &wrap(&format!("Columns not used: {}", names.join(", ")), 96),
            );
        }
        if p.unnamed_empty > 0 {
            let _ = writeln!(
                y,
                "# ({} column(s) without a header name, empty on every sample row)",
                p.unnamed_empty
            );
        }
    }
    y
}

/// Wraps text at `width` characters on spaces.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = format!("  {word}");
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    out.push_str(&line);
    out
}

/// A council name as part of an id: lower case, runs of other characters as one `-`.
/// A draft's mapping id: council, entity and what the file's name says it is, without its
/// dates, so that each export of a council gets its own id and next month's file the same one
/// (`oxford_2014-apr-jun_spend_over_500.csv` → `oxford-supplier-payment-spend-over`).
fn draft_id(council: &str, entity_short: &str, file: &str) -> String {
    const MONTHS: &[&str] = &[
        "jan",
        "feb",
        "mar",
        "apr",
        "may",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "january",
        "february",
        "march",
        "april",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "q1",
        "q2",
        "q3",
        "q4",
    ];
    let council = slug(council);
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    let words: Vec<String> = slug(stem)
        .split('-')
        .filter(|w| {
            !w.is_empty()
                && !w.chars().all(|c| c.is_ascii_digit())
                && !MONTHS.contains(w)
                && !council.split('-').any(|c| c == *w)
        })
        .take(3)
        .map(str::to_string)
        .collect();
    let mut id = format!("{council}-{}", entity_short.replace('_', "-"));
    if !words.is_empty() {
        id.push('-');
        id.push_str(&words.join("-"));
    }
    id
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Registry;

    #[test]
    fn each_export_of_a_council_gets_its_own_id_and_each_month_the_same() {
        let id = |f| draft_id("Oxford", "post", f);
        assert_eq!(
            id("oxford_2012-04_senior_salaries.csv"),
            "oxford-post-senior-salaries"
        );
        assert_eq!(
            id("oxford_2015-04_senior_salaries_blank_column.csv"),
            "oxford-post-senior-salaries-blank"
        );
        assert_eq!(
            draft_id(
                "oxford",
                "supplier_payment",
                "oxford_2014-apr-jun_spend_over_500.csv"
            ),
            draft_id(
                "oxford",
                "supplier_payment",
                "oxford_2014-jul-sep_spend_over_500.csv"
            )
        );
        assert_eq!(id("2026-11.csv"), "oxford-post");
    }
    use crate::mapping::compile_str;

    fn registry() -> Registry {
        Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap()
    }

    fn draft(text: &[u8], entity: &str) -> (Scaffold, Registry) {
        let r = registry();
        let s = scaffold_bytes("sample.csv", text, r.get(entity).unwrap(), "Test Council").unwrap();
        serde_saphyr::from_str::<Value>(&s.yaml)
            .unwrap_or_else(|e| panic!("the draft is not YAML: {e}\n{}", s.yaml));
        (s, r)
    }

    fn column<'a>(s: &'a Scaffold, field: &str) -> Option<&'a str> {
        s.fields
            .iter()
            .find(|m| m.field == field)
            .and_then(|m| match &m.source {
                MatchedSource::Column { name, .. } => Some(name.as_str()),
                _ => None,
            })
    }

    fn profile(values: &[&str]) -> ColumnProfile {
        profile_column(0, "c", values)
    }

    #[test]
    fn formats_are_told_apart_by_their_first_bytes() {
        assert_eq!(sniff_format(b"a,b\n1,2\n"), DetectedFormat::Csv);
        assert_eq!(sniff_format(b"  [{\"a\": 1}]"), DetectedFormat::Json);
        assert_eq!(
            sniff_format(b"{\"workers\": [\n{\"a\": 1}\n]}"),
            DetectedFormat::Json
        );
        assert_eq!(
            sniff_format(b"{\"a\": 1}\n{\"a\": 2}\n"),
            DetectedFormat::Ndjson
        );
        assert_eq!(
            sniff_format(b"\xef\xbb\xbf<?xml version=\"1.0\"?><a/>"),
            DetectedFormat::Xml
        );
        assert_eq!(sniff_format(b"PK\x03\x04rest"), DetectedFormat::Spreadsheet);
        let fixed = "H20261101 PAYROLL\nD00104010  OKAFOR      000391250\nD00104020  RAMAN       000223680\nD00104030  HALE        000410433\nT000000003 000001025363\n";
        assert_eq!(sniff_format(fixed.as_bytes()), DetectedFormat::FixedWidth);
    }

    #[test]
    fn encodings_follow_the_decoder_rules() {
        assert_eq!(detect_encoding(b"\xef\xbb\xbfName").1, "utf-8");
        assert_eq!(detect_encoding(b"\xef\xbb\xbfName").0, "Name");
        assert_eq!(detect_encoding("£5".as_bytes()).1, "utf-8");
        let (text, label, why) = detect_encoding(b"Amount\n\xa35.00\n");
        assert_eq!((text.as_ref(), label), ("Amount\n£5.00\n", "windows-1252"));
        assert!(why.contains("0xA3"), "{why}");
        assert_eq!(detect_encoding(b"\xff\xfeA\x00").1, "utf-16le");
    }

    #[test]
    fn the_delimiter_is_the_one_with_consistent_field_counts() {
        assert_eq!(detect_delimiter("a;b;c\n1;2,5;3\n4;5;6\n"), b';');
        assert_eq!(detect_delimiter("a\tb\tc\n1\t2, 5\t3\n"), b'\t');
        assert_eq!(detect_delimiter("a|b\n1|2\n"), b'|');
        assert_eq!(detect_delimiter("a,b;c\n1,2;3\n4,5;6\n\"x;y\",1\n"), b',');
        assert_eq!(detect_delimiter("just one column\nvalue\n"), b',');
    }

    fn rows(text: &str) -> Vec<Vec<String>> {
        records(text, b',', 1000)
    }

    #[test]
    fn the_header_is_found_below_title_rows() {
        let text = "Payments over £500,,,\n,,,\nReport date: 02/07/2012,,,\nSupplier,Date,Amount,Ref\nAcme,01/01/2026,5.00,A1\nBeta,02/01/2026,6.00,A2\n";
        assert_eq!(find_header(&rows(text)), Some(3));
        assert_eq!(find_header(&rows("Supplier,Amount\nAcme,5\n")), Some(0));
        // Numbers and dates are data, not a header.
        assert_eq!(
            find_header(&rows("01/01/2026,5.00,12\n02/01/2026,6.00,13\n")),
            None
        );
    }

    #[test]
    fn a_trailer_is_recognised_with_its_count_and_total() {
        let header: Vec<String> = ["Ref", "Amount"].map(String::from).to_vec();
        let last: Vec<String> = ["TOTAL", "2", "11.00"].map(String::from).to_vec();
        let t = detect_trailer(&last, 2, 2, &header, &[None, Some(1100)]).unwrap();
        assert_eq!(t.pattern, "^TOTAL$");
        assert_eq!(
            (t.column, t.count_column, t.total_column),
            (1, Some(2), Some(3))
        );
        assert_eq!(t.total_of.as_deref(), Some("Amount"));
        // An ordinary last row is not a trailer.
        let row: Vec<String> = ["A9", "5.00"].map(String::from).to_vec();
        assert!(detect_trailer(&row, 2, 2, &header, &[None, Some(1100)]).is_none());
        // A narrow last row carrying numbers is, even without a keyword.
        let wide: Vec<String> = (0..8).map(|i| format!("h{i}")).collect();
        let narrow: Vec<String> = ["T", "3"].map(String::from).to_vec();
        let t = detect_trailer(&narrow, 8, 3, &wide, &[None; 8]).unwrap();
        assert_eq!((t.pattern.as_str(), t.count_column), ("^T$", Some(2)));
    }

    #[test]
    fn columns_are_profiled_by_the_shape_of_their_values() {
        let dates = profile(&["06-Apr-2011", "13-Apr-2011", "", "7-Apr-2011"]);
        let Shape::Date { formats } = &dates.shape else {
            panic!("{:?}", dates.shape)
        };
        let parsers: Vec<DateFormat> = formats
            .iter()
            .map(|f| DateFormat::new(f).unwrap())
            .collect();
        assert!(
            ["06-Apr-2011", "7-Apr-2011"]
                .iter()
                .all(|v| parsers.iter().any(|p| p.parse(v).is_some()))
        );
        assert_eq!(dates.empty, 1);
        assert!((dates.empty_share - 0.25).abs() < 1e-9);
        assert_eq!(
            profile(&["2024-07-01", "2024-07-02"]).shape,
            Shape::Date {
                formats: vec!["yyyy-mm-dd".into()]
            }
        );
        assert_eq!(
            profile(&["20260401", "20261231"]).shape,
            Shape::Date {
                formats: vec!["yyyymmdd".into()]
            }
        );
        assert_eq!(
            profile(&["01040112", "01040113"]).shape,
            Shape::LeadingZeros
        );
        assert_eq!(
            profile(&["£3,912.50", "(312.50)", "-45.00", "599"]).shape,
            Shape::Money
        );
        assert_eq!(profile(&["4626511", "4627613"]).shape, Shape::Integer);
        assert_eq!(profile(&["0.125", "1.5"]).shape, Shape::Decimal);
        assert_eq!(profile(&["Y", "N", "n"]).shape, Shape::Boolean);
        assert_eq!(
            profile(&["JX 12 34 56 A", "pe654321b", "TR334567D"]).shape,
            Shape::Nino
        );
        assert_eq!(profile(&["NM1 4AB", "kb3 9ht "]).shape, Shape::Postcode);
        assert_eq!(
            profile(&["40-12-76", "20 45 77", "309921"]).shape,
            Shape::SortCode
        );
        assert!(profile(&["309921", "401276"]).six_digits);
        assert_eq!(
            profile(&["a.b@x.example", "c@y.example"]).shape,
            Shape::Email
        );
        assert_eq!(profile(&["Acme Ltd", "5218"]).shape, Shape::Text);
        assert_eq!(profile(&["", " "]).shape, Shape::Empty);
        let na = profile(&["NA", "98908", "NA", "85414"]);
        assert_eq!(na.shape, Shape::Integer);
        assert_eq!(na.placeholders, ["NA"]);
        let ids = profile(&["T1", "T2", "T3"]);
        assert!(ids.unique);
        assert_eq!(ids.codes, ["T1", "T2", "T3"]);
        assert!(!profile(&["R", "R", "C"]).unique);
    }

    #[test]
    fn headers_are_compared_as_words() {
        assert_eq!(tokens("Emp No."), ["employee", "number"]);
        assert_eq!(tokens("Forename(s)"), ["forenames"]);
        assert_eq!(tokens("OrganisationURI"), ["organisation", "uri"]);
        assert_eq!(tokens("DOB"), ["date", "birth"]);
        assert_eq!(tokens("Capital /Revenue"), ["capital", "revenue"]);
        assert_eq!(tokens("Address1"), ["address", "1"]);
        let r = registry();
        let fields = entity_fields(r.get("hr.employee").unwrap());
        let f = |p: &str| fields.iter().find(|f| f.path == p).unwrap();
        assert!(name_score(f("employee_number"), "Emp No").0 >= 0.95);
        assert!(name_score(f("date_of_birth"), "Date of Birth").0 >= 0.95);
        assert!(name_score(f("date_of_birth"), "Birth date").0 >= 0.9);
        assert!(name_score(f("nino"), "National Insurance No").0 >= 0.9);
        assert!(name_score(f("address.postcode"), "Post Code").0 >= 0.95);
        assert!(name_score(f("address.line1"), "Address 1").0 >= 0.9);
        assert!(name_score(f("surname"), "Forename").0 < 0.5);
        assert!(name_score(f("employee_number"), "Employee Name").0 < 0.7);
    }

    #[test]
    fn codes_are_mapped_to_enum_values() {
        let e = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let methods = e(&["bacs", "cheque", "card", "chaps"]);
        assert_eq!(map_code("CHQ", &methods).as_deref(), Some("cheque"));
        assert_eq!(map_code(" BACS ", &methods).as_deref(), Some("bacs"));
        assert_eq!(map_code("DD", &methods), None);
        let cr = e(&["capital", "revenue"]);
        assert_eq!(map_code("R", &cr).as_deref(), Some("revenue"));
        assert_eq!(map_code("Capital", &cr).as_deref(), Some("capital"));
        let contracts = e(&["permanent", "fixed_term", "casual"]);
        assert_eq!(map_code("PERM", &contracts).as_deref(), Some("permanent"));
        assert_eq!(map_code("FTC", &contracts).as_deref(), Some("fixed_term"));
        assert_eq!(
            map_code("Fixed Term Contract", &contracts).as_deref(),
            Some("fixed_term")
        );
        let gender = e(&["female", "male", "other", "not_known"]);
        assert_eq!(map_code("M", &gender).as_deref(), Some("male"));
        assert_eq!(map_code("U", &gender).as_deref(), Some("not_known"));
        let freq = e(&["weekly", "fortnightly", "four_weekly", "monthly"]);
        assert_eq!(map_code("M", &freq).as_deref(), Some("monthly"));
        assert_eq!(map_code("4W", &freq).as_deref(), Some("four_weekly"));
    }

    const PAYMENTS: &str = "Trans No,Supplier Name,Date Paid,Amount,VAT,Method,Cost Centre\n\
        P001,Acme Ltd,01/11/2026,\"1,200.00\",200.00,BACS,0101\n\
        P002,Beta plc,02/11/2026,(50.00),Nil,CHQ,0102\n\
        P003,Gamma,03/11/2026,599,0,BACS,0101\n";

    #[test]
    fn a_clean_export_gives_a_draft_that_compiles() {
        let (s, r) = draft(PAYMENTS.as_bytes(), "finance.supplier_payment");
        assert_eq!(s.mapping_id, "test-council-supplier-payment-sample");
        assert_eq!(column(&s, "transaction_id"), Some("Trans No"));
        assert_eq!(column(&s, "supplier_name"), Some("Supplier Name"));
        assert_eq!(column(&s, "payment_date"), Some("Date Paid"));
        assert_eq!(column(&s, "amount_pence"), Some("Amount"));
        assert_eq!(column(&s, "vat_pence"), Some("VAT"));
        assert_eq!(column(&s, "payment_method"), Some("Method"));
        assert_eq!(column(&s, "cost_centre"), Some("Cost Centre"));
        assert_eq!(s.key, ["transaction_id"]);
        let yaml = &s.yaml;
        assert!(yaml.contains("mapping: test-council-supplier-payment-sample\nversion: 1\nentity: finance.supplier_payment\n"), "{yaml}");
        assert!(yaml.contains("  supplier_name:  # header \"Supplier Name\" (similarity 1.00), text\n    from: \"Supplier Name\"\n    transforms: [trim]\n    required: true\n"), "{yaml}");
        assert!(
            yaml.contains("transforms: [{ date: \"dd/mm/yyyy\" }]"),
            "{yaml}"
        );
        assert!(yaml.contains("  amount_pence:"), "{yaml}");
        assert!(yaml.contains("transforms: [money]"), "{yaml}");
        assert!(
            yaml.contains("{ \"BACS\": bacs, \"CHQ\": cheque }"),
            "{yaml}"
        );
        assert!(
            yaml.contains("  currency:  # the schema allows only \"GBP\"\n    value: GBP\n"),
            "{yaml}"
        );
        // "Nil" is money's zero: no null_if for it.
        assert!(!yaml.contains("null_if"), "{yaml}");
        assert!(
            yaml.contains(
                "# Optional fields with no column found: source_reference, supplier_id, payment_period.start,"
            ),
            "{yaml}"
        );
        let mapping = compile_str("draft.yaml", yaml, &r).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(mapping.key, ["transaction_id"]);
    }

    #[test]
    fn gzip_semicolons_and_odd_header_names_are_handled() {
        let text = "Ref;Supplier \"Name\": #1;Paid;Amount;Amount\nA1;Acme;01/11/2026;5,00;1.00\nA2;Beta;02/11/2026;6,00;2.00\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
        let (s, r) = draft(&gz.finish().unwrap(), "finance.supplier_payment");
        assert!(s.source.gzip);
        assert_eq!(s.source.delimiter, Some(';'));
        assert!(s.notes.iter().any(|n| n.contains("gzip")));
        assert!(s.yaml.contains("delimiter: \";\""));
        assert!(
            s.yaml.contains("from: \"Supplier \\\"Name\\\": #1\""),
            "{}",
            s.yaml
        );
        // The second "Amount" is picked by occurrence.
        assert!(
            s.yaml.contains("from: { name: \"Amount\", occurrence: 2 }"),
            "{}",
            s.yaml
        );
        compile_str("draft.yaml", &s.yaml, &r).unwrap_or_else(|e| panic!("{e}\n{}", s.yaml));
    }

    #[test]
    fn without_a_header_columns_are_numbered_and_values_decide() {
        let text = "A1,01/11/2026,\"1,200.00\"\nA2,02/11/2026,5.00\n";
        let (s, _) = draft(text.as_bytes(), "finance.supplier_payment");
        assert!(!s.source.header);
        assert!(s.yaml.contains("header: false"), "{}", s.yaml);
        assert_eq!(column(&s, "payment_date"), Some("2"));
        assert!(s.yaml.contains("    from: 2\n"), "{}", s.yaml);
        assert!(
            s.yaml.contains(
                "# TODO: the schema needs at least one of supplier_name, null_reasons: which column holds one?"
            ),
            "{}",
            s.yaml
        );
    }

    #[test]
    fn unmatched_required_fields_are_commented_todo_blocks() {
        let (s, r) = draft(b"Colour,Size\nred,1\nblue,2\n", "hr.employee");
        for f in [
            "employee_number",
            "forenames",
            "surname",
            "start_date",
            "status",
        ] {
            assert!(s.missing_required.contains(&f.to_string()), "{f}");
            assert!(
                s.yaml.contains(&format!(
                    "  # TODO: {f} is required: which column holds it?\n  # {f}:\n"
                )),
                "{}",
                s.yaml
            );
        }
        assert!(
            s.yaml
                .contains("  #   transforms: [{ date: \"dd/mm/yyyy\" }]\n"),
            "{}",
            s.yaml
        );
        assert!(s.yaml.contains("fields: {}\n"), "{}", s.yaml);
        assert!(
            s.yaml.contains("# Columns not used: \"Colour\", \"Size\""),
            "{}",
            s.yaml
        );
        assert!(s.yaml.contains("key: []  # TODO"), "{}", s.yaml);
        let Err(crate::mapping::MappingError::Invalid { diagnostics, .. }) =
            compile_str("draft.yaml", &s.yaml, &r)
        else {
            panic!("must not compile")
        };
        assert_eq!(
            diagnostics.len(),
            6,
            "5 required fields and the key: {diagnostics:?}"
        );
    }

    #[test]
    fn json_and_xml_samples_are_flattened_to_paths() {
        let json = br#"{"meta": {"page": 1}, "data": {"workers": [
            {"id": "E1", "name": {"given": "Ann", "family": "Lee"}, "hired": "2020-01-02", "status": "active"},
            {"id": "E2", "name": {"given": "Bo", "family": "Ng"}, "hired": "2021-03-04", "status": "terminated"}
        ]}}"#;
        let r = registry();
        let e = r.get("hr.employee").unwrap();
        let s = scaffold_bytes("w.json", json, e, "x").unwrap();
        assert_eq!(s.source.records_at.as_deref(), Some("/data/workers"));
        assert!(s.yaml.contains("records_at: \"/data/workers\""));
        assert_eq!(column(&s, "forenames"), Some("name/given"));
        assert_eq!(column(&s, "surname"), Some("name/family"));
        assert_eq!(column(&s, "status"), Some("status"));
        assert!(s.yaml.contains("\"TERMINATED\": leaver"), "{}", s.yaml);

        let xml = b"<?xml version=\"1.0\"?><Export><Header><Run>1</Run></Header>\
            <Payment><Ref>P1</Ref><Supplier>Acme</Supplier><Paid>2026-11-01</Paid><Gross>5.00</Gross><Line><N>1</N></Line><Line><N>2</N></Line></Payment>\
            <Payment><Ref>P2</Ref><Supplier>Beta</Supplier><Paid>2026-11-02</Paid><Gross>6.00</Gross><Line><N>1</N></Line></Payment></Export>";
        assert_eq!(
            guess_record_path(xml),
            Some(("Export/Payment".to_string(), 2))
        );
        let e = r.get("finance.supplier_payment").unwrap();
        let s = scaffold_bytes("p.xml", xml, e, "x").unwrap();
        assert!(
            s.yaml.contains("record_path: \"Export/Payment\""),
            "{}",
            s.yaml
        );
        assert_eq!(column(&s, "supplier_name"), Some("Supplier"));
        compile_str("draft.yaml", &s.yaml, &r).unwrap_or_else(|e| panic!("{e}\n{}", s.yaml));
        // One document, one record: the root.
        assert_eq!(
            guess_record_path(b"<Invoice><ID>1</ID><Line><A>1</A></Line></Invoice>"),
            Some(("Invoice".to_string(), 1))
        );
    }

    #[test]
    fn an_empty_sample_is_an_error_that_says_so() {
        let r = registry();
        let err = scaffold_bytes("e.csv", b"\n \n", r.get("hr.post").unwrap(), "x").unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }
}
