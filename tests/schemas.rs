//! The canonical model's contract: its reference pages match the schemas, and no published
//! schema version changes incompatibly (docs/versioning.md).

use std::collections::BTreeMap;
use std::path::Path;

use council_bridge::canonical::{Registry, compat, docs, schema_files};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn reference_pages_match_the_schemas() {
    let registry = Registry::load(&root().join("schemas")).unwrap();
    let dir = root().join("docs/canonical");
    let mut stale = Vec::new();
    for e in registry.iter() {
        let path = dir.join(docs::page_name(e));
        if std::fs::read_to_string(&path).ok().as_deref() != Some(docs::render(e).as_str()) {
            stale.push(path.display().to_string());
        }
    }
    if std::fs::read_to_string(dir.join("README.md"))
        .ok()
        .as_deref()
        != Some(docs::render_index(registry.iter()).as_str())
    {
        stale.push("docs/canonical/README.md".into());
    }
    let pages = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        pages,
        registry.iter().count() + 1,
        "one page per entity and the index, no leftovers"
    );
    assert!(
        stale.is_empty(),
        "out of date (run `council-bridge schema docs`): {stale:?}"
    );
}

#[test]
fn no_schema_version_changed_incompatibly() {
    let lock: BTreeMap<String, compat::Shape> = serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/compat.lock.json")).unwrap(),
    )
    .unwrap();
    let files: BTreeMap<String, serde_json::Value> = schema_files(&root().join("schemas"))
        .unwrap()
        .into_iter()
        .collect();
    let mut problems = Vec::new();
    for (name, recorded) in &lock {
        match files.get(name) {
            None => problems.push(format!(
                "{name}: a published version was deleted (keep it while consumers move)"
            )),
            Some(schema) => problems.extend(
                compat::breaking_changes(recorded, &compat::shape(schema))
                    .into_iter()
                    .map(|p| format!("{name}: {p}")),
            ),
        }
    }
    assert!(
        problems.is_empty(),
        "breaking changes need a new major version file (<entity>.v<N+1>.json):\n{}",
        problems.join("\n")
    );
    let unrecorded: Vec<&String> = files
        .iter()
        .filter(|(name, schema)| lock.get(*name) != Some(&compat::shape(schema)))
        .map(|(name, _)| name)
        .collect();
    assert!(
        unrecorded.is_empty(),
        "additive changes not recorded yet (run `council-bridge schema lock`): {unrecorded:?}"
    );
}

#[test]
fn every_property_is_described_and_every_schema_has_an_id_and_a_valid_example() {
    let registry = Registry::load(&root().join("schemas")).unwrap();
    for e in registry.iter() {
        let mut missing = Vec::new();
        fn walk(v: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
            if let Some(serde_json::Value::Object(props)) = v.get("properties") {
                for (k, p) in props {
                    let path = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if p.get("description")
                        .and_then(|d| d.as_str())
                        .is_none_or(str::is_empty)
                    {
                        missing.push(path.clone());
                    }
                    walk(p, &path, missing);
                    if let Some(items) = p.get("items") {
                        walk(items, &path, missing);
                    }
                }
            }
        }
        walk(&e.schema, "", &mut missing);
        assert!(
            missing.is_empty(),
            "{}: properties without a description: {missing:?}",
            e.name
        );
        let examples = e
            .schema
            .get("examples")
            .and_then(|x| x.as_array())
            .unwrap_or_else(|| panic!("{} has no examples", e.name));
        for x in examples {
            e.validate(x)
                .unwrap_or_else(|errs| panic!("{}: its example is invalid: {errs:?}", e.name));
        }
    }
}

#[test]
fn an_any_of_failure_names_the_group_the_record_misses() {
    let registry = Registry::load(&root().join("schemas")).unwrap();
    let payment = registry.get("finance.supplier_payment").unwrap();
    let errors = payment
        .validate(&serde_json::json!({
            "source_reference": "f.csv:2",
            "supplier_name": "Acme Ltd",
            "amount_pence": 100,
            "currency": "GBP"
        }))
        .unwrap_err();
    let said: Vec<(String, String, String)> = errors
        .iter()
        .map(|e| (e.field.clone(), e.rule.clone(), e.message.clone()))
        .collect();
    assert_eq!(
        said,
        [(
            "payment_date".to_string(),
            "required".to_string(),
            "needs one of payment_date, payment_period".to_string()
        )]
    );
    // A period instead of a day passes; so does a withheld payee with its reason.
    assert!(
        payment
            .validate(&serde_json::json!({
                "source_reference": "f.csv:2",
                "null_reasons": { "supplier_name": "redacted" },
                "payment_period": { "start": "2015-02-01", "end": "2015-02-28", "precision": "month" },
                "amount_pence": 100,
                "currency": "GBP"
            }))
            .is_ok()
    );
}

#[test]
fn a_spend_aggregate_states_its_period_not_a_day() {
    let registry = Registry::load(&root().join("schemas")).unwrap();
    let agg = registry.get("finance.spend_aggregate").unwrap();
    for example in agg.schema["examples"].as_array().unwrap() {
        agg.validate(example).unwrap();
    }
    let errors = agg
        .validate(&serde_json::json!({
            "supplier_name": "Acme Ltd",
            "amount_pence": 100,
            "payment_date": "2019-03-31",
            "currency": "GBP"
        }))
        .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.field == "period" && e.rule == "required"),
        "{errors:?}"
    );
}
