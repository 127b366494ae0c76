//! The WAL part of `pgsafe verify`: one pass over the stored segments in LSN order (a record
//! may continue into the next segment), reading each file once for
//! * its size and first page header (magic of the server's major version, this system's
//!   identifier, segment and block size: [`wal::check_segment_header`]);
//! * the CRC-32C `pgsafe.json` recorded when backup copied it (backups of older pgsafe have
//!   none: the record check below still runs);
//! * every WAL record from the backup's start LSN to its stop LSN, as the server's reader
//!   checks them before replay ([`RecordChecker`]): page headers, record lengths, the
//!   `xl_prev` chain, CRC-32C, continuation across pages and segments, `XLOG_SWITCH`.
//!
//! One problem per damaged segment: a segment whose size or first header is wrong is reported
//! as that, and the record check stops there (the records after it cannot be read). A record
//! problem and a checksum mismatch of the same segment are both reported: the first says what
//! recovery would hit, the second that the bytes changed after the backup copied them.

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::{BackupEndScan, Ctx, Problem, VerifyError, WorkerOut, read_error};
use crate::fsutil::FsError;
use crate::info::BackupInfo;
use crate::layout::WAL_DIR;
use crate::plan::RelPath;
use crate::types::Lsn;
use crate::wal::{self, record::RecordChecker, record::RecordError};

/// A WAL problem of a segment read from the repository's archive `archive`, naming it there.
fn in_archive(p: Problem, archive: &str) -> Problem {
    let invalid = |file: String, error: String| Problem::ArchiveWalInvalid {
        file,
        archive: archive.to_owned(),
        error,
    };
    match p {
        Problem::WalMissing { segment } => Problem::ArchiveWalMissing {
            file: segment,
            archive: archive.to_owned(),
        },
        Problem::WalSize {
            segment,
            expected,
            found,
        } => invalid(segment, format!("it is {found} bytes, expected {expected}")),
        Problem::WalInvalid { segment, error } => invalid(segment, error),
        Problem::WalRecord {
            segment,
            lsn,
            error,
        } => invalid(
            segment,
            format!(
                "damaged WAL at {lsn}: {error} — recovery of this backup would stop there, \
                 before the backup is consistent, so it cannot be restored"
            ),
        ),
        other => other,
    }
}

/// A problem if `pgsafe.json` recorded another CRC-32C for the stored WAL file `file` (encoded
/// as [`crate::info::crc32c_hex`] does).
fn crc_mismatch(
    crcs: Option<&BTreeMap<String, String>>,
    file: &str,
    found: u32,
) -> Option<Problem> {
    let expected = crcs?.get(file)?;
    let found = hex::encode(found.to_le_bytes());
    (!found.eq_ignore_ascii_case(expected)).then(|| Problem::WalChecksum {
        file: file.to_owned(),
        expected: expected.clone(),
        found,
    })
}

/// [`crc_mismatch`] of a whole file read into memory (timeline history files).
pub(super) fn crc_problem(info: Option<&BackupInfo>, file: &str, bytes: &[u8]) -> Option<Problem> {
    crc_mismatch(info.map(|i| &i.wal.crc32c), file, crc32c::crc32c(bytes))
}

type Found = Vec<(u8, String, Problem)>;

impl Ctx<'_> {
    /// Checks every stored WAL segment (see the module documentation); WAL problems sort after
    /// file problems, by segment.
    pub(super) fn check_wal_stream(
        &self,
        buf: &mut [u8],
        out: &mut WorkerOut,
    ) -> Result<Found, VerifyError> {
        let mut found: Found = Vec::new();
        let Some(seg_size) = self.seg_size else {
            return Ok(found);
        };
        let size = seg_size.bytes();
        let range = match (self.start, self.stop) {
            (Some(a), Some(b)) if !self.opts.quick => Some((a, b)),
            _ => None,
        };
        // WAL read from the repository's archive: its problems name the archive, not pg_wal/.
        let shown_archive = self.archive.map(|a| a.shown().display().to_string());
        let mut push = |name: &str, p: Problem| {
            let p = match &shown_archive {
                Some(a) => in_archive(p, a),
                None => p,
            };
            found.push((1, name.to_owned(), p))
        };
        let mut checker: Option<RecordChecker> = None;
        // Records are checked while the segments follow each other from the start's segment.
        let mut active = range.is_some();
        let mut prev_segno: Option<u64> = None;
        let mut end = Lsn(0);
        for w in self.wal {
            out.wal += 1;
            let name = w.seg.to_string();
            let (Ok(segno), Ok(seg_start)) = (w.seg.segno(seg_size), w.seg.start_lsn(seg_size))
            else {
                push(
                    &name,
                    Problem::WalInvalid {
                        segment: name.clone(),
                        error: "the name is not valid for this segment size".into(),
                    },
                );
                active = false;
                continue;
            };
            let follows = match prev_segno {
                Some(p) => p.checked_add(1) == Some(segno),
                None => range.is_some_and(|(a, _)| a.0 / size == segno),
            };
            // A gap is a missing segment, reported on its own.
            active &= follows;
            prev_segno = Some(segno);
            if w.disk_size != size {
                push(
                    &name,
                    Problem::WalSize {
                        segment: name.clone(),
                        expected: size,
                        found: w.disk_size,
                    },
                );
                active = false;
                continue;
            }
            if self.opts.quick {
                continue;
            }
            let rel = RelPath::from(format!("{WAL_DIR}/{name}").as_str());
            let path = self.backup.shown_path(&rel);
            let mut file: Box<dyn Read + '_> = match self.archive {
                None => self
                    .backup
                    .read(&rel)
                    .map_err(|e| read_error(self.backup, "open", &rel, e))?,
                Some(a) => match a.get(w.seg.tli, &name, size) {
                    Ok(Some(bytes)) if bytes.len() as u64 == size => {
                        Box::new(io::Cursor::new(bytes))
                    }
                    Ok(Some(bytes)) => {
                        push(
                            &name,
                            Problem::WalSize {
                                segment: name.clone(),
                                expected: size,
                                found: bytes.len() as u64,
                            },
                        );
                        active = false;
                        continue;
                    }
                    Ok(None) => {
                        push(
                            &name,
                            Problem::WalMissing {
                                segment: name.clone(),
                            },
                        );
                        active = false;
                        continue;
                    }
                    Err(crate::verify::ArchiveReadError::Storage(e)) => {
                        return Err(FsError::new("read", a.shown().join(&name), e.into_io()).into());
                    }
                    Err(e) => {
                        push(
                            &name,
                            Problem::WalInvalid {
                                segment: name.clone(),
                                error: e.to_string(),
                            },
                        );
                        active = false;
                        continue;
                    }
                },
            };
            let invalid = |error: String| Problem::WalInvalid {
                segment: name.clone(),
                error,
            };
            let (mut crc, mut offset, mut header_ok) = (0u32, 0u64, true);
            while offset < size {
                let want = buf.len().min((size - offset) as usize);
                let chunk = &mut buf[..want];
                if let Err(e) = file.read_exact(chunk) {
                    if e.kind() != io::ErrorKind::UnexpectedEof {
                        return Err(FsError::new("read", path, e).into());
                    }
                    push(
                        &name,
                        invalid("the file is shorter than the segment size".into()),
                    );
                    (header_ok, active) = (false, false);
                    break;
                }
                crc = crc32c::crc32c_append(crc, chunk);
                if offset == 0 {
                    match wal::check_segment_header(chunk, w.seg, seg_size, self.sysid, self.major)
                    {
                        Ok(h) => {
                            let blcksz = h.long.map_or(0, |l| l.xlog_blcksz);
                            let c = checker.get_or_insert_with(|| {
                                let (a, b) = range.unwrap_or_default();
                                let c = RecordChecker::new(a, b, seg_size, blcksz);
                                match self.consistent_at.filter(|_| range.is_some()) {
                                    Some(at) => c.with_mark(at),
                                    None => c,
                                }
                            });
                            if blcksz as usize == 0
                                || want % blcksz as usize != 0
                                || c.blcksz() != u64::from(blcksz)
                            {
                                push(
                                    &name,
                                    invalid(format!(
                                        "WAL block size {blcksz} differs from the first segment's \
                                         {} or does not divide the segment",
                                        c.blcksz()
                                    )),
                                );
                                (header_ok, active) = (false, false);
                            }
                        }
                        Err(e) => {
                            push(&name, invalid(e.to_string()));
                            (header_ok, active) = (false, false);
                        }
                    }
                    if !header_ok {
                        break;
                    }
                }
                if let Some(c) = checker.as_mut().filter(|c| active && !c.is_done()) {
                    let blcksz = c.blcksz() as usize;
                    for (k, page) in chunk.chunks(blcksz).enumerate() {
                        let lsn = Lsn(seg_start.0 + offset + (k * blcksz) as u64);
                        if let Err(e) = c.feed_page(lsn, page, w.seg.tli) {
                            let (seg, p) = self.record_problem(e, &name, seg_size);
                            push(&seg, p);
                            active = false;
                            break;
                        }
                    }
                    end = Lsn(seg_start.0 + offset + want as u64);
                }
                offset += want as u64;
                self.after_read(want, &mut out.bytes)?;
            }
            if header_ok {
                if let Some(p) = crc_mismatch(self.wal_crcs, &name, crc) {
                    push(&name, p);
                }
            }
            self.progress
                .file_done(&format!("pg_wal/{name}"), w.disk_size);
        }
        if let Some(c) = checker.as_mut() {
            if active {
                match c.finish(end) {
                    Err(e) => {
                        let last = self.wal.last().map(|w| w.seg.to_string());
                        let (seg, p) = self.record_problem(e, &last.unwrap_or_default(), seg_size);
                        push(&seg, p);
                    }
                    Ok(_) => {
                        out.backup_end = self.consistent_at.map(|at| BackupEndScan {
                            consistent_at: at,
                            reached: c.mark_reached(),
                            record_follows: c.records_past_mark() > 0,
                        });
                    }
                }
            }
            out.wal_records += c.stats().records;
            out.wal_tablespaces_created
                .extend_from_slice(c.tablespaces_created());
        }
        Ok(found)
    }

    /// A record error as a problem of the stored segment holding its LSN.
    fn record_problem(
        &self,
        e: RecordError,
        current: &str,
        seg_size: crate::types::WalSegSize,
    ) -> (String, Problem) {
        let segno = e.lsn.0 / seg_size.bytes();
        let segment = self
            .wal
            .iter()
            .find(|w| w.seg.segno(seg_size).ok() == Some(segno))
            .map_or_else(|| current.to_owned(), |w| w.seg.to_string());
        let p = Problem::WalRecord {
            segment: segment.clone(),
            lsn: e.lsn,
            error: e.to_string(),
        };
        (segment, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::WalInfo;

    #[test]
    fn older_backups_have_no_wal_checksums_and_pass() {
        let old = serde_json::json!({
            "mode": "include",
            "segments": ["000000010000000000000002"],
            "history_files": [],
            "bytes": 16777216,
            "source": "included in pg_wal/ of the backup"
        });
        let w: WalInfo = serde_json::from_value(old).unwrap();
        assert!(w.crc32c.is_empty());
        assert_eq!(
            crc_mismatch(Some(&w.crc32c), "000000010000000000000002", 7),
            None
        );
    }

    #[test]
    fn a_changed_file_is_a_checksum_problem() {
        let bytes = b"1\t0/3000000\tno recovery target specified\n";
        let mut crcs = BTreeMap::new();
        crcs.insert(
            "00000002.history".to_owned(),
            crate::info::crc32c_hex(bytes),
        );
        let file = "00000002.history";
        assert_eq!(crc_mismatch(Some(&crcs), file, crc32c::crc32c(bytes)), None);
        let p = crc_mismatch(Some(&crcs), file, crc32c::crc32c(b"changed")).unwrap();
        assert!(
            p.to_string()
                .starts_with("WAL checksum mismatch: pg_wal/00000002.history has CRC-32C "),
            "{p}"
        );
        // Upper-case hex in an edited pgsafe.json is the same checksum.
        crcs.insert(
            file.to_owned(),
            crate::info::crc32c_hex(bytes).to_uppercase(),
        );
        assert_eq!(crc_mismatch(Some(&crcs), file, crc32c::crc32c(bytes)), None);
    }
}
