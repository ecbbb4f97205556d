//! The documentation checked against the code, so that it cannot drift:
//!
//! - every config key of every service, with its default, is in that service's
//!   reference block (`# <service>.toml: every key and its default`);
//! - every `section.key` the docs cite is a real key;
//! - the CLI's connection flags, their environment variables and defaults are as
//!   docs/operations.md's table says;
//! - every `muster …` command the README and the docs show names a real subcommand
//!   and real flags.
//!
//! A failure says which doc to change, and how.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const README: (&str, &str) = ("README.md", include_str!("../../../README.md"));
const OPERATIONS: (&str, &str) = ("docs/operations.md", include_str!("../../../docs/operations.md"));
const DIRECTORY_SYNC: (&str, &str) = ("docs/directory-sync.md", include_str!("../../../docs/directory-sync.md"));
/// Every doc whose commands and config keys are checked.
const DOCS: &[(&str, &str)] = &[
    README,
    OPERATIONS,
    DIRECTORY_SYNC,
    ("docs/architecture.md", include_str!("../../../docs/architecture.md")),
    ("docs/connectors.md", include_str!("../../../docs/connectors.md")),
    ("docs/members.md", include_str!("../../../docs/members.md")),
    ("docs/policy.md", include_str!("../../../docs/policy.md")),
    ("docs/scim.md", include_str!("../../../docs/scim.md")),
    ("docs/benchmarks.md", include_str!("../../../docs/benchmarks.md")),
];

/// A fenced code block: its language, its text, the line it starts on.
struct Block {
    lang: String,
    body: String,
    line: usize,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match open.take() {
            Some(b) if fence => out.push(b),
            Some(mut b) => {
                b.body.push_str(line);
                b.body.push('\n');
                open = Some(b);
            }
            None if fence => {
                let lang = line.trim_start().trim_start_matches('`').trim().to_string();
                open = Some(Block { lang, body: String::new(), line: i + 1 });
            }
            None => {}
        }
    }
    out
}

/// `section.key` (or `key` at the top) → value, for every leaf of a table.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => flatten(&path, inner, out),
            other => {
                out.insert(path, other.clone());
            }
        }
    }
}

/// A value as it is written in TOML (the `toml` crate is built here without its writer).
fn literal(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => format!("[{}]", items.iter().map(literal).collect::<Vec<_>>().join(", ")),
        toml::Value::Table(_) => "{ … }".into(),
    }
}

/// A service's config: its name, the doc with its reference block, its defaults.
struct Service {
    name: &'static str,
    doc: (&'static str, &'static str),
    rust_type: &'static str,
    defaults: BTreeMap<String, toml::Value>,
}

fn defaults_of<T: serde::Serialize>(config: T) -> BTreeMap<String, toml::Value> {
    let table = toml::Table::try_from(config).expect("a config serializes to TOML");
    let mut out = BTreeMap::new();
    flatten("", &table, &mut out);
    out
}

fn services() -> Vec<Service> {
    vec![
        Service {
            name: "policy",
            doc: OPERATIONS,
            rust_type: "muster_policy::PolicyConfig",
            defaults: defaults_of(muster_policy::PolicyConfig::default()),
        },
        Service {
            name: "membership",
            doc: OPERATIONS,
            rust_type: "muster_membership::MembershipConfig",
            defaults: defaults_of(muster_membership::MembershipConfig::default()),
        },
        Service {
            name: "directory-sync",
            doc: DIRECTORY_SYNC,
            rust_type: "muster_directory_sync::DirectorySyncConfig",
            defaults: defaults_of(muster_directory_sync::DirectorySyncConfig::default()),
        },
    ]
}

fn marker(service: &str) -> String {
    format!("# {service}.toml: every key and its default")
}

#[test]
fn every_config_key_is_documented_with_its_default() {
    let mut failures = Vec::new();
    for service in services() {
        let (path, text) = service.doc;
        let mark = marker(service.name);
        let found: Vec<Block> = blocks(text)
            .into_iter()
            .filter(|b| b.lang == "toml" && b.body.lines().next() == Some(mark.as_str()))
            .collect();
        let [block] = found.as_slice() else {
            failures.push(format!(
                "{path} must have exactly one ```toml block whose first line is `{mark}` (found {}): it lists every key of {} with its default",
                found.len(),
                service.rust_type
            ));
            continue;
        };
        let table: toml::Table = match block.body.parse() {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{path}:{}: the `{mark}` block is not valid TOML: {e}", block.line));
                continue;
            }
        };
        let mut documented = BTreeMap::new();
        flatten("", &table, &mut documented);
        let mut problems = Vec::new();
        for (key, default) in &service.defaults {
            match documented.get(key) {
                None => {
                    let (section, leaf) = key.rsplit_once('.').map_or(("", key.as_str()), |(s, l)| (s, l));
                    let place =
                        if section.is_empty() { "at the top".to_string() } else { format!("under [{section}]") };
                    problems.push(format!(
                        "`{key}` is missing: add `{leaf} = {}` {place}, with a comment saying what it does",
                        literal(default)
                    ));
                }
                Some(doc) if doc != default => problems.push(format!(
                    "`{key}` is shown as {}, but its default is {}",
                    literal(doc),
                    literal(default)
                )),
                Some(_) => {}
            }
        }
        for key in documented.keys().filter(|k| !service.defaults.contains_key(*k)) {
            problems
                .push(format!("`{key}` is not a key of {}: remove it (or add it to the struct)", service.rust_type));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{path}:{}: the `{mark}` block does not match {}::default():\n    - {}\n  Update the block in {path} (and the prose that cites the key).",
                block.line,
                service.rust_type,
                problems.join("\n    - ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Inline code spans (`…`) of a text.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

#[test]
fn config_keys_cited_in_the_docs_exist() {
    let services = services();
    let sections: BTreeSet<&str> =
        services.iter().flat_map(|s| s.defaults.keys()).filter_map(|k| k.split_once('.').map(|(s, _)| s)).collect();
    let keys: BTreeSet<&str> = services.iter().flat_map(|s| s.defaults.keys().map(String::as_str)).collect();
    let files = ["toml", "md", "rs", "db", "json", "sql", "txt", "sh", "py", "proto", "log", "dump"];
    // Dotted names that are not service config: the Okta connector's config fields,
    // and every connector's `http` settings (muster_connector::HttpSettings).
    let not_service = [
        "auth.token",
        "auth.private_key",
        "http.timeout_secs",
        "http.timeout_ms",
        "http.connect_timeout_secs",
        "http.max_attempts",
        "http.backoff_base_ms",
        "http.backoff_cap_ms",
        "http.max_wait_secs",
        "http.concurrency",
    ];
    let mut unknown = Vec::new();
    for (path, text) in DOCS {
        for span in code_spans(text) {
            let Some((section, leaf)) = span.split_once('.') else { continue };
            let is_key = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            if !sections.contains(section) || !is_key(leaf) || files.contains(&leaf) || not_service.contains(&span) {
                continue;
            }
            if !keys.contains(span) {
                unknown.push(format!("{path}: `{span}` is cited as a config key, but no service has it"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "\n{}\nEvery key is listed in the reference blocks of docs/operations.md and docs/directory-sync.md.",
        unknown.join("\n")
    );
}

fn muster(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_muster"));
    command.args(args);
    for (var, _) in std::env::vars().filter(|(v, _)| v.starts_with("MUSTER_")) {
        command.env_remove(var);
    }
    command.output().unwrap()
}

#[test]
fn the_cli_connection_flags_are_documented() {
    let (path, text) = OPERATIONS;
    let section = text.split("\n## The command line\n").nth(1).expect("docs/operations.md has `## The command line`");
    let section = section.split("\n## ").next().unwrap();
    let rows: Vec<Vec<String>> = section
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().trim_matches('`').to_string()).collect())
        .collect();
    assert!(rows.len() >= 6, "{path}: the table of the CLI's connection flags is missing");

    let help = String::from_utf8(muster(&["-h"]).stdout).unwrap();
    // One entry per option: `--flag <VALUE>`, then what it is `[env: VAR=] [default: X]`
    // on the same line or the lines below it.
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in help.split("Options:").nth(1).unwrap_or_default().lines().map(str::trim) {
        let starts = line.starts_with("--") || (line.starts_with('-') && line.contains(", --"));
        match entries.last_mut() {
            _ if starts => {
                let flag = line.split([' ', ',']).find(|w| w.starts_with("--")).unwrap_or_default().to_string();
                entries.push((flag, line.to_string()));
            }
            Some((_, text)) => {
                text.push(' ');
                text.push_str(line);
            }
            None => {}
        }
    }
    let entry = |flag: &str| entries.iter().find(|(f, _)| f == flag).map(|(_, text)| text.clone());
    let mut problems = Vec::new();
    for row in &rows {
        let [flag, env, default, _what] = &row[..] else {
            problems.push(format!("a row of four cells (flag, environment, default, what), not {row:?}"));
            continue;
        };
        let Some(line) = entry(flag) else {
            problems.push(format!("`{flag}` is documented but `muster -h` has no such option"));
            continue;
        };
        let env_shown = if env == "—" { None } else { Some(format!("[env: {env}")) };
        match env_shown {
            None if line.contains("[env:") => problems
                .push(format!("`{flag}` has an environment variable in `muster -h` ({line}); the table says none")),
            Some(shown) if !line.contains(&shown) => {
                problems.push(format!("`{flag}`: the table says {env}, `muster -h` says: {line}"))
            }
            _ => {}
        }
        let literal = !default.contains(' ') && default != "off";
        if literal && !line.contains(&format!("[default: {default}]")) {
            problems.push(format!("`{flag}`: the table says the default is {default}, `muster -h` says: {line}"));
        }
        if !literal && line.contains("[default:") {
            problems.push(format!("`{flag}`: the table describes the default, but `muster -h` shows one: {line}"));
        }
    }
    // And every global option is in the table.
    let documented: BTreeSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    for (flag, _) in &entries {
        if !["--help", "--version"].contains(&flag.as_str()) && !documented.contains(flag.as_str()) {
            problems.push(format!("`muster -h` has {flag}, the table does not"));
        }
    }
    assert!(problems.is_empty(), "{path}, `## The command line`:\n  - {}", problems.join("\n  - "));
}

/// The `muster` commands a line of shell shows: the words after each `muster`
/// (up to a pipe, `&&`, `;` or a closing parenthesis), with `a|b` alternatives
/// expanded.
fn commands_in(line: &str) -> Vec<Vec<String>> {
    let line = match line.find(" #") {
        Some(i) => &line[..i],
        None if line.trim_start().starts_with('#') => "",
        None => line,
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let word = word.trim_start_matches("$(").trim_start_matches('(');
        let after_package = i > 0 && ["-p", "--package", "--bin"].contains(&words[i - 1]);
        if !(word == "muster" || word.ends_with("/muster")) || after_package {
            continue;
        }
        let mut args = Vec::new();
        for w in &words[i + 1..] {
            if ["|", "||", "&&", ";", "&"].contains(w) || w.starts_with('>') || w.starts_with("2>") {
                break;
            }
            let ends = w.ends_with(')') && !w.contains('(');
            args.push(w.trim_end_matches(')').to_string());
            if ends {
                break;
            }
        }
        // Expand `pause|resume|delete` into one command each.
        let mut expanded = vec![Vec::new()];
        for arg in args {
            let alternatives: Vec<&str> =
                if arg.contains('|') && !arg.starts_with('-') { arg.split('|').collect() } else { vec![&arg] };
            expanded = expanded
                .into_iter()
                .flat_map(|prefix: Vec<String>| {
                    alternatives.iter().map(move |alt| {
                        let mut p = prefix.clone();
                        p.push(alt.to_string());
                        p
                    })
                })
                .collect();
        }
        out.extend(expanded);
    }
    out
}

#[test]
fn muster_commands_in_the_docs_exist() {
    // (doc, subcommand path) → the flags the doc uses with it.
    let mut uses: BTreeMap<Vec<String>, (String, BTreeSet<String>)> = BTreeMap::new();
    for (path, text) in DOCS {
        let mut lines: Vec<String> = Vec::new();
        for block in blocks(text).into_iter().filter(|b| ["sh", "bash", "shell"].contains(&b.lang.as_str())) {
            lines.extend(block.body.replace("\\\n", " ").lines().map(str::to_string));
        }
        lines.extend(code_spans(text).into_iter().filter(|s| s.starts_with("muster ")).map(str::to_string));
        for line in lines {
            for command in commands_in(&line) {
                let subcommand: Vec<String> = command
                    .iter()
                    .take_while(|w| {
                        !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-')
                    })
                    .cloned()
                    .collect();
                if subcommand.is_empty() {
                    continue;
                }
                let flags = command
                    .iter()
                    .map(|w| w.trim_start_matches('[').trim_end_matches(']'))
                    .filter(|w| w.starts_with("--") && w.len() > 2)
                    .map(|w| w.split('=').next().unwrap().to_string());
                let entry = uses.entry(subcommand).or_insert_with(|| (path.to_string(), BTreeSet::new()));
                entry.1.extend(flags);
            }
        }
    }
    assert!(uses.len() > 20, "the docs show muster commands: {uses:?}");
    let mut problems = Vec::new();
    for (subcommand, (doc, flags)) in &uses {
        let mut args: Vec<&str> = subcommand.iter().map(String::as_str).collect();
        args.push("--help");
        let out = muster(&args);
        let help = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            problems.push(format!(
                "{doc}: `muster {}` is not a command: {}",
                subcommand.join(" "),
                String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or_default()
            ));
            continue;
        }
        for flag in flags {
            let known =
                help.split_whitespace().any(|w| w.trim_end_matches(',') == flag || w.starts_with(&format!("{flag}=")));
            if !known {
                problems.push(format!("{doc}: `muster {} {flag}`: the command has no such flag", subcommand.join(" ")));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
