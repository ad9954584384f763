//! Orchestration: one file through decode → map → validate → outbox, then outbox → broker.
//!
//! The pipeline owns ordering and transactions. Records are written to the store in chunks,
//! staged, and become publishable only when their batch finishes (and its control totals
//! agree, or the feed's policy says publish anyway). Publishing reads the outbox, so a run
//! without a broker, a broker outage or a crash leaves messages waiting, never lost.

pub mod delta;
pub mod duplicates;
pub mod flush;
mod profile;
pub mod progress;
mod replay;
mod runs;
mod writer;

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub use flush::{FlushReport, flush};
pub use replay::{
    DryRun, Operator, Plan, ReplayOutcome, describe_plan, replay_failure, without_values,
};
pub use runs::{ProcessOptions, Trigger, process_with};

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Asks every reader and publisher of this process to stop at the next safe point: a file
/// being read is abandoned at its next chunk (its staged rows dropped, the file left in place
/// to be read again), and a flush stops after the confirms of the page in flight.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Withdraws a [`request_stop`], for a program (or a test) that starts the pipeline again in
/// the same process.
pub fn clear_stop() {
    STOP.store(false, Ordering::SeqCst);
}

/// Whether [`request_stop`] was called.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

use crate::canonical::Registry;
use crate::canonical::envelope::{self, Provenance};
use crate::config::{Config, DriftPolicy, Feed, FeedMode, FeedPolicy};
use crate::formats::{Item, SourceRecord};
use crate::mapping::{self, ControlPolicy, FieldError, Mapping};
use crate::sources::{self, RawFile};
use crate::store::lease::{self, Lease, Renewal};
use crate::store::{NewBatch, NewFailure, Store};

/// Records written to the store per transaction (a chunk). A bigger chunk writes fewer index
/// pages per record but holds more records in memory: the reader, the writer and the queue
/// between them each hold one.
pub const CHUNK: usize = 1000;

/// A feed that cannot be processed at all.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The mapping is unusable.
    #[error(transparent)]
    Mapping(#[from] mapping::MappingError),
    /// The drop folder is unusable.
    #[error(transparent)]
    Source(#[from] sources::SourceError),
    /// The store is unusable.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Something else, said plainly.
    #[error("{0}")]
    Other(String),
    /// Another process is reading this feed now.
    #[error("another process is reading this feed: {0}")]
    Busy(crate::store::lease::Holder),
}

/// What happened to one file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FileReport {
    /// File name.
    pub file: String,
    /// `processed`, `held`, `skipped` (already processed) or `failed` (unreadable).
    pub status: String,
    /// Batch id (for skipped files, the batch that took the file before).
    pub batch_id: Option<String>,
    /// Detail rows read.
    pub read: u64,
    /// Rows that became valid canonical records.
    pub valid: u64,
    /// Rows rejected (kept in the failure store).
    pub rejected: u64,
    /// Rejections by reason (`field rule`).
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Messages new to the outbox.
    pub new_messages: u64,
    /// Valid records whose identical message was already in the outbox.
    pub already_known: u64,
    /// Of those, messages already delivered that `--force` queues again (same ids).
    #[serde(default)]
    pub resent: u64,
    /// Control-record check.
    pub control: Option<Value>,
    /// Why the file failed or was held.
    pub reason: Option<String>,
    /// Where the batch's messages are now (filled by [`delivery_status`]).
    pub delivery: Option<crate::store::OutboxCounts>,
    /// Where the file was moved after reading (archive or rejected folder), if anywhere.
    pub moved_to: Option<String>,
    /// Why the batch is held (control totals, reject threshold, drift, mass delete), each in
    /// words naming the count and the setting.
    pub held_reasons: Vec<String>,
    /// How the file's shape differs from the feed's last accepted batch (drift).
    pub drift: Vec<String>,
    /// Delta mode: what the snapshot changed.
    pub delta: Option<delta::DeltaCounts>,
    /// Control totals: the sum of each money (`_pence`) field over the valid records.
    pub money_totals: BTreeMap<String, i64>,
    /// Record keys several valid records of the batch share, with their lines (events mode).
    #[serde(default)]
    pub duplicate_keys: Vec<duplicates::DuplicateKey>,
    /// For a mapping that makes records of several entities from each row (`also:`): the
    /// valid and rejected records of each entity (a row is valid when all its records are).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub records: BTreeMap<String, RecordCounts>,
    /// A reading another process left unfinished (it died, or lost the feed) was resumed: the
    /// items of the file its last committed chunk covered, which were not written again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_after: Option<u64>,
}

/// Valid and rejected records of one entity.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordCounts {
    /// Valid records.
    pub valid: u64,
    /// Rejected records.
    pub rejected: u64,
}

impl FileReport {
    fn new(file: &str, status: &str) -> Self {
        Self {
            file: file.to_string(),
            status: status.to_string(),
            batch_id: None,
            read: 0,
            valid: 0,
            rejected: 0,
            rejected_by_reason: BTreeMap::new(),
            new_messages: 0,
            already_known: 0,
            resent: 0,
            control: None,
            reason: None,
            delivery: None,
            moved_to: None,
            held_reasons: Vec::new(),
            drift: Vec::new(),
            delta: None,
            money_totals: BTreeMap::new(),
            duplicate_keys: Vec::new(),
            records: BTreeMap::new(),
            resumed_after: None,
        }
    }
}

/// What happened to one feed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FeedReport {
    /// Council id.
    pub council: String,
    /// Feed id.
    pub feed: String,
    /// The stored run report (`council-bridge runs show ID`), when it could be stored.
    pub run_id: Option<String>,
    /// Each file taken.
    pub files: Vec<FileReport>,
    /// Set when the feed could not be processed at all.
    pub error: Option<String>,
    /// Set when the feed was left alone because another process is reading it.
    pub busy: Option<String>,
}

/// What pulling one HTTP feed did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullReport {
    /// Council id.
    pub council: String,
    /// Feed id.
    pub feed: String,
    /// Pages written to the landing folder.
    pub pages: usize,
    /// Why the feed was not pulled, when that is expected (its URL variable is not set).
    pub note: Option<String>,
    /// Why the pull failed.
    pub error: Option<String>,
}

/// Pulls every selected HTTP and SFTP feed into its landing folder, where [`process`] then
/// reads the files like any dropped file. A failed pull leaves nothing half-written (an SFTP
/// download in progress stays hidden in `<landing>/.sftp/` to be resumed).
pub async fn pull(config: &Config, council: Option<&str>, feed: Option<&str>) -> Vec<PullReport> {
    let mut reports = Vec::new();
    for c in &config.councils {
        if council.is_some_and(|want| want != c.id) {
            continue;
        }
        for f in &c.feeds {
            if feed.is_some_and(|want| want != f.id) {
                continue;
            }
            if let Some(sftp) = &f.sftp {
                reports.push(pull_sftp(&c.id, &f.id, sftp).await);
                continue;
            }
            let Some(http) = &f.http else { continue };
            let mut report = PullReport {
                council: c.id.clone(),
                feed: f.id.clone(),
                pages: 0,
                note: None,
                error: None,
            };
            match http.source() {
                Ok(None) => {
                    report.note = Some(format!(
                        "not pulled: {} is not set",
                        http.url_env.as_deref().unwrap_or("the URL variable")
                    ));
                }
                Ok(Some(source)) => match source
                    .fetch(&http.landing, &format!("{}_{}", c.id, f.id))
                    .await
                {
                    Ok(pages) => report.pages = pages.len(),
                    Err(e) => {
                        tracing::error!(council = %c.id, feed = %f.id, error = %e, "pull failed");
                        report.error = Some(e.to_string());
                    }
                },
                Err(e) => report.error = Some(e),
            }
            reports.push(report);
        }
    }
    reports
}

async fn pull_sftp(council: &str, feed: &str, sftp: &crate::config::SftpFeed) -> PullReport {
    let mut report = PullReport {
        council: council.to_string(),
        feed: feed.to_string(),
        pages: 0,
        note: None,
        error: None,
    };
    let source = match sftp.source() {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    match source.pull(&sftp.landing).await {
        Ok(p) => {
            report.pages = p.landed.len();
            let mut note = format!("pulled {} file(s) over SFTP", p.landed.len());
            for (name, from) in &p.resumed {
                note.push_str(&format!("; {name} resumed from byte {from}"));
            }
            if !p.cleaned.is_empty() {
                note.push_str(&format!(
                    "; {} remote file(s) whose batch was stored moved or removed",
                    p.cleaned.len()
                ));
            }
            if !p.waiting.is_empty() {
                note.push_str(&format!("; {} still arriving", p.waiting.len()));
            }
            report.note = Some(note);
        }
        Err(e) => {
            tracing::error!(council, feed, error = %e, "pull failed");
            report.error = Some(e.to_string());
        }
    }
    report
}

/// After [`process`]: moves to the remote archive (or removes, as configured) each SFTP file
/// whose batch is now in the store. A feed with nothing to clean up is not connected to.
pub async fn finish_pulls(
    config: &Config,
    council: Option<&str>,
    feed: Option<&str>,
) -> Vec<PullReport> {
    let mut reports = Vec::new();
    for c in &config.councils {
        if council.is_some_and(|want| want != c.id) {
            continue;
        }
        for f in &c.feeds {
            let Some(sftp) = &f.sftp else { continue };
            if feed.is_some_and(|want| want != f.id) {
                continue;
            }
            let result = match sftp.source() {
                Ok(source) => source
                    .finish(&sftp.landing)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match result {
                Ok(cleaned) if cleaned.is_empty() => {}
                Ok(cleaned) => reports.push(PullReport {
                    council: c.id.clone(),
                    feed: f.id.clone(),
                    pages: 0,
                    note: Some(format!(
                        "{} remote file(s) moved or removed now that their batches are stored",
                        cleaned.len()
                    )),
                    error: None,
                }),
                Err(e) => {
                    tracing::error!(council = %c.id, feed = %f.id, error = %e, "remote clean-up failed; retried on the next pull");
                    reports.push(PullReport {
                        council: c.id.clone(),
                        feed: f.id.clone(),
                        pages: 0,
                        note: None,
                        error: Some(format!("remote clean-up: {e}")),
                    });
                }
            }
        }
    }
    reports
}

/// Fills in, for each file read in this run, where its messages are now (sent, pending, held),
/// so the summary can say per feed what was published and what waits.
pub fn delivery_status(store: &Store, reports: &mut [FeedReport]) -> Result<(), PipelineError> {
    for file in reports.iter_mut().flat_map(|r| r.files.iter_mut()) {
        if let (Some(batch), "processed" | "held") = (&file.batch_id, file.status.as_str()) {
            file.delivery = Some(store.batch_outbox_counts(batch)?);
        }
    }
    Ok(())
}

/// Loads and compiles a feed's mapping against the registry.
pub fn load_mapping(feed: &Feed, registry: &Registry) -> Result<Mapping, PipelineError> {
    Ok(mapping::load(&feed.mapping, registry)?)
}

/// Processes every file of every selected feed into the store, as a `cli` run (see
/// [`process_with`] for the trigger). Publishing is separate ([`flush`]), so this never needs
/// the broker.
pub fn process(
    config: &Config,
    registry: &Registry,
    store: &Store,
    council: Option<&str>,
    feed: Option<&str>,
    force: bool,
) -> Vec<FeedReport> {
    process_with(
        config,
        registry,
        store,
        &ProcessOptions {
            council,
            feed,
            force,
            trigger: Trigger::Cli,
        },
    )
}

fn process_feed(
    registry: &Registry,
    store: &Store,
    council: &str,
    feed: &Feed,
    force: bool,
    files: &mut Vec<FileReport>,
) -> Result<(), PipelineError> {
    // One reader per feed across every process on this store: the lease is taken before the
    // folder is listed and held (renewed at every chunk) until the last file is put away.
    let _lease =
        Lease::try_take(store, &lease::feed(council, &feed.id))?.map_err(PipelineError::Busy)?;
    let mapping = load_mapping(feed, registry)?;
    let (paths, waiting) = feed.drop.scan()?;
    for w in &waiting {
        tracing::info!(council, feed = %feed.id, file = %w.path.display(), reason = %w.reason, "file not taken yet");
    }
    if paths.is_empty() {
        tracing::info!(council, feed = %feed.id, input = %feed.input, "no files waiting");
    }
    for path in paths {
        if stop_requested() {
            break;
        }
        let raw = sources::describe(&path)?;
        let mut report = process_file_with(
            registry,
            store,
            council,
            &feed.id,
            &mapping,
            &raw,
            force,
            &feed.policy,
            &feed.limits,
        )?;
        if report.status == "abandoned" {
            // Stopping, or the feed was taken over: the file stays where it is.
            files.push(report);
            break;
        }
        if let Some(sftp) = &feed.sftp {
            // The batch is stored (or the file is unreadable): the remote file may now go.
            sources::sftp::mark_stored(
                &sftp.landing,
                &raw.name,
                &raw.sha256,
                report.status != "failed",
            )?;
        }
        if let Some(to) = feed.drop.put_away(&raw, report.status == "failed")? {
            tracing::info!(council, feed = %feed.id, file = %raw.name, to = %to.display(), "file moved");
            report.moved_to = Some(to.display().to_string());
        }
        files.push(report);
    }
    Ok(())
}

/// Processes one file with the default feed policy (events mode). Row problems become
/// failures; a file that cannot be read becomes a `failed` report; only a store failure is an
/// `Err`.
pub fn process_file(
    registry: &Registry,
    store: &Store,
    council: &str,
    feed: &str,
    mapping: &Mapping,
    raw: &RawFile,
    force: bool,
) -> Result<FileReport, PipelineError> {
    process_file_with(
        registry,
        store,
        council,
        feed,
        mapping,
        raw,
        force,
        &FeedPolicy::default(),
        &crate::formats::Limits::default(),
    )
}

/// Processes one file under a feed's policy (delta mode, reject threshold, drift) and within its
/// limits (a file over one fails; see [`crate::formats::Limits`]).
#[allow(clippy::too_many_arguments)]
pub fn process_file_with(
    registry: &Registry,
    store: &Store,
    council: &str,
    feed: &str,
    mapping: &Mapping,
    raw: &RawFile,
    force: bool,
    policy: &FeedPolicy,
    limits: &crate::formats::Limits,
) -> Result<FileReport, PipelineError> {
    if !force && let Some(previous) = store.processed_batch(council, feed, &raw.sha256)? {
        tracing::info!(council, feed, file = %raw.name, batch = %previous.id, "already processed; skipped (use --force to read it again)");
        let mut r = FileReport::new(&raw.name, "skipped");
        r.batch_id = Some(previous.id);
        r.reason = Some(format!(
            "already processed on {} (same sha256)",
            previous.started_at
        ));
        return Ok(r);
    }
    let entity = registry
        .get(&mapping.entity)
        .ok_or_else(|| PipelineError::Other(format!("no schema for {}", mapping.entity)))?;
    // A reading of this file that another process left unfinished (it died mid-file, or lost
    // the feed's lease) is taken over from its last committed chunk, under the same batch id.
    let (batch_id, resume) = match take_over(store, council, feed, mapping, raw)? {
        Some((id, checkpoint)) => (id, Some(checkpoint)),
        None => (uuid::Uuid::new_v4().to_string(), None),
    };
    let batch = NewBatch {
        id: &batch_id,
        council,
        feed,
        file_name: &raw.name,
        file_sha256: &raw.sha256,
        mapping_id: &mapping.id,
        mapping_version: mapping.version,
    };
    if resume.is_none() {
        store.begin_batch(&batch)?;
        if let Some(size) = policy.publish_batch_size {
            store.set_publish_batch_size(&batch_id, size)?;
        }
    }
    let mut report = FileReport::new(&raw.name, "processed");
    report.batch_id = Some(batch_id.clone());
    let ctx = ReadContext {
        store,
        registry,
        batch: &batch,
        mapping,
        entity,
        raw,
        force,
        policy,
        limits,
        resume,
    };
    progress::file_started(council, feed, &raw.name, raw.size);
    let read = read_into_store(&ctx, &mut report);
    progress::file_finished();
    match read {
        Ok(()) => Ok(report),
        Err(ReadError::Store(e)) => {
            // A poison file (a value the store refuses) fails alone: when the store still
            // answers, the batch is failed and the file moved aside like an unreadable one, and
            // the feed goes on. Only a store that cannot even record that is an `Err`.
            let reason = format!("the store refused the file's records: {e}");
            if store.fail_batch(&batch_id, &reason).is_err() {
                return Err(e.into());
            }
            tracing::error!(council, feed, file = %raw.name, reason = %reason, "file could not be stored; nothing from it is kept");
            let mut failed = FileReport::new(&raw.name, "failed");
            failed.batch_id = Some(batch_id);
            failed.reason = Some(reason);
            Ok(failed)
        }
        Err(ReadError::TakenOver(reason)) => {
            // The batch is the other process's now: nothing here touches it.
            tracing::warn!(council, feed, file = %raw.name, batch = %batch_id, reason = %reason, "reading stopped: another process resumes this file");
            let mut left = FileReport::new(&raw.name, "abandoned");
            left.batch_id = Some(batch_id);
            left.reason = Some(reason);
            Ok(left)
        }
        Err(ReadError::Abandoned(reason)) => {
            tracing::warn!(council, feed, file = %raw.name, reason = %reason, "reading abandoned; nothing from it is kept and the file will be read again");
            store.abandon_batch(&batch_id, &reason)?;
            let mut abandoned = FileReport::new(&raw.name, "abandoned");
            abandoned.batch_id = Some(batch_id);
            abandoned.reason = Some(reason);
            Ok(abandoned)
        }
        Err(ReadError::File(reason)) => {
            tracing::error!(council, feed, file = %raw.name, reason = %reason, "file could not be read; nothing from it is kept");
            store.fail_batch(&batch_id, &reason)?;
            let mut failed = FileReport::new(&raw.name, "failed");
            failed.batch_id = Some(batch_id);
            failed.reason = Some(reason);
            Ok(failed)
        }
    }
}

enum ReadError {
    Store(crate::store::StoreError),
    File(String),
    /// Stopped at a safe point (shutdown): the batch is abandoned.
    Abandoned(String),
    /// Another process took the feed over (this one lost its lease) and resumes the batch.
    TakenOver(String),
}

impl From<crate::store::StoreError> for ReadError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::TakenOver { .. } => ReadError::TakenOver(e.to_string()),
            e => ReadError::Store(e),
        }
    }
}

/// The unfinished reading of `raw` for this feed to resume, if there is one that was read with
/// this mapping version (one read with another is dropped by `begin_batch`, and the file read
/// again from the start): its batch id and last checkpoint, this process now its reader.
fn take_over(
    store: &Store,
    council: &str,
    feed: &str,
    mapping: &Mapping,
    raw: &RawFile,
) -> Result<Option<(String, crate::store::Checkpoint)>, PipelineError> {
    let Some(r) = store.resumable_batch(council, feed, &raw.sha256)? else {
        return Ok(None);
    };
    if r.mapping_id != mapping.id || r.mapping_version != mapping.version {
        tracing::warn!(council, feed, file = %raw.name, batch = %r.id,
            "an unfinished reading of this file used mapping {} version {}, not {} version {}: it is dropped and the file read from the start",
            r.mapping_id, r.mapping_version, mapping.id, mapping.version);
        return Ok(None);
    }
    match store.take_over_batch(&r.id) {
        Ok(checkpoint) => {
            tracing::info!(council, feed, file = %raw.name, batch = %r.id, started_at = %r.started_at,
                items = checkpoint.items, "resuming an unfinished reading after its last committed chunk");
            Ok(Some((r.id, checkpoint)))
        }
        // Finished or given up meanwhile: read afresh.
        Err(crate::store::StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

struct ReadContext<'a> {
    store: &'a Store,
    registry: &'a Registry,
    batch: &'a NewBatch<'a>,
    mapping: &'a Mapping,
    entity: &'a crate::canonical::Entity,
    raw: &'a RawFile,
    force: bool,
    policy: &'a FeedPolicy,
    limits: &'a crate::formats::Limits,
    /// Where an unfinished reading this one takes over had got to.
    resume: Option<crate::store::Checkpoint>,
}

/// The feed's "as at" date for the file's records (`as_at:` in council.yaml) as `YYYY-MM-DD`,
/// with its provenance (`configuration` or `received`); kept in the batch summary so that a
/// replay re-maps a record with the date it was read with.
fn supplied_as_at(policy: &FeedPolicy, raw: &RawFile) -> Option<(String, &'static str)> {
    policy.as_at.map(|a| match a {
        crate::config::AsAt::Date(d) => (d.format("%Y-%m-%d").to_string(), "configuration"),
        crate::config::AsAt::Received => {
            (received_on(raw).format("%Y-%m-%d").to_string(), "received")
        }
    })
}

fn read_into_store(ctx: &ReadContext<'_>, report: &mut FileReport) -> Result<(), ReadError> {
    // The chunks are written on a thread of their own while the next ones are read.
    let start = ctx.resume.unwrap_or_default();
    std::thread::scope(|scope| {
        let mut writer = writer::ChunkWriter::start(scope, ctx.store, ctx.batch, ctx.force, start);
        read_with_writer(ctx, report, &mut writer)
    })
}

fn read_with_writer(
    ctx: &ReadContext<'_>,
    report: &mut FileReport,
    writer: &mut writer::ChunkWriter<'_>,
) -> Result<(), ReadError> {
    let ReadContext {
        store,
        registry,
        batch,
        mapping,
        entity,
        raw,
        force: _,
        policy,
        limits,
        resume,
    } = *ctx;
    let (council, feed, batch_id) = (batch.council, batch.feed, batch.id);
    // Resuming: the items the last committed chunk covered are decoded and mapped again, to
    // rebuild what the reading tallies (counts, control totals, duplicate keys, a snapshot's
    // keys), but nothing they make is written again.
    let skip = resume.map_or(0, |c| c.items);
    // (The counts the resumed chunks wrote come back from the writer, which starts from them.)
    report.resumed_after = resume.map(|c| c.items);
    // The records each row makes: the mapping's own, then those of its `also:` blocks.
    let mut outputs = vec![(mapping, entity)];
    for m in &mapping.also {
        let e = registry
            .get(&m.entity)
            .ok_or_else(|| ReadError::File(format!("no schema for {}", m.entity)))?;
        outputs.push((m, e));
    }
    let several = outputs.len() > 1;
    if several && policy.mode == FeedMode::Snapshot {
        return Err(ReadError::File(format!(
            "the mapping {} makes records of several entities from each row (`also:`), which a snapshot feed cannot compare with one state: use `mode: events`, or one feed per entity",
            mapping.id
        )));
    }
    let mut delta = match policy.mode {
        FeedMode::Events => None,
        FeedMode::Snapshot => {
            let d = delta::Delta::start(store, registry, council, feed, entity)?;
            if resume.is_none() {
                store.begin_snapshot(batch_id, council, feed, d.base.as_deref())?;
            }
            Some(d)
        }
    };
    let mut profile = profile::Profile::default();
    let mut money: BTreeMap<String, i64> = mapping
        .field_paths()
        .filter(|p| p.ends_with("_pence"))
        .map(|p| (p.to_string(), 0))
        .collect();
    let bytes = sources::open(raw).map_err(|e| ReadError::File(e.to_string()))?;
    let decoder = crate::formats::open_limited(&raw.name, bytes, &mapping.source.format, limits)
        .map_err(|e| ReadError::File(e.to_string()))?;
    let header = decoder.header();
    // Tabular files are bound once (a missing column rejects the file); tree formats (XML,
    // JSON) carry a header per record and are bound again when it changes.
    let per_record = mapping.source.format.per_record_header();
    let as_at = supplied_as_at(policy, raw);
    let supplied = as_at.as_ref().map(|(d, s)| (d.as_str(), *s));
    let bind_all = |header: &crate::formats::Header| -> Result<Vec<mapping::Binding>, ReadError> {
        outputs
            .iter()
            .map(|(m, _)| {
                if per_record {
                    Ok(m.bind_lenient(header))
                } else {
                    m.bind(header).map_err(|e| ReadError::File(e.to_string()))
                }
                .map(|b| b.supply_as_at(supplied))
            })
            .collect()
    };
    let mut bindings = bind_all(&header)?;
    let mut bound_header = header.clone();
    let mut tally = mapping::control::ControlTally::new(mapping, &header);
    let now = chrono::Utc::now();
    let mut messages = Vec::with_capacity(CHUNK);
    let mut failures = Vec::new();

    // Hands a chunk to the writer thread (see `writer`).
    let mut flush_chunk = |messages: &mut Vec<envelope::OutboundMessage>,
                           failures: &mut Vec<NewFailure>,
                           delta: &mut Option<delta::Delta<'_>>,
                           report: &mut FileReport,
                           items: u64,
                           end: bool|
     -> Result<(), ReadError> {
        let changes = delta
            .as_mut()
            .map(|d| std::mem::take(&mut d.changes))
            .unwrap_or_default();
        let chunk = |messages, failures, changes| writer::Chunk {
            messages,
            failures,
            changes,
            items,
            end,
        };
        if messages.is_empty() && failures.is_empty() {
            if !changes.is_empty() {
                writer.send(chunk(Vec::new(), Vec::new(), changes))?;
            }
            return Ok(());
        }
        if stop_requested() {
            return Err(ReadError::Abandoned(
                "the process is stopping (signal)".into(),
            ));
        }
        if store.renew_lease(&lease::feed(council, feed))? == Renewal::Lost {
            return Err(ReadError::TakenOver(
                "another process took over this feed's lease".into(),
            ));
        }
        progress::rows_read(report.read);
        writer.send(chunk(
            std::mem::replace(messages, Vec::with_capacity(CHUNK)),
            std::mem::take(failures),
            changes,
        ))
    };

    let mut keys_seen = duplicates::Tracker::new(
        policy.duplicate_keys == crate::config::DuplicateKeyPolicy::Reject,
    );
    let mut items: u64 = 0;
    for item in decoder {
        let item = item.map_err(|e| ReadError::File(e.to_string()))?;
        items += 1;
        let replaying = items <= skip;
        match item {
            Item::Control(rec) => {
                tally.trailer(&rec);
                continue;
            }
            Item::Failure(f) => {
                report.read += 1;
                report.rejected += 1;
                *report
                    .rejected_by_reason
                    .entry("decode".into())
                    .or_default() += 1;
                tally.detail(f.record.as_ref());
                if let Some(r) = &f.record {
                    profile.record(r);
                }
                if !replaying {
                    tracing::warn!(council, feed, file = %f.locator.file, line = f.locator.line, row = f.locator.row, reason = %f.reason, "row could not be decoded");
                }
                failures.push(NewFailure {
                    stage: "decode",
                    file_name: f.locator.file.clone(),
                    line: f.locator.line,
                    row: f.locator.row,
                    raw_record: f.record.as_ref().map(bounded_raw),
                    errors: json!([{ "field": "(row)", "rule": "decode", "message": f.reason }]),
                });
            }
            Item::Record(rec) => {
                report.read += 1;
                tally.detail(Some(&rec));
                profile.record(&rec);
                if per_record && !std::sync::Arc::ptr_eq(&rec.header, &bound_header) {
                    bindings = bind_all(&rec.header)?;
                    bound_header = rec.header.clone();
                }
                let mut row_valid = true;
                for ((output, entity), binding) in outputs.iter().zip(&bindings) {
                    let result = output
                        .apply(binding, &rec)
                        .map_err(|e| ("mapping", e))
                        .and_then(|m| {
                            let body = Value::Object(m.body);
                            entity
                                .validate(&body)
                                .map(|()| (m.key, body))
                                .map_err(|e| ("validation", e))
                        });
                    let provenance = Provenance {
                        council,
                        feed,
                        batch_id,
                        file_sha256: &raw.sha256,
                        locator: &rec.locator,
                        mapping_id: &output.id,
                        mapping_version: output.version,
                    };
                    let result = match (result, delta.as_mut()) {
                        (Ok((key, body)), Some(d)) => {
                            match d.record(store, &key, &body, &provenance, now)? {
                                delta::RecordOutcome::Publish(m) => {
                                    messages.extend(m);
                                    Ok((key, body))
                                }
                                delta::RecordOutcome::Unchanged => Ok((key, body)),
                                delta::RecordOutcome::Duplicate => Err((
                                    "validation",
                                    vec![FieldError {
                                        field: "(record key)".into(),
                                        column: None,
                                        rule: "duplicate_key".into(),
                                        message: format!(
                                            "the key {key} appears more than once in this snapshot; the first row counts"
                                        ),
                                        value: None,
                                    }],
                                )),
                            }
                        }
                        (Ok((key, body)), None) => {
                            let message = envelope::record_message(
                                entity,
                                &output.action,
                                &key,
                                &body,
                                &provenance,
                                now,
                            );
                            keys_seen.record(&entity.name, &key, &rec, &message.message_id, || {
                                bounded_raw(&rec)
                            });
                            messages.push(message);
                            Ok((key, body))
                        }
                        (Err(e), _) => Err(e),
                    };
                    let counts =
                        several.then(|| report.records.entry(entity.name.clone()).or_default());
                    match result {
                        Ok((_, body)) => {
                            if let Some(c) = counts {
                                c.valid += 1;
                            }
                            // The first entity's totals under its field names, the others'
                            // under the entity's name.
                            let prefix = if std::ptr::eq(*output, mapping) {
                                ""
                            } else {
                                entity.name.as_str()
                            };
                            add_pence(&mut money, prefix, &body);
                        }
                        Err((stage, errors)) => {
                            row_valid = false;
                            if let Some(c) = counts {
                                c.rejected += 1;
                            }
                            for e in &errors {
                                let reason = if several {
                                    format!("{} {} {}", entity.name, e.field, e.rule)
                                } else {
                                    format!("{} {}", e.field, e.rule)
                                };
                                *report.rejected_by_reason.entry(reason).or_default() += 1;
                            }
                            if !replaying {
                                log_rejection(council, feed, &rec, &errors);
                            }
                            let mut errors = bounded_errors(&errors);
                            if several {
                                for_entity(&mut errors, &entity.name);
                            }
                            failures.push(NewFailure {
                                stage,
                                file_name: rec.locator.file.clone(),
                                line: rec.locator.line,
                                row: rec.locator.row,
                                raw_record: Some(bounded_raw(&rec)),
                                errors,
                            });
                        }
                    }
                }
                if row_valid {
                    report.valid += 1;
                } else {
                    report.rejected += 1;
                }
            }
        }
        if replaying {
            // Already in the store, from the chunks the resumed reading committed.
            drop_written(&mut messages, &mut failures, &mut delta);
            continue;
        }
        if messages.len() >= CHUNK || failures.len() >= CHUNK {
            flush_chunk(
                &mut messages,
                &mut failures,
                &mut delta,
                report,
                items,
                false,
            )?;
        }
    }
    let mut held_reasons = Vec::new();
    let conflicts = keys_seen.conflicts(
        |rows| raw_rows(ctx, rows),
        |row| {
            ReadError::File(format!(
                "the file changed while it was read: row {row}, which shares its key with a later row, is no longer there; read it again"
            ))
        },
    )?;
    report.duplicate_keys = std::mem::take(&mut keys_seen).finish();
    if !report.duplicate_keys.is_empty() {
        tracing::warn!(council, feed, file = %raw.name, batch = batch_id, duplicates = ?report.duplicate_keys, "records of the batch share a key");
        if policy.duplicate_keys == crate::config::DuplicateKeyPolicy::Hold
            && let Some(r) = duplicates::hold_reason(&report.duplicate_keys)
        {
            held_reasons.push(r);
        }
    }
    if let Some(d) = delta.as_mut() {
        let locator = delta::no_row(&raw.name);
        let provenance = Provenance {
            council,
            feed,
            batch_id,
            file_sha256: &raw.sha256,
            locator: &locator,
            mapping_id: &mapping.id,
            mapping_version: mapping.version,
        };
        messages.extend(d.finish(store, report.rejected, &provenance, now)?);
        let c = &d.counts;
        if c.state_before > 0 {
            let share = c.deleted as f64 * 100.0 / c.state_before as f64;
            if share > policy.max_delete_percent {
                held_reasons.push(format!(
                    "mass delete: the snapshot would delete {} of the {} records of the feed's state ({share:.1}%), more than max_delete_percent {}",
                    c.deleted, c.state_before, policy.max_delete_percent
                ));
            }
        }
        if let Some(head) = store.snapshot_out_of_date(batch_id)? {
            held_reasons.push(format!(
                "the feed's state was advanced by batch {head} while this snapshot was read; discard this batch and process the file again with --force"
            ));
        }
        report.delta = Some(d.counts.clone());
    }
    if resume.is_some_and(|c| c.end) {
        // The resumed reading had written its last chunk (the tail included) already.
        drop_written(&mut messages, &mut failures, &mut delta);
    }
    flush_chunk(
        &mut messages,
        &mut failures,
        &mut delta,
        report,
        items,
        true,
    )?;
    // Every chunk committed: the batch's counts.
    let written = writer.finish()?;
    report.new_messages = written.new_messages;
    report.already_known = written.already_known;
    report.resent = written.resent;
    if !conflicts.is_empty() {
        reject_duplicates(store, batch, &conflicts, report)?;
    }

    let mapping::control::ControlOutcome {
        report: control_report,
        mismatch,
    } = tally.finish();
    report.control = control_report;
    let control_hold =
        mismatch.is_some() && mapping.source.on_control_mismatch == ControlPolicy::Hold;
    if let Some(m) = &mismatch {
        tracing::warn!(council, feed, file = %raw.name, batch = batch_id, mismatch = %m, held = control_hold, "control totals do not match");
        report.reason = Some(m.clone());
        if control_hold {
            held_reasons.insert(0, format!("control totals: {m}"));
        }
    }
    if let Some(limit) = policy.reject_threshold_percent
        && report.read > 0
    {
        let share = report.rejected as f64 * 100.0 / report.read as f64;
        if share > limit {
            held_reasons.push(format!(
                "reject threshold: {} of {} rows rejected ({share:.1}%), more than reject_threshold_percent {limit}",
                report.rejected, report.read
            ));
        }
    }
    let profile = profile.to_json();
    if policy.drift != DriftPolicy::Off
        && let Some(before) = store
            .last_accepted_summary(council, feed)?
            .and_then(|s| s.get("profile").cloned())
    {
        report.drift = profile::drift(&before, &profile, !per_record);
        if !report.drift.is_empty() {
            tracing::warn!(council, feed, file = %raw.name, batch = batch_id, changes = ?report.drift, "the file's shape differs from the last accepted batch");
            if policy.drift == DriftPolicy::Hold {
                held_reasons.push(format!(
                    "drift (drift: hold) against the last accepted batch: {}",
                    report.drift.join("; ")
                ));
            }
        }
    }
    report.money_totals = money;
    report.held_reasons = held_reasons;
    let hold = !report.held_reasons.is_empty();
    if hold {
        report.status = "held".into();
        tracing::warn!(council, feed, file = %raw.name, batch = batch_id, reasons = ?report.held_reasons, "batch held for an operator");
    }
    let summary = json!({
        "batch_id": batch_id,
        "council": council,
        "feed": feed,
        "entity": mapping.entity,
        "file": raw.name,
        "file_sha256": raw.sha256,
        "mapping": { "id": mapping.id, "version": mapping.version },
        "status": report.status,
        "counts": {
            "read": report.read,
            "valid": report.valid,
            "rejected": report.rejected,
            "new_messages": report.new_messages,
            "already_known": report.already_known,
            "resent": report.resent,
        },
        "rejected_by_reason": report.rejected_by_reason,
        "records": report.records,
        "control": report.control,
        "money_totals": report.money_totals,
        "mode": policy.mode,
        "as_at": supplied_as_at(policy, raw).map(|(date, source)| json!({ "date": date, "source": source })),
        "delta": report.delta,
        "held_reasons": report.held_reasons,
        "duplicate_keys": report.duplicate_keys,
        "drift": report.drift,
        "profile": profile,
        "resumed_after_items": report.resumed_after,
    });
    let manifest =
        envelope::manifest_message(&entity.domain, council, feed, batch_id, &summary, now);
    store.finish_batch(batch_id, &summary, &manifest, hold)?;
    tracing::info!(council, feed, file = %raw.name, batch = batch_id, read = report.read, valid = report.valid,
        rejected = report.rejected, new_messages = report.new_messages, status = %report.status, "file processed");
    Ok(())
}

/// Drops what a resumed reading made again for items its last committed chunk covered.
fn drop_written(
    messages: &mut Vec<envelope::OutboundMessage>,
    failures: &mut Vec<NewFailure>,
    delta: &mut Option<delta::Delta<'_>>,
) {
    messages.clear();
    failures.clear();
    if let Some(d) = delta.as_mut() {
        d.changes.clear();
    }
}

/// The raw values (bounded, as the failure store keeps them) of the given data rows, read again
/// from the file, with the locator's file name: `duplicate_keys: reject` needs those of the
/// first record of each key that later records share, which are not kept while reading.
fn raw_rows(
    ctx: &ReadContext<'_>,
    rows: &std::collections::BTreeSet<u64>,
) -> Result<std::collections::HashMap<u64, (String, Value)>, ReadError> {
    let bytes = sources::open(ctx.raw).map_err(|e| ReadError::File(e.to_string()))?;
    let decoder =
        crate::formats::open_limited(&ctx.raw.name, bytes, &ctx.mapping.source.format, ctx.limits)
            .map_err(|e| ReadError::File(e.to_string()))?;
    let mut out = std::collections::HashMap::with_capacity(rows.len());
    for item in decoder {
        if let Item::Record(rec) = item.map_err(|e| ReadError::File(e.to_string()))?
            && rows.contains(&rec.locator.row)
        {
            out.insert(
                rec.locator.row,
                (rec.locator.file.clone(), bounded_raw(&rec)),
            );
            if out.len() == rows.len() {
                break;
            }
        }
    }
    Ok(out)
}

/// `duplicate_keys: reject`: every record of a key that records with different content share is
/// taken back from the batch (its messages are still staged, whichever chunk they were written
/// in) and kept as a failure naming the other lines; the rest of the batch publishes.
fn reject_duplicates(
    store: &Store,
    batch: &NewBatch<'_>,
    conflicts: &[(String, Vec<duplicates::Member>)],
    report: &mut FileReport,
) -> Result<(), ReadError> {
    let mut ids = Vec::new();
    let mut failures = Vec::new();
    let mut lines = std::collections::BTreeSet::new();
    for (key, members) in conflicts {
        for m in members {
            ids.push(m.message_id.as_str());
            lines.insert(m.line);
            failures.push(NewFailure {
                stage: "validation",
                file_name: m.file.clone(),
                line: m.line,
                row: m.row,
                raw_record: Some(m.raw.clone()),
                errors: duplicates::rejection(key, m, members),
            });
        }
    }
    let removed = store.reject_staged(batch, &ids, &failures)?;
    report.new_messages = report.new_messages.saturating_sub(removed);
    let rows = lines.len() as u64;
    report.valid = report.valid.saturating_sub(rows);
    report.rejected += rows;
    *report
        .rejected_by_reason
        .entry("(record key) duplicate_key".into())
        .or_default() += failures.len() as u64;
    tracing::warn!(
        council = batch.council,
        feed = batch.feed,
        batch = batch.id,
        records = failures.len(),
        "records sharing a key with different content rejected (duplicate_keys: reject)"
    );
    Ok(())
}

/// The day (UTC) a file was received: when it was written to the feed's folder (a pulled
/// file when it was downloaded), by its modification time; today when the system cannot say.
fn received_on(raw: &RawFile) -> chrono::NaiveDate {
    std::fs::metadata(&raw.path)
        .and_then(|m| m.modified())
        .map(|t| chrono::DateTime::<chrono::Utc>::from(t).date_naive())
        .unwrap_or_else(|_| chrono::Utc::now().date_naive())
}

/// Marks each error of a mapping with several entities with the entity its record is of.
fn for_entity(errors: &mut Value, entity: &str) {
    if let Value::Array(items) = errors {
        for e in items {
            if let Value::Object(o) = e {
                o.insert("entity".into(), Value::String(entity.to_string()));
            }
        }
    }
}

/// Adds each integer `_pence` field of `body` (dotted paths; arrays as `field[]`) to `totals`.
fn add_pence(totals: &mut BTreeMap<String, i64>, prefix: &str, body: &Value) {
    let Value::Object(m) = body else {
        return;
    };
    // A member's path, built in one buffer: a total already running is found without a copy.
    let mut path = String::with_capacity(prefix.len() + 32);
    for (k, v) in m {
        path.clear();
        if !prefix.is_empty() {
            path.push_str(prefix);
            path.push('.');
        }
        path.push_str(k);
        match v {
            Value::Number(n) if k.ends_with("_pence") => {
                if let Some(n) = n.as_i64() {
                    if let Some(t) = totals.get_mut(path.as_str()) {
                        *t = t.saturating_add(n);
                    } else {
                        totals.insert(path.clone(), n);
                    }
                }
            }
            Value::Object(_) => add_pence(totals, &path, v),
            Value::Array(items) => {
                path.push_str("[]");
                for item in items {
                    add_pence(totals, &path, item);
                }
            }
            _ => {}
        }
    }
}

/// The raw row as the failure store keeps it: values bounded ([`crate::formats::RAW_VALUE_BOUND`]).
fn bounded_raw(rec: &SourceRecord) -> Value {
    rec.to_raw_json_bounded(crate::formats::RAW_VALUE_BOUND)
}

/// The field errors as the failure store keeps them: each raw value bounded like the row's.
fn bounded_errors(errors: &[FieldError]) -> Value {
    let mut errors = errors.to_vec();
    for e in &mut errors {
        if let Some(v) = &mut e.value
            && v.len() > crate::formats::RAW_VALUE_BOUND
        {
            let mut cut = crate::formats::RAW_VALUE_BOUND;
            while !v.is_char_boundary(cut) {
                cut -= 1;
            }
            *v = format!("{}… [{} bytes in all]", &v[..cut], v.len());
        }
    }
    serde_json::to_value(&errors).unwrap_or(Value::Null)
}

fn log_rejection(council: &str, feed: &str, rec: &SourceRecord, errors: &[FieldError]) {
    for e in errors {
        // Never the value: field, column and rule are enough to find it in the file.
        tracing::warn!(council, feed, file = %rec.locator.file, line = rec.locator.line, row = rec.locator.row,
            field = %e.field, column = e.column.as_deref().unwrap_or(""), rule = %e.rule, problem = %e.message, "row rejected");
    }
}
