//! One poll of one account: log in, list, fetch what is new, queue it for
//! the right people, record it, delete it, QUIT.
//!
//! The order of the steps is the safety of the whole module. For each
//! message: RETR; a keyed enqueue (core-queue has it on disk when it
//! answers); the `m:`/`u:` records (on disk when the queue answers); only
//! then DELE. QUIT, which makes the server apply the DELEs, comes last. A
//! crash or a dropped connection at any point leaves the message on the
//! server, and the next poll either finds its record (and deletes it without
//! fetching it again) or fetches it and sends the same request key, which
//! core-queue answers with the first queue id: delivered once.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mail_parser::MessageParser;
use qs_config::{ClientTls, PasswordSource, PopAccount};
use qs_directory::{Directory, Secret};
use qs_queue::message::{fields, rfc5322_date};
use qs_queue::{Client, ClientError, Origin, QueueId, unix_now};
use qs_service::shutdown::Shutdown;
use tracing::{debug, error, info, warn};

use crate::connection::{Connection, Server, SessionError};
use crate::distribute::{self, Distribution, Found, REASON_FIELD, Rules};
use crate::notice;
use crate::pop3::{ProtocolError, TlsMode};
use crate::state::{self, Delivered, State};
use crate::tls::{self, TlsSetupError};

/// The module's name in queue origins.
pub const MODULE: &str = "pop-client";

/// The largest message the queue takes (its frame limit, less room for trace fields).
pub const QUEUE_MAX_MESSAGE: u64 = 256 * 1024 * 1024 - 64 * 1024;

/// Room reserved in front of a fetched message for the trace fields.
const TRACE_ROOM: usize = 4096;

/// The field name provider `Delivered-To` fields are renamed to: core-queue
/// takes a recipient already named in a `Delivered-To` for a mail loop, and
/// the provider's delivery into the domain mailbox is not one.
pub const PROVIDER_DELIVERED_TO: &str = "X-Original-Delivered-To";

/// One account, as the poller uses it.
#[derive(Debug, Clone)]
pub struct Account {
    /// The name, in logs and `qsctl fetch`.
    pub name: String,
    /// The provider's host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// Extra CA certificates.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Check the certificate and name.
    pub tls_verify: bool,
    /// The login.
    pub username: String,
    /// The password (read at each poll, so a changed password file needs no restart).
    pub password: PasswordSource,
    /// Between polls.
    pub interval: Duration,
    /// Single-user mode.
    pub deliver_to: Option<String>,
    /// Domain-mailbox mode.
    pub rules: Rules,
    /// Leave the mail on the server.
    pub keep_on_server: bool,
    /// With `keep_on_server`: delete this long after the first fetch (zero:
    /// never; `delete_after_days`).
    pub delete_after: Duration,
    /// Larger messages stay on the server.
    pub max_message_size: u64,
    /// The limit on every wait for the server.
    pub timeout: Duration,
    /// A failure this long is reported to the postmaster.
    pub report_failure_after: Duration,
}

impl Account {
    /// From the config file's account table.
    pub fn from_config(a: &PopAccount) -> Account {
        Account {
            name: a.name.clone(),
            host: a.host.clone(),
            port: a.port,
            tls: match a.tls {
                ClientTls::Implicit => TlsMode::Implicit,
                ClientTls::StartTls => TlsMode::StartTls,
                _ => TlsMode::None,
            },
            tls_ca_file: a.tls_ca_file.clone(),
            tls_verify: a.tls_verify,
            username: a.username.clone(),
            password: a.password.clone(),
            interval: a.interval,
            deliver_to: a.deliver_to.clone(),
            rules: Rules {
                headers: a.headers.clone(),
                only_listed_headers: a.only_listed_headers,
                default_user: a.default_user.clone(),
            },
            keep_on_server: a.keep_on_server,
            delete_after: a.delete_after,
            max_message_size: a.max_message_size.min(QUEUE_MAX_MESSAGE),
            timeout: a.timeout,
            report_failure_after: a.report_failure_after,
        }
    }

    /// Whether the copy on the server goes, `first` being its first fetch.
    fn delete_now(&self, first: u64, now: u64) -> bool {
        if !self.keep_on_server {
            return true;
        }
        !self.delete_after.is_zero() && now >= first.saturating_add(self.delete_after.as_secs())
    }
}

/// What every account shares.
#[derive(Debug, Clone)]
pub struct Context {
    /// Our host name, for Received fields and notices.
    pub hostname: String,
    /// The queue client (state records).
    pub queue: Client,
    /// Keyed enqueues.
    pub keyed: qs_queue::Client,
    /// The user directory.
    pub directory: Arc<Directory>,
}

/// Why a poll failed; the next one tries again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// The password file cannot be read.
    #[error("cannot read the password file: {0}")]
    Password(std::io::Error),
    /// TLS cannot be set up.
    #[error(transparent)]
    TlsSetup(#[from] TlsSetupError),
    /// The POP3 session failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// core-queue refused or could not be reached.
    #[error("queue: {0}")]
    Queue(#[from] ClientError),
    /// Neither a default user nor a postmaster to give unmatched mail to.
    #[error(
        "no default_user and no postmaster in the directory: mail for nobody stays on the server"
    )]
    NoDefaultUser,
}

/// What a poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Messages queued.
    pub delivered: u32,
    /// Messages not queued because they were delivered before.
    pub duplicates: u32,
    /// Messages deleted from the server.
    pub deleted: u32,
    /// Messages left on the server (keep_on_server).
    pub kept: u32,
    /// Messages left on the server because they are too large.
    pub too_large: u32,
    /// Messages the server refused to give (RETR `-ERR`).
    pub refused: u32,
    /// The server has no UIDL.
    pub no_uidl: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} delivered, {} duplicate{}, {} deleted, {} kept on the server",
            self.delivered,
            self.duplicates,
            if self.duplicates == 1 { "" } else { "s" },
            self.deleted,
            self.kept
        )?;
        if self.too_large > 0 {
            write!(f, ", {} too large", self.too_large)?;
        }
        if self.refused > 0 {
            write!(f, ", {} refused by the server", self.refused)?;
        }
        if self.no_uidl {
            f.write_str(" (no UIDL: duplicates known by Message-ID)")?;
        }
        Ok(())
    }
}

/// What became of one fetched message.
enum Taken {
    /// Queued for these recipients.
    Queued,
    /// Every recipient had it already.
    Duplicate,
}

/// Polls `account` once.
pub async fn poll(
    account: &Account,
    parser: &MessageParser,
    ctx: &Context,
    shutdown: &Shutdown,
) -> Result<Report, PollError> {
    let password = account
        .password
        .read()
        .map_err(PollError::Password)?
        .unwrap_or_default();
    let server = Server {
        host: account.host.clone(),
        port: account.port,
        mode: account.tls,
        tls: tls::client_config(account.tls_ca_file.as_deref(), account.tls_verify)?,
        timeout: account.timeout,
    };
    // The records first: the provider's maildrop is not held while the
    // queue is away.
    let state = State::new(ctx.queue.clone(), &account.name);
    let handled = state.handled().await?;
    let told = state.told().await?;
    let mut conn = Connection::open(&server, &account.username, Secret::from(password)).await?;
    debug!(peer = %conn.peer, tls = conn.secure, "logged in");
    let poller = Poller {
        account,
        parser,
        ctx,
        state,
        peer: conn.peer.ip().to_string(),
        secure: conn.secure,
    };
    let listing = conn.list().await?;
    let uidls: Option<HashMap<u32, String>> = if conn.capabilities.may_have_uidl() {
        conn.uidl().await?.map(|l| l.into_iter().collect())
    } else {
        None
    };
    let mut report = Report {
        no_uidl: uidls.is_none(),
        ..Report::default()
    };
    if uidls.is_none() {
        warn!("the server does not support UIDL: duplicates are recognised by Message-ID only");
    }
    if account.keep_on_server && conn.capabilities.expire_now {
        warn!(
            "the server announces EXPIRE 0: it deletes what was fetched, whatever keep_on_server says"
        );
    }
    let uidl_of = |n: u32| uidls.as_ref().and_then(|m| m.get(&n)).map(String::as_str);
    // The records of every message on the server, visited or not.
    let on_server: HashSet<String> = listing
        .iter()
        .flat_map(|&(n, size)| {
            let uidl = uidl_of(n);
            uidl.map(state::uidl_key)
                .into_iter()
                .chain([state::big_key(uidl, size)])
        })
        .collect();
    let mut written: HashSet<String> = HashSet::new();
    let mut deleted: HashSet<String> = HashSet::new();
    info!(messages = listing.len(), "mailbox listed");

    for &(n, size) in &listing {
        if shutdown.is_fired() {
            info!("stopping: the other messages wait for the next poll");
            break;
        }
        let uidl = uidl_of(n);
        let ukey = uidl.map(state::uidl_key);
        let bkey = state::big_key(uidl, size);

        // Too large by LIST, or found larger than LIST said at an earlier poll.
        if size > account.max_message_size || told.contains(&bkey) {
            report.too_large += 1;
            if !told.contains(&bkey) {
                poller.tell_too_large(n, uidl, size, &bkey).await?;
                written.insert(bkey);
            }
            continue;
        }
        if let Some(first) = ukey.as_ref().and_then(|k| handled.get(k)) {
            if account.delete_now(*first, unix_now()) {
                conn.dele(n).await?;
                deleted.extend(ukey);
                report.deleted += 1;
            } else {
                report.kept += 1;
            }
            continue;
        }

        let limit = usize::try_from(account.max_message_size + account.max_message_size / 10)
            .unwrap_or(usize::MAX)
            .saturating_add(64 * 1024);
        let reserve = usize::try_from(size)
            .unwrap_or(0)
            .saturating_add(TRACE_ROOM);
        let message = match conn.retr(n, reserve, limit).await {
            Ok(Ok(message)) => message,
            Ok(Err(reply)) => {
                warn!(n, uidl, reply = %reply, "RETR refused: the message stays on the server for the next poll");
                report.refused += 1;
                continue;
            }
            Err(SessionError::Protocol(ProtocolError::TooLarge(_))) => {
                // LIST said less than RETR sends: treat it as too large from now on.
                if !told.contains(&bkey) {
                    poller.tell_too_large(n, uidl, size, &bkey).await?;
                }
                return Err(SessionError::Refused {
                    command: "RETR",
                    reply: format!("message {n} is larger than LIST said ({size} octets)"),
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        let now = unix_now();
        let (taken, first) = match poller.take(message, uidl, now).await {
            Ok(taken) => taken,
            Err(PollError::Queue(e)) if !e.is_temporary() => {
                // Retrying cannot help this one; the others go on.
                error!(n, uidl, error = %e, "the queue refused the message: it stays on the server");
                report.refused += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        match taken {
            Taken::Queued => report.delivered += 1,
            Taken::Duplicate => report.duplicates += 1,
        }
        written.extend(ukey.iter().cloned());
        if account.delete_now(first, now) {
            conn.dele(n).await?;
            deleted.extend(ukey);
            report.deleted += 1;
        } else {
            report.kept += 1;
        }
    }
    conn.quit().await?;

    // The server applied the DELEs: forget what is no longer there.
    let remaining: HashSet<&String> = on_server.difference(&deleted).collect();
    let stale: Vec<String> = handled
        .keys()
        .chain(told.iter())
        .chain(written.iter())
        .filter(|k| !remaining.contains(k))
        .cloned()
        .collect::<HashSet<String>>()
        .into_iter()
        .collect();
    if !stale.is_empty() {
        debug!(
            records = stale.len(),
            "forgetting records of deleted messages"
        );
        poller.state.forget(stale).await?;
    }
    Ok(report)
}

/// One poll's view of its account.
struct Poller<'a> {
    account: &'a Account,
    parser: &'a MessageParser,
    ctx: &'a Context,
    state: State,
    peer: String,
    secure: bool,
}

impl Poller<'_> {
    /// Queues a fetched message for its recipients (or finds it is a
    /// duplicate) and records it. Returns what happened and when the message
    /// counts as first fetched (for `delete_after_days`).
    async fn take(
        &self,
        mut message: Vec<u8>,
        uidl: Option<&str>,
        now: u64,
    ) -> Result<(Taken, u64), PollError> {
        let account = self.account;
        let content = state::digest(&[&message]);
        let header = distribute::read_header(self.parser, &message, &account.rules);
        let distribution = match &account.deliver_to {
            Some(to) => Distribution {
                recipients: vec![to.clone()],
                found: Found::SingleUser,
                unknown: Vec::new(),
            },
            None => {
                let snapshot = self.ctx.directory.snapshot();
                distribute::distribute(&header, &account.rules, &snapshot)
                    .ok_or(PollError::NoDefaultUser)?
            }
        };
        let id_key = match &header.message_id {
            Some(id) => state::id_key(id),
            None => state::content_key(&content),
        };
        let message_id = header.message_id.as_deref().unwrap_or("");
        let ukey = uidl.map(state::uidl_key);
        let previous = self
            .state
            .delivered(&id_key)
            .await?
            .filter(|d| d.is_current(now));
        let new = match &previous {
            Some(d) => d.not_yet(&distribution.recipients),
            None => distribution.recipients.clone(),
        };
        if new.is_empty() {
            info!(
                uidl,
                message_id, "a duplicate: already delivered from this account, not delivered again"
            );
            if let Some(k) = &ukey {
                self.state.mark_handled(k, now).await?;
            }
            let first = match (&ukey, &previous) {
                (None, Some(d)) => d.first,
                _ => now,
            };
            return Ok((Taken::Duplicate, first));
        }

        let sender = header.return_path.clone().unwrap_or_default();
        let size = message.len();
        let trace = self.trace_fields(&new, distribution.reason().as_deref(), now);
        rewrite_header(&mut message, &trace);
        let key = format!(
            "pop-client:{}",
            state::digest(&[
                account.name.as_bytes(),
                uidl.unwrap_or("").as_bytes(),
                content.as_bytes()
            ])
        );
        let origin = Origin {
            module: MODULE.to_string(),
            peer: Some(format!("{} ({})", account.host, account.name)),
            auth_user: None,
        };
        let queue_id: QueueId = self
            .ctx
            .keyed
            .enqueue_with_key(&key, &sender, new.clone(), origin, &message)
            .await?;
        drop(message);
        let delivered = match &previous {
            Some(d) => d.with(&new),
            None => Delivered {
                first: now,
                to: Vec::new(),
            }
            .with(&new),
        };
        self.state
            .record(&id_key, &delivered, ukey.as_deref().map(|k| (k, now)))
            .await?;
        let found = match &distribution.found {
            Found::SingleUser => "deliver_to".to_string(),
            Found::Envelope(name) => name.clone(),
            Found::Visible => "To/Cc/Received".to_string(),
            Found::Default => "nobody found: default user".to_string(),
        };
        info!(queue_id = %queue_id, uidl, message_id, size, to = ?new, found = %found, "queued");
        Ok((Taken::Queued, now))
    }

    /// The Received field recording the fetch, and the reason field when
    /// nobody local was found.
    fn trace_fields(&self, recipients: &[String], reason: Option<&str>, now: u64) -> Vec<u8> {
        let account = self.account;
        let for_clause = match recipients {
            [one] => format!(" for <{one}>"),
            _ => String::new(),
        };
        let mut out = format!(
            "Received: from {} ([{}])\r\n\tby {} (Quicksilver pop-client, account {})\r\n\twith {}{}; {}\r\n",
            account.host,
            self.peer,
            self.ctx.hostname,
            comment_safe(&account.name),
            if self.secure { "POP3S" } else { "POP3" },
            for_clause,
            rfc5322_date(now),
        );
        if let Some(reason) = reason {
            out.push_str(&format!("{REASON_FIELD}: {}\r\n", notice::one_line(reason)));
        }
        out.into_bytes()
    }

    /// Tells the postmaster (once) that a message is too large to fetch.
    async fn tell_too_large(
        &self,
        n: u32,
        uidl: Option<&str>,
        size: u64,
        key: &str,
    ) -> Result<(), PollError> {
        let account = self.account;
        warn!(
            n,
            uidl,
            size,
            limit = account.max_message_size,
            "too large: left on the server; the postmaster is told"
        );
        let subject = format!(
            "pop-client: a message of {size} bytes left on {} (account {})",
            account.host, account.name
        );
        let body = format!(
            "Account \"{}\" ({}@{}) holds a message of {size} bytes, over the\n\
             limit of {} bytes (max_message_size). It stays on the server and\n\
             will not be fetched; this notice is sent once.\n\n\
             Message number: {n}\nUIDL: {}\n\n\
             Raise max_message_size for the account, or remove the message with\n\
             the provider's webmail.",
            account.name,
            account.username,
            account.host,
            account.max_message_size,
            uidl.unwrap_or("(the server has no UIDL)"),
        );
        send_notice(self.ctx, &account.name, key, &subject, &body).await?;
        self.state.mark_told(key, unix_now()).await?;
        Ok(())
    }
}

/// Queues a notice for the postmaster, once per `key`.
pub async fn send_notice(
    ctx: &Context,
    account: &str,
    key: &str,
    subject: &str,
    body: &str,
) -> Result<(), PollError> {
    let postmaster =
        distribute::postmaster(&ctx.directory.snapshot()).ok_or(PollError::NoDefaultUser)?;
    let message = notice::message(&ctx.hostname, &postmaster, subject, body, unix_now());
    let request_key = format!(
        "pop-client:notice:{}",
        state::digest(&[account.as_bytes(), key.as_bytes()])
    );
    let origin = Origin {
        module: MODULE.to_string(),
        peer: None,
        auth_user: None,
    };
    let id = ctx
        .keyed
        .enqueue_with_key(&request_key, "", vec![postmaster.clone()], origin, &message)
        .await?;
    info!(queue_id = %id, to = %postmaster, subject = %subject, "postmaster notified");
    Ok(())
}

/// Puts `trace` on top of the message, renames the provider's `Delivered-To`
/// fields and removes its `Return-Path` fields (core-queue writes its own),
/// all in place: the message is held once.
pub fn rewrite_header(message: &mut Vec<u8>, trace: &[u8]) {
    let edits: Vec<(std::ops::Range<usize>, bool)> = fields(message)
        .iter()
        .filter_map(|f| {
            if f.name.eq_ignore_ascii_case("Return-Path") {
                Some((f.span.clone(), false))
            } else if f.name.eq_ignore_ascii_case("Delivered-To") {
                Some((f.span.start..f.span.start + f.name.len(), true))
            } else {
                None
            }
        })
        .collect();
    let growth = edits.iter().filter(|(_, rename)| *rename).count() * PROVIDER_DELIVERED_TO.len()
        + trace.len();
    message.reserve(growth);
    for (range, rename) in edits.into_iter().rev() {
        if rename {
            message.splice(range, PROVIDER_DELIVERED_TO.bytes());
        } else {
            message.drain(range);
        }
    }
    let len = message.len();
    message.resize(len + trace.len(), 0);
    message.copy_within(0..len, trace.len());
    message[..trace.len()].copy_from_slice(trace);
}

/// Text safe inside an RFC 5322 comment.
fn comment_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '(' | ')' | '\\') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_header_is_rewritten_in_place() {
        let mut m = b"Return-Path: <a@b>\r\nDelivered-To: alice@example.test\r\nSubject: x\r\ndelivered-to: bob@example.test\r\n\r\nDelivered-To: in the body\r\n".to_vec();
        rewrite_header(&mut m, b"Received: by us\r\n");
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "Received: by us\r\nX-Original-Delivered-To: alice@example.test\r\nSubject: x\r\nX-Original-Delivered-To: bob@example.test\r\n\r\nDelivered-To: in the body\r\n"
        );
    }

    #[test]
    fn a_message_with_room_is_not_reallocated() {
        let mut m = Vec::with_capacity(1000 + TRACE_ROOM);
        m.extend_from_slice(b"Subject: x\r\n\r\n");
        m.extend_from_slice(&[b'a'; 1000 - 14]);
        let before = m.as_ptr();
        rewrite_header(&mut m, &[b'R'; 200]);
        assert_eq!(m.as_ptr(), before);
        assert_eq!(m.len(), 1200);
    }

    #[test]
    fn comments_cannot_be_broken_out_of() {
        assert_eq!(comment_safe("fam(ily)\\\r\n"), "fam_ily____");
    }

    #[test]
    fn keep_on_server_and_delete_after_days() {
        let mut a = Account {
            name: "a".into(),
            host: "h".into(),
            port: 110,
            tls: TlsMode::None,
            tls_ca_file: None,
            tls_verify: true,
            username: "u".into(),
            password: PasswordSource::None,
            interval: Duration::from_secs(200),
            deliver_to: None,
            rules: Rules {
                headers: Vec::new(),
                only_listed_headers: false,
                default_user: String::new(),
            },
            keep_on_server: false,
            delete_after: Duration::ZERO,
            max_message_size: 1000,
            timeout: Duration::from_secs(60),
            report_failure_after: Duration::from_secs(86_400),
        };
        assert!(a.delete_now(0, 0));
        a.keep_on_server = true;
        assert!(!a.delete_now(0, 10 * 86_400));
        a.delete_after = Duration::from_secs(3 * 86_400);
        assert!(!a.delete_now(1000, 1000 + 3 * 86_400 - 1));
        assert!(a.delete_now(1000, 1000 + 3 * 86_400));
    }

    #[test]
    fn the_report_reads_well() {
        let r = Report {
            delivered: 3,
            duplicates: 1,
            deleted: 4,
            too_large: 1,
            no_uidl: true,
            ..Report::default()
        };
        assert_eq!(
            r.to_string(),
            "3 delivered, 1 duplicate, 4 deleted, 0 kept on the server, 1 too large (no UIDL: duplicates known by Message-ID)"
        );
    }
}
