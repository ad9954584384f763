//! Drafting a mapping from a sample export.
//!
//! [`scaffold`] reads a sample file; everything else works on bytes ([`scaffold_bytes`]) so that
//! it can be tested without files. The steps, each a function of its own:
//!
//! 1. the format, by the first bytes ([`sniff_format`]): gzip is unwrapped; `PK`/OLE bytes are a
//!    spreadsheet, `{`/`[` JSON (or NDJSON), `<` XML, aligned lines without delimiters
//!    fixed-width, anything else CSV;
//! 2. for CSV, the encoding ([`detect_encoding`]), the delimiter ([`detect_delimiter`]: the one
//!    giving the most consistent field counts), the header row after any title rows
//!    ([`find_header`]) and a trailer ([`detect_trailer`]); spreadsheets, JSON and XML are read
//!    with the decoders the pipeline uses;
//! 3. a profile of each column over the first [`PROFILE_ROWS`] rows ([`profile_column`]): the
//!    share of empty values, placeholders (`NA`), and the shape of the values (dates and their
//!    format, money, numbers, yes/no, NI numbers, postcodes, sort codes, codes with leading
//!    zeros, emails);
//! 4. for each canonical field, a score per column from the header (normalised, abbreviations
//!    expanded, Damerau-Levenshtein and token overlap, a synonym table) and from the values (a
//!    date field wants dates, a `_pence` field money, a `uk-nino` field NI numbers); columns are
//!    assigned greedily, best score first, each column once;
//! 5. the draft, in the format of `docs/mapping-format.md`, every entry commented with why it was
//!    chosen, and every required field without a column a commented-out `TODO` block.

mod documents;
mod file_name;
mod matching;
mod null_reasons;
mod profile;
mod shapes;
mod synonyms;
#[cfg(test)]
mod tests;
mod write;

use std::path::Path;

use serde::Serialize;

use super::ToolkitError;
use crate::canonical::Entity;

pub use documents::{guess_record_path, guess_records_at};
pub use matching::{FieldMatch, MatchedSource};
use matching::{any_of_groups, entity_fields, propose};
use profile::read_sample;
pub use profile::{
    DetectedFormat, PROFILE_ROWS, SourceGuess, TrailerGuess, detect_delimiter, detect_encoding,
    detect_trailer, find_header, sniff_format,
};
pub use shapes::{ColumnProfile, DATE_FORMATS, Shape, profile_column};
use write::{RenderInput, draft_id, render};

/// A draft mapping and what was found on the way.
#[derive(Debug, Clone, Serialize)]
pub struct Scaffold {
    /// The draft's mapping id: `<council>-<entity short name>`.
    pub mapping_id: String,
    /// The canonical entity.
    pub entity: String,
    /// The sample's file name.
    pub file: String,
    /// The format and its options, as detected.
    pub source: SourceGuess,
    /// A profile of each column of the sample.
    pub columns: Vec<ColumnProfile>,
    /// The canonical fields the draft fills, in schema order.
    pub fields: Vec<FieldMatch>,
    /// The proposed record key (empty: no guess, the draft has a TODO).
    pub key: Vec<String>,
    /// Why that key.
    pub key_reason: String,
    /// Required fields (and "one of" groups) no column was found for.
    pub missing_required: Vec<String>,
    /// Optional fields no column was found for.
    pub unmatched_optional: Vec<String>,
    /// Columns the draft does not use.
    pub unused_columns: Vec<String>,
    /// Findings in words (format, encoding, quirks).
    pub notes: Vec<String>,
    /// The draft mapping file.
    pub yaml: String,
}

/// Reads `sample` and drafts a mapping of it to `entity` for `council`.
pub fn scaffold(sample: &Path, entity: &Entity, council: &str) -> Result<Scaffold, ToolkitError> {
    let bytes = std::fs::read(sample).map_err(|source| ToolkitError::Io {
        file: sample.display().to_string(),
        source,
    })?;
    let file = sample
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| sample.display().to_string());
    scaffold_bytes(&file, &bytes, entity, council)
}

/// Drafts a mapping of the sample `bytes` (named `file`) to `entity` for `council`.
pub fn scaffold_bytes(
    file: &str,
    bytes: &[u8],
    entity: &Entity,
    council: &str,
) -> Result<Scaffold, ToolkitError> {
    let sample = read_sample(file, bytes)?;
    let columns: Vec<ColumnProfile> = (0..sample.table.header.len())
        .map(|i| {
            let values: Vec<&str> = sample
                .table
                .rows
                .iter()
                .map(|r| r.get(i).map(String::as_str).unwrap_or(""))
                .collect();
            profile_column(i, &sample.table.header[i], &values)
        })
        .collect();
    let fields = entity_fields(entity);
    let groups = any_of_groups(&entity.schema);
    let proposal = propose(&fields, &groups, &columns, &sample);
    let mapping_id = draft_id(council, &entity.short_name, file);
    let mut yaml = render(&RenderInput {
        file,
        mapping_id: &mapping_id,
        entity: &entity.name,
        sample: &sample,
        fields: &fields,
        proposal: &proposal,
    });
    let mut notes = sample.notes.clone();
    notes.extend(proposal.notes.iter().cloned());
    let mut missing_required = proposal.missing_required.clone();
    let mut matches = proposal.matches.clone();
    file_name::supply(
        file,
        entity,
        &mut yaml,
        &mut matches,
        &mut missing_required,
        &mut notes,
    );
    null_reasons::supply(entity, &sample.table.rows, &matches, &mut yaml, &mut notes);
    Ok(Scaffold {
        mapping_id,
        entity: entity.name.clone(),
        file: file.to_string(),
        source: sample.guess.clone(),
        columns,
        fields: matches,
        key: proposal.key.clone(),
        key_reason: proposal.key_reason.clone(),
        missing_required,
        unmatched_optional: proposal.unmatched_optional.clone(),
        unused_columns: proposal.unused_columns.clone(),
        notes,
        yaml,
    })
}
