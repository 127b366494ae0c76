//! Everything after the stop: label files, WAL (copied from `pg_wal` or awaited in the
//! archive, its records checked), manifest, completion marker.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{
    BackupError, BackupOptions, BackupWalError, check_cancel, now, open_store, put_file,
    stopped_wal, storage_error, tablespaces,
};
use crate::checksum::ChecksumAlgorithm;
use crate::copy::CopyReport;
use crate::datadir::DataDir;
use crate::fsutil::{self, FsError, IoContext};
use crate::info::{
    BackupInfo, INFO_FORMAT, INFO_FORMAT_FULL, TablespaceChange, TablespaceChangeKind,
    TablespaceInfo, WalInfo, WalMode, crc32c_hex,
};
use crate::layout::{
    COMPLETE_MARKER, INCOMPLETE_MARKER, LABEL_FILE, MANIFEST_FILE, MAP_FILE, WAL_DIR,
    incremental_target,
};
use crate::manifest::{ManifestVersion, ManifestWriter};
use crate::plan::BackupPlan;
use crate::progress::{Phase, Progress};
use crate::session::{BackupStopped, ServerInfo, Session, SessionError};
use crate::storage::ObjectName;
use crate::types::{Lsn, TimelineId, WalSegSize, WalSegment};
use crate::wal::{self, TimelineHistory};

/// Everything after the stop: label files, WAL, manifest, completion marker.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    opts: &BackupOptions,
    target: &super::Target,
    progress: &dyn Progress,
    info: &ServerInfo,
    plan: &BackupPlan,
    report: CopyReport,
    stopped: BackupStopped,
    slot: Option<String>,
    wal: &super::repo_wal::WalPlan<'_>,
    began: Instant,
    started_at: i64,
    tablespaces_before: &[tablespaces::ServerTablespace],
    decision: &super::parent::Decision,
) -> Result<BackupInfo, BackupError> {
    let label_bytes = stopped.label.as_bytes().to_vec();
    let store = open_store(target)?;
    put_file(&store, LABEL_FILE, &label_bytes)?;
    if !stopped.tablespace_map.is_empty() {
        put_file(&store, MAP_FILE, &stopped.tablespace_map)?;
    }
    let (start_lsn, start_tli) = (stopped.start_lsn, stopped.start_tli);
    let (stop_lsn, stop_tli) = (stopped.stop_lsn, stopped.stop_tli);
    let seg_size = info.wal_segment_size;
    let history = read_history(&opts.pgdata, stop_tli)?;
    let segments = wal::backup_wal_segments(
        start_lsn,
        start_tli,
        stop_lsn,
        stop_tli,
        seg_size,
        history.as_ref(),
    )
    .map_err(BackupWalError::from)?;
    let history_files =
        wal::backup_history_files(start_lsn, start_tli, stop_lsn, stop_tli, history.as_ref())
            .map_err(BackupWalError::from)?;
    let map_bytes = stopped.tablespace_map.clone();
    let stop_time_us = stopped.stop_time_us;
    let mut session = stopped.into_session();
    let encoding = session.info().server_encoding.clone();
    let mut tablespace_changes = tablespaces::changes(
        tablespaces_before,
        &tablespaces::list(session.client(), &encoding)?,
    );
    for c in &tablespace_changes {
        progress.warn(&match c.change {
            TablespaceChangeKind::Created => format!(
                "{c}: its CREATE TABLESPACE is in the backup's WAL and would be replayed with the \
                 original location, so pgsafe restore refuses this backup; take a new backup now \
                 that the tablespace exists"
            ),
            TablespaceChangeKind::Dropped => format!("{c}"),
        });
    }
    check_cancel(opts)?;
    progress.phase(Phase::Wal);
    let wal_info = match (wal.mode, wal.repository.as_ref()) {
        (WalMode::Include, _) => {
            if info.in_recovery {
                wait_received(&mut session, stop_lsn, Duration::from_secs(300))?;
            }
            let range = (start_lsn, stop_lsn);
            let (bytes, crc32c, created) = copy_wal(
                opts,
                target,
                info,
                &segments,
                &history_files,
                range,
                progress,
            )?;
            note_created(created, &mut tablespace_changes, progress);
            WalInfo {
                mode: WalMode::Include,
                segments: segments.clone(),
                history_files,
                bytes,
                source: "included in pg_wal/ of the backup".into(),
                crc32c,
                reason: Some(wal.reason.clone()),
                repository: None,
            }
        }
        (WalMode::Archive, Some(archive)) => {
            // Every file of the range, not only the stop segment: the repository's archive is
            // what restores read, and a segment it lacks (pushed elsewhere while the command
            // pointed elsewhere, dropped by a queue limit) would make the backup unusable.
            let mut needs: Vec<super::repo_wal::Needed> =
                segments.iter().map(|s| (s.tli, s.to_string())).collect();
            for h in &history_files {
                if let Some(tli) = wal::history_file_tli(h) {
                    needs.push((tli, h.clone()));
                }
            }
            if !info.in_recovery {
                // The backup history file (a primary writes one; `do_pg_backup_stop`), named
                // after the start segment on the stop timeline (session/archive.rs).
                let start_seg = WalSegment::containing(start_lsn, stop_tli, seg_size);
                needs.push((
                    stop_tli,
                    format!("{start_seg}.{:08X}.backup", start_lsn.0 % seg_size.bytes()),
                ));
            }
            let detail = super::repo_wal::wait_in_repository(
                archive,
                &needs,
                opts.archive_timeout,
                opts.cancel.as_deref(),
                session.client(),
            )?;
            // Read back and checked as an included range is while copied: a backup whose WAL
            // cannot be replayed is never reported as a success.
            let created = super::repo_wal::check_archived(
                archive,
                info,
                &segments,
                (start_lsn, stop_lsn),
                progress,
            )?;
            note_created(created, &mut tablespace_changes, progress);
            WalInfo {
                mode: WalMode::Archive,
                segments: segments.clone(),
                history_files,
                bytes: 0,
                source: format!("the repository's WAL archive: {detail}"),
                crc32c: Default::default(),
                reason: Some(wal.reason.clone()),
                repository: Some(archive.reference()),
            }
        }
        (WalMode::Archive, None) => {
            if !info.archiving_applies() {
                return Err(BackupWalError::NotArchiving {
                    archive_mode: info.archive_mode.clone(),
                    on_standby: info.in_recovery,
                }
                .into());
            }
            // The stop segment and the backup history file, each checked as the server's own
            // pg_backup_stop(wait => true) does (session/archive.rs).
            let needs = crate::session::archive_needs(
                start_lsn,
                stop_lsn,
                stop_tli,
                seg_size,
                info.in_recovery,
            );
            let st = session.wait_for_archive(needs, opts.archive_timeout.as_secs());
            if !st.complete {
                return Err(BackupWalError::NotArchived { detail: st.detail }.into());
            }
            WalInfo {
                mode: WalMode::Archive,
                segments: segments.clone(),
                history_files,
                bytes: 0,
                source: format!(
                    "the server's WAL archive (archive_command); restore with a restore_command \
                     that reads it. {}",
                    st.detail
                ),
                crc32c: Default::default(),
                reason: Some(wal.reason.clone()),
                repository: None,
            }
        }
        (WalMode::None, _) => WalInfo {
            mode: WalMode::None,
            segments: segments.clone(),
            history_files,
            bytes: 0,
            source: "not handled by pgsafe (WAL mode none): the listed segments must come from \
                     your own WAL archive at restore time"
                .into(),
            crc32c: Default::default(),
            reason: Some(wal.reason.clone()),
            repository: None,
        },
    };
    if let Some(slot) = &slot {
        // Temporary slots vanish with the session anyway; drop it now to release the WAL.
        let _ = session
            .client()
            .execute("SELECT pg_drop_replication_slot($1)", &[slot]);
    }

    let label = crate::label::BackupLabel::parse(&label_bytes).map_err(SessionError::from)?;
    let copy_secs = report.elapsed.as_secs_f64();
    let backup_info = BackupInfo {
        format: if decision.backup_type.is_full() {
            INFO_FORMAT_FULL
        } else {
            INFO_FORMAT
        },
        pgsafe_version: env!("CARGO_PKG_VERSION").into(),
        label: opts.label.clone(),
        system_identifier: info.system_id,
        server_version: info.version,
        from_standby: info.in_recovery,
        start_lsn,
        start_tli,
        start_wal: WalSegment::containing(start_lsn, start_tli, seg_size),
        checkpoint_lsn: label.checkpoint_lsn(),
        stop_lsn,
        stop_tli,
        stop_wal: stopped_wal(stop_lsn, stop_tli, seg_size),
        wal_segment_size: seg_size,
        data_checksums: DataDir::open(&opts.pgdata)?
            .control()?
            .data_checksum_version
            != 0,
        compression: opts.compression,
        checksum: opts.checksum,
        wal: wal_info,
        tablespaces: plan
            .tablespaces
            .iter()
            .map(|(oid, p)| TablespaceInfo {
                oid: *oid,
                original_path: p.clone(),
            })
            .collect(),
        files: report.files.len() as u64,
        bytes: report.bytes,
        stored_bytes: report.stored_bytes,
        vanished_files: report.vanished.len() as u64,
        shrunk_files: report.resized.len() as u64,
        started_at,
        finished_at: now(),
        stop_time: stop_time_us.map(crate::repo::doc::format_time),
        duration_secs: began.elapsed().as_secs_f64(),
        copy_secs,
        copy_mib_per_sec: if copy_secs > 0.0 {
            report.bytes as f64 / (1024.0 * 1024.0) / copy_secs
        } else {
            0.0
        },
        pgdata_owner: fsutil::file_owner(&opts.pgdata),
        pgdata_mode: Some(plan.root_mode),
        tablespace_changes,
        page_checksums: report.pages.clone(),
        source_pgdata: fs::canonicalize(&opts.pgdata).ok().map(|p| {
            use std::os::unix::ffi::OsStrExt;
            crate::textbytes::TextBytes::from(p.as_os_str().as_bytes())
        }),
        directories: plan
            .dirs
            .iter()
            .map(|d| crate::textbytes::TextBytes::from(d.rel_path.as_bytes()))
            .collect(),
        backup_type: decision.backup_type,
        backup_type_reason: Some(decision.reason.clone()),
        parent: decision.parent.as_ref().map(|p| p.id.to_string()),
        parent_start_lsn: decision.parent.as_ref().map(|p| p.info.start_lsn),
        changed_source: decision.parent.as_ref().map(|p| p.changed_source()),
        bytes_read: Some(report.bytes_read),
        incremental_files: report
            .files
            .iter()
            .filter(|f| incremental_target(f.rel_path.as_bytes(), decision.backup_type).is_some())
            .count() as u64,
    };
    let json = backup_info.to_json().map_err(BackupError::EncodeInfo)?;
    // The manifest lists pgsafe.json too (so pg_verifybackup accepts the complete backup), but
    // pgsafe.json itself is written after the manifest: until it exists the backup is
    // incomplete, and a verifier sees a file missing.
    progress.phase(Phase::Manifest);
    let mut small: Vec<(&[u8], &[u8])> = vec![(LABEL_FILE.as_bytes(), &label_bytes)];
    if !map_bytes.is_empty() {
        small.push((MAP_FILE.as_bytes(), &map_bytes));
    }
    small.push((COMPLETE_MARKER.as_bytes(), &json));
    let manifest = build_manifest(
        info,
        &report,
        &small,
        (start_lsn, start_tli),
        (stop_lsn, stop_tli),
        history.as_ref(),
        opts.checksum,
    )?;
    put_file(&store, MANIFEST_FILE, &manifest)?;
    // Last chance to stop before the backup counts as complete: a backup into a repository is
    // cancelled when its lease lapsed (repo/lease.rs), and then may already be half deleted.
    super::check_cancel(opts)?;
    put_file(&store, COMPLETE_MARKER, &json)?;
    // Deleting fsyncs the folder.
    let marker = ObjectName::new(INCOMPLETE_MARKER).map_err(|e| storage_error(&store, e))?;
    store
        .backend
        .delete(&marker)
        .map_err(|e| storage_error(&store, e))?;
    drop(session);
    Ok(backup_info)
}

/// Records the tablespaces the backup's WAL creates. A tablespace created (and dropped again)
/// between the two lists is in neither, but its CREATE TABLESPACE is in the WAL the restore
/// replays: see wal::record::TablespaceCreate.
fn note_created(
    created: Vec<wal::record::TablespaceCreate>,
    changes: &mut Vec<TablespaceChange>,
    progress: &dyn Progress,
) {
    for t in created {
        if changes
            .iter()
            .any(|c| c.oid == t.oid && c.change == TablespaceChangeKind::Created)
        {
            continue;
        }
        let c = TablespaceChange {
            oid: t.oid,
            change: TablespaceChangeKind::Created,
            location: String::from_utf8_lossy(&t.location).into_owned(),
        };
        progress.warn(&format!(
            "{c} (its CREATE TABLESPACE at {} is in the backup's WAL, though the tablespace was \
             gone when the backup stopped): replaying it would create directories at that \
             location, so pgsafe restore refuses this backup; take a new backup",
            t.lsn
        ));
        changes.push(c);
    }
}

fn read_history(pgdata: &Path, tli: TimelineId) -> Result<Option<TimelineHistory>, BackupError> {
    if tli.0 <= 1 {
        return Ok(None);
    }
    let path = pgdata.join(WAL_DIR).join(tli.history_file_name());
    let bytes = fs::read(&path).ctx("read timeline history", &path)?;
    TimelineHistory::parse(tli, &bytes)
        .map(Some)
        .map_err(|source| BackupWalError::History { path, source }.into())
}

/// On a standby the last segment may still be arriving: wait until the stop LSN is received.
fn wait_received(session: &mut Session, stop: Lsn, limit: Duration) -> Result<(), BackupError> {
    let t = Instant::now();
    loop {
        let got = session
            .client()
            .query_one(
                "SELECT coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text",
                &[],
            )
            .and_then(|r| r.try_get::<_, Option<String>>(0))
            .map_err(|e| BackupWalError::ReceiveCheck(e.into()))?;
        if let Some(l) = got.and_then(|s| s.parse::<Lsn>().ok()) {
            if l >= stop {
                return Ok(());
            }
        }
        if t.elapsed() > limit {
            return Err(BackupWalError::NotReceived {
                stop,
                secs: limit.as_secs(),
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Copies the backup's WAL segments (and history files) from PGDATA/pg_wal into the backup,
/// checking each segment's size and first page header, so a recycled or foreign file is never
/// taken, and every record from `range.0` to `range.1` as verify does (a backup whose WAL
/// cannot be replayed is not reported as a success). Stored uncompressed, so the restored
/// `pg_wal/` is usable as it is.
/// What [`copy_wal`] copied: bytes, the CRC-32C of each file, and the `CREATE TABLESPACE`
/// records of the backup's WAL range.
type CopiedWal = (
    u64,
    std::collections::BTreeMap<String, String>,
    Vec<wal::record::TablespaceCreate>,
);

fn copy_wal(
    opts: &BackupOptions,
    target: &super::Target,
    info: &ServerInfo,
    segments: &[WalSegment],
    history_files: &[String],
    range: (Lsn, Lsn),
    progress: &dyn Progress,
) -> Result<CopiedWal, BackupError> {
    let mut records: Option<wal::record::RecordChecker> = None;
    let src = opts.pgdata.join(WAL_DIR);
    let mut crcs = std::collections::BTreeMap::new();
    // A folder gets pg_wal/ (and archive_status/ below) as PGDATA has them; object storage
    // has no folders (restore makes them from the backup's directory list).
    let dst = target.folder().map(|f| f.join(WAL_DIR));
    if let Some(dst) = &dst {
        fs::create_dir_all(dst).ctx("create", dst)?;
    }
    let store = open_store(target)?;
    let seg_size = info.wal_segment_size;
    let mut total = 0;
    // History files are small and not counted; the segments are the work.
    progress.plan(
        segments.len() as u64,
        (segments.len() as u64).saturating_mul(seg_size.bytes()),
    );
    for seg in segments {
        let name = seg.to_string();
        let path = src.join(&name);
        let mut bytes = Vec::with_capacity(seg_size.bytes() as usize);
        match File::open(&path) {
            Ok(f) => f
                .take(seg_size.bytes() + 1)
                .read_to_end(&mut bytes)
                .ctx("read", &path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BackupWalError::SegmentMissing {
                    name,
                    dir: src.clone(),
                }
                .into());
            }
            Err(e) => return Err(FsError::new("open", path, e).into()),
        };
        if bytes.len() as u64 != seg_size.bytes() {
            return Err(BackupWalError::SegmentSize {
                path,
                len: bytes.len() as u64,
                expected: seg_size.bytes(),
            }
            .into());
        }
        wal::check_segment_header(
            &bytes,
            *seg,
            seg_size,
            Some(info.system_id),
            Some(info.version.major()),
        )
        .map_err(|source| BackupWalError::SegmentHeader {
            path: path.clone(),
            source,
        })?;
        check_records(&mut records, &bytes, *seg, range, seg_size, &path)?;
        put_file(&store, &format!("{WAL_DIR}/{name}"), &bytes)?;
        crcs.insert(name, crc32c_hex(&bytes));
        progress.bytes(bytes.len() as u64);
        progress.file_done(&format!("pg_wal/{seg}"), bytes.len() as u64);
        total += bytes.len() as u64;
    }
    if let Some(c) = records.as_mut() {
        let end = segments
            .last()
            .and_then(|s| s.start_lsn(seg_size).ok())
            .map_or(range.1, |l| Lsn(l.0.saturating_add(seg_size.bytes())));
        c.finish(end).map_err(|source| BackupWalError::Incomplete {
            dir: src.clone(),
            source,
        })?;
    }
    for h in history_files {
        let path = src.join(h);
        let bytes = fs::read(&path).ctx("read timeline history", &path)?;
        put_file(&store, &format!("{WAL_DIR}/{h}"), &bytes)?;
        crcs.insert(h.clone(), crc32c_hex(&bytes));
        total += bytes.len() as u64;
    }
    if let Some(dst) = &dst {
        let status = dst.join("archive_status");
        fs::create_dir_all(&status).ctx("create", &status)?;
        fsutil::sync_dir(&status)?;
        fsutil::sync_dir(dst)?;
    }
    let created = records
        .map(|c| c.tablespaces_created().to_vec())
        .unwrap_or_default();
    Ok((total, crcs, created))
}

/// Feeds one segment (its first header already checked) to the record check of the backup's
/// WAL range, creating the checker from the first segment's block size.
pub(super) fn check_records(
    checker: &mut Option<wal::record::RecordChecker>,
    bytes: &[u8],
    seg: WalSegment,
    (start, stop): (Lsn, Lsn),
    seg_size: WalSegSize,
    path: &Path,
) -> Result<(), BackupWalError> {
    let header =
        wal::WalPageHeader::decode(bytes).map_err(|source| BackupWalError::SegmentHeader {
            path: path.to_owned(),
            source,
        })?;
    let blcksz = header.long.map_or(0, |l| l.xlog_blcksz);
    let c = checker
        .get_or_insert_with(|| wal::record::RecordChecker::new(start, stop, seg_size, blcksz));
    let first = seg
        .start_lsn(seg_size)
        .map_err(|source| BackupWalError::SegmentStart {
            path: path.to_owned(),
            source,
        })?;
    if c.blcksz() != u64::from(blcksz) || blcksz == 0 {
        return Err(BackupWalError::BlockSize {
            path: path.to_owned(),
            blcksz,
        });
    }
    for (k, page) in bytes.chunks(blcksz as usize).enumerate() {
        if c.is_done() {
            break;
        }
        let lsn = Lsn(first.0 + k as u64 * u64::from(blcksz));
        c.feed_page(lsn, page, seg.tli)
            .map_err(|source| BackupWalError::Damaged {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(())
}

/// The manifest: every stored data file and the small files written by pgsafe itself
/// (`backup_label`, `tablespace_map`, `pgsafe.json`), with WAL-Ranges
/// from the label's start to the stop LSN.
fn build_manifest(
    info: &ServerInfo,
    report: &CopyReport,
    small_files: &[(&[u8], &[u8])],
    (start_lsn, start_tli): (Lsn, TimelineId),
    (stop_lsn, stop_tli): (Lsn, TimelineId),
    history: Option<&TimelineHistory>,
    alg: ChecksumAlgorithm,
) -> Result<Vec<u8>, BackupError> {
    let version = ManifestVersion::for_server(info.version);
    let mut w = ManifestWriter::new(version, Some(info.system_id))?;
    let sum = |bytes: &[u8]| alg.of(bytes).map(|h| (alg, h));
    let t = now();
    for (path, content) in small_files {
        w.add_file(path, content.len() as u64, t, sum(content))?;
    }
    for f in &report.files {
        let checksum = f.checksum.clone().map(|h| (alg, h));
        w.add_file(f.rel_path.as_bytes(), f.size, f.mtime, checksum)?;
    }
    let ranges = wal::backup_wal_ranges(start_lsn, start_tli, stop_lsn, stop_tli, history)
        .map_err(BackupWalError::from)?;
    Ok(w.finish(&ranges))
}
