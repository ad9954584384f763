//! Fixed-width exports (mainframe payroll extracts, BACS Standard 18 style payment files):
//! one record per line, fields at fixed character positions, record types told apart by a
//! prefix (header, detail, trailer).

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use super::encoding::Encoding;
use super::{DecodeFailure, FormatError, Header, Item, Locator, SourceRecord};

/// What a record type is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A detail record: one source record.
    Detail,
    /// A control record (trailer) carrying counts or totals.
    Control,
    /// A label or header record with nothing to map (`VOL1`, `HDR1`, a file header).
    Skip,
}

/// One field's place in the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedColumn {
    /// Column name, used by the mapping's `from:`.
    pub name: String,
    /// First character, 1-based.
    pub start: usize,
    /// Number of characters.
    pub length: usize,
}

/// One record type: lines starting with `prefix` (or any line, when `prefix` is `None`).
#[derive(Debug, Clone)]
pub struct RecordLayout {
    /// The prefix that identifies the type.
    pub prefix: Option<String>,
    /// What the record is for.
    pub kind: RecordKind,
    /// Its fields (empty for `Skip`).
    pub columns: Vec<FixedColumn>,
}

/// How to read a fixed-width export.
#[derive(Debug, Clone)]
pub struct FixedWidthOptions {
    /// Character encoding.
    pub encoding: Encoding,
    /// Record types, tried in order: the first whose prefix matches the line wins.
    pub records: Vec<RecordLayout>,
}

impl FixedWidthOptions {
    /// The header of detail records: the detail layout's column names.
    pub fn detail_header(&self) -> Header {
        let names = self
            .records
            .iter()
            .find(|r| r.kind == RecordKind::Detail)
            .map(|r| r.columns.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        Header::new(names)
    }
}

struct Layout {
    prefix: Option<String>,
    kind: RecordKind,
    columns: Vec<FixedColumn>,
    header: Arc<Header>,
    /// Characters a line needs to reach the start of its last field.
    needs: usize,
}

/// Streaming fixed-width decoder.
pub struct FixedWidthDecoder {
    file: String,
    lines: BufReader<Box<dyn Read>>,
    layouts: Vec<Layout>,
    detail_header: Arc<Header>,
    can_be_invalid: bool,
    encoding: &'static str,
    line_no: u64,
    rows: u64,
    buf: String,
    line_meter: std::sync::Arc<super::limits::MeterState>,
    done: bool,
}

impl FixedWidthDecoder {
    /// Starts decoding `bytes` named `file`.
    pub fn new(
        file: impl Into<String>,
        bytes: impl Read + 'static,
        options: &FixedWidthOptions,
    ) -> Result<Self, FormatError> {
        Self::new_limited(file, bytes, options, &super::limits::Limits::default())
    }

    /// [`FixedWidthDecoder::new`] within a feed's limits (`max_line_bytes`).
    pub fn new_limited(
        file: impl Into<String>,
        bytes: impl Read + 'static,
        options: &FixedWidthOptions,
        limits: &super::limits::Limits,
    ) -> Result<Self, FormatError> {
        let file = file.into();
        let (encoding, bytes) =
            options
                .encoding
                .resolve(&file, bytes)
                .map_err(|source| FormatError::Io {
                    file: file.clone(),
                    source,
                })?;
        let (metered, line_meter) = super::limits::Meter::new(
            encoding.decode(bytes),
            limits.max_line_bytes,
            "a line",
            "max_line_bytes",
        );
        let text: Box<dyn Read> = Box::new(metered);
        let layouts = options
            .records
            .iter()
            .map(|r| Layout {
                prefix: r.prefix.clone(),
                kind: r.kind,
                header: Arc::new(Header::new(
                    r.columns.iter().map(|c| c.name.clone()).collect(),
                )),
                needs: r.columns.iter().map(|c| c.start).max().unwrap_or(0),
                columns: r.columns.clone(),
            })
            .collect();
        Ok(Self {
            file,
            lines: BufReader::with_capacity(64 * 1024, text),
            layouts,
            detail_header: Arc::new(options.detail_header()),
            can_be_invalid: encoding.can_be_invalid(),
            encoding: encoding.name(),
            line_no: 0,
            rows: 0,
            buf: String::new(),
            line_meter,
            done: false,
        })
    }

    /// Column names of detail records.
    pub fn header(&self) -> Arc<Header> {
        self.detail_header.clone()
    }
}

/// The characters `[start-1, start-1+length)` of `line`, trimmed (padding is layout, not data).
fn slice(line: &str, column: &FixedColumn) -> String {
    line.chars()
        .skip(column.start.saturating_sub(1))
        .take(column.length)
        .collect::<String>()
        .trim()
        .to_string()
}

impl Iterator for FixedWidthDecoder {
    type Item = Result<Item, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            self.buf.clear();
            self.line_meter.mark();
            match self.lines.read_line(&mut self.buf) {
                Ok(0) => {
                    self.done = true;
                    return None;
                }
                Ok(_) => {}
                Err(source) => {
                    self.done = true;
                    return Some(Err(FormatError::Io {
                        file: self.file.clone(),
                        source,
                    }
                    .with_limit()));
                }
            }
            self.line_no += 1;
            let line = self.buf.trim_end_matches(['\n', '\r']);
            if line.trim().is_empty() {
                continue;
            }
            let Some(layout) = self
                .layouts
                .iter()
                .find(|l| l.prefix.as_deref().is_none_or(|p| line.starts_with(p)))
            else {
                self.rows += 1;
                let start: String = line.chars().take(4).collect();
                return Some(Ok(Item::Failure(DecodeFailure {
                    locator: Locator {
                        file: self.file.clone(),
                        line: self.line_no,
                        row: self.rows,
                    },
                    reason: format!(
                        "the line starts with \"{start}\", which no record layout of the mapping describes"
                    ),
                    record: None,
                })));
            };
            if layout.kind == RecordKind::Skip {
                continue;
            }
            let is_detail = layout.kind == RecordKind::Detail;
            if is_detail {
                self.rows += 1;
            }
            let locator = Locator {
                file: self.file.clone(),
                line: self.line_no,
                row: if is_detail { self.rows } else { 0 },
            };
            let record = SourceRecord {
                locator: locator.clone(),
                header: layout.header.clone(),
                values: layout.columns.iter().map(|c| slice(line, c)).collect(),
            };
            let length = line.chars().count();
            let reason = if length < layout.needs {
                Some(format!(
                    "the line is {length} characters long but the layout needs at least {} (truncated record?)",
                    layout.needs
                ))
            } else if self.can_be_invalid && line.contains('\u{FFFD}') {
                Some(format!(
                    "the line has bytes that are not valid {}; check the file's encoding",
                    self.encoding
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Some(Ok(Item::Failure(DecodeFailure {
                    locator,
                    reason,
                    record: Some(record),
                })));
            }
            return Some(Ok(if is_detail {
                Item::Record(record)
            } else {
                Item::Control(record)
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, start: usize, length: usize) -> FixedColumn {
        FixedColumn {
            name: name.into(),
            start,
            length,
        }
    }

    fn options() -> FixedWidthOptions {
        FixedWidthOptions {
            encoding: Encoding::for_label("windows-1252").unwrap(),
            records: vec![
                RecordLayout {
                    prefix: Some("H".into()),
                    kind: RecordKind::Skip,
                    columns: vec![],
                },
                RecordLayout {
                    prefix: Some("T".into()),
                    kind: RecordKind::Control,
                    columns: vec![col("Count", 2, 5), col("Total", 7, 10)],
                },
                RecordLayout {
                    prefix: Some("D".into()),
                    kind: RecordKind::Detail,
                    columns: vec![col("Emp", 2, 6), col("Name", 8, 10), col("Gross", 18, 8)],
                },
            ],
        }
    }

    #[test]
    fn record_types_by_prefix_positions_and_padding() {
        let text: &'static [u8] = b"HPAYROLL 202610\r\nDE00001Ren\xe9e     00123456\r\n\r\nDE00002Sam       00000100\r\nX junk\r\nDE00003Short\r\nT00002000123556\r\n";
        let items: Vec<Item> = FixedWidthDecoder::new("pay.txt", text, &options())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let Item::Record(r) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(r.values, ["E00001", "Renée", "00123456"]);
        assert_eq!((r.locator.line, r.locator.row), (2, 1));
        assert_eq!(r.header.find("gross"), Some(2));
        let Item::Record(r) = &items[1] else { panic!() };
        assert_eq!((r.locator.line, r.values[1].as_str()), (4, "Sam"));
        let Item::Failure(f) = &items[2] else {
            panic!("{items:?}")
        };
        assert_eq!(f.locator.line, 5);
        assert!(f.reason.contains("no record layout"), "{}", f.reason);
        let Item::Failure(f) = &items[3] else {
            panic!("{items:?}")
        };
        assert_eq!(f.locator.line, 6);
        assert!(f.reason.contains("truncated"), "{}", f.reason);
        let Item::Control(c) = &items[4] else {
            panic!("{items:?}")
        };
        assert_eq!(c.values, ["00002", "000123556"]);
        assert_eq!(items.len(), 5);
    }
}
