//! The XML decoder on the real HMRC RTI and Peppol UBL files of ../shared/data/real (moved
//! here from src/formats/xml.rs's unit tests when the files left the repository: mapping,
//! canonical and formats read no files themselves, see tests/architecture.rs).

mod real_data;

use std::sync::Arc;

use council_bridge::formats::xml::{XmlDecoder, XmlOptions};
use council_bridge::formats::{FormatError, Item, SourceRecord};

fn real(name: &str) -> Option<&'static [u8]> {
    let path = real_data::file(name)?;
    Some(Box::leak(std::fs::read(path).unwrap().into_boxed_slice()))
}

fn options(record_path: &str, control_path: Option<&str>) -> XmlOptions {
    XmlOptions {
        encoding: None,
        record_path: record_path.into(),
        control_path: control_path.map(str::to_string),
    }
}

fn decode(bytes: &'static [u8], options: &XmlOptions) -> Vec<Result<Item, FormatError>> {
    XmlDecoder::new("t.xml", bytes, options).unwrap().collect()
}

fn decode_ok(bytes: &'static [u8], options: &XmlOptions) -> Vec<Item> {
    decode(bytes, options)
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn get<'a>(r: &'a SourceRecord, path: &str) -> Option<&'a str> {
    r.header.find(path).map(|i| r.get(i))
}

#[test]
fn hmrc_rti_fps_employees_with_repeated_ni_letters() {
    let Some(fps) = real("hmrc_rti_fps_sample_2014-15.xml") else {
        return;
    };
    let options = options(
        "GovTalkMessage/Body/IRenvelope/FullPaymentSubmission/Employee",
        Some("/GovTalkMessage/Body/IRenvelope/IRheader/"),
    );
    let items = decode_ok(fps, &options);
    assert_eq!(items.len(), 3, "{items:?}");
    let Item::Control(c) = &items[0] else {
        panic!("{items:?}")
    };
    assert_eq!((c.locator.line, c.locator.row), (46, 0));
    assert_eq!(get(c, "Keys/Key"), Some("635"));
    assert_eq!(get(c, "Keys/Key/@Type"), Some("TaxOfficeNumber"));
    assert_eq!(get(c, "Keys/Key[2]"), Some("A635"));
    assert_eq!(get(c, "Keys/Key[2]/@Type"), Some("TaxOfficeReference"));
    assert_eq!(get(c, "PeriodEnd"), Some("2015-04-05"));
    assert_eq!(get(c, "IRmark/@Type"), Some("generic"));
    assert_eq!(
        get(c, "Keys"),
        None,
        "blank text beside children is no column"
    );

    let Item::Record(a) = &items[1] else {
        panic!("{items:?}")
    };
    assert_eq!(
        (a.locator.file.as_str(), a.locator.line, a.locator.row),
        ("t.xml", 65, 1)
    );
    assert_eq!(get(a, "EmployeeDetails/NINO"), Some("AB164231A"));
    assert_eq!(get(a, "EmployeeDetails/Name/Fore"), Some("Alan"));
    assert_eq!(get(a, "EmployeeDetails/Address/Line"), Some("1 The Lane"));
    assert_eq!(
        get(a, "EmployeeDetails/Address/Line[3]"),
        Some("West Yorkshire")
    );
    assert_eq!(get(a, "Employment/Payment/TaxCode"), Some("410L"));
    assert_eq!(get(a, "Employment/NIlettersAndValues/NIletter"), Some("A"));
    assert_eq!(get(a, "Employment/NIlettersAndValues[2]/NIletter"), None);
    assert_eq!(a.header.names()[0], "EmployeeDetails/NINO");

    let Item::Record(b) = &items[2] else {
        panic!("{items:?}")
    };
    assert_eq!((b.locator.line, b.locator.row), (119, 2));
    assert_eq!(
        get(b, "EmployeeDetails/NINO"),
        None,
        "this employee has no NINO"
    );
    assert_eq!(get(b, "EmployeeDetails/Name/Fore"), Some("John"));
    assert_eq!(get(b, "EmployeeDetails/Name/Fore[2]"), Some("Edward"));
    assert_eq!(get(b, "Employment/NIlettersAndValues/NIletter"), Some("A"));
    assert_eq!(
        get(b, "Employment/NIlettersAndValues[2]/NIletter"),
        Some("D")
    );
    assert_eq!(
        get(b, "Employment/NIlettersAndValues[2]/SCON"),
        Some("S1111111M")
    );
    assert_eq!(
        get(b, "Employment/NIlettersAndValues[2]/TotalEmpNICInPd"),
        Some("57.63")
    );
    assert!(!Arc::ptr_eq(&a.header, &b.header), "different columns");
}

#[test]
fn peppol_ubl_invoice_lines_by_local_name() {
    let Some(ubl) = real("peppol_bis3_ubl_invoice_base-example.xml") else {
        return;
    };
    let options = options(
        "Invoice/cac:InvoiceLine",
        Some("Invoice/LegalMonetaryTotal"),
    );
    let items = decode_ok(ubl, &options);
    assert_eq!(items.len(), 3, "{items:?}");
    let Item::Control(t) = &items[0] else {
        panic!("{items:?}")
    };
    assert_eq!(t.locator.line, 139);
    assert_eq!(get(t, "PayableAmount"), Some("1656.25"));
    assert_eq!(get(t, "PayableAmount/@currencyID"), Some("EUR"));
    let Item::Record(l1) = &items[1] else {
        panic!("{items:?}")
    };
    assert_eq!((l1.locator.line, l1.locator.row), (147, 1));
    assert_eq!(get(l1, "ID"), Some("1"));
    assert_eq!(get(l1, "InvoicedQuantity"), Some("7"));
    assert_eq!(get(l1, "InvoicedQuantity/@unitCode"), Some("DAY"));
    assert_eq!(get(l1, "LineExtensionAmount"), Some("2800"));
    assert_eq!(get(l1, "LineExtensionAmount/@currencyID"), Some("EUR"));
    assert_eq!(get(l1, "OrderLineReference/LineID"), Some("123"));
    assert_eq!(get(l1, "Item/Name"), Some("item name"));
    assert_eq!(
        get(l1, "Item/StandardItemIdentification/ID/@schemeID"),
        Some("0088")
    );
    assert_eq!(
        get(l1, "Item/ClassifiedTaxCategory/TaxScheme/ID"),
        Some("VAT")
    );
    assert_eq!(get(l1, "Price/PriceAmount"), Some("400"));
    assert!(
        l1.header.names().iter().all(|n| !n.contains(':')),
        "{:?}",
        l1.header
    );
    let Item::Record(l2) = &items[2] else {
        panic!("{items:?}")
    };
    assert_eq!((l2.locator.line, l2.locator.row), (179, 2));
    assert_eq!(get(l2, "LineExtensionAmount"), Some("-1500"));
    assert_eq!(get(l2, "Item/Description"), Some("Description 2"));
    assert_eq!(get(l2, "AccountingCost"), None);
}

/// A whole UBL document as one record: its repeated lines are numbered path columns, the
/// groups `each: CreditNoteLine` gathers in document order.
#[test]
fn peppol_ubl_credit_note_lines_as_numbered_columns_of_the_document() {
    let Some(ubl) = real("peppol_bis3_ubl_creditnote_base-creditnote-correction.xml") else {
        return;
    };
    let items = decode_ok(ubl, &options("CreditNote", None));
    assert_eq!(items.len(), 1, "{items:?}");
    let Item::Record(note) = &items[0] else {
        panic!("{items:?}")
    };
    let line = |prefix: &str| {
        [
            "ID",
            "CreditedQuantity",
            "CreditedQuantity/@unitCode",
            "LineExtensionAmount",
            "OrderLineReference/LineID",
            "Item/Name",
            "Item/ClassifiedTaxCategory/ID",
            "Item/ClassifiedTaxCategory/Percent",
        ]
        .map(|p| get(note, &format!("{prefix}/{p}")))
    };
    assert_eq!(
        line("CreditNoteLine"),
        ["1", "7", "DAY", "2800", "123", "item name", "S", "25.0"].map(Some)
    );
    assert_eq!(
        line("CreditNoteLine[2]"),
        ["2", "-3", "DAY", "-1500", "123", "item name 2", "S", "25.0"].map(Some)
    );
    assert_eq!(get(note, "CreditNoteLine[3]/ID"), None, "two lines");
}
