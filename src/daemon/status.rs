//! How each feed is doing: its schedule and next run, its last arrival and outcome, held
//! batches, and whether it is late. Read from the configuration and the store only, so
//! `council-bridge status` says the same whether or not a daemon is running.

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::schedule::london;
use crate::store::{Store, StoreError, lease};

/// One feed's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedStatus {
    /// Council.
    pub council: String,
    /// Feed.
    pub feed: String,
    /// `schedule <cron>`, `watch`, or `schedule <cron> + watch`.
    pub mode: String,
    /// Next scheduled run (UTC, RFC 3339).
    pub next_run: Option<String>,
    /// The same in London time, for people.
    pub next_run_london: Option<String>,
    /// When a file of the feed was last taken.
    pub last_arrival: Option<String>,
    /// When a batch of the feed last completed.
    pub last_success: Option<String>,
    /// Status of its newest batch.
    pub last_status: Option<String>,
    /// Batches held for an operator.
    pub held: u64,
    /// `expected_by:` (London `HH:MM`).
    pub expected_by: Option<String>,
    /// Set when nothing arrived by today's `expected_by`: the deadline (UTC).
    pub late_since: Option<String>,
    /// Seconds past the deadline (0 when not late).
    pub lateness_seconds: f64,
    /// The process reading it right now, if any.
    pub running: Option<String>,
}

fn parse(t: &Option<String>) -> Option<DateTime<Utc>> {
    t.as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

/// Every configured feed's state at `now`.
pub fn feed_statuses(
    config: &Config,
    store: &Store,
    now: DateTime<Utc>,
) -> Result<Vec<FeedStatus>, StoreError> {
    let activity = store.feed_activity()?;
    let leases = store.leases()?;
    let mut out = Vec::new();
    for c in &config.councils {
        for f in &c.feeds {
            let a = activity
                .iter()
                .find(|a| a.council == c.id && a.feed == f.id)
                .cloned()
                .unwrap_or_default();
            let mode = match (&f.schedule, f.watch) {
                (Some(s), true) => format!("schedule {} + watch", s.pattern()),
                (Some(s), false) => format!("schedule {}", s.pattern()),
                (None, true) => "watch".to_string(),
                (None, false) => "manual".to_string(),
            };
            let next = f.schedule.as_ref().and_then(|s| s.next_after(now));
            let late = f
                .expected_by
                .and_then(|e| e.late(parse(&a.last_arrival), now));
            let name = lease::feed(&c.id, &f.id);
            out.push(FeedStatus {
                council: c.id.clone(),
                feed: f.id.clone(),
                mode,
                next_run: next.map(|t| t.to_rfc3339()),
                next_run_london: next.map(london),
                last_arrival: a.last_arrival,
                last_success: a.last_success,
                last_status: a.last_status,
                held: a.held,
                expected_by: f.expected_by.map(|e| e.as_hhmm()),
                late_since: late.map(|t| t.to_rfc3339()),
                lateness_seconds: late
                    .map(|t| (now - t).num_milliseconds() as f64 / 1000.0)
                    .unwrap_or(0.0),
                running: leases
                    .iter()
                    .find(|h| h.name == name)
                    .map(ToString::to_string),
            });
        }
    }
    Ok(out)
}

/// Sets the scrape-time gauges from the store.
pub fn refresh_metrics(config: &Config, store: &Store, now: DateTime<Utc>) {
    if let Ok(counts) = store.outbox_counts() {
        for (state, n) in [
            ("staged", counts.staged),
            ("pending", counts.pending),
            ("held", counts.held),
            ("sent", counts.sent),
            ("failed", counts.failed),
        ] {
            crate::metrics::outbox(state, n);
        }
    }
    if let Ok(feeds) = feed_statuses(config, store, now) {
        for f in feeds {
            crate::metrics::feed(
                &f.council,
                &f.feed,
                f.held,
                parse(&f.last_success).map(|t| t.timestamp()),
                f.lateness_seconds,
            );
        }
    }
}
