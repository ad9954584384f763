//! Replaying a stored failure: re-map the raw record with the feed's current mapping, or
//! re-queue a message the broker could not route (or the platform dead-lettered). A replayed
//! message carries `x-replay-of: <failure id>`; its id is the record's deterministic id, so it
//! is the same as before unless the content changed.
//!
//! Bulk replay ([`Operator::bulk_replay`]) walks the matching failures by id, a page at a time
//! (never all in memory), each record resolved in its own transaction with its outbox row, and
//! the job's position saved after each page: an interrupted job resumes after the last failure
//! it went through, and a failure already replayed is never queued twice.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::PipelineError;
use crate::canonical::Registry;
use crate::canonical::envelope::{self, OutboundMessage, Provenance};
use crate::config::Config;
use crate::formats::{Locator, SourceRecord};
use crate::mapping::Mapping;
use crate::store::{FailureFilter, FailureRow, JobStep, ReplayJob, Store, StoreError};

/// What a replay did.
#[derive(Debug, Clone, serde::Serialize)]
pub enum ReplayOutcome {
    /// The record now maps and validates: its message is in the outbox.
    Queued {
        /// The new message's id.
        message_id: String,
    },
    /// It still fails; the failure stays open with the new errors.
    StillFailing {
        /// The errors with the current mapping.
        errors: Value,
    },
}

/// What a replay would do, worked out without changing anything.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Re-queue the stored message as it is (same id).
    Requeue(String),
    /// Queue this newly mapped message.
    Queue(Box<OutboundMessage>),
    /// The record still fails with the current mapping.
    StillFailing(Value),
}

/// Mappings loaded once per replay run (the current file on disk when the run starts).
#[derive(Default)]
pub struct MappingCache(HashMap<(String, String), Arc<Mapping>>);

fn refuse(msg: String) -> PipelineError {
    PipelineError::Other(msg)
}

/// Works out what replaying `failure` would do, without writing anything.
pub fn plan(
    config: &Config,
    registry: &Registry,
    store: &Store,
    cache: &mut MappingCache,
    failure: &FailureRow,
) -> Result<Plan, PipelineError> {
    let id = failure.id;
    if failure.status != "open" {
        return Err(refuse(format!(
            "failure {id} is already {}",
            failure.status
        )));
    }
    if let Some(message_id) = &failure.message_id {
        return Ok(Plan::Requeue(message_id.clone()));
    }
    let council = config.council(&failure.council).ok_or_else(|| {
        refuse(format!(
            "council {} is no longer configured",
            failure.council
        ))
    })?;
    let feed = council
        .feeds
        .iter()
        .find(|f| f.id == failure.feed)
        .ok_or_else(|| {
            refuse(format!(
                "feed {} of {} is no longer configured",
                failure.feed, council.id
            ))
        })?;
    if feed.policy.mode == crate::config::FeedMode::Snapshot {
        // A replayed row would be published outside the feed's state (as an event, not as a
        // change), and the next snapshot would then announce it again as created.
        return Err(refuse(format!(
            "failure {id} is from the snapshot feed {} / {}: rows of a snapshot are not replayed one \
             by one; fix the mapping, and the next snapshot (or this file read again with `run \
             --force`) publishes the record as created or updated",
            council.id, feed.id
        )));
    }
    let key = (council.id.clone(), feed.id.clone());
    let mapping = match cache.0.get(&key) {
        Some(m) => m.clone(),
        None => {
            let m = Arc::new(super::load_mapping(feed, registry)?);
            cache.0.insert(key, m.clone());
            m
        }
    };
    // A mapping that makes records of several entities (`also:`) marks each failure's errors
    // with the entity whose record failed: only that record is made again.
    let failed_entity = failure
        .errors
        .get(0)
        .and_then(|e| e.get("entity"))
        .and_then(Value::as_str);
    let mapping: &crate::mapping::Mapping = match failed_entity {
        Some(name) => mapping
            .records()
            .find(|m| m.entity == name)
            .ok_or_else(|| {
                refuse(format!(
                    "failure {id} is of a `{name}` record, which the feed's mapping no longer makes"
                ))
            })?,
        None => &mapping,
    };
    let entity = registry
        .get(&mapping.entity)
        .ok_or_else(|| refuse(format!("no schema for {}", mapping.entity)))?;
    let locator = Locator {
        file: failure.file_name.clone().unwrap_or_default(),
        line: failure.line.unwrap_or(0).max(0) as u64,
        row: failure.row.unwrap_or(0).max(0) as u64,
    };
    let record = failure
        .raw_record
        .as_ref()
        .and_then(|raw| SourceRecord::from_raw_json(locator.clone(), raw))
        .ok_or_else(|| refuse(format!("failure {id} has no complete raw record to re-map (none was kept, or a value was longer than the failure store keeps)")))?;
    let as_at = store.batch_as_at(failure.batch_id.as_deref())?;
    let binding = mapping
        .bind_for(&record.header)?
        .supply_as_at(as_at.as_ref().map(|(d, s)| (d.as_str(), s.as_str())));
    let mapped = mapping.apply(&binding, &record).and_then(|m| {
        let body = Value::Object(m.body);
        entity.validate(&body).map(|()| (m.key, body))
    });
    match mapped {
        Ok((key, body)) => {
            let sha = store
                .batch_sha256(failure.batch_id.as_deref())?
                .unwrap_or_default();
            let batch_id = failure.batch_id.clone().unwrap_or_default();
            let mut message = envelope::record_message(
                entity,
                &mapping.action,
                &key,
                &body,
                &Provenance {
                    council: &failure.council,
                    feed: &failure.feed,
                    batch_id: &batch_id,
                    file_sha256: &sha,
                    locator: &locator,
                    mapping_id: &mapping.id,
                    mapping_version: mapping.version,
                },
                chrono::Utc::now(),
            );
            message
                .headers
                .insert("x-replay-of".into(), Value::String(id.to_string()));
            Ok(Plan::Queue(Box::new(message)))
        }
        Err(errors) => Ok(Plan::StillFailing(
            serde_json::to_value(&errors).unwrap_or(Value::Null),
        )),
    }
}

/// Replays failure `id` as `actor`. Audited either way.
pub fn replay_failure(
    config: &Config,
    registry: &Registry,
    store: &Store,
    id: i64,
    actor: &str,
    reason: &str,
) -> Result<ReplayOutcome, PipelineError> {
    let failure = store.failure(id)?;
    match plan(
        config,
        registry,
        store,
        &mut MappingCache::default(),
        &failure,
    )? {
        Plan::Requeue(message_id) => {
            store.requeue_failed_message(id, &message_id, actor, reason)?;
            Ok(ReplayOutcome::Queued { message_id })
        }
        Plan::Queue(message) => {
            store.replay_failure(id, &message, actor, reason)?;
            tracing::info!(failure = id, message_id = %message.message_id, actor, "failure replayed into the outbox");
            Ok(ReplayOutcome::Queued {
                message_id: message.message_id,
            })
        }
        Plan::StillFailing(errors) => {
            store.replay_failed(id, &errors, actor)?;
            Ok(ReplayOutcome::StillFailing { errors })
        }
    }
}

/// Errors without the values they quote (a value may be personal data; the record page shows
/// values, masked by their schema class).
pub fn without_values(errors: &Value) -> Value {
    let mut errors = errors.clone();
    if let Some(list) = errors.as_array_mut() {
        for e in list {
            if let Some(o) = e.as_object_mut() {
                o.remove("value");
            }
        }
    }
    errors
}

/// A dry run's answer for one record (no record values in it).
pub fn describe_plan(id: i64, plan: &Result<Plan, PipelineError>) -> Value {
    match plan {
        Ok(Plan::Requeue(m)) => json!({"id": id, "outcome": "would requeue", "message_id": m}),
        Ok(Plan::Queue(m)) => {
            json!({"id": id, "outcome": "would queue", "message_id": m.message_id, "routing_key": m.routing_key})
        }
        Ok(Plan::StillFailing(e)) => {
            json!({"id": id, "outcome": "still failing", "errors": without_values(e)})
        }
        Err(e) => json!({"id": id, "outcome": "refused", "reason": e.to_string()}),
    }
}

/// What a bulk dry run found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DryRun {
    /// Failures that match.
    pub matching: u64,
    /// Would be queued (re-mapped) or re-queued (stored message).
    pub would_queue: u64,
    /// Still fail with the current mapping.
    pub still_failing: u64,
    /// Cannot be replayed (snapshot feed, feed gone...).
    pub refused: u64,
    /// Per record, up to the first `detail_limit`.
    pub records: Vec<Value>,
}

/// Replays for the console and the command line: the configuration and the canonical model the
/// API cannot read itself (only pipeline, daemon and cli read the configuration).
pub struct Operator {
    config: Arc<Config>,
    registry: Arc<Registry>,
}

impl Operator {
    /// An operator over this configuration.
    pub fn new(config: Arc<Config>, registry: Arc<Registry>) -> Self {
        Self { config, registry }
    }

    /// The configured councils.
    pub fn councils(&self) -> Vec<String> {
        self.config.councils.iter().map(|c| c.id.clone()).collect()
    }

    /// The (council, feed) pairs whose current mapping makes `entity`.
    pub fn entity_feeds(&self, entity: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for c in &self.config.councils {
            for f in &c.feeds {
                if super::load_mapping(f, &self.registry)
                    .is_ok_and(|m| m.records().any(|r| r.entity == entity))
                {
                    out.push((c.id.clone(), f.id.clone()));
                }
            }
        }
        out
    }

    /// Resolves the filter's entity to feeds.
    pub fn resolve(&self, filter: &mut FailureFilter) {
        if let Some(e) = filter.entity.as_deref().filter(|e| !e.is_empty()) {
            filter.entity_feeds = Some(self.entity_feeds(e));
        }
    }

    /// Which raw columns of a failure's record feed only non-personal canonical fields (shown
    /// as they are); every other column is masked.
    pub fn public_columns(&self, f: &FailureRow, header: &crate::formats::Header) -> Vec<bool> {
        let mapping = self
            .config
            .council(&f.council)
            .and_then(|c| c.feeds.iter().find(|feed| feed.id == f.feed))
            .and_then(|feed| super::load_mapping(feed, &self.registry).ok());
        let binding = mapping.and_then(|m| m.bind_for(header).ok());
        (0..header.names().len())
            .map(|i| binding.as_ref().is_some_and(|b| b.is_public_column(i)))
            .collect()
    }

    /// A failure as a person sees it: its raw record column by column, personal values masked
    /// by the schemas' `x-pii` classes unless `reveal`; error values masked the same way; its
    /// canonical entity.
    pub fn view(&self, f: &FailureRow, reveal: bool) -> Value {
        let record = f.raw_record.as_ref().and_then(|raw| {
            SourceRecord::from_raw_json(
                Locator {
                    file: String::new(),
                    line: 0,
                    row: 0,
                },
                raw,
            )
        });
        let mut columns = Vec::new();
        let mut public_names = Vec::new();
        if let Some(rec) = &record {
            let public = self.public_columns(f, &rec.header);
            for (i, name) in rec.header.names().iter().enumerate() {
                let value = rec.values.get(i).map(String::as_str).unwrap_or("");
                let shown = if public[i] || reveal {
                    value.to_string()
                } else {
                    crate::pii::mask(value)
                };
                if public[i] {
                    public_names.push(name.clone());
                }
                columns.push(json!({"column": name, "value": shown, "personal": !public[i]}));
            }
        }
        let errors: Vec<Value> = f
            .errors
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut e| {
                let column_public = e["column"]
                    .as_str()
                    .is_some_and(|c| public_names.iter().any(|p| p == c));
                if let Some(v) = e.get("value").and_then(Value::as_str).map(str::to_owned) {
                    e["value"] = Value::String(if column_public || reveal {
                        v
                    } else {
                        crate::pii::mask(&v)
                    });
                }
                e
            })
            .collect();
        json!({
            "id": f.id, "council": f.council, "feed": f.feed, "kind": f.stage, "batch_id": f.batch_id,
            "file": f.file_name, "line": f.line, "row": f.row,
            "mapping": {"id": f.mapping_id, "version": f.mapping_version},
            "errors": errors, "raw_record": columns, "masked": !reveal,
            "message_id": f.message_id, "status": f.status, "created_at": f.created_at,
        })
    }

    /// What replaying these failures would do, changing nothing.
    pub fn dry_run(
        &self,
        store: &Store,
        filter: &FailureFilter,
        detail_limit: usize,
    ) -> Result<DryRun, PipelineError> {
        let mut cache = MappingCache::default();
        let mut out = DryRun::default();
        let mut after = 0;
        loop {
            let page = store.failures_matching(filter, after, 500)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for f in &page {
                let p = plan(&self.config, &self.registry, store, &mut cache, f);
                out.matching += 1;
                match &p {
                    Ok(Plan::Requeue(_) | Plan::Queue(_)) => out.would_queue += 1,
                    Ok(Plan::StillFailing(_)) => out.still_failing += 1,
                    Err(_) => out.refused += 1,
                }
                if out.records.len() < detail_limit {
                    out.records.push(describe_plan(f.id, &p));
                }
            }
        }
        Ok(out)
    }

    /// Replays one failure (audited).
    pub fn replay_one(
        &self,
        store: &Store,
        id: i64,
        actor: &str,
        reason: &str,
    ) -> Result<ReplayOutcome, PipelineError> {
        replay_failure(&self.config, &self.registry, store, id, actor, reason)
    }

    /// Starts a bulk replay job over the failures matching `filter` and runs it until done or
    /// until `stop()` says so (then it is `interrupted`, and [`Operator::resume`] carries on).
    pub fn bulk_replay(
        &self,
        store: &Store,
        filter: &FailureFilter,
        actor: &str,
        reason: &str,
        stop: &dyn Fn() -> bool,
    ) -> Result<ReplayJob, PipelineError> {
        let id = uuid::Uuid::new_v4().to_string();
        let matching = store.count_failures(filter)?;
        store.create_replay_job(&id, actor, reason, filter, matching)?;
        self.run_job(store, &id, stop)
    }

    /// Resumes an interrupted bulk replay after the last failure it went through.
    pub fn resume(
        &self,
        store: &Store,
        job: &str,
        stop: &dyn Fn() -> bool,
    ) -> Result<ReplayJob, PipelineError> {
        let j = store.replay_job(job)?;
        if j.status == "done" {
            return Err(PipelineError::Store(StoreError::Refused(format!(
                "replay job {job} is already done"
            ))));
        }
        self.run_job(store, job, stop)
    }

    fn run_job(
        &self,
        store: &Store,
        job: &str,
        stop: &dyn Fn() -> bool,
    ) -> Result<ReplayJob, PipelineError> {
        let j = store.replay_job(job)?;
        let filter: FailureFilter = serde_json::from_value(j.filter.clone())
            .map_err(|e| refuse(format!("replay job {job} has an unreadable filter: {e}")))?;
        let mut cache = MappingCache::default();
        let mut after = j.last_id;
        loop {
            if stop() {
                return Ok(store.finish_replay_job(job, "interrupted")?);
            }
            let page = store.failures_matching(&filter, after, 200)?;
            let Some(last) = page.last() else { break };
            let mut plans = Vec::with_capacity(page.len());
            let mut refused = 0;
            for f in &page {
                match plan(&self.config, &self.registry, store, &mut cache, f) {
                    Ok(p) => plans.push((f.id, p)),
                    Err(PipelineError::Store(e)) => return Err(PipelineError::Store(e)),
                    Err(_) => refused += 1,
                }
            }
            let steps: Vec<JobStep<'_>> = plans
                .iter()
                .map(|(id, p)| match p {
                    Plan::Requeue(m) => JobStep::Requeue(*id, m),
                    Plan::Queue(m) => JobStep::Queue(*id, m),
                    Plan::StillFailing(e) => JobStep::StillFailing(*id, e),
                })
                .collect();
            after = last.id;
            store.apply_job_page(job, &j.actor, &steps, after, refused)?;
        }
        Ok(store.finish_replay_job(job, "done")?)
    }
}
