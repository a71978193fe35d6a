//! The network side: accepting connections within the limits, and what qs-service's
//! connection driver (TLS, STARTTLS, the loop between a socket and a session) needs of
//! IMAP: the [`Session`] built for each start and run on the blocking pool (it works on
//! the file system), its timeouts, the login checks, and the watch of the selected
//! folder during IDLE.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use notify::Watcher;
use qs_config::{Config, ImapLimits, MailAccessConfig};
use qs_directory::Directory;
use qs_service::accept::{self, Admitted, ConnectionLimits, Connections};
use qs_service::connection::{
    self, Driven, Flow, Io, LAST_WORDS_TIMEOUT, Next, Server, Silence, Start, Stream, Tls,
    write_out,
};
use qs_service::login_limit::{FailedLogins, LoginAttempt, PasswordCheck, doubling_delay};
use qs_service::shutdown::Shutdown;
use qs_service::spool::SpoolDir;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::input::InputLimits;
use crate::search::SearchLimits;
use crate::session::{Action, Credentials, LoginResult, Session, Settings};
use crate::store::Shared as StoreShared;

/// During IDLE the folder is also looked at this often, in case a change notification
/// is missed (a file system without inotify).
const IDLE_POLL: Duration = Duration::from_secs(5);

/// The limits of the server: [`Limits::from_config`] takes the ones `[imap_server]`
/// sets, [`Limits::default`] those of the built-in config.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Autologout: a connection that sends nothing for this long is closed (RFC 3501
    /// asks for at least 30 minutes). Also bounds every write to a client that does
    /// not read, and IDLE (clients renew it before).
    pub idle_timeout: Duration,
    /// Before login, a connection that sends nothing for this long is closed.
    pub login_timeout: Duration,
    /// The TLS handshake must finish within this.
    pub tls_handshake_timeout: Duration,
    /// Connections at once on the plain listeners (`listen`).
    pub max_connections: usize,
    /// Connections at once on the TLS listeners (`tls_listen`): a budget of
    /// their own, which the plain listeners never take.
    pub max_tls_connections: usize,
    /// Connections at once from one client address, all listeners together.
    pub max_connections_per_address: usize,
    /// Logged-in sessions at once of one user.
    pub max_connections_per_user: usize,
    /// Failed logins in one connection before it is closed.
    pub max_login_failures: u32,
    /// Failed logins from one address within `failure_window` before that address is
    /// refused all logins for `block_duration`.
    pub max_failures_per_address: u32,
    /// See `max_failures_per_address`.
    pub failure_window: Duration,
    /// See `max_failures_per_address`.
    pub block_duration: Duration,
    /// The delay before answering a failed login; it doubles with each failure of the
    /// connection, up to `max_login_delay`.
    pub login_delay: Duration,
    /// See `login_delay`.
    pub max_login_delay: Duration,
    /// Protocol errors in one connection before it is closed.
    pub max_errors: u32,
    /// What the input guard allows (line, literals, bytes before login).
    pub input: InputLimits,
    /// The longest LIST or LSUB reference and pattern together, in bytes.
    pub max_list_pattern: usize,
    /// How big a SEARCH may be.
    pub search: SearchLimits,
    /// At shutdown, how long sessions in the middle of a command may finish.
    pub drain_timeout: Duration,
}

impl Limits {
    /// The limits `[imap_server]` asks for (`access` holds the keys it shares with
    /// POP3, `imap` the others), and the fixed ones no key sets.
    pub fn from_config(access: &MailAccessConfig, imap: &ImapLimits) -> Limits {
        Limits {
            idle_timeout: access.idle_timeout,
            login_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(30),
            max_connections: access.max_connections,
            max_tls_connections: access.tls_max_connections,
            max_connections_per_address: access.max_connections_per_ip,
            max_connections_per_user: imap.max_connections_per_user,
            max_login_failures: 3,
            max_failures_per_address: access.max_auth_failures,
            failure_window: Duration::from_secs(900),
            block_duration: Duration::from_secs(900),
            login_delay: Duration::from_secs(1),
            max_login_delay: Duration::from_secs(8),
            max_errors: access.max_errors,
            input: InputLimits {
                max_line: imap.max_line_length,
                max_literal: imap.max_literal_size,
                max_literal_before_login: 8192,
                login_budget: imap.login_byte_budget,
            },
            max_list_pattern: imap.max_list_pattern_length,
            search: SearchLimits {
                max_keys: imap.max_search_keys,
                max_depth: imap.max_search_depth,
            },
            drain_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for Limits {
    /// The limits of the built-in config (a file without an `[imap_server]`).
    fn default() -> Self {
        let config = Config::defaults_at(Path::new(qs_config::DEFAULT_FILE_NAME));
        Limits::from_config(&config.imap_server, &config.imap_limits)
    }
}

/// What the server needs to run.
pub struct ServerConfig {
    /// `data_dir`: the mailboxes are under `<data_dir>/mail/`.
    pub data_dir: PathBuf,
    /// `hostname`: for file names of stored messages.
    pub hostname: String,
    /// The user directory.
    pub directory: Arc<Directory>,
    /// The certificate, for STARTTLS and the TLS listeners.
    pub tls: TlsAcceptor,
    /// `[imap_server] allow_plaintext_auth`.
    pub allow_plaintext_auth: bool,
    /// The limits.
    pub limits: Limits,
    /// Where large APPEND literals go while they arrive.
    pub spool: Arc<SpoolDir>,
}

/// The config keys of the listeners: plaintext (STARTTLS or STLS offered),
/// and TLS from the first byte.
pub const LISTENER_KEYS: [&str; 2] = ["imap_server.listen", "imap_server.tls_listen"];

/// The bound listeners.
pub type Listeners = accept::PlainAndTls;

/// What a client over the connection limit reads on a plaintext listener.
const TOO_MANY: &[u8] = b"* BYE [UNAVAILABLE] too many connections; try again later\r\n";

/// What every connection shares.
struct Shared {
    config: ServerConfig,
    store: Arc<StoreShared>,
    watches: FolderWatches,
    failures: FailedLogins,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves the listeners until `shutdown` fires; then every session says BYE (sessions
/// in the middle of a command finish it first, up to `drain_timeout`).
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
        per_user: limits.max_connections_per_user,
    });
    let shared = Arc::new(Shared {
        config,
        store: Arc::new(StoreShared::default()),
        watches: FolderWatches::new(),
        failures,
    });
    let tls = Tls {
        acceptor: shared.config.tls.clone(),
        handshake_timeout: shared.config.limits.tls_handshake_timeout,
        starttls: "STARTTLS",
    };
    connection::serve_mailbox(
        listeners,
        &connections,
        &shutdown,
        shared.clone(),
        tls,
        TOO_MANY,
        |id, peer, key| tracing::info_span!("imap", session = %id, %peer, listener = key),
    )
    .await;
    let within = shared.config.limits.drain_timeout + shutdown.extra_drain_time();
    let left = connections.drain(within).await;
    if left > 0 {
        warn!(connections = left, "stopping with sessions still open");
    }
}

impl Server for Shared {
    type Session<'a> = Imap<'a>;

    fn session(&self, start: Start, peer: SocketAddr) -> Imap<'_> {
        let settings = self.settings(start.tls(), start == Start::Plain);
        let session = match start {
            // STARTTLS: a new session over TLS; nothing of the old one survives.
            Start::AfterStartTls => Session::after_starttls(settings),
            Start::Plain | Start::Tls => Session::new(settings),
        };
        Imap {
            shared: self,
            peer,
            session: Some(session),
            no_output: Vec::new(),
        }
    }
}

/// What an IMAP session asks its driver for besides input and output.
enum Work {
    /// A login to check.
    Login(Credentials),
    /// IDLE: the selected folder watched until the client says DONE.
    Idle,
}

/// One session, as the driver sees it.
struct Imap<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    /// The session; away while it works on the blocking pool, and lost if it
    /// panicked there (the connection then ends with an error).
    session: Option<Session>,
    /// The output of a lost session: nothing.
    no_output: Vec<u8>,
}

impl Imap<'_> {
    /// Runs `f` on the session on the blocking pool (it reads and writes files).
    async fn blocking<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Session) -> T + Send + 'static,
    ) -> io::Result<T> {
        let mut session = self.session.take().ok_or_else(session_lost)?;
        let (session, value) = tokio::task::spawn_blocking(move || {
            let value = f(&mut session);
            (session, value)
        })
        .await
        .map_err(io::Error::other)?;
        self.session = Some(session);
        Ok(value)
    }

    fn session(&mut self) -> io::Result<&mut Session> {
        self.session.as_mut().ok_or_else(session_lost)
    }

    /// IDLE: the client is told of changes to the selected folder until it
    /// sends DONE (or anything else), IDLE lasts too long, or the daemon stops.
    async fn idle<S: Stream>(&mut self, io: &mut Io<'_, S>) -> io::Result<Flow> {
        let shared = self.shared;
        let idle_timeout = shared.config.limits.idle_timeout;
        let folder = self.session()?.idle_folder();
        let watch = folder.as_deref().map(|f| shared.watches.watch(f));
        let mut changes = watch.as_ref().and_then(|w| w.receiver());
        let poll = if changes.is_some() {
            IDLE_POLL
        } else {
            Duration::from_secs(1)
        };
        let deadline = tokio::time::Instant::now() + idle_timeout;
        loop {
            let changed = async {
                match changes.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = io.stream.read(&mut io.buf) => {
                    let n = read?;
                    if n == 0 {
                        return Ok(Flow::End);
                    }
                    self.session()?.feed(&io.buf[..n]);
                    return Ok(Flow::Continue);
                }
                _ = changed => self.blocking(Session::idle_changed).await?,
                _ = tokio::time::sleep(poll) => self.blocking(Session::idle_changed).await?,
                _ = tokio::time::sleep_until(deadline) => {
                    let session = self.session()?;
                    info!(user = session.user(), "autologout: IDLE too long");
                    session.autologout();
                    write_out(&mut io.stream, session.output(), LAST_WORDS_TIMEOUT).await?;
                    return Ok(Flow::End);
                }
                // An IDLE session gets its BYE at once, even in a hand-over's
                // grace period.
                _ = io.shutdown.wait() => {
                    let session = self.session()?;
                    session.shutdown();
                    write_out(&mut io.stream, session.output(), LAST_WORDS_TIMEOUT).await?;
                    return Ok(Flow::End);
                }
            }
            write_out(&mut io.stream, self.output(), idle_timeout).await?;
        }
    }
}

fn session_lost() -> io::Error {
    io::Error::other("the session was lost on the blocking pool")
}

impl Driven for Imap<'_> {
    type Action = Work;

    async fn next(&mut self) -> io::Result<Next<Work>> {
        Ok(match self.blocking(Session::progress).await? {
            Action::Flush => Next::Flush,
            Action::NeedInput => Next::NeedInput,
            Action::Login(credentials) => Next::Act(Work::Login(credentials)),
            Action::Idle => Next::Act(Work::Idle),
            Action::StartTls => Next::StartTls,
            Action::Close => {
                let session = self.session()?;
                if session.logged_out() {
                    debug!(user = session.user(), "logged out");
                }
                Next::Close
            }
        })
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match &mut self.session {
            Some(session) => session.output(),
            None => &mut self.no_output,
        }
    }

    fn write_timeout(&self) -> Duration {
        self.shared.config.limits.idle_timeout
    }

    fn read_timeout(&self) -> Duration {
        let limits = &self.shared.config.limits;
        if self.session.as_ref().is_some_and(|s| s.user().is_some()) {
            limits.idle_timeout
        } else {
            limits.login_timeout
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if let Some(session) = &mut self.session {
            session.feed(bytes);
        }
    }

    fn silence(&mut self, why: Silence) {
        let Some(session) = &mut self.session else {
            return;
        };
        match why {
            Silence::TimedOut => {
                info!(user = session.user(), "autologout: idle too long");
                session.autologout();
            }
            Silence::Stopping => session.shutdown(),
            Silence::Closed => {}
        }
    }

    async fn act<S: Stream>(&mut self, work: Work, io: &mut Io<'_, S>) -> io::Result<Flow> {
        let within = self.write_timeout();
        write_out(&mut io.stream, self.output(), within).await?;
        match work {
            Work::Login(credentials) => {
                let failures = self.session()?.login_failures();
                let result = self
                    .shared
                    .login(self.peer, credentials, failures, io.admitted)
                    .await;
                self.blocking(move |s| s.login_done(result)).await?;
                Ok(Flow::Continue)
            }
            Work::Idle => self.idle(io).await,
        }
    }
}

impl Shared {
    fn settings(&self, tls_active: bool, starttls_available: bool) -> Settings {
        let limits = &self.config.limits;
        Settings {
            hostname: self.config.hostname.clone(),
            data_dir: self.config.data_dir.clone(),
            tls_active,
            starttls_available,
            allow_plaintext_auth: self.config.allow_plaintext_auth,
            input: limits.input,
            max_errors: limits.max_errors,
            max_login_failures: limits.max_login_failures,
            spool: self.config.spool.clone(),
            max_list_pattern: limits.max_list_pattern,
            search: limits.search,
            shared: self.store.clone(),
        }
    }

    /// Checks a login. `earlier_failures` are this connection's failed logins before.
    async fn login(
        &self,
        peer: SocketAddr,
        credentials: Credentials,
        earlier_failures: u32,
        guard: &mut Admitted,
    ) -> LoginResult {
        let limits = &self.config.limits;
        let mechanism = credentials.mechanism;
        let attempt = LoginAttempt {
            ip: peer.ip(),
            login: &credentials.login,
            password: credentials.password,
            mechanism,
            delay: doubling_delay(limits.login_delay, limits.max_login_delay, earlier_failures),
            earlier_failures,
        };
        match self
            .failures
            .check_password(&self.config.directory, attempt)
            .await
        {
            PasswordCheck::Accepted(user) => {
                if !guard.add_user(&user.address) {
                    info!(user = %user.address, mechanism, "login refused: too many sessions of this user");
                    return LoginResult::TooManySessions;
                }
                info!(user = %user.address, mechanism, "logged in");
                LoginResult::Accepted(user.address)
            }
            PasswordCheck::Blocked => LoginResult::Blocked,
            PasswordCheck::Rejected => LoginResult::Rejected,
            PasswordCheck::Unavailable => LoginResult::TemporaryFailure,
        }
    }
}

/// Change notification for folders in IDLE: one inotify watcher for the process, a
/// counter per watched folder that its sessions wait on. The watcher's callback takes
/// only the folder map's lock, and the watcher is never called with that lock held
/// (notify's `watch` waits for its event thread).
struct FolderWatches {
    watcher: Arc<Mutex<Option<notify::RecommendedWatcher>>>,
    folders: Arc<Mutex<WatchedFolders>>,
}

/// Each watched folder: how many sessions watch it, and the counter they wait on.
type WatchedFolders = HashMap<PathBuf, (usize, watch::Sender<u64>)>;

/// A session's interest in a folder; the watch ends with the last one.
struct FolderWatch {
    watcher: Arc<Mutex<Option<notify::RecommendedWatcher>>>,
    folders: Arc<Mutex<WatchedFolders>>,
    folder: PathBuf,
    receiver: Option<watch::Receiver<u64>>,
}

impl FolderWatches {
    fn new() -> FolderWatches {
        let folders: Arc<Mutex<WatchedFolders>> = Arc::default();
        let weak = Arc::downgrade(&folders);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else {
                return;
            };
            let Some(folders) = weak.upgrade() else {
                return;
            };
            let folders = lock(&folders);
            for path in &event.paths {
                // <folder>/new/<file> or <folder>/cur/<file>, or the directory itself.
                for folder in path.ancestors().skip(1).take(2) {
                    if let Some((_, tx)) = folders.get(folder) {
                        tx.send_modify(|n| *n = n.wrapping_add(1));
                        break;
                    }
                }
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "no change notification; IDLE polls every second");
                None
            }
        };
        FolderWatches {
            watcher: Arc::new(Mutex::new(watcher)),
            folders,
        }
    }

    fn watch(&self, folder: &Path) -> FolderWatch {
        let (receiver, first) = {
            let mut folders = lock(&self.folders);
            match folders.get_mut(folder) {
                Some((count, tx)) => {
                    *count += 1;
                    (tx.subscribe(), false)
                }
                None => {
                    let (tx, rx) = watch::channel(0u64);
                    folders.insert(folder.to_owned(), (1, tx));
                    (rx, true)
                }
            }
        };
        let mut watcher = lock(&self.watcher);
        let watched = match watcher.as_mut() {
            Some(w) if first => ["new", "cur"].iter().all(|sub| {
                w.watch(&folder.join(sub), notify::RecursiveMode::NonRecursive)
                    .map_err(|e| debug!(error = %e, "cannot watch a folder"))
                    .is_ok()
            }),
            Some(_) => true,
            None => false,
        };
        FolderWatch {
            watcher: self.watcher.clone(),
            folders: self.folders.clone(),
            folder: folder.to_owned(),
            receiver: watched.then_some(receiver),
        }
    }
}

impl FolderWatch {
    fn receiver(&self) -> Option<watch::Receiver<u64>> {
        self.receiver.clone()
    }
}

impl Drop for FolderWatch {
    fn drop(&mut self) {
        let last = {
            let mut folders = lock(&self.folders);
            let last = match folders.get_mut(&self.folder) {
                Some((count, _)) => {
                    *count -= 1;
                    *count == 0
                }
                None => false,
            };
            if last {
                folders.remove(&self.folder);
            }
            last
        };
        if last && let Some(w) = lock(&self.watcher).as_mut() {
            for sub in ["new", "cur"] {
                let _ = w.unwatch(&self.folder.join(sub));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_follow_imap_server_and_default_to_the_built_in_config() {
        let config = Config::parse(
            "[imap_server]\nmax_connections = 3\ntls_max_connections = 4\n\
             max_connections_per_ip = 2\nmax_connections_per_user = 5\n\
             idle_timeout_secs = 3600\nmax_auth_failures = 6\nmax_errors = 7\n\
             max_line_length = 2048\nmax_literal_size = 4096\nlogin_byte_budget = 8192\n\
             max_list_pattern_length = 128\nmax_search_keys = 32\nmax_search_depth = 9\n",
            Path::new("/etc/qs/quicksilver.toml"),
        )
        .unwrap();
        let limits = Limits::from_config(&config.imap_server, &config.imap_limits);
        assert_eq!(
            (
                limits.max_connections,
                limits.max_tls_connections,
                limits.max_connections_per_address,
                limits.max_connections_per_user,
                limits.idle_timeout,
                limits.max_failures_per_address,
                limits.max_errors,
            ),
            (3, 4, 2, 5, Duration::from_secs(3600), 6, 7)
        );
        assert_eq!(
            (
                limits.input.max_line,
                limits.input.max_literal,
                limits.input.login_budget,
                limits.max_list_pattern,
                limits.search.max_keys,
                limits.search.max_depth,
            ),
            (2048, 4096, 8192, 128, 32, 9)
        );
        let defaults = Limits::default();
        assert_eq!(
            (
                defaults.max_connections,
                defaults.max_connections_per_user,
                defaults.idle_timeout,
                defaults.input.max_line,
                defaults.input.max_literal,
                defaults.search.max_depth,
            ),
            (200, 20, Duration::from_secs(1800), 65_536, 26_214_400, 64)
        );
    }
}
