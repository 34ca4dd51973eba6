//! Integration tests: the real receiver on a random loopback port, a real issuer over HTTP
//! (its own keys, discovery document and key set) and a real SQLite file.

mod helpers;

mod admission;
mod conformance;
mod console;
mod console_e2e;
mod deliveries;
mod edge;
mod fetch;
mod key_age;
mod keys;
mod ledger;
mod lifecycle;
mod metadata;
mod pg_tls;
mod private_files;
mod proof_record;
mod query_api;
mod query_cli;
mod query_export;
mod query_plans;
mod query_sessions;
mod rejections;
mod replay;
mod replicas;
mod request;
mod request_ids;
mod settings;
mod store;
mod store_outage;
mod strict_claims;
mod unverified;
