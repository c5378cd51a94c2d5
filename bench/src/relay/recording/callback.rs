//! The `callback` phase of `relaycast-bench record`: issue 11's "time from the end of the
//! stream plus the resume timeout to the record callback", on the whole product path as a
//! user runs it.
//!
//! Per resume timeout (`--callback-resume`): a release `relaycast up` (all roles) on a fresh
//! data dir, an nginx-rtmp origin whose `on_publish`/`on_publish_done` go to relaycast's
//! nginx-rtmp hook, the push domain `ingest.test` pulled from that origin, a recording template
//! (HLS + MP4, `FlowContinueDuration` = the resume timeout, `RecordNotifyUrl` = a receiver in
//! this process) bound to the app `hooked`. Then per run (`--callback-runs`): the 720p source
//! published to `hooked/<stream>` for `--callback-secs`, the automatic recording waited for
//! until it stored a part of each format, the publisher killed at instant E, and the arrival of
//! each format's record callback (event 100) at the receiver timed from E + the resume timeout
//! (the figure) and from E (raw). relaycast's own log (JSON, info) splits the time: the
//! `on_publish_done` hook stored, the recorder ending the recording, each file finalized, each
//! media record made (the object notice handled, the callback queued).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use relaycast_core::ports::Ports;
use reqwest::Method;
use serde_json::{json, Value};

use super::super::{median, publisher, r3, Nginx};
use super::{open_ports, record_for, Ctx, BENCH};
use crate::callbacks::{Receiver, Service, ServiceConfig};
use crate::record::emit;

/// The push domain the origin's hook reports and the recording rule binds.
const DOMAIN: &str = "ingest.test";
/// The origin's application with the hooks (see [`Nginx::start_with_hooks`]).
const APP: &str = "hooked";
/// The templates' `CallbackKey`.
const RECORD_KEY: &str = "benchrecordkey";
/// The goal for the figure, seconds.
const GOAL_S: f64 = 2.0;
/// How long after E + the resume timeout the callbacks may take before the run fails.
const CALLBACK_LIMIT: Duration = Duration::from_secs(90);
/// The formats recorded, by their `file_format`.
const FORMATS: [&str; 2] = ["hls", "mp4"];

/// One run's figures: per format (in [`FORMATS`] order) the seconds from E + resume and from
/// E to the callback's arrival.
struct Run {
    resume_s: u32,
    from_resume: [f64; 2],
    from_end: [f64; 2],
}

/// relaycast's log lines (JSON) of the recording `id` after `since` (wall clock), each as
/// (seconds after `since`, line): the recording's own lines, and the media records of the
/// object keys its files were finalized to.
fn log_after(log: &Path, id: &str, since: SystemTime) -> Vec<(f64, Value)> {
    let since = chrono::DateTime::<chrono::Utc>::from(since);
    let lines: Vec<(f64, Value)> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let at = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok()?;
            let d = (at.to_utc() - since).num_microseconds()? as f64 / 1e6;
            Some((d, v))
        })
        // From E on (a second of slack): the stack's earlier runs logged before it.
        .filter(|(d, _)| *d >= -1.0)
        .collect();
    let keys: Vec<String> = lines
        .iter()
        .filter(|(_, v)| v["recording"] == id && v["message"] == "record file finalized")
        .filter_map(|(_, v)| v["key"].as_str().map(String::from))
        .collect();
    lines
        .into_iter()
        .filter(|(_, v)| {
            v["recording"] == id
                || v["key"]
                    .as_str()
                    .is_some_and(|k| keys.iter().any(|x| x == k))
        })
        .collect()
}

/// Seconds after E of the first line with `message` (and, if given, `format` or the object
/// key of that format's finalized file).
fn at_of(lines: &[(f64, Value)], message: &str, format: Option<&str>) -> Option<f64> {
    let key_of = |f: &str| {
        lines
            .iter()
            .find(|(_, v)| v["message"] == "record file finalized" && v["format"] == f)
            .and_then(|(_, v)| v["key"].as_str().map(String::from))
    };
    let key = format.and_then(key_of);
    lines
        .iter()
        .find(|(_, v)| {
            v["message"] == message
                && format.is_none_or(|f| {
                    v["format"] == f || key.as_deref().is_some_and(|k| v["key"] == k)
                })
        })
        .map(|(d, _)| r3(*d))
}

/// The stack of one resume timeout: relaycast, the hooked origin, the receiver, the binding.
struct Stack {
    svc: Service,
    dir: PathBuf,
    /// On relaycast's data dir: the recording's progress (its parts) is read there.
    ports: Ports,
    nginx: Nginx,
    receiver: Receiver,
}

impl Stack {
    fn start(ctx: &Ctx, bin: &Path, resume: u32) -> Result<Stack> {
        let dir = ctx.dir.path().join(format!("callback_resume{resume}"));
        let config = ServiceConfig {
            callbacks: String::new(),
            // The recorder's and the notice path's info lines split the latency.
            log_filter: "info",
            log_format: "json",
        };
        let svc = ctx
            .rt
            .block_on(Service::start_with(bin, &dir, "all", &config))?;
        let v1 = |method: Method, path: &str, body: Option<Value>| {
            ctx.rt.block_on(svc.v1(method, path, "", body))
        };
        let hooks = v1(Method::GET, "/v1/hooks", None)?;
        let hook = format!(
            "{}&domain={DOMAIN}",
            hooks["NginxRtmpUrl"]
                .as_str()
                .context("GET /v1/hooks: no NginxRtmpUrl")?
        );
        let nginx =
            Nginx::start_with_hooks(ctx.dir.path(), &format!("nginx_callback{resume}"), &hook)?;
        let receiver = ctx.rt.block_on(Receiver::start_keeping_bodies())?;
        let pull = format!("rtmp://127.0.0.1:{}/{{app}}/{{stream}}", nginx.rtmp);
        v1(
            Method::POST,
            "/v1/domains",
            Some(json!({ "DomainName": DOMAIN, "PullUrlTemplate": pull })),
        )?;
        let template = v1(
            Method::POST,
            "/v1/record-templates",
            Some(json!({
                "TemplateName": format!("callback{resume}"),
                "HlsParam": { "Enable": 1 },
                "Mp4Param": { "Enable": 1, "RecordInterval": super::MAX_FILE_SECS },
                "HlsSpecialParam": { "FlowContinueDuration": resume },
                "RecordNotifyUrl": receiver.url,
                "CallbackKey": RECORD_KEY,
            })),
        )?["TemplateId"]
            .as_u64()
            .context("POST /v1/record-templates: no TemplateId")?;
        v1(
            Method::POST,
            "/v1/record-rules",
            Some(json!({ "DomainName": DOMAIN, "AppName": APP, "TemplateId": template })),
        )?;
        let ports = open_ports(&dir.join("data"))?;
        Ok(Stack {
            svc,
            dir,
            ports,
            nginx,
            receiver,
        })
    }

    /// The automatic recording of `stream` (its `TaskId`), once `GET /v1/recordings` lists it.
    fn recording_of(&self, ctx: &Ctx, stream: &str, within: Duration) -> Result<String> {
        let until = Instant::now() + within;
        loop {
            let list = ctx
                .rt
                .block_on(self.svc.v1(Method::GET, "/v1/recordings", "", None))?;
            let found = list["Recordings"].as_array().and_then(|rs| {
                rs.iter()
                    .find(|r| r["StreamName"] == stream && r["Mode"] == "auto")
                    .and_then(|r| r["TaskId"].as_str().map(String::from))
            });
            if let Some(id) = found {
                return Ok(id);
            }
            if Instant::now() > until {
                bail!("no automatic recording of {stream} after {within:?}: {list}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The first arrival of each format's record callback (event 100) of `stream`.
    fn arrivals(&self, stream: &str) -> [Option<Instant>; 2] {
        let bodies = self.receiver.bodies();
        FORMATS.map(|f| {
            bodies
                .iter()
                .find(|(_, b)| {
                    b["event_type"] == 100 && b["stream_id"] == stream && b["file_format"] == f
                })
                .map(|(at, _)| *at)
        })
    }

    fn stop(self, ctx: &Ctx) {
        let Stack {
            svc,
            nginx,
            receiver,
            ..
        } = self;
        drop(nginx);
        drop(receiver);
        ctx.rt.block_on(svc.stop(Duration::from_secs(10)));
    }
}

fn one_run(ctx: &Ctx, stack: &Stack, resume: u32, run: usize) -> Result<Run> {
    let stream = format!("cb{resume}r{run}");
    let mut publisher = publisher(
        &ctx.file,
        &stack.nginx.hooked_url(&stream),
        &ctx.log(&format!("publisher_callback{resume}_{run}")),
    )?;
    let published = Instant::now();
    stack.nginx.wait_publishing(
        std::slice::from_ref(&stream),
        100_000,
        Duration::from_secs(20),
    )?;
    let id = stack.recording_of(ctx, &stream, Duration::from_secs(20))?;
    record_for(ctx, &stack.ports, &id, published, ctx.opts.callback_secs)?;
    // E: the stream ends (SIGKILL: the publisher's socket closes as the process dies, as a
    // crashed encoder's would; nginx then calls on_publish_done).
    let end = Instant::now();
    let end_wall = SystemTime::now();
    publisher.kill();
    let resume_at = end + Duration::from_secs(u64::from(resume));
    let limit = resume_at + CALLBACK_LIMIT;
    let arrived = loop {
        let a = stack.arrivals(&stream);
        if let [Some(h), Some(m)] = a {
            break [h, m];
        }
        if Instant::now() > limit {
            bail!(
                "record callbacks of {stream} (recording {id}) not all in {CALLBACK_LIMIT:?} after E + {resume} s: {a:?}; see {}",
                Service::log_path(&stack.dir).display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let from_resume = arrived.map(|a| signed_secs(a, resume_at));
    let from_end = arrived.map(|a| a.duration_since(end).as_secs_f64());
    // The log line of the last step may lag the callback by a write; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    let lines = log_after(&Service::log_path(&stack.dir), &id, end_wall);
    let took = |f: &str| {
        lines
            .iter()
            .find(|(_, v)| v["message"] == "record file finalized" && v["format"] == f)
            .and_then(|(_, v)| v["took_ms"].as_u64())
    };
    let mut per_format = serde_json::Map::new();
    for (i, f) in FORMATS.iter().enumerate() {
        per_format.insert(
            f.to_string(),
            json!({
                "from_end_plus_resume_s": r3(from_resume[i]), "from_end_s": r3(from_end[i]),
                "log_finalized_s": at_of(&lines, "record file finalized", Some(f)),
                "recorder_finalize_took_ms": took(f),
                "log_media_record_made_s": at_of(&lines, "media record made", Some(f)),
            }),
        );
    }
    emit(&json!({
        "bench": BENCH, "figure": "callback", "resume_s": resume, "run": run, "stream": stream, "recording": id,
        "published_s": r3(end.duration_since(published).as_secs_f64()),
        "formats": per_format,
        "log_from_end_s": {
            "stream_stopped_hook": at_of(&lines, "stream stopped; its recording ends after the resume timeout", None),
            "recording_ends": at_of(&lines, "recording ends", None),
            "recording_finished": at_of(&lines, "recording finished", None),
        },
        "loadavg": crate::record::loadavg(),
    }));
    println!(
        "# callback resume {resume} s run {run}: E + resume → hls {:.3} s, mp4 {:.3} s (E → {:.3} s, {:.3} s)",
        from_resume[0], from_resume[1], from_end[0], from_end[1]
    );
    Ok(Run {
        resume_s: resume,
        from_resume,
        from_end,
    })
}

/// `a - b` in seconds, negative when `a` came first.
fn signed_secs(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_secs_f64(),
        None => -b.duration_since(a).as_secs_f64(),
    }
}

/// Runs the phase: every resume timeout on a stack of its own, then one summary line each.
pub(super) fn phase_callback(ctx: &Ctx) -> Result<()> {
    let bin = ctx.relaycast_bin()?;
    let mut runs = Vec::new();
    for &resume in &ctx.opts.callback_resume {
        let stack = Stack::start(ctx, &bin, resume)?;
        let result = (1..=ctx.opts.callback_runs)
            .map(|run| one_run(ctx, &stack, resume, run))
            .collect::<Result<Vec<_>>>();
        stack.stop(ctx);
        runs.extend(result?);
    }
    for &resume in &ctx.opts.callback_resume {
        let rs: Vec<&Run> = runs.iter().filter(|r| r.resume_s == resume).collect();
        let mut line = json!({ "bench": BENCH, "figure": "callback summary", "resume_s": resume, "runs": rs.len(),
            "recording_s": ctx.opts.callback_secs, "goal_s": GOAL_S, "loadavg": crate::record::loadavg() });
        let mut human = Vec::new();
        for (i, f) in FORMATS.iter().enumerate() {
            let per: Vec<f64> = rs.iter().map(|r| r3(r.from_resume[i])).collect();
            let raw: Vec<f64> = rs.iter().map(|r| r3(r.from_end[i])).collect();
            let med = median(&mut per.clone());
            let max = per.iter().copied().fold(f64::MIN, f64::max);
            line[*f] = json!({
                "from_end_plus_resume_s": r3(med), "from_end_plus_resume_s_per_run": per,
                "from_end_s": r3(median(&mut raw.clone())), "from_end_s_per_run": raw,
                "goal_met_by_median": med <= GOAL_S, "goal_met_by_every_run": max <= GOAL_S,
            });
            human.push(format!(
                "{f} {med:.3} s (max {max:.3} s, goal ≤ {GOAL_S} s {})",
                if med <= GOAL_S { "met" } else { "NOT met" }
            ));
        }
        emit(&line);
        println!(
            "# callback summary, resume {resume} s, {} run(s): E + resume → callback, median {}",
            rs.len(),
            human.join("; ")
        );
    }
    Ok(())
}
