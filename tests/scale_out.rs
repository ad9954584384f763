//! Scale-out (issue 15): three `serve` instances share one PostgreSQL store over a dozen feeds
//! and 200,000 records, and one of them is SIGKILLed mid-run, in the middle of a file. Every
//! record reaches RabbitMQ, each file yields one completed batch, the file the killed instance
//! was reading is taken over from its last committed chunk (same batch, nothing before the
//! checkpoint written again), no record goes out under two message ids, and the store's `sent`
//! count is what the broker received (a message sent again after the kill comes under the same
//! id). Needs PostgreSQL at 127.0.0.1:5432 (COUNCIL_BRIDGE_TEST_PG overrides the
//! server address) and RabbitMQ; fails loudly when either is absent.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Consumer, Sandbox, broker_url, repo, signal, write_payroll};
use council_bridge::store::db::off_async;
use council_bridge::store::{Location, Store};

const FEEDS: usize = 12;
/// Files of `common::ROWS` (5,000) rows: 200,000 records over the 12 feeds.
const FILES: usize = 40;
const INSTANCES: usize = 3;

/// The PostgreSQL server (its maintenance database).
fn pg_server() -> String {
    std::env::var("COUNCIL_BRIDGE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own, dropped when the test ends.
struct Database {
    name: String,
}

impl Database {
    fn create() -> Self {
        off_async(Self::create_here)
    }

    fn create_here() -> Self {
        let name = format!("cb_scale_{}", uuid::Uuid::new_v4().simple());
        let mut admin =
            postgres::Client::connect(&pg_server(), postgres::NoTls).unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is required for this test and is not reachable at {}: {e}",
                    pg_server()
                )
            });
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        Database { name }
    }

    fn url(&self) -> String {
        let server = pg_server();
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        format!("{base}/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        off_async(move || {
            if let Ok(mut admin) = postgres::Client::connect(&pg_server(), postgres::NoTls) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        });
    }
}

/// A running `serve` on the shared store, killed if the test ends without stopping it.
struct Instance {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Instance {
    fn start(sandbox: &Sandbox, store: &str, n: usize) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = sandbox.path(&format!("serve-{n}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_council-bridge"))
            .current_dir(sandbox.dir.path())
            .env("COUNCIL_BRIDGE_CONFIG", sandbox.config())
            .env("COUNCIL_BRIDGE_STORE", store)
            .env("AMQP_URL", broker_url())
            .env("RUST_LOG", "info")
            .args(["--log-format", "json", "serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Instance {
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    fn sigkill(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }

    fn sigterm(&mut self) {
        if let Some(mut c) = self.child.take() {
            let ok = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
            let start = Instant::now();
            while c.try_wait().unwrap().is_none() {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "serve did not stop within 60 s of SIGTERM\n{}",
                    self.log_tail()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One council (fictional) with `FEEDS` payroll feeds in the Northshire layout, each reading
/// its own drop folder; 200,000 records with employee numbers unique across every file.
fn sandbox_with_feeds() -> (Sandbox, usize) {
    let sandbox = Sandbox::new();
    let mappings = sandbox.path("mappings");
    std::fs::remove_dir_all(&mappings).unwrap();
    let council = mappings.join("scaleshire");
    std::fs::create_dir_all(&council).unwrap();
    std::fs::copy(
        repo().join("mappings/northshire/payroll.yaml"),
        council.join("payroll.yaml"),
    )
    .unwrap();
    let mut yaml =
        String::from("council: scaleshire\nname: Scaleshire Shared Services (fictional)\nfeeds:\n");
    for f in 0..FEEDS {
        yaml.push_str(&format!(
            "  payroll-{f:02}:\n    mapping: payroll.yaml\n    input: drops/{f:02}/*.csv\n    settle_seconds: 0\n"
        ));
    }
    std::fs::write(council.join("council.yaml"), yaml).unwrap();
    let mut rows = 0;
    for file in 0..FILES {
        let dir = council.join(format!("drops/{:02}", file % FEEDS));
        std::fs::create_dir_all(&dir).unwrap();
        rows += write_payroll(&dir, &format!("f{file}"), 100_000 + file * common::ROWS, 1);
    }
    (sandbox, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_postgres_survive_a_sigkill_and_publish_each_record_once() {
    let started = Instant::now();
    let db = Database::create();
    let store_url = db.url();
    let (sandbox, rows) = sandbox_with_feeds();
    assert_eq!(rows, 200_000);
    let mut consumer = Consumer::bind(&sandbox).await;
    // The schema is made once before the instances start (they would also race to make it).
    let store = Store::open(Location::parse(&store_url)).unwrap();

    let mut instances: Vec<Instance> = (0..INSTANCES)
        .map(|n| Instance::start(&sandbox, &store_url, n))
        .collect();
    let tails = |instances: &[Instance]| {
        instances
            .iter()
            .enumerate()
            .map(|(n, i)| format!("--- instance {n}:\n{}", i.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // SIGKILL one instance once publishing is under way and it is in the middle of a file
    // (at least one chunk of it committed). It is stopped (SIGSTOP) first, so that what it had
    // committed can be read before it dies and the others take its feeds over.
    let victim = instances[0].pid();
    let kill_at = Instant::now();
    let cut_short = loop {
        let sent = store.outbox_counts().unwrap().sent;
        if sent > 20_000 && !readings_of(&store_url, victim).is_empty() {
            signal(victim, "STOP");
            // A statement already on its way to the server lands before the reading below.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let committed = readings_of(&store_url, victim);
            if !committed.is_empty() {
                break committed;
            }
            signal(victim, "CONT"); // it finished that file meanwhile: try again
        }
        assert!(
            kill_at.elapsed() < Duration::from_secs(180),
            "never saw publishing under way while instance 0 was in the middle of a file (sent {sent})\n{}",
            tails(&instances)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    instances[0].sigkill();
    let killed_after = started.elapsed();

    // The two left read the rest (the killed one's feeds included) and publish everything.
    // Generous: the 2-core machine is shared with PostgreSQL, RabbitMQ and other builds.
    let deadline = Instant::now() + Duration::from_secs(300);
    let (batches, counts) = loop {
        let counts = store.outbox_counts().unwrap();
        let batches = batches_of(&store_url);
        let completed = batches.iter().filter(|b| b.status == "completed").count();
        if completed >= FILES && counts.pending == 0 && counts.staged == 0 {
            break (batches, counts);
        }
        assert!(
            Instant::now() < deadline,
            "not everything read and published after the kill: {completed} of {FILES} files, {counts:?}\n{}",
            tails(&instances)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for i in &mut instances {
        i.sigterm();
    }
    let finished_after = started.elapsed();

    // Each file read once to completion, in one batch: the killed instance's readings were
    // resumed (same batch id) from the checkpoint they had reached, not read again. A reading
    // killed before its first chunk was committed has nothing to resume and is abandoned.
    let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for b in &batches {
        by_file
            .entry(format!("{} {}", b.feed, b.sha256))
            .or_default()
            .push(b.status.clone());
    }
    assert_eq!(by_file.len(), FILES, "{by_file:?}");
    for (file, statuses) in &by_file {
        let completed = statuses.iter().filter(|s| *s == "completed").count();
        assert_eq!(completed, 1, "file {file}: readings {statuses:?}");
        assert!(
            statuses
                .iter()
                .all(|s| s == "completed" || s == "abandoned"),
            "file {file}: readings {statuses:?}"
        );
    }
    for (id, items) in &cut_short {
        let b = batches.iter().find(|b| &b.id == id).unwrap();
        assert_eq!(
            (b.status.as_str(), b.resumed_after),
            ("completed", Some(*items)),
            "batch {id}, killed after {items} items were committed, is resumed from there"
        );
        assert_eq!(
            b.read,
            common::ROWS as u64,
            "batch {id}: every row counted once"
        );
    }
    let abandoned = batches.iter().filter(|b| b.status == "abandoned").count();
    let resumed = batches.iter().filter(|b| b.resumed_after.is_some()).count();

    // What the broker received: every record once under one id, duplicates only of an id.
    let got = consumer
        .drain(Duration::from_secs(5), rows + FILES + 50_000)
        .await;
    let mut ids: HashSet<String> = HashSet::new();
    let mut id_of_record: HashMap<String, String> = HashMap::new();
    let mut manifests = 0usize;
    for m in &got {
        if !ids.insert(m.message_id.clone()) {
            continue; // sent again after the kill, under the same id
        }
        if m.routing_key == "payroll.pay_result.upserted.scaleshire" {
            let key = m.headers["cloudEvents:subject"].clone();
            if let Some(other) = id_of_record.insert(key.clone(), m.message_id.clone()) {
                panic!(
                    "record {key} arrived under two ids: {other} and {}",
                    m.message_id
                );
            }
        } else {
            manifests += 1;
        }
    }
    let duplicates = got.len() - ids.len();
    assert_eq!(id_of_record.len(), rows, "every record reaches RabbitMQ");
    assert_eq!(manifests, FILES, "one manifest per file");
    assert_eq!(ids.len(), rows + FILES);
    assert_eq!(
        (counts.sent as usize, counts.pending, counts.failed),
        (ids.len(), 0, 0),
        "the store's counts reconcile with the broker: {counts:?}"
    );
    eprintln!(
        "scale-out: {rows} records in {FILES} files over {FEEDS} feeds, {INSTANCES} instances; \
         one SIGKILLed at {:.1}s in the middle of {cut_short:?} (batch, items committed); all published at {:.1}s; \
         {resumed} readings resumed, {abandoned} abandoned (killed before a chunk); \
         {duplicates} messages received twice (same id)",
        killed_after.as_secs_f64(),
        finished_after.as_secs_f64()
    );
    drop(store);
    consumer.cleanup().await;
}

/// A batch as the test looks at it.
#[derive(Debug)]
struct Batch {
    id: String,
    feed: String,
    sha256: String,
    status: String,
    /// Rows read (the summary's `counts.read`), once finished.
    read: u64,
    /// The items of the file an earlier reader had committed, when this reading resumed it.
    resumed_after: Option<u64>,
}

/// The store's batches, read with SQL.
fn batches_of(store_url: &str) -> Vec<Batch> {
    let url = store_url.to_string();
    off_async(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query(
            "SELECT id, feed, file_sha256, status, summary FROM batches",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let summary: Option<String> = r.get(4);
            let summary: serde_json::Value = summary
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default();
            Batch {
                id: r.get(0),
                feed: r.get(1),
                sha256: r.get(2),
                status: r.get(3),
                read: summary["counts"]["read"].as_u64().unwrap_or(0),
                resumed_after: summary["resumed_after_items"].as_u64(),
            }
        })
        .collect()
    })
}

/// The files the process `pid` is reading and has committed at least one chunk of: (batch id,
/// items its checkpoint covers). The batch's reader is the process's lease holder id.
fn readings_of(store_url: &str, pid: u32) -> Vec<(String, u64)> {
    let url = store_url.to_string();
    off_async(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query(
            "SELECT b.id, b.checkpoint FROM batches b WHERE b.status = 'processing'
             AND b.checkpoint IS NOT NULL
             AND b.reader IN (SELECT holder FROM leases WHERE pid = $1)",
            &[&i64::from(pid)],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let checkpoint: String = r.get(1);
            let checkpoint: serde_json::Value = serde_json::from_str(&checkpoint).unwrap();
            (r.get(0), checkpoint["items"].as_u64().unwrap())
        })
        .collect()
    })
}
