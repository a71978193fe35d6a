//! The state core-queue's tasks share, and the two things every path through it
//! does: accept a message (route, store, commit) and settle a message after
//! delivery results (bounces, delay warnings, removal).

use std::path::PathBuf;
use std::sync::Arc;

use qs_directory::Directory;
use qs_queue::{
    CompleteOutcome, Envelope, FailedRecipient, JobClass, Origin, QueueId, Recipient,
    RecipientStatus, RetryPolicy, Store, StoreError, unix_now,
};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::dsn::{self, RecipientReport, Report, ReportKind};
use crate::route::Router;

/// What core-queue's tasks share.
pub struct Core {
    /// The queue database.
    pub store: Arc<Store>,
    /// Recipient routing.
    pub router: Router,
    /// Retry schedule.
    pub policy: RetryPolicy,
    /// Our host name (Received, DSNs).
    pub hostname: String,
    /// The data folder (mail lives in `mail/` below it).
    pub data_dir: PathBuf,
    /// Copy every bounce to the postmaster.
    pub bounce_copy_to_postmaster: bool,
    /// Wakes the local delivery workers when local work arrives.
    pub local_work: Notify,
}

impl Core {
    /// The directory.
    pub fn directory(&self) -> &Directory {
        self.router.directory()
    }

    /// Routes, stores and durably commits a new message; answers only once it
    /// is on disk. Recipients that fail at routing are bounced at once.
    pub async fn accept(
        &self,
        sender: &str,
        recipients: &[String],
        origin: Origin,
        body: &[u8],
    ) -> Result<QueueId, StoreError> {
        let id = self.insert(sender, recipients, origin, body)?;
        self.store.commit().await?;
        self.local_work.notify_waiters();
        Ok(id)
    }

    /// Routes and stores without committing (the caller commits).
    pub fn insert(
        &self,
        sender: &str,
        recipients: &[String],
        origin: Origin,
        body: &[u8],
    ) -> Result<QueueId, StoreError> {
        if recipients.is_empty() {
            return Err(StoreError::InvalidEnvelope("no recipients".into()));
        }
        if let Some(bad) = recipients
            .iter()
            .find(|a| a.is_empty() || a.len() > 512 || a.chars().any(char::is_control))
        {
            return Err(StoreError::InvalidEnvelope(format!(
                "bad recipient address {bad:?}"
            )));
        }
        let now = unix_now();
        let routed = self.router.route(recipients, now);
        let envelope = Envelope::new(sender, routed, origin, now, body.len() as u64);
        let id = envelope.id.clone();
        self.store.insert(&envelope, body)?;
        for r in &envelope.recipients {
            match r.status {
                RecipientStatus::Failed => info!(
                    queue_id = %id, to = %r.address,
                    reply = r.last_reply.as_deref().unwrap_or(""), "refused at routing"
                ),
                _ => info!(queue_id = %id, to = %r.address, class = %r.class,
                    orig_to = r.original.as_deref().unwrap_or(""), "routed"),
            }
        }
        info!(queue_id = %id, from = %sender, size = body.len(),
            module = %envelope.origin.module, "queued");
        let failed: Vec<FailedRecipient> = envelope
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status == RecipientStatus::Failed)
            .map(|(i, r)| FailedRecipient {
                index: i as u32,
                address: r.address.clone(),
                original: r.original.clone(),
                reply: r.last_reply.clone().unwrap_or_default(),
                expired: false,
            })
            .collect();
        if !failed.is_empty() {
            let outcome = CompleteOutcome {
                finished: envelope.is_finished(),
                newly_failed: failed,
                delay_warning: false,
                envelope,
            };
            self.settle(&outcome, body)?;
        }
        Ok(id)
    }

    /// Acts on a completion: bounces newly failed recipients, sends a delay
    /// warning when due, removes a finished message. Does not commit.
    pub fn settle(&self, outcome: &CompleteOutcome, body: &[u8]) -> Result<(), StoreError> {
        let envelope = &outcome.envelope;
        if !outcome.newly_failed.is_empty() {
            let reports: Vec<RecipientReport> = outcome
                .newly_failed
                .iter()
                .map(|f| RecipientReport {
                    original: f.original.clone(),
                    address: f.address.clone(),
                    reply: if f.expired {
                        format!("{} (retried for too long; giving up)", f.reply)
                    } else {
                        f.reply.clone()
                    },
                    remote_host: None,
                })
                .collect();
            for f in &outcome.newly_failed {
                warn!(queue_id = %envelope.id, to = %f.address, reply = %f.reply,
                    expired = f.expired, "failed permanently");
            }
            self.report(ReportKind::Failed, envelope, &reports, body)?;
        }
        if outcome.delay_warning && !outcome.finished {
            let reports: Vec<RecipientReport> = envelope
                .recipients
                .iter()
                .filter(|r| r.is_pending())
                .map(|r| RecipientReport {
                    original: r.original.clone(),
                    address: r.address.clone(),
                    reply: r
                        .last_reply
                        .clone()
                        .unwrap_or_else(|| "not yet delivered".into()),
                    remote_host: None,
                })
                .collect();
            if !reports.is_empty() && !envelope.is_null_sender() {
                info!(queue_id = %envelope.id, "delay warning sent");
                self.report(ReportKind::Delayed, envelope, &reports, body)?;
            }
        }
        if outcome.finished {
            self.store.remove(&envelope.id)?;
            info!(queue_id = %envelope.id, "removed");
        }
        Ok(())
    }

    /// Queues a DSN about `envelope` (from `<>`). A message from `<>` never
    /// causes a bounce to its sender: its failures go to the postmaster alone.
    fn report(
        &self,
        kind: ReportKind,
        envelope: &Envelope,
        reports: &[RecipientReport],
        body: &[u8],
    ) -> Result<(), StoreError> {
        let postmaster = self.directory().snapshot().postmaster().map(str::to_string);
        let mut to: Vec<String> = Vec::new();
        if !envelope.is_null_sender() {
            to.push(envelope.sender.clone());
        }
        let copy = envelope.is_null_sender()
            || (kind == ReportKind::Failed && self.bounce_copy_to_postmaster);
        if copy {
            match &postmaster {
                Some(p) if !to.iter().any(|t| t.eq_ignore_ascii_case(p)) => to.push(p.clone()),
                Some(_) => {}
                None => {
                    warn!(queue_id = %envelope.id, "no postmaster configured for the bounce copy")
                }
            }
        }
        if to.is_empty() {
            return Ok(());
        }
        // The report names the original sender when it goes to the postmaster alone.
        let addressed_to = if envelope.is_null_sender() {
            postmaster.clone().unwrap_or_default()
        } else {
            envelope.sender.clone()
        };
        let bytes = dsn::build(&Report {
            kind,
            hostname: &self.hostname,
            queue_id: envelope.id.as_str(),
            to: &addressed_to,
            arrival: envelope.received_at,
            now: unix_now(),
            recipients: reports,
            original: body,
        });
        let origin = Origin {
            module: "core-queue".into(),
            peer: None,
            auth_user: None,
        };
        // Route without bouncing again: a DSN whose recipient fails is dropped
        // with a log line (it is from <>, so it cannot bounce).
        let now = unix_now();
        let routed: Vec<Recipient> = self.router.route(&to, now);
        let dsn = Envelope::new("", routed, origin, now, bytes.len() as u64);
        for r in dsn
            .recipients
            .iter()
            .filter(|r| r.status == RecipientStatus::Failed)
        {
            warn!(queue_id = %dsn.id, to = %r.address, "the report cannot be delivered");
        }
        if dsn.recipients.iter().any(Recipient::is_pending) {
            self.store.insert(&dsn, &bytes)?;
            info!(queue_id = %dsn.id, about = %envelope.id, kind = ?kind, "report queued");
            if dsn
                .recipients
                .iter()
                .any(|r| r.is_pending() && r.class == JobClass::local())
            {
                self.local_work.notify_waiters();
            }
        }
        Ok(())
    }
}
