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
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        b"https://council-bridge.org.uk/ns/message-id",
    )
}

/// The JSON text of a value with object keys sorted at every level, so the content hash does
/// not change when a mapping lists its fields in another order.
pub fn canonical_json(value: &Value) -> String {
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
    sorted(value).to_string()
}

/// sha256 of the canonical JSON of a record, hex.
pub fn content_hash(body: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(body).as_bytes()))
}

/// The message id of a record: the same council, entity, key and content always give the same
/// id, so reruns and replays are safe for consumers that de-duplicate on it.
pub fn message_id(council: &str, entity: &str, key: &str, content_hash: &str) -> String {
    let name = format!("{council}\n{entity}\n{key}\n{content_hash}");
    Uuid::new_v5(&namespace(), name.as_bytes()).to_string()
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
            let name = match k.strip_prefix("cloudEvents:") {
                Some(attribute) => attribute.to_string(),
                None => k
                    .strip_prefix("x-")
                    .unwrap_or(k)
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .map(|c| c.to_ascii_lowercase())
                    .collect(),
            };
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

/// Builds the message for one validated record.
pub fn record_message(
    entity: &Entity,
    action: &str,
    key: &str,
    body: &Value,
    provenance: &Provenance<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> OutboundMessage {
    let hash = content_hash(body);
    let id = message_id(provenance.council, &entity.name, key, &hash);
    let mut headers = Map::new();
    let mut h = |k: &str, v: Value| {
        headers.insert(k.to_string(), v);
    };
    h("cloudEvents:specversion", json!("1.0"));
    h("cloudEvents:id", json!(id));
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
    h("cloudEvents:subject", json!(key));
    h(
        "cloudEvents:time",
        json!(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    );
    h("cloudEvents:dataschema", json!(entity.id));
    h("cloudEvents:datacontenttype", json!("application/json"));
    h("x-source-file", json!(provenance.locator.file));
    h("x-source-sha256", json!(provenance.file_sha256));
    h("x-source-line", json!(provenance.locator.line));
    h("x-source-row", json!(provenance.locator.row));
    h("x-mapping-id", json!(provenance.mapping_id));
    h("x-mapping-version", json!(provenance.mapping_version));
    h("x-content-sha256", json!(hash));
    OutboundMessage {
        message_id: id,
        routing_key: format!(
            "{}.{}.{}.{}",
            entity.domain, entity.short_name, action, provenance.council
        ),
        headers,
        body: body.to_string().into_bytes(),
        correlation_id: provenance.batch_id.to_string(),
        timestamp: now.timestamp(),
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
}
