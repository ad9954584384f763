//! Entry points of the fuzz targets, shared by `cargo fuzz` (fuzz/fuzz_targets/*.rs) and by
//! `cargo test` (tests/fuzz_regressions.rs replays fuzz/regressions/<target>/* through them).
//! Each feeds arbitrary bytes to one public entry point the bridge uses on council files or
//! mapping files; a panic, a hang or unbounded memory is a finding. Errors are expected.

#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use council_bridge::canonical::Registry;
use council_bridge::formats::csv::{ControlMatch, CsvOptions};
use council_bridge::formats::encoding::Encoding;
use council_bridge::formats::{self, ColumnRef, FormatOptions, Header, Limits, SourceRecord};
use council_bridge::mapping::{self, Mapping};

/// The repository root (this file is built from the repository and from fuzz/).
fn repo() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    if here.join("schemas").is_dir() {
        here.to_path_buf()
    } else {
        here.parent()
            .expect("fuzz/ is inside the repository")
            .to_path_buf()
    }
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::load(&repo().join("schemas")).expect("schemas load"))
}

fn sample_mapping(rel: &str) -> Mapping {
    mapping::load(&repo().join(rel), registry()).expect("sample mapping compiles")
}

/// Small limits, so that a fuzzer run spends its time on parsing, not on big inputs.
fn limits() -> Limits {
    Limits {
        max_decompressed_bytes: 4 * 1024 * 1024,
        max_line_bytes: 64 * 1024,
        max_record_bytes: 64 * 1024,
        max_field_bytes: 16 * 1024,
        max_columns: 1000,
        max_records: 10_000,
        max_workbook_bytes: 1024 * 1024,
        max_cells: 100_000,
        max_shared_strings: 10_000,
        ..Limits::default()
    }
}

/// Decodes `data` to the end (every item, bounded by the limits), as the pipeline would.
fn decode(name: &str, data: &[u8], options: &FormatOptions) {
    let Ok(decoder) = formats::open_limited(name, Cursor::new(data.to_vec()), options, &limits())
    else {
        return;
    };
    let _ = decoder.header();
    for item in decoder.take(20_000) {
        if item.is_err() {
            break;
        }
    }
}

/// CSV with encodings: the first byte chooses the encoding, delimiter, title rows and trailer.
pub fn decode_csv(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let encodings = [
        "auto",
        "utf-8",
        "windows-1252",
        "utf-16le",
        "utf-16be",
        "iso-8859-1",
        "shift_jis",
        "gb18030",
    ];
    let encoding = match encodings[usize::from(selector) % encodings.len()] {
        "auto" => Encoding::AUTO,
        label => Encoding::for_label(label).expect("known label"),
    };
    let options = CsvOptions {
        encoding,
        delimiter: [b',', b';', b'|', b'\t'][usize::from(selector >> 3) % 4],
        skip_rows: usize::from(selector >> 5) % 3,
        header: selector & 0x80 == 0,
        control_match: (selector & 0x40 != 0).then(|| ControlMatch {
            column: ColumnRef::Position(1),
            pattern: regex::Regex::new("^TRAILER$").expect("regex"),
        }),
        ..CsvOptions::default()
    };
    decode("fuzz.csv", rest, &FormatOptions::Csv(options));
}

fn format_of(rel: &str) -> FormatOptions {
    static CACHE: OnceLock<std::sync::Mutex<Vec<(String, FormatOptions)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().expect("cache");
    if let Some((_, f)) = cache.iter().find(|(r, _)| r == rel) {
        return f.clone();
    }
    let f = sample_mapping(rel).source.format.clone();
    cache.push((rel.to_string(), f.clone()));
    f
}

/// Fixed-width records (Riverton's mainframe payroll layout).
pub fn decode_fixed_width(data: &[u8]) {
    decode(
        "fuzz.txt",
        data,
        &format_of("mappings/riverton/payroll.yaml"),
    );
}

/// XML (Riverton's namespaced HR export: record path, control path).
pub fn decode_xml(data: &[u8]) {
    decode(
        "fuzz.xml",
        data,
        &format_of("mappings/riverton/hr_employee.yaml"),
    );
}

/// JSON at a pointer (Eastborough's HR API) or, when the first byte is odd, NDJSON.
pub fn decode_json(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let options = if selector & 1 == 1 {
        FormatOptions::Json(formats::json::JsonOptions {
            records_at: String::new(),
            ndjson: true,
        })
    } else {
        format_of("mappings/eastborough/hr_workers.yaml")
    };
    decode("fuzz.json", rest, &options);
}

/// Spreadsheets (XLSX, XLS, ODS: told by their bytes), with Eastborough's header search.
pub fn decode_spreadsheet(data: &[u8]) {
    decode(
        "fuzz.xlsx",
        data,
        &format_of("mappings/eastborough/supplier_payments.yaml"),
    );
}

fn payroll_record() -> SourceRecord {
    let header = Arc::new(Header::new(
        [
            "Employee No",
            "Employee Name",
            "Freq",
            "Period Start",
            "Period End",
            "Pay Date",
            "Tax Code",
            "NI Cat",
            "Gross Pay",
            "Net Pay",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ));
    SourceRecord {
        locator: formats::Locator {
            file: "fuzz.csv".into(),
            line: 3,
            row: 1,
        },
        header,
        values: [
            "010401",
            "Okafor, Grace",
            "M",
            "01/10/2026",
            "31/10/2026",
            "27/10/2026",
            "1257L",
            "A",
            "£3,912.50",
            "£2,844.29",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    }
}

/// The mapping YAML compiler: any text; what compiles is bound and applied to a record.
pub fn mapping_compile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = mapping::compile_str("fuzz.yaml", text, registry()) {
        let record = payroll_record();
        let binding = m.bind_lenient(&record.header);
        let _ = m.apply(&binding, &record);
    }
}

/// The `expr` compiler and runner: the bytes are a jq program in a field's transforms.
pub fn expr_compile(data: &[u8]) {
    let Ok(program) = std::str::from_utf8(data) else {
        return;
    };
    let quoted = serde_json::to_string(program).expect("a string serialises");
    let text = format!(
        "mapping: fuzz\nversion: 1\nentity: payroll.pay_result\naction: upserted\nsource:\n  format: csv\nkey: [employee_number]\nfields:\n  employee_number:\n    from: \"Employee No\"\n    transforms: [{{ expr: {quoted} }}]\n"
    );
    if let Ok(m) = mapping::compile_str("fuzz.yaml", &text, registry()) {
        let record = payroll_record();
        let binding = m.bind_lenient(&record.header);
        let _ = m.apply(&binding, &record);
    }
}
