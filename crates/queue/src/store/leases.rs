//! Handing due jobs to workers for a time, and recording their results.

use std::time::Duration;

use super::keys::{
    Slot, class_prefix, due_key, encode_envelope, parse_due_key, slot_key, split_class,
};
use super::writes::{T, WriteSet};
use super::{Store, StoreError};
use crate::envelope::{
    CompleteOutcome, FailedRecipient, Job, JobClass, JobRecipient, LeaseToken, Outcome, QueueId,
    RecipientResult, RecipientStatus,
};
use crate::retry::RetryPolicy;

/// How many stale due entries one lease call repairs before giving up.
const MAX_LEASE_SKIPS: usize = 256;

impl Store {
    /// Leases the first due job of `class` to `worker` for `lease_time`:
    /// the pending recipients of that class whose next attempt is due at
    /// `now`. Until the lease ends nobody else is offered the job; after it,
    /// the job comes back by itself. `None` when nothing is due.
    pub fn lease(
        &self,
        class: &JobClass,
        worker: &str,
        lease_time: Duration,
        now: u64,
    ) -> Result<Option<Job>, StoreError> {
        let lease_secs = lease_time.as_secs() + u64::from(lease_time.subsec_nanos() > 0);
        let lease_until = now.saturating_add(lease_secs.max(1));
        let _guard = self.lock();
        let start = class_prefix(class);
        let mut end = class_prefix(class);
        end.extend_from_slice(&now.saturating_add(1).to_be_bytes());
        let candidates = self.inner.due.range(start..end);
        for entry in candidates.take(MAX_LEASE_SKIPS) {
            let (key, _) = entry?;
            let Some((_, due, id)) = parse_due_key(&key) else {
                tracing::warn!(key = ?key, "dropping malformed due entry");
                self.inner.due.remove(&key)?;
                continue;
            };
            let Some(env) = self.load(&id)? else {
                tracing::warn!(queue_id = %id, %class, "dropping due entry of a removed message");
                let mut ws = WriteSet::default();
                ws.del(T::Due, key.to_vec());
                ws.del(T::Slots, slot_key(class, &id));
                self.apply(ws)?;
                continue;
            };
            let recipients: Vec<JobRecipient> = env
                .recipients
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_pending() && &r.class == class && r.next_attempt <= now)
                .map(|(i, r)| JobRecipient {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    address: r.address.clone(),
                    original: r.original.clone(),
                    attempts: r.attempts,
                })
                .collect();
            if recipients.is_empty() {
                // The entry is earlier than any recipient: move it.
                let mut ws = WriteSet::default();
                self.schedule(&mut ws, &env, class, false)?;
                self.apply(ws)?;
                continue;
            }
            let token = loop {
                let t: u64 = rand::random();
                if t != 0 {
                    break t;
                }
            };
            let slot = Slot {
                due: lease_until,
                token,
                worker: worker.to_owned(),
            };
            let mut ws = WriteSet::default();
            if let Some(old) = self.load_slot(class, &id)?
                && old.due != due
            {
                ws.del(T::Due, due_key(class, old.due, &id));
            }
            ws.del(T::Due, key.to_vec());
            ws.put(T::Due, due_key(class, lease_until, &id), Vec::new());
            ws.put(T::Slots, slot_key(class, &id), slot.encode());
            self.apply(ws)?;
            let body = self
                .inner
                .bodies
                .get(id.as_str())?
                .ok_or_else(|| StoreError::Corrupt(format!("message {id} has no body")))?;
            tracing::debug!(queue_id = %id, %class, worker, recipients = recipients.len(),
                lease_until, "leased");
            return Ok(Some(Job {
                id,
                class: class.clone(),
                token: LeaseToken(token),
                lease_until,
                sender: env.sender,
                origin: env.origin,
                received_at: env.received_at,
                size: env.size,
                recipients,
                body: body.to_vec(),
            }));
        }
        Ok(None)
    }

    /// Records a worker's results for a leased job and ends the lease.
    ///
    /// Delivered and permanently failed recipients are done; a temporary
    /// failure is retried after the policy's back-off, or fails for good when
    /// the message is older than `give_up_after`. Recipients of the job with
    /// no result stay due at once. The outcome says which recipients just
    /// failed, whether a delay warning is due (it is marked sent), and
    /// whether the message is finished, in which case the caller sends any
    /// DSN and then calls [`Store::remove`].
    pub fn complete(
        &self,
        id: &QueueId,
        class: &JobClass,
        token: LeaseToken,
        results: &[RecipientResult],
        policy: &RetryPolicy,
        now: u64,
    ) -> Result<CompleteOutcome, StoreError> {
        let _guard = self.lock();
        self.check_lease(id, class, token)?;
        let mut env = self
            .load(id)?
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let mut newly_failed = Vec::new();
        for result in results {
            let index = result.index;
            let rcpt = usize::try_from(index)
                .ok()
                .and_then(|i| env.recipients.get_mut(i))
                .ok_or_else(|| StoreError::InvalidResult {
                    id: id.clone(),
                    index,
                    reason: "index out of range",
                })?;
            if &rcpt.class != class {
                return Err(StoreError::InvalidResult {
                    id: id.clone(),
                    index,
                    reason: "recipient of another class",
                });
            }
            if !rcpt.is_pending() {
                tracing::warn!(queue_id = %id, index, "result for a recipient already done");
                continue;
            }
            rcpt.attempts = rcpt.attempts.saturating_add(1);
            let (reply, failed, expired) = match &result.outcome {
                Outcome::Delivered { reply } => {
                    rcpt.status = RecipientStatus::Delivered;
                    (reply, false, false)
                }
                Outcome::PermanentFailure { reply } => {
                    rcpt.status = RecipientStatus::Failed;
                    (reply, true, false)
                }
                Outcome::TemporaryFailure { reply } => {
                    if policy.expired(env.received_at, now) {
                        rcpt.status = RecipientStatus::Failed;
                        (reply, true, true)
                    } else {
                        let wait = policy.delay_after(rcpt.attempts).as_secs();
                        rcpt.next_attempt = now.saturating_add(wait.max(1));
                        (reply, false, false)
                    }
                }
            };
            rcpt.last_reply = Some(reply.clone());
            tracing::info!(queue_id = %id, to = %rcpt.address, attempts = rcpt.attempts,
                status = ?rcpt.status, reply = %reply, "recipient result");
            if failed {
                newly_failed.push(FailedRecipient {
                    index,
                    address: rcpt.address.clone(),
                    original: rcpt.original.clone(),
                    reply: reply.clone(),
                    expired,
                });
            }
        }
        let finished = env.is_finished();
        let delay_warning =
            !finished && !env.delay_warning_sent && policy.warning_due(env.received_at, now);
        if delay_warning {
            env.delay_warning_sent = true;
        }
        let mut ws = WriteSet::default();
        ws.put(T::Envelopes, id.as_str().into(), encode_envelope(&env)?);
        self.schedule(&mut ws, &env, class, false)?;
        self.apply(ws)?;
        Ok(CompleteOutcome {
            newly_failed,
            delay_warning,
            finished,
            envelope: env,
        })
    }

    /// Gives a leased job back at once, attempts unchanged.
    pub fn release(
        &self,
        id: &QueueId,
        class: &JobClass,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        let _guard = self.lock();
        self.check_lease(id, class, token)?;
        let env = self
            .load(id)?
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let mut ws = WriteSet::default();
        self.schedule(&mut ws, &env, class, false)?;
        self.apply(ws)?;
        tracing::debug!(queue_id = %id, %class, "released");
        Ok(())
    }

    /// Ends every lease of `class` at once, as if each had been released: for a
    /// worker that restarts and knows that no earlier incarnation of it is still
    /// working (core-queue's own local delivery). Returns how many it ended.
    pub fn release_all(&self, class: &JobClass) -> Result<usize, StoreError> {
        let _guard = self.lock();
        let mut released = 0;
        for entry in self.inner.slots.scan_prefix(class_prefix(class)) {
            let (key, value) = entry?;
            let slot = Slot::decode(&value)?;
            if !slot.leased() {
                continue;
            }
            let Some((_, rest)) = split_class(&key) else {
                continue;
            };
            let Ok(id) = std::str::from_utf8(rest)
                .map_err(|_| ())
                .and_then(|s| s.parse::<QueueId>().map_err(|_| ()))
            else {
                continue;
            };
            let Some(env) = self.load(&id)? else {
                continue;
            };
            let mut ws = WriteSet::default();
            self.schedule(&mut ws, &env, class, false)?;
            self.apply(ws)?;
            released += 1;
        }
        if released > 0 {
            tracing::info!(%class, released, "stale leases ended");
        }
        Ok(released)
    }

    fn check_lease(
        &self,
        id: &QueueId,
        class: &JobClass,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        match self.load_slot(class, id)? {
            Some(slot) if slot.leased() && slot.token == token.0 => Ok(()),
            _ => Err(StoreError::LeaseLost {
                id: id.clone(),
                class: class.clone(),
            }),
        }
    }

    /// The due index of `class` up to and including `until`: (due time, id)
    /// pairs in due order, at most `limit`.
    pub fn due(
        &self,
        class: &JobClass,
        until: u64,
        limit: usize,
    ) -> Result<Vec<(u64, QueueId)>, StoreError> {
        let start = class_prefix(class);
        let mut end = class_prefix(class);
        end.extend_from_slice(&until.saturating_add(1).to_be_bytes());
        let mut out = Vec::new();
        for entry in self.inner.due.range(start..end).take(limit) {
            let (key, _) = entry?;
            if let Some((_, due, id)) = parse_due_key(&key) {
                out.push((due, id));
            }
        }
        Ok(out)
    }

    /// The earliest due time in `class` (a lease end counts), or `None` when
    /// the class has no work: a worker can sleep until then.
    pub fn next_due(&self, class: &JobClass) -> Result<Option<u64>, StoreError> {
        match self.inner.due.scan_prefix(class_prefix(class)).next() {
            Some(entry) => {
                let (key, _) = entry?;
                Ok(parse_due_key(&key).map(|(_, due, _)| due))
            }
            None => Ok(None),
        }
    }
}
