//! The onboarding toolkit: helps an officer write a council's first mapping.
//!
//! [`scaffold`] reads a sample export and drafts a mapping file for a canonical entity: it
//! detects the format and its options (encoding, delimiter, title rows, trailer), profiles each
//! column (empty share, dates, money, codes, NI numbers, postcodes...), proposes a source column
//! for each canonical field (header similarity, synonyms, value shape) and writes the draft in
//! the mapping format of `docs/mapping-format.md`, every guess commented and every gap a `TODO`.
//! [`preview`] runs a (draft) mapping over the first records of a sample and shows, record by
//! record, the source values beside the canonical values and what failed.
//!
//! The toolkit sits beside the pipeline, not in it: it uses `formats`, `mapping` and `canonical`
//! as the pipeline does, keeps nothing, and shows sample values (an officer runs it on their own
//! sample); nothing here is logged.

pub mod preview;
pub mod scaffold;

use crate::formats::FormatError;
use crate::mapping::MappingError;

/// Why a scaffold or a preview could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ToolkitError {
    /// The sample could not be read.
    #[error("cannot read the sample {file}: {source}")]
    Io {
        /// The sample file.
        file: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The sample holds nothing to work from.
    #[error("{file}: {message}")]
    Sample {
        /// The sample file.
        file: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The sample cannot be decoded with the mapping's source options.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The mapping does not fit the sample (a mapped column is missing).
    #[error("{0}")]
    Mapping(#[from] MappingError),
}
