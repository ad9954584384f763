//! Keeps ARCHITECTURE.md true: data moves one way through the stages, and the invariants
//! written there as absences hold in the source. A failure here names the file and the line.

use std::path::{Path, PathBuf};

/// Stages in data-flow order: a module may use only the ones before it.
const STAGES: &[&str] = &[
    "sources",
    "formats",
    "mapping",
    "canonical",
    "store",
    "amqp",
    "pipeline",
    "api",
    "daemon",
    "cli",
];
/// Modules any stage may use.
const SHARED: &[&str] = &["pii", "telemetry", "metrics", "schedule"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// (file, line number, line) for every non-comment line of the crate.
fn lines() -> Vec<(PathBuf, String, usize, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = Vec::new();
    for f in files {
        let module = module_of(&src, &f);
        for (i, line) in std::fs::read_to_string(&f).unwrap().lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("//") {
                continue;
            }
            out.push((f.clone(), module.clone(), i + 1, line.to_string()));
        }
    }
    out
}

#[test]
fn stages_depend_only_on_earlier_stages() {
    let mut violations = Vec::new();
    for (file, module, n, line) in lines() {
        let Some(me) = STAGES.iter().position(|s| *s == module) else {
            continue;
        };
        for (i, other) in STAGES.iter().enumerate() {
            let uses = line.contains(&format!("crate::{other}::"))
                || line.contains(&format!("crate::{other};"))
                || line.contains(&format!("crate::{other} "));
            if uses && i >= me && *other != module {
                violations.push(format!(
                    "{}:{n}: `{module}` uses the later stage `{other}`",
                    file.display()
                ));
            }
        }
        if line.contains("crate::config")
            && !["pipeline", "daemon", "cli"].contains(&module.as_str())
        {
            violations.push(format!(
                "{}:{n}: only pipeline, daemon and cli read the configuration",
                file.display()
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "dependency direction broken:\n{}",
        violations.join("\n")
    );
    assert!(SHARED.iter().all(|m| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("src/{m}.rs"))
            .exists()
    }));
}

fn only_in(needle: &str, allowed: &[&str], why: &str) {
    let bad: Vec<String> = lines()
        .into_iter()
        // A needle inside a string (a log filter naming a crate) is not a use of it.
        .filter(|(_, module, _, line)| {
            line.contains(needle)
                && !line.contains(&format!("\"{needle}"))
                && !allowed.contains(&module.as_str())
        })
        .map(|(f, _, n, _)| format!("{}:{n}", f.display()))
        .collect();
    assert!(
        bad.is_empty(),
        "{why}; found `{needle}` at:\n{}",
        bad.join("\n")
    );
}

#[test]
fn only_amqp_talks_to_the_broker() {
    only_in("lapin::", &["amqp"], "only amqp talks to the broker");
}

#[test]
fn only_store_touches_sqlite() {
    only_in(
        "rusqlite",
        &["store"],
        "nothing but store opens the database",
    );
}

#[test]
fn only_store_touches_postgresql() {
    only_in(
        "postgres::",
        &["store"],
        "nothing but store opens the database",
    );
}

#[test]
fn mapping_and_canonical_do_no_io_beyond_loading_their_definitions() {
    for needle in ["std::net", "tokio", "reqwest", "std::process"] {
        only_in(
            needle,
            &[
                "amqp",
                "pipeline",
                "api",
                "daemon",
                "cli",
                "main",
                "sources",
                "telemetry",
                "store",
            ],
            "mapping, canonical and formats do no network or process I/O",
        );
    }
    let fs_uses: Vec<String> = lines()
        .into_iter()
        .filter(|(_, m, _, l)| {
            ["mapping", "canonical", "formats"].contains(&m.as_str()) && l.contains("std::fs::")
        })
        .map(|(f, _, _, _)| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        fs_uses.iter().all(|f| f == "mod.rs" || f == "modulus.rs"),
        "file reads in mapping/canonical are only their loaders (mapping::load, Registry::load, ModulusTable::load): {fs_uses:?}"
    );
}

#[test]
fn the_binary_is_thin() {
    let main =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).unwrap();
    // The allocator is the binary's choice (a library does not impose one on its users).
    let code: Vec<&str> = main
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .filter(|l| *l != "#[global_allocator]" && !l.starts_with("static ALLOCATOR:"))
        .collect();
    assert!(
        code.len() <= 3 && code.contains(&"council_bridge::cli::main()"),
        "main.rs only picks the allocator and calls cli::main: {code:?}"
    );
}
