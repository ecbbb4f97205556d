//! `muster parents|orgs|products|settings|decide`: what policy offers, for operators.

use clap::{Args, Subcommand, ValueEnum};
use muster_proto::common::v1 as common;
use muster_proto::policy::v1 as pb;
use serde_json::{Value, json};

use super::Connection;
use crate::output::{Output, Table};

/// A timestamp as people read it (UTC).
pub fn ts(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Parent kinds on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ParentKindArg {
    /// Enterprise.
    Enterprise,
    /// Team.
    Team,
    /// Console.
    Console,
}

/// Products on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ProductArg {
    /// Claude Team.
    ClaudeTeam,
    /// Seat-based Enterprise.
    ClaudeEnterpriseSeat,
    /// Usage-based Enterprise.
    ClaudeEnterpriseUsage,
    /// Console.
    Console,
}

impl ProductArg {
    fn pb(self) -> pb::ProductKind {
        match self {
            ProductArg::ClaudeTeam => pb::ProductKind::ClaudeTeam,
            ProductArg::ClaudeEnterpriseSeat => pb::ProductKind::ClaudeEnterpriseSeat,
            ProductArg::ClaudeEnterpriseUsage => pb::ProductKind::ClaudeEnterpriseUsage,
            ProductArg::Console => pb::ProductKind::Console,
        }
    }
}

fn product_name(raw: i32) -> String {
    pb::ProductKind::try_from(raw)
        .map(|p| p.as_str_name().trim_start_matches("PRODUCT_KIND_").to_lowercase())
        .unwrap_or_default()
}

fn parent_kind_name(raw: i32) -> String {
    pb::ParentKind::try_from(raw)
        .map(|p| p.as_str_name().trim_start_matches("PARENT_KIND_").to_lowercase())
        .unwrap_or_default()
}

fn mode_name(raw: i32) -> String {
    pb::ProvisioningMode::try_from(raw)
        .map(|p| p.as_str_name().trim_start_matches("PROVISIONING_MODE_").to_lowercase())
        .unwrap_or_default()
}

/// `muster parents …`
#[derive(Subcommand, Debug)]
pub enum ParentsCmd {
    /// Create a parent organization.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Kind.
        #[arg(long, value_enum)]
        kind: ParentKindArg,
    },
    /// List parent organizations.
    List,
    /// Show one.
    Show {
        /// Its id.
        id: String,
    },
    /// Rename one.
    Rename {
        /// Its id.
        id: String,
        /// The new name.
        name: String,
    },
    /// Delete one (refused while it has orgs).
    Delete {
        /// Its id.
        id: String,
    },
}

fn parent_json(p: &pb::ParentOrg) -> Value {
    json!({"id": p.id, "name": p.name, "kind": parent_kind_name(p.kind), "created": ts(&p.create_time)})
}

fn parents_table(parents: &[pb::ParentOrg]) -> String {
    let mut t = Table::new(&["id", "name", "kind", "created"]);
    for p in parents {
        t.row(vec![p.id.clone(), p.name.clone(), parent_kind_name(p.kind), ts(&p.create_time)]);
    }
    t.render()
}

/// Runs `muster parents …`.
pub async fn parents(conn: &Connection, out: Output, cmd: ParentsCmd) -> anyhow::Result<()> {
    let mut policy = conn.policy()?;
    let one = |p: pb::ParentOrg| out.print(parent_json(&p), || parents_table(std::slice::from_ref(&p)));
    match cmd {
        ParentsCmd::Create { name, kind } => {
            let kind = match kind {
                ParentKindArg::Enterprise => pb::ParentKind::Enterprise,
                ParentKindArg::Team => pb::ParentKind::Team,
                ParentKindArg::Console => pb::ParentKind::Console,
            };
            one(policy.create_parent_org(pb::CreateParentOrgRequest { name, kind: kind as i32 }).await?.into_inner());
        }
        ParentsCmd::List => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = policy
                    .list_parent_orgs(pb::ListParentOrgsRequest { page_size: 1000, page_token: token })
                    .await?
                    .into_inner();
                all.extend(page.parent_orgs);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            out.print(Value::Array(all.iter().map(parent_json).collect()), || parents_table(&all));
        }
        ParentsCmd::Show { id } => one(policy.get_parent_org(pb::GetParentOrgRequest { id }).await?.into_inner()),
        ParentsCmd::Rename { id, name } => {
            one(policy.update_parent_org(pb::UpdateParentOrgRequest { id, name }).await?.into_inner())
        }
        ParentsCmd::Delete { id } => {
            policy.delete_parent_org(pb::DeleteParentOrgRequest { id: id.clone() }).await?;
            out.print(json!({"deleted": id}), || format!("deleted parent org {id}"));
        }
    }
    Ok(())
}

/// `muster orgs …`
#[derive(Subcommand, Debug)]
pub enum OrgsCmd {
    /// Create an organization.
    Create {
        /// Its parent's id.
        #[arg(long)]
        parent: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Product.
        #[arg(long, value_enum)]
        product: ProductArg,
    },
    /// List organizations.
    List {
        /// Only this parent's.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Show one.
    Show {
        /// Its id.
        id: String,
    },
    /// Rename one.
    Rename {
        /// Its id.
        id: String,
        /// The new name.
        name: String,
    },
    /// Delete one.
    Delete {
        /// Its id.
        id: String,
    },
}

fn org_json(o: &pb::Org) -> Value {
    json!({"id": o.id, "parent_id": o.parent_id, "name": o.name, "product": product_name(o.product), "created": ts(&o.create_time)})
}

fn orgs_table(orgs: &[pb::Org]) -> String {
    let mut t = Table::new(&["id", "name", "product", "parent"]);
    for o in orgs {
        t.row(vec![o.id.clone(), o.name.clone(), product_name(o.product), o.parent_id.clone()]);
    }
    t.render()
}

/// Runs `muster orgs …`.
pub async fn orgs(conn: &Connection, out: Output, cmd: OrgsCmd) -> anyhow::Result<()> {
    let mut policy = conn.policy()?;
    let one = |o: pb::Org| out.print(org_json(&o), || orgs_table(std::slice::from_ref(&o)));
    match cmd {
        OrgsCmd::Create { parent, name, product } => one(policy
            .create_org(pb::CreateOrgRequest { parent_id: parent, name, product: product.pb() as i32 })
            .await?
            .into_inner()),
        OrgsCmd::List { parent } => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = policy
                    .list_orgs(pb::ListOrgsRequest {
                        parent_id: parent.clone().unwrap_or_default(),
                        page_size: 1000,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                all.extend(page.orgs);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            out.print(Value::Array(all.iter().map(org_json).collect()), || orgs_table(&all));
        }
        OrgsCmd::Show { id } => one(policy.get_org(pb::GetOrgRequest { id }).await?.into_inner()),
        OrgsCmd::Rename { id, name } => one(policy.update_org(pb::UpdateOrgRequest { id, name }).await?.into_inner()),
        OrgsCmd::Delete { id } => {
            policy.delete_org(pb::DeleteOrgRequest { id: id.clone() }).await?;
            out.print(json!({"deleted": id}), || format!("deleted org {id}"));
        }
    }
    Ok(())
}

/// `muster products …`
#[derive(Subcommand, Debug)]
pub enum ProductsCmd {
    /// List the catalog.
    List,
}

/// Runs `muster products …`.
pub async fn products(conn: &Connection, out: Output, cmd: ProductsCmd) -> anyhow::Result<()> {
    let ProductsCmd::List = cmd;
    let products = conn.policy()?.list_products(pb::ListProductsRequest {}).await?.into_inner().products;
    let value = Value::Array(
        products
            .iter()
            .map(|p| json!({"name": p.name, "display_name": p.display_name, "roles": p.roles, "seat_tiers": p.seat_tiers}))
            .collect(),
    );
    out.print(value, || {
        let mut t = Table::new(&["product", "roles (highest first)", "seat tiers (highest first)"]);
        for p in &products {
            t.row(vec![p.name.clone(), p.roles.join(", "), p.seat_tiers.join(", ")]);
        }
        t.render()
    });
    Ok(())
}

/// Modes on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Administrators only.
    Manual,
    /// Just-in-time at login.
    Jit,
    /// A directory provisions.
    Scim,
}

/// On or off.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// A group named on the command line.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct GroupArg {
    /// The group's directory id.
    #[arg(long)]
    group_id: Option<String>,
    /// The group's name (for JIT claims; matched case-insensitively).
    #[arg(long)]
    group_name: Option<String>,
}

impl GroupArg {
    fn to_ref(&self) -> common::GroupRef {
        common::GroupRef {
            id: self.group_id.clone().unwrap_or_default(),
            name: self.group_name.clone().unwrap_or_default(),
        }
    }
}

/// `muster settings …`
#[derive(Subcommand, Debug)]
pub enum SettingsCmd {
    /// Show an org's settings.
    Show {
        /// The org.
        org: String,
    },
    /// Set the provisioning mode.
    SetMode {
        /// The org.
        org: String,
        /// The mode.
        #[arg(value_enum)]
        mode: ModeArg,
    },
    /// Turn advanced group mapping on or off.
    Agm {
        /// The org.
        org: String,
        /// On or off.
        #[arg(value_enum)]
        switch: Switch,
    },
    /// Map a group to a role.
    MapRole {
        /// The org.
        org: String,
        /// The role.
        role: String,
        #[command(flatten)]
        group: GroupArg,
    },
    /// Remove a group from a role's mapping (the mapping goes with its last group).
    UnmapRole {
        /// The org.
        org: String,
        /// The role.
        role: String,
        #[command(flatten)]
        group: GroupArg,
    },
    /// Map a group to a seat tier.
    MapTier {
        /// The org.
        org: String,
        /// The seat tier.
        tier: String,
        #[command(flatten)]
        group: GroupArg,
    },
    /// Remove a group from a seat tier's mapping.
    UnmapTier {
        /// The org.
        org: String,
        /// The seat tier.
        tier: String,
        #[command(flatten)]
        group: GroupArg,
    },
}

fn group_label(g: &common::GroupRef) -> String {
    match (g.id.is_empty(), g.name.is_empty()) {
        (false, true) => format!("id:{}", g.id),
        (true, false) => format!("name:{}", g.name),
        _ => format!("id:{} ({})", g.id, g.name),
    }
}

fn settings_json(s: &pb::Settings) -> Value {
    let groups = |gs: &[common::GroupRef]| gs.iter().map(|g| json!({"id": g.id, "name": g.name})).collect::<Vec<_>>();
    json!({
        "org_id": s.org_id,
        "version": s.version,
        "mode": mode_name(s.mode),
        "advanced_group_mapping": s.advanced_group_mapping,
        "role_mappings": s.role_mappings.iter().map(|m| json!({"role": m.role, "groups": groups(&m.groups)})).collect::<Vec<_>>(),
        "seat_tier_mappings": s.seat_tier_mappings.iter().map(|m| json!({"seat_tier": m.seat_tier, "groups": groups(&m.groups)})).collect::<Vec<_>>(),
    })
}

fn settings_text(s: &pb::Settings) -> String {
    let mut lines = vec![
        format!("org:                    {}", s.org_id),
        format!("version:                {}", s.version),
        format!("mode:                   {}", mode_name(s.mode)),
        format!("advanced group mapping: {}", if s.advanced_group_mapping { "on" } else { "off" }),
    ];
    let mut t = Table::new(&["mapping", "target", "groups"]);
    for m in &s.role_mappings {
        t.row(vec!["role".into(), m.role.clone(), m.groups.iter().map(group_label).collect::<Vec<_>>().join(", ")]);
    }
    for m in &s.seat_tier_mappings {
        t.row(vec![
            "seat tier".into(),
            m.seat_tier.clone(),
            m.groups.iter().map(group_label).collect::<Vec<_>>().join(", "),
        ]);
    }
    if s.role_mappings.is_empty() && s.seat_tier_mappings.is_empty() {
        lines.push("mappings:               none".into());
    } else {
        lines.push(String::new());
        lines.push(t.render());
    }
    lines.join("\n")
}

fn input_of(s: &pb::Settings) -> pb::SettingsInput {
    pb::SettingsInput {
        mode: s.mode,
        advanced_group_mapping: s.advanced_group_mapping,
        role_mappings: s.role_mappings.clone(),
        seat_tier_mappings: s.seat_tier_mappings.clone(),
    }
}

fn same_group(a: &common::GroupRef, b: &common::GroupRef) -> bool {
    if !b.id.is_empty() { a.id == b.id } else { a.id.is_empty() && a.name.eq_ignore_ascii_case(&b.name) }
}

/// A role mapping or a seat-tier mapping: a target and its groups.
trait GroupMapping {
    fn target(&self) -> &str;
    fn groups_mut(&mut self) -> &mut Vec<common::GroupRef>;
    fn make(target: String, groups: Vec<common::GroupRef>) -> Self;
}

impl GroupMapping for pb::RoleMapping {
    fn target(&self) -> &str {
        &self.role
    }
    fn groups_mut(&mut self) -> &mut Vec<common::GroupRef> {
        &mut self.groups
    }
    fn make(role: String, groups: Vec<common::GroupRef>) -> Self {
        Self { role, groups }
    }
}

impl GroupMapping for pb::SeatTierMapping {
    fn target(&self) -> &str {
        &self.seat_tier
    }
    fn groups_mut(&mut self) -> &mut Vec<common::GroupRef> {
        &mut self.groups
    }
    fn make(seat_tier: String, groups: Vec<common::GroupRef>) -> Self {
        Self { seat_tier, groups }
    }
}

/// Adds or removes `group` under `target`.
fn edit_mapping<M: GroupMapping>(
    mappings: &mut Vec<M>,
    target: &str,
    group: common::GroupRef,
    add: bool,
) -> anyhow::Result<()> {
    let position = mappings.iter().position(|m| m.target() == target);
    match (position, add) {
        (Some(i), true) => {
            let groups = mappings[i].groups_mut();
            if !groups.iter().any(|g| same_group(g, &group)) {
                groups.push(group);
            }
        }
        (None, true) => mappings.push(M::make(target.to_string(), vec![group])),
        (Some(i), false) => {
            let groups = mappings[i].groups_mut();
            let before = groups.len();
            groups.retain(|g| !same_group(g, &group));
            if groups.len() == before {
                anyhow::bail!("{} is not mapped to {target}", group_label(&group));
            }
            if groups.is_empty() {
                mappings.remove(i);
            }
        }
        (None, false) => anyhow::bail!("nothing is mapped to {target}"),
    }
    Ok(())
}

/// Runs `muster settings …`: reads the settings, changes them, and saves them naming
/// the version read, so a concurrent change is refused rather than overwritten.
pub async fn settings(conn: &Connection, out: Output, cmd: SettingsCmd) -> anyhow::Result<()> {
    let mut policy = conn.policy()?;
    let org = match &cmd {
        SettingsCmd::Show { org }
        | SettingsCmd::SetMode { org, .. }
        | SettingsCmd::Agm { org, .. }
        | SettingsCmd::MapRole { org, .. }
        | SettingsCmd::UnmapRole { org, .. }
        | SettingsCmd::MapTier { org, .. }
        | SettingsCmd::UnmapTier { org, .. } => org.clone(),
    };
    let current = policy.get_settings(pb::GetSettingsRequest { org_id: org.clone() }).await?.into_inner();
    let mut input = input_of(&current);
    match cmd {
        SettingsCmd::Show { .. } => {
            out.print(settings_json(&current), || settings_text(&current));
            return Ok(());
        }
        SettingsCmd::SetMode { mode, .. } => {
            input.mode = match mode {
                ModeArg::Manual => pb::ProvisioningMode::Manual,
                ModeArg::Jit => pb::ProvisioningMode::Jit,
                ModeArg::Scim => pb::ProvisioningMode::Scim,
            } as i32;
        }
        SettingsCmd::Agm { switch, .. } => input.advanced_group_mapping = matches!(switch, Switch::On),
        SettingsCmd::MapRole { role, group, .. } => {
            edit_mapping(&mut input.role_mappings, &role, group.to_ref(), true)?
        }
        SettingsCmd::UnmapRole { role, group, .. } => {
            edit_mapping(&mut input.role_mappings, &role, group.to_ref(), false)?
        }
        SettingsCmd::MapTier { tier, group, .. } => {
            edit_mapping(&mut input.seat_tier_mappings, &tier, group.to_ref(), true)?
        }
        SettingsCmd::UnmapTier { tier, group, .. } => {
            edit_mapping(&mut input.seat_tier_mappings, &tier, group.to_ref(), false)?
        }
    }
    let saved = policy
        .update_settings(pb::UpdateSettingsRequest {
            org_id: org,
            expected_version: current.version,
            settings: Some(input),
            actor: Some(common::Actor { kind: Some(common::actor::Kind::AdminId("cli".into())) }),
        })
        .await?
        .into_inner();
    out.print(settings_json(&saved), || settings_text(&saved));
    Ok(())
}

/// Triggers on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TriggerArg {
    /// A JIT login.
    Login,
    /// A directory change.
    DirectorySync,
    /// "Sync now".
    SyncNow,
}

/// `muster decide`: explain a decision for a made-up person.
#[derive(Args, Debug)]
pub struct DecideArgs {
    /// The org.
    #[arg(long)]
    org: String,
    /// What happens.
    #[arg(long, value_enum, default_value = "login")]
    trigger: TriggerArg,
    /// The IdP does not assign them to the application.
    #[arg(long)]
    unassigned: bool,
    /// A group they are in, by name (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// A group they are in, by directory id (repeatable).
    #[arg(long = "group-id")]
    group_ids: Vec<String>,
    /// Their current role, if they are a member.
    #[arg(long)]
    current_role: Option<String>,
    /// Their current seat tier.
    #[arg(long, requires = "current_role")]
    current_tier: Option<String>,
}

fn action_name(raw: i32) -> String {
    pb::Action::try_from(raw).map(|a| a.as_str_name().trim_start_matches("ACTION_").to_lowercase()).unwrap_or_default()
}

/// A seat-tier preference as words.
pub fn tier_text(t: &Option<pb::SeatTierPreference>) -> String {
    use pb::seat_tier_preference::Choice;
    match t.as_ref().and_then(|t| t.choice.as_ref()) {
        Some(Choice::Mapped(tier)) => tier.clone(),
        Some(Choice::HighestFree(_)) => "highest tier with a free seat".into(),
        Some(Choice::Keep(_)) => "unchanged".into(),
        None => "-".into(),
    }
}

/// Runs `muster decide`.
pub async fn decide(conn: &Connection, out: Output, args: DecideArgs) -> anyhow::Result<()> {
    let trigger = match args.trigger {
        TriggerArg::Login => common::Trigger::Login,
        TriggerArg::DirectorySync => common::Trigger::DirectorySync,
        TriggerArg::SyncNow => common::Trigger::SyncNow,
    };
    let groups = args
        .groups
        .iter()
        .map(|n| common::GroupRef { id: String::new(), name: n.clone() })
        .chain(args.group_ids.iter().map(|i| common::GroupRef { id: i.clone(), name: String::new() }))
        .collect();
    let subject = pb::Subject {
        user_ref: "example".into(),
        assigned: !args.unassigned,
        groups,
        current: args.current_role.map(|role| pb::CurrentMembership {
            role,
            seat_tier: args.current_tier.unwrap_or_default(),
            source: common::MemberSource::Manual as i32,
        }),
    };
    let response = conn
        .policy()?
        .decide(pb::DecideRequest {
            org_id: args.org,
            trigger: trigger as i32,
            subjects: vec![subject],
            proposed_settings: None,
        })
        .await?
        .into_inner();
    let d = response.decisions.into_iter().next().ok_or_else(|| anyhow::anyhow!("policy returned no decision"))?;
    let value = json!({
        "action": action_name(d.action),
        "role": d.role,
        "seat_tier": tier_text(&d.seat_tier),
        "login_allowed": d.login_allowed,
        "reasons": d.reasons,
        "settings_version": response.settings_version,
    });
    out.print(value, || {
        let mut lines = vec![format!("action:     {}", action_name(d.action))];
        if matches!(trigger, common::Trigger::Login) {
            lines.push(format!("login:      {}", if d.login_allowed { "allowed" } else { "denied" }));
        }
        lines.push(format!("role:       {}", if d.role.is_empty() { "-" } else { &d.role }));
        lines.push(format!("seat tier:  {}", tier_text(&d.seat_tier)));
        lines.push("why:".into());
        lines.extend(d.reasons.iter().map(|r| format!("  - {r}")));
        lines.join("\n")
    });
    Ok(())
}
