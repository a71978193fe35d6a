//! The client every module uses to talk to core-queue.
//!
//! Requests go over a small pool of connections, so concurrent callers do
//! not wait for each other. When core-queue is away (restarting, not yet
//! started) the client reconnects and retries with a short back-off until
//! [`ClientOptions::retry_for`] has passed: a restart is a delay, never an
//! error. Refusals by the server ([`ClientError::Refused`]) are returned at
//! once, with their kind: [`ClientError::is_permanent`] tells a producer to
//! refuse the message for good (an SMTP server answers 5xx), anything else is
//! temporary (4xx).
//!
//! A request whose answer was lost with the connection is sent again. For
//! `enqueue` this means a message may be queued twice, never lost: the
//! design accepts duplicates (local delivery is idempotent per queue id and
//! recipient). A repeated `complete` or `release` is refused as
//! [`ErrorKind::LeaseLost`] although the first one took effect.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpStream, UnixStream};

use crate::envelope::{
    Envelope, Job, JobClass, LeaseToken, Origin, QueueId, RecipientResult, Stats, Summary,
};
use crate::io::{Connection, FrameIoError, Stream};
use crate::proto::{ErrorKind, Limits, ProtoError, Request, Response, Secret, decode_response};

/// First pause between attempts to reach the server.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A [`BodySource`] is read and sent in pieces of this size.
const BODY_PIECE: usize = 64 * 1024;

/// A message body that the client reads while it sends it, so that a large
/// message need not be in memory whole ([`Client::enqueue_from`]). A request
/// sent again reads it again from the start.
pub trait BodySource: Send + Sync {
    /// Its length in octets.
    fn len(&self) -> u64;

    /// Whether it has no octets.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies octets from `offset` on into `buf`; returns how many, 0 only at
    /// the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

impl BodySource for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(<[u8]>::len(self));
        let n = buf.len().min(<[u8]>::len(self) - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// The body of a request: bytes at hand, or a source read while it is sent.
#[derive(Clone, Copy)]
enum Outgoing<'a> {
    Bytes(&'a [u8]),
    Source(&'a dyn BodySource),
}

/// Where core-queue listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP address (`host:port`) and the shared secret.
    Tcp {
        /// `host:port`.
        addr: String,
        /// The shared secret sent in `hello`.
        secret: Secret,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp { addr, .. } => write!(f, "tcp:{addr}"),
        }
    }
}

/// How the client behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long to keep trying to reach the server (default 30 s).
    pub retry_for: Duration,
    /// Longest wait for one connect or one request's answer (default 60 s);
    /// past it the connection counts as broken.
    pub io_timeout: Duration,
    /// Idle connections kept for reuse (default 8).
    pub max_idle: usize,
    /// Frame size limits.
    pub limits: Limits,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retry_for: Duration::from_secs(30),
            io_timeout: Duration::from_secs(60),
            max_idle: 8,
            limits: Limits::default(),
        }
    }
}

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server could not be reached (or kept dropping the connection)
    /// for the whole retry period.
    #[error("queue service at {endpoint} unavailable after {:.1}s: {last_error}", .waited.as_secs_f64())]
    Unavailable {
        /// The endpoint tried.
        endpoint: String,
        /// How long the client tried.
        waited: Duration,
        /// The last connection error.
        last_error: String,
    },
    /// The server answered with an error.
    #[error("queue refused the request ({kind}): {message}")]
    Refused {
        /// What kind of refusal.
        kind: ErrorKind,
        /// The server's message.
        message: String,
    },
    /// The server's answer made no sense for the request.
    #[error("unexpected answer from the queue: {0}")]
    Protocol(String),
    /// The request cannot be sent (e.g. a body over the limit).
    #[error("request cannot be sent: {0}")]
    Request(#[source] ProtoError),
    /// The [`BodySource`] could not be read, or ended before its length.
    #[error("the message body cannot be read: {0}")]
    Body(#[source] io::Error),
}

impl ClientError {
    /// The error kind as the server would classify it: unreachable and
    /// unclassified errors count as temporary.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Refused { kind, .. } => *kind,
            ClientError::Request(_) => ErrorKind::BadRequest,
            ClientError::Unavailable { .. } | ClientError::Protocol(_) | ClientError::Body(_) => {
                ErrorKind::Temporary
            }
        }
    }

    /// True when trying again later may succeed (answer SMTP with 4xx).
    pub fn is_temporary(&self) -> bool {
        matches!(self.kind(), ErrorKind::Temporary)
    }

    /// True when the queue will never take this request as it is, so a
    /// producer refuses the message for good (answers SMTP with 5xx): a
    /// [`ErrorKind::Permanent`] or [`ErrorKind::BadRequest`] refusal (an
    /// envelope or a frame core-queue does not accept), or a request that
    /// cannot be sent at all (a body over the frame limit). Everything else
    /// is the queue's trouble and not the message's, and counts as
    /// temporary even when [`ClientError::is_temporary`] says no: a wrong
    /// shared secret, a lost lease, an unreachable server, an answer that
    /// made no sense.
    pub fn is_permanent(&self) -> bool {
        matches!(self.kind(), ErrorKind::Permanent | ErrorKind::BadRequest)
    }

    /// True when the request was not sent for a body over the queue's frame
    /// limit ([`Limits::max_body`]).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            ClientError::Request(ProtoError::TooLarge { part: "body", .. })
        )
    }
}

/// What went wrong in one attempt.
enum Failure {
    /// The connection failed: reconnect and try again.
    Retry(String),
    /// Retrying cannot help.
    Fatal(ClientError),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Retry(e.to_string())
    }
}

/// A handle on core-queue; cheap to clone, safe to share.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    options: ClientOptions,
    idle: Mutex<Vec<Connection>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.endpoint)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `endpoint`; it connects at the first request.
    pub fn new(endpoint: Endpoint, options: ClientOptions) -> Client {
        Client {
            inner: Arc::new(Inner {
                endpoint,
                options,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Queues a message; returns once it is on disk. If the answer is lost
    /// the request is sent again with the same request key, so a server that
    /// honours keys (core-queue does) queues it once.
    pub async fn enqueue(
        &self,
        sender: &str,
        recipients: Vec<String>,
        origin: Origin,
        body: &[u8],
    ) -> Result<QueueId, ClientError> {
        let key = format!("{:032x}", rand::random::<u128>());
        self.enqueue_with_key(&key, sender, recipients, origin, body)
            .await
    }

    /// Like [`Client::enqueue`], with a request key chosen by the caller: a
    /// producer that may itself crash and send the same message again (a
    /// fetched message whose DELE never happened) derives the key from the
    /// message, so core-queue answers the first queue id again (it remembers
    /// keys for a day) instead of queueing a second copy.
    pub async fn enqueue_with_key(
        &self,
        key: &str,
        sender: &str,
        recipients: Vec<String>,
        origin: Origin,
        body: &[u8],
    ) -> Result<QueueId, ClientError> {
        let request = Request::Enqueue {
            sender: sender.to_owned(),
            recipients,
            origin,
            request_key: Some(key.to_owned()),
        };
        match self.call(&request, body).await? {
            (Response::Enqueued { id }, _) => Ok(id),
            (other, _) => Err(unexpected("enqueued", &other)),
        }
    }

    /// Like [`Client::enqueue`], with a body read from `body` in pieces while
    /// the request is written (the frame is the same), so that a message held
    /// in a file is never in memory whole.
    pub async fn enqueue_from(
        &self,
        sender: &str,
        recipients: Vec<String>,
        origin: Origin,
        body: &dyn BodySource,
    ) -> Result<QueueId, ClientError> {
        let request = Request::Enqueue {
            sender: sender.to_owned(),
            recipients,
            origin,
            request_key: Some(format!("{:032x}", rand::random::<u128>())),
        };
        match self.call_with(&request, Outgoing::Source(body)).await? {
            (Response::Enqueued { id }, _) => Ok(id),
            (other, _) => Err(unexpected("enqueued", &other)),
        }
    }

    /// Leases due work of `class` for `lease`; `None` when nothing is due.
    pub async fn lease(
        &self,
        class: &JobClass,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<Job>, ClientError> {
        let request = Request::Lease {
            class: class.clone(),
            worker: worker.to_owned(),
            lease_secs: lease.as_secs().max(1),
        };
        match self.call(&request, &[]).await? {
            (Response::Job { job }, _) => Ok(Some(job)),
            (Response::NoJob, _) => Ok(None),
            (other, _) => Err(unexpected("job", &other)),
        }
    }

    /// Reports results for a leased job and ends the lease; returns whether
    /// every recipient of the message is now done.
    pub async fn complete(
        &self,
        id: &QueueId,
        class: &JobClass,
        token: LeaseToken,
        results: Vec<RecipientResult>,
    ) -> Result<bool, ClientError> {
        let request = Request::Complete {
            id: id.clone(),
            class: class.clone(),
            token,
            results,
        };
        match self.call(&request, &[]).await? {
            (Response::Completed { finished }, _) => Ok(finished),
            (other, _) => Err(unexpected("completed", &other)),
        }
    }

    /// Gives a leased job back at once.
    pub async fn release(
        &self,
        id: &QueueId,
        class: &JobClass,
        token: LeaseToken,
    ) -> Result<(), ClientError> {
        let request = Request::Release {
            id: id.clone(),
            class: class.clone(),
            token,
        };
        self.call_ok(&request, &[]).await
    }

    /// Lists up to `limit` messages, oldest first.
    pub async fn list(&self, limit: u32) -> Result<Vec<Summary>, ClientError> {
        match self.call(&Request::List { limit }, &[]).await? {
            (Response::List { messages }, _) => Ok(messages),
            (other, _) => Err(unexpected("list", &other)),
        }
    }

    /// The envelope of a message.
    pub async fn show(&self, id: &QueueId) -> Result<Envelope, ClientError> {
        match self.call(&Request::Show { id: id.clone() }, &[]).await? {
            (Response::Envelope { envelope }, _) => Ok(envelope),
            (other, _) => Err(unexpected("envelope", &other)),
        }
    }

    /// The bytes of a message.
    pub async fn body(&self, id: &QueueId) -> Result<Vec<u8>, ClientError> {
        match self.call(&Request::Body { id: id.clone() }, &[]).await? {
            (Response::Body, body) => Ok(body),
            (other, _) => Err(unexpected("body", &other)),
        }
    }

    /// Makes every pending recipient of a message due now.
    pub async fn retry(&self, id: &QueueId) -> Result<(), ClientError> {
        self.call_ok(&Request::Retry { id: id.clone() }, &[]).await
    }

    /// Removes a message without a bounce.
    pub async fn delete(&self, id: &QueueId) -> Result<(), ClientError> {
        self.call_ok(&Request::Delete { id: id.clone() }, &[]).await
    }

    /// Counts over the queue.
    pub async fn stats(&self) -> Result<Stats, ClientError> {
        match self.call(&Request::Stats, &[]).await? {
            (Response::Stats { stats }, _) => Ok(stats),
            (other, _) => Err(unexpected("stats", &other)),
        }
    }

    /// Reads a value of the state area.
    pub async fn state_get(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let request = Request::StateGet {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
        };
        match self.call(&request, &[]).await? {
            (Response::StateValue { found: true }, value) => Ok(Some(value)),
            (Response::StateValue { found: false }, _) => Ok(None),
            (other, _) => Err(unexpected("state_value", &other)),
        }
    }

    /// Sets a value of the state area; returns once it is on disk.
    pub async fn state_put(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), ClientError> {
        let request = Request::StatePut {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
        };
        self.call_ok(&request, value).await
    }

    /// Deletes a value of the state area; returns once that is on disk.
    pub async fn state_delete(&self, namespace: &str, key: &str) -> Result<(), ClientError> {
        let request = Request::StateDelete {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
        };
        self.call_ok(&request, &[]).await
    }

    /// Keys of `namespace` starting with `prefix` and after `after`, at most
    /// `limit` (the server may cap it), with their values. Page by passing
    /// the last key returned as `after`.
    pub async fn state_scan(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, Vec<u8>)>, ClientError> {
        let request = Request::StateScan {
            namespace: namespace.to_owned(),
            prefix: prefix.to_owned(),
            after: after.map(str::to_owned),
            limit,
        };
        let (entries, body) = match self.call(&request, &[]).await? {
            (Response::StateEntries { entries }, body) => (entries, body),
            (other, _) => return Err(unexpected("state_entries", &other)),
        };
        let mut out = Vec::with_capacity(entries.len());
        let mut rest = body.as_slice();
        for entry in entries {
            let len = usize::try_from(entry.len).unwrap_or(usize::MAX);
            if len > rest.len() {
                return Err(ClientError::Protocol(
                    "state values shorter than announced".into(),
                ));
            }
            let (value, tail) = rest.split_at(len);
            out.push((entry.key, value.to_vec()));
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(ClientError::Protocol(
                "state values longer than announced".into(),
            ));
        }
        Ok(out)
    }

    /// Checks that core-queue answers.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.call(&Request::Ping, &[]).await? {
            (Response::Pong, _) => Ok(()),
            (other, _) => Err(unexpected("pong", &other)),
        }
    }

    async fn call_ok(&self, request: &Request, body: &[u8]) -> Result<(), ClientError> {
        match self.call(request, body).await? {
            (Response::Ok, _) => Ok(()),
            (other, _) => Err(unexpected("ok", &other)),
        }
    }

    /// Sends `request` and returns the answer, reconnecting and retrying on
    /// connection failures until `retry_for` has passed.
    async fn call(
        &self,
        request: &Request,
        body: &[u8],
    ) -> Result<(Response, Vec<u8>), ClientError> {
        self.call_with(request, Outgoing::Bytes(body)).await
    }

    async fn call_with(
        &self,
        request: &Request,
        body: Outgoing<'_>,
    ) -> Result<(Response, Vec<u8>), ClientError> {
        let options = &self.inner.options;
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let pooled = self.take_idle();
            let was_pooled = pooled.is_some();
            let attempt = match pooled {
                Some(conn) => self.exchange(conn, request, body).await,
                None => match self.connect().await {
                    Ok(conn) => self.exchange(conn, request, body).await,
                    Err(failure) => Err(failure),
                },
            };
            let last_error = match attempt {
                Ok((conn, response, body)) => {
                    self.put_idle(conn);
                    if let Response::Error { kind, message } = response {
                        return Err(ClientError::Refused { kind, message });
                    }
                    return Ok((response, body));
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => e,
            };
            if was_pooled {
                // The server closed an idle connection: try a fresh one now.
                tracing::debug!(error = %last_error, "pooled queue connection broken");
                continue;
            }
            let waited = started.elapsed();
            if waited >= options.retry_for {
                return Err(ClientError::Unavailable {
                    endpoint: self.inner.endpoint.to_string(),
                    waited,
                    last_error,
                });
            }
            tracing::debug!(endpoint = %self.inner.endpoint, error = %last_error, "queue unreachable, retrying");
            tokio::time::sleep(backoff.min(options.retry_for - waited)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn take_idle(&self) -> Option<Connection> {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
    }

    fn put_idle(&self, conn: Connection) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.inner.options.max_idle {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Connection, Failure> {
        let options = &self.inner.options;
        let connecting = async {
            let stream: Box<dyn Stream> = match &self.inner.endpoint {
                Endpoint::Unix(path) => Box::new(UnixStream::connect(path).await?),
                Endpoint::Tcp { addr, .. } => {
                    let stream = TcpStream::connect(addr.as_str()).await?;
                    stream.set_nodelay(true)?;
                    Box::new(stream)
                }
            };
            Ok::<_, io::Error>(stream)
        };
        let stream = tokio::time::timeout(options.io_timeout, connecting)
            .await
            .map_err(|_| Failure::Retry("connect timed out".into()))??;
        let conn = Connection::new(stream, options.limits);
        let Endpoint::Tcp { secret, .. } = &self.inner.endpoint else {
            return Ok(conn);
        };
        let hello = Request::Hello {
            secret: secret.clone(),
        };
        match self.exchange(conn, &hello, Outgoing::Bytes(&[])).await? {
            (conn, Response::Ok, _) => Ok(conn),
            (_, Response::Error { kind, message }, _) => {
                Err(Failure::Fatal(ClientError::Refused { kind, message }))
            }
            (_, other, _) => Err(Failure::Fatal(unexpected("ok", &other))),
        }
    }

    async fn exchange(
        &self,
        mut conn: Connection,
        request: &Request,
        body: Outgoing<'_>,
    ) -> Result<(Connection, Response, Vec<u8>), Failure> {
        let timeout = self.inner.options.io_timeout;
        let round_trip = async {
            let written = match body {
                Outgoing::Bytes(bytes) => conn.write_frame(request, bytes).await,
                Outgoing::Source(source) => write_from(&mut conn, request, source).await?,
            };
            written.map_err(|e| match e {
                FrameIoError::Io(e) => Failure::from(e),
                FrameIoError::Proto(e) => Failure::Fatal(ClientError::Request(e)),
            })?;
            match conn.read_frame().await {
                Ok(Some(frame)) => Ok(frame),
                Ok(None) => Err(Failure::Retry("connection closed before the answer".into())),
                Err(FrameIoError::Io(e)) => Err(e.into()),
                Err(FrameIoError::Proto(e)) => {
                    Err(Failure::Fatal(ClientError::Protocol(e.to_string())))
                }
            }
        };
        let frame = tokio::time::timeout(timeout, round_trip)
            .await
            .map_err(|_| {
                Failure::Retry(format!("no answer within {}s", timeout.as_secs_f64()))
            })??;
        let (response, body) = decode_response(frame)
            .map_err(|e| Failure::Fatal(ClientError::Protocol(e.to_string())))?;
        Ok((conn, response, body))
    }
}

/// Writes a frame whose body is read from `source` a piece at a time. A failure
/// to read the source is fatal (the outer error): another attempt would read
/// the same; a failure of the connection (the inner one) is not.
async fn write_from(
    conn: &mut Connection,
    request: &Request,
    source: &dyn BodySource,
) -> Result<Result<(), FrameIoError>, Failure> {
    let len = source.len();
    let Ok(body_len) = usize::try_from(len) else {
        return Err(Failure::Fatal(ClientError::Body(io::Error::other(
            "body too large for this platform",
        ))));
    };
    if let Err(e) = conn.write_head(request, body_len).await {
        return Ok(Err(e));
    }
    let mut piece = vec![0u8; BODY_PIECE.min(body_len.max(1))];
    let mut offset = 0u64;
    while offset < len {
        let want = usize::try_from(len - offset).map_or(piece.len(), |left| left.min(piece.len()));
        let n = match source.read_at(offset, &mut piece[..want]) {
            Ok(0) => {
                let short = io::Error::new(io::ErrorKind::UnexpectedEof, "shorter than its length");
                return Err(Failure::Fatal(ClientError::Body(short)));
            }
            Ok(n) => n,
            Err(e) => return Err(Failure::Fatal(ClientError::Body(e))),
        };
        if let Err(e) = conn.write_body_piece(&piece[..n]).await {
            return Ok(Err(e.into()));
        }
        offset += n as u64;
    }
    Ok(conn.flush().await.map_err(FrameIoError::from))
}

fn unexpected(expected: &str, got: &Response) -> ClientError {
    ClientError::Protocol(format!("expected {expected}, got {}", got.name()))
}
