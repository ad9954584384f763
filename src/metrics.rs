//! Every metric council-bridge exports, defined in one place (names, labels, units), in the
//! Prometheus text format served at `serve`'s `/metrics`. Counters and the publish-latency
//! histogram count what this process did since it started; gauges (outbox depth, held batches,
//! last success, lateness) are read from the store when scraped, so they tell the truth even
//! about work another process (a cron `run`) did on the same store.
//!
//! Without an installed recorder (the one-shot commands), every call here is a no-op.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Records read from a file, by outcome (`valid`, `rejected`).
pub const RECORDS: &str = "council_bridge_records_total";
/// Files taken, by status (`processed`, `held`, `skipped`, `failed`, `abandoned`).
pub const FILES: &str = "council_bridge_files_total";
/// Messages the broker confirmed.
pub const PUBLISHED: &str = "council_bridge_published_messages_total";
/// Seconds from publishing a page of messages to the broker's last confirm for it.
pub const PUBLISH_SECONDS: &str = "council_bridge_publish_seconds";
/// Messages the platform dead-lettered, kept as failures.
pub const DEAD_LETTERS: &str = "council_bridge_dead_letters_total";
/// Outbox messages by state.
pub const OUTBOX: &str = "council_bridge_outbox_messages";
/// Batches held for an operator, per feed.
pub const HELD_BATCHES: &str = "council_bridge_held_batches";
/// Unix time of a feed's last completed batch.
pub const LAST_SUCCESS: &str = "council_bridge_feed_last_success_timestamp_seconds";
/// Seconds a feed is past its `expected_by` time with nothing arrived (0 when on time).
pub const LATENESS: &str = "council_bridge_feed_lateness_seconds";
/// Runs of a feed started by the daemon, by trigger (`schedule`, `watch`).
pub const RUNS: &str = "council_bridge_feed_runs_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(PUBLISH_SECONDS.into()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        )
        .map_err(|e| e.to_string())?
        .build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

/// One file taken by a feed: its status and record counts.
pub fn file_taken(council: &str, feed: &str, status: &str, valid: u64, rejected: u64) {
    let labels = [("council", council.to_string()), ("feed", feed.to_string())];
    ::metrics::counter!(
        FILES,
        &[
            ("council", council.to_string()),
            ("feed", feed.to_string()),
            ("status", status.to_string())
        ]
    )
    .increment(1);
    let with = |outcome: &str| {
        let mut l = labels.to_vec();
        l.push(("outcome", outcome.to_string()));
        l
    };
    ::metrics::counter!(RECORDS, &with("valid")).increment(valid);
    ::metrics::counter!(RECORDS, &with("rejected")).increment(rejected);
}

/// A run of a feed started by the daemon.
pub fn run_started(council: &str, feed: &str, trigger: &str) {
    ::metrics::counter!(
        RUNS,
        &[
            ("council", council.to_string()),
            ("feed", feed.to_string()),
            ("trigger", trigger.to_string())
        ]
    )
    .increment(1);
}

/// A page of `n` messages confirmed by the broker `seconds` after it was published.
pub fn published(n: u64, seconds: f64) {
    ::metrics::counter!(PUBLISHED).increment(n);
    if n > 0 {
        ::metrics::histogram!(PUBLISH_SECONDS).record(seconds);
    }
}

/// A dead letter kept as a failure.
pub fn dead_letter() {
    ::metrics::counter!(DEAD_LETTERS).increment(1);
}

/// Outbox depth in one state.
pub fn outbox(state: &str, n: u64) {
    ::metrics::gauge!(OUTBOX, &[("state", state.to_string())]).set(n as f64);
}

/// A feed's held batches, last success and lateness, as read from the store.
pub fn feed(
    council: &str,
    feed: &str,
    held: u64,
    last_success: Option<i64>,
    lateness_seconds: f64,
) {
    let labels = [("council", council.to_string()), ("feed", feed.to_string())];
    ::metrics::gauge!(HELD_BATCHES, &labels).set(held as f64);
    if let Some(t) = last_success {
        ::metrics::gauge!(LAST_SUCCESS, &labels).set(t as f64);
    }
    ::metrics::gauge!(LATENESS, &labels).set(lateness_seconds);
}
