//! Scale-out throughput: records/s end to end (files → PostgreSQL store → RabbitMQ, confirmed)
//! for 1, 2 and 3 `serve` instances sharing one PostgreSQL store: `cargo bench --bench scale_out`.
//!
//! A plain `main`. For each instance count: a fresh PostgreSQL database, a sandbox with one
//! fictional council of 12 payroll feeds (Northshire layout, `tests/common::write_payroll`)
//! holding `BENCH_SCALE_ROWS` records in all (default 120,000, in files of 5,000 rows), a
//! durable sink queue bound on `#`; then the instances are started together and the clock runs
//! until every file's batch is completed and nothing is pending or staged. Start-up of the
//! processes is inside the measured time.
//!
//! Needs PostgreSQL (`BENCH_PG`, default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! RabbitMQ (`BENCH_AMQP_URL`); panics when either is absent. `BENCH_SCALE_INSTANCES` (e.g.
//! `1,3`) picks the instance counts. On a small machine the instances share its cores with
//! PostgreSQL and RabbitMQ: the load average and core count are printed with the table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use council_bridge::amqp;
use council_bridge::store::db::off_async;
use council_bridge::store::{Location, Store};
use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};

const FEEDS: usize = 12;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

fn pg_server() -> String {
    env_or("BENCH_PG", "postgres://postgres@127.0.0.1:5432/postgres")
}

fn amqp_url() -> String {
    env_or("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

fn admin() -> postgres::Client {
    postgres::Client::connect(&pg_server(), postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is required and not reachable at {}: {e}",
            pg_server()
        )
    })
}

struct Figures {
    instances: usize,
    rows: usize,
    seconds: f64,
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench` (once per store
    // pass): then a smoke run only, 10,000 records on 1 and 2 instances (the same code and the
    // same check that every record and manifest is sent once, in seconds rather than minutes;
    // tests/scale_out.rs is the test of several instances).
    let smoke = !std::env::args().any(|a| a == "--bench");
    if smoke {
        println!(
            "benches/scale_out.rs: smoke run (10,000 records, 1 and 2 instances); the benchmark is `cargo bench --bench scale_out`"
        );
    }
    let rows = if smoke {
        "10000".to_string()
    } else {
        env_or("BENCH_SCALE_ROWS", "120000")
    }
    .parse::<usize>()
    .expect("BENCH_SCALE_ROWS is a number");
    let files = rows.div_ceil(common::ROWS).max(1);
    let instances = if smoke {
        "1,2".to_string()
    } else {
        env_or("BENCH_SCALE_INSTANCES", "1,2,3")
    };
    let counts: Vec<usize> = instances
        .split(',')
        .map(|n| n.trim().parse().expect("BENCH_SCALE_INSTANCES: numbers"))
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut table = Vec::new();
    for &n in &counts {
        let f = runtime.block_on(one_run(n, files));
        eprintln!(
            "{} instance(s): {} records in {:.1} s",
            f.instances, f.rows, f.seconds
        );
        table.push(f);
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nscale-out: {FEEDS} feeds, files of {} rows; PostgreSQL store; {cores} cores (shared with PostgreSQL and RabbitMQ); load average {}",
        common::ROWS,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| instances | records | seconds | records/s | vs 1 instance |");
    println!("|---:|---:|---:|---:|---:|");
    let base = table.first().map(|f| f.rows as f64 / f.seconds);
    for f in &table {
        let rate = f.rows as f64 / f.seconds;
        println!(
            "| {} | {} | {:.1} | {:.0} | {} |",
            f.instances,
            f.rows,
            f.seconds,
            rate,
            base.map_or("".into(), |b| format!("{:.2}x", rate / b))
        );
    }
}

async fn one_run(instances: usize, files: usize) -> Figures {
    let db = format!("cb_bench_{}", uuid::Uuid::new_v4().simple());
    off_async(|| admin().batch_execute(&format!("CREATE DATABASE {db}")))
        .expect("create the benchmark's database");
    let server = pg_server();
    let store_url = format!(
        "{}/{db}",
        server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b)
    );
    let result = std::panic::AssertUnwindSafe(measure(instances, files, &store_url));
    let out = futures_util::FutureExt::catch_unwind(result).await;
    let _ =
        off_async(|| admin().batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")));
    match out {
        Ok(f) => f,
        Err(p) => std::panic::resume_unwind(p),
    }
}

async fn measure(instances: usize, files: usize, store_url: &str) -> Figures {
    let sandbox = common::Sandbox::new();
    let mappings = sandbox.path("mappings");
    std::fs::remove_dir_all(&mappings).unwrap();
    let council = mappings.join("benchshire");
    std::fs::create_dir_all(&council).unwrap();
    std::fs::copy(
        common::repo().join("mappings/northshire/payroll.yaml"),
        council.join("payroll.yaml"),
    )
    .unwrap();
    let mut yaml = String::from("council: benchshire\nname: Benchshire (fictional)\nfeeds:\n");
    for f in 0..FEEDS {
        yaml.push_str(&format!(
            "  payroll-{f:02}:\n    mapping: payroll.yaml\n    input: drops/{f:02}/*.csv\n    settle_seconds: 0\n"
        ));
    }
    std::fs::write(council.join("council.yaml"), yaml).unwrap();
    let mut rows = 0;
    for file in 0..files {
        let dir = council.join(format!("drops/{:02}", file % FEEDS));
        std::fs::create_dir_all(&dir).unwrap();
        rows += common::write_payroll(&dir, &format!("f{file}"), 100_000 + file * common::ROWS, 1);
    }

    let url = amqp_url();
    let broker = sandbox.broker(&url);
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ is required and not reachable at {url}: {e}"));
    let ch = conn.create_channel().await.unwrap();
    amqp::declare_topology(&ch, &broker).await.unwrap();
    let sink = format!("{}.sink", broker.exchange);
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    common::bound_queue(&ch, &broker.exchange, &sink, durable, FieldTable::default()).await;

    // The schema first, outside the measured time.
    let store = Store::open(Location::parse(store_url)).unwrap();
    let start = Instant::now();
    let mut children: Vec<Child> = (0..instances)
        .map(|n| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            Command::new(env!("CARGO_BIN_EXE_council-bridge"))
                .current_dir(sandbox.dir.path())
                .env("COUNCIL_BRIDGE_CONFIG", sandbox.config())
                .env("COUNCIL_BRIDGE_STORE", store_url)
                .env("AMQP_URL", &url)
                .env("RUST_LOG", "warn")
                .args(["--log-format", "json", "serve", "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(sandbox.path(&format!("serve-{n}.log"))).unwrap())
                .spawn()
                .unwrap()
        })
        .collect();
    let seconds = loop {
        let counts = store.outbox_counts().unwrap();
        let done = batches_of(store_url)
            .iter()
            .filter(|b| b.2 == "completed")
            .count();
        if done >= files && counts.pending == 0 && counts.staged == 0 {
            break start.elapsed().as_secs_f64();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "not done after 30 minutes: {done} of {files} files, {counts:?}"
        );
        for c in &mut children {
            assert!(c.try_wait().unwrap().is_none(), "an instance exited early");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let sent = store.outbox_counts().unwrap().sent as usize;
    assert_eq!(sent, rows + files, "every record and manifest sent once");
    for mut c in children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
    let _ = ch
        .queue_delete(
            ShortString::from(sink.as_str()),
            QueueDeleteOptions::default(),
        )
        .await;
    let _ = ch
        .queue_delete(
            ShortString::from(broker.dead_letter_queue.as_str()),
            QueueDeleteOptions::default(),
        )
        .await;
    for exchange in [&broker.exchange, &broker.dead_letter_exchange] {
        let _ = ch
            .exchange_delete(
                ShortString::from(exchange.as_str()),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
    let _ = conn.close(200, ShortString::from("bye")).await;
    Figures {
        instances,
        rows,
        seconds,
    }
}

/// The store's batches as (feed, file sha256, status), read with SQL: `Store::batches` binds
/// an untyped `?1 IS NULL` that PostgreSQL refuses ("could not determine data type").
fn batches_of(store_url: &str) -> Vec<(String, String, String)> {
    let url = store_url.to_string();
    off_async(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query("SELECT feed, file_sha256, status FROM batches", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    })
}
