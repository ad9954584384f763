//! Applying a compiled mapping to one record.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::compile::{Bound, CompiledField, FieldSource, Meta, Transform};
use super::transforms;
use super::{Binding, FieldError, MappedRecord, Mapping};
use crate::formats::SourceRecord;

pub(super) fn apply(
    mapping: &Mapping,
    binding: &Binding,
    record: &SourceRecord,
) -> Result<MappedRecord, Vec<FieldError>> {
    // Sized for every field at the top level: the map never grows while it is filled.
    let mut body = Map::with_capacity(mapping.fields.len());
    let mut errors = Vec::new();
    let mut null_reasons = Map::new();
    for ((field, columns), condition) in mapping
        .fields
        .iter()
        .zip(&binding.columns)
        .zip(&binding.conditions)
    {
        if let (Some(when), Some(bound)) = (&field.when, condition)
            && !when.holds(&value_of(bound, record))
        {
            continue;
        }
        if let FieldSource::Each(each) = &field.source {
            match super::each::apply(field, each, record) {
                Ok(Some(v)) => insert(&mut body, &field.segments, v),
                Ok(None) => {}
                Err(e) => errors.extend(e),
            }
            continue;
        }
        if let Some(reason) = null_reason(field, columns, record) {
            null_reasons.insert(field.path.clone(), Value::String(reason.to_string()));
            continue;
        }
        match field_value(field, columns, record) {
            Ok(Some(v)) => {
                match control_character(&field.path, &v, mapping.key.contains(&field.path)) {
                    Some(e) => errors.push(e),
                    None => insert(&mut body, &field.segments, v),
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if !null_reasons.is_empty() {
        body.insert("null_reasons".into(), Value::Object(null_reasons));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut key = String::new();
    for (i, k) in mapping.key.iter().enumerate() {
        let v = get(&body, k);
        if i > 0 {
            key.push('/');
        }
        match v {
            Some(Value::String(s)) => key.push_str(s),
            Some(other) => key.push_str(&other.to_string()),
            None => {
                return Err(vec![FieldError {
                    field: k.clone(),
                    column: None,
                    rule: "key".into(),
                    message: "is part of the record key but has no value".into(),
                    value: None,
                }]);
            }
        }
    }
    Ok(MappedRecord { key, body })
}

/// Whether a code is a field the bridge treats strictly (keys, and `*_code`, `*_id`, `*_ref`
/// fields travel in headers, routing and joins): no control character at all. Elsewhere tab
/// and line breaks are text, other control characters (NUL...) are refused.
fn control_character(field: &str, value: &Value, is_key: bool) -> Option<FieldError> {
    let Value::String(s) = value else { return None };
    let last = field.rsplit('.').next().unwrap_or(field);
    let strict = is_key
        || last.ends_with("_code")
        || last.ends_with("_id")
        || last.ends_with("_ref")
        || last == "code"
        || last == "id";
    let (at, ch) = s
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && (strict || !matches!(c, '\t' | '\n' | '\r')))?;
    Some(FieldError {
        field: field.to_string(),
        column: None,
        rule: "control_character".into(),
        message: format!(
            "contains the control character U+{:04X} at character {}: {} may not contain control characters",
            ch as u32,
            at + 1,
            if strict { "keys and codes" } else { "values" }
        ),
        value: None,
    })
}

fn get<'a>(body: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut v = body.get(segments.next()?)?;
    for s in segments {
        v = v.get(s)?;
    }
    Some(v)
}

fn insert(body: &mut Map<String, Value>, segments: &[String], value: Value) {
    let (last, parents) = segments.split_last().expect("a field path has a segment");
    let mut map = body;
    for p in parents {
        // The parent's name is copied only the first time (`get_mut` before `entry`).
        if !map.get(p).is_some_and(Value::is_object) {
            map.insert(p.clone(), Value::Object(Map::new()));
        }
        map = map
            .get_mut(p)
            .and_then(Value::as_object_mut)
            .expect("made an object");
    }
    map.insert(last.clone(), value);
}

/// The reason a field has no value, when its source holds one of its `null_reasons` markers.
fn null_reason<'a>(
    field: &'a CompiledField,
    columns: &[Bound],
    record: &SourceRecord,
) -> Option<&'a str> {
    if field.null_reasons.is_empty() {
        return None;
    }
    let raw = columns.first().map(|b| value_of(b, record))?;
    let raw = raw.trim().to_lowercase();
    field
        .null_reasons
        .iter()
        .find(|(marker, _)| *marker == raw)
        .map(|(_, r)| r.as_str())
}

fn number(n: f64) -> Value {
    serde_json::Number::from_f64(n)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// A value as the failure store keeps it: text as is, anything else as JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "text",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The raw text a bound source gives, borrowed from the record where it is there.
fn value_of<'a>(bound: &'a Bound, record: &'a SourceRecord) -> Cow<'a, str> {
    match bound {
        Bound::Column(i, _) => Cow::Borrowed(record.get(*i)),
        Bound::Meta(Meta::File) => Cow::Borrowed(&record.locator.file),
        Bound::Meta(Meta::Line) => Cow::Owned(record.locator.line.to_string()),
        Bound::Meta(Meta::Row) => Cow::Owned(record.locator.row.to_string()),
        Bound::Meta(Meta::AsAt | Meta::AsAtSource) | Bound::Missing(_) => Cow::Borrowed(""),
        Bound::Supplied(v) => Cow::Borrowed(v),
    }
}

fn field_value(
    field: &CompiledField,
    columns: &[Bound],
    record: &SourceRecord,
) -> Result<Option<Value>, FieldError> {
    let column_name = || {
        columns.iter().find_map(|b| match b {
            Bound::Column(_, n) | Bound::Missing(n) => Some(n.clone()),
            Bound::Meta(_) | Bound::Supplied(_) => None,
        })
    };
    let raw: Cow<'_, str> = match &field.source {
        FieldSource::Literal(v) => return Ok(Some(v.clone())),
        FieldSource::Each(_) => return Ok(None),
        FieldSource::Column(_) => columns
            .first()
            .map(|b| value_of(b, record))
            .unwrap_or_default(),
        FieldSource::Coalesce(_) => columns
            .iter()
            .map(|b| value_of(b, record))
            .find(|v| !v.trim().is_empty())
            .unwrap_or_default(),
        FieldSource::Concat(_, sep) => Cow::Owned(
            columns
                .iter()
                .map(|b| value_of(b, record))
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.trim().to_string())
                .collect::<Vec<_>>()
                .join(sep),
        ),
    };
    let error = |rule: &str, message: String, value: Option<String>| FieldError {
        field: field.path.clone(),
        column: column_name(),
        rule: rule.to_string(),
        message,
        value,
    };
    let placeholder =
        !field.null_if.is_empty() && field.null_if.contains(&raw.trim().to_lowercase());
    if raw.trim().is_empty() || placeholder {
        return match (&field.default, field.required) {
            (Some(d), _) => Ok(Some(d.clone())),
            (None, true) => Err(error("required", "is required but empty".into(), None)),
            (None, false) => Ok(None),
        };
    }
    // The value is the raw text (borrowed from the record, not copied) until a transform
    // makes another.
    let mut text: Option<Cow<'_, str>> = Some(raw);
    let mut value = Value::Null;
    let mut emptied = false;
    for t in &field.transforms {
        if let Transform::Expr(e) = t {
            let input = match text.take() {
                Some(s) => Value::String(s.into_owned()),
                None => std::mem::take(&mut value),
            };
            match e.run(&input, record) {
                // null: the field is empty.
                Ok(Value::Null) => {
                    emptied = true;
                    break;
                }
                Ok(v) => value = v,
                Err(m) => return Err(error("expr", m, Some(text_of(&input)))),
            }
            continue;
        }
        // Compile checks the types of the other transforms, except after an `expr`.
        let after_expr = |value: &Value| {
            format!(
                "`{}` cannot take the {} the `expr` before it produced",
                t.name(),
                kind_of(value)
            )
        };
        if text.is_none()
            && let Some(n) = value.as_f64()
        {
            value = match t {
                Transform::Multiply(x) => number(n * x),
                Transform::Divide(x) => number(n / x),
                Transform::Round(0) => Value::from(n.round() as i64),
                Transform::Round(places) => {
                    let f = 10f64.powi(*places as i32);
                    number((n * f).round() / f)
                }
                _ => return Err(error(t.name(), after_expr(&value), Some(text_of(&value)))),
            };
            continue;
        }
        let s: &str = match (&text, &value) {
            (Some(s), _) => s,
            (None, Value::String(s)) => s,
            (None, v) => return Err(error(t.name(), after_expr(v), Some(text_of(v)))),
        };
        let next = string_transform(t, s, &error, || after_expr(&Value::String(String::new())))?;
        text = None;
        value = next;
    }
    let value = match text {
        Some(s) => Value::String(s.into_owned()),
        None => value,
    };
    if emptied || value.as_str().is_some_and(|s| s.trim().is_empty()) {
        return match (&field.default, field.required) {
            (Some(d), _) => Ok(Some(d.clone())),
            (None, true) => Err(error("required", "is required but empty".into(), None)),
            (None, false) => Ok(None),
        };
    }
    Ok(Some(value))
}

/// A transform of text (every transform but `expr` and the arithmetic ones on a number).
fn string_transform(
    t: &Transform,
    s: &str,
    error: &dyn Fn(&str, String, Option<String>) -> FieldError,
    after_expr: impl Fn() -> String,
) -> Result<Value, FieldError> {
    Ok(match t {
        Transform::Split { separator, index } => match s.split(separator.as_str()).nth(index - 1) {
            Some(part) => Value::String(part.trim().to_string()),
            None => {
                return Err(error(
                    "split",
                    format!("has fewer than {index} parts separated by \"{separator}\""),
                    Some(s.to_string()),
                ));
            }
        },
        Transform::Pad { length, with, left } => {
            let missing = length.saturating_sub(s.chars().count());
            let fill: String = std::iter::repeat_n(*with, missing).collect();
            Value::String(if *left {
                format!("{fill}{s}")
            } else {
                format!("{s}{fill}")
            })
        }
        Transform::Regex { pattern, group } => {
            match pattern.captures(s).and_then(|c| c.get(*group)) {
                Some(m) => Value::String(m.as_str().to_string()),
                None => {
                    return Err(error(
                        "regex",
                        format!("does not match the pattern `{}`", pattern.as_str()),
                        Some(s.to_string()),
                    ));
                }
            }
        }
        Transform::Multiply(_) | Transform::Divide(_) | Transform::Round(_) => {
            return Err(error(t.name(), after_expr(), Some(s.to_string())));
        }
        Transform::Expr(_) => unreachable!("handled above"),
        Transform::Trim => Value::String(s.trim().to_string()),
        Transform::Upper => Value::String(s.to_uppercase()),
        Transform::Lower => Value::String(s.to_lowercase()),
        Transform::Compact => Value::String(transforms::compact(s)),
        Transform::Digits => Value::String(transforms::digits(s)),
        Transform::Date(formats) => match transforms::parse_date(s, formats) {
            Ok(d) => Value::String(transforms::iso_date(d)),
            Err(m) => return Err(error("date", m, Some(s.to_string()))),
        },
        Transform::Period(formats) => match transforms::parse_period(s, formats) {
            Ok(p) => serde_json::json!({
                "start": transforms::iso_date(p.start),
                "end": transforms::iso_date(p.end),
                "precision": p.precision,
            }),
            Err(m) => return Err(error("period", m, Some(s.to_string()))),
        },
        Transform::Money => match transforms::parse_money(s) {
            Ok(p) => Value::from(p),
            Err(m) => return Err(error("money", m, Some(s.to_string()))),
        },
        Transform::Pence => match transforms::parse_pence(s) {
            Ok(p) => Value::from(p),
            Err(m) => return Err(error("pence", m, Some(s.to_string()))),
        },
        Transform::Integer => match transforms::parse_integer(s) {
            Ok(p) => Value::from(p),
            Err(m) => return Err(error("integer", m, Some(s.to_string()))),
        },
        Transform::Decimal => match transforms::parse_decimal(s) {
            Ok(p) => Value::from(p),
            Err(m) => return Err(error("decimal", m, Some(s.to_string()))),
        },
        Transform::Boolean => match transforms::parse_boolean(s) {
            Ok(p) => Value::from(p),
            Err(m) => return Err(error("boolean", m, Some(s.to_string()))),
        },
        Transform::Map { values, default } => match values.get(s.trim()) {
            Some(v) => v.clone(),
            None => match default {
                Some(d) => d.clone(),
                None => {
                    let mut known: Vec<&str> = values.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    if known.len() > 12 {
                        known.truncate(12);
                        known.push("...");
                    }
                    return Err(error(
                        "map",
                        format!("is not a known code (known: {})", known.join(", ")),
                        Some(s.to_string()),
                    ));
                }
            },
        },
    })
}
