//! The HR, recruitment and pensions side of the canonical catalogue, end to end through the
//! Westmarch sample council (mappings/westmarch): every feed's file is processed with the exact
//! counts below, every entity produces at least one valid record, and every message body in
//! the outbox validates against its entity's schema. No broker is needed: messages wait in a
//! private store's outbox.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use council_bridge::canonical::Registry;
use council_bridge::config::Config;
use council_bridge::pipeline;
use serde_json::Value;

/// Per feed: (feed, file, rows read, valid, rejected, canonical entity).
const FEEDS: [(&str, &str, u64, u64, u64, &str); 17] = [
    ("posts", "organogram_2026-10.csv", 4, 4, 0, "hr.post"),
    (
        "org-units",
        "org_units_20261101.csv",
        6,
        6,
        0,
        "hr.org_unit",
    ),
    ("people", "people_20261101.csv", 6, 6, 0, "hr.person"),
    (
        "employments",
        "assignments_20261101.csv",
        6,
        6,
        0,
        "hr.employment",
    ),
    ("absences", "absence_2026-10.csv", 6, 6, 0, "hr.absence"),
    (
        "timesheets",
        "timesheets_2026-wk44.csv",
        5,
        5,
        0,
        "hr.timesheet_entry",
    ),
    (
        "expense-claims",
        "expense_claims_2026-10.csv",
        4,
        4,
        0,
        "hr.expense_claim",
    ),
    (
        "training",
        "training_2026-10.csv",
        5,
        5,
        0,
        "hr.training_record",
    ),
    (
        "hs-incidents",
        "hs_incidents_2026-10.csv",
        4,
        4,
        0,
        "hr.hs_incident",
    ),
    ("vacancies", "vacancies_20261101.csv", 4, 4, 0, "hr.vacancy"),
    (
        "applications",
        "applications_20261101.csv",
        5,
        5,
        0,
        "hr.application",
    ),
    (
        "starters",
        "starters_2026-11.csv",
        4,
        4,
        0,
        "hr.starter_event",
    ),
    ("leavers", "leavers_2026-10.csv", 4, 4, 0, "hr.leaver_event"),
    ("changes", "changes_2026-10.csv", 5, 5, 0, "hr.change_event"),
    (
        "bank-details",
        "bank_details_20261101.csv",
        4,
        4,
        0,
        "hr.bank_details",
    ),
    (
        "pension-members",
        "lgps_members_20261101.csv",
        5,
        5,
        0,
        "pensions.membership",
    ),
    (
        "pension-contributions",
        "iconnect_return_2026-10.csv",
        5,
        5,
        0,
        "pensions.contribution_return",
    ),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Records by entity name, each body validated against its entity.
fn run_westmarch() -> (Vec<pipeline::FeedReport>, BTreeMap<String, Vec<Value>>) {
    let config = Config::load(&repo().join("council-bridge.yaml")).unwrap();
    let registry = Registry::load(&config.schemas).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = common::test_store(&dir.path().join("catalogue.db"));
    let reports = pipeline::process(&config, &registry, &store, Some("westmarch"), None, false);

    let mut records: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut manifests = 0;
    for pending in store.pending(10_000).unwrap() {
        let m = &pending.message;
        assert_eq!(pending.council, "westmarch");
        assert!(m.routing_key.ends_with(".westmarch"), "{}", m.routing_key);
        let body: Value = serde_json::from_slice(&m.body).unwrap();
        if m.routing_key.contains(".batch.completed.") {
            manifests += 1;
            continue;
        }
        let parts: Vec<&str> = m.routing_key.split('.').collect();
        let name = format!("{}.{}", parts[0], parts[1]);
        let entity = registry
            .get(&name)
            .unwrap_or_else(|| panic!("no entity for routing key {}", m.routing_key));
        assert!(m.routing_key.starts_with(&format!("{name}.")));
        entity
            .validate(&body)
            .unwrap_or_else(|e| panic!("{name}: invalid body {body}: {e:?}"));
        records.entry(name).or_default().push(body);
    }
    assert_eq!(manifests, FEEDS.len(), "one batch manifest per file");
    (reports, records)
}

fn find<'a>(
    records: &'a BTreeMap<String, Vec<Value>>,
    entity: &str,
    field: &str,
    id: &str,
) -> &'a Value {
    records[entity]
        .iter()
        .find(|r| r[field] == id)
        .unwrap_or_else(|| panic!("{entity} {field}={id} not found"))
}

#[test]
fn westmarch_feeds_give_every_hr_and_pensions_entity_valid_records() {
    let (reports, records) = run_westmarch();

    assert_eq!(reports.len(), FEEDS.len(), "one report per Westmarch feed");
    for (feed, file, read, valid, rejected, entity) in FEEDS {
        let report = reports
            .iter()
            .find(|r| r.feed == feed)
            .unwrap_or_else(|| panic!("no report for feed {feed}"));
        assert!(report.error.is_none(), "{feed}: {:?}", report.error);
        assert_eq!(report.files.len(), 1, "{feed}: one sample file");
        let f = &report.files[0];
        assert_eq!(f.file, file, "{feed}");
        assert_eq!(f.status, "processed", "{feed}: {:?}", f.reason);
        assert_eq!(
            (f.read, f.valid, f.rejected),
            (read, valid, rejected),
            "{feed} ({file}): read, valid, rejected; rejections: {:?}",
            f.rejected_by_reason
        );
        let got = records.get(entity).map_or(0, Vec::len) as u64;
        assert!(got >= 1, "{entity} produced no valid record");
        assert_eq!(got, valid, "{entity}: one message per valid row");
    }

    let contributions = reports
        .iter()
        .find(|r| r.feed == "pension-contributions")
        .unwrap();
    assert_eq!(
        contributions.files[0].control.as_ref().unwrap()["matches"],
        true,
        "the i-Connect trailer (count and employee contributions) agrees"
    );
}

#[test]
fn westmarch_quirks_are_normalised() {
    let (_, records) = run_westmarch();

    // Placeholders become null reasons instead of values.
    let council = find(&records, "hr.org_unit", "org_unit_id", "WDC");
    assert!(council.get("parent_org_unit_id").is_none());
    assert_eq!(
        council["null_reasons"]["parent_org_unit_id"],
        "not_applicable"
    );
    let awaiting_nino = find(&records, "hr.person", "person_id", "P100235");
    assert!(awaiting_nino.get("nino").is_none());
    assert_eq!(awaiting_nino["null_reasons"]["nino"], "not_available");
    assert_eq!(awaiting_nino["surname"], "Wiśniewski");
    let vacant_manager = find(&records, "hr.employment", "employment_id", "E100233-1");
    assert_eq!(
        vacant_manager["null_reasons"]["manager_employment_id"],
        "vacant"
    );
    let casual = find(&records, "hr.employment", "employment_id", "E100233-2");
    assert!(casual.get("fte").is_none());
    assert_eq!(casual["null_reasons"]["fte"], "not_applicable");
    let with_manager = find(&records, "hr.employment", "employment_id", "E100231-1");
    assert!(
        with_manager.get("null_reasons").is_none(),
        "no reason without a placeholder"
    );

    // Personal details normalised to their canonical forms.
    let spaced = find(&records, "hr.person", "person_id", "P100232");
    assert_eq!(spaced["nino"], "WP119830A");
    assert_eq!(spaced["home_address"]["postcode"], "WM2 8NU");
    assert_eq!(spaced["contact"]["home_phone"], "01632960218");

    // Windows-1252 money with a pound sign, brackets for a correction, "Nil" VAT.
    let hotel = find(&records, "hr.expense_claim", "claim_id", "EXP-26-10-0047");
    assert_eq!(hotel["total_pence"], 121240);
    assert_eq!(hotel["vat_pence"], 20207);
    assert_eq!(hotel["route"], "accounts_payable");
    let correction = find(&records, "hr.expense_claim", "claim_id", "EXP-26-10-0039");
    assert_eq!(correction["total_pence"], -650);
    assert_eq!(correction["vat_pence"], 0);

    // An open sickness absence (Windows-1252 file): no end date, special-category fields kept.
    let open = find(&records, "hr.absence", "absence_id", "ABS-2026-0421");
    assert_eq!(open["absence_type"], "sickness");
    assert!(open.get("end_date").is_none());
    assert_eq!(open["certified"], true);

    // Title row skipped; codes mapped.
    let sleep_in = find(&records, "hr.timesheet_entry", "entry_id", "TS-44-000121");
    assert_eq!(sleep_in["time_type"], "sleep_in");
    assert_eq!(sleep_in["unit"], "units");

    // Sort codes in three spellings → 6 digits; leading zeros of account numbers kept.
    let bank = find(&records, "hr.bank_details", "payroll_id", "100240");
    assert_eq!(bank["sort_code"], "207164");
    assert_eq!(bank["account_number"], "07734512");

    // LGPS section codes and the employer code's leading zero.
    let fifty = find(&records, "pensions.membership", "payroll_id", "100233");
    assert_eq!(fifty["section"], "50_50");
    assert_eq!(fifty["employer_code"], "0417");
    let app = find(
        &records,
        "pensions.contribution_return",
        "payroll_id",
        "100232",
    );
    assert_eq!(app["assumed_pensionable_pay_pence"], 61244);
    assert_eq!(app["care_pay_pence"], 212271);
    assert_eq!(app["period"]["end"], "2026-10-31");

    // Nested objects filled from flat columns.
    let riddor = find(&records, "hr.hs_incident", "incident_id", "HS-2026-0148");
    assert_eq!(riddor["riddor_reportable"], true);
    assert_eq!(riddor["injury"]["days_lost"], 10);
    assert_eq!(riddor["affected_person"]["role"], "employee");
    let near_miss = find(&records, "hr.hs_incident", "incident_id", "HS-2026-0151");
    assert!(near_miss.get("affected_person").is_none());
    assert!(near_miss.get("injury").is_none());
    let offer = find(
        &records,
        "hr.application",
        "application_id",
        "APP-0311-0007",
    );
    assert_eq!(offer["offer"]["salary_pence"], 3128400);
    assert_eq!(offer["applicant"]["email"], "lewis.abara@example.com");
    let p45 = find(&records, "hr.starter_event", "employment_id", "E100240-1");
    assert_eq!(p45["p45"]["pay_to_date_pence"], 1680250);
}
