//! The group-commit writer: one task owns the write connection and the head of the hash chain,
//! gathers whatever jobs are waiting into one transaction, and answers each only after that
//! transaction commits. A failed batch is retried job by job, so one poisonous record cannot
//! fail its neighbours.

use std::time::Duration;

use serde_json::json;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::mpsc;

use super::chain::EventRow;
use super::entry::{Committed, Note, NoteKind, Outcome, logout_row, note_row, resolve};
use super::{Job, StoreError, sqlite};
use crate::keys::FetchedKeySet;
use crate::keys::jwks::hex;

/// Most jobs committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;

/// The end of the chain: the next sequence number and the last entry hash.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    pub(super) next_id: i64,
    pub(super) prev_hash: [u8; 32],
}

enum Done {
    Logout(Committed),
    Id(i64),
    KeySet(Option<i64>),
}

/// Runs until every sender is dropped, then commits what is left and returns.
pub(super) async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Job>,
    timeout: Duration,
) {
    let mut head = None;
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match commit(&mut conn, &mut head, &batch, timeout).await {
            Ok(done) => reply(batch.drain(..), done.into_iter().map(Ok)),
            Err(e) if batch.len() == 1 || matches!(e, StoreError::Timeout(_)) => {
                tracing::error!(jobs = batch.len(), "audit batch not committed: {e}");
                let msg = e.to_string();
                reply(batch.drain(..), std::iter::repeat_with(|| Err(msg.clone())));
            }
            Err(e) => {
                tracing::warn!(
                    jobs = batch.len(),
                    "audit batch failed ({e}); retrying job by job"
                );
                for job in batch.drain(..) {
                    let one = [job];
                    let result = commit(&mut conn, &mut head, &one, timeout).await;
                    let [job] = one;
                    match result {
                        Ok(done) => reply(std::iter::once(job), done.into_iter().map(Ok)),
                        Err(e) => {
                            tracing::error!("audit record not committed: {e}");
                            reply(std::iter::once(job), std::iter::once(Err(e.to_string())));
                        }
                    }
                }
            }
        }
    }
    tracing::info!("audit writer stopped");
}

fn reply(jobs: impl Iterator<Item = Job>, results: impl Iterator<Item = Result<Done, String>>) {
    for (job, result) in jobs.zip(results) {
        let failed = |m: &String| StoreError::BatchFailed(m.clone());
        match job {
            Job::Logout(_, tx) => {
                let _ = tx.send(match &result {
                    Ok(Done::Logout(c)) => Ok(c.clone()),
                    Ok(_) => Err(StoreError::BatchFailed(
                        "internal: wrong result kind".into(),
                    )),
                    Err(m) => Err(failed(m)),
                });
            }
            Job::Note(_, tx) => {
                let _ = tx.send(match &result {
                    Ok(Done::Id(id)) => Ok(*id),
                    Ok(_) => Err(StoreError::BatchFailed(
                        "internal: wrong result kind".into(),
                    )),
                    Err(m) => Err(failed(m)),
                });
            }
            Job::KeySet(_, _, tx) => {
                let _ = tx.send(match &result {
                    Ok(Done::KeySet(id)) => Ok(*id),
                    Ok(_) => Err(StoreError::BatchFailed(
                        "internal: wrong result kind".into(),
                    )),
                    Err(m) => Err(failed(m)),
                });
            }
        }
    }
}

/// Commits `jobs` in one transaction within the timeout; on failure the head is re-read.
async fn commit(
    conn: &mut SqliteConnection,
    head: &mut Option<Head>,
    jobs: &[Job],
    timeout: Duration,
) -> Result<Vec<Done>, StoreError> {
    let result = tokio::time::timeout(timeout + Duration::from_secs(1), async {
        let start = match *head {
            Some(h) => h,
            None => sqlite::chain_head(conn).await?,
        };
        let mut tx = conn.begin().await?;
        let mut cursor = start;
        let done = write_jobs(&mut tx, jobs, &mut cursor).await?;
        tx.commit().await?;
        Ok::<_, StoreError>((done, cursor))
    })
    .await
    .unwrap_or(Err(StoreError::Timeout(timeout)));
    match result {
        Ok((done, cursor)) => {
            *head = Some(cursor);
            Ok(done)
        }
        Err(e) => {
            *head = None; // nothing of this batch was kept: re-read the chain head next time
            Err(e)
        }
    }
}

async fn append(
    tx: &mut SqliteConnection,
    row: &EventRow,
    head: &mut Head,
    scratch: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let hash = row.entry_hash(&head.prev_hash, scratch);
    sqlite::insert_row(tx, row, &hash).await?;
    head.prev_hash = hash;
    head.next_id += 1;
    Ok(())
}

async fn write_jobs(
    tx: &mut SqliteConnection,
    jobs: &[Job],
    head: &mut Head,
) -> Result<Vec<Done>, StoreError> {
    let mut scratch = Vec::with_capacity(4096);
    let mut done = Vec::with_capacity(jobs.len());
    for job in jobs {
        let id = head.next_id;
        match job {
            Job::Logout(record, _) => {
                let existing = match (&record.facts.iss, &record.facts.jti, record.token_sha256) {
                    (Some(iss), Some(jti), Some(_)) => sqlite::accepted_token(tx, iss, jti).await?,
                    _ => None,
                };
                let (outcome, rejection, duplicate_of) = resolve(record, existing);
                let committed = Committed {
                    id,
                    outcome,
                    rejection,
                    duplicate_of,
                };
                append(tx, &logout_row(id, record, &committed), head, &mut scratch).await?;
                if let (Outcome::Accepted, Some(iss), Some(jti), Some(sha)) = (
                    outcome,
                    &record.facts.iss,
                    &record.facts.jti,
                    record.token_sha256,
                ) {
                    sqlite::insert_accepted(tx, iss, jti, &sha, id).await?;
                }
                if let Some(meta) = &record.facts.metadata {
                    sqlite::insert_pairs(tx, id, &meta.pairs).await?;
                }
                done.push(Done::Logout(committed));
            }
            Job::Note(note, _) => {
                append(tx, &note_row(id, note), head, &mut scratch).await?;
                done.push(Done::Id(id));
            }
            Job::KeySet(set, seen_at, _) => {
                done.push(Done::KeySet(
                    archive_key_set(tx, set, *seen_at, head, &mut scratch).await?,
                ));
            }
        }
    }
    Ok(done)
}

async fn archive_key_set(
    tx: &mut SqliteConnection,
    set: &FetchedKeySet,
    seen_at: i64,
    head: &mut Head,
    scratch: &mut Vec<u8>,
) -> Result<Option<i64>, StoreError> {
    if sqlite::touch_key_set(tx, &set.digest, seen_at).await? {
        return Ok(None);
    }
    let previous = sqlite::latest_key_set(tx, &set.issuer).await?;
    sqlite::insert_key_set(tx, set, seen_at).await?;
    let (prev_digest, prev_kids) = match previous {
        Some((d, kids)) => (Some(hex(&d)), kids),
        None => (None, Vec::new()),
    };
    let added: Vec<&String> = set.kids.iter().filter(|k| !prev_kids.contains(k)).collect();
    let removed: Vec<&String> = prev_kids.iter().filter(|k| !set.kids.contains(k)).collect();
    let note = Note {
        kind: NoteKind::System,
        action: "keyset_change".into(),
        details: json!({
            "issuer": set.issuer,
            "digest": hex(&set.digest),
            "previous_digest": prev_digest,
            "kids": set.kids,
            "added": added,
            "removed": removed,
        }),
        at: seen_at,
    };
    let id = head.next_id;
    append(tx, &note_row(id, &note), head, scratch).await?;
    Ok(Some(id))
}
