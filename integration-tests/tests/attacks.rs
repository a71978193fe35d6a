//! Attacks from outside on smtp-server, imap-server and pop3-server, each
//! against the real binary on loopback: passwords guessed in parallel from
//! one address, idle connections flooding one listener from many addresses
//! (127.0.0.2, 127.0.0.3 …: all of 127/8 is loopback), and a client opening
//! sessions one after the other as fast as it can.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use integration_tests::{Daemon, Installation};

const WAIT: Duration = Duration::from_secs(30);
const ALICE: &str = "alice@example.test";

/// One of the three servers, and how its dialogue goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Smtp,
    Imap,
    Pop3,
}

impl Server {
    fn module(self) -> &'static str {
        match self {
            Server::Smtp => "smtp-server",
            Server::Imap => "imap-server",
            Server::Pop3 => "pop3-server",
        }
    }

    fn section(self) -> &'static str {
        match self {
            Server::Smtp => "smtp_server",
            Server::Imap => "imap_server",
            Server::Pop3 => "pop3_server",
        }
    }

    /// The listener where logins are tried (plaintext logins allowed there).
    fn login_key(self) -> &'static str {
        match self {
            Server::Smtp => "smtp_server.submission",
            Server::Imap => "imap_server.listen",
            Server::Pop3 => "pop3_server.listen",
        }
    }

    /// What a greeting begins with.
    fn greeting(self) -> &'static str {
        match self {
            Server::Smtp => "220 ",
            Server::Imap => "* OK",
            Server::Pop3 => "+OK",
        }
    }

    /// What a client over the connection limit reads on a plaintext listener.
    fn too_many(self) -> &'static str {
        match self {
            Server::Smtp => "421 4.7.0",
            Server::Imap => "* BYE [UNAVAILABLE]",
            Server::Pop3 => "-ERR [SYS/TEMP]",
        }
    }

    /// The failed-login limit of the default config.
    fn default_max_auth_failures(self) -> usize {
        match self {
            Server::Smtp => 5,
            Server::Imap | Server::Pop3 => 10,
        }
    }
}

/// An installation with alice (password "pw") and `server` running, logins
/// without TLS allowed.
fn start(server: Server, configure: impl Fn(&Installation)) -> (Installation, Daemon) {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set(server.section(), "allow_plaintext_auth", "true");
    configure(&inst);
    inst.add_users(&[ALICE]);
    let daemon = inst.start(server.module());
    (inst, daemon)
}

fn address(inst: &Installation, server: Server, key: &str) -> SocketAddr {
    inst.listening(server.module(), key)[0]
}

/// A plaintext client, line by line.
struct Client {
    stream: TcpStream,
}

impl Client {
    fn new(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Client { stream }
    }

    fn connect(addr: SocketAddr) -> Client {
        Client::new(TcpStream::connect(addr).unwrap())
    }

    fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
    }

    /// One line, without its line end ("" once the server closed).
    fn line(&mut self) -> String {
        read_line(&mut self.stream)
    }

    /// One SMTP reply, all its lines.
    fn smtp_reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let line = self.line();
            all.push_str(&line);
            all.push('\n');
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return all;
            }
        }
    }

    /// The greeting, and for SMTP the EHLO: ready for a login.
    fn greeted(mut self, server: Server) -> Client {
        let greeting = self.line();
        assert!(greeting.starts_with(server.greeting()), "{greeting}");
        if server == Server::Smtp {
            self.send("EHLO attacker.example");
            let ehlo = self.smtp_reply();
            assert!(ehlo.starts_with("250"), "{ehlo}");
        }
        self
    }

    /// Tries `password` for alice: the commands before the one that checks
    /// it are sent by `prepare`, that one by `check`, which returns the reply.
    fn prepare_login(&mut self, server: Server) {
        if server == Server::Pop3 {
            self.send(&format!("USER {ALICE}"));
            let reply = self.line();
            assert!(reply.starts_with("+OK"), "{reply}");
        }
    }

    fn check_login(&mut self, server: Server, password: &str) -> String {
        match server {
            Server::Smtp => {
                self.send(&auth_plain(ALICE, password));
                self.smtp_reply()
            }
            Server::Imap => {
                self.send(&format!("a LOGIN {ALICE} {password}"));
                loop {
                    let line = self.line();
                    if line.starts_with("a ") || line.is_empty() {
                        return line;
                    }
                }
            }
            Server::Pop3 => {
                self.send(&format!("PASS {password}"));
                self.line()
            }
        }
    }
}

fn read_line(stream: &mut impl Read) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte).unwrap_or(0) == 1 {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).trim_end().to_string()
}

/// `AUTH PLAIN` with its initial response.
fn auth_plain(login: &str, password: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{password}"));
    format!("AUTH PLAIN {token}")
}

/// How many lines of `log` contain `words`.
fn lines_with(log: &str, words: &str) -> usize {
    log.lines().filter(|l| l.contains(words)).count()
}

/// 19 wrong passwords sent at the same moment on 19 connections from one
/// address: only as many are checked as the failed-login limit allows, the
/// others are refused unchecked, and then the right password is refused too.
fn parallel_guesses_are_checked_only_up_to_the_limit(server: Server) {
    let (inst, daemon) = start(server, |_| {});
    let addr = address(&inst, server, server.login_key());
    let limit = server.default_max_auth_failures();
    let guesses = 19;
    let ready = Arc::new(Barrier::new(guesses));
    let threads: Vec<_> = (0..guesses)
        .map(|n| {
            let ready = ready.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(addr).greeted(server);
                client.prepare_login(server);
                ready.wait();
                client.check_login(server, &format!("guess-{n}"))
            })
        })
        .collect();
    let replies: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let log = daemon.log();
    let checked = lines_with(&log, "login failed: bad credentials");
    let refused_unchecked = lines_with(&log, "login refused: too many failures from this address");
    assert_eq!(
        (checked, refused_unchecked),
        (limit, guesses - limit),
        "{replies:#?}\n{log}"
    );
    assert_eq!(
        lines_with(&log, "too many failed logins from this address"),
        1
    );
    // What the client read says the same.
    let (wrong, blocked) = match server {
        Server::Smtp => ("535 5.7.8", "535 5.7.8"),
        Server::Imap => ("a NO [AUTHENTICATIONFAILED]", "a NO [UNAVAILABLE]"),
        Server::Pop3 => ("-ERR [AUTH]", "-ERR [SYS/TEMP]"),
    };
    let said = |prefix: &str| replies.iter().filter(|r| r.starts_with(prefix)).count();
    if server == Server::Smtp {
        assert_eq!(said(wrong), guesses, "{replies:#?}");
    } else {
        assert_eq!(
            (said(wrong), said(blocked)),
            (limit, guesses - limit),
            "{replies:#?}"
        );
    }

    // The block holds for the right password as well.
    let mut client = Client::connect(addr).greeted(server);
    client.prepare_login(server);
    let reply = client.check_login(server, "pw");
    assert!(reply.starts_with(blocked), "{reply}\n{}", daemon.log());
    // From another address the right password works.
    let mut other = Client::new(connect_from(loopback(2), addr)).greeted(server);
    other.prepare_login(server);
    let reply = other.check_login(server, "pw");
    let accepted = match server {
        Server::Smtp => "235",
        Server::Imap => "a OK",
        Server::Pop3 => "+OK",
    };
    assert!(reply.starts_with(accepted), "{reply}\n{}", daemon.log());
}

#[test]
fn smtp_parallel_guesses_are_checked_only_up_to_the_limit() {
    parallel_guesses_are_checked_only_up_to_the_limit(Server::Smtp);
}

#[test]
fn imap_parallel_guesses_are_checked_only_up_to_the_limit() {
    parallel_guesses_are_checked_only_up_to_the_limit(Server::Imap);
}

#[test]
fn pop3_parallel_guesses_are_checked_only_up_to_the_limit() {
    parallel_guesses_are_checked_only_up_to_the_limit(Server::Pop3);
}

/// 127.0.0.`n`.
fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A connection to `to` from the loopback address `from`.
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(from, 0))?;
            socket.connect(to).await?.into_std()
        })
        .unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// The first line a TLS listener says, trusting the installation's own
/// certificate (made for localhost).
fn tls_greeting(inst: &Installation, addr: SocketAddr) -> String {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(inst.data_dir().join("tls/cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connection =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    read_line(&mut tls)
}

/// Idle connections from 10 addresses, 20 each, fill the budget of the
/// listener open to anyone (port 25, or a mailbox server's plaintext port);
/// the other listeners still greet, and the full one refuses politely, and
/// logs it once per address until the summary.
fn a_flooded_listener_leaves_the_others_their_room(server: Server, others: &[&str]) {
    let (inst, mut daemon) = start(server, |_| {});
    let flooded_key = format!("{}.listen", server.section());
    let flooded = address(&inst, server, &flooded_key);
    let mut flood = Vec::new();
    for from in 2..12 {
        for _ in 0..20 {
            flood.push(Client::new(connect_from(loopback(from), flooded)).greeted(server));
        }
    }
    // The budget (200 by default) is used up, whoever comes next.
    let late = loopback(12);
    for _ in 0..5 {
        let mut refused = Client::new(connect_from(late, flooded));
        let words = refused.line();
        assert!(words.starts_with(server.too_many()), "{words}");
        assert_eq!(refused.line(), "", "closed after the refusal");
    }
    for key in others {
        let addr = address(&inst, server, key);
        let greeting = if key.ends_with("submissions") || key.ends_with("tls_listen") {
            tls_greeting(&inst, addr)
        } else {
            Client::connect(addr).line()
        };
        assert!(
            greeting.starts_with(server.greeting()),
            "{key}: {greeting:?}\n{}",
            daemon.log()
        );
    }
    // One line for the first refusal; the others are summed up (at the
    // minute, or here at the stop).
    daemon.terminate(WAIT).unwrap();
    let log = daemon.log();
    assert_eq!(
        lines_with(&log, "connection refused: too many connections"),
        1,
        "{log}"
    );
    assert_eq!(
        lines_with(
            &log,
            "refused 4 more connections from 127.0.0.12 in the last minute"
        ),
        1,
        "{log}"
    );
    drop(flood);
}

#[test]
fn smtp_a_flooded_port_25_leaves_submission_its_room() {
    a_flooded_listener_leaves_the_others_their_room(
        Server::Smtp,
        &["smtp_server.submission", "smtp_server.submissions"],
    );
}

#[test]
fn imap_a_flooded_plain_port_leaves_the_tls_port_its_room() {
    a_flooded_listener_leaves_the_others_their_room(Server::Imap, &["imap_server.tls_listen"]);
}

#[test]
fn pop3_a_flooded_plain_port_leaves_the_tls_port_its_room() {
    a_flooded_listener_leaves_the_others_their_room(Server::Pop3, &["pop3_server.tls_listen"]);
}

/// A client that opens sessions one after the other, each ended properly
/// (QUIT or LOGOUT, its answer read) and closed at once, is never refused,
/// even with one connection allowed per address: a session's address count
/// is given back as the session ends, before its last answer is sent, not
/// once its socket is gone.
fn sessions_in_sequence_are_never_refused(server: Server) {
    let (inst, daemon) = start(server, |inst| {
        inst.set(server.section(), "max_connections_per_ip", "1")
    });
    let plain = address(&inst, server, &format!("{}.listen", server.section()));
    let (quit, bye) = match server {
        Server::Smtp => ("QUIT", "221 "),
        Server::Imap => ("a LOGOUT", "a OK"),
        Server::Pop3 => ("QUIT", "+OK"),
    };
    for n in 0..300 {
        let mut client = Client::connect(plain);
        let greeting = client.line();
        assert!(
            greeting.starts_with(server.greeting()),
            "session {n}: {greeting}\n{}",
            daemon.log()
        );
        client.send(quit);
        loop {
            let line = client.line();
            assert!(!line.is_empty(), "session {n}: closed before {bye}");
            if line.starts_with(bye) {
                break;
            }
        }
    }
}

#[test]
fn smtp_sessions_in_sequence_are_never_refused() {
    sessions_in_sequence_are_never_refused(Server::Smtp);
}

#[test]
fn imap_sessions_in_sequence_are_never_refused() {
    sessions_in_sequence_are_never_refused(Server::Imap);
}

#[test]
fn pop3_sessions_in_sequence_are_never_refused() {
    sessions_in_sequence_are_never_refused(Server::Pop3);
}
