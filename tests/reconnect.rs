//! The connection to the broker dies in the middle of publishing: nothing may be lost, and no
//! record may arrive twice under different ids. A TCP proxy between council-bridge and the real
//! RabbitMQ cuts every connection once a third of the traffic has passed, then lets new
//! connections through, as a broker restart or a network blip would.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Consumer, Sandbox, cutting_proxy};
use council_bridge::canonical::envelope::{OutboundMessage, message_id};
use council_bridge::pipeline::flush::{Retry, flush};
use council_bridge::store::NewBatch;
use serde_json::json;

const MESSAGES: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_publish_loses_nothing_and_duplicates_nothing_under_new_ids() {
    let sandbox = Sandbox::new();
    let mut consumer = Consumer::bind(&sandbox).await;
    let store = sandbox.open_store();

    // 20,000 records of one batch in the outbox, as the pipeline leaves them.
    let batch = "batch-reconnect";
    let new_batch = NewBatch {
        id: batch,
        council: "northshire",
        feed: "payroll",
        file_name: "big.csv",
        file_sha256: "00",
        mapping_id: "m",
        mapping_version: 1,
    };
    store.begin_batch(&new_batch).unwrap();
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let messages: Vec<OutboundMessage> = (0..MESSAGES)
        .map(|i| {
            let body = json!({ "employee_number": format!("E{i:06}"), "gross_pay_pence": 100_000 + i as i64 });
            let id = message_id("northshire", "payroll.pay_result", &format!("E{i:06}"), &format!("{i}"));
            expected.insert(id.clone(), body.to_string().into_bytes());
            OutboundMessage {
                message_id: id,
                routing_key: "payroll.pay_result.upserted.northshire".into(),
                headers: serde_json::Map::new(),
                body: body.to_string().into_bytes(),
                correlation_id: batch.into(),
                timestamp: 0,
            }
        })
        .collect();
    for chunk in messages.chunks(1000) {
        store.write_chunk(&new_batch, chunk, &[], false).unwrap();
    }
    let manifest = OutboundMessage {
        message_id: "manifest-reconnect".into(),
        routing_key: "payroll.batch.completed.northshire".into(),
        headers: serde_json::Map::new(),
        body: b"{}".to_vec(),
        correlation_id: batch.into(),
        timestamp: 0,
    };
    expected.insert(manifest.message_id.clone(), manifest.body.clone());
    store
        .finish_batch(batch, &json!({"council": "northshire"}), &manifest, false)
        .unwrap();
    assert_eq!(store.outbox_counts().unwrap().pending, MESSAGES as u64 + 1);

    // Cut the connection after roughly a third of the bytes of the run.
    let approx_bytes: u64 = messages.iter().map(|m| m.body.len() as u64 + 150).sum();
    let (port, cuts) = cutting_proxy(approx_bytes / 3).await;
    let broker = sandbox.broker(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
    let report = flush(
        &store,
        &broker,
        &Retry {
            attempts: 10,
            first_pause: Duration::from_millis(200),
            ..Retry::default()
        },
    )
    .await
    .unwrap();

    assert_eq!(
        cuts.load(Ordering::SeqCst),
        1,
        "the proxy cut the connection mid-publish"
    );
    assert!(
        report.connections >= 2,
        "the publisher reconnected: {report:?}"
    );
    assert_eq!(report.still_pending, 0, "{report:?}");
    assert!(report.error.is_none(), "{report:?}");
    let counts = store.outbox_counts().unwrap();
    assert_eq!(counts.sent, MESSAGES as u64 + 1);

    let got = consumer.drain_published().await;
    let ids: HashSet<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
    let want: HashSet<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(ids, want, "every record arrived, and under its own id only");
    for m in &got {
        assert_eq!(
            serde_json::to_vec(&m.body).unwrap(),
            expected[&m.message_id],
            "same id, same content"
        );
    }
    // Messages in flight at the cut may arrive twice, always with the same id.
    assert!(got.len() > MESSAGES);
    eprintln!(
        "received {} deliveries for {} messages ({} resent after the cut)",
        got.len(),
        MESSAGES + 1,
        got.len() - MESSAGES - 1
    );
    consumer.cleanup().await;
}
