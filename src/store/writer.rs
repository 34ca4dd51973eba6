//! The group-commit writer: one task owns the write connection, gathers whatever requests are
//! waiting into one transaction, and answers each only after that transaction commits.

use std::time::Duration;

use sqlx::SqliteConnection;
use tokio::sync::mpsc;

use super::{Job, StoreError, sqlite};

/// Most records committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;

/// Runs until every sender is dropped, then commits what is left and returns.
pub(super) async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Job>,
    timeout: Duration,
) {
    let mut next_id = None;
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let result = tokio::time::timeout(timeout + Duration::from_secs(1), async {
            let start = match next_id {
                Some(id) => id,
                None => sqlite::next_id(&mut conn).await?,
            };
            let records: Vec<_> = batch.iter().map(|j| &j.record).collect();
            sqlite::write_batch(&mut conn, &records, start).await
        })
        .await
        .unwrap_or(Err(StoreError::Timeout(timeout)));
        match result {
            Ok(committed) => {
                next_id = committed.last().map(|c| c.id + 1).or(next_id);
                for (job, c) in batch.drain(..).zip(committed) {
                    let _ = job.reply.send(Ok(c));
                }
            }
            Err(e) => {
                tracing::error!(records = batch.len(), "audit batch not committed: {e}");
                next_id = None; // re-read after a failure: nothing of this batch was kept
                let message = e.to_string();
                for job in batch.drain(..) {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Database(sqlx::Error::Protocol(
                            message.clone(),
                        ))));
                }
            }
        }
    }
    tracing::info!("audit writer stopped");
}
