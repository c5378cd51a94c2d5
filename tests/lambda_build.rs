//! The Lambda zips of `scripts/build-aws.sh` run on `provided.al2023`: every function's bootstrap
//! needs glibc 2.34 at most and links no SQLite. A debug build (`--debug`) to keep the test
//! quick; the release one differs only in optimisation, not in what it links.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The functions `infra/relaycast.yaml` deploys.
const FUNCTIONS: [&str; 5] = [
    "relaycast-api",
    "relaycast-callbacks",
    "relaycast-notifier",
    "relaycast-recordings",
    "relaycast-scheduler",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A build directory of its own beside this test's: the cargo running this test may still hold
/// the lock of its own, and the zig builds are of another target anyway.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/debug/deps/lambda_build-<hash>
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    target.join("aws-build")
}

#[test]
fn every_lambda_bootstrap_needs_glibc_2_34_at_most_and_links_no_sqlite() {
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let status = Command::new(repo().join("scripts/build-aws.sh"))
        .args(["--debug", "-p", "relaycast-functions", "--out"])
        .arg(out.path())
        .env("CARGO_TARGET_DIR", build_dir())
        // No debug info: the symbol table the SQLite check reads stays, and the build, the
        // links and the zips take much less time and disk.
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .current_dir(repo())
        .status()
        .expect("scripts/build-aws.sh runs");
    assert!(
        status.success(),
        "scripts/build-aws.sh --debug failed with {status} (its output is above)"
    );
    eprintln!("lambda build took {:?}", started.elapsed());

    for function in FUNCTIONS {
        let dir = out.path().join("lambda").join(function);
        let zip = dir.join("bootstrap.zip");
        let listing = Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist(): print(i.filename, oct(i.external_attr >> 16))",
            ])
            .arg(&zip)
            .output()
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", zip.display()));
        assert_eq!(
            String::from_utf8_lossy(&listing.stdout).trim(),
            "bootstrap 0o100755",
            "{function}: the zip holds one executable named bootstrap ({})",
            String::from_utf8_lossy(&listing.stderr)
        );

        let bootstrap = dir.join("bootstrap");
        let check = Command::new(repo().join("scripts/check-glibc.sh"))
            .args(["--max", "2.34"])
            .arg(&bootstrap)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{function} needs a newer glibc than provided.al2023's:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );

        // A debug binary keeps its symbol table: SQLite's functions would be in it.
        let nm = Command::new("nm")
            .arg("--defined-only")
            .arg(&bootstrap)
            .output()
            .expect("nm (binutils) runs");
        assert!(nm.status.success(), "nm {}", bootstrap.display());
        let symbols = String::from_utf8_lossy(&nm.stdout);
        let sqlite: Vec<&str> = symbols
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .filter(|s| s.starts_with("sqlite3_"))
            .take(5)
            .collect();
        assert!(
            sqlite.is_empty(),
            "{function} links SQLite (feature unification pulled the embedded adapters in): {sqlite:?}"
        );
    }
}

#[test]
fn check_glibc_names_the_symbols_above_the_limit() {
    // This test's own binary, linked here, needs some glibc; no glibc is version 1.0 or older.
    let exe = std::env::current_exe().unwrap();
    let check = Command::new(repo().join("scripts/check-glibc.sh"))
        .args(["--max", "1.0"])
        .arg(&exe)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with(&format!("{}: needs GLIBC_2.", exe.display()))
            && stdout.contains("@GLIBC_2."),
        "{stdout}"
    );

    let missing = Command::new(repo().join("scripts/check-glibc.sh"))
        .arg(repo().join("Cargo.toml"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not an ELF binary"));
}
