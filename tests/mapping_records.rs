//! What a row makes, end to end into the store: records of several entities from one row
//! (`also:`), and the `duplicate_keys: reject` policy across chunks.

mod common;

use std::path::PathBuf;

use council_bridge::canonical::Registry;
use council_bridge::config::{DuplicateKeyPolicy, FeedPolicy};
use council_bridge::formats::Limits;
use council_bridge::mapping;
use council_bridge::pipeline;
use council_bridge::sources;
use council_bridge::store::Store;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn registry() -> Registry {
    Registry::load(&repo().join("schemas")).unwrap()
}

/// The records the store will publish, by entity (routing keys carry the entity).
fn pending(store: &Store) -> Vec<(String, Value)> {
    store
        .pending(100_000)
        .unwrap()
        .into_iter()
        .filter(|m| !m.message.routing_key.contains(".batch."))
        .map(|m| {
            (
                m.message.routing_key.clone(),
                serde_json::from_slice(&m.message.body).unwrap(),
            )
        })
        .collect()
}

#[test]
fn one_row_makes_a_person_and_an_employment_and_a_bad_value_fails_only_its_record() {
    let registry = registry();
    let dir = repo().join("tests/fixtures/multi_entity");
    let m = mapping::load(&dir.join("starters.yaml"), &registry).unwrap();
    assert_eq!(
        m.records().map(|r| r.entity.as_str()).collect::<Vec<_>>(),
        ["hr.person", "hr.employment"]
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = common::test_store(&tmp.path().join("s.db"));
    let raw = sources::describe(&dir.join("westmarch_starters_2026-11.csv")).unwrap();
    let report =
        pipeline::process_file(&registry, &store, "westmarch", "starters", &m, &raw, false)
            .unwrap();
    assert_eq!(report.status, "processed", "{report:?}");
    assert_eq!(
        (report.read, report.valid, report.rejected),
        (4, 2, 2),
        "rows: two whole, two with one bad record"
    );
    let counts: Vec<(&str, u64, u64)> = report
        .records
        .iter()
        .map(|(e, c)| (e.as_str(), c.valid, c.rejected))
        .collect();
    assert_eq!(
        counts,
        [("hr.employment", 3, 1), ("hr.person", 3, 1)],
        "{report:?}"
    );
    assert_eq!(report.new_messages, 6);
    let records = pending(&store);
    let of = |entity: &str| -> Vec<String> {
        records
            .iter()
            .filter(|(rk, _)| rk.contains(entity))
            .map(|(_, b)| {
                b.get("employment_id")
                    .or_else(|| b.get("person_id"))
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(of("hr.person."), ["P1001", "P1002", "P1004"]);
    assert_eq!(of("hr.employment."), ["A1001-1", "A1002-1", "A1003-1"]);
    let employment = &records
        .iter()
        .find(|(_, b)| b["employment_id"] == "A1002-1")
        .unwrap()
        .1;
    assert_eq!(
        (
            employment["person_id"].as_str(),
            employment["contract_type"].as_str()
        ),
        (Some("P1002"), Some("fixed_term"))
    );

    // Each failure says which entity's record failed, and replay makes only that record.
    let failures = store.failures(Some("westmarch"), false, 100).unwrap();
    let named: Vec<(Option<i64>, &str, &str, &str)> = failures
        .iter()
        .map(|f| {
            (
                f.line,
                f.errors[0]["entity"].as_str().unwrap(),
                f.errors[0]["field"].as_str().unwrap(),
                f.errors[0]["rule"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            (Some(4), "hr.person", "surname", "required"),
            (Some(5), "hr.employment", "start_date", "date"),
        ]
    );
    let summary = store
        .last_accepted_summary("westmarch", "starters")
        .unwrap()
        .unwrap();
    assert_eq!(
        summary["records"]["hr.employment"],
        serde_json::json!({"valid": 3, "rejected": 1}),
        "the batch report counts each entity's records"
    );
}

#[test]
fn the_golden_tests_of_a_mapping_with_several_entities_pass_in_order() {
    let out = assert_cmd::Command::cargo_bin("council-bridge")
        .unwrap()
        .current_dir(repo())
        .env_remove("AMQP_URL")
        .env_remove("COUNCIL_BRIDGE_STORE")
        .args([
            "--config",
            "tests/fixtures/real/council-bridge.yaml",
            "mapping",
            "test",
            "tests/fixtures/multi_entity",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.trim_end().ends_with("1 passed, 0 failed"), "{text}");

    // An expectation of the wrong entity is reported as such.
    let tmp = tempfile::tempdir().unwrap();
    let dir = repo().join("tests/fixtures/multi_entity");
    std::fs::copy(dir.join("starters.yaml"), tmp.path().join("starters.yaml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("starters.tests.yaml"))
        .unwrap()
        .replacen(
            "      - entity: hr.employment\n        record:",
            "      - entity: hr.person\n        record:",
            1,
        );
    std::fs::write(tmp.path().join("starters.tests.yaml"), tests).unwrap();
    let out = assert_cmd::Command::cargo_bin("council-bridge")
        .unwrap()
        .current_dir(repo())
        .env_remove("AMQP_URL")
        .env_remove("COUNCIL_BRIDGE_STORE")
        .args([
            "--config",
            "tests/fixtures/real/council-bridge.yaml",
            "mapping",
            "test",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("expected a `hr.person` record, but this one is `hr.employment`"),
        "{text}"
    );
}

#[test]
fn duplicate_keys_reject_takes_back_every_record_of_the_key_even_from_an_earlier_chunk() {
    let registry = registry();
    let text = "mapping: people
version: 1
entity: hr.person
source:
  format: csv
key: [person_id]
fields:
  person_id: { from: Ref }
  forenames: { from: Forenames, required: true }
  surname: { from: Surname, required: true }
";
    let m = mapping::compile_str("people.yaml", text, &registry).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // 1,500 rows: P0001 on the first data line and again (different name) after the first
    // chunk of 1,000 was written; P0002 twice with the same content (one message, kept).
    let mut csv = String::from("Ref,Forenames,Surname\n");
    for i in 1..=1500 {
        let (reference, surname) = match i {
            1200 => ("P0001".to_string(), "Other".to_string()),
            1300 => ("P0002".to_string(), "Person2".to_string()),
            i => (format!("P{i:04}"), format!("Person{i}")),
        };
        csv.push_str(&format!("{reference},Sam,{surname}\n"));
    }
    let file = tmp.path().join("people.csv");
    std::fs::write(&file, csv).unwrap();
    let store = common::test_store(&tmp.path().join("s.db"));
    let raw = sources::describe(&file).unwrap();
    let policy = FeedPolicy {
        duplicate_keys: DuplicateKeyPolicy::Reject,
        ..FeedPolicy::default()
    };
    let report = pipeline::process_file_with(
        &registry,
        &store,
        "westmarch",
        "people",
        &m,
        &raw,
        false,
        &policy,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        report.status, "processed",
        "the rest of the batch publishes"
    );
    assert_eq!(
        (report.read, report.valid, report.rejected),
        (1500, 1498, 2)
    );
    let keys: Vec<(&str, &[u64], bool)> = report
        .duplicate_keys
        .iter()
        .map(|d| (d.key.as_str(), d.lines.as_slice(), d.same_content))
        .collect();
    assert_eq!(
        keys,
        [
            ("P0001", &[2, 1201][..], false),
            ("P0002", &[3, 1301][..], true)
        ]
    );
    let refs: Vec<String> = pending(&store)
        .into_iter()
        .map(|(_, b)| b["person_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        refs.len(),
        1497,
        "1,500 rows less P0001 twice and P0002's repeat"
    );
    assert!(!refs.iter().any(|r| r == "P0001"));
    assert_eq!(refs.iter().filter(|r| *r == "P0002").count(), 1);
    assert_eq!(report.new_messages, 1497);
    let failures = store.failures(Some("westmarch"), false, 100).unwrap();
    let lines: Vec<Option<i64>> = failures.iter().map(|f| f.line).collect();
    assert_eq!(lines, [Some(2), Some(1201)]);
    let message = failures[0].errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("also on line(s) 1201 ") && message.contains("duplicate_keys: reject"),
        "{message}"
    );
    assert_eq!(failures[0].errors[0]["rule"], "duplicate_key");
    assert!(
        failures.iter().all(|f| f.raw_record.is_some()),
        "the raw rows are kept for a fix and replay"
    );
}

#[test]
fn an_as_at_date_from_the_feeds_configuration_or_the_day_received_with_its_provenance() {
    let registry = registry();
    let text = "mapping: posts
version: 1
entity: hr.post
source:
  format: csv
key: [post_reference]
fields:
  post_reference: { from: Ref }
  job_title: { from: Title }
  effective_date: { from: $as_at, transforms: [{ date: yyyy-mm-dd }], required: true }
  as_at_source: { from: $as_at_source }
";
    let m = mapping::compile_str("posts.yaml", text, &registry).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("posts.csv");
    std::fs::write(&file, "Ref,Title\nPO1,Chief Executive\n").unwrap();
    let raw = sources::describe(&file).unwrap();
    let run = |as_at: Option<council_bridge::config::AsAt>, feed: &str| {
        let store = common::test_store(&tmp.path().join(format!("{feed}.db")));
        let policy = FeedPolicy {
            as_at,
            ..FeedPolicy::default()
        };
        let report = pipeline::process_file_with(
            &registry,
            &store,
            "westmarch",
            feed,
            &m,
            &raw,
            false,
            &policy,
            &Limits::default(),
        )
        .unwrap();
        (report, pending(&store), store)
    };
    let configured: council_bridge::config::AsAt = "2024-03-31".to_string().try_into().unwrap();
    let (_, records, _) = run(Some(configured), "configured");
    assert_eq!(records[0].1["effective_date"], "2024-03-31");
    assert_eq!(records[0].1["as_at_source"], "configuration");

    let (_, records, _) = run(Some(council_bridge::config::AsAt::Received), "received");
    let written: chrono::DateTime<chrono::Utc> =
        std::fs::metadata(&file).unwrap().modified().unwrap().into();
    assert_eq!(
        records[0].1["effective_date"],
        written.date_naive().format("%Y-%m-%d").to_string()
    );
    assert_eq!(records[0].1["as_at_source"], "received");

    // A feed that supplies none: the date is not invented, the record fails naming the field.
    let (report, records, store) = run(None, "none");
    assert_eq!((report.valid, report.rejected, records.len()), (0, 1, 0));
    let failure = &store.failures(None, false, 10).unwrap()[0];
    assert_eq!(failure.errors[0]["field"], "effective_date");
    assert_eq!(failure.errors[0]["rule"], "required");

    let bad: Result<council_bridge::config::AsAt, String> = "31/03/2024".to_string().try_into();
    assert!(
        bad.unwrap_err()
            .contains("a date (`2024-03-31`) or `received`")
    );
}

#[test]
fn a_replayed_record_keeps_the_as_at_date_its_batch_was_read_with() {
    let registry = registry();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let council = root.join("mappings/westmarch");
    std::fs::create_dir_all(council.join("in")).unwrap();
    std::fs::write(
        root.join("council-bridge.yaml"),
        format!(
            "store: store.db\nmappings: mappings\nschemas: {}\n",
            repo().join("schemas").display()
        ),
    )
    .unwrap();
    std::fs::write(
        council.join("council.yaml"),
        "council: westmarch\nname: Westmarch District Council\nfeeds:\n  posts:\n    mapping: posts.yaml\n    input: in/*.csv\n    as_at: 2024-03-31\n",
    )
    .unwrap();
    // The grade code CX is unknown to the first version of the mapping: the row fails.
    let mapping_text = |codes: &str| {
        format!(
            "mapping: westmarch-posts
version: 1
entity: hr.post
source:
  format: csv
key: [post_reference]
fields:
  post_reference: {{ from: Ref }}
  job_title: {{ from: Title, transforms: [{{ map: {{ values: {{ {codes} }} }} }}] }}
  effective_date: {{ from: $as_at, transforms: [{{ date: yyyy-mm-dd }}], required: true }}
  as_at_source: {{ from: $as_at_source }}
"
        )
    };
    std::fs::write(
        council.join("posts.yaml"),
        mapping_text("CE: Chief Executive"),
    )
    .unwrap();
    let file = council.join("in/posts.csv");
    std::fs::write(&file, "Ref,Title\nPO1,CX\n").unwrap();
    let config = council_bridge::config::Config::load(&root.join("council-bridge.yaml")).unwrap();
    let feed = &config.councils[0].feeds[0];
    let store = common::test_store(&root.join("store.db"));
    let m = mapping::load(&feed.mapping, &registry).unwrap();
    let report = pipeline::process_file_with(
        &registry,
        &store,
        "westmarch",
        "posts",
        &m,
        &sources::describe(&file).unwrap(),
        false,
        &feed.policy,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!((report.valid, report.rejected), (0, 1), "{report:?}");
    let failure = store.failures(None, false, 10).unwrap().remove(0);

    // The mapping is fixed; the replay maps the kept row with the batch's as-at date.
    std::fs::write(
        council.join("posts.yaml"),
        mapping_text("CE: Chief Executive, CX: Chief Executive"),
    )
    .unwrap();
    let outcome =
        pipeline::replay_failure(&config, &registry, &store, failure.id, "test", "fixed").unwrap();
    assert!(
        matches!(outcome, pipeline::ReplayOutcome::Queued { .. }),
        "{outcome:?}"
    );
    let records = pending(&store);
    let post = &records
        .iter()
        .find(|(rk, _)| rk.contains("hr.post."))
        .unwrap()
        .1;
    assert_eq!(
        (
            post["effective_date"].as_str(),
            post["as_at_source"].as_str()
        ),
        (Some("2024-03-31"), Some("configuration"))
    );
}
