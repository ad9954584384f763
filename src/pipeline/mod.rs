//! Orchestration: one file through decode → map → validate → outbox, then outbox → broker.
//!
//! The pipeline owns ordering and transactions. Records are written to the store in chunks,
//! staged, and become publishable only when their batch finishes (and its control totals
//! agree, or the feed's policy says publish anyway). Publishing reads the outbox, so a run
//! without a broker, a broker outage or a crash leaves messages waiting, never lost.

pub mod flush;
mod replay;

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub use flush::{FlushReport, flush};
pub use replay::{ReplayOutcome, replay_failure};

use crate::canonical::Registry;
use crate::canonical::envelope::{self, Provenance};
use crate::config::{Config, Feed};
use crate::formats::{Item, SourceRecord};
use crate::mapping::{self, ControlPolicy, FieldError, Mapping};
use crate::sources::{self, RawFile};
use crate::store::{NewBatch, NewFailure, Store};

/// Records written to the store per transaction.
const CHUNK: usize = 1000;

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
}

/// What happened to one file.
#[derive(Debug, Clone, serde::Serialize)]
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
    /// Control-record check.
    pub control: Option<Value>,
    /// Why the file failed or was held.
    pub reason: Option<String>,
    /// Where the batch's messages are now (filled by [`delivery_status`]).
    pub delivery: Option<crate::store::OutboxCounts>,
    /// Where the file was moved after reading (archive or rejected folder), if anywhere.
    pub moved_to: Option<String>,
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
            control: None,
            reason: None,
            delivery: None,
            moved_to: None,
        }
    }
}

/// What happened to one feed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedReport {
    /// Council id.
    pub council: String,
    /// Feed id.
    pub feed: String,
    /// Each file taken.
    pub files: Vec<FileReport>,
    /// Set when the feed could not be processed at all.
    pub error: Option<String>,
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

/// Pulls every selected HTTP feed into its landing folder, where [`process`] then reads the
/// pages like any dropped file. A failed pull leaves nothing half-written.
pub async fn pull(config: &Config, council: Option<&str>, feed: Option<&str>) -> Vec<PullReport> {
    let mut reports = Vec::new();
    for c in &config.councils {
        if council.is_some_and(|want| want != c.id) {
            continue;
        }
        for f in &c.feeds {
            let Some(http) = &f.http else { continue };
            if feed.is_some_and(|want| want != f.id) {
                continue;
            }
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

/// Processes every file of every selected feed into the store. Publishing is separate
/// ([`flush`]), so this never needs the broker.
pub fn process(
    config: &Config,
    registry: &Registry,
    store: &Store,
    council: Option<&str>,
    feed: Option<&str>,
    force: bool,
) -> Vec<FeedReport> {
    let mut reports = Vec::new();
    for c in &config.councils {
        if council.is_some_and(|want| want != c.id) {
            continue;
        }
        for f in &c.feeds {
            if feed.is_some_and(|want| want != f.id) {
                continue;
            }
            let mut report = FeedReport {
                council: c.id.clone(),
                feed: f.id.clone(),
                files: Vec::new(),
                error: None,
            };
            match process_feed(registry, store, &c.id, f, force, &mut report.files) {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(council = %c.id, feed = %f.id, error = %e, "feed could not be processed");
                    report.error = Some(e.to_string());
                }
            }
            reports.push(report);
        }
    }
    reports
}

fn process_feed(
    registry: &Registry,
    store: &Store,
    council: &str,
    feed: &Feed,
    force: bool,
    files: &mut Vec<FileReport>,
) -> Result<(), PipelineError> {
    let mapping = load_mapping(feed, registry)?;
    let (paths, waiting) = feed.drop.scan()?;
    for w in &waiting {
        tracing::info!(council, feed = %feed.id, file = %w.path.display(), reason = %w.reason, "file not taken yet");
    }
    if paths.is_empty() {
        tracing::info!(council, feed = %feed.id, input = %feed.input, "no files waiting");
    }
    for path in paths {
        let raw = sources::describe(&path)?;
        let mut report = process_file_limited(
            registry,
            store,
            council,
            &feed.id,
            &mapping,
            &raw,
            force,
            &feed.limits,
        )?;
        if let Some(to) = feed.drop.put_away(&raw, report.status == "failed")? {
            tracing::info!(council, feed = %feed.id, file = %raw.name, to = %to.display(), "file moved");
            report.moved_to = Some(to.display().to_string());
        }
        files.push(report);
    }
    Ok(())
}

/// Processes one file. Row problems become failures; a file that cannot be read becomes a
/// `failed` report; only a store failure is an `Err`.
pub fn process_file(
    registry: &Registry,
    store: &Store,
    council: &str,
    feed: &str,
    mapping: &Mapping,
    raw: &RawFile,
    force: bool,
) -> Result<FileReport, PipelineError> {
    let limits = crate::formats::Limits::default();
    process_file_limited(registry, store, council, feed, mapping, raw, force, &limits)
}

/// [`process_file`] within the feed's limits (a file over one fails; see [`crate::formats::Limits`]).
#[allow(clippy::too_many_arguments)]
pub fn process_file_limited(
    registry: &Registry,
    store: &Store,
    council: &str,
    feed: &str,
    mapping: &Mapping,
    raw: &RawFile,
    force: bool,
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
    let batch_id = uuid::Uuid::new_v4().to_string();
    let batch = NewBatch {
        id: &batch_id,
        council,
        feed,
        file_name: &raw.name,
        file_sha256: &raw.sha256,
        mapping_id: &mapping.id,
        mapping_version: mapping.version,
    };
    store.begin_batch(&batch)?;
    let mut report = FileReport::new(&raw.name, "processed");
    report.batch_id = Some(batch_id.clone());
    match read_into_store(
        store,
        &batch,
        mapping,
        entity,
        raw,
        force,
        limits,
        &mut report,
    ) {
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
}

impl From<crate::store::StoreError> for ReadError {
    fn from(e: crate::store::StoreError) -> Self {
        ReadError::Store(e)
    }
}

#[allow(clippy::too_many_arguments)]
fn read_into_store(
    store: &Store,
    batch: &NewBatch<'_>,
    mapping: &Mapping,
    entity: &crate::canonical::Entity,
    raw: &RawFile,
    force: bool,
    limits: &crate::formats::Limits,
    report: &mut FileReport,
) -> Result<(), ReadError> {
    let (council, feed, batch_id) = (batch.council, batch.feed, batch.id);
    let bytes = sources::open(raw).map_err(|e| ReadError::File(e.to_string()))?;
    let decoder = crate::formats::open_limited(&raw.name, bytes, &mapping.source.format, limits)
        .map_err(|e| ReadError::File(e.to_string()))?;
    let header = decoder.header();
    // Tabular files are bound once (a missing column rejects the file); tree formats (XML,
    // JSON) carry a header per record and are bound again when it changes.
    let per_record = mapping.source.format.per_record_header();
    let mut binding = if per_record {
        mapping.bind_lenient(&header)
    } else {
        mapping
            .bind(&header)
            .map_err(|e| ReadError::File(e.to_string()))?
    };
    let mut bound_header = header.clone();
    let mut tally = mapping::control::ControlTally::new(mapping, &header);
    let now = chrono::Utc::now();
    let mut messages = Vec::with_capacity(CHUNK);
    let mut failures = Vec::new();

    let flush_chunk = |messages: &mut Vec<envelope::OutboundMessage>,
                       failures: &mut Vec<NewFailure>,
                       report: &mut FileReport|
     -> Result<(), ReadError> {
        if messages.is_empty() && failures.is_empty() {
            return Ok(());
        }
        let outcome = store.write_chunk(batch, messages, failures, force)?;
        report.new_messages += outcome.new;
        report.already_known += outcome.already_known;
        messages.clear();
        failures.clear();
        Ok(())
    };

    for item in decoder {
        let item = item.map_err(|e| ReadError::File(e.to_string()))?;
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
                tracing::warn!(council, feed, file = %f.locator.file, line = f.locator.line, row = f.locator.row, reason = %f.reason, "row could not be decoded");
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
                if per_record && !std::sync::Arc::ptr_eq(&rec.header, &bound_header) {
                    binding = mapping.bind_lenient(&rec.header);
                    bound_header = rec.header.clone();
                }
                let result = mapping
                    .apply(&binding, &rec)
                    .map_err(|e| ("mapping", e))
                    .and_then(|m| {
                        let body = Value::Object(m.body);
                        entity
                            .validate(&body)
                            .map(|()| (m.key, body))
                            .map_err(|e| ("validation", e))
                    });
                match result {
                    Ok((key, body)) => {
                        report.valid += 1;
                        messages.push(envelope::record_message(
                            entity,
                            &mapping.action,
                            &key,
                            &body,
                            &Provenance {
                                council,
                                feed,
                                batch_id,
                                file_sha256: &raw.sha256,
                                locator: &rec.locator,
                                mapping_id: &mapping.id,
                                mapping_version: mapping.version,
                            },
                            now,
                        ));
                    }
                    Err((stage, errors)) => {
                        report.rejected += 1;
                        for e in &errors {
                            *report
                                .rejected_by_reason
                                .entry(format!("{} {}", e.field, e.rule))
                                .or_default() += 1;
                        }
                        log_rejection(council, feed, &rec, &errors);
                        failures.push(NewFailure {
                            stage,
                            file_name: rec.locator.file.clone(),
                            line: rec.locator.line,
                            row: rec.locator.row,
                            raw_record: Some(bounded_raw(&rec)),
                            errors: bounded_errors(&errors),
                        });
                    }
                }
            }
        }
        if messages.len() >= CHUNK || failures.len() >= CHUNK {
            flush_chunk(&mut messages, &mut failures, report)?;
        }
    }
    flush_chunk(&mut messages, &mut failures, report)?;

    let mapping::control::ControlOutcome {
        report: control_report,
        mismatch,
    } = tally.finish();
    report.control = control_report;
    let hold = mismatch.is_some() && mapping.source.on_control_mismatch == ControlPolicy::Hold;
    if let Some(m) = &mismatch {
        tracing::warn!(council, feed, file = %raw.name, batch = batch_id, mismatch = %m, held = hold, "control totals do not match");
        report.reason = Some(m.clone());
        if hold {
            report.status = "held".into();
        }
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
        },
        "rejected_by_reason": report.rejected_by_reason,
        "control": report.control,
    });
    let manifest =
        envelope::manifest_message(&entity.domain, council, feed, batch_id, &summary, now);
    store.finish_batch(batch_id, &summary, &manifest, hold)?;
    tracing::info!(council, feed, file = %raw.name, batch = batch_id, read = report.read, valid = report.valid,
        rejected = report.rejected, new_messages = report.new_messages, status = %report.status, "file processed");
    Ok(())
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
