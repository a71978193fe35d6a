//! Accepting connections, for the daemons that listen for clients
//! (smtp-server, pop3-server, imap-server): binding each config key's
//! listeners and naming them for the run file, the accept loop of every
//! listener, admission within the connection limits (a budget per listener
//! role, per client address, and per user once logged in), the words that send
//! a client over the limit away, the log of refusals, the TLS handshake with
//! its time limit, and the wait for open sessions at a stop.
//!
//! Each listener role (each config key: `smtp_server.listen`,
//! `smtp_server.submission`, `imap_server.tls_listen` …) has a budget of its
//! own, so idle connections flooding one role (port 25, open to anyone) never
//! take the room of another (the submission ports, the other mailbox port).
//!
//! A refused connection is logged once per address; the ones that follow
//! within a minute are summed up in one line per address
//! ([`RefusalLog`]), so a flood does not flood the log.
//!
//! What a connection does once admitted is the daemon's: [`serve`] hands it
//! the stream, the peer, the listener's kind and an [`Admitted`] that counts
//! the connection until dropped.

use std::collections::{BTreeMap, HashMap, hash_map};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{info, warn};

use crate::ServiceError;
use crate::shutdown::Shutdown;

/// How many connections may be open at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// On each listener role, by config key (the addresses of one key share
    /// its budget). A key not listed has no room.
    pub per_listener: Vec<(&'static str, usize)>,
    /// From one client address, all listeners together.
    pub per_address: usize,
    /// Logged-in sessions of one user (`usize::MAX`: no limit).
    pub per_user: usize,
}

/// The open connections, counted by listener role, client address and user.
#[derive(Debug)]
pub struct Connections {
    limits: ConnectionLimits,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    total: usize,
    by_listener: HashMap<&'static str, usize>,
    by_address: HashMap<IpAddr, usize>,
    by_user: HashMap<String, usize>,
}

/// Which limit a refused connection met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its listener role's budget is used up.
    ListenerFull,
    /// Its address has as many connections as it may.
    AddressFull,
}

impl Refused {
    /// The limit, for the log.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::ListenerFull => "this listener has as many connections as it may",
            Refused::AddressFull => "this address has as many connections as it may",
        }
    }
}

impl Connections {
    /// No connection yet.
    pub fn new(limits: ConnectionLimits) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            table: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent even if a holder panicked: every change
        // is made in one step.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The budget of the listener role `key`.
    fn budget(&self, key: &str) -> usize {
        self.limits
            .per_listener
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(0, |&(_, n)| n)
    }

    /// Counts a connection from `ip` on a listener of the config key
    /// `listener`, or says which limit it meets.
    pub fn admit(
        self: &Arc<Self>,
        listener: &'static str,
        ip: IpAddr,
    ) -> Result<Admitted, Refused> {
        let mut table = self.lock();
        let on_listener = table.by_listener.get(listener).copied().unwrap_or(0);
        if on_listener >= self.budget(listener) {
            return Err(Refused::ListenerFull);
        }
        let from_ip = table.by_address.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.limits.per_address {
            return Err(Refused::AddressFull);
        }
        table.total += 1;
        *table.by_listener.entry(listener).or_insert(0) += 1;
        *table.by_address.entry(ip).or_insert(0) += 1;
        Ok(Admitted {
            connections: self.clone(),
            listener,
            ip,
            user: None,
            session_ended: false,
        })
    }

    /// How many connections are open.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Waits until every connection has ended, or `within` has passed;
    /// returns how many are still open.
    pub async fn drain(&self, within: Duration) -> usize {
        let open = self.open();
        if open > 0 {
            info!(connections = open, "stopping: waiting for open sessions");
        }
        let deadline = Instant::now() + within;
        while self.open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.open()
    }
}

/// One admitted connection, and the user it logged in as; counted until
/// dropped (by address and user only until [`Admitted::end_session`]).
#[derive(Debug)]
pub struct Admitted {
    connections: Arc<Connections>,
    listener: &'static str,
    ip: IpAddr,
    user: Option<String>,
    /// The address and user counts are given back already.
    session_ended: bool,
}

impl Admitted {
    /// Counts a logged-in session of `user`; false (and nothing counted)
    /// when the user has `per_user` sessions already.
    pub fn add_user(&mut self, user: &str) -> bool {
        let mut table = self.connections.lock();
        let n = table.by_user.get(user).copied().unwrap_or(0);
        if n >= self.connections.limits.per_user {
            return false;
        }
        table.by_user.insert(user.to_owned(), n + 1);
        if let Some(earlier) = self.user.replace(user.to_owned()) {
            release(&mut table.by_user, &earlier);
        }
        true
    }

    /// The session is over (its last answer is about to be sent): its
    /// address and user counts are given back now, so that a client that
    /// read that answer and connects again at once is not refused while
    /// this connection is still being closed. The listener's budget stays
    /// taken until the connection is dropped (its socket is still open).
    pub fn end_session(&mut self) {
        if std::mem::replace(&mut self.session_ended, true) {
            return;
        }
        let mut table = self.connections.lock();
        release(&mut table.by_address, &self.ip);
        if let Some(user) = self.user.take() {
            release(&mut table.by_user, &user);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.end_session();
        let mut table = self.connections.lock();
        table.total = table.total.saturating_sub(1);
        release(&mut table.by_listener, &self.listener);
    }
}

/// Takes one from a count, forgetting it at zero.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// A bound listener, the config key it serves, and its kind (the daemon's:
/// plain or TLS, port 25 or submission).
#[derive(Debug)]
pub struct Listening<K> {
    /// What the daemon does with its connections.
    pub kind: K,
    /// The config key, for logs and the run file (`imap_server.listen`).
    pub key: &'static str,
    /// The socket.
    pub listener: TcpListener,
}

/// How a mailbox server's listener (IMAP, POP3) begins its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plaintext, with STARTTLS (IMAP) or STLS (POP3) offered.
    Plain,
    /// TLS from the first byte.
    Tls,
}

/// Why a mailbox server (imap-server, pop3-server) cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailboxServerError {
    /// The user directory cannot be opened.
    #[error("{0} (run `qsctl init` to create it)")]
    Directory(#[from] qs_directory::Error),
    /// The certificate cannot be loaded, or a listener cannot be bound.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The run file cannot be written.
    #[error("cannot write the run file under {}: {source}", path.display())]
    RunFile {
        /// The data folder.
        path: std::path::PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// What a mailbox server opens before it serves.
pub struct MailboxServerParts {
    /// The user directory.
    pub directory: Arc<qs_directory::Directory>,
    /// The certificate, for STARTTLS/STLS and the TLS listeners.
    pub tls: TlsAcceptor,
    /// The bound listeners, already named in the run file.
    pub listeners: PlainAndTls,
}

/// Opens the directory and the certificate of `config`, binds the listeners of
/// `access` (`listen` and `tls_listen`, named `keys` in errors and the run
/// file), and writes `module`'s run file.
pub async fn open_mailbox_server(
    config: &qs_config::Config,
    module: &str,
    keys: [&'static str; 2],
    access: &qs_config::MailAccessConfig,
) -> Result<MailboxServerParts, MailboxServerError> {
    let directory = crate::directory::open(&config.directory)?;
    crate::credentials::configure(&directory, &config.directory);
    let acceptor = crate::tls::acceptor(&config.tls.cert, &config.tls.key)?;
    let listeners = PlainAndTls::bind(keys, &access.listen, &access.tls_listen).await?;
    crate::runfile::write(&config.data_dir, module, &listeners.addresses()).map_err(|source| {
        MailboxServerError::RunFile {
            path: config.data_dir.clone(),
            source,
        }
    })?;
    Ok(MailboxServerParts {
        directory: Arc::new(directory),
        tls: acceptor,
        listeners,
    })
}

/// A mailbox server's listeners: those of its plaintext key (`listen`) and
/// those of its TLS key (`tls_listen`).
#[derive(Debug)]
pub struct PlainAndTls {
    keys: [&'static str; 2],
    listening: Vec<Listening<Security>>,
}

impl PlainAndTls {
    /// Binds `plain` for the config key `keys[0]` and `tls` for `keys[1]`.
    pub async fn bind(
        keys: [&'static str; 2],
        plain: &[SocketAddr],
        tls: &[SocketAddr],
    ) -> Result<PlainAndTls, ServiceError> {
        let listening = bind(&[
            (Security::Plain, keys[0], plain),
            (Security::Tls, keys[1], tls),
        ])
        .await?;
        Ok(PlainAndTls { keys, listening })
    }

    /// Plaintext listeners already bound (tests).
    pub fn plain(keys: [&'static str; 2], listeners: Vec<TcpListener>) -> PlainAndTls {
        let listening = listeners
            .into_iter()
            .map(|listener| Listening {
                kind: Security::Plain,
                key: keys[0],
                listener,
            })
            .collect();
        PlainAndTls { keys, listening }
    }

    /// The addresses bound, by config key, for the run file.
    pub fn addresses(&self) -> BTreeMap<String, Vec<SocketAddr>> {
        addresses(&self.keys, &self.listening)
    }

    /// The listeners, for [`serve`].
    pub fn into_listening(self) -> Vec<Listening<Security>> {
        self.listening
    }
}

/// Binds the addresses of each config key (adopting the sockets handed
/// over by a predecessor, see [`crate::listen::bind_all`]) and logs them.
pub async fn bind<K: Copy>(
    keys: &[(K, &'static str, &[SocketAddr])],
) -> Result<Vec<Listening<K>>, ServiceError> {
    let mut out = Vec::new();
    for &(kind, key, addrs) in keys {
        let bound = crate::listen::bind_all(key, addrs).await?;
        let local: Vec<SocketAddr> = bound.iter().filter_map(|l| l.local_addr().ok()).collect();
        info!(key, addrs = ?local, "listening");
        out.extend(bound.into_iter().map(|listener| Listening {
            kind,
            key,
            listener,
        }));
    }
    Ok(out)
}

/// The addresses bound for each config key, as the run file lists them
/// (a key without addresses is listed empty).
pub fn addresses<K>(
    keys: &[&'static str],
    listeners: &[Listening<K>],
) -> BTreeMap<String, Vec<SocketAddr>> {
    let mut out: BTreeMap<String, Vec<SocketAddr>> =
        keys.iter().map(|k| (k.to_string(), Vec::new())).collect();
    for l in listeners {
        if let Ok(addr) = l.listener.local_addr() {
            out.entry(l.key.to_string()).or_default().push(addr);
        }
    }
    out
}

/// Accepts on every listener until `shutdown` fires. Each connection within
/// the limits goes to `connection` (which spawns what serves it); one over a
/// limit is closed, after the words `refusal` gives for its listener's kind
/// (none on a TLS listener, where nothing readable can be said before the
/// handshake), and logged through a [`RefusalLog`]. Returns once no listener
/// accepts any more; the connections may still be open (see
/// [`Connections::drain`]).
pub async fn serve<K, R, C>(
    listeners: Vec<Listening<K>>,
    connections: &Arc<Connections>,
    shutdown: &Shutdown,
    refusal: R,
    connection: C,
) where
    K: Copy + Send + Sync + 'static,
    R: Fn(K) -> Option<&'static [u8]> + Send + Sync + 'static,
    C: Fn(K, &'static str, TcpStream, SocketAddr, Admitted) + Send + Sync + 'static,
{
    let handlers = Arc::new((refusal, connection));
    let refusals = Arc::new(Mutex::new(RefusalLog::default()));
    let mut accepting = tokio::task::JoinSet::new();
    for l in listeners {
        let (handlers, connections, refusals, mut stop) = (
            handlers.clone(),
            connections.clone(),
            refusals.clone(),
            shutdown.clone(),
        );
        accepting.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = l.listener.accept() => accepted,
                    _ = stop.wait() => return,
                };
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before accept.
                        warn!(listener = l.key, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Replies are written whole; Nagle would only delay them.
                let _ = stream.set_nodelay(true);
                let admitted = match connections.admit(l.key, peer.ip()) {
                    Ok(admitted) => admitted,
                    Err(refused) => {
                        if lock(&refusals).refused(peer.ip(), Instant::now()) {
                            warn!(%peer, listener = l.key, reason = refused.reason(),
                                "connection refused: too many connections (more from this address are counted, and logged once a minute)");
                        }
                        tokio::spawn(refuse(stream, (handlers.0)(l.kind)));
                        continue;
                    }
                };
                (handlers.1)(l.kind, l.key, stream, peer, admitted);
            }
        });
    }
    let summing_up = {
        let (refusals, mut stop) = (refusals.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFUSAL_LOG_TICK);
            loop {
                tokio::select! {
                    _ = tick.tick() => log_summaries(lock(&refusals).summaries(Instant::now())),
                    _ = stop.wait() => return,
                }
            }
        })
    };
    while accepting.join_next().await.is_some() {}
    // Also when no listener was bound, and so nothing waits for the stop.
    summing_up.abort();
    let _ = summing_up.await;
    log_summaries(lock(&refusals).flush());
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How often the refusal log looks for a minute that is over.
const REFUSAL_LOG_TICK: Duration = Duration::from_secs(5);

fn log_summaries(summaries: Vec<RefusalSummary>) {
    for RefusalSummary { from, more } in summaries {
        match from {
            Some(ip) => warn!(address = %ip, more,
                "refused {more} more connections from {ip} in the last minute"),
            None => warn!(
                more,
                "refused {more} more connections from other addresses in the last minute"
            ),
        }
    }
}

/// How long the refusals of one address are summed up before one line says
/// how many there were.
pub const REFUSAL_SUMMARY_PERIOD: Duration = Duration::from_secs(60);

/// Addresses whose refusals are summed up one by one; past this, refusals
/// from further addresses are summed up together.
pub const MAX_SUMMED_ADDRESSES: usize = 4096;

/// Which refused connections are worth a log line (sans-IO: the caller
/// gives the time and writes the lines). The first refusal from an address
/// is logged on its own; those that follow are counted, and once
/// [`REFUSAL_SUMMARY_PERIOD`] has passed, [`RefusalLog::summaries`] gives one
/// line per address that had more. An address refused again in the next
/// period goes on being counted; one that stopped is forgotten, and its next
/// refusal is logged on its own again.
#[derive(Debug, Default)]
pub struct RefusalLog {
    by_address: HashMap<IpAddr, Counted>,
    /// Refusals from addresses past [`MAX_SUMMED_ADDRESSES`].
    others: Option<Counted>,
}

#[derive(Debug, Clone, Copy)]
struct Counted {
    since: Instant,
    more: u64,
}

/// One line of [`RefusalLog::summaries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalSummary {
    /// The address (`None`: the addresses past [`MAX_SUMMED_ADDRESSES`]).
    pub from: Option<IpAddr>,
    /// Refusals not logged on their own.
    pub more: u64,
}

impl RefusalLog {
    /// Counts a refused connection from `ip`; true when it is to be logged
    /// on its own.
    pub fn refused(&mut self, ip: IpAddr, now: Instant) -> bool {
        let table_full = self.by_address.len() >= MAX_SUMMED_ADDRESSES;
        match self.by_address.entry(ip) {
            hash_map::Entry::Occupied(mut counted) => {
                counted.get_mut().more += 1;
                false
            }
            hash_map::Entry::Vacant(_) if table_full => {
                self.others
                    .get_or_insert(Counted {
                        since: now,
                        more: 0,
                    })
                    .more += 1;
                false
            }
            hash_map::Entry::Vacant(vacant) => {
                vacant.insert(Counted {
                    since: now,
                    more: 0,
                });
                true
            }
        }
    }

    /// The lines of the periods that are over at `now`, in address order.
    pub fn summaries(&mut self, now: Instant) -> Vec<RefusalSummary> {
        let over = |c: &Counted| now.duration_since(c.since) >= REFUSAL_SUMMARY_PERIOD;
        let mut out = Vec::new();
        self.by_address.retain(|ip, counted| {
            if !over(counted) {
                return true;
            }
            if counted.more == 0 {
                // Nothing more from this address: forget it.
                return false;
            }
            out.push(RefusalSummary {
                from: Some(*ip),
                more: counted.more,
            });
            *counted = Counted {
                since: now,
                more: 0,
            };
            true
        });
        out.sort_by_key(|s| s.from);
        if let Some(others) = self.others.take_if(|c| over(c)) {
            out.push(RefusalSummary {
                from: None,
                more: others.more,
            });
        }
        out
    }

    /// Every line still owed (at a stop), whether its period is over or not.
    pub fn flush(&mut self) -> Vec<RefusalSummary> {
        let mut out: Vec<RefusalSummary> = self
            .by_address
            .drain()
            .filter(|(_, c)| c.more > 0)
            .map(|(ip, c)| RefusalSummary {
                from: Some(ip),
                more: c.more,
            })
            .collect();
        out.sort_by_key(|s| s.from);
        out.extend(self.others.take().map(|c| RefusalSummary {
            from: None,
            more: c.more,
        }));
        out
    }
}

/// A new session id, `<pid>.<n>`: unique across the processes of a
/// hand-over, for the logs.
pub fn session_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}.{n}", std::process::id())
}

/// Says `words` (if any) to a client over the limit, and closes.
async fn refuse(mut stream: TcpStream, words: Option<&'static [u8]>) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        if let Some(words) = words {
            stream.write_all(words).await?;
        }
        stream.shutdown().await
    })
    .await;
}

/// The server side of a TLS handshake, within `within`; a failure is logged
/// (a client that does not trust the certificate is not an error of ours).
pub async fn tls_handshake<S>(
    acceptor: &TlsAcceptor,
    stream: S,
    within: Duration,
) -> Option<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(within, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            info!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            info!("TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const KEY: &str = "test.listen";

    fn limits(on_listener: usize, per_address: usize, per_user: usize) -> ConnectionLimits {
        ConnectionLimits {
            per_listener: vec![(KEY, on_listener)],
            per_address,
            per_user,
        }
    }

    #[test]
    fn admission_counts_addresses_and_users_until_dropped() {
        let table = Connections::new(limits(3, 2, 1));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut first = table.admit(KEY, a).unwrap();
        let second = table.admit(KEY, a).unwrap();
        assert_eq!(
            table.admit(KEY, a).unwrap_err(),
            Refused::AddressFull,
            "two per address"
        );
        let mut third = table.admit(KEY, b).unwrap();
        assert_eq!(
            table.admit(KEY, b).unwrap_err(),
            Refused::ListenerFull,
            "three on the listener"
        );
        assert_eq!(table.open(), 3);

        assert!(first.add_user("u@example.test"));
        assert!(!third.add_user("u@example.test"), "one session per user");
        assert!(third.add_user("v@example.test"));
        drop(first);
        let a_again = table.admit(KEY, a).unwrap();
        drop(a_again);
        let mut again = table.admit(KEY, b).unwrap();
        assert!(again.add_user("u@example.test"), "u's session has ended");
        drop((second, third, again));
        assert_eq!(table.open(), 0);
        let t = table.lock();
        assert!(t.by_address.is_empty() && t.by_user.is_empty() && t.by_listener.is_empty());
    }

    #[test]
    fn an_ended_session_frees_its_address_and_user_but_not_its_listener() {
        let table = Connections::new(limits(2, 1, 1));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mut first = table.admit(KEY, a).unwrap();
        assert!(first.add_user("u@example.test"));
        assert_eq!(table.admit(KEY, a).unwrap_err(), Refused::AddressFull);
        first.end_session();
        first.end_session();
        let mut second = table.admit(KEY, a).unwrap();
        assert!(second.add_user("u@example.test"));
        assert_eq!(table.open(), 2, "the first is still open");
        assert_eq!(
            table.admit(KEY, "192.0.2.2".parse().unwrap()).unwrap_err(),
            Refused::ListenerFull,
            "its socket still takes room on the listener"
        );
        drop(first);
        assert_eq!(table.lock().by_address.get(&a), Some(&1));
        drop(second);
        let t = table.lock();
        assert!(t.by_address.is_empty() && t.by_user.is_empty() && t.by_listener.is_empty());
        assert_eq!(t.total, 0);
    }

    #[test]
    fn a_full_listener_leaves_the_others_their_room() {
        let table = Connections::new(ConnectionLimits {
            per_listener: vec![("smtp.listen", 2), ("smtp.submission", 1)],
            per_address: 10,
            per_user: 10,
        });
        let outsider = |n: u8| IpAddr::from([198, 51, 100, n]);
        let flood: Vec<Admitted> = (1..=2)
            .map(|n| table.admit("smtp.listen", outsider(n)).unwrap())
            .collect();
        assert_eq!(
            table.admit("smtp.listen", outsider(3)).unwrap_err(),
            Refused::ListenerFull
        );
        let office = table
            .admit("smtp.submission", "192.0.2.1".parse().unwrap())
            .unwrap();
        assert_eq!(
            table.admit("smtp.submission", outsider(4)).unwrap_err(),
            Refused::ListenerFull,
            "the submission budget is its own"
        );
        assert_eq!(
            table.admit("smtp.other", outsider(5)).unwrap_err(),
            Refused::ListenerFull,
            "a key without a budget has no room"
        );
        drop(flood);
        assert!(table.admit("smtp.listen", outsider(3)).is_ok());
        drop(office);
    }

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn refusals_are_logged_once_then_summed_up_each_minute() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let start = Instant::now();
        let mut log = RefusalLog::default();
        assert!(log.refused(a, start), "the first is logged");
        assert!(!log.refused(a, at(start, 1)));
        assert!(!log.refused(a, at(start, 2)));
        assert!(log.refused(b, at(start, 30)), "another address's first too");
        assert!(
            log.summaries(at(start, 59)).is_empty(),
            "the minute is not over"
        );
        assert_eq!(
            log.summaries(at(start, 60)),
            [RefusalSummary {
                from: Some(a),
                more: 2
            }]
        );
        // The flood from a goes on: counted, not logged one by one.
        assert!(!log.refused(a, at(start, 61)));
        assert!(log.summaries(at(start, 89)).is_empty());
        // b had nothing more: no summary, and it is forgotten.
        assert!(log.summaries(at(start, 90)).is_empty());
        assert!(log.refused(b, at(start, 95)), "b's next is a first again");
        assert_eq!(
            log.summaries(at(start, 120)),
            [RefusalSummary {
                from: Some(a),
                more: 1
            }]
        );
        // a and b stopped: forgotten after a quiet minute.
        assert!(log.summaries(at(start, 180)).is_empty());
        assert!(log.refused(a, at(start, 181)));
        assert!(log.refused(b, at(start, 181)));
        assert!(!log.refused(a, at(start, 182)));
        assert_eq!(
            log.flush(),
            [RefusalSummary {
                from: Some(a),
                more: 1
            }],
            "at a stop every count still owed is given"
        );
        assert!(log.flush().is_empty());
    }

    #[test]
    fn refusals_from_too_many_addresses_are_summed_up_together() {
        let start = Instant::now();
        let mut log = RefusalLog::default();
        for n in 0..MAX_SUMMED_ADDRESSES as u32 {
            assert!(log.refused(IpAddr::from(n.to_be_bytes()), start));
        }
        let past = |n: u32| IpAddr::from((n + MAX_SUMMED_ADDRESSES as u32).to_be_bytes());
        assert!(!log.refused(past(0), start));
        assert!(!log.refused(past(1), start));
        assert!(!log.refused(IpAddr::from(0u32.to_be_bytes()), start));
        assert_eq!(
            log.summaries(at(start, 60)),
            [
                RefusalSummary {
                    from: Some(IpAddr::from(0u32.to_be_bytes())),
                    more: 1
                },
                RefusalSummary {
                    from: None,
                    more: 2
                }
            ]
        );
        assert_eq!(log.by_address.len(), 1, "the quiet addresses are forgotten");
    }

    #[test]
    fn session_ids_name_the_process_and_never_repeat() {
        let (a, b) = (session_id(), session_id());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{}.", std::process::id())), "{a}");
    }

    #[tokio::test]
    async fn drain_waits_for_the_last_connection() {
        let table = Connections::new(limits(10, 10, 10));
        let held = table.admit(KEY, "192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(table.drain(Duration::from_millis(50)).await, 1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(held);
        });
        assert_eq!(table.drain(Duration::from_secs(5)).await, 0);
    }

    #[tokio::test]
    async fn a_client_over_the_limit_is_told_and_closed() {
        use tokio::io::AsyncReadExt;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let table = Connections::new(limits(1, 1, 1));
        let (trigger, shutdown) = crate::shutdown::channel();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let server = {
            let table = table.clone();
            tokio::spawn(async move {
                serve(
                    vec![Listening {
                        kind: (),
                        key: KEY,
                        listener,
                    }],
                    &table,
                    &shutdown,
                    |()| Some(&b"busy\r\n"[..]),
                    move |(), key, stream, _, admitted| {
                        let _ = tx.send((key, stream, admitted));
                    },
                )
                .await;
            })
        };
        let _first = TcpStream::connect(addr).await.unwrap();
        let (key, _stream, _admitted) = rx.recv().await.unwrap();
        assert_eq!(key, KEY);
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut words = String::new();
        second.read_to_string(&mut words).await.unwrap();
        assert_eq!(words, "busy\r\n");
        trigger.fire();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn with_no_listener_serve_returns_at_once() {
        let table = Connections::new(limits(1, 1, 1));
        let (_trigger, shutdown) = crate::shutdown::channel();
        let served = serve(
            Vec::<Listening<()>>::new(),
            &table,
            &shutdown,
            |()| None,
            |(), _, _, _, _| {},
        );
        // A guard against a hang, not a measure: it returns without a stop.
        assert!(
            tokio::time::timeout(Duration::from_secs(30), served)
                .await
                .is_ok()
        );
    }
}
