//! Outbox → broker: publish what is pending, mark what the broker confirmed, keep the rest.

use std::time::Duration;

use crate::amqp::{BrokerConfig, Outcome, Publisher};
use crate::store::Store;
use crate::store::lease::{self, Lease};

/// Messages read from the outbox per round.
const PAGE: u32 = 2000;
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
    /// Times the connection was (re)established.
    pub connections: u64,
    /// Still waiting in the outbox afterwards.
    pub still_pending: u64,
    /// Why the flush stopped early, if it did.
    pub error: Option<String>,
    /// Set when another process held the outbox and published what was pending meanwhile.
    pub published_by: Option<String>,
}

/// How hard to try.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Connection attempts in a row before giving up.
    pub attempts: u32,
    /// First pause between attempts (doubles each time, at most 10 s).
    pub first_pause: Duration,
    /// How long to wait while another process holds the outbox and messages still wait.
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

/// Who publishes.
enum Publishing<'a> {
    /// This process, holding the outbox lease.
    Here(Lease<'a>),
    /// Another process held the lease and nothing is left pending.
    ElsewhereDone(lease::Holder),
    /// Another process holds the lease and messages still wait after `lease_wait`.
    ElsewhereWaiting(lease::Holder),
}

/// One publisher per store: takes the outbox lease, or waits while another process holds it
/// until either the lease is free or nothing is pending any more (the other process published
/// it), so a `run` and an `outbox flush` started together never send a message twice.
async fn take_outbox<'a>(
    store: &'a Store,
    wait: Duration,
) -> Result<Publishing<'a>, crate::store::StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut said = false;
    loop {
        match Lease::try_take(store, lease::PUBLISHER)? {
            Ok(l) => return Ok(Publishing::Here(l)),
            Err(holder) => {
                if store.outbox_counts()?.pending == 0 {
                    return Ok(Publishing::ElsewhereDone(holder));
                }
                if tokio::time::Instant::now() >= deadline || super::stop_requested() {
                    return Ok(Publishing::ElsewhereWaiting(holder));
                }
                if !said {
                    tracing::info!(holder = %holder, "another process is publishing the outbox; waiting for it");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
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
    let lease = match take_outbox(store, retry.lease_wait).await? {
        Publishing::Here(l) => l,
        Publishing::ElsewhereDone(holder) => {
            report.published_by = Some(holder.to_string());
            report.still_pending = store.outbox_counts()?.pending;
            return Ok(report);
        }
        Publishing::ElsewhereWaiting(holder) => {
            report.still_pending = store.outbox_counts()?.pending;
            report.error = Some(format!(
                "another process holds the outbox and {} messages still wait: {holder}",
                report.still_pending
            ));
            report.published_by = Some(holder.to_string());
            return Ok(report);
        }
    };
    let mut publisher: Option<Publisher> = None;
    let mut failures_in_a_row = 0u32;
    let mut failing_since: Option<std::time::Instant> = None;
    let mut pause = retry.first_pause;
    loop {
        if super::stop_requested() {
            report.error = Some("the process is stopping (signal)".into());
            break;
        }
        if !lease.renew()? {
            report.error = Some("another process took over publishing the outbox".into());
            break;
        }
        let page = store.pending(PAGE)?;
        if page.is_empty() {
            break;
        }
        let p = match publisher.take().filter(Publisher::is_healthy) {
            Some(p) => p,
            None => match Publisher::connect(broker).await {
                Ok(p) => {
                    report.connections += 1;
                    tracing::info!(broker = %broker.redacted_url(), "connected to the broker");
                    p
                }
                Err(e) => {
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
        let messages: Vec<_> = page.iter().map(|m| &m.message).collect();
        let started = std::time::Instant::now();
        let outcomes = p.publish(&messages).await;
        let took = started.elapsed().as_secs_f64();
        let mut sent = Vec::new();
        let mut retry_later = Vec::new();
        let mut broken = None;
        for (m, outcome) in page.iter().zip(outcomes) {
            match outcome {
                Outcome::Confirmed => sent.push(m.outbox_id),
                Outcome::Returned { code, text } => {
                    report.unroutable += 1;
                    tracing::warn!(message_id = %m.message.message_id, routing_key = %m.message.routing_key, code, "broker returned the message: no queue is bound for its routing key");
                    store.mark_undeliverable(m.outbox_id, "unroutable", &format!("the broker returned it ({code} {text}): no queue is bound for routing key {}", m.message.routing_key))?;
                }
                Outcome::Nacked if m.attempts + 1 >= MAX_NACKS => {
                    report.rejected += 1;
                    store.mark_undeliverable(
                        m.outbox_id,
                        "rejected",
                        &format!("the broker refused it {MAX_NACKS} times (nack)"),
                    )?;
                }
                Outcome::Nacked => retry_later.push(m.outbox_id),
                Outcome::Failed(reason) => {
                    retry_later.push(m.outbox_id);
                    broken.get_or_insert(reason);
                }
            }
        }
        store.mark_sent(&sent)?;
        crate::metrics::published(sent.len() as u64, took);
        report.published += sent.len() as u64;
        if let Some(reason) = &broken {
            store.mark_attempt_failed(&retry_later, reason)?;
            tracing::warn!(unconfirmed = retry_later.len(), reason = %reason, "connection lost while publishing; reconnecting to resend the unconfirmed messages");
            p.close().await;
            if sent.is_empty() {
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
            if !retry_later.is_empty() {
                store.mark_attempt_failed(&retry_later, "nacked by the broker")?;
            }
            failures_in_a_row = 0;
            failing_since = None;
            pause = retry.first_pause;
            publisher = Some(p);
        }
    }
    if let Some(p) = publisher {
        p.close().await;
    }
    drop(lease);
    report.still_pending = store.outbox_counts()?.pending;
    Ok(report)
}
