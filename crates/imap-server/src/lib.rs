//! imap-server — Quicksilver's IMAP server (Mercury's MercuryI).
//!
//! # Description
//! Serves each local user's Maildir++ mailbox (`<data_dir>/mail/<domain>/<user>/`)
//! over IMAP, with every folder on the server, so that a user's phone, laptop and web
//! mail stay in step. It works on the same Maildir as core-queue (which delivers) and
//! pop3-server, from its own process; several imap-server processes may serve one
//! mailbox at once.
//!
//! Sessions on one folder see each other: new mail becomes `* N EXISTS`, a message
//! expunged elsewhere `* N EXPUNGE` (held back during FETCH, STORE and SEARCH, which
//! rely on sequence numbers), a flag changed elsewhere an untagged `FETCH (FLAGS)`,
//! at the next command or, in IDLE, within a second (inotify on the folder's `new/`
//! and `cur/`, with a poll every 5 s behind it). A message is `\Recent` in exactly
//! one session, the first read-write one to see it, however it arrived ([`recent`]).
//! The folder's message list, UID index and parse cache are shared by the
//! sessions of the process ([`store`]); a session keeps only its sequence of UIDs, as
//! runs of consecutive UIDs ([`seq`]), so an idle session on a big folder costs a few
//! kilobytes.
//!
//! UIDs come from the mail store's persistent UID index ([`qs_mailstore::UidIndex`]):
//! UIDVALIDITY, UIDNEXT and each message's UID and INTERNALDATE survive restarts, are
//! shared by every process, and are never reused. Keywords are stored as the
//! lower-case letters of Maildir file names, their names in the UID index (26 per
//! folder); `$Forwarded` is Maildir's `P`.
//!
//! # Standards
//! RFC 3501 (IMAP4rev1), RFC 2177 (IDLE), RFC 4315 (UIDPLUS: APPENDUID, COPYUID, UID
//! EXPUNGE), RFC 6851 (MOVE), RFC 2342 (NAMESPACE), RFC 2971 (ID), RFC 5161 (ENABLE),
//! RFC 7162 (CONDSTORE and QRESYNC: modification sequences from the UID index,
//! CHANGEDSINCE, UNCHANGEDSINCE, SEARCH MODSEQ, STATUS HIGHESTMODSEQ, SELECT with
//! QRESYNC, VANISHED), RFC 6154 (SPECIAL-USE: `\Sent`, `\Drafts`, `\Trash`, `\Junk` on
//! the folders of those names, made at first login), RFC 7888 (LITERAL+), RFC 3691
//! (UNSELECT), RFC 3348 (CHILDREN), RFC 5258 (LIST-EXTENDED, [`list_extended`]), RFC
//! 5819 (LIST-STATUS), RFC 3516 (BINARY), RFC 4959 (SASL-IR), RFC 7889
//! (APPENDLIMIT), RFC 4616 (AUTHENTICATE PLAIN), RFC 5530 (response codes), RFC 8314
//! (implicit TLS on `tls_listen`). Folder names travel in modified UTF-7 and are stored in UTF-8. ENVELOPE
//! and BODYSTRUCTURE come from mail-parser's MIME tree; they and a message's Date are
//! cached per folder in memory, so fetching the headers of a big folder again reads no
//! file.
//!
//! # Security
//! LOGIN and AUTHENTICATE are refused (`NO [PRIVACYREQUIRED]`) and LOGINDISABLED is
//! announced until the connection is encrypted (STARTTLS or `tls_listen`), unless
//! `allow_plaintext_auth` is true. After STARTTLS a new session starts over TLS and
//! every byte sent before the handshake is dropped. Passwords travel in
//! `qs_directory::Secret` (never printed) and are checked on a blocking thread. A
//! failed login is answered after a delay (1 s, doubling, at most 8 s); three close
//! the connection; `max_auth_failures` from one address within 15 minutes refuse every
//! login from it for 15 minutes. Client folder names pass the store's checks (no path
//! can leave the mailbox).
//!
//! # Limits
//! Every client byte passes a guard ([`input`]) before the parser keeps it: command
//! lines of at most `max_line_length`; literals of at most `max_literal_size` once
//! logged in (APPENDLIMIT) and 8 KiB before, synchronizing or not (LITERAL+: a bigger
//! non-synchronizing one is read and dropped, never held, and its command answered `BAD
//! [TOOBIG]`); `login_byte_budget` bytes before login. So an unauthenticated
//! client cannot make a session hold more than about that budget, whatever it sends.
//! An APPEND message over `spool_threshold` (1 MiB) never reaches the parser: it goes
//! to an unlinked 0600 file under `<data_dir>/spool/imap-server/` while it arrives and
//! is copied from there into the Maildir, so an upload costs disk, not memory.
//! Autologout after `idle_timeout_secs` (at least 30 minutes; also ends an IDLE),
//! 60 s before login; `max_errors` protocol errors close the session; connections
//! are limited per listener (each of `listen` and `tls_listen` has its own budget),
//! per address and per user. Output is written in 64 KiB steps
//! (a FETCH of many messages never sits in memory whole). LIST and LSUB patterns
//! ([`list_pattern`]) are at most `max_list_pattern_length` bytes and match in at
//! most name × pattern steps. A SEARCH has at most `max_search_keys` keys nested at
//! most `max_search_depth` levels ([`search`]); deeper nesting than imap-codec
//! follows is parsed without recursion ([`search::deep`]). Over a limit: `NO [LIMIT]`.
//!
//! # Config
//! `hostname`, `data_dir`, `[tls] cert` and `key`, `[directory] file` and
//! `subaddress_separator`, `[log] level`, and `[imap_server]`: `listen`, `tls_listen`,
//! `allow_plaintext_auth`, `max_connections`, `tls_max_connections`, `max_connections_per_ip`,
//! `max_connections_per_user`, `idle_timeout_secs`, `max_auth_failures`, `max_errors`,
//! `max_line_length`, `max_literal_size`, `login_byte_budget`,
//! `max_list_pattern_length`, `max_search_keys`, `max_search_depth`. The bound addresses are
//! written to `<data_dir>/run/imap-server.json` under `imap_server.listen` and
//! `imap_server.tls_listen`.

pub mod encode;
pub mod fetch;
pub mod input;
pub mod list_extended;
pub mod list_pattern;
pub mod message;
pub mod mutf7;
pub mod recent;
pub mod search;
pub mod selected;
pub mod seq;
pub mod server;
pub mod session;
pub mod store;

#[cfg(test)]
mod proptests;

use qs_config::Config;
use qs_service::shutdown::Shutdown;
use tracing::info;

pub use server::{LISTENER_KEYS, Limits, Listeners, ServerConfig, serve};

/// The module's name: run file, logs.
pub const MODULE: &str = "imap-server";

/// Why imap-server cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImapError {
    /// The directory, the certificate, a listener or the run file.
    #[error(transparent)]
    Open(#[from] qs_service::accept::MailboxServerError),
    /// The spool folder cannot be made or cleaned.
    #[error("cannot set up the spool folder: {0}")]
    Spool(std::io::Error),
}

/// Opens the directory and the certificate, binds `[imap_server]`'s listeners, writes
/// the run file, and serves until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), ImapError> {
    let access = &config.imap_server;
    let threshold = config.imap_limits.spool_threshold;
    let spool = qs_service::spool::SpoolDir::for_module(&config.data_dir, MODULE, threshold)
        .map_err(ImapError::Spool)?;
    let parts =
        qs_service::accept::open_mailbox_server(&config, MODULE, LISTENER_KEYS, access).await?;
    if !access.allow_plaintext_auth {
        info!("logins only over TLS (STARTTLS or tls_listen)");
    }
    let server = ServerConfig {
        data_dir: config.data_dir.clone(),
        hostname: config.hostname.clone(),
        directory: parts.directory,
        tls: parts.tls,
        allow_plaintext_auth: access.allow_plaintext_auth,
        limits: Limits::from_config(access, &config.imap_limits),
        spool,
    };
    serve(server, parts.listeners, shutdown).await;
    qs_service::runfile::remove(&config.data_dir, MODULE);
    info!("stopped");
    Ok(())
}
