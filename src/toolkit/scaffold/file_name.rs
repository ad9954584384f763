//! Values a file states only in its name: the "as at" date of a snapshot (organisation charts,
//! senior salaries) and the month or quarter of a spend file whose rows carry no payment day.
//! When no column fills the entity's "date or period" group, the draft takes it from `$file`
//! by pattern, and records that it was supplied from the file name (never an invented day).

use regex::Regex;
use serde_json::Value;

use super::{FieldMatch, MatchedSource};
use crate::canonical::Entity;

/// A date or a period the file name states, as a mapping field.
struct Found {
    /// The field to fill (`effective_date`, `effective_period`, `payment_period`).
    field: &'static str,
    /// The pattern whose group 1 is the value.
    pattern: &'static str,
    /// The transform reading it.
    transform: String,
    /// The text found, for the comment.
    text: String,
}

/// (date field, period field, field recording where it came from) per entity, when it has them.
const GROUPS: &[(&str, &str, &str)] = &[
    ("effective_date", "effective_period", "as_at_source"),
    ("payment_date", "payment_period", "payment_period_source"),
];

/// (pattern, transform, is a whole date): the first that matches the file name wins.
const PATTERNS: &[(&str, &str, bool)] = &[
    (r"(\d{4}-\d{2}-\d{2})", "{ date: yyyy-mm-dd }", true),
    (
        r"(\d{4}-[a-zA-Z]{3}-[a-zA-Z]{3})(?:[^a-zA-Z]|$)",
        "{ period: yyyy-MMM-MMM }",
        false,
    ),
    (
        r"([a-zA-Z]{3}-[a-zA-Z]{3}-\d{4})",
        "{ period: MMM-MMM-yyyy }",
        false,
    ),
    (r"(\d{4}-\d{2})(?:[^-\d]|$)", "{ period: yyyy-mm }", false),
];

fn has(entity: &Entity, field: &str) -> bool {
    entity
        .schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| p.contains_key(field))
}

fn find(file: &str, date_field: &'static str, period_field: &'static str) -> Option<Found> {
    for (pattern, transform, whole_date) in PATTERNS {
        let re = Regex::new(pattern).expect("a valid pattern");
        let Some(m) = re.captures(file).and_then(|c| c.get(1)) else {
            continue;
        };
        // A day in the file name is an "as at" date only for a snapshot; a payment's day is
        // never taken from a file name.
        let field = match (whole_date, date_field) {
            (true, "effective_date") => date_field,
            (true, _) => continue,
            (false, _) => period_field,
        };
        return Some(Found {
            field,
            pattern,
            transform: transform.to_string(),
            text: m.as_str().to_string(),
        });
    }
    None
}

/// Replaces the draft's "needs one of <date>, <period>" TODO with the value from the file name,
/// when the file name states one; says so in `notes`.
pub(super) fn supply(
    file: &str,
    entity: &Entity,
    yaml: &mut String,
    matches: &mut Vec<FieldMatch>,
    missing_required: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    for (date_field, period_field, source_field) in GROUPS {
        if !(has(entity, date_field) && has(entity, period_field)) {
            continue;
        }
        let group = format!("one of {date_field}, {period_field}");
        let todo = format!(
            "  # TODO: the schema needs at least one of {date_field}, {period_field}: which column holds one?\n"
        );
        if !missing_required.contains(&group) || !yaml.contains(&todo) {
            continue;
        }
        let Some(found) = find(file, date_field, period_field) else {
            continue;
        };
        let mut block = format!(
            "  {}:  # no column gives it: \"{}\" in the file name; check it is {}\n    from: $file\n    transforms: [{{ regex: {{ pattern: '{}', group: 1 }} }}, {}]\n    required: true\n",
            found.field,
            found.text,
            if found.field.ends_with("_date") {
                "the date the file is as at"
            } else {
                "the period the file covers"
            },
            found.pattern,
            found.transform
        );
        let why = format!("\"{}\" in the file name", found.text);
        matches.push(FieldMatch {
            field: found.field.to_string(),
            source: MatchedSource::FileName {
                pattern: found.pattern.to_string(),
            },
            score: 1.0,
            required: true,
            transforms: vec![
                format!("{{ regex: {{ pattern: '{}', group: 1 }} }}", found.pattern),
                found.transform.clone(),
            ],
            null_if: Vec::new(),
            why: why.clone(),
            todo: vec!["check it is the date the file is as at".into()],
        });
        if has(entity, source_field) {
            matches.push(FieldMatch {
                field: source_field.to_string(),
                source: MatchedSource::Literal {
                    value: Value::String("file_name".into()),
                },
                score: 1.0,
                required: false,
                transforms: Vec::new(),
                null_if: Vec::new(),
                why: format!("{} is {why}", found.field),
                todo: Vec::new(),
            });
            block.push_str(&format!(
                "  {source_field}:  # recorded: supplied from the file name, not read from a row\n    value: file_name\n"
            ));
        }
        *yaml = yaml.replacen(&todo, &block, 1);
        missing_required.retain(|m| m != &group);
        notes.push(format!(
            "{}: taken from the file name (\"{}\"), recorded in {source_field}",
            found.field, found.text
        ));
    }
}
