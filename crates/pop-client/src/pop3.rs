//! The POP3 client protocol without I/O: commands that encode themselves, a
//! decoder for the server's replies (status lines, listings, and message data
//! with dot-unstuffing, fed in pieces of any size), and the login state
//! machine from the greeting to the TRANSACTION state.
//!
//! RFC 1939 (POP3), RFC 2449 (CAPA, response codes), RFC 2595 (STLS),
//! RFC 5034 and RFC 4616 (AUTH PLAIN with an initial response).
//!
//! The login never lowers its guard: with [`TlsMode::StartTls`] a server that
//! does not take STLS is left before any credential is sent, and after the
//! handshake the caller throws away every byte received before it and builds
//! a fresh [`Decoder`] (CVE-2011-0411, seen from the client side).

use std::fmt;

use base64::Engine;
use qs_directory::Secret;

/// Longest status line accepted, CRLF included (RFC 2449 allows 512 octets;
/// servers write longer texts).
pub const MAX_STATUS_LINE: usize = 4096;

/// Largest listing (CAPA, LIST, UIDL) accepted: a million messages' worth.
pub const MAX_LISTING: usize = 64 * 1024 * 1024;

/// What a server sent that a POP3 client cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A status line longer than [`MAX_STATUS_LINE`].
    #[error("a reply line longer than {MAX_STATUS_LINE} octets")]
    LineTooLong,
    /// A status line that starts with neither `+OK`, `-ERR` nor `+`.
    #[error("not a POP3 reply: {0:?}")]
    BadStatus(String),
    /// Multi-line data over the caller's limit.
    #[error("the server sent more than {0} octets")]
    TooLarge(usize),
    /// A LIST or UIDL line that does not parse.
    #[error("malformed listing line: {0:?}")]
    BadListing(String),
}

/// A status line: `+OK`, `-ERR`, or `+` (a SASL challenge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `+OK text`.
    Ok(String),
    /// `-ERR text`.
    Err(String),
    /// `+ challenge` during AUTH.
    Continue(String),
}

impl Status {
    /// True for `+OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Status::Ok(_))
    }

    /// The text after the status indicator.
    pub fn text(&self) -> &str {
        match self {
            Status::Ok(t) | Status::Err(t) | Status::Continue(t) => t,
        }
    }

    /// The RFC 2449 response code (`IN-USE`, `AUTH`, `SYS/TEMP` ...), if any.
    pub fn code(&self) -> Option<&str> {
        let text = self.text();
        let rest = text.strip_prefix('[')?;
        rest.find(']').map(|end| &rest[..end])
    }
}

/// A command to the server. `Debug` never shows a password.
#[derive(Clone)]
#[non_exhaustive]
pub enum Command {
    /// CAPA (RFC 2449).
    Capa,
    /// STLS (RFC 2595).
    Stls,
    /// USER name.
    User(String),
    /// PASS secret.
    Pass(Secret),
    /// AUTH PLAIN with its initial response, already base64 (RFC 5034).
    AuthPlain(Secret),
    /// The response to a SASL challenge, already base64.
    SaslResponse(Secret),
    /// LIST (every message).
    List,
    /// UIDL (every message).
    Uidl,
    /// RETR n.
    Retr(u32),
    /// DELE n.
    Dele(u32),
    /// QUIT.
    Quit,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Capa => f.write_str("CAPA"),
            Command::Stls => f.write_str("STLS"),
            Command::User(name) => write!(f, "USER {name}"),
            Command::Pass(_) => f.write_str("PASS <redacted>"),
            Command::AuthPlain(_) => f.write_str("AUTH PLAIN <redacted>"),
            Command::SaslResponse(_) => f.write_str("<redacted SASL response>"),
            Command::List => f.write_str("LIST"),
            Command::Uidl => f.write_str("UIDL"),
            Command::Retr(n) => write!(f, "RETR {n}"),
            Command::Dele(n) => write!(f, "DELE {n}"),
            Command::Quit => f.write_str("QUIT"),
        }
    }
}

impl Command {
    /// The command line, CRLF included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = match self {
            Command::Capa => b"CAPA".to_vec(),
            Command::Stls => b"STLS".to_vec(),
            Command::User(name) => format!("USER {name}").into_bytes(),
            Command::Pass(secret) => [b"PASS ", secret.expose()].concat(),
            Command::AuthPlain(secret) => [b"AUTH PLAIN ", secret.expose()].concat(),
            Command::SaslResponse(secret) => secret.expose().to_vec(),
            Command::List => b"LIST".to_vec(),
            Command::Uidl => b"UIDL".to_vec(),
            Command::Retr(n) => format!("RETR {n}").into_bytes(),
            Command::Dele(n) => format!("DELE {n}").into_bytes(),
            Command::Quit => b"QUIT".to_vec(),
        };
        out.extend_from_slice(b"\r\n");
        out
    }

    /// True when a `+OK` to this command is followed by lines and a `.`.
    pub fn is_multiline(&self) -> bool {
        matches!(
            self,
            Command::Capa | Command::List | Command::Uidl | Command::Retr(_)
        )
    }
}

/// Where the data decoder stands within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    /// At the start of a line.
    LineStart,
    /// After a '.' at the start of a line: the end, or a stuffed dot.
    Dot,
    /// After ".\r" at the start of a line.
    DotCr,
    /// Inside a line.
    Body,
    /// After a CR inside a line.
    Cr,
}

/// Cuts the server's bytes into status lines and multi-line data.
///
/// Feed it what the connection reads, then ask for what the last command
/// expects: [`Decoder::status`], then [`Decoder::data`] for a multi-line
/// answer. Both return `None` / `false` when more bytes are needed.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
    data: Data,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Decoder {
        Decoder {
            buf: Vec::with_capacity(8192),
            pos: 0,
            data: Data::LineStart,
        }
    }

    /// Adds bytes read from the server.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Forgets everything buffered (after STLS: bytes that arrived before the
    /// handshake must never be read as if they came over TLS). Returns how
    /// many bytes were dropped.
    pub fn discard(&mut self) -> usize {
        let dropped = self.buffered();
        self.buf.clear();
        self.pos = 0;
        self.data = Data::LineStart;
        dropped
    }

    /// The next status line, if a whole one is buffered.
    pub fn status(&mut self) -> Result<Option<Status>, ProtocolError> {
        let pending = &self.buf[self.pos..];
        let Some(lf) = pending.iter().position(|&b| b == b'\n') else {
            if pending.len() >= MAX_STATUS_LINE {
                return Err(ProtocolError::LineTooLong);
            }
            return Ok(None);
        };
        if lf + 1 > MAX_STATUS_LINE {
            return Err(ProtocolError::LineTooLong);
        }
        let line = &pending[..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line).into_owned();
        self.pos += lf + 1;
        parse_status(&text).map(Some)
    }

    /// Decodes multi-line data into `out`: dot-unstuffed, every line ending
    /// in CRLF (a bare LF or CR becomes CRLF), the final `.` line dropped.
    /// Returns true once that final line was read. More than `limit` octets in
    /// `out` is an error, after which the connection cannot be used.
    pub fn data(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<bool, ProtocolError> {
        let mut i = self.pos;
        let buf = &self.buf;
        let end = buf.len();
        let mut finished = false;
        while i < end {
            match self.data {
                Data::LineStart => {
                    if buf[i] == b'.' {
                        self.data = Data::Dot;
                        i += 1;
                    } else {
                        self.data = Data::Body;
                    }
                }
                Data::Dot => match buf[i] {
                    b'\r' => {
                        self.data = Data::DotCr;
                        i += 1;
                    }
                    b'\n' => {
                        // ".\n": a server that forgot its CR ended the data.
                        i += 1;
                        finished = true;
                        break;
                    }
                    // A stuffed dot: the first one goes, the line goes on.
                    _ => self.data = Data::Body,
                },
                Data::DotCr => {
                    if buf[i] == b'\n' {
                        i += 1;
                        finished = true;
                        break;
                    }
                    // ".\r" then something else: a bare CR after a stuffed dot.
                    out.extend_from_slice(b"\r\n");
                    self.data = Data::Body;
                }
                Data::Body => {
                    let run = buf[i..]
                        .iter()
                        .position(|&b| b == b'\r' || b == b'\n')
                        .unwrap_or(end - i);
                    out.extend_from_slice(&buf[i..i + run]);
                    i += run;
                    if i < end {
                        if buf[i] == b'\n' {
                            out.extend_from_slice(b"\r\n");
                            self.data = Data::LineStart;
                        } else {
                            self.data = Data::Cr;
                        }
                        i += 1;
                    }
                }
                Data::Cr => {
                    out.extend_from_slice(b"\r\n");
                    if buf[i] == b'\n' {
                        self.data = Data::LineStart;
                        i += 1;
                    } else {
                        // A bare CR: a line end for us, not a POP3 line start.
                        self.data = Data::Body;
                    }
                }
            }
            if out.len() > limit {
                return Err(ProtocolError::TooLarge(limit));
            }
        }
        self.pos = i;
        if finished {
            self.data = Data::LineStart;
        }
        Ok(finished)
    }

    /// Decodes a listing (CAPA, LIST, UIDL) into its lines; `None` until
    /// the whole listing is buffered. The lines already read stay in `acc`.
    pub fn lines(&mut self, acc: &mut Vec<u8>) -> Result<Option<Vec<String>>, ProtocolError> {
        if !self.data(acc, MAX_LISTING)? {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(acc).into_owned();
        acc.clear();
        Ok(Some(
            text.split("\r\n")
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        ))
    }
}

fn parse_status(text: &str) -> Result<Status, ProtocolError> {
    let (word, rest) = match text.split_once(' ') {
        Some((w, r)) => (w, r),
        None => (text, ""),
    };
    let rest = rest.trim().to_string();
    if word.eq_ignore_ascii_case("+OK") {
        Ok(Status::Ok(rest))
    } else if word.eq_ignore_ascii_case("-ERR") {
        Ok(Status::Err(rest))
    } else if word == "+" {
        Ok(Status::Continue(rest))
    } else {
        let shown: String = text.chars().take(80).collect();
        Err(ProtocolError::BadStatus(shown))
    }
}

/// Parses LIST lines (`n size`).
pub fn parse_list(lines: &[String]) -> Result<Vec<(u32, u64)>, ProtocolError> {
    lines
        .iter()
        .map(|line| {
            let mut words = line.split_ascii_whitespace();
            let n = words.next().and_then(|w| w.parse::<u32>().ok());
            let size = words.next().and_then(|w| w.parse::<u64>().ok());
            match (n, size) {
                (Some(n), Some(size)) if n > 0 => Ok((n, size)),
                _ => Err(ProtocolError::BadListing(line.chars().take(80).collect())),
            }
        })
        .collect()
}

/// Parses UIDL lines (`n unique-id`).
pub fn parse_uidl(lines: &[String]) -> Result<Vec<(u32, String)>, ProtocolError> {
    lines
        .iter()
        .map(|line| {
            let mut words = line.split_ascii_whitespace();
            let n = words.next().and_then(|w| w.parse::<u32>().ok());
            match (n, words.next()) {
                (Some(n), Some(uid)) if n > 0 => Ok((n, uid.to_string())),
                _ => Err(ProtocolError::BadListing(line.chars().take(80).collect())),
            }
        })
        .collect()
}

/// What the server said it can do (RFC 2449 CAPA).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The server answered CAPA; otherwise everything below is unknown.
    pub known: bool,
    /// UIDL.
    pub uidl: bool,
    /// STLS.
    pub stls: bool,
    /// USER/PASS.
    pub user: bool,
    /// SASL mechanisms, upper case.
    pub sasl: Vec<String>,
    /// PIPELINING.
    pub pipelining: bool,
    /// `EXPIRE 0`: the server deletes what was retrieved, whatever the client wants.
    pub expire_now: bool,
}

impl Capabilities {
    /// Reads a CAPA listing.
    pub fn parse(lines: &[String]) -> Capabilities {
        let mut caps = Capabilities {
            known: true,
            ..Capabilities::default()
        };
        for line in lines {
            let mut words = line.split_ascii_whitespace();
            let Some(name) = words.next() else { continue };
            match name.to_ascii_uppercase().as_str() {
                "UIDL" => caps.uidl = true,
                "STLS" => caps.stls = true,
                "USER" => caps.user = true,
                "PIPELINING" => caps.pipelining = true,
                "SASL" => caps.sasl = words.map(str::to_ascii_uppercase).collect(),
                "EXPIRE" => caps.expire_now = words.next() == Some("0"),
                _ => {}
            }
        }
        caps
    }

    /// True when UIDL is worth trying: advertised, or CAPA unknown.
    pub fn may_have_uidl(&self) -> bool {
        self.uidl || !self.known
    }
}

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte.
    Implicit,
    /// STLS, required.
    StartTls,
    /// No TLS.
    None,
}

/// Why a login did not reach the TRANSACTION state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The greeting was not `+OK`.
    #[error("bad greeting: {0}")]
    BadGreeting(String),
    /// STLS was refused; the client does not go on without TLS.
    #[error("the server refused STLS ({0}); not logging in without TLS")]
    StlsRefused(String),
    /// The user name or password was refused.
    #[error("login refused: {0}")]
    Refused(String),
    /// The server answered out of turn.
    #[error("unexpected reply during login: {0}")]
    Unexpected(String),
}

/// The login's states, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoginState {
    Greeting,
    Capa,
    Stls,
    Handshake,
    User,
    Pass,
    AuthPlain { answered: bool },
    Done,
}

/// What the caller does next.
#[derive(Debug)]
pub enum Step {
    /// Send this command, then hand its reply to [`Login::on_reply`].
    Send(Command),
    /// Run the TLS handshake, drop the decoder, call [`Login::tls_ready`].
    StartTls,
    /// In the TRANSACTION state.
    LoggedIn(Capabilities),
    /// Give up; the connection is closed without QUIT.
    Fail(LoginError),
}

/// The login dialogue: greeting, CAPA, STLS when required, then AUTH PLAIN
/// when offered, else USER/PASS.
pub struct Login {
    state: LoginState,
    mode: TlsMode,
    secure: bool,
    username: String,
    password: Secret,
    caps: Capabilities,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("state", &self.state)
            .field("mode", &self.mode)
            .field("secure", &self.secure)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// A login waiting for the greeting (over TLS already for `Implicit`).
    pub fn new(mode: TlsMode, username: &str, password: Secret) -> Login {
        Login {
            state: LoginState::Greeting,
            mode,
            secure: mode == TlsMode::Implicit,
            username: username.to_string(),
            password,
            caps: Capabilities::default(),
        }
    }

    /// The reply to the last command (or the greeting), with its listing
    /// lines when the command was multi-line and the status `+OK`.
    pub fn on_reply(&mut self, status: Status, lines: &[String]) -> Step {
        match (self.state, status) {
            (LoginState::Greeting, Status::Ok(_)) => self.send(LoginState::Capa, Command::Capa),
            (LoginState::Greeting, other) => self.fail(LoginError::BadGreeting(
                format!("{} {}", status_word(&other), other.text())
                    .trim()
                    .to_string(),
            )),
            (LoginState::Capa, status) => {
                self.caps = if status.is_ok() {
                    Capabilities::parse(lines)
                } else {
                    Capabilities::default()
                };
                if self.mode == TlsMode::StartTls && !self.secure {
                    // Even when CAPA does not list STLS: ask, and leave if refused.
                    self.send(LoginState::Stls, Command::Stls)
                } else {
                    self.authenticate()
                }
            }
            (LoginState::Stls, Status::Ok(_)) => {
                self.state = LoginState::Handshake;
                Step::StartTls
            }
            (LoginState::Stls, other) => {
                self.fail(LoginError::StlsRefused(other.text().to_string()))
            }
            (LoginState::User, Status::Ok(_)) => {
                let pass = Command::Pass(self.password.clone());
                self.send(LoginState::Pass, pass)
            }
            (LoginState::Pass | LoginState::AuthPlain { .. }, Status::Ok(_)) => {
                self.state = LoginState::Done;
                Step::LoggedIn(self.caps.clone())
            }
            (LoginState::AuthPlain { answered: false }, Status::Continue(_)) => {
                // The server did not take the initial response: send it now.
                let response = Command::SaslResponse(self.plain_response());
                self.send(LoginState::AuthPlain { answered: true }, response)
            }
            (LoginState::User | LoginState::Pass | LoginState::AuthPlain { .. }, other) => {
                self.fail(LoginError::Refused(other.text().to_string()))
            }
            (LoginState::Handshake | LoginState::Done, other) => {
                self.fail(LoginError::Unexpected(other.text().to_string()))
            }
        }
    }

    /// The TLS handshake after STLS succeeded: capabilities are asked again
    /// (they may differ over TLS, RFC 2595 §4).
    pub fn tls_ready(&mut self) -> Step {
        if self.state != LoginState::Handshake {
            return self.fail(LoginError::Unexpected("TLS outside STLS".into()));
        }
        self.secure = true;
        self.send(LoginState::Capa, Command::Capa)
    }

    fn authenticate(&mut self) -> Step {
        if self.caps.sasl.iter().any(|m| m == "PLAIN") {
            let initial = Command::AuthPlain(self.plain_response());
            self.send(LoginState::AuthPlain { answered: false }, initial)
        } else {
            let user = Command::User(self.username.clone());
            self.send(LoginState::User, user)
        }
    }

    /// `base64("\0" user "\0" password)` (RFC 4616).
    fn plain_response(&self) -> Secret {
        let mut raw = Vec::with_capacity(self.username.len() + self.password.expose().len() + 2);
        raw.push(0);
        raw.extend_from_slice(self.username.as_bytes());
        raw.push(0);
        raw.extend_from_slice(self.password.expose());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
        raw.fill(0);
        Secret::new(encoded.into_bytes())
    }

    fn send(&mut self, next: LoginState, command: Command) -> Step {
        self.state = next;
        Step::Send(command)
    }

    fn fail(&mut self, error: LoginError) -> Step {
        self.state = LoginState::Done;
        Step::Fail(error)
    }
}

fn status_word(status: &Status) -> &'static str {
    match status {
        Status::Ok(_) => "+OK",
        Status::Err(_) => "-ERR",
        Status::Continue(_) => "+",
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
