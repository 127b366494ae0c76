//! Has the WAL a backup needs reached the archive?
//!
//! PostgreSQL's own answer (`do_pg_backup_stop` in src/backend/access/transam/xlog.c, used by
//! `pg_backup_stop(wait => true)`) waits until neither the last WAL segment of the backup
//! (`XLByteToPrevSeg(stop LSN)`) nor the backup history file (`<start segment>.<offset>.backup`,
//! named after the *start* segment) is "busy", as `XLogArchiveIsBusy` in
//! src/backend/access/transam/xlogarchive.c decides it per file: `archive_status/<f>.done`
//! means archived; `archive_status/<f>.ready` means not yet; with neither, the file is archived
//! if it is gone from `pg_wal` (a checkpoint removed it after archiving) and busy otherwise.
//! pgsafe asks the same questions from SQL, file by file, after the stop (so an interrupted wait
//! never loses the label). It does not compare `pg_stat_archiver.last_archived_wal` against one
//! name: the archiver does not archive strictly in name order (the history file, created after
//! the stop's segment switch, is often archived after the stop segment), so "last archived"
//! alone does not say whether an earlier-named file is archived.
//!
//! Listing `pg_wal/archive_status` needs `pg_ls_archive_statusdir()` (12+; superuser or
//! pg_monitor) or `pg_ls_dir()` (10–11; superuser, or EXECUTE granted on 11). Without that
//! privilege pgsafe falls back to `pg_stat_archiver`, conservatively: every needed name must be
//! at or before `last_archived_wal` in name order — that can report "not archived" for WAL that
//! is, never the reverse in practice, and the message says which privilege removes the doubt.

use std::time::{Duration, Instant};

use postgres::Client;

use super::ArchiveStatus;
use crate::types::{Lsn, PgVersion, TimelineId, WalSegSize, WalSegment};

/// The files whose archiving makes a backup usable: the segment holding the byte before the
/// stop LSN, and — for a backup taken on a primary — its backup history file (a standby
/// writes none). Both on the stop timeline, as `do_pg_backup_stop` names them.
pub fn archive_needs(
    start_lsn: Lsn,
    stop_lsn: Lsn,
    stop_tli: TimelineId,
    seg_size: WalSegSize,
    from_standby: bool,
) -> Vec<String> {
    let mut needs = vec![WalSegment::containing_end(stop_lsn, stop_tli, seg_size).to_string()];
    if !from_standby {
        let start_seg = WalSegment::containing(start_lsn, stop_tli, seg_size);
        needs.push(format!(
            "{start_seg}.{:08X}.backup",
            start_lsn.0 % seg_size.bytes()
        ));
    }
    needs
}

/// What one look at the server found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Look {
    /// Every needed file is archived.
    Archived,
    /// This file is not archived yet, and why pgsafe thinks so.
    Pending { name: String, why: String },
}

/// How archive state is read: per file from `pg_wal/archive_status`, or (without the privilege
/// for that) from `pg_stat_archiver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    StatusDir,
    Archiver,
}

/// Waits, one [`ArchiveWaiter::poll`] at a time, until the needed files are archived or the
/// time is up. Polling is left to the caller so that a caller sharing the session (the
/// snapshot-mode holder) holds it only for one query at a time.
#[derive(Debug)]
pub struct ArchiveWaiter {
    needs: Vec<String>,
    version: PgVersion,
    timeout: Duration,
    began: Instant,
    method: Method,
    fallback_reason: Option<String>,
}

/// Pause between two looks.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

impl ArchiveWaiter {
    pub fn new(needs: Vec<String>, version: PgVersion, timeout: Duration) -> ArchiveWaiter {
        ArchiveWaiter {
            needs,
            version,
            timeout,
            began: Instant::now(),
            method: Method::StatusDir,
            fallback_reason: None,
        }
    }

    pub fn needs(&self) -> &[String] {
        &self.needs
    }

    /// One look. `Some` once the answer is final: all archived, the time is up, or the state
    /// could not be read.
    pub fn poll(&mut self, client: &mut Client) -> Option<ArchiveStatus> {
        let look = match self.look(client) {
            Ok(l) => l,
            Err(e) => {
                return Some(ArchiveStatus {
                    waited: true,
                    complete: false,
                    detail: format!(
                        "could not check WAL archiving: {e}; run `pgsafe stop` again to re-check"
                    ),
                });
            }
        };
        match look {
            Look::Archived => Some(ArchiveStatus {
                waited: true,
                complete: true,
                detail: format!(
                    "WAL archived: {} ({})",
                    self.needs.join(" and "),
                    match self.method {
                        Method::StatusDir => "checked in pg_wal/archive_status",
                        Method::Archiver => "judged from pg_stat_archiver",
                    }
                ),
            }),
            Look::Pending { .. } if self.began.elapsed() < self.timeout => None,
            Look::Pending { name, why } => Some(self.timed_out(client, &name, &why)),
        }
    }

    /// The answer when the caller stops waiting early (its client went away).
    pub fn interrupted(&self, why: &str) -> ArchiveStatus {
        ArchiveStatus {
            waited: true,
            complete: false,
            detail: format!(
                "the wait for WAL archiving was interrupted ({why}); run `pgsafe stop` again to \
                 re-check. The backup_label is saved; the backup is usable once {} archived",
                self.needs.join(" and ")
            ),
        }
    }

    fn timed_out(&self, client: &mut Client, name: &str, why: &str) -> ArchiveStatus {
        let failed = client
            .query_opt(
                "SELECT last_failed_wal, last_failed_time::text FROM pg_stat_archiver",
                &[],
            )
            .ok()
            .flatten()
            .and_then(|r| {
                let wal: Option<String> = r.try_get(0).ok()?;
                let at: Option<String> = r.try_get(1).ok()?;
                Some(format!("; the archiver last failed on {} at {}", wal?, at?))
            })
            .unwrap_or_default();
        let privilege = match &self.fallback_reason {
            Some(r) => format!(
                " (pgsafe could not list pg_wal/archive_status: {r}; grant pg_monitor on 12+, or \
                 EXECUTE on pg_ls_dir(text) on 11, so it can check each file instead of relying \
                 on pg_stat_archiver)"
            ),
            None => String::new(),
        };
        ArchiveStatus {
            waited: true,
            complete: false,
            detail: format!(
                "WAL file {name} is not archived after {}s ({why}{failed}){privilege}; check \
                 archive_command and the server log, then run `pgsafe stop` again to re-check. \
                 The backup_label is saved; the backup is usable once that WAL is archived",
                self.timeout.as_secs()
            ),
        }
    }

    fn look(&mut self, client: &mut Client) -> Result<Look, String> {
        if self.method == Method::StatusDir {
            match look_status_dir(client, self.version, &self.needs) {
                Ok(l) => return Ok(l),
                Err(e) if is_privilege_error(&e) => {
                    self.method = Method::Archiver;
                    self.fallback_reason = Some(super::db_message(&e));
                }
                Err(e) => return Err(super::db_message(&e)),
            }
        }
        look_archiver(client, &self.needs).map_err(|e| super::db_message(&e))
    }
}

fn is_privilege_error(e: &postgres::Error) -> bool {
    // 42501 insufficient_privilege.
    e.as_db_error().is_some_and(|d| d.code().code() == "42501")
}

/// `XLogArchiveIsBusy` for each needed file, from one listing of `archive_status` and `pg_wal`.
fn look_status_dir(
    client: &mut Client,
    version: PgVersion,
    needs: &[String],
) -> Result<Look, postgres::Error> {
    let status_names: Vec<String> = needs
        .iter()
        .flat_map(|n| [format!("{n}.done"), format!("{n}.ready")])
        .collect();
    let list_status = if version.at_least(12) {
        "SELECT name FROM pg_ls_archive_statusdir()"
    } else {
        "SELECT f AS name FROM pg_ls_dir('pg_wal/archive_status') AS f"
    };
    let sql = format!(
        "SELECT ARRAY(SELECT name FROM ({list_status}) AS s WHERE name = ANY($1)), \
                ARRAY(SELECT name FROM pg_ls_waldir() WHERE name = ANY($2))"
    );
    let row = client.query_one(&sql, &[&status_names, &needs])?;
    let statuses: Vec<String> = row.try_get(0)?;
    let in_wal: Vec<String> = row.try_get(1)?;
    Ok(judge_status_dir(needs, &statuses, &in_wal))
}

/// The pure part of [`look_status_dir`]: the rules of `XLogArchiveIsBusy`.
fn judge_status_dir(needs: &[String], statuses: &[String], in_wal: &[String]) -> Look {
    let has = |list: &[String], name: String| list.contains(&name);
    for n in needs {
        if has(statuses, format!("{n}.done")) {
            continue;
        }
        if has(statuses, format!("{n}.ready")) {
            return Look::Pending {
                name: n.clone(),
                why: "archive_status says .ready: the archiver has not archived it yet".into(),
            };
        }
        if has(in_wal, n.clone()) {
            return Look::Pending {
                name: n.clone(),
                why: "it is in pg_wal without an archive status yet".into(),
            };
        }
        // Neither status nor file: a checkpoint removed it, which it does only once archived.
    }
    Look::Archived
}

fn look_archiver(client: &mut Client, needs: &[String]) -> Result<Look, postgres::Error> {
    let row = client.query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])?;
    let last: Option<String> = row.try_get(0)?;
    Ok(judge_archiver(needs, last.as_deref()))
}

/// The conservative fallback: archived only if every needed name sorts at or before the last
/// archived file.
fn judge_archiver(needs: &[String], last: Option<&str>) -> Look {
    for n in needs {
        if last.is_none_or(|l| l < n.as_str()) {
            return Look::Pending {
                name: n.clone(),
                why: format!(
                    "pg_stat_archiver's last archived file is {}",
                    last.unwrap_or("none")
                ),
            };
        }
    }
    Look::Archived
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg16() -> WalSegSize {
        WalSegSize::new(16 * 1024 * 1024).unwrap()
    }

    #[test]
    fn needs_name_the_stop_segment_and_the_history_file() {
        let n = archive_needs(
            Lsn(0x0200_0028),
            Lsn(0x0300_0100),
            TimelineId(1),
            seg16(),
            false,
        );
        assert_eq!(
            n,
            [
                "000000010000000000000003",
                "000000010000000000000002.00000028.backup"
            ]
        );
        // A stop exactly on a segment boundary needs the previous segment; a standby writes no
        // history file.
        let n = archive_needs(
            Lsn(0x0200_0028),
            Lsn(0x0300_0000),
            TimelineId(2),
            seg16(),
            true,
        );
        assert_eq!(n, ["000000020000000000000002"]);
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn status_dir_rules_follow_xlog_archive_is_busy() {
        let needs = names(&["A", "A.1.backup"]);
        // The case of the defect: the stop segment is done, the history file still .ready.
        let l = judge_status_dir(&needs, &names(&["A.done", "A.1.backup.ready"]), &[]);
        assert!(matches!(l, Look::Pending { ref name, .. } if name == "A.1.backup"));
        assert_eq!(
            judge_status_dir(&needs, &names(&["A.done", "A.1.backup.done"]), &[]),
            Look::Archived
        );
        // No status and gone from pg_wal: removed after archiving.
        assert_eq!(judge_status_dir(&needs, &[], &[]), Look::Archived);
        // No status but still in pg_wal: busy.
        assert!(matches!(
            judge_status_dir(&needs, &names(&["A.done"]), &names(&["A.1.backup"])),
            Look::Pending { .. }
        ));
    }

    #[test]
    fn archiver_fallback_is_conservative() {
        let needs = names(&[
            "000000010000000000000003",
            "000000010000000000000002.00000028.backup",
        ]);
        assert!(matches!(judge_archiver(&needs, None), Look::Pending { .. }));
        assert!(matches!(
            judge_archiver(&needs, Some("000000010000000000000002.00000028.backup")),
            Look::Pending { .. }
        ));
        assert_eq!(
            judge_archiver(&needs, Some("000000010000000000000003")),
            Look::Archived
        );
    }
}
