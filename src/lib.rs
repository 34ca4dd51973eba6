//! logout-ledger: an OpenID Connect Back-Channel Logout receiver that verifies every logout token
//! and keeps a durable audit record of every request.
//!
//! Crate map, one line per module:
//! - [`config`]: validated settings for one or several issuers, from flags, environment or TOML.
//! - [`keys`]: OIDC discovery, bounded key-set fetches and the per-issuer key cache.
//! - [`logout_token`]: the rules of Back-Channel Logout §2.6, rejection codes and session metadata.
//! - [`store`]: the audit store: records, the group-commit writer, filters and SQLite access.
//! - [`http`]: the router, the logout endpoint, health checks and error responses.
//! - [`api`]: the query API (`/api/v1/`) on its own listener: bearer tokens, reads, exports.
//! - [`export`]: export formats shared by the CLI and the API: NDJSON, CSV, OCSF.
//! - [`ledger`]: proving the audit trail: chain verification, checkpoints, proofs, retention.
//! - [`startup`]: builds the application from settings, binds it and runs it until shutdown.
//! - [`local_issuer`]: an in-process OIDC issuer for `demo`, tests and benchmarks.
//! - [`clock`]: the current time as an input, so time rules are testable.
//! - [`telemetry`]: log set-up (text or JSON).
//! - [`tlog`]: RFC 6962 Merkle trees and C2SP signed checkpoints (transparency-log primitives).
//! - [`util`]: leaf helpers (hex, URL redaction, random ids) that import nothing from the crate.
//!
//! The command-line interface lives in the binary (`src/cli/`), one file per subcommand.

pub mod api;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod export;
pub mod http;
pub mod keys;
#[cfg(test)]
mod layers;
pub mod ledger;
pub mod local_issuer;
pub mod logout_token;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tlog;
pub mod util;
