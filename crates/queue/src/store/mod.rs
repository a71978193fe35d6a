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
//!
//! # Files
//!
//! This file opens the database and answers reads; `keys` encodes keys
//! and records, `writes` queues, reschedules and removes messages, `leases`
//! hands jobs to workers and records their results, `state` is the modules'
//! key-value area, and `repair` puts the index right on open.

mod keys;
mod leases;
mod repair;
mod state;
mod writes;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::commit::{CommitError, Committer};
use crate::envelope::{Envelope, JobClass, QueueId, Stats, Summary};

use keys::decode_envelope;

/// The file beside the database that names the process holding it.
const OWNER_FILE: &str = "owner";

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
                    // sled's flush_async hands the flush to sled's own thread
                    // pool, whose every hand-off wakes all its idle threads;
                    // tokio's blocking pool wakes one.
                    tokio::task::spawn_blocking(move || inner.db.flush())
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
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
}

#[cfg(test)]
mod tests;
