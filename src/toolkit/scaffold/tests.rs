//! Tests of the scaffold as a whole and of its rooms.

use serde_json::Value;

use super::matching::{described_elements, entity_fields, map_code, name_score, tokens};
use super::profile::records;
use super::write::draft_id;
use super::*;
use crate::canonical::Registry;
use crate::mapping::transforms::DateFormat;

#[test]
fn each_export_of_a_council_gets_its_own_id_and_each_month_the_same() {
    let id = |f| draft_id("Oxford", "post", f);
    assert_eq!(
        id("oxford_2012-04_senior_salaries.csv"),
        "oxford-post-senior-salaries"
    );
    assert_eq!(
        id("oxford_2015-04_senior_salaries_blank_column.csv"),
        "oxford-post-senior-salaries-blank"
    );
    assert_eq!(
        draft_id(
            "oxford",
            "supplier_payment",
            "oxford_2014-apr-jun_spend_over_500.csv"
        ),
        draft_id(
            "oxford",
            "supplier_payment",
            "oxford_2014-jul-sep_spend_over_500.csv"
        )
    );
    assert_eq!(id("2026-11.csv"), "oxford-post");
}
use crate::mapping::compile_str;

fn registry() -> Registry {
    Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap()
}

fn draft(text: &[u8], entity: &str) -> (Scaffold, Registry) {
    let r = registry();
    let s = scaffold_bytes("sample.csv", text, r.get(entity).unwrap(), "Test Council").unwrap();
    serde_saphyr::from_str::<Value>(&s.yaml)
        .unwrap_or_else(|e| panic!("the draft is not YAML: {e}\n{}", s.yaml));
    (s, r)
}

fn column<'a>(s: &'a Scaffold, field: &str) -> Option<&'a str> {
    s.fields
        .iter()
        .find(|m| m.field == field)
        .and_then(|m| match &m.source {
            MatchedSource::Column { name, .. } => Some(name.as_str()),
            _ => None,
        })
}

fn profile(values: &[&str]) -> ColumnProfile {
    profile_column(0, "c", values)
}

#[test]
fn formats_are_told_apart_by_their_first_bytes() {
    assert_eq!(sniff_format(b"a,b\n1,2\n"), DetectedFormat::Csv);
    assert_eq!(sniff_format(b"  [{\"a\": 1}]"), DetectedFormat::Json);
    assert_eq!(
        sniff_format(b"{\"workers\": [\n{\"a\": 1}\n]}"),
        DetectedFormat::Json
    );
    assert_eq!(
        sniff_format(b"{\"a\": 1}\n{\"a\": 2}\n"),
        DetectedFormat::Ndjson
    );
    assert_eq!(
        sniff_format(b"\xef\xbb\xbf<?xml version=\"1.0\"?><a/>"),
        DetectedFormat::Xml
    );
    assert_eq!(sniff_format(b"PK\x03\x04rest"), DetectedFormat::Spreadsheet);
    let fixed = "H20261101 PAYROLL\nD00104010  OKAFOR      000391250\nD00104020  RAMAN       000223680\nD00104030  HALE        000410433\nT000000003 000001025363\n";
    assert_eq!(sniff_format(fixed.as_bytes()), DetectedFormat::FixedWidth);
}

#[test]
fn encodings_follow_the_decoder_rules() {
    assert_eq!(detect_encoding(b"\xef\xbb\xbfName").1, "utf-8");
    assert_eq!(detect_encoding(b"\xef\xbb\xbfName").0, "Name");
    assert_eq!(detect_encoding("£5".as_bytes()).1, "utf-8");
    let (text, label, why) = detect_encoding(b"Amount\n\xa35.00\n");
    assert_eq!((text.as_ref(), label), ("Amount\n£5.00\n", "windows-1252"));
    assert!(why.contains("0xA3"), "{why}");
    assert_eq!(detect_encoding(b"\xff\xfeA\x00").1, "utf-16le");
}

#[test]
fn the_delimiter_is_the_one_with_consistent_field_counts() {
    assert_eq!(detect_delimiter("a;b;c\n1;2,5;3\n4;5;6\n"), b';');
    assert_eq!(detect_delimiter("a\tb\tc\n1\t2, 5\t3\n"), b'\t');
    assert_eq!(detect_delimiter("a|b\n1|2\n"), b'|');
    assert_eq!(detect_delimiter("a,b;c\n1,2;3\n4,5;6\n\"x;y\",1\n"), b',');
    assert_eq!(detect_delimiter("just one column\nvalue\n"), b',');
}

fn rows(text: &str) -> Vec<Vec<String>> {
    records(text, b',', 1000)
}

#[test]
fn the_header_is_found_below_title_rows() {
    let text = "Payments over £500,,,\n,,,\nReport date: 02/07/2012,,,\nSupplier,Date,Amount,Ref\nAcme,01/01/2026,5.00,A1\nBeta,02/01/2026,6.00,A2\n";
    assert_eq!(find_header(&rows(text)), Some(3));
    assert_eq!(find_header(&rows("Supplier,Amount\nAcme,5\n")), Some(0));
    // Numbers and dates are data, not a header.
    assert_eq!(
        find_header(&rows("01/01/2026,5.00,12\n02/01/2026,6.00,13\n")),
        None
    );
}

#[test]
fn a_trailer_is_recognised_with_its_count_and_total() {
    let header: Vec<String> = ["Ref", "Amount"].map(String::from).to_vec();
    let last: Vec<String> = ["TOTAL", "2", "11.00"].map(String::from).to_vec();
    let t = detect_trailer(&last, 2, 2, &header, &[None, Some(1100)]).unwrap();
    assert_eq!(t.pattern, "^TOTAL$");
    assert_eq!(
        (t.column, t.count_column, t.total_column),
        (1, Some(2), Some(3))
    );
    assert_eq!(t.total_of.as_deref(), Some("Amount"));
    // An ordinary last row is not a trailer.
    let row: Vec<String> = ["A9", "5.00"].map(String::from).to_vec();
    assert!(detect_trailer(&row, 2, 2, &header, &[None, Some(1100)]).is_none());
    // A narrow last row carrying numbers is, even without a keyword.
    let wide: Vec<String> = (0..8).map(|i| format!("h{i}")).collect();
    let narrow: Vec<String> = ["T", "3"].map(String::from).to_vec();
    let t = detect_trailer(&narrow, 8, 3, &wide, &[None; 8]).unwrap();
    assert_eq!((t.pattern.as_str(), t.count_column), ("^T$", Some(2)));
}

#[test]
fn columns_are_profiled_by_the_shape_of_their_values() {
    let dates = profile(&["06-Apr-2011", "13-Apr-2011", "", "7-Apr-2011"]);
    let Shape::Date { formats } = &dates.shape else {
        panic!("{:?}", dates.shape)
    };
    let parsers: Vec<DateFormat> = formats
        .iter()
        .map(|f| DateFormat::new(f).unwrap())
        .collect();
    assert!(
        ["06-Apr-2011", "7-Apr-2011"]
            .iter()
            .all(|v| parsers.iter().any(|p| p.parse(v).is_some()))
    );
    assert_eq!(dates.empty, 1);
    assert!((dates.empty_share - 0.25).abs() < 1e-9);
    assert_eq!(
        profile(&["2024-07-01", "2024-07-02"]).shape,
        Shape::Date {
            formats: vec!["yyyy-mm-dd".into()]
        }
    );
    assert_eq!(
        profile(&["20260401", "20261231"]).shape,
        Shape::Date {
            formats: vec!["yyyymmdd".into()]
        }
    );
    assert_eq!(
        profile(&["01040112", "01040113"]).shape,
        Shape::LeadingZeros
    );
    assert_eq!(
        profile(&["£3,912.50", "(312.50)", "-45.00", "599"]).shape,
        Shape::Money
    );
    assert_eq!(profile(&["4626511", "4627613"]).shape, Shape::Integer);
    assert_eq!(profile(&["0.125", "1.5"]).shape, Shape::Decimal);
    assert_eq!(profile(&["Y", "N", "n"]).shape, Shape::Boolean);
    assert_eq!(
        profile(&["JX 12 34 56 A", "pe654321b", "TR334567D"]).shape,
        Shape::Nino
    );
    assert_eq!(profile(&["NM1 4AB", "kb3 9ht "]).shape, Shape::Postcode);
    assert_eq!(
        profile(&["40-12-76", "20 45 77", "309921"]).shape,
        Shape::SortCode
    );
    assert!(profile(&["309921", "401276"]).six_digits);
    assert_eq!(
        profile(&["a.b@x.example", "c@y.example"]).shape,
        Shape::Email
    );
    assert_eq!(profile(&["Acme Ltd", "5218"]).shape, Shape::Text);
    assert_eq!(profile(&["", " "]).shape, Shape::Empty);
    let na = profile(&["NA", "98908", "NA", "85414"]);
    assert_eq!(na.shape, Shape::Integer);
    assert_eq!(na.placeholders, ["NA"]);
    let ids = profile(&["T1", "T2", "T3"]);
    assert!(ids.unique);
    assert_eq!(ids.codes, ["T1", "T2", "T3"]);
    assert!(!profile(&["R", "R", "C"]).unique);
}

#[test]
fn headers_are_compared_as_words() {
    assert_eq!(tokens("Emp No."), ["employee", "number"]);
    assert_eq!(tokens("Forename(s)"), ["forenames"]);
    assert_eq!(tokens("OrganisationURI"), ["organisation", "uri"]);
    assert_eq!(tokens("DOB"), ["date", "birth"]);
    assert_eq!(tokens("Capital /Revenue"), ["capital", "revenue"]);
    assert_eq!(tokens("Address1"), ["address", "1"]);
    let r = registry();
    let fields = entity_fields(r.get("hr.employee").unwrap());
    let f = |p: &str| fields.iter().find(|f| f.path == p).unwrap();
    assert!(name_score(f("employee_number"), "Emp No").0 >= 0.95);
    assert!(name_score(f("date_of_birth"), "Date of Birth").0 >= 0.95);
    assert!(name_score(f("date_of_birth"), "Birth date").0 >= 0.9);
    assert!(name_score(f("nino"), "National Insurance No").0 >= 0.9);
    assert!(name_score(f("address.postcode"), "Post Code").0 >= 0.95);
    assert!(name_score(f("address.line1"), "Address 1").0 >= 0.9);
    assert!(name_score(f("surname"), "Forename").0 < 0.5);
    assert!(name_score(f("employee_number"), "Employee Name").0 < 0.7);
}

#[test]
fn codes_are_mapped_to_enum_values() {
    let e = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let methods = e(&["bacs", "cheque", "card", "chaps"]);
    assert_eq!(map_code("CHQ", &methods).as_deref(), Some("cheque"));
    assert_eq!(map_code(" BACS ", &methods).as_deref(), Some("bacs"));
    assert_eq!(map_code("DD", &methods), None);
    let cr = e(&["capital", "revenue"]);
    assert_eq!(map_code("R", &cr).as_deref(), Some("revenue"));
    assert_eq!(map_code("Capital", &cr).as_deref(), Some("capital"));
    let contracts = e(&["permanent", "fixed_term", "casual"]);
    assert_eq!(map_code("PERM", &contracts).as_deref(), Some("permanent"));
    assert_eq!(map_code("FTC", &contracts).as_deref(), Some("fixed_term"));
    assert_eq!(
        map_code("Fixed Term Contract", &contracts).as_deref(),
        Some("fixed_term")
    );
    let gender = e(&["female", "male", "other", "not_known"]);
    assert_eq!(map_code("M", &gender).as_deref(), Some("male"));
    assert_eq!(map_code("U", &gender).as_deref(), Some("not_known"));
    let freq = e(&["weekly", "fortnightly", "four_weekly", "monthly"]);
    assert_eq!(map_code("M", &freq).as_deref(), Some("monthly"));
    assert_eq!(map_code("4W", &freq).as_deref(), Some("four_weekly"));
}

const PAYMENTS: &str = "Trans No,Supplier Name,Date Paid,Amount,VAT,Method,Cost Centre\n\
    P001,Acme Ltd,01/11/2026,\"1,200.00\",200.00,BACS,0101\n\
    P002,Beta plc,02/11/2026,(50.00),Nil,CHQ,0102\n\
    P003,Gamma,03/11/2026,599,0,BACS,0101\n";

#[test]
fn a_clean_export_gives_a_draft_that_compiles() {
    let (s, r) = draft(PAYMENTS.as_bytes(), "finance.supplier_payment");
    assert_eq!(s.mapping_id, "test-council-supplier-payment-sample");
    assert_eq!(column(&s, "transaction_id"), Some("Trans No"));
    assert_eq!(column(&s, "supplier_name"), Some("Supplier Name"));
    assert_eq!(column(&s, "payment_date"), Some("Date Paid"));
    assert_eq!(column(&s, "amount_pence"), Some("Amount"));
    assert_eq!(column(&s, "vat_pence"), Some("VAT"));
    assert_eq!(column(&s, "payment_method"), Some("Method"));
    assert_eq!(column(&s, "cost_centre"), Some("Cost Centre"));
    assert_eq!(s.key, ["transaction_id"]);
    let yaml = &s.yaml;
    assert!(yaml.contains("mapping: test-council-supplier-payment-sample\nversion: 1\nentity: finance.supplier_payment\n"), "{yaml}");
    assert!(yaml.contains("  supplier_name:  # header \"Supplier Name\" (similarity 1.00), text\n    from: \"Supplier Name\"\n    transforms: [trim]\n    required: true\n"), "{yaml}");
    assert!(
        yaml.contains("transforms: [{ date: \"dd/mm/yyyy\" }]"),
        "{yaml}"
    );
    assert!(yaml.contains("  amount_pence:"), "{yaml}");
    assert!(yaml.contains("transforms: [money]"), "{yaml}");
    assert!(
        yaml.contains("{ \"BACS\": bacs, \"CHQ\": cheque }"),
        "{yaml}"
    );
    assert!(
        yaml.contains("  currency:  # the schema allows only \"GBP\"\n    value: GBP\n"),
        "{yaml}"
    );
    // "Nil" is money's zero: no null_if for it.
    assert!(!yaml.contains("null_if"), "{yaml}");
    assert!(
        yaml.contains(
            "# Optional fields with no column found: source_reference, supplier_id, payment_period.start,"
        ),
        "{yaml}"
    );
    let mapping = compile_str("draft.yaml", yaml, &r).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(mapping.key, ["transaction_id"]);
}

#[test]
fn gzip_semicolons_and_odd_header_names_are_handled() {
    let text = "Ref;Supplier \"Name\": #1;Paid;Amount;Amount\nA1;Acme;01/11/2026;5,00;1.00\nA2;Beta;02/11/2026;6,00;2.00\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
    let (s, r) = draft(&gz.finish().unwrap(), "finance.supplier_payment");
    assert!(s.source.gzip);
    assert_eq!(s.source.delimiter, Some(';'));
    assert!(s.notes.iter().any(|n| n.contains("gzip")));
    assert!(s.yaml.contains("delimiter: \";\""));
    assert!(
        s.yaml.contains("from: \"Supplier \\\"Name\\\": #1\""),
        "{}",
        s.yaml
    );
    // The second "Amount" is picked by occurrence.
    assert!(
        s.yaml.contains("from: { name: \"Amount\", occurrence: 2 }"),
        "{}",
        s.yaml
    );
    compile_str("draft.yaml", &s.yaml, &r).unwrap_or_else(|e| panic!("{e}\n{}", s.yaml));
}

#[test]
fn without_a_header_columns_are_numbered_and_values_decide() {
    let text = "A1,01/11/2026,\"1,200.00\"\nA2,02/11/2026,5.00\n";
    let (s, _) = draft(text.as_bytes(), "finance.supplier_payment");
    assert!(!s.source.header);
    assert!(s.yaml.contains("header: false"), "{}", s.yaml);
    assert_eq!(column(&s, "payment_date"), Some("2"));
    assert!(s.yaml.contains("    from: 2\n"), "{}", s.yaml);
    assert!(
        s.yaml.contains(
            "# TODO: the schema needs at least one of supplier_name, null_reasons: which column holds one?"
        ),
        "{}",
        s.yaml
    );
}

#[test]
fn unmatched_required_fields_are_commented_todo_blocks() {
    let (s, r) = draft(b"Colour,Size\nred,1\nblue,2\n", "hr.employee");
    for f in [
        "employee_number",
        "forenames",
        "surname",
        "start_date",
        "status",
    ] {
        assert!(s.missing_required.contains(&f.to_string()), "{f}");
        assert!(
            s.yaml.contains(&format!(
                "  # TODO: {f} is required: which column holds it?\n  # {f}:\n"
            )),
            "{}",
            s.yaml
        );
    }
    assert!(
        s.yaml
            .contains("  #   transforms: [{ date: \"dd/mm/yyyy\" }]\n"),
        "{}",
        s.yaml
    );
    assert!(s.yaml.contains("fields: {}\n"), "{}", s.yaml);
    assert!(
        s.yaml.contains("# Columns not used: \"Colour\", \"Size\""),
        "{}",
        s.yaml
    );
    assert!(s.yaml.contains("key: []  # TODO"), "{}", s.yaml);
    let Err(crate::mapping::MappingError::Invalid { diagnostics, .. }) =
        compile_str("draft.yaml", &s.yaml, &r)
    else {
        panic!("must not compile")
    };
    assert_eq!(
        diagnostics.len(),
        6,
        "5 required fields and the key: {diagnostics:?}"
    );
}

#[test]
fn json_and_xml_samples_are_flattened_to_paths() {
    let json = br#"{"meta": {"page": 1}, "data": {"workers": [
        {"id": "E1", "name": {"given": "Ann", "family": "Lee"}, "hired": "2020-01-02", "status": "active"},
        {"id": "E2", "name": {"given": "Bo", "family": "Ng"}, "hired": "2021-03-04", "status": "terminated"}
    ]}}"#;
    let r = registry();
    let e = r.get("hr.employee").unwrap();
    let s = scaffold_bytes("w.json", json, e, "x").unwrap();
    assert_eq!(s.source.records_at.as_deref(), Some("/data/workers"));
    assert!(s.yaml.contains("records_at: \"/data/workers\""));
    assert_eq!(column(&s, "forenames"), Some("name/given"));
    assert_eq!(column(&s, "surname"), Some("name/family"));
    assert_eq!(column(&s, "status"), Some("status"));
    assert!(s.yaml.contains("\"TERMINATED\": leaver"), "{}", s.yaml);

    let xml = b"<?xml version=\"1.0\"?><Export><Header><Run>1</Run></Header>\
        <Payment><Ref>P1</Ref><Supplier>Acme</Supplier><Paid>2026-11-01</Paid><Gross>5.00</Gross><Line><N>1</N></Line><Line><N>2</N></Line></Payment>\
        <Payment><Ref>P2</Ref><Supplier>Beta</Supplier><Paid>2026-11-02</Paid><Gross>6.00</Gross><Line><N>1</N></Line></Payment></Export>";
    assert_eq!(
        guess_record_path(xml),
        Some(("Export/Payment".to_string(), 2))
    );
    let e = r.get("finance.supplier_payment").unwrap();
    let s = scaffold_bytes("p.xml", xml, e, "x").unwrap();
    assert!(
        s.yaml.contains("record_path: \"Export/Payment\""),
        "{}",
        s.yaml
    );
    assert_eq!(column(&s, "supplier_name"), Some("Supplier"));
    compile_str("draft.yaml", &s.yaml, &r).unwrap_or_else(|e| panic!("{e}\n{}", s.yaml));
    // One document, one record: the root.
    assert_eq!(
        guess_record_path(b"<Invoice><ID>1</ID><Line><A>1</A></Line></Invoice>"),
        Some(("Invoice".to_string(), 1))
    );
}

#[test]
fn an_empty_sample_is_an_error_that_says_so() {
    let r = registry();
    let err = scaffold_bytes("e.csv", b"\n \n", r.get("hr.post").unwrap(), "x").unwrap_err();
    assert!(err.to_string().contains("is empty"), "{err}");
}

#[test]
fn elements_named_in_schema_descriptions_are_read_as_paths() {
    let seg = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        described_elements("The buyer's purchase order number (cac:OrderReference/cbc:ID)."),
        vec![seg(&["orderreference", "id"])]
    );
    assert_eq!(
        described_elements("VAT number (PartyTaxScheme/CompanyID), country prefix included"),
        vec![seg(&["partytaxscheme", "companyid"])]
    );
    assert_eq!(
        described_elements("True when claimed (RTI EmpAllceInd)."),
        vec![seg(&["empallceind"])]
    );
    assert_eq!(
        described_elements("The supplier (UBL cac:AccountingSupplierParty): an organisation"),
        vec![seg(&["accountingsupplierparty"])]
    );
    // Words, acronyms and numbers are not elements.
    assert!(
        described_elements("Date of issue (ISO 8601), as written (Companies House)").is_empty()
    );
    assert!(described_elements("No parentheses: PartyName/Name").is_empty());
}

#[test]
fn abbreviations_of_hmrc_element_names_are_expanded() {
    assert_eq!(tokens("AORef"), vec!["accounts", "office", "reference"]);
}

/// A fictional UBL-like invoice: two parties with the same inner elements, a VAT number and a
/// company number both written `CompanyID`, an order reference written `ID`.
const TWO_PARTIES: &[u8] = br#"<?xml version="1.0" encoding="UTF-8"?>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
 xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
 xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
 <cbc:ID>T-1</cbc:ID>
 <cbc:IssueDate>2026-11-01</cbc:IssueDate>
 <cbc:DocumentCurrencyCode>GBP</cbc:DocumentCurrencyCode>
 <cac:OrderReference><cbc:ID>PO-9</cbc:ID></cac:OrderReference>
 <cac:AccountingCustomerParty><cac:Party>
  <cac:PostalAddress><cbc:CityName>Testborough</cbc:CityName><cbc:PostalZone>QQ1 1QQ</cbc:PostalZone>
   <cac:Country><cbc:IdentificationCode>GB</cbc:IdentificationCode></cac:Country></cac:PostalAddress>
  <cac:PartyTaxScheme><cbc:CompanyID>GB000000001</cbc:CompanyID></cac:PartyTaxScheme>
  <cac:PartyLegalEntity><cbc:RegistrationName>Test Council</cbc:RegistrationName><cbc:CompanyID>00000001</cbc:CompanyID></cac:PartyLegalEntity>
 </cac:Party></cac:AccountingCustomerParty>
 <cac:AccountingSupplierParty><cac:Party>
  <cac:PartyName><cbc:Name>Example Supplies</cbc:Name></cac:PartyName>
  <cac:PostalAddress><cbc:CityName>Sampleton</cbc:CityName><cbc:PostalZone>1000</cbc:PostalZone>
   <cac:Country><cbc:IdentificationCode>NO</cbc:IdentificationCode></cac:Country></cac:PostalAddress>
  <cac:PartyTaxScheme><cbc:CompanyID>NO000000002MVA</cbc:CompanyID></cac:PartyTaxScheme>
  <cac:PartyLegalEntity><cbc:RegistrationName>Example Supplies AS</cbc:RegistrationName><cbc:CompanyID>000000002</cbc:CompanyID></cac:PartyLegalEntity>
 </cac:Party></cac:AccountingSupplierParty>
 <cac:LegalMonetaryTotal><cbc:LineExtensionAmount currencyID="GBP">10.00</cbc:LineExtensionAmount>
  <cbc:PayableAmount currencyID="GBP">12.00</cbc:PayableAmount></cac:LegalMonetaryTotal>
</Invoice>"#;

#[test]
fn a_described_element_is_matched_by_its_path() {
    let r = registry();
    let e = r.get("finance.purchase_invoice").unwrap();
    let s = scaffold_bytes("t.xml", TWO_PARTIES, e, "x").unwrap();
    // "(cac:OrderReference/cbc:ID)": the nested ID, not the invoice's own.
    assert_eq!(column(&s, "order_reference"), Some("OrderReference/ID"));
    assert_eq!(column(&s, "invoice_id"), Some("ID"));
    // "(PartyTaxScheme/CompanyID)" and "(PartyLegalEntity/CompanyID)": the same leaf, told apart.
    assert_eq!(
        column(&s, "supplier.vat_number"),
        Some("AccountingSupplierParty/Party/PartyTaxScheme/CompanyID")
    );
    assert_eq!(
        column(&s, "supplier.company_id"),
        Some("AccountingSupplierParty/Party/PartyLegalEntity/CompanyID")
    );
}

#[test]
fn a_nested_field_takes_the_column_under_its_own_object() {
    let r = registry();
    let e = r.get("finance.purchase_invoice").unwrap();
    let s = scaffold_bytes("t.xml", TWO_PARTIES, e, "x").unwrap();
    for (party, element) in [
        ("supplier", "AccountingSupplierParty"),
        ("customer", "AccountingCustomerParty"),
    ] {
        let at = |inner: &str| format!("{element}/Party/{inner}");
        assert_eq!(
            column(&s, &format!("{party}.city")).map(str::to_owned),
            Some(at("PostalAddress/CityName"))
        );
        assert_eq!(
            column(&s, &format!("{party}.postcode")).map(str::to_owned),
            Some(at("PostalAddress/PostalZone"))
        );
        assert_eq!(
            column(&s, &format!("{party}.country")).map(str::to_owned),
            Some(at("PostalAddress/Country/IdentificationCode"))
        );
        assert_eq!(
            column(&s, &format!("{party}.registration_name")).map(str::to_owned),
            Some(at("PartyLegalEntity/RegistrationName"))
        );
    }
}
