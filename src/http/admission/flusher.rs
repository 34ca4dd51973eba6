//! Writes each window's counts as `rejections_suppressed` system records: every
//! [`FLUSH_EVERY`], and once more at shutdown (before the `stop` record). A crash loses at most
//! the open window's counts; a part the store refuses is given back to the next window.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::Admission;
use crate::clock::SharedClock;
use crate::store::AuditStore;

/// How long a window stays open: the counts of one minute are one record per source.
pub const FLUSH_EVERY: Duration = Duration::from_secs(60);

/// The running flusher; [`Flusher::finish`] writes the last window and ends it.
#[derive(Debug)]
pub struct Flusher {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Flusher {
    /// Starts writing `admission`'s windows to `store` every `every`.
    pub fn spawn(
        admission: Arc<Admission>,
        store: AuditStore,
        clock: SharedClock,
        every: Duration,
    ) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => flush(&admission, &store, &clock, false).await,
                    _ = &mut stopped => {
                        flush(&admission, &store, &clock, true).await;
                        return;
                    }
                }
            }
        });
        Self { stop, task }
    }

    /// Writes the open window and waits for the flusher to end (call once no request runs).
    pub async fn finish(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::error!("suppressed-rejection counts not written: {e}");
        }
    }
}

/// Writes the closed window's records together (one writer batch); a refused part goes back.
async fn flush(admission: &Admission, store: &AuditStore, clock: &SharedClock, last: bool) {
    let parts = admission.close_window();
    if parts.is_empty() {
        return;
    }
    let at = clock.now_millis();
    // Submitted together so the writer commits them in one batch.
    let writes: Vec<_> = parts
        .iter()
        .map(|p| {
            let (store, note) = (store.clone(), p.note(at));
            tokio::spawn(async move { store.note(note).await })
        })
        .collect();
    let mut lost = 0u64;
    for (part, write) in parts.into_iter().zip(writes) {
        let result = match write.await {
            Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            if last {
                lost += part.count();
            } else {
                tracing::warn!("suppressed-rejection counts kept for the next window: {e}");
                admission.restore(part);
            }
        }
    }
    if lost > 0 {
        tracing::error!(
            requests = lost,
            "suppressed-rejection counts not stored at shutdown"
        );
    }
}
