//! Byte transcripts of whole sessions, fed in chunks of 1, 2, 4 bytes and at once.
//!
//! A fake caller stands for the directory and the disk: `alice@example.test`
//! with password `pw` logs in to two messages; `shared@example.test` is the
//! same with `ignore_dele`; `busy@`, `blocked@` and `broken@` get the outcome
//! their names say; anyone else is refused. What the caller does besides sending
//! replies shows in the output as a line in brackets: `[update ...]`, `[close]`,
//! `[starttls]`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use qs_mailstore::{Flags, MessageEntry, MessageId};

use super::*;
use crate::encode;
use crate::maildrop::uidl;

const ONE: &[u8] = b"Subject: one\r\n\r\n.dot line\r\nbody\r\n";
const TWO: &[u8] = b"Subject: two\n\nbare lf\n";

fn settings() -> Settings {
    Settings {
        hostname: "mx.test".into(),
        tls_active: false,
        stls_available: true,
        allow_plaintext_auth: true,
        max_login_failures: 3,
        max_errors: 10,
    }
}

/// The fake directory and disk.
struct Fake {
    /// Each message and its content (`None`: the file vanished).
    messages: Vec<(MessageInfo, Option<Vec<u8>>)>,
    not_removed: usize,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            messages: vec![
                message("1000.A.mx", Some(ONE)),
                message("1001.B.mx", Some(TWO)),
            ],
            not_removed: 0,
        }
    }

    fn outcome(&self, credentials: &Credentials) -> LoginOutcome {
        let accepted = |options| LoginOutcome::Accepted {
            user: credentials.login.clone(),
            options,
            messages: self.messages.iter().map(|(m, _)| m.clone()).collect(),
        };
        match (credentials.login.as_str(), credentials.password.expose()) {
            ("alice@example.test", b"pw") => accepted(Pop3Options::default()),
            ("shared@example.test", b"pw") => accepted(Pop3Options {
                ignore_dele: true,
                only_unread: false,
            }),
            ("busy@example.test", _) => LoginOutcome::InUse,
            ("blocked@example.test", _) => LoginOutcome::Blocked,
            ("broken@example.test", _) => LoginOutcome::TemporaryFailure,
            ("odd@example.test", _) => LoginOutcome::PermanentFailure,
            _ => LoginOutcome::Rejected,
        }
    }

    fn content(&self, id: &MessageId) -> Option<&[u8]> {
        self.messages
            .iter()
            .find(|(m, _)| &m.entry.id == id)
            .and_then(|(_, c)| c.as_deref())
    }
}

fn message(id: &str, content: Option<&[u8]>) -> (MessageInfo, Option<Vec<u8>>) {
    let id = MessageId::new(id).unwrap();
    let info = MessageInfo {
        size: content.map(encode::size).unwrap_or(10),
        uidl: uidl(&id),
        entry: MessageEntry {
            path: PathBuf::from("/nowhere").join(id.as_str()),
            id,
            size: None,
            flags: Flags::new(),
            is_new: true,
        },
    };
    (info, content.map(<[u8]>::to_vec))
}

/// Feeds `input` in chunks of `chunk` bytes, doing what the session asks.
fn run(mut session: Session, fake: &Fake, input: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pieces = input.chunks(chunk.max(1));
    loop {
        while let Some(action) = session.poll() {
            match action {
                Action::Send(reply) => reply.write_to(&mut out),
                Action::Login(credentials) => session.login_done(fake.outcome(&credentials)),
                Action::Transfer(t) => match fake.content(&t.entry.id) {
                    Some(content) => {
                        t.head.write_to(&mut out);
                        out.extend(encode::transfer(content, t.top));
                    }
                    None => session.transfer_failed(t.number),
                },
                Action::Update(plan) => {
                    let ids = |list: &[MessageEntry]| {
                        list.iter()
                            .map(|e| e.id.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    out.extend(
                        format!(
                            "[update remove={} seen={}]\r\n",
                            ids(&plan.remove),
                            ids(&plan.mark_seen)
                        )
                        .bytes(),
                    );
                    session.update_done(UpdateReport {
                        not_removed: fake.not_removed,
                    });
                }
                Action::StartTls => {
                    out.extend_from_slice(b"[starttls]\r\n");
                    assert!(session.poll().is_none(), "the session goes on after STLS");
                    return out;
                }
                Action::Close => {
                    out.extend_from_slice(b"[close]\r\n");
                    assert!(session.is_over());
                    return out;
                }
            }
        }
        match pieces.next() {
            Some(piece) => session.feed(piece),
            None => return out,
        }
    }
}

/// Splits a `C:`/`S:` transcript into what the client sends and what the
/// server must answer.
fn transcript(text: &str) -> (Vec<u8>, Vec<u8>) {
    let (mut client, mut server) = (Vec::new(), Vec::new());
    for line in text.lines().map(str::trim_start).filter(|l| !l.is_empty()) {
        let (side, rest) = line.split_at(2);
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let target = match side {
            "C:" => &mut client,
            "S:" => &mut server,
            _ => panic!("bad transcript line {line:?}"),
        };
        target.extend_from_slice(rest.as_bytes());
        target.extend_from_slice(b"\r\n");
    }
    (client, server)
}

/// Runs a transcript with every chunk size, from a fresh session each time.
fn check_with(make: impl Fn() -> Session, fake: &Fake, text: &str) {
    let (client, expected) = transcript(text);
    for chunk in [1, 2, 4, client.len()] {
        let out = run(make(), fake, &client, chunk);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected),
            "fed in chunks of {chunk}"
        );
    }
}

fn check(settings: Settings, text: &str) {
    check_with(|| Session::new(settings.clone()), &Fake::new(), text);
}

const CAPA_PLAIN: &str = "
    S: +OK capability list follows
    S: TOP
    S: UIDL
    S: RESP-CODES
    S: AUTH-RESP-CODE
    S: PIPELINING
    S: USER
    S: SASL PLAIN
    S: STLS
    S: IMPLEMENTATION Quicksilver
    S: .";

#[test]
fn a_whole_session() {
    check(
        settings(),
        &format!(
            "
        S: +OK mx.test POP3 server ready
        C: CAPA
        {CAPA_PLAIN}
        C: user alice@example.test
        S: +OK send your password
        C: PASS pw
        S: +OK maildrop locked and ready, 2 messages (58 octets)
        C: STAT
        S: +OK 2 58
        C: LIST
        S: +OK 2 messages (58 octets)
        S: 1 33
        S: 2 25
        S: .
        C: LIST 2
        S: +OK 2 25
        C: UIDL
        S: +OK unique-id listing follows
        S: 1 1000.A.mx
        S: 2 1001.B.mx
        S: .
        C: UIDL 1
        S: +OK 1 1000.A.mx
        C: RETR 1
        S: +OK 33 octets
        S: Subject: one
        S:
        S: ..dot line
        S: body
        S: .
        C: TOP 2 0
        S: +OK top of message follows
        S: Subject: two
        S:
        S: .
        C: RETR 2
        S: +OK 25 octets
        S: Subject: two
        S:
        S: bare lf
        S: .
        C: DELE 1
        S: +OK message 1 deleted
        C: RETR 1
        S: -ERR message 1 already deleted
        C: DELE 1
        S: -ERR message 1 already deleted
        C: STAT
        S: +OK 1 25
        C: LIST
        S: +OK 1 messages (25 octets)
        S: 2 25
        S: .
        C: RSET
        S: +OK maildrop has 2 messages (58 octets)
        C: DELE 2
        S: +OK message 2 deleted
        C: NOOP
        S: +OK
        C: CAPA
        S: +OK capability list follows
        S: TOP
        S: UIDL
        S: RESP-CODES
        S: AUTH-RESP-CODE
        S: PIPELINING
        S: IMPLEMENTATION Quicksilver
        S: .
        C: QUIT
        S: [update remove=1001.B.mx seen=1000.A.mx]
        S: +OK signing off
        S: [close]
        C: STAT
        "
        ),
    );
}

#[test]
fn a_session_that_changes_nothing_skips_the_update() {
    check(
        settings(),
        "
        S: +OK mx.test POP3 server ready
        C: USER alice@example.test
        S: +OK send your password
        C: PASS pw
        S: +OK maildrop locked and ready, 2 messages (58 octets)
        C: TOP 1 1
        S: +OK top of message follows
        S: Subject: one
        S:
        S: ..dot line
        S: .
        C: QUIT
        S: +OK signing off
        S: [close]
        ",
    );
}

#[test]
fn quit_before_login() {
    check(
        settings(),
        "
        S: +OK mx.test POP3 server ready
        C: QUIT
        S: +OK bye
        S: [close]
        C: USER alice@example.test
        ",
    );
}

#[test]
fn without_tls_no_login_is_offered_or_accepted() {
    let mut s = settings();
    s.allow_plaintext_auth = false;
    check(
        s,
        "
        S: +OK mx.test POP3 server ready
        C: CAPA
        S: +OK capability list follows
        S: TOP
        S: UIDL
        S: RESP-CODES
        S: AUTH-RESP-CODE
        S: PIPELINING
        S: STLS
        S: IMPLEMENTATION Quicksilver
        S: .
        C: USER alice@example.test
        S: -ERR [AUTH] login without TLS is not allowed here: use STLS first
        C: PASS pw
        S: -ERR [AUTH] login without TLS is not allowed here: use STLS first
        C: AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==
        S: -ERR [AUTH] login without TLS is not allowed here: use STLS first
        C: AUTH
        S: -ERR [AUTH] login without TLS is not allowed here: use STLS first
        C: STAT
        S: -ERR log in first
        C: STLS
        S: +OK begin TLS negotiation
        S: [starttls]
        C: USER alice@example.test
        C: PASS pw
        ",
    );
}

#[test]
fn after_stls_a_fresh_session_without_greeting_offers_login() {
    let mut s = settings();
    s.allow_plaintext_auth = false;
    s.tls_active = true;
    s.stls_available = false;
    check_with(
        || Session::after_stls(s.clone()),
        &Fake::new(),
        "
        C: CAPA
        S: +OK capability list follows
        S: TOP
        S: UIDL
        S: RESP-CODES
        S: AUTH-RESP-CODE
        S: PIPELINING
        S: USER
        S: SASL PLAIN
        S: IMPLEMENTATION Quicksilver
        S: .
        C: STLS
        S: -ERR TLS is already active
        C: AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==
        S: +OK maildrop locked and ready, 2 messages (58 octets)
        C: STAT
        S: +OK 2 58
        ",
    );
}

#[test]
fn stls_is_refused_where_it_is_not_offered() {
    let mut s = settings();
    s.stls_available = false;
    s.allow_plaintext_auth = false;
    check(
        s,
        "
        S: +OK mx.test POP3 server ready
        C: STLS
        S: -ERR STLS is not offered here
        C: USER a@example.test
        S: -ERR [AUTH] login without TLS is not allowed here: use the POP3 TLS port
        ",
    );
}

#[test]
fn auth_plain_with_and_without_an_initial_response() {
    check(
        settings(),
        "
        S: +OK mx.test POP3 server ready
        C: AUTH
        S: +OK SASL mechanisms follow
        S: PLAIN
        S: .
        C: AUTH CRAM-MD5
        S: -ERR unsupported SASL mechanism
        C: AUTH PLAIN
        S: + 
        C: *
        S: -ERR authentication cancelled
        C: AUTH PLAIN
        S: + 
        C: not base64!
        S: -ERR the response is not valid base64
        C: AUTH PLAIN =
        S: -ERR [AUTH] malformed PLAIN response
        C: AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAA=
        S: -ERR [AUTH] malformed PLAIN response
        C: AUTH PLAIN YWxpY2VAZXhhbXBsZS50ZXN0AHB3
        S: -ERR [AUTH] malformed PLAIN response
        C: AUTH PLAIN Ym9iQGV4YW1wbGUudGVzdABhbGljZUBleGFtcGxlLnRlc3QAcHc=
        S: -ERR [AUTH] logging in as another user is not allowed
        C: AUTH PLAIN
        S: + 
        C: AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==
        S: -ERR [AUTH] authentication failed
        C: auth plain
        S: + 
        C: YWxpY2VAZXhhbXBsZS50ZXN0AGFsaWNlQGV4YW1wbGUudGVzdABwdw==
        S: +OK maildrop locked and ready, 2 messages (58 octets)
        C: AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==
        S: -ERR already logged in
        ",
    );
}

#[test]
fn login_failures_and_their_outcomes() {
    check(
        settings(),
        "
        S: +OK mx.test POP3 server ready
        C: PASS pw
        S: -ERR send USER first
        C: USER busy@example.test
        S: +OK send your password
        C: PASS x
        S: -ERR [IN-USE] the maildrop is in use by another POP3 session
        C: USER broken@example.test
        S: +OK send your password
        C: PASS x
        S: -ERR [SYS/TEMP] the maildrop cannot be opened now; try again later
        C: USER odd@example.test
        S: +OK send your password
        C: PASS x
        S: -ERR [SYS/PERM] the maildrop cannot be opened
        C: USER alice@example.test
        S: +OK send your password
        C: PASS wrong
        S: -ERR [AUTH] authentication failed
        C: PASS pw
        S: -ERR send USER first
        C: USER alice@example.test
        S: +OK send your password
        C: PASS wrong again
        S: -ERR [AUTH] authentication failed
        C: USER nobody@example.test
        S: +OK send your password
        C: PASS pw
        S: -ERR [AUTH] authentication failed; too many failures, closing
        S: [close]
        C: USER alice@example.test
        C: PASS pw
        ",
    );
}

#[test]
fn a_blocked_address_is_sent_away() {
    check(
        settings(),
        "
        S: +OK mx.test POP3 server ready
        C: USER blocked@example.test
        S: +OK send your password
        C: PASS pw
        S: -ERR [SYS/TEMP] too many failed logins from your address; try again later
        S: [close]
        ",
    );
}

#[test]
fn every_state_refuses_what_does_not_belong_to_it() {
    let mut s = settings();
    s.max_errors = 100;
    check(
        s,
        "
        S: +OK mx.test POP3 server ready
        C: STAT
        S: -ERR log in first
        C: LIST
        S: -ERR log in first
        C: RETR 1
        S: -ERR log in first
        C: DELE 1
        S: -ERR log in first
        C: NOOP
        S: -ERR log in first
        C: RSET
        S: -ERR log in first
        C: TOP 1 1
        S: -ERR log in first
        C: UIDL
        S: -ERR log in first
        C: APOP alice@example.test c4c9334bac560ecc979e58001b3e22fb
        S: -ERR APOP is not offered
        C: USER alice@example.test
        S: +OK send your password
        C: PASS pw
        S: +OK maildrop locked and ready, 2 messages (58 octets)
        C: USER alice@example.test
        S: -ERR already logged in
        C: PASS pw
        S: -ERR already logged in
        C: STLS
        S: -ERR already logged in
        C: RETR 0
        S: -ERR no such message
        C: RETR 3
        S: -ERR no such message
        C: LIST 99999999999999999999999
        S: -ERR no such message
        C: TOP 1
        S: -ERR TOP message-number lines
        C: DELE x
        S: -ERR a number was expected
        C: HELP
        S: -ERR unknown command
        ",
    );
}

#[test]
fn too_many_errors_close_the_connection() {
    let mut text = String::from("S: +OK mx.test POP3 server ready\n");
    for _ in 0..9 {
        text.push_str("C: XYZZY\nS: -ERR unknown command\n");
    }
    text.push_str(
        "C: XYZZY\nS: -ERR unknown command; too many errors, closing\nS: [close]\nC: QUIT\n",
    );
    check(settings(), &text);
}

#[test]
fn an_over_long_line_is_refused_and_the_next_one_served() {
    let long = "x".repeat(MAX_LINE + 10);
    check(
        settings(),
        &format!(
            "
            S: +OK mx.test POP3 server ready
            C: USER {long}
            S: -ERR line too long
            C: QUIT
            S: +OK bye
            S: [close]
            "
        ),
    );
    // An over-long SASL response ends the exchange: the next line is a command.
    check(
        settings(),
        &format!(
            "
            S: +OK mx.test POP3 server ready
            C: AUTH PLAIN
            S: + 
            C: {long}
            S: -ERR line too long
            C: STAT
            S: -ERR log in first
            "
        ),
    );
    // Exactly at the limit (CRLF included) is fine.
    let name = "n".repeat(MAX_LINE - "USER ".len() - 2);
    check(
        settings(),
        &format!(
            "
            S: +OK mx.test POP3 server ready
            C: USER {name}
            S: +OK send your password
            "
        ),
    );
}

#[test]
fn ignore_dele_keeps_deleted_messages_and_marks_them_seen() {
    check(
        settings(),
        "
        S: +OK mx.test POP3 server ready
        C: USER shared@example.test
        S: +OK send your password
        C: PASS pw
        S: +OK maildrop locked and ready, 2 messages (58 octets)
        C: RETR 1
        S: +OK 33 octets
        S: Subject: one
        S:
        S: ..dot line
        S: body
        S: .
        C: DELE 1
        S: +OK message 1 deleted
        C: DELE 2
        S: +OK message 2 deleted
        C: QUIT
        S: [update remove= seen=1000.A.mx]
        S: +OK signing off
        S: [close]
        ",
    );
}

#[test]
fn a_message_that_cannot_be_read_is_an_error_and_is_not_marked() {
    let fake = Fake {
        messages: vec![message("1000.A.mx", None), message("1001.B.mx", Some(TWO))],
        not_removed: 0,
    };
    check_with(
        || Session::new(settings()),
        &fake,
        "
        S: +OK mx.test POP3 server ready
        C: USER alice@example.test
        S: +OK send your password
        C: PASS pw
        S: +OK maildrop locked and ready, 2 messages (35 octets)
        C: RETR 1
        S: -ERR [SYS/TEMP] message 1 cannot be read now
        C: QUIT
        S: +OK signing off
        S: [close]
        ",
    );
}

#[test]
fn a_failed_removal_is_reported_at_quit() {
    let fake = Fake {
        not_removed: 1,
        ..Fake::new()
    };
    check_with(
        || Session::new(settings()),
        &fake,
        "
        S: +OK mx.test POP3 server ready
        C: USER alice@example.test
        S: +OK send your password
        C: PASS pw
        S: +OK maildrop locked and ready, 2 messages (58 octets)
        C: DELE 1
        S: +OK message 1 deleted
        C: QUIT
        S: [update remove=1000.A.mx seen=]
        S: -ERR [SYS/TEMP] some deleted messages not removed
        S: [close]
        ",
    );
}

#[test]
fn eight_bit_bodies_pass_unchanged() {
    let body = b"Subject: \xc3\xa9t\xc3\xa9\r\n\r\n\xff\x00\x80 raw\r\n.\r\n";
    let fake = Fake {
        messages: vec![message("1000.A.mx", Some(body))],
        not_removed: 0,
    };
    let input = b"USER alice@example.test\r\nPASS pw\r\nRETR 1\r\n";
    for chunk in [1, 2, 4, 100] {
        let out = run(Session::new(settings()), &fake, input, chunk);
        let expected: &[u8] =
            b"+OK 30 octets\r\nSubject: \xc3\xa9t\xc3\xa9\r\n\r\n\xff\x00\x80 raw\r\n..\r\n.\r\n";
        assert!(
            out.ends_with(expected),
            "chunk {chunk}: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
}

#[test]
fn passwords_never_show_in_debug_output() {
    // The password is in the Credentials (a Secret), not in the log-able Debug.
    let mut session = Session::new(settings());
    session.feed(b"USER alice@example.test\r\nPASS hunter2\r\n");
    let mut credentials = None;
    while let Some(action) = session.poll() {
        if let Action::Login(c) = action {
            credentials = Some(c);
        }
    }
    let credentials = credentials.unwrap();
    assert_eq!(credentials.password.expose(), b"hunter2");
    assert!(!format!("{credentials:?}").contains("hunter2"));
    assert!(!format!("{session:?}").contains("hunter2"));
}
