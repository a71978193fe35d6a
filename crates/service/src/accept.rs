//! Accepting connections, for the daemons that listen for clients
//! (smtp-server, pop3-server, imap-server): binding each config key's
//! listeners and naming them for the run file, the accept loop of every
//! listener, admission within the connection limits (all listeners together,
//! per client address, and per user once logged in), the words that send a
//! client over the limit away, the TLS handshake with its time limit, and the
//! wait for open sessions at a stop.
//!
//! What a connection does once admitted is the daemon's: [`serve`] hands it
//! the stream, the peer, the listener's kind and an [`Admitted`] that counts
//! the connection until dropped.

use std::collections::{BTreeMap, HashMap};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// All listeners together.
    pub total: usize,
    /// From one client address.
    pub per_address: usize,
    /// Logged-in sessions of one user (`usize::MAX`: no limit).
    pub per_user: usize,
}

/// The open connections, counted by client address and by user.
#[derive(Debug)]
pub struct Connections {
    limits: ConnectionLimits,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    by_user: HashMap<String, usize>,
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

    /// Counts a connection from `ip`; `None` when a limit is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let mut table = self.lock();
        let from_ip = table.by_address.get(&ip).copied().unwrap_or(0);
        if table.total >= self.limits.total || from_ip >= self.limits.per_address {
            return None;
        }
        table.total += 1;
        *table.by_address.entry(ip).or_insert(0) += 1;
        Some(Admitted {
            connections: self.clone(),
            ip,
            user: None,
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
/// dropped.
#[derive(Debug)]
pub struct Admitted {
    connections: Arc<Connections>,
    ip: IpAddr,
    user: Option<String>,
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
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut table = self.connections.lock();
        table.total = table.total.saturating_sub(1);
        release(&mut table.by_address, &self.ip);
        if let Some(user) = &self.user {
            release(&mut table.by_user, user);
        }
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
    let directory = qs_directory::Directory::open(
        &config.directory.file,
        qs_directory::Options {
            subaddress_separator: config.directory.subaddress_separator,
        },
    )?;
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
/// handshake). Returns once no listener accepts any more; the connections
/// may still be open (see [`Connections::drain`]).
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
    let mut accepting = tokio::task::JoinSet::new();
    for l in listeners {
        let (handlers, connections, mut stop) =
            (handlers.clone(), connections.clone(), shutdown.clone());
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
                let Some(admitted) = connections.admit(peer.ip()) else {
                    warn!(%peer, listener = l.key, "connection refused: too many connections");
                    tokio::spawn(refuse(stream, (handlers.0)(l.kind)));
                    continue;
                };
                (handlers.1)(l.kind, l.key, stream, peer, admitted);
            }
        });
    }
    while accepting.join_next().await.is_some() {}
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

    fn limits(total: usize, per_address: usize, per_user: usize) -> ConnectionLimits {
        ConnectionLimits {
            total,
            per_address,
            per_user,
        }
    }

    #[test]
    fn admission_counts_addresses_and_users_until_dropped() {
        let table = Connections::new(limits(3, 2, 1));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut first = table.admit(a).unwrap();
        let second = table.admit(a).unwrap();
        assert!(table.admit(a).is_none(), "two per address");
        let mut third = table.admit(b).unwrap();
        assert!(table.admit(b).is_none(), "three in all");
        assert_eq!(table.open(), 3);

        assert!(first.add_user("u@example.test"));
        assert!(!third.add_user("u@example.test"), "one session per user");
        assert!(third.add_user("v@example.test"));
        drop(first);
        assert!(table.admit(a).is_some(), "a slot of a is free again");
        let mut again = table.admit(b).unwrap();
        assert!(again.add_user("u@example.test"), "u's session has ended");
        drop((second, third, again));
        assert_eq!(table.open(), 0);
        let t = table.lock();
        assert!(t.by_address.is_empty() && t.by_user.is_empty());
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
        let held = table.admit("192.0.2.1".parse().unwrap()).unwrap();
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
                        key: "test.listen",
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
        assert_eq!(key, "test.listen");
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut words = String::new();
        second.read_to_string(&mut words).await.unwrap();
        assert_eq!(words, "busy\r\n");
        trigger.fire();
        server.await.unwrap();
    }
}
