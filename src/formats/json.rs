//! JSON exports: records in an array at a JSON pointer (`{"workers": [{...}, {...}]}` with
//! `records_at: /workers`, or a top-level array with `records_at: ""`), or NDJSON (one JSON
//! object per line). Read as a stream: only the current record is in memory, however large the
//! file.
//!
//! A small scanner walks the document to the array at the pointer (skipping other members
//! without keeping them), then reads one element at a time; strings are decoded by `serde_json`.
//! Numbers are kept exactly as written (`1.50` stays `1.50`, a 20-digit reference keeps every
//! digit), which parsing to `serde_json::Value` would not do.
//!
//! # Flattening
//!
//! Every leaf of a record becomes a column named by its path relative to the record, segments
//! joined with `/`; the same rule as [`super::xml`]:
//!
//! - object keys are segments (`name/given`);
//! - array elements follow the rule for repeated siblings: the first element has the array's
//!   path, later ones a 1-based index from the second on (`phones/number`,
//!   `phones[2]/number`; `tags`, `tags[2]` for scalars), so a mapping that names a path without
//!   index gets the first. An element that is itself an array is always indexed (`m[1]`,
//!   `m[1][2]`), so that arrays of arrays keep distinct names. A key repeated in one object is
//!   indexed the same way;
//! - scalars become text: strings as they are, numbers as written, booleans `true`/`false`,
//!   `null` the empty string; an empty object or array is a leaf with the empty string.
//!
//! Records must be JSON objects: another value in the array (or on an NDJSON line) is a row
//! failure. Records carry their own [`Header`]; consecutive records with the same columns share
//! one.
//!
//! # Errors
//!
//! In an array, a syntax error (or bytes that are not UTF-8 inside a string) means the rest of
//! the file cannot be trusted: the records before it are yielded, then
//! [`FormatError::Malformed`] with the line. In NDJSON, a bad line is an [`Item::Failure`] with
//! its line number and the other lines carry on. JSON is UTF-8 (RFC 8259); a UTF-8 byte-order
//! mark is skipped.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read};

use super::limits::{LimitExceeded, Limits, Meter, MeterState};
use std::sync::Arc;

use serde::Deserialize;

use super::{DecodeFailure, FormatError, Header, Item, Locator, SourceRecord};

/// How to read a JSON export (from the mapping's `source:` section).
#[derive(Debug, Clone, Default)]
pub struct JsonOptions {
    /// JSON pointer (RFC 6901) to the array of records: `/workers`, `/data/0/items`, or `""`
    /// for a top-level array. Must be `""` for NDJSON.
    pub records_at: String,
    /// One JSON object per line instead of one document.
    pub ndjson: bool,
}

/// Parses a JSON pointer into its reference tokens (`/a~1b/c` → `["a/b", "c"]`). For mapping
/// checks as well as the decoder.
pub fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "records_at `{pointer}` is not a JSON pointer: it must start with `/` (`/{pointer}`), \
             or be empty for a top-level array"
        ));
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, false) => out.push(c),
                    (_, true) => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(format!(
                                "records_at `{pointer}`: `~` must be followed by 0 or 1 \
                                 (`~0` is `~`, `~1` is `/`)"
                            ));
                        }
                    },
                }
            }
            Ok(out)
        })
        .collect()
}

/// Why parsing stopped.
#[derive(Debug)]
enum JsonError {
    Io(io::Error),
    Syntax { line: u64, message: String },
}

impl From<io::Error> for JsonError {
    fn from(e: io::Error) -> Self {
        JsonError::Io(e)
    }
}

/// Bytes with the current line: every byte read, by the scanner or by `serde_json`, passes here.
struct Src<R> {
    inner: R,
    line: u64,
}

impl<R: BufRead> Src<R> {
    fn peek(&mut self) -> io::Result<Option<u8>> {
        loop {
            match self.inner.fill_buf() {
                Ok(buf) => return Ok(buf.first().copied()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Consumes `b`, which `peek` just returned.
    fn bump(&mut self, b: u8) {
        self.inner.consume(1);
        if b == b'\n' {
            self.line += 1;
        }
    }
}

impl<R: BufRead> Read for Src<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.line += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(n)
    }
}

/// A record being flattened: the current path and the columns so far.
#[derive(Default)]
struct Flat {
    path: String,
    columns: Vec<(String, String)>,
}

impl Flat {
    fn leaf(&mut self, value: String) {
        self.columns.push((self.path.clone(), value));
    }
}

/// A streaming JSON scanner over `R`.
struct Parser<R> {
    src: Src<R>,
    /// Deepest nesting accepted (`max_depth`, at most 128 as `serde_json`), so a hostile file
    /// cannot exhaust the stack.
    max_depth: usize,
}

fn describe(b: Option<u8>) -> String {
    match b {
        None => "the end of the file".to_string(),
        Some(b) if b.is_ascii_graphic() => format!("`{}`", b as char),
        Some(b) => format!("byte 0x{b:02X}"),
    }
}

fn kind_of(first: u8) -> &'static str {
    match first {
        b'{' => "an object",
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "a number",
    }
}

/// Whether `s` is a JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_number(s: &[u8]) -> bool {
    let digits = |s: &[u8], i: &mut usize| {
        let start = *i;
        while s.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    let mut i = usize::from(s.first() == Some(&b'-'));
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(s, &mut i);
        }
        _ => return false,
    }
    if s.get(i) == Some(&b'.') {
        i += 1;
        if !digits(s, &mut i) {
            return false;
        }
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(s, &mut i) {
            return false;
        }
    }
    i == s.len()
}

impl<R: BufRead> Parser<R> {
    fn new(inner: R, line: u64, max_depth: usize) -> Self {
        Self {
            src: Src { inner, line },
            max_depth: max_depth.min(128),
        }
    }

    fn syntax<T>(&self, message: impl Into<String>) -> Result<T, JsonError> {
        Err(JsonError::Syntax {
            line: self.src.line,
            message: message.into(),
        })
    }

    /// Skips whitespace; the next byte, not consumed.
    fn ws(&mut self) -> Result<Option<u8>, JsonError> {
        loop {
            match self.src.peek()? {
                Some(b @ (b' ' | b'\t' | b'\r' | b'\n')) => self.src.bump(b),
                other => return Ok(other),
            }
        }
    }

    /// Skips whitespace and consumes `want`.
    fn expect(&mut self, want: u8, context: &str) -> Result<(), JsonError> {
        match self.ws()? {
            Some(b) if b == want => {
                self.src.bump(b);
                Ok(())
            }
            other => self.syntax(format!(
                "expected `{}` {context}, found {}",
                want as char,
                describe(other)
            )),
        }
    }

    /// A string; the next byte must be its opening quote.
    fn string(&mut self) -> Result<String, JsonError> {
        let mut de = serde_json::Deserializer::from_reader(&mut self.src);
        match String::deserialize(&mut de) {
            Ok(s) => Ok(s),
            Err(e) if e.is_io() => Err(JsonError::Io(e.into())),
            Err(e) => {
                let full = e.to_string();
                let suffix = format!(" at line {} column {}", e.line(), e.column());
                let mut message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
                if message.contains("invalid unicode code point") {
                    message
                        .push_str(" in a string (bytes that are not UTF-8, or a bad \\u escape)");
                }
                self.syntax(message)
            }
        }
    }

    /// A number or literal, returned as written.
    fn token(&mut self) -> Result<String, JsonError> {
        let mut token = Vec::new();
        while let Some(b) = self.src.peek()? {
            if !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')) {
                break;
            }
            self.src.bump(b);
            token.push(b);
            if token.len() > 1024 {
                break;
            }
        }
        match token.as_slice() {
            b"true" | b"false" => Ok(String::from_utf8(token).expect("ASCII")),
            b"null" => Ok(String::new()),
            t if is_number(t) => Ok(String::from_utf8(token).expect("ASCII")),
            [] => {
                let next = self.src.peek()?;
                self.syntax(format!("expected a value, found {}", describe(next)))
            }
            t => {
                let shown: String = String::from_utf8_lossy(t).chars().take(20).collect();
                self.syntax(format!("expected a value, found `{shown}`"))
            }
        }
    }

    /// Reads one value, flattening it into `out` when given (skipping it otherwise).
    fn value(&mut self, mut out: Option<&mut Flat>, depth: usize) -> Result<(), JsonError> {
        if depth > self.max_depth {
            return self.syntax(
                LimitExceeded::new(
                    format!("values nested deeper than {} levels", self.max_depth),
                    self.max_depth,
                    "max_depth",
                )
                .to_string(),
            );
        }
        match self.ws()? {
            Some(b'{') => {
                self.src.bump(b'{');
                if self.ws()? == Some(b'}') {
                    self.src.bump(b'}');
                    if let Some(out) = out {
                        out.leaf(String::new());
                    }
                    return Ok(());
                }
                let mut seen: Vec<(String, usize)> = Vec::new();
                loop {
                    match self.ws()? {
                        Some(b'"') => {}
                        other => {
                            return self.syntax(format!(
                                "expected a member name in double quotes, found {}",
                                describe(other)
                            ));
                        }
                    }
                    let key = self.string()?;
                    self.expect(b':', "after a member name")?;
                    match out.as_deref_mut() {
                        Some(flat) => {
                            let n = match seen.iter_mut().find(|(k, _)| *k == key) {
                                Some((_, n)) => {
                                    *n += 1;
                                    *n
                                }
                                None => {
                                    seen.push((key.clone(), 1));
                                    1
                                }
                            };
                            let len = flat.path.len();
                            if !flat.path.is_empty() {
                                flat.path.push('/');
                            }
                            flat.path.push_str(&key);
                            if n > 1 {
                                let _ = write!(flat.path, "[{n}]");
                            }
                            self.value(Some(&mut *flat), depth + 1)?;
                            flat.path.truncate(len);
                        }
                        None => self.value(None, depth + 1)?,
                    }
                    match self.ws()? {
                        Some(b',') => self.src.bump(b','),
                        Some(b'}') => {
                            self.src.bump(b'}');
                            return Ok(());
                        }
                        other => {
                            return self.syntax(format!(
                                "expected `,` or `}}` after an object member, found {}",
                                describe(other)
                            ));
                        }
                    }
                }
            }
            Some(b'[') => {
                self.src.bump(b'[');
                if self.ws()? == Some(b']') {
                    self.src.bump(b']');
                    if let Some(out) = out {
                        out.leaf(String::new());
                    }
                    return Ok(());
                }
                let mut i = 0usize;
                loop {
                    i += 1;
                    let first = self.ws()?;
                    match out.as_deref_mut() {
                        Some(flat) => {
                            let len = flat.path.len();
                            if i > 1 || first == Some(b'[') {
                                let _ = write!(flat.path, "[{i}]");
                            }
                            self.value(Some(&mut *flat), depth + 1)?;
                            flat.path.truncate(len);
                        }
                        None => self.value(None, depth + 1)?,
                    }
                    match self.ws()? {
                        Some(b',') => self.src.bump(b','),
                        Some(b']') => {
                            self.src.bump(b']');
                            return Ok(());
                        }
                        other => {
                            return self.syntax(format!(
                                "expected `,` or `]` after an array element, found {}",
                                describe(other)
                            ));
                        }
                    }
                }
            }
            Some(b'"') => {
                let s = self.string()?;
                if let Some(out) = out {
                    out.leaf(s);
                }
                Ok(())
            }
            _ => {
                let t = self.token()?;
                if let Some(out) = out {
                    out.leaf(t);
                }
                Ok(())
            }
        }
    }

    /// Reads one record: `Ok(Ok(columns))` for an object, `Ok(Err(reason))` for another value.
    fn record(&mut self) -> Result<Result<Vec<(String, String)>, String>, JsonError> {
        match self.ws()? {
            Some(b'{') => {
                let mut flat = Flat::default();
                self.value(Some(&mut flat), 1)?;
                Ok(Ok(flat.columns))
            }
            Some(first) => {
                self.value(None, 1)?;
                Ok(Err(format!(
                    "the record is {}, not a JSON object",
                    kind_of(first)
                )))
            }
            None => self.syntax("expected a value, found the end of the file"),
        }
    }
}

/// Containers around the records array, closed after it.
#[derive(Debug, Clone, Copy)]
enum Container {
    Object,
    Array,
}

/// Where the array decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Just after `[`.
    First,
    /// After an element: `,` or `]` next.
    Next,
    /// After `]`: the rest of the document to check.
    Tail,
}

enum Mode {
    Array {
        parser: Parser<BufReader<Box<dyn Read>>>,
        enclosing: Vec<Container>,
        step: Step,
    },
    Ndjson {
        lines: BufReader<Box<dyn Read>>,
        buf: Vec<u8>,
        line: u64,
        meter: Arc<MeterState>,
    },
}

/// Streaming JSON / NDJSON decoder: an iterator of [`Item`]s holding one record at a time.
pub struct JsonDecoder {
    file: String,
    mode: Mode,
    rows: u64,
    last_header: Arc<Header>,
    empty_header: Arc<Header>,
    max_depth: usize,
    done: bool,
}

/// Reads up to 3 bytes to skip a UTF-8 byte-order mark; refuses UTF-16.
fn skip_bom(mut bytes: impl Read + 'static) -> Result<Box<dyn Read>, Result<io::Error, String>> {
    let mut head = Vec::with_capacity(3);
    (&mut bytes).take(3).read_to_end(&mut head).map_err(Ok)?;
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return Err(Err(
            "the file is UTF-16 (it starts with a UTF-16 byte-order mark); JSON files must be UTF-8"
                .to_string(),
        ));
    }
    if head == [0xEF, 0xBB, 0xBF] {
        head.clear();
    }
    Ok(Box::new(io::Cursor::new(head).chain(bytes)))
}

impl JsonDecoder {
    /// Starts decoding `bytes` (the raw file) named `file`. For an array, reads up to the `[` of
    /// the array at `records_at`, so a file without it fails here rather than half-way.
    pub fn new(
        file: impl Into<String>,
        bytes: impl Read + 'static,
        options: &JsonOptions,
    ) -> Result<Self, FormatError> {
        Self::new_limited(file, bytes, options, &Limits::default())
    }

    /// [`JsonDecoder::new`] within a feed's limits (`max_depth`; NDJSON: `max_line_bytes`).
    pub fn new_limited(
        file: impl Into<String>,
        bytes: impl Read + 'static,
        options: &JsonOptions,
        limits: &Limits,
    ) -> Result<Self, FormatError> {
        let file = file.into();
        let malformed = |line: u64, message: String| FormatError::Malformed {
            file: file.clone(),
            line,
            message,
        };
        let tokens = parse_pointer(&options.records_at).map_err(|m| malformed(0, m))?;
        if options.ndjson && !tokens.is_empty() {
            return Err(malformed(
                0,
                format!(
                    "records_at is `{}`, but in NDJSON every line is a record: leave records_at empty",
                    options.records_at
                ),
            ));
        }
        let bytes = match skip_bom(bytes) {
            Ok(b) => b,
            Err(Ok(source)) => return Err(FormatError::Io { file, source }),
            Err(Err(message)) => return Err(malformed(1, message)),
        };
        let mode = if options.ndjson {
            let (metered, meter) =
                Meter::new(bytes, limits.max_line_bytes, "a line", "max_line_bytes");
            let metered: Box<dyn Read> = Box::new(metered);
            Mode::Ndjson {
                lines: BufReader::with_capacity(64 * 1024, metered),
                buf: Vec::new(),
                line: 0,
                meter,
            }
        } else {
            let reader = BufReader::with_capacity(64 * 1024, bytes);
            let mut parser = Parser::new(reader, 1, limits.max_depth);
            let enclosing = match find_array(&mut parser, &tokens, &options.records_at) {
                Ok(enclosing) => enclosing,
                Err(JsonError::Io(source)) => return Err(FormatError::Io { file, source }),
                Err(JsonError::Syntax { line, message }) => return Err(malformed(line, message)),
            };
            Mode::Array {
                parser,
                enclosing,
                step: Step::First,
            }
        };
        let empty_header = Arc::new(Header::new(Vec::new()));
        Ok(Self {
            file,
            mode,
            rows: 0,
            last_header: empty_header.clone(),
            empty_header,
            max_depth: limits.max_depth,
            done: false,
        })
    }

    /// An empty header: JSON records carry their own (path columns differ between records).
    pub fn header(&self) -> Arc<Header> {
        self.empty_header.clone()
    }

    fn error(&mut self, e: JsonError) -> FormatError {
        self.done = true;
        match e {
            JsonError::Io(source) => FormatError::Io {
                file: self.file.clone(),
                source,
            },
            JsonError::Syntax { line, message } => FormatError::Malformed {
                file: self.file.clone(),
                line,
                message: format!("the JSON is not valid: {message}"),
            },
        }
    }

    /// The item for one record read at `line`.
    fn item(&mut self, line: u64, record: Result<Vec<(String, String)>, String>) -> Item {
        self.rows += 1;
        let locator = Locator {
            file: self.file.clone(),
            line,
            row: self.rows,
        };
        match record {
            Ok(columns) => {
                let same = columns
                    .iter()
                    .map(|(name, _)| name)
                    .eq(self.last_header.names().iter());
                if !same {
                    let names = columns.iter().map(|(n, _)| n.clone()).collect();
                    self.last_header = Arc::new(Header::new(names));
                }
                Item::Record(SourceRecord {
                    locator,
                    header: self.last_header.clone(),
                    values: columns.into_iter().map(|(_, v)| v).collect(),
                })
            }
            Err(reason) => Item::Failure(DecodeFailure {
                locator,
                reason,
                record: None,
            }),
        }
    }

    fn next_in_array(&mut self) -> Result<Option<Item>, JsonError> {
        let Mode::Array {
            parser,
            enclosing,
            step,
        } = &mut self.mode
        else {
            unreachable!("array mode")
        };
        loop {
            match *step {
                Step::First | Step::Next => {
                    let b = parser.ws()?;
                    match (b, *step) {
                        (Some(b']'), _) => {
                            parser.src.bump(b']');
                            *step = Step::Tail;
                            continue;
                        }
                        (Some(b','), Step::Next) => parser.src.bump(b','),
                        (_, Step::First) => {}
                        (other, _) => {
                            return parser.syntax(format!(
                                "expected `,` or `]` after a record, found {}",
                                describe(other)
                            ));
                        }
                    }
                    parser.ws()?;
                    let line = parser.src.line;
                    let record = parser.record()?;
                    *step = Step::Next;
                    return Ok(Some(self.item(line, record)));
                }
                Step::Tail => {
                    while let Some(container) = enclosing.pop() {
                        let close = match container {
                            Container::Object => b'}',
                            Container::Array => b']',
                        };
                        loop {
                            match parser.ws()? {
                                Some(b) if b == close => {
                                    parser.src.bump(b);
                                    break;
                                }
                                Some(b',') => parser.src.bump(b','),
                                other => {
                                    return parser.syntax(format!(
                                        "expected `,` or `{}`, found {}",
                                        close as char,
                                        describe(other)
                                    ));
                                }
                            }
                            if let Container::Object = container {
                                if parser.ws()? != Some(b'"') {
                                    let other = parser.ws()?;
                                    return parser.syntax(format!(
                                        "expected a member name in double quotes, found {}",
                                        describe(other)
                                    ));
                                }
                                parser.string()?;
                                parser.expect(b':', "after a member name")?;
                            }
                            parser.value(None, 1)?;
                        }
                    }
                    if let Some(b) = parser.ws()? {
                        return parser.syntax(format!(
                            "unexpected {} after the end of the JSON document",
                            describe(Some(b))
                        ));
                    }
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }

    fn next_line(&mut self) -> Result<Option<Item>, io::Error> {
        let Mode::Ndjson {
            lines,
            buf,
            line,
            meter,
        } = &mut self.mode
        else {
            unreachable!("NDJSON mode")
        };
        loop {
            buf.clear();
            meter.mark();
            if lines.read_until(b'\n', buf)? == 0 {
                self.done = true;
                return Ok(None);
            }
            *line += 1;
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let at = *line;
            let record = if std::str::from_utf8(buf).is_err() {
                Err("the line has bytes that are not valid UTF-8; JSON files must be UTF-8".into())
            } else {
                let mut parser = Parser::new(&buf[..], at, self.max_depth);
                let read = parser.record().and_then(|record| {
                    let rest = parser.ws()?;
                    Ok((record, rest))
                });
                match read {
                    Ok((Ok(columns), None)) => Ok(columns),
                    Ok((Ok(_), Some(b))) => Err(format!(
                        "unexpected {} after the JSON object (NDJSON has one object per line)",
                        describe(Some(b))
                    )),
                    Ok((Err(reason), _)) => Err(reason),
                    Err(JsonError::Syntax { message, .. }) => {
                        Err(format!("the line is not valid JSON: {message}"))
                    }
                    Err(JsonError::Io(e)) => return Err(e),
                }
            };
            return Ok(Some(self.item(at, record)));
        }
    }
}

/// Walks from the document root to the `[` of the array at `tokens` and consumes it; returns
/// the containers left open around it.
fn find_array<R: BufRead>(
    parser: &mut Parser<R>,
    tokens: &[String],
    pointer: &str,
) -> Result<Vec<Container>, JsonError> {
    let mut enclosing = Vec::new();
    let mut at = String::new();
    for token in tokens {
        let here = if at.is_empty() {
            "the document root"
        } else {
            at.as_str()
        };
        match parser.ws()? {
            Some(b'{') => {
                parser.src.bump(b'{');
                enclosing.push(Container::Object);
                let not_found = |parser: &Parser<R>| {
                    parser.syntax::<()>(format!(
                        "records_at `{pointer}`: the object at {here} has no member \"{token}\""
                    ))
                };
                if parser.ws()? == Some(b'}') {
                    not_found(parser)?;
                }
                loop {
                    if parser.ws()? != Some(b'"') {
                        let other = parser.ws()?;
                        return parser.syntax(format!(
                            "expected a member name in double quotes, found {}",
                            describe(other)
                        ));
                    }
                    let key = parser.string()?;
                    parser.expect(b':', "after a member name")?;
                    if &key == token {
                        break;
                    }
                    parser.value(None, 1)?;
                    match parser.ws()? {
                        Some(b',') => parser.src.bump(b','),
                        Some(b'}') => not_found(parser)?,
                        other => {
                            return parser.syntax(format!(
                                "expected `,` or `}}` after an object member, found {}",
                                describe(other)
                            ));
                        }
                    }
                }
            }
            Some(b'[') => {
                let index: usize = match token.parse() {
                    Ok(i) if token == "0" || !token.starts_with('0') => i,
                    _ => {
                        return parser.syntax(format!(
                            "records_at `{pointer}`: {here} is an array, and \"{token}\" is not an \
                             array index"
                        ));
                    }
                };
                parser.src.bump(b'[');
                enclosing.push(Container::Array);
                if parser.ws()? == Some(b']') {
                    return parser.syntax(format!(
                        "records_at `{pointer}`: the array at {here} has no element {index} (it is empty)"
                    ));
                }
                for i in 0..index {
                    parser.value(None, 1)?;
                    match parser.ws()? {
                        Some(b',') => parser.src.bump(b','),
                        Some(b']') => {
                            return parser.syntax(format!(
                                "records_at `{pointer}`: the array at {here} has no element {index} \
                                 (it has {})",
                                i + 1
                            ));
                        }
                        other => {
                            return parser.syntax(format!(
                                "expected `,` or `]` after an array element, found {}",
                                describe(other)
                            ));
                        }
                    }
                }
            }
            Some(first) => {
                return parser.syntax(format!(
                    "records_at `{pointer}`: {here} is {}, so it has no \"{token}\"",
                    kind_of(first)
                ));
            }
            None => return parser.syntax("the file is empty: expected a JSON document"),
        }
        at.push('/');
        at.push_str(token);
    }
    let here = if at.is_empty() {
        "the document root"
    } else {
        at.as_str()
    };
    match parser.ws()? {
        Some(b'[') => {
            parser.src.bump(b'[');
            Ok(enclosing)
        }
        Some(first) => parser.syntax(format!(
            "records_at `{pointer}`: {here} is {}, not an array of records",
            kind_of(first)
        )),
        None => parser.syntax("the file is empty: expected a JSON document"),
    }
}

impl Iterator for JsonDecoder {
    type Item = Result<Item, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = match self.mode {
            Mode::Array { .. } => self.next_in_array(),
            Mode::Ndjson { .. } => self.next_line().map_err(JsonError::Io),
        };
        match result {
            Ok(item) => item.map(Ok),
            Err(e) => Some(Err(self.error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(records_at: &str, ndjson: bool) -> JsonOptions {
        JsonOptions {
            records_at: records_at.into(),
            ndjson,
        }
    }

    fn decode(bytes: &'static [u8], options: &JsonOptions) -> Vec<Result<Item, FormatError>> {
        JsonDecoder::new("t.json", bytes, options)
            .unwrap()
            .collect()
    }

    fn decode_ok(bytes: &'static [u8], options: &JsonOptions) -> Vec<Item> {
        decode(bytes, options)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    fn get<'a>(r: &'a SourceRecord, path: &str) -> Option<&'a str> {
        r.header.find(path).map(|i| r.get(i))
    }

    const HR: &[u8] = br#"{
  "documentId": {"value": "HR-2026-04", "schemeAgencyId": "Northshire"},
  "meta": {"generated": "2026-04-30T18:00:00Z", "notes": ["a", {"b": [1, 2]}], "count": 3},
  "workers": [
    {
      "id": "E1001",
      "person": {
        "name": {"given": "Ann", "family": "O'Neil", "formattedName": "Ann \"Annie\" O\u2019Neil"},
        "nino": "QQ123456C",
        "birthDate": "1980-10-28"
      },
      "phones": [{"type": "home", "number": "0113 496 0000"}, {"type": "mobile", "number": "07700 900000"}],
      "salary": 31250.50,
      "fte": 1.0,
      "ref": 12345678901234567890123,
      "active": true,
      "leaver": null,
      "tags": ["payroll", "hr"],
      "grid": [[1, 2], [3]],
      "extra": {}
    },
    {"id": "E1002", "person": {"name": {"given": "Bo"}}, "salary": 1e3, "active": false},
    "not a record",
    {"id": "E1003", "person": {"name": {"given": "Cy"}}, "salary": 2, "active": false}
  ],
  "trailer": {"recordCount": 3}
}
"#;

    #[test]
    fn hr_json_workers_flattened_with_numbers_as_written() {
        let items = decode_ok(HR, &options("/workers", false));
        assert_eq!(items.len(), 4, "{items:?}");
        let Item::Record(a) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(
            (a.locator.file.as_str(), a.locator.line, a.locator.row),
            ("t.json", 5, 1)
        );
        assert_eq!(get(a, "id"), Some("E1001"));
        assert_eq!(get(a, "person/name/given"), Some("Ann"));
        assert_eq!(
            get(a, "person/name/formattedName"),
            Some("Ann \"Annie\" O\u{2019}Neil")
        );
        assert_eq!(get(a, "person/nino"), Some("QQ123456C"));
        assert_eq!(get(a, "phones/type"), Some("home"));
        assert_eq!(get(a, "phones/number"), Some("0113 496 0000"));
        assert_eq!(get(a, "phones[2]/number"), Some("07700 900000"));
        assert_eq!(get(a, "salary"), Some("31250.50"));
        assert_eq!(get(a, "fte"), Some("1.0"));
        assert_eq!(get(a, "ref"), Some("12345678901234567890123"));
        assert_eq!(get(a, "active"), Some("true"));
        assert_eq!(get(a, "leaver"), Some(""));
        assert_eq!(
            (get(a, "tags"), get(a, "tags[2]")),
            (Some("payroll"), Some("hr"))
        );
        assert_eq!(
            (get(a, "grid[1]"), get(a, "grid[1][2]"), get(a, "grid[2]")),
            (Some("1"), Some("2"), Some("3"))
        );
        assert_eq!(get(a, "extra"), Some(""));
        assert_eq!(
            a.header.names()[..3],
            ["id", "person/name/given", "person/name/family"]
        );

        let Item::Record(b) = &items[1] else {
            panic!("{items:?}")
        };
        assert_eq!((b.locator.line, b.locator.row), (22, 2));
        assert_eq!(
            (get(b, "salary"), get(b, "active")),
            (Some("1e3"), Some("false"))
        );
        assert_eq!(get(b, "person/nino"), None);

        let Item::Failure(f) = &items[2] else {
            panic!("{items:?}")
        };
        assert_eq!((f.locator.line, f.locator.row), (23, 3));
        assert!(
            f.reason.contains("a string, not a JSON object"),
            "{}",
            f.reason
        );

        let Item::Record(c) = &items[3] else {
            panic!("{items:?}")
        };
        assert_eq!(c.locator.row, 4);
        assert!(
            Arc::ptr_eq(&b.header, &c.header),
            "same columns share a header"
        );
    }

    #[test]
    fn top_level_array_and_pointer_through_an_array_index() {
        let items = decode_ok(
            b"\xEF\xBB\xBF[{\"a\":1},\n{\"a\":2}]\n",
            &options("", false),
        );
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[1], Item::Record(r) if r.values == ["2"] && r.locator.line == 2));

        let json: &'static [u8] =
            br#"{"data": [{"items": [{"x": 0}]}, {"skip": "me", "items": [{"x": 1}, {"x": 2}]}]}"#;
        let items = decode_ok(json, &options("/data/1/items", false));
        let values: Vec<_> = items
            .iter()
            .map(|i| match i {
                Item::Record(r) => r.values.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(values, [["1"], ["2"]]);

        assert_eq!(
            decode_ok(b"{\"a/b\": [], \"x~y\": []}", &options("/a~1b", false)).len(),
            0
        );
    }

    #[test]
    fn wrong_pointer_is_reported_when_opening() {
        let cases: [(&'static [u8], &str, &str); 5] = [
            (HR, "/staff", "has no member \"staff\""),
            (HR, "/meta", "/meta is an object, not an array"),
            (HR, "", "document root is an object"),
            (HR, "workers", "must start with `/`"),
            (b"{\"d\": [1]}", "/d/3", "no element 3"),
        ];
        for (bytes, pointer, want) in cases {
            let err = JsonDecoder::new("t.json", bytes, &options(pointer, false))
                .err()
                .unwrap_or_else(|| panic!("{pointer} should fail"));
            assert!(err.to_string().contains(want), "{pointer}: {err}");
            assert!(err.to_string().starts_with("t.json, line "), "{err}");
        }
    }

    fn file_error(bytes: &'static [u8], options: &JsonOptions) -> (usize, String, u64) {
        let results = decode(bytes, options);
        let records = results.iter().filter(|r| r.is_ok()).count();
        match results.last() {
            Some(Err(e @ FormatError::Malformed { file, line, .. })) => {
                assert_eq!(file, "t.json");
                assert!(
                    e.to_string().starts_with(&format!("t.json, line {line}: ")),
                    "{e}"
                );
                (records, e.to_string(), *line)
            }
            other => panic!("expected a malformed-file error, got {other:?}"),
        }
    }

    #[test]
    fn syntax_error_in_the_array_yields_the_records_before_then_a_file_error() {
        let json: &'static [u8] =
            b"{\"workers\": [\n{\"id\": 1},\n{\"id\": 2},\n{\"id\": 3,, \"x\": 1},\n{\"id\": 4}\n]}\n";
        let (records, message, line) = file_error(json, &options("/workers", false));
        assert_eq!((records, line), (2, 4), "{message}");
        assert!(message.contains("member name"), "{message}");

        let truncated: &'static [u8] = b"{\"workers\": [\n{\"id\": 1},\n{\"id\": 2, \"name\": \"Tr";
        let (records, message, line) = file_error(truncated, &options("/workers", false));
        assert_eq!((records, line), (1, 3), "{message}");
        assert!(message.contains("EOF"), "{message}");

        let unclosed: &'static [u8] = b"{\"workers\": [\n{\"id\": 1}\n]\n";
        let (records, message, line) = file_error(unclosed, &options("/workers", false));
        assert_eq!((records, line), (1, 4), "{message}");
        assert!(message.contains("the end of the file"), "{message}");

        let bad_utf8: &'static [u8] = b"[{\"id\": 1},\n{\"id\": \"\xFF\"}]";
        let (records, message, line) = file_error(bad_utf8, &options("", false));
        assert_eq!((records, line), (1, 2), "{message}");
        assert!(message.contains("UTF-8"), "{message}");

        let trailing: &'static [u8] = b"[{\"id\": 1}]\n]";
        let (records, message, line) = file_error(trailing, &options("", false));
        assert_eq!((records, line), (1, 2), "{message}");
        assert!(message.contains("after the end"), "{message}");

        let bad_number: &'static [u8] = b"[{\"id\": 01}]";
        let (_, message, _) = file_error(bad_number, &options("", false));
        assert!(message.contains("`01`"), "{message}");
    }

    #[test]
    fn ndjson_bad_line_is_a_row_failure_and_the_rest_go_on() {
        let ndjson: &'static [u8] = b"{\"id\": \"E1\", \"pay\": 10.10}\r\n\r\n{\"id\": \"E2\", \"pay\": }\r\n[1, 2]\n{\"id\": \"E3\"} {\"id\": \"E4\"}\n{\"id\": \"B\xFFd\"}\n{\"id\": \"E5\", \"pay\": 12}";
        let items = decode_ok(ndjson, &options("", true));
        assert_eq!(items.len(), 6, "{items:?}");
        let Item::Record(r) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!((r.locator.line, r.locator.row), (1, 1));
        assert_eq!(r.values, ["E1", "10.10"]);
        let reasons: Vec<(u64, u64, &str)> = items[1..5]
            .iter()
            .map(|i| match i {
                Item::Failure(f) => (f.locator.line, f.locator.row, f.reason.as_str()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!((reasons[0].0, reasons[0].1), (3, 2));
        assert!(reasons[0].2.contains("not valid JSON"), "{}", reasons[0].2);
        assert!(
            reasons[1].2.contains("an array, not a JSON object"),
            "{}",
            reasons[1].2
        );
        assert!(
            reasons[2].2.contains("one object per line"),
            "{}",
            reasons[2].2
        );
        assert!(reasons[3].2.contains("UTF-8"), "{}", reasons[3].2);
        assert_eq!(reasons[3].0, 6);
        let Item::Record(r) = &items[5] else {
            panic!("{items:?}")
        };
        assert_eq!((r.locator.line, r.locator.row), (7, 6));
        assert_eq!(r.values, ["E5", "12"]);
        assert!(Arc::ptr_eq(
            &r.header,
            &match &items[0] {
                Item::Record(r) => r.header.clone(),
                _ => unreachable!(),
            }
        ));

        let err = JsonDecoder::new("t.json", &b""[..], &options("/workers", true))
            .err()
            .unwrap();
        assert!(err.to_string().contains("leave records_at empty"), "{err}");
    }

    /// A top-level array of `n` records, one per line, generated without holding the document.
    struct Generated {
        next: usize,
        n: usize,
        pending: Vec<u8>,
        at: usize,
    }

    impl Read for Generated {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.pending.len() {
                self.pending.clear();
                self.at = 0;
                let i = self.next + 1;
                if self.next < self.n {
                    let sep = if self.next == 0 { "[\n" } else { ",\n" };
                    let line = format!(
                        r#"{sep}{{"id": {i}, "name": {{"given": "Person {i}"}}, "pay": {i}.00}}"#
                    );
                    self.pending.extend_from_slice(line.as_bytes());
                } else if self.next == self.n {
                    self.pending.extend_from_slice(b"\n]\n");
                } else {
                    return Ok(0);
                }
                self.next += 1;
            }
            let n = buf.len().min(self.pending.len() - self.at);
            buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn two_hundred_thousand_records_stream_with_one_shared_header() {
        let n = 200_000;
        let source = Generated {
            next: 0,
            n,
            pending: Vec::new(),
            at: 0,
        };
        let decoder = JsonDecoder::new("big.json", source, &options("", false)).unwrap();
        let mut count = 0u64;
        let mut first: Option<Arc<Header>> = None;
        for item in decoder {
            let Item::Record(r) = item.unwrap() else {
                panic!("not a record")
            };
            count += 1;
            assert_eq!((r.locator.row, r.locator.line), (count, count + 1));
            assert!(Arc::ptr_eq(
                first.get_or_insert_with(|| r.header.clone()),
                &r.header
            ));
            if count == n as u64 {
                assert_eq!(
                    r.values,
                    [n.to_string(), format!("Person {n}"), format!("{n}.00")]
                );
            }
        }
        assert_eq!(count, n as u64);
        assert_eq!(first.unwrap().names(), ["id", "name/given", "pay"]);
    }
}
