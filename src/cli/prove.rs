//! `logout-ledger prove` and `verify-proof`: an RFC 6962 inclusion proof of one record, carrying
//! the record itself, and its offline check with the public key alone.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use logout_ledger::ledger::prove;

use super::store_arg::StoreArg;
use super::verify::read_key;

/// Flags of `prove`.
#[derive(Debug, Args)]
pub(crate) struct ProveArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The record's id.
    #[arg(long)]
    event: i64,
    /// Prove against this checkpoint file [default: the latest stored checkpoint covering it].
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// The log's public key, to check the checkpoint before proving against it.
    #[arg(long)]
    key: Option<PathBuf>,
}

/// Flags of `verify-proof`.
#[derive(Debug, Args)]
pub(crate) struct VerifyProofArgs {
    /// The log's public key (FILE.pub from keygen).
    #[arg(long)]
    key: PathBuf,
    /// The proof JSON, or `-` for standard input.
    proof: String,
}

/// Prints the proof as JSON.
pub(crate) async fn run(args: ProveArgs) -> anyhow::Result<()> {
    let key = args.key.as_ref().map(read_key).transpose()?;
    let note = args
        .checkpoint
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()?;
    let reader = args.store.open_reader().await?;
    let proof = prove::prove(&reader, args.event, note, key.as_ref()).await?;
    println!("{}", serde_json::to_string_pretty(&proof)?);
    Ok(())
}

/// Checks a proof offline (the record's entry hash recomputed, then the path); exit status 0
/// only when it holds, and then prints what the record says.
pub(crate) fn verify(args: VerifyProofArgs) -> anyhow::Result<()> {
    let key = read_key(&args.key)?;
    let text = if args.proof == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read standard input")?;
        s
    } else {
        std::fs::read_to_string(&args.proof)
            .with_context(|| format!("cannot read {}", args.proof))?
    };
    let (proof, cp) = prove::verify_proof_json(&text, &key)?;
    println!(
        "OK: record {} (entry hash {}, recomputed from the record) is in the tree of size {} signed by {} (origin {})",
        proof.id,
        proof.entry_hash,
        cp.size,
        key.name(),
        cp.origin
    );
    println!("The record says:");
    for (column, value) in proof.record.summary() {
        println!("  {column}: {value}");
    }
    Ok(())
}
