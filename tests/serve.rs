//! `council-bridge serve` as operators run it: a child process, fed files, scraped, signalled.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Consumer, Sandbox, broker_url, sandbox_with_payroll, write_payroll};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicRejectOptions};
use lapin::types::{FieldTable, ShortString};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `serve`, killed if the test ends without stopping it.
struct Daemon {
    child: Option<Child>,
    port: u16,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(sandbox: &Sandbox, url: Option<&str>, log_name: &str) -> Self {
        let port = free_port();
        let log = sandbox.path(log_name);
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("council-bridge"));
        cmd.current_dir(sandbox.dir.path())
            .env_remove("AMQP_URL")
            .env_remove("COUNCIL_BRIDGE_STORE")
            .env("COUNCIL_BRIDGE_CONFIG", sandbox.config())
            .env("RUST_LOG", "info")
            .args(["--log-format", "json", "serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(u) = url {
            cmd.env("AMQP_URL", u);
        }
        let d = Daemon {
            child: Some(cmd.spawn().unwrap()),
            port,
            log,
        };
        d.wait_until(Duration::from_secs(30), "it answers /health", || {
            d.get("/health").is_some_and(|(code, _)| code == 200)
        });
        d
    }

    /// A plain HTTP/1.1 GET (no client library needed for three endpoints).
    fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    }

    fn wait_until(&self, limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < limit,
                "serve: not true after {limit:?}: {what}\nlog tail:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM, then the exit code.
    fn terminate(mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let kill = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "serve did not stop within 60 s of SIGTERM\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn metrics(&self) -> prometheus_parse::Scrape {
        let (code, body) = self.get("/metrics").expect("/metrics answers");
        assert_eq!(code, 200);
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
            .expect("Prometheus text format")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn outbox(sandbox: &Sandbox) -> serde_json::Value {
    sandbox.json(&["outbox", "status"])
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_publishing_loses_and_duplicates_nothing_and_exits_0() {
    let sandbox = sandbox_with_payroll();
    let url = broker_url();
    let mut consumer = Consumer::bind(&sandbox).await;
    let dir = sandbox.path("mappings/northshire/samples/payroll");
    let rows = write_payroll(&dir, "big", 500_000, 8);

    let daemon = Daemon::start(&sandbox, Some(&url), "serve-1.log");
    // Stop it once publishing is under way and records still wait.
    daemon.wait_until(Duration::from_secs(120), "some messages sent", || {
        outbox(&sandbox)["sent"].as_u64().unwrap_or(0) > 2_000
    });
    let code = daemon.terminate();
    assert_eq!(code, Some(0), "serve must exit 0 on SIGTERM");
    let after_stop = outbox(&sandbox);
    assert_eq!(
        after_stop["staged"], 0,
        "nothing half-written: {after_stop}"
    );

    // Restarted, it reads what it abandoned and publishes the rest.
    let daemon = Daemon::start(&sandbox, Some(&url), "serve-2.log");
    let mut last = String::new();
    let start = Instant::now();
    loop {
        let o = outbox(&sandbox);
        let batches = sandbox.json(&["batches", "list", "--limit", "1000"]);
        let statuses: Vec<String> = batches
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["council"] == "northshire" && b["feed"] == "payroll")
            .map(|b| format!("{} {}", b["file_name"], b["status"]))
            .collect();
        let done = statuses
            .iter()
            .filter(|s| s.ends_with("\"completed\""))
            .count();
        if done == 8 && o["pending"] == 0 && o["staged"] == 0 {
            break;
        }
        last = format!("outbox {o}; payroll batches {statuses:?}");
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "after restart, not every file read and published: {last}\n{}",
            daemon.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = last;
    assert_eq!(daemon.terminate(), Some(0));

    let sent = outbox(&sandbox)["sent"].as_u64().unwrap() as usize;
    let got = consumer.drain_published().await;
    let mut ids = BTreeSet::new();
    let mut payroll_subjects = BTreeSet::new();
    for m in &got {
        assert!(
            ids.insert(m.message_id.clone()),
            "message {} delivered twice",
            m.message_id
        );
        if m.routing_key == "payroll.pay_result.upserted.northshire" {
            assert!(
                payroll_subjects.insert(m.headers["cloudEvents:subject"].clone()),
                "record {} under two ids",
                m.headers["cloudEvents:subject"]
            );
        }
    }
    assert_eq!(
        ids.len(),
        sent,
        "the broker got {} messages, the store sent {sent}",
        ids.len()
    );
    assert_eq!(
        payroll_subjects.len(),
        rows,
        "every generated payroll record arrives once"
    );
    consumer.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_say_what_the_run_did_and_late_feeds_raise_one_alert() {
    let sandbox = Sandbox::new();
    let url = broker_url();
    let mut consumer = Consumer::bind(&sandbox).await;
    // A scheduled feed that never delivers and was expected by midnight: late all day.
    let council = sandbox.path("mappings/northshire/council.yaml");
    let mut yaml = std::fs::read_to_string(&council).unwrap();
    yaml.push_str("  pensions-nightly:\n    mapping: payroll.yaml\n    input: incoming/pensions/*.csv\n    schedule: \"0 3 * * *\"\n    expected_by: \"00:00\"\n");
    std::fs::write(&council, yaml).unwrap();

    let daemon = Daemon::start(&sandbox, Some(&url), "serve.log");
    let batches_done = || {
        let b = sandbox.json(&["batches", "list", "--limit", "1000"]);
        b.as_array().unwrap().len()
    };
    // Every sample file of every council is read and published.
    let files: usize = [
        "northshire",
        "riverton",
        "eastborough",
        "westmarch",
        "southvale",
    ]
    .iter()
    .map(|c| {
        let status = sandbox.json(&["status"]);
        status["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["council"] == *c)
            .count()
    })
    .sum();
    assert!(files > 30);
    daemon.wait_until(
        Duration::from_secs(120),
        "the sample files read and published",
        || {
            let o = outbox(&sandbox);
            batches_done() >= 30 && o["pending"] == 0 && o["staged"] == 0
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let scrape = daemon.metrics();

    // Records by outcome per feed match what the batches say.
    let batches = sandbox.json(&["batches", "list", "--limit", "1000"]);
    let mut by_feed: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for b in batches.as_array().unwrap() {
        let e = by_feed
            .entry((
                b["council"].as_str().unwrap().into(),
                b["feed"].as_str().unwrap().into(),
            ))
            .or_default();
        e.0 += b["summary"]["counts"]["valid"].as_f64().unwrap_or(0.0);
        e.1 += b["summary"]["counts"]["rejected"].as_f64().unwrap_or(0.0);
    }
    for ((c, f), (valid, rejected)) in &by_feed {
        let labels = |o: &'static str| {
            [
                ("council", c.as_str()),
                ("feed", f.as_str()),
                ("outcome", o),
            ]
        };
        assert_eq!(
            value(&scrape, "council_bridge_records_total", &labels("valid")),
            Some(*valid),
            "{c}/{f} valid"
        );
        assert_eq!(
            value(&scrape, "council_bridge_records_total", &labels("rejected")),
            Some(*rejected),
            "{c}/{f} rejected"
        );
    }
    let o = outbox(&sandbox);
    for state in ["pending", "sent", "failed", "held"] {
        assert_eq!(
            value(
                &scrape,
                "council_bridge_outbox_messages",
                &[("state", state)]
            ),
            o[state].as_f64(),
            "outbox {state}"
        );
    }
    let published = value(&scrape, "council_bridge_published_messages_total", &[]).unwrap();
    assert_eq!(
        Some(published),
        o["sent"].as_f64(),
        "published counter vs sent"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "council_bridge_publish_seconds_count"),
        "publish latency histogram"
    );
    let last = value(
        &scrape,
        "council_bridge_feed_last_success_timestamp_seconds",
        &[("council", "northshire"), ("feed", "payroll")],
    )
    .unwrap();
    assert!((chrono::Utc::now().timestamp() as f64 - last).abs() < 600.0);
    let lateness = value(
        &scrape,
        "council_bridge_feed_lateness_seconds",
        &[("council", "northshire"), ("feed", "pensions-nightly")],
    )
    .unwrap();
    assert!(lateness > 0.0, "the missing feed is late");
    assert_eq!(
        value(
            &scrape,
            "council_bridge_feed_lateness_seconds",
            &[("council", "northshire"), ("feed", "payroll")]
        ),
        Some(0.0)
    );

    // `status` says so, and exactly one alert went out on the bus.
    let status = sandbox.json(&["status"]);
    let late: Vec<_> = status["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f["late_since"].is_null())
        .collect();
    assert_eq!(late.len(), 1, "{status}");
    assert_eq!(late[0]["feed"], "pensions-nightly");
    assert!(
        late[0]["mode"]
            .as_str()
            .unwrap()
            .starts_with("schedule 0 3 * * *")
    );
    let got = consumer.drain(Duration::from_secs(3), 10_000).await;
    let alerts: Vec<_> = got
        .iter()
        .filter(|m| m.routing_key == "ops.feed.missing.northshire")
        .collect();
    assert_eq!(alerts.len(), 1, "one alert");
    assert_eq!(alerts[0].body["feed"], "pensions-nightly");
    assert_eq!(daemon.terminate(), Some(0));
    consumer.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_platform_dead_letters_become_failures_an_operator_replays() {
    let sandbox = sandbox_with_payroll();
    let url = broker_url();
    // The platform's queue for Northshire payroll, dead-lettering to the bridge's DLX.
    let (conn, ch, queue) = common::platform_queue(&sandbox, &url, true).await;
    let mut platform = ch
        .basic_consume(
            ShortString::from(queue.as_str()),
            ShortString::from("platform"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // One small file: the other councils' samples are in the sandbox too, so only northshire
    // is watched here.
    for c in ["riverton", "eastborough", "westmarch", "southvale"] {
        std::fs::remove_dir_all(sandbox.path(&format!("mappings/{c}"))).unwrap();
    }
    std::fs::copy(
        common::repo().join("mappings/northshire/samples/payroll/payroll_202610.csv"),
        sandbox.path("mappings/northshire/samples/payroll/payroll_202610.csv"),
    )
    .unwrap();

    let daemon = Daemon::start(&sandbox, Some(&url), "serve.log");
    // The platform rejects the first payroll record it gets, and accepts everything else.
    let mut rejected_id = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while rejected_id.is_none() {
        assert!(
            Instant::now() < deadline,
            "no payroll message reached the platform queue\n{}",
            daemon.log_tail()
        );
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(5), platform.next()).await
        else {
            continue;
        };
        if d.routing_key.as_str() == "payroll.pay_result.upserted.northshire" {
            rejected_id = d.properties.message_id().as_ref().map(|s| s.to_string());
            d.acker
                .reject(BasicRejectOptions { requeue: false })
                .await
                .unwrap();
        } else {
            d.acker.ack(Default::default()).await.unwrap();
        }
    }
    let rejected_id = rejected_id.unwrap();
    daemon.wait_until(
        Duration::from_secs(30),
        "the dead letter is a failure",
        || {
            sandbox
                .failures()
                .iter()
                .any(|f| f["stage"] == "dead-lettered")
        },
    );
    let failure = sandbox
        .failures()
        .into_iter()
        .find(|f| f["stage"] == "dead-lettered")
        .unwrap();
    assert_eq!(failure["message_id"], rejected_id.as_str());
    assert_eq!(failure["council"], "northshire");
    assert_eq!(failure["feed"], "payroll");
    let shown = sandbox
        .cli(None)
        .args(["failures", "show", &failure["id"].to_string()])
        .output()
        .unwrap();
    let shown = common::stdout(&shown);
    assert!(
        shown.contains("rejected by queue") && shown.contains(&queue),
        "{shown}"
    );

    // The operator replays it: the same message, same id, goes out again and is accepted.
    let replay = sandbox
        .cli(None)
        .args([
            "failures",
            "replay",
            &failure["id"].to_string(),
            "--reason",
            "platform fixed",
        ])
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", common::stdout(&replay));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the replayed message never came back\n{}",
            daemon.log_tail()
        );
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(5), platform.next()).await
        else {
            continue;
        };
        let id = d.properties.message_id().as_ref().map(|s| s.to_string());
        d.acker.ack(Default::default()).await.unwrap();
        if id.as_deref() == Some(rejected_id.as_str()) {
            break;
        }
    }
    assert_eq!(daemon.terminate(), Some(0));
    let audit = sandbox
        .cli(None)
        .args(["failures", "list", "--all", "--json"])
        .output()
        .unwrap();
    assert!(common::stdout(&audit).contains("replayed"));
    let _ = conn.close(200, ShortString::from("done")).await;
}

/// Forwards 127.0.0.1:`port` to the real broker (started late: the broker "comes back").
async fn broker_comes_back_on(port: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::TcpStream::connect("127.0.0.1:5672").await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_rides_out_a_broker_outage_and_publishes_when_it_is_back() {
    let sandbox = Sandbox::new();
    for c in ["riverton", "eastborough", "westmarch", "southvale"] {
        std::fs::remove_dir_all(sandbox.path(&format!("mappings/{c}"))).unwrap();
    }
    let cfg = sandbox.config();
    let mut root = std::fs::read_to_string(&cfg).unwrap();
    root.push_str("serve:\n  max_backoff_seconds: 2\n");
    std::fs::write(&cfg, root).unwrap();
    let mut consumer = Consumer::bind(&sandbox).await;
    // The broker address answers nothing yet.
    let port = free_port();
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let daemon = Daemon::start(&sandbox, Some(&url), "serve.log");
    daemon.wait_until(
        Duration::from_secs(60),
        "files read, messages waiting, /ready 503",
        || {
            outbox(&sandbox)["pending"].as_u64().unwrap_or(0) > 0
                && daemon
                    .get("/ready")
                    .is_some_and(|(code, body)| code == 503 && body.contains("unreachable"))
        },
    );
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(
        log.contains("broker unavailable; messages wait in the outbox"),
        "each attempt is logged"
    );
    assert!(!log.contains("guest:guest"), "no password in the log");
    broker_comes_back_on(port).await;
    daemon.wait_until(
        Duration::from_secs(60),
        "everything published once the broker is back",
        || {
            outbox(&sandbox)["pending"] == 0
                && daemon.get("/ready").is_some_and(|(code, _)| code == 200)
        },
    );
    let got = consumer.drain(Duration::from_secs(3), 10_000).await;
    let ids: BTreeSet<_> = got.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(ids.len(), got.len(), "no message twice");
    let sent = outbox(&sandbox)["sent"].as_u64().unwrap() as usize;
    assert_eq!(got.len(), sent, "every waiting message arrives");
    assert!(sent > 30);
    assert_eq!(daemon.terminate(), Some(0));
    consumer.cleanup().await;
}
