//! Local delivery: lease `local` jobs, write each recipient's copy into their
//! Maildir INBOX (or their Junk folder, for what smtp-server's DMARC check
//! quarantined), report the results.
//!
//! Each copy gets `Return-Path` and `Delivered-To` on top. Delivery is
//! idempotent per (queue id, recipient): the Maildir delivery key is exactly
//! that, so a crash between the write and the queue's record of it never
//! duplicates a message. Several jobs are leased at once and grouped by
//! mailbox, so that one folder fsync serves many messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use qs_mailstore::{DeliveryItem, FolderName, Mailbox, SpecialUse};
use qs_queue::{Job, JobClass, Origin, Outcome, RecipientResult, Reply, unix_now};
use qs_service::shutdown::Shutdown;
use tracing::{error, info, warn};

use crate::core::Core;
use qs_queue::message;

/// Jobs leased in one round.
const BATCH: usize = 128;
/// How long a lease lasts; a crashed worker's jobs come back after it.
const LEASE: Duration = Duration::from_secs(120);

/// Runs one local delivery worker until shutdown.
pub async fn run_worker(core: Arc<Core>, name: String, mut shutdown: Shutdown) {
    let class = JobClass::local();
    loop {
        if shutdown.is_fired() {
            return;
        }
        // Register for a wake-up before looking, so no notification is missed.
        let notified = core.local_work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let mut jobs = Vec::new();
        let now = unix_now();
        while jobs.len() < BATCH {
            match core.store.lease(&class, &name, LEASE, now) {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) => break,
                Err(e) => {
                    error!(error = %e, "cannot lease local work");
                    break;
                }
            }
        }
        if jobs.is_empty() {
            let wait = match core.store.next_due(&class) {
                Ok(Some(due)) => Duration::from_secs(due.saturating_sub(unix_now()).clamp(1, 60)),
                _ => Duration::from_secs(60),
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait() => return,
            }
            continue;
        }

        let worker_core = core.clone();
        let delivered = tokio::task::spawn_blocking(move || deliver_jobs(&worker_core, jobs)).await;
        let results = match delivered {
            Ok(results) => results,
            Err(e) => {
                // The leases run out and the jobs come back.
                error!(error = %e, "local delivery task failed");
                continue;
            }
        };
        for (job, results) in results {
            match core.store.complete(
                &job.id,
                &class,
                job.token,
                &results,
                &core.policy,
                unix_now(),
            ) {
                Ok(outcome) => {
                    if let Err(e) = core.settle(&outcome, &job.body) {
                        error!(queue_id = %job.id, error = %e, "cannot settle the message");
                    }
                }
                Err(e) => warn!(queue_id = %job.id, error = %e, "cannot record the delivery"),
            }
        }
        if let Err(e) = core.store.commit().await {
            error!(error = %e, "cannot commit delivery results");
        }
    }
}

/// Delivers every recipient of `jobs`; blocking (file writes and fsyncs).
fn deliver_jobs(core: &Core, jobs: Vec<Job>) -> Vec<(Job, Vec<RecipientResult>)> {
    struct Pending {
        job: usize,
        index: u32,
        key: String,
        bytes: Vec<u8>,
        address: String,
    }
    let snapshot = core.directory().snapshot();
    let mut results: Vec<Vec<RecipientResult>> = vec![Vec::new(); jobs.len()];
    let mut by_mailbox: HashMap<(PathBuf, FolderName), Vec<Pending>> = HashMap::new();

    for (j, job) in jobs.iter().enumerate() {
        // The same test smtp-server makes at the end of DATA: what it could
        // see there was refused, so this finds only loops through aliases
        // and forwards, or mail from other producers.
        let trace = message::LoopTrace::read(&job.body);
        // The junk mark is smtp-server's own (it removes any that comes from
        // outside), so it counts only on mail that came from there.
        let folder = if job.origin.module == Origin::SMTP_SERVER
            && message::count(&job.body, message::JUNK_FIELD) > 0
        {
            SpecialUse::Junk.folder_name()
        } else {
            FolderName::inbox()
        };
        for r in &job.recipients {
            let fail = |reply: Reply| RecipientResult {
                index: r.index,
                outcome: Outcome::PermanentFailure { reply },
            };
            if let Some(reply) = trace.loop_reply(&r.address) {
                results[j].push(fail(reply));
                continue;
            }
            let Some(user) = snapshot.user(&r.address) else {
                results[j].push(fail(Reply::new(
                    550,
                    "5.1.1",
                    &format!("<{}>: no such user here", r.address),
                )));
                continue;
            };
            let Some((local, domain)) = user.address().rsplit_once('@') else {
                results[j].push(fail(Reply::new(
                    553,
                    "5.1.3",
                    &format!("<{}>: malformed address", r.address),
                )));
                continue;
            };
            let root = match qs_mailstore::mailbox_path(&core.data_dir, domain, local) {
                Ok(root) => root,
                Err(e) => {
                    results[j].push(fail(Reply::new(
                        553,
                        "5.1.3",
                        &format!("<{}>: {e}", r.address),
                    )));
                    continue;
                }
            };
            let trace = vec![
                format!("Return-Path: <{}>", job.sender),
                format!("Delivered-To: {}", user.address()),
            ];
            by_mailbox
                .entry((root, folder.clone()))
                .or_default()
                .push(Pending {
                    job: j,
                    index: r.index,
                    key: format!("{}:{}", job.id, user.address()),
                    bytes: message::prepend(&trace, &job.body),
                    address: user.address().to_string(),
                });
        }
    }

    for ((root, folder), pending) in by_mailbox {
        let outcome: Vec<Result<(), String>> = match Mailbox::open(root.clone(), &core.hostname) {
            Ok(mailbox) => {
                let items: Vec<DeliveryItem<'_>> = pending
                    .iter()
                    .map(|p| DeliveryItem {
                        key: &p.key,
                        bytes: &p.bytes,
                    })
                    .collect();
                mailbox
                    .deliver_many(&folder, &items)
                    .into_iter()
                    .map(|r| r.map(|_| ()).map_err(|e| e.to_string()))
                    .collect()
            }
            Err(e) => pending.iter().map(|_| Err(e.to_string())).collect(),
        };
        for (p, result) in pending.into_iter().zip(outcome) {
            let job = &jobs[p.job];
            let outcome = match result {
                Ok(()) => {
                    info!(queue_id = %job.id, to = %p.address, "delivered to the mailbox");
                    Outcome::Delivered {
                        reply: Reply::new(250, "2.0.0", "delivered to the mailbox"),
                    }
                }
                Err(detail) => {
                    error!(queue_id = %job.id, to = %p.address, mailbox = %root.display(),
                        error = %detail, "mailbox write failed; will retry");
                    Outcome::TemporaryFailure {
                        reply: Reply::new(451, "4.3.0", "mailbox temporarily unavailable"),
                    }
                }
            };
            results[p.job].push(RecipientResult {
                index: p.index,
                outcome,
            });
        }
    }
    jobs.into_iter().zip(results).collect()
}
