//! The `expr` transform (jq programs run by jaq): arithmetic across columns, string building,
//! conditions, errors at compile time with the field name, errors per record as `expr` field
//! errors that never contain the value, and no access to anything outside the program.

use std::path::Path;

use council_bridge::canonical::Registry;
use council_bridge::mapping::{Mapping, MappingError, compile_str};

fn registry() -> Registry {
    Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap()
}

fn record(header: &[&str], values: &[&str]) -> council_bridge::formats::SourceRecord {
    council_bridge::formats::SourceRecord {
        locator: council_bridge::formats::Locator {
            file: "f.csv".into(),
            line: 2,
            row: 1,
        },
        header: std::sync::Arc::new(council_bridge::formats::Header::new(
            header.iter().map(|s| s.to_string()).collect(),
        )),
        values: values.iter().map(|s| s.to_string()).collect(),
    }
}

const HEAD: &str = "mapping: t
version: 1
entity: hr.employment
source: { format: csv }
key: [employment_id]
fields:
  employment_id: { from: Ref, required: true }
  person_id: { from: Person, required: true }
  start_date: { from: Start, transforms: [{ date: dd/mm/yyyy }], required: true }
  status: { value: active }
";

const HEADER: [&str; 8] = [
    "Ref",
    "Person",
    "Start",
    "Hours",
    "Contract Hours",
    "Title",
    "Grade",
    "Main",
];

fn mapping(fields: &str) -> Mapping {
    compile_str("t.yaml", &format!("{HEAD}{fields}"), &registry()).unwrap_or_else(|e| panic!("{e}"))
}

fn diagnostics(fields: &str) -> Vec<String> {
    match compile_str("t.yaml", &format!("{HEAD}{fields}"), &registry()) {
        Ok(_) => panic!("the mapping should not compile"),
        Err(MappingError::Invalid { diagnostics, .. }) => {
            diagnostics.iter().map(ToString::to_string).collect()
        }
        Err(e) => panic!("{e}"),
    }
}

fn row(hours: &str, contract: &str, title: &str, grade: &str, main: &str) -> Vec<String> {
    [
        "A1",
        "P1",
        "01/04/2026",
        hours,
        contract,
        title,
        grade,
        main,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn apply(
    m: &Mapping,
    values: &[String],
) -> Result<council_bridge::mapping::MappedRecord, Vec<council_bridge::mapping::FieldError>> {
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let r = record(&HEADER, &values);
    let b = m.bind(&r.header).unwrap();
    m.apply(&b, &r)
}

const FIELDS: &str = r#"  fte: { from: Hours, transforms: [{ expr: '($record["Contract Hours"] | tonumber) as $c | (. | tonumber) / $c' }] }
  weekly_hours: { from: Hours, transforms: [decimal, { expr: '. * 2 | floor / 2' }] }
  job_title: { from: Title, transforms: [trim, { expr: '. + " (" + ($record.Grade | ascii_upcase) + ")"' }] }
  primary: { from: Main, transforms: [{ expr: 'if . == "Y" then true else false end' }] }
"#;

#[test]
fn arithmetic_across_columns_strings_and_conditions() {
    let m = mapping(FIELDS);
    let out = apply(&m, &row("22.2", "37", " Planning Officer ", "g7", "Y")).unwrap();
    assert_eq!(out.body["fte"], 0.6);
    assert_eq!(out.body["weekly_hours"], 22.0);
    assert_eq!(out.body["job_title"], "Planning Officer (G7)");
    assert_eq!(out.body["primary"], true);
    registry()
        .get("hr.employment")
        .unwrap()
        .validate(&serde_json::Value::Object(out.body.clone()))
        .unwrap();

    let out = apply(&m, &row("37", "37", "Clerk", "g3", "N")).unwrap();
    assert_eq!(out.body["fte"], 1.0);
    assert_eq!(out.body["primary"], false);
}

#[test]
fn null_leaves_the_field_out_and_required_still_applies() {
    let m = mapping(
        "  grade: { from: Grade, transforms: [{ expr: 'if . == \"n/a\" then null else . end' }] }\n  job_title: { from: Title, required: true, transforms: [{ expr: 'null' }] }\n",
    );
    let errors = apply(&m, &row("1", "1", "Clerk", "n/a", "Y")).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].field.as_str(), errors[0].rule.as_str()),
        ("job_title", "required")
    );
    let m = mapping(
        "  grade: { from: Grade, transforms: [{ expr: 'if . == \"n/a\" then null else . end' }] }\n",
    );
    let out = apply(&m, &row("1", "1", "Clerk", "n/a", "Y")).unwrap();
    assert!(out.body.get("grade").is_none(), "{:?}", out.body);
}

#[test]
fn a_syntax_error_is_reported_at_compile_with_the_field() {
    let d = diagnostics("  fte: { from: Hours, transforms: [{ expr: '(. | tonumber / 37' }] }\n");
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("t.yaml:11:")
            && d[0].contains(
                "field `fte`: `expr` is not a valid jq program: expected closing parenthesis"
            ),
        "{d:?}"
    );
    let d = diagnostics("  fte: { from: Hours, transforms: [{ expr: 37 }] }\n");
    assert!(
        d[0].contains("field `fte`: `expr` takes a jq program as text"),
        "{d:?}"
    );
    let d = diagnostics("  fte: { from: Hours, transforms: [{ expr: 'tonumbr' }] }\n");
    assert!(
        d[0].contains("field `fte`: `expr` uses filter `tonumbr`"),
        "{d:?}"
    );
}

#[test]
fn a_runtime_error_is_a_field_error_without_the_value() {
    let m = mapping(FIELDS);
    let errors = apply(&m, &row("twenty", "37", "Clerk", "g3", "Y")).unwrap_err();
    let e = errors.iter().find(|e| e.field == "fte").expect("fte fails");
    assert_eq!(
        (e.field.as_str(), e.column.as_deref(), e.rule.as_str()),
        ("fte", Some("Hours"), "expr")
    );
    assert!(e.message.contains("tonumber"), "{e}");
    assert!(!e.message.contains("twenty"), "{e}");
    assert_eq!(e.value.as_deref(), Some("twenty"));

    // A type the next transform cannot take is a field error too, never a panic.
    let m = mapping(
        "  weekly_hours: { from: Hours, transforms: [{ expr: '. + \" h\"' }, { round: 1 }] }\n",
    );
    let errors = apply(&m, &row("30", "37", "Clerk", "g3", "Y")).unwrap_err();
    assert_eq!(
        (errors[0].rule.as_str(), errors[0].message.as_str()),
        (
            "round",
            "`round` cannot take the text the `expr` before it produced"
        ),
        "{errors:?}"
    );
    let m = mapping("  weekly_hours: { from: Hours, transforms: [{ expr: 'empty' }] }\n");
    let errors = apply(&m, &row("30", "37", "Clerk", "g3", "Y")).unwrap_err();
    assert_eq!(
        (errors[0].rule.as_str(), errors[0].message.as_str()),
        ("expr", "the expression produced no value")
    );
}

#[test]
fn the_output_type_is_not_checked_at_compile_but_validation_catches_it() {
    // `grade` wants a string: an expression producing a number compiles...
    let m = mapping("  grade: { from: Grade, transforms: [{ expr: 'length' }] }\n");
    let out = apply(&m, &row("1", "1", "Clerk", "g3", "Y")).unwrap();
    assert_eq!(out.body["grade"], 2);
    // ... and the schema rejects the record.
    let errors = registry()
        .get("hr.employment")
        .unwrap()
        .validate(&serde_json::Value::Object(out.body.clone()))
        .unwrap_err();
    assert_eq!(errors[0].field, "grade", "{errors:?}");
    // A typing transform after an `expr` is checked again.
    let d = diagnostics("  grade: { from: Grade, transforms: [{ expr: '.' }, integer] }\n");
    assert!(
        d[0].contains("field `grade`: the canonical model wants string"),
        "{d:?}"
    );
}

#[test]
fn the_environment_and_input_are_not_available() {
    for program in [
        "$ENV.HOME",
        "env.HOME",
        "input",
        "inputs",
        "now",
        "debug",
        "stderr",
        "halt",
        "include \"x\"; .",
    ] {
        let d = diagnostics(&format!(
            "  job_title: {{ from: Title, transforms: [{{ expr: '{program}' }}] }}\n"
        ));
        assert_eq!(d.len(), 1, "{program}: {d:?}");
        assert!(
            d[0].starts_with("t.yaml:11:") && d[0].contains("field `job_title`: `expr`"),
            "{program}: {d:?}"
        );
    }
    let d = diagnostics("  job_title: { from: Title, transforms: [{ expr: '$ENV.HOME' }] }\n");
    assert!(d[0].contains("variable `$ENV`"), "{d:?}");
}

#[test]
fn the_record_keeps_the_first_of_repeated_names() {
    let m = mapping("  grade: { from: 1, transforms: [{ expr: '$record.Code' }] }\n");
    let r = record(
        &["Ref", "Person", "Start", "Code", "Code"],
        &["A1", "P1", "01/04/2026", "first", "second"],
    );
    let b = m.bind(&r.header).unwrap();
    assert_eq!(m.apply(&b, &r).unwrap().body["grade"], "first");
}
