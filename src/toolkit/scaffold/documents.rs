//! Samples that are documents rather than lines: spreadsheets, JSON and XML, read with the
//! decoders the pipeline uses and flattened to path columns.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;

use serde_json::Value;

use super::super::ToolkitError;
use crate::formats::json::{JsonDecoder, JsonOptions};
use crate::formats::spreadsheet::{
    SheetRef, SpreadsheetDecoder, SpreadsheetKind, SpreadsheetOptions,
};
use crate::formats::xml::{XmlDecoder, XmlOptions};
use crate::formats::{FormatError, Item};
use crate::mapping::transforms;

use super::profile::{
    DetectedFormat, PROFILE_ROWS, Sample, SourceGuess, Table, detect_trailer, find_header, guess,
    header_pattern, is_blank, mode, sample_error, width,
};

pub(super) fn read_spreadsheet(
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
pub(super) fn tabulate(all: Vec<Vec<String>>, notes: &mut Vec<String>) -> Sample {
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

pub(super) fn read_json(
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
pub(super) fn tree_records(
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
pub(super) fn tree_sample(mut guess: SourceGuess, records: Vec<Vec<(String, String)>>) -> Sample {
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
pub(super) const UBL_NAMESPACE: &str = "urn:oasis:names:specification:ubl:schema:xsd:";

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

pub(super) fn read_xml(
    file: &str,
    bytes: &[u8],
    notes: &mut Vec<String>,
) -> Result<Sample, ToolkitError> {
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
