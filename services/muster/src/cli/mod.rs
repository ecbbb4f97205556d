//! Operator commands: each talks to a running service over gRPC with the admin token.

pub mod directory_cmds;
pub mod membership_cmds;
pub mod policy_cmds;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use muster_runtime::client::{MembershipClient, PolicyClient, channel};

/// How commands reach the services.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// Policy's gRPC URL.
    #[arg(long, global = true, env = "MUSTER_POLICY_URL", default_value = "http://127.0.0.1:50051")]
    pub policy_url: String,
    /// Membership's gRPC URL.
    #[arg(long, global = true, env = "MUSTER_MEMBERSHIP_URL", default_value = "http://127.0.0.1:50052")]
    pub membership_url: String,
    /// Directory-sync's gRPC URL.
    #[arg(long, global = true, env = "MUSTER_DIRECTORY_URL", default_value = "http://127.0.0.1:50053")]
    pub directory_url: String,
    /// Bearer token; defaults to DATA_DIR/admin-token written by `muster up`.
    #[arg(long, global = true, env = "MUSTER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where `muster up` keeps its data.
    #[arg(long, global = true, env = "MUSTER_DATA_DIR", default_value = "muster-data")]
    pub data_dir: PathBuf,
    /// Seconds to wait for an answer.
    #[arg(long, global = true, default_value_t = 30)]
    pub timeout: u64,
}

/// The file `muster up` writes its admin token to.
pub fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

impl Connection {
    fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let path = token_file(&self.data_dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("no token: pass --token or MUSTER_TOKEN, or run `muster up` first (looked in {})", path.display())
        })?;
        Ok(text.trim().to_string())
    }

    /// A membership client.
    pub fn membership(&self) -> anyhow::Result<MembershipClient> {
        let chan = channel(&self.membership_url, &self.token()?, Duration::from_secs(self.timeout))
            .with_context(|| format!("membership url {}", self.membership_url))?;
        Ok(MembershipClient::new(chan))
    }

    /// A directory-sync client.
    pub fn directory(
        &self,
    ) -> anyhow::Result<
        muster_proto::directory::v1::directory_service_client::DirectoryServiceClient<
            muster_runtime::client::AuthedChannel,
        >,
    > {
        let chan = channel(&self.directory_url, &self.token()?, Duration::from_secs(self.timeout))
            .with_context(|| format!("directory-sync url {}", self.directory_url))?;
        Ok(muster_proto::directory::v1::directory_service_client::DirectoryServiceClient::new(chan))
    }

    /// A policy client.
    pub fn policy(&self) -> anyhow::Result<PolicyClient> {
        let chan = channel(&self.policy_url, &self.token()?, Duration::from_secs(self.timeout))
            .with_context(|| format!("policy url {}", self.policy_url))?;
        Ok(PolicyClient::new(chan))
    }
}
