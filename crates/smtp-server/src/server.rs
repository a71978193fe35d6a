//! The tokio side of smtp-server: listeners, connection limits, TLS and STARTTLS
//! (through qs-service's connection driver), timeouts (`idle_timeout` also bounds
//! every write to a client that does not read), and the actions a [`Session`]
//! asks for (password checks, durable enqueue).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use qs_config::{Config, SmtpServerConfig};
use qs_directory::lists::ListIndex;
use qs_queue::{Client, Origin, Reply};
use qs_service::accept::{self, Admitted, ConnectionLimits, Connections, Listening, Security};
use qs_service::connection::{self, SessionRunner, Start, Stream, Tls, write_out};
use qs_service::login_limit::{FailedLogins, LoginAttempt, PasswordCheck, doubling_delay};
use qs_service::shutdown::Shutdown;
use qs_service::spool::SpoolDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, error, info, warn};

use crate::checks::{Checker, SenderVerdict};
use crate::policy::DirectoryPolicy;
use crate::session::{self, Action, AuthOutcome, ListenerKind, Peer, Session, SessionConfig};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long sessions may take to finish after a stop was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often greylisting's expired triplets are swept away.
const GREYLIST_SWEEP: Duration = Duration::from_secs(3600);
/// How long an address stays refused after too many failed logins.
const AUTH_BLOCK: Duration = Duration::from_secs(15 * 60);
/// The delay before a failed login is answered; doubled with each failure of
/// the session, up to `MAX_LOGIN_DELAY`.
const LOGIN_DELAY: Duration = Duration::from_millis(500);
/// See `LOGIN_DELAY`.
const MAX_LOGIN_DELAY: Duration = Duration::from_secs(8);

/// Why smtp-server cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The directory cannot be opened.
    #[error("{0} (run `qsctl init` to create it)")]
    Directory(#[from] qs_directory::Error),
    /// TLS or listeners cannot be set up.
    #[error(transparent)]
    Service(#[from] qs_service::ServiceError),
    /// The run file cannot be written.
    #[error("cannot write the run file: {0}")]
    RunFile(std::io::Error),
    /// The spool folder cannot be made or cleaned.
    #[error("cannot set up the spool folder: {0}")]
    Spool(std::io::Error),
    /// The sender checks' DNS resolver cannot be set up.
    #[error("smtp_server.dns_server: {0}")]
    Resolver(String),
}

/// What every connection shares.
struct Shared {
    session: Arc<SessionConfig>,
    policy: Arc<DirectoryPolicy>,
    acceptor: TlsAcceptor,
    queue: Client,
    relay_networks: Vec<qs_config::IpNetwork>,
    unchecked_networks: Vec<qs_config::IpNetwork>,
    /// The sender checks, when any is on.
    checker: Option<Arc<Checker>>,
    idle_timeout: Duration,
    session_timeout: Duration,
    auth_failures: FailedLogins,
    next_id: AtomicU64,
}

/// The connection budgets `[smtp_server]` asks for. Each role has its own: a
/// flood on port 25 leaves the submission ports their room.
fn connection_limits(s: &SmtpServerConfig) -> ConnectionLimits {
    ConnectionLimits {
        per_listener: vec![
            (ListenerKind::Mx.config_key(), s.max_connections),
            (
                ListenerKind::Submission.config_key(),
                s.submission_max_connections,
            ),
            (
                ListenerKind::Submissions.config_key(),
                s.submissions_max_connections,
            ),
        ],
        per_address: s.max_connections_per_ip,
        per_user: usize::MAX,
    }
}

/// Opens what `config` names, binds `[smtp_server]`'s listeners, writes the run
/// file, and serves until `shutdown` fires (see [`serve`]).
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), ServerError> {
    let server = ServerConfig::open(&config)?;
    let listeners = Listeners::bind(&config.smtp_server).await?;
    qs_service::runfile::write(&config.data_dir, "smtp-server", &listeners.addresses())
        .map_err(ServerError::RunFile)?;
    serve(server, listeners, shutdown).await;
    qs_service::runfile::remove(&config.data_dir, "smtp-server");
    info!("stopped");
    Ok(())
}

/// What the server needs to run, opened from the config by
/// [`ServerConfig::open`].
pub struct ServerConfig {
    shared: Shared,
    limits: ConnectionLimits,
    greylisting: bool,
}

impl ServerConfig {
    /// Opens the directory, the spool folder, the sender checks' resolver, the
    /// certificate and the queue client that `config` names.
    pub fn open(config: &Config) -> Result<ServerConfig, ServerError> {
        let s = &config.smtp_server;
        let directory = qs_service::directory::open(&config.directory)?;
        qs_service::credentials::configure(&directory, &config.directory);
        let spool = SpoolDir::for_module(&config.data_dir, "smtp-server", s.spool_threshold)
            .map_err(ServerError::Spool)?;
        let checks = &s.checks;
        let check_sender = checks.enabled || !checks.dnsbl_zones.is_empty();
        let checker = if check_sender || checks.greylisting {
            let checker = Checker::new(&config.hostname, checks).map_err(ServerError::Resolver)?;
            Some(Arc::new(checker))
        } else {
            None
        };
        let shared = Shared {
            session: Arc::new(SessionConfig {
                hostname: config.hostname.clone(),
                max_message_size: s.max_message_size,
                max_recipients: s.max_recipients,
                max_recipient_overshoot: s.max_recipient_overshoot,
                max_errors: s.max_errors,
                allow_plaintext_auth: s.allow_plaintext_auth,
                enforce_sender: s.enforce_sender,
                spool,
                check_sender,
                check_message: checks.enabled,
                greylisting: checks.greylisting,
            }),
            policy: Arc::new(DirectoryPolicy::new(
                directory,
                ListIndex::new(config.data_path("lists")),
            )),
            acceptor: qs_service::tls::acceptor(&config.tls.cert, &config.tls.key)?,
            queue: qs_service::queue::client(config)?,
            relay_networks: s.relay_networks.clone(),
            unchecked_networks: checks.unchecked_networks.clone(),
            checker,
            idle_timeout: s.idle_timeout,
            session_timeout: s.session_timeout,
            auth_failures: FailedLogins::new(s.max_auth_failures, AUTH_BLOCK, AUTH_BLOCK),
            next_id: AtomicU64::new(1),
        };
        Ok(ServerConfig {
            shared,
            limits: connection_limits(s),
            greylisting: checks.greylisting,
        })
    }
}

/// The roles of the listeners, in the order of their config keys.
const ROLES: [ListenerKind; 3] = [
    ListenerKind::Mx,
    ListenerKind::Submission,
    ListenerKind::Submissions,
];

/// The bound listeners of the three roles.
#[derive(Debug)]
pub struct Listeners {
    listening: Vec<Listening<ListenerKind>>,
}

impl Listeners {
    /// Binds `[smtp_server]`'s `listen`, `submission` and `submissions`.
    pub async fn bind(s: &SmtpServerConfig) -> Result<Listeners, ServerError> {
        let [mx, submission, submissions] = ROLES;
        let listening = accept::bind(&[
            (mx, mx.config_key(), &s.listen[..]),
            (submission, submission.config_key(), &s.submission[..]),
            (submissions, submissions.config_key(), &s.submissions[..]),
        ])
        .await?;
        Ok(Listeners { listening })
    }

    /// The addresses bound, by config key, for the run file.
    pub fn addresses(&self) -> BTreeMap<String, Vec<SocketAddr>> {
        accept::addresses(&ROLES.map(ListenerKind::config_key), &self.listening)
    }
}

/// Serves the listeners until `shutdown` fires, then lets sessions finish their
/// current transaction (up to a drain timeout).
pub async fn serve(config: ServerConfig, listeners: Listeners, shutdown: Shutdown) {
    let shared = Arc::new(config.shared);
    let connections = Connections::new(config.limits);
    if config.greylisting
        && let Some(checker) = &shared.checker
    {
        let (checker, queue) = (checker.clone(), shared.queue.clone());
        tokio::spawn(sweep_greylist(checker, queue, shutdown.clone()));
    }

    let (accepted, sessions_shutdown) = (shared.clone(), shutdown.clone());
    accept::serve(
        listeners.listening,
        &connections,
        &shutdown,
        // Nothing readable can be said on a TLS listener before the handshake.
        |kind| (kind != ListenerKind::Submissions).then_some(TOO_MANY.as_slice()),
        move |kind, key, stream, peer, admitted| {
            let id = format!("{:08X}", accepted.next_id.fetch_add(1, Ordering::Relaxed));
            let span = tracing::info_span!("smtp", session = %id, %peer, listener = key);
            let (shared, shutdown) = (accepted.clone(), sessions_shutdown.clone());
            tokio::spawn(
                async move {
                    // Its listener's budget is taken until the session's
                    // last line is logged.
                    let mut admitted = admitted;
                    info!("connected");
                    match connection(shared, kind, stream, peer, id, shutdown, &mut admitted).await
                    {
                        Ok(()) => info!("disconnected"),
                        Err(e) => info!(error = %e, "connection ended with an error"),
                    }
                }
                .instrument(span),
            );
        },
    )
    .await;
    info!("stopping: no new connections; sessions finish their transaction");
    let left = connections
        .drain(DRAIN_TIMEOUT + shutdown.extra_drain_time())
        .await;
    if left > 0 {
        warn!(connections = left, "some sessions did not finish in time");
    }
}

/// Forgets greylisting's triplets not seen for `greylist_expiry_days`, every
/// `GREYLIST_SWEEP`, until `shutdown`.
async fn sweep_greylist(checker: Arc<Checker>, queue: Client, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(GREYLIST_SWEEP) => {}
            _ = shutdown.wait() => return,
        }
        match checker.sweep_greylist(&queue, qs_queue::unix_now()).await {
            Ok(0) => {}
            Ok(removed) => info!(removed, "greylisting: expired triplets forgotten"),
            Err(e) => warn!(error = %e, "greylisting: cannot sweep the expired triplets"),
        }
    }
}

/// What a client over the connection limit reads on a plaintext listener.
static TOO_MANY: LazyLock<Vec<u8>> =
    LazyLock::new(|| Reply::new(421, "4.7.0", "Too many connections, try again later").to_bytes());

/// One connection: its sessions, run by qs-service's connection driver (the
/// handshake on the submissions role, a fresh session after STARTTLS).
async fn connection(
    shared: Arc<Shared>,
    kind: ListenerKind,
    stream: TcpStream,
    peer: SocketAddr,
    id: String,
    shutdown: Shutdown,
    admitted: &mut Admitted,
) -> std::io::Result<()> {
    let deadline = Instant::now() + shared.session_timeout;
    let may_relay = shared.relay_networks.iter().any(|n| n.contains(peer.ip()));
    let checked = kind == ListenerKind::Mx
        && !may_relay
        && !shared
            .unchecked_networks
            .iter()
            .any(|n| n.contains(peer.ip()));
    let mut sessions = Sessions {
        shared: &shared,
        kind,
        ip: peer.ip(),
        may_relay,
        checked,
        id,
        deadline,
        shutdown,
        state: ConnectionState {
            checks: ClientChecks::start(&shared, checked, peer.ip()),
            admitted,
        },
    };
    let security = match kind {
        ListenerKind::Submissions => Security::Tls,
        ListenerKind::Mx | ListenerKind::Submission => Security::Plain,
    };
    let tls = Tls {
        acceptor: shared.acceptor.clone(),
        handshake_timeout: HANDSHAKE_TIMEOUT,
        starttls: "STARTTLS",
    };
    connection::connection(stream, security, &tls, &mut sessions).await
}

/// The sessions of one connection, one after the other (a second one over TLS
/// after STARTTLS), and what they share.
struct Sessions<'a> {
    shared: &'a Shared,
    kind: ListenerKind,
    ip: IpAddr,
    may_relay: bool,
    checked: bool,
    id: String,
    /// The end of `session_timeout`, for all the sessions together.
    deadline: Instant,
    shutdown: Shutdown,
    state: ConnectionState<'a>,
}

impl SessionRunner for Sessions<'_> {
    async fn run<S: Stream>(&mut self, stream: S, start: Start) -> std::io::Result<Option<S>> {
        if start == Start::AfterStartTls {
            info!("TLS started");
        }
        // After STARTTLS a fresh session: nothing from before the handshake
        // survives it. It does not greet.
        let session = Session::new(
            self.shared.session.clone(),
            self.shared.policy.clone(),
            self.kind,
            Peer {
                ip: self.ip,
                may_relay: self.may_relay,
                checked: self.checked,
            },
            start.tls(),
            self.id.clone(),
        );
        let greet = start != Start::AfterStartTls;
        let shutdown = self.shutdown.clone();
        run_session(
            self.shared,
            session,
            stream,
            greet,
            self.deadline,
            shutdown,
            &mut self.state,
        )
        .await
    }
}

/// What a connection keeps across its sessions (STARTTLS starts a new one).
struct ConnectionState<'a> {
    /// Its place in the connection limits.
    admitted: &'a mut Admitted,
    checks: ClientChecks,
}

/// The checks of one connection's client that outlive a session (STARTTLS
/// starts a new one): the DNS blacklists, asked when it connects.
struct ClientChecks {
    dnsbl: Option<tokio::task::JoinHandle<Option<Reply>>>,
    /// The blacklists' answer, once known: the refusal of every MAIL FROM.
    listed: Option<Option<Reply>>,
}

impl ClientChecks {
    fn start(shared: &Shared, checked: bool, ip: IpAddr) -> ClientChecks {
        let dnsbl = match &shared.checker {
            Some(checker) if checked && checker.asks_dnsbl() => {
                let checker = checker.clone();
                Some(tokio::spawn(async move { checker.dnsbl(ip).await }))
            }
            _ => None,
        };
        ClientChecks {
            dnsbl,
            listed: None,
        }
    }

    /// The refusal the blacklists ask for, waiting for their answer.
    async fn dnsbl_refusal(&mut self) -> Option<Reply> {
        if let Some(handle) = self.dnsbl.take() {
            let answer = match handle.await {
                Ok(answer) => answer,
                Err(e) => {
                    error!(error = %e, "the DNS blacklist lookup failed");
                    Some(Reply::new(
                        451,
                        "4.3.0",
                        "Temporary failure, try again later",
                    ))
                }
            };
            self.listed = Some(answer);
        }
        self.listed.clone().flatten()
    }
}

impl Drop for ClientChecks {
    fn drop(&mut self) {
        if let Some(handle) = &self.dnsbl {
            handle.abort();
        }
    }
}

/// Runs a session over `stream`; returns the stream when it asked for STARTTLS.
async fn run_session<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    mut session: Session<DirectoryPolicy>,
    mut stream: S,
    greet: bool,
    deadline: Instant,
    mut shutdown: Shutdown,
    state: &mut ConnectionState<'_>,
) -> std::io::Result<Option<S>> {
    if greet {
        write_out(&mut stream, &mut session.greeting(), shared.idle_timeout).await?;
    }
    let mut buf = vec![0u8; 16 * 1024];
    // Failed logins of this session, for the delay before the next answer.
    let mut auth_failures = 0u32;
    loop {
        while let Some(action) = session.next_action() {
            match action {
                Action::Send(mut bytes) => {
                    write_out(&mut stream, &mut bytes, shared.idle_timeout).await?;
                }
                Action::Verify { login, password } => {
                    let ip = session_peer_ip(&session);
                    let outcome = check_login(shared, ip, &login, password, auth_failures).await;
                    if outcome == AuthOutcome::Refused {
                        auth_failures += 1;
                    }
                    session.verified(outcome);
                }
                Action::Enqueue(envelope) => {
                    let origin = Origin {
                        module: Origin::SMTP_SERVER.into(),
                        peer: Some(session_peer_ip(&session).to_string()),
                        auth_user: envelope.auth_user.clone(),
                    };
                    let result = shared
                        .queue
                        .enqueue_from(
                            &envelope.sender,
                            envelope.recipients.clone(),
                            origin,
                            &envelope.message,
                        )
                        .await;
                    match &result {
                        Ok(id) => info!(queue_id = %id, from = %envelope.sender,
                            recipients = envelope.recipients.len(), size = envelope.message.len(), "accepted"),
                        Err(e) => error!(error = %e, permanent = e.is_permanent(),
                            "the queue refused or could not be reached"),
                    }
                    session.enqueued(
                        result
                            .map(|id| id.to_string())
                            .map_err(|e| session::queue_refusal(&e)),
                    );
                }
                Action::CheckSender { helo, sender } => {
                    let ip = session_peer_ip(&session);
                    let verdict = match state.checks.dnsbl_refusal().await {
                        Some(refusal) => SenderVerdict::Refuse(refusal),
                        None => match &shared.checker {
                            Some(checker) => checker.sender(ip, &helo, &sender).await,
                            None => SenderVerdict::Accept(None),
                        },
                    };
                    session.sender_checked(verdict);
                }
                Action::CheckRecipient { sender, recipient } => {
                    let ip = session_peer_ip(&session);
                    let refusal = match &shared.checker {
                        Some(checker) => {
                            let now = qs_queue::unix_now();
                            checker
                                .greylist(&shared.queue, ip, &sender, &recipient, now)
                                .await
                        }
                        None => None,
                    };
                    session.recipient_checked(refusal);
                }
                Action::CheckMessage(envelope) => {
                    let verdict = match (&shared.checker, &envelope.checks) {
                        (Some(checker), Some(spf)) => checker.message(spf, &envelope.message).await,
                        _ => crate::checks::MessageVerdict::Accept { fields: Vec::new() },
                    };
                    session.message_checked(envelope, verdict);
                }
                Action::StartTls => {
                    stream.flush().await?;
                    return Ok(Some(stream));
                }
                Action::Close => {
                    // The session is over: its address may connect again
                    // while this connection is still being closed.
                    state.admitted.end_session();
                    stream.flush().await?;
                    let _ = stream.shutdown().await;
                    return Ok(None);
                }
            }
        }
        if session.is_closed() {
            return Ok(None);
        }
        // At a stop, or at the end of a hand-over's grace period, a session
        // closes between transactions, never inside one.
        if shutdown.sessions_must_end() && session.between_transactions() {
            let reply = Reply::new(421, "4.3.2", "Service shutting down, try again later");
            write_out(&mut stream, &mut reply.to_bytes(), shared.idle_timeout).await?;
            let _ = stream.shutdown().await;
            return Ok(None);
        }
        let now = Instant::now();
        if now >= deadline {
            let reply = Reply::new(421, "4.4.2", "Session too long, closing");
            write_out(&mut stream, &mut reply.to_bytes(), shared.idle_timeout).await?;
            return Ok(None);
        }
        let wait = shared.idle_timeout.min(deadline - now);
        let read = tokio::select! {
            read = tokio::time::timeout(wait, stream.read(&mut buf)) => read,
            _ = shutdown.wait_sessions_end(), if !shutdown.sessions_must_end() => continue,
        };
        match read {
            Ok(Ok(0)) => return Ok(None),
            Ok(Ok(n)) => session.receive(&buf[..n]),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let reply = Reply::new(421, "4.4.2", "Idle too long, closing");
                write_out(&mut stream, &mut reply.to_bytes(), shared.idle_timeout).await?;
                return Ok(None);
            }
        }
    }
}

fn session_peer_ip(session: &Session<DirectoryPolicy>) -> IpAddr {
    session.peer_ip()
}

/// Checks a password: refused without a check while the address is blocked,
/// and answered after a delay that doubles with each failure of the session.
async fn check_login(
    shared: &Shared,
    ip: IpAddr,
    login: &str,
    password: qs_directory::Secret,
    earlier_failures: u32,
) -> AuthOutcome {
    let attempt = LoginAttempt {
        ip,
        login,
        password,
        mechanism: "AUTH",
        delay: doubling_delay(LOGIN_DELAY, MAX_LOGIN_DELAY, earlier_failures),
        earlier_failures,
    };
    match shared
        .auth_failures
        .check_password(shared.policy.directory(), attempt)
        .await
    {
        PasswordCheck::Accepted(user) => AuthOutcome::Accepted(user.address),
        PasswordCheck::Blocked | PasswordCheck::Rejected => AuthOutcome::Refused,
        PasswordCheck::Unavailable => AuthOutcome::Unavailable,
    }
}
