//! Delta mode and batch policies, end to end: Westmarch's HR employment feed read as nightly
//! snapshots into a real SQLite store and published to a real RabbitMQ; the mass-delete,
//! reject-threshold and drift holds, their release and discard; run reports.

mod common;

use std::collections::BTreeSet;

use common::{Consumer, Received, Sandbox, broker_url, stdout};

const HEADER: &str = "Assignment;Person Ref;Payroll No;Job Title;Start;End;Status;Contract;FTE;Hours;Grade;Post;Line Manager Assignment;Org Unit;Cost Centre;Primary";

/// Westmarch's employment rows (the sample export), by column name.
#[derive(Clone)]
struct Rows {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Rows {
    fn sample() -> Self {
        let text = std::fs::read_to_string(
            common::repo().join("mappings/westmarch/samples/employments/assignments_20261101.csv"),
        )
        .unwrap();
        let mut lines = text.lines();
        let header: Vec<String> = lines
            .next()
            .unwrap()
            .split(';')
            .map(str::to_string)
            .collect();
        assert_eq!(header.join(";"), HEADER);
        let rows = lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split(';').map(str::to_string).collect())
            .collect();
        Rows { header, rows }
    }

    /// The sample plus `n` more permanent staff, E2000NN-1.
    fn with_staff(mut self, n: usize) -> Self {
        for i in 1..=n {
            let id = format!("2000{i:02}");
            self.rows.push(
                [
                    &format!("E{id}-1"),
                    &format!("P{id}"),
                    id.as_str(),
                    "Customer Services Adviser",
                    "01/04/2019",
                    "",
                    "A",
                    "PERM",
                    "1",
                    "37",
                    "G4",
                    "CUS-0100",
                    "E100231-1",
                    "WDC-CUS",
                    "C6100",
                    "Y",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            );
        }
        self
    }

    fn col(&self, name: &str) -> usize {
        self.header.iter().position(|h| h == name).unwrap()
    }

    fn set(mut self, assignment: &str, column: &str, value: &str) -> Self {
        let c = self.col(column);
        let row = self
            .rows
            .iter_mut()
            .find(|r| r[0] == assignment)
            .unwrap_or_else(|| panic!("no row {assignment}"));
        row[c] = value.to_string();
        self
    }

    fn remove(mut self, assignment: &str) -> Self {
        let before = self.rows.len();
        self.rows.retain(|r| r[0] != assignment);
        assert_eq!(self.rows.len(), before - 1);
        self
    }

    fn add(mut self, values: &[&str]) -> Self {
        assert_eq!(values.len(), self.header.len());
        self.rows
            .push(values.iter().map(|s| s.to_string()).collect());
        self
    }

    fn rename(mut self, from: &str, to: &str) -> Self {
        let c = self.col(from);
        self.header[c] = to.to_string();
        self
    }

    fn swap_columns(mut self, a: &str, b: &str) -> Self {
        let (i, j) = (self.col(a), self.col(b));
        self.header.swap(i, j);
        for r in &mut self.rows {
            r.swap(i, j);
        }
        self
    }

    /// Adds an unmapped column at the end.
    fn extra_column(mut self, name: &str, value: &str) -> Self {
        self.header.push(name.to_string());
        for r in &mut self.rows {
            r.push(value.to_string());
        }
        self
    }

    fn csv(&self) -> String {
        let mut out = self.header.join(";") + "\r\n";
        for r in &self.rows {
            out += &(r.join(";") + "\r\n");
        }
        out
    }
}

/// A sandbox whose Westmarch council has only the employments feed, read from a drop folder
/// (archived once read) with the given extra feed keys.
fn sandbox(feed_keys: &str) -> Sandbox {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("mappings/westmarch/council.yaml"),
        format!(
            "council: westmarch\nname: Westmarch District Council\nfeeds:\n  employments:\n    mapping: employment.yaml\n    input: drop/employments/*.csv\n    settle_seconds: 0\n    archive: archive/employments\n{feed_keys}"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(sandbox.path("mappings/westmarch/drop/employments")).unwrap();
    sandbox
}

fn drop_file(sandbox: &Sandbox, name: &str, rows: &Rows) {
    std::fs::write(
        sandbox.path(&format!("mappings/westmarch/drop/employments/{name}")),
        rows.csv(),
    )
    .unwrap();
}

/// `run` of the employments feed; returns (exit code, stdout).
fn run(sandbox: &Sandbox, broker: bool) -> (i32, String) {
    let url = broker_url();
    let out = sandbox
        .cli(broker.then_some(url.as_str()))
        .args(["run", "--council", "westmarch", "--feed", "employments"])
        .output()
        .unwrap();
    let text = stdout(&out);
    (out.status.code().unwrap_or(-1), text)
}

/// (routing key, subject) of each message, sorted; manifests by routing key only.
fn keys(got: &[Received]) -> BTreeSet<(String, String)> {
    let list: Vec<(String, String)> = got
        .iter()
        .map(|m| {
            let subject = if m.routing_key.contains(".batch.") {
                String::new()
            } else {
                m.headers["cloudEvents:subject"].clone()
            };
            (m.routing_key.clone(), subject)
        })
        .collect();
    let set: BTreeSet<(String, String)> = list.iter().cloned().collect();
    assert_eq!(set.len(), list.len(), "no message twice: {list:?}");
    set
}

fn expect(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(k, s)| (k.to_string(), s.to_string()))
        .collect()
}

fn manifest(got: &[Received]) -> serde_json::Value {
    got.iter()
        .find(|m| m.routing_key == "hr.batch.completed.westmarch")
        .expect("a manifest")
        .body
        .clone()
}

fn batches(sandbox: &Sandbox) -> Vec<serde_json::Value> {
    sandbox
        .json(&["batches", "list"])
        .as_array()
        .unwrap()
        .clone()
}

fn state_size(sandbox: &Sandbox) -> usize {
    sandbox
        .open_store()
        .feed_state("westmarch", "employments")
        .unwrap()
        .hashes
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_snapshots_publish_exactly_the_changes_starters_and_leavers() {
    let sandbox = sandbox("    mode: snapshot\n");
    let mut consumer = Consumer::bind(&sandbox).await;
    const CREATED: &str = "hr.employment.created.westmarch";
    const UPDATED: &str = "hr.employment.updated.westmarch";
    const DELETED: &str = "hr.employment.deleted.westmarch";
    const STARTER: &str = "hr.starter_event.upserted.westmarch";
    const LEAVER: &str = "hr.leaver_event.upserted.westmarch";
    const MANIFEST: &str = "hr.batch.completed.westmarch";

    // Night 1: the first snapshot is the baseline: 20 employments created, no starters (being
    // employed on day one is not starting that day), no leavers.
    let night1 = Rows::sample().with_staff(14);
    drop_file(&sandbox, "assignments_20261101.csv", &night1);
    let (code, text) = run(&sandbox, true);
    assert_eq!(code, 0, "{text}");
    let got = consumer.drain_published().await;
    let mut want: Vec<(String, String)> = night1
        .rows
        .iter()
        .map(|r| (CREATED.to_string(), r[0].clone()))
        .collect();
    want.push((MANIFEST.into(), String::new()));
    assert_eq!(keys(&got), want.into_iter().collect(), "{text}");
    for m in got.iter().filter(|m| m.routing_key == CREATED) {
        assert_eq!(
            m.headers["cloudEvents:type"],
            "uk.gov.council.hr.employment.created.v1"
        );
    }
    let m = manifest(&got);
    assert_eq!(m["delta"]["created"], 20);
    assert_eq!(m["delta"]["baseline"], true);
    assert_eq!(m["mode"], "snapshot");
    assert!(m["file_sha256"].as_str().unwrap().len() == 64);
    assert!(
        text.contains("delta (first snapshot): created 20, updated 0, deleted 0, unchanged 0; starters 0, leavers 0"),
        "{text}"
    );
    assert_eq!(state_size(&sandbox), 20);

    // Night 2: one job title changes; a casual assignment gets an end date (a leaver); a
    // leaver with an end date leaves the export (deleted, and its leaver event); a new
    // employment appears (created, and a starter). Everything else is unchanged: not published.
    let night2 = night1
        .clone()
        .set("E100235-1", "Job Title", "HGV Driver (Refuse) Team Leader")
        .set("E100233-2", "End", "30/11/2026")
        .set("E100233-2", "Status", "L")
        .remove("E100234-1")
        .add(&[
            "E100240-1",
            "P100240",
            "100240",
            "Occupational Therapist",
            "02/11/2026",
            "",
            "A",
            "PERM",
            "1",
            "37",
            "G8",
            "ASC-0420",
            "E100231-1",
            "WDC-ASC-REA",
            "C4120",
            "Y",
        ]);
    drop_file(&sandbox, "assignments_20261102.csv", &night2);
    let (code, text) = run(&sandbox, true);
    assert_eq!(code, 0, "{text}");
    let got = consumer.drain_published().await;
    assert_eq!(
        keys(&got),
        expect(&[
            (UPDATED, "E100235-1"),
            (UPDATED, "E100233-2"),
            (DELETED, "E100234-1"),
            (CREATED, "E100240-1"),
            (STARTER, "E100240-1/2026-11-02"),
            (LEAVER, "E100233-2/2026-11-30"),
            (LEAVER, "E100234-1/2026-10-31"),
            (MANIFEST, ""),
        ]),
        "{text}"
    );
    let registry = council_bridge::canonical::Registry::load(&sandbox.path("schemas")).unwrap();
    for m in got.iter().filter(|m| !m.routing_key.contains(".batch.")) {
        let parts: Vec<&str> = m.routing_key.split('.').collect();
        let entity = registry.get(&format!("hr.{}", parts[1])).unwrap();
        entity
            .validate(&m.body)
            .unwrap_or_else(|e| panic!("{} invalid: {e:?}", m.routing_key));
    }
    let by = |rk: &str, subject: &str| {
        got.iter()
            .find(|m| m.routing_key == rk && m.headers["cloudEvents:subject"] == subject)
            .unwrap()
            .body
            .clone()
    };
    // The deletion carries the last accepted record.
    let deleted = by(DELETED, "E100234-1");
    assert_eq!(deleted["end_date"], "2026-10-31");
    assert_eq!(deleted["job_title"], "Senior Planning Officer");
    assert_eq!(
        by(STARTER, "E100240-1/2026-11-02"),
        serde_json::json!({"employment_id": "E100240-1", "person_id": "P100240", "payroll_id": "100240", "start_date": "2026-11-02"})
    );
    assert_eq!(
        by(LEAVER, "E100233-2/2026-11-30"),
        serde_json::json!({"employment_id": "E100233-2", "person_id": "P100233", "payroll_id": "100233-02",
            "leaving_date": "2026-11-30", "reason": "not_recorded"})
    );
    let m = manifest(&got);
    assert_eq!(
        m["delta"],
        serde_json::json!({"created": 1, "updated": 2, "deleted": 1, "unchanged": 17, "starters": 1,
            "leavers": 2, "leavers_without_date": 0, "deletions_deferred": 0, "state_before": 20, "baseline": false})
    );
    assert_eq!(state_size(&sandbox), 20);

    // Night 3: a permanent employee leaves the export with no end date (deleted; no leaver
    // event: there is no leaving date to give); the casual leaver drops off (deleted; its
    // leaver event is the one already published, same id, so not sent again); hours change;
    // a new starter. 2 of 20 deleted = 10%, not more than max_delete_percent 10: applied.
    let night3 = night2
        .clone()
        .remove("E200001-1")
        .remove("E100233-2")
        .set("E200002-1", "Hours", "30")
        .set("E200002-1", "FTE", "0.81")
        .add(&[
            "E100241-1",
            "P100241",
            "100241",
            "Planning Technician",
            "16/11/2026",
            "",
            "A",
            "FTC",
            "1",
            "37",
            "G5",
            "PLC-0720",
            "E100236-1",
            "WDC-PLC",
            "C5100",
            "Y",
        ]);
    drop_file(&sandbox, "assignments_20261103.csv", &night3);
    let (code, text) = run(&sandbox, true);
    assert_eq!(code, 0, "{text}");
    let got = consumer.drain_published().await;
    assert_eq!(
        keys(&got),
        expect(&[
            (DELETED, "E200001-1"),
            (DELETED, "E100233-2"),
            (UPDATED, "E200002-1"),
            (CREATED, "E100241-1"),
            (STARTER, "E100241-1/2026-11-16"),
            (MANIFEST, ""),
        ]),
        "{text}"
    );
    assert_eq!(
        by_subject(&got, DELETED, "E100233-2")["end_date"],
        "2026-11-30"
    );
    let m = manifest(&got);
    assert_eq!(m["delta"]["deleted"], 2);
    assert_eq!(m["delta"]["leavers_without_date"], 1);
    assert!(
        text.contains("1 employment(s) gone without an end date: no leaver event"),
        "{text}"
    );
    assert_eq!(state_size(&sandbox), 19);

    // Each pass is a stored run.
    let runs = sandbox.json(&[
        "runs",
        "list",
        "--council",
        "westmarch",
        "--feed",
        "employments",
    ]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert!(
        runs.iter()
            .all(|r| r["trigger"] == "cli" && r["outcome"] == "ok" && r["files"] == 1)
    );
    let id = runs[0]["id"].as_str().unwrap();
    let show = sandbox
        .cli(None)
        .args(["runs", "show", id])
        .output()
        .unwrap();
    let text = stdout(&show);
    assert_eq!(show.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("run {id} [ok]")), "{text}");
    assert!(text.contains("trigger:      cli"), "{text}");
    assert!(
        text.contains("assignments_20261103.csv  processed: read 19, valid 19, rejected 0"),
        "{text}"
    );
    assert!(
        text.contains(
            "delta: created 1, updated 1, deleted 2, unchanged 17; starters 1, leavers 1"
        ),
        "{text}"
    );
    let json = sandbox.json(&["runs", "show", id]);
    assert_eq!(json["report"]["files"][0]["delta"]["deleted"], 2);
    let list = sandbox.cli(None).args(["runs", "list"]).output().unwrap();
    let text = stdout(&list);
    assert!(text.lines().next().unwrap().starts_with("ID "), "{text}");
    assert_eq!(text.matches("westmarch/employments").count(), 3, "{text}");
    consumer.cleanup().await;
}

fn by_subject(got: &[Received], rk: &str, subject: &str) -> serde_json::Value {
    got.iter()
        .find(|m| m.routing_key == rk && m.headers["cloudEvents:subject"] == subject)
        .unwrap_or_else(|| panic!("no {rk} {subject}"))
        .body
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_delete_is_held_and_the_state_advances_only_on_release() {
    let sandbox = sandbox("    mode: snapshot\n");
    let mut consumer = Consumer::bind(&sandbox).await;
    drop_file(&sandbox, "a_20261101.csv", &Rows::sample());
    assert_eq!(run(&sandbox, true).0, 0);
    assert_eq!(consumer.drain_published().await.len(), 7);

    let night2 = Rows::sample().remove("E100235-1").remove("E100236-1");
    drop_file(&sandbox, "a_20261102.csv", &night2);
    let (code, text) = run(&sandbox, true);
    assert_eq!(code, 4, "held: exit 4\n{text}");
    assert!(
        text.contains("HELD: mass delete: the snapshot would delete 2 of the 6 records of the feed's state (33.3%), more than max_delete_percent 10"),
        "{text}"
    );
    assert!(consumer.drain_published().await.is_empty());
    assert_eq!(
        state_size(&sandbox),
        6,
        "a held snapshot does not advance the state"
    );
    let held = batches(&sandbox)
        .into_iter()
        .find(|b| b["status"] == "held")
        .unwrap();
    let listed = stdout(
        &sandbox
            .cli(None)
            .args(["batches", "list"])
            .output()
            .unwrap(),
    );
    assert!(
        listed.contains("    held: mass delete: the snapshot would delete 2 of the 6"),
        "{listed}"
    );

    let id = held["id"].as_str().unwrap();
    let out = sandbox
        .cli(Some(&broker_url()))
        .args([
            "batches",
            "release",
            id,
            "--reason",
            "two posts moved to the county council",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let got = consumer.drain_published().await;
    assert_eq!(
        keys(&got),
        expect(&[
            ("hr.employment.deleted.westmarch", "E100235-1"),
            ("hr.employment.deleted.westmarch", "E100236-1"),
            ("hr.leaver_event.upserted.westmarch", "E100236-1/2027-08-31"),
            ("hr.batch.completed.westmarch", ""),
        ])
    );
    assert_eq!(state_size(&sandbox), 4, "released: the state advanced");

    // The next snapshot is compared with the released state: one change, nothing deleted again.
    drop_file(
        &sandbox,
        "a_20261103.csv",
        &night2.set("E100231-1", "Grade", "G11"),
    );
    let (code, text) = run(&sandbox, true);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        keys(&consumer.drain_published().await),
        expect(&[
            ("hr.employment.updated.westmarch", "E100231-1"),
            ("hr.batch.completed.westmarch", ""),
        ])
    );
    consumer.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_snapshot_publishes_nothing_and_leaves_the_state_unchanged() {
    let sandbox = sandbox("    mode: snapshot\n    max_delete_percent: 20\n");
    let mut consumer = Consumer::bind(&sandbox).await;
    drop_file(&sandbox, "a_20261101.csv", &Rows::sample());
    assert_eq!(run(&sandbox, true).0, 0);
    assert_eq!(consumer.drain_published().await.len(), 7);

    // A truncated export: 3 of 6 gone, more than the feed's 20%.
    let truncated = Rows::sample()
        .remove("E100234-1")
        .remove("E100235-1")
        .remove("E100236-1");
    drop_file(&sandbox, "a_20261102.csv", &truncated);
    let (code, text) = run(&sandbox, true);
    assert_eq!(code, 4, "{text}");
    assert!(text.contains("would delete 3 of the 6 records"), "{text}");
    assert!(text.contains("more than max_delete_percent 20"), "{text}");
    let id = batches(&sandbox)[0]["id"].as_str().unwrap().to_string();
    let out = sandbox
        .cli(Some(&broker_url()))
        .args([
            "batches",
            "discard",
            &id,
            "--reason",
            "truncated export, HR resending",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("discarded batch {id}: 6 messages dropped")),
        "3 deletions, 2 leavers (the two with an end date) and the manifest: {}",
        stdout(&out)
    );
    assert!(consumer.drain_published().await.is_empty());
    assert_eq!(batches(&sandbox)[0]["status"], "discarded");
    assert_eq!(state_size(&sandbox), 6);
    let store = sandbox.open_store();
    assert!(
        store
            .audit_log(5)
            .unwrap()
            .iter()
            .any(|a| a["action"] == "batch.discard"
                && a["target"] == id.as_str()
                && a["actor"] == "test-operator")
    );
    let again = sandbox
        .cli(None)
        .args(["batches", "release", &id, "--reason", "x"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is discarded, not held"));

    // The resent full export is compared with the unchanged state: one real change only.
    drop_file(
        &sandbox,
        "a_20261103.csv",
        &Rows::sample().set("E100233-1", "Grade", "G4"),
    );
    let (code, text) = run(&sandbox, true);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        keys(&consumer.drain_published().await),
        expect(&[
            ("hr.employment.updated.westmarch", "E100233-1"),
            ("hr.batch.completed.westmarch", ""),
        ])
    );
    consumer.cleanup().await;
}

#[test]
fn a_batch_with_too_many_rejected_rows_is_held_until_released() {
    let sandbox = sandbox("    reject_threshold_percent: 20\n");
    // 2 of 6 rows rejected (a status and a contract code the mapping does not know): 33.3%.
    let rows = Rows::sample()
        .set("E100235-1", "Status", "X")
        .set("E100236-1", "Contract", "TEMP");
    drop_file(&sandbox, "a_20261101.csv", &rows);
    let (code, text) = run(&sandbox, false);
    assert_eq!(code, 4, "{text}");
    assert!(
        text.contains("HELD: reject threshold: 2 of 6 rows rejected (33.3%), more than reject_threshold_percent 20"),
        "{text}"
    );
    assert_eq!(
        sandbox.json(&["outbox", "status"])["held"],
        5,
        "4 records + manifest"
    );
    let b = &batches(&sandbox)[0];
    assert_eq!(b["status"], "held");
    let id = b["id"].as_str().unwrap();
    let out = sandbox
        .cli(None)
        .args([
            "batches",
            "release",
            id,
            "--reason",
            "HR confirmed the two rows are wrong",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let counts = sandbox.json(&["outbox", "status"]);
    assert_eq!(
        (counts["held"].as_u64(), counts["pending"].as_u64()),
        (Some(0), Some(5))
    );

    // Under the threshold: processed.
    drop_file(
        &sandbox,
        "a_20261102.csv",
        &Rows::sample().with_staff(4).set("E100235-1", "Status", "X"),
    );
    let (code, text) = run(&sandbox, false);
    assert_eq!(code, 0, "1 of 10 rejected is 10%: {text}");
}

#[test]
fn drift_in_columns_or_value_shapes_is_held_with_a_report_and_released() {
    let sandbox = sandbox("");
    let base = Rows::sample().extra_column("Location", "Civic Centre");
    drop_file(&sandbox, "a_20261101.csv", &base);
    assert_eq!(run(&sandbox, false).0, 0);

    // A renamed column and two columns swapped.
    let moved = base
        .clone()
        .rename("Location", "Site")
        .swap_columns("Grade", "Post");
    drop_file(&sandbox, "a_20261102.csv", &moved);
    let (code, text) = run(&sandbox, false);
    assert_eq!(code, 4, "{text}");
    assert!(
        text.contains("drift: column(s) no longer present: \"Location\""),
        "{text}"
    );
    assert!(text.contains("drift: new column(s): \"Site\""), "{text}");
    assert!(
        text.contains("drift: column order changed: was \"Assignment\", \"Person Ref\", \"Payroll No\", \"Job Title\", \"Start\", \"End\", \"Status\", \"Contract\", \"FTE\", \"Hours\", \"Grade\", \"Post\""),
        "{text}"
    );
    assert!(
        text.contains("HELD: drift (drift: hold) against the last accepted batch"),
        "{text}"
    );
    let b = &batches(&sandbox)[0];
    assert_eq!(b["status"], "held");
    assert_eq!(b["summary"]["drift"].as_array().unwrap().len(), 3);
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(
        sandbox
            .cli(None)
            .args([
                "batches",
                "release",
                &id,
                "--reason",
                "HR system upgrade, layout confirmed"
            ])
            .output()
            .unwrap()
            .status
            .code(),
        Some(0)
    );

    // The released batch is the new baseline: the same layout again is not drift.
    drop_file(
        &sandbox,
        "a_20261103.csv",
        &moved.clone().set("E100231-1", "Grade", "G11"),
    );
    let (code, text) = run(&sandbox, false);
    assert_eq!(code, 0, "{text}");

    // Payroll numbers turn from numbers into text: a value shape change.
    let mut reshaped = moved.clone();
    let c = reshaped.col("Payroll No");
    for r in &mut reshaped.rows {
        r[c] = format!("WM-{}", r[c]);
    }
    drop_file(&sandbox, "a_20261104.csv", &reshaped);
    let (code, text) = run(&sandbox, false);
    assert_eq!(code, 4, "{text}");
    assert!(
        text.contains("drift: column \"Payroll No\" values changed shape: was integer, now text"),
        "{text}"
    );
    let listed = stdout(
        &sandbox
            .cli(None)
            .args(["batches", "list"])
            .output()
            .unwrap(),
    );
    assert!(
        listed.contains("held: drift (drift: hold) against the last accepted batch: column \"Payroll No\" values changed shape"),
        "{listed}"
    );
}

#[test]
fn drift_warn_publishes_and_names_the_change() {
    let sandbox = sandbox("    drift: warn\n");
    drop_file(&sandbox, "a_20261101.csv", &Rows::sample());
    assert_eq!(run(&sandbox, false).0, 0);
    drop_file(
        &sandbox,
        "a_20261102.csv",
        &Rows::sample().swap_columns("Grade", "Post"),
    );
    let (code, text) = run(&sandbox, false);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("drift: column order changed"), "{text}");
    assert!(!text.contains("HELD"), "{text}");
}

#[test]
fn a_held_snapshot_overtaken_by_a_newer_accepted_one_cannot_be_released() {
    let sandbox = sandbox("    mode: snapshot\n");
    drop_file(&sandbox, "a_20261101.csv", &Rows::sample());
    assert_eq!(run(&sandbox, false).0, 0);
    drop_file(
        &sandbox,
        "a_20261102.csv",
        &Rows::sample().remove("E100231-1").remove("E100233-1"),
    );
    assert_eq!(run(&sandbox, false).0, 4);
    let held = batches(&sandbox)[0]["id"].as_str().unwrap().to_string();
    // The next night's full export is accepted and advances the state.
    drop_file(
        &sandbox,
        "a_20261103.csv",
        &Rows::sample().set("E100231-1", "Grade", "G11"),
    );
    let (code, text) = run(&sandbox, false);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("delta: created 0, updated 1, deleted 0, unchanged 5"),
        "{text}"
    );
    let out = sandbox
        .cli(None)
        .args(["batches", "release", &held, "--reason", "looked fine"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is a snapshot compared with an older state of its feed"),
        "{err}"
    );
    assert!(err.contains("discard it"), "{err}");
    assert_eq!(state_size(&sandbox), 6);
    assert_eq!(
        sandbox.json(&["outbox", "status"])["held"],
        3,
        "2 deletions + manifest stay held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_carries_money_control_totals_that_match_the_records_published() {
    let sandbox = Sandbox::new();
    let mut consumer = Consumer::bind(&sandbox).await;
    let out = sandbox
        .cli(Some(&broker_url()))
        .args([
            "run",
            "--council",
            "northshire",
            "--feed",
            "supplier-payments",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let got = consumer.drain_published().await;
    let records: Vec<&Received> = got
        .iter()
        .filter(|m| m.routing_key == "finance.supplier_payment.upserted.northshire")
        .collect();
    assert_eq!(records.len(), 10);
    let manifest = &got
        .iter()
        .find(|m| m.routing_key == "finance.batch.completed.northshire")
        .unwrap()
        .body;
    for field in ["amount_pence", "net_pence", "vat_pence"] {
        let sum: i64 = records.iter().filter_map(|m| m.body[field].as_i64()).sum();
        assert_eq!(manifest["money_totals"][field], sum, "{field}");
    }
    assert_eq!(manifest["money_totals"]["amount_pence"], 14203216);
    let sha = council_bridge::sources::describe(
        &sandbox.path("mappings/northshire/samples/ap/supplier_payments_2026-11.csv"),
    )
    .unwrap()
    .sha256;
    assert_eq!(manifest["file_sha256"], sha);
    assert_eq!(manifest["counts"]["valid"], 10);
    consumer.cleanup().await;
}

#[test]
fn a_snapshot_with_rejected_rows_deletes_nothing_and_its_rows_are_not_replayed_one_by_one() {
    let sandbox = sandbox("    mode: snapshot\n    max_delete_percent: 50\n");
    drop_file(&sandbox, "a_20261101.csv", &Rows::sample());
    assert_eq!(run(&sandbox, false).0, 0);
    // E100231-1 left; E100233-1's row is unreadable (an unknown status code).
    drop_file(
        &sandbox,
        "a_20261102.csv",
        &Rows::sample()
            .remove("E100231-1")
            .set("E100233-1", "Status", "X")
            .set("E100235-1", "Grade", "G5"),
    );
    let (code, text) = run(&sandbox, false);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("delta: created 0, updated 1, deleted 0, unchanged 3"),
        "{text}"
    );
    assert!(
        text.contains("2 record(s) absent from the snapshot not deleted: rows were rejected"),
        "{text}"
    );
    assert_eq!(state_size(&sandbox), 6);
    let failure = sandbox.failures()[0]["id"].as_i64().unwrap().to_string();
    let out = sandbox
        .cli(None)
        .args(["failures", "replay", &failure])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("rows of a snapshot are not replayed one by one"),
        "{}",
        stdout(&out)
    );
}
