//! Profiling the file: its format, encoding, delimiter, header row and trailer, and reading a
//! sample into rows of named columns.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Read;

use serde::Serialize;
use serde_json::Value;

use super::super::ToolkitError;
use crate::formats::normalise_name;
use crate::formats::spreadsheet::SpreadsheetKind;
use crate::mapping::transforms;

use super::documents::{read_json, read_spreadsheet, read_xml};
use super::shapes::date_formats;

/// Data rows profiled at most.
pub const PROFILE_ROWS: usize = 1000;

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

// ---------------------------------------------------------------------------------------------
// Reading the sample
// ---------------------------------------------------------------------------------------------

/// The sample as rows of named columns.
#[derive(Debug, Clone, Default)]
pub(super) struct Table {
    /// Column names (trimmed; numbers when there is no header).
    pub(super) header: Vec<String>,
    /// The header row names the columns.
    pub(super) named: bool,
    /// Profiled data rows.
    pub(super) rows: Vec<Vec<String>>,
}

#[derive(Debug, Clone)]
pub(super) struct Sample {
    pub(super) guess: SourceGuess,
    pub(super) table: Table,
    pub(super) notes: Vec<String>,
}

pub(super) fn sample_error(file: &str, message: impl Into<String>) -> ToolkitError {
    ToolkitError::Sample {
        file: file.to_string(),
        message: message.into(),
    }
}

pub(super) fn read_sample(file: &str, raw: &[u8]) -> Result<Sample, ToolkitError> {
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

pub(super) fn guess(format: DetectedFormat) -> SourceGuess {
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
pub(super) fn looks_fixed_width(text: &str) -> bool {
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
pub(super) fn records(text: &str, delimiter: u8, limit: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for_each_record(text, delimiter, |_, r| {
        out.push(r);
        out.len() < limit
    });
    out
}

pub(super) fn for_each_record(
    text: &str,
    delimiter: u8,
    mut f: impl FnMut(usize, Vec<String>) -> bool,
) {
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
pub(super) fn width(row: &[String]) -> usize {
    row.iter()
        .rposition(|c| !c.trim().is_empty())
        .map_or(0, |i| i + 1)
}

pub(super) fn is_blank(row: &[String]) -> bool {
    row.iter().all(|c| c.trim().is_empty())
}

/// The most common value and how often it occurs (the smallest value on a tie... of the first
/// seen, which is what callers want for widths).
pub(super) fn mode(values: impl Iterator<Item = usize>) -> Option<(usize, usize)> {
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
pub(super) fn is_label(cell: &str) -> bool {
    cell.chars().any(char::is_alphabetic)
        && cell.chars().count() <= 80
        && transforms::parse_money(cell).is_err()
        && date_formats().iter().all(|f| f.parse(cell).is_none())
        && !cell.contains('@')
}

pub(super) static TRAILER_WORD: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(
    || {
        regex::Regex::new(
        r"(?i)^(grand\s+)?(totals?|trailer|trl|control|end|eof|footer|summary|record\s*count|count)\b",
    )
    .expect("valid regex")
    },
);

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

pub(super) fn read_delimited(bytes: &[u8], notes: &mut Vec<String>) -> Sample {
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
pub(super) fn header_pattern(header: &[String], titles: &[Vec<String>]) -> Option<String> {
    header_cells_usable(header, titles)
        .first()
        .map(|i| format!("^{}$", regex::escape(&header[*i])))
}

pub(super) fn header_cells_usable(header: &[String], titles: &[Vec<String>]) -> Vec<usize> {
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
