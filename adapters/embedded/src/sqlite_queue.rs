//! [`SqliteQueue`]: the embedded [`Queue`] on a SQLite file.
//!
//! One `queue_messages` table holds every queue. A message is visible when `visible_at_ms <= now`
//! (by the injected [`Clock`]); a receive moves `visible_at_ms` out by the visibility timeout and
//! writes a fresh `receipt`, which is what makes the previous delivery's receipt stale. State is
//! derived rather than stored: in flight = hidden and received at least once; delayed = hidden and
//! never received.
//!
//! The file may be the store's own (the usual setup: one `relaycast.db`) or a separate one.
//! Every change (`send`, the delivering part of `receive`, `ack`, `extend`) is an operation of
//! the file's group commit ([`SqliteDatabase`]); given the store's database
//! ([`SqliteQueue::on`], as [`super::open_embedded`] does) sends and store writes share commits.
//! Reads (`stats`, a receive's look at whether anything is visible) use read connections.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::Notify;

use super::sqlite_db::{OpError, SqliteDatabase};
use relaycast_core::ports::queue::{self, validate_queue_name};
use relaycast_core::ports::{
    dead_letter_queue, Clock, Queue, QueueError, QueueStats, ReceivedMessage,
};

/// How many receives a message gets before it moves to the dead-letter queue, by default.
pub const DEFAULT_MAX_RECEIVES: u32 = 5;
/// How often a long poll looks again when nothing wakes it earlier. Sends through this adapter
/// wake waiting polls at once, and a delay or visibility timeout running out is slept for
/// exactly (see [`SqliteQueue::receive`]), so this only bounds how late a send from another
/// process (or another adapter on the same file) is seen. It used to be 50 ms, which made an
/// idle `relaycast up` wake ~40 times a second for nothing.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The longest fallback poll: each empty look within one long poll doubles the nap, up to this,
/// so an idle queue is read about once every two seconds and a send from another process is
/// still seen within that.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The [`Queue`] on a SQLite file (WAL, `synchronous=FULL`). Cheap to share behind an `Arc`.
pub struct SqliteQueue {
    db: SqliteDatabase,
    clock: Arc<dyn Clock>,
    max_receives: u32,
    /// Wakes this adapter's long polls when it sends a message; other instances and processes
    /// are seen by polling.
    sent: Arc<Notify>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("path", &self.db.path())
            .field("max_receives", &self.max_receives)
            .finish_non_exhaustive()
    }
}

impl OpError for QueueError {
    fn backend(msg: String) -> Self {
        QueueError::Backend(msg)
    }

    fn wrote_nothing(&self) -> bool {
        !matches!(self, QueueError::Backend(_))
    }
}

impl SqliteQueue {
    /// Opens the queue database at `path` (may be the [`super::SqliteStore`]'s file) with the
    /// default of [`DEFAULT_MAX_RECEIVES`] receives before dead-lettering.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, QueueError> {
        Self::open_with_max_receives(path, clock, DEFAULT_MAX_RECEIVES)
    }

    /// As [`SqliteQueue::open`], moving a message to the dead-letter queue when it would be
    /// received more than `max_receives` (at least 1) times.
    pub fn open_with_max_receives(
        path: &Path,
        clock: Arc<dyn Clock>,
        max_receives: u32,
    ) -> Result<Self, QueueError> {
        if max_receives == 0 {
            return Err(QueueError::Invalid(
                "max_receives must be at least 1".into(),
            ));
        }
        let db = SqliteDatabase::open(path).map_err(QueueError::Backend)?;
        Self::on(db, clock, max_receives)
    }

    /// The queue on an open database, whose writer it shares with whatever else uses `db` (the
    /// store, in [`super::open_embedded`]), dead-lettering as [`SqliteQueue::open_with_max_receives`].
    pub fn on(
        db: SqliteDatabase,
        clock: Arc<dyn Clock>,
        max_receives: u32,
    ) -> Result<Self, QueueError> {
        if max_receives == 0 {
            return Err(QueueError::Invalid(
                "max_receives must be at least 1".into(),
            ));
        }
        Ok(Self {
            db,
            clock,
            max_receives,
            sent: Arc::new(Notify::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Runs the change `f` in the file's group commit; answers once it is durable.
    async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, i64) -> Result<T, QueueError> + Send + 'static,
    {
        let now = self.clock.now_ms();
        let result = self.db.write(move |conn| f(conn, now)).await;
        result.map_err(|e| self.name_error(op, e))
    }

    /// Runs the read `f` on a read connection (on the calling thread: see [`SqliteDatabase::read`]).
    async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, QueueError>
    where
        F: FnOnce(&Connection, i64) -> Result<T, QueueError>,
    {
        let now = self.clock.now_ms();
        let result = self.db.read(|conn| f(conn, now));
        result.map_err(|e| self.name_error(op, e))
    }

    fn name_error(&self, op: &str, e: QueueError) -> QueueError {
        match e {
            QueueError::Backend(msg) => {
                QueueError::Backend(format!("{op} on {}: {msg}", self.db.path().display()))
            }
            other => other,
        }
    }

    /// One attempt at receiving, without waiting. When nothing was received, also says how
    /// long (by the injected clock) until the queue's earliest hidden message becomes visible.
    async fn try_receive(
        &self,
        queue: &str,
        max: usize,
        visibility_ms: i64,
    ) -> Result<(Vec<ReceivedMessage>, Option<Duration>), QueueError> {
        // Idle long polls look several times a second; a plain read keeps them from taking the
        // write lock (and a place in a commit group) that the store and senders on the same
        // file need.
        let q = queue.to_string();
        if let Some(next) = self
            .read("receive", move |conn, now| next_visible(conn, &q, now))
            .await?
        {
            return Ok((Vec::new(), next));
        }
        let queue = queue.to_string();
        let max_receives = self.max_receives;
        self.write("receive", move |conn, now| {
            deliver(conn, &queue, max, visibility_ms, max_receives, now)
        })
        .await
    }
}

fn db_err(e: rusqlite::Error) -> QueueError {
    QueueError::Backend(e.to_string())
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn check_visibility(visibility: Duration) -> Result<i64, QueueError> {
    queue::check_visibility(visibility)?;
    Ok(duration_ms(visibility))
}

/// Dead-letter queues do not have dead-letter queues of their own: their messages stay put
/// however often they are received, so an operator can inspect them.
fn is_dead_letter_queue(queue: &str) -> bool {
    queue.ends_with("-dlq")
}

/// `None` when a message of `queue` is visible now; otherwise how long (by the injected clock)
/// until the earliest hidden one turns visible (`Some(None)` when the queue is empty). One
/// lookup in the (queue, visible_at_ms) index answers both "anything visible?" and "when is
/// the next?".
fn next_visible(
    conn: &Connection,
    queue: &str,
    now: i64,
) -> Result<Option<Option<Duration>>, QueueError> {
    let earliest: Option<i64> = conn
        .prepare_cached("SELECT MIN(visible_at_ms) FROM queue_messages WHERE queue = ?1")
        .and_then(|mut s| s.query_row(params![queue], |r| r.get(0)))
        .map_err(db_err)?;
    Ok(match earliest {
        None => Some(None),
        Some(at) if at > now => Some(Some(Duration::from_millis(
            u64::try_from(at - now).unwrap_or(0),
        ))),
        Some(_) => None,
    })
}

/// The delivering part of a receive, inside the group commit: up to `max` visible messages of
/// `queue` get a fresh receipt and are hidden for `visibility_ms`; those received too often
/// move to the dead-letter queue instead.
fn deliver(
    tx: &Connection,
    queue: &str,
    max: usize,
    visibility_ms: i64,
    max_receives: u32,
    now: i64,
) -> Result<(Vec<ReceivedMessage>, Option<Duration>), QueueError> {
    let mut out = Vec::with_capacity(max);
    let redrive = !is_dead_letter_queue(queue);
    let dlq = dead_letter_queue(queue);
    {
        let mut select = tx
            .prepare_cached(
                "SELECT seq, id, body, receive_count, sent_at_ms FROM queue_messages
                 WHERE queue = ?1 AND visible_at_ms <= ?2 ORDER BY visible_at_ms, seq LIMIT ?3",
            )
            .map_err(db_err)?;
        let mut deliver = tx
            .prepare_cached(
                "UPDATE queue_messages SET receipt = ?2, receive_count = ?3, visible_at_ms = ?4 WHERE seq = ?1",
            )
            .map_err(db_err)?;
        let mut dead_letter = tx
            .prepare_cached(
                "UPDATE queue_messages SET queue = ?2, receipt = NULL, receive_count = 0, visible_at_ms = ?3
                 WHERE seq = ?1",
            )
            .map_err(db_err)?;
        // Dead-lettered candidates leave the queue, so look again until the batch is full or
        // nothing visible is left.
        loop {
            let want = max - out.len();
            let candidates = select
                .query_map(params![queue, now, want as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            if candidates.is_empty() {
                break;
            }
            let mut moved = false;
            for (seq, id, body, count, sent_at_ms) in candidates {
                let count = u32::try_from(count).unwrap_or(u32::MAX);
                if redrive && count >= max_receives {
                    dead_letter
                        .execute(params![seq, dlq, now])
                        .map_err(db_err)?;
                    tracing::warn!(queue, message = %id, receives = count, "message moved to dead-letter queue");
                    moved = true;
                    continue;
                }
                // Time-ordered (v7) like message ids, so the receipt index grows at its end.
                let receipt = uuid::Uuid::now_v7().simple().to_string();
                let receive_count = count.saturating_add(1);
                deliver
                    .execute(params![
                        seq,
                        receipt,
                        receive_count,
                        now.saturating_add(visibility_ms)
                    ])
                    .map_err(db_err)?;
                out.push(ReceivedMessage {
                    id,
                    receipt,
                    body,
                    receive_count,
                    sent_at_ms,
                });
            }
            if !moved || out.len() >= max {
                break;
            }
        }
    }
    // Something was visible, so a caller that got nothing (all dead-lettered) looks again
    // right away rather than sleeping.
    let next = if out.is_empty() {
        Some(Duration::ZERO)
    } else {
        None
    };
    Ok((out, next))
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, queue: &str, body: &str, delay: Duration) -> Result<String, QueueError> {
        let mut ids = self.send_batch(queue, &[body.to_string()], delay).await?;
        ids.pop()
            .ok_or_else(|| QueueError::Backend("a send of one message returned no id".into()))
    }

    async fn send_batch(
        &self,
        queue: &str,
        bodies: &[String],
        delay: Duration,
    ) -> Result<Vec<String>, QueueError> {
        for body in bodies {
            queue::check_send(queue, body, delay)?;
        }
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        // Time-ordered (v7): an insert lands at the end of the id index, next to the previous
        // one, instead of dirtying a random page of it, which each commit then writes to the WAL.
        let ids: Vec<String> = bodies
            .iter()
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        let (queue, bodies, delay_ms, ids2) = (
            queue.to_string(),
            bodies.to_vec(),
            duration_ms(delay),
            ids.clone(),
        );
        self.write("send_batch", move |conn, now| {
            let mut insert = conn
                .prepare_cached(
                    "INSERT INTO queue_messages (id, queue, body, sent_at_ms, visible_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db_err)?;
            for (id, body) in ids2.iter().zip(&bodies) {
                insert
                    .execute(params![id, queue, body, now, now.saturating_add(delay_ms)])
                    .map_err(db_err)?;
            }
            Ok(())
        })
        .await?;
        self.sent.notify_waiters();
        Ok(ids)
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        queue::check_receive(queue, max, visibility, wait)?;
        let visibility_ms = duration_ms(visibility);
        // Long polling waits in real time: a test's manual clock only decides visibility.
        let deadline = tokio::time::Instant::now() + wait;
        let mut poll = POLL_INTERVAL;
        loop {
            // Registered before looking, so a send between the look and the wait still wakes us.
            let notified = self.sent.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (got, next_visible) = self.try_receive(queue, max, visibility_ms).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            // Sleep until the earliest delayed or in-flight message turns visible, a send here
            // wakes us, or the fallback poll for other processes' sends; never past the
            // deadline. A message just due gets 1 ms, so clock rounding cannot spin the loop.
            let mut nap = (deadline - now).min(poll);
            poll = (poll * 2).min(MAX_POLL_INTERVAL);
            if let Some(d) = next_visible {
                nap = nap.min(d.max(Duration::from_millis(1)));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn ack(&self, queue: &str, receipt: &str) -> Result<(), QueueError> {
        validate_queue_name(queue)?;
        let (queue, receipt) = (queue.to_string(), receipt.to_string());
        self.write("ack", move |conn, _now| {
            let n = conn
                .prepare_cached("DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2")
                .and_then(|mut s| s.execute(params![queue, receipt]))
                .map_err(db_err)?;
            if n == 0 {
                return Err(QueueError::StaleReceipt(receipt));
            }
            Ok(())
        })
        .await
    }

    async fn ack_batch(&self, queue: &str, receipts: &[String]) -> Vec<Result<(), QueueError>> {
        if validate_queue_name(queue).is_err() {
            return receipts
                .iter()
                .map(|_| validate_queue_name(queue))
                .collect();
        }
        if receipts.is_empty() {
            return Vec::new();
        }
        let (queue, receipts) = (queue.to_string(), receipts.to_vec());
        let n = receipts.len();
        let done = self
            .write("ack_batch", move |conn, _now| {
                let mut delete = conn
                    .prepare_cached("DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2")
                    .map_err(db_err)?;
                let mut results = Vec::with_capacity(receipts.len());
                for receipt in receipts {
                    let n = delete.execute(params![queue, receipt]).map_err(db_err)?;
                    results.push(if n == 0 {
                        Err(QueueError::StaleReceipt(receipt))
                    } else {
                        Ok(())
                    });
                }
                Ok(results)
            })
            .await;
        match done {
            Ok(results) => results,
            // Only the database fails a whole batch: every receipt gets its error.
            Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
        }
    }

    async fn extend(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        validate_queue_name(queue)?;
        let visibility_ms = check_visibility(visibility)?;
        let (queue, receipt) = (queue.to_string(), receipt.to_string());
        self.write("extend", move |conn, now| {
            let n = conn
                .prepare_cached("UPDATE queue_messages SET visible_at_ms = ?3 WHERE queue = ?1 AND receipt = ?2")
                .and_then(|mut s| s.execute(params![queue, receipt, now.saturating_add(visibility_ms)]))
                .map_err(db_err)?;
            if n == 0 {
                return Err(QueueError::StaleReceipt(receipt));
            }
            Ok(())
        })
        .await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        validate_queue_name(queue)?;
        let queue = queue.to_string();
        self.read("stats", move |conn, now| {
            let row = conn
                .query_row(
                    "SELECT
                         COALESCE(SUM(visible_at_ms <= ?2), 0),
                         COALESCE(SUM(visible_at_ms > ?2 AND receive_count > 0), 0),
                         COALESCE(SUM(visible_at_ms > ?2 AND receive_count = 0), 0)
                     FROM queue_messages WHERE queue = ?1",
                    params![queue, now],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    },
                )
                .optional()
                .map_err(db_err)?
                .unwrap_or_default();
            Ok(QueueStats {
                visible: row.0 as u64,
                in_flight: row.1 as u64,
                delayed: row.2 as u64,
            })
        })
        .await
    }
}
