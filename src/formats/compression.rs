//! Compressed exports: a file is gzip when its first bytes say so, whatever its name says
//! (councils publish gzip bytes named `.csv`).

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::limits::{Counted, Inflation, Limits};

/// gzip's magic number.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Wraps `bytes` in a gzip decoder when they start with gzip's magic number; otherwise returns
/// them as they are. Reads ahead two bytes, nothing more.
pub fn sniff(bytes: impl Read + 'static) -> std::io::Result<(Box<dyn Read>, bool)> {
    sniff_limited(bytes, &Limits::default())
}

/// [`sniff`] with a feed's limits: the decompressed stream stops with
/// [`super::limits::LimitExceeded`] as soon as it passes `max_decompressed_bytes` or inflates
/// more than `max_compression_ratio` times (never inflated first and judged afterwards).
pub fn sniff_limited(
    bytes: impl Read + 'static,
    limits: &Limits,
) -> std::io::Result<(Box<dyn Read>, bool)> {
    let compressed = Arc::new(AtomicU64::new(0));
    let mut reader = BufReader::with_capacity(64 * 1024, Counted::new(bytes, compressed.clone()));
    let head = reader.fill_buf()?;
    if head.len() >= 2 && head[..2] == GZIP_MAGIC {
        let gz = flate2::bufread::MultiGzDecoder::new(reader);
        Ok((Box::new(Inflation::new(gz, compressed, limits)), true))
    } else {
        Ok((Box::new(reader), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_is_recognised_by_its_bytes_and_plain_text_passes_through() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"a,b\n1,2\n").unwrap();
        let (mut r, compressed) = sniff(std::io::Cursor::new(gz.finish().unwrap())).unwrap();
        let mut text = String::new();
        r.read_to_string(&mut text).unwrap();
        assert!(compressed);
        assert_eq!(text, "a,b\n1,2\n");

        let (mut r, compressed) = sniff(&b"a,b\n"[..]).unwrap();
        let mut text = String::new();
        r.read_to_string(&mut text).unwrap();
        assert!(!compressed);
        assert_eq!(text, "a,b\n");
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_ratio_or_the_size_without_inflating_it_all() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..64 {
            gz.write_all(&[b'a'; 1024 * 1024]).unwrap();
        }
        let bytes = gz.finish().unwrap();
        let (mut r, _) =
            sniff_limited(std::io::Cursor::new(bytes.clone()), &Limits::default()).unwrap();
        let e = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
        assert!(
            e.to_string().contains("limits.max_compression_ratio"),
            "{e}"
        );
        let limits = Limits {
            max_decompressed_bytes: 1024 * 1024,
            ..Limits::default()
        };
        let (mut r, _) = sniff_limited(std::io::Cursor::new(bytes), &limits).unwrap();
        let e = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
        assert!(
            e.to_string().contains("limits.max_decompressed_bytes"),
            "{e}"
        );
    }

    #[test]
    fn a_truncated_gzip_file_is_an_error_not_silence() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&b"x,y\n".repeat(1000)).unwrap();
        let mut bytes = gz.finish().unwrap();
        bytes.truncate(bytes.len() / 2);
        let (mut r, _) = sniff(std::io::Cursor::new(bytes)).unwrap();
        let mut text = String::new();
        assert!(r.read_to_string(&mut text).is_err());
    }
}
