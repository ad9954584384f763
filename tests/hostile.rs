//! Hostile and broken input cannot hurt the bridge (issue 10): crafted files generated here run
//! through the real CLI as a child process (`mapping preview`, `run`), each refused or failed
//! with a message naming the limit and its setting, within a memory ceiling measured on the
//! child (its peak resident set, VmHWM) and a time bound. Plus one test per
//! finding: a poison file beside a good one, a NUL in a key, a header error without data
//! values, malformed broker URLs, council paths outside the allowed roots, and the failure
//! store's bound on raw values.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, stdout};

/// Peak resident memory any child may reach.
const CEILING_MB: u64 = 256;
/// Longest any child may run.
const TIME_BOUND: Duration = Duration::from_secs(30);

/// What a measured child did.
struct Measured {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    peak_mb: u64,
    elapsed: Duration,
}

impl Measured {
    fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    fn within_bounds(&self, what: &str) {
        assert!(
            self.peak_mb < CEILING_MB,
            "{what}: peak RSS {} MB ≥ {CEILING_MB} MB",
            self.peak_mb
        );
        assert!(self.elapsed < TIME_BOUND, "{what}: took {:?}", self.elapsed);
        eprintln!(
            "{what}: exit {:?}, peak RSS {} MB, {:.2} s",
            self.code,
            self.peak_mb,
            self.elapsed.as_secs_f64()
        );
    }
}

/// Runs the CLI in `sandbox` as a child process, waiting for it with `wait4` so that its own
/// peak RSS (`ru_maxrss`) is known; killed past [`TIME_BOUND`].
#[allow(clippy::zombie_processes)] // reaped by waitpid below, which std does not see
fn measured(sandbox: &Sandbox, args: &[&str], envs: &[(&str, &str)]) -> Measured {
    let exe = assert_cmd::cargo::cargo_bin("council-bridge");
    let mut cmd = Command::new(exe);
    cmd.current_dir(sandbox.dir.path())
        .env_remove("AMQP_URL")
        .env_remove("COUNCIL_BRIDGE_STORE")
        .env("COUNCIL_BRIDGE_CONFIG", sandbox.config())
        .env("COUNCIL_BRIDGE_ACTOR", "test-operator")
        .env("RUST_LOG", "info")
        .args(["--log-format", "json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut s).unwrap();
        s
    });
    // The child's peak RSS is its VmHWM (high-water mark, reset by exec, so the test process's
    // own memory does not count; rusage's ru_maxrss would inherit it across the spawn), sampled
    // until it exits: being a high-water mark, any sample after the peak sees it.
    let status_file = format!("/proc/{pid}/status");
    let mut peak_kb = 0u64;
    let mut status = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        // SAFETY: pid is our own child, not yet reaped; status is a valid pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        assert!(r == 0, "waitpid failed");
        if start.elapsed() > TIME_BOUND * 2 {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(peak_kb > 0, "the child's memory was sampled");
    let elapsed = start.elapsed();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Measured {
        code,
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        peak_mb: peak_kb / 1024,
        elapsed,
    }
}

/// A gzip member holding `bytes`.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A gzip file of `head`, then `mib` MiB of `fill`, then `tail`, written as concatenated
/// members (one compressed MiB repeated), so a gigabyte costs a megabyte and no time.
fn gzip_file(path: &Path, head: &[u8], fill: u8, mib: usize, tail: &[u8]) -> u64 {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&gzip(head)).unwrap();
    let block = gzip(&vec![fill; 1024 * 1024]);
    for _ in 0..mib {
        f.write_all(&block).unwrap();
    }
    f.write_all(&gzip(tail)).unwrap();
    f.flush().unwrap();
    drop(f);
    std::fs::metadata(path).unwrap().len()
}

fn preview(sandbox: &Sandbox, mapping: &str, sample: &Path) -> Measured {
    measured(
        sandbox,
        &[
            "mapping",
            "preview",
            sandbox.path(mapping).to_str().unwrap(),
            "--sample",
            sample.to_str().unwrap(),
        ],
        &[],
    )
}

fn assert_refused(m: &Measured, what: &str, setting: &str) {
    assert_refused_by(m, what, &[setting]);
}

/// Refused, within bounds, by one of `settings` (the one the parser meets first).
fn assert_refused_by(m: &Measured, what: &str, settings: &[&str]) {
    m.within_bounds(what);
    assert_ne!(m.code, Some(0), "{what}: {}", m.text());
    assert!(
        settings
            .iter()
            .any(|s| m.text().contains(&format!("limits.{s}"))),
        "{what}: expected the message to name one of {settings:?}: {}",
        m.text()
    );
}

const PAYROLL: &str = "mappings/northshire/payroll.yaml";

#[test]
fn the_issue_table_is_refused_quickly_in_bounded_memory() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("crafted");
    std::fs::create_dir_all(&dir).unwrap();

    // gzip of one 4 GB line with no newline (4 MB on disk).
    let f = dir.join("one_4gb_line.csv.gz");
    let size = gzip_file(&f, b"Title\n", b'a', 4096, b"");
    assert!(size < 8 * 1024 * 1024);
    assert_refused_by(
        &preview(&sandbox, PAYROLL, &f),
        "gzip of a 4 GB line",
        &["max_line_bytes", "max_record_bytes"],
    );

    // gzip of a CSV whose one row has a 1.15 GB field.
    let f = dir.join("huge_field.csv.gz");
    gzip_file(
        &f,
        &[payroll_head().as_slice(), b"010401,\""].concat(),
        b'x',
        1180,
        b"\"\n",
    );
    assert_refused_by(
        &preview(&sandbox, PAYROLL, &f),
        "gzip of a 1.15 GB field",
        &["max_line_bytes", "max_record_bytes"],
    );

    // gzip of one 1 GB line.
    let f = dir.join("one_1gb_line.csv.gz");
    gzip_file(&f, b"Title\n", b'z', 1024, b"\n");
    assert_refused_by(
        &preview(&sandbox, PAYROLL, &f),
        "gzip of a 1 GB line",
        &["max_line_bytes", "max_record_bytes"],
    );

    // A CSV header of 1,000,000 columns.
    let f = dir.join("wide.csv");
    let mut text = b"Title\n".to_vec();
    for i in 0..1_000_000 {
        if i > 0 {
            text.push(b',');
        }
        text.push(b'a' + (i % 26) as u8);
    }
    text.extend_from_slice(b"\n1\n");
    std::fs::write(&f, text).unwrap();
    assert_refused(
        &preview(&sandbox, PAYROLL, &f),
        "a 1,000,000-column header",
        "max_columns",
    );

    // A CSV with one 50 MB field (no compression): the record limit stops the parser.
    let f = dir.join("field_50mb.csv");
    let mut text = [payroll_head().as_slice(), b"010401,\""].concat();
    text.extend(std::iter::repeat_n(b'q', 50 * 1024 * 1024));
    text.extend_from_slice(b"\"\n");
    std::fs::write(&f, text).unwrap();
    assert_refused_by(
        &preview(&sandbox, PAYROLL, &f),
        "a 50 MB field",
        &["max_line_bytes", "max_record_bytes"],
    );
}

#[test]
fn deep_and_wide_trees_are_refused_in_bounded_memory() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("crafted");
    std::fs::create_dir_all(&dir).unwrap();

    // XML nested 100,000 levels inside a record (1.3 MB): refused at the depth limit.
    let f = dir.join("deep.xml");
    let mut xml = String::from("<Export><Employee>");
    for _ in 0..100_000 {
        xml.push_str("<a>");
    }
    for _ in 0..100_000 {
        xml.push_str("</a>");
    }
    xml.push_str("</Employee></Export>");
    std::fs::write(&f, xml).unwrap();
    assert_refused(
        &preview(&sandbox, "mappings/riverton/hr_employee.yaml", &f),
        "XML 100,000 levels deep",
        "max_depth",
    );

    // JSON nested deeper than the limit.
    let f = dir.join("deep.json");
    let json = format!(
        "{{\"workers\": [{}{}]}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    std::fs::write(&f, json).unwrap();
    let m = preview(&sandbox, "mappings/eastborough/hr_workers.yaml", &f);
    m.within_bounds("JSON 10,000 levels deep");
    assert!(m.text().contains("limits.max_depth"), "{}", m.text());

    // An XML element with more attributes than allowed fails its record.
    let f = dir.join("attributes.xml");
    let attrs: String = (0..300).map(|i| format!(" a{i}=\"v\"")).collect();
    std::fs::write(
        &f,
        format!("<Export><Employee{attrs}><NINumber>x</NINumber></Employee></Export>"),
    )
    .unwrap();
    let m = preview(&sandbox, "mappings/riverton/hr_employee.yaml", &f);
    m.within_bounds("300 XML attributes");
    assert!(m.text().contains("limits.max_attributes"), "{}", m.text());
}

/// An XLSX whose shared-string table holds one value of `mib` MiB and whose sheet has
/// `rows_mib` MiB of blank rows, written with the zip crate.
fn xlsx(path: &Path, mib: usize, rows_mib: usize) {
    let f = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let files: [(&str, &str); 4] = [
        (
            "[Content_Types].xml",
            r#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>"#,
        ),
        (
            "_rels/.rels",
            r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#,
        ),
        (
            "xl/workbook.xml",
            r#"<?xml version="1.0"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>"#,
        ),
        (
            "xl/_rels/workbook.xml.rels",
            r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#,
        ),
    ];
    for (name, body) in files {
        zip.start_file(name, opts).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    }
    zip.start_file("xl/worksheets/sheet1.xml", opts).unwrap();
    zip.write_all(br#"<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c></row>"#).unwrap();
    // Rows padded with whitespace: few parser events per MiB, so the test stays quick.
    let row = [b"<row>".as_slice(), &[b' '; 32 * 1024 - 11], b"</row>"].concat();
    let rows = row.repeat(32);
    for _ in 0..rows_mib {
        zip.write_all(&rows).unwrap();
    }
    zip.write_all(b"</sheetData></worksheet>").unwrap();
    zip.start_file("xl/sharedStrings.xml", opts).unwrap();
    zip.write_all(br#"<?xml version="1.0"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1"><si><t>"#).unwrap();
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..mib {
        zip.write_all(&chunk).unwrap();
    }
    zip.write_all(b"</t></si></sst>").unwrap();
    zip.finish().unwrap();
}

#[test]
fn a_spreadsheet_with_a_huge_cell_is_refused_before_calamine_inflates_it() {
    let sandbox = Sandbox::new();
    let f = sandbox.path("big_cell.xlsx");
    xlsx(&f, 24, 0);
    let m = preview(&sandbox, "mappings/eastborough/supplier_payments.yaml", &f);
    assert_refused(&m, "an XLSX with a 24 MiB cell", "max_field_bytes");

    // A zip bomb: a sheet of 40 MiB of empty rows compresses about a thousand times.
    let f = sandbox.path("bomb.xlsx");
    xlsx(&f, 0, 40);
    assert!(std::fs::metadata(&f).unwrap().len() < 1024 * 1024);
    let m = preview(&sandbox, "mappings/eastborough/supplier_payments.yaml", &f);
    assert_refused(&m, "an XLSX zip bomb", "max_compression_ratio");
}

/// Adds `extra` lines under the feed `feed:` of a council's council.yaml.
fn configure_feed(sandbox: &Sandbox, council: &str, feed: &str, extra: &str) {
    let path = sandbox.path(&format!("mappings/{council}/council.yaml"));
    let yaml = std::fs::read_to_string(&path).unwrap();
    let anchor = format!("  {feed}:\n");
    let at = yaml.find(&anchor).expect("feed in council.yaml") + anchor.len();
    let mut out = yaml[..at].to_string();
    out.push_str(extra);
    out.push_str(&yaml[at..]);
    std::fs::write(&path, out).unwrap();
}

fn batches(sandbox: &Sandbox) -> Vec<serde_json::Value> {
    sandbox
        .json(&["batches", "list"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn limits_edges_through_run_fail_the_file_and_the_rest_goes_on() {
    let sandbox = Sandbox::new();
    // Per-feed limits, set low to meet their edges with small files.
    configure_feed(
        &sandbox,
        "northshire",
        "payroll",
        "    rejected: rejected/payroll\n    limits:\n      max_records: 16\n      max_line_bytes: 2048\n      max_compression_ratio: 100000\n",
    );
    configure_feed(
        &sandbox,
        "eastborough",
        "supplier-payments",
        "    limits: { max_cells: 20 }\n",
    );
    let payroll = sandbox.path("mappings/northshire/samples/payroll");
    let sample = std::fs::read(payroll.join("payroll_202610.csv")).unwrap();
    // 15 rows + trailer = 16 records: at the edge, accepted. One more row: over.
    let lines: Vec<&[u8]> = sample.split(|b| *b == b'\n').collect();
    let mut over = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        over.extend_from_slice(l);
        over.push(b'\n');
        if i == 2 {
            let mut extra = l.to_vec();
            extra[..6].copy_from_slice(b"099999");
            over.extend_from_slice(&extra);
            over.push(b'\n');
        }
    }
    std::fs::write(payroll.join("a_one_record_too_many.csv"), &over).unwrap();
    // A line of 3000 bytes (limit 2048): the file fails, sorted before the good one.
    let mut long = lines[..2].join(&b'\n');
    long.extend_from_slice(b"\n010499,\"");
    long.extend(std::iter::repeat_n(b'n', 3000));
    long.extend_from_slice(b"\",M\n");
    std::fs::write(payroll.join("b_long_line.csv"), &long).unwrap();

    let m = measured(&sandbox, &["run"], &[]);
    m.within_bounds("run with limits");
    let text = m.stdout.clone();
    assert_eq!(m.code, Some(1), "{}", m.text());
    assert!(text.contains("limits.max_records"), "{text}");
    assert!(text.contains("limits.max_line_bytes"), "{text}");
    assert!(text.contains("limits.max_cells"), "{text}");
    assert!(
        text.contains("payroll_202610.csv  processed: read 15, valid 13, rejected 2"),
        "the good file at the edge of max_records is processed: {text}"
    );
    // Other councils and feeds went on.
    assert!(
        text.contains("PAYEXT_202610.txt  processed"),
        "riverton processed: {text}"
    );
    assert!(text.contains("employees_20261101.csv  processed"), "{text}");
    let rejected: Vec<_> = std::fs::read_dir(sandbox.path("mappings/northshire/rejected/payroll"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(
        batches(&sandbox)
            .iter()
            .all(|b| b["status"] != "processing"),
        "no batch is left processing"
    );
}

/// The payroll sample's title row and header row.
fn payroll_head() -> Vec<u8> {
    let sample = payroll_sample();
    let end = sample
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1)
        .unwrap()
        .0;
    sample[..=end].to_vec()
}

fn payroll_sample() -> Vec<u8> {
    std::fs::read(common::repo().join("mappings/northshire/samples/payroll/payroll_202610.csv"))
        .unwrap()
}

#[test]
fn a_poison_file_is_rejected_and_moved_aside_and_the_good_file_beside_it_is_processed() {
    let sandbox = Sandbox::new();
    configure_feed(
        &sandbox,
        "northshire",
        "payroll",
        "    archive: archive/payroll\n    rejected: rejected/payroll\n",
    );
    let payroll = sandbox.path("mappings/northshire/samples/payroll");
    // A 20 MB value in a mapped column, gzip (the good file sorts after it).
    let sample = payroll_sample();
    let head_end = sample
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1)
        .unwrap()
        .0
        + 1;
    let poison = payroll.join("a_poison.csv");
    gzip_file(
        &poison,
        &[&sample[..head_end], b"010401,\"".as_slice()].concat(),
        b'P',
        20,
        b"\",M\n",
    );
    for _ in 0..2 {
        let m = measured(&sandbox, &["run", "--council", "northshire"], &[]);
        m.within_bounds("run with a poison file");
        let text = m.stdout.clone();
        if poison.exists() {
            assert!(text.contains("a_poison.csv  FAILED"), "{text}");
            assert!(text.contains("limits.max_record_bytes"), "{text}");
            assert!(
                text.contains("payroll_202610.csv  processed: read 15, valid 13"),
                "{text}"
            );
            assert!(text.contains("supplier_payments_2026-11.csv  processed"));
        }
        assert!(!poison.exists(), "the poison file was moved aside");
    }
    assert_eq!(
        std::fs::read_dir(sandbox.path("mappings/northshire/rejected/payroll"))
            .unwrap()
            .count(),
        1
    );
    assert!(
        batches(&sandbox)
            .iter()
            .all(|b| b["status"] != "processing")
    );
}

#[test]
fn a_nul_in_a_key_is_refused_naming_the_field_never_the_value() {
    let sandbox = Sandbox::new();
    let payroll = sandbox.path("mappings/northshire/samples/payroll");
    let sample = payroll_sample();
    let bad: Vec<u8> = sample.replacen_bytes(b"\n010401,", b"\n0104\x0001,");
    std::fs::write(payroll.join("payroll_202610.csv"), bad).unwrap();
    let out = sandbox
        .cli(None)
        .args(["run", "--council", "northshire", "--feed", "payroll"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("employee_number control_character ×1"),
        "{text}"
    );
    let failures = sandbox.failures();
    let id = failures
        .iter()
        .find(|f| f["errors"] == "employee_number control_character")
        .expect("the row is a failure")["id"]
        .to_string();
    let shown = sandbox.json(&["failures", "show", &id]).to_string();
    assert!(shown.contains("control character U+0000"), "{shown}");
    let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains("0104\u{0}01"), "the value is never shown");
    let outbox = sandbox.json(&["outbox", "status"]);
    assert!(
        !outbox.to_string().contains('\u{0}'),
        "no key with a NUL reached the outbox"
    );
}

trait ReplaceBytes {
    fn replacen_bytes(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceBytes for Vec<u8> {
    fn replacen_bytes(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = self
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern present");
        [&self[..at], to, &self[at + from.len()..]].concat()
    }
}

#[test]
fn a_header_error_never_quotes_the_data_row_it_took_for_a_header() {
    let sandbox = Sandbox::new();
    let payroll = sandbox.path("mappings/northshire/samples/payroll");
    let sample = payroll_sample();
    // The export without its title row and without its header: the first data row is where
    // the mapping expects the header.
    let lines: Vec<&[u8]> = sample.split(|b| *b == b'\n').collect();
    let body = lines[2..].join(&b'\n');
    std::fs::write(payroll.join("payroll_202610.csv"), &body).unwrap();
    let first_row = String::from_utf8_lossy(lines[3]).into_owned();
    let out = sandbox
        .cli(None)
        .args(["run", "--council", "northshire", "--feed", "payroll"])
        .output()
        .unwrap();
    let all = format!(
        "{}{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr),
        serde_json::to_string(&batches(&sandbox)).unwrap()
    );
    assert!(all.contains("FAILED") || all.contains("failed"), "{all}");
    assert!(all.contains("has no column"), "{all}");
    for value in first_row.split(',').filter(|v| v.len() > 3) {
        let value = value.trim_matches('"');
        assert!(
            !all.contains(value),
            "a data value ({} bytes) appears in the output, logs or batch summary",
            value.len()
        );
    }
}

#[test]
fn malformed_broker_urls_are_refused_without_printing_or_sending_the_password() {
    let sandbox = Sandbox::new();
    // Something waits in the outbox, so a flush would connect.
    let out = sandbox
        .cli(None)
        .args(["run", "--council", "northshire", "--feed", "payroll"])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("processed"), "{}", stdout(&out));
    for url in [
        "amqp:/guest:Pw0nedS3cret@127.0.0.1:5672/%2f",
        "guest:Pw0nedS3cret@127.0.0.1:5672",
    ] {
        let m = measured(&sandbox, &["outbox", "flush"], &[("AMQP_URL", url)]);
        m.within_bounds("flush with a malformed URL");
        let text = m.text();
        assert_ne!(m.code, Some(0), "{text}");
        assert!(!text.contains("Pw0nedS3cret"), "{text}");
        assert!(text.contains("not valid"), "{text}");
    }
}

#[test]
fn council_paths_outside_the_allowed_roots_are_refused() {
    let sandbox = Sandbox::new();
    let victim = sandbox.path("elsewhere");
    std::fs::create_dir_all(&victim).unwrap();
    for (key, value) in [
        ("rejected", "../../elsewhere".to_string()),
        ("archive", victim.display().to_string()),
        ("input", format!("{}/*.csv", victim.display())),
    ] {
        let fresh = Sandbox::new();
        let line = format!("    {key}: {value}\n");
        if key == "input" {
            let path = fresh.path("mappings/northshire/council.yaml");
            let yaml = std::fs::read_to_string(&path)
                .unwrap()
                .replace("    input: samples/payroll/*.csv\n", &line);
            std::fs::write(&path, yaml).unwrap();
        } else {
            configure_feed(&fresh, "northshire", "payroll", &line);
        }
        for args in [&["mapping", "check"][..], &["run"][..]] {
            let out = fresh.cli(None).args(args).output().unwrap();
            let all = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
            assert_ne!(out.status.code(), Some(0), "{args:?} {key}: {all}");
            assert!(
                all.contains(&format!("`{key}` points outside")) && all.contains("allowed_roots"),
                "{args:?} {key}: {all}"
            );
        }
    }
    // The same folder, once allowed in the root configuration, is accepted.
    let fresh = Sandbox::new();
    let outside = fresh.path("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    let root = std::fs::read_to_string(fresh.config()).unwrap();
    std::fs::write(
        fresh.config(),
        format!("{root}allowed_roots: [var, elsewhere]\n"),
    )
    .unwrap();
    configure_feed(
        &fresh,
        "northshire",
        "payroll",
        "    rejected: ../../elsewhere\n",
    );
    let out = fresh.cli(None).args(["mapping", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn the_failure_store_keeps_a_long_raw_value_truncated_with_its_length_and_sha256() {
    use sha2::Digest;
    let sandbox = Sandbox::new();
    let payroll = sandbox.path("mappings/northshire/samples/payroll");
    let sample = payroll_sample();
    // A 300 KB tax code (under max_field_bytes): the row is rejected by the mapping.
    let long: String = "K".repeat(300 * 1024);
    let bad = sample.replacen_bytes(b",1257L,", format!(",{long},").as_bytes());
    std::fs::write(payroll.join("payroll_202610.csv"), bad).unwrap();
    let out = sandbox
        .cli(None)
        .args(["run", "--council", "northshire", "--feed", "payroll"])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("processed"), "{}", stdout(&out));
    let rows: Vec<(String, String)> = council_bridge::store::db::off_async(|| {
        sandbox
            .open_db()
            .query_map("SELECT raw_record, errors FROM failures", &[], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
    });
    assert!(
        rows.iter()
            .all(|(raw, errors)| raw.len() < 100 * 1024 && errors.len() < 100 * 1024),
        "raw values and the errors' values are bounded"
    );
    let raws: Vec<String> = rows.into_iter().map(|(raw, _)| raw).collect();
    let truncated = raws
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap())
        .flat_map(|v| v["values"].as_array().cloned().unwrap_or_default())
        .find(|v| v.is_object())
        .expect("a truncated value");
    assert_eq!(truncated["bytes"], long.len());
    assert_eq!(
        truncated["sha256"],
        hex::encode(sha2::Sha256::digest(long.as_bytes()))
    );
    // `failures show` still shows the row (the long value cut and, being personal, masked).
    let id = sandbox
        .failures()
        .iter()
        .find(|f| f["errors"].as_str().is_some_and(|e| e.contains("tax_code")))
        .expect("the long tax code's row is a failure")["id"]
        .to_string();
    let shown = sandbox.json(&["failures", "show", &id]).to_string();
    assert!(
        shown.contains(r#"{"column":"Tax Code","value":"****("#) && shown.len() < 10_000,
        "{}",
        &shown[..shown.len().min(2000)]
    );
}
