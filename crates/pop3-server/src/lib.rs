//! pop3-server — Quicksilver's POP3 server (Mercury's MercuryP).
//!
//! # Description
//! Serves each local user's INBOX (the Maildir `new/` and `cur/` of
//! `<data_dir>/mail/<domain>/<user>/`) over POP3, to mail programs that keep
//! their mail on one computer and to phones and scripts that speak nothing else.
//! It reads the same Maildir as imap-server and core-queue, from its own process.
//!
//! A session logs in (USER/PASS or AUTH PLAIN), and the maildrop is then locked
//! for it alone (a second session gets `-ERR [IN-USE]`) and listed once: the
//! messages are numbered oldest first, and mail that arrives during the session
//! waits for the next one. DELE only marks a message; the marks are applied
//! when the client says QUIT (the UPDATE state), RSET clears them, and a
//! connection that ends any other way (dropped, timed out, server stopped)
//! changes nothing. Messages fetched with RETR are marked `\Seen` at that same
//! QUIT, for IMAP users of the mailbox (TOP is a peek and marks nothing); a
//! client that vanishes before QUIT finds them unread next time, which matters
//! to users who see only unread mail.
//!
//! Per-user options, from the directory (`qsctl user pop3`): `ignore_dele`
//! accepts DELE and removes nothing (a shared mailbox that several people
//! fetch); `only_unread` offers only messages without `\Seen`.
//!
//! # Standards
//! RFC 1939 (POP3: USER, PASS, STAT, LIST, RETR, DELE, NOOP, RSET, QUIT, TOP,
//! UIDL), RFC 2449 (CAPA; RESP-CODES, PIPELINING), RFC 3206 (AUTH-RESP-CODE,
//! `[SYS/TEMP]`, `[SYS/PERM]`), RFC 2595 (STLS), RFC 5034 and RFC 4616 (AUTH
//! PLAIN with an initial response), RFC 8314 (implicit TLS on `tls_listen`).
//! APOP is not offered: it needs the password stored in a readable form, and
//! Quicksilver keeps only argon2id hashes.
//!
//! Messages go out with every line ending in CRLF (a bare LF in a stored file
//! gets its CR), lines beginning with '.' doubled, and the `.` line after them.
//! STAT and LIST give the exact octets RETR sends, stuffing excluded, cached
//! per message in the mailbox (see [`maildrop`]). UIDL is the Maildir base name
//! (or its hash when it does not fit RFC 1939's rules), which flag changes and
//! moves from `new/` to `cur/` leave alone: stable across sessions, processes
//! and restarts.
//!
//! # Security
//! USER, PASS and AUTH are refused with `-ERR [AUTH]`, and not listed in CAPA,
//! until the connection is encrypted (STLS or `tls_listen`), unless
//! `allow_plaintext_auth` is true. After STLS a new session starts over TLS and
//! every byte the client sent before the handshake is dropped. Passwords travel
//! in `qs_directory::Secret` (never printed) and are checked by the directory
//! on a blocking thread at a constant cost. Each failed login is answered after
//! a delay (1 s, doubling per failure of the connection, at most 8 s); the third
//! failure closes the connection, and 10 failures from one address within 15
//! minutes refuse every login from it for 15 minutes. The log records each
//! login (user, mechanism, never the password) and each failure with its
//! reason, naming the account only when it exists.
//!
//! # Limits
//! [`Limits::from_config`] builds them from `[pop3_server]` (by default 200
//! connections on each of `listen` and `tls_listen`, 20 per client address;
//! autologout after `idle_timeout_secs`, 10 minutes, without a command (no
//! UPDATE); `max_errors`, 10, protocol errors close the connection) and the
//! fixed ones: TLS handshake 30 s; command lines of at most
//! [`command::MAX_LINE`] octets.
//! Memory per connection: a 4 KiB read buffer, one line, up to 64 KiB of
//! output, and the maildrop listing (about 150 bytes a message); messages are
//! streamed from disk, never read whole.
//!
//! # Config
//! `hostname`, `data_dir`, `[tls] cert` and `key`, `[directory] file` and
//! `subaddress_separator`, `[log] level`, and `[pop3_server]`: `listen`,
//! `tls_listen`, `allow_plaintext_auth`, `max_connections` (on `listen`),
//! `tls_max_connections` (on `tls_listen`, a budget of its own),
//! `max_connections_per_ip`, `idle_timeout_secs`, `max_auth_failures`,
//! `max_errors`. The bound addresses are written to
//! the run file `<data_dir>/run/pop3-server.json` under `pop3_server.listen`
//! and `pop3_server.tls_listen`.

pub mod command;
pub mod encode;
pub mod maildrop;
pub mod reply;
pub mod server;
pub mod session;

use qs_config::Config;
use qs_service::shutdown::Shutdown;
use tracing::info;

pub use server::{LISTENER_KEYS, Limits, Listeners, ServerConfig, serve};

/// The module's name: run file, logs.
pub const MODULE: &str = "pop3-server";

/// Why pop3-server cannot start.
pub type Pop3Error = qs_service::accept::MailboxServerError;

/// Opens the directory and the certificate, binds `[pop3_server]`'s listeners,
/// writes the run file, and serves until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Pop3Error> {
    let access = &config.pop3_server;
    let parts =
        qs_service::accept::open_mailbox_server(&config, MODULE, LISTENER_KEYS, access).await?;
    if !access.allow_plaintext_auth {
        info!("logins only over TLS (STLS or tls_listen)");
    }
    let server = ServerConfig {
        data_dir: config.data_dir.clone(),
        hostname: config.hostname.clone(),
        directory: parts.directory,
        tls: parts.tls,
        allow_plaintext_auth: access.allow_plaintext_auth,
        limits: Limits::from_config(access),
    };
    serve(server, parts.listeners, shutdown).await;
    qs_service::runfile::remove(&config.data_dir, MODULE);
    info!("stopped");
    Ok(())
}
