//! Limits on what one file may make the bridge hold or do, so that a broken or hostile export
//! cannot take the shared bridge down for every council: decompressed size and compression
//! ratio, bytes per line, record and field, columns, records, nesting depth, attributes,
//! spreadsheet cells and shared strings.
//!
//! Each limit is a setting of the feed (`limits:` in `council.yaml`) with a safe default. A
//! limit is enforced while reading (never "inflate first, check afterwards"): readers count bytes
//! as they pass and stop with [`LimitExceeded`], so memory stays bounded by the limits whatever
//! the file. A limit a single row passes (a field, the columns of one row) fails that row; a
//! limit the file passes (its size, a line or record too long to find the next one safely, its
//! header, its depth) fails the file. Either way the message names the limit and the setting
//! that raises it, never a value.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The limits of one feed (`limits:` in the feed of `council.yaml`); every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Bytes a compressed (gzip) file may inflate to.
    pub max_decompressed_bytes: u64,
    /// How many times larger than its compressed bytes a file may inflate (checked once it has
    /// inflated past 16 MiB, so small files of repeated text pass).
    pub max_compression_ratio: u64,
    /// Bytes in one physical line (CSV, fixed-width, NDJSON).
    pub max_line_bytes: u64,
    /// Bytes the decoder may read for one record (a CSV row with its quoted line breaks, one
    /// XML or JSON record, the text between two records). Bounds memory per record.
    pub max_record_bytes: u64,
    /// Bytes in one field (value); a longer value fails its row.
    pub max_field_bytes: u64,
    /// Columns in a header, or in one row (a row with more fails).
    pub max_columns: usize,
    /// Records (detail rows, control rows and failed rows) in one file.
    pub max_records: u64,
    /// Nesting depth of XML elements and JSON arrays and objects.
    pub max_depth: usize,
    /// Attributes on one XML element.
    pub max_attributes: usize,
    /// Bytes of a spreadsheet file (spreadsheets are read whole).
    pub max_workbook_bytes: u64,
    /// Cells in a spreadsheet (all its sheets).
    pub max_cells: u64,
    /// Entries in a workbook's shared-string table.
    pub max_shared_strings: u64,
}

const MIB: u64 = 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: 4 * 1024 * MIB,
            max_compression_ratio: 200,
            max_line_bytes: 8 * MIB,
            max_record_bytes: 8 * MIB,
            max_field_bytes: MIB,
            max_columns: 10_000,
            max_records: 20_000_000,
            max_depth: 128,
            max_attributes: 256,
            max_workbook_bytes: 256 * MIB,
            max_cells: 100_000_000,
            max_shared_strings: 10_000_000,
        }
    }
}

/// Inflated bytes below which the compression ratio is not judged.
pub const RATIO_GRACE_BYTES: u64 = 16 * MIB;

/// A limit was passed. Says what, the limit, and the setting that raises it; never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} is over the limit of {limit} (raise `limits.{setting}` in the feed of council.yaml if the file is genuine)"
)]
pub struct LimitExceeded {
    /// What passed it (`a line`, `the decompressed data`...), with where when known.
    pub what: String,
    /// The limit.
    pub limit: u64,
    /// The setting (`max_line_bytes`).
    pub setting: &'static str,
}

impl LimitExceeded {
    /// A limit passed.
    pub fn new(what: impl Into<String>, limit: impl TryInto<u64>, setting: &'static str) -> Self {
        Self {
            what: what.into(),
            limit: limit.try_into().unwrap_or(u64::MAX),
            setting,
        }
    }

    /// As an I/O error, for readers; [`LimitExceeded::from_io`] finds it again.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }

    /// The limit carried by an I/O error made with [`LimitExceeded::into_io`], if it is one
    /// (also when a parser wrapped it again, keeping only its message).
    pub fn from_io(e: &std::io::Error) -> Option<LimitExceeded> {
        if let Some(l) = e.get_ref().and_then(|i| i.downcast_ref::<LimitExceeded>()) {
            return Some(l.clone());
        }
        None
    }
}

/// Shared byte counters of a [`Meter`]: total bytes read, and where the current window (one
/// record) started.
#[derive(Debug, Default)]
pub struct MeterState {
    total: AtomicU64,
    mark: AtomicU64,
}

impl MeterState {
    /// Starts a new window (a record was handed over): bytes read so far no longer count.
    pub fn mark(&self) {
        self.mark
            .store(self.total.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Bytes read in all.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// A reader that fails with [`LimitExceeded`] once more than `window` bytes were read since the
/// last [`MeterState::mark`]: a record's bytes can never grow past the limit in a parser's buffer.
pub struct Meter<R> {
    inner: R,
    state: Arc<MeterState>,
    window: u64,
    what: &'static str,
    setting: &'static str,
}

impl<R> Meter<R> {
    /// Wraps `inner`; the returned state is marked by whoever hands records over.
    pub fn new(
        inner: R,
        window: u64,
        what: &'static str,
        setting: &'static str,
    ) -> (Self, Arc<MeterState>) {
        let state = Arc::new(MeterState::default());
        (
            Self {
                inner,
                state: state.clone(),
                window,
                what,
                setting,
            },
            state,
        )
    }
}

impl<R: Read> Read for Meter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let total = self.state.total.load(Ordering::Relaxed);
        let used = total - self.state.mark.load(Ordering::Relaxed);
        if used > self.window {
            return Err(LimitExceeded::new(self.what, self.window, self.setting).into_io());
        }
        // Never read far past the window in one go.
        let room = (self.window - used + 1).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room.max(1)])?;
        self.state.total.store(total + n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A reader that counts the bytes passing through it (the compressed side of a decompressor).
pub struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R> Counted<R> {
    /// Wraps `inner`, counting into `count`.
    pub fn new(inner: R, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A decompressor's output, stopped once it passes `max_decompressed_bytes` or inflates more
/// than `max_compression_ratio` times its input (past [`RATIO_GRACE_BYTES`]).
pub struct Inflation<R> {
    inner: R,
    compressed: Arc<AtomicU64>,
    out: u64,
    max_bytes: u64,
    max_ratio: u64,
}

impl<R> Inflation<R> {
    /// Wraps the decompressor `inner`, whose input is counted in `compressed`.
    pub fn new(inner: R, compressed: Arc<AtomicU64>, limits: &Limits) -> Self {
        Self {
            inner,
            compressed,
            out: 0,
            max_bytes: limits.max_decompressed_bytes,
            max_ratio: limits.max_compression_ratio,
        }
    }
}

impl<R: Read> Read for Inflation<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.out > self.max_bytes {
            return Err(LimitExceeded::new(
                "the decompressed data",
                self.max_bytes,
                "max_decompressed_bytes",
            )
            .into_io());
        }
        let room = (self.max_bytes - self.out + 1).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room.max(1)])?;
        self.out += n as u64;
        if self.out > self.max_bytes {
            return Err(LimitExceeded::new(
                "the decompressed data",
                self.max_bytes,
                "max_decompressed_bytes",
            )
            .into_io());
        }
        let input = self.compressed.load(Ordering::Relaxed).max(1);
        if self.out > RATIO_GRACE_BYTES && self.out / input > self.max_ratio {
            return Err(LimitExceeded::new(
                format!(
                    "the compression ratio ({}:1 after {} MiB inflated)",
                    self.out / input,
                    self.out / MIB
                ),
                self.max_ratio,
                "max_compression_ratio",
            )
            .into_io());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_stops_a_window_and_a_mark_opens_the_next() {
        let (mut m, state) = Meter::new(&[b'x'; 100][..], 10, "a record", "max_record_bytes");
        let mut buf = [0u8; 64];
        let n = m.read(&mut buf).unwrap();
        assert_eq!(n, 11);
        let e = m.read(&mut buf).unwrap_err();
        let l = LimitExceeded::from_io(&e).unwrap();
        assert_eq!(l.setting, "max_record_bytes");
        assert!(e.to_string().contains("limits.max_record_bytes"), "{e}");
        state.mark();
        assert_eq!(m.read(&mut buf).unwrap(), 11);
    }
}
