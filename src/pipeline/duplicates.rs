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

/// Keys seen in a batch, with the line and content of their first record.
#[derive(Debug, Default)]
pub struct Tracker {
    first: HashMap<String, (u64, String)>,
    found: BTreeMap<String, DuplicateKey>,
}

impl Tracker {
    /// Notes a valid record.
    pub fn record(&mut self, key: &str, line: u64, body: &Value) {
        let content = body.to_string();
        match self.first.get(key) {
            None => {
                self.first.insert(key.to_string(), (line, content));
            }
            Some((first_line, first_content)) => {
                let d = self
                    .found
                    .entry(key.to_string())
                    .or_insert_with(|| DuplicateKey {
                        key: key.to_string(),
                        lines: vec![*first_line],
                        same_content: true,
                    });
                d.lines.push(line);
                d.same_content &= *first_content == content;
            }
        }
    }

    /// The keys more than one record had, by first line.
    pub fn finish(self) -> Vec<DuplicateKey> {
        let mut out: Vec<DuplicateKey> = self.found.into_values().collect();
        out.sort_by_key(|d| d.lines[0]);
        out
    }
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
        let mut t = Tracker::default();
        t.record("A", 2, &json!({"n": 1}));
        t.record("B", 3, &json!({"n": 1}));
        t.record("A", 4, &json!({"n": 1}));
        t.record("B", 5, &json!({"n": 2}));
        t.record("B", 9, &json!({"n": 1}));
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
