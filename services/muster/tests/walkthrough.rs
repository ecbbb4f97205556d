//! docs/operations.md's "Walkthrough: three services on PostgreSQL", run as written:
//! every `sh` block of that section, concatenated in order, in one bash session with
//! the real `muster` binary first on the PATH, against the PostgreSQL server of
//! `MUSTER_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! The test sets only the walkthrough's step-0 variables (`PG`, `DB`, `POLICY`,
//! `MEMBERSHIP`, `DIRECTORY`, `SCIM_ADDR`: free ports in 25xxx, fresh database
//! names, dropped afterwards). Lines starting with `#>` in those blocks are output
//! the test requires, in order. The doc and this test must change together: the
//! steps live in the doc, so edit them there; this file only runs them.
//!
//! When PostgreSQL (or bash, psql, pg_dump, pg_restore, curl, jq) is missing the
//! test is skipped with a note — unless `CI` is set, as for the end-to-end tests'
//! PostgreSQL variants: then it fails, so CI cannot pass without running it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DOC: &str = include_str!("../../../docs/operations.md");
const SECTION: &str = "## Walkthrough: three services on PostgreSQL";
/// Longest the whole walkthrough may take before it is stopped (it takes seconds).
const PATIENCE: Duration = Duration::from_secs(120);

/// The walkthrough's shell steps and the output they promise.
struct Walkthrough {
    script: String,
    expected: Vec<String>,
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn walkthrough() -> Walkthrough {
    let start = DOC.find(SECTION).unwrap_or_else(|| panic!("docs/operations.md has no section {SECTION:?}"));
    let rest = &DOC[start + SECTION.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let (mut script, mut expected, mut in_sh) = (String::new(), Vec::new(), false);
    for line in section.lines() {
        if in_sh {
            if line.starts_with("```") {
                in_sh = false;
                script.push('\n');
                continue;
            }
            if let Some(out) = line.strip_prefix("#>") {
                expected.push(normalize(out));
            }
            script.push_str(line);
            script.push('\n');
        } else if line.trim_end() == "```sh" {
            in_sh = true;
        }
    }
    assert!(!in_sh, "an sh block of the walkthrough is not closed");
    assert!(script.contains("muster serve directory-sync"), "the walkthrough starts the services:\n{script}");
    assert!(!expected.is_empty(), "the walkthrough shows output (`#>` lines) to check");
    Walkthrough { script, expected }
}

/// Skips (with a note) or, under CI, fails.
fn unavailable(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but {why}: the walkthrough must run");
    }
    eprintln!("walkthrough skipped: {why} (set CI=1 to make this fatal)");
}

fn postgres_admin_url() -> String {
    std::env::var("MUSTER_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn psql(url: &str, sql: &str) -> std::io::Result<std::process::Output> {
    Command::new("psql").arg(url).args(["-v", "ON_ERROR_STOP=1", "-qtAc", sql]).env("PGCONNECT_TIMEOUT", "5").output()
}

/// Four free ports in 25xxx (below the ephemeral range, unused by other tests: the
/// CLI test has 26051-26080, the SCIM compliance run 27xxx), consecutive from a base.
fn free_ports() -> [u16; 4] {
    for base in (25_100..25_900).step_by(10) {
        let ports = [base + 1, base + 2, base + 3, base + 4];
        if ports.iter().all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()) {
            return ports;
        }
    }
    panic!("no four free ports in 25100-25900");
}

/// The databases step 1 creates, dropped however the test ends.
struct Databases {
    admin: String,
    names: Vec<String>,
}

impl Drop for Databases {
    fn drop(&mut self) {
        for name in &self.names {
            match psql(&self.admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")) {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!("could not drop {name}: {}", String::from_utf8_lossy(&out.stderr)),
                Err(e) => eprintln!("could not drop {name}: {e}"),
            }
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn the_operations_walkthrough_runs_as_written() {
    let walk = walkthrough();
    for tool in ["bash", "psql", "pg_dump", "pg_restore", "curl", "jq"] {
        if Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return unavailable(&format!("`{tool}` is not installed"));
        }
    }
    let admin = postgres_admin_url();
    match psql(&admin, "SELECT 1") {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return unavailable(&format!(
                "PostgreSQL at {admin} is not reachable: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(e) => return unavailable(&format!("psql failed: {e}")),
    }
    let server = admin.rsplit_once('/').map(|(server, _)| server.to_string()).expect("a database URL");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let db = format!("muster_walk_{}_{nanos}", std::process::id());
    let _databases = Databases {
        admin: admin.clone(),
        names: ["policy", "membership", "directory_sync"].iter().map(|s| format!("{db}_{s}")).collect(),
    };
    let [policy, membership, directory, scim] = free_ports();

    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_muster")).parent().unwrap().to_path_buf();
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!("set -euo pipefail\n{}", walk.script))
        .current_dir(dir.path())
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("PG", &server)
        .env("DB", &db)
        .env("POLICY", format!("127.0.0.1:{policy}"))
        .env("MEMBERSHIP", format!("127.0.0.1:{membership}"))
        .env("DIRECTORY", format!("127.0.0.1:{directory}"))
        .env("SCIM_ADDR", format!("127.0.0.1:{scim}"))
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: the services it starts in the background are
        // stopped with it if a step fails.
        .process_group(0);
    for (var, _) in std::env::vars().filter(|(v, _)| v.starts_with("MUSTER_")) {
        command.env_remove(var);
    }
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let group = child.id();
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = reader(Box::new(child.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > PATIENCE {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let succeeded = status.is_some_and(|s| s.success());
    if !succeeded {
        // A failed step leaves the services running; they are in the script's group.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
        let _ = child.wait();
    }
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let logs = || {
        ["policy.log", "membership.log", "directory-sync.log"]
            .iter()
            .map(|f| format!("--- {f} (last lines)\n{}", tail(&dir.path().join(f))))
            .collect::<Vec<_>>()
            .join("\n")
    };
    match status {
        None => panic!(
            "the walkthrough did not finish within {PATIENCE:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n{}",
            logs()
        ),
        Some(s) if !s.success() => {
            panic!("the walkthrough failed ({s})\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n{}", logs())
        }
        Some(_) => {}
    }

    // Every `#>` line, in order, is (part of) a line the commands printed.
    let printed: Vec<String> = stdout.lines().map(normalize).collect();
    let mut at = 0;
    for want in &walk.expected {
        match printed[at..].iter().position(|line| line.contains(want.as_str())) {
            Some(i) => at += i + 1,
            None => panic!(
                "the walkthrough promises the output line {want:?} (docs/operations.md), but after line {at} of what it printed there is none\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
            ),
        }
    }
    eprintln!("walkthrough ran in {:.1} s", started.elapsed().as_secs_f64());
}
