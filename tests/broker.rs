//! End-to-end tests against the real RabbitMQ: the sample council's feeds through the CLI to a
//! consumer bound to the exchange. These fail (never skip) when the broker is absent.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::{Consumer, Sandbox, broker_url, stdout};
use council_bridge::canonical::Registry;

/// Every message the bundled sample councils produce, by routing key: the good rows of each
/// file (see mappings/*/samples/EXPECTED.md) and one manifest per file (per page for the API).
const EXPECTED: [(&str, usize); 47] = [
    ("finance.batch.completed.eastborough", 1),
    ("finance.batch.completed.northshire", 1),
    ("finance.batch.completed.southvale", 10),
    ("finance.credit_note.upserted.southvale", 4),
    ("finance.customer_account.upserted.southvale", 5),
    ("finance.debt_case.upserted.southvale", 5),
    ("finance.gl_journal_line.upserted.southvale", 6),
    ("finance.payment_batch.upserted.southvale", 4),
    ("finance.procurement_card_transaction.upserted.southvale", 5),
    ("finance.purchase_invoice.upserted.southvale", 3),
    ("finance.purchase_order.upserted.southvale", 5),
    ("finance.sales_invoice.upserted.southvale", 5),
    ("finance.supplier.upserted.southvale", 5),
    ("finance.supplier_payment.upserted.eastborough", 5),
    ("finance.supplier_payment.upserted.northshire", 10),
    ("hr.absence.upserted.westmarch", 6),
    ("hr.application.upserted.westmarch", 5),
    ("hr.bank_details.upserted.westmarch", 4),
    ("hr.batch.completed.eastborough", 2),
    ("hr.batch.completed.northshire", 1),
    ("hr.batch.completed.riverton", 1),
    ("hr.batch.completed.westmarch", 15),
    ("hr.change_event.upserted.westmarch", 5),
    ("hr.employee.upserted.eastborough", 3),
    ("hr.employee.upserted.northshire", 9),
    ("hr.employee.upserted.riverton", 4),
    ("hr.employment.upserted.westmarch", 6),
    ("hr.expense_claim.upserted.westmarch", 4),
    ("hr.hs_incident.upserted.westmarch", 4),
    ("hr.leaver_event.upserted.westmarch", 4),
    ("hr.org_unit.upserted.westmarch", 6),
    ("hr.post.upserted.westmarch", 4),
    ("hr.person.upserted.westmarch", 6),
    ("hr.starter_event.upserted.westmarch", 4),
    ("hr.timesheet_entry.upserted.westmarch", 5),
    ("hr.training_record.upserted.westmarch", 5),
    ("hr.vacancy.upserted.westmarch", 4),
    ("payroll.batch.completed.northshire", 1),
    ("payroll.batch.completed.riverton", 1),
    ("payroll.batch.completed.southvale", 2),
    ("payroll.pay_result.upserted.northshire", 13),
    ("payroll.pay_result.upserted.riverton", 7),
    ("payroll.payslip.upserted.southvale", 5),
    ("payroll.tax_ni_record.upserted.southvale", 5),
    ("pensions.batch.completed.westmarch", 2),
    ("pensions.contribution_return.upserted.westmarch", 5),
    ("pensions.membership.upserted.westmarch", 5),
];
/// With Eastborough's HR API pulled (two pages, two batches).
const TOTAL: usize = 227;
/// Without it (no API configured: the HR feed is not pulled).
const TOTAL_FILES: usize = TOTAL - 3 - 2;

fn check_messages(sandbox: &Sandbox, got: &[common::Received], with_api: bool) {
    let registry = Registry::load(&sandbox.path("schemas")).unwrap();
    let mut by_key: BTreeMap<&str, usize> = BTreeMap::new();
    for m in got {
        *by_key.entry(m.routing_key.as_str()).or_default() += 1;
    }
    let want: BTreeMap<&str, usize> = EXPECTED
        .into_iter()
        .filter(|(rk, _)| with_api || !rk.starts_with("hr.") || !rk.ends_with(".eastborough"))
        .collect();
    assert_eq!(by_key, want, "messages by routing key");
    let ids: HashSet<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "message ids are unique");
    for m in got {
        let h = &m.headers;
        assert_eq!(h["cloudEvents:specversion"], "1.0");
        assert_eq!(h["cloudEvents:id"], m.message_id);
        assert_eq!(m.delivery_mode, Some(2), "persistent");
        let council = m.routing_key.rsplit('.').next().unwrap();
        assert!(h["cloudEvents:source"].starts_with(&format!("urn:council:{council}:")));
        assert!(!m.correlation_id.is_empty());
        if m.routing_key.contains(".batch.") {
            assert_eq!(m.body["council"], council);
            continue;
        }
        let uuid = uuid::Uuid::parse_str(&m.message_id).unwrap();
        assert_eq!(uuid.get_version_num(), 5, "deterministic UUIDv5 ids");
        let parts: Vec<&str> = m.routing_key.split('.').collect();
        let entity = registry.get(&format!("{}.{}", parts[0], parts[1])).unwrap();
        assert_eq!(
            h["cloudEvents:type"],
            format!(
                "uk.gov.council.{}.{}.upserted.v{}",
                parts[0], parts[1], entity.version
            )
        );
        assert_eq!(h["cloudEvents:dataschema"], entity.id);
        assert!(!h["cloudEvents:subject"].is_empty());
        assert!(h.contains_key("cloudEvents:time"));
        for k in [
            "x-source-file",
            "x-source-sha256",
            "x-source-line",
            "x-mapping-id",
            "x-mapping-version",
        ] {
            assert!(h.contains_key(k), "provenance header {k}");
        }
        entity
            .validate(&m.body)
            .unwrap_or_else(|e| panic!("{} body invalid: {e:?}", m.routing_key));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_publishes_exactly_the_expected_messages_and_a_rerun_publishes_nothing() {
    let sandbox = Sandbox::new();
    let mut consumer = Consumer::bind(&sandbox).await;
    let (api, hits) = common::serve_hr_api("test-token-1").await;
    let out = sandbox
        .cli(Some(&broker_url()))
        .env("EASTBOROUGH_HR_API_URL", &api)
        .env("EASTBOROUGH_HR_API_TOKEN", "test-token-1")
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "two pages pulled"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = consumer.drain_published().await;
    assert_eq!(got.len(), TOTAL, "{}", stdout(&out));
    check_messages(&sandbox, &got, true);
    let text = stdout(&out);
    assert!(
        text.contains("payroll_202610.csv  processed: read 15, valid 13, rejected 2"),
        "{text}"
    );
    assert!(
        text.contains("messages (with the batch manifest): 14 published, 0 waiting, 0 held"),
        "per-feed delivery: {text}"
    );
    assert!(
        text.contains("control: the trailer agrees with what was read"),
        "{text}"
    );

    let again = sandbox
        .cli(Some(&broker_url()))
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(
        stdout(&again).matches("skipped: already processed").count() == 35,
        "{}",
        stdout(&again)
    );
    assert!(
        consumer.drain_published().await.is_empty(),
        "a rerun publishes nothing"
    );
    consumer.cleanup().await;
}

#[tokio::test]
async fn wrong_broker_address_keeps_everything_in_the_outbox_and_flush_delivers_each_once() {
    let sandbox = Sandbox::new();
    let mut consumer = Consumer::bind(&sandbox).await;
    let out = sandbox
        .cli(Some("amqp://guest:guest@127.0.0.1:1/%2f"))
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit 3: messages wait for the broker\n{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&format!("{TOTAL_FILES} messages wait in the outbox")),
        "{}",
        stdout(&out)
    );
    assert!(consumer.drain_published().await.is_empty());

    let store = sandbox.open_store();
    assert_eq!(store.outbox_counts().unwrap().pending, TOTAL_FILES as u64);
    drop(store);

    let flush = sandbox
        .cli(Some(&broker_url()))
        .args(["outbox", "flush"])
        .output()
        .unwrap();
    assert_eq!(flush.status.code(), Some(0), "{}", stdout(&flush));
    let got = consumer.drain_published().await;
    assert_eq!(got.len(), TOTAL_FILES);
    check_messages(&sandbox, &got, false);

    let second = sandbox
        .cli(Some(&broker_url()))
        .args(["outbox", "flush"])
        .output()
        .unwrap();
    assert!(
        stdout(&second).contains("published 0 messages"),
        "{}",
        stdout(&second)
    );
    assert!(
        consumer.drain_published().await.is_empty(),
        "each message is delivered once"
    );
    let counts = sandbox.json(&["outbox", "status"]);
    assert_eq!(counts["sent"], TOTAL_FILES as u64);
    assert_eq!(counts["pending"], 0);
    consumer.cleanup().await;
}

#[tokio::test]
async fn a_bad_row_names_file_row_and_field_and_is_delivered_after_the_mapping_is_fixed() {
    let sandbox = Sandbox::new();
    let mut consumer = Consumer::bind(&sandbox).await;
    let out = sandbox
        .cli(None)
        .args(["run", "--council", "northshire", "--feed", "hr-employees"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    let failures = sandbox.failures();
    let status_failure = failures
        .iter()
        .find(|f| f["errors"] == "status map")
        .expect("the unknown status code is a failure");
    assert_eq!(status_failure["file"], "employees_20261101.csv");
    assert_eq!(status_failure["line"], 9);
    let id = status_failure["id"].as_i64().unwrap().to_string();

    let show = sandbox
        .cli(None)
        .args(["failures", "show", &id])
        .output()
        .unwrap();
    let text = stdout(&show);
    assert!(
        text.contains("employees_20261101.csv, line 9, row 8"),
        "{text}"
    );
    assert!(
        text.contains("field `status` (column \"Status\")"),
        "{text}"
    );
    assert!(text.contains("is not a known code"), "{text}");

    // The officer fixes the mapping: code X now means suspended.
    let mapping = sandbox.path("mappings/northshire/hr_employee.yaml");
    let yaml = std::fs::read_to_string(&mapping).unwrap();
    assert!(yaml.contains("S: suspended }"), "the sample mapping maps S");
    std::fs::write(
        &mapping,
        yaml.replacen("S: suspended }", "S: suspended, X: suspended }", 1),
    )
    .unwrap();
    let check = sandbox
        .cli(None)
        .args(["mapping", "check"])
        .arg(&mapping)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));

    let replay = sandbox
        .cli(Some(&broker_url()))
        .args([
            "failures",
            "replay",
            &id,
            "--reason",
            "code X agreed with HR",
        ])
        .output()
        .unwrap();
    assert_eq!(replay.status.code(), Some(0), "{}", stdout(&replay));
    let got = consumer.drain_published().await;
    let employees: Vec<_> = got
        .iter()
        .filter(|m| m.routing_key == "hr.employee.upserted.northshire")
        .collect();
    // 9 good rows of the first run were waiting in the outbox (no broker then) + the replayed one.
    assert_eq!(employees.len(), 10, "{got:?}");
    assert!(
        employees
            .iter()
            .any(|m| m.body["status"] == "suspended" && m.headers["x-source-line"] == "9")
    );

    let store = sandbox.open_store();
    assert_eq!(
        store.failure(id.parse().unwrap()).unwrap().status,
        "replayed"
    );
    let audit = store.audit_log(10).unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a["action"] == "failure.replay" && a["actor"] == "test-operator")
    );
    consumer.cleanup().await;
}

#[tokio::test]
async fn a_trailer_count_mismatch_is_reported_and_the_batch_held_until_released() {
    let sandbox = Sandbox::new();
    let mut consumer = Consumer::bind(&sandbox).await;
    let payroll = sandbox.path("mappings/northshire/samples/payroll");
    std::fs::remove_dir_all(&payroll).unwrap();
    std::fs::create_dir_all(&payroll).unwrap();
    std::fs::copy(
        common::repo().join("tests/fixtures/northshire/payroll_trailer_mismatch.csv"),
        payroll.join("payroll_trailer_mismatch.csv"),
    )
    .unwrap();
    let out = sandbox
        .cli(Some(&broker_url()))
        .args(["run", "--council", "northshire", "--feed", "payroll"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(4), "exit 4: batch held\n{text}");
    assert!(
        text.contains("CONTROL MISMATCH: trailer (line 7) says 5 rows but 4 were read"),
        "{text}"
    );
    assert!(
        consumer.drain_published().await.is_empty(),
        "nothing from a held batch is published"
    );

    let batches = sandbox
        .cli(None)
        .args(["batches", "list", "--json"])
        .output()
        .unwrap();
    let batches: serde_json::Value = serde_json::from_slice(&batches.stdout).unwrap();
    let held = &batches[0];
    assert_eq!(held["status"], "held");
    assert_eq!(held["summary"]["control"]["trailer_count"], 5);
    assert_eq!(held["summary"]["control"]["rows_read"], 4);

    let id = held["id"].as_str().unwrap();
    let release = sandbox
        .cli(Some(&broker_url()))
        .args([
            "batches",
            "release",
            id,
            "--reason",
            "payroll confirmed 4 rows",
        ])
        .output()
        .unwrap();
    assert_eq!(release.status.code(), Some(0), "{}", stdout(&release));
    let got = consumer.drain_published().await;
    assert_eq!(got.len(), 5, "4 records and the manifest once released");
    let manifest = got
        .iter()
        .find(|m| m.routing_key == "payroll.batch.completed.northshire")
        .unwrap();
    assert_eq!(manifest.body["control"]["matches"], false);
    consumer.cleanup().await;
}

#[tokio::test]
async fn broker_setup_is_idempotent() {
    let sandbox = Sandbox::new();
    for _ in 0..2 {
        let out = sandbox
            .cli(Some(&broker_url()))
            .args(["broker", "setup"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout(&out).contains("topology declared"));
    }
    Consumer::bind(&sandbox).await.cleanup().await;
}
