//! The onboarding path through the CLI: scaffold a draft from a sample, check it, preview it.

mod common;
mod real_data;

use common::{Sandbox, stdout};

#[test]
fn scaffold_check_and_preview_a_real_file() {
    let Some(sample) = real_data::file("leeds_2011-04_spend_HEAD.csv") else {
        return;
    };
    let sandbox = Sandbox::new();
    let draft = sandbox.path("mappings/northshire/leeds_draft.yaml");
    let out = sandbox
        .cli(None)
        .args([
            "mapping",
            "scaffold",
            "--entity",
            "finance.supplier_payment",
            "--council",
            "leeds",
            "--sample",
        ])
        .arg(&sample)
        .arg("--out")
        .arg(&draft)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&draft).unwrap();
    assert!(
        text.contains("entity: finance.supplier_payment")
            && text.contains("from: \"Transaction number\""),
        "{text}"
    );
    assert!(
        text.contains("{ date: \"d-MMM-yyyy\" }") || text.contains("{ date: \"dd-MMM-yyyy\" }"),
        "{text}"
    );

    let again = sandbox
        .cli(None)
        .args([
            "mapping",
            "scaffold",
            "--entity",
            "finance.supplier_payment",
            "--sample",
        ])
        .arg(&sample)
        .arg("--out")
        .arg(&draft)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(1),
        "a draft is never written over a file"
    );

    let check = sandbox
        .cli(None)
        .args(["mapping", "check"])
        .arg(&draft)
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "the draft compiles as it is: {}",
        stdout(&check)
    );

    let preview = sandbox
        .cli(None)
        .args(["mapping", "preview"])
        .arg(&draft)
        .arg("--sample")
        .arg(&sample)
        .args(["--rows", "3"])
        .output()
        .unwrap();
    assert_eq!(preview.status.code(), Some(0), "{}", stdout(&preview));
    let table = stdout(&preview);
    assert!(
        table.contains("3 record(s) shown, 3 ok")
            && table.contains("\"A & A Electrical Distributors Ltd\""),
        "{table}"
    );

    let json = sandbox.json(&[
        "mapping",
        "preview",
        draft.to_str().unwrap(),
        "--sample",
        sample.to_str().unwrap(),
        "--rows",
        "2",
    ]);
    assert_eq!(json["records"].as_array().map(Vec::len), Some(2), "{json}");
}

#[test]
fn preview_shows_why_a_row_fails_and_exits_1() {
    let sandbox = Sandbox::new();
    let mapping = sandbox.path("mappings/northshire/hr_employee.yaml");
    let sample = sandbox.path("mappings/northshire/samples/hr/employees_20261101.csv");
    let out = sandbox
        .cli(None)
        .args(["mapping", "preview"])
        .arg(&mapping)
        .arg("--sample")
        .arg(&sample)
        .args(["--rows", "12"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("9 ok, 3 failed"), "{text}");
    assert!(text.contains("✗ date") || text.contains("date:"), "{text}");
}

#[test]
fn scaffold_refuses_an_unknown_entity() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .cli(None)
        .args([
            "mapping",
            "scaffold",
            "--entity",
            "finance.suplier_payment",
            "--sample",
            "x.csv",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no canonical entity `finance.suplier_payment`")
    );
}
