//! The maildrop: a user's INBOX, locked for one POP3 session at a time.
//!
//! Blocking file system work (call it from `spawn_blocking`): the lock, the
//! listing with the exact sizes, the UIDL values, and the UPDATE state's
//! removals and `\Seen` marks.
//!
//! Files in the mailbox root, beside `cur/`, `new/` and `tmp/` (neither starts
//! with '.', so no Maildir++ reader takes them for folders):
//!
//! - `pop3.lock`: held with an exclusive `flock` for the whole session, so a
//!   second session, from this process or another, gets `[IN-USE]`. The lock
//!   goes with the open file, so a crashed process holds nothing.
//! - `pop3.sizes`: a cache of each message's size as RETR sends it
//!   (`<octets> <base name>` per line). A Maildir message never changes once
//!   delivered, so an entry stays true for the life of the message; only new
//!   messages are read at login. Entries of messages that are gone are dropped.
//!   A cache that cannot be read is rebuilt.
//!
//! The UPDATE state also records its removals and `\Seen` marks in the INBOX's UID
//! index (when IMAP has made one), so IMAP clients see HIGHESTMODSEQ move at once
//! (RFC 7162). UIDL is the base name's hash, not the index's UID, so it never
//! depends on the index.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use qs_mailstore::{Flag, Folder, Mailbox, MessageEntry, MessageId, StoreError, UidIndex};

use crate::encode::Encoder;
use crate::session::{MessageInfo, UpdatePlan, UpdateReport};

/// The lock file in the mailbox root.
pub const LOCK_FILE: &str = "pop3.lock";
/// The size cache in the mailbox root.
pub const SIZES_FILE: &str = "pop3.sizes";
/// The first line of the size cache.
const SIZES_HEADER: &str = "qs-pop3-sizes 1";

/// Why a maildrop cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaildropError {
    /// Another session holds the lock.
    #[error("the maildrop {} is locked by another session", path.display())]
    InUse {
        /// The mailbox root.
        path: PathBuf,
    },
    /// The user's address cannot name a mailbox.
    #[error("the address {address:?} cannot name a mailbox")]
    BadAddress {
        /// The address.
        address: String,
    },
    /// The mail store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file of the maildrop could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
}

impl MaildropError {
    /// True if retrying will not help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            MaildropError::BadAddress { .. }
                | MaildropError::Store(
                    StoreError::InvalidName { .. } | StoreError::InvalidFolderName { .. }
                )
        )
    }
}

/// A user's INBOX, locked for this session. The lock goes when it is dropped.
#[derive(Debug)]
pub struct Maildrop {
    mailbox: Mailbox,
    folder: Folder,
    root: PathBuf,
    _lock: File,
}

impl Maildrop {
    /// Opens and locks the INBOX of `address` (`local@domain`, as the directory
    /// spells it) under `data_dir`, and lists it: oldest first, only messages
    /// without `\Seen` if `only_unread`. Creates the mailbox if it is missing.
    pub fn open(
        data_dir: &Path,
        hostname: &str,
        address: &str,
        only_unread: bool,
    ) -> Result<(Maildrop, Vec<MessageInfo>), MaildropError> {
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Err(MaildropError::BadAddress {
                address: address.to_owned(),
            });
        };
        let root = qs_mailstore::mailbox_path(data_dir, domain, local)?;
        let mailbox = Mailbox::open(root.clone(), hostname)?;
        let lock = lock(&root)?;
        let maildrop = Maildrop {
            folder: mailbox.inbox(),
            mailbox,
            root,
            _lock: lock,
        };
        let messages = maildrop.list(only_unread)?;
        Ok((maildrop, messages))
    }

    /// The INBOX.
    pub fn folder(&self) -> &Folder {
        &self.folder
    }

    /// Opens a message for reading, looking it up again if another client
    /// renamed it (a flag change, or new/ to cur/).
    pub fn open_message(&self, entry: &MessageEntry) -> Result<File, MaildropError> {
        match File::open(&entry.path) {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let now = self.folder.find(&entry.id)?;
                File::open(&now.path).map_err(|source| MaildropError::Io {
                    path: now.path,
                    source,
                })
            }
            Err(source) => Err(MaildropError::Io {
                path: entry.path.clone(),
                source,
            }),
        }
    }

    /// The UPDATE state: removes, then marks as seen, as planned. A message
    /// already gone counts as removed; one that cannot be removed is counted
    /// and logged. The removals are made durable (the folder is synced) before
    /// this returns.
    pub fn update(&self, plan: &UpdatePlan) -> UpdateReport {
        let mut report = UpdateReport::default();
        let mut removed = Vec::with_capacity(plan.remove.len());
        let mut seen = Vec::with_capacity(plan.mark_seen.len());
        for entry in &plan.remove {
            match self.folder.remove_at(entry) {
                Ok(()) => removed.push(&entry.id),
                Err(e) if e.is_not_found() => removed.push(&entry.id),
                Err(e) => {
                    tracing::warn!(message = %entry.id, error = %e, "cannot remove a deleted message");
                    report.not_removed += 1;
                }
            }
        }
        if !plan.remove.is_empty() {
            for sub in ["cur", "new"] {
                let dir = self.folder.path().join(sub);
                if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the folder");
                }
            }
        }
        for entry in &plan.mark_seen {
            match self
                .folder
                .update_flags_at(entry, |flags| flags.with(Flag::Seen))
            {
                Ok(now) => seen.push(now),
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(message = %entry.id, error = %e, "cannot mark a retrieved message as seen");
                }
            }
        }
        if let Err(e) = self.record_in_index(&removed, &seen) {
            // The files are the truth: imap-server's next listing records it.
            tracing::warn!(error = %e, "cannot record the changes in the UID index");
        }
        report
    }

    /// Records what the UPDATE state did in the folder's UID index, as IMAP's
    /// modification sequences (RFC 7162): the messages removed left, those marked
    /// seen changed. Messages the index does not know yet are left to IMAP's next
    /// listing, and a folder IMAP never opened gets no index.
    fn record_in_index(
        &self,
        removed: &[&MessageId],
        seen: &[MessageEntry],
    ) -> Result<(), qs_mailstore::StoreError> {
        if (removed.is_empty() && seen.is_empty())
            || !self.folder.path().join(qs_mailstore::UID_FILE).exists()
        {
            return Ok(());
        }
        let mut index = UidIndex::open(&self.mailbox, &self.folder)?;
        let gone: Vec<u32> = removed
            .iter()
            .filter_map(|id| index.get(id).map(|r| r.uid))
            .collect();
        let changed: Vec<(u32, qs_mailstore::Flags)> = seen
            .iter()
            .filter_map(|e| index.get(&e.id).map(|r| (r.uid, e.flags)))
            .collect();
        index.record(&changed, &gone).map(drop)
    }

    fn list(&self, only_unread: bool) -> Result<Vec<MessageInfo>, MaildropError> {
        let entries = self.folder.messages()?;
        let cache_path = self.root.join(SIZES_FILE);
        let cached = read_sizes(&cache_path);
        let mut sizes: HashMap<String, u64> = HashMap::with_capacity(entries.len());
        let mut changed = false;
        let mut messages = Vec::with_capacity(entries.len());
        for entry in entries {
            let size = match cached.get(entry.id.as_str()) {
                Some(&size) => size,
                None => {
                    changed = true;
                    match self.measure(&entry) {
                        Ok(size) => size,
                        // Expunged by another client while we listed.
                        Err(MaildropError::Store(e)) if e.is_not_found() => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            sizes.insert(entry.id.as_str().to_owned(), size);
            if only_unread && entry.flags.contains(Flag::Seen) {
                continue;
            }
            messages.push(MessageInfo {
                uidl: uidl(&entry.id),
                entry,
                size,
            });
        }
        if (changed || cached.len() != sizes.len())
            && let Err(e) = write_sizes(&cache_path, &sizes)
        {
            tracing::warn!(path = %cache_path.display(), error = %e, "cannot write the size cache");
        }
        Ok(messages)
    }

    fn measure(&self, entry: &MessageEntry) -> Result<u64, MaildropError> {
        let file = self.open_message(entry)?;
        sent_size(file).map_err(|source| MaildropError::Io {
            path: entry.path.clone(),
            source,
        })
    }
}

/// The octets RETR sends for the message read from `reader`, stuffing excluded.
pub fn sent_size(mut reader: impl Read) -> io::Result<u64> {
    let mut encoder = Encoder::size();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(80 * 1024);
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        encoder.encode(&buf[..n], &mut out);
        total += out.len() as u64;
        out.clear();
    }
    encoder.finish(&mut out);
    Ok(total + out.len() as u64)
}

/// The UIDL of a message (RFC 1939 §7: 1 to 70 characters from 0x21 to 0x7E).
///
/// The base name itself when it qualifies (it does for every name the mail
/// store writes with a host name of reasonable length), else `H` and the
/// 128-bit FNV-1a hash of the base name in hexadecimal. Either way a function
/// of the base name alone, which neither flag changes nor the move from `new/`
/// to `cur/` alter: the same in every session and every process.
pub fn uidl(id: &MessageId) -> String {
    let name = id.as_str();
    if (1..=70).contains(&name.len()) && name.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        name.to_owned()
    } else {
        format!("H{:032x}", fnv1a_128(name.as_bytes()))
    }
}

/// 128-bit FNV-1a: stable across processes, versions and platforms.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

fn lock(root: &Path) -> Result<File, MaildropError> {
    let path = root.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| MaildropError::Io {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(MaildropError::InUse {
            path: root.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(MaildropError::Io { path, source }),
    }
}

/// The size cache; empty when missing or unreadable.
fn read_sizes(path: &Path) -> HashMap<String, u64> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let mut lines = text.lines();
    if lines.next() != Some(SIZES_HEADER) {
        return HashMap::new();
    }
    lines
        .filter_map(|line| {
            let (size, id) = line.split_once(' ')?;
            Some((id.to_owned(), size.parse().ok()?))
        })
        .collect()
}

/// Replaces the size cache (temporary file, rename). Not synced: a cache lost
/// in a crash is rebuilt.
fn write_sizes(path: &Path, sizes: &HashMap<String, u64>) -> io::Result<()> {
    let mut text = String::with_capacity(sizes.len() * 72 + 20);
    text.push_str(SIZES_HEADER);
    text.push('\n');
    for (id, size) in sizes {
        text.push_str(&format!("{size} {id}\n"));
    }
    let temp = path.with_extension(format!("sizes.tmp.{}", std::process::id()));
    {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
    }
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use qs_mailstore::{Delivery, Flags, FolderName};

    use super::*;

    fn deliver(data: &Path, bytes: &[u8], key: &str) -> MessageId {
        let root = qs_mailstore::mailbox_path(data, "example.test", "alice").unwrap();
        let mailbox = Mailbox::open(root, "mx").unwrap();
        match mailbox.deliver(&FolderName::inbox(), bytes, key).unwrap() {
            Delivery::Stored { id, .. } => id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_second_open_is_in_use_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, listed) =
            Maildrop::open(tmp.path(), "mx", "alice@example.test", false).unwrap();
        assert!(listed.is_empty());
        let err = Maildrop::open(tmp.path(), "mx", "alice@example.test", false).unwrap_err();
        assert!(matches!(err, MaildropError::InUse { .. }), "{err}");
        drop(first);
        Maildrop::open(tmp.path(), "mx", "alice@example.test", false).unwrap();
    }

    #[test]
    fn sizes_are_what_retr_sends_and_are_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let crlf = deliver(tmp.path(), b"A: b\r\n\r\n.x\r\n", "k1");
        let lf = deliver(tmp.path(), b"A: b\n\nbody\n", "k2");
        let (drop1, listed) =
            Maildrop::open(tmp.path(), "mx", "alice@example.test", false).unwrap();
        drop(drop1);
        let sizes: HashMap<_, _> = listed
            .iter()
            .map(|m| (m.entry.id.clone(), m.size))
            .collect();
        assert_eq!(sizes[&crlf], 12);
        assert_eq!(sizes[&lf], 14);
        let root = qs_mailstore::mailbox_path(tmp.path(), "example.test", "alice").unwrap();
        let cache = std::fs::read_to_string(root.join(SIZES_FILE)).unwrap();
        assert!(cache.contains(&format!("14 {lf}\n")), "{cache}");
        // The cache is believed: a forged entry shows (messages never change).
        std::fs::write(
            root.join(SIZES_FILE),
            format!("{SIZES_HEADER}\n99 {lf}\n12 {crlf}\n"),
        )
        .unwrap();
        let (_d, listed) = Maildrop::open(tmp.path(), "mx", "alice@example.test", false).unwrap();
        assert!(listed.iter().any(|m| m.entry.id == lf && m.size == 99));
    }

    #[test]
    fn update_records_removals_and_seen_marks_in_the_uid_index() {
        let tmp = tempfile::tempdir().unwrap();
        let a = deliver(tmp.path(), b"A\r\n", "k1");
        let b = deliver(tmp.path(), b"B\r\n", "k2");
        let root = qs_mailstore::mailbox_path(tmp.path(), "example.test", "alice").unwrap();
        let mailbox = Mailbox::open(root, "mx").unwrap();
        let inbox = mailbox.inbox();
        // As IMAP leaves it: UIDs, and each message's state at a sequence.
        let mut index = UidIndex::open(&mailbox, &inbox).unwrap();
        let listed = index.assign(inbox.messages().unwrap()).unwrap();
        let states: Vec<_> = listed.iter().map(|(r, e)| (r.uid, e.flags)).collect();
        index.record(&states, &[]).unwrap();
        let before = index.highest_modseq();
        let (uid_a, uid_b) = (index.get(&a).unwrap().uid, index.get(&b).unwrap().uid);

        let (maildrop, listed) =
            Maildrop::open(tmp.path(), "mx", "alice@example.test", false).unwrap();
        let of = |id: &MessageId| listed.iter().find(|m| &m.entry.id == id).unwrap();
        let plan = UpdatePlan {
            remove: vec![of(&b).entry.clone()],
            mark_seen: vec![of(&a).entry.clone()],
        };
        assert_eq!(maildrop.update(&plan), UpdateReport::default());
        index.refresh().unwrap();
        assert!(index.highest_modseq() > before);
        assert_eq!(index.expunged_at(uid_b), Some(index.highest_modseq()));
        let (modseq, flags) = index.flag_state(uid_a).unwrap();
        assert_eq!(modseq, index.highest_modseq());
        assert!(flags.contains(Flag::Seen));
    }

    #[test]
    fn only_unread_hides_seen_messages_and_update_marks_and_removes() {
        let tmp = tempfile::tempdir().unwrap();
        let a = deliver(tmp.path(), b"A\r\n", "k1");
        let b = deliver(tmp.path(), b"B\r\n", "k2");
        let (maildrop, listed) =
            Maildrop::open(tmp.path(), "mx", "alice@example.test", true).unwrap();
        assert_eq!(listed.len(), 2);
        let plan = UpdatePlan {
            remove: vec![listed[1].entry.clone()],
            mark_seen: vec![listed[0].entry.clone()],
        };
        assert_eq!(maildrop.update(&plan), UpdateReport::default());
        // Again: already done, still fine.
        assert_eq!(maildrop.update(&plan), UpdateReport::default());
        let now = maildrop.folder().messages().unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].id, a);
        assert!(now[0].flags.contains(Flag::Seen));
        assert_ne!(now[0].id, b);
        drop(maildrop);
        let (_m, listed) = Maildrop::open(tmp.path(), "mx", "alice@example.test", true).unwrap();
        assert!(listed.is_empty());
    }

    #[test]
    fn uidl_follows_the_base_name_through_flag_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let id = deliver(tmp.path(), b"A\r\n", "k1");
        let (maildrop, listed) =
            Maildrop::open(tmp.path(), "mx", "alice@example.test", false).unwrap();
        let before = listed[0].uidl.clone();
        assert_eq!(before, id.as_str());
        maildrop
            .folder()
            .set_flags(&id, Flags::new().with(Flag::Flagged))
            .unwrap();
        drop(maildrop);
        let (_m, listed) = Maildrop::open(tmp.path(), "mx", "alice@example.test", false).unwrap();
        assert_eq!(listed[0].uidl, before);
        // Long or non-ASCII names are hashed into range.
        for name in ["x".repeat(71), "1.2.hôte".to_owned()] {
            let u = uidl(&MessageId::new(&name).unwrap());
            assert_eq!(u.len(), 33, "{u}");
            assert!(u.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            assert_eq!(u, uidl(&MessageId::new(&name).unwrap()));
        }
        assert_ne!(
            uidl(&MessageId::new(&"x".repeat(71)).unwrap()),
            uidl(&MessageId::new(&"x".repeat(72)).unwrap())
        );
    }
}
