//! One client connection of a server, from accept to close: TLS from the
//! first byte or after STARTTLS (STLS in POP3), the loop that moves bytes
//! between the socket and a daemon's sans-IO session, and the write with its
//! time limit.
//!
//! [`connection`] takes a stream that [`crate::accept::serve`] admitted. On a
//! [`Security::Tls`] listener it does the handshake (within its time limit)
//! and runs one session over TLS. On a plain listener it runs a plaintext
//! session; when that session asks for STARTTLS, the session runner gives the
//! raw stream back, and after the handshake a fresh session runs over TLS:
//! nothing read or buffered before the handshake survives it
//! (CVE-2011-0411). How a session is built and run is the daemon's
//! ([`SessionRunner`]); a daemon whose connections run one [`Driven`]
//! session at a time only says how to build one ([`Server`]), and
//! [`Sessions`] runs them; [`serve_mailbox`] serves the listeners of such a
//! server (imap-server, pop3-server) that way.
//!
//! [`drive`] is the loop of one session. The daemon's session says what it
//! needs next ([`Driven::next`], a [`Next`], in the spirit of imap-next's
//! `Interrupt`): its output written, input read (within its read timeout, or
//! until the stop), the stream handed back for STARTTLS, or the close. The
//! work of its own protocol (a login, IDLE, a message transfer, the UPDATE
//! state) it does itself in [`Driven::act`], with the stream at hand.
//!
//! Every write goes through [`write_out`]: a client that does not read for
//! the time limit is dropped, and a big output buffer is given back to the
//! allocator afterwards, so an idle connection keeps little.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug};

use crate::accept::{self, Admitted, Connections, PlainAndTls, Security};
use crate::shutdown::Shutdown;

/// Bytes read from the socket at a time.
pub const READ_CHUNK: usize = 4096;
/// How long a session's last words (a BYE at autologout or at a stop) may
/// take to be written.
pub const LAST_WORDS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long closing the stream after the last answer may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// An output buffer bigger than this after a write is shrunk to
/// [`SHRUNK_CAPACITY`].
const MAX_KEPT_CAPACITY: usize = 64 * 1024;
/// See [`MAX_KEPT_CAPACITY`].
const SHRUNK_CAPACITY: usize = 8 * 1024;

/// A stream a session runs over: a TCP stream, or TLS over one.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How a session of a connection begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// In plaintext, on a plain listener: STARTTLS (STLS) is offered.
    Plain,
    /// Over TLS from the first byte, on a TLS listener.
    Tls,
    /// Over TLS after the plaintext session asked for STARTTLS: a fresh
    /// session, which greets nobody and knows nothing of the one before.
    AfterStartTls,
}

impl Start {
    /// True when the session runs over TLS.
    pub fn tls(self) -> bool {
        self != Start::Plain
    }
}

/// Builds and runs a daemon's sessions over the streams of one connection.
pub trait SessionRunner: Send {
    /// Runs a fresh session that begins as `start` says over `stream` until
    /// it ends; gives the stream back when the session asked for STARTTLS
    /// (everything the session buffered is dropped with it).
    fn run<S: Stream>(
        &mut self,
        stream: S,
        start: Start,
    ) -> impl Future<Output = io::Result<Option<S>>> + Send;
}

/// A server whose connections run one [`Driven`] session at a time, built
/// afresh for each start (a second one after STARTTLS).
pub trait Server: Send + Sync + 'static {
    /// A session, and what the server keeps beside it.
    type Session<'a>: Driven
    where
        Self: 'a;

    /// A fresh session for the client at `peer`, begun as `start` says.
    fn session(&self, start: Start, peer: SocketAddr) -> Self::Session<'_>;
}

/// The sessions of one connection of a [`Server`], one after the other.
pub struct Sessions<T> {
    server: Arc<T>,
    peer: SocketAddr,
    shutdown: Shutdown,
    admitted: Admitted,
}

impl<T> Sessions<T> {
    /// The sessions of the client at `peer`, admitted as `admitted`.
    pub fn new(server: Arc<T>, peer: SocketAddr, shutdown: Shutdown, admitted: Admitted) -> Self {
        Sessions {
            server,
            peer,
            shutdown,
            admitted,
        }
    }
}

impl<T: Server> SessionRunner for Sessions<T> {
    async fn run<S: Stream>(&mut self, stream: S, start: Start) -> io::Result<Option<S>> {
        let mut session = self.server.session(start, self.peer);
        drive(
            &mut session,
            stream,
            self.shutdown.clone(),
            &mut self.admitted,
        )
        .await
    }
}

/// Serves a mailbox server's listeners (plaintext and TLS) with
/// [`accept::serve`] until the stop. On a plaintext listener a client over
/// the connection limits reads `too_many`; each admitted connection runs in
/// a task of its own, inside the span that `span` makes of its session id,
/// client address and config key, as [`connection`] runs it with the
/// [`Sessions`] of `server`; its start and end are logged (at debug).
pub async fn serve_mailbox<T: Server>(
    listeners: PlainAndTls,
    connections: &Arc<Connections>,
    shutdown: &Shutdown,
    server: Arc<T>,
    tls: Tls,
    too_many: &'static [u8],
    span: fn(&str, SocketAddr, &'static str) -> tracing::Span,
) {
    let sessions_shutdown = shutdown.clone();
    accept::serve(
        listeners.into_listening(),
        connections,
        shutdown,
        move |kind| (kind == Security::Plain).then_some(too_many),
        move |kind, key, stream, peer, admitted| {
            let span = span(&accept::session_id(), peer, key);
            let shutdown = sessions_shutdown.clone();
            let mut sessions = Sessions::new(server.clone(), peer, shutdown, admitted);
            let tls = tls.clone();
            tokio::spawn(
                async move {
                    debug!("connected");
                    match connection(stream, kind, &tls, &mut sessions).await {
                        Ok(()) => debug!("closed"),
                        Err(e) => debug!(error = %e, "connection lost"),
                    }
                }
                .instrument(span),
            );
        },
    )
    .await;
}

/// The TLS side of a server's connections.
#[derive(Clone)]
pub struct Tls {
    /// The certificate.
    pub acceptor: TlsAcceptor,
    /// The handshake must finish within this.
    pub handshake_timeout: Duration,
    /// The command that starts TLS on a plain listener, for the log
    /// ("STARTTLS", "STLS").
    pub starttls: &'static str,
}

/// One connection, from accept to close: the handshake on a TLS listener,
/// then the sessions `runner` runs (a second, over TLS, when the plaintext
/// one asked for STARTTLS). A failed handshake is logged and ends it without
/// an error; the error is that of a session's stream.
pub async fn connection<S: Stream, R: SessionRunner>(
    stream: S,
    security: Security,
    tls: &Tls,
    runner: &mut R,
) -> io::Result<()> {
    match security {
        Security::Plain => plain_connection(stream, tls, runner).await,
        Security::Tls => {
            match accept::tls_handshake(&tls.acceptor, stream, tls.handshake_timeout).await {
                Some(stream) => runner.run(stream, Start::Tls).await.map(drop),
                None => Ok(()),
            }
        }
    }
}

/// A plain listener's connection: a plaintext session, and after STARTTLS
/// a fresh one over TLS.
async fn plain_connection<S: Stream, R: SessionRunner>(
    stream: S,
    tls: &Tls,
    runner: &mut R,
) -> io::Result<()> {
    let Some(raw) = runner.run(stream, Start::Plain).await? else {
        return Ok(());
    };
    let Some(stream) = accept::tls_handshake(&tls.acceptor, raw, tls.handshake_timeout).await
    else {
        return Ok(());
    };
    debug!("TLS started ({})", tls.starttls);
    // The TLS session offers no STARTTLS: a stream it gave back is dropped.
    runner.run(stream, Start::AfterStartTls).await.map(drop)
}

/// What a session asks its driver for next.
#[derive(Debug)]
pub enum Next<A> {
    /// Write the output now, then ask again.
    Flush,
    /// Write the output, then read from the client: the bytes go to
    /// [`Driven::feed`].
    NeedInput,
    /// Write the output (the answer to STARTTLS) and hand the stream back
    /// for the handshake; the session ends here.
    StartTls,
    /// The session is over: its address and user counts are given back
    /// ([`Admitted::end_session`]), its last answer written, and the stream
    /// closed.
    Close,
    /// Work of the protocol's own, for [`Driven::act`].
    Act(A),
}

/// Whether a session goes on after [`Driven::act`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Ask the session what it needs next.
    Continue,
    /// The session has ended (the client went away, or it said goodbye).
    End,
}

/// Why a read that [`Next::NeedInput`] asked for brought no bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// The client sent nothing for [`Driven::read_timeout`].
    TimedOut,
    /// The daemon is stopping (or a hand-over's grace period is over).
    Stopping,
    /// The client closed the connection.
    Closed,
}

/// What [`Driven::act`] may use of the connection besides its session.
pub struct Io<'a, S> {
    /// The stream.
    pub stream: S,
    /// A buffer for reads from `stream`, [`READ_CHUNK`] bytes long.
    pub buf: Vec<u8>,
    /// The stop signal.
    pub shutdown: Shutdown,
    /// The connection's place in the connection limits.
    pub admitted: &'a mut Admitted,
}

/// A daemon's session as [`drive`] sees it: its sans-IO session and what
/// the daemon keeps beside it.
pub trait Driven: Send {
    /// The work of the protocol's own that the session may ask for.
    type Action: Send;

    /// What the session needs next; the output it has is in
    /// [`Driven::output`].
    fn next(&mut self) -> impl Future<Output = io::Result<Next<Self::Action>>> + Send;

    /// The output not yet written.
    fn output(&mut self) -> &mut Vec<u8>;

    /// A write to a client that does not read fails after this.
    fn write_timeout(&self) -> Duration;

    /// A client that sends nothing for this long is [`Silence::TimedOut`].
    fn read_timeout(&self) -> Duration;

    /// Bytes from the client.
    fn feed(&mut self, bytes: &[u8]);

    /// A read brought no bytes, and the session ends: its last words (if
    /// any) go to [`Driven::output`], written within
    /// [`LAST_WORDS_TIMEOUT`].
    fn silence(&mut self, why: Silence);

    /// Does what the session asked for.
    fn act<S: Stream>(
        &mut self,
        action: Self::Action,
        io: &mut Io<'_, S>,
    ) -> impl Future<Output = io::Result<Flow>> + Send;
}

/// Runs `session` over `stream` until it ends. Returns the stream when the
/// session asked for STARTTLS.
pub async fn drive<S: Stream, D: Driven>(
    session: &mut D,
    stream: S,
    shutdown: Shutdown,
    admitted: &mut Admitted,
) -> io::Result<Option<S>> {
    let mut io = Io {
        stream,
        buf: vec![0u8; READ_CHUNK],
        shutdown,
        admitted,
    };
    loop {
        let next = session.next().await?;
        let within = session.write_timeout();
        match next {
            Next::Flush => write_out(&mut io.stream, session.output(), within).await?,
            Next::NeedInput => {
                write_out(&mut io.stream, session.output(), within).await?;
                let read = tokio::select! {
                    read = tokio::time::timeout(session.read_timeout(), io.stream.read(&mut io.buf)) => {
                        match read {
                            Ok(result) => Some(result?),
                            Err(_) => None,
                        }
                    }
                    // After a hand-over a session may go on for the grace period.
                    _ = io.shutdown.wait_sessions_end() => {
                        session.silence(Silence::Stopping);
                        write_out(&mut io.stream, session.output(), LAST_WORDS_TIMEOUT).await?;
                        return Ok(None);
                    }
                };
                match read {
                    Some(0) | None => {
                        let why = match read {
                            None => Silence::TimedOut,
                            _ => Silence::Closed,
                        };
                        session.silence(why);
                        write_out(&mut io.stream, session.output(), LAST_WORDS_TIMEOUT).await?;
                        return Ok(None);
                    }
                    Some(n) => session.feed(&io.buf[..n]),
                }
            }
            Next::StartTls => {
                write_out(&mut io.stream, session.output(), within).await?;
                return Ok(Some(io.stream));
            }
            Next::Close => {
                // Given back before the last answer (LOGOUT's OK, QUIT's
                // +OK) is sent, so a client that read it may connect again
                // at once.
                io.admitted.end_session();
                write_out(&mut io.stream, session.output(), within).await?;
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, io.stream.shutdown()).await;
                return Ok(None);
            }
            Next::Act(action) => {
                if session.act(action, &mut io).await? == Flow::End {
                    return Ok(None);
                }
            }
        }
    }
}

/// Writes out what is waiting in `out`, and flushes; a client that does not
/// read for `within` is dropped ("the client stopped reading"). `out` is
/// emptied, and a big buffer is given back to the allocator (an idle
/// connection keeps little).
pub async fn write_out<S>(stream: &mut S, out: &mut Vec<u8>, within: Duration) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    if out.is_empty() {
        return Ok(());
    }
    let written = tokio::time::timeout(within, async {
        stream.write_all(out).await?;
        stream.flush().await
    })
    .await;
    out.clear();
    if out.capacity() > MAX_KEPT_CAPACITY {
        out.shrink_to(SHRUNK_CAPACITY);
    }
    match written {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading",
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsConnector;

    use super::*;
    use crate::accept::ConnectionLimits;

    const KEY: &str = "test.listen";

    /// A loopback TCP pair: the server's end and the client's.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (accepted.unwrap().0, client.unwrap())
    }

    /// The test certificate, as the daemons' tests make it.
    fn acceptor(dir: &std::path::Path) -> TlsAcceptor {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        crate::tls::ensure_self_signed("mx.test", &cert, &key).unwrap();
        crate::tls::acceptor(&cert, &key).unwrap()
    }

    fn connector() -> TlsConnector {
        TlsConnector::from(crate::tls::client_config(None).unwrap())
    }

    fn admitted(connections: &Arc<Connections>) -> Admitted {
        connections
            .admit(KEY, "127.0.0.1".parse().unwrap())
            .unwrap()
    }

    fn connections() -> Arc<Connections> {
        Connections::new(ConnectionLimits {
            per_listener: vec![(KEY, 10)],
            per_address: 10,
            per_user: 10,
        })
    }

    /// A line protocol: greets with how it began, answers each line with
    /// "you said <line>", starts TLS on "STARTTLS", says goodbye on "QUIT".
    struct Echo<'a> {
        server: &'a EchoServer,
        start: Start,
        greeted: bool,
        input: Vec<u8>,
        out: Vec<u8>,
        silence: Option<Silence>,
    }

    impl<'a> Echo<'a> {
        fn new(server: &'a EchoServer, start: Start) -> Echo<'a> {
            Echo {
                server,
                start,
                greeted: false,
                input: Vec::new(),
                out: Vec::new(),
                silence: None,
            }
        }
    }

    impl Drop for Echo<'_> {
        fn drop(&mut self) {
            let ended = (self.start, self.silence);
            self.server.sessions.lock().unwrap().push(ended);
        }
    }

    impl Driven for Echo<'_> {
        type Action = ();

        async fn next(&mut self) -> io::Result<Next<()>> {
            if !std::mem::replace(&mut self.greeted, true) {
                self.out
                    .extend_from_slice(format!("hello {:?}\r\n", self.start).as_bytes());
                return Ok(Next::Flush);
            }
            let Some(end) = self.input.iter().position(|&b| b == b'\n') else {
                return Ok(Next::NeedInput);
            };
            let line: Vec<u8> = self.input.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_owned();
            match line.as_str() {
                "STARTTLS" => {
                    self.out.extend_from_slice(b"go ahead\r\n");
                    Ok(Next::StartTls)
                }
                "QUIT" => {
                    self.out.extend_from_slice(b"bye\r\n");
                    Ok(Next::Close)
                }
                "ACT" => Ok(Next::Act(())),
                _ => {
                    self.out
                        .extend_from_slice(format!("you said {line}\r\n").as_bytes());
                    Ok(Next::Flush)
                }
            }
        }

        fn output(&mut self) -> &mut Vec<u8> {
            &mut self.out
        }

        fn write_timeout(&self) -> Duration {
            Duration::from_secs(30)
        }

        fn read_timeout(&self) -> Duration {
            Duration::from_millis(300)
        }

        fn feed(&mut self, bytes: &[u8]) {
            self.input.extend_from_slice(bytes);
        }

        fn silence(&mut self, why: Silence) {
            self.silence = Some(why);
            self.out.extend_from_slice(b"silence\r\n");
        }

        async fn act<S: Stream>(&mut self, (): (), io: &mut Io<'_, S>) -> io::Result<Flow> {
            // Writes with the stream at hand, and ends the session.
            let within = self.write_timeout();
            write_out(&mut io.stream, &mut self.out, within).await?;
            io.stream.write_all(b"acted\r\n").await?;
            Ok(Flow::End)
        }
    }

    /// Builds [`Echo`] sessions and remembers how each began and ended.
    #[derive(Default)]
    struct EchoServer {
        sessions: std::sync::Mutex<Vec<(Start, Option<Silence>)>>,
    }

    impl Server for EchoServer {
        type Session<'a> = Echo<'a>;

        fn session(&self, start: Start, _peer: SocketAddr) -> Echo<'_> {
            Echo::new(self, start)
        }
    }

    /// Serves `server_end` as a listener of `security` does, in a task that
    /// gives back how each session began and ended.
    fn serve(
        server_end: TcpStream,
        security: Security,
        handshake_timeout: Duration,
    ) -> tokio::task::JoinHandle<Vec<(Start, Option<Silence>)>> {
        tokio::spawn(async move {
            let dir = tempfile::tempdir().unwrap();
            let acceptor = acceptor(dir.path());
            let (_trigger, shutdown) = crate::shutdown::channel();
            let server = Arc::new(EchoServer::default());
            let peer = server_end.peer_addr().unwrap();
            let admitted = admitted(&connections());
            let mut sessions = Sessions::new(server.clone(), peer, shutdown, admitted);
            let tls = Tls {
                acceptor,
                handshake_timeout,
                starttls: "STARTTLS",
            };
            connection(server_end, security, &tls, &mut sessions)
                .await
                .unwrap();
            server.sessions.lock().unwrap().clone()
        })
    }

    async fn read_line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> String {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        line
    }

    #[tokio::test]
    async fn starttls_gives_a_fresh_session_over_tls_and_drops_what_was_buffered() {
        let (server_end, client_end) = pair().await;
        let server = serve(server_end, Security::Plain, Duration::from_secs(30));

        let mut client = BufReader::new(client_end);
        assert_eq!(read_line(&mut client).await, "hello Plain\r\n");
        // A line injected behind STARTTLS, in the same packet: read with it,
        // but it must not reach the session over TLS.
        client
            .get_mut()
            .write_all(b"STARTTLS\r\nINJECTED\r\n")
            .await
            .unwrap();
        assert_eq!(read_line(&mut client).await, "go ahead\r\n");
        let plain = client.into_inner();
        let name = rustls_pki_types::ServerName::try_from("mx.test").unwrap();
        let tls = connector().connect(name, plain).await.unwrap();
        let mut client = BufReader::new(tls);
        assert_eq!(
            read_line(&mut client).await,
            "hello AfterStartTls\r\n",
            "a fresh session"
        );
        client.get_mut().write_all(b"over TLS\r\n").await.unwrap();
        assert_eq!(
            read_line(&mut client).await,
            "you said over TLS\r\n",
            "nothing of the injected line"
        );
        client.get_mut().write_all(b"QUIT\r\n").await.unwrap();
        assert_eq!(read_line(&mut client).await, "bye\r\n");
        assert_eq!(read_line(&mut client).await, "", "closed after the goodbye");

        assert_eq!(
            server.await.unwrap(),
            [(Start::Plain, None), (Start::AfterStartTls, None)]
        );
    }

    #[tokio::test]
    async fn a_tls_listener_runs_one_session_over_tls_until_the_client_is_silent() {
        let (server_end, client_end) = pair().await;
        let server = serve(server_end, Security::Tls, Duration::from_secs(30));

        let name = rustls_pki_types::ServerName::try_from("mx.test").unwrap();
        let tls = connector().connect(name, client_end).await.unwrap();
        let mut client = BufReader::new(tls);
        assert_eq!(read_line(&mut client).await, "hello Tls\r\n");
        // Nothing more: the read timeout ends the session, with last words.
        assert_eq!(read_line(&mut client).await, "silence\r\n");
        assert_eq!(
            server.await.unwrap(),
            [(Start::Tls, Some(Silence::TimedOut))]
        );
    }

    #[tokio::test]
    async fn a_failed_handshake_runs_no_session() {
        let (server_end, mut client_end) = pair().await;
        let server = serve(server_end, Security::Tls, Duration::from_millis(300));
        client_end.write_all(b"HELO plaintext\r\n").await.unwrap();
        assert!(server.await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_stop_a_closed_client_and_an_action_end_the_session() {
        let table = connections();
        let (trigger, shutdown) = crate::shutdown::channel();
        let mut admitted = admitted(&table);
        let server = EchoServer::default();
        let fresh = |start| Echo::new(&server, start);

        let (server_end, client_end) = pair().await;
        let mut echo = fresh(Start::Plain);
        let mut client = BufReader::new(client_end);
        let stop = async {
            assert_eq!(read_line(&mut client).await, "hello Plain\r\n");
            trigger.fire();
            read_line(&mut client).await
        };
        let (ended, last) = tokio::join!(
            drive(&mut echo, server_end, shutdown.clone(), &mut admitted),
            stop
        );
        assert!(ended.unwrap().is_none());
        assert_eq!(
            (echo.silence, last.as_str()),
            (Some(Silence::Stopping), "silence\r\n")
        );

        let (_trigger, shutdown) = crate::shutdown::channel();
        let (server_end, mut client_end) = pair().await;
        // The client's half of the connection ends; it still reads.
        client_end.shutdown().await.unwrap();
        let mut echo = fresh(Start::Plain);
        let ended = drive(&mut echo, server_end, shutdown.clone(), &mut admitted).await;
        assert!(ended.unwrap().is_none());
        assert_eq!(echo.silence, Some(Silence::Closed));
        let mut got = String::new();
        client_end.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello Plain\r\nsilence\r\n");

        let (server_end, client_end) = pair().await;
        let mut echo = fresh(Start::Plain);
        let mut client = BufReader::new(client_end);
        let act = async {
            client.get_mut().write_all(b"one\r\nACT\r\n").await.unwrap();
            let mut lines = Vec::new();
            for _ in 0..3 {
                lines.push(read_line(&mut client).await);
            }
            lines
        };
        let (ended, lines) =
            tokio::join!(drive(&mut echo, server_end, shutdown, &mut admitted), act);
        assert!(ended.unwrap().is_none());
        assert_eq!(lines, ["hello Plain\r\n", "you said one\r\n", "acted\r\n"]);
        assert_eq!(echo.silence, None);
    }

    #[tokio::test]
    async fn a_client_that_never_reads_fails_the_write_in_time() {
        let (mut server_end, _client_end) = pair().await;
        // Far more than the socket buffers of a loopback pair hold.
        let mut out = vec![b'x'; 64 * 1024 * 1024];
        let err = write_out(&mut server_end, &mut out, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), "the client stopped reading");
        assert!(out.is_empty());
        assert!(
            out.capacity() <= MAX_KEPT_CAPACITY,
            "the big buffer is given back"
        );
    }

    #[tokio::test]
    async fn write_out_writes_everything_and_empties_the_buffer() {
        let (mut server_end, mut client_end) = pair().await;
        let mut out = b"* OK ready\r\n".to_vec();
        write_out(&mut server_end, &mut out, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(out.is_empty());
        drop(server_end);
        let mut got = Vec::new();
        client_end.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"* OK ready\r\n");
    }
}
