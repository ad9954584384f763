//! The store side of reading a file: a batch's chunks written on a thread of their own, in
//! order, while the reader decodes and maps the next chunk. Writing a chunk (its outbox rows,
//! failures, a snapshot's state changes and its checkpoint, in one transaction) costs about a
//! third of processing a record; on a machine with a second core it no longer waits for the
//! mapping, nor the mapping for it.
//!
//! At most one chunk waits while another is written, so memory stays bounded by two chunks.
//! On SQLite, a third thread checkpoints the write-ahead log after each commit
//! ([`crate::store::WalCheckpointer`]), so that the writer does not stop to do it.
//! The writer keeps the running counts the checkpoints carry; the reader learns them from
//! [`ChunkWriter::finish`], after the last chunk is committed.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

use crate::canonical::envelope::OutboundMessage;
use crate::store::{Checkpoint, NewBatch, NewFailure, StateChange, Store};

use super::ReadError;

/// One chunk of a batch, as the reader hands it over.
pub(super) struct Chunk {
    pub messages: Vec<OutboundMessage>,
    pub failures: Vec<NewFailure>,
    /// A snapshot's state changes found in the chunk (staged before its rows).
    pub changes: Vec<StateChange>,
    /// Items of the file read when the chunk was cut.
    pub items: u64,
    /// The last chunk of the file.
    pub end: bool,
}

/// Writes a batch's chunks on a thread of its own.
pub(super) struct ChunkWriter<'scope> {
    to_writer: Option<SyncSender<Chunk>>,
    handle: Option<ScopedJoinHandle<'scope, Result<Checkpoint, ReadError>>>,
}

impl<'scope> ChunkWriter<'scope> {
    /// Starts the writer of `batch`, its counts starting at `start` (a resumed reading's).
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        store: &'env Store,
        batch: &'env NewBatch<'env>,
        force: bool,
        start: Checkpoint,
    ) -> Self {
        let (to_writer, chunks) = sync_channel::<Chunk>(1);
        let handle = std::thread::Builder::new()
            .name("chunk-writer".into())
            .spawn_scoped(scope, move || write_all(store, batch, force, start, chunks))
            .expect("a thread for the chunk writer");
        ChunkWriter {
            to_writer: Some(to_writer),
            handle: Some(handle),
        }
    }

    /// Hands a chunk to the writer (waiting while the one before it is still queued). When
    /// the writer has stopped on an error, that error.
    pub fn send(&mut self, chunk: Chunk) -> Result<(), ReadError> {
        let sent = self
            .to_writer
            .as_ref()
            .is_some_and(|w| w.send(chunk).is_ok());
        if sent {
            Ok(())
        } else {
            // The writer stopped: its error says why.
            self.finish().map(|_| ())
        }
    }

    /// Waits until every chunk handed over is committed; the batch's counts so far.
    pub fn finish(&mut self) -> Result<Checkpoint, ReadError> {
        self.to_writer = None;
        match self.handle.take() {
            Some(handle) => match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            None => Err(ReadError::File(
                "the chunk writer was already finished".into(),
            )),
        }
    }
}

fn write_all(
    store: &Store,
    batch: &NewBatch<'_>,
    force: bool,
    mut totals: Checkpoint,
    chunks: Receiver<Chunk>,
) -> Result<Checkpoint, ReadError> {
    // SQLite: the log is copied into the database beside this thread, not inside its commits.
    let wal = store.wal_checkpointer()?;
    for chunk in chunks {
        if !chunk.changes.is_empty() {
            store.stage_state_changes(batch.id, &chunk.changes)?;
        }
        if chunk.messages.is_empty() && chunk.failures.is_empty() {
            continue;
        }
        let at = Checkpoint {
            items: chunk.items,
            end: chunk.end,
            ..totals
        };
        let outcome =
            store.write_chunk_at(batch, &chunk.messages, &chunk.failures, force, Some(at))?;
        totals.items = chunk.items;
        totals.end = chunk.end;
        totals.new_messages += outcome.new;
        totals.already_known += outcome.already_known;
        totals.resent += outcome.resent;
        if let Some(w) = &wal {
            w.nudge();
        }
    }
    Ok(totals)
}
