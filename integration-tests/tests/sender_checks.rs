//! smtp-server's sender checks on the port-25 role, against the scripted DNS
//! server: SPF at MAIL FROM, DKIM and DMARC at the end of DATA (messages signed
//! here with mail-auth's signer and a test key), the Authentication-Results
//! field and the removal of forged ones, ARC chains, DMARC's reject and quarantine, DNS
//! blacklists, DNS timeouts and greylisting. The client is 127.0.0.1, made a
//! checked client by emptying `unchecked_networks` (and a trusted one again by
//! naming it in `relay_networks`).

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use integration_tests::dns::{Rr, dns_server};
use integration_tests::{Daemon, Installation};
use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults};

const WAIT: Duration = Duration::from_secs(20);
/// The installation's host name, as its Authentication-Results fields say.
const HOSTNAME: &str = "mail.example.test";

struct Mx {
    inst: Installation,
    _queue: Daemon,
    _smtp: Daemon,
    addr: SocketAddr,
}

/// core-queue and smtp-server asking `dns` for every check, with `configure`
/// applied to the config.
fn mx(dns: SocketAddr, configure: impl Fn(&Installation)) -> Mx {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("smtp_server", "unchecked_networks", "[]");
    inst.set("smtp_server", "dns_server", &format!("\"{dns}\""));
    inst.set("smtp_server", "dns_timeout_secs", "1");
    configure(&inst);
    inst.add_users(&["alice@example.test"]);
    let queue = inst.start("core-queue");
    let smtp = inst.start("smtp-server");
    let addr = inst.listening("smtp-server", "smtp_server.listen")[0];
    Mx {
        inst,
        _queue: queue,
        _smtp: smtp,
        addr,
    }
}

/// One SMTP connection, answered reply by reply.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut client = Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = client.reply();
        assert!(greeting.starts_with("220 "), "{greeting}");
        client
    }

    /// The next reply, all its lines.
    fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "connection closed after {out:?}");
            out.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return out;
            }
        }
    }

    fn send(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }

    /// EHLO, MAIL FROM and RCPT TO alice: the MAIL FROM reply, and the RCPT
    /// reply when MAIL was taken.
    fn envelope(&mut self, sender: &str) -> (String, Option<String>) {
        let ehlo = self.send("EHLO client.sender.test");
        assert!(ehlo.starts_with("250"), "{ehlo}");
        let mail = self.send(&format!("MAIL FROM:<{sender}>"));
        if !mail.starts_with("250") {
            return (mail, None);
        }
        let rcpt = self.send("RCPT TO:<alice@example.test>");
        (mail, Some(rcpt))
    }

    /// DATA with `message` (CRLF lines, no final dot): the final reply.
    fn data(&mut self, message: &str) -> String {
        let go = self.send("DATA");
        assert!(go.starts_with("354"), "{go}");
        self.writer.write_all(message.as_bytes()).unwrap();
        self.send(".")
    }
}

/// One whole transaction from `sender` to alice: the final reply.
fn send(addr: SocketAddr, sender: &str, message: &str) -> String {
    let mut client = Client::connect(addr);
    let (mail, rcpt) = client.envelope(sender);
    assert!(mail.starts_with("250"), "MAIL FROM:<{sender}>: {mail}");
    let rcpt = rcpt.unwrap();
    assert!(rcpt.starts_with("250"), "{rcpt}");
    let reply = client.data(message);
    client.send("QUIT");
    reply
}

fn message(from: &str, subject: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <alice@example.test>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@sender.test>\r\n\r\nHello Alice,\r\nthis is {subject}.\r\n"
    )
}

/// A DKIM key of `domain` (selector `sel`): its signer and DNS record.
struct TestKey {
    pkcs8: Vec<u8>,
    record: String,
}

impl TestKey {
    fn new() -> TestKey {
        let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
        let public = Ed25519Key::from_pkcs8_der(&pkcs8).unwrap().public_key();
        let record = format!(
            "v=DKIM1; k=ed25519; p={}",
            base64::engine::general_purpose::STANDARD.encode(public)
        );
        TestKey { pkcs8, record }
    }

    /// `message` with a DKIM-Signature of `domain` over From, To, Subject
    /// and the body.
    fn sign(&self, domain: &str, message: &str) -> String {
        let key = Ed25519Key::from_pkcs8_der(&self.pkcs8).unwrap();
        let signature = DkimSigner::from_key(key)
            .domain(domain)
            .selector("sel")
            .headers(["From", "To", "Subject"])
            .sign(message.as_bytes())
            .unwrap();
        format!("{}{message}", signature.to_header())
    }

    /// `message` with the ARC set (RFC 8617) a forwarder at `domain` adds as the
    /// first hop of a chain: its seal, its message signature over From, To,
    /// Subject and DKIM-Signature, and its Authentication-Results.
    fn arc_seal(&self, domain: &str, message: &str) -> String {
        let key = Ed25519Key::from_pkcs8_der(&self.pkcs8).unwrap();
        let parsed = AuthenticatedMessage::parse(message.as_bytes()).unwrap();
        let results = AuthenticationResults::new(domain);
        let set = ArcSealer::from_key(key)
            .domain(domain)
            .selector("sel")
            .headers(["From", "To", "Subject", "DKIM-Signature"])
            .seal(&parsed, &results, &ArcOutput::default())
            .unwrap();
        format!("{}{}{message}", set.to_header(), results.to_header())
    }
}

/// The messages in alice's `folder` ("" for the INBOX, "Junk").
fn folder(inst: &Installation, name: &str) -> Vec<String> {
    let mut root: PathBuf = inst.data_dir().join("mail/example.test/alice");
    if !name.is_empty() {
        root = root.join(format!(".{name}"));
    }
    let mut out: Vec<String> = ["new", "cur"]
        .iter()
        .flat_map(|sub| {
            std::fs::read_dir(root.join(sub))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned())
        })
        .collect();
    out.sort();
    out
}

/// The one message in `name` whose Subject is `subject`, once delivered.
fn delivered(inst: &Installation, name: &str, subject: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(found) = folder(inst, name)
            .into_iter()
            .find(|m| m.contains(&format!("\r\nSubject: {subject}\r\n")))
        {
            return found;
        }
        assert!(
            start.elapsed() < WAIT,
            "{subject} never reached folder {name:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Our Authentication-Results field of `message`, unfolded.
fn our_results(message: &str) -> String {
    let mut fields = Vec::new();
    let mut current: Option<String> = None;
    for line in message.split("\r\n") {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(c) = current.as_mut() {
                c.push(' ');
                c.push_str(line.trim());
            }
            continue;
        }
        fields.extend(current.take());
        current = Some(line.to_string());
    }
    fields.extend(current);
    let ours: Vec<&String> = fields
        .iter()
        .filter(|f| {
            f.to_ascii_lowercase()
                .starts_with(&format!("authentication-results: {HOSTNAME}"))
        })
        .collect();
    assert_eq!(ours.len(), 1, "one field of ours: {message}");
    // Ours is the first of them all.
    let first = fields
        .iter()
        .find(|f| f.starts_with("Authentication-Results:"));
    assert_eq!(first, Some(ours[0]), "{message}");
    ours[0].clone()
}

/// The zone of the SPF, DKIM and DMARC tests.
fn zone(key: &TestKey) -> Vec<(String, Rr)> {
    let txt = |name: &str, text: &str| (name.to_string(), Rr::Txt(text.to_string()));
    vec![
        // Allows us, wants DMARC reject, signs with `key`.
        txt("pass.test", "v=spf1 ip4:127.0.0.1 -all"),
        txt("_dmarc.pass.test", "v=DMARC1; p=reject"),
        txt("sel._domainkey.pass.test", &key.record),
        // Forwards mail and seals it with ARC (with `key`); no SPF, no DMARC.
        txt("sel._domainkey.forwarder.test", &key.record),
        // Allows someone else only, wants DMARC reject.
        txt("fail.test", "v=spf1 ip4:192.0.2.1 -all"),
        txt("_dmarc.fail.test", "v=DMARC1; p=reject"),
        // Allows nobody, softly; no DMARC.
        txt("soft.test", "v=spf1 ~all"),
        // Wants DMARC quarantine; allows someone else only.
        txt("quarantine.test", "v=spf1 ip4:192.0.2.1 -all"),
        txt("_dmarc.quarantine.test", "v=DMARC1; p=quarantine"),
        // Its name server never answers.
        ("temp.test".to_string(), Rr::Silent),
        // SPF answers, DMARC never does.
        txt("slow-dmarc.test", "v=spf1 ip4:127.0.0.1 -all"),
        ("_dmarc.slow-dmarc.test".to_string(), Rr::Silent),
    ]
}

#[test]
fn spf_dkim_and_dmarc_decide_and_are_written_in_one_field() {
    let key = TestKey::new();
    let dns = dns_server(zone(&key));
    let mx = mx(dns, |_| {});

    // SPF pass, DKIM pass, aligned: delivered, and the forged field claiming
    // our name is gone (the one of another host stays).
    let forged = format!(
        "Authentication-Results: {HOSTNAME}; dkim=pass header.d=pass.test\r\n\
         Authentication-Results: other.example; spf=pass\r\n\
         X-Quicksilver-Junk: no\r\n"
    );
    let signed = key.sign("pass.test", &message("a@pass.test", "signed"));
    let reply = send(mx.addr, "a@pass.test", &format!("{forged}{signed}"));
    assert!(reply.starts_with("250 "), "{reply}");
    let got = delivered(&mx.inst, "", "signed");
    let results = our_results(&got);
    for part in ["spf=pass", "dkim=pass", "header.d=pass.test", "dmarc=pass"] {
        assert!(results.contains(part), "{part}: {results}");
    }
    assert!(got.contains("Authentication-Results: other.example; spf=pass\r\n"));
    assert!(!got.contains("X-Quicksilver-Junk"), "{got}");

    // A signed field changed after signing: DKIM fails, but SPF passes
    // aligned, so DMARC passes.
    let tampered = key
        .sign("pass.test", &message("a@pass.test", "tampered"))
        .replace("Subject: tampered", "Subject: tampered-after");
    assert!(send(mx.addr, "a@pass.test", &tampered).starts_with("250 "));
    let results = our_results(&delivered(&mx.inst, "", "tampered-after"));
    assert!(results.contains("dkim=fail"), "{results}");
    assert!(
        results.contains("spf=pass") && results.contains("dmarc=pass"),
        "{results}"
    );
    // A body changed after signing: its hash does not verify (RFC 6376
    // §3.7, reported as neutral by the verifier).
    let body_changed = key
        .sign("pass.test", &message("a@pass.test", "body-changed"))
        .replace("Hello Alice", "Hello Mallory");
    assert!(send(mx.addr, "a@pass.test", &body_changed).starts_with("250 "));
    let results = our_results(&delivered(&mx.inst, "", "body-changed"));
    assert!(
        results.contains("dkim=neutral (body hash did not verify)"),
        "{results}"
    );

    // SPF softfail and no DMARC record: delivered, marked.
    assert!(send(mx.addr, "a@soft.test", &message("a@soft.test", "soft")).starts_with("250 "));
    let results = our_results(&delivered(&mx.inst, "", "soft"));
    assert!(results.contains("spf=softfail"), "{results}");
    assert!(
        results.contains("dkim=none") && results.contains("dmarc=none"),
        "{results}"
    );

    // SPF softfail, but DKIM of the From domain aligns: DMARC passes.
    let by_dkim = key.sign("pass.test", &message("a@pass.test", "by-dkim"));
    assert!(send(mx.addr, "bounces@soft.test", &by_dkim).starts_with("250 "));
    let results = our_results(&delivered(&mx.inst, "", "by-dkim"));
    assert!(
        results.contains("spf=softfail") && results.contains("dmarc=pass"),
        "{results}"
    );

    // SPF fail (-all) is marked, not refused, by default; DMARC p=reject
    // then refuses the unaligned message at the end of DATA.
    let reply = send(mx.addr, "a@fail.test", &message("a@fail.test", "rejected"));
    assert!(reply.starts_with("550 5.7.1 "), "{reply}");
    assert!(reply.contains("fail.test"), "{reply}");

    // SPF passes for pass.test, but From is quarantine.test: not aligned,
    // DMARC p=quarantine files it into alice's Junk folder.
    let reply = send(
        mx.addr,
        "a@pass.test",
        &message("a@quarantine.test", "quarantined"),
    );
    assert!(reply.starts_with("250 "), "{reply}");
    let junk = delivered(&mx.inst, "Junk", "quarantined");
    let results = our_results(&junk);
    assert!(
        results.contains("spf=pass") && results.contains("dmarc=fail"),
        "{results}"
    );
    assert!(results.contains("policy.dmarc=quarantine"), "{results}");
    assert!(junk.contains("\r\nX-Quicksilver-Junk: "), "{junk}");
    assert!(
        !folder(&mx.inst, "")
            .iter()
            .any(|m| m.contains("Subject: quarantined"))
    );

    // A forged junk mark from outside does not put a message in Junk.
    let marked = format!(
        "X-Quicksilver-Junk: yes\r\n{}",
        message("a@soft.test", "forged-mark")
    );
    assert!(send(mx.addr, "a@soft.test", &marked).starts_with("250 "));
    let got = delivered(&mx.inst, "", "forged-mark");
    assert!(!got.contains("X-Quicksilver-Junk"), "{got}");

    // The name server of temp.test never answers: 451 4.4.3 at MAIL FROM.
    let mut client = Client::connect(mx.addr);
    let (mail, _) = client.envelope("a@temp.test");
    assert!(mail.starts_with("451 4.4.3 "), "{mail}");
    // The session goes on: the next sender is checked afresh.
    let mail = client.send("MAIL FROM:<a@pass.test>");
    assert!(mail.starts_with("250 "), "{mail}");
    client.send("QUIT");

    // DMARC's lookup times out at the end of DATA: 451 4.4.3, nothing queued.
    let reply = send(
        mx.addr,
        "a@slow-dmarc.test",
        &message("a@slow-dmarc.test", "slow"),
    );
    assert!(reply.starts_with("451 4.4.3 "), "{reply}");
    assert!(
        !folder(&mx.inst, "")
            .iter()
            .any(|m| m.contains("Subject: slow"))
    );
}

#[test]
fn an_arc_chain_is_verified_and_its_result_written_in_our_field() {
    let key = TestKey::new();
    let dns = dns_server(zone(&key));
    let mx = mx(dns, |_| {});
    // A list or forwarder sealed the message it passes on.
    let sealed = key.arc_seal(
        "forwarder.test",
        &key.sign("pass.test", &message("a@pass.test", "sealed")),
    );
    assert!(sealed.starts_with("ARC-Seal: i=1; "), "{sealed}");
    assert!(send(mx.addr, "a@soft.test", &sealed).starts_with("250 "));
    let results = our_results(&delivered(&mx.inst, "", "sealed"));
    assert!(results.contains("; arc=pass"), "{results}");
    // The same chain over a message changed after sealing does not verify (From
    // in a domain without DMARC, so that it is delivered to be looked at).
    let broken = key
        .arc_seal(
            "forwarder.test",
            &key.sign("pass.test", &message("a@soft.test", "resealed")),
        )
        .replace("Subject: resealed", "Subject: resealed-after");
    let reply = send(mx.addr, "a@soft.test", &broken);
    assert!(reply.starts_with("250 "), "{reply}");
    let results = our_results(&delivered(&mx.inst, "", "resealed-after"));
    assert!(results.contains("; arc=fail"), "{results}");
    // A message without ARC sets gets no arc= result ("dmarc=" ends the same).
    assert!(send(mx.addr, "a@soft.test", &message("a@soft.test", "plain")).starts_with("250 "));
    let results = our_results(&delivered(&mx.inst, "", "plain"));
    assert!(!results.contains("; arc="), "{results}");
}

#[test]
fn spf_fail_is_refused_at_mail_from_when_configured() {
    let key = TestKey::new();
    let dns = dns_server(zone(&key));
    let mx = mx(dns, |inst| {
        inst.set("smtp_server", "spf_fail_reject", "true")
    });
    let mut client = Client::connect(mx.addr);
    let (mail, _) = client.envelope("a@fail.test");
    assert!(mail.starts_with("550 5.7.23 "), "{mail}");
    // A softfail is still only marked.
    let mail = client.send("MAIL FROM:<a@soft.test>");
    assert!(mail.starts_with("250 "), "{mail}");
}

#[test]
fn dmarc_reject_can_be_turned_into_quarantine() {
    let key = TestKey::new();
    let dns = dns_server(zone(&key));
    let mx = mx(dns, |inst| inst.set("smtp_server", "dmarc_reject", "false"));
    let reply = send(
        mx.addr,
        "a@fail.test",
        &message("a@fail.test", "not-rejected"),
    );
    assert!(reply.starts_with("250 "), "{reply}");
    let junk = delivered(&mx.inst, "Junk", "not-rejected");
    assert!(our_results(&junk).contains("policy.dmarc=reject"), "{junk}");
}

#[test]
fn a_client_on_a_dns_blacklist_is_refused_with_554_naming_the_list() {
    let dns = dns_server(vec![
        ("1.0.0.127.bl.test", Rr::A(Ipv4Addr::new(127, 0, 0, 2))),
        (
            "1.0.0.127.bl.test",
            Rr::Txt("Listed for testing, see http://bl.test/".into()),
        ),
        ("pass.test", Rr::Txt("v=spf1 ip4:127.0.0.1 -all".into())),
    ]);
    // Another list that does not list us is asked first.
    let mx = mx(dns, |inst| {
        inst.set(
            "smtp_server",
            "dnsbl_zones",
            "[\"clean.test\", \"bl.test\"]",
        )
    });
    let mut client = Client::connect(mx.addr);
    let (mail, _) = client.envelope("a@pass.test");
    assert!(mail.starts_with("554 5.7.1 "), "{mail}");
    assert!(mail.contains("bl.test"), "{mail}");
    assert!(
        mail.contains("Listed for testing, see http://bl.test/"),
        "{mail}"
    );
    // Every later MAIL FROM of the connection gets the same answer.
    let again = client.send("MAIL FROM:<a@pass.test>");
    assert!(again.starts_with("554 5.7.1 "), "{again}");
}

#[test]
fn a_dns_blacklist_that_does_not_answer_is_a_temporary_refusal() {
    let dns = dns_server(vec![
        ("1.0.0.127.slow.test", Rr::Silent),
        ("pass.test", Rr::Txt("v=spf1 ip4:127.0.0.1 -all".into())),
    ]);
    let mx = mx(dns, |inst| {
        inst.set("smtp_server", "dnsbl_zones", "[\"slow.test\"]")
    });
    let mut client = Client::connect(mx.addr);
    let (mail, _) = client.envelope("a@pass.test");
    assert!(mail.starts_with("451 4.4.3 "), "{mail}");
}

#[test]
fn greylisting_refuses_a_new_triplet_then_lets_it_in_after_the_delay() {
    let dns = dns_server(vec![(
        "pass.test",
        Rr::Txt("v=spf1 ip4:127.0.0.1 -all".into()),
    )]);
    let mx = mx(dns, |inst| {
        inst.set("smtp_server", "greylisting", "true");
        inst.set("smtp_server", "greylist_delay_secs", "1");
    });
    let mut client = Client::connect(mx.addr);
    let (_, rcpt) = client.envelope("a@pass.test");
    let rcpt = rcpt.unwrap();
    assert!(rcpt.starts_with("451 4.7.1 "), "{rcpt}");
    client.send("QUIT");
    // The sender retries, as a real MTA does, until the delay has passed.
    let start = Instant::now();
    loop {
        let mut client = Client::connect(mx.addr);
        let (_, rcpt) = client.envelope("a@pass.test");
        let rcpt = rcpt.unwrap();
        if rcpt.starts_with("250 ") {
            let reply = client.data(&message("a@pass.test", "greylisted"));
            assert!(reply.starts_with("250 "), "{reply}");
            break;
        }
        assert!(rcpt.starts_with("451 4.7.1 "), "{rcpt}");
        assert!(start.elapsed() < WAIT, "still greylisted");
        std::thread::sleep(Duration::from_millis(200));
    }
    delivered(&mx.inst, "", "greylisted");
    // Another sender is a new triplet.
    let mut client = Client::connect(mx.addr);
    let (_, rcpt) = client.envelope("b@pass.test");
    assert!(rcpt.unwrap().starts_with("451 4.7.1 "));
}

#[test]
fn greylisting_and_the_other_checks_leave_relay_networks_alone() {
    // A DNS server that never answers: any check asked of it would be a 451.
    let dns = dns_server(vec![("pass.test", Rr::Silent)]);
    let mx = mx(dns, |inst| {
        inst.set("smtp_server", "greylisting", "true");
        inst.set("smtp_server", "relay_networks", "[\"127.0.0.0/8\"]");
    });
    let mut client = Client::connect(mx.addr);
    let (mail, rcpt) = client.envelope("a@pass.test");
    assert!(mail.starts_with("250 "), "{mail}");
    let rcpt = rcpt.unwrap();
    assert!(rcpt.starts_with("250 "), "{rcpt}");
    let reply = client.data(&message("a@pass.test", "from-our-network"));
    assert!(reply.starts_with("250 "), "{reply}");
    let got = delivered(&mx.inst, "", "from-our-network");
    assert!(
        !got.contains("Authentication-Results: mail.example.test"),
        "{got}"
    );
}
