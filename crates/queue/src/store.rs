//! The durable queue: a sled database that only core-queue opens.
//!
//! # Trees and keys
//!
//! | tree        | key                                   | value                                  |
//! |-------------|---------------------------------------|----------------------------------------|
//! | `envelopes` | queue id                              | [`Envelope`] as JSON                   |
//! | `bodies`    | queue id                              | the message bytes                      |
//! | `due`       | class, NUL, due time (u64 BE), id     | empty                                  |
//! | `slots`     | class, NUL, id                        | due time (u64 BE), lease token (u64 BE, 0 = none), worker name |
//! | `state`     | namespace, NUL, key                   | the value bytes                        |
//!
//! Each (message, class) with pending recipients has one slot and one due
//! entry, at the earliest `next_attempt` of those recipients, or at the end
//! of its lease while a worker holds it. Finding due work is a range scan of
//! `due` from `class NUL 0` to `class NUL now`.
//!
//! # Durability and crashes
//!
//! The write methods return once sled has the change in memory; it reaches
//! disk on the next flush. Call [`Store::commit`] before telling anyone the
//! change happened.
//!
//! The envelope is the record; slots and due entries are derived from it.
//! A write is a few plain sled writes done in order under one lock (sled's
//! multi-tree transactions and batches seal a log batch each, which halves
//! the insert rate and makes every flush several times slower). A queued
//! message's body is written before its envelope, and removed after it. So
//! whatever part of an uncommitted write a crash keeps, the check run on
//! open (a full scan of the envelopes) puts it right: slots and due entries
//! are rebuilt from the envelopes, bodies without an envelope are dropped,
//! and an envelope without a body, which was never committed, is dropped.

use std::fs;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::commit::{CommitError, Committer};
use crate::envelope::{
    CompleteOutcome, Envelope, FailedRecipient, Job, JobClass, JobRecipient, LeaseToken, Outcome,
    QueueId, RecipientResult, RecipientStatus, Stats, Summary,
};
use crate::retry::RetryPolicy;

/// The file beside the database that names the process holding it.
const OWNER_FILE: &str = "owner";
/// Longest state namespace, in bytes.
const MAX_NAMESPACE_LEN: usize = 64;
/// Longest state key, in bytes.
const MAX_STATE_KEY_LEN: usize = 1024;
/// How many stale due entries one lease call repairs before giving up.
const MAX_LEASE_SKIPS: usize = 256;

/// How to open the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// The module name written to the owner file (default `core-queue`).
    pub module: String,
    /// sled's page cache size in bytes (default 64 MiB).
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            module: "core-queue".to_owned(),
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (or another open in this one) holds the database.
    #[error("queue database {} is in use by another process: {owner}", path.display())]
    Locked {
        /// The database folder.
        path: PathBuf,
        /// The owner file's contents: pid, module and start time.
        owner: String,
    },
    /// sled reported an error.
    #[error("queue database error: {0}")]
    Db(#[from] sled::Error),
    /// A file beside the database could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// A stored record could not be decoded.
    #[error("corrupt queue record: {0}")]
    Corrupt(String),
    /// No message has this id.
    #[error("no message {0} in the queue")]
    NotFound(QueueId),
    /// A message with this id is already queued.
    #[error("message {0} is already queued")]
    Exists(QueueId),
    /// The lease token does not match: the lease expired and the job was
    /// leased again, or it was completed or released already.
    #[error("the lease on {class} job {id} is no longer held")]
    LeaseLost {
        /// The message.
        id: QueueId,
        /// The class.
        class: JobClass,
    },
    /// A result names a recipient that is not part of the leased class.
    #[error("message {id}: no recipient {index} in this job ({reason})")]
    InvalidResult {
        /// The message.
        id: QueueId,
        /// The index given.
        index: u32,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An envelope that cannot be queued (e.g. no recipients).
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(String),
    /// A state namespace or key that is empty, too long or has a NUL byte.
    #[error("invalid state key: {0}")]
    InvalidKey(String),
    /// The flush to disk failed.
    #[error(transparent)]
    Commit(#[from] CommitError),
}

/// The queue database. Open it once per process; share it with an `Arc`.
pub struct Store {
    inner: Arc<Inner>,
    committer: OnceLock<Committer>,
}

struct Inner {
    db: sled::Db,
    envelopes: sled::Tree,
    bodies: sled::Tree,
    due: sled::Tree,
    slots: sled::Tree,
    state: sled::Tree,
    path: PathBuf,
    /// Serialises every read-modify-write of the queue trees.
    write: Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::error!(path = %self.path.display(), error = %e, "final queue flush failed");
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Which tree a write goes to.
#[derive(Clone, Copy)]
enum T {
    Envelopes,
    Bodies,
    Due,
    Slots,
}

/// Writes computed under the write lock, applied in order.
#[derive(Default)]
struct WriteSet {
    ops: Vec<(T, Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteSet {
    fn put(&mut self, tree: T, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((tree, key, Some(value)));
    }

    fn del(&mut self, tree: T, key: Vec<u8>) {
        self.ops.push((tree, key, None));
    }
}

/// The schedule of one (message, class): its due time and lease.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    due: u64,
    token: u64,
    worker: String,
}

impl Slot {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + self.worker.len());
        v.extend_from_slice(&self.due.to_be_bytes());
        v.extend_from_slice(&self.token.to_be_bytes());
        v.extend_from_slice(self.worker.as_bytes());
        v
    }

    fn decode(v: &[u8]) -> Result<Slot, StoreError> {
        let (due, rest) = split_u64(v).ok_or_else(|| StoreError::Corrupt("short slot".into()))?;
        let (token, worker) =
            split_u64(rest).ok_or_else(|| StoreError::Corrupt("short slot".into()))?;
        Ok(Slot {
            due,
            token,
            worker: String::from_utf8_lossy(worker).into_owned(),
        })
    }

    fn leased(&self) -> bool {
        self.token != 0
    }
}

fn split_u64(v: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = v.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), rest))
}

fn class_prefix(class: &JobClass) -> Vec<u8> {
    let mut k = Vec::with_capacity(class.as_str().len() + 1 + 8 + 18);
    k.extend_from_slice(class.as_str().as_bytes());
    k.push(0);
    k
}

fn due_key(class: &JobClass, due: u64, id: &QueueId) -> Vec<u8> {
    let mut k = class_prefix(class);
    k.extend_from_slice(&due.to_be_bytes());
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn slot_key(class: &JobClass, id: &QueueId) -> Vec<u8> {
    let mut k = class_prefix(class);
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

/// Splits `class NUL rest` into its class and the rest.
fn split_class(key: &[u8]) -> Option<(JobClass, &[u8])> {
    let nul = key.iter().position(|&b| b == 0)?;
    let class = std::str::from_utf8(&key[..nul]).ok()?.parse().ok()?;
    Some((class, &key[nul + 1..]))
}

fn parse_id(bytes: &[u8]) -> Option<QueueId> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn parse_due_key(key: &[u8]) -> Option<(JobClass, u64, QueueId)> {
    let (class, rest) = split_class(key)?;
    let (due, id) = split_u64(rest)?;
    Some((class, due, parse_id(id)?))
}

fn parse_slot_key(key: &[u8]) -> Option<(JobClass, QueueId)> {
    let (class, id) = split_class(key)?;
    Some((class, parse_id(id)?))
}

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

fn encode_envelope(env: &Envelope) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(env).map_err(|e| StoreError::Corrupt(format!("envelope {}: {e}", env.id)))
}

fn decode_envelope(key: &[u8], value: &[u8]) -> Result<Envelope, StoreError> {
    serde_json::from_slice(value)
        .map_err(|e| StoreError::Corrupt(format!("envelope {}: {e}", String::from_utf8_lossy(key))))
}

fn owner_text(path: &Path) -> String {
    match fs::read_to_string(path.join(OWNER_FILE)) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
        Ok(_) => "owner unknown (empty owner file)".to_owned(),
        Err(e) => format!("owner unknown ({}: {e})", OWNER_FILE),
    }
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

impl Store {
    /// Opens (creating if needed) the database in the folder `path`, writes
    /// the owner file, and checks the due index against the envelopes.
    ///
    /// If another process holds the database the error is
    /// [`StoreError::Locked`] with the owner file's contents.
    pub fn open(path: impl AsRef<Path>, options: &StoreOptions) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        fs::create_dir_all(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(options.cache_bytes)
            .open()
            .map_err(|e| {
                if is_lock_error(&e) {
                    StoreError::Locked {
                        owner: owner_text(&path),
                        path: path.clone(),
                    }
                } else {
                    StoreError::Db(e)
                }
            })?;
        let inner = Inner {
            envelopes: db.open_tree("envelopes")?,
            bodies: db.open_tree("bodies")?,
            due: db.open_tree("due")?,
            slots: db.open_tree("slots")?,
            state: db.open_tree("state")?,
            db,
            path: path.clone(),
            write: Mutex::new(()),
        };
        let store = Store {
            inner: Arc::new(inner),
            committer: OnceLock::new(),
        };
        store.write_owner(&options.module)?;
        let repaired = store.repair()?;
        if repaired > 0 {
            tracing::warn!(path = %path.display(), repaired, "queue index repaired on open");
        }
        tracing::info!(
            path = %path.display(),
            messages = store.inner.envelopes.len(),
            "queue opened"
        );
        Ok(store)
    }

    /// The database folder.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn write_owner(&self, module: &str) -> Result<(), StoreError> {
        let text = format!(
            "pid {} module {} started {} (unix time)\n",
            std::process::id(),
            module,
            crate::envelope::unix_now()
        );
        let tmp = self.inner.path.join(format!("{OWNER_FILE}.tmp"));
        let dest = self.inner.path.join(OWNER_FILE);
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &dest))
            .map_err(|source| StoreError::Io { path: dest, source })
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it broken.
        self.inner
            .write
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies the writes in the order they were added; callers hold the
    /// write lock and order them so a crash between any two is repairable.
    fn apply(&self, ws: WriteSet) -> Result<(), StoreError> {
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

    fn load(&self, id: &QueueId) -> Result<Option<Envelope>, StoreError> {
        match self.inner.envelopes.get(id.as_str())? {
            Some(v) => decode_envelope(id.as_str().as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    fn load_slot(&self, class: &JobClass, id: &QueueId) -> Result<Option<Slot>, StoreError> {
        match self.inner.slots.get(slot_key(class, id))? {
            Some(v) => Slot::decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Brings the slot and due entry of (message, class) in line with the
    /// envelope. A held lease stays when `keep_lease` is set.
    fn schedule(
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

    /// The envelope of a message.
    pub fn get(&self, id: &QueueId) -> Result<Option<Envelope>, StoreError> {
        self.load(id)
    }

    /// The bytes of a message.
    pub fn body(&self, id: &QueueId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.bodies.get(id.as_str())?.map(|v| v.to_vec()))
    }

    /// The first `limit` messages, oldest first.
    pub fn list(&self, limit: usize) -> Result<Vec<Summary>, StoreError> {
        let mut out = Vec::new();
        for entry in self.inner.envelopes.iter() {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let env = match decode_envelope(&key, &value) {
                Ok(env) => env,
                Err(e) => {
                    tracing::error!(error = %e, "skipping unreadable envelope");
                    continue;
                }
            };
            let next_attempt = env
                .recipients
                .iter()
                .filter(|r| r.is_pending())
                .map(|r| r.next_attempt)
                .min();
            out.push(Summary {
                recipients: u32::try_from(env.recipients.len()).unwrap_or(u32::MAX),
                pending: u32::try_from(env.pending_count()).unwrap_or(u32::MAX),
                id: env.id,
                sender: env.sender,
                size: env.size,
                received_at: env.received_at,
                next_attempt,
            });
        }
        Ok(out)
    }

    /// Counts over the whole queue (a full scan of the envelopes).
    pub fn stats(&self) -> Result<Stats, StoreError> {
        let mut stats = Stats {
            disk_bytes: self.inner.db.size_on_disk()?,
            ..Stats::default()
        };
        for entry in self.inner.envelopes.iter() {
            let (key, value) = entry?;
            let Ok(env) = decode_envelope(&key, &value) else {
                continue;
            };
            stats.messages += 1;
            stats.bytes += env.size;
            for r in env.recipients.iter().filter(|r| r.is_pending()) {
                *stats.pending.entry(r.class.to_string()).or_default() += 1;
            }
        }
        Ok(stats)
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

    /// The group-commit handle of this store, started on the current tokio
    /// runtime at first use.
    ///
    /// # Panics
    ///
    /// At first use outside a tokio runtime.
    pub fn committer(&self) -> &Committer {
        self.committer.get_or_init(|| {
            let weak = Arc::downgrade(&self.inner);
            Committer::start(move || {
                let weak = weak.clone();
                async move {
                    let inner = weak
                        .upgrade()
                        .ok_or_else(|| "the store is closed".to_owned())?;
                    inner.db.flush_async().await.map_err(|e| e.to_string())?;
                    Ok(())
                }
            })
        })
    }

    /// Returns once everything written before the call is on disk. Concurrent
    /// callers share one flush. Answer "250" (or `DELE`, or remove a file)
    /// only after this returns.
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.committer().commit().await?;
        Ok(())
    }

    /// Checks the slots and due index against the envelopes and repairs
    /// them; drops bodies without envelope and envelopes without body.
    /// Returns the number of repairs.
    fn repair(&self) -> Result<usize, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Origin, Recipient};

    const T0: u64 = 1_700_000_000;
    const MIN: u64 = 60;

    fn open(dir: &Path) -> Store {
        Store::open(dir.join("queue"), &StoreOptions::default()).expect("open")
    }

    fn envelope(recipients: &[(&str, JobClass)]) -> Envelope {
        let rcpts = recipients
            .iter()
            .map(|(a, c)| {
                let mut r = Recipient::new(*a, c.clone());
                r.next_attempt = T0;
                r
            })
            .collect();
        let origin = Origin {
            module: "test".into(),
            ..Origin::default()
        };
        Envelope::new("sender@example.org", rcpts, origin, T0, 5)
    }

    fn lease(store: &Store, class: &JobClass, now: u64) -> Option<Job> {
        store
            .lease(class, "worker", Duration::from_secs(300), now)
            .expect("lease")
    }

    fn result(index: u32, outcome: Outcome) -> RecipientResult {
        RecipientResult { index, outcome }
    }

    fn temp(index: u32) -> RecipientResult {
        result(
            index,
            Outcome::TemporaryFailure {
                reply: "451 try later".into(),
            },
        )
    }

    #[test]
    fn insert_lease_complete_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let env = envelope(&[
            ("a@x", JobClass::local()),
            ("b@y", JobClass::outbound()),
            ("c@x", JobClass::local()),
        ]);
        store.insert(&env, b"hello").expect("insert");
        assert!(matches!(
            store.insert(&env, b"again"),
            Err(StoreError::Exists(_))
        ));

        let job = lease(&store, &JobClass::local(), T0).expect("local job");
        assert_eq!(job.id, env.id);
        assert_eq!(job.body, b"hello");
        assert_eq!(job.sender, "sender@example.org");
        assert_eq!(job.origin.module, "test");
        let indices: Vec<u32> = job.recipients.iter().map(|r| r.index).collect();
        assert_eq!(indices, vec![0, 2]);
        // Leased: not offered again, but the other class is.
        assert!(lease(&store, &JobClass::local(), T0).is_none());
        let out_job = lease(&store, &JobClass::outbound(), T0).expect("outbound job");
        assert_eq!(out_job.recipients[0].address, "b@y");

        let delivered = Outcome::Delivered {
            reply: "250 ok".into(),
        };
        let outcome = store
            .complete(
                &env.id,
                &JobClass::local(),
                job.token,
                &[result(0, delivered.clone()), result(2, delivered.clone())],
                &RetryPolicy::default(),
                T0 + 1,
            )
            .expect("complete");
        assert!(!outcome.finished);
        assert!(outcome.newly_failed.is_empty());
        assert_eq!(store.next_due(&JobClass::local()).expect("due"), None);

        let failed = Outcome::PermanentFailure {
            reply: "550 no such user".into(),
        };
        let outcome = store
            .complete(
                &env.id,
                &JobClass::outbound(),
                out_job.token,
                &[result(1, failed)],
                &RetryPolicy::default(),
                T0 + 2,
            )
            .expect("complete");
        assert!(outcome.finished);
        assert_eq!(outcome.newly_failed.len(), 1);
        assert_eq!(outcome.newly_failed[0].address, "b@y");
        assert_eq!(outcome.newly_failed[0].reply, "550 no such user");
        assert!(!outcome.newly_failed[0].expired);
        let stored = store.get(&env.id).expect("get").expect("still there");
        assert_eq!(stored.recipients[0].status, RecipientStatus::Delivered);
        assert_eq!(stored.recipients[1].status, RecipientStatus::Failed);
        assert_eq!(stored.recipients[1].attempts, 1);

        assert!(store.remove(&env.id).expect("remove"));
        assert!(!store.remove(&env.id).expect("remove again"));
        assert!(store.get(&env.id).expect("get").is_none());
        assert!(store.body(&env.id).expect("body").is_none());
        assert!(store.inner.due.is_empty() && store.inner.slots.is_empty());
    }

    #[test]
    fn results_must_name_recipients_of_the_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let env = envelope(&[("a@x", JobClass::local()), ("b@y", JobClass::outbound())]);
        store.insert(&env, b"m").expect("insert");
        let job = lease(&store, &JobClass::local(), T0).expect("job");
        let policy = RetryPolicy::default();
        for bad in [temp(1), temp(9)] {
            let err = store.complete(&env.id, &JobClass::local(), job.token, &[bad], &policy, T0);
            assert!(
                matches!(err, Err(StoreError::InvalidResult { .. })),
                "{err:?}"
            );
        }
    }

    #[test]
    fn due_index_is_a_range_scan_in_due_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let mut ids = Vec::new();
        for (i, offset) in [30, 10, 20, 1000].iter().enumerate() {
            let mut env = envelope(&[(&format!("r{i}@x"), JobClass::outbound())]);
            env.recipients[0].next_attempt = T0 + offset;
            store.insert(&env, b"m").expect("insert");
            ids.push(env.id);
        }
        let other = envelope(&[("l@x", JobClass::local())]);
        store.insert(&other, b"m").expect("insert");

        let due = store.due(&JobClass::outbound(), T0 + 30, 100).expect("due");
        assert_eq!(
            due,
            vec![
                (T0 + 10, ids[1].clone()),
                (T0 + 20, ids[2].clone()),
                (T0 + 30, ids[0].clone())
            ]
        );
        assert_eq!(
            store
                .due(&JobClass::outbound(), T0 + 30, 1)
                .expect("due")
                .len(),
            1
        );
        assert_eq!(
            store.next_due(&JobClass::outbound()).expect("next"),
            Some(T0 + 10)
        );
        assert_eq!(
            store.due(&JobClass::local(), T0, 100).expect("due"),
            vec![(T0, other.id.clone())]
        );
        assert!(
            store
                .due(&JobClass::list(), u64::MAX, 100)
                .expect("due")
                .is_empty()
        );

        // Nothing is due before its time; leases come in due order.
        assert!(lease(&store, &JobClass::outbound(), T0 + 9).is_none());
        let order: Vec<QueueId> =
            std::iter::from_fn(|| lease(&store, &JobClass::outbound(), T0 + 999).map(|j| j.id))
                .collect();
        assert_eq!(order, vec![ids[1].clone(), ids[2].clone(), ids[0].clone()]);
    }

    #[test]
    fn an_expired_lease_comes_back_and_the_old_token_is_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let env = envelope(&[("a@x", JobClass::outbound())]);
        store.insert(&env, b"m").expect("insert");
        let first = lease(&store, &JobClass::outbound(), T0).expect("job");
        assert_eq!(first.lease_until, T0 + 300);
        assert!(lease(&store, &JobClass::outbound(), T0 + 299).is_none());
        assert_eq!(
            store.next_due(&JobClass::outbound()).expect("next"),
            Some(T0 + 300)
        );
        let second = lease(&store, &JobClass::outbound(), T0 + 300).expect("lease came back");
        assert_ne!(first.token, second.token);

        let policy = RetryPolicy::default();
        let ok = [result(
            0,
            Outcome::Delivered {
                reply: "250".into(),
            },
        )];
        let stale = store.complete(
            &env.id,
            &JobClass::outbound(),
            first.token,
            &ok,
            &policy,
            T0 + 301,
        );
        assert!(
            matches!(stale, Err(StoreError::LeaseLost { .. })),
            "{stale:?}"
        );
        assert!(matches!(
            store.release(&env.id, &JobClass::outbound(), LeaseToken(12345)),
            Err(StoreError::LeaseLost { .. })
        ));
        let done = store
            .complete(
                &env.id,
                &JobClass::outbound(),
                second.token,
                &ok,
                &policy,
                T0 + 301,
            )
            .expect("complete");
        assert!(done.finished);
        // The lease ended with the completion.
        let again = store.complete(
            &env.id,
            &JobClass::outbound(),
            second.token,
            &ok,
            &policy,
            T0 + 302,
        );
        assert!(matches!(again, Err(StoreError::LeaseLost { .. })));
    }

    #[test]
    fn release_gives_the_job_back_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let env = envelope(&[("a@x", JobClass::list())]);
        store.insert(&env, b"m").expect("insert");
        let job = lease(&store, &JobClass::list(), T0).expect("job");
        store
            .release(&env.id, &JobClass::list(), job.token)
            .expect("release");
        let again = lease(&store, &JobClass::list(), T0).expect("offered again");
        assert_eq!(again.recipients[0].attempts, 0);
    }

    #[test]
    fn temporary_failures_back_off_then_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let env = envelope(&[("a@x", JobClass::outbound())]);
        store.insert(&env, b"m").expect("insert");
        let policy = RetryPolicy {
            delay_warning_after: None,
            ..RetryPolicy::default()
        };
        let mut now = T0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            let job = lease(&store, &JobClass::outbound(), now).expect("job due");
            let out = store
                .complete(
                    &env.id,
                    &JobClass::outbound(),
                    job.token,
                    &[temp(0)],
                    &policy,
                    now,
                )
                .expect("complete");
            assert!(!out.finished && out.newly_failed.is_empty());
            let next = store
                .next_due(&JobClass::outbound())
                .expect("next")
                .expect("scheduled");
            waits.push((next - now) / MIN);
            assert!(
                lease(&store, &JobClass::outbound(), next - 1).is_none(),
                "not before its time"
            );
            now = next;
        }
        assert_eq!(waits, vec![5, 10, 20, 40, 60, 60]);
        let stored = store.get(&env.id).expect("get").expect("env");
        assert_eq!(stored.recipients[0].attempts, 6);
        assert_eq!(
            stored.recipients[0].last_reply.as_deref(),
            Some("451 try later")
        );

        // Five days after it was received, a temporary failure is final.
        let late = T0 + 5 * 24 * 3600;
        let job = lease(&store, &JobClass::outbound(), late).expect("job");
        let out = store
            .complete(
                &env.id,
                &JobClass::outbound(),
                job.token,
                &[temp(0)],
                &policy,
                late,
            )
            .expect("complete");
        assert!(out.finished);
        assert_eq!(out.newly_failed.len(), 1);
        assert!(out.newly_failed[0].expired);
        assert_eq!(out.newly_failed[0].reply, "451 try later");
        assert_eq!(store.next_due(&JobClass::outbound()).expect("next"), None);
    }

    #[test]
    fn one_delay_warning_while_recipients_are_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let env = envelope(&[("a@x", JobClass::outbound()), ("b@x", JobClass::outbound())]);
        store.insert(&env, b"m").expect("insert");
        let policy = RetryPolicy::default();
        let mut warnings = Vec::new();
        let mut now = T0;
        while now < T0 + 6 * 3600 {
            if let Some(job) = lease(&store, &JobClass::outbound(), now) {
                let out = store
                    .complete(
                        &env.id,
                        &JobClass::outbound(),
                        job.token,
                        &[temp(0), temp(1)],
                        &policy,
                        now,
                    )
                    .expect("complete");
                warnings.push((now - T0 >= 4 * 3600, out.delay_warning));
            }
            now += MIN;
        }
        let sent: Vec<_> = warnings.iter().filter(|(_, w)| *w).collect();
        assert_eq!(sent.len(), 1, "{warnings:?}");
        assert!(sent[0].0, "warning only after four hours");
        assert!(
            store
                .get(&env.id)
                .expect("get")
                .expect("env")
                .delay_warning_sent
        );

        // A finished message gets no warning even when it is old.
        let old = envelope(&[("c@x", JobClass::local())]);
        store.insert(&old, b"m").expect("insert");
        let job = lease(&store, &JobClass::local(), T0 + 5 * 3600).expect("job");
        let out = store
            .complete(
                &old.id,
                &JobClass::local(),
                job.token,
                &[result(0, Outcome::Delivered { reply: "ok".into() })],
                &policy,
                T0 + 5 * 3600,
            )
            .expect("complete");
        assert!(out.finished && !out.delay_warning);
    }

    #[test]
    fn retry_and_set_recipients_keep_the_index_right() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let env = envelope(&[("a@x", JobClass::outbound())]);
        store.insert(&env, b"m").expect("insert");
        let job = lease(&store, &JobClass::outbound(), T0).expect("job");
        let policy = RetryPolicy::default();
        store
            .complete(
                &env.id,
                &JobClass::outbound(),
                job.token,
                &[temp(0)],
                &policy,
                T0,
            )
            .expect("complete");
        assert!(lease(&store, &JobClass::outbound(), T0 + 1).is_none());
        store.retry(&env.id, T0 + 1).expect("retry");
        assert!(lease(&store, &JobClass::outbound(), T0 + 1).is_some());

        let mut rcpts = store.get(&env.id).expect("get").expect("env").recipients;
        let mut local = Recipient::new("user@here", JobClass::local());
        local.original = Some("alias@here".into());
        rcpts.push(local);
        let updated = store.set_recipients(&env.id, rcpts).expect("set");
        assert_eq!(updated.recipients.len(), 2);
        // The outbound lease is still held; the new local recipient is due.
        assert!(lease(&store, &JobClass::outbound(), T0 + 2).is_none());
        let job = lease(&store, &JobClass::local(), T0 + 2).expect("local job");
        assert_eq!(job.recipients[0].original.as_deref(), Some("alias@here"));

        // Dropping every outbound recipient ends that class's schedule.
        let only_local = vec![updated.recipients[1].clone()];
        store.set_recipients(&env.id, only_local).expect("set");
        assert_eq!(store.next_due(&JobClass::outbound()).expect("next"), None);
        assert!(matches!(
            store.retry(&QueueId::generate(), T0),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn a_second_open_is_refused_naming_the_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = StoreOptions {
            module: "core-queue-test".into(),
            ..StoreOptions::default()
        };
        let _store = Store::open(dir.path().join("queue"), &options).expect("open");
        match Store::open(dir.path().join("queue"), &options) {
            Err(e @ StoreError::Locked { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&format!("pid {}", std::process::id())),
                    "{text}"
                );
                assert!(text.contains("core-queue-test"), "{text}");
                assert!(text.contains("in use"), "{text}");
            }
            other => panic!("expected Locked, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn committed_data_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = envelope(&[("a@x", JobClass::outbound()), ("b@x", JobClass::local())]);
        let token = {
            let store = open(dir.path());
            store.insert(&env, b"persistent bytes").expect("insert");
            store
                .state_put("pop-client", "acct1/uidl/42", b"seen")
                .expect("put");
            let job = lease(&store, &JobClass::outbound(), T0).expect("job");
            store.commit().await.expect("commit");
            assert!(store.committer().flushes() >= 1);
            job.token
        };
        let store = open(dir.path());
        assert_eq!(store.get(&env.id).expect("get"), Some(env.clone()));
        assert_eq!(
            store.body(&env.id).expect("body").as_deref(),
            Some(&b"persistent bytes"[..])
        );
        assert_eq!(
            store
                .state_get("pop-client", "acct1/uidl/42")
                .expect("get")
                .as_deref(),
            Some(&b"seen"[..])
        );
        // The lease survived the restart: its holder can still complete.
        assert!(lease(&store, &JobClass::outbound(), T0).is_none());
        assert!(lease(&store, &JobClass::local(), T0).is_some());
        let ok = [result(
            0,
            Outcome::Delivered {
                reply: "250".into(),
            },
        )];
        store
            .complete(
                &env.id,
                &JobClass::outbound(),
                token,
                &ok,
                &RetryPolicy::default(),
                T0,
            )
            .expect("complete");
    }

    /// Set in the child process of [`committed_data_survives_a_crash`].
    const CRASH_DIR_VAR: &str = "QS_QUEUE_CRASH_TEST_DIR";

    /// In the child: queue messages, commit, then exit at once, skipping
    /// every destructor (and so sled's flush on drop). Does nothing in a
    /// normal test run.
    #[tokio::test]
    async fn crash_child() {
        let Some(dir) = std::env::var_os(CRASH_DIR_VAR) else {
            return;
        };
        let store = open(Path::new(&dir));
        for i in 0..50 {
            let env = envelope(&[(&format!("r{i}@x"), JobClass::outbound())]);
            store.insert(&env, &[b'm'; 4096]).expect("insert");
        }
        store.state_put("pop-client", "uidl", b"seen").expect("put");
        store.commit().await.expect("commit");
        println!("committed");
        std::process::exit(0);
    }

    #[test]
    fn committed_data_survives_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "store::tests::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_VAR, dir.path())
            .output()
            .expect("run child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("committed"),
            "child failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let store = open(dir.path());
        assert_eq!(store.stats().expect("stats").messages, 50);
        assert_eq!(
            store
                .due(&JobClass::outbound(), u64::MAX, 100)
                .expect("due")
                .len(),
            50
        );
        assert_eq!(
            store
                .state_get("pop-client", "uidl")
                .expect("get")
                .as_deref(),
            Some(&b"seen"[..])
        );
    }

    #[test]
    fn open_repairs_a_damaged_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = envelope(&[("a@x", JobClass::outbound())]);
        let bodiless = envelope(&[("b@x", JobClass::outbound())]);
        let ghost = QueueId::generate();
        {
            let store = open(dir.path());
            store.insert(&env, b"m").expect("insert");
            // Lose the index entries, and leave a stray one, an orphan body
            // and an envelope whose body never arrived.
            let json = encode_envelope(&bodiless).expect("json");
            store
                .inner
                .envelopes
                .insert(bodiless.id.as_str(), json)
                .expect("insert");
            store.inner.due.clear().expect("clear");
            store.inner.slots.clear().expect("clear");
            store
                .inner
                .due
                .insert(due_key(&JobClass::local(), T0, &ghost), &[])
                .expect("insert");
            store
                .inner
                .bodies
                .insert(ghost.as_str(), &b"orphan"[..])
                .expect("insert");
            store.inner.db.flush().expect("flush");
        }
        let store = open(dir.path());
        assert!(store.get(&bodiless.id).expect("get").is_none());
        assert_eq!(
            store.due(&JobClass::outbound(), T0, 10).expect("due"),
            vec![(T0, env.id.clone())]
        );
        assert!(
            store
                .due(&JobClass::local(), u64::MAX, 10)
                .expect("due")
                .is_empty()
        );
        assert!(store.body(&ghost).expect("body").is_none());
        assert!(lease(&store, &JobClass::outbound(), T0).is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_flushes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open(dir.path()));
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let env = envelope(&[(&format!("r{i}@x"), JobClass::local())]);
                    store.insert(&env, &[b'x'; 4096]).expect("insert");
                    store.commit().await.expect("commit");
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("join");
        }
        let flushes = store.committer().flushes();
        assert!(
            (1..32).contains(&flushes),
            "{flushes} flushes for 32 commits"
        );
        assert_eq!(store.stats().expect("stats").messages, 32);
    }

    #[test]
    fn state_area_get_put_delete_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            store.state_put("pop-client", k, k.as_bytes()).expect("put");
        }
        store.state_put("other", "a/9", b"x").expect("put");
        assert_eq!(
            store
                .state_get("pop-client", "a/2")
                .expect("get")
                .as_deref(),
            Some(&b"a/2"[..])
        );
        assert_eq!(store.state_get("pop-client", "a/9").expect("get"), None);
        let keys = |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(
                store
                    .state_scan("pop-client", "a/", None, 100)
                    .expect("scan")
            ),
            ["a/1", "a/2", "a/3"]
        );
        assert_eq!(
            keys(store.state_scan("pop-client", "a/", None, 2).expect("scan")),
            ["a/1", "a/2"]
        );
        assert_eq!(
            keys(
                store
                    .state_scan("pop-client", "a/", Some("a/2"), 100)
                    .expect("scan")
            ),
            ["a/3"]
        );
        assert_eq!(
            keys(store.state_scan("pop-client", "", None, 100).expect("scan")).len(),
            4
        );
        assert!(store.state_delete("pop-client", "a/1").expect("delete"));
        assert!(!store.state_delete("pop-client", "a/1").expect("delete"));
        assert_eq!(
            keys(
                store
                    .state_scan("pop-client", "a/", None, 100)
                    .expect("scan")
            ),
            ["a/2", "a/3"]
        );
        assert!(matches!(
            store.state_put("", "k", b"v"),
            Err(StoreError::InvalidKey(_))
        ));
        assert!(matches!(
            store.state_put("a\0b", "k", b"v"),
            Err(StoreError::InvalidKey(_))
        ));
        assert!(matches!(
            store.state_get("ns", &"k".repeat(2000)),
            Err(StoreError::InvalidKey(_))
        ));
    }

    #[test]
    fn list_and_stats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let first = envelope(&[("a@x", JobClass::local()), ("b@y", JobClass::outbound())]);
        let second = envelope(&[("c@y", JobClass::outbound())]);
        store.insert(&first, b"12345").expect("insert");
        store.insert(&second, b"12345").expect("insert");
        let list = store.list(10).expect("list");
        assert_eq!(
            list.iter().map(|s| &s.id).collect::<Vec<_>>(),
            [&first.id, &second.id]
        );
        assert_eq!(
            (list[0].recipients, list[0].pending, list[0].next_attempt),
            (2, 2, Some(T0))
        );
        assert_eq!(list[0].age(T0 + 60), 60);
        assert_eq!(store.list(1).expect("list").len(), 1);
        store.inner.db.flush().expect("flush");
        let stats = store.stats().expect("stats");
        assert_eq!(stats.messages, 2);
        assert_eq!(stats.bytes, 10);
        assert_eq!(stats.pending.get("outbound"), Some(&2));
        assert_eq!(stats.pending.get("local"), Some(&1));
        assert!(stats.disk_bytes > 0);
        assert!(matches!(
            store.insert(&envelope(&[]), b""),
            Err(StoreError::InvalidEnvelope(_))
        ));
    }
}
