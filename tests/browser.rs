//! The web console in headless Chromium (Debian's chromium + chromium-driver, driven over the
//! W3C WebDriver protocol): sign in with a token, filter the failures, open one, preview its
//! replay, replay it, see it leave the list and appear in the audit log. Screenshots of the
//! main pages are written to target/screenshots/, or to docs/console/ (used by
//! docs/operators.md) with `UPDATE_SCREENSHOTS=1`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, repo, stdout};
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let table = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().take_while(|c| **c != b'=').count();
        let mut v = 0u32;
        for (i, c) in chunk.iter().take(n).enumerate() {
            v |= table(*c) << (18 - 6 * i);
        }
        out.extend_from_slice(&v.to_be_bytes()[1..n.max(1)]);
    }
    out
}

/// A WebDriver session.
struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    async fn start(driver: &str) -> Self {
        let http = reqwest::Client::new();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
        }}});
        let r: Value = http
            .post(format!("{driver}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not start a session: {r}"));
        Browser {
            http,
            session: format!("{driver}/session/{id}"),
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let r: Value = req.send().await.unwrap().json().await.unwrap();
        if let Some(e) = r["value"].get("error") {
            panic!("webdriver {method} {path}: {e}: {}", r["value"]["message"]);
        }
        r["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.cmd("POST", "/url", json!({"url": url})).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    /// Clicks a link or a submit button and waits for the page it leads to (the clicked
    /// element goes stale once the new document replaces it).
    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), json!({}))
            .await;
        let start = Instant::now();
        loop {
            let r: Value = self
                .http
                .get(format!("{}/element/{e}/name", self.session))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if r["value"].get("error").is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "clicking {css} led nowhere"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The new document is there once its <main> is.
        loop {
            let r: Value = self
                .http
                .post(format!("{}/element", self.session))
                .json(&json!({"using": "css selector", "value": "main"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if r["value"].get("error").is_none() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no page after clicking {css}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/clear"), json!({}))
            .await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            json!({"text": text}),
        )
        .await;
    }

    async fn source(&self) -> String {
        self.cmd("GET", "/source", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn screenshot(&self, name: &str) {
        let png = base64_decode(
            self.cmd("GET", "/screenshot", Value::Null)
                .await
                .as_str()
                .unwrap(),
        );
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        // The runbook's pictures are refreshed on purpose (`UPDATE_SCREENSHOTS=1`); an ordinary
        // run writes them under target/ so the tree stays clean.
        let dir = if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
            repo().join("docs/console")
        } else {
            repo().join("target/screenshots")
        };
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }

    async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_filters_previews_and_replays_a_failure_in_chromium() {
    assert!(
        std::path::Path::new("/usr/bin/chromedriver").exists(),
        "this test needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver (scripts/test.sh installs them)"
    );
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
    // The fix: Northshire's "DD" (direct debit) payments are Bacs payments.
    let mapping = sandbox.path("mappings/northshire/supplier_payment.yaml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    std::fs::write(
        &mapping,
        text.replace("BACS: bacs,", "BACS: bacs, DD: bacs,"),
    )
    .unwrap();
    let failures = sandbox.failures();
    let target = failures
        .iter()
        .find(|f| {
            f["feed"] == "supplier-payments"
                && f["council"] == "northshire"
                && f["errors"].to_string().contains("payment_method")
        })
        .expect("the Northshire DD payment failed")["id"]
        .as_i64()
        .unwrap();
    let out = sandbox
        .cli(None)
        .args([
            "tokens",
            "create",
            "--role",
            "operator",
            "--council",
            "northshire",
            "--name",
            "Sam (Northshire IT)",
            "--json",
        ])
        .output()
        .unwrap();
    let token = serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", stdout(&out)))["token"]
        .as_str()
        .unwrap()
        .to_string();

    let port = free_port();
    let _console = Kill(
        Command::new(assert_cmd::cargo::cargo_bin("council-bridge"))
            .current_dir(sandbox.dir.path())
            .env_remove("AMQP_URL")
            .env("COUNCIL_BRIDGE_CONFIG", sandbox.config())
            .args(["console", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let driver_port = free_port();
    let _driver = Kill(
        Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port, "council-bridge console");
    wait_port(driver_port, "chromedriver");
    let base = format!("http://127.0.0.1:{port}");
    let b = Browser::start(&format!("http://127.0.0.1:{driver_port}")).await;

    // Sign in.
    b.go(&format!("{base}/console/failures")).await;
    assert!(
        b.source().await.contains("Sign in"),
        "sent to sign in first"
    );
    b.screenshot("sign-in.png").await;
    b.type_into("#token", &token).await;
    b.click("#sign-in").await;
    let html = b.source().await;
    assert!(
        html.contains("Sam (Northshire IT)") && html.contains("failure(s) match"),
        "{html}"
    );
    assert!(
        !html.contains("riverton"),
        "another council's failures are not listed"
    );

    // Filter.
    b.type_into("#f-feed", "supplier-payments").await;
    b.type_into("#f-rule", "map").await;
    b.click("#apply-filters").await;
    let html = b.source().await;
    assert!(html.contains("1 failure(s) match"), "{html}");
    assert!(html.contains(&format!("id=\"failure-{target}\"")));
    b.screenshot("failures.png").await;

    // Open it: source values beside the problem, personal data masked.
    b.click(&format!("#failure-{target}")).await;
    let html = b.source().await;
    assert!(
        html.contains("Payment Method") && html.contains("is not a known code"),
        "{html}"
    );
    assert!(html.contains("Personal data is masked"));
    b.screenshot("failure.png").await;

    // Preview the replay (nothing changes), then replay.
    b.click("#preview-replay").await;
    let html = b.source().await;
    assert!(
        html.contains("Dry run") && html.contains("would be queued"),
        "{html}"
    );
    b.screenshot("replay-preview.png").await;
    assert_eq!(
        sandbox
            .failures()
            .iter()
            .filter(|f| f["id"] == target)
            .count(),
        1,
        "a preview changes nothing"
    );
    b.type_into("#replay-reason", "DD is a Bacs direct debit: mapping fixed")
        .await;
    b.click("#confirm-replay").await;
    let html = b.source().await;
    assert!(html.contains("Replayed: message"), "{html}");
    assert!(html.contains("replayed"));

    // It has left the list of open failures...
    b.go(&format!("{base}/console/failures?feed=supplier-payments"))
        .await;
    let html = b.source().await;
    assert!(
        !html.contains(&format!("id=\"failure-{target}\"")),
        "{html}"
    );
    // ...and is in the audit log.
    b.go(&format!("{base}/console/audit")).await;
    let html = b.source().await;
    assert!(
        html.contains("failure.replay") && html.contains("DD is a Bacs direct debit"),
        "{html}"
    );
    assert!(html.contains("Sam (Northshire IT)"));
    b.screenshot("audit.png").await;
    // Discard one, with a reason and a confirmation.
    let other = failures
        .iter()
        .find(|f| f["feed"] == "hr-employees" && f["council"] == "northshire")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    b.go(&format!("{base}/console/failures/{other}")).await;
    b.type_into("#discard-reason", "test row, council confirmed")
        .await;
    b.click("#discard").await;
    assert!(
        b.source().await.contains("Discard failure"),
        "asks to confirm"
    );
    b.click("#confirm-discard").await;
    assert!(b.source().await.contains("Discarded."));

    // Bulk: preview everything matching the filters, then start the job.
    b.go(&format!("{base}/console/failures?feed=payroll")).await;
    b.click("#preview-bulk").await;
    let html = b.source().await;
    assert!(
        html.contains("Dry run") && html.contains("still fail with the current mapping"),
        "{html}"
    );
    b.screenshot("bulk-preview.png").await;
    b.click("#confirm-bulk").await;
    let start = Instant::now();
    loop {
        let html = b.source().await;
        if html.contains("id=\"job-status\">done<") {
            assert!(
                html.contains("id=\"job-queued\">0<"),
                "nothing was fixed for payroll"
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{html}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.click("a[href^='/console/replays/']").await;
    }
    b.screenshot("bulk-job.png").await;
    b.go(&format!("{base}/console/audit")).await;
    let html = b.source().await;
    assert!(
        html.contains("replay.bulk") && html.contains("failure.discard"),
        "{html}"
    );
    b.go(&format!("{base}/console/feeds")).await;
    b.screenshot("feeds.png").await;
    b.go(&format!("{base}/console/batches")).await;
    b.screenshot("batches.png").await;
    b.quit().await;
    assert!(sandbox.failures().iter().all(|f| f["id"] != target));
}
