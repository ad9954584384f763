//! Pulling raw files in. This release reads drop folders: every file matching a feed's glob,
//! oldest name first. Files are read, never moved, changed or deleted.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A file that arrived for a feed.
#[derive(Debug, Clone)]
pub struct RawFile {
    /// Full path.
    pub path: PathBuf,
    /// File name as received.
    pub name: String,
    /// sha256 of the bytes, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A drop folder that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The glob is not valid.
    #[error("input pattern {pattern}: {message}")]
    Pattern {
        /// The glob.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Lists the files matching `pattern`, sorted by name.
pub fn list(pattern: &str) -> Result<Vec<PathBuf>, SourceError> {
    let paths = glob::glob(pattern).map_err(|e| SourceError::Pattern {
        pattern: pattern.to_string(),
        message: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = paths
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Describes a file, hashing it in a streaming pass.
pub fn describe(path: &Path) -> Result<RawFile, SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(RawFile {
        path: path.to_path_buf(),
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

/// Opens a file for decoding (buffered).
pub fn open(file: &RawFile) -> Result<impl Read + 'static, SourceError> {
    std::fs::File::open(&file.path)
        .map(|f| std::io::BufReader::with_capacity(64 * 1024, f))
        .map_err(|source| SourceError::Io {
            path: file.path.clone(),
            source,
        })
}
