//! Fuzz target `decode_spreadsheet`: see docs/fuzzing.md. The entry point is shared with the regression
//! test (tests/fuzz_regressions.rs), which replays fuzz/regressions/decode_spreadsheet/*.
#![no_main]

#[path = "../entry.rs"]
mod entry;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entry::decode_spreadsheet(data));
