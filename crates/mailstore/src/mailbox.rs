//! A user's mailbox, its folders, and the messages in them.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Result, StoreError};
use crate::folder_name::{FolderName, SpecialUse};
use crate::fsutil::{FILE_MODE, create_dir_durable, sync_dir};
use crate::names::{Flags, MessageId, cur_name, leading_secs, parse_file_name, sanitize_hostname};

/// The directory of delivery markers at the mailbox root. It does not start with `.`,
/// so no Maildir++ reader takes it for a folder.
pub(crate) const MARKER_DIR: &str = "qs-delivered";

/// How many times a listing is repeated at most while the folder changes under it.
const MAX_LIST_PASSES: usize = 3;

/// A directory changed less than this before a listing began may have changed during
/// it: directory timestamps are coarse (a clock tick) on most file systems.
const MTIME_SLACK: Duration = Duration::from_millis(100);

/// A user's Maildir++ mailbox: the INBOX at the root, other folders beside it.
#[derive(Debug, Clone)]
pub struct Mailbox {
    root: PathBuf,
    hostname: String,
}

impl Mailbox {
    /// Opens the mailbox at `root` (see [`crate::mailbox_path`]), creating the directory,
    /// its `cur/`, `new/`, `tmp/` and the delivery marker directory (mode 0700) if they are
    /// missing. `hostname` goes into the names of delivered files, made safe for them.
    pub fn open(root: PathBuf, hostname: &str) -> Result<Mailbox> {
        for sub in ["cur", "new", "tmp", MARKER_DIR] {
            create_dir_durable(&root.join(sub))?;
        }
        Ok(Mailbox {
            root,
            hostname: sanitize_hostname(hostname),
        })
    }

    /// The mailbox's root directory (the INBOX).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host name as it appears in file names (sanitised).
    pub(crate) fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The staging directory of deliveries: the INBOX's `tmp/`, for every folder.
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The delivery marker directory.
    pub(crate) fn marker_dir(&self) -> PathBuf {
        self.root.join(MARKER_DIR)
    }

    /// The INBOX.
    pub fn inbox(&self) -> Folder {
        Folder {
            name: FolderName::inbox(),
            dir: self.root.clone(),
        }
    }

    /// A folder, created if it is missing (`.Name/` with `cur/`, `new/`, `tmp/` and the
    /// Maildir++ `maildirfolder` file, each made durable).
    pub fn folder(&self, name: &FolderName) -> Result<Folder> {
        let folder = self.folder_at(name);
        if name.is_inbox() {
            return Ok(folder);
        }
        for sub in ["cur", "new", "tmp"] {
            create_dir_durable(&folder.dir.join(sub))?;
        }
        let marker = folder.dir.join("maildirfolder");
        if !marker.exists() {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&marker)
            {
                Ok(_) => sync_dir(&folder.dir)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::io(marker, e)),
            }
        }
        Ok(folder)
    }

    /// A folder that must exist already: [`StoreError::FolderNotFound`] otherwise.
    pub fn open_folder(&self, name: &FolderName) -> Result<Folder> {
        let folder = self.folder_at(name);
        for sub in ["cur", "new"] {
            if !folder.dir.join(sub).is_dir() {
                return Err(StoreError::FolderNotFound { path: folder.dir });
            }
        }
        Ok(folder)
    }

    /// The folder with a special use, created on first use.
    pub fn special_folder(&self, use_: SpecialUse) -> Result<Folder> {
        self.folder(&use_.folder_name())
    }

    /// All folders: the INBOX first, then every Maildir++ folder by name. Directories
    /// whose names are not valid folder names (or not UTF-8) are left out.
    pub fn folders(&self) -> Result<Vec<FolderName>> {
        let entries = fs::read_dir(&self.root).map_err(|e| StoreError::io(&self.root, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&self.root, e))?;
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(root = %self.root.display(), "skipping a folder whose name is not UTF-8");
                continue;
            };
            let Some(name) = FolderName::from_dir_name(&file_name) else {
                continue;
            };
            if entry.path().join("cur").is_dir() {
                names.push(name);
            }
        }
        names.sort();
        names.insert(0, FolderName::inbox());
        Ok(names)
    }

    fn folder_at(&self, name: &FolderName) -> Folder {
        let dir = match name.dir_name() {
            Some(dir_name) => self.root.join(dir_name),
            None => self.root.clone(),
        };
        Folder {
            name: name.clone(),
            dir,
        }
    }
}

/// One folder of a mailbox. Cheap to make; holds no open files.
#[derive(Debug, Clone)]
pub struct Folder {
    name: FolderName,
    dir: PathBuf,
}

/// A message as a listing saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEntry {
    /// Its identity, the base name.
    pub id: MessageId,
    /// Its size in bytes as its name records it (`,S=`); `None` for names written by
    /// software that does not record it.
    pub size: Option<u64>,
    /// Its flags (none while it is in `new/`).
    pub flags: Flags,
    /// Where the file was when it was seen. Another process may rename it at any time;
    /// the `Folder` methods that take an entry look it up again when it has moved.
    pub path: PathBuf,
    /// True if it is still in `new/`: no client has seen it yet (IMAP `\Recent`).
    pub is_new: bool,
}

/// A hash of one sighting of a message in a listing pass: its name, flags and where.
fn sighting_hash(entry: &MessageEntry, in_cur: bool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    entry.id.hash(&mut hasher);
    entry.flags.hash(&mut hasher);
    in_cur.hash(&mut hasher);
    hasher.finish()
}

impl Folder {
    /// The folder's name.
    pub fn name(&self) -> &FolderName {
        &self.name
    }

    /// The folder's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The messages in `new/` and `cur/`, oldest delivery first.
    ///
    /// Other processes rename files while we read the directories, and a directory read
    /// is not atomic, so `new/` is read, then `cur/`, then `new/` again (a message moving
    /// from `new/` to `cur/` is seen in at least one of them), and the whole pass is
    /// repeated while the directories changed during it. A message is listed once, as
    /// last seen. An entry may be gone by the time it is used.
    pub fn messages(&self) -> Result<Vec<MessageEntry>> {
        let new = self.dir.join("new");
        let cur = self.dir.join("cur");
        // id -> ((pass, found in cur), entry): a later sighting replaces an earlier one.
        let mut seen: HashMap<MessageId, ((usize, bool), MessageEntry)> = HashMap::new();
        let mut previous_pass: Option<(usize, u64)> = None;
        for pass in 0..MAX_LIST_PASSES {
            let started = SystemTime::now();
            let before = (self.dir_mtime(&new)?, self.dir_mtime(&cur)?);
            // What this pass saw, summed up: how many names, and a sum of their hashes.
            let mut this_pass = (0usize, 0u64);
            for (dir, in_cur) in [(&new, false), (&cur, true), (&new, false)] {
                for entry in self.scan(dir, !in_cur)? {
                    let rank = (pass, in_cur);
                    this_pass.0 += 1;
                    this_pass.1 = this_pass.1.wrapping_add(sighting_hash(&entry, in_cur));
                    match seen.get(&entry.id) {
                        Some((old, _)) if *old > rank => {}
                        _ => {
                            seen.insert(entry.id.clone(), (rank, entry));
                        }
                    }
                }
            }
            let after = (self.dir_mtime(&new)?, self.dir_mtime(&cur)?);
            let quiet = |t: SystemTime| t + MTIME_SLACK < started;
            if before == after && quiet(after.0) && quiet(after.1) {
                break;
            }
            // Recently changed, but two passes in a row saw the same names and the
            // last one saw no change: a message hidden by a rename during the second
            // would be missing from it and not from the first.
            if before == after && previous_pass == Some(this_pass) {
                break;
            }
            previous_pass = Some(this_pass);
        }
        let mut list: Vec<MessageEntry> = seen.into_values().map(|(_, e)| e).collect();
        list.sort_by(|a, b| (leading_secs(&a.id), &a.id).cmp(&(leading_secs(&b.id), &b.id)));
        Ok(list)
    }

    /// Where a message is now: `new/<id>`, or `cur/<id>:2,<flags>`.
    /// [`StoreError::MessageNotFound`] if it is in neither.
    pub fn find(&self, id: &MessageId) -> Result<MessageEntry> {
        // Two rounds: a flag change inside cur/ during the first read can hide the file.
        for _ in 0..2 {
            let in_new = self.dir.join("new").join(id.as_str());
            match fs::symlink_metadata(&in_new) {
                Ok(_) => return Ok(self.entry(id.clone(), Flags::new(), in_new, true)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(in_new, e)),
            }
            let cur = self.dir.join("cur");
            if let Some(entry) = self.scan(&cur, false)?.into_iter().find(|e| &e.id == id) {
                return Ok(entry);
            }
        }
        Err(self.not_found(id))
    }

    /// A message's bytes.
    pub fn read(&self, id: &MessageId) -> Result<Vec<u8>> {
        for _ in 0..3 {
            let entry = self.find(id)?;
            match fs::read(&entry.path) {
                Ok(bytes) => return Ok(bytes),
                // Renamed between finding and opening: look again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(entry.path, e)),
            }
        }
        Err(self.not_found(id))
    }

    /// A message's bytes, trying the entry's path before looking the message up again.
    pub fn read_at(&self, entry: &MessageEntry) -> Result<Vec<u8>> {
        match fs::read(&entry.path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.read(&entry.id),
            Err(e) => Err(StoreError::io(&entry.path, e)),
        }
    }

    /// Replaces a message's flags: renames it to `cur/<id>:2,<flags>`, moving it out of
    /// `new/` if it is there. Returns where it is now. Flag changes are not synced to
    /// disk: after a crash a message keeps its old flags, never disappears.
    pub fn set_flags(&self, id: &MessageId, flags: Flags) -> Result<MessageEntry> {
        self.update_flags(id, |_| flags)
    }

    /// Like [`Folder::set_flags`], trying the entry's path before looking it up again.
    pub fn set_flags_at(&self, entry: &MessageEntry, flags: Flags) -> Result<MessageEntry> {
        self.update_flags_at(entry, |_| flags)
    }

    /// Gives a message the flags `change` makes of the ones it has now. Tried at the
    /// entry's path first, whose name holds exactly `entry.flags`; when another client
    /// renamed the file meanwhile, looked up again and `change` applied to its flags
    /// then, so a flag set elsewhere is kept.
    pub fn update_flags_at(
        &self,
        entry: &MessageEntry,
        change: impl Fn(Flags) -> Flags,
    ) -> Result<MessageEntry> {
        match self.rename_flags(entry, change(entry.flags)) {
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                self.update_flags(&entry.id, change)
            }
            result => result,
        }
    }

    /// Looks the message up and gives it the flags `change` makes of its own, again
    /// while another client renames it under us (a few times).
    fn update_flags(
        &self,
        id: &MessageId,
        change: impl Fn(Flags) -> Flags,
    ) -> Result<MessageEntry> {
        for _ in 0..3 {
            let now = self.find(id)?;
            match self.rename_flags(&now, change(now.flags)) {
                Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    continue;
                }
                result => return result,
            }
        }
        Err(self.not_found(id))
    }

    /// Removes a message for good (IMAP EXPUNGE, POP3 DELE).
    pub fn remove(&self, id: &MessageId) -> Result<()> {
        for _ in 0..3 {
            let entry = self.find(id)?;
            match fs::remove_file(&entry.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(entry.path, e)),
            }
        }
        Err(self.not_found(id))
    }

    /// Like [`Folder::remove`], trying the entry's path before looking the message up
    /// again. A file at that path is that message (base names are unique); the lookup
    /// reads all of `cur/`, which a client emptying a big folder would pay per message.
    pub fn remove_at(&self, entry: &MessageEntry) -> Result<()> {
        match fs::remove_file(&entry.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.remove(&entry.id),
            Err(e) => Err(StoreError::io(&entry.path, e)),
        }
    }

    fn rename_flags(&self, entry: &MessageEntry, flags: Flags) -> Result<MessageEntry> {
        let target = self.dir.join("cur").join(cur_name(&entry.id, flags));
        if target == entry.path {
            // Unchanged; still make sure the file is there.
            fs::symlink_metadata(&target).map_err(|e| StoreError::io(&target, e))?;
            return Ok(entry.clone());
        }
        fs::rename(&entry.path, &target).map_err(|e| StoreError::io(&entry.path, e))?;
        Ok(self.entry(entry.id.clone(), flags, target, false))
    }

    /// Reads one of `new/`, `cur/`. A missing directory means the folder is gone.
    fn scan(&self, dir: &Path, is_new: bool) -> Result<Vec<MessageEntry>> {
        let entries = fs::read_dir(dir).map_err(|e| self.dir_error(dir, e))?;
        let mut list = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            let file_name = entry.file_name();
            let Some(parsed) = file_name.to_str().and_then(parse_file_name) else {
                continue;
            };
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            // A file in new/ has no flags yet, whatever its name says.
            let flags = if is_new { Flags::new() } else { parsed.flags };
            list.push(MessageEntry {
                id: parsed.id,
                size: parsed.size,
                flags,
                path: entry.path(),
                is_new,
            });
        }
        Ok(list)
    }

    fn dir_mtime(&self, dir: &Path) -> Result<SystemTime> {
        fs::metadata(dir)
            .and_then(|m| m.modified())
            .map_err(|e| self.dir_error(dir, e))
    }

    fn dir_error(&self, dir: &Path, e: io::Error) -> StoreError {
        if e.kind() == io::ErrorKind::NotFound {
            StoreError::FolderNotFound {
                path: self.dir.clone(),
            }
        } else {
            StoreError::io(dir, e)
        }
    }

    fn entry(&self, id: MessageId, flags: Flags, path: PathBuf, is_new: bool) -> MessageEntry {
        let size = parse_file_name(id.as_str()).and_then(|p| p.size);
        MessageEntry {
            id,
            size,
            flags,
            path,
            is_new,
        }
    }

    fn not_found(&self, id: &MessageId) -> StoreError {
        StoreError::MessageNotFound {
            folder: self.dir.clone(),
            id: id.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;

    use super::*;
    use crate::delivery::{Delivery, DeliveryItem};
    use crate::names::Flag;

    fn mailbox() -> (tempfile::TempDir, Mailbox) {
        let tmp = tempfile::tempdir().unwrap();
        let mailbox = Mailbox::open(tmp.path().join("mail/example.org/bob"), "mx").unwrap();
        (tmp, mailbox)
    }

    fn deliver(mailbox: &Mailbox, key: &str) -> MessageId {
        match mailbox
            .deliver(&FolderName::inbox(), key.as_bytes(), key)
            .unwrap()
        {
            Delivery::Stored { id, .. } => id,
            Delivery::AlreadyDelivered => panic!("{key} was delivered before"),
        }
    }

    #[test]
    fn open_makes_the_maildir() {
        let (_tmp, mailbox) = mailbox();
        for sub in ["cur", "new", "tmp", MARKER_DIR] {
            assert!(mailbox.root().join(sub).is_dir(), "{sub}");
        }
        // Opening again is harmless.
        Mailbox::open(mailbox.root().to_owned(), "mx").unwrap();
        assert_eq!(mailbox.folders().unwrap(), [FolderName::inbox()]);
    }

    #[test]
    fn folders_are_made_on_first_use_and_listed() {
        let (_tmp, mailbox) = mailbox();
        let missing = FolderName::new("Archive").unwrap();
        let err = mailbox.open_folder(&missing).unwrap_err();
        assert!(matches!(err, StoreError::FolderNotFound { .. }), "{err}");
        assert!(err.is_not_found());

        let sent = mailbox.special_folder(SpecialUse::Sent).unwrap();
        assert_eq!(sent.path(), mailbox.root().join(".Sent"));
        assert!(sent.path().join("maildirfolder").is_file());
        for sub in ["cur", "new", "tmp"] {
            assert!(sent.path().join(sub).is_dir());
        }
        mailbox
            .folder(&FolderName::new("Lists.rust").unwrap())
            .unwrap();
        mailbox
            .folder(&FolderName::new("Ünïcode").unwrap())
            .unwrap();
        assert!(mailbox.root().join(".Ünïcode").is_dir());
        // Not folders: our marker directory, stray files, bad names.
        fs::create_dir(mailbox.root().join(".bad..name")).unwrap();
        fs::write(mailbox.root().join(".file"), b"").unwrap();

        let names: Vec<String> = mailbox
            .folders()
            .unwrap()
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(names, ["INBOX", "Lists.rust", "Sent", "Ünïcode"]);
        assert!(
            mailbox
                .open_folder(&FolderName::new("Sent").unwrap())
                .is_ok()
        );
        assert!(mailbox.open_folder(&FolderName::inbox()).is_ok());
    }

    #[test]
    fn flags_updated_from_a_stale_entry_keep_a_flag_set_elsewhere() {
        let (_tmp, mailbox) = mailbox();
        let id = deliver(&mailbox, "Q1:bob@example.org");
        let inbox = mailbox.inbox();
        let listed = inbox.messages().unwrap().remove(0);
        // Up to date: renamed from its path.
        let seen = inbox
            .update_flags_at(&listed, |f| f.with(Flag::Seen))
            .unwrap();
        assert!(seen.path.ends_with(format!("cur/{id}:2,S")));
        // Another client flags it; an update from the old listing keeps that flag.
        inbox
            .set_flags_at(&seen, seen.flags.with(Flag::Flagged))
            .unwrap();
        let answered = inbox
            .update_flags_at(&listed, |f| f.with(Flag::Replied))
            .unwrap();
        assert!(answered.path.ends_with(format!("cur/{id}:2,FRS")));
        inbox.remove(&id).unwrap();
        let err = inbox.update_flags_at(&listed, |f| f).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn remove_at_takes_the_path_or_finds_the_message() {
        let (_tmp, mailbox) = mailbox();
        let first = deliver(&mailbox, "Q1:bob@example.org");
        let second = deliver(&mailbox, "Q2:bob@example.org");
        let inbox = mailbox.inbox();
        let listed = inbox.messages().unwrap();
        inbox.remove_at(&listed[0]).unwrap();
        // Renamed since the listing: found again.
        inbox
            .set_flags(&second, Flags::new().with(Flag::Seen))
            .unwrap();
        inbox.remove_at(&listed[1]).unwrap();
        assert!(inbox.messages().unwrap().is_empty());
        let err = inbox.remove_at(&listed[0]).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert_eq!(listed[0].id, first);
    }

    #[test]
    fn set_flags_moves_to_cur_and_renames() {
        let (_tmp, mailbox) = mailbox();
        let id = deliver(&mailbox, "Q1:bob@example.org");
        let inbox = mailbox.inbox();
        let listed = inbox.messages().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].is_new);
        assert_eq!(listed[0].size, Some(18));
        assert!(listed[0].flags.is_empty());

        let seen = Flags::new().with(Flag::Seen);
        let entry = inbox.set_flags(&id, seen).unwrap();
        assert_eq!(
            entry.path,
            mailbox.root().join("cur").join(format!("{id}:2,S"))
        );
        assert!(!entry.is_new);
        let both = seen.with(Flag::Replied);
        let entry = inbox.set_flags_at(&entry, both).unwrap();
        assert_eq!(
            entry.path,
            mailbox.root().join("cur").join(format!("{id}:2,RS"))
        );
        // A stale entry still finds the message.
        let stale = listed[0].clone();
        let entry = inbox
            .set_flags_at(&stale, Flags::new().with(Flag::Flagged))
            .unwrap();
        assert!(entry.path.ends_with(format!("cur/{id}:2,F")));

        let listed = inbox.messages().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
        assert!(!listed[0].is_new);
        assert!(listed[0].flags.contains(Flag::Flagged));
        assert_eq!(inbox.read(&id).unwrap(), b"Q1:bob@example.org");
        assert_eq!(inbox.read_at(&stale).unwrap(), b"Q1:bob@example.org");
        assert!(
            fs::read_dir(mailbox.root().join("new"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn a_vanished_message_is_not_found() {
        let (_tmp, mailbox) = mailbox();
        let id = deliver(&mailbox, "Q1:bob@example.org");
        let inbox = mailbox.inbox();
        inbox.remove(&id).unwrap();
        for err in [
            inbox.set_flags(&id, Flags::new()).unwrap_err(),
            inbox.read(&id).unwrap_err(),
            inbox.remove(&id).unwrap_err(),
            inbox.find(&id).unwrap_err(),
        ] {
            assert!(
                matches!(err, StoreError::MessageNotFound { id: ref missing, .. } if *missing == id.to_string()),
                "{err}"
            );
        }
        assert!(inbox.messages().unwrap().is_empty());
    }

    #[test]
    fn a_removed_folder_is_reported() {
        let (_tmp, mailbox) = mailbox();
        let trash = mailbox.special_folder(SpecialUse::Trash).unwrap();
        fs::remove_dir_all(trash.path()).unwrap();
        let err = trash.messages().unwrap_err();
        assert!(matches!(err, StoreError::FolderNotFound { .. }), "{err}");
    }

    #[test]
    fn listing_skips_hidden_files_and_directories() {
        let (_tmp, mailbox) = mailbox();
        deliver(&mailbox, "Q1:bob@example.org");
        fs::write(mailbox.root().join("cur/.nfs0001"), b"").unwrap();
        fs::create_dir(mailbox.root().join("cur/dir")).unwrap();
        fs::write(mailbox.root().join("cur/1.2.other:2,ST"), b"x").unwrap();
        let listed = mailbox.inbox().messages().unwrap();
        assert_eq!(listed.len(), 2);
        let other = listed
            .iter()
            .find(|e| e.id.as_str() == "1.2.other")
            .unwrap();
        assert_eq!(other.size, None);
        assert!(other.flags.contains(Flag::Seen) && other.flags.contains(Flag::Trashed));
        // Sorted by delivery time: the one from 1970 first.
        assert_eq!(listed[0].id.as_str(), "1.2.other");
    }

    #[test]
    fn listing_during_moves_to_cur_never_loses_a_message() {
        let (_tmp, mailbox) = mailbox();
        let keys: Vec<String> = (0..150).map(|i| format!("Q{i}:bob@example.org")).collect();
        let items: Vec<DeliveryItem<'_>> = keys
            .iter()
            .map(|key| DeliveryItem {
                key,
                bytes: key.as_bytes(),
            })
            .collect();
        let mut ids = Vec::new();
        for result in mailbox.deliver_many(&FolderName::inbox(), &items) {
            let Ok(Delivery::Stored { id, .. }) = result else {
                panic!("{result:?}");
            };
            ids.push(id);
        }
        let done = AtomicBool::new(false);
        let listing = AtomicBool::new(false);
        let inbox = mailbox.inbox();
        let listings = thread::scope(|s| {
            let lister = s.spawn(|| {
                let mut listings = 0;
                while !done.load(Ordering::Acquire) {
                    listing.store(true, Ordering::Release);
                    let listed = inbox.messages().unwrap();
                    assert_eq!(
                        listed.len(),
                        ids.len(),
                        "a listing lost or doubled a message"
                    );
                    listings += 1;
                }
                listings
            });
            // On a busy machine the moves could all be over before the lister ran at all.
            while !listing.load(Ordering::Acquire) {
                thread::yield_now();
            }
            // Interleave the moves with the listings: each move is a rename new/ -> cur/.
            for id in ids.iter().rev() {
                inbox.set_flags(id, Flags::new().with(Flag::Seen)).unwrap();
            }
            done.store(true, Ordering::Release);
            lister.join().unwrap()
        });
        assert!(listings > 0);
        let listed = inbox.messages().unwrap();
        assert!(
            listed
                .iter()
                .all(|e| !e.is_new && e.flags.contains(Flag::Seen))
        );
        let mut listed_ids: Vec<_> = listed.into_iter().map(|e| e.id).collect();
        listed_ids.sort();
        ids.sort();
        assert_eq!(listed_ids, ids);
    }
}
