//! pop-client end to end: the real daemon with core-queue, fetching from the
//! project's pop3-server (a second installation playing the provider), from
//! scripted fake POP3 servers (a dropped connection after RETR, -ERR on RETR,
//! no UIDL, a silent server, a bad greeting, a refused login), and from
//! Debian's Dovecot. Distribution of a domain mailbox, duplicates within a
//! batch and across polls, keep_on_server, the postmaster's notices, and
//! SIGKILL during a fetch of 500 messages.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::{Daemon, Installation, text};
use qs_mailstore::{Delivery, DeliveryItem, FolderName, Mailbox};

// Generous: CI machines may be loaded; a passing run does not wait for it.
const WAIT: Duration = Duration::from_secs(60);

/// The installation under test: alice, bob, carol, dave and the postmaster,
/// with core-queue running.
struct Site {
    inst: Installation,
    _core: Daemon,
}

fn site() -> Site {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.add_users(&[
        "alice@example.test",
        "bob@example.test",
        "carol@example.test",
        "dave@example.test",
    ]);
    inst.ok(&[
        "alias",
        "add",
        "family@example.test",
        "alice@example.test",
        "bob@example.test",
    ]);
    let core = inst.start("core-queue");
    // The tests go on to rewrite the config: core-queue must have read it first.
    let start = Instant::now();
    while !inst.socket().exists() {
        assert!(
            start.elapsed() < WAIT,
            "core-queue did not start:\n{}",
            core.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Site { inst, _core: core }
}

impl Site {
    /// Appends an account table to the config.
    fn account(&self, body: &str) {
        let mut text = std::fs::read_to_string(&self.inst.config).unwrap();
        text.push_str("\n[[pop_client.account]]\n");
        text.push_str(body.trim());
        text.push('\n');
        self.inst.replace_config(&text);
    }

    /// Starts pop-client and waits for its run file.
    fn pop_client(&self) -> Daemon {
        let daemon = self.inst.start("pop-client");
        self.wait_ready(&daemon);
        daemon
    }

    fn wait_ready(&self, daemon: &Daemon) {
        let path = self.inst.data_dir().join("run/pop-client.json");
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && text.contains(&format!("\"pid\":{},", daemon.pid()))
            {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "pop-client wrote no run file; log:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `qsctl fetch NAME`, which must succeed; its standard output.
    fn fetch(&self, name: &str, daemon: &Daemon) -> String {
        let out = self.inst.qsctl(&["fetch", name]);
        assert!(
            out.status.success(),
            "qsctl fetch {name}: {}\npop-client log:\n{}",
            text(&out),
            daemon.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits for every address to hold exactly its count of messages, and
    /// checks they still do a moment later (nothing arrives twice).
    fn expect_mail(&self, counts: &[(&str, usize)], daemon: &Daemon) {
        let start = Instant::now();
        loop {
            let now: Vec<usize> = counts
                .iter()
                .map(|(a, _)| self.inst.inbox(a).len())
                .collect();
            if counts.iter().zip(&now).all(|((_, want), got)| got >= want) {
                break;
            }
            assert!(
                start.elapsed() < WAIT,
                "expected {counts:?}, have {now:?}; pop-client log:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(400));
        for (address, want) in counts {
            assert_eq!(
                self.inst.inbox(address).len(),
                *want,
                "{address}; pop-client log:\n{}",
                daemon.log()
            );
        }
    }
}

/// Another installation playing the provider: its pop3-server serves the
/// mailbox `box@example.test` (password "pw").
struct Provider {
    inst: Installation,
    _pop3: Daemon,
    plain: SocketAddr,
    tls: SocketAddr,
}

const BOX: &str = "box@example.test";

fn provider() -> Provider {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("pop3_server", "allow_plaintext_auth", "true");
    inst.add_users(&[BOX]);
    let pop3 = inst.start("pop3-server");
    let plain = inst.listening("pop3-server", "pop3_server.listen")[0];
    let tls = inst.listening("pop3-server", "pop3_server.tls_listen")[0];
    Provider {
        inst,
        _pop3: pop3,
        plain,
        tls,
    }
}

impl Provider {
    fn mailbox(&self) -> Mailbox {
        let root =
            qs_mailstore::mailbox_path(&self.inst.data_dir(), "example.test", "box").unwrap();
        Mailbox::open(root, "provider.test").unwrap()
    }

    fn put(&self, message: &[u8]) {
        let key = format!("{}:{BOX}", rand::random::<u64>());
        match self
            .mailbox()
            .deliver(&FolderName::inbox(), message, &key)
            .unwrap()
        {
            Delivery::Stored { .. } => {}
            other => panic!("{other:?}"),
        }
    }

    /// Many messages in one batch (one fsync of the folder).
    fn put_many(&self, messages: &[Vec<u8>]) {
        let keys: Vec<String> = (0..messages.len())
            .map(|i| format!("{i}-{}:{BOX}", rand::random::<u64>()))
            .collect();
        let items: Vec<DeliveryItem<'_>> = keys
            .iter()
            .zip(messages)
            .map(|(key, bytes)| DeliveryItem { key, bytes })
            .collect();
        for result in self.mailbox().deliver_many(&FolderName::inbox(), &items) {
            assert!(matches!(result.unwrap(), Delivery::Stored { .. }));
        }
    }

    fn count(&self) -> usize {
        self.mailbox().inbox().messages().unwrap().len()
    }

    fn cert(&self) -> PathBuf {
        self.inst.data_dir().join("tls/cert.pem")
    }
}

fn message(headers: &str, body: &str) -> Vec<u8> {
    format!("{}\r\n\r\n{body}\r\n", headers.trim().replace('\n', "\r\n")).into_bytes()
}

fn has(message: &[u8], needle: &str) -> bool {
    String::from_utf8_lossy(message).contains(needle)
}

#[test]
fn a_domain_mailbox_is_distributed_over_implicit_tls() {
    let site = site();
    let provider = provider();
    // To and Cc: alice and bob.
    provider.put(&message(
        "Return-Path: <sender@elsewhere.example>\nFrom: sender@elsewhere.example\nTo: Alice <alice@example.test>\nCc: bob@example.test, x@elsewhere.example\nSubject: dinner\nMessage-ID: <dinner@elsewhere.example>",
        "Both welcome.\r\n.leading dot",
    ));
    // Bcc: only the provider's Delivered-To names carol.
    provider.put(&message(
        "Delivered-To: carol@example.test\nFrom: sender@elsewhere.example\nTo: alice@example.test\nSubject: party\nMessage-ID: <party@elsewhere.example>",
        "Don't tell Alice.",
    ));
    // For nobody here: the postmaster (default_user is not set).
    provider.put(&message(
        "From: spam@elsewhere.example\nTo: someone@elsewhere.example\nSubject: you won\nMessage-ID: <won@elsewhere.example>",
        "Click.",
    ));
    // A mailing-list copy for bob, found through X-Original-To.
    provider.put(&message(
        "X-Original-To: bob@example.test\nList-Id: <rowing.lists.example.org>\nFrom: coach@elsewhere.example\nTo: rowing@lists.example.org\nSubject: [rowing] 7am\nMessage-ID: <rowing@elsewhere.example>",
        "See you.",
    ));
    // The list's copy of the dinner message for alice: same Message-ID, in
    // the same batch: not delivered again.
    provider.put(&message(
        "X-Original-To: alice@example.test\nList-Id: <friends.lists.example.org>\nFrom: sender@elsewhere.example\nTo: friends@lists.example.org\nSubject: [friends] dinner\nMessage-ID: <dinner@elsewhere.example>",
        "Both welcome.",
    ));
    site.account(&format!(
        r#"
name = "family"
host = "127.0.0.1"
port = {}
tls = "implicit"
tls_ca_file = "{}"
username = "{BOX}"
password = "pw"
interval_secs = 3600
"#,
        provider.tls.port(),
        provider.cert().display()
    ));
    let popc = site.pop_client();
    site.fetch("family", &popc);
    site.expect_mail(
        &[
            ("alice@example.test", 1),
            ("bob@example.test", 2),
            ("carol@example.test", 1),
            ("postmaster@example.test", 1),
        ],
        &popc,
    );
    assert_eq!(provider.count(), 0, "the provider's mailbox is emptied");

    let alice = &site.inst.inbox("alice@example.test")[0];
    assert!(has(alice, "Subject: dinner\r\n"));
    assert!(
        has(alice, "Received: from 127.0.0.1 ([127.0.0.1])"),
        "{}",
        String::from_utf8_lossy(alice)
    );
    assert!(has(alice, "with POP3S for <alice@example.test>;") || has(alice, "with POP3S;"));
    assert!(has(alice, "\r\n..leading dot\r\n") || has(alice, "\r\n.leading dot\r\n"));
    assert_eq!(
        String::from_utf8_lossy(alice)
            .matches("Return-Path:")
            .count(),
        1,
        "one Return-Path, core-queue's"
    );
    assert!(has(alice, "Return-Path: <sender@elsewhere.example>"));
    let carol = &site.inst.inbox("carol@example.test")[0];
    assert!(has(carol, "X-Original-Delivered-To: carol@example.test"));
    let pm = &site.inst.inbox("postmaster@example.test")[0];
    assert!(has(
        pm,
        "X-Quicksilver-Fetch: no local recipient found in the header"
    ));
    assert!(has(pm, "Subject: you won"));

    // Across polls: the same Message-ID again is not delivered again, a new one is.
    provider.put(&message(
        "From: sender@elsewhere.example\nTo: alice@example.test, bob@example.test\nSubject: dinner again\nMessage-ID: <dinner@elsewhere.example>",
        "Resent by the provider.",
    ));
    provider.put(&message(
        "From: sender@elsewhere.example\nTo: dave@example.test\nSubject: new\nMessage-ID: <new@elsewhere.example>",
        "New.",
    ));
    let out = site.fetch("family", &popc);
    assert!(out.contains("family: 1 delivered, 1 duplicate"), "{out}");
    site.expect_mail(
        &[
            ("alice@example.test", 1),
            ("bob@example.test", 2),
            ("dave@example.test", 1),
        ],
        &popc,
    );
    assert_eq!(provider.count(), 0);

    // qsctl fetch with a name pop-client does not know.
    let err = site.inst.fails(&["fetch", "nobody"]);
    assert!(
        err.contains("no account named \"nobody\" (accounts: family)"),
        "{err}"
    );
    let log = popc.log();
    assert!(log.contains("account{account=family}"), "{log}");
    assert!(log.contains("duplicate"), "{log}");
}

#[test]
fn keep_on_server_fetches_each_message_once_then_deletes_it_when_old() {
    let site = site();
    let provider = provider();
    provider.put(&message("Subject: one\nMessage-ID: <one@x>", "1"));
    provider.put(&message("Subject: two", "2 (no Message-ID)"));
    // Over max_message_size: stays, and the postmaster is told once.
    provider.put(&message(
        "Subject: too large\nMessage-ID: <large@x>",
        &"large body line\r\n".repeat(300),
    ));
    site.account(&format!(
        r#"
name = "keep"
max_message_size = 2048
host = "localhost"
port = {}
tls = "starttls"
tls_verify = false
username = "{BOX}"
password = "pw"
interval_secs = 3600
deliver_to = "alice@example.test"
keep_on_server = true
delete_after_days = 2
"#,
        provider.plain.port()
    ));
    let popc = site.pop_client();
    site.fetch("keep", &popc);
    site.expect_mail(
        &[("alice@example.test", 2), ("postmaster@example.test", 1)],
        &popc,
    );
    assert_eq!(provider.count(), 3, "kept on the server");
    let notice = &site.inst.inbox("postmaster@example.test")[0];
    assert!(
        has(notice, "Subject: pop-client: a message of"),
        "{}",
        String::from_utf8_lossy(notice)
    );
    assert!(has(notice, "Auto-Submitted: auto-generated"));
    assert!(has(notice, "Return-Path: <>"));

    let out = site.fetch("keep", &popc);
    assert!(
        out.contains(
            "keep: 0 delivered, 0 duplicates, 0 deleted, 2 kept on the server, 1 too large"
        ),
        "{out}"
    );
    provider.put(&message("Subject: three\nMessage-ID: <three@x>", "3"));
    let out = site.fetch("keep", &popc);
    assert!(
        out.contains("keep: 1 delivered, 0 duplicates, 0 deleted, 3 kept"),
        "{out}"
    );
    site.expect_mail(
        &[("alice@example.test", 3), ("postmaster@example.test", 1)],
        &popc,
    );

    // Make every first fetch three days old: the next poll deletes them all,
    // without fetching them again.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = site.inst.client(Duration::from_secs(10));
    rt.block_on(async {
        let records = client
            .state_scan("pop-client/keep", "u:", None, 100)
            .await
            .unwrap();
        assert_eq!(records.len(), 3, "{records:?}");
        let old = (qs_queue::unix_now() - 3 * 86_400).to_string();
        for (key, _) in records {
            client
                .state_put("pop-client/keep", &key, old.as_bytes())
                .await
                .unwrap();
        }
    });
    let out = site.fetch("keep", &popc);
    assert!(
        out.contains("keep: 0 delivered, 0 duplicates, 3 deleted, 0 kept"),
        "{out}"
    );
    assert_eq!(provider.count(), 1, "only the large one is left");
    site.expect_mail(
        &[("alice@example.test", 3), ("postmaster@example.test", 1)],
        &popc,
    );
    // The records of deleted messages are forgotten; the notice's is kept.
    let left = rt.block_on(client.state_scan("pop-client/keep", "u", None, 100));
    assert!(left.unwrap().is_empty());
    let told = rt.block_on(client.state_scan("pop-client/keep", "big", None, 100));
    assert_eq!(told.unwrap().len(), 1);

    // STLS was used (and required).
    let alice = site.inst.inbox("alice@example.test");
    assert!(
        alice
            .iter()
            .all(|m| has(m, "with POP3S for <alice@example.test>;"))
    );
    drop(popc);
    let err = site.inst.fails(&["fetch", "keep"]);
    assert!(err.contains("pop-client is not running"), "{err}");
}

// ---------------------------------------------------------------------------
// A scripted fake POP3 server.

/// What a fake server does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// In the first session, the connection drops right after RETR's data.
    DropAfterFirstRetr,
    /// RETR of the message whose UIDL is "bad" gets -ERR.
    ErrOnRetr,
    /// No UIDL; and the first session drops at QUIT (the DELEs are lost).
    NoUidlDropFirstQuit,
    /// Accepts and says nothing.
    Silent,
    /// A greeting that is not +OK.
    BadGreeting,
    /// PASS is refused while `refuse` is set.
    RefuseLogin,
}

/// A fake server's mailbox: each message's UIDL and bytes.
type FakeMailbox = Mutex<Vec<(String, Vec<u8>)>>;

struct Fake {
    port: u16,
    messages: Arc<FakeMailbox>,
    sessions: Arc<AtomicUsize>,
    refuse: Arc<AtomicBool>,
}

fn fake(fault: Fault, messages: Vec<(&str, Vec<u8>)>) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = Fake {
        port,
        messages: Arc::new(Mutex::new(
            messages
                .into_iter()
                .map(|(u, m)| (u.to_string(), m))
                .collect(),
        )),
        sessions: Arc::new(AtomicUsize::new(0)),
        refuse: Arc::new(AtomicBool::new(fault == Fault::RefuseLogin)),
    };
    let (messages, sessions, refuse) = (
        fake.messages.clone(),
        fake.sessions.clone(),
        fake.refuse.clone(),
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let n = sessions.fetch_add(1, Ordering::SeqCst);
            let (messages, refuse) = (messages.clone(), refuse.clone());
            std::thread::spawn(move || {
                let _ = serve_fake(stream, fault, n == 0, &messages, &refuse);
            });
        }
    });
    fake
}

fn serve_fake(
    stream: TcpStream,
    fault: Fault,
    first: bool,
    mailbox: &FakeMailbox,
    refuse: &AtomicBool,
) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    match fault {
        Fault::Silent => {
            std::thread::sleep(Duration::from_secs(30));
            return Ok(());
        }
        Fault::BadGreeting => {
            out.write_all(b"* OK IMAP4rev1 server ready\r\n")?;
            std::thread::sleep(Duration::from_secs(1));
            return Ok(());
        }
        _ => out.write_all(b"+OK fake POP3 ready\r\n")?,
    }
    let uidl = fault != Fault::NoUidlDropFirstQuit;
    // The maildrop as it was at login, and the DELE marks.
    let mut session: Vec<(String, Vec<u8>)> = Vec::new();
    let mut marked: Vec<bool> = Vec::new();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let arg: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        match verb.as_str() {
            "CAPA" => {
                let caps = if uidl { "USER\r\nUIDL\r\n" } else { "USER\r\n" };
                out.write_all(format!("+OK\r\n{caps}.\r\n").as_bytes())?;
            }
            "USER" => out.write_all(b"+OK\r\n")?,
            "PASS" => {
                if refuse.load(Ordering::SeqCst) {
                    out.write_all(b"-ERR [AUTH] invalid password\r\n")?;
                    continue;
                }
                session = mailbox.lock().unwrap().clone();
                marked = vec![false; session.len()];
                out.write_all(b"+OK logged in\r\n")?;
            }
            "LIST" => {
                let mut text = String::from("+OK\r\n");
                for (i, (_, m)) in session.iter().enumerate() {
                    text.push_str(&format!("{} {}\r\n", i + 1, m.len()));
                }
                text.push_str(".\r\n");
                out.write_all(text.as_bytes())?;
            }
            "UIDL" if uidl => {
                let mut text = String::from("+OK\r\n");
                for (i, (u, _)) in session.iter().enumerate() {
                    text.push_str(&format!("{} {u}\r\n", i + 1));
                }
                text.push_str(".\r\n");
                out.write_all(text.as_bytes())?;
            }
            "RETR" if (1..=session.len()).contains(&arg) => {
                let (u, m) = &session[arg - 1];
                if fault == Fault::ErrOnRetr && u == "bad" {
                    out.write_all(b"-ERR [SYS/TEMP] cannot read that message\r\n")?;
                    continue;
                }
                let mut data = b"+OK\r\n".to_vec();
                for l in m.split_inclusive(|&b| b == b'\n') {
                    if l.starts_with(b".") {
                        data.push(b'.');
                    }
                    data.extend_from_slice(l);
                }
                data.extend_from_slice(b".\r\n");
                out.write_all(&data)?;
                if fault == Fault::DropAfterFirstRetr && first {
                    return Ok(());
                }
            }
            "DELE" if (1..=session.len()).contains(&arg) => {
                marked[arg - 1] = true;
                out.write_all(b"+OK marked\r\n")?;
            }
            "QUIT" => {
                if fault == Fault::NoUidlDropFirstQuit && first {
                    return Ok(());
                }
                let gone: Vec<String> = session
                    .iter()
                    .zip(&marked)
                    .filter(|(_, m)| **m)
                    .map(|((u, _), _)| u.clone())
                    .collect();
                mailbox.lock().unwrap().retain(|(u, _)| !gone.contains(u));
                out.write_all(b"+OK bye\r\n")?;
                return Ok(());
            }
            _ => out.write_all(b"-ERR unknown command\r\n")?,
        }
    }
}

fn fake_account(name: &str, port: u16, extra: &str) -> String {
    format!(
        r#"
name = "{name}"
host = "127.0.0.1"
port = {port}
tls = "none"
username = "family"
password = "hunter2-secret"
interval_secs = 3600
{extra}
"#
    )
}

#[test]
fn faults_of_the_server_are_contained_to_their_account() {
    let site = site();
    let m = |subject: &str| {
        message(
            &format!("Subject: {subject}\nMessage-ID: <{subject}@fake>"),
            "x",
        )
    };
    let drop = fake(
        Fault::DropAfterFirstRetr,
        vec![("u1", m("dropped-1")), ("u2", m("dropped-2"))],
    );
    let err = fake(
        Fault::ErrOnRetr,
        vec![("bad", m("unreadable")), ("good", m("readable"))],
    );
    let no_uidl = fake(
        Fault::NoUidlDropFirstQuit,
        vec![("", m("no-uidl-1")), ("", m("no-uidl-2"))],
    );
    let silent = fake(Fault::Silent, vec![]);
    let bad_greeting = fake(Fault::BadGreeting, vec![]);
    let refused = fake(Fault::RefuseLogin, vec![("r1", m("after-login"))]);
    site.account(&fake_account(
        "drop",
        drop.port,
        "deliver_to = \"alice@example.test\"",
    ));
    site.account(&fake_account(
        "err",
        err.port,
        "deliver_to = \"bob@example.test\"",
    ));
    site.account(&fake_account(
        "nouidl",
        no_uidl.port,
        "deliver_to = \"carol@example.test\"",
    ));
    site.account(&fake_account("silent", silent.port, "timeout_secs = 10"));
    site.account(&fake_account("greeting", bad_greeting.port, ""));
    site.account(&fake_account(
        "refused",
        refused.port,
        "deliver_to = \"dave@example.test\"\nreport_failure_after_secs = 1",
    ));
    // The file holds passwords: readable by others, pop-client says so.
    std::fs::set_permissions(
        &site.inst.config,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let started = Instant::now();
    let popc = site.pop_client();

    // The silent server does not hold the others up: their first polls end
    // long before its timeout (10 s).
    site.expect_mail(&[("bob@example.test", 1)], &popc);
    assert!(
        !popc.log().contains("account{account=silent}: poll failed"),
        "{:?} after the start:\n{}",
        started.elapsed(),
        popc.log()
    );

    // Everything is in the log, with the account's name; never the password.
    let wait_for = |needle: &str| {
        let start = Instant::now();
        while !popc.log().contains(needle) {
            assert!(
                start.elapsed() < WAIT,
                "no {needle:?} in the log:\n{}",
                popc.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The first polls of these two end in a dropped connection.
    wait_for("account{account=drop}: poll failed");
    wait_for("account{account=nouidl}: poll failed");

    // Dropped after RETR: the next poll delivers without duplicates.
    site.fetch("drop", &popc);
    site.expect_mail(&[("alice@example.test", 2)], &popc);
    assert!(drop.messages.lock().unwrap().is_empty());
    assert!(drop.sessions.load(Ordering::SeqCst) >= 2);

    // -ERR on RETR: the other message is delivered, that one stays.
    let err_out = site.inst.qsctl(&["fetch", "err"]);
    assert!(String::from_utf8_lossy(&err_out.stdout).contains("1 refused by the server"));
    let left: Vec<String> = err
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|(u, _)| u.clone())
        .collect();
    assert_eq!(left, ["bad"]);

    // No UIDL, and the first QUIT lost: Message-IDs keep it to one copy each.
    let out = site.fetch("nouidl", &popc);
    assert!(
        out.contains("(no UIDL: duplicates known by Message-ID)"),
        "{out}"
    );
    site.expect_mail(&[("carol@example.test", 2)], &popc);
    assert!(no_uidl.messages.lock().unwrap().is_empty());

    // A refused login, failing past report_failure_after_secs: the postmaster
    // hears of it once; then it works, and the postmaster hears that too.
    std::thread::sleep(Duration::from_millis(1100));
    let out = site.inst.qsctl(&["fetch", "refused"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("login refused: [AUTH] invalid password")
    );
    let out = site.inst.qsctl(&["fetch", "refused"]);
    assert!(!out.status.success());
    site.expect_mail(&[("postmaster@example.test", 1)], &popc);
    refused.refuse.store(false, Ordering::SeqCst);
    site.fetch("refused", &popc);
    site.expect_mail(
        &[("postmaster@example.test", 2), ("dave@example.test", 1)],
        &popc,
    );
    let notices = site.inst.inbox("postmaster@example.test");
    assert!(notices.iter().any(|n| has(
        n,
        "Subject: pop-client: account refused has been failing since"
    )));
    assert!(
        notices
            .iter()
            .any(|n| has(n, "Subject: pop-client: account refused works again"))
    );

    wait_for(
        "account{account=silent}: poll failed error=timed out after 10 s waiting for the greeting",
    );
    wait_for(
        "account{account=greeting}: poll failed error=bad greeting: \"* OK IMAP4rev1 server ready\"",
    );
    wait_for("account{account=err}: RETR refused");
    wait_for("account{account=nouidl}: the server does not support UIDL");
    wait_for("other users can read it");
    assert!(!popc.log().contains("hunter2"));
}

// ---------------------------------------------------------------------------
// Dovecot.

/// Dovecot on a loopback port, serving `family` / `secret` from a Maildir.
struct Dovecot {
    child: Child,
    maildir: PathBuf,
    port: u16,
    log: PathBuf,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Dovecot, or says why it cannot: a failure in CI (`QS_CI` set), a
/// skip elsewhere.
fn dovecot(dir: &Path) -> Option<Dovecot> {
    let ci = std::env::var_os("QS_CI").is_some_and(|v| !v.is_empty());
    let unavailable = |why: String| {
        if ci {
            panic!("QS_CI is set and Dovecot is required: {why}");
        }
        eprintln!(
            "SKIPPED: the Dovecot interop test needs Debian's dovecot-core and dovecot-pop3d ({why})"
        );
        None
    };
    let binary = Path::new("/usr/sbin/dovecot");
    if !binary.exists() || !Path::new("/usr/lib/dovecot/pop3").exists() {
        return unavailable("not installed: apt-get install dovecot-core dovecot-pop3d".into());
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = std::fs::metadata("/proc/self").unwrap();
    let root = me.uid() == 0;
    // As root, Dovecot drops to its own users, and the mail belongs to nobody.
    let (internal, login, uid, gid) = if root {
        ("dovecot".to_string(), "dovenull".to_string(), 65534, 65534)
    } else {
        let name = std::env::var("USER").unwrap_or_default();
        (name.clone(), name, me.uid(), me.gid())
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let maildir = dir.join("mail/Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    for sub in ["base", "state"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let passwd = dir.join("passwd");
    std::fs::write(&passwd, "family:{PLAIN}secret::::::\n").unwrap();
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.join("dovecot.log");
    let conf = dir.join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            r#"protocols = pop3
listen = 127.0.0.1
base_dir = {base}
state_dir = {state}
log_path = {log}
info_log_path = {log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {internal}
default_login_user = {login}
mail_location = maildir:{maildir}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
}}
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={home}
}}
"#,
            base = dir.join("base").display(),
            state = dir.join("state").display(),
            log = log.display(),
            maildir = maildir.display(),
            passwd = passwd.display(),
            home = dir.join("mail").display(),
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .args(["-F", "-c"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("stderr")).unwrap(),
        ))
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) => return unavailable(format!("cannot start it: {e}")),
    };
    let mut dovecot = Dovecot {
        child,
        maildir,
        port,
        log,
    };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = dovecot.child.try_wait().ok().flatten().is_some();
        if exited || start.elapsed() > Duration::from_secs(10) {
            let why = format!(
                "it did not start listening: {}{}",
                std::fs::read_to_string(dir.join("stderr")).unwrap_or_default(),
                std::fs::read_to_string(&dovecot.log).unwrap_or_default()
            );
            drop(dovecot);
            return unavailable(why);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(dovecot)
}

impl Dovecot {
    /// Puts a message (LF line ends, as Dovecot stores them) in `new/`.
    fn put(&self, name: &str, message: &str) {
        let path = self.maildir.join("new").join(name);
        std::fs::write(&path, message).unwrap();
        self.own(&path);
    }

    /// Gives the mail folder to the user Dovecot reads it as.
    fn own(&self, path: &Path) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
            let _ = std::os::unix::fs::chown(path, Some(65534), Some(65534));
        }
    }

    fn own_all(&self) {
        let root = self.maildir.parent().unwrap().to_path_buf();
        self.own(&root);
        for p in integration_tests::all_files(&root).into_iter().chain([
            self.maildir.clone(),
            self.maildir.join("new"),
            self.maildir.join("cur"),
            self.maildir.join("tmp"),
        ]) {
            self.own(&p);
        }
    }

    fn count(&self) -> usize {
        ["new", "cur"]
            .iter()
            .map(|d| std::fs::read_dir(self.maildir.join(d)).unwrap().count())
            .sum()
    }
}

#[test]
fn fetches_from_dovecot() {
    let site = site();
    let dir = tempfile::tempdir().unwrap();
    let Some(dovecot) = dovecot(dir.path()) else {
        return;
    };
    dovecot.own_all();
    let subjects = ["first", "second", "third"];
    for (i, s) in subjects.iter().enumerate() {
        dovecot.put(
            &format!("100{i}.M{i}P1.test"),
            &format!(
                "From: sender@elsewhere.example\nTo: {}@example.test\nSubject: {s}\nMessage-ID: <{s}@dovecot>\n\n.dot line\n\u{e9}t\u{e9}\nend\n",
                if i == 1 { "bob" } else { "alice" }
            ),
        );
    }
    site.account(&format!(
        r#"
name = "dovecot"
host = "127.0.0.1"
port = {}
tls = "none"
username = "family"
password = "secret"
interval_secs = 3600
"#,
        dovecot.port
    ));
    let popc = site.pop_client();
    let out = site.fetch("dovecot", &popc);
    assert!(!out.contains("no UIDL"), "{out}");
    site.expect_mail(&[("alice@example.test", 2), ("bob@example.test", 1)], &popc);
    assert_eq!(
        dovecot.count(),
        0,
        "Dovecot's log:\n{}",
        std::fs::read_to_string(&dovecot.log).unwrap_or_default()
    );
    let bob = &site.inst.inbox("bob@example.test")[0];
    assert!(has(bob, "Subject: second\r\n"));
    assert!(
        has(bob, "\r\n\r\n.dot line\r\n\u{e9}t\u{e9}\r\nend\r\n"),
        "{}",
        String::from_utf8_lossy(bob)
    );
}

// ---------------------------------------------------------------------------
// SIGKILL during a large fetch.

#[test]
fn killed_again_and_again_during_a_fetch_delivers_each_message_exactly_once() {
    const N: usize = 500;
    let site = site();
    let provider = provider();
    let messages: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let to = if i % 2 == 0 { "alice" } else { "bob" };
            message(
                &format!("From: sender@elsewhere.example\nTo: {to}@example.test\nSubject: message {i}\nMessage-ID: <m{i}@elsewhere.example>"),
                &format!("Body of message {i}."),
            )
        })
        .collect();
    provider.put_many(&messages);
    site.account(&format!(
        r#"
name = "big"
host = "127.0.0.1"
port = {}
tls = "none"
username = "{BOX}"
password = "pw"
interval_secs = 3600
"#,
        provider.plain.port()
    ));
    let delivered =
        || site.inst.inbox("alice@example.test").len() + site.inst.inbox("bob@example.test").len();
    let mut popc = site.pop_client();
    let mut kills = 0;
    let mut last = 0;
    while kills < 6 {
        let start = Instant::now();
        let mut asked = false;
        while delivered() < last + 40 && delivered() < N {
            assert!(start.elapsed() < WAIT, "no progress; log:\n{}", popc.log());
            if !asked && start.elapsed() > Duration::from_secs(3) {
                // The first poll may have met the maildrop still locked by
                // the killed session ([IN-USE]); ask for another.
                site.inst.qsctl(&["fetch", "big", "--no-wait"]);
                asked = true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if delivered() >= N {
            break;
        }
        std::thread::sleep(Duration::from_millis(rand::random::<u64>() % 15));
        popc.kill9();
        kills += 1;
        last = delivered();
        popc.restart();
    }
    assert!(
        kills >= 3,
        "the fetch ended before pop-client could be killed"
    );
    site.wait_ready(&popc);
    let start = Instant::now();
    let mut asked = Instant::now();
    while provider.count() > 0 || delivered() < N {
        if asked.elapsed() > Duration::from_secs(3) {
            site.inst.qsctl(&["fetch", "big", "--no-wait"]);
            asked = Instant::now();
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "{} left on the server, {} delivered; log:\n{}",
            provider.count(),
            delivered(),
            popc.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in site
        .inst
        .inbox("alice@example.test")
        .into_iter()
        .chain(site.inst.inbox("bob@example.test"))
    {
        let text = String::from_utf8_lossy(&m).into_owned();
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap()
            .to_string();
        *seen.entry(subject).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(seen.len(), N, "each message delivered");
}
