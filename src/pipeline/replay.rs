//! Replaying a stored failure: re-map the raw record with the feed's current mapping, or
//! re-queue a message the broker could not route.

use serde_json::Value;

use super::PipelineError;
use crate::canonical::Registry;
use crate::canonical::envelope::{self, Provenance};
use crate::config::Config;
use crate::formats::{Locator, SourceRecord};
use crate::store::Store;

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
    if failure.status != "open" {
        return Err(PipelineError::Other(format!(
            "failure {id} is already {}",
            failure.status
        )));
    }
    if let Some(message_id) = &failure.message_id {
        store.requeue_failed_message(id, message_id, actor, reason)?;
        return Ok(ReplayOutcome::Queued {
            message_id: message_id.clone(),
        });
    }
    let council = config.council(&failure.council).ok_or_else(|| {
        PipelineError::Other(format!(
            "council {} is no longer configured",
            failure.council
        ))
    })?;
    let feed = council
        .feeds
        .iter()
        .find(|f| f.id == failure.feed)
        .ok_or_else(|| {
            PipelineError::Other(format!(
                "feed {} of {} is no longer configured",
                failure.feed, council.id
            ))
        })?;
    if feed.policy.mode == crate::config::FeedMode::Snapshot {
        // A replayed row would be published outside the feed's state (as an event, not as a
        // change), and the next snapshot would then announce it again as created.
        return Err(PipelineError::Other(format!(
            "failure {id} is from the snapshot feed {} / {}: rows of a snapshot are not replayed one \
             by one; fix the mapping, and the next snapshot (or this file read again with `run \
             --force`) publishes the record as created or updated",
            council.id, feed.id
        )));
    }
    let mapping = super::load_mapping(feed, registry)?;
    let entity = registry
        .get(&mapping.entity)
        .ok_or_else(|| PipelineError::Other(format!("no schema for {}", mapping.entity)))?;
    let locator = Locator {
        file: failure.file_name.clone().unwrap_or_default(),
        line: failure.line.unwrap_or(0).max(0) as u64,
        row: failure.row.unwrap_or(0).max(0) as u64,
    };
    let record = failure
        .raw_record
        .as_ref()
        .and_then(|raw| SourceRecord::from_raw_json(locator.clone(), raw))
        .ok_or_else(|| PipelineError::Other(format!("failure {id} has no complete raw record to re-map (none was kept, or a value was longer than the failure store keeps)")))?;
    let binding = mapping.bind_for(&record.header)?;
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
            let message = envelope::record_message(
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
            store.replay_failure(id, &message, actor, reason)?;
            tracing::info!(failure = id, message_id = %message.message_id, actor, "failure replayed into the outbox");
            Ok(ReplayOutcome::Queued {
                message_id: message.message_id,
            })
        }
        Err(errors) => {
            let errors = serde_json::to_value(&errors).unwrap_or(Value::Null);
            store.replay_failed(id, &errors, actor)?;
            Ok(ReplayOutcome::StillFailing { errors })
        }
    }
}
