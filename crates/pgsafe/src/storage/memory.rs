//! A backend in memory, for unit tests of code that uses the storage interface. It keeps the
//! same promises as every backend (the conformance suite runs against it).

use std::collections::BTreeMap;
use std::io::{self, Cursor, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::{ErrorKind, Result, StorageError};
use super::name::ObjectName;
use super::{Backend, ObjectInfo, ObjectReader, ObjectWriter, PutOptions, PutOutcome};

type Objects = BTreeMap<ObjectName, Arc<[u8]>>;

/// Objects in a map behind a mutex. Cloning shares the objects.
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    objects: Arc<Mutex<Objects>>,
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn lock(&self) -> MutexGuard<'_, Objects> {
        // A panicking test thread must not hide the objects from the others.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn object(&self, name: &ObjectName, action: &'static str) -> Result<Arc<[u8]>> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::new(ErrorKind::NotFound, action, name))
    }
}

impl Backend for MemoryBackend {
    fn list(&self, prefix: Option<&ObjectName>) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .lock()
            .iter()
            .filter(|(n, _)| n.is_under_opt(prefix))
            .map(|(n, b)| ObjectInfo {
                name: n.clone(),
                size: b.len() as u64,
                modified: None,
            })
            .collect())
    }

    fn size(&self, name: &ObjectName) -> Result<u64> {
        Ok(self.object(name, "inspect")?.len() as u64)
    }

    fn read_range(
        &self,
        name: &ObjectName,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ObjectReader<'_>> {
        let bytes = self.object(name, "read")?;
        let size = bytes.len() as u64;
        let start = offset.min(size);
        let end = len.map_or(size, |l| start.saturating_add(l).min(size));
        let slice = Slice {
            bytes,
            start: start as usize,
            end: end as usize,
        };
        Ok(Box::new(Cursor::new(slice)))
    }

    fn writer(&self, name: &ObjectName, _opts: PutOptions) -> Result<Box<dyn ObjectWriter + '_>> {
        Ok(Box::new(MemoryWriter {
            backend: self,
            name: name.clone(),
            buf: Vec::new(),
        }))
    }

    fn delete(&self, name: &ObjectName) -> Result<bool> {
        Ok(self.lock().remove(name).is_some())
    }
}

/// A shared object's bytes between `start` and `end`.
struct Slice {
    bytes: Arc<[u8]>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for Slice {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }
}

struct MemoryWriter<'a> {
    backend: &'a MemoryBackend,
    name: ObjectName,
    buf: Vec<u8>,
}

impl Write for MemoryWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for MemoryWriter<'_> {
    fn finish(self: Box<Self>) -> Result<PutOutcome> {
        let mut objects = self.backend.lock();
        match objects.get(&self.name) {
            Some(old) if **old == *self.buf => Ok(PutOutcome::AlreadyPresent),
            Some(_) => Err(StorageError::new(ErrorKind::Conflict, "store", &self.name)),
            None => {
                objects.insert(self.name, self.buf.into());
                Ok(PutOutcome::Created)
            }
        }
    }
}
