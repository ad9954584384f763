//! `store copy` and `store migrate` between the engines: an SQLite store holding every kind of
//! row is copied into a fresh PostgreSQL database and back into a new SQLite file, and every
//! table reads the same on all three. Needs PostgreSQL (COUNCIL_BRIDGE_TEST_STORE, else
//! postgres://postgres@127.0.0.1:5432/postgres) whatever store the rest of the suite uses: the
//! source is an SQLite file on purpose.

mod common;

use common::{Sandbox, TestDatabase, stdout};
use council_bridge::store::db::{Db, Val, off_async};
use council_bridge::store::{AuditEntry, COPIED_TABLES, FailureFilter, Location, Store};

fn server() -> String {
    common::test_store_server()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn open(location: &Location) -> Db {
    off_async(|| match location {
        Location::Sqlite(p) => Db::open_sqlite(p),
        Location::Postgres(url) => Db::open_postgres(url),
    })
    .unwrap()
}

/// A table's rows, every column but PostgreSQL's `seq`, in a stable order.
fn dump(location: &Location, table: &str) -> Vec<Vec<Val>> {
    let mut db = open(location);
    off_async(|| {
        let columns: Vec<String> = db
            .columns(table)
            .unwrap()
            .into_iter()
            .filter(|c| c != "seq")
            .collect();
        let mut rows: Vec<Vec<Val>> = db
            .query(&format!("SELECT {} FROM {table}", columns.join(", ")), &[])
            .unwrap()
            .into_iter()
            .map(|r| r.values().to_vec())
            .collect();
        rows.sort_by_key(|r| format!("{r:?}"));
        rows
    })
}

fn run_ok(sandbox: &Sandbox, args: &[&str]) -> String {
    let out = sandbox.cli(None).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

#[test]
fn a_store_with_every_kind_of_row_copies_from_sqlite_to_postgres_and_back() {
    let sandbox = Sandbox::new();
    let source = sandbox.path("var/source.db");
    let source_arg = &source.to_str().unwrap().to_string();
    // Snapshot mode for Westmarch's employments: feed state and snapshot rows too.
    let council = sandbox.path("mappings/westmarch/council.yaml");
    let yaml = std::fs::read_to_string(&council).unwrap();
    let at = yaml.find("  employments:\n").expect("employments feed") + "  employments:\n".len();
    std::fs::write(
        &council,
        format!("{}    mode: snapshot\n{}", &yaml[..at], &yaml[at..]),
    )
    .unwrap();
    run_ok(&sandbox, &["--store", source_arg, "store", "init"]);
    let out = sandbox
        .cli(None)
        .args(["--store", source_arg, "run"])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("processed"), "{}", stdout(&out));
    {
        let store = Store::open(&source).unwrap();
        let failure = store.failures(None, false, 1).unwrap().remove(0);
        store
            .discard_failure(failure.id, "test-operator", "a test")
            .unwrap();
        store
            .create_token("ci", "viewer", None, &"ab".repeat(32), "test-operator")
            .unwrap();
        store
            .create_replay_job(
                "job-1",
                "test-operator",
                "a test",
                &FailureFilter::default(),
                0,
            )
            .unwrap();
        store
            .record_audit(
                &AuditEntry {
                    actor: "test-operator",
                    action: "batch.release",
                    target: "b",
                    detail: "d",
                    council: Some("northshire"),
                    outcome: "done",
                    records: 3,
                },
                None,
            )
            .unwrap();
        store
            .set_last_fire("northshire", "payroll", "2026-11-30T02:00:00Z")
            .unwrap();
    }
    let source = Location::Sqlite(source.clone());
    // An accepted snapshot leaves no pending changes (a held one would): one row by hand.
    open(&source)
        .execute(
            "INSERT INTO snapshot_changes (batch_id, record_key, action, content_hash, body)
             VALUES ((SELECT MIN(id) FROM batches), 'E1-1', 'upsert', 'h', '{}')",
            &[],
        )
        .unwrap();
    for table in COPIED_TABLES {
        assert!(
            !dump(&source, table).is_empty(),
            "the source has rows in {table}"
        );
    }

    // Into a fresh PostgreSQL database: `store migrate` first, then the copy.
    let database = TestDatabase::create(&server());
    let pg = Location::parse(database.url());
    let migrated = run_ok(&sandbox, &["--store", database.url(), "store", "migrate"]);
    let mut lines = migrated.lines();
    let first = lines.next().unwrap();
    assert!(first.contains(": schema version 0 of "), "{migrated}");
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("migrated: schema version "),
        "{migrated}"
    );
    let again = run_ok(&sandbox, &["--store", database.url(), "store", "migrate"]);
    assert!(again.contains("up to date: schema version "), "{again}");

    let copied = run_ok(
        &sandbox,
        &[
            "store",
            "copy",
            "--from",
            source_arg,
            "--to",
            database.url(),
        ],
    );
    for table in COPIED_TABLES {
        let n = dump(&source, table).len();
        assert!(
            copied
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == [*table, &n.to_string(), "rows"]),
            "{table}: {n} rows in {copied}"
        );
        assert_eq!(dump(&source, table), dump(&pg, table), "{table}");
    }

    // A target that holds batches already is refused, and nothing is written to it.
    let out = sandbox
        .cli(None)
        .args([
            "store",
            "copy",
            "--from",
            source_arg,
            "--to",
            database.url(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already holds"),
        "{err}"
    );
    assert_eq!(dump(&source, "outbox").len(), dump(&pg, "outbox").len());

    // The copy is a working store: new ids continue after the copied ones, and it reads the
    // same outbox counts.
    {
        let store = Store::open(&pg).unwrap();
        let id = store
            .create_token("second", "viewer", None, &"cd".repeat(32), "test-operator")
            .unwrap();
        let max = dump(&source, "api_tokens").len() as i64;
        assert!(id > max, "a new token's id {id} follows the copied ones");
    }
    let counts = |store: &str| {
        let out = sandbox
            .cli(None)
            .args(["--store", store, "--json", "outbox", "status"])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(counts(source_arg), counts(database.url()));

    // And back into a new SQLite file: the same rows as the original (the token added on
    // PostgreSQL aside).
    let back = sandbox.path("var/back.db");
    run_ok(
        &sandbox,
        &[
            "store",
            "copy",
            "--from",
            database.url(),
            "--to",
            back.to_str().unwrap(),
        ],
    );
    let back = Location::Sqlite(back);
    for table in COPIED_TABLES {
        let (mut want, got) = (dump(&pg, table), dump(&back, table));
        if *table != "api_tokens" && *table != "audit" {
            want = dump(&source, table);
        }
        assert_eq!(want, got, "{table}");
    }
}
