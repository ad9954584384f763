//! Delta mode and held-batch decisions: the last accepted state of snapshot feeds (one row per
//! record key: content hash and canonical body), the state changes a snapshot batch applies
//! only once accepted, and discarding a held batch.

use std::collections::HashMap;

use super::db::{Db, DbResult, p};
use serde_json::Value;

use super::{Result, Store, StoreError, audit, batch_status, now};

/// One change a snapshot batch makes to its feed's state when it is accepted.
#[derive(Debug, Clone)]
pub struct StateChange {
    /// Record key.
    pub key: String,
    /// `created`, `updated` or `deleted`.
    pub action: &'static str,
    /// Content hash of the new body (`None` for deleted).
    pub content_hash: Option<String>,
    /// The new canonical body (`None` for deleted).
    pub body: Option<Value>,
}

/// A feed's accepted state, as a snapshot is compared with it.
#[derive(Debug, Clone, Default)]
pub struct FeedState {
    /// The batch that last advanced the state (`None`: no snapshot accepted yet).
    pub head: Option<String>,
    /// Record key → content hash.
    pub hashes: HashMap<String, String>,
}

impl Store {
    /// The accepted state of a snapshot feed (keys and content hashes).
    pub fn feed_state(&self, council: &str, feed: &str) -> Result<FeedState> {
        self.with(|db| {
            let head = db
                .query_opt(
                    "SELECT batch_id FROM feed_state_head WHERE council = ?1 AND feed = ?2",
                    p![council, feed],
                    |r| r.get(0),
                )?;
            let hashes = db
                .query_map(
                    "SELECT record_key, content_hash FROM feed_state WHERE council = ?1 AND feed = ?2",
                    p![council, feed],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .into_iter()
                .collect::<HashMap<String, String>>();
            Ok(FeedState { head, hashes })
        })
    }

    /// The last accepted canonical body of one record of a snapshot feed.
    pub fn feed_state_body(&self, council: &str, feed: &str, key: &str) -> Result<Option<Value>> {
        let text: Option<String> = self.with(|db| {
            db.query_opt(
                "SELECT body FROM feed_state WHERE council = ?1 AND feed = ?2 AND record_key = ?3",
                p![council, feed, key],
                |r| r.get(0),
            )
        })?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Marks a batch as a snapshot compared with the state left by `base` (the batch that last
    /// advanced it), so that it is applied only if the state has not moved on meanwhile.
    pub fn begin_snapshot(
        &self,
        batch_id: &str,
        council: &str,
        feed: &str,
        base: Option<&str>,
    ) -> Result<()> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            // Changes left by readings of this feed that failed or never finished: they were
            // never going to be applied.
            tx.execute(
                "DELETE FROM snapshot_changes WHERE batch_id IN (SELECT s.batch_id FROM snapshot_batches s
                 JOIN batches b ON b.id = s.batch_id WHERE s.council = ?1 AND s.feed = ?2
                 AND b.status IN ('failed', 'abandoned'))",
                p![council, feed],
            )?;
            tx.execute(
                "INSERT INTO snapshot_batches (batch_id, council, feed, base_batch_id) VALUES (?1, ?2, ?3, ?4)",
                p![batch_id, council, feed, base],
            )?;
            tx.commit()
        })
    }

    /// Stores state changes of a snapshot batch being read (applied when it is accepted).
    /// [`StoreError::TakenOver`] when another process now reads the batch.
    pub fn stage_state_changes(&self, batch_id: &str, changes: &[StateChange]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let staged = self.with(|db| {
            let mut tx = db.transaction()?;
            if !super::resume::still_reading(&mut tx, batch_id)? {
                return Ok(false);
            }
            for ch in changes {
                tx.execute(
                    "INSERT INTO snapshot_changes (batch_id, record_key, action, content_hash, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (batch_id, record_key) DO UPDATE SET action = excluded.action,
                       content_hash = excluded.content_hash, body = excluded.body",
                    p![
                        batch_id,
                        ch.key,
                        ch.action,
                        ch.content_hash,
                        ch.body.as_ref().map(Value::to_string)
                    ],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })?;
        if staged {
            Ok(())
        } else {
            Err(StoreError::TakenOver {
                batch_id: batch_id.to_string(),
            })
        }
    }

    /// The batch that last advanced a feed's state, if it is not the one `batch_id` was
    /// compared with: the snapshot is then out of date and must not be applied.
    pub fn snapshot_out_of_date(&self, batch_id: &str) -> Result<Option<String>> {
        self.with(|db| stale_base(db, batch_id))
    }

    /// The summary of a feed's last accepted batch (completed or released), the baseline
    /// drift is judged against.
    pub fn last_accepted_summary(&self, council: &str, feed: &str) -> Result<Option<Value>> {
        let sql = format!(
            "SELECT summary FROM batches WHERE council = ?1 AND feed = ?2
             AND status IN ('completed', 'released') ORDER BY started_at DESC, {} DESC LIMIT 1",
            self.engine.insertion_order()
        );
        let text: Option<Option<String>> =
            self.with(|db| db.query_opt(&sql, p![council, feed], |r| r.get(0)))?;
        Ok(text.flatten().and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Discards a held batch: its messages (records and manifest) are dropped, never
    /// published; its open failures are marked discarded; a snapshot's state changes are
    /// dropped, so the feed's state stays as it was. Audited. Returns the messages dropped.
    pub fn discard_batch(&self, batch_id: &str, actor: &str, reason: &str) -> Result<u64> {
        let outcome = self.with(|db| {
            let mut tx = db.transaction()?;
            let status: Option<String> = tx
                .query_opt(
                    "SELECT status FROM batches WHERE id = ?1",
                    p![batch_id],
                    |r| r.get(0),
                )?;
            if status.as_deref() != Some(batch_status::HELD) {
                return Ok(Err(status));
            }
            let n = tx.execute(
                "DELETE FROM outbox WHERE batch_id = ?1 AND status = 'held'",
                p![batch_id],
            )?;
            tx.execute(
                "UPDATE failures SET status = 'discarded', resolved_at = ?2 WHERE batch_id = ?1 AND status = 'open'",
                p![batch_id, now()],
            )?;
            tx.execute(
                "DELETE FROM snapshot_changes WHERE batch_id = ?1",
                p![batch_id],
            )?;
            tx.execute(
                "UPDATE batches SET status = ?2 WHERE id = ?1",
                p![batch_id, batch_status::DISCARDED],
            )?;
            let entry = audit(
                &mut tx,
                actor,
                "batch.discard",
                batch_id,
                &format!("{reason}; {n} messages dropped"),
            )?;
            tx.execute(
                "UPDATE audit SET records = ?1 WHERE id = ?2",
                p![n as i64, entry],
            )?;
            tx.commit()?;
            Ok(Ok(n))
        })?;
        outcome.map_err(|status| not_held(batch_id, status))
    }
}

pub(super) fn not_held(batch_id: &str, status: Option<String>) -> StoreError {
    match status {
        None => StoreError::NotFound(format!("no batch {batch_id}")),
        Some(s) => StoreError::NotFound(format!(
            "batch {batch_id} is {s}, not held: only a held batch can be released or discarded"
        )),
    }
}

/// `Some(head)` when the feed's state was advanced by another batch since `batch_id` was
/// compared with it.
pub(super) fn stale_base(db: &mut Db, batch_id: &str) -> DbResult<Option<String>> {
    let snap: Option<(String, String, Option<String>)> = db.query_opt(
        "SELECT council, feed, base_batch_id FROM snapshot_batches WHERE batch_id = ?1",
        p![batch_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let Some((council, feed, base)) = snap else {
        return Ok(None);
    };
    let head: Option<String> = db.query_opt(
        "SELECT batch_id FROM feed_state_head WHERE council = ?1 AND feed = ?2",
        p![council, feed],
        |r| r.get(0),
    )?;
    Ok(if head == base { None } else { head })
}

/// Applies an accepted snapshot batch's state changes and makes it the feed's head. Nothing
/// happens for a batch that is not a snapshot.
pub(super) fn apply_snapshot(tx: &mut Db, batch_id: &str) -> DbResult<()> {
    let snap: Option<(String, String)> = tx.query_opt(
        "SELECT council, feed FROM snapshot_batches WHERE batch_id = ?1",
        p![batch_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let Some((council, feed)) = snap else {
        return Ok(());
    };
    let at = now();
    tx.execute(
        "DELETE FROM feed_state WHERE council = ?1 AND feed = ?2 AND record_key IN
         (SELECT record_key FROM snapshot_changes WHERE batch_id = ?3 AND action = 'deleted')",
        p![council, feed, batch_id],
    )?;
    tx.execute(
        "INSERT INTO feed_state (council, feed, record_key, content_hash, body, batch_id, updated_at)
         SELECT ?1, ?2, record_key, content_hash, body, batch_id, ?4 FROM snapshot_changes
         WHERE batch_id = ?3 AND action <> 'deleted'
         ON CONFLICT (council, feed, record_key) DO UPDATE SET content_hash = excluded.content_hash,
           body = excluded.body, batch_id = excluded.batch_id, updated_at = excluded.updated_at",
        p![council, feed, batch_id, at],
    )?;
    tx.execute(
        "DELETE FROM snapshot_changes WHERE batch_id = ?1",
        p![batch_id],
    )?;
    tx.execute(
        "INSERT INTO feed_state_head (council, feed, batch_id, advanced_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (council, feed) DO UPDATE SET batch_id = excluded.batch_id, advanced_at = excluded.advanced_at",
        p![council, feed, batch_id, at],
    )?;
    Ok(())
}
