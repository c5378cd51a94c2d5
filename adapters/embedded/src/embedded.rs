//! The embedded adapter set on one data directory, opened the same way by every process that
//! runs on it (`relaycast up`, the standalone `relay` worker):
//!
//! - `relaycast.db`: one SQLite file (WAL) holding the [`SqliteStore`] records and the
//!   [`SqliteQueue`] messages, opened once ([`SqliteDatabase`]) so both share one writer and
//!   its group commits; several processes may share the file;
//! - `objects/`: the [`DirObjectStore`] root, served over HTTP by the host under `/objects/`;
//! - `object-signing.key`: the per-installation secret that signs playback URLs, created once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DirObjectStore, SqliteDatabase, SqliteQueue, SqliteStore};
use relaycast_core::config::Settings;
use relaycast_core::ports::{Clock, Ports};

/// The SQLite file of the store and queue, inside the data directory.
pub const DATABASE_FILE: &str = "relaycast.db";
/// The object store root, inside the data directory.
pub const OBJECTS_DIR: &str = "objects";
/// The playback URL signing key, inside the data directory.
pub const SIGNING_KEY_FILE: &str = "object-signing.key";

/// Why the embedded adapters could not be opened. Each message is one line naming the problem.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The data directory (or a file in it) cannot be created or written.
    #[error("data directory {path} is not usable: {reason}")]
    DataDir { path: PathBuf, reason: String },
    /// An adapter could not be opened.
    #[error("cannot open {what}: {reason}")]
    Adapter { what: &'static str, reason: String },
}

/// The embedded adapters of one data directory.
#[derive(Clone)]
pub struct Embedded {
    /// Every port, for handlers and workers.
    pub ports: Ports,
    /// The object store as its concrete type, for the host's `/objects/` route (signature checks).
    pub objects: Arc<DirObjectStore>,
}

/// Creates the data directory and proves it writable before anything is stored in it.
pub fn prepare_data_dir(path: &Path) -> Result<(), EmbeddedError> {
    let fail = |reason: String| EmbeddedError::DataDir {
        path: path.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(path).map_err(|e| fail(e.to_string()))?;
    let probe = path.join(".relaycast-write-probe");
    std::fs::write(&probe, b"ok").map_err(|e| fail(format!("not writable: {e}")))?;
    std::fs::remove_file(&probe).map_err(|e| fail(format!("not writable: {e}")))?;
    Ok(())
}

/// Opens the store, the queue (dead-lettering after `settings.queue.max_receives`) and the object
/// store in `settings.data_dir`, which [`prepare_data_dir`] has prepared. Playback URLs point at
/// `settings.public_url()`.
pub fn open_embedded(
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<Embedded, EmbeddedError> {
    // One database, so the store and the queue share one writer and their writes issued
    // together share one commit.
    let db = SqliteDatabase::open(&settings.data_dir.join(DATABASE_FILE)).map_err(|reason| {
        EmbeddedError::Adapter {
            what: "store",
            reason,
        }
    })?;
    let store = SqliteStore::on(db.clone(), clock.clone());
    let queue = SqliteQueue::on(db, clock.clone(), settings.queue.max_receives).map_err(|e| {
        EmbeddedError::Adapter {
            what: "queue",
            reason: e.to_string(),
        }
    })?;
    let objects = open_object_store(settings, clock.clone())?;
    let ports = Ports {
        store: Arc::new(store),
        queue: Arc::new(queue),
        objects: objects.clone(),
        clock,
    };
    Ok(Embedded { ports, objects })
}

/// Opens only the object store of `settings.data_dir` (with its signing key, created on first
/// use), e.g. to put a recording that the host then serves.
pub fn open_object_store(
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<Arc<DirObjectStore>, EmbeddedError> {
    let signing_key = load_or_create_secret(&settings.data_dir.join(SIGNING_KEY_FILE))?;
    let objects = DirObjectStore::open(
        &settings.data_dir.join(OBJECTS_DIR),
        settings.public_url(),
        signing_key,
        clock,
    )
    .map_err(|e| EmbeddedError::Adapter {
        what: "object store",
        reason: e.to_string(),
    })?;
    Ok(Arc::new(objects))
}

/// A per-installation secret kept at `path`, created once (32 random bytes).
pub fn load_or_create_secret(path: &Path) -> Result<Vec<u8>, EmbeddedError> {
    let fail = |reason: String| EmbeddedError::DataDir {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 32 => Ok(bytes),
        Ok(_) | Err(_) => {
            let secret: [u8; 32] = rand::random();
            // Write then rename, so a crash never leaves a short key behind.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, secret).map_err(|e| fail(e.to_string()))?;
            std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))?;
            Ok(secret.to_vec())
        }
    }
}
