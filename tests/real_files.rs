//! The public files real councils published (../shared/data/real beside the repository, see
//! SOURCES.md there and tests/fixtures/real/SOURCES.md), onboarded with mappings only
//! (tests/fixtures/real/councils): every row maps, or fails for a stated reason.
//!
//! Without ../shared each test prints that it was not run and why; with
//! COUNCIL_BRIDGE_REQUIRE_REAL_DATA=1 (CI) that is a failure.

mod real_data;

use std::collections::BTreeMap;
use std::path::Path;

use council_bridge::canonical::Registry;
use council_bridge::config::Config;
use council_bridge::pipeline;
use council_bridge::store::Store;
use serde_json::Value;

struct Run {
    reports: Vec<pipeline::FeedReport>,
    bodies: BTreeMap<String, Vec<Value>>,
}

/// The files the seven feeds of tests/fixtures/real/council-bridge.yaml read.
const FILES: &[&str] = &[
    "lambeth_2012-06_invoices_over_500_HEAD.csv",
    "windsor_maidenhead_openlylocal_fixture_title_row.csv",
    "harrogate_2015-04_spend_HEAD.csv",
    "leeds_2011-04_spend_HEAD.csv",
    "trafford_organisation_structure_2024-07.csv",
    "peppol_bis3_ubl_invoice_base-example.xml",
    "hmrc_rti_fps_sample_2014-15.xml",
];

fn run_real_files() -> Option<Run> {
    real_data::files(FILES)?;
    let config = Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real/council-bridge.yaml"),
    )
    .unwrap();
    let registry = Registry::load(&config.schemas).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("real.db")).unwrap();
    let reports = pipeline::process(&config, &registry, &store, None, None, false);
    let mut bodies: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in store.pending(100_000).unwrap() {
        if m.message.routing_key.contains(".batch.") {
            continue;
        }
        bodies
            .entry(m.council.clone())
            .or_default()
            .push(serde_json::from_slice(&m.message.body).unwrap());
    }
    Some(Run { reports, bodies })
}

fn counts(run: &Run, council: &str) -> (u64, u64, u64) {
    let r = run
        .reports
        .iter()
        .find(|r| r.council == council)
        .unwrap_or_else(|| panic!("{council} ran"));
    assert!(r.error.is_none(), "{council}: {:?}", r.error);
    assert_eq!(r.files.len(), 1, "{council}: one file read from ../shared/data/real");
    let f = &r.files[0];
    (f.read, f.valid, f.rejected)
}

fn find<'a>(run: &'a Run, council: &str, key: &str, value: &str) -> &'a Value {
    run.bodies[council]
        .iter()
        .find(|b| b[key] == value)
        .unwrap_or_else(|| panic!("{council}: no record with {key} = {value}"))
}

#[test]
fn every_row_of_every_real_file_maps() {
    let Some(run) = run_real_files() else { return };
    // (rows read, valid, rejected): the files' data rows, title blocks and blank rows excluded.
    assert_eq!(counts(&run, "lambeth"), (94, 94, 0));
    assert_eq!(counts(&run, "windsor-maidenhead"), (19, 19, 0));
    assert_eq!(counts(&run, "harrogate"), (62, 62, 0));
    assert_eq!(counts(&run, "leeds"), (14, 14, 0));
    assert_eq!(counts(&run, "trafford"), (80, 80, 0));
    assert_eq!(counts(&run, "peppol-example"), (1, 1, 0));
    assert_eq!(counts(&run, "hmrc-fps-example"), (2, 2, 0));
    assert_eq!(
        run.bodies["harrogate"].len(),
        62,
        "identical lines of one transaction stay distinct records"
    );
}

#[test]
fn lambeth_title_block_mojibake_and_quoted_thousands() {
    let Some(run) = run_real_files() else { return };
    let first = &run.bodies["lambeth"][0];
    assert_eq!(first["supplier_name"], "170 Community Project");
    assert_eq!(first["payment_date"], "2012-06-08");
    assert_eq!(first["net_pence"], 153424);
    assert_eq!(
        first["source_reference"], "lambeth_2012-06_invoices_over_500_HEAD.csv:11",
        "line 11: after the 9-line report block and the header"
    );
    // Two identical invoice lines (lines 13 and 14) are two records.
    assert_eq!(
        run.bodies["lambeth"]
            .iter()
            .filter(|b| b["supplier_name"] == "229 Mitcham Lane Ltd" && b["net_pence"] == 492857)
            .count(),
        2
    );
}

#[test]
fn windsor_maidenhead_windows_1252_title_row_and_blank_rows() {
    let Some(run) = run_real_files() else { return };
    let b = find(
        &run,
        "windsor-maidenhead",
        "supplier_name",
        "Idox Software Limited",
    );
    assert_eq!(
        (
            b["amount_pence"].as_i64(),
            b["payment_date"].as_str(),
            b["capital_or_revenue"].as_str()
        ),
        (Some(100000), Some("2010-03-17"), Some("capital"))
    );
    let bare = find(
        &run,
        "windsor-maidenhead",
        "supplier_name",
        "2Simple Software Ltd",
    );
    assert_eq!(bare["amount_pence"], 59900, "`599` without decimals");
    let one_decimal = run.bodies["windsor-maidenhead"]
        .iter()
        .find(|b| b["amount_pence"] == 80640);
    assert!(one_decimal.is_some(), "`806.4` is £806.40");
}

#[test]
fn harrogate_labels_that_lie_and_negative_lines() {
    let Some(run) = run_real_files() else { return };
    let b = find(&run, "harrogate", "transaction_id", "4626511");
    assert_eq!(
        b["service_area"], "Bereavement Services",
        "`Service Code` holds the service name"
    );
    assert_eq!(b["expense_type"], "Fuel/Oil");
    assert!(
        run.bodies["harrogate"]
            .iter()
            .any(|b| b["net_pence"] == -5613),
        "credit lines keep their sign"
    );
}

#[test]
fn leeds_dd_mon_yyyy_dates_leading_zero_codes_and_trailing_empty_columns() {
    let Some(run) = run_real_files() else { return };
    let b = find(&run, "leeds", "transaction_id", "1104-00001");
    assert_eq!(
        (
            b["payment_date"].as_str(),
            b["net_pence"].as_i64(),
            b["cost_centre"].as_str()
        ),
        (Some("2011-04-06"), Some(534000), Some("205"))
    );
    assert_eq!(b["supplier_name"], "A & A Electrical Distributors Ltd");
}

#[test]
fn trafford_na_placeholders_become_absent_values() {
    let Some(run) = run_real_files() else { return };
    let ceo = run.bodies["trafford"]
        .iter()
        .find(|b| b["level"] == 1)
        .unwrap();
    assert_eq!(ceo["holder_name"], "Sara Todd");
    let director = run.bodies["trafford"]
        .iter()
        .find(|b| b["job_title"] == "Programme Director")
        .unwrap();
    assert!(
        director.get("holder_name").is_none(),
        "NA is no name, not a name"
    );
    assert_eq!(director["maximum_salary_pence"], 9890800);
    assert_eq!(director["vacant"], false);
    assert_eq!(
        run.bodies["trafford"]
            .iter()
            .filter(|b| b["vacant"] == true)
            .count(),
        3
    );
}

#[test]
fn peppol_ubl_invoice_namespaced_elements_and_euro_amounts_in_minor_units() {
    let Some(run) = run_real_files() else { return };
    let inv = &run.bodies["peppol-example"][0];
    assert_eq!(inv["invoice_id"], "Snippet1");
    assert_eq!(
        (
            inv["currency"].as_str(),
            inv["payable_minor"].as_i64(),
            inv["tax_minor"].as_i64()
        ),
        (Some("EUR"), Some(165625), Some(33125))
    );
    assert_eq!(inv["supplier"]["vat_number"], "GB1232434");
    assert_eq!(inv["customer"]["country"], "SE");
}

#[test]
fn hmrc_fps_employees_with_repeated_ni_letters() {
    let Some(run) = run_real_files() else { return };
    let second = find(&run, "hmrc-fps-example", "employee_number", "123-A02");
    assert_eq!(
        (
            second["tax_code"].as_str(),
            second["net_pay_pence"].as_i64(),
            second["tax_period"]["month"].as_i64()
        ),
        (Some("D1"), Some(62590), Some(3))
    );
    assert_eq!(
        second["ni_letter"], "A",
        "the first of the employee's two NI letters"
    );
    assert!(
        run.bodies["hmrc-fps-example"]
            .iter()
            .all(|b| b.get("nino").is_none()),
        "pay results carry no NINO"
    );
}

#[test]
fn a_missing_real_file_is_not_run_here_and_a_failure_where_required() {
    let nowhere = tempfile::tempdir().unwrap();
    assert_eq!(
        real_data::locate(nowhere.path(), "lambeth.csv", false),
        Ok(None)
    );
    let err = real_data::locate(nowhere.path(), "lambeth.csv", true).unwrap_err();
    assert!(
        err.contains("lambeth.csv is missing") && err.contains("COUNCIL_BRIDGE_REQUIRE_REAL_DATA=1"),
        "{err}"
    );
}

#[test]
fn sources_md_lists_every_real_file_and_each_is_there() {
    let Some(dir) = real_data::all() else { return };
    let text = std::fs::read_to_string(dir.join("SOURCES.md")).unwrap();
    let listed = real_data::listed(&text);
    assert!(listed.len() >= 22, "{listed:?}");
    for name in std::fs::read_dir(&dir).unwrap() {
        let name = name.unwrap().file_name().into_string().unwrap();
        assert!(
            name == "SOURCES.md" || listed.contains(&name),
            "{name} in ../shared/data/real is not in its SOURCES.md"
        );
    }
}
