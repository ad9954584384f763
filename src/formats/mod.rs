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
pub mod limits;
pub mod spreadsheet;
pub mod xml;

use std::io::Read;
use std::sync::Arc;

pub use limits::{LimitExceeded, Limits};

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

/// Opens a decoder for `bytes` (the raw file named `file`) with the default [`Limits`].
/// Gzip-compressed bytes are recognised by their magic number and decompressed on the fly,
/// whatever the file's name.
pub fn open(
    file: &str,
    bytes: impl Read + 'static,
    options: &FormatOptions,
) -> Result<Box<dyn Decoder>, FormatError> {
    open_limited(file, bytes, options, &Limits::default())
}

/// Opens a decoder for `bytes` within a feed's `limits`: decompression stops at the size and
/// ratio limits, a record can never make the parser hold more than `max_record_bytes`, and a
/// header, row, field or file over its limit fails with [`FormatError::Limit`] (the file) or an
/// [`Item::Failure`] (the row) naming the setting.
pub fn open_limited(
    file: &str,
    bytes: impl Read + 'static,
    options: &FormatOptions,
    limits: &Limits,
) -> Result<Box<dyn Decoder>, FormatError> {
    let (bytes, _gzip) =
        compression::sniff_limited(bytes, limits).map_err(|source| io_error(file, source))?;
    // Spreadsheets are read whole (bounded by `max_workbook_bytes`); text formats are read
    // through a meter that stops any one record from growing past `max_record_bytes`.
    let (bytes, meter): (Box<dyn Read>, _) = match options {
        FormatOptions::Spreadsheet(_) => (bytes, None),
        _ => {
            let (m, state) = limits::Meter::new(
                bytes,
                limits.max_record_bytes,
                "one record (or the text before the first record)",
                "max_record_bytes",
            );
            (Box::new(m), Some(state))
        }
    };
    let limit = |e: FormatError| e.with_limit();
    let decoder: Box<dyn Decoder> = match options {
        FormatOptions::Csv(o) => {
            Box::new(csv::CsvDecoder::new_limited(file, bytes, o.clone(), limits).map_err(limit)?)
        }
        FormatOptions::FixedWidth(o) => Box::new(
            fixed_width::FixedWidthDecoder::new_limited(file, bytes, o, limits).map_err(limit)?,
        ),
        FormatOptions::Xml(o) => {
            Box::new(xml::XmlDecoder::new_limited(file, bytes, o, limits).map_err(limit)?)
        }
        FormatOptions::Json(o) => {
            Box::new(json::JsonDecoder::new_limited(file, bytes, o, limits).map_err(limit)?)
        }
        FormatOptions::Spreadsheet(o) => Box::new(
            spreadsheet::SpreadsheetDecoder::new_limited(file, bytes, o, limits).map_err(limit)?,
        ),
    };
    let columns = decoder.header().names().len();
    if columns > limits.max_columns {
        return Err(FormatError::Limit {
            file: file.to_string(),
            exceeded: LimitExceeded::new(
                format!("the header's {columns} columns"),
                limits.max_columns,
                "max_columns",
            ),
        });
    }
    if let Some(m) = &meter {
        m.mark();
    }
    Ok(Box::new(Guarded {
        inner: decoder,
        file: file.to_string(),
        limits: limits.clone(),
        meter,
        items: 0,
        done: false,
    }))
}

fn io_error(file: &str, source: std::io::Error) -> FormatError {
    match LimitExceeded::from_io(&source) {
        Some(exceeded) => FormatError::Limit {
            file: file.to_string(),
            exceeded,
        },
        None => FormatError::Io {
            file: file.to_string(),
            source,
        },
    }
}

/// Applies the limits every format shares to a decoder's items: records per file, columns
/// and bytes per row and per field; and opens a new record window on the meter per item.
struct Guarded {
    inner: Box<dyn Decoder>,
    file: String,
    limits: Limits,
    meter: Option<Arc<limits::MeterState>>,
    items: u64,
    done: bool,
}

impl Guarded {
    /// Why a row passes a limit (never its values), if it does.
    fn row_problem(&self, record: &SourceRecord) -> Option<String> {
        let l = &self.limits;
        if record.values.len() > l.max_columns {
            return Some(
                LimitExceeded::new(
                    format!("the row's {} columns", record.values.len()),
                    l.max_columns,
                    "max_columns",
                )
                .to_string(),
            );
        }
        let mut total = 0u64;
        for (i, v) in record.values.iter().enumerate() {
            total += v.len() as u64;
            if v.len() as u64 > l.max_field_bytes {
                let column = record
                    .header
                    .names()
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| (i + 1).to_string());
                return Some(
                    LimitExceeded::new(
                        format!("column \"{column}\" ({} bytes)", v.len()),
                        l.max_field_bytes,
                        "max_field_bytes",
                    )
                    .to_string(),
                );
            }
        }
        (total > l.max_record_bytes).then(|| {
            LimitExceeded::new(
                format!("the row ({total} bytes)"),
                l.max_record_bytes,
                "max_record_bytes",
            )
            .to_string()
        })
    }
}

impl Iterator for Guarded {
    type Item = Result<Item, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(m) = &self.meter {
            m.mark();
        }
        let item = match self.inner.next()? {
            Ok(item) => item,
            Err(e) => {
                self.done = true;
                return Some(Err(e.with_limit()));
            }
        };
        self.items += 1;
        if self.items > self.limits.max_records {
            self.done = true;
            return Some(Err(FormatError::Limit {
                file: self.file.clone(),
                exceeded: LimitExceeded::new(
                    "the number of records in the file",
                    self.limits.max_records,
                    "max_records",
                ),
            }));
        }
        Some(Ok(match item {
            Item::Record(r) | Item::Control(r) if self.row_problem(&r).is_some() => {
                let reason = self.row_problem(&r).unwrap_or_default();
                Item::Failure(DecodeFailure {
                    locator: r.locator.clone(),
                    reason,
                    record: Some(r),
                })
            }
            other => other,
        }))
    }
}

impl Decoder for Guarded {
    fn header(&self) -> Arc<Header> {
        self.inner.header()
    }
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
#[derive(Debug, Clone)]
pub struct Header {
    names: Vec<String>,
    /// Normalised name → positions, built on the first lookup (so finding every column of a
    /// wide header is linear, not quadratic, in its width).
    index: std::sync::OnceLock<std::collections::HashMap<String, Vec<usize>>>,
}

impl PartialEq for Header {
    fn eq(&self, other: &Self) -> bool {
        self.names == other.names
    }
}

impl Eq for Header {}

impl Header {
    /// A header from the names in the file, in order.
    pub fn new(names: Vec<String>) -> Self {
        Self {
            names,
            index: std::sync::OnceLock::new(),
        }
    }

    /// A header of `n` unnamed columns (`1`, `2`, ...), for files without a header row.
    pub fn numbered(n: usize) -> Self {
        Self::new((1..=n).map(|i| i.to_string()).collect())
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
        let index = self.index.get_or_init(|| {
            let mut index = std::collections::HashMap::<String, Vec<usize>>::new();
            for (i, n) in self.names.iter().enumerate() {
                index.entry(normalise_name(n)).or_default().push(i);
            }
            index
        });
        index
            .get(&normalise_name(name))?
            .get(occurrence.checked_sub(1)?)
            .copied()
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

    /// [`SourceRecord::to_raw_json`] for the failure store, each value (and column name) kept
    /// only up to `max_bytes`: a longer one becomes `{"truncated": <its first max_bytes bytes>,
    /// "bytes": <full length>, "sha256": <of the whole value>}`, never a gigabyte. A record
    /// with a truncated value cannot be rebuilt for replay ([`SourceRecord::from_raw_json`]).
    pub fn to_raw_json_bounded(&self, max_bytes: usize) -> serde_json::Value {
        use sha2::Digest;
        let bound = |v: &String| -> serde_json::Value {
            if v.len() <= max_bytes {
                return serde_json::Value::String(v.clone());
            }
            let mut cut = max_bytes;
            while !v.is_char_boundary(cut) {
                cut -= 1;
            }
            serde_json::json!({
                "truncated": &v[..cut],
                "bytes": v.len(),
                "sha256": hex::encode(sha2::Sha256::digest(v.as_bytes())),
            })
        };
        serde_json::json!({
            "header": self.header.names().iter().map(bound).collect::<Vec<_>>(),
            "values": self.values.iter().map(bound).collect::<Vec<_>>(),
        })
    }

    /// Rebuilds a record for display from [`SourceRecord::to_raw_json_bounded`] output: a
    /// truncated value reads as its kept bytes followed by `… [N bytes, sha256 …]`.
    pub fn from_raw_json_for_display(locator: Locator, raw: &serde_json::Value) -> Option<Self> {
        let text = |v: &serde_json::Value| -> Option<String> {
            match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => Some(format!(
                    "{}… [{} bytes, sha256 {}]",
                    o.get("truncated")?.as_str()?,
                    o.get("bytes")?,
                    o.get("sha256")?.as_str()?
                )),
                _ => None,
            }
        };
        let strings = |v: &serde_json::Value| -> Option<Vec<String>> {
            v.as_array()?.iter().map(text).collect()
        };
        Some(Self {
            locator,
            header: Arc::new(Header::new(strings(raw.get("header")?)?)),
            values: strings(raw.get("values")?)?,
        })
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

/// Bytes of each raw value the failure store keeps for a rejected row (longer values are kept
/// truncated, with their full length and sha256).
pub const RAW_VALUE_BOUND: usize = 64 * 1024;

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
    /// A limit of the feed was passed where the file cannot go on (see [`Limits`]).
    #[error("{file}: {exceeded}")]
    Limit {
        /// File name.
        file: String,
        /// Which limit.
        exceeded: LimitExceeded,
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

impl FormatError {
    /// The same error, as [`FormatError::Limit`] when it is an I/O error caused by a limit (the
    /// readers report limits as I/O errors, which parsers pass on).
    pub fn with_limit(self) -> Self {
        match self {
            FormatError::Io { file, source } => io_error(&file, source),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_every_column_of_a_wide_header_is_linear() {
        let names: Vec<String> = (0..200_000).map(|i| format!("Col {i}")).collect();
        let header = Header::new(names);
        let started = std::time::Instant::now();
        for i in (0..200_000).step_by(200) {
            assert_eq!(header.find(&format!(" col  {i} ")), Some(i));
        }
        assert_eq!(header.find_nth("col 5", 2), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let repeated = Header::new(vec!["Code".into(), "X".into(), "code".into()]);
        assert_eq!(repeated.find_nth("CODE", 2), Some(2));
    }

    #[test]
    fn rows_over_a_field_or_column_limit_fail_alone_and_raw_values_are_bounded() {
        let limits = Limits {
            max_field_bytes: 10,
            max_columns: 3,
            ..Limits::default()
        };
        let options = FormatOptions::Csv(csv::CsvOptions::default());
        let text = "a,b\n1,2\n1,0123456789X\n1,2,3,4\n5,6\n";
        let items: Vec<Item> = open_limited("t.csv", std::io::Cursor::new(text), &options, &limits)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(items.len(), 4);
        let Item::Failure(f) = &items[1] else {
            panic!("{items:?}")
        };
        assert!(f.reason.contains("column \"b\" (11 bytes)"), "{}", f.reason);
        assert!(f.reason.contains("limits.max_field_bytes"), "{}", f.reason);
        let raw = f.record.as_ref().unwrap().to_raw_json_bounded(4);
        assert_eq!(raw["values"][1]["truncated"], "0123");
        assert_eq!(raw["values"][1]["bytes"], 11);
        assert!(matches!(&items[2], Item::Failure(f) if f.reason.contains("limits.max_columns")));
        assert!(matches!(&items[3], Item::Record(r) if r.values == ["5", "6"]));

        let few = Limits {
            max_records: 2,
            ..Limits::default()
        };
        let err = open_limited("t.csv", std::io::Cursor::new(text), &options, &few)
            .unwrap()
            .find_map(Result::err)
            .unwrap();
        assert!(err.to_string().contains("limits.max_records"), "{err}");
    }
}
