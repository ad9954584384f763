//! The finance and payroll catalogue end to end, without a broker: the Southvale sample council
//! (mappings/southvale, one feed per entity) through `pipeline::process` into a private store.
//! Every row of every sample is valid (mappings/southvale/samples/EXPECTED.md), every entity of
//! the catalogue yields records, and every record in the outbox validates against its schema.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use council_bridge::canonical::Registry;
use council_bridge::config::Config;
use council_bridge::pipeline;

/// Feed → (entity, detail rows read, valid, rejected).
const FEEDS: [(&str, &str, u64, u64, u64); 12] = [
    ("tax-ni", "payroll.tax_ni_record", 5, 5, 0),
    ("payslips", "payroll.payslip", 5, 5, 0),
    ("suppliers", "finance.supplier", 5, 5, 0),
    ("purchase-orders", "finance.purchase_order", 5, 5, 0),
    ("purchase-invoices", "finance.purchase_invoice", 3, 3, 0),
    ("credit-notes", "finance.credit_note", 4, 4, 0),
    ("payment-batches", "finance.payment_batch", 4, 4, 0),
    (
        "card-transactions",
        "finance.procurement_card_transaction",
        5,
        5,
        0,
    ),
    ("customer-accounts", "finance.customer_account", 5, 5, 0),
    ("sales-invoices", "finance.sales_invoice", 5, 5, 0),
    ("debt-cases", "finance.debt_case", 5, 5, 0),
    ("gl-journals", "finance.gl_journal_line", 6, 6, 0),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn southvale_publishes_every_finance_and_payroll_entity_and_every_record_validates() {
    let config = Config::load(&repo().join("council-bridge.yaml")).unwrap();
    let registry = Registry::load(&config.schemas).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = common::test_store(&dir.path().join("catalogue.db"));

    let reports = pipeline::process(&config, &registry, &store, Some("southvale"), None, false);

    // Per feed: one file, processed (not held: the trailers agree), with the expected counts.
    let by_feed: BTreeMap<&str, _> = reports.iter().map(|r| (r.feed.as_str(), r)).collect();
    assert_eq!(
        by_feed.keys().copied().collect::<BTreeSet<_>>(),
        FEEDS.iter().map(|f| f.0).collect::<BTreeSet<_>>(),
        "southvale has exactly one feed per catalogue entity"
    );
    for (feed, _, read, valid, rejected) in FEEDS {
        let report = by_feed[feed];
        assert!(report.error.is_none(), "{feed}: {:?}", report.error);
        assert_eq!(report.files.len(), 1, "{feed}: one sample file");
        let file = &report.files[0];
        assert_eq!(file.status, "processed", "{feed}: {file:?}");
        assert_eq!(
            (file.read, file.valid, file.rejected),
            (read, valid, rejected),
            "{feed} ({}): read, valid, rejected; rejected by reason {:?}",
            file.file,
            file.rejected_by_reason
        );
        assert_eq!(
            file.new_messages, valid,
            "{feed}: one message per valid row"
        );
        if let Some(control) = &file.control {
            assert_eq!(control["matches"], true, "{feed}: {control}");
        }
    }

    // Every record in the outbox: the right routing key, and a body valid against its schema.
    let pending = store.pending(10_000).unwrap();
    let mut records: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pending {
        let m = &p.message;
        assert_eq!(p.council, "southvale");
        let parts: Vec<&str> = m.routing_key.split('.').collect();
        assert_eq!(parts.len(), 4, "{}", m.routing_key);
        assert_eq!(parts[3], "southvale", "{}", m.routing_key);
        if parts[1] == "batch" {
            assert_eq!(parts[2], "completed", "{}", m.routing_key);
            continue;
        }
        assert_eq!(parts[2], "upserted", "{}", m.routing_key);
        let name = format!("{}.{}", parts[0], parts[1]);
        let entity = registry
            .get(&name)
            .unwrap_or_else(|| panic!("{}: no such entity", m.routing_key));
        let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        entity
            .validate(&body)
            .unwrap_or_else(|e| panic!("{} body invalid: {e:?}", m.routing_key));
        *records.entry(name).or_default() += 1;
    }
    let manifests = pending
        .iter()
        .filter(|p| p.message.routing_key.contains(".batch.completed."))
        .count();
    assert_eq!(manifests, FEEDS.len(), "one batch manifest per file");

    let want: BTreeMap<String, usize> = FEEDS
        .iter()
        .map(|(_, entity, _, valid, _)| (entity.to_string(), *valid as usize))
        .collect();
    assert_eq!(records, want, "valid records by entity");
    for (_, entity, ..) in FEEDS {
        assert!(
            records.get(entity).copied().unwrap_or(0) >= 1,
            "{entity} produced no valid record"
        );
    }
}
