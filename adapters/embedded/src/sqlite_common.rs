//! What the SQLite-backed adapters share: opening a connection with the durability settings and
//! running the schema migrations.
//!
//! The store and the queue use one migration list, so either may open a file first and both may
//! share one database file (through one [`super::SqliteDatabase`], or each with its own; WAL
//! lets separate writers interleave).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

/// The schema, one entry per version: `MIGRATIONS[i]` takes a database from `user_version = i` to
/// `i + 1`. Append only; never edit a released entry, since files in the field already ran it.
const MIGRATIONS: &[&str] = &[
    // 1: records of the Store port.
    "CREATE TABLE records (
         kind          TEXT    NOT NULL,
         key           TEXT    NOT NULL,
         version       INTEGER NOT NULL,
         account       TEXT,
         status        TEXT,
         time_ms       INTEGER,
         expires_at_ms INTEGER,
         body          TEXT    NOT NULL,
         PRIMARY KEY (kind, key)
     ) WITHOUT ROWID;
     CREATE INDEX records_by_account ON records (kind, account, time_ms, key)
         WHERE account IS NOT NULL AND time_ms IS NOT NULL;
     CREATE INDEX records_by_status ON records (kind, status, time_ms, key)
         WHERE status IS NOT NULL AND time_ms IS NOT NULL;
     CREATE INDEX records_by_time ON records (kind, time_ms, key)
         WHERE time_ms IS NOT NULL;
     CREATE INDEX records_by_expiry ON records (expires_at_ms)
         WHERE expires_at_ms IS NOT NULL;",
    // 2: messages of the Queue port. `seq` keeps send order among messages visible at the same ms.
    "CREATE TABLE queue_messages (
         seq           INTEGER PRIMARY KEY AUTOINCREMENT,
         id            TEXT    NOT NULL UNIQUE,
         queue         TEXT    NOT NULL,
         body          TEXT    NOT NULL,
         sent_at_ms    INTEGER NOT NULL,
         visible_at_ms INTEGER NOT NULL,
         receive_count INTEGER NOT NULL DEFAULT 0,
         receipt       TEXT
     );
     CREATE INDEX queue_messages_ready ON queue_messages (queue, visible_at_ms, seq);
     CREATE UNIQUE INDEX queue_messages_receipt ON queue_messages (receipt)
         WHERE receipt IS NOT NULL;",
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Turns SQLite's memory statistics off, once, before the library initializes (at the first
/// connection): with them on, every allocation SQLite makes takes one process-wide mutex, which
/// the writer and the readers of every file then share. Nothing here reads those statistics. A
/// call after SQLite initialized (another part of the process opened a connection first) is
/// refused by SQLite and changes nothing.
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` before `sqlite3_initialize` is SQLite's documented way to
        // set process-wide options; `Once` keeps it to one call, and after initialization
        // SQLite answers SQLITE_MISUSE without changing anything.
        unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                std::ffi::c_int::from(0u8),
            );
        }
    });
}

/// Opens (creating if needed) the database at `path`, sets WAL + `synchronous=FULL` so a commit
/// that returned is on disk, and brings the schema up to date. Errors name the path.
pub(crate) fn open_connection(path: &Path) -> Result<Connection, String> {
    configure_sqlite();
    let ctx = |what: &str, e: &dyn std::fmt::Display| {
        format!("{what} SQLite database {}: {e}", path.display())
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| ctx("creating the directory of", &e))?;
    }
    let mut conn = Connection::open(path).map_err(|e| ctx("opening", &e))?;
    // Concurrent writers (the store, the queue, another process) wait for the lock instead of
    // failing at once.
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| ctx("configuring", &e))?;
    // journal_mode is the first statement that reads the file, so a non-database file fails here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| ctx("opening", &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(ctx(
            "opening",
            &format!("cannot switch to WAL journal mode (got {mode})"),
        ));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(|e| ctx("configuring", &e))?;
    migrate(&mut conn).map_err(|e| ctx("migrating", &e))?;
    Ok(conn)
}

/// Runs the migrations not yet applied, each in its own immediate transaction so two processes
/// opening the same new file do not both apply one.
fn migrate(conn: &mut Connection) -> Result<(), String> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        let current: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        if current > SCHEMA_VERSION {
            return Err(format!(
                "schema version {current} is newer than this build's {SCHEMA_VERSION}; upgrade relaycast"
            ));
        }
        if current == SCHEMA_VERSION {
            return Ok(());
        }
        let idx = usize::try_from(current).map_err(|_| format!("bad schema version {current}"))?;
        tx.execute_batch(MIGRATIONS[idx])
            .map_err(|e| format!("migration to version {}: {e}", current + 1))?;
        tx.pragma_update(None, "user_version", current + 1)
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
    }
}
