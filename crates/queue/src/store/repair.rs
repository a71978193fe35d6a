//! The check run on open: slots and due entries rebuilt from the
//! envelopes, bodies without an envelope and envelopes without a body dropped.

use super::keys::{Slot, decode_envelope, due_key, parse_due_key, parse_slot_key, slot_key};
use super::writes::{T, WriteSet};
use super::{Store, StoreError};

impl Store {
    /// Checks the slots and due index against the envelopes and repairs
    /// them; drops bodies without envelope and envelopes without body.
    /// Returns the number of repairs.
    pub(super) fn repair(&self) -> Result<usize, StoreError> {
        let _guard = self.lock();
        let mut repairs = 0;
        // Every (class, id) that should have a slot, with its wanted due time.
        let mut wanted = std::collections::BTreeMap::new();
        for entry in self.inner.envelopes.iter() {
            let (key, value) = entry?;
            let env = match decode_envelope(&key, &value) {
                Ok(env) => env,
                Err(e) => {
                    tracing::error!(error = %e, "unreadable envelope left in place");
                    continue;
                }
            };
            if !self.inner.bodies.contains_key(&key)? {
                // Bodies are written first and removed last: this is an
                // insert cut short by a crash, never committed.
                tracing::warn!(queue_id = %env.id, "dropping uncommitted message without body");
                self.inner.envelopes.remove(&key)?;
                repairs += 1;
                continue;
            }
            for class in env.classes() {
                if let Some(due) = env.next_due(&class) {
                    wanted.insert((class, env.id.clone()), due);
                }
            }
        }
        let mut ws = WriteSet::default();
        let mut slots = std::collections::BTreeMap::new();
        for entry in self.inner.slots.iter() {
            let (key, value) = entry?;
            let parsed = parse_slot_key(&key).zip(Slot::decode(&value).ok());
            match parsed {
                Some(((class, id), slot)) if wanted.contains_key(&(class.clone(), id.clone())) => {
                    slots.insert((class, id), slot);
                }
                Some(((class, id), slot)) => {
                    ws.del(T::Due, due_key(&class, slot.due, &id));
                    ws.del(T::Slots, key.to_vec());
                    repairs += 1;
                }
                None => {
                    ws.del(T::Slots, key.to_vec());
                    repairs += 1;
                }
            }
        }
        for ((class, id), due) in &wanted {
            let key = (class.clone(), id.clone());
            match slots.get(&key) {
                Some(slot) => {
                    if !self.inner.due.contains_key(due_key(class, slot.due, id))? {
                        ws.put(T::Due, due_key(class, slot.due, id), Vec::new());
                        repairs += 1;
                    }
                }
                None => {
                    let slot = Slot {
                        due: *due,
                        token: 0,
                        worker: String::new(),
                    };
                    ws.put(T::Due, due_key(class, *due, id), Vec::new());
                    ws.put(T::Slots, slot_key(class, id), slot.encode());
                    slots.insert(key, slot);
                    repairs += 1;
                }
            }
        }
        for entry in self.inner.due.iter() {
            let (key, _) = entry?;
            let keep = parse_due_key(&key).is_some_and(|(class, due, id)| {
                slots.get(&(class, id)).is_some_and(|s| s.due == due)
            });
            if !keep {
                ws.del(T::Due, key.to_vec());
                repairs += 1;
            }
        }
        for entry in self.inner.bodies.iter() {
            let (key, _) = entry?;
            if !self.inner.envelopes.contains_key(&key)? {
                ws.del(T::Bodies, key.to_vec());
                repairs += 1;
            }
        }
        self.apply(ws)?;
        Ok(repairs)
    }
}
