//! The mapping scaffold on real council files and on the sample councils' exports, scored
//! against the hand-written mappings (the answer keys): the draft must be valid YAML, compile
//! (or fail only on the TODOs it declares), and pick the columns the answer key uses.

/// Named `toolkit::…` so that `cargo test --test scaffold --lib toolkit` runs them too.
mod real_data;

mod toolkit {
    use std::path::{Path, PathBuf};

    use council_bridge::canonical::Registry;
    use council_bridge::formats::normalise_name;
    use council_bridge::mapping::{MappingError, TargetSchema, compile_str, load};
    use council_bridge::toolkit::preview::preview;
    use council_bridge::toolkit::scaffold::{MatchedSource, Scaffold, scaffold};
    use serde_json::Value;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// A sample: `real:<name>` is a file in ../shared/data/real (`None` when absent, see
    /// tests/real_data), anything else a path in the repository.
    fn sample(s: &str) -> Option<PathBuf> {
        match s.strip_prefix("real:") {
            Some(name) => crate::real_data::file(name),
            None => Some(root().join(s)),
        }
    }

    fn registry() -> Registry {
        Registry::load(&root().join("schemas")).unwrap()
    }

    /// Where the answer key says a field comes from.
    #[derive(Debug, PartialEq)]
    enum Source {
        Column(String),
        FileLine,
        Literal(String),
        /// `concat` or `coalesce` of columns: a draft picking one of them counts.
        Several(Vec<String>),
        Other,
    }

    fn answer_key(path: &Path) -> (Vec<(String, Source, bool)>, Vec<String>) {
        let text = std::fs::read_to_string(path).unwrap();
        let doc: Value = serde_saphyr::from_str(&text).unwrap();
        let fields = doc["fields"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let source = match (&v["from"], &v["value"], &v["concat"]["from"]) {
                    (Value::String(c), _, _) => Source::Column(normalise_name(c)),
                    (_, Value::String(l), _) => Source::Literal(l.clone()),
                    (_, _, Value::Array(a))
                        if a.len() == 2 && a[0] == "$file" && a[1] == "$line" =>
                    {
                        Source::FileLine
                    }
                    (_, _, Value::Array(a)) => Source::Several(
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(normalise_name)
                            .collect(),
                    ),
                    _ => match &v["coalesce"] {
                        Value::Array(a) => Source::Several(
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(normalise_name)
                                .collect(),
                        ),
                        _ => Source::Other,
                    },
                };
                (k.clone(), source, v["required"] == Value::Bool(true))
            })
            .collect();
        let key = doc["key"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        (fields, key)
    }

    fn drafted(s: &Scaffold, field: &str) -> Option<Source> {
        s.fields
            .iter()
            .find(|m| m.field == field)
            .map(|m| match &m.source {
                MatchedSource::Column { name, .. } => Source::Column(normalise_name(name)),
                MatchedSource::FileLine => Source::FileLine,
                MatchedSource::FileName { .. } => Source::Column(normalise_name("$file")),
                MatchedSource::Literal { value } => {
                    Source::Literal(value.as_str().unwrap_or("").into())
                }
            })
    }

    #[derive(Debug)]
    struct Score {
        /// Fields the schema requires or the answer key marks `required: true`.
        required: (usize, usize),
        /// Every field of the answer key.
        fields: (usize, usize),
        misses: Vec<String>,
    }

    fn score(s: &Scaffold, schema_required: &[String], key_path: &Path) -> Score {
        let (fields, _) = answer_key(key_path);
        let mut score = Score {
            required: (0, 0),
            fields: (0, 0),
            misses: Vec::new(),
        };
        for (field, expected, required) in &fields {
            // The same element under a record path one level up or down is the same column
            // (`Body/IRenvelope/X` with record path `GovTalkMessage`, `X` with the envelope).
            let same = |a: &str, b: &str| {
                a == b || a.ends_with(&format!("/{b}")) || b.ends_with(&format!("/{a}"))
            };
            let hit = match (drafted(s, field), expected) {
                (Some(Source::Column(c)), Source::Several(list)) => {
                    list.iter().any(|l| same(&c, l))
                }
                (Some(Source::Column(c)), Source::Column(e)) => same(&c, e),
                (d, e) => d.as_ref() == Some(e),
            };
            let is_required = *required || schema_required.contains(field);
            score.fields.1 += 1;
            if hit {
                score.fields.0 += 1;
            } else {
                score.misses.push(format!(
                    "{field}: key {expected:?}, draft {:?}",
                    drafted(s, field)
                ));
            }
            if is_required {
                score.required.1 += 1;
                if hit {
                    score.required.0 += 1;
                }
            }
        }
        score
    }

    struct Case {
        sample: &'static str,
        entity: &'static str,
        council: &'static str,
        answer: &'static str,
        /// The least share of the answer key's fields the draft must get right.
        min_fields: f64,
    }

    const CASES: &[Case] = &[
        Case {
            sample: "real:leeds_2011-04_spend_HEAD.csv",
            entity: "finance.supplier_payment",
            council: "leeds",
            answer: "tests/fixtures/real/councils/leeds/spend.yaml",
            min_fields: 0.8,
        },
        Case {
            sample: "real:harrogate_2015-04_spend_HEAD.csv",
            entity: "finance.supplier_payment",
            council: "harrogate",
            answer: "tests/fixtures/real/councils/harrogate/spend.yaml",
            min_fields: 0.75,
        },
        Case {
            sample: "real:trafford_organisation_structure_2024-07.csv",
            entity: "hr.post",
            council: "trafford",
            answer: "tests/fixtures/real/councils/trafford/organisation_structure.yaml",
            min_fields: 1.0,
        },
        Case {
            sample: "real:lambeth_2012-06_invoices_over_500_HEAD.csv",
            entity: "finance.supplier_payment",
            council: "lambeth",
            answer: "tests/fixtures/real/councils/lambeth/invoices_over_500.yaml",
            min_fields: 1.0,
        },
        Case {
            sample: "real:windsor_maidenhead_openlylocal_fixture_title_row.csv",
            entity: "finance.supplier_payment",
            council: "windsor-maidenhead",
            answer: "tests/fixtures/real/councils/windsor-maidenhead/payments_over_500.yaml",
            min_fields: 0.85,
        },
        Case {
            sample: "mappings/northshire/samples/ap/supplier_payments_2026-11.csv",
            entity: "finance.supplier_payment",
            council: "northshire",
            answer: "mappings/northshire/supplier_payment.yaml",
            min_fields: 1.0,
        },
        Case {
            sample: "mappings/northshire/samples/hr/employees_20261101.csv",
            entity: "hr.employee",
            council: "northshire",
            answer: "mappings/northshire/hr_employee.yaml",
            min_fields: 1.0,
        },
        Case {
            sample: "mappings/northshire/samples/payroll/payroll_202610.csv",
            entity: "payroll.pay_result",
            council: "northshire",
            answer: "mappings/northshire/payroll.yaml",
            min_fields: 1.0,
        },
        Case {
            sample: "mappings/eastborough/samples/ap/payments_2026-11.xlsx",
            entity: "finance.supplier_payment",
            council: "eastborough",
            answer: "mappings/eastborough/supplier_payments.yaml",
            min_fields: 1.0,
        },
        Case {
            sample: "mappings/eastborough/samples/api/workers_page1.json",
            entity: "hr.employee",
            council: "eastborough",
            answer: "mappings/eastborough/hr_workers.yaml",
            min_fields: 0.75,
        },
    ];

    #[test]
    fn drafts_pick_the_columns_the_hand_written_mappings_use_and_compile() {
        let registry = registry();
        let mut report = Vec::new();
        let mut failures = Vec::new();
        for case in CASES {
            let entity = registry.get(case.entity).unwrap();
            let Some(path) = sample(case.sample) else {
                continue;
            };
            let s = scaffold(&path, entity, case.council).unwrap();
            // Valid YAML whatever else.
            serde_saphyr::from_str::<Value>(&s.yaml).unwrap_or_else(|e| {
                panic!("{}: the draft is not YAML: {e}\n{}", case.sample, s.yaml)
            });
            let sc = score(&s, &entity.required(), &root().join(case.answer));
            report.push(format!(
                "{:<60} required {}/{}  fields {}/{}  misses: {:?}",
                case.sample, sc.required.0, sc.required.1, sc.fields.0, sc.fields.1, sc.misses
            ));
            if sc.required.0 != sc.required.1 {
                failures.push(format!(
                    "{}: required fields missed: {:?}",
                    case.sample, sc.misses
                ));
            }
            if (sc.fields.0 as f64) < case.min_fields * sc.fields.1 as f64 {
                failures.push(format!(
                    "{}: {}/{} fields right, want {:.0}%: {:?}",
                    case.sample,
                    sc.fields.0,
                    sc.fields.1,
                    case.min_fields * 100.0,
                    sc.misses
                ));
            }
            if let Err(e) = compile_str("draft.yaml", &s.yaml, &registry) {
                failures.push(format!(
                    "{}: the draft does not compile: {e}\n{}",
                    case.sample, s.yaml
                ));
            }
        }
        println!("{}", report.join("\n"));
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    fn the_source_options_match_the_answer_keys() {
        let registry = registry();
        let draft = |sample: &str, entity: &str| {
            scaffold(&root().join(sample), registry.get(entity).unwrap(), "x").unwrap()
        };
        let payroll = draft(
            "mappings/northshire/samples/payroll/payroll_202610.csv",
            "payroll.pay_result",
        );
        assert_eq!(payroll.source.encoding.as_deref(), Some("windows-1252"));
        let trailer = payroll.source.trailer.as_ref().expect("the TRAILER row");
        assert_eq!(trailer.pattern, "^TRAILER$");
        assert_eq!(
            (trailer.count_column, trailer.total_column),
            (Some(2), Some(3))
        );
        assert_eq!(trailer.total_of.as_deref(), Some("Gross Pay"));
        assert_eq!(payroll.key, ["employee_number", "pay_period.end"]);

        let hr = draft(
            "mappings/northshire/samples/hr/employees_20261101.csv",
            "hr.employee",
        );
        assert_eq!(hr.source.encoding_reason, "UTF-8 with a byte-order mark");
        assert!(hr.yaml.contains("transforms: [compact, upper]"));
        assert!(
            hr.yaml
                .contains("\"PERM\": permanent, \"FTC\": fixed_term, \"CAS\": casual")
        );
        // The deliberately bad status code is left for the officer.
        assert!(
            hr.yaml
                .contains("TODO: codes with no canonical value: \"X\""),
            "{}",
            hr.yaml
        );

        let xlsx = draft(
            "mappings/eastborough/samples/ap/payments_2026-11.xlsx",
            "finance.supplier_payment",
        );
        assert!(xlsx.yaml.contains("format: spreadsheet"));
        assert!(xlsx.yaml.contains("header_match: \"^Payment Ref$\""));
        assert!(xlsx.yaml.contains("pattern: \"^TOTAL$\""));

        let json = draft(
            "mappings/eastborough/samples/api/workers_page1.json",
            "hr.employee",
        );
        assert_eq!(json.source.records_at.as_deref(), Some("/workers"));
    }

    #[test]
    fn the_source_options_of_real_files_match_the_answer_keys() {
        let registry = registry();
        let draft = |name: &str, entity: &str| {
            crate::real_data::file(name)
                .map(|p| scaffold(&p, registry.get(entity).unwrap(), "x").unwrap())
        };
        let Some(windsor) = draft(
            "windsor_maidenhead_openlylocal_fixture_title_row.csv",
            "finance.supplier_payment",
        ) else {
            return;
        };
        assert_eq!(windsor.source.encoding.as_deref(), Some("windows-1252"));
        assert_eq!(windsor.source.title_rows, 1);
        assert!(
            windsor.yaml.contains("header_match: \"^Supplier Name$\""),
            "{}",
            windsor.yaml
        );
        assert_eq!(windsor.key, ["source_reference"]);

        let Some(lambeth) = draft(
            "lambeth_2012-06_invoices_over_500_HEAD.csv",
            "finance.supplier_payment",
        ) else {
            return;
        };
        assert_eq!(lambeth.source.title_rows, 9);
        assert!(lambeth.yaml.contains("header_match: \"^Supplier Name$\""));

        let Some(leeds) = draft("leeds_2011-04_spend_HEAD.csv", "finance.supplier_payment") else {
            return;
        };
        assert_eq!(leeds.key, ["transaction_id"]);
        assert!(
            leeds
                .yaml
                .contains("transforms: [{ date: \"dd-MMM-yyyy\" }]")
        );
        assert!(leeds.yaml.contains("(17 column(s) without a header name"));
        assert!(!leeds.yaml.contains("is it a trailer"));

        let Some(harrogate) = draft(
            "harrogate_2015-04_spend_HEAD.csv",
            "finance.supplier_payment",
        ) else {
            return;
        };
        // One transaction number covers several lines: the line is the key, as in the answer key.
        assert_eq!(harrogate.key, ["source_reference"]);

        // A withheld payee is a reason, not a name; a quarter only the file name states is a
        // period supplied from the file name, never a day.
        let Some(gateshead) = draft(
            "gateshead_2015-02_redacted_spend_gzip.csv",
            "finance.supplier_payment",
        ) else {
            return;
        };
        assert!(
            gateshead
                .yaml
                .contains("null_reasons: { \"REDACTED - Personal Information\": redacted }"),
            "{}",
            gateshead.yaml
        );
        let Some(oxford) = draft(
            "oxford_2014-apr-jun_spend_over_500_HEAD.csv",
            "finance.supplier_payment",
        ) else {
            return;
        };
        assert!(
            oxford.yaml.contains("{ period: yyyy-MMM-MMM }")
                && oxford.yaml.contains("  payment_period_source:")
                && !oxford.yaml.contains("  payment_date:"),
            "{}",
            oxford.yaml
        );
        assert!(
            oxford
                .yaml
                .contains("\"Redacted\": redacted, \"Redacted personal information\": redacted }"),
            "{}",
            oxford.yaml
        );
    }

    #[test]
    fn a_draft_with_todos_fails_to_compile_only_on_them() {
        let Some(real) = crate::real_data::files(&[
            "hmrc_rti_fps_sample_2014-15.xml",
            "leeds_2011-04_spend_HEAD.csv",
        ]) else {
            return;
        };
        let registry = registry();
        // An XML submission: no pay period columns, so the "pay_period or tax_period" group is the
        // officer's to fill, and the record path is a guess.
        let s = scaffold(
            &real[0],
            registry.get("payroll.pay_result").unwrap(),
            "hmrc",
        )
        .unwrap();
        assert!(s.yaml.contains(
            "record_path: \"GovTalkMessage/Body/IRenvelope/FullPaymentSubmission/Employee\""
        ));
        assert_eq!(
            drafted(&s, "employee_number"),
            Some(Source::Column("employment/payid".into()))
        );
        assert_eq!(
            drafted(&s, "net_pay_pence"),
            Some(Source::Column(
                "employment/payment/payafterstatdedns".into()
            ))
        );
        serde_saphyr::from_str::<Value>(&s.yaml).unwrap();

        // Leeds' spend file as a purchase invoice: most required fields have no column.
        let entity = registry.get("finance.purchase_invoice").unwrap();
        let s = scaffold(&real[1], entity, "leeds").unwrap();
        serde_saphyr::from_str::<Value>(&s.yaml).unwrap_or_else(|e| panic!("{e}\n{}", s.yaml));
        assert!(!s.missing_required.is_empty());
        for field in &s.missing_required {
            if !field.starts_with("one of") {
                assert!(
                    s.yaml.contains(&format!(
                        "# TODO: {field} is required: which column holds it?"
                    )),
                    "{field}\n{}",
                    s.yaml
                );
            }
        }
        let Err(MappingError::Invalid { diagnostics, .. }) =
            compile_str("draft.yaml", &s.yaml, &registry)
        else {
            panic!("the draft has TODOs, it cannot compile:\n{}", s.yaml)
        };
        for d in &diagnostics {
            let todo_field = d
                .field
                .as_ref()
                .is_some_and(|f| s.missing_required.contains(f) || s.key.is_empty());
            let key = d.message.contains("`key`");
            assert!(todo_field || key, "unexpected problem: {d}\n{}", s.yaml);
        }
    }

    #[test]
    fn previewing_the_drafts_maps_as_many_rows_as_the_answer_keys() {
        let registry = registry();
        for case in &CASES[..8] {
            let entity = registry.get(case.entity).unwrap();
            let Some(path) = sample(case.sample) else {
                continue;
            };
            let s = scaffold(&path, entity, case.council).unwrap();
            let draft = compile_str("draft.yaml", &s.yaml, &registry).unwrap();
            let answer = load(&root().join(case.answer), &registry).unwrap();
            let ok = |m| {
                let bytes = std::fs::read(&path).unwrap();
                let p = preview(m, entity, "sample", std::io::Cursor::new(bytes), 10_000).unwrap();
                (p.records.iter().filter(|r| r.ok).count(), p.records.len())
            };
            let (draft_ok, n) = ok(&draft);
            let (answer_ok, m) = ok(&answer);
            println!(
                "{:<60} draft {draft_ok}/{n} ok, answer key {answer_ok}/{m}",
                case.sample
            );
            assert_eq!(n, m, "{}: both read the same records", case.sample);
            assert!(
                draft_ok >= answer_ok,
                "{}: the draft maps {draft_ok} rows, the answer key {answer_ok}",
                case.sample
            );
        }
    }

    /// Every real file of ../shared/data/real: (file, entity, council, answer key).
    const REAL: &[(&str, &str, &str, &str)] = &[
        (
            "lambeth_2012-06_invoices_over_500_HEAD.csv",
            "finance.supplier_payment",
            "lambeth",
            "lambeth/invoices_over_500.yaml",
        ),
        (
            "windsor_maidenhead_openlylocal_fixture_title_row.csv",
            "finance.supplier_payment",
            "windsor-maidenhead",
            "windsor-maidenhead/payments_over_500.yaml",
        ),
        (
            "harrogate_2015-04_spend_HEAD.csv",
            "finance.supplier_payment",
            "harrogate",
            "harrogate/spend.yaml",
        ),
        (
            "leeds_2011-04_spend_HEAD.csv",
            "finance.supplier_payment",
            "leeds",
            "leeds/spend.yaml",
        ),
        (
            "trafford_organisation_structure_2024-07.csv",
            "hr.post",
            "trafford",
            "trafford/organisation_structure.yaml",
        ),
        (
            "peppol_bis3_ubl_invoice_base-example.xml",
            "finance.purchase_invoice",
            "peppol-example",
            "peppol-example/ubl_invoice.yaml",
        ),
        (
            "hmrc_rti_fps_sample_2014-15.xml",
            "payroll.pay_result",
            "hmrc-fps-example",
            "hmrc-fps-example/fps_payment.yaml",
        ),
        (
            "wakefield_2018-q2_supplier_spend_HEAD.csv",
            "finance.supplier_payment",
            "wakefield",
            "wakefield/supplier_spend.yaml",
        ),
        (
            "gateshead_2015-02_redacted_spend_gzip.csv",
            "finance.supplier_payment",
            "gateshead",
            "gateshead/spend.yaml",
        ),
        (
            "north_tyneside_2014-04_spend_HEAD.csv",
            "finance.supplier_payment",
            "north-tyneside",
            "north-tyneside/spend.yaml",
        ),
        (
            "tfl_2018-19_spend_HEAD.csv",
            "finance.supplier_payment",
            "tfl",
            "tfl/spend.yaml",
        ),
        (
            "oxford_2014-apr-jun_spend_over_500_HEAD.csv",
            "finance.supplier_payment",
            "oxford",
            "oxford/spend_over_500.yaml",
        ),
        (
            "hyndburn_2017-05_spend_over_250_CR.csv",
            "finance.supplier_payment",
            "hyndburn",
            "hyndburn/spend_2017.yaml",
        ),
        (
            "hyndburn_2024-10_spend_over_250_blank_columns_HEAD.csv",
            "finance.supplier_payment",
            "hyndburn",
            "hyndburn/spend_2024.yaml",
        ),
        (
            "oxford_2012-04_senior_salaries.csv",
            "hr.post",
            "oxford",
            "oxford/senior_salaries_2012.yaml",
        ),
        (
            "oxford_2015-04_senior_salaries_blank_column.csv",
            "hr.post",
            "oxford",
            "oxford/senior_salaries_2015.yaml",
        ),
        (
            "oxford_2017-jan-mar_procurement_card_HEAD.csv",
            "finance.procurement_card_transaction",
            "oxford",
            "oxford/procurement_card_gpc.yaml",
        ),
        (
            "oxford_2017-oct-nov_procurement_card_HEAD.csv",
            "finance.procurement_card_transaction",
            "oxford",
            "oxford/procurement_card_fin.yaml",
        ),
        (
            "pensions_ombudsman_2011-09-30_organogram_senior.csv",
            "hr.post",
            "pensions-ombudsman",
            "pensions-ombudsman/organogram_senior.yaml",
        ),
        (
            "pensions_ombudsman_2011-09-30_organogram_junior.csv",
            "hr.post",
            "pensions-ombudsman",
            "pensions-ombudsman/organogram_junior.yaml",
        ),
        (
            "hmrc_rti_eps_sample_2014-15.xml",
            "payroll.employer_payment_summary",
            "hmrc-eps-example",
            "hmrc-eps-example/eps.yaml",
        ),
        (
            "peppol_bis3_ubl_creditnote_base-creditnote-correction.xml",
            "finance.credit_note",
            "peppol-example",
            "peppol-example/ubl_credit_note.yaml",
        ),
    ];

    /// The figures of docs/real-files.md: per real file, the rows the unedited scaffold draft
    /// maps (0 when it does not compile) of the rows the answer key maps, and the answer-key
    /// fields the draft does not already fill from the same source (the edits to 100 %).
    #[test]
    fn unedited_drafts_of_the_real_files_figures() {
        let Some(dir) = crate::real_data::all() else {
            return;
        };
        let registry = registry();
        let (mut ok_all, mut rows_all, mut worst_edits) = (0usize, 0usize, 0usize);
        let mut over = Vec::new();
        let mut table = Vec::new();
        for (file, entity_name, council, answer) in REAL {
            let path = dir.join(file);
            let entity = registry.get(entity_name).unwrap();
            let answer = root().join("tests/fixtures/real/councils").join(answer);
            let s = scaffold(&path, entity, council).unwrap();
            let rows = |m: &council_bridge::mapping::Mapping| {
                let bytes = std::fs::read(&path).unwrap();
                let p = preview(m, entity, file, std::io::Cursor::new(bytes), 100_000).unwrap();
                (p.records.iter().filter(|r| r.ok).count(), p.records.len())
            };
            let (answer_ok, total) = rows(&load(&answer, &registry).unwrap());
            assert_eq!(answer_ok, total, "{file}: the answer key maps every row");
            let (draft_ok, why) = match compile_str("draft.yaml", &s.yaml, &registry) {
                Ok(m) => {
                    let bytes = std::fs::read(&path).unwrap();
                    let p =
                        preview(&m, entity, file, std::io::Cursor::new(bytes), 100_000).unwrap();
                    let first =
                        p.records.iter().find(|r| !r.ok).map(|r| {
                            format!("first failure: {:?} {:?}", r.errors, r.decode_failure)
                        });
                    (rows(&m).0, first.unwrap_or_default())
                }
                Err(e) => (0, format!("does not compile: {e}")),
            };
            let sc = score(&s, &entity.required(), &answer);
            // A field the answer key maps from an element this sample does not have (an EPS
            // without paternity pay) cannot be drafted from it, and maps no row of it: not an
            // edit to this file's draft. Listed, not counted.
            let columns: Vec<String> = s.columns.iter().map(|c| normalise_name(&c.name)).collect();
            let (fields, _) = answer_key(&answer);
            let absent: Vec<&str> = fields
                .iter()
                .filter(|(_, source, _)| {
                    let names = match source {
                        Source::Column(c) => std::slice::from_ref(c),
                        Source::Several(list) => list.as_slice(),
                        _ => return false,
                    };
                    // `$file`, `$row`...: the file's name and place, always there.
                    !names.iter().any(|n| {
                        n.starts_with('$')
                            || columns.iter().any(|c| {
                                c == n
                                    || c.ends_with(&format!("/{n}"))
                                    || n.ends_with(&format!("/{c}"))
                            })
                    })
                })
                .map(|(f, _, _)| f.as_str())
                .collect();
            let edits = sc
                .misses
                .iter()
                .filter(|m| !absent.iter().any(|f| m.starts_with(&format!("{f}: "))))
                .count();
            if edits > 5 {
                over.push(format!("{file}: {edits} edits, want ≤ 5"));
            }
            worst_edits = worst_edits.max(edits);
            ok_all += draft_ok;
            rows_all += total;
            table.push(format!(
                "{file:<60} {draft_ok:>4}/{total:<4} edits {edits:>2}  {why}"
            ));
            if !absent.is_empty() {
                table.push(format!("    not in this sample: {}", absent.join(", ")));
            }
            if std::env::var_os("SHOW_MISSES").is_some() {
                table.push(format!("    {:?}", sc.misses));
            }
        }
        println!("{}", table.join("\n"));
        println!(
            "all: {ok_all}/{rows_all} rows ({:.0} %), most edits for one file {worst_edits}",
            100.0 * ok_all as f64 / rows_all as f64
        );
        // Issue 12: unedited drafts map ≥ 60 % of all rows, and no file needs more than 5 edits
        // (here: answer-key fields the draft does not fill from the same source, a stricter
        // count than the edits needed to map every row).
        assert!(
            ok_all as f64 >= 0.6 * rows_all as f64,
            "{ok_all}/{rows_all} rows mapped by unedited drafts, want ≥ 60 %"
        );
        assert!(over.is_empty(), "{}", over.join("\n"));
    }
}
