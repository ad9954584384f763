//! Outbox claims: several publishers share one outbox without sending a row twice.
//!
//! A publisher claims a page of pending rows before reading them: the rows get its name
//! (`claimed_by`: host, pid and the process's random id) and an expiry (`claim_expires`,
//! epoch milliseconds). Other publishers skip claimed rows until the claim expires, or at once
//! when the claimer's pid is gone from this host. Marking a row sent, failed or tried again
//! releases its claim. On PostgreSQL the claim is a concurrent transaction that locks the rows
//! it takes and skips those another publisher is taking (`FOR UPDATE SKIP LOCKED`); on SQLite
//! the write lock runs claims one at a time.
//!
//! Batched feeds: a batch message holds a batch's pending records of one block of
//! `publish_batch_size` outbox ids (see `pipeline::flush`), so a block is claimed whole or not
//! at all: two publishers never split one block into two messages with different ids.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use super::db::{Db, DbResult, p};
use super::{PENDING_COLUMNS, PendingMessage, Result, Store, id_list, lease, pending_messages};

/// How long a claim lasts unless renewed ([`Store::renew_claims`]).
pub const CLAIM_TTL: Duration = lease::TTL;

/// This process's name on the rows it claims: `host|pid|id`.
pub fn claimer() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let me = lease::owner();
        format!("{}|{}|{}", me.host, me.pid, me.id)
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether a claimer's process is gone from this host.
fn claimer_is_dead_here(name: &str) -> bool {
    let mut parts = name.splitn(3, '|');
    match (
        parts.next(),
        parts.next().and_then(|p| p.parse::<u32>().ok()),
    ) {
        (Some(host), Some(pid)) => lease::is_dead_here(host, pid),
        _ => false,
    }
}

impl Store {
    /// Claims up to `limit` publishable rows (pending, not of a batch being read, not claimed
    /// by a live claim), oldest first, for this process, and reads them. A block of a batched
    /// batch is taken whole, even past `limit`, or left to the publisher that holds part of it.
    pub fn claim_pending(&self, limit: u32) -> Result<Vec<PendingMessage>> {
        let me = claimer();
        let engine = self.engine;
        self.with(|db| {
            let now = now_ms();
            let mut tx = db.concurrent_transaction()?;
            let candidates = tx.query_map(
                &format!(
                    "SELECT id, batch_id FROM outbox WHERE status = 'pending'
                     AND (batch_id IS NULL OR batch_id NOT IN (SELECT id FROM batches WHERE status = 'processing'))
                     AND (claimed_by IS NULL OR claim_expires < ?2)
                     ORDER BY id LIMIT ?1{}",
                    engine.skip_locked()
                ),
                p![limit, now],
                |r| Ok((r.get::<i64>(0)?, r.get::<Option<String>>(1)?)),
            )?;
            let mut ids: BTreeSet<i64> = BTreeSet::new();
            let mut sizes: HashMap<String, Option<i64>> = HashMap::new();
            let mut blocks: BTreeMap<(String, i64), i64> = BTreeMap::new();
            for (id, batch) in candidates {
                let size = match &batch {
                    None => None,
                    Some(b) => match sizes.get(b) {
                        Some(s) => *s,
                        None => {
                            let s = publish_size(&mut tx, b)?;
                            sizes.insert(b.clone(), s);
                            s
                        }
                    },
                };
                match (batch, size) {
                    (Some(b), Some(n)) => {
                        blocks.insert((b, id / n), n);
                    }
                    _ => {
                        ids.insert(id);
                    }
                }
            }
            let lock = engine.skip_locked();
            for ((batch, block), n) in blocks {
                let (first, last) = (block * n, block * n + n - 1);
                let all: i64 = tx.query_value(
                    "SELECT COUNT(*) FROM outbox WHERE batch_id = ?1 AND id BETWEEN ?2 AND ?3
                     AND status = 'pending'",
                    p![batch, first, last],
                )?;
                let free = tx.query_map(
                    &format!(
                        "SELECT id FROM outbox WHERE batch_id = ?1 AND id BETWEEN ?2 AND ?3
                         AND status = 'pending' AND (claimed_by IS NULL OR claim_expires < ?4){lock}"
                    ),
                    p![batch, first, last, now],
                    |r| r.get::<i64>(0),
                )?;
                if free.len() as i64 == all {
                    ids.extend(free);
                }
            }
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<i64> = ids.into_iter().collect();
            let list = id_list(&ids);
            tx.execute(
                &format!(
                    "UPDATE outbox SET claimed_by = ?2, claim_expires = ?3 WHERE id IN ({})",
                    engine.json_ids("?1")
                ),
                p![list, me, now + CLAIM_TTL.as_millis() as i64],
            )?;
            let rows = tx.query(
                &format!(
                    "SELECT {PENDING_COLUMNS} FROM outbox WHERE id IN ({}) ORDER BY id",
                    engine.json_ids("?1")
                ),
                p![list],
            )?;
            let page = pending_messages(&mut tx, rows)?;
            tx.commit()?;
            Ok(page)
        })
    }

    /// Extends this process's claims on the rows it still holds.
    pub fn renew_claims(&self) -> Result<u64> {
        let me = claimer();
        self.with(|db| {
            db.execute(
                "UPDATE outbox SET claim_expires = ?2 WHERE claimed_by = ?1 AND status = 'pending'",
                p![me, now_ms() + CLAIM_TTL.as_millis() as i64],
            )
        })
    }

    /// Gives back this process's claims on `outbox_ids` (read but not published).
    pub fn release_claims(&self, outbox_ids: &[i64]) -> Result<()> {
        if outbox_ids.is_empty() {
            return Ok(());
        }
        let me = claimer();
        let sql = format!(
            "UPDATE outbox SET claimed_by = NULL WHERE claimed_by = ?2 AND id IN ({})",
            self.engine.json_ids("?1")
        );
        let list = id_list(outbox_ids);
        self.with(|db| db.execute(&sql, p![list, me]).map(|_| ()))
    }

    /// Gives back every claim this process still holds.
    pub fn release_all_claims(&self) -> Result<u64> {
        let me = claimer();
        self.with(|db| {
            db.execute(
                "UPDATE outbox SET claimed_by = NULL WHERE claimed_by = ?1",
                p![me],
            )
        })
    }

    /// Pending rows other processes hold live claims on; claims of processes gone from this
    /// host are released first (their rows are free at once, not after the expiry).
    pub fn claimed_elsewhere(&self) -> Result<u64> {
        let me = claimer();
        self.with(|db| {
            let now = now_ms();
            let holders = db.query_map(
                "SELECT DISTINCT claimed_by FROM outbox WHERE claimed_by IS NOT NULL
                 AND status = 'pending' AND claimed_by <> ?1 AND claim_expires >= ?2",
                p![me, now],
                |r| r.get::<String>(0),
            )?;
            for dead in holders.iter().filter(|h| claimer_is_dead_here(h)) {
                tracing::warn!(claimer = %dead, "released the outbox claims of a process that is gone");
                db.execute(
                    "UPDATE outbox SET claimed_by = NULL WHERE claimed_by = ?1",
                    p![dead],
                )?;
            }
            db.query_value::<i64>(
                "SELECT COUNT(*) FROM outbox WHERE claimed_by IS NOT NULL AND status = 'pending'
                 AND claimed_by <> ?1 AND claim_expires >= ?2",
                p![me, now],
            )
            .map(|n| n as u64)
        })
    }
}

/// Records per batch message of a batch (`None`: one message per record).
fn publish_size(db: &mut Db, batch: &str) -> DbResult<Option<i64>> {
    Ok(db
        .query_opt(
            "SELECT publish_batch_size FROM batches WHERE id = ?1",
            p![batch],
            |r| r.get::<Option<i64>>(0),
        )?
        .flatten()
        .map(|n| n.max(1)))
}
