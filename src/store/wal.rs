//! SQLite's write-ahead log checkpointed on a thread of its own while a file is read.
//!
//! In WAL mode a commit appends pages to the log; a checkpoint copies them back into the
//! database file (reading them from the log, writing them, syncing both). By default SQLite
//! does that on the committing connection, inside the commit that takes the log past
//! `wal_autocheckpoint` pages: a file's chunk writer would stop every few chunks to copy and
//! sync about 4 MB. A [`WalCheckpointer`] runs passive checkpoints on a second connection
//! after each chunk instead, on the machine's other core; a passive checkpoint never waits
//! for and never blocks the writer, and the writer's own automatic checkpoint stays the
//! backstop (it finds the log already copied, or the checkpoint lock taken and goes on).
//! Durability is unchanged: a committed chunk is in the log either way.
//!
//! PostgreSQL has no such thing to do ([`super::Store::wal_checkpointer`] gives `None`).

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::db::Db;

/// Runs passive checkpoints on its own connection when nudged; stops when dropped.
pub struct WalCheckpointer {
    nudges: Option<SyncSender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl WalCheckpointer {
    pub(super) fn start(db: Db) -> std::io::Result<Self> {
        // One nudge waiting is enough: nudges that come during a checkpoint are one more.
        let (nudges, received) = sync_channel::<()>(1);
        let handle = std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || checkpoint_when_nudged(db, received))?;
        Ok(Self {
            nudges: Some(nudges),
            handle: Some(handle),
        })
    }

    /// Asks for a checkpoint (after a commit). Never waits.
    pub fn nudge(&self) {
        if let Some(n) = &self.nudges {
            // Full: a checkpoint is already asked for. Disconnected: the thread has stopped.
            let _ = n.try_send(());
        }
    }
}

impl Drop for WalCheckpointer {
    fn drop(&mut self) {
        self.nudges = None;
        if let Some(h) = self.handle.take() {
            // A checkpoint that failed or panicked loses nothing: the pages are in the log,
            // and the next checkpoint (any connection's) copies them.
            let _ = h.join();
        }
    }
}

fn checkpoint_when_nudged(mut db: Db, nudges: Receiver<()>) {
    for () in nudges {
        if let Err(e) = db.wal_checkpoint_passive() {
            tracing::debug!(error = %e, "background WAL checkpoint failed; the next one catches up");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::tests::{batch, message};

    /// A new SQLite store holding 2,000 outbox rows of 1 KB written in one commit (well under
    /// the 16 MB at which the writer checkpoints by itself), and its database file's size.
    fn store_with_rows(dir: &tempfile::TempDir) -> (Store, std::path::PathBuf, u64) {
        let path = dir.path().join("store.db");
        let store = Store::open(&path).unwrap();
        store.begin_batch(&batch("b")).unwrap();
        let rows: Vec<_> = (0..2000)
            .map(|i| {
                let mut m = message(&format!("m{i}"));
                m.body = vec![b'x'; 1024];
                m
            })
            .collect();
        store.write_chunk(&batch("b"), &rows, &[], false).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        (store, path, size)
    }

    #[test]
    fn a_nudge_copies_the_log_into_the_database_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path, before) = store_with_rows(&dir);
        let checkpointer = store.wal_checkpointer().unwrap().expect("SQLite has one");
        checkpointer.nudge();
        drop(checkpointer); // waits for the checkpoint it was nudged for
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(
            after >= before + 2000 * 1024,
            "the 2 MB written are in the database file after the checkpoint ({before} → {after} bytes)"
        );
        // Nothing lost or doubled: the rows read back from the database.
        assert_eq!(store.outbox_counts().unwrap().staged, 2000);
    }

    #[test]
    fn without_a_nudge_the_rows_stay_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path, before) = store_with_rows(&dir);
        drop(store.wal_checkpointer().unwrap());
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(
            after < before + 2000 * 1024,
            "no checkpoint without a nudge, nor one by the writer under 16 MB ({before} → {after} bytes)"
        );
    }
}
