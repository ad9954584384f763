//! Character encodings of council exports: transcoding to UTF-8 while streaming.

use std::io::{BufRead, BufReader, Read};

/// An encoding a mapping may declare. Exports from Windows systems are often Windows-1252
/// (`£` is byte 0xA3), so a mapping should state it; when it does not, the encoding is
/// detected ([`Encoding::AUTO`]) and a guess other than UTF-8 is logged as a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding(&'static encoding_rs::Encoding, bool);

impl Encoding {
    /// UTF-8 (a byte-order mark is stripped).
    pub const UTF_8: Encoding = Encoding(encoding_rs::UTF_8, false);

    /// Not declared: a BOM says UTF-8 or UTF-16; otherwise bytes that are valid UTF-8 are read
    /// as UTF-8, and anything else as Windows-1252, with a warning.
    pub const AUTO: Encoding = Encoding(encoding_rs::UTF_8, true);

    /// Looks an encoding up by its WHATWG label (`utf-8`, `windows-1252`, `iso-8859-1`,
    /// `utf-16le`, `latin1`, `cp1252`...).
    pub fn for_label(label: &str) -> Option<Self> {
        encoding_rs::Encoding::for_label(label.trim().as_bytes()).map(|e| Encoding(e, false))
    }

    /// The canonical name of the encoding.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// Decides the encoding of a file whose encoding was not declared, from its first bytes
    /// (reading ahead one buffer, nothing more); a declared encoding is returned as it is.
    pub fn resolve(
        self,
        file: &str,
        reader: impl Read + 'static,
    ) -> std::io::Result<(Encoding, Box<dyn Read>)> {
        if !self.1 {
            return Ok((self, Box::new(reader)));
        }
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        let head = reader.fill_buf()?;
        let found = if head.starts_with(&[0xEF, 0xBB, 0xBF]) {
            encoding_rs::UTF_8
        } else if head.starts_with(&[0xFF, 0xFE]) {
            encoding_rs::UTF_16LE
        } else if head.starts_with(&[0xFE, 0xFF]) {
            encoding_rs::UTF_16BE
        } else {
            match std::str::from_utf8(head) {
                Ok(_) => encoding_rs::UTF_8,
                // A character cut by the end of the buffer is still UTF-8.
                Err(e) if e.error_len().is_none() => encoding_rs::UTF_8,
                Err(_) => {
                    tracing::warn!(
                        file,
                        "no encoding is declared and the file is not UTF-8: reading it as windows-1252; declare `encoding:` in the mapping"
                    );
                    encoding_rs::WINDOWS_1252
                }
            }
        };
        Ok((Encoding(found, false), Box::new(reader)))
    }

    /// Whether a U+FFFD in the decoded text means the input had bytes invalid in this encoding
    /// (single-byte encodings map every byte, so only the UTF encodings can say so).
    pub fn can_be_invalid(&self) -> bool {
        self.0 == encoding_rs::UTF_8
            || self.0 == encoding_rs::UTF_16LE
            || self.0 == encoding_rs::UTF_16BE
    }

    /// Wraps a byte reader into one that yields UTF-8. A BOM, when present, wins over the
    /// declared encoding and is removed. Invalid bytes become U+FFFD.
    pub fn decode<R: Read>(self, reader: R) -> impl Read + use<R> {
        encoding_rs_io::DecodeReaderBytesBuilder::new()
            .encoding(Some(self.0))
            .bom_override(true)
            .build(reader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(encoding: Encoding, bytes: &'static [u8]) -> (String, &'static str) {
        let (found, reader) = encoding.resolve("t", bytes).unwrap();
        let mut text = String::new();
        found.decode(reader).read_to_string(&mut text).unwrap();
        (text, found.name())
    }

    #[test]
    fn undeclared_encodings_are_detected() {
        assert_eq!(
            read(Encoding::AUTO, b"Name\n\xc2\xa3 5\n"),
            ("Name\n£ 5\n".into(), "UTF-8")
        );
        assert_eq!(
            read(Encoding::AUTO, b"Name\n\xa3 5\n"),
            ("Name\n£ 5\n".into(), "windows-1252")
        );
        assert_eq!(
            read(Encoding::AUTO, b"\xff\xfeA\x00\xa3\x00"),
            ("A£".into(), "UTF-16LE")
        );
        assert_eq!(
            read(Encoding::AUTO, b"\xef\xbb\xbfA"),
            ("A".into(), "UTF-8")
        );
    }

    #[test]
    fn a_declared_encoding_is_kept_but_a_bom_wins() {
        let latin = Encoding::for_label("iso-8859-1").unwrap();
        assert_eq!(read(latin, b"\xe9").0, "é");
        assert_eq!(read(latin, b"\xff\xfeA\x00").0, "A");
    }
}
