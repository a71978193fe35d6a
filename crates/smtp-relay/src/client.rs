//! The SMTP client side, on lettre's `AsyncSmtpConnection`: connect, TLS
//! (implicit, required STARTTLS, or opportunistic STARTTLS), AUTH PLAIN or
//! LOGIN, and mail transactions command by command so that each recipient gets
//! its own RCPT reply. With PIPELINING, MAIL, every RCPT and DATA go out in one
//! write and the replies are read in order (RFC 2920). Every network step has a
//! time limit; a connection that broke or timed out is never reused.
//!
//! lettre reads the greeting and sends EHLO itself, but keeps only a few
//! extensions from the reply; the session sends EHLO once more (after TLS) to
//! learn PIPELINING and SIZE.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::{ClientId, Extension};
use lettre::transport::smtp::response::Response;
use qs_queue::{Outcome, Reply};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::ehlo::Capabilities;
use crate::plaintext_guard::{GuardReport, GuardedStream, Violation};
use crate::reply;
use crate::transaction::{self, Answers};

/// How TLS is used on a connection.
#[derive(Clone)]
pub enum TlsMode {
    /// Plaintext only.
    None,
    /// STARTTLS, required: a server that does not offer it, or fails it, gets
    /// nothing.
    Required(TlsParameters),
    /// TLS from the first byte, to the server of this name.
    Implicit(TlsConnector, ServerName<'static>),
    /// STARTTLS when offered, certificate not checked (RFC 7435); plaintext
    /// when not offered or when the handshake fails.
    Opportunistic,
}

impl fmt::Debug for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::None => "None",
            TlsMode::Required(_) => "Required",
            TlsMode::Implicit(..) => "Implicit",
            TlsMode::Opportunistic => "Opportunistic",
        })
    }
}

/// What every connection shares.
#[derive(Clone)]
pub struct Settings {
    /// Our name in EHLO.
    pub hello: ClientId,
    /// Limit for the TCP connection.
    pub connect_timeout: Duration,
    /// Limit for each reply, and for sending the message.
    pub command_timeout: Duration,
    /// Login, when configured.
    pub credentials: Option<Credentials>,
}

/// TLS parameters that check the certificate and the name (webpki roots plus
/// the PEM certificates in `extra_ca`), or, with `verify` false, accept any.
pub fn tls_parameters(
    server_name: &str,
    extra_ca: Option<&[u8]>,
    verify: bool,
) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(server_name.to_string())
        .certificate_store(CertificateStore::WebpkiRoots);
    if let Some(pem) = extra_ca {
        let cert = Certificate::from_pem(pem).map_err(|e| e.to_string())?;
        builder = builder.add_root_certificate(cert);
    }
    if !verify {
        builder = builder
            .dangerous_accept_invalid_certs(true)
            .dangerous_accept_invalid_hostnames(true);
    }
    builder.build_rustls().map_err(|e| e.to_string())
}

/// The TLS client for implicit TLS: the same checks as [`tls_parameters`]
/// (webpki roots plus `extra_ca`, or none at all when `verify` is false).
pub fn implicit_tls(
    server_name: &str,
    extra_ca: Option<&[u8]>,
    verify: bool,
) -> Result<(TlsConnector, ServerName<'static>), String> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("{server_name:?} is not a TLS server name: {e}"))?;
    let roots = if verify {
        let extra = CertificateDer::pem_slice_iter(extra_ca.unwrap_or_default())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("bad CA file: {e}"))?;
        Some(
            qs_service::tls::web_roots_with(extra)
                .map_err(|e| format!("bad CA certificate: {e}"))?,
        )
    } else {
        None
    };
    let config = qs_service::tls::client_config(roots).map_err(|e| e.to_string())?;
    Ok((TlsConnector::from(config), name))
}

/// An implicit-TLS connection, as lettre takes it.
#[derive(Debug)]
struct TlsTcp(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for TlsTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for GuardedStream<TcpStream> {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().peer_addr()
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// TLS parameters for opportunistic STARTTLS: encrypt, check nothing.
fn opportunistic_parameters(server_name: &str) -> Result<TlsParameters, String> {
    TlsParameters::builder(server_name.to_string())
        .certificate_store(CertificateStore::None)
        .dangerous_accept_invalid_certs(true)
        .dangerous_accept_invalid_hostnames(true)
        .build_rustls()
        .map_err(|e| e.to_string())
}

/// The label of a host in logs and replies: `name[address]:port`.
pub fn host_label(name: &str, addr: SocketAddr) -> String {
    format!("{name}[{}]:{}", addr.ip(), addr.port())
}

/// Why a connection could not be set up; always a temporary failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError {
    /// The reply for the recipients (with the host named).
    pub reply: Reply,
    /// True when the host could not be reached at all (refused, timed out):
    /// it is then marked down for a while.
    pub unreachable: bool,
    /// True when an opportunistic TLS handshake failed (try plaintext).
    tls_failed: bool,
    /// True when the plaintext guard found injected data.
    injected: bool,
}

impl OpenError {
    fn new(enhanced: &str, text: &str) -> OpenError {
        OpenError {
            reply: Reply::local(enhanced, text),
            unreachable: false,
            tls_failed: false,
            injected: false,
        }
    }

    /// The outcome for each recipient.
    pub fn outcome(&self) -> Outcome {
        Outcome::TemporaryFailure {
            reply: self.reply.clone(),
        }
    }
}

/// An open, greeted (and maybe encrypted and logged-in) SMTP connection.
pub struct Session {
    conn: AsyncSmtpConnection,
    caps: Capabilities,
    /// `name[address]:port`.
    pub host: String,
    /// Whether TLS is on.
    pub encrypted: bool,
    /// When it was last used.
    pub idle_since: Instant,
    /// Transactions sent over it.
    pub transactions: u64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("host", &self.host)
            .field("encrypted", &self.encrypted)
            .field("transactions", &self.transactions)
            .finish_non_exhaustive()
    }
}

/// Connects to `addr` (host `name`), greets, sets up TLS as `tls` says, and
/// logs in when credentials are configured.
pub async fn open(
    addr: SocketAddr,
    name: &str,
    tls: &TlsMode,
    settings: &Settings,
) -> Result<Session, OpenError> {
    let host = host_label(name, addr);
    match open_once(addr, &host, name, tls, settings).await {
        Err(e) if e.tls_failed => {
            tracing::warn!(host, reply = %e.reply, "opportunistic TLS failed; trying again in plaintext");
            open_once(addr, &host, name, &TlsMode::None, settings).await
        }
        other => other,
    }
}

async fn open_once(
    addr: SocketAddr,
    host: &str,
    name: &str,
    tls: &TlsMode,
    settings: &Settings,
) -> Result<Session, OpenError> {
    let limit = settings.command_timeout;
    let tcp = match timeout(settings.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(unreachable(
                "4.4.1",
                &format!("cannot connect to {host}: {e}"),
            ));
        }
        Err(_) => {
            return Err(unreachable(
                "4.4.1",
                &format!(
                    "cannot connect to {host}: no answer within {}s",
                    settings.connect_timeout.as_secs()
                ),
            ));
        }
    };
    // Commands and data go out in few writes; never wait for delayed ACKs.
    let _ = tcp.set_nodelay(true);
    let mut guard = None;
    let stream: Box<dyn AsyncTokioStream> = match tls {
        TlsMode::Implicit(connector, server_name) => {
            match timeout(limit, connector.connect(server_name.clone(), tcp)).await {
                Ok(Ok(tls)) => Box::new(TlsTcp(tls)),
                Ok(Err(e)) => {
                    return Err(OpenError::new(
                        "4.7.5",
                        &format!("TLS handshake with {host} failed: {e}"),
                    ));
                }
                Err(_) => {
                    return Err(OpenError::new(
                        "4.7.5",
                        &format!(
                            "TLS handshake with {host} did not finish within {}s",
                            limit.as_secs()
                        ),
                    ));
                }
            }
        }
        // Until TLS begins, anyone on the path may write: watch that no
        // reply is read ahead of its command (CVE-2011-0411).
        TlsMode::Required(_) | TlsMode::Opportunistic => {
            let (guarded, report) = GuardedStream::new(tcp);
            guard = Some(report);
            Box::new(guarded)
        }
        TlsMode::None => Box::new(tcp),
    };
    let greeting = AsyncSmtpConnection::connect_with_transport(stream, &settings.hello);
    let mut conn = match timeout(limit, greeting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(_)) if let Some(violation) = violation(&guard) => {
            return Err(injected(host, &violation));
        }
        Ok(Err(e)) => {
            return Err(OpenError::new(
                "4.4.2",
                &format!("{host} refused the session: {}", error_text(&e)),
            ));
        }
        Err(_) => {
            // A host that takes connections and never greets costs a
            // timeout each time, like one that does not answer at all.
            return Err(unreachable(
                "4.4.2",
                &format!("{host} did not greet within {}s", limit.as_secs()),
            ));
        }
    };
    let mut encrypted = matches!(tls, TlsMode::Implicit(..));
    match tls {
        TlsMode::Required(params) => {
            if !conn.server_info().supports_feature(Extension::StartTls) {
                quit(conn, settings.command_timeout).await;
                return Err(OpenError::new(
                    "4.7.4",
                    &format!(
                        "{host} does not offer STARTTLS, which the configuration requires; nothing was sent"
                    ),
                ));
            }
            starttls(&mut conn, params.clone(), host, settings, &guard).await?;
            encrypted = true;
        }
        TlsMode::Opportunistic if conn.server_info().supports_feature(Extension::StartTls) => {
            // An address literal has no name to send: use the address.
            let server_name = if name.starts_with('[') {
                addr.ip().to_string()
            } else {
                name.to_string()
            };
            let params = opportunistic_parameters(&server_name)
                .map_err(|e| OpenError::new("4.7.5", &format!("TLS set-up for {host}: {e}")))?;
            if let Err(mut e) = starttls(&mut conn, params, host, settings, &guard).await {
                // A failed handshake is tried again in plaintext; injected
                // data is an attack on this connection, not a TLS problem.
                e.tls_failed = !e.injected;
                return Err(e);
            }
            encrypted = true;
        }
        _ => {
            if let Some(report) = &guard {
                report.switch_off();
            }
        }
    }
    let ehlo = format!("EHLO {}\r\n", settings.hello);
    let caps = match timeout(settings.command_timeout, conn.command(Line(&ehlo))).await {
        Ok(Ok(response)) => Capabilities::from_ehlo(response.message()),
        Ok(Err(e)) => {
            return Err(OpenError::new(
                "4.4.2",
                &format!("{host} refused EHLO: {}", error_text(&e)),
            ));
        }
        Err(_) => {
            return Err(OpenError::new(
                "4.4.2",
                &format!(
                    "{host} did not answer EHLO within {}s",
                    settings.command_timeout.as_secs()
                ),
            ));
        }
    };
    if let Some(credentials) = &settings.credentials {
        if !caps.has_plain_or_login() {
            quit(conn, settings.command_timeout).await;
            return Err(OpenError::new(
                "4.7.0",
                &format!("{host} offers no AUTH PLAIN or LOGIN; cannot log in"),
            ));
        }
        let mechanisms = [Mechanism::Plain, Mechanism::Login];
        match timeout(
            settings.command_timeout,
            conn.auth(&mechanisms, credentials),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(OpenError::new(
                    "4.7.0",
                    &format!("login at {host} failed: {}", error_text(&e)),
                ));
            }
            Err(_) => {
                return Err(OpenError::new(
                    "4.7.0",
                    &format!(
                        "{host} did not answer AUTH within {}s",
                        settings.command_timeout.as_secs()
                    ),
                ));
            }
        }
    }
    Ok(Session {
        conn,
        caps,
        host: host.to_string(),
        encrypted,
        idle_since: Instant::now(),
        transactions: 0,
    })
}

async fn starttls(
    conn: &mut AsyncSmtpConnection,
    params: TlsParameters,
    host: &str,
    settings: &Settings,
    guard: &Option<Arc<GuardReport>>,
) -> Result<(), OpenError> {
    match timeout(
        settings.command_timeout,
        conn.starttls(params, &settings.hello),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) if let Some(violation) = violation(guard) => Err(injected(host, &violation)),
        Ok(Err(e)) => Err(OpenError::new(
            "4.7.5",
            &format!(
                "STARTTLS with {host} failed: {}; nothing was sent",
                error_text(&e)
            ),
        )),
        Err(_) => Err(OpenError::new(
            "4.7.5",
            &format!(
                "STARTTLS with {host} did not finish within {}s; nothing was sent",
                settings.command_timeout.as_secs()
            ),
        )),
    }
}

/// Sends QUIT and waits a little for the answer; the connection is closed
/// either way.
async fn quit(mut conn: AsyncSmtpConnection, limit: Duration) {
    let _ = timeout(limit.min(Duration::from_secs(5)), conn.quit()).await;
}

/// What the plaintext guard refused, if it did.
fn violation(guard: &Option<Arc<GuardReport>>) -> Option<Violation> {
    guard.as_ref().and_then(|report| report.violation())
}

/// The connection was closed because data was injected before TLS: a
/// temporary failure (the message stays queued), logged as an attack.
fn injected(host: &str, violation: &Violation) -> OpenError {
    tracing::warn!(host, %violation, "protocol violation before TLS; connection closed");
    OpenError {
        reply: Reply::local(
            "4.7.0",
            &format!(
                "{host} broke the protocol before TLS: {violation}; connection closed, nothing was sent"
            ),
        ),
        unreachable: false,
        tls_failed: false,
        injected: true,
    }
}

fn unreachable(enhanced: &str, text: &str) -> OpenError {
    OpenError {
        reply: Reply::local(enhanced, text),
        unreachable: true,
        tls_failed: false,
        injected: false,
    }
}

/// The peer's reply in a refusal, or lettre's description of another error.
fn error_text(e: &SmtpError) -> String {
    reply::from_error(e).map_or_else(|| e.to_string(), |reply| reply.to_string())
}

/// One command line (or a pipelined group of them) for `command`.
struct Line<'a>(&'a str);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A reply, or why none came.
fn to_reply(result: Result<Response, SmtpError>) -> Result<Reply, String> {
    match result {
        Ok(response) => Ok(reply::from_response(&response)),
        Err(e) => reply::from_error(&e).ok_or_else(|| e.to_string()),
    }
}

/// The message as the relay sends it.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    /// The bytes handed to lettre ([`crate::message::data_payload`]).
    pub payload: &'a [u8],
    /// Whether it has 8-bit bytes.
    pub eight_bit: bool,
    /// Its size in the queue (for `SIZE=`).
    pub size: usize,
}

/// How one transaction went.
#[derive(Debug)]
pub struct Report {
    /// One outcome per recipient of the batch, in order.
    pub outcomes: Vec<Outcome>,
    /// The session may carry another transaction.
    pub reusable: bool,
    /// The connection was found broken before any reply (a pooled connection
    /// that the server had closed): worth one more try on a new connection.
    pub stale: bool,
}

impl Session {
    /// The server's extensions.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Runs one mail transaction for `recipients`.
    pub async fn send(
        &mut self,
        sender: &str,
        recipients: &[&str],
        body: Body<'_>,
        limit: Duration,
    ) -> Report {
        self.transactions += 1;
        let n = recipients.len();
        let plan = match transaction::plan(
            sender,
            recipients,
            body.eight_bit,
            body.size,
            &self.caps,
            &self.host,
        ) {
            Ok(plan) => plan,
            Err(outcome) => {
                return Report {
                    outcomes: vec![outcome; n],
                    reusable: true,
                    stale: false,
                };
            }
        };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
        for (i, outcome) in plan.refused {
            outcomes[i] = Some(outcome);
        }
        if !plan.send.is_empty() {
            let mail = transaction::mail_from(sender, &plan.params);
            let rcpts: Vec<String> = plan
                .send
                .iter()
                .map(|&i| transaction::rcpt_to(recipients[i]))
                .collect();
            let mut run = Run {
                conn: &mut self.conn,
                book: Book {
                    host: &self.host,
                    limit,
                    answers: Answers {
                        rcpts: vec![None; rcpts.len()],
                        ..Answers::default()
                    },
                    lost: None,
                    replies: 0,
                    timed_out: false,
                },
            };
            let broken = if self.caps.pipelining {
                run.pipelined(&mail, &rcpts, body.payload).await
            } else {
                run.one_by_one(&mail, &rcpts, body.payload).await
            };
            let lost = run.book.lost.take().unwrap_or_else(|| {
                Reply::local("4.4.2", &format!("lost connection with {}", self.host))
            });
            let settled = transaction::settle(&run.book.answers, &self.host, &lost);
            // Closed before any reply (not silent): a kept connection that the
            // server had given up on.
            let stale = run.book.replies == 0 && broken && !run.book.timed_out;
            let reusable = !broken;
            for (&i, outcome) in plan.send.iter().zip(settled) {
                outcomes[i] = Some(outcome);
            }
            self.idle_since = Instant::now();
            return Report {
                outcomes: outcomes
                    .into_iter()
                    .map(|o| {
                        o.unwrap_or_else(|| Outcome::TemporaryFailure {
                            reply: lost.clone(),
                        })
                    })
                    .collect(),
                reusable,
                stale,
            };
        }
        self.idle_since = Instant::now();
        Report {
            outcomes: outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| reply::temporary("4.0.0", "not attempted")))
                .collect(),
            reusable: true,
            stale: false,
        }
    }

    /// Says QUIT and closes the connection.
    pub async fn close(self, limit: Duration) {
        quit(self.conn, limit).await;
    }
}

/// One transaction while it runs: the connection, and what came back.
struct Run<'a> {
    conn: &'a mut AsyncSmtpConnection,
    book: Book<'a>,
}

/// The replies so far, and why they stopped if they did.
struct Book<'a> {
    host: &'a str,
    limit: Duration,
    answers: Answers,
    lost: Option<Reply>,
    replies: usize,
    timed_out: bool,
}

impl Book<'_> {
    /// Waits for one step's reply; `None` (with `lost` set) when the
    /// connection failed or timed out.
    async fn step(
        &mut self,
        what: &str,
        fut: impl Future<Output = Result<Response, SmtpError>>,
    ) -> Option<Reply> {
        match timeout(self.limit, fut).await {
            Ok(result) => match to_reply(result) {
                Ok(reply) => {
                    self.replies += 1;
                    Some(reply)
                }
                Err(e) => {
                    self.lost = Some(Reply::local(
                        "4.4.2",
                        &format!(
                            "lost connection with {} while sending {what}: {e}",
                            self.host
                        ),
                    ));
                    None
                }
            },
            Err(_) => {
                self.timed_out = true;
                self.lost = Some(Reply::local(
                    "4.4.2",
                    &format!(
                        "{} did not answer {what} within {}s",
                        self.host,
                        self.limit.as_secs()
                    ),
                ));
                None
            }
        }
    }
}

impl Run<'_> {
    /// MAIL, every RCPT and DATA in one write; replies read in order. Returns
    /// true when the connection cannot be used again.
    async fn pipelined(&mut self, mail: &str, rcpts: &[String], payload: &[u8]) -> bool {
        let mut group = String::with_capacity(mail.len() + rcpts.len() * 40 + 6);
        group.push_str(mail);
        for r in rcpts {
            group.push_str(r);
        }
        group.push_str("DATA\r\n");
        let book = &mut self.book;
        let Some(reply) = book
            .step("MAIL FROM", self.conn.command(Line(&group)))
            .await
        else {
            return true;
        };
        book.answers.mail = Some(reply);
        for i in 0..rcpts.len() {
            let Some(reply) = book.step("RCPT TO", self.conn.read_response()).await else {
                return true;
            };
            book.answers.rcpts[i] = Some(reply);
        }
        let Some(reply) = book.step("DATA", self.conn.read_response()).await else {
            return true;
        };
        book.answers.data = Some(reply);
        self.finish(payload).await
    }

    /// MAIL, each RCPT, DATA, each after the previous reply.
    async fn one_by_one(&mut self, mail: &str, rcpts: &[String], payload: &[u8]) -> bool {
        let book = &mut self.book;
        let Some(reply) = book.step("MAIL FROM", self.conn.command(Line(mail))).await else {
            return true;
        };
        let accepted = reply.is_success();
        book.answers.mail = Some(reply);
        if !accepted {
            return false;
        }
        for (i, r) in rcpts.iter().enumerate() {
            let Some(reply) = book.step("RCPT TO", self.conn.command(Line(r))).await else {
                return true;
            };
            book.answers.rcpts[i] = Some(reply);
        }
        if book.answers.accepted() > 0 {
            let Some(reply) = book.step("DATA", self.conn.command(Line("DATA\r\n"))).await else {
                return true;
            };
            book.answers.data = Some(reply);
        }
        self.finish(payload).await
    }

    /// Sends the message when DATA was accepted; otherwise ends the
    /// transaction with RSET. Returns true when the connection is unusable.
    async fn finish(&mut self, payload: &[u8]) -> bool {
        let book = &mut self.book;
        if book.answers.send_data() {
            let Some(reply) = book.step("the message", self.conn.message(payload)).await else {
                return true;
            };
            book.answers.end = Some(reply);
            return false;
        }
        if book
            .answers
            .data
            .as_ref()
            .is_some_and(|d| d.code() == Some(354))
        {
            // The server waits for data that no accepted recipient would get.
            return true;
        }
        if book.answers.mail.as_ref().is_some_and(Reply::is_success) {
            return match book.step("RSET", self.conn.command(Line("RSET\r\n"))).await {
                Some(reply) => !reply.is_success(),
                None => true,
            };
        }
        false
    }
}
