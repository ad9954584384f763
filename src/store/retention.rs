//! Retention: what the store forgets, and what it never forgets.
//!
//! A nightly million-row feed kept every sent message whole (~2.2 KB each), for ever. After the
//! retention period a sent message keeps only what de-duplication and an audit need: its id
//! (so the same record is never queued again under the same id), routing key, batch, times and
//! content hash; its body and headers are dropped. Run reports older than their period are
//! deleted. Failures, held and pending messages are never pruned: they are work to do.

use super::db::p;
use super::{Result, Store, now};

/// How long things are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Days a sent message keeps its body and headers.
    pub sent_payload_days: u32,
    /// Days a run report is kept.
    pub run_report_days: u32,
}

/// What a prune did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PruneReport {
    /// Sent messages whose body and headers were dropped.
    pub payloads_dropped: u64,
    /// Run reports deleted.
    pub runs_deleted: u64,
}

fn cutoff(now: chrono::DateTime<chrono::Utc>, days: u32) -> String {
    (now - chrono::Duration::days(i64::from(days)))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Store {
    /// Applies `policy` as of `now`, in one transaction.
    pub fn prune(
        &self,
        policy: &Retention,
        now_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<PruneReport> {
        let sent_before = cutoff(now_at, policy.sent_payload_days);
        let runs_before = cutoff(now_at, policy.run_report_days);
        let prune = format!(
            "UPDATE outbox SET content_sha256 = {},
               headers = '{{}}', header_set = NULL, body = ?3, pruned_at = ?2
             WHERE status = 'sent' AND pruned_at IS NULL AND sent_at < ?1",
            super::header_sql(self.engine, "outbox", "x-content-sha256")
        );
        self.with(|db| {
            let mut tx = db.transaction()?;
            let payloads_dropped = tx.execute(&prune, p![sent_before, now(), Vec::<u8>::new()])?;
            let runs_deleted =
                tx.execute("DELETE FROM runs WHERE finished_at < ?1", p![runs_before])?;
            tx.commit()?;
            Ok(PruneReport {
                payloads_dropped,
                runs_deleted,
            })
        })
    }

    /// Bytes of message payload (body and headers) the outbox holds, by state: what retention
    /// saves.
    pub fn payload_bytes(&self) -> Result<Vec<(String, u64)>> {
        self.with(|db| {
            db.query_map("SELECT status, COALESCE(SUM(length(body) + length(headers)), 0) FROM outbox GROUP BY status ORDER BY status", p![], |r| Ok((r.get(0)?, r.get::<i64>(1)? as u64)))
        })
    }
}
