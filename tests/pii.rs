//! No log line or failure view shows a personal value of the sample data. The personal values
//! are found the way the product masks them: columns feeding `x-pii` canonical fields.

mod common;

use std::collections::BTreeSet;

use common::Sandbox;
use council_bridge::canonical::Registry;
use council_bridge::config::Config;
use council_bridge::formats::Item;

/// Raw values of every column the mappings send to a personal-data field, less those that are
/// also part of public values (a town in a supplier's name is not a leak of an address).
fn personal_values(sandbox: &Sandbox) -> BTreeSet<String> {
    let config = Config::load(&sandbox.config()).unwrap();
    let registry = Registry::load(&config.schemas).unwrap();
    let mut values = BTreeSet::new();
    let mut public = Vec::new();
    for council in &config.councils {
        for feed in &council.feeds {
            let mapping = council_bridge::mapping::load(&feed.mapping, &registry).unwrap();
            for path in feed.drop.scan().unwrap().0 {
                let file = std::fs::File::open(&path).unwrap();
                let decoder =
                    council_bridge::formats::open("x", file, &mapping.source.format).unwrap();
                for item in decoder {
                    if let Ok(Item::Record(r)) = item {
                        let binding = mapping.bind_for(&r.header).unwrap();
                        for (i, v) in r.values.iter().enumerate() {
                            let v = v.trim();
                            if binding.is_public_column(i) {
                                public.push(v.to_string());
                            } else if v.chars().count() >= 4 {
                                values.insert(v.to_string());
                            }
                        }
                    }
                }
            }
        }
    }
    values.retain(|v| !public.iter().any(|p| p.contains(v.as_str())));
    values
}

#[test]
fn logs_and_failure_views_never_show_personal_values() {
    let sandbox = Sandbox::new();
    let personal = personal_values(&sandbox);
    assert!(
        personal.len() > 50,
        "the samples hold personal data to look for ({})",
        personal.len()
    );

    let mut seen = String::new();
    let run = sandbox
        .cli(None)
        .env("RUST_LOG", "debug")
        .arg("run")
        .output()
        .unwrap();
    seen.push_str(&String::from_utf8_lossy(&run.stdout));
    seen.push_str(&String::from_utf8_lossy(&run.stderr));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("row rejected"),
        "the logs were captured"
    );
    let list = sandbox
        .cli(None)
        .args(["failures", "list", "--json"])
        .output()
        .unwrap();
    seen.push_str(&String::from_utf8_lossy(&list.stdout));
    let failures: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(failures.as_array().unwrap().len(), 13);
    for f in failures.as_array().unwrap() {
        let id = f["id"].to_string();
        for args in [
            vec!["failures", "show", &id],
            vec!["failures", "show", &id, "--json"],
        ] {
            let show = sandbox.cli(None).args(&args).output().unwrap();
            assert!(show.status.success());
            seen.push_str(&String::from_utf8_lossy(&show.stdout));
            seen.push_str(&String::from_utf8_lossy(&show.stderr));
        }
    }
    let leaked: Vec<&String> = personal
        .iter()
        .filter(|v| seen.contains(v.as_str()))
        .collect();
    assert!(leaked.is_empty(), "personal values shown: {leaked:?}");
}
