//! Delta mode: a snapshot file compared with its feed's last accepted state. Each valid record
//! is `created`, `updated` (its content hash changed) or unchanged (not published); keys of the
//! state absent from the snapshot are `deleted` (the message carries the last accepted body).
//! For HR employment feeds, starter and leaver events are derived from the changes, filled only
//! from what the records say.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use crate::canonical::envelope::{self, OutboundMessage, Provenance};
use crate::canonical::{Entity, Registry};
use crate::formats::Locator;
use crate::store::{StateChange, Store, StoreError};

/// What a snapshot changed.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DeltaCounts {
    /// Records new to the state.
    pub created: u64,
    /// Records whose content changed.
    pub updated: u64,
    /// Records of the state absent from the snapshot.
    pub deleted: u64,
    /// Records unchanged (not published).
    pub unchanged: u64,
    /// Starter events derived (HR employment feeds).
    pub starters: u64,
    /// Leaver events derived (HR employment feeds).
    pub leavers: u64,
    /// Employments gone from the snapshot whose last accepted record has no end date: no
    /// leaver event (hr.leaver_event needs a leaving date, and none is invented).
    pub leavers_without_date: u64,
    /// Records of the state absent from a snapshot that had rejected rows: not deleted, as
    /// they may be among the rejected rows (they are deleted by the next clean snapshot).
    pub deletions_deferred: u64,
    /// Records in the state before this snapshot.
    pub state_before: u64,
    /// True for the first snapshot of a feed (no state yet): every record is `created`, and no
    /// starter events are derived (an employment present on day one did not start that day).
    pub baseline: bool,
}

/// The outcome of one valid record.
pub enum RecordOutcome {
    /// Publish these (the record's message, and any derived event).
    Publish(Vec<OutboundMessage>),
    /// Same content as the state: nothing to publish.
    Unchanged,
    /// The key already appeared in this snapshot.
    Duplicate,
}

/// Compares one snapshot with its feed's state while it is read.
pub struct Delta<'a> {
    council: &'a str,
    feed: &'a str,
    entity: &'a Entity,
    starter: Option<&'a Entity>,
    leaver: Option<&'a Entity>,
    /// The batch that last advanced the state (for message ids and the stale check).
    pub base: Option<String>,
    remaining: HashMap<String, String>,
    seen: HashSet<String>,
    /// Counts so far.
    pub counts: DeltaCounts,
    /// State changes not yet written to the store.
    pub changes: Vec<StateChange>,
}

const EMPLOYMENT: &str = "hr.employment";

impl<'a> Delta<'a> {
    /// Loads the feed's state.
    pub fn start(
        store: &Store,
        registry: &'a Registry,
        council: &'a str,
        feed: &'a str,
        entity: &'a Entity,
    ) -> Result<Self, StoreError> {
        let state = store.feed_state(council, feed)?;
        let hr = entity.name == EMPLOYMENT;
        Ok(Self {
            council,
            feed,
            entity,
            starter: hr.then(|| registry.get("hr.starter_event")).flatten(),
            leaver: hr.then(|| registry.get("hr.leaver_event")).flatten(),
            counts: DeltaCounts {
                state_before: state.hashes.len() as u64,
                baseline: state.head.is_none(),
                ..Default::default()
            },
            base: state.head,
            remaining: state.hashes,
            seen: HashSet::new(),
            changes: Vec::new(),
        })
    }

    fn message(
        &self,
        action: &str,
        key: &str,
        body: &Value,
        previous: Option<&str>,
        provenance: &Provenance<'_>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> OutboundMessage {
        let hash = envelope::content_hash(body);
        let id = envelope::delta_message_id(
            self.council,
            &self.entity.name,
            key,
            action,
            previous,
            &hash,
            self.base.as_deref(),
        );
        let mut m =
            envelope::record_message(self.entity, action, key, body, provenance, now).with_id(id);
        if let Some(p) = previous {
            m = m.with_header("x-previous-content-sha256", json!(p));
        }
        m
    }

    /// Classifies one valid record of the snapshot.
    pub fn record(
        &mut self,
        store: &Store,
        key: &str,
        body: &Value,
        provenance: &Provenance<'_>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<RecordOutcome, StoreError> {
        if !self.seen.insert(key.to_string()) {
            return Ok(RecordOutcome::Duplicate);
        }
        let hash = envelope::content_hash(body);
        let previous = self.remaining.remove(key);
        let mut out = Vec::new();
        match previous {
            Some(p) if p == hash => {
                self.counts.unchanged += 1;
                return Ok(RecordOutcome::Unchanged);
            }
            Some(p) => {
                self.counts.updated += 1;
                out.push(self.message("updated", key, body, Some(&p), provenance, now));
                if self.leaver.is_some() {
                    let before = store.feed_state_body(self.council, self.feed, key)?;
                    let had_end = before.as_ref().is_some_and(|b| has(b, "end_date"));
                    if !had_end && has(body, "end_date") {
                        out.extend(self.leaver_event(body, provenance, now));
                    }
                }
                self.changes.push(StateChange {
                    key: key.to_string(),
                    action: "updated",
                    content_hash: Some(hash),
                    body: Some(body.clone()),
                });
            }
            None => {
                self.counts.created += 1;
                out.push(self.message("created", key, body, None, provenance, now));
                if !self.counts.baseline {
                    out.extend(self.starter_event(body, provenance, now));
                }
                self.changes.push(StateChange {
                    key: key.to_string(),
                    action: "created",
                    content_hash: Some(hash),
                    body: Some(body.clone()),
                });
            }
        }
        Ok(RecordOutcome::Publish(out))
    }

    /// After the last record: the deletions (none when `rejected` rows might hide the keys).
    pub fn finish(
        &mut self,
        store: &Store,
        rejected: u64,
        provenance: &Provenance<'_>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<OutboundMessage>, StoreError> {
        let mut absent: Vec<String> = self.remaining.drain().map(|(k, _)| k).collect();
        absent.sort();
        if rejected > 0 {
            self.counts.deletions_deferred = absent.len() as u64;
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for key in absent {
            let Some(body) = store.feed_state_body(self.council, self.feed, &key)? else {
                continue;
            };
            self.counts.deleted += 1;
            let hash = envelope::content_hash(&body);
            out.push(self.message("deleted", &key, &body, Some(&hash), provenance, now));
            if self.leaver.is_some() {
                if has(&body, "end_date") {
                    out.extend(self.leaver_event(&body, provenance, now));
                } else {
                    self.counts.leavers_without_date += 1;
                }
            }
            self.changes.push(StateChange {
                key,
                action: "deleted",
                content_hash: None,
                body: None,
            });
        }
        Ok(out)
    }

    fn starter_event(
        &mut self,
        employment: &Value,
        provenance: &Provenance<'_>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<OutboundMessage> {
        let entity = self.starter?;
        let mut body = Map::new();
        copy(employment, &mut body, "employment_id", "employment_id");
        copy(employment, &mut body, "person_id", "person_id");
        copy(employment, &mut body, "payroll_id", "payroll_id");
        copy(employment, &mut body, "start_date", "start_date");
        let key = format!(
            "{}/{}",
            employment["employment_id"].as_str()?,
            employment["start_date"].as_str()?
        );
        let m = self.derived(entity, &key, Value::Object(body), provenance, now)?;
        self.counts.starters += 1;
        Some(m)
    }

    fn leaver_event(
        &mut self,
        employment: &Value,
        provenance: &Provenance<'_>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<OutboundMessage> {
        let entity = self.leaver?;
        let mut body = Map::new();
        copy(employment, &mut body, "employment_id", "employment_id");
        copy(employment, &mut body, "person_id", "person_id");
        copy(employment, &mut body, "payroll_id", "payroll_id");
        copy(employment, &mut body, "end_date", "leaving_date");
        // The employment record never says why someone left.
        body.insert("reason".into(), json!("not_recorded"));
        let key = format!(
            "{}/{}",
            employment["employment_id"].as_str()?,
            employment["end_date"].as_str()?
        );
        let m = self.derived(entity, &key, Value::Object(body), provenance, now)?;
        self.counts.leavers += 1;
        Some(m)
    }

    fn derived(
        &self,
        entity: &Entity,
        key: &str,
        body: Value,
        provenance: &Provenance<'_>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<OutboundMessage> {
        if let Err(errors) = entity.validate(&body) {
            let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
            tracing::warn!(council = self.council, feed = self.feed, entity = %entity.name, fields = ?fields,
                "derived event not valid against its schema; not published");
            return None;
        }
        Some(
            envelope::record_message(entity, "upserted", key, &body, provenance, now)
                .with_header("x-derived-from", json!(self.entity.name)),
        )
    }
}

fn has(body: &Value, field: &str) -> bool {
    body.get(field).is_some_and(|v| !v.is_null())
}

fn copy(from: &Value, to: &mut Map<String, Value>, field: &str, as_field: &str) {
    if let Some(v) = from.get(field).filter(|v| !v.is_null()) {
        to.insert(as_field.to_string(), v.clone());
    }
}

/// A locator for messages that no row of the file stands for (deletions).
pub fn no_row(file: &str) -> Locator {
    Locator {
        file: file.to_string(),
        line: 0,
        row: 0,
    }
}
