//! Resumable readings: a batch's last committed chunk, and taking a reading over.
//!
//! Every chunk of a batch is written with a [`Checkpoint`] (how many of the file's items had been
//! read, and the write counts so far) in the same transaction, so the checkpoint and the rows
//! it covers are committed together or not at all. A process that takes a feed over from one
//! that died (its lease expired, or its pid is gone) finds the batch still `processing` and
//! resumes it from that checkpoint under the same batch id, instead of dropping what was
//! written and reading the file again.
//!
//! The batch row names its reader (the lease holder id of the process reading it): every write
//! to a batch being read checks it first (a fence), so a process that lost its feed, but has not
//! noticed yet, writes nothing more into a batch another process has taken over.

use super::db::{Db, DbResult, p};
use super::{Result, Store, StoreError, lease, now};

/// How far a batch's reading had got at its last committed chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Items the decoder had given (records, control records and undecodable rows, in file
    /// order) when the chunk was written: everything they produced is in the store.
    pub items: u64,
    /// Messages new to the outbox so far.
    pub new_messages: u64,
    /// Messages already in the outbox so far.
    pub already_known: u64,
    /// Of those, sent ones queued again (`--force`) so far.
    pub resent: u64,
    /// The end of the file had been reached: the chunk was the batch's last (it holds what is
    /// only known at the end, such as a snapshot's deletions).
    #[serde(default)]
    pub end: bool,
    /// `duplicate_keys: reject` was done (after the last chunk): the messages it took back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates_taken_back: Option<u64>,
}

/// A batch left `processing` by a reader that stopped without finishing or abandoning it.
#[derive(Debug, Clone)]
pub struct Resumable {
    /// Batch id.
    pub id: String,
    /// The mapping it was being read with.
    pub mapping_id: String,
    /// Its version.
    pub mapping_version: u32,
    /// When reading began (RFC 3339).
    pub started_at: String,
    /// Its last committed chunk.
    pub checkpoint: Checkpoint,
}

/// The fence: false when the batch is being read by another process (it took the reading
/// over, or this process never read it); true when this process is its reader, or the batch is
/// not being read (finished, abandoned: the caller's own statements say what that allows).
pub(super) fn still_reading(tx: &mut Db, batch_id: &str) -> DbResult<bool> {
    let reader: Option<Option<String>> = tx.query_opt(
        "SELECT reader FROM batches WHERE id = ?1 AND status = 'processing'",
        p![batch_id],
        |r| r.get(0),
    )?;
    Ok(match reader {
        None => true,
        Some(reader) => reader.as_deref() == Some(lease::owner().id.as_str()),
    })
}

/// A batch's checkpoint, if it has one.
pub(super) fn load_checkpoint(tx: &mut Db, batch_id: &str) -> DbResult<Option<Checkpoint>> {
    let text: Option<Option<String>> = tx.query_opt(
        "SELECT checkpoint FROM batches WHERE id = ?1",
        p![batch_id],
        |r| r.get(0),
    )?;
    Ok(text.flatten().and_then(|t| serde_json::from_str(&t).ok()))
}

/// Abandons the unfinished readings of a file for a feed other than `keep` (a crash left them
/// `processing`): their staged messages and failures are dropped, none was ever published.
pub(super) fn abandon_unfinished(
    tx: &mut Db,
    council: &str,
    feed: &str,
    sha256: &str,
    keep: &str,
) -> DbResult<()> {
    for table in ["failures", "outbox"] {
        tx.execute(
            &format!(
                "DELETE FROM {table} WHERE batch_id IN (SELECT id FROM batches WHERE council = ?1
                 AND feed = ?2 AND file_sha256 = ?3 AND status = 'processing' AND id <> ?4)
                 AND (?5 = 'failures' OR status IN ('pending', 'staged'))"
            ),
            p![council, feed, sha256, keep, table],
        )?;
    }
    tx.execute(
        "UPDATE batches SET status = 'abandoned', finished_at = ?5 WHERE council = ?1
         AND feed = ?2 AND file_sha256 = ?3 AND status = 'processing' AND id <> ?4",
        p![council, feed, sha256, keep, now()],
    )?;
    Ok(())
}

/// Records a chunk's checkpoint (in the chunk's transaction).
pub(super) fn record_checkpoint(
    tx: &mut Db,
    batch_id: &str,
    checkpoint: &Checkpoint,
) -> DbResult<()> {
    let text = serde_json::to_string(checkpoint).unwrap_or_default();
    tx.execute(
        "UPDATE batches SET checkpoint = ?2 WHERE id = ?1",
        p![batch_id, text],
    )?;
    Ok(())
}

impl Store {
    /// The reading of this file for this feed that a process left unfinished after writing at
    /// least one chunk, if any. Only the feed's lease holder may take it over.
    pub fn resumable_batch(
        &self,
        council: &str,
        feed: &str,
        sha256: &str,
    ) -> Result<Option<Resumable>> {
        let row: Option<(String, String, i64, String, String)> = self.with(|db| {
            db.query_opt(
                "SELECT id, mapping_id, mapping_version, started_at, checkpoint FROM batches
                 WHERE council = ?1 AND feed = ?2 AND file_sha256 = ?3 AND status = 'processing'
                 AND checkpoint IS NOT NULL ORDER BY started_at DESC LIMIT 1",
                p![council, feed, sha256],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
        })?;
        let Some((id, mapping_id, version, started_at, checkpoint)) = row else {
            return Ok(None);
        };
        let checkpoint = serde_json::from_str(&checkpoint).map_err(|e| {
            StoreError::Refused(format!(
                "batch {id}: its checkpoint cannot be read ({e}); discard it with a fresh reading (`run --force`)"
            ))
        })?;
        Ok(Some(Resumable {
            id,
            mapping_id,
            mapping_version: u32::try_from(version).unwrap_or(0),
            started_at,
            checkpoint,
        }))
    }

    /// Makes this process the reader of a batch left unfinished (see [`Store::resumable_batch`])
    /// and returns its checkpoint as it is now. Other unfinished readings of the same file are
    /// abandoned (their staged rows dropped), as [`Store::begin_batch`] does. Audited as
    /// `batch.resume`.
    pub fn take_over_batch(&self, batch_id: &str) -> Result<Checkpoint> {
        let me = &lease::owner();
        let taken = self.with(|db| {
            let mut tx = db.transaction()?;
            let row: Option<(String, Option<String>, String, String, String)> = tx.query_opt(
                "SELECT checkpoint, reader, council, feed, file_sha256 FROM batches
                 WHERE id = ?1 AND status = 'processing' AND checkpoint IS NOT NULL",
                p![batch_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?;
            let Some((checkpoint, before, council, feed, sha)) = row else {
                return Ok(None);
            };
            abandon_unfinished(&mut tx, &council, &feed, &sha, batch_id)?;
            tx.execute(
                "UPDATE batches SET reader = ?2 WHERE id = ?1",
                p![batch_id, me.id],
            )?;
            let detail = format!(
                "resumed after {} (reader was {}) by `{}` pid {} on {}",
                checkpoint,
                before.as_deref().unwrap_or("unknown"),
                me.purpose,
                me.pid,
                me.host
            );
            super::audit(&mut tx, &me.purpose, "batch.resume", batch_id, &detail)?;
            tx.commit()?;
            Ok(Some(checkpoint))
        })?;
        let text = taken.ok_or_else(|| {
            StoreError::NotFound(format!(
                "batch {batch_id} is not an unfinished reading with a checkpoint"
            ))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            StoreError::Refused(format!(
                "batch {batch_id}: its checkpoint cannot be read ({e})"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{batch, message};

    /// A store with batch `b1` being read by this process and one chunk of `ids` written.
    fn store_with_chunk(ids: &[&str]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db")).unwrap();
        store.begin_batch(&batch("b1")).unwrap();
        let messages: Vec<_> = ids.iter().map(|id| message(id)).collect();
        store
            .write_chunk_at(
                &batch("b1"),
                &messages,
                &[],
                false,
                Some(Checkpoint::default()),
            )
            .unwrap();
        (dir, store)
    }

    fn outbox_rows(store: &Store) -> i64 {
        store
            .with(|db| db.query_value("SELECT COUNT(*) FROM outbox", p![]))
            .unwrap()
    }

    #[test]
    fn a_chunk_records_its_checkpoint_and_a_takeover_resumes_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db")).unwrap();
        let b = batch("b1");
        store.begin_batch(&b).unwrap();
        assert!(
            store
                .resumable_batch("northshire", "payroll", "abc")
                .unwrap()
                .is_none(),
            "nothing committed yet: nothing to resume"
        );
        let at = Checkpoint {
            items: 2,
            ..Checkpoint::default()
        };
        let outcome = store
            .write_chunk_at(&b, &[message("m1"), message("m2")], &[], false, Some(at))
            .unwrap();
        assert_eq!(outcome.new, 2);
        let at = Checkpoint {
            items: 5,
            new_messages: 2,
            ..Checkpoint::default()
        };
        store
            .write_chunk_at(&b, &[message("m3"), message("m1")], &[], false, Some(at))
            .unwrap();
        let r = store
            .resumable_batch("northshire", "payroll", "abc")
            .unwrap()
            .expect("an unfinished reading with a checkpoint");
        assert_eq!(
            (r.id.as_str(), r.mapping_id.as_str(), r.mapping_version),
            ("b1", "m", 1)
        );
        let expected = Checkpoint {
            items: 5,
            new_messages: 3,
            already_known: 1,
            resent: 0,
            end: false,
            duplicates_taken_back: None,
        };
        assert_eq!(r.checkpoint, expected);
        assert_eq!(store.take_over_batch("b1").unwrap(), expected);
        // Resumed, not begun again: the staged rows are still there.
        assert_eq!(store.outbox_counts().unwrap().staged, 3);
        let audit = store.audit_log(10).unwrap();
        assert!(
            audit
                .iter()
                .any(|a| a["action"] == "batch.resume" && a["target"] == "b1"),
            "{audit:?}"
        );
    }

    #[test]
    fn a_reader_that_lost_its_batch_writes_nothing_more_into_it() {
        let (_dir, store) = store_with_chunk(&["m1"]);
        let b = batch("b1");
        // Another process takes the reading over.
        store
            .with(|db| {
                db.execute(
                    "UPDATE batches SET reader = 'another-process' WHERE id = 'b1'",
                    p![],
                )
                .map(|_| ())
            })
            .unwrap();
        let err = store
            .write_chunk(&b, &[message("m2")], &[], false)
            .unwrap_err();
        assert!(matches!(err, StoreError::TakenOver { .. }), "{err}");
        assert!(err.to_string().contains("another process"), "{err}");
        assert_eq!(outbox_rows(&store), 1, "the fenced chunk wrote nothing");
        assert!(matches!(
            store.reject_staged(&b, &["m1"], &[]),
            Err(StoreError::TakenOver { .. })
        ));
        assert!(matches!(
            store.finish_batch(
                "b1",
                &serde_json::json!({"council": "northshire"}),
                &message("manifest"),
                false
            ),
            Err(StoreError::TakenOver { .. })
        ));
        // Abandoning (a signal) leaves the other reader's batch alone.
        store.abandon_batch("b1", "stopping").unwrap();
        store.fail_batch("b1", "unreadable").unwrap();
        assert_eq!(outbox_rows(&store), 1);
        assert_eq!(store.batches(None, 5).unwrap()[0].status, "processing");
    }

    #[test]
    fn duplicate_keys_are_taken_back_once_per_batch() {
        let (_dir, store) = store_with_chunk(&["m1", "m2"]);
        let b = batch("b1");
        let failure = crate::store::NewFailure {
            stage: "validation",
            file_name: "p.csv".into(),
            line: 3,
            row: 1,
            raw_record: None,
            errors: serde_json::json!([{"field": "(record key)", "rule": "duplicate_key"}]),
        };
        let ids = ["m1", "m2"];
        let failures = [failure.clone(), failure];
        assert_eq!(store.reject_staged(&b, &ids, &failures).unwrap(), 2);
        // The process died before finishing the batch; the one resuming it rejects again.
        assert_eq!(store.reject_staged(&b, &ids, &failures).unwrap(), 2);
        assert_eq!(store.failures(None, true, 10).unwrap().len(), 2);
        assert_eq!(outbox_rows(&store), 0);
    }
}
