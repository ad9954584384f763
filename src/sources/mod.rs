//! Pulling raw files in. This release reads drop folders (the council's SFTP upload folder):
//! every file matching a feed's glob that has finished arriving, oldest name first. A file is
//! read, then moved to the feed's `archive` (or `rejected`) folder when one is configured; it is
//! never edited or deleted.

pub mod http;
pub mod sftp;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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
    /// A file cannot be read or moved.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Marker files a sender may write next to a file to say it is complete.
const MARKERS: [&str; 2] = ["done", "ok"];

/// A feed's drop folder.
#[derive(Debug, Clone)]
pub struct DropFolder {
    /// Glob of the files to take.
    pub pattern: String,
    /// A file is complete once it has not changed for this long (or has a marker).
    pub settle: Duration,
    /// Take a file only when its `.done`/`.ok` marker exists.
    pub require_marker: bool,
    /// Where files go once read (none: they stay, and the sha256 check skips them next time).
    pub archive: Option<PathBuf>,
    /// Where files go that could not be read at all.
    pub rejected: Option<PathBuf>,
}

/// A file in the drop folder that is not taken yet, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NotReady {
    /// The file.
    pub path: PathBuf,
    /// Why it waits.
    pub reason: String,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SourceError + use<> {
    let path = path.to_path_buf();
    move |source| SourceError::Io {
        action,
        path,
        source,
    }
}

fn marker(path: &Path) -> Option<PathBuf> {
    MARKERS
        .iter()
        .map(|m| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{m}"));
            PathBuf::from(name)
        })
        .find(|p| p.is_file())
}

impl DropFolder {
    /// A drop folder that takes every matching file as it is (no settling, no moves).
    pub fn plain(pattern: impl Into<String>) -> Self {
        Self {
            pattern: pattern.into(),
            settle: Duration::ZERO,
            require_marker: false,
            archive: None,
            rejected: None,
        }
    }

    /// The files ready to take, sorted by name, and those still arriving.
    pub fn scan(&self) -> Result<(Vec<PathBuf>, Vec<NotReady>), SourceError> {
        let paths = glob::glob(&self.pattern).map_err(|e| SourceError::Pattern {
            pattern: self.pattern.clone(),
            message: e.to_string(),
        })?;
        let mut files: Vec<PathBuf> = paths
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .filter(|p| {
                !p.extension()
                    .is_some_and(|e| MARKERS.iter().any(|m| e == *m))
            })
            .collect();
        files.sort();
        let now = SystemTime::now();
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for path in files {
            if marker(&path).is_some() {
                ready.push(path);
                continue;
            }
            if self.require_marker {
                waiting.push(NotReady {
                    path,
                    reason: "no .done or .ok marker yet".into(),
                });
                continue;
            }
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map_err(io("read", &path))?;
            let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
            if age >= self.settle {
                ready.push(path);
            } else {
                waiting.push(NotReady {
                    reason: format!(
                        "changed {}s ago; taken once unchanged for {}s",
                        age.as_secs(),
                        self.settle.as_secs()
                    ),
                    path,
                });
            }
        }
        Ok((ready, waiting))
    }

    /// Moves a file that has been read (`rejected`: could not be read at all) to the archive
    /// or rejected folder, with a timestamp so that a later file of the same name never
    /// overwrites it. Its marker goes with it. Returns where it went, if anywhere.
    pub fn put_away(&self, file: &RawFile, rejected: bool) -> Result<Option<PathBuf>, SourceError> {
        let Some(dir) = (if rejected {
            &self.rejected
        } else {
            &self.archive
        }) else {
            return Ok(None);
        };
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let target = dir.join(format!("{stamp}_{}", file.name));
        move_file(&file.path, &target)?;
        if let Some(m) = marker(&file.path) {
            let name = m
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            move_file(&m, &dir.join(format!("{stamp}_{name}")))?;
        }
        Ok(Some(target))
    }
}

/// Renames, or copies then removes the original when the folders are on different disks.
fn move_file(from: &Path, to: &Path) -> Result<(), SourceError> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map_err(io("copy", from))?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(io("sync", to))?;
    std::fs::remove_file(from).map_err(io("remove", from))
}

/// Describes a file, hashing it in a streaming pass.
pub fn describe(path: &Path) -> Result<RawFile, SourceError> {
    let mut file = std::fs::File::open(path).map_err(io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io("read", path))?;
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

/// Opens a file for decoding.
pub fn open(file: &RawFile) -> Result<impl Read + 'static, SourceError> {
    std::fs::File::open(&file.path).map_err(io("open", &file.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_wait_until_settled_or_marked_and_are_archived_with_their_marker() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::write(inbox.join("a.csv"), "x").unwrap();
        std::fs::write(inbox.join("b.csv"), "y").unwrap();
        std::fs::write(inbox.join("b.csv.done"), "").unwrap();
        let folder = DropFolder {
            pattern: inbox.join("*.csv*").to_string_lossy().into_owned(),
            settle: Duration::from_secs(3600),
            require_marker: false,
            archive: Some(dir.path().join("archive")),
            rejected: Some(dir.path().join("rejected")),
        };
        let (ready, waiting) = folder.scan().unwrap();
        assert_eq!(
            ready,
            vec![inbox.join("b.csv")],
            "the marked file is taken; the marker itself is not a file to read"
        );
        assert_eq!(waiting.len(), 1);
        assert!(
            waiting[0].reason.contains("unchanged for 3600s"),
            "{}",
            waiting[0].reason
        );

        let raw = describe(&ready[0]).unwrap();
        let moved = folder.put_away(&raw, false).unwrap().unwrap();
        assert!(
            moved.starts_with(dir.path().join("archive"))
                && moved.to_string_lossy().ends_with("_b.csv")
        );
        assert_eq!(
            std::fs::read_to_string(&moved).unwrap(),
            "y",
            "moved, not altered"
        );
        assert!(!inbox.join("b.csv").exists() && !inbox.join("b.csv.done").exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("archive"))
                .unwrap()
                .count(),
            2
        );

        let settled = DropFolder {
            settle: Duration::ZERO,
            ..folder.clone()
        };
        assert_eq!(settled.scan().unwrap().0, vec![inbox.join("a.csv")]);
        let marker_only = DropFolder {
            require_marker: true,
            settle: Duration::ZERO,
            ..folder
        };
        assert!(marker_only.scan().unwrap().0.is_empty());
    }
}
