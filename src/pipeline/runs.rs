//! One pass of the pipeline over the selected feeds, each feed's pass stored as a run report.

use crate::canonical::Registry;
use crate::config::Config;
use crate::store::{NewRun, Store};

use super::{FeedReport, PipelineError, process_feed, stop_requested};

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A person or cron ran `council-bridge run`.
    Cli,
    /// A feed's schedule (the daemon).
    Schedule,
    /// A file settled in a watched drop folder (the daemon).
    Watch,
}

impl Trigger {
    /// As stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Cli => "cli",
            Trigger::Schedule => "schedule",
            Trigger::Watch => "watch",
        }
    }
}

/// Which feeds to process, and why.
#[derive(Debug, Clone, Copy)]
pub struct ProcessOptions<'a> {
    /// Only this council.
    pub council: Option<&'a str>,
    /// Only this feed.
    pub feed: Option<&'a str>,
    /// Read files again even if already processed.
    pub force: bool,
    /// What started the run (kept in the run report).
    pub trigger: Trigger,
}

fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Processes every file of every selected feed into the store; each feed's pass is stored as a
/// run (`council-bridge runs list`). Publishing is separate ([`super::flush`]).
pub fn process_with(
    config: &Config,
    registry: &Registry,
    store: &Store,
    options: &ProcessOptions<'_>,
) -> Vec<FeedReport> {
    let mut reports = Vec::new();
    for c in &config.councils {
        if options.council.is_some_and(|want| want != c.id) {
            continue;
        }
        for f in &c.feeds {
            if options.feed.is_some_and(|want| want != f.id) {
                continue;
            }
            let started_at = timestamp();
            let mut report = FeedReport {
                council: c.id.clone(),
                feed: f.id.clone(),
                run_id: None,
                files: Vec::new(),
                error: None,
                busy: None,
            };
            if stop_requested() {
                break;
            }
            match process_feed(registry, store, &c.id, f, options.force, &mut report.files) {
                Ok(()) => {}
                Err(PipelineError::Busy(holder)) => {
                    // Not a run of this process: the other process records its own.
                    tracing::info!(council = %c.id, feed = %f.id, holder = %holder, "feed skipped: another process is reading it");
                    report.busy = Some(format!(
                        "skipped: another process is reading this feed: {holder}"
                    ));
                    reports.push(report);
                    continue;
                }
                Err(e) => {
                    tracing::error!(council = %c.id, feed = %f.id, error = %e, "feed could not be processed");
                    report.error = Some(e.to_string());
                }
            }
            let outcome =
                if report.error.is_some() || report.files.iter().any(|f| f.status == "failed") {
                    "failed"
                } else if report.files.iter().any(|f| f.status == "abandoned") {
                    "abandoned"
                } else if report.files.iter().any(|f| f.status == "held") {
                    "held"
                } else if report.files.iter().any(|f| f.status == "processed") {
                    "ok"
                } else {
                    "idle"
                };
            let id = uuid::Uuid::new_v4().to_string();
            let json = serde_json::to_value(&report).unwrap_or_default();
            let run = NewRun {
                id: &id,
                council: &c.id,
                feed: &f.id,
                trigger: options.trigger.as_str(),
                started_at: &started_at,
                finished_at: &timestamp(),
                outcome,
                report: &json,
            };
            match store.record_run(&run) {
                Ok(()) => report.run_id = Some(id),
                Err(e) => {
                    tracing::error!(council = %c.id, feed = %f.id, error = %e, "the run report could not be stored")
                }
            }
            reports.push(report);
        }
    }
    reports
}
