//! The mapping author's toolkit: golden tests beside each mapping (`mapping test`), what a
//! mapping covers (`mapping coverage`) and a new council's folder (`council init`).
//!
//! `every_bundled_golden_test_passes` runs `council-bridge mapping test` over the repository's
//! own mappings/ folder: it is how the golden tests run in CI (`scripts/test.sh` runs
//! `cargo test --all-targets`).

mod common;

use common::{Sandbox, repo, stdout};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last line printed: `N passed, M failed`.
fn closing(text: &str) -> (usize, usize) {
    let last = text.lines().last().unwrap_or_default();
    let parse = |s: Option<&str>| s.and_then(|n| n.trim().parse().ok());
    let (p, f) = last.split_once(" passed, ").unwrap_or(("", ""));
    match (parse(Some(p)), parse(f.strip_suffix(" failed"))) {
        (Some(p), Some(f)) => (p, f),
        _ => panic!("the output does not end with `N passed, M failed`:\n{text}"),
    }
}

#[test]
fn every_bundled_golden_test_passes() {
    let out = assert_cmd::Command::cargo_bin("council-bridge")
        .unwrap()
        .current_dir(repo())
        .env_remove("AMQP_URL")
        .env_remove("COUNCIL_BRIDGE_STORE")
        .env("COUNCIL_BRIDGE_CONFIG", repo().join("council-bridge.yaml"))
        .args(["--log-format", "json", "mapping", "test"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "golden tests failed:\n{text}{}",
        stderr(&out)
    );
    let (passed, failed) = closing(&text);
    assert_eq!(failed, 0, "{text}");
    assert!(passed >= 14, "fewer golden tests than bundled: {text}");
    for file in [
        "mappings/northshire/payroll.tests.yaml",
        "mappings/northshire/hr_employee.tests.yaml",
        "mappings/northshire/supplier_payment.tests.yaml",
        "mappings/riverton/payroll.tests.yaml",
        "mappings/riverton/hr_employee.tests.yaml",
        "mappings/eastborough/hr_workers.tests.yaml",
    ] {
        assert!(
            text.contains(&format!("ok    {file}:")),
            "{file} did not run:\n{text}"
        );
    }
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn a_wrong_expectation_fails_with_a_diff_naming_the_field_and_both_values() {
    let sandbox = Sandbox::new();
    let good =
        std::fs::read_to_string(sandbox.path("mappings/northshire/payroll.tests.yaml")).unwrap();
    let broken = good
        .replacen("gross_pay_pence: 391250", "gross_pay_pence: 391205", 1)
        .replacen(
            "- errors: [{ field: pay_frequency, rule: map }]",
            "- errors: [{ field: pay_frequency, rule: required }]",
            1,
        );
    assert_ne!(broken, good);
    std::fs::write(
        sandbox.path("mappings/northshire/payroll_broken.tests.yaml"),
        &broken,
    )
    .unwrap();
    let out = sandbox
        .cli(None)
        .args([
            "mapping",
            "test",
            "mappings/northshire/payroll_broken.tests.yaml",
        ])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "FAIL  mappings/northshire/payroll_broken.tests.yaml:6  a monthly salary and a negative adjustment"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "      record 1 (input line 3, tests file line 10; expected at line 14): the canonical record differs (- expected, + actual)\n        - gross_pay_pence: 391205\n        + gross_pay_pence: 391250\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("it was rejected, but not as expected\n        - pay_frequency [required]\n        + pay_frequency [map] (column \"Freq\")"),
        "{text}"
    );
    assert!(text.contains("— value \"Q\""), "{text}");
    assert!(
        text.contains(
            "ok    mappings/northshire/payroll_broken.tests.yaml:85  a trailer whose count disagrees"
        ),
        "{text}"
    );
    assert_eq!(closing(&text), (1, 2), "{text}");

    // The same run over the whole folder fails too, and says so last.
    let out = sandbox
        .cli(None)
        .args(["mapping", "test"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let (_, failed) = closing(&stdout(&out));
    assert_eq!(failed, 2);

    // --json for scripts: the diff is structured.
    let json = sandbox.json(&[
        "mapping",
        "test",
        "mappings/northshire/payroll_broken.tests.yaml",
    ]);
    assert_eq!(json["failed"], 2);
    let problem = &json["files"][0]["tests"][0]["problems"][0];
    assert_eq!(problem["kind"], "record_differs");
    assert_eq!(problem["diff"][0]["path"], "gross_pay_pence");
    assert_eq!(problem["diff"][0]["value"], 391205);
    assert_eq!(problem["diff"][1]["value"], 391250);
}

#[test]
fn a_mapping_without_tests_and_a_broken_tests_file_fail_with_their_reason() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .cli(None)
        .args([
            "mapping",
            "test",
            "mappings/eastborough/supplier_payments.yaml",
        ])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  mappings/eastborough/supplier_payments.yaml  no golden tests for this mapping: write mappings/eastborough/supplier_payments.tests.yaml"),
        "{text}"
    );
    assert_eq!(closing(&text), (0, 1));

    std::fs::write(
        sandbox.path("mappings/riverton/typo.tests.yaml"),
        "mapping: payroll.yaml\ntests:\n  - name: a typo\n    input: |\n      H\n    expct: []\n",
    )
    .unwrap();
    let out = sandbox
        .cli(None)
        .args(["mapping", "test", "mappings/riverton/typo.tests.yaml"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  mappings/riverton/typo.tests.yaml  the tests cannot run:"),
        "{text}"
    );
    assert!(
        text.contains("mappings/riverton/typo.tests.yaml:6:"),
        "the mistake's line: {text}"
    );
    assert_eq!(closing(&text), (0, 1));
}

#[test]
fn coverage_lists_mapped_fields_fields_left_empty_and_unused_columns_of_a_sample() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .cli(None)
        .args([
            "mapping",
            "coverage",
            "mappings/northshire/payroll.yaml",
            "--sample",
            "mappings/northshire/samples/payroll/payroll_202610.csv",
        ])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.starts_with("northshire-payroll v1 → payroll.pay_result"),
        "{text}"
    );
    assert!(text.contains("mapped fields (19):"), "{text}");
    assert!(
        text.contains("  gross_pay_pence         ← \"Gross Pay\"  [money]"),
        "{text}"
    );
    assert!(text.contains("required fields missing: none"), "{text}");
    assert!(
        text.contains("optional fields not mapped (3):\n  tax_period.month\n  tax_period.tax_year\n  tax_period.week\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "19 columns; 18 read, 1 unused\nsource columns unused (1):\n  \"Employee Name\"\n"
        ),
        "{text}"
    );

    // XML: the paths of every record of the sample.
    let json = sandbox.json(&[
        "mapping",
        "coverage",
        "mappings/riverton/hr_employee.yaml",
        "--sample",
        "mappings/riverton/samples/hr/HR_EXPORT_20261101.xml",
    ]);
    let columns = &json["coverage"]["columns"];
    assert_eq!(columns["unused"], serde_json::json!(["Gender"]), "{json}");
    assert!(
        columns["used"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("Name/Forename[2]")),
        "{json}"
    );
    // The third forename is mapped but no record of the sample has one.
    assert_eq!(
        columns["absent"],
        serde_json::json!([["forenames", "\"Name/Forename[3]\""]])
    );

    // Without a sample: fields only.
    let out = sandbox
        .cli(None)
        .args(["mapping", "coverage", "mappings/riverton/payroll.yaml"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("give --sample FILE"), "{text}");
}

#[test]
fn council_init_creates_the_folder_once_and_refuses_a_bad_id() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .cli(None)
        .args([
            "council",
            "init",
            "fenwick-vale",
            "--name",
            "Fenwick Vale District Council",
        ])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("created council `fenwick-vale` (Fenwick Vale District Council)"),
        "{text}"
    );
    let dir = sandbox.path("mappings/fenwick-vale");
    let yaml = std::fs::read_to_string(dir.join("council.yaml")).unwrap();
    assert!(yaml.starts_with("council: fenwick-vale\nname: \"Fenwick Vale District Council\"\n"));
    assert!(
        yaml.contains("# feeds:\n#   payroll:\n#     mapping: payroll.yaml"),
        "{yaml}"
    );
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.starts_with("# Fenwick Vale District Council (`fenwick-vale`)"));
    assert!(readme.contains("council-bridge mapping test mappings/fenwick-vale"));
    assert!(readme.contains("council-bridge run --council fenwick-vale"));
    assert!(dir.join("samples").is_dir());

    // The stub is a valid council: the configuration still loads, with the new council in it.
    let out = sandbox
        .cli(None)
        .args(["mapping", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A second time: refused, nothing changed.
    std::fs::write(
        dir.join("council.yaml"),
        "council: fenwick-vale\nname: Edited\n",
    )
    .unwrap();
    let out = sandbox
        .cli(None)
        .args(["council", "init", "fenwick-vale"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("council `fenwick-vale` already exists"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("council.yaml")).unwrap(),
        "council: fenwick-vale\nname: Edited\n"
    );

    // Ids are part of routing keys.
    for bad in ["Fenwick", "fen_wick", "fen.wick", "-fenwick"] {
        let out = sandbox
            .cli(None)
            .args(["council", "init", "--", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(
            stderr(&out).contains(&format!("`{bad}` cannot be a council id")),
            "{bad}: {}",
            stderr(&out)
        );
        assert!(!sandbox.path(&format!("mappings/{bad}")).exists());
    }

    // Without --name, the name comes from the id.
    let json = sandbox.json(&["council", "init", "north-march"]);
    assert_eq!(json["name"], "North March");
}
