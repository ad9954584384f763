//! Column-to-field matching: the canonical fields of an entity, a score per column from the
//! header and from the values, and the greedy assignment of columns to fields.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::canonical::Entity;
use crate::mapping::transforms;
use crate::mapping::{JsonType, TargetSchema};

use super::profile::{Sample, header_cells_usable};
use super::shapes::{ColumnProfile, MONEY_ZEROS, Shape};
use super::synonyms::{ABBREVIATIONS, CODE_SYNONYMS, STOP_WORDS, SYNONYMS, TRANSPARENCY_SYNONYMS};
use super::write::transforms_for;

/// One canonical field of the draft.
#[derive(Debug, Clone, Serialize)]
pub struct FieldMatch {
    /// Dotted path.
    pub field: String,
    /// Where its value comes from.
    pub source: MatchedSource,
    /// How good the match is (1 is an exact header; below 0.6 the values alone decided).
    pub score: f64,
    /// `required: true` in the draft.
    pub required: bool,
    /// Transforms, as written in the draft.
    pub transforms: Vec<String>,
    /// `null_if` placeholders.
    pub null_if: Vec<String>,
    /// Why this source (the draft's comment).
    pub why: String,
    /// What to check (`TODO` comments in the draft).
    pub todo: Vec<String>,
}

/// Where a drafted field comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MatchedSource {
    /// A column of the sample.
    Column {
        /// 0-based position.
        index: usize,
        /// Header name.
        name: String,
    },
    /// A literal (`value: GBP`).
    Literal {
        /// The value.
        value: Value,
    },
    /// The record's place: `concat: {from: [$file, $line]}`.
    FileLine,
    /// The file's name, by pattern (`from: $file` with a `regex`): an "as at" date or a period
    /// the rows do not state.
    FileName {
        /// The regular expression whose group 1 is the value.
        pattern: String,
    },
}

// ---------------------------------------------------------------------------------------------
// The canonical fields
// ---------------------------------------------------------------------------------------------

/// What a field wants, for matching and transforms.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Constant(Value),
    Date,
    Pence,
    Integer,
    Number,
    Boolean,
    Enum(Vec<String>),
    Nino,
    Postcode,
    SortCode,
    Email,
    OtherFormat(String),
    Text,
}

#[derive(Debug, Clone)]
pub(super) struct FieldInfo {
    pub(super) path: String,
    pub(super) leaf: String,
    pub(super) kind: Kind,
    pub(super) pii: bool,
    pub(super) required: bool,
    /// Its object requires it (for nested fields of optional objects).
    pub(super) required_in_parent: bool,
    /// Normalised token lists naming the field: the leaf, the whole path.
    pub(super) phrases: Vec<Vec<String>>,
    /// Normalised synonyms, best first.
    pub(super) synonyms: Vec<Vec<String>>,
    /// The source element its description names (`(cac:OrderReference/cbc:ID)`), in lower
    /// case, and those its objects' descriptions name, outermost first ([`described_elements`]).
    pub(super) elements: Described,
    /// What marks its own objects and the entity's other objects in a column's path
    /// ([`object_scope`]).
    pub(super) scope: Scope,
}

/// Source elements named in the schema's descriptions, as lower-case path segments.
#[derive(Debug, Clone, Default)]
pub(super) struct Described {
    /// The field's own (`["partytaxscheme", "companyid"]`); empty when the description names none.
    pub(super) own: Vec<String>,
    /// Its objects', outermost first (`["accountingsupplierparty"]`).
    pub(super) objects: Vec<String>,
}

/// Marks of objects in a column path: a segment containing one of `own` is under the field's
/// own object, one containing one of `other` under another object of the entity.
#[derive(Debug, Clone, Default)]
pub(super) struct Scope {
    pub(super) own: Vec<String>,
    pub(super) other: Vec<String>,
}

impl FieldInfo {
    fn id_like(&self) -> bool {
        ["_id", "_number", "_reference", "_ref", "_no", "_code"]
            .iter()
            .any(|s| self.leaf.ends_with(s))
            || self.leaf == "id"
            || self.leaf == "reference"
    }
}

/// Every property under `node`: dotted path, schema, and whether its parent requires it.
pub(super) fn schema_nodes<'a>(
    node: &'a Value,
    prefix: &str,
    out: &mut Vec<(String, &'a Value, bool)>,
) {
    if let Some(Value::Object(props)) = node.get("properties") {
        let required: Vec<&str> = node
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (k, v) in props {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push((path.clone(), v, required.contains(&k.as_str())));
            schema_nodes(v, &path, out);
        }
    }
}

/// The leaf fields of an entity in schema order (objects, arrays and `null_reasons` left out).
pub(super) fn entity_fields(entity: &Entity) -> Vec<FieldInfo> {
    let required: HashSet<String> = entity.required().into_iter().collect();
    let mut nodes = Vec::new();
    schema_nodes(&entity.schema, "", &mut nodes);
    // Objects, with the elements their descriptions name.
    let object_nodes: Vec<(String, Vec<Vec<String>>)> = nodes
        .iter()
        .filter(|(p, n, _)| {
            p != "null_reasons" && n.get("properties").is_some_and(Value::is_object)
        })
        .map(|(p, n, _)| {
            let described = description_of(n).map(described_elements);
            (p.clone(), described.unwrap_or_default())
        })
        .collect();
    let mut out = Vec::new();
    for (path, node, required_in_parent) in nodes {
        if path == "null_reasons" || path.starts_with("null_reasons.") {
            continue;
        }
        let Some(target) = entity.field(&path) else {
            continue;
        };
        let ty = target
            .types
            .iter()
            .copied()
            .find(|t| *t != JsonType::Null)
            .unwrap_or(JsonType::String);
        if matches!(ty, JsonType::Object | JsonType::Array) {
            continue;
        }
        let leaf = path.rsplit('.').next().unwrap_or(&path).to_string();
        let enums: Vec<Value> = node
            .get("enum")
            .and_then(Value::as_array)
            .cloned()
            .or_else(|| node.get("const").map(|c| vec![c.clone()]))
            .unwrap_or_default();
        let format = node.get("format").and_then(Value::as_str);
        let kind = if enums.len() == 1 {
            Kind::Constant(enums[0].clone())
        } else {
            match ty {
                JsonType::Integer if leaf.ends_with("_pence") || leaf.ends_with("_minor") => {
                    Kind::Pence
                }
                JsonType::Integer => Kind::Integer,
                JsonType::Number => Kind::Number,
                JsonType::Boolean => Kind::Boolean,
                _ if !enums.is_empty() => Kind::Enum(
                    enums
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                ),
                _ => match format {
                    Some("date") => Kind::Date,
                    Some("uk-nino") => Kind::Nino,
                    Some("uk-postcode") => Kind::Postcode,
                    Some("uk-sort-code") => Kind::SortCode,
                    Some("email") => Kind::Email,
                    Some(other) => Kind::OtherFormat(other.to_string()),
                    None => Kind::Text,
                },
            }
        };
        let strip = |s: &str| {
            let mut t = tokens(&s.replace(['_', '.'], " "));
            if t.len() > 1 && matches!(t.last().map(String::as_str), Some("pence" | "minor")) {
                t.pop();
            }
            t
        };
        let mut phrases = vec![strip(&leaf)];
        if path.contains('.') {
            phrases.push(strip(&path));
        }
        let synonyms = SYNONYMS
            .iter()
            .filter(|(k, _)| *k == path)
            .chain(SYNONYMS.iter().filter(|(k, _)| *k == leaf && *k != path))
            .chain(TRANSPARENCY_SYNONYMS.iter().filter(|(k, _)| *k == path))
            .flat_map(|(_, list)| list.iter())
            .map(|s| tokens(s))
            .collect();
        let objects = ancestors(&path)
            .filter_map(|a| object_nodes.iter().find(|(p, _)| *p == a))
            .filter_map(|(_, d)| d.first().cloned())
            .flatten()
            .collect();
        let elements = Described {
            own: description_of(node)
                .and_then(|d| described_elements(d).into_iter().next())
                .unwrap_or_default(),
            objects,
        };
        let scope = object_scope(&path, &object_nodes);
        out.push(FieldInfo {
            elements,
            scope,
            required: required.contains(&path),
            required_in_parent,
            pii: target.pii.is_some(),
            path,
            leaf,
            kind,
            phrases,
            synonyms,
        });
    }
    out
}

fn description_of(node: &Value) -> Option<&str> {
    node.get("description").and_then(Value::as_str)
}

/// The objects a dotted path is inside, outermost first (`a.b.c`: `a`, `a.b`).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('.').map(|(i, _)| &path[..i])
}

/// Source elements a schema description names in parentheses, as exports write them:
/// `(cac:OrderReference/cbc:ID)`, `(PartyTaxScheme/CompanyID)`, `(RTI EmpAllceInd)`. A name
/// counts when it has a namespace prefix, a `/`, or is CamelCase with two capitals; plain words,
/// acronyms (`ISO`, `RTI`) and numbers do not. Each is a list of lower-case segments without
/// prefixes.
pub(super) fn described_elements(description: &str) -> Vec<Vec<String>> {
    static PAREN: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\(([^()]*)\)").expect("valid regex"));
    static ELEMENT: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"(?:[a-z]{2,4}:)?[A-Z][A-Za-z0-9]*(?:/(?:[a-z]{2,4}:)?[A-Z][A-Za-z0-9]*)*",
        )
        .expect("valid regex")
    });
    let mut out = Vec::new();
    for inside in PAREN.captures_iter(description) {
        for m in ELEMENT.find_iter(&inside[1]) {
            let text = m.as_str();
            let end_ok = inside[1][m.end()..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != '-');
            let camel = |w: &str| {
                w.chars().filter(char::is_ascii_uppercase).count() >= 2
                    && w.chars().any(|c| c.is_ascii_lowercase())
            };
            if !end_ok || !(text.contains(':') || text.contains('/') || camel(text)) {
                continue;
            }
            let segments: Vec<String> = text
                .split('/')
                .map(|seg| seg.rsplit(':').next().unwrap_or(seg).to_lowercase())
                .collect();
            out.push(segments);
        }
    }
    out
}

/// The marks of a field's own objects and of the entity's other objects (see [`Scope`]): an
/// object's name without underscores (`supplier`, `creditedinvoice`) and the last element its
/// description names (`accountingsupplierparty`); marks shorter than 4 letters are left out.
fn object_scope(path: &str, objects: &[(String, Vec<Vec<String>>)]) -> Scope {
    let own_objects: Vec<&str> = ancestors(path).collect();
    if own_objects.is_empty() {
        return Scope::default();
    }
    let marks = |object: &str, described: &[Vec<String>]| -> Vec<String> {
        let name = object.rsplit('.').next().unwrap_or(object).replace('_', "");
        std::iter::once(name)
            .chain(described.iter().filter_map(|d| d.last().cloned()))
            .filter(|m| m.len() >= 4)
            .collect()
    };
    let mut scope = Scope::default();
    for (object, described) in objects {
        if own_objects.contains(&object.as_str()) {
            scope.own.extend(marks(object, described));
        } else if !object.starts_with(&format!("{path}.")) {
            scope.other.extend(marks(object, described));
        }
    }
    scope.other.retain(|m| !scope.own.contains(m));
    scope
}

/// A column path's segments as [`Described`] writes them: lower case, no namespace prefix,
/// index or `@`.
fn path_segments(column: &str) -> Vec<String> {
    column
        .split('/')
        .map(|seg| {
            let seg = seg.trim_start_matches('@');
            let seg = seg.split('[').next().unwrap_or(seg);
            seg.rsplit(':').next().unwrap_or(seg).to_lowercase()
        })
        .collect()
}

/// How well a column's path is the element the field's description names: 0.97 when it ends
/// with that element, inside its objects' elements when those are named (top-level fields: with
/// nothing before it); 0.8 when a top-level field's element is nested deeper; 0 otherwise.
pub(super) fn described_score(field: &FieldInfo, column: &str) -> f64 {
    let own = &field.elements.own;
    let segments = path_segments(column);
    if own.is_empty() || segments.len() < own.len() || !segments.ends_with(own) {
        return 0.0;
    }
    let rest = &segments[..segments.len() - own.len()];
    let objects = &field.elements.objects;
    if objects.is_empty() {
        return if rest.is_empty() { 0.97 } else { 0.8 };
    }
    let inside = rest.windows(objects.len()).any(|w| w == objects.as_slice());
    if inside { 0.97 } else { 0.0 }
}

/// Whether a column's path is under another object of the entity than the field's own (a
/// customer's address for `supplier.city`): then the column is not the field's. `Some(true)`
/// when it is under the field's own object, `None` when the path says neither.
pub(super) fn in_own_object(field: &FieldInfo, column: &str) -> Option<bool> {
    let segments = path_segments(column);
    if segments.len() < 2 || field.scope.own.is_empty() {
        return None;
    }
    let parents = &segments[..segments.len() - 1];
    let has = |marks: &[String]| {
        parents
            .iter()
            .any(|seg| marks.iter().any(|m| seg.contains(m.as_str())))
    };
    if has(&field.scope.own) {
        Some(true)
    } else if has(&field.scope.other) {
        Some(false)
    } else {
        None
    }
}

/// "At least one of" groups: `allOf[*].anyOf[*].required` and `anyOf[*].required`.
pub(super) fn any_of_groups(schema: &Value) -> Vec<Vec<String>> {
    let group = |any: &Value| -> Option<Vec<String>> {
        let alts: Vec<String> = any
            .as_array()?
            .iter()
            .filter_map(|a| a.get("required")?.as_array()?.first()?.as_str())
            .map(str::to_owned)
            .collect();
        (alts.len() >= 2).then_some(alts)
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    if let Some(g) = schema.get("anyOf").and_then(group) {
        out.push(g);
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(g) = part.get("anyOf").and_then(group) {
            out.push(g);
        }
    }
    out
}

/// A header or field name as comparable tokens: camelCase and digits split, lower case,
/// punctuation dropped, abbreviations expanded, stop words removed.
pub(super) fn tokens(s: &str) -> Vec<String> {
    let mut spaced = String::new();
    let chars: Vec<char> = s.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if i > 0 {
            let p = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let boundary = (p.is_lowercase() && c.is_uppercase())
                || (p.is_uppercase() && c.is_uppercase() && next_lower)
                || (p.is_alphabetic() && c.is_ascii_digit())
                || (p.is_ascii_digit() && c.is_alphabetic() && !(*c == 'w' || *c == 'W'));
            if boundary {
                spaced.push(' ');
            }
        }
        spaced.push(*c);
    }
    let lower = spaced
        .to_lowercase()
        .replace("e-mail", "email")
        .replace("(s)", "s");
    let mut out = Vec::new();
    for word in lower.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() || STOP_WORDS.contains(&word) {
            continue;
        }
        match ABBREVIATIONS.iter().find(|(a, _)| *a == word) {
            Some((_, full)) => out.extend(full.split(' ').map(str::to_owned)),
            None => out.push(word.to_string()),
        }
    }
    out
}

pub(super) fn singular(t: &str) -> &str {
    if t.len() > 3 && t.ends_with('s') && !t.ends_with("ss") {
        &t[..t.len() - 1]
    } else {
        t
    }
}

/// How alike two tokens are: 1 equal (or plural), 0.8 a prefix or a typo, else 0.
pub(super) fn token_match(a: &str, b: &str) -> f64 {
    let (a, b) = (singular(a), singular(b));
    if a == b {
        return 1.0;
    }
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if short.len() >= 4 && long.starts_with(short) && short.len() * 2 >= long.len() {
        return 0.8;
    }
    if short.len() >= 5 && strsim::normalized_damerau_levenshtein(a, b) >= 0.8 {
        return 0.8;
    }
    0.0
}

/// Token overlap (Dice, with fuzzy token equality) of two token lists.
pub(super) fn overlap(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut used = vec![false; b.len()];
    let mut total = 0.0;
    for x in a {
        let best = b
            .iter()
            .enumerate()
            .filter(|(j, _)| !used[*j])
            .map(|(j, y)| (j, token_match(x, y)))
            .max_by(|p, q| p.1.total_cmp(&q.1));
        if let Some((j, s)) = best
            && s > 0.0
        {
            used[j] = true;
            total += s;
        }
    }
    2.0 * total / (a.len() + b.len()) as f64
}

/// Similarity of two token lists: token overlap, or the normalised Damerau-Levenshtein
/// similarity of the joined words (weighted down: one letter apart is not one word apart).
pub(super) fn similarity(a: &[String], b: &[String]) -> f64 {
    let joined = |t: &[String]| t.iter().map(|s| singular(s)).collect::<Vec<_>>().join(" ");
    let (ja, jb) = (joined(a), joined(b));
    if ja == jb && !ja.is_empty() {
        return 1.0;
    }
    let mut sorted_a: Vec<&str> = a.iter().map(|s| singular(s)).collect();
    let mut sorted_b: Vec<&str> = b.iter().map(|s| singular(s)).collect();
    sorted_a.sort_unstable();
    sorted_b.sort_unstable();
    if sorted_a == sorted_b && !sorted_a.is_empty() {
        return 0.98;
    }
    overlap(a, b).max(0.5 * strsim::normalized_damerau_levenshtein(&ja, &jb))
}

/// The ways a column name may be read: the whole name, and for paths (`person/name/given`)
/// the last segment and the last two.
pub(super) fn header_variants(name: &str) -> Vec<(Vec<String>, f64)> {
    let clean = |s: &str| -> String {
        s.split('/')
            .map(|seg| {
                let seg = seg.trim_start_matches('@');
                seg.split('[').next().unwrap_or(seg).to_string()
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = vec![(tokens(&clean(name)), 1.0)];
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() > 1 {
        out.push((
            tokens(&clean(&segments[segments.len() - 2..].join("/"))),
            0.99,
        ));
        out.push((tokens(&clean(segments[segments.len() - 1])), 0.97));
    }
    out.retain(|(t, _)| !t.is_empty());
    out
}

/// How well a column's name names a field, and how (for the draft's comment).
pub(super) fn name_score(field: &FieldInfo, header: &str) -> (f64, String) {
    let (mut score, mut how) = name_score_inner(field, header);
    let described = described_score(field, header);
    if described > score {
        score = described;
        how = format!(
            "the element the schema's description names ({})",
            field.elements.own.join("/")
        );
    }
    match in_own_object(field, header) {
        Some(false) => return (0.0, format!("{how}, but under another object")),
        Some(true) if score > 0.0 => {
            score = (score + 0.04).min(1.0);
            how = format!("{how}, under its object");
        }
        _ => {}
    }
    let squashed: String = header
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect();
    let to_date = squashed.contains("ytd") || squashed.contains("todate");
    let wants_to_date = field.path.contains("year_to_date") || field.path.contains("ytd");
    if to_date && !wants_to_date {
        (score - 0.1, format!("{how}, year to date"))
    } else {
        (score, how)
    }
}

pub(super) fn name_score_inner(field: &FieldInfo, header: &str) -> (f64, String) {
    let mut best = (0.0, String::new());
    for (h, weight) in header_variants(header) {
        let mut consider = |score: f64, how: String| {
            if score * weight > best.0 {
                best = (score * weight, how);
            }
        };
        for p in &field.phrases {
            let s = similarity(p, &h);
            consider(s, format!("similarity {s:.2}"));
        }
        for (rank, syn) in field.synonyms.iter().enumerate() {
            if syn.is_empty() {
                continue;
            }
            let s = similarity(syn, &h);
            if s >= 0.98 {
                consider(
                    0.95 - 0.002 * rank as f64,
                    format!("synonym of {}", field.path),
                );
                continue;
            }
            // The header contains the synonym's words ("Invoice Nett Amount" ⊇ "net amount").
            let contained = syn
                .iter()
                .all(|t| h.iter().any(|x| token_match(t, x) >= 1.0));
            if contained && h.len() > syn.len() {
                let s = 0.5 + 0.35 * syn.len() as f64 / h.len() as f64;
                consider(
                    s,
                    format!(
                        "contains \"{}\", a synonym of {}",
                        syn.join(" "),
                        field.path
                    ),
                );
            }
            // Close to a synonym: only when it is close indeed.
            let s = 0.9 * s;
            if s >= 0.7 {
                consider(s, format!("similarity {s:.2} to \"{}\"", syn.join(" ")));
            }
        }
    }
    best
}

/// The enum value a code stands for, when there is exactly one candidate.
pub(super) fn map_code(code: &str, enums: &[String]) -> Option<String> {
    let c = code.trim().to_lowercase();
    let c_us = c.replace([' ', '-', '/'], "_");
    if c.is_empty() {
        return None;
    }
    if let Some(e) = enums
        .iter()
        .find(|e| **e == c_us || e.replace('_', " ") == c)
    {
        return Some(e.clone());
    }
    if let Some((_, e)) = CODE_SYNONYMS
        .iter()
        .find(|(k, v)| *k == c && enums.iter().any(|e| e == v))
    {
        return Some(e.to_string());
    }
    let unique = |cands: Vec<&String>| (cands.len() == 1).then(|| cands[0].clone());
    let c_bare = c_us.replace('_', "");
    if let Some(e) = unique(
        enums
            .iter()
            .filter(|e| e.starts_with(&c_us) || e.replace('_', "").starts_with(&c_bare))
            .collect(),
    ) {
        return Some(e);
    }
    if c.len() >= 3
        && let Some(e) = unique(
            enums
                .iter()
                .filter(|e| e.len() >= 3 && c.contains(&e.replace('_', " ")))
                .collect(),
        )
    {
        return Some(e);
    }
    let initials = |e: &str| -> String { e.split('_').filter_map(|p| p.chars().next()).collect() };
    unique(
        enums
            .iter()
            .filter(|e| e.contains('_') && initials(e) == c_bare)
            .collect(),
    )
}

/// A yes/no reading of a code: `Y`/`N`..., or the field's own word (`Vacant` for `vacant`).
pub(super) fn map_bool(code: &str, field: &FieldInfo) -> Option<bool> {
    if let Ok(b) = transforms::parse_boolean(code) {
        return Some(b);
    }
    let t = tokens(code);
    let negated = t.iter().any(|w| matches!(w.as_str(), "not" | "non" | "no"));
    let words: Vec<String> = t
        .into_iter()
        .filter(|w| !matches!(w.as_str(), "not" | "non" | "no"))
        .collect();
    let own = field.phrases.first().cloned().unwrap_or_default();
    let hit = !words.is_empty()
        && words
            .iter()
            .all(|w| own.iter().any(|o| token_match(w, o) > 0.0));
    hit.then_some(!negated)
}

/// How well a column's values suit a field: 1 a perfect fit, 0 no evidence, -1 wrong. Returns
/// the words for the draft's comment too.
pub(super) fn shape_fit(field: &FieldInfo, col: &ColumnProfile) -> (f64, String) {
    let shape = &col.shape;
    let described = shape.describe();
    if *shape == Shape::Empty {
        return (0.0, described);
    }
    let fit = match &field.kind {
        Kind::Constant(v) => {
            let want = v.as_str().unwrap_or_default().to_lowercase();
            if !col.codes.is_empty() && col.codes.iter().all(|c| c.to_lowercase() == want) {
                1.0
            } else {
                -1.0
            }
        }
        Kind::Date => match shape {
            Shape::Date { .. } => col.fit,
            _ => -1.0,
        },
        Kind::Pence => match shape {
            Shape::Money => 1.0,
            Shape::Integer | Shape::Decimal => 0.6,
            Shape::LeadingZeros => 0.4,
            _ => -1.0,
        },
        Kind::Integer => match shape {
            Shape::Integer => 1.0,
            Shape::LeadingZeros => 0.3,
            Shape::Money | Shape::Decimal => 0.2,
            _ => -1.0,
        },
        Kind::Number => match shape {
            Shape::Decimal | Shape::Integer => 1.0,
            Shape::Money => 0.7,
            _ => -1.0,
        },
        Kind::Boolean => match shape {
            Shape::Boolean => 1.0,
            _ if !col.codes.is_empty()
                && col.codes.iter().all(|c| map_bool(c, field).is_some()) =>
            {
                0.8
            }
            _ if !col.codes.is_empty() && col.codes.len() <= 3 => 0.2,
            _ => -0.7,
        },
        Kind::Enum(enums) => {
            if col.codes.is_empty() {
                -0.7
            } else {
                let mapped = col
                    .codes
                    .iter()
                    .filter(|c| map_code(c, enums).is_some())
                    .count() as f64;
                let share = mapped / col.codes.len() as f64;
                if share >= 1.0 { 1.0 } else { 2.0 * share - 1.0 }
            }
        }
        Kind::Nino => match shape {
            Shape::Nino => 1.0,
            Shape::Text => -0.3,
            _ => -0.8,
        },
        Kind::Postcode => match shape {
            Shape::Postcode => 1.0,
            Shape::Text => -0.3,
            _ => -0.8,
        },
        Kind::SortCode => match shape {
            Shape::SortCode => 1.0,
            _ if col.six_digits => 0.7,
            _ => -0.8,
        },
        Kind::Email => match shape {
            Shape::Email => 1.0,
            Shape::Text => -0.3,
            _ => -0.8,
        },
        Kind::OtherFormat(_) => match shape {
            Shape::Text | Shape::LeadingZeros | Shape::Integer => 0.2,
            _ => -0.5,
        },
        Kind::Text => match shape {
            Shape::Integer | Shape::LeadingZeros if field.id_like() => 0.3,
            Shape::Text => 0.2,
            Shape::LeadingZeros | Shape::Integer | Shape::Url | Shape::Email | Shape::Postcode => {
                0.1
            }
            Shape::Date { .. } | Shape::Money | Shape::Decimal => -0.4,
            _ => -0.2,
        },
    };
    let words = match &field.kind {
        Kind::Boolean if *shape != Shape::Boolean && !col.codes.is_empty() => {
            let pairs: Vec<String> = col
                .codes
                .iter()
                .take(6)
                .map(|c| match map_bool(c, field) {
                    Some(b) => format!("{c} → {b}"),
                    None => format!("{c} → ?"),
                })
                .collect();
            format!("codes {}", pairs.join(", "))
        }
        Kind::Enum(enums) if !col.codes.is_empty() => {
            let pairs: Vec<String> = col
                .codes
                .iter()
                .take(6)
                .map(|c| match map_code(c, enums) {
                    Some(e) => format!("{c} → {e}"),
                    None => format!("{c} → ?"),
                })
                .collect();
            format!("codes {}", pairs.join(", "))
        }
        _ => described,
    };
    (fit, words)
}

// ---------------------------------------------------------------------------------------------
// Proposing
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
pub(super) struct Proposal {
    pub(super) matches: Vec<FieldMatch>,
    pub(super) key: Vec<String>,
    pub(super) key_reason: String,
    pub(super) missing_required: Vec<String>,
    /// Required fields without a column, for the draft's TODO blocks.
    pub(super) todo_fields: Vec<String>,
    /// "One of" groups with no field filled.
    pub(super) todo_groups: Vec<Vec<String>>,
    pub(super) unmatched_optional: Vec<String>,
    pub(super) unused_columns: Vec<String>,
    /// Columns without a name and empty on every row, counted rather than listed.
    pub(super) unnamed_empty: usize,
    pub(super) notes: Vec<String>,
    pub(super) header_match: Option<String>,
}

pub(super) struct Candidate {
    pub(super) field: usize,
    pub(super) column: usize,
    pub(super) total: f64,
    pub(super) how: String,
    pub(super) values: String,
    pub(super) by_values: bool,
}

/// A column of a one-record sample (an XML or JSON document), filled: it cannot repeat there.
pub(super) fn one_record(col: &ColumnProfile) -> bool {
    col.rows == 1 && col.empty == 0
}

pub(super) fn propose(
    fields: &[FieldInfo],
    groups: &[Vec<String>],
    columns: &[ColumnProfile],
    sample: &Sample,
) -> Proposal {
    let mut p = Proposal::default();
    let usable = |c: &ColumnProfile| !(c.name.is_empty() && c.shape == Shape::Empty);
    let in_group = |path: &str| groups.iter().any(|g| g.iter().any(|f| f == path));
    // 1. Name-based candidates (with the values' support).
    let mut candidates = Vec::new();
    for (fi, f) in fields.iter().enumerate() {
        for (ci, c) in columns.iter().enumerate() {
            if !usable(c) {
                continue;
            }
            let (name, how) = if sample.table.named {
                name_score(f, &c.name)
            } else {
                (0.0, String::new())
            };
            let (shape, values) = shape_fit(f, c);
            let ok = (name >= 0.7 && shape > -0.5) || (name >= 0.55 && shape >= 0.5);
            if ok {
                candidates.push(Candidate {
                    field: fi,
                    column: ci,
                    total: name + 0.35 * shape,
                    how,
                    values,
                    by_values: false,
                });
            }
        }
    }
    candidates.sort_by(|a, b| b.total.total_cmp(&a.total));
    let mut field_taken: Vec<Option<Candidate>> = fields.iter().map(|_| None).collect();
    let mut column_taken = vec![false; columns.len()];
    for c in candidates {
        if field_taken[c.field].is_none() && !column_taken[c.column] {
            column_taken[c.column] = true;
            let fi = c.field;
            field_taken[fi] = Some(c);
        }
    }
    // 2. By values alone: distinctive shapes (and dates or money only for required fields).
    let mut order: Vec<usize> = (0..fields.len()).collect();
    order.sort_by_key(|i| !(fields[*i].required || in_group(&fields[*i].path)));
    for fi in order {
        if field_taken[fi].is_some() {
            continue;
        }
        let f = &fields[fi];
        let needed = f.required || in_group(&f.path);
        let distinctive = match &f.kind {
            Kind::Nino | Kind::Postcode | Kind::SortCode | Kind::Email => true,
            Kind::Enum(_) => true,
            Kind::Date | Kind::Pence => needed,
            _ => false,
        };
        if !distinctive {
            continue;
        }
        let fits: Vec<(usize, f64, String, f64, String)> = columns
            .iter()
            .enumerate()
            .filter(|(ci, c)| !column_taken[*ci] && usable(c))
            .filter_map(|(ci, c)| {
                let (shape, values) = shape_fit(f, c);
                let strong = match (&f.kind, &c.shape) {
                    (Kind::Enum(_), _) => shape >= 1.0 && c.codes.len() >= 2,
                    (Kind::Pence, s) => *s == Shape::Money,
                    (Kind::SortCode, s) => *s == Shape::SortCode,
                    _ => shape >= 0.9,
                };
                if !strong {
                    return None;
                }
                let (name, how) = if sample.table.named {
                    name_score(f, &c.name)
                } else {
                    (0.0, String::new())
                };
                Some((ci, shape, values, name, how))
            })
            .collect();
        // Only when the values leave no doubt: one column of that shape left.
        let pick = if fits.len() == 1 {
            fits.into_iter().next()
        } else {
            None
        };
        if let Some((ci, shape, values, name, how)) = pick {
            column_taken[ci] = true;
            field_taken[fi] = Some(Candidate {
                field: fi,
                column: ci,
                total: name.min(0.5) + 0.35 * shape,
                how,
                values,
                by_values: true,
            });
        }
    }
    // 3. The key.
    let key_candidates: Vec<(usize, &Candidate)> = field_taken
        .iter()
        .enumerate()
        .filter_map(|(fi, c)| c.as_ref().map(|c| (fi, c)))
        .filter(|(fi, c)| {
            let f = &fields[*fi];
            !f.pii
                && matches!(f.kind, Kind::Text | Kind::Integer | Kind::OtherFormat(_))
                && f.id_like()
                && (columns[c.column].unique || one_record(&columns[c.column]))
        })
        .collect();
    // The schema's own identifiers first (required, or one of an "at least one of" group),
    // then a column filled on every row; a few empty rows are allowed (they will fail).
    let best_key = key_candidates
        .iter()
        .filter(|(_, c)| columns[c.column].empty_share <= 0.1)
        .max_by_key(|(fi, c)| {
            let f = &fields[*fi];
            (
                f.required,
                in_group(&f.path),
                columns[c.column].empty == 0,
                std::cmp::Reverse(*fi),
            )
        });
    let mut file_line = false;
    let source_reference = fields.iter().position(|f| f.path == "source_reference");
    if let Some((fi, c)) = best_key {
        let col = &columns[c.column];
        p.key = vec![fields[*fi].path.clone()];
        p.key_reason = if one_record(col) {
            format!(
                "the sample has one record: \"{}\" is taken to identify it; check with a larger sample",
                col.name
            )
        } else if col.empty == 0 {
            format!(
                "\"{}\" is filled and unique on all {} sample rows",
                col.name, col.rows
            )
        } else {
            format!(
                "\"{}\" is unique where filled, but empty on {} of {} sample rows: those rows will fail",
                col.name, col.empty, col.rows
            )
        };
        // Records per pay period: add the period's end when the entity has one.
        if let Some(end) = fields.iter().enumerate().find(|(i, f)| {
            (f.required || f.required_in_parent)
                && f.kind == Kind::Date
                && f.path.contains("period")
                && f.path.ends_with("end")
                && field_taken[*i].is_some()
        }) {
            p.key.push(end.1.path.clone());
            p.key_reason
                .push_str(&format!(", with {} for one record per period", end.1.path));
        }
    } else if let Some(sr) = source_reference {
        if field_taken[sr].is_none() {
            file_line = true;
        }
        p.key = vec!["source_reference".into()];
        p.key_reason = if key_candidates.is_empty() {
            "no column identifies a row (none is an identifier that is unique over the sample): the file name and line do".into()
        } else {
            let names: Vec<String> = key_candidates
                .iter()
                .map(|(_, c)| format!("\"{}\"", columns[c.column].name))
                .collect();
            format!(
                "{} is unique but often empty: the file name and line identify a row instead",
                names.join(", ")
            )
        };
    } else {
        let repeated: Vec<String> = field_taken
            .iter()
            .enumerate()
            .filter_map(|(fi, c)| c.as_ref().map(|c| (fi, c)))
            .filter(|(fi, _)| fields[*fi].id_like() && !fields[*fi].pii)
            .map(|(_, c)| format!("\"{}\"", columns[c.column].name))
            .collect();
        p.key_reason = if repeated.is_empty() {
            "no mapped column identifies a record".into()
        } else {
            format!(
                "{} repeat(s) over the sample, so cannot identify a record alone",
                repeated.join(", ")
            )
        };
    }
    if let Some(sr) = source_reference
        && fields[sr].required
        && field_taken[sr].is_none()
    {
        file_line = true;
    }
    // 4. The matches, in schema order.
    let mut group_required: HashSet<String> = HashSet::new();
    for g in groups {
        // An alternative is filled by its field, or (an object) by any field inside it.
        let fills =
            |alt: &str, f: &FieldInfo| f.path == alt || f.path.starts_with(&format!("{alt}."));
        let filled = g.iter().find(|alt| {
            fields.iter().enumerate().any(|(i, f)| {
                fills(alt, f)
                    && (field_taken[i].is_some()
                        || matches!(f.kind, Kind::Constant(_))
                        || (file_line && f.path == "source_reference"))
            })
        });
        match filled {
            Some(alt) => {
                // The filled alternative is required; inside an object, the fields it requires.
                for (i, f) in fields.iter().enumerate() {
                    if f.path == *alt
                        || (fills(alt, f) && f.required_in_parent && field_taken[i].is_some())
                    {
                        group_required.insert(f.path.clone());
                    }
                }
            }
            None => {
                p.todo_groups.push(g.clone());
                p.missing_required.push(format!("one of {}", g.join(", ")));
            }
        }
    }
    for (fi, f) in fields.iter().enumerate() {
        let required = f.required || p.key.contains(&f.path) || group_required.contains(&f.path);
        if let Some(c) = &field_taken[fi] {
            let col = &columns[c.column];
            let (transforms, todo) = transforms_for(f, Some(col));
            let mut why = if c.by_values {
                format!(
                    "header \"{}\": matched by its values only ({}), check",
                    col.name, c.values
                )
            } else {
                format!("header \"{}\" ({}), {}", col.name, c.how, c.values)
            };
            if col.empty_share > 0.0 {
                let _ = write!(why, ", {:.0}% empty", col.empty_share * 100.0);
            }
            let null_if: Vec<String> = col
                .placeholders
                .iter()
                .filter(|ph| {
                    !(f.kind == Kind::Pence && MONEY_ZEROS.contains(&ph.to_lowercase().as_str()))
                })
                .cloned()
                .collect();
            p.matches.push(FieldMatch {
                field: f.path.clone(),
                source: MatchedSource::Column {
                    index: col.index,
                    name: col.name.clone(),
                },
                score: (c.total * 100.0).round() / 100.0,
                required,
                transforms,
                null_if,
                why,
                todo,
            });
            continue;
        }
        if f.path == "source_reference" && file_line {
            p.matches.push(FieldMatch {
                field: f.path.clone(),
                source: MatchedSource::FileLine,
                score: 1.0,
                required: true,
                transforms: Vec::new(),
                null_if: Vec::new(),
                why: "no column identifies a row: the file name and line do".into(),
                todo: Vec::new(),
            });
            continue;
        }
        if let Kind::Constant(v) = &f.kind {
            p.matches.push(FieldMatch {
                field: f.path.clone(),
                source: MatchedSource::Literal { value: v.clone() },
                score: 1.0,
                required: false,
                transforms: Vec::new(),
                null_if: Vec::new(),
                why: format!("the schema allows only {v}"),
                todo: Vec::new(),
            });
            continue;
        }
        if f.required {
            p.todo_fields.push(f.path.clone());
            p.missing_required.push(f.path.clone());
        } else if !in_group(&f.path) || !p.todo_groups.iter().any(|g| g.contains(&f.path)) {
            p.unmatched_optional.push(f.path.clone());
        }
    }
    // 5. Columns left over.
    for (ci, c) in columns.iter().enumerate() {
        if column_taken[ci] {
            continue;
        }
        if c.name.is_empty() && c.shape == Shape::Empty {
            p.unnamed_empty += 1;
        } else if c.name.is_empty() {
            p.unused_columns.push(format!("column {}", ci + 1));
        } else {
            p.unused_columns.push(c.name.clone());
        }
    }
    // 6. Prefer a required field's column for `header_match`.
    if sample.guess.header_match.is_some() {
        let usable_cells = header_cells_usable(&sample.table.header, &[]);
        let preferred = p
            .matches
            .iter()
            .filter(|m| m.required)
            .find_map(|m| match &m.source {
                MatchedSource::Column { index, .. } if usable_cells.contains(index) => Some(*index),
                _ => None,
            });
        p.header_match = preferred
            .map(|i| format!("^{}$", regex::escape(&sample.table.header[i])))
            .or_else(|| sample.guess.header_match.clone());
    }
    let by_values: Vec<&str> = p
        .matches
        .iter()
        .filter(|m| m.score < 0.6 && matches!(m.source, MatchedSource::Column { .. }))
        .map(|m| m.field.as_str())
        .collect();
    if !by_values.is_empty() {
        p.notes.push(format!(
            "matched by their values only, check: {}",
            by_values.join(", ")
        ));
    }
    p
}
