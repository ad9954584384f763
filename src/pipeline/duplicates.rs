//! Records of one batch that share a key (events mode; snapshots reject a repeated key in
//! `delta`). Published as upserts, a consumer keyed on the key would keep only the last of two
//! records with different content: the batch report names each such key with its lines, and
//! the feed's `duplicate_keys` policy may hold the batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

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

/// The first record of a key: 16 bytes, whatever the key.
#[derive(Debug, Clone, Copy)]
struct First {
    /// Where the key's text starts in `Tracker::keys` (it ends where the next key starts).
    key_at: u32,
    /// Physical line (`u32::MAX`: see `Tracker::far_lines`).
    line: u32,
    /// The first half of its message id. Records of one entity and key have the same message id
    /// exactly when their content is the same (the id is made from the content hash).
    id: u64,
}

/// Under `duplicate_keys: reject`, what taking a key's first record back needs besides
/// [`First`]: its row (to read its raw values again from the file) and its whole message id.
#[derive(Debug, Clone, Copy)]
struct FirstRow {
    row: u64,
    id: u128,
}

/// A key more than one record has: its first record, by index, and the others.
#[derive(Debug)]
struct Found {
    first: usize,
    lines: Vec<u64>,
    same_content: bool,
    members: Vec<Member>,
}

/// Keys seen in a batch, with the line and message id of their first record, kept compactly so
/// that memory grows by about 21 bytes and the key's length per distinct key, not by a map
/// entry per record: the keys' text in one string, 16 bytes per key beside it, and a hash table
/// of 4-byte indexes. Keys are compared in full, so a hash collision never makes a duplicate.
/// Under `duplicate_keys: reject` it also keeps each first record's row and whole message id
/// (16 more bytes a key), since any of them may turn out to share its key with a later one; the
/// raw values of the first records that do are read again from the file ([`Tracker::conflicts`]).
#[derive(Debug, Default)]
pub struct Tracker<S = hashbrown::DefaultHashBuilder> {
    keep: bool,
    main: Option<String>,
    hasher: S,
    /// Indexes into `firsts`, by the hash of the key.
    table: hashbrown::HashTable<u32>,
    /// Every key's text, one after the other.
    keys: String,
    firsts: Vec<First>,
    /// Lines past `u32::MAX`, by index into `firsts`.
    far_lines: HashMap<usize, u64>,
    /// Under `reject`: beside `firsts`.
    rows: Vec<FirstRow>,
    /// Under `reject`: message ids that are not UUIDs, by index into `firsts`.
    odd_ids: HashMap<usize, String>,
    /// The key being noted (with its entity when it is not the first entity's).
    scratch: String,
    found: BTreeMap<String, Found>,
    /// Set when the keys no longer fit the compact form (4 GiB of key text): no new key is
    /// tracked after that.
    full: bool,
}

/// A message id as a number: records' ids are UUIDs (`envelope::message_id`); any other text
/// is hashed (`None`: not a UUID), which only makes its content identity probabilistic.
fn id_bits(message_id: &str, hasher: &impl BuildHasher) -> (u128, bool) {
    match uuid::Uuid::try_parse(message_id) {
        Ok(u) if u.hyphenated().to_string() == message_id => (u.as_u128(), true),
        _ => {
            let h = hasher.hash_one(message_id);
            ((u128::from(h) << 64) | u128::from(h), false)
        }
    }
}

impl Tracker {
    /// A tracker; `keep`: keep what rejecting the records of a shared key needs.
    pub fn new(keep: bool) -> Self {
        Self {
            keep,
            ..Self::default()
        }
    }
}

impl<S: BuildHasher> Tracker<S> {
    fn key(&self, i: usize) -> &str {
        let start = self.firsts[i].key_at as usize;
        let end = self
            .firsts
            .get(i + 1)
            .map_or(self.keys.len(), |f| f.key_at as usize);
        &self.keys[start..end]
    }

    fn line(&self, i: usize) -> u64 {
        match self.firsts[i].line {
            u32::MAX => self.far_lines[&i],
            l => u64::from(l),
        }
    }

    /// Notes a valid record of `entity` (the key is named with its entity when a mapping makes
    /// records of several: `hr.employment E1`; the first entity's keys are named alone) and the
    /// message made for it.
    pub fn record(
        &mut self,
        entity: &str,
        key: &str,
        rec: &crate::formats::SourceRecord,
        message_id: &str,
        raw: impl FnOnce() -> Value,
    ) {
        let mut tracked = std::mem::take(&mut self.scratch);
        tracked.clear();
        match &self.main {
            Some(main) if main != entity => {
                tracked.push_str(entity);
                tracked.push(' ');
            }
            Some(_) => {}
            None => self.main = Some(entity.to_string()),
        }
        tracked.push_str(key);
        let (id, uuid) = id_bits(message_id, &self.hasher);
        let line = rec.locator.line;
        let hash = self.hasher.hash_one(tracked.as_str());
        let seen = self
            .table
            .find(hash, |&i| self.key(i as usize) == tracked)
            .map(|&i| i as usize);
        match seen {
            Some(i) => {
                let first_line = self.line(i);
                let same = self.firsts[i].id == (id >> 64) as u64;
                let member = self.keep.then(|| Member {
                    line,
                    row: rec.locator.row,
                    file: rec.locator.file.clone(),
                    message_id: message_id.to_string(),
                    raw: raw(),
                });
                if !self.found.contains_key(tracked.as_str()) {
                    self.found.insert(
                        tracked.clone(),
                        Found {
                            first: i,
                            lines: vec![first_line],
                            same_content: true,
                            members: Vec::new(),
                        },
                    );
                }
                let found = self.found.get_mut(tracked.as_str()).expect("just inserted");
                found.lines.push(line);
                found.same_content &= same;
                found.members.extend(member);
            }
            None if self.full => {}
            None => match u32::try_from(self.keys.len() + tracked.len()) {
                Err(_) => {
                    self.full = true;
                    tracing::warn!(
                        line,
                        "more than 4 GiB of record keys in one batch: keys first seen after this line are not checked for duplicates"
                    );
                }
                Ok(_) => {
                    let i = self.firsts.len();
                    let short = u32::try_from(line).ok().filter(|l| *l != u32::MAX);
                    if short.is_none() {
                        self.far_lines.insert(i, line);
                    }
                    self.firsts.push(First {
                        key_at: self.keys.len() as u32,
                        line: short.unwrap_or(u32::MAX),
                        id: (id >> 64) as u64,
                    });
                    self.keys.push_str(&tracked);
                    if self.keep {
                        self.rows.push(FirstRow {
                            row: rec.locator.row,
                            id,
                        });
                        if !uuid {
                            self.odd_ids.insert(i, message_id.to_string());
                        }
                    }
                    let (table, hasher, firsts, keys) =
                        (&mut self.table, &self.hasher, &self.firsts, &self.keys);
                    table.insert_unique(hash, i as u32, |&j| {
                        let j = j as usize;
                        let end = firsts.get(j + 1).map_or(keys.len(), |f| f.key_at as usize);
                        hasher.hash_one(&keys[firsts[j].key_at as usize..end])
                    });
                }
            },
        }
        self.scratch = tracked;
    }

    /// The records of every key shared by records with different content, by key, for
    /// `duplicate_keys: reject` (empty unless the tracker keeps them). The first record of each
    /// such key is not kept whole: `read_rows` reads the raw values (with the locator's file
    /// name) of those rows again from the file; a row it does not give back is an error.
    pub fn conflicts<E>(
        &mut self,
        read_rows: impl FnOnce(&BTreeSet<u64>) -> Result<HashMap<u64, (String, Value)>, E>,
        missing: impl Fn(u64) -> E,
    ) -> Result<Vec<(String, Vec<Member>)>, E> {
        if !self.keep {
            return Ok(Vec::new());
        }
        let differ: Vec<&String> = self
            .found
            .iter()
            .filter(|(_, f)| !f.same_content)
            .map(|(k, _)| k)
            .collect();
        if differ.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: BTreeSet<u64> = differ
            .iter()
            .map(|k| self.rows[self.found[*k].first].row)
            .collect();
        let mut raws = read_rows(&wanted)?;
        let keys: Vec<String> = differ.into_iter().cloned().collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(found) = self.found.get_mut(&key) else {
                continue;
            };
            let FirstRow { row, id } = self.rows[found.first];
            let (file, raw) = match raws.get(&row) {
                Some(r) => r.clone(),
                None => return Err(missing(row)),
            };
            let mut members = vec![Member {
                line: found.lines[0],
                row,
                file,
                message_id: match self.odd_ids.get(&found.first) {
                    Some(odd) => odd.clone(),
                    None => uuid::Uuid::from_u128(id).to_string(),
                },
                raw,
            }];
            members.append(&mut found.members);
            out.push((key, members));
        }
        raws.clear();
        out.sort_by_key(|(_, m)| m[0].line);
        Ok(out)
    }

    /// The keys more than one record had, by first line.
    pub fn finish(self) -> Vec<DuplicateKey> {
        let mut out: Vec<DuplicateKey> = self
            .found
            .into_iter()
            .map(|(key, f)| DuplicateKey {
                key,
                lines: f.lines,
                same_content: f.same_content,
            })
            .collect();
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

    /// A record's message id as the envelope makes it: the same for the same entity, key and
    /// content.
    fn id(entity: &str, key: &str, n: i64) -> String {
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("{entity}\n{key}\n{n}").as_bytes(),
        )
        .to_string()
    }

    fn rec(line: u64) -> crate::formats::SourceRecord {
        crate::formats::SourceRecord {
            locator: crate::formats::Locator {
                file: "f.csv".into(),
                line,
                row: line - 1,
            },
            header: std::sync::Arc::new(crate::formats::Header::new(vec!["K".into()])),
            values: vec![line.to_string()],
        }
    }

    #[test]
    fn repeated_and_conflicting_keys_with_their_lines() {
        let mut t = Tracker::new(true);
        let note = |t: &mut Tracker, key: &str, line: u64, n: i64| {
            t.record("e.x", key, &rec(line), &id("e.x", key, n), || json!(line));
        };
        note(&mut t, "A", 2, 1);
        note(&mut t, "B", 3, 1);
        note(&mut t, "A", 4, 1);
        note(&mut t, "B", 5, 2);
        note(&mut t, "B", 9, 1);
        t.record("e.other", "B", &rec(10), &id("e.other", "B", 3), || {
            json!(10)
        });
        let mut asked = BTreeSet::new();
        let conflicts = t
            .conflicts(
                |rows| {
                    asked = rows.clone();
                    Ok::<_, u64>(
                        rows.iter()
                            .map(|&r| (r, ("f.csv".to_string(), json!(r + 1))))
                            .collect(),
                    )
                },
                |row| row,
            )
            .unwrap();
        assert_eq!(
            asked,
            BTreeSet::from([2]),
            "only B's first record (row 2) is read again"
        );
        assert_eq!(conflicts.len(), 1, "A's lines are identical: one message");
        assert_eq!(conflicts[0].0, "B");
        let ids: Vec<&str> = conflicts[0]
            .1
            .iter()
            .map(|m| m.message_id.as_str())
            .collect();
        assert_eq!(
            ids,
            [id("e.x", "B", 1), id("e.x", "B", 2), id("e.x", "B", 1)],
            "another entity's key B is no duplicate"
        );
        let raws: Vec<&Value> = conflicts[0].1.iter().map(|m| &m.raw).collect();
        assert_eq!(raws, [&json!(3), &json!(5), &json!(9)]);
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

    /// Every key hashes alike: only the keys' text tells them apart.
    #[derive(Default)]
    struct Colliding;

    struct Zero;

    impl std::hash::Hasher for Zero {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, _: &[u8]) {}
    }

    impl BuildHasher for Colliding {
        type Hasher = Zero;
        fn build_hasher(&self) -> Zero {
            Zero
        }
    }

    impl std::fmt::Debug for Colliding {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Colliding")
        }
    }

    #[test]
    fn keys_whose_hashes_collide_are_no_duplicates() {
        let mut t: Tracker<Colliding> = Tracker::default();
        for i in 0..500u64 {
            let key = format!("K{i}");
            t.record("e.x", &key, &rec(i + 2), &id("e.x", &key, 1), || {
                json!(null)
            });
        }
        t.record("e.x", "K3", &rec(600), &id("e.x", "K3", 2), || json!(null));
        let d = t.finish();
        assert_eq!(
            d,
            [DuplicateKey {
                key: "K3".into(),
                lines: vec![5, 600],
                same_content: false
            }]
        );
    }

    #[test]
    fn another_entity_is_no_duplicate_and_many_keys_stay_exact() {
        let mut t = Tracker::new(false);
        for i in 0..200_000u64 {
            let key = format!("K{i}");
            t.record("e.x", &key, &rec(i + 2), &id("e.x", &key, 1), || {
                json!(null)
            });
        }
        // A non-UUID id still compares by content.
        t.record("e.x", "K7", &rec(300_000), "not-a-uuid", || json!(null));
        t.record("e.y", "K8", &rec(300_001), &id("e.y", "K8", 1), || {
            json!(null)
        });
        t.record("e.x", "K8", &rec(300_002), &id("e.x", "K8", 1), || {
            json!(null)
        });
        let d = t.finish();
        assert_eq!(
            d,
            [
                DuplicateKey {
                    key: "K7".into(),
                    lines: vec![9, 300_000],
                    same_content: false
                },
                DuplicateKey {
                    key: "K8".into(),
                    lines: vec![10, 300_002],
                    same_content: true
                },
            ]
        );
    }
}
