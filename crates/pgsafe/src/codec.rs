//! Per-file compression of the stored files: the `--compress` setting, the writer that
//! compresses into a stored file while counting what reaches the disk, and the matching reader.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::layout::{LZ4_SUFFIX, ZSTD_SUFFIX};

/// How each stored file is compressed. A compressed file is a sequence of zstd frames (`.zst`,
/// each with its content checksum) or of LZ4 frames (`.lz4`, 1 MiB blocks, content checksum):
/// one frame for a file copied whole, one per range for a split file. Readable by
/// the `zstd` and `lz4` command-line tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Files stored as they are (the layout `pg_verifybackup` reads).
    #[default]
    None,
    /// zstd at `level` (`zstd` alone means level 1: fast, and still a good ratio on relation
    /// files).
    Zstd {
        level: i32,
    },
    Lz4,
}

/// The zstd level `zstd` without `:LEVEL` means.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

impl Compression {
    /// Suffix appended to a compressed file's name: `""`, `".zst"`, `".lz4"`.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd { .. } => ZSTD_SUFFIX,
            Compression::Lz4 => LZ4_SUFFIX,
        }
    }

    pub fn is_none(self) -> bool {
        self == Compression::None
    }

    /// A reader of a stored file's original content.
    pub fn decoder<'a, R: Read + Send + 'a>(self, r: R) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(r),
            Compression::Zstd { .. } => Box::new(zstd::stream::read::Decoder::new(r)?),
            Compression::Lz4 => Box::new(Lz4Frames {
                dec: lz4_flex::frame::FrameDecoder::new(EofTracking {
                    inner: r,
                    eof: false,
                }),
            }),
        })
    }

    /// A writer that stores into `file`, compressing as configured.
    pub(crate) fn sink<W: Write>(self, file: W) -> io::Result<Sink<Counted<W>>> {
        self.encoder(Counted { file, written: 0 })
    }

    /// A writer that compresses into `out` as configured (one frame, ended by `finish`).
    pub(crate) fn encoder<W: Write>(self, out: W) -> io::Result<Sink<W>> {
        Ok(match self {
            Compression::None => Sink::Plain(out),
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(out, level)?;
                enc.include_checksum(true)?;
                Sink::Zstd(enc)
            }
            Compression::Lz4 => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max1MB)
                    .content_checksum(true);
                Sink::Lz4(lz4_flex::frame::FrameEncoder::with_frame_info(info, out))
            }
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
            Compression::Lz4 => f.write_str("lz4"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    /// `none`, `zstd`, `zstd:LEVEL`, `lz4` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        let (method, level) = match lower.split_once(':') {
            Some((m, l)) => (m, Some(l)),
            None => (lower.as_str(), None),
        };
        match (method, level) {
            ("none", None) => Ok(Compression::None),
            ("lz4", None) => Ok(Compression::Lz4),
            ("zstd", None) => Ok(Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
            }),
            ("zstd", Some(l)) => {
                let range = zstd::compression_level_range();
                match l.parse::<i32>() {
                    Ok(level) if range.contains(&level) => Ok(Compression::Zstd { level }),
                    _ => Err(format!(
                        "invalid zstd level {l:?} in {s:?}: use a number from {} to {}",
                        range.start(),
                        range.end()
                    )),
                }
            }
            ("none" | "lz4", Some(_)) => Err(format!(
                "{method} takes no level: use none, lz4, zstd or zstd:LEVEL (not {s:?})"
            )),
            _ => Err(format!(
                "unknown compression {s:?}: use none, zstd, zstd:LEVEL or lz4"
            )),
        }
    }
}

impl Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A reader that remembers whether its input ended.
struct EofTracking<R> {
    inner: R,
    eof: bool,
}

impl<R: Read> Read for EofTracking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        Ok(n)
    }
}

/// Reads concatenated LZ4 frames as one stream: lz4_flex's decoder reports the end of each frame
/// as the end of input, so go on with the next frame until the input really ends.
struct Lz4Frames<R: Read> {
    dec: lz4_flex::frame::FrameDecoder<EofTracking<R>>,
}

impl<R: Read> Read for Lz4Frames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = self.dec.read(buf)?;
            if n > 0 || self.dec.get_mut().eof {
                return Ok(n);
            }
        }
    }
}

/// A stored file (or object) being written, counting the bytes that reach it.
pub(crate) struct Counted<W = File> {
    file: W,
    written: u64,
}

impl<W> Counted<W> {
    /// The writer and the bytes written to it.
    pub(crate) fn into_parts(self) -> (W, u64) {
        (self.file, self.written)
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A writer of one stored file (or of one frame in memory).
pub(crate) enum Sink<W: Write> {
    Plain(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Lz4(lz4_flex::frame::FrameEncoder<W>),
}

impl<W: Write> Sink<W> {
    pub(crate) fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(buf),
            Sink::Zstd(w) => w.write_all(buf),
            Sink::Lz4(w) => w.write_all(buf),
        }
    }

    /// Ends the frame; returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Sink::Plain(w) => Ok(w),
            Sink::Zstd(w) => w.finish(),
            Sink::Lz4(w) => w.finish().map_err(io::Error::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_frames_decode_as_one_stream() {
        let parts = [b"first frame ".repeat(1000), Vec::new(), b"third".to_vec()];
        let whole: Vec<u8> = parts.concat();
        for c in [Compression::Zstd { level: 1 }, Compression::Lz4] {
            let mut stream = Vec::new();
            for p in &parts {
                let mut e = c.encoder(Vec::new()).unwrap();
                e.write_all(p).unwrap();
                stream.extend(e.finish().unwrap());
            }
            let mut back = Vec::new();
            c.decoder(&stream[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == whole, "{c}");
        }
    }

    #[test]
    fn parses_and_prints() {
        let cases = [
            ("none", Compression::None, "none"),
            ("NONE", Compression::None, "none"),
            ("zstd", Compression::Zstd { level: 1 }, "zstd:1"),
            ("zstd:9", Compression::Zstd { level: 9 }, "zstd:9"),
            ("zstd:-5", Compression::Zstd { level: -5 }, "zstd:-5"),
            ("lz4", Compression::Lz4, "lz4"),
        ];
        for (text, value, shown) in cases {
            assert_eq!(text.parse::<Compression>(), Ok(value), "{text}");
            assert_eq!(value.to_string(), shown);
            assert_eq!(shown.parse::<Compression>(), Ok(value));
        }
        for bad in [
            "", "gzip", "zstd:", "zstd:x", "zstd:99", "lz4:3", "none:1", "zstd:1:2",
        ] {
            let err = bad.parse::<Compression>().unwrap_err();
            assert!(err.contains("zstd"), "{bad}: {err}");
        }
        assert_eq!(Compression::default(), Compression::None);
        assert_eq!(Compression::Zstd { level: 3 }.suffix(), ".zst");
        assert_eq!(Compression::Lz4.suffix(), ".lz4");
        assert_eq!(Compression::None.suffix(), "");
        let json = serde_json::to_string(&Compression::Zstd { level: 2 }).unwrap();
        assert_eq!(json, "\"zstd:2\"");
        assert_eq!(
            serde_json::from_str::<Compression>(&json).unwrap(),
            Compression::Zstd { level: 2 }
        );
    }

    #[test]
    fn sink_round_trips_through_decoder() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i % 97) as u8 ^ (i >> 13) as u8)
            .collect();
        for c in [
            Compression::None,
            Compression::Zstd { level: 1 },
            Compression::Zstd { level: 19 },
            Compression::Lz4,
        ] {
            let p = dir.path().join(format!("f{}", c.suffix()));
            let mut sink = c.sink(File::create(&p).unwrap()).unwrap();
            for chunk in data.chunks(1 << 20) {
                sink.write_all(chunk).unwrap();
            }
            let (_f, stored) = sink.finish().unwrap().into_parts();
            assert_eq!(stored, std::fs::metadata(&p).unwrap().len(), "{c}");
            if !c.is_none() {
                assert!(stored < data.len() as u64 / 2, "{c}: {stored}");
            }
            let mut back = Vec::new();
            c.decoder(File::open(&p).unwrap())
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "{c}");
        }
    }
}
