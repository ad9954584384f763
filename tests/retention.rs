//! Retention: after the configured period a sent message keeps its id and content hash but not
//! its payload, old run reports go, and nothing that is still work (pending, held, failed) is
//! touched. A file read again with `--force` queues full messages again.

mod common;

use common::{Consumer, Sandbox, broker_url};
use council_bridge::canonical::Registry;
use council_bridge::config::Config;
use council_bridge::pipeline::{self, flush::Retry};
use council_bridge::store::Retention;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_payloads_and_old_run_reports_are_pruned_ids_stay() {
    let sandbox = Sandbox::new();
    let url = broker_url();
    let mut consumer = Consumer::bind(&sandbox).await;
    let config = Config::load(&sandbox.config()).unwrap();
    let registry = Registry::load(&config.schemas).unwrap();
    let store = sandbox.open_store();
    pipeline::process(&config, &registry, &store, Some("northshire"), None, false);
    let flushed = pipeline::flush(&store, &sandbox.broker(&url), &Retry::default())
        .await
        .unwrap();
    assert!(
        flushed.published > 0 && flushed.error.is_none(),
        "{flushed:?}"
    );
    // Riverton's messages wait (not published yet): retention must leave them alone.
    pipeline::process(&config, &registry, &store, Some("riverton"), None, false);
    let pending_before = store.outbox_counts().unwrap().pending;
    assert!(pending_before > 0);
    let runs_before = store.runs(None, None, 1000).unwrap().len();
    let bytes = |state: &str| {
        store
            .payload_bytes()
            .unwrap()
            .into_iter()
            .find(|(s, _)| s == state)
            .map(|(_, b)| b)
            .unwrap_or(0)
    };
    let sent_bytes = bytes("sent");
    assert!(sent_bytes > 10_000, "{sent_bytes}");
    eprintln!(
        "payload kept per sent message before pruning: {} bytes",
        sent_bytes / flushed.published
    );

    let policy = Retention {
        sent_payload_days: 7,
        run_report_days: 90,
    };
    let now = chrono::Utc::now();
    // Within the period nothing goes.
    let r = store
        .prune(&policy, now + chrono::Duration::days(6))
        .unwrap();
    assert_eq!((r.payloads_dropped, r.runs_deleted), (0, 0));
    // After it, every sent payload goes; ids and counts stay; pending ones stay whole.
    let r = store
        .prune(&policy, now + chrono::Duration::days(8))
        .unwrap();
    assert_eq!(r.payloads_dropped, flushed.published);
    assert_eq!(r.runs_deleted, 0);
    assert!(
        bytes("sent") <= 2 * flushed.published,
        "sent payloads: {} bytes",
        bytes("sent")
    );
    assert_eq!(store.outbox_counts().unwrap().sent, flushed.published);
    assert_eq!(store.outbox_counts().unwrap().pending, pending_before);
    assert!(
        store
            .pending(10_000)
            .unwrap()
            .iter()
            .all(|m| !m.message.body.is_empty())
    );
    let r = store
        .prune(&policy, now + chrono::Duration::days(91))
        .unwrap();
    assert_eq!(r.runs_deleted as usize, runs_before);

    // The same file again: skipped (sha256); the same records in a new run are known by id.
    let again = pipeline::process(&config, &registry, &store, Some("northshire"), None, false);
    assert!(
        again
            .iter()
            .flat_map(|f| &f.files)
            .all(|f| f.status == "skipped")
    );
    // Read again on purpose: full messages are queued again under their ids.
    let forced = pipeline::process(
        &config,
        &registry,
        &store,
        Some("northshire"),
        Some("payroll"),
        true,
    );
    let requeued: u64 = forced
        .iter()
        .flat_map(|f| &f.files)
        .map(|f| f.already_known)
        .sum();
    assert!(requeued > 0);
    let pending = store.pending(10_000).unwrap();
    assert!(pending.iter().all(|m| !m.message.body.is_empty()));
    let records: Vec<_> = pending
        .iter()
        .filter(|m| m.message.routing_key == "payroll.pay_result.upserted.northshire")
        .collect();
    assert_eq!(records.len() as u64, requeued);
    assert!(
        records
            .iter()
            .all(|m| m.message.headers.contains_key("x-content-sha256"))
    );
    let flushed = pipeline::flush(&store, &sandbox.broker(&url), &Retry::default())
        .await
        .unwrap();
    assert!(flushed.error.is_none());
    let got = consumer.drain_published().await;
    for m in got
        .iter()
        .filter(|m| m.routing_key.starts_with("payroll.pay_result"))
    {
        assert!(
            m.body.is_object() && m.headers.contains_key("x-content-sha256"),
            "a replayed message is whole"
        );
    }
    consumer.cleanup().await;
}
