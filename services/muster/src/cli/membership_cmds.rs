//! `muster members|seats|audit|events|login`: what membership offers, for operators.

use clap::{Args, Subcommand, ValueEnum};
use muster_proto::common::v1 as common;
use muster_proto::membership::v1 as pb;
use muster_proto::policy::v1 as ppb;
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use super::Connection;
use crate::output::{Output, Table};

fn admin() -> Option<common::Actor> {
    Some(common::Actor { kind: Some(common::actor::Kind::AdminId("cli".into())) })
}

fn status_name(raw: i32) -> String {
    pb::MemberStatus::try_from(raw)
        .map(|s| s.as_str_name().trim_start_matches("MEMBER_STATUS_").to_lowercase())
        .unwrap_or_default()
}

fn source_name(raw: i32) -> String {
    common::MemberSource::try_from(raw)
        .map(|s| s.as_str_name().trim_start_matches("MEMBER_SOURCE_").to_lowercase())
        .unwrap_or_default()
}

fn member_json(m: &pb::Member) -> Value {
    let user = m.user.clone().unwrap_or_default();
    json!({
        "id": m.id, "org_id": m.org_id, "user_id": user.id, "email": user.email, "name": user.display_name,
        "role": m.role, "seat_tier": m.seat_tier, "wanted_seat_tier": m.wanted_seat_tier,
        "status": status_name(m.status), "source": source_name(m.source), "directory_id": m.directory_id,
        "version": m.version,
    })
}

fn members_table(members: &[pb::Member]) -> String {
    let mut t = Table::new(&["id", "email", "role", "seat tier", "status", "source", "version"]);
    for m in members {
        let tier = match (m.seat_tier.as_str(), m.wanted_seat_tier.as_str()) {
            (t, "") => t.to_string(),
            ("", w) => format!("(waiting: {w})"),
            (t, w) => format!("{t} (waiting: {w})"),
        };
        t.row(vec![
            m.id.clone(),
            m.user.as_ref().map(|u| u.email.clone()).unwrap_or_default(),
            m.role.clone(),
            tier,
            status_name(m.status),
            source_name(m.source),
            m.version.to_string(),
        ]);
    }
    t.render()
}

fn change(out: Output, c: pb::MemberChange) {
    let m = c.member.unwrap_or_default();
    let mut value = member_json(&m);
    value["notes"] = json!(c.notes);
    out.print(value, || {
        let mut text = members_table(std::slice::from_ref(&m));
        for n in &c.notes {
            text.push_str(&format!("\nnote: {n}"));
        }
        text
    });
}

/// Statuses on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StatusArg {
    /// Holding a seat.
    Active,
    /// Waiting for a seat.
    PendingSeat,
}

/// `muster members …`
#[derive(Subcommand, Debug)]
pub enum MembersCmd {
    /// List an org's members.
    List {
        /// The org.
        org: String,
        /// Only this role.
        #[arg(long)]
        role: Option<String>,
        /// Only this seat tier.
        #[arg(long)]
        tier: Option<String>,
        /// Only this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Only emails starting with this.
        #[arg(long)]
        email: Option<String>,
    },
    /// Add a person by email.
    Add {
        /// The org.
        org: String,
        /// Their email.
        email: String,
        /// Their role (default: the product's default role).
        #[arg(long)]
        role: Option<String>,
        /// Their seat tier (default: the highest tier with a free seat).
        #[arg(long)]
        tier: Option<String>,
        /// Their name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Change a member's role and/or seat tier.
    Update {
        /// The org.
        org: String,
        /// The member id.
        member: String,
        /// New role.
        #[arg(long)]
        role: Option<String>,
        /// New seat tier.
        #[arg(long)]
        tier: Option<String>,
    },
    /// Remove a member.
    Remove {
        /// The org.
        org: String,
        /// The member id.
        member: String,
    },
}

/// Runs `muster members …`.
pub async fn members(conn: &Connection, out: Output, cmd: MembersCmd) -> anyhow::Result<()> {
    let mut m = conn.membership()?;
    match cmd {
        MembersCmd::List { org, role, tier, status, email } => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = m
                    .list_members(pb::ListMembersRequest {
                        org_id: org.clone(),
                        role: role.clone().unwrap_or_default(),
                        seat_tier: tier.clone().unwrap_or_default(),
                        status: match status {
                            Some(StatusArg::Active) => pb::MemberStatus::Active as i32,
                            Some(StatusArg::PendingSeat) => pb::MemberStatus::PendingSeat as i32,
                            None => 0,
                        },
                        source: 0,
                        email_prefix: email.clone().unwrap_or_default(),
                        page_size: 1000,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                all.extend(page.members);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            out.print(Value::Array(all.iter().map(member_json).collect()), || members_table(&all));
        }
        MembersCmd::Add { org, email, role, tier, name } => {
            let c = m
                .add_member(pb::AddMemberRequest {
                    org_id: org,
                    email,
                    display_name: name.unwrap_or_default(),
                    role: role.unwrap_or_default(),
                    seat_tier: tier.unwrap_or_default(),
                    actor: admin(),
                })
                .await?
                .into_inner();
            change(out, c);
        }
        MembersCmd::Update { org, member, role, tier } => {
            if role.is_none() && tier.is_none() {
                anyhow::bail!("nothing to change: give --role and/or --tier");
            }
            let current = m
                .get_member(pb::GetMemberRequest { org_id: org.clone(), member_id: member.clone() })
                .await?
                .into_inner();
            let c = m
                .update_member(pb::UpdateMemberRequest {
                    org_id: org,
                    member_id: member,
                    expected_version: current.version,
                    role,
                    seat_tier: tier,
                    actor: admin(),
                })
                .await?
                .into_inner();
            change(out, c);
        }
        MembersCmd::Remove { org, member } => {
            m.remove_member(pb::RemoveMemberRequest { org_id: org, member_id: member.clone(), actor: admin() }).await?;
            out.print(json!({"removed": member}), || format!("removed member {member}"));
        }
    }
    Ok(())
}

/// `muster seats …`
#[derive(Subcommand, Debug)]
pub enum SeatsCmd {
    /// Show purchased, used and pending seats per tier.
    Show {
        /// The org.
        org: String,
    },
    /// Set the seats bought of a tier (pending members get seats at once).
    Set {
        /// The org.
        org: String,
        /// The seat tier.
        tier: String,
        /// How many, or `unlimited`.
        count: String,
    },
}

fn usage_print(out: Output, u: &pb::SeatUsage) {
    let value = json!({
        "org_id": u.org_id,
        "tiers": u.tiers.iter().map(|t| json!({"seat_tier": t.seat_tier, "purchased": t.purchased, "used": t.used, "pending": t.pending})).collect::<Vec<_>>(),
        "pending_any_tier": u.pending_any_tier,
    });
    out.print(value, || {
        let mut t = Table::new(&["seat tier", "purchased", "used", "pending"]);
        for tier in &u.tiers {
            t.row(vec![
                tier.seat_tier.clone(),
                tier.purchased.map(|p| p.to_string()).unwrap_or_else(|| "unlimited".into()),
                tier.used.to_string(),
                tier.pending.to_string(),
            ]);
        }
        let mut text = t.render();
        if u.pending_any_tier > 0 {
            text.push_str(&format!("\npending for any tier: {}", u.pending_any_tier));
        }
        text
    });
}

/// Runs `muster seats …`.
pub async fn seats(conn: &Connection, out: Output, cmd: SeatsCmd) -> anyhow::Result<()> {
    let mut m = conn.membership()?;
    let usage = match cmd {
        SeatsCmd::Show { org } => m.get_seat_usage(pb::GetSeatUsageRequest { org_id: org }).await?.into_inner(),
        SeatsCmd::Set { org, tier, count } => {
            let purchased = match count.as_str() {
                "unlimited" => None,
                n => Some(n.parse::<i64>().map_err(|_| anyhow::anyhow!("seat count must be a number or `unlimited`"))?),
            };
            m.set_seats(pb::SetSeatsRequest { org_id: org, seat_tier: tier, purchased, actor: admin() })
                .await?
                .into_inner()
        }
    };
    usage_print(out, &usage);
    Ok(())
}

/// `muster audit list`
#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// The newest audit records of an org.
    List {
        /// The org.
        org: String,
        /// Only this person (user id).
        #[arg(long)]
        user: Option<String>,
        /// Only this actor, e.g. admin:alice or sync_run:RUN.
        #[arg(long)]
        actor: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
}

/// Runs `muster audit …`.
pub async fn audit(conn: &Connection, out: Output, cmd: AuditCmd) -> anyhow::Result<()> {
    let AuditCmd::List { org, user, actor, limit } = cmd;
    let entries = conn
        .membership()?
        .list_audit(pb::ListAuditRequest {
            org_id: org,
            user_id: user.unwrap_or_default(),
            actor: actor.unwrap_or_default(),
            page_size: limit,
            ..Default::default()
        })
        .await?
        .into_inner()
        .entries;
    let value = Value::Array(
        entries
            .iter()
            .map(|e| json!({"id": e.id, "time": super::policy_cmds::ts(&e.time), "action": e.action, "actor": e.actor, "member_id": e.member_id, "reasons": e.reasons}))
            .collect(),
    );
    out.print(value, || {
        let mut t = Table::new(&["time", "action", "actor", "member", "why"]);
        for e in &entries {
            t.row(vec![
                super::policy_cmds::ts(&e.time),
                e.action.clone(),
                e.actor.clone(),
                e.member_id.clone(),
                e.reasons.join("; "),
            ]);
        }
        t.render()
    });
    Ok(())
}

/// `muster events watch`
#[derive(Subcommand, Debug)]
pub enum EventsCmd {
    /// Follow member events (one line each) from a cursor; Ctrl-C stops.
    Watch {
        /// Only this org's events.
        #[arg(long)]
        org: Option<String>,
        /// Start after this sequence (0: from the start).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

/// Runs `muster events watch`.
pub async fn events(conn: &Connection, out: Output, cmd: EventsCmd) -> anyhow::Result<()> {
    let EventsCmd::Watch { org, after } = cmd;
    let mut stream = conn
        .membership()?
        .watch_events(pb::WatchEventsRequest { after_sequence: after, org_id: org.unwrap_or_default() })
        .await?
        .into_inner();
    while let Some(event) = stream.next().await {
        let e = event?;
        let member = e.member.as_ref();
        let value = json!({
            "sequence": e.sequence, "type": e.r#type, "org_id": e.org_id, "time": super::policy_cmds::ts(&e.time),
            "member": member.map(member_json),
        });
        out.print(value, || {
            let who = member
                .map(|m| {
                    format!("{} {} {}", m.user.as_ref().map(|u| u.email.as_str()).unwrap_or(""), m.role, m.seat_tier)
                })
                .unwrap_or_default();
            format!("{:>8}  {}  {:<20} {}  {}", e.sequence, super::policy_cmds::ts(&e.time), e.r#type, e.org_id, who)
        });
    }
    Ok(())
}

/// `muster login`: simulate a JIT login and show the decision.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The org.
    #[arg(long)]
    org: String,
    /// The person's email.
    #[arg(long)]
    email: String,
    /// The IdP did not let them in (not assigned to the app).
    #[arg(long)]
    unassigned: bool,
    /// A group claim (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
}

/// Runs `muster login`.
pub async fn login(conn: &Connection, out: Output, args: LoginArgs) -> anyhow::Result<()> {
    let r = conn
        .membership()?
        .login(pb::LoginRequest {
            org_id: args.org,
            identity: Some(pb::Identity { email: args.email.clone(), external_id: args.email, ..Default::default() }),
            assigned: !args.unassigned,
            groups: args.groups.into_iter().map(|name| common::GroupRef { id: String::new(), name }).collect(),
        })
        .await?
        .into_inner();
    let action = ppb::Action::try_from(r.action)
        .map(|a| a.as_str_name().trim_start_matches("ACTION_").to_lowercase())
        .unwrap_or_default();
    let value = json!({"allowed": r.allowed, "action": action, "member": r.member.as_ref().map(member_json), "reasons": r.reasons});
    out.print(value, || {
        let mut lines =
            vec![format!("login:   {}", if r.allowed { "allowed" } else { "denied" }), format!("action:  {action}")];
        match &r.member {
            Some(m) => lines.push(format!(
                "member:  {} ({}{})",
                m.role,
                if m.seat_tier.is_empty() { status_name(m.status) } else { m.seat_tier.clone() },
                if m.wanted_seat_tier.is_empty() {
                    String::new()
                } else {
                    format!(", waiting for {}", m.wanted_seat_tier)
                }
            )),
            None => lines.push("member:  none".into()),
        }
        lines.push("why:".into());
        lines.extend(r.reasons.iter().map(|x| format!("  - {x}")));
        lines.join("\n")
    });
    Ok(())
}
