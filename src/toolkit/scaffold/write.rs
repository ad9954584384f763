//! Writing the draft: the mapping file, every entry commented with why it was chosen and
//! every required field without a column a `TODO` block.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::Value;

use crate::formats::normalise_name;
use crate::mapping::transforms;

use super::matching::{FieldInfo, Kind, MatchedSource, Proposal, map_bool, map_code};
use super::profile::{DetectedFormat, Sample, Table, mode, width};
use super::shapes::{ColumnProfile, Shape};

pub(super) fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// A YAML scalar: plain when it is a simple word, else quoted.
pub(super) fn scalar(v: &Value) -> String {
    match v {
        Value::String(s)
            if !s.is_empty()
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !s.chars().next().is_some_and(|c| c.is_ascii_digit())
                && !matches!(
                    s.to_lowercase().as_str(),
                    "y" | "n" | "yes" | "no" | "true" | "false" | "on" | "off" | "null"
                ) =>
        {
            s.clone()
        }
        Value::String(s) => quote(s),
        other => other.to_string(),
    }
}

/// The transforms of a field fed by `col` (or, for a TODO block, by an unknown column), and
/// what to check.
pub(super) fn transforms_for(
    f: &FieldInfo,
    col: Option<&ColumnProfile>,
) -> (Vec<String>, Vec<String>) {
    let mut todo = Vec::new();
    let shape = col.map(|c| &c.shape);
    let codes = col.map(|c| c.codes.as_slice()).unwrap_or(&[]);
    let t: Vec<String> = match &f.kind {
        Kind::Constant(_) => vec!["trim".into(), "upper".into()],
        Kind::Date => {
            match shape {
                Some(Shape::Date { formats }) if formats.len() == 1 => {
                    vec![format!("{{ date: {} }}", quote(&formats[0]))]
                }
                Some(Shape::Date { formats }) => {
                    let list: Vec<String> = formats.iter().map(|f| quote(f)).collect();
                    vec![format!("{{ date: [{}] }}", list.join(", "))]
                }
                _ => {
                    if col.is_some_and(|c| c.shape != Shape::Empty) {
                        todo.push("the values did not read as dates in any usual format: set the date format".into());
                    } else {
                        todo.push("check the date format".into());
                    }
                    vec![format!("{{ date: {} }}", quote("dd/mm/yyyy"))]
                }
            }
        }
        Kind::Pence => match shape {
            Some(Shape::LeadingZeros) => {
                todo.push("zero-filled digits: `pence` reads them as pence; use `money` if they are pounds".into());
                vec!["pence".into()]
            }
            _ => vec!["money".into()],
        },
        Kind::Integer => match shape {
            Some(Shape::Decimal | Shape::Money) => {
                vec!["decimal".into(), "{ round: 0 }".into()]
            }
            _ => vec!["integer".into()],
        },
        Kind::Number => vec!["decimal".into()],
        Kind::Boolean => {
            if codes.iter().all(|c| transforms::parse_boolean(c).is_ok()) {
                vec!["boolean".into()]
            } else {
                let mut pairs = Vec::new();
                let mut unknown = Vec::new();
                for c in codes {
                    match map_bool(c, f) {
                        Some(b) => pairs.push(format!("{}: {b}", quote(&c.to_uppercase()))),
                        None => unknown.push(c.clone()),
                    }
                }
                if codes.is_empty() {
                    todo.push(
                        "too many different values to map to yes/no: check the column".into(),
                    );
                    vec!["boolean".into()]
                } else {
                    if !unknown.is_empty() {
                        todo.push(format!(
                            "values with no yes/no reading: {}",
                            unknown
                                .iter()
                                .map(|u| quote(u))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    vec![
                        "trim".into(),
                        "upper".into(),
                        format!("{{ map: {{ values: {{ {} }} }} }}", pairs.join(", ")),
                    ]
                }
            }
        }
        Kind::Enum(enums) => {
            let allowed = enums.join(", ");
            if codes.is_empty() {
                if col.is_some_and(|c| c.shape != Shape::Empty) {
                    todo.push(format!(
                        "more than 20 different values: map them to {allowed}"
                    ));
                } else {
                    todo.push(format!("map the codes to {allowed}"));
                }
                vec!["trim".into(), "lower".into()]
            } else if codes.iter().all(|c| enums.contains(&c.to_string())) {
                vec!["trim".into()]
            } else if codes.iter().all(|c| enums.contains(&c.to_lowercase())) {
                vec!["trim".into(), "lower".into()]
            } else {
                let mut pairs = Vec::new();
                let mut unknown = Vec::new();
                let mut seen = HashSet::new();
                for c in codes {
                    let key = c.to_uppercase();
                    if !seen.insert(key.clone()) {
                        continue;
                    }
                    match map_code(c, enums) {
                        Some(e) => {
                            pairs.push(format!("{}: {}", quote(&key), scalar(&Value::String(e))))
                        }
                        None => unknown.push(c.clone()),
                    }
                }
                if !unknown.is_empty() {
                    todo.push(format!(
                        "codes with no canonical value: {} (allowed: {allowed}); unknown codes fail",
                        unknown.iter().map(|u| quote(u)).collect::<Vec<_>>().join(", ")
                    ));
                }
                vec![
                    "trim".into(),
                    "upper".into(),
                    format!("{{ map: {{ values: {{ {} }} }} }}", pairs.join(", ")),
                ]
            }
        }
        Kind::Nino => vec!["compact".into(), "upper".into()],
        Kind::Postcode => vec!["trim".into(), "upper".into()],
        Kind::SortCode => vec!["digits".into()],
        Kind::Email => vec!["trim".into(), "lower".into()],
        Kind::OtherFormat(f) if matches!(f.as_str(), "uk-vat-number" | "uk-tax-code") => {
            vec!["compact".into(), "upper".into()]
        }
        Kind::OtherFormat(_) => vec!["trim".into(), "upper".into()],
        Kind::Text if f.leaf == "account_number" => vec!["digits".into()],
        Kind::Text if shape == Some(&Shape::Email) => vec!["trim".into(), "lower".into()],
        Kind::Text => vec!["trim".into()],
    };
    (t, todo)
}

// ---------------------------------------------------------------------------------------------
// The draft
// ---------------------------------------------------------------------------------------------

pub(super) struct RenderInput<'a> {
    pub(super) file: &'a str,
    pub(super) mapping_id: &'a str,
    pub(super) entity: &'a str,
    pub(super) sample: &'a Sample,
    pub(super) fields: &'a [FieldInfo],
    pub(super) proposal: &'a Proposal,
}

/// `from:` for a column: its name (by occurrence when the header repeats it), or its number.
pub(super) fn from_column(table: &Table, index: usize) -> String {
    let name = &table.header[index];
    if !table.named || name.is_empty() {
        return (index + 1).to_string();
    }
    let occurrence = table.header[..index]
        .iter()
        .filter(|h| normalise_name(h) == normalise_name(name))
        .count()
        + 1;
    if occurrence > 1 {
        format!("{{ name: {}, occurrence: {occurrence} }}", quote(name))
    } else {
        quote(name)
    }
}

pub(super) fn comment_line(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{indent}# {line}");
    }
}

pub(super) fn render(r: &RenderInput) -> String {
    let g = &r.sample.guess;
    let p = r.proposal;
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# DRAFT mapping written by the onboarding toolkit from the sample {} ({} data rows read).",
        r.file, g.profiled_rows
    );
    y.push_str(
        "# Every match below is a guess, with its reason beside it: check each one, fill the\n",
    );
    y.push_str("# TODOs, then run `council-bridge mapping check` on this file and preview it on the sample.\n");
    let _ = writeln!(y, "mapping: {}", r.mapping_id);
    y.push_str("version: 1\n");
    let _ = writeln!(y, "entity: {}", r.entity);
    let _ = writeln!(
        y,
        "description: {}",
        quote(&format!(
            "DRAFT generated from {}: review every field before use",
            r.file
        ))
    );
    y.push_str("\nsource:\n");
    let _ = writeln!(y, "  format: {}", g.format.name());
    if g.gzip {
        y.push_str(
            "  # the sample is gzip-compressed: it is read decompressed, whatever its name\n",
        );
    }
    match g.format {
        DetectedFormat::Csv => {
            if let Some(e) = &g.encoding {
                let _ = writeln!(y, "  encoding: {e}  # {}", g.encoding_reason);
            }
            if let Some(d) = g.delimiter {
                let widths = r.sample.table.header.len();
                let _ = writeln!(
                    y,
                    "  delimiter: {}  # {widths} columns",
                    quote(&d.to_string())
                );
            }
        }
        DetectedFormat::Spreadsheet => {
            if let Some(s) = &g.sheet {
                let _ = writeln!(y, "  sheet: {}  # the sheet with the most rows", quote(s));
            }
        }
        DetectedFormat::Json => {
            let at = g.records_at.clone().unwrap_or_default();
            if g.records_at.is_none() {
                y.push_str("  # TODO: this is JSON: set records_at to the JSON pointer of the array of records\n");
            }
            let _ = writeln!(y, "  records_at: {}", quote(&at));
        }
        DetectedFormat::Ndjson => {}
        DetectedFormat::Xml => match &g.record_path {
            Some(path) => {
                let _ = writeln!(
                    y,
                    "  record_path: {}  # TODO: check: the outermost repeated element (or the root)",
                    quote(path)
                );
            }
            None => {
                y.push_str("  # TODO: this is XML: set record_path to the element path of one record from the root\n");
                y.push_str("  record_path: TODO\n");
            }
        },
        DetectedFormat::FixedWidth => {
            if let Some(e) = &g.encoding {
                let _ = writeln!(y, "  encoding: {e}  # {}", g.encoding_reason);
            }
            y.push_str(
                "  # TODO: this looks like a fixed-width file: describe its record layouts, e.g.\n",
            );
            y.push_str("  # records:\n");
            y.push_str("  #   - prefix: \"D\"\n");
            y.push_str("  #     kind: detail\n");
            y.push_str("  #     columns: [{ name: Employee No, start: 2, length: 8 }]\n");
        }
    }
    if matches!(g.format, DetectedFormat::Csv | DetectedFormat::Spreadsheet) {
        if !g.header {
            y.push_str("  header: false  # no row looks like a header: columns are referred to by number\n");
        } else if g.title_rows > 0 {
            match &p.header_match {
                Some(pattern) => {
                    let _ = writeln!(
                        y,
                        "  header_match: {}  # {} title row(s) above the header{}",
                        quote(pattern),
                        g.title_rows,
                        if g.format == DetectedFormat::Csv {
                            format!(" (or skip_rows: {})", g.title_rows)
                        } else {
                            String::new()
                        }
                    );
                }
                None => {
                    let _ = writeln!(
                        y,
                        "  skip_rows: {}  # title rows above the header",
                        g.title_rows
                    );
                }
            }
        }
        if let Some(t) = &g.trailer {
            let _ = writeln!(y, "  trailer:  # {}", t.why);
            let _ = writeln!(
                y,
                "    match: {{ column: {}, pattern: {} }}",
                t.column,
                quote(&t.pattern)
            );
            if let Some(c) = t.count_column {
                let _ = writeln!(
                    y,
                    "    count_column: {c}  # equals the number of data rows ({})",
                    g.data_rows
                );
            }
            if let (Some(c), Some(of)) = (t.total_column, &t.total_of) {
                let _ = writeln!(y, "    total_column: {c}");
                let _ = writeln!(
                    y,
                    "    total_of: {}  # its sum equals the trailer's total",
                    quote(of)
                );
            }
            if t.count_column.is_none() && t.total_column.is_none() {
                y.push_str("    # TODO: no trailer cell equals the row count or a column's sum: set count_column / total_column and total_of if it carries them\n");
            }
        } else if let Some(last) = r.sample.table.rows.last()
            && let Some((data_width, _)) = mode(
                r.sample
                    .table
                    .rows
                    .iter()
                    .map(|row| width(row))
                    .filter(|w| *w >= 2),
            )
            && data_width >= 4
            && width(last) * 2 <= data_width
        {
            y.push_str("  # the last row is much shorter than the others: is it a trailer? see `trailer:`\n");
        }
    }

    y.push('\n');
    if p.key.is_empty() {
        let _ = writeln!(
            y,
            "key: []  # TODO: name the fields that identify a record ({})",
            p.key_reason
        );
    } else {
        let _ = writeln!(y, "key: [{}]  # {}", p.key.join(", "), p.key_reason);
    }

    y.push('\n');
    if p.matches.is_empty() {
        y.push_str("fields: {}\n");
    } else {
        y.push_str("fields:\n");
    }
    for m in &p.matches {
        let _ = writeln!(y, "  {}:  # {}", m.field, m.why);
        for t in &m.todo {
            comment_line(&mut y, "    ", &format!("TODO: {t}"));
        }
        match &m.source {
            MatchedSource::Column { index, .. } => {
                let _ = writeln!(y, "    from: {}", from_column(&r.sample.table, *index));
            }
            MatchedSource::Literal { value } => {
                let _ = writeln!(y, "    value: {}", scalar(value));
            }
            MatchedSource::FileLine => {
                y.push_str("    concat: { from: [$file, $line], separator: \":\" }\n");
            }
            MatchedSource::FileName { .. } => y.push_str("    from: $file\n"),
        }
        if !m.transforms.is_empty() {
            let _ = writeln!(y, "    transforms: [{}]", m.transforms.join(", "));
        }
        if !m.null_if.is_empty() {
            let list: Vec<String> = m.null_if.iter().map(|s| quote(s)).collect();
            let _ = writeln!(
                y,
                "    null_if: [{}]  # placeholders read as no value",
                list.join(", ")
            );
        }
        if m.required {
            y.push_str("    required: true\n");
        }
    }
    for path in &p.todo_fields {
        let f = r
            .fields
            .iter()
            .find(|f| &f.path == path)
            .expect("a TODO field is a field");
        y.push('\n');
        let _ = writeln!(y, "  # TODO: {path} is required: which column holds it?");
        let (transforms, _) = transforms_for(f, None);
        let _ = writeln!(y, "  # {path}:");
        y.push_str("  #   from: \"?\"\n");
        let _ = writeln!(y, "  #   transforms: [{}]", transforms.join(", "));
        y.push_str("  #   required: true\n");
    }
    for g in &p.todo_groups {
        y.push('\n');
        let _ = writeln!(
            y,
            "  # TODO: the schema needs at least one of {}: which column holds one?",
            g.join(", ")
        );
    }
    if !p.unmatched_optional.is_empty() {
        y.push('\n');
        comment_line(
            &mut y,
            "",
            &wrap(
                &format!(
                    "Optional fields with no column found: {}",
                    p.unmatched_optional.join(", ")
                ),
                96,
            ),
        );
    }
    if !p.unused_columns.is_empty() || p.unnamed_empty > 0 {
        y.push('\n');
        if !p.unused_columns.is_empty() {
            let names: Vec<String> = p.unused_columns.iter().map(|c| quote(c)).collect();
            comment_line(
                &mut y,
                "",
                &wrap(&format!("Columns not used: {}", names.join(", ")), 96),
            );
        }
        if p.unnamed_empty > 0 {
            let _ = writeln!(
                y,
                "# ({} column(s) without a header name, empty on every sample row)",
                p.unnamed_empty
            );
        }
    }
    y
}

/// Wraps text at `width` characters on spaces.
pub(super) fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = format!("  {word}");
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    out.push_str(&line);
    out
}

/// A council name as part of an id: lower case, runs of other characters as one `-`.
/// A draft's mapping id: council, entity and what the file's name says it is, without its
/// dates, so that each export of a council gets its own id and next month's file the same one
/// (`oxford_2014-apr-jun_spend_over_500.csv` → `oxford-supplier-payment-spend-over`).
pub(super) fn draft_id(council: &str, entity_short: &str, file: &str) -> String {
    const MONTHS: &[&str] = &[
        "jan",
        "feb",
        "mar",
        "apr",
        "may",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "january",
        "february",
        "march",
        "april",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "q1",
        "q2",
        "q3",
        "q4",
    ];
    let council = slug(council);
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    let words: Vec<String> = slug(stem)
        .split('-')
        .filter(|w| {
            !w.is_empty()
                && !w.chars().all(|c| c.is_ascii_digit())
                && !MONTHS.contains(w)
                && !council.split('-').any(|c| c == *w)
        })
        .take(3)
        .map(str::to_string)
        .collect();
    let mut id = format!("{council}-{}", entity_short.replace('_', "-"));
    if !words.is_empty() {
        id.push('-');
        id.push_str(&words.join("-"));
    }
    id
}

pub(super) fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}
