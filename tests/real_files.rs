//! The public files real councils published (../shared/data/real beside the repository, see
//! SOURCES.md there and tests/fixtures/real/SOURCES.md), onboarded with mappings only
//! (tests/fixtures/real/councils): every row maps, or fails for a stated reason.
//!
//! Without ../shared each test prints that it was not run and why; with
//! COUNCIL_BRIDGE_REQUIRE_REAL_DATA=1 (CI) that is a failure.

mod common;

mod real_data;

use std::collections::BTreeMap;
use std::path::Path;

use council_bridge::canonical::Registry;
use council_bridge::config::Config;
use council_bridge::pipeline;
use serde_json::Value;

struct Run {
    reports: Vec<pipeline::FeedReport>,
    bodies: BTreeMap<String, Vec<Value>>,
}

/// Every file of ../shared/data/real the feeds of tests/fixtures/real/council-bridge.yaml read
/// (all that its SOURCES.md lists).
const FILES: &[&str] = &[
    "lambeth_2012-06_invoices_over_500_HEAD.csv",
    "windsor_maidenhead_openlylocal_fixture_title_row.csv",
    "harrogate_2015-04_spend_HEAD.csv",
    "leeds_2011-04_spend_HEAD.csv",
    "trafford_organisation_structure_2024-07.csv",
    "peppol_bis3_ubl_invoice_base-example.xml",
    "hmrc_rti_fps_sample_2014-15.xml",
    "wakefield_2018-q2_supplier_spend_HEAD.csv",
    "gateshead_2015-02_redacted_spend_gzip.csv",
    "north_tyneside_2014-04_spend_HEAD.csv",
    "tfl_2018-19_spend_HEAD.csv",
    "oxford_2014-apr-jun_spend_over_500_HEAD.csv",
    "hyndburn_2017-05_spend_over_250_CR.csv",
    "hyndburn_2024-10_spend_over_250_blank_columns_HEAD.csv",
    "oxford_2012-04_senior_salaries.csv",
    "oxford_2015-04_senior_salaries_blank_column.csv",
    "oxford_2017-jan-mar_procurement_card_HEAD.csv",
    "oxford_2017-oct-nov_procurement_card_HEAD.csv",
    "pensions_ombudsman_2011-09-30_organogram_senior.csv",
    "pensions_ombudsman_2011-09-30_organogram_junior.csv",
    "hmrc_rti_eps_sample_2014-15.xml",
    "peppol_bis3_ubl_creditnote_base-creditnote-correction.xml",
];

/// All feeds run once per test binary (the tests share the result).
fn run_real_files() -> Option<&'static Run> {
    static RUN: std::sync::OnceLock<Option<Run>> = std::sync::OnceLock::new();
    RUN.get_or_init(run_all).as_ref()
}

fn run_all() -> Option<Run> {
    real_data::files(FILES)?;
    let config = Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real/council-bridge.yaml"),
    )
    .unwrap();
    let registry = Registry::load(&config.schemas).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = common::test_store(&dir.path().join("real.db"));
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
    feed_counts(run, council, None)
}

fn feed_counts(run: &Run, council: &str, feed: Option<&str>) -> (u64, u64, u64) {
    let r = run
        .reports
        .iter()
        .find(|r| r.council == council && feed.is_none_or(|f| r.feed == f))
        .unwrap_or_else(|| panic!("{council} {feed:?} ran"));
    assert!(r.error.is_none(), "{council}: {:?}", r.error);
    assert_eq!(
        r.files.len(),
        1,
        "{council}: one file read from ../shared/data/real"
    );
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
    assert_eq!(counts(run, "lambeth"), (94, 94, 0));
    assert_eq!(counts(run, "windsor-maidenhead"), (19, 19, 0));
    assert_eq!(counts(run, "harrogate"), (62, 62, 0));
    assert_eq!(counts(run, "leeds"), (14, 14, 0));
    assert_eq!(counts(run, "trafford"), (80, 80, 0));
    assert_eq!(counts(run, "peppol-example"), (1, 1, 0));
    assert_eq!(counts(run, "hmrc-fps-example"), (2, 2, 0));
    assert_eq!(counts(run, "hmrc-eps-example"), (1, 1, 0));
    assert_eq!(counts(run, "gateshead"), (108, 108, 0));
    assert_eq!(counts(run, "north-tyneside"), (59, 59, 0));
    assert_eq!(counts(run, "tfl"), (59, 59, 0));
    assert_eq!(counts(run, "wakefield"), (21, 21, 0));
    let feed = |c, f| feed_counts(run, c, Some(f));
    assert_eq!(feed("peppol-example", "e-invoices"), (1, 1, 0));
    assert_eq!(feed("peppol-example", "e-credit-notes"), (1, 1, 0));
    assert_eq!(feed("oxford", "spend-over-500"), (119, 119, 0));
    assert_eq!(feed("oxford", "senior-salaries-2012"), (21, 21, 0));
    assert_eq!(feed("oxford", "senior-salaries-2015"), (43, 43, 0));
    assert_eq!(feed("oxford", "procurement-card-gpc"), (59, 59, 0));
    assert_eq!(feed("oxford", "procurement-card-fin"), (39, 39, 0));
    assert_eq!(feed("hyndburn", "spend-2017"), (178, 178, 0));
    assert_eq!(feed("hyndburn", "spend-2024"), (59, 59, 0));
    assert_eq!(feed("pensions-ombudsman", "organogram-senior"), (2, 2, 0));
    assert_eq!(feed("pensions-ombudsman", "organogram-junior"), (7, 7, 0));
    assert_eq!(feed("hmrc-fps-example", "fps-tax-ni"), (2, 2, 0));
    // Every feed read exactly its file, and every file of ../shared/data/real was read (the
    // FPS by two feeds: pay results, and tax and NI records).
    let read: Vec<&str> = run
        .reports
        .iter()
        .flat_map(|r| r.files.iter().map(|f| f.file.as_str()))
        .collect();
    for name in FILES {
        let feeds = if *name == "hmrc_rti_fps_sample_2014-15.xml" {
            2
        } else {
            1
        };
        assert_eq!(
            read.iter().filter(|r| r.ends_with(name)).count(),
            feeds,
            "{name}: {read:?}"
        );
    }
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
        run,
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
        run,
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
    let b = find(run, "harrogate", "transaction_id", "4626511");
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
    let b = find(run, "leeds", "transaction_id", "1104-00001");
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

/// An invoice line's id, quantity, unit, net, VAT category and rate, order line and item name.
type LineFigures<'a> = (&'a str, f64, &'a str, i64, &'a str, f64, &'a str, &'a str);

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
    // Each InvoiceLine, in document order (`each:`); the second is a corrective line. The
    // credit note of the same example carries the same two lines as CreditNoteLine.
    let note = find(run, "peppol-example", "credit_note_id", "Snippet1");
    for doc in [inv, note] {
        let lines: Vec<LineFigures> = doc["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["line_id"].as_str().unwrap(),
                    l["quantity"].as_f64().unwrap(),
                    l["unit_code"].as_str().unwrap(),
                    l["net_minor"].as_i64().unwrap(),
                    l["vat_category"].as_str().unwrap(),
                    l["vat_percent"].as_f64().unwrap(),
                    l["order_line_reference"].as_str().unwrap(),
                    l["item_name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                ("1", 7.0, "DAY", 280000, "S", 25.0, "123", "item name"),
                ("2", -3.0, "DAY", -150000, "S", 25.0, "123", "item name 2"),
            ],
            "{doc}"
        );
        assert_eq!(doc["lines"][1]["description"], "Description 2");
    }
}

#[test]
fn hmrc_fps_employees_with_repeated_ni_letters() {
    let Some(run) = run_real_files() else { return };
    let second = find(run, "hmrc-fps-example", "employee_number", "123-A02");
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
    // The tax and NI records carry every NI letter group, in document order (`each:`).
    let tax_ni: Vec<&Value> = run.bodies["hmrc-fps-example"]
        .iter()
        .filter(|b| b.get("ni_letters").is_some())
        .collect();
    assert_eq!(tax_ni.len(), 2, "one tax and NI record per employee");
    let second = tax_ni
        .iter()
        .find(|b| b["employee_number"] == "123-A02")
        .unwrap();
    let letters: Vec<(&str, i64, i64)> = second["ni_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["letter"].as_str().unwrap(),
                l["gross_earnings_for_nics_in_period_pence"]
                    .as_i64()
                    .unwrap(),
                l["employer_nics_in_period_pence"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(letters, [("A", 0, 0), ("D", 125000, 5763)]);
    assert_eq!(second["tax_period"]["tax_year"], "2014-15");
    assert_eq!(
        second["ni_letters"][0]["earnings_bands_ytd"]["pt_to_uap_pence"],
        120800
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
        err.contains("lambeth.csv is missing")
            && err.contains("COUNCIL_BRIDGE_REQUIRE_REAL_DATA=1"),
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
    for name in &listed {
        assert!(
            FILES.contains(&name.as_str()),
            "{name} is listed in SOURCES.md but no feed in tests/fixtures/real onboards it"
        );
    }
}

#[test]
fn a_period_instead_of_a_day_and_withheld_payees_with_their_reason() {
    let Some(run) = run_real_files() else { return };
    // Gateshead: financial period 201411 is February 2015; the payee is withheld.
    let g = &run.bodies["gateshead"][0];
    assert!(g.get("payment_date").is_none(), "no invented day");
    assert_eq!(
        g["payment_period"],
        serde_json::json!({"start": "2015-02-01", "end": "2015-02-28", "precision": "month"})
    );
    assert!(g.get("supplier_name").is_none());
    assert_eq!(g["null_reasons"]["supplier_name"], "redacted");
    assert!(
        g.get("payment_period_source").is_none(),
        "read from the row"
    );
    // Oxford: every Paid Date is 00:00:00; the quarter comes from the file name, and says so.
    let o = run.bodies["oxford"]
        .iter()
        .find(|b| b["transaction_id"] == "46281108_1")
        .unwrap();
    assert!(o.get("payment_date").is_none());
    assert_eq!(
        o["payment_period"],
        serde_json::json!({"start": "2014-04-01", "end": "2014-06-30", "precision": "quarter"})
    );
    assert_eq!(o["payment_period_source"], "file_name");
    assert!(
        run.bodies["oxford"]
            .iter()
            .any(|b| b["null_reasons"]["supplier_name"] == "redacted"),
        "`Redacted personal information` is a reason, not a name"
    );
}

#[test]
fn snapshots_as_at_a_date_from_the_file_name_and_the_reporting_line() {
    let Some(run) = run_real_files() else { return };
    let po = &run.bodies["pensions-ombudsman"];
    let dpo = po.iter().find(|b| b["post_reference"] == "DPO").unwrap();
    assert_eq!(
        (
            dpo["effective_date"].as_str(),
            dpo["as_at_source"].as_str(),
            dpo["fte"].as_f64(),
            dpo["minimum_salary_pence"].as_i64()
        ),
        (
            Some("2011-09-30"),
            Some("file_name"),
            Some(0.4),
            Some(12000000)
        )
    );
    assert_eq!(
        dpo["null_reasons"]["reports_to_post_reference"],
        "not_applicable"
    );
    let top = po.iter().find(|b| b["post_reference"] == "PO").unwrap();
    assert_eq!(top["salary_cost_of_reports_pence"], 127345550);
    let junior = po
        .iter()
        .find(|b| b["job_title"] == "Casework Director")
        .unwrap();
    assert_eq!(
        (
            junior["reports_to_post_reference"].as_str(),
            junior["number_of_posts"].as_f64()
        ),
        (Some("PO"), Some(0.8))
    );
    let ox = run.bodies["oxford"]
        .iter()
        .find(|b| b["job_title"] == "Chief Executive" && b.get("holder_name").is_some())
        .unwrap();
    assert_eq!(
        ox["effective_period"],
        serde_json::json!({"start": "2012-04-01", "end": "2012-04-30", "precision": "month"})
    );
    assert!(
        ox.get("effective_date").is_none(),
        "April 2012, not an invented day"
    );
    assert_eq!(ox["as_at_source"], "file_name");
}

#[test]
fn procurement_cards_without_a_transaction_id_and_bare_cr_lines() {
    let Some(run) = run_real_files() else { return };
    let cards: Vec<&Value> = run.bodies["oxford"]
        .iter()
        .filter(|b| b.get("merchant_name").is_some())
        .collect();
    assert_eq!(cards.len(), 59 + 39);
    assert_eq!(
        cards
            .iter()
            .filter(|b| b["transaction_id"] == "733949554")
            .count(),
        4,
        "four identical purchases stay four records"
    );
    assert!(
        cards
            .iter()
            .any(|b| b.get("transaction_id").is_none()
                && b["merchant_name"] == "LINKEDIN-377 5007763")
    );
    // Hyndburn 2017: bare CR line ends, two date formats, one line repeated.
    let h: Vec<&Value> = run.bodies["hyndburn"]
        .iter()
        .filter(|b| {
            b["source_reference"]
                .as_str()
                .unwrap()
                .starts_with("hyndburn_2017")
        })
        .collect();
    assert_eq!(h.len(), 178);
    assert!(
        h.iter().any(|b| b["payment_date"] == "2017-04-20"),
        "`20-Apr-17`"
    );
    let eps = &run.bodies["hmrc-eps-example"][0];
    assert_eq!(
        (
            eps["tax_year"].as_str(),
            eps["smp_recovered_pence"].as_i64()
        ),
        (Some("2014-15"), Some(25746))
    );
    assert!(eps.get("account").is_none(), "the bank block is not mapped");
}

/// The golden tests beside the real files' mappings (periods, values from the file name,
/// null reasons): inline inputs, so they run with or without ../shared.
#[test]
fn the_real_file_mappings_golden_tests_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = assert_cmd::Command::cargo_bin("council-bridge")
        .unwrap()
        .current_dir(root)
        .env_remove("AMQP_URL")
        .env_remove("COUNCIL_BRIDGE_STORE")
        .args([
            "--config",
            "tests/fixtures/real/council-bridge.yaml",
            "mapping",
            "test",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for file in [
        "gateshead/spend.tests.yaml",
        "oxford/spend_over_500.tests.yaml",
        "pensions-ombudsman/organogram_senior.tests.yaml",
        "hmrc-fps-example/fps_tax_ni.tests.yaml",
        "peppol-example/ubl_invoice.tests.yaml",
        "peppol-example/ubl_credit_note.tests.yaml",
    ] {
        assert!(
            text.contains(&format!("ok    tests/fixtures/real/councils/{file}:")),
            "{file} did not run:\n{text}"
        );
    }
    assert!(text.trim_end().ends_with("8 passed, 0 failed"), "{text}");
}
