//! Enqueue with a request key of our choosing.
//!
//! core-queue remembers each enqueue's request key for a day and answers a
//! repeated key with the first queue id instead of queueing the message
//! again. The queue client draws a fresh random key per call, which protects
//! against a lost answer but not against pop-client itself dying between the
//! enqueue and the record of it: the message is still on the provider's
//! server, and the next poll would queue it a second time. So pop-client
//! derives the key from the account, the UIDL and the message's bytes, and
//! sends that request itself, over the queue's public wire protocol
//! ([`qs_queue::proto`]); everything else goes through [`qs_queue::Client`].
//! Like the client, it reconnects and retries for `client_retry_secs`.

use std::io;
use std::time::{Duration, Instant};

use qs_queue::proto::{FrameDecoder, decode_response, encode, encode_head};
use qs_queue::{ClientError, Endpoint, Limits, Origin, QueueId, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// First pause between attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Sends keyed enqueues to core-queue.
#[derive(Debug, Clone)]
pub struct KeyedQueue {
    endpoint: Endpoint,
    retry_for: Duration,
    io_timeout: Duration,
    limits: Limits,
}

/// One attempt's failure.
enum Attempt {
    /// Reconnect and try again.
    Retry(String),
    /// Trying again cannot help.
    Fatal(ClientError),
}

impl From<io::Error> for Attempt {
    fn from(e: io::Error) -> Attempt {
        Attempt::Retry(e.to_string())
    }
}

impl KeyedQueue {
    /// Talks to `endpoint`, retrying for `retry_for` when it is away.
    pub fn new(endpoint: Endpoint, retry_for: Duration) -> KeyedQueue {
        KeyedQueue {
            endpoint,
            retry_for,
            io_timeout: Duration::from_secs(120),
            limits: Limits::default(),
        }
    }

    /// Queues `body` for `recipients`; the same `key` again (within core-queue's
    /// memory of keys, a day) returns the first queue id and queues nothing.
    pub async fn enqueue(
        &self,
        key: &str,
        sender: &str,
        recipients: Vec<String>,
        origin: Origin,
        body: &[u8],
    ) -> Result<QueueId, ClientError> {
        let request = Request::Enqueue {
            sender: sender.to_string(),
            recipients,
            origin,
            request_key: Some(key.to_string()),
        };
        let head = encode_head(&request, body.len(), &self.limits).map_err(ClientError::Request)?;
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = tokio::time::timeout(self.io_timeout, self.attempt(&head, body)).await;
            let last_error = match attempt {
                Ok(Ok(Response::Enqueued { id })) => return Ok(id),
                Ok(Ok(Response::Error { kind, message })) => {
                    return Err(ClientError::Refused { kind, message });
                }
                Ok(Ok(other)) => {
                    return Err(ClientError::Protocol(format!(
                        "expected enqueued, got {}",
                        other.name()
                    )));
                }
                Ok(Err(Attempt::Fatal(e))) => return Err(e),
                Ok(Err(Attempt::Retry(e))) => e,
                Err(_) => format!("no answer within {}s", self.io_timeout.as_secs()),
            };
            let waited = started.elapsed();
            if waited >= self.retry_for {
                return Err(ClientError::Unavailable {
                    endpoint: self.endpoint.to_string(),
                    waited,
                    last_error,
                });
            }
            tracing::debug!(endpoint = %self.endpoint, error = %last_error, "queue unreachable, retrying");
            tokio::time::sleep(backoff.min(self.retry_for - waited)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn attempt(&self, head: &[u8], body: &[u8]) -> Result<Response, Attempt> {
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let mut stream = UnixStream::connect(path).await?;
                self.exchange(&mut stream, head, body).await
            }
            Endpoint::Tcp { addr, secret } => {
                let mut stream = TcpStream::connect(addr.as_str()).await?;
                stream.set_nodelay(true)?;
                let hello = encode(
                    &Request::Hello {
                        secret: secret.clone(),
                    },
                    &[],
                    &self.limits,
                )
                .map_err(|e| Attempt::Fatal(ClientError::Request(e)))?;
                match self.exchange(&mut stream, &hello, &[]).await? {
                    Response::Ok => self.exchange(&mut stream, head, body).await,
                    Response::Error { kind, message } => {
                        Err(Attempt::Fatal(ClientError::Refused { kind, message }))
                    }
                    other => Err(Attempt::Fatal(ClientError::Protocol(format!(
                        "expected ok, got {}",
                        other.name()
                    )))),
                }
            }
        }
    }

    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        head: &[u8],
        body: &[u8],
    ) -> Result<Response, Attempt> {
        stream.write_all(head).await?;
        stream.write_all(body).await?;
        stream.flush().await?;
        let mut decoder = FrameDecoder::new(self.limits);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let (response, _) = decode_response(frame)
                        .map_err(|e| Attempt::Fatal(ClientError::Protocol(e.to_string())))?;
                    return Ok(response);
                }
                Ok(None) => {}
                Err(e) => return Err(Attempt::Fatal(ClientError::Protocol(e.to_string()))),
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(Attempt::Retry("connection closed before the answer".into()));
            }
            decoder.feed(&chunk[..n]);
        }
    }
}
