//! The state area: small values the modules keep in the queue database
//! (pop-client's seen messages, list-server's confirmations, core-queue's
//! enqueue request keys).

use std::ops::Bound;

use super::{Store, StoreError};

/// Longest state namespace, in bytes.
const MAX_NAMESPACE_LEN: usize = 64;
/// Longest state key, in bytes.
const MAX_STATE_KEY_LEN: usize = 1024;

fn state_key(namespace: &str, key: &str) -> Result<Vec<u8>, StoreError> {
    if namespace.is_empty() || namespace.len() > MAX_NAMESPACE_LEN || namespace.contains('\0') {
        return Err(StoreError::InvalidKey(format!("namespace {namespace:?}")));
    }
    if key.len() > MAX_STATE_KEY_LEN {
        return Err(StoreError::InvalidKey(format!(
            "key of {} bytes",
            key.len()
        )));
    }
    let mut k = Vec::with_capacity(namespace.len() + 1 + key.len());
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}

impl Store {
    /// A value of the state area, if set.
    pub fn state_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = state_key(namespace, key)?;
        Ok(self.inner.state.get(k)?.map(|v| v.to_vec()))
    }

    /// Sets a value of the state area (durable after the next commit).
    pub fn state_put(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let k = state_key(namespace, key)?;
        self.inner.state.insert(k, value)?;
        Ok(())
    }

    /// Deletes a value of the state area; true if it was set.
    pub fn state_delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        let k = state_key(namespace, key)?;
        Ok(self.inner.state.remove(k)?.is_some())
    }

    /// The keys of `namespace` starting with `prefix`, in key order, after
    /// the key `after` if given, at most `limit`, with their values.
    pub fn state_scan(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let full_prefix = state_key(namespace, prefix)?;
        let ns_len = namespace.len() + 1;
        let start = match after {
            Some(a) if a.as_bytes() >= prefix.as_bytes() => {
                Bound::Excluded(state_key(namespace, a)?)
            }
            _ => Bound::Included(full_prefix.clone()),
        };
        let mut out = Vec::new();
        for entry in self
            .inner
            .state
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
        {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            if !key.starts_with(&full_prefix) {
                break;
            }
            let key = String::from_utf8_lossy(&key[ns_len..]).into_owned();
            out.push((key, value.to_vec()));
        }
        Ok(out)
    }
}
