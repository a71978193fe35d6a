//! Commands about the messages of the selected folder: FETCH, STORE, SEARCH, EXPUNGE,
//! UID EXPUNGE, COPY, MOVE; and the sync that tells the client what others did.

use super::folders::flags_of;
use super::*;

/// Messages answered per step of a FETCH before the output is looked at.
const FETCH_STEP: usize = 64;

/// The tagged NO of a FETCH that named messages expunged meanwhile whose answer
/// needed their text, or of a STORE that found nothing known of one (Dovecot's
/// wording, which clients and imaptest know).
const EXPUNGED_MESSAGES: &str = "Some of the requested messages no longer exist.";

impl Session {
    /// Brings the selected folder up to date and writes what changed. False (and the
    /// session ends with BYE) when the folder is gone.
    pub(super) fn sync(&mut self, expunges: bool) -> bool {
        self.sync_selected(true, expunges)
    }

    /// True when the client sent more input behind the command being answered. The
    /// input guard hands the parser one command at a time, so that input is still
    /// here: the client may have used sequence numbers in it that an EXPUNGE now
    /// would move, so expunges wait (as Dovecot holds them back while input is
    /// pending).
    fn commands_waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// [`Session::sync`], looking at the folder's directories (`look`) or only at
    /// what the sessions of this process know of it. Expunges are told only if no
    /// more commands wait.
    fn sync_selected(&mut self, look: bool, expunges: bool) -> bool {
        let expunges = expunges && !self.commands_waiting();
        let Some(sel) = self.selected.as_mut() else {
            return true;
        };
        let synced = if look {
            sel.sync(expunges, &mut self.out)
        } else {
            sel.sync_known(expunges, &mut self.out)
        };
        match synced {
            Ok(_) => true,
            Err(e) if e.is_not_found() => {
                info!(user = self.user(), "the selected folder was deleted");
                self.selected = None;
                self.bye("the selected folder was deleted");
                self.closing = true;
                false
            }
            Err(e) => {
                warn!(user = self.user(), error = %e, "cannot read the selected folder");
                true
            }
        }
    }

    /// The sync at the end of a FETCH, STORE or SEARCH: a UID command looked at the
    /// folder when it began (and may report expunges), so it tells what this process
    /// knows; the others look now, without expunges, so that new mail is told even to
    /// a client that sends only them.
    fn sync_after(&mut self, uid: bool) -> bool {
        self.sync_selected(!uid, uid)
    }

    /// The messages (indices into the view) a sequence set names. Sequence numbers
    /// beyond EXISTS are an error; UIDs that are not there are left out.
    fn targets(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, &'static str> {
        let Some(sel) = &self.selected else {
            return Err("no folder selected");
        };
        if uid {
            let max_uid = sel.max_uid();
            Ok(sel
                .uids()
                .enumerate()
                .filter(|(_, u)| search::contains(set, *u, max_uid))
                .map(|(i, _)| i)
                .collect())
        } else {
            let exists = sel.exists();
            if search::highest(set) > exists || exists == 0 {
                return Err("no such message (sequence number beyond EXISTS)");
            }
            Ok((1..=exists)
                .filter(|&n| search::contains(set, n, exists))
                .map(|n| n as usize - 1)
                .collect())
        }
    }

    pub(super) fn fetch(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        mut items: Vec<Item>,
        uid: bool,
        modifiers: &[FetchModifier],
    ) {
        let mut changed_since = None;
        let mut vanished = false;
        for modifier in modifiers {
            match modifier {
                FetchModifier::ChangedSince(n) => changed_since = Some(n.get()),
                FetchModifier::Vanished => vanished = true,
            }
        }
        if vanished && !(uid && self.qresync && changed_since.is_some()) {
            // RFC 7162 §3.2.6.
            self.bad(
                &tag,
                "VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC",
            );
            return;
        }
        // MODSEQ and CHANGEDSINCE turn CONDSTORE on (RFC 7162 §3.1); CHANGEDSINCE
        // implies MODSEQ.
        if changed_since.is_some() || items.contains(&Item::ModSeq) {
            self.enable_condstore(false);
            if !items.contains(&Item::ModSeq) {
                items.push(Item::ModSeq);
            }
        }
        // UID FETCH may report expunges first; FETCH may not move sequence numbers.
        if uid && !self.sync(true) {
            return;
        }
        let mut targets = match self.targets(set, uid) {
            Ok(t) => t,
            Err(text) => {
                self.bad(&tag, text);
                return;
            }
        };
        if let Some(since) = changed_since
            && let Some(sel) = self.selected.as_ref()
        {
            targets.retain(|&i| sel.msg(i).is_none_or(|m| m.modseq > since));
            if vanished {
                let gone = sel.vanished_since(since, Some(set));
                if !gone.is_empty() {
                    self.out.extend_from_slice(b"* VANISHED (EARLIER) ");
                    self.out
                        .extend_from_slice(crate::encode::range_set(&gone).as_bytes());
                    self.out.extend_from_slice(b"\r\n");
                }
            }
        }
        self.job = Some(FetchJob {
            tag,
            items,
            uid,
            targets,
            next: 0,
            missing: 0,
            undecodable: None,
        });
    }

    /// Answers the next few messages of the FETCH in progress, and finishes it.
    pub(super) fn run_job(&mut self) {
        let Some(mut job) = self.job.take() else {
            return;
        };
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        let end = (job.next + FETCH_STEP).min(job.targets.len());
        while job.next < end && self.out.len() < FLUSH_AT {
            let index = job.targets[job.next];
            job.next += 1;
            match fetch::fetch_one(&mut self.out, sel, index, &job.items) {
                Ok(fetch::Fetched::Sent) => {}
                Ok(fetch::Fetched::Gone) => job.missing += 1,
                Ok(fetch::Fetched::Undecodable(e)) => {
                    job.undecodable
                        .get_or_insert_with(|| format!("message {}: {e}", index + 1));
                }
                Err(e) => {
                    warn!(user = self.user.as_ref().map(|u| u.address.as_str()), error = %e, "cannot read a message");
                    job.missing += 1;
                }
            }
        }
        if job.next < job.targets.len() {
            self.job = Some(job);
            return;
        }
        if !self.sync_after(job.uid) {
            return;
        }
        if let Some(why) = &job.undecodable {
            self.no(&job.tag, Some("UNKNOWN-CTE"), why);
        } else if job.missing > 0 {
            // The others were answered (RFC 2180 §4.1.2).
            self.no(&job.tag, Some("EXPUNGEISSUED"), EXPUNGED_MESSAGES);
        } else {
            self.ok(&job.tag, None, "FETCH completed");
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn store(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[ImapFlag<'_>],
        uid: bool,
        unchanged_since: Option<u64>,
    ) {
        if unchanged_since.is_some() {
            // A CONDSTORE enabling command (RFC 7162 §3.1).
            self.enable_condstore(false);
        }
        if uid && !self.sync(true) {
            return;
        }
        let targets = match self.targets(set, uid) {
            Ok(t) => t,
            Err(text) => {
                self.bad(&tag, text);
                return;
            }
        };
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        if sel.read_only {
            self.no(&tag, Some("READ-ONLY"), "the folder is read-only");
            return;
        }
        let given = {
            let mut index = sel.state.index();
            match flags_of(flags, &mut index) {
                Ok(Ok(f)) => f,
                Ok(Err(text)) => {
                    drop(index);
                    self.no(&tag, Some("LIMIT"), text);
                    return;
                }
                Err(e) => {
                    drop(index);
                    self.store_failed(&tag, "STORE", &e);
                    return;
                }
            }
        };
        let letters: Vec<char> = given.to_string().chars().collect();
        let mut missing = 0;
        // What was stored, each with whether its flags changed.
        let mut changed: Vec<(usize, crate::selected::Msg, bool)> = Vec::new();
        // Those that failed UNCHANGEDSINCE: sequence numbers, or UIDs for UID STORE.
        let mut modified: Vec<u32> = Vec::new();
        for &i in &targets {
            let Some(msg) = sel.msg(i) else {
                missing += 1;
                continue;
            };
            if unchanged_since.is_some_and(|since| msg.modseq > since) {
                modified.push(if uid { msg.uid } else { i as u32 + 1 });
                continue;
            }
            let mut new = match kind {
                StoreType::Replace => Flags::new(),
                StoreType::Add | StoreType::Remove => msg.flags,
            };
            for &c in &letters {
                new = match kind {
                    StoreType::Remove => new.without_letter(c),
                    _ => new.with_letter(c),
                };
            }
            if kind == StoreType::Replace {
                // Letters IMAP cannot name (other software's) are kept.
                for c in msg.flags.to_string().chars() {
                    let nameable = crate::store::SYSTEM_FLAGS.iter().any(|(_, l)| *l == c)
                        || c.is_ascii_lowercase();
                    if !nameable {
                        new = new.with_letter(c);
                    }
                }
            }
            if new == msg.flags && !msg.in_new {
                changed.push((i, msg, false));
                continue;
            }
            match sel.set_flags(i, new) {
                Ok(Some(now)) => changed.push((i, now, true)),
                Ok(None) => missing += 1,
                Err(e) => {
                    warn!(error = %e, "cannot change flags");
                    missing += 1;
                }
            }
        }
        let answer = response == StoreResponse::Answer;
        if answer || sel.condstore {
            // A keyword this STORE defined, or another session since, is announced
            // before a FETCH names it.
            sel.announce_keywords(&mut self.out);
            let index = sel.state.index();
            for (i, msg, really) in changed {
                // With CONDSTORE, a silent STORE still tells each new MODSEQ
                // (RFC 7162 §3.1.3).
                if !answer && !really {
                    continue;
                }
                self.out.extend_from_slice(b"* ");
                number(&mut self.out, i as u64 + 1);
                self.out.extend_from_slice(b" FETCH (");
                if uid || sel.qresync {
                    self.out.extend_from_slice(b"UID ");
                    number(&mut self.out, u64::from(msg.uid));
                    self.out.push(b' ');
                }
                if answer {
                    self.out.extend_from_slice(b"FLAGS ");
                    write_flags(&mut self.out, msg.flags, msg.recent, &index);
                    if sel.condstore {
                        crate::selected::write_modseq(&mut self.out, msg.modseq);
                    }
                } else {
                    self.out.extend_from_slice(b"MODSEQ (");
                    number(&mut self.out, msg.modseq.max(1));
                    self.out.push(b')');
                }
                self.out.extend_from_slice(b")\r\n");
            }
        }
        if !self.sync_after(uid) {
            return;
        }
        if missing > 0 {
            self.no(&tag, Some("EXPUNGEISSUED"), EXPUNGED_MESSAGES);
        } else if !modified.is_empty() {
            modified.sort_unstable();
            let code = format!("MODIFIED {}", uid_set(&modified));
            self.ok(
                &tag,
                Some(&code),
                "conditional STORE failed for some messages",
            );
        } else {
            self.ok(&tag, None, "STORE completed");
        }
    }

    pub(super) fn search(
        &mut self,
        tag: Tag<'static>,
        charset: Option<String>,
        mut query: Query,
        uid: bool,
    ) {
        if let Some(charset) = &charset
            && !["UTF-8", "US-ASCII"]
                .iter()
                .any(|c| c.eq_ignore_ascii_case(charset))
        {
            self.no(
                &tag,
                Some("BADCHARSET (UTF-8 US-ASCII)"),
                "unsupported charset",
            );
            return;
        }
        if uid && !self.sync(true) {
            return;
        }
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
        let needs = query.needs();
        let keywords = sel.state.index().keywords().to_vec();
        let ctx = Context {
            keywords: &keywords,
            exists: sel.exists(),
            max_uid: sel.max_uid(),
        };
        query.resolve_sets(&ctx);
        let mut found: Vec<u32> = Vec::new();
        // The highest MODSEQ among the messages found, for a search by MODSEQ.
        let mut highest = 0u64;
        for (i, msg) in sel.all().iter().enumerate() {
            let Some(msg) = msg else {
                continue;
            };
            // Where the file is, only when a key needs it (most need only the view).
            let entry = || sel.entry(msg);
            let size = if needs.size {
                msg.size
                    .or_else(|| sel.folder.size_of(&entry()).ok())
                    .unwrap_or(0)
            } else {
                0
            };
            let raw = if needs.text || (needs.sent && sel.state.summary(&msg.id).is_none()) {
                match sel.folder.open_message(&entry()) {
                    Ok(mut file) => {
                        let mut raw = Vec::new();
                        use std::io::Read;
                        if file.read_to_end(&mut raw).is_err() {
                            continue;
                        }
                        Some(raw)
                    }
                    Err(_) => continue,
                }
            } else {
                None
            };
            let sent = if needs.sent {
                match sel.state.summary(&msg.id) {
                    Some(s) => s.sent,
                    None => {
                        let s = Arc::new(crate::message::summarize_header(
                            raw.as_deref().unwrap_or_default(),
                        ));
                        sel.state.put_summary(&msg.id, s.clone());
                        s.sent
                    }
                }
            } else {
                None
            };
            let text = match (&raw, needs.text) {
                (Some(raw), true) => Some(SearchText::new(raw)),
                _ => None,
            };
            let candidate = Candidate {
                msg,
                seq: i as u32 + 1,
                size,
                sent,
                text: text.as_ref(),
            };
            if query.matches(&candidate, &ctx) {
                found.push(if uid { msg.uid } else { i as u32 + 1 });
                highest = highest.max(msg.modseq);
            }
        }
        self.out.extend_from_slice(b"* SEARCH");
        let any = !found.is_empty();
        for n in found {
            self.out.push(b' ');
            number(&mut self.out, u64::from(n));
        }
        // RFC 7162 §3.1.5: a search by MODSEQ tells the highest one it found.
        if needs.modseq && any {
            self.out.extend_from_slice(b" (MODSEQ ");
            number(&mut self.out, highest.max(1));
            self.out.push(b')');
        }
        self.out.extend_from_slice(b"\r\n");
        if needs.modseq {
            self.enable_condstore(false);
        }
        if !self.sync_after(uid) {
            return;
        }
        self.ok(&tag, None, "SEARCH completed");
    }

    pub(super) fn expunge(&mut self, tag: Tag<'static>, uids: Option<SequenceSet>) {
        if self.selected.as_ref().is_some_and(|s| s.read_only) {
            self.no(&tag, Some("READ-ONLY"), "the folder is read-only");
            return;
        }
        if !self.sync(true) {
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        let result = self.expunge_deleted(uids.as_ref(), &mut out);
        self.out = out;
        match result {
            Ok(n) => {
                if n > 0 {
                    info!(user = self.user(), expunged = n, "expunged");
                }
                if self.sync(true) {
                    self.ok(&tag, None, "EXPUNGE completed");
                }
            }
            Err(e) => self.store_failed(&tag, "EXPUNGE", &e),
        }
    }

    /// Removes the messages marked `\Deleted` (only those with these UIDs, if given)
    /// and writes their EXPUNGE responses to `out`. Returns how many went.
    pub(super) fn expunge_deleted(
        &mut self,
        uids: Option<&SequenceSet>,
        out: &mut Vec<u8>,
    ) -> Result<usize, StoreError> {
        let Some(sel) = self.selected.as_mut() else {
            return Ok(0);
        };
        let max_uid = sel.max_uid();
        let mut removed = Vec::new();
        let mut result = Ok(());
        for (i, msg) in sel.all().into_iter().enumerate() {
            let Some(msg) = msg else {
                continue;
            };
            if !msg.flags.contains(Flag::Trashed) {
                continue;
            }
            if uids.is_some_and(|set| !search::contains(set, msg.uid, max_uid)) {
                continue;
            }
            match sel.folder.remove_at(&sel.entry(&msg)) {
                Ok(()) => removed.push(i),
                Err(e) if e.is_not_found() => removed.push(i),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        sel.mark_gone(&removed);
        sel.report_expunges(out);
        result.map(|()| removed.len())
    }

    pub(super) fn copy(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        mailbox: &ImapMailbox<'_>,
        uid: bool,
        moving: bool,
    ) {
        let verb = if moving { "MOVE" } else { "COPY" };
        let Some(name) = self.named(&tag, mailbox) else {
            return;
        };
        let Some(user_mailbox) = self.user.as_ref().map(|u| u.mailbox.clone()) else {
            return;
        };
        if uid && !self.sync(true) {
            return;
        }
        let targets = match self.targets(set, uid) {
            Ok(t) => t,
            Err(text) => {
                self.bad(&tag, text);
                return;
            }
        };
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        if moving && sel.read_only {
            self.no(&tag, Some("READ-ONLY"), "the folder is read-only");
            return;
        }
        let dest = match user_mailbox.open_folder(&name) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => {
                self.no(&tag, Some("TRYCREATE"), "no such folder");
                return;
            }
            Err(e) => {
                self.store_failed(&tag, verb, &e);
                return;
            }
        };
        let same = dest.path() == sel.folder.path();
        let result = (|| -> Result<Copied, StoreError> {
            let dest_state = self.settings.shared.folder(&user_mailbox, &dest)?;
            let mut source_uids = Vec::new();
            let mut added = Vec::new();
            let mut moved = Vec::new();
            for &i in &targets {
                let Some(msg) = sel.msg(i) else {
                    continue;
                };
                // Keywords are per folder: carry them over by name.
                let flags = {
                    let source_keywords: Vec<String> = {
                        let index = sel.state.index();
                        msg.flags
                            .keyword_letters()
                            .filter_map(|c| index.keyword_of(c).map(str::to_owned))
                            .collect()
                    };
                    let mut flags = Flags::new();
                    for c in msg
                        .flags
                        .to_string()
                        .chars()
                        .filter(|c| c.is_ascii_uppercase())
                    {
                        flags = flags.with_letter(c);
                    }
                    if !same {
                        let mut dest_index = dest_state.index();
                        for k in source_keywords {
                            if let Some(c) = dest_index.define_keyword(&k)? {
                                flags = flags.with_letter(c);
                            }
                        }
                    } else {
                        flags = msg.flags;
                    }
                    flags
                };
                let entry: MessageEntry = sel.entry(&msg);
                let copied = if moving {
                    user_mailbox.move_message(&sel.folder, &entry, &dest, flags)
                } else {
                    user_mailbox.copy_message(&sel.folder, &entry, &dest, flags)
                };
                match copied {
                    Ok(new) => {
                        source_uids.push(msg.uid);
                        added.push((new.id, msg.date));
                        moved.push(i);
                    }
                    Err(e) if e.is_not_found() && !dest.path().join("cur").is_dir() => {
                        return Err(e);
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            let mut dest_index = dest_state.index();
            let dest_uids = dest_index.add(&added)?;
            Ok(Copied {
                validity: dest_index.uid_validity(),
                source_uids,
                dest_uids,
                moved,
            })
        })();
        let Copied {
            validity,
            source_uids,
            dest_uids,
            moved,
        } = match result {
            Ok(r) => r,
            Err(e) => {
                self.store_failed(&tag, verb, &e);
                return;
            }
        };
        debug!(user = self.user(), folder = %name, count = source_uids.len(), "{verb}");
        let code = if source_uids.is_empty() {
            None
        } else {
            Some(format!(
                "COPYUID {validity} {} {}",
                uid_set(&source_uids),
                uid_set(&dest_uids)
            ))
        };
        if moving {
            if let Some(code) = &code {
                self.out
                    .extend_from_slice(format!("* OK [{code}] moved\r\n").as_bytes());
            }
            if let Some(sel) = self.selected.as_mut() {
                sel.mark_gone(&moved);
                sel.report_expunges(&mut self.out);
            }
            if self.sync(true) {
                self.ok(&tag, None, "MOVE completed");
            }
        } else if self.sync(uid) {
            self.ok(&tag, code.as_deref(), "COPY completed");
        }
    }
}

/// What a COPY or MOVE did.
struct Copied {
    /// The target's UIDVALIDITY.
    validity: u32,
    /// UIDs of the messages copied, in the source.
    source_uids: Vec<u32>,
    /// Their UIDs in the target, in the same order.
    dest_uids: Vec<u32>,
    /// Their indices in the view (for MOVE's expunges).
    moved: Vec<usize>,
}
