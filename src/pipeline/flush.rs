//! Outbox → broker: publish what is pending, mark what the broker confirmed, keep the rest.
//!
//! Several processes may flush one store at once (`serve` on several machines, a `run` beside
//! an `outbox flush`): each page is claimed in the store before it is read (`store/claims.rs`),
//! so each pending row is published by one process at a time; a killed publisher's claims are
//! taken over once they expire, or at once when its pid is gone from this host.
//!
//! The store's work runs on a blocking thread, pipelined with the publisher: while one page's
//! messages are published and confirmed, the next page is read and prepared (properties, batch
//! bodies) and the previous page's outcomes are marked, so the broker does not wait for the
//! store.
//!
//! Batched mode: the records of a batch whose feed publishes batches go out as CloudEvents
//! batches (one AMQP message, many records; see [`crate::amqp::Prepared::batch`]). The outbox
//! keeps one row per record, and each record is marked by its batch message's outcome. A batch
//! message holds the pending records of one batch and one routing key whose outbox ids fall in
//! the same block of `batch_size` ids, so the same pending records always make the same message
//! (same id) whatever page they are read in, also after a lost connection or a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::amqp::{BrokerConfig, Outcome, Prepared, Publisher};
use crate::canonical::envelope;
use crate::store::{PendingMessage, Store, StoreError, claims};

/// Messages read from the outbox per round (at least the largest batch size, so a batch
/// message always fits in a page).
const PAGE: u32 = crate::config::MAX_PUBLISH_BATCH;
/// Nacks before a message is moved to the failures.
const MAX_NACKS: i64 = 5;

/// What a flush did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FlushReport {
    /// Confirmed by the broker in this flush.
    pub published: u64,
    /// Returned as unroutable and moved to the failures.
    pub unroutable: u64,
    /// Refused too often and moved to the failures.
    pub rejected: u64,
    /// Of the published records, how many went in CloudEvents batches, and in how many
    /// batch messages.
    pub batched_records: u64,
    /// Batch messages confirmed.
    pub batch_messages: u64,
    /// Times the connection was (re)established.
    pub connections: u64,
    /// Still waiting in the outbox afterwards.
    pub still_pending: u64,
    /// Why the flush stopped early, if it did.
    pub error: Option<String>,
    /// Set when the flush stopped while other processes still held claims on pending
    /// messages (they publish them).
    pub published_by: Option<String>,
}

/// How hard to try.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Connection attempts in a row before giving up.
    pub attempts: u32,
    /// First pause between attempts (doubles each time, at most 10 s).
    pub first_pause: Duration,
    /// How long to wait, once nothing is left to claim, while other processes still hold
    /// claims on pending messages (a claimer that dies leaves them to this one).
    pub lease_wait: Duration,
    /// Keep trying for at least this long after the broker first fails (a routine broker
    /// restart takes a minute or two); the flush gives up once both this and `attempts` are
    /// spent.
    pub budget: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            first_pause: Duration::from_millis(500),
            lease_wait: Duration::from_secs(120),
            budget: Duration::from_secs(150),
        }
    }
}

/// Publishes every pending outbox message. A lost connection is re-established and the
/// unconfirmed messages are sent again (same message ids); when the broker cannot be reached
/// after `retry.attempts` tries in a row, the flush stops and the messages stay pending.
pub async fn flush(
    store: &Store,
    broker: &BrokerConfig,
    retry: &Retry,
) -> Result<FlushReport, crate::store::StoreError> {
    let mut report = FlushReport::default();
    let worker = Arc::new(Store::open(store.location())?);
    let mut reader = Some(Reader {
        store: worker.clone(),
        sizes: HashMap::new(),
    });
    let mut ahead: Option<tokio::task::JoinHandle<(Reader, Result<Page, StoreError>)>> = None;
    let mut marking: Option<tokio::task::JoinHandle<Result<(), StoreError>>> = None;
    // Since when nothing was left to claim while other processes held claims.
    let mut waiting_since: Option<tokio::time::Instant> = None;
    let mut renewed = std::time::Instant::now();
    let mut publisher: Option<Publisher> = None;
    let mut failures_in_a_row = 0u32;
    let mut failing_since: Option<std::time::Instant> = None;
    let mut pause = retry.first_pause;
    let mut nack_pause = retry.first_pause.max(Duration::from_millis(500));
    let result: Result<(), StoreError> = async {
        loop {
            if super::stop_requested() {
                report.error = Some("the process is stopping (signal)".into());
                break;
            }
            if renewed.elapsed() >= claims::CLAIM_TTL / 3 {
                let w = worker.clone();
                joined(tokio::task::spawn_blocking(move || w.renew_claims())).await?;
                renewed = std::time::Instant::now();
            }
            let mut page = match ahead.take() {
                Some(h) => {
                    let (r, page) = joined(h).await;
                    reader = Some(r);
                    page?
                }
                None => {
                    finish(&mut marking).await?;
                    let mut r = reader.take().expect("the reader is back");
                    let (r, page) = joined(tokio::task::spawn_blocking(move || {
                        let page = r.read();
                        (r, page)
                    }))
                    .await;
                    reader = Some(r);
                    page?
                }
            };
            if page.rows.is_empty() {
                finish(&mut marking).await?;
                let w = worker.clone();
                let elsewhere =
                    joined(tokio::task::spawn_blocking(move || w.claimed_elsewhere())).await?;
                if elsewhere == 0 {
                    break;
                }
                let since = *waiting_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= retry.lease_wait || super::stop_requested() {
                    report.published_by = Some(format!(
                        "other processes, which hold claims on {elsewhere} pending messages"
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            waiting_since = None;
            let p = match publisher.take().filter(Publisher::is_healthy) {
                Some(p) => p,
                None => match Publisher::connect(broker).await {
                    Ok(p) => {
                        report.connections += 1;
                        tracing::info!(broker = %broker.redacted_url(), "connected to the broker");
                        p
                    }
                    Err(e) => {
                        worker.release_claims(&page.ids())?;
                        failures_in_a_row += 1;
                        let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                        let spent =
                            failures_in_a_row >= retry.attempts && since.elapsed() >= retry.budget;
                        tracing::warn!(error = %e, attempt = failures_in_a_row,
                            trying_for_secs = since.elapsed().as_secs(), budget_secs = retry.budget.as_secs(),
                            next_try_in_secs = if spent { 0.0 } else { pause.as_secs_f64() },
                            "broker unavailable");
                        if spent {
                            report.error = Some(e.to_string());
                            break;
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(10));
                        continue;
                    }
                },
            };
            // Claim, read and prepare the next page while this one is published.
            let mut r = reader.take().expect("the reader is back");
            ahead = Some(tokio::task::spawn_blocking(move || {
                let page = r.read();
                (r, page)
            }));
            let started = std::time::Instant::now();
            let outcomes = p.publish_prepared(&mut page.messages).await;
            let took = started.elapsed().as_secs_f64();
            let mut marks = Marks::default();
            let mut broken = None;
            for ((message, members), outcome) in
                page.messages.iter().zip(&page.members).zip(outcomes)
            {
                let rows = members.iter().map(|&i| &page.rows[i]);
                let batched = page.batched(members);
                match outcome {
                    Outcome::Confirmed => {
                        marks.sent.extend(rows.map(|r| r.outbox_id));
                        if batched {
                            report.batched_records += members.len() as u64;
                            report.batch_messages += 1;
                        }
                    }
                    Outcome::Returned { code, text } => {
                        report.unroutable += members.len() as u64;
                        tracing::warn!(message_id = %message.message_id, routing_key = %message.routing_key, records = members.len(), code, "broker returned the message: no queue is bound for its routing key");
                        let reason = format!(
                            "the broker returned it ({code} {text}): no queue is bound for routing key {}",
                            message.routing_key
                        );
                        marks.undeliverable.extend(
                            rows.map(|r| (r.outbox_id, "unroutable", reason.clone())),
                        );
                    }
                    Outcome::Nacked => {
                        for r in rows {
                            if r.attempts + 1 >= MAX_NACKS {
                                report.rejected += 1;
                                marks.undeliverable.push((
                                    r.outbox_id,
                                    "rejected",
                                    format!("the broker refused it {MAX_NACKS} times (nack)"),
                                ));
                            } else {
                                marks.retry_later.push(r.outbox_id);
                            }
                        }
                    }
                    Outcome::Failed(reason) => {
                        marks.retry_later.extend(rows.map(|r| r.outbox_id));
                        broken.get_or_insert(reason);
                    }
                }
            }
            let sent = marks.sent.len();
            let nacked = broken.is_none() && !marks.retry_later.is_empty();
            crate::metrics::published(sent as u64, took);
            report.published += sent as u64;
            let unconfirmed = marks.retry_later.len();
            marks.retry_reason = broken
                .clone()
                .unwrap_or_else(|| "nacked by the broker".into());
            // One page's marks at a time, in order.
            finish(&mut marking).await?;
            let w = worker.clone();
            marking = Some(tokio::task::spawn_blocking(move || marks.apply(&w)));
            if let Some(reason) = &broken {
                // Start again from the oldest pending row once this page is marked: the
                // unconfirmed messages are sent again, the same records in the same messages.
                // The page read ahead is given back (its rows may be older than the failed ones).
                if let Some(h) = ahead.take() {
                    let (r, next) = joined(h).await;
                    reader = Some(r);
                    if let Ok(next) = next {
                        worker.release_claims(&next.ids())?;
                    }
                }
                finish(&mut marking).await?;
                tracing::warn!(unconfirmed, reason = %reason, "connection lost while publishing; reconnecting to resend the unconfirmed messages");
                p.close().await;
                if sent == 0 {
                    failures_in_a_row += 1;
                    let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                    if failures_in_a_row >= retry.attempts && since.elapsed() >= retry.budget {
                        report.error = Some(format!("publishing keeps failing: {reason}"));
                        break;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            } else {
                failures_in_a_row = 0;
                failing_since = None;
                if nacked {
                    // The broker refused messages (a quorum queue electing a new leader after a
                    // node failed does so; a channel opened during the election may keep
                    // refusing): drop this connection and wait before they come round again on
                    // a fresh one, longer each time, so that their `MAX_NACKS` tries span
                    // seconds and channels, not one burst on one channel.
                    tracing::warn!(nacked = unconfirmed, next_try_in_secs = nack_pause.as_secs_f64(), "the broker refused messages (nack); they are sent again after a pause, on a new connection");
                    p.close().await;
                    tokio::time::sleep(nack_pause).await;
                    nack_pause = (nack_pause * 2).min(Duration::from_secs(10));
                } else {
                    publisher = Some(p);
                    if sent > 0 {
                        nack_pause = retry.first_pause.max(Duration::from_millis(500));
                    }
                }
                pause = retry.first_pause;
            }
        }
        Ok(())
    }
    .await;
    if let Some(h) = ahead.take() {
        let _ = joined(h).await;
    }
    let marked = finish(&mut marking).await;
    // Whatever this flush claimed and did not publish goes back to the other publishers.
    let released = {
        let w = worker.clone();
        joined(tokio::task::spawn_blocking(move || w.release_all_claims())).await
    };
    result?;
    marked?;
    released?;
    if let Some(p) = publisher {
        p.close().await;
    }
    report.still_pending = store.outbox_counts()?.pending;
    Ok(report)
}

/// Waits for a store task on the blocking pool; a panic there is a panic here.
async fn joined<T>(h: tokio::task::JoinHandle<T>) -> T {
    match h.await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a store task of the flush was cancelled: {e}"),
    }
}

/// Waits for the previous page's marks, if any.
async fn finish(
    marking: &mut Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
) -> Result<(), StoreError> {
    match marking.take() {
        Some(h) => joined(h).await,
        None => Ok(()),
    }
}

/// What became of one page's records, to be written to the store.
#[derive(Default)]
struct Marks {
    sent: Vec<i64>,
    retry_later: Vec<i64>,
    retry_reason: String,
    undeliverable: Vec<(i64, &'static str, String)>,
}

impl Marks {
    fn apply(self, store: &Store) -> Result<(), StoreError> {
        store.mark_sent(&self.sent)?;
        for (id, stage, reason) in &self.undeliverable {
            store.mark_undeliverable(*id, stage, reason)?;
        }
        if !self.retry_later.is_empty() {
            store.mark_attempt_failed(&self.retry_later, &self.retry_reason)?;
        }
        Ok(())
    }
}

/// One outbox row, as much as the flush needs after publishing.
struct Row {
    outbox_id: i64,
    attempts: i64,
    /// Records per batch message, when the row goes in a batch.
    batch_size: Option<u32>,
}

/// One page of the outbox, read and prepared for publishing.
struct Page {
    rows: Vec<Row>,
    /// The messages to publish, in outbox order of their first row.
    messages: Vec<Prepared>,
    /// The rows (indexes into `rows`) each message carries.
    members: Vec<Vec<usize>>,
}

impl Page {
    /// The page's outbox ids (claimed by this process).
    fn ids(&self) -> Vec<i64> {
        self.rows.iter().map(|r| r.outbox_id).collect()
    }

    fn batched(&self, members: &[usize]) -> bool {
        members
            .first()
            .is_some_and(|&i| self.rows[i].batch_size.is_some())
    }
}

/// Reads pages on the blocking pool; remembers each batch's publishing size.
struct Reader {
    store: Arc<Store>,
    sizes: HashMap<String, Option<u32>>,
}

impl Reader {
    /// Claims the oldest publishable rows and groups them into messages: a record of a
    /// batched feed goes in the batch message of its (batch, routing key, block of
    /// `batch_size` outbox ids), any other row alone. The store claims a block whole.
    fn read(&mut self) -> Result<Page, StoreError> {
        let mut pending = self.store.claim_pending(PAGE)?;
        let mut sizes = Vec::with_capacity(pending.len());
        for m in &pending {
            let size = if envelope::is_record(&m.message) {
                match self.sizes.get(&m.message.correlation_id) {
                    Some(s) => *s,
                    None => {
                        let s = self.store.publish_batch_size(&m.message.correlation_id)?;
                        self.sizes.insert(m.message.correlation_id.clone(), s);
                        s
                    }
                }
            } else {
                None
            };
            sizes.push(size.map(|n| n.max(1)));
        }
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut groups: HashMap<(&str, &str, i64), usize> = HashMap::new();
        for (i, (m, size)) in pending.iter().zip(&sizes).enumerate() {
            match size {
                Some(n) => {
                    let key = (
                        m.message.correlation_id.as_str(),
                        m.message.routing_key.as_str(),
                        m.outbox_id / i64::from(*n),
                    );
                    match groups.get(&key) {
                        Some(&g) => members[g].push(i),
                        None => {
                            groups.insert(key, members.len());
                            members.push(vec![i]);
                        }
                    }
                }
                None => members.push(vec![i]),
            }
        }
        drop(groups);
        let mut messages = Vec::with_capacity(members.len());
        for group in &members {
            if sizes[group[0]].is_some() {
                let records: Vec<&envelope::OutboundMessage> =
                    group.iter().map(|&i| &pending[i].message).collect();
                messages.push(Prepared::batch(&records));
            } else {
                messages.push(Prepared::single(&mut pending[group[0]].message));
            }
        }
        let rows = pending
            .iter()
            .zip(sizes)
            .map(|(m, batch_size): (&PendingMessage, _)| Row {
                outbox_id: m.outbox_id,
                attempts: m.attempts,
                batch_size,
            })
            .collect();
        Ok(Page {
            rows,
            messages,
            members,
        })
    }
}
