//! The daemon's scheduler, driven by a clock the test controls: a scheduled feed runs at its
//! occurrence (London time, across the October BST change), not before; a file dropped in
//! between waits for the next occurrence; runs missed while the daemon was down run once at
//! start. The daemon runs in this process (`council_bridge::daemon::run`) so the clock can be
//! handed to it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use council_bridge::canonical::Registry;
use council_bridge::config::Config;
use council_bridge::daemon::{self, Serve};
use council_bridge::pipeline;
use council_bridge::schedule::ManualClock;
use council_bridge::store::Store;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Scheduled runs of northshire/payroll recorded in the store, oldest first.
fn scheduled_runs(store: &Store) -> Vec<String> {
    let mut runs: Vec<_> = store
        .runs(Some("northshire"), Some("payroll"), 100)
        .unwrap()
        .into_iter()
        .filter(|r| r.trigger == "schedule")
        .map(|r| r.started_at)
        .collect();
    runs.sort();
    runs
}

fn start(
    config: &Arc<Config>,
    store: &Arc<Store>,
    clock: &Arc<ManualClock>,
) -> tokio::task::JoinHandle<()> {
    pipeline::clear_stop();
    let serve = Serve {
        config: config.clone(),
        registry: Arc::new(Registry::load(&config.schemas).unwrap()),
        store: store.clone(),
        broker: None,
        listen: format!("127.0.0.1:{}", free_port()),
        clock: clock.clone(),
    };
    tokio::spawn(async move { daemon::run(serve).await.expect("daemon runs") })
}

async fn stop(handle: tokio::task::JoinHandle<()>) {
    pipeline::request_stop();
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("daemon stops")
        .unwrap();
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "not true after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_feed_runs_at_its_london_time_and_a_missed_run_once_at_start() {
    let sandbox = common::Sandbox::new();
    for c in ["riverton", "eastborough", "westmarch", "southvale"] {
        std::fs::remove_dir_all(sandbox.path(&format!("mappings/{c}"))).unwrap();
    }
    // Payroll runs at 01:30 London every night and is not watched; the other feeds are.
    let council = sandbox.path("mappings/northshire/council.yaml");
    let yaml = std::fs::read_to_string(&council).unwrap().replace(
        "  payroll:\n    mapping: payroll.yaml\n",
        "  payroll:\n    mapping: payroll.yaml\n    schedule: \"30 1 * * *\"\n",
    );
    assert!(yaml.contains("schedule: \"30 1 * * *\""));
    std::fs::write(&council, yaml).unwrap();
    let config = Arc::new(Config::load(&sandbox.config()).unwrap());
    let store = Arc::new(sandbox.open_store());

    // Saturday 24 October 2026, noon: the daemon starts; payroll is not due yet.
    let clock = Arc::new(ManualClock::new(utc("2026-10-24T12:00:00Z")));
    let daemon = start(&config, &store, &clock);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(scheduled_runs(&store).is_empty(), "nothing before 01:30");
    let batches = store.batches(Some("northshire"), 100).unwrap();
    assert!(
        batches.iter().any(|b| b.feed == "hr-employees"),
        "watched feeds run at once"
    );
    assert!(
        !batches.iter().any(|b| b.feed == "payroll"),
        "the scheduled feed waits"
    );

    // 25 October is the autumn change: 01:30 London happens twice (00:30 and 01:30 UTC).
    clock.set(utc("2026-10-25T00:29:00Z"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(scheduled_runs(&store).is_empty());
    clock.set(utc("2026-10-25T00:30:30Z"));
    wait_for("the 01:30 BST run", Duration::from_secs(30), || {
        scheduled_runs(&store).len() == 1
    })
    .await;
    assert!(
        store
            .batches(Some("northshire"), 100)
            .unwrap()
            .iter()
            .any(|b| b.feed == "payroll")
    );
    // The second 01:30 (GMT) of the same night does not run it again.
    clock.set(utc("2026-10-25T01:30:30Z"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        scheduled_runs(&store).len(),
        1,
        "one run for the repeated hour"
    );

    // A new payroll file arrives during the day: not watched, so it waits for the night.
    let sample = common::repo().join("mappings/northshire/samples/payroll/payroll_202610.csv");
    let text = std::fs::read(&sample).unwrap();
    let newer = String::from_utf8_lossy(&text)
        .replace("010401,", "010499,")
        .into_bytes();
    let late_file = sandbox.path("mappings/northshire/samples/payroll/payroll_202610_b.csv");
    std::fs::write(&late_file, &newer).unwrap();
    clock.set(utc("2026-10-25T14:00:00Z"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let payroll_batches = || {
        store
            .batches(Some("northshire"), 100)
            .unwrap()
            .into_iter()
            .filter(|b| b.feed == "payroll")
            .count()
    };
    assert_eq!(payroll_batches(), 1, "the new file waits for the schedule");

    // The daemon goes down for three nights (26, 27, 28 October, now GMT: 01:30 UTC).
    stop(daemon).await;
    clock.set(utc("2026-10-28T09:00:00Z"));
    let daemon = start(&config, &store, &clock);
    wait_for("one catch-up run at start", Duration::from_secs(30), || {
        scheduled_runs(&store).len() == 2
    })
    .await;
    wait_for("the waiting file read", Duration::from_secs(30), || {
        payroll_batches() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        scheduled_runs(&store).len(),
        2,
        "missed nights run once, not three times"
    );
    let st = store.peek_schedule_state("northshire", "payroll").unwrap();
    assert_eq!(
        st.last_fire.as_deref().map(utc),
        Some(utc("2026-10-28T01:30:00Z"))
    );

    // The next night runs again, at 01:30 GMT.
    clock.set(utc("2026-10-29T01:29:00Z"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(scheduled_runs(&store).len(), 2);
    clock.set(utc("2026-10-29T01:30:10Z"));
    wait_for("the next night's run", Duration::from_secs(30), || {
        scheduled_runs(&store).len() == 3
    })
    .await;
    stop(daemon).await;
}
