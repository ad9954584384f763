//! The `expr` transform: a jq program, run by jaq, over a field's value, with the whole source
//! record as `$record`. Compiled once with the mapping, run per record.
//!
//! Sandboxed by construction: the program sees only `.` and `$record`, and only pure functions
//! are defined. Nothing that reads or writes outside the program is provided: no `input`/
//! `inputs` (jaq-std's input filters are never loaded), no `$ENV`/`env`, no `now` or local time
//! zone, no `debug`/`stderr` (they would log values), no `halt`, and module loading
//! (`include`/`import`) is refused. `tonumber` is replaced by a strict one (see
//! [`strict_number`]). Runtime errors are described without the values jaq's messages quote.
//!
//! Bounded in time: jaq has no fuel of its own, and since `def` is refused, every loop a program
//! can make goes through the generators and recursive definitions of jaq's standard library
//! (`range`, `repeat`, `recurse`/`..`, `while`, `until`). Those are replaced here by the same
//! definitions with a step counter (`_tick`), so one run of a program may take at most
//! [`MAX_STEPS`] steps and [`MAX_TIME`]; past either, its row fails (`until(false; .)` fails its
//! row instead of hanging the run). The same bound keeps the values a loop builds
//! (`[range(1e9)]`) small. Not bounded: a single native operation on a large value (`"x" *
//! 1e9`, `tojson` of a structure doubled many times) allocates what it is asked for; such a
//! program is not a transformation of one field and review of mappings must refuse it.

use std::sync::Arc;

use jaq_core::data::JustLut;
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars};
use jaq_json::{Num, Val};
use serde::Deserialize;
use serde_json::Value;

use crate::formats::SourceRecord;

type Data = JustLut<Val>;

/// Native filters never provided: they read the environment, the clock or the local time
/// zone, write to the log, or stop the process.
const DENIED_NATIVES: &[&str] = &[
    "env",
    "now",
    "localtime",
    "strflocaltime",
    "debug_empty",
    "stderr_empty",
    "halt",
    "input",
    "inputs",
];

/// Definitions never provided: built on the natives above, or (`tonumber`) replaced.
const DENIED_DEFS: &[&str] = &[
    "debug",
    "stderr",
    "halt",
    "halt_error",
    "input",
    "inputs",
    "tonumber",
];

/// Loop steps one run of a program may take (each element of `range`, each round of `repeat`,
/// `recurse`, `while`, `until`).
pub const MAX_STEPS: u64 = 1_000_000;

/// Longest one run of a program may take, checked at each step.
pub const MAX_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// The message of a program stopped at its bound.
const TOO_LONG: &str = "the expression ran past its bound";

/// jaq's looping definitions, each step counted by `_tick` (otherwise as jaq-core defines them).
const BOUNDED_DEFS: &str = r#"
def range(from; upto; by): _range(from; upto; by) | _tick;
def range(from; upto): range(from; upto; 1);
def range(upto): range(0; upto);
def repeat(f): def rec: f, (_tick | rec); rec;
def recurse(f): def rec: ., (f | _tick | rec); rec;
def recurse: recurse(.[]?);
def recurse(f; cond): recurse(f | select(cond));
def while(cond; update): def rec: if cond then ., (update | _tick | rec) else empty end; rec;
def until(cond; update): def rec: if cond then . else update | _tick | rec end; rec;
"#;

thread_local! {
    /// Steps left and the deadline of the program running on this thread.
    static FUEL: std::cell::Cell<(u64, Option<std::time::Instant>)> =
        const { std::cell::Cell::new((MAX_STEPS, None)) };
}

/// One loop step: the value passes through, unless the run is past its bound.
fn tick(v: Val) -> jaq_core::ValR<Val> {
    FUEL.with(|fuel| {
        let (left, deadline) = fuel.get();
        let late = deadline.is_some_and(|d| left % 1024 == 0 && std::time::Instant::now() > d);
        if left == 0 || late {
            fuel.set((0, deadline));
            return Err(jaq_core::Error::str(TOO_LONG));
        }
        fuel.set((left - 1, deadline));
        Ok(v)
    })
}

/// The message of a failed `tonumber`.
const NOT_A_NUMBER: &str = "cannot parse as number";

/// The variable holding the source record.
const RECORD: &str = "$record";

const NO_MODULES: &str =
    "`expr` cannot load modules or data: `include` and `import` are not available";

/// A recursive definition can overflow the stack and abort the whole process, not one row.
const NO_DEFS: &str = "`expr` cannot define functions (`def`): a recursive definition could take the whole run down; keep expressions to one pipeline";

/// A compiled `expr` program.
#[derive(Clone)]
pub(super) struct Expr {
    program: String,
    filter: Arc<jaq_core::Filter<Data>>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expr").field(&self.program).finish()
    }
}

/// The native filters an expression may call.
fn natives() -> impl Iterator<Item = jaq_core::native::Fun<Data>> {
    let tonumber: jaq_core::native::Filter<jaq_core::RunPtr<Data>> =
        ("tonumber", jaq_core::native::v(0), |cv| {
            jaq_core::native::bome(strict_number(cv.1))
        });
    let tick: jaq_core::native::Filter<jaq_core::RunPtr<Data>> =
        ("_tick", jaq_core::native::v(0), |cv| {
            jaq_core::native::bome(tick(cv.1))
        });
    jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|(name, _, _)| !DENIED_NATIVES.contains(name))
        // The native generator is reached only through the counted `range` definitions.
        .map(|(name, arity, f)| (if name == "range" { "_range" } else { name }, arity, f))
        .chain([
            jaq_core::native::run::<Data>(tonumber),
            jaq_core::native::run::<Data>(tick),
        ])
}

/// `tonumber`, strictly: jaq's reads the text as a stream of JSON values, so that the first
/// output of `"12abc" | tonumber` is 12 and of `"1 2"` is 1. Here the whole text (trimmed)
/// must be one decimal number; leading zeros are allowed (`007` is 7), as in jq.
fn strict_number(v: Val) -> jaq_core::ValR<Val> {
    let text = match &v {
        Val::Num(_) => return Ok(v),
        Val::TStr(b) => String::from_utf8_lossy(b).trim().to_string(),
        _ => return Err(jaq_core::Error::typ(v, "string")),
    };
    let fail = || jaq_core::Error::str(NOT_A_NUMBER);
    if text.is_empty()
        || !text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'))
        || !text.chars().any(|c| c.is_ascii_digit())
    {
        return Err(fail());
    }
    if let Ok(i) = text.parse::<isize>() {
        return Ok(Val::from(i));
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(Val::from(f)),
        _ => Err(fail()),
    }
}

/// jaq's looping definitions, replaced by [`BOUNDED_DEFS`] where they stand (later definitions
/// use them).
const LOOP_DEFS: &[&str] = &["range", "repeat", "recurse", "while", "until"];

fn definitions() -> impl Iterator<Item = load::parse::Def<&'static str>> {
    let mut bounded =
        Some(load::parse(BOUNDED_DEFS, |p| p.defs()).expect("the bounded definitions parse"));
    let core: Vec<_> = jaq_core::defs()
        .flat_map(move |d| {
            if LOOP_DEFS.contains(&d.name) {
                bounded.take().unwrap_or_default()
            } else {
                vec![d]
            }
        })
        .collect();
    core.into_iter()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs())
        .filter(|d| !DENIED_DEFS.contains(&d.name))
}

impl Expr {
    /// Parses and compiles a program; the error says what is wrong and where in the program.
    pub(super) fn compile(program: &str) -> Result<Self, String> {
        // `Loader::new` reads no module files, so `include "m"` fails to load; but
        // `import "data" as $d` would declare a variable the run could not bind: refuse both.
        if let Ok(tokens) = load::Lexer::new(program).lex()
            && tokens
                .iter()
                .any(|t| matches!(t.1, load::lex::Tok::Word) && matches!(t.0, "import" | "include"))
        {
            return Err(NO_MODULES.into());
        }
        if let Ok(tokens) = load::Lexer::new(program).lex()
            && tokens
                .iter()
                .any(|t| matches!(t.1, load::lex::Tok::Word) && t.0 == "def")
        {
            return Err(NO_DEFS.into());
        }
        let arena = Arena::default();
        let loader = Loader::new(definitions());
        let modules = loader
            .load(
                &arena,
                File {
                    code: program,
                    path: (),
                },
            )
            .map_err(|errors| load_error(program, errors))?;
        let filter = Compiler::default()
            .with_funs(natives())
            .with_global_vars([RECORD])
            .compile(modules)
            .map_err(|errors| {
                let names: Vec<String> = errors
                    .into_iter()
                    .flat_map(|(_, e)| e)
                    .map(|(name, kind)| match kind {
                        jaq_core::compile::Undefined::Filter(arity) if arity > 0 => {
                            format!("`{name}/{arity}`")
                        }
                        kind => format!("{} `{name}`", kind.as_str()),
                    })
                    .collect();
                format!(
                    "`expr` uses {}, which is not available: expressions see only `.` and `$record` and may call only pure jq functions (no input, environment, clock or logging)",
                    names.join(", ")
                )
            })?;
        Ok(Self {
            program: program.to_string(),
            filter: Arc::new(filter),
        })
    }

    /// Runs the program on `input` with the record as `$record`. The first output is the
    /// result; `Err` carries a message that never contains a value of the record.
    pub(super) fn run(&self, input: &Value, record: &SourceRecord) -> Result<Value, String> {
        let input = Val::deserialize(input).map_err(|_| "cannot read the value".to_string())?;
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([record_val(record)]));
        FUEL.with(|f| f.set((MAX_STEPS, Some(std::time::Instant::now() + MAX_TIME))));
        let first = self.filter.id.run((ctx, input)).next();
        match first {
            None => Err("the expression produced no value".into()),
            Some(Ok(v)) => to_json(&v).ok_or_else(|| {
                "the expression produced a value that is not JSON (NaN, infinity, bytes or a non-text object key)".into()
            }),
            Some(Err(exn)) => Err(match exn.get_err() {
                Ok(e) => self.describe(&e.to_string()),
                Err(_) => "the expression stopped without a value".into(),
            }),
        }
    }

    /// A value-free description of a runtime error. jaq's messages quote the values involved,
    /// so only their fixed parts are kept; an `error("...")` message is shown when it is a
    /// string literal of the program (the author's words, not data).
    fn describe(&self, message: &str) -> String {
        // An error made of text (`error("...")`, most native errors) displays as a JSON string.
        let text = serde_json::from_str::<String>(message).ok();
        if let Some(t) = &text
            && !t.is_empty()
            && self.program.contains(&format!("\"{t}\""))
        {
            return format!("the expression raised an error: {t}");
        }
        let m = text.as_deref().unwrap_or(message);
        if m == TOO_LONG {
            format!(
                "the expression ran past its bound ({MAX_STEPS} loop steps or {} s): a loop \
                 (`until`, `while`, `repeat`, `recurse`, `range`) that does not end?",
                MAX_TIME.as_secs()
            )
        } else if m == NOT_A_NUMBER {
            "`tonumber`: the text is not a number".into()
        } else if m.starts_with("cannot parse ") && m.contains(" as JSON") {
            "`fromjson`: the text is not JSON".into()
        } else if m.starts_with("cannot use ")
            && let Some((_, kind)) = m.rsplit_once(" as ")
        {
            format!("a value is not of the type the expression needs (wanted {kind})")
        } else if m.starts_with("cannot calculate ") {
            "cannot calculate with these values (text where a number is wanted? use `tonumber`)"
                .into()
        } else if m.starts_with("cannot index ") {
            "cannot index the value with this key (e.g. `.name` on text)".into()
        } else if m.starts_with("invalid regex") {
            "the regular expression is not valid".into()
        } else {
            "the expression raised an error (not shown, as it may contain the value)".into()
        }
    }
}

fn load_error(program: &str, errors: load::Errors<&str, ()>) -> String {
    let at = |found: &str| {
        let offset = load::span(program, found).start;
        let column = program[..offset].chars().count() + 1;
        if found.is_empty() {
            "at the end".to_string()
        } else {
            format!("at character {column}")
        }
    };
    let mut problems = Vec::new();
    for (_, e) in errors {
        match e {
            load::Error::Io(_) => return NO_MODULES.into(),
            load::Error::Lex(es) => problems.extend(
                es.iter()
                    .map(|(expect, found)| format!("expected {} {}", expect.as_str(), at(found))),
            ),
            load::Error::Parse(es) => problems.extend(
                es.iter()
                    .map(|(expect, found)| format!("expected {} {}", expect.as_str(), at(found))),
            ),
        }
    }
    format!("`expr` is not a valid jq program: {}", problems.join("; "))
}

/// The record as an object of column name → text; for a repeated name the first wins.
fn record_val(record: &SourceRecord) -> Val {
    let mut map = jaq_json::Map::default();
    for (i, name) in record.header.names().iter().enumerate() {
        let key = Val::from(name.clone());
        if !map.contains_key(&key) {
            map.insert(key, Val::from(record.get(i).to_string()));
        }
    }
    Val::obj(map)
}

/// A jaq value as JSON, or `None` when JSON cannot hold it.
fn to_json(v: &Val) -> Option<Value> {
    Some(match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(Num::Int(i)) => Value::from(*i as i64),
        Val::Num(Num::Float(f)) => Value::Number(serde_json::Number::from_f64(*f)?),
        Val::Num(n @ (Num::BigInt(_) | Num::Dec(_))) => {
            let n: serde_json::Number = serde_json::from_str(&n.to_string()).ok()?;
            // A decimal as written (`1.50`) comes back as the number it denotes.
            Value::Number(n)
        }
        Val::TStr(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        Val::BStr(_) => return None,
        Val::Arr(a) => Value::Array(a.iter().map(to_json).collect::<Option<_>>()?),
        Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, v)| match k {
                    Val::TStr(k) => Some((String::from_utf8_lossy(k).into_owned(), to_json(v)?)),
                    _ => None,
                })
                .collect::<Option<_>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{Header, Locator};

    fn record(header: &[&str], values: &[&str]) -> SourceRecord {
        SourceRecord {
            locator: Locator {
                file: "f.csv".into(),
                line: 2,
                row: 1,
            },
            header: Arc::new(Header::new(header.iter().map(|s| s.to_string()).collect())),
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn run(program: &str, input: Value) -> Result<Value, String> {
        let r = record(&["A", "B", "A"], &["1", "two", "3"]);
        Expr::compile(program)?.run(&input, &r)
    }

    #[test]
    fn values_round_trip_and_the_record_is_visible() {
        assert_eq!(run(".", Value::from("x")), Ok(Value::from("x")));
        assert_eq!(run(". * 2", Value::from(21)), Ok(Value::from(42)));
        assert_eq!(run(". / 4", Value::from(1)), Ok(Value::from(0.25)));
        assert_eq!(run("1.50", Value::Null), Ok(Value::from(1.5)));
        assert_eq!(run("$record.A", Value::Null), Ok(Value::from("1")));
        assert_eq!(
            run("$record | keys", Value::Null),
            Ok(serde_json::json!(["A", "B"]))
        );
        assert_eq!(
            run("{a: [1, true, null]}", Value::Null),
            Ok(serde_json::json!({"a": [1, true, null]}))
        );
        assert_eq!(run("first(repeat(.))", Value::from(7)), Ok(Value::from(7)));
        assert_eq!(run("range(1e18)", Value::Null), Ok(Value::from(0)));
    }

    #[test]
    fn tonumber_reads_the_whole_text() {
        assert_eq!(run("tonumber", Value::from(" 007 ")), Ok(Value::from(7)));
        assert_eq!(
            run("tonumber", Value::from("-22.5")),
            Ok(Value::from(-22.5))
        );
        assert_eq!(run("tonumber", Value::from("1e3")), Ok(Value::from(1000.0)));
        assert_eq!(run("tonumber", Value::from(4)), Ok(Value::from(4)));
        for text in ["12abc", "1 2", "0x10", "", "-", "1e400", "nan", "inf", "£5"] {
            assert_eq!(
                run("tonumber", Value::from(text)),
                Err("`tonumber`: the text is not a number".into()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn errors_never_contain_the_value() {
        let e = run("tonumber", Value::from("Jane Smith")).unwrap_err();
        assert!(!e.contains("Jane"), "{e}");
        let e = run(". + 1", Value::from("Jane Smith")).unwrap_err();
        assert!(!e.contains("Jane") && e.contains("cannot calculate"), "{e}");
        let e = run("error(\"bad \\(.)\")", Value::from("Jane Smith")).unwrap_err();
        assert!(!e.contains("Jane"), "{e}");
        let e = run("error(\"no contract hours\")", Value::from("Jane")).unwrap_err();
        assert!(e.ends_with("no contract hours"), "{e}");
        let e = run(".x", Value::from("Jane")).unwrap_err();
        assert!(!e.contains("Jane"), "{e}");
        assert_eq!(
            run("empty", Value::Null),
            Err("the expression produced no value".into())
        );
        assert!(run("nan", Value::Null).unwrap_err().contains("not JSON"));
    }

    #[test]
    fn nothing_outside_the_program_is_reachable() {
        for program in [
            "$ENV",
            "env",
            "input",
            "inputs",
            "now",
            "debug",
            "debug(1)",
            "stderr",
            "halt",
            "halt_error",
            "halt_error(1)",
            "localtime",
            "0 | strflocaltime(\"%Y\")",
            "input_filename",
            "$__prog_args",
            "include \"x\"; .",
            "def f: 1 + f; f",
            "import \"x\" as x; .",
            "import \"data\" as $d; $d",
        ] {
            let e = Expr::compile(program).unwrap_err();
            assert!(e.starts_with("`expr`"), "{program}: {e}");
        }
        // Pure functions are there.
        for program in [
            "ascii_downcase",
            "test(\"a\")",
            "ltrimstr(\"x\")",
            "gsub(\"a\"; \"b\")",
            "strptime(\"%Y\") | mktime",
            "@base64",
            "tojson",
            "map(.)",
        ] {
            assert!(Expr::compile(program).is_ok(), "{program}");
        }
    }

    #[test]
    fn the_sandbox_is_reviewed_when_jaq_adds_functions() {
        // A jaq upgrade that adds native filters changes this count: check the new ones are
        // pure (or add them to DENIED_NATIVES), then update the number.
        let mut names: Vec<&str> = natives().map(|(n, _, _)| n).collect();
        names.sort_unstable();
        names.dedup();
        // 108 of jaq's, and `_tick` (the step counter; `range` is there renamed `_range`).
        assert_eq!(names.len(), 109, "{names:?}");
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = Expr::compile(". +").unwrap_err();
        assert!(
            e.starts_with("`expr` is not a valid jq program: expected"),
            "{e}"
        );
        let e = Expr::compile("(1 + 2").unwrap_err();
        assert!(e.contains("closing parenthesis"), "{e}");
    }

    #[test]
    fn a_mapping_with_expressions_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Expr>();
    }

    #[test]
    fn loops_are_bounded_in_steps_and_time() {
        let started = std::time::Instant::now();
        for program in [
            "until(false; .)",
            "last(range(1e12))",
            "[repeat(1)] | length",
            "last(recurse(. + 1))",
            "[while(true; .)] | length",
            "reduce range(1e15) as $i (0; . + 1)",
            "try until(false; .) catch until(false; .)",
        ] {
            let e = run(program, Value::from(1)).unwrap_err();
            assert!(e.contains("ran past its bound"), "{program}: {e}");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(
            run("[range(5)]", Value::Null),
            Ok(serde_json::json!([0, 1, 2, 3, 4]))
        );
        assert_eq!(
            run("until(. > 100; . * 2)", Value::from(1)),
            Ok(Value::from(128))
        );
        assert_eq!(run("first(repeat(7))", Value::Null), Ok(Value::from(7)));
        assert_eq!(
            run("[.. | numbers]", serde_json::json!([1, [2]])),
            Ok(serde_json::json!([1, 2]))
        );
        // The bound is per run: the next row starts with full fuel.
        assert_eq!(
            run("[range(1000)] | length", Value::Null),
            Ok(Value::from(1000))
        );
    }
}
