//! pop3-server end to end: the real daemon on loopback, Python's poplib as the
//! client, the real Maildir. Byte-identical retrieval, DELE and the UPDATE
//! state, the maildrop lock, UIDL across restarts and flag changes, TLS (STLS
//! and the implicit-TLS port), and the per-user options set with qsctl.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::{Daemon, Installation, text};
use qs_mailstore::{Delivery, Flag, Flags, FolderName, Mailbox, MessageEntry, MessageId};

/// A message with lines that begin with '.', a line that is only '.', and an
/// 8-bit body (Latin-1 bytes that are not UTF-8).
const DOTS: &[u8] = b"From: sender@example.test\r\nTo: alice@example.test\r\nSubject: dots\r\n\r\n.\r\n..two\r\n.leading dot\r\n\xe9t\xe9 \xff\xfe 8-bit\r\nlast line\r\n";

/// Helpers every script starts with. `POP3_PORT` and `POP3S_PORT` come from
/// the environment; `out` is printed as JSON at the end.
const PRELUDE: &str = r#"
import base64, json, os, poplib, socket, ssl, sys, time
HOST = "127.0.0.1"
PORT = int(os.environ["POP3_PORT"])
TLS_PORT = int(os.environ["POP3S_PORT"])

def context():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE  # the certificate is self-signed
    return c

def connect():
    return poplib.POP3(HOST, PORT, timeout=10)

def login(user="alice@example.test", password="pw"):
    """Logs in, waiting while an earlier session (one the server has not yet
    seen end) still holds the maildrop."""
    deadline = time.time() + 10
    while True:
        p = connect()
        p.user(user)
        try:
            p.pass_(password)
            return p
        except poplib.error_proto as e:
            if b"[IN-USE]" not in e.args[0] or time.time() > deadline:
                raise
            p.quit()
            time.sleep(0.05)

def drop(p):
    """Ends the connection without QUIT."""
    p.sock.close()
    p.file.close()

def retr(p, n):
    _, lines, octets = p.retr(n)
    return b"".join(l + b"\r\n" for l in lines), octets

def b64(data):
    return base64.b64encode(data).decode()

def hexed(data):
    return data.hex()

out = {}
"#;

/// An installation with alice, bob and carol, and pop3-server running.
fn setup(plaintext: bool) -> (Installation, Daemon) {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    if plaintext {
        inst.set("pop3_server", "allow_plaintext_auth", "true");
    }
    inst.add_users(&[
        "alice@example.test",
        "bob@example.test",
        "carol@example.test",
    ]);
    let daemon = inst.start("pop3-server");
    (inst, daemon)
}

/// The plain and TLS ports of the running daemon, from its run file (waiting
/// for the one this process wrote, after a restart).
fn ports(inst: &Installation, daemon: &Daemon) -> (u16, u16) {
    let path = inst.data_dir().join("run/pop3-server.json");
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
            && json["pid"].as_u64() == Some(u64::from(daemon.pid()))
        {
            let port = |key: &str| -> u16 {
                json["listeners"][key][0]
                    .as_str()
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                    .map(|a| a.port())
                    .unwrap()
            };
            return (port("pop3_server.listen"), port("pop3_server.tls_listen"));
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "pop3-server wrote no run file; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a poplib script against the daemon; returns what it put in `out`.
fn python(inst: &Installation, daemon: &Daemon, script: &str) -> serde_json::Value {
    let (plain, tls) = ports(inst, daemon);
    let program = format!("{PRELUDE}\n{script}\nprint(json.dumps(out))\n");
    let output = Command::new("python3")
        .arg("-c")
        .arg(&program)
        .env("POP3_PORT", plain.to_string())
        .env("POP3S_PORT", tls.to_string())
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "the script failed: {}\npop3-server log:\n{}",
        text(&output),
        daemon.log()
    );
    serde_json::from_slice(&output.stdout).expect("the script's JSON")
}

fn mailbox(inst: &Installation, address: &str) -> Mailbox {
    let (local, domain) = address.split_once('@').unwrap();
    let root = qs_mailstore::mailbox_path(&inst.data_dir(), domain, local).unwrap();
    Mailbox::open(root, "mx.test").unwrap()
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

fn inbox(inst: &Installation, address: &str) -> Vec<MessageEntry> {
    mailbox(inst, address).inbox().messages().unwrap()
}

/// Bytes the script sent as hexadecimal.
fn bytes(value: &serde_json::Value) -> Vec<u8> {
    let hex = value.as_str().unwrap().as_bytes();
    hex.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn poplib_retrieves_dot_lines_and_eight_bit_bodies_byte_identical() {
    let (inst, daemon) = setup(true);
    let first = deliver(&inst, "alice@example.test", DOTS);
    // Written by other software: bare LF line ends, no final line end.
    let bare_lf = b"Subject: lf\n\nline one\n.dot\nno end";
    let second = deliver(&inst, "alice@example.test", bare_lf);
    let out = python(
        &inst,
        &daemon,
        r#"
p = login()
out["stat"] = list(p.stat())
out["list"] = [l.decode() for l in p.list()[1]]
out["uidl"] = [l.decode().split(" ")[1] for l in p.uidl()[1]]
m1, o1 = retr(p, 1)
m2, o2 = retr(p, 2)
out["m1"], out["o1"], out["m2"], out["o2"] = hexed(m1), o1, hexed(m2), o2
_, top, _ = p.top(1, 0)
out["top"] = hexed(b"".join(l + b"\r\n" for l in top))
out["quit"] = p.quit().decode()
"#,
    );
    assert_eq!(bytes(&out["m1"]), DOTS);
    let crlf = b"Subject: lf\r\n\r\nline one\r\n.dot\r\nno end\r\n";
    assert_eq!(bytes(&out["m2"]), crlf);
    // STAT, LIST and what poplib counted all agree.
    assert_eq!(out["o1"], DOTS.len());
    assert_eq!(out["o2"], crlf.len());
    assert_eq!(
        strings(&out["list"]),
        [format!("1 {}", DOTS.len()), format!("2 {}", crlf.len())]
    );
    assert_eq!(out["stat"][0], 2);
    assert_eq!(out["stat"][1], DOTS.len() + crlf.len());
    assert_eq!(
        strings(&out["uidl"]),
        [first.to_string(), second.to_string()]
    );
    assert_eq!(
        bytes(&out["top"]),
        b"From: sender@example.test\r\nTo: alice@example.test\r\nSubject: dots\r\n\r\n"
    );
    assert!(out["quit"].as_str().unwrap().starts_with("+OK"));
}

#[test]
fn dele_is_undone_by_a_dropped_connection_and_done_by_quit() {
    let (inst, daemon) = setup(true);
    deliver(
        &inst,
        "alice@example.test",
        b"Subject: keep me\r\n\r\nbody\r\n",
    );
    let out = python(
        &inst,
        &daemon,
        r#"
p = login()
out["dele"] = p.dele(1).decode()
drop(p)
p = login()
out["after_drop"] = p.stat()[0]
p.dele(1)
out["rset"] = p.rset().decode()
out["after_rset"] = p.stat()[0]
p.dele(1)
out["quit"] = p.quit().decode()
p = login()
out["after_quit"] = p.stat()[0]
p.quit()
"#,
    );
    assert!(out["dele"].as_str().unwrap().starts_with("+OK"));
    assert_eq!(out["after_drop"], 1, "a dropped connection deletes nothing");
    assert_eq!(out["after_rset"], 1, "RSET undoes DELE");
    assert_eq!(out["quit"], "+OK signing off");
    assert_eq!(out["after_quit"], 0);
    assert!(inbox(&inst, "alice@example.test").is_empty());
    let log = daemon.log();
    assert!(
        log.contains("connection closed without QUIT; nothing deleted"),
        "{log}"
    );
}

#[test]
fn a_second_session_gets_in_use() {
    let (inst, daemon) = setup(true);
    deliver(&inst, "alice@example.test", b"Subject: x\r\n\r\nx\r\n");
    let out = python(
        &inst,
        &daemon,
        r#"
first = login()
second = connect()
second.user("alice@example.test")
try:
    second.pass_("pw")
    out["second"] = "+OK?"
except poplib.error_proto as e:
    out["second"] = e.args[0].decode()
first.quit()
third = login()
out["third"] = third.stat()[0]
third.quit()
"#,
    );
    assert_eq!(
        out["second"],
        "-ERR [IN-USE] the maildrop is in use by another POP3 session"
    );
    assert_eq!(out["third"], 1);
}

#[test]
fn uidl_survives_a_restart_and_an_imap_style_flag_change() {
    let (inst, mut daemon) = setup(true);
    let ids = [
        deliver(&inst, "alice@example.test", b"Subject: 1\r\n\r\n1\r\n"),
        deliver(&inst, "alice@example.test", b"Subject: 2\r\n\r\n2\r\n"),
    ];
    let script = r#"
p = login()
out["uidl"] = [l.decode() for l in p.uidl()[1]]
out["one"] = p.uidl(2).decode()
p.quit()
"#;
    let before = python(&inst, &daemon, script);
    assert_eq!(
        strings(&before["uidl"]),
        [format!("1 {}", ids[0]), format!("2 {}", ids[1])]
    );
    assert_eq!(before["one"], format!("+OK 2 {}", ids[1]));

    daemon.restart();
    // What an IMAP client does: flag one message, which moves it to cur/.
    let inbox_folder = mailbox(&inst, "alice@example.test").inbox();
    for entry in inbox(&inst, "alice@example.test") {
        let flags = if entry.id == ids[0] {
            Flags::new().with(Flag::Flagged).with(Flag::Replied)
        } else {
            Flags::new().with(Flag::Draft)
        };
        inbox_folder.set_flags_at(&entry, flags).unwrap();
    }
    assert!(inbox(&inst, "alice@example.test").iter().all(|e| !e.is_new));
    let after = python(&inst, &daemon, script);
    assert_eq!(after, before);
}

#[test]
fn without_tls_login_is_refused_and_over_tls_it_works() {
    let (inst, daemon) = setup(false);
    deliver(&inst, "alice@example.test", DOTS);
    let out = python(
        &inst,
        &daemon,
        r#"
p = connect()
out["capa_plain"] = sorted(p.capa().keys())
try:
    p.user("alice@example.test")
    out["user"] = "+OK?"
except poplib.error_proto as e:
    out["user"] = e.args[0].decode()
try:
    p._shortcmd("AUTH PLAIN " + b64(b"\0alice@example.test\0pw"))
    out["auth"] = "+OK?"
except poplib.error_proto as e:
    out["auth"] = e.args[0].decode()
out["stls"] = p.stls(context()).decode()
out["capa_tls"] = sorted(p.capa().keys())
p.user("alice@example.test")
p.pass_("pw")
out["stls_stat"] = p.stat()[0]
p.quit()

# The implicit-TLS port, and AUTH PLAIN with an initial response.
s = poplib.POP3_SSL(HOST, TLS_PORT, context=context(), timeout=10)
out["auth_tls"] = s._shortcmd("AUTH PLAIN " + b64(b"\0alice@example.test\0pw")).decode()
m, _ = retr(s, 1)
out["m"] = hexed(m)
s.quit()

# Plaintext pipelined after STLS is dropped, not executed inside TLS.
raw = socket.create_connection((HOST, PORT), timeout=10)
def line(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data
line(raw)
raw.sendall(b"STLS\r\nCAPA\r\n")
out["raw_stls"] = line(raw).decode()
tls = context().wrap_socket(raw)
tls.sendall(b"NOOP\r\n")
out["first_after_tls"] = line(tls).decode()
tls.close()
"#,
    );
    let capa_plain = strings(&out["capa_plain"]);
    assert!(capa_plain.contains(&"STLS".to_owned()), "{capa_plain:?}");
    assert!(!capa_plain.contains(&"USER".to_owned()), "{capa_plain:?}");
    assert!(!capa_plain.contains(&"SASL".to_owned()), "{capa_plain:?}");
    assert_eq!(
        out["user"],
        "-ERR [AUTH] login without TLS is not allowed here: use STLS first"
    );
    assert!(
        out["auth"].as_str().unwrap().starts_with("-ERR [AUTH]"),
        "{}",
        out["auth"]
    );
    assert!(out["stls"].as_str().unwrap().starts_with("+OK"));
    let capa_tls = strings(&out["capa_tls"]);
    for cap in [
        "USER",
        "SASL",
        "UIDL",
        "TOP",
        "RESP-CODES",
        "AUTH-RESP-CODE",
    ] {
        assert!(capa_tls.contains(&cap.to_owned()), "{cap}: {capa_tls:?}");
    }
    assert!(!capa_tls.contains(&"STLS".to_owned()));
    assert_eq!(out["stls_stat"], 1);
    assert!(out["auth_tls"].as_str().unwrap().starts_with("+OK"));
    assert_eq!(bytes(&out["m"]), DOTS);
    assert_eq!(out["raw_stls"], "+OK begin TLS negotiation\r\n");
    assert_eq!(
        out["first_after_tls"], "-ERR log in first\r\n",
        "the CAPA sent before the handshake must not be answered"
    );
    let log = daemon.log();
    assert!(
        log.contains("login refused") && log.contains("use STLS first"),
        "{log}"
    );
    assert!(
        log.contains("logged in") && log.contains("mechanism=\"AUTH PLAIN\""),
        "{log}"
    );
}

#[test]
fn a_changed_password_is_refused_at_once_despite_the_credentials_cache() {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("pop3_server", "allow_plaintext_auth", "true");
    inst.add_users(&["alice@example.test"]);
    // The directory's debug lines say which logins the cache answered.
    let daemon = inst.start_with_env("pop3-server", &[("RUST_LOG", "info,qs_directory=debug")]);
    let out = python(
        &inst,
        &daemon,
        r#"
for n in range(2):
    p = login()
    out["stat%d" % n] = p.stat()[0]
    p.quit()
"#,
    );
    assert_eq!(
        (out["stat0"].clone(), out["stat1"].clone()),
        (0.into(), 0.into())
    );
    assert!(
        daemon
            .log()
            .contains("login accepted from the credentials cache"),
        "the second login must come from the cache:\n{}",
        daemon.log()
    );

    let changed = inst.qsctl_stdin(
        &["user", "passwd", "alice@example.test", "--password-stdin"],
        "a new password\n",
    );
    assert!(changed.status.success(), "{}", text(&changed));
    let out = python(
        &inst,
        &daemon,
        r#"
try:
    login(password="pw")
    out["old"] = "+OK?"
except poplib.error_proto as e:
    out["old"] = e.args[0].decode()
p = login(password="a new password")
out["new"] = p.stat()[0]
p.quit()
"#,
    );
    assert!(
        out["old"].as_str().unwrap().starts_with("-ERR [AUTH]"),
        "the old password must be refused at once: {}",
        out["old"]
    );
    assert_eq!(out["new"], 0);
}

#[test]
fn per_user_options_from_qsctl_and_seen_marks() {
    let (inst, daemon) = setup(true);
    // The options, set and shown with qsctl.
    let set = inst.ok(&["user", "pop3", "bob@example.test", "--ignore-dele", "on"]);
    assert_eq!(
        set.trim(),
        "POP3 options of bob@example.test: ignore-dele on, only-unread off"
    );
    inst.ok(&["user", "pop3", "carol@example.test", "--only-unread", "on"]);
    let shown = inst.ok(&["user", "pop3", "carol@example.test"]);
    assert_eq!(
        shown.trim(),
        "carol@example.test\tignore-dele off, only-unread on"
    );
    let list = inst.ok(&["user", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("bob@example.test") && l.ends_with("\tpop3: ignore-dele")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("carol@example.test") && l.ends_with("\tpop3: only-unread")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("alice@example.test") && !l.contains("pop3")),
        "{list}"
    );
    let err = inst.fails(&["user", "pop3", "nobody@example.test", "--only-unread", "on"]);
    assert!(err.contains("unknown user nobody@example.test"), "{err}");
    let err = inst.fails(&["user", "pop3", "bob@example.test", "--ignore-dele", "maybe"]);
    assert!(err.contains("maybe"), "{err}");

    let alice = [
        deliver(&inst, "alice@example.test", b"Subject: a1\r\n\r\n1\r\n"),
        deliver(&inst, "alice@example.test", b"Subject: a2\r\n\r\n2\r\n"),
    ];
    for n in 0..2 {
        deliver(
            &inst,
            "bob@example.test",
            format!("Subject: b{n}\r\n\r\nx\r\n").as_bytes(),
        );
    }
    for n in 0..3 {
        deliver(
            &inst,
            "carol@example.test",
            format!("Subject: c{n}\r\n\r\nx\r\n").as_bytes(),
        );
    }
    let out = python(
        &inst,
        &daemon,
        r#"
# alice: RETR marks seen at QUIT, TOP does not.
p = login()
retr(p, 1)
p.top(2, 0)
p.quit()

# bob: DELE accepted, nothing removed.
p = login("bob@example.test")
out["bob_dele"] = [p.dele(1).decode(), p.dele(2).decode()]
out["bob_quit"] = p.quit().decode()
p = login("bob@example.test")
out["bob_after"] = p.stat()[0]
p.quit()

# carol: only unread mail is offered; a retrieved message is gone from the
# listing after QUIT, not after a dropped connection, and not after TOP.
p = login("carol@example.test")
out["carol_first"] = p.stat()[0]
retr(p, 1)
drop(p)
p = login("carol@example.test")
out["carol_after_drop"] = p.stat()[0]
p.top(1, 0)
p.quit()
p = login("carol@example.test")
out["carol_after_top"] = p.stat()[0]
retr(p, 1)
p.quit()
p = login("carol@example.test")
out["carol_after_retr"] = p.stat()[0]
p.quit()
"#,
    );
    // alice
    let seen: Vec<(MessageId, bool)> = inbox(&inst, "alice@example.test")
        .into_iter()
        .map(|e| (e.id, e.flags.contains(Flag::Seen)))
        .collect();
    assert_eq!(
        seen,
        [(alice[0].clone(), true), (alice[1].clone(), false)],
        "RETR marks \\Seen, TOP does not"
    );
    // bob
    for reply in strings(&out["bob_dele"]) {
        assert!(reply.starts_with("+OK"), "{reply}");
    }
    assert_eq!(out["bob_quit"], "+OK signing off");
    assert_eq!(out["bob_after"], 2);
    assert_eq!(inbox(&inst, "bob@example.test").len(), 2);
    // carol
    assert_eq!(out["carol_first"], 3);
    assert_eq!(out["carol_after_drop"], 3);
    assert_eq!(out["carol_after_top"], 3);
    assert_eq!(out["carol_after_retr"], 2);
    let carol = inbox(&inst, "carol@example.test");
    assert_eq!(carol.len(), 3, "only_unread hides, never removes");
    assert_eq!(
        carol
            .iter()
            .filter(|e| e.flags.contains(Flag::Seen))
            .count(),
        1
    );
}

#[test]
fn the_connection_limit_from_the_config_is_applied() {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("pop3_server", "max_connections_per_ip", "1");
    let daemon = inst.start("pop3-server");
    let (plain, _) = ports(&inst, &daemon);
    let first = std::net::TcpStream::connect(("127.0.0.1", plain)).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 64];
    let n = std::io::Read::read(&mut &first, &mut greeting).unwrap();
    assert!(greeting[..n].starts_with(b"+OK"));
    let second = std::net::TcpStream::connect(("127.0.0.1", plain)).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut refused = String::new();
    std::io::Read::read_to_string(&mut &second, &mut refused).unwrap();
    assert!(refused.starts_with("-ERR [SYS/TEMP]"), "{refused}");
}
