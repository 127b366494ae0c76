//! A backend in an S3 bucket (AWS or an S3-compatible server), with the Apache Arrow project's
//! `object_store` client driven on a small internal tokio runtime behind the synchronous
//! [`Backend`] interface.
//!
//! How it keeps the storage interface's promises (storage.rs):
//!
//! * **Write-once.** A writer first asks for the object (HEAD). When it is there, nothing is
//!   uploaded: the bytes written are hashed and compared with the stored object at `finish`
//!   (the same: [`PutOutcome::AlreadyPresent`], else [`ErrorKind::Conflict`]). When it is not,
//!   an object up to [`SINGLE_PUT_MAX`] is one PUT with `If-None-Match: *`, which the server
//!   refuses (412) when another writer created the name meanwhile; the refused bytes are then
//!   compared with the winner's. Larger objects are multipart uploads, completed with
//!   `If-None-Match: *` as well (`multipart.rs`). A server that ignores the header (see
//!   README "Object storage" for the test servers' behaviour) still gets the check before the
//!   upload, but two writers racing for one name may then both "create" it.
//! * **Atomic.** Only a finished PUT or a completed multipart upload makes an object; a writer
//!   dropped or failed unfinished aborts its multipart upload. A process killed mid-upload
//!   leaves an incomplete multipart upload, which is never listed or read as an object (a
//!   bucket lifecycle rule removes such uploads; README "Object storage").
//! * **Durable** when the server acknowledges (S3's own guarantee); [`Backend::sync_all`] has
//!   nothing to do.
//! * **Contained.** Every key is the repository's prefix, `/`, and a checked [`ObjectName`];
//!   names that are not UTF-8 are refused ([`ErrorKind::InvalidName`]); keys under the prefix
//!   that are not object names (another tool's, or [`super::name::TEMP_MARKER`] names) are
//!   never listed.
//! * **Bounded memory.** A writer holds at most one part being filled and two parts in flight;
//!   readers stream.
//!
//! Transient failures (5xx, 429, SlowDown, resets, timeouts) are retried by the client with
//! exponential backoff and jitter within [`S3Config::retry_budget`]; a read that breaks off
//! mid-stream resumes from where it stopped.

use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig,
};
use tokio::runtime::Runtime;

use super::error::{ErrorKind, Result, StorageError};
use super::name::ObjectName;
use super::{Backend, Entry, EntryKind, ObjectInfo, ObjectReader, ObjectWriter, PutOptions};

pub mod config;
pub mod credentials;
mod writer;

#[cfg(test)]
mod tests;

pub use config::{DEFAULT_REGION, DEFAULT_RETRY_BUDGET, S3Config, S3Credentials, S3Settings};
pub use credentials::CredentialSource;
pub use writer::{SINGLE_PUT_MAX, part_size};

/// Times a read that broke off mid-stream asks again for the rest.
const READ_RESUMES: u32 = 5;

/// A repository's objects in an S3 bucket under a prefix.
pub struct S3Backend {
    store: Arc<AmazonS3>,
    rt: Runtime,
    config: S3Config,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Backend({})", self.config)
    }
}

impl S3Backend {
    /// A client for `config` (checked; no request is made).
    pub fn open(config: &S3Config) -> Result<S3Backend> {
        let show = config.to_string();
        config.check_endpoint()?;
        let instance = config.source == CredentialSource::Instance;
        if config.credentials.is_none() && !instance {
            return Err(
                StorageError::new(ErrorKind::PermissionDenied, "open", &show).with_detail(format!(
                    "no S3 credentials: {} are not set. Name a credentials file (AWS \
                         format, readable by you and not by every user) in the repository's \
                         S3 settings, or the variables that hold the key, or use the \
                         machine's role",
                    config.source
                )),
            );
        }
        // reqwest is built without a TLS provider of its own: use ring, as the backup
        // session's TLS does (conninfo/tls.rs). Installing fails harmlessly when a provider is
        // already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: std::time::Duration::from_millis(100),
                max_backoff: std::time::Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: 20,
            retry_timeout: config.retry_budget,
        };
        let client = ClientOptions::new()
            .with_timeout(config.request_timeout)
            .with_connect_timeout(std::time::Duration::from_secs(10))
            .with_allow_http(true);
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            // check_endpoint decided whether plain HTTP is allowed.
            .with_allow_http(true)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(retry)
            .with_client_options(client);
        if let Some(creds) = &config.credentials {
            b = b
                .with_access_key_id(&creds.access_key_id)
                .with_secret_access_key(&creds.secret_access_key);
            if let Some(t) = &creds.session_token {
                b = b.with_token(t);
            }
        } else {
            // The machine's role: object_store asks a web identity token, the container
            // endpoint, then the instance metadata service (IMDSv2), in that order, with the
            // variables that say where they are.
            for (k, v) in &config.role_env {
                if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    b = b.with_config(key, v);
                }
            }
        }
        if let Some(e) = &config.endpoint {
            b = b.with_endpoint(e);
        }
        let store = b.build().map_err(|e| {
            StorageError::new(ErrorKind::Other, "open", &show)
                .with_detail(chain(&e))
                .with_source(e)
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pgsafe-s3")
            .enable_all()
            .build()
            .map_err(|e| StorageError::io("start the S3 client for", &show, e))?;
        Ok(S3Backend {
            store: Arc::new(store),
            rt,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The key of `name`.
    fn key(&self, name: &ObjectName, action: &'static str) -> Result<Path> {
        let s = name.to_str().ok_or_else(|| {
            StorageError::new(ErrorKind::InvalidName, action, name)
                .with_detail("object storage keys are UTF-8; this name is not")
        })?;
        let full = if self.config.prefix.is_empty() {
            s.to_string()
        } else {
            format!("{}/{s}", self.config.prefix)
        };
        Path::parse(&full).map_err(|e| {
            StorageError::new(ErrorKind::InvalidName, action, name)
                .with_detail(format!("not usable as an object storage key: {e}"))
        })
    }

    /// The key of the whole repository (`None`: the bucket's root).
    fn root(&self) -> Option<Path> {
        (!self.config.prefix.is_empty()).then(|| Path::from_iter(self.config.prefix.split('/')))
    }

    /// The object name of a key listed under the prefix; `None` for keys that are not object
    /// names (never shown as objects).
    fn name_of(&self, key: &Path) -> Option<ObjectName> {
        let k = key.as_ref();
        let rest = if self.config.prefix.is_empty() {
            k
        } else {
            k.strip_prefix(self.config.prefix.as_str())?
                .strip_prefix('/')?
        };
        ObjectName::new(rest).ok()
    }

    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The storage error for a failed request about `name`.
    fn error(
        &self,
        e: object_store::Error,
        action: &'static str,
        name: &dyn fmt::Display,
    ) -> StorageError {
        map_error(e, action, name, &self.config)
    }

    /// The size of `name`, or `None` when there is no such object.
    fn head(&self, path: &Path, name: &ObjectName, action: &'static str) -> Result<Option<u64>> {
        match self.block_on(self.store.head(path)) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(e, action, name)),
        }
    }

    /// A stream of `range` of the object (`None`: all of it), and the object's ETag. With
    /// `if_match`, only the version of the object with that ETag is read (else
    /// `Precondition`).
    fn get_stream(
        &self,
        path: &Path,
        range: Option<std::ops::Range<u64>>,
        if_match: Option<String>,
    ) -> object_store::Result<(
        BoxStream<'static, object_store::Result<Bytes>>,
        Option<String>,
    )> {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            if_match,
            ..GetOptions::default()
        };
        let store = self.store.clone();
        let path = path.clone();
        self.block_on(async move {
            let r = store.get_opts(&path, opts).await?;
            let etag = r.meta.e_tag.clone();
            Ok((r.into_stream(), etag))
        })
    }
}

/// An `object_store` error as a storage error: the kind callers act on, the bucket and key,
/// and the server's message.
fn map_error(
    e: object_store::Error,
    action: &'static str,
    name: &dyn fmt::Display,
    config: &S3Config,
) -> StorageError {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => ErrorKind::Conflict,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ErrorKind::PermissionDenied,
        E::InvalidPath { .. } => ErrorKind::InvalidName,
        _ => generic_kind(&e),
    };
    StorageError::new(kind, action, name)
        .with_detail(format!("{} ({config})", chain(&e)))
        .with_source(e)
}

/// The kind of an error `object_store` reports without a variant of its own: what is left
/// after its retries. The HTTP status is only in its message (its error type is private).
fn generic_kind(e: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let text = chain(e);
    let status = text
        .split("status code: ")
        .nth(1)
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(429 | 500..=599) => ErrorKind::Transient,
        Some(403) => ErrorKind::PermissionDenied,
        Some(404) => ErrorKind::NotFound,
        Some(_) => ErrorKind::Other,
        // No status: the connection failed (refused, reset, timed out, a broken body).
        None => ErrorKind::Transient,
    }
}

/// An error and its sources, one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

impl Backend for S3Backend {
    fn list(&self, prefix: Option<&ObjectName>) -> Result<Vec<ObjectInfo>> {
        let shown = prefix.map_or_else(|| self.config.to_string(), |p| p.to_string());
        let key = match prefix {
            Some(p) => Some(self.key(p, "list")?),
            None => self.root(),
        };
        let metas: Vec<_> = self
            .block_on(self.store.list(key.as_ref()).collect::<Vec<_>>())
            .into_iter()
            .collect::<object_store::Result<_>>()
            .map_err(|e| self.error(e, "list", &shown))?;
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .filter_map(|m| {
                Some(ObjectInfo {
                    name: self.name_of(&m.location)?,
                    size: m.size,
                    modified: Some(m.last_modified.into()),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn list_entries(&self, prefix: &ObjectName) -> Result<Vec<Entry>> {
        let key = self.key(prefix, "list")?;
        let r = self
            .block_on(self.store.list_with_delimiter(Some(&key)))
            .map_err(|e| self.error(e, "list", prefix))?;
        let last = |p: &Path| -> Option<Vec<u8>> {
            let name = self.name_of(p)?;
            Some(name.file_name().to_vec())
        };
        let mut out: Vec<Entry> = r
            .common_prefixes
            .iter()
            .filter_map(|p| {
                Some(Entry {
                    name: last(p)?,
                    kind: EntryKind::Prefix,
                })
            })
            .chain(r.objects.iter().filter_map(|m| {
                Some(Entry {
                    name: last(&m.location)?,
                    kind: EntryKind::Object { size: m.size },
                })
            }))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn size(&self, name: &ObjectName) -> Result<u64> {
        let path = self.key(name, "inspect")?;
        self.head(&path, name, "inspect")?
            .ok_or_else(|| StorageError::new(ErrorKind::NotFound, "inspect", name))
    }

    fn read_range(
        &self,
        name: &ObjectName,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ObjectReader<'_>> {
        let path = self.key(name, "read")?;
        // A range is cut at the object's end; S3 refuses (416) one that starts past it, so the
        // size is asked first. A whole read needs no size.
        let range = if offset == 0 && len.is_none() {
            None
        } else {
            let size = self
                .head(&path, name, "read")?
                .ok_or_else(|| StorageError::new(ErrorKind::NotFound, "read", name))?;
            let start = offset.min(size);
            let end = len.map_or(size, |l| start.saturating_add(l).min(size));
            if start == end {
                return Ok(Box::new(io::empty()));
            }
            Some(start..end)
        };
        let (stream, etag) = self
            .get_stream(&path, range.clone(), None)
            .map_err(|e| self.error(e, "read", name))?;
        Ok(Box::new(S3Reader {
            backend: self,
            name: name.clone(),
            path,
            stream,
            etag,
            chunk: Bytes::new(),
            pos: range.as_ref().map_or(0, |r| r.start),
            end: range.map(|r| r.end),
            resumes: 0,
        }))
    }

    fn writer(&self, name: &ObjectName, opts: PutOptions) -> Result<Box<dyn ObjectWriter + '_>> {
        let _ = opts;
        let path = self.key(name, "store")?;
        let existing = self.head(&path, name, "store")?;
        Ok(Box::new(writer::S3Writer::new(
            self,
            name.clone(),
            path,
            existing,
        )))
    }

    fn delete(&self, name: &ObjectName) -> Result<bool> {
        let path = self.key(name, "delete")?;
        // S3 answers a DELETE of a missing key with success: ask first.
        if self.head(&path, name, "delete")?.is_none() {
            return Ok(false);
        }
        self.block_on(self.store.delete(&path))
            .map_err(|e| self.error(e, "delete", name))?;
        Ok(true)
    }

    fn delete_prefix(&self, prefix: &ObjectName) -> Result<u64> {
        let objects = self.list(Some(prefix))?;
        let keys = objects
            .iter()
            .map(|o| self.key(&o.name, "delete"))
            .collect::<Result<Vec<_>>>()?;
        let n = keys.len() as u64;
        // Bulk deletes (DeleteObjects, up to 1000 keys a request).
        let stream = futures_util::stream::iter(keys.into_iter().map(Ok)).boxed();
        let results: Vec<_> = self.block_on(self.store.delete_stream(stream).collect::<Vec<_>>());
        for r in results {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error(e, "delete", prefix)),
            }
        }
        Ok(n)
    }
}

/// A stream of an object's bytes that resumes from where it broke off.
struct S3Reader<'a> {
    backend: &'a S3Backend,
    name: ObjectName,
    path: Path,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    /// The ETag of the version being read: a resumed read asks for that version only, so the
    /// rest never comes from an object written since (a WAL file stored plain has no checksum
    /// of its own that would notice the splice).
    etag: Option<String>,
    chunk: Bytes,
    /// Offset in the object of the next byte the stream gives.
    pos: u64,
    /// End of the range, when one was asked for (`None`: to the object's end).
    end: Option<u64>,
    resumes: u32,
}

impl Read for S3Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.chunk.is_empty() {
                let n = buf.len().min(self.chunk.len());
                buf[..n].copy_from_slice(&self.chunk[..n]);
                let _ = self.chunk.split_to(n);
                return Ok(n);
            }
            match self.backend.block_on(self.stream.next()) {
                Some(Ok(b)) => {
                    self.pos = self.pos.saturating_add(b.len() as u64);
                    self.chunk = b;
                }
                None if self.end.is_none_or(|e| self.pos >= e) => return Ok(0),
                // The body ended short of the range: a broken connection.
                None => self.resume(None)?,
                Some(Err(e)) => self.resume(Some(e))?,
            }
        }
    }
}

impl S3Reader<'_> {
    /// Asks again for the rest after the stream broke off.
    fn resume(&mut self, e: Option<object_store::Error>) -> io::Result<()> {
        let fail = |e: Option<object_store::Error>, backend: &S3Backend, name: &ObjectName| {
            let err = match e {
                Some(e) => backend.error(e, "read", name),
                None => StorageError::new(ErrorKind::Transient, "read", name)
                    .with_detail("the server's answer ended before the object did"),
            };
            err.into_io()
        };
        if self.resumes >= READ_RESUMES {
            return Err(fail(e, self.backend, &self.name));
        }
        self.resumes += 1;
        let end = match self.end {
            Some(end) => end,
            None => match self.backend.head(&self.path, &self.name, "read") {
                Ok(Some(size)) => size,
                Ok(None) => {
                    return Err(StorageError::new(ErrorKind::NotFound, "read", &self.name)
                        .with_detail("the object disappeared while it was read")
                        .into_io());
                }
                Err(e) => return Err(e.into_io()),
            },
        };
        self.end = Some(end);
        if self.pos >= end {
            self.stream = futures_util::stream::empty().boxed();
            return Ok(());
        }
        let changed = || {
            StorageError::new(ErrorKind::Conflict, "read", &self.name)
                .with_detail(
                    "the object was replaced while it was read (its ETag changed): the rest \
                     is not taken from another version; read it again",
                )
                .into_io()
        };
        let (stream, etag) =
            match self
                .backend
                .get_stream(&self.path, Some(self.pos..end), self.etag.clone())
            {
                Ok(s) => s,
                Err(object_store::Error::Precondition { .. }) => return Err(changed()),
                Err(e) => return Err(self.backend.error(e, "read", &self.name).into_io()),
            };
        // A server that ignores If-Match still names the version it answers with.
        if self.etag.is_some() && etag.is_some() && etag != self.etag {
            return Err(changed());
        }
        self.stream = stream;
        Ok(())
    }
}
