//! The network side: accepting connections within the limits, TLS, and the
//! loop that moves bytes between a socket and a [`Session`], applies the
//! timeouts and does the work the session asks for (logins, message transfers,
//! the UPDATE state).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use qs_config::{Config, MailAccessConfig};
use qs_directory::Directory;
use qs_service::accept::{self, Admitted, ConnectionLimits, Connections, Security};
use qs_service::login_limit::{FailedLogins, LoginAttempt, PasswordCheck, doubling_delay};
use qs_service::shutdown::Shutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, error, info, warn};

use crate::encode::Encoder;
use crate::maildrop::{Maildrop, MaildropError};
use crate::reply::{Code, Reply};
use crate::session::{Action, Credentials, LoginOutcome, Session, Settings, Transfer};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;
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
    let (accepted, sessions_shutdown) = (shared.clone(), shutdown.clone());
    accept::serve(
        listeners.into_listening(),
        &connections,
        &shutdown,
        |kind| (kind == Security::Plain).then_some(TOO_MANY),
        move |kind, key, stream, peer, admitted| {
            let id = accept::session_id();
            let span = tracing::info_span!("pop3", session = %id, %peer, listener = key);
            let shutdown = sessions_shutdown.clone();
            tokio::spawn(
                connection(accepted.clone(), stream, peer, kind, shutdown, admitted)
                    .instrument(span),
            );
        },
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

/// One connection, from accept to close.
async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    kind: Security,
    shutdown: Shutdown,
    mut admitted: Admitted,
) {
    debug!("connected");
    let handshake = shared.config.limits.tls_handshake_timeout;
    let result: io::Result<()> = match kind {
        Security::Plain => {
            let session = Session::new(shared.settings(false, true));
            match run_session(
                &shared,
                stream,
                session,
                peer,
                shutdown.clone(),
                &mut admitted,
            )
            .await
            {
                // STLS: a new session over TLS; nothing of the old one survives.
                Ok(Some(stream)) => {
                    match accept::tls_handshake(&shared.config.tls, stream, handshake).await {
                        Some(tls) => {
                            debug!("TLS started (STLS)");
                            let session = Session::after_stls(shared.settings(true, false));
                            run_session(&shared, tls, session, peer, shutdown, &mut admitted)
                                .await
                                .map(drop)
                        }
                        None => Ok(()),
                    }
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Security::Tls => match accept::tls_handshake(&shared.config.tls, stream, handshake).await {
            Some(tls) => {
                let session = Session::new(shared.settings(true, false));
                run_session(&shared, tls, session, peer, shutdown, &mut admitted)
                    .await
                    .map(drop)
            }
            None => Ok(()),
        },
    };
    match result {
        Ok(()) => debug!("closed"),
        Err(e) => debug!(error = %e, "connection lost"),
    }
}

/// What one connection holds besides its session.
struct Connection {
    peer: SocketAddr,
    out: Vec<u8>,
    maildrop: Option<Arc<Maildrop>>,
    user: Option<String>,
}

/// Runs `session` over `stream` until it closes. Returns the stream when the
/// session asked for STLS (everything buffered is dropped with the session).
async fn run_session<S>(
    shared: &Shared,
    mut stream: S,
    mut session: Session,
    peer: SocketAddr,
    mut shutdown: Shutdown,
    admitted: &mut Admitted,
) -> io::Result<Option<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let idle = shared.config.limits.idle_timeout;
    let mut conn = Connection {
        peer,
        out: Vec::new(),
        maildrop: None,
        user: None,
    };
    let mut buf = vec![0u8; READ_CHUNK];
    // The reply just queued answers a login that `Shared::login` has logged.
    let mut answers_login = false;
    loop {
        while let Some(action) = session.poll() {
            let after_login = std::mem::take(&mut answers_login);
            match action {
                Action::Send(reply) => {
                    if let Reply::Err(Some(Code::Auth), text) = &reply
                        && !after_login
                    {
                        info!(reason = %text, "login refused");
                    }
                    reply.write_to(&mut conn.out);
                    if conn.out.len() >= FLUSH_AT {
                        write_out(&mut stream, &mut conn.out, idle).await?;
                    }
                }
                Action::Login(credentials) => {
                    write_out(&mut stream, &mut conn.out, idle).await?;
                    let outcome = shared
                        .login(&mut conn, credentials, session.login_failures())
                        .await;
                    session.login_done(outcome);
                    answers_login = true;
                }
                Action::Transfer(transfer) => {
                    send_message(&mut stream, &mut conn, &mut session, transfer, idle).await?;
                }
                Action::StartTls => {
                    write_out(&mut stream, &mut conn.out, idle).await?;
                    return Ok(Some(stream));
                }
                Action::Update(plan) => {
                    let Some(maildrop) = conn.maildrop.clone() else {
                        session.update_done(Default::default());
                        continue;
                    };
                    let planned = (plan.remove.len(), plan.mark_seen.len());
                    let report = tokio::task::spawn_blocking(move || maildrop.update(&plan))
                        .await
                        .map_err(io::Error::other)?;
                    info!(
                        user = conn.user.as_deref().unwrap_or_default(),
                        removed = planned.0 - report.not_removed,
                        not_removed = report.not_removed,
                        marked_seen = planned.1,
                        "update done"
                    );
                    session.update_done(report);
                }
                Action::Close => {
                    // Given back before the last answer (QUIT's +OK) is sent,
                    // so a client that read it may connect again at once.
                    admitted.end_session();
                    write_out(&mut stream, &mut conn.out, idle).await?;
                    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                    return Ok(None);
                }
            }
        }
        write_out(&mut stream, &mut conn.out, idle).await?;
        let n = tokio::select! {
            read = tokio::time::timeout(idle, stream.read(&mut buf)) => match read {
                Err(_) => {
                    info!(user = conn.user.as_deref(), "autologout: idle too long; nothing deleted");
                    return Ok(None);
                }
                Ok(result) => result?,
            },
            // After a hand-over the session may go on for the grace period.
            _ = shutdown.wait_sessions_end() => {
                info!(user = conn.user.as_deref(), "closing for shutdown; nothing deleted");
                return Ok(None);
            }
        };
        if n == 0 {
            if session.is_logged_in() {
                info!(
                    user = conn.user.as_deref(),
                    "connection closed without QUIT; nothing deleted"
                );
            }
            return Ok(None);
        }
        session.feed(&buf[..n]);
    }
}

/// Writes out what is waiting; a client that does not read for `idle` is dropped.
async fn write_out<S>(stream: &mut S, out: &mut Vec<u8>, idle: Duration) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    if out.is_empty() {
        return Ok(());
    }
    let written = tokio::time::timeout(idle, async {
        stream.write_all(out).await?;
        stream.flush().await
    })
    .await;
    out.clear();
    match written {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading",
        )),
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
