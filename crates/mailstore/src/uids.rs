//! The persistent IMAP UID index of a folder: UIDVALIDITY, UIDNEXT, each message's UID
//! and INTERNALDATE, the folder's keyword names, and the modification sequences of
//! CONDSTORE/QRESYNC (RFC 7162), in a file beside the Maildir.
//!
//! # The file
//!
//! `qs-uids` in the folder's directory (the mailbox root for the INBOX), text, one record
//! per line:
//!
//! ```text
//! qs-uids 1 <uidvalidity> <uidnext> [<highestmodseq> [<forgotten>]]   first line
//! <uid> <internaldate> <base name>       a message (internaldate: seconds since 1970)
//! k <letter> <keyword>                   keyword <keyword> is the Maildir letter <letter>
//! m <uid> <modseq> <letters>             at <modseq>, message <uid> had these flags
//! x <uid> <modseq>                       at <modseq>, message <uid> left the folder
//! ```
//!
//! Records are appended, never changed. The UIDNEXT of the first line is a lower bound:
//! the real one is also past every UID recorded. A record stays after its message is gone,
//! until a compaction rewrites the file (temp file, fsync, rename) without the records of
//! messages that two listings in a row did not find; the first line then carries the
//! UIDNEXT, so no UID is ever handed out twice.
//!
//! # Modification sequences
//!
//! HIGHESTMODSEQ is the greatest of the first line's and every `m` and `x` record's;
//! it only grows, and survives compactions in the first line. Whoever notices a change
//! records it: the session that stored flags or expunged, or a listing that finds a
//! message's flags differ from its last `m` record (another program renamed the file),
//! a message with no `m` record yet (new mail, or a folder indexed before modification
//! sequences), or a message with one that is gone. The messages of one record batch
//! share one new modification sequence. `m` and `x` records are written without an
//! fsync: a crash of the machine may lose the last flag changes' records (the flags
//! themselves are in the file names, and the next listing records them again under a
//! new sequence), never a message or a UID. A compaction keeps the last `m` record of
//! each message and the newest [`KEPT_EXPUNGES`] `x` records, and writes in the first
//! line up to which sequence expunges may have been forgotten (`<forgotten>`: those of
//! dropped `x` records, or of messages that left without one). A QRESYNC client that
//! knew the folder after that learns exactly what left since; one that knew it
//! before learns of every UID the folder no longer holds, as RFC 7162 §3.2.5 allows.
//!
//! # Locking
//!
//! Every change (new UIDs, a new keyword, a compaction) is made holding an exclusive
//! `flock` on `qs-uids.lock` (the data file itself is replaced by compactions, so it
//! cannot carry the lock), re-reading what other processes appended first. Appends are
//! one `write` of whole lines, then `fsync`: a UID is on disk before anyone is told it.
//! Readers take no lock; they read only whole lines and notice a compaction by the
//! file's inode. pop3-server and core-queue never change the index: a message they add
//! gets its UID from the next IMAP listing; one they remove or rename keeps its record.
//!
//! # Identity
//!
//! A record is keyed by the message's base name ([`MessageId`]), which flag changes and
//! the move from `new/` to `cur/` keep. A message copied or moved into the folder gets a
//! new base name, so a record's UID is never given to a message that arrives later.
//! Base names with a line break in them cannot be recorded and get no UID.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, StoreError};
use crate::fsutil::{FILE_MODE, sync_dir};
use crate::mailbox::{Folder, Mailbox, MessageEntry};
use crate::names::{Flags, MessageId, leading_secs};

/// The index file in a folder's directory.
pub const UID_FILE: &str = "qs-uids";
/// The lock file beside it.
pub const UID_LOCK_FILE: &str = "qs-uids.lock";
/// The last UIDVALIDITY given out in a mailbox, in its root: a folder deleted and made
/// again in the same second still gets a new one.
const VALIDITY_FILE: &str = "qs-uidvalidity";
/// The first word of the file.
const MAGIC: &str = "qs-uids";
/// Keywords a folder can hold: the lower-case letters of Maildir file names.
pub const MAX_KEYWORDS: usize = 26;
/// A compaction is worth it once this many records are of messages that are gone…
const COMPACT_MIN_DEAD: usize = 1000;
/// `x` records a compaction keeps (the newest).
pub const KEPT_EXPUNGES: usize = 10_000;

/// What the index knows of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRecord {
    /// Its UID in the folder.
    pub uid: u32,
    /// Its INTERNALDATE, seconds since 1970.
    pub internal_date: i64,
}

/// One folder's UID index, as this process last read it. See the module header.
#[derive(Debug)]
pub struct UidIndex {
    dir: PathBuf,
    root: PathBuf,
    uid_validity: u32,
    uid_next: u32,
    by_id: HashMap<MessageId, UidRecord>,
    keywords: Vec<String>,
    /// HIGHESTMODSEQ (see the module header).
    highest_modseq: u64,
    /// Expunges up to this sequence may be forgotten (see the module header).
    forgotten: u64,
    /// The last `m` record of each message that has one and has not left: its
    /// modification sequence and flags.
    flag_state: HashMap<u32, (u64, Flags)>,
    /// The `x` records: when each message left, by UID.
    expunged: BTreeMap<u32, u64>,
    /// The file as last read: inode and the offset after the last whole line.
    read_state: Option<(u64, u64, u64)>,
}

impl UidIndex {
    /// Opens the index of `folder` of `mailbox`, creating it (with a new UIDVALIDITY) if
    /// the folder has none yet.
    pub fn open(mailbox: &Mailbox, folder: &Folder) -> Result<UidIndex> {
        let mut index = UidIndex {
            dir: folder.path().to_owned(),
            root: mailbox.root().to_owned(),
            uid_validity: 0,
            uid_next: 1,
            by_id: HashMap::new(),
            keywords: Vec::new(),
            highest_modseq: 1,
            forgotten: 1,
            flag_state: HashMap::new(),
            expunged: BTreeMap::new(),
            read_state: None,
        };
        index.refresh()?;
        if index.read_state.is_none() {
            let _lock = index.lock()?;
            index.refresh()?;
            if index.read_state.is_none() {
                index.uid_validity = next_uid_validity(&index.root)?;
                index.uid_next = 1;
                index.rewrite(&HashSet::new(), false)?;
            }
        }
        Ok(index)
    }

    /// UIDVALIDITY: changes only when the folder is made anew.
    pub fn uid_validity(&self) -> u32 {
        self.uid_validity
    }

    /// UIDNEXT: the UID the next message will get.
    pub fn uid_next(&self) -> u32 {
        self.uid_next
    }

    /// The record of a message, if it has one.
    pub fn get(&self, id: &MessageId) -> Option<UidRecord> {
        self.by_id.get(id).copied()
    }

    /// The folder's keywords; the `i`th is the Maildir letter `'a' + i`.
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }

    /// The Maildir letter of a keyword (compared without regard to ASCII case).
    pub fn keyword_letter(&self, name: &str) -> Option<char> {
        self.keywords
            .iter()
            .position(|k| k.eq_ignore_ascii_case(name))
            .and_then(letter)
    }

    /// The keyword a Maildir letter stands for.
    pub fn keyword_of(&self, letter: char) -> Option<&str> {
        let i = (letter as usize).checked_sub('a' as usize)?;
        self.keywords.get(i).map(String::as_str)
    }

    /// HIGHESTMODSEQ: the greatest modification sequence given out (at least 1).
    pub fn highest_modseq(&self) -> u64 {
        self.highest_modseq
    }

    /// Expunges at or before this modification sequence may be forgotten: a client
    /// that knew the folder later than that can be told exactly what left since.
    pub fn expunges_forgotten_by(&self) -> u64 {
        self.forgotten
    }

    /// The UIDs recorded as having left the folder after `modseq`, ascending.
    pub fn expunged_since(&self, modseq: u64) -> impl Iterator<Item = u32> + '_ {
        self.expunged
            .iter()
            .filter(move |(_, m)| **m > modseq)
            .map(|(uid, _)| *uid)
    }

    /// The last recorded modification sequence and flags of a message that has not
    /// left the folder, by UID.
    pub fn flag_state(&self, uid: u32) -> Option<(u64, Flags)> {
        self.flag_state.get(&uid).copied()
    }

    /// The UIDs with a recorded state that have not left the folder.
    pub fn live_uids(&self) -> impl Iterator<Item = u32> + '_ {
        self.flag_state.keys().copied()
    }

    /// True if some message with a recorded state (that has not left) is not among
    /// `listed`, by base name.
    pub fn misses_live(&self, listed: &HashSet<&MessageId>) -> bool {
        self.by_id
            .iter()
            .any(|(id, r)| self.flag_state.contains_key(&r.uid) && !listed.contains(id))
    }

    /// The UIDs recorded as having left the folder at or before `modseq`, ascending.
    pub fn expunged_by(&self, modseq: u64) -> impl Iterator<Item = u32> + '_ {
        self.expunged
            .iter()
            .filter(move |(_, m)| **m <= modseq)
            .map(|(uid, _)| *uid)
    }

    /// When a message left the folder, if that is still recorded.
    pub fn expunged_at(&self, uid: u32) -> Option<u64> {
        self.expunged.get(&uid).copied()
    }

    /// Records flag changes (`(uid, flags)`) and messages that left (`gone`) under one
    /// new modification sequence, leaving out what is recorded so already (another
    /// process may have seen the same change first). Returns each change's
    /// modification sequence, in order: the new one, or the recorded one where
    /// nothing was left to record.
    pub fn record(&mut self, changes: &[(u32, Flags)], gone: &[u32]) -> Result<Vec<u64>> {
        let pending = |index: &UidIndex| {
            changes
                .iter()
                .any(|(uid, flags)| index.flag_state(*uid).map(|(_, f)| f) != Some(*flags))
                || gone.iter().any(|uid| index.flag_state.contains_key(uid))
        };
        self.refresh()?;
        if pending(self) {
            let _lock = self.lock()?;
            self.refresh()?;
            if pending(self) {
                let modseq = self.highest_modseq + 1;
                let mut lines = String::new();
                for &(uid, flags) in changes {
                    if self.flag_state(uid).map(|(_, f)| f) != Some(flags) {
                        lines.push_str(&format!("m {uid} {modseq} {flags}\n"));
                        self.flag_state.insert(uid, (modseq, flags));
                        self.expunged.remove(&uid);
                    }
                }
                for &uid in gone {
                    if self.flag_state.remove(&uid).is_some() {
                        lines.push_str(&format!("x {uid} {modseq}\n"));
                        self.expunged.insert(uid, modseq);
                    }
                }
                self.append_lines(&lines, false)?;
                self.highest_modseq = modseq;
            }
        }
        Ok(changes
            .iter()
            .map(|(uid, _)| {
                self.flag_state(*uid)
                    .map_or(self.highest_modseq, |(m, _)| m)
            })
            .collect())
    }

    /// The letter of a keyword, recording it if it is new. `None` when the folder already
    /// has [`MAX_KEYWORDS`] others. A name with white space or control characters is
    /// refused ([`StoreError::InvalidName`]).
    pub fn define_keyword(&mut self, name: &str) -> Result<Option<char>> {
        if name.is_empty()
            || name.len() > 100
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(StoreError::InvalidName {
                what: "keyword",
                name: name.to_owned(),
                reason: "empty, too long, or white space or control characters",
            });
        }
        if let Some(found) = self.keyword_letter(name) {
            return Ok(Some(found));
        }
        let _lock = self.lock()?;
        self.refresh()?;
        if let Some(found) = self.keyword_letter(name) {
            return Ok(Some(found));
        }
        let Some(c) = letter(self.keywords.len()) else {
            return Ok(None);
        };
        self.append(&format!("k {c} {name}\n"))?;
        self.keywords.push(name.to_owned());
        Ok(Some(c))
    }

    /// Reads what other processes appended (or the whole file after a compaction).
    pub fn refresh(&mut self) -> Result<()> {
        let path = self.dir.join(UID_FILE);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.dir.join("cur").is_dir() {
                    return Err(StoreError::FolderNotFound {
                        path: self.dir.clone(),
                    });
                }
                self.read_state = None;
                return Ok(());
            }
            Err(e) => return Err(StoreError::io(path, e)),
        };
        let meta = file.metadata().map_err(|e| StoreError::io(&path, e))?;
        let (dev, ino) = (meta.dev(), meta.ino());
        let offset = match self.read_state {
            Some((d, i, offset)) if d == dev && i == ino => {
                if meta.len() == offset {
                    return Ok(());
                }
                offset
            }
            _ => {
                // First read, or the file was replaced (a compaction, or the folder made
                // anew): read it all.
                self.by_id.clear();
                self.keywords.clear();
                self.uid_next = 1;
                self.highest_modseq = 1;
                self.forgotten = 1;
                self.flag_state.clear();
                self.expunged.clear();
                0
            }
        };
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| StoreError::io(&path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| StoreError::io(&path, e))?;
        // Only whole lines: an append may be half written.
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let text = String::from_utf8_lossy(&bytes[..whole]);
        for (n, line) in text.lines().enumerate() {
            if offset == 0 && n == 0 {
                self.read_header(line, &path)?;
            } else {
                self.read_line(line);
            }
        }
        if offset == 0 && whole == 0 {
            // An empty file: a creation that crashed before its first line.
            self.read_state = None;
            return Ok(());
        }
        self.read_state = Some((dev, ino, offset + whole as u64));
        Ok(())
    }

    /// Gives every listed message that has no UID yet the next ones, in the listing's
    /// order (oldest delivery first), and returns the listing with each message's record,
    /// sorted by UID. Messages whose base name cannot be recorded are left out. A new
    /// message's INTERNALDATE is its file's modification time.
    pub fn assign(&mut self, listing: Vec<MessageEntry>) -> Result<Vec<(UidRecord, MessageEntry)>> {
        self.refresh()?;
        let missing = listing
            .iter()
            .filter(|e| !self.by_id.contains_key(&e.id) && recordable(&e.id))
            .count();
        if missing > 0 {
            let _lock = self.lock()?;
            self.refresh()?;
            let mut lines = String::new();
            let mut uid_next = self.uid_next;
            let mut added = Vec::new();
            for entry in &listing {
                if self.by_id.contains_key(&entry.id) || !recordable(&entry.id) {
                    continue;
                }
                let record = UidRecord {
                    uid: uid_next,
                    internal_date: file_date(entry),
                };
                uid_next = uid_next
                    .checked_add(1)
                    .ok_or_else(|| uids_exhausted(&self.dir))?;
                lines.push_str(&format!(
                    "{} {} {}\n",
                    record.uid, record.internal_date, entry.id
                ));
                added.push((entry.id.clone(), record));
            }
            if !lines.is_empty() {
                self.append(&lines)?;
                self.by_id.extend(added);
                self.uid_next = uid_next;
            }
        }
        let mut out: Vec<(UidRecord, MessageEntry)> = listing
            .into_iter()
            .filter_map(|e| self.by_id.get(&e.id).map(|r| (*r, e)))
            .collect();
        out.sort_by_key(|(r, _)| r.uid);
        out.dedup_by_key(|(r, _)| r.uid);
        Ok(out)
    }

    /// Records messages this process just put into the folder (APPEND, COPY, MOVE), with
    /// their INTERNALDATE, and returns their UIDs in the same order.
    pub fn add(&mut self, messages: &[(MessageId, i64)]) -> Result<Vec<u32>> {
        let _lock = self.lock()?;
        self.refresh()?;
        let mut lines = String::new();
        let mut uids = Vec::with_capacity(messages.len());
        let mut uid_next = self.uid_next;
        let mut added = Vec::new();
        for (id, date) in messages {
            if let Some(record) = self.by_id.get(id) {
                uids.push(record.uid);
                continue;
            }
            if !recordable(id) {
                return Err(StoreError::InvalidName {
                    what: "message id",
                    name: id.to_string(),
                    reason: "contains a line break",
                });
            }
            let uid = uid_next;
            uid_next = uid_next
                .checked_add(1)
                .ok_or_else(|| uids_exhausted(&self.dir))?;
            lines.push_str(&format!("{uid} {date} {id}\n"));
            added.push((
                id.clone(),
                UidRecord {
                    uid,
                    internal_date: *date,
                },
            ));
            uids.push(uid);
        }
        if !lines.is_empty() {
            self.append(&lines)?;
            self.by_id.extend(added);
            self.uid_next = uid_next;
        }
        Ok(uids)
    }

    /// How many records are of messages not in `live`.
    pub fn dead_records(&self, live: &HashSet<MessageId>) -> usize {
        self.by_id.keys().filter(|id| !live.contains(*id)).count()
    }

    /// How many messages have records (including messages that are gone).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True if no message has a record.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Compacts (see [`UidIndex::compact`]) when records of gone messages are many: at
    /// least a thousand, and more than the `live` messages a listing just found.
    /// Returns how many records went.
    pub fn compact_if_worth_it(&mut self, folder: &Folder, live: usize) -> Result<usize> {
        let dead = self.by_id.len().saturating_sub(live);
        if dead < COMPACT_MIN_DEAD || dead < live {
            return Ok(0);
        }
        let listing = folder.messages()?;
        self.compact(folder, &listing)
    }

    /// Rewrites the file without the records of messages missing from both `listing` and
    /// a second listing made now. Returns how many records went.
    pub fn compact(&mut self, folder: &Folder, listing: &[MessageEntry]) -> Result<usize> {
        let _lock = self.lock()?;
        self.refresh()?;
        let mut live: HashSet<MessageId> = listing.iter().map(|e| e.id.clone()).collect();
        live.extend(folder.messages()?.into_iter().map(|e| e.id));
        let before = self.by_id.len();
        self.rewrite(&live, true)?;
        Ok(before - self.by_id.len())
    }

    /// Writes the whole file anew (temp file, fsync, rename, fsync of the folder). With
    /// `keep_only_live`, records of messages not in `live` are dropped. Hold the lock.
    fn rewrite(&mut self, live: &HashSet<MessageId>, keep_only_live: bool) -> Result<()> {
        if keep_only_live {
            let highest = self.highest_modseq;
            let expunged = &self.expunged;
            let mut forgotten = self.forgotten;
            self.by_id.retain(|id, record| {
                let keep = live.contains(id);
                // A message that left without an `x` record left at an unknown time.
                if !keep && !expunged.contains_key(&record.uid) {
                    forgotten = highest;
                }
                keep
            });
            self.forgotten = forgotten;
        }
        let mut expunges: Vec<(u32, u64)> = self
            .expunged
            .iter()
            .map(|(&uid, &modseq)| (uid, modseq))
            .collect();
        expunges.sort_by_key(|&(uid, modseq)| (std::cmp::Reverse(modseq), uid));
        if let Some(&(_, newest_dropped)) = expunges.get(KEPT_EXPUNGES) {
            self.forgotten = self.forgotten.max(newest_dropped);
        }
        expunges.truncate(KEPT_EXPUNGES);
        expunges.sort_unstable();
        let mut text = format!(
            "{MAGIC} 1 {} {} {} {}\n",
            self.uid_validity, self.uid_next, self.highest_modseq, self.forgotten
        );
        for (i, keyword) in self.keywords.iter().enumerate() {
            if let Some(c) = letter(i) {
                text.push_str(&format!("k {c} {keyword}\n"));
            }
        }
        let mut records: Vec<(&MessageId, &UidRecord)> = self.by_id.iter().collect();
        records.sort_by_key(|(_, r)| r.uid);
        for (id, record) in records {
            text.push_str(&format!("{} {} {id}\n", record.uid, record.internal_date));
            if let Some((modseq, flags)) = self.flag_state.get(&record.uid) {
                text.push_str(&format!("m {} {modseq} {flags}\n", record.uid));
            }
        }
        for (uid, modseq) in expunges {
            text.push_str(&format!("x {uid} {modseq}\n"));
        }
        let path = self.dir.join(UID_FILE);
        let temp = self.dir.join(format!("{UID_FILE}.tmp"));
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(FILE_MODE)
                .open(&temp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&temp, &path)
        };
        write().map_err(|e| StoreError::io(&temp, e))?;
        sync_dir(&self.dir)?;
        self.read_state = None;
        self.refresh()
    }

    /// Appends whole lines and syncs them. Hold the lock.
    fn append(&mut self, lines: &str) -> Result<()> {
        self.append_lines(lines, true)
    }

    /// Appends whole lines, synced or not. Hold the lock.
    fn append_lines(&mut self, lines: &str, sync: bool) -> Result<()> {
        let path = self.dir.join(UID_FILE);
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        file.write_all(lines.as_bytes())
            .and_then(|()| if sync { file.sync_data() } else { Ok(()) })
            .map_err(|e| StoreError::io(&path, e))?;
        // Our own lines are known already; skip them on the next refresh.
        if let Some((dev, ino, offset)) = self.read_state {
            let meta = file.metadata().map_err(|e| StoreError::io(&path, e))?;
            if meta.ino() == ino && meta.dev() == dev && meta.len() == offset + lines.len() as u64 {
                self.read_state = Some((dev, ino, meta.len()));
            }
        }
        Ok(())
    }

    /// Takes the index's lock (blocking until other processes let go).
    fn lock(&self) -> Result<File> {
        let path = self.dir.join(UID_LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    StoreError::FolderNotFound {
                        path: self.dir.clone(),
                    }
                } else {
                    StoreError::io(&path, e)
                }
            })?;
        file.lock().map_err(|e| StoreError::io(&path, e))?;
        Ok(file)
    }

    fn read_header(&mut self, line: &str, path: &Path) -> Result<()> {
        let mut words = line.split(' ');
        let parsed = match (words.next(), words.next(), words.next(), words.next()) {
            (Some(MAGIC), Some("1"), Some(validity), Some(next)) => {
                validity.parse::<u32>().ok().zip(next.parse::<u32>().ok())
            }
            _ => None,
        };
        // Written since modification sequences came; older files have none. A file
        // without the forgotten mark may have dropped expunges up to its sequence.
        let modseq = words
            .next()
            .and_then(|m| m.parse::<u64>().ok())
            .unwrap_or(1);
        let forgotten = words
            .next()
            .and_then(|m| m.parse::<u64>().ok())
            .unwrap_or(modseq);
        match parsed {
            Some((validity, next)) if validity > 0 => {
                self.uid_validity = validity;
                self.uid_next = self.uid_next.max(next).max(1);
                self.highest_modseq = self.highest_modseq.max(modseq).max(1);
                self.forgotten = self.forgotten.max(forgotten);
                Ok(())
            }
            _ => Err(StoreError::io(
                path,
                io::Error::new(io::ErrorKind::InvalidData, "not a qs-uids file"),
            )),
        }
    }

    fn read_line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("k ") {
            // Keywords are appended in letter order.
            if let Some((_, name)) = rest.split_once(' ') {
                self.keywords.push(name.to_owned());
            }
            return;
        }
        if let Some(rest) = line.strip_prefix("m ") {
            let mut parts = rest.splitn(3, ' ');
            let (Some(Ok(uid)), Some(Ok(modseq)), Some(letters)) = (
                parts.next().map(str::parse::<u32>),
                parts.next().map(str::parse::<u64>),
                parts.next(),
            ) else {
                return;
            };
            self.highest_modseq = self.highest_modseq.max(modseq);
            self.expunged.remove(&uid);
            self.flag_state
                .insert(uid, (modseq, Flags::from_info(letters)));
            return;
        }
        if let Some(rest) = line.strip_prefix("x ") {
            let mut parts = rest.splitn(2, ' ');
            let (Some(Ok(uid)), Some(Ok(modseq))) = (
                parts.next().map(str::parse::<u32>),
                parts.next().map(str::parse::<u64>),
            ) else {
                return;
            };
            self.highest_modseq = self.highest_modseq.max(modseq);
            self.flag_state.remove(&uid);
            self.expunged.insert(uid, modseq);
            return;
        }
        let mut parts = line.splitn(3, ' ');
        let (Some(uid), Some(date), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        let (Ok(uid), Ok(internal_date), Ok(id)) =
            (uid.parse::<u32>(), date.parse::<i64>(), MessageId::new(id))
        else {
            return;
        };
        if uid == 0 {
            return;
        }
        self.uid_next = self.uid_next.max(uid.saturating_add(1));
        self.by_id
            .entry(id)
            .or_insert(UidRecord { uid, internal_date });
    }
}

/// The Maildir letter of the `i`th keyword.
fn letter(i: usize) -> Option<char> {
    (i < MAX_KEYWORDS).then(|| (b'a' + i as u8) as char)
}

fn recordable(id: &MessageId) -> bool {
    !id.as_str().contains(['\n', '\r'])
}

fn uids_exhausted(dir: &Path) -> StoreError {
    StoreError::io(
        dir,
        io::Error::other("the folder has used up its UIDs (2^32 - 1)"),
    )
}

/// When a message arrived: the file's modification time (set by APPEND, kept by
/// renames), else the time in its base name.
fn file_date(entry: &MessageEntry) -> i64 {
    fs::metadata(&entry.path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or_else(|| leading_secs(&entry.id) as i64)
}

/// A UIDVALIDITY for a new index: the time, but always past the last one the mailbox
/// gave out.
fn next_uid_validity(root: &Path) -> Result<u32> {
    let path = root.join(VALIDITY_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    file.lock().map_err(|e| StoreError::io(&path, e))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| StoreError::io(&path, e))?;
    let last: u32 = text.trim().parse().unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let now = u32::try_from(now).unwrap_or(u32::MAX);
    let next = now.max(last.saturating_add(1)).max(1);
    let write = |file: &mut File| -> io::Result<()> {
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(format!("{next}\n").as_bytes())?;
        file.sync_data()
    };
    write(&mut file).map_err(|e| StoreError::io(&path, e))?;
    Ok(next)
}

#[cfg(test)]
mod tests;
