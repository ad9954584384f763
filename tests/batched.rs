//! Batched mode: a feed publishing CloudEvents batches (`publish: { batched: true }`) keeps the
//! per-record guarantees. Across a cut connection every record arrives, and a consumer that
//! drops a batch message it has already seen (same message id) sees each record once; a failed
//! record of a batch can be replayed and goes out alone, and a batch message the platform
//! dead-letters comes back as one failure a record.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{
    Consumer, ROWS, Received, Sandbox, cutting_proxy, sandbox_with_payroll, write_payroll_file,
};
use council_bridge::canonical::Registry;
use council_bridge::canonical::envelope::{BATCH_CONTENT_TYPE, batch_message_id};
use council_bridge::config::FeedPolicy;
use council_bridge::pipeline::flush::{Retry, flush};
use council_bridge::pipeline::process_file_with;
use council_bridge::store::Store;
use serde_json::Value;

const BATCH_SIZE: u32 = 100;
/// Rows of the file of the tests whose point is one record of a batch (replayed, dead-lettered),
/// not the volume: five batch messages of `BATCH_SIZE`. The connection-cut test keeps the full
/// `common::ROWS` (50 batch messages, so the cut falls with many messages in flight).
const SMALL_FILE_ROWS: usize = 500;

/// Processes one generated Northshire payroll file of `rows` rows for a batched feed; returns
/// the store and the ids of the records and of the manifest now in the outbox.
fn batched_file(sandbox: &Sandbox, rows: usize) -> (Store, BTreeSet<String>, String) {
    let dir = sandbox.path("mappings/northshire/samples/payroll");
    write_payroll_file(&dir.join("payroll_batched_0.csv"), 100_000, rows);
    let registry = Registry::load(&sandbox.path("schemas")).unwrap();
    let mapping =
        council_bridge::mapping::load(&sandbox.path("mappings/northshire/payroll.yaml"), &registry)
            .unwrap();
    let store = sandbox.open_store();
    let raw = council_bridge::sources::describe(&dir.join("payroll_batched_0.csv")).unwrap();
    let policy = FeedPolicy {
        publish_batch_size: Some(BATCH_SIZE),
        ..FeedPolicy::default()
    };
    let report = process_file_with(
        &registry,
        &store,
        "northshire",
        "payroll",
        &mapping,
        &raw,
        false,
        &policy,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(report.valid, rows as u64, "{report:?}");
    let pending = store.pending(u32::MAX).unwrap();
    assert_eq!(pending.len(), rows + 1, "the records and the manifest");
    let (records, manifests): (Vec<_>, Vec<_>) = pending
        .iter()
        .partition(|p| p.message.headers.contains_key("x-content-sha256"));
    assert_eq!(manifests.len(), 1);
    let ids = records
        .iter()
        .map(|p| p.message.message_id.clone())
        .collect();
    (store, ids, manifests[0].message.message_id.clone())
}

/// The events of a batch message, checked against the CloudEvents JSON batch format.
fn events(m: &Received) -> &Vec<Value> {
    assert_eq!(m.content_type.as_deref(), Some(BATCH_CONTENT_TYPE));
    let events = m.body.as_array().expect("a batch is a JSON array");
    assert!(!events.is_empty() && events.len() <= BATCH_SIZE as usize);
    assert_eq!(m.headers["x-batch-records"], events.len().to_string());
    for e in events {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["source"], "urn:council:northshire:payroll");
        assert!(
            e["type"]
                .as_str()
                .unwrap()
                .starts_with("uk.gov.council.payroll.")
        );
        for attribute in ["id", "subject", "time", "datacontenttype", "sourcerow"] {
            assert!(!e[attribute].is_null(), "{attribute} in {e}");
        }
        assert!(e["data"].is_object(), "data is the record: {e}");
    }
    let ids = events.iter().map(|e| e["id"].as_str().unwrap());
    assert_eq!(
        m.message_id,
        batch_message_id(ids),
        "deterministic batch id"
    );
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_feed_delivers_every_record_once_across_a_connection_cut() {
    let sandbox = sandbox_with_payroll();
    let mut consumer = Consumer::bind(&sandbox).await;
    let (store, records, manifest) = batched_file(&sandbox, ROWS);

    // Cut the connection after roughly a third of the run's bytes.
    let bytes: u64 = store
        .pending(u32::MAX)
        .unwrap()
        .iter()
        .map(|p| p.message.body.len() as u64 + 400)
        .sum();
    let (port, cuts) = cutting_proxy(bytes / 3).await;
    let broker = sandbox.broker(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
    let retry = Retry {
        attempts: 10,
        first_pause: Duration::from_millis(200),
        ..Retry::default()
    };
    let report = flush(&store, &broker, &retry).await.unwrap();
    assert_eq!(
        cuts.load(Ordering::SeqCst),
        1,
        "the proxy cut the connection"
    );
    assert!(report.connections >= 2, "reconnected: {report:?}");
    assert!(report.error.is_none(), "{report:?}");
    assert_eq!(report.still_pending, 0, "{report:?}");
    assert_eq!(report.published, records.len() as u64 + 1, "{report:?}");
    assert_eq!(report.batched_records, records.len() as u64, "{report:?}");
    assert_eq!(
        store.outbox_counts().unwrap().sent,
        records.len() as u64 + 1
    );

    let got = consumer.drain_published().await;
    // A consumer keeps the first delivery of each message id; a resend has the same id and the
    // same records.
    let mut seen: BTreeMap<&str, &Value> = BTreeMap::new();
    let mut per_record: BTreeMap<String, usize> = BTreeMap::new();
    let mut manifests = 0;
    for m in &got {
        if let Some(first) = seen.get(m.message_id.as_str()) {
            assert_eq!(*first, &m.body, "a resent message carries the same records");
            continue;
        }
        seen.insert(&m.message_id, &m.body);
        if m.routing_key == "payroll.batch.completed.northshire" {
            assert_eq!(m.message_id, manifest, "the manifest goes alone");
            manifests += 1;
            continue;
        }
        assert_eq!(m.routing_key, "payroll.pay_result.upserted.northshire");
        for e in events(m) {
            *per_record
                .entry(e["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(manifests, 1);
    let arrived: BTreeSet<String> = per_record.keys().cloned().collect();
    assert_eq!(arrived, records, "every record arrived");
    let twice: Vec<_> = per_record.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "records under two message ids: {twice:?}");
    assert!(
        seen.len() >= records.len() / BATCH_SIZE as usize,
        "{} messages for {} records",
        seen.len(),
        records.len()
    );
    eprintln!(
        "{} deliveries of {} messages ({} resent after the cut) for {} records",
        got.len(),
        seen.len(),
        got.len() - seen.len(),
        records.len()
    );
    consumer.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_record_of_a_batch_is_replayed_alone() {
    let sandbox = sandbox_with_payroll();
    let (store, records, _) = batched_file(&sandbox, SMALL_FILE_ROWS);
    let url = common::broker_url();
    let broker = sandbox.broker(&url);

    // No queue is bound yet: every batch message comes back unroutable, and each of its records
    // becomes a failure with the reason.
    let report = flush(&store, &broker, &Retry::default()).await.unwrap();
    assert_eq!(report.unroutable, records.len() as u64 + 1, "{report:?}");
    assert_eq!(report.published, 0, "{report:?}");
    let failures = store.failures(None, false, u32::MAX).unwrap();
    assert_eq!(failures.len(), records.len() + 1);
    for f in &failures {
        assert_eq!(f.stage, "unroutable");
        assert!(
            f.errors
                .to_string()
                .contains("no queue is bound for routing key"),
            "{}",
            f.errors
        );
    }

    // One record's failure is replayed by the operator's command and goes out alone.
    let mut consumer = Consumer::bind(&sandbox).await;
    let failure = failures
        .iter()
        .find(|f| {
            f.message_id
                .as_deref()
                .is_some_and(|id| records.contains(id))
        })
        .unwrap();
    let record_id = failure.message_id.clone().unwrap();
    let out = sandbox
        .cli(None)
        .args(["failures", "replay", &failure.id.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = flush(&store, &broker, &Retry::default()).await.unwrap();
    assert_eq!(report.published, 1, "{report:?}");
    assert_eq!(report.batch_messages, 1, "{report:?}");
    let got = consumer.drain_published().await;
    assert_eq!(got.len(), 1, "only the replayed record goes out");
    let events = events(&got[0]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], record_id.as_str());
    assert_eq!(got[0].message_id, batch_message_id([record_id.as_str()]));
    assert_eq!(store.failure(failure.id).unwrap().status, "replayed");
    assert_eq!(store.outbox_counts().unwrap().sent, 1);
    consumer.cleanup().await;
}

/// The platform dead-letters one batch message: each of its records comes back as a failure of
/// its own (its own message id, line and row), kept once however often the delivery comes back,
/// and one of them is replayed alone, like a dead-lettered single message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_batch_becomes_one_failure_per_record_each_replayed_alone() {
    use council_bridge::amqp::DeadLetterConsumer;
    use futures_util::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicRejectOptions, QueueDeleteOptions,
    };
    use lapin::types::{FieldTable, ShortString};

    let sandbox = sandbox_with_payroll();
    let (store, records, _) = batched_file(&sandbox, SMALL_FILE_ROWS);
    let url = common::broker_url();
    let broker = sandbox.broker(&url);
    // The platform's queue for the feed, dead-lettering to the bridge's DLX, and the bridge's
    // dead-letter consumer (which declares the dead-letter queue) before anything is published.
    let (conn, ch, queue) = common::platform_queue(&sandbox, &url, false).await;
    let mut dead_letters = DeadLetterConsumer::connect(&broker).await.unwrap();
    let mut platform = ch
        .basic_consume(
            ShortString::from(queue.as_str()),
            ShortString::from("platform"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let report = flush(&store, &broker, &Retry::default()).await.unwrap();
    assert_eq!(report.published, records.len() as u64 + 1, "{report:?}");
    let messages = report.batch_messages as usize + 1;

    // The platform rejects the first batch message it gets and accepts the rest.
    let mut rejected: Option<(String, Vec<String>)> = None;
    for _ in 0..messages {
        let d = tokio::time::timeout(Duration::from_secs(10), platform.next())
            .await
            .expect("a message on the platform's queue")
            .unwrap()
            .unwrap();
        let m = common::received(&d);
        if rejected.is_none() && m.routing_key == "payroll.pay_result.upserted.northshire" {
            let ids = events(&m)
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect();
            rejected = Some((m.message_id.clone(), ids));
            d.acker
                .reject(BasicRejectOptions { requeue: false })
                .await
                .unwrap();
        } else {
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
        }
    }
    let (batch_id, rejected) = rejected.expect("a batch message");
    assert!(rejected.len() > 1, "a batch of records: {rejected:?}");

    // It comes back as one dead letter a record, in the batch's order, under the records' ids.
    let delivered = dead_letters
        .next(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the rejected batch message in the dead-letter queue");
    let ids: Vec<&str> = delivered
        .letters
        .iter()
        .map(|l| l.message_id.as_str())
        .collect();
    assert_eq!(ids, rejected, "one dead letter a record, with its own id");
    for l in &delivered.letters {
        assert!(
            l.reason.contains("rejected by queue") && l.reason.contains(&batch_id),
            "{}",
            l.reason
        );
        assert_eq!(l.headers["cloudEvents:id"], l.message_id.as_str());
        assert!(l.headers.contains_key("x-source-line"), "{:?}", l.headers);
    }
    council_bridge::daemon::keep_dead_letters(&store, &delivered.letters).unwrap();
    // The same delivery again (not acknowledged in time, say) adds nothing.
    council_bridge::daemon::keep_dead_letters(&store, &delivered.letters).unwrap();
    delivered.ack(Duration::from_secs(5)).await.unwrap();

    let failures: Vec<_> = store
        .failures(None, false, u32::MAX)
        .unwrap()
        .into_iter()
        .filter(|f| f.stage == "dead-lettered")
        .collect();
    let mut failed: Vec<String> = failures
        .iter()
        .map(|f| f.message_id.clone().unwrap())
        .collect();
    failed.sort();
    let mut expected = rejected.clone();
    expected.sort();
    assert_eq!(failed, expected, "one failure a record of the batch, once");
    for f in &failures {
        assert_eq!(
            (f.council.as_str(), f.feed.as_str()),
            ("northshire", "payroll")
        );
        assert!(
            f.line.is_some() && f.row.is_some(),
            "its own line and row: {f:?}"
        );
    }
    let lines: BTreeSet<i64> = failures.iter().filter_map(|f| f.line).collect();
    assert_eq!(lines.len(), rejected.len(), "each record its own line");
    let counts = store.outbox_counts().unwrap();
    assert_eq!(counts.failed, rejected.len() as u64, "{counts:?}");
    assert_eq!(counts.sent, (records.len() + 1 - rejected.len()) as u64);

    // The operator replays one record: it goes out alone, under its own id.
    let failure = &failures[0];
    let record_id = failure.message_id.clone().unwrap();
    let out = sandbox
        .cli(None)
        .args(["failures", "replay", &failure.id.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = flush(&store, &broker, &Retry::default()).await.unwrap();
    assert_eq!(
        (report.published, report.batch_messages),
        (1, 1),
        "{report:?}"
    );
    let d = tokio::time::timeout(Duration::from_secs(10), platform.next())
        .await
        .expect("the replayed record on the platform's queue")
        .unwrap()
        .unwrap();
    let m = common::received(&d);
    d.acker.ack(BasicAckOptions::default()).await.unwrap();
    let replayed = events(&m);
    assert_eq!(replayed.len(), 1, "only the replayed record goes out");
    assert_eq!(replayed[0]["id"], record_id.as_str());
    assert_eq!(m.message_id, batch_message_id([record_id.as_str()]));
    assert_eq!(store.failure(failure.id).unwrap().status, "replayed");
    let still_open = store
        .failures(None, false, u32::MAX)
        .unwrap()
        .into_iter()
        .filter(|f| f.stage == "dead-lettered")
        .count();
    assert_eq!(still_open, rejected.len() - 1, "the others stay open");

    dead_letters.close().await;
    let _ = ch
        .queue_delete(
            ShortString::from(queue.as_str()),
            QueueDeleteOptions::default(),
        )
        .await;
    Consumer::bind(&sandbox).await.cleanup().await;
    let _ = conn.close(200, ShortString::from("done")).await;
}
