//! The state core-queue's tasks share, and the two things every path through it
//! does: accept a message (route, store, commit) and settle a message after
//! delivery results (bounces, delay warnings, removal).

use std::path::PathBuf;
use std::sync::Arc;

use qs_directory::Directory;
use qs_queue::{
    CompleteOutcome, Envelope, FailedRecipient, JobClass, Origin, QueueId, Recipient,
    RecipientStatus, Reply, RetryPolicy, Store, StoreError, unix_now,
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
    /// Wakes one idle local delivery worker when local work arrives (a stored
    /// permit when none is idle), so an arrival does not send them all leasing.
    pub local_work: Notify,
    /// Request keys of enqueues being processed now.
    pub keys_in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The state namespace of enqueue request keys.
pub const REQUEST_KEYS: &str = "enqueue-keys";
/// How long a request key is remembered.
pub const REQUEST_KEY_TTL: u64 = 24 * 3600;

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
        self.local_work.notify_one();
        Ok(id)
    }

    /// Like [`Core::accept`], but a request key seen before (a client retrying a
    /// request whose answer was lost) answers the first queue id again instead
    /// of queueing the message twice.
    pub async fn accept_once(
        &self,
        key: &str,
        sender: &str,
        recipients: &[String],
        origin: Origin,
        body: &[u8],
    ) -> Result<QueueId, StoreError> {
        // The same key may arrive again while the first request still runs.
        loop {
            let inserted = self
                .keys_in_flight
                .lock()
                .map(|mut keys| keys.insert(key.to_string()))
                .unwrap_or(true);
            if inserted {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let result = self
            .accept_once_locked(key, sender, recipients, origin, body)
            .await;
        if let Ok(mut keys) = self.keys_in_flight.lock() {
            keys.remove(key);
        }
        result
    }

    async fn accept_once_locked(
        &self,
        key: &str,
        sender: &str,
        recipients: &[String],
        origin: Origin,
        body: &[u8],
    ) -> Result<QueueId, StoreError> {
        // The record is "pending ID TIME" from before the message is stored, and
        // "done ID TIME" from before it is removed. sled recovers a prefix of its
        // log, so a stored message always has its record, and a removed one its
        // "done" record: a retry can tell "queued", "delivered" and "never made it".
        if let Some(seen) = self.store.state_get(REQUEST_KEYS, key)? {
            let text = String::from_utf8_lossy(&seen).into_owned();
            let mut words = text.split_whitespace();
            let state = words.next().unwrap_or("");
            if let Some(Ok(id)) = words.next().map(str::parse::<QueueId>)
                && (state == "done" || self.store.get(&id)?.is_some())
            {
                info!(queue_id = %id, "a retried enqueue: already queued");
                return Ok(id);
            }
        }
        let id = self.insert_keyed(sender, recipients, origin, body, Some(key))?;
        self.store.commit().await?;
        self.local_work.notify_one();
        Ok(id)
    }

    /// Forgets request keys older than [`REQUEST_KEY_TTL`]; returns how many.
    pub fn prune_request_keys(&self) -> Result<usize, StoreError> {
        let cutoff = unix_now().saturating_sub(REQUEST_KEY_TTL);
        let mut after: Option<String> = None;
        let mut pruned = 0;
        loop {
            let page = self
                .store
                .state_scan(REQUEST_KEYS, "", after.as_deref(), 1000)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            for (key, value) in &page {
                let stamp = String::from_utf8_lossy(value)
                    .split_whitespace()
                    .nth(2)
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(0);
                if stamp < cutoff {
                    self.store.state_delete(REQUEST_KEYS, key)?;
                    pruned += 1;
                }
            }
        }
        Ok(pruned)
    }

    /// Routes and stores without committing (the caller commits).
    pub fn insert(
        &self,
        sender: &str,
        recipients: &[String],
        origin: Origin,
        body: &[u8],
    ) -> Result<QueueId, StoreError> {
        self.insert_keyed(sender, recipients, origin, body, None)
    }

    fn insert_keyed(
        &self,
        sender: &str,
        recipients: &[String],
        origin: Origin,
        body: &[u8],
        request_key: Option<&str>,
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
        let mut envelope = Envelope::new(sender, routed, origin, now, body.len() as u64);
        let id = envelope.id.clone();
        if let Some(key) = request_key {
            envelope.request_key = Some(key.to_string());
            self.store
                .state_put(REQUEST_KEYS, key, format!("pending {id} {now}").as_bytes())?;
        }
        self.store.insert(&envelope, body)?;
        for r in &envelope.recipients {
            match r.status {
                RecipientStatus::Failed => info!(
                    queue_id = %id, to = %r.address,
                    reply = %r.last_reply.as_ref().map(Reply::to_string).unwrap_or_default(), "refused at routing"
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
                reply: r.last_reply.clone().unwrap_or_else(|| Reply::local("", "")),
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
                        f.reply
                            .clone()
                            .with_note("(retried for too long; giving up)")
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
            // A loop or a policy refusal of mail from an unauthenticated SMTP
            // client is told to the postmaster alone: its sender address is
            // the client's word, and a bounce to a forged one is backscatter.
            let (postmaster_only, to_sender): (Vec<RecipientReport>, Vec<RecipientReport>) =
                reports.into_iter().partition(|r| {
                    envelope.origin.is_unauthenticated_smtp()
                        && dsn::is_loop_or_policy_refusal(&r.reply)
                });
            if !to_sender.is_empty() {
                self.report(ReportKind::Failed, envelope, &to_sender, body, true)?;
            }
            if !postmaster_only.is_empty() {
                info!(queue_id = %envelope.id, recipients = postmaster_only.len(),
                    "a loop or policy refusal of unauthenticated mail: no report to the sender");
                self.report(ReportKind::Failed, envelope, &postmaster_only, body, false)?;
            }
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
                        .unwrap_or_else(|| Reply::local("", "not yet delivered")),
                    remote_host: None,
                })
                .collect();
            if !reports.is_empty() && !envelope.is_null_sender() {
                info!(queue_id = %envelope.id, "delay warning sent");
                self.report(ReportKind::Delayed, envelope, &reports, body, true)?;
            }
        }
        if outcome.finished {
            if let Some(key) = &envelope.request_key {
                let record = format!("done {} {}", envelope.id, unix_now());
                self.store.state_put(REQUEST_KEYS, key, record.as_bytes())?;
            }
            self.store.remove(&envelope.id)?;
        }
        Ok(())
    }

    /// Queues a DSN about `envelope` (from `<>`) to its sender when
    /// `to_sender`, with a copy of a bounce to the postmaster when
    /// `bounce_copy_to_postmaster`. A message from `<>` never causes a report
    /// to its sender; that report, and one kept from the sender, goes to the
    /// postmaster alone, whatever `bounce_copy_to_postmaster` says, so that
    /// somebody learns of it.
    fn report(
        &self,
        kind: ReportKind,
        envelope: &Envelope,
        reports: &[RecipientReport],
        body: &[u8],
        to_sender: bool,
    ) -> Result<(), StoreError> {
        let postmaster = self.directory().snapshot().postmaster().map(str::to_string);
        let to_sender = to_sender && !envelope.is_null_sender();
        let mut to: Vec<String> = Vec::new();
        if to_sender {
            to.push(envelope.sender.clone());
        }
        let copy = !to_sender || (kind == ReportKind::Failed && self.bounce_copy_to_postmaster);
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
        let addressed_to = if to_sender {
            envelope.sender.clone()
        } else {
            postmaster.clone().unwrap_or_default()
        };
        // Every report returns the original's header only, never its body
        // (`text/rfc822-headers`, RFC 3461's RET=HDRS): for mail from an
        // unauthenticated port-25 client that is the rule, not a default,
        // because its sender may be forged and the body is the client's own
        // text (see `dsn::build`).
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
                self.local_work.notify_one();
            }
        }
        Ok(())
    }
}
