//! Throughput and memory benchmark of the whole pipeline: `cargo bench --bench pipeline`.
//!
//! A plain `main` (no criterion). It generates a Northshire payroll export (Windows-1252, CRLF,
//! title row, header, quoted `£` amounts, trailer with count and gross total) of `BENCH_ROWS`
//! rows (default 100,000; fictional people) that `mappings/northshire/payroll.yaml` maps
//! without a rejection, and measures:
//!
//! * A — decode + map + validate + envelope, in memory: no store, no broker;
//! * B — end to end: `pipeline::process_file` into a fresh store, then `pipeline::flush` to
//!   RabbitMQ (a unique exchange per run, with a durable queue bound on `#`); and, on a copy of
//!   the store, the flush's outbox bookkeeping alone (read a page, mark it sent); and the store
//!   writes of processing alone (the same messages written in chunks into a fresh store);
//! * C — the same messages published directly with lapin on one confirm channel with the same
//!   window (512 unconfirmed, mandatory, persistent): the broker's limit from one publisher;
//!   and through the library's `Publisher` without the store, in one call and in pages of the
//!   flush's size, which splits the flush's cost between publisher, pages and store; then the
//!   flush again, of a second copy of the store, between two direct runs (side by side);
//! * memory — peak RSS (VmHWM) of this process after each phase, and of two child processes
//!   (this binary again with `--decode-only N`) doing phase A at N and 4N rows, to show that
//!   memory does not grow with file size.
//! * instructions per record of phase A — a `--decode-only` child under callgrind, counting
//!   only `phase_a_records` (`BENCH_INSTR_ROWS`, default 20,000; stable on a busy machine);
//!   and of phase B's processing — a `--process-only` child (file → a fresh SQLite store, no
//!   broker) counting only `phase_b_process`;
//! * whole runs — `--whole-run FILE` children (file → store → RabbitMQ, confirmed) at
//!   `BENCH_ROWS` and `BENCH_MILLION` (default 1,000,000; 0 skips) rows: time and peak RSS.
//!
//! Every phase also reports the CPU seconds used by this process and by the broker (the local
//! `beam.smp`), and the load average is printed: on a small shared machine, other work moves
//! the figures.
//!
//! RabbitMQ is required (`BENCH_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`):
//! the benchmark panics when it cannot connect rather than skip the broker phases. The
//! exchanges and queues it declares are deleted at the end, even when a phase fails.

use std::fmt::Write as _;
use std::io::{BufWriter, Write as _};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use council_bridge::amqp::{self, BrokerConfig};
use council_bridge::canonical::envelope::{self, OutboundMessage, Provenance};
use council_bridge::canonical::{Entity, Registry};
use council_bridge::formats::csv::CsvDecoder;
use council_bridge::formats::{FormatOptions, Item, compression};
use council_bridge::mapping::{self, Mapping};
use council_bridge::pipeline::{self, flush::Retry};
use council_bridge::sources;
use council_bridge::store::Store;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::Value;

/// The allocator the `council-bridge` binary uses (see `src/main.rs`), so that the benchmark
/// measures what the binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_ROWS: usize = 100_000;
const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Unconfirmed messages in flight, as `BrokerConfig::new` sets for the pipeline.
const WINDOW: usize = 512;
/// Messages `pipeline::flush` reads from the outbox and publishes per round (its `PAGE`).
const FLUSH_PAGE: usize = 2000;
const COUNCIL: &str = "northshire";
const FEED: &str = "payroll";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--decode-only") {
        let rows = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--decode-only needs a row count");
        decode_only_child(rows);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--process-only") {
        let rows = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--process-only needs a row count");
        process_only_child(rows);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--generate") {
        // `--generate FILE ROWS`: only write the export, to run `--whole-run FILE` by hand
        // (under a profiler, say).
        let file = args.get(i + 1).expect("--generate needs a file");
        let rows = args
            .get(i + 2)
            .and_then(|n| n.parse().ok())
            .expect("--generate needs a row count");
        generate(Path::new(file), rows);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--whole-run") {
        let file = args.get(i + 1).expect("--whole-run needs a file");
        whole_run_child(Path::new(file));
        return;
    }
    // `cargo test --all-targets` runs bench targets too, without `--bench`: the benchmark
    // takes minutes and is not a test, so it runs only under `cargo bench`.
    if !args.iter().any(|a| a == "--bench") {
        println!("benches/pipeline.rs: run with `cargo bench --bench pipeline`");
        return;
    }
    let rows = match std::env::var("BENCH_ROWS") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("BENCH_ROWS must be a whole number, not {v:?}")),
        Err(_) => DEFAULT_ROWS,
    };
    assert!(rows > 0, "BENCH_ROWS must be at least 1");
    let url = std::env::var("BENCH_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_string());

    let load_at_start = loadavg();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Fail fast, before minutes of work, when the broker is not there.
    let admin = rt.block_on(connect_or_panic(&url, "council-bridge-bench-admin"));

    let (mapping, registry) = load_mapping();
    let entity = registry
        .get(&mapping.entity)
        .expect("the payroll entity is in the registry");

    let work = tempfile::tempdir().expect("temp dir");
    let csv_path = work.path().join("payroll_bench.csv");
    let gen_start = Instant::now();
    let generated = generate(&csv_path, rows);
    let gen_secs = gen_start.elapsed().as_secs_f64();

    // Phase A: decode + map + validate + envelope.
    let a = decode_map_validate(&csv_path, &mapping, entity);
    assert_eq!(
        a.records, rows as u64,
        "phase A: every generated row must map and validate"
    );
    let hwm_after_a = vmhwm_kb();

    // Phase B (process): file → store.
    let store = Store::open(work.path().join("bench.db")).expect("open the store");
    let meter = Meter::start();
    let raw = sources::describe(&csv_path).expect("describe the file");
    let report = pipeline::process_file(&registry, &store, COUNCIL, FEED, &mapping, &raw, false)
        .expect("process_file");
    let process = meter.stop();
    assert_eq!(report.status, "processed", "file report: {report:?}");
    assert_eq!(report.valid, rows as u64, "every row valid: {report:?}");
    assert_eq!(report.rejected, 0, "no row rejected: {report:?}");
    assert_eq!(
        report.new_messages, rows as u64,
        "every record a new message: {report:?}"
    );
    assert_eq!(
        report
            .control
            .as_ref()
            .and_then(|c| c.get("matches"))
            .and_then(Value::as_bool),
        Some(true),
        "trailer count and gross total must match: {:?}",
        report.control
    );
    let hwm_after_process = vmhwm_kb();
    let expected = rows as u64 + 1; // the records and the batch manifest
    let counts = store.outbox_counts().expect("outbox counts");
    assert_eq!(
        counts.pending, expected,
        "outbox after processing: {counts:?}"
    );
    // A copy of the store as processing left it: after the flush, phase C reads exactly the
    // messages the flush sent from it, and the flush's outbox bookkeeping is measured on it.
    let copy = work.path().join("copy.db");
    copy_store(&store, &copy);
    // A second copy, flushed again near the end between two direct runs.
    let copy_again = work.path().join("copy-again.db");
    copy_store(&store, &copy_again);

    // Phases B (publish) and C against a topology of this run's own; removed afterwards even
    // when a phase fails.
    let run = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    );
    let mut broker = BrokerConfig::new(url.clone());
    broker.exchange = format!("council-bridge.bench.{run}.events");
    broker.dead_letter_exchange = format!("council-bridge.bench.{run}.dlx");
    broker.dead_letter_queue = format!("council-bridge.bench.{run}.dead-letters");
    broker.connection_name = "council-bridge-bench".into();
    let sink = format!("council-bridge.bench.{run}.sink");
    let topology = rt.block_on(declare(&admin, &broker, &sink));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        broker_phases(
            &rt,
            &admin,
            &store,
            [&copy, &copy_again],
            &broker,
            &sink,
            expected,
        )
    }));
    rt.block_on(cleanup(&admin, &broker, &sink, topology));
    let BrokerFigures {
        publish,
        publish_again,
        direct_last,
        bookkeeping,
        writes,
        library,
        paged,
        direct: direct_first,
        direct_after,
        wire_bytes,
        hwm_after_flush,
        hwm_after_snapshot,
    } = match outcome {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let hwm_end = vmhwm_kb();
    let load_after_broker = loadavg();

    // Memory against file size: phase A alone, in fresh processes, at N and 4N rows.
    let children: Vec<ChildFigures> = [rows, rows * 4].into_iter().map(run_child).collect();

    // Report.
    let mb = |bytes: u64| bytes as f64 / 1_048_576.0;
    let rate = |n: u64, secs: f64| {
        if secs > 0.0 {
            n as f64 / secs
        } else {
            f64::INFINITY
        }
    };
    println!();
    println!(
        "council-bridge pipeline benchmark: {rows} payroll rows, {:.1} MB Windows-1252 CSV \
         (generated in {gen_secs:.2} s); {} cores",
        mb(generated.bytes),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "messages: {expected} (records + 1 manifest), {:.0} bytes each on average \
         (body + headers), window {WINDOW}, mandatory, persistent, publisher confirms",
        wire_bytes as f64 / expected as f64
    );
    println!();
    let line = "-".repeat(106);
    println!(
        "{:<47}{:>10}{:>10}{:>12}{:>13}{:>14}",
        "phase", "messages", "seconds", "per second", "bench CPU s", "broker CPU s"
    );
    println!("{line}");
    let row = |name: &str, n: u64, span: Span| {
        println!(
            "{name:<47}{n:>10}{:>10.3}{:>12}{:>13.2}{:>14}",
            span.wall,
            thousands(rate(n, span.wall)),
            span.cpu,
            span.broker_cpu
                .map_or_else(|| "n/a".into(), |c| format!("{c:.2}")),
        );
    };
    row("A  decode+map+validate+envelope", a.records, a.span);
    row(
        "B  process: file -> store (process_file)",
        rows as u64,
        process,
    );
    row(
        &format!("   outbox writes alone, chunks of {}", pipeline::CHUNK),
        expected,
        writes,
    );
    row("B  publish: store -> broker (flush)", expected, publish);
    row(
        &format!("   outbox reads+marks alone, pages of {FLUSH_PAGE}"),
        expected,
        bookkeeping,
    );
    row(
        "B  end to end (process + publish)",
        expected,
        process.plus(publish),
    );
    row(
        "C  Publisher::publish, one call, no store",
        expected,
        library,
    );
    row(
        &format!("C  Publisher::publish, pages of {FLUSH_PAGE}, no store"),
        expected,
        paged,
    );
    row(
        "C  broker limit: direct lapin, after the flush",
        expected,
        direct_first,
    );
    row("C  direct lapin again", expected, direct_after);
    row(
        "B  publish again: a copy of the store (flush)",
        expected,
        publish_again,
    );
    row("C  direct lapin, last", expected, direct_last);
    println!("{line}");
    // The broker's limit: the mean of the first two direct runs, which bracket the library's.
    let direct = direct_first.mean(direct_after);
    println!(
        "flush publish rate / direct lapin rate (mean of the first two direct runs): {:.2}   \
         (against the first: {:.2}, the second: {:.2}; Publisher::publish one call / direct: {:.2}; \
         in pages / direct: {:.2})",
        direct.wall / publish.wall,
        direct_first.wall / publish.wall,
        direct_after.wall / publish.wall,
        direct.wall / library.wall,
        direct.wall / paged.wall,
    );
    // The same comparison side by side: the second flush against the direct runs either side.
    println!(
        "second flush / the direct runs either side of it (mean): {:.2}   (before it: {:.2}, after it: {:.2})",
        direct_after.mean(direct_last).wall / publish_again.wall,
        direct_after.wall / publish_again.wall,
        direct_last.wall / publish_again.wall,
    );
    batched_end_to_end(
        &rt,
        &url,
        &registry,
        &mapping,
        &csv_path,
        work.path(),
        rows,
        process,
        publish,
        direct,
    );
    println!();
    println!("{:<84}{:>10}{:>12}", "peak RSS (VmHWM)", "rows", "MB");
    println!("{line}");
    let mem = |what: &str, n: usize, kb: u64| {
        println!("{what:<84}{n:>10}{:>12.1}", kb as f64 / 1024.0);
    };
    mem(
        "this process, after A (decode+map+validate+envelope)",
        rows,
        hwm_after_a,
    );
    mem(
        "this process, after B process (file -> store)",
        rows,
        hwm_after_process,
    );
    mem(
        "this process, after B flush (store -> broker)",
        rows,
        hwm_after_flush,
    );
    mem(
        "this process, after loading all messages into memory for C",
        rows,
        hwm_after_snapshot,
    );
    mem("this process, after C", rows, hwm_end);
    for c in &children {
        println!(
            "{:<84}{:>10}{:>12.1}",
            format!(
                "child --decode-only (A only, {:.1} MB file, {} rec/s)",
                mb(c.file_bytes),
                thousands(c.rate)
            ),
            c.rows,
            c.vmhwm_kb as f64 / 1024.0
        );
    }
    println!("{line}");
    println!(
        "load average (1/5/15 min): {load_at_start} at start, {load_after_broker} after C, {} at end",
        loadavg()
    );
    phase_a_instructions();
    whole_runs(rows);
}

/// Wall-clock and CPU seconds of one phase: this process's (all threads) and the broker's
/// (`beam.smp` processes on this machine, when there are any), so the figures say who was busy.
#[derive(Clone, Copy)]
struct Span {
    wall: f64,
    cpu: f64,
    broker_cpu: Option<f64>,
}

impl Span {
    fn plus(self, other: Span) -> Span {
        Span {
            wall: self.wall + other.wall,
            cpu: self.cpu + other.cpu,
            broker_cpu: self.broker_cpu.zip(other.broker_cpu).map(|(a, b)| a + b),
        }
    }

    /// The mean of two measurements of the same work.
    fn mean(self, other: Span) -> Span {
        Span {
            wall: (self.wall + other.wall) / 2.0,
            cpu: (self.cpu + other.cpu) / 2.0,
            broker_cpu: self
                .broker_cpu
                .zip(other.broker_cpu)
                .map(|(a, b)| (a + b) / 2.0),
        }
    }
}

struct Meter {
    start: Instant,
    cpu: f64,
    broker_cpu: Option<f64>,
}

impl Meter {
    fn start() -> Self {
        Meter {
            cpu: cpu_secs("self").unwrap_or_default(),
            broker_cpu: broker_cpu_secs(),
            start: Instant::now(),
        }
    }

    fn stop(&self) -> Span {
        let wall = self.start.elapsed().as_secs_f64();
        Span {
            wall,
            cpu: cpu_secs("self").unwrap_or_default() - self.cpu,
            broker_cpu: self
                .broker_cpu
                .zip(broker_cpu_secs())
                .map(|(before, after)| after - before),
        }
    }
}

/// User + system CPU seconds of a process (all its threads), from /proc/<pid>/stat.
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state is field 3, utime 14, stime 15 (USER_HZ ticks,
    // 100 a second on Linux).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU seconds used so far by the RabbitMQ server (Erlang `beam.smp`) on this machine.
fn broker_cpu_secs() -> Option<f64> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "beam.smp"
            && let Some(c) = cpu_secs(pid)
        {
            *total.get_or_insert(0.0) += c;
        }
    }
    total
}

/// The first three fields of /proc/loadavg: other work on the machine skews the figures.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs this benchmark again as a child with `args` and returns a reader of the `name=value`
/// figures on the line of its output that starts with `prefix`.
fn child_figures(args: &[&str], prefix: &str) -> impl Fn(&str) -> f64 + use<> {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run the {args:?} child: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("{args:?} printed no figures: {text}"))
        .to_string();
    move |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    }
}

/// The `--decode-only N` child: generate N rows, run phase A, print the figures on one line.
fn decode_only_child(rows: usize) {
    let (mapping, registry) = load_mapping();
    let entity = registry.get(&mapping.entity).expect("payroll entity");
    let work = tempfile::tempdir().expect("temp dir");
    let path = work.path().join("payroll_bench.csv");
    let generated = generate(&path, rows);
    let a = decode_map_validate(&path, &mapping, entity);
    assert_eq!(
        a.records, rows as u64,
        "every generated row must map and validate"
    );
    println!(
        "decode-only rows={} file_bytes={} secs={:.3} rate={:.0} vmhwm_kb={}",
        a.records,
        generated.bytes,
        a.span.wall,
        a.records as f64 / a.span.wall,
        vmhwm_kb()
    );
}

/// The `--process-only N` child: generate N rows, then phase B's processing alone
/// (`process_file` into a fresh SQLite store, no broker), and print the figures on one line.
fn process_only_child(rows: usize) {
    let (mapping, registry) = load_mapping();
    let work = tempfile::tempdir().expect("temp dir");
    let path = work.path().join("payroll_bench.csv");
    generate(&path, rows);
    let store = Store::open(work.path().join("process.db")).expect("open the store");
    let raw = sources::describe(&path).expect("describe the file");
    let started = Instant::now();
    let report = phase_b_process(&registry, &store, &mapping, &raw);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.valid, rows as u64, "every row valid: {report:?}");
    assert_eq!(
        report.new_messages, rows as u64,
        "every record a new message: {report:?}"
    );
    println!(
        "process-only rows={} secs={secs:.3} rate={:.0}",
        report.valid,
        report.valid as f64 / secs
    );
}

/// Phase B's processing of one file into a store. Not inlined: the phase B instruction count
/// collects exactly this function (callgrind's `--toggle-collect`).
#[inline(never)]
fn phase_b_process(
    registry: &Registry,
    store: &Store,
    mapping: &Mapping,
    raw: &sources::RawFile,
) -> pipeline::FileReport {
    pipeline::process_file(registry, store, COUNCIL, FEED, mapping, raw, false)
        .expect("process_file")
}

struct ChildFigures {
    rows: u64,
    file_bytes: u64,
    rate: f64,
    vmhwm_kb: u64,
}

fn run_child(rows: usize) -> ChildFigures {
    let field = child_figures(&["--decode-only", &rows.to_string()], "decode-only ");
    ChildFigures {
        rows: field("rows") as u64,
        file_bytes: field("file_bytes") as u64,
        rate: field("rate"),
        vmhwm_kb: field("vmhwm_kb") as u64,
    }
}

fn load_mapping() -> (Mapping, Registry) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let registry = Registry::load(&root.join("schemas")).expect("load the canonical schemas");
    let mapping = mapping::load(&root.join("mappings/northshire/payroll.yaml"), &registry)
        .expect("compile mappings/northshire/payroll.yaml");
    (mapping, registry)
}

/// Peak resident set size of this process, in kB.
fn vmhwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// A rate with thousands separators.
fn thousands(v: f64) -> String {
    if v.is_finite() {
        grouped(v.round() as u64)
    } else {
        "inf".into()
    }
}

/// `1234567` → `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------
// The export generator
// ---------------------------------------------------------------------------------------

struct Generated {
    bytes: u64,
}

/// xorshift64*: deterministic, good enough to vary fictional payroll figures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

const FORENAMES: &[&str] = &[
    "Grace", "Thomas", "Priya", "Daniel", "Chloé", "Marek", "Helen", "Kwame", "Susan", "Aisha",
    "Jordan", "Oliver", "Erik", "Bethany", "Rose", "Siân", "Zoë", "Rhys", "Fatima", "Callum",
];
const SURNAMES: &[&str] = &[
    "Ashby",
    "Brennan",
    "Carrow",
    "Dunmore",
    "Elstow",
    "Fairlie",
    "O’Keeffe",
    "Greaves",
    "Holloway",
    "Iveson",
    "Jessop",
    "Kettering",
    "Lomax",
    "Madoc",
    "Nuttall",
    "Pryce-Jones",
    "Renshaw",
    "Thackeray",
    "Underwood",
    "Whitlock",
];
const TAX_CODES: &[&str] = &[
    "1257L", "1257L", "1257L", "1257L", "1257L", "BR", "K475", "S1257L", "C1257L", "0T", "D0",
    "1100L",
];
const NI_LETTERS: &[&str] = &["A", "A", "A", "A", "A", "A", "M", "B", "C", "H", "J", "Z"];

/// Formats pence the way the export does: `£3,912.50`, negatives as `(312.50)` or `-£45.00`.
fn money(pence: i64, parentheses: bool) -> String {
    let abs = pence.unsigned_abs();
    let pounds = abs / 100;
    let mut s = String::new();
    if pence < 0 {
        s.push_str(if parentheses { "(" } else { "-£" });
    } else {
        s.push('£');
    }
    s.push_str(&grouped(pounds));
    let _ = write!(s, ".{:02}", abs % 100);
    if pence < 0 && parentheses {
        s.push(')');
    }
    s
}

/// A CSV field, quoted when it holds a delimiter (as the export does).
fn field(line: &mut String, value: &str) {
    if !line.is_empty() {
        line.push(',');
    }
    if value.contains(',') || value.contains('"') {
        line.push('"');
        line.push_str(&value.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(value);
    }
}

fn money_or_nil(pence: i64) -> String {
    if pence == 0 {
        "Nil".into()
    } else {
        money(pence, false)
    }
}

/// Writes a payroll export of `rows` detail rows in the layout of
/// `mappings/northshire/samples/payroll/payroll_202610.csv`, every row valid.
fn generate(path: &Path, rows: usize) -> Generated {
    let file = std::fs::File::create(path).expect("create the export");
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    let mut bytes = 0u64;
    let mut put = |out: &mut BufWriter<std::fs::File>, line: &str| {
        let (encoded, _, unmappable) = encoding_rs::WINDOWS_1252.encode(line);
        assert!(!unmappable, "not representable in Windows-1252: {line}");
        out.write_all(&encoded).expect("write the export");
        out.write_all(b"\r\n").expect("write the export");
        bytes += encoded.len() as u64 + 2;
    };
    put(
        &mut out,
        "Northshire County Council - Payroll results October 2026 - run 27/10/2026",
    );
    put(
        &mut out,
        "Employee No,Employee Name,Freq,Period Start,Period End,Pay Date,Tax Code,NI Cat,\
         Gross Pay,Taxable Pay,Tax,Ee NI,Er NI,Ee Pension,Er Pension,Net Pay,Adj,Sort Code,\
         Account No",
    );
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut gross_total: i64 = 0;
    let mut line = String::with_capacity(256);
    for i in 0..rows {
        line.clear();
        let roll = rng.below(100);
        let (freq, start, end, paid) = match roll {
            0..=84 => ("M", "01/10/2026", "31/10/2026", "27/10/2026"),
            85..=94 => ("4W", "28/09/2026", "25/10/2026", "30/10/2026"),
            _ => ("W", "19/10/2026", "25/10/2026", "30/10/2026"),
        };
        let adjustment = rng.below(200) == 0;
        let ni = rng.pick(NI_LETTERS);
        let name = format!("{}, {}", rng.pick(SURNAMES), rng.pick(FORENAMES));
        // Unique employee numbers (leading zero kept, as exported), hence unique record keys.
        field(&mut line, &format!("{:06}", 10_001 + i));
        field(&mut line, &name);
        field(&mut line, freq);
        field(&mut line, start);
        field(&mut line, end);
        field(&mut line, paid);
        let gross;
        if adjustment {
            // A correction: every amount negative, written the two ways the export does.
            gross = -(1_000 + rng.below(60_000) as i64);
            let tax = gross / 5;
            let ee_ni = gross * 8 / 100;
            let er_ni = gross * 15 / 100;
            let net = gross - tax - ee_ni;
            let paren = rng.below(2) == 0;
            field(&mut line, "0T");
            field(&mut line, ni);
            for v in [gross, gross, tax, ee_ni, er_ni] {
                field(&mut line, &money(v, paren));
            }
            field(&mut line, "Nil");
            field(&mut line, "Nil");
            field(&mut line, &money(net, paren));
            field(&mut line, "Y");
        } else {
            gross = 60_000 + rng.below(640_000) as i64;
            let opted_out = rng.below(30) == 0;
            let (ee_pension, er_pension) = if opted_out {
                (0, 0)
            } else {
                (gross * 85 / 1000, gross * 195 / 1000)
            };
            let taxable = gross - ee_pension;
            let tax = ((taxable - 104_750) * 20 / 100).max(0);
            let ee_ni = ((gross - 104_800) * 8 / 100).max(0);
            let er_ni = ((gross - 41_700) * 15 / 100).max(0);
            let net = gross - tax - ee_ni - ee_pension;
            field(&mut line, rng.pick(TAX_CODES));
            field(&mut line, ni);
            field(&mut line, &money(gross, false));
            field(&mut line, &money(taxable, false));
            field(&mut line, &money_or_nil(tax));
            field(&mut line, &money_or_nil(ee_ni));
            // Category M (under 21): no employer NI, shown as "-".
            field(
                &mut line,
                &if ni == "M" {
                    "-".into()
                } else {
                    money_or_nil(er_ni)
                },
            );
            field(&mut line, &money_or_nil(ee_pension));
            field(&mut line, &money_or_nil(er_pension));
            field(&mut line, &money(net, false));
            field(&mut line, "N");
        }
        gross_total += gross;
        let sort = rng.below(1_000_000);
        let (a, b, c) = (sort / 10_000, sort / 100 % 100, sort % 100);
        field(
            &mut line,
            &match i % 3 {
                0 => format!("{a:02}-{b:02}-{c:02}"),
                1 => format!("{a:02} {b:02} {c:02}"),
                _ => format!("{sort:06}"),
            },
        );
        field(&mut line, &format!("{:08}", rng.below(100_000_000)));
        put(&mut out, &line);
    }
    line.clear();
    field(&mut line, "TRAILER");
    field(&mut line, &rows.to_string());
    field(&mut line, &money(gross_total, false));
    put(&mut out, &line);
    out.flush().expect("write the export");
    Generated { bytes }
}

// ---------------------------------------------------------------------------------------
// Phase A
// ---------------------------------------------------------------------------------------

struct PhaseA {
    records: u64,
    span: Span,
}

/// Streams the file through decode → map → validate → envelope, as the pipeline does,
/// without the store. The file's sha256 (needed for provenance) is computed before timing.
fn decode_map_validate(path: &Path, mapping: &Mapping, entity: &Entity) -> PhaseA {
    let raw = sources::describe(path).expect("describe the file");
    let now = chrono::Utc::now();
    let batch_id = uuid::Uuid::new_v4().to_string();
    let meter = Meter::start();
    // The pipeline's byte path: the file, buffered and sniffed for gzip, then the CSV decoder
    // with the mapping's options.
    let FormatOptions::Csv(options) = &mapping.source.format else {
        panic!("the payroll mapping is expected to read CSV");
    };
    let (bytes, _gzip) =
        compression::sniff(sources::open(&raw).expect("open the file")).expect("read the file");
    let decoder =
        CsvDecoder::new(raw.name.clone(), bytes, options.clone()).expect("read the header");
    let (records, trailer) = phase_a_records(decoder, mapping, entity, &raw, &batch_id, now);
    let span = meter.stop();
    assert!(trailer, "the trailer row was not recognised");
    PhaseA { records, span }
}

/// Phase A's work on every record of the file. Not inlined: `phase_a_instructions` counts the
/// instructions of exactly this function (callgrind's `--toggle-collect`).
#[inline(never)]
fn phase_a_records(
    decoder: CsvDecoder<Box<dyn std::io::Read>>,
    mapping: &Mapping,
    entity: &Entity,
    raw: &sources::RawFile,
    batch_id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> (u64, bool) {
    let binding = mapping
        .bind(&decoder.header())
        .expect("bind the mapping to the header");
    let mut records = 0u64;
    let mut body_bytes = 0usize;
    let mut trailer = false;
    for item in decoder {
        match item.expect("decode") {
            Item::Record(rec) => {
                let mapped = mapping
                    .apply(&binding, &rec)
                    .unwrap_or_else(|e| panic!("row {} does not map: {e:?}", rec.locator.row));
                let body = Value::Object(mapped.body);
                if let Err(e) = entity.validate(&body) {
                    panic!("row {} is not valid: {e:?}", rec.locator.row);
                }
                let message = envelope::record_message(
                    entity,
                    &mapping.action,
                    &mapped.key,
                    &body,
                    &Provenance {
                        council: COUNCIL,
                        feed: FEED,
                        batch_id,
                        file_sha256: &raw.sha256,
                        locator: &rec.locator,
                        mapping_id: &mapping.id,
                        mapping_version: mapping.version,
                    },
                    now,
                );
                body_bytes += std::hint::black_box(message).body.len();
                records += 1;
            }
            Item::Control(_) => trailer = true,
            Item::Failure(f) => panic!("row {} failed to decode: {}", f.locator.row, f.reason),
        }
    }
    std::hint::black_box(body_bytes);
    (records, trailer)
}

// ---------------------------------------------------------------------------------------
// Phases B (publish) and C: the broker
// ---------------------------------------------------------------------------------------

async fn connect_or_panic(url: &str, name: &str) -> Connection {
    let redacted = amqp::redact_url(url);
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    match tokio::time::timeout(Duration::from_secs(10), Connection::connect(url, props)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!(
            "this benchmark needs RabbitMQ, which is unreachable at {redacted}: {e}. \
             Start it (docker compose -f docker/compose.yaml up -d) or set BENCH_AMQP_URL."
        ),
        Err(_) => panic!(
            "this benchmark needs RabbitMQ, which did not answer at {redacted} within 10 s. \
             Start it (docker compose -f docker/compose.yaml up -d) or set BENCH_AMQP_URL."
        ),
    }
}

/// What was declared, so cleanup removes only that.
struct Topology {
    channel: Channel,
}

/// Declares the run's exchanges and dead-letter queue (as the publisher would), and a durable
/// queue bound on `#` so that every message is routable.
async fn declare(admin: &Connection, broker: &BrokerConfig, sink: &str) -> Topology {
    let channel = admin.create_channel().await.expect("open an admin channel");
    amqp::declare_topology(&channel, broker)
        .await
        .expect("declare the run's exchanges");
    let mut args = FieldTable::default();
    // A run that dies before cleanup leaves no queue full of messages behind for long. An hour:
    // on a busy machine a million-row run can spend more than ten minutes processing before
    // it publishes, and an expired sink makes every later message unroutable.
    args.insert(
        ShortString::from("x-expires"),
        AMQPValue::LongInt(3_600_000),
    );
    channel
        .queue_declare(
            ShortString::from(sink),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .expect("declare the sink queue");
    channel
        .queue_bind(
            ShortString::from(sink),
            ShortString::from(broker.exchange.as_str()),
            ShortString::from("#"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the sink queue");
    Topology { channel }
}

async fn cleanup(admin: &Connection, broker: &BrokerConfig, sink: &str, t: Topology) {
    let ch = &t.channel;
    for queue in [sink, broker.dead_letter_queue.as_str()] {
        if let Err(e) = ch
            .queue_delete(ShortString::from(queue), QueueDeleteOptions::default())
            .await
        {
            eprintln!("warning: could not delete queue {queue}: {e}");
        }
    }
    for exchange in [&broker.exchange, &broker.dead_letter_exchange] {
        if let Err(e) = ch
            .exchange_delete(
                ShortString::from(exchange.as_str()),
                ExchangeDeleteOptions::default(),
            )
            .await
        {
            eprintln!("warning: could not delete exchange {exchange}: {e}");
        }
    }
    let _ = admin.close(200, ShortString::from("bye")).await;
}

async fn queue_depth(admin: &Connection, sink: &str) -> u32 {
    let ch = admin.create_channel().await.expect("open a channel");
    let q = ch
        .queue_declare(
            ShortString::from(sink),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("inspect the sink queue");
    let _ = ch.close(200, ShortString::from("bye")).await;
    q.message_count()
}

/// What the broker phases measured.
struct BrokerFigures {
    publish: Span,
    publish_again: Span,
    direct_last: Span,
    bookkeeping: Span,
    writes: Span,
    library: Span,
    paged: Span,
    direct: Span,
    /// Direct lapin again, after the library's runs: the broker gets slower over a run of the
    /// benchmark (its message store after several 100,000-message purges), so the first run
    /// alone would flatter the broker's limit against the phases that come after it.
    direct_after: Span,
    wire_bytes: usize,
    hwm_after_flush: u64,
    hwm_after_snapshot: u64,
}

/// Runs the flush (B publish); then, with the messages read from the copy of the store,
/// measures the flush's outbox bookkeeping alone and publishes the same messages directly
/// with lapin and with the library's `Publisher` (C), each into the emptied queue.
fn broker_phases(
    rt: &tokio::runtime::Runtime,
    admin: &Connection,
    store: &Store,
    [copy, copy_again]: [&Path; 2],
    broker: &BrokerConfig,
    sink: &str,
    expected: u64,
) -> BrokerFigures {
    // B publish: the pipeline's own flush, outbox → broker.
    rt.block_on(settle());
    let meter = Meter::start();
    flush_all(rt, store, broker, expected);
    let publish = meter.stop();
    let depth = rt.block_on(queue_depth(admin, sink));
    assert_eq!(
        u64::from(depth),
        expected,
        "messages in the sink queue after the flush"
    );
    let hwm_after_flush = vmhwm_kb();

    // The flush's messages, all in memory (not timed), then its bookkeeping alone, and the
    // store writes of processing alone, into a fresh store.
    let writes_db = copy.with_file_name("writes.db");
    let copy = Store::open(copy).expect("open the copy of the store");
    let messages: Vec<OutboundMessage> = copy
        .pending(u32::MAX)
        .expect("read the outbox")
        .into_iter()
        .map(|p| p.message)
        .collect();
    assert_eq!(messages.len() as u64, expected);
    let wire_bytes = messages.iter().map(message_size).sum();
    let hwm_after_snapshot = vmhwm_kb();
    let bookkeeping = outbox_bookkeeping(&copy, expected);
    let writes = outbox_writes(&writes_db, &messages);
    let messages = &messages;

    // Every publish of phase C into the sink: purged before, and every message counted in it
    // after.
    let into_sink = |what: &str, publish: &dyn Fn() -> Span| -> Span {
        rt.block_on(purge(admin, sink));
        let span = publish();
        let depth = rt.block_on(queue_depth(admin, sink));
        assert_eq!(
            u64::from(depth),
            expected,
            "messages in the sink queue after {what}"
        );
        span
    };
    let direct_lapin = || rt.block_on(direct_publish(&broker.url, &broker.exchange, messages));

    // C (direct): the same messages, straight through lapin.
    let direct = into_sink("the direct publish", &direct_lapin);

    // C (library): the same messages through the library's `Publisher`, without the store:
    // in one call, then in pages of the flush's size. The differences split the flush's cost
    // into the publisher's own, its page boundaries and the outbox bookkeeping.
    let library: Vec<Span> = [messages.len(), FLUSH_PAGE]
        .into_iter()
        .map(|page| {
            into_sink(&format!("Publisher::publish in pages of {page}"), &|| {
                rt.block_on(library_publish(broker, messages, page))
            })
        })
        .collect();
    // C (direct) again.
    let direct_after = into_sink("the second direct publish", &direct_lapin);
    // B publish again, on the second copy of the store as processing left it, between two
    // direct runs: the flush and direct lapin side by side, as the broker is at that point.
    let flush_again = || {
        let again = Store::open(copy_again).expect("open the second copy of the store");
        let meter = Meter::start();
        flush_all(rt, &again, broker, expected);
        meter.stop()
    };
    let publish_again = into_sink("the second flush", &flush_again);
    // C (direct), last.
    let direct_last = into_sink("the third direct publish", &direct_lapin);
    BrokerFigures {
        publish,
        publish_again,
        direct_last,
        bookkeeping,
        writes,
        library: library[0],
        paged: library[1],
        direct,
        direct_after,
        wire_bytes,
        hwm_after_flush,
        hwm_after_snapshot,
    }
}

/// `pipeline::flush` of `store`, which must publish `expected` messages, every one confirmed
/// and none left pending, unroutable or refused.
fn flush_all(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    broker: &BrokerConfig,
    expected: u64,
) -> council_bridge::pipeline::FlushReport {
    let report = rt
        .block_on(pipeline::flush(store, broker, &Retry::default()))
        .expect("flush");
    assert!(report.error.is_none(), "flush stopped: {report:?}");
    assert_eq!(
        report.published, expected,
        "flush must publish every message: {report:?}"
    );
    assert_eq!(
        report.unroutable + report.rejected + report.still_pending,
        0,
        "{report:?}"
    );
    report
}

/// The store's side of processing alone, without the reading: the flush's messages written
/// into a fresh store at `path` in chunks of the pipeline's size, one transaction each,
/// the write-ahead log checkpointed beside the writer, as `process_file`'s chunk writer does.
fn outbox_writes(path: &Path, messages: &[OutboundMessage]) -> Span {
    let store = Store::open(path).expect("open a fresh store");
    let batch = council_bridge::store::NewBatch {
        id: "bench-writes",
        council: COUNCIL,
        feed: FEED,
        file_name: "payroll_bench.csv",
        file_sha256: "bench-writes",
        mapping_id: "northshire-payroll",
        mapping_version: 1,
    };
    store.begin_batch(&batch).expect("begin a batch");
    let meter = Meter::start();
    let wal = store.wal_checkpointer().expect("a checkpointer");
    let mut new = 0;
    for chunk in messages.chunks(pipeline::CHUNK) {
        new += store
            .write_chunk(&batch, chunk, &[], false)
            .expect("write a chunk")
            .new;
        if let Some(w) = &wal {
            w.nudge();
        }
    }
    drop(wal);
    let span = meter.stop();
    assert_eq!(new, messages.len() as u64, "every message is a new row");
    span
}

/// Copies the store's database and write-ahead log; the store is idle, so together they are
/// consistent.
fn copy_store(store: &Store, copy: &Path) {
    let council_bridge::store::Location::Sqlite(path) = store.location() else {
        panic!("the benchmark's store is an SQLite file");
    };
    for suffix in ["", "-wal"] {
        let from = format!("{}{suffix}", path.display());
        if Path::new(&from).exists() {
            std::fs::copy(&from, format!("{}{suffix}", copy.display())).expect("copy the store");
        }
    }
}

/// The flush's outbox bookkeeping alone, without the broker: read `FLUSH_PAGE` pending
/// messages and mark them sent until none is left (on the copy of the store).
fn outbox_bookkeeping(copy: &Store, expected: u64) -> Span {
    let meter = Meter::start();
    let mut marked = 0u64;
    loop {
        let page = copy.pending(FLUSH_PAGE as u32).expect("read the outbox");
        if page.is_empty() {
            break;
        }
        let ids: Vec<i64> = page.iter().map(|m| m.outbox_id).collect();
        copy.mark_sent(&ids).expect("mark sent");
        marked += ids.len() as u64;
    }
    let span = meter.stop();
    assert_eq!(marked, expected, "bookkeeping on the copy of the store");
    span
}

/// Publishes `messages` with the library's `Publisher`, `page` messages per call, as the flush
/// does but without the outbox; panics unless every message is confirmed.
async fn library_publish(broker: &BrokerConfig, messages: &[OutboundMessage], page: usize) -> Span {
    let publisher = amqp::Publisher::connect(broker)
        .await
        .expect("connect the library publisher");
    let refs: Vec<&OutboundMessage> = messages.iter().collect();
    let meter = Meter::start();
    let mut outcomes = Vec::with_capacity(refs.len());
    for chunk in refs.chunks(page.max(1)) {
        outcomes.extend(publisher.publish(chunk).await);
    }
    let span = meter.stop();
    publisher.close().await;
    if let Some(other) = outcomes.iter().find(|o| **o != amqp::Outcome::Confirmed) {
        panic!("Publisher::publish did not confirm every message: {other:?}");
    }
    assert_eq!(outcomes.len(), messages.len());
    span
}

/// Empties the sink queue and lets the broker finish deleting before the next measurement.
async fn purge(admin: &Connection, sink: &str) {
    let ch = admin.create_channel().await.expect("open a channel");
    ch.queue_purge(ShortString::from(sink), QueuePurgeOptions::default())
        .await
        .expect("purge the sink queue");
    let _ = ch.close(200, ShortString::from("bye")).await;
    settle().await;
}

/// Waits until the broker is idle (its CPU below 10% of a core over half a second, at most
/// 30 s), so that deleting purged messages does not slow the next measurement. Without a
/// local broker process to watch, waits 3 s.
async fn settle() {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let Some(before) = broker_cpu_secs() else {
            tokio::time::sleep(Duration::from_secs(3)).await;
            return;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        if broker_cpu_secs().is_some_and(|after| after - before < 0.05) {
            return;
        }
    }
}

/// Publishes `messages` on one confirm channel of a fresh connection, at most `WINDOW`
/// unconfirmed, mandatory and persistent; measures from the first publish to the last
/// confirm. Panics unless every message is confirmed (acked and not returned).
async fn direct_publish(url: &str, exchange: &str, messages: &[OutboundMessage]) -> Span {
    let conn = connect_or_panic(url, "council-bridge-bench-direct").await;
    let ch = conn.create_channel().await.expect("open a channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let check = |c: lapin::Result<Confirmation>| match c {
        Ok(Confirmation::Ack(None)) => {}
        Ok(Confirmation::Ack(Some(r))) => {
            panic!("returned: {} {}", r.reply_code, r.reply_text)
        }
        other => panic!("not confirmed: {other:?}"),
    };
    let meter = Meter::start();
    let mut in_flight = FuturesOrdered::new();
    for m in messages {
        if in_flight.len() >= WINDOW {
            check(in_flight.next().await.expect("a confirm in flight"));
        }
        let confirm = ch
            .basic_publish(
                ShortString::from(exchange),
                ShortString::from(m.routing_key.as_str()),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &m.body,
                council_bridge::amqp::properties(m),
            )
            .await
            .expect("basic.publish");
        in_flight.push_back(confirm);
    }
    while let Some(c) = in_flight.next().await {
        check(c);
    }
    let span = meter.stop();
    let _ = conn.close(200, ShortString::from("bye")).await;
    span
}

/// Batched mode end to end: the same file processed into a fresh store for a feed with
/// `publish: { batched: true }` (`BATCHED_SIZE` records per message), then flushed into a
/// topology of its own; printed with the ratios against direct lapin of the same run.
#[allow(clippy::too_many_arguments)]
fn batched_end_to_end(
    rt: &tokio::runtime::Runtime,
    url: &str,
    registry: &Registry,
    mapping: &Mapping,
    csv: &Path,
    work: &Path,
    rows: usize,
    process: Span,
    publish: Span,
    direct: Span,
) {
    const BATCHED_SIZE: u32 = 500;
    let admin = rt.block_on(connect_or_panic(url, "council-bridge-bench-batched"));
    let run = format!(
        "{}-{}-batched",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    );
    let mut broker = BrokerConfig::new(url.to_string());
    broker.exchange = format!("council-bridge.bench.{run}.events");
    broker.dead_letter_exchange = format!("council-bridge.bench.{run}.dlx");
    broker.dead_letter_queue = format!("council-bridge.bench.{run}.dead-letters");
    broker.connection_name = "council-bridge-bench-batched".into();
    let sink = format!("council-bridge.bench.{run}.sink");
    let topology = rt.block_on(declare(&admin, &broker, &sink));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let store = Store::open(work.join("batched.db")).expect("open the batched store");
        let policy = council_bridge::config::FeedPolicy {
            publish_batch_size: Some(BATCHED_SIZE),
            ..Default::default()
        };
        rt.block_on(settle());
        let meter = Meter::start();
        let raw = sources::describe(csv).expect("describe the file");
        let report = pipeline::process_file_with(
            registry,
            &store,
            COUNCIL,
            FEED,
            mapping,
            &raw,
            false,
            &policy,
            &Default::default(),
        )
        .expect("process_file_with (batched feed)");
        let b_process = meter.stop();
        assert_eq!(report.valid, rows as u64, "{report:?}");
        let meter = Meter::start();
        let flushed = flush_all(rt, &store, &broker, rows as u64 + 1);
        let b_publish = meter.stop();
        assert_eq!(flushed.batched_records, rows as u64, "{flushed:?}");
        let depth = rt.block_on(queue_depth(&admin, &sink));
        assert_eq!(
            u64::from(depth),
            flushed.batch_messages + 1,
            "batch messages and the manifest in the sink queue"
        );
        (b_process, b_publish, flushed.batch_messages)
    }));
    rt.block_on(cleanup(&admin, &broker, &sink, topology));
    let (b_process, b_publish, batch_messages) = match outcome {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let records = rows as u64 + 1;
    let rate = |n: u64, secs: f64| n as f64 / secs.max(1e-9);
    println!();
    println!(
        "batched mode ({BATCHED_SIZE} records per message): {batch_messages} batch messages + 1 manifest"
    );
    for (name, span) in [
        ("B' process: file -> store (batched feed)", b_process),
        ("B' publish: store -> broker (flush), records", b_publish),
        (
            "B' end to end (process + publish), records",
            b_process.plus(b_publish),
        ),
    ] {
        println!(
            "{name:<47}{records:>10}{:>10.3}{:>12}{:>13.2}{:>14}",
            span.wall,
            thousands(rate(records, span.wall)),
            span.cpu,
            span.broker_cpu
                .map_or_else(|| "n/a".into(), |c| format!("{c:.2}")),
        );
    }
    let direct_rate = rate(records, direct.wall);
    println!(
        "ratios to direct lapin ({} msg/s): flush {:.2}, end to end {:.2} (single messages); \
         batched flush {:.2}, batched end to end {:.2} (records/s against messages/s)",
        thousands(direct_rate),
        rate(records, publish.wall) / direct_rate,
        rate(records, process.plus(publish).wall) / direct_rate,
        rate(records, b_publish.wall) / direct_rate,
        rate(records, b_process.plus(b_publish).wall) / direct_rate,
    );
}

/// Approximate bytes of a message: body plus header names and values.
fn message_size(m: &OutboundMessage) -> usize {
    m.body.len()
        + m.headers
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or_else(|| v.to_string().len(), str::len))
            .sum::<usize>()
}

// ---------------------------------------------------------------------------------------
// Instructions per record (phase A) and whole runs (file → RabbitMQ confirmed) in children
// ---------------------------------------------------------------------------------------

/// Rows of the file phase A is counted on (`BENCH_INSTR_ROWS`, default 20,000).
fn instr_rows() -> usize {
    env_count("BENCH_INSTR_ROWS", 20_000)
}

/// A whole number from the environment, or `default` when the variable is not set.
fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {v:?}")),
        Err(_) => default,
    }
}

/// Instructions per record of phase A and of phase B's processing, counted by callgrind on a
/// `--decode-only` and a `--process-only` child: only `phase_a_records` (decode, map, validate,
/// envelope) and `phase_b_process` (all of `process_file`: phase A's work and the store's, with
/// the chunk writer's thread, `pipeline::writer::write_all`) are collected (`--toggle-collect`), so generating the file, loading the mapping and hashing the
/// file are not counted. Instruction counts do not move with the load on the machine, unlike
/// wall times; they do not count the kernel's work (the store's writes and fsyncs).
/// `BENCH_CALLGRIND_OUT=<file>` keeps the phase A profile for `callgrind_annotate` (and
/// `<file>.b` the phase B one). Without valgrind, says so loudly (perf's hardware counters are
/// not available in this VM, so there is no second tool to fall back on).
fn phase_a_instructions() {
    let rows = instr_rows();
    println!();
    let line = "-".repeat(106);
    if rows == 0 {
        println!("instructions per record (phases A and B): skipped (BENCH_INSTR_ROWS=0)");
        return;
    }
    let available = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        println!("{line}");
        println!(
            "!!! instructions per record (phases A and B) NOT MEASURED: valgrind is not installed. \
             Install valgrind (apt-get install valgrind) to count them."
        );
        println!("{line}");
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let out_a = std::env::var("BENCH_CALLGRIND_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| work.path().join("callgrind.out"));
    let mut out_b = out_a.clone().into_os_string();
    out_b.push(".b");
    let a = callgrind_count(&["phase_a_records"], "--decode-only", rows, &out_a);
    // Phase B writes its chunks on a thread of its own (`pipeline::writer`): counted too.
    let b = callgrind_count(
        &["phase_b_process", "pipeline::writer::write_all"],
        "--process-only",
        rows,
        Path::new(&out_b),
    );
    println!(
        "{:<84}{:>10}{:>12}",
        "instructions (callgrind, the phase's function only)", "rows", "per record"
    );
    println!("{line}");
    for (name, (total, secs)) in [
        ("A  decode+map+validate+envelope", a),
        ("B  file -> store (process_file)", b),
    ] {
        println!(
            "{:<84}{rows:>10}{:>12}",
            format!(
                "{name}: {} instructions ({secs:.0} s under valgrind)",
                grouped(total)
            ),
            grouped(total / rows as u64)
        );
    }
    println!("{line}");
}

/// Runs this benchmark as a `mode rows` child under callgrind, collecting only `functions` (on
/// whichever thread they run), and returns the instructions counted and the seconds it took.
fn callgrind_count(functions: &[&str], mode: &str, rows: usize, out_file: &Path) -> (u64, f64) {
    let exe = std::env::current_exe().expect("current exe");
    let started = Instant::now();
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .args(functions.iter().map(|f| format!("--toggle-collect=*{f}*")))
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&exe)
        .args([mode, &rows.to_string()])
        .output()
        .expect("run valgrind");
    assert!(
        out.status.success(),
        "valgrind --tool=callgrind {} {mode} {rows} failed: {}\n{}",
        exe.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let profile = std::fs::read_to_string(out_file).expect("read the callgrind output");
    // `summary:` (older valgrind) or `totals:`: the collected events, Ir first.
    let total: u64 = profile
        .lines()
        .find_map(|l| l.strip_prefix("summary:").or(l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no totals in {}", out_file.display()));
    assert!(
        total > 0,
        "callgrind collected nothing: are `{functions:?}` still functions of their own?"
    );
    (total, started.elapsed().as_secs_f64())
}

/// One whole run's figures, from a `--whole-run` child.
struct WholeRun {
    rows: u64,
    file_bytes: u64,
    process_secs: f64,
    flush_secs: f64,
    /// Peak RSS when processing (file → store) had finished.
    process_vmhwm_kb: u64,
    vmhwm_kb: u64,
}

/// Whole runs in child processes, at `BENCH_ROWS` and at `BENCH_MILLION` rows (default
/// 1,000,000; 0 skips it): each child processes a generated file into a fresh store and flushes
/// it to RabbitMQ with every message confirmed, and reports its peak RSS (VmHWM) and its time
/// from the file to the last confirm.
fn whole_runs(rows: usize) {
    let million = env_count("BENCH_MILLION", 1_000_000);
    let mut sizes = vec![rows];
    if million > 0 && million != rows {
        sizes.push(million);
    }
    let figures: Vec<WholeRun> = sizes.into_iter().map(whole_run).collect();
    println!();
    println!(
        "{:<47}{:>10}{:>10}{:>12}{:>13}{:>16}{:>14}",
        "whole run in a child (file -> RabbitMQ)",
        "messages",
        "seconds",
        "per second",
        "process s",
        "RSS after B MB",
        "peak RSS MB"
    );
    let line = "-".repeat(122);
    println!("{line}");
    for f in &figures {
        let secs = f.process_secs + f.flush_secs;
        println!(
            "{:<47}{:>10}{secs:>10.3}{:>12}{:>13.3}{:>16.1}{:>14.1}",
            format!(
                "{} rows, {:.1} MB file, confirmed",
                grouped(f.rows),
                f.file_bytes as f64 / 1_048_576.0
            ),
            f.rows + 1,
            thousands((f.rows + 1) as f64 / secs),
            f.process_secs,
            f.process_vmhwm_kb as f64 / 1024.0,
            f.vmhwm_kb as f64 / 1024.0
        );
    }
    println!("{line}");
    if million == 0 {
        println!("(the 1,000,000-row run was skipped: BENCH_MILLION=0)");
    }
}

/// Generates `rows` rows and runs a `--whole-run` child on them.
fn whole_run(rows: usize) -> WholeRun {
    let work = tempfile::tempdir().expect("temp dir");
    let path = work.path().join("payroll_bench.csv");
    let generated = generate(&path, rows);
    let field = child_figures(&["--whole-run", &path.display().to_string()], "whole-run ");
    assert_eq!(field("rows") as usize, rows);
    WholeRun {
        rows: rows as u64,
        file_bytes: generated.bytes,
        process_secs: field("process_secs"),
        flush_secs: field("flush_secs"),
        process_vmhwm_kb: field("process_vmhwm_kb") as u64,
        vmhwm_kb: field("vmhwm_kb") as u64,
    }
}

/// The `--whole-run FILE` child: the file into a fresh store (`process_file`), then the store to
/// RabbitMQ (`flush`) on a topology of its own, checks that every message was confirmed and is
/// in the sink queue, and prints its times and peak RSS on one line.
fn whole_run_child(file: &Path) {
    let url = std::env::var("BENCH_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let admin = rt.block_on(connect_or_panic(
        &url,
        "council-bridge-bench-whole-run-admin",
    ));
    let (mapping, registry) = load_mapping();
    let work = tempfile::tempdir().expect("temp dir");
    let store = Store::open(work.path().join("run.db")).expect("open the store");
    let run = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    );
    let mut broker = BrokerConfig::new(url.clone());
    broker.exchange = format!("council-bridge.bench.{run}.events");
    broker.dead_letter_exchange = format!("council-bridge.bench.{run}.dlx");
    broker.dead_letter_queue = format!("council-bridge.bench.{run}.dead-letters");
    broker.connection_name = "council-bridge-bench-whole-run".into();
    let sink = format!("council-bridge.bench.{run}.sink");
    let topology = rt.block_on(declare(&admin, &broker, &sink));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let started = Instant::now();
        let raw = sources::describe(file).expect("describe the file");
        let report =
            pipeline::process_file(&registry, &store, COUNCIL, FEED, &mapping, &raw, false)
                .expect("process_file");
        let process_secs = started.elapsed().as_secs_f64();
        let process_vmhwm = vmhwm_kb();
        assert_eq!(report.rejected, 0, "no row rejected: {report:?}");
        let expected = report.valid + 1;
        let flushed = Instant::now();
        flush_all(&rt, &store, &broker, expected);
        let flush_secs = flushed.elapsed().as_secs_f64();
        let depth = rt.block_on(queue_depth(&admin, &sink));
        assert_eq!(u64::from(depth), expected, "messages in the sink queue");
        (report.valid, process_secs, flush_secs, process_vmhwm)
    }));
    let vmhwm = vmhwm_kb();
    rt.block_on(cleanup(&admin, &broker, &sink, topology));
    let (rows, process_secs, flush_secs, process_vmhwm) = match outcome {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    println!(
        "whole-run rows={rows} process_secs={process_secs:.3} flush_secs={flush_secs:.3} process_vmhwm_kb={process_vmhwm} vmhwm_kb={vmhwm}"
    );
}
