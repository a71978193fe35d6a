//! One POP3 connection: TCP, TLS (implicit or after STLS), the login, and the
//! TRANSACTION commands the fetcher needs. Only bytes move here; the protocol
//! is [`crate::pop3`]'s. Every wait (connect, handshake, each read) is bounded
//! by the account's `timeout_secs`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use qs_directory::Secret;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{debug, trace, warn};

use crate::pop3::{
    Capabilities, Command, Decoder, Login, LoginError, ProtocolError, Status, Step, TlsMode,
    parse_list, parse_uidl,
};
use crate::tls::{TlsSetupError, server_name};

/// Read size.
const CHUNK: usize = 64 * 1024;

/// Why a POP3 session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The server could not be reached.
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The server took longer than `timeout_secs`.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The limit.
        secs: u64,
    },
    /// The TLS client could not be set up.
    #[error(transparent)]
    TlsSetup(#[from] TlsSetupError),
    /// The TLS handshake failed (certificate, name, protocol).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// Reading or writing failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The server broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The login failed.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// A command the session needs was refused.
    #[error("{command} refused: {reply}")]
    Refused {
        /// The command, without arguments that could be secret.
        command: &'static str,
        /// The server's text.
        reply: String,
    },
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Server {
    /// The host name or address.
    pub host: String,
    /// The port.
    pub port: u16,
    /// TLS mode.
    pub mode: TlsMode,
    /// The TLS client configuration (unused for `TlsMode::None`).
    pub tls: Arc<ClientConfig>,
    /// The limit on every wait.
    pub timeout: Duration,
}

/// The byte stream, before or after TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between STLS and the end of the handshake.
    Upgrading,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Upgrading => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// A logged-in POP3 session.
pub struct Connection {
    stream: Stream,
    decoder: Decoder,
    chunk: Vec<u8>,
    timeout: Duration,
    /// The server's address.
    pub peer: SocketAddr,
    /// True once the session runs over TLS.
    pub secure: bool,
    /// What the server can do (after TLS, when STLS was used).
    pub capabilities: Capabilities,
}

impl Connection {
    /// Connects, protects the connection as `server.mode` says, and logs in.
    pub async fn open(
        server: &Server,
        username: &str,
        password: Secret,
    ) -> Result<Connection, SessionError> {
        let secs = server.timeout.as_secs();
        let tcp = tokio::time::timeout(
            server.timeout,
            TcpStream::connect((server.host.as_str(), server.port)),
        )
        .await
        .map_err(|_| SessionError::Timeout {
            what: "the connection",
            secs,
        })?
        .map_err(|source| SessionError::Connect {
            host: server.host.clone(),
            port: server.port,
            source,
        })?;
        let peer = tcp.peer_addr()?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection {
            stream: Stream::Plain(tcp),
            decoder: Decoder::new(),
            chunk: vec![0; CHUNK],
            timeout: server.timeout,
            peer,
            secure: false,
            capabilities: Capabilities::default(),
        };
        if server.mode == TlsMode::Implicit {
            conn.handshake(server).await?;
        }
        let mut login = Login::new(server.mode, username, password);
        let greeting = match conn.status("the greeting").await {
            Err(SessionError::Protocol(ProtocolError::BadStatus(text))) => {
                return Err(LoginError::BadGreeting(format!("{text:?}")).into());
            }
            other => other?,
        };
        debug!(greeting = %greeting.text(), "connected");
        let mut step = login.on_reply(greeting, &[]);
        loop {
            match step {
                Step::Send(command) => {
                    conn.send(&command).await?;
                    let (status, lines) = conn.reply(&command).await?;
                    step = login.on_reply(status, &lines);
                }
                Step::StartTls => {
                    let dropped = conn.decoder.discard();
                    if dropped > 0 {
                        warn!(
                            bytes = dropped,
                            "the server sent data before the TLS handshake; thrown away"
                        );
                    }
                    conn.handshake(server).await?;
                    conn.decoder = Decoder::new();
                    step = login.tls_ready();
                }
                Step::LoggedIn(caps) => {
                    conn.capabilities = caps;
                    return Ok(conn);
                }
                Step::Fail(e) => return Err(e.into()),
            }
        }
    }

    async fn handshake(&mut self, server: &Server) -> Result<(), SessionError> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            return Err(SessionError::Tls("TLS over TLS".into()));
        };
        let name = server_name(&server.host)?;
        let connector = TlsConnector::from(server.tls.clone());
        let tls = tokio::time::timeout(server.timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| SessionError::Timeout {
                what: "the TLS handshake",
                secs: server.timeout.as_secs(),
            })?
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        self.stream = Stream::Tls(Box::new(tls));
        self.secure = true;
        Ok(())
    }

    async fn send(&mut self, command: &Command) -> Result<(), SessionError> {
        trace!(command = ?command, "C:");
        let bytes = command.encode();
        tokio::time::timeout(self.timeout, async {
            self.stream.write_all(&bytes).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| SessionError::Timeout {
            what: "the server to take a command",
            secs: self.timeout.as_secs(),
        })??;
        Ok(())
    }

    /// One read, bounded by the timeout.
    async fn fill(&mut self, what: &'static str) -> Result<(), SessionError> {
        let n = tokio::time::timeout(self.timeout, self.stream.read(&mut self.chunk))
            .await
            .map_err(|_| SessionError::Timeout {
                what,
                secs: self.timeout.as_secs(),
            })??;
        if n == 0 {
            return Err(SessionError::Closed);
        }
        self.decoder.feed(&self.chunk[..n]);
        Ok(())
    }

    async fn status(&mut self, what: &'static str) -> Result<Status, SessionError> {
        loop {
            if let Some(status) = self.decoder.status()? {
                trace!(status = ?status, "S:");
                return Ok(status);
            }
            self.fill(what).await?;
        }
    }

    /// The reply to `command`: its status, and its listing when multi-line.
    async fn reply(&mut self, command: &Command) -> Result<(Status, Vec<String>), SessionError> {
        let status = self.status("a reply").await?;
        if !(status.is_ok() && command.is_multiline()) {
            return Ok((status, Vec::new()));
        }
        let mut acc = Vec::new();
        loop {
            if let Some(lines) = self.decoder.lines(&mut acc)? {
                return Ok((status, lines));
            }
            self.fill("a listing").await?;
        }
    }

    /// LIST: every message number and its size.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>, SessionError> {
        self.send(&Command::List).await?;
        match self.reply(&Command::List).await? {
            (Status::Ok(_), lines) => Ok(parse_list(&lines)?),
            (other, _) => Err(SessionError::Refused {
                command: "LIST",
                reply: other.text().to_string(),
            }),
        }
    }

    /// UIDL: every message number and its unique id; `None` when the server
    /// does not support it.
    pub async fn uidl(&mut self) -> Result<Option<Vec<(u32, String)>>, SessionError> {
        self.send(&Command::Uidl).await?;
        match self.reply(&Command::Uidl).await? {
            (Status::Ok(_), lines) => Ok(Some(parse_uidl(&lines)?)),
            _ => Ok(None),
        }
    }

    /// RETR: the message, unstuffed, with CRLF line ends, in a buffer of
    /// `reserve` bytes' capacity (room for trace fields in front); the
    /// server's text when it answers `-ERR`. More than `limit` bytes is an
    /// error that ends the session.
    pub async fn retr(
        &mut self,
        n: u32,
        reserve: usize,
        limit: usize,
    ) -> Result<Result<Vec<u8>, String>, SessionError> {
        let command = Command::Retr(n);
        self.send(&command).await?;
        let status = self.status("the answer to RETR").await?;
        if !status.is_ok() {
            return Ok(Err(status.text().to_string()));
        }
        let mut message = Vec::with_capacity(reserve.min(limit));
        while !self.decoder.data(&mut message, limit)? {
            self.fill("the message").await?;
        }
        Ok(Ok(message))
    }

    /// DELE: marks the message; the server removes it at QUIT.
    pub async fn dele(&mut self, n: u32) -> Result<(), SessionError> {
        self.send(&Command::Dele(n)).await?;
        match self.status("the answer to DELE").await? {
            Status::Ok(_) => Ok(()),
            other => Err(SessionError::Refused {
                command: "DELE",
                reply: other.text().to_string(),
            }),
        }
    }

    /// QUIT: the server applies the deletions (the UPDATE state).
    pub async fn quit(mut self) -> Result<(), SessionError> {
        self.send(&Command::Quit).await?;
        let status = self.status("the answer to QUIT").await?;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.stream.shutdown()).await;
        match status {
            Status::Ok(_) => Ok(()),
            other => Err(SessionError::Refused {
                command: "QUIT",
                reply: other.text().to_string(),
            }),
        }
    }
}
