//! Placeholders that say *why* a value is missing (`REDACTED - Personal Information`, `N/D`):
//! the draft records them as `null_reasons` for the fields whose entity carries one, instead
//! of publishing the placeholder as a supplier's or a holder's name.

use regex::Regex;

use super::{FieldMatch, MatchedSource};
use crate::canonical::Entity;

/// Values that withhold a value: redacted (personal information) or not disclosed.
fn reason_of(value: &str) -> Option<&'static str> {
    static REDACTED: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"(?i)^\s*(redacted\b.*|.*\bpersonal information\b.*|withheld\b.*|n/d|not disclosed)\s*$")
            .expect("a valid pattern")
    });
    REDACTED.is_match(value).then_some("redacted")
}

/// Adds `null_reasons: {"<placeholder>": redacted}` to the drafted fields whose column holds
/// such placeholders and whose entity records a null reason for them; says so in `notes`.
pub(super) fn supply(
    entity: &Entity,
    rows: &[Vec<String>],
    matches: &[FieldMatch],
    yaml: &mut String,
    notes: &mut Vec<String>,
) {
    let reasons = entity
        .schema
        .pointer("/properties/null_reasons/properties")
        .and_then(serde_json::Value::as_object);
    let Some(reasons) = reasons else { return };
    for m in matches {
        let MatchedSource::Column { index, .. } = &m.source else {
            continue;
        };
        if !reasons.contains_key(&m.field) {
            continue;
        }
        let mut found: Vec<&str> = Vec::new();
        for row in rows {
            if let Some(v) = row.get(*index).map(|v| v.trim())
                && reason_of(v).is_some()
                && !found.contains(&v)
            {
                found.push(v);
            }
        }
        if found.is_empty() {
            continue;
        }
        let head = format!("  {}:  # ", m.field);
        let Some(start) = yaml.find(&head) else {
            continue;
        };
        let Some(from) = yaml[start..].find("\n    from: ").map(|i| start + i + 1) else {
            continue;
        };
        let end = yaml[from..].find('\n').map_or(yaml.len(), |i| from + i + 1);
        let list: Vec<String> = found
            .iter()
            .map(|v| format!("{}: redacted", serde_json::Value::String(v.to_string())))
            .collect();
        let line = format!(
            "    null_reasons: {{ {} }}  # withheld by the publisher: no value, with its reason\n",
            list.join(", ")
        );
        yaml.insert_str(end, &line);
        notes.push(format!(
            "{}: {} placeholder(s) recorded as null_reasons (redacted)",
            m.field,
            found.len()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::reason_of;

    #[test]
    fn redaction_placeholders() {
        for v in [
            "REDACTED - Personal Information",
            "Redacted personal information",
            "N/D",
            "Withheld",
        ] {
            assert_eq!(reason_of(v), Some("redacted"), "{v}");
        }
        for v in ["Acme Ltd", "Redcar Council", "ND Services"] {
            assert_eq!(reason_of(v), None, "{v}");
        }
    }
}
