//! [`SqliteDatabase`]: one SQLite file as the store and the queue use it, with **group commit**.
//!
//! Writes go to one writer thread that owns the file's write connection. A caller sends its
//! operation (a closure over the connection) with a oneshot reply and awaits the reply. The
//! writer takes every operation pending (up to [`MAX_GROUP`]), opens one `BEGIN IMMEDIATE`
//! transaction, runs each operation in turn, then one `COMMIT`, so one fsync
//! (`synchronous=FULL`) makes the whole group durable; only then is anybody answered. An
//! operation checks its conditions and input before its first write, so one that fails that
//! way (a condition that does not hold, an invalid body, a stale receipt:
//! [`OpError::wrote_nothing`]) wrote nothing and is answered with its own error while the group
//! goes on; one that fails otherwise (a database error, a panic) may have written part of itself,
//! so the group's transaction is rolled back and the operations before it are answered with
//! that reason. (Per-operation savepoints did this isolation before; their statement journals
//! copied every page an operation touched, a sixth of the writer's time.) A lone writer is
//! never made to wait for company: the writer starts a group as soon as it has one operation,
//! and the operations that arrive during that group's fsync form the next group.
//!
//! Operations of a group run one after another in the order they arrived, each seeing the
//! writes of those before it, so the group is equivalent to running them one by one; since none
//! is answered before the commit, no caller can observe the difference. A crash before the
//! `COMMIT` is durable loses the whole group, and no one in it had been answered.
//!
//! Reads (`get`, `query`, queue stats, the idle check of a receive) use a small pool of separate
//! read connections, on the calling thread; WAL lets them run beside the writer, and each read
//! statement starts a fresh read transaction, so it sees every commit that completed before it
//! began, in particular every write whose call already returned.
//!
//! Checkpoints (copying the WAL back into the database file) run on a thread of their own with
//! its own connection, woken every [`CHECKPOINT_EVERY`] commits, instead of inside the commit
//! that crosses SQLite's auto-checkpoint size, where the copy and its fsync held up the writer
//! and everybody waiting on it. A background checkpoint cannot reset the WAL while the writer
//! keeps appending, so once the WAL has grown past [`WAL_RESET_FRAMES`] the writer runs one
//! checkpoint itself right after a commit: it copies only the frames the background one has not,
//! and lets the next transaction start the WAL over.
//!
//! [`super::SqliteStore`] and [`super::SqliteQueue`] each open their own database by default;
//! [`super::open_embedded`] opens one and gives it to both, so a store write and a queue send
//! issued together share one commit.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::sqlite_common::open_connection;

/// A commit or checkpoint of the writer that takes this long is logged: everybody waiting on the
/// writer waited that long.
const SLOW: Duration = Duration::from_millis(50);
/// Most operations in one group commit.
pub(crate) const MAX_GROUP: usize = 256;
/// Read connections kept open between reads (more are opened while more reads run at once).
const IDLE_READERS: usize = 4;
/// Commits between two background checkpoints.
const CHECKPOINT_EVERY: u64 = 16;
/// WAL frames (pages) past which the writer checkpoints itself so that the WAL starts over;
/// 4096 frames of 4 KiB is 16 MiB, four times SQLite's auto-checkpoint size.
const WAL_RESET_FRAMES: i64 = 4096;

/// An error of an operation run by the writer: either the operation's own (its condition, its
/// input), which rolled back only that operation, or the database's.
pub(crate) trait OpError: Send + 'static {
    /// A backend failure with this message (a failed `BEGIN`/`COMMIT`, a stopped writer).
    fn backend(msg: String) -> Self;
    /// Whether an operation failing with this error wrote nothing: the errors an operation
    /// returns only before its first write (a condition that does not hold, invalid input, a
    /// stale receipt). Any other failure may have written part of the operation, and the writer
    /// then rolls back the whole group's transaction.
    fn wrote_nothing(&self) -> bool;
}

/// How an operation run by the writer ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// It succeeded.
    Ok,
    /// It failed before writing anything: the group goes on.
    FailedClean,
    /// It failed and may have written part of itself: the group's transaction must go.
    FailedDirty,
}

/// One operation queued for the writer, with the means to answer its caller.
trait Job: Send {
    /// Runs the operation inside the group's transaction.
    fn run(&mut self, conn: &Connection) -> Ran;
    /// Answers the caller once the group's fate is known: `Ok` when the commit is durable.
    fn answer(self: Box<Self>, commit: Result<(), String>);
}

struct Op<T, E, F> {
    f: Option<F>,
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> Job for Op<T, E, F>
where
    T: Send + 'static,
    E: OpError,
    F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> Ran {
        let Some(f) = self.f.take() else {
            return Ran::FailedClean;
        };
        let result = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
            Ok(r) => r,
            Err(_) => Err(E::backend("the operation panicked".into())),
        };
        let ran = match &result {
            Ok(_) => Ran::Ok,
            Err(e) if e.wrote_nothing() => Ran::FailedClean,
            Err(_) => Ran::FailedDirty,
        };
        self.result = Some(result);
        ran
    }

    fn answer(self: Box<Self>, commit: Result<(), String>) {
        let result = match (self.result, commit) {
            // Its own failure: nothing of it was written, whatever became of the group.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (Some(Ok(_)), Err(msg)) | (None, Err(msg)) => Err(E::backend(msg)),
            (None, Ok(())) => Err(E::backend("the operation did not run".into())),
        };
        // The caller may have given up waiting; the write stands either way.
        let _ = self.reply.send(result);
    }
}

/// One SQLite file: a writer thread doing group commits, and a pool of read connections.
/// Cheap to clone; the writer stops once every clone is dropped and the pending operations are
/// answered.
#[derive(Clone)]
pub struct SqliteDatabase {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// To the writer thread; dropping it (with the last clone) lets the writer answer what is
    /// queued and exit.
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// Idle read connections.
    readers: Mutex<Vec<Connection>>,
    /// Transactions the writer committed.
    commits: Arc<AtomicU64>,
}

impl std::fmt::Debug for SqliteDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDatabase")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteDatabase {
    /// Opens (creating if needed) the database at `path`, migrates its schema and starts its
    /// writer thread. Errors name the path.
    pub fn open(path: &Path) -> Result<Self, String> {
        let writer = open_connection(path)?;
        // Statement journals (a multi-row statement's own undo) stay in memory instead of
        // temporary files. A larger page cache keeps a big group's dirty pages out of the WAL
        // until the commit.
        writer
            .execute_batch("PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;")
            .map_err(|e| format!("configuring SQLite database {}: {e}", path.display()))?;
        // Checkpoints are the checkpointer's (see the module doc).
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .map_err(|e| format!("configuring SQLite database {}: {e}", path.display()))?;
        let reader = open_reader(path)?;
        let checkpointer = Checkpointer::start(path)?;
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&commits);
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::thread::Builder::new()
            .name(format!("sqlite-writer:{file}"))
            .spawn(move || writer_loop(&writer, &rx, &counter, checkpointer))
            .map_err(|e| {
                format!(
                    "starting the writer thread of SQLite database {}: {e}",
                    path.display()
                )
            })?;
        let readers = Mutex::new(vec![reader]);
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                jobs: tx,
                readers,
                commits,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many transactions the writer has committed so far (each one fsync); against the
    /// number of writes answered, tells how well writes are grouped.
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// Runs `f` on the write connection inside a group commit; answers once the commit holding
    /// it is durable (or with `f`'s own error, nothing of it written). `f` must not begin or end
    /// transactions itself, and must return an error that [`OpError::wrote_nothing`] only before
    /// its first write.
    pub(crate) async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: OpError,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Op {
            f: Some(f),
            result: None,
            reply,
        });
        if self.inner.jobs.send(job).is_err() {
            return Err(E::backend("the database writer has stopped".into()));
        }
        answer.await.unwrap_or_else(|_| {
            Err(E::backend(
                "the database writer stopped before answering".into(),
            ))
        })
    }

    /// Runs the read `f` on a read connection on the calling thread. A look-up by key or a page
    /// of an index costs microseconds to a few hundred (bodies are text, copied out, not
    /// parsed), less than the hand-off to the blocking pool and back, and a WAL reader does
    /// not wait for the writer, so it does not hold up the runtime.
    pub(crate) fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: OpError,
        F: FnOnce(&Connection) -> Result<T, E>,
    {
        self.inner.with_reader(f)
    }
}

impl Inner {
    fn with_reader<T, E: OpError>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_reader(&self.path).map_err(E::backend)?,
        };
        let result = f(&conn);
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        // A connection left inside a transaction (it should never be) is not reused.
        if idle.len() < IDLE_READERS && conn.is_autocommit() {
            idle.push(conn);
        }
        result
    }
}

/// A read connection to a database the writer has already opened and migrated.
fn open_reader(path: &Path) -> Result<Connection, String> {
    let ctx = |e: rusqlite::Error| {
        format!(
            "opening SQLite database {} for reading: {e}",
            path.display()
        )
    };
    let conn = Connection::open(path).map_err(ctx)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(ctx)?;
    conn.execute_batch("PRAGMA query_only = ON;").map_err(ctx)?;
    Ok(conn)
}

fn exec(conn: &Connection, sql: &str) -> Result<(), String> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The background checkpoints of one file, as the writer sees them.
struct Checkpointer {
    /// Wakes the checkpoint thread; it stops once this is dropped (with the writer).
    wake: mpsc::SyncSender<()>,
    /// WAL frames the last checkpoint found (0 once the writer has reset it).
    wal_frames: Arc<AtomicI64>,
    /// Commits since the checkpoint thread was last woken.
    since_wake: u64,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, String> {
        let ctx = |e: rusqlite::Error| {
            format!(
                "opening SQLite database {} for checkpoints: {e}",
                path.display()
            )
        };
        let conn = Connection::open(path).map_err(ctx)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(ctx)?;
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let wal_frames = Arc::new(AtomicI64::new(0));
        let frames = Arc::clone(&wal_frames);
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::thread::Builder::new()
            .name(format!("sqlite-checkpoint:{file}"))
            .spawn(move || {
                while woken.recv().is_ok() {
                    if let Some(log) = checkpoint(&conn) {
                        frames.store(log, Ordering::Relaxed);
                    }
                }
            })
            .map_err(|e| {
                format!(
                    "starting the checkpoint thread of SQLite database {}: {e}",
                    path.display()
                )
            })?;
        Ok(Self {
            wake,
            wal_frames,
            since_wake: 0,
        })
    }

    /// After each commit of the writer: wakes the checkpoint thread every [`CHECKPOINT_EVERY`]
    /// commits, and checkpoints on `conn` itself when the WAL has grown past
    /// [`WAL_RESET_FRAMES`].
    fn after_commit(&mut self, conn: &Connection) {
        self.since_wake += 1;
        if self.since_wake >= CHECKPOINT_EVERY {
            self.since_wake = 0;
            // Full means a wake-up is pending already.
            let _ = self.wake.try_send(());
        }
        if self.wal_frames.load(Ordering::Relaxed) > WAL_RESET_FRAMES {
            self.wal_frames.store(0, Ordering::Relaxed);
            checkpoint(conn);
        }
    }
}

/// A passive checkpoint (it never waits for the writer or readers); the WAL's size in frames,
/// or `None` when it failed (the next one tries again; the WAL only grows meanwhile).
fn checkpoint(conn: &Connection) -> Option<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
        .ok()
}

/// The writer thread: one group commit per turn, until every sender is gone.
fn writer_loop(
    conn: &Connection,
    jobs: &mpsc::Receiver<Box<dyn Job>>,
    commits: &AtomicU64,
    mut checkpointer: Checkpointer,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = VecDeque::with_capacity(MAX_GROUP);
        group.push_back(first);
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push_back(job),
                Err(_) => break,
            }
        }
        while !group.is_empty() {
            let before = commits.load(Ordering::Relaxed);
            let (pending, started) = (group.len(), Instant::now());
            let turn = commit_some(conn, &mut group, commits);
            let committed = started.elapsed();
            if committed >= SLOW {
                tracing::warn!(
                    ms = committed.as_millis() as u64,
                    operations = pending - group.len(),
                    "slow SQLite group commit"
                );
            }
            if commits.load(Ordering::Relaxed) != before {
                let started = Instant::now();
                checkpointer.after_commit(conn);
                let took = started.elapsed();
                if took >= SLOW {
                    tracing::warn!(
                        ms = took.as_millis() as u64,
                        "slow SQLite checkpoint on the writer"
                    );
                }
            }
            if let Err(msg) = turn {
                // The rest of this turn would fail the same way (a broken file, a lock held
                // by another process past the busy timeout): answer it rather than spin.
                for job in group.drain(..) {
                    job.answer(Err(msg.clone()));
                }
            }
        }
    }
}

/// Runs operations from the front of `group` in one transaction and answers them: normally all
/// of them, fewer only when an operation failed in a way that may have written part of it (a
/// database error, a panic) or SQLite abandoned the transaction itself: the transaction is then
/// rolled back, that operation keeps its own error, the ones before it are answered with the
/// reason, and the rest stay in `group` for the next transaction. No savepoint per operation:
/// every operation checks its conditions and input before its first write, so one that fails
/// that way wrote nothing. `Err` when beginning or committing failed; the operations taken were
/// then answered with it. Counts the commit in `commits` before answering anybody.
fn commit_some(
    conn: &Connection,
    group: &mut VecDeque<Box<dyn Job>>,
    commits: &AtomicU64,
) -> Result<(), String> {
    if group.len() == 1 {
        return commit_one(conn, group, commits);
    }
    exec(conn, "BEGIN IMMEDIATE").map_err(|e| format!("beginning a transaction: {e}"))?;
    let mut done: Vec<Box<dyn Job>> = Vec::with_capacity(group.len());
    while let Some(mut job) = group.pop_front() {
        let ran = job.run(conn);
        if ran == Ran::FailedDirty || conn.is_autocommit() {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            // Its own error stands (`answer` keeps an operation's own failure).
            job.answer(Err("the transaction was rolled back by an error".into()));
            for earlier in done {
                earlier.answer(Err(
                    "the transaction was rolled back by another write's error".into(),
                ));
            }
            return Ok(());
        }
        done.push(job);
    }
    let commit = exec(conn, "COMMIT").map_err(|e| format!("committing: {e}"));
    settle(conn, &commit, commits);
    for job in done {
        job.answer(commit.clone());
    }
    commit
}

/// After a commit: counts it, or rolls back whatever a failed one left open.
fn settle(conn: &Connection, commit: &Result<(), String>, commits: &AtomicU64) {
    match commit {
        Ok(()) => {
            commits.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) if !conn.is_autocommit() => {
            let _ = conn.execute_batch("ROLLBACK");
        }
        Err(_) => {}
    }
}

/// A group of one (no concurrent writer): the operation's own transaction, no savepoint, as
/// when every write committed alone.
fn commit_one(
    conn: &Connection,
    group: &mut VecDeque<Box<dyn Job>>,
    commits: &AtomicU64,
) -> Result<(), String> {
    let Some(mut job) = group.pop_front() else {
        return Ok(());
    };
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let msg = format!("beginning a transaction: {e}");
        job.answer(Err(msg.clone()));
        return Err(msg);
    }
    if job.run(conn) != Ran::Ok {
        // Its own error: nothing of it is kept, and it is answered with that error.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        job.answer(Ok(()));
        return Ok(());
    }
    let commit = exec(conn, "COMMIT").map_err(|e| format!("committing: {e}"));
    settle(conn, &commit, commits);
    job.answer(commit.clone());
    commit
}
