//! `logout-ledger keygen`: an Ed25519 key for signing checkpoints.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use logout_ledger::ledger::checkpoint::DEFAULT_ORIGIN;
use logout_ledger::tlog::NoteSigner;
use logout_ledger::tlog::note::{generate_pkcs8, pem_encode, public_key_pem};

/// Flags of `keygen`.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM); the public key goes to FILE.pub.
    #[arg(long)]
    output: PathBuf,
    /// The key's name, which is also the checkpoint origin.
    #[arg(long, default_value = DEFAULT_ORIGIN)]
    name: String,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

fn create(path: &PathBuf, force: bool, private: bool) -> anyhow::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let file = opts.open(path).with_context(|| {
        format!(
            "cannot create {} (use --force to replace it)",
            path.display()
        )
    })?;
    // The mode above applies only to a new file: a replaced key is narrowed to 0600 too.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    Ok(file)
}

/// Writes FILE (private, mode 0600), FILE.pub (note verifier key) and FILE.pub.pem (SPKI), and
/// prints the verifier key.
pub(crate) fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let der = generate_pkcs8()?;
    let signer = NoteSigner::new(&args.name, &der).context("key name")?;
    let public = PathBuf::from(format!("{}.pub", args.output.display()));
    let public_pem = PathBuf::from(format!("{}.pub.pem", args.output.display()));
    create(&args.output, args.force, true)?
        .write_all(pem_encode("PRIVATE KEY", &der).as_bytes())?;
    create(&public, args.force, false)?
        .write_all(format!("{}\n", signer.verifier_key()).as_bytes())?;
    create(&public_pem, args.force, false)?
        .write_all(public_key_pem(signer.public_key()).as_bytes())?;
    eprintln!("private key: {} (keep it secret)", args.output.display());
    eprintln!(
        "public key:  {} (note verifier key), {} (PEM)",
        public.display(),
        public_pem.display()
    );
    println!("{}", signer.verifier_key());
    Ok(())
}
