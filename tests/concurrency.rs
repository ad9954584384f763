//! One worker per feed and one publisher per store, whatever starts them: `run` and `outbox
//! flush` started together, and two `run`s at once, over 20,000 records on one store. Every
//! record reaches the real broker exactly once, every file is read once, and nothing is left
//! `staged` (the lost-record regression: two runs at once used to strand a chunk of 1,000
//! records under an abandoned batch while the completed batch counted them as known).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};

use common::{Consumer, Sandbox, broker_url, sandbox_with_payroll, write_payroll};

fn spawn(sandbox: &Sandbox, url: Option<&str>, args: &[&str]) -> Child {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("council-bridge"));
    cmd.current_dir(sandbox.dir.path())
        .env_remove("AMQP_URL")
        .env_remove("COUNCIL_BRIDGE_STORE")
        .env("COUNCIL_BRIDGE_CONFIG", sandbox.config())
        .env("RUST_LOG", "info")
        .args(["--log-format", "json", "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(u) = url {
        cmd.env("AMQP_URL", u);
    }
    cmd.spawn().unwrap()
}

fn finish(child: Child, what: &str) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        matches!(out.status.code(), Some(0)),
        "{what} exited {:?}\nstdout: {stdout}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {stdout}"))
}

/// Every batch of the sandbox, by file: (completed or held readings, all readings).
fn readings(sandbox: &Sandbox) -> BTreeMap<String, (usize, usize)> {
    let batches = sandbox.json(&["batches", "list", "--limit", "1000"]);
    let mut by_file: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for b in batches.as_array().unwrap() {
        let key = format!(
            "{} {}",
            b["feed"].as_str().unwrap(),
            b["file_sha256"].as_str().unwrap()
        );
        let e = by_file.entry(key).or_default();
        e.1 += 1;
        if matches!(b["status"].as_str(), Some("completed" | "held")) {
            e.0 += 1;
        }
    }
    by_file
}

fn assert_each_file_read_once(sandbox: &Sandbox) {
    for (file, (taken, all)) in readings(sandbox) {
        assert_eq!(
            (taken, all),
            (1, 1),
            "file {file} was read {all} times ({taken} completed)"
        );
    }
}

/// Receives everything published so far (by runs that have ended), and checks no message id
/// came twice.
async fn receive_all(consumer: &mut Consumer) -> BTreeSet<String> {
    let got = consumer.drain_published().await;
    let mut ids = BTreeSet::new();
    for m in &got {
        assert!(
            ids.insert(m.message_id.clone()),
            "message {} ({}) was delivered twice",
            m.message_id,
            m.routing_key
        );
    }
    ids
}

fn outbox(sandbox: &Sandbox) -> serde_json::Value {
    sandbox.json(&["outbox", "status"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_outbox_flush_together_publish_each_record_once() {
    let sandbox = sandbox_with_payroll();
    let url = broker_url();
    let mut consumer = Consumer::bind(&sandbox).await;
    let dir = sandbox.path("mappings/northshire/samples/payroll");

    // 20,000 records wait in the outbox (no broker yet).
    let first = write_payroll(&dir, "a", 100_000, 4);
    let staged = finish(
        spawn(&sandbox, None, &["run", "--council", "northshire"]),
        "run without a broker",
    );
    assert!(
        staged["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["error"].is_null())
    );
    let pending = outbox(&sandbox)["pending"].as_u64().unwrap() as usize;
    assert!(
        pending >= first,
        "{pending} pending, expected at least {first}"
    );

    // More files arrive; a `run` and an `outbox flush` start together with the broker.
    let second = write_payroll(&dir, "b", 200_000, 2);
    let run = spawn(&sandbox, Some(&url), &["run", "--council", "northshire"]);
    let flush = spawn(&sandbox, Some(&url), &["outbox", "flush"]);
    let run_out = finish(run, "run");
    let flush_out = finish(flush, "outbox flush");

    let counts = outbox(&sandbox);
    assert_eq!(counts["pending"], 0, "{counts}");
    assert_eq!(counts["staged"], 0, "{counts}");
    let sent = counts["sent"].as_u64().unwrap() as usize;
    let ids = receive_all(&mut consumer).await;
    assert_eq!(
        ids.len(),
        sent,
        "received {} distinct messages, the store says {sent} were sent",
        ids.len()
    );
    let published = run_out["flush"]["published"].as_u64().unwrap_or(0)
        + flush_out["published"].as_u64().unwrap_or(0);
    assert_eq!(
        published as usize, sent,
        "run: {}\nflush: {flush_out}",
        run_out["flush"]
    );
    // Every payroll record is there once: 6 files of 5,000 rows, plus the other feeds' messages.
    assert!(sent >= first + second + 6, "{sent} sent");
    assert_each_file_read_once(&sandbox);
    consumer.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_read_each_file_once_and_strand_nothing() {
    // A brand-new store (no database file yet): both processes create it at the same moment.
    let sandbox = sandbox_with_payroll();
    let url = broker_url();
    let mut consumer = Consumer::bind(&sandbox).await;
    let dir = sandbox.path("mappings/northshire/samples/payroll");
    let rows = write_payroll(&dir, "c", 300_000, 4);

    // Without a broker first: the lost-record regression left rows `staged` for ever.
    let a = spawn(&sandbox, None, &["run"]);
    let b = spawn(&sandbox, None, &["run"]);
    let (a, b) = (finish(a, "first run"), finish(b, "second run"));
    let counts = outbox(&sandbox);
    assert_eq!(counts["staged"], 0, "records stranded: {counts}");
    assert_each_file_read_once(&sandbox);
    let busy = |r: &serde_json::Value| {
        r["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| !f["busy"].is_null())
            .count()
    };
    let taken = |r: &serde_json::Value| {
        r["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["files"].as_array().unwrap().iter())
            .filter(|f| f["status"] == "processed")
            .count()
    };
    assert!(taken(&a) + taken(&b) >= 4, "first: {a}\nsecond: {b}");
    eprintln!(
        "feeds left to the other process: {} and {}",
        busy(&a),
        busy(&b)
    );

    // Then both publish at once: each message once.
    let a = spawn(&sandbox, Some(&url), &["run"]);
    let b = spawn(&sandbox, Some(&url), &["run"]);
    let (a, b) = (finish(a, "first run"), finish(b, "second run"));
    let counts = outbox(&sandbox);
    assert_eq!(
        (counts["pending"].as_u64(), counts["staged"].as_u64()),
        (Some(0), Some(0)),
        "{counts}"
    );
    let sent = counts["sent"].as_u64().unwrap() as usize;
    assert!(sent >= rows + 4, "{sent} sent");
    let ids = receive_all(&mut consumer).await;
    assert_eq!(ids.len(), sent);
    let published = a["flush"]["published"].as_u64().unwrap_or(0)
        + b["flush"]["published"].as_u64().unwrap_or(0);
    assert_eq!(published as usize, sent);
    // Nothing was read again by the second pair (same files, same sha256).
    assert_each_file_read_once(&sandbox);
    consumer.cleanup().await;
}
