//! smtp-relay end to end: real core-queue, smtp-relay (and smtp-server)
//! processes. The far side is a scripted SMTP sink written here (it answers
//! per recipient, drops, stalls, refuses STARTTLS, and records every byte of
//! the data), Postfix's smtp-sink as an independent peer, and a scripted DNS
//! server for direct delivery.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use integration_tests::dns::{Rr, dns_server};
use integration_tests::{Daemon, Installation, all_files};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{SmtpTransport, Transport};
use qs_queue::{Origin, QueueId, RecipientStatus};

/// Longest wait for anything; generous for loaded CI machines (a passing run
/// does not wait for it).
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The scripted SMTP sink

/// How the sink answers one RCPT (given the address).
type RcptFn = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Something the sink does wrong on purpose.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Close the connection without a reply.
    Drop,
    /// Say nothing for this long, then close.
    Stall(Duration),
    /// Wait this long, then answer as usual.
    Delay(Duration),
    /// Answer, then close the connection (a server ending an idle session).
    ReplyAndClose,
}

#[derive(Clone)]
struct Script {
    /// `None`: STARTTLS not offered; else the reply to it (220 goes on to TLS).
    starttls: Option<&'static str>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS from the first byte (port 465 style) instead of STARTTLS.
    implicit: bool,
    pipelining: bool,
    eight_bit: bool,
    /// Offer AUTH PLAIN and require these credentials before MAIL.
    auth: Option<(String, String)>,
    rcpt: RcptFn,
    end: String,
    /// (connection number from 1, command verb or "." for the end of data, fault).
    faults: Vec<(usize, &'static str, Fault)>,
    /// (EHLO or STARTTLS, text): the text goes out in the same write as the
    /// reply to that command, as a man in the middle would inject it.
    inject: Option<(&'static str, &'static str)>,
}

impl Script {
    fn new() -> Script {
        Script {
            starttls: None,
            tls: None,
            implicit: false,
            pipelining: true,
            eight_bit: true,
            auth: None,
            rcpt: Arc::new(|_| "250 2.1.5 Ok".to_string()),
            end: "250 2.0.0 Ok: queued as SINK".to_string(),
            faults: Vec::new(),
            inject: None,
        }
    }

    /// STARTTLS with the installation's certificate.
    fn with_tls(mut self, inst: &Installation) -> Script {
        let data = inst.data_dir();
        self.tls = Some(
            qs_service::tls::server_config(&data.join("tls/cert.pem"), &data.join("tls/key.pem"))
                .unwrap(),
        );
        self.starttls = Some("220 2.0.0 Ready to start TLS");
        self
    }
}

/// One mail transaction as the sink saw it.
#[derive(Debug, Clone)]
struct Tx {
    mail: String,
    rcpts: Vec<String>,
    /// Every byte after the 354, up to and including the final `.CRLF`.
    wire: Vec<u8>,
    tls: bool,
    auth: Option<String>,
    /// RCPT was already there when MAIL was read (the client pipelined).
    pipelined: bool,
}

#[derive(Default)]
struct Log {
    connections: usize,
    commands: Vec<String>,
    txs: Vec<Tx>,
}

struct Sink {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl Sink {
    fn start(script: Script) -> Sink {
        Sink::start_on("127.0.0.1:0", script)
    }

    fn start_on(bind: &str, script: Script) -> Sink {
        let listener = TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let n = {
                    let mut log = shared.lock().unwrap();
                    log.connections += 1;
                    log.connections
                };
                let script = script.clone();
                let log = shared.clone();
                std::thread::spawn(move || serve(stream, n, &script, &log));
            }
        });
        Sink { addr, log }
    }

    fn txs(&self) -> Vec<Tx> {
        self.log.lock().unwrap().txs.clone()
    }

    fn connections(&self) -> usize {
        self.log.lock().unwrap().connections
    }

    fn commands(&self) -> Vec<String> {
        self.log.lock().unwrap().commands.clone()
    }

    fn wait_txs(&self, n: usize) -> Vec<Tx> {
        wait_until(&format!("{n} transactions at the sink"), || {
            let txs = self.txs();
            (txs.len() >= n).then_some(txs)
        })
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

struct Peer {
    stream: Stream,
    buf: Vec<u8>,
}

impl Peer {
    fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return Some(self.buf.drain(..p + 2).collect());
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn data(&mut self) -> Option<Vec<u8>> {
        let mut raw = Vec::new();
        loop {
            let line = self.line()?;
            raw.extend_from_slice(&line);
            if line == b".\r\n" {
                return Some(raw);
            }
        }
    }

    fn send(&mut self, text: &str) {
        let _ = self.stream.write_all(text.as_bytes());
        let _ = self.stream.write_all(b"\r\n");
        let _ = self.stream.flush();
    }

    /// Lines in one write (one packet), as an injection sends them.
    fn send_at_once(&mut self, lines: &[&str]) {
        let text: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        let _ = self.stream.write_all(text.as_bytes());
        let _ = self.stream.flush();
    }

    fn upgrade(self, config: Arc<rustls::ServerConfig>) -> Peer {
        let Stream::Plain(tcp) = self.stream else {
            panic!("TLS twice");
        };
        let conn = rustls::ServerConnection::new(config).unwrap();
        // Whatever came before the handshake is thrown away.
        Peer {
            stream: Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))),
            buf: Vec::new(),
        }
    }
}

fn serve(stream: TcpStream, n: usize, script: &Script, log: &Mutex<Log>) {
    let mut peer = Peer {
        stream: Stream::Plain(stream),
        buf: Vec::new(),
    };
    let fault = |verb: &str| {
        script
            .faults
            .iter()
            .find(|(c, v, _)| *c == n && v.eq_ignore_ascii_case(verb))
            .map(|f| f.2)
    };
    let mut tls = false;
    if let (true, Some(config)) = (script.implicit, &script.tls) {
        peer = peer.upgrade(config.clone());
        tls = true;
    }
    peer.send("220 sink.test ESMTP scripted sink");
    let mut authed: Option<String> = None;
    let mut mail: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut pipelined = false;
    while let Some(line) = peer.line() {
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        log.lock().unwrap().commands.push(text.clone());
        let verb = text
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match fault(&verb) {
            Some(Fault::Drop) => return,
            Some(Fault::Stall(d)) => {
                std::thread::sleep(d);
                return;
            }
            Some(Fault::Delay(d)) => std::thread::sleep(d),
            Some(Fault::ReplyAndClose) | None => {}
        }
        match verb.as_str() {
            "EHLO" => {
                let mut lines = vec!["sink.test".to_string()];
                if script.pipelining {
                    lines.push("PIPELINING".into());
                }
                if script.eight_bit {
                    lines.push("8BITMIME".into());
                }
                if script.starttls.is_some() && !tls && !script.implicit {
                    lines.push("STARTTLS".into());
                }
                if script.auth.is_some() {
                    lines.push("AUTH PLAIN".into());
                }
                lines.push("ENHANCEDSTATUSCODES".into());
                let last = lines.len() - 1;
                let mut reply: Vec<String> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                    .collect();
                if let Some(("EHLO", text)) = script.inject.filter(|_| !tls) {
                    reply.push(text.to_string());
                }
                peer.send_at_once(&reply.iter().map(String::as_str).collect::<Vec<_>>());
            }
            "STARTTLS" => match (script.starttls, &script.tls) {
                (Some(reply), Some(config)) if !tls => {
                    match script.inject {
                        Some(("STARTTLS", text)) => peer.send_at_once(&[reply, text]),
                        _ => peer.send(reply),
                    }
                    if reply.starts_with("220") {
                        peer = peer.upgrade(config.clone());
                        tls = true;
                        authed = None;
                        mail = None;
                        rcpts.clear();
                    }
                }
                _ => peer.send("502 5.5.1 STARTTLS not available"),
            },
            "AUTH" => {
                let words: Vec<&str> = text.split(' ').collect();
                let response = match words.get(2) {
                    Some(initial) => initial.to_string(),
                    None => {
                        peer.send("334 ");
                        let Some(l) = peer.line() else { return };
                        String::from_utf8_lossy(&l).trim_end().to_string()
                    }
                };
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(response)
                    .unwrap_or_default();
                let parts: Vec<String> = decoded
                    .split(|&b| b == 0)
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
                match &script.auth {
                    Some((user, pass))
                        if parts.len() == 3 && &parts[1] == user && &parts[2] == pass =>
                    {
                        authed = Some(user.clone());
                        peer.send("235 2.7.0 Authentication successful");
                    }
                    _ => peer.send("535 5.7.8 Authentication credentials invalid"),
                }
            }
            "MAIL" => {
                if script.auth.is_some() && authed.is_none() {
                    peer.send("530 5.7.0 Authentication required");
                } else {
                    mail = Some(text.clone());
                    rcpts.clear();
                    pipelined = !peer.buf.is_empty();
                    peer.send("250 2.1.0 Ok");
                }
            }
            "RCPT" => {
                let address = text
                    .split_once('<')
                    .and_then(|(_, rest)| rest.split_once('>'))
                    .map(|(a, _)| a.to_string())
                    .unwrap_or_default();
                let reply = (script.rcpt)(&address);
                if reply.starts_with('2') && mail.is_some() {
                    rcpts.push(address);
                }
                peer.send(&reply);
            }
            "DATA" => {
                let Some(m) = mail.clone().filter(|_| !rcpts.is_empty()) else {
                    peer.send("554 5.5.1 Error: no valid recipients");
                    continue;
                };
                peer.send("354 End data with <CR><LF>.<CR><LF>");
                let Some(wire) = peer.data() else { return };
                let end_fault = fault(".");
                match end_fault {
                    Some(Fault::Drop) => return,
                    Some(Fault::Stall(d)) => {
                        std::thread::sleep(d);
                        return;
                    }
                    Some(Fault::Delay(d)) => std::thread::sleep(d),
                    Some(Fault::ReplyAndClose) | None => {}
                }
                log.lock().unwrap().txs.push(Tx {
                    mail: m,
                    rcpts: std::mem::take(&mut rcpts),
                    wire,
                    tls,
                    auth: authed.clone(),
                    pipelined,
                });
                mail = None;
                peer.send(&script.end);
                if matches!(end_fault, Some(Fault::ReplyAndClose)) {
                    return;
                }
            }
            "RSET" => {
                mail = None;
                rcpts.clear();
                peer.send("250 2.0.0 Ok");
            }
            "NOOP" => peer.send("250 2.0.0 Ok"),
            "QUIT" => {
                peer.send("221 2.0.0 Bye");
                return;
            }
            _ => peer.send("502 5.5.2 Error: command not recognized"),
        }
    }
}

// ---------------------------------------------------------------------------
// Installations

struct Relay {
    inst: Installation,
    _queue: Daemon,
    relay: Daemon,
}

/// core-queue and smtp-relay, retrying every second, delivering to `sink`
/// (as the smarthost, without TLS, unless `configure` says otherwise).
fn relay_to(sink: &Sink, configure: impl Fn(&Installation)) -> Relay {
    relay_with(|inst| {
        inst.set("smtp_relay", "smarthost", &format!("\"{}\"", sink.addr));
        inst.set("smtp_relay", "tls", "\"none\"");
        configure(inst);
    })
}

fn relay_with(configure: impl Fn(&Installation)) -> Relay {
    let inst = installation();
    configure(&inst);
    start(inst)
}

fn installation() -> Installation {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("queue", "first_retry_secs", "1");
    inst.set("queue", "max_retry_interval_secs", "1");
    inst.set("queue", "bounce_copy_to_postmaster", "false");
    inst.add_users(&["alice@example.test"]);
    inst
}

fn start(inst: Installation) -> Relay {
    let queue = inst.start("core-queue");
    let relay = inst.start("smtp-relay");
    Relay {
        inst,
        _queue: queue,
        relay,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl Relay {
    fn enqueue(&self, sender: &str, rcpts: &[&str], body: &[u8]) -> QueueId {
        let client = self.inst.client(WAIT);
        runtime()
            .block_on(client.enqueue(
                sender,
                rcpts.iter().map(|r| r.to_string()).collect(),
                Origin {
                    module: "test".into(),
                    ..Origin::default()
                },
                body,
            ))
            .unwrap()
    }

    /// The recipients of a queued message: (address, status, attempts, last
    /// reply); `None` once the message has left the queue.
    fn show(&self, id: &QueueId) -> Option<Vec<(String, RecipientStatus, u32, String)>> {
        let client = self.inst.client(WAIT);
        let env = runtime().block_on(client.show(id)).ok()?;
        Some(
            env.recipients
                .into_iter()
                .map(|r| {
                    (
                        r.address,
                        r.status,
                        r.attempts,
                        r.last_reply.map(String::from).unwrap_or_default(),
                    )
                })
                .collect(),
        )
    }

    fn wait_gone(&self, id: &QueueId) {
        wait_until(&format!("{id} to leave the queue"), || {
            self.show(id).is_none().then_some(())
        });
    }

    /// Waits until the first recipient of `id` has been tried `attempts` times.
    fn wait_attempts(&self, id: &QueueId, attempts: u32) -> (RecipientStatus, String) {
        wait_until(&format!("{attempts} attempts for {id}"), || {
            let rcpts = self.show(id)?;
            let (_, status, tried, reply) = rcpts.into_iter().next()?;
            (tried >= attempts).then_some((status, reply))
        })
    }

    /// Like [`Relay::wait_attempts`], but fails at once, saying so, when the
    /// message leaves the queue instead (it was reported delivered).
    fn wait_attempts_still_queued(&self, id: &QueueId, attempts: u32) -> (RecipientStatus, String) {
        wait_until(&format!("{attempts} attempts for {id}"), || {
            match self.show(id) {
                None => Some(None),
                Some(rcpts) => {
                    let (_, status, tried, reply) = rcpts.into_iter().next()?;
                    (tried >= attempts).then_some(Some((status, reply)))
                }
            }
        })
        .unwrap_or_else(|| panic!("{id} left the queue: it was reported delivered"))
    }

    /// The bounces that reached alice.
    fn bounces(&self, count: usize) -> Vec<String> {
        self.inst
            .wait_for_mail("alice@example.test", count, WAIT)
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect()
    }
}

fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const BODY: &[u8] =
    b"From: alice@example.test\r\nTo: friend@far.example\r\nSubject: hello\r\n\r\nLine one.\r\n";

// ---------------------------------------------------------------------------
// Tests

#[test]
fn smarthost_with_required_starttls_and_auth_reuses_one_connection() {
    let inst = installation();
    let sink = Sink::start(Script {
        auth: Some(("relay-user".into(), "relay-pass".into())),
        ..Script::new().with_tls(&inst)
    });
    inst.set("smtp_relay", "smarthost", &format!("\"{}\"", sink.addr));
    inst.set("smtp_relay", "tls", "\"starttls\"");
    inst.set("smtp_relay", "tls_ca_file", "\"tls/cert.pem\"");
    inst.set("smtp_relay", "username", "\"relay-user\"");
    inst.set("smtp_relay", "password", "\"relay-pass\"");
    let r = start(inst);
    for i in 1..=3 {
        let id = r.enqueue("alice@example.test", &["friend@far.example"], BODY);
        let txs = sink.wait_txs(i);
        r.wait_gone(&id);
        let tx = &txs[i - 1];
        assert!(tx.tls, "sent without TLS");
        assert_eq!(tx.auth.as_deref(), Some("relay-user"));
        assert!(
            tx.mail.starts_with("MAIL FROM:<alice@example.test>"),
            "{}",
            tx.mail
        );
        assert_eq!(tx.rcpts, vec!["friend@far.example"]);
    }
    // The second and third message went over the first connection.
    assert_eq!(sink.connections(), 1, "{:?}", sink.commands());
    let log = r.relay.log();
    assert_eq!(log.matches("status=sent").count(), 3, "{log}");
    assert!(log.contains("to=friend@far.example"), "{log}");
}

#[test]
fn each_recipient_gets_its_own_result_then_a_retry_or_a_bounce() {
    let greylisted = Arc::new(AtomicUsize::new(0));
    let seen = greylisted.clone();
    let sink = Sink::start(Script {
        pipelining: false,
        rcpt: Arc::new(
            move |address| match address.split('@').next().unwrap_or("") {
                "perm" => "550 5.1.1 <perm@far.example>: Recipient address rejected: User unknown"
                    .to_string(),
                "later" if seen.fetch_add(1, Ordering::SeqCst) == 0 => {
                    "451 4.7.1 <later@far.example>: greylisted, try again".to_string()
                }
                _ => "250 2.1.5 Ok".to_string(),
            },
        ),
        ..Script::new()
    });
    let r = relay_to(&sink, |_| {});
    let id = r.enqueue(
        "alice@example.test",
        &["ok@far.example", "later@far.example", "perm@far.example"],
        BODY,
    );
    let txs = sink.wait_txs(2);
    r.wait_gone(&id);
    assert_eq!(txs[0].rcpts, vec!["ok@far.example"]);
    assert_eq!(txs[1].rcpts, vec!["later@far.example"]);
    assert!(!txs[0].pipelined, "the sink does not offer PIPELINING");
    assert_eq!(greylisted.load(Ordering::SeqCst), 2);
    // The refused recipient bounced with the remote reply and host.
    let bounces = r.bounces(1);
    assert_eq!(bounces.len(), 1);
    let dsn = &bounces[0];
    assert!(dsn.contains("perm@far.example"), "{dsn}");
    assert!(dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(
        dsn.contains("550 5.1.1 <perm@far.example>: Recipient address rejected: User unknown"),
        "{dsn}"
    );
    assert!(
        dsn.contains(&format!("[127.0.0.1]:{}", sink.addr.port())),
        "{dsn}"
    );
    assert!(!dsn.contains("later@far.example"), "{dsn}");
    let log = r.relay.log();
    assert!(log.contains("status=deferred"), "{log}");
    assert!(log.contains("status=bounced"), "{log}");
}

#[test]
fn dot_lines_and_8bit_bytes_arrive_byte_identical() {
    let sink = Sink::start(Script::new());
    let r = relay_to(&sink, |_| {});
    let body: &[u8] = b"From: alice@example.test\r\nTo: friend@far.example\r\nSubject: dots\r\n\r\n.\r\n..\r\n...three\r\n.leading dot\r\nmiddle . dot\r\n\r\n.\r\n\xc3\xa9t\xc3\xa9 8-bit\r\n.";
    let id = r.enqueue("alice@example.test", &["friend@far.example"], body);
    let tx = sink.wait_txs(1).remove(0);
    r.wait_gone(&id);
    let expected: &[u8] = b"From: alice@example.test\r\nTo: friend@far.example\r\nSubject: dots\r\n\r\n..\r\n...\r\n....three\r\n..leading dot\r\nmiddle . dot\r\n\r\n..\r\n\xc3\xa9t\xc3\xa9 8-bit\r\n..\r\n.\r\n";
    assert_eq!(
        String::from_utf8_lossy(&tx.wire),
        String::from_utf8_lossy(expected)
    );
    assert_eq!(tx.wire, expected);
    assert!(tx.mail.contains("BODY=8BITMIME"), "{}", tx.mail);
    assert!(
        tx.pipelined,
        "the sink offers PIPELINING: {:?}",
        sink.commands()
    );
}

#[test]
fn eight_bit_mail_to_a_server_without_8bitmime_bounces_and_bare_lf_is_never_sent() {
    let sink = Sink::start(Script {
        eight_bit: false,
        ..Script::new()
    });
    let r = relay_to(&sink, |_| {});
    let id = r.enqueue(
        "alice@example.test",
        &["friend@far.example"],
        b"Subject: caf\xc3\xa9\r\n\r\n\xc3\xa9t\xc3\xa9\r\n",
    );
    r.wait_gone(&id);
    let bounce = r.bounces(1).remove(0);
    assert!(
        bounce.contains("remote server does not accept 8-bit mail"),
        "{bounce}"
    );
    // A queued message with a bare LF (the queue never holds one; an old or
    // damaged one might) is refused here, not handed to the SMTP client.
    let id = r.enqueue(
        "alice@example.test",
        &["friend@far.example"],
        b"Subject: x\r\n\r\nbare\nLF\r\n",
    );
    r.wait_gone(&id);
    let bounces = r.bounces(2);
    assert!(bounces.iter().any(|b| b.contains("bare LF")), "{bounces:?}");
    assert!(
        !sink.commands().iter().any(|c| c.starts_with("MAIL")),
        "{:?}",
        sink.commands()
    );
}

#[test]
fn a_hundred_and_twenty_recipients_go_in_three_transactions_of_at_most_fifty() {
    let sink = Sink::start(Script::new());
    let r = relay_to(&sink, |inst| {
        inst.set("smtp_relay", "max_recipients_per_message", "50");
    });
    let rcpts: Vec<String> = (0..120).map(|i| format!("user{i}@far.example")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let id = r.enqueue("alice@example.test", &refs, BODY);
    let txs = sink.wait_txs(3);
    r.wait_gone(&id);
    let mut sizes: Vec<usize> = txs.iter().map(|t| t.rcpts.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![20, 50, 50]);
    let mut all: Vec<String> = txs.iter().flat_map(|t| t.rcpts.clone()).collect();
    all.sort();
    let mut want = rcpts.clone();
    want.sort();
    assert_eq!(all, want);
    assert_eq!(sink.txs().len(), 3);
}

#[test]
fn required_starttls_is_never_skipped() {
    // 1. The server does not offer STARTTLS.
    let plain = Sink::start(Script::new());
    let mut r = relay_to(&plain, |inst| inst.set("smtp_relay", "tls", "\"starttls\""));
    let id = r.enqueue("alice@example.test", &["friend@far.example"], BODY);
    let (status, reply) = r.wait_attempts(&id, 2);
    assert_eq!(status, RecipientStatus::Pending);
    assert!(reply.contains("does not offer STARTTLS"), "{reply}");
    assert!(reply.starts_with("4.7.4"), "{reply}");
    // 2. The server offers it and then refuses it.
    let refusing = Sink::start(Script {
        starttls: Some("454 4.7.0 TLS not available due to local problem"),
        ..Script::new().with_tls(&r.inst)
    });
    r.inst
        .set("smtp_relay", "smarthost", &format!("\"{}\"", refusing.addr));
    r.relay.restart();
    let reply = wait_until("a STARTTLS refusal", || {
        let (_, status, _, reply) = r.show(&id)?.remove(0);
        (status == RecipientStatus::Pending && reply.contains("454 4.7.0")).then_some(reply)
    });
    assert!(reply.contains("STARTTLS with"), "{reply}");
    // 3. TLS works, but the certificate is not trusted (no tls_ca_file).
    let untrusted = Sink::start(Script::new().with_tls(&r.inst));
    r.inst.set(
        "smtp_relay",
        "smarthost",
        &format!("\"{}\"", untrusted.addr),
    );
    r.relay.restart();
    let port = format!("]:{}", untrusted.addr.port());
    let reply = wait_until("a certificate failure", || {
        let (_, status, _, reply) = r.show(&id)?.remove(0);
        (status == RecipientStatus::Pending && reply.contains(&port)).then_some(reply)
    });
    assert!(reply.starts_with("4.7.5"), "{reply}");
    // Nothing was ever sent in plaintext, or at all.
    for sink in [&plain, &refusing, &untrusted] {
        assert!(sink.connections() >= 1);
        assert!(
            !sink.commands().iter().any(|c| c.starts_with("MAIL")),
            "{:?}",
            sink.commands()
        );
    }
    assert!(r.bounces_none());
}

/// A whole transaction's replies, as injected by a man in the middle: the
/// two EHLOs after TLS (the SMTP library's and the session's), MAIL, RCPT,
/// DATA and the end of data.
const FORGED_REPLIES: &str = "250 sink.test\r\n250 sink.test\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n250 2.0.0 Ok: queued as FORGED";

#[test]
fn replies_injected_before_tls_are_never_taken_as_answers() {
    // Required STARTTLS to the smarthost: the 220 to STARTTLS comes with the
    // replies to EHLO, MAIL, RCPT, DATA and the end of data in one packet.
    let inst = installation();
    let after_starttls = Sink::start(Script {
        inject: Some(("STARTTLS", FORGED_REPLIES)),
        ..Script::new().with_tls(&inst)
    });
    inst.set(
        "smtp_relay",
        "smarthost",
        &format!("\"{}\"", after_starttls.addr),
    );
    inst.set("smtp_relay", "tls", "\"starttls\"");
    inst.set("smtp_relay", "tls_ca_file", "\"tls/cert.pem\"");
    let mut r = start(inst);
    let id = r.enqueue("alice@example.test", &["friend@far.example"], BODY);
    let (status, reply) = r.wait_attempts_still_queued(&id, 2);
    assert_eq!(status, RecipientStatus::Pending, "{reply}");
    assert!(reply.starts_with("4.7.0"), "{reply}");
    assert!(reply.contains("followed the reply to STARTTLS"), "{reply}");
    // The same replies sent ahead with the EHLO reply, STARTTLS's among them.
    let with_ehlo = Sink::start(Script {
        inject: Some((
            "EHLO",
            "220 2.0.0 Ready to start TLS\r\n250 sink.test\r\n250 2.1.0 Ok",
        )),
        ..Script::new().with_tls(&r.inst)
    });
    r.inst.set(
        "smtp_relay",
        "smarthost",
        &format!("\"{}\"", with_ehlo.addr),
    );
    r.relay.restart();
    let reply = wait_until("an early reply refused", || {
        let (_, status, _, reply) = r.show(&id)?.remove(0);
        (status == RecipientStatus::Pending && reply.contains("before TLS when only"))
            .then_some(reply)
    });
    assert!(reply.starts_with("4.7.0"), "{reply}");
    for sink in [&after_starttls, &with_ehlo] {
        assert!(
            !sink.commands().iter().any(|c| c.starts_with("MAIL")),
            "{:?}",
            sink.commands()
        );
    }
    let log = r.relay.log();
    assert!(!log.contains("status=sent"), "{log}");
    assert!(log.contains("protocol violation before TLS"), "{log}");
    assert!(r.bounces_none());
    drop(r);

    // Direct delivery, opportunistic STARTTLS: the same attack is a
    // temporary failure too, not a reason to go on in plaintext.
    let inst = installation();
    let mx = Sink::start(Script {
        inject: Some(("STARTTLS", FORGED_REPLIES)),
        ..Script::new().with_tls(&inst)
    });
    let dns = dns_server(vec![("far.test", Rr::A(Ipv4Addr::new(127, 0, 0, 1)))]);
    inst.set("smtp_relay", "mode", "\"direct\"");
    inst.set("smtp_relay", "dns_server", &format!("\"{dns}\""));
    inst.set("smtp_relay", "mx_port", &mx.addr.port().to_string());
    let r = start(inst);
    let id = r.enqueue("alice@example.test", &["a@far.test"], BODY);
    let (status, reply) = r.wait_attempts_still_queued(&id, 2);
    assert_eq!(status, RecipientStatus::Pending, "{reply}");
    assert!(reply.contains("followed the reply to STARTTLS"), "{reply}");
    assert!(
        !mx.commands().iter().any(|c| c.starts_with("MAIL")),
        "{:?}",
        mx.commands()
    );
    assert!(!r.relay.log().contains("status=sent"));
}

#[test]
fn implicit_tls_checks_the_certificate_unless_told_not_to_and_a_failed_login_is_retried() {
    let inst = installation();
    let sink = Sink::start(Script {
        implicit: true,
        auth: Some(("relay-user".into(), "relay-pass".into())),
        ..Script::new().with_tls(&inst)
    });
    inst.set("smtp_relay", "smarthost", &format!("\"{}\"", sink.addr));
    inst.set("smtp_relay", "tls", "\"implicit\"");
    inst.set("smtp_relay", "username", "\"relay-user\"");
    inst.set("smtp_relay", "password", "\"wrong\"");
    let mut r = start(inst);
    let id = r.enqueue("alice@example.test", &["friend@far.example"], BODY);
    // 1. The self-signed certificate is not trusted: nothing is sent.
    let (status, reply) = r.wait_attempts(&id, 1);
    assert_eq!(status, RecipientStatus::Pending);
    assert!(reply.starts_with("4.7.5 TLS handshake with"), "{reply}");
    assert!(sink.commands().is_empty(), "{:?}", sink.commands());
    // 2. tls_verify = false: TLS is up, but the password is wrong.
    r.inst.set("smtp_relay", "tls_verify", "false");
    r.relay.restart();
    let reply = wait_until("a refused login", || {
        let (_, status, _, reply) = r.show(&id)?.remove(0);
        (status == RecipientStatus::Pending && reply.contains("535 5.7.8")).then_some(reply)
    });
    assert!(reply.starts_with("4.7.0 login at"), "{reply}");
    // 3. The right password: delivered over TLS.
    r.inst.set("smtp_relay", "password", "\"relay-pass\"");
    r.relay.restart();
    let tx = sink.wait_txs(1).remove(0);
    r.wait_gone(&id);
    assert!(tx.tls);
    assert_eq!(tx.auth.as_deref(), Some("relay-user"));
    assert!(r.bounces_none());
}

impl Relay {
    fn bounces_none(&self) -> bool {
        self.inst.inbox("alice@example.test").is_empty()
    }
}

#[test]
fn dropped_and_stalled_connections_are_retried() {
    let sink = Sink::start(Script {
        faults: vec![
            (1, "DATA", Fault::Drop),
            (2, "MAIL", Fault::Stall(Duration::from_secs(5))),
            (3, ".", Fault::Drop),
        ],
        ..Script::new()
    });
    let r = relay_to(&sink, |inst| {
        inst.set("smtp_relay", "command_timeout_secs", "1");
        // A slow greeting on a busy machine must not park the sink for a minute.
        inst.set("smtp_relay", "down_period_secs", "0");
    });
    let id = r.enqueue("alice@example.test", &["friend@far.example"], BODY);
    let txs = sink.wait_txs(1);
    r.wait_gone(&id);
    assert_eq!(txs.len(), 1);
    assert!(sink.connections() >= 4, "{}", sink.connections());
    let log = r.relay.log();
    assert!(log.contains("lost connection"), "{log}");
    assert!(log.contains("did not answer MAIL FROM within 1s"), "{log}");
    assert!(r.bounces_none());
}

#[test]
fn a_kept_connection_the_server_closed_is_replaced_at_once() {
    let sink = Sink::start(Script {
        faults: vec![(1, ".", Fault::ReplyAndClose)],
        ..Script::new()
    });
    let r = relay_to(&sink, |_| {});
    let first = r.enqueue("alice@example.test", &["friend@far.example"], BODY);
    r.wait_gone(&first);
    // The relay keeps the connection; the sink has closed its end meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    let second = r.enqueue("alice@example.test", &["friend@far.example"], BODY);
    r.wait_gone(&second);
    assert_eq!(sink.txs().len(), 2);
    assert_eq!(sink.connections(), 2);
    // Delivered on its first attempt: the closed connection cost no retry.
    let log = r.relay.log();
    assert_eq!(log.matches("status=sent").count(), 2, "{log}");
    assert!(!log.contains("status=deferred"), "{log}");
}

#[test]
fn sigterm_lets_the_delivery_in_hand_finish() {
    let sink = Sink::start(Script {
        faults: vec![(1, ".", Fault::Delay(Duration::from_secs(2)))],
        ..Script::new()
    });
    let mut r = relay_to(&sink, |_| {});
    let id = r.enqueue("alice@example.test", &["friend@far.example"], BODY);
    wait_until("the message data at the sink", || {
        sink.commands().iter().any(|c| c == "DATA").then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = r.relay.terminate(WAIT).expect("smtp-relay stopped in time");
    assert!(status.success(), "{status}");
    assert_eq!(sink.txs().len(), 1);
    // The result was reported before the exit: the message is gone.
    assert!(r.show(&id).is_none(), "{:?}", r.show(&id));
    let log = r.relay.log();
    assert!(log.contains("status=sent"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn direct_mode_follows_mx_records_and_marks_dead_hosts_down() {
    let inst = installation();
    let sink = Sink::start(Script::new().with_tls(&inst));
    let dns = dns_server(vec![
        ("far.test", Rr::Mx(20, "mx.far.test")),
        ("far.test", Rr::Mx(10, "dead.far.test")),
        ("other.test", Rr::Mx(10, "dead.far.test")),
        ("other.test", Rr::Mx(20, "mx.far.test")),
        ("dead.far.test", Rr::A(Ipv4Addr::new(127, 0, 0, 2))),
        ("mx.far.test", Rr::A(Ipv4Addr::new(127, 0, 0, 1))),
        // No MX: the domain's own address (RFC 5321 §5.1).
        ("plain.test", Rr::A(Ipv4Addr::new(127, 0, 0, 1))),
        // Null MX (RFC 7505).
        ("null.test", Rr::Mx(0, ".")),
    ]);
    inst.set("smtp_relay", "mode", "\"direct\"");
    inst.set("smtp_relay", "dns_server", &format!("\"{dns}\""));
    inst.set("smtp_relay", "mx_port", &sink.addr.port().to_string());
    inst.set("smtp_relay", "down_period_secs", "60");
    let r = start(inst);
    let first = r.enqueue("alice@example.test", &["a@far.test", "b@plain.test"], BODY);
    r.wait_gone(&first);
    let second = r.enqueue("alice@example.test", &["c@other.test"], BODY);
    r.wait_gone(&second);
    let txs = sink.txs();
    let mut rcpts: Vec<String> = txs.iter().flat_map(|t| t.rcpts.clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, vec!["a@far.test", "b@plain.test", "c@other.test"]);
    // One transaction per domain, each over opportunistic TLS.
    assert_eq!(txs.len(), 3);
    assert!(txs.iter().all(|t| t.tls), "opportunistic STARTTLS not used");
    // The dead MX (127.0.0.2 refuses) cost one try; other.test skipped it.
    let log = r.relay.log();
    let dead = format!("dead.far.test[127.0.0.2]:{}", sink.addr.port());
    assert_eq!(
        log.matches(&format!("host={dead} reply")).count(),
        1,
        "{log}"
    );
    // A null MX and a domain that does not exist bounce at once.
    let id = r.enqueue(
        "alice@example.test",
        &["x@null.test", "y@nowhere.test"],
        BODY,
    );
    r.wait_gone(&id);
    wait_until("bounces for the null MX and the missing domain", || {
        let all =
            String::from_utf8_lossy(&r.inst.inbox("alice@example.test").concat()).into_owned();
        (all.contains("null MX") && all.contains("nowhere.test does not exist")).then_some(())
    });
    assert_eq!(sink.txs().len(), 3);
}

#[test]
fn authenticated_submission_reaches_the_smarthost_and_strangers_cannot_relay() {
    let inst = installation();
    let sink = Sink::start(Script::new().with_tls(&inst));
    inst.set("smtp_relay", "smarthost", &format!("\"{}\"", sink.addr));
    inst.set("smtp_relay", "tls_ca_file", "\"tls/cert.pem\"");
    let r = start(inst);
    let _smtp = r.inst.start("smtp-server");
    let submission = r.inst.listening("smtp-server", "smtp_server.submission")[0];
    let mx = r.inst.listening("smtp-server", "smtp_server.listen")[0];
    let tls = TlsParameters::builder("localhost".into())
        .dangerous_accept_invalid_certs(true)
        .build()
        .unwrap();
    let envelope = Envelope::new(
        Some("alice@example.test".parse().unwrap()),
        vec!["friend@far.example".parse().unwrap()],
    )
    .unwrap();
    let body: &[u8] = b"From: alice@example.test\r\nTo: friend@far.example\r\nSubject: out\r\n\r\nHello, far away.";
    SmtpTransport::builder_dangerous(submission.ip().to_string())
        .port(submission.port())
        .tls(Tls::Required(tls))
        .credentials(Credentials::new("alice@example.test".into(), "pw".into()))
        .authentication(vec![Mechanism::Plain])
        .timeout(Some(WAIT))
        .build()
        .send_raw(&envelope, body)
        .unwrap();
    let tx = sink.wait_txs(1).remove(0);
    assert!(tx.tls);
    assert_eq!(tx.rcpts, vec!["friend@far.example"]);
    let wire = String::from_utf8_lossy(&tx.wire);
    assert!(wire.starts_with("Received: from "), "{wire}");
    assert!(wire.contains("with ESMTPSA id"), "{wire}");
    assert!(
        wire.ends_with("Subject: out\r\n\r\nHello, far away.\r\n.\r\n"),
        "{wire}"
    );
    // Without authentication, the same message is refused at RCPT.
    let err = SmtpTransport::builder_dangerous(mx.ip().to_string())
        .port(mx.port())
        .tls(Tls::None)
        .timeout(Some(WAIT))
        .build()
        .send_raw(&envelope, body)
        .unwrap_err();
    assert!(err.to_string().contains("relay access denied"), "{err}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.txs().len(), 1);
}

/// Postfix's smtp-sink on a loopback port, capturing each message to a file.
struct PostfixSink {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for PostfixSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts smtp-sink; `None` (after saying so) when it is not installed here.
/// In CI (`QS_CI=1`) it must be there.
fn postfix_sink() -> Option<PostfixSink> {
    let binary = PathBuf::from("/usr/sbin/smtp-sink");
    if !binary.exists() {
        assert!(
            std::env::var("QS_CI").as_deref() != Ok("1"),
            "/usr/sbin/smtp-sink is missing: .ci/setup installs Postfix for this test"
        );
        eprintln!("SKIPPED: Postfix's smtp-sink is not installed (apt-get install postfix)");
        return None;
    }
    let user = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let user = String::from_utf8_lossy(&user.stdout).trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = std::process::Command::new(&binary)
            .args(["-u", &user, "-d"])
            .arg(format!("{}/msg.", dir.path().display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("100")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(PostfixSink { child, port, dir });
            }
            if let Ok(Some(_)) = child.try_wait() {
                break; // the port was taken meanwhile: try another
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("smtp-sink did not start");
}

#[test]
fn postfix_smtp_sink_receives_relayed_mail() {
    let Some(postfix) = postfix_sink() else {
        return;
    };
    let r = relay_with(|inst| {
        inst.set(
            "smtp_relay",
            "smarthost",
            &format!("\"127.0.0.1:{}\"", postfix.port),
        );
        inst.set("smtp_relay", "tls", "\"none\"");
        inst.set("smtp_relay", "username", "\"relay-user\"");
        inst.set("smtp_relay", "password", "\"relay-pass\"");
    });
    let body: &[u8] = b"From: alice@example.test\r\nTo: friend@far.example\r\nSubject: interop\r\n\r\n.leading dot\r\n..two dots\r\n\xc3\xa9t\xc3\xa9\r\nlast line\r\n";
    let id = r.enqueue(
        "alice@example.test",
        &["friend@far.example", "other@far.example"],
        body,
    );
    r.wait_gone(&id);
    let dump = wait_until("smtp-sink's capture file", || {
        let files = all_files(postfix.dir.path());
        let file = files.first()?;
        let text = std::fs::read(file).ok()?;
        // Complete once the body's last line is there.
        String::from_utf8_lossy(&text)
            .contains("last line\n")
            .then_some(text)
    });
    let text = String::from_utf8_lossy(&dump);
    assert!(
        text.contains("X-Mail-Args: <alice@example.test> BODY=8BITMIME"),
        "{text}"
    );
    assert!(
        text.contains("X-Rcpt-Args: <friend@far.example>\nX-Rcpt-Args: <other@far.example>\n"),
        "{text}"
    );
    // smtp-sink writes LF line ends and undoes the dot-stuffing.
    let expected = String::from_utf8_lossy(body).replace("\r\n", "\n");
    assert!(text.contains(&expected), "{text}");
    let log = r.relay.log();
    assert!(
        log.contains(&format!(
            "relay=127.0.0.1[127.0.0.1]:{} status=sent",
            postfix.port
        )),
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// DKIM signing

/// `qsctl dkim generate` for `domain`: the TXT record's name and its value
/// (the printed strings joined, as a receiver joins them).
fn dkim_key(
    inst: &Installation,
    domain: &str,
    selector: &str,
    algorithm: &str,
) -> (String, String) {
    let out = inst.ok(&[
        "dkim",
        "generate",
        domain,
        "--selector",
        selector,
        "--algorithm",
        algorithm,
    ]);
    let line = out
        .lines()
        .find(|l| l.contains("._domainkey."))
        .unwrap_or_else(|| panic!("no record in:\n{out}"));
    let (name, strings) = line.split_once(" TXT ").unwrap();
    let value: String = strings.split('"').skip(1).step_by(2).collect();
    (name.to_string(), value)
}

/// A transaction's data as the message it carries: the final `.CRLF` gone
/// and the dot-stuffing undone.
fn unstuffed(wire: &[u8]) -> Vec<u8> {
    let data = wire.strip_suffix(b".\r\n").expect("data ends with .CRLF");
    let mut out = Vec::with_capacity(data.len());
    for line in data.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// mail-auth's verdict on each DKIM signature of `message`, its keys looked
/// up at the scripted DNS server `dns`.
fn mail_auth_verdicts(dns: SocketAddr, message: &[u8]) -> Vec<String> {
    use mail_auth::hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig,
    };
    use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
    runtime().block_on(async {
        let mut udp = ConnectionConfig::udp();
        udp.port = dns.port();
        let ns = NameServerConfig::new(dns.ip(), true, vec![udp]);
        let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
        let mut builder = mail_auth::hickory_resolver::TokioResolver::builder_with_config(
            config,
            TokioRuntimeProvider::default(),
        );
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        let authenticator = mail_auth::MessageAuthenticator(builder.build().unwrap());
        let parsed = mail_auth::AuthenticatedMessage::parse(message).unwrap();
        authenticator
            .verify_dkim(mail_auth::Parameters::new(&parsed))
            .await
            .iter()
            .map(|output| format!("{:?}", output.result()))
            .collect()
    })
}

/// Debian's dkimpy (python3-dkim), a second implementation: its verdict on
/// the first signature of `message`, with the one record `(name, value)` as
/// its DNS. `Err` has its log.
fn dkimpy_verifies(record: &(String, String), message: &[u8]) -> Result<(), String> {
    const SCRIPT: &str = r#"
import logging, sys
import dkim
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
name, value = sys.argv[1].encode(), sys.argv[2].encode()
def txt(query, timeout=5):
    return value if query.rstrip(b".").lower() == name.lower() else None
ok = dkim.DKIM(sys.stdin.buffer.read(), logger=logging.getLogger()).verify(dnsfunc=txt)
print("pass" if ok else "fail")
sys.exit(0 if ok else 1)
"#;
    // Debian's interpreter: the package installs into its dist-packages.
    let python = "/usr/bin/python3";
    let mut child = std::process::Command::new(python)
        .args(["-c", SCRIPT, &record.0, &record.1])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e} (.ci/setup installs python3-dkim)"));
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'dkim'"),
        "dkimpy is missing: install python3-dkim (.ci/setup does)"
    );
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("{}{stderr}", String::from_utf8_lossy(&out.stdout))),
    }
}

fn signed_body(from: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Alice <{from}>\r\nTo: friend@far.example\r\nSubject: signed {id}\r\n\
         Date: Fri, 4 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{id}@test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         Line one.\r\n.a line that starts with a dot\r\n\r\nLast line.\r\n"
    )
    .into_bytes()
}

#[test]
fn relayed_mail_is_dkim_signed_and_both_mail_auth_and_dkimpy_verify_it() {
    let inst = installation();
    let ed = dkim_key(&inst, "ed.example", "ed1", "ed25519");
    let rsa = dkim_key(&inst, "rsa.example", "rs1", "rsa");
    assert_eq!(ed.0, "ed1._domainkey.ed.example");
    assert!(ed.1.starts_with("v=DKIM1; k=ed25519; p="), "{}", ed.1);
    assert!(rsa.1.starts_with("v=DKIM1; k=rsa; p="), "{}", rsa.1);
    let dns = dns_server(vec![
        (ed.0.clone(), Rr::Txt(ed.1.clone())),
        (rsa.0.clone(), Rr::Txt(rsa.1.clone())),
    ]);
    let sink = Sink::start(Script::new());
    inst.set("smtp_relay", "smarthost", &format!("\"{}\"", sink.addr));
    inst.set("smtp_relay", "tls", "\"none\"");
    let r = start(inst);
    for key in [
        "domain=ed.example selector=ed1",
        "domain=rsa.example selector=rs1",
    ] {
        r.relay.wait_for_log_line(WAIT, |line| line.contains(key));
    }

    let cases = [
        (
            "alice@ed.example",
            "a=ed25519-sha256; s=ed1; d=ed.example;",
            &ed,
        ),
        // A subdomain is signed by its parent's key (DMARC relaxed alignment).
        (
            "alice@news.rsa.example",
            "a=rsa-sha256; s=rs1; d=rsa.example;",
            &rsa,
        ),
    ];
    for (n, (from, tags, record)) in cases.into_iter().enumerate() {
        let body = signed_body(from, &format!("m{n}"));
        r.enqueue(from, &["friend@far.example"], &body);
        let tx = sink.wait_txs(n + 1).remove(n);
        let message = unstuffed(&tx.wire);
        // One header field more at the top; the rest is the queued message.
        let (header, rest) = message.split_at(message.len() - body.len());
        assert_eq!(rest, body.as_slice());
        let header = String::from_utf8(header.to_vec()).unwrap();
        assert!(header.starts_with("DKIM-Signature: v=1; "), "{header}");
        assert!(header.contains(tags), "{header}");
        assert!(header.contains("c=relaxed/relaxed;"), "{header}");
        assert_eq!(
            header
                .split("\r\n")
                .filter(|l| !l.starts_with('\t'))
                .count(),
            2,
            "one field (and its folded lines), then the end: {header:?}"
        );
        assert_eq!(mail_auth_verdicts(dns, &message), ["Pass"], "{header}");
        dkimpy_verifies(record, &message).unwrap_or_else(|log| panic!("dkimpy: {log}"));

        // Both see a change made on the way.
        let text = String::from_utf8(message).unwrap();
        let tampered = text.replace("Line one.", "Line 1.");
        assert_ne!(mail_auth_verdicts(dns, tampered.as_bytes()), ["Pass"]);
        assert!(dkimpy_verifies(record, tampered.as_bytes()).is_err());
        let second_from = text.replace("To: friend", "From: mallory@evil.example\r\nTo: friend");
        assert_ne!(mail_auth_verdicts(dns, second_from.as_bytes()), ["Pass"]);
    }

    // Mail from a domain without a key goes out exactly as queued.
    let body = signed_body("bob@nokey.example", "m2");
    r.enqueue("bob@nokey.example", &["friend@far.example"], &body);
    let tx = sink.wait_txs(3).remove(2);
    assert_eq!(unstuffed(&tx.wire), body);
}

#[test]
fn direct_mode_signs_too_and_dkim_false_signs_nothing() {
    let inst = installation();
    let key = dkim_key(&inst, "example.test", "d1", "ed25519");
    let sink = Sink::start(Script::new());
    let dns = dns_server(vec![
        ("far.test".to_string(), Rr::Mx(10, "mx.far.test")),
        (
            "mx.far.test".to_string(),
            Rr::A(Ipv4Addr::new(127, 0, 0, 1)),
        ),
        (key.0.clone(), Rr::Txt(key.1.clone())),
    ]);
    inst.set("smtp_relay", "mode", "\"direct\"");
    inst.set("smtp_relay", "dns_server", &format!("\"{dns}\""));
    inst.set("smtp_relay", "mx_port", &sink.addr.port().to_string());
    let mut r = start(inst);
    let body = signed_body("alice@example.test", "direct");
    let id = r.enqueue("alice@example.test", &["a@far.test"], &body);
    r.wait_gone(&id);
    let message = unstuffed(&sink.txs()[0].wire);
    assert!(message.starts_with(b"DKIM-Signature: "));
    assert_eq!(mail_auth_verdicts(dns, &message), ["Pass"]);
    dkimpy_verifies(&key, &message).unwrap_or_else(|log| panic!("dkimpy: {log}"));

    r.relay.terminate(WAIT).expect("smtp-relay stops");
    r.inst.set("smtp_relay", "dkim", "false");
    r.relay = r.inst.start("smtp-relay");
    let id = r.enqueue("alice@example.test", &["b@far.test"], &body);
    r.wait_gone(&id);
    assert_eq!(unstuffed(&sink.txs()[1].wire), body);
}

#[test]
fn a_dkim_key_others_may_read_stops_the_relay_with_its_name() {
    let inst = installation();
    dkim_key(&inst, "example.test", "s1", "ed25519");
    let path = inst.data_dir().join("dkim/example.test.s1.key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut relay = inst.start("smtp-relay");
    let status = relay.wait_exit(WAIT).expect("smtp-relay exits");
    assert!(!status.success());
    let log = relay.log();
    assert!(log.contains(&path.display().to_string()), "{log}");
    assert!(log.contains("chmod 600"), "{log}");
}
