//! XML exports (HMRC RTI submissions, UBL/Peppol invoices, council system extracts): records are
//! the elements found at a path from the root, each flattened into path columns, read as a
//! stream of parser events (only the current record's subtree is in memory).
//!
//! # Flattening
//!
//! Every leaf of a record's subtree becomes a column named by its path relative to the record
//! element, segments joined with `/`; the same rule as [`super::json`]:
//!
//! - an element without child elements is a leaf: its text (possibly empty) under its path
//!   (`EmployeeDetails/NINO`); an element with both text and children has its text, trimmed,
//!   under its own path, and no column when that text is blank (indentation);
//! - attributes are leaves named `@name` under their element (`Payment/TaxCode/@BasisNonCumulative`);
//!   namespace declarations (`xmlns`, `xmlns:p`) are not data and give no column;
//! - namespace prefixes are dropped: names are local names (`cac:InvoiceLine` is `InvoiceLine`);
//! - repeated siblings of the same name get a 1-based index from the second occurrence on:
//!   `NIlettersAndValues/NIletter`, `NIlettersAndValues[2]/NIletter`, so a mapping that names a
//!   path without index gets the first;
//! - the record element's own attributes are `@name`, and its own text (when it has no children,
//!   or non-blank text beside them) is the column `.`;
//! - text is the concatenation of character data, CDATA sections, character references and the
//!   five predefined entities, with line ends normalised to `\n`; attribute values are
//!   normalised as XML says (whitespace characters become spaces).
//!
//! Columns come in document order (an element's text column where the element starts, then its
//! attributes, then its children). Records carry their own [`Header`]; consecutive records with
//! the same columns share one.
//!
//! # Security
//!
//! DTDs are never processed: a document with a `<!DOCTYPE` is rejected as a whole
//! ([`FormatError::Malformed`]), which rules out entity expansion bombs ("billion laughs") and
//! external entities (XXE). An entity other than the five predefined ones is therefore
//! undefined: the record using it is a row failure.
//!
//! # Encoding
//!
//! The mapping's encoding when given; otherwise a byte-order mark, then the XML declaration's
//! `encoding`, then UTF-8. Text is transcoded to UTF-8 before parsing.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufReader, Read};
use std::sync::Arc;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::reader::Reader;

use super::encoding::Encoding;
use super::limits::{LimitExceeded, Limits};
use super::{DecodeFailure, FormatError, Header, Item, Locator, SourceRecord};

/// How to read an XML export (from the mapping's `source:` section).
#[derive(Debug, Clone, Default)]
pub struct XmlOptions {
    /// Character encoding; `None` = from the byte-order mark or the XML declaration, else UTF-8.
    pub encoding: Option<Encoding>,
    /// Path of the record elements from the root, local names joined with `/`
    /// (`GovTalkMessage/Body/IRenvelope/FullPaymentSubmission/Employee`). Prefixes written in the
    /// path (`cac:InvoiceLine`) are ignored, as they are in the document.
    pub record_path: String,
    /// Path of an element outside the records whose flattened leaves form an
    /// [`Item::Control`] (a trailer or header element carrying counts or totals).
    pub control_path: Option<String>,
}

/// Splits a configured path into local names (leading/trailing `/` and prefixes ignored).
fn split_path(path: &str) -> Vec<String> {
    path.split('/')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.rsplit(':').next().unwrap_or(s).to_string())
        .collect()
}

/// Physical line numbers for byte offsets of the (UTF-8) text the parser reads. Newline offsets
/// are recorded as bytes pass to the parser's buffer and dropped once the parser is past them,
/// so memory stays bounded by the read buffer and the largest single event.
struct LineCounting<R> {
    inner: R,
    offset: u64,
    newlines: VecDeque<u64>,
    line: u64,
}

impl<R> LineCounting<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            newlines: VecDeque::new(),
            line: 1,
        }
    }

    /// The 1-based line of byte `pos`. Positions asked for must not decrease.
    fn line_at(&mut self, pos: u64) -> u64 {
        while let Some(&nl) = self.newlines.front() {
            if nl >= pos {
                break;
            }
            self.newlines.pop_front();
            self.line += 1;
        }
        self.line
    }
}

impl<R: Read> Read for LineCounting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' {
                self.newlines.push_back(self.offset + i as u64);
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

type Source = BufReader<LineCounting<Box<dyn Read>>>;

/// Streaming XML decoder: an iterator of [`Item`]s holding one record's subtree at a time.
pub struct XmlDecoder {
    reader: Reader<Source>,
    buf: Vec<u8>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Record,
    Control,
}

/// Everything but the parser, so that an event borrowing the parser's buffer can update it.
struct State {
    file: String,
    record_path: Vec<String>,
    control_path: Option<Vec<String>>,
    encoding: Encoding,
    /// Open elements outside any record or control element: local name and line.
    outer: Vec<(String, u64)>,
    capture: Option<Capture>,
    seen_root: bool,
    rows: u64,
    last_header: Arc<Header>,
    empty_header: Arc<Header>,
    max_depth: usize,
    max_attributes: usize,
    max_columns: usize,
    done: bool,
}

/// The record (or control element) being read.
struct Capture {
    kind: Kind,
    line: u64,
    frames: Vec<Frame>,
    /// Path of the innermost open element relative to the record element: one buffer, grown
    /// on open and cut on close, so that nesting costs memory linear in its depth (a path per
    /// element would cost the square).
    path: String,
    /// Columns in document order; `None` for a text slot that turned out to be unneeded (or
    /// not yet known: an element's text column is named when it closes).
    columns: Vec<Option<(String, String)>>,
    /// Why the record cannot be used (an undefined entity...), when it cannot.
    problem: Option<String>,
}

/// An open element inside a capture.
struct Frame {
    /// Length of the capture's path before this element's segment.
    parent_len: usize,
    /// Index of this element's text column in `columns`.
    slot: usize,
    /// How many children of each name were seen so far.
    children: std::collections::HashMap<String, usize>,
    has_children: bool,
    text: String,
}

impl Capture {
    fn new(kind: Kind, line: u64) -> Self {
        Self {
            kind,
            line,
            frames: Vec::new(),
            path: String::new(),
            columns: Vec::new(),
            problem: None,
        }
    }

    /// Opens an element: its text slot and its attributes (at most `max_attributes`: more make
    /// the record a failure). `Err` for broken attribute syntax.
    fn open(
        &mut self,
        name: &str,
        e: &BytesStart<'_>,
        max_attributes: usize,
        max_columns: usize,
    ) -> Result<(), String> {
        if self.columns.len() >= max_columns {
            return Err(LimitExceeded::new(
                "the columns of one record",
                max_columns,
                "max_columns",
            )
            .to_string());
        }
        let parent_len = self.path.len();
        match self.frames.last_mut() {
            None => {}
            Some(parent) => {
                parent.has_children = true;
                let n = match parent.children.get_mut(name) {
                    Some(n) => {
                        *n += 1;
                        *n
                    }
                    None => {
                        parent.children.insert(name.to_string(), 1);
                        1
                    }
                };
                if !self.path.is_empty() {
                    self.path.push('/');
                }
                self.path.push_str(name);
                if n > 1 {
                    let _ = write!(self.path, "[{n}]");
                }
            }
        }
        let path = &self.path;
        let slot = self.columns.len();
        self.columns.push(None);
        for (i, attr) in e.attributes().enumerate() {
            if i >= max_attributes {
                let at = if path.is_empty() { "." } else { path };
                self.problem.get_or_insert_with(|| {
                    LimitExceeded::new(
                        format!("the attributes of \"{at}\""),
                        max_attributes,
                        "max_attributes",
                    )
                    .to_string()
                });
                break;
            }
            let attr = attr.map_err(|err| format!("the XML is not well-formed: {err}"))?;
            if attr.key.as_namespace_binding().is_some() {
                continue;
            }
            let local = attr.key.local_name();
            let column = if path.is_empty() {
                format!("@{}", local.as_ref())
            } else {
                format!("{path}/@{}", local.as_ref())
            };
            let value = match attr.normalized_value(XmlVersion::Implicit1_0) {
                Ok(v) => v.into_owned(),
                Err(err) => {
                    self.problem.get_or_insert_with(|| {
                        format!("attribute \"{column}\" cannot be read: {err} (DTDs and their entities are not accepted)")
                    });
                    attr.value.into_owned()
                }
            };
            self.columns.push(Some((column, value)));
        }
        self.frames.push(Frame {
            parent_len,
            slot,
            children: std::collections::HashMap::new(),
            has_children: false,
            text: String::new(),
        });
        Ok(())
    }

    fn text(&mut self, text: &str) {
        if let Some(frame) = self.frames.last_mut() {
            frame.text.push_str(text);
        }
    }

    fn reference(&mut self, r: &BytesRef<'_>) {
        let resolved = match r.resolve_char_ref() {
            Ok(Some(ch)) => Some(ch.to_string()),
            Ok(None) => quick_xml::escape::resolve_predefined_entity(r).map(str::to_string),
            Err(_) => None,
        };
        match resolved {
            Some(s) => self.text(&s),
            None => {
                let at = if self.path.is_empty() {
                    ".".to_string()
                } else {
                    self.path.clone()
                };
                let name: &str = r;
                self.problem.get_or_insert_with(|| {
                    format!(
                        "the text of \"{at}\" uses &{name}; which is not a defined entity or character \
                         reference (only &lt; &gt; &amp; &apos; &quot; and &#...; are accepted: DTDs are not)"
                    )
                });
            }
        }
    }

    /// Closes the innermost element; `true` when that was the record element itself.
    fn close(&mut self) -> bool {
        if let Some(frame) = self.frames.pop() {
            let text = if frame.has_children {
                let t = frame
                    .text
                    .trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
                (!t.is_empty()).then(|| t.to_string())
            } else {
                Some(frame.text)
            };
            match text {
                Some(text) => {
                    let name = if self.path.is_empty() {
                        ".".to_string()
                    } else {
                        self.path.clone()
                    };
                    self.columns[frame.slot] = Some((name, text));
                }
                None => self.columns[frame.slot] = None,
            }
            self.path.truncate(frame.parent_len);
        }
        self.frames.is_empty()
    }
}

/// The encoding a document declares: byte-order mark, UTF-16 without one, then the XML
/// declaration; UTF-8 when none says otherwise.
fn sniff_encoding(head: &[u8]) -> Result<Encoding, String> {
    let label = |l: &str| Encoding::for_label(l).expect("known label");
    if head.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Ok(Encoding::UTF_8);
    }
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0x3C, 0x00, 0x3F, 0x00]) {
        return Ok(label("utf-16le"));
    }
    if head.starts_with(&[0xFE, 0xFF]) || head.starts_with(&[0x00, 0x3C, 0x00, 0x3F]) {
        return Ok(label("utf-16be"));
    }
    if !head.starts_with(b"<?xml") {
        return Ok(Encoding::UTF_8);
    }
    let end = head
        .windows(2)
        .position(|w| w == b"?>")
        .unwrap_or(head.len());
    let decl = String::from_utf8_lossy(&head[..end]);
    let Some(at) = decl.find("encoding") else {
        return Ok(Encoding::UTF_8);
    };
    let rest = decl[at + "encoding".len()..].trim_start();
    let Some(rest) = rest.strip_prefix('=') else {
        return Ok(Encoding::UTF_8);
    };
    let rest = rest.trim_start();
    let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return Ok(Encoding::UTF_8);
    };
    let name: String = rest[1..].chars().take_while(|c| *c != quote).collect();
    match Encoding::for_label(&name) {
        // Bytes that read as ASCII cannot be UTF-16 (that was checked above): a wrong label.
        Some(e) if e == label("utf-16le") || e == label("utf-16be") => Ok(Encoding::UTF_8),
        Some(e) => Ok(e),
        None => Err(format!(
            "the XML declaration names the encoding \"{name}\", which is not known; state the \
             file's encoding in the mapping (`encoding: windows-1252`...)"
        )),
    }
}

impl XmlDecoder {
    /// Starts decoding `bytes` (the raw file) named `file`. Reads only the first kilobyte (to
    /// find the encoding); configuration mistakes (an empty `record_path`, an unknown declared
    /// encoding) fail here.
    pub fn new(
        file: impl Into<String>,
        bytes: impl Read + 'static,
        options: &XmlOptions,
    ) -> Result<Self, FormatError> {
        Self::new_limited(file, bytes, options, &Limits::default())
    }

    /// [`XmlDecoder::new`] within a feed's limits (`max_depth`, `max_attributes`).
    pub fn new_limited(
        file: impl Into<String>,
        bytes: impl Read + 'static,
        options: &XmlOptions,
        limits: &Limits,
    ) -> Result<Self, FormatError> {
        let file = file.into();
        let mut bytes = bytes;
        let record_path = split_path(&options.record_path);
        if record_path.is_empty() {
            return Err(FormatError::Malformed {
                file,
                line: 0,
                message: "record_path is empty: name the record elements' path from the root, \
                          such as `Export/Records/Record`"
                    .to_string(),
            });
        }
        let control_path = options
            .control_path
            .as_deref()
            .map(split_path)
            .filter(|p| !p.is_empty());
        let mut head = Vec::with_capacity(1024);
        if let Err(source) = (&mut bytes).take(1024).read_to_end(&mut head) {
            return Err(FormatError::Io { file, source });
        }
        let encoding = match options.encoding {
            Some(e) => e,
            None => match sniff_encoding(&head) {
                Ok(e) => e,
                Err(message) => {
                    return Err(FormatError::Malformed {
                        file,
                        line: 1,
                        message,
                    });
                }
            },
        };
        let raw: Box<dyn Read> = Box::new(std::io::Cursor::new(head).chain(bytes));
        let text: Box<dyn Read> = Box::new(encoding.decode(raw));
        let mut reader =
            Reader::from_reader(BufReader::with_capacity(64 * 1024, LineCounting::new(text)));
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        let empty_header = Arc::new(Header::new(Vec::new()));
        Ok(Self {
            reader,
            buf: Vec::with_capacity(4 * 1024),
            state: State {
                file,
                record_path,
                control_path,
                encoding,
                outer: Vec::new(),
                capture: None,
                seen_root: false,
                rows: 0,
                last_header: empty_header.clone(),
                empty_header,
                max_depth: limits.max_depth,
                max_attributes: limits.max_attributes,
                max_columns: limits.max_columns,
                done: false,
            },
        })
    }

    /// An empty header: XML records carry their own (path columns differ between records).
    pub fn header(&self) -> Arc<Header> {
        self.state.empty_header.clone()
    }

    fn line_at(&mut self, pos: u64) -> u64 {
        self.reader.get_mut().get_mut().line_at(pos)
    }
}

impl State {
    fn malformed(&mut self, line: u64, message: String) -> Option<Result<Item, FormatError>> {
        self.done = true;
        Some(Err(FormatError::Malformed {
            file: self.file.clone(),
            line,
            message,
        }))
    }

    fn xml_error(&mut self, e: quick_xml::Error, line: u64) -> FormatError {
        self.done = true;
        match e {
            quick_xml::Error::Io(source) => FormatError::Io {
                file: self.file.clone(),
                source: Arc::try_unwrap(source).unwrap_or_else(|shared| {
                    std::io::Error::new(shared.kind(), shared.to_string())
                }),
            },
            other => FormatError::Malformed {
                file: self.file.clone(),
                line,
                message: format!("the XML is not well-formed: {other}"),
            },
        }
    }

    fn on_event(&mut self, event: Event<'_>, line: u64) -> Option<Result<Item, FormatError>> {
        match event {
            Event::DocType(_) => self.malformed(
                line,
                "the document has a DTD (<!DOCTYPE ...>), and DTDs are not accepted: they can \
                 declare entities that expand without bound or read other files. Ask for the \
                 export without a DOCTYPE"
                    .to_string(),
            ),
            Event::Start(e) => self.start(&e, line, false),
            Event::Empty(e) => self.start(&e, line, true),
            Event::End(_) => self.end(),
            Event::Text(t) => {
                if let Some(c) = &mut self.capture {
                    c.text(&t.xml10_content());
                }
                None
            }
            Event::CData(t) => {
                if let Some(c) = &mut self.capture {
                    c.text(&t.xml10_content());
                }
                None
            }
            Event::GeneralRef(r) => {
                if let Some(c) = &mut self.capture {
                    c.reference(&r);
                }
                None
            }
            Event::Eof => self.eof(line),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => None,
        }
    }

    fn matches(path: &[String], outer: &[(String, u64)], name: &str) -> bool {
        path.len() == outer.len() + 1
            && path.last().is_some_and(|last| last == name)
            && path.iter().zip(outer).all(|(p, (o, _))| p == o)
    }

    fn start(
        &mut self,
        e: &BytesStart<'_>,
        line: u64,
        empty: bool,
    ) -> Option<Result<Item, FormatError>> {
        let local = e.local_name();
        let name: &str = local.as_ref();
        let depth = self.outer.len() + self.capture.as_ref().map_or(0, |c| c.frames.len()) + 1;
        if depth > self.max_depth {
            self.done = true;
            return Some(Err(FormatError::Limit {
                file: self.file.clone(),
                exceeded: LimitExceeded::new(
                    format!(
                        "line {line}: elements nested deeper than {} levels",
                        self.max_depth
                    ),
                    self.max_depth,
                    "max_depth",
                ),
            }));
        }
        let (max_attributes, max_columns) = (self.max_attributes, self.max_columns);
        if let Some(c) = &mut self.capture {
            if let Err(message) = c.open(name, e, max_attributes, max_columns) {
                return self.malformed(line, message);
            }
            return if empty { self.end() } else { None };
        }
        if !self.seen_root {
            self.seen_root = true;
            let expected = &self.record_path[0];
            let control_root = self.control_path.as_ref().map(|p| &p[0]);
            if name != expected && control_root.is_none_or(|c| c != name) {
                let message = format!(
                    "the root element is <{name}>, but record_path `{}` starts at <{expected}>; \
                     check the mapping's record_path",
                    self.record_path.join("/")
                );
                return self.malformed(line, message);
            }
        }
        let kind = if Self::matches(&self.record_path, &self.outer, name) {
            Some(Kind::Record)
        } else if self
            .control_path
            .as_ref()
            .is_some_and(|p| Self::matches(p, &self.outer, name))
        {
            Some(Kind::Control)
        } else {
            None
        };
        match kind {
            Some(kind) => {
                let mut capture = Capture::new(kind, line);
                if let Err(message) = capture.open(name, e, max_attributes, max_columns) {
                    return self.malformed(line, message);
                }
                self.capture = Some(capture);
                if empty { self.end() } else { None }
            }
            None => {
                if !empty {
                    self.outer.push((name.to_string(), line));
                }
                None
            }
        }
    }

    fn end(&mut self) -> Option<Result<Item, FormatError>> {
        match &mut self.capture {
            Some(c) => {
                if c.close() {
                    let c = self.capture.take().expect("capture is open");
                    return Some(Ok(self.finish(c)));
                }
                None
            }
            None => {
                self.outer.pop();
                None
            }
        }
    }

    fn eof(&mut self, line: u64) -> Option<Result<Item, FormatError>> {
        if let Some(c) = &self.capture {
            let path = match c.kind {
                Kind::Record => &self.record_path,
                Kind::Control => self.control_path.as_ref().unwrap_or(&self.record_path),
            };
            let message = format!(
                "the file ends inside the <{}> element that starts at line {}: the file is \
                 truncated or a closing tag is missing",
                path.last().map(String::as_str).unwrap_or(""),
                c.line
            );
            return self.malformed(line, message);
        }
        if let Some((name, at)) = self.outer.last() {
            let message = format!(
                "the file ends before <{name}> (opened at line {at}) is closed: the file is \
                 truncated or a closing tag is missing"
            );
            return self.malformed(line, message);
        }
        if !self.seen_root {
            return self.malformed(
                line,
                "the file has no root element (is it empty?)".to_string(),
            );
        }
        self.done = true;
        None
    }

    /// Turns a finished capture into a record, control or failure item.
    fn finish(&mut self, c: Capture) -> Item {
        let same = c
            .columns
            .iter()
            .flatten()
            .map(|(name, _)| name)
            .eq(self.last_header.names().iter());
        if !same {
            let names = c.columns.iter().flatten().map(|(n, _)| n.clone()).collect();
            self.last_header = Arc::new(Header::new(names));
        }
        let values: Vec<String> = c.columns.into_iter().flatten().map(|(_, v)| v).collect();
        let row = match c.kind {
            Kind::Record => {
                self.rows += 1;
                self.rows
            }
            Kind::Control => 0,
        };
        let record = SourceRecord {
            locator: Locator {
                file: self.file.clone(),
                line: c.line,
                row,
            },
            header: self.last_header.clone(),
            values,
        };
        let mut problem = c.problem;
        if problem.is_none()
            && self.encoding.can_be_invalid()
            && let Some(i) = record.values.iter().position(|v| v.contains('\u{FFFD}'))
        {
            problem = Some(format!(
                "\"{}\" has bytes that are not valid {}; check the file's encoding",
                record.header.names()[i],
                self.encoding.name()
            ));
        }
        match (problem, c.kind) {
            (Some(reason), _) => Item::Failure(DecodeFailure {
                locator: record.locator.clone(),
                reason,
                record: Some(record),
            }),
            (None, Kind::Record) => Item::Record(record),
            (None, Kind::Control) => Item::Control(record),
        }
    }
}

impl Iterator for XmlDecoder {
    type Item = Result<Item, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.state.done {
            let pos = self.reader.buffer_position();
            let line = self.line_at(pos);
            self.buf.clear();
            let out = match self.reader.read_event_into(&mut self.buf) {
                Ok(event) => self.state.on_event(event, line),
                Err(e) => {
                    let at = self.reader.error_position().max(pos);
                    let line = self.reader.get_mut().get_mut().line_at(at);
                    Some(Err(self.state.xml_error(e, line)))
                }
            };
            if out.is_some() {
                return out;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(record_path: &str, control_path: Option<&str>) -> XmlOptions {
        XmlOptions {
            encoding: None,
            record_path: record_path.into(),
            control_path: control_path.map(str::to_string),
        }
    }

    fn decode(bytes: &'static [u8], options: &XmlOptions) -> Vec<Result<Item, FormatError>> {
        XmlDecoder::new("t.xml", bytes, options).unwrap().collect()
    }

    fn decode_ok(bytes: &'static [u8], options: &XmlOptions) -> Vec<Item> {
        decode(bytes, options)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    #[test]
    fn flattening_rules_text_attributes_entities_and_cdata() {
        let xml: &'static [u8] = b"<?xml version=\"1.0\"?>\n\
<x:Export xmlns:x=\"urn:x\" xmlns=\"urn:d\">\n\
  <x:Rec x:id=\"7\" kind=\"a &amp; b\">\n\
    <Name>Ann &amp; Bob &#163;5</Name>\n\
    <Note>mixed <b>bold</b> text</Note>\n\
    <Code><![CDATA[<A&B>]]></Code>\n\
    <Empty/>\n\
    <Flag on=\"yes\"/>\n\
    <Phone><N>1</N></Phone><Phone><N>2</N></Phone><Phone><N>3</N></Phone>\n\
  </x:Rec>\n\
  <Rec id=\"8\"><Name>Cy</Name></Rec>\n\
  <Rec id=\"9\"><Name>Di</Name></Rec>\n\
  <Rec>just text</Rec>\n\
</x:Export>\n";
        let items = decode_ok(xml, &options("Export/Rec", None));
        let Item::Record(r) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(
            r.header.names(),
            [
                "@id",
                "@kind",
                "Name",
                "Note",
                "Note/b",
                "Code",
                "Empty",
                "Flag",
                "Flag/@on",
                "Phone/N",
                "Phone[2]/N",
                "Phone[3]/N"
            ]
        );
        assert_eq!(
            r.values,
            [
                "7",
                "a & b",
                "Ann & Bob £5",
                "mixed  text",
                "bold",
                "<A&B>",
                "",
                "",
                "yes",
                "1",
                "2",
                "3"
            ]
        );
        assert_eq!(r.locator.line, 3);
        let (Item::Record(b), Item::Record(c)) = (&items[1], &items[2]) else {
            panic!("{items:?}")
        };
        assert_eq!((b.locator.line, b.locator.row, c.locator.row), (11, 2, 3));
        assert!(
            Arc::ptr_eq(&b.header, &c.header),
            "same columns share a header"
        );
        let Item::Record(d) = &items[3] else {
            panic!("{items:?}")
        };
        assert_eq!(
            (d.header.names(), d.values.as_slice()),
            (&[".".to_string()][..], &["just text".to_string()][..])
        );
    }

    #[test]
    fn encoding_from_the_declaration_and_bad_bytes_fail_the_record_only() {
        let cp1252: &'static [u8] =
            b"<?xml version=\"1.0\" encoding=\"windows-1252\"?><R><P><Amt>\xA312</Amt></P></R>";
        let items = decode_ok(cp1252, &options("R/P", None));
        let Item::Record(r) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(r.values, ["\u{a3}12"]);

        let utf16: Vec<u8> = "\u{feff}<R><P>£1</P></R>"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let items = decode_ok(utf16.leak(), &options("R/P", None));
        assert!(
            matches!(&items[0], Item::Record(r) if r.values == ["£1"]),
            "{items:?}"
        );

        let bad: &'static [u8] = b"<R>\n<P><N>A\xFFb</N></P>\n<P><N>ok</N></P>\n</R>";
        let items = decode_ok(bad, &options("R/P", None));
        let Item::Failure(f) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!((f.locator.line, f.locator.row), (2, 1));
        assert!(
            f.reason.contains("\"N\"") && f.reason.contains("UTF-8"),
            "{}",
            f.reason
        );
        assert!(matches!(&items[1], Item::Record(r) if r.values == ["ok"] && r.locator.row == 2));

        let err = XmlDecoder::new(
            "t.xml",
            &b"<?xml version='1.0' encoding='klingon'?><R/>"[..],
            &options("R/P", None),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("klingon"), "{err}");
    }

    #[test]
    fn undefined_entity_is_a_row_failure() {
        let xml: &'static [u8] = b"<R>\n<P><N>caf&eacute;</N></P>\n<P><N>ok</N></P>\n</R>\n";
        let items = decode_ok(xml, &options("R/P", None));
        let Item::Failure(f) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(f.locator.line, 2);
        assert!(
            f.reason.contains("&eacute;") && f.reason.contains("\"N\""),
            "{}",
            f.reason
        );
        assert!(matches!(&items[1], Item::Record(r) if r.values == ["ok"]));
    }

    fn file_error(bytes: &'static [u8], options: &XmlOptions) -> (usize, String, u64) {
        let results = decode(bytes, options);
        let records = results.iter().filter(|r| r.is_ok()).count();
        let last = results.last().expect("at least the error");
        match last {
            Err(e @ FormatError::Malformed { file, line, .. }) => {
                assert_eq!(file, "t.xml");
                assert!(
                    e.to_string().starts_with(&format!("t.xml, line {line}: ")),
                    "{e}"
                );
                (records, e.to_string(), *line)
            }
            other => panic!("expected a malformed-file error, got {other:?}"),
        }
    }

    #[test]
    fn billion_laughs_is_rejected_without_expanding() {
        let xml: &'static [u8] = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz><P><N>&lol9;</N></P></lolz>
"#;
        let (records, message, line) = file_error(xml, &options("lolz/P", None));
        assert_eq!((records, line), (0, 2));
        assert!(message.contains("DTDs are not accepted"), "{message}");
    }

    #[test]
    fn external_entity_is_rejected_without_reading_the_file() {
        let xml: &'static [u8] = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE R [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<R><P><N>&xxe;</N></P></R>
"#;
        let (records, message, line) = file_error(xml, &options("R/P", None));
        assert_eq!((records, line), (0, 2));
        assert!(message.contains("DTD"), "{message}");
        assert!(!message.contains("root:"), "{message}");
    }

    #[test]
    fn mismatched_tag_yields_the_records_before_then_a_file_error() {
        let xml: &'static [u8] =
            b"<R>\n<P><N>1</N></P>\n<P><N>2</N></P>\n<P><N>3</X></P>\n<P><N>4</N></P>\n</R>\n";
        let (records, message, line) = file_error(xml, &options("R/P", None));
        assert_eq!((records, line), (2, 4), "{message}");
        assert!(message.contains("not well-formed"), "{message}");
    }

    #[test]
    fn truncated_file_yields_the_records_before_then_a_file_error() {
        let xml: &'static [u8] = b"<R>\r\n<P><N>1</N></P>\r\n<P><N>2</N></P>\r\n<P>\r\n<N>3";
        let (records, message, line) = file_error(xml, &options("R/P", None));
        assert_eq!((records, line), (2, 5), "{message}");
        assert!(
            message.contains("starts at line 4") && message.contains("truncated"),
            "{message}"
        );

        let (records, message, line) = file_error(b"<R>\n<P><N>1</N></P>\n", &options("R/P", None));
        assert_eq!((records, line), (1, 3), "{message}");
        assert!(message.contains("<R> (opened at line 1)"), "{message}");

        let (records, message, _) =
            file_error(b"<R>\n<P><N>1</N></P>\n<P><N", &options("R/P", None));
        assert_eq!(records, 1, "{message}");

        let (_, message, _) = file_error(b"", &options("R/P", None));
        assert!(message.contains("no root element"), "{message}");
    }

    #[test]
    fn wrong_root_or_empty_path_is_reported() {
        let (_, message, line) =
            file_error(b"<?xml version='1.0'?>\n<Other/>", &options("R/P", None));
        assert_eq!(line, 2);
        assert!(
            message.contains("<Other>") && message.contains("`R/P`"),
            "{message}"
        );
        let err = XmlDecoder::new("t.xml", &b"<R/>"[..], &options(" / ", None))
            .err()
            .unwrap();
        assert!(err.to_string().contains("record_path is empty"), "{err}");
    }

    /// Generates `<Export>` with `n` records, one line each, without holding the document.
    struct Generated {
        next: usize,
        n: usize,
        pending: Vec<u8>,
        at: usize,
    }

    impl Read for Generated {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.pending.len() {
                self.pending.clear();
                self.at = 0;
                if self.next == 0 {
                    self.pending
                        .extend_from_slice(b"<?xml version=\"1.0\"?>\n<Export>\n");
                }
                if self.next < self.n {
                    let i = self.next + 1;
                    let line = format!(
                        "<Rec id=\"{i}\"><Name>Person {i}</Name><Pay cur=\"GBP\">{i}.00</Pay></Rec>\n"
                    );
                    self.pending.extend_from_slice(line.as_bytes());
                } else if self.next == self.n {
                    self.pending.extend_from_slice(b"</Export>\n");
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
        let decoder = XmlDecoder::new("big.xml", source, &options("Export/Rec", None)).unwrap();
        let mut count = 0;
        let mut first_header: Option<Arc<Header>> = None;
        for item in decoder {
            let Item::Record(r) = item.unwrap() else {
                panic!("not a record")
            };
            count += 1;
            assert_eq!((r.locator.row, r.locator.line), (count, count + 2));
            let header = first_header.get_or_insert_with(|| r.header.clone());
            assert!(Arc::ptr_eq(header, &r.header));
            if count == n as u64 {
                assert_eq!(
                    r.values,
                    [
                        n.to_string(),
                        format!("Person {n}"),
                        format!("{n}.00"),
                        "GBP".into()
                    ]
                );
            }
        }
        assert_eq!(count, n as u64);
        assert_eq!(
            first_header.unwrap().names(),
            ["@id", "Name", "Pay", "Pay/@cur"]
        );
    }

    #[test]
    fn depth_is_limited_and_costs_linear_memory_when_allowed() {
        let deep = |n: usize| {
            format!(
                "<Export><Employee>{}x{}</Employee></Export>",
                "<a>".repeat(n),
                "</a>".repeat(n)
            )
            .into_bytes()
        };
        let options = XmlOptions {
            record_path: "Export/Employee".into(),
            ..XmlOptions::default()
        };
        let mut d = XmlDecoder::new("t.xml", std::io::Cursor::new(deep(1000)), &options).unwrap();
        let err = d.next().unwrap().unwrap_err().to_string();
        assert!(err.contains("limits.max_depth"), "{err}");
        // Raised, 30,000 levels read in one pass: one path of 60 KB, not 30,000 of them.
        let limits = Limits {
            max_depth: 50_000,
            max_columns: 100_000,
            ..Limits::default()
        };
        let started = std::time::Instant::now();
        let items: Vec<_> = XmlDecoder::new_limited(
            "t.xml",
            std::io::Cursor::new(deep(30_000)),
            &options,
            &limits,
        )
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
        let Item::Record(r) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(r.values, ["x"]);
        assert_eq!(r.header.names()[0].len(), 30_000 * 2 - 1);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
