//! How the store encodes its keys and records: `class NUL due id` in the
//! due index, `class NUL id` for slots, envelopes as JSON.

use super::StoreError;
use crate::envelope::{Envelope, JobClass, QueueId};

/// The schedule of one (message, class): its due time and lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) due: u64,
    pub(super) token: u64,
    pub(super) worker: String,
}

impl Slot {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + self.worker.len());
        v.extend_from_slice(&self.due.to_be_bytes());
        v.extend_from_slice(&self.token.to_be_bytes());
        v.extend_from_slice(self.worker.as_bytes());
        v
    }

    pub(super) fn decode(v: &[u8]) -> Result<Slot, StoreError> {
        let (due, rest) = split_u64(v).ok_or_else(|| StoreError::Corrupt("short slot".into()))?;
        let (token, worker) =
            split_u64(rest).ok_or_else(|| StoreError::Corrupt("short slot".into()))?;
        Ok(Slot {
            due,
            token,
            worker: String::from_utf8_lossy(worker).into_owned(),
        })
    }

    pub(super) fn leased(&self) -> bool {
        self.token != 0
    }
}

pub(super) fn split_u64(v: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = v.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), rest))
}

pub(super) fn class_prefix(class: &JobClass) -> Vec<u8> {
    let mut k = Vec::with_capacity(class.as_str().len() + 1 + 8 + 18);
    k.extend_from_slice(class.as_str().as_bytes());
    k.push(0);
    k
}

pub(super) fn due_key(class: &JobClass, due: u64, id: &QueueId) -> Vec<u8> {
    let mut k = class_prefix(class);
    k.extend_from_slice(&due.to_be_bytes());
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

pub(super) fn slot_key(class: &JobClass, id: &QueueId) -> Vec<u8> {
    let mut k = class_prefix(class);
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

/// Splits `class NUL rest` into its class and the rest.
pub(super) fn split_class(key: &[u8]) -> Option<(JobClass, &[u8])> {
    let nul = key.iter().position(|&b| b == 0)?;
    let class = std::str::from_utf8(&key[..nul]).ok()?.parse().ok()?;
    Some((class, &key[nul + 1..]))
}

pub(super) fn parse_id(bytes: &[u8]) -> Option<QueueId> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

pub(super) fn parse_due_key(key: &[u8]) -> Option<(JobClass, u64, QueueId)> {
    let (class, rest) = split_class(key)?;
    let (due, id) = split_u64(rest)?;
    Some((class, due, parse_id(id)?))
}

pub(super) fn parse_slot_key(key: &[u8]) -> Option<(JobClass, QueueId)> {
    let (class, id) = split_class(key)?;
    Some((class, parse_id(id)?))
}

pub(super) fn encode_envelope(env: &Envelope) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(env).map_err(|e| StoreError::Corrupt(format!("envelope {}: {e}", env.id)))
}

pub(super) fn decode_envelope(key: &[u8], value: &[u8]) -> Result<Envelope, StoreError> {
    serde_json::from_slice(value)
        .map_err(|e| StoreError::Corrupt(format!("envelope {}: {e}", String::from_utf8_lossy(key))))
}
