//! Previewing a mapping on a sample: the first records, source values beside canonical values.
//!
//! [`preview`] decodes up to `rows` records with the mapping's own source options, maps and
//! validates each, and keeps per record and per field the source values used, the canonical
//! value or the [`FieldError`], and whether the record would go through. The values are shown:
//! a preview is what an officer runs on their own sample while writing a mapping.
//!
//! A compiled [`Mapping`] does not say which columns feed which field, so the preview finds out
//! by probing: each column (and `$file`, `$line`, `$row`) is changed in turn, the record mapped
//! again, and a field whose outcome changes reads that column. The columns named by field
//! errors count too (and so does the column of a `when` condition: it decides whether the
//! field is filled). For a record that fails, the fields that did map are recovered the same
//! way: the failing fields' columns are given values from a good record and the record mapped
//! again, and only fields that read none of those columns take their value from that run.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Read;

use serde::Serialize;
use serde_json::{Map, Value};

use super::ToolkitError;
use crate::canonical::Entity;
use crate::formats::{self, Header, Item, Locator, SourceRecord};
use crate::mapping::{Binding, FieldError, Mapping};

/// Records probed to learn which columns feed which field (a tabular file has one header, so a
/// few records are enough; tree formats are probed record by record).
const PROBED_RECORDS: usize = 50;

/// A value no transform reads, to see which fields notice a column changing.
const SENTINEL: &str = "\u{1}preview-probe\u{1}";

/// A mapping run over the first records of a sample.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// Mapping id.
    pub mapping: String,
    /// Mapping version.
    pub version: u32,
    /// Canonical entity.
    pub entity: String,
    /// The sample's name.
    pub file: String,
    /// The mapping's fields, in mapping order.
    pub fields: Vec<String>,
    /// The records, in file order.
    pub records: Vec<PreviewRecord>,
    /// Control (trailer) rows met, which are not records.
    pub controls: Vec<Locator>,
    /// The sample has more records than were previewed.
    pub more: bool,
    /// Record keys that more than one previewed record has: published as upserts, a consumer
    /// keyed on them keeps only the last.
    pub duplicate_keys: Vec<DuplicateKey>,
}

/// One key that several records of the sample share.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DuplicateKey {
    /// The record key.
    pub key: String,
    /// The physical lines of the records that have it, in file order.
    pub lines: Vec<u64>,
    /// Whether the records are identical (a repeated line) or differ (one would be lost).
    pub same_content: bool,
}

/// The keys several of `records` share, with their lines.
pub fn duplicate_keys(records: &[PreviewRecord]) -> Vec<DuplicateKey> {
    let mut by_key: std::collections::BTreeMap<&str, Vec<&PreviewRecord>> = Default::default();
    for r in records {
        if let Some(k) = &r.key {
            by_key.entry(k.as_str()).or_default().push(r);
        }
    }
    let mut out: Vec<DuplicateKey> = by_key
        .into_iter()
        .filter(|(_, rs)| rs.len() > 1)
        .map(|(key, rs)| {
            let canonical = |r: &PreviewRecord| {
                serde_json::to_string(&r.fields.iter().map(|f| &f.outcome).collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            let first = canonical(rs[0]);
            DuplicateKey {
                key: key.to_string(),
                lines: rs.iter().map(|r| r.locator.line).collect(),
                same_content: rs.iter().all(|r| canonical(r) == first),
            }
        })
        .collect();
    out.sort_by_key(|d| d.lines[0]);
    out
}

/// One record of the preview.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewRecord {
    /// Where it is in the sample.
    pub locator: Locator,
    /// It maps and validates: it would be published.
    pub ok: bool,
    /// Its record key, when it maps.
    pub key: Option<String>,
    /// Each field of the mapping, in mapping order.
    pub fields: Vec<FieldPreview>,
    /// Errors not tied to one mapped field (the record as a whole, a key field, an object).
    pub errors: Vec<FieldError>,
    /// Why the row could not be decoded at all, if so.
    pub decode_failure: Option<String>,
}

/// One field of one record.
#[derive(Debug, Clone, Serialize)]
pub struct FieldPreview {
    /// Dotted path.
    pub field: String,
    /// The source values it reads (empty for a literal).
    pub sources: Vec<SourceValue>,
    /// What it became.
    pub outcome: Outcome,
}

/// A source column (or `$file`, `$line`, `$row`) and its raw value in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceValue {
    /// Column name, or `$file`/`$line`/`$row`.
    pub column: String,
    /// The raw value.
    pub raw: String,
}

/// What a field became.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The canonical value.
    Value {
        /// The value.
        value: Value,
    },
    /// Left out of the record (empty source, or a `when` that does not hold).
    Absent,
    /// Left out with a reason recorded in `null_reasons`.
    NullReason {
        /// `redacted`, `not_available`...
        reason: String,
    },
    /// Failed: a transform, `required`, or the schema.
    Failed {
        /// The error (its `value` is the raw source value).
        error: FieldError,
        /// The canonical value, when the mapping produced one the schema then refused.
        canonical: Option<Value>,
    },
    /// Not known: the record failed on another field and the value could not be recovered.
    Unknown,
}

/// Maps and validates up to `rows` records of the sample `bytes` (named `sample_name`) with
/// `mapping`, for `entity`. `Err` when the sample cannot be read with the mapping's source
/// options or lacks a mapped column.
pub fn preview(
    mapping: &Mapping,
    entity: &Entity,
    sample_name: &str,
    bytes: impl Read + 'static,
    rows: usize,
) -> Result<Preview, ToolkitError> {
    preview_inner(mapping, entity, sample_name, bytes, rows, false)
}

/// As [`preview`], for a draft ([`crate::mapping::load_draft`]): a mapped column the sample
/// lacks reads as empty instead of refusing the sample, so the rows show what does map.
pub fn preview_draft(
    mapping: &Mapping,
    entity: &Entity,
    sample_name: &str,
    bytes: impl Read + 'static,
    rows: usize,
) -> Result<Preview, ToolkitError> {
    preview_inner(mapping, entity, sample_name, bytes, rows, true)
}

fn preview_inner(
    mapping: &Mapping,
    entity: &Entity,
    sample_name: &str,
    bytes: impl Read + 'static,
    rows: usize,
    lenient: bool,
) -> Result<Preview, ToolkitError> {
    let decoder = formats::open(sample_name, bytes, &mapping.source.format)?;
    let tabular = !mapping.source.format.per_record_header();
    if tabular && !lenient {
        mapping.bind_for(&decoder.header())?;
    }
    let mut items: Vec<Result<SourceRecord, formats::DecodeFailure>> = Vec::new();
    let mut controls = Vec::new();
    let mut more = false;
    for item in decoder {
        match item? {
            Item::Control(r) => controls.push(r.locator),
            _ if items.len() >= rows => {
                more = true;
                break;
            }
            Item::Record(r) => items.push(Ok(r)),
            Item::Failure(f) => items.push(Err(f)),
        }
    }
    let fields: Vec<String> = mapping.field_paths().map(str::to_owned).collect();
    let mut bindings: HashMap<*const Header, Binding> = HashMap::new();
    let mut binding_for = |r: &SourceRecord| -> Result<Binding, ToolkitError> {
        let key = std::sync::Arc::as_ptr(&r.header);
        if let Some(b) = bindings.get(&key) {
            return Ok(b.clone());
        }
        let b = if lenient {
            mapping.bind_lenient(&r.header)
        } else {
            mapping.bind_for(&r.header)?
        };
        bindings.insert(key, b.clone());
        Ok(b)
    };
    let good: Vec<&SourceRecord> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
    // Which columns each field reads.
    let mut deps: Vec<BTreeSet<String>> = vec![BTreeSet::new(); fields.len()];
    for (n, r) in good.iter().enumerate() {
        if tabular && n >= PROBED_RECORDS {
            break;
        }
        let binding = binding_for(r)?;
        probe(mapping, &binding, r, &good, &fields, &mut deps);
    }
    let mut records = Vec::new();
    for item in &items {
        records.push(match item {
            Ok(r) => {
                let binding = binding_for(r)?;
                preview_record(mapping, entity, &binding, r, &good, &fields, &deps)
            }
            Err(f) => PreviewRecord {
                locator: f.locator.clone(),
                ok: false,
                key: None,
                fields: Vec::new(),
                errors: Vec::new(),
                decode_failure: Some(match &f.record {
                    Some(r) => format!("{} (values: {})", f.reason, r.values.join(" | ")),
                    None => f.reason.clone(),
                }),
            },
        });
    }
    let duplicate_keys = duplicate_keys(&records);
    Ok(Preview {
        mapping: mapping.id.clone(),
        version: mapping.version,
        entity: mapping.entity.clone(),
        file: sample_name.to_string(),
        fields,
        records,
        controls,
        more,
        duplicate_keys,
    })
}

/// A field's state in one mapping run; `None` when the run failed on other fields only.
fn state(result: &Result<Map<String, Value>, Vec<FieldError>>, path: &str) -> Option<Outcome> {
    match result {
        Ok(body) => Some(body_state(body, path)),
        Err(errors) => errors
            .iter()
            .find(|e| e.field == path)
            .map(|e| Outcome::Failed {
                error: FieldError {
                    value: None,
                    ..e.clone()
                },
                canonical: None,
            }),
    }
}

fn body_state(body: &Map<String, Value>, path: &str) -> Outcome {
    if let Some(reason) = body
        .get("null_reasons")
        .and_then(|n| n.get(path))
        .and_then(Value::as_str)
    {
        return Outcome::NullReason {
            reason: reason.to_string(),
        };
    }
    match get(body, path) {
        Some(v) => Outcome::Value { value: v.clone() },
        None => Outcome::Absent,
    }
}

fn get<'a>(body: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut v = body.get(segments.next()?)?;
    for s in segments {
        v = v.get(s)?;
    }
    Some(v)
}

fn run(
    mapping: &Mapping,
    binding: &Binding,
    record: &SourceRecord,
) -> Result<Map<String, Value>, Vec<FieldError>> {
    mapping.apply(binding, record).map(|m| m.body)
}

/// Learns which columns (and record places) feed which fields from one record.
fn probe(
    mapping: &Mapping,
    binding: &Binding,
    record: &SourceRecord,
    others: &[&SourceRecord],
    fields: &[String],
    deps: &mut [BTreeSet<String>],
) {
    let base = run(mapping, binding, record);
    if let Err(errors) = &base {
        for e in errors {
            if let (Some(i), Some(c)) = (fields.iter().position(|f| *f == e.field), &e.column) {
                deps[i].insert(c.clone());
            }
        }
    }
    let compare = |probed: &SourceRecord, name: &str, deps: &mut [BTreeSet<String>]| {
        let result = run(mapping, binding, probed);
        for (i, f) in fields.iter().enumerate() {
            if let (Some(a), Some(b)) = (state(&base, f), state(&result, f))
                && a != b
            {
                deps[i].insert(name.to_string());
            }
        }
    };
    let names = record.header.names();
    let columns = names.len().max(record.values.len());
    for i in 0..columns {
        let name = names.get(i).cloned().unwrap_or_else(|| (i + 1).to_string());
        let current = record.get(i).to_string();
        let mut probes = vec![String::new(), SENTINEL.to_string()];
        if let Some(other) = others
            .iter()
            .map(|o| value_by_name(o, &name, i))
            .find(|v| *v != current && !v.trim().is_empty())
        {
            probes.push(other);
        }
        for p in probes {
            if p == current {
                continue;
            }
            let mut probed = record.clone();
            set(&mut probed, i, p);
            compare(&probed, &name, deps);
        }
    }
    let mut probed = record.clone();
    probed.locator.file = format!("{}{SENTINEL}", record.locator.file);
    compare(&probed, "$file", deps);
    let mut probed = record.clone();
    probed.locator.line += 100_000;
    compare(&probed, "$line", deps);
    let mut probed = record.clone();
    probed.locator.row += 100_000;
    compare(&probed, "$row", deps);
}

fn set(record: &mut SourceRecord, index: usize, value: String) {
    if record.values.len() <= index {
        record.values.resize(index + 1, String::new());
    }
    record.values[index] = value;
}

/// A record's value of the column `name` (by position when its header has no such name).
fn value_by_name(record: &SourceRecord, name: &str, index: usize) -> String {
    let names = record.header.names();
    match names.iter().position(|n| n == name) {
        Some(i) => record.get(i).to_string(),
        None if names.is_empty() => record.get(index).to_string(),
        None => String::new(),
    }
}

fn source_values(record: &SourceRecord, columns: &BTreeSet<String>) -> Vec<SourceValue> {
    let names = record.header.names();
    // In the file's column order, then the record's place.
    let mut out: Vec<(usize, SourceValue)> = Vec::new();
    for c in columns {
        let (order, raw) = match c.as_str() {
            "$file" => (usize::MAX - 2, record.locator.file.clone()),
            "$line" => (usize::MAX - 1, record.locator.line.to_string()),
            "$row" => (usize::MAX, record.locator.row.to_string()),
            _ => match names.iter().position(|n| n == c) {
                Some(i) => (i, record.get(i).to_string()),
                None => match c.parse::<usize>() {
                    Ok(n) if names.is_empty() && n >= 1 => (n - 1, record.get(n - 1).to_string()),
                    _ => (usize::MAX - 3, String::new()),
                },
            },
        };
        out.push((
            order,
            SourceValue {
                column: c.clone(),
                raw,
            },
        ));
    }
    out.sort_by_key(|(o, _)| *o);
    out.into_iter().map(|(_, v)| v).collect()
}

fn preview_record(
    mapping: &Mapping,
    entity: &Entity,
    binding: &Binding,
    record: &SourceRecord,
    good: &[&SourceRecord],
    fields: &[String],
    deps: &[BTreeSet<String>],
) -> PreviewRecord {
    let raw_of = |i: usize| -> Option<String> {
        let values = source_values(record, &deps[i]);
        (!values.is_empty()).then(|| {
            values
                .iter()
                .map(|v| v.raw.as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        })
    };
    let mut errors = Vec::new();
    let mut key = None;
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(fields.len());
    match mapping.apply(binding, record) {
        Ok(mapped) => {
            let body = Value::Object(mapped.body.clone());
            key = Some(mapped.key);
            outcomes = fields.iter().map(|f| body_state(&mapped.body, f)).collect();
            if let Err(schema_errors) = entity.validate(&body) {
                for e in schema_errors {
                    match fields.iter().position(|f| *f == e.field) {
                        Some(i) => {
                            let canonical = match &outcomes[i] {
                                Outcome::Value { value } => Some(value.clone()),
                                _ => None,
                            };
                            outcomes[i] = Outcome::Failed {
                                error: FieldError {
                                    value: raw_of(i),
                                    ..e
                                },
                                canonical,
                            };
                        }
                        None => errors.push(e),
                    }
                }
            }
        }
        Err(field_errors) => {
            let failing: Vec<usize> = field_errors
                .iter()
                .filter_map(|e| fields.iter().position(|f| *f == e.field))
                .collect();
            let recovered = recover(mapping, binding, record, good, &failing, deps);
            for (i, f) in fields.iter().enumerate() {
                let outcome = match field_errors.iter().find(|e| e.field == *f) {
                    Some(e) => Outcome::Failed {
                        error: FieldError {
                            value: e.value.clone().or_else(|| raw_of(i)),
                            ..e.clone()
                        },
                        canonical: None,
                    },
                    None => recovered
                        .as_ref()
                        .and_then(|(body, replaced)| {
                            deps[i].is_disjoint(replaced).then(|| body_state(body, f))
                        })
                        .unwrap_or(Outcome::Unknown),
                };
                outcomes.push(outcome);
            }
            errors.extend(
                field_errors
                    .into_iter()
                    .filter(|e| !fields.contains(&e.field)),
            );
        }
    }
    let ok = errors.is_empty() && !outcomes.iter().any(|o| matches!(o, Outcome::Failed { .. }));
    PreviewRecord {
        locator: record.locator.clone(),
        ok,
        key: if ok { key } else { None },
        fields: fields
            .iter()
            .zip(outcomes)
            .enumerate()
            .map(|(i, (f, outcome))| FieldPreview {
                field: f.clone(),
                sources: source_values(record, &deps[i]),
                outcome,
            })
            .collect(),
        errors,
        decode_failure: None,
    }
}

/// Maps a failed record again with its failing fields' columns given a good record's values
/// (or emptied), to learn the other fields' values. Returns the body and the columns replaced.
fn recover(
    mapping: &Mapping,
    binding: &Binding,
    record: &SourceRecord,
    good: &[&SourceRecord],
    failing: &[usize],
    deps: &[BTreeSet<String>],
) -> Option<(Map<String, Value>, BTreeSet<String>)> {
    let replaced: BTreeSet<String> = failing
        .iter()
        .flat_map(|i| deps[*i].iter().cloned())
        .collect();
    let names = record.header.names();
    let donor = good
        .iter()
        .find(|g| mapping.apply(binding, g).is_ok() && g.header.names() == names);
    let mut attempts = Vec::new();
    if let Some(donor) = donor {
        let mut r = record.clone();
        for c in &replaced {
            if let Some(i) = names.iter().position(|n| n == c) {
                set(&mut r, i, donor.get(i).to_string());
            }
        }
        attempts.push(r);
    }
    let mut r = record.clone();
    for c in &replaced {
        if let Some(i) = names.iter().position(|n| n == c) {
            set(&mut r, i, String::new());
        }
    }
    attempts.push(r);
    attempts
        .iter()
        .find_map(|r| run(mapping, binding, r).ok())
        .map(|body| (body, replaced))
}

impl Preview {
    /// The preview as JSON, for scripts.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a preview serialises")
    }

    /// A terminal table per record: each field's source values beside its canonical value,
    /// failures marked `✗ <rule>: <message>`, laid out in `width` characters (at least 60):
    /// long cells wrap onto the following lines rather than being cut.
    pub fn render_table(&self, width: usize) -> String {
        let width = width.max(60);
        let mut out = String::new();
        let ok = self.records.iter().filter(|r| r.ok).count();
        let summary = format!(
            "{} v{} → {}, sample {}: {} record(s) shown, {ok} ok, {} failed{}",
            self.mapping,
            self.version,
            self.entity,
            self.file,
            self.records.len(),
            self.records.len() - ok,
            if self.more {
                " (the sample has more)"
            } else {
                ""
            }
        );
        push_wrapped(&mut out, &summary, width, "");
        for d in &self.duplicate_keys {
            let lines: Vec<String> = d.lines.iter().map(u64::to_string).collect();
            let line = format!(
                "! duplicate key {} on lines {} ({}): a consumer keyed on it keeps only the last",
                d.key,
                lines.join(", "),
                if d.same_content {
                    "identical records"
                } else {
                    "different content"
                }
            );
            push_wrapped(&mut out, &line, width, "  ");
        }
        let field_w = self
            .fields
            .iter()
            .map(|f| f.chars().count())
            .max()
            .unwrap_or(5)
            .clamp(5, 28)
            .min(width / 4);
        let rest = width.saturating_sub(field_w + 2 + 6);
        let source_w = rest * 9 / 20;
        let value_w = rest - source_w;
        for (n, r) in self.records.iter().enumerate() {
            out.push('\n');
            let failed = r
                .fields
                .iter()
                .filter(|f| matches!(f.outcome, Outcome::Failed { .. }))
                .count();
            let status = if r.ok {
                format!(
                    "✓ record {} — {}{}",
                    n + 1,
                    r.locator,
                    r.key
                        .as_ref()
                        .map(|k| format!(", key {k}"))
                        .unwrap_or_default()
                )
            } else if let Some(reason) = &r.decode_failure {
                format!(
                    "✗ record {} — {}: could not be read: {reason}",
                    n + 1,
                    r.locator
                )
            } else {
                let record_level = r.errors.len();
                format!(
                    "✗ record {} — {}: {} field(s) failed{}",
                    n + 1,
                    r.locator,
                    failed,
                    if record_level > 0 {
                        format!(", {record_level} record error(s)")
                    } else {
                        String::new()
                    }
                )
            };
            push_wrapped(&mut out, &status, width, "  ");
            if r.fields.is_empty() {
                continue;
            }
            let widths = [field_w, source_w, value_w];
            push_row(&mut out, ["field", "source", "canonical"], widths);
            let _ = writeln!(
                out,
                "  {}─┼─{}─┼─{}",
                "─".repeat(field_w),
                "─".repeat(source_w),
                "─".repeat(value_w)
            );
            for f in &r.fields {
                let source = if f.sources.is_empty() {
                    "(literal)".to_string()
                } else {
                    f.sources
                        .iter()
                        .map(|s| format!("{}: {}", s.column, quote(&s.raw)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let value = match &f.outcome {
                    Outcome::Value { value } => value.to_string(),
                    Outcome::Absent => "— (absent)".to_string(),
                    Outcome::NullReason { reason } => format!("— (null: {reason})"),
                    Outcome::Failed { error, canonical } => {
                        let mut s = format!("✗ {}: {}", error.rule, error.message);
                        if let Some(c) = canonical {
                            let _ = write!(s, " (value {c})");
                        }
                        s
                    }
                    Outcome::Unknown => "? (not computed: the record failed)".to_string(),
                };
                push_row(&mut out, [&f.field, &source, &value], widths);
            }
            for e in &r.errors {
                let mut line = format!("✗ {} {}: {}", e.field, e.rule, e.message);
                if let Some(v) = &e.value {
                    let _ = write!(line, " (value {})", quote(v));
                }
                push_wrapped(&mut out, &format!("  {line}"), width, "    ");
            }
        }
        for c in &self.controls {
            out.push('\n');
            push_wrapped(
                &mut out,
                &format!("  control row at {c} (trailer: checked, not a record)"),
                width,
                "    ",
            );
        }
        out
    }
}

/// One table row, its cells wrapped to their widths.
fn push_row(out: &mut String, cells: [&str; 3], widths: [usize; 3]) {
    let wrapped: Vec<Vec<String>> = cells.iter().zip(widths).map(|(c, w)| wrap(c, w)).collect();
    let lines = wrapped.iter().map(Vec::len).max().unwrap_or(1);
    for k in 0..lines {
        let cell = |i: usize| wrapped[i].get(k).map(String::as_str).unwrap_or("");
        let line = format!(
            "  {} │ {} │ {}",
            pad(cell(0), widths[0]),
            pad(cell(1), widths[1]),
            cell(2)
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// Text wrapped to `width`, continuation lines indented by `indent`.
fn push_wrapped(out: &mut String, text: &str, width: usize, indent: &str) {
    let first = wrap(text, width);
    let mut lines = first.into_iter();
    if let Some(l) = lines.next() {
        out.push_str(&l);
        out.push('\n');
    }
    let rest: String = lines.collect::<Vec<_>>().join(" ");
    if !rest.is_empty() {
        for l in wrap(&rest, width.saturating_sub(indent.chars().count()).max(10)) {
            out.push_str(indent);
            out.push_str(&l);
            out.push('\n');
        }
    }
}

/// Splits `s` into lines of at most `width` characters, at spaces when it can.
fn wrap(s: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in s.split(' ') {
        let mut word = word.to_string();
        loop {
            let used = line.chars().count();
            let need = word.chars().count() + usize::from(used > 0);
            if used + need <= width {
                if used > 0 {
                    line.push(' ');
                }
                line.push_str(&word);
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word longer than the line: cut it.
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            lines.push(head);
            if word.is_empty() {
                break;
            }
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n >= width {
        s.to_string()
    } else {
        format!("{s}{}", " ".repeat(width - n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Registry;
    use crate::mapping::compile_str;
    use std::path::Path;

    fn registry() -> Registry {
        Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap()
    }

    const MAPPING: &str = r#"mapping: test-supplier-payment
version: 2
entity: finance.supplier_payment
source:
  format: csv
key: [transaction_id]
fields:
  transaction_id: { from: Trans No, transforms: [trim], required: true }
  supplier_name: { from: Supplier, transforms: [trim], required: true }
  payment_date: { from: Paid, transforms: [{ date: dd/mm/yyyy }], required: true }
  amount_pence: { from: Amount, transforms: [money], required: true }
  purpose: { coalesce: [Purpose, Notes], transforms: [trim] }
  capital_or_revenue:
    from: CR
    transforms: [trim, upper, { map: { values: { C: capital, R: revenue } } }]
  currency: { value: GBP }
"#;

    const SAMPLE: &str = "Trans No,Supplier,Paid,Amount,Purpose,Notes,CR\n\
        T1,Acme Ltd,02/11/2026,\"1,234.50\",Gritting,,R\n\
        T2,Beta plc,31/02/2026,12.00,,Spare part,C\n\
        T3,Gamma,03/11/2026,5.00,Paper,,X\n\
        T4,Delta,04/11/2026,7.00,,,R\n";

    fn run(rows: usize) -> Preview {
        let r = registry();
        let mapping = compile_str("test.yaml", MAPPING, &r).unwrap();
        let entity = r.get("finance.supplier_payment").unwrap();
        preview(
            &mapping,
            entity,
            "pay.csv",
            std::io::Cursor::new(SAMPLE),
            rows,
        )
        .unwrap()
    }

    fn field<'a>(r: &'a PreviewRecord, name: &str) -> &'a FieldPreview {
        r.fields.iter().find(|f| f.field == name).unwrap()
    }

    #[test]
    fn good_records_show_sources_beside_canonical_values() {
        let p = run(10);
        assert_eq!(p.records.len(), 4);
        assert!(!p.more);
        let first = &p.records[0];
        assert!(first.ok);
        assert_eq!(first.key.as_deref(), Some("T1"));
        assert_eq!(first.locator.line, 2);
        let amount = field(first, "amount_pence");
        assert_eq!(
            amount.sources,
            vec![SourceValue {
                column: "Amount".into(),
                raw: "1,234.50".into()
            }]
        );
        assert_eq!(
            amount.outcome,
            Outcome::Value {
                value: 123450.into()
            }
        );
        let date = field(first, "payment_date");
        assert_eq!(
            date.outcome,
            Outcome::Value {
                value: "2026-11-02".into()
            }
        );
        // A coalesce reads both its columns; a literal reads none.
        let purpose = field(first, "purpose");
        let columns: Vec<&str> = purpose.sources.iter().map(|s| s.column.as_str()).collect();
        assert_eq!(columns, ["Purpose", "Notes"]);
        assert!(field(first, "currency").sources.is_empty());
        assert_eq!(
            field(&p.records[3], "purpose").outcome,
            Outcome::Absent,
            "both columns empty"
        );
    }

    #[test]
    fn a_bad_row_names_the_field_and_rule_and_keeps_the_other_values() {
        let p = run(10);
        let bad = &p.records[1];
        assert!(!bad.ok);
        assert_eq!(bad.key, None);
        let date = field(bad, "payment_date");
        let Outcome::Failed { error, .. } = &date.outcome else {
            panic!("{:?}", date.outcome)
        };
        assert_eq!(error.rule, "date");
        assert_eq!(error.value.as_deref(), Some("31/02/2026"));
        assert_eq!(date.sources[0].raw, "31/02/2026");
        // The fields that did map are still shown.
        assert_eq!(
            field(bad, "supplier_name").outcome,
            Outcome::Value {
                value: "Beta plc".into()
            }
        );
        assert_eq!(
            field(bad, "purpose").outcome,
            Outcome::Value {
                value: "Spare part".into()
            }
        );
        let map_fail = &p.records[2];
        let Outcome::Failed { error, .. } = &field(map_fail, "capital_or_revenue").outcome else {
            panic!()
        };
        assert_eq!(error.rule, "map");
    }

    #[test]
    fn the_table_marks_failures_with_the_raw_value_and_the_json_has_every_record() {
        let p = run(10);
        let table = p.render_table(120);
        assert!(
            table.contains("4 record(s) shown, 2 ok, 2 failed"),
            "{table}"
        );
        assert!(
            table.contains("✓ record 1 — pay.csv, line 2 (row 1), key T1"),
            "{table}"
        );
        assert!(table.contains("✗ record 2"), "{table}");
        assert!(table.contains("✗ date: "), "{table}");
        assert!(table.contains("Paid: \"31/02/2026\""), "{table}");
        assert!(table.contains("Amount: \"1,234.50\""), "{table}");
        assert!(table.contains("123450"), "{table}");
        for line in table.lines() {
            assert!(line.chars().count() <= 120, "too wide: {line}");
        }
        let narrow = p.render_table(70);
        assert!(narrow.lines().all(|l| l.chars().count() <= 70), "{narrow}");
        let json = p.to_json();
        assert_eq!(json["records"].as_array().unwrap().len(), 4);
        assert_eq!(json["records"][1]["ok"], false);
        assert_eq!(
            json["records"][0]["fields"][3]["outcome"],
            serde_json::json!({"status": "value", "value": 123450})
        );
    }

    #[test]
    fn rows_limits_the_preview_and_says_there_is_more() {
        let p = run(2);
        assert_eq!(p.records.len(), 2);
        assert!(p.more);
        assert!(p.render_table(100).contains("(the sample has more)"));
    }

    #[test]
    fn schema_failures_show_the_canonical_value_and_a_missing_column_is_an_error() {
        let r = registry();
        let entity = r.get("finance.supplier_payment").unwrap();
        let text = MAPPING.replace(
            "  currency: { value: GBP }",
            "  currency: { from: CR, transforms: [trim] }",
        );
        let mapping = compile_str("t.yaml", &text, &r).unwrap();
        let p = preview(&mapping, entity, "pay.csv", std::io::Cursor::new(SAMPLE), 1).unwrap();
        let Outcome::Failed { error, canonical } = &field(&p.records[0], "currency").outcome else {
            panic!()
        };
        assert_eq!(error.rule, "schema");
        assert_eq!(canonical, &Some(Value::String("R".into())));
        assert_eq!(error.value.as_deref(), Some("R"));

        let text = MAPPING.replace("from: Paid", "from: Date Paid");
        let mapping = compile_str("t.yaml", &text, &r).unwrap();
        let err =
            preview(&mapping, entity, "pay.csv", std::io::Cursor::new(SAMPLE), 5).unwrap_err();
        assert!(err.to_string().contains("Date Paid"), "{err}");
    }
}
