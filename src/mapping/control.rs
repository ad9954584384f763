//! Control records: what a file says about itself (trailer count and total), checked against
//! what was read. One tally used by the pipeline and by golden tests, so both judge alike.

use serde_json::{Value, json};

use super::Mapping;
use super::transforms::{parse_integer, parse_money, parse_pence};
use crate::formats::{ColumnRef, Header, SourceRecord};

/// Counts detail rows and sums the `total_of` column while a file is read.
#[derive(Debug)]
pub struct ControlTally<'a> {
    spec: Option<&'a super::ControlSpec>,
    total_of: Option<usize>,
    read: u64,
    pence: i64,
    unreadable: u64,
    trailer: Option<(Option<u64>, Option<i64>, u64)>,
}

/// The outcome: a report for the batch manifest, and why it does not agree (if it does not).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlOutcome {
    /// `None` when the mapping declares no trailer.
    pub report: Option<Value>,
    /// `None` when the trailer agrees (or there is none to check).
    pub mismatch: Option<String>,
}

impl<'a> ControlTally<'a> {
    /// A tally for a file with this header.
    pub fn new(mapping: &'a Mapping, header: &Header) -> Self {
        let spec = mapping.source.control.as_ref();
        Self {
            spec,
            total_of: spec
                .and_then(|c| c.total_of.as_ref())
                .and_then(|c| c.resolve(header)),
            read: 0,
            pence: 0,
            unreadable: 0,
            trailer: None,
        }
    }

    fn amount(&self, value: &str) -> Option<i64> {
        if self.spec.is_some_and(|s| s.amounts_in_pence) {
            parse_pence(value).ok()
        } else {
            parse_money(value).ok()
        }
    }

    /// Counts one detail row, good or bad; `record` is what could be read of it.
    pub fn detail(&mut self, record: Option<&SourceRecord>) {
        self.read += 1;
        if let (Some(i), Some(r)) = (self.total_of, record) {
            match self.amount(r.get(i)) {
                Some(p) => self.pence = self.pence.saturating_add(p),
                None => self.unreadable += 1,
            }
        }
    }

    /// Reads the trailer row.
    pub fn trailer(&mut self, rec: &SourceRecord) {
        let value = |c: Option<&ColumnRef>| -> Option<String> {
            rec.values.get(c?.resolve(&rec.header)?).cloned()
        };
        let count = value(self.spec.and_then(|s| s.count_column.as_ref()))
            .and_then(|v| parse_integer(&v).ok())
            .map(|v| v.max(0) as u64);
        let total =
            value(self.spec.and_then(|s| s.total_column.as_ref())).and_then(|v| self.amount(&v));
        self.trailer = Some((count, total, rec.locator.line));
    }

    /// Detail rows counted so far.
    pub fn read(&self) -> u64 {
        self.read
    }

    /// Compares the trailer with what was read.
    pub fn finish(&self) -> ControlOutcome {
        let Some(spec) = self.spec else {
            return ControlOutcome {
                report: None,
                mismatch: None,
            };
        };
        let Some((count, total, line)) = self.trailer else {
            return ControlOutcome {
                report: Some(json!({ "trailer": "missing" })),
                mismatch: Some(
                    "the file has no trailer row, so its completeness cannot be checked".into(),
                ),
            };
        };
        let read = self.read;
        let mut problems = Vec::new();
        if spec.count_column.is_some() {
            match count {
                Some(c) if c == read => {}
                Some(c) => problems.push(format!(
                    "trailer (line {line}) says {c} rows but {read} were read"
                )),
                None => problems.push(format!("trailer (line {line}) has no readable row count")),
            }
        }
        if spec.total_column.is_some() {
            match total {
                Some(t) if t == self.pence && self.unreadable == 0 => {}
                Some(t) => problems.push(format!(
                    "trailer (line {line}) total is {} but the rows add up to {}{}",
                    pounds(t),
                    pounds(self.pence),
                    if self.unreadable > 0 {
                        format!(" ({} rows had no readable amount)", self.unreadable)
                    } else {
                        String::new()
                    }
                )),
                None => problems.push(format!("trailer (line {line}) has no readable total")),
            }
        }
        ControlOutcome {
            report: Some(json!({
                "trailer_line": line,
                "trailer_count": count,
                "rows_read": read,
                "trailer_total_pence": total,
                "rows_total_pence": spec.total_of.as_ref().map(|_| self.pence),
                "matches": problems.is_empty(),
            })),
            mismatch: (!problems.is_empty()).then(|| problems.join("; ")),
        }
    }
}

/// `£1,234.56` style, for messages.
pub fn pounds(pence: i64) -> String {
    let sign = if pence < 0 { "-" } else { "" };
    format!("{sign}£{}.{:02}", pence.abs() / 100, pence.abs() % 100)
}
