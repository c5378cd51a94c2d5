//! Where the JSON lines of a run go: stdout, and (by default) a file in the repository's
//! `docs/perf-data/`, named `<bench>-<UTC date>-<commit>.jsonl`, so that every figure quoted in
//! `docs/PERFORMANCE.md` has its raw data next to it and names the commit it was measured at.
//!
//! A run appends to the file: first a `run` line (commit, UTC time, command line, load
//! average), then the figures, then a `run end` line (time, load average, seconds).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::{json, Value};

struct Sink {
    file: Option<(File, PathBuf)>,
    started: Instant,
    bench: String,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Prints one JSON line and appends it to the run's file, if any.
pub fn emit(v: &Value) {
    println!("{v}");
    if let Ok(mut s) = SINK.lock() {
        if let Some(Sink {
            file: Some((f, _)), ..
        }) = s.as_mut()
        {
            let _ = writeln!(f, "{v}");
            let _ = f.flush();
        }
    }
}

/// `git rev-parse --short HEAD` in `dir`, and whether tracked files outside `docs/` differ from
/// it (the figures then do not belong to that commit alone).
fn git_commit(dir: &Path) -> (Option<String>, bool) {
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = out(&["rev-parse", "--short", "HEAD"]);
    let dirty = out(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":(exclude)docs",
    ])
    .is_some_and(|s| !s.is_empty());
    (commit, dirty)
}

fn git_toplevel() -> Option<PathBuf> {
    Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (`YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ`) now, in UTC.
pub fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    let date = format!("{y:04}-{m:02}-{d:02}");
    let iso = format!("{date}T{:02}:{:02}:{:02}Z", t / 3600, t / 60 % 60, t % 60);
    (date, iso)
}

pub fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Opens the run's record. `out`: an explicit file; otherwise `docs/perf-data/` of the git
/// work tree the bench runs in (nothing is written outside a relaycast checkout). `tag` is
/// added to the file name (`relay-2026-12-01-abc1234-quiet.jsonl`).
pub fn start(bench: &str, out: Option<PathBuf>, tag: Option<&str>, disabled: bool) -> Result<()> {
    let top = git_toplevel();
    let (commit, dirty) = top.as_deref().map(git_commit).unwrap_or((None, false));
    let (date, iso) = utc_now();
    let path = if disabled {
        None
    } else if let Some(p) = out {
        Some(p)
    } else {
        top.map(|t| t.join("docs/perf-data"))
            .filter(|d| d.is_dir())
            .map(|d| {
                let mut name =
                    format!("{bench}-{date}-{}", commit.as_deref().unwrap_or("nocommit"));
                if dirty {
                    name.push_str("-dirty");
                }
                if let Some(t) = tag {
                    name.push('-');
                    name.push_str(t);
                }
                d.join(format!("{name}.jsonl"))
            })
    };
    let file = match path {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .with_context(|| format!("opening {}", p.display()))?;
            eprintln!("# JSON lines also go to {}", p.display());
            Some((f, p))
        }
        None => None,
    };
    *SINK.lock().map_err(|_| anyhow::anyhow!("record lock"))? = Some(Sink {
        file,
        started: Instant::now(),
        bench: bench.to_string(),
    });
    emit(&json!({
        "bench": bench, "figure": "run", "commit": commit, "dirty": dirty, "utc": iso,
        "args": std::env::args().collect::<Vec<_>>(), "loadavg": loadavg(),
    }));
    Ok(())
}

/// The closing line of the run: time, load average, duration.
pub fn finish(ok: bool) {
    let (bench, secs) = match SINK.lock() {
        Ok(s) => match s.as_ref() {
            Some(s) => (s.bench.clone(), s.started.elapsed().as_secs_f64()),
            None => return,
        },
        Err(_) => return,
    };
    emit(&json!({
        "bench": bench, "figure": "run end", "ok": ok, "utc": utc_now().1, "loadavg": loadavg(),
        "seconds": (secs * 10.0).round() / 10.0,
    }));
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil(0), (1970, 1, 1));
        assert_eq!(super::civil(20_423), (2025, 12, 1));
        assert_eq!(super::civil(11_016), (2000, 2, 29));
    }
}
