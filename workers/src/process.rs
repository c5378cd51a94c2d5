//! Process-group helpers for the children the workers supervise.
//!
//! ffmpeg may start helpers of its own, and killing only the direct child leaves those behind;
//! every child therefore runs in its own process group and is signalled as a group.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// Default path of the system ffmpeg.
pub const DEFAULT_FFMPEG: &str = "/usr/bin/ffmpeg";

/// Puts the command's child in a new process group whose id is the child's pid.
pub fn own_process_group(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0)
}

/// Makes the kernel SIGKILL the child when the thread that spawned it ends, so a worker that
/// dies without cleaning up (SIGKILL, a crash) takes its ffmpeg children with it. Spawn from a
/// thread that lives as long as the child should (a session's own thread does).
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        })
    }
}

/// Sends `signal` to the whole process group `pgid`. Errors (the group is gone) are ignored:
/// the caller only wants the group to end.
pub fn signal_group(pgid: u32, signal: i32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        // Never signal "every process" (-1) or our own group (0).
        return;
    }
    // SAFETY: kill(2) with a negative pid only sends a signal; no memory is involved.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Kills the process group at once (SIGKILL).
pub fn kill_group(pgid: u32) {
    signal_group(pgid, libc::SIGKILL);
}

/// Asks the group to quit (SIGINT, which ffmpeg treats as "finish the output and exit"),
/// polls `exited` until `deadline`, then kills the group. Returns whether it exited by itself.
pub fn stop_group(pgid: u32, deadline: Duration, mut exited: impl FnMut() -> bool) -> bool {
    signal_group(pgid, libc::SIGINT);
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if exited() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_group(pgid);
    false
}

/// A guard that kills a process group when dropped, so no child outlives its owner even on
/// panic or early return.
#[derive(Debug)]
pub struct GroupGuard {
    pgid: Option<u32>,
}

impl GroupGuard {
    /// Guards the process group `pgid`.
    pub fn new(pgid: u32) -> Self {
        GroupGuard { pgid: Some(pgid) }
    }

    /// The guarded group id.
    pub fn pgid(&self) -> Option<u32> {
        self.pgid
    }

    /// Stops guarding (the group was reaped by its owner).
    pub fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            kill_group(pgid);
        }
    }
}

/// A random id for this worker instance in leases (16 hex digits).
pub fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS: good enough for an instance id, no extra dependency.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}
