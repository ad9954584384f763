//! Records of one batch that share a key (events mode; snapshots reject a repeated key in
//! `delta`). Published as upserts, a consumer keyed on the key would keep only the last of two
//! records with different content: the batch report names each such key with its lines, and
//! the feed's `duplicate_keys` policy may hold the batch.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// One key that several records of a batch share.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DuplicateKey {
    /// The record key (never personal data: keys cannot hold x-pii fields).
    pub key: String,
    /// The physical lines of the records that have it, in file order.
    pub lines: Vec<u64>,
    /// Whether the records are identical (a repeated line: one message) or differ.
    pub same_content: bool,
}

/// One record of a key that several records share, kept under `duplicate_keys: reject` so that
/// all of them can be taken back from the batch and kept as failures.
#[derive(Debug, Clone)]
pub struct Member {
    /// Physical line.
    pub line: u64,
    /// Data row.
    pub row: u64,
    /// File name as the locator gives it.
    pub file: String,
    /// The message staged for it.
    pub message_id: String,
    /// The raw record, bounded as the failure store keeps it.
    pub raw: Value,
}

#[derive(Debug)]
struct First {
    line: u64,
    content: [u8; 32],
    member: Option<Member>,
}

/// Keys seen in a batch, with the line and content hash of their first record. Under
/// `duplicate_keys: reject` it also keeps each first record's raw values (bounded), since any of
/// them may turn out to share its key with a later one.
#[derive(Debug, Default)]
pub struct Tracker {
    keep: bool,
    main: Option<String>,
    first: HashMap<String, First>,
    found: BTreeMap<String, DuplicateKey>,
    members: HashMap<String, Vec<Member>>,
}

impl Tracker {
    /// A tracker; `keep`: keep what rejecting the records of a shared key needs.
    pub fn new(keep: bool) -> Self {
        Self {
            keep,
            ..Self::default()
        }
    }

    /// Notes a valid record of `entity` (the key is named with its entity when a mapping makes
    /// records of several: `hr.employment E1`; the first entity's keys are named alone).
    pub fn record(
        &mut self,
        entity: &str,
        key: &str,
        rec: &crate::formats::SourceRecord,
        body: &Value,
        message_id: &str,
        raw: impl FnOnce() -> Value,
    ) {
        use sha2::Digest;
        let tracked = match &self.main {
            Some(main) if main != entity => format!("{entity} {key}"),
            Some(_) => key.to_string(),
            None => {
                self.main = Some(entity.to_string());
                key.to_string()
            }
        };
        let content: [u8; 32] = sha2::Sha256::digest(body.to_string().as_bytes()).into();
        let line = rec.locator.line;
        let member = self.keep.then(|| Member {
            line,
            row: rec.locator.row,
            file: rec.locator.file.clone(),
            message_id: message_id.to_string(),
            raw: raw(),
        });
        match self.first.get_mut(&tracked) {
            None => {
                self.first.insert(
                    tracked,
                    First {
                        line,
                        content,
                        member,
                    },
                );
            }
            Some(first) => {
                let d = self
                    .found
                    .entry(tracked.clone())
                    .or_insert_with(|| DuplicateKey {
                        key: tracked.clone(),
                        lines: vec![first.line],
                        same_content: true,
                    });
                d.lines.push(line);
                d.same_content &= first.content == content;
                if let Some(m) = member {
                    let members = self.members.entry(tracked).or_default();
                    if let Some(f) = first.member.take() {
                        members.push(f);
                    }
                    members.push(m);
                }
            }
        }
    }

    /// The records of every key shared by records with different content, by key, for
    /// `duplicate_keys: reject` (empty unless the tracker keeps them).
    pub fn conflicts(&mut self) -> Vec<(String, Vec<Member>)> {
        let mut out: Vec<(String, Vec<Member>)> = self
            .found
            .values()
            .filter(|d| !d.same_content)
            .filter_map(|d| Some((d.key.clone(), self.members.remove(&d.key)?)))
            .collect();
        out.sort_by_key(|(_, m)| m[0].line);
        out
    }

    /// The keys more than one record had, by first line.
    pub fn finish(self) -> Vec<DuplicateKey> {
        let mut out: Vec<DuplicateKey> = self.found.into_values().collect();
        out.sort_by_key(|d| d.lines[0]);
        out
    }
}

/// The failure of one record rejected under `duplicate_keys: reject`, naming the other lines.
pub fn rejection(key: &str, member: &Member, all: &[Member]) -> Value {
    let others: Vec<String> = all
        .iter()
        .filter(|m| m.line != member.line || m.message_id != member.message_id)
        .map(|m| m.line.to_string())
        .collect();
    serde_json::json!([{
        "field": "(record key)",
        "column": null,
        "rule": "duplicate_key",
        "message": format!(
            "the key {key} is also on line(s) {} of this file with different content; a consumer keyed on it would keep only the last, so every record with this key is rejected (duplicate_keys: reject)",
            others.join(", ")
        ),
        "value": null,
    }])
}

/// The held reason for `duplicates` with different content, if any.
pub fn hold_reason(duplicates: &[DuplicateKey]) -> Option<String> {
    let differ: Vec<String> = duplicates
        .iter()
        .filter(|d| !d.same_content)
        .map(|d| {
            let lines: Vec<String> = d.lines.iter().map(u64::to_string).collect();
            format!("{} (lines {})", d.key, lines.join(", "))
        })
        .collect();
    (!differ.is_empty()).then(|| {
        format!(
            "duplicate keys (duplicate_keys: hold): {} record key(s) with different content on several lines, a consumer keyed on them would keep only the last: {}",
            differ.len(),
            differ.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repeated_and_conflicting_keys_with_their_lines() {
        let mut t = Tracker::new(true);
        let rec = |line: u64| crate::formats::SourceRecord {
            locator: crate::formats::Locator {
                file: "f.csv".into(),
                line,
                row: line - 1,
            },
            header: std::sync::Arc::new(crate::formats::Header::new(vec!["K".into()])),
            values: vec![line.to_string()],
        };
        let note = |t: &mut Tracker, key: &str, line: u64, n: i64| {
            let id = format!("m{line}");
            t.record("e.x", key, &rec(line), &json!({"n": n}), &id, || {
                json!(line)
            });
        };
        note(&mut t, "A", 2, 1);
        note(&mut t, "B", 3, 1);
        note(&mut t, "A", 4, 1);
        note(&mut t, "B", 5, 2);
        note(&mut t, "B", 9, 1);
        t.record("e.other", "B", &rec(10), &json!({"n": 3}), "m10", || {
            json!(10)
        });
        let conflicts = t.conflicts();
        assert_eq!(conflicts.len(), 1, "A's lines are identical: one message");
        assert_eq!(conflicts[0].0, "B");
        let ids: Vec<&str> = conflicts[0]
            .1
            .iter()
            .map(|m| m.message_id.as_str())
            .collect();
        assert_eq!(
            ids,
            ["m3", "m5", "m9"],
            "another entity's key B is no duplicate"
        );
        let failure = rejection("B", &conflicts[0].1[1], &conflicts[0].1);
        assert!(
            failure[0]["message"]
                .as_str()
                .unwrap()
                .contains("also on line(s) 3, 9 "),
            "{failure}"
        );
        let d = t.finish();
        assert_eq!(
            d,
            [
                DuplicateKey {
                    key: "A".into(),
                    lines: vec![2, 4],
                    same_content: true
                },
                DuplicateKey {
                    key: "B".into(),
                    lines: vec![3, 5, 9],
                    same_content: false
                },
            ]
        );
        let reason = hold_reason(&d).unwrap();
        assert!(
            reason.contains("1 record key(s)") && reason.contains("B (lines 3, 5, 9)"),
            "{reason}"
        );
        assert_eq!(
            hold_reason(&d[..1]),
            None,
            "identical lines are one message"
        );
    }
}
