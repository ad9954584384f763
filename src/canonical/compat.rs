//! Schema compatibility: what consumers of a schema version rely on, and whether a change keeps
//! it. Within a major version (`<entity>.v<N>.json`) only additive changes are allowed: new
//! optional properties, wider types, new enum values. Removing or renaming a property, narrowing
//! a type, removing an enum value or requiring a field that was optional needs a new major file.
//! The shape of every version is recorded in `schemas/compat.lock.json`; `tests/schemas.rs`
//! fails when a schema no longer fits its recorded shape. Pure functions over JSON values.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What consumers of one schema version rely on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Dotted paths of required properties (nested ones under their parent).
    pub required: BTreeSet<String>,
    /// Dotted path → the JSON types allowed (`["string"]`, `["integer", "null"]`).
    pub types: BTreeMap<String, Vec<String>>,
    /// Dotted path → the allowed values, for properties with an `enum`.
    pub enums: BTreeMap<String, Vec<Value>>,
}

/// The shape of a schema.
pub fn shape(schema: &Value) -> Shape {
    let mut shape = Shape::default();
    walk(schema, "", &mut shape);
    shape
}

fn walk(schema: &Value, prefix: &str, shape: &mut Shape) {
    let Some(Value::Object(props)) = schema.get("properties") else {
        return;
    };
    if let Some(Value::Array(req)) = schema.get("required") {
        for r in req.iter().filter_map(Value::as_str) {
            shape.required.insert(join(prefix, r));
        }
    }
    for (name, prop) in props {
        let path = join(prefix, name);
        let types = match prop.get("type") {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => vec![],
        };
        shape.types.insert(path.clone(), types);
        if let Some(Value::Array(values)) = prop.get("enum") {
            shape.enums.insert(path.clone(), values.clone());
        }
        walk(prop, &path, shape);
        if let Some(items) = prop.get("items") {
            walk(items, &format!("{path}[]"), shape);
        }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Why `new` breaks consumers of `old` (empty: compatible).
pub fn breaking_changes(old: &Shape, new: &Shape) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, types) in &old.types {
        match new.types.get(path) {
            None => problems.push(format!("property `{path}` was removed")),
            Some(now) => {
                for t in types {
                    let widened = t == "integer" && now.iter().any(|n| n == "number");
                    if !now.contains(t) && !widened {
                        problems.push(format!("property `{path}` no longer accepts {t}"));
                    }
                }
            }
        }
    }
    for (path, values) in &old.enums {
        if let Some(now) = new.enums.get(path) {
            for v in values.iter().filter(|v| !now.contains(v)) {
                problems.push(format!("property `{path}` no longer allows {v}"));
            }
        }
    }
    for path in new.required.difference(&old.required) {
        // Required inside a new object or array: data without the new parent never had to fill it.
        let parent = path.rsplit_once('.').map(|(p, _)| p.trim_end_matches("[]"));
        if parent.is_some_and(|p| !old.types.contains_key(p)) {
            continue;
        }
        if old.types.contains_key(path) {
            problems.push(format!("property `{path}` became required"));
        } else {
            problems.push(format!(
                "new property `{path}` is required (a new property must be optional)"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"type": "object", "required": ["id"], "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": ["active", "leaver"]},
            "pay": {"type": "object", "properties": {"gross_pence": {"type": "integer"}}}
        }})
    }

    #[test]
    fn additive_changes_are_compatible() {
        let mut v = base();
        v["properties"]["email"] = json!({"type": "string"});
        v["properties"]["status"]["enum"] = json!(["active", "leaver", "suspended"]);
        v["properties"]["pay"]["properties"]["gross_pence"]["type"] = json!(["integer", "null"]);
        assert_eq!(
            breaking_changes(&shape(&base()), &shape(&v)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn breaking_changes_are_named() {
        let mut v = base();
        v["properties"].as_object_mut().unwrap().remove("status");
        v["properties"]["pay"]["properties"]["gross_pence"]["type"] = json!("string");
        v["required"] = json!(["id", "pay"]);
        v["properties"]["nino"] = json!({"type": "string"});
        v["required"] = json!(["id", "pay", "nino"]);
        let problems = breaking_changes(&shape(&base()), &shape(&v));
        assert!(
            problems.contains(&"property `status` was removed".to_string()),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"property `pay.gross_pence` no longer accepts integer".to_string())
        );
        assert!(problems.contains(&"property `pay` became required".to_string()));
        assert!(problems.contains(
            &"new property `nino` is required (a new property must be optional)".to_string()
        ));
        let mut lines = base();
        lines["properties"]["lines"] = json!({"type": "array", "items": {
            "type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}});
        assert_eq!(
            breaking_changes(&shape(&base()), &shape(&lines)),
            Vec::<String>::new(),
            "a required property inside a new optional array is compatible"
        );
        let mut narrowed = base();
        narrowed["properties"]["status"]["enum"] = json!(["active"]);
        assert_eq!(
            breaking_changes(&shape(&base()), &shape(&narrowed)),
            ["property `status` no longer allows \"leaver\""]
        );
    }
}
