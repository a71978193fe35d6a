//! The server side of the queue protocol: accept connections, authenticate
//! TCP peers, and hand each request to a [`Handler`].
//!
//! Each connection handles its requests one after the other; connections run
//! concurrently. core-queue implements [`Handler`]: it answers every request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::io::{Connection, FrameIoError, Stream};
use crate::proto::{ErrorKind, Limits, Request, Response, Secret, decode_request};
use crate::store::StoreError;

/// Answers requests. [`Request::Hello`] never reaches it: the server handles
/// authentication itself.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request whose frame body is `body`; returns the response
    /// and its body. For [`Response::Job`] the message bytes may be returned
    /// either as the body or in [`crate::Job::body`].
    fn handle(
        &self,
        request: Request,
        body: Vec<u8>,
    ) -> impl Future<Output = (Response, Vec<u8>)> + Send;
}

/// A listening socket the server accepts on.
#[derive(Debug)]
pub enum Listener {
    /// A Unix socket: local modules, no secret needed.
    Unix(UnixListener),
    /// A TCP socket: peers must send the shared secret first.
    Tcp(TcpListener),
}

impl From<UnixListener> for Listener {
    fn from(l: UnixListener) -> Listener {
        Listener::Unix(l)
    }
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Listener {
        Listener::Tcp(l)
    }
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The shared secret; required for TCP, checked on Unix only if a peer
    /// sends `hello`.
    pub secret: Option<Secret>,
    /// Frame size limits.
    pub limits: Limits,
    /// An idle connection is closed after this long (default 10 minutes).
    pub idle_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            secret: None,
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Why the server cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A TCP listener was given without a shared secret.
    #[error("a TCP queue listener needs a shared secret")]
    TcpWithoutSecret,
}

/// Serves `listener` until `shutdown` completes, with the secret `auth` and
/// default options. See [`serve_with`].
pub async fn serve<H: Handler>(
    listener: impl Into<Listener>,
    auth: Option<Secret>,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let options = ServerOptions {
        secret: auth,
        ..ServerOptions::default()
    };
    serve_with(listener, options, handler, shutdown).await
}

/// Serves `listener` until `shutdown` completes. Then it stops accepting,
/// lets every connection finish the request it is handling, closes them and
/// returns.
pub async fn serve_with<H: Handler>(
    listener: impl Into<Listener>,
    options: ServerOptions,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let listener = listener.into();
    if matches!(listener, Listener::Tcp(_)) && options.secret.is_none() {
        return Err(ServerError::TcpWithoutSecret);
    }
    let options = Arc::new(options);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut next_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "queue connection task failed");
                }
            }
            accepted = accept(&listener) => match accepted {
                Ok((stream, peer, needs_auth)) => {
                    next_id += 1;
                    let span = tracing::info_span!("queue_conn", conn = next_id, peer = %peer);
                    let conn = Connection::new(stream, options.limits);
                    let task = session(conn, needs_auth, Arc::clone(&options), Arc::clone(&handler), stop_rx.clone());
                    tasks.spawn(task.instrument(span));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn accept(listener: &Listener) -> std::io::Result<(Box<dyn Stream>, String, bool)> {
    match listener {
        Listener::Unix(l) => {
            let (stream, _) = l.accept().await?;
            Ok((Box::new(stream), "unix".to_owned(), false))
        }
        Listener::Tcp(l) => {
            let (stream, addr) = l.accept().await?;
            // Request/response frames: never wait for Nagle.
            stream.set_nodelay(true)?;
            Ok((Box::new(stream), addr.to_string(), true))
        }
    }
}

async fn session<H: Handler>(
    mut conn: Connection,
    needs_auth: bool,
    options: Arc<ServerOptions>,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
) {
    let mut authenticated = !needs_auth;
    loop {
        if *stop.borrow() {
            break;
        }
        let read = tokio::select! {
            read = conn.read_frame() => read,
            _ = stop.changed() => break,
            () = tokio::time::sleep(options.idle_timeout) => {
                tracing::debug!("idle connection closed");
                break;
            }
        };
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(FrameIoError::Io(e)) => {
                tracing::debug!(error = %e, "connection lost");
                break;
            }
            Err(FrameIoError::Proto(e)) => {
                tracing::warn!(error = %e, "bad frame, closing");
                let reply = Response::error(ErrorKind::BadRequest, "bad frame");
                let _ = conn.write_frame(&reply, &[]).await;
                break;
            }
        };
        let (request, body) = match decode_request(frame) {
            Ok(decoded) => decoded,
            Err(e) if !authenticated => {
                tracing::warn!(error = %e, "bad request header before authentication");
                let reply = Response::error(ErrorKind::Unauthorized, "authenticate first");
                let _ = conn.write_frame(&reply, &[]).await;
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "bad request header");
                let reply = Response::error(ErrorKind::BadRequest, "bad request header");
                if conn.write_frame(&reply, &[]).await.is_err() {
                    break;
                }
                continue;
            }
        };
        tracing::trace!(op = request.op(), body = body.len(), "request");
        let (response, body) = match request {
            Request::Hello { secret } => {
                let ok = options.secret.as_ref().is_none_or(|s| s.matches(&secret));
                if !ok {
                    tracing::warn!("wrong shared secret");
                    let reply = Response::error(ErrorKind::Unauthorized, "authentication failed");
                    let _ = conn.write_frame(&reply, &[]).await;
                    break;
                }
                authenticated = true;
                (Response::Ok, Vec::new())
            }
            _ if !authenticated => {
                tracing::warn!(op = request.op(), "request before authentication");
                let reply = Response::error(ErrorKind::Unauthorized, "authenticate first");
                let _ = conn.write_frame(&reply, &[]).await;
                break;
            }
            request => {
                let (mut response, mut body) = handler.handle(request, body).await;
                if let Response::Job { job } = &mut response
                    && body.is_empty()
                {
                    body = std::mem::take(&mut job.body);
                }
                (response, body)
            }
        };
        match conn.write_frame(&response, &body).await {
            Ok(()) => {}
            Err(FrameIoError::Proto(e)) => {
                tracing::error!(error = %e, "response cannot be sent");
                let reply = Response::error(ErrorKind::Temporary, "response too large");
                if conn.write_frame(&reply, &[]).await.is_err() {
                    break;
                }
            }
            Err(FrameIoError::Io(e)) => {
                tracing::debug!(error = %e, "connection lost while answering");
                break;
            }
        }
    }
    conn.shutdown().await;
}

impl StoreError {
    /// The protocol error kind a client sees for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::LeaseLost { .. } => ErrorKind::LeaseLost,
            StoreError::InvalidResult { .. }
            | StoreError::InvalidEnvelope(_)
            | StoreError::InvalidKey(_) => ErrorKind::BadRequest,
            _ => ErrorKind::Temporary,
        }
    }

    /// The response a client gets: the kind, and a message without internal
    /// detail for storage errors (log the error itself).
    pub fn to_response(&self) -> Response {
        match self.kind() {
            ErrorKind::Temporary => {
                Response::error(ErrorKind::Temporary, "queue storage unavailable")
            }
            kind => Response::error(kind, self.to_string()),
        }
    }
}
