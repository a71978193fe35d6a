//! Commands about folders: SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE,
//! UNSUBSCRIBE, LIST, LSUB, STATUS, APPEND.

use super::*;

/// Why a client's folder name cannot be used.
pub(super) enum BadName {
    /// Not modified UTF-7 (or UTF-8).
    Encoding,
    /// Refused by the store.
    Invalid(&'static str),
}

/// The store's name for a folder the client named.
pub(super) fn folder_name(mailbox: &ImapMailbox<'_>) -> Result<FolderName, BadName> {
    match mailbox {
        ImapMailbox::Inbox => Ok(FolderName::inbox()),
        ImapMailbox::Other(other) => {
            let name = mutf7::decode(other.as_ref()).ok_or(BadName::Encoding)?;
            FolderName::new(name.trim_end_matches(FolderName::DELIMITER)).map_err(|e| match e {
                StoreError::InvalidFolderName { reason, .. } => BadName::Invalid(reason),
                _ => BadName::Invalid("not a folder name"),
            })
        }
    }
}

/// A folder name as the client sees it.
pub(super) fn wire_name(name: &FolderName) -> String {
    if name.is_inbox() {
        "INBOX".to_owned()
    } else {
        mutf7::encode(name.as_str())
    }
}

impl Session {
    fn user_mailbox(&self) -> Option<Mailbox> {
        self.user.as_ref().map(|u| u.mailbox.clone())
    }

    /// The folder named by the client, or a tagged NO/BAD already written.
    pub(super) fn named(&mut self, tag: &Tag<'_>, mailbox: &ImapMailbox<'_>) -> Option<FolderName> {
        match folder_name(mailbox) {
            Ok(name) => Some(name),
            Err(BadName::Encoding) => {
                // A legal atom or string (RFC 3501 §5.1.3 only asks the client to use
                // modified UTF-7), so not a protocol error: no folder can have it.
                self.no(
                    tag,
                    Some("CANNOT"),
                    "folder names are in modified UTF-7 (RFC 3501 §5.1.3)",
                );
                None
            }
            Err(BadName::Invalid(reason)) => {
                self.no(tag, Some("CANNOT"), &format!("bad folder name: {reason}"));
                None
            }
        }
    }

    pub(super) fn select(
        &mut self,
        tag: Tag<'static>,
        mailbox: &ImapMailbox<'_>,
        read_only: bool,
        parameters: &[SelectParameter],
    ) {
        // QRESYNC's parameters: UIDVALIDITY, mod-sequence and known UIDs the client
        // has (RFC 7162 §3.2.5).
        let mut resync = None;
        for parameter in parameters {
            match parameter {
                SelectParameter::CondStore => self.enable_condstore(false),
                SelectParameter::QResync {
                    uid_validity,
                    mod_sequence_value,
                    known_uids,
                    ..
                } => {
                    if !self.qresync {
                        self.bad(&tag, "QRESYNC is not enabled (ENABLE QRESYNC first)");
                        return;
                    }
                    resync = Some((
                        uid_validity.get(),
                        mod_sequence_value.get(),
                        known_uids.clone(),
                    ));
                }
            }
        }
        // Whatever happens, the old folder is no longer selected (RFC 3501 §6.3.1),
        // and what follows is of the new one (RFC 7162 §3.2.11).
        if self.selected.take().is_some() {
            self.out
                .extend_from_slice(b"* OK [CLOSED] Previous mailbox closed\r\n");
        }
        let Some(name) = self.named(&tag, mailbox) else {
            return;
        };
        let Some(user_mailbox) = self.user_mailbox() else {
            return;
        };
        let mut selected =
            match Selected::open(&user_mailbox, &self.settings.shared, &name, read_only) {
                Ok(s) => s,
                Err(e) if e.is_not_found() => {
                    self.no(&tag, Some("NONEXISTENT"), "no such folder");
                    return;
                }
                Err(e) => {
                    self.store_failed(&tag, "SELECT", &e);
                    return;
                }
            };
        let out = &mut self.out;
        selected.write_flags_responses(out);
        out.extend_from_slice(b"* ");
        number(out, u64::from(selected.exists()));
        out.extend_from_slice(b" EXISTS\r\n* ");
        number(out, selected.recent_count() as u64);
        out.extend_from_slice(b" RECENT\r\n");
        if let Some(i) = selected.first_unseen() {
            out.extend_from_slice(format!("* OK [UNSEEN {}] first unseen\r\n", i + 1).as_bytes());
        }
        let uid_next = selected.state.index().uid_next();
        out.extend_from_slice(
            format!(
                "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {uid_next}] predicted next UID\r\n",
                selected.uid_validity
            )
            .as_bytes(),
        );
        out.extend_from_slice(
            format!(
                "* OK [HIGHESTMODSEQ {}] Highest\r\n",
                selected.highest_modseq()
            )
            .as_bytes(),
        );
        selected.condstore = self.condstore;
        selected.qresync = self.qresync;
        if let Some((validity, since, known)) = resync
            && validity == selected.uid_validity
        {
            resync_report(&selected, since, known.as_ref(), out);
        }
        let (code, verb) = if read_only {
            ("READ-ONLY", "EXAMINE")
        } else {
            ("READ-WRITE", "SELECT")
        };
        debug!(user = self.user(), folder = %name, messages = selected.exists(), "selected");
        self.selected = Some(selected);
        self.ok(&tag, Some(code), &format!("{verb} completed"));
    }

    pub(super) fn create(&mut self, tag: Tag<'static>, mailbox: &ImapMailbox<'_>) {
        let Some(name) = self.named(&tag, mailbox) else {
            return;
        };
        let Some(user_mailbox) = self.user_mailbox() else {
            return;
        };
        if name.is_inbox() || user_mailbox.folder_exists(&name) {
            self.no(&tag, Some("ALREADYEXISTS"), "the folder exists");
            return;
        }
        match user_mailbox.folder(&name) {
            Ok(_) => {
                info!(user = self.user(), folder = %name, "folder created");
                self.sync(true);
                self.ok(&tag, None, "CREATE completed");
            }
            Err(e) => self.store_failed(&tag, "CREATE", &e),
        }
    }

    pub(super) fn delete(&mut self, tag: Tag<'static>, mailbox: &ImapMailbox<'_>) {
        let Some(name) = self.named(&tag, mailbox) else {
            return;
        };
        let Some(user_mailbox) = self.user_mailbox() else {
            return;
        };
        if name.is_inbox() {
            self.no(&tag, Some("CANNOT"), "the INBOX cannot be deleted");
            return;
        }
        if self.selected.as_ref().is_some_and(|s| s.name == name) {
            self.selected = None;
        }
        match user_mailbox.delete_folder(&name) {
            Ok(()) => {
                info!(user = self.user(), folder = %name, "folder deleted");
                self.sync(true);
                self.ok(&tag, None, "DELETE completed");
            }
            Err(e) if e.is_not_found() => self.no(&tag, Some("NONEXISTENT"), "no such folder"),
            Err(e) => self.store_failed(&tag, "DELETE", &e),
        }
    }

    pub(super) fn rename(
        &mut self,
        tag: Tag<'static>,
        from: &ImapMailbox<'_>,
        to: &ImapMailbox<'_>,
    ) {
        let Some(from) = self.named(&tag, from) else {
            return;
        };
        let Some(to) = self.named(&tag, to) else {
            return;
        };
        let Some(user_mailbox) = self.user_mailbox() else {
            return;
        };
        if to.is_inbox() || user_mailbox.folder_exists(&to) {
            self.no(&tag, Some("ALREADYEXISTS"), "the target folder exists");
            return;
        }
        if !user_mailbox.folder_exists(&from) {
            self.no(&tag, Some("NONEXISTENT"), "no such folder");
            return;
        }
        if self.selected.as_ref().is_some_and(|s| s.name == from) {
            self.selected = None;
        }
        let result = if from.is_inbox() {
            rename_inbox(&user_mailbox, &to)
        } else {
            user_mailbox.rename_folder(&from, &to)
        };
        match result {
            Ok(()) => {
                if !from.is_inbox()
                    && let Err(e) =
                        Subscriptions::new(user_mailbox.root()).rename(from.as_str(), to.as_str())
                {
                    warn!(error = %e, "cannot update subscriptions");
                }
                info!(user = self.user(), from = %from, to = %to, "folder renamed");
                self.sync(true);
                self.ok(&tag, None, "RENAME completed");
            }
            Err(e) => self.store_failed(&tag, "RENAME", &e),
        }
    }

    pub(super) fn subscribe(&mut self, tag: Tag<'static>, mailbox: &ImapMailbox<'_>, on: bool) {
        let Some(name) = self.named(&tag, mailbox) else {
            return;
        };
        let Some(user_mailbox) = self.user_mailbox() else {
            return;
        };
        let subs = Subscriptions::new(user_mailbox.root());
        let result = if on {
            subs.add(name.as_str()).map(|()| true)
        } else {
            subs.remove(name.as_str())
        };
        match result {
            Ok(_) => {
                self.sync(true);
                let verb = if on { "SUBSCRIBE" } else { "UNSUBSCRIBE" };
                self.ok(&tag, None, &format!("{verb} completed"));
            }
            Err(e) => {
                warn!(error = %e, "cannot change subscriptions");
                self.no(&tag, Some("SERVERBUG"), "cannot change subscriptions now");
            }
        }
    }

    /// LIST (RFC 3501, and RFC 5258 / RFC 5819 when `request` says so) or LSUB.
    pub(super) fn list(&mut self, tag: Tag<'static>, request: &ListRequest, lsub: bool) {
        let Some(user_mailbox) = self.user_mailbox() else {
            return;
        };
        let verb = if lsub { "LSUB" } else { "LIST" };
        if !lsub && !request.extended && request.patterns == [b""] {
            // The hierarchy delimiter and the root of the reference.
            self.out
                .extend_from_slice(b"* LIST (\\Noselect) \".\" \"\"\r\n");
            self.ok(&tag, None, "LIST completed");
            return;
        }
        // Each pattern is matched with the reference before it: bound them together.
        let pattern_bytes: usize = request
            .patterns
            .iter()
            .map(|p| request.reference.len() + p.len())
            .sum();
        let max_pattern = self.settings.max_list_pattern;
        if pattern_bytes > max_pattern {
            self.no(
                &tag,
                Some("LIMIT"),
                &format!("{verb} takes a reference and patterns of at most {max_pattern} bytes"),
            );
            return;
        }
        let patterns: Vec<(ListPattern, ListPattern)> = request
            .patterns
            .iter()
            .map(|p| {
                let full = [request.reference.as_slice(), p].concat();
                let delimiter = FolderName::DELIMITER as u8;
                (
                    ListPattern::new(&full, delimiter),
                    ListPattern::new(&full.to_ascii_uppercase(), delimiter),
                )
            })
            .collect();
        let folders = match user_mailbox.folders() {
            Ok(f) => f,
            Err(e) => {
                self.store_failed(&tag, verb, &e);
                return;
            }
        };
        let existing: HashSet<String> = folders.iter().map(|f| f.to_string()).collect();
        let wants_subscriptions = lsub || request.subscribed_only || request.return_subscribed;
        let subscribed: HashSet<String> = if wants_subscriptions {
            match Subscriptions::new(user_mailbox.root()).list() {
                Ok(list) => list.into_iter().collect(),
                Err(e) => {
                    warn!(error = %e, "cannot read subscriptions");
                    HashSet::new()
                }
            }
        } else {
            HashSet::new()
        };
        let only_subscribed = lsub || request.subscribed_only;
        let source: &HashSet<String> = if only_subscribed {
            &subscribed
        } else {
            &existing
        };
        // Every name to consider: the source's, and their parents that are not in it.
        let mut parents: HashSet<String> = HashSet::new();
        for name in source {
            let mut end = 0;
            while let Some(dot) = name[end..].find('.') {
                end += dot;
                let parent = &name[..end];
                if !source.contains(parent) {
                    parents.insert(parent.to_owned());
                }
                end += 1;
            }
        }
        let mut names: Vec<&String> = source.iter().chain(parents.iter()).collect();
        names.sort_by(|a, b| (*a != "INBOX", a).cmp(&(*b != "INBOX", b)));
        let matches = |folder: &FolderName, wire: &str| {
            patterns.iter().any(|(pattern, inbox_pattern)| {
                if folder.is_inbox() {
                    inbox_pattern.matches(b"INBOX")
                } else {
                    pattern.matches(wire.as_bytes())
                }
            })
        };
        let mut listed: Vec<(FolderName, Vec<u8>)> = Vec::new();
        for name in names {
            let Ok(folder) = FolderName::new(name) else {
                continue;
            };
            let wire = wire_name(&folder);
            if !matches(&folder, &wire) {
                continue;
            }
            let is_parent = parents.contains(name);
            let prefix = format!("{name}.");
            // Subscribed names below this one that the patterns leave out: CHILDINFO
            // tells of them (RFC 5258 §3.5; those that match are listed themselves).
            let subscribed_below = request.recursive_match
                && subscribed.iter().any(|s| {
                    s.starts_with(&prefix)
                        && FolderName::new(s).is_ok_and(|f| !matches(&f, &wire_name(&f)))
                });
            if is_parent && !subscribed_below {
                // Selecting subscribed names, a parent is told only with CHILDINFO.
                if request.subscribed_only {
                    continue;
                }
                // A name that is only the parent of others is listed when none of
                // those matches (RFC 3501 §6.3.9: LSUB with %).
                let descendant_matches =
                    source
                        .iter()
                        .filter_map(|n| FolderName::new(n).ok())
                        .any(|f| {
                            let w = wire_name(&f);
                            w.starts_with(&format!("{wire}.")) && matches(&f, &w)
                        });
                if descendant_matches {
                    continue;
                }
            }
            let exists = existing.contains(name);
            let mut attrs: Vec<&str> = Vec::new();
            if !exists && subscribed.contains(name) && !lsub {
                // Subscribed, but no such folder (RFC 5258 §3.4; implies \Noselect).
                attrs.push("\\NonExistent");
            } else if !exists || (lsub && is_parent) {
                attrs.push("\\Noselect");
            }
            if !lsub && exists {
                if existing.iter().any(|f| f.starts_with(&prefix)) {
                    attrs.push("\\HasChildren");
                } else {
                    attrs.push("\\HasNoChildren");
                }
            } else if !lsub && existing.iter().any(|f| f.starts_with(&prefix)) {
                attrs.push("\\HasChildren");
            }
            if !lsub && subscribed.contains(name) && request.return_subscribed {
                attrs.push("\\Subscribed");
            }
            if !lsub && let Some(use_) = folder.special_use() {
                attrs.push(use_.imap_attribute());
            }
            let mut line = format!("* {verb} ({}) \".\" ", attrs.join(" ")).into_bytes();
            string(&mut line, wire.as_bytes());
            if subscribed_below && !lsub {
                line.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            line.extend_from_slice(b"\r\n");
            listed.push((folder, line));
        }
        for (folder, line) in listed {
            self.out.extend_from_slice(&line);
            // LIST-STATUS: right after the folder's LIST, for those that can be selected
            // (RFC 5819 §2); one that cannot be read now is left out.
            if !request.status.is_empty() && existing.contains(folder.as_str()) {
                let modseq = request.status.contains(&StatusDataItemName::HighestModSeq);
                match self.status_counts(&user_mailbox, &folder, modseq) {
                    Ok(counts) => {
                        let line = status_line(&folder, &request.status, &counts);
                        self.out.extend_from_slice(&line);
                    }
                    Err(e) => debug!(folder = %folder, error = %e, "no STATUS for LIST"),
                }
            }
        }
        self.sync(true);
        self.ok(&tag, None, &format!("{verb} completed"));
    }

    /// MESSAGES, RECENT, UNSEEN, UIDNEXT, UIDVALIDITY and (brought up to date only
    /// when asked for) HIGHESTMODSEQ of a folder.
    fn status_counts(
        &self,
        user_mailbox: &Mailbox,
        name: &FolderName,
        highest_modseq: bool,
    ) -> Result<StatusCounts, StoreError> {
        let folder = user_mailbox.open_folder(name)?;
        let state = self.settings.shared.folder(user_mailbox, &folder)?;
        if highest_modseq {
            // A listing records what changed since anyone looked, so that the
            // sequence is the folder's as it is now.
            state.refresh(&folder, false)?;
        }
        let listing = folder.messages()?;
        let mut index = state.index();
        let assigned = index.assign(listing)?;
        // Recent: no read-write session has taken them yet (STATUS takes nothing).
        let floor = crate::recent::peek(&folder, index.uid_validity())?;
        Ok(StatusCounts {
            messages: assigned.len(),
            recent: assigned.iter().filter(|(r, _)| r.uid > floor).count(),
            unseen: assigned
                .iter()
                .filter(|(_, e)| !e.flags.contains(Flag::Seen))
                .count(),
            uid_next: index.uid_next(),
            uid_validity: index.uid_validity(),
            highest_modseq: index.highest_modseq(),
        })
    }

    pub(super) fn status(
        &mut self,
        tag: Tag<'static>,
        mailbox: &ImapMailbox<'_>,
        items: &[StatusDataItemName],
    ) {
        let Some(name) = self.named(&tag, mailbox) else {
            return;
        };
        let Some(user_mailbox) = self.user_mailbox() else {
            return;
        };
        if !items.iter().all(|item| {
            matches!(
                item,
                StatusDataItemName::Messages
                    | StatusDataItemName::Recent
                    | StatusDataItemName::UidNext
                    | StatusDataItemName::UidValidity
                    | StatusDataItemName::Unseen
                    | StatusDataItemName::HighestModSeq
            )
        }) {
            self.bad(&tag, "STATUS item not supported");
            return;
        }
        let modseq = items.contains(&StatusDataItemName::HighestModSeq);
        if modseq {
            // STATUS HIGHESTMODSEQ is a CONDSTORE enabling command (RFC 7162 §3.1).
            self.enable_condstore(false);
        }
        let counts = match self.status_counts(&user_mailbox, &name, modseq) {
            Ok(c) => c,
            Err(e) if e.is_not_found() => {
                self.no(&tag, Some("NONEXISTENT"), "no such folder");
                return;
            }
            Err(e) => {
                self.store_failed(&tag, "STATUS", &e);
                return;
            }
        };
        let line = status_line(&name, items, &counts);
        self.out.extend_from_slice(&line);
        self.sync(true);
        self.ok(&tag, None, "STATUS completed");
    }

    pub(super) fn append(
        &mut self,
        tag: Tag<'static>,
        mailbox: &ImapMailbox<'_>,
        flags: &[ImapFlag<'_>],
        date: Option<imap_next::imap_types::datetime::DateTime>,
        message: LiteralOrLiteral8<'_>,
        spooled: Option<Result<Spool, String>>,
    ) {
        let Some(name) = self.named(&tag, mailbox) else {
            return;
        };
        let Some(user_mailbox) = self.user_mailbox() else {
            return;
        };
        let bytes: &[u8] = match &message {
            LiteralOrLiteral8::Literal(l) => l.as_ref(),
            LiteralOrLiteral8::Literal8(l) => &l.data,
        };
        // A spooled message stands where the parser saw an empty literal.
        let spool = match spooled {
            None => None,
            Some(Ok(spool)) if bytes.is_empty() => Some(spool),
            Some(Ok(_)) => {
                self.bad(&tag, "only the message may be a literal this large");
                return;
            }
            Some(Err(reason)) => {
                warn!(user = self.user(), %reason, "APPEND failed");
                self.no(
                    &tag,
                    Some("SERVERBUG"),
                    "the server could not do that; try again",
                );
                return;
            }
        };
        let size = spool.as_ref().map_or(bytes.len() as u64, Spool::len);
        if size == 0 {
            self.no(&tag, None, "empty message");
            return;
        }
        let folder = match user_mailbox.open_folder(&name) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => {
                self.no(&tag, Some("TRYCREATE"), "no such folder");
                return;
            }
            Err(e) => {
                self.store_failed(&tag, "APPEND", &e);
                return;
            }
        };
        let result = (|| -> Result<Result<(u32, u32), &'static str>, StoreError> {
            let state = self.settings.shared.folder(&user_mailbox, &folder)?;
            // The index is not held while the message is written and synced: the
            // other sessions of the folder go on meanwhile.
            let maildir_flags = match flags_of(flags, &mut state.index())? {
                Ok(f) => f,
                Err(text) => return Ok(Err(text)),
            };
            let secs = match &date {
                Some(d) => d.as_ref().timestamp(),
                None => crate::encode::now_secs(),
            };
            let entry = match &spool {
                Some(spool) => user_mailbox.append_from(
                    &folder,
                    &mut spool.reader(),
                    size,
                    maildir_flags,
                    secs,
                )?,
                None => user_mailbox.append(&folder, bytes, maildir_flags, secs)?,
            };
            let mut index = state.index();
            let uids = index.add(&[(entry.id.clone(), secs)])?;
            Ok(Ok((
                index.uid_validity(),
                uids.first().copied().unwrap_or(0),
            )))
        })();
        match result {
            Ok(Ok((validity, uid))) => {
                info!(user = self.user(), folder = %name, uid, size, "message appended");
                self.sync(true);
                self.ok(
                    &tag,
                    Some(&format!("APPENDUID {validity} {uid}")),
                    "APPEND completed",
                );
            }
            Ok(Err(text)) => self.no(&tag, Some("LIMIT"), text),
            Err(e) => self.store_failed(&tag, "APPEND", &e),
        }
    }
}

/// Maildir flags for IMAP flags, defining keywords the folder does not know yet.
/// `Ok(Err(_))` when the folder has no room for another keyword.
pub(super) fn flags_of(
    flags: &[ImapFlag<'_>],
    index: &mut UidIndex,
) -> Result<Result<Flags, &'static str>, StoreError> {
    let mut out = Flags::new();
    for flag in flags {
        let name = flag.to_string();
        if name.eq_ignore_ascii_case("\\Recent") {
            continue;
        }
        let letter = match letter_of(&name, index) {
            Some(c) => c,
            None if name.starts_with('\\') => continue,
            None => match index.define_keyword(&name)? {
                Some(c) => c,
                None => return Ok(Err("the folder has no room for another keyword")),
            },
        };
        out = out.with_letter(letter);
    }
    Ok(Ok(out))
}

/// RENAME INBOX: its messages move to a new folder; the INBOX stays, empty.
fn rename_inbox(mailbox: &Mailbox, to: &FolderName) -> Result<(), StoreError> {
    let inbox = mailbox.inbox();
    let target = mailbox.folder(to)?;
    for entry in inbox.messages()? {
        match mailbox.move_message(&inbox, &entry, &target, entry.flags) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What STATUS reports of a folder.
pub(super) struct StatusCounts {
    messages: usize,
    recent: usize,
    unseen: usize,
    uid_next: u32,
    uid_validity: u32,
    highest_modseq: u64,
}

/// What a SELECT with QRESYNC tells a client that knew the folder at `since`
/// (RFC 7162 §3.2.5.1): `VANISHED (EARLIER)` for the messages gone since, then
/// `FETCH (UID FLAGS MODSEQ)` for those whose flags changed since (or that came),
/// numbered as the folder is without the vanished ones.
fn resync_report(selected: &Selected, since: u64, known: Option<&SequenceSet>, out: &mut Vec<u8>) {
    let vanished = selected.vanished_since(since, known);
    if !vanished.is_empty() {
        out.extend_from_slice(b"* VANISHED (EARLIER) ");
        out.extend_from_slice(crate::encode::range_set(&vanished).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // The view first, then the index: the order every other path takes them in.
    let messages = selected.all();
    let index = selected.state.index();
    for (i, msg) in messages.into_iter().enumerate() {
        let Some(msg) = msg else {
            continue;
        };
        if msg.modseq <= since {
            continue;
        }
        out.extend_from_slice(b"* ");
        number(out, i as u64 + 1);
        out.extend_from_slice(b" FETCH (UID ");
        number(out, u64::from(msg.uid));
        out.extend_from_slice(b" FLAGS ");
        write_flags(out, msg.flags, msg.recent, &index);
        crate::selected::write_modseq(out, msg.modseq);
        out.extend_from_slice(b")\r\n");
    }
}

/// `* STATUS name (items)` with the items in the order asked (those STATUS knows).
fn status_line(name: &FolderName, items: &[StatusDataItemName], counts: &StatusCounts) -> Vec<u8> {
    let parts: Vec<String> = items
        .iter()
        .filter_map(|item| match item {
            StatusDataItemName::Messages => Some(format!("MESSAGES {}", counts.messages)),
            StatusDataItemName::Recent => Some(format!("RECENT {}", counts.recent)),
            StatusDataItemName::UidNext => Some(format!("UIDNEXT {}", counts.uid_next)),
            StatusDataItemName::UidValidity => Some(format!("UIDVALIDITY {}", counts.uid_validity)),
            StatusDataItemName::Unseen => Some(format!("UNSEEN {}", counts.unseen)),
            StatusDataItemName::HighestModSeq => {
                Some(format!("HIGHESTMODSEQ {}", counts.highest_modseq))
            }
            _ => None,
        })
        .collect();
    let mut line = b"* STATUS ".to_vec();
    string(&mut line, wire_name(name).as_bytes());
    line.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
    line
}
