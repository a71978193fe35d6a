//! The selected folder of a session: the messages its client knows, by sequence
//! number, and how the session learns what others did to the folder (new mail,
//! expunges, flag changes) and tells its client (`EXISTS`, `RECENT`, `EXPUNGE`,
//! `FETCH (FLAGS)`).
//!
//! The messages themselves (names, flags, dates) are in the folder's [`FolderView`],
//! which the sessions of the process share; a session keeps only its UIDs in sequence
//! order (4 bytes a message), the UIDs that are `\Recent` for it, and the modification
//! sequence up to which it has told its client of flag changes. A sync re-lists the
//! folder only when `new/` or `cur/` changed. A read-write session claims the messages
//! it finds in `new/` (moves them to `cur/`): the one that succeeds reports them
//! `\Recent`, so each new message is recent in exactly one session.
//!
//! The UIDs are the session's own view (RFC 3501 §5.5, §7.4.1): it grows only by new
//! messages, told with `EXISTS` before the client can name them, and shrinks only
//! where the caller allows expunges to be told (not during FETCH, STORE or SEARCH by
//! sequence number, nor while more commands wait). Until then a message others
//! expunged keeps its sequence number, and is answered from what the shared view
//! kept of it (RFC 2180 §4.1): its UID, flags, date, size and cached structure.

use std::collections::HashMap;
use std::sync::Arc;

use qs_mailstore::{Flags, Folder, FolderName, Mailbox, MessageEntry, MessageId, StoreError};

use crate::encode::{number, uid_set};
use crate::seq::UidSeq;
use crate::store::{FolderState, FolderView, Shared, write_flags};

/// A message of the selected folder, as its shared view has it now.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Its UID.
    pub uid: u32,
    /// Its identity in the store.
    pub id: MessageId,
    /// Its flags.
    pub flags: Flags,
    /// `\Recent` in this session.
    pub recent: bool,
    /// Still in `new/` (a read-only session does not claim).
    pub in_new: bool,
    /// Its size from its file name, when recorded there.
    pub size: Option<u64>,
    /// INTERNALDATE, seconds since 1970.
    pub date: i64,
    /// Gone from the folder; the client has not been told yet.
    pub expunged: bool,
    /// Its modification sequence (RFC 7162): when its flags last changed.
    pub modseq: u64,
}

/// The selected folder.
#[derive(Debug)]
pub struct Selected {
    /// Its name.
    pub name: FolderName,
    /// The folder.
    pub folder: Folder,
    /// EXAMINE.
    pub read_only: bool,
    /// What this process's sessions share about it.
    pub state: Arc<FolderState>,
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// Keywords the client has been told of (FLAGS).
    pub keywords_told: usize,
    /// The UIDs the client knows, in sequence order.
    uids: UidSeq,
    /// Messages that are gone, by UID, as they were last known; the client has not
    /// been told yet.
    gone: HashMap<u32, Option<Msg>>,
    /// This session's number among the readers of the shared view.
    reader: u64,
    /// UIDs that are `\Recent` in this session, ascending.
    recent: Vec<u32>,
    /// Flag changes up to this modification sequence are known to the client.
    seen_modseq: u64,
    /// Flags this session told its client since the last sync (so that its own changes
    /// are not reported back).
    told: HashMap<u32, Flags>,
    /// CONDSTORE is enabled (RFC 7162 §3.1): every FETCH with FLAGS carries MODSEQ.
    pub condstore: bool,
    /// QRESYNC is enabled (RFC 7162 §3.2): expunges are told as `VANISHED`, and
    /// unsolicited FETCH responses carry the UID.
    pub qresync: bool,
}

/// What a sync found that the client has not been told yet.
#[derive(Debug, Default)]
pub struct Changes {
    /// Messages that came.
    pub new: usize,
}

fn msg_of(entry: &crate::store::Entry, recent: bool) -> Msg {
    Msg {
        uid: entry.uid,
        id: entry.id.clone(),
        flags: entry.flags,
        recent,
        in_new: entry.in_new,
        size: entry.size,
        date: entry.date,
        expunged: false,
        modseq: entry.modseq,
    }
}

fn find(view: &FolderView, uid: u32) -> Option<&crate::store::Entry> {
    view.entries
        .binary_search_by_key(&uid, |e| e.uid)
        .ok()
        .map(|i| &view.entries[i])
}

impl Selected {
    /// Selects `name`: lists it, claims new mail (unless read-only), gives UIDs.
    pub fn open(
        mailbox: &Mailbox,
        shared: &Shared,
        name: &FolderName,
        read_only: bool,
    ) -> Result<Selected, StoreError> {
        let folder = mailbox.open_folder(name)?;
        let state = shared.folder(mailbox, &folder)?;
        let uid_validity = state.index().uid_validity();
        let reader = state.join();
        let mut selected = Selected {
            name: name.clone(),
            folder,
            read_only,
            state,
            uid_validity,
            keywords_told: 0,
            uids: UidSeq::new(),
            gone: HashMap::new(),
            reader,
            recent: Vec::new(),
            seen_modseq: 0,
            told: HashMap::new(),
            condstore: false,
            qresync: false,
        };
        let mut sink = Vec::new();
        // The sync takes the view's modification sequence under the same lock as
        // what it tells, so no change made meanwhile is taken as told.
        selected.sync(false, &mut sink)?;
        selected.keywords_told = selected.state.index().keywords().len();
        Ok(selected)
    }

    /// HIGHESTMODSEQ as this session's client may be told it: the sequence up to
    /// which it has been told every change (a change another session makes now is
    /// told at the next sync, with its own MODSEQ). Telling the index's highest
    /// instead could make a client that comes back with it (QRESYNC) miss a change.
    pub fn highest_modseq(&self) -> u64 {
        self.seen_modseq.max(1)
    }

    /// The UIDs of QRESYNC's `VANISHED (EARLIER)` (RFC 7162 §3.2.5.1) for a client
    /// that knew the folder at `since`, within `known` if given: those that left
    /// since, when the index remembers every expunge since; else those below UIDNEXT
    /// that the folder does not hold, less those recorded as gone by `since` (as the
    /// RFC allows). Disjoint ascending ranges.
    pub fn vanished_since(
        &self,
        since: u64,
        known: Option<&imap_next::imap_types::sequence::SequenceSet>,
    ) -> Vec<(u32, u32)> {
        let index = self.state.index();
        let top = index.uid_next().saturating_sub(1);
        let within = |ranges: Vec<(u32, u32)>| match known {
            None => ranges,
            Some(set) => intersect(&ranges, &crate::search::merged_ranges(set, top)),
        };
        if since >= index.expunges_forgotten_by() {
            // Every expunge since is recorded: exactly those (not one the session
            // still shows).
            let mut uids: Vec<u32> = index
                .expunged_since(since)
                .filter(|&u| u <= top && !self.shows(u))
                .collect();
            uids.sort_unstable();
            let mut ranges: Vec<(u32, u32)> = Vec::new();
            for uid in uids {
                match ranges.last_mut() {
                    Some(last) if last.1.checked_add(1) == Some(uid) => last.1 = uid,
                    _ => ranges.push((uid, uid)),
                }
            }
            return within(ranges);
        }
        let mut gaps: Vec<(u32, u32)> = Vec::new();
        let mut next = 1u32;
        let mut add_gap = |from: u32, to: u32| {
            if from <= to {
                gaps.push((from, to));
            }
        };
        for uid in self.uids.iter().filter(|u| !self.gone.contains_key(u)) {
            if uid > next {
                add_gap(next, uid - 1);
            }
            next = uid.saturating_add(1);
        }
        add_gap(next, top);
        // Less what the client must have known was gone.
        let mut old = index.expunged_by(since).peekable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(gaps.len());
        for (mut first, last) in gaps {
            while let Some(&uid) = old.peek() {
                if uid > last {
                    break;
                }
                old.next();
                if uid >= first {
                    if uid > first {
                        out.push((first, uid - 1));
                    }
                    first = uid.saturating_add(1);
                }
            }
            if first <= last && first != 0 {
                out.push((first, last));
            }
        }
        within(out)
    }

    /// True if the session shows the message with this UID as in the folder.
    fn shows(&self, uid: u32) -> bool {
        self.uids.position(uid).is_some() && !self.gone.contains_key(&uid)
    }

    /// Number of messages the client knows of (EXISTS).
    pub fn exists(&self) -> u32 {
        self.uids.len() as u32
    }

    /// The highest UID the client knows.
    pub fn max_uid(&self) -> u32 {
        self.uids.last().unwrap_or(0)
    }

    /// The UIDs in sequence order.
    pub fn uids(&self) -> impl Iterator<Item = u32> + '_ {
        self.uids.iter()
    }

    /// How many messages are `\Recent` in this session.
    pub fn recent_count(&self) -> usize {
        self.recent.len()
    }

    fn is_recent(&self, uid: u32) -> bool {
        self.recent.binary_search(&uid).is_ok()
    }

    /// The message at `index` as it is now, or as it was last known when it is gone
    /// (marked `expunged`); `None` when nothing is known of it.
    pub fn msg(&self, index: usize) -> Option<Msg> {
        let uid = self.uids.get(index)?;
        if let Some(gone) = self.gone.get(&uid) {
            return gone.clone();
        }
        let view = self.state.view();
        match find(&view, uid) {
            Some(e) => Some(msg_of(e, self.is_recent(uid))),
            // Gone since the last sync: what the view kept.
            None => view.expunged(uid).map(|e| Msg {
                expunged: true,
                ..msg_of(e, self.is_recent(uid))
            }),
        }
    }

    /// Every message in sequence order (`None` for those that are gone), read at once.
    pub fn all(&self) -> Vec<Option<Msg>> {
        let view = self.state.view();
        let mut out = Vec::with_capacity(self.uids.len());
        let mut entries = view.entries.iter().peekable();
        for uid in self.uids.iter() {
            while entries.peek().is_some_and(|e| e.uid < uid) {
                entries.next();
            }
            let entry = entries.next_if(|e| e.uid == uid);
            out.push(match entry {
                Some(e) if !self.gone.contains_key(&uid) => Some(msg_of(e, self.is_recent(uid))),
                _ => None,
            });
        }
        out
    }

    /// The index of the first message without `\Seen`.
    pub fn first_unseen(&self) -> Option<usize> {
        let view = self.state.view();
        let mut entries = view.entries.iter().peekable();
        for (i, uid) in self.uids.iter().enumerate() {
            while entries.peek().is_some_and(|e| e.uid < uid) {
                entries.next();
            }
            if entries
                .next_if(|e| e.uid == uid)
                .is_some_and(|e| !e.flags.contains(qs_mailstore::Flag::Seen))
            {
                return Some(i);
            }
        }
        None
    }

    /// The entry to hand to the store for a message (its path as last seen; the store
    /// looks again when it moved).
    pub fn entry(&self, msg: &Msg) -> MessageEntry {
        let path = if msg.in_new {
            self.folder.path().join("new").join(msg.id.as_str())
        } else {
            self.folder
                .path()
                .join("cur")
                .join(format!("{}:2,{}", msg.id, msg.flags))
        };
        MessageEntry {
            id: msg.id.clone(),
            size: msg.size,
            flags: msg.flags,
            path,
            is_new: msg.in_new,
        }
    }

    /// Sets a message's flags in the store and in the shared view; the client is
    /// taken to know them (the caller tells it). A message that is gone (expunged
    /// by others, the client not told yet) takes them in this session's view only,
    /// as Dovecot does: the STORE succeeds on what the client sees (RFC 2180 §4.2).
    /// `Ok(None)` when nothing is known of the message.
    pub fn set_flags(&mut self, index: usize, flags: Flags) -> Result<Option<Msg>, StoreError> {
        let Some(msg) = self.msg(index) else {
            return Ok(None);
        };
        if msg.expunged {
            let now = Msg { flags, ..msg };
            self.gone.insert(now.uid, Some(now.clone()));
            return Ok(Some(now));
        }
        let now = match self.folder.set_flags_at(&self.entry(&msg), flags) {
            Ok(now) => now,
            // Removed just now: the next sync finds out and tells.
            Err(e) if e.is_not_found() => return Ok(Some(Msg { flags, ..msg })),
            Err(e) => return Err(e),
        };
        let modseq = self.state.set_flags(msg.uid, now.flags);
        self.told.insert(msg.uid, now.flags);
        Ok(Some(Msg {
            flags: now.flags,
            in_new: false,
            modseq,
            ..msg
        }))
    }

    /// Notes that this session removed (or moved away) the message at `index`.
    pub fn mark_gone(&mut self, indices: &[usize]) {
        let mut uids = Vec::with_capacity(indices.len());
        for &i in indices {
            if let Some(uid) = self.uids.get(i) {
                let msg = self.msg(i).map(|m| Msg {
                    expunged: true,
                    ..m
                });
                self.gone.insert(uid, msg);
                uids.push(uid);
            }
        }
        uids.sort_unstable();
        self.state.remove(&uids);
    }

    /// Brings the view up to date and writes the untagged responses for what changed:
    /// `FETCH (FLAGS)`, `EXPUNGE` (only when `expunges`), `EXISTS` and `RECENT`, and
    /// `FLAGS` when the folder learnt keywords.
    pub fn sync(&mut self, expunges: bool, out: &mut Vec<u8>) -> Result<Changes, StoreError> {
        self.sync_with(true, expunges, out)
    }

    /// Like [`Selected::sync`], from what the sessions of this process know of the
    /// folder, without looking at its directories: for the end of a command that
    /// looked at them when it began (a listing of a big folder is the costliest part
    /// of a small command). What other processes did meanwhile is told at the next
    /// command.
    pub fn sync_known(&mut self, expunges: bool, out: &mut Vec<u8>) -> Result<Changes, StoreError> {
        self.sync_with(false, expunges, out)
    }

    fn sync_with(
        &mut self,
        look: bool,
        expunges: bool,
        out: &mut Vec<u8>,
    ) -> Result<Changes, StoreError> {
        let mut changes = Changes::default();
        let claimed = if look {
            self.state.refresh(&self.folder, !self.read_only)?
        } else {
            Vec::new()
        };
        if self.state.index().uid_validity() != self.uid_validity {
            // The folder was deleted and made again under us.
            return Err(StoreError::FolderNotFound {
                path: self.folder.path().to_owned(),
            });
        }
        if !claimed.is_empty() {
            self.recent.extend(claimed);
            self.recent.sort_unstable();
            self.recent.dedup();
        }
        let mut flag_changes: Vec<(usize, u32, Flags, u64)> = Vec::new();
        let forget = {
            let mut view = self.state.view();
            // Gone, and flags changed since the client was last told.
            let mut entries = view.entries.iter().peekable();
            for (i, uid) in self.uids.iter().enumerate() {
                while entries.peek().is_some_and(|e| e.uid < uid) {
                    entries.next();
                }
                match entries.next_if(|e| e.uid == uid) {
                    None => {
                        if !self.gone.contains_key(&uid) {
                            let recent = self.recent.binary_search(&uid).is_ok();
                            let kept = view.expunged(uid).map(|e| Msg {
                                expunged: true,
                                ..msg_of(e, recent)
                            });
                            self.gone.insert(uid, kept);
                        }
                    }
                    Some(e) => {
                        if e.modseq > self.seen_modseq
                            && !self.gone.contains_key(&uid)
                            && self.told.get(&uid) != Some(&e.flags)
                        {
                            flag_changes.push((i, uid, e.flags, e.modseq));
                        }
                    }
                }
            }
            // New messages: only above every UID the client knows.
            let max = self.max_uid();
            let start = view.entries.partition_point(|e| e.uid <= max);
            for e in &view.entries[start..] {
                self.uids.push(e.uid);
                changes.new += 1;
            }
            self.seen_modseq = view.modseq;
            // What left the folder is in `gone` now, as far as this session knows it.
            view.caught_up(self.reader)
        };
        self.state.forget(&forget);
        self.told.clear();
        // Keywords first: a FETCH may name a keyword only once FLAGS and
        // PERMANENTFLAGS have announced it.
        self.announce_keywords(out);
        if !flag_changes.is_empty() {
            let index = self.state.index();
            for (i, uid, flags, modseq) in flag_changes {
                out.extend_from_slice(b"* ");
                number(out, i as u64 + 1);
                out.extend_from_slice(b" FETCH (");
                if self.qresync {
                    out.extend_from_slice(b"UID ");
                    number(out, u64::from(uid));
                    out.push(b' ');
                }
                out.extend_from_slice(b"FLAGS ");
                write_flags(out, flags, self.recent.binary_search(&uid).is_ok(), &index);
                if self.condstore {
                    write_modseq(out, modseq);
                }
                out.extend_from_slice(b")\r\n");
            }
        }
        if expunges {
            self.report_expunges(out);
        }
        if changes.new > 0 {
            out.extend_from_slice(b"* ");
            number(out, u64::from(self.exists()));
            out.extend_from_slice(b" EXISTS\r\n* ");
            number(out, self.recent.len() as u64);
            out.extend_from_slice(b" RECENT\r\n");
        }
        Ok(changes)
    }

    /// `* FLAGS` and `* OK [PERMANENTFLAGS]` when the folder has keywords the
    /// client has not been told of; to be called before any response that may
    /// name them.
    pub fn announce_keywords(&mut self, out: &mut Vec<u8>) {
        let known = self.state.index().keywords().len();
        if known > self.keywords_told {
            self.keywords_told = known;
            self.write_flags_responses(out);
        }
    }

    /// `* FLAGS` and `* OK [PERMANENTFLAGS]` for the folder as it is.
    pub fn write_flags_responses(&self, out: &mut Vec<u8>) {
        let index = self.state.index();
        let known = crate::store::known_flags(&index);
        let list = known.join(" ");
        out.extend_from_slice(format!("* FLAGS ({list})\r\n").as_bytes());
        if self.read_only {
            out.extend_from_slice(b"* OK [PERMANENTFLAGS ()] Read-only folder\r\n");
        } else {
            let more = if index.keywords().len() < qs_mailstore::MAX_KEYWORDS {
                " \\*"
            } else {
                ""
            };
            out.extend_from_slice(
                format!("* OK [PERMANENTFLAGS ({list}{more})] Flags permitted\r\n").as_bytes(),
            );
        }
    }

    /// Tells the client of messages that are gone: each `EXPUNGE` names the sequence
    /// number as it is at that moment; with QRESYNC, one `VANISHED` names their UIDs.
    pub fn report_expunges(&mut self, out: &mut Vec<u8>) {
        if self.gone.is_empty() {
            return;
        }
        let mut kept = 0u64;
        let gone = std::mem::take(&mut self.gone);
        if self.qresync {
            let mut uids: Vec<u32> = self.uids.iter().filter(|u| gone.contains_key(u)).collect();
            uids.sort_unstable();
            if !uids.is_empty() {
                out.extend_from_slice(b"* VANISHED ");
                out.extend_from_slice(uid_set(&uids).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        let qresync = self.qresync;
        let recent = &mut self.recent;
        self.uids.retain(|uid| {
            if gone.contains_key(&uid) {
                if !qresync {
                    out.extend_from_slice(b"* ");
                    number(out, kept + 1);
                    out.extend_from_slice(b" EXPUNGE\r\n");
                }
                if let Ok(i) = recent.binary_search(&uid) {
                    recent.remove(i);
                }
                false
            } else {
                kept += 1;
                true
            }
        });
    }
}

/// The UIDs in both sets of disjoint ascending ranges.
fn intersect(a: &[(u32, u32)], b: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let first = a[i].0.max(b[j].0);
        let last = a[i].1.min(b[j].1);
        if first <= last {
            out.push((first, last));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// ` MODSEQ (n)`, the FETCH item of RFC 7162 §3.1.4.1.
pub fn write_modseq(out: &mut Vec<u8>, modseq: u64) {
    out.extend_from_slice(b" MODSEQ (");
    number(out, modseq.max(1));
    out.push(b')');
}

impl Drop for Selected {
    fn drop(&mut self) {
        self.state.leave(self.reader);
    }
}
