//! Group commit: many callers, one flush.
//!
//! A caller that has written to the store calls [`Committer::commit`] and is
//! answered only after a flush that *started after* its call. A background
//! task takes every waiter queued so far (after letting the tasks ready to
//! run queue theirs: it yields once), runs one flush, wakes them all with
//! its result, and starts over with whoever queued meanwhile. With a disk that
//! syncs a few thousand times a second and many concurrent producers, each
//! flush serves many messages.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

/// A flush that could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The flush to disk failed; the writes may not be durable.
    #[error("flush to disk failed: {0}")]
    Flush(String),
    /// The commit task has stopped (the store is closed or the runtime is
    /// shutting down).
    #[error("the commit task has stopped")]
    Stopped,
}

type Waiter = oneshot::Sender<Result<(), CommitError>>;

/// A handle on a group-commit task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Committer {
    waiters: mpsc::UnboundedSender<Waiter>,
    flushes: Arc<AtomicU64>,
}

impl Committer {
    /// Starts the commit task on the current tokio runtime; `flush` makes
    /// everything written so far durable. The task ends when the last handle
    /// is dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start<F, Fut>(flush: F) -> Committer
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let flushes = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(rx, flush, Arc::clone(&flushes)));
        Committer {
            waiters: tx,
            flushes,
        }
    }

    /// Returns once a flush that began after this call has finished.
    pub async fn commit(&self) -> Result<(), CommitError> {
        let (tx, rx) = oneshot::channel();
        self.waiters.send(tx).map_err(|_| CommitError::Stopped)?;
        rx.await.map_err(|_| CommitError::Stopped)?
    }

    /// The number of flushes run so far.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

async fn run<F, Fut>(mut rx: mpsc::UnboundedReceiver<Waiter>, flush: F, flushes: Arc<AtomicU64>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        // Let the tasks that are ready to run now (other sessions with a
        // write done) queue their commits, so one flush takes them too; with
        // nothing else to run this returns at once.
        tokio::task::yield_now().await;
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = flush().await.map_err(CommitError::Flush);
        flushes.fetch_add(1, Ordering::Relaxed);
        match &result {
            Ok(()) => tracing::trace!(waiters = batch.len(), "group commit"),
            Err(e) => tracing::error!(waiters = batch.len(), error = %e, "group commit failed"),
        }
        for waiter in batch.drain(..) {
            // A waiter that gave up has nobody left to tell.
            let _ = waiter.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_flushes() {
        let committer = Committer::start(|| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(())
        });
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let c = committer.clone();
                tokio::spawn(async move { c.commit().await })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("commit");
        }
        let flushes = committer.flushes();
        assert!(flushes >= 1);
        assert!(flushes < 64, "{flushes} flushes for 64 commits");
    }

    #[tokio::test]
    async fn a_commit_waits_for_a_flush_that_started_after_it() {
        // While a flush is running, a new commit must wait for the next one.
        let in_flush = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU64::new(0));
        let (in_f, st) = (Arc::clone(&in_flush), Arc::clone(&started));
        let committer = Committer::start(move || {
            let (in_f, st) = (Arc::clone(&in_f), Arc::clone(&st));
            async move {
                st.fetch_add(1, Ordering::SeqCst);
                in_f.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                in_f.store(false, Ordering::SeqCst);
                Ok(())
            }
        });
        let c1 = committer.clone();
        let first = tokio::spawn(async move { c1.commit().await });
        while !in_flush.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        committer.commit().await.expect("commit");
        assert_eq!(started.load(Ordering::SeqCst), 2);
        first.await.expect("join").expect("commit");
    }

    #[tokio::test]
    async fn flush_errors_reach_every_waiter() {
        let committer = Committer::start(|| async { Err("disk on fire".to_owned()) });
        let err = committer.commit().await.expect_err("must fail");
        assert_eq!(err, CommitError::Flush("disk on fire".to_owned()));
    }
}
