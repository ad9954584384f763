//! The mapping author's toolkit: `mapping test` (golden tests beside each mapping),
//! `mapping coverage` and `council init`. The work is done by `mapping::golden`; this module
//! finds and reads the files, and renders the results.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Env, registry};
use crate::canonical::Registry;
use crate::formats::{self, Header, Item};
use crate::mapping::golden::{self, Coverage, TestOutcome};
use crate::mapping::{self, FieldError};

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A path as the officer typed it or, for found files, relative to the working folder.
fn shown(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| p.to_path_buf())
        .display()
        .to_string()
}

/// Validation by the registry, inputs read beside the tests file.
struct Host<'a> {
    registry: &'a Registry,
    dir: PathBuf,
}

impl golden::Host for Host<'_> {
    fn validate(&self, entity: &str, body: &Value) -> Result<(), Vec<FieldError>> {
        match self.registry.get(entity) {
            Some(e) => e.validate(body),
            None => Err(vec![FieldError {
                field: "(record)".into(),
                column: None,
                rule: "schema".into(),
                message: format!("no canonical entity `{entity}`"),
                value: None,
            }]),
        }
    }
    fn read_input(&self, path: &str) -> Result<Vec<u8>, String> {
        std::fs::read(self.dir.join(path)).map_err(|e| e.to_string())
    }
}

/// Every `*.tests.yaml` under `dir`, sorted.
fn find_tests(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            find_tests(&p, out)?;
        } else if golden::is_tests_file(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// The results of one tests file.
struct FileRun {
    file: PathBuf,
    mapping: Option<PathBuf>,
    /// The file could not be run at all (unreadable, bad YAML, mapping does not compile).
    error: Option<String>,
    outcomes: Vec<TestOutcome>,
}

fn run_file(file: &Path, registry: &Registry) -> FileRun {
    let mut run = FileRun {
        file: file.to_path_buf(),
        mapping: None,
        error: None,
        outcomes: Vec::new(),
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            run.error = Some(format!("cannot read {}: {e}", shown(file)));
            return run;
        }
    };
    let tests = match golden::parse(&shown(file), &text) {
        Ok(t) => t,
        Err(e) => {
            run.error = Some(e.to_string());
            return run;
        }
    };
    let mapping_path = tests.mapping_path(file);
    run.mapping = Some(mapping_path.clone());
    let compiled = match mapping::load(&mapping_path, registry) {
        Ok(m) => m,
        Err(e) => {
            run.error = Some(format!("the mapping does not compile: {e}"));
            return run;
        }
    };
    let host = Host {
        registry,
        dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    run.outcomes = golden::run(&tests, &compiled, &host);
    run
}

/// `mapping test [PATH...]`.
pub(super) fn mapping_test(as_json: bool, env: &Env, paths: &[PathBuf]) -> Result<u8> {
    let registry = registry(env)?;
    let mut files = Vec::new();
    // Paths that name no tests: reported as failures, so a missing file cannot pass quietly.
    let mut missing: Vec<(PathBuf, String)> = Vec::new();
    if paths.is_empty() {
        find_tests(&env.config.mappings, &mut files)?;
    }
    for p in paths {
        if p.is_dir() {
            let before = files.len();
            find_tests(p, &mut files)?;
            if files.len() == before {
                missing.push((
                    p.clone(),
                    "no golden tests (*.tests.yaml) in this folder".into(),
                ));
            }
        } else if golden::is_tests_file(p) {
            files.push(p.clone());
        } else {
            let tests = golden::tests_file_for(p);
            if tests.is_file() {
                files.push(tests);
            } else {
                missing.push((
                    p.clone(),
                    format!(
                        "no golden tests for this mapping: write {} (see docs/mapping-format.md, \"Testing a mapping\")",
                        shown(&tests)
                    ),
                ));
            }
        }
    }
    let runs: Vec<FileRun> = files.iter().map(|f| run_file(f, &registry)).collect();
    let mut passed = 0usize;
    let mut failed = missing.len();
    for r in &runs {
        if r.error.is_some() {
            failed += 1;
        }
        for o in &r.outcomes {
            if o.passed() {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    // With no path, say how many configured mappings have no golden tests yet.
    let mut untested: Vec<PathBuf> = Vec::new();
    if paths.is_empty() {
        for feed in env.config.councils.iter().flat_map(|c| &c.feeds) {
            if !golden::tests_file_for(&feed.mapping).is_file() && !untested.contains(&feed.mapping)
            {
                untested.push(feed.mapping.clone());
            }
        }
    }
    if as_json {
        let files: Vec<Value> = runs
            .iter()
            .map(|r| {
                json!({
                    "file": shown(&r.file),
                    "mapping": r.mapping.as_deref().map(shown),
                    "error": r.error,
                    "tests": r.outcomes.iter().map(|o| json!({
                        "name": o.name,
                        "line": o.line,
                        "passed": o.passed(),
                        "problems": o.problems.iter().map(|p| {
                            let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
                            if let Value::Object(m) = &mut v {
                                m.insert("text".into(), Value::String(p.to_string()));
                            }
                            v
                        }).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            })
            .chain(
                missing
                    .iter()
                    .map(|(p, why)| json!({"file": shown(p), "error": why, "tests": []})),
            )
            .collect();
        print_json(&json!({
            "files": files,
            "passed": passed,
            "failed": failed,
            "mappings_without_tests": untested.iter().map(|p| shown(p)).collect::<Vec<_>>(),
        }));
    } else {
        if runs.is_empty() && missing.is_empty() {
            println!(
                "no golden tests (*.tests.yaml) under {}",
                shown(&env.config.mappings)
            );
        }
        for r in &runs {
            let file = shown(&r.file);
            if let Some(e) = &r.error {
                println!("FAIL  {file}  the tests cannot run:");
                for line in e.lines() {
                    println!("      {line}");
                }
            }
            for o in &r.outcomes {
                if o.passed() {
                    println!("ok    {file}:{}  {}", o.line, o.name);
                } else {
                    println!("FAIL  {file}:{}  {}", o.line, o.name);
                    for p in &o.problems {
                        for line in p.to_string().lines() {
                            println!("      {line}");
                        }
                    }
                }
            }
        }
        for (p, why) in &missing {
            println!("FAIL  {}  {why}", shown(p));
        }
        if !untested.is_empty() {
            println!(
                "note: {} of {} configured mappings have no golden tests yet (<mapping>.tests.yaml beside the mapping)",
                untested.len(),
                env.config
                    .councils
                    .iter()
                    .flat_map(|c| &c.feeds)
                    .map(|f| &f.mapping)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            );
        }
        println!("{passed} passed, {failed} failed");
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// The header a sample gives the mapping: the file's header, or for XML and JSON the union of
/// the paths its records have, in order of first appearance.
fn sample_header(mapping: &mapping::Mapping, sample: &Path) -> Result<(Header, u64)> {
    let file = std::fs::File::open(sample)
        .with_context(|| format!("cannot read the sample {}", sample.display()))?;
    let name = sample
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let decoder = formats::open(&name, file, &mapping.source.format)
        .with_context(|| format!("cannot read the sample {}", sample.display()))?;
    if !mapping.source.format.per_record_header() {
        return Ok((decoder.header().as_ref().clone(), 0));
    }
    let mut names: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut records = 0;
    for item in decoder {
        let item = item.with_context(|| format!("cannot read the sample {}", sample.display()))?;
        let header = match &item {
            Item::Record(r) => r.header.clone(),
            Item::Failure(f) => match &f.record {
                Some(r) => r.header.clone(),
                None => continue,
            },
            Item::Control(_) => continue,
        };
        records += 1;
        for n in header.names() {
            if seen.insert(n.clone()) {
                names.push(n.clone());
            }
        }
    }
    Ok((Header::new(names), records))
}

/// `mapping coverage MAPPING [--sample FILE]`.
pub(super) fn mapping_coverage(
    as_json: bool,
    env: &Env,
    path: &Path,
    sample: Option<&Path>,
) -> Result<u8> {
    let registry = registry(env)?;
    let compiled = mapping::load(path, &registry).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(entity) = registry.get(&compiled.entity) else {
        bail!("no canonical entity `{}`", compiled.entity);
    };
    let header = sample.map(|s| sample_header(&compiled, s)).transpose()?;
    let cov = golden::coverage(&compiled, entity, header.as_ref().map(|(h, _)| h));
    if as_json {
        print_json(&json!({
            "file": shown(path),
            "sample": sample.map(shown),
            "coverage": cov,
        }));
        return Ok(0);
    }
    render_coverage(path, sample, header.as_ref().map(|(_, n)| *n), &cov);
    Ok(0)
}

fn render_coverage(path: &Path, sample: Option<&Path>, records: Option<u64>, cov: &Coverage) {
    println!(
        "{} v{} → {} ({})",
        cov.mapping,
        cov.version,
        cov.entity,
        shown(path)
    );
    println!();
    println!("mapped fields ({}):", cov.mapped.len());
    let width = cov.mapped.iter().map(|f| f.field.len()).max().unwrap_or(0);
    for f in &cov.mapped {
        let source = if f.sources.is_empty() {
            "(a fixed value)".to_string()
        } else {
            f.sources.join(" + ")
        };
        let mut notes = Vec::new();
        if !f.transforms.is_empty() {
            notes.push(format!("[{}]", f.transforms.join(", ")));
        }
        if f.required_by_schema {
            notes.push("required by the schema".into());
        } else if f.required_by_mapping {
            notes.push("required by the mapping".into());
        }
        if f.personal {
            notes.push("personal data (x-pii)".into());
        }
        println!(
            "  {:<width$}  ← {source}{}",
            f.field,
            if notes.is_empty() {
                String::new()
            } else {
                format!("  {}", notes.join("  "))
            }
        );
    }
    if cov.required_missing.is_empty() {
        println!("required fields missing: none");
    } else {
        println!("required fields missing ({}):", cov.required_missing.len());
        for f in &cov.required_missing {
            println!("  {f}");
        }
    }
    if cov.optional_unmapped.is_empty() {
        println!("optional fields not mapped: none");
    } else {
        println!(
            "optional fields not mapped ({}):",
            cov.optional_unmapped.len()
        );
        for f in &cov.optional_unmapped {
            println!("  {f}");
        }
    }
    match (&cov.columns, sample) {
        (Some(c), Some(s)) => {
            let what = match records {
                Some(n) if n > 0 => format!("{} paths in {n} records", c.total),
                _ => format!("{} columns", c.total),
            };
            println!(
                "sample {}: {what}; {} read, {} unused",
                shown(s),
                c.used.len(),
                c.unused.len()
            );
            if c.unused.is_empty() {
                println!("source columns unused: none");
            } else {
                println!("source columns unused ({}):", c.unused.len());
                for u in &c.unused {
                    println!("  {}", Value::String(u.clone()));
                }
            }
            if !c.absent.is_empty() {
                println!(
                    "mapped columns the sample does not have ({}): a file like it would be refused, or for XML and JSON leave the field empty",
                    c.absent.len()
                );
                for (field, column) in &c.absent {
                    println!("  {field} ← {column}");
                }
            }
        }
        _ => println!(
            "source columns: give --sample FILE to see which columns of an export are not read"
        ),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-')
}

fn default_name(id: &str) -> String {
    id.split('-')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn council_yaml(id: &str, name: &str) -> String {
    let env_prefix = id.to_uppercase().replace('-', "_");
    format!(
        r#"council: {id}
name: {name}
# One feed per export this council sends: the mapping that reads it (docs/mapping-format.md)
# and where its files arrive. The council has no feeds yet; once a mapping passes
# `council-bridge mapping check` and its golden tests (`council-bridge mapping test`), uncomment
# and adapt (see README.md in this folder):
#
# feeds:
#   payroll:
#     mapping: payroll.yaml                 # beside this file; golden tests in payroll.tests.yaml
#     input: /srv/sftp/{id}/payroll/*.csv   # drop-folder glob, absolute or relative to this folder
#                                           # (outside it: list /srv/sftp in `allowed_roots` of the root configuration)
#     settle_seconds: 60                    # take a file once unchanged this long (default 10), or
#     # require_marker: true                # only once the sender wrote <file>.done or <file>.ok
#     archive: archive/payroll              # move files here once read (timestamped, never deleted)
#     rejected: rejected/payroll            # move files here that could not be read at all
#   hr-workers:                             # a feed pulled from the council's HTTP API instead
#     mapping: hr_workers.yaml
#     http:
#       url_env: {env_prefix}_HR_API_URL
#       auth: {{ bearer: {{ token: {{ env: {env_prefix}_HR_API_TOKEN }} }} }}
#       pagination: {{ next_link: /links/next }}
#       records_at: /workers
#       landing: landing/hr-workers
#     archive: archive/hr-workers
"#,
        name = Value::String(name.to_string()),
    )
}

fn council_readme(id: &str, name: &str) -> String {
    format!(
        r#"# {name} (`{id}`)

This folder holds everything council-bridge needs to read {name}'s exports: `council.yaml`
(its feeds), one mapping per feed, the mappings' golden tests, and sample exports.

## Onboarding a feed

1. **Get a sample export** of the feed, as the council's system writes it (same encoding, title
   rows, trailer), and put it in `samples/<feed>/`. Samples are committed: use fictional or
   properly anonymised data only, never live personal data.
2. **Write the mapping** `<feed>.yaml` in this folder: how to read the file and how each field of
   the canonical entity is filled ([docs/mapping-format.md](../../docs/mapping-format.md); the
   entities are listed by `council-bridge schema list` and described in
   [docs/canonical/](../../docs/canonical/README.md)). Check it:

       council-bridge mapping check mappings/{id}/<feed>.yaml

3. **See what it covers and what it leaves out**: the canonical fields left empty, and the columns
   of the sample nothing reads:

       council-bridge mapping coverage mappings/{id}/<feed>.yaml --sample mappings/{id}/samples/<feed>/<file>

4. **Write golden tests** `<feed>.tests.yaml` beside the mapping: a few input rows (including the
   council's quirks and at least one bad row) and the canonical records or errors they must give
   ([docs/mapping-format.md, "Testing a mapping"](../../docs/mapping-format.md#testing-a-mapping)).
   They run with the whole test suite; run them alone with:

       council-bridge mapping test mappings/{id}

5. **Add the feed to `council.yaml`**: the mapping, the drop-folder glob (or the HTTP API), when a
   file counts as complete (`settle_seconds` or `require_marker`), and the `archive` and
   `rejected` folders.
6. **Try a run without a broker**: the messages wait in the outbox and every rejected row is kept.

       council-bridge run --council {id}
       council-bridge failures list --council {id}

   Check the rejected rows and the control totals with the council, fix the mapping (bump its
   `version`) and re-run with `--force`, or `failures replay` the fixed rows.
7. **Go live**: with `AMQP_URL` set, `council-bridge run` publishes to RabbitMQ; consumers bind to
   routing keys ending in `.{id}`.
"#
    )
}

/// `council init ID [--name NAME]`.
pub(super) fn council_init(as_json: bool, env: &Env, id: &str, name: Option<&str>) -> Result<u8> {
    if !valid_id(id) {
        bail!(
            "`{id}` cannot be a council id: use lower-case letters, digits and `-`, starting with a letter or digit (it is part of routing keys), e.g. `north-vale`"
        );
    }
    let dir = env.config.mappings.join(id);
    if let Some(c) = env.config.council(id) {
        bail!(
            "council `{id}` already exists ({}); nothing was changed",
            shown(&c.dir)
        );
    }
    if dir.exists() {
        bail!(
            "{} already exists; nothing was changed (choose another id, or remove the folder first)",
            shown(&dir)
        );
    }
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| default_name(id));
    let files = [
        (dir.join("council.yaml"), council_yaml(id, &name)),
        (dir.join("README.md"), council_readme(id, &name)),
        (dir.join("samples/.gitkeep"), String::new()),
    ];
    std::fs::create_dir_all(dir.join("samples"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    for (path, text) in &files {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if as_json {
        print_json(&json!({
            "council": id,
            "name": name,
            "dir": shown(&dir),
            "created": files.iter().map(|(p, _)| shown(p)).collect::<Vec<_>>(),
        }));
        return Ok(0);
    }
    let d = shown(&dir);
    println!("created council `{id}` ({name}) in {d}:");
    println!("  {d}/council.yaml   no feeds yet; a commented example shows the shape");
    println!("  {d}/README.md      the onboarding steps");
    println!(
        "  {d}/samples/       put a sample export of each feed here (fictional or anonymised data)"
    );
    println!(
        "next: put a sample export in {d}/samples/<feed>/, then draft its mapping with `council-bridge mapping scaffold --council {id} --entity <domain.entity> --sample {d}/samples/<feed>/<file> --out {d}/<feed>.yaml` (docs/onboarding.md)"
    );
    Ok(0)
}
