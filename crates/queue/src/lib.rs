//! qs-queue - Quicksilver's mail queue: envelopes, the durable store, the
//! wire protocol, and the client every module uses to reach core-queue.
//!
//! # Description
//!
//! A message enters the queue as an [`Envelope`] (sender, recipients,
//! origin) and its bytes. Each [`Recipient`] belongs to a [`JobClass`]: the
//! kind of worker that delivers to it (`local` for core-queue's own Maildir
//! delivery, `outbound` for smtp-relay, `list` for list-server). Workers
//! *lease* the due recipients of their class as a [`Job`], try them, and
//! *complete* the job with one [`Outcome`] per recipient. Temporary failures
//! are retried on the [`RetryPolicy`] back-off (5, 10, 20, 40, 60, 60 ...
//! minutes); after five days they fail for good. A worker that dies simply
//! lets its lease run out, and the job is offered again.
//!
//! The [`Store`] is a sled database that only core-queue opens; sled locks
//! its files, and a second open is refused with [`StoreError::Locked`] naming
//! the owner from the `owner` file kept beside the database. The store, its
//! group commit and the server side are built only with this crate's `store`
//! feature, which only core-queue turns on: a producer compiles the envelope,
//! the protocol, the client and the message helpers, not sled. Every other
//! module talks to core-queue through a [`Client`] over a Unix socket, or
//! over TCP with a shared secret. core-queue answers through [`serve`] with
//! its own [`Handler`].
//!
//! # Replies
//!
//! [`Reply`] is the one SMTP reply of the whole system (three-digit code,
//! RFC 3463 enhanced code, text of one or more lines; see [`reply`]):
//! smtp-server answers with it, smtp-relay reads its peers' answers into it,
//! an [`Outcome`] carries one, and core-queue's reports read their `Status`
//! and `Diagnostic-Code` from it. In the queue and on the wire it is its
//! one-line text, as the reply strings before it were.
//!
//! # Durability
//!
//! A store write is in memory until the next flush. [`Store::commit`]
//! returns only after a flush that began after the call, and concurrent
//! callers share one flush (group commit). core-queue commits before it
//! answers; so when [`Client::enqueue`] returns, the message is on disk, and
//! only then may smtp-server answer `250`, pop-client send `DELE`, or the
//! maildrop file be removed. A request whose answer is lost is sent again: a
//! message may be queued twice, never lost.
//!
//! # Wire format
//!
//! Frames of `[u32 BE header length][u32 BE body length][JSON header][body]`.
//! The header is a [`Request`] tagged by `"op"` (`{"op":"lease","class":
//! "local","worker":"w","lease_secs":60}`) or a [`Response`] tagged by
//! `"type"` (`{"type":"error","kind":"not_found","message":"..."}`); message
//! bytes and state values travel raw in the body. Over TCP the first frame
//! must be `hello` with the shared secret (compared in constant time);
//! anything else is answered `unauthorized` and the connection closed. See
//! [`proto`].
//!
//! # Limits
//!
//! A header may be at most 1 MiB and a body 256 MiB ([`Limits`]); both are
//! checked from the 8-byte prefix, before any buffer is sized for them.
//! Queue ids are 18 upper-case hex digits; class names 1 to 32 of `a-z`,
//! `0-9`, `-`, `_`; state namespaces up to 64 bytes and keys up to 1 KiB.
//!
//! # Security
//!
//! The shared secret is a [`Secret`], whose `Debug` prints `<redacted>`; it
//! is never logged. Errors sent to clients are generic; details go to the
//! log, with the queue id on every line about a message.
//!
//! # Configuration
//!
//! This crate reads no configuration itself: core-queue passes the store
//! folder, [`RetryPolicy`], socket paths and secret from the config file,
//! and each module passes its [`Endpoint`] and [`ClientOptions`].

pub mod client;
#[cfg(feature = "store")]
pub mod commit;
pub mod envelope;
mod io;
pub mod message;
pub mod proto;
pub mod reply;
pub mod retry;
#[cfg(feature = "store")]
pub mod server;
#[cfg(feature = "store")]
pub mod store;

pub use client::{BodySource, Client, ClientError, ClientOptions, Endpoint};
#[cfg(feature = "store")]
pub use commit::{CommitError, Committer};
pub use envelope::{
    CompleteOutcome, Envelope, FailedRecipient, Job, JobClass, JobRecipient, LeaseToken, Origin,
    Outcome, ParseError, QueueId, Recipient, RecipientResult, RecipientStatus, Stats, Summary,
    unix_now,
};
pub use proto::{ErrorKind, Limits, ProtoError, Request, Response, Secret};
pub use reply::{EnhancedCode, Reply};
pub use retry::RetryPolicy;
#[cfg(feature = "store")]
pub use server::{Handler, Listener, ServerError, ServerOptions, serve, serve_with};
#[cfg(feature = "store")]
pub use store::{Store, StoreError, StoreOptions};
