//! The canonical model: entity schemas from `schemas/`, validation, and the message envelope.
//!
//! The [`Registry`] loads every `schemas/<domain>/<entity>.v<N>.json` once, compiles a
//! JSON Schema 2020-12 validator for each (with the UK identifier formats), and answers the
//! mapping compiler's questions through [`crate::mapping::SchemaLookup`]. Canonical does no I/O
//! after [`Registry::load`]; it never talks to the store or the broker.

pub mod compat;
pub mod docs;
pub mod envelope;
pub mod modulus;
pub mod uk_formats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::mapping::{FieldError, JsonType, SchemaLookup, TargetField, TargetSchema};
use crate::pii::PiiClass;

/// A schema folder that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file is not a usable schema.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One canonical entity at its newest version.
#[derive(Debug)]
pub struct Entity {
    /// `<domain>.<entity>`, e.g. `payroll.pay_result`.
    pub name: String,
    /// `payroll`.
    pub domain: String,
    /// `pay_result`.
    pub short_name: String,
    /// Major version (the `v<N>` of the file name).
    pub version: u32,
    /// The schema's `$id`, used as the CloudEvents `dataschema`.
    pub id: String,
    /// The schema file.
    pub path: PathBuf,
    /// The schema itself.
    pub schema: Value,
    modulus: Option<std::sync::Arc<modulus::ModulusTable>>,
    fields: BTreeMap<String, TargetField>,
    required: Vec<String>,
    /// Arrays of objects (dotted path) → the fields and required fields of one element.
    items: BTreeMap<String, ItemFields>,
    validator: jsonschema::Validator,
}

/// The fields of one element of an array of objects.
#[derive(Debug, Default)]
struct ItemFields {
    fields: BTreeMap<String, TargetField>,
    required: Vec<String>,
}

impl Entity {
    /// Validates a canonical record. Errors name the field and the rule and never carry the
    /// value (the validator's messages are masked).
    pub fn validate(&self, record: &Value) -> Result<(), Vec<FieldError>> {
        let errors: Vec<FieldError> = self
            .validator
            .iter_errors(record)
            .flat_map(|e| {
                let pointer = e.instance_path().to_string();
                let field = pointer.trim_start_matches('/').replace('/', ".");
                // "Not valid under any of the schemas listed in the anyOf keyword" says nothing
                // an officer can act on: name the "at least one of" groups the record misses.
                if field.is_empty()
                    && matches!(
                        e.kind(),
                        jsonschema::error::ValidationErrorKind::AnyOf { .. }
                    )
                {
                    let missing = missing_any_of(&self.schema, record);
                    if !missing.is_empty() {
                        return missing;
                    }
                }
                // A missing required property: name it (the caret of a preview points at it).
                if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind()
                    && let Some(name) = property.as_str()
                {
                    let path = if field.is_empty() {
                        name.to_string()
                    } else {
                        format!("{field}.{name}")
                    };
                    return vec![FieldError {
                        field: path,
                        column: None,
                        rule: "required".into(),
                        message: "is required but the record has no value for it".into(),
                        value: None,
                    }];
                }
                vec![FieldError {
                    field: if field.is_empty() {
                        "(record)".into()
                    } else {
                        field
                    },
                    column: None,
                    rule: "schema".into(),
                    message: e.masked().to_string(),
                    value: None,
                }]
            })
            .collect();
        let mut errors = errors;
        if let Some(table) = &self.modulus {
            modulus_errors(table, record, "", &mut errors);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The personal-data class of a field (dotted path); nested fields inherit their parent's.
    pub fn pii(&self, path: &str) -> Option<PiiClass> {
        self.fields.get(path).and_then(|f| f.pii)
    }
}

/// The "at least one of" groups (`anyOf` of `required` lists, at the top or under `allOf`) of
/// which `record` has no field, as errors naming the first field and the whole group.
fn missing_any_of(schema: &Value, record: &Value) -> Vec<FieldError> {
    any_of_groups(schema)
        .into_iter()
        .filter(|g| !g.iter().any(|f| record.get(f).is_some()))
        .map(|g| FieldError {
            field: g[0].clone(),
            column: None,
            rule: "required".into(),
            message: format!("needs one of {}", g.join(", ")),
            value: None,
        })
        .collect()
}

/// The "at least one of" groups of a schema: `anyOf` lists of single `required` fields, at the
/// top or under `allOf`.
fn any_of_groups(schema: &Value) -> Vec<Vec<String>> {
    let group = |any_of: &Value| -> Option<Vec<String>> {
        any_of
            .as_array()?
            .iter()
            .map(|alt| match alt.get("required")?.as_array()?.as_slice() {
                [one] => one.as_str().map(str::to_string),
                _ => None,
            })
            .collect()
    };
    let mut groups: Vec<Vec<String>> = schema.get("anyOf").and_then(group).into_iter().collect();
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        groups.extend(all.iter().filter_map(|p| p.get("anyOf").and_then(group)));
    }
    groups
}

/// Checks every object holding both `sort_code` and `account_number` (the canonical names of
/// bank details) against the modulus table; a sort code the table does not know passes.
fn modulus_errors(
    table: &modulus::ModulusTable,
    value: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let Value::Object(map) = value else { return };
    if let (Some(Value::String(sort)), Some(Value::String(account))) =
        (map.get("sort_code"), map.get("account_number"))
        && table.check(sort, account) == modulus::ModulusResult::Invalid
    {
        errors.push(FieldError {
            field: if path.is_empty() {
                "account_number".into()
            } else {
                format!("{path}.account_number")
            },
            column: None,
            rule: "modulus".into(),
            message: "the account number fails the Vocalink modulus check for its sort code".into(),
            value: None,
        });
    }
    for (k, v) in map {
        if v.is_object() {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            modulus_errors(table, v, &p, errors);
        }
    }
}

impl TargetSchema for Entity {
    fn field(&self, path: &str) -> Option<TargetField> {
        self.fields.get(path).cloned()
    }
    fn fields(&self) -> Vec<String> {
        self.fields.keys().cloned().collect()
    }
    fn required(&self) -> Vec<String> {
        self.required.clone()
    }
    fn one_of_groups(&self) -> Vec<Vec<String>> {
        any_of_groups(&self.schema)
    }
    fn item_field(&self, array: &str, path: &str) -> Option<TargetField> {
        self.items.get(array)?.fields.get(path).cloned()
    }
    fn item_fields(&self, array: &str) -> Option<Vec<String>> {
        Some(self.items.get(array)?.fields.keys().cloned().collect())
    }
    fn item_required(&self, array: &str) -> Vec<String> {
        self.items
            .get(array)
            .map(|i| i.required.clone())
            .unwrap_or_default()
    }
}

/// Every canonical entity, loaded once.
#[derive(Debug, Default)]
pub struct Registry {
    entities: BTreeMap<String, Entity>,
}

impl Registry {
    /// Loads every `<domain>/<entity>.v<N>.json` under `dir`, keeping each entity's newest
    /// version for validation.
    pub fn load(dir: &Path) -> Result<Self, SchemaError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SchemaError::Io { path, source }
        };
        let mut registry = Registry::default();
        let mut domains: Vec<_> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .collect::<Result<_, _>>()
            .map_err(io(dir))?;
        domains.sort_by_key(|d| d.path());
        for domain in domains {
            if !domain.path().is_dir() {
                continue;
            }
            let mut files: Vec<_> = std::fs::read_dir(domain.path())
                .map_err(io(&domain.path()))?
                .collect::<Result<_, _>>()
                .map_err(io(&domain.path()))?;
            files.sort_by_key(|f| f.path());
            for f in files {
                let path = f.path();
                if path.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                let entity = load_entity(&path, &domain.file_name().to_string_lossy())?;
                let newer = registry
                    .entities
                    .get(&entity.name)
                    .is_none_or(|old| old.version < entity.version);
                if newer {
                    registry.entities.insert(entity.name.clone(), entity);
                }
            }
        }
        Ok(registry)
    }

    /// Checks bank details (`sort_code` + `account_number`) of every entity against Vocalink's
    /// modulus table, in addition to the schemas.
    pub fn with_modulus(mut self, table: modulus::ModulusTable) -> Self {
        let table = std::sync::Arc::new(table);
        for e in self.entities.values_mut() {
            e.modulus = Some(table.clone());
        }
        self
    }

    /// An entity by name.
    pub fn get(&self, name: &str) -> Option<&Entity> {
        self.entities.get(name)
    }

    /// Every entity, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Entity> {
        self.entities.values()
    }
}

impl SchemaLookup for Registry {
    fn target(&self, entity: &str) -> Option<&dyn TargetSchema> {
        self.entities.get(entity).map(|e| e as &dyn TargetSchema)
    }
    fn entities(&self) -> Vec<String> {
        self.entities.keys().cloned().collect()
    }
}

fn load_entity(path: &Path, domain: &str) -> Result<Entity, SchemaError> {
    let invalid = |message: String| SchemaError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let (short, version) = stem
        .rsplit_once(".v")
        .and_then(|(s, v)| Some((s, v.parse::<u32>().ok()?)))
        .ok_or_else(|| invalid("schema files are named <entity>.v<N>.json".into()))?;
    let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let schema: Value =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let id = schema
        .get("$id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("has no `$id`".into()))?
        .to_string();
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .with_format("uk-nino", uk_formats::is_nino)
        .with_format("uk-sort-code", uk_formats::is_sort_code)
        .with_format("uk-postcode", uk_formats::is_uk_postcode)
        .with_format("uk-vat-number", uk_formats::is_vat_number)
        .with_format("uk-company-number", uk_formats::is_company_number)
        .with_format("uk-tax-code", uk_formats::is_tax_code)
        .with_format("uk-paye-reference", uk_formats::is_paye_reference)
        .build(&schema)
        .map_err(|e| invalid(format!("not a valid JSON Schema: {e}")))?;
    let mut fields = BTreeMap::new();
    let mut required = Vec::new();
    let mut items = BTreeMap::new();
    collect_fields(
        &schema,
        "",
        None,
        true,
        &mut fields,
        &mut required,
        &mut items,
    );
    Ok(Entity {
        name: format!("{domain}.{short}"),
        domain: domain.to_string(),
        short_name: short.to_string(),
        version,
        id,
        path: path.to_path_buf(),
        schema,
        modulus: None,
        fields,
        required,
        items,
        validator,
    })
}

/// Every schema file under `dir` (all versions), as `(<domain>/<file name>, schema)`, sorted.
/// For the compatibility check, which compares each version with its recorded shape.
pub fn schema_files(dir: &Path) -> Result<Vec<(String, Value)>, SchemaError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SchemaError::Io { path, source }
    };
    let mut out = Vec::new();
    for domain in std::fs::read_dir(dir).map_err(io(dir))? {
        let domain = domain.map_err(io(dir))?.path();
        if !domain.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&domain).map_err(io(&domain))? {
            let path = f.map_err(io(&domain))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let schema = serde_json::from_str(&text).map_err(|e| SchemaError::Invalid {
                path: path.clone(),
                message: format!("not JSON: {e}"),
            })?;
            let name = format!(
                "{}/{}",
                domain.file_name().unwrap_or_default().to_string_lossy(),
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            out.push((name, schema));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn json_types(schema: &Value) -> Vec<JsonType> {
    let one = |s: &str| match s {
        "string" => Some(JsonType::String),
        "integer" => Some(JsonType::Integer),
        "number" => Some(JsonType::Number),
        "boolean" => Some(JsonType::Boolean),
        "object" => Some(JsonType::Object),
        "array" => Some(JsonType::Array),
        "null" => Some(JsonType::Null),
        _ => None,
    };
    match schema.get("type") {
        Some(Value::String(s)) => one(s).into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(|t| t.as_str().and_then(one)).collect(),
        _ => {
            // `enum`/`const` without `type`: take the types of the allowed values.
            let mut types = vec![
                JsonType::String,
                JsonType::Integer,
                JsonType::Number,
                JsonType::Boolean,
            ];
            if let Some(Value::Array(values)) = schema.get("enum") {
                types.retain(|t| {
                    values.iter().any(|v| match t {
                        JsonType::String => v.is_string(),
                        JsonType::Integer => v.is_i64() || v.is_u64(),
                        JsonType::Number => v.is_number(),
                        JsonType::Boolean => v.is_boolean(),
                        _ => false,
                    })
                });
            }
            types
        }
    }
}

fn collect_fields(
    schema: &Value,
    prefix: &str,
    inherited: Option<PiiClass>,
    parent_required: bool,
    fields: &mut BTreeMap<String, TargetField>,
    required: &mut Vec<String>,
    items: &mut BTreeMap<String, ItemFields>,
) {
    let Some(Value::Object(props)) = schema.get("properties") else {
        return;
    };
    let req: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, prop) in props {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let pii = prop
            .get("x-pii")
            .and_then(Value::as_str)
            .and_then(PiiClass::parse)
            .or(inherited);
        let is_required = parent_required && req.contains(&name.as_str());
        if is_required {
            required.push(path.clone());
        }
        let types = json_types(prop);
        fields.insert(
            path.clone(),
            TargetField {
                types: types.clone(),
                pii,
            },
        );
        if types.contains(&JsonType::Object) {
            collect_fields(prop, &path, pii, is_required, fields, required, items);
        }
        // An array of objects: its element's fields, for `each:` (elements of arrays inside
        // elements are not mapped).
        if types.contains(&JsonType::Array)
            && let Some(element) = prop.get("items")
            && json_types(element).contains(&JsonType::Object)
        {
            let element_pii = element
                .get("x-pii")
                .and_then(Value::as_str)
                .and_then(PiiClass::parse)
                .or(pii);
            let mut item = ItemFields::default();
            collect_fields(
                element,
                "",
                element_pii,
                true,
                &mut item.fields,
                &mut item.required,
                &mut BTreeMap::new(),
            );
            items.insert(path.clone(), item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap()
    }

    #[test]
    fn loads_the_bundled_schemas_with_pii_classes() {
        let r = registry();
        let payroll = r.get("payroll.pay_result").expect("payroll schema");
        assert_eq!(payroll.domain, "payroll");
        assert!(payroll.required().contains(&"employee_number".to_string()));
        assert!(payroll.pii("employee_number").is_none());
        let hr = r.get("hr.employee").expect("hr schema");
        assert_eq!(hr.pii("nino"), Some(PiiClass::Personal));
        assert!(
            hr.pii("address.postcode").is_some(),
            "nested fields inherit or declare x-pii"
        );
    }

    #[test]
    fn bank_details_are_modulus_checked_when_a_table_is_configured() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/modulus");
        let table = modulus::ModulusTable::load(
            &fixtures.join("valacdos.txt"),
            Some(&fixtures.join("scsubtab.txt")),
        )
        .unwrap();
        let r = registry().with_modulus(table);
        let payroll = r.get("payroll.pay_result").unwrap();
        let mut example = payroll.schema["examples"][0].clone();
        example["bank"] = serde_json::json!({"sort_code": "089999", "account_number": "66374958"});
        payroll
            .validate(&example)
            .expect("Vocalink test vector #1 passes");
        example["bank"]["account_number"] = Value::String("66374959".into());
        let errors = payroll.validate(&example).unwrap_err();
        assert_eq!(
            (errors[0].field.as_str(), errors[0].rule.as_str()),
            ("bank.account_number", "modulus")
        );
        example["bank"] = serde_json::json!({"sort_code": "401276", "account_number": "12345678"});
        payroll
            .validate(&example)
            .expect("a sort code the table does not know passes");
    }

    #[test]
    fn validation_names_the_field_and_hides_the_value() {
        let r = registry();
        let hr = r.get("hr.employee").unwrap();
        let mut example = hr_example(hr);
        example["nino"] = Value::String("QQ123456C".into());
        let errors = hr.validate(&example).unwrap_err();
        assert_eq!(errors[0].field, "nino");
        assert!(
            !errors[0].message.contains("QQ123456C"),
            "{}",
            errors[0].message
        );
    }

    fn hr_example(hr: &Entity) -> Value {
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(&hr.path).unwrap()).unwrap();
        let example = schema["examples"][0].clone();
        hr.validate(&example)
            .expect("the schema's own example is valid");
        example
    }
}
