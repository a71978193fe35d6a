//! Queueing, rescheduling and removing messages: each a few sled writes
//! made in an order that a crash between any two leaves repairable.

use super::keys::{Slot, decode_envelope, due_key, encode_envelope, slot_key};
use super::{Store, StoreError};
use crate::envelope::{Envelope, JobClass, QueueId};

/// Which tree a write goes to.
#[derive(Clone, Copy)]
pub(super) enum T {
    Envelopes,
    Bodies,
    Due,
    Slots,
}

/// Writes computed under the write lock, applied in order.
#[derive(Default)]
pub(super) struct WriteSet {
    ops: Vec<(T, Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteSet {
    pub(super) fn put(&mut self, tree: T, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((tree, key, Some(value)));
    }

    pub(super) fn del(&mut self, tree: T, key: Vec<u8>) {
        self.ops.push((tree, key, None));
    }
}

impl Store {
    /// Applies the writes in the order they were added; callers hold the
    /// write lock and order them so a crash between any two is repairable.
    pub(super) fn apply(&self, ws: WriteSet) -> Result<(), StoreError> {
        let i = &*self.inner;
        for (tree, key, value) in ws.ops {
            let tree = match tree {
                T::Envelopes => &i.envelopes,
                T::Bodies => &i.bodies,
                T::Due => &i.due,
                T::Slots => &i.slots,
            };
            match value {
                Some(v) => tree.insert(key, v)?,
                None => tree.remove(key)?,
            };
        }
        Ok(())
    }

    pub(super) fn load(&self, id: &QueueId) -> Result<Option<Envelope>, StoreError> {
        match self.inner.envelopes.get(id.as_str())? {
            Some(v) => decode_envelope(id.as_str().as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn load_slot(
        &self,
        class: &JobClass,
        id: &QueueId,
    ) -> Result<Option<Slot>, StoreError> {
        match self.inner.slots.get(slot_key(class, id))? {
            Some(v) => Slot::decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Brings the slot and due entry of (message, class) in line with the
    /// envelope. A held lease stays when `keep_lease` is set.
    pub(super) fn schedule(
        &self,
        ws: &mut WriteSet,
        env: &Envelope,
        class: &JobClass,
        keep_lease: bool,
    ) -> Result<(), StoreError> {
        let current = self.load_slot(class, &env.id)?;
        match (env.next_due(class), current) {
            (None, None) => {}
            (None, Some(old)) => {
                ws.del(T::Due, due_key(class, old.due, &env.id));
                ws.del(T::Slots, slot_key(class, &env.id));
            }
            (Some(_), Some(old)) if keep_lease && old.leased() => {}
            (Some(due), old) => {
                if let Some(old) = old {
                    ws.del(T::Due, due_key(class, old.due, &env.id));
                }
                ws.put(T::Due, due_key(class, due, &env.id), Vec::new());
                let slot = Slot {
                    due,
                    token: 0,
                    worker: String::new(),
                };
                ws.put(T::Slots, slot_key(class, &env.id), slot.encode());
            }
        }
        Ok(())
    }

    /// Queues a message: its bytes, a due entry for each class with pending
    /// recipients, and last its envelope.
    pub fn insert(&self, envelope: &Envelope, body: &[u8]) -> Result<(), StoreError> {
        if envelope.recipients.is_empty() {
            return Err(StoreError::InvalidEnvelope(format!(
                "message {} has no recipients",
                envelope.id
            )));
        }
        let _guard = self.lock();
        let id = &envelope.id;
        if self.inner.envelopes.contains_key(id.as_str())? {
            return Err(StoreError::Exists(id.clone()));
        }
        let mut ws = WriteSet::default();
        ws.put(T::Bodies, id.as_str().into(), body.to_vec());
        for class in envelope.classes() {
            self.schedule(&mut ws, envelope, &class, false)?;
        }
        ws.put(T::Envelopes, id.as_str().into(), encode_envelope(envelope)?);
        self.apply(ws)?;
        tracing::debug!(queue_id = %id, sender = %envelope.sender, size = body.len(),
            recipients = envelope.recipients.len(), "queued");
        Ok(())
    }

    /// Replaces the recipient list (e.g. after routing), keeping the due
    /// index in line. Held leases stay; a lease on a class left with no
    /// pending recipient ends, and its worker's results are refused.
    pub fn set_recipients(
        &self,
        id: &QueueId,
        recipients: Vec<crate::envelope::Recipient>,
    ) -> Result<Envelope, StoreError> {
        let _guard = self.lock();
        let mut env = self
            .load(id)?
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let mut classes = env.classes();
        env.recipients = recipients;
        classes.extend(env.classes());
        classes.sort();
        classes.dedup();
        let mut ws = WriteSet::default();
        ws.put(T::Envelopes, id.as_str().into(), encode_envelope(&env)?);
        for class in &classes {
            self.schedule(&mut ws, &env, class, true)?;
        }
        self.apply(ws)?;
        Ok(env)
    }

    /// Makes every pending recipient due at `now` (jobs leased now keep their
    /// lease).
    pub fn retry(&self, id: &QueueId, now: u64) -> Result<(), StoreError> {
        let _guard = self.lock();
        let mut env = self
            .load(id)?
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        for r in env.recipients.iter_mut().filter(|r| r.is_pending()) {
            r.next_attempt = r.next_attempt.min(now);
        }
        let mut ws = WriteSet::default();
        ws.put(T::Envelopes, id.as_str().into(), encode_envelope(&env)?);
        for class in env.classes() {
            self.schedule(&mut ws, &env, &class, true)?;
        }
        self.apply(ws)?;
        tracing::info!(queue_id = %id, "retry requested");
        Ok(())
    }

    /// Removes a message and its index entries. False if it was not queued.
    pub fn remove(&self, id: &QueueId) -> Result<bool, StoreError> {
        let _guard = self.lock();
        let Some(env) = self.load(id)? else {
            return Ok(false);
        };
        let mut ws = WriteSet::default();
        ws.del(T::Envelopes, id.as_str().into());
        for class in env.classes() {
            if let Some(slot) = self.load_slot(&class, id)? {
                ws.del(T::Due, due_key(&class, slot.due, id));
                ws.del(T::Slots, slot_key(&class, id));
            }
        }
        ws.del(T::Bodies, id.as_str().into());
        self.apply(ws)?;
        tracing::info!(queue_id = %id, "removed");
        Ok(true)
    }
}
