//! density: N copy relays in one `relaycast up` at once, each pulling one 500 kbit/s 360p
//! stream and pushing it to 2 destinations, against nginx-rtmp pushing the same N × 2 fan-out;
//! at several N, each from scratch, so that the most tasks the machine holds can be read off.
//!
//! Per N, in one window:
//!
//! - one [`FlvPublisher`] thread publishes the N streams into a source nginx (relaycast pulls
//!   from it) and the same N into a push nginx (two `push … name=sI` lines per stream) and a
//!   no-push nginx (receives only). The push contender is the push nginx net of the no-push
//!   one, as in the cpu phase. Both contenders deliver into one destination nginx.
//! - relaycast's figure is its whole process tree; its PSS is divided by N for the per-task
//!   figure (the idle service's PSS included, and given apart).
//! - frames and delay are taken on a sample of the streams (`--density-sample`): a player on
//!   each sampled source stream and on each of its destinations, per contender. A frame
//!   published in the window counts as received at a destination if the same payload arrives
//!   there within [`ARRIVAL_WITHIN`]; the delay of each destination frame is measured against
//!   the source player's arrival of it (the delay phase's matching). Every destination's rate
//!   is checked from the destination nginx's `/stat`.
//! - the machine's total busy time (`/proc/stat`) is given beside the contenders', with what
//!   the harness itself cost (publisher thread, players, source and destination nginx).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

use super::flv_publisher::{FlvPublisher, Sent};
use super::{
    delays, measure_window, mem, min_kbps, percentile, process_cpu_s, r2, r3, Ctx, Nginx, Player,
    Relaycast, VTag,
};
use crate::record::emit;

/// Destinations per task (the target: 2).
const DESTS: usize = 2;
/// A frame counts as delivered if it reaches the destination this soon after it was published.
const ARRIVAL_WITHIN: Duration = Duration::from_secs(1);
/// The slowest destination must receive at least this (the source is about 500 kbit/s).
const MIN_KBPS: f64 = 400.0;

pub(super) fn phase_density(ctx: &Ctx) -> Result<()> {
    let file = ctx.file_360p()?;
    let mut rows = Vec::new();
    for &n in &ctx.opts.density_tasks {
        if n == 0 {
            bail!("--density-tasks must be positive");
        }
        rows.push(run(ctx, &file, n)?);
        std::thread::sleep(Duration::from_secs(1));
    }
    println!("# density: N tasks x {DESTS} destinations, 360p 500 kbit/s copy relays, {} s windows, CPU in % of one core", ctx.opts.window);
    println!(
        "# {:>5} | {:>9} | {:>14} | {:>7} | {:>12} | {:>10} | {:>17} | {:>17} | {:>15} | {:>15}",
        "tasks",
        "relaycast",
        "nginx push net",
        "rc/push",
        "machine busy",
        "PSS/task",
        "dropped rc",
        "dropped push",
        "delay rc p50/99",
        "push p50/99"
    );
    for r in &rows {
        // A figure with `d` decimals, or `-` where the run has none (no push contender).
        let f = |k: &str, d: usize| {
            r[k].as_f64()
                .map(|v| format!("{v:.d$}"))
                .unwrap_or_else(|| "-".into())
        };
        let of = |p: &str| {
            format!(
                "{} of {}",
                f(&format!("{p}_frames_dropped"), 0),
                f(&format!("{p}_frames_expected"), 0)
            )
        };
        let delay = |p: &str| {
            format!(
                "{}/{} ms",
                f(&format!("{p}_delay_p50_ms"), 1),
                f(&format!("{p}_delay_p99_ms"), 1)
            )
        };
        println!(
            "# {:>5} | {:>8}% | {:>13}% | {:>7} | {:>11}% | {:>7} MB | {:>17} | {:>17} | {:>15} | {:>15}",
            f("tasks", 0),
            f("relaycast_cpu_pct_of_one_core", 2),
            f("nginx_push_net_cpu_pct_of_one_core", 2),
            f("cpu_ratio_relaycast_over_nginx_push_net", 2),
            f("machine_busy_pct", 1),
            f("relaycast_pss_mb_per_task", 3),
            of("relaycast"),
            of("nginx_push"),
            delay("relaycast"),
            delay("nginx_push"),
        );
    }
    Ok(())
}

fn dest_names(prefix: &str, stream: usize) -> Vec<String> {
    (0..DESTS)
        .map(|d| format!("{prefix}{stream}_{d}"))
        .collect()
}

/// One density window at `n` tasks; emits and returns its line.
fn run(ctx: &Ctx, file: &Path, n: usize) -> Result<Value> {
    let dir = ctx.dir.path();
    let with_push = !ctx.opts.density_relaycast_only;
    let streams: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let all_dests = |p: &str| (0..n).flat_map(|i| dest_names(p, i)).collect::<Vec<_>>();
    // The destination nginx takes 4N publishes plus the players.
    let conns = (6 * n * DESTS + 256).max(1024);
    let src = Nginx::start_with(dir, &format!("density{n}_src"), "", conns)?;
    let dst = Nginx::start_with(dir, &format!("density{n}_dst"), "", conns)?;
    let push = if with_push {
        // `name=` makes each line apply to its own stream only (without it every line would
        // push every stream of the application).
        let lines: String = (0..n)
            .flat_map(|i| dest_names("np", i).into_iter().map(move |d| (i, d)))
            .map(|(i, d)| format!("    push {} name=s{i};\n", dst.url(&d)))
            .collect();
        let p = Nginx::start_with(dir, &format!("density{n}_push"), &lines, conns)?;
        Some((
            p,
            Nginx::start_with(dir, &format!("density{n}_nopush"), "", conns)?,
        ))
    } else {
        None
    };
    let mut targets: Vec<(u16, String)> = streams.iter().map(|s| (src.rtmp, s.clone())).collect();
    if let Some((p, b)) = &push {
        targets.extend(
            streams
                .iter()
                .flat_map(|s| [(p.rtmp, s.clone()), (b.rtmp, s.clone())]),
        );
    }
    let publisher = FlvPublisher::start(file, &targets)?;
    let within = Duration::from_secs(30 + n as u64 / 5);
    src.wait_publishing(&streams, 20_000, within)?;
    if let Some((p, b)) = &push {
        p.wait_publishing(&streams, 20_000, within)?;
        b.wait_publishing(&streams, 20_000, within)?;
    }

    let rc = Relaycast::start(
        &ctx.bin,
        dir,
        &format!("rc_density_{n}"),
        ctx.opts.stall_timeout_ms,
    )?;
    let pss_before = mem(&[rc.proc.pid()]).pss;
    let t_create = Instant::now();
    for (i, s) in streams.iter().enumerate() {
        let forwards: Vec<String> = dest_names("rc", i).iter().map(|d| dst.url(d)).collect();
        rc.create(&format!("density{n}t{i}"), &[src.url(s)], &forwards)?;
    }
    let create_s = t_create.elapsed().as_secs_f64();
    let mut expected_dests = all_dests("rc");
    if with_push {
        expected_dests.extend(all_dests("np"));
    }
    dst.wait_publishing(&expected_dests, 20_000, within)?;
    let all_publishing_s = t_create.elapsed().as_secs_f64();

    let k = ctx.opts.density_sample.clamp(1, n);
    let sample: Vec<usize> = (0..k).map(|j| j * n / k).collect();
    let watch_rc = Watch::start(&src, &dst, "rc", &sample);
    let watch_push = push.as_ref().map(|(p, b)| {
        // The same players on the no-push nginx, so that the net figure does not charge the
        // push for serving the sample's source players.
        let twins: Vec<Player> = sample
            .iter()
            .map(|i| Player::start(b.rtmp, &format!("s{i}")))
            .collect();
        (Watch::start(p, &dst, "np", &sample), twins)
    });
    // A player joining mid-GOP gets video from the next keyframe on (up to 2 s later): the
    // window starts only once every player is receiving, or its first second would count as
    // dropped frames.
    watch_rc.wait_receiving(within)?;
    if let Some((watch, _)) = &watch_push {
        watch.wait_receiving(within)?;
    }
    std::thread::sleep(Duration::from_secs(ctx.opts.warmup));

    let mut trees: Vec<Vec<u32>> = vec![
        vec![rc.proc.pid()],
        vec![src.proc.pid()],
        vec![dst.proc.pid()],
    ];
    if let Some((p, b)) = &push {
        trees.extend([vec![p.proc.pid()], vec![b.proc.pid()]]);
    }
    let roots: Vec<&[u32]> = trees.iter().map(Vec::as_slice).collect();
    let bench_cpu = || process_cpu_s(std::process::id()).unwrap_or(0.0);
    let (pub0, bench0, stat0) = (publisher.cpu_s(), bench_cpu(), dst.stat());
    let w0 = Instant::now();
    let w = measure_window(
        ctx,
        &roots,
        rc.proc.pid(),
        json!({ "phase": "density", "tasks": n }),
    );
    let w1 = Instant::now();
    let (pub1, bench1, stat1) = (publisher.cpu_s(), bench_cpu(), dst.stat());
    // Frames sent near the end of the window get their time to arrive.
    std::thread::sleep(ARRIVAL_WITHIN + Duration::from_millis(500));
    let sent = publisher.sent_between(w0, w1);
    let secs = w.secs;
    let pct = |a: f64, b: f64| (b - a) / secs * 100.0;
    let (publisher_cpu, bench_all_cpu) = (pct(pub0, pub1), pct(bench0, bench1));

    let rc_delivery = watch_rc.finish(&sent, w0, w1);
    let push_delivery = watch_push.map(|(watch, twins)| {
        drop(twins);
        watch.finish(&sent, w0, w1)
    });
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (rc_cpu, rc_mem) = (w.cpu_pct[0], w.mem[0]);
    let mut line = Map::new();
    line.extend([
        ("bench".into(), json!("relay")),
        ("figure".into(), json!("density")),
        ("tasks".into(), json!(n)),
        ("destinations".into(), json!(n * DESTS)),
        ("window_s".into(), json!(r2(secs))),
        ("relaycast_cpu_pct_of_one_core".into(), json!(r2(rc_cpu))),
        (
            "relaycast_cpu_pct_per_task".into(),
            json!(r3(rc_cpu / n as f64)),
        ),
        ("relaycast_processes".into(), json!(w.processes[0])),
        ("relaycast_pss_mb".into(), json!(r2(rc_mem.pss))),
        (
            "relaycast_pss_mb_per_task".into(),
            json!(r3(rc_mem.pss / n as f64)),
        ),
        (
            "relaycast_pss_mb_before_tasks".into(),
            json!(r2(pss_before)),
        ),
        (
            "relaycast_pss_mb_per_task_over_idle".into(),
            json!(r3((rc_mem.pss - pss_before) / n as f64)),
        ),
        ("relaycast_rss_mb".into(), json!(r2(rc_mem.rss))),
        ("relaycast_uss_mb".into(), json!(r2(rc_mem.uss))),
        (
            "machine_busy_pct".into(),
            json!(r2(w.machine_busy_pct / nproc as f64)),
        ),
        (
            "machine_busy_pct_of_one_core".into(),
            json!(r2(w.machine_busy_pct)),
        ),
        ("nproc".into(), json!(nproc)),
        ("source_nginx_cpu_pct".into(), json!(r2(w.cpu_pct[1]))),
        ("destination_nginx_cpu_pct".into(), json!(r2(w.cpu_pct[2]))),
        ("publisher_cpu_pct".into(), json!(r2(publisher_cpu))),
        (
            "bench_players_and_bookkeeping_cpu_pct".into(),
            json!(r2(bench_all_cpu - publisher_cpu)),
        ),
        ("publisher_streams".into(), json!(publisher.streams())),
        (
            "publisher_failed_connections".into(),
            json!(publisher.failed()),
        ),
        ("create_calls_s".into(), json!(r3(create_s))),
        (
            "create_to_all_destinations_publishing_s".into(),
            json!(r3(all_publishing_s)),
        ),
    ]);
    rc_delivery.fields(
        "relaycast",
        min_kbps(&stat0, &stat1, &all_dests("rc"), secs),
        &mut line,
    );
    if let Some(d) = &push_delivery {
        let (gross, base) = (w.cpu_pct[3], w.cpu_pct[4]);
        let net = gross - base;
        line.extend([
            ("nginx_push_net_cpu_pct_of_one_core".into(), json!(r2(net))),
            ("nginx_push_gross_cpu_pct".into(), json!(r2(gross))),
            ("nginx_nopush_cpu_pct".into(), json!(r2(base))),
            (
                "cpu_ratio_relaycast_over_nginx_push_net".into(),
                json!(r2(rc_cpu / net)),
            ),
            (
                "nginx_push_net_pss_mb".into(),
                json!(r2(w.mem[3].pss - w.mem[4].pss)),
            ),
        ]);
        d.fields(
            "nginx_push",
            min_kbps(&stat0, &stat1, &all_dests("np"), secs),
            &mut line,
        );
    }
    let line = Value::Object(line);
    emit(&line);
    for (who, key) in [
        ("relaycast", "relaycast_min_kbps_per_destination"),
        ("nginx push", "nginx_push_min_kbps_per_destination"),
    ] {
        if line[key].as_f64().is_some_and(|k| k < MIN_KBPS) {
            eprintln!(
                "# WARNING: density {n}: {who} delivered only {} kbit/s to one destination",
                line[key]
            );
        }
    }
    rc.shutdown(Duration::from_secs(10));
    drop(publisher);
    Ok(line)
}

/// The players of one contender on the sampled streams: one on each source stream, one on
/// each of its destinations.
struct Watch {
    streams: Vec<(Player, Vec<Player>)>,
}

impl Watch {
    fn start(source: &Nginx, dest: &Nginx, prefix: &str, sample: &[usize]) -> Watch {
        let streams = sample
            .iter()
            .map(|&i| {
                let dests = dest_names(prefix, i)
                    .iter()
                    .map(|d| Player::start(dest.rtmp, d))
                    .collect();
                (Player::start(source.rtmp, &format!("s{i}")), dests)
            })
            .collect();
        Watch { streams }
    }

    /// Waits until every player has received a video frame.
    fn wait_receiving(&self, within: Duration) -> Result<()> {
        let until = Instant::now() + within;
        let players = || {
            self.streams
                .iter()
                .flat_map(|(s, d)| std::iter::once(s).chain(d))
        };
        while players().any(|p| p.snapshot().is_empty()) {
            if Instant::now() > until {
                bail!("a sampled player received no video in {within:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Stops the players and counts what each destination got of `sent` (the frames published
    /// in `[w0, w1]`).
    fn finish(self, sent: &[Sent], w0: Instant, w1: Instant) -> Delivery {
        let mut d = Delivery::default();
        for (source, dests) in self.streams {
            let source = source.finish();
            for p in dests {
                d.add(sent, &source, &p.finish(), w0, w1);
            }
        }
        d
    }
}

/// What the sampled destinations of one contender got.
#[derive(Debug, Default)]
struct Delivery {
    destinations: usize,
    expected: usize,
    received: usize,
    delays_ms: Vec<f64>,
}

impl Delivery {
    /// Adds one destination's tags: how many of `sent` arrived within [`ARRIVAL_WITHIN`], and the
    /// added delay of each tag it received in `[w0, w1]` against the `source` player.
    fn add(&mut self, sent: &[Sent], source: &[VTag], dest: &[VTag], w0: Instant, w1: Instant) {
        let mut arrivals: HashMap<u64, Vec<Instant>> = HashMap::new();
        for t in dest {
            arrivals.entry(t.hash).or_default().push(t.at);
        }
        let arrived = |s: &Sent| {
            arrivals
                .get(&s.hash)
                .is_some_and(|v| v.iter().any(|a| *a >= s.at && *a <= s.at + ARRIVAL_WITHIN))
        };
        self.destinations += 1;
        self.expected += sent.len();
        self.received += sent.iter().filter(|s| arrived(s)).count();
        let in_window: Vec<VTag> = dest
            .iter()
            .copied()
            .filter(|t| t.at >= w0 && t.at <= w1)
            .collect();
        self.delays_ms.extend(delays(source, &in_window));
    }

    /// `<prefix>_frames_expected` … into `line`.
    fn fields(&self, prefix: &str, min_kbps: f64, line: &mut Map<String, Value>) {
        let mut d = self.delays_ms.clone();
        let values = [
            ("sampled_destinations", json!(self.destinations)),
            ("frames_expected", json!(self.expected)),
            ("frames_received", json!(self.received)),
            ("frames_dropped", json!(self.expected - self.received)),
            ("delay_matched_frames", json!(d.len())),
            ("delay_p50_ms", json!(r2(percentile(&mut d, 0.5)))),
            ("delay_p99_ms", json!(r2(percentile(&mut d, 0.99)))),
            ("delay_max_ms", json!(r2(percentile(&mut d, 1.0)))),
            ("min_kbps_per_destination", json!(min_kbps.round())),
        ];
        line.extend(
            values
                .into_iter()
                .map(|(k, v)| (format!("{prefix}_{k}"), v)),
        );
    }
}
