//! [`DirObjectStore`]: the embedded [`ObjectStore`] on a local directory.
//!
//! Layout under the root: `objects/<key>` holds the objects, `tmp/` the uploads in progress. An
//! upload is written to `tmp/`, fsynced, then renamed into place (same filesystem, so the rename
//! is atomic) and the directory fsynced: a reader sees the whole object or none, and a crash
//! leaves at most garbage in `tmp/`, which [`DirObjectStore::open`] clears once it is an hour old
//! (younger files may be another process's uploads in progress). Keeping temporaries
//! out of `objects/` means `list` never has to tell them apart from objects whose names happen to
//! look like temporaries.
//!
//! Playback URLs point at the HTTP host's `/objects/{key}` route and carry an expiry and an
//! HMAC-SHA256 signature that the host checks with [`DirObjectStore::verify_playback_signature`].
//!
//! Content types are not stored; the HTTP host derives them from the key's extension, which is how
//! recordings are named anyway.
//!
//! A filesystem cannot hold both `a` and `a/b` as files: putting one while the other exists fails
//! with a backend error (S3 would accept both; relaycast's key scheme never produces that).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use relaycast_core::ports::{
    validate_object_key, Clock, ObjectMeta, ObjectReader, ObjectStore, ObjectStoreError,
};

type HmacSha256 = Hmac<Sha256>;

/// The [`ObjectStore`] on a local directory, served by the HTTP host under `/objects/`.
pub struct DirObjectStore {
    dirs: Dirs,
    public_base_url: String,
    signing_key: Vec<u8>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DirObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirObjectStore")
            .field("objects", &self.dirs.objects)
            .field("public_base_url", &self.public_base_url)
            .finish_non_exhaustive()
    }
}

fn io_ctx(what: &str, path: &Path, e: std::io::Error) -> ObjectStoreError {
    ObjectStoreError::Backend(format!("{what} {}: {e}", path.display()))
}

impl DirObjectStore {
    /// Opens (creating if needed) the store rooted at `root`. `public_base_url` is where the HTTP
    /// host is reachable (e.g. `http://127.0.0.1:8080`); `signing_key` signs playback URLs.
    pub fn open(
        root: &Path,
        public_base_url: String,
        signing_key: Vec<u8>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ObjectStoreError> {
        if signing_key.is_empty() {
            return Err(ObjectStoreError::Backend(
                "the playback signing key must not be empty".into(),
            ));
        }
        let objects = root.join("objects");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&objects).map_err(|e| io_ctx("creating", &objects, e))?;
        std::fs::create_dir_all(&tmp).map_err(|e| io_ctx("creating", &tmp, e))?;
        clear_stale_uploads(&tmp);
        let public_base_url = public_base_url.trim_end_matches('/').to_string();
        Ok(Self {
            dirs: Dirs { objects, tmp },
            public_base_url,
            signing_key,
            clock,
        })
    }

    fn mac(&self, key: &str, expires: i64) -> HmacSha256 {
        // new_from_slice accepts any key length for HMAC, and open() refused an empty key.
        let mut mac = match HmacSha256::new_from_slice(&self.signing_key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// `expires=…&sig=…` of a playback URL of `key` valid until `expires` (Unix seconds): how
    /// the host signs the segment URIs of a playlist it serves with the playlist's own expiry.
    pub fn signed_query(&self, key: &str, expires: i64) -> String {
        let sig = hex::encode(self.mac(key, expires).finalize().into_bytes());
        format!("expires={expires}&sig={sig}")
    }

    /// Whether `sig` (hex) is a valid signature of `key` until `expires` (Unix seconds) and
    /// `expires` has not passed. The comparison is constant-time.
    pub fn verify_playback_signature(&self, key: &str, expires: i64, sig: &str) -> bool {
        if validate_object_key(key).is_err() || expires.saturating_mul(1000) < self.clock.now_ms() {
            return false;
        }
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        self.mac(key, expires).verify_slice(&sig).is_ok()
    }
}

/// Where objects and uploads in progress live; owned copies go to blocking tasks.
#[derive(Debug, Clone)]
struct Dirs {
    objects: PathBuf,
    tmp: PathBuf,
}

impl Dirs {
    /// The file an object lives in. Only for validated keys.
    fn object_path(&self, key: &str) -> PathBuf {
        self.objects.join(key)
    }

    /// Moves the file at `src` (already fsynced, in `tmp/`) to `key`'s place and fsyncs the
    /// directory so the rename itself survives a crash.
    fn publish(&self, src: &Path, key: &str) -> Result<ObjectMeta, ObjectStoreError> {
        let dest = self.object_path(key);
        let dir = dest.parent().unwrap_or(&self.objects).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io_ctx("creating", &dir, e))?;
        std::fs::rename(src, &dest).map_err(|e| io_ctx("storing", &dest, e))?;
        sync_dir(&dir)?;
        meta_of(key, &dest)
    }

    /// A fresh temporary path in `tmp/`.
    fn temp_path(&self) -> PathBuf {
        self.tmp.join(uuid::Uuid::new_v4().simple().to_string())
    }
}

/// Uploads untouched for this long were cut short by a crash: an upload in progress writes
/// continuously. Younger ones may belong to another process sharing the root.
const STALE_UPLOAD: Duration = Duration::from_secs(3600);

/// Best-effort removal of abandoned uploads from `tmp/`; they are unreachable, only wasted space.
fn clear_stale_uploads(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= STALE_UPLOAD);
        if stale {
            let path = entry.path();
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an abandoned upload");
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), ObjectStoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_ctx("syncing", dir, e))
}

fn meta_of(key: &str, path: &Path) -> Result<ObjectMeta, ObjectStoreError> {
    let md = std::fs::metadata(path).map_err(|e| io_ctx("reading metadata of", path, e))?;
    Ok(meta_from(key, &md))
}

fn meta_from(key: &str, md: &std::fs::Metadata) -> ObjectMeta {
    let modified_ms = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    ObjectMeta {
        key: key.to_string(),
        size: md.len(),
        modified_ms,
    }
}

/// Removes `path` if it exists, ignoring failures: used to clean up a failed upload.
fn discard(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Every regular file under `dir`, as keys relative to `base`, pushed to `out`.
fn walk(
    base: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<ObjectMeta>,
) -> Result<(), ObjectStoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_ctx("listing", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_ctx("listing", dir, e))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| io_ctx("reading", &path, e))?;
        let Ok(rel) = path.strip_prefix(base) else {
            continue;
        };
        // Keys are ASCII by validation, so anything else was not put here by us.
        let Some(rel) = rel.to_str() else { continue };
        let key = rel.replace(std::path::MAIN_SEPARATOR, "/");
        if ft.is_dir() {
            // Only descend where a key with the prefix can be.
            let as_prefix = format!("{key}/");
            if as_prefix.starts_with(prefix) || prefix.starts_with(&as_prefix) {
                walk(base, &path, prefix, out)?;
            }
        } else if ft.is_file() && key.starts_with(prefix) && validate_object_key(&key).is_ok() {
            let md = entry
                .metadata()
                .map_err(|e| io_ctx("reading metadata of", &path, e))?;
            out.push(meta_from(&key, &md));
        }
    }
    Ok(())
}

/// Removes the directories between `path`'s parent and `root` that became empty, so deleted
/// recordings do not leave a tree of empty folders behind.
fn prune_empty_dirs(root: &Path, path: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

#[async_trait]
impl ObjectStore for DirObjectStore {
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        _content_type: &str,
    ) -> Result<ObjectMeta, ObjectStoreError> {
        validate_object_key(key)?;
        // Copy into tmp/ and sync it: the source may be on another filesystem and is still the
        // caller's (a recorder deletes its segment after the put). std::fs::copy lets the kernel
        // copy (copy_file_range) instead of shuttling recordings through a user-space buffer.
        let src = path.to_path_buf();
        let key = key.to_string();
        let dirs = self.dirs.clone();
        tokio::task::spawn_blocking(move || {
            // Opened first so a missing or unreadable source is reported as the caller's I/O error.
            std::fs::File::open(&src)?;
            let tmp = dirs.temp_path();
            let r = std::fs::copy(&src, &tmp)
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .map_err(|e| io_ctx(&format!("copying {} to", src.display()), &tmp, e))
                .and_then(|()| dirs.publish(&tmp, &key));
            if r.is_err() {
                discard(&tmp);
            }
            r
        })
        .await
        .map_err(|e| ObjectStoreError::Backend(format!("put task failed: {e}")))?
    }

    async fn put_bytes(
        &self,
        key: &str,
        bytes: bytes::Bytes,
        _content_type: &str,
    ) -> Result<ObjectMeta, ObjectStoreError> {
        validate_object_key(key)?;
        let key = key.to_string();
        let this = self.dirs.clone();
        tokio::task::spawn_blocking(move || {
            let tmp = this.temp_path();
            let written = std::fs::File::create(&tmp).and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_all()
            });
            let r = written
                .map_err(|e| io_ctx("writing", &tmp, e))
                .and_then(|()| this.publish(&tmp, &key));
            if r.is_err() {
                discard(&tmp);
            }
            r
        })
        .await
        .map_err(|e| ObjectStoreError::Backend(format!("put task failed: {e}")))?
    }

    async fn get(&self, key: &str) -> Result<Option<ObjectReader>, ObjectStoreError> {
        validate_object_key(key)?;
        let path = self.dirs.object_path(key);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // `a/b` looked up while `a` is a file.
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(None),
            Err(e) => return Err(io_ctx("opening", &path, e)),
        };
        let md = file
            .metadata()
            .await
            .map_err(|e| io_ctx("reading metadata of", &path, e))?;
        if !md.is_file() {
            return Ok(None);
        }
        Ok(Some(ObjectReader {
            meta: meta_from(key, &md),
            body: Box::pin(file),
        }))
    }

    async fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Option<ObjectReader>, ObjectStoreError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let Some(object) = self.get(key).await? else {
            return Ok(None);
        };
        let path = self.dirs.object_path(key);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_ctx("opening", &path, e))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| io_ctx("seeking in", &path, e))?;
        let body: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>> = match len {
            Some(len) => Box::pin(file.take(len)),
            None => Box::pin(file),
        };
        Ok(Some(ObjectReader {
            meta: object.meta,
            body,
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        validate_object_key(key)?;
        let path = self.dirs.object_path(key);
        let root = self.dirs.objects.clone();
        tokio::task::spawn_blocking(move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(()),
                Err(e) => return Err(io_ctx("deleting", &path, e)),
            }
            let dir = path.parent().unwrap_or(&root).to_path_buf();
            sync_dir(&dir)?;
            prune_empty_dirs(&root, &path);
            Ok(())
        })
        .await
        .map_err(|e| ObjectStoreError::Backend(format!("delete task failed: {e}")))?
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        let root = self.dirs.objects.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &prefix, &mut out)?;
            // Directory order is not key order (`a-b` sorts before `a/c`), so sort the keys.
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| ObjectStoreError::Backend(format!("list task failed: {e}")))?
    }

    async fn playback_url(&self, key: &str, ttl: Duration) -> Result<String, ObjectStoreError> {
        validate_object_key(key)?;
        let now_ms = self.clock.now_ms();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        // Rounded up so the URL is valid for at least `ttl`.
        let expires = (now_ms.saturating_add(ttl_ms) + 999).div_euclid(1000);
        Ok(format!(
            "{}/objects/{key}?{}",
            self.public_base_url,
            self.signed_query(key, expires)
        ))
    }
}
