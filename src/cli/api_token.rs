//! `logout-ledger api-token new`: a fresh query API token, shown once, and the line that
//! configures the service with its digest.

use clap::{Args, Subcommand};
use logout_ledger::config::ApiToken;

/// API tokens.
#[derive(Debug, Args)]
pub(super) struct ApiTokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a new random token and its configuration line.
    New {
        /// Who will hold the token; written into the access record of every read it makes.
        #[arg(long)]
        label: String,
    },
}

/// Runs `api-token`.
pub(super) fn run(args: ApiTokenArgs) -> anyhow::Result<()> {
    let TokenCommand::New { label } = args.command;
    let (token, entry) = ApiToken::generate(&label)?;
    let spec = entry.spec();
    println!("New query API token for {label:?}. It is shown only now and stored nowhere:");
    println!();
    println!("  {token}");
    println!();
    println!("Configure the service with its SHA-256, in the --config TOML file:");
    println!();
    println!("  api_tokens = [\"{spec}\"]");
    println!();
    println!("or in the environment (several tokens: comma-separated):");
    println!();
    println!("  LOGOUT_LEDGER_API_TOKENS={spec}");
    println!();
    println!("Clients send:  Authorization: Bearer {token}");
    Ok(())
}
