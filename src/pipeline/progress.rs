//! Progress of a run, for a person watching a large file being read (`run` on a terminal draws
//! it with indicatif). One sink per process; without one, reporting costs nothing.

use std::sync::OnceLock;

/// Receives progress as files are read.
pub trait Progress: Send + Sync {
    /// A file of a feed starts being read.
    fn file_started(&self, council: &str, feed: &str, file: &str, bytes: u64);
    /// Rows read so far in that file (after each chunk written to the store).
    fn rows_read(&self, rows: u64);
    /// The file is done (processed, held, failed or abandoned).
    fn file_finished(&self);
}

static SINK: OnceLock<Box<dyn Progress>> = OnceLock::new();

/// Sets this process's progress sink (only the first call counts).
pub fn set(sink: Box<dyn Progress>) {
    let _ = SINK.set(sink);
}

pub(super) fn file_started(council: &str, feed: &str, file: &str, bytes: u64) {
    if let Some(s) = SINK.get() {
        s.file_started(council, feed, file, bytes);
    }
}

pub(super) fn rows_read(rows: u64) {
    if let Some(s) = SINK.get() {
        s.rows_read(rows);
    }
}

pub(super) fn file_finished() {
    if let Some(s) = SINK.get() {
        s.file_finished();
    }
}
