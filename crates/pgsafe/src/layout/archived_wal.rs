//! The WAL of a backup that is in its repository's archive instead of the backup
//! ([`crate::info::WalInfo::in_repository`]): where backup reads it back to check its records,
//! verify reads it (its WAL walk runs over the archived segments as over a backup's `pg_wal/`)
//! and restore fetches it into the restored `pg_wal/`. Beside [`super::StoredBackup`], the other
//! place a backup's files are read from.
//!
//! Files lie where archive-push stores them, under the names [`ArchiveFile`] gives (segments
//! plain or compressed, `.zst` or `.lz4`, one codec stream: [`Compression::decoder`]; history
//! files plain); whichever is there is read, decompressed no
//! further than the limit the caller gives (a planted object can claim to inflate to
//! anything). The content is checked by the caller (segment size, long page header against
//! the backup's system and major, every record), as for WAL stored in a backup.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ArchiveFile, NameError, wal_object_name};
use crate::codec::Compression;
use crate::storage::{Backend, ErrorKind, Ident, LocalBackend, ObjectName, StorageError};
use crate::types::TimelineId;

/// A cluster's WAL archive in a repository.
#[derive(Debug, Clone)]
pub struct WalArchive {
    backend: Arc<dyn Backend>,
    cluster: Ident,
    /// `<repo>/<cluster>/wal`, for messages.
    shown: PathBuf,
}

impl WalArchive {
    /// The archive of `cluster` in the repository whose objects `backend` holds; `shown` names
    /// the repository in messages.
    pub fn new(backend: Arc<dyn Backend>, cluster: Ident, shown: &Path) -> WalArchive {
        WalArchive {
            backend,
            shown: shown.join(cluster.as_str()).join("wal"),
            cluster,
        }
    }

    /// The archive of `cluster` in the local repository at `repo`.
    pub fn local(repo: &Path, cluster: Ident) -> Result<WalArchive, StorageError> {
        let backend = LocalBackend::open(repo)?;
        Ok(WalArchive::new(Arc::new(backend), cluster, repo))
    }

    pub fn cluster(&self) -> &Ident {
        &self.cluster
    }

    /// Where the archive is, for messages.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// Whether the archive has `file` (of timeline `tli`), stored any way.
    pub fn contains(&self, tli: TimelineId, file: &str) -> Result<bool, ArchiveReadError> {
        for (name, _) in self.stored_names(tli, file)? {
            match self.backend.size(&name) {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// The objects `file` (a PostgreSQL WAL archive file name of timeline `tli`) may be stored
    /// as, with their compression: the names archive-push stores under
    /// ([`ArchiveFile::stored_candidates`]), so both look up the same objects.
    fn stored_names(
        &self,
        tli: TimelineId,
        file: &str,
    ) -> Result<Vec<(ObjectName, Compression)>, ArchiveReadError> {
        ArchiveFile::parse(file)?
            .stored_candidates()
            .into_iter()
            .map(|(stored, c)| Ok((wal_object_name(&self.cluster, tli, &stored)?, c)))
            .collect()
    }

    /// The content of `file` (a PostgreSQL WAL file name of timeline `tli`), decompressed, at
    /// most `limit` bytes (more is an error); `Ok(None)` when the archive does not have it.
    pub fn get(
        &self,
        tli: TimelineId,
        file: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, ArchiveReadError> {
        for (name, c) in self.stored_names(tli, file)? {
            let reader = match self.backend.read(&name) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            c.decoder(reader)
                .and_then(|d| d.take(limit.saturating_add(1)).read_to_end(&mut out))
                .map_err(|e| ArchiveReadError::Content {
                    object: name.to_string(),
                    error: e.to_string(),
                })?;
            if out.len() as u64 > limit {
                return Err(ArchiveReadError::Content {
                    object: name.to_string(),
                    error: format!("it holds more than {limit} bytes"),
                });
            }
            return Ok(Some(out));
        }
        Ok(None)
    }
}

/// Why a file of the archive could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveReadError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The name asked for is not one of PostgreSQL's WAL archive file names.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The object is there but its content is not a WAL file pgsafe can read.
    #[error("{object}: {error}")]
    Content { object: String, error: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Key, MemoryBackend, PutOptions};

    #[test]
    fn plain_and_compressed_objects_read_back_and_bombs_stop_at_the_limit() {
        let mem = Arc::new(MemoryBackend::new());
        let cluster = Ident::new("main").unwrap();
        let put = |file: &str, bytes: &[u8]| {
            let id = Ident::new(file).unwrap();
            let name = Key::Wal {
                cluster: &cluster,
                timeline: TimelineId(1),
                file: &id,
            }
            .name()
            .unwrap();
            mem.put(&name, bytes, PutOptions::default()).unwrap();
        };
        let seg = "000000010000000000000003";
        put(seg, b"plain");
        let zst = zstd::encode_all(&[7u8; 4096][..], 1).unwrap();
        put("000000010000000000000004.zst", &zst);
        let a = WalArchive::new(mem.clone(), cluster.clone(), Path::new("/r"));
        assert_eq!(a.shown(), Path::new("/r/main/wal"));
        let tli = TimelineId(1);
        assert_eq!(a.get(tli, seg, 100).unwrap().unwrap(), b"plain");
        assert_eq!(
            a.get(tli, "000000010000000000000004", 4096)
                .unwrap()
                .unwrap(),
            vec![7u8; 4096]
        );
        // Inflating past the limit is an error, not an allocation.
        assert!(matches!(
            a.get(tli, "000000010000000000000004", 100),
            Err(ArchiveReadError::Content { .. })
        ));
        assert!(
            a.get(tli, "000000010000000000000005", 100)
                .unwrap()
                .is_none()
        );
        put("000000010000000000000005.lz4", b"x");
        assert!(a.contains(tli, "000000010000000000000005").unwrap());
    }

    #[test]
    fn only_the_names_archive_push_stores_under_are_read() {
        let mem = Arc::new(MemoryBackend::new());
        let cluster = Ident::new("main").unwrap();
        let tli = TimelineId(2);
        // History files are stored plain (archive-get serves only that object): a compressed
        // one is not the archive's, whoever planted it.
        let name = Key::Wal {
            cluster: &cluster,
            timeline: tli,
            file: &Ident::new("00000002.history.zst").unwrap(),
        }
        .name()
        .unwrap();
        let zst =
            zstd::encode_all(&b"1\t0/3000000\tno recovery target specified\n"[..], 1).unwrap();
        mem.put(&name, &zst, PutOptions::default()).unwrap();
        let a = WalArchive::new(mem, cluster, Path::new("/r"));
        assert!(!a.contains(tli, "00000002.history").unwrap());
        assert!(a.get(tli, "00000002.history", 100).unwrap().is_none());
        // A name PostgreSQL never archives is an error, not a lookup.
        assert!(matches!(
            a.get(tli, "00000002.history.zst", 100),
            Err(ArchiveReadError::Name(_))
        ));
        assert!(a.contains(tli, "../x").is_err());
    }
}
