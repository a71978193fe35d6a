//! list-server end to end: real core-queue, smtp-server, list-server and
//! smtp-relay processes. Posts and commands arrive over SMTP; local members
//! get their copies in their Maildir, outside members through smtp-relay at
//! a recording SMTP sink written here; the web page is driven over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::{Daemon, Installation, text};
use lettre::address::Envelope;
use lettre::{SmtpTransport, Transport};
use qs_queue::message;

/// Longest wait for anything (a passing run does not wait for it).
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// A recording SMTP sink

/// One transaction the sink accepted.
#[derive(Debug, Clone)]
struct Tx {
    mail: String,
    rcpts: Vec<String>,
    data: Vec<u8>,
}

struct Sink {
    addr: SocketAddr,
    txs: Arc<Mutex<Vec<Tx>>>,
}

impl Sink {
    /// Accepts everything except RCPT to addresses starting with `dead`.
    fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let txs = Arc::new(Mutex::new(Vec::new()));
        let shared = txs.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let txs = shared.clone();
                std::thread::spawn(move || serve(stream, &txs));
            }
        });
        Sink { addr, txs }
    }

    fn txs(&self) -> Vec<Tx> {
        self.txs.lock().unwrap().clone()
    }

    /// Waits until the transactions satisfy `done`.
    fn wait(&self, what: &str, done: impl Fn(&[Tx]) -> bool) -> Vec<Tx> {
        let start = Instant::now();
        loop {
            let txs = self.txs();
            if done(&txs) {
                return txs;
            }
            assert!(
                start.elapsed() < WAIT,
                "the sink never saw {what}; it has {txs:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve(stream: TcpStream, txs: &Mutex<Vec<Tx>>) {
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let _ = out.write_all(b"220 sink ESMTP\r\n");
    let mut tx = Tx {
        mail: String::new(),
        rcpts: Vec::new(),
        data: Vec::new(),
    };
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink\r\n250-8BITMIME\r\n250 PIPELINING\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            tx.mail = angle(&line[10..]);
            tx.rcpts.clear();
            b"250 ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = angle(&line[8..]);
            if rcpt.starts_with("dead") {
                b"550 5.1.1 no such user\r\n"
            } else {
                tx.rcpts.push(rcpt);
                b"250 ok\r\n"
            }
        } else if upper.starts_with("DATA") {
            out.write_all(b"354 go on\r\n").unwrap();
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if reader.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                    return;
                }
                if l == b".\r\n" {
                    break;
                }
                data.extend_from_slice(&l);
            }
            tx.data = data;
            txs.lock().unwrap().push(tx.clone());
            b"250 queued\r\n"
        } else if upper.starts_with("QUIT") {
            let _ = out.write_all(b"221 bye\r\n");
            return;
        } else {
            b"250 ok\r\n"
        };
        if out.write_all(reply).is_err() {
            return;
        }
    }
}

fn angle(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("")
        .to_lowercase()
}

// ---------------------------------------------------------------------------
// The installation

struct Site {
    inst: Installation,
    sink: Sink,
    _daemons: Vec<Daemon>,
    smtp: SocketAddr,
    web: SocketAddr,
}

/// Every daemon, outside mail to a sink; the local users exist.
fn site(configure: impl Fn(&Installation)) -> Site {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    let sink = Sink::start();
    inst.set("smtp_relay", "smarthost", &format!("\"{}\"", sink.addr));
    inst.set("smtp_relay", "tls", "\"none\"");
    inst.set("queue", "first_retry_secs", "1");
    inst.set("queue", "max_retry_interval_secs", "1");
    inst.set("queue", "bounce_copy_to_postmaster", "false");
    configure(&inst);
    inst.add_users(&[
        "owner@example.test",
        "alice@example.test",
        "bob@example.test",
        "carol@example.test",
    ]);
    let daemons = vec![
        inst.start("core-queue"),
        inst.start("smtp-server"),
        inst.start("list-server"),
        inst.start("smtp-relay"),
    ];
    let smtp = inst.listening("smtp-server", "smtp_server.listen")[0];
    let web = inst.listening("list-server", "list_server.web_listen")[0];
    Site {
        inst,
        sink,
        _daemons: daemons,
        smtp,
        web,
    }
}

impl Site {
    /// Creates a list (daemons running: no restart needed) owned by owner@.
    fn list(&self, address: &str, settings: &[(&str, &str)], members: &[&str]) {
        self.inst.ok(&[
            "list",
            "create",
            address,
            "--title",
            "The Team",
            "--owner",
            "owner@example.test",
        ]);
        for (k, v) in settings {
            self.inst.ok(&["list", "set", address, k, v]);
        }
        for chunk in members.chunks(200) {
            let mut args = vec!["list", "add-member", address];
            args.extend_from_slice(chunk);
            self.inst.ok(&args);
        }
    }

    /// Sends a message over SMTP (port-25 role).
    fn send(&self, from: &str, to: &str, subject: &str, body: &str) {
        self.send_raw(
            from,
            to,
            format!(
                "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{}@test>\r\n\r\n{body}\r\n",
                rand::random::<u64>()
            )
            .as_bytes(),
        );
    }

    fn send_raw(&self, from: &str, to: &str, bytes: &[u8]) {
        let envelope =
            Envelope::new(Some(from.parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
        SmtpTransport::builder_dangerous(self.smtp.ip().to_string())
            .port(self.smtp.port())
            .build()
            .send_raw(&envelope, bytes)
            .unwrap_or_else(|e| panic!("SMTP to {to}: {e}"));
    }

    /// Waits for `count` messages in a local INBOX whose Subject contains `subject`.
    fn wait_subject(&self, user: &str, subject: &str, count: usize) -> Vec<Vec<u8>> {
        let start = Instant::now();
        loop {
            let found: Vec<Vec<u8>> = self
                .inst
                .inbox(user)
                .into_iter()
                .filter(|m| {
                    message::values(m, "Subject")
                        .first()
                        .is_some_and(|s| s.contains(subject))
                })
                .collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                start.elapsed() < WAIT,
                "{user} has no {subject:?} (inbox: {:?}); list-server log:\n{}",
                self.inst
                    .inbox(user)
                    .iter()
                    .map(|m| message::values(m, "Subject"))
                    .collect::<Vec<_>>(),
                std::fs::read_to_string(self.inst.dir.path().join("list-server.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn members(&self, list: &str) -> String {
        self.inst.ok(&["list", "members", list])
    }

    /// One HTTP/1.1 request to the web page: (status, headers, body).
    fn http(&self, method: &str, path: &str, form: &str) -> (u16, String, String) {
        self.http_with(method, path, "", form)
    }

    /// The same with more header lines (each ending in CRLF).
    fn http_with(
        &self,
        method: &str,
        path: &str,
        more_headers: &str,
        form: &str,
    ) -> (u16, String, String) {
        let mut stream = TcpStream::connect(self.web).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: lists.example.test\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{more_headers}\r\n{form}",
            form.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        split_response(&response)
    }

    /// The list page's form token and the cookie it is tied to, as a
    /// browser keeps them: (token, `Cookie:` value).
    fn form(&self, list: &str) -> (String, String) {
        let (status, head, body) = self.http("GET", &format!("/list/{list}"), "");
        assert_eq!(status, 200, "{body}");
        let token = body
            .split_once("name=\"token\" value=\"")
            .and_then(|(_, rest)| rest.split('"').next())
            .unwrap_or_else(|| panic!("no token in the form: {body}"))
            .to_string();
        let cookie = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("set-cookie")
                    .then(|| value.trim().split(';').next().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| panic!("the list page set no cookie: {head}"));
        (token, cookie)
    }

    /// Sends the list's subscription form as a browser on its page does.
    fn subscribe(&self, list: &str, email: &str, action: &str) -> (u16, String, String) {
        let (token, cookie) = self.form(list);
        self.http_with(
            "POST",
            &format!("/list/{list}"),
            &format!("Cookie: {cookie}\r\nOrigin: http://{}\r\n", self.web),
            &format!("token={token}&email={email}&action={action}"),
        )
    }
}

/// An HTTP response as (status, head, body).
fn split_response(response: &str) -> (u16, String, String) {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// The token in a `confirm TOKEN` / `approve TOKEN` subject.
fn token_in(subject_word: &str, msg: &[u8]) -> String {
    let subject = message::values(msg, "Subject")[0].clone();
    let rest = subject
        .split_once(subject_word)
        .unwrap_or_else(|| panic!("no {subject_word} in {subject:?}"))
        .1;
    rest.split_whitespace().next().unwrap().to_string()
}

fn has_member(members: &str, address: &str) -> bool {
    members.lines().any(|l| l.starts_with(address))
}

// ---------------------------------------------------------------------------
// The tests

#[test]
fn a_post_to_120_members_goes_out_in_three_copies_with_the_list_fields() {
    let s = site(|_| {});
    let members: Vec<String> = (0..120).map(|i| format!("m{i:03}@far.example")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    s.list("team@example.test", &[("posting", "anyone")], &refs);
    s.send(
        "alice@example.test",
        "team@example.test",
        "Hello",
        "Hi all.",
    );
    let txs = s.sink.wait("120 recipients", |t| {
        t.iter().map(|t| t.rcpts.len()).sum::<usize>() >= 120
    });
    assert_eq!(txs.len(), 3, "{txs:#?}");
    let mut sizes: Vec<usize> = txs.iter().map(|t| t.rcpts.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [20, 50, 50]);
    let mut everyone: Vec<String> = txs.iter().flat_map(|t| t.rcpts.clone()).collect();
    everyone.sort();
    assert_eq!(everyone, members);
    for tx in &txs {
        assert!(tx.mail.starts_with("team-bounces+b"), "{}", tx.mail);
        let d = &tx.data;
        assert_eq!(
            message::values(d, "List-Id"),
            ["\"The Team\" <team.example.test>"]
        );
        assert_eq!(message::values(d, "Subject"), ["[team] Hello"]);
        assert_eq!(message::values(d, "Precedence"), ["list"]);
        assert_eq!(
            message::values(d, "List-Post"),
            ["<mailto:team@example.test>"]
        );
        let unsub = &message::values(d, "List-Unsubscribe")[0];
        assert!(unsub.contains("mailto:team-request@example.test?subject=unsubscribe"));
        assert!(unsub.contains("/list/team@example.test>"), "{unsub}");
        assert!(!message::values(d, "List-Help").is_empty());
        assert!(!message::values(d, "List-Subscribe").is_empty());
        assert_eq!(message::values(d, "X-Loop"), ["team@example.test"]);
    }
}

#[test]
fn a_non_member_post_is_held_approved_by_reply_or_refused() {
    let s = site(|_| {});
    s.list(
        "team@example.test",
        &[],
        &["alice@example.test", "m1@far.example"],
    );
    s.send("stranger@far.example", "team@example.test", "Offer", "Buy.");
    // The moderator (the owner) gets the post to approve; the sender a notice.
    let notice = s.wait_subject("owner@example.test", "approve ", 1);
    let token = token_in("approve ", &notice[0]);
    let to_sender = s.sink.wait("the held notice", |t| {
        t.iter().any(|t| t.rcpts == ["stranger@far.example"])
    });
    let held = to_sender
        .iter()
        .find(|t| t.rcpts == ["stranger@far.example"])
        .unwrap();
    assert_eq!(held.mail, "");
    assert_eq!(
        message::values(&held.data, "Auto-Submitted"),
        ["auto-replied"]
    );
    assert!(
        s.inst
            .ok(&["list", "held", "team@example.test"])
            .contains("Offer")
    );
    assert!(s.inst.inbox("alice@example.test").is_empty());

    // Approving by reply sends it to the members.
    s.send(
        "owner@example.test",
        "team-request@example.test",
        &format!("Re: approve {token}"),
        "",
    );
    let copy = s.wait_subject("alice@example.test", "[team] Offer", 1);
    assert_eq!(copy.len(), 1);
    s.sink.wait("the approved post", |t| {
        t.iter().any(|t| t.rcpts == ["m1@far.example"])
    });
    // Held posts are gone once sent.
    let start = Instant::now();
    while !s.inst.ok(&["list", "held", "team@example.test"]).is_empty() {
        assert!(start.elapsed() < WAIT, "the approved post is still held");
        std::thread::sleep(Duration::from_millis(50));
    }

    // With non_members = reject, the post is refused. It came unauthenticated
    // on port 25, so its sender may be forged: the failure notice goes to the
    // postmaster alone, never back to that address (no backscatter).
    s.inst
        .ok(&["list", "set", "team@example.test", "non_members", "reject"]);
    s.send("pest@far.example", "team@example.test", "Again", "Buy.");
    let start = Instant::now();
    while !s
        .inst
        .inbox("postmaster@example.test")
        .iter()
        .any(|m| String::from_utf8_lossy(m).contains("only members may post"))
    {
        assert!(
            start.elapsed() < WAIT,
            "no refusal notice for the postmaster"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !s.sink.txs().iter().any(|t| t.rcpts == ["pest@far.example"]),
        "a refusal went back to the possibly forged sender"
    );
    assert!(s.inst.ok(&["list", "held", "team@example.test"]).is_empty());
}

#[test]
fn subscribing_by_mail_takes_a_confirming_reply_used_once() {
    let s = site(|_| {});
    s.list("team@example.test", &[], &[]);
    s.send(
        "bob@example.test",
        "team-request@example.test",
        "subscribe",
        "",
    );
    let request = s.wait_subject("bob@example.test", "confirm ", 1);
    assert_eq!(
        message::values(&request[0], "Auto-Submitted"),
        ["auto-replied"]
    );
    assert!(!has_member(
        &s.members("team@example.test"),
        "bob@example.test"
    ));
    let token = token_in("confirm ", &request[0]);
    s.send(
        "bob@example.test",
        "team-request@example.test",
        &format!("Re: confirm {token}"),
        "> Someone, perhaps you, asked",
    );
    s.wait_subject("bob@example.test", "Welcome to The Team", 1);
    assert!(has_member(
        &s.members("team@example.test"),
        "bob@example.test"
    ));

    // The same token again is refused, with an answer saying so.
    s.send(
        "bob@example.test",
        "team-request@example.test",
        &format!("Re: confirm {token}"),
        "",
    );
    let answer = s.wait_subject("bob@example.test", "Re: confirm", 1);
    assert!(
        String::from_utf8_lossy(&answer[0]).contains("already been used"),
        "{}",
        String::from_utf8_lossy(&answer[0])
    );

    // Help, and "who" only for owners; nothing is answered to list mail.
    s.send("bob@example.test", "team-request@example.test", "who", "");
    let who = s.wait_subject("bob@example.test", "Re: who", 1);
    assert!(String::from_utf8_lossy(&who[0]).contains("only the list's owners"));
    s.send("owner@example.test", "team-request@example.test", "who", "");
    let who = s.wait_subject("owner@example.test", "Re: who", 1);
    assert!(String::from_utf8_lossy(&who[0]).contains("bob@example.test"));
}

#[test]
fn the_one_click_unsubscribe_post_removes_the_member_once() {
    let s = site(|_| {});
    // One member per copy: each copy's link names its member.
    s.list(
        "team@example.test",
        &[("posting", "anyone"), ("max_recipients", "1")],
        &["carol@example.test", "m1@far.example"],
    );
    s.send("alice@example.test", "team@example.test", "News", "Hello.");
    let copy = s.wait_subject("carol@example.test", "[team] News", 1);
    assert_eq!(
        message::values(&copy[0], "List-Unsubscribe-Post"),
        ["List-Unsubscribe=One-Click"]
    );
    let unsub = message::values(&copy[0], "List-Unsubscribe")[0].clone();
    let url = unsub
        .split(['<', '>'])
        .find(|p| p.starts_with("http"))
        .unwrap()
        .to_string();
    let path = &url[url.find("/u/").unwrap()..];
    let personal = s.sink.wait("m1's copy", |t| !t.is_empty());
    assert!(personal[0].mail.starts_with("team-bounces+m"));

    // A GET only shows a button.
    let (status, _, body) = s.http("GET", path, "");
    assert_eq!(status, 200);
    assert!(body.contains("<form method=\"post\""));
    assert!(has_member(
        &s.members("team@example.test"),
        "carol@example.test"
    ));

    let (status, _, _) = s.http("POST", path, "List-Unsubscribe=One-Click");
    assert_eq!(status, 200);
    assert!(!has_member(
        &s.members("team@example.test"),
        "carol@example.test"
    ));
    let (status, _, _) = s.http("POST", path, "List-Unsubscribe=One-Click");
    assert_eq!(status, 410, "a used token is refused");
    // A changed token is refused.
    let forged = format!("{}x", path);
    let (status, _, _) = s.http("POST", &forged, "List-Unsubscribe=One-Click");
    assert_eq!(status, 400);
}

#[test]
fn lists_subscribed_to_themselves_or_each_other_do_not_repost() {
    let s = site(|_| {});
    s.list(
        "self@example.test",
        &[("posting", "anyone")],
        &["self@example.test", "alice@example.test"],
    );
    s.list(
        "ping@example.test",
        &[("posting", "anyone")],
        &["pong@example.test", "bob@example.test"],
    );
    s.list(
        "pong@example.test",
        &[("posting", "anyone")],
        &["ping@example.test", "carol@example.test"],
    );
    s.send("owner@example.test", "self@example.test", "Round", "x");
    s.send("owner@example.test", "ping@example.test", "Tennis", "x");
    // The owners hear of each loop.
    s.wait_subject("owner@example.test", "came back to self@example.test", 1);
    s.wait_subject("owner@example.test", "came back to ping@example.test", 1);
    // Let anything still circulating arrive, then count.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.wait_subject("alice@example.test", "Round", 1).len(), 1);
    assert_eq!(s.wait_subject("bob@example.test", "Tennis", 1).len(), 1);
    assert_eq!(s.wait_subject("carol@example.test", "Tennis", 1).len(), 1);
    let carol = s.inst.inbox("carol@example.test");
    let tennis = carol
        .iter()
        .find(|m| message::values(m, "Subject")[0].contains("Tennis"))
        .unwrap();
    assert_eq!(message::values(tennis, "Subject"), ["[pong] [ping] Tennis"]);
}

#[test]
fn bounces_raise_the_score_until_the_member_is_suspended() {
    let s = site(|inst| inst.set("list_server", "bounce_threshold", "2"));
    s.list(
        "team@example.test",
        &[("posting", "anyone")],
        &["dead@far.example", "live@far.example"],
    );
    s.send("alice@example.test", "team@example.test", "One", "x");
    let start = Instant::now();
    while !s.members("team@example.test").contains("bounces: 1") {
        assert!(start.elapsed() < WAIT, "{}", s.members("team@example.test"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!s.members("team@example.test").contains("suspended"));
    s.send("alice@example.test", "team@example.test", "Two", "x");
    s.wait_subject("owner@example.test", "dead@far.example is suspended", 1);
    let members = s.members("team@example.test");
    let dead = members.lines().find(|l| l.starts_with("dead")).unwrap();
    assert!(dead.contains("suspended"), "{members}");
    assert!(
        !members
            .lines()
            .find(|l| l.starts_with("live"))
            .unwrap()
            .contains("suspended")
    );

    // A suspended member gets nothing more.
    let before = s.sink.txs().len();
    s.send("alice@example.test", "team@example.test", "Three", "x");
    let txs = s.sink.wait("the third post", |t| {
        t.iter().skip(before).any(|t| {
            message::values(&t.data, "Subject")
                .first()
                .is_some_and(|s| s.contains("Three"))
        })
    });
    let third = txs
        .iter()
        .skip(before)
        .find(|t| message::values(&t.data, "Subject")[0].contains("Three"))
        .unwrap();
    assert_eq!(third.rcpts, ["live@far.example"]);
}

#[test]
fn the_web_page_lists_subscribes_and_confirms_once() {
    let s = site(|_| {});
    s.list("team@example.test", &[("description", "Our <team>")], &[]);
    s.list("hidden@example.test", &[("listed", "off")], &[]);
    let (status, head, body) = s.http("GET", "/", "");
    assert_eq!(status, 200);
    assert!(head.to_lowercase().contains("content-security-policy"));
    assert!(body.contains("/list/team@example.test"), "{body}");
    assert!(!body.contains("hidden@"));

    let (status, _, body) = s.http("GET", "/list/team@example.test", "");
    assert_eq!(status, 200);
    assert!(body.contains("Our &lt;team&gt;"), "{body}");
    assert!(body.contains("name=\"email\""));
    let (status, _, _) = s.http("GET", "/list/nothing@example.test", "");
    assert_eq!(status, 404);

    let (status, _, body) = s.subscribe("team@example.test", "bob%40example.test", "subscribe");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Check your mail"));
    let mail = s.wait_subject("bob@example.test", "confirm ", 1);
    let confirmation = String::from_utf8_lossy(&mail[0]).into_owned();
    let link = confirmation
        .split_whitespace()
        .find(|w| w.contains("/confirm/"))
        .unwrap();
    let path = &link[link.find("/confirm/").unwrap()..];
    // GET shows; only POST changes.
    let (status, _, body) = s.http("GET", path, "");
    assert_eq!(status, 200);
    assert!(body.contains("Confirm"));
    assert!(!has_member(
        &s.members("team@example.test"),
        "bob@example.test"
    ));
    let (status, _, body) = s.http("POST", path, "");
    assert_eq!(status, 200, "{body}");
    assert!(has_member(
        &s.members("team@example.test"),
        "bob@example.test"
    ));
    let (status, _, _) = s.http("POST", path, "");
    assert_eq!(status, 410);
    // Opening a used link says so rather than offering a button.
    let (status, _, body) = s.http("GET", path, "");
    assert_eq!(status, 410);
    assert!(!body.contains("<form"), "{body}");
    let (status, _, _) = s.http("POST", "/confirm/not.atoken", "");
    assert_eq!(status, 400);

    // Bad input changes nothing and says why.
    let (status, _, body) = s.subscribe("team@example.test", "not-an-address", "subscribe");
    assert_eq!(status, 400, "{body}");
    let out = s
        .inst
        .qsctl(&["list", "set", "team@example.test", "posting", "everyone"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("setting posting"), "{}", text(&out));
    let out = s
        .inst
        .qsctl(&["list", "create", "team-request@example.test"]);
    assert!(!out.status.success());
}

/// A POST to the subscription form must come from the list's page: with its
/// token, the cookie the token is tied to, and no other site's Origin or
/// Sec-Fetch-Site. One that does not gets 403 and queues nothing.
#[test]
fn the_web_page_refuses_posts_without_its_token_or_from_another_site() {
    let s = site(|_| {});
    s.list("team@example.test", &[], &[]);
    s.list("other@example.test", &[], &[]);
    let path = "/list/team@example.test";
    let fields = "email=bob%40example.test&action=subscribe";
    let (token, cookie) = s.form("team@example.test");
    let with_cookie = format!("Cookie: {cookie}\r\n");
    let refusals = [
        ("no token", String::new(), fields.to_string()),
        (
            "no cookie",
            String::new(),
            format!("token={token}&{fields}"),
        ),
        (
            "another browser's cookie",
            "Cookie: qs_form=0123456789abcdef0123456789abcdef\r\n".to_string(),
            format!("token={token}&{fields}"),
        ),
        (
            "a forged token",
            with_cookie.clone(),
            format!("token={}x&{fields}", token),
        ),
        (
            "a foreign Origin",
            format!("{with_cookie}Origin: https://attacker.example\r\n"),
            format!("token={token}&{fields}"),
        ),
        (
            "a cross-site fetch",
            format!("{with_cookie}Sec-Fetch-Site: cross-site\r\n"),
            format!("token={token}&{fields}"),
        ),
    ];
    for (what, headers, form) in &refusals {
        let (status, _, body) = s.http_with("POST", path, headers, form);
        assert_eq!(status, 403, "{what}: {body}");
        assert!(body.contains("Nothing was changed."), "{what}: {body}");
    }
    // The token of one list's page does not work for another list.
    let (status, _, body) = s.http_with(
        "POST",
        "/list/other@example.test",
        &with_cookie,
        &format!("token={token}&{fields}"),
    );
    assert_eq!(status, 403, "{body}");

    // None of those asked for anything: the first real request is answered
    // as the first, and its mail is the only one.
    let (status, _, body) = s.subscribe("team@example.test", "bob%40example.test", "subscribe");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Check your mail"), "{body}");
    assert_eq!(s.wait_subject("bob@example.test", "confirm ", 1).len(), 1);
}

/// One confirmation per address and list within `confirm_window_secs`, and
/// `web_requests_per_ip_per_hour` requests per client address.
#[test]
fn the_web_page_mails_an_address_once_and_limits_requests_per_client() {
    let s = site(|inst| inst.set("list_server", "web_requests_per_ip_per_hour", "3"));
    s.list("team@example.test", &[], &[]);
    let (status, _, body) = s.subscribe("team@example.test", "bob%40example.test", "subscribe");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Check your mail"), "{body}");
    let (status, _, body) = s.subscribe("team@example.test", "bob%40example.test", "subscribe");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Already asked"), "{body}");
    assert!(body.contains("no other is sent now"), "{body}");
    // The answer to a mail command says the same, without another request.
    s.send(
        "bob@example.test",
        "team-request@example.test",
        "subscribe",
        "",
    );
    let answer = s.wait_subject("bob@example.test", "Re: subscribe", 1);
    assert!(
        String::from_utf8_lossy(&answer[0]).contains("was sent a short while ago"),
        "{}",
        String::from_utf8_lossy(&answer[0])
    );
    assert_eq!(s.wait_subject("bob@example.test", "confirm ", 1).len(), 1);

    // The third request from this address is the last this hour.
    let (status, _, body) = s.subscribe("team@example.test", "carol%40example.test", "subscribe");
    assert_eq!(status, 200, "{body}");
    s.wait_subject("carol@example.test", "confirm ", 1);
    let (status, head, body) =
        s.subscribe("team@example.test", "alice%40example.test", "subscribe");
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("Too many subscription requests"), "{body}");
    assert!(head.to_lowercase().contains("retry-after:"), "{head}");
    // Bob still has his one confirmation, and alice none.
    assert!(s.inst.inbox("alice@example.test").is_empty());
    let confirmations = s
        .inst
        .inbox("bob@example.test")
        .iter()
        .filter(|m| message::values(m, "Subject")[0].starts_with("confirm "))
        .count();
    assert_eq!(confirmations, 1);
}

/// A list address no list can have is a client's mistake (400), not the
/// server's (503); a body over `web_max_body_bytes` gets 413; each with a
/// sentence.
#[test]
fn the_web_page_refuses_long_names_and_large_bodies_with_a_sentence() {
    let s = site(|_| {});
    s.list("team@example.test", &[], &[]);
    let long = "a".repeat(5000);
    for (method, path) in [
        ("GET", format!("/list/{long}")),
        ("POST", format!("/list/{long}")),
        ("GET", format!("/list/{long}@example.test")),
    ] {
        let (status, _, body) = s.http(method, &path, "email=bob%40example.test&action=subscribe");
        assert_eq!(status, 400, "{method} {body}");
        assert!(
            body.contains("A list address has at most 254 characters."),
            "{method} {body}"
        );
    }
    // The head announces a body over the limit: refused before it is sent.
    let mut stream = TcpStream::connect(s.web).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "POST /list/team@example.test HTTP/1.1\r\nHost: lists.example.test\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (status, _, body) = split_response(&response);
    assert_eq!(status, 413, "{response}");
    assert!(
        body.contains("larger than this page accepts (16384 bytes at most)"),
        "{body}"
    );
}

/// Connects to the web page from `from` (any 127.0.0.0/8 address).
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        socket.connect(to).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

/// `GET /healthz` on a kept-alive connection; true when answered `ok`.
fn healthz(stream: &mut TcpStream) -> bool {
    let sent = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: lists.example.test\r\n\r\n");
    if sent.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\nok") {
        match stream.read(&mut byte) {
            Ok(1) => response.push(byte[0]),
            _ => return false,
        }
    }
    response.starts_with(b"HTTP/1.1 200")
}

/// What a connection gets before the server closes it.
fn until_closed(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let closed = stream.read_to_end(&mut got);
    assert!(
        closed.is_ok(),
        "the connection is still open ({closed:?}); it got {:?}",
        String::from_utf8_lossy(&got)
    );
    String::from_utf8_lossy(&got).into_owned()
}

/// Idle connections beyond `web_max_connections` (all clients) or
/// `web_max_connections_per_ip` (one client) are answered 503 and closed;
/// those within stay open.
#[test]
fn the_web_page_holds_no_more_connections_than_its_limits() {
    let s = site(|inst| {
        inst.set("list_server", "web_max_connections", "3");
        inst.set("list_server", "web_max_connections_per_ip", "2");
        // Long enough that the held connections outlive the test.
        inst.set("list_server", "web_idle_timeout_secs", "300");
        inst.set("list_server", "web_head_timeout_secs", "300");
    });
    let mut first = connect_from([127, 0, 0, 1], s.web);
    let mut second = connect_from([127, 0, 0, 1], s.web);
    assert!(healthz(&mut first) && healthz(&mut second));
    let mut third = connect_from([127, 0, 0, 1], s.web);
    let refused = until_closed(&mut third);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("Too many connections"), "{refused}");

    // Another client has room, until all three places are taken.
    let mut other = connect_from([127, 0, 0, 2], s.web);
    assert!(healthz(&mut other));
    let mut fourth = connect_from([127, 0, 0, 3], s.web);
    let refused = until_closed(&mut fourth);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");

    // The idle ones were kept, and a place given back is taken again.
    assert!(healthz(&mut first) && healthz(&mut second) && healthz(&mut other));
    drop(first);
    let start = Instant::now();
    loop {
        let mut again = connect_from([127, 0, 0, 3], s.web);
        if healthz(&mut again) {
            break;
        }
        assert!(start.elapsed() < WAIT, "the place was never given back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `start`, then `more` every 200 ms, until the server closes the
/// connection; true when it did (within WAIT).
fn trickle_until_closed(web: SocketAddr, start: &str, more: &str) -> bool {
    let mut stream = TcpStream::connect(web).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let (done, closed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
        let _ = done.send(());
    });
    let began = Instant::now();
    let _ = stream.write_all(start.as_bytes());
    while began.elapsed() < WAIT {
        if closed.recv_timeout(Duration::from_millis(200)).is_ok() {
            return true;
        }
        let _ = stream.write_all(more.as_bytes());
    }
    false
}

/// A connection idle longer than `web_idle_timeout_secs`, before its first
/// request or after an answer, is closed; so is one whose request head takes
/// longer than `web_head_timeout_secs`, however steadily it trickles in.
#[test]
fn the_web_page_closes_idle_connections_and_cuts_trickled_heads() {
    let idle = site(|inst| {
        inst.set("list_server", "web_idle_timeout_secs", "1");
        inst.set("list_server", "web_head_timeout_secs", "300");
    });
    let mut silent = TcpStream::connect(idle.web).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(until_closed(&mut silent), "");
    let mut kept = TcpStream::connect(idle.web).unwrap();
    kept.set_read_timeout(Some(WAIT)).unwrap();
    assert!(healthz(&mut kept));
    assert_eq!(until_closed(&mut kept), "");
    drop(idle);

    let slow = site(|inst| {
        inst.set("list_server", "web_idle_timeout_secs", "300");
        inst.set("list_server", "web_head_timeout_secs", "1");
    });
    // A header field a byte every 200 ms: the connection is never idle,
    // but its head never ends (nor grows past any size or count limit).
    assert!(
        trickle_until_closed(
            slow.web,
            "GET /healthz HTTP/1.1\r\nHost: lists.example.test\r\nX-Slow: ",
            "a"
        ),
        "a head trickled in was never cut off"
    );
    // Half a request line, then a byte now and then.
    assert!(
        trickle_until_closed(slow.web, "GET /heal", "t"),
        "half a request line was never cut off"
    );
}

// ---------------------------------------------------------------------------
// The web page in a real browser

/// Headless Chromium driven through chromedriver (WebDriver), with a sync face
/// so the test reads like the others.
struct Browser {
    runtime: tokio::runtime::Runtime,
    client: fantoccini::Client,
    driver: std::process::Child,
    base: String,
    _profile: tempfile::TempDir,
}

/// Starts chromedriver on a port the OS chooses: the process, its port, and
/// the rest of its output. A chromedriver that ends before it names its port
/// (seen once on a loaded machine) is started again, twice at most; then the
/// test fails with what it wrote on standard error.
fn start_chromedriver(
    chromedriver: &std::path::Path,
) -> (
    std::process::Child,
    u16,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut stderr = String::new();
    for _ in 0..3 {
        let errors = tempfile::tempfile().unwrap();
        let mut driver = std::process::Command::new(chromedriver)
            .arg("--port=0")
            .stdout(std::process::Stdio::piped())
            .stderr(errors.try_clone().unwrap())
            .spawn()
            .expect("start chromedriver");
        // "ChromeDriver was started successfully on port 38523."
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        let port = lines.by_ref().map_while(Result::ok).find_map(|line| {
            line.split_once("started successfully on port ")
                .and_then(|(_, rest)| rest.trim_end_matches('.').parse::<u16>().ok())
        });
        if let Some(port) = port {
            return (driver, port, lines);
        }
        let _ = driver.kill();
        let _ = driver.wait();
        let mut errors = errors;
        use std::io::{Read, Seek};
        let _ = errors.rewind();
        stderr.clear();
        let _ = errors.read_to_string(&mut stderr);
    }
    panic!("chromedriver did not say which port it listens on; it wrote:\n{stderr}");
}

/// An executable on PATH.
fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts chromedriver on a port the OS chooses and opens a session on the
    /// site; `None` (after saying so) when Chromium is not installed here. In
    /// CI (`QS_CI=1`) it must be there.
    fn start(web: SocketAddr) -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver"))
        else {
            assert!(
                std::env::var("QS_CI").as_deref() != Ok("1"),
                "chromium or chromedriver is missing: .ci/setup installs them for this test"
            );
            eprintln!("SKIPPED: apt-get install chromium chromium-driver to run this test");
            return None;
        };
        let (driver, port, lines) = start_chromedriver(&chromedriver);
        // Keep reading so chromedriver never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));

        let profile = tempfile::tempdir().unwrap();
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = runtime
            .block_on(
                fantoccini::ClientBuilder::new(
                    hyper_util::client::legacy::connect::HttpConnector::new(),
                )
                .capabilities(capabilities.as_object().unwrap().clone())
                .connect(&format!("http://127.0.0.1:{port}")),
            )
            .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}"));
        Some(Browser {
            runtime,
            client,
            driver,
            base: format!("http://{web}"),
            _profile: profile,
        })
    }

    /// Opens a page of the site, as typing its address.
    fn open(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.runtime
            .block_on(self.client.goto(&url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The first element matching `css`, waiting for it while a page loads.
    fn element(&self, css: &str) -> fantoccini::elements::Element {
        let start = Instant::now();
        loop {
            match self
                .runtime
                .block_on(self.client.find(fantoccini::Locator::Css(css)))
            {
                Ok(element) => return element,
                Err(e) if start.elapsed() > WAIT => panic!("no {css} on {}: {e}", self.path()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The visible text of the first element matching `css`.
    fn text(&self, css: &str) -> String {
        let element = self.element(css);
        self.runtime.block_on(element.text()).unwrap()
    }

    /// Clicks, and returns at once: the page may or may not change.
    fn click(&self, css: &str) {
        let element = self.element(css);
        self.runtime.block_on(element.click()).unwrap();
    }

    /// Clicks a link or a form's button, and waits until the page it leads
    /// to has replaced this one (a form may post to its own address, so the
    /// address shown cannot tell).
    fn follow(&self, css: &str) {
        let old_page = self.element("html");
        self.click(css);
        let start = Instant::now();
        while self.runtime.block_on(old_page.tag_name()).is_ok() {
            assert!(
                start.elapsed() < WAIT,
                "clicking {css} on {} led nowhere",
                self.path()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A DOM property of the first element matching `css`.
    fn property(&self, css: &str, name: &str) -> String {
        let element = self.element(css);
        self.runtime
            .block_on(element.prop(name))
            .unwrap()
            .unwrap_or_default()
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.runtime.block_on(element.send_keys(text)).unwrap();
    }

    /// A CSS property as the browser computed it.
    fn style(&self, css: &str, property: &str) -> String {
        let element = self.element(css);
        self.runtime.block_on(element.css_value(property)).unwrap()
    }

    /// The path of the page shown.
    fn path(&self) -> String {
        let url = self.runtime.block_on(self.client.current_url()).unwrap();
        url.path().to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.runtime.block_on(self.client.clone().close());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The path of the first link in `msg` that goes through `/PREFIX/`.
fn web_path(msg: &[u8], prefix: &str) -> String {
    let text = String::from_utf8_lossy(msg);
    let link = text
        .split(|c: char| c.is_whitespace() || c == '<' || c == '>')
        .find(|w| w.starts_with("http") && w.contains(prefix))
        .unwrap_or_else(|| panic!("no {prefix} link in:\n{text}"));
    link[link.find(prefix).unwrap()..].to_string()
}

/// Every form of the site, filled in and sent by Chromium: what a person
/// does, with the browser's own form encoding, validation, CSP and redirects.
#[test]
fn the_web_page_works_in_headless_chromium() {
    let s = site(|_| {});
    let Some(browser) = Browser::start(s.web) else {
        return;
    };
    s.list(
        "team@example.test",
        &[("description", "Our <team>"), ("max_recipients", "1")],
        &["carol@example.test"],
    );

    // The index leads to the list's page; the styles pass the CSP.
    browser.open("/");
    assert_eq!(browser.text("h1"), "Mailing lists");
    browser.follow("a[href='/list/team@example.test']");
    assert_eq!(browser.path(), "/list/team@example.test");
    assert_eq!(browser.text("h1"), "The Team");
    assert_eq!(browser.text("p"), "Our <team>");
    assert_eq!(browser.style("body", "max-width"), "640px");

    // The browser refuses to send the form without an address.
    browser.click("button[type=submit]");
    assert_ne!(
        browser.property("input[name=email]", "validationMessage"),
        ""
    );
    assert_eq!(browser.text("h1"), "The Team");

    // Subscribing: the form, then the link in the mail and its button.
    browser.type_into("input[name=email]", "bob@example.test");
    browser.follow("button[type=submit]");
    assert_eq!(browser.text("h1"), "Check your mail");
    let mail = s.wait_subject("bob@example.test", "confirm ", 1);
    let confirm = web_path(&mail[0], "/confirm/");
    browser.open(&confirm);
    assert_eq!(
        browser.text("h1"),
        "Subscribe bob@example.test",
        "opening the link changes nothing by itself"
    );
    assert!(!has_member(
        &s.members("team@example.test"),
        "bob@example.test"
    ));
    browser.follow("button[type=submit]");
    assert_eq!(browser.text("h1"), "Done");
    assert!(has_member(
        &s.members("team@example.test"),
        "bob@example.test"
    ));
    browser.open(&confirm);
    assert_eq!(browser.text("h1"), "Sorry", "a used link is refused");
    assert_eq!(
        browser.text("p"),
        "This link or token has already been used."
    );

    // A stranger's post is held; the moderator approves it on the web page.
    s.send("stranger@far.example", "team@example.test", "Offer", "Buy.");
    let notice = s.wait_subject("owner@example.test", "approve ", 1);
    browser.open(&web_path(&notice[0], "/moderate/"));
    assert_eq!(browser.text("h1"), "A post held for team@example.test");
    browser.follow("button[value=approve]");
    assert_eq!(browser.text("h1"), "Done");
    let copy = s.wait_subject("bob@example.test", "[team] Offer", 1);

    // The copy's unsubscribe link, opened and confirmed in the browser.
    let leave = message::values(&copy[0], "List-Unsubscribe")[0].clone();
    browser.open(&web_path(leave.as_bytes(), "/u/"));
    assert_eq!(browser.text("h1"), "Leave team@example.test");
    browser.follow("button[type=submit]");
    assert_eq!(browser.text("h1"), "Unsubscribed");
    let members = s.members("team@example.test");
    assert!(!has_member(&members, "bob@example.test"), "{members}");
    assert!(has_member(&members, "carol@example.test"), "{members}");
}
