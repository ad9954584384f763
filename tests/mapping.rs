//! Mapping compilation: mistakes are reported with the file, line and field before any row is
//! read, and the bundled mappings compile.

use std::path::Path;

use council_bridge::canonical::Registry;
use council_bridge::mapping::{MappingError, compile_str};

fn registry() -> Registry {
    Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap()
}

fn diagnostics(text: &str) -> Vec<String> {
    match compile_str("bad.yaml", text, &registry()) {
        Ok(_) => panic!("the mapping should not compile"),
        Err(MappingError::Invalid { diagnostics, .. }) => {
            diagnostics.iter().map(ToString::to_string).collect()
        }
        Err(e) => panic!("{e}"),
    }
}

const GOOD_HEAD: &str = "mapping: t
version: 1
entity: finance.supplier_payment
source:
  format: csv
key: [transaction_id]
fields:
  transaction_id: { from: Txn, required: true }
  supplier_id: { from: Supplier, required: true }
  supplier_name: { from: Name, required: true }
  payment_date: { from: Date, transforms: [{ date: dd/mm/yyyy }], required: true }
  currency: { value: GBP }
";

#[test]
fn a_good_mapping_compiles() {
    let text = format!(
        "{GOOD_HEAD}  amount_pence: {{ from: Amount, transforms: [money], required: true }}\n"
    );
    let m = compile_str("good.yaml", &text, &registry()).unwrap();
    assert_eq!(m.entity, "finance.supplier_payment");
    assert_eq!(m.action, "upserted");
}

#[test]
fn each_mistake_names_file_line_and_field() {
    let text = format!(
        "{GOOD_HEAD}  amount_pence: {{ from: Amount, required: true }}\n  amount_pense: {{ from: X }}\n  vat_pence: {{ from: VAT, transforms: [mony] }}\n"
    );
    let d = diagnostics(&text);
    let all = d.join("\n");
    assert!(all.contains("bad.yaml:13:17: field `amount_pence`: the canonical model wants integer here but the mapping produces string. Add the `money` transform."), "{all}");
    assert!(all.contains("bad.yaml:14:17: field `amount_pense`: the canonical entity has no such field. Did you mean `amount_pence`?"), "{all}");
    assert!(
        all.contains(
            "bad.yaml:15:40: field `vat_pence`: unknown transform `mony`. Did you mean `money`?"
        ),
        "{all}"
    );
    assert_eq!(d.len(), 3, "{all}");
}

#[test]
fn unknown_entity_missing_required_field_and_personal_key_are_reported() {
    let d = diagnostics(
        "mapping: t\nversion: 1\nentity: finance.supplier_paymnt\nsource: { format: csv }\nkey: [x]\nfields:\n  x: { from: X, required: true }\n",
    );
    assert!(d[0].starts_with("bad.yaml:3:") && d[0].contains("unknown canonical entity `finance.supplier_paymnt`. Did you mean `finance.supplier_payment`?"), "{d:?}");

    let text = "mapping: t\nversion: 1\nentity: hr.employee\nsource: { format: csv }\nkey: [nino]\nfields:\n  nino: { from: NI, required: true }\n";
    let all = diagnostics(text).join("\n");
    assert!(
        all.contains("field `nino`: is personal data (x-pii) and cannot be part of the record key"),
        "{all}"
    );
    assert!(
        all.contains("field `employee_number`: `hr.employee` requires this field"),
        "{all}"
    );
}

#[test]
fn yaml_typos_are_caught_with_their_line() {
    let d = diagnostics(
        "mapping: t\nversion: 1\nentity: hr.employee\nsource: { format: csv, skip_row: 2 }\nkey: [a]\nfields: {}\n",
    );
    assert!(d[0].starts_with("bad.yaml:4:"), "{d:?}");
    assert!(d[0].contains("skip_row"), "{d:?}");
}

#[test]
fn a_file_without_a_mapped_column_is_rejected_naming_it() {
    let text = format!(
        "{GOOD_HEAD}  amount_pence: {{ from: Amount, transforms: [money], required: true }}\n"
    );
    let m = compile_str("good.yaml", &text, &registry()).unwrap();
    let header = council_bridge::formats::Header::new(
        ["Txn", "Supplier", "Name", "Date", "Amuont"]
            .map(String::from)
            .to_vec(),
    );
    let err = m.bind(&header).unwrap_err().to_string();
    assert!(
        err.contains("field `amount_pence`: the file has no column \"Amount\"")
            && err.contains("Did you mean \"Amuont\"?"),
        "{err}"
    );
}

#[test]
fn every_bundled_mapping_compiles() {
    let config = council_bridge::config::Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("council-bridge.yaml"),
    )
    .unwrap();
    let registry = Registry::load(&config.schemas).unwrap();
    let mut n = 0;
    for c in &config.councils {
        for f in &c.feeds {
            council_bridge::mapping::load(&f.mapping, &registry).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 3);
}

#[test]
fn a_repeated_header_name_is_selected_by_occurrence() {
    let text = GOOD_HEAD.replace(
        "{ from: Name, required: true }",
        "{ from: { name: Class Code, occurrence: 2 }, required: true }",
    );
    let text =
        format!("{text}  amount_pence: {{ from: Amount, transforms: [money], required: true }}\n");
    let m = compile_str("dup.yaml", &text, &registry()).unwrap();
    let header = council_bridge::formats::Header::new(
        [
            "Txn",
            "Supplier",
            "Class Code",
            "Date",
            "Amount",
            "class  code ",
        ]
        .map(String::from)
        .to_vec(),
    );
    let record = council_bridge::formats::SourceRecord {
        locator: council_bridge::formats::Locator {
            file: "f.csv".into(),
            line: 2,
            row: 1,
        },
        header: std::sync::Arc::new(header.clone()),
        values: ["T1", "S1", "first", "01/04/2026", "5.00", "second"]
            .map(String::from)
            .to_vec(),
    };
    let binding = m.bind(&header).unwrap();
    let mapped = m.apply(&binding, &record).unwrap();
    assert_eq!(mapped.body["supplier_name"], "second");
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

const EMPLOYMENT: &str = "mapping: t
version: 1
entity: hr.employment
source: { format: csv }
key: [employment_id]
fields:
  employment_id: { from: Ref, transforms: [{ regex: { pattern: 'ASG-(\\d+)', group: 1 } }, { pad: { length: 8, with: '0' } }], required: true }
  person_id: { coalesce: [Person, Old Person], required: true }
  start_date: { from: Start, transforms: [{ date: dd/mm/yyyy }], required: true }
  status: { value: active }
  job_title: { from: Title, transforms: [{ split: { separator: ' - ', index: 2 } }] }
  weekly_hours: { from: Hours, transforms: [decimal] }
  fte: { from: Hours, transforms: [decimal, { divide: 37 }, { round: 2 }] }
  manager_employment_id: { from: Manager, null_reasons: { VACANT: vacant, REDACTED: redacted } }
";

#[test]
fn regex_pad_split_coalesce_arithmetic_and_null_reasons() {
    let m = compile_str("emp.yaml", EMPLOYMENT, &registry()).unwrap_or_else(|e| panic!("{e}"));
    let header = [
        "Ref",
        "Person",
        "Old Person",
        "Start",
        "Title",
        "Hours",
        "Manager",
    ];
    let r = record(
        &header,
        &[
            "ASG-4521",
            "",
            "P-77",
            "01/04/2026",
            "PLN - Planning Officer",
            "29.6",
            "VACANT",
        ],
    );
    let b = m.bind(&r.header).unwrap();
    let out = m.apply(&b, &r).unwrap();
    assert_eq!(out.body["employment_id"], "00004521");
    assert_eq!(out.body["person_id"], "P-77", "the first non-empty column");
    assert_eq!(out.body["job_title"], "Planning Officer");
    assert_eq!(out.body["fte"], 0.8);
    assert!(out.body.get("manager_employment_id").is_none());
    assert_eq!(out.body["null_reasons"]["manager_employment_id"], "vacant");
    registry()
        .get("hr.employment")
        .unwrap()
        .validate(&serde_json::Value::Object(out.body.clone()))
        .unwrap();

    let bad = record(
        &header,
        &["X-1", "P1", "", "01/04/2026", "No dash", "37", "E9"],
    );
    let errors = m.apply(&b, &bad).unwrap_err();
    let rules: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.rule.as_str()))
        .collect();
    assert_eq!(rules, [("employment_id", "regex"), ("job_title", "split")]);
}

#[test]
fn new_transform_mistakes_are_reported() {
    let text = EMPLOYMENT
        .replace("{ divide: 37 }", "{ divide: 0 }")
        .replace("transforms: [decimal] }", "transforms: [{ round: 2 }] }")
        .replace("VACANT: vacant", "VACANT: empty");
    let all = diagnostics(&text).join("\n");
    assert!(all.contains("field `fte`: `divide` by zero"), "{all}");
    assert!(
        all.contains("field `weekly_hours`: `round` works on numbers"),
        "{all}"
    );
    assert!(all.contains("null reason `empty` for `VACANT` is not one of redacted, not_available, not_applicable, vacant"), "{all}");
    let no_reasons = EMPLOYMENT.replace(
        "manager_employment_id: { from: Manager,",
        "cost_centre: { from: Manager,",
    );
    let all = diagnostics(&no_reasons).join("\n");
    assert!(
        all.contains(
            "field `cost_centre`: the canonical entity records no null reason for this field"
        ),
        "{all}"
    );
}

#[test]
fn the_report_shows_the_line_with_a_caret() {
    let text = format!(
        "{GOOD_HEAD}  amount_pence: {{ from: Amount, transforms: [mony], required: true }}\n"
    );
    let err = compile_str("bad.yaml", &text, &registry())
        .unwrap_err()
        .to_string();
    let caret = format!("       | {}^", " ".repeat(45));
    assert!(
        err.contains(&format!("    13 |   amount_pence: {{ from: Amount, transforms: [mony], required: true }}\n{caret}")),
        "{err}"
    );
    assert!(err.contains(
        "bad.yaml:13:46: field `amount_pence`: unknown transform `mony`. Did you mean `money`?"
    ));
}

#[test]
fn lookups_in_reference_tables_and_conditions() {
    let text = format!(
        "{GOOD_HEAD}  amount_pence: {{ from: Amount, transforms: [money], required: true }}
  service_area: {{ from: Cost Centre, transforms: [{{ lookup: {{ table: cost_centres.csv, key: Code, value: Service }} }}] }}
  cost_centre: {{ from: Cost Centre, when: {{ column: Kind, equals: revenue }} }}
  purpose: {{ from: Note, when: {{ column: Note, matches: '^[A-Z]', not: true }} }}
"
    );
    let tables = |name: &str| -> Result<String, String> {
        match name {
            "cost_centres.csv" => Ok("Code,Service\nHWY01,Highways\nLIB02,Libraries\n".into()),
            other => Err(format!("no table {other}")),
        }
    };
    let m = council_bridge::mapping::compile_with_tables("t.yaml", &text, &registry(), &tables)
        .unwrap_or_else(|e| panic!("{e}"));
    let header = [
        "Txn",
        "Supplier",
        "Name",
        "Date",
        "Amount",
        "Cost Centre",
        "Kind",
        "Note",
    ];
    let b = m
        .bind(&council_bridge::formats::Header::new(
            header.iter().map(|s| s.to_string()).collect(),
        ))
        .unwrap();
    let r = record(
        &header,
        &[
            "T1",
            "S1",
            "Acme",
            "01/04/2026",
            "5.00",
            "HWY01",
            "Revenue",
            "lower case note",
        ],
    );
    let out = m.apply(&b, &r).unwrap();
    assert_eq!(
        (
            out.body["service_area"].as_str(),
            out.body["cost_centre"].as_str()
        ),
        (Some("Highways"), Some("HWY01"))
    );
    assert_eq!(out.body["purpose"], "lower case note");
    let r = record(
        &header,
        &[
            "T2",
            "S1",
            "Acme",
            "01/04/2026",
            "5.00",
            "XXX99",
            "capital",
            "Upper",
        ],
    );
    let errors = m.apply(&b, &r).unwrap_err();
    assert_eq!(
        (errors[0].field.as_str(), errors[0].rule.as_str()),
        ("service_area", "map"),
        "an unknown code fails like a map"
    );
    let r = record(
        &header,
        &[
            "T3",
            "S1",
            "Acme",
            "01/04/2026",
            "5.00",
            "LIB02",
            "capital",
            "Upper",
        ],
    );
    let out = m.apply(&b, &r).unwrap();
    assert!(
        out.body.get("cost_centre").is_none() && out.body.get("purpose").is_none(),
        "conditions not met: fields left out"
    );

    let missing = text.replace("cost_centres.csv", "nope.csv");
    let err =
        council_bridge::mapping::compile_with_tables("t.yaml", &missing, &registry(), &tables)
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("field `service_area`: `lookup`: no table nope.csv"),
        "{err}"
    );
}

const PO_HEAD: &str = "mapping: po
version: 1
entity: finance.purchase_order
source:
  format: json
  records_at: /orders
key: [po_number]
fields:
  po_number: { from: number }
  supplier.name: { from: supplier }
  order_date: { from: date, transforms: [{ date: yyyy-mm-dd }] }
  currency: { value: GBP }
";

#[test]
fn each_fills_an_array_of_objects_and_its_mistakes_name_the_element_field() {
    let d = diagnostics(&format!(
        "{PO_HEAD}  description:\n    each: lines\n    fields:\n      x: {{ from: z }}\n  lines:\n    each: lines\n    fields:\n      descripton: {{ from: text }}\n      net_pence: {{ from: net }}\n"
    ));
    let all = d.join("\n");
    assert!(
        all.contains("field `description`: `each` fills an array of objects, but the canonical model wants string here"),
        "{all}"
    );
    assert!(
        all.contains("field `lines[].descripton`: the canonical entity has no such field. Did you mean `description`?"),
        "{all}"
    );
    assert!(
        all.contains("field `lines[].net_pence`: the canonical model wants integer here but the mapping produces string. Add the `money` transform."),
        "{all}"
    );
    assert!(
        all.contains("field `lines[].description`: every element of `lines` needs this field"),
        "{all}"
    );

    // JSON arrays flatten like repeated XML elements: `lines/...`, then `lines[2]/...`.
    let text = format!(
        "{PO_HEAD}  lines:\n    each: lines\n    fields:\n      line_number: {{ from: num, transforms: [integer] }}\n      description: {{ from: text, required: true }}\n      net_pence: {{ from: net, transforms: [money], required: true }}\n"
    );
    let m = compile_str("po.yaml", &text, &registry()).unwrap();
    let json = r#"{"orders": [
      {"number": "PO1", "supplier": "Acme", "date": "2026-11-03",
       "lines": [{"num": "1", "text": "Chairs", "net": "100.00"}, {"num": "2", "text": "Desks", "net": "250.50"}]},
      {"number": "PO2", "supplier": "Acme", "date": "2026-11-04",
       "lines": [{"num": "1", "text": "Paper", "net": "9.99"}, {"num": "2", "text": "", "net": "1,0.0.0"}]},
      {"number": "PO3", "supplier": "Acme", "date": "2026-11-05"}
    ]}"#;
    let decoder = council_bridge::formats::open(
        "orders.json",
        std::io::Cursor::new(json.as_bytes().to_vec()),
        &m.source.format,
    )
    .unwrap();
    let mut results = Vec::new();
    for item in decoder {
        let council_bridge::formats::Item::Record(rec) = item.unwrap() else {
            continue;
        };
        let binding = m.bind_lenient(&rec.header);
        results.push(m.apply(&binding, &rec));
    }
    let first = results[0].as_ref().unwrap();
    assert_eq!(
        first.body.get("lines").cloned().unwrap(),
        serde_json::json!([
            {"line_number": 1, "description": "Chairs", "net_pence": 10000},
            {"line_number": 2, "description": "Desks", "net_pence": 25050}
        ])
    );
    let errors = results[1].as_ref().unwrap_err();
    let named: Vec<(&str, &str, Option<&str>)> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.rule.as_str(), e.column.as_deref()))
        .collect();
    assert_eq!(
        named,
        [
            ("lines[2].description", "required", Some("lines[2]/text")),
            ("lines[2].net_pence", "money", Some("lines[2]/net")),
        ]
    );
    assert!(
        errors[1].message.starts_with("element 2 of `lines`: "),
        "{}",
        errors[1].message
    );
    assert!(
        results[2].as_ref().unwrap().body.get("lines").is_none(),
        "no element: the array is left out"
    );
}
