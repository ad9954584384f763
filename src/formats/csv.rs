//! Delimited text (CSV) exports: title rows, a header row, detail rows and an optional trailer.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

use regex::Regex;

use super::encoding::Encoding;
use super::limits::{LimitExceeded, Limits};
use super::{ColumnRef, DecodeFailure, FormatError, Header, Item, Locator, SourceRecord};

/// How to read one council's CSV export (from the mapping's `source:` section).
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// Character encoding of the file.
    pub encoding: Encoding,
    /// Field delimiter byte.
    pub delimiter: u8,
    /// Quote byte.
    pub quote: u8,
    /// Physical rows before the header (title and preamble rows).
    pub skip_rows: usize,
    /// Whether the first row after `skip_rows` names the columns.
    pub header: bool,
    /// When set, the header is the first row (after `skip_rows`, within the first 100 rows)
    /// with a cell matching this pattern: for exports whose title block varies in length.
    pub header_match: Option<Regex>,
    /// How to recognise a control (trailer) row.
    pub control_match: Option<ControlMatch>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            encoding: Encoding::UTF_8,
            delimiter: b',',
            quote: b'"',
            skip_rows: 0,
            header: true,
            header_match: None,
            control_match: None,
        }
    }
}

/// A row is a control row when the value in `column` matches `pattern`.
#[derive(Debug, Clone)]
pub struct ControlMatch {
    /// Which column to look at.
    pub column: ColumnRef,
    /// What it must match.
    pub pattern: Regex,
}

/// Streaming CSV decoder: an iterator of [`Item`]s that holds one row in memory at a time.
pub struct CsvDecoder<R: Read> {
    file: String,
    options: CsvOptions,
    reader: csv::Reader<R>,
    header: Option<Arc<Header>>,
    control_index: Option<usize>,
    rows_seen: u64,
    data_rows: u64,
    buf: csv::StringRecord,
    lines: Arc<Mutex<LineIndex>>,
    max_columns: usize,
    done: bool,
}

/// Physical line numbers for records. The csv crate's own positions point at the terminator of
/// the previous line for CRLF files and do not count skipped blank lines, so the decoder keeps
/// its own index of where lines start, fed by [`LineCounting`] as bytes pass to the parser.
/// Only lines the parser has not passed yet are kept: memory stays bounded by its read buffer.
#[derive(Debug, Default)]
struct LineIndex {
    /// Finished lines that are not blank: (byte offset of start, 1-based line number).
    lines: VecDeque<(u64, u64)>,
    offset: u64,
    current_start: u64,
    current_line: u64,
    current_blank: bool,
    /// `max_line_bytes`.
    max_line: u64,
    /// The first line found longer than `max_line`.
    too_long: Option<u64>,
}

impl LineIndex {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.current_line == 0 {
                self.current_line = 1;
                self.current_blank = true;
            }
            if b == b'\n' {
                if self.offset - self.current_start > self.max_line && self.too_long.is_none() {
                    self.too_long = Some(self.current_line);
                }
                if !self.current_blank {
                    self.lines
                        .push_back((self.current_start, self.current_line));
                }
                self.current_line += 1;
                self.current_start = self.offset + 1;
                self.current_blank = true;
            } else if b != b'\r' {
                self.current_blank = false;
            }
            self.offset += 1;
        }
    }

    /// The line of the first non-blank line starting at or after `byte`.
    fn line_at(&mut self, byte: u64) -> u64 {
        while let Some(&(start, line)) = self.lines.front() {
            if start >= byte {
                return line;
            }
            self.lines.pop_front();
        }
        self.current_line.max(1)
    }
}

struct LineCounting<R> {
    inner: R,
    index: Arc<Mutex<LineIndex>>,
}

impl<R: Read> Read for LineCounting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut index = self.index.lock().expect("line index lock");
        index.feed(&buf[..n]);
        if index.offset - index.current_start > index.max_line && index.too_long.is_none() {
            index.too_long = Some(index.current_line.max(1));
        }
        if let Some(line) = index.too_long {
            return Err(LimitExceeded::new(
                format!("line {line}"),
                index.max_line,
                "max_line_bytes",
            )
            .into_io());
        }
        Ok(n)
    }
}

impl CsvDecoder<Box<dyn Read>> {
    /// Starts decoding `bytes` (the raw file) named `file`. Reads up to and including the header
    /// row, so a file without one fails here rather than half-way.
    pub fn new(
        file: impl Into<String>,
        bytes: impl Read + 'static,
        options: CsvOptions,
    ) -> Result<Self, FormatError> {
        Self::new_limited(file, bytes, options, &Limits::default())
    }

    /// [`CsvDecoder::new`] within a feed's limits (`max_line_bytes`, `max_columns`).
    pub fn new_limited(
        file: impl Into<String>,
        bytes: impl Read + 'static,
        options: CsvOptions,
        limits: &Limits,
    ) -> Result<Self, FormatError> {
        let file = file.into();
        let mut options = options;
        let (encoding, bytes) =
            options
                .encoding
                .resolve(&file, bytes)
                .map_err(|source| FormatError::Io {
                    file: file.clone(),
                    source,
                })?;
        options.encoding = encoding;
        let lines = Arc::new(Mutex::new(LineIndex {
            max_line: limits.max_line_bytes,
            ..LineIndex::default()
        }));
        let text: Box<dyn Read> = Box::new(LineCounting {
            inner: options.encoding.decode(bytes),
            index: lines.clone(),
        });
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(options.delimiter)
            .quote(options.quote)
            .from_reader(text);
        let mut decoder = CsvDecoder {
            file,
            options,
            reader,
            header: None,
            control_index: None,
            rows_seen: 0,
            data_rows: 0,
            buf: csv::StringRecord::new(),
            lines,
            max_columns: limits.max_columns,
            done: false,
        };
        decoder.read_header()?;
        Ok(decoder)
    }
}

impl<R: Read> CsvDecoder<R> {
    /// The file's header (numbered columns when the mapping says there is no header row).
    pub fn header(&self) -> Arc<Header> {
        self.header.clone().expect("header read in new()")
    }

    fn read_header(&mut self) -> Result<(), FormatError> {
        let mut skipped = 0;
        while skipped < self.options.skip_rows {
            if !self.next_raw()? {
                return Err(self.no_header());
            }
            skipped += 1;
        }
        let header = if self.options.header {
            if !self.next_raw()? {
                return Err(self.no_header());
            }
            if let Some(pattern) = self.options.header_match.clone() {
                let mut looked = 1;
                while !self.buf.iter().any(|cell| pattern.is_match(cell.trim())) {
                    if looked >= 100 || !self.next_raw()? {
                        return Err(FormatError::Malformed {
                            file: self.file.clone(),
                            line: 0,
                            message: format!(
                                "no header row matching `{pattern}` in the first {looked} rows"
                            ),
                        });
                    }
                    looked += 1;
                }
            }
            if self.buf.len() > self.max_columns {
                return Err(FormatError::Limit {
                    file: self.file.clone(),
                    exceeded: LimitExceeded::new(
                        format!("the header's {} columns", self.buf.len()),
                        self.max_columns,
                        "max_columns",
                    ),
                });
            }
            Header::new(self.buf.iter().map(|s| s.trim().to_string()).collect())
        } else {
            Header::numbered(0)
        };
        self.control_index = self
            .options
            .control_match
            .as_ref()
            .and_then(|m| m.column.resolve(&header));
        self.header = Some(Arc::new(header));
        Ok(())
    }

    fn no_header(&self) -> FormatError {
        FormatError::NoHeader {
            file: self.file.clone(),
            rows: self.rows_seen,
            skip: self.options.skip_rows,
        }
    }

    /// Reads the next physical record into `buf`; `false` at end of file.
    fn next_raw(&mut self) -> Result<bool, FormatError> {
        match self.reader.read_record(&mut self.buf) {
            Ok(more) => {
                if more {
                    self.rows_seen += 1;
                }
                Ok(more)
            }
            Err(e) => Err(self.csv_error(e).with_limit()),
        }
    }

    fn csv_error(&self, e: csv::Error) -> FormatError {
        let start = e.position().map(|p| p.byte()).unwrap_or(0);
        let line = self.lines.lock().expect("line index lock").line_at(start);
        match e.into_kind() {
            csv::ErrorKind::Io(source) => FormatError::Io {
                file: self.file.clone(),
                source,
            },
            other => FormatError::Malformed {
                file: self.file.clone(),
                line,
                message: format!("{other:?}"),
            },
        }
    }

    fn is_blank(&self) -> bool {
        self.buf.iter().all(|v| v.trim().is_empty())
    }
}

impl<R: Read> Iterator for CsvDecoder<R> {
    type Item = Result<Item, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            match self.next_raw() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            if self.is_blank() {
                continue;
            }
            let start = self.buf.position().map(|p| p.byte()).unwrap_or(0);
            let line = self.lines.lock().expect("line index lock").line_at(start);
            if self.buf.len() > self.max_columns {
                // Not copied: a row of a million empty fields is refused as it stands.
                self.data_rows += 1;
                return Some(Ok(Item::Failure(DecodeFailure {
                    locator: Locator {
                        file: self.file.clone(),
                        line,
                        row: self.data_rows,
                    },
                    reason: LimitExceeded::new(
                        format!("the row's {} columns", self.buf.len()),
                        self.max_columns,
                        "max_columns",
                    )
                    .to_string(),
                    record: None,
                })));
            }
            let values: Vec<String> = self.buf.iter().map(str::to_owned).collect();
            let is_control = match (&self.options.control_match, self.control_index) {
                (Some(m), Some(i)) => values.get(i).is_some_and(|v| m.pattern.is_match(v.trim())),
                _ => false,
            };
            if !is_control {
                self.data_rows += 1;
            }
            let record = SourceRecord {
                locator: Locator {
                    file: self.file.clone(),
                    line,
                    row: if is_control { 0 } else { self.data_rows },
                },
                header: self.header(),
                values,
            };
            if is_control {
                return Some(Ok(Item::Control(record)));
            }
            // An opening quote that is never closed swallows the following lines into one value,
            // which then runs over several lines and leaves the row short of columns.
            let columns = record.header.names().len();
            if columns > 0
                && record.values.len() < columns
                && record.values.iter().any(|v| v.contains('\n'))
            {
                let lines = record
                    .values
                    .iter()
                    .map(|v| v.matches('\n').count())
                    .sum::<usize>();
                return Some(Ok(Item::Failure(DecodeFailure {
                    locator: record.locator.clone(),
                    reason: format!(
                        "a quoted value opened on this line runs over {} more line(s) and the row has only {} of {columns} columns: an unterminated quote?",
                        lines,
                        record.values.len()
                    ),
                    record: Some(record),
                })));
            }
            if self.options.encoding.can_be_invalid()
                && record.values.iter().any(|v| v.contains('\u{FFFD}'))
            {
                let bad_column = record.values.iter().position(|v| v.contains('\u{FFFD}'));
                let column = bad_column
                    .and_then(|i| record.header.names().get(i).cloned())
                    .unwrap_or_else(|| format!("{}", bad_column.unwrap_or(0) + 1));
                return Some(Ok(Item::Failure(DecodeFailure {
                    locator: record.locator.clone(),
                    reason: format!(
                        "column \"{column}\" has bytes that are not valid {}; check the file's encoding",
                        self.options.encoding.name()
                    ),
                    record: Some(record),
                })));
            }
            return Some(Ok(Item::Record(record)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &'static [u8], options: CsvOptions) -> Vec<Item> {
        CsvDecoder::new("t.csv", bytes, options)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    #[test]
    fn title_row_header_trailer_and_windows_1252() {
        let bytes: &'static [u8] =
            b"Payroll October\r\nEmp,Gross\r\nE1,\"\xA31,234.56\"\r\n\r\nE2,10\r\nTRAILER,2\r\n";
        let options = CsvOptions {
            encoding: Encoding::for_label("windows-1252").unwrap(),
            skip_rows: 1,
            control_match: Some(ControlMatch {
                column: ColumnRef::Position(1),
                pattern: Regex::new("^TRAILER$").unwrap(),
            }),
            ..CsvOptions::default()
        };
        let items = decode(bytes, options);
        assert_eq!(items.len(), 3);
        let Item::Record(r) = &items[0] else { panic!() };
        assert_eq!(r.values, ["E1", "£1,234.56"]);
        assert_eq!((r.locator.line, r.locator.row), (3, 1));
        assert_eq!(r.header.find(" emp "), Some(0));
        let Item::Record(r) = &items[1] else { panic!() };
        assert_eq!((r.locator.line, r.locator.row), (5, 2));
        assert!(matches!(&items[2], Item::Control(c) if c.values == ["TRAILER", "2"]));
    }

    #[test]
    fn utf8_bom_is_stripped_and_bad_bytes_fail_the_row_only() {
        let bytes: &'static [u8] = b"\xEF\xBB\xBFName,Code\nAnn,1\nB\xFFb,2\nCy,3\n";
        let items = decode(bytes, CsvOptions::default());
        let Item::Record(r) = &items[0] else { panic!() };
        assert_eq!(r.header.names(), ["Name", "Code"]);
        let Item::Failure(f) = &items[1] else {
            panic!("{items:?}")
        };
        assert_eq!(f.locator.line, 3);
        assert!(f.reason.contains("\"Name\""), "{}", f.reason);
        assert!(matches!(&items[2], Item::Record(r) if r.values[0] == "Cy"));
    }

    #[test]
    fn header_found_by_pattern_after_a_title_block_of_any_length() {
        let bytes: &'static [u8] = b"Spend over 500\nRun: 01/04/2026\nParameters: all\n\nBody,Transaction No,Amount\nX,T1,5\n";
        let options = CsvOptions {
            header_match: Some(Regex::new("(?i)^transaction no$").unwrap()),
            ..CsvOptions::default()
        };
        let items = decode(bytes, options);
        let Item::Record(r) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(r.header.names(), ["Body", "Transaction No", "Amount"]);
        assert_eq!((r.locator.line, r.values[1].as_str()), (6, "T1"));
        let err = CsvDecoder::new(
            "t.csv",
            &b"a,b\n1,2\n"[..],
            CsvOptions {
                header_match: Some(Regex::new("^zzz$").unwrap()),
                ..CsvOptions::default()
            },
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("no header row matching"), "{err}");
    }

    #[test]
    fn an_unterminated_quote_fails_its_row_and_keeps_the_rows_before() {
        let bytes: &'static [u8] = b"Id,Name,Amount\n1,Ann,5\n2,\"Bob,6\n3,Cy,7\n";
        let items = decode(bytes, CsvOptions::default());
        assert!(matches!(&items[0], Item::Record(r) if r.values == ["1", "Ann", "5"]));
        let Item::Failure(f) = &items[1] else {
            panic!("{items:?}")
        };
        assert_eq!(f.locator.line, 3);
        assert!(f.reason.contains("unterminated quote"), "{}", f.reason);
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn missing_header_is_a_file_error() {
        let err = CsvDecoder::new(
            "t.csv",
            &b"Title only\n"[..],
            CsvOptions {
                skip_rows: 1,
                ..CsvOptions::default()
            },
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("no header row"), "{err}");
    }
}
