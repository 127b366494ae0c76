//! Writing into the target: directories, tablespace links, the files copied by parallel
//! workers, the metadata files, pg_control last.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::delta::{self, DeltaCounts};
use super::report::restore_marker;
use super::source::SourceRead;
use super::{
    BackupEnd, ConfigOutcome, Copied, RestoreError, RestoreOptions, Source, SourceFile,
    TablespacePlan, Writer, backup_end, isolation, recovery_files,
};
use crate::control::{ControlFile, apply_sentinel, has_sentinel};
use crate::fsutil::{self, FsError, IoContext};
use crate::layout::{
    CONTROL_FILE, LABEL_FILE, MAP_FILE, RESTORE_MARKER_FILE, StoredBackup, WAL_DIR,
};
use crate::plan::RelPath;
use crate::pool::{self, Halt, Stopped};
use crate::progress::{Phase, Progress};

impl Writer<'_> {
    /// Where a PGDATA-relative path goes: inside a tablespace's location for
    /// `pg_tblspc/<oid>/…`, else inside the target.
    pub(super) fn dest_of(&self, rel: &RelPath) -> PathBuf {
        if let Some((t, rest)) = self.tablespace_part(rel) {
            return match rest {
                Some(rest) => t.location.join(rest.as_path()),
                None => t.location.clone(),
            };
        }
        self.target.join(rel.as_path())
    }

    /// For `pg_tblspc/<oid>[/rest]` of a mapped tablespace: the tablespace and the rest.
    fn tablespace_part(&self, rel: &RelPath) -> Option<(&TablespacePlan, Option<RelPath>)> {
        let b = rel.as_bytes().strip_prefix(b"pg_tblspc/")?;
        let (oid, rest) = match b.iter().position(|&c| c == b'/') {
            Some(i) => (&b[..i], Some(RelPath::from_bytes(&b[i + 1..]))),
            None => (b, None),
        };
        let oid: u32 = std::str::from_utf8(oid).ok()?.parse().ok()?;
        let t = self.tablespaces.iter().find(|t| t.oid == oid)?;
        Some((t, rest))
    }

    /// `pg_tblspc/<oid>` of a planned tablespace: a link the restore makes, not a directory.
    pub(super) fn is_tablespace_link(&self, rel: &RelPath) -> bool {
        matches!(self.tablespace_part(rel), Some((_, None)))
    }

    /// Gives `path` to the owner (following a symbolic link: the target may be one).
    fn chown(&self, path: &Path) -> Result<(), FsError> {
        if let Some(o) = self.owner {
            std::os::unix::fs::chown(path, Some(o.uid.as_raw()), Some(o.gid.as_raw()))
                .ctx("change owner of", path)?;
        }
        Ok(())
    }

    /// Gives a symbolic link itself to the owner.
    fn lchown(&self, path: &Path) -> Result<(), FsError> {
        if let Some(o) = self.owner {
            std::os::unix::fs::lchown(path, Some(o.uid.as_raw()), Some(o.gid.as_raw()))
                .ctx("change owner of", path)?;
        }
        Ok(())
    }

    fn set_dir_mode(&self, path: &Path) -> Result<(), FsError> {
        fs::set_permissions(path, fs::Permissions::from_mode(self.modes.dir))
            .ctx("set permissions of", path)?;
        self.chown(path)
    }

    /// Creates the target (or takes the empty one) with the data directory's mode and owner.
    /// Returns the directories whose entries changed (to fsync).
    pub(super) fn make_root(&self, exists: bool) -> Result<Vec<PathBuf>, FsError> {
        let mut changed = Vec::new();
        if !exists {
            changed = create_ancestors(self.target)?;
            DirBuilder::new()
                .mode(0o700)
                .create(self.target)
                .ctx("create", self.target)?;
        }
        self.set_dir_mode(self.target)?;
        Ok(changed)
    }

    /// Creates one directory of the source; `None` for the `pg_tblspc/<oid>` entries of mapped
    /// tablespaces (those become links, see [`Writer::make_tablespace`]).
    pub(super) fn make_dir(&self, rel: &RelPath) -> Result<Option<PathBuf>, FsError> {
        if let Some((_, None)) = self.tablespace_part(rel) {
            return Ok(None);
        }
        let path = self.dest_of(rel);
        match DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(FsError::new("create directory", path, e)),
        }
        self.set_dir_mode(&path)?;
        Ok(Some(path))
    }

    /// Creates a tablespace location (and missing parents) and the `pg_tblspc/<oid>` link to
    /// it. Returns the directories whose entries changed (to fsync).
    pub(super) fn make_tablespace(&self, t: &TablespacePlan) -> Result<Vec<PathBuf>, FsError> {
        let mut changed = Vec::new();
        let loc = &t.location;
        // A directory pgsafe did not create keeps its owner and mode: the location may be
        // an existing directory a hostile tablespace_map names (docs/threat-model.md).
        if !t.existed {
            changed = create_ancestors(loc)?;
            DirBuilder::new()
                .mode(0o700)
                .create(loc)
                .ctx("create", loc)?;
            self.set_dir_mode(loc)?;
        }
        let tblspc = self.target.join("pg_tblspc");
        if !tblspc.is_dir() {
            DirBuilder::new()
                .mode(0o700)
                .create(&tblspc)
                .ctx("create", &tblspc)?;
            self.set_dir_mode(&tblspc)?;
        }
        let link = tblspc.join(t.oid.to_string());
        std::os::unix::fs::symlink(loc, &link).ctx("create tablespace link", &link)?;
        self.lchown(&link)?;
        changed.push(tblspc);
        Ok(changed)
    }

    /// Creates a new file with the restored mode and owner.
    fn create_file(&self, path: &Path) -> Result<File, FsError> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.modes.file)
            .open(path)
            .ctx("create", path)?;
        f.set_permissions(fs::Permissions::from_mode(self.modes.file))
            .ctx("set permissions of", path)?;
        if let Some(o) = self.owner {
            nix::unistd::fchown(&f, Some(o.uid), Some(o.gid))
                .map_err(|e| FsError::new("change owner of", path, io::Error::from(e)))?;
        }
        Ok(f)
    }

    /// Writes a small file durably: temporary name, fsync, rename, fsync the directory.
    pub(super) fn write_durable(&self, path: &Path, bytes: &[u8]) -> Result<(), FsError> {
        let dir = fsutil::parent_dir(path);
        let mut tmp_name = OsString::from(".");
        tmp_name.push(path.file_name().unwrap_or_default());
        tmp_name.push(".pgsafe-tmp");
        let tmp = dir.join(tmp_name);
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let mut f = self.create_file(&tmp)?;
            f.write_all(bytes).ctx("write", &tmp)?;
            if self.sync {
                f.sync_all().ctx("fsync", &tmp)?;
            }
            fs::rename(&tmp, path).ctx("rename into place", path)?;
            if self.sync {
                fsutil::sync_dir(&dir)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The data files, by parallel workers.
    pub(super) fn copy_files(
        &self,
        files: &[SourceFile],
        store: Option<&StoredBackup>,
        opts: &RestoreOptions,
        skip_checksums: bool,
        delta: Option<&DeltaCounts>,
        progress: &dyn Progress,
    ) -> Result<Copied, RestoreError> {
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(files[i].size));
        // pg_control is written last, in its own phase.
        progress.plan(
            files.len() as u64,
            files.iter().map(|f| f.size).sum::<u64>(),
        );
        let halt = Halt::new(opts.cancel.as_deref());
        let ctx = CopyCtx {
            w: self,
            store,
            halt: &halt,
            check_sums: !skip_checksums,
            delta,
            progress,
        };
        let outs = pool::run(
            opts.jobs,
            &order,
            &halt,
            || (Copied::default(), Vec::new()),
            |(out, buf), &i| {
                let f = &files[i];
                let n = ctx.restore_file(f, buf)?;
                out.files += 1;
                out.bytes += n;
                progress.file_done(&f.rel.to_string(), n);
                Ok(())
            },
        )
        .map_err(|e| self.stopped(e))?;
        if self.sync {
            progress.phase(Phase::Sync);
            let paths: Vec<PathBuf> = files.iter().map(|f| self.dest_of(&f.rel)).collect();
            let halt = Halt::new(opts.cancel.as_deref());
            pool::run(
                opts.jobs,
                &paths,
                &halt,
                || (),
                |_, p| {
                    File::open(p)
                        .and_then(|f| f.sync_all())
                        .ctx("fsync", p)
                        .map_err(RestoreError::from)
                },
            )
            .map_err(|e| self.stopped(e))?;
        }
        Ok(outs
            .iter()
            .map(|o| &o.0)
            .fold(Copied::default(), |a, o| Copied {
                files: a.files + o.files,
                bytes: a.bytes + o.bytes,
            }))
    }

    /// The error of a parallel step that stopped.
    fn stopped(&self, e: Stopped<RestoreError>) -> RestoreError {
        match e {
            Stopped::Failed(e) => e,
            Stopped::Cancelled => RestoreError::Cancelled(self.target.to_owned()),
        }
    }

    /// `backup_label`, `tablespace_map`, recovery settings, restore marker, WAL `.done` files.
    /// Returns the names of the recovery files written.
    pub(super) fn write_small_files(
        &self,
        source: &Source,
        opts: &RestoreOptions,
        map_bytes: &[u8],
        control: &ControlFile,
    ) -> Result<(Vec<String>, ConfigOutcome), RestoreError> {
        let t = self.target;
        // The status directory exists in every backup; create it for copies or old layouts.
        let status = t.join("pg_wal/archive_status");
        if !status.is_dir() {
            fs::create_dir_all(&status).ctx("create", &status)?;
            self.set_dir_mode(&t.join(WAL_DIR))?;
            self.set_dir_mode(&status)?;
        }
        for name in &source.wal_names {
            let done = status.join(format!("{name}.done"));
            let f = self.create_file(&done)?;
            if self.sync {
                f.sync_all().ctx("fsync", &done)?;
            }
        }
        if self.sync {
            fsutil::sync_dir(&status)?;
        }
        self.write_durable(&t.join(LABEL_FILE), source.label.as_bytes())?;
        if !map_bytes.is_empty() {
            self.write_durable(&t.join(MAP_FILE), map_bytes)?;
        }
        let header = format!(
            "recovery settings written by pgsafe restore at {} (from {})",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
            source.root.display()
        );
        let end = if opts.recovery.is_empty() {
            backup_end_of(t, source, control)
        } else {
            BackupEnd::Immediate
        };
        let rf = recovery_files(&opts.recovery, source.version, &header, end);
        let mut written = Vec::new();
        if let Some(conf) = &rf.recovery_conf {
            self.write_durable(&t.join("recovery.conf"), conf)?;
            written.push("recovery.conf".to_owned());
        }
        // postgresql.auto.conf: the source's recovery settings commented out, the copy's
        // settings and (12+) the recovery settings appended.
        let config = isolation::write_config(self, source, opts, rf.auto_conf_append.as_deref())?;
        if rf.auto_conf_append.is_some() {
            written.push("postgresql.auto.conf".to_owned());
        }
        if let Some(signal) = rf.signal {
            self.write_durable(&t.join(signal), b"")?;
            written.push(signal.to_owned());
        }
        let marker = restore_marker(source);
        self.write_durable(&t.join(RESTORE_MARKER_FILE), &marker.to_json())?;
        Ok((written, config))
    }

    /// The backup's `global/pg_control`, read once: the recovery settings depend on it
    /// ([`backup_end`]) and [`Writer::write_control`] writes it.
    pub(super) fn read_control(
        &self,
        f: &SourceFile,
        store: Option<&StoredBackup>,
    ) -> Result<ControlFile, RestoreError> {
        let file = f.open(store).ctx("open", &f.path)?.into_reader();
        let mut bytes = Vec::with_capacity(8192);
        f.compression
            .decoder(file)
            .and_then(|d| d.take(1 << 16).read_to_end(&mut bytes))
            .ctx("read", &f.path)?;
        Ok(ControlFile::decode(&bytes)?)
    }

    /// `global/pg_control` with the sentinel, written last and durably.
    pub(super) fn write_control(
        &self,
        mut control: ControlFile,
    ) -> Result<ControlFile, RestoreError> {
        apply_sentinel(&mut control);
        let out = control.encode();
        // Never write a pg_control the server would reject for its CRC or layout.
        let check = ControlFile::decode(&out)?;
        debug_assert!(has_sentinel(&check));
        let path = self.target.join(CONTROL_FILE);
        self.write_durable(&path, &out)?;
        Ok(check)
    }
}

/// How a restore without recovery options ends: from the verification's WAL walk, or else
/// [`backup_end`] reads the WAL restored into `target`'s `pg_wal`.
fn backup_end_of(target: &Path, source: &Source, control: &ControlFile) -> BackupEnd {
    let stop = source.info.as_ref().map(|i| i.stop_lsn);
    let from_standby = source.label.is_from_standby();
    let Some(at) = crate::control::consistency_point(control, from_standby, stop) else {
        return BackupEnd::Immediate;
    };
    // Verification walked to the same point (the same pg_control): its answer.
    if let Some(scan) = source.backup_end_scan.filter(|s| s.consistent_at == at) {
        return backup_end::from_scan(&scan);
    }
    backup_end::decide(
        &target.join(WAL_DIR),
        source.label.start_lsn(),
        at,
        control.xlog_seg_size,
        control.xlog_blcksz,
    )
}

/// Creates the missing ancestors of `path` (not `path` itself; mode 0755 less the umask, so
/// the server user can traverse them) and returns every directory whose entries change:
/// the parent of `path` and the parent of each ancestor created.
fn create_ancestors(path: &Path) -> Result<Vec<PathBuf>, FsError> {
    let mut missing = Vec::new();
    let mut p = fsutil::parent_dir(path);
    while !p.exists() {
        missing.push(p.clone());
        let up = fsutil::parent_dir(&p);
        if up == p {
            break;
        }
        p = up;
    }
    let mut changed = vec![fsutil::parent_dir(path)];
    for d in missing.iter().rev() {
        match DirBuilder::new().mode(0o755).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(FsError::new("create", d, e)),
        }
        changed.push(fsutil::parent_dir(d));
    }
    Ok(changed)
}

/// Shared state of the parallel writers.
struct CopyCtx<'a> {
    w: &'a Writer<'a>,
    /// The stored backup (`None` for a copy).
    store: Option<&'a StoredBackup>,
    /// The writers' stop state (first error, Ctrl-C).
    halt: &'a Halt<'a, RestoreError>,
    /// Check sizes and checksums while writing (when the backup was not fully verified first).
    check_sums: bool,
    /// A delta restore: the target's existing files are merged block by block ([`delta`]).
    delta: Option<&'a DeltaCounts>,
    progress: &'a dyn Progress,
}

/// Bytes per read when the data passes through pgsafe (decompressing, checksumming): small
/// enough to stay in the CPU cache between the kernel's copy and ours.
const CHUNK: usize = 128 << 10;
/// Bytes per kernel copy (`copy_file_range`) call.
const KERNEL_CHUNK: u64 = 8 << 20;

impl CopyCtx<'_> {
    fn damaged(&self, f: &SourceFile, detail: String) -> RestoreError {
        RestoreError::Damaged {
            path: f.rel.to_string(),
            detail,
            target: self.w.target.to_owned(),
        }
    }

    fn more_than_manifest(&self, f: &SourceFile) -> RestoreError {
        self.damaged(
            f,
            format!(
                "it holds more than the {} bytes the manifest says (writing stopped there)",
                f.size
            ),
        )
    }

    fn step(&self, n: usize) -> Result<(), RestoreError> {
        self.progress.bytes(n as u64);
        if self.halt.stopped() {
            return Err(RestoreError::Cancelled(self.w.target.to_owned()));
        }
        Ok(())
    }

    /// Restores one file; returns its size.
    fn restore_file(&self, f: &SourceFile, buf: &mut Vec<u8>) -> Result<u64, RestoreError> {
        let src = f.open(self.store).ctx("open", &f.path)?;
        // Never more than the manifest's size (+1 to notice more): a small compressed file can
        // inflate to terabytes, and a plain one can grow after the checks.
        let limit = f.size.saturating_add(1);
        let dest = self.w.dest_of(&f.rel);
        if let Some(counts) = self.delta {
            if let Some(out) = delta::open_existing(&dest)? {
                return self.merge_file(f, src, out, &dest, buf, counts);
            }
        }
        let mut out = self.w.create_file(&dest)?;
        let check = self.check_sums && f.checksum.is_some();
        let mut size = 0u64;
        if let (SourceRead::File(src), true) = (&src, f.compression.is_none() && !check) {
            // Plain local file: let the kernel copy (copy_file_range), a chunk at a time for
            // progress.
            loop {
                let chunk = KERNEL_CHUNK.min(limit - size);
                if chunk == 0 {
                    break;
                }
                let n = io::copy(&mut src.take(chunk), &mut out).ctx("copy into", &dest)?;
                if n == 0 {
                    break;
                }
                size += n;
                self.step(n as usize)?;
            }
        } else {
            if buf.is_empty() {
                buf.resize(CHUNK, 0);
            }
            let alg = f.checksum.as_ref().map(|(a, _)| *a).filter(|_| check);
            let mut hasher = alg
                .unwrap_or(crate::checksum::ChecksumAlgorithm::None)
                .hasher();
            let mut reader = f
                .compression
                .decoder(src.into_reader())
                .ctx("read", &f.path)?
                .take(limit);
            loop {
                let n = match reader.read(buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if !f.compression.is_none() => {
                        return Err(self.damaged(f, format!("it does not decompress: {e}")));
                    }
                    Err(e) => return Err(FsError::new("read", &f.path, e).into()),
                };
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).ctx("write", &dest)?;
                size += n as u64;
                self.step(n)?;
            }
            if size > f.size {
                return Err(self.more_than_manifest(f));
            }
            if let (Some((_, expected)), Some(found)) = (&f.checksum, hasher.finish_hex()) {
                if !found.eq_ignore_ascii_case(expected) {
                    return Err(
                        self.damaged(f, format!("checksum {found}, the manifest says {expected}"))
                    );
                }
            }
        }
        if size > f.size {
            return Err(self.more_than_manifest(f));
        }
        if size != f.size {
            return Err(self.damaged(f, format!("{size} bytes, the manifest says {}", f.size)));
        }
        if let Some(counts) = self.delta {
            counts.new_file(size);
        }
        if self.w.sync {
            // Start writeback now; the fsync comes in one pass after every file is written
            // (far fewer journal commits than an fsync per file while writing).
            let _ = nix::fcntl::posix_fadvise(
                &out,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
        Ok(size)
    }

    /// A delta restore's file the target has: only the blocks that differ are written, then it
    /// is cut to the backup's length and given the restored mode and owner.
    fn merge_file(
        &self,
        f: &SourceFile,
        src: SourceRead<'_>,
        out: File,
        dest: &Path,
        buf: &mut Vec<u8>,
        counts: &DeltaCounts,
    ) -> Result<u64, RestoreError> {
        if buf.len() < 2 * CHUNK {
            buf.resize(2 * CHUNK, 0);
        }
        let check = self.check_sums && f.checksum.is_some();
        let alg = f.checksum.as_ref().map(|(a, _)| *a).filter(|_| check);
        let mut hasher = alg
            .unwrap_or(crate::checksum::ChecksumAlgorithm::None)
            .hasher();
        let mut reader = f
            .compression
            .decoder(src.into_reader())
            .ctx("read", &f.path)?
            .take(f.size.saturating_add(1));
        let before = out.metadata().ctx("inspect", dest)?.len();
        let compressed = !f.compression.is_none();
        let m = delta::merge(
            &mut reader,
            &out,
            dest,
            buf,
            &|e| {
                if compressed {
                    self.damaged(f, format!("it does not decompress: {e}"))
                } else {
                    FsError::new("read", &f.path, e).into()
                }
            },
            &mut |b| {
                hasher.update(b);
                self.step(b.len())
            },
        )?;
        if m.size > f.size {
            return Err(self.more_than_manifest(f));
        }
        if let (Some((_, expected)), Some(found)) = (&f.checksum, hasher.finish_hex()) {
            if !found.eq_ignore_ascii_case(expected) {
                return Err(
                    self.damaged(f, format!("checksum {found}, the manifest says {expected}"))
                );
            }
        }
        if m.size != f.size {
            return Err(self.damaged(f, format!("{} bytes, the manifest says {}", m.size, f.size)));
        }
        let cut = before > m.size;
        if cut {
            out.set_len(m.size).ctx("truncate", dest)?;
        }
        out.set_permissions(fs::Permissions::from_mode(self.w.modes.file))
            .ctx("set permissions of", dest)?;
        if let Some(o) = self.w.owner {
            nix::unistd::fchown(&out, Some(o.uid), Some(o.gid))
                .map_err(|e| FsError::new("change owner of", dest, io::Error::from(e)))?;
        }
        counts.merged(&m, cut);
        Ok(m.size)
    }
}
