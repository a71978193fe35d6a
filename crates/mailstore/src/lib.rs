//! qs-mailstore — Quicksilver's mail store: Maildir++ mailboxes, folders, flags and
//! idempotent, crash-safe delivery.
//!
//! # Description
//!
//! Every local user has one mailbox in Maildir++ format. core-queue delivers into it;
//! imap-server and pop3-server read it and change flags. All of them may work on the same
//! mailbox at the same time, from several processes: the store relies on atomic renames,
//! never on a lock over the whole mailbox.
//!
//! # Layout on disk
//!
//! ```text
//! <data_dir>/mail/<domain>/<local>/      the mailbox root = the INBOX   (mailbox_path)
//!     cur/ new/ tmp/                     the INBOX's messages
//!     qs-delivered/<hash>                one marker per delivery key (not a folder:
//!                                        it does not start with '.')
//!     qs-uids  qs-uids.lock              the INBOX's UID index and its lock
//!     qs-uidvalidity                     the last UIDVALIDITY given out in the mailbox
//!     .Sent/  .Drafts/  .Trash/  .Junk/  special-use folders, made on first use
//!     .Lists.rust/                       folder "Lists.rust" (nested: '.' separates)
//!         cur/ new/ tmp/ maildirfolder qs-uids qs-uids.lock
//! ```
//!
//! The domain is lower-cased. Folder names are stored as UTF-8, not in IMAP's modified
//! UTF-7 (Dovecot's default): the IMAP server converts at the protocol edge. A message
//! file is named `<secs>.M<usec>P<pid>Q<n>.<host>,S=<size>` in `new/`, and the same name
//! plus `:2,<flags>` in `cur/`, flags sorted in ASCII order (`D` draft, `F` flagged,
//! `P` passed, `R` replied, `S` seen, `T` trashed; lower-case letters are keywords and
//! are kept). In the host name `/` is written `\057`, `:` `\072` and `,` `\054`. The part
//! before `:` is the base name, the message's identity ([`MessageId`]): neither flag
//! changes nor the move from `new/` to `cur/` alter it.
//!
//! # Durability contract
//!
//! When [`Mailbox::deliver`] or [`Mailbox::deliver_many`] reports
//! [`Delivery::Stored`] or [`Delivery::AlreadyDelivered`], the message is on disk: its
//! file and every directory entry leading to it have been fsynced. A crash at any point
//! never leaves a partial file in `new/` (files enter it only by rename of a complete,
//! synced file) and never loses a message whose delivery returned `Ok`. Delivery is
//! idempotent per delivery key (`<queue id>:<recipient>`): a key delivered again, after a
//! crash or a lost acknowledgement, leaves one message. Flag changes are not fsynced:
//! after a crash a message may show its old flags.
//!
//! A delivery key `K` has, by the hash `H` of `K`, a staging file `tmp/qs-H` in the
//! INBOX's `tmp/` (whatever the target folder) and a marker `qs-delivered/H`. A delivery
//! batch ([`DeliveryBatch`]; [`Mailbox::deliver`] is a batch of one) does, in order:
//!
//! 1. for each message: open `tmp/qs-H` and lock it (`flock`, exclusive; a delivery of
//!    the same key that finds it locked answers [`StoreError::Busy`]); if the marker
//!    exists, see below; otherwise write the bytes;
//! 2. fsync every staging file (several at once, on up to 16 long-lived threads of the
//!    process: a journalling file system commits concurrent fsyncs together), then
//!    `tmp/`, so the staging files are on disk before any marker names them;
//! 3. create each marker (`create_new`, the key as its content), fsync `qs-delivered/`;
//! 4. rename each staging file to `<folder>/new/<unique name>`;
//! 5. fsync the folder's `new/` and `tmp/` (both at once), and only then report success.
//!
//! A later attempt at the same key, holding the staging file's lock, reads where an
//! earlier one stopped: no marker means nothing was delivered (a staging file is garbage
//! and is written again); a marker beside a non-empty staging file means a complete
//! message that did not reach `new/` (it is renamed now, into the folder of the current
//! attempt, with the bytes of the earlier one); a marker without a staging
//! file means the message was delivered ([`Delivery::AlreadyDelivered`], after an fsync
//! of `tmp/` that makes the earlier rename durable). Nothing depends on the marker's
//! content, which is therefore never fsynced. Markers are per mailbox, so a key is
//! delivered once whatever folder each attempt chose. A batch of `n` messages costs
//! `n + 4` fsyncs, one delivery 5.
//!
//! # Limits
//!
//! Folder names: at most [`MAX_FOLDER_NAME_LEN`] bytes; no `/`, no control characters,
//! no `*` or `%`, no empty component, no leading `.`. Domains and local parts: no `/`,
//! `..`, NUL or control characters, not empty, no leading `.`, at most 255 bytes. A
//! delivery batch holds at most [`MAX_BATCH`] messages (one open file each); empty
//! messages and empty delivery keys are refused. Delivery markers are kept until
//! [`Mailbox::prune_delivery_markers`] removes them; run it with an age beyond the
//! queue's retry period. Delivery keys are known by a 128-bit FNV-1a hash; the marker
//! keeps the key, so a collision is reported ([`StoreError::KeyCollision`]), not
//! silently taken for a duplicate.
//!
//! Listing a folder reads `new/`, `cur/`, `new/`, so a message moving from `new/` to
//! `cur/` is never missed, and repeats that (up to three times) while the directories
//! change. A message whose flags another process keeps changing (renames inside `cur/`)
//! during every one of those reads can still be missing from that one listing.
//!
//! # IMAP UIDs
//!
//! Each folder has a persistent UID index ([`UidIndex`], the file `qs-uids` beside its
//! `cur/`): UIDVALIDITY, UIDNEXT, and for each message its UID and INTERNALDATE, keyed on
//! the [`MessageId`] that this crate keeps stable, plus the folder's keyword names (the
//! lower-case letters of file names). Changes are made under a file lock (`qs-uids.lock`)
//! that every imap-server process takes; UIDs are appended and synced before anyone is
//! told them and are never given out twice. A message that APPEND, COPY or MOVE puts into
//! a folder gets a new base name, so no record is ever taken for another message.
//! INTERNALDATE is the file's modification time when the message first got its UID
//! (delivery sets it; APPEND sets it to the client's date; COPY keeps it), and never
//! changes afterwards.
//!
//! # What IMAP does besides flags
//!
//! [`Folder::claim`] moves a message from `new/` to `cur/` for one caller only (IMAP's
//! `\Recent`); [`Mailbox::append`], [`Mailbox::copy_message`] (a hard link when it can)
//! and [`Mailbox::move_message`] (one rename) put a complete, synced file into a
//! folder's `cur/` under a new base name and sync `cur/`; [`Mailbox::delete_folder`]
//! first renames the folder to `qs-deleting-*` (never taken for a folder) and then
//! removes it; [`Mailbox::rename_folder`] renames a folder and its subfolders.
//!
//! # Security
//!
//! Every directory is created with mode 0700 and every file with mode 0600. No name from
//! outside becomes a path before it is checked ([`mailbox_path`], [`FolderName::new`],
//! [`MessageId::new`]); delivery keys become file names only through their hash.
//!
//! # Platform
//!
//! Unix only (`:` in file names, modes, `flock`, directory fsync).
//!
//! # Config keys
//!
//! None: the caller passes the data directory and the host name.

mod delivery;
mod error;
mod folder_name;
mod fsutil;
mod fsync_pool;
mod key;
mod mailbox;
mod names;
mod transfer;
mod uids;

pub use delivery::{Delivery, DeliveryBatch, DeliveryItem, MAX_BATCH};
pub use error::{Result, StoreError};
pub use folder_name::{FolderName, MAX_FOLDER_NAME_LEN, SpecialUse};
pub use fsutil::mailbox_path;
pub use mailbox::{Folder, Mailbox, MessageEntry};
pub use names::{Flag, Flags, MessageId};
pub use uids::{MAX_KEYWORDS, UID_FILE, UID_LOCK_FILE, UidIndex, UidRecord};
