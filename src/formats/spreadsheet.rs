//! Spreadsheet exports (XLSX, XLS, ODS): one worksheet read as rows, with title rows, a header
//! row, detail rows and an optional trailer, like [`super::csv`].
//!
//! The format is told by the file's first bytes, not its name: a zip is XLSX, or ODS when its
//! first entry is the OpenDocument `mimetype`; an OLE compound file is XLS. A zip needs to be
//! read out of order, so the file's bytes are held in memory; cells are not, for XLSX: the sheet
//! is decoded by a reader thread as a stream and handed over a few rows at a time. calamine
//! reads XLS and ODS sheets only whole, so for those the chosen sheet's cells are in memory.
//!
//! Cells become text the way an officer sees them in the formula bar: strings as they are
//! (leading zeros kept), numbers without a trailing `.0` and to Excel's 15 significant digits
//! (`99.98999999999999` in the file is the `99.99` Excel shows), `TRUE`/`FALSE`, dates as
//! `YYYY-MM-DD` and date-times as `YYYY-MM-DDTHH:MM:SS`. A cell holding an error (`#N/A`,
//! `#REF!`) makes its row a [`DecodeFailure`] naming the column and the cell (`F9`).

use std::io::{Cursor, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::limits::{LimitExceeded, Limits};
use calamine::{Data, DataRef, ExcelDateTime, Ods, Range, Reader, Xls, Xlsx};
use regex::Regex;

use super::csv::ControlMatch;
use super::{DecodeFailure, FormatError, Header, Item, Locator, SourceRecord, normalise_name};

/// Which worksheet of a workbook to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SheetRef {
    /// By the name on its tab (exact, else ignoring case and spaces as [`Header::find`] does).
    Name(String),
    /// By 1-based position in the workbook, hidden sheets included.
    Index(usize),
}

impl std::fmt::Display for SheetRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SheetRef::Name(n) => write!(f, "`{n}`"),
            SheetRef::Index(i) => write!(f, "number {i}"),
        }
    }
}

/// How to read one council's spreadsheet export (from the mapping's `source:` section).
#[derive(Debug, Clone)]
pub struct SpreadsheetOptions {
    /// The worksheet to read.
    pub sheet: SheetRef,
    /// Worksheet rows before the header (title and preamble rows), counted as the spreadsheet
    /// numbers them: `2` means the header search starts at row 3. Blank rows are skipped.
    pub skip_rows: usize,
    /// Whether the first non-blank row after `skip_rows` names the columns.
    pub header: bool,
    /// When set, the header is the first non-blank row (after `skip_rows`, within the first 100)
    /// with a cell matching this pattern: for exports whose title block varies in length.
    pub header_match: Option<Regex>,
    /// How to recognise a control (trailer) row.
    pub control_match: Option<ControlMatch>,
}

impl Default for SpreadsheetOptions {
    fn default() -> Self {
        Self {
            sheet: SheetRef::Index(1),
            skip_rows: 0,
            header: true,
            header_match: None,
            control_match: None,
        }
    }
}

/// The spreadsheet formats this decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpreadsheetKind {
    /// Office Open XML workbook (Excel 2007 and later).
    Xlsx,
    /// Binary Excel 97-2003 workbook.
    Xls,
    /// OpenDocument spreadsheet (LibreOffice).
    Ods,
}

impl SpreadsheetKind {
    /// Tells the format from the file's first bytes (a few hundred are enough); `None` when
    /// they are not a spreadsheet's.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        const ODS_MIMETYPE: &[u8] = b"application/vnd.oasis.opendocument.spreadsheet";
        const OLE: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
        if bytes.starts_with(b"PK\x03\x04") {
            // OpenDocument requires an uncompressed `mimetype` entry first in the zip.
            let start = &bytes[..bytes.len().min(300)];
            let is_ods = bytes.get(30..38) == Some(b"mimetype".as_slice())
                && start.windows(ODS_MIMETYPE.len()).any(|w| w == ODS_MIMETYPE);
            Some(if is_ods { Self::Ods } else { Self::Xlsx })
        } else if bytes.starts_with(OLE) {
            Some(Self::Xls)
        } else {
            None
        }
    }

    /// The format's usual name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Xlsx => "XLSX",
            Self::Xls => "XLS",
            Self::Ods => "ODS",
        }
    }
}

/// Streaming spreadsheet decoder: an iterator of [`Item`]s, one per non-blank row of the sheet.
/// [`Locator::line`] is the row number the spreadsheet shows.
pub struct SpreadsheetDecoder {
    file: String,
    kind: SpreadsheetKind,
    sheet: String,
    options: SpreadsheetOptions,
    rows: Rows,
    header: Arc<Header>,
    control_index: Option<usize>,
    /// Number of the last row read (blank rows are never read, so this may jump).
    last_line: u64,
    data_rows: u64,
    done: bool,
}

impl SpreadsheetDecoder {
    /// Starts decoding `bytes` (the raw file) named `file`. Opens the workbook, finds the sheet
    /// and reads up to and including the header row, so a wrong sheet name, a damaged file or a
    /// missing header fails here rather than half-way.
    pub fn new(
        file: impl Into<String>,
        bytes: impl Read + 'static,
        options: &SpreadsheetOptions,
    ) -> Result<Self, FormatError> {
        Self::new_limited(file, bytes, options, &Limits::default())
    }

    /// [`SpreadsheetDecoder::new`] within a feed's limits: the file is read whole only up to
    /// `max_workbook_bytes`, and a zip workbook's entries are checked (inflated size and ratio,
    /// cells, shared strings, value sizes, nesting) by streaming them once before calamine
    /// opens it, so calamine never inflates a bomb.
    pub fn new_limited(
        file: impl Into<String>,
        bytes: impl Read + 'static,
        options: &SpreadsheetOptions,
        limits: &Limits,
    ) -> Result<Self, FormatError> {
        let file = file.into();
        let mut buf = Vec::new();
        bytes
            .take(limits.max_workbook_bytes.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|source| FormatError::Io {
                file: file.clone(),
                source,
            })?;
        if buf.len() as u64 > limits.max_workbook_bytes {
            return Err(FormatError::Limit {
                file,
                exceeded: LimitExceeded::new(
                    "the workbook's size",
                    limits.max_workbook_bytes,
                    "max_workbook_bytes",
                ),
            });
        }
        let kind = SpreadsheetKind::sniff(&buf).ok_or_else(|| FormatError::Malformed {
            file: file.clone(),
            line: 0,
            message: if buf.is_empty() {
                "the file is empty".to_string()
            } else {
                "not an XLSX, XLS or ODS spreadsheet (its first bytes are neither a zip's nor an \
                 OLE file's); exports saved as text with a spreadsheet's name are CSV: say \
                 `format: csv` in the mapping"
                    .to_string()
            },
        })?;
        if matches!(kind, SpreadsheetKind::Xlsx | SpreadsheetKind::Ods) {
            check_zip(&file, &buf, limits)?;
        }
        let (sheet, rows) = Rows::open(&file, kind, buf, &options.sheet)?;
        if let Rows::Loaded { range, .. } = &rows {
            let cells = range.height() as u64 * range.width() as u64;
            if cells > limits.max_cells {
                return Err(FormatError::Limit {
                    file,
                    exceeded: LimitExceeded::new(
                        format!("the sheet's {cells} cells"),
                        limits.max_cells,
                        "max_cells",
                    ),
                });
            }
        }
        let mut decoder = SpreadsheetDecoder {
            file,
            kind,
            sheet,
            options: options.clone(),
            rows,
            header: Arc::new(Header::numbered(0)),
            control_index: None,
            last_line: 0,
            data_rows: 0,
            done: false,
        };
        decoder.read_header()?;
        Ok(decoder)
    }

    /// The sheet's header (numbered columns when the mapping says there is no header row).
    pub fn header(&self) -> Arc<Header> {
        self.header.clone()
    }

    /// The format the file turned out to be.
    pub fn kind(&self) -> SpreadsheetKind {
        self.kind
    }

    /// The name of the sheet being read.
    pub fn sheet_name(&self) -> &str {
        &self.sheet
    }

    fn read_header(&mut self) -> Result<(), FormatError> {
        let header = if self.options.header {
            let Some(mut row) = self.next_row()? else {
                return Err(self.no_header());
            };
            if let Some(pattern) = self.options.header_match.clone() {
                let mut looked = 1;
                while !row.values.iter().any(|cell| pattern.is_match(cell.trim())) {
                    row = match self.next_row()? {
                        Some(next) if looked < 100 => next,
                        _ => {
                            return Err(FormatError::Malformed {
                                file: self.file.clone(),
                                line: 0,
                                message: format!(
                                    "no header row matching `{pattern}` in the first {looked} \
                                     rows of sheet `{}`",
                                    self.sheet
                                ),
                            });
                        }
                    };
                    looked += 1;
                }
            }
            Header::new(row.values.iter().map(|s| s.trim().to_string()).collect())
        } else {
            Header::numbered(0)
        };
        self.control_index = self
            .options
            .control_match
            .as_ref()
            .and_then(|m| m.column.resolve(&header));
        self.header = Arc::new(header);
        Ok(())
    }

    fn no_header(&self) -> FormatError {
        FormatError::NoHeader {
            file: self.file.clone(),
            rows: self.last_line,
            skip: self.options.skip_rows,
        }
    }

    /// The next non-blank row after `skip_rows`; `None` at the end of the sheet.
    fn next_row(&mut self) -> Result<Option<Row>, FormatError> {
        while let Some(row) = self.rows.next(&self.file)? {
            self.last_line = row.number;
            if row.number > self.options.skip_rows as u64 {
                return Ok(Some(row));
            }
        }
        Ok(None)
    }

    fn item(&mut self, row: Row) -> Item {
        let is_control = match (&self.options.control_match, self.control_index) {
            (Some(m), Some(i)) => row
                .values
                .get(i)
                .is_some_and(|v| m.pattern.is_match(v.trim())),
            _ => false,
        };
        if !is_control {
            self.data_rows += 1;
        }
        let record = SourceRecord {
            locator: Locator {
                file: self.file.clone(),
                line: row.number,
                row: if is_control { 0 } else { self.data_rows },
            },
            header: self.header(),
            values: row.values,
        };
        if is_control {
            return Item::Control(record);
        }
        let Some((col, error)) = row.errors.first() else {
            return Item::Record(record);
        };
        let column = record
            .header
            .names()
            .get(*col)
            .filter(|n| !n.is_empty())
            .map(|n| format!("\"{n}\""))
            .unwrap_or_else(|| format!("{}", col + 1));
        let mut reason = format!(
            "column {column} (cell {}) holds the spreadsheet error {error} instead of a value; \
             fix the formula in the council's file and send it again",
            cell_ref(*col, row.number)
        );
        if row.errors.len() > 1 {
            let others: Vec<String> = row.errors[1..]
                .iter()
                .map(|(c, _)| cell_ref(*c, row.number))
                .collect();
            reason.push_str(&format!(" (also errors in {})", others.join(", ")));
        }
        Item::Failure(DecodeFailure {
            locator: record.locator.clone(),
            reason,
            record: Some(record),
        })
    }
}

impl Iterator for SpreadsheetDecoder {
    type Item = Result<Item, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_row() {
            Ok(Some(row)) => Some(Ok(self.item(row))),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A cell reference as the spreadsheet shows it: 0-based column, 1-based row (`F9`).
fn cell_ref(col: usize, row: u64) -> String {
    let mut letters = Vec::new();
    let mut n = col + 1;
    while n > 0 {
        let rem = (n - 1) % 26;
        letters.push(b'A' + rem as u8);
        n = (n - 1) / 26;
    }
    letters.reverse();
    format!(
        "{}{row}",
        String::from_utf8(letters).expect("ASCII letters")
    )
}

/// One non-blank worksheet row, its cells as text.
#[derive(Debug)]
struct Row {
    /// 1-based row number as the spreadsheet shows it.
    number: u64,
    /// Cells by 0-based column from column A; empty cells are `""`, trailing ones absent.
    values: Vec<String>,
    /// Cells holding an error: (0-based column, the error as the spreadsheet shows it).
    errors: Vec<(usize, String)>,
}

/// A cell's value as text, or the error it holds.
enum CellText {
    Text(String),
    Error(String),
}

/// Collects one row's cells; a row with nothing but empty or blank cells is no row.
struct RowBuilder {
    row: Row,
    blank: bool,
}

impl RowBuilder {
    fn new(number: u64) -> Self {
        Self {
            row: Row {
                number,
                values: Vec::new(),
                errors: Vec::new(),
            },
            blank: true,
        }
    }

    fn set(&mut self, col: usize, cell: CellText) {
        let text = match cell {
            CellText::Text(t) if t.is_empty() => return,
            CellText::Text(t) => t,
            CellText::Error(e) => {
                self.row.errors.push((col, e.clone()));
                e
            }
        };
        self.blank &= text.trim().is_empty();
        if self.row.values.len() <= col {
            self.row.values.resize(col + 1, String::new());
        }
        self.row.values[col] = text;
    }

    fn finish(self) -> Option<Row> {
        (!self.blank).then_some(self.row)
    }
}

/// Rows handed over by the XLSX reader thread at a time.
const CHUNK_ROWS: usize = 64;

/// What the XLSX reader thread sends.
enum Message {
    Rows(Vec<Row>),
    End,
    Failed(FormatError),
}

/// Streams every entry of a zip workbook (XLSX, ODS) once, inflating through the feed's limits,
/// and parses its XML entries' events without keeping them: fails on the first limit passed.
fn check_zip(file: &str, bytes: &[u8], limits: &Limits) -> Result<(), FormatError> {
    use quick_xml::events::Event;
    let limit = |exceeded: LimitExceeded| FormatError::Limit {
        file: file.to_string(),
        exceeded,
    };
    let damaged = |e: &dyn std::fmt::Display| FormatError::Malformed {
        file: file.to_string(),
        line: 0,
        message: format!(
            "cannot open the workbook: {e}; the file may be truncated or damaged, ask for it to \
             be exported again"
        ),
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| damaged(&e))?;
    let mut inflated_total = 0u64;
    let (mut cells, mut shared) = (0u64, 0u64);
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(|e| damaged(&e))?;
        let name = entry.name().map_err(|e| damaged(&e))?.to_string();
        let compressed = entry.compressed_size().max(1);
        let is_xml = name.ends_with(".xml") || name.ends_with(".rels");
        let is_shared = name.ends_with("sharedStrings.xml");
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let per_entry = Limits {
            max_decompressed_bytes: limits
                .max_decompressed_bytes
                .saturating_sub(inflated_total)
                .min(if is_shared {
                    limits.max_workbook_bytes
                } else {
                    u64::MAX
                }),
            ..limits.clone()
        };
        counted.store(compressed, std::sync::atomic::Ordering::Relaxed);
        let inflation = super::limits::Inflation::new(entry, counted, &per_entry);
        let (metered, meter) = super::limits::Meter::new(
            inflation,
            limits.max_field_bytes.saturating_add(64 * 1024),
            "one value or tag in the workbook",
            "max_field_bytes",
        );
        let as_limit = |e: &std::io::Error| match LimitExceeded::from_io(e) {
            Some(l) => limit(l),
            None => damaged(e),
        };
        if !is_xml {
            let mut sink = std::io::sink();
            let mut metered = metered;
            let mut chunk = [0u8; 64 * 1024];
            loop {
                meter.mark();
                let n = metered.read(&mut chunk).map_err(|e| as_limit(&e))?;
                if n == 0 {
                    break;
                }
                let _ = std::io::Write::write_all(&mut sink, &chunk[..n]);
            }
            inflated_total += meter.total();
            continue;
        }
        let mut reader =
            quick_xml::Reader::from_reader(std::io::BufReader::with_capacity(64 * 1024, metered));
        let mut buf = Vec::new();
        let mut depth = 0usize;
        let mut row_repeat = 1u64;
        loop {
            buf.clear();
            meter.mark();
            let event = match reader.read_event_into(&mut buf) {
                Ok(e) => e,
                Err(quick_xml::Error::Io(e)) => return Err(as_limit(&e)),
                Err(e) => return Err(damaged(&format!("{name}: {e}"))),
            };
            let (start, empty) = match &event {
                Event::Start(s) => (Some(s), false),
                Event::Empty(s) => (Some(s), true),
                Event::End(_) => {
                    depth = depth.saturating_sub(1);
                    (None, false)
                }
                Event::Eof => break,
                _ => (None, false),
            };
            let Some(s) = start else { continue };
            if !empty {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(limit(LimitExceeded::new(
                        format!(
                            "{name}: elements nested deeper than {} levels",
                            limits.max_depth
                        ),
                        limits.max_depth,
                        "max_depth",
                    )));
                }
            }
            if s.attributes().count() > limits.max_attributes {
                return Err(limit(LimitExceeded::new(
                    format!("{name}: the attributes of one element"),
                    limits.max_attributes,
                    "max_attributes",
                )));
            }
            let local = s.local_name();
            let repeat = |attr: &str| -> u64 {
                s.attributes()
                    .flatten()
                    .find(|a| a.key.local_name().as_ref() == attr)
                    .and_then(|a| a.value.trim().parse().ok())
                    .unwrap_or(1)
            };
            match local.as_ref() {
                "si" if is_shared => {
                    shared += 1;
                    if shared > limits.max_shared_strings {
                        return Err(limit(LimitExceeded::new(
                            "the workbook's shared strings",
                            limits.max_shared_strings,
                            "max_shared_strings",
                        )));
                    }
                }
                "c" if !is_shared && name.contains("worksheets/") => cells += 1,
                "table-row" => row_repeat = repeat("number-rows-repeated").max(1),
                // An empty repeated cell (LibreOffice pads sheets with them) holds nothing.
                "table-cell" | "covered-table-cell" if empty => cells += 1,
                "table-cell" | "covered-table-cell" => {
                    cells = cells.saturating_add(
                        repeat("number-columns-repeated").saturating_mul(row_repeat),
                    );
                }
                _ => {}
            }
            if cells > limits.max_cells {
                return Err(limit(LimitExceeded::new(
                    "the workbook's cells",
                    limits.max_cells,
                    "max_cells",
                )));
            }
        }
        inflated_total += meter.total();
    }
    Ok(())
}

/// Where rows come from: a streaming XLSX reader, or a sheet calamine loaded whole.
enum Rows {
    Streamed(Streamed),
    Loaded { range: Range<Data>, next: usize },
}

impl Rows {
    /// Opens the workbook and its sheet; returns the sheet's name and its rows.
    fn open(
        file: &str,
        kind: SpreadsheetKind,
        bytes: Vec<u8>,
        sheet: &SheetRef,
    ) -> Result<(String, Rows), FormatError> {
        let unreadable = |e: &dyn std::fmt::Display| FormatError::Malformed {
            file: file.to_string(),
            line: 0,
            message: format!(
                "cannot open the {} workbook: {e}; the file may be truncated or damaged, ask \
                 for it to be exported again",
                kind.name()
            ),
        };
        let bytes = Cursor::new(bytes);
        match kind {
            SpreadsheetKind::Xlsx => {
                let book = Xlsx::new(bytes).map_err(|e| unreadable(&e))?;
                let name = resolve_sheet(file, &book.sheet_names(), sheet)?;
                let streamed = Streamed::spawn(file, book, name.clone())?;
                Ok((name, Rows::Streamed(streamed)))
            }
            SpreadsheetKind::Xls => {
                let mut book = Xls::new(bytes).map_err(|e| unreadable(&e))?;
                let name = resolve_sheet(file, &book.sheet_names(), sheet)?;
                let range = book.worksheet_range(&name).map_err(|e| unreadable(&e))?;
                Ok((name, Rows::Loaded { range, next: 0 }))
            }
            SpreadsheetKind::Ods => {
                let mut book = Ods::new(bytes).map_err(|e| unreadable(&e))?;
                let name = resolve_sheet(file, &book.sheet_names(), sheet)?;
                let range = book.worksheet_range(&name).map_err(|e| unreadable(&e))?;
                Ok((name, Rows::Loaded { range, next: 0 }))
            }
        }
    }

    /// The next non-blank row; `None` at the end of the sheet.
    fn next(&mut self, file: &str) -> Result<Option<Row>, FormatError> {
        match self {
            Rows::Streamed(s) => s.next(file),
            Rows::Loaded { range, next } => {
                let Some((top, left)) = range.start() else {
                    return Ok(None);
                };
                while *next < range.height() {
                    let i = *next;
                    *next += 1;
                    let mut row = RowBuilder::new(u64::from(top) + i as u64 + 1);
                    for j in 0..range.width() {
                        if let Some(cell) = range.get((i, j)) {
                            row.set(left as usize + j, data_text(cell));
                        }
                    }
                    if let Some(row) = row.finish() {
                        return Ok(Some(row));
                    }
                }
                Ok(None)
            }
        }
    }
}

/// Finds the sheet `wanted` among the workbook's `names`.
fn resolve_sheet(file: &str, names: &[String], wanted: &SheetRef) -> Result<String, FormatError> {
    let found = match wanted {
        SheetRef::Name(n) => names.iter().find(|s| *s == n).or_else(|| {
            let want = normalise_name(n);
            names.iter().find(|s| normalise_name(s) == want)
        }),
        SheetRef::Index(i) => i.checked_sub(1).and_then(|i| names.get(i)),
    };
    found.cloned().ok_or_else(|| FormatError::Malformed {
        file: file.to_string(),
        line: 0,
        message: if names.is_empty() {
            format!("no sheet {wanted}; the workbook has no sheets")
        } else {
            format!("no sheet {wanted}; the workbook has: {}", names.join(", "))
        },
    })
}

/// An XLSX sheet decoded by a reader thread, which owns the workbook (calamine's cell reader
/// borrows it) and sends rows over a bounded channel: a few chunks of rows in memory at most.
struct Streamed {
    rx: Option<Receiver<Message>>,
    worker: Option<JoinHandle<()>>,
    buffered: std::vec::IntoIter<Row>,
    finished: bool,
}

impl Streamed {
    fn spawn(
        file: &str,
        mut book: Xlsx<Cursor<Vec<u8>>>,
        sheet: String,
    ) -> Result<Self, FormatError> {
        let (tx, rx) = sync_channel(2);
        let name = file.to_string();
        let worker = std::thread::Builder::new()
            .name("spreadsheet-reader".into())
            .spawn(move || {
                let mut out = Batcher {
                    tx,
                    chunk: Vec::with_capacity(CHUNK_ROWS),
                };
                let outcome = stream_xlsx(&name, &mut book, &sheet, &mut out);
                if out.flush() {
                    let _ = out.tx.send(match outcome {
                        Ok(()) => Message::End,
                        Err(e) => Message::Failed(e),
                    });
                }
            })
            .map_err(|source| FormatError::Io {
                file: file.to_string(),
                source,
            })?;
        Ok(Self {
            rx: Some(rx),
            worker: Some(worker),
            buffered: Vec::new().into_iter(),
            finished: false,
        })
    }

    fn next(&mut self, file: &str) -> Result<Option<Row>, FormatError> {
        loop {
            if let Some(row) = self.buffered.next() {
                return Ok(Some(row));
            }
            if self.finished {
                return Ok(None);
            }
            let message = self.rx.as_ref().map(Receiver::recv);
            match message {
                Some(Ok(Message::Rows(rows))) => self.buffered = rows.into_iter(),
                Some(Ok(Message::End)) => self.finished = true,
                Some(Ok(Message::Failed(e))) => {
                    self.finished = true;
                    return Err(e);
                }
                Some(Err(_)) | None => {
                    self.finished = true;
                    return Err(FormatError::Malformed {
                        file: file.to_string(),
                        line: 0,
                        message: "the spreadsheet reader stopped unexpectedly".to_string(),
                    });
                }
            }
        }
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        // Hanging up first makes a reader blocked on a full channel stop at its next send.
        drop(self.rx.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Rows on their way to the decoder, sent in chunks.
struct Batcher {
    tx: SyncSender<Message>,
    chunk: Vec<Row>,
}

impl Batcher {
    /// Adds a row; `false` when the decoder has gone away.
    fn push(&mut self, row: Row) -> bool {
        self.chunk.push(row);
        self.chunk.len() < CHUNK_ROWS || self.flush()
    }

    /// Sends the rows collected; `false` when the decoder has gone away.
    fn flush(&mut self) -> bool {
        if self.chunk.is_empty() {
            return true;
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_ROWS));
        self.tx.send(Message::Rows(chunk)).is_ok()
    }
}

/// Reads the XLSX sheet cell by cell (in file order, row by row) into rows for `out`.
fn stream_xlsx(
    file: &str,
    book: &mut Xlsx<Cursor<Vec<u8>>>,
    sheet: &str,
    out: &mut Batcher,
) -> Result<(), FormatError> {
    let damaged = |line: u64, e: calamine::XlsxError| FormatError::Malformed {
        file: file.to_string(),
        line,
        message: format!(
            "sheet `{sheet}` cannot be read: {e}; the file may be truncated or damaged, ask for \
             it to be exported again"
        ),
    };
    let mut cells = book
        .worksheet_cells_reader(sheet)
        .map_err(|e| damaged(0, e))?;
    let mut current: Option<RowBuilder> = None;
    loop {
        let cell = match cells.next_cell() {
            Ok(Some(cell)) => cell,
            Ok(None) => break,
            Err(e) => return Err(damaged(current.map_or(0, |b| b.row.number), e)),
        };
        let (r, c) = cell.get_position();
        let number = u64::from(r) + 1;
        if current.as_ref().is_some_and(|b| b.row.number != number)
            && let Some(row) = current.take().and_then(RowBuilder::finish)
            && !out.push(row)
        {
            return Ok(());
        }
        current
            .get_or_insert_with(|| RowBuilder::new(number))
            .set(c as usize, data_ref_text(cell.get_value()));
    }
    if let Some(row) = current.and_then(RowBuilder::finish) {
        out.push(row);
    }
    Ok(())
}

fn data_text(value: &Data) -> CellText {
    CellText::Text(match value {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => number_text(*f),
        Data::Bool(b) => bool_text(*b),
        Data::DateTime(d) => datetime_text(d),
        Data::Error(e) => return CellText::Error(e.to_string()),
    })
}

fn data_ref_text(value: &DataRef<'_>) -> CellText {
    CellText::Text(match value {
        DataRef::Empty => String::new(),
        DataRef::SharedString(s) => (*s).to_string(),
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) => number_text(*f),
        DataRef::Bool(b) => bool_text(*b),
        DataRef::DateTime(d) => datetime_text(d),
        DataRef::Error(e) => return CellText::Error(e.to_string()),
    })
}

fn bool_text(b: bool) -> String {
    if b { "TRUE" } else { "FALSE" }.to_string()
}

/// A number as Excel's formula bar shows it: whole numbers without `.0`, others to 15
/// significant digits (Excel's precision) in their shortest form, never in exponent notation.
fn number_text(f: f64) -> String {
    if f == 0.0 {
        return "0".to_string(); // and not `-0`
    }
    if !f.is_finite() {
        return f.to_string();
    }
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        return format!("{}", f as i64);
    }
    // Binary noise past Excel's 15 digits (`99.98999999999999`) is not what anyone typed.
    let excel: f64 = format!("{f:.14e}").parse().unwrap_or(f);
    format!("{excel}")
}

/// A date cell as ISO 8601: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS` when it has a time of day,
/// `HH:MM:SS` for a time alone; a duration (`[h]:mm:ss`) as hours, minutes and seconds.
fn datetime_text(d: &ExcelDateTime) -> String {
    let value = d.as_f64();
    if d.is_duration() {
        let seconds = (value * 86_400.0).round() as i64;
        let sign = if seconds < 0 { "-" } else { "" };
        let s = seconds.abs();
        return format!("{sign}{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    }
    if value < 0.0 {
        return number_text(value); // Excel shows ##### for these
    }
    let (year, month, day, hour, minute, second, milli) = d.to_ymd_hms_milli();
    let time = if milli == 0 {
        format!("{hour:02}:{minute:02}:{second:02}")
    } else {
        format!("{hour:02}:{minute:02}:{second:02}.{milli:03}")
    };
    if value < 1.0 {
        return time;
    }
    let date = format!("{year:04}-{month:02}-{day:02}");
    if (hour, minute, second, milli) == (0, 0, 0, 0) {
        date
    } else {
        format!("{date}T{time}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ColumnRef;

    const XLSX: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/spreadsheets/finance_export.xlsx"
    ));
    const XLS: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/spreadsheets/finance_export.xls"
    ));
    const ODS: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/spreadsheets/finance_export.ods"
    ));

    fn total_trailer() -> Option<ControlMatch> {
        Some(ControlMatch {
            column: ColumnRef::Position(1),
            pattern: Regex::new("^TOTAL$").unwrap(),
        })
    }

    fn payments() -> SpreadsheetOptions {
        SpreadsheetOptions {
            sheet: SheetRef::Name("Payments".into()),
            header_match: Some(Regex::new("(?i)^transaction no$").unwrap()),
            control_match: total_trailer(),
            ..SpreadsheetOptions::default()
        }
    }

    fn decode(bytes: &'static [u8], options: &SpreadsheetOptions) -> Vec<Item> {
        SpreadsheetDecoder::new("t.xlsx", bytes, options)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    fn error(bytes: &'static [u8], options: &SpreadsheetOptions) -> FormatError {
        SpreadsheetDecoder::new("t.xlsx", bytes, options)
            .err()
            .expect("an error")
    }

    fn record(item: &Item) -> &SourceRecord {
        match item {
            Item::Record(r) => r,
            other => panic!("not a record: {other:?}"),
        }
    }

    #[test]
    fn formats_are_told_by_their_first_bytes() {
        assert_eq!(SpreadsheetKind::sniff(XLSX), Some(SpreadsheetKind::Xlsx));
        assert_eq!(SpreadsheetKind::sniff(XLS), Some(SpreadsheetKind::Xls));
        assert_eq!(SpreadsheetKind::sniff(ODS), Some(SpreadsheetKind::Ods));
        assert_eq!(SpreadsheetKind::sniff(b"Body,Amount\n"), None);
        let d = SpreadsheetDecoder::new("t.xlsx", XLSX, &payments()).unwrap();
        assert_eq!(
            (d.kind(), d.sheet_name()),
            (SpreadsheetKind::Xlsx, "Payments")
        );
    }

    #[test]
    fn header_found_by_pattern_below_the_title_block_or_by_skip_rows() {
        let d = SpreadsheetDecoder::new("t.xlsx", XLSX, &payments()).unwrap();
        let names = [
            "Body",
            "Transaction No",
            "Date",
            "Supplier Code",
            "Supplier",
            "Amount",
            "Paid",
            "Posted At",
        ];
        assert_eq!(d.header().names(), names);
        let by_skip = SpreadsheetOptions {
            skip_rows: 3,
            header_match: None,
            ..payments()
        };
        let d = SpreadsheetDecoder::new("t.xlsx", XLSX, &by_skip).unwrap();
        assert_eq!(d.header().names(), names);
        let err = error(
            XLSX,
            &SpreadsheetOptions {
                header_match: Some(Regex::new("^zzz$").unwrap()),
                ..payments()
            },
        );
        assert!(err.to_string().contains("no header row matching"), "{err}");
        let err = error(
            XLSX,
            &SpreadsheetOptions {
                skip_rows: 500,
                ..SpreadsheetOptions::default()
            },
        );
        assert!(
            matches!(err, FormatError::NoHeader { skip: 500, .. }),
            "{err}"
        );
    }

    #[test]
    fn values_are_text_as_an_officer_sees_them() {
        let items = decode(XLSX, &payments());
        let first = record(&items[0]);
        assert_eq!(
            first.values,
            [
                "Northshire",
                "10001",
                "2026-04-01",
                "00123",
                "Acme Ltd",
                "1234.5",
                "TRUE",
                "2026-04-01T09:30:00"
            ]
        );
        assert_eq!((first.locator.line, first.locator.row), (5, 1));
        assert_eq!(first.header.find("supplier code"), Some(3));
        // 99.99 is written `99.98999999999999` in the file; Excel shows 99.99.
        let second = record(&items[1]);
        assert_eq!(second.values[5], "99.99");
        assert_eq!(second.values[6], "FALSE");
        assert_eq!(second.values[7], "2026-04-02T14:05:07");
        let third = record(&items[2]);
        assert_eq!(third.values[5], "1200");
        assert_eq!(third.values[7], "2026-04-03");
        assert_eq!(record(&items[3]).values[5], "-45.1");
        // A row without the last cells has them absent.
        assert_eq!(record(&items[5]).values.len(), 7);
        assert_eq!(record(&items[7]).values[5], "1000000.25");
    }

    #[test]
    fn error_cell_fails_its_row_only_and_names_column_and_cell() {
        let items = decode(XLSX, &payments());
        let Item::Failure(f) = &items[4] else {
            panic!("{:?}", items[4])
        };
        assert_eq!((f.locator.line, f.locator.row), (9, 5));
        assert!(f.reason.contains("\"Amount\""), "{}", f.reason);
        assert!(f.reason.contains("F9"), "{}", f.reason);
        assert!(f.reason.contains("#N/A"), "{}", f.reason);
        assert_eq!(f.record.as_ref().unwrap().values[5], "#N/A");
        let r = record(&items[5]);
        assert_eq!(
            (r.locator.line, r.locator.row, r.values[1].as_str()),
            (10, 6, "10006")
        );
    }

    #[test]
    fn blank_rows_are_skipped_and_the_trailer_is_a_control_row() {
        let items = decode(XLSX, &payments());
        assert_eq!(items.len(), 10, "{items:?}");
        // Row 11 is absent and row 12 has only formatted empty cells.
        let after_blanks = record(&items[6]);
        assert_eq!(
            (after_blanks.locator.line, after_blanks.locator.row),
            (13, 7)
        );
        assert_eq!(after_blanks.values[5], "0.1");
        let last = record(&items[8]);
        assert_eq!((last.locator.line, last.locator.row), (15, 9));
        let Item::Control(c) = &items[9] else {
            panic!("{:?}", items[9])
        };
        assert_eq!(c.values, ["TOTAL", "10", "", "", "", "4001.74"]);
        assert_eq!(c.locator.line, 16);
    }

    #[test]
    fn a_wrong_sheet_name_lists_the_sheets_there_are() {
        let err = error(
            XLSX,
            &SpreadsheetOptions {
                sheet: SheetRef::Name("Payment".into()),
                ..payments()
            },
        );
        let FormatError::Malformed {
            line: 0, message, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(
            message,
            "no sheet `Payment`; the workbook has: Payments, Summary"
        );
        let err = error(
            XLSX,
            &SpreadsheetOptions {
                sheet: SheetRef::Index(3),
                ..payments()
            },
        );
        assert!(err.to_string().contains("no sheet number 3"), "{err}");
    }

    #[test]
    fn sheets_by_index_or_name_ignoring_case() {
        let summary = |sheet| SpreadsheetOptions {
            sheet,
            ..SpreadsheetOptions::default()
        };
        for sheet in [SheetRef::Index(2), SheetRef::Name(" summary ".into())] {
            let items = decode(XLSX, &summary(sheet));
            let r = record(&items[0]);
            assert_eq!(r.header.names(), ["Supplier", "Count"]);
            assert_eq!(r.values, ["Acme Ltd", "2"]);
            assert_eq!((r.locator.line, r.locator.row), (2, 1));
            assert_eq!(items.len(), 2);
        }
    }

    #[test]
    fn without_a_header_every_row_after_skip_rows_is_data() {
        let items = decode(
            XLSX,
            &SpreadsheetOptions {
                sheet: SheetRef::Index(2),
                header: false,
                skip_rows: 1,
                ..SpreadsheetOptions::default()
            },
        );
        let r = record(&items[0]);
        assert!(r.header.names().is_empty());
        assert_eq!(
            (r.get(0), r.locator.line, r.locator.row),
            ("Acme Ltd", 2, 1)
        );
    }

    #[test]
    fn truncated_or_foreign_files_are_errors_naming_the_file() {
        let half: &'static [u8] = &XLSX[..XLSX.len() / 2];
        let err = error(half, &payments());
        assert!(err.to_string().starts_with("t.xlsx"), "{err}");
        assert!(err.to_string().contains("truncated or damaged"), "{err}");
        let half_xls: &'static [u8] = &XLS[..XLS.len() / 2];
        let err = error(half_xls, &payments());
        assert!(
            err.to_string().contains("cannot open the XLS workbook"),
            "{err}"
        );
        let err = error(b"Body,Amount\nX,1\n", &payments());
        assert!(err.to_string().contains("format: csv"), "{err}");
        let err = error(b"", &payments());
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn xls_workbooks_read_the_same_way() {
        let options = SpreadsheetOptions {
            skip_rows: 1,
            ..payments()
        };
        let items = decode(XLS, &options);
        assert_eq!(items.len(), 3, "{items:?}");
        let r = record(&items[0]);
        assert_eq!(r.header.names()[1], "Transaction No");
        assert_eq!(
            r.values,
            ["Northshire", "10001", "2026-04-01", "00123", "1234.5"]
        );
        assert_eq!((r.locator.line, r.locator.row), (3, 1));
        let Item::Failure(f) = &items[1] else {
            panic!("{:?}", items[1])
        };
        assert_eq!(f.locator.line, 5);
        assert!(
            f.reason.contains("E5") && f.reason.contains("#REF!"),
            "{}",
            f.reason
        );
        assert!(matches!(&items[2], Item::Control(c) if c.locator.line == 6));
    }

    #[test]
    fn ods_workbooks_read_the_same_way() {
        let items = decode(ODS, &payments());
        assert_eq!(items.len(), 3, "{items:?}");
        let r = record(&items[0]);
        assert_eq!(
            r.values,
            [
                "Northshire",
                "10001",
                "2026-04-01",
                "00123",
                "1234.5",
                "TRUE"
            ]
        );
        assert_eq!((r.locator.line, r.locator.row), (3, 1));
        let r = record(&items[1]);
        assert_eq!((r.locator.line, r.locator.row), (5, 2));
        assert_eq!(r.values[4], "99.99");
        assert!(matches!(&items[2], Item::Control(c) if c.locator.line == 6));
        let err = error(
            ODS,
            &SpreadsheetOptions {
                sheet: SheetRef::Name("Payments 2".into()),
                ..payments()
            },
        );
        assert!(err.to_string().contains("has: Payments, Summary"), "{err}");
    }

    #[test]
    fn long_sheets_stream_in_order_across_chunks() {
        const LONG: &[u8] = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/spreadsheets/long_export.xlsx"
        ));
        let items = decode(LONG, &SpreadsheetOptions::default());
        assert_eq!(items.len(), 999);
        for (i, item) in items.iter().enumerate() {
            let r = record(item);
            let id: u64 = r.values[0].parse().unwrap();
            assert_eq!(r.locator.line, id + 1);
            assert_eq!(r.locator.row, i as u64 + 1);
            assert_eq!(id, if i < 499 { i as u64 + 1 } else { i as u64 + 2 });
        }
        assert_eq!(record(&items[998]).values, ["1000", "250"]);
    }

    #[test]
    fn a_sheet_damaged_half_way_gives_its_rows_then_an_error() {
        const DAMAGED: &[u8] = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/spreadsheets/damaged_sheet.xlsx"
        ));
        let items: Vec<_> = SpreadsheetDecoder::new("t.xlsx", DAMAGED, &payments())
            .unwrap()
            .collect();
        assert_eq!(items.len(), 6, "{items:?}");
        assert!(items[..5].iter().all(|i| i.is_ok()));
        let Err(FormatError::Malformed { line, message, .. }) = &items[5] else {
            panic!("{:?}", items[5])
        };
        assert_eq!(*line, 10);
        assert!(
            message.contains("sheet `Payments` cannot be read"),
            "{message}"
        );
    }

    #[test]
    fn dropping_a_decoder_half_way_stops_its_reader() {
        let mut d = SpreadsheetDecoder::new("t.xlsx", XLSX, &payments()).unwrap();
        assert!(d.next().is_some());
        drop(d); // joins the reader thread; a hang here fails the test by timeout
    }

    #[test]
    fn numbers_dates_and_cell_references_render_like_excel() {
        assert_eq!(number_text(1234.5), "1234.5");
        assert_eq!(number_text(-0.0), "0");
        assert_eq!(number_text(1e20), "100000000000000000000");
        assert_eq!(number_text(0.1 + 0.2), "0.3");
        assert_eq!(number_text(1234.565), "1234.565");
        assert_eq!(number_text(0.0000001), "0.0000001");
        let date = |v| {
            datetime_text(&ExcelDateTime::new(
                v,
                calamine::ExcelDateTimeType::DateTime,
                false,
            ))
        };
        assert_eq!(date(46113.0), "2026-04-01");
        assert_eq!(date(46113.5), "2026-04-01T12:00:00");
        assert_eq!(date(0.75), "18:00:00");
        let hours = ExcelDateTime::new(1.5625, calamine::ExcelDateTimeType::TimeDelta, false);
        assert_eq!(datetime_text(&hours), "37:30:00");
        assert_eq!(cell_ref(0, 1), "A1");
        assert_eq!(cell_ref(25, 7), "Z7");
        assert_eq!(cell_ref(26, 7), "AA7");
        assert_eq!(cell_ref(16383, 2), "XFD2");
    }
}
