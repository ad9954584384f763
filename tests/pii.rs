//! No log line or failure view shows a personal value of the sample data. The personal values
//! are found the way the product masks them: columns feeding `x-pii` canonical fields.

mod common;

use common::Sandbox;

#[test]
fn logs_and_failure_views_never_show_personal_values() {
    let sandbox = Sandbox::new();
    let personal = common::personal_values(&sandbox);
    assert!(
        personal.len() > 50,
        "the samples hold personal data to look for ({})",
        personal.len()
    );

    let mut seen = String::new();
    let run = sandbox
        .cli(None)
        .env("RUST_LOG", "debug")
        .arg("run")
        .output()
        .unwrap();
    seen.push_str(&String::from_utf8_lossy(&run.stdout));
    seen.push_str(&String::from_utf8_lossy(&run.stderr));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("row rejected"),
        "the logs were captured"
    );
    let list = sandbox
        .cli(None)
        .args(["failures", "list", "--json"])
        .output()
        .unwrap();
    seen.push_str(&String::from_utf8_lossy(&list.stdout));
    let failures: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(failures.as_array().unwrap().len(), 13);
    for f in failures.as_array().unwrap() {
        let id = f["id"].to_string();
        for args in [
            vec!["failures", "show", &id],
            vec!["failures", "show", &id, "--json"],
        ] {
            let show = sandbox.cli(None).args(&args).output().unwrap();
            assert!(show.status.success());
            seen.push_str(&String::from_utf8_lossy(&show.stdout));
            seen.push_str(&String::from_utf8_lossy(&show.stderr));
        }
    }
    let leaked: Vec<&String> = personal
        .iter()
        .filter(|v| seen.contains(v.as_str()))
        .collect();
    assert!(leaked.is_empty(), "personal values shown: {leaked:?}");
}
