//! A file's shape, for drift detection: its columns (names, in order) and, per column, the
//! shape most of its values have (empty, integer, decimal, date or text). Compared with the
//! feed's last accepted batch, a change names what moved.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::formats::SourceRecord;

/// The shape of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Empty,
    Integer,
    Decimal,
    Date,
    Text,
}

fn shape_of(value: &str) -> Shape {
    let v = value.trim();
    if v.is_empty() {
        return Shape::Empty;
    }
    if is_date(v) {
        return Shape::Date;
    }
    let n = v.strip_prefix('£').unwrap_or(v);
    let n = n.strip_prefix(['-', '+']).unwrap_or(n);
    let n = n.strip_suffix('-').unwrap_or(n);
    // Thousands commas are skipped where they are (no copy of the value without them).
    let (whole, frac) = match n.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (n, None),
    };
    let digits = |s: &str| {
        s.bytes().any(|b| b != b',') && s.bytes().all(|b| b.is_ascii_digit() || b == b',')
    };
    let only_commas = |s: &str| s.bytes().all(|b| b == b',');
    match frac {
        None if digits(whole) => Shape::Integer,
        Some(f) if (digits(whole) || only_commas(whole)) && digits(f) => Shape::Decimal,
        _ => Shape::Text,
    }
}

/// `dd/mm/yyyy`, `d/m/yy`, `dd-mm-yyyy`, `dd.mm.yyyy`, `yyyy-mm-dd` (a time may follow), and
/// `dd-Mon-yyyy` / `dd Mon yyyy`.
fn is_date(v: &str) -> bool {
    let v = v.split(['T', ' ']).next().unwrap_or(v);
    let mut parts = v.split(['/', '-', '.']);
    let (Some(p0), Some(p1), Some(p2), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let num = |s: &str, min: usize, max: usize| {
        (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    let month_name = |s: &str| {
        s.len() == 3
            && [
                "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
            ]
            .iter()
            .any(|m| s.eq_ignore_ascii_case(m))
    };
    (num(p0, 4, 4) && num(p1, 1, 2) && num(p2, 1, 2))
        || (num(p0, 1, 2) && (num(p1, 1, 2) || month_name(p1)) && (num(p2, 2, 2) || num(p2, 4, 4)))
}

#[derive(Debug, Clone, Default)]
struct Counts {
    empty: u64,
    integer: u64,
    decimal: u64,
    date: u64,
    text: u64,
}

impl Counts {
    fn add(&mut self, s: Shape) {
        match s {
            Shape::Empty => self.empty += 1,
            Shape::Integer => self.integer += 1,
            Shape::Decimal => self.decimal += 1,
            Shape::Date => self.date += 1,
            Shape::Text => self.text += 1,
        }
    }

    /// The shape most filled values have (integers and decimals count together as numbers).
    fn dominant(&self) -> &'static str {
        let numbers = self.integer + self.decimal;
        if numbers + self.date + self.text == 0 {
            "empty"
        } else if numbers >= self.date && numbers >= self.text {
            if self.decimal > 0 {
                "decimal"
            } else {
                "integer"
            }
        } else if self.date >= self.text {
            "date"
        } else {
            "text"
        }
    }
}

/// Collects the shape of a file while it is read.
#[derive(Debug, Default)]
pub struct Profile {
    columns: Vec<String>,
    index: HashMap<String, usize>,
    counts: Vec<Counts>,
    last_header: Option<std::sync::Arc<crate::formats::Header>>,
    map: Vec<usize>,
    records: u64,
}

impl Profile {
    /// Adds one record (good or rejected).
    pub fn record(&mut self, rec: &SourceRecord) {
        self.records += 1;
        let same = self
            .last_header
            .as_ref()
            .is_some_and(|h| std::sync::Arc::ptr_eq(h, &rec.header));
        if !same {
            self.map = rec
                .header
                .names()
                .iter()
                .map(|name| {
                    *self.index.entry(name.clone()).or_insert_with(|| {
                        self.columns.push(name.clone());
                        self.counts.push(Counts::default());
                        self.columns.len() - 1
                    })
                })
                .collect();
            self.last_header = Some(rec.header.clone());
        }
        for (i, value) in rec.values.iter().enumerate() {
            if let Some(&col) = self.map.get(i) {
                self.counts[col].add(shape_of(value));
            }
        }
    }

    /// `{"records": n, "columns": [...], "shapes": {column: shape}, "filled": {column: share
    /// of records with a value}}` for the batch summary.
    pub fn to_json(&self) -> Value {
        let shapes: serde_json::Map<String, Value> = self
            .columns
            .iter()
            .zip(&self.counts)
            .map(|(c, n)| (c.clone(), json!(n.dominant())))
            .collect();
        let filled: serde_json::Map<String, Value> = self
            .columns
            .iter()
            .zip(&self.counts)
            .map(|(c, n)| {
                let share = if self.records == 0 {
                    0.0
                } else {
                    (self.records.saturating_sub(n.empty)) as f64 / self.records as f64
                };
                (c.clone(), json!((share * 1000.0).round() / 1000.0))
            })
            .collect();
        json!({ "records": self.records, "columns": self.columns, "shapes": shapes, "filled": filled })
    }
}

fn class(shape: &str) -> &str {
    match shape {
        "integer" | "decimal" => "number",
        other => other,
    }
}

/// What changed between the last accepted batch's profile and this one's, in words an officer
/// can check against the file. Empty when nothing changed. `tabular`: a file with one header
/// (CSV, fixed-width, spreadsheet), whose column set and order are compared; in XML and JSON
/// an optional element absent from one file is normal, so only the value shapes of the
/// columns both files have are compared.
pub fn drift(before: &Value, now: &Value, tabular: bool) -> Vec<String> {
    let names = |v: &Value| -> Vec<String> {
        v["columns"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (old, new) = (names(before), names(now));
    let mut changes = Vec::new();
    let missing: Vec<&String> = old.iter().filter(|c| !new.contains(c)).collect();
    let added: Vec<&String> = new.iter().filter(|c| !old.contains(c)).collect();
    if tabular && !missing.is_empty() {
        changes.push(format!(
            "column(s) no longer present: {}",
            quoted(missing.iter().map(|s| s.as_str()))
        ));
    }
    if tabular && !added.is_empty() {
        changes.push(format!(
            "new column(s): {}",
            quoted(added.iter().map(|s| s.as_str()))
        ));
    }
    if tabular {
        let common_old: Vec<&String> = old.iter().filter(|c| new.contains(c)).collect();
        let common_new: Vec<&String> = new.iter().filter(|c| old.contains(c)).collect();
        if common_old != common_new {
            changes.push(format!(
                "column order changed: was {}, now {}",
                quoted(common_old.iter().map(|s| s.as_str())),
                quoted(common_new.iter().map(|s| s.as_str()))
            ));
        }
    }
    // A file with no records says nothing about value shapes.
    let records = now["records"].as_u64().unwrap_or(1);
    for col in new.iter().filter(|c| old.contains(c) && records > 0) {
        let was = before["shapes"][col.as_str()].as_str().unwrap_or("empty");
        let is = now["shapes"][col.as_str()].as_str().unwrap_or("empty");
        // A column that had no values before and has some now is not drift (a first leaver's
        // end date); one that had values in most records and has none now is (a column the
        // export stopped filling), one that was mostly empty anyway is not.
        let mostly_filled = before["filled"][col.as_str()].as_f64().unwrap_or(1.0) >= 0.5;
        if was == "empty" || class(was) == class(is) || (is == "empty" && !mostly_filled) {
            continue;
        }
        changes.push(format!(
            "column \"{col}\" values changed shape: was {was}, now {is}"
        ));
    }
    changes
}

fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(shape_of(""), Shape::Empty);
        assert_eq!(shape_of(" 37 "), Shape::Integer);
        assert_eq!(shape_of("£1,234.56"), Shape::Decimal);
        assert_eq!(shape_of("0.6"), Shape::Decimal);
        assert_eq!(shape_of("31/10/2026"), Shape::Date);
        assert_eq!(shape_of("2026-10-31"), Shape::Date);
        assert_eq!(shape_of("31-Oct-2026"), Shape::Date);
        assert_eq!(shape_of("N/A"), Shape::Text);
        assert_eq!(shape_of("E100231-1"), Shape::Text);
        assert_eq!(shape_of("1,234"), Shape::Integer);
        assert_eq!(shape_of("2026-10-31T08:00:00"), Shape::Date);
    }

    /// The shapes are those of the first version, which copied the value without its commas
    /// and split the date into a vector: the profiles of earlier batches stay comparable.
    #[test]
    fn shapes_are_those_of_the_copying_version() {
        fn reference(value: &str) -> Shape {
            let v = value.trim();
            if v.is_empty() {
                return Shape::Empty;
            }
            let d = v.split(['T', ' ']).next().unwrap_or(v);
            let parts: Vec<&str> = d.split(['/', '-', '.']).collect();
            let num = |s: &str, min: usize, max: usize| {
                (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
            };
            let month_name = |s: &str| {
                s.len() == 3 && {
                    let l = s.to_ascii_lowercase();
                    [
                        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                        "nov", "dec",
                    ]
                    .contains(&l.as_str())
                }
            };
            if parts.len() == 3
                && ((num(parts[0], 4, 4) && num(parts[1], 1, 2) && num(parts[2], 1, 2))
                    || (num(parts[0], 1, 2)
                        && (num(parts[1], 1, 2) || month_name(parts[1]))
                        && (num(parts[2], 2, 2) || num(parts[2], 4, 4))))
            {
                return Shape::Date;
            }
            let n = v.strip_prefix('£').unwrap_or(v);
            let n = n.strip_prefix(['-', '+']).unwrap_or(n);
            let n = n.strip_suffix('-').unwrap_or(n);
            let n: String = n.chars().filter(|c| *c != ',').collect();
            let mut parts = n.splitn(2, '.');
            let whole = parts.next().unwrap_or("");
            let frac = parts.next();
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            match frac {
                None if digits(whole) => Shape::Integer,
                Some(f) if (digits(whole) || whole.is_empty()) && digits(f) => Shape::Decimal,
                _ => Shape::Text,
            }
        }
        let values = [
            "",
            " ",
            "0",
            "37",
            " 37 ",
            "1,234",
            "1,,2",
            ",",
            ",,",
            ",.5",
            ".5",
            "5.",
            "1.,",
            "1.2.3",
            "12.",
            "£1,234.56",
            "-£45.00",
            "£-5.00",
            "(312.50)",
            "+3",
            "3-",
            "-",
            "--1",
            "Nil",
            "N/A",
            "E100231-1",
            "31/10/2026",
            "1/2/26",
            "2026-10-31",
            "2026-1-3",
            "2026-10-31T08:00:00",
            "2026-10-31 08:00",
            "31-Oct-2026",
            "31-OCT-2026",
            "31.Dec.26",
            "31 Oct 2026",
            "31/10",
            "31/10/2026/1",
            "31/10/202",
            "123/10/2026",
            "31//2026",
            "1,2.3,4",
            "£",
            "£.",
            "£,",
            "1.5e3",
            "٣",
            "1 000",
        ];
        for v in values {
            assert_eq!(shape_of(v), reference(v), "{v:?}");
        }
    }

    #[test]
    fn drift_names_each_change() {
        let before = json!({"records": 4, "columns": ["A", "B", "C", "D", "F", "G"],
            "shapes": {"A": "text", "B": "date", "C": "integer", "D": "empty", "F": "date", "G": "integer"},
            "filled": {"A": 1.0, "B": 1.0, "C": 1.0, "D": 0.0, "F": 0.25, "G": 0.75}});
        let now = json!({"records": 3, "columns": ["B", "A", "C", "D", "F", "G", "E"],
            "shapes": {"A": "text", "B": "text", "C": "decimal", "D": "date", "F": "empty", "G": "empty", "E": "text"}});
        assert_eq!(
            drift(&before, &now, true),
            [
                "new column(s): \"E\"",
                "column order changed: was \"A\", \"B\", \"C\", \"D\", \"F\", \"G\", now \"B\", \"A\", \"C\", \"D\", \"F\", \"G\"",
                "column \"B\" values changed shape: was date, now text",
                "column \"G\" values changed shape: was integer, now empty",
            ]
        );
        assert!(drift(&before, &before, true).is_empty());
        // XML and JSON: only the shapes of the columns both have.
        assert_eq!(
            drift(&before, &now, false),
            [
                "column \"B\" values changed shape: was date, now text",
                "column \"G\" values changed shape: was integer, now empty",
            ]
        );
        // No records: nothing to say about shapes.
        let empty = json!({"records": 0, "columns": ["A", "B", "C", "D", "F", "G"], "shapes": {}});
        assert!(drift(&before, &empty, true).is_empty());
    }
}
