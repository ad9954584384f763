//! What the daemon keeps per feed (the schedule occurrence it last ran for, the day it last
//! raised a missing-feed alert), what it reads to say how a feed is doing, messages it makes
//! itself (alerts), and messages the platform dead-lettered.

use super::db::p;
use serde_json::{Value, json};

use super::{Result, Store, now};
use crate::canonical::envelope::OutboundMessage;

/// How a feed is doing, from its batches.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FeedActivity {
    /// Council.
    pub council: String,
    /// Feed.
    pub feed: String,
    /// When a file of the feed was last taken (RFC 3339).
    pub last_arrival: Option<String>,
    /// When a batch of the feed last completed (RFC 3339).
    pub last_success: Option<String>,
    /// Status of the newest batch.
    pub last_status: Option<String>,
    /// Batches held for an operator.
    pub held: u64,
}

/// The daemon's memory of one scheduled feed.
#[derive(Debug, Clone, Default)]
pub struct ScheduleState {
    /// When the daemon first saw the feed's schedule (RFC 3339).
    pub since: Option<String>,
    /// The schedule occurrence the feed last ran for (RFC 3339).
    pub last_fire: Option<String>,
    /// The London day (YYYY-MM-DD) of the last missing-feed alert.
    pub alerted_for: Option<String>,
}

/// A message the platform dead-lettered, as read from the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The message id (our UUIDv5).
    pub message_id: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Its headers, as JSON.
    pub headers: serde_json::Map<String, Value>,
    /// Its body.
    pub body: Vec<u8>,
    /// Correlation id (batch).
    pub correlation_id: String,
    /// Why the broker dead-lettered it (`x-death`: reason, queue, count).
    pub reason: String,
}

impl Store {
    /// Per feed (council, feed): newest arrival, newest success, newest status, held batches.
    pub fn feed_activity(&self) -> Result<Vec<FeedActivity>> {
        let sql = format!(
            "SELECT council, feed,
               MAX(CASE WHEN status != 'abandoned' THEN started_at END),
               MAX(CASE WHEN status IN ('completed', 'released') THEN COALESCE(finished_at, started_at) END),
               (SELECT b2.status FROM batches b2 WHERE b2.council = b.council AND b2.feed = b.feed
                  ORDER BY b2.started_at DESC, b2.{} DESC LIMIT 1),
               SUM(CASE WHEN status = 'held' THEN 1 ELSE 0 END)
             FROM batches b GROUP BY council, feed ORDER BY council, feed",
            self.engine.insertion_order()
        );
        self.with(|db| {
            db.query_map(&sql, p![], |r| {
                Ok(FeedActivity {
                    council: r.get(0)?,
                    feed: r.get(1)?,
                    last_arrival: r.get(2)?,
                    last_success: r.get(3)?,
                    last_status: r.get(4)?,
                    held: r.get::<i64>(5)? as u64,
                })
            })
        })
    }

    /// The daemon's memory of a scheduled feed, starting it (with `since` = `now`, the
    /// daemon's clock) if new.
    pub fn schedule_state(&self, council: &str, feed: &str, now: &str) -> Result<ScheduleState> {
        self.with(|db| {
            db.execute(
                "INSERT INTO feed_schedule (council, feed, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT (council, feed) DO NOTHING",
                p![council, feed, now],
            )?;
            db.query_row(
                "SELECT since, last_fire, alerted_for FROM feed_schedule WHERE council = ?1 AND feed = ?2",
                p![council, feed],
                |r| {
                    Ok(ScheduleState {
                        since: r.get(0)?,
                        last_fire: r.get(1)?,
                        alerted_for: r.get(2)?,
                    })
                },
            )
        })
    }

    /// The daemon's memory of a scheduled feed, without starting it (for `status`).
    pub fn peek_schedule_state(&self, council: &str, feed: &str) -> Result<ScheduleState> {
        self.with(|db| {
            db.query_opt(
                "SELECT since, last_fire, alerted_for FROM feed_schedule WHERE council = ?1 AND feed = ?2",
                p![council, feed],
                |r| {
                    Ok(ScheduleState {
                        since: r.get(0)?,
                        last_fire: r.get(1)?,
                        alerted_for: r.get(2)?,
                    })
                },
            )
            .map(Option::unwrap_or_default)
        })
    }

    /// Records that the feed ran for the schedule occurrence `fire` (RFC 3339).
    pub fn set_last_fire(&self, council: &str, feed: &str, fire: &str) -> Result<()> {
        self.with(|db| {
            db.execute(
                "INSERT INTO feed_schedule (council, feed, since, last_fire) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (council, feed) DO UPDATE SET last_fire = excluded.last_fire",
                p![council, feed, now(), fire],
            )
            .map(|_| ())
        })
    }

    /// Queues a missing-feed alert for `day` unless one was raised for that day already, in
    /// one transaction; `true` when this call queued it.
    pub fn raise_alert(
        &self,
        council: &str,
        feed: &str,
        day: &str,
        message: &OutboundMessage,
    ) -> Result<bool> {
        self.with(|db| {
            let mut tx = db.transaction()?;
            let done: Option<String> = tx
                .query_opt(
                    "SELECT alerted_for FROM feed_schedule WHERE council = ?1 AND feed = ?2",
                    p![council, feed],
                    |r| r.get(0),
                )?
                .flatten();
            if done.as_deref() == Some(day) {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO feed_schedule (council, feed, since, alerted_for) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (council, feed) DO UPDATE SET alerted_for = excluded.alerted_for",
                p![council, feed, now(), day],
            )?;
            tx.execute(
                "INSERT INTO outbox (message_id, batch_id, council, routing_key, headers, body,
                 correlation_id, timestamp, status, created_at)
                 VALUES (?1, NULL, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)
                 ON CONFLICT (message_id) DO NOTHING",
                p![
                    message.message_id,
                    council,
                    message.routing_key,
                    Value::Object(message.headers.clone()).to_string(),
                    message.body,
                    message.correlation_id,
                    message.timestamp,
                    now()
                ],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Keeps a message the platform dead-lettered as an open failure an operator can see and
    /// replay (replay re-queues the stored message under its same id). Returns the failure id.
    /// Idempotent per message: a second copy of the same dead letter adds no second failure.
    pub fn record_dead_letter(&self, d: &DeadLetter) -> Result<i64> {
        let insert_failure = format!(
            "INSERT INTO failures (batch_id, council, feed, stage, file_name, line, row,
               mapping_id, mapping_version, raw_record, errors, message_id, status, created_at)
             SELECT o.batch_id, o.council, COALESCE(b.feed, ''), 'dead-lettered', b.file_name,
               {}, NULL, ?2, o.message_id, 'open', ?3
             FROM outbox o LEFT JOIN batches b ON b.id = o.batch_id WHERE o.message_id = ?1
             RETURNING id",
            super::provenance_headers(self.engine, "o")
        );
        self.with(|db| {
            let mut tx = db.transaction()?;
            let existing: Option<i64> = tx
                .query_opt(
                    "SELECT id FROM failures WHERE message_id = ?1 AND stage = 'dead-lettered' AND status = 'open'",
                    p![d.message_id],
                    |r| r.get(0),
                )?;
            if let Some(id) = existing {
                tx.commit()?;
                return Ok(id);
            }
            // The council is the routing key's last part (`<domain>.<entity>.<action>.<council>`).
            let council = d.routing_key.rsplit('.').next().unwrap_or_default().to_string();
            tx.execute(
                "INSERT INTO outbox (message_id, batch_id, council, routing_key, headers, body,
                 correlation_id, timestamp, status, created_at)
                 VALUES (?1, (SELECT id FROM batches WHERE id = ?5), ?2, ?3, ?4, ?6, ?5, ?7, 'failed', ?8)
                 ON CONFLICT (message_id) DO UPDATE SET status = 'failed', last_error = ?9",
                p![
                    d.message_id,
                    council,
                    d.routing_key,
                    Value::Object(d.headers.clone()).to_string(),
                    d.correlation_id,
                    d.body,
                    chrono::Utc::now().timestamp(),
                    now(),
                    d.reason
                ],
            )?;
            let id: i64 = tx.query_value(
                &insert_failure,
                p![
                    d.message_id,
                    json!([{ "field": "(message)", "rule": "dead-lettered", "message": format!("the platform dead-lettered it: {}", d.reason) }]).to_string(),
                    now()
                ],
            )?;
            tx.commit()?;
            Ok(id)
        })
    }
}
