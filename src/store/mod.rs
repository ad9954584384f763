//! The store (embedded SQLite by default, or PostgreSQL: see `db`): batches, the outbox,
//! failures and the audit log.
//!
//! The store is the only shared state and the source of truth for delivery: a message is
//! written here, in the same transaction as its batch's progress, before anything is sent, and
//! it is marked sent only after the broker confirms it. Nothing else in the crate opens the
//! database. Calls are short and synchronous; the connection sits behind a mutex so the
//! store can be shared by the async publisher and the pipeline. Every write transaction takes
//! the write lock when it begins (SQLite `IMMEDIATE`, a PostgreSQL advisory lock): a deferred
//! one that read first could not upgrade once another process had written, and would fail with
//! "database is locked" at once instead of waiting its turn (the busy timeout only covers
//! waiting for the lock).

pub mod claims;
mod console;
mod copy;
pub mod db;
mod delta;
mod feeds;
pub mod lease;
mod migrations;
mod resume;
mod retention;
mod runs;
mod wal;

pub use console::{AuditEntry, FailureFilter, ReplayJob, TokenRow};
pub use copy::{COPIED_TABLES, CopyReport};
pub use delta::{FeedState, StateChange};
pub use resume::{Checkpoint, Resumable};
pub use retention::{PruneReport, Retention};
pub use runs::{NewRun, RunRow};
pub use wal::WalCheckpointer;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use db::{Db, DbError, DbResult, Engine, Param, Row, p};

use crate::canonical::envelope::OutboundMessage;

pub use feeds::{DeadLetter, FeedActivity, ScheduleState};

/// The store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no (SQLite or PostgreSQL).
    #[error("store {location}: {source}")]
    Database {
        /// The database (a file, or a PostgreSQL address without its password).
        location: String,
        /// Cause.
        source: DbError,
    },
    /// The folder for the database cannot be made.
    #[error("cannot create the store folder {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A row refers to something that is not there.
    #[error("{0}")]
    NotFound(String),
    /// The operation would break an invariant; the message says what to do instead.
    #[error("{0}")]
    Refused(String),
    /// This process is no longer the reader of the batch: another one took the feed over (this
    /// one lost its lease) and resumes the batch; nothing was written.
    #[error(
        "batch {batch_id} is now read by another process (this one lost the feed's lease); nothing more was written by this one"
    )]
    TakenOver {
        /// The batch.
        batch_id: String,
    },
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Batch states.
pub mod batch_status {
    /// Being read; its messages are staged, not yet publishable.
    pub const PROCESSING: &str = "processing";
    /// Read; its messages are publishable.
    pub const COMPLETED: &str = "completed";
    /// Read, but control totals did not match: messages wait for an operator.
    pub const HELD: &str = "held";
    /// Released by an operator after being held.
    pub const RELEASED: &str = "released";
    /// Could not be read at all.
    pub const FAILED: &str = "failed";
    /// Reading never finished (the process stopped); the file is read again by a later run.
    pub const ABANDONED: &str = "abandoned";
    /// Held, then discarded by an operator: its messages were dropped, never published.
    pub const DISCARDED: &str = "discarded";
}

/// A batch as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchRow {
    /// Batch id.
    pub id: String,
    /// Council.
    pub council: String,
    /// Feed.
    pub feed: String,
    /// File name.
    pub file_name: String,
    /// sha256 of the file.
    pub file_sha256: String,
    /// State (see [`batch_status`]).
    pub status: String,
    /// When reading began (RFC 3339).
    pub started_at: String,
    /// Counts and control totals, JSON.
    pub summary: Option<Value>,
}

/// A batch about to be read.
#[derive(Debug, Clone)]
pub struct NewBatch<'a> {
    /// Batch id.
    pub id: &'a str,
    /// Council.
    pub council: &'a str,
    /// Feed.
    pub feed: &'a str,
    /// File name.
    pub file_name: &'a str,
    /// sha256 of the file.
    pub file_sha256: &'a str,
    /// Mapping id.
    pub mapping_id: &'a str,
    /// Mapping version.
    pub mapping_version: u32,
}

/// A record that could not be delivered, as the operator sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FailureRow {
    /// Failure id.
    pub id: i64,
    /// Batch it came from.
    pub batch_id: Option<String>,
    /// Council.
    pub council: String,
    /// Feed.
    pub feed: String,
    /// `decode`, `mapping`, `validation`, `unroutable`.
    pub stage: String,
    /// Source file.
    pub file_name: Option<String>,
    /// Physical line.
    pub line: Option<i64>,
    /// Data row.
    pub row: Option<i64>,
    /// `{"header": [...], "values": [...]}`.
    pub raw_record: Option<Value>,
    /// Mapping id.
    pub mapping_id: Option<String>,
    /// Mapping version.
    pub mapping_version: Option<i64>,
    /// `[FieldError]` as JSON.
    pub errors: Value,
    /// The message, for failures after mapping (unroutable).
    pub message_id: Option<String>,
    /// `open`, `replayed`, `discarded`.
    pub status: String,
    /// When it failed.
    pub created_at: String,
}

/// A failure about to be stored.
#[derive(Debug, Clone)]
pub struct NewFailure {
    /// `decode`, `mapping`, `validation`.
    pub stage: &'static str,
    /// Source file.
    pub file_name: String,
    /// Physical line.
    pub line: u64,
    /// Data row.
    pub row: u64,
    /// Raw record JSON.
    pub raw_record: Option<Value>,
    /// Errors JSON.
    pub errors: Value,
}

/// An outbox row waiting to be published.
#[derive(Debug, Clone)]
pub struct PendingMessage {
    /// Outbox row id (publishing order).
    pub outbox_id: i64,
    /// Council.
    pub council: String,
    /// Attempts so far.
    pub attempts: i64,
    /// The message.
    pub message: OutboundMessage,
}

/// What a chunk write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// Messages new to the outbox.
    pub new: u64,
    /// Messages whose id was already in the outbox (same record content seen before).
    pub already_known: u64,
    /// Of those, already delivered ones queued again (only with `force`).
    pub resent: u64,
}

/// Counts of outbox rows by state.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Waiting to be published.
    pub pending: u64,
    /// Kept back with a held batch.
    pub held: u64,
    /// Confirmed by the broker.
    pub sent: u64,
    /// Given up (moved to failures).
    pub failed: u64,
    /// Of a batch still being read.
    pub staged: u64,
}

impl OutboxCounts {
    /// Adds `n` rows of outbox state `status`.
    fn add(&mut self, status: &str, n: u64) {
        match status {
            "pending" => self.pending += n,
            "held" => self.held += n,
            "sent" => self.sent += n,
            "failed" => self.failed += n,
            "staged" => self.staged += n,
            _ => {}
        }
    }

    /// The counts once the staged rows (counted as `pending` by their own state and as
    /// `staged` by their batch's) are taken out of `pending`.
    fn staged_apart(mut self) -> Self {
        self.pending = self.pending.saturating_sub(self.staged);
        self
    }
}

/// Where a store is: an SQLite file (the default) or a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection address (`postgres://user@host:port/database`).
    Postgres(String),
}

impl Location {
    /// Reads a store setting: `postgres://…` or `postgresql://…` is a PostgreSQL database,
    /// anything else a file path.
    pub fn parse(s: &str) -> Location {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.to_string())
        } else {
            Location::Sqlite(PathBuf::from(s))
        }
    }

    /// Whether the store exists already (a PostgreSQL database is assumed to).
    pub fn exists(&self) -> bool {
        match self {
            Location::Sqlite(p) => p.exists(),
            Location::Postgres(_) => true,
        }
    }
}

impl std::fmt::Display for Location {
    /// The file, or the PostgreSQL address with its password hidden.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => match url::Url::parse(url) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("***"));
                    }
                    write!(f, "{u}")
                }
                Err(_) => write!(f, "postgres://(address not shown: it does not parse)"),
            },
        }
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Self {
        match p.to_str() {
            Some(s) => Location::parse(s),
            None => Location::Sqlite(p.to_path_buf()),
        }
    }
}
impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Self {
        p.as_path().into()
    }
}
impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Self {
        p.as_path().into()
    }
}
impl From<&str> for Location {
    fn from(s: &str) -> Self {
        Location::parse(s)
    }
}
impl From<&Location> for Location {
    fn from(l: &Location) -> Self {
        l.clone()
    }
}

/// The store.
pub struct Store {
    location: Location,
    engine: Engine,
    conn: Mutex<Db>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The schema version of the store at `location` (migrations applied; 0 for an SQLite file
/// that does not exist yet, which is not created) and the latest this release knows, without
/// migrating it.
pub fn schema_version_of(location: &Location) -> Result<(usize, usize)> {
    let failed = |source| StoreError::Database {
        location: location.to_string(),
        source,
    };
    let mut db = match location {
        Location::Sqlite(path) if !path.exists() => {
            return Ok((0, migrations::migrations(Engine::Sqlite).len()));
        }
        Location::Sqlite(path) => Db::open_sqlite(path).map_err(failed)?,
        Location::Postgres(url) => Db::open_postgres(url).map_err(failed)?,
    };
    let latest = migrations::migrations(db.engine()).len();
    let version = db::off_async(|| migrations::version(&mut db)).map_err(failed)?;
    Ok((version, latest))
}

impl Store {
    /// Opens the store at `location` (an SQLite file, created if needed, or a PostgreSQL
    /// address) and brings its schema up to date (`council-bridge store migrate` does it on
    /// purpose; every command does it on opening).
    pub fn open(location: impl Into<Location>) -> Result<Self> {
        let location = location.into();
        let failed = |source| StoreError::Database {
            location: location.to_string(),
            source,
        };
        let mut db = match &location {
            Location::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?;
                }
                Db::open_sqlite(path).map_err(failed)?
            }
            Location::Postgres(url) => Db::open_postgres(url).map_err(failed)?,
        };
        let engine = db.engine();
        db::off_async(|| migrations::run(&mut db)).map_err(failed)?;
        Ok(Self {
            location,
            engine,
            conn: Mutex::new(db),
        })
    }

    /// Where the store is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// For an SQLite store, a [`WalCheckpointer`] on a connection of its own, which a writer
    /// nudges after its commits so that copying the log into the database happens beside it;
    /// `None` on PostgreSQL.
    pub fn wal_checkpointer(&self) -> Result<Option<WalCheckpointer>> {
        let Location::Sqlite(path) = &self.location else {
            return Ok(None);
        };
        let db = Db::open_sqlite(path).map_err(|source| StoreError::Database {
            location: self.location.to_string(),
            source,
        })?;
        // Without a thread for it, the writer checkpoints as it always could.
        Ok(WalCheckpointer::start(db).ok())
    }

    /// The engine the store runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The schema version (migrations applied) and the latest this release knows.
    pub fn schema_version(&self) -> Result<(usize, usize)> {
        let latest = migrations::migrations(self.engine).len();
        self.with(migrations::version).map(|v| (v, latest))
    }

    fn with<T: Send>(&self, f: impl FnOnce(&mut Db) -> DbResult<T> + Send) -> Result<T> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let db: &mut Db = &mut guard;
        let result = match self.engine {
            Engine::Sqlite => f(db),
            Engine::Postgres => db::off_async(|| f(db)),
        };
        result.map_err(|source| StoreError::Database {
            location: self.location.to_string(),
            source,
        })
    }

    /// The batch that already took this file for this feed, if any (so a rerun skips it).
    pub fn processed_batch(
        &self,
        council: &str,
        feed: &str,
        sha256: &str,
    ) -> Result<Option<BatchRow>> {
        self.with(|db| {
            db.query_opt(
                "SELECT id, council, feed, file_name, file_sha256, status, started_at, summary
                 FROM batches WHERE council = ?1 AND feed = ?2 AND file_sha256 = ?3
                 AND status IN ('completed', 'held', 'released', 'discarded') ORDER BY started_at DESC LIMIT 1",
                p![council, feed, sha256],
                batch_row,
            )
        })
    }

    /// Records that a batch is being read. An earlier reading of the same file that never
    /// finished (the process stopped) is marked abandoned and its staged messages and failures
    /// are dropped: none of them was ever published, and this reading produces them again, so
    /// a crash neither loses nor duplicates anything.
    pub fn begin_batch(&self, b: &NewBatch<'_>) -> Result<()> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            resume::abandon_unfinished(&mut tx, b.council, b.feed, b.file_sha256, b.id)?;
            tx.execute(
                "INSERT INTO batches (id, council, feed, file_name, file_sha256, mapping_id,
                 mapping_version, status, started_at, reader) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'processing', ?8, ?9)",
                p![b.id, b.council, b.feed, b.file_name, b.file_sha256, b.mapping_id, b.mapping_version, now(), lease::owner().id],
            )?;
            tx.commit()
        })
    }

    /// Writes a chunk of a batch's messages (staged: `pending` rows of a batch still
    /// `processing`, not publishable until the batch finishes) and failures in one transaction.
    /// A message whose id is already in the outbox is not written again; with `force`, an
    /// already sent one is queued again. The headers the chunk's messages share are stored once.
    /// [`StoreError::TakenOver`] when another process now reads the batch.
    pub fn write_chunk(
        &self,
        batch: &NewBatch<'_>,
        messages: &[OutboundMessage],
        failures: &[NewFailure],
        force: bool,
    ) -> Result<ChunkOutcome> {
        self.write_chunk_at(batch, messages, failures, force, None)
    }

    /// [`Store::write_chunk`], recording in the same transaction how far the reading has got
    /// (`at`: items read and the counts before this chunk, to which its own are added), so a
    /// process taking the feed over resumes after this chunk.
    pub fn write_chunk_at(
        &self,
        batch: &NewBatch<'_>,
        messages: &[OutboundMessage],
        failures: &[NewFailure],
        force: bool,
        at: Option<Checkpoint>,
    ) -> Result<ChunkOutcome> {
        let (batch_id, council) = (batch.id, batch.council);
        let shared = shared_headers(messages);
        let written = self.with(|db| {
            let mut tx = db.transaction()?;
            if !resume::still_reading(&mut tx, batch_id)? {
                return Ok(None);
            }
            let mut outcome = ChunkOutcome::default();
            {
                let set = match &shared {
                    Some(h) => Some(header_set(&mut tx, h)?),
                    None => None,
                };
                let created = now();
                // Rows go in by groups, one statement each (a round trip per group, not per
                // row, on PostgreSQL), which returns the ids it inserted. SQLite has no round
                // trips, and a statement writing several rows needs a statement journal (it
                // could fail half-way), which spills to a temporary file past 64 KB: 100 rows a
                // statement wrote 2.6 KB to /var/tmp per record. One row a statement needs
                // none, and its count of changes says whether the row went in (a RETURNING
                // clause would materialise that row in a temporary b-tree).
                let (per_insert, returning) = match tx.engine() {
                    Engine::Sqlite => (1, false),
                    Engine::Postgres => (ROWS_PER_INSERT, true),
                };
                let full_group = insert_outbox_rows(per_insert, returning);
                for group in messages.chunks(per_insert) {
                    let own: Vec<(String, Option<i64>)> = group
                        .iter()
                        .map(|m| own_headers(m, shared.as_ref(), set))
                        .collect();
                    let mut params: Vec<Param<'_>> = Vec::with_capacity(group.len() * 10);
                    for (m, (headers, set)) in group.iter().zip(&own) {
                        params.extend_from_slice(p![
                            m.message_id,
                            batch_id,
                            council,
                            m.routing_key,
                            headers
                        ]);
                        params.push(set.map_or(Param::Null, Param::Int));
                        params.extend_from_slice(p![
                            m.body,
                            m.correlation_id,
                            m.timestamp,
                            created
                        ]);
                    }
                    let sql = if group.len() == per_insert {
                        Cow::Borrowed(full_group.as_str())
                    } else {
                        Cow::Owned(insert_outbox_rows(group.len(), returning))
                    };
                    let (mut inserted, one_inserted) = if returning {
                        let ids: std::collections::HashSet<String> =
                            tx.query_map(&sql, &params, |r| r.get(0))?.into_iter().collect();
                        (ids, false)
                    } else {
                        (Default::default(), tx.execute(&sql, &params)? == 1)
                    };
                    for (m, (headers, set)) in group.iter().zip(own.iter().map(|(h, s)| (h, *s))) {
                        // The first of a group's messages with an inserted id is the new row.
                        if one_inserted || inserted.remove(&m.message_id) {
                            outcome.new += 1;
                            continue;
                        }
                        // Already in the outbox (rare): taken into this batch only while staged,
                        // or with `force` once sent.
                        outcome.already_known += 1;
                        let (status, staged): (String, bool) = tx.query_row(
                            &format!("SELECT status, {STAGED} FROM outbox WHERE message_id = ?1"),
                            p![m.message_id],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )?;
                        let sent = status == "sent";
                        if force && sent {
                            outcome.resent += 1;
                        }
                        if staged || status == "staged" || (force && sent) {
                            tx.execute(
                                "UPDATE outbox SET batch_id = ?2, status = 'pending', correlation_id = ?3,
                                 headers = ?4, header_set = ?5, body = ?6, pruned_at = NULL
                                 WHERE message_id = ?1",
                                p![
                                    m.message_id,
                                    batch_id,
                                    m.correlation_id,
                                    headers,
                                    set,
                                    m.body
                                ],
                            )?;
                        }
                    }
                }
                insert_failures(&mut tx, batch, failures, &created)?;
            }
            if let Some(at) = at {
                let checkpoint = Checkpoint {
                    new_messages: at.new_messages + outcome.new,
                    already_known: at.already_known + outcome.already_known,
                    resent: at.resent + outcome.resent,
                    ..at
                };
                resume::record_checkpoint(&mut tx, batch_id, &checkpoint)?;
            }
            tx.commit()?;
            Ok(Some(outcome))
        })?;
        written.ok_or_else(|| StoreError::TakenOver {
            batch_id: batch_id.to_string(),
        })
    }

    /// Takes records back from a batch still being read (`duplicate_keys: reject`), in one
    /// transaction: their staged messages are deleted and they are kept as `failures`. A
    /// message already published or staged by another batch is left alone. Returns the number
    /// of messages taken back. Done once per batch: a reading resumed after it was done (the
    /// process died before finishing the batch) finds the failures there and leaves them.
    pub fn reject_staged(
        &self,
        batch: &NewBatch<'_>,
        message_ids: &[&str],
        failures: &[NewFailure],
    ) -> Result<u64> {
        let done = self.with(|db| {
            let mut tx = db.transaction()?;
            if !resume::still_reading(&mut tx, batch.id)? {
                return Ok(None);
            }
            let reading: Option<String> = tx.query_opt(
                "SELECT id FROM batches WHERE id = ?1 AND status = 'processing'",
                p![batch.id],
                |r| r.get(0),
            )?;
            let mut checkpoint = resume::load_checkpoint(&mut tx, batch.id)?.unwrap_or_default();
            if let Some(removed) = checkpoint.duplicates_taken_back
                && reading.is_some()
            {
                return Ok(Some(removed));
            }
            let mut removed = 0;
            {
                let delete = format!(
                    "DELETE FROM outbox WHERE message_id = ?1 AND batch_id = ?2 AND {STAGED}"
                );
                for id in message_ids {
                    removed += tx.execute(&delete, p![*id, batch.id])?;
                }
                insert_failures(&mut tx, batch, failures, &now())?;
            }
            checkpoint.duplicates_taken_back = Some(removed);
            resume::record_checkpoint(&mut tx, batch.id, &checkpoint)?;
            tx.commit()?;
            Ok(Some(removed))
        })?;
        done.ok_or_else(|| StoreError::TakenOver {
            batch_id: batch.id.to_string(),
        })
    }

    /// Finishes a batch in one transaction: stores its summary and manifest message and makes
    /// its staged messages publishable (`hold = false`) or holds them (`hold = true`).
    pub fn finish_batch(
        &self,
        batch_id: &str,
        summary: &Value,
        manifest: &OutboundMessage,
        hold: bool,
    ) -> Result<()> {
        let council = summary
            .get("council")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let finished = self.with(|db| {
            let mut tx = db.transaction()?;
            if !resume::still_reading(&mut tx, batch_id)? {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO outbox (message_id, batch_id, council, routing_key, headers, body,
                 correlation_id, timestamp, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)
                 ON CONFLICT(message_id) DO UPDATE SET status = 'pending', body = excluded.body",
                p![
                    manifest.message_id,
                    batch_id,
                    council,
                    manifest.routing_key,
                    Value::Object(manifest.headers.clone()).to_string(),
                    manifest.body,
                    manifest.correlation_id,
                    manifest.timestamp,
                    now()
                ],
            )?;
            if !hold {
                delta::apply_snapshot(&mut tx, batch_id)?;
            }
            if hold {
                tx.execute(
                    "UPDATE outbox SET status = 'held' WHERE batch_id = ?1 AND status IN ('pending', 'staged')",
                    p![batch_id],
                )?;
            }
            // Not held: the batch's new state alone makes its rows publishable (no row rewritten).
            tx.execute(
                "UPDATE batches SET status = ?2, finished_at = ?3, summary = ?4 WHERE id = ?1",
                p![
                    batch_id,
                    if hold {
                        batch_status::HELD
                    } else {
                        batch_status::COMPLETED
                    },
                    now(),
                    summary.to_string()
                ],
            )?;
            tx.commit()?;
            Ok(true)
        })?;
        if finished {
            Ok(())
        } else {
            Err(StoreError::TakenOver {
                batch_id: batch_id.to_string(),
            })
        }
    }

    /// Marks a batch that could not be read (still `processing`); its staged messages are dropped (the file stays
    /// unprocessed, so the next run reads it again).
    pub fn fail_batch(&self, batch_id: &str, reason: &str) -> Result<()> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            if !resume::still_reading(&mut tx, batch_id)? {
                // Another process took the reading over: the batch is its to finish.
                return Ok(());
            }
            tx.execute("DELETE FROM outbox WHERE batch_id = ?1 AND status IN ('pending', 'staged')", p![batch_id])?;
            tx.execute("DELETE FROM failures WHERE batch_id = ?1", p![batch_id])?;
            tx.execute(
                "UPDATE batches SET status = 'failed', finished_at = ?2, summary = ?3 WHERE id = ?1",
                p![batch_id, now(), serde_json::json!({ "error": reason }).to_string()],
            )?;
            tx.commit()
        })
    }

    /// Abandons a batch whose reading stopped at a safe point (shutdown): like a failed one,
    /// nothing from it is kept and the file is read again later. A batch another process has
    /// taken over (this one lost the feed's lease) is left to it, as is one it fails.
    pub fn abandon_batch(&self, batch_id: &str, reason: &str) -> Result<()> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            if !resume::still_reading(&mut tx, batch_id)? {
                // Another process took the reading over: the batch is its to finish.
                return Ok(());
            }
            tx.execute("DELETE FROM outbox WHERE batch_id = ?1 AND status IN ('pending', 'staged')", p![batch_id])?;
            tx.execute("DELETE FROM failures WHERE batch_id = ?1", p![batch_id])?;
            tx.execute(
                "UPDATE batches SET status = 'abandoned', finished_at = ?2, summary = ?3 WHERE id = ?1",
                p![batch_id, now(), serde_json::json!({ "abandoned": reason }).to_string()],
            )?;
            tx.commit()
        })
    }

    /// Releases a held batch: its messages become publishable. Audited.
    pub fn release_batch(&self, batch_id: &str, actor: &str, reason: &str) -> Result<u64> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            let status: Option<String> = tx
                .query_opt(
                    "SELECT status FROM batches WHERE id = ?1",
                    p![batch_id],
                    |r| r.get(0),
                )?;
            if status.as_deref() != Some(batch_status::HELD) {
                return Ok(Err(delta::not_held(batch_id, status)));
            }
            if let Some(head) = delta::stale_base(&mut tx, batch_id)? {
                return Ok(Err(StoreError::Refused(format!(
                    "batch {batch_id} is a snapshot compared with an older state of its feed: batch \
                     {head} was accepted since, so releasing it would publish out-of-date changes; \
                     discard it (`council-bridge batches discard {batch_id} --reason ...`) and, if \
                     its file is still wanted, process the file again with --force"
                ))));
            }
            delta::apply_snapshot(&mut tx, batch_id)?;
            let n = tx.execute(
                "UPDATE outbox SET status = 'pending' WHERE batch_id = ?1 AND status = 'held'",
                p![batch_id],
            )?;
            tx.execute(
                "UPDATE batches SET status = 'released' WHERE id = ?1",
                p![batch_id],
            )?;
            let entry = audit(&mut tx, actor, "batch.release", batch_id, reason)?;
            tx.execute(
                "UPDATE audit SET records = ?1 WHERE id = ?2",
                p![n as i64, entry],
            )?;
            tx.commit()?;
            Ok(Ok(n))
        })?
    }

    /// Batches, newest first.
    pub fn batches(&self, council: Option<&str>, limit: u32) -> Result<Vec<BatchRow>> {
        let sql = format!(
            "SELECT id, council, feed, file_name, file_sha256, status, started_at, summary
             FROM batches WHERE (CAST(?1 AS TEXT) IS NULL OR council = ?1) ORDER BY started_at DESC, {} DESC LIMIT ?2",
            self.engine.insertion_order()
        );
        self.with(|db| db.query_map(&sql, p![council, limit], batch_row))
    }

    /// Up to `limit` publishable messages, oldest first: `pending` rows, except those of a
    /// batch still being read.
    pub fn pending(&self, limit: u32) -> Result<Vec<PendingMessage>> {
        self.pending_after(0, limit)
    }

    /// Up to `limit` publishable messages with an outbox id above `after`, oldest first: the
    /// flush reads its next page while the previous one is still being confirmed.
    pub fn pending_after(&self, after: i64, limit: u32) -> Result<Vec<PendingMessage>> {
        self.with(|db| {
            let rows = db.query(
                &format!(
                    "SELECT {PENDING_COLUMNS} FROM outbox WHERE status = 'pending'
                     AND (batch_id IS NULL OR batch_id NOT IN (SELECT id FROM batches WHERE status = 'processing'))
                     AND id > ?2 ORDER BY id LIMIT ?1"
                ),
                p![limit, after],
            )?;
            pending_messages(db, rows)
        })
    }

    /// Publishes the records of `batch_id` as CloudEvents batches of up to `size` records per
    /// message (batched mode of the batch's feed); set before the batch becomes publishable.
    pub fn set_publish_batch_size(&self, batch_id: &str, size: u32) -> Result<()> {
        self.with(|db| {
            db.execute(
                "UPDATE batches SET publish_batch_size = ?2 WHERE id = ?1",
                p![batch_id, size],
            )
            .map(|_| ())
        })
    }

    /// Records per batch message of a batch, `None` when its records go out one per message
    /// (or no batch has that id).
    pub fn publish_batch_size(&self, batch_id: &str) -> Result<Option<u32>> {
        self.with(|db| {
            db.query_opt(
                "SELECT publish_batch_size FROM batches WHERE id = ?1",
                p![batch_id],
                |r| r.get::<Option<u32>>(0),
            )
            .map(Option::flatten)
        })
    }

    /// Marks messages confirmed by the broker (one statement for the whole page).
    /// Only rows still `pending` change: the dead-letter consumer may already have marked a
    /// confirmed message `failed` (the platform refused it) before the flush's marks land.
    pub fn mark_sent(&self, outbox_ids: &[i64]) -> Result<()> {
        if outbox_ids.is_empty() {
            return Ok(());
        }
        let ids = id_list(outbox_ids);
        let sql = format!(
            "UPDATE outbox SET status = 'sent', sent_at = ?2, attempts = attempts + 1,
             claimed_by = NULL WHERE id IN ({}) AND status = 'pending'",
            self.engine.json_ids("?1")
        );
        self.with(|db| db.execute(&sql, p![ids, now()]).map(|_| ()))
    }

    /// Records a failed attempt; the message stays pending, and this process's claim on it
    /// is released (any publisher may take it again; a claim another process took over after
    /// this one's expired is left to it).
    pub fn mark_attempt_failed(&self, outbox_ids: &[i64], error: &str) -> Result<()> {
        if outbox_ids.is_empty() {
            return Ok(());
        }
        let ids = id_list(outbox_ids);
        let sql = format!(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2,
             claimed_by = CASE WHEN claimed_by = ?3 THEN NULL ELSE claimed_by END
             WHERE id IN ({})",
            self.engine.json_ids("?1")
        );
        let me = claims::claimer();
        self.with(|db| db.execute(&sql, p![ids, error, me]).map(|_| ()))
    }

    /// Moves a message the broker could not route (or refused) to the failures, with the reason.
    pub fn mark_undeliverable(&self, outbox_id: i64, stage: &str, reason: &str) -> Result<()> {
        let e = self.engine;
        let insert = format!(
            "INSERT INTO failures (batch_id, council, feed, stage, file_name, line, row,
               mapping_id, mapping_version, raw_record, errors, message_id, status, created_at)
             SELECT o.batch_id, o.council, COALESCE(b.feed, ''), ?2, b.file_name,
               {}, NULL, {}, o.message_id, 'open', ?4
             FROM outbox o LEFT JOIN batches b ON b.id = o.batch_id WHERE o.id = ?1",
            provenance_headers(e, "o"),
            e.json_array_of_object(
                "'field', '(message)', 'rule', CAST(?2 AS TEXT), 'message', CAST(?3 AS TEXT)"
            )
        );
        self.with(|db| {
            let mut tx = db.transaction()?;
            tx.execute(&insert, p![outbox_id, stage, reason, now()])?;
            tx.execute(
                "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?2,
                 claimed_by = NULL WHERE id = ?1",
                p![outbox_id, reason],
            )?;
            tx.commit()
        })
    }

    /// Counts of outbox rows by state.
    pub fn outbox_counts(&self) -> Result<OutboxCounts> {
        self.counts(None)
    }

    /// Counts of one batch's outbox rows by state (its manifest included).
    pub fn batch_outbox_counts(&self, batch_id: &str) -> Result<OutboxCounts> {
        self.counts(Some(batch_id))
    }

    fn counts(&self, batch_id: Option<&str>) -> Result<OutboxCounts> {
        self.with(|db| {
            let mut counts = OutboxCounts::default();
            // Two forms, so that each is read from an index alone (staged: `pending` rows of
            // batches being read, counted apart).
            let row = |r: &Row| Ok((r.get::<String>(0)?, r.get::<i64>(1)?));
            let rows = match batch_id {
                Some(batch_id) => db.query_map(
                    "SELECT status, COUNT(*) FROM outbox WHERE batch_id = ?1 GROUP BY status
                     UNION ALL SELECT 'staged', COUNT(*) FROM outbox WHERE batch_id = ?1
                     AND status = 'pending' AND batch_id IN (SELECT id FROM batches WHERE status = 'processing')",
                    p![batch_id],
                    row,
                )?,
                None => db.query_map(
                    "SELECT status, COUNT(*) FROM outbox GROUP BY status
                     UNION ALL SELECT 'staged', COUNT(*) FROM outbox
                     WHERE status = 'pending' AND batch_id IN (SELECT id FROM batches WHERE status = 'processing')",
                    p![],
                    row,
                )?,
            };
            for (status, n) in rows {
                counts.add(&status, n as u64);
            }
            Ok(counts.staged_apart())
        })
    }

    /// Open failures (or all, with `all`), oldest first.
    pub fn failures(
        &self,
        council: Option<&str>,
        all: bool,
        limit: u32,
    ) -> Result<Vec<FailureRow>> {
        self.with(|db| {
            db.query_map(
                &format!(
                    "{FAILURE_SELECT} WHERE (CAST(?1 AS TEXT) IS NULL OR council = ?1) AND (?2 OR status = 'open') ORDER BY id LIMIT ?3"
                ),
                p![council, all, limit],
                failure_row,
            )
        })
    }

    /// One failure.
    pub fn failure(&self, id: i64) -> Result<FailureRow> {
        self.with(|db| {
            db.query_opt(
                &format!("{FAILURE_SELECT} WHERE id = ?1"),
                p![id],
                failure_row,
            )
        })?
        .ok_or_else(|| StoreError::NotFound(format!("no failure {id}")))
    }

    /// Resolves a failure by replay: the new message goes to the outbox (publishable) in the
    /// same transaction that marks the failure replayed and writes the audit entry.
    pub fn replay_failure(
        &self,
        id: i64,
        message: &OutboundMessage,
        actor: &str,
        reason: &str,
    ) -> Result<()> {
        self.replay_failure_with(id, message, actor, reason, true)
    }

    fn replay_failure_with(
        &self,
        id: i64,
        message: &OutboundMessage,
        actor: &str,
        reason: &str,
        audited: bool,
    ) -> Result<()> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            if replay_in(&mut tx, id, message, actor, reason, audited)? {
                tx.commit()?;
            }
            Ok(())
        })
    }

    /// Re-queues a message that was moved to the failures (unroutable, refused): the same
    /// message, same id, becomes pending again. Audited.
    pub fn requeue_failed_message(
        &self,
        id: i64,
        message_id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<()> {
        self.requeue_failed_message_with(id, message_id, actor, reason, true)
    }

    fn requeue_failed_message_with(
        &self,
        id: i64,
        message_id: &str,
        actor: &str,
        reason: &str,
        audited: bool,
    ) -> Result<()> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            if requeue_in(&mut tx, id, message_id, actor, reason, audited)? {
                tx.commit()?;
            }
            Ok(())
        })
    }

    /// One page of a bulk replay job in one transaction: each record resolved (queued, or
    /// its new errors kept) and the job's position and counts advanced together, so an
    /// interruption loses or repeats nothing.
    pub fn apply_job_page(
        &self,
        job: &str,
        actor: &str,
        steps: &[JobStep<'_>],
        last_id: i64,
        refused: i64,
    ) -> Result<()> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            let (mut queued, mut still) = (0i64, 0i64);
            for step in steps {
                match step {
                    JobStep::Queue(id, m) => {
                        if tx.savepoint(|sp| replay_in(sp, *id, m, actor, job, false))? {
                            queued += 1;
                        }
                    }
                    JobStep::Requeue(id, m) => {
                        if tx.savepoint(|sp| requeue_in(sp, *id, m, actor, job, false))? {
                            queued += 1;
                        }
                    }
                    JobStep::StillFailing(id, errors) => {
                        tx.execute(
                            "UPDATE failures SET errors = ?2 WHERE id = ?1",
                            p![*id, errors.to_string()],
                        )?;
                        console::failure_event(
                            &mut tx,
                            *id,
                            actor,
                            "replay",
                            "still failing",
                            job,
                        )?;
                        still += 1;
                    }
                }
            }
            tx.execute(
                "UPDATE replay_jobs SET last_id = ?2, queued = queued + ?3,
                 still_failing = still_failing + ?4, refused = refused + ?5 WHERE id = ?1",
                p![job, last_id, queued, still, refused],
            )?;
            tx.commit()
        })
    }

    /// The sha256 of a batch's file.
    /// The "as at" date a batch's records were read with (`as_at:` of its feed) and its
    /// provenance, from the batch summary: a replay re-maps a record with the same date.
    pub fn batch_as_at(&self, batch_id: Option<&str>) -> Result<Option<(String, String)>> {
        let Some(batch_id) = batch_id else {
            return Ok(None);
        };
        let e = self.engine;
        let sql = format!(
            "SELECT {}, {} FROM batches WHERE id = ?1",
            e.json_text("summary", "as_at.date"),
            e.json_text("summary", "as_at.source")
        );
        self.with(|db| {
            db.query_opt(&sql, p![batch_id], |r| {
                Ok(r.get::<Option<String>>(0)?.zip(r.get::<Option<String>>(1)?))
            })
            .map(Option::flatten)
        })
    }

    pub fn batch_sha256(&self, batch_id: Option<&str>) -> Result<Option<String>> {
        let Some(batch_id) = batch_id else {
            return Ok(None);
        };
        self.with(|db| {
            db.query_opt(
                "SELECT file_sha256 FROM batches WHERE id = ?1",
                p![batch_id],
                |r| r.get(0),
            )
        })
    }

    /// Records that a replay was tried and failed again (the failure stays open). Audited.
    pub fn replay_failed(&self, id: i64, errors: &Value, actor: &str) -> Result<()> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            tx.execute(
                "UPDATE failures SET errors = ?2 WHERE id = ?1",
                p![id, errors.to_string()],
            )?;
            console::failure_event(
                &mut tx,
                id,
                actor,
                "replay",
                "still failing",
                "still fails with the current mapping",
            )?;
            audit(
                &mut tx,
                actor,
                "failure.replay-failed",
                &id.to_string(),
                "still fails with the current mapping",
            )?;
            tx.commit()
        })
    }

    /// The audit log, newest first.
    pub fn audit_log(&self, limit: u32) -> Result<Vec<Value>> {
        self.with(|db| {
            db.query_map(
                "SELECT at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?1",
                p![limit],
                |r| {
                    Ok(serde_json::json!({
                        "at": r.get::<String>(0)?, "actor": r.get::<String>(1)?,
                        "action": r.get::<String>(2)?, "target": r.get::<String>(3)?,
                        "detail": r.get::<String>(4)?,
                    }))
                },
            )
        })
    }
}

/// One record of a bulk replay page.
#[derive(Debug)]
pub enum JobStep<'a> {
    /// Queue this re-mapped message for failure `.0`.
    Queue(i64, &'a OutboundMessage),
    /// Re-queue the stored message `.1` of failure `.0`.
    Requeue(i64, &'a str),
    /// Failure `.0` still fails with these errors.
    StillFailing(i64, &'a Value),
}

/// Queues `message` for failure `id` and marks it replayed; `false` (caller rolls back) when
/// the failure was no longer open.
fn replay_in(
    tx: &mut Db,
    id: i64,
    message: &OutboundMessage,
    actor: &str,
    reason: &str,
    audited: bool,
) -> DbResult<bool> {
    let (batch_id, council): (Option<String>, String) = tx.query_row(
        "SELECT batch_id, council FROM failures WHERE id = ?1",
        p![id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    tx.execute(
        "INSERT INTO outbox (message_id, batch_id, council, routing_key, headers, body,
         correlation_id, timestamp, status, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)
         ON CONFLICT(message_id) DO UPDATE SET status = 'pending'
         WHERE outbox.status IN ('failed', 'staged')",
        p![
            message.message_id,
            batch_id,
            council,
            message.routing_key,
            Value::Object(message.headers.clone()).to_string(),
            message.body,
            message.correlation_id,
            message.timestamp,
            now()
        ],
    )?;
    let resolved = tx.execute(
        "UPDATE failures SET status = 'replayed', resolved_at = ?2 WHERE id = ?1 AND status = 'open'",
        p![id, now()],
    )?;
    if resolved != 1 {
        return Ok(false);
    }
    let detail = format!("{reason}; message {}", message.message_id);
    console::failure_event(tx, id, actor, "replay", "queued", &detail)?;
    if audited {
        audit(tx, actor, "failure.replay", &id.to_string(), &detail)?;
    }
    Ok(true)
}

/// Makes the stored message of failure `id` pending again (same id, with `x-replay-of`) and
/// marks the failure replayed; `false` when it was no longer open (nothing changed).
fn requeue_in(
    tx: &mut Db,
    id: i64,
    message_id: &str,
    actor: &str,
    reason: &str,
    audited: bool,
) -> DbResult<bool> {
    let resolved = tx.execute(
        "UPDATE failures SET status = 'replayed', resolved_at = ?2 WHERE id = ?1 AND status = 'open'",
        p![id, now()],
    )?;
    if resolved != 1 {
        return Ok(false);
    }
    let set = tx.engine().json_set_text("headers", "x-replay-of", "?2");
    tx.execute(
        &format!(
            "UPDATE outbox SET status = 'pending', headers = {set}
             WHERE message_id = ?1 AND status = 'failed'"
        ),
        p![message_id, id.to_string()],
    )?;
    let detail = format!("{reason}; message {message_id}");
    console::failure_event(tx, id, actor, "requeue", "queued", &detail)?;
    if audited {
        audit(tx, actor, "failure.requeue", &id.to_string(), &detail)?;
    }
    Ok(true)
}

/// Outbox rows per INSERT statement of `write_chunk` on PostgreSQL (10 parameters a row).
const ROWS_PER_INSERT: usize = 100;

/// An INSERT of `rows` new outbox rows (`pending`, staged by their batch's state) that skips
/// ids already in the outbox; with `returning`, it returns the ids it inserted.
fn insert_outbox_rows(rows: usize, returning: bool) -> String {
    let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)";
    let mut sql = String::with_capacity(200 + rows * (row.len() + 2));
    sql.push_str(
        "INSERT INTO outbox (message_id, batch_id, council, routing_key, headers, header_set,
         body, correlation_id, timestamp, status, created_at) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    sql.push_str(" ON CONFLICT(message_id) DO NOTHING");
    if returning {
        sql.push_str(" RETURNING message_id");
    }
    sql
}

/// The condition (on an outbox row) of a staged message: `pending` in a batch still being read.
const STAGED: &str =
    "status = 'pending' AND batch_id IN (SELECT id FROM batches WHERE status = 'processing')";

const INSERT_FAILURE: &str =
    "INSERT INTO failures (batch_id, council, feed, stage, file_name, line, row,
     raw_record, mapping_id, mapping_version, errors, status, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'open', ?12)";

/// SQL for one header of the outbox row `o`: its own value, else its header set's.
fn header_sql(e: Engine, o: &str, name: &str) -> String {
    format!(
        "COALESCE({}, (SELECT {} FROM header_sets h WHERE h.id = {o}.header_set))",
        e.json_text(&format!("{o}.headers"), name),
        e.json_text("h.headers", name)
    )
}

/// SQL for the source line, row, mapping id and version headers of the outbox row `o`.
fn provenance_headers(e: Engine, o: &str) -> String {
    [
        "x-source-line",
        "x-source-row",
        "x-mapping-id",
        "x-mapping-version",
    ]
    .map(|h| {
        let v = header_sql(e, o, h);
        // Line, row and version are integers (JSON numbers), stored in integer columns.
        if h == "x-mapping-id" {
            v
        } else {
            format!("CAST({v} AS BIGINT)")
        }
    })
    .join(", ")
}

/// The headers the messages of a chunk share: the first message's headers, with null for each
/// one whose value is not the same in all of them. `None` when there is nothing to share.
fn shared_headers(messages: &[OutboundMessage]) -> Option<serde_json::Map<String, Value>> {
    let (first, rest) = messages.split_first()?;
    let mut shared = first.headers.clone();
    for m in rest {
        if same_names(&m.headers, &shared) {
            // Records of one batch have the same headers in the same order: compared by
            // place, without looking each name up.
            for ((_, v), (_, own)) in shared.iter_mut().zip(&m.headers) {
                if !v.is_null() && own != v {
                    *v = Value::Null;
                }
            }
            continue;
        }
        for (k, v) in shared.iter_mut() {
            if !v.is_null() && m.headers.get(k) != Some(v) {
                *v = Value::Null;
            }
        }
    }
    (!shared.is_empty()).then_some(shared)
}

/// Whether two header maps have the same names in the same order.
fn same_names(a: &serde_json::Map<String, Value>, b: &serde_json::Map<String, Value>) -> bool {
    a.len() == b.len() && a.keys().zip(b.keys()).all(|(x, y)| x == y)
}

/// The id of a header set (stored once, by content).
fn header_set(tx: &mut Db, shared: &serde_json::Map<String, Value>) -> DbResult<i64> {
    let text = serde_json::to_string(shared).unwrap_or_default();
    tx.execute(
        "INSERT INTO header_sets (headers) VALUES (?1) ON CONFLICT (headers) DO NOTHING",
        p![text],
    )?;
    tx.query_value("SELECT id FROM header_sets WHERE headers = ?1", p![text])
}

/// What an outbox row stores of a message's headers: those that differ from the shared set
/// (with the set's id), or all of them (no set) when the message lacks one the set has.
fn own_headers(
    m: &OutboundMessage,
    shared: Option<&serde_json::Map<String, Value>>,
    set: Option<i64>,
) -> (String, Option<i64>) {
    struct Own<'a>(
        &'a serde_json::Map<String, Value>,
        &'a serde_json::Map<String, Value>,
    );
    impl serde::Serialize for Own<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            if same_names(self.0, self.1) {
                // The same names in the same order (every record of a batch): by place.
                return s.collect_map(
                    self.0
                        .iter()
                        .zip(self.1.values())
                        .filter(|((_, v), shared)| v != shared)
                        .map(|(kv, _)| kv),
                );
            }
            s.collect_map(self.0.iter().filter(|(k, v)| self.1.get(*k) != Some(*v)))
        }
    }
    match (shared, set) {
        (Some(shared), Some(set))
            if same_names(&m.headers, shared)
                || shared.keys().all(|k| m.headers.contains_key(k)) =>
        {
            (
                serde_json::to_string(&Own(&m.headers, shared)).unwrap_or_default(),
                Some(set),
            )
        }
        _ => (serde_json::to_string(&m.headers).unwrap_or_default(), None),
    }
}

/// The columns [`pending_messages`] reads, in its order.
pub(super) const PENDING_COLUMNS: &str =
    "id, council, attempts, message_id, routing_key, headers, body,
    correlation_id, timestamp, header_set";

/// Outbox rows read with [`PENDING_COLUMNS`] as messages, each with its full headers (its own
/// over its header set's).
pub(super) fn pending_messages(db: &mut Db, rows: Vec<Row>) -> DbResult<Vec<PendingMessage>> {
    let mut sets: std::collections::HashMap<i64, serde_json::Map<String, Value>> =
        std::collections::HashMap::new();
    let mut page = Vec::with_capacity(rows.len());
    for mut r in rows {
        let own: serde_json::Map<String, Value> = match r.val(5) {
            Some(db::Val::Text(t)) => serde_json::from_str(t).unwrap_or_default(),
            _ => Default::default(),
        };
        let headers = match r.get::<Option<i64>>(9)? {
            None => own,
            Some(id) => {
                let shared = match sets.entry(id) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let text: String = db
                            .query_value("SELECT headers FROM header_sets WHERE id = ?1", p![id])?;
                        e.insert(serde_json::from_str(&text).unwrap_or_default())
                    }
                };
                let mut full = shared.clone();
                full.extend(own);
                full
            }
        };
        page.push(PendingMessage {
            outbox_id: r.get(0)?,
            council: r.take(1)?,
            attempts: r.get(2)?,
            message: OutboundMessage {
                message_id: r.take(3)?,
                routing_key: r.take(4)?,
                headers,
                body: r.take(6)?,
                correlation_id: r.take(7)?,
                timestamp: r.get(8)?,
            },
        });
    }
    Ok(page)
}

/// Outbox ids as a JSON array, for `json_each` (one statement for a page).
pub(super) fn id_list(ids: &[i64]) -> String {
    let mut s = String::with_capacity(ids.len() * 8 + 2);
    s.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&id.to_string());
    }
    s.push(']');
    s
}

const FAILURE_SELECT: &str =
    "SELECT id, batch_id, council, feed, stage, file_name, line, row, raw_record,
    mapping_id, mapping_version, errors, message_id, status, created_at FROM failures";

fn failure_row(r: &Row) -> DbResult<FailureRow> {
    let raw: Option<String> = r.get(8)?;
    let errors: String = r.get(11)?;
    Ok(FailureRow {
        id: r.get(0)?,
        batch_id: r.get(1)?,
        council: r.get(2)?,
        feed: r.get(3)?,
        stage: r.get(4)?,
        file_name: r.get(5)?,
        line: r.get(6)?,
        row: r.get(7)?,
        raw_record: raw.and_then(|s| serde_json::from_str(&s).ok()),
        mapping_id: r.get(9)?,
        mapping_version: r.get(10)?,
        errors: serde_json::from_str(&errors).unwrap_or(Value::Null),
        message_id: r.get(12)?,
        status: r.get(13)?,
        created_at: r.get(14)?,
    })
}

fn batch_row(r: &Row) -> DbResult<BatchRow> {
    let summary: Option<String> = r.get(7)?;
    Ok(BatchRow {
        id: r.get(0)?,
        council: r.get(1)?,
        feed: r.get(2)?,
        file_name: r.get(3)?,
        file_sha256: r.get(4)?,
        status: r.get(5)?,
        started_at: r.get(6)?,
        summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
    })
}

/// Writes an audit entry; returns its id.
fn audit(tx: &mut Db, actor: &str, action: &str, target: &str, detail: &str) -> DbResult<i64> {
    // The council the entry concerns, so a council-scoped token sees its own council's entries.
    let failure: Option<i64> = action
        .starts_with("failure.")
        .then(|| target.parse().ok())
        .flatten();
    let outcome = if action == "failure.replay-failed" {
        "still failing"
    } else {
        "done"
    };
    tx.query_value(
        "INSERT INTO audit (at, actor, action, target, detail, council, outcome, records)
         VALUES (?1, ?2, ?3, ?4, ?5,
           CASE WHEN CAST(?6 AS BIGINT) IS NOT NULL THEN (SELECT council FROM failures WHERE id = ?6)
                ELSE (SELECT council FROM batches WHERE id = ?4) END,
           ?7, 1) RETURNING id",
        p![now(), actor, action, target, detail, failure, outcome],
    )
}

/// Stores a batch's failures (in the caller's transaction).
fn insert_failures(
    tx: &mut Db,
    batch: &NewBatch<'_>,
    failures: &[NewFailure],
    created: &str,
) -> DbResult<()> {
    for f in failures {
        tx.execute(
            INSERT_FAILURE,
            p![
                batch.id,
                batch.council,
                batch.feed,
                f.stage,
                f.file_name,
                f.line as i64,
                f.row as i64,
                f.raw_record.as_ref().map(Value::to_string),
                batch.mapping_id,
                batch.mapping_version,
                f.errors.to_string(),
                created
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::store) fn message(id: &str) -> OutboundMessage {
        OutboundMessage {
            message_id: id.into(),
            routing_key: "payroll.pay_result.upserted.northshire".into(),
            headers: serde_json::Map::new(),
            body: b"{}".to_vec(),
            correlation_id: "b".into(),
            timestamp: 0,
        }
    }

    pub(in crate::store) fn batch(id: &str) -> NewBatch<'_> {
        NewBatch {
            id,
            council: "northshire",
            feed: "payroll",
            file_name: "p.csv",
            file_sha256: "abc",
            mapping_id: "m",
            mapping_version: 1,
        }
    }

    fn record(id: &str, line: u64) -> OutboundMessage {
        let mut m = message(id);
        for (k, v) in [
            ("cloudEvents:specversion", serde_json::json!("1.0")),
            ("cloudEvents:id", serde_json::json!(id)),
            (
                "cloudEvents:type",
                serde_json::json!("uk.gov.council.payroll.pay_result.upserted.v1"),
            ),
            ("x-source-file", serde_json::json!("p.csv")),
            ("x-source-line", serde_json::json!(line)),
            ("x-mapping-id", serde_json::json!("m")),
            ("x-mapping-version", serde_json::json!(1)),
            ("x-content-sha256", serde_json::json!(format!("hash-{id}"))),
        ] {
            m.headers.insert(k.into(), v);
        }
        m
    }

    #[test]
    fn shared_headers_are_stored_once_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db")).unwrap();
        let mut odd = record("m3", 9);
        odd.headers.remove("x-source-file");
        odd.headers
            .insert("x-extra".into(), serde_json::Value::Null);
        let messages = vec![record("m1", 3), record("m2", 4), odd, record("m4", 10)];
        store.begin_batch(&batch("b")).unwrap();
        store
            .write_chunk(&batch("b"), &messages, &[], false)
            .unwrap();
        assert!(
            store.pending(10).unwrap().is_empty(),
            "staged rows are never publishable"
        );
        assert_eq!(store.outbox_counts().unwrap().staged, 4);
        store
            .finish_batch(
                "b",
                &serde_json::json!({"council": "northshire"}),
                &message("manifest"),
                false,
            )
            .unwrap();
        let page = store.pending(10).unwrap();
        let read: Vec<OutboundMessage> = page.into_iter().map(|p| p.message).take(4).collect();
        assert_eq!(read, messages);
        store
            .with(|db| {
                let sets: i64 = db.query_value("SELECT COUNT(*) FROM header_sets", p![])?;
                assert_eq!(sets, 1);
                let own: String =
                    db.query_value("SELECT headers FROM outbox WHERE message_id = 'm1'", p![])?;
                assert!(!own.contains("x-mapping-id"), "{own}");
                Ok(())
            })
            .unwrap();
        // The provenance of an unroutable message comes from its own and its shared headers.
        let id = store.pending(1).unwrap()[0].outbox_id;
        store
            .mark_undeliverable(id, "unroutable", "no queue")
            .unwrap();
        let f = &store.failures(None, true, 10).unwrap()[0];
        assert_eq!(
            (f.line, f.mapping_id.as_deref(), f.mapping_version),
            (Some(3), Some("m"), Some(1))
        );
    }

    #[test]
    fn a_staged_message_can_become_a_failure_before_its_batch_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db")).unwrap();
        store.begin_batch(&batch("b")).unwrap();
        store
            .write_chunk(&batch("b"), &[record("m1", 3), record("m2", 4)], &[], false)
            .unwrap();
        let failure = NewFailure {
            stage: "validation",
            file_name: "p.csv".into(),
            line: 3,
            row: 1,
            raw_record: None,
            errors: serde_json::json!([{"field": "(record key)", "rule": "duplicate_key"}]),
        };
        assert_eq!(
            store
                .reject_staged(&batch("b"), &["m1"], std::slice::from_ref(&failure))
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .reject_staged(&batch("b"), &["m1"], std::slice::from_ref(&failure))
                .unwrap(),
            1,
            "done once per batch: a resumed reading gets the count of the first, nothing more"
        );
        assert_eq!(store.failures(None, true, 10).unwrap().len(), 1);
        store
            .finish_batch(
                "b",
                &serde_json::json!({"council": "northshire"}),
                &message("manifest"),
                false,
            )
            .unwrap();
        let ids: Vec<String> = store
            .pending(10)
            .unwrap()
            .into_iter()
            .map(|p| p.message.message_id)
            .collect();
        assert_eq!(ids, ["m2", "manifest"]);
        assert!(
            store.reject_staged(&batch("b"), &["m2"], &[]).unwrap() == 0,
            "finished: no longer staged"
        );
        assert_eq!(store.failures(None, true, 10).unwrap().len(), 1);
    }

    #[test]
    fn a_page_is_marked_sent_in_one_statement() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db")).unwrap();
        store.begin_batch(&batch("b")).unwrap();
        store
            .write_chunk(
                &batch("b"),
                &[record("m1", 3), record("m2", 4), record("m3", 5)],
                &[],
                false,
            )
            .unwrap();
        store
            .finish_batch(
                "b",
                &serde_json::json!({"council": "northshire"}),
                &message("manifest"),
                false,
            )
            .unwrap();
        let page = store.pending(10).unwrap();
        store
            .mark_attempt_failed(&[page[2].outbox_id], "nacked")
            .unwrap();
        store
            .mark_sent(&[page[0].outbox_id, page[1].outbox_id])
            .unwrap();
        store.mark_sent(&[]).unwrap();
        let left = store.pending(10).unwrap();
        assert_eq!(left.len(), 2);
        assert_eq!(
            (left[0].message.message_id.as_str(), left[0].attempts),
            ("m3", 1)
        );
        assert_eq!(store.outbox_counts().unwrap().sent, 2);
    }

    #[test]
    fn claimed_rows_are_not_claimed_again_until_released_and_a_block_is_claimed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db")).unwrap();
        store.begin_batch(&batch("b")).unwrap();
        let records: Vec<OutboundMessage> = (1..=6)
            .map(|i| record(&format!("m{i}"), i as u64))
            .collect();
        store
            .write_chunk(&batch("b"), &records, &[], false)
            .unwrap();
        store
            .finish_batch("b", &serde_json::json!({}), &message("manifest"), false)
            .unwrap();
        let ids = |page: &[PendingMessage]| page.iter().map(|m| m.outbox_id).collect::<Vec<_>>();
        let first = store.claim_pending(2).unwrap();
        assert_eq!(ids(&first), [1, 2]);
        let second = store.claim_pending(2).unwrap();
        assert_eq!(ids(&second), [3, 4], "claimed rows are skipped");
        store.mark_attempt_failed(&[1], "nacked").unwrap();
        store.mark_sent(&[2]).unwrap();
        assert_eq!(
            ids(&store.claim_pending(1).unwrap()),
            [1],
            "released by the failed attempt"
        );
        store.release_all_claims().unwrap();
        assert_eq!(store.claimed_elsewhere().unwrap(), 0);

        // Batched (blocks of 4 ids: 0-3, 4-7): asked for one row, the claim takes its block.
        store.set_publish_batch_size("b", 4).unwrap();
        let block = store.claim_pending(1).unwrap();
        assert_eq!(ids(&block), [1, 3], "the pending rows of block 0-3");
        let next = store.claim_pending(1).unwrap();
        assert_eq!(
            ids(&next),
            [4, 5, 6, 7],
            "block 4-7 whole (the manifest is id 7)"
        );
        assert!(store.claim_pending(10).unwrap().is_empty());
        assert_eq!(store.outbox_counts().unwrap().pending, 6);
    }

    #[test]
    fn a_store_of_the_previous_schema_migrates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let old = record("old-pending", 3);
        {
            let mut db = Db::open_sqlite(&path).unwrap();
            migrations::run_to(&mut db, 6).unwrap();
            db.execute_batch(
                "INSERT INTO batches (id, council, feed, file_name, file_sha256, status, started_at)
                 VALUES ('done', 'northshire', 'payroll', 'p.csv', 'abc', 'completed', '2026-11-01T00:00:00Z'),
                        ('reading', 'northshire', 'payroll', 'q.csv', 'def', 'processing', '2026-11-02T00:00:00Z'),
                        ('kept', 'northshire', 'payroll', 'r.csv', 'ghi', 'held', '2026-11-03T00:00:00Z');",
            )
            .unwrap();
            for (id, batch, status) in [
                ("old-pending", "done", "pending"),
                ("old-sent", "done", "sent"),
                ("old-staged", "reading", "staged"),
                ("old-held", "kept", "held"),
            ] {
                let m = if id == "old-pending" {
                    old.clone()
                } else {
                    record(id, 4)
                };
                db.execute(
                    "INSERT INTO outbox (message_id, batch_id, council, routing_key, headers, body,
                     correlation_id, timestamp, status, created_at)
                     VALUES (?1, ?2, 'northshire', ?3, ?4, ?5, ?2, 0, ?6, '2026-11-01T00:00:00Z')",
                    p![
                        id,
                        batch,
                        m.routing_key,
                        Value::Object(m.headers.clone()).to_string(),
                        m.body,
                        status
                    ],
                )
                .unwrap();
            }
        }
        let store = Store::open(&path).unwrap();
        let counts = store.outbox_counts().unwrap();
        assert_eq!(
            counts,
            OutboxCounts {
                pending: 1,
                held: 1,
                sent: 1,
                failed: 0,
                staged: 1
            }
        );
        let page = store.pending(10).unwrap();
        assert_eq!(
            page.len(),
            1,
            "only the finished batch's pending message is publishable"
        );
        assert_eq!(page[0].message.headers, old.headers);
        assert_eq!(page[0].message.body, old.body);
        store.mark_sent(&[page[0].outbox_id]).unwrap();
        // The batch that was being read when the old release stopped is read again from scratch.
        store
            .begin_batch(&NewBatch {
                file_sha256: "def",
                ..batch("again")
            })
            .unwrap();
        assert_eq!(store.outbox_counts().unwrap().staged, 0);
        assert!(store.release_batch("kept", "op", "checked").unwrap() == 1);
        assert_eq!(store.pending(10).unwrap()[0].message.message_id, "old-held");
    }

    #[test]
    fn a_reading_cut_short_is_abandoned_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.db")).unwrap();
        let failure = NewFailure {
            stage: "mapping",
            file_name: "p.csv".into(),
            line: 3,
            row: 1,
            raw_record: None,
            errors: serde_json::json!([]),
        };
        store.begin_batch(&batch("first")).unwrap();
        store
            .write_chunk(
                &batch("first"),
                &[message("m1"), message("m2")],
                std::slice::from_ref(&failure),
                false,
            )
            .unwrap();
        // The process stops here. The next run reads the file again.
        store.begin_batch(&batch("second")).unwrap();
        assert_eq!(store.outbox_counts().unwrap(), OutboxCounts::default());
        assert!(store.failures(None, true, 10).unwrap().is_empty());
        let outcome = store
            .write_chunk(
                &batch("second"),
                &[message("m1"), message("m2")],
                &[failure],
                false,
            )
            .unwrap();
        assert_eq!(
            outcome,
            ChunkOutcome {
                new: 2,
                already_known: 0,
                resent: 0
            }
        );
        store
            .finish_batch(
                "second",
                &serde_json::json!({"council": "northshire"}),
                &message("manifest"),
                false,
            )
            .unwrap();
        assert_eq!(store.outbox_counts().unwrap().pending, 3);
        assert_eq!(store.failures(None, true, 10).unwrap().len(), 1);
        let batches = store.batches(None, 10).unwrap();
        assert!(
            batches
                .iter()
                .any(|b| b.id == "first" && b.status == batch_status::ABANDONED)
        );
    }
}
