//! What a new user meets in the first hour (issue 13): each surprise found from a fresh clone,
//! with the exact message and exit code it now gives.

mod common;

use std::time::{Duration, Instant};

use common::{Consumer, Sandbox, broker_url, stdout};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_mistyped_store_is_an_error_not_a_new_empty_store() {
    let sandbox = Sandbox::new();
    sandbox.cli(None).arg("run").assert().success();
    let out = sandbox
        .cli(None)
        .args(["--store", "var/tset.db", "outbox", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("there is no store at var/tset.db (the configured store is ")
            && err.contains(&format!("{}); check --store or COUNCIL_BRIDGE_STORE, or create a new store there with `council-bridge store init`", sandbox.store_setting())),
        "{err}"
    );
    assert!(!sandbox.path("var/tset.db").exists(), "nothing created");
    // On purpose, it is one command.
    let out = sandbox
        .cli(None)
        .args(["--store", "var/other.db", "store", "init"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).trim(), "store created: var/other.db");
    let empty = sandbox
        .cli(None)
        .args(["--store", "var/other.db", "--json", "outbox", "status"])
        .output()
        .unwrap();
    assert!(
        stdout(&empty).contains("\"pending\": 0"),
        "{}",
        stdout(&empty)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_says_how_many_delivered_messages_go_out_again() {
    let sandbox = Sandbox::new();
    let url = broker_url();
    let mut consumer = Consumer::bind(&sandbox).await;
    sandbox
        .cli(Some(&url))
        .args(["run", "--council", "northshire"])
        .assert()
        .success();
    let first = consumer.drain_published().await;
    let out = sandbox
        .cli(Some(&url))
        .args([
            "run",
            "--council",
            "northshire",
            "--feed",
            "payroll",
            "--force",
        ])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("payroll_202610.csv  processed: read 15, valid 13, rejected 2, new messages 0 (13 already in the outbox; --force: 13 messages already delivered go out again under their same ids)"),
        "{text}"
    );
    let again = consumer.drain_published().await;
    let ids = |v: &[common::Received]| {
        v.iter()
            .filter(|m| m.routing_key.starts_with("payroll.pay_result"))
            .map(|m| m.message_id.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(ids(&again), ids(&first), "the same 13 ids");
    consumer.cleanup().await;
}

#[test]
fn an_unreachable_broker_is_retried_for_the_configured_budget_each_attempt_logged() {
    let sandbox = Sandbox::new(); // broker.retry_seconds: 3 in the sandbox configuration
    sandbox.cli(None).arg("run").assert().success();
    let started = Instant::now();
    let out = sandbox
        .cli(Some("amqp://guest:guest@127.0.0.1:1/%2f"))
        .args(["outbox", "flush"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        took >= Duration::from_secs(3),
        "gave up after {took:?}, before the 3 s budget"
    );
    let attempts = stderr(&out)
        .lines()
        .filter(|l| l.contains("broker unavailable"))
        .count();
    assert!(
        attempts >= 3,
        "each attempt logged: {attempts}\n{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("\"budget_secs\":3"));
    // By default a routine broker restart (two minutes) is ridden out.
    let config =
        council_bridge::config::Config::load(&common::repo().join("council-bridge.yaml")).unwrap();
    assert!(
        config.broker.retry_seconds >= 120,
        "{}",
        config.broker.retry_seconds
    );
}

#[test]
fn a_wrong_password_gives_one_clean_error_without_the_amqp_library_lines() {
    let sandbox = Sandbox::new();
    sandbox.cli(None).arg("run").assert().success();
    let out = sandbox
        .cli(Some("amqp://guest:not-the-password@127.0.0.1:5672/%2f"))
        .env_remove("RUST_LOG")
        .args(["outbox", "flush"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        !err.contains("\"target\":\"lapin"),
        "no raw lapin lines: {err}"
    );
    assert!(!err.contains("not-the-password"), "no password: {err}");
    assert!(
        stdout(&out).contains(
            "broker problem: cannot connect to the broker at amqp://guest:***@127.0.0.1:5672/%2f"
        ),
        "{}",
        stdout(&out)
    );
}

#[test]
fn messages_say_things_once_and_name_what_exists() {
    let sandbox = Sandbox::new();
    // An OS error is said once.
    let out = sandbox
        .cli(None)
        .args(["--config", "nosuch.yaml", "outbox", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.starts_with("error: cannot load the configuration nosuch.yaml (use --config or COUNCIL_BRIDGE_CONFIG): cannot read nosuch.yaml: No such file or directory (os error 2)"), "{err}");

    // An unknown feed lists the feeds; an unknown council lists the councils.
    let out = sandbox
        .cli(None)
        .args(["run", "--feed", "nosuch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("error: no feed `nosuch` is configured (feeds: eastborough/hr-workers, eastborough/supplier-payments, northshire/hr-employees, northshire/payroll,"), "{}", stderr(&out));
    let out = sandbox
        .cli(None)
        .args(["failures", "list", "--council", "nosuch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("error: no council `nosuch` is configured (councils: eastborough, northshire, riverton, southvale, westmarch)"), "{}", stderr(&out));

    // `failures --help` says what failures are.
    let out = sandbox.cli(None).args(["--help"]).output().unwrap();
    assert!(
        stdout(&out).contains("Rejected rows and undeliverable messages"),
        "{}",
        stdout(&out)
    );

    // Text logs carry no colour codes when stderr is not a terminal.
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("council-bridge"))
        .current_dir(sandbox.dir.path())
        .env("COUNCIL_BRIDGE_CONFIG", sandbox.config())
        .env_remove("AMQP_URL")
        .env_remove("RUST_LOG")
        .args(["--log-format", "text", "-v", "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("file processed"), "{}", stderr(&out));
    assert!(!stderr(&out).contains('\u{1b}'), "no ANSI escapes");
}

#[test]
fn list_commands_print_aligned_tables_with_headers() {
    let sandbox = Sandbox::new();
    sandbox.cli(None).arg("run").assert().success();
    for args in [
        &["batches", "list"][..],
        &["schema", "list"][..],
        &["failures", "list"][..],
        &["runs", "list"][..],
        &["status"][..],
    ] {
        let out = sandbox.cli(None).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = stdout(&out);
        let lines: Vec<&str> = text
            .lines()
            .take_while(|l| !l.starts_with("outbox:"))
            .filter(|l| !l.starts_with("    "))
            .collect();
        let header = lines[0];
        assert!(
            header.chars().next().unwrap().is_ascii_uppercase() && header == header.to_uppercase(),
            "{args:?}: a header first: {header}"
        );
        // Every column starts where its header does.
        let starts: Vec<usize> = header
            .char_indices()
            .filter(|(i, c)| *i > 0 && !c.is_whitespace() && header[..*i].ends_with("  "))
            .map(|(i, _)| i)
            .collect();
        assert!(!starts.is_empty(), "{args:?}: {header}");
        for line in &lines[1..] {
            for s in &starts {
                let before = line.get(..*s).unwrap_or("");
                if line.chars().count() > *s {
                    assert!(
                        before.ends_with("  ") || before.ends_with(' '),
                        "{args:?}: column at {s} not aligned in:\n{header}\n{line}"
                    );
                }
            }
        }
    }
    let batches = stdout(
        &sandbox
            .cli(None)
            .args(["batches", "list"])
            .output()
            .unwrap(),
    );
    assert!(
        batches.lines().next().unwrap().starts_with("ID  ")
            && batches.contains("READ  VALID  REJECTED  NEW"),
        "{batches}"
    );
    assert!(!batches.contains("{\""), "no raw JSON counts: {batches}");
}
