//! The decoder fed in chunks of 1, 2, 3, 4, 7 and 64 bytes and at once; the
//! login as `C:`/`S:` transcripts.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use super::*;

const CHUNKS: &[usize] = &[1, 2, 3, 4, 7, 64, usize::MAX];

fn statuses(bytes: &[u8], chunk: usize) -> Vec<Status> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.min(bytes.len().max(1))) {
        d.feed(piece);
        while let Some(s) = d.status().unwrap() {
            out.push(s);
        }
    }
    out
}

#[test]
fn status_lines_in_any_chunks() {
    let wire =
        b"+OK POP3 ready <1.2@x>\r\n-ERR [IN-USE] mailbox locked\r\n+ \r\n+OK\n+ok lower case\r\n";
    for &chunk in CHUNKS {
        let got = statuses(wire, chunk);
        assert_eq!(
            got,
            vec![
                Status::Ok("POP3 ready <1.2@x>".into()),
                Status::Err("[IN-USE] mailbox locked".into()),
                Status::Continue(String::new()),
                Status::Ok(String::new()),
                Status::Ok("lower case".into()),
            ],
            "chunk {chunk}"
        );
    }
    assert_eq!(Status::Err("[IN-USE] locked".into()).code(), Some("IN-USE"));
    assert_eq!(Status::Err("locked".into()).code(), None);
}

#[test]
fn a_status_that_is_not_pop3_is_an_error() {
    let mut d = Decoder::new();
    d.feed(b"220 smtp.example ESMTP\r\n");
    assert!(matches!(d.status(), Err(ProtocolError::BadStatus(_))));
    let mut d = Decoder::new();
    d.feed(&vec![b'x'; MAX_STATUS_LINE]);
    assert_eq!(d.status(), Err(ProtocolError::LineTooLong));
}

/// RETR data: stuffed dots, a line that is only "..", bare LF, a bare CR, an
/// 8-bit byte; then the next reply, which must stay buffered.
const RETR_WIRE: &[u8] = b"+OK 70 octets\r\nSubject: dots\r\n\r\n..\r\n...two\r\n..leading\r\nbare lf\nbare\rcr\r\n\xe9t\xe9\r\n.\r\n+OK next\r\n";
const RETR_DATA: &[u8] =
    b"Subject: dots\r\n\r\n.\r\n..two\r\n.leading\r\nbare lf\r\nbare\r\ncr\r\n\xe9t\xe9\r\n";

#[test]
fn message_data_is_unstuffed_in_any_chunks() {
    for &chunk in CHUNKS {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let mut status = None;
        let mut done = false;
        let mut after = None;
        for piece in RETR_WIRE.chunks(chunk.min(RETR_WIRE.len())) {
            d.feed(piece);
            if status.is_none() {
                status = d.status().unwrap();
                if status.is_none() {
                    continue;
                }
            }
            if !done {
                done = d.data(&mut out, 1 << 20).unwrap();
            }
            if done && after.is_none() {
                after = d.status().unwrap();
            }
        }
        assert_eq!(
            status,
            Some(Status::Ok("70 octets".into())),
            "chunk {chunk}"
        );
        assert!(done, "chunk {chunk}");
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(RETR_DATA),
            "chunk {chunk}"
        );
        assert_eq!(after, Some(Status::Ok("next".into())), "chunk {chunk}");
    }
}

#[test]
fn an_empty_message_and_a_lone_dot_line() {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    d.feed(b".\r\n");
    assert!(d.data(&mut out, 100).unwrap());
    assert!(out.is_empty());
    // A server that ends with ".\n" is understood too.
    d.feed(b"a\n.\n");
    assert!(d.data(&mut out, 100).unwrap());
    assert_eq!(out, b"a\r\n");
}

#[test]
fn data_over_the_limit_is_an_error() {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    d.feed(&[b'a'; 100]);
    assert_eq!(d.data(&mut out, 50), Err(ProtocolError::TooLarge(50)));
}

#[test]
fn listings_parse() {
    let mut d = Decoder::new();
    let mut acc = Vec::new();
    d.feed(b"1 120\r\n2 4500\r\n");
    assert_eq!(d.lines(&mut acc).unwrap(), None);
    d.feed(b".\r\n");
    let lines = d.lines(&mut acc).unwrap().unwrap();
    assert_eq!(parse_list(&lines).unwrap(), vec![(1, 120), (2, 4500)]);
    assert!(parse_list(&["x 1".to_string()]).is_err());
    assert_eq!(
        parse_uidl(&["1 abc".to_string(), "2  def".to_string()]).unwrap(),
        vec![(1, "abc".to_string()), (2, "def".to_string())]
    );
    assert!(parse_uidl(&["1".to_string()]).is_err());
}

#[test]
fn capabilities_parse() {
    let caps = Capabilities::parse(&[
        "TOP".into(),
        "uidl".into(),
        "SASL PLAIN login".into(),
        "EXPIRE 0".into(),
        "STLS".into(),
    ]);
    assert!(caps.known && caps.uidl && caps.stls && caps.expire_now);
    assert_eq!(caps.sasl, vec!["PLAIN", "LOGIN"]);
    assert!(Capabilities::default().may_have_uidl());
    assert!(!Capabilities::parse(&[]).may_have_uidl());
}

#[test]
fn passwords_never_show_in_debug_output() {
    let shown = format!(
        "{:?} {:?} {:?}",
        Command::Pass(Secret::from("hunter2")),
        Command::AuthPlain(Secret::from("aHVudGVyMg==")),
        Login::new(TlsMode::None, "u", Secret::from("hunter2"))
    );
    assert!(
        !shown.contains("hunter2") && !shown.contains("aHVudGVyMg"),
        "{shown}"
    );
}

/// The outcome of a transcript run: what the client sent and how it ended.
#[derive(Debug)]
struct Run {
    client: Vec<String>,
    end: String,
    discarded: usize,
}

/// Plays the server's lines of `transcript` to a login, fed in `chunk`s, the
/// way the connection does; `[tls]` in the transcript marks the handshake.
fn run(mode: TlsMode, transcript: &str, chunk: usize) -> Run {
    let mut segments: Vec<Vec<u8>> = vec![Vec::new()];
    for line in transcript.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(s) = line.strip_prefix("S:") {
            let s = s.strip_prefix(' ').unwrap_or(s);
            segments.last_mut().unwrap().extend_from_slice(s.as_bytes());
            segments.last_mut().unwrap().extend_from_slice(b"\r\n");
        } else if line == "[tls]" {
            segments.push(Vec::new());
        }
    }
    let mut login = Login::new(mode, "family", Secret::from("secret"));
    let mut decoder = Decoder::new();
    let mut segment = 0;
    let mut fed = 0;
    let mut client = Vec::new();
    let mut last: Option<Command> = None;
    let mut discarded = 0;
    loop {
        // Read one reply (and its listing), feeding chunks as needed.
        let mut acc = Vec::new();
        let mut status = None;
        let lines = loop {
            if status.is_none() {
                status = decoder.status().unwrap();
            }
            if let Some(s) = &status {
                let multi = s.is_ok() && last.as_ref().is_some_and(Command::is_multiline);
                if !multi {
                    break Vec::new();
                }
                if let Some(lines) = decoder.lines(&mut acc).unwrap() {
                    break lines;
                }
            }
            let bytes = &segments[segment];
            if fed >= bytes.len() {
                return Run {
                    client,
                    end: "server silent".into(),
                    discarded,
                };
            }
            let n = chunk.min(bytes.len() - fed);
            decoder.feed(&bytes[fed..fed + n]);
            fed += n;
        };
        let mut step = login.on_reply(status.unwrap(), &lines);
        loop {
            match step {
                Step::Send(command) => {
                    let line = String::from_utf8(command.encode()).unwrap();
                    client.push(line.trim_end().to_string());
                    last = Some(command);
                    break;
                }
                Step::StartTls => {
                    // What was buffered, and the rest of the plaintext
                    // segment, never reaches the TLS session.
                    discarded += decoder.discard() + (segments[segment].len() - fed);
                    segment += 1;
                    fed = 0;
                    decoder = Decoder::new();
                    step = login.tls_ready();
                }
                Step::LoggedIn(caps) => {
                    return Run {
                        client,
                        end: format!("logged in, uidl={}", caps.uidl),
                        discarded,
                    };
                }
                Step::Fail(e) => {
                    return Run {
                        client,
                        end: format!("failed: {e}"),
                        discarded,
                    };
                }
            }
        }
    }
}

/// Checks a transcript: the client's lines (`C:`) and the end (`=>`).
fn check(mode: TlsMode, transcript: &str) {
    let expected: Vec<String> = transcript
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("C: ").map(str::to_string))
        .collect();
    let end = transcript
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("=> "))
        .unwrap();
    for &chunk in CHUNKS {
        let r = run(mode, transcript, chunk);
        assert_eq!(r.client, expected, "chunk {chunk}: {r:?}");
        assert_eq!(r.end, end, "chunk {chunk}: {r:?}");
    }
}

#[test]
fn user_and_pass_when_no_sasl_is_offered() {
    check(
        TlsMode::None,
        "
        S: +OK POP3 server ready
        C: CAPA
        S: +OK capability list follows
        S: TOP
        S: UIDL
        S: USER
        S: .
        C: USER family
        S: +OK
        C: PASS secret
        S: +OK maildrop has 2 messages
        => logged in, uidl=true
        ",
    );
}

#[test]
fn auth_plain_with_an_initial_response_when_offered() {
    // base64("\0family\0secret")
    check(
        TlsMode::Implicit,
        "
        S: +OK ready
        C: CAPA
        S: +OK
        S: SASL PLAIN
        S: USER
        S: .
        C: AUTH PLAIN AGZhbWlseQBzZWNyZXQ=
        S: +OK welcome
        => logged in, uidl=false
        ",
    );
}

#[test]
fn auth_plain_answers_an_empty_challenge() {
    check(
        TlsMode::Implicit,
        "
        S: +OK ready
        C: CAPA
        S: +OK
        S: SASL PLAIN
        S: .
        C: AUTH PLAIN AGZhbWlseQBzZWNyZXQ=
        S: +
        C: AGZhbWlseQBzZWNyZXQ=
        S: +OK
        => logged in, uidl=false
        ",
    );
}

#[test]
fn a_server_without_capa_gets_user_and_pass() {
    check(
        TlsMode::None,
        "
        S: +OK old server
        C: CAPA
        S: -ERR unknown command
        C: USER family
        S: +OK
        C: PASS secret
        S: +OK
        => logged in, uidl=false
        ",
    );
}

#[test]
fn stls_then_capabilities_again() {
    check(
        TlsMode::StartTls,
        "
        S: +OK ready
        C: CAPA
        S: +OK
        S: STLS
        S: UIDL
        S: .
        C: STLS
        S: +OK begin TLS
        [tls]
        C: CAPA
        S: +OK
        S: UIDL
        S: SASL PLAIN
        S: .
        C: AUTH PLAIN AGZhbWlseQBzZWNyZXQ=
        S: +OK
        => logged in, uidl=true
        ",
    );
}

#[test]
fn bytes_sent_before_the_tls_handshake_are_thrown_away() {
    // A man in the middle appends a fake CAPA answer (offering nothing, so the
    // client would send USER and PASS) to the plaintext "+OK" of STLS.
    let transcript = "
        S: +OK ready
        S: +OK
        S: .
        S: +OK begin TLS
        S: +OK
        S: USER
        S: .
        [tls]
        S: +OK
        S: SASL PLAIN
        S: .
        S: +OK
    ";
    for &chunk in CHUNKS {
        let r = run(TlsMode::StartTls, transcript, chunk);
        assert_eq!(
            r.client,
            vec!["CAPA", "STLS", "CAPA", "AUTH PLAIN AGZhbWlseQBzZWNyZXQ="],
            "chunk {chunk}: {r:?}"
        );
        assert_eq!(r.discarded, "+OK\r\nUSER\r\n.\r\n".len(), "chunk {chunk}");
        assert_eq!(r.end, "logged in, uidl=false");
    }
}

#[test]
fn a_refused_stls_ends_before_any_credential() {
    check(
        TlsMode::StartTls,
        "
        S: +OK ready
        C: CAPA
        S: +OK
        S: USER
        S: .
        C: STLS
        S: -ERR not here
        => failed: the server refused STLS (not here); not logging in without TLS
        ",
    );
}

#[test]
fn a_bad_greeting_ends_the_login() {
    check(
        TlsMode::None,
        "
        S: -ERR [SYS/TEMP] too busy
        => failed: bad greeting: -ERR [SYS/TEMP] too busy
        ",
    );
}

#[test]
fn a_refused_password_ends_the_login() {
    check(
        TlsMode::None,
        "
        S: +OK
        C: CAPA
        S: +OK
        S: .
        C: USER family
        S: +OK
        C: PASS secret
        S: -ERR [AUTH] invalid password
        => failed: login refused: [AUTH] invalid password
        ",
    );
    check(
        TlsMode::None,
        "
        S: +OK
        C: CAPA
        S: +OK
        S: SASL PLAIN
        S: .
        C: AUTH PLAIN AGZhbWlseQBzZWNyZXQ=
        S: -ERR [AUTH] no
        => failed: login refused: [AUTH] no
        ",
    );
}
