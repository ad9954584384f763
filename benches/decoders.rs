//! Decoder benchmark: records per second and peak memory of each streaming decoder on a large
//! generated file (1,000,000 records by default; `BENCH_RECORDS` changes it). Each decoder runs
//! in a child process of its own, so its peak RSS (VmHWM) is its own; each also runs at a quarter
//! of the size, to show that memory does not grow with the file.
//!
//!     cargo bench --bench decoders

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use council_bridge::formats::csv::CsvOptions;
use council_bridge::formats::encoding::Encoding;
use council_bridge::formats::fixed_width::{
    FixedColumn, FixedWidthOptions, RecordKind, RecordLayout,
};
use council_bridge::formats::json::JsonOptions;
use council_bridge::formats::xml::XmlOptions;
use council_bridge::formats::{FormatOptions, Item};

const FORMATS: [&str; 5] = ["csv", "fixed_width", "xml", "json", "ndjson"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], Path::new(&args[i + 2]));
        return;
    }
    // `cargo test --all-targets` runs bench targets without `--bench`: do nothing then.
    if !args.iter().any(|a| a == "--bench") {
        println!("benches/decoders.rs: run with `cargo bench --bench decoders`");
        return;
    }
    let records: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .map(|v| v.trim().parse().expect("BENCH_RECORDS is a whole number"))
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "council-bridge decoder benchmark: {records} records per file; each decoder in its own process\n"
    );
    println!(
        "{:<12} {:>10} {:>10} {:>9} {:>12} {:>13}",
        "format", "records", "file MB", "seconds", "records/s", "peak RSS MB"
    );
    println!("{}", "-".repeat(72));
    for format in FORMATS {
        for n in [records / 4, records] {
            let path = dir.path().join(format!("{format}-{n}"));
            generate(format, &path, n);
            let size = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--child", format, path.to_str().unwrap()])
                .output()
                .expect("run the child");
            assert!(
                out.status.success(),
                "{format} child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let mut it = text.split_whitespace();
            let (count, secs, rss): (usize, f64, f64) = (
                it.next().unwrap().parse().unwrap(),
                it.next().unwrap().parse().unwrap(),
                it.next().unwrap().parse().unwrap(),
            );
            assert_eq!(count, n, "{format}: every generated record decoded");
            println!(
                "{format:<12} {n:>10} {size:>10.1} {secs:>9.2} {:>12.0} {:>13.1}",
                n as f64 / secs,
                rss
            );
            std::fs::remove_file(&path).ok();
        }
    }
}

fn options(format: &str) -> FormatOptions {
    match format {
        "csv" => FormatOptions::Csv(CsvOptions {
            encoding: Encoding::for_label("windows-1252").unwrap(),
            ..CsvOptions::default()
        }),
        "fixed_width" => FormatOptions::FixedWidth(FixedWidthOptions {
            encoding: Encoding::for_label("iso-8859-1").unwrap(),
            records: vec![RecordLayout {
                prefix: Some("D".into()),
                kind: RecordKind::Detail,
                columns: vec![
                    FixedColumn {
                        name: "Employee".into(),
                        start: 2,
                        length: 8,
                    },
                    FixedColumn {
                        name: "Name".into(),
                        start: 10,
                        length: 20,
                    },
                    FixedColumn {
                        name: "Date".into(),
                        start: 30,
                        length: 8,
                    },
                    FixedColumn {
                        name: "Gross".into(),
                        start: 38,
                        length: 11,
                    },
                ],
            }],
        }),
        "xml" => FormatOptions::Xml(XmlOptions {
            encoding: None,
            record_path: "Export/Employee".into(),
            control_path: None,
        }),
        "json" => FormatOptions::Json(JsonOptions {
            records_at: "/workers".into(),
            ndjson: false,
        }),
        _ => FormatOptions::Json(JsonOptions {
            records_at: String::new(),
            ndjson: true,
        }),
    }
}

fn child(format: &str, path: &Path) {
    let start = Instant::now();
    let file = std::fs::File::open(path).unwrap();
    let decoder = council_bridge::formats::open("bench", file, &options(format)).unwrap();
    let mut count = 0usize;
    for item in decoder {
        match item.expect("no file error") {
            Item::Record(r) => {
                std::hint::black_box(&r);
                count += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    println!("{count} {} {}", start.elapsed().as_secs_f64(), vmhwm_mb());
}

fn vmhwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Writes `n` fictional employee records in `format`, streaming (the generator itself holds one
/// record at a time).
fn generate(format: &str, path: &PathBuf, n: usize) {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let name = |i: usize| format!("Employee {i:07} Ren\u{e9}e");
    match format {
        "csv" => {
            writeln!(w, "Employee,Name,Date,Gross\r").unwrap();
            for i in 0..n {
                let line = format!(
                    "E{i:07},\"{}\",01/10/2026,\"\u{a3}{},{:03}.{:02}\"\r\n",
                    name(i),
                    1 + i % 9,
                    i % 1000,
                    i % 100
                );
                let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&line);
                w.write_all(&bytes).unwrap();
            }
        }
        "fixed_width" => {
            for i in 0..n {
                let line = format!(
                    "DE{i:07}{:<20}20261001{:011}\r\n",
                    format!("Name {i}"),
                    i * 7
                );
                w.write_all(line.as_bytes()).unwrap();
            }
        }
        "xml" => {
            writeln!(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Export>").unwrap();
            for i in 0..n {
                writeln!(
                    w,
                    "  <Employee id=\"E{i:07}\"><Name><Forename>{}</Forename><Surname>Test</Surname></Name><Start>2026-10-01</Start><Pay gross=\"{}.{:02}\"/></Employee>",
                    name(i),
                    i % 5000,
                    i % 100
                )
                .unwrap();
            }
            writeln!(w, "</Export>").unwrap();
        }
        "json" => {
            write!(w, "{{\"workers\":[").unwrap();
            for i in 0..n {
                if i > 0 {
                    write!(w, ",").unwrap();
                }
                write!(w, "\n{{\"id\":\"E{i:07}\",\"name\":{{\"given\":\"{}\",\"family\":\"Test\"}},\"start\":\"2026-10-01\",\"gross\":{}.{:02}}}", name(i), i % 5000, i % 100).unwrap();
            }
            writeln!(w, "\n]}}").unwrap();
        }
        _ => {
            for i in 0..n {
                writeln!(w, "{{\"id\":\"E{i:07}\",\"name\":{{\"given\":\"{}\",\"family\":\"Test\"}},\"gross\":{}.{:02}}}", name(i), i % 5000, i % 100).unwrap();
            }
        }
    }
    w.flush().unwrap();
}
