//! `each:`: a canonical array of objects filled from the repeated groups of a tree record.
//!
//! XML and JSON records are flattened to path columns, a repeated element numbered from its
//! second occurrence (`Line/Amount`, `Line[2]/Amount`). `each: Line` gathers those groups in
//! document order and applies the element's own fields to each, as a small record whose
//! columns are the paths below the element.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::FieldError;
use super::compile::{CompiledField, Each};
use crate::formats::{Header, SourceRecord};

/// The groups of `element` in `record`: 1-based index → (paths below the element, values).
fn groups(element: &str, record: &SourceRecord) -> BTreeMap<usize, (Vec<String>, Vec<String>)> {
    let mut out: BTreeMap<usize, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for (i, name) in record.header.names().iter().enumerate() {
        let Some(rest) = name.strip_prefix(element) else {
            continue;
        };
        let (index, below) = if let Some(below) = rest.strip_prefix('/') {
            (1, below)
        } else if let Some(indexed) = rest.strip_prefix('[') {
            let Some((n, after)) = indexed.split_once(']') else {
                continue;
            };
            let Ok(n) = n.parse::<usize>() else { continue };
            match after.strip_prefix('/') {
                Some(below) => (n, below),
                None => continue,
            }
        } else {
            continue;
        };
        let group = out.entry(index).or_default();
        group.0.push(below.to_string());
        group.1.push(record.get(i).to_string());
    }
    out
}

/// The array `field` (an `each:`) makes of `record`: `None` when the record has no such
/// element, errors naming the element (`lines[2].amount_pence`) and its column.
pub(super) fn apply(
    field: &CompiledField,
    each: &Each,
    record: &SourceRecord,
) -> Result<Option<Value>, Vec<FieldError>> {
    let groups = groups(&each.element, record);
    if groups.is_empty() {
        return if field.required {
            Err(vec![FieldError {
                field: field.path.clone(),
                column: Some(each.element.clone()),
                rule: "required".into(),
                message: format!(
                    "is required but the record has no `{}` element",
                    each.element
                ),
                value: None,
            }])
        } else {
            Ok(None)
        };
    }
    let mut items = Vec::with_capacity(groups.len());
    let mut errors = Vec::new();
    for (index, (names, values)) in groups {
        let header = Arc::new(Header::new(names));
        let element = SourceRecord {
            locator: record.locator.clone(),
            header: header.clone(),
            values,
        };
        let binding = each.mapping.bind_lenient(&header);
        match each.mapping.apply(&binding, &element) {
            Ok(m) => items.push(Value::Object(m.body)),
            Err(es) => {
                let at = if index == 1 {
                    each.element.clone()
                } else {
                    format!("{}[{index}]", each.element)
                };
                errors.extend(es.into_iter().map(|e| FieldError {
                    field: format!("{}[{index}].{}", field.path, e.field),
                    column: e.column.map(|c| format!("{at}/{c}")),
                    message: format!("element {index} of `{}`: {}", each.element, e.message),
                    ..e
                }));
            }
        }
    }
    if errors.is_empty() {
        Ok(Some(Value::Array(items)))
    } else {
        Err(errors)
    }
}
