//! Failover on a real three-node RabbitMQ cluster (scripts/rabbitmq-cluster.sh, nodes
//! cb1-cb3@localhost on 127.0.0.1:5681-5683, beside the broker on 5672): `broker setup` declares
//! quorum queues with three replicas, and the node the publisher is connected to is killed in
//! the middle of a 20,000-record flush. The publisher moves to another node, every record
//! reaches the quorum consumer queue (a resent message only ever under its own id), and the
//! quorum dead-letter queue keeps what it held. The test starts the cluster when it is not
//! running (and fails when it cannot) and stops it at the end (unless `CB_CLUSTER_KEEP` is set).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, repo, sandbox_with_payroll, write_payroll};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// Files of `common::ROWS` records: 20,000 records, so that the node is killed (at a tenth in
/// the queue) with 18,000 still to publish through the failover.
const FILES: usize = 4;
const DEAD_LETTERS: usize = 20;

fn node_url(n: usize) -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", 5680 + n)
}

fn node_name(n: usize) -> String {
    format!("cb{n}@localhost")
}

fn script(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join("scripts/rabbitmq-cluster.sh"))
        .args(args)
        .output()
        .expect("bash runs scripts/rabbitmq-cluster.sh")
}

/// Stops the cluster when the test ends, also when it fails.
struct Cluster;

impl Cluster {
    fn start() -> Self {
        let out = script(&["start"]);
        assert!(
            out.status.success(),
            "the three-node RabbitMQ cluster is required for this test and could not be started \
             (scripts/rabbitmq-cluster.sh start):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var_os("CB_CLUSTER_KEEP").is_some() {
            return;
        }
        let out = script(&["stop"]);
        if !out.status.success() {
            eprintln!(
                "scripts/rabbitmq-cluster.sh stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `rabbitmqctl -n NODE ARGS --formatter json` (through the script, as the rabbitmq user), parsed.
fn rabbitmqctl(node: usize, args: &[&str]) -> serde_json::Value {
    let n = node.to_string();
    let mut all = vec!["ctl", n.as_str()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--formatter", "json"]);
    let out = script(&all);
    assert!(
        out.status.success(),
        "rabbitmqctl -n {} {args:?}: {}",
        node_name(node),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "rabbitmqctl {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

async fn connect(n: usize) -> Connection {
    Connection::connect(&node_url(n), ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot reach cluster node {}: {e}", node_name(n)))
}

/// Messages in `queue`, as node `n` reports them (a quorum queue whose leader just went away
/// answers once a new leader is elected).
async fn depth(conn: &Connection, queue: &str) -> Option<u32> {
    let ch = conn.create_channel().await.ok()?;
    let ok = tokio::time::timeout(
        Duration::from_secs(10),
        ch.queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .ok()?
    .ok()?;
    let _ = ch.close(200, ShortString::from("ok")).await;
    Some(ok.message_count())
}

fn cluster_config(sandbox: &Sandbox, queue: &str) -> std::path::PathBuf {
    let path = sandbox.path("cluster.yaml");
    std::fs::write(
        &path,
        format!(
            "store: {}\nmappings: mappings\nschemas: schemas\nbroker:\n  retry_seconds: 90\n  exchange: {}\n  dead_letter_exchange: {}\n  dead_letter_queue: {}\n  urls: [\"{}\", \"{}\", \"{}\"]\n  queues:\n    {queue}: [\"#\"]\n",
            sandbox.store_setting(),
            sandbox.exchange,
            sandbox.dlx,
            sandbox.dlq,
            node_url(1),
            node_url(2),
            node_url(3)
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_publishers_node_mid_flush_loses_nothing_and_keeps_the_dead_letters() {
    let began = Instant::now();
    let _cluster = Cluster::start();
    let running = rabbitmqctl(1, &["cluster_status"]);
    assert_eq!(
        running["running_nodes"].as_array().map(Vec::len),
        Some(3),
        "three running nodes: {running}"
    );

    let sandbox = sandbox_with_payroll();
    let queue = format!("{}.platform", sandbox.exchange);
    let config = cluster_config(&sandbox, &queue);

    // `broker setup` with the three node addresses: quorum queues with three replicas.
    let out = sandbox
        .cli(None)
        .arg("--config")
        .arg(&config)
        .args(["broker", "setup"])
        .output()
        .unwrap();
    let said = common::stdout(&out);
    assert!(
        out.status.success(),
        "broker setup: {said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("queue {queue}: quorum, 3 replicas")),
        "{said}"
    );
    let queues = rabbitmqctl(1, &["list_queues", "name", "type", "members", "arguments"]);
    for name in [&queue, &sandbox.dlq] {
        let q = queues
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} declared: {queues}"));
        assert_eq!(q["type"], "quorum", "{q}");
        assert_eq!(q["members"].as_array().map(Vec::len), Some(3), "{q}");
        assert!(
            q["arguments"]
                .to_string()
                .contains("x-quorum-initial-group-size"),
            "{q}"
        );
    }
    // Setup again is a no-op.
    let again = sandbox
        .cli(None)
        .arg("--config")
        .arg(&config)
        .args(["broker", "setup"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", common::stdout(&again));

    // Dead letters waiting before the failover.
    {
        let conn = connect(1).await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for i in 0..DEAD_LETTERS {
            let confirm = ch
                .basic_publish(
                    ShortString::from(sandbox.dlx.as_str()),
                    ShortString::from("payroll.pay_result.upserted.northshire"),
                    BasicPublishOptions::default(),
                    format!("{{\"dead\":{i}}}").as_bytes(),
                    BasicProperties::default()
                        .with_message_id(ShortString::from(format!("dead-{i}")))
                        .with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack(), "dead letter {i} confirmed");
        }
        assert_eq!(depth(&conn, &sandbox.dlq).await, Some(DEAD_LETTERS as u32));
        let _ = conn.close(200, ShortString::from("done")).await;
    }

    // 20,000 records (and one manifest per file) into the outbox, no broker yet.
    let records = write_payroll(
        &sandbox.path("mappings/northshire/samples/payroll"),
        "cluster",
        100_000,
        FILES,
    );
    let run = sandbox
        .cli(None)
        .args(["run", "--council", "northshire", "--feed", "payroll"])
        .output()
        .unwrap();
    assert!(
        run.status.code() == Some(0),
        "run: {}\n{}",
        common::stdout(&run),
        String::from_utf8_lossy(&run.stderr)
    );
    let store = sandbox.open_store();
    let pending = store.pending(1_000_000).unwrap();
    assert_eq!(pending.len(), records + FILES, "records and manifests wait");
    let expected: BTreeMap<String, Vec<u8>> = pending
        .iter()
        .map(|p| (p.message.message_id.clone(), p.message.body.clone()))
        .collect();
    assert_eq!(expected.len(), records + FILES, "one id per message");
    drop(store);

    // Flush over the cluster in a child process, the configured node list its only broker.
    let mut flush = Command::new(assert_cmd::cargo::cargo_bin("council-bridge"))
        .current_dir(sandbox.dir.path())
        .env_remove("AMQP_URL")
        .env_remove("COUNCIL_BRIDGE_STORE")
        .env("RUST_LOG", "info")
        .args(["--config"])
        .arg(&config)
        .args(["--log-format", "json", "outbox", "flush", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The node it connected to, from its log line (which names the node, never a password).
    let stderr = flush.stderr.take().unwrap();
    let (first_node, node_seen) = std::sync::mpsc::channel();
    let logs = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            if line.contains("connected to broker node")
                && let Some(at) = line.find("127.0.0.1:")
            {
                let port: String = line[at + 10..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                let _ = first_node.send(port.parse::<usize>().unwrap() - 5680);
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let node = node_seen
        .recv_timeout(Duration::from_secs(60))
        .expect("the flush logs the node it connected to");
    let other = if node == 1 { 2 } else { 1 };
    eprintln!(
        "the publisher is connected to {}; watching from {}",
        node_name(node),
        node_name(other)
    );
    let conns = rabbitmqctl(other, &["list_connections", "client_properties", "port"]);
    let name = format!("council-bridge pid {}", flush.id());
    assert!(
        conns
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["client_properties"].to_string().contains(&name)
                && c["port"] == 5680 + node as u64),
        "the broker lists the publisher's connection on {}: {conns}",
        node_name(node)
    );

    // Kill that node (SIGKILL: a crash) once a tenth of the messages reached the queue, while
    // the flush goes on.
    let watch = connect(other).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let before_stop = loop {
        let d = depth(&watch, &queue).await.unwrap_or(0);
        if d as usize >= records / 10 {
            break d;
        }
        assert!(
            flush.try_wait().unwrap().is_none(),
            "the flush ended before the node was stopped"
        );
        assert!(
            Instant::now() < deadline,
            "the flush did not get going: {d} messages in the queue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stop = script(&["kill-node", &node.to_string()]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    eprintln!(
        "killed {} with {before_stop} of {} messages in the queue",
        node_name(node),
        expected.len()
    );
    assert!(
        flush.try_wait().unwrap().is_none(),
        "the flush was still running when its node stopped"
    );

    let status = tokio::task::spawn_blocking(move || {
        // A flush that neither finishes nor fails within 4 minutes is a hang: stop it and fail
        // with its log rather than let the suite wait forever.
        let deadline = std::time::Instant::now() + Duration::from_secs(240);
        while flush.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        if flush.try_wait().unwrap().is_none() {
            let _ = flush.kill();
        }
        let status = flush.wait().unwrap();
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut flush.stdout.take().unwrap(), &mut stdout).unwrap();
        (status, stdout)
    })
    .await
    .unwrap();
    let logs = logs.join().unwrap();
    let (status, stdout) = status;
    assert!(status.success(), "outbox flush: {stdout}\n{logs}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["still_pending"], 0, "{report}");
    assert!(report["error"].is_null(), "{report}");
    assert_eq!(
        (report["unroutable"].as_u64(), report["rejected"].as_u64()),
        (Some(0), Some(0)),
        "no message was returned or refused for good: {report}"
    );
    assert!(
        report["connections"].as_u64().unwrap() >= 2,
        "the publisher reconnected: {report}"
    );
    assert!(
        logs.contains("connected to broker node"),
        "the log names the node it moved to"
    );
    let store = sandbox.open_store();
    assert_eq!(
        store.outbox_counts().unwrap().sent,
        expected.len() as u64,
        "{report}"
    );
    drop(store);

    // Every message is in the quorum queue, a resent one only ever under its own id.
    let ch = watch.create_channel().await.unwrap();
    ch.basic_qos(2000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            ShortString::from(queue.as_str()),
            ShortString::from("cluster-test"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut ids: HashSet<String> = HashSet::new();
    let mut deliveries = 0usize;
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
        let d = d.unwrap();
        let id = d
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let want = expected
            .get(&id)
            .unwrap_or_else(|| panic!("a message under an id the outbox never had: {id}"));
        assert_eq!(&d.data, want, "same id, same content");
        ids.insert(id);
        deliveries += 1;
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(
        ids.len(),
        expected.len(),
        "every record reached the quorum queue after the node stopped"
    );
    eprintln!(
        "received {deliveries} deliveries for {} messages ({} resent after the node stopped); {:?} in all",
        expected.len(),
        deliveries - expected.len(),
        began.elapsed()
    );

    // The quorum dead-letter queue kept its messages through the node stop.
    let mut dead = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead.len() < DEAD_LETTERS && Instant::now() < deadline {
        match ch
            .basic_get(
                ShortString::from(sandbox.dlq.as_str()),
                BasicGetOptions { no_ack: true },
            )
            .await
        {
            Ok(Some(m)) => {
                dead.insert(String::from_utf8_lossy(&m.delivery.data).into_owned());
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("reading the dead-letter queue: {e}"),
        }
    }
    assert_eq!(
        dead.len(),
        DEAD_LETTERS,
        "the dead-letter queue kept its messages"
    );
    let _ = watch.close(200, ShortString::from("done")).await;
}
