//! A shared backend (`Arc<B>`, `Arc<dyn Backend>` above all) is a backend: a repository holds
//! its storage as `Arc<dyn Backend>` and hands it to code written for any backend, and the
//! decorators wrap it. Every method passes through, so the inner backend's own versions (a
//! local backend's files and folders, an object store's ranged reads) are the ones used.

use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use super::error::Result;
use super::name::ObjectName;
use super::{Backend, Entry, ObjectInfo, ObjectReader, ObjectWriter, PutOptions, PutOutcome};

impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn list(&self, prefix: Option<&ObjectName>) -> Result<Vec<ObjectInfo>> {
        (**self).list(prefix)
    }

    fn list_entries(&self, prefix: &ObjectName) -> Result<Vec<Entry>> {
        (**self).list_entries(prefix)
    }

    fn size(&self, name: &ObjectName) -> Result<u64> {
        (**self).size(name)
    }

    fn read_range(
        &self,
        name: &ObjectName,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ObjectReader<'_>> {
        (**self).read_range(name, offset, len)
    }

    fn writer(&self, name: &ObjectName, opts: PutOptions) -> Result<Box<dyn ObjectWriter + '_>> {
        (**self).writer(name, opts)
    }

    fn delete(&self, name: &ObjectName) -> Result<bool> {
        (**self).delete(name)
    }

    fn delete_prefix(&self, prefix: &ObjectName) -> Result<u64> {
        (**self).delete_prefix(prefix)
    }

    fn sync_all(&self) -> Result<()> {
        (**self).sync_all()
    }

    fn create_folder(&self, name: &ObjectName, mode: u32) -> Result<()> {
        (**self).create_folder(name, mode)
    }

    fn open_file(&self, name: &ObjectName) -> Option<Result<File>> {
        (**self).open_file(name)
    }

    fn read(&self, name: &ObjectName) -> Result<ObjectReader<'_>> {
        (**self).read(name)
    }

    fn get(&self, name: &ObjectName, limit: u64) -> Result<Vec<u8>> {
        (**self).get(name, limit)
    }

    fn get_range(&self, name: &ObjectName, offset: u64, len: u64) -> Result<Vec<u8>> {
        (**self).get_range(name, offset, len)
    }

    fn put(&self, name: &ObjectName, bytes: &[u8], opts: PutOptions) -> Result<PutOutcome> {
        (**self).put(name, bytes, opts)
    }

    fn put_from(
        &self,
        name: &ObjectName,
        src: &mut dyn Read,
        opts: PutOptions,
    ) -> Result<PutOutcome> {
        (**self).put_from(name, src, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LocalBackend, MemoryBackend, conformance};

    #[test]
    fn conformance_through_arc() {
        let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        conformance::run(&mem);
        #[allow(clippy::unwrap_used)]
        let d = tempfile::tempdir().unwrap();
        #[allow(clippy::unwrap_used)]
        let local: Arc<dyn Backend> = Arc::new(LocalBackend::open(d.path()).unwrap());
        conformance::run(&local);
    }
}
