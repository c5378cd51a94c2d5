//! `relaycast-bench record`: the cloud recorder against plain ffmpeg, side by side on this
//! machine, from one nginx-rtmp origin on 127.0.0.1 fed by N `-c copy` publishers of the
//! relay bench's pre-encoded 720p25 2.5 Mbit/s H.264 + AAC file (streams `s0..sN-1`).
//!
//! - **cpu**: in the same window, ONE `recorder` process (the standalone worker bin on the
//!   embedded SQLite store/queue and object dir of a data directory) recording all N streams,
//!   each as HLS + MP4 (copy, max file length 3600 s, so no split in the window), against N
//!   plain ffmpeg processes, each pulling one stream and writing the same two outputs with two
//!   `-c copy` outputs: an HLS playlist of fMP4 segments (4 s, the recorder's part length) and a
//!   fragmented MP4 ([`ffmpeg_recorder_args`]). Per contender: CPU time of its process tree over
//!   the window, median PSS, bytes written per second (the objects dir against the ffmpeg output
//!   dirs) with the sources' rate from nginx's `/stat` as the reference; and a second recorder
//!   with no recording in the same window (the recorder's fixed cost).
//! - **finalize**: one recording of `--finalize-secs` (HLS + MP4); the time from the stop
//!   request to each of its `RecordFile` rows being in the store and to the recording being
//!   `Finished` (the store polled every 10 ms), and the recorder's own MP4 finalize time (parts
//!   concatenated, ffmpeg faststart remux) from its log.
//!
//! - **callback**: issue 11's record callback latency on the whole product path (`relaycast
//!   up`, an nginx-rtmp origin hooked to it, a bound push domain, a receiver): see
//!   [`callback`].
//!
//! In the cpu and finalize phases, recordings are started and stopped through the core use
//! cases on ports opened on the recorder's data directory, as the API will.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use relaycast_core::app::recording::{get_recording, start_recording, stop_recording};
use relaycast_core::config::Settings;
use relaycast_core::domain::callbacks::StreamPath;
use relaycast_core::domain::recording::progress::RecordingProgress;
use relaycast_core::domain::recording::{
    FormatSpec, RecordFile, RecordFormat, Recording, RecordingMode, RecordingSpec, RecordingState,
};
use relaycast_core::ports::{Entity, Ports, Query, QueryIndex, SystemClock, TypedStore};
use relaycast_embedded::open_embedded;
use serde_json::{json, Value};
use tokio::runtime::Handle;

use super::{
    bench_bin, encode_source, ffmpeg, first_line, measure_window_for, median, min_kbps, publisher,
    r2, r3, Nginx, Proc, Spread, RTMP_MODULE, SOURCE_720P,
};
use crate::record::emit;

mod callback;

const BENCH: &str = "record";
const ACCOUNT: &str = "bench";
const RC: &str = "relaycast recorder (1 process)";
const FF: &str = "ffmpeg x N (hls fmp4 + fragmented mp4)";
const IDLE: &str = "relaycast recorder idle (no recording, same window)";
/// File length of the recordings' formats (no split within a window).
const MAX_FILE_SECS: u32 = 3600;

/// Options of `relaycast-bench record`.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// `cpu`, `finalize`, `callback`.
    pub phases: Vec<String>,
    /// Stream counts of the cpu phase.
    pub streams: Vec<usize>,
    /// Rounds of the cpu phase.
    pub rounds: usize,
    /// Seconds of warm-up once every contender writes.
    pub warmup: u64,
    /// Seconds of the measuring window.
    pub window: u64,
    /// Runs of the finalize phase.
    pub finalize_runs: usize,
    /// Length of the finalize phase's recording, s.
    pub finalize_secs: u64,
    /// The recorder binary (default: `recorder` next to this binary).
    pub recorder_bin: Option<PathBuf>,
    /// Seconds each stream of the callback phase is published for.
    pub callback_secs: u64,
    /// Runs of the callback phase per resume timeout.
    pub callback_runs: usize,
    /// Resume timeouts (`FlowContinueDuration`, s) of the callback phase.
    pub callback_resume: Vec<u32>,
    /// The relaycast binary of the callback phase (default: `relaycast` next to this binary).
    pub relaycast_bin: Option<PathBuf>,
    /// Directory for temporary files.
    pub dir: Option<PathBuf>,
}

struct Ctx {
    dir: tempfile::TempDir,
    nginx: Nginx,
    file: PathBuf,
    bin: PathBuf,
    opts: RecordOptions,
    rt: Handle,
}

impl Ctx {
    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The `relaycast` binary of the callback phase; an error if it is not built.
    fn relaycast_bin(&self) -> Result<PathBuf> {
        bench_bin(
            self.opts.relaycast_bin.as_deref(),
            "relaycast",
            "-p relaycast --bin relaycast",
        )
    }
}

/// Runs the phases asked for (blocking; `rt` runs the store calls).
pub fn bench_record(opts: RecordOptions, rt: Handle) -> Result<()> {
    if !Path::new(RTMP_MODULE).exists() {
        bail!("{RTMP_MODULE} not found (install libnginx-mod-rtmp)");
    }
    // Only the cpu and finalize phases run the standalone recorder (none: an empty path).
    let bin = if opts.phases.iter().any(|p| p == "cpu" || p == "finalize") {
        bench_bin(
            opts.recorder_bin.as_deref(),
            "recorder",
            "-p relaycast-workers --bin recorder",
        )?
    } else {
        PathBuf::new()
    };
    let dir = crate::temp_dir(opts.dir.as_deref())?;
    let nginx = Nginx::start(dir.path())?;
    let file = encode_source(dir.path(), &SOURCE_720P)?;
    emit(&json!({ "bench": BENCH, "figure": "machine", "machine": {
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, m)| m.trim().to_string())),
        "loadavg": crate::record::loadavg(), "ffmpeg": first_line("ffmpeg", &["-version"]), "nginx": first_line("nginx", &["-v"]),
        "recorder_bin": bin.display().to_string(),
        "ffmpeg_contender_args": ffmpeg_recorder_args("rtmp://127.0.0.1:PORT/live/sK", Path::new("OUT")),
    }}));
    let ctx = Ctx {
        dir,
        nginx,
        file,
        bin,
        opts: opts.clone(),
        rt,
    };
    for phase in &opts.phases {
        emit(
            &json!({ "bench": BENCH, "figure": "phase start", "phase": phase, "utc": crate::record::utc_now().1, "loadavg": crate::record::loadavg() }),
        );
        match phase.as_str() {
            "cpu" => phase_cpu(&ctx)?,
            "finalize" => phase_finalize(&ctx)?,
            "callback" => callback::phase_callback(&ctx)?,
            other => bail!("unknown phase {other} (cpu, finalize, callback)"),
        }
        emit(
            &json!({ "bench": BENCH, "figure": "phase end", "phase": phase, "utc": crate::record::utc_now().1, "loadavg": crate::record::loadavg() }),
        );
    }
    Ok(())
}

/// What a user writes to record one RTMP stream as an HLS playlist (fMP4 segments of 4 s, the
/// recorder's part length, every segment kept) and an MP4, both copies, with one ffmpeg: two
/// outputs of one input. The MP4 is fragmented (`+frag_keyframe+empty_moov`), as a live
/// recording must be to survive a kill (a plain MP4 has no index until ffmpeg exits), which is
/// also what the recorder's parts are.
fn ffmpeg_recorder_args(src: &str, out: &Path) -> Vec<String> {
    let o = |name: &str| out.join(name).display().to_string();
    [
        "-i",
        src,
        "-map",
        "0",
        "-c",
        "copy",
        "-f",
        "hls",
        "-hls_time",
        "4",
        "-hls_list_size",
        "0",
        "-hls_playlist_type",
        "event",
        "-hls_segment_type",
        "fmp4",
        "-hls_fmp4_init_filename",
        "init.mp4",
        "-hls_segment_filename",
        &o("seg_%05d.m4s"),
        &o("index.m3u8"),
        "-map",
        "0",
        "-c",
        "copy",
        "-movflags",
        "+frag_keyframe+empty_moov",
        "-f",
        "mp4",
        &o("out.mp4"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A standalone `recorder` on its own data directory, and ports on the same directory.
struct Recorder {
    proc: Proc,
    data: PathBuf,
    log: PathBuf,
    ports: Ports,
}

impl Recorder {
    fn start(ctx: &Ctx, name: &str) -> Result<Recorder> {
        let d = ctx.dir.path().join(name);
        let data = d.join("data");
        std::fs::create_dir_all(&data)?;
        let log = d.join("recorder.log");
        let envs = [
            ("RELAYCAST_DATA_DIR", data.display().to_string()),
            ("RELAYCAST_ALLOW_PRIVATE_TARGETS", "true".to_string()),
            ("RELAYCAST_LOG_FILTER", "info".to_string()),
            ("RELAYCAST_LOG_FORMAT", "json".to_string()),
        ];
        let mut cmd = Command::new(&ctx.bin);
        for (k, v) in &envs {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn("recorder", &mut cmd, &log)?;
        let until = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("recorder up")
        {
            if !proc.running() || Instant::now() > until {
                bail!("the recorder did not come up; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let ports = open_ports(&data)?;
        Ok(Recorder {
            proc,
            data,
            log,
            ports,
        })
    }

    /// SIGTERM (the recorder stores its parts and hands its recordings over), then the tree is
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
}

/// Ports on the embedded store and queue of the data directory `data`, next to the process
/// that runs on it (SQLite in WAL mode: the bench reads while it writes).
fn open_ports(data: &Path) -> Result<Ports> {
    let envs = [("RELAYCAST_DATA_DIR".to_string(), data.display().to_string())];
    let settings = Settings::load(None, envs)?;
    Ok(open_embedded(&settings, Arc::new(SystemClock))?.ports)
}

fn recording(id: &str, stream: &str, url: &str) -> Result<Recording> {
    Ok(Recording {
        account: ACCOUNT.into(),
        id: id.into(),
        mode: RecordingMode::Specific,
        record_id: Some(format!("{id}_rec")),
        stream: Some(
            StreamPath::parse("push.bench", "live", stream)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        ),
        source_url: url.into(),
        stream_param: String::new(),
        spec: RecordingSpec {
            template_id: None,
            formats: [RecordFormat::Hls, RecordFormat::Mp4]
                .into_iter()
                .map(|format| FormatSpec {
                    format,
                    max_file_secs: MAX_FILE_SECS,
                    storage_secs: 0,
                })
                .collect(),
            resume_timeout_secs: 0,
            namespace: 0,
            file_name_pattern: None,
            notify_url: None,
            callback_key: None,
            snapshot_interval_secs: None,
        },
        created_ms: 0,
        end_time_ms: None,
        stop_requested_ms: None,
        stream_stopped_ms: None,
        state: RecordingState::Pending,
        error: None,
        files: vec![],
    })
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Waits until every recording in `ids` has stored a part of each of its formats.
fn wait_parts(ctx: &Ctx, ports: &Ports, ids: &[String], within: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let mut missing = Vec::new();
        for id in ids {
            let key = Recording::store_key(ACCOUNT, id);
            let p = ctx
                .rt
                .block_on(ports.store.load::<RecordingProgress>(&key))?;
            let ok = p.is_some_and(|p| {
                p.value.open.len() >= 2 && p.value.open.iter().all(|f| !f.parts.is_empty())
            });
            if !ok {
                missing.push(id.clone());
            }
        }
        if missing.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!("no part of every format after {within:?}: {missing:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the recording `id` has stored a part of each format, then until `secs` after
/// `started` (a recording of that length, with parts to finalize).
fn record_for(ctx: &Ctx, ports: &Ports, id: &str, started: Instant, secs: u64) -> Result<()> {
    wait_parts(ctx, ports, &[id.to_string()], Duration::from_secs(40))?;
    std::thread::sleep(Duration::from_secs(secs).saturating_sub(started.elapsed()));
    Ok(())
}

#[derive(Debug, Clone, Copy, Default)]
struct Row {
    cpu_per_stream: f64,
    pss_per_stream: f64,
    written_kbps_per_stream: f64,
}

fn phase_cpu(ctx: &Ctx) -> Result<()> {
    let nginx = &ctx.nginx;
    let mut results: Vec<(usize, Row, Row)> = Vec::new();
    let mut idles: Vec<(usize, f64, f64)> = Vec::new();
    for round in 1..=ctx.opts.rounds {
        for &n in &ctx.opts.streams {
            let streams: Vec<String> = (0..n).map(|k| format!("s{k}")).collect();
            let pubs: Vec<Proc> = streams
                .iter()
                .map(|s| {
                    publisher(
                        &ctx.file,
                        &nginx.url(s),
                        &ctx.log(&format!("publisher_{n}_{round}")),
                    )
                })
                .collect::<Result<_>>()?;
            nginx.wait_publishing(&streams, 100_000, Duration::from_secs(20))?;

            let rec = Recorder::start(ctx, &format!("rec_{n}_{round}"))?;
            // The recorder's fixed cost: one with no recording, in the same window.
            let idle = Recorder::start(ctx, &format!("rec_idle_{n}_{round}"))?;
            let ids: Vec<String> = (0..n).map(|k| format!("r{n}x{round}s{k}")).collect();
            for (id, s) in ids.iter().zip(&streams) {
                ctx.rt.block_on(start_recording(
                    &rec.ports,
                    recording(id, s, &nginx.url(s))?,
                ))?;
            }
            let ff_root = ctx.dir.path().join(format!("ff_{n}_{round}"));
            let ffs: Vec<Proc> = streams
                .iter()
                .map(|s| {
                    let out = ff_root.join(s);
                    std::fs::create_dir_all(&out)?;
                    Proc::spawn(
                        "ffmpeg recorder",
                        ffmpeg().args(ffmpeg_recorder_args(&nginx.url(s), &out)),
                        &ctx.log(&format!("ff_{n}_{round}")),
                    )
                })
                .collect::<Result<_>>()?;
            let first_parts = wait_parts(ctx, &rec.ports, &ids, Duration::from_secs(40))?;
            std::thread::sleep(Duration::from_secs(ctx.opts.warmup));

            let objects = rec.data.join("objects");
            let (rb0, fb0, st0) = (dir_bytes(&objects), dir_bytes(&ff_root), nginx.stat());
            let ff_pids: Vec<u32> = ffs.iter().map(Proc::pid).collect();
            let rec_pid = [rec.proc.pid()];
            let idle_pid = [idle.proc.pid()];
            let trees: Vec<&[u32]> = vec![&rec_pid, &ff_pids, &idle_pid];
            let w = measure_window_for(
                BENCH,
                ctx.opts.window,
                &trees,
                rec.proc.pid(),
                json!({ "phase": "cpu", "streams": n, "round": round }),
            );
            let (rb1, fb1, st1) = (dir_bytes(&objects), dir_bytes(&ff_root), nginx.stat());
            let secs = w.secs;
            let source_kbps = min_kbps(&st0, &st1, &streams, secs);
            let kbps =
                |b0: u64, b1: u64| b1.saturating_sub(b0) as f64 * 8.0 / 1000.0 / secs / n as f64;
            let rows = [
                (
                    RC,
                    Row {
                        cpu_per_stream: w.cpu_pct[0] / n as f64,
                        pss_per_stream: w.mem[0].pss / n as f64,
                        written_kbps_per_stream: kbps(rb0, rb1),
                    },
                ),
                (
                    FF,
                    Row {
                        cpu_per_stream: w.cpu_pct[1] / n as f64,
                        pss_per_stream: w.mem[1].pss / n as f64,
                        written_kbps_per_stream: kbps(fb0, fb1),
                    },
                ),
            ];
            for (i, (name, row)) in rows.iter().enumerate() {
                let m = w.mem[i];
                emit(
                    &json!({ "bench": BENCH, "figure": "cpu+pss", "contender": name, "streams": n, "round": round, "window_s": r2(secs),
                              "cpu_pct_of_one_core": r2(w.cpu_pct[i]), "cpu_pct_ticks": r2(w.cpu_ticks_pct[i]),
                              "cpu_pct_per_stream": r3(row.cpu_per_stream),
                              "pss_mb_median": r2(m.pss), "rss_mb_median": r2(m.rss), "uss_mb_median": r2(m.uss),
                              "pss_mb_per_stream": r2(row.pss_per_stream), "processes": w.processes[i],
                              "written_kbps_per_stream": row.written_kbps_per_stream.round(),
                              "source_min_kbps": source_kbps.round(),
                              "written_over_source": r2(row.written_kbps_per_stream / source_kbps) }),
                );
            }
            emit(
                &json!({ "bench": BENCH, "figure": "cpu+pss", "contender": IDLE, "streams": n, "round": round, "window_s": r2(secs),
                          "cpu_pct_of_one_core": r3(w.cpu_pct[2]), "cpu_pct_ticks": r3(w.cpu_ticks_pct[2]),
                          "pss_mb_median": r2(w.mem[2].pss), "rss_mb_median": r2(w.mem[2].rss), "uss_mb_median": r2(w.mem[2].uss) }),
            );
            emit(
                &json!({ "bench": BENCH, "figure": "window ratios", "streams": n, "round": round,
                          "cpu_ratio_recorder_over_ffmpeg": r2(rows[0].1.cpu_per_stream / rows[1].1.cpu_per_stream),
                          "pss_ratio_recorder_over_ffmpeg": r2(rows[0].1.pss_per_stream / rows[1].1.pss_per_stream),
                          "first_parts_s": r2(first_parts.as_secs_f64()), "machine_busy_pct_of_one_core": r2(w.machine_busy_pct) }),
            );
            for (name, row) in &rows {
                if row.written_kbps_per_stream < 1.5 * source_kbps {
                    eprintln!("# WARNING: {name} wrote only {:.0} kbit/s per stream for 2 outputs of a {source_kbps:.0} kbit/s source", row.written_kbps_per_stream);
                }
            }
            results.push((n, rows[0].1, rows[1].1));
            idles.push((n, w.cpu_pct[2], w.mem[2].pss));
            idle.shutdown(Duration::from_secs(10));
            drop(ffs);
            rec.shutdown(Duration::from_secs(10));
            drop(pubs);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    println!(
        "# record cpu+pss: {} round(s), {} s windows, per recorded stream, CPU in % of one core",
        ctx.opts.rounds, ctx.opts.window
    );
    println!(
        "# {:>7} | {:>26} | {:>26} | {:>18} | {:>18}",
        "streams", "recorder cpu/pss/kbps", "ffmpeg cpu/pss/kbps", "cpu rec/ff", "pss rec/ff"
    );
    for &n in &ctx.opts.streams {
        let rs: Vec<&(usize, Row, Row)> = results.iter().filter(|r| r.0 == n).collect();
        let med_of = |f: &dyn Fn(&(usize, Row, Row)) -> f64| {
            let mut v: Vec<f64> = rs.iter().map(|r| f(r)).collect();
            median(&mut v)
        };
        let per =
            |f: &dyn Fn(&(usize, Row, Row)) -> f64| rs.iter().map(|r| r2(f(r))).collect::<Vec<_>>();
        let cpu = Spread::of(
            rs.iter()
                .map(|r| r.1.cpu_per_stream / r.2.cpu_per_stream)
                .collect(),
        );
        let pss = Spread::of(
            rs.iter()
                .map(|r| r.1.pss_per_stream / r.2.pss_per_stream)
                .collect(),
        );
        let mut idle_cpu: Vec<f64> = idles.iter().filter(|r| r.0 == n).map(|r| r.1).collect();
        let mut idle_pss: Vec<f64> = idles.iter().filter(|r| r.0 == n).map(|r| r.2).collect();
        let line: Value = json!({ "bench": BENCH, "figure": "cpu+pss summary", "streams": n, "rounds": rs.len(),
            "recorder_idle_cpu_pct": r3(median(&mut idle_cpu)), "recorder_idle_pss_mb": r2(median(&mut idle_pss)),
            "recorder_cpu_pct_per_stream": r3(med_of(&|r| r.1.cpu_per_stream)), "ffmpeg_cpu_pct_per_stream": r3(med_of(&|r| r.2.cpu_per_stream)),
            "recorder_cpu_pct_per_stream_per_round": per(&|r| r.1.cpu_per_stream), "ffmpeg_cpu_pct_per_stream_per_round": per(&|r| r.2.cpu_per_stream),
            "recorder_pss_mb_per_stream": r2(med_of(&|r| r.1.pss_per_stream)), "ffmpeg_pss_mb_per_stream": r2(med_of(&|r| r.2.pss_per_stream)),
            "recorder_written_kbps_per_stream": med_of(&|r| r.1.written_kbps_per_stream).round(), "ffmpeg_written_kbps_per_stream": med_of(&|r| r.2.written_kbps_per_stream).round(),
            "cpu_ratio_recorder_over_ffmpeg": cpu.json(), "pss_ratio_recorder_over_ffmpeg": pss.json() });
        emit(&line);
        println!(
            "# {n:>7} | {:>7.2}% {:>6.1} MB {:>6.0} | {:>7.2}% {:>6.1} MB {:>6.0} | {:>18} | {:>18}",
            med_of(&|r| r.1.cpu_per_stream), med_of(&|r| r.1.pss_per_stream), med_of(&|r| r.1.written_kbps_per_stream),
            med_of(&|r| r.2.cpu_per_stream), med_of(&|r| r.2.pss_per_stream), med_of(&|r| r.2.written_kbps_per_stream),
            cpu.short(), pss.short()
        );
    }
    Ok(())
}

/// `took_ms` of the recorder's "record file finalized" log lines (JSON), per format.
fn finalize_took_ms(log: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "record file finalized")
        .filter_map(|v| Some((v["format"].as_str()?.to_string(), v["took_ms"].as_u64()?)))
        .collect()
}

fn phase_finalize(ctx: &Ctx) -> Result<()> {
    let nginx = &ctx.nginx;
    let stream = "s0".to_string();
    let _pub = publisher(
        &ctx.file,
        &nginx.url(&stream),
        &ctx.log("publisher_finalize"),
    )?;
    nginx.wait_publishing(
        std::slice::from_ref(&stream),
        100_000,
        Duration::from_secs(20),
    )?;
    let mut rows = Vec::new();
    for run in 1..=ctx.opts.finalize_runs {
        let rec = Recorder::start(ctx, &format!("rec_finalize_{run}"))?;
        let id = format!("fin{run}");
        let started = Instant::now();
        ctx.rt.block_on(start_recording(
            &rec.ports,
            recording(&id, &stream, &nginx.url(&stream))?,
        ))?;
        record_for(ctx, &rec.ports, &id, started, ctx.opts.finalize_secs)?;
        let stop = Instant::now();
        ctx.rt.block_on(stop_recording(&rec.ports, ACCOUNT, &id))?;
        let (mut hls, mut mp4, mut finished): (Option<f64>, Option<f64>, Option<f64>) =
            (None, None, None);
        let mut files: Vec<RecordFile> = Vec::new();
        while finished.is_none() || hls.is_none() || mp4.is_none() {
            if stop.elapsed() > Duration::from_secs(60) {
                bail!("recording {id} not finalized 60 s after its stop: hls {hls:?} mp4 {mp4:?} finished {finished:?}");
            }
            let query = Query::new(RecordFile::KIND, QueryIndex::Account(ACCOUNT.into()));
            let (found, _) = ctx
                .rt
                .block_on(rec.ports.store.query_typed::<RecordFile>(query))?;
            let at = stop.elapsed().as_secs_f64();
            files = found
                .into_iter()
                .map(|v| v.value)
                .filter(|f| f.recording_id == id)
                .collect();
            if hls.is_none() && files.iter().any(|f| f.format == RecordFormat::Hls) {
                hls = Some(at);
            }
            if mp4.is_none() && files.iter().any(|f| f.format == RecordFormat::Mp4) {
                mp4 = Some(at);
            }
            if finished.is_none()
                && ctx
                    .rt
                    .block_on(get_recording(&rec.ports, ACCOUNT, &id))?
                    .state
                    == RecordingState::Finished
            {
                finished = Some(at);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The log line follows the object put; give it a moment.
        std::thread::sleep(Duration::from_millis(300));
        let took = finalize_took_ms(&rec.log);
        let took_of = |f: &str| took.iter().find(|(k, _)| k == f).map(|(_, v)| *v);
        let (hls_s, mp4_s, fin_s) = (
            hls.unwrap_or(f64::NAN),
            mp4.unwrap_or(f64::NAN),
            finished.unwrap_or(f64::NAN),
        );
        let durations: Vec<Value> = files.iter().map(|f| json!({ "format": f.format.as_str(), "duration_ms": f.duration_ms, "size": f.size })).collect();
        emit(
            &json!({ "bench": BENCH, "figure": "finalize", "run": run, "recording_s": r2(stop.duration_since(started).as_secs_f64()),
                      "stop_to_hls_record_file_s": r3(hls_s), "stop_to_mp4_record_file_s": r3(mp4_s), "stop_to_finished_s": r3(fin_s),
                      "recorder_hls_finalize_ms": took_of("hls"), "recorder_mp4_finalize_ms": took_of("mp4"), "files": durations,
                      "loadavg": crate::record::loadavg() }),
        );
        println!("# finalize run {run}: stop → HLS file {hls_s:.3} s, MP4 file {mp4_s:.3} s, finished {fin_s:.3} s; recorder MP4 finalize (concat + remux) {:?} ms", took_of("mp4"));
        rows.push((
            hls_s,
            mp4_s,
            fin_s,
            took_of("mp4").map(|v| v as f64).unwrap_or(f64::NAN),
        ));
        rec.shutdown(Duration::from_secs(10));
    }
    let col = |f: fn(&(f64, f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        let per: Vec<f64> = v.iter().map(|x| r3(*x)).collect();
        (r3(median(&mut v)), per)
    };
    let (h, hp) = col(|r| r.0);
    let (m, mp) = col(|r| r.1);
    let (f, fp) = col(|r| r.2);
    let (t, tp) = col(|r| r.3);
    emit(
        &json!({ "bench": BENCH, "figure": "finalize summary", "runs": rows.len(), "recording_s": ctx.opts.finalize_secs,
                  "stop_to_hls_record_file_s": h, "stop_to_hls_record_file_s_per_run": hp,
                  "stop_to_mp4_record_file_s": m, "stop_to_mp4_record_file_s_per_run": mp,
                  "stop_to_finished_s": f, "stop_to_finished_s_per_run": fp,
                  "recorder_mp4_finalize_ms": t, "recorder_mp4_finalize_ms_per_run": tp }),
    );
    Ok(())
}
