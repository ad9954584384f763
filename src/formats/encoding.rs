//! Character encodings of council exports: transcoding to UTF-8 while streaming.

use std::io::Read;

/// An encoding a mapping may declare. Exports from Windows systems are often Windows-1252
/// (`£` is byte 0xA3), so the encoding is always stated, never assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding(&'static encoding_rs::Encoding);

impl Encoding {
    /// UTF-8 (a byte-order mark is stripped).
    pub const UTF_8: Encoding = Encoding(encoding_rs::UTF_8);

    /// Looks an encoding up by its WHATWG label (`utf-8`, `windows-1252`, `iso-8859-1`,
    /// `utf-16le`, `latin1`, `cp1252`...).
    pub fn for_label(label: &str) -> Option<Self> {
        encoding_rs::Encoding::for_label(label.trim().as_bytes()).map(Encoding)
    }

    /// The canonical name of the encoding.
    pub fn name(&self) -> &'static str {
        self.0.name()
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
