//! The `ObjectStore` port: recordings and snapshots, addressed by key.

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncRead;

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, Unix ms.
    pub modified_ms: i64,
}

/// A stored object being read.
pub struct ObjectReader {
    /// Its metadata.
    pub meta: ObjectMeta,
    /// Its bytes.
    pub body: Pin<Box<dyn AsyncRead + Send>>,
}

/// Keys are S3-compatible and safe as relative paths: 1..=1024 bytes of `[A-Za-z0-9._-/]`, no
/// leading `/`, no empty, `.` or `..` segment.
pub fn validate_object_key(key: &str) -> Result<(), ObjectStoreError> {
    let chars_ok = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    let segments_ok = key
        .split('/')
        .all(|s| !s.is_empty() && s != "." && s != "..");
    if !key.is_empty() && key.len() <= 1024 && chars_ok && segments_ok {
        Ok(())
    } else {
        Err(ObjectStoreError::InvalidKey(key.to_string()))
    }
}

/// What can go wrong with an object store.
#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreError {
    /// The key is not acceptable (see [`validate_object_key`]).
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// Reading the local source file failed.
    #[error("object I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The backend failed.
    #[error("object store backend error: {0}")]
    Backend(String),
}

/// Recordings and snapshots. Guarantees (checked by `core/src/ports/contract.rs`, run by
/// `adapters/embedded/tests/contract_sqlite.rs` and `adapters/aws/tests/contract_s3.rs`):
/// an object whose `put_*` returned `Ok` is complete and durable (never visible half-written);
/// `list` returns keys in lexicographic order.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores the file at `path` under `key`, streaming it (recordings can be gigabytes).
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
    ) -> Result<ObjectMeta, ObjectStoreError>;

    /// Stores `bytes` under `key`.
    async fn put_bytes(
        &self,
        key: &str,
        bytes: bytes::Bytes,
        content_type: &str,
    ) -> Result<ObjectMeta, ObjectStoreError>;

    /// Opens the object for reading, or `None` when there is none.
    async fn get(&self, key: &str) -> Result<Option<ObjectReader>, ObjectStoreError>;

    /// Opens bytes `offset..offset + len` of the object (to its end when `len` is `None`), or
    /// `None` when there is none; `meta` is the whole object's. For HTTP range requests (a
    /// player seeking in a recording). The default reads and skips; stores that can seek do.
    async fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Option<ObjectReader>, ObjectStoreError> {
        use tokio::io::AsyncReadExt;
        let Some(mut object) = self.get(key).await? else {
            return Ok(None);
        };
        tokio::io::copy(&mut (&mut object.body).take(offset), &mut tokio::io::sink()).await?;
        let body: Pin<Box<dyn AsyncRead + Send>> = match len {
            Some(len) => Box::pin(object.body.take(len)),
            None => object.body,
        };
        Ok(Some(ObjectReader {
            meta: object.meta,
            body,
        }))
    }

    /// Deletes the object; deleting a missing one is not an error.
    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError>;

    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError>;

    /// A URL a player can fetch the object from without credentials, valid for `ttl`.
    async fn playback_url(&self, key: &str, ttl: Duration) -> Result<String, ObjectStoreError>;
}
