//! Value shapes: what the values of one column look like (dates and their format, money,
//! numbers, yes/no, NI numbers, postcodes, sort codes, codes, emails, placeholders).

use std::collections::HashSet;

use serde::Serialize;

use crate::canonical::uk_formats;
use crate::mapping::transforms::{self, DateFormat};

/// Date formats tried on a column, in order (written as mappings write them).
pub const DATE_FORMATS: &[&str] = &[
    "dd/mm/yyyy",
    "d/m/yyyy",
    "yyyy-mm-dd",
    "dd-MMM-yyyy",
    "d-MMM-yyyy",
    "dd.mm.yyyy",
    "yyyymmdd",
    "dd-mm-yyyy",
    "dd MMM yyyy",
    "d MMM yyyy",
    "yyyy/mm/dd",
    "dd/mm/yy",
    "dd-MMM-yy",
];

/// The shape of a column's values.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shape {
    /// Empty on every row.
    Empty,
    /// Dates, readable with these formats (tried in order).
    Date {
        /// Formats as mappings write them.
        formats: Vec<String>,
    },
    /// Amounts of money (`£`, commas, brackets, two decimals).
    Money,
    /// Whole numbers.
    Integer,
    /// Decimal numbers.
    Decimal,
    /// Yes/no values.
    Boolean,
    /// National Insurance numbers.
    Nino,
    /// UK postcodes.
    Postcode,
    /// Sort codes (6 digits, with dashes or spaces).
    SortCode,
    /// Digit codes with leading zeros: text, not numbers.
    LeadingZeros,
    /// Email addresses.
    Email,
    /// Web addresses.
    Url,
    /// Anything else.
    Text,
}

impl Shape {
    /// The shape in words, for comments.
    pub fn describe(&self) -> String {
        match self {
            Shape::Empty => "empty on every sample row".into(),
            Shape::Date { formats } => format!("dates {}", formats.join(" or ")),
            Shape::Money => "money".into(),
            Shape::Integer => "whole numbers".into(),
            Shape::Decimal => "decimals".into(),
            Shape::Boolean => "yes/no".into(),
            Shape::Nino => "NI numbers".into(),
            Shape::Postcode => "postcodes".into(),
            Shape::SortCode => "sort codes".into(),
            Shape::LeadingZeros => "codes with leading zeros (kept as text)".into(),
            Shape::Email => "email addresses".into(),
            Shape::Url => "web addresses".into(),
            Shape::Text => "text".into(),
        }
    }
}

/// What the values of one column look like.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnProfile {
    /// 0-based position.
    pub index: usize,
    /// Header name (`""` when the header leaves it blank; the number when there is no header).
    pub name: String,
    /// Rows profiled.
    pub rows: usize,
    /// Rows where it is empty.
    pub empty: usize,
    /// `empty / rows`.
    pub empty_share: f64,
    /// Placeholders found (`NA`, `N/A`, `-`...), as written.
    pub placeholders: Vec<String>,
    /// The shape of the other values.
    pub shape: Shape,
    /// Share of the non-empty values that fit the shape.
    pub fit: f64,
    /// Distinct non-empty values.
    pub distinct: usize,
    /// Every non-empty value differs from the others (and there are at least two).
    pub unique: bool,
    /// The distinct values, when there are at most 20 (codes).
    pub codes: Vec<String>,
    /// Every value is 6 digits (once dashes and spaces are removed): could be a sort code.
    pub six_digits: bool,
}

pub(super) fn date_formats() -> &'static [DateFormat] {
    static FORMATS: std::sync::LazyLock<Vec<DateFormat>> = std::sync::LazyLock::new(|| {
        DATE_FORMATS
            .iter()
            .map(|f| DateFormat::new(f).expect("built-in date formats are valid"))
            .collect()
    });
    &FORMATS
}

// ---------------------------------------------------------------------------------------------
// Profiling
// ---------------------------------------------------------------------------------------------

pub(super) const PLACEHOLDERS: &[&str] = &[
    "na",
    "n/a",
    "n.a.",
    "n.a",
    "null",
    "none",
    "#n/a",
    "-",
    "--",
    "nil",
    "not applicable",
    "not available",
];

/// Placeholders the `money` transform reads as 0 (so they need no `null_if` on money fields).
pub(super) const MONEY_ZEROS: &[&str] = &["nil", "-", "n/a"];

pub(super) fn is_placeholder(v: &str) -> bool {
    PLACEHOLDERS.contains(&v.trim().to_lowercase().as_str())
}

pub(super) static INTEGER: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)$").expect("valid regex")
});
pub(super) static SORT_CODE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^\d{2}[- ]?\d{2}[- ]?\d{2}$").expect("valid regex")
});
pub(super) static EMAIL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^[^@\s]+@[^@\s]+\.[^@\s]+$").expect("valid regex")
});

pub(super) fn is_boolean_token(v: &str) -> bool {
    transforms::parse_boolean(v).is_ok()
}

pub(super) fn is_postcode(v: &str) -> bool {
    let up = v.trim().to_uppercase();
    let compact: String = up.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() < 5 || compact.len() > 7 {
        return false;
    }
    let (out, inward) = compact.split_at(compact.len() - 3);
    uk_formats::is_uk_postcode(&format!("{out} {inward}"))
}

pub(super) fn is_nino(v: &str) -> bool {
    uk_formats::is_nino(&transforms::compact(v).to_uppercase())
}

/// A date in a plausible year (so that `yyyymmdd` does not read every 8-digit code).
pub(super) fn parses_date(f: &DateFormat, v: &str) -> bool {
    use chrono::Datelike;
    f.parse(v)
        .is_some_and(|d| (1900..=2100).contains(&d.year()))
}

/// Profiles one column from its values (one per row, `""` when the row lacks it).
pub fn profile_column(index: usize, name: &str, values: &[&str]) -> ColumnProfile {
    let rows = values.len();
    let empty = values.iter().filter(|v| v.trim().is_empty()).count();
    let mut placeholders: Vec<String> = Vec::new();
    let mut present: Vec<&str> = Vec::new();
    for v in values {
        let t = v.trim();
        if t.is_empty() {
            continue;
        }
        if is_placeholder(t) {
            if !placeholders.iter().any(|p| p == t) {
                placeholders.push(t.to_string());
            }
        } else {
            present.push(t);
        }
    }
    let distinct_set: HashSet<&str> = present.iter().copied().collect();
    let distinct = distinct_set.len();
    let mut codes: Vec<String> = Vec::new();
    if distinct <= 20 {
        for v in &present {
            if !codes.iter().any(|c| c == v) {
                codes.push(v.to_string());
            }
        }
    }
    let six_digits = !present.is_empty()
        && present
            .iter()
            .all(|v| SORT_CODE.is_match(v) && transforms::digits(v).len() == 6);
    let (shape, fit) = shape_of(&present);
    ColumnProfile {
        index,
        name: name.to_string(),
        rows,
        empty,
        empty_share: if rows == 0 {
            0.0
        } else {
            empty as f64 / rows as f64
        },
        placeholders,
        shape,
        fit,
        distinct,
        unique: present.len() >= 2 && distinct == present.len(),
        codes,
        six_digits,
    }
}

pub(super) type Predicate = dyn Fn(&str) -> bool;

/// The shape of non-empty values and the share of them that fit it.
pub(super) fn shape_of(values: &[&str]) -> (Shape, f64) {
    let n = values.len();
    if n == 0 {
        return (Shape::Empty, 1.0);
    }
    let share =
        |pred: &dyn Fn(&str) -> bool| values.iter().filter(|v| pred(v)).count() as f64 / n as f64;
    let distinct: HashSet<String> = values.iter().map(|v| v.to_lowercase()).collect();
    let all_digits = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit());
    if share(&is_boolean_token) == 1.0
        && distinct.len() <= 4
        && values.iter().any(|v| !all_digits(v))
    {
        return (Shape::Boolean, 1.0);
    }
    if let Some((formats, fit)) = date_shape(values) {
        return (Shape::Date { formats }, fit);
    }
    let is_email = |v: &str| EMAIL.is_match(v);
    let checks: [(Shape, &Predicate); 3] = [
        (Shape::Nino, &is_nino),
        (Shape::Postcode, &is_postcode),
        (Shape::Email, &is_email),
    ];
    for (shape, pred) in checks {
        let s = share(pred);
        if s >= 0.8 {
            return (shape, s);
        }
    }
    let sort = share(&|v: &str| SORT_CODE.is_match(v));
    if sort >= 0.9 && values.iter().any(|v| v.contains(['-', ' '])) {
        return (Shape::SortCode, sort);
    }
    let url = share(&|v: &str| v.starts_with("http://") || v.starts_with("https://"));
    if url >= 0.9 {
        return (Shape::Url, url);
    }
    let digits = share(&all_digits);
    if digits >= 0.9 && values.iter().any(|v| v.len() > 1 && v.starts_with('0')) {
        return (Shape::LeadingZeros, digits);
    }
    let integer = share(&|v: &str| INTEGER.is_match(v));
    if integer >= 0.95 {
        return (Shape::Integer, integer);
    }
    let money = share(&|v: &str| transforms::parse_money(v).is_ok());
    let money_like = values.iter().any(|v| {
        v.contains(['£', ',', '('])
            || v.ends_with('-')
            || v.split_once('.').is_some_and(|(_, f)| f.trim().len() == 2)
    });
    if money >= 0.9 && money_like {
        return (Shape::Money, money);
    }
    let decimal = share(&|v: &str| transforms::parse_decimal(v).is_ok());
    if decimal >= 0.9 {
        return (Shape::Decimal, decimal);
    }
    (Shape::Text, 1.0)
}

/// The date format(s) that read the values: one that reads them all, else two that do
/// together, else the best one when it reads at least 80%.
pub(super) fn date_shape(values: &[&str]) -> Option<(Vec<String>, f64)> {
    let formats = date_formats();
    let hits: Vec<Vec<bool>> = formats
        .iter()
        .map(|f| values.iter().map(|v| parses_date(f, v)).collect())
        .collect();
    let counts: Vec<usize> = hits
        .iter()
        .map(|h| h.iter().filter(|x| **x).count())
        .collect();
    let n = values.len();
    if let Some(i) = counts.iter().position(|c| *c == n) {
        return Some((vec![formats[i].written.clone()], 1.0));
    }
    let best = (0..formats.len()).max_by_key(|i| (counts[*i], std::cmp::Reverse(*i)))?;
    if counts[best] == 0 {
        return None;
    }
    for j in 0..formats.len() {
        if j != best && (0..n).all(|k| hits[best][k] || hits[j][k]) {
            return Some((
                vec![formats[best].written.clone(), formats[j].written.clone()],
                1.0,
            ));
        }
    }
    let fit = counts[best] as f64 / n as f64;
    (fit >= 0.8).then(|| (vec![formats[best].written.clone()], fit))
}
