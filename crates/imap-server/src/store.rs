//! The server's view of the mail store: what sessions of one process share about a
//! folder (its UID index and the parse cache), the user's subscriptions, and the
//! mapping between Maildir flags and IMAP flags.
//!
//! The parse cache keeps, per message, the encoded ENVELOPE and BODY/BODYSTRUCTURE, so
//! that fetching them again for a big folder reads no file. It lives as long as some
//! session uses the folder, holds at most [`MAX_CACHED`] messages per folder, and
//! forgets messages as they are expunged. A message never changes once stored, so an
//! entry is never stale.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use qs_mailstore::{Flag, Flags, Folder, FolderName, Mailbox, MessageId, StoreError, UidIndex};

use crate::message::{HeaderSummary, Structure};
use crate::recent;

/// Messages cached per folder at most; beyond that the cache starts again empty.
pub const MAX_CACHED: usize = 100_000;

/// The subscriptions file in the mailbox root.
pub const SUBSCRIPTIONS_FILE: &str = "qs-subscriptions";

/// What the sessions of this process share.
#[derive(Debug, Default)]
pub struct Shared {
    folders: Mutex<HashMap<PathBuf, Weak<FolderState>>>,
}

/// One folder as the sessions of this process share it.
#[derive(Debug)]
pub struct FolderState {
    index: Mutex<UidIndex>,
    cache: Mutex<HashMap<MessageId, CacheEntry>>,
    view: Mutex<FolderView>,
    /// The last known `\Recent` mark ([`crate::recent`]): UIDVALIDITY and UID.
    recent_floor: Mutex<(u32, u32)>,
}

/// The folder's messages as last listed, shared by the sessions that have it
/// selected: each session keeps only its sequence of UIDs and compares it with this.
///
/// A message that leaves the folder stays here, as expunged, until every session
/// that had the folder selected then has looked (synced) since: a session may not
/// tell its client of an expunge at once (RFC 3501 §7.4.1), and meanwhile answers
/// for the message from what is kept (RFC 2180 §4.1). Its parse cache entry is
/// kept as long.
#[derive(Debug, Default)]
pub struct FolderView {
    /// The messages, by UID.
    pub entries: Vec<Entry>,
    /// The highest modification sequence given out: each flag change (seen by a
    /// listing or made by a session of this process) gets the next one.
    pub modseq: u64,
    /// Messages gone from the folder, by UID, each with the value of `removals`
    /// it was given.
    expunged: BTreeMap<u32, (u64, Entry)>,
    /// Messages gone so far.
    removals: u64,
    /// The sessions that have the folder selected, by the number [`FolderState::join`]
    /// gave them: how many removals each has looked at.
    readers: HashMap<u64, u64>,
    /// The number the next reader gets.
    next_reader: u64,
    /// Modification times of `new/` and `cur/` of the last listing, when they had
    /// settled: the folder needs no listing while they stay the same.
    settled: Option<(SystemTime, SystemTime)>,
    /// When the last listing began: a session that asked for a refresh before that
    /// (and waited for the lock meanwhile) has nothing more to learn from another.
    listed_at: Option<Instant>,
}

/// One message of a [`FolderView`].
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its UID.
    pub uid: u32,
    /// Its identity in the store.
    pub id: MessageId,
    /// Its flags.
    pub flags: Flags,
    /// Still in `new/`.
    pub in_new: bool,
    /// Its size from its file name, when recorded there.
    pub size: Option<u64>,
    /// INTERNALDATE, seconds since 1970.
    pub date: i64,
    /// When its flags last changed (see [`FolderView::modseq`]).
    pub modseq: u64,
}

/// A directory changed less than this before a listing began may have changed during
/// it (coarse time stamps): such a listing does not count as settled.
const MTIME_SLACK: Duration = Duration::from_millis(100);

/// What the cache holds for one message.
#[derive(Debug, Default, Clone)]
struct CacheEntry {
    summary: Option<Arc<HeaderSummary>>,
    structure: Option<Arc<Structure>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// The shared state of a folder, opening its UID index if no session has it.
    pub fn folder(
        &self,
        mailbox: &Mailbox,
        folder: &Folder,
    ) -> Result<Arc<FolderState>, StoreError> {
        let key = folder.path().to_owned();
        {
            let mut folders = lock(&self.folders);
            if let Some(state) = folders.get(&key).and_then(Weak::upgrade) {
                drop(folders);
                // The folder may have been deleted and made again since.
                lock(&state.index).refresh()?;
                return Ok(state);
            }
            folders.retain(|_, w| w.strong_count() > 0);
        }
        let index = UidIndex::open(mailbox, folder)?;
        let state = Arc::new(FolderState {
            index: Mutex::new(index),
            cache: Mutex::new(HashMap::new()),
            view: Mutex::new(FolderView::default()),
            recent_floor: Mutex::new((0, 0)),
        });
        let mut folders = lock(&self.folders);
        // Another session may have opened it meanwhile: use theirs.
        if let Some(existing) = folders.get(&key).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        folders.insert(key, Arc::downgrade(&state));
        Ok(state)
    }
}

impl FolderState {
    /// The shared view of the folder's messages (call [`FolderState::refresh`] first).
    pub fn view(&self) -> MutexGuard<'_, FolderView> {
        lock(&self.view)
    }

    /// Lists the folder again if `new/` or `cur/` changed since the last listing, gives
    /// new messages their UIDs, and marks flag changes with new modification sequences.
    /// Returns the UIDs that are `\Recent` for the caller ([`crate::recent`]): with
    /// `claim` (a read-write session) those it is the first to see, which it takes,
    /// and whose files it moves from `new/` to `cur/`; without, those no session took.
    pub fn refresh(&self, folder: &Folder, claim: bool) -> Result<Vec<u32>, StoreError> {
        self.relist(folder, claim)?;
        self.recent(folder, claim)
    }

    /// The UIDs of the view that are `\Recent` for a caller (see [`FolderState::refresh`]).
    fn recent(&self, folder: &Folder, claim: bool) -> Result<Vec<u32>, StoreError> {
        let uid_validity = lock(&self.index).uid_validity();
        let (known_validity, known_floor) = *lock(&self.recent_floor);
        let floor = if known_validity == uid_validity {
            known_floor
        } else {
            0
        };
        // The mark only moves up: nothing above it, nothing to read.
        let above: Vec<u32> = {
            let view = lock(&self.view);
            let start = view.entries.partition_point(|e| e.uid <= floor);
            view.entries[start..].iter().map(|e| e.uid).collect()
        };
        let Some(&upto) = above.last() else {
            return Ok(Vec::new());
        };
        let (floor, now) = if claim {
            let before = recent::claim(folder, uid_validity, upto)?;
            (before, before.max(upto))
        } else {
            let floor = recent::peek(folder, uid_validity)?;
            (floor, floor)
        };
        *lock(&self.recent_floor) = (uid_validity, now);
        Ok(above
            .into_iter()
            .filter(|&uid| uid > floor && uid <= upto)
            .collect())
    }

    fn relist(&self, folder: &Folder, claim: bool) -> Result<(), StoreError> {
        let asked = Instant::now();
        let mut view = lock(&self.view);
        let listing_began = Instant::now();
        let started = SystemTime::now();
        let new_dir = folder.path().join("new");
        let cur_dir = folder.path().join("cur");
        let before = (mtime(&new_dir)?, mtime(&cur_dir)?);
        let unclaimed = claim && view.entries.iter().any(|e| e.in_new);
        if view.settled == Some(before) && !unclaimed {
            return Ok(());
        }
        // Sessions of a busy folder wait here for each other's listings: one that
        // began after this session asked saw every change made before it asked.
        if view.listed_at.is_some_and(|at| at >= asked) && !unclaimed {
            return Ok(());
        }
        let mut listing = folder.messages()?;
        // A message that seems gone must be missing from a second listing too: a
        // directory read is not atomic while other processes rename files.
        let extra: Vec<_> = {
            let listed: HashSet<&MessageId> = listing.iter().map(|e| &e.id).collect();
            let seems_gone = view.entries.iter().any(|e| !listed.contains(&e.id))
                || lock(&self.index).misses_live(&listed);
            if seems_gone {
                folder
                    .messages()?
                    .into_iter()
                    .filter(|e| !listed.contains(&e.id))
                    .collect()
            } else {
                Vec::new()
            }
        };
        listing.extend(extra);
        if claim {
            for entry in listing.iter_mut().filter(|e| e.is_new) {
                if let Some(now) = folder.claim(entry)? {
                    *entry = now;
                }
            }
        }
        let assigned = {
            let mut index = lock(&self.index);
            let validity = index.uid_validity();
            let assigned = index.assign(listing)?;
            if index.uid_validity() != validity {
                return Err(StoreError::FolderNotFound {
                    path: folder.path().to_owned(),
                });
            }
            // What changed since the index last recorded the folder: flags, new
            // messages, messages gone (by any program).
            let listed: HashSet<u32> = assigned.iter().map(|(r, _)| r.uid).collect();
            let changed: Vec<(u32, Flags)> = assigned
                .iter()
                .filter(|(r, e)| index.flag_state(r.uid).map(|(_, f)| f) != Some(e.flags))
                .map(|(r, e)| (r.uid, e.flags))
                .collect();
            let mut gone: Vec<u32> = index.live_uids().filter(|u| !listed.contains(u)).collect();
            gone.sort_unstable();
            if !changed.is_empty() || !gone.is_empty() {
                index.record(&changed, &gone)?;
            }
            if let Err(e) = index.compact_if_worth_it(folder, assigned.len()) {
                tracing::warn!(folder = %folder.name(), error = %e, "cannot compact the UID index");
            }
            view.modseq = index.highest_modseq();
            assigned
                .into_iter()
                .map(|(r, e)| {
                    let modseq = index.flag_state(r.uid).map_or(view.modseq, |(m, _)| m);
                    (r, e, modseq)
                })
                .collect::<Vec<_>>()
        };
        let old = std::mem::take(&mut view.entries);
        let mut gone: Vec<Entry> = Vec::new();
        let mut old_iter = old.into_iter().peekable();
        let mut entries = Vec::with_capacity(assigned.len());
        for (record, entry, modseq) in assigned {
            while let Some(o) = old_iter.next_if(|o| o.uid < record.uid) {
                gone.push(o);
            }
            // Still here, so not gone.
            old_iter.next_if(|o| o.uid == record.uid);
            entries.push(Entry {
                uid: record.uid,
                id: entry.id,
                flags: entry.flags,
                in_new: entry.is_new,
                size: entry.size,
                date: record.internal_date,
                modseq,
            });
        }
        gone.extend(old_iter);
        view.entries = entries;
        let pruned = view.bury(gone);
        self.forget(&pruned);
        let after = (mtime(&new_dir)?, mtime(&cur_dir)?);
        let quiet = |t: SystemTime| t + MTIME_SLACK < started;
        view.settled = (after == before && quiet(before.0) && quiet(before.1)).then_some(before);
        view.listed_at = Some(listing_began);
        Ok(())
    }

    /// Records a flag change this process made (the file is renamed already) in the
    /// index, and in the view so that the other sessions see it without a listing.
    /// Returns its modification sequence. When the index cannot be written, the next
    /// listing records the change (the file names are the flags' store).
    pub fn set_flags(&self, uid: u32, flags: Flags) -> u64 {
        let mut view = lock(&self.view);
        let modseq = self.record_state(&mut view, uid, flags);
        if let Ok(i) = view.entries.binary_search_by_key(&uid, |e| e.uid) {
            let e = &mut view.entries[i];
            e.flags = flags;
            e.in_new = false;
            e.modseq = modseq;
        }
        modseq
    }

    /// Records a message's flags in the index (hold the view's lock: the index is
    /// taken after it) and returns their modification sequence. When the index
    /// cannot be written, the next listing records them (the file names are the
    /// flags' store).
    fn record_state(&self, view: &mut FolderView, uid: u32, flags: Flags) -> u64 {
        let mut index = lock(&self.index);
        let modseq = match index.record(&[(uid, flags)], &[]) {
            Ok(modseqs) => modseqs[0],
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a message's flags in the UID index");
                index.highest_modseq()
            }
        };
        view.modseq = index.highest_modseq();
        modseq
    }

    /// Notes that this process removed messages (`uids` ascending) from the folder,
    /// in the index (a new modification sequence; when it cannot be written, the next
    /// listing records it) and in the view.
    pub fn remove(&self, uids: &[u32]) {
        let mut view = lock(&self.view);
        {
            let mut index = lock(&self.index);
            if let Err(e) = index.record(&[], uids) {
                tracing::warn!(error = %e, "cannot record an expunge in the UID index");
            }
            view.modseq = index.highest_modseq();
        }
        let mut gone = Vec::new();
        view.entries.retain(|e| {
            let keep = uids.binary_search(&e.uid).is_err();
            if !keep {
                gone.push(e.clone());
            }
            keep
        });
        let pruned = view.bury(gone);
        self.forget(&pruned);
    }

    /// Registers a session that selects the folder: the messages that leave it from
    /// now on are kept until the session has looked (see [`FolderView::caught_up`]).
    /// Returns the number to give back to [`FolderState::leave`].
    pub fn join(&self) -> u64 {
        let mut view = lock(&self.view);
        let reader = view.next_reader;
        view.next_reader += 1;
        let removals = view.removals;
        view.readers.insert(reader, removals);
        reader
    }

    /// The session `reader` no longer has the folder selected.
    pub fn leave(&self, reader: u64) {
        let mut view = lock(&self.view);
        view.readers.remove(&reader);
        let pruned = view.prune();
        self.forget(&pruned);
    }

    /// The folder's UID index.
    pub fn index(&self) -> MutexGuard<'_, UidIndex> {
        lock(&self.index)
    }

    /// The cached header summary of a message.
    pub fn summary(&self, id: &MessageId) -> Option<Arc<HeaderSummary>> {
        lock(&self.cache).get(id).and_then(|e| e.summary.clone())
    }

    /// Caches a header summary.
    pub fn put_summary(&self, id: &MessageId, summary: Arc<HeaderSummary>) {
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED && !cache.contains_key(id) {
            cache.clear();
        }
        cache.entry(id.clone()).or_default().summary = Some(summary);
    }

    /// The cached structure of a message.
    pub fn structure(&self, id: &MessageId) -> Option<Arc<Structure>> {
        lock(&self.cache).get(id).and_then(|e| e.structure.clone())
    }

    /// Caches a structure.
    pub fn put_structure(&self, id: &MessageId, structure: Arc<Structure>) {
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED && !cache.contains_key(id) {
            cache.clear();
        }
        cache.entry(id.clone()).or_default().structure = Some(structure);
    }

    /// Forgets messages that are gone.
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a MessageId>) {
        let mut cache = lock(&self.cache);
        for id in ids {
            cache.remove(id);
        }
    }

    /// How many messages are cached.
    pub fn cached(&self) -> usize {
        lock(&self.cache).len()
    }
}

impl FolderView {
    /// What is kept of a message that left the folder, while some session may still
    /// show it to its client.
    pub fn expunged(&self, uid: u32) -> Option<&Entry> {
        self.expunged.get(&uid).map(|(_, e)| e)
    }

    /// The session `reader` has looked at every message that left the folder so far:
    /// what no session needs any longer is dropped. Returns the identities of the
    /// messages dropped, for the parse cache to forget.
    pub fn caught_up(&mut self, reader: u64) -> Vec<MessageId> {
        let removals = self.removals;
        if let Some(seen) = self.readers.get_mut(&reader) {
            *seen = removals;
        }
        self.prune()
    }

    /// Keeps messages that left the folder as expunged, for the sessions that may
    /// still show them. Returns the identities of those no session needs (see
    /// [`FolderView::caught_up`]).
    #[must_use]
    fn bury(&mut self, gone: Vec<Entry>) -> Vec<MessageId> {
        for entry in gone {
            self.removals += 1;
            self.expunged.insert(entry.uid, (self.removals, entry));
        }
        self.prune()
    }

    /// Drops the expunged messages every reader has looked at.
    fn prune(&mut self) -> Vec<MessageId> {
        let oldest = self
            .readers
            .values()
            .copied()
            .min()
            .unwrap_or(self.removals);
        let mut pruned = Vec::new();
        self.expunged.retain(|_, (at, entry)| {
            let keep = *at > oldest;
            if !keep {
                pruned.push(entry.id.clone());
            }
            keep
        });
        pruned
    }
}

fn mtime(dir: &Path) -> Result<SystemTime, StoreError> {
    fs::metadata(dir).and_then(|m| m.modified()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::FolderNotFound {
                path: dir.to_owned(),
            }
        } else {
            StoreError::Io {
                path: dir.to_owned(),
                source: e,
            }
        }
    })
}

/// The system flags, as IMAP names them, with their Maildir letters.
pub const SYSTEM_FLAGS: [(&str, char); 6] = [
    ("\\Answered", 'R'),
    ("\\Flagged", 'F'),
    ("\\Deleted", 'T'),
    ("\\Seen", 'S'),
    ("\\Draft", 'D'),
    // Maildir's "passed" is what IMAP clients call $Forwarded.
    ("$Forwarded", 'P'),
];

/// The Maildir letter of an IMAP flag or keyword, if the folder has one for it.
pub fn letter_of(name: &str, index: &UidIndex) -> Option<char> {
    SYSTEM_FLAGS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, c)| *c)
        .or_else(|| index.keyword_letter(name))
}

/// Like [`letter_of`], from a copy of the folder's keywords.
pub fn letter_in(name: &str, keywords: &[String]) -> Option<char> {
    SYSTEM_FLAGS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, c)| *c)
        .or_else(|| {
            keywords
                .iter()
                .position(|k| k.eq_ignore_ascii_case(name))
                .filter(|&i| i < qs_mailstore::MAX_KEYWORDS)
                .map(|i| (b'a' + i as u8) as char)
        })
}

/// The IMAP flags of a message: `(\Seen \Recent $label)`.
pub fn write_flags(out: &mut Vec<u8>, flags: Flags, recent: bool, index: &UidIndex) {
    out.push(b'(');
    let mut first = true;
    let mut put = |out: &mut Vec<u8>, name: &str| {
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(name.as_bytes());
    };
    for (name, c) in SYSTEM_FLAGS {
        if flags.has_letter(c) {
            put(out, name);
        }
    }
    if recent {
        put(out, "\\Recent");
    }
    for c in flags.keyword_letters() {
        if let Some(k) = index.keyword_of(c) {
            put(out, k);
        }
    }
    out.push(b')');
}

/// Every flag and keyword a folder knows, for the FLAGS response.
pub fn known_flags(index: &UidIndex) -> Vec<String> {
    SYSTEM_FLAGS
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .chain(index.keywords().iter().cloned())
        .collect()
}

/// Whether a flag is `\Seen`.
pub fn is_seen(flags: Flags) -> bool {
    flags.contains(Flag::Seen)
}

/// A user's subscriptions (`qs-subscriptions` in the mailbox root, one folder name per
/// line, UTF-8). Changed under a lock, written to a temp file and renamed.
pub struct Subscriptions {
    root: PathBuf,
}

impl Subscriptions {
    /// The subscriptions of the mailbox at `root`.
    pub fn new(root: &Path) -> Subscriptions {
        Subscriptions {
            root: root.to_owned(),
        }
    }

    /// The subscribed names. Until the user changes them, INBOX and the special-use
    /// folders are subscribed, so that clients which show only subscribed folders show
    /// them.
    pub fn list(&self) -> std::io::Result<Vec<String>> {
        let path = self.root.join(SUBSCRIPTIONS_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(std::iter::once(FolderName::inbox())
                    .chain(qs_mailstore::SpecialUse::ALL.map(|u| u.folder_name()))
                    .map(|f| f.to_string())
                    .collect())
            }
            Err(e) => Err(e),
        }
    }

    /// Adds a name (no error if it is there).
    pub fn add(&self, name: &str) -> std::io::Result<()> {
        self.change(|list| {
            if !list.iter().any(|n| n == name) {
                list.push(name.to_owned());
            }
        })
    }

    /// Removes a name; false if it was not there.
    pub fn remove(&self, name: &str) -> std::io::Result<bool> {
        let mut found = false;
        self.change(|list| {
            let before = list.len();
            list.retain(|n| n != name);
            found = list.len() != before;
        })?;
        Ok(found)
    }

    /// Renames a name and the names below it (RENAME keeps subscriptions).
    pub fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        let prefix = format!("{from}.");
        self.change(|list| {
            for n in list.iter_mut() {
                if n == from {
                    *n = to.to_owned();
                } else if let Some(rest) = n.strip_prefix(&prefix) {
                    *n = format!("{to}.{rest}");
                }
            }
        })
    }

    fn change(&self, f: impl FnOnce(&mut Vec<String>)) -> std::io::Result<()> {
        let lock_path = self.root.join(format!("{SUBSCRIPTIONS_FILE}.lock"));
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)?;
        lock.lock()?;
        let path = self.root.join(SUBSCRIPTIONS_FILE);
        let mut list = self.list()?;
        f(&mut list);
        let temp = self.root.join(format!("{SUBSCRIPTIONS_FILE}.tmp"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        let mut out = list.join("\n");
        out.push('\n');
        file.write_all(out.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_start_with_the_usual_folders_and_change() {
        let tmp = tempfile::tempdir().unwrap();
        let subs = Subscriptions::new(tmp.path());
        assert_eq!(
            subs.list().unwrap(),
            ["INBOX", "Sent", "Drafts", "Trash", "Junk"]
        );
        subs.add("Lists.rust").unwrap();
        subs.add("Lists.rust").unwrap();
        assert!(subs.remove("Junk").unwrap());
        assert!(!subs.remove("Junk").unwrap());
        subs.rename("Lists", "Groups").unwrap();
        assert_eq!(
            subs.list().unwrap(),
            ["INBOX", "Sent", "Drafts", "Trash", "Groups.rust"]
        );
    }

    #[test]
    fn flags_map_both_ways() {
        let tmp = tempfile::tempdir().unwrap();
        let mailbox = Mailbox::open(tmp.path().join("m"), "mx").unwrap();
        let mut index = UidIndex::open(&mailbox, &mailbox.inbox()).unwrap();
        assert_eq!(index.define_keyword("Work").unwrap(), Some('a'));
        assert_eq!(letter_of("\\seen", &index), Some('S'));
        assert_eq!(letter_of("$forwarded", &index), Some('P'));
        assert_eq!(letter_of("work", &index), Some('a'));
        assert_eq!(letter_of("other", &index), None);
        let mut out = Vec::new();
        write_flags(&mut out, Flags::from_info("STPa"), true, &index);
        assert_eq!(out, b"(\\Deleted \\Seen $Forwarded \\Recent Work)");
        out.clear();
        write_flags(&mut out, Flags::new(), false, &index);
        assert_eq!(out, b"()");
        assert_eq!(known_flags(&index).last().map(String::as_str), Some("Work"));
    }

    #[test]
    fn sessions_share_one_state_per_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let mailbox = Mailbox::open(tmp.path().join("m"), "mx").unwrap();
        let shared = Shared::default();
        let a = shared.folder(&mailbox, &mailbox.inbox()).unwrap();
        let b = shared.folder(&mailbox, &mailbox.inbox()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let id = MessageId::new("1.2.h").unwrap();
        a.put_summary(
            &id,
            Arc::new(HeaderSummary {
                envelope: b"()".to_vec(),
                sent: None,
            }),
        );
        assert!(b.summary(&id).is_some());
        b.forget([&id]);
        assert_eq!(a.cached(), 0);
        drop((a, b));
        let c = shared.folder(&mailbox, &mailbox.inbox()).unwrap();
        assert_eq!(c.cached(), 0);
    }

    #[test]
    fn expunged_messages_stay_until_every_reader_has_looked() {
        let tmp = tempfile::tempdir().unwrap();
        let mailbox = Mailbox::open(tmp.path().join("m"), "mx").unwrap();
        for key in ["one", "two", "three"] {
            mailbox
                .deliver(&FolderName::inbox(), b"Subject: x\r\n\r\nx\r\n", key)
                .unwrap();
        }
        let shared = Shared::default();
        let inbox = mailbox.inbox();
        let state = shared.folder(&mailbox, &inbox).unwrap();
        state.refresh(&inbox, true).unwrap();
        let (uid, id) = {
            let view = state.view();
            assert_eq!(view.entries.len(), 3);
            (view.entries[0].uid, view.entries[0].id.clone())
        };
        let summary = Arc::new(HeaderSummary {
            envelope: b"()".to_vec(),
            sent: None,
        });
        state.put_summary(&id, summary);

        // Two sessions have the folder selected; one of them expunges.
        let (a, b) = (state.join(), state.join());
        state.remove(&[uid]);
        assert!(state.view().entries.iter().all(|e| e.uid != uid));
        assert!(state.view().expunged(uid).is_some());
        assert!(state.view().caught_up(a).is_empty());
        // b has not looked: what it may still answer with stays.
        assert!(state.view().expunged(uid).is_some());
        assert!(state.summary(&id).is_some());
        assert_eq!(state.view().caught_up(b), [id]);
        assert!(state.view().expunged(uid).is_none());

        // A session that leaves without looking no longer holds anything back, and
        // with no session at all nothing is kept.
        let c = state.join();
        let uid2 = state.view().entries[0].uid;
        state.remove(&[uid2]);
        assert!(state.view().expunged(uid2).is_some());
        state.leave(c);
        state.leave(a);
        state.leave(b);
        assert!(state.view().expunged(uid2).is_none());
        let uid3 = state.view().entries[0].uid;
        state.remove(&[uid3]);
        assert!(state.view().expunged(uid3).is_none());
    }
}
