//! Where the tests find the public files real councils published: `../shared/data/real` beside
//! the repository (see `SOURCES.md` there). They are not committed into the project.
//!
//! When the folder or a file is missing, a test that needs it prints that it was not run and why,
//! and returns; with `COUNCIL_BRIDGE_REQUIRE_REAL_DATA=1` (set by `.ci/run` and `scripts/test.sh`
//! when `../shared` is present) the absence is a failure instead.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Set to `1` to make missing real files a test failure rather than a skipped test.
pub const REQUIRE_VAR: &str = "COUNCIL_BRIDGE_REQUIRE_REAL_DATA";

/// `<repository>/../shared/data/real`.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/real")
}

fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// The real file `name`, or `None` (after printing why the test was not run) when it is not
/// there; panics instead when [`REQUIRE_VAR`] is `1`.
pub fn file(name: &str) -> Option<PathBuf> {
    match locate(&dir(), name, required()) {
        Ok(Some(path)) => Some(path),
        Ok(None) => None,
        Err(why) => panic!("{why}"),
    }
}

/// `dir/name` if it is a file; else `Ok(None)` after printing that the test was not run and why,
/// or, when `required`, `Err` saying why.
pub fn locate(dir: &Path, name: &str, required: bool) -> Result<Option<PathBuf>, String> {
    let path = dir.join(name);
    if path.is_file() {
        return Ok(Some(path));
    }
    let why = format!(
        "real data file {} is missing (the public files live in ../shared/data/real beside the \
         repository, see SOURCES.md there; they are not committed)",
        path.display()
    );
    if required {
        return Err(format!("{why}; {REQUIRE_VAR}=1 makes this a failure"));
    }
    eprintln!("NOT RUN: {why}. Set {REQUIRE_VAR}=1 to make this a failure.");
    Ok(None)
}

/// All of `names`, or `None` when any is missing (see [`file`]).
pub fn files(names: &[&str]) -> Option<Vec<PathBuf>> {
    names.iter().map(|n| file(n)).collect()
}

/// The real data folder when it holds every file `SOURCES.md` lists, else `None` (see [`file`]).
pub fn all() -> Option<PathBuf> {
    let sources = file("SOURCES.md")?;
    let text = std::fs::read_to_string(&sources).unwrap();
    for name in listed(&text) {
        file(&name)?;
    }
    Some(dir())
}

/// The file names in the first column of `SOURCES.md`'s table (`| # | \`name\` | ...`).
pub fn listed(sources: &str) -> Vec<String> {
    sources
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(2)?;
            (cells.get(1)?.parse::<u32>().is_ok() && name.starts_with('`'))
                .then(|| name.trim_matches('`').to_string())
        })
        .collect()
}
