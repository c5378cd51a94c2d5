//! The guard every test that needs an outside program (a *peer*: ffmpeg, nginx-rtmp, openssl,
//! procps, the GStreamer RTSP server, cfn-lint) goes through: the workers' unit tests,
//! `workers/tests/*` and the root `tests/*` all call [`require`] (or
//! [`crate::require_peers!`]) and, for the tests that run a whole media chain, [`heavy`].
//!
//! A missing peer is a test failure that names the peer and how to install it: a test that
//! returned early would pass without testing anything, so there is no way to skip. A peer that
//! is present but fails (an ffmpeg that cannot encode, an openssl that cannot sign) is a
//! failure too: the helpers that run it panic with its error output.
//!
//! Not part of the relay: it is public (and hidden from the docs) only so that the other
//! test crates of the workspace can share it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

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
    /// ([`crate::process::DEFAULT_FFMPEG`]), which the sessions under test run.
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
                    let default = crate::process::DEFAULT_FFMPEG;
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

/// Fails the calling test, naming what is missing and how to install it, unless every peer in
/// `peers` can run here.
#[track_caller]
pub fn require(peers: &[Peer]) {
    let missing: Vec<String> = peers
        .iter()
        .filter_map(|&p| Some(format!("{p} ({})", p.missing()?)))
        .collect();
    assert!(
        missing.is_empty(),
        "this test needs {}. `make test` (or `scripts/install-deps.sh test`) installs what is missing",
        missing.join("; ")
    );
}

/// [`require`] for a list of [`Peer`] names.
#[macro_export]
macro_rules! require_peers {
    ($($peer:ident),+ $(,)?) => {
        $crate::test_peers::require(&[$($crate::test_peers::Peer::$peer),+])
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
#[track_caller]
pub fn heavy(peers: &[Peer]) -> impl std::future::Future<Output = HeavyGuard> {
    require(peers);
    HEAVY.lock()
}

/// [`heavy`] for a test that is not async.
#[track_caller]
pub fn heavy_blocking(peers: &[Peer]) -> HeavyGuard {
    require(peers);
    HEAVY.blocking_lock()
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
