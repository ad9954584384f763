//! The operators' console and API (`council-bridge console`, a child process) with real tokens:
//! a token scoped to one council gets nothing of another on any endpoint (404 where an id is
//! named, never 403), every action is in the audit log, a viewer sees no personal value, and
//! a bulk replay of 10,000 failures after a mapping fix, interrupted and resumed, delivers each
//! record to RabbitMQ exactly once with `x-replay-of`.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Consumer, Sandbox, broker_url, sandbox_with_payroll, stdout, write_payroll};
use council_bridge::canonical::Registry;
use council_bridge::config::Config;
use council_bridge::pipeline::{Operator, flush::Retry};
use council_bridge::store::FailureFilter;
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `council-bridge console`, killed when dropped.
pub struct Console {
    child: Child,
    pub base: String,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Console {
    pub fn start(sandbox: &Sandbox) -> Self {
        Self::start_command(sandbox, "console", None)
    }

    /// `council-bridge <command> --listen ...` (`console`, or `serve` with a broker).
    pub fn start_command(sandbox: &Sandbox, command: &str, amqp_url: Option<&str>) -> Self {
        let port = free_port();
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("council-bridge"));
        cmd.current_dir(sandbox.dir.path())
            .env_remove("AMQP_URL")
            .env_remove("COUNCIL_BRIDGE_STORE")
            .env("COUNCIL_BRIDGE_CONFIG", sandbox.config())
            .args(["--log-format", "json", command, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(sandbox.path(&format!("{command}.log"))).unwrap());
        if let Some(u) = amqp_url {
            cmd.env("AMQP_URL", u);
        }
        let child = cmd.spawn().unwrap();
        let c = Console {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the console did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }
}

/// Creates a token with the CLI and returns its secret.
pub fn token(sandbox: &Sandbox, role: &str, councils: &str, name: &str) -> String {
    let out = sandbox
        .cli(None)
        .args([
            "tokens",
            "create",
            "--role",
            role,
            "--council",
            councils,
            "--name",
            name,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["token"].as_str().unwrap().to_string()
}

async fn call(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let mut req = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.text().await.unwrap())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_council_token_gets_nothing_of_another_council_on_any_endpoint() {
    let sandbox = Sandbox::new();
    let personal = common::personal_values(&sandbox);
    let run = sandbox.cli(None).arg("run").output().unwrap();
    assert!(run.status.code().is_some());
    let all = sandbox.failures();
    assert_eq!(all.len(), 13);
    let of = |council: &str| -> Vec<i64> {
        all.iter()
            .filter(|f| f["council"] == council)
            .map(|f| f["id"].as_i64().unwrap())
            .collect()
    };
    let (north, river) = (of("northshire"), of("riverton"));
    assert!(!north.is_empty() && river.len() >= 2);

    let a = token(&sandbox, "operator", "northshire", "north operator");
    let viewer = token(&sandbox, "viewer", "northshire", "north viewer");
    let admin = token(&sandbox, "admin", "*", "shared-service admin");
    let console = Console::start(&sandbox);
    let c = reqwest::Client::new();
    let u = |p: &str| format!("{}{p}", console.base);

    // Health is open; nothing else is.
    assert_eq!(call(&c, "GET", &u("/health"), None, None).await.0, 200);
    let b_id = river[0];
    let store = sandbox.open_store();
    let river_batch = store.batches(Some("riverton"), 1).unwrap().remove(0).id;
    let gets = [
        "/api/v1/failures".to_string(),
        format!("/api/v1/failures/{}", north[0]),
        "/api/v1/batches/held".into(),
        "/api/v1/feeds".into(),
        "/api/v1/outbox".into(),
        "/api/v1/audit".into(),
        "/api/v1/openapi.json".into(),
        "/api/v1/replays/x".into(),
    ];
    for p in &gets {
        assert_eq!(call(&c, "GET", &u(p), None, None).await.0, 401, "{p}");
        assert_eq!(
            call(&c, "GET", &u(p), Some("cb_not-a-token"), None).await.0,
            401,
            "{p}"
        );
    }
    for p in [
        format!("/api/v1/failures/{}/replay", north[0]),
        format!("/api/v1/failures/{}/discard", north[0]),
        "/api/v1/replays".into(),
        format!("/api/v1/batches/{river_batch}/release"),
    ] {
        assert_eq!(
            call(&c, "POST", &u(&p), None, Some(json!({}))).await.0,
            401,
            "{p}"
        );
    }

    // The admin acts on Riverton so there is Riverton audit to hide.
    let (code, _) = call(
        &c,
        "POST",
        &u(&format!("/api/v1/failures/{}/discard", river[1])),
        Some(&admin),
        Some(json!({"reason": "duplicate row, council confirmed"})),
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = call(
        &c,
        "POST",
        &u("/api/v1/replays"),
        Some(&admin),
        Some(json!({"council": "riverton", "reason": "retry after fix"})),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    let admin_job = json(&body)["job"].as_str().unwrap().to_string();

    // Lists: nothing of Riverton, even when asked for by name.
    let list = json(
        &call(
            &c,
            "GET",
            &u("/api/v1/failures?council=riverton"),
            Some(&a),
            None,
        )
        .await
        .1,
    );
    assert_eq!(list["items"], json!([]));
    assert_eq!(list["total"], 0);
    assert_eq!(list["reasons"], json!([]));
    let list = json(
        &call(
            &c,
            "GET",
            &u("/api/v1/failures?status=all&limit=500"),
            Some(&a),
            None,
        )
        .await
        .1,
    );
    let ids: Vec<i64> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, north);
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["council"] == "northshire")
    );
    assert_eq!(list["total"], north.len());

    // Named things of Riverton: 404, exactly as for an id that does not exist.
    let missing = 999_999;
    for (method, path, body) in [
        ("GET", format!("/api/v1/failures/{b_id}"), None),
        ("GET", format!("/api/v1/failures/{b_id}?reveal=true"), None),
        (
            "POST",
            format!("/api/v1/failures/{b_id}/replay"),
            Some(json!({"dry_run": true})),
        ),
        (
            "POST",
            format!("/api/v1/failures/{b_id}/replay"),
            Some(json!({"reason": "x"})),
        ),
        (
            "POST",
            format!("/api/v1/failures/{b_id}/discard"),
            Some(json!({"reason": "x"})),
        ),
        ("GET", format!("/api/v1/replays/{admin_job}"), None),
        (
            "POST",
            format!("/api/v1/replays/{admin_job}/resume"),
            Some(json!({})),
        ),
        (
            "POST",
            format!("/api/v1/batches/{river_batch}/release"),
            Some(json!({"reason": "x"})),
        ),
        (
            "POST",
            format!("/api/v1/batches/{river_batch}/discard"),
            Some(json!({"reason": "x"})),
        ),
    ] {
        let (code, text) = call(&c, method, &u(&path), Some(&a), body.clone()).await;
        assert_eq!(code, 404, "{method} {path}: {text}");
        let nonexistent = path
            .replace(&b_id.to_string(), &missing.to_string())
            .replace(&admin_job, "00000000-0000-0000-0000-000000000000")
            .replace(&river_batch, "no-such-batch");
        let (code2, text2) = call(&c, method, &u(&nonexistent), Some(&a), body).await;
        assert_eq!(code2, 404, "{nonexistent}");
        let strip = |t: &str| {
            t.replace(&b_id.to_string(), "N")
                .replace(&missing.to_string(), "N")
                .replace(&admin_job, "J")
                .replace("00000000-0000-0000-0000-000000000000", "J")
                .replace(&river_batch, "B")
                .replace("no-such-batch", "B")
        };
        assert_eq!(
            strip(&text),
            strip(&text2),
            "{path}: the answer tells existence apart"
        );
    }
    // A bulk replay asked for Riverton by a Northshire token matches nothing.
    let dry = json(
        &call(
            &c,
            "POST",
            &u("/api/v1/replays"),
            Some(&a),
            Some(json!({"council": "riverton", "ids": [b_id], "dry_run": true})),
        )
        .await
        .1,
    );
    assert_eq!(dry["result"]["matching"], 0, "{dry}");
    let (code, body) = call(
        &c,
        "POST",
        &u("/api/v1/replays"),
        Some(&a),
        Some(json!({"ids": [b_id], "reason": "should touch nothing"})),
    )
    .await;
    assert_eq!(code, 202);
    assert_eq!(json(&body)["matching"], 0);
    // Held batches, feeds, outbox, audit: Northshire only.
    let held = json(
        &call(&c, "GET", &u("/api/v1/batches/held"), Some(&a), None)
            .await
            .1,
    );
    assert!(
        held["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["council"] == "northshire")
    );
    let feeds = json(&call(&c, "GET", &u("/api/v1/feeds"), Some(&a), None).await.1);
    let feeds = feeds["items"].as_array().unwrap().clone();
    assert!(
        !feeds.is_empty() && feeds.iter().all(|f| f["council"] == "northshire"),
        "{feeds:?}"
    );
    let mine = json(
        &call(&c, "GET", &u("/api/v1/outbox"), Some(&a), None)
            .await
            .1,
    );
    let every = json(
        &call(&c, "GET", &u("/api/v1/outbox"), Some(&admin), None)
            .await
            .1,
    );
    assert!(mine["pending"].as_u64().unwrap() > 0);
    assert!(mine["pending"].as_u64().unwrap() < every["pending"].as_u64().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await; // the admin's job finishes
    let audit = json(
        &call(&c, "GET", &u("/api/v1/audit?limit=1000"), Some(&a), None)
            .await
            .1,
    );
    let audit = audit["items"].as_array().unwrap();
    assert!(
        audit.iter().all(|e| e["council"] == "northshire"),
        "{audit:?}"
    );
    let audit_all = json(
        &call(
            &c,
            "GET",
            &u("/api/v1/audit?limit=1000"),
            Some(&admin),
            None,
        )
        .await
        .1,
    );
    let actions: Vec<&str> = audit_all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "token.create",
        "failure.discard",
        "replay.bulk-start",
        "replay.bulk",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from the audit log: {actions:?}"
        );
    }
    // The Riverton failure was not touched by the Northshire token.
    let f = json(
        &call(
            &c,
            "GET",
            &u(&format!("/api/v1/failures/{b_id}")),
            Some(&admin),
            None,
        )
        .await
        .1,
    );
    assert!(
        f["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| !h["actor"].as_str().unwrap().contains("north operator"))
    );

    // The console pages: the same scope.
    let cookie = format!("cb_token={a}");
    let page = |p: String| {
        let (c, cookie) = (c.clone(), cookie.clone());
        async move {
            let r = c.get(p).header("cookie", cookie).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (code, html) = page(u("/console/failures?council=riverton&status=all")).await;
    assert_eq!(code, 200);
    assert!(html.contains("0 failure(s) match"), "{html}");
    assert_eq!(page(u(&format!("/console/failures/{b_id}"))).await.0, 404);
    assert_eq!(
        page(u(&format!("/console/replays/{admin_job}"))).await.0,
        404
    );
    // The console's forms, with a valid CSRF value, on Riverton's records: 404 too.
    let csrf = council_bridge::api::auth::csrf_for(&a);
    for (path, form) in [
        (
            format!("/console/failures/{b_id}/replay"),
            vec![("step", "confirm")],
        ),
        (
            format!("/console/failures/{b_id}/replay"),
            vec![("step", "preview")],
        ),
        (format!("/console/failures/{b_id}/reveal"), vec![]),
        (
            format!("/console/failures/{b_id}/discard"),
            vec![("step", "confirm"), ("reason", "x")],
        ),
        (
            format!("/console/batches/{river_batch}/release"),
            vec![("reason", "x")],
        ),
        (format!("/console/replays/{admin_job}/resume"), vec![]),
    ] {
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend(form);
        let r = c
            .post(u(&path))
            .header("cookie", cookie.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&fields)
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    // Without the CSRF value a form does nothing.
    let r = c
        .post(u(&format!("/console/failures/{}/discard", north[0])))
        .header("cookie", cookie.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("step=confirm&reason=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let (_, html) = page(u("/console/audit")).await;
    assert!(
        !html.contains("riverton") && !html.contains("token.create"),
        "{html}"
    );
    let (_, html) = page(u("/console/feeds")).await;
    assert!(html.contains("northshire") && !html.contains("riverton"));
    let (_, html) = page(u("/console/batches")).await;
    assert!(!html.contains("riverton"));
    // Without a token, pages send you to sign in.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(u("/console/failures"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);

    // A viewer: personal data masked everywhere, no reveal, no actions.
    let mut seen = String::new();
    seen.push_str(
        &call(
            &c,
            "GET",
            &u("/api/v1/failures?status=all"),
            Some(&viewer),
            None,
        )
        .await
        .1,
    );
    for id in &north {
        let (code, body) = call(
            &c,
            "GET",
            &u(&format!("/api/v1/failures/{id}")),
            Some(&viewer),
            None,
        )
        .await;
        assert_eq!(code, 200);
        seen.push_str(&body);
        let r = c
            .get(u(&format!("/console/failures/{id}")))
            .header("cookie", format!("cb_token={viewer}"))
            .send()
            .await
            .unwrap();
        seen.push_str(&r.text().await.unwrap());
        assert_eq!(
            call(
                &c,
                "GET",
                &u(&format!("/api/v1/failures/{id}?reveal=true")),
                Some(&viewer),
                None
            )
            .await
            .0,
            403
        );
        assert_eq!(
            call(
                &c,
                "POST",
                &u(&format!("/api/v1/failures/{id}/replay")),
                Some(&viewer),
                Some(json!({"dry_run": true}))
            )
            .await
            .0,
            403
        );
    }
    assert!(seen.contains("****"), "the views were captured");
    let leaked: Vec<&String> = personal
        .iter()
        .filter(|v| seen.contains(v.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "personal values shown to a viewer: {leaked:?}"
    );

    // An operator's reveal shows them, and is audited.
    let (code, body) = call(
        &c,
        "GET",
        &u(&format!("/api/v1/failures/{}?reveal=true", north[0])),
        Some(&a),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert!(
        personal.iter().any(|v| body.contains(v.as_str())),
        "reveal shows the values"
    );
    let audit = json(
        &call(
            &c,
            "GET",
            &u("/api/v1/audit?action=failure.reveal"),
            Some(&a),
            None,
        )
        .await
        .1,
    );
    assert_eq!(audit["items"][0]["target"], north[0].to_string());
    assert!(
        audit["items"][0]["actor"]
            .as_str()
            .unwrap()
            .contains("north operator")
    );

    // Revoked: 401 from then on, and audited.
    let tokens = json(&stdout(
        &sandbox
            .cli(None)
            .args(["tokens", "list", "--json"])
            .output()
            .unwrap(),
    ));
    let vid = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "north viewer")
        .unwrap()["id"]
        .to_string();
    assert!(
        sandbox
            .cli(None)
            .args(["tokens", "revoke", &vid])
            .output()
            .unwrap()
            .status
            .success()
    );
    assert_eq!(
        call(&c, "GET", &u("/api/v1/failures"), Some(&viewer), None)
            .await
            .0,
        401
    );
    let audit = stdout(
        &sandbox
            .cli(None)
            .args(["audit", "list", "--json"])
            .output()
            .unwrap(),
    );
    assert!(audit.contains("token.revoke"));
    assert!(
        !seen.contains(&viewer[3..]),
        "a token never appears in what the API returns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_endpoint_and_each_answers() {
    let sandbox = Sandbox::new();
    let t = token(&sandbox, "admin", "*", "docs");
    let console = Console::start(&sandbox);
    let c = reqwest::Client::new();
    let (code, body) = call(
        &c,
        "GET",
        &format!("{}/api/v1/openapi.json", console.base),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let doc = json(&body);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    // Every route the API serves is documented.
    let source = std::fs::read_to_string(common::repo().join("src/api/v1.rs")).unwrap();
    let routes: BTreeSet<String> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix(".route(\""))
        .map(|l| l.split('"').next().unwrap().to_string())
        .collect();
    assert!(routes.len() >= 14);
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(routes, documented, "routes and the OpenAPI document differ");
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            // Every parameter reference resolves.
            for p in op["parameters"].as_array().unwrap() {
                let name = p["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
                assert!(
                    doc["components"]["parameters"][name].is_object(),
                    "{path}: {name}"
                );
            }
            // Every path answers as documented: not 405, not an unknown route.
            let url = format!("{}{}", console.base, path.replace("{id}", "1"));
            let (code, _) = call(
                &c,
                &method.to_uppercase(),
                &url,
                Some(&t),
                Some(json!({"dry_run": true})),
            )
            .await;
            assert!(code != 405 && code != 401, "{method} {path}: {code}");
            if !path.contains("{id}") {
                assert!(code == 200 || code == 202, "{method} {path}: {code}");
            }
        }
    }
}

/// 10,000 payroll rows that all fail with a broken mapping, the mapping fixed, a bulk replay
/// interrupted and resumed, then published: each record reaches RabbitMQ exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_replay_of_ten_thousand_after_a_mapping_fix_interrupted_and_resumed_delivers_each_once()
 {
    let sandbox = sandbox_with_payroll();
    let mapping = sandbox.path("mappings/northshire/payroll.yaml");
    let good = std::fs::read_to_string(&mapping).unwrap();
    assert!(good.contains("date: \"dd/mm/yyyy\""));
    std::fs::write(
        &mapping,
        good.replace("date: \"dd/mm/yyyy\"", "date: \"yyyy-mm-dd\""),
    )
    .unwrap();
    let rows = write_payroll(
        &sandbox.path("mappings/northshire/samples/payroll"),
        "bulk",
        200_000,
        2,
    );
    assert_eq!(rows, 10_000);
    let out = sandbox
        .cli(None)
        .args(["run", "--council", "northshire", "--feed", "payroll"])
        .output()
        .unwrap();
    assert!(out.status.code().is_some());
    std::fs::write(&mapping, &good).unwrap(); // the fix

    let config = Arc::new(Config::load(&sandbox.config()).unwrap());
    let registry = Arc::new(Registry::load(&config.schemas).unwrap());
    let store = sandbox.open_store();
    let filter = FailureFilter {
        council: Some("northshire".into()),
        feed: Some("payroll".into()),
        rule: Some("date".into()),
        ..Default::default()
    };
    assert_eq!(store.count_failures(&filter).unwrap(), 10_000);
    let op = Operator::new(config, registry);

    // A dry run changes nothing.
    let before = store.outbox_counts().unwrap();
    let t = Instant::now();
    let dry = op.dry_run(&store, &filter, 5).unwrap();
    eprintln!("dry run of 10,000: {:?}", t.elapsed());
    assert_eq!(
        (dry.matching, dry.would_queue, dry.still_failing),
        (10_000, 10_000, 0)
    );
    assert_eq!(store.count_failures(&filter).unwrap(), 10_000);
    assert_eq!(store.outbox_counts().unwrap(), before);

    // Interrupted after 20 pages, then resumed.
    let pages = AtomicUsize::new(0);
    let stop = || pages.fetch_add(1, Ordering::SeqCst) >= 20;
    let started = Instant::now();
    let job = op
        .bulk_replay(&store, &filter, "test-operator", "date format fixed", &stop)
        .unwrap();
    assert_eq!(job.status, "interrupted");
    assert_eq!(job.queued, 4_000);
    assert_eq!(store.count_failures(&filter).unwrap(), 6_000);
    // Resumed by another process: the console, through the API. The job was started for every
    // council, so only an all-council token sees it.
    let t = token(&sandbox, "admin", "*", "shared-service admin");
    let north = token(&sandbox, "operator", "northshire", "north operator");
    let console = Console::start(&sandbox);
    let c = reqwest::Client::new();
    let job_url = format!("{}/api/v1/replays/{}", console.base, job.id);
    let resume = format!("{job_url}/resume");
    assert_eq!(
        call(&c, "POST", &resume, Some(&north), Some(json!({})))
            .await
            .0,
        404
    );
    let (code, body) = call(&c, "POST", &resume, Some(&t), Some(json!({}))).await;
    assert_eq!(code, 202, "{body}");
    let wait = Instant::now();
    loop {
        let j = json(&call(&c, "GET", &job_url, Some(&t), None).await.1);
        if j["status"] == "done" {
            break;
        }
        assert!(wait.elapsed() < Duration::from_secs(120), "{j}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(console);
    let job = store.replay_job(&job.id).unwrap();
    assert_eq!(
        (job.status.as_str(), job.queued, job.still_failing),
        ("done", 10_000, 0)
    );
    eprintln!("bulk replay of 10,000: {:?}", started.elapsed());
    assert_eq!(store.count_failures(&filter).unwrap(), 0);
    // Resuming a finished job is refused; replaying again queues nothing more.
    assert!(op.resume(&store, &job.id, &|| false).is_err());
    let again = op
        .bulk_replay(&store, &filter, "test-operator", "again", &|| false)
        .unwrap();
    assert_eq!(again.queued, 0);

    let mut consumer = Consumer::bind(&sandbox).await;
    let report =
        council_bridge::pipeline::flush(&store, &sandbox.broker(&broker_url()), &Retry::default())
            .await
            .unwrap();
    assert!(report.error.is_none(), "{:?}", report.error);
    let got = consumer.drain_published().await;
    consumer.cleanup().await;
    let replayed: Vec<_> = got
        .iter()
        .filter(|m| m.headers.contains_key("x-replay-of"))
        .collect();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for m in &got {
        *per_id.entry(m.message_id.as_str()).or_default() += 1;
    }
    assert!(
        per_id.values().all(|n| *n == 1),
        "a message was delivered twice"
    );
    assert_eq!(replayed.len(), 10_000);
    let sources: BTreeSet<&str> = replayed
        .iter()
        .map(|m| m.headers["x-replay-of"].as_str())
        .collect();
    assert_eq!(sources.len(), 10_000, "one message per failure");
    assert!(
        replayed
            .iter()
            .all(|m| m.routing_key.starts_with("payroll.") && m.body["pay_date"].is_string())
    );
    // The audit log has the job, with its count.
    let audit = store
        .audit_entries(None, Some("replay.bulk"), None, 10)
        .unwrap();
    assert!(
        audit.iter().any(|e| e["action"] == "replay.bulk"
            && e["records"] == 10_000
            && e["outcome"] == "done")
    );
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "replay.bulk" && e["outcome"] == "interrupted")
    );
}

/// `serve` serves the same API: a failure replayed through it after a mapping fix is published
/// by the daemon with `x-replay-of`, under the id the dry run announced, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_publishes_a_failure_replayed_through_the_api_with_x_replay_of() {
    let sandbox = Sandbox::new();
    let mut consumer = Consumer::bind(&sandbox).await;
    let t = token(&sandbox, "operator", "northshire", "north operator");
    let serve = Console::start_command(&sandbox, "serve", Some(&broker_url()));
    let c = reqwest::Client::new();
    let list_url = format!(
        "{}/api/v1/failures?feed=supplier-payments&field=payment_method",
        serve.base
    );
    let start = Instant::now();
    let id = loop {
        let (code, body) = call(&c, "GET", &list_url, Some(&t), None).await;
        assert_eq!(code, 200, "{body}");
        if let Some(id) = json(&body)["items"][0]["id"].as_i64() {
            break id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "serve did not read the samples"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Everything serve read is published first.
    let before = consumer.drain(Duration::from_secs(3), 5_000).await;
    assert!(!before.is_empty());
    assert!(
        before
            .iter()
            .all(|m| !m.headers.contains_key("x-replay-of"))
    );

    let mapping = sandbox.path("mappings/northshire/supplier_payment.yaml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    std::fs::write(
        &mapping,
        text.replace("BACS: bacs,", "BACS: bacs, DD: bacs,"),
    )
    .unwrap();
    let replay = format!("{}/api/v1/failures/{id}/replay", serve.base);
    let dry = json(
        &call(
            &c,
            "POST",
            &replay,
            Some(&t),
            Some(json!({"dry_run": true})),
        )
        .await
        .1,
    );
    assert_eq!(dry["records"][0]["outcome"], "would queue", "{dry}");
    let announced = dry["records"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, body) = call(
        &c,
        "POST",
        &replay,
        Some(&t),
        Some(json!({"reason": "DD is Bacs"})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["message_id"], announced.as_str());
    // A second replay of the same failure is refused.
    assert_eq!(
        call(&c, "POST", &replay, Some(&t), Some(json!({}))).await.0,
        409
    );

    let after = consumer.drain(Duration::from_secs(3), 100).await;
    consumer.cleanup().await;
    let replayed: Vec<_> = after
        .iter()
        .filter(|m| m.headers.get("x-replay-of") == Some(&id.to_string()))
        .collect();
    assert_eq!(replayed.len(), 1, "published once: {after:?}");
    assert_eq!(replayed[0].message_id, announced);
    assert_eq!(replayed[0].body["payment_method"], "bacs");
    let audit = json(
        &call(
            &c,
            "GET",
            &format!("{}/api/v1/audit?action=failure.replay", serve.base),
            Some(&t),
            None,
        )
        .await
        .1,
    );
    assert_eq!(audit["items"][0]["target"], id.to_string());
    assert_eq!(audit["items"][0]["council"], "northshire");
}

/// The command line does what the console does (filters, dry run, discard, tokens, audit), and
/// a held batch is released through the API by its own council only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_parity_and_held_batches_through_the_api() {
    let sandbox = Sandbox::new();
    let council_yaml = sandbox.path("mappings/northshire/council.yaml");
    let text = std::fs::read_to_string(&council_yaml).unwrap();
    let held = text.replacen(
        "    input: samples/payroll/*.csv\n    settle_seconds: 0\n",
        "    input: samples/payroll/*.csv\n    settle_seconds: 0\n    reject_threshold_percent: 5\n",
        1,
    );
    assert_ne!(held, text);
    std::fs::write(&council_yaml, held).unwrap();
    assert_eq!(
        sandbox.cli(None).arg("run").output().unwrap().status.code(),
        Some(4)
    );

    let list = |args: &[&str]| -> Vec<Value> {
        let mut a = vec!["failures", "list"];
        a.extend_from_slice(args);
        sandbox.json(&a).as_array().unwrap().clone()
    };
    let dates = list(&["--council", "northshire", "--rule", "date"]);
    assert_eq!(dates.len(), 2, "{dates:?}");
    assert!(dates.iter().all(|f| f["council"] == "northshire"));
    let validation = list(&["--kind", "validation"]);
    assert_eq!(validation.len(), 1);
    assert_eq!(validation[0]["council"], "riverton");
    assert_eq!(list(&["--text", "not a known code"]).len(), 5);
    assert_eq!(list(&["--entity", "payroll.pay_result"]).len(), 4);
    assert_eq!(list(&["--field", "surname"]).len(), 2);
    assert_eq!(list(&["--until", "2000-01-01T00:00:00Z"]).len(), 0);
    let id = dates[0]["id"].to_string();

    let dry = sandbox.json(&["failures", "replay", &id, "--dry-run"]);
    assert_eq!(dry["matching"], 1);
    assert_eq!(dry["records"][0]["outcome"], "still failing");
    assert!(
        !dry.to_string().contains("\"value\""),
        "no record values: {dry}"
    );
    assert_eq!(list(&[]).len(), 13, "a dry run changes nothing");
    let out = sandbox
        .cli(None)
        .args(["failures", "discard", &id, "--reason", "test row"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(list(&[]).len(), 12);
    assert_eq!(list(&["--status", "discarded"])[0]["id"].to_string(), id);
    let again = sandbox
        .cli(None)
        .args(["failures", "discard", &id, "--reason", "x"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(stdout(&again).contains("already discarded"));
    for (bad, named) in [
        (["--role", "boss", "--council", "northshire"], "boss"),
        (["--role", "viewer", "--council", "nowhere"], "nowhere"),
    ] {
        let out = sandbox
            .cli(None)
            .args(["tokens", "create"])
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains(named));
    }

    let north = token(&sandbox, "operator", "northshire", "north operator");
    let north_viewer = token(&sandbox, "viewer", "northshire", "north viewer");
    let river = token(&sandbox, "admin", "riverton,southvale", "river admin");
    let console = Console::start(&sandbox);
    let c = reqwest::Client::new();
    let u = |p: &str| format!("{}{p}", console.base);
    let held = json(
        &call(&c, "GET", &u("/api/v1/batches/held"), Some(&north), None)
            .await
            .1,
    );
    let items = held["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{held}");
    assert_eq!(items[0]["feed"], "payroll");
    assert!(
        items[0]["summary"]["held_reasons"][0]
            .as_str()
            .unwrap()
            .contains("reject threshold")
    );
    let batch = items[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        json(
            &call(&c, "GET", &u("/api/v1/batches/held"), Some(&river), None)
                .await
                .1
        )["items"],
        json!([])
    );
    let release = u(&format!("/api/v1/batches/{batch}/release"));
    assert_eq!(
        call(
            &c,
            "POST",
            &release,
            Some(&river),
            Some(json!({"reason": "x"}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            &c,
            "POST",
            &release,
            Some(&north_viewer),
            Some(json!({"reason": "x"}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(&c, "POST", &release, Some(&north), Some(json!({})))
            .await
            .0,
        400,
        "a reason is needed"
    );
    let (code, body) = call(
        &c,
        "POST",
        &release,
        Some(&north),
        Some(json!({"reason": "rejects explained: two test rows"})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let n = json(&body)["messages"].as_u64().unwrap();
    assert!(n > 1);
    assert_eq!(
        call(
            &c,
            "POST",
            &release,
            Some(&north),
            Some(json!({"reason": "again"}))
        )
        .await
        .0,
        409
    );
    let audit = sandbox.json(&["audit", "list", "--council", "northshire"]);
    let entries = audit.as_array().unwrap();
    let released = entries
        .iter()
        .find(|e| e["action"] == "batch.release")
        .unwrap();
    assert_eq!(released["records"], n);
    assert!(
        released["actor"]
            .as_str()
            .unwrap()
            .contains("north operator")
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "failure.discard" && e["target"] == id.as_str())
    );
    assert!(
        !entries.iter().any(|e| e["action"] == "token.create"),
        "installation entries are not a council's"
    );
}

/// A bulk replay interrupted by a stop is resumed by the next `serve` on its own and published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_resumes_an_interrupted_bulk_replay_at_start() {
    let sandbox = Sandbox::new();
    assert!(
        sandbox
            .cli(None)
            .arg("run")
            .output()
            .unwrap()
            .status
            .code()
            .is_some()
    );
    let mapping = sandbox.path("mappings/northshire/supplier_payment.yaml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    std::fs::write(
        &mapping,
        text.replace("BACS: bacs,", "BACS: bacs, DD: bacs,"),
    )
    .unwrap();
    let job = {
        let config = Arc::new(Config::load(&sandbox.config()).unwrap());
        let registry = Arc::new(Registry::load(&config.schemas).unwrap());
        let store = sandbox.open_store();
        let filter = FailureFilter {
            council: Some("northshire".into()),
            field: Some("payment_method".into()),
            ..Default::default()
        };
        let job = Operator::new(config, registry)
            .bulk_replay(&store, &filter, "test-operator", "DD is Bacs", &|| true)
            .unwrap();
        assert_eq!((job.status.as_str(), job.queued), ("interrupted", 0));
        job.id
    };
    let mut consumer = Consumer::bind(&sandbox).await;
    let serve = Console::start_command(&sandbox, "serve", Some(&broker_url()));
    let store = sandbox.open_store();
    let start = Instant::now();
    while store.replay_job(&job).unwrap().status != "done" {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the job was not resumed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(store.replay_job(&job).unwrap().queued, 1);
    let got = consumer.drain(Duration::from_secs(3), 5_000).await;
    consumer.cleanup().await;
    drop(serve);
    let replayed: Vec<_> = got
        .iter()
        .filter(|m| m.headers.contains_key("x-replay-of"))
        .collect();
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(replayed[0].body["payment_method"], "bacs");
}
