//! Fuzz target `expr_compile`: see docs/fuzzing.md. The entry point is shared with the regression
//! test (tests/fuzz_regressions.rs), which replays fuzz/regressions/expr_compile/*.
#![no_main]

#[path = "../entry.rs"]
mod entry;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entry::expr_compile(data));
