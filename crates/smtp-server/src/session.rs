//! One SMTP session as a state machine without I/O: bytes in, [`Action`]s out.
//!
//! The tokio task around it ([`crate::server`]) moves bytes, applies timeouts,
//! and performs the actions that need the outside world: checking a password,
//! queueing a message, the TLS handshake. The session waits for the answer
//! ([`Session::verified`], [`Session::enqueued`]) before it reads the next
//! command, so pipelined commands are answered in order.
//!
//! Commands are framed here (CRLF only, at most 512 octets, RFC 5321 §4.5.3.1.4)
//! and parsed by smtp-proto; bodies are read by [`crate::body`]. Every answer is
//! a [`Reply`] value (the checks hand theirs in as values too), turned into
//! bytes in one place, the session's `send`.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use qs_directory::Secret;
use qs_queue::{ClientError, Reply};
use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, Error as ParseError, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, Request,
};

use qs_service::spool::SpoolDir;

use crate::body::{Body, ChunkReader, DataReader, Flaw, Message};
use crate::checks::{MessageVerdict, SenderVerdict, SpfCheck};

/// The longest command line, CRLF included.
pub const MAX_COMMAND_LINE: usize = 512;

/// Which listener the session came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Port-25 role: mail for local domains from anyone.
    Mx,
    /// Submission (587): AUTH required, STARTTLS offered.
    Submission,
    /// Submission over implicit TLS (465): AUTH required.
    Submissions,
}

impl ListenerKind {
    /// The config key naming these listeners.
    pub fn config_key(self) -> &'static str {
        match self {
            ListenerKind::Mx => "smtp_server.listen",
            ListenerKind::Submission => "smtp_server.submission",
            ListenerKind::Submissions => "smtp_server.submissions",
        }
    }
}

/// What a recipient address is to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientCheck {
    /// A local user whose own INBOX gets the mail: accepted from anyone. The
    /// user's canonical address is what core-queue's local delivery writes in
    /// `Delivered-To` and checks for loops.
    Mailbox(String),
    /// Another local address (an alias, a list, a user who forwards without
    /// keeping a copy): accepted from anyone.
    Local,
    /// Another domain: relayed only for authenticated or trusted clients.
    Remote,
    /// A local domain, but nobody has this address.
    Unknown,
}

/// The directory questions a session asks; answered synchronously.
pub trait Policy: Send + Sync {
    /// What `address` (already syntax-checked) is.
    fn recipient(&self, address: &str) -> RecipientCheck;
    /// Whether the authenticated `user` may use `address` as sender.
    fn may_send_as(&self, user: &str, address: &str) -> bool;
    /// The postmaster's address, for `RCPT TO:<Postmaster>` without a domain.
    fn postmaster(&self) -> Option<String>;
}

/// The settings a session needs, from `[smtp_server]`.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our host name.
    pub hostname: String,
    /// Largest message.
    pub max_message_size: usize,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Recipients past `max_recipients` refused in one transaction before
    /// each further one counts as an error.
    pub max_recipient_overshoot: usize,
    /// Errors before 421.
    pub max_errors: u64,
    /// AUTH without TLS.
    pub allow_plaintext_auth: bool,
    /// Authenticated users send only as their own addresses.
    pub enforce_sender: bool,
    /// Where message bodies go while they arrive.
    pub spool: Arc<SpoolDir>,
    /// Checked clients' senders are checked at MAIL FROM
    /// ([`Action::CheckSender`]): DNS blacklists, SPF.
    pub check_sender: bool,
    /// Checked clients' messages are checked at their end
    /// ([`Action::CheckMessage`]): DKIM, ARC, DMARC.
    pub check_message: bool,
    /// Checked clients' recipients are greylisted ([`Action::CheckRecipient`]).
    pub greylisting: bool,
}

/// The client, as the listener saw it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address.
    pub ip: IpAddr,
    /// Inside `relay_networks`.
    pub may_relay: bool,
    /// A port-25 client whose mail is checked (not in `relay_networks` nor
    /// `unchecked_networks`); an authenticated session is not checked either.
    pub checked: bool,
}

/// A message ready to be queued.
#[derive(Debug)]
pub struct Envelope {
    /// `MAIL FROM` ("" for `<>`).
    pub sender: String,
    /// Accepted `RCPT TO`s.
    pub recipients: Vec<String>,
    /// The message, our Received field on top.
    pub message: Message,
    /// The authenticated user, if any.
    pub auth_user: Option<String>,
    /// What the checks of the message need (the SPF result of MAIL FROM),
    /// when it is checked.
    pub checks: Option<SpfCheck>,
}

/// What the session asks of the I/O layer.
#[derive(Debug)]
pub enum Action {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Check a login; answer with [`Session::verified`].
    Verify {
        /// The login (an address).
        login: String,
        /// The password.
        password: Secret,
    },
    /// Queue a message durably; answer with [`Session::enqueued`].
    Enqueue(Envelope),
    /// Check the sender of a checked client (DNS blacklists, SPF); answer
    /// with [`Session::sender_checked`].
    CheckSender {
        /// The EHLO or HELO name.
        helo: String,
        /// `MAIL FROM` ("" for `<>`).
        sender: String,
    },
    /// Check a recipient of a checked client (greylisting); answer with
    /// [`Session::recipient_checked`].
    CheckRecipient {
        /// `MAIL FROM` ("" for `<>`).
        sender: String,
        /// The recipient.
        recipient: String,
    },
    /// Check a message of a checked client (DKIM, ARC, DMARC); answer with
    /// [`Session::message_checked`], which gives the envelope back.
    CheckMessage(Envelope),
    /// Start TLS now; a fresh session continues on the encrypted stream and
    /// every byte received before the handshake is thrown away.
    StartTls,
    /// Close the connection (after sending what was queued).
    Close,
}

/// How a password check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The right password: the user's canonical address.
    Accepted(String),
    /// A wrong password, an unknown login, or an address refused for too
    /// many failures.
    Refused,
    /// The directory could not be read.
    Unavailable,
}

/// What the session waits for.
#[derive(Debug)]
enum Waiting {
    Auth,
    Enqueue,
    /// The checks of MAIL FROM, then the sender and its SMTPUTF8 flag.
    Sender {
        address: String,
        smtputf8: bool,
    },
    /// The checks of a recipient, then its address and mailbox.
    Recipient {
        address: String,
        mailbox: Option<String>,
    },
    Message,
}

/// Where the session stands.
#[derive(Debug)]
enum State {
    /// Reading commands.
    Command,
    /// Throwing away an over-long command line up to its LF.
    DiscardLine,
    /// Reading a DATA body.
    Data(DataReader),
    /// Reading a BDAT chunk of `remaining` octets.
    Bdat { remaining: usize, last: bool },
    /// AUTH PLAIN waits for the response after `334 `.
    AuthPlain,
    /// AUTH LOGIN waits for the user name.
    AuthLoginUser,
    /// AUTH LOGIN waits for the password.
    AuthLoginPassword { login: String },
    /// Waiting for the I/O layer.
    Waiting(Waiting),
    /// Done: nothing more is read.
    Closed,
}

/// The mail transaction in progress.
#[derive(Debug, Default)]
struct Transaction {
    sender: Option<String>,
    /// The SPF result of MAIL FROM, for the checks at the end of the message.
    spf: Option<SpfCheck>,
    recipients: Vec<String>,
    /// The canonical addresses of the local mailboxes among the recipients,
    /// checked against the message's Delivered-To fields at its end.
    mailboxes: Vec<String>,
    /// Recipients refused for being over `max_recipients`.
    overshoot: usize,
    smtputf8: bool,
    chunks: Option<ChunkReader>,
    /// Why BDAT was refused: the chunk is read and dropped, then this is the answer.
    chunks_refused: Option<Reply>,
}

/// One SMTP session.
#[derive(Debug)]
pub struct Session<P: Policy> {
    config: Arc<SessionConfig>,
    policy: Arc<P>,
    kind: ListenerKind,
    peer: Peer,
    tls: bool,
    id: String,
    input: Vec<u8>,
    state: State,
    helo: Option<String>,
    esmtp: bool,
    user: Option<String>,
    tx: Transaction,
    errors: u64,
    messages: u64,
    out: Vec<u8>,
    actions: VecDeque<Action>,
}

impl<P: Policy> Session<P> {
    /// A session on `kind`, with `tls` already in place or not.
    pub fn new(
        config: Arc<SessionConfig>,
        policy: Arc<P>,
        kind: ListenerKind,
        peer: Peer,
        tls: bool,
        id: String,
    ) -> Self {
        Session {
            config,
            policy,
            kind,
            peer,
            tls,
            id,
            input: Vec::new(),
            state: State::Command,
            helo: None,
            esmtp: false,
            user: None,
            tx: Transaction::default(),
            errors: 0,
            messages: 0,
            out: Vec::new(),
            actions: VecDeque::new(),
        }
    }

    /// The greeting, sent when the connection opens (not after STARTTLS).
    pub fn greeting(&self) -> Vec<u8> {
        Reply::new(
            220,
            "",
            &format!("{} ESMTP Quicksilver", self.config.hostname),
        )
        .to_bytes()
    }

    /// The client's address.
    pub fn peer_ip(&self) -> IpAddr {
        self.peer.ip
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether the session ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed) && self.actions.is_empty()
    }

    /// Whether a command is being read (not a body, not waiting): the point
    /// at which a graceful stop may close the connection.
    pub fn between_transactions(&self) -> bool {
        matches!(self.state, State::Command) && self.tx.sender.is_none() && self.input.is_empty()
    }

    /// Bytes from the client.
    pub fn receive(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::Closed) {
            self.input.extend_from_slice(bytes);
        }
    }

    /// The next thing to do, or `None` when more input is needed.
    pub fn next_action(&mut self) -> Option<Action> {
        loop {
            if let Some(action) = self.actions.pop_front() {
                return Some(action);
            }
            let waiting = matches!(self.state, State::Waiting(_) | State::Closed);
            if waiting || !self.step() {
                return (!self.out.is_empty()).then(|| Action::Send(std::mem::take(&mut self.out)));
            }
        }
    }

    /// The answer to [`Action::Verify`].
    pub fn verified(&mut self, outcome: AuthOutcome) {
        let State::Waiting(Waiting::Auth) = std::mem::replace(&mut self.state, State::Command)
        else {
            return;
        };
        match outcome {
            AuthOutcome::Accepted(address) => {
                tracing::info!(user = %address, "authenticated");
                self.user = Some(address);
                self.reply(235, "2.7.0", "Authentication successful");
            }
            // The check has logged why (never the login as typed: it may
            // be a password put in the wrong field).
            AuthOutcome::Refused => {
                self.error(535, "5.7.8", "Authentication credentials invalid");
            }
            // RFC 4954: the server cannot check now; the client may retry.
            AuthOutcome::Unavailable => {
                self.reply(454, "4.7.0", "Temporary authentication failure");
            }
        }
    }

    /// The answer to [`Action::Enqueue`]: the queue id, or the reply for the
    /// client when the queue did not take the message ([`queue_refusal`]).
    pub fn enqueued(&mut self, result: Result<String, Reply>) {
        if !matches!(self.state, State::Waiting(Waiting::Enqueue)) {
            return;
        }
        self.state = State::Command;
        match result {
            Ok(id) => {
                self.messages += 1;
                self.reply(250, "2.0.0", &format!("OK queued as {id}"));
            }
            Err(refusal) => self.send(refusal),
        }
        self.tx = Transaction::default();
    }

    /// The answer to [`Action::CheckSender`].
    pub fn sender_checked(&mut self, verdict: SenderVerdict) {
        let State::Waiting(Waiting::Sender { .. }) = self.state else {
            return;
        };
        let State::Waiting(Waiting::Sender { address, smtputf8 }) =
            std::mem::replace(&mut self.state, State::Command)
        else {
            return;
        };
        match verdict {
            SenderVerdict::Accept(spf) => self.start_transaction(address, smtputf8, spf),
            SenderVerdict::Refuse(reply) => self.refuse(reply),
        }
    }

    /// The answer to [`Action::CheckRecipient`]: `None` lets the recipient
    /// in, a reply refuses it.
    pub fn recipient_checked(&mut self, refusal: Option<Reply>) {
        let State::Waiting(Waiting::Recipient { .. }) = self.state else {
            return;
        };
        let State::Waiting(Waiting::Recipient { address, mailbox }) =
            std::mem::replace(&mut self.state, State::Command)
        else {
            return;
        };
        match refusal {
            None => self.add_recipient(address, mailbox),
            // A greylisted recipient is the normal first answer to a
            // stranger, not the client's error.
            Some(reply) => self.send(reply),
        }
    }

    /// The answer to [`Action::CheckMessage`], with the envelope it took.
    pub fn message_checked(&mut self, mut envelope: Envelope, verdict: MessageVerdict) {
        if !matches!(self.state, State::Waiting(Waiting::Message)) {
            return;
        }
        match verdict {
            MessageVerdict::Accept { fields } => {
                envelope.message.prepend_fields(&fields);
                self.state = State::Waiting(Waiting::Enqueue);
                self.emit(Action::Enqueue(envelope));
            }
            MessageVerdict::Refuse(reply) => {
                self.state = State::Command;
                self.tx = Transaction::default();
                self.refuse(reply);
            }
        }
    }

    /// Writes a reply: the one place where the session's replies become
    /// bytes for the client.
    fn send(&mut self, reply: Reply) {
        reply.write_to(&mut self.out);
    }

    fn reply(&mut self, code: u16, enhanced: &str, text: &str) {
        self.send(Reply::new(code, enhanced, text));
    }

    /// A refusal (from the checks, or of a body), counted towards the error
    /// limit like [`Session::error`].
    fn refuse(&mut self, reply: Reply) {
        self.send(reply);
        self.count_error();
    }

    /// Whether this session's mail is checked: a checked client that has
    /// not authenticated, on the port-25 role.
    fn is_checked(&self) -> bool {
        self.kind == ListenerKind::Mx && self.peer.checked && self.user.is_none()
    }

    /// A 4xx/5xx reply that counts towards the error limit.
    fn error(&mut self, code: u16, enhanced: &str, text: &str) {
        self.refuse(Reply::new(code, enhanced, text));
    }

    /// Counts an error just answered; past `max_errors` the session ends.
    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            self.reply(421, "4.7.0", "Too many errors, closing the connection");
            self.close();
        }
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.input.clear();
        if !self.out.is_empty() {
            self.actions
                .push_back(Action::Send(std::mem::take(&mut self.out)));
        }
        self.actions.push_back(Action::Close);
    }

    /// Queues an action after the replies written so far.
    fn emit(&mut self, action: Action) {
        if !self.out.is_empty() {
            self.actions
                .push_back(Action::Send(std::mem::take(&mut self.out)));
        }
        self.actions.push_back(action);
    }

    /// Processes one unit of input; false when more input is needed.
    fn step(&mut self) -> bool {
        match std::mem::replace(&mut self.state, State::Command) {
            State::Command => self.step_command(),
            State::DiscardLine => match self.input.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    self.input.drain(..=pos);
                    true
                }
                None => {
                    self.input.clear();
                    self.state = State::DiscardLine;
                    false
                }
            },
            State::Data(mut reader) => match reader.feed(&self.input) {
                Some((body, used)) => {
                    self.input.drain(..used);
                    self.end_of_body(body);
                    true
                }
                None => {
                    self.input.clear();
                    self.state = State::Data(reader);
                    false
                }
            },
            State::Bdat { remaining, last } => self.step_bdat(remaining, last),
            auth @ (State::AuthPlain | State::AuthLoginUser | State::AuthLoginPassword { .. }) => {
                self.step_auth(auth)
            }
            waiting @ (State::Waiting(_) | State::Closed) => {
                self.state = waiting;
                false
            }
        }
    }

    /// One line of an AUTH exchange; `*` cancels it.
    fn step_auth(&mut self, auth: State) -> bool {
        let line = match self.take_line() {
            None => {
                if matches!(self.state, State::Command) {
                    self.state = auth;
                }
                return false;
            }
            Some(None) => return true, // refused line: answered, back to commands
            Some(Some(line)) => line,
        };
        if line == b"*" {
            self.error(501, "5.0.0", "Authentication cancelled");
            return true;
        }
        match auth {
            State::AuthPlain => self.auth_plain(&line),
            State::AuthLoginUser => match decode64(&line) {
                Some(login) => {
                    self.reply(334, "", "UGFzc3dvcmQ6");
                    self.state = State::AuthLoginPassword {
                        login: String::from_utf8_lossy(&login).into_owned(),
                    };
                }
                None => self.error(501, "5.5.2", "Invalid base64 data"),
            },
            State::AuthLoginPassword { login } => match decode64(&line) {
                Some(password) => self.verify(login, Secret::new(password)),
                None => self.error(501, "5.5.2", "Invalid base64 data"),
            },
            _ => {}
        }
        true
    }

    /// The next complete command line without its CRLF: `None` when more
    /// input is needed, `Some(None)` when the line was refused (the reply is
    /// written).
    fn take_line(&mut self) -> Option<Option<Vec<u8>>> {
        let Some(lf) = self.input.iter().position(|&b| b == b'\n') else {
            if self.input.len() > MAX_COMMAND_LINE {
                self.input.clear();
                self.state = State::DiscardLine;
                self.error(500, "5.5.2", "Line too long");
            }
            return None;
        };
        let line: Vec<u8> = self.input.drain(..=lf).collect();
        if line.len() > MAX_COMMAND_LINE {
            self.error(500, "5.5.2", "Line too long");
            return Some(None);
        }
        let text = &line[..line.len() - 1];
        let Some(text) = text.strip_suffix(b"\r") else {
            self.error(500, "5.5.2", "Bare LF received: line ends must be CRLF");
            return Some(None);
        };
        if text.contains(&b'\r') || text.contains(&0) {
            self.error(
                500,
                "5.5.2",
                "Bare CR or NUL received: line ends must be CRLF",
            );
            return Some(None);
        }
        Some(Some(text.to_vec()))
    }

    fn step_command(&mut self) -> bool {
        let Some(line) = self.take_line() else {
            return false;
        };
        let Some(mut line) = line else {
            return true;
        };
        // RFC 5321 §4.1.1.3: "RCPT TO:<Postmaster>" has no domain, which the
        // parser refuses; it must be accepted.
        if line.len() >= 20 && line[..20].eq_ignore_ascii_case(b"RCPT TO:<Postmaster>") {
            self.rcpt("postmaster".to_string());
            return true;
        }
        // RFC 3207 §4: STARTTLS takes no parameters; smtp-proto ignores them.
        if let Some(rest) = strip_verb(&line, b"STARTTLS")
            && rest.iter().any(|b| *b != b' ')
        {
            self.error(501, "5.5.4", "Syntax: STARTTLS (no parameters)");
            return true;
        }
        line.extend_from_slice(b"\r\n");
        let parsed = Request::parse(&mut line.iter()).map(|r| r.into_owned());
        match parsed {
            Ok(request) => self.command(request),
            Err(e) => self.parse_error(e),
        }
        true
    }

    fn parse_error(&mut self, e: ParseError) {
        match e {
            ParseError::UnknownCommand => self.error(500, "5.5.1", "Unknown command"),
            ParseError::InvalidSenderAddress => {
                self.error(553, "5.1.7", "Malformed sender address")
            }
            ParseError::InvalidRecipientAddress => {
                self.error(501, "5.1.3", "Malformed recipient address")
            }
            ParseError::SyntaxError { syntax } => {
                self.error(501, "5.5.4", &format!("Syntax: {syntax}"))
            }
            ParseError::InvalidParameter { param } => {
                self.error(501, "5.5.4", &format!("Invalid parameter {param}"))
            }
            ParseError::UnsupportedParameter { param } => {
                let param: String = param
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(40)
                    .collect();
                self.error(555, "5.5.4", &format!("Unsupported parameter {param}"))
            }
            _ => self.error(500, "5.5.2", "Syntax error"),
        }
    }

    fn command(&mut self, request: Request<String>) {
        match request {
            Request::Ehlo { host } => {
                self.helo = Some(host);
                self.esmtp = true;
                self.tx = Transaction::default();
                self.ehlo_reply();
            }
            Request::Helo { host } => {
                self.helo = Some(host);
                self.esmtp = false;
                self.tx = Transaction::default();
                let text = self.config.hostname.clone();
                self.reply(250, "", &text);
            }
            Request::StartTls => {
                if self.tls {
                    self.error(503, "5.5.1", "TLS is already active");
                } else {
                    self.reply(220, "2.0.0", "Ready to start TLS");
                    // CVE-2011-0411: nothing sent before the handshake survives it.
                    self.input.clear();
                    self.state = State::Closed;
                    self.emit(Action::StartTls);
                }
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response),
            Request::Mail { from } => {
                let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
                let _eight_bit = from.flags & MAIL_BODY_8BITMIME != 0;
                // RET=FULL/HDRS (RFC 3461) is parsed but not kept: DSN is not
                // offered, and a report returns the header only. From an
                // unauthenticated port-25 client RET=FULL must stay HDRS
                // even if DSN is offered one day: its sender may be forged,
                // and the body would carry its own text to that address.
                self.mail(from.address, from.size, smtputf8)
            }
            Request::Rcpt { to } => self.rcpt(to.address),
            Request::Data => {
                if self.ready_for_body() {
                    self.reply(354, "", "Start mail input; end with <CRLF>.<CRLF>");
                    let spool = self.config.spool.spool();
                    self.state = State::Data(DataReader::new(self.config.max_message_size, spool));
                }
            }
            Request::Bdat {
                chunk_size,
                is_last,
            } => {
                if self.tx.chunks.is_none()
                    && let Some(refusal) = self.body_refusal()
                {
                    // Refused: the chunk is still read and dropped, then answered.
                    self.tx.chunks_refused = Some(refusal);
                    self.tx.chunks = Some(ChunkReader::new(0, self.config.spool.spool()));
                    self.state = State::Bdat {
                        remaining: chunk_size,
                        last: is_last,
                    };
                    return;
                }
                if self.tx.chunks.is_none() {
                    let spool = self.config.spool.spool();
                    self.tx.chunks = Some(ChunkReader::new(self.config.max_message_size, spool));
                }
                self.state = State::Bdat {
                    remaining: chunk_size,
                    last: is_last,
                };
            }
            Request::Rset => {
                self.tx = Transaction::default();
                self.reply(250, "2.0.0", "OK");
            }
            Request::Noop { .. } => self.reply(250, "2.0.0", "OK"),
            Request::Vrfy { .. } => self.reply(
                252,
                "2.5.2",
                "Cannot VRFY user, but will accept the message and attempt delivery",
            ),
            Request::Expn { .. } => self.error(502, "5.5.1", "EXPN is not available"),
            Request::Help { .. } => self.reply(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT STARTTLS AUTH",
            ),
            Request::Quit => {
                let text = format!("{} closing connection", self.config.hostname);
                self.reply(221, "2.0.0", &text);
                self.close();
            }
            _ => self.error(502, "5.5.1", "Command not implemented"),
        }
    }

    fn ehlo_reply(&mut self) {
        let mut lines = vec![format!(
            "{} greets {}",
            self.config.hostname,
            self.helo.as_deref().unwrap_or("")
        )];
        lines.push("PIPELINING".into());
        lines.push(format!("SIZE {}", self.config.max_message_size));
        lines.push("8BITMIME".into());
        lines.push("ENHANCEDSTATUSCODES".into());
        lines.push("SMTPUTF8".into());
        lines.push("CHUNKING".into());
        if !self.tls {
            lines.push("STARTTLS".into());
        }
        if self.auth_allowed() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.push("HELP".into());
        self.send(Reply::multiline(250, &lines));
    }

    fn auth_allowed(&self) -> bool {
        self.tls || self.config.allow_plaintext_auth
    }

    fn auth(&mut self, mechanism: u64, initial: String) {
        if self.helo.is_none() {
            return self.error(503, "5.5.1", "Send EHLO first");
        }
        if self.user.is_some() {
            return self.error(503, "5.5.1", "Already authenticated");
        }
        if self.tx.sender.is_some() {
            return self.error(
                503,
                "5.5.1",
                "AUTH is not allowed during a mail transaction",
            );
        }
        if !self.auth_allowed() {
            return self.error(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            );
        }
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.reply(334, "", "");
                self.state = State::AuthPlain;
            }
            AUTH_PLAIN => {
                let response = if initial == "=" {
                    String::new()
                } else {
                    initial
                };
                self.auth_plain(response.as_bytes());
            }
            AUTH_LOGIN if initial.is_empty() => {
                self.reply(334, "", "VXNlcm5hbWU6");
                self.state = State::AuthLoginUser;
            }
            AUTH_LOGIN => match decode64(initial.as_bytes()) {
                Some(login) => {
                    self.reply(334, "", "UGFzc3dvcmQ6");
                    self.state = State::AuthLoginPassword {
                        login: String::from_utf8_lossy(&login).into_owned(),
                    };
                }
                None => self.error(501, "5.5.2", "Invalid base64 data"),
            },
            _ => self.error(504, "5.5.4", "Unrecognized authentication mechanism"),
        }
    }

    fn auth_plain(&mut self, response: &[u8]) {
        let Some(decoded) = decode64(response) else {
            return self.error(501, "5.5.2", "Invalid base64 data");
        };
        let decoded = Secret::new(decoded);
        let parts: Vec<&[u8]> = decoded.expose().splitn(3, |&b| b == 0).collect();
        let [authzid, authcid, password] = parts.as_slice() else {
            return self.error(501, "5.5.2", "Malformed PLAIN response");
        };
        if !authzid.is_empty() && authzid != authcid {
            return self.error(535, "5.7.8", "Authentication credentials invalid");
        }
        let login = String::from_utf8_lossy(authcid).into_owned();
        let password = Secret::new(password.to_vec());
        self.verify(login, password);
    }

    fn verify(&mut self, login: String, password: Secret) {
        self.state = State::Waiting(Waiting::Auth);
        self.emit(Action::Verify { login, password });
    }

    fn mail(&mut self, address: String, size: usize, smtputf8: bool) {
        if self.helo.is_none() {
            return self.error(503, "5.5.1", "Send EHLO or HELO first");
        }
        if self.tx.sender.is_some() {
            return self.error(503, "5.5.1", "Nested MAIL command");
        }
        if self.kind != ListenerKind::Mx && self.user.is_none() {
            return self.error(530, "5.7.0", "Authentication required");
        }
        if size > self.config.max_message_size {
            let limit = self.config.max_message_size;
            return self.error(
                552,
                "5.3.4",
                &format!("Message size exceeds the limit of {limit} bytes"),
            );
        }
        if !address.is_empty() {
            if !address.is_ascii() && !smtputf8 {
                return self.error(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
            }
            if qs_directory::parse_address(&address).is_err() {
                return self.error(553, "5.1.7", "Malformed sender address");
            }
            if let Some(user) = &self.user
                && self.config.enforce_sender
                && !self.policy.may_send_as(user, &address)
            {
                let text = format!("<{address}>: not one of your addresses");
                return self.error(553, "5.7.1", &text);
            }
        }
        if self.config.check_sender && self.is_checked() {
            let helo = self.helo.clone().unwrap_or_default();
            self.state = State::Waiting(Waiting::Sender {
                address: address.clone(),
                smtputf8,
            });
            self.emit(Action::CheckSender {
                helo,
                sender: address,
            });
            return;
        }
        self.start_transaction(address, smtputf8, None);
    }

    fn start_transaction(&mut self, address: String, smtputf8: bool, spf: Option<SpfCheck>) {
        self.tx = Transaction {
            sender: Some(address),
            spf,
            smtputf8,
            ..Transaction::default()
        };
        self.reply(250, "2.1.0", "OK");
    }

    fn rcpt(&mut self, address: String) {
        if self.tx.sender.is_none() {
            return self.error(503, "5.5.1", "Need MAIL before RCPT");
        }
        if self.tx.recipients.len() >= self.config.max_recipients {
            // RFC 5321 §4.5.3.1.10: a client told 452 for too many recipients
            // sends the others in a new transaction, so this is no error;
            // only a client that goes on far past the limit is counted.
            if self.tx.overshoot < self.config.max_recipient_overshoot {
                self.tx.overshoot += 1;
                return self.reply(452, "4.5.3", "Too many recipients");
            }
            return self.error(452, "4.5.3", "Too many recipients");
        }
        // RFC 5321 §4.5.1: <Postmaster> without a domain must be accepted.
        let address = if address.eq_ignore_ascii_case("postmaster") {
            match self.policy.postmaster() {
                Some(p) => p,
                None => return self.error(550, "5.1.1", "No postmaster here"),
            }
        } else {
            address
        };
        if !address.is_ascii() && !self.tx.smtputf8 {
            return self.error(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
        }
        if qs_directory::parse_address(&address).is_err() {
            return self.error(501, "5.1.3", "Malformed recipient address");
        }
        let mailbox = match self.policy.recipient(&address) {
            RecipientCheck::Mailbox(mailbox) => Some(mailbox),
            RecipientCheck::Local => None,
            RecipientCheck::Unknown => {
                let text = format!("<{address}>: no such user here");
                return self.error(550, "5.1.1", &text);
            }
            RecipientCheck::Remote => {
                if self.user.is_none() && !self.peer.may_relay {
                    let text = format!("<{address}>: relay access denied");
                    return self.error(554, "5.7.1", &text);
                }
                None
            }
        };
        let known = self
            .tx
            .recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&address));
        if !known && self.config.greylisting && self.is_checked() {
            let sender = self.tx.sender.clone().unwrap_or_default();
            self.state = State::Waiting(Waiting::Recipient {
                address: address.clone(),
                mailbox,
            });
            self.emit(Action::CheckRecipient {
                sender,
                recipient: address,
            });
            return;
        }
        self.add_recipient(address, mailbox);
    }

    fn add_recipient(&mut self, address: String, mailbox: Option<String>) {
        if !self
            .tx
            .recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&address))
        {
            self.tx.recipients.push(address);
        }
        if let Some(mailbox) = mailbox
            && !self.tx.mailboxes.contains(&mailbox)
        {
            self.tx.mailboxes.push(mailbox);
        }
        self.reply(250, "2.1.5", "OK");
    }

    /// Why a body may not start now, if it may not.
    fn body_refusal(&self) -> Option<Reply> {
        if self.tx.sender.is_none() {
            Some(Reply::new(503, "5.5.1", "Need MAIL before DATA or BDAT"))
        } else if self.tx.recipients.is_empty() {
            Some(Reply::new(554, "5.5.1", "No valid recipients"))
        } else {
            None
        }
    }

    /// Checks that a body may start; answers the refusal if not.
    fn ready_for_body(&mut self) -> bool {
        match self.body_refusal() {
            Some(refusal) => {
                self.refuse(refusal);
                false
            }
            None => true,
        }
    }

    fn step_bdat(&mut self, remaining: usize, last: bool) -> bool {
        let take = remaining.min(self.input.len());
        let chunk: Vec<u8> = self.input.drain(..take).collect();
        if let Some(reader) = self.tx.chunks.as_mut() {
            reader.add(&chunk);
        }
        let remaining = remaining - take;
        if remaining > 0 {
            self.state = State::Bdat { remaining, last };
            return false;
        }
        if let Some(refusal) = self.tx.chunks_refused.clone() {
            if last {
                self.tx = Transaction::default();
            } else {
                self.tx.chunks = Some(ChunkReader::new(0, self.config.spool.spool()));
            }
            self.refuse(refusal);
            return true;
        }
        if !last {
            let size = self.tx.chunks.as_ref().map_or(0, ChunkReader::size);
            self.reply(250, "2.0.0", &format!("{size} octets received"));
            return true;
        }
        let body = match self.tx.chunks.take() {
            Some(reader) => reader.finish(),
            None => Body::Refused(Flaw::BadLineEnding),
        };
        self.end_of_body(body);
        true
    }

    fn end_of_body(&mut self, body: Body) {
        let message = match body {
            Body::Complete(message) => message,
            Body::Refused(flaw) => {
                self.tx = Transaction::default();
                return match flaw {
                    Flaw::BadLineEnding => self.error(
                        554,
                        "5.6.0",
                        "Message refused: bare CR, LF or NUL in the message (lines must end in CRLF)",
                    ),
                    Flaw::LineTooLong => self.error(554, "5.6.0", "Message refused: a line is longer than 1000 octets"),
                    Flaw::TooBig => {
                        let limit = self.config.max_message_size;
                        self.error(552, "5.3.4", &format!("Message size exceeds the limit of {limit} bytes"))
                    }
                    // Not the client's fault: no error counted.
                    Flaw::Unstored => self.reply(451, "4.3.0", "Temporary failure storing the message, try again later"),
                };
            }
        };
        if message.is_empty() {
            self.tx = Transaction::default();
            return self.error(554, "5.6.0", "Message refused: it is empty");
        }
        let header = match crate::body::header_block(&message) {
            Ok(header) => header,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the spooled message");
                self.tx = Transaction::default();
                return self.reply(
                    451,
                    "4.3.0",
                    "Temporary failure storing the message, try again later",
                );
            }
        };
        // The loop checks of core-queue's local delivery, made here for the
        // mailboxes the session knows of: a loop refused now is the client's
        // to report, not bounced by us later to a sender who may be forged.
        let trace = qs_queue::message::LoopTrace::read(&header);
        if trace.too_many_received() {
            self.tx = Transaction::default();
            return self.error(554, "5.4.6", "Too many Received header fields: mail loop");
        }
        if let Some(mailbox) = self.tx.mailboxes.iter().find(|m| trace.delivered_to(m)) {
            tracing::info!(%mailbox, "refused: a Delivered-To field names a recipient's mailbox");
            self.tx = Transaction::default();
            return self.error(
                554,
                "5.4.6",
                "Mail loop: the message was already delivered to a recipient",
            );
        }
        let sender = self.tx.sender.clone().unwrap_or_default();
        let recipients = std::mem::take(&mut self.tx.recipients);
        let received = self.received_field(&recipients);
        // Fields that speak for this host are ours to write: any that came
        // from outside is forged, and would be believed by the reader or by
        // local delivery (RFC 8601 §5).
        let message = match crate::checks::without_claimed_fields(&header, &self.config.hostname) {
            Some(kept) => Message::with_header(&[received], &kept, message, header.len()),
            None => Message::new(&[received], message),
        };
        let envelope = Envelope {
            sender,
            recipients,
            message,
            auth_user: self.user.clone(),
            checks: self.tx.spf.take(),
        };
        if self.config.check_message && self.is_checked() && envelope.checks.is_some() {
            self.state = State::Waiting(Waiting::Message);
            self.emit(Action::CheckMessage(envelope));
        } else {
            self.state = State::Waiting(Waiting::Enqueue);
            self.emit(Action::Enqueue(envelope));
        }
    }

    /// Our Received field (RFC 5321 §4.4; the protocol names of RFC 3848).
    fn received_field(&self, recipients: &[String]) -> String {
        let protocol = match (self.esmtp, self.tls, self.user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let helo: String = self
            .helo
            .as_deref()
            .unwrap_or("unknown")
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '(' && *c != ')')
            .take(255)
            .collect();
        let for_clause = match recipients {
            [one] => format!("\r\n\tfor <{one}>"),
            _ => String::new(),
        };
        format!(
            "Received: from {helo} ([{}])\r\n\tby {} (Quicksilver) with {protocol} id {}.{}{for_clause};\r\n\t{}",
            self.peer.ip,
            self.config.hostname,
            self.id,
            self.messages + 1,
            qs_queue::message::rfc5322_date(qs_queue::unix_now())
        )
    }
}

/// The answer at the end of DATA when the queue did not take a message: 5xx
/// when it never will (a body over its frame limit, 552 5.3.4; an envelope or
/// frame core-queue refuses, 554 5.3.0), else 451 4.3.0, so that the client
/// keeps the message and tries again: an unreachable queue, or one that
/// failed in a way nobody classified, never loses mail.
pub fn queue_refusal(error: &ClientError) -> Reply {
    if error.is_too_large() {
        Reply::new(552, "5.3.4", "Message too big for the mail queue")
    } else if error.is_permanent() {
        Reply::new(554, "5.3.0", "The mail queue refused the message")
    } else {
        Reply::new(
            451,
            "4.3.0",
            "Queue temporarily unavailable, try again later",
        )
    }
}

/// What follows `verb` (any case) and a space in `line`, when the line is that
/// command.
fn strip_verb<'a>(line: &'a [u8], verb: &[u8]) -> Option<&'a [u8]> {
    let head = line.get(..verb.len())?;
    let rest = &line[verb.len()..];
    (head.eq_ignore_ascii_case(verb) && (rest.is_empty() || rest[0] == b' ')).then_some(rest)
}

fn decode64(bytes: &[u8]) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(bytes).ok()
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
