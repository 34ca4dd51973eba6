//! The command line: one file per subcommand.

mod api_token;
mod deliveries;
mod demo;
mod export;
mod filters;
mod keygen;
mod output;
mod prove;
mod purge;
mod query;
mod report;
mod serve;
mod store_arg;
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
    /// Read audit records, a page at a time.
    Query(query::QueryArgs),
    /// Export every matching record as NDJSON, CSV or OCSF.
    Export(export::ExportArgs),
    /// Reports over the audit records (summary counts).
    Report(report::ReportArgs),
    /// Query API tokens.
    ApiToken(api_token::ApiTokenArgs),
    /// Run the receiver against an in-process issuer, send a few logouts, show the records.
    Demo(demo::DemoArgs),
    /// Prove the audit trail: entry hashes, the chain, checkpoints, optionally signatures.
    Verify(verify::VerifyArgs),
    /// Write an Ed25519 key for signing checkpoints.
    Keygen(keygen::KeygenArgs),
    /// Print an RFC 6962 inclusion proof that a record is in a signed checkpoint.
    Prove(prove::ProveArgs),
    /// Check an inclusion proof offline with the public key.
    VerifyProof(prove::VerifyProofArgs),
    /// Retention: remove whole checkpointed ranges received before a date.
    Purge(purge::PurgeArgs),
    /// Deliveries to applications: list them, or send again.
    Deliveries(deliveries::DeliveriesArgs),
}

/// Runs the chosen subcommand.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Query(args) => query::run(args).await,
        Command::Export(args) => export::run(args).await,
        Command::Report(args) => report::run(args).await,
        Command::ApiToken(args) => api_token::run(args),
        Command::Demo(args) => demo::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Keygen(args) => keygen::run(args),
        Command::Prove(args) => prove::run(args).await,
        Command::VerifyProof(args) => prove::verify(args),
        Command::Purge(args) => purge::run(args).await,
        Command::Deliveries(args) => deliveries::run(args).await,
    }
}
