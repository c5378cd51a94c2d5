//! The relay data plane against the baselines a user has without relaycast, run side by side
//! on the same machine in the same time window:
//!
//! - **cpu**: total CPU and RSS of relaying one 2.5 Mbps 720p25 H.264+AAC stream to N
//!   destinations: the real product (`relaycast up` child, task created through the control
//!   API; the relaycast process plus its ffmpeg children), N separate `ffmpeg -c copy`, and one
//!   ffmpeg with the `tee` muxer. All three run at once, each to its own destinations.
//! - **first-frame**: time from the create call to the first keyframe at a destination,
//!   relaycast against a plain `ffmpeg -c copy` started at the same moment.
//! - **failover**: a primary and a backup source; the primary publisher is killed; the largest
//!   gap in video arrival at a destination player and the destination's reconnects (nginx-rtmp
//!   publisher ids), relaycast against a naive ffmpeg restart loop (`-rw_timeout 2 s`).
//! - **delay**: the added end-to-end delay of a copy relay: the same video tag (matched by a
//!   hash of its payload) received by a player on the source and a player on the destination.
//! - **density**: N copy relays (360p, 500 kbit/s, 2 destinations each) in one `relaycast up`
//!   against nginx-rtmp pushing the same N × 2, at several N (`density.rs`).
//! - **idle**: CPU and memory of a `relaycast up` with no task.
//!
//! Everything runs on 127.0.0.1: a private nginx-rtmp with a generated config on free ports,
//! a publisher looping a pre-encoded file with `-c copy` (so no encoder CPU runs during the
//! measurement), and in-process RTMP players (`rml_rtmp`) that note the wall-clock arrival of
//! every video tag. Every child runs in its own process group and is killed on drop.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use md5::{Digest, Md5};
use relaycast_core::domain::relay::types::{
    Fops, Resolution, Source, SourceUrl, TaskType, VideoCodec,
};
use relaycast_workers::ingest::transcode::{self, Watermarks};
use relaycast_workers::ingest::IngestSpec;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
};
use serde_json::{json, Value};

use crate::record::emit;

mod density;
mod flv_publisher;
pub mod recording;

const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
const ACCOUNT: &str = "bench";
const KEY: &str = "0123456789abcdef0123456789abcdef";

/// Options of `relaycast-bench relay`.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Which measurements to run: any of `cpu`, `transcode`, `first-frame`, `failover`,
    /// `delay`, `density`, `idle`.
    pub phases: Vec<String>,
    /// Destination counts of the cpu phase.
    pub destinations: Vec<usize>,
    /// Destination counts of the transcode phase.
    pub transcode_destinations: Vec<usize>,
    /// Rounds of the cpu phase (each runs every destination count once).
    pub rounds: usize,
    /// Seconds between all destinations publishing and the start of the measuring window.
    pub warmup: u64,
    /// Length of the cpu/RSS measuring window in seconds.
    pub window: u64,
    /// Runs of the first-frame phase.
    pub first_frame_runs: usize,
    /// Runs of the failover phase.
    pub failover_runs: usize,
    /// `timing.source_stall_timeout_ms` of the relaycast under test (None: the default).
    pub stall_timeout_ms: Option<u64>,
    /// The relaycast binary (default: `relaycast` next to this binary).
    pub relaycast_bin: Option<PathBuf>,
    /// Task counts of the density phase (each task: one pull, 2 destinations).
    pub density_tasks: Vec<usize>,
    /// Streams of each density window whose source and destinations get players (frames and
    /// delay are counted on these; every destination's rate is checked from nginx's `/stat`).
    pub density_sample: usize,
    /// Density without the nginx-rtmp contender: relaycast alone on the machine (for the most
    /// tasks it holds).
    pub density_relaycast_only: bool,
    /// Seconds of the idle phase's window.
    pub idle_window: u64,
    /// Directory for temporary files.
    pub dir: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child in its own process group; the group (and any descendants found under it) is
/// killed on drop.
pub(crate) struct Proc {
    child: Child,
    name: String,
    /// The child was waited for: its pid may be reused, so it is never signalled again.
    reaped: bool,
}

impl Proc {
    pub(crate) fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        relaycast_workers::process::own_process_group(cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        Ok(Proc {
            child,
            name: name.to_string(),
            reaped: false,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn running(&mut self) -> bool {
        if self.reaped {
            return false;
        }
        let running = matches!(self.child.try_wait(), Ok(None));
        if !running {
            self.reaped = true;
        }
        running
    }

    /// Kills the whole tree: every descendant (by pid and by group), then the child's group.
    pub(crate) fn kill(&mut self) {
        if self.reaped {
            return;
        }
        let table = proc_table();
        for pid in tree(&[self.pid()], &table) {
            // SAFETY: kill(2) only sends signals.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            if pid != self.pid() {
                relaycast_workers::process::kill_group(pid);
            }
        }
        relaycast_workers::process::kill_group(self.pid());
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            eprintln!("# stopping {} (pid {})", self.name, self.pid());
        }
        self.kill();
    }
}

/// pid -> (ppid, utime+stime+cutime+cstime in ticks, cutime+cstime in ticks) for every process.
fn proc_table() -> HashMap<u32, (u32, u64, u64)> {
    let mut out = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(i) = stat.rfind(')') else { continue };
        let f: Vec<&str> = stat[i + 1..].split_whitespace().collect();
        if f.len() < 15 {
            continue;
        }
        let n = |k: usize| f[k].parse::<u64>().unwrap_or(0);
        out.insert(
            pid,
            (n(1) as u32, n(11) + n(12) + n(13) + n(14), n(13) + n(14)),
        );
    }
    out
}

/// CPU time of a whole process (every thread, alive or exited) in seconds, with nanosecond
/// resolution: the process's CPU-time clock (`clock_getcpuclockid`). `/proc/PID/stat` counts
/// in clock ticks (10 ms), which over a 20 s window is a 0.05 % step per reading: as large as
/// the whole cost of an nginx push.
pub(crate) fn process_cpu_s(pid: u32) -> Option<f64> {
    let mut id: libc::clockid_t = 0;
    // SAFETY: both calls only write to the locals passed by pointer.
    unsafe {
        if libc::clock_getcpuclockid(pid as libc::pid_t, &mut id) != 0 {
            return None;
        }
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(id, &mut ts) != 0 {
            return None;
        }
        Some(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
    }
}

/// CPU seconds of the roots and their descendants: each process's CPU clock plus the ticks of
/// its children already reaped; and the number of processes.
fn cpu_s(roots: &[u32]) -> (f64, usize) {
    let table = proc_table();
    let hz = clock_ticks();
    let pids = tree(roots, &table);
    let total = pids
        .iter()
        .map(|p| {
            let (_, all, reaped) = table[p];
            match process_cpu_s(*p) {
                Some(own) => own + reaped as f64 / hz,
                None => all as f64 / hz,
            }
        })
        .sum();
    (total, pids.len())
}

/// The roots and all their descendants.
fn tree(roots: &[u32], table: &HashMap<u32, (u32, u64, u64)>) -> Vec<u32> {
    let mut out: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|p| table.contains_key(p))
        .collect();
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        for (pid, (ppid, _, _)) in table {
            if *ppid == parent && !out.contains(pid) {
                out.push(*pid);
            }
        }
        i += 1;
    }
    out
}

fn ticks(roots: &[u32]) -> (u64, usize) {
    let table = proc_table();
    let pids = tree(roots, &table);
    (pids.iter().map(|p| table[p].1).sum(), pids.len())
}

pub(crate) fn process_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// (PSS, USS) in kB from `/proc/PID/smaps_rollup`. PSS (proportional set size) counts each
/// page shared by k processes 1/k to each, so the shared libraries of N ffmpeg processes are
/// counted once over the N, not N times. USS (private clean + dirty) is what the process alone
/// holds: what its exit would free.
pub(crate) fn process_pss_uss_kb(pid: u32) -> (u64, u64) {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return (0, 0);
    };
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        field("Pss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
    )
}

/// One memory sample of a process tree, in MB: summed VmRSS, PSS and USS.
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss: f64,
    pss: f64,
    uss: f64,
}

fn mem_one(pid: u32) -> Mem {
    let (pss, uss) = process_pss_uss_kb(pid);
    Mem {
        rss: process_rss_kb(pid) as f64 / 1024.0,
        pss: pss as f64 / 1024.0,
        uss: uss as f64 / 1024.0,
    }
}

fn mem(roots: &[u32]) -> Mem {
    let table = proc_table();
    tree(roots, &table)
        .iter()
        .map(|p| mem_one(*p))
        .fold(Mem::default(), |a, b| Mem {
            rss: a.rss + b.rss,
            pss: a.pss + b.pss,
            uss: a.uss + b.uss,
        })
}

/// Memory samples of a window; medians of each.
#[derive(Debug, Clone, Default)]
struct MemSamples(Vec<Mem>);

impl MemSamples {
    fn push(&mut self, m: Mem) {
        self.0.push(m);
    }

    fn median(&self) -> Mem {
        let mut r: Vec<f64> = self.0.iter().map(|m| m.rss).collect();
        let mut p: Vec<f64> = self.0.iter().map(|m| m.pss).collect();
        let mut u: Vec<f64> = self.0.iter().map(|m| m.uss).collect();
        Mem {
            rss: median(&mut r),
            pss: median(&mut p),
            uss: median(&mut u),
        }
    }
}

/// Busy time of the whole machine (every CPU, every process, the bench's own included) in
/// clock ticks, from `/proc/stat`: all but idle and iowait.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    v.iter().take(8).sum::<u64>() - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0)
}

/// What else ran during a window: the machine's busy time and its load average at both ends.
struct Quiet {
    busy0: u64,
    load0: Option<String>,
}

impl Quiet {
    fn start() -> Quiet {
        Quiet {
            busy0: machine_busy_ticks(),
            load0: crate::record::loadavg(),
        }
    }

    /// `own_pct`: the CPU of everything the bench measured in the window (% of one core), so
    /// that the rest is what other processes (and the bench's own bookkeeping) used.
    /// Also returns the machine's busy time in % of one core.
    fn json(&self, secs: f64, own_pct: f64) -> (Value, f64) {
        let busy =
            machine_busy_ticks().saturating_sub(self.busy0) as f64 / clock_ticks() / secs * 100.0;
        let v = json!({ "machine_busy_pct_of_one_core": r2(busy), "outside_contenders_pct_of_one_core": r2(busy - own_pct),
                        "loadavg_start": self.load0, "loadavg_end": crate::record::loadavg() });
        (v, busy)
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The binary a bench runs: `explicit` if given, else `name` next to this binary (the same
/// target dir and profile); an error naming the `cargo build --release <build>` that makes it
/// when it is not there.
pub(crate) fn bench_bin(explicit: Option<&Path>, name: &str, build: &str) -> Result<PathBuf> {
    let bin = match explicit {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join(name),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it with cargo build --release {build}",
            bin.display()
        );
    }
    Ok(bin)
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

fn ffmpeg() -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-loglevel", "error", "-nostdin"]);
    c
}

// ---------------------------------------------------------------------------------------------
// nginx-rtmp
// ---------------------------------------------------------------------------------------------

struct Nginx {
    rtmp: u16,
    http: u16,
    proc: Proc,
}

#[derive(Debug, Clone, Default)]
struct StreamStat {
    bytes_in: u64,
    publisher: Option<u64>,
    /// The video size in the stream's metadata (`<meta><video><width>`), if any.
    video_size: Option<(u64, u64)>,
}

fn xml_tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(&xml[start..end])
}

fn xml_blocks<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

impl Nginx {
    /// The bench's nginx: application `live` receives every source and destination.
    fn start(dir: &Path) -> Result<Nginx> {
        Self::start_named(dir, "nginx", "")
    }

    /// A private nginx-rtmp in `dir/name`, single process (`master_process off`: the worker's
    /// CPU is the process's), with `live_extra` added to the `live` application (`push` lines).
    fn start_named(dir: &Path, name: &str, live_extra: &str) -> Result<Nginx> {
        Self::start_with(dir, name, live_extra, 1024)
    }

    /// [`start_named`](Self::start_named) with room for `connections` connections.
    fn start_with(dir: &Path, name: &str, live_extra: &str, connections: usize) -> Result<Nginx> {
        Self::start_conf(dir, name, live_extra, connections, "")
    }

    /// The bench's nginx with a second application, `hooked`, whose `on_publish` and
    /// `on_publish_done` go to `hook_url` (relaycast's nginx-rtmp hook, as a user wires an
    /// origin): publish there with [`hooked_url`](Self::hooked_url).
    fn start_with_hooks(dir: &Path, name: &str, hook_url: &str) -> Result<Nginx> {
        // nginx ends a directive at `;` and a value at a space: a URL with either would be
        // cut short, silently.
        if hook_url.contains([';', ' ', '\n']) {
            bail!("hook URL {hook_url:?} cannot go in nginx.conf unquoted");
        }
        let hooked = format!(
            "  application hooked {{ live on;\n    on_publish {hook_url};\n    on_publish_done {hook_url};\n  }}\n"
        );
        Self::start_conf(dir, name, "", 1024, &hooked)
    }

    /// A private nginx-rtmp: the `live` application with `live_extra`, then `apps` (more
    /// `application` blocks).
    fn start_conf(
        dir: &Path,
        name: &str,
        live_extra: &str,
        connections: usize,
        apps: &str,
    ) -> Result<Nginx> {
        let (rtmp, http) = (free_port()?, free_port()?);
        let p = dir.join(name);
        std::fs::create_dir_all(&p)?;
        let pd = p.display();
        let conf = format!(
            "load_module {RTMP_MODULE};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n\
             error_log {pd}/error.log warn;\npid {pd}/nginx.pid;\nevents {{ worker_connections {connections}; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{rtmp}; chunk_size 4096;\n  application live {{ live on;\n{live_extra}  }}\n{apps}}} }}\n\
             http {{ access_log off; client_body_temp_path {pd}/body; proxy_temp_path {pd}/proxy;\n\
             fastcgi_temp_path {pd}/fcgi; uwsgi_temp_path {pd}/uwsgi; scgi_temp_path {pd}/scgi;\n\
             server {{ listen 127.0.0.1:{http}; location /stat {{ rtmp_stat all; }} }} }}\n"
        );
        let conf_path = p.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let proc = Proc::spawn(
            name,
            Command::new("nginx")
                .arg("-p")
                .arg(&p)
                .arg("-e")
                .arg(p.join("error.log"))
                .arg("-c")
                .arg(&conf_path),
            &p.join("stderr.log"),
        )?;
        let n = Nginx { rtmp, http, proc };
        if !(wait_port(rtmp, Duration::from_secs(5)) && wait_port(http, Duration::from_secs(5))) {
            bail!(
                "nginx did not start: {}",
                std::fs::read_to_string(p.join("error.log")).unwrap_or_default()
            );
        }
        Ok(n)
    }

    fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.rtmp)
    }

    /// `rtmp://127.0.0.1:PORT/hooked/NAME` (see [`start_with_hooks`](Self::start_with_hooks)).
    fn hooked_url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/hooked/{name}", self.rtmp)
    }

    fn stat(&self) -> HashMap<String, StreamStat> {
        let body = http_request(&format!("127.0.0.1:{}", self.http), "GET", "/stat", None)
            .map(|(_, b)| b)
            .unwrap_or_default();
        let num = |s: Option<&str>| s.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
        xml_blocks(&body, "stream")
            .into_iter()
            .map(|s| {
                let head = s.split("<client>").next().unwrap_or(s);
                let publisher = xml_blocks(s, "client")
                    .into_iter()
                    .find(|c| c.contains("<publishing/>"))
                    .map(|c| num(xml_tag(c, "id")));
                let video_size = xml_tag(s, "meta")
                    .and_then(|m| xml_tag(m, "video"))
                    .map(|v| (num(xml_tag(v, "width")), num(xml_tag(v, "height"))));
                (
                    xml_tag(head, "name").unwrap_or("").to_string(),
                    StreamStat {
                        bytes_in: num(xml_tag(head, "bytes_in")),
                        publisher,
                        video_size,
                    },
                )
            })
            .collect()
    }

    /// Waits until every stream named has a publisher and more than `min_bytes` received.
    fn wait_publishing(
        &self,
        names: &[String],
        min_bytes: u64,
        within: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let stat = self.stat();
            let missing: Vec<&String> = names
                .iter()
                .filter(|n| {
                    !stat
                        .get(*n)
                        .is_some_and(|s| s.publisher.is_some() && s.bytes_in > min_bytes)
                })
                .collect();
            if missing.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                bail!("not publishing after {within:?}: {missing:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP and the control API (plain HTTP/1.0 on loopback: one request per connection)
// ---------------------------------------------------------------------------------------------

fn http_request(
    host: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A `relaycast up` child with one declared account, private targets allowed.
struct Relaycast {
    addr: String,
    log: PathBuf,
    proc: Proc,
    seq: AtomicU64,
}

impl Relaycast {
    fn start(
        bin: &Path,
        dir: &Path,
        name: &str,
        stall_timeout_ms: Option<u64>,
    ) -> Result<Relaycast> {
        let d = dir.join(name);
        std::fs::create_dir_all(&d)?;
        let config = d.join("relaycast.toml");
        std::fs::write(
            &config,
            format!("allow_private_targets = true\n\n[[accounts]]\nname = \"{ACCOUNT}\"\nkey = \"{KEY}\"\ncall_limit = 100000\n"),
        )?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(bin);
        cmd.arg("up")
            .arg("--config")
            .arg(&config)
            .env("RELAYCAST_HTTP_ADDR", &addr)
            .env("RELAYCAST_DATA_DIR", d.join("data"))
            .env("RELAYCAST_LOG_FILTER", "warn")
            .env("RELAYCAST_LOG_FORMAT", "text");
        if let Some(ms) = stall_timeout_ms {
            cmd.env("RELAYCAST_TIMING__SOURCE_STALL_TIMEOUT_MS", ms.to_string());
        }
        let proc = Proc::spawn("relaycast up", &mut cmd, &d.join("relaycast.log"))?;
        let mut rc = Relaycast {
            addr,
            log: d.join("relaycast.log"),
            proc,
            seq: AtomicU64::new(0),
        };
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if !rc.proc.running() {
                bail!(
                    "relaycast exited early; see {}",
                    d.join("relaycast.log").display()
                );
            }
            if matches!(
                http_request(&rc.addr, "GET", "/healthz", None),
                Ok((200, _))
            ) {
                return Ok(rc);
            }
            if Instant::now() > until {
                bail!("relaycast not healthy in 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn forward(&self, body: &Value) -> Result<Value> {
        let r = format!(
            "rb{}x{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let k = hex::encode(Md5::digest(format!("{r}{KEY}").as_bytes()));
        let path = format!("/api/cdn/v2/forwardRequest.action?n={ACCOUNT}&r={r}&k={k}");
        let (status, text) =
            http_request(&self.addr, "POST", &path, Some(&serde_json::to_vec(body)?))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status != 200 || v["http_code"] != "200" {
            bail!("forwardRequest answered {status}: {v}");
        }
        Ok(v)
    }

    /// `cmd=1`: a live task pulling `sources` (primary first) and pushing to `forwards`.
    fn create(&self, id: &str, sources: &[String], forwards: &[String]) -> Result<()> {
        self.create_with(id, sources, forwards, None)
    }

    /// `cmd=1` with `fops` (a transcode) if given.
    fn create_with(
        &self,
        id: &str,
        sources: &[String],
        forwards: &[String],
        fops: Option<&Value>,
    ) -> Result<()> {
        let mut item = json!({
            "id": id,
            "src": sources.iter().map(|u| json!({ "url": u })).collect::<Vec<_>>(),
            "forward": forwards.iter().map(|u| json!({ "url": u })).collect::<Vec<_>>(),
        });
        if let Some(f) = fops {
            item["fops"] = f.clone();
        }
        self.forward(&json!({ "cmd": "1", "type": "live", "list": [item] }))
            .map(|_| ())
    }

    /// SIGTERM (relaycast drains: stops its ingest ffmpeg and reaps it), then the tree is
    /// killed if anything is left after `within`.
    fn shutdown(mut self, within: Duration) {
        if self.proc.running() {
            // SAFETY: kill(2) only sends a signal.
            unsafe {
                libc::kill(self.proc.pid() as i32, libc::SIGTERM);
            }
            let until = Instant::now() + within;
            while self.proc.running() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.proc.kill();
    }

    /// `cmd=2` on the whole task.
    fn stop(&self, id: &str) -> Result<()> {
        self.forward(&json!({ "cmd": "2", "type": "live", "list": [{ "id": id }] }))
            .map(|_| ())
    }
}

// ---------------------------------------------------------------------------------------------
// A player that notes when each video tag arrives
// ---------------------------------------------------------------------------------------------

/// One received video tag.
#[derive(Debug, Clone, Copy)]
struct VTag {
    at: Instant,
    key: bool,
    hash: u64,
}

/// An in-process RTMP player (rml_rtmp) on one stream; reconnects if the server closes.
struct Player {
    tags: Arc<Mutex<Vec<VTag>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Player {
    fn start(port: u16, stream: &str) -> Player {
        let tags = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s, name) = (tags.clone(), stop.clone(), stream.to_string());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let _ = play_once(port, &name, &t, &s);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Player {
            tags,
            stop,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<VTag> {
        self.tags.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// The first keyframe received at or after `since`.
    fn first_key_after(&self, since: Instant) -> Option<Instant> {
        self.snapshot()
            .iter()
            .find(|t| t.key && t.at >= since)
            .map(|t| t.at)
    }

    fn finish(mut self) -> Vec<VTag> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.snapshot()
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn play_once(port: u16, stream: &str, tags: &Mutex<Vec<VTag>>, stop: &AtomicBool) -> Result<()> {
    let mut c = RtmpClient::connect(port, stop)?;
    c.drive(stop, None, |session, event| match event {
        ClientSessionEvent::ConnectionRequestAccepted => Ok(Step::Send(
            session
                .request_playback(stream.to_string())
                .map_err(|e| anyhow!("{e:?}"))?,
        )),
        ClientSessionEvent::VideoDataReceived { data, .. } => {
            let at = Instant::now();
            if let (Some((key, hash)), Ok(mut t)) = (video_frame_hash(&data), tags.lock()) {
                t.push(VTag { at, key, hash });
            }
            Ok(Step::Continue)
        }
        _ => Ok(Step::Continue),
    })
}

/// For an FLV video tag body carrying H.264 NAL units (AVC packet type 1, not a sequence
/// header): whether it is a keyframe, and a hash of its payload (after the 5-byte header), by
/// which the same frame is found at a source and at a destination.
fn video_frame_hash(data: &[u8]) -> Option<(bool, u64)> {
    if data.len() <= 5 || data[1] != 1 {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data[5..].hash(&mut h);
    // Frame type in the high nibble: 1 = key.
    Some((data[0] >> 4 == 1, h.finish()))
}

/// What a [`RtmpClient::drive`] callback asks for after an event.
enum Step {
    /// Nothing to send; go on.
    Continue,
    /// Send this (a request the event called for) and go on.
    Send(ClientSessionResult),
    /// Stop driving: the session is where the caller wants it.
    Done,
}

/// A client connection to the bench's nginx-rtmp (127.0.0.1, application `live`) with an
/// `rml_rtmp` session, shared by the players and the density publisher.
struct RtmpClient {
    socket: TcpStream,
    session: ClientSession,
    /// Session results not yet acted on.
    results: Vec<ClientSessionResult>,
    /// Bytes read but not yet handed to the session.
    pending: Vec<u8>,
}

/// One read with the socket's 100 ms timeout: `None` when nothing came.
fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> Result<Option<usize>> {
    match s.read(buf) {
        Ok(0) => bail!("closed"),
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

impl RtmpClient {
    /// Connects, does the handshake and asks to connect to `live` (the request is sent by the
    /// first [`drive`](Self::drive)).
    fn connect(port: u16, stop: &AtomicBool) -> Result<RtmpClient> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut hs = Handshake::new(PeerType::Client);
        s.write_all(
            &hs.generate_outbound_p0_and_p1()
                .map_err(|e| anyhow!("{e:?}"))?,
        )?;
        let mut buf = vec![0u8; 65536];
        let leftover = loop {
            if stop.load(Ordering::Relaxed) {
                bail!("stopped");
            }
            let Some(n) = read_some(&mut s, &mut buf)? else {
                continue;
            };
            match hs.process_bytes(&buf[..n]).map_err(|e| anyhow!("{e:?}"))? {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    s.write_all(&response_bytes)?
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    s.write_all(&response_bytes)?;
                    break remaining_bytes;
                }
            }
        };
        let mut config = ClientSessionConfig::new();
        config.tc_url = Some(format!("rtmp://127.0.0.1:{port}/live"));
        let (mut session, mut results) =
            ClientSession::new(config).map_err(|e| anyhow!("{e:?}"))?;
        results.push(
            session
                .request_connection("live".into())
                .map_err(|e| anyhow!("{e:?}"))?,
        );
        Ok(RtmpClient {
            socket: s,
            session,
            results,
            pending: leftover,
        })
    }

    /// Runs the session: writes what it produces, feeds it what the socket reads and hands
    /// every event to `on_event`, until `on_event` answers [`Step::Done`] (Ok), `stop` is set
    /// (Ok), `deadline` passes or the connection fails (errors).
    fn drive(
        &mut self,
        stop: &AtomicBool,
        deadline: Option<Instant>,
        mut on_event: impl FnMut(&mut ClientSession, ClientSessionEvent) -> Result<Step>,
    ) -> Result<()> {
        let mut buf = vec![0u8; 65536];
        loop {
            let mut out = Vec::new();
            let mut done = false;
            for r in std::mem::take(&mut self.results) {
                let r = match r {
                    ClientSessionResult::RaisedEvent(event) => {
                        match on_event(&mut self.session, event)? {
                            Step::Continue => continue,
                            Step::Send(r) => r,
                            Step::Done => {
                                done = true;
                                continue;
                            }
                        }
                    }
                    r => r,
                };
                if let ClientSessionResult::OutboundResponse(p) = r {
                    out.extend_from_slice(&p.bytes);
                }
            }
            if !out.is_empty() {
                self.socket.write_all(&out)?;
            }
            if done || stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if !self.pending.is_empty() {
                self.results = self
                    .session
                    .handle_input(&self.pending)
                    .map_err(|e| anyhow!("{e:?}"))?;
                self.pending.clear();
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                bail!("the RTMP session did not get there in time");
            }
            if let Some(n) = read_some(&mut self.socket, &mut buf)? {
                self.pending.extend_from_slice(&buf[..n]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Source, contenders
// ---------------------------------------------------------------------------------------------

/// A pre-encoded source: 20 s of testsrc2 with a 440 Hz tone, libx264 CBR-like, GOP 2 s, AAC,
/// as FLV; encoded once per run, before any measurement, so no encoder runs during one.
struct SourceSpec {
    /// File name in the run's temp dir.
    file: &'static str,
    /// `WIDTHxHEIGHT`.
    size: &'static str,
    /// Video bitrate in kbit/s (also the maxrate; the buffer is twice it).
    video_kbps: u32,
    /// AAC bitrate in kbit/s.
    audio_kbps: u32,
}

/// The cpu, transcode, first-frame, failover and delay phases: 720p25 at 2.5 Mbit/s.
const SOURCE_720P: SourceSpec = SourceSpec {
    file: "source.flv",
    size: "1280x720",
    video_kbps: 2500,
    audio_kbps: 128,
};
/// The density phase: 360p25 at 500 kbit/s in all (436 video + 64 AAC).
const SOURCE_360P: SourceSpec = SourceSpec {
    file: "source-360p.flv",
    size: "640x360",
    video_kbps: 436,
    audio_kbps: 64,
};

fn encode_source(dir: &Path, spec: &SourceSpec) -> Result<PathBuf> {
    let path = dir.join(spec.file);
    eprintln!(
        "# encoding the 20 s {} source file (once, before any measurement)",
        spec.size
    );
    let (v, a) = (
        format!("{}k", spec.video_kbps),
        format!("{}k", spec.audio_kbps),
    );
    let ok = ffmpeg()
        .args([
            "-y",
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={}:rate=25", spec.size),
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "20",
        ])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args([
            "-b:v",
            &v,
            "-maxrate",
            &v,
            "-bufsize",
            &format!("{}k", 2 * spec.video_kbps),
        ])
        .args(["-g", "50", "-keyint_min", "50", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", &a, "-f", "flv"])
        .arg(&path)
        .status()?
        .success();
    if !ok {
        bail!("encoding the {} source file failed", spec.size);
    }
    Ok(path)
}

fn publisher(file: &Path, url: &str, log: &Path) -> Result<Proc> {
    Proc::spawn(
        "publisher",
        ffmpeg()
            .args(["-re", "-stream_loop", "-1", "-i"])
            .arg(file)
            .args(["-c", "copy", "-f", "flv", url]),
        log,
    )
}

fn copy_relay(src: &str, dest: &str, log: &Path) -> Result<Proc> {
    Proc::spawn(
        "ffmpeg -c copy",
        ffmpeg().args(["-i", src, "-map", "0", "-c", "copy", "-f", "flv", dest]),
        log,
    )
}

fn tee_relay(src: &str, dests: &[String], log: &Path) -> Result<Proc> {
    let spec = dests
        .iter()
        .map(|d| format!("[f=flv:onfail=ignore]{d}"))
        .collect::<Vec<_>>()
        .join("|");
    Proc::spawn(
        "ffmpeg tee",
        ffmpeg().args(["-i", src, "-map", "0", "-c", "copy", "-f", "tee", &spec]),
        log,
    )
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

struct Ctx {
    dir: tempfile::TempDir,
    nginx: Nginx,
    /// The 720p source, encoded when a phase first needs it.
    file: OnceCell<PathBuf>,
    /// The 360p source of the density phase, likewise.
    file_360p: OnceCell<PathBuf>,
    bin: PathBuf,
    opts: RelayOptions,
}

impl Ctx {
    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The 720p source file (encoded on first use: the idle and density phases need none).
    fn file(&self) -> Result<PathBuf> {
        Self::encoded(&self.file, self.dir.path(), &SOURCE_720P)
    }

    /// The 360p 500 kbit/s source file of the density phase.
    fn file_360p(&self) -> Result<PathBuf> {
        Self::encoded(&self.file_360p, self.dir.path(), &SOURCE_360P)
    }

    fn encoded(cell: &OnceCell<PathBuf>, dir: &Path, spec: &SourceSpec) -> Result<PathBuf> {
        if let Some(p) = cell.get() {
            return Ok(p.clone());
        }
        let p = encode_source(dir, spec)?;
        Ok(cell.get_or_init(|| p).clone())
    }
}

/// Runs the phases asked for and prints JSON lines and tables.
pub fn bench_relay(opts: RelayOptions) -> Result<()> {
    if let Some(missing) = [RTMP_MODULE].iter().find(|p| !Path::new(p).exists()) {
        bail!("{missing} not found (install libnginx-mod-rtmp)");
    }
    let bin = bench_bin(opts.relaycast_bin.as_deref(), "relaycast", "-p relaycast")?;
    let dir = crate::temp_dir(opts.dir.as_deref())?;
    let nginx = Nginx::start(dir.path())?;
    let ctx = Ctx {
        dir,
        nginx,
        file: OnceCell::new(),
        file_360p: OnceCell::new(),
        bin,
        opts: opts.clone(),
    };
    let machine = json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, m)| m.trim().to_string())),
        "loadavg": crate::record::loadavg(),
        "ffmpeg": first_line("ffmpeg", &["-version"]),
        "nginx": first_line("nginx", &["-v"]),
        "relaycast_bin": ctx.bin.display().to_string(),
    });
    emit(&json!({ "bench": "relay", "figure": "machine", "machine": machine }));
    // The source files are encoded before the first phase, so that no encoder runs in a window.
    if opts.phases.iter().any(|p| p != "density" && p != "idle") {
        ctx.file()?;
    }
    if opts.phases.iter().any(|p| p == "density") {
        ctx.file_360p()?;
    }
    for phase in &opts.phases {
        emit(
            &json!({ "bench": "relay", "figure": "phase start", "phase": phase, "utc": crate::record::utc_now().1,
                      "loadavg": crate::record::loadavg() }),
        );
        match phase.as_str() {
            "cpu" => phase_cpu(&ctx)?,
            "first-frame" => phase_first_frame(&ctx)?,
            "failover" => phase_failover(&ctx)?,
            "delay" => phase_delay(&ctx)?,
            "transcode" => phase_transcode(&ctx)?,
            "density" => density::phase_density(&ctx)?,
            "idle" => phase_idle(&ctx)?,
            other => bail!("unknown phase {other} (cpu, transcode, first-frame, failover, delay, density, idle)"),
        }
        emit(
            &json!({ "bench": "relay", "figure": "phase end", "phase": phase, "utc": crate::record::utc_now().1,
                      "loadavg": crate::record::loadavg() }),
        );
    }
    Ok(())
}

/// The first line a tool prints on stdout or stderr (`nginx -v` writes to stderr).
fn first_line(tool: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

// ---------------------------------------------------------------------------------------------
// idle: a `relaycast up` with no task
// ---------------------------------------------------------------------------------------------

fn phase_idle(ctx: &Ctx) -> Result<()> {
    measure_idle(ctx, ctx.opts.idle_window)
}

/// CPU and memory of a `relaycast up` with no task, over `window_s` seconds after the warm-up:
/// from its CPU clock and from `/proc` ticks (the raw tick count too: at 100 Hz one tick over
/// 30 s is 0.033 % of a core, so a figure near 0.05 % is a handful of ticks).
fn measure_idle(ctx: &Ctx, window_s: u64) -> Result<()> {
    let idle = Relaycast::start(
        &ctx.bin,
        ctx.dir.path(),
        "rc_idle",
        ctx.opts.stall_timeout_ms,
    )?;
    std::thread::sleep(Duration::from_secs(ctx.opts.warmup));
    let pid = [idle.proc.pid()];
    let (t0, c0, k0) = (Instant::now(), cpu_s(&pid).0, ticks(&pid).0);
    let mut m = MemSamples::default();
    while t0.elapsed() < Duration::from_secs(window_s) {
        std::thread::sleep(Duration::from_secs(1));
        m.push(mem(&pid));
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_s(&pid).0 - c0) / secs * 100.0;
    let k = ticks(&pid).0.saturating_sub(k0);
    let cpu_ticks = k as f64 / clock_ticks() / secs * 100.0;
    let m = m.median();
    emit(
        &json!({ "bench": "relay", "figure": "relaycast idle (no task)", "window_s": r2(secs), "cpu_pct_of_one_core": r3(cpu),
                  "cpu_pct_ticks": r3(cpu_ticks), "ticks": k, "clock_ticks_per_s": clock_ticks(),
                  "rss_mb_median": r2(m.rss), "pss_mb_median": r2(m.pss), "uss_mb_median": r2(m.uss) }),
    );
    println!("# relaycast idle (no task), {secs:.0} s: {cpu:.3} % of a core ({k} ticks = {cpu_ticks:.3} %), PSS {:.1} MB", m.pss);
    idle.shutdown(Duration::from_secs(6));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// cpu: CPU and RSS, side by side
// ---------------------------------------------------------------------------------------------

fn phase_cpu(ctx: &Ctx) -> Result<()> {
    let phase_name = "cpu";
    let nginx = &ctx.nginx;
    let _pub = publisher(&ctx.file()?, &nginx.url("src"), &ctx.log("publisher-src"))?;
    nginx.wait_publishing(&["src".to_string()], 100_000, Duration::from_secs(15))?;
    // The fixed cost: an idle `relaycast up` (no task) over the same window.
    measure_idle(ctx, ctx.opts.window)?;
    let mut results: HashMap<(&'static str, usize), Vec<Sample>> = HashMap::new();
    for round in 1..=ctx.opts.rounds {
        for &n in &ctx.opts.destinations {
            let names = |p: &str| {
                (0..n)
                    .map(|i| format!("{p}_{n}_{round}_{i}"))
                    .collect::<Vec<_>>()
            };
            let (rc_names, sep_names, tee_names, np_names) =
                (names("rc"), names("sep"), names("tee"), names("np"));
            let urls = |v: &[String]| v.iter().map(|s| nginx.url(s)).collect::<Vec<_>>();

            // nginx-rtmp `push`: a private nginx whose source application pushes every stream
            // published into it to the N destinations, and beside it the same nginx without
            // the push lines. One `-c copy` tee feeds both the same publish; the push figure is
            // the difference of the two, measured in the same window.
            let push_lines: String = np_names
                .iter()
                .map(|d| format!("    push {};\n", nginx.url(d)))
                .collect();
            let ngx_push = Nginx::start_named(
                ctx.dir.path(),
                &format!("nginx_push_{n}_{round}"),
                &push_lines,
            )?;
            let ngx_base =
                Nginx::start_named(ctx.dir.path(), &format!("nginx_nopush_{n}_{round}"), "")?;
            let feeder = Proc::spawn(
                "feeder (tee to the push and no-push nginx)",
                ffmpeg().args([
                    "-i",
                    &nginx.url("src"),
                    "-map",
                    "0",
                    "-c",
                    "copy",
                    "-f",
                    "tee",
                    &format!(
                        "[f=flv]{}|[f=flv]{}",
                        ngx_push.url("src"),
                        ngx_base.url("src")
                    ),
                ]),
                &ctx.log(&format!("feeder_{n}_{round}")),
            )?;

            let rc = Relaycast::start(
                &ctx.bin,
                ctx.dir.path(),
                &format!("rc_{n}_{round}"),
                ctx.opts.stall_timeout_ms,
            )?;
            rc.create(
                &format!("cpu{n}r{round}"),
                &[nginx.url("src")],
                &urls(&rc_names),
            )?;
            let seps: Vec<Proc> = urls(&sep_names)
                .iter()
                .map(|d| copy_relay(&nginx.url("src"), d, &ctx.log(&format!("sep_{n}_{round}"))))
                .collect::<Result<_>>()?;
            let tee = tee_relay(
                &nginx.url("src"),
                &urls(&tee_names),
                &ctx.log(&format!("tee_{n}_{round}")),
            )?;
            let all: Vec<String> = [
                rc_names.clone(),
                sep_names.clone(),
                tee_names.clone(),
                np_names.clone(),
            ]
            .concat();
            nginx.wait_publishing(&all, 50_000, Duration::from_secs(30))?;
            let src = ["src".to_string()];
            ngx_push.wait_publishing(&src, 50_000, Duration::from_secs(10))?;
            ngx_base.wait_publishing(&src, 50_000, Duration::from_secs(10))?;
            std::thread::sleep(Duration::from_secs(ctx.opts.warmup));

            // (name, process roots, which nginx's stat shows what it delivers, stream names)
            let contenders: Vec<(&'static str, Vec<u32>, &Nginx, Vec<String>)> = vec![
                (RC, vec![rc.proc.pid()], nginx, rc_names.clone()),
                (
                    SEP,
                    seps.iter().map(Proc::pid).collect(),
                    nginx,
                    sep_names.clone(),
                ),
                (TEE, vec![tee.pid()], nginx, tee_names.clone()),
                (
                    PUSH_GROSS,
                    vec![ngx_push.proc.pid()],
                    nginx,
                    np_names.clone(),
                ),
                // What the no-push nginx "delivers" is what it receives: the feed.
                (NOPUSH, vec![ngx_base.proc.pid()], &ngx_base, src.to_vec()),
            ];
            let stats0: Vec<HashMap<String, StreamStat>> =
                contenders.iter().map(|c| c.2.stat()).collect();
            let push_feed0 = ngx_push.stat();
            let trees: Vec<&[u32]> = contenders.iter().map(|c| c.1.as_slice()).collect();
            let w = measure_window(
                ctx,
                &trees,
                rc.proc.pid(),
                json!({ "phase": phase_name, "destinations": n, "round": round }),
            );
            let stats1: Vec<HashMap<String, StreamStat>> =
                contenders.iter().map(|c| c.2.stat()).collect();
            let push_feed1 = ngx_push.stat();
            let (secs, own_mem) = (w.secs, w.own_mem);
            emit(
                &json!({ "bench": "relay", "figure": "relaycast process alone (without its ingest ffmpeg)", "destinations": n, "round": round,
                          "cpu_pct_of_one_core": r2(w.own_cpu_pct),
                          "rss_mb_median": r2(own_mem.rss), "pss_mb_median": r2(own_mem.pss), "uss_mb_median": r2(own_mem.uss) }),
            );
            let mut window: HashMap<&str, Sample> = HashMap::new();
            for (i, (name, _, _, dests)) in contenders.iter().enumerate() {
                let (cpu, cpu_ticks, m) = (w.cpu_pct[i], w.cpu_ticks_pct[i], w.mem[i]);
                let min_kbps = min_kbps(&stats0[i], &stats1[i], dests, secs);
                emit(
                    &json!({ "bench": "relay", "figure": "cpu+rss", "contender": name, "destinations": n, "round": round,
                              "window_s": r2(secs), "cpu_pct_of_one_core": r2(cpu), "cpu_pct_ticks": r2(cpu_ticks), "rss_mb_median": r2(m.rss), "pss_mb_median": r2(m.pss), "uss_mb_median": r2(m.uss),
                              "processes": w.processes[i], "min_kbps_per_destination": min_kbps.round() }),
                );
                if min_kbps < 1500.0 {
                    eprintln!(
                        "# WARNING: {name} delivered only {min_kbps:.0} kbit/s to one destination"
                    );
                }
                window.insert(name, Sample { cpu, mem: m });
            }
            // The push nginx received the same feed as the no-push one.
            let feed_push = min_kbps(&push_feed0, &push_feed1, &src, secs);
            let feed_base = min_kbps(&stats0[4], &stats1[4], &src, secs);
            emit(
                &json!({ "bench": "relay", "figure": "nginx push feed", "destinations": n, "round": round,
                          "push_nginx_received_kbps": feed_push.round(), "nopush_nginx_received_kbps": feed_base.round() }),
            );
            if (feed_push - feed_base).abs() > 0.05 * feed_base {
                eprintln!("# WARNING: the push and no-push nginx received {feed_push:.0} and {feed_base:.0} kbit/s");
            }
            let (g, b) = (window[PUSH_GROSS], window[NOPUSH]);
            let net = Sample {
                cpu: g.cpu - b.cpu,
                mem: Mem {
                    rss: g.mem.rss - b.mem.rss,
                    pss: g.mem.pss - b.mem.pss,
                    uss: g.mem.uss - b.mem.uss,
                },
            };
            emit(
                &json!({ "bench": "relay", "figure": "cpu+rss", "contender": PUSH, "destinations": n, "round": round,
                          "window_s": r2(secs), "cpu_pct_of_one_core": r2(net.cpu), "rss_mb_median": r2(net.mem.rss),
                          "pss_mb_median": r2(net.mem.pss), "uss_mb_median": r2(net.mem.uss), "net_of": NOPUSH,
                          "min_kbps_per_destination": min_kbps(&stats0[3], &stats1[3], &np_names, secs).round() }),
            );
            window.insert(PUSH, net);
            for name in [RC, SEP, TEE, PUSH, PUSH_GROSS, NOPUSH] {
                results.entry((name, n)).or_default().push(window[name]);
            }
            drop(feeder);
            drop(tee);
            drop(seps);
            rc.shutdown(Duration::from_secs(6));
            drop(ngx_push);
            drop(ngx_base);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    println!(
        "# relay cpu+memory: medians over {} round(s), {} s windows, CPU in % of one core, memory: PSS (RSS)",
        ctx.opts.rounds, ctx.opts.window
    );
    println!(
        "# {:>5} | {:>22} | {:>22} | {:>22} | {:>22} | {:>14} | {:>14} | {:>14}",
        "dests",
        "relaycast",
        "ffmpeg x N",
        "ffmpeg tee",
        "nginx push (net)",
        "rc/tee",
        "rc/(xN)",
        "rc/push"
    );
    for &n in &ctx.opts.destinations {
        let get = |name: &str| results.get(&(name, n)).cloned().unwrap_or_default();
        let (rc, sep, tee, push) = (get(RC), get(SEP), get(TEE), get(PUSH));
        let cpu = |a: &Sample| a.cpu;
        let pss = |a: &Sample| a.mem.pss;
        let rss = |a: &Sample| a.mem.rss;
        let mut line = json!({ "bench": "relay", "figure": "cpu+rss summary", "destinations": n, "rounds": rc.len() });
        for (key, v) in [
            ("relaycast", &rc),
            ("ffmpeg_per_destination", &sep),
            ("ffmpeg_tee", &tee),
            ("nginx_push_net", &push),
            ("nginx_push_gross", &get(PUSH_GROSS)),
            ("nginx_nopush", &get(NOPUSH)),
        ] {
            line[format!("{key}_cpu_pct")] = json!(r2(med(v, cpu)));
            line[format!("{key}_rss_mb")] = json!(r2(med(v, rss)));
            line[format!("{key}_pss_mb")] = json!(r2(med(v, pss)));
            line[format!("{key}_uss_mb")] = json!(r2(med(v, |s| s.mem.uss)));
            line[format!("{key}_cpu_pct_per_round")] =
                json!(v.iter().map(|s| r2(s.cpu)).collect::<Vec<_>>());
        }
        for (key, other) in [("tee", &tee), ("separate", &sep), ("nginx_push", &push)] {
            let c = Spread::of(ratios(&rc, other, cpu));
            let p = Spread::of(ratios(&rc, other, pss));
            let r = Spread::of(ratios(&rc, other, rss));
            line[format!("cpu_ratio_relaycast_over_{key}")] = c.json();
            line[format!("pss_ratio_relaycast_over_{key}")] = p.json();
            line[format!("rss_ratio_relaycast_over_{key}")] = r.json();
        }
        emit(&line);
        let cell = |v: &[Sample]| {
            format!(
                "{:>6.2}% {:>5.1} ({:>5.1}) MB",
                med(v, cpu),
                med(v, pss),
                med(v, rss)
            )
        };
        let rat = |other: &[Sample]| Spread::of(ratios(&rc, other, cpu)).short();
        println!(
            "# {n:>5} | {} | {} | {} | {} | {:>14} | {:>14} | {:>14}",
            cell(&rc),
            cell(&sep),
            cell(&tee),
            cell(&push),
            rat(&tee),
            rat(&sep),
            rat(&push)
        );
    }
    Ok(())
}

const RC: &str = "relaycast";
const SEP: &str = "ffmpeg x N";
const TEE: &str = "ffmpeg tee";
const PUSH: &str = "nginx push";
const PUSH_GROSS: &str = "nginx push (gross: receives the feed and pushes)";
const NOPUSH: &str = "nginx no-push (receives the feed only)";

/// One contender in one window: CPU in % of one core, memory medians.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    cpu: f64,
    mem: Mem,
}

fn med(v: &[Sample], f: fn(&Sample) -> f64) -> f64 {
    let mut x: Vec<f64> = v.iter().map(f).collect();
    median(&mut x)
}

/// Per-round ratios a/b (same window each).
fn ratios(a: &[Sample], b: &[Sample], f: fn(&Sample) -> f64) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| f(x) / f(y)).collect()
}

/// The median of per-round values and their range (the run-to-run noise).
struct Spread {
    per_round: Vec<f64>,
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(per_round: Vec<f64>) -> Spread {
        let mut v = per_round.clone();
        let median = median(&mut v);
        let min = per_round.iter().copied().fold(f64::INFINITY, f64::min);
        let max = per_round.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Spread {
            per_round,
            median,
            min,
            max,
        }
    }

    fn json(&self) -> Value {
        json!({ "median": r2(self.median), "min": r2(self.min), "max": r2(self.max),
                "per_round": self.per_round.iter().map(|x| r2(*x)).collect::<Vec<_>>() })
    }

    fn short(&self) -> String {
        format!("{:.2} ({:.2}-{:.2})", self.median, self.min, self.max)
    }
}

/// What one measuring window saw: per contender (a process tree) its CPU from the processes'
/// own CPU clocks and from ticks, its process count and its median memory (sampled every
/// second), and relaycast's own process apart from its children.
struct Window {
    secs: f64,
    cpu_pct: Vec<f64>,
    cpu_ticks_pct: Vec<f64>,
    processes: Vec<usize>,
    mem: Vec<Mem>,
    own_cpu_pct: f64,
    own_mem: Mem,
    /// The whole machine's busy time (every CPU, every process), in % of one core.
    machine_busy_pct: f64,
}

/// Measures `trees` for one window of `ctx.opts.window` seconds and emits the window's load line
/// (the machine's busy time outside the contenders, the load average at both ends), labelled
/// with the fields of `labels` (phase, destinations, round...).
fn measure_window(ctx: &Ctx, trees: &[&[u32]], relaycast_pid: u32, labels: Value) -> Window {
    measure_window_for("relay", ctx.opts.window, trees, relaycast_pid, labels)
}

/// [`measure_window`] for `window_s` seconds, its load line under `bench`.
fn measure_window_for(
    bench: &str,
    window_s: u64,
    trees: &[&[u32]],
    relaycast_pid: u32,
    labels: Value,
) -> Window {
    let hz = clock_ticks();
    let own = |pid: u32| process_cpu_s(pid).unwrap_or(0.0);
    let own0 = own(relaycast_pid);
    let quiet = Quiet::start();
    let before: Vec<(f64, usize)> = trees.iter().map(|t| cpu_s(t)).collect();
    let before_ticks: Vec<u64> = trees.iter().map(|t| ticks(t).0).collect();
    let t0 = Instant::now();
    let mut mems: Vec<MemSamples> = vec![MemSamples::default(); trees.len()];
    let mut own_mem = MemSamples::default();
    while t0.elapsed() < Duration::from_secs(window_s) {
        std::thread::sleep(Duration::from_secs(1));
        for (i, t) in trees.iter().enumerate() {
            mems[i].push(mem(t));
        }
        own_mem.push(mem_one(relaycast_pid));
    }
    let after: Vec<(f64, usize)> = trees.iter().map(|t| cpu_s(t)).collect();
    let after_ticks: Vec<u64> = trees.iter().map(|t| ticks(t).0).collect();
    let own1 = own(relaycast_pid);
    let secs = t0.elapsed().as_secs_f64();
    let measured: f64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.0 - b.0)
        .sum::<f64>()
        / secs
        * 100.0;
    let (mut q, machine_busy_pct) = quiet.json(secs, measured);
    q["bench"] = json!(bench);
    q["figure"] = json!("window load");
    if let (Some(obj), Value::Object(more)) = (q.as_object_mut(), labels) {
        obj.extend(more);
    }
    emit(&q);
    Window {
        secs,
        cpu_pct: before
            .iter()
            .zip(&after)
            .map(|(b, a)| (a.0 - b.0) / secs * 100.0)
            .collect(),
        cpu_ticks_pct: before_ticks
            .iter()
            .zip(&after_ticks)
            .map(|(b, a)| a.saturating_sub(*b) as f64 / hz / secs * 100.0)
            .collect(),
        processes: after.iter().map(|a| a.1).collect(),
        mem: mems.iter().map(MemSamples::median).collect(),
        own_cpu_pct: (own1 - own0) / secs * 100.0,
        own_mem: own_mem.median(),
        machine_busy_pct,
    }
}

/// The lowest rate (kbit/s) any of `dests` received between two stat snapshots `secs` apart.
fn min_kbps(
    s0: &HashMap<String, StreamStat>,
    s1: &HashMap<String, StreamStat>,
    dests: &[String],
    secs: f64,
) -> f64 {
    dests
        .iter()
        .map(|d| {
            let b0 = s0.get(d).map(|s| s.bytes_in).unwrap_or(0);
            let b1 = s1.get(d).map(|s| s.bytes_in).unwrap_or(0);
            b1.saturating_sub(b0) as f64 * 8.0 / 1000.0 / secs
        })
        .fold(f64::INFINITY, f64::min)
}

// ---------------------------------------------------------------------------------------------
// transcode: a relaycast transcode task against a plain ffmpeg doing the same transcode
// ---------------------------------------------------------------------------------------------

/// The transcode of the bench, as the API takes it: H.264 640x360 25 fps 800 kbit/s, 1 s GOP.
fn transcode_fops() -> (Value, Fops) {
    let wire = json!({ "vcodec": "libx264", "bps": "800000", "res": "640x360", "fps": "25", "forced_gopInterval": "1000" });
    let fops = Fops {
        vcodec: Some(VideoCodec::Libx264),
        bps: Some(800_000),
        res: Some(Resolution {
            width: 640,
            height: 360,
        }),
        fps: Some(25.0),
        forced_gop_interval_ms: Some(1000),
        ..Fops::default()
    };
    (wire, fops)
}

/// The ffmpeg arguments relaycast's ingest runs for `fops` (the same code builds them), with
/// the output replaced by `dests`: one FLV output, or the `tee` muxer for several.
fn plain_transcode_args(src: &str, fops: &Fops, dests: &[String]) -> Result<Vec<String>> {
    let source = Source::new(SourceUrl::parse(src, TaskType::Live).map_err(|e| anyhow!("{e:?}"))?);
    let mut spec = IngestSpec::live(src);
    transcode::apply(&mut spec, fops, &source, &Watermarks::default())
        .map_err(|e| anyhow!("{e}"))?;
    let mut a = spec.args().map_err(|e| anyhow!("{e}"))?;
    let f = a
        .iter()
        .rposition(|x| x == "-f")
        .context("no -f in the ingest's arguments")?;
    if a.get(f + 1).map(String::as_str) != Some("flv") {
        bail!("the ingest does not write FLV for this transcode: {a:?}");
    }
    a.truncate(f);
    let mut out = vec!["-loglevel".to_string(), "error".to_string()];
    out.extend(a);
    if let [one] = dests {
        out.extend(["-f", "flv", "-flvflags", "no_duration_filesize"].map(String::from));
        out.push(one.clone());
    } else {
        let spec = dests
            .iter()
            .map(|d| format!("[f=flv:flvflags=no_duration_filesize:onfail=ignore]{d}"))
            .collect::<Vec<_>>()
            .join("|");
        out.extend(["-f".to_string(), "tee".to_string(), spec]);
    }
    Ok(out)
}

fn phase_transcode(ctx: &Ctx) -> Result<()> {
    let phase_name = "transcode";
    let nginx = &ctx.nginx;
    let _pub = publisher(
        &ctx.file()?,
        &nginx.url("tcsrc"),
        &ctx.log("publisher-tcsrc"),
    )?;
    nginx.wait_publishing(&["tcsrc".to_string()], 100_000, Duration::from_secs(15))?;
    let (wire, fops) = transcode_fops();
    const RCT: &str = "relaycast transcode";
    const FFT: &str = "ffmpeg transcode";
    let mut results: HashMap<(&'static str, usize), Vec<Sample>> = HashMap::new();
    for round in 1..=ctx.opts.rounds {
        for &n in &ctx.opts.transcode_destinations {
            let names = |p: &str| {
                (0..n)
                    .map(|i| format!("{p}_{n}_{round}_{i}"))
                    .collect::<Vec<_>>()
            };
            let (rc_names, ff_names) = (names("tc_rc"), names("tc_ff"));
            let urls = |v: &[String]| v.iter().map(|s| nginx.url(s)).collect::<Vec<_>>();
            let rc = Relaycast::start(
                &ctx.bin,
                ctx.dir.path(),
                &format!("rc_tc_{n}_{round}"),
                ctx.opts.stall_timeout_ms,
            )?;
            rc.create_with(
                &format!("tc{n}r{round}"),
                &[nginx.url("tcsrc")],
                &urls(&rc_names),
                Some(&wire),
            )?;
            let args = plain_transcode_args(&nginx.url("tcsrc"), &fops, &urls(&ff_names))?;
            if round == 1 && n == ctx.opts.transcode_destinations[0] {
                emit(
                    &json!({ "bench": "relay", "figure": "transcode setup", "fops": wire, "plain_ffmpeg_args": args }),
                );
            }
            let mut cmd = Command::new("ffmpeg");
            cmd.args(&args);
            let plain = Proc::spawn(FFT, &mut cmd, &ctx.log(&format!("tc_ff_{n}_{round}")))?;
            let all = [rc_names.clone(), ff_names.clone()].concat();
            nginx.wait_publishing(&all, 50_000, Duration::from_secs(60))?;
            std::thread::sleep(Duration::from_secs(ctx.opts.warmup));

            let contenders: Vec<(&'static str, Vec<u32>, &Vec<String>)> = vec![
                (RCT, vec![rc.proc.pid()], &rc_names),
                (FFT, vec![plain.pid()], &ff_names),
            ];
            let stat0 = nginx.stat();
            let trees: Vec<&[u32]> = contenders.iter().map(|c| c.1.as_slice()).collect();
            let w = measure_window(
                ctx,
                &trees,
                rc.proc.pid(),
                json!({ "phase": phase_name, "destinations": n, "round": round }),
            );
            let stat1 = nginx.stat();
            let (secs, own_mem) = (w.secs, w.own_mem);
            emit(
                &json!({ "bench": "relay", "figure": "relaycast transcode, process alone (without its ingest ffmpeg)", "destinations": n, "round": round,
                          "cpu_pct_of_one_core": r2(w.own_cpu_pct),
                          "rss_mb_median": r2(own_mem.rss), "pss_mb_median": r2(own_mem.pss), "uss_mb_median": r2(own_mem.uss) }),
            );
            for (i, (name, _, dests)) in contenders.iter().enumerate() {
                let (cpu, cpu_ticks, m) = (w.cpu_pct[i], w.cpu_ticks_pct[i], w.mem[i]);
                let kbps = min_kbps(&stat0, &stat1, dests, secs);
                let sizes: Vec<Option<(u64, u64)>> = dests
                    .iter()
                    .map(|d| stat1.get(d).and_then(|s| s.video_size))
                    .collect();
                let all_360p = sizes.iter().all(|s| *s == Some((640, 360)));
                emit(
                    &json!({ "bench": "relay", "figure": "transcode cpu+rss", "contender": name, "destinations": n, "round": round,
                              "window_s": r2(secs), "cpu_pct_of_one_core": r2(cpu), "cpu_pct_ticks": r2(cpu_ticks), "rss_mb_median": r2(m.rss), "pss_mb_median": r2(m.pss), "uss_mb_median": r2(m.uss),
                              "processes": w.processes[i], "min_kbps_per_destination": kbps.round(), "every_destination_640x360": all_360p }),
                );
                if kbps < 400.0 || !all_360p {
                    eprintln!("# WARNING: {name}: {kbps:.0} kbit/s at the slowest destination, sizes {sizes:?}");
                }
                results
                    .entry((name, n))
                    .or_default()
                    .push(Sample { cpu, mem: m });
            }
            drop(plain);
            rc.shutdown(Duration::from_secs(6));
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    println!(
        "# transcode 720p25 -> 640x360 libx264 800k: medians over {} round(s), {} s windows, CPU in % of one core, PSS (RSS)",
        ctx.opts.rounds, ctx.opts.window
    );
    for &n in &ctx.opts.transcode_destinations {
        let get = |name: &str| results.get(&(name, n)).cloned().unwrap_or_default();
        let (rc, ff) = (get(RCT), get(FFT));
        let cpu = Spread::of(ratios(&rc, &ff, |s| s.cpu));
        let pss = Spread::of(ratios(&rc, &ff, |s| s.mem.pss));
        emit(
            &json!({ "bench": "relay", "figure": "transcode summary", "destinations": n, "rounds": rc.len(),
                      "relaycast_cpu_pct": r2(med(&rc, |s| s.cpu)), "relaycast_pss_mb": r2(med(&rc, |s| s.mem.pss)), "relaycast_rss_mb": r2(med(&rc, |s| s.mem.rss)),
                      "relaycast_uss_mb": r2(med(&rc, |s| s.mem.uss)), "ffmpeg_uss_mb": r2(med(&ff, |s| s.mem.uss)),
                      "ffmpeg_cpu_pct": r2(med(&ff, |s| s.cpu)), "ffmpeg_pss_mb": r2(med(&ff, |s| s.mem.pss)), "ffmpeg_rss_mb": r2(med(&ff, |s| s.mem.rss)),
                      "relaycast_cpu_pct_per_round": rc.iter().map(|s| r2(s.cpu)).collect::<Vec<_>>(),
                      "ffmpeg_cpu_pct_per_round": ff.iter().map(|s| r2(s.cpu)).collect::<Vec<_>>(),
                      "cpu_ratio_relaycast_over_ffmpeg": cpu.json(), "pss_ratio_relaycast_over_ffmpeg": pss.json() }),
        );
        println!(
            "# {n:>5} dest(s) | relaycast {:>6.2}% {:>5.1} ({:>5.1}) MB | ffmpeg {:>6.2}% {:>5.1} ({:>5.1}) MB | cpu ratio {}",
            med(&rc, |s| s.cpu), med(&rc, |s| s.mem.pss), med(&rc, |s| s.mem.rss),
            med(&ff, |s| s.cpu), med(&ff, |s| s.mem.pss), med(&ff, |s| s.mem.rss), cpu.short()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// first-frame: create to first keyframe at the destination
// ---------------------------------------------------------------------------------------------

fn phase_first_frame(ctx: &Ctx) -> Result<()> {
    let nginx = &ctx.nginx;
    let _pub = publisher(
        &ctx.file()?,
        &nginx.url("ffsrc"),
        &ctx.log("publisher-ffsrc"),
    )?;
    nginx.wait_publishing(&["ffsrc".to_string()], 100_000, Duration::from_secs(15))?;
    let rc = Relaycast::start(
        &ctx.bin,
        ctx.dir.path(),
        "rc_first_frame",
        ctx.opts.stall_timeout_ms,
    )?;
    let (mut t_rc, mut t_ff, mut t_src) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=ctx.opts.first_frame_runs {
        let (d_rc, d_ff) = (format!("ff_rc_{run}"), format!("ff_ff_{run}"));
        // Players wait on the destinations before anything publishes there (a viewer who opened
        // the page first); a third player joins the source at the same moment, for reference.
        let p_rc = Player::start(nginx.rtmp, &d_rc);
        let p_ff = Player::start(nginx.rtmp, &d_ff);
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        let p_src = Player::start(nginx.rtmp, "ffsrc");
        let ff = copy_relay(
            &nginx.url("ffsrc"),
            &nginx.url(&d_ff),
            &ctx.log("first-frame-ffmpeg"),
        )?;
        rc.create(
            &format!("ff{run}"),
            &[nginx.url("ffsrc")],
            &[nginx.url(&d_rc)],
        )?;
        let api_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let until = t0 + Duration::from_secs(30);
        let secs = |p: &Player| {
            p.first_key_after(t0)
                .map(|t| t.duration_since(t0).as_secs_f64())
        };
        while Instant::now() < until
            && (secs(&p_rc).is_none() || secs(&p_ff).is_none() || secs(&p_src).is_none())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (a, b, c) = (secs(&p_rc), secs(&p_ff), secs(&p_src));
        emit(
            &json!({ "bench": "relay", "figure": "first-frame", "run": run, "relaycast_s": a.map(r3), "ffmpeg_copy_s": b.map(r3),
                    "source_direct_s": c.map(r3), "create_call_ms": r2(api_ms) }),
        );
        t_rc.extend(a);
        t_ff.extend(b);
        t_src.extend(c);
        rc.stop(&format!("ff{run}"))?;
        drop(ff);
        drop((p_rc, p_ff, p_src));
        std::thread::sleep(Duration::from_secs(1));
    }
    rc.shutdown(Duration::from_secs(6));
    let (m_rc, m_ff, m_src) = (median(&mut t_rc), median(&mut t_ff), median(&mut t_src));
    emit(
        &json!({ "bench": "relay", "figure": "first-frame summary", "runs": ctx.opts.first_frame_runs,
                "relaycast_median_s": r3(m_rc), "ffmpeg_copy_median_s": r3(m_ff), "source_direct_median_s": r3(m_src),
                "ratio_relaycast_over_ffmpeg": r2(m_rc / m_ff) }),
    );
    println!(
        "# first frame (create -> first keyframe at a waiting player), median of {}: relaycast {m_rc:.2} s, ffmpeg -c copy {m_ff:.2} s, source direct {m_src:.2} s",
        ctx.opts.first_frame_runs
    );
    Ok(())
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------------------------------------
// failover: kill the primary; gap at the destination and reconnects
// ---------------------------------------------------------------------------------------------

/// A naive failover: `ffmpeg -rw_timeout 2 s -c copy` from the primary; when it exits, the
/// same from the next source, round-robin, until stopped.
struct NaiveLoop {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NaiveLoop {
    fn start(sources: Vec<String>, dest: String, log: PathBuf) -> NaiveLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                let src = &sources[i % sources.len()];
                let Ok(mut p) = Proc::spawn(
                    "naive ffmpeg",
                    ffmpeg().args([
                        "-rw_timeout",
                        "2000000",
                        "-i",
                        src,
                        "-map",
                        "0",
                        "-c",
                        "copy",
                        "-f",
                        "flv",
                        &dest,
                    ]),
                    &log,
                ) else {
                    return;
                };
                while p.running() && !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                i += 1;
            }
        });
        NaiveLoop {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NaiveLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The largest gap between consecutive video tags received in [from, to], and the time from
/// `from` to the first keyframe after that gap.
fn largest_gap(tags: &[VTag], from: Instant, to: Instant) -> Option<(f64, f64)> {
    let w: Vec<&VTag> = tags.iter().filter(|t| t.at >= from && t.at <= to).collect();
    let mut best: Option<(f64, usize)> = None;
    for i in 1..w.len() {
        let g = w[i].at.duration_since(w[i - 1].at).as_secs_f64();
        if best.is_none_or(|(b, _)| g > b) {
            best = Some((g, i));
        }
    }
    let (gap, i) = best?;
    let key = w[i..]
        .iter()
        .find(|t| t.key)
        .map(|t| t.at.duration_since(from).as_secs_f64())
        .unwrap_or(f64::NAN);
    Some((gap, key))
}

fn phase_failover(ctx: &Ctx) -> Result<()> {
    let nginx = &ctx.nginx;
    let rc = Relaycast::start(
        &ctx.bin,
        ctx.dir.path(),
        "rc_failover",
        ctx.opts.stall_timeout_ms,
    )?;
    let (mut g_rc, mut g_ff) = (Vec::new(), Vec::new());
    let mut seen_log_lines = 0;
    for run in 1..=ctx.opts.failover_runs {
        let (p, b) = (format!("fo_p_{run}"), format!("fo_b_{run}"));
        let mut primary = publisher(&ctx.file()?, &nginx.url(&p), &ctx.log("publisher-primary"))?;
        let _backup = publisher(&ctx.file()?, &nginx.url(&b), &ctx.log("publisher-backup"))?;
        nginx.wait_publishing(&[p.clone(), b.clone()], 100_000, Duration::from_secs(15))?;
        let (d_rc, d_ff) = (format!("fo_rc_{run}"), format!("fo_ff_{run}"));
        let p_rc = Player::start(nginx.rtmp, &d_rc);
        let p_ff = Player::start(nginx.rtmp, &d_ff);
        rc.create(
            &format!("fo{run}"),
            &[nginx.url(&p), nginx.url(&b)],
            &[nginx.url(&d_rc)],
        )?;
        let naive = NaiveLoop::start(
            vec![nginx.url(&p), nginx.url(&b)],
            nginx.url(&d_ff),
            ctx.log("naive-loop"),
        );
        nginx.wait_publishing(
            &[d_rc.clone(), d_ff.clone()],
            100_000,
            Duration::from_secs(30),
        )?;
        // Spread the kill over the 2 s GOP (a fixed schedule would always kill at the same
        // phase, and the time to the backup's next keyframe depends on it).
        let phase = (run as f64 * 0.73) % 2.0;
        std::thread::sleep(Duration::from_secs(5) + Duration::from_secs_f64(phase));
        let publishers =
            |s: &HashMap<String, StreamStat>, n: &str| s.get(n).and_then(|x| x.publisher);
        let stat = nginx.stat();
        let mut ids: [Vec<u64>; 2] = [
            publishers(&stat, &d_rc).into_iter().collect(),
            publishers(&stat, &d_ff).into_iter().collect(),
        ];

        primary.kill();
        let killed = Instant::now();
        let observe = Duration::from_secs(15);
        while killed.elapsed() < observe {
            let stat = nginx.stat();
            for (k, d) in [&d_rc, &d_ff].iter().enumerate() {
                if let Some(id) = publishers(&stat, d) {
                    if ids[k].last() != Some(&id) {
                        ids[k].push(id);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let end = Instant::now();
        let (tags_rc, tags_ff) = (p_rc.finish(), p_ff.finish());
        let (rc_gap, rc_key) = largest_gap(&tags_rc, killed - Duration::from_secs(1), end)
            .unwrap_or((f64::NAN, f64::NAN));
        let (ff_gap, ff_key) = largest_gap(&tags_ff, killed - Duration::from_secs(1), end)
            .unwrap_or((f64::NAN, f64::NAN));
        let recon = |v: &Vec<u64>| v.len().saturating_sub(1);
        emit(&json!({ "bench": "relay", "figure": "failover", "run": run,
                    "relaycast_gap_s": r3(rc_gap), "relaycast_keyframe_after_kill_s": r3(rc_key - 1.0), "relaycast_reconnects": recon(&ids[0]),
                    "naive_ffmpeg_gap_s": r3(ff_gap), "naive_ffmpeg_keyframe_after_kill_s": r3(ff_key - 1.0), "naive_ffmpeg_reconnects": recon(&ids[1]),
                    "stall_timeout_ms": ctx.opts.stall_timeout_ms.unwrap_or(3000), "kill_phase_offset_s": r2(phase) }));
        g_rc.push(rc_gap);
        g_ff.push(ff_gap);
        // What relaycast itself said about the switch (its warnings: source failures).
        let log = std::fs::read_to_string(&rc.log).unwrap_or_default();
        for line in log
            .lines()
            .filter(|l| l.contains("source failed"))
            .skip(seen_log_lines)
        {
            println!(
                "# relaycast log (run {run}): {}",
                line.chars().take(400).collect::<String>()
            );
        }
        seen_log_lines = log.lines().filter(|l| l.contains("source failed")).count();
        rc.stop(&format!("fo{run}"))?;
        drop(naive);
        std::thread::sleep(Duration::from_secs(1));
    }
    rc.shutdown(Duration::from_secs(6));
    let (m_rc, m_ff) = (median(&mut g_rc), median(&mut g_ff));
    emit(
        &json!({ "bench": "relay", "figure": "failover summary", "runs": ctx.opts.failover_runs,
                "relaycast_gap_median_s": r3(m_rc), "naive_ffmpeg_gap_median_s": r3(m_ff),
                "stall_timeout_ms": ctx.opts.stall_timeout_ms.unwrap_or(3000) }),
    );
    println!("# failover (largest video arrival gap at a destination player), median of {}: relaycast {m_rc:.2} s, naive ffmpeg loop {m_ff:.2} s", ctx.opts.failover_runs);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// delay: the same tag at a source player and at a destination player
// ---------------------------------------------------------------------------------------------

/// Per destination tag, the arrival difference to the latest source arrival of the same
/// payload (payloads repeat every loop of the 20 s file, far longer than any delay).
fn delays(src: &[VTag], dest: &[VTag]) -> Vec<f64> {
    let mut by_hash: HashMap<u64, Vec<Instant>> = HashMap::new();
    for t in src {
        by_hash.entry(t.hash).or_default().push(t.at);
    }
    dest.iter()
        .filter_map(|t| {
            let at = by_hash
                .get(&t.hash)?
                .iter()
                .filter(|s| **s <= t.at + Duration::from_millis(5))
                .max()?;
            let d = if t.at >= *at {
                t.at.duration_since(*at).as_secs_f64()
            } else {
                -at.duration_since(t.at).as_secs_f64()
            };
            (d < 5.0).then_some(d * 1000.0)
        })
        .collect()
}

fn phase_delay(ctx: &Ctx) -> Result<()> {
    let nginx = &ctx.nginx;
    let _pub = publisher(
        &ctx.file()?,
        &nginx.url("dlsrc"),
        &ctx.log("publisher-dlsrc"),
    )?;
    nginx.wait_publishing(&["dlsrc".to_string()], 100_000, Duration::from_secs(15))?;
    let rc = Relaycast::start(
        &ctx.bin,
        ctx.dir.path(),
        "rc_delay",
        ctx.opts.stall_timeout_ms,
    )?;
    rc.create("delay", &[nginx.url("dlsrc")], &[nginx.url("dl_rc")])?;
    let _ff = copy_relay(
        &nginx.url("dlsrc"),
        &nginx.url("dl_ff"),
        &ctx.log("delay-ffmpeg"),
    )?;
    nginx.wait_publishing(
        &["dl_rc".to_string(), "dl_ff".to_string()],
        100_000,
        Duration::from_secs(30),
    )?;
    std::thread::sleep(Duration::from_secs(3));
    let players = [
        Player::start(nginx.rtmp, "dlsrc"),
        Player::start(nginx.rtmp, "dl_rc"),
        Player::start(nginx.rtmp, "dl_ff"),
    ];
    std::thread::sleep(Duration::from_secs(ctx.opts.window.max(10)));
    let [s, a, b] = players.map(Player::finish);
    let mut out = Vec::new();
    for (name, tags) in [("relaycast", &a), ("ffmpeg -c copy", &b)] {
        let mut d = delays(&s, tags);
        let n = d.len();
        let (p50, p95) = (median(&mut d), percentile(&mut d, 0.95));
        emit(
            &json!({ "bench": "relay", "figure": "added delay", "contender": name, "matched_video_tags": n,
                    "received_video_tags": tags.len(), "median_ms": r2(p50), "p95_ms": r2(p95) }),
        );
        out.push((name, p50, p95, n));
    }
    println!(
        "# added delay (source player -> destination player, same video tag): relaycast median {:.1} ms (p95 {:.1}), ffmpeg -c copy median {:.1} ms (p95 {:.1})",
        out[0].1, out[0].2, out[1].1, out[1].2
    );
    rc.stop("delay")?;
    rc.shutdown(Duration::from_secs(6));
    Ok(())
}
