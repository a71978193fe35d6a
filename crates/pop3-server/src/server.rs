//! The network side: accepting connections within the limits, and what
//! qs-service's connection driver (TLS, STLS, the loop between a socket and a
//! session) needs of POP3: the [`Session`] built for each start, its timeout,
//! and the work it asks for (logins, message transfers, the UPDATE state).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use qs_config::{Config, MailAccessConfig};
use qs_directory::Directory;
use qs_service::accept::{self, ConnectionLimits, Connections};
use qs_service::connection::{
    self, Driven, Flow, Io, Next, Server, Silence, Start, Stream, Tls, write_out,
};
use qs_service::login_limit::{FailedLogins, LoginAttempt, PasswordCheck, doubling_delay};
use qs_service::shutdown::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use crate::encode::Encoder;
use crate::maildrop::{Maildrop, MaildropError};
use crate::reply::{Code, Reply};
use crate::session::{Action, Credentials, LoginOutcome, Session, Settings, Transfer, UpdatePlan};

/// Output is written once this much is waiting.
const FLUSH_AT: usize = 64 * 1024;

/// The limits of the server: [`Limits::from_config`] takes the ones
/// `[pop3_server]` sets, [`Limits::default`] those of the built-in config.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Autologout: a connection that sends nothing for this long is closed
    /// without entering UPDATE (RFC 1939 asks for at least 10 minutes). Also
    /// bounds every write to a client that does not read.
    pub idle_timeout: Duration,
    /// The TLS handshake must finish within this.
    pub tls_handshake_timeout: Duration,
    /// Connections at once on the plain listeners (`listen`).
    pub max_connections: usize,
    /// Connections at once on the TLS listeners (`tls_listen`): a budget of
    /// their own, which the plain listeners never take.
    pub max_tls_connections: usize,
    /// Connections at once from one client address, all listeners together.
    pub max_connections_per_address: usize,
    /// Failed logins in one connection before it is closed.
    pub max_login_failures: u32,
    /// Failed logins from one address within `failure_window` before that
    /// address is refused all logins for `block_duration`.
    pub max_failures_per_address: u32,
    /// See `max_failures_per_address`.
    pub failure_window: Duration,
    /// See `max_failures_per_address`.
    pub block_duration: Duration,
    /// The delay before answering a failed login; it doubles with each failure
    /// of the connection, up to `max_login_delay`.
    pub login_delay: Duration,
    /// See `login_delay`.
    pub max_login_delay: Duration,
    /// Protocol errors in one connection before it is closed.
    pub max_errors: u32,
    /// At shutdown, how long sessions in the middle of a command may finish.
    pub drain_timeout: Duration,
}

impl Limits {
    /// The limits `[pop3_server]` asks for, and the fixed ones no key sets.
    pub fn from_config(access: &MailAccessConfig) -> Limits {
        Limits {
            idle_timeout: access.idle_timeout,
            tls_handshake_timeout: Duration::from_secs(30),
            max_connections: access.max_connections,
            max_tls_connections: access.tls_max_connections,
            max_connections_per_address: access.max_connections_per_ip,
            max_login_failures: 3,
            max_failures_per_address: access.max_auth_failures,
            failure_window: Duration::from_secs(900),
            block_duration: Duration::from_secs(900),
            login_delay: Duration::from_secs(1),
            max_login_delay: Duration::from_secs(8),
            max_errors: access.max_errors,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for Limits {
    /// The limits of the built-in config (a file without a `[pop3_server]`).
    fn default() -> Self {
        let config = Config::defaults_at(Path::new(qs_config::DEFAULT_FILE_NAME));
        Limits::from_config(&config.pop3_server)
    }
}

/// What the server needs to run.
pub struct ServerConfig {
    /// `data_dir`: the mailboxes are under `<data_dir>/mail/`.
    pub data_dir: PathBuf,
    /// `hostname`: the greeting, and delivered file names.
    pub hostname: String,
    /// The user directory.
    pub directory: Arc<Directory>,
    /// The certificate, for STLS and the TLS listeners.
    pub tls: TlsAcceptor,
    /// `[pop3_server] allow_plaintext_auth`.
    pub allow_plaintext_auth: bool,
    /// The limits.
    pub limits: Limits,
}

/// The config keys of the listeners: plaintext (STARTTLS or STLS offered),
/// and TLS from the first byte.
pub const LISTENER_KEYS: [&str; 2] = ["pop3_server.listen", "pop3_server.tls_listen"];

/// The bound listeners.
pub type Listeners = accept::PlainAndTls;

/// What a client over the connection limit reads on a plaintext listener.
const TOO_MANY: &[u8] = b"-ERR [SYS/TEMP] too many connections; try again later\r\n";

/// What every connection shares.
struct Shared {
    config: ServerConfig,
    failures: FailedLogins,
}

/// Serves the listeners until `shutdown` fires, then lets the sessions finish
/// the command they are in (up to `drain_timeout`) and returns.
pub async fn serve(config: ServerConfig, listeners: Listeners, shutdown: Shutdown) {
    let limits = &config.limits;
    let failures = FailedLogins::new(
        limits.max_failures_per_address,
        limits.failure_window,
        limits.block_duration,
    );
    let connections = Connections::new(ConnectionLimits {
        per_listener: vec![
            (LISTENER_KEYS[0], limits.max_connections),
            (LISTENER_KEYS[1], limits.max_tls_connections),
        ],
        per_address: limits.max_connections_per_address,
        per_user: usize::MAX,
    });
    let shared = Arc::new(Shared { config, failures });
    let tls = Tls {
        acceptor: shared.config.tls.clone(),
        handshake_timeout: shared.config.limits.tls_handshake_timeout,
        starttls: "STLS",
    };
    connection::serve_mailbox(
        listeners,
        &connections,
        &shutdown,
        shared.clone(),
        tls,
        TOO_MANY,
        |id, peer, key| tracing::info_span!("pop3", session = %id, %peer, listener = key),
    )
    .await;
    let within = shared.config.limits.drain_timeout + shutdown.extra_drain_time();
    let left = connections.drain(within).await;
    if left > 0 {
        warn!(
            connections = left,
            "stopping with sessions still open (nothing of theirs is deleted)"
        );
    }
}

impl Server for Shared {
    type Session<'a> = Pop3<'a>;

    fn session(&self, start: Start, peer: SocketAddr) -> Pop3<'_> {
        let settings = self.settings(start.tls(), start == Start::Plain);
        let session = match start {
            // STLS: a new session over TLS; nothing of the old one survives.
            Start::AfterStartTls => Session::after_stls(settings),
            Start::Plain | Start::Tls => Session::new(settings),
        };
        Pop3 {
            shared: self,
            session,
            conn: Connection {
                peer,
                out: Vec::new(),
                maildrop: None,
                user: None,
            },
            answers_login: false,
        }
    }
}

/// What one connection holds besides its session.
struct Connection {
    peer: SocketAddr,
    out: Vec<u8>,
    maildrop: Option<Arc<Maildrop>>,
    user: Option<String>,
}

/// What a POP3 session asks its driver for besides input and output.
enum Work {
    /// A login to check, and the maildrop to open.
    Login(Credentials),
    /// RETR or TOP.
    Transfer(Transfer),
    /// The UPDATE state's removals and Seen marks.
    Update(UpdatePlan),
}

/// One session, as the driver sees it.
struct Pop3<'a> {
    shared: &'a Shared,
    session: Session,
    conn: Connection,
    /// The reply just queued answers a login that `Shared::login` has logged.
    answers_login: bool,
}

impl Driven for Pop3<'_> {
    type Action = Work;

    async fn next(&mut self) -> io::Result<Next<Work>> {
        while let Some(action) = self.session.poll() {
            let after_login = std::mem::take(&mut self.answers_login);
            match action {
                Action::Send(reply) => {
                    if let Reply::Err(Some(Code::Auth), text) = &reply
                        && !after_login
                    {
                        info!(reason = %text, "login refused");
                    }
                    reply.write_to(&mut self.conn.out);
                    if self.conn.out.len() >= FLUSH_AT {
                        return Ok(Next::Flush);
                    }
                }
                Action::Login(credentials) => return Ok(Next::Act(Work::Login(credentials))),
                Action::Transfer(transfer) => return Ok(Next::Act(Work::Transfer(transfer))),
                Action::StartTls => return Ok(Next::StartTls),
                Action::Update(plan) => return Ok(Next::Act(Work::Update(plan))),
                Action::Close => return Ok(Next::Close),
            }
        }
        Ok(Next::NeedInput)
    }

    fn output(&mut self) -> &mut Vec<u8> {
        &mut self.conn.out
    }

    fn write_timeout(&self) -> Duration {
        self.shared.config.limits.idle_timeout
    }

    fn read_timeout(&self) -> Duration {
        self.shared.config.limits.idle_timeout
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.session.feed(bytes);
    }

    fn silence(&mut self, why: Silence) {
        let user = self.conn.user.as_deref();
        match why {
            Silence::TimedOut => info!(user, "autologout: idle too long; nothing deleted"),
            Silence::Stopping => info!(user, "closing for shutdown; nothing deleted"),
            Silence::Closed if self.session.is_logged_in() => {
                info!(user, "connection closed without QUIT; nothing deleted");
            }
            Silence::Closed => {}
        }
    }

    async fn act<S: Stream>(&mut self, work: Work, io: &mut Io<'_, S>) -> io::Result<Flow> {
        let idle = self.shared.config.limits.idle_timeout;
        match work {
            Work::Login(credentials) => {
                write_out(&mut io.stream, &mut self.conn.out, idle).await?;
                let outcome = self
                    .shared
                    .login(&mut self.conn, credentials, self.session.login_failures())
                    .await;
                self.session.login_done(outcome);
                self.answers_login = true;
            }
            Work::Transfer(transfer) => {
                let (conn, session) = (&mut self.conn, &mut self.session);
                send_message(&mut io.stream, conn, session, transfer, idle).await?;
            }
            Work::Update(plan) => {
                let Some(maildrop) = self.conn.maildrop.clone() else {
                    self.session.update_done(Default::default());
                    return Ok(Flow::Continue);
                };
                let planned = (plan.remove.len(), plan.mark_seen.len());
                let report = tokio::task::spawn_blocking(move || maildrop.update(&plan))
                    .await
                    .map_err(io::Error::other)?;
                info!(
                    user = self.conn.user.as_deref().unwrap_or_default(),
                    removed = planned.0 - report.not_removed,
                    not_removed = report.not_removed,
                    marked_seen = planned.1,
                    "update done"
                );
                self.session.update_done(report);
            }
        }
        Ok(Flow::Continue)
    }
}

/// RETR and TOP: the head reply, the message streamed through the encoder.
async fn send_message<S>(
    stream: &mut S,
    conn: &mut Connection,
    session: &mut Session,
    transfer: Transfer,
    idle: Duration,
) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let Some(maildrop) = conn.maildrop.clone() else {
        session.transfer_failed(transfer.number);
        return Ok(());
    };
    let entry = transfer.entry.clone();
    let opened = tokio::task::spawn_blocking(move || maildrop.open_message(&entry))
        .await
        .map_err(io::Error::other)?;
    let file = match opened {
        Ok(file) => file,
        Err(e) => {
            warn!(message = %transfer.entry.id, error = %e, "cannot read a message");
            session.transfer_failed(transfer.number);
            return Ok(());
        }
    };
    let mut file = tokio::fs::File::from_std(file);
    transfer.head.write_to(&mut conn.out);
    let mut encoder = Encoder::transfer(transfer.top);
    let mut chunk = vec![0u8; 32 * 1024];
    while !encoder.is_done() {
        // The head is out: a read error now can only end the connection.
        let n = file.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        encoder.encode(&chunk[..n], &mut conn.out);
        if conn.out.len() >= FLUSH_AT {
            write_out(stream, &mut conn.out, idle).await?;
        }
    }
    encoder.finish(&mut conn.out);
    debug!(message = %transfer.entry.id, top = transfer.top, "message sent");
    Ok(())
}

impl Shared {
    fn settings(&self, tls_active: bool, stls_available: bool) -> Settings {
        Settings {
            hostname: self.config.hostname.clone(),
            tls_active,
            stls_available,
            allow_plaintext_auth: self.config.allow_plaintext_auth,
            max_login_failures: self.config.limits.max_login_failures,
            max_errors: self.config.limits.max_errors,
        }
    }

    /// Checks a login and opens the maildrop. `earlier_failures` are this
    /// connection's failed logins before this one.
    async fn login(
        &self,
        conn: &mut Connection,
        credentials: Credentials,
        earlier_failures: u32,
    ) -> LoginOutcome {
        let limits = &self.config.limits;
        let mechanism = credentials.mechanism;
        let attempt = LoginAttempt {
            ip: conn.peer.ip(),
            login: &credentials.login,
            password: credentials.password,
            mechanism,
            delay: doubling_delay(limits.login_delay, limits.max_login_delay, earlier_failures),
            earlier_failures,
        };
        let user = match self
            .failures
            .check_password(&self.config.directory, attempt)
            .await
        {
            PasswordCheck::Accepted(user) => user,
            PasswordCheck::Blocked => return LoginOutcome::Blocked,
            PasswordCheck::Rejected => return LoginOutcome::Rejected,
            PasswordCheck::Unavailable => return LoginOutcome::TemporaryFailure,
        };
        let data_dir = self.config.data_dir.clone();
        let hostname = self.config.hostname.clone();
        let address = user.address.clone();
        let only_unread = user.pop3.only_unread;
        let opened = tokio::task::spawn_blocking(move || {
            Maildrop::open(&data_dir, &hostname, &address, only_unread)
        })
        .await;
        match opened {
            Ok(Ok((maildrop, messages))) => {
                let octets: u64 = messages.iter().map(|m| m.size).sum();
                info!(
                    user = %user.address,
                    mechanism,
                    messages = messages.len(),
                    octets,
                    ignore_dele = user.pop3.ignore_dele,
                    only_unread,
                    "logged in"
                );
                conn.maildrop = Some(Arc::new(maildrop));
                conn.user = Some(user.address.clone());
                LoginOutcome::Accepted {
                    user: user.address,
                    options: user.pop3,
                    messages,
                }
            }
            Ok(Err(MaildropError::InUse { .. })) => {
                info!(user = %user.address, mechanism, "login refused: maildrop in use");
                LoginOutcome::InUse
            }
            Ok(Err(e)) if e.is_permanent() => {
                error!(user = %user.address, error = %e, "cannot open the maildrop");
                LoginOutcome::PermanentFailure
            }
            Ok(Err(e)) => {
                error!(user = %user.address, error = %e, "cannot open the maildrop");
                LoginOutcome::TemporaryFailure
            }
            Err(e) => {
                error!(user = %user.address, error = %e, "cannot open the maildrop");
                LoginOutcome::TemporaryFailure
            }
        }
    }
}

#[cfg(test)]
mod tests;
