//! The binary as a person uses it: `muster up` on a fresh data directory, then the
//! README tour's commands against it, then SIGTERM for a graceful stop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

// Ports below the ephemeral range, away from the defaults and from the CI
// compliance run's 27xxx.
const POLICY: &str = "127.0.0.1:26051";
const MEMBERSHIP: &str = "127.0.0.1:26052";
const DIRECTORY: &str = "127.0.0.1:26053";
const SCIM: &str = "127.0.0.1:26080";

struct Up {
    child: Child,
    data: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Up {
    fn start() -> (Self, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(["up", "--data-dir"])
            .arg(&data)
            .args(["--policy-addr", POLICY, "--membership-addr", MEMBERSHIP, "--directory-addr", DIRECTORY])
            .args(["--scim-addr", SCIM, "--metrics-addr", ""])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    let done = line.starts_with("Ctrl-C stops");
                    lines.push(line);
                    if done {
                        break;
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    panic!("muster up did not finish starting ({e}): {lines:#?}");
                }
            }
        }
        (Self { child, data, _dir: dir }, lines)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(args)
            .arg("--data-dir")
            .arg(&self.data)
            .env("MUSTER_POLICY_URL", format!("http://{POLICY}"))
            .env("MUSTER_MEMBERSHIP_URL", format!("http://{MEMBERSHIP}"))
            .env("MUSTER_DIRECTORY_URL", format!("http://{DIRECTORY}"))
            .env_remove("MUSTER_TOKEN")
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// SIGTERM; it must exit cleanly within its shutdown grace (10 s).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("muster up was still running 10 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "muster up exits cleanly on SIGTERM: {status}");
    }
}

#[test]
fn the_readme_tour_works() {
    let (up, banner) = Up::start();
    let org_line = banner.iter().find(|l| l.contains("\"Acme Enterprise\"")).expect("the demo org is announced");
    let org = org_line.rsplit('(').next().unwrap().trim_end_matches(')').to_string();

    let orgs = up.json(&["orgs", "list"]);
    assert_eq!(orgs.as_array().unwrap().len(), 2, "the jit and the scim demo orgs: {orgs}");

    let decision = up.json(&["decide", "--org", &org, "--group", "acme-admins", "--group", "acme-engineering"]);
    assert_eq!(decision["role"], "Admin");
    assert_eq!(decision["seat_tier"], "Premium");

    let login = up.json(&["login", "--org", &org, "--email", "ada@acme.test", "--group", "acme-owners"]);
    assert_eq!(login["allowed"], true, "{login}");
    assert_eq!(login["member"]["role"], "Owner");

    let members = up.json(&["members", "list", &org]);
    assert_eq!(members[0]["email"], "ada@acme.test");

    // A rule broken is one clear sentence with the rule named, and a failing exit code.
    let refused = up.run(&["settings", "set-mode", &org, "manual"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.starts_with("error: ") && stderr.contains("agm_requires_jit_or_scim"), "{stderr}");

    // Without the admin token nothing is answered.
    let anonymous = Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["orgs", "list", "--token", "mst_wrong"])
        .env("MUSTER_POLICY_URL", format!("http://{POLICY}"))
        .output()
        .unwrap();
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("not authenticated"));

    // The demo SCIM directory: provisioning only until an administrator says otherwise.
    let dirs = up.json(&["directory", "list"]);
    let dir = dirs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(dirs[0]["authority"], "provisioning_only", "{dirs}");

    // The kinds come from the service's connector registry, not from a list in the CLI.
    let kinds = up.json(&["directory", "kinds"]);
    let names: Vec<&str> = kinds.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names[..4], ["scim", "okta", "entra", "google"], "{kinds}");
    assert_eq!(kinds[0]["pulled"], false);
    assert!(kinds[1]["secret_fields"].as_array().unwrap().contains(&serde_json::json!("auth.token")), "{kinds}");
    let parent = dirs[0]["parent_id"].as_str().unwrap().to_string();
    let typo = up.run(&["directory", "create", "--parent", &parent, "--kind", "okat", "--name", "Okta"]);
    assert!(!typo.status.success());
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(stderr.contains("kind_unknown") && stderr.contains("okta, entra, google"), "{stderr}");
    // A kind by name reaches the connector's own config check.
    let bad =
        up.run(&["directory", "create", "--parent", &parent, "--kind", "okta", "--name", "Okta", "--config", "{}"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("connector_config_invalid"));

    // `directory update` changes one brake field in place and keeps the others.
    let before = up.json(&["directory", "show", &dir]);
    let updated = up.json(&["directory", "update", &dir, "--name", "Acme IdP", "--brake-percent", "25"]);
    assert_eq!(updated["name"], "Acme IdP");
    assert_eq!(updated["brake"]["max_removal_percent"], 25);
    assert_eq!(updated["brake"]["min_removals"], before["brake"]["min_removals"]);
    assert_eq!(updated["brake"]["window_seconds"], before["brake"]["window_seconds"]);
    // Same validation as create: a clear refusal, nothing changed.
    let refused = up.run(&["directory", "update", &dir, "--interval", "300"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("interval_not_for_scim"));
    let nothing = up.run(&["directory", "update", &dir]);
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("nothing to change"));
    // And audited: a higher share is a looser brake, named as such, with who did it.
    let audit = up.json(&["directory", "audit", &dir]);
    assert_eq!(audit[0]["action"], "directory.brake_loosened", "{audit}");
    assert!(audit[0]["actor"].as_str().unwrap().contains("cli"), "{audit}");
    assert!(audit[0]["after"].as_str().unwrap().contains("Acme IdP"));

    // An Okta directory whose API hangs (it accepts connections and never answers):
    // its first pull is stuck when SIGTERM comes, and `stop` still demands an exit
    // within the grace.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let okta_url = format!("http://{}", hanging.local_addr().unwrap());
    let (seen_tx, seen_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hanging.incoming() {
            let Ok(conn) = conn else { break };
            held.push(conn);
            let _ = seen_tx.send(());
        }
    });
    let token = up._dir.path().join("okta-token");
    std::fs::write(&token, "00fake-token").unwrap();
    let config = up._dir.path().join("okta.toml");
    std::fs::write(
        &config,
        format!(
            "org_url = \"{okta_url}\"\nauth = {{ type = \"api_token\", token = {{ file = \"{}\" }} }}\n",
            token.display()
        ),
    )
    .unwrap();
    let parent = dirs[0]["parent_id"].as_str().unwrap().to_string();
    let created = up.run(
        &["directory", "create", "--parent", &parent, "--kind", "okta", "--name", "Okta", "--config"]
            .iter()
            .copied()
            .chain([config.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    seen_rx.recv_timeout(Duration::from_secs(30)).expect("the first pull reaches the (hanging) Okta API");

    up.stop();
}
