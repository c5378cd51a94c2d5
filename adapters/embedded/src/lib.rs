//! The embedded adapter set: the `Store` and `Queue` ports on one SQLite file, the `ObjectStore`
//! port on a local directory. It is the default and is what `relaycast up` runs; it is durable,
//! not a test double.

pub mod dir_object_store;
pub mod embedded;
mod sqlite_common;
pub mod sqlite_db;
pub mod sqlite_queue;
pub mod sqlite_store;

pub use dir_object_store::DirObjectStore;
pub use embedded::{open_embedded, prepare_data_dir, Embedded, EmbeddedError};
pub use sqlite_db::SqliteDatabase;
pub use sqlite_queue::SqliteQueue;
pub use sqlite_store::SqliteStore;
