//! The guard every test that needs an outside program (a *peer*: ffmpeg, nginx-rtmp, openssl,
//! procps, the GStreamer RTSP server, cfn-lint) goes through: the workers' unit tests,
//! `workers/tests/*` and the root `tests/*` all call [`require`] (or
//! [`crate::require_peers!`]) and, for the tests that run a whole media chain, [`heavy`].
//!
//! A missing peer is a test failure that names the peer and how to install it: a test that
//! returned early would pass without testing anything. Only [`OPT_OUT`] set to a value other
//! than `0` turns the tests whose peers are missing into skips; each skip is counted, and the
//! test binary says how many it skipped when it exits. A peer that is present but fails (an
//! ffmpeg that cannot encode, an openssl that cannot sign) is a failure even then: the
//! helpers that run it panic with its error output.
//!
//! Not part of the relay: it is public (and hidden from the docs) only so that the other
//! test crates of the workspace can share it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};

/// The environment variable that lets tests whose peers are missing skip instead of fail.
/// Never set by `make test` or `.ci/run`.
pub const OPT_OUT: &str = "RELAYCAST_SKIP_MEDIA_TESTS";

/// Where Debian's libnginx-mod-rtmp installs the module.
pub const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// The interpreter `python3-gi` is installed for: Debian's own, not whatever `python3` is first
/// on `PATH` (a pyenv shim, a virtualenv).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// The RTSP test server (`tests/peers/rtsp_server.py` of the workspace).
pub const RTSP_SERVER_SCRIPT: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/peers/rtsp_server.py");

/// An outside program some tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peer {
    /// `ffmpeg` and `ffprobe` on `PATH`, and ffmpeg at the relay's default path
    /// ([`crate::ingest::DEFAULT_FFMPEG`]), which the sessions under test run.
    Ffmpeg,
    /// `nginx` with the RTMP module ([`RTMP_MODULE`]).
    NginxRtmp,
    /// The `openssl` CLI (test certificates).
    Openssl,
    /// procps' `pgrep` and `ps` (child process checks).
    Procps,
    /// GStreamer's RTSP server for [`SYSTEM_PYTHON`], with the elements the test stream uses
    /// (what `rtsp_server.py --check` checks).
    GstRtspServer,
    /// `cfn-lint` on `PATH`.
    CfnLint,
}

impl Peer {
    /// What is missing, or `None` when the peer can run here. Checked once per process.
    pub fn missing(self) -> Option<String> {
        // One slot per variant, in declaration order: `CfnLint` must stay the last one.
        const PEERS: usize = Peer::CfnLint as usize + 1;
        static CHECKED: [OnceLock<Option<String>>; PEERS] = [const { OnceLock::new() }; PEERS];
        CHECKED[self as usize].get_or_init(|| self.check()).clone()
    }

    fn check(self) -> Option<String> {
        match self {
            Peer::Ffmpeg => runs("ffmpeg", &["-version"])
                .or_else(|| runs("ffprobe", &["-version"]))
                .or_else(|| {
                    let default = crate::ingest::DEFAULT_FFMPEG;
                    (!Path::new(default).exists()).then(|| {
                        format!("{default} (the relay's default ffmpeg_path) does not exist")
                    })
                }),
            Peer::NginxRtmp => runs("nginx", &["-v"]).or_else(|| {
                (!Path::new(RTMP_MODULE).exists()).then(|| {
                    format!(
                        "the nginx RTMP module {RTMP_MODULE} (libnginx-mod-rtmp) does not exist"
                    )
                })
            }),
            Peer::Openssl => runs("openssl", &["version"]),
            Peer::Procps => runs("pgrep", &["--version"]).or_else(|| runs("ps", &["--version"])),
            Peer::GstRtspServer => runs(SYSTEM_PYTHON, &[RTSP_SERVER_SCRIPT, "--check"]),
            Peer::CfnLint => runs("cfn-lint", &["--version"]),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Peer::Ffmpeg => "ffmpeg",
            Peer::NginxRtmp => "nginx-rtmp",
            Peer::Openssl => "openssl",
            Peer::Procps => "procps",
            Peer::GstRtspServer => "the GStreamer RTSP server",
            Peer::CfnLint => "cfn-lint",
        })
    }
}

/// `None` when `program args` starts and exits 0; otherwise what went wrong, with its output.
fn runs(program: &str, args: &[&str]) -> Option<String> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout);
            Some(format!(
                "`{program} {}` failed with {}: {}",
                args.join(" "),
                out.status,
                text.trim()
            ))
        }
        Err(e) => Some(format!("`{program}` cannot run: {e}")),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A test that panicked while holding it leaves valid data behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether [`OPT_OUT`] is set (to anything but `0` or nothing).
pub fn opted_out() -> bool {
    std::env::var_os(OPT_OUT).is_some_and(|v| !v.is_empty() && v != "0")
}

static SKIPPED: AtomicUsize = AtomicUsize::new(0);
static SKIPPED_FOR: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// How many tests of this process skipped so far.
pub fn skipped() -> usize {
    SKIPPED.load(Ordering::SeqCst)
}

extern "C" fn report_skips() {
    let n = skipped();
    if n > 0 {
        let missing: Vec<String> = lock(&SKIPPED_FOR).iter().cloned().collect();
        eprintln!(
            "{n} media test{} skipped ({OPT_OUT} is set), missing: {}",
            if n == 1 { "" } else { "s" },
            missing.join(", ")
        );
    }
}

/// Whether the calling test may run: `true` when every peer in `peers` can run here. When one
/// is missing, panics with what is missing and how to install it, unless [`OPT_OUT`] is set:
/// then the skip is counted (and reported when the process exits) and `false` is returned, and
/// the test must return at once.
#[track_caller]
pub fn require(peers: &[Peer]) -> bool {
    let missing: Vec<(Peer, String)> = peers
        .iter()
        .filter_map(|&p| Some((p, p.missing()?)))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let what = missing
        .iter()
        .map(|(p, why)| format!("{p} ({why})"))
        .collect::<Vec<_>>()
        .join("; ");
    if !opted_out() {
        panic!(
            "this test needs {what}. `make test` (or `scripts/install-deps.sh test`) installs \
             what is missing; set {OPT_OUT}=1 only to skip the tests whose peers are missing"
        );
    }
    static HOOK: Once = Once::new();
    // SAFETY: `report_skips` is a plain `extern "C" fn()` that only reads statics and writes to
    // stderr; libtest ends the process with `exit`, which runs it.
    HOOK.call_once(|| unsafe {
        libc::atexit(report_skips);
    });
    SKIPPED.fetch_add(1, Ordering::SeqCst);
    lock(&SKIPPED_FOR).extend(missing.iter().map(|(p, _)| p.to_string()));
    eprintln!("SKIPPED ({OPT_OUT} is set): needs {what}");
    false
}

/// Returns from the calling test when [`require`] says it may not run (only ever with
/// [`OPT_OUT`] set; without it a missing peer panics).
#[macro_export]
macro_rules! require_peers {
    ($($peer:ident),+ $(,)?) => {
        if !$crate::test_peers::require(&[$($crate::test_peers::Peer::$peer),+]) {
            return;
        }
    };
}

/// One heavy media test at a time in this process: those that run nginx, encoding publishers
/// and a relay. libtest runs a binary's tests on parallel threads, and two such tests on a
/// 2-core machine measure each other's CPU contention, not the relay. (Cargo runs the test
/// binaries one after another.) A Tokio mutex: each test has its own runtime, and it does not
/// poison when a test fails.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The guard of a heavy media test; the next one starts when it is dropped.
pub type HeavyGuard = tokio::sync::MutexGuard<'static, ()>;

/// [`require`]s `peers`, then waits for the other heavy media tests of this process to finish.
/// `None` only when the test is skipped (see [`require`]).
#[track_caller]
pub fn heavy(peers: &[Peer]) -> impl std::future::Future<Output = Option<HeavyGuard>> {
    let run = require(peers);
    async move {
        if run {
            Some(HEAVY.lock().await)
        } else {
            None
        }
    }
}

/// [`heavy`] for a test that is not async.
#[track_caller]
pub fn heavy_blocking(peers: &[Peer]) -> Option<HeavyGuard> {
    require(peers).then(|| HEAVY.blocking_lock())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_missing_or_failing_is_named() {
        let why = runs("/nonexistent/relaycast-peer", &["-version"]).expect("missing");
        assert!(why.contains("/nonexistent/relaycast-peer"), "{why}");
        // Absolute paths: the guard's own test must not need anything on PATH.
        assert!(runs("/bin/sh", &["-c", "exit 0"]).is_none());
        let why = runs("/bin/sh", &["-c", "echo no codec >&2; exit 3"]).expect("fails");
        assert!(
            why.contains("exit status: 3") && why.contains("no codec"),
            "{why}"
        );
    }
}
