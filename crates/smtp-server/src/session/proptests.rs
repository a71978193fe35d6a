//! Property tests of command framing and whole sessions: whatever a client
//! sends, in whatever pieces, nothing panics, the session holds at most one
//! command line of input between reads, every complete command line is
//! answered, and the replies and queued mail do not depend on how the bytes
//! were cut.

use proptest::prelude::*;
use qs_testkit::{config, piece_sizes, pieces};

use super::*;

/// `example.test` is ours, with alice and postmaster; anything else is remote.
struct Directory;

impl Policy for Directory {
    fn recipient(&self, address: &str) -> RecipientCheck {
        match address.to_ascii_lowercase().as_str() {
            "alice@example.test" | "postmaster@example.test" => RecipientCheck::Local,
            a if a.ends_with("@example.test") => RecipientCheck::Unknown,
            _ => RecipientCheck::Remote,
        }
    }

    fn may_send_as(&self, user: &str, address: &str) -> bool {
        user.eq_ignore_ascii_case(address)
    }

    fn postmaster(&self) -> Option<String> {
        Some("postmaster@example.test".into())
    }
}

/// A session with its own spool folder (bodies past 64 octets go to a file).
struct Client {
    _tmp: tempfile::TempDir,
    session: Session<Directory>,
}

/// What a session said and queued.
#[derive(Debug, Default, PartialEq, Eq)]
struct Transcript {
    out: Vec<u8>,
    /// Sender and recipients of each message queued.
    queued: Vec<(String, Vec<String>)>,
    ended: bool,
}

impl Client {
    fn new(kind: ListenerKind) -> Client {
        let tmp = match tempfile::tempdir() {
            Ok(tmp) => tmp,
            Err(e) => panic!("no temporary folder: {e}"),
        };
        let spool = match SpoolDir::open(tmp.path().join("spool"), 64) {
            Ok(spool) => spool,
            Err(e) => panic!("no spool folder: {e}"),
        };
        let config = SessionConfig {
            hostname: "mx.example.test".into(),
            max_message_size: 2000,
            max_recipients: 3,
            max_recipient_overshoot: 5,
            max_errors: 30,
            allow_plaintext_auth: true,
            enforce_sender: true,
            spool,
            check_sender: false,
            check_message: false,
            greylisting: false,
        };
        let peer = Peer {
            ip: IpAddr::from([192, 0, 2, 1]),
            may_relay: false,
            checked: false,
        };
        let session = Session::new(
            Arc::new(config),
            Arc::new(Directory),
            kind,
            peer,
            false,
            "S1".into(),
        );
        Client { _tmp: tmp, session }
    }

    /// Gives the session `bytes` and runs it until it needs more, answering
    /// what it asks (every password is wrong, every message is queued).
    fn send(&mut self, bytes: &[u8], transcript: &mut Transcript) {
        if transcript.ended {
            return;
        }
        self.session.receive(bytes);
        while let Some(action) = self.session.next_action() {
            match action {
                Action::Send(out) => transcript.out.extend_from_slice(&out),
                Action::Verify { .. } => self.session.verified(AuthOutcome::Refused),
                Action::Enqueue(envelope) => {
                    transcript
                        .queued
                        .push((envelope.sender.clone(), envelope.recipients.clone()));
                    self.session.enqueued(Ok("Q1".into()));
                }
                // The checks are off for this client (`checked: false`).
                Action::CheckSender { .. }
                | Action::CheckRecipient { .. }
                | Action::CheckMessage(_) => {
                    unreachable!("an unchecked client is not checked")
                }
                // A fresh session would go on over TLS; this one reads no more.
                Action::StartTls | Action::Close => {
                    transcript.ended = true;
                    return;
                }
            }
        }
        // Between reads at most one partial command line waits.
        assert!(
            self.session.input.len() <= MAX_COMMAND_LINE,
            "{} bytes of input held",
            self.session.input.len()
        );
    }
}

fn run(kind: ListenerKind, input: &[u8], sizes: &[usize]) -> Transcript {
    let mut client = Client::new(kind);
    let mut transcript = Transcript::default();
    for piece in pieces(input, sizes) {
        client.send(piece, &mut transcript);
    }
    transcript
}

fn listener() -> impl Strategy<Value = ListenerKind> {
    prop::sample::select(vec![ListenerKind::Mx, ListenerKind::Submission])
}

/// A command line as a client writes it, without its CRLF.
fn command_line() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        "EHLO client.example",
        "HELO client.example",
        "ehlo",
        "MAIL FROM:<bob@example.org>",
        "MAIL FROM:<> SIZE=100",
        "MAIL FROM:<bob@example.org> SIZE=99999999999999999999",
        "MAIL FROM:<bob@example.org> BODY=8BITMIME SMTPUTF8",
        "MAIL FROM:<b\u{f6}b@example.org> SMTPUTF8",
        "MAIL FROM:bob",
        "RCPT TO:<alice@example.test>",
        "RCPT TO:<Postmaster>",
        "RCPT TO:<nobody@example.test>",
        "RCPT TO:<someone@elsewhere.example>",
        "RCPT TO:<alice@example.test> NOTIFY=NEVER",
        "RSET",
        "NOOP",
        "NOOP hello",
        "VRFY alice",
        "EXPN list",
        "HELP",
        "AUTH PLAIN",
        "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==",
        "AUTH LOGIN",
        "AUTH LOGIN YWxpY2U=",
        "AUTH CRAM-MD5",
        "*",
        "AGFsaWNl",
        "STARTTLS",
        "STARTTLS now",
        "QUIT",
        "XYZZY",
        "",
    ])
    .prop_map(|line| line.as_bytes().to_vec())
}

/// A command line with some of its bytes changed, inserted or removed.
fn mutated_line() -> impl Strategy<Value = Vec<u8>> {
    qs_testkit::mutated(command_line(), 2)
}

/// A complete line that is a command (no DATA or BDAT, whose bytes that follow
/// are a body, not commands): mutated or not, random, or near the limit; no LF
/// inside, CRLF at its end.
fn complete_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => command_line(),
        3 => mutated_line(),
        1 => prop::collection::vec(any::<u8>(), 0..60),
        1 => (MAX_COMMAND_LINE - 4..MAX_COMMAND_LINE + 4).prop_map(|n| vec![b'N'; n]),
    ]
    .prop_map(|mut line| {
        line.retain(|&b| b != b'\n');
        line.extend_from_slice(b"\r\n");
        line
    })
    .prop_filter("a body would follow", |line| {
        let verb = line.get(..4).map(<[u8]>::to_ascii_uppercase);
        !matches!(verb.as_deref(), Some(b"DATA" | b"BDAT"))
    })
}

/// Bytes that steer a whole session: commands, bodies and their fake ends,
/// BDAT chunks, and every kind of line end.
fn steering_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => command_line().prop_map(|mut l| {
            l.extend_from_slice(b"\r\n");
            l
        }),
        2 => mutated_line(),
        3 => prop::sample::select(vec![
            &b"DATA\r\n"[..], b"BDAT 5\r\n", b"BDAT 0 LAST\r\n", b"BDAT 3 LAST\r\n",
            b"BDAT 99999999999999999999\r\n", b"Subject: hi\r\n\r\nbody\r\n", b".\r\n",
            b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\r\n\r.\r\n", b"\n.\r\n", b"..\r\n",
            b"\r\n", b"\n", b"\r", b"\0", b"Received: x\r\n",
            b"DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\n",
            b"BDAT 16 LAST\r\nSubject: hi\r\n\r\nx\r\n",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..40),
        1 => (MAX_COMMAND_LINE - 4..MAX_COMMAND_LINE + 4).prop_map(|n| vec![b'N'; n]),
    ]
}

fn steered_input() -> impl Strategy<Value = Vec<u8>> {
    // Most sessions start as a client would, so that bodies are reached.
    let opening = prop::sample::select(vec![
        &b""[..],
        b"EHLO c\r\nMAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.test>\r\n",
    ]);
    (opening, prop::collection::vec(steering_piece(), 0..30))
        .prop_map(|(opening, pieces)| [opening.to_vec(), pieces.concat()].concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_in_any_pieces_give_the_same_session(
        input in prop::collection::vec(any::<u8>(), 0..3000),
        sizes in piece_sizes(2000),
        kind in listener(),
    ) {
        prop_assert_eq!(run(kind, &input, &sizes), run(kind, &input, &[input.len().max(1)]));
    }

    #[test]
    fn sessions_in_any_pieces_give_the_same_replies_and_mail(
        input in steered_input(),
        sizes in piece_sizes(2000),
        kind in listener(),
    ) {
        prop_assert_eq!(run(kind, &input, &sizes), run(kind, &input, &[input.len().max(1)]));
    }

    #[test]
    fn every_complete_command_line_is_answered(
        lines in prop::collection::vec(complete_line(), 1..16),
        sizes in piece_sizes(2000),
        kind in listener(),
    ) {
        let mut client = Client::new(kind);
        let mut transcript = Transcript::default();
        for line in &lines {
            let before = transcript.out.len();
            for piece in pieces(line, &sizes) {
                client.send(piece, &mut transcript);
            }
            if transcript.ended {
                break;
            }
            let answer = &transcript.out[before..];
            // A reply ends in a line whose code is followed by a space.
            let last = answer
                .strip_suffix(b"\r\n")
                .map(|a| a.rsplit(|&b| b == b'\n').next().unwrap_or(a));
            prop_assert!(
                matches!(last, Some(l) if l.len() >= 4 && l[3] == b' '),
                "{:?} was not answered: {:?}",
                String::from_utf8_lossy(line),
                String::from_utf8_lossy(answer)
            );
        }
    }
}
