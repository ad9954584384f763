//! The command line without a broker: what an officer sees when files are wrong.

mod common;

use common::{Sandbox, stdout};

#[test]
fn without_a_broker_the_run_completes_into_the_outbox() {
    let sandbox = Sandbox::new();
    let out = sandbox.cli(None).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("222 messages wait in the outbox: no broker is configured"),
        "{text}"
    );
    assert!(
        text.contains("PAYEXT_202610.txt  processed: read 9, valid 7, rejected 2"),
        "the fixed-width extract of Riverton: {text}"
    );
    assert!(
        text.contains("HR_EXPORT_20261101.xml  processed: read 6, valid 4, rejected 2"),
        "the XML HR export of Riverton: {text}"
    );
    assert!(
        text.contains("rejected: nino schema ×1, surname required ×1"),
        "{text}"
    );
    assert!(
        text.contains("employees_20261101.csv  processed: read 12, valid 9, rejected 3"),
        "{text}"
    );
    assert!(
        text.contains("supplier_payments_2026-11.csv  processed: read 12, valid 10, rejected 2"),
        "{text}"
    );
}

#[test]
fn a_file_missing_a_mapped_column_fails_whole_naming_the_column_and_the_run_exits_1() {
    let sandbox = Sandbox::new();
    let ap = sandbox.path("mappings/northshire/samples/ap/supplier_payments_2026-11.csv");
    let text = std::fs::read_to_string(&ap)
        .unwrap()
        .replacen("Payment Date", "Paid On", 1);
    std::fs::write(&ap, text).unwrap();
    let out = sandbox
        .cli(None)
        .args([
            "run",
            "--council",
            "northshire",
            "--feed",
            "supplier-payments",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("supplier_payments_2026-11.csv  FAILED:"),
        "{text}"
    );
    assert!(
        text.contains("field `payment_date`: the file has no column \"Payment Date\""),
        "{text}"
    );
    // Nothing of the file is kept, and it is not marked processed: the next run reads it again.
    let counts = sandbox.json(&["outbox", "status"]);
    assert_eq!(counts["pending"], 0);
    let again = sandbox
        .cli(None)
        .args([
            "run",
            "--council",
            "northshire",
            "--feed",
            "supplier-payments",
        ])
        .output()
        .unwrap();
    assert!(
        stdout(&again).contains("FAILED"),
        "not skipped as processed"
    );
}

#[test]
fn a_bad_encoding_byte_fails_that_row_only() {
    let sandbox = Sandbox::new();
    let ap = sandbox.path("mappings/northshire/samples/ap/supplier_payments_2026-11.csv");
    let mut bytes = std::fs::read(&ap).unwrap();
    // Line 3's supplier name gets a byte that is not UTF-8 (a Windows-1252 é).
    let line3 = bytes
        .split(|b| *b == b'\n')
        .take(2)
        .map(|l| l.len() + 1)
        .sum::<usize>();
    let comma = line3 + bytes[line3..].iter().position(|b| *b == b',').unwrap();
    let name = comma + 1 + bytes[comma + 1..].iter().position(|b| *b == b',').unwrap() + 2;
    bytes[name] = 0xE9;
    std::fs::write(&ap, bytes).unwrap();
    let out = sandbox
        .cli(None)
        .args([
            "run",
            "--council",
            "northshire",
            "--feed",
            "supplier-payments",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("read 12, valid 9, rejected 3"), "{text}");
    assert!(text.contains("decode ×1"), "{text}");
    let failures = sandbox.failures();
    let decode = failures.iter().find(|f| f["stage"] == "decode").unwrap();
    assert_eq!(decode["line"], 3);
    let show = sandbox
        .cli(None)
        .args(["failures", "show", &decode["id"].to_string()])
        .output()
        .unwrap();
    let show = stdout(&show);
    assert!(
        show.contains("column \"Supplier Name\" has bytes that are not valid UTF-8"),
        "{show}"
    );
    assert!(show.contains("line 3"), "{show}");
}

#[test]
fn mapping_check_exits_1_and_names_the_line() {
    let sandbox = Sandbox::new();
    let mapping = sandbox.path("mappings/northshire/payroll.yaml");
    let text = std::fs::read_to_string(&mapping)
        .unwrap()
        .replacen("[money]", "[mony]", 1);
    std::fs::write(&mapping, text).unwrap();
    let out = sandbox
        .cli(None)
        .args(["mapping", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("payroll.yaml:")
            && text.contains("unknown transform `mony`. Did you mean `money`?"),
        "{text}"
    );
    assert!(
        text.contains("ok    ") && text.contains("hr_employee.yaml"),
        "the other mappings are still checked: {text}"
    );
}

#[test]
fn force_reads_a_processed_file_again_without_new_messages() {
    let sandbox = Sandbox::new();
    sandbox
        .cli(None)
        .args(["run", "--council", "northshire", "--feed", "payroll"])
        .assert()
        .success();
    let out = sandbox
        .cli(None)
        .args([
            "run",
            "--council",
            "northshire",
            "--feed",
            "payroll",
            "--force",
        ])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("new messages 0 (13 already in the outbox)"),
        "{text}"
    );
}

#[test]
fn a_drop_folder_archives_what_it_read_rejects_what_it_could_not_and_reads_gzip() {
    use std::io::Write;
    let sandbox = Sandbox::new();
    let council = sandbox.path("mappings/northshire/council.yaml");
    let yaml = std::fs::read_to_string(&council).unwrap().replace(
        "    input: samples/ap/*.csv\n    settle_seconds: 0\n",
        "    input: samples/ap/*.csv\n    settle_seconds: 0\n    archive: archive/ap\n    rejected: rejected/ap\n",
    );
    std::fs::write(&council, yaml).unwrap();
    let ap = sandbox.path("mappings/northshire/samples/ap");
    let original = std::fs::read(ap.join("supplier_payments_2026-11.csv")).unwrap();
    // The same export again, gzip-compressed but named .csv, and a file from another system.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&original).unwrap();
    std::fs::write(
        ap.join("supplier_payments_2026-11_resend.csv"),
        gz.finish().unwrap(),
    )
    .unwrap();
    std::fs::write(ap.join("wrong_export.csv"), "Invoice,Total\nA1,5.00\n").unwrap();

    let out = sandbox
        .cli(None)
        .args([
            "run",
            "--council",
            "northshire",
            "--feed",
            "supplier-payments",
        ])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "one file could not be read: {text}"
    );
    assert!(
        text.contains("supplier_payments_2026-11.csv  processed: read 12, valid 10"),
        "{text}"
    );
    assert!(text.contains("supplier_payments_2026-11_resend.csv  processed: read 12, valid 10, rejected 2, new messages 0 (10 already in the outbox)"), "{text}");
    assert!(text.contains("wrong_export.csv  FAILED"), "{text}");

    let archived: Vec<_> = std::fs::read_dir(sandbox.path("mappings/northshire/archive/ap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(archived.len(), 2, "{archived:?}");
    assert!(
        archived
            .iter()
            .any(|p| std::fs::read(p).unwrap() == original),
        "moved byte for byte"
    );
    let rejected: Vec<_> = std::fs::read_dir(sandbox.path("mappings/northshire/rejected/ap"))
        .unwrap()
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        std::fs::read_dir(&ap).unwrap().count(),
        0,
        "the drop folder is empty"
    );
    assert!(text.contains("moved to "), "{text}");
}
