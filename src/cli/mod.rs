//! The command line: one file per subcommand.

mod demo;
mod output;
mod query;
mod serve;
mod verify;

use clap::{Parser, Subcommand};

/// OpenID Connect Back-Channel Logout receiver and audit sink.
#[derive(Debug, Parser)]
#[command(name = "logout-ledger", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the receiver.
    Serve(Box<serve::ServeArgs>),
    /// Read audit records.
    Query(query::QueryArgs),
    /// Run the receiver against an in-process issuer, send a few logouts, show the records.
    Demo(demo::DemoArgs),
    /// Prove the audit trail: recompute every entry hash and check the chain.
    Verify(verify::VerifyArgs),
}

/// Runs the chosen subcommand.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Query(args) => query::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Verify(args) => verify::run(args).await,
    }
}
