//! A reading killed in the middle of a file is resumed from its last committed chunk (issue
//! 15): `council-bridge run` is SIGKILLed while it reads a 60,000-row export, and the next `run`
//! takes the same batch over where the killed one left it. Nothing committed is written again
//! or dropped, every row is counted once, the control totals still balance, and the takeover is
//! audited. Runs on the sandbox's store: SQLite, or PostgreSQL under COUNCIL_BRIDGE_TEST_STORE.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, sandbox_with_payroll, signal, stdout, write_payroll_file};
use council_bridge::store::Location;
use council_bridge::store::db::{Param, off_async};

const ROWS: usize = 60_000;
const PAYROLL: &[&str] = &["--council", "northshire", "--feed", "payroll"];

/// `run ARGS --json` (no broker), which must succeed; what it printed.
fn run_json(sandbox: &Sandbox, args: &[&str]) -> serde_json::Value {
    let out = sandbox
        .cli(None)
        .arg("run")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

/// Batches being read with a committed chunk: (batch id, items the checkpoint covers); none
/// while the store is not made yet.
fn in_progress(sandbox: &Sandbox) -> Vec<(String, u64)> {
    if let Location::Sqlite(path) = sandbox.store_location()
        && !path.exists()
    {
        return Vec::new();
    }
    off_async(|| {
        let mut db = sandbox.open_db();
        db.query_map(
            "SELECT id, checkpoint FROM batches WHERE status = 'processing' AND checkpoint IS NOT NULL",
            &[],
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
        )
        // The tables are not made yet.
        .unwrap_or_default()
    })
    .into_iter()
    .map(|(id, c)| {
        let c: serde_json::Value = serde_json::from_str(&c).unwrap();
        (id, c["items"].as_u64().unwrap())
    })
    .collect()
}

/// (rows, highest row id) of a batch's outbox rows, with ids up to `upto` when given.
fn outbox_of(sandbox: &Sandbox, batch: &str, upto: i64) -> (i64, i64) {
    let batch = batch.to_string();
    off_async(|| {
        sandbox
            .open_db()
            .query_row(
                "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM outbox WHERE batch_id = ?1 AND id <= ?2",
                &[Param::Text(batch.as_str().into()), Param::Int(upto)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    })
}

/// Starts `council-bridge run ARGS` (no broker) and SIGKILLs it once it has committed a few
/// chunks of a file; returns (batch id, items its last checkpoint covers). It is stopped
/// (SIGSTOP) first, so that its last checkpoint is read before it dies.
fn run_killed_mid_file(sandbox: &Sandbox, args: &[&str]) -> (String, u64) {
    let log = sandbox.path("run-killed.log");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("council-bridge"))
        .current_dir(sandbox.dir.path())
        .env_remove("AMQP_URL")
        .env_remove("COUNCIL_BRIDGE_STORE")
        .env("COUNCIL_BRIDGE_CONFIG", sandbox.config())
        .env("RUST_LOG", "info")
        .args(["--log-format", "json", "run"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = Instant::now();
    let cut = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before it could be killed mid-file: make the file bigger\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if in_progress(sandbox)
            .iter()
            .any(|(_, items)| *items >= 3_000)
        {
            signal(pid, "STOP");
            std::thread::sleep(Duration::from_millis(200));
            let now = in_progress(sandbox);
            assert_eq!(now.len(), 1, "{now:?}");
            break now[0].clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no chunk committed after 2 minutes\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    cut
}

#[test]
fn a_run_killed_mid_file_is_resumed_from_its_last_committed_chunk() {
    let sandbox = sandbox_with_payroll();
    let dir = sandbox.path("mappings/northshire/samples/payroll");
    write_payroll_file(&dir.join("payroll_big.csv"), 100_000, ROWS);

    let (batch, items) = run_killed_mid_file(&sandbox, PAYROLL);
    assert!(
        (items as usize) < ROWS,
        "killed in the middle of the file: {items} items committed of {ROWS}"
    );
    eprintln!("events: killed after {items} items were committed, resumed as batch {batch}");
    let (written, last_id) = outbox_of(&sandbox, &batch, i64::MAX);
    assert!(written > 0, "the killed run had staged rows");

    // The second run takes the batch over from there.
    let report = run_json(&sandbox, PAYROLL);
    let file = &report["feeds"][0]["files"][0];
    assert_eq!(file["status"], "processed", "{file}");
    assert_eq!(
        file["batch_id"],
        batch.as_str(),
        "the same batch, resumed: {file}"
    );
    assert_eq!(file["resumed_after"], items, "{file}");
    assert_eq!(
        (
            file["read"].as_u64(),
            file["valid"].as_u64(),
            file["rejected"].as_u64()
        ),
        (Some(ROWS as u64), Some(ROWS as u64), Some(0)),
        "every row counted once: {file}"
    );
    assert_eq!(
        (
            file["new_messages"].as_u64(),
            file["already_known"].as_u64()
        ),
        (Some(ROWS as u64), Some(0)),
        "the counts of the killed run's chunks carried over: {file}"
    );
    assert!(
        file["reason"].is_null(),
        "the trailer's count and total still balance: {file}"
    );

    // In the store: one batch for the file, completed; what the killed run committed is
    // untouched (same rows, same ids) and the rest follows it, each record once.
    let batches = sandbox.json(&["batches", "list"]);
    let batches = batches.as_array().unwrap();
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0]["id"], batch.as_str());
    assert_eq!(batches[0]["status"], "completed");
    assert_eq!(
        batches[0]["summary"]["resumed_after_items"], items,
        "{batches:?}"
    );
    assert_eq!(
        outbox_of(&sandbox, &batch, last_id),
        (written, last_id),
        "the rows the killed run committed are kept as they were"
    );
    let (all, _) = outbox_of(&sandbox, &batch, i64::MAX);
    assert_eq!(all, ROWS as i64 + 1, "each record once, and the manifest");
    let distinct: i64 = off_async(|| {
        sandbox
            .open_db()
            .query_value("SELECT COUNT(DISTINCT message_id) FROM outbox", &[])
            .unwrap()
    });
    assert_eq!(distinct, ROWS as i64 + 1);
    assert!(sandbox.failures().is_empty(), "{:?}", sandbox.failures());
    let audit = sandbox.json(&["audit", "list", "--action", "batch."]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "batch.resume" && a["target"] == batch.as_str()),
        "the takeover is audited: {audit}"
    );
    // Stored once: a third run skips the file (same sha256).
    let again = run_json(&sandbox, PAYROLL);
    assert_eq!(
        again["feeds"][0]["files"][0]["status"], "skipped",
        "{again}"
    );
}

const HEADER: &str = "Assignment;Person Ref;Payroll No;Job Title;Start;End;Status;Contract;FTE;Hours;Grade;Post;Line Manager Assignment;Org Unit;Cost Centre;Primary";

/// Westmarch employment rows for staff `ids` (fictional), job title per id.
fn employments(ids: impl Iterator<Item = usize>, title: impl Fn(usize) -> &'static str) -> String {
    let mut out = String::from(HEADER) + "\r\n";
    for i in ids {
        out += &format!(
            "E3{i:05}-1;P3{i:05};3{i:05};{};01/04/2019;;A;PERM;1;37;G4;CUS-0100;E100231-1;WDC-CUS;C6100;Y\r\n",
            title(i)
        );
    }
    out
}

/// A snapshot feed's reading, killed and resumed, compares the same keys with the feed's state
/// as an uninterrupted one: the deletions (keys absent from the file, only known at its end)
/// count the keys the killed reading had already seen, and the changes it staged are applied.
#[test]
fn a_snapshot_killed_mid_file_resumes_with_the_keys_it_had_seen() {
    const STAFF: usize = 40_000;
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("mappings/westmarch/council.yaml"),
        "council: westmarch\nname: Westmarch District Council\nfeeds:\n  employments:\n    mapping: employment.yaml\n    input: drop/*.csv\n    settle_seconds: 0\n    archive: archive\n    mode: snapshot\n",
    )
    .unwrap();
    let drop = sandbox.path("mappings/westmarch/drop");
    std::fs::create_dir_all(&drop).unwrap();
    let args = ["--council", "westmarch", "--feed", "employments"];
    // Night 1, the baseline: STAFF employments.
    std::fs::write(
        drop.join("assignments_1.csv"),
        employments(0..STAFF, |_| "Customer Services Adviser"),
    )
    .unwrap();
    run_json(&sandbox, &args);
    // Night 2: every 40th leaves (1,000 deleted), every other 10th changes job (3,000
    // updated), 975 start (1,000 new numbers less every 40th), spread through the file.
    let night2 = employments((0..STAFF + 1_000).filter(|i| i % 40 != 0), |i| {
        if i % 10 == 0 {
            "Senior Adviser"
        } else {
            "Customer Services Adviser"
        }
    });
    std::fs::write(drop.join("assignments_2.csv"), night2).unwrap();
    let (batch, items) = run_killed_mid_file(&sandbox, &args);
    assert!((items as usize) < STAFF, "{items}");
    eprintln!("snapshot: killed after {items} items were committed, resumed as batch {batch}");
    let report = run_json(&sandbox, &args);
    let file = &report["feeds"][0]["files"][0];
    assert_eq!(
        (
            file["batch_id"].as_str(),
            file["resumed_after"].as_u64(),
            file["status"].as_str()
        ),
        (Some(batch.as_str()), Some(items), Some("processed")),
        "{file}"
    );
    let d = &file["delta"];
    assert_eq!(
        (
            d["created"].as_u64(),
            d["updated"].as_u64(),
            d["deleted"].as_u64()
        ),
        (Some(975), Some(3_000), Some(1_000)),
        "the same changes as an uninterrupted reading: {d}"
    );
    assert_eq!(d["unchanged"].as_u64(), Some((STAFF - 4_000) as u64), "{d}");
    assert_eq!(d["starters"].as_u64(), Some(975), "{d}");
    // Each change once in the outbox (a starter's event beside its creation; the manifest),
    // and the feed's state is night 2's.
    let (messages, _) = outbox_of(&sandbox, &batch, i64::MAX);
    assert_eq!(messages, 975 + 975 + 3_000 + 1_000 + 1);
    let state: i64 = off_async(|| {
        sandbox
            .open_db()
            .query_value(
                "SELECT COUNT(*) FROM feed_state WHERE council = 'westmarch' AND feed = 'employments'",
                &[],
            )
            .unwrap()
    });
    assert_eq!(
        state,
        (STAFF + 975 - 1_000) as i64,
        "the state holds night 2's employments"
    );
}
