//! Idempotent, crash-safe delivery into a mailbox, one message or a batch at a time.
//! The steps and how a retry finds where a crash stopped are in the crate's header.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{Result, StoreError};
use crate::folder_name::FolderName;
use crate::fsutil::{sync_dir, write_options};
use crate::fsync_pool;
use crate::key::{is_key_hash, key_hash};
use crate::mailbox::{Folder, Mailbox};
use crate::names::{MessageId, new_base_name};

/// Most messages in one [`DeliveryBatch`]: each holds an open, locked file until commit.
pub const MAX_BATCH: usize = 256;

/// One message of [`Mailbox::deliver_many`].
#[derive(Debug, Clone, Copy)]
pub struct DeliveryItem<'a> {
    /// The delivery key: the same key delivered twice leaves one message.
    pub key: &'a str,
    /// The message, exactly as it is to be stored.
    pub bytes: &'a [u8],
}

/// What a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The message is now on disk in the folder's `new/`.
    Stored {
        /// Its identity.
        id: MessageId,
        /// Where it was put.
        path: PathBuf,
    },
    /// A delivery with the same key was completed before; nothing was written.
    AlreadyDelivered,
}

/// A delivery in two phases: [`DeliveryBatch::add`] writes each message,
/// [`DeliveryBatch::commit`] makes them all visible at once; dropping the batch (or
/// [`DeliveryBatch::abort`]) instead removes what was written. Made by
/// [`Mailbox::begin_delivery`].
#[derive(Debug)]
pub struct DeliveryBatch<'m> {
    mailbox: &'m Mailbox,
    folder: Folder,
    slots: Vec<Slot>,
    /// Key hash → (index of the first slot with it, its key).
    seen: HashMap<String, (usize, String)>,
}

/// One message of a batch, and what it still needs.
#[derive(Debug)]
enum Slot {
    /// Written to its staging file (synced at commit); no marker yet.
    Fresh(Staged),
    /// An earlier attempt left the marker and a complete staging file: rename it.
    Recover(Staged),
    /// The marker exists and the staging file is gone.
    Already,
    /// The same key as an earlier slot of this batch.
    Duplicate(usize),
}

/// A staging file we hold locked (the lock goes with the `File`).
#[derive(Debug)]
struct Staged {
    hash: String,
    key: String,
    path: PathBuf,
    /// Locked while we hold it; unlocked when the slot (and the fsync pool's
    /// reference, given back before the pool answers) is dropped.
    file: Arc<File>,
    size: u64,
}

/// Where a test makes a commit stop, as a crash would: once the staging files are
/// synced, once the markers are, or once the files are renamed into `new/`.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    Staged,
    Marked,
    Renamed,
}

impl Mailbox {
    /// Delivers one message into `folder` (created if missing). The same `delivery_key`
    /// delivered again answers [`Delivery::AlreadyDelivered`] and writes nothing. When this
    /// returns `Ok` the message is on disk.
    pub fn deliver(
        &self,
        folder: &FolderName,
        bytes: &[u8],
        delivery_key: &str,
    ) -> Result<Delivery> {
        let mut batch = self.begin_delivery(folder)?;
        batch.add(delivery_key, bytes)?;
        match batch.commit().pop() {
            Some(result) => result,
            None => Err(StoreError::InvalidDelivery {
                path: self.root().to_owned(),
                reason: "nothing to commit",
            }),
        }
    }

    /// Delivers many messages into one folder, sharing the directory fsyncs among them
    /// (in groups of up to [`MAX_BATCH`]). One result per item, in order.
    pub fn deliver_many(
        &self,
        folder: &FolderName,
        items: &[DeliveryItem<'_>],
    ) -> Vec<Result<Delivery>> {
        self.deliver_in_batches(folder, items, MAX_BATCH)
    }

    fn deliver_in_batches(
        &self,
        folder: &FolderName,
        items: &[DeliveryItem<'_>],
        batch_size: usize,
    ) -> Vec<Result<Delivery>> {
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(batch_size.clamp(1, MAX_BATCH)) {
            let mut batch = match self.begin_delivery(folder) {
                Ok(batch) => batch,
                Err(e) => {
                    results.extend(chunk.iter().map(|_| Err(e.replicate())));
                    continue;
                }
            };
            // None: added, its result comes from commit.
            let mut added: Vec<Option<Result<Delivery>>> = Vec::with_capacity(chunk.len());
            for item in chunk {
                added.push(batch.add(item.key, item.bytes).err().map(Err));
            }
            let mut committed = batch.commit().into_iter();
            for slot in added {
                results.push(match slot {
                    Some(err) => err,
                    None => committed.next().unwrap_or_else(|| {
                        Err(StoreError::InvalidDelivery {
                            path: self.root().to_owned(),
                            reason: "batch lost a result",
                        })
                    }),
                });
            }
        }
        results
    }

    /// Starts a delivery batch into `folder` (created if missing).
    pub fn begin_delivery(&self, folder: &FolderName) -> Result<DeliveryBatch<'_>> {
        Ok(DeliveryBatch {
            mailbox: self,
            folder: self.folder(folder)?,
            slots: Vec::new(),
            seen: HashMap::new(),
        })
    }

    /// Removes the delivery markers older than `older_than`, so that they do not grow
    /// without end. After that, a delivery key seen again is delivered again: choose
    /// an age well beyond the queue's longest retry period. A marker whose delivery is
    /// unfinished (its staging file is still there) is kept. Staging files that crashed
    /// deliveries left without a marker, and that are as old, go too. Returns how many
    /// markers went.
    pub fn prune_delivery_markers(&self, older_than: Duration) -> Result<usize> {
        let Some(cutoff) = SystemTime::now().checked_sub(older_than) else {
            return Ok(0);
        };
        self.sweep_staging(cutoff)?;
        let dir = self.marker_dir();
        let entries = fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            let name = entry.file_name();
            let Some(hash) = name.to_str().filter(|n| is_key_hash(n)) else {
                continue;
            };
            let path = entry.path();
            let modified = match entry.metadata().and_then(|m| m.modified()) {
                Ok(modified) => modified,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(path, e)),
            };
            if modified >= cutoff || self.staging_path(hash).exists() {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(path, e)),
            }
        }
        tracing::debug!(root = %self.root().display(), removed, "pruned delivery markers");
        Ok(removed)
    }

    /// Removes old staging files that have no marker: garbage of crashed attempts that
    /// were never retried. One that is locked is in use and stays.
    fn sweep_staging(&self, cutoff: SystemTime) -> Result<()> {
        let dir = self.tmp_dir();
        let entries = fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            let name = entry.file_name();
            let Some(hash) = name.to_str().and_then(|n| n.strip_prefix("qs-")) else {
                continue;
            };
            if !is_key_hash(hash) || exists(&self.marker_path(hash))? {
                continue;
            }
            let path = entry.path();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified < cutoff);
            if !old {
                continue;
            }
            let Ok(file) = write_options().open(&path) else {
                continue;
            };
            if file.try_lock().is_ok()
                && is_same_file(&file, &path)?
                && !exists(&self.marker_path(hash))?
            {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(path, e)),
                }
            }
        }
        if removed > 0 {
            tracing::info!(root = %self.root().display(), removed, "removed staging files of crashed deliveries");
        }
        Ok(())
    }

    fn staging_path(&self, hash: &str) -> PathBuf {
        self.tmp_dir().join(format!("qs-{hash}"))
    }

    fn marker_path(&self, hash: &str) -> PathBuf {
        self.marker_dir().join(hash)
    }

    /// Step 1 for one message: find where an earlier attempt stopped, and write the
    /// staging file if there is nothing to finish.
    fn stage(&self, hash: String, key: &str, bytes: &[u8]) -> Result<Slot> {
        let staging = self.staging_path(&hash);
        let marker = self.marker_path(&hash);
        for _ in 0..4 {
            // Delivered before and nothing left to finish: no need to touch tmp/.
            if marker_matches(&marker, key)? && !exists(&staging)? {
                return Ok(Slot::Already);
            }
            let (mut file, created) = match write_options().create_new(true).open(&staging) {
                Ok(file) => (file, true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    match write_options().open(&staging) {
                        Ok(file) => (file, false),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(StoreError::io(staging, e)),
                    }
                }
                Err(e) => return Err(StoreError::io(staging, e)),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Busy { path: staging });
                }
                Err(fs::TryLockError::Error(e)) => return Err(StoreError::io(staging, e)),
            }
            // The file we locked may have been renamed or replaced since we opened it.
            if !is_same_file(&file, &staging)? {
                continue;
            }
            if marker_matches(&marker, key)? {
                let size = file
                    .metadata()
                    .map_err(|e| StoreError::io(&staging, e))?
                    .len();
                if created || size == 0 {
                    // Our own empty file, or one an attempt like this left behind: the
                    // message itself went to new/ before. (Messages are never empty.)
                    fs::remove_file(&staging).map_err(|e| StoreError::io(&staging, e))?;
                    return Ok(Slot::Already);
                }
                tracing::info!(key, path = %staging.display(), "finishing an interrupted delivery");
                return Ok(Slot::Recover(Staged {
                    hash,
                    key: key.to_owned(),
                    path: staging,
                    file: Arc::new(file),
                    size,
                }));
            }
            if !created {
                tracing::info!(key, path = %staging.display(), "rewriting a staging file left by a crash");
                file.set_len(0).map_err(|e| StoreError::io(&staging, e))?;
            }
            if let Err(e) = file.write_all(bytes) {
                let _ = fs::remove_file(&staging);
                return Err(StoreError::io(staging, e));
            }
            return Ok(Slot::Fresh(Staged {
                hash,
                key: key.to_owned(),
                path: staging,
                file: Arc::new(file),
                size: bytes.len() as u64,
            }));
        }
        Err(StoreError::Busy { path: staging })
    }
}

impl DeliveryBatch<'_> {
    /// Writes one message to its staging file (or finds that its key was
    /// delivered before). An error concerns this message only; it is not part of the
    /// batch and [`DeliveryBatch::commit`] has no result for it.
    pub fn add(&mut self, key: &str, bytes: &[u8]) -> Result<()> {
        let refuse = |reason| StoreError::InvalidDelivery {
            path: self.mailbox.root().to_owned(),
            reason,
        };
        if self.slots.len() >= MAX_BATCH {
            return Err(refuse("batch is full"));
        }
        if bytes.is_empty() {
            return Err(refuse("empty message"));
        }
        if key.is_empty() {
            return Err(refuse("empty delivery key"));
        }
        let hash = key_hash(key);
        if let Some((first, first_key)) = self.seen.get(&hash) {
            if first_key != key {
                return Err(StoreError::KeyCollision {
                    path: self.mailbox.marker_path(&hash),
                });
            }
            self.slots.push(Slot::Duplicate(*first));
            return Ok(());
        }
        let slot = self.mailbox.stage(hash.clone(), key, bytes)?;
        self.seen.insert(hash, (self.slots.len(), key.to_owned()));
        self.slots.push(slot);
        Ok(())
    }

    /// Number of messages added.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True if no message was added.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Makes every added message durable and visible: one result per successful
    /// [`DeliveryBatch::add`], in order. A failure leaves what a retry needs to finish.
    pub fn commit(mut self) -> Vec<Result<Delivery>> {
        self.run_commit(None)
    }

    /// Gives up: removes the staging files written by this batch.
    pub fn abort(self) {}

    /// The commit, optionally stopping at `crash` as if the process died there.
    fn run_commit(&mut self, crash: Option<CrashPoint>) -> Vec<Result<Delivery>> {
        let slots = std::mem::take(&mut self.slots);
        let mailbox = self.mailbox;
        let tmp = mailbox.tmp_dir();
        let markers = mailbox.marker_dir();
        let new = self.folder.path().join("new");
        let mut outcome: Vec<Option<Result<Delivery>>> = slots.iter().map(|_| None).collect();
        // A slot that failed may no longer hold its file.
        let mut slots: Vec<Option<Slot>> = slots.into_iter().map(Some).collect();

        // Step 2: the staging files, then their directory entries, on disk before any
        // marker names them.
        for (i, result) in sync_staged(&slots) {
            if let Err(e) = result {
                if let Some(Slot::Fresh(staged)) = &slots[i] {
                    discard(staged);
                    outcome[i] = Some(Err(StoreError::io(&staged.path, e)));
                }
                slots[i] = None;
            }
        }
        if slots.iter().flatten().any(|s| matches!(s, Slot::Fresh(_)))
            && let Err(e) = sync_dir(&tmp)
        {
            for (i, slot) in slots.iter_mut().enumerate() {
                if let Some(Slot::Fresh(staged)) = slot {
                    discard(staged);
                    *slot = None;
                    outcome[i] = Some(Err(e.replicate()));
                }
            }
        }
        if crash == Some(CrashPoint::Staged) {
            return Vec::new();
        }

        // Step 3: the markers, then their directory.
        for (i, slot) in slots.iter_mut().enumerate() {
            if let Some(Slot::Fresh(staged)) = slot
                && let Err(e) = create_marker(&mailbox.marker_path(&staged.hash), &staged.key)
            {
                discard(staged);
                *slot = None;
                outcome[i] = Some(Err(e));
            }
        }
        let live =
            |s: &Option<Slot>| matches!(s, Some(Slot::Fresh(_) | Slot::Recover(_) | Slot::Already));
        if slots.iter().any(live) {
            // Also for markers an interrupted attempt made and perhaps never synced.
            if let Err(e) = sync_dir(&markers) {
                fail_live(&mut slots, &mut outcome, &e);
            }
        }
        if crash == Some(CrashPoint::Marked) {
            return Vec::new();
        }

        // Step 4: into new/.
        let mut renamed = false;
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(Slot::Fresh(staged) | Slot::Recover(staged)) = slot else {
                continue;
            };
            match rename_into(mailbox, &new, staged) {
                Ok(delivery) => {
                    renamed = true;
                    outcome[i] = Some(Ok(delivery));
                }
                Err(e) => {
                    *slot = None;
                    outcome[i] = Some(Err(e));
                }
            }
        }
        if crash == Some(CrashPoint::Renamed) {
            return Vec::new();
        }

        // Step 5: the renames on disk, at both ends.
        let already = slots.iter().any(|s| matches!(s, Some(Slot::Already)));
        let synced = if renamed {
            sync_dirs(&[&new, &tmp])
        } else if already {
            // Make durable the removal of the staging file we relied on.
            sync_dir(&tmp)
        } else {
            Ok(())
        };
        if let Err(e) = synced {
            fail_live(&mut slots, &mut outcome, &e);
        }
        for (i, slot) in slots.iter().enumerate() {
            if let Some(Slot::Already) = slot {
                outcome[i] = Some(Ok(Delivery::AlreadyDelivered));
            }
        }
        for (i, slot) in slots.iter().enumerate() {
            if let Some(Slot::Duplicate(first)) = slot {
                outcome[i] = Some(match &outcome[*first] {
                    Some(Ok(_)) => Ok(Delivery::AlreadyDelivered),
                    Some(Err(e)) => Err(e.replicate()),
                    None => Err(StoreError::InvalidDelivery {
                        path: mailbox.root().to_owned(),
                        reason: "duplicate of an unfinished delivery",
                    }),
                });
            }
        }
        for (slot, result) in slots.iter().zip(&outcome) {
            if let (
                Some(Slot::Fresh(s) | Slot::Recover(s)),
                Some(Ok(Delivery::Stored { path, .. })),
            ) = (slot, result)
            {
                tracing::debug!(key = %s.key, path = %path.display(), "delivered");
            }
        }
        // Dropping the slots releases the locks, now that everything is on disk.
        drop(slots);
        outcome
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Err(StoreError::InvalidDelivery {
                        path: mailbox.root().to_owned(),
                        reason: "delivery left unfinished",
                    })
                })
            })
            .collect()
    }

    /// Commits up to `crash` and stops there, leaving the files as a crash would.
    #[cfg(test)]
    pub(crate) fn commit_until_crash(mut self, crash: CrashPoint) {
        let _ = self.run_commit(Some(crash));
    }
}

impl Drop for DeliveryBatch<'_> {
    /// Aborts: staging files without a marker are removed. A staging file that an
    /// earlier attempt marked is left for the next attempt to finish.
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let Slot::Fresh(staged) = slot {
                discard(staged);
            }
        }
    }
}

/// Fsyncs the staging files of the fresh slots, several at once on the fsync
/// threads: file systems with a journal commit concurrent fsyncs together, which is
/// much faster than one by one.
fn sync_staged(slots: &[Option<Slot>]) -> Vec<(usize, io::Result<()>)> {
    let fresh: Vec<(usize, Arc<File>)> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, slot)| match slot {
            Some(Slot::Fresh(staged)) => Some((i, Arc::clone(&staged.file))),
            _ => None,
        })
        .collect();
    fsync_pool::sync_all(fresh)
}

/// Flushes the entries of several directories to disk at once (one journal
/// commit serves them all); the first error, if any.
fn sync_dirs(dirs: &[&Path]) -> Result<()> {
    let mut opened = Vec::with_capacity(dirs.len());
    for (i, dir) in dirs.iter().enumerate() {
        let file = File::open(dir).map_err(|e| StoreError::io(dir, e))?;
        opened.push((i, Arc::new(file)));
    }
    let mut results = fsync_pool::sync_all(opened);
    results.sort_by_key(|(i, _)| *i);
    match results.into_iter().find(|(_, r)| r.is_err()) {
        Some((i, Err(e))) => Err(StoreError::io(dirs[i], e)),
        _ => Ok(()),
    }
}

/// Removes the staging file of a message that has no marker (we still hold its lock).
fn discard(staged: &Staged) {
    if let Err(e) = fs::remove_file(&staged.path) {
        tracing::warn!(path = %staged.path.display(), error = %e, "cannot remove a staging file");
    }
}

/// Marks every message still in progress as failed with `e`. Its files stay: a retry
/// finds the marker (or not) and finishes.
fn fail_live(slots: &mut [Option<Slot>], outcome: &mut [Option<Result<Delivery>>], e: &StoreError) {
    for (slot, result) in slots.iter_mut().zip(outcome.iter_mut()) {
        if matches!(
            slot,
            Some(Slot::Fresh(_) | Slot::Recover(_) | Slot::Already)
        ) {
            *slot = None;
            *result = Some(Err(e.replicate()));
        }
    }
}

/// Renames a staging file into `new/` under a fresh unique name.
fn rename_into(mailbox: &Mailbox, new: &Path, staged: &Staged) -> Result<Delivery> {
    let mut id = new_base_name(mailbox.hostname(), staged.size);
    // Names are unique by construction; never replace a file all the same.
    while exists(&new.join(id.as_str()))? {
        id = new_base_name(mailbox.hostname(), staged.size);
    }
    let path = new.join(id.as_str());
    fs::rename(&staged.path, &path).map_err(|e| StoreError::io(&staged.path, e))?;
    Ok(Delivery::Stored { id, path })
}

/// Creates a marker holding its key. Its content only guards against hash collisions,
/// so it is not synced.
fn create_marker(path: &Path, key: &str) -> Result<()> {
    match write_options().create_new(true).open(path) {
        Ok(mut file) => file
            .write_all(key.as_bytes())
            .map_err(|e| StoreError::io(path, e)),
        // Only the holder of the staging lock creates it: an interrupted attempt did.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if marker_matches(path, key)? {
                Ok(())
            } else {
                Err(StoreError::KeyCollision {
                    path: path.to_owned(),
                })
            }
        }
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// Whether the marker exists for this key. Its content may have been lost in a crash
/// (empty, zeros or cut short): that counts as this key. Another key's content is a
/// hash collision.
fn marker_matches(path: &Path, key: &str) -> Result<bool> {
    let mut content = Vec::new();
    match File::open(path).and_then(|f| f.take(key.len() as u64 + 1).read_to_end(&mut content)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io(path, e)),
    }
    if content.iter().all(|&b| b == 0) || key.as_bytes().starts_with(&content) {
        Ok(true)
    } else {
        Err(StoreError::KeyCollision {
            path: path.to_owned(),
        })
    }
}

fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// True if `path` still names the file we hold open.
fn is_same_file(file: &File, path: &Path) -> Result<bool> {
    let held = file.metadata().map_err(|e| StoreError::io(path, e))?;
    match fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;

    use super::*;

    fn mailbox() -> (tempfile::TempDir, Mailbox) {
        let tmp = tempfile::tempdir().unwrap();
        let root = crate::mailbox_path(tmp.path(), "example.org", "alice").unwrap();
        let mailbox = Mailbox::open(root, "mx.example.org").unwrap();
        (tmp, mailbox)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn inbox() -> FolderName {
        FolderName::inbox()
    }

    /// The one message in the INBOX's new/, and nothing left in tmp/.
    fn only_message(mailbox: &Mailbox) -> Vec<u8> {
        let new = names(&mailbox.root().join("new"));
        assert_eq!(new.len(), 1, "{new:?}");
        assert_eq!(names(&mailbox.tmp_dir()), Vec::<String>::new());
        fs::read(mailbox.root().join("new").join(&new[0])).unwrap()
    }

    const MESSAGE: &[u8] = b"From: a@example.org\r\nTo: alice@example.org\r\n\r\nhello\r\n";

    #[test]
    fn delivery_is_byte_identical() {
        let (_tmp, mailbox) = mailbox();
        let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let Delivery::Stored { id, path } = mailbox
            .deliver(&inbox(), &bytes, "Q1:alice@example.org")
            .unwrap()
        else {
            panic!("not stored");
        };
        assert_eq!(fs::read(&path).unwrap(), bytes);
        assert_eq!(path, mailbox.root().join("new").join(id.as_str()));
        assert!(id.as_str().ends_with(",S=100000"), "{id}");
        assert_eq!(mailbox.inbox().read(&id).unwrap(), bytes);
        assert_eq!(only_message(&mailbox), bytes);
    }

    #[test]
    fn the_same_key_twice_leaves_one_message() {
        let (_tmp, mailbox) = mailbox();
        let first = mailbox
            .deliver(&inbox(), MESSAGE, "Q1:alice@example.org")
            .unwrap();
        assert!(matches!(first, Delivery::Stored { .. }));
        let second = mailbox
            .deliver(&inbox(), MESSAGE, "Q1:alice@example.org")
            .unwrap();
        assert_eq!(second, Delivery::AlreadyDelivered);
        // Also when the first one has been read and moved to cur/ meanwhile, or into
        // another folder.
        let id = mailbox.inbox().messages().unwrap()[0].id.clone();
        mailbox.inbox().set_flags(&id, crate::Flags::new()).unwrap();
        let junk = FolderName::new("Junk").unwrap();
        assert_eq!(
            mailbox
                .deliver(&junk, MESSAGE, "Q1:alice@example.org")
                .unwrap(),
            Delivery::AlreadyDelivered
        );
        assert_eq!(mailbox.inbox().messages().unwrap().len(), 1);
        assert_eq!(mailbox.folder(&junk).unwrap().messages().unwrap().len(), 0);
    }

    #[test]
    fn different_keys_make_different_messages() {
        let (_tmp, mailbox) = mailbox();
        mailbox
            .deliver(&inbox(), MESSAGE, "Q1:alice@example.org")
            .unwrap();
        mailbox
            .deliver(&inbox(), MESSAGE, "Q2:alice@example.org")
            .unwrap();
        assert_eq!(names(&mailbox.root().join("new")).len(), 2);
        assert_eq!(names(&mailbox.marker_dir()).len(), 2);
    }

    #[test]
    fn empty_messages_and_keys_are_refused() {
        let (_tmp, mailbox) = mailbox();
        let err = mailbox.deliver(&inbox(), b"", "Q1:a@b").unwrap_err();
        assert!(matches!(err, StoreError::InvalidDelivery { .. }), "{err}");
        let err = mailbox.deliver(&inbox(), MESSAGE, "").unwrap_err();
        assert!(matches!(err, StoreError::InvalidDelivery { .. }), "{err}");
        assert!(names(&mailbox.root().join("new")).is_empty());
    }

    /// Runs a delivery that "crashes" at `point`, then delivers again.
    fn crash_then_retry(point: CrashPoint) -> (tempfile::TempDir, Mailbox, Delivery) {
        let (tmp, mailbox) = mailbox();
        let mut batch = mailbox.begin_delivery(&inbox()).unwrap();
        batch.add("Q1:alice@example.org", MESSAGE).unwrap();
        batch.commit_until_crash(point);
        let retry = mailbox
            .deliver(&inbox(), MESSAGE, "Q1:alice@example.org")
            .unwrap();
        assert_eq!(only_message(&mailbox), MESSAGE);
        (tmp, mailbox, retry)
    }

    #[test]
    fn crash_after_staging_is_written_again() {
        let (_tmp, _mailbox, retry) = crash_then_retry(CrashPoint::Staged);
        assert!(matches!(retry, Delivery::Stored { .. }), "{retry:?}");
    }

    #[test]
    fn crash_after_the_marker_is_finished() {
        let (_tmp, mailbox, retry) = crash_then_retry(CrashPoint::Marked);
        assert!(matches!(retry, Delivery::Stored { .. }), "{retry:?}");
        let again = mailbox
            .deliver(&inbox(), MESSAGE, "Q1:alice@example.org")
            .unwrap();
        assert_eq!(again, Delivery::AlreadyDelivered);
        assert_eq!(only_message(&mailbox), MESSAGE);
    }

    #[test]
    fn crash_after_the_rename_is_already_delivered() {
        let (_tmp, _mailbox, retry) = crash_then_retry(CrashPoint::Renamed);
        assert_eq!(retry, Delivery::AlreadyDelivered);
    }

    #[test]
    fn partial_staging_file_without_marker_is_replaced() {
        let (_tmp, mailbox) = mailbox();
        let key = "Q1:alice@example.org";
        let staging = mailbox.staging_path(&key_hash(key));
        fs::write(&staging, &MESSAGE[..10]).unwrap();
        let retry = mailbox.deliver(&inbox(), MESSAGE, key).unwrap();
        assert!(matches!(retry, Delivery::Stored { .. }));
        assert_eq!(only_message(&mailbox), MESSAGE);
    }

    #[test]
    fn marker_with_lost_content_still_counts() {
        // A crash can leave the marker's entry on disk but not its (unsynced) content.
        let (_tmp, mailbox) = mailbox();
        let key = "Q1:alice@example.org";
        let hash = key_hash(key);
        fs::write(mailbox.staging_path(&hash), MESSAGE).unwrap();
        fs::write(mailbox.marker_path(&hash), b"").unwrap();
        let retry = mailbox.deliver(&inbox(), MESSAGE, key).unwrap();
        assert!(matches!(retry, Delivery::Stored { .. }), "{retry:?}");
        assert_eq!(only_message(&mailbox), MESSAGE);
    }

    #[test]
    fn empty_staging_file_beside_a_marker_is_not_delivered() {
        // What an attempt leaves if it dies between creating its staging file and
        // noticing the marker: no message to finish.
        let (_tmp, mailbox) = mailbox();
        let key = "Q1:alice@example.org";
        let hash = key_hash(key);
        fs::write(mailbox.staging_path(&hash), b"").unwrap();
        fs::write(mailbox.marker_path(&hash), key).unwrap();
        let retry = mailbox.deliver(&inbox(), MESSAGE, key).unwrap();
        assert_eq!(retry, Delivery::AlreadyDelivered);
        assert!(names(&mailbox.root().join("new")).is_empty());
        assert!(names(&mailbox.tmp_dir()).is_empty());
    }

    #[test]
    fn a_marker_of_another_key_is_a_collision() {
        let (_tmp, mailbox) = mailbox();
        let key = "Q1:alice@example.org";
        fs::write(mailbox.marker_path(&key_hash(key)), "Q9:somebody@else").unwrap();
        let err = mailbox.deliver(&inbox(), MESSAGE, key).unwrap_err();
        assert!(matches!(err, StoreError::KeyCollision { .. }), "{err}");
    }

    #[test]
    fn a_delivery_in_progress_makes_the_same_key_busy() {
        let (_tmp, mailbox) = mailbox();
        let key = "Q1:alice@example.org";
        let mut batch = mailbox.begin_delivery(&inbox()).unwrap();
        batch.add(key, MESSAGE).unwrap();
        let err = mailbox.deliver(&inbox(), MESSAGE, key).unwrap_err();
        assert!(matches!(err, StoreError::Busy { .. }), "{err}");
        let results = batch.commit();
        assert!(matches!(results[..], [Ok(Delivery::Stored { .. })]));
        assert_eq!(
            mailbox.deliver(&inbox(), MESSAGE, key).unwrap(),
            Delivery::AlreadyDelivered
        );
    }

    #[test]
    fn an_aborted_batch_leaves_nothing() {
        let (_tmp, mailbox) = mailbox();
        let mut batch = mailbox.begin_delivery(&inbox()).unwrap();
        batch.add("Q1:alice@example.org", MESSAGE).unwrap();
        batch.add("Q2:alice@example.org", MESSAGE).unwrap();
        assert_eq!(batch.len(), 2);
        batch.abort();
        assert!(names(&mailbox.tmp_dir()).is_empty());
        assert!(names(&mailbox.marker_dir()).is_empty());
        assert!(names(&mailbox.root().join("new")).is_empty());
        let again = mailbox
            .deliver(&inbox(), MESSAGE, "Q1:alice@example.org")
            .unwrap();
        assert!(matches!(again, Delivery::Stored { .. }));
    }

    #[test]
    fn concurrent_deliveries_of_one_key_store_it_once() {
        let (_tmp, mailbox) = mailbox();
        let stored: usize = thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        loop {
                            match mailbox.deliver(&inbox(), MESSAGE, "Q1:alice@example.org") {
                                Ok(Delivery::Stored { .. }) => return 1,
                                Ok(Delivery::AlreadyDelivered) => return 0,
                                Err(StoreError::Busy { .. }) => thread::yield_now(),
                                Err(e) => panic!("{e}"),
                            }
                        }
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(stored, 1);
        assert_eq!(only_message(&mailbox), MESSAGE);
    }

    #[test]
    fn new_never_shows_a_partial_message() {
        let (_tmp, mailbox) = mailbox();
        let size = 2 << 20;
        let done = Arc::new(AtomicBool::new(false));
        let new = mailbox.root().join("new");
        let watcher = {
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let mut checked = 0;
                while !done.load(Ordering::Acquire) {
                    for entry in fs::read_dir(&new).unwrap() {
                        let bytes = fs::read(entry.unwrap().path()).unwrap();
                        assert_eq!(bytes.len(), size, "a partial file in new/");
                        assert!(bytes.iter().all(|&b| b == b'x'));
                        checked += 1;
                    }
                }
                checked
            })
        };
        let bytes = vec![b'x'; size];
        for i in 0..8 {
            mailbox
                .deliver(&inbox(), &bytes, &format!("Q{i}:alice@example.org"))
                .unwrap();
        }
        done.store(true, Ordering::Release);
        let checked = watcher.join().unwrap();
        assert!(checked > 0, "the watcher saw no file");
    }

    #[test]
    fn deliver_many_stores_each_once() {
        let (_tmp, mailbox) = mailbox();
        let bodies: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes())
            .collect();
        let keys: Vec<String> = (0..100)
            .map(|i| format!("Q{i}:alice@example.org"))
            .collect();
        let items: Vec<DeliveryItem<'_>> = keys
            .iter()
            .zip(&bodies)
            .map(|(key, bytes)| DeliveryItem { key, bytes })
            .collect();
        let results = mailbox.deliver_many(&inbox(), &items);
        assert_eq!(results.len(), 100);
        let mut stored = Vec::new();
        for result in &results {
            let Ok(Delivery::Stored { path, .. }) = result else {
                panic!("{result:?}");
            };
            stored.push(fs::read(path).unwrap());
        }
        assert_eq!(stored, bodies);
        assert_eq!(names(&mailbox.root().join("new")).len(), 100);

        let again = mailbox.deliver_many(&inbox(), &items);
        assert!(
            again
                .iter()
                .all(|r| matches!(r, Ok(Delivery::AlreadyDelivered)))
        );
        assert_eq!(names(&mailbox.root().join("new")).len(), 100);
        assert!(names(&mailbox.tmp_dir()).is_empty());
    }

    #[test]
    fn deliver_many_reports_each_item() {
        let (_tmp, mailbox) = mailbox();
        let items = [
            DeliveryItem {
                key: "Q1:a@b",
                bytes: MESSAGE,
            },
            DeliveryItem {
                key: "Q2:a@b",
                bytes: b"",
            },
            DeliveryItem {
                key: "Q1:a@b",
                bytes: MESSAGE,
            },
            DeliveryItem {
                key: "Q3:a@b",
                bytes: MESSAGE,
            },
        ];
        let results = mailbox.deliver_many(&FolderName::new("Lists.rust").unwrap(), &items);
        assert!(matches!(results[0], Ok(Delivery::Stored { .. })));
        assert!(matches!(
            results[1],
            Err(StoreError::InvalidDelivery { .. })
        ));
        assert!(matches!(results[2], Ok(Delivery::AlreadyDelivered)));
        assert!(matches!(results[3], Ok(Delivery::Stored { .. })));
        assert_eq!(names(&mailbox.root().join(".Lists.rust/new")).len(), 2);
    }

    #[test]
    fn big_deliveries_are_split_into_batches_in_order() {
        let (_tmp, mailbox) = mailbox();
        // Ten keys, the first one again at the end, in batches of four.
        let mut keys: Vec<String> = (0..10).map(|i| format!("Q{i}:a@b")).collect();
        keys.push(keys[0].clone());
        let bodies: Vec<String> = keys.iter().map(|k| format!("body of {k}")).collect();
        let items: Vec<DeliveryItem<'_>> = keys
            .iter()
            .zip(&bodies)
            .map(|(key, body)| DeliveryItem {
                key,
                bytes: body.as_bytes(),
            })
            .collect();
        let results = mailbox.deliver_in_batches(&inbox(), &items, 4);
        assert_eq!(results.len(), 11);
        for (result, body) in results[..10].iter().zip(&bodies) {
            let Ok(Delivery::Stored { path, .. }) = result else {
                panic!("{result:?}");
            };
            assert_eq!(fs::read(path).unwrap(), body.as_bytes());
        }
        assert!(matches!(results[10], Ok(Delivery::AlreadyDelivered)));
        assert_eq!(names(&mailbox.root().join("new")).len(), 10);
    }

    #[test]
    fn old_markers_are_pruned() {
        let (_tmp, mailbox) = mailbox();
        for key in ["Q1:a@b", "Q2:a@b", "Q3:a@b"] {
            mailbox.deliver(&inbox(), MESSAGE, key).unwrap();
        }
        let day = Duration::from_secs(86_400);
        let two_days_ago = SystemTime::now() - 2 * day;
        for key in ["Q1:a@b", "Q2:a@b", "Q4:a@b"] {
            let marker = mailbox.marker_path(&key_hash(key));
            fs::write(&marker, key).unwrap();
            File::options()
                .write(true)
                .open(&marker)
                .unwrap()
                .set_modified(two_days_ago)
                .unwrap();
        }
        // Q4's delivery is unfinished: its staging file is there; its marker stays.
        let unfinished = mailbox.staging_path(&key_hash("Q4:a@b"));
        fs::write(&unfinished, MESSAGE).unwrap();
        File::options()
            .write(true)
            .open(&unfinished)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        fs::write(mailbox.marker_dir().join("README"), "not a marker").unwrap();
        // Garbage of a crash without a marker goes once it is old, not before.
        let garbage = mailbox.staging_path(&key_hash("Q5:a@b"));
        fs::write(&garbage, b"partial").unwrap();
        File::options()
            .write(true)
            .open(&garbage)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        let fresh = mailbox.staging_path(&key_hash("Q6:a@b"));
        fs::write(&fresh, b"partial").unwrap();

        assert_eq!(mailbox.prune_delivery_markers(day).unwrap(), 2);
        let mut left = names(&mailbox.marker_dir());
        left.retain(|n| n != "README");
        let mut want = vec![key_hash("Q3:a@b"), key_hash("Q4:a@b")];
        want.sort();
        assert_eq!(left, want);
        assert!(!garbage.exists());
        assert!(fresh.exists() && unfinished.exists());
        assert_eq!(mailbox.prune_delivery_markers(day).unwrap(), 0);
        assert_eq!(
            mailbox.deliver(&inbox(), MESSAGE, "Q3:a@b").unwrap(),
            Delivery::AlreadyDelivered
        );
        assert!(matches!(
            mailbox.deliver(&inbox(), MESSAGE, "Q4:a@b").unwrap(),
            Delivery::Stored { .. }
        ));
    }
}
