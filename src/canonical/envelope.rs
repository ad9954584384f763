//! The message envelope: deterministic ids, routing keys and CloudEvents 1.0 attributes in
//! the AMQP binary binding (`cloudEvents:` headers), as the design brief lays down.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Entity;
use crate::formats::Locator;

/// A message ready for the outbox: everything the publisher needs and nothing it must compute.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    /// CloudEvents id = AMQP message_id: UUIDv5 over council, entity, key and content hash.
    pub message_id: String,
    /// `<domain>.<entity>.<action>.<council>`.
    pub routing_key: String,
    /// AMQP headers: `cloudEvents:*` attributes and provenance. Never personal data.
    pub headers: Map<String, Value>,
    /// The canonical record as JSON.
    pub body: Vec<u8>,
    /// Batch id, sent as the AMQP correlation_id.
    pub correlation_id: String,
    /// Seconds since the epoch, the AMQP timestamp.
    pub timestamp: i64,
}

/// Where a record came from, for the provenance headers.
#[derive(Debug, Clone)]
pub struct Provenance<'a> {
    /// Council id (`northshire`).
    pub council: &'a str,
    /// Feed id (`payroll`).
    pub feed: &'a str,
    /// Batch id.
    pub batch_id: &'a str,
    /// sha256 of the source file.
    pub file_sha256: &'a str,
    /// Where in the file.
    pub locator: &'a Locator,
    /// Mapping id.
    pub mapping_id: &'a str,
    /// Mapping version.
    pub mapping_version: u32,
}

fn namespace() -> Uuid {
    static NAMESPACE: std::sync::LazyLock<Uuid> = std::sync::LazyLock::new(|| {
        Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            b"https://council-bridge.org.uk/ns/message-id",
        )
    });
    *NAMESPACE
}

/// The JSON text of a value with object keys sorted at every level, so the content hash does
/// not change when a mapping lists its fields in another order.
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::with_capacity(1024);
    write_canonical(&mut out, value);
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Writes the canonical JSON of `value` (compact, object keys sorted by their bytes) to `out`,
/// without building a sorted copy of the value: the same text as serialising a copy whose
/// objects were rebuilt in key order.
fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_to(out, k);
                out.push(b':');
                write_canonical(out, v);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, v);
            }
            out.push(b']');
        }
        other => json_to(out, other),
    }
}

/// A key or a scalar as serde_json writes it, so that escapes and number forms are its own.
fn json_to<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(out, value).expect("a JSON key or scalar always serialises");
}

/// sha256 of the canonical JSON of a record, hex.
pub fn content_hash(body: &Value) -> String {
    let mut text = Vec::with_capacity(1024);
    write_canonical(&mut text, body);
    hex::encode(Sha256::digest(&text))
}

/// The JSON of a record as it is stored and sent (`serde_json::to_vec`: compact, members in the
/// mapping's order) and its [`content_hash`], from one serialisation: each top-level member's
/// text is written once, into the body, and fed to the hash from there in key order. Only a
/// member whose value holds an object with keys out of order has its canonical text written
/// again, apart (a small nested object, such as a period or bank details).
fn body_and_hash(body: &Value) -> (Vec<u8>, String) {
    let Value::Object(members) = body else {
        return (
            serde_json::to_vec(body).expect("a JSON value always serialises"),
            content_hash(body),
        );
    };
    let mut out = Vec::with_capacity(1024);
    // Each member: its key, its value, where `"key":value` is in `out`.
    let mut spans: Vec<(&str, &Value, usize, usize)> = Vec::with_capacity(members.len());
    out.push(b'{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let start = out.len();
        json_to(&mut out, k);
        out.push(b':');
        json_to(&mut out, v);
        spans.push((k, v, start, out.len()));
    }
    out.push(b'}');
    let mut hasher = Sha256::new();
    hasher.update(b"{");
    let mut apart = Vec::new();
    KEY_ORDER.with_borrow_mut(|order| {
        for (i, &at) in order.of(members).iter().enumerate() {
            let (k, v, start, end) = spans[at];
            if i > 0 {
                hasher.update(b",");
            }
            if in_canonical_order(v) {
                hasher.update(&out[start..end]);
            } else {
                apart.clear();
                json_to(&mut apart, k);
                apart.push(b':');
                write_canonical(&mut apart, v);
                hasher.update(&apart);
            }
        }
    });
    hasher.update(b"}");
    (out, lower_hex(&hasher.finalize()))
}

/// Bytes as lower-case hex (what `hex::encode` writes), without going through `char`s.
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

thread_local! {
    /// The key order of the last record body on this thread: the records of a mapping have
    /// the same members in the same order, so they are sorted once.
    static KEY_ORDER: std::cell::RefCell<KeyOrder> = const {
        std::cell::RefCell::new(KeyOrder { keys: Vec::new(), order: Vec::new() })
    };
}

/// Member names in their order in a body, and the places of those members sorted by name.
struct KeyOrder {
    keys: Vec<String>,
    order: Vec<usize>,
}

impl KeyOrder {
    /// The places of `members` in key order (as [`write_canonical`] sorts them).
    fn of(&mut self, members: &Map<String, Value>) -> &[usize] {
        let same = self.keys.len() == members.len()
            && self.keys.iter().zip(members.keys()).all(|(a, b)| a == b);
        if !same {
            self.keys = members.keys().cloned().collect();
            self.order = (0..self.keys.len()).collect();
            let keys = &self.keys;
            self.order.sort_unstable_by(|&a, &b| keys[a].cmp(&keys[b]));
        }
        &self.order
    }
}

/// Whether `value`'s JSON is already its canonical JSON: every object in it has its keys in
/// the order [`write_canonical`] sorts them to.
fn in_canonical_order(value: &Value) -> bool {
    match value {
        Value::Object(m) => {
            let mut previous: Option<&String> = None;
            m.iter().all(|(k, v)| {
                let ordered = previous.is_none_or(|p| p < k);
                previous = Some(k);
                ordered && in_canonical_order(v)
            })
        }
        Value::Array(a) => a.iter().all(in_canonical_order),
        _ => true,
    }
}

/// The message id of a record: the same council, entity, key and content always give the same
/// id, so reruns and replays are safe for consumers that de-duplicate on it.
pub fn message_id(council: &str, entity: &str, key: &str, content_hash: &str) -> String {
    let mut name = String::with_capacity(council.len() + entity.len() + key.len() + 67);
    for (i, part) in [council, entity, key, content_hash].into_iter().enumerate() {
        if i > 0 {
            name.push('\n');
        }
        name.push_str(part);
    }
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Uuid::new_v5(&namespace(), name.as_bytes())
        .hyphenated()
        .encode_lower(&mut text)
        .to_string()
}

/// The message id of a delta-mode message: a change of one record from one state of its feed
/// (`base`: the batch that last advanced the state). Reading the same snapshot against the same
/// state gives the same id (a rerun is safe); a record deleted and later created again, or
/// changed back to an earlier content, gets a new id (a content-only id would be taken for a
/// message the platform already has).
pub fn delta_message_id(
    council: &str,
    entity: &str,
    key: &str,
    action: &str,
    previous_hash: Option<&str>,
    content_hash: &str,
    base: Option<&str>,
) -> String {
    let name = format!(
        "delta\n{council}\n{entity}\n{key}\n{action}\n{}\n{content_hash}\n{}",
        previous_hash.unwrap_or("-"),
        base.unwrap_or("-")
    );
    Uuid::new_v5(&namespace(), name.as_bytes()).to_string()
}

impl OutboundMessage {
    /// The same message under another id (AMQP message_id and `cloudEvents:id`).
    pub fn with_id(mut self, id: String) -> Self {
        self.headers.insert("cloudEvents:id".into(), json!(id));
        self.message_id = id;
        self
    }

    /// The same message with one more header.
    pub fn with_header(mut self, name: &str, value: Value) -> Self {
        self.headers.insert(name.to_string(), value);
        self
    }
}

/// Media type of a CloudEvents JSON batch (batched mode): a JSON array of structured-mode
/// events (CloudEvents JSON Event Format 1.0, section 4).
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// Whether a message carries one record (a manifest or an alert does not): only records go
/// into batch messages.
pub fn is_record(m: &OutboundMessage) -> bool {
    m.headers.contains_key("x-content-sha256")
}

/// The message id of a batch message: UUIDv5 over its records' ids in order, so the same
/// records sent again (after a lost connection) carry the same id.
pub fn batch_message_id<'a>(record_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut name = String::from("batch");
    for id in record_ids {
        name.push('\n');
        name.push_str(id);
    }
    Uuid::new_v5(&namespace(), name.as_bytes()).to_string()
}

/// The body of a batch message: one structured-mode CloudEvent per record, in order. Each
/// event has the record's `cloudEvents:*` headers as its attributes (`id`, `source`, `type`,
/// `subject`, `time`, `dataschema`, `datacontenttype`), its provenance headers as extension
/// attributes (`x-source-row` becomes `sourcerow`: CloudEvents names are lower-case letters
/// and digits), and its body as `data`.
pub fn batch_body(records: &[&OutboundMessage]) -> Vec<u8> {
    let size: usize = records.iter().map(|m| m.body.len() + 700).sum();
    let mut out = Vec::with_capacity(size + 2);
    out.push(b'[');
    for (i, m) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        for (k, v) in &m.headers {
            let name = attribute_name(k);
            if name.is_empty() || name == "data" || name == "data_base64" {
                continue;
            }
            // Writing JSON strings and values into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &name);
            out.push(b':');
            let _ = serde_json::to_writer(&mut out, v);
            out.push(b',');
        }
        out.extend_from_slice(b"\"data\":");
        if m.body.is_empty() {
            out.extend_from_slice(b"null");
        } else {
            // The body is the record's JSON as the envelope serialised it.
            out.extend_from_slice(&m.body);
        }
        out.push(b'}');
    }
    out.push(b']');
    out
}

/// The CloudEvents attribute a header becomes in a batch: `cloudEvents:` attributes by their
/// name, other headers as extension attributes (lower-case letters and digits, `x-` dropped).
fn attribute_name(header: &str) -> String {
    match header.strip_prefix("cloudEvents:") {
        Some(attribute) => attribute.to_string(),
        None => header
            .strip_prefix("x-")
            .unwrap_or(header)
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect(),
    }
}

/// The headers records carry, by the attribute each becomes in a batch (to read a batch back).
const RECORD_HEADER_NAMES: [&str; 17] = [
    "cloudEvents:specversion",
    "cloudEvents:id",
    "cloudEvents:source",
    "cloudEvents:type",
    "cloudEvents:subject",
    "cloudEvents:time",
    "cloudEvents:dataschema",
    "cloudEvents:datacontenttype",
    "x-source-file",
    "x-source-sha256",
    "x-source-line",
    "x-source-row",
    "x-mapping-id",
    "x-mapping-version",
    "x-content-sha256",
    "x-previous-content-sha256",
    "x-derived-from",
];

/// One record of a batch message, read back from its body.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchedRecord {
    /// The record's own message id (its event's `id`).
    pub message_id: String,
    /// Its headers, as the record had them (attributes named back to header names).
    pub headers: Map<String, Value>,
    /// Its body (the event's `data`).
    pub body: Vec<u8>,
}

/// The records of a batch message body ([`batch_body`]), each with its own id, headers and
/// body; `None` when the body is not a batch of events that each have an `id` (it is then kept
/// whole, as a single message would be).
pub fn unbatch(body: &[u8]) -> Option<Vec<BatchedRecord>> {
    let events: Vec<Map<String, Value>> = serde_json::from_slice(body).ok()?;
    if events.is_empty() {
        return None;
    }
    events
        .into_iter()
        .map(|mut event| {
            let message_id = event.get("id")?.as_str()?.to_string();
            let data = event.remove("data").unwrap_or(Value::Null);
            let headers = event
                .into_iter()
                .map(|(attribute, v)| {
                    let name = RECORD_HEADER_NAMES
                        .iter()
                        .find(|h| attribute_name(h) == attribute)
                        .map_or_else(
                            || {
                                if matches!(
                                    attribute.as_str(),
                                    "specversion"
                                        | "id"
                                        | "source"
                                        | "type"
                                        | "subject"
                                        | "time"
                                        | "dataschema"
                                        | "datacontenttype"
                                ) {
                                    format!("cloudEvents:{attribute}")
                                } else {
                                    format!("x-{attribute}")
                                }
                            },
                            |h| (*h).to_string(),
                        );
                    (name, v)
                })
                .collect();
            let body = if data.is_null() {
                Vec::new()
            } else {
                serde_json::to_vec(&data).ok()?
            };
            Some(BatchedRecord {
                message_id,
                headers,
                body,
            })
        })
        .collect()
}

/// Builds the message for one validated record.
pub fn record_message(
    entity: &Entity,
    action: &str,
    key: &str,
    body: &Value,
    provenance: &Provenance<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> OutboundMessage {
    let (body, mut hash) = body_and_hash(body);
    let id = message_id(provenance.council, &entity.name, key, &hash);
    let (mut headers, routing_key) = RECORD_HEADERS.with_borrow_mut(|template| {
        let fresh = template
            .as_ref()
            .is_some_and(|t| t.made_for(entity, action, provenance, now));
        if !fresh {
            *template = Some(RecordHeaders::new(entity, action, provenance, now));
        }
        let t = template.as_ref().expect("just made");
        (t.headers.clone(), t.routing_key.clone())
    });
    // The per-record headers, at the places the template keeps for them (no key lookups).
    for (i, v) in headers.values_mut().enumerate() {
        match i {
            RecordHeaders::ID => *v = Value::String(id.clone()),
            RecordHeaders::SUBJECT => *v = Value::String(key.to_string()),
            RecordHeaders::LINE => *v = json!(provenance.locator.line),
            RecordHeaders::ROW => *v = json!(provenance.locator.row),
            RecordHeaders::CONTENT => *v = Value::String(std::mem::take(&mut hash)),
            _ => continue,
        }
        if i == RecordHeaders::CONTENT {
            break;
        }
    }
    OutboundMessage {
        message_id: id,
        routing_key,
        headers,
        body,
        correlation_id: provenance.batch_id.to_string(),
        timestamp: now.timestamp(),
    }
}

thread_local! {
    /// The headers of the last batch's records on this thread: every record of a file shares
    /// all but five of them, so they are built (and the time formatted) once per batch.
    static RECORD_HEADERS: std::cell::RefCell<Option<RecordHeaders>> =
        const { std::cell::RefCell::new(None) };
}

/// The headers every record of one file, entity, mapping and time has in common, with `null`
/// in the five places each record fills in, and what they were made from.
struct RecordHeaders {
    entity: (String, String, String, String, u32),
    action: String,
    council: String,
    feed: String,
    file: String,
    file_sha256: String,
    mapping: (String, u32),
    now: chrono::DateTime<chrono::Utc>,
    headers: Map<String, Value>,
    routing_key: String,
}

impl RecordHeaders {
    const ID: usize = 1;
    const SUBJECT: usize = 4;
    const LINE: usize = 10;
    const ROW: usize = 11;
    const CONTENT: usize = 14;

    fn new(
        entity: &Entity,
        action: &str,
        provenance: &Provenance<'_>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let mut headers = Map::new();
        let mut h = |k: &str, v: Value| {
            headers.insert(k.to_string(), v);
        };
        h("cloudEvents:specversion", json!("1.0"));
        h("cloudEvents:id", Value::Null);
        h(
            "cloudEvents:source",
            json!(format!(
                "urn:council:{}:{}",
                provenance.council, provenance.feed
            )),
        );
        h(
            "cloudEvents:type",
            json!(format!(
                "uk.gov.council.{}.{}.{}.v{}",
                entity.domain, entity.short_name, action, entity.version
            )),
        );
        h("cloudEvents:subject", Value::Null);
        h(
            "cloudEvents:time",
            json!(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
        h("cloudEvents:dataschema", json!(entity.id));
        h("cloudEvents:datacontenttype", json!("application/json"));
        h("x-source-file", json!(provenance.locator.file));
        h("x-source-sha256", json!(provenance.file_sha256));
        h("x-source-line", Value::Null);
        h("x-source-row", Value::Null);
        h("x-mapping-id", json!(provenance.mapping_id));
        h("x-mapping-version", json!(provenance.mapping_version));
        h("x-content-sha256", Value::Null);
        debug_assert_eq!(
            headers.keys().nth(Self::CONTENT).map(String::as_str),
            Some("x-content-sha256")
        );
        RecordHeaders {
            entity: (
                entity.name.clone(),
                entity.domain.clone(),
                entity.short_name.clone(),
                entity.id.clone(),
                entity.version,
            ),
            action: action.to_string(),
            council: provenance.council.to_string(),
            feed: provenance.feed.to_string(),
            file: provenance.locator.file.clone(),
            file_sha256: provenance.file_sha256.to_string(),
            mapping: (
                provenance.mapping_id.to_string(),
                provenance.mapping_version,
            ),
            now,
            headers,
            routing_key: format!(
                "{}.{}.{}.{}",
                entity.domain, entity.short_name, action, provenance.council
            ),
        }
    }

    /// Whether these headers were made for this record's entity, action, file, mapping and time.
    fn made_for(
        &self,
        entity: &Entity,
        action: &str,
        p: &Provenance<'_>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        let (name, domain, short_name, id, version) = &self.entity;
        self.now == now
            && self.file_sha256 == p.file_sha256
            && self.file == p.locator.file
            && *name == entity.name
            && *domain == entity.domain
            && *short_name == entity.short_name
            && *id == entity.id
            && *version == entity.version
            && self.action == action
            && self.council == p.council
            && self.feed == p.feed
            && self.mapping.0 == p.mapping_id
            && self.mapping.1 == p.mapping_version
    }
}

/// The CloudEvents headers of a message the bridge makes itself (a manifest, an alert).
fn event_headers(
    id: &str,
    council: &str,
    feed: &str,
    ce_type: &str,
    subject: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Map<String, Value> {
    let mut headers = Map::new();
    headers.insert("cloudEvents:specversion".into(), json!("1.0"));
    headers.insert("cloudEvents:id".into(), json!(id));
    headers.insert(
        "cloudEvents:source".into(),
        json!(format!("urn:council:{council}:{feed}")),
    );
    headers.insert("cloudEvents:type".into(), json!(ce_type));
    headers.insert("cloudEvents:subject".into(), json!(subject));
    headers.insert(
        "cloudEvents:time".into(),
        json!(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    );
    headers.insert(
        "cloudEvents:datacontenttype".into(),
        json!("application/json"),
    );
    headers
}

/// Builds the manifest that closes a batch (`<domain>.batch.completed.<council>`), so the
/// platform can reconcile what it received against what was read.
pub fn manifest_message(
    domain: &str,
    council: &str,
    feed: &str,
    batch_id: &str,
    manifest: &Value,
    now: chrono::DateTime<chrono::Utc>,
) -> OutboundMessage {
    let id = Uuid::new_v5(&namespace(), format!("manifest\n{batch_id}").as_bytes()).to_string();
    let headers = event_headers(
        &id,
        council,
        feed,
        &format!("uk.gov.council.{domain}.batch.completed.v1"),
        batch_id,
        now,
    );
    OutboundMessage {
        message_id: id,
        routing_key: format!("{domain}.batch.completed.{council}"),
        headers,
        body: manifest.to_string().into_bytes(),
        correlation_id: batch_id.to_string(),
        timestamp: now.timestamp(),
    }
}

/// An operational alert about a feed (`kind`: `missing`...), published on the events exchange
/// with routing key `ops.feed.<kind>.<council>`. Its id is fixed by council, feed, kind and
/// `occasion` (e.g. the day), so one occasion raises one alert whoever raises it.
pub fn alert_message(
    kind: &str,
    council: &str,
    feed: &str,
    occasion: &str,
    body: &Value,
    now: chrono::DateTime<chrono::Utc>,
) -> OutboundMessage {
    let id = Uuid::new_v5(
        &namespace(),
        format!("alert\n{council}\n{feed}\n{kind}\n{occasion}").as_bytes(),
    )
    .to_string();
    let headers = event_headers(
        &id,
        council,
        feed,
        &format!("uk.gov.council.ops.feed.{kind}.v1"),
        &format!("{council}/{feed}"),
        now,
    );
    OutboundMessage {
        message_id: id,
        routing_key: format!("ops.feed.{kind}.{council}"),
        headers,
        body: body.to_string().into_bytes(),
        correlation_id: format!("{council}/{feed}/{occasion}"),
        timestamp: now.timestamp(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_ignore_key_order() {
        let a = json!({"b": 1, "a": {"y": 2, "x": 3}});
        let b = json!({"a": {"x": 3, "y": 2}, "b": 1});
        assert_eq!(content_hash(&a), content_hash(&b));
        let id1 = message_id(
            "northshire",
            "payroll.pay_result",
            "E1/2026-10-31",
            &content_hash(&a),
        );
        let id2 = message_id(
            "northshire",
            "payroll.pay_result",
            "E1/2026-10-31",
            &content_hash(&b),
        );
        assert_eq!(id1, id2);
        let other = message_id(
            "riverton",
            "payroll.pay_result",
            "E1/2026-10-31",
            &content_hash(&a),
        );
        assert_ne!(id1, other);
        assert_eq!(Uuid::parse_str(&id1).unwrap().get_version_num(), 5);
    }

    /// The canonical JSON written in place is the text of a copy rebuilt in key order (the
    /// form every stored content hash and message id was computed from).
    #[test]
    fn canonical_json_is_the_sorted_copy_serialised() {
        fn sorted(v: &Value) -> Value {
            match v {
                Value::Object(m) => {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort();
                    Value::Object(
                        keys.into_iter()
                            .map(|k| (k.clone(), sorted(&m[k])))
                            .collect(),
                    )
                }
                Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
                other => other.clone(),
            }
        }
        let v = json!({
            "zeta": [3, {"b": null, "a": true, "Ä": "\u{1}\"q\\"}, -0.5, 1e300],
            "alpha": {"y": "£3,912.50", "x": 12345678901234i64, "é": [], "": {}},
            "mid": "line\nbreak\ttab",
        });
        assert_eq!(canonical_json(&v), sorted(&v).to_string());
        assert_eq!(
            content_hash(&v),
            hex::encode(Sha256::digest(sorted(&v).to_string().as_bytes()))
        );
    }

    /// The body and hash written in one pass are the body serialised as before and the hash of
    /// its canonical JSON, whatever the order of keys at each level.
    #[test]
    fn body_and_hash_is_to_vec_and_content_hash() {
        let values = [
            json!({
                "zeta": [3, {"b": null, "a": true, "Ä": "\u{1}\"q\\"}, -0.5, 1e300],
                "alpha": {"y": "£3,912.50", "x": 12345678901234i64, "é": [], "": {}},
                "mid": "line\nbreak\ttab",
                "bank": {"sort_code": "401276", "account_number": "12345678"},
                "period": {"end": "2026-10-31", "start": "2026-10-01"},
                "sorted": {"a": 1, "b": {"c": [1, {"d": 2, "e": 3}]}},
                "Z": 1,
                "a\"b": false,
            }),
            json!({}),
            json!({"only": {"z": 1, "a": 2}}),
            json!([{"b": 1, "a": 2}]),
            json!("text"),
            Value::Null,
        ];
        // Twice over, so the second pass reads each key order from the cache, and with the
        // bodies in turn (the cache follows a change of keys).
        for v in values.iter().chain(&values) {
            let (body, hash) = body_and_hash(v);
            assert_eq!(body, serde_json::to_vec(v).unwrap(), "{v}");
            assert_eq!(hash, content_hash(v), "{v}");
            assert_eq!(hash, hex::encode(Sha256::digest(canonical_json(v))), "{v}");
        }
        // The message id is the UUIDv5 of the four parts joined by line breaks, hyphenated.
        let id = message_id(
            "northshire",
            "payroll.pay_result",
            "E1/2026-10-31",
            &hash_of_a(),
        );
        let name = format!(
            "northshire\npayroll.pay_result\nE1/2026-10-31\n{}",
            hash_of_a()
        );
        assert_eq!(id, Uuid::new_v5(&namespace(), name.as_bytes()).to_string());
    }

    fn hash_of_a() -> String {
        content_hash(&json!({"b": 1, "a": {"y": 2, "x": 3}}))
    }

    /// The headers shared by a batch's records are rebuilt when the file, time or entity
    /// changes: a record never carries another batch's headers.
    #[test]
    fn record_headers_follow_their_own_batch() {
        let registry = super::super::Registry::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"),
        )
        .unwrap();
        let entity = registry.get("payroll.pay_result").unwrap();
        let body = json!({"employee_number": "E1", "gross_pay_pence": 100});
        let message = |file: &str, line: u64, now: i64| {
            let locator = Locator {
                file: file.into(),
                line,
                row: line - 1,
            };
            record_message(
                entity,
                "upserted",
                "E1",
                &body,
                &Provenance {
                    council: "northshire",
                    feed: "payroll",
                    batch_id: "b1",
                    file_sha256: "abc",
                    locator: &locator,
                    mapping_id: "m",
                    mapping_version: 1,
                },
                chrono::DateTime::from_timestamp(now, 0).unwrap(),
            )
        };
        let a = message("a.csv", 3, 1_800_000_000);
        let b = message("a.csv", 4, 1_800_000_000);
        let c = message("b.csv", 5, 1_800_000_060);
        assert_eq!(a.headers["x-source-line"], json!(3));
        assert_eq!(b.headers["x-source-line"], json!(4));
        assert_eq!(b.headers["x-source-row"], json!(3));
        assert_eq!(a.headers["cloudEvents:id"], json!(a.message_id));
        assert_eq!(a.headers["cloudEvents:subject"], json!("E1"));
        assert_eq!(a.headers["x-content-sha256"], json!(content_hash(&body)));
        assert_eq!(c.headers["x-source-file"], json!("b.csv"));
        assert_eq!(c.headers["cloudEvents:time"], json!("2027-01-15T08:01:00Z"));
        assert_eq!(a.headers["cloudEvents:time"], json!("2027-01-15T08:00:00Z"));
        assert_eq!(a.headers.len(), 15);
        assert_eq!(a.body, serde_json::to_vec(&body).unwrap());

        // A batch of records reads back as the same records: ids, headers, bodies.
        let changed = b
            .clone()
            .with_header("x-previous-content-sha256", json!("def"));
        let batch = batch_body(&[&a, &changed, &c]);
        let back = unbatch(&batch).expect("a batch");
        let expected: Vec<BatchedRecord> = [&a, &changed, &c]
            .into_iter()
            .map(|m| BatchedRecord {
                message_id: m.message_id.clone(),
                headers: m.headers.clone(),
                body: m.body.clone(),
            })
            .collect();
        assert_eq!(back, expected);
        assert_eq!(unbatch(b"[]"), None);
        assert_eq!(
            unbatch(br#"[{"data": {}}]"#),
            None,
            "an event without an id"
        );
        assert_eq!(unbatch(&a.body), None, "a single record is no batch");
    }
}
