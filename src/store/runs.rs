//! Run reports: one row per pass over a feed (the files it took and what became of each).

use super::db::{DbResult, Row, p};
use serde_json::Value;

use super::{Result, Store, StoreError};

/// A run about to be recorded.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// Run id.
    pub id: &'a str,
    /// Council.
    pub council: &'a str,
    /// Feed.
    pub feed: &'a str,
    /// `cli`, `schedule` or `watch`.
    pub trigger: &'a str,
    /// When the run started (RFC 3339).
    pub started_at: &'a str,
    /// When it finished (RFC 3339).
    pub finished_at: &'a str,
    /// `ok`, `held`, `failed` or `idle` (no file waiting).
    pub outcome: &'a str,
    /// The feed report, JSON.
    pub report: &'a Value,
}

/// A run as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: String,
    /// Council.
    pub council: String,
    /// Feed.
    pub feed: String,
    /// `cli`, `schedule` or `watch`.
    pub trigger: String,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    pub finished_at: String,
    /// `ok`, `held`, `failed` or `idle`.
    pub outcome: String,
    /// The feed report: files taken and each file's report.
    pub report: Value,
}

fn run_row(r: &Row) -> DbResult<RunRow> {
    let report: String = r.get(7)?;
    Ok(RunRow {
        id: r.get(0)?,
        council: r.get(1)?,
        feed: r.get(2)?,
        trigger: r.get(3)?,
        started_at: r.get(4)?,
        finished_at: r.get(5)?,
        outcome: r.get(6)?,
        report: serde_json::from_str(&report).unwrap_or(Value::Null),
    })
}

const RUN_SELECT: &str =
    "SELECT id, council, feed, trigger, started_at, finished_at, outcome, report FROM runs";

impl Store {
    /// Records one run of a feed.
    pub fn record_run(&self, run: &NewRun<'_>) -> Result<()> {
        self.with(|db| {
            db.execute(
                "INSERT INTO runs (id, council, feed, trigger, started_at, finished_at, outcome, report)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                p![
                    run.id,
                    run.council,
                    run.feed,
                    run.trigger,
                    run.started_at,
                    run.finished_at,
                    run.outcome,
                    run.report.to_string()
                ],
            )
            .map(|_| ())
        })
    }

    /// Runs, newest first.
    pub fn runs(
        &self,
        council: Option<&str>,
        feed: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunRow>> {
        let sql = format!(
            "{RUN_SELECT} WHERE (CAST(?1 AS TEXT) IS NULL OR council = ?1) AND (CAST(?2 AS TEXT) IS NULL OR feed = ?2)
             ORDER BY started_at DESC, {} DESC LIMIT ?3",
            self.engine.insertion_order()
        );
        self.with(|db| db.query_map(&sql, p![council, feed, limit], run_row))
    }

    /// One run.
    pub fn run(&self, id: &str) -> Result<RunRow> {
        self.with(|db| db.query_opt(&format!("{RUN_SELECT} WHERE id = ?1"), p![id], run_row))?
            .ok_or_else(|| {
                StoreError::NotFound(format!("no run {id} (see `council-bridge runs list`)"))
            })
    }
}
