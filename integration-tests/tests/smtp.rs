//! smtp-server end to end: real core-queue and smtp-server processes, lettre
//! and Python's smtplib as clients, raw sockets for the edge cases.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use integration_tests::{Daemon, Installation};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{SmtpTransport, Transport};

const WAIT: Duration = Duration::from_secs(20);

struct Server {
    inst: Installation,
    _queue: Option<Daemon>,
    smtp: Daemon,
    mx: SocketAddr,
    submission: SocketAddr,
    submissions: SocketAddr,
}

fn server_with(configure: impl Fn(&Installation), with_queue: bool) -> Server {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    configure(&inst);
    inst.add_users(&["alice@example.test", "bob@example.test"]);
    let out = inst.qsctl_stdin(
        &["user", "passwd", "alice@example.test", "--password-stdin"],
        "alice-secret\n",
    );
    assert!(out.status.success());
    let queue = with_queue.then(|| inst.start("core-queue"));
    let smtp = inst.start("smtp-server");
    let mx = inst.listening("smtp-server", "smtp_server.listen")[0];
    let submission = inst.listening("smtp-server", "smtp_server.submission")[0];
    let submissions = inst.listening("smtp-server", "smtp_server.submissions")[0];
    Server {
        inst,
        _queue: queue,
        smtp,
        mx,
        submission,
        submissions,
    }
}

fn server() -> Server {
    server_with(|_| {}, true)
}

fn tls_params() -> TlsParameters {
    TlsParameters::builder("localhost".into())
        .dangerous_accept_invalid_certs(true)
        .build()
        .unwrap()
}

fn transport(addr: SocketAddr, tls: Tls, auth: Option<(&str, &str, Mechanism)>) -> SmtpTransport {
    let mut b = SmtpTransport::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .tls(tls)
        .timeout(Some(WAIT));
    if let Some((user, pass, mechanism)) = auth {
        b = b
            .credentials(Credentials::new(user.into(), pass.into()))
            .authentication(vec![mechanism]);
    }
    b.build()
}

fn envelope(from: &str, to: &[&str]) -> Envelope {
    Envelope::new(
        Some(from.parse().unwrap()),
        to.iter().map(|t| t.parse().unwrap()).collect(),
    )
    .unwrap()
}

const BODY: &[u8] = b"From: someone@far.example\r\nTo: alice@example.test\r\nSubject: hello\r\nMessage-ID: <t1@far.example>\r\n\r\nLine one.\r\n.A line starting with a dot\r\n..two dots\r\n\xc3\xa9t\xc3\xa9 8-bit\r\n";

/// What lettre is given: it always sends `<CRLF>.<CRLF>` after the data, so a
/// body that already ends in CRLF would arrive with one more empty line.
fn for_lettre() -> &'static [u8] {
    BODY.strip_suffix(b"\r\n").unwrap()
}

/// The stored message minus the trace fields we add on top.
fn without_trace(stored: &[u8]) -> Vec<u8> {
    let text = stored;
    let mut i = 0;
    // Skip Return-Path, Delivered-To and our (folded) Received field.
    loop {
        let rest = &text[i..];
        let starts = |p: &[u8]| rest.len() >= p.len() && rest[..p.len()].eq_ignore_ascii_case(p);
        if starts(b"Return-Path:")
            || starts(b"Delivered-To:")
            || starts(b"Received:")
            || starts(b"\t")
        {
            let lf = rest.iter().position(|&b| b == b'\n').unwrap();
            i += lf + 1;
        } else {
            return rest.to_vec();
        }
    }
}

#[test]
fn plain_mx_delivery_arrives_byte_identical_with_trace_fields() {
    let s = server();
    let t = transport(s.mx, Tls::None, None);
    t.send_raw(
        &envelope("someone@far.example", &["alice@example.test"]),
        for_lettre(),
    )
    .unwrap();
    let mail = s.inst.wait_for_mail("alice@example.test", 1, WAIT);
    let text = String::from_utf8_lossy(&mail[0]);
    assert!(text.starts_with("Return-Path: <someone@far.example>\r\nDelivered-To: alice@example.test\r\nReceived: from "), "{text}");
    assert!(text.contains("with ESMTP id "), "{text}");
    assert_eq!(without_trace(&mail[0]), BODY);
}

#[test]
fn submission_with_starttls_and_auth_plain_to_several_recipients() {
    let s = server();
    let t = transport(
        s.submission,
        Tls::Required(tls_params()),
        Some(("alice@example.test", "alice-secret", Mechanism::Plain)),
    );
    t.send_raw(
        &envelope(
            "alice@example.test",
            &["alice@example.test", "bob@example.test"],
        ),
        for_lettre(),
    )
    .unwrap();
    for user in ["alice@example.test", "bob@example.test"] {
        let mail = s.inst.wait_for_mail(user, 1, WAIT);
        assert!(String::from_utf8_lossy(&mail[0]).contains("with ESMTPSA id"));
        assert_eq!(without_trace(&mail[0]), BODY);
    }
}

#[test]
fn submissions_with_implicit_tls_and_auth_login() {
    let s = server();
    let t = transport(
        s.submissions,
        Tls::Wrapper(tls_params()),
        Some(("alice@example.test", "alice-secret", Mechanism::Login)),
    );
    t.send_raw(
        &envelope("alice@example.test", &["bob@example.test"]),
        for_lettre(),
    )
    .unwrap();
    let mail = s.inst.wait_for_mail("bob@example.test", 1, WAIT);
    assert_eq!(without_trace(&mail[0]), BODY);
}

#[test]
fn relaying_needs_authentication() {
    let s = server();
    // A stranger on the port-25 listener cannot relay.
    let t = transport(s.mx, Tls::None, None);
    let err = t
        .send_raw(
            &envelope("someone@far.example", &["friend@other.example"]),
            BODY,
        )
        .unwrap_err();
    assert!(err.to_string().contains("relay access denied"), "{err}");
    // An authenticated user can: the message waits in the queue for smtp-relay.
    let t = transport(
        s.submission,
        Tls::Required(tls_params()),
        Some(("alice@example.test", "alice-secret", Mechanism::Plain)),
    );
    t.send_raw(
        &envelope("alice@example.test", &["friend@other.example"]),
        for_lettre(),
    )
    .unwrap();
    let listed = s.inst.qsctl(&["queue", "stats"]);
    let stats = String::from_utf8_lossy(&listed.stdout);
    assert!(stats.contains("pending outbound:\t1"), "{stats}");
}

#[test]
fn wrong_passwords_and_spoofed_senders_are_refused() {
    let s = server();
    let t = transport(
        s.submission,
        Tls::Required(tls_params()),
        Some(("alice@example.test", "wrong", Mechanism::Plain)),
    );
    let err = t
        .send_raw(&envelope("alice@example.test", &["bob@example.test"]), BODY)
        .unwrap_err();
    assert!(err.to_string().contains("535"), "{err}");
    let t = transport(
        s.submission,
        Tls::Required(tls_params()),
        Some(("alice@example.test", "alice-secret", Mechanism::Plain)),
    );
    let err = t
        .send_raw(&envelope("bob@example.test", &["bob@example.test"]), BODY)
        .unwrap_err();
    assert!(
        err.to_string().contains("not one of your addresses"),
        "{err}"
    );
}

/// A raw SMTP conversation.
struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let writer = stream.try_clone().unwrap();
        let mut raw = Raw {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = raw.reply();
        assert!(greeting.starts_with("220 "), "{greeting}");
        raw
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// One whole reply (all its lines).
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap() == 0 {
                return all;
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return all;
            }
        }
    }

    fn cmd(&mut self, line: &str, expect: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        let reply = self.reply();
        assert!(
            reply.starts_with(expect),
            "{line}: expected {expect}, got {reply}"
        );
        reply
    }
}

#[test]
fn pipelined_commands_are_answered_in_order_and_delivered() {
    let s = server();
    let mut raw = Raw::connect(s.mx);
    raw.cmd("EHLO client.example", "250");
    raw.send(b"MAIL FROM:<a@far.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n");
    for expect in ["250", "250", "550 5.1.1", "250", "354"] {
        let r = raw.reply();
        assert!(r.starts_with(expect), "expected {expect}, got {r}");
    }
    raw.send(b"Subject: pipelined\r\n\r\nhi\r\n.\r\nQUIT\r\n");
    assert!(raw.reply().starts_with("250 2.0.0 OK queued as "));
    assert!(raw.reply().starts_with("221"));
    let mail = s.inst.wait_for_mail("alice@example.test", 1, WAIT);
    assert_eq!(without_trace(&mail[0]), b"Subject: pipelined\r\n\r\nhi\r\n");
    s.inst.wait_for_mail("bob@example.test", 1, WAIT);
}

#[test]
fn plaintext_auth_is_refused_and_not_offered_without_tls() {
    let s = server();
    let mut raw = Raw::connect(s.submission);
    let ehlo = raw.cmd("EHLO x", "250");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    raw.cmd(
        "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1zZWNyZXQ=",
        "538 5.7.11",
    );
    raw.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0");
}

#[test]
fn smuggled_messages_are_refused_end_to_end() {
    let s = server();
    let mut raw = Raw::connect(s.mx);
    raw.cmd("EHLO x", "250");
    raw.cmd("MAIL FROM:<a@far.example>", "250");
    raw.cmd("RCPT TO:<alice@example.test>", "250");
    raw.cmd("DATA", "354");
    raw.send(b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@far.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nforged\r\n.\r\n");
    let r = raw.reply();
    assert!(r.starts_with("554 5.6.0"), "{r}");
    raw.cmd("QUIT", "221");
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.inst.inbox("alice@example.test").is_empty());
    assert!(s.inst.inbox("bob@example.test").is_empty());
}

#[test]
fn without_core_queue_the_answer_is_451_never_250() {
    let s = server_with(|inst| inst.set("queue", "client_retry_secs", "1"), false);
    let mut raw = Raw::connect(s.mx);
    raw.cmd("EHLO x", "250");
    raw.cmd("MAIL FROM:<a@far.example>", "250");
    raw.cmd("RCPT TO:<alice@example.test>", "250");
    raw.cmd("DATA", "354");
    raw.send(b"Subject: x\r\n\r\nhello\r\n.\r\n");
    let r = raw.reply();
    assert!(r.starts_with("451 4.3.0"), "{r}\n{}", s.smtp.log());
}

#[test]
fn a_message_core_queue_will_never_take_is_refused_with_5xx_not_451() {
    // The queue's frame limit for a body; smtp-server here takes twice that.
    let queue_limit = qs_queue::proto::DEFAULT_MAX_BODY as usize;
    let s = server_with(
        |inst| {
            inst.set(
                "smtp_server",
                "max_message_size",
                &(2 * queue_limit).to_string(),
            )
        },
        true,
    );
    let mut raw = data_mx(&s, "a@far.example", &["alice@example.test"]);
    raw.send(b"Subject: big\r\n\r\n");
    let line = [&[b'x'; 998][..], b"\r\n"].concat();
    let chunk = line.repeat(1024);
    let mut sent = 0;
    while sent <= queue_limit {
        raw.send(&chunk);
        sent += chunk.len();
    }
    raw.send(b".\r\n");
    let r = raw.reply();
    assert!(r.starts_with("552 5.3.4"), "{r}\n{}", s.smtp.log());
    // The session goes on, and nothing was queued.
    raw.cmd("RSET", "250");
    raw.cmd("QUIT", "221");
    assert_eq!(queued_messages(&s.inst), 0);
    assert!(s.inst.inbox("alice@example.test").is_empty());
}

#[test]
fn connections_per_address_are_limited() {
    let s = server_with(
        |inst| inst.set("smtp_server", "max_connections_per_ip", "2"),
        true,
    );
    let _a = Raw::connect(s.mx);
    let _b = Raw::connect(s.mx);
    let mut third = TcpStream::connect(s.mx).unwrap();
    third.set_read_timeout(Some(WAIT)).unwrap();
    let mut text = String::new();
    third.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("421 4.7.0"), "{text}");
}

#[test]
fn a_user_added_while_running_receives_mail_at_once() {
    let s = server();
    let mut raw = Raw::connect(s.mx);
    raw.cmd("EHLO x", "250");
    raw.cmd("MAIL FROM:<a@far.example>", "250");
    raw.cmd("RCPT TO:<carol@example.test>", "550 5.1.1");
    s.inst.add_users(&["carol@example.test"]);
    raw.cmd("RCPT TO:<carol@example.test>", "250");
}

#[test]
fn python_smtplib_submits_over_starttls() {
    let s = server();
    let script = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
host, port = sys.argv[1], int(sys.argv[2])
with smtplib.SMTP(host, port, timeout=20) as s:
    s.ehlo("python.example")
    s.starttls(context=ctx)
    s.ehlo("python.example")
    s.login("alice@example.test", "alice-secret")
    refused = s.sendmail("alice@example.test", ["bob@example.test"],
        b"Subject: from smtplib\r\n\r\nSent by Python.\r\n.dot\r\n")
    assert refused == {}, refused
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            &s.submission.ip().to_string(),
            &s.submission.port().to_string(),
        ])
        .output()
        .expect("python3 is installed by .ci/setup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mail = s.inst.wait_for_mail("bob@example.test", 1, WAIT);
    let text = String::from_utf8_lossy(&mail[0]);
    assert!(text.contains("Subject: from smtplib\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\nSent by Python.\r\n.dot\r\n"),
        "{text}"
    );
}

#[test]
fn an_address_with_too_many_failed_logins_is_refused_even_the_right_password() {
    let s = server_with(
        |inst| {
            inst.set("smtp_server", "max_auth_failures", "2");
            inst.set("smtp_server", "allow_plaintext_auth", "true");
        },
        false,
    );
    let mut raw = Raw::connect(s.submission);
    raw.cmd("EHLO x", "250");
    // A password typed in the login field is never written to the log.
    raw.cmd(&auth_plain("Secret-typed-as-login", "x"), "535 5.7.8");
    raw.cmd(&auth_plain("alice@example.test", "wrong"), "535 5.7.8");
    raw.cmd(
        &auth_plain("alice@example.test", "alice-secret"),
        "535 5.7.8",
    );
    // The block is the address's, not the session's: a new connection is
    // refused as well.
    let mut again = Raw::connect(s.submission);
    again.cmd("EHLO x", "250");
    again.cmd(
        &auth_plain("alice@example.test", "alice-secret"),
        "535 5.7.8",
    );
    let log = s.smtp.log();
    assert!(
        log.contains("too many failed logins from this address"),
        "{log}"
    );
    assert!(!log.contains("Secret-typed-as-login"), "{log}");
}

/// `AUTH PLAIN` with its initial response.
fn auth_plain(login: &str, password: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{password}"));
    format!("AUTH PLAIN {token}")
}

/// `qsctl queue stats`' message count.
fn queued_messages(inst: &Installation) -> usize {
    let stats = inst.ok(&["queue", "stats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("messages:\t"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no message count in {stats}"))
}

/// Waits until the queue is empty: every message and report is settled.
fn wait_for_empty_queue(inst: &Installation) {
    let start = std::time::Instant::now();
    while queued_messages(inst) > 0 {
        assert!(start.elapsed() < WAIT, "the queue never emptied");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One message on the port-25 listener, unauthenticated, from a forged
/// `sender`; returns the reply to the end of DATA.
fn send_mx(s: &Server, sender: &str, rcpts: &[&str], message: &str) -> String {
    let mut raw = data_mx(s, sender, rcpts);
    raw.send(message.as_bytes());
    raw.send(b".\r\n");
    let reply = raw.reply();
    raw.cmd("QUIT", "221");
    reply
}

/// A session on the port-25 listener, unauthenticated, from `sender` to
/// `rcpts`, that has just been told to go ahead with the message (354).
fn data_mx(s: &Server, sender: &str, rcpts: &[&str]) -> Raw {
    let mut raw = Raw::connect(s.mx);
    raw.cmd("EHLO spammer.example", "250");
    raw.cmd(&format!("MAIL FROM:<{sender}>"), "250");
    for rcpt in rcpts {
        raw.cmd(&format!("RCPT TO:<{rcpt}>"), "250");
    }
    raw.cmd("DATA", "354");
    raw
}

#[test]
fn a_delivered_to_loop_is_refused_at_the_end_of_data_and_nothing_is_queued() {
    let s = server();
    let reply = send_mx(
        &s,
        "victim@remote.example",
        &["alice@example.test"],
        "Delivered-To: alice@example.test\r\nSubject: cheap pills\r\n\r\nBuy at spam.example\r\n",
    );
    assert!(reply.starts_with("554 5.4.6 "), "{reply}");
    // Refused before the queue was asked: nothing to deliver, nothing to
    // bounce to victim@remote.example, nothing for the postmaster.
    assert_eq!(queued_messages(&s.inst), 0);
    assert!(s.inst.inbox("alice@example.test").is_empty());
    assert!(s.inst.inbox("postmaster@example.test").is_empty());
}

/// Completes every leased `outbound` recipient with the reply `for_address` gives it.
fn fail_outbound(inst: &Installation, expected: usize, for_address: impl Fn(&str) -> String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = inst.client(WAIT);
    let outbound = qs_queue::JobClass::outbound();
    let start = std::time::Instant::now();
    let job = loop {
        let leased = rt
            .block_on(client.lease(&outbound, "test-relay", Duration::from_secs(60)))
            .unwrap();
        if let Some(job) = leased {
            break job;
        }
        assert!(start.elapsed() < WAIT, "no outbound job");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(job.recipients.len(), expected, "{job:?}");
    assert_eq!(job.origin.module, "smtp-server");
    assert_eq!(job.origin.auth_user, None);
    let results = job
        .recipients
        .iter()
        .map(|r| qs_queue::RecipientResult {
            index: r.index,
            outcome: qs_queue::Outcome::PermanentFailure {
                reply: for_address(&r.address).into(),
            },
        })
        .collect();
    rt.block_on(client.complete(&job.id, &outbound, job.token, results))
        .unwrap();
}

#[test]
fn a_port_25_message_that_bounces_later_returns_its_header_and_never_its_body() {
    let s = server();
    s.inst.add_users(&["carol@example.test"]);
    s.inst.ok(&[
        "alias",
        "add",
        "friends@example.test",
        "gone@remote.example",
        "picky@remote.example",
    ]);
    // carol is the forged sender: the report lands where the test can read it.
    let reply = send_mx(
        &s,
        "carol@example.test",
        &["friends@example.test"],
        "From: carol@example.test\r\nSubject: see attached\r\nMessage-ID: <b1@spammer.example>\r\n\r\nAttacker text: visit spam.example now\r\n",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    // The remote side refuses one recipient as unknown, the other by policy.
    fail_outbound(&s.inst, 2, |address| {
        if address.starts_with("gone@") {
            format!("550 5.1.1 <{address}>: no such user")
        } else {
            format!("550 5.7.1 <{address}>: refused as spam")
        }
    });
    let dsn = s.inst.wait_for_mail("carol@example.test", 1, WAIT);
    let text = String::from_utf8_lossy(&dsn[0]);
    assert!(
        text.contains("Final-Recipient: rfc822; gone@remote.example"),
        "{text}"
    );
    assert!(text.contains("Content-Type: text/rfc822-headers"), "{text}");
    assert!(text.contains("Subject: see attached\r\n"), "{text}");
    assert!(!text.contains("spam.example"), "the body came back: {text}");
    assert!(!text.contains("Attacker text"), "{text}");
    // The policy refusal is the postmaster's alone.
    assert!(!text.contains("picky@remote.example"), "{text}");
    let copies = s.inst.wait_for_mail("postmaster@example.test", 2, WAIT);
    let copies: String = copies
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert!(
        copies.contains("Final-Recipient: rfc822; picky@remote.example"),
        "{copies}"
    );
    assert!(
        copies.contains("Final-Recipient: rfc822; gone@remote.example"),
        "{copies}"
    );
    assert!(!copies.contains("Attacker text"), "{copies}");
    wait_for_empty_queue(&s.inst);
    assert_eq!(s.inst.inbox("carol@example.test").len(), 1);
}

#[test]
fn a_loop_found_after_acceptance_is_reported_to_the_postmaster_and_not_to_the_sender() {
    let s = server();
    s.inst.add_users(&["carol@example.test"]);
    s.inst.ok(&[
        "alias",
        "add",
        "team@example.test",
        "alice@example.test",
        "bob@example.test",
    ]);
    s.inst
        .ok(&["alias", "add", "loop1@example.test", "alice@example.test"]);
    s.inst
        .ok(&["alias", "add", "loop2@example.test", "loop1@example.test"]);
    let dir =
        qs_directory::Directory::open(s.inst.data_dir().join("directory.json"), Default::default())
            .unwrap();
    dir.set_alias_targets("loop1@example.test", ["loop2@example.test"])
        .unwrap();
    // Aliases are not expanded by smtp-server, so these loops are found
    // later: loop1 is an alias loop at routing, and team's copy for alice
    // meets its Delivered-To at local delivery. bob's copy is delivered.
    let reply = send_mx(
        &s,
        "carol@example.test",
        &["loop1@example.test", "team@example.test"],
        "Delivered-To: alice@example.test\r\nSubject: around again\r\n\r\nloop body\r\n",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    s.inst.wait_for_mail("bob@example.test", 1, WAIT);
    let reports = s.inst.wait_for_mail("postmaster@example.test", 2, WAIT);
    let reports: String = reports
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    assert!(reports.contains("alias loop"), "{reports}");
    assert!(
        reports.contains("Final-Recipient: rfc822; alice@example.test"),
        "{reports}"
    );
    assert!(
        reports.contains("mail loop (already delivered to this address)"),
        "{reports}"
    );
    assert!(!reports.contains("loop body"), "{reports}");
    // Once everything is settled, carol has had nothing.
    wait_for_empty_queue(&s.inst);
    assert!(s.inst.inbox("carol@example.test").is_empty());
    assert!(s.inst.inbox("alice@example.test").is_empty());
    assert_eq!(s.inst.inbox("postmaster@example.test").len(), 2);
}

#[test]
fn python_smtplib_sends_recipients_over_the_limit_in_a_second_transaction() {
    // max_recipients is 100 (the default). 120 sub-addresses of alice: the
    // last 20 are told 452, which is no error, and go in a second
    // transaction on the same connection.
    let s = server();
    let script = r#"
import smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])
rcpts = ["alice+%d@example.test" % i for i in range(120)]
with smtplib.SMTP(host, port, timeout=20) as s:
    s.ehlo("python.example")
    refused = s.sendmail("someone@far.example", rcpts, b"Subject: first\r\n\r\nx\r\n")
    assert sorted(refused) == sorted(rcpts[100:]), sorted(refused)
    assert all(code == 452 for code, _ in refused.values()), refused
    again = s.sendmail("someone@far.example", list(refused), b"Subject: second\r\n\r\nx\r\n")
    assert again == {}, again
    # RFC 3207: STARTTLS takes no parameters.
    code, text = s.docmd("STARTTLS", "foo")
    assert code == 501, (code, text)
    assert s.noop()[0] == 250
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            &s.mx.ip().to_string(),
            &s.mx.port().to_string(),
        ])
        .output()
        .expect("python3 is installed by .ci/setup");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        s.smtp.log()
    );
    // One copy per transaction for alice, however many of her addresses.
    let mail = s.inst.wait_for_mail("alice@example.test", 2, WAIT);
    let all: String = mail
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert!(all.contains("Subject: first\r\n"), "{all}");
    assert!(all.contains("Subject: second\r\n"), "{all}");
}
