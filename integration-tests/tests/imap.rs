//! imap-server end to end: the real daemon on loopback and the real Maildir, with
//! async-imap as the main client, raw bytes for literals, IDLE and bad input, and
//! Python's imaplib over TLS as a second client. Mail arrives both straight into the
//! Maildir and through smtp-server and core-queue.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use integration_tests::{Daemon, Installation, text};
use qs_mailstore::{Delivery, FolderName, Mailbox, MessageId};

const ALICE: &str = "alice@example.test";

/// An installation with alice and bob, and imap-server running.
fn setup(plaintext: bool) -> (Installation, Daemon) {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    if plaintext {
        inst.set("imap_server", "allow_plaintext_auth", "true");
    }
    inst.add_users(&[ALICE, "bob@example.test"]);
    let daemon = inst.start("imap-server");
    (inst, daemon)
}

/// The plain and TLS addresses of the running daemon, from its run file (waiting for
/// the one this process wrote, after a restart).
fn addrs(inst: &Installation, daemon: &Daemon) -> (SocketAddr, SocketAddr) {
    let path = inst.data_dir().join("run/imap-server.json");
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
            && json["pid"].as_u64() == Some(u64::from(daemon.pid()))
        {
            let addr = |key: &str| -> SocketAddr {
                json["listeners"][key][0].as_str().unwrap().parse().unwrap()
            };
            return (addr("imap_server.listen"), addr("imap_server.tls_listen"));
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "imap-server wrote no run file; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mailbox(inst: &Installation, address: &str) -> Mailbox {
    let (local, domain) = address.split_once('@').unwrap();
    let root = qs_mailstore::mailbox_path(&inst.data_dir(), domain, local).unwrap();
    Mailbox::open(root, "mx.test").unwrap()
}

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: Bob <bob@example.test>\r\nTo: Alice <alice@example.test>\r\nSubject: {subject}\r\n\
         Date: Tue, 1 Jul 2025 10:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\n\r\n\
         Hello, this is {subject}.\r\n"
    )
    .into_bytes()
}

fn deliver(inst: &Installation, address: &str, bytes: &[u8]) -> MessageId {
    let key = format!("{}:{address}", rand::random::<u64>());
    match mailbox(inst, address)
        .deliver(&FolderName::inbox(), bytes, &key)
        .unwrap()
    {
        Delivery::Stored { id, .. } => id,
        other => panic!("{other:?}"),
    }
}

/// A client that speaks raw bytes.
struct Raw {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Raw {
    /// Connects and reads the greeting.
    fn connect(addr: SocketAddr) -> (Raw, String) {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = Raw {
            stream,
            pending: Vec::new(),
        };
        let greeting = raw.line();
        (raw, greeting)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// One line, CRLF included; empty at the end of the stream.
    fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return String::from_utf8_lossy(&line).into_owned();
            }
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return String::from_utf8_lossy(&std::mem::take(&mut self.pending))
                        .into_owned();
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "read: {e}; so far: {:?}",
                    String::from_utf8_lossy(&self.pending)
                ),
            }
        }
    }

    /// Sends a command; returns every line up to and including its tagged answer.
    fn cmd(&mut self, line: &str) -> String {
        let tag = line.split(' ').next().unwrap().to_owned();
        self.send(format!("{line}\r\n").as_bytes());
        self.until(&format!("{tag} "))
    }

    /// Reads lines until one starts with `prefix`.
    fn until(&mut self, prefix: &str) -> String {
        let mut out = String::new();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "connection closed; got {out}");
            out.push_str(&line);
            if line.starts_with(prefix) {
                return out;
            }
        }
    }

    /// True once the server closed the connection.
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

type Imap = async_imap::Session<tokio::net::TcpStream>;

async fn login(addr: SocketAddr, user: &str) -> Imap {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut client = async_imap::Client::new(stream);
    let greeting = client.read_response().await.unwrap();
    assert!(greeting.is_some());
    client.login(user, "pw").await.map_err(|(e, _)| e).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_imap_main_flows() {
    let (inst, daemon) = setup(true);
    let first = deliver(&inst, ALICE, &message("one"));
    deliver(&inst, ALICE, &message("two"));
    deliver(&inst, ALICE, &message("three"));
    let (plain, _) = addrs(&inst, &daemon);
    let mut s = login(plain, ALICE).await;

    let caps = s.capabilities().await.unwrap();
    for cap in [
        "IMAP4rev1",
        "IDLE",
        "UIDPLUS",
        "MOVE",
        "SPECIAL-USE",
        "LITERAL+",
        "NAMESPACE",
        "CHILDREN",
        "LIST-EXTENDED",
        "LIST-STATUS",
    ] {
        assert!(caps.has_str(cap), "{cap}");
    }

    let names: Vec<String> = s
        .list(Some(""), Some("*"))
        .await
        .unwrap()
        .map_ok(|n| n.name().to_owned())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(names, ["INBOX", "Drafts", "Junk", "Sent", "Trash"]);

    let inbox = s.select("INBOX").await.unwrap();
    assert_eq!(inbox.exists, 3);
    assert_eq!(inbox.recent, 3);
    assert_eq!(inbox.uid_next, Some(4));
    let validity = inbox.uid_validity.unwrap();

    let fetched: Vec<async_imap::types::Fetch> = s
        .fetch(
            "1:*",
            "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)",
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(fetched.len(), 3);
    let one = &fetched[0];
    assert_eq!(one.uid, Some(1));
    assert_eq!(one.size, Some(message("one").len() as u32));
    let envelope = one.envelope().unwrap();
    assert_eq!(envelope.subject.as_deref(), Some(&b"one"[..]));
    let from = &envelope.from.as_ref().unwrap()[0];
    assert_eq!(from.mailbox.as_deref(), Some(&b"bob"[..]));
    assert_eq!(from.host.as_deref(), Some(&b"example.test"[..]));
    assert!(one.bodystructure().is_some());
    let date = one.internal_date().unwrap().timestamp();
    assert!(
        (date
            - std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64)
            .abs()
            < 120
    );

    // BODY[] is byte-identical and sets \Seen.
    let body: Vec<async_imap::types::Fetch> = s
        .uid_fetch("1", "BODY[]")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(body[0].body(), Some(&message("one")[..]));
    let seen = mailbox(&inst, ALICE).inbox().find(&first).unwrap();
    assert!(seen.flags.contains(qs_mailstore::Flag::Seen));

    let stored: Vec<async_imap::types::Fetch> = s
        .uid_store("2", "+FLAGS (\\Flagged $Important)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let flags: Vec<String> = stored[0].flags().map(|f| format!("{f:?}")).collect();
    assert!(flags.iter().any(|f| f.contains("Flagged")), "{flags:?}");
    assert!(flags.iter().any(|f| f.contains("$Important")), "{flags:?}");

    let found = s.uid_search("FLAGGED").await.unwrap();
    assert_eq!(found.into_iter().collect::<Vec<_>>(), [2]);
    let found = s.search("SUBJECT three").await.unwrap();
    assert_eq!(found.into_iter().collect::<Vec<_>>(), [3]);
    let mut unseen: Vec<u32> = s.uid_search("UNSEEN").await.unwrap().into_iter().collect();
    unseen.sort();
    assert_eq!(unseen, [2, 3]);

    s.append("Sent", Some("(\\Seen)"), None, message("sent"))
        .await
        .unwrap();
    s.create("Archive").await.unwrap();
    s.uid_copy("1:2", "Archive").await.unwrap();
    s.uid_mv("3", "Trash").await.unwrap();
    let status = s.status("Archive", "(MESSAGES UIDNEXT)").await.unwrap();
    assert_eq!(status.exists, 2);
    assert_eq!(status.uid_next, Some(3));
    let status = s.status("Sent", "(MESSAGES)").await.unwrap();
    assert_eq!(status.exists, 1);

    s.uid_store("1", "+FLAGS.SILENT (\\Deleted)")
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let expunged: Vec<u32> = s.expunge().await.unwrap().try_collect().await.unwrap();
    assert_eq!(expunged, [1]);
    let inbox = s.select("INBOX").await.unwrap();
    assert_eq!(inbox.exists, 1);
    assert_eq!(inbox.uid_validity, Some(validity));

    s.rename("Archive", "Archive2025").await.unwrap();
    s.subscribe("Archive2025").await.unwrap();
    let subscribed: Vec<String> = s
        .lsub(Some(""), Some("*"))
        .await
        .unwrap()
        .map_ok(|n| n.name().to_owned())
        .try_collect()
        .await
        .unwrap();
    assert!(
        subscribed.contains(&"Archive2025".to_owned()),
        "{subscribed:?}"
    );
    s.delete("Archive2025").await.unwrap();
    assert!(s.select("Archive2025").await.is_err());
    s.logout().await.unwrap();
}

#[test]
fn idle_reports_new_mail_within_a_second_also_from_smtp() {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("imap_server", "allow_plaintext_auth", "true");
    inst.add_users(&[ALICE]);
    let daemon = inst.start("imap-server");
    let _queue = inst.start("core-queue");
    let smtp = inst.start("smtp-server");
    let (plain, _) = addrs(&inst, &daemon);
    let (mut c, _) = Raw::connect(plain);
    c.cmd("a LOGIN alice@example.test pw");
    let out = c.cmd("s SELECT INBOX");
    assert!(out.contains("* 0 EXISTS"), "{out}");
    c.send(b"i IDLE\r\n");
    assert_eq!(c.line(), "+ idling\r\n");

    // Straight into the Maildir: reported within a second.
    let start = Instant::now();
    deliver(&inst, ALICE, &message("direct"));
    assert_eq!(c.line(), "* 1 EXISTS\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(c.line(), "* 1 RECENT\r\n");

    // Through SMTP and the queue.
    let smtp_addr = inst.listening("smtp-server", "smtp_server.listen")[0];
    let mut s = TcpStream::connect(smtp_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let reply = |s: &mut TcpStream, send: &str| {
        if !send.is_empty() {
            s.write_all(send.as_bytes()).unwrap();
        }
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(reply(&mut s, "").starts_with("220"));
    assert!(reply(&mut s, "EHLO client.test\r\n").starts_with("250"));
    assert!(reply(&mut s, "MAIL FROM:<bob@remote.test>\r\n").starts_with("250"));
    assert!(reply(&mut s, "RCPT TO:<alice@example.test>\r\n").starts_with("250"));
    assert!(reply(&mut s, "DATA\r\n").starts_with("354"));
    let answer = reply(&mut s, "Subject: via smtp\r\n\r\nhello\r\n.\r\n");
    assert!(answer.starts_with("250"), "{answer}\n{}", smtp.log());
    let mut exists = String::new();
    for _ in 0..4 {
        exists = c.line();
        if exists.starts_with("* 2 EXISTS") {
            break;
        }
    }
    assert_eq!(exists, "* 2 EXISTS\r\n");
    c.send(b"DONE\r\n");
    let out = c.until("i ");
    assert!(out.ends_with("i OK IDLE terminated\r\n"), "{out}");
    let out = c.cmd("f FETCH 2 BODY.PEEK[HEADER.FIELDS (SUBJECT)]");
    assert!(out.contains("Subject: via smtp"), "{out}");
}

#[test]
fn two_sessions_on_one_folder_see_each_other() {
    let (inst, daemon) = setup(true);
    deliver(&inst, ALICE, &message("one"));
    deliver(&inst, ALICE, &message("two"));
    let (plain, _) = addrs(&inst, &daemon);
    let (mut a, _) = Raw::connect(plain);
    let (mut b, _) = Raw::connect(plain);
    a.cmd("a1 LOGIN alice@example.test pw");
    b.cmd("b1 LOGIN alice@example.test pw");
    assert!(a.cmd("a2 SELECT INBOX").contains("* 2 RECENT"));
    assert!(
        b.cmd("b2 SELECT INBOX").contains("* 0 RECENT"),
        "\\Recent in one session only"
    );

    // B idles; A's flag change reaches it.
    b.send(b"b3 IDLE\r\n");
    assert_eq!(b.line(), "+ idling\r\n");
    a.cmd("a3 STORE 1 +FLAGS (\\Deleted)");
    assert_eq!(b.line(), "* 1 FETCH (FLAGS (\\Deleted))\r\n");
    // A expunges: B hears of it during IDLE.
    let out = a.cmd("a4 EXPUNGE");
    assert!(out.contains("* 1 EXPUNGE"), "{out}");
    assert_eq!(b.line(), "* 1 EXPUNGE\r\n");
    b.send(b"DONE\r\n");
    b.until("b3 OK");
    // A new message: both see it at their next command.
    deliver(&inst, ALICE, &message("three"));
    assert!(a.cmd("a5 NOOP").contains("* 2 EXISTS"));
    assert!(b.cmd("b4 NOOP").contains("* 2 EXISTS"));
    let out = b.cmd("b5 UID FETCH 1:* (UID)");
    assert!(
        out.contains("* 1 FETCH (UID 2)") && out.contains("* 2 FETCH (UID 3)"),
        "{out}"
    );
}

#[test]
fn list_extended_and_list_status_on_the_wire() {
    let (inst, daemon) = setup(true);
    deliver(&inst, ALICE, &message("one"));
    let (plain, _) = addrs(&inst, &daemon);
    let (mut c, _) = Raw::connect(plain);
    assert!(c.cmd("a LOGIN alice@example.test pw").contains("a OK"));
    assert!(c.cmd("b CREATE Lists.Rust").contains("b OK"));
    assert!(c.cmd("c SUBSCRIBE Lists.Rust").contains("c OK"));
    // Every folder's counts in one round trip (RFC 5819), several patterns (RFC 5258).
    let out = c.cmd("d LIST \"\" (INBOX Lists.%) RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))");
    assert!(
        out.starts_with(
            "* LIST (\\HasNoChildren \\Subscribed) \".\" \"INBOX\"\r\n\
             * STATUS \"INBOX\" (MESSAGES 1 UNSEEN 1)\r\n\
             * LIST (\\HasNoChildren \\Subscribed) \".\" \"Lists.Rust\"\r\n\
             * STATUS \"Lists.Rust\" (MESSAGES 0 UNSEEN 0)\r\n\
             d OK"
        ),
        "{out}"
    );
    // Only subscribed names, with a parent told of by CHILDINFO; a literal pattern.
    let out = c.cmd("e LIST (SUBSCRIBED RECURSIVEMATCH) \"\" {1+}\r\n%");
    assert!(
        out.contains(
            "* LIST (\\Noselect \\HasChildren) \".\" \"Lists\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"
        ),
        "{out}"
    );
    assert!(!out.contains("Lists.Rust"), "{out}");
    assert!(c.cmd("f LIST (RECURSIVEMATCH) \"\" *").starts_with("f BAD"));
}

#[test]
fn literals_and_bad_input_on_the_wire() {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("imap_server", "allow_plaintext_auth", "true");
    // APPENDLIMIT 300 KiB; messages over 64 KiB are spooled.
    inst.set("imap_server", "max_literal_size", "307200");
    inst.set("imap_server", "spool_threshold", "65536");
    inst.add_users(&[ALICE]);
    let daemon = inst.start("imap-server");
    let (plain, _) = addrs(&inst, &daemon);
    let (mut c, greeting) = Raw::connect(plain);
    assert!(greeting.starts_with("* OK [CAPABILITY IMAP4"), "{greeting}");
    // A synchronizing literal gets "+", a non-synchronizing one (LITERAL+) does not.
    c.send(b"a LOGIN {18}\r\n");
    assert!(c.line().starts_with("+ "));
    c.send(b"alice@example.test {2+}\r\npw\r\n");
    assert!(c.until("a ").starts_with("a OK"));
    // A 100 KiB non-synchronizing APPEND pipelined with the next command: stored
    // (through the spool), and the next command answered after it.
    let body = format!("Subject: big\r\n\r\n{}", "0123456789abcde\n".repeat(6400));
    let mut pipelined = format!("b1 APPEND INBOX {{{}+}}\r\n{body}\r\n", body.len()).into_bytes();
    pipelined.extend_from_slice(b"b2 STATUS INBOX (MESSAGES)\r\n");
    c.send(&pipelined);
    let out = c.until("b2 ");
    assert!(out.starts_with("b1 OK [APPENDUID "), "{out}");
    assert!(out.contains("* STATUS \"INBOX\" (MESSAGES 1)"), "{out}");
    // Over APPENDLIMIT non-synchronizing: read, dropped, refused (RFC 7888 §4); the
    // session goes on.
    let mut big = b"b APPEND INBOX {400000+}\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 400_000));
    big.extend_from_slice(b"\r\n");
    c.send(&big);
    let out = c.until("b ");
    assert!(out.starts_with("b BAD [TOOBIG]"), "{out}");
    assert!(c.cmd("b3 NOOP").starts_with("b3 OK"));
    // Bigger than APPENDLIMIT: refused before it is sent.
    let out = c.cmd("c APPEND INBOX {999999999}");
    assert!(out.starts_with("c NO [TOOBIG]"), "{out}");
    let out = c.cmd("d APPEND INBOX {12+}\r\nSubject: x\r\n");
    assert!(out.contains("d OK [APPENDUID"), "{out}");
    // Garbage is answered, not fatal, until there is too much of it.
    assert!(c.cmd("e FROBNICATE").starts_with("e BAD"));
    assert!(c.cmd("f FETCH").starts_with("f BAD"));
    assert!(c.cmd("g SELECT").starts_with("g BAD"));
    let out = c.cmd("h FETCH 99 FLAGS");
    assert!(out.starts_with("h BAD"), "{out}");
    c.cmd("i SELECT INBOX");
    let out = c.cmd("j FETCH 99 FLAGS");
    assert!(out.starts_with("j BAD"), "{out}");
    // That makes 6 errors (the refused literal counts, the NO [TOOBIG] does not);
    // the 10th closes the session.
    c.send(b"k1 BAD\r\nk2 BAD\r\nk3 BAD\r\nk4 BAD\r\nk5 BAD\r\n");
    let out = c.until("* BYE");
    assert!(
        out.contains("k3 BAD") && out.contains("* BYE too many errors"),
        "{out}"
    );
    assert!(!out.contains("k5"), "{out}");
    assert!(c.closed());

    // Before login, a client streaming literals (CVE-2025-61600) is cut off once it
    // has sent the byte budget, and the daemon does not grow.
    let (d, _) = Raw::connect(plain);
    let mut writer = d.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut chunk = b"x XLOGIN {4000+}\r\n".to_vec();
        chunk.extend(std::iter::repeat_n(b'y', 4000));
        chunk.extend_from_slice(b" {4000+}\r\n");
        chunk.extend(std::iter::repeat_n(b'z', 4000));
        chunk.extend_from_slice(b"\r\n");
        let mut sent = 0;
        while sent < 64 << 20 && writer.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let mut d = d;
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match d.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{e} after {:?}", start.elapsed()),
        }
    }
    let seen = String::from_utf8_lossy(&seen).into_owned();
    assert!(seen.contains("* BYE"), "{seen}");
    let sent = sender.join().unwrap();
    assert!(sent < 64 << 20, "the server kept reading");
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kb < 64 * 1024, "imap-server uses {rss_kb} kB");
    // The daemon is fine.
    let (mut e, _) = Raw::connect(plain);
    assert!(e.cmd("z NOOP").starts_with("z OK"));
}

#[test]
fn uids_and_flags_survive_a_restart() {
    let (inst, mut daemon) = setup(true);
    for s in ["one", "two", "three"] {
        deliver(&inst, ALICE, &message(s));
    }
    let (plain, _) = addrs(&inst, &daemon);
    let (mut c, _) = Raw::connect(plain);
    c.cmd("a LOGIN alice@example.test pw");
    let selected = c.cmd("b SELECT INBOX");
    let validity = selected
        .lines()
        .find_map(|l| l.strip_prefix("* OK [UIDVALIDITY "))
        .unwrap()
        .split(']')
        .next()
        .unwrap()
        .to_owned();
    c.cmd("c STORE 2 +FLAGS (\\Answered Project)");
    c.cmd("d STORE 1 +FLAGS (\\Deleted)");
    c.cmd("e EXPUNGE");
    let before = c.cmd("f UID FETCH 1:* (UID FLAGS)");
    // Modification sequences (CONDSTORE) as this process gave them.
    let modseqs = c.cmd("g UID FETCH 1:* (MODSEQ)");
    let highest = c.cmd("h STATUS INBOX (HIGHESTMODSEQ)");
    drop(c);

    daemon.restart();
    let (plain, _) = addrs(&inst, &daemon);
    deliver(&inst, ALICE, &message("four"));
    let (mut c, _) = Raw::connect(plain);
    c.cmd("a LOGIN alice@example.test pw");
    let selected = c.cmd("b SELECT INBOX");
    assert!(
        selected.contains(&format!("[UIDVALIDITY {validity}]")),
        "{selected}"
    );
    assert!(selected.contains("* 3 EXISTS"), "{selected}");
    assert!(selected.contains("[UIDNEXT 5]"), "{selected}");
    let after = c.cmd("f UID FETCH 1:* (UID FLAGS)");
    assert!(
        after.contains("* 1 FETCH (UID 2 FLAGS (\\Answered Project))"),
        "{after}"
    );
    assert!(after.contains("* 2 FETCH (UID 3 FLAGS ())"), "{after}");
    assert!(
        after.contains("* 3 FETCH (UID 4 FLAGS (\\Recent))"),
        "{after}"
    );
    assert!(
        before.contains("* 1 FETCH (UID 2 FLAGS (\\Answered \\Recent Project))"),
        "{before}"
    );
    // The new process reads the same sequences from the index, and a client that
    // knew the folder before the restart learns only what changed since: the
    // expunge and the new message.
    let highest: u64 = highest
        .split("HIGHESTMODSEQ ")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{highest}"));
    let again = c.cmd("g UID FETCH 2:3 (MODSEQ)");
    for uid in [2, 3] {
        let line = |out: &str| {
            out.lines()
                .find(|l| l.contains(&format!("(UID {uid} MODSEQ")))
                .map(str::to_owned)
        };
        let modseq_of = |out: &str| line(out).map(|l| l.split("MODSEQ").nth(1).unwrap().to_owned());
        assert!(modseq_of(&modseqs).is_some(), "{modseqs}");
        assert_eq!(modseq_of(&again), modseq_of(&modseqs), "{modseqs}\n{again}");
    }
    c.cmd("u UNSELECT");
    c.cmd("e ENABLE QRESYNC");
    let resync = c.cmd(&format!("s SELECT INBOX (QRESYNC ({validity} {highest}))"));
    assert!(!resync.contains("VANISHED"), "{resync}");
    assert!(
        resync.contains("FETCH (UID 4 FLAGS () MODSEQ ("),
        "{resync}"
    );
    assert!(
        !resync.contains("UID 2 ") && !resync.contains("UID 3 "),
        "{resync}"
    );
    let resync = c.cmd(&format!("s SELECT INBOX (QRESYNC ({validity} 1))"));
    assert!(resync.contains("* VANISHED (EARLIER) 1\r\n"), "{resync}");
}

/// Runs an imaplib script against the daemon; returns what it put in `out`.
fn python(plain: SocketAddr, tls: SocketAddr, script: &str) -> serde_json::Value {
    let prelude = r#"
import imaplib, json, os, ssl
PORT = int(os.environ["IMAP_PORT"])
TLS_PORT = int(os.environ["IMAPS_PORT"])
def context():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE  # the certificate is self-signed
    return c
out = {}
"#;
    let program = format!("{prelude}\n{script}\nprint(json.dumps(out))\n");
    let output = Command::new("python3")
        .arg("-c")
        .arg(&program)
        .env("IMAP_PORT", plain.port().to_string())
        .env("IMAPS_PORT", tls.port().to_string())
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "the script failed: {}",
        text(&output)
    );
    serde_json::from_slice(&output.stdout).expect("the script's JSON")
}

#[test]
fn python_imaplib_over_tls_and_starttls() {
    let (inst, daemon) = setup(false);
    deliver(&inst, ALICE, &message("one"));
    deliver(&inst, ALICE, &message("two"));
    let (plain, tls) = addrs(&inst, &daemon);
    let out = python(
        plain,
        tls,
        r#"
m = imaplib.IMAP4_SSL("127.0.0.1", TLS_PORT, ssl_context=context())
out["login"] = m.login("alice@example.test", "pw")[0]
out["list"] = [l.decode() for l in m.list()[1]]
typ, data = m.select("INBOX")
out["exists"] = data[0].decode()
typ, data = m.fetch("1:2", "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
out["fetch"] = [d[1].decode() if isinstance(d, tuple) else d.decode() for d in data]
out["store"] = m.store("2", "+FLAGS", "(\\Flagged)")[1][0].decode()
out["search"] = m.search(None, "FLAGGED")[1][0].decode()
out["uid_search"] = m.uid("SEARCH", None, "SUBJECT", "one")[1][0].decode()
typ, data = m.append("Drafts", "(\\Draft)", imaplib.Time2Internaldate(1700000000), b"Subject: draft\r\n\r\nbody\r\n")
out["append"] = data[0].decode()
m.select("Drafts")
typ, data = m.fetch("1", "(FLAGS INTERNALDATE)")
out["draft"] = data[0].decode()
m.select("INBOX")
typ, data = m.fetch("1", "(BINARY.PEEK[1] BINARY.SIZE[1])")
out["binary"] = [b"".join(d).decode() if isinstance(d, tuple) else d.decode() for d in data]
m.logout()

p = imaplib.IMAP4("127.0.0.1", PORT)
out["caps_before"] = list(p.capabilities)
try:
    p.login("alice@example.test", "pw")
    out["plain_login"] = "accepted"
except imaplib.IMAP4.error as e:
    out["plain_login"] = str(e)
p.starttls(ssl_context=context())
out["caps_after"] = list(p.capabilities)
out["tls_login"] = p.login("alice@example.test", "pw")[0]
p.logout()
"#,
    );
    assert_eq!(out["login"], "OK");
    let list = out["list"].to_string();
    assert!(
        list.contains("(\\\\HasNoChildren \\\\Drafts) \\\".\\\" \\\"Drafts\\\""),
        "{list}"
    );
    assert_eq!(out["exists"], "2");
    let fetch = out["fetch"].to_string();
    assert!(
        fetch.contains("Subject: one") && fetch.contains("Subject: two"),
        "{fetch}"
    );
    assert!(
        out["store"].as_str().unwrap().contains("\\Flagged"),
        "{}",
        out["store"]
    );
    assert_eq!(out["search"], "2");
    assert_eq!(out["uid_search"], "1");
    assert!(
        out["append"].as_str().unwrap().starts_with("[APPENDUID "),
        "{}",
        out["append"]
    );
    let draft = out["draft"].as_str().unwrap();
    assert!(
        draft.contains("\\Draft") && draft.contains("14-Nov-2023 22:13:20 +0000"),
        "{draft}"
    );
    let binary = out["binary"].to_string();
    assert!(
        binary.contains("BINARY[1] {21}")
            && binary.contains("Hello, this is one.")
            && binary.contains("BINARY.SIZE[1] 21"),
        "{binary}"
    );
    let before = out["caps_before"].to_string();
    assert!(
        before.contains("STARTTLS") && before.contains("LOGINDISABLED"),
        "{before}"
    );
    assert!(
        out["plain_login"]
            .as_str()
            .unwrap()
            .contains("PRIVACYREQUIRED"),
        "{}",
        out["plain_login"]
    );
    let after = out["caps_after"].to_string();
    assert!(
        after.contains("AUTH=PLAIN") && !after.contains("LOGINDISABLED"),
        "{after}"
    );
    assert_eq!(out["tls_login"], "OK");
    assert!(daemon.log().contains("logged in"), "{}", daemon.log());
}

#[test]
fn pop3_changes_reach_imap_sessions_and_uids_hold() {
    let (inst, daemon) = setup(true);
    inst.set("pop3_server", "allow_plaintext_auth", "true");
    let pop3 = inst.start("pop3-server");
    for s in ["one", "two", "three"] {
        deliver(&inst, ALICE, &message(s));
    }
    let (plain, _) = addrs(&inst, &daemon);
    let (mut c, _) = Raw::connect(plain);
    c.cmd("a LOGIN alice@example.test pw");
    c.cmd("b EXAMINE INBOX");
    let pop3_addr = inst.listening("pop3-server", "pop3_server.listen")[0];
    let script = r#"
import os, poplib
p = poplib.POP3("127.0.0.1", int(os.environ["POP3_PORT"]), timeout=10)
p.user("alice@example.test")
p.pass_("pw")
p.retr(2)
p.dele(1)
p.quit()
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("POP3_PORT", pop3_addr.port().to_string())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}\n{}", text(&output), pop3.log());
    // No read-write session has seen them: they are \Recent in this EXAMINE.
    let out = c.cmd("c NOOP");
    assert!(
        out.contains("* 2 FETCH (FLAGS (\\Seen \\Recent))\r\n* 1 EXPUNGE\r\n"),
        "{out}"
    );
    let out = c.cmd("d UID FETCH 1:* (UID FLAGS)");
    assert!(
        out.contains("* 1 FETCH (UID 2 FLAGS (\\Seen \\Recent))"),
        "{out}"
    );
    assert!(out.contains("* 2 FETCH (UID 3 FLAGS (\\Recent))"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_patterns_built_to_backtrack_and_searches_with_many_ors() {
    let (inst, daemon) = setup(true);
    for s in ["one", "two", "three"] {
        deliver(&inst, ALICE, &message(s));
    }
    let (plain, _) = addrs(&inst, &daemon);
    let mut imap = login(plain, ALICE).await;
    let long_name = "a".repeat(200);
    imap.create(&long_name).await.unwrap();

    // A backtracking matcher took 20.9 s for five stars and never ended at six (the
    // time-out only turns such a hang into a failure).
    let pattern = format!("{}b", "*a".repeat(30));
    let listed: Vec<_> = tokio::time::timeout(Duration::from_secs(60), async {
        imap.list(Some(""), Some(&pattern))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    })
    .await
    .expect("LIST with 30 stars never answered");
    assert!(listed.is_empty(), "{listed:?}");
    let listed: Vec<_> = imap
        .list(Some(""), Some(&"*a".repeat(30)))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let names: Vec<&str> = listed.iter().map(|n| n.name()).collect();
    assert_eq!(names, [long_name.as_str()]);

    // "From, to, cc, subject or body contains": ten keys, nested ten deep, which
    // imap-codec alone refuses.
    imap.select("INBOX").await.unwrap();
    let keys = ["FROM", "TO", "CC", "SUBJECT", "BODY"]
        .iter()
        .flat_map(|k| [format!("{k} nobody"), format!("{k} \"is two\"")])
        .collect::<Vec<_>>();
    let query = format!("{}{}", "OR ".repeat(keys.len() - 1), keys.join(" "));
    let found = imap.uid_search(&query).await.unwrap();
    assert_eq!(found.into_iter().collect::<Vec<_>>(), [2]);
    let query = format!("NOT ({query})");
    let mut found: Vec<u32> = imap.search(&query).await.unwrap().into_iter().collect();
    found.sort_unstable();
    assert_eq!(found, [1, 3]);
    imap.logout().await.unwrap();

    let (mut c, _) = Raw::connect(plain);
    c.cmd("a LOGIN alice@example.test pw");
    c.cmd("b SELECT INBOX");
    let out = c.cmd(&format!("c SEARCH {}ALL", "(".repeat(60_000)));
    assert!(
        out.starts_with("c NO [LIMIT] SEARCH takes at most 1000 search keys\r\n"),
        "{out}"
    );
    let out = c.cmd(&format!("d SEARCH {}ALL", "OR SEEN (FLAGGED ".repeat(40)));
    assert!(out.starts_with("d BAD "), "unbalanced: {out}");
    let out = c.cmd(&format!(
        "e SEARCH {}ALL{}",
        "OR SEEN (FLAGGED ".repeat(40),
        ")".repeat(40)
    ));
    assert!(
        out.starts_with("e NO [LIMIT] SEARCH keys may nest at most 64 levels deep\r\n"),
        "{out}"
    );
    let out = c.cmd(&format!("f LIST \"\" \"{}\"", "*".repeat(1100)));
    assert!(
        out.starts_with(
            "f NO [LIMIT] LIST takes a reference and patterns of at most 1024 bytes\r\n"
        ),
        "{out}"
    );
    // The session goes on.
    let out = c.cmd("g SEARCH OR SUBJECT one SUBJECT three");
    assert!(out.contains("* SEARCH 1 3\r\ng OK"), "{out}");
}

/// Leaves a session of `daemon` stuck in a command: a FETCH reading a message file
/// that never ends (a FIFO, as a hung network file system would give). Returns the
/// client and the FIFO's writing end, held open and never written to.
fn session_stuck_in_a_fetch(inst: &Installation, daemon: &Daemon) -> (Raw, std::fs::File) {
    use std::os::unix::fs::OpenOptionsExt;
    deliver(inst, ALICE, &message("one"));
    let fifo = mailbox(inst, ALICE)
        .root()
        .join("cur/1751364000.M1P1.mx.test:2,S");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let (plain, _) = addrs(inst, daemon);
    let (mut c, _) = Raw::connect(plain);
    c.cmd("a LOGIN alice@example.test pw");
    let out = c.cmd("b SELECT INBOX");
    assert!(out.contains("* 2 EXISTS"), "{out}");
    c.send(b"c FETCH 1:* (BODY[])\r\n");
    // Opening the FIFO for writing without blocking succeeds once the server is
    // opening it for reading: the FETCH is under way, and stays in read() as long as
    // the writing end is open.
    const O_NONBLOCK: i32 = 0o4000; // Linux
    let started = Instant::now();
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo)
        {
            Ok(writer) => return (c, writer),
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(20),
                "the FETCH never opened the message: {e}; log:\n{}",
                daemon.log()
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A session stuck in a command does not keep a stopped imap-server alive: it is
/// dropped after the drain time and the process exits.
#[test]
fn a_stop_ends_a_session_stuck_in_a_command() {
    let (inst, mut daemon) = setup(true);
    let (mut c, _writer) = session_stuck_in_a_fetch(&inst, &daemon);
    // The drain time at a stop (5 s), the wait for blocking work (2 s), and room.
    let status = daemon.terminate(Duration::from_secs(20));
    let log = daemon.log();
    let status = status.unwrap_or_else(|| panic!("still running after SIGTERM; log:\n{log}"));
    assert!(status.success(), "{status:?}; log:\n{log}");
    assert!(log.contains("stopping with sessions still open"), "{log}");
    assert!(c.closed(), "the client's connection was left open");
}

/// Whether process `pid` is gone (or only a zombie nobody has reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// After a restart without downtime, the old process ends a session stuck in a
/// command once the grace period and the drain time are over, and exits.
#[test]
fn the_old_process_of_a_restart_ends_a_session_stuck_in_a_command() {
    let (inst, mut daemon) = setup(true);
    inst.set("restart", "grace_secs", "1");
    let (mut c, _writer) = session_stuck_in_a_fetch(&inst, &daemon);
    let old = daemon.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    // The grace period (1 s), the drain time (5 s), the wait for blocking work (2 s),
    // and room.
    let status = daemon.wait_exit(Duration::from_secs(25));
    let successor = std::fs::read_to_string(inst.data_dir().join("run/imap-server.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|json| json["pid"].as_u64())
        .map(|pid| pid as u32)
        .filter(|&pid| pid != old);
    if let Some(pid) = successor {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let log = daemon.log();
    let status = status.unwrap_or_else(|| panic!("the old process still runs; log:\n{log}"));
    assert!(status.success(), "{status:?}; log:\n{log}");
    assert!(c.closed(), "the client's connection was left open");
    let successor = successor.unwrap_or_else(|| panic!("no new process; log:\n{log}"));
    let start = Instant::now();
    while !gone(successor) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the new process still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
