//! Replays the inputs the fuzz targets found (and a few seeds) through the same entry points
//! (fuzz/entry.rs): fuzz/regressions/<target>/*. Each must run to the end without a panic,
//! and quickly. How the targets are run, and what they found: docs/fuzzing.md.

#[path = "../fuzz/entry.rs"]
mod entry;

use std::time::{Duration, Instant};

fn replay(target: &str, run: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .collect();
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "{}: no regression inputs",
        dir.display()
    );
    for input in inputs {
        let bytes = std::fs::read(&input).unwrap();
        let start = Instant::now();
        run(&bytes);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} took {:?}",
            input.display(),
            start.elapsed()
        );
    }
}

#[test]
fn decode_csv() {
    replay("decode_csv", entry::decode_csv);
}

#[test]
fn decode_fixed_width() {
    replay("decode_fixed_width", entry::decode_fixed_width);
}

#[test]
fn decode_xml() {
    replay("decode_xml", entry::decode_xml);
}

#[test]
fn decode_json() {
    replay("decode_json", entry::decode_json);
}

#[test]
fn decode_spreadsheet() {
    replay("decode_spreadsheet", entry::decode_spreadsheet);
}

#[test]
fn mapping_compile() {
    replay("mapping_compile", entry::mapping_compile);
}

#[test]
fn expr_compile() {
    replay("expr_compile", entry::expr_compile);
}
