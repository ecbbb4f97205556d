//! `muster directory …`: directories, their mirror, sync runs, the brake, previews and
//! directory events — what directory-sync offers, for operators.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use muster_proto::common::v1 as common;
use muster_proto::directory::v1 as pb;
use muster_proto::policy::v1 as ppb;
use serde_json::{Value, json};

use super::Connection;
use super::policy_cmds::ts;
use crate::output::{Output, Table};

fn admin() -> Option<common::Actor> {
    Some(common::Actor { kind: Some(common::actor::Kind::AdminId("cli".into())) })
}

fn enum_name(s: &str, prefix: &str) -> String {
    s.trim_start_matches(prefix).to_lowercase()
}

/// A directory's kind by name; a service older than `kind_name` sends only the enum.
fn kind_name(d: &pb::Directory) -> String {
    if !d.kind_name.is_empty() {
        return d.kind_name.clone();
    }
    pb::DirectoryKind::try_from(d.kind).map(|k| enum_name(k.as_str_name(), "DIRECTORY_KIND_")).unwrap_or_default()
}

fn state_name(raw: i32) -> String {
    pb::DirectoryState::try_from(raw).map(|k| enum_name(k.as_str_name(), "DIRECTORY_STATE_")).unwrap_or_default()
}

fn run_state(raw: i32) -> String {
    pb::RunState::try_from(raw).map(|k| enum_name(k.as_str_name(), "RUN_STATE_")).unwrap_or_default()
}

fn trigger_name(raw: i32) -> String {
    pb::RunTrigger::try_from(raw).map(|k| enum_name(k.as_str_name(), "RUN_TRIGGER_")).unwrap_or_default()
}

fn phase_name(raw: i32) -> String {
    pb::RunPhase::try_from(raw).map(|k| enum_name(k.as_str_name(), "RUN_PHASE_")).unwrap_or_default()
}

fn authority_name(raw: i32) -> String {
    pb::DirectoryAuthority::try_from(raw)
        .map(|k| enum_name(k.as_str_name(), "DIRECTORY_AUTHORITY_"))
        .unwrap_or_default()
}

fn item_kind(raw: i32) -> String {
    pb::RunItemKind::try_from(raw).map(|k| enum_name(k.as_str_name(), "RUN_ITEM_KIND_")).unwrap_or_default()
}

/// Provisioning modes for a preview.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Manual.
    Manual,
    /// Just-in-time.
    Jit,
    /// SCIM.
    Scim,
}

/// `muster directory …`
#[derive(Subcommand, Debug)]
pub enum DirectoryCmd {
    /// Create a directory (for SCIM, prints the base URL and the token, once).
    Create {
        /// The parent org it serves.
        #[arg(long)]
        parent: String,
        /// The kind of IdP connection by name: `scim`, or a pull connector such as
        /// `okta`. The service checks it against its connector registry;
        /// `muster directory kinds` lists what it offers.
        #[arg(long, default_value = "scim")]
        kind: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Connector config: a TOML or JSON file (or inline JSON) with the connector's
        /// settings; secrets by reference only, `{ env = "VAR" }` or `{ file = "/path" }`.
        #[arg(long, default_value = "")]
        config: String,
        /// Seconds between pulls (pull kinds).
        #[arg(long, default_value_t = 0)]
        interval: u32,
        /// Brake: largest share of an org's members one run may remove, in percent.
        #[arg(long)]
        brake_percent: Option<u32>,
        /// Brake: fewer removals than this (within the window) never hold.
        #[arg(long)]
        brake_min: Option<u32>,
        /// Brake: removals of an org count over this many seconds (default 3600).
        #[arg(long)]
        brake_window: Option<u64>,
        /// SCIM: keep a log of raw SCIM requests (secrets stripped) this many days; 0 = off.
        #[arg(long, default_value_t = 0)]
        scim_log_days: u32,
    },
    /// Change a directory's name, connector config, pull interval, brake or SCIM log,
    /// in place (validated as at create; audited). Unset flags keep their value.
    Update {
        /// The directory.
        id: String,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// New connector config: a TOML or JSON file, or inline JSON (secrets by reference).
        #[arg(long)]
        config: Option<String>,
        /// New seconds between pulls (pull kinds; 0 = the service's default).
        #[arg(long)]
        interval: Option<u32>,
        /// Brake: largest share of an org's members removed within the window, in percent.
        #[arg(long)]
        brake_percent: Option<u32>,
        /// Brake: fewer removals than this (within the window) never hold.
        #[arg(long)]
        brake_min: Option<u32>,
        /// Brake: removals of an org count over this many seconds.
        #[arg(long)]
        brake_window: Option<u64>,
        /// SCIM: keep the SCIM request log this many days; 0 turns it off.
        #[arg(long)]
        scim_log_days: Option<u32>,
    },
    /// List directories.
    List {
        /// Only of this parent.
        #[arg(long, default_value = "")]
        parent: String,
    },
    /// A directory's status: state, last run, mirror counts, queue, last error.
    Show {
        /// The directory.
        id: String,
    },
    /// Stop reconciling (pushes are still mirrored and queued).
    Pause {
        /// The directory.
        id: String,
    },
    /// Reconcile again.
    Resume {
        /// The directory.
        id: String,
    },
    /// Delete a directory and its mirror.
    Delete {
        /// The directory.
        id: String,
    },
    /// Tests a pull directory's connection (credentials, scopes, app id) and says what is wrong.
    Test {
        /// The directory.
        id: String,
    },
    /// A new SCIM token (printed once); the old one stops working.
    RotateToken {
        /// The directory.
        id: String,
    },
    /// Make a directory authoritative: members no directory of the parent assigns are
    /// removed. Shows who that would remove; `--yes` makes the change.
    SetAuthoritative {
        /// The directory.
        id: String,
        /// Make the change (without it, only the preview is shown).
        #[arg(long)]
        yes: bool,
    },
    /// Make a directory provisioning-only: it removes only people it deactivates or deletes.
    SetProvisioningOnly {
        /// The directory.
        id: String,
    },
    /// A directory's audit log: who changed it, and how, newest first.
    Audit {
        /// The directory.
        id: String,
        /// Show at most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Sync now: reconcile every user and member, retry pending seats.
    Sync {
        /// The directory.
        id: String,
        /// Follow the run with a progress bar until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// A SCIM directory's logged SCIM requests, newest first (`--json` adds headers and
    /// bodies); `--set-days N` turns the log on for N days, 0 turns it off.
    ScimLog {
        /// The directory.
        id: String,
        /// Show at most this many requests.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Keep the log this many days (1 to 90), or 0 to turn it off, instead of listing.
        #[arg(long)]
        set_days: Option<u32>,
    },
    /// A directory's runs, newest first.
    Runs {
        /// The directory.
        id: String,
    },
    /// One run with its held and failed people.
    Run {
        /// The run.
        run_id: String,
    },
    /// Release a run held by the mass-removal brake: its removals are applied.
    Approve {
        /// The run.
        run_id: String,
    },
    /// End a held run without removing anyone.
    Reject {
        /// The run.
        run_id: String,
    },
    /// The mirror's users.
    Users {
        /// The directory.
        id: String,
        /// userName or email prefix.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// The mirror's groups.
    Groups {
        /// The directory.
        id: String,
        /// Name prefix.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Follow directory events from a sequence.
    Events {
        /// Only this directory.
        #[arg(long, default_value = "")]
        directory: String,
        /// Start after this sequence (0: from the oldest kept).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// What saving these settings for an org would do, as a diff. Saves nothing.
    Preview(PreviewArgs),
    /// How far reconciliation is behind.
    Lag {
        /// One directory, or all.
        #[arg(long, default_value = "")]
        directory: String,
    },
    /// The directory kinds the service offers (its connector registry): what
    /// `create --kind` takes, and which config fields must be secret references.
    Kinds,
}

/// `muster directory preview`
#[derive(Args, Debug)]
pub struct PreviewArgs {
    /// The org.
    pub org: String,
    /// Provisioning mode.
    #[arg(long, value_enum, default_value = "scim")]
    pub mode: ModeArg,
    /// Turn advanced group mapping on.
    #[arg(long)]
    pub agm: bool,
    /// ROLE=GROUP_NAME, repeatable.
    #[arg(long = "map-role")]
    pub map_role: Vec<String>,
    /// TIER=GROUP_NAME, repeatable.
    #[arg(long = "map-tier")]
    pub map_tier: Vec<String>,
    /// The member making the change (for the guardian warning).
    #[arg(long, default_value = "")]
    pub acting_member: String,
    /// Or who is saving, by email (for the same warning).
    #[arg(long = "as", default_value = "")]
    pub acting_as: String,
}

fn directory_json(d: &pb::Directory) -> Value {
    let brake = d.brake.unwrap_or_default();
    json!({
        "id": d.id, "parent_id": d.parent_id, "kind": kind_name(d), "name": d.display_name,
        "state": state_name(d.state), "scim_base_url": d.scim_base_url, "config": d.config_json,
        "sync_interval_seconds": d.sync_interval_seconds, "scim_log_days": d.scim_log_days,
        "brake": {"max_removal_percent": brake.max_removal_percent, "min_removals": brake.min_removals,
                  "window_seconds": brake.window_seconds},
        "authority": authority_name(d.authority), "removes_unknown": d.removes_unknown,
        "proven_time": ts(&d.proven_time),
    })
}

/// What a directory's authority means now, in a phrase.
fn authority_text(d: &pb::Directory) -> String {
    match (authority_name(d.authority).as_str(), d.removes_unknown) {
        ("authoritative", true) => "authoritative: members no directory of the parent assigns are removed".into(),
        ("authoritative", false) => {
            "authoritative once its first full listing completes; until then it removes only people it deactivates or deletes"
                .into()
        }
        _ => format!(
            "provisioning only: removes only people it deactivates or deletes (`muster directory set-authoritative {}`)",
            d.id
        ),
    }
}

fn scim_request_json(r: &pb::ScimRequestLog) -> Value {
    let headers: serde_json::Map<String, Value> =
        r.request_headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    json!({
        "id": r.id, "directory_id": r.directory_id, "time": ts(&r.time), "method": r.method, "path": r.path,
        "status": r.status, "duration_ms": r.duration_ms, "request_headers": headers,
        "request_body": r.request_body, "request_body_truncated": r.request_body_truncated,
        "response_body": r.response_body, "response_body_truncated": r.response_body_truncated,
    })
}

fn counts_line(c: &Option<pb::RunCounts>) -> String {
    let c = (*c).unwrap_or_default();
    let mut s = format!(
        "created {}, updated {}, removed {}, pending seat {}, held {}, errors {}, unchanged {}",
        c.created, c.updated, c.removed, c.pending_seat, c.held, c.errors, c.unchanged
    );
    if c.kept > 0 {
        s.push_str(&format!(", kept {}", c.kept));
    }
    s
}

fn run_json(r: &pb::SyncRun) -> Value {
    let c = r.counts.unwrap_or_default();
    json!({
        "id": r.id, "directory_id": r.directory_id, "trigger": trigger_name(r.trigger), "state": run_state(r.state),
        "counts": {"created": c.created, "updated": c.updated, "removed": c.removed, "pending_seat": c.pending_seat,
                   "held": c.held, "errors": c.errors, "unchanged": c.unchanged, "kept": c.kept},
        "orgs": r.orgs.iter().map(|o| json!({"org_id": o.org_id, "brake_held": o.brake_held,
            "removals_decided": o.removals_decided, "members_at_check": o.members_at_check,
            "removed_in_window": o.removed_in_window, "held_in_run": o.held_in_run})).collect::<Vec<_>>(),
        "outcome": r.outcome, "error": r.error, "processed": r.processed, "total": r.total,
        "phase": phase_name(r.phase), "listing_held": r.listing_held, "actor": r.actor,
        "items": r.items.iter().map(|i| json!({"org_id": i.org_id, "user_ref": i.user_ref, "email": i.email,
            "member_id": i.member_id, "kind": item_kind(i.kind), "detail": i.detail})).collect::<Vec<_>>(),
        "items_total": r.items_total, "start_time": ts(&r.start_time), "end_time": ts(&r.end_time),
        "decided_by": r.decided_by,
    })
}

fn run_text(r: &pb::SyncRun) -> String {
    let mut s = format!(
        "run {}  ({}, {})\n  started {}  ended {}\n  {}\n  {}",
        r.id,
        trigger_name(r.trigger),
        run_state(r.state),
        ts(&r.start_time),
        if r.end_time.is_some() { ts(&r.end_time) } else { "-".into() },
        counts_line(&r.counts),
        r.outcome
    );
    if !r.error.is_empty() {
        s.push_str(&format!("\n  error: {}", r.error));
    }
    for o in r.orgs.iter().filter(|o| o.brake_held) {
        s.push_str(&format!(
            "\n  org {}: {} removals held by the brake ({} members, {} removed within the window before) — `muster directory approve {}` or `reject`",
            o.org_id, o.removals_decided, o.members_at_check, o.removed_in_window, r.id
        ));
    }
    for o in r.orgs.iter().filter(|o| !o.held_in_run.is_empty()) {
        s.push_str(&format!(
            "\n  org {}: its removals joined run {}, which the brake holds — `muster directory approve {}`",
            o.org_id, o.held_in_run, o.held_in_run
        ));
    }
    if r.listing_held {
        s.push_str(&format!(
            "\n  the full listing looked wrong: nothing it left out was removed — `muster directory approve {}` applies it, `reject` keeps the mirror as it was",
            r.id
        ));
    }
    if !r.items.is_empty() {
        let mut t = Table::new(&["org", "person", "email", "why listed", "detail"]);
        for i in &r.items {
            t.row(vec![i.org_id.clone(), i.user_ref.clone(), i.email.clone(), item_kind(i.kind), i.detail.clone()]);
        }
        s.push_str(&format!("\n\n{}", t.render()));
        if r.items_total > r.items.len() as i64 {
            s.push_str(&format!("\n  … {} in all", r.items_total));
        }
    }
    s
}

/// One line of progress: what the run is doing, with a bar when the total is known.
fn progress_line(r: &pb::SyncRun) -> String {
    let waiting = if r.error.is_empty() { String::new() } else { format!("  {}", r.error) };
    let phase = pb::RunPhase::try_from(r.phase).unwrap_or(pb::RunPhase::Unspecified);
    match phase {
        pb::RunPhase::WaitingForLease => format!("{}{waiting}", r.outcome),
        pb::RunPhase::Listing => format!("listing the IdP: {} users so far{waiting}", r.processed),
        pb::RunPhase::Reconciling | pb::RunPhase::Removing if r.total > 0 => {
            let width = 30usize;
            let filled = ((r.processed.min(r.total) * width as i64) / r.total) as usize;
            format!(
                "[{}{}] {}/{} {}{waiting}",
                "#".repeat(filled),
                ".".repeat(width - filled),
                r.processed,
                r.total,
                phase_name(r.phase)
            )
        }
        pb::RunPhase::Done => run_state(r.state),
        _ => format!("{}{waiting}", if r.processed > 0 { phase_name(r.phase) } else { "starting".into() }),
    }
}

fn progress_bar(r: &pb::SyncRun) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r{}\x1b[K", progress_line(r));
    let _ = err.flush();
}

fn mapping(raw: &str, what: &str) -> anyhow::Result<(String, common::GroupRef)> {
    let (target, group) = raw
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--map-{what} takes {}=GROUP_NAME, got {raw}", what.to_uppercase()))?;
    Ok((target.trim().to_string(), common::GroupRef { id: String::new(), name: group.trim().to_string() }))
}

fn change_rows(t: &mut Table, what: &str, changes: &[pb::PreviewChange]) {
    for c in changes {
        let role = match (c.from_role.as_str(), c.to_role.as_str()) {
            ("", to) => format!("+ {to}"),
            (from, "") => format!("{from} -"),
            (from, to) if from == to => from.to_string(),
            (from, to) => format!("{from} -> {to}"),
        };
        let tier = match (c.from_seat_tier.as_str(), c.to_seat_tier.as_str()) {
            (from, to) if from == to => from.to_string(),
            ("", to) => to.to_string(),
            (from, "") => from.to_string(),
            (from, to) => format!("{from} -> {to}"),
        };
        t.row(vec![what.to_string(), c.email.clone(), role, tier, c.reasons.join("; ")]);
    }
}

fn print_authority(out: &Output, r: &pb::SetDirectoryAuthorityResponse, applied: bool, id: &str) {
    let dir = r.directory.clone().unwrap_or_default();
    let orgs: Vec<Value> = r
        .orgs
        .iter()
        .map(|o| {
            json!({"org_id": o.org_id, "would_trip_brake": o.would_trip_brake,
                   "removed": o.removed.iter().map(|c| json!({"email": c.email, "role": c.from_role, "reasons": c.reasons})).collect::<Vec<_>>()})
        })
        .collect();
    let mut v = directory_json(&dir);
    v["orgs"] = json!(orgs);
    v["run_id"] = json!(r.run_id);
    v["applied"] = json!(applied);
    out.print(v, || {
        let mut t = Table::new(&["org", "email", "role", "why"]);
        for o in &r.orgs {
            for c in &o.removed {
                t.row(vec![o.org_id.clone(), c.email.clone(), c.from_role.clone(), c.reasons.join("; ")]);
            }
        }
        let n: usize = r.orgs.iter().map(|o| o.removed.len()).sum();
        let mut s = if n == 0 {
            "making it authoritative removes nobody now".to_string()
        } else {
            format!("making it authoritative would remove {n} members:\n\n{}", t.render())
        };
        for o in r.orgs.iter().filter(|o| o.would_trip_brake) {
            s.push_str(&format!(
                "\nwarning: org {}: more than the brake allows; the run would be held for approval",
                o.org_id
            ));
        }
        if applied {
            s.push_str(&format!("\n\ndirectory {}: {}", dir.id, authority_text(&dir)));
            if !r.run_id.is_empty() {
                s.push_str(&format!("\nrun {} reconciles it (`muster directory run {}`)", r.run_id, r.run_id));
            }
        } else {
            s.push_str(&format!(
                "\n\nnothing changed: `muster directory set-authoritative {id} --yes` makes the change"
            ));
        }
        s
    });
}

/// The connector config as JSON text: `arg` names a TOML or JSON file, or is inline
/// JSON (or empty). The service refuses inline secrets, so a file holds references only.
fn connector_config(arg: &str) -> anyhow::Result<String> {
    let trimmed = arg.trim();
    if trimmed.is_empty() || trimmed.starts_with('{') {
        return Ok(trimmed.to_string());
    }
    let text = std::fs::read_to_string(trimmed)
        .map_err(|e| anyhow::anyhow!("cannot read the connector config {trimmed}: {e}"))?;
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        return Ok(v.to_string());
    }
    let v: toml::Value =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{trimmed} is neither JSON nor TOML: {e}"))?;
    Ok(serde_json::to_value(v)?.to_string())
}

/// Runs a `muster directory` command.
pub async fn directory(conn: &Connection, out: Output, cmd: DirectoryCmd) -> anyhow::Result<()> {
    let mut d = conn.directory()?;
    match cmd {
        DirectoryCmd::Create {
            parent,
            kind,
            name,
            config,
            interval,
            brake_percent,
            brake_min,
            brake_window,
            scim_log_days,
        } => {
            let config = connector_config(&config)?;
            let r = d
                .create_directory(pb::CreateDirectoryRequest {
                    parent_id: parent,
                    kind: pb::DirectoryKind::Unspecified as i32,
                    kind_name: kind,
                    display_name: name,
                    config_json: config,
                    sync_interval_seconds: interval,
                    brake: Some(pb::BrakeSettings {
                        max_removal_percent: brake_percent,
                        min_removals: brake_min,
                        window_seconds: brake_window,
                    }),
                    scim_log_days,
                    actor: admin(),
                })
                .await?
                .into_inner();
            let dir = r.directory.unwrap_or_default();
            let mut v = directory_json(&dir);
            v["scim_token"] = json!(r.scim_token);
            out.print(v, || {
                let mut s = format!("directory {} ({}) created\n  {}", dir.id, kind_name(&dir), authority_text(&dir));
                if !r.scim_token.is_empty() {
                    s.push_str(&format!(
                        "\n  SCIM base URL  {}\n  SCIM token     {}\n  (the token is shown only now; `muster directory rotate-token {}` makes a new one)",
                        dir.scim_base_url, r.scim_token, dir.id
                    ));
                }
                s
            });
        }
        DirectoryCmd::Update { id, name, config, interval, brake_percent, brake_min, brake_window, scim_log_days } => {
            // A brake flag changes that field only: the others keep the directory's
            // current values (the RPC would reset unset fields to the defaults).
            let brake = if brake_percent.is_some() || brake_min.is_some() || brake_window.is_some() {
                let now = d
                    .get_directory(pb::GetDirectoryRequest { id: id.clone() })
                    .await?
                    .into_inner()
                    .brake
                    .unwrap_or_default();
                Some(pb::BrakeSettings {
                    max_removal_percent: brake_percent.or(now.max_removal_percent),
                    min_removals: brake_min.or(now.min_removals),
                    window_seconds: brake_window.or(now.window_seconds),
                })
            } else {
                None
            };
            let config_json = config.as_deref().map(connector_config).transpose()?;
            if name.is_none()
                && config_json.is_none()
                && interval.is_none()
                && brake.is_none()
                && scim_log_days.is_none()
            {
                anyhow::bail!("nothing to change: pass --name, --config, --interval, --brake-* or --scim-log-days");
            }
            let dir = d
                .update_directory(pb::UpdateDirectoryRequest {
                    id,
                    display_name: name,
                    config_json,
                    sync_interval_seconds: interval,
                    brake,
                    scim_log_days,
                    actor: admin(),
                })
                .await?
                .into_inner();
            let v = directory_json(&dir);
            out.print(v, || format!("directory {} ({}) updated\n  {}", dir.id, kind_name(&dir), authority_text(&dir)));
        }
        DirectoryCmd::List { parent } => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = d
                    .list_directories(pb::ListDirectoriesRequest {
                        parent_id: parent.clone(),
                        page_size: 1000,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                all.extend(page.directories);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            out.print(json!(all.iter().map(directory_json).collect::<Vec<_>>()), || {
                let mut t = Table::new(&["id", "kind", "name", "state", "parent", "scim base url"]);
                for x in &all {
                    t.row(vec![
                        x.id.clone(),
                        kind_name(x),
                        x.display_name.clone(),
                        state_name(x.state),
                        x.parent_id.clone(),
                        x.scim_base_url.clone(),
                    ]);
                }
                t.render()
            });
        }
        DirectoryCmd::Show { id } => {
            let s = d.get_directory_status(pb::GetDirectoryStatusRequest { id }).await?.into_inner();
            let dir = s.directory.clone().unwrap_or_default();
            let mut v = directory_json(&dir);
            v["users"] = json!(s.users);
            v["active_users"] = json!(s.active_users);
            v["groups"] = json!(s.groups);
            v["queued"] = json!(s.queued);
            v["held_runs"] = json!(s.held_runs);
            v["last_error"] = json!(s.last_error);
            v["last_run"] = s.last_run.as_ref().map(run_json).unwrap_or(Value::Null);
            out.print(v, || {
                let brake = dir.brake.unwrap_or_default();
                let mut text = format!(
                    "{} ({}, {})  {}\n  parent      {}\n  scim url    {}\n  mirror      {} users ({} active), {} groups\n  queued      {}\n  held runs   {}\n  brake       more than {}% of an org and at least {} people within {} s\n  authority   {}",
                    dir.display_name,
                    kind_name(&dir),
                    state_name(dir.state),
                    dir.id,
                    dir.parent_id,
                    if dir.scim_base_url.is_empty() { "-" } else { &dir.scim_base_url },
                    s.users,
                    s.active_users,
                    s.groups,
                    s.queued,
                    s.held_runs,
                    brake.max_removal_percent.unwrap_or(10),
                    brake.min_removals.unwrap_or(10),
                    brake.window_seconds.unwrap_or(3600),
                    authority_text(&dir)
                );
                if dir.scim_log_days > 0 {
                    text.push_str(&format!("\n  scim log    kept {} days (`muster directory scim-log {}`)", dir.scim_log_days, dir.id));
                }
                if !s.last_error.is_empty() {
                    text.push_str(&format!("\n  last error  {}", s.last_error));
                }
                if let Some(r) = &s.last_run {
                    text.push_str(&format!("\n\nlast {}", run_text(r)));
                }
                text
            });
        }
        DirectoryCmd::Pause { id } => {
            let dir = d.pause_directory(pb::PauseDirectoryRequest { id, actor: admin() }).await?.into_inner();
            out.print(directory_json(&dir), || {
                format!("directory {} paused: pushes are queued, not reconciled", dir.id)
            });
        }
        DirectoryCmd::Resume { id } => {
            let dir = d.resume_directory(pb::ResumeDirectoryRequest { id, actor: admin() }).await?.into_inner();
            out.print(directory_json(&dir), || format!("directory {} resumed", dir.id));
        }
        DirectoryCmd::Delete { id } => {
            d.delete_directory(pb::DeleteDirectoryRequest { id: id.clone(), actor: admin() }).await?;
            out.print(json!({"deleted": id}), || format!("directory {id} deleted"));
        }
        DirectoryCmd::Test { id } => {
            let r = d.test_directory(pb::TestDirectoryRequest { id: id.clone() }).await?.into_inner();
            out.print(json!({"id": id, "ok": r.ok, "problem": r.problem, "message": r.message}), || {
                if r.ok { format!("ok: {}", r.message) } else { format!("{}: {}", r.problem, r.message) }
            });
            if !r.ok {
                anyhow::bail!("directory {id}: the connection test failed ({})", r.problem);
            }
        }
        DirectoryCmd::RotateToken { id } => {
            let r = d.rotate_scim_token(pb::RotateScimTokenRequest { id, actor: admin() }).await?.into_inner();
            out.print(json!({"scim_base_url": r.scim_base_url, "scim_token": r.scim_token}), || {
                format!(
                    "SCIM base URL  {}\nSCIM token     {}\n(shown only now; the old token no longer works)",
                    r.scim_base_url, r.scim_token
                )
            });
        }
        DirectoryCmd::SetAuthoritative { id, yes } => {
            let r = d
                .set_directory_authority(pb::SetDirectoryAuthorityRequest {
                    id: id.clone(),
                    authority: pb::DirectoryAuthority::Authoritative as i32,
                    dry_run: !yes,
                    actor: admin(),
                })
                .await?
                .into_inner();
            print_authority(&out, &r, yes, &id);
        }
        DirectoryCmd::SetProvisioningOnly { id } => {
            let r = d
                .set_directory_authority(pb::SetDirectoryAuthorityRequest {
                    id: id.clone(),
                    authority: pb::DirectoryAuthority::ProvisioningOnly as i32,
                    dry_run: false,
                    actor: admin(),
                })
                .await?
                .into_inner();
            let dir = r.directory.unwrap_or_default();
            out.print(directory_json(&dir), || format!("directory {}: {}", dir.id, authority_text(&dir)));
        }
        DirectoryCmd::Audit { id, limit } => {
            let mut all = Vec::new();
            let mut token = String::new();
            while all.len() < limit {
                let page = d
                    .list_directory_audit(pb::ListDirectoryAuditRequest {
                        directory_id: id.clone(),
                        page_size: i32::try_from(limit - all.len()).unwrap_or(1000).min(1000),
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                all.extend(page.entries);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            let rows: Vec<Value> = all
                .iter()
                .map(|e| {
                    json!({"sequence": e.sequence, "time": ts(&e.time), "action": e.action, "actor": e.actor,
                                "before": e.before_json, "after": e.after_json})
                })
                .collect();
            out.print(json!(rows), || {
                let mut t = Table::new(&["time", "action", "actor"]);
                for e in &all {
                    t.row(vec![ts(&e.time), e.action.clone(), e.actor.clone()]);
                }
                t.render()
            });
        }
        DirectoryCmd::Sync { id, wait } => {
            let mut stream =
                d.sync_now(pb::SyncNowRequest { directory_id: id, wait, actor: admin() }).await?.into_inner();
            let mut last = None;
            while let Some(p) = stream.message().await? {
                if let Some(r) = &p.run
                    && wait
                    && !out.json
                {
                    progress_bar(r);
                }
                let done = p.done;
                last = p.run;
                if done {
                    break;
                }
            }
            if wait && !out.json {
                eprintln!();
            }
            let run = last.unwrap_or_default();
            out.print(run_json(&run), || run_text(&run));
        }
        DirectoryCmd::Runs { id } => {
            let runs = d
                .list_sync_runs(pb::ListSyncRunsRequest { directory_id: id, page_size: 100, page_token: String::new() })
                .await?
                .into_inner()
                .runs;
            out.print(json!(runs.iter().map(run_json).collect::<Vec<_>>()), || {
                let mut t = Table::new(&["id", "trigger", "state", "started", "counts"]);
                for r in &runs {
                    t.row(vec![
                        r.id.clone(),
                        trigger_name(r.trigger),
                        run_state(r.state),
                        ts(&r.start_time),
                        counts_line(&r.counts),
                    ]);
                }
                t.render()
            });
        }
        DirectoryCmd::ScimLog { id, limit, set_days } => {
            if let Some(days) = set_days {
                let dir = d
                    .update_directory(pb::UpdateDirectoryRequest {
                        id,
                        scim_log_days: Some(days),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                out.print(directory_json(&dir), || match dir.scim_log_days {
                    0 => format!("directory {}: scim request log off (what it kept goes at the next prune)", dir.id),
                    n => format!("directory {}: scim requests logged, kept {n} days (secrets stripped)", dir.id),
                });
                return Ok(());
            }
            let mut all = Vec::new();
            let mut token = String::new();
            while all.len() < limit {
                let page = d
                    .list_scim_requests(pb::ListScimRequestsRequest {
                        directory_id: id.clone(),
                        page_size: i32::try_from(limit - all.len()).unwrap_or(1000).min(1000),
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                all.extend(page.requests);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            out.print(json!(all.iter().map(scim_request_json).collect::<Vec<_>>()), || {
                if all.is_empty() {
                    return format!(
                        "no SCIM requests logged for {id} (the log is off unless `muster directory scim-log {id} --set-days N`)"
                    );
                }
                let mut t = Table::new(&["time", "method", "path", "status", "duration"]);
                for r in &all {
                    t.row(vec![
                        ts(&r.time),
                        r.method.clone(),
                        // The directory's base URL is the same on every row.
                        r.path.strip_prefix(&format!("/scim/v2/{}", r.directory_id)).unwrap_or(&r.path).to_string(),
                        r.status.to_string(),
                        format!("{:.1} ms", r.duration_ms),
                    ]);
                }
                t.render()
            });
        }
        DirectoryCmd::Run { run_id } => {
            let r = d.get_sync_run(pb::GetSyncRunRequest { run_id }).await?.into_inner();
            out.print(run_json(&r), || run_text(&r));
        }
        DirectoryCmd::Approve { run_id } => {
            let r = d.approve_run(pb::ApproveRunRequest { run_id, actor: admin() }).await?.into_inner();
            out.print(run_json(&r), || format!("run {} approved: applying its held removals", r.id));
        }
        DirectoryCmd::Reject { run_id } => {
            let r = d.reject_run(pb::RejectRunRequest { run_id, actor: admin() }).await?.into_inner();
            out.print(run_json(&r), || format!("run {} rejected: nobody was removed", r.id));
        }
        DirectoryCmd::Users { id, prefix } => {
            let users = d
                .list_directory_users(pb::ListDirectoryUsersRequest {
                    directory_id: id,
                    prefix,
                    active: None,
                    page_size: 1000,
                    page_token: String::new(),
                })
                .await?
                .into_inner()
                .users;
            let rows: Vec<Value> = users
                .iter()
                .map(|u| {
                    json!({"id": u.id, "user_name": u.user_name, "email": u.email, "name": u.display_name,
                                 "active": u.active, "external_id": u.external_id})
                })
                .collect();
            out.print(json!(rows), || {
                let mut t = Table::new(&["id", "userName", "email", "name", "active"]);
                for u in &users {
                    t.row(vec![
                        u.id.clone(),
                        u.user_name.clone(),
                        u.email.clone(),
                        u.display_name.clone(),
                        u.active.to_string(),
                    ]);
                }
                t.render()
            });
        }
        DirectoryCmd::Groups { id, prefix } => {
            let groups = d
                .list_directory_groups(pb::ListDirectoryGroupsRequest {
                    directory_id: id,
                    prefix,
                    page_size: 1000,
                    page_token: String::new(),
                })
                .await?
                .into_inner()
                .groups;
            let rows: Vec<Value> = groups
                .iter()
                .map(|g| json!({"id": g.id, "name": g.display_name, "members": g.member_count, "external_id": g.external_id}))
                .collect();
            out.print(json!(rows), || {
                let mut t = Table::new(&["id", "name", "members"]);
                for g in &groups {
                    t.row(vec![g.id.clone(), g.display_name.clone(), g.member_count.to_string()]);
                }
                t.render()
            });
        }
        DirectoryCmd::Events { directory, after } => {
            let mut stream = d
                .watch_events(pb::WatchEventsRequest { after_sequence: after, directory_id: directory })
                .await?
                .into_inner();
            while let Some(e) = stream.message().await? {
                let v = json!({"sequence": e.sequence, "type": e.r#type, "directory_id": e.directory_id,
                               "resource_id": e.resource_id, "member_id": e.member_id, "time": ts(&e.time)});
                out.print(v, || {
                    let member =
                        if e.member_id.is_empty() { String::new() } else { format!(" member {}", e.member_id) };
                    format!("{:>6}  {}  {:<22} {}{member}", e.sequence, ts(&e.time), e.r#type, e.resource_id)
                });
            }
        }
        DirectoryCmd::Preview(args) => {
            let mode = match args.mode {
                ModeArg::Manual => ppb::ProvisioningMode::Manual,
                ModeArg::Jit => ppb::ProvisioningMode::Jit,
                ModeArg::Scim => ppb::ProvisioningMode::Scim,
            };
            let mut role_mappings: Vec<ppb::RoleMapping> = Vec::new();
            for raw in &args.map_role {
                let (role, g) = mapping(raw, "role")?;
                match role_mappings.iter_mut().find(|m| m.role == role) {
                    Some(m) => m.groups.push(g),
                    None => role_mappings.push(ppb::RoleMapping { role, groups: vec![g] }),
                }
            }
            let mut seat_tier_mappings: Vec<ppb::SeatTierMapping> = Vec::new();
            for raw in &args.map_tier {
                let (tier, g) = mapping(raw, "tier")?;
                match seat_tier_mappings.iter_mut().find(|m| m.seat_tier == tier) {
                    Some(m) => m.groups.push(g),
                    None => seat_tier_mappings.push(ppb::SeatTierMapping { seat_tier: tier, groups: vec![g] }),
                }
            }
            let p = d
                .preview_settings(pb::PreviewSettingsRequest {
                    org_id: args.org,
                    settings: Some(ppb::SettingsInput {
                        mode: mode as i32,
                        advanced_group_mapping: args.agm,
                        role_mappings,
                        seat_tier_mappings,
                    }),
                    acting_member_id: args.acting_member,
                    actor: (!args.acting_as.is_empty())
                        .then(|| common::Actor { kind: Some(common::actor::Kind::AdminId(args.acting_as.clone())) }),
                })
                .await?
                .into_inner();
            let list = |v: &[pb::PreviewChange]| {
                v.iter()
                    .map(|c| json!({"user_ref": c.user_ref, "email": c.email, "from_role": c.from_role, "to_role": c.to_role,
                                    "from_seat_tier": c.from_seat_tier, "to_seat_tier": c.to_seat_tier, "reasons": c.reasons}))
                    .collect::<Vec<_>>()
            };
            let v = json!({
                "org_id": p.org_id, "added": list(&p.added), "removed": list(&p.removed), "re_roled": list(&p.re_roled),
                "re_tiered": list(&p.re_tiered), "pending": list(&p.pending),
                "unmatched_groups": p.unmatched_groups.iter().map(|g| json!({"id": g.id, "name": g.name})).collect::<Vec<_>>(),
                "warnings": p.warnings, "acting_member_loses_guardian": p.acting_member_loses_guardian,
                "org_left_without_guardian": p.org_left_without_guardian, "would_trip_brake": p.would_trip_brake,
                "considered": p.considered, "at_next_login": p.at_next_login,
            });
            out.print(v, || {
                let mut t = Table::new(&["change", "email", "role", "seat tier", "why"]);
                change_rows(&mut t, "add", &p.added);
                change_rows(&mut t, "remove", &p.removed);
                change_rows(&mut t, "re-role", &p.re_roled);
                change_rows(&mut t, "re-tier", &p.re_tiered);
                change_rows(&mut t, "pending seat", &p.pending);
                let when = if p.at_next_login { " Each change happens at that person's next login." } else { "" };
                let mut s = format!("{} people considered; nothing saved.{when}\n\n{}", p.considered, t.render());
                for w in &p.warnings {
                    s.push_str(&format!("\nwarning: {w}"));
                }
                s
            });
        }
        DirectoryCmd::Kinds => {
            let kinds = d.list_directory_kinds(pb::ListDirectoryKindsRequest {}).await?.into_inner().kinds;
            let json = kinds
                .iter()
                .map(
                    |k| json!({"name": k.name, "title": k.title, "pulled": k.pulled, "secret_fields": k.secret_fields}),
                )
                .collect::<Vec<_>>();
            out.print(json!(json), || {
                let mut t = Table::new(&["kind", "source", "secret fields", "what"]);
                for k in &kinds {
                    let source = if k.pulled { "pulled" } else { "pushed" };
                    t.row(vec![k.name.clone(), source.into(), k.secret_fields.join(", "), k.title.clone()]);
                }
                t.render()
            });
        }
        DirectoryCmd::Lag { directory } => {
            let l = d.get_reconcile_lag(pb::GetReconcileLagRequest { directory_id: directory }).await?.into_inner();
            out.print(
                json!({"queued": l.queued, "lag_seconds": l.lag_seconds, "oldest": ts(&l.oldest_enqueue_time)}),
                || format!("{} waiting; oldest {:.1}s ago", l.queued, l.lag_seconds),
            );
        }
    }
    Ok(())
}
