//! Integration tests: the real receiver on a random loopback port, a real issuer over HTTP
//! (its own keys, discovery document and key set) and a real SQLite file.

mod helpers;

mod conformance;
mod fetch;
mod keys;
mod ledger;
mod lifecycle;
mod metadata;
mod rejections;
mod replay;
mod request;
mod store;
