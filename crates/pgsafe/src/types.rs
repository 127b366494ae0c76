//! Domain newtypes shared by every format and protocol module: `Lsn`, `TimelineId`, `SystemId`,
//! `PgVersion`, `WalSegSize` and `WalSegment`. Pure: no IO.
//!
//! Facts (`XLogFileName` in `src/include/access/xlog_internal.h`): a WAL segment file name is `TTTTTTTTLLLLLLLLSSSSSSSS`, 24 uppercase hex
//! digits: timeline, then the segment number split into "xlogid" (`segno / N`) and the segment
//! within it (`segno % N`), where `N = 2^32 / segment size`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a domain value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    #[error("invalid LSN {0:?}: expected two hex numbers separated by '/', like 0/16B3748")]
    Lsn(String),
    #[error("invalid timeline ID {0:?}: expected a decimal number from 1 to 4294967295")]
    Timeline(String),
    #[error("invalid system identifier {0:?}: expected a decimal 64-bit number")]
    SystemId(String),
    #[error("invalid PostgreSQL version {0:?}: {1}")]
    Version(String, &'static str),
    #[error("invalid WAL segment size {0} bytes: must be a power of two from 1 MiB to 1 GiB")]
    WalSegSize(u64),
    #[error("invalid WAL file name {0:?}: expected 24 uppercase hex digits")]
    WalName(String),
    #[error(
        "WAL file name {name:?} is not valid for a {size} segment size (segment part too large)"
    )]
    WalNameForSize { name: String, size: WalSegSize },
}

/// A WAL position (log sequence number), printed as PostgreSQL does: `%X/%X`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const INVALID: Lsn = Lsn(0);

    pub fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// The high and low 32-bit halves, as written in `%X/%X`.
    pub fn parts(self) -> (u32, u32) {
        ((self.0 >> 32) as u32, self.0 as u32)
    }

    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    pub fn checked_sub(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_sub(bytes).map(Lsn)
    }

    /// Bytes from `earlier` to `self`, or `None` if `earlier` is later.
    pub fn distance_from(self, earlier: Lsn) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (hi, lo) = self.parts();
        write!(f, "{hi:X}/{lo:X}")
    }
}

impl FromStr for Lsn {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TypeError::Lsn(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let half = |p: &str| -> Result<u64, TypeError> {
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u64::from_str_radix(p, 16).map_err(|_| bad())
        };
        Ok(Lsn((half(hi)? << 32) | half(lo)?))
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A timeline ID. Valid timelines start at 1; 0 appears only as "unset" in some pg_control fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimelineId(pub u32);

impl TimelineId {
    pub const FIRST: TimelineId = TimelineId(1);

    /// The 8-digit uppercase hex form used in WAL and history file names.
    pub fn hex(self) -> String {
        format!("{:08X}", self.0)
    }

    /// Name of this timeline's history file, e.g. `00000002.history`.
    pub fn history_file_name(self) -> String {
        format!("{:08X}.history", self.0)
    }
}

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for TimelineId {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<u32>() {
            Ok(v) if v >= 1 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(TimelineId(v)),
            _ => Err(TypeError::Timeline(s.to_owned())),
        }
    }
}

/// The database system identifier from pg_control (unique per `initdb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SystemId(pub u64);

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for SystemId {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TypeError::SystemId(s.to_owned()));
        }
        s.parse()
            .map(SystemId)
            .map_err(|_| TypeError::SystemId(s.to_owned()))
    }
}

// JSON numbers above 2^53 lose precision in many consumers: system identifiers travel as strings.
impl Serialize for SystemId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SystemId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A PostgreSQL server version in `server_version_num` form (e.g. 150018 = 15.18, 90624 = 9.6.24).
/// A version known only by its major (from `PG_VERSION`) has minor 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgVersion(u32);

impl PgVersion {
    /// Oldest and newest majors pgsafe supports.
    pub const MIN_SUPPORTED_MAJOR: u32 = 10;
    pub const MAX_SUPPORTED_MAJOR: u32 = 18;

    /// From the numeric form, as `SHOW server_version_num` prints it.
    pub fn from_num(num: u32) -> Result<Self, TypeError> {
        if (90000..100000).contains(&num) || (100000..10_000_000).contains(&num) {
            Ok(PgVersion(num))
        } else {
            Err(TypeError::Version(
                num.to_string(),
                "not a server_version_num",
            ))
        }
    }

    /// From the text of `SHOW server_version_num` (e.g. `"150018"`).
    pub fn from_server_version_num(s: &str) -> Result<Self, TypeError> {
        let t = s.trim();
        let num = t
            .parse::<u32>()
            .map_err(|_| TypeError::Version(s.to_owned(), "not a number"))?;
        Self::from_num(num)
    }

    /// From the contents of a data directory's `PG_VERSION` file (`"15\n"`, `"9.6\n"`).
    pub fn from_pg_version_file(bytes: &[u8]) -> Result<Self, TypeError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| TypeError::Version(String::from_utf8_lossy(bytes).into(), "not text"))?;
        let line = text.strip_suffix('\n').unwrap_or(text);
        if line.contains(['\n', '\r']) || line.is_empty() {
            return Err(TypeError::Version(
                text.to_owned(),
                "expected one line like \"15\"",
            ));
        }
        match line.split_once('.') {
            Some(("9", minor)) => {
                let m: u32 =
                    parse_dec(minor).ok_or(TypeError::Version(text.to_owned(), "bad 9.x"))?;
                Self::from_num(90000 + m * 100)
            }
            Some(_) => Err(TypeError::Version(
                text.to_owned(),
                "unexpected dotted major",
            )),
            None => {
                let major = parse_dec(line)
                    .ok_or(TypeError::Version(text.to_owned(), "not a major number"))?;
                if major < 10 {
                    return Err(TypeError::Version(
                        text.to_owned(),
                        "major below 10 without a dot",
                    ));
                }
                Self::from_num(major * 10000)
            }
        }
    }

    /// The `server_version_num` form.
    pub fn num(self) -> u32 {
        self.0
    }

    /// The major version: 10..=18 for modern versions, 96 for 9.6 (so that ordering holds only
    /// among 10+; use [`PgVersion::major_name`] for display).
    pub fn major(self) -> u32 {
        if self.0 >= 100000 {
            self.0 / 10000
        } else {
            self.0 / 100
        }
    }

    /// `"15"`, or `"9.6"` for pre-10 versions.
    pub fn major_name(self) -> String {
        if self.0 >= 100000 {
            self.major().to_string()
        } else {
            format!("{}.{}", self.0 / 10000, (self.0 / 100) % 100)
        }
    }

    /// Minor release (the `18` in 15.18); 0 when only the major is known.
    pub fn minor(self) -> u32 {
        if self.0 >= 100000 {
            self.0 % 10000
        } else {
            self.0 % 100
        }
    }

    pub fn is_supported(self) -> bool {
        self.0 >= Self::MIN_SUPPORTED_MAJOR * 10000 && self.major() <= Self::MAX_SUPPORTED_MAJOR
    }

    /// True if this version's major is at least `major` (10+ numbering).
    pub fn at_least(self, major: u32) -> bool {
        self.0 >= major * 10000
    }
}

fn parse_dec(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 7 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major_name(), self.minor())
    }
}

impl FromStr for PgVersion {
    type Err = TypeError;
    /// Accepts `"15"`, `"15.4"`, `"9.6"`, `"9.6.24"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| TypeError::Version(s.to_owned(), why);
        let parts: Vec<&str> = s.split('.').collect();
        let nums: Option<Vec<u32>> = parts.iter().map(|p| parse_dec(p)).collect();
        let nums = nums.ok_or(bad("expected numbers separated by dots"))?;
        match nums.as_slice() {
            [9, m] => Self::from_num(90000 + m * 100),
            [9, m, p] if *m < 100 && *p < 100 => Self::from_num(90000 + m * 100 + p),
            [maj] if *maj >= 10 => Self::from_num(maj * 10000),
            [maj, min] if *maj >= 10 && *min < 10000 => Self::from_num(maj * 10000 + min),
            _ => Err(bad("expected MAJOR[.MINOR] (10+) or 9.X[.Y]")),
        }
    }
}

impl Serialize for PgVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PgVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// WAL segment size in bytes: a power of two from 1 MiB to 1 GiB (pg_control `xlog_seg_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct WalSegSize(u32);

impl WalSegSize {
    pub const DEFAULT: WalSegSize = WalSegSize(16 * 1024 * 1024);
    pub const MIN: u64 = 1024 * 1024;
    pub const MAX: u64 = 1024 * 1024 * 1024;

    pub fn new(bytes: u64) -> Result<Self, TypeError> {
        if bytes.is_power_of_two() && (Self::MIN..=Self::MAX).contains(&bytes) {
            Ok(WalSegSize(bytes as u32))
        } else {
            Err(TypeError::WalSegSize(bytes))
        }
    }

    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }

    /// Segments per 4 GiB "xlogid" (the `N` of the naming rule).
    pub fn segments_per_xlogid(self) -> u64 {
        0x1_0000_0000 / self.bytes()
    }
}

impl TryFrom<u64> for WalSegSize {
    type Error = TypeError;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        WalSegSize::new(v)
    }
}

impl From<WalSegSize> for u64 {
    fn from(v: WalSegSize) -> u64 {
        v.bytes()
    }
}

impl fmt::Display for WalSegSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bytes();
        if b >= 1 << 30 {
            write!(f, "{}GB", b >> 30)
        } else {
            write!(f, "{}MB", b >> 20)
        }
    }
}

/// One WAL segment file, identified exactly as its file name does: timeline, "xlogid" and the
/// segment within it. Converting to and from a plain segment number needs the segment size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalSegment {
    pub tli: TimelineId,
    log: u32,
    seg: u32,
}

impl WalSegment {
    /// The segment with number `segno` (LSN / segment size) on timeline `tli`.
    pub fn from_segno(tli: TimelineId, segno: u64, size: WalSegSize) -> Self {
        let n = size.segments_per_xlogid();
        WalSegment {
            tli,
            log: (segno / n) as u32,
            seg: (segno % n) as u32,
        }
    }

    /// The segment containing `lsn` (`XLByteToSeg`): use for start positions.
    pub fn containing(lsn: Lsn, tli: TimelineId, size: WalSegSize) -> Self {
        Self::from_segno(tli, lsn.0 / size.bytes(), size)
    }

    /// The segment holding the byte just before `lsn` (`XLByteToPrevSeg`): use for end positions,
    /// so that an end exactly on a segment boundary names the previous segment.
    pub fn containing_end(lsn: Lsn, tli: TimelineId, size: WalSegSize) -> Self {
        Self::from_segno(tli, lsn.0.saturating_sub(1) / size.bytes(), size)
    }

    /// The segment number, checking that the name is valid for this segment size.
    pub fn segno(self, size: WalSegSize) -> Result<u64, TypeError> {
        let n = size.segments_per_xlogid();
        if u64::from(self.seg) >= n {
            return Err(TypeError::WalNameForSize {
                name: self.to_string(),
                size,
            });
        }
        Ok(u64::from(self.log) * n + u64::from(self.seg))
    }

    /// First LSN stored in this segment.
    pub fn start_lsn(self, size: WalSegSize) -> Result<Lsn, TypeError> {
        Ok(Lsn(self.segno(size)? * size.bytes()))
    }

    /// Every segment from the one containing `start` to the one holding the byte before `stop`,
    /// inclusive, on one timeline: the WAL a backup from a primary needs. Empty if `stop <= start`.
    pub fn range(
        start: Lsn,
        stop: Lsn,
        tli: TimelineId,
        size: WalSegSize,
    ) -> impl Iterator<Item = WalSegment> {
        let first = start.0 / size.bytes();
        let last = stop.0.saturating_sub(1) / size.bytes();
        let end = if stop > start { last + 1 } else { first };
        (first..end).map(move |segno| WalSegment::from_segno(tli, segno, size))
    }
}

impl fmt::Display for WalSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.tli.0, self.log, self.seg)
    }
}

impl FromStr for WalSegment {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == 24 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'));
        if !ok {
            return Err(TypeError::WalName(s.to_owned()));
        }
        let hex = |r: std::ops::Range<usize>| u32::from_str_radix(&s[r], 16);
        let bad = |_| TypeError::WalName(s.to_owned());
        Ok(WalSegment {
            tli: TimelineId(hex(0..8).map_err(bad)?),
            log: hex(8..16).map_err(bad)?,
            seg: hex(16..24).map_err(bad)?,
        })
    }
}

impl Serialize for WalSegment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WalSegment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg16() -> WalSegSize {
        WalSegSize::DEFAULT
    }

    #[test]
    fn lsn_formats_like_postgres() {
        assert_eq!(Lsn(0x0200_0028).to_string(), "0/2000028");
        assert_eq!(Lsn(0x1A_3F00_0060).to_string(), "1A/3F000060");
        assert_eq!("1a/3f000060".parse::<Lsn>(), Ok(Lsn(0x1A_3F00_0060)));
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "0/123456789",
            "g/0",
            "0 /1",
            "0/1/2",
            "+1/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn wal_names_match_reference_examples() {
        let tli = TimelineId(1);
        let name = |lsn: &str, size: WalSegSize| {
            WalSegment::containing(lsn.parse().unwrap(), tli, size).to_string()
        };
        assert_eq!(name("0/2000028", seg16()), "000000010000000000000002");
        assert_eq!(name("1/A3000000", seg16()), "0000000100000001000000A3");
        let gib = WalSegSize::new(1 << 30).unwrap();
        assert_eq!(name("5/C0000010", gib), "000000010000000500000003");
        let end = WalSegment::containing_end("0/3000000".parse().unwrap(), tli, seg16());
        assert_eq!(end.to_string(), "000000010000000000000002");
    }

    #[test]
    fn backup_range_is_inclusive_and_uses_prev_seg_for_the_end() {
        let r: Vec<String> = WalSegment::range(
            "0/2000028".parse().unwrap(),
            "0/4000000".parse().unwrap(),
            TimelineId(1),
            seg16(),
        )
        .map(|s| s.to_string())
        .collect();
        assert_eq!(r, ["000000010000000000000002", "000000010000000000000003"]);
        let one: Vec<_> =
            WalSegment::range(Lsn(0x2000028), Lsn(0x2000100), TimelineId(1), seg16()).collect();
        assert_eq!(one.len(), 1);
        assert_eq!(
            WalSegment::range(Lsn(10), Lsn(10), TimelineId(1), seg16()).count(),
            0
        );
    }

    #[test]
    fn wal_name_rejects_bad_forms_and_wrong_size() {
        for bad in [
            "00000001000000000000000",
            "00000001000000000000000g",
            "0000000100000000000000a3",
        ] {
            assert!(bad.parse::<WalSegment>().is_err());
        }
        // seg part 0x100 is impossible with 16 MiB segments (N = 256)
        let s: WalSegment = "000000010000000000000100".parse().unwrap();
        assert!(s.segno(seg16()).is_err());
        assert!(s.segno(WalSegSize::new(1 << 20).unwrap()).is_ok());
    }

    #[test]
    fn versions_parse_from_every_source() {
        let v = PgVersion::from_server_version_num("150018\n").unwrap();
        assert_eq!(
            (v.major(), v.minor(), v.to_string()),
            (15, 18, "15.18".into())
        );
        let old = PgVersion::from_server_version_num("90624").unwrap();
        assert_eq!(
            (old.major_name(), old.to_string()),
            ("9.6".into(), "9.6.24".into())
        );
        assert!(!old.is_supported());
        assert_eq!(
            PgVersion::from_pg_version_file(b"18\n").unwrap().major(),
            18
        );
        assert_eq!(
            PgVersion::from_pg_version_file(b"9.6\n")
                .unwrap()
                .major_name(),
            "9.6"
        );
        for bad in [&b""[..], b"\n", b"15\n\n", b"abc\n", b"9\n", b"\xff\n"] {
            assert!(PgVersion::from_pg_version_file(bad).is_err(), "{bad:?}");
        }
        assert!(!PgVersion::from_num(190000).unwrap().is_supported());
        assert!("10".parse::<PgVersion>().unwrap().is_supported());
        assert!(PgVersion::from_server_version_num("banana").is_err());
    }

    #[test]
    fn seg_size_bounds() {
        assert!(WalSegSize::new(1 << 19).is_err());
        assert!(WalSegSize::new((1 << 31) as u64).is_err());
        assert!(WalSegSize::new(3 << 20).is_err());
        assert_eq!(WalSegSize::new(64 << 20).unwrap().to_string(), "64MB");
    }

    fn any_size() -> impl Strategy<Value = WalSegSize> {
        (20u32..=30).prop_map(|p| WalSegSize::new(1u64 << p).unwrap())
    }

    proptest! {
        #[test]
        fn lsn_round_trips(v: u64) {
            let l = Lsn(v);
            prop_assert_eq!(l.to_string().parse::<Lsn>(), Ok(l));
        }

        #[test]
        fn lsn_parse_never_panics(s in ".{0,24}") {
            let _ = s.parse::<Lsn>();
        }

        #[test]
        fn segment_name_round_trips(tli in 1u32.., lsn: u64, size in any_size()) {
            let seg = WalSegment::containing(Lsn(lsn), TimelineId(tli), size);
            let parsed: WalSegment = seg.to_string().parse().unwrap();
            prop_assert_eq!(parsed, seg);
            let segno = parsed.segno(size).unwrap();
            prop_assert_eq!(segno, lsn / size.bytes());
            let first = parsed.start_lsn(size).unwrap();
            prop_assert!(first.0 <= lsn && lsn - first.0 < size.bytes());
        }

        #[test]
        fn end_segment_is_previous_on_boundaries(segno in 1u64..1_000_000, size in any_size()) {
            let lsn = Lsn(segno * size.bytes());
            let end = WalSegment::containing_end(lsn, TimelineId(1), size);
            prop_assert_eq!(end.segno(size).unwrap(), segno - 1);
        }

        #[test]
        fn version_display_round_trips(major in 10u32..=40, minor in 0u32..100) {
            let v = PgVersion::from_num(major * 10000 + minor).unwrap();
            prop_assert_eq!(v.to_string().parse::<PgVersion>(), Ok(v));
        }

        #[test]
        fn version_parsers_never_panic(s in ".{0,12}", b in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = s.parse::<PgVersion>();
            let _ = PgVersion::from_server_version_num(&s);
            let _ = PgVersion::from_pg_version_file(&b);
        }
    }
}
