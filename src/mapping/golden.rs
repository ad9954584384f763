//! Golden tests kept next to each mapping, and a mapping's coverage of its canonical entity.
//!
//! A golden-test file (`<mapping stem>.tests.yaml`, beside the mapping) holds sample inputs in
//! the mapping's source format and, for each detail record, the canonical body it must give or
//! the field/rule pairs it must fail with (docs/mapping-format.md, "Testing a mapping").
//! [`parse`] reads the file; [`run`] decodes each input with the mapping's own format options,
//! maps and validates every record, and reports each difference as a [`Problem`] whose
//! `Display` is a readable diff (`- expected` / `+ actual`, dotted paths, values shown: golden
//! inputs are sample data, never live data).
//!
//! Like the rest of `mapping`, this does no I/O and does not know how the canonical model
//! validates: the caller reads the files and supplies validation through [`Host`].

use std::collections::HashSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_saphyr::{Location, Spanned};

use super::compile::Bound;
use super::{FieldError, Mapping, MappingDiagnostic, TargetSchema};
use crate::formats::encoding::Encoding;
use crate::formats::{self, FormatOptions, Header, Item};

/// The golden-tests file of a mapping: `payroll.yaml` → `payroll.tests.yaml`, beside it.
pub fn tests_file_for(mapping: &Path) -> PathBuf {
    let stem = mapping
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    mapping.with_file_name(format!("{stem}.tests.yaml"))
}

/// Whether a path names a golden-tests file (`*.tests.yaml` or `*.tests.yml`).
pub fn is_tests_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".tests.yaml") || n.ends_with(".tests.yml"))
}

/// A golden-tests file, parsed.
#[derive(Debug, Clone)]
pub struct GoldenFile {
    /// The file, as named to [`parse`].
    pub file: String,
    /// The mapping under test, as written (relative to the tests file).
    pub mapping: String,
    /// The tests, in file order.
    pub tests: Vec<GoldenTest>,
}

impl GoldenFile {
    /// The mapping file, resolved against the tests file's folder.
    pub fn mapping_path(&self, tests_file: &Path) -> PathBuf {
        let m = Path::new(&self.mapping);
        if m.is_absolute() {
            m.to_path_buf()
        } else {
            tests_file
                .parent()
                .map(|d| d.join(m))
                .unwrap_or_else(|| m.to_path_buf())
        }
    }
}

/// One golden test: an input and what each of its detail records must give.
#[derive(Debug, Clone)]
pub struct GoldenTest {
    /// What the test is about.
    pub name: String,
    /// Line of the test in the tests file.
    pub line: u64,
    /// The raw input.
    pub input: Input,
    /// The file name the input is decoded under (the value of `$file`).
    pub file_name: String,
    /// One expectation per detail record, in order.
    pub expect: Vec<Expected>,
    /// The trailer check must match (`true`) or must not (`false`); `None`: not checked.
    pub control: Option<bool>,
    /// Line in the tests file of the input's first line (block scalars), for reports.
    input_first_line: Option<u64>,
}

/// The raw input of a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Text, written in the tests file (UTF-8; encoded to the mapping's encoding first).
    Text(String),
    /// A file relative to the tests file, read as it is (spreadsheets and other binary inputs).
    File(String),
}

/// What one detail record must give.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// Line of the expectation in the tests file.
    pub line: u64,
    /// The entity the record must be of (for mappings whose rows make several, `also:`).
    pub entity: Option<String>,
    /// The record or the failure.
    pub outcome: ExpectedOutcome,
}

/// A record's expected outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpectedOutcome {
    /// Mapped and valid, with exactly this canonical body (and this key, when given).
    Record {
        /// The canonical body.
        body: Map<String, Value>,
        /// The record key (`E1001/2026-10-31`), when the test states it.
        key: Option<String>,
    },
    /// Rejected, with at least these field/rule pairs among its errors.
    Errors(Vec<ExpectedError>),
}

/// A field/rule pair a rejected record must report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedError {
    /// Canonical field (dotted path), or `(row)` for a row that could not be decoded.
    pub field: String,
    /// The rule (`date`, `map`, `required`, `schema`, `decode`...); `None` = any rule.
    pub rule: Option<String>,
}

impl std::fmt::Display for ExpectedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}]",
            self.field,
            self.rule.as_deref().unwrap_or("any rule")
        )
    }
}

/// A golden-tests file that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in golden tests {file}:\n{}", diagnostics.len(), render(diagnostics))]
pub struct GoldenError {
    /// The file.
    pub file: String,
    /// Each mistake, with its line.
    pub diagnostics: Vec<MappingDiagnostic>,
}

fn render(diagnostics: &[MappingDiagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| match &d.excerpt {
            Some(line) if d.line > 0 => {
                let number = d.line.to_string();
                let pad = " ".repeat(number.len());
                let caret = " ".repeat(d.column.saturating_sub(1) as usize);
                format!("  {d}\n    {number} | {line}\n    {pad} | {caret}^")
            }
            _ => format!("  {d}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    mapping: Spanned<String>,
    tests: Vec<Spanned<TestSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSpec {
    name: Spanned<String>,
    #[serde(default)]
    input: Option<Spanned<String>>,
    #[serde(default)]
    input_file: Option<Spanned<String>>,
    #[serde(default)]
    file_name: Option<String>,
    expect: Vec<Spanned<ExpectSpec>>,
    #[serde(default)]
    control: Option<Spanned<ControlSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectSpec {
    #[serde(default)]
    entity: Option<String>,
    #[serde(default)]
    record: Option<Value>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    errors: Option<Vec<ErrorSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorSpec {
    field: String,
    #[serde(default)]
    rule: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlSpec {
    matches: bool,
}

/// Parses a golden-tests file (`file` names it in diagnostics). Mistakes are reported with
/// their line: unknown keys, a test with no input or two, an expectation that is neither a
/// `record` nor `errors`.
pub fn parse(file: &str, text: &str) -> Result<GoldenFile, GoldenError> {
    let lines: Vec<&str> = text.lines().collect();
    let diag = |loc: Option<Location>, message: String| {
        let line = loc.map(|l| l.line()).unwrap_or(0);
        MappingDiagnostic {
            file: file.to_string(),
            line,
            column: loc.map(|l| l.column()).unwrap_or(0),
            field: None,
            message,
            excerpt: usize::try_from(line)
                .ok()
                .and_then(|l| l.checked_sub(1))
                .and_then(|l| lines.get(l))
                .map(|l| l.to_string()),
        }
    };
    let spec: FileSpec = serde_saphyr::from_str(text).map_err(|e| GoldenError {
        file: file.to_string(),
        diagnostics: vec![diag(
            e.location(),
            e.to_string().lines().next().unwrap_or_default().to_string(),
        )],
    })?;
    let mut diagnostics = Vec::new();
    let mut tests = Vec::new();
    let mut names = HashSet::new();
    for t in spec.tests {
        let at = t.referenced;
        let t = t.value;
        if t.name.value.trim().is_empty() {
            diagnostics.push(diag(
                Some(t.name.referenced),
                "a test needs a `name`".into(),
            ));
        } else if !names.insert(t.name.value.clone()) {
            diagnostics.push(diag(
                Some(t.name.referenced),
                format!(
                    "two tests are named \"{}\"; give each its own name",
                    t.name.value
                ),
            ));
        }
        let (input, input_first_line) = match (t.input, t.input_file) {
            (Some(text), None) => {
                let first = block_scalar_first_line(&lines, text.referenced);
                (Input::Text(text.value), first)
            }
            (None, Some(f)) => (Input::File(f.value), None),
            (Some(i), Some(_)) => {
                diagnostics.push(diag(
                    Some(i.referenced),
                    "give either `input` (text) or `input_file` (a file beside the tests), not both"
                        .into(),
                ));
                continue;
            }
            (None, None) => {
                diagnostics.push(diag(
                    Some(at),
                    format!(
                        "test \"{}\" has no `input` (the raw text of a sample file) nor `input_file`",
                        t.name.value
                    ),
                ));
                continue;
            }
        };
        let mut expect = Vec::new();
        for e in t.expect {
            let line = e.referenced.line();
            let outcome = match (e.value.record, e.value.errors) {
                (Some(Value::Object(body)), None) => ExpectedOutcome::Record {
                    body,
                    key: e.value.key,
                },
                (Some(_), None) => {
                    diagnostics.push(diag(
                        Some(e.referenced),
                        "`record` must be a mapping of canonical fields to values".into(),
                    ));
                    continue;
                }
                (None, Some(errors)) => {
                    if e.value.key.is_some() {
                        diagnostics.push(diag(
                            Some(e.referenced),
                            "`key` goes with `record`: a rejected record has no key".into(),
                        ));
                    }
                    ExpectedOutcome::Errors(
                        errors
                            .into_iter()
                            .map(|s| ExpectedError {
                                field: s.field,
                                rule: s.rule,
                            })
                            .collect(),
                    )
                }
                (Some(_), Some(_)) | (None, None) => {
                    diagnostics.push(diag(
                        Some(e.referenced),
                        "each expectation is either `record: {...}` (the canonical body) or `errors: [{field, rule}]`"
                            .into(),
                    ));
                    continue;
                }
            };
            expect.push(Expected {
                line,
                entity: e.value.entity.clone(),
                outcome,
            });
        }
        tests.push(GoldenTest {
            name: t.name.value,
            line: at.line(),
            input,
            file_name: t.file_name.unwrap_or_else(|| "input".into()),
            expect,
            control: t.control.map(|c| c.value.matches),
            input_first_line,
        });
    }
    if tests.is_empty() && diagnostics.is_empty() {
        diagnostics.push(diag(None, "the file has no tests".into()));
    }
    if diagnostics.is_empty() {
        Ok(GoldenFile {
            file: file.to_string(),
            mapping: spec.mapping.value,
            tests,
        })
    } else {
        Err(GoldenError {
            file: file.to_string(),
            diagnostics,
        })
    }
}

/// For a block scalar (`input: |`), the line of the tests file holding its first line (the
/// parser places a block scalar at its first content line).
fn block_scalar_first_line(lines: &[&str], at: Location) -> Option<u64> {
    let key_line = lines.get(usize::try_from(at.line()).ok()?.checked_sub(2)?)?;
    let key_line = key_line.split(" #").next().unwrap_or_default().trim_end();
    let indicator = key_line.split_whitespace().last()?;
    let block = (indicator.starts_with('|') || indicator.starts_with('>'))
        && indicator[1..]
            .chars()
            .all(|c| c == '-' || c == '+' || c.is_ascii_digit());
    block.then(|| at.line())
}

/// What running golden tests needs from outside the mapping module.
pub trait Host {
    /// Validates a mapped body against a canonical entity (the mapping's, or one of `also:`).
    fn validate(&self, entity: &str, body: &Value) -> Result<(), Vec<FieldError>>;
    /// The bytes of an `input_file` (as written, relative to the tests file).
    fn read_input(&self, path: &str) -> Result<Vec<u8>, String>;
}

/// The result of one test.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    /// The test's name.
    pub name: String,
    /// Its line in the tests file.
    pub line: u64,
    /// Every difference from the expectations; empty = passed.
    pub problems: Vec<Problem>,
}

impl TestOutcome {
    /// Whether everything matched.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Where a record is: its place in the input, and the expectation it is compared with.
#[derive(Debug, Clone, Serialize)]
pub struct At {
    /// 1-based detail record number.
    pub record: usize,
    /// Physical line in the input, when there is a record.
    pub input_line: Option<u64>,
    /// Line of that input line in the tests file (block scalars only).
    pub tests_line: Option<u64>,
    /// Line of the expectation in the tests file, when there is one.
    pub expected_line: Option<u64>,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record {}", self.record)?;
        let mut parts = Vec::new();
        match (self.input_line, self.tests_line) {
            (Some(l), Some(t)) => parts.push(format!("input line {l}, tests file line {t}")),
            (Some(l), None) => parts.push(format!("input line {l}")),
            _ => {}
        }
        if let Some(e) = self.expected_line {
            parts.push(format!("expected at line {e}"));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join("; "))?;
        }
        Ok(())
    }
}

/// One line of a record diff: `-` expected, `+` actual.
#[derive(Debug, Clone, Serialize)]
pub struct DiffLine {
    /// `-` (expected) or `+` (actual).
    pub sign: char,
    /// Dotted path of the value (`pay_period.end`, `lines[2].amount`).
    pub path: String,
    /// The value.
    pub value: Value,
}

impl std::fmt::Display for DiffLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.sign, self.path, self.value)
    }
}

/// A difference between what a test expects and what the mapping did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The input could not be read at all (or lacks a mapped column).
    Unreadable {
        /// Why.
        message: String,
    },
    /// The record was mapped, but its body differs from the expected one.
    RecordDiffers {
        /// Where.
        at: At,
        /// `-` expected / `+` actual, field by field.
        diff: Vec<DiffLine>,
    },
    /// The record is of another entity than the expected one (`also:`).
    EntityDiffers {
        /// Where.
        at: At,
        /// Expected entity.
        expected: String,
        /// Actual entity.
        actual: String,
    },
    /// The record was mapped with another key.
    KeyDiffers {
        /// Where.
        at: At,
        /// Expected key.
        expected: String,
        /// Actual key.
        actual: String,
    },
    /// A record was expected but it was rejected.
    Rejected {
        /// Where.
        at: At,
        /// Why it was rejected.
        errors: Vec<FieldError>,
    },
    /// The record was expected to fail but it was mapped.
    Accepted {
        /// Where.
        at: At,
        /// The failures that were expected.
        expected: Vec<ExpectedError>,
        /// The record key.
        key: String,
        /// The record it gave.
        body: Value,
    },
    /// The record failed, but not with every expected field/rule.
    ErrorsDiffer {
        /// Where.
        at: At,
        /// Expected failures that were not reported.
        missing: Vec<ExpectedError>,
        /// What was reported.
        actual: Vec<FieldError>,
    },
    /// An expected record is not in the input.
    Missing {
        /// Where.
        at: At,
    },
    /// The input has a record no expectation describes.
    Unexpected {
        /// Where.
        at: At,
        /// What it gave: `Ok(key)` or the errors.
        outcome: Result<String, Vec<FieldError>>,
    },
    /// The test states a trailer check but the mapping declares no trailer.
    NoTrailer,
    /// The trailer check did not go as expected.
    Control {
        /// Whether the test expected the trailer to agree.
        expected: bool,
        /// What the check found: `None` when it agreed, else why not.
        mismatch: Option<String>,
    },
}

fn error_line(e: &FieldError) -> String {
    let mut s = format!("{} [{}]", e.field, e.rule);
    if let Some(c) = &e.column {
        s.push_str(&format!(" (column \"{c}\")"));
    }
    s.push_str(&format!(": {}", e.message));
    if let Some(v) = &e.value {
        s.push_str(&format!(" — value {}", Value::String(v.clone())));
    }
    s
}

impl std::fmt::Display for Problem {
    /// Several lines, the first a summary and the others indented by two spaces.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unreadable { message } => write!(f, "the input cannot be read: {message}"),
            Problem::RecordDiffers { at, diff } => {
                write!(
                    f,
                    "{at}: the canonical record differs (- expected, + actual)"
                )?;
                for d in diff {
                    write!(f, "\n  {d}")?;
                }
                Ok(())
            }
            Problem::EntityDiffers {
                at,
                expected,
                actual,
            } => write!(
                f,
                "{at}: expected a `{expected}` record, but this one is `{actual}` (a row's records come in the mapping's order: its own, then those of `also:`)"
            ),
            Problem::KeyDiffers {
                at,
                expected,
                actual,
            } => write!(
                f,
                "{at}: the record key differs\n  - key: {}\n  + key: {}",
                Value::String(expected.clone()),
                Value::String(actual.clone())
            ),
            Problem::Rejected { at, errors } => {
                write!(f, "{at}: expected a record, but it was rejected:")?;
                for e in errors {
                    write!(f, "\n  {}", error_line(e))?;
                }
                Ok(())
            }
            Problem::Accepted {
                at,
                expected,
                key,
                body,
            } => {
                let list: Vec<String> = expected.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "{at}: expected it to fail with {}, but it was mapped (key {}):",
                    if list.is_empty() {
                        "an error".to_string()
                    } else {
                        list.join(", ")
                    },
                    Value::String(key.clone())
                )?;
                for d in flatten(body) {
                    write!(f, "\n  + {}: {}", d.0, d.1)?;
                }
                Ok(())
            }
            Problem::ErrorsDiffer {
                at,
                missing,
                actual,
            } => {
                write!(f, "{at}: it was rejected, but not as expected")?;
                for m in missing {
                    write!(f, "\n  - {m}")?;
                }
                for e in actual {
                    write!(f, "\n  + {}", error_line(e))?;
                }
                Ok(())
            }
            Problem::Missing { at } => write!(
                f,
                "{at}: expected, but the input has no such record (it has fewer detail records than the test expects)"
            ),
            Problem::Unexpected { at, outcome } => match outcome {
                Ok(key) => write!(
                    f,
                    "{at}: not expected (the input has more detail records than the test expects); it was mapped with key {}",
                    Value::String(key.clone())
                ),
                Err(errors) => {
                    write!(
                        f,
                        "{at}: not expected (the input has more detail records than the test expects); it was rejected:"
                    )?;
                    for e in errors {
                        write!(f, "\n  {}", error_line(e))?;
                    }
                    Ok(())
                }
            },
            Problem::NoTrailer => write!(
                f,
                "control: the test checks the trailer, but the mapping declares none (`source.trailer`); remove `control:`"
            ),
            Problem::Control { expected, mismatch } => match (expected, mismatch) {
                (true, Some(m)) => write!(
                    f,
                    "control: expected the trailer to agree with what was read, but {m}"
                ),
                (false, None) => write!(
                    f,
                    "control: expected the trailer check to fail, but the trailer agrees with what was read"
                ),
                _ => write!(f, "control: as expected"),
            },
        }
    }
}

/// What one detail record gave.
enum Actual {
    Record {
        line: u64,
        entity: String,
        key: String,
        body: Map<String, Value>,
    },
    Rejected {
        line: u64,
        entity: String,
        errors: Vec<FieldError>,
    },
}

impl Actual {
    fn line(&self) -> u64 {
        match self {
            Actual::Record { line, .. } | Actual::Rejected { line, .. } => *line,
        }
    }
    fn entity(&self) -> &str {
        match self {
            Actual::Record { entity, .. } | Actual::Rejected { entity, .. } => entity,
        }
    }
}

/// Runs every test of a file against its compiled mapping.
pub fn run(file: &GoldenFile, mapping: &Mapping, host: &dyn Host) -> Vec<TestOutcome> {
    file.tests
        .iter()
        .map(|t| run_test(mapping, t, host))
        .collect()
}

/// Runs one test: decodes its input as the mapping says, maps and validates every detail
/// record, and compares each with its expectation (and the trailer check, when asked).
pub fn run_test(mapping: &Mapping, test: &GoldenTest, host: &dyn Host) -> TestOutcome {
    let mut outcome = TestOutcome {
        name: test.name.clone(),
        line: test.line,
        problems: Vec::new(),
    };
    let (actual, control) = match read(mapping, test, host) {
        Ok(r) => r,
        Err(message) => {
            outcome.problems.push(Problem::Unreadable { message });
            return outcome;
        }
    };
    let tests_line = |input_line: u64| {
        test.input_first_line
            .map(|first| first + input_line.saturating_sub(1))
    };
    let n = actual.len().max(test.expect.len());
    for i in 0..n {
        let got = actual.get(i);
        let want = test.expect.get(i);
        let at = At {
            record: i + 1,
            input_line: got.map(Actual::line),
            tests_line: got.and_then(|g| tests_line(g.line())),
            expected_line: want.map(|w| w.line),
        };
        if let (Some(w), Some(g)) = (want, got)
            && let Some(e) = w.entity.as_ref().filter(|e| *e != g.entity())
        {
            outcome.problems.push(Problem::EntityDiffers {
                at,
                expected: e.clone(),
                actual: g.entity().to_string(),
            });
            continue;
        }
        if let Some(p) = compare(at, want.map(|w| &w.outcome), got) {
            outcome.problems.push(p);
        }
    }
    if let Some(expected) = test.control {
        if mapping.source.control.is_none() {
            outcome.problems.push(Problem::NoTrailer);
        } else {
            let mismatch = control.err();
            if expected != mismatch.is_none() {
                outcome
                    .problems
                    .push(Problem::Control { expected, mismatch });
            }
        }
    }
    outcome
}

fn compare(at: At, want: Option<&ExpectedOutcome>, got: Option<&Actual>) -> Option<Problem> {
    match (want, got) {
        (None, None) => None,
        (Some(_), None) => Some(Problem::Missing { at }),
        (None, Some(Actual::Record { key, .. })) => Some(Problem::Unexpected {
            at,
            outcome: Ok(key.clone()),
        }),
        (None, Some(Actual::Rejected { errors, .. })) => Some(Problem::Unexpected {
            at,
            outcome: Err(errors.clone()),
        }),
        (
            Some(ExpectedOutcome::Record { body: want, key: k }),
            Some(Actual::Record { key, body, .. }),
        ) => {
            let diff = diff(want, body);
            if !diff.is_empty() {
                Some(Problem::RecordDiffers { at, diff })
            } else {
                k.as_ref()
                    .filter(|k| *k != key)
                    .map(|k| Problem::KeyDiffers {
                        at,
                        expected: k.clone(),
                        actual: key.clone(),
                    })
            }
        }
        (Some(ExpectedOutcome::Record { .. }), Some(Actual::Rejected { errors, .. })) => {
            Some(Problem::Rejected {
                at,
                errors: errors.clone(),
            })
        }
        (Some(ExpectedOutcome::Errors(expected)), Some(Actual::Record { key, body, .. })) => {
            Some(Problem::Accepted {
                at,
                expected: expected.clone(),
                key: key.clone(),
                body: Value::Object(body.clone()),
            })
        }
        (Some(ExpectedOutcome::Errors(expected)), Some(Actual::Rejected { errors, .. })) => {
            let missing: Vec<ExpectedError> = expected
                .iter()
                .filter(|x| {
                    !errors
                        .iter()
                        .any(|e| e.field == x.field && x.rule.as_ref().is_none_or(|r| *r == e.rule))
                })
                .cloned()
                .collect();
            (!missing.is_empty()).then(|| Problem::ErrorsDiffer {
                at,
                missing,
                actual: errors.clone(),
            })
        }
    }
}

/// Decodes, maps and validates the test's input the way a run does; returns what each detail
/// record gave and the trailer check (`Err` = why it does not agree).
fn read(
    mapping: &Mapping,
    test: &GoldenTest,
    host: &dyn Host,
) -> Result<(Vec<Actual>, Result<(), String>), String> {
    let bytes = match &test.input {
        Input::Text(text) => encode_input(text, &mapping.source.format)?,
        Input::File(path) => host
            .read_input(path)
            .map_err(|e| format!("cannot read input_file {path}: {e}"))?,
    };
    let decoder = formats::open(&test.file_name, Cursor::new(bytes), &mapping.source.format)
        .map_err(|e| e.to_string())?;
    let header = decoder.header();
    let per_record = mapping.source.format.per_record_header();
    let bind_all = |header: &formats::Header| -> Result<Vec<super::Binding>, String> {
        mapping
            .records()
            .map(|m| {
                if per_record {
                    Ok(m.bind_lenient(header))
                } else {
                    m.bind(header).map_err(|e| e.to_string())
                }
            })
            .collect()
    };
    let mut bindings = bind_all(&header)?;
    let mut bound_header = header.clone();
    let mut tally = super::control::ControlTally::new(mapping, &header);
    let mut actual = Vec::new();
    for item in decoder {
        match item.map_err(|e| e.to_string())? {
            Item::Control(rec) => tally.trailer(&rec),
            Item::Failure(f) => {
                tally.detail(f.record.as_ref());
                actual.push(Actual::Rejected {
                    line: f.locator.line,
                    entity: mapping.entity.clone(),
                    errors: vec![FieldError {
                        field: "(row)".into(),
                        column: None,
                        rule: "decode".into(),
                        message: f.reason,
                        value: None,
                    }],
                });
            }
            Item::Record(rec) => {
                tally.detail(Some(&rec));
                if per_record && !std::sync::Arc::ptr_eq(&rec.header, &bound_header) {
                    bindings = bind_all(&rec.header)?;
                    bound_header = rec.header.clone();
                }
                let line = rec.locator.line;
                for (m, binding) in mapping.records().zip(&bindings) {
                    let entity = m.entity.clone();
                    let result = m.apply(binding, &rec).and_then(|r| {
                        host.validate(&entity, &Value::Object(r.body.clone()))
                            .map(|()| (r.key, r.body))
                    });
                    actual.push(match result {
                        Ok((key, body)) => Actual::Record {
                            line,
                            entity,
                            key,
                            body,
                        },
                        Err(errors) => Actual::Rejected {
                            line,
                            entity,
                            errors,
                        },
                    });
                }
            }
        }
    }
    let control = match tally.finish().mismatch {
        None => Ok(()),
        Some(m) => Err(m),
    };
    Ok((actual, control))
}

/// The test's text as the council's file would hold it: encoded to the mapping's declared
/// encoding (for XML without one, the encoding its declaration names), else UTF-8.
fn encode_input(text: &str, format: &FormatOptions) -> Result<Vec<u8>, String> {
    let declared = match format {
        FormatOptions::Csv(o) => Some(o.encoding),
        FormatOptions::FixedWidth(o) => Some(o.encoding),
        FormatOptions::Xml(o) => o.encoding.or_else(|| xml_declared_encoding(text)),
        FormatOptions::Json(_) => None,
        FormatOptions::Spreadsheet(_) => {
            return Err(
                "a spreadsheet is binary and cannot be written as text: give the test an `input_file` (an .xlsx beside the tests file)"
                    .into(),
            );
        }
    };
    let Some(enc) = declared
        .map(|e| e.name())
        .and_then(|n| encoding_rs::Encoding::for_label(n.as_bytes()))
    else {
        return Ok(text.as_bytes().to_vec());
    };
    if enc == encoding_rs::UTF_16LE || enc == encoding_rs::UTF_16BE {
        let le = enc == encoding_rs::UTF_16LE;
        let mut out = if le {
            vec![0xFF, 0xFE]
        } else {
            vec![0xFE, 0xFF]
        };
        for unit in text.encode_utf16() {
            out.extend(if le {
                unit.to_le_bytes()
            } else {
                unit.to_be_bytes()
            });
        }
        return Ok(out);
    }
    let (bytes, _, unmappable) = enc.encode(text);
    if unmappable {
        let bad: String = text
            .chars()
            .filter(|c| {
                let mut buf = [0u8; 4];
                enc.encode(c.encode_utf8(&mut buf)).2
            })
            .take(5)
            .collect();
        return Err(format!(
            "the input has characters {} cannot hold ({bad:?}); the council's file could not contain them either",
            enc.name()
        ));
    }
    Ok(bytes.into_owned())
}

/// The encoding an XML declaration names (`<?xml version="1.0" encoding="ISO-8859-1"?>`).
fn xml_declared_encoding(text: &str) -> Option<Encoding> {
    let decl = text.trim_start().strip_prefix("<?xml")?;
    let decl = &decl[..decl.find("?>")?];
    let rest = decl[decl.find("encoding")? + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let name = rest[1..].split(quote).next()?;
    Encoding::for_label(name)
}

/// Every leaf of a JSON value as `(dotted path, value)`, in order; arrays as `path[i]` (from
/// 0), empty objects and arrays as leaves.
fn flatten(value: &Value) -> Vec<(String, Value)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for (i, v) in a.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, out);
                }
            }
            _ => out.push((prefix.to_string(), v.clone())),
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}

/// Values are equal; numbers by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        _ => a == b,
    }
}

/// The field-by-field difference of two canonical bodies: `-` what the test expects, `+` what
/// the mapping gave; empty when they are the same (key order does not matter).
pub fn diff(expected: &Map<String, Value>, actual: &Map<String, Value>) -> Vec<DiffLine> {
    let want = flatten(&Value::Object(expected.clone()));
    let got = flatten(&Value::Object(actual.clone()));
    let mut out = Vec::new();
    for (path, w) in &want {
        match got.iter().find(|(p, _)| p == path) {
            Some((_, g)) if same(w, g) => {}
            Some((_, g)) => {
                out.push(DiffLine {
                    sign: '-',
                    path: path.clone(),
                    value: w.clone(),
                });
                out.push(DiffLine {
                    sign: '+',
                    path: path.clone(),
                    value: g.clone(),
                });
            }
            None => out.push(DiffLine {
                sign: '-',
                path: path.clone(),
                value: w.clone(),
            }),
        }
    }
    for (path, g) in &got {
        if !want.iter().any(|(p, _)| p == path) {
            out.push(DiffLine {
                sign: '+',
                path: path.clone(),
                value: g.clone(),
            });
        }
    }
    out
}

/// How much of its canonical entity a mapping fills, and how much of a sample file it reads.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// Mapping id.
    pub mapping: String,
    /// Mapping version.
    pub version: u32,
    /// Canonical entity.
    pub entity: String,
    /// Each mapped field, in mapping order.
    pub mapped: Vec<MappedField>,
    /// Fields the schema requires that the mapping does not fill (the compiler refuses such
    /// mappings, so this is normally empty).
    pub required_missing: Vec<String>,
    /// Optional schema fields (leaves) the mapping leaves empty.
    pub optional_unmapped: Vec<String>,
    /// How the columns of a sample header are used, when one was given.
    pub columns: Option<ColumnUse>,
}

/// One mapped canonical field.
#[derive(Debug, Clone, Serialize)]
pub struct MappedField {
    /// Dotted path.
    pub field: String,
    /// Where the value comes from: column names (as written, or as found in the sample),
    /// `$file`/`$line`/`$row`; empty for a literal.
    pub sources: Vec<String>,
    /// Transform names, in order.
    pub transforms: Vec<String>,
    /// The schema requires the field.
    pub required_by_schema: bool,
    /// The mapping says `required: true`.
    pub required_by_mapping: bool,
    /// The schema classifies it as personal data (`x-pii`).
    pub personal: bool,
}

/// The columns of a sample, against the mapping.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnUse {
    /// Columns (or flattened paths) the sample has.
    pub total: usize,
    /// Columns some field (or the trailer's `total_of`) reads.
    pub used: Vec<String>,
    /// Columns nothing reads.
    pub unused: Vec<String>,
    /// Mapped columns the sample lacks, as `(field, column)`: a file like it would be refused
    /// (tabular formats) or leave the field empty (XML, JSON).
    pub absent: Vec<(String, String)>,
}

/// What `mapping` fills of `schema`, and, given a sample's `header` (for XML and JSON, the
/// union of the paths its records have), which of its columns are read and which are not.
pub fn coverage(mapping: &Mapping, schema: &dyn TargetSchema, header: Option<&Header>) -> Coverage {
    let required = schema.required();
    let fills = |path: &str| {
        mapping.field_paths().any(|m| {
            m == path || m.starts_with(&format!("{path}.")) || path.starts_with(&format!("{m}."))
        })
    };
    let empty = Header::new(Vec::new());
    let binding = mapping.bind_lenient(header.unwrap_or(&empty));
    let mut mapped = Vec::new();
    let mut used = vec![false; header.map(|h| h.names().len()).unwrap_or(0)];
    let mut absent = Vec::new();
    for (field, bounds) in mapping.fields.iter().zip(&binding.columns) {
        let mut sources = Vec::new();
        for b in bounds {
            match b {
                Bound::Column(i, name) => {
                    if let Some(u) = used.get_mut(*i) {
                        *u = true;
                    }
                    sources.push(Value::String(name.clone()).to_string());
                }
                Bound::Meta(m) => sources.push(
                    match m {
                        super::compile::Meta::File => "$file",
                        super::compile::Meta::Line => "$line",
                        super::compile::Meta::Row => "$row",
                        super::compile::Meta::AsAt => "$as_at",
                        super::compile::Meta::AsAtSource => "$as_at_source",
                    }
                    .to_string(),
                ),
                Bound::Supplied(v) => sources.push(v.clone()),
                Bound::Missing(c) => {
                    if header.is_some() {
                        absent.push((field.path.clone(), c.clone()));
                    }
                    sources.push(c.clone());
                }
            }
        }
        mapped.push(MappedField {
            field: field.path.clone(),
            sources,
            transforms: field
                .transforms
                .iter()
                .map(|t| t.name().to_string())
                .collect(),
            required_by_schema: required.contains(&field.path),
            required_by_mapping: field.required,
            personal: field.pii.is_some(),
        });
    }
    let all = schema.fields();
    let optional_unmapped = all
        .iter()
        .filter(|f| !all.iter().any(|o| o.starts_with(&format!("{f}."))))
        .filter(|f| !fills(f) && !required.contains(f))
        .cloned()
        .collect();
    let columns = header.map(|h| {
        if let Some(i) = mapping
            .source
            .control
            .as_ref()
            .and_then(|c| c.total_of.as_ref())
            .and_then(|c| c.resolve(h))
            && let Some(u) = used.get_mut(i)
        {
            *u = true;
        }
        let (mut yes, mut no) = (Vec::new(), Vec::new());
        for (name, u) in h.names().iter().zip(&used) {
            if *u { &mut yes } else { &mut no }.push(name.clone());
        }
        ColumnUse {
            total: h.names().len(),
            used: yes,
            unused: no,
            absent,
        }
    });
    Coverage {
        mapping: mapping.id.clone(),
        version: mapping.version,
        entity: mapping.entity.clone(),
        mapped,
        required_missing: required.iter().filter(|r| !fills(r)).cloned().collect(),
        optional_unmapped,
        columns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{JsonType, SchemaLookup, TargetField, compile_str};

    struct Schema;

    const FIELDS: &[(&str, JsonType)] = &[
        ("employee_number", JsonType::String),
        ("pay_date", JsonType::String),
        ("gross_pay_pence", JsonType::Integer),
        ("pay_frequency", JsonType::String),
        ("bank", JsonType::Object),
        ("bank.sort_code", JsonType::String),
        ("bank.account_number", JsonType::String),
        ("notes", JsonType::String),
    ];

    impl TargetSchema for Schema {
        fn field(&self, path: &str) -> Option<TargetField> {
            FIELDS
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, t)| TargetField {
                    types: vec![*t],
                    pii: (path == "bank.account_number").then_some(crate::pii::PiiClass::Financial),
                })
        }
        fn fields(&self) -> Vec<String> {
            FIELDS.iter().map(|(p, _)| p.to_string()).collect()
        }
        fn required(&self) -> Vec<String> {
            vec!["employee_number".into(), "gross_pay_pence".into()]
        }
    }

    impl SchemaLookup for Schema {
        fn target(&self, entity: &str) -> Option<&dyn TargetSchema> {
            (entity == "payroll.pay_result").then_some(self as &dyn TargetSchema)
        }
        fn entities(&self) -> Vec<String> {
            vec!["payroll.pay_result".into()]
        }
    }

    const MAPPING: &str = r#"mapping: t-payroll
version: 1
entity: payroll.pay_result
source:
  format: csv
  encoding: windows-1252
  skip_rows: 1
  trailer:
    match: { column: 1, pattern: "^TRAILER$" }
    count_column: 2
    total_column: 3
    total_of: Gross
key: [employee_number]
fields:
  employee_number: { from: "Emp No", transforms: [trim, upper], required: true }
  pay_date: { from: Paid, transforms: [{ date: dd/mm/yyyy }] }
  gross_pay_pence: { from: Gross, transforms: [money], required: true }
  pay_frequency:
    from: Freq
    transforms: [{ map: { values: { M: monthly, W: weekly } } }]
  bank.sort_code: { from: Sort, transforms: [digits] }
"#;

    struct NoSchema;
    impl Host for NoSchema {
        fn validate(&self, _entity: &str, body: &Value) -> Result<(), Vec<FieldError>> {
            if body.get("employee_number").and_then(Value::as_str) == Some("BAD") {
                return Err(vec![FieldError {
                    field: "employee_number".into(),
                    column: None,
                    rule: "schema".into(),
                    message: "does not match the pattern".into(),
                    value: None,
                }]);
            }
            Ok(())
        }
        fn read_input(&self, path: &str) -> Result<Vec<u8>, String> {
            Err(format!("no file {path} in this test"))
        }
    }

    fn mapping() -> Mapping {
        compile_str("t.yaml", MAPPING, &Schema).unwrap()
    }

    const TESTS: &str = r#"mapping: t.yaml
tests:
  - name: two rows and a trailer
    input: |
      Test Council payroll £
      Emp No,Paid,Gross,Freq,Sort
      e1,27/10/2026,"£1,000.50",M,12-34-56
      e2,31/09/2026,£2.00,W,
      TRAILER,2,"£1,002.50"
    expect:
      - record:
          employee_number: E1
          pay_date: "2026-10-27"
          gross_pay_pence: 100050
          pay_frequency: monthly
          bank: { sort_code: "123456" }
        key: E1
      - errors: [{ field: pay_date, rule: date }]
    control: { matches: true }
"#;

    fn run_text(tests: &str) -> Vec<TestOutcome> {
        let file = parse("t.tests.yaml", tests).unwrap();
        run(&file, &mapping(), &NoSchema)
    }

    #[test]
    fn a_passing_test_passes() {
        let out = run_text(TESTS);
        assert_eq!(out.len(), 1);
        assert!(out[0].passed(), "{:#?}", out[0].problems);
        assert_eq!(out[0].line, 3);
    }

    #[test]
    fn a_wrong_value_is_a_readable_diff_with_both_values_and_lines() {
        let text = TESTS.replace("gross_pay_pence: 100050", "gross_pay_pence: 100051");
        let out = run_text(&text);
        let shown: Vec<String> = out[0].problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "record 1 (input line 3, tests file line 7; expected at line 11): the canonical record differs (- expected, + actual)\n  - gross_pay_pence: 100051\n  + gross_pay_pence: 100050"
            ]
        );
    }

    #[test]
    fn missing_and_extra_fields_and_type_differences_show() {
        let text = TESTS
            .replace(
                "pay_frequency: monthly",
                "pay_frequency: monthly\n          notes: x",
            )
            .replace("sort_code: \"123456\"", "sort_code: 123456");
        let out = run_text(&text);
        let shown = out[0].problems[0].to_string();
        assert!(
            shown.contains("  - bank.sort_code: 123456\n  + bank.sort_code: \"123456\""),
            "{shown}"
        );
        assert!(shown.contains("  - notes: \"x\""), "{shown}");
        let text = TESTS.replace("          pay_frequency: monthly\n", "");
        let shown = run_text(&text)[0].problems[0].to_string();
        assert!(shown.contains("  + pay_frequency: \"monthly\""), "{shown}");
    }

    #[test]
    fn wrong_errors_wrong_key_counts_and_control_are_reported() {
        let text = TESTS
            .replace("rule: date", "rule: map")
            .replace("key: E1", "key: E9")
            .replace("TRAILER,2", "TRAILER,3");
        let shown: Vec<String> = run_text(&text)[0]
            .problems
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(
            shown[0].contains("the record key differs\n  - key: \"E9\"\n  + key: \"E1\""),
            "{}",
            shown[0]
        );
        assert!(shown[1].starts_with("record 2 (input line 4, tests file line 8; expected at line 18): it was rejected, but not as expected\n  - pay_date [map]\n  + pay_date [date] (column \"Paid\")"), "{}", shown[1]);
        assert!(shown[1].contains("value \"31/09/2026\""), "{}", shown[1]);
        assert!(
            shown[2].contains("says 3 rows but 2 were read"),
            "{}",
            shown[2]
        );

        let text = TESTS.replace("      - errors: [{ field: pay_date, rule: date }]\n", "");
        let shown = run_text(&text)[0].problems[0].to_string();
        assert!(
            shown.starts_with("record 2 (input line 4, tests file line 8): not expected"),
            "{shown}"
        );
        let text = TESTS.replace("e2,31/09/2026", "e2,30/09/2026");
        let shown = run_text(&text)[0].problems[0].to_string();
        assert!(
            shown.contains(
                "expected it to fail with pay_date [date], but it was mapped (key \"E2\")"
            ),
            "{shown}"
        );
    }

    #[test]
    fn validation_failures_count_as_rejections() {
        let text = TESTS.replace("e1,", "bad,");
        let shown = run_text(&text)[0].problems[0].to_string();
        assert!(shown.contains("expected a record, but it was rejected:\n  employee_number [schema]: does not match the pattern"), "{shown}");
    }

    #[test]
    fn the_input_is_encoded_to_the_mappings_encoding() {
        let bytes = encode_input("£1", &mapping().source.format).unwrap();
        assert_eq!(bytes, vec![0xA3, b'1']);
        let err = encode_input("€ ok, ł not", &mapping().source.format).unwrap_err();
        assert!(err.contains("windows-1252 cannot hold (\"ł\")"), "{err}");
        assert_eq!(
            xml_declared_encoding("<?xml version=\"1.0\" encoding='ISO-8859-1'?><a/>")
                .map(|e| e.name()),
            Some("windows-1252")
        );
    }

    #[test]
    fn file_mistakes_have_lines() {
        let err = parse(
            "x.tests.yaml",
            "mapping: t.yaml\ntests:\n  - name: a\n    inptu: x\n    expect: []\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("x.tests.yaml:4:"), "{text}");
        let err = parse(
            "x.tests.yaml",
            "mapping: t.yaml\ntests:\n  - name: a\n    input: x\n    expect:\n      - { key: k }\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("x.tests.yaml:6:"), "{err}");
        let err = parse(
            "x.tests.yaml",
            "mapping: t.yaml\ntests:\n  - name: a\n    expect: []\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("x.tests.yaml:3:5: test \"a\" has no `input`"),
            "{err}"
        );
    }

    #[test]
    fn tests_files_sit_beside_their_mappings() {
        assert_eq!(
            tests_file_for(Path::new("mappings/n/payroll.yaml")),
            PathBuf::from("mappings/n/payroll.tests.yaml")
        );
        assert!(is_tests_file(Path::new("a/payroll.tests.yaml")));
        assert!(!is_tests_file(Path::new("a/payroll.yaml")));
    }

    #[test]
    fn coverage_lists_fields_and_columns() {
        let m = mapping();
        let c = coverage(&m, &Schema, None);
        assert_eq!(c.optional_unmapped, vec!["bank.account_number", "notes"]);
        assert!(c.required_missing.is_empty());
        assert!(c.columns.is_none());
        let gross = c
            .mapped
            .iter()
            .find(|f| f.field == "gross_pay_pence")
            .unwrap();
        assert_eq!(gross.sources, vec!["\"Gross\""]);
        assert_eq!(gross.transforms, vec!["money"]);
        assert!(gross.required_by_schema);
        let header = Header::new(
            ["Emp No", "Name", "Paid", "Gross", "Freq", "Notes"]
                .map(String::from)
                .to_vec(),
        );
        let c = coverage(&m, &Schema, Some(&header));
        let cols = c.columns.unwrap();
        assert_eq!(cols.unused, vec!["Name", "Notes"]);
        assert_eq!(
            cols.absent,
            vec![("bank.sort_code".to_string(), "\"Sort\"".to_string())]
        );
        assert_eq!(cols.total, 6);
    }
}
