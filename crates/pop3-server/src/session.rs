//! The POP3 session as a state machine without I/O.
//!
//! Bytes from the client go in with [`Session::feed`]; [`Session::poll`] hands
//! out what to do next, as [`Action`]s: send a reply, check credentials, send a
//! message, start TLS, apply the changes of the UPDATE state, close. Work that
//! needs the directory or the disk is done by the caller, which reports the
//! result back ([`Session::login_done`], [`Session::transfer_failed`],
//! [`Session::update_done`]); until then the session reads no further command.
//!
//! The states are those of RFC 1939: [`State::Authorization`],
//! [`State::Transaction`] and [`State::Update`]; every transition happens in
//! this file. STLS ends the session: the caller builds a new one over TLS with
//! [`Session::after_stls`], and whatever the client sent after STLS, still in
//! this session's buffer, is dropped with it (RFC 2595 §4, CVE-2011-0411).

use std::collections::VecDeque;

use qs_directory::{Pop3Options, Secret};
use qs_mailstore::{Flag, MessageEntry};

use crate::command::{Command, Line, LineBuffer, MAX_LINE, ParseError, parse};
use crate::reply::{Code, Reply};

/// What a session knows of its connection and its limits.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The host name for the greeting.
    pub hostname: String,
    /// The connection is encrypted (implicit TLS, or after STLS).
    pub tls_active: bool,
    /// STLS can be offered (a plain listener with a certificate).
    pub stls_available: bool,
    /// `[pop3_server] allow_plaintext_auth`: logins without TLS.
    pub allow_plaintext_auth: bool,
    /// Failed logins after which the connection is closed.
    pub max_login_failures: u32,
    /// Protocol errors (unknown commands, bad syntax, commands in the wrong
    /// state, over-long lines) after which the connection is closed.
    pub max_errors: u32,
}

/// What the caller should do next.
#[derive(Debug)]
pub enum Action {
    /// Send this reply.
    Send(Reply),
    /// Check these credentials and open the maildrop, then call
    /// [`Session::login_done`].
    Login(Credentials),
    /// Send a message: the head reply, the encoded message
    /// ([`crate::encode::Encoder::transfer`]), and its terminator. If the message
    /// cannot be read, send nothing of it and call [`Session::transfer_failed`].
    Transfer(Transfer),
    /// Send what is queued, then the TLS handshake; then serve the connection
    /// with a new session from [`Session::after_stls`]. This session is over.
    StartTls,
    /// The client said QUIT: apply these changes (UPDATE state), then call
    /// [`Session::update_done`].
    Update(UpdatePlan),
    /// Send what is queued and close the connection.
    Close,
}

/// A login attempt.
#[derive(Debug)]
pub struct Credentials {
    /// The login (an address), as the client gave it.
    pub login: String,
    /// The password.
    pub password: Secret,
    /// How it came: `"USER"` or `"AUTH PLAIN"`, for the log.
    pub mechanism: &'static str,
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Its number in this session.
    pub number: usize,
    /// The reply that precedes it.
    pub head: Reply,
    /// Where it is.
    pub entry: MessageEntry,
    /// TOP: the number of body lines; `None` for RETR.
    pub top: Option<u64>,
}

/// The changes of the UPDATE state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdatePlan {
    /// Messages deleted with DELE.
    pub remove: Vec<MessageEntry>,
    /// Messages retrieved with RETR and kept: mark them `\Seen`.
    pub mark_seen: Vec<MessageEntry>,
}

impl UpdatePlan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.mark_seen.is_empty()
    }
}

/// What became of the UPDATE state's changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateReport {
    /// Deleted messages that could not be removed.
    pub not_removed: usize,
}

/// One message of the maildrop, as listed when the session began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Where it is, its identity and flags.
    pub entry: MessageEntry,
    /// The octets RETR sends, stuffing excluded.
    pub size: u64,
    /// Its unique id for UIDL.
    pub uidl: String,
}

/// The result of a [`Action::Login`].
#[derive(Debug)]
pub enum LoginOutcome {
    /// Credentials good, maildrop locked and listed.
    Accepted {
        /// The user's canonical address.
        user: String,
        /// The user's POP3 options.
        options: Pop3Options,
        /// The maildrop, already filtered by `only_unread`.
        messages: Vec<MessageInfo>,
    },
    /// Wrong login or password, or a disabled user.
    Rejected,
    /// Too many failures from this client's address lately.
    Blocked,
    /// Another session holds the maildrop.
    InUse,
    /// The maildrop (or the directory) could not be read; try again later.
    TemporaryFailure,
    /// The maildrop can never be opened (an address that cannot be a path).
    PermanentFailure,
}

/// The RFC 1939 states.
#[derive(Debug)]
enum State {
    /// Before login.
    Authorization(Authorization),
    /// Logged in, the maildrop locked.
    Transaction(Transaction),
    /// After QUIT in TRANSACTION: the changes are being applied.
    Update,
}

#[derive(Debug, Default)]
struct Authorization {
    /// The name of an accepted USER command.
    user: Option<String>,
    /// `AUTH PLAIN` without an initial response: the next line is the response.
    awaiting_sasl: bool,
}

#[derive(Debug)]
struct Transaction {
    options: Pop3Options,
    messages: Vec<Slot>,
}

#[derive(Debug)]
struct Slot {
    info: MessageInfo,
    deleted: bool,
    retrieved: bool,
}

/// A POP3 session.
#[derive(Debug)]
pub struct Session {
    settings: Settings,
    state: State,
    input: LineBuffer,
    queue: VecDeque<Action>,
    /// Waiting for the caller's answer to a Login or Update.
    waiting: bool,
    /// No more commands: closed, or handed over to TLS.
    over: bool,
    errors: u32,
    login_failures: u32,
}

impl Session {
    /// A session on a new connection: its first action sends the greeting.
    pub fn new(settings: Settings) -> Session {
        let greeting = Reply::ok(format!("{} POP3 server ready", settings.hostname));
        let mut session = Session::after_stls(settings);
        session.queue.push_back(Action::Send(greeting));
        session
    }

    /// A session over a connection that has just completed STLS: no greeting
    /// (RFC 2595 §4), nothing from before the handshake.
    pub fn after_stls(settings: Settings) -> Session {
        Session {
            settings,
            state: State::Authorization(Authorization::default()),
            input: LineBuffer::new(MAX_LINE),
            queue: VecDeque::new(),
            waiting: false,
            over: false,
            errors: 0,
            login_failures: 0,
        }
    }

    /// Bytes from the client. Take every action with [`Session::poll`] before
    /// feeding more, so the buffer stays small.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !self.over {
            self.input.feed(bytes);
        }
    }

    /// The next thing to do; `None` when more input (or the answer to a Login or
    /// Update) is needed, or the session is over.
    pub fn poll(&mut self) -> Option<Action> {
        loop {
            if let Some(action) = self.queue.pop_front() {
                return Some(action);
            }
            if self.over || self.waiting {
                return None;
            }
            match self.input.next_line()? {
                Line::TooLong => {
                    // An over-long SASL response ends the exchange too.
                    if let State::Authorization(auth) = &mut self.state {
                        auth.awaiting_sasl = false;
                    }
                    self.protocol_error(Reply::err("line too long"));
                }
                Line::Complete(mut line) => {
                    self.line(&line);
                    line.fill(0);
                }
            }
        }
    }

    /// Failed logins so far (the caller's delay grows with it).
    pub fn login_failures(&self) -> u32 {
        self.login_failures
    }

    /// True once the session has nothing more to do.
    pub fn is_over(&self) -> bool {
        self.over && self.queue.is_empty()
    }

    /// True while logged in (TRANSACTION).
    pub fn is_logged_in(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// The result of the last [`Action::Login`].
    pub fn login_done(&mut self, outcome: LoginOutcome) {
        self.waiting = false;
        let reply = match outcome {
            LoginOutcome::Accepted {
                user: _,
                options,
                messages,
            } => {
                let count = messages.len();
                let octets: u64 = messages.iter().map(|m| m.size).sum();
                self.state = State::Transaction(Transaction {
                    options,
                    messages: messages
                        .into_iter()
                        .map(|info| Slot {
                            info,
                            deleted: false,
                            retrieved: false,
                        })
                        .collect(),
                });
                Reply::ok(format!(
                    "maildrop locked and ready, {count} messages ({octets} octets)"
                ))
            }
            LoginOutcome::Rejected => {
                self.login_failures += 1;
                if self.login_failures >= self.settings.max_login_failures {
                    self.close(Reply::err_code(
                        Code::Auth,
                        "authentication failed; too many failures, closing",
                    ));
                    return;
                }
                Reply::err_code(Code::Auth, "authentication failed")
            }
            LoginOutcome::Blocked => {
                self.close(Reply::err_code(
                    Code::SysTemp,
                    "too many failed logins from your address; try again later",
                ));
                return;
            }
            LoginOutcome::InUse => Reply::err_code(
                Code::InUse,
                "the maildrop is in use by another POP3 session",
            ),
            LoginOutcome::TemporaryFailure => Reply::err_code(
                Code::SysTemp,
                "the maildrop cannot be opened now; try again later",
            ),
            LoginOutcome::PermanentFailure => {
                Reply::err_code(Code::SysPerm, "the maildrop cannot be opened")
            }
        };
        self.send(reply);
    }

    /// The message of the last [`Action::Transfer`] could not be read; it is
    /// not counted as retrieved.
    pub fn transfer_failed(&mut self, number: usize) {
        if let State::Transaction(t) = &mut self.state
            && let Some(slot) = number.checked_sub(1).and_then(|i| t.messages.get_mut(i))
        {
            slot.retrieved = false;
        }
        self.send(Reply::err_code(
            Code::SysTemp,
            format!("message {number} cannot be read now"),
        ));
    }

    /// The result of the [`Action::Update`]; the session ends.
    pub fn update_done(&mut self, report: UpdateReport) {
        self.waiting = false;
        if report.not_removed > 0 {
            self.close(Reply::err_code(
                Code::SysTemp,
                "some deleted messages not removed",
            ));
        } else {
            self.close(Reply::ok("signing off"));
        }
    }

    fn line(&mut self, line: &[u8]) {
        if let State::Authorization(auth) = &mut self.state
            && auth.awaiting_sasl
        {
            auth.awaiting_sasl = false;
            self.sasl_response(line);
            return;
        }
        match parse(line) {
            Ok(command) => self.command(command),
            Err(ParseError::Unknown) => self.protocol_error(Reply::err("unknown command")),
            Err(ParseError::Syntax(text)) => self.protocol_error(Reply::err(text)),
        }
    }

    /// Every command, in every state: the one place where states change.
    fn command(&mut self, command: Command) {
        match command {
            Command::Capa => {
                let capabilities = self.capabilities();
                self.send(Reply::Multi("capability list follows".into(), capabilities));
                return;
            }
            Command::Apop => {
                self.protocol_error(Reply::err("APOP is not offered"));
                return;
            }
            _ => {}
        }
        match self.state {
            State::Authorization(_) => self.authorization(command),
            State::Transaction(_) => self.transaction(command),
            // No command is read while the update runs, and the session then ends.
            State::Update => {}
        }
    }

    fn authorization(&mut self, command: Command) {
        let allowed = self.login_allowed();
        let State::Authorization(auth) = &mut self.state else {
            return;
        };
        match command {
            Command::Quit => self.close(Reply::ok("bye")),
            Command::Stls => {
                if self.settings.tls_active {
                    self.protocol_error(Reply::err("TLS is already active"));
                } else if !self.settings.stls_available {
                    self.protocol_error(Reply::err("STLS is not offered here"));
                } else {
                    self.send(Reply::ok("begin TLS negotiation"));
                    self.queue.push_back(Action::StartTls);
                    self.over = true;
                }
            }
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } if !allowed => {
                auth.user = None;
                let reply = Reply::err_code(Code::Auth, self.tls_required_text());
                self.protocol_error(reply);
            }
            Command::User(name) => {
                auth.user = Some(name);
                self.send(Reply::ok("send your password"));
            }
            Command::Pass(password) => match auth.user.take() {
                Some(login) => self.login(Credentials {
                    login,
                    password,
                    mechanism: "USER",
                }),
                None => self.protocol_error(Reply::err("send USER first")),
            },
            Command::Auth { mechanism, initial } => {
                auth.user = None;
                match (mechanism.as_deref(), initial) {
                    (None, _) => self.send(Reply::Multi(
                        "SASL mechanisms follow".into(),
                        vec!["PLAIN".into()],
                    )),
                    (Some("PLAIN"), Some(initial)) => self.sasl_response(initial.expose()),
                    (Some("PLAIN"), None) => {
                        auth.awaiting_sasl = true;
                        self.send(Reply::Continue);
                    }
                    (Some(_), _) => {
                        self.protocol_error(Reply::err("unsupported SASL mechanism"));
                    }
                }
            }
            Command::Stat
            | Command::List(_)
            | Command::Retr(_)
            | Command::Dele(_)
            | Command::Noop
            | Command::Rset
            | Command::Top(..)
            | Command::Uidl(_) => self.protocol_error(Reply::err("log in first")),
            Command::Capa | Command::Apop => {}
        }
    }

    fn transaction(&mut self, command: Command) {
        let State::Transaction(t) = &mut self.state else {
            return;
        };
        let reply = match command {
            Command::Stat => {
                let (count, octets) = t.totals();
                Reply::ok(format!("{count} {octets}"))
            }
            Command::List(None) => {
                let (count, octets) = t.totals();
                let lines = t
                    .live()
                    .map(|(n, slot)| format!("{n} {}", slot.info.size))
                    .collect();
                Reply::Multi(format!("{count} messages ({octets} octets)"), lines)
            }
            Command::List(Some(n)) => match t.get(n) {
                Ok((n, slot)) => Reply::ok(format!("{n} {}", slot.info.size)),
                Err(reply) => reply,
            },
            Command::Uidl(None) => {
                let lines = t
                    .live()
                    .map(|(n, slot)| format!("{n} {}", slot.info.uidl))
                    .collect();
                Reply::Multi("unique-id listing follows".into(), lines)
            }
            Command::Uidl(Some(n)) => match t.get(n) {
                Ok((n, slot)) => Reply::ok(format!("{n} {}", slot.info.uidl)),
                Err(reply) => reply,
            },
            Command::Retr(n) => match t.get(n) {
                Ok((number, _)) => {
                    let slot = &mut t.messages[number - 1];
                    slot.retrieved = true;
                    let transfer = Transfer {
                        number,
                        head: Reply::ok(format!("{} octets", slot.info.size)),
                        entry: slot.info.entry.clone(),
                        top: None,
                    };
                    self.queue.push_back(Action::Transfer(transfer));
                    return;
                }
                Err(reply) => reply,
            },
            Command::Top(n, lines) => match t.get(n) {
                Ok((number, slot)) => {
                    let transfer = Transfer {
                        number,
                        head: Reply::ok("top of message follows"),
                        entry: slot.info.entry.clone(),
                        top: Some(lines),
                    };
                    self.queue.push_back(Action::Transfer(transfer));
                    return;
                }
                Err(reply) => reply,
            },
            Command::Dele(n) => match t.get(n) {
                Ok((number, _)) => {
                    t.messages[number - 1].deleted = true;
                    Reply::ok(format!("message {number} deleted"))
                }
                Err(reply) => reply,
            },
            Command::Noop => Reply::ok(""),
            Command::Rset => {
                for slot in &mut t.messages {
                    slot.deleted = false;
                }
                let (count, octets) = t.totals();
                Reply::ok(format!("maildrop has {count} messages ({octets} octets)"))
            }
            Command::Quit => {
                let plan = t.plan();
                if plan.is_empty() {
                    self.close(Reply::ok("signing off"));
                } else {
                    self.state = State::Update;
                    self.waiting = true;
                    self.queue.push_back(Action::Update(plan));
                }
                return;
            }
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } | Command::Stls => {
                self.protocol_error(Reply::err("already logged in"));
                return;
            }
            Command::Capa | Command::Apop => return,
        };
        self.send(reply);
    }

    /// A base64 AUTH PLAIN response (RFC 4616), from the AUTH line or the next one.
    fn sasl_response(&mut self, response: &[u8]) {
        if response == b"*" {
            self.send(Reply::err("authentication cancelled"));
            return;
        }
        let decoded = if response == b"=" {
            Ok(Vec::new())
        } else {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(response)
        };
        let Ok(decoded) = decoded else {
            self.protocol_error(Reply::err("the response is not valid base64"));
            return;
        };
        let decoded = Secret::new(decoded);
        let mut parts = decoded.expose().splitn(3, |&b| b == 0);
        let (Some(authzid), Some(authcid), Some(password)) =
            (parts.next(), parts.next(), parts.next())
        else {
            self.protocol_error(Reply::err_code(Code::Auth, "malformed PLAIN response"));
            return;
        };
        let Ok(login) = std::str::from_utf8(authcid) else {
            self.protocol_error(Reply::err_code(Code::Auth, "malformed PLAIN response"));
            return;
        };
        if login.is_empty() || password.is_empty() {
            self.protocol_error(Reply::err_code(Code::Auth, "malformed PLAIN response"));
            return;
        }
        if !authzid.is_empty() && authzid != authcid {
            self.send(Reply::err_code(
                Code::Auth,
                "logging in as another user is not allowed",
            ));
            return;
        }
        let credentials = Credentials {
            login: login.to_owned(),
            password: Secret::new(password),
            mechanism: "AUTH PLAIN",
        };
        self.login(credentials);
    }

    fn login(&mut self, credentials: Credentials) {
        self.waiting = true;
        self.queue.push_back(Action::Login(credentials));
    }

    fn login_allowed(&self) -> bool {
        self.settings.tls_active || self.settings.allow_plaintext_auth
    }

    fn tls_required_text(&self) -> &'static str {
        if self.settings.stls_available {
            "login without TLS is not allowed here: use STLS first"
        } else {
            "login without TLS is not allowed here: use the POP3 TLS port"
        }
    }

    /// CAPA (RFC 2449): what can be used now.
    fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
            .into_iter()
            .map(String::from)
            .collect();
        if let State::Authorization(_) = self.state {
            if self.login_allowed() {
                caps.push("USER".into());
                caps.push("SASL PLAIN".into());
            }
            if self.settings.stls_available && !self.settings.tls_active {
                caps.push("STLS".into());
            }
        }
        caps.push("IMPLEMENTATION Quicksilver".into());
        caps
    }

    fn send(&mut self, reply: Reply) {
        self.queue.push_back(Action::Send(reply));
    }

    fn close(&mut self, reply: Reply) {
        self.send(reply);
        self.queue.push_back(Action::Close);
        self.over = true;
    }

    /// A client mistake: the reply, and the end of the session after too many.
    fn protocol_error(&mut self, reply: Reply) {
        self.errors += 1;
        if self.errors >= self.settings.max_errors {
            let Reply::Err(code, text) = reply else {
                self.close(reply);
                return;
            };
            self.close(Reply::Err(
                code,
                format!("{text}; too many errors, closing"),
            ));
        } else {
            self.send(reply);
        }
    }
}

impl Transaction {
    /// Messages not marked deleted, with their numbers.
    fn live(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(_, slot)| !slot.deleted)
            .map(|(i, slot)| (i + 1, slot))
    }

    /// STAT's count and octets: messages not marked deleted.
    fn totals(&self) -> (usize, u64) {
        self.live().fold((0, 0), |(count, octets), (_, slot)| {
            (count + 1, octets + slot.info.size)
        })
    }

    /// Message `n` if it exists and is not deleted, else the reply that says why.
    fn get(&self, n: u64) -> Result<(usize, &Slot), Reply> {
        let number = usize::try_from(n).unwrap_or(usize::MAX);
        match number.checked_sub(1).and_then(|i| self.messages.get(i)) {
            None => Err(Reply::err("no such message")),
            Some(slot) if slot.deleted => {
                Err(Reply::err(format!("message {number} already deleted")))
            }
            Some(slot) => Ok((number, slot)),
        }
    }

    /// What QUIT does: remove the deleted messages (unless the user's DELE is
    /// ignored) and mark retrieved messages that stay as seen.
    fn plan(&self) -> UpdatePlan {
        let mut plan = UpdatePlan::default();
        for slot in &self.messages {
            let removed = slot.deleted && !self.options.ignore_dele;
            if removed {
                plan.remove.push(slot.info.entry.clone());
            } else if slot.retrieved && !slot.info.entry.flags.contains(Flag::Seen) {
                plan.mark_seen.push(slot.info.entry.clone());
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests;
