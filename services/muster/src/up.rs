//! `muster up`: every service in one process on local SQLite files, with an admin
//! token and, on first run, a demo organization to explore.

use std::path::Path;

use anyhow::Context;
use clap::Args;
use muster_proto::common::v1 as common;
use muster_proto::directory::v1 as dpb;
use muster_proto::policy::v1 as pb;
use muster_runtime::auth::{generate_token, hash_token};
use muster_runtime::client::{PolicyClient, channel};
use muster_runtime::config::{AuthConfig, DatabaseConfig, ListenConfig, LogConfig, UpstreamConfig};
use muster_runtime::metrics::RpcMetrics;

use crate::cli::token_file;

/// A directory-sync client.
type DirectoryClient = dpb::directory_service_client::DirectoryServiceClient<muster_runtime::client::AuthedChannel>;
use crate::services::{Shutdown, bind, spawn_metrics};

/// `muster up`
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Policy's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub policy_addr: String,
    /// Membership's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub membership_addr: String,
    /// Directory-sync's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50053")]
    pub directory_addr: String,
    /// Directory-sync's HTTP address (the SCIM endpoint).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub scim_addr: String,
    /// Prometheus metrics address (all services of this process).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// Do not create the demo organization on first run.
    #[arg(long)]
    pub no_demo: bool,
}

/// One service of `muster up`: metrics are served once for the whole process.
fn local_listen(addr: &str) -> ListenConfig {
    ListenConfig { grpc: addr.to_string(), metrics: String::new(), request_timeout_secs: 30, shutdown_grace_secs: 10 }
}

/// A service's SQLite file under the data directory.
fn local_database(data_dir: &Path, file: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: muster_runtime::Secret::new(format!("sqlite://{}", data_dir.join(file).display())),
        max_connections: 8,
        allow_newer_schema: false,
    }
}

/// Another service of this process, called with the admin token.
fn local_upstream(url: &str, token: &str) -> UpstreamConfig {
    UpstreamConfig {
        url: url.to_string(),
        token: muster_runtime::Secret::new(token),
        timeout_ms: 10_000,
        ..Default::default()
    }
}

/// Reads the admin token, creating it (readable by the owner only) on first run.
fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = token_file(data_dir);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_string();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    let token = generate_token();
    std::fs::write(&path, format!("{token}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(token)
}

async fn wait_serving(url: &str, service: &str) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(channel(url, "", std::time::Duration::from_secs(60))?);
    let mut stream = health.watch(HealthCheckRequest { service: service.into() }).await?.into_inner();
    while let Some(msg) = stream.message().await? {
        if msg.status == ServingStatus::Serving as i32 {
            return Ok(());
        }
    }
    anyhow::bail!("{service} stopped before it was ready")
}

/// The demo orgs' settings: `mode` with advanced group mapping of the acme-* groups.
async fn save_demo_settings(policy: &mut PolicyClient, org_id: &str, mode: pb::ProvisioningMode) -> anyhow::Result<()> {
    let named = |name: &str| common::GroupRef { id: String::new(), name: name.into() };
    policy
        .update_settings(pb::UpdateSettingsRequest {
            org_id: org_id.to_string(),
            expected_version: 0,
            settings: Some(pb::SettingsInput {
                mode: mode as i32,
                advanced_group_mapping: true,
                role_mappings: vec![
                    pb::RoleMapping { role: "Owner".into(), groups: vec![named("acme-owners")] },
                    pb::RoleMapping { role: "Admin".into(), groups: vec![named("acme-admins")] },
                    pb::RoleMapping { role: "User".into(), groups: vec![named("acme-everyone")] },
                ],
                seat_tier_mappings: vec![pb::SeatTierMapping {
                    seat_tier: "Premium".into(),
                    groups: vec![named("acme-engineering")],
                }],
            }),
            actor: Some(common::Actor { kind: Some(common::actor::Kind::System("demo".into())) }),
        })
        .await?;
    Ok(())
}

/// Creates the demo parent and org when policy has no parent orgs yet.
async fn seed_demo(policy: &mut PolicyClient) -> anyhow::Result<Option<(pb::ParentOrg, pb::Org)>> {
    let existing =
        policy.list_parent_orgs(pb::ListParentOrgsRequest { page_size: 1, page_token: String::new() }).await?;
    if !existing.into_inner().parent_orgs.is_empty() {
        return Ok(None);
    }
    let parent = policy
        .create_parent_org(pb::CreateParentOrgRequest { name: "Acme".into(), kind: pb::ParentKind::Enterprise as i32 })
        .await?
        .into_inner();
    let org = policy
        .create_org(pb::CreateOrgRequest {
            parent_id: parent.id.clone(),
            name: "Acme Enterprise".into(),
            product: pb::ProductKind::ClaudeEnterpriseSeat as i32,
        })
        .await?
        .into_inner();
    save_demo_settings(policy, &org.id, pb::ProvisioningMode::Jit).await?;
    Ok(Some((parent, org)))
}

/// The demo's SCIM side: an Enterprise org in scim mode with advanced group mapping
/// (the same groups as the jit org) under the demo parent, and a SCIM directory for
/// the parent. Returns the org, the directory's base URL and its token (shown once by
/// directory-sync; kept in DATA_DIR/scim-token for the tour).
async fn seed_scim_demo(
    policy: &mut PolicyClient,
    directory: &mut DirectoryClient,
    parent: &pb::ParentOrg,
    data_dir: &Path,
) -> anyhow::Result<(pb::Org, String, String)> {
    let org = policy
        .create_org(pb::CreateOrgRequest {
            parent_id: parent.id.clone(),
            name: "Acme SCIM".into(),
            product: pb::ProductKind::ClaudeEnterpriseSeat as i32,
        })
        .await?
        .into_inner();
    save_demo_settings(policy, &org.id, pb::ProvisioningMode::Scim).await?;
    let created = directory
        .create_directory(dpb::CreateDirectoryRequest {
            parent_id: parent.id.clone(),
            kind: dpb::DirectoryKind::Scim as i32,
            display_name: "Acme IdP (SCIM)".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let url = created.directory.map(|d| d.scim_base_url).unwrap_or_default();
    let path = data_dir.join("scim-token");
    std::fs::write(&path, format!("{}\n", created.scim_token))
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok((org, url, created.scim_token))
}

/// Runs `muster up` until Ctrl-C.
pub async fn up(args: UpArgs, data_dir: &Path) -> anyhow::Result<()> {
    muster_runtime::telemetry::init(&LogConfig { level: "warn,muster=info".into(), ..Default::default() });
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let token = admin_token(data_dir)?;
    let auth = AuthConfig { token_sha256: vec![hash_token(&token)] };
    let (_stop, shutdown) = Shutdown::on_signal(local_listen(&args.policy_addr).shutdown_grace());
    let metrics = RpcMetrics::new();
    spawn_metrics(&args.metrics_addr, metrics.clone(), &shutdown).await?;

    let policy_config = muster_policy::PolicyConfig {
        listen: local_listen(&args.policy_addr),
        database: local_database(data_dir, "policy.db"),
        auth: auth.clone(),
        ..Default::default()
    };
    let listener = bind(&args.policy_addr, "policy gRPC").await?;
    let policy_url = format!("http://{}", listener.local_addr()?);
    let policy_task = tokio::spawn(muster_policy::run(policy_config, listener, shutdown.wait(), metrics.clone()));
    wait_serving(&policy_url, muster_policy::GRPC_NAME).await?;

    let membership_config = muster_membership::MembershipConfig {
        listen: local_listen(&args.membership_addr),
        database: local_database(data_dir, "membership.db"),
        auth: auth.clone(),
        policy: local_upstream(&policy_url, &token),
        ..Default::default()
    };
    let listener = bind(&args.membership_addr, "membership gRPC").await?;
    let membership_url = format!("http://{}", listener.local_addr()?);
    let membership_task =
        tokio::spawn(muster_membership::run(membership_config, listener, shutdown.wait(), metrics.clone()));
    wait_serving(&membership_url, muster_membership::GRPC_NAME).await?;

    let directory_config = muster_directory_sync::DirectorySyncConfig {
        listen: local_listen(&args.directory_addr),
        http: muster_directory_sync::HttpConfig { addr: args.scim_addr.clone(), ..Default::default() },
        database: local_database(data_dir, "directory-sync.db"),
        auth: auth.clone(),
        policy: local_upstream(&policy_url, &token),
        membership: local_upstream(&membership_url, &token),
        // Quick to notice settings changes on a laptop.
        sync: muster_directory_sync::SyncConfig { settings_poll_ms: 2000, ..Default::default() },
        ..Default::default()
    };
    let grpc = bind(&args.directory_addr, "directory-sync gRPC").await?;
    let http = bind(&args.scim_addr, "directory-sync SCIM HTTP").await?;
    let directory_url = format!("http://{}", grpc.local_addr()?);
    let directory_task = tokio::spawn(muster_directory_sync::run(
        directory_config,
        muster_directory_sync::Listeners { grpc, http },
        shutdown.wait(),
        metrics.clone(),
    ));
    wait_serving(&directory_url, muster_directory_sync::GRPC_NAME).await?;

    let mut policy = PolicyClient::new(channel(&policy_url, &token, std::time::Duration::from_secs(30))?);
    let demo = if args.no_demo { None } else { seed_demo(&mut policy).await? };
    let mut directory = DirectoryClient::new(channel(&directory_url, &token, std::time::Duration::from_secs(30))?);
    let scim_demo = match &demo {
        Some((parent, _)) => Some(seed_scim_demo(&mut policy, &mut directory, parent, data_dir).await?),
        None => None,
    };

    println!("Muster is up. Data: {}", data_dir.display());
    println!("  policy       {policy_url}   (muster.policy.v1.PolicyService)");
    println!("  membership   {membership_url}   (muster.membership.v1.MembershipService)");
    println!("  directory    {directory_url}   (muster.directory.v1.DirectoryService)");
    println!("  scim         http://{}/scim/v2/<directory id>", args.scim_addr);
    if !args.metrics_addr.is_empty() {
        println!("  metrics      http://{}/metrics", args.metrics_addr);
    }
    println!("  admin token  {token}");
    println!("               (also in {}; commands run from here pick it up)", token_file(data_dir).display());
    if let Some((parent, org)) = demo {
        println!();
        println!("Demo: parent org \"{}\" ({}) with org \"{}\" ({})", parent.name, parent.id, org.name, org.id);
        println!("      in jit mode with advanced group mapping. Try:");
        println!("  muster settings show {}", org.id);
        println!("  muster decide --org {} --group acme-admins --group acme-engineering", org.id);
        println!("  muster login --org {} --email ada@acme.test --group acme-admins --group acme-engineering", org.id);
        println!("  muster members list {}", org.id);
    }
    if let Some((org, url, scim_token)) = &scim_demo {
        println!();
        println!("      and org \"{}\" ({}) in scim mode with advanced group mapping,", org.name, org.id);
        println!("      fed by a SCIM directory:");
        println!("  SCIM base URL  {url}");
        println!("  SCIM token     {scim_token}");
        println!("                 (also in {})", data_dir.join("scim-token").display());
        println!("  muster directory list");
    }
    println!();
    println!("Ctrl-C stops.");

    directory_task.await.context("directory-sync task")??;
    membership_task.await.context("membership task")??;
    policy_task.await.context("policy task")??;
    Ok(())
}
