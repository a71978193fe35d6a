//! One IMAP session as a state machine that does no network I/O: bytes in
//! ([`Session::feed`]), bytes out ([`Session::output`]), and [`Action`]s for what the
//! network loop must do (check a login, start TLS, wait in IDLE, close). It works on
//! the mail store directly (blocking file system calls: run it off the async threads).
//!
//! States (RFC 3501 §3): not authenticated, authenticated, selected, logout. imap-next
//! parses commands and runs the literal, AUTHENTICATE and IDLE flows; every client byte
//! passes the [`InputGuard`] first. Responses are written here; the ones imap-next makes
//! (continuation requests) are taken from it in order.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use imap_next::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_next::imap_types::command::{
    Command, CommandBody, FetchModifier, SelectParameter, StoreModifier,
};
use imap_next::imap_types::core::{Tag, Text, Vec1};
use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_next::imap_types::flag::{Flag as ImapFlag, StoreResponse, StoreType};
use imap_next::imap_types::mailbox::Mailbox as ImapMailbox;
use imap_next::imap_types::response::{
    Capability, Code, CommandContinuationRequest, Greeting, GreetingKind, Status,
};
use imap_next::imap_types::sequence::SequenceSet;
use imap_next::imap_types::status::StatusDataItemName;
use imap_next::server::{Event, Options, Server};
use imap_next::{Interrupt, Io, State as _};
use qs_directory::Secret;
use qs_mailstore::{Flag, Flags, FolderName, Mailbox, MessageEntry, StoreError, UidIndex};
use qs_service::spool::{Spool, SpoolDir};
use tracing::{debug, info, warn};

use crate::encode::{number, string, uid_set};
use crate::fetch::{self, Item};
use crate::input::{InputGuard, InputLimits, Step, Verdict};
use crate::list_extended::{self, ListRequest};
use crate::list_pattern::ListPattern;
use crate::message::SearchText;
use crate::mutf7;
use crate::search::{self, Candidate, Context, Query, SearchError, SearchLimits};
use crate::selected::Selected;
use crate::store::{Shared, Subscriptions, letter_of, write_flags};

/// Output is handed to the network once this much is waiting.
pub const FLUSH_AT: usize = 64 * 1024;

/// The session's settings.
#[derive(Clone)]
pub struct Settings {
    /// `hostname`, for the greeting.
    pub hostname: String,
    /// `data_dir`: mailboxes are under `<data_dir>/mail/`.
    pub data_dir: PathBuf,
    /// The connection is encrypted.
    pub tls_active: bool,
    /// STARTTLS may be offered.
    pub starttls_available: bool,
    /// Logins are allowed without TLS.
    pub allow_plaintext_auth: bool,
    /// The input limits.
    pub input: InputLimits,
    /// Protocol errors before the session is closed.
    pub max_errors: u32,
    /// Failed logins before the session is closed.
    pub max_login_failures: u32,
    /// Where APPEND literals over its threshold go while they arrive.
    pub spool: Arc<SpoolDir>,
    /// The longest LIST or LSUB reference and pattern together, in bytes.
    pub max_list_pattern: usize,
    /// How big a SEARCH may be.
    pub search: SearchLimits,
    /// What the sessions of this process share.
    pub shared: Arc<Shared>,
}

/// What the network loop must do next.
#[derive(Debug)]
pub enum Action {
    /// Write the output, then read more input and [`Session::feed`] it.
    NeedInput,
    /// Write the output (there is a lot of it), then call [`Session::progress`] again.
    Flush,
    /// Check these credentials, then call [`Session::login_done`].
    Login(Credentials),
    /// Write the output, start TLS, and go on with [`Session::after_starttls`].
    StartTls,
    /// In IDLE: write the output, then wait for input or for a change of
    /// [`Session::idle_folder`] (then call [`Session::idle_changed`]).
    Idle,
    /// Write the output and close the connection.
    Close,
}

/// A login to check.
pub struct Credentials {
    /// The login name.
    pub login: String,
    /// The password.
    pub password: Secret,
    /// `LOGIN` or `PLAIN`, for the log.
    pub mechanism: &'static str,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .field("password", &"<redacted>")
            .field("mechanism", &self.mechanism)
            .finish()
    }
}

/// How a login check came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginResult {
    /// The credentials are good: the user's canonical address.
    Accepted(String),
    /// Wrong login or password.
    Rejected,
    /// Too many failures from the client's address.
    Blocked,
    /// The directory could not be read.
    TemporaryFailure,
    /// The user has as many sessions as allowed.
    TooManySessions,
}

/// What the session waits for.
enum Waiting {
    Nothing,
    /// A login is to be checked (the credentials are taken once).
    Login {
        tag: Tag<'static>,
        authenticate: bool,
        credentials: Option<Credentials>,
    },
    /// AUTHENTICATE PLAIN, waiting for the client's response.
    AuthData {
        tag: Tag<'static>,
    },
    /// IDLE.
    Idle {
        tag: Tag<'static>,
    },
}

/// A logged-in user.
struct User {
    address: String,
    mailbox: Mailbox,
}

/// A FETCH answered a few messages at a time.
struct FetchJob {
    tag: Tag<'static>,
    items: Vec<Item>,
    /// UID FETCH (a FETCH may ask for the UID item too: that does not make it one).
    uid: bool,
    targets: Vec<usize>,
    next: usize,
    missing: usize,
    /// The first BINARY item that could not be decoded: the command ends in
    /// `NO [UNKNOWN-CTE]` (RFC 3516).
    undecodable: Option<String>,
}

/// One session.
pub struct Session {
    settings: Settings,
    server: Server,
    guard: InputGuard,
    /// Input not yet given to the guard.
    pending: Vec<u8>,
    out: Vec<u8>,
    user: Option<User>,
    selected: Option<Selected>,
    waiting: Waiting,
    job: Option<FetchJob>,
    errors: u32,
    login_failures: u32,
    closing: bool,
    starttls: bool,
    logged_out: bool,
    /// A big command went through the parser: start a fresh one (its buffers keep
    /// the size of the biggest command) once it is idle.
    fresh_parser: bool,
    /// The message literal of the APPEND being read, which the parser never sees
    /// (it gets an empty literal); `Err` says why it could not be kept.
    spooled: Option<Result<Spool, String>>,
    /// CONDSTORE is on for the rest of the session (RFC 7162 §3.1: ENABLE, or the
    /// first command that uses it).
    condstore: bool,
    /// QRESYNC is on (ENABLE QRESYNC, which turns CONDSTORE on too).
    qresync: bool,
}

mod auth;
mod folders;
mod messages;

fn options(settings: &Settings) -> Options {
    let mut options = Options::default();
    options.crlf_relaxed = true;
    options.max_literal_size = settings.input.max_literal;
    options.max_command_size = settings
        .input
        .max_literal
        .saturating_add(u32::try_from(settings.input.max_line).unwrap_or(u32::MAX))
        .saturating_add(1 << 20);
    options
}

/// A parser that sends no greeting (after STARTTLS, or to forget a half command).
fn silent_server(settings: &Settings) -> Server {
    let greeting = Greeting {
        kind: GreetingKind::Ok,
        code: None,
        text: Text::unvalidated("x"),
    };
    let mut server = Server::new(options(settings), greeting);
    // Take the greeting out again.
    while let Err(Interrupt::Io(Io::Output(_))) | Ok(Event::GreetingSent { .. }) = server.next() {}
    server
}

impl Session {
    /// A session at the start of a connection; the greeting is the first output.
    pub fn new(settings: Settings) -> Session {
        let caps = capabilities(&settings, false);
        let code = Vec1::try_from(
            caps.iter()
                .filter_map(|c| Capability::try_from(c.clone()).ok())
                .collect::<Vec<_>>(),
        )
        .ok()
        .map(Code::Capability);
        let greeting = Greeting {
            kind: GreetingKind::Ok,
            code,
            text: Text::unvalidated("Quicksilver IMAP ready"),
        };
        let server = Server::new(options(&settings), greeting);
        Session::with_server(settings, server)
    }

    /// The session that goes on after STARTTLS: nothing of the old one survives, and
    /// no greeting is sent (RFC 3501 §6.2.1).
    pub fn after_starttls(settings: Settings) -> Session {
        let server = silent_server(&settings);
        Session::with_server(settings, server)
    }

    fn with_server(settings: Settings, server: Server) -> Session {
        Session {
            guard: InputGuard::with_spooling(
                settings.input,
                u32::try_from(settings.spool.threshold()).unwrap_or(u32::MAX),
            ),
            settings,
            server,
            pending: Vec::new(),
            out: Vec::new(),
            user: None,
            selected: None,
            waiting: Waiting::Nothing,
            job: None,
            errors: 0,
            login_failures: 0,
            closing: false,
            starttls: false,
            logged_out: false,
            fresh_parser: false,
            spooled: None,
            condstore: false,
            qresync: false,
        }
    }

    /// Bytes from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The output waiting to be written; the caller writes and clears it.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// The logged-in user's address.
    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.address.as_str())
    }

    /// The folder to watch during IDLE.
    pub fn idle_folder(&self) -> Option<PathBuf> {
        match self.waiting {
            Waiting::Idle { .. } => self.selected.as_ref().map(|s| s.folder.path().to_owned()),
            _ => None,
        }
    }

    /// Failed logins in this session.
    pub fn login_failures(&self) -> u32 {
        self.login_failures
    }

    /// True when the client said LOGOUT.
    pub fn logged_out(&self) -> bool {
        self.logged_out
    }

    /// Runs until the network loop has something to do.
    pub fn progress(&mut self) -> Action {
        loop {
            if self.closing {
                return Action::Close;
            }
            if self.starttls {
                return Action::StartTls;
            }
            if self.out.len() >= FLUSH_AT {
                return Action::Flush;
            }
            if self.job.is_some() {
                self.run_job();
                continue;
            }
            if let Waiting::Login { credentials, .. } = &mut self.waiting {
                return match credentials.take() {
                    Some(c) => Action::Login(c),
                    // Asked already; the caller owes login_done.
                    None => Action::NeedInput,
                };
            }
            match self.server.next() {
                Ok(Event::GreetingSent { .. } | Event::ResponseSent { .. }) => {}
                Ok(Event::CommandReceived { command }) => self.command(command),
                Ok(Event::CommandAuthenticateReceived {
                    command_authenticate,
                }) => self.authenticate(
                    command_authenticate.tag,
                    command_authenticate.mechanism,
                    command_authenticate
                        .initial_response
                        .map(|r| r.declassify().to_vec()),
                ),
                Ok(Event::AuthenticateDataReceived { authenticate_data }) => {
                    self.authenticate_data(authenticate_data)
                }
                Ok(Event::IdleCommandReceived { tag }) => self.idle(tag),
                Ok(Event::IdleDoneReceived) => self.idle_done(),
                Err(Interrupt::Io(Io::Output(bytes))) => self.out.extend_from_slice(&bytes),
                Err(Interrupt::Io(Io::NeedMoreInput)) => {
                    if self.pending.is_empty() {
                        if self.fresh_parser
                            && matches!(self.waiting, Waiting::Nothing)
                            && self.guard.between_commands()
                        {
                            // Between commands the parser holds nothing but capacity.
                            self.server = silent_server(&self.settings);
                            self.fresh_parser = false;
                        }
                        self.pending.shrink_to(qs_service::connection::READ_CHUNK);
                        return match self.waiting {
                            Waiting::Idle { .. } => Action::Idle,
                            _ => Action::NeedInput,
                        };
                    }
                    self.admit();
                }
                Err(Interrupt::Error(e)) => self.parse_error(e),
            }
        }
    }

    /// Gives pending input to the guard, and what passes to the parser.
    fn admit(&mut self) {
        let logged_in = self.user.is_some();
        let (used, steps) = self.guard.admit_spooling(&self.pending, logged_in);
        let chunk: Vec<u8> = self.pending.drain(..used).collect();
        for step in steps {
            let verdict = match step {
                Step::Verdict(verdict) => verdict,
                Step::PassBytes(bytes) => {
                    self.server.enqueue_input(&bytes);
                    continue;
                }
                Step::SpoolStart { length } => {
                    debug!(length, "APPEND literal spooled");
                    self.spooled = Some(match self.spooled {
                        // Only the message may be this large.
                        Some(_) => Err("more than one large literal".into()),
                        // Known to be over the threshold: straight to a file.
                        None => Ok(self.settings.spool.file_spool()),
                    });
                    continue;
                }
                Step::Spool(range) => {
                    if let Some(Ok(spool)) = &mut self.spooled
                        && let Err(e) = spool.append(&chunk[range])
                    {
                        self.spooled = Some(Err(format!("cannot spool the message: {e}")));
                    }
                    continue;
                }
            };
            match verdict {
                Verdict::Pass(range) => self.server.enqueue_input(&chunk[range]),
                Verdict::RefuseLiteral { tag, reset } => {
                    if reset {
                        self.server = silent_server(&self.settings);
                    }
                    self.spooled = None;
                    self.refuse_literal(tag, "NO", "literal too big");
                }
                Verdict::DroppedCommand { tag, reset } => {
                    if reset {
                        self.server = silent_server(&self.settings);
                    }
                    self.spooled = None;
                    self.refuse_literal(tag, "BAD", "non-synchronizing literal too big");
                }
                Verdict::Fatal(reason) => {
                    info!(reason, "closing the connection");
                    self.bye(reason);
                    self.closing = true;
                    return;
                }
            }
        }
    }

    fn refuse_literal(&mut self, tag: Option<String>, kind: &str, text: &str) {
        if kind == "BAD" {
            self.count_error();
        }
        match tag {
            Some(tag) => {
                self.out
                    .extend_from_slice(format!("{tag} {kind} [TOOBIG] {text}\r\n").as_bytes());
            }
            None => {
                self.bye(text);
                self.closing = true;
            }
        }
    }

    fn parse_error(&mut self, e: imap_next::server::Error) {
        use imap_next::server::Error;
        // A spooled literal belonged to the command that failed.
        self.spooled = None;
        if let Error::MalformedMessage { discarded_bytes } = &e
            && let Some((tag, search)) =
                search::deep::parse(discarded_bytes.declassify(), self.settings.search)
            && !matches!(search, Err(SearchError::Syntax))
        {
            // Nested deeper than imap-codec follows, or over the limits.
            self.deep_search(tag, search);
            return;
        }
        if let Error::MalformedMessage { discarded_bytes } = &e
            && let Some((tag, list)) = list_extended::parse(discarded_bytes.declassify())
        {
            // LIST-EXTENDED and LIST-STATUS, which imap-codec does not read.
            self.extended_list(tag, list);
            return;
        }
        let (discarded, text) = match &e {
            Error::ExpectedCrlfGotLf { discarded_bytes } => (discarded_bytes, "expected CRLF"),
            Error::MalformedMessage { discarded_bytes } => (discarded_bytes, "syntax error"),
            Error::LiteralTooLong { discarded_bytes } => (discarded_bytes, "literal too big"),
            Error::CommandTooLong { discarded_bytes } => (discarded_bytes, "command too long"),
        };
        let bytes = discarded.declassify();
        debug!(error = %e, "bad input");
        let tag = bytes
            .iter()
            .position(|&b| b == b' ')
            .map(|end| &bytes[..end])
            .and_then(|t| Tag::try_from(t).ok())
            .map(|t| t.as_ref().to_owned());
        if !matches!(e, Error::LiteralTooLong { .. }) {
            // imap-next answered the too-long literal itself.
            match (&self.waiting, tag) {
                (Waiting::AuthData { tag }, _) => {
                    let tag = tag.clone();
                    self.finish_authenticate(&tag, false, "bad response");
                }
                (_, Some(tag)) => self.tagged(&tag, "BAD", None, text),
                (_, None) => self
                    .out
                    .extend_from_slice(format!("* BAD {text}\r\n").as_bytes()),
            }
        }
        self.count_error();
    }

    /// A SEARCH that only [`search::deep`] could read.
    fn deep_search(
        &mut self,
        tag: Tag<'static>,
        search: Result<search::deep::DeepSearch, SearchError>,
    ) {
        debug!(command = "SEARCH", "command (deeply nested)");
        if self.user.is_none() {
            self.bad(&tag, "log in first");
        } else if self.selected.is_none() {
            self.bad(&tag, "select a folder first");
        } else {
            match search {
                Ok(s) => self.search(tag, s.charset, s.query, s.uid),
                Err(e) => self.search_refused(&tag, &e),
            }
        }
    }

    /// A LIST that only [`list_extended`] could read.
    fn extended_list(&mut self, tag: Tag<'static>, list: Result<ListRequest, &'static str>) {
        debug!(command = "LIST", "command (extended)");
        match list {
            _ if self.user.is_none() => self.bad(&tag, "log in first"),
            Ok(request) => self.list(tag, &request, false),
            Err(text) => self.bad(&tag, text),
        }
    }

    /// A SEARCH over the limits gets `NO [LIMIT]` (RFC 5530) naming the limit.
    fn search_refused(&mut self, tag: &Tag<'_>, e: &SearchError) {
        match e {
            SearchError::Syntax => self.bad(tag, "syntax error"),
            e => {
                info!(user = self.user(), reason = %e, "SEARCH refused");
                self.no(tag, Some("LIMIT"), &e.to_string());
            }
        }
    }

    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.settings.max_errors {
            info!(
                errors = self.errors,
                "too many errors: closing the connection"
            );
            self.bye("too many errors");
            self.closing = true;
        }
    }

    /// Writes `* BYE`.
    pub fn bye(&mut self, text: &str) {
        self.out
            .extend_from_slice(format!("* BYE {text}\r\n").as_bytes());
    }

    /// The server is stopping: says BYE and asks to close.
    pub fn shutdown(&mut self) {
        self.bye("server shutting down, please reconnect");
        self.closing = true;
    }

    /// No command for too long: says BYE.
    pub fn autologout(&mut self) {
        self.bye("autologout: idle for too long");
        self.closing = true;
    }

    fn tagged(&mut self, tag: &str, kind: &str, code: Option<&str>, text: &str) {
        self.out.extend_from_slice(tag.as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(kind.as_bytes());
        self.out.push(b' ');
        if let Some(code) = code {
            self.out.push(b'[');
            self.out.extend_from_slice(code.as_bytes());
            self.out.extend_from_slice(b"] ");
        }
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn ok(&mut self, tag: &Tag<'_>, code: Option<&str>, text: &str) {
        self.tagged(tag.as_ref(), "OK", code, text);
    }

    fn no(&mut self, tag: &Tag<'_>, code: Option<&str>, text: &str) {
        self.tagged(tag.as_ref(), "NO", code, text);
    }

    fn bad(&mut self, tag: &Tag<'_>, text: &str) {
        self.tagged(tag.as_ref(), "BAD", None, text);
        self.count_error();
    }

    /// A store failure as a tagged NO; the detail goes to the log.
    fn store_failed(&mut self, tag: &Tag<'_>, what: &str, e: &StoreError) {
        if e.is_not_found() {
            self.no(tag, Some("NONEXISTENT"), "no such folder or message");
        } else {
            warn!(user = self.user(), error = %e, "{what} failed");
            self.no(
                tag,
                Some("SERVERBUG"),
                "the server could not do that; try again",
            );
        }
    }

    /// Turns CONDSTORE on (and QRESYNC with `qresync`) for the session and the
    /// selected folder.
    fn enable_condstore(&mut self, qresync: bool) {
        self.condstore = true;
        self.qresync |= qresync;
        if let Some(sel) = self.selected.as_mut() {
            sel.condstore = true;
            sel.qresync = self.qresync;
        }
    }

    fn login_allowed(&self) -> bool {
        self.settings.tls_active || self.settings.allow_plaintext_auth
    }

    fn command(&mut self, command: Command<'static>) {
        let tag = command.tag;
        let name = command.body.name();
        // Only an APPEND has its literal spooled; any other command drops it.
        let spooled = self.spooled.take();
        debug!(command = name, "command");
        let logged_in = self.user.is_some();
        let selected = self.selected.is_some();
        match command.body {
            CommandBody::Capability => {
                let caps = capabilities(&self.settings, logged_in);
                self.out
                    .extend_from_slice(format!("* CAPABILITY {}\r\n", caps.join(" ")).as_bytes());
                self.ok(&tag, None, "CAPABILITY completed");
            }
            CommandBody::Noop | CommandBody::Check => {
                if self.sync(true) {
                    self.ok(&tag, None, &format!("{name} completed"));
                }
            }
            CommandBody::Logout => {
                self.bye("logging out");
                self.ok(&tag, None, "LOGOUT completed");
                self.logged_out = true;
                self.closing = true;
            }
            CommandBody::Id { .. } => {
                self.out.extend_from_slice(
                    format!(
                        "* ID (\"name\" \"Quicksilver\" \"version\" \"{}\")\r\n",
                        env!("CARGO_PKG_VERSION")
                    )
                    .as_bytes(),
                );
                self.ok(&tag, None, "ID completed");
            }
            CommandBody::StartTLS if !logged_in => {
                if self.settings.tls_active || !self.settings.starttls_available {
                    self.bad(&tag, "STARTTLS is not available here");
                } else {
                    self.ok(&tag, None, "begin TLS negotiation now");
                    // The network loop takes over; nothing buffered survives.
                    self.starttls = true;
                }
            }
            CommandBody::Login { username, password } if !logged_in => {
                if !self.login_allowed() {
                    self.no(&tag, Some("PRIVACYREQUIRED"), "log in over TLS (STARTTLS)");
                    return;
                }
                let login = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = Secret::new(password.declassify().as_ref().to_vec());
                self.waiting = Waiting::Login {
                    tag,
                    authenticate: false,
                    credentials: Some(Credentials {
                        login,
                        password,
                        mechanism: "LOGIN",
                    }),
                };
            }
            CommandBody::StartTLS | CommandBody::Login { .. } => {
                self.bad(&tag, "already logged in");
            }
            _ if !logged_in => self.bad(&tag, "log in first"),
            CommandBody::Enable { capabilities } => {
                let mut enabled = Vec::new();
                for cap in capabilities.as_ref() {
                    let name = cap.to_string().to_ascii_uppercase();
                    match name.as_str() {
                        "CONDSTORE" => self.enable_condstore(false),
                        "QRESYNC" => self.enable_condstore(true),
                        _ => continue,
                    }
                    if !enabled.contains(&name) {
                        enabled.push(name);
                    }
                }
                let mut line = b"* ENABLED".to_vec();
                for name in enabled {
                    line.push(b' ');
                    line.extend_from_slice(name.as_bytes());
                }
                line.extend_from_slice(b"\r\n");
                self.out.extend_from_slice(&line);
                self.ok(&tag, None, "ENABLE completed");
            }
            CommandBody::Namespace => {
                self.out
                    .extend_from_slice(b"* NAMESPACE ((\"\" \".\")) NIL NIL\r\n");
                self.ok(&tag, None, "NAMESPACE completed");
            }
            CommandBody::Select {
                mailbox,
                parameters,
            } => self.select(tag, &mailbox, false, &parameters),
            CommandBody::Examine {
                mailbox,
                parameters,
            } => self.select(tag, &mailbox, true, &parameters),
            CommandBody::Create { mailbox } => self.create(tag, &mailbox),
            CommandBody::Delete { mailbox } => self.delete(tag, &mailbox),
            CommandBody::Rename { from, to } => self.rename(tag, &from, &to),
            CommandBody::Subscribe { mailbox } => self.subscribe(tag, &mailbox, true),
            CommandBody::Unsubscribe { mailbox } => self.subscribe(tag, &mailbox, false),
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => self.list(
                tag,
                &ListRequest::basic(&reference, &mailbox_wildcard),
                false,
            ),
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => self.list(
                tag,
                &ListRequest::basic(&reference, &mailbox_wildcard),
                true,
            ),
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(tag, &mailbox, &item_names),
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                self.fresh_parser = true;
                self.append(tag, &mailbox, &flags, date, message, spooled)
            }
            _ if !selected => self.bad(&tag, "select a folder first"),
            CommandBody::Close => {
                if let Some(sel) = &self.selected
                    && !sel.read_only
                {
                    let mut sink = Vec::new();
                    if let Err(e) = self.expunge_deleted(None, &mut sink) {
                        warn!(error = %e, "CLOSE could not expunge");
                    }
                }
                self.selected = None;
                self.ok(&tag, None, "CLOSE completed");
            }
            CommandBody::Unselect => {
                self.selected = None;
                self.ok(&tag, None, "UNSELECT completed");
            }
            CommandBody::Expunge => self.expunge(tag, None),
            CommandBody::ExpungeUid { sequence_set } => self.expunge(tag, Some(sequence_set)),
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => {
                let charset = charset.map(|c| c.as_ref().to_owned());
                match Query::from_criteria(criteria.as_ref(), self.settings.search) {
                    Ok(query) => self.search(tag, charset, query, uid),
                    Err(e) => self.search_refused(&tag, &e),
                }
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } => match fetch::items(&macro_or_item_names, uid) {
                Ok(items) => self.fetch(tag, &sequence_set, items, uid, &modifiers),
                Err(text) => self.bad(&tag, text),
            },
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } => {
                let unchanged_since = modifiers
                    .iter()
                    .map(|StoreModifier::UnchangedSince(n)| *n)
                    .next();
                self.store(
                    tag,
                    &sequence_set,
                    kind,
                    response,
                    &flags,
                    uid,
                    unchanged_since,
                );
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(tag, &sequence_set, &mailbox, uid, false),
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(tag, &sequence_set, &mailbox, uid, true),
            _ => self.bad(&tag, "command not supported"),
        }
    }
}

/// The capabilities to announce.
pub fn capabilities(settings: &Settings, logged_in: bool) -> Vec<String> {
    let mut caps: Vec<String> = vec!["IMAP4rev1".into()];
    if !logged_in {
        if settings.starttls_available && !settings.tls_active {
            caps.push("STARTTLS".into());
        }
        if settings.tls_active || settings.allow_plaintext_auth {
            caps.push("AUTH=PLAIN".into());
        } else {
            caps.push("LOGINDISABLED".into());
        }
    }
    caps.extend(
        [
            "SASL-IR",
            "LITERAL+",
            "ID",
            "ENABLE",
            "IDLE",
            "NAMESPACE",
            "UNSELECT",
            "UIDPLUS",
            "MOVE",
            "CHILDREN",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "SPECIAL-USE",
            "BINARY",
            "CONDSTORE",
            "QRESYNC",
        ]
        .map(String::from),
    );
    caps.push(format!("APPENDLIMIT={}", settings.input.max_literal));
    caps
}

#[cfg(test)]
mod tests;
