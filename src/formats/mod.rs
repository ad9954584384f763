//! Decoding of raw export files into source records, streaming.
//!
//! A decoder turns bytes into [`Item`]s: records with a precise [`Locator`], control (trailer)
//! rows, and row-level [`DecodeFailure`]s. Bad rows are data, not errors: a decoder yields a
//! failure and carries on; `Err(FormatError)` means the file cannot be read any further.
//! Formats know nothing of mappings, schemas, the store or the broker.

pub mod compression;
pub mod csv;
pub mod encoding;
pub mod fixed_width;
pub mod json;
pub mod spreadsheet;
pub mod xml;

use std::io::Read;
use std::sync::Arc;

/// How to read a feed's files: the format and its options (from the mapping's `source:`).
#[derive(Debug, Clone)]
pub enum FormatOptions {
    /// Delimited text.
    Csv(csv::CsvOptions),
    /// Fixed-width text with record types.
    FixedWidth(fixed_width::FixedWidthOptions),
    /// XML, records selected by element path, flattened to path columns.
    Xml(xml::XmlOptions),
    /// JSON (records in an array at a pointer) or NDJSON, flattened to path columns.
    Json(json::JsonOptions),
    /// XLSX, XLS or ODS: one sheet, rows as records.
    Spreadsheet(spreadsheet::SpreadsheetOptions),
}

impl FormatOptions {
    /// The format's name as written in mappings.
    pub fn name(&self) -> &'static str {
        match self {
            FormatOptions::Csv(_) => "csv",
            FormatOptions::FixedWidth(_) => "fixed_width",
            FormatOptions::Xml(_) => "xml",
            FormatOptions::Json(o) if o.ndjson => "ndjson",
            FormatOptions::Json(_) => "json",
            FormatOptions::Spreadsheet(_) => "spreadsheet",
        }
    }

    /// Whether each record carries its own header (tree formats flattened to paths), so that
    /// a column missing from one record means "absent" rather than "wrong file".
    pub fn per_record_header(&self) -> bool {
        matches!(self, FormatOptions::Xml(_) | FormatOptions::Json(_))
    }
}

/// A streaming decoder of any format: [`Item`]s in file order.
pub trait Decoder: Iterator<Item = Result<Item, FormatError>> {
    /// The columns of the file's records (for tree formats, empty: records carry their own).
    fn header(&self) -> Arc<Header>;
}

impl<R: Read> Decoder for csv::CsvDecoder<R> {
    fn header(&self) -> Arc<Header> {
        csv::CsvDecoder::header(self)
    }
}

impl Decoder for fixed_width::FixedWidthDecoder {
    fn header(&self) -> Arc<Header> {
        fixed_width::FixedWidthDecoder::header(self)
    }
}

impl Decoder for xml::XmlDecoder {
    fn header(&self) -> Arc<Header> {
        xml::XmlDecoder::header(self)
    }
}

impl Decoder for spreadsheet::SpreadsheetDecoder {
    fn header(&self) -> Arc<Header> {
        spreadsheet::SpreadsheetDecoder::header(self)
    }
}

impl Decoder for json::JsonDecoder {
    fn header(&self) -> Arc<Header> {
        json::JsonDecoder::header(self)
    }
}

/// Opens a decoder for `bytes` (the raw file named `file`). Gzip-compressed bytes are
/// recognised by their magic number and decompressed on the fly, whatever the file's name.
pub fn open(
    file: &str,
    bytes: impl Read + 'static,
    options: &FormatOptions,
) -> Result<Box<dyn Decoder>, FormatError> {
    let (bytes, _gzip) = compression::sniff(bytes).map_err(|source| FormatError::Io {
        file: file.to_string(),
        source,
    })?;
    Ok(match options {
        FormatOptions::Csv(o) => Box::new(csv::CsvDecoder::new(file, bytes, o.clone())?),
        FormatOptions::FixedWidth(o) => {
            Box::new(fixed_width::FixedWidthDecoder::new(file, bytes, o)?)
        }
        FormatOptions::Xml(o) => Box::new(xml::XmlDecoder::new(file, bytes, o)?),
        FormatOptions::Json(o) => Box::new(json::JsonDecoder::new(file, bytes, o)?),
        FormatOptions::Spreadsheet(o) => {
            Box::new(spreadsheet::SpreadsheetDecoder::new(file, bytes, o)?)
        }
    })
}

/// Where a record came from: what an officer needs to find it in the council's file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Locator {
    /// File name as received (no directory).
    pub file: String,
    /// Physical line in the file where the record starts, 1-based (title rows and header count).
    pub line: u64,
    /// Data row number, 1-based, counting detail rows only.
    pub row: u64,
}

impl std::fmt::Display for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, line {} (row {})", self.file, self.line, self.row)
    }
}

/// Column names of a file, as found in its header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    names: Vec<String>,
}

impl Header {
    /// A header from the names in the file, in order.
    pub fn new(names: Vec<String>) -> Self {
        Self { names }
    }

    /// A header of `n` unnamed columns (`1`, `2`, ...), for files without a header row.
    pub fn numbered(n: usize) -> Self {
        Self {
            names: (1..=n).map(|i| i.to_string()).collect(),
        }
    }

    /// The column names as they appear in the file.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Finds a column by name, ignoring case, surrounding spaces and repeated inner spaces
    /// (`"Supplier  Name "` finds `supplier name`). The first match wins.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.find_nth(name, 1)
    }

    /// Finds the `occurrence`-th (1-based) column of that name, for files that repeat a header
    /// (`Class Code` twice).
    pub fn find_nth(&self, name: &str, occurrence: usize) -> Option<usize> {
        let want = normalise_name(name);
        self.names
            .iter()
            .enumerate()
            .filter(|(_, n)| normalise_name(n) == want)
            .nth(occurrence.checked_sub(1)?)
            .map(|(i, _)| i)
    }
}

/// The form of a column name used for matching: trimmed, lower case, single spaces.
pub fn normalise_name(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A reference to a column: by name, or by 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnRef {
    /// By header name (matched as [`Header::find`] does).
    Name(String),
    /// By 1-based position.
    Position(usize),
    /// The n-th (1-based) column of a repeated header name.
    Occurrence(String, usize),
}

impl ColumnRef {
    /// Resolves to a 0-based index in `header`, or `None` when the file has no such column.
    pub fn resolve(&self, header: &Header) -> Option<usize> {
        match self {
            ColumnRef::Name(n) => header.find(n),
            ColumnRef::Occurrence(n, k) => header.find_nth(n, *k),
            ColumnRef::Position(p) if *p >= 1 => Some(p - 1),
            ColumnRef::Position(_) => None,
        }
    }
}

impl std::fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnRef::Name(n) => write!(f, "\"{n}\""),
            ColumnRef::Position(p) => write!(f, "column {p}"),
            ColumnRef::Occurrence(n, k) => write!(f, "\"{n}\" (occurrence {k})"),
        }
    }
}

/// One row of a source file with where it came from.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// Where the row is in the file.
    pub locator: Locator,
    /// The file's header, shared by all its records.
    pub header: Arc<Header>,
    /// The row's values, in column order (missing trailing values are absent, not empty).
    pub values: Vec<String>,
}

impl SourceRecord {
    /// The value at a 0-based column, or `""` when the row is shorter.
    pub fn get(&self, index: usize) -> &str {
        self.values.get(index).map(String::as_str).unwrap_or("")
    }

    /// The raw record as `{"header": [...], "values": [...]}`, which keeps duplicate column
    /// names and order; what the failure store keeps for replay.
    pub fn to_raw_json(&self) -> serde_json::Value {
        serde_json::json!({ "header": self.header.names(), "values": self.values })
    }

    /// Rebuilds a record from [`SourceRecord::to_raw_json`] output.
    pub fn from_raw_json(locator: Locator, raw: &serde_json::Value) -> Option<Self> {
        let strings = |v: &serde_json::Value| -> Option<Vec<String>> {
            v.as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        Some(Self {
            locator,
            header: Arc::new(Header::new(strings(raw.get("header")?)?)),
            values: strings(raw.get("values")?)?,
        })
    }
}

/// A row that could not be decoded (as opposed to a file that cannot be read at all).
#[derive(Debug, Clone)]
pub struct DecodeFailure {
    /// Where the row is.
    pub locator: Locator,
    /// What is wrong, in words an officer can act on (never the row's values).
    pub reason: String,
    /// What could be read of the row, kept for the failure store.
    pub record: Option<SourceRecord>,
}

/// What a decoder yields, in file order.
#[derive(Debug, Clone)]
pub enum Item {
    /// A detail record.
    Record(SourceRecord),
    /// A control row (trailer/footer) carrying counts or totals.
    Control(SourceRecord),
    /// A row that could not be decoded.
    Failure(DecodeFailure),
}

/// A file that cannot be read any further.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The bytes could not be read.
    #[error("{file}: cannot read the file: {source}")]
    Io {
        /// File name.
        file: String,
        /// Cause.
        source: std::io::Error,
    },
    /// There is no header row where the mapping says one should be.
    #[error("{file}: no header row found (the file has {rows} rows; `skip_rows` is {skip})")]
    NoHeader {
        /// File name.
        file: String,
        /// Rows the file has.
        rows: u64,
        /// Rows the mapping skips.
        skip: usize,
    },
    /// The CSV structure is broken beyond one row.
    #[error("{file}, line {line}: {message}")]
    Malformed {
        /// File name.
        file: String,
        /// Physical line.
        line: u64,
        /// What is wrong.
        message: String,
    },
}
