//! A decorator viewing the objects under one prefix of another backend as a backend of their
//! own: how a backup inside a repository (`<cluster>/backups/<ID>/…`) is written and read with
//! the same code as a backup folder, whatever storage the repository is on.
//!
//! Names given to the view are checked [`ObjectName`]s joined below the prefix (so they stay
//! below it: a name has no `..` component); names the inner backend returns are cut back to the
//! view's. Everything a local backend offers passes through — [`Backend::open_file`],
//! [`ObjectWriter::local_file`], [`Backend::create_folder`], [`Backend::sync_all`] — so a backup
//! inside a local repository is still copied with kernel copies into the same files and folders
//! as before.

use std::sync::Arc;

use super::error::{ErrorKind, Result, StorageError};
use super::name::ObjectName;
use super::{Backend, Entry, ObjectInfo, ObjectReader, ObjectWriter, PutOptions, PutOutcome};

/// The objects under `prefix` of `inner`, named relative to it.
#[derive(Debug, Clone)]
pub struct Prefixed {
    inner: Arc<dyn Backend>,
    prefix: ObjectName,
}

impl Prefixed {
    pub fn new(inner: Arc<dyn Backend>, prefix: ObjectName) -> Prefixed {
        Prefixed { inner, prefix }
    }

    /// The prefix in the inner backend.
    pub fn prefix(&self) -> &ObjectName {
        &self.prefix
    }

    /// The backend this is a view of.
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    /// `name` in the inner backend.
    fn full(&self, name: &ObjectName) -> Result<ObjectName> {
        self.prefix.join(name.as_bytes())
    }

    /// An inner name cut back to the view's; `None` for a name outside the prefix (an inner
    /// backend breaking its listing promise: left out rather than misnamed).
    fn relative(&self, name: &ObjectName) -> Option<ObjectName> {
        if !name.is_under(&self.prefix) {
            return None;
        }
        let rest = name.as_bytes().get(self.prefix.as_bytes().len() + 1..)?;
        ObjectName::new(rest).ok()
    }
}

impl Backend for Prefixed {
    fn list(&self, prefix: Option<&ObjectName>) -> Result<Vec<ObjectInfo>> {
        let inner = match prefix {
            Some(p) => self.full(p)?,
            None => self.prefix.clone(),
        };
        let mut out = Vec::new();
        for o in self.inner.list(Some(&inner))? {
            let Some(name) = self.relative(&o.name) else {
                return Err(StorageError::new(ErrorKind::Other, "list", &inner)
                    .with_detail(format!("the storage listed {} outside the prefix", o.name)));
            };
            out.push(ObjectInfo { name, ..o });
        }
        Ok(out)
    }

    fn list_entries(&self, prefix: &ObjectName) -> Result<Vec<Entry>> {
        // Entries are last components: nothing to cut.
        self.inner.list_entries(&self.full(prefix)?)
    }

    fn size(&self, name: &ObjectName) -> Result<u64> {
        self.inner.size(&self.full(name)?)
    }

    fn read_range(
        &self,
        name: &ObjectName,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ObjectReader<'_>> {
        self.inner.read_range(&self.full(name)?, offset, len)
    }

    fn writer(&self, name: &ObjectName, opts: PutOptions) -> Result<Box<dyn ObjectWriter + '_>> {
        self.inner.writer(&self.full(name)?, opts)
    }

    fn delete(&self, name: &ObjectName) -> Result<bool> {
        self.inner.delete(&self.full(name)?)
    }

    fn delete_prefix(&self, prefix: &ObjectName) -> Result<u64> {
        self.inner.delete_prefix(&self.full(prefix)?)
    }

    fn sync_all(&self) -> Result<()> {
        self.inner.sync_all()
    }

    fn create_folder(&self, name: &ObjectName, mode: u32) -> Result<()> {
        self.inner.create_folder(&self.full(name)?, mode)
    }

    fn open_file(&self, name: &ObjectName) -> Option<Result<std::fs::File>> {
        match self.full(name) {
            Ok(n) => self.inner.open_file(&n),
            Err(e) => Some(Err(e)),
        }
    }

    fn get(&self, name: &ObjectName, limit: u64) -> Result<Vec<u8>> {
        self.inner.get(&self.full(name)?, limit)
    }

    fn get_range(&self, name: &ObjectName, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.get_range(&self.full(name)?, offset, len)
    }

    fn put(&self, name: &ObjectName, bytes: &[u8], opts: PutOptions) -> Result<PutOutcome> {
        self.inner.put(&self.full(name)?, bytes, opts)
    }

    fn put_from(
        &self,
        name: &ObjectName,
        src: &mut dyn std::io::Read,
        opts: PutOptions,
    ) -> Result<PutOutcome> {
        self.inner.put_from(&self.full(name)?, src, opts)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;

    use super::*;
    use crate::storage::{LocalBackend, MemoryBackend, conformance};

    fn n(s: &str) -> ObjectName {
        ObjectName::new(s).unwrap()
    }

    /// The suite over a view, with objects beside and above the prefix that it must never see
    /// or touch (a neighbour whose name extends the prefix's last component included).
    fn run_beside_neighbours(inner: Arc<dyn Backend>) {
        let opts = PutOptions::default();
        let neighbours = ["p/q.x", "p/qq/x", "p/r", "z"];
        for name in neighbours {
            inner.put(&n(name), name.as_bytes(), opts).unwrap();
        }
        let view = Prefixed::new(Arc::clone(&inner), n("p/q"));
        conformance::run(&view);
        // The view's objects are under the prefix in the inner backend, named the same.
        let listed = view.list(None).unwrap();
        assert!(!listed.is_empty());
        for o in &listed {
            let full = n("p/q").join(o.name.as_bytes()).unwrap();
            assert_eq!(inner.size(&full).unwrap(), o.size, "{}", o.name);
        }
        // Deleting everything in the view leaves the neighbours.
        view.delete_prefix(&n("conformance")).unwrap();
        assert!(view.list(None).unwrap().is_empty());
        let left: Vec<String> = inner
            .list(None)
            .unwrap()
            .into_iter()
            .map(|o| o.name.to_string())
            .collect();
        assert_eq!(left, neighbours);
    }

    #[test]
    fn conformance_over_memory() {
        run_beside_neighbours(Arc::new(MemoryBackend::new()));
    }

    #[test]
    fn conformance_over_local_keeps_files_and_folders() {
        let d = tempfile::tempdir().unwrap();
        let local: Arc<dyn Backend> = Arc::new(LocalBackend::open(d.path()).unwrap());
        let view = Prefixed::new(Arc::clone(&local), n("c/backups/1"));
        // A local view still hands out its files (kernel copies) and makes folders.
        let mut w = view.writer(&n("pg_wal/x"), PutOptions::default()).unwrap();
        w.write_all(b"12").unwrap();
        assert!(w.local_file().is_some());
        w.finish().unwrap();
        assert!(view.open_file(&n("pg_wal/x")).unwrap().is_ok());
        view.create_folder(&n("pg_notify"), 0o700).unwrap();
        assert!(d.path().join("c/backups/1/pg_notify").is_dir());
        assert_eq!(
            std::fs::read(d.path().join("c/backups/1/pg_wal/x")).unwrap(),
            b"12"
        );
        let d = tempfile::tempdir().unwrap();
        run_beside_neighbours(Arc::new(LocalBackend::open(d.path()).unwrap()));
    }

    #[test]
    fn names_stay_below_the_prefix() {
        let inner: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        inner
            .put(&n("secret"), b"s", PutOptions::default())
            .unwrap();
        let view = Prefixed::new(Arc::clone(&inner), n("p"));
        // A name cannot climb out (".." is not an object name), and the view does not see
        // what lies beside its prefix.
        assert_eq!(
            ObjectName::new("../secret").unwrap_err().kind(),
            ErrorKind::InvalidName
        );
        assert_eq!(
            view.size(&n("secret")).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(view.list(None).unwrap().is_empty());
        assert!(view.list_entries(&n("x")).unwrap().is_empty());
    }
}
