//! `muster serve` as an operator meets it: flags it would ignore are refused, a
//! missing config file is one clear error, a failed start is a log line in the
//! configured format (JSON included) with "serving" never logged before it, JSON log
//! lines have one value per key, and every call gets one access line that the log
//! level can turn down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::de::{Deserializer, MapAccess, Visitor};

// Below the ephemeral range, away from the other binary tests' ports.
const POLICY: &str = "127.0.0.1:24051";
const POLICY_FAILING: &str = "127.0.0.1:24052";

fn muster() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_muster"));
    c.env_remove("RUST_LOG");
    c
}

/// The keys of a JSON object line, duplicates kept (serde_json's maps keep the last).
fn keys_of(line: &str) -> Vec<String> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut keys = Vec::new();
            while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(k);
            }
            Ok(keys)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    de.deserialize_map(Keys).unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"))
}

fn assert_json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut keys = keys_of(l);
            let n = keys.len();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), n, "a key appears twice: {l}");
            serde_json::from_str(l).unwrap()
        })
        .collect()
}

#[test]
fn flags_serve_would_ignore_are_refused() {
    let out = muster().args(["serve", "policy", "--policy-url", "http://x:1", "--timeout", "5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not use --policy-url, --timeout"), "{err}");
    assert!(err.contains("--config"), "{err}");
}

#[test]
fn a_missing_config_file_is_said_once() {
    let out = muster().args(["serve", "policy", "--config", "/nonexistent/policy.toml"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read config file /nonexistent/policy.toml"), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

#[test]
fn a_failed_start_is_a_json_log_line_and_never_says_serving() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("policy.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\ngrpc = \"{POLICY_FAILING}\"\nmetrics = \"\"\n[database]\nurl = \"postgres://postgres@127.0.0.1:1/none\"\n\
             [auth]\ntoken_sha256 = [\"{}\"]\n[log]\nformat = \"json\"\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let out = muster().args(["serve", "policy", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "nothing in plain text: {stderr}");
    let lines = assert_json_lines(&stdout);
    assert!(!lines.iter().any(|l| l["message"] == "serving"), "{stdout}");
    let fatal = lines.iter().find(|l| l["level"] == "ERROR").unwrap_or_else(|| panic!("no error line: {stdout}"));
    assert!(fatal["error"].as_str().unwrap().contains("127.0.0.1:1"), "{fatal}");
}

fn serve_policy(level: &str) -> (std::process::Child, std::sync::mpsc::Receiver<String>, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let token = "mst_serve_test_token";
    let hash = String::from_utf8(muster().args(["token", "hash", token]).output().unwrap().stdout).unwrap();
    let config = dir.path().join("policy.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\ngrpc = \"{POLICY}\"\nmetrics = \"\"\n[database]\nurl = \"sqlite://{}/policy.db\"\n\
             [auth]\ntoken_sha256 = [\"{}\"]\n[log]\nformat = \"json\"\nlevel = \"{level}\"\n",
            dir.path().display(),
            hash.trim()
        ),
    )
    .unwrap();
    let mut child = muster().args(["serve", "policy", "--config"]).arg(&config).stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx, dir, token.to_string())
}

fn lines_until(rx: &std::sync::mpsc::Receiver<String>, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("no {what:?} in {seen:#?}"));
        let done = line.contains(what);
        seen.push(line);
        if done {
            return seen;
        }
    }
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
}

#[test]
fn every_call_gets_one_access_line_that_the_level_can_turn_down() {
    let (child, rx, _dir, token) = serve_policy("info");
    let started = lines_until(&rx, "\"serving\"");
    let starting = started.iter().position(|l| l.contains("starting")).expect("a starting line");
    let serving = started.iter().position(|l| l.contains("\"serving\"")).unwrap();
    assert!(starting < serving, "{started:#?}");
    let out = muster()
        .args(["orgs", "list", "--policy-url", &format!("http://{POLICY}"), "--token", &token])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = lines_until(&rx, "ListOrgs");
    let access: Vec<serde_json::Value> =
        assert_json_lines(&lines.join("\n")).into_iter().filter(|l| l["target"] == "muster_access").collect();
    let call = access.iter().find(|l| l["method"].as_str().unwrap_or("").ends_with("/ListOrgs")).unwrap();
    assert_eq!(call["status"], "Ok");
    assert!(call["seconds"].is_number() && call["trace_id"].as_str().unwrap().len() == 32, "{call}");
    stop(child);

    // Turned down: the call still works, and no access line is written.
    let (child, rx, _dir, token) = serve_policy("info,muster_access=warn");
    lines_until(&rx, "\"serving\"");
    let out = muster()
        .args(["orgs", "list", "--policy-url", &format!("http://{POLICY}"), "--token", &token])
        .output()
        .unwrap();
    assert!(out.status.success());
    stop(child);
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(!rest.iter().any(|l| l.contains("muster_access")), "{rest:#?}");
}

#[test]
fn config_check_shows_the_effective_config_without_secrets_and_migrate_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("membership.db");
    let config = dir.path().join("membership.toml");
    std::fs::write(
        &config,
        format!("[database]\nurl = \"sqlite://{}\"\n[policy]\ntoken = \"mst_hunter2\"\n", db.display()),
    )
    .unwrap();
    let out = muster()
        .args(["config", "check", "membership", "--config"])
        .arg(&config)
        .env("MUSTER_MEMBERSHIP__LISTEN__SHUTDOWN_GRACE_SECS", "7")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains("mst_hunter2"), "{shown}");
    assert!(shown.contains("shutdown_grace_secs = 7"), "the environment layer applies: {shown}");
    let bad = muster().args(["config", "check", "membership", "--config", "/nonexistent.toml"]).output().unwrap();
    assert!(!bad.status.success());

    let out = muster().args(["migrate", "membership", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is migrated"));
    assert!(db.exists());
    let out = muster().arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("muster "));
}
