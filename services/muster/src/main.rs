//! The `muster` binary: `muster up` runs everything locally, `muster serve <service>`
//! runs one service for deployment, and the other commands operate a running Muster.

mod cli;
mod output;
mod services;
mod up;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::cli::Connection;
use crate::cli::directory_cmds::{self, DirectoryCmd};
use crate::cli::membership_cmds::{self, AuditCmd, EventsCmd, LoginArgs, MembersCmd, SeatsCmd};
use crate::cli::policy_cmds::{self, DecideArgs, OrgsCmd, ParentsCmd, ProductsCmd, SettingsCmd};
use crate::output::{Output, describe_error};

/// Muster keeps an application's organizations in step with an identity provider.
#[derive(Parser, Debug)]
#[command(name = "muster", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    conn: Connection,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every service locally (SQLite under --data-dir) with a demo org.
    Up(up::UpArgs),
    /// Run one service from a config file (for deployment).
    Serve(services::ServeArgs),
    /// Run one service's database migrations and exit (an upgrade step, an init container).
    Migrate(services::ServeArgs),
    /// Check a service's config: print it as the service would run with it, secrets redacted.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// This binary's version.
    Version,
    /// Make caller tokens and their hashes.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Parent organizations.
    #[command(subcommand)]
    Parents(ParentsCmd),
    /// Organizations.
    #[command(subcommand)]
    Orgs(OrgsCmd),
    /// The product catalog.
    #[command(subcommand)]
    Products(ProductsCmd),
    /// An org's provisioning settings.
    #[command(subcommand)]
    Settings(SettingsCmd),
    /// Explain what policy decides for a made-up person.
    Decide(DecideArgs),
    /// An org's members.
    #[command(subcommand)]
    Members(MembersCmd),
    /// An org's seats.
    #[command(subcommand)]
    Seats(SeatsCmd),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Member events.
    #[command(subcommand)]
    Events(EventsCmd),
    /// Simulate a JIT login through membership and show what it did and why.
    Login(LoginArgs),
    /// Directories: mirror, sync runs, the brake, previews, directory events.
    #[command(subcommand)]
    Directory(DirectoryCmd),
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Load SERVICE's config (the file, then MUSTER_<SERVICE>__… variables) and print the effective one.
    Check(services::ServeArgs),
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// A new random token and the hash to put in a service's `auth.token_sha256`.
    New,
    /// The hash of a token.
    Hash {
        /// The token.
        token: String,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    let conn = cli.conn;
    match cli.command {
        Command::Up(args) => up::up(args, &conn.data_dir).await,
        Command::Serve(args) => services::serve(args).await,
        Command::Migrate(args) => services::migrate(args).await,
        Command::Config(ConfigCmd::Check(args)) => {
            let shown = services::config_check(args)?;
            out.print(serde_json::json!({"config": shown}), || shown.trim_end().to_string());
            Ok(())
        }
        Command::Version => {
            let version = env!("CARGO_PKG_VERSION");
            out.print(serde_json::json!({"version": version}), || format!("muster {version}"));
            Ok(())
        }
        Command::Token(TokenCmd::New) => {
            let token = muster_runtime::auth::generate_token();
            let hash = muster_runtime::auth::hash_token(&token);
            out.print(serde_json::json!({"token": token, "sha256": hash}), || {
                format!("token:  {token}\nsha256: {hash}\n\nGive the token to the caller; put the sha256 in the service's auth.token_sha256.")
            });
            Ok(())
        }
        Command::Token(TokenCmd::Hash { token }) => {
            println!("{}", muster_runtime::auth::hash_token(&token));
            Ok(())
        }
        Command::Parents(cmd) => policy_cmds::parents(&conn, out, cmd).await,
        Command::Orgs(cmd) => policy_cmds::orgs(&conn, out, cmd).await,
        Command::Products(cmd) => policy_cmds::products(&conn, out, cmd).await,
        Command::Settings(cmd) => policy_cmds::settings(&conn, out, cmd).await,
        Command::Decide(args) => policy_cmds::decide(&conn, out, args).await,
        Command::Members(cmd) => membership_cmds::members(&conn, out, cmd).await,
        Command::Seats(cmd) => membership_cmds::seats(&conn, out, cmd).await,
        Command::Audit(cmd) => membership_cmds::audit(&conn, out, cmd).await,
        Command::Events(cmd) => membership_cmds::events(&conn, out, cmd).await,
        Command::Login(args) => membership_cmds::login(&conn, out, args).await,
        Command::Directory(cmd) => directory_cmds::directory(&conn, out, cmd).await,
    }
}

/// The client flags a command given on the command line does not use: `serve` takes
/// every setting from its config file and `MUSTER_<SERVICE>__…` variables, and `up`
/// from its own `--*-addr` flags. Ignoring them silently would mislead.
fn unused_flags(matches: &clap::ArgMatches) -> Option<(String, Vec<String>)> {
    let (name, sub) = matches.subcommand()?;
    let unused: &[&str] = match name {
        "serve" | "migrate" => {
            &["policy_url", "membership_url", "directory_url", "token", "data_dir", "timeout", "json"]
        }
        "up" => &["policy_url", "membership_url", "directory_url", "token", "timeout", "json"],
        _ => return None,
    };
    let given: Vec<String> = unused
        .iter()
        .filter(|id| {
            [matches, sub]
                .iter()
                .any(|m| m.try_get_raw(id).is_ok() && m.value_source(id) == Some(ValueSource::CommandLine))
        })
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect();
    (!given.is_empty()).then(|| (name.to_string(), given))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    if let Some((command, flags)) = unused_flags(&matches) {
        let hint = match command.as_str() {
            "serve" => {
                "it reads its settings from --config FILE and MUSTER_<SERVICE>__<SECTION>__<KEY> variables (docs/operations.md)"
            }
            _ => "it listens on --policy-addr, --membership-addr, --directory-addr and --scim-addr",
        };
        eprintln!("error: `muster {command}` does not use {}: {hint}", flags.join(", "));
        return std::process::ExitCode::from(2);
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Already in the service's log, in its format.
        Err(err) if err.downcast_ref::<services::Reported>().is_some() => std::process::ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {}", describe_error(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
