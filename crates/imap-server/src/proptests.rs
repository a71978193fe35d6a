//! Property tests of the input guard and of command parsing in a whole session:
//! whatever a client sends, in whatever pieces, nothing panics, the parser is
//! never handed a line or a literal over the limits (imap-codec's own
//! fragmentizer, fed what the guard passes, is the judge), and every complete
//! command line is answered.

use std::sync::Arc;

use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer, LiteralAnnouncement};
use proptest::prelude::*;
use qs_mailstore::{FolderName, Mailbox};
use qs_service::spool::SpoolDir;
use qs_testkit::{config, piece_sizes, pieces};

use crate::input::{InputGuard, InputLimits, Step, Verdict};
use crate::search::SearchLimits;
use crate::session::{Action, LoginResult, Session, Settings};
use crate::store::Shared;

/// Small limits, so that random input reaches them.
const LIMITS: InputLimits = InputLimits {
    max_line: 120,
    max_literal: 5000,
    max_literal_before_login: 40,
    login_budget: 1500,
};

/// What the parser receives, cut into fragments the way imap-next cuts it.
struct Parser {
    fragments: Fragmentizer,
    logged_in: bool,
    /// Bytes passed since the connection began.
    received: usize,
}

impl Parser {
    fn new(logged_in: bool) -> Parser {
        Parser {
            fragments: Fragmentizer::without_max_message_size(),
            logged_in,
            received: 0,
        }
    }

    /// Takes bytes the guard passed; checks every fragment against the limits.
    fn take(&mut self, bytes: &[u8]) {
        self.received += bytes.len();
        self.fragments.enqueue_bytes(bytes);
        let literal_limit = if self.logged_in {
            LIMITS.max_literal
        } else {
            LIMITS.max_literal_before_login
        };
        while let Some(fragment) = self.fragments.progress() {
            match fragment {
                FragmentInfo::Line {
                    start,
                    end,
                    announcement,
                    ..
                } => {
                    assert!(end - start <= LIMITS.max_line, "a line over the limit");
                    if let Some(LiteralAnnouncement { length, .. }) = announcement {
                        // LITERAL+: the same limit for both kinds.
                        assert!(
                            length <= literal_limit,
                            "a literal of {length} octets passed"
                        );
                    }
                }
                FragmentInfo::Literal { .. } => {}
            }
        }
    }

    /// No part of a command is pending in the parser.
    fn between_commands(&self) -> bool {
        self.fragments.message_bytes().is_empty()
    }
}

/// Runs `input`, read in the given pieces, through a guard as the session does
/// (each call up to one command end), with APPEND literals over `spool_above`
/// spooled; returns the verdicts other than `Pass`.
fn guard_all(input: &[u8], sizes: &[usize], logged_in: bool, spool_above: u32) -> Vec<Verdict> {
    let mut guard = InputGuard::with_spooling(LIMITS, spool_above);
    let mut parser = Parser::new(logged_in);
    let mut others = Vec::new();
    // Octets of the literal being spooled still to come.
    let mut spool_left = 0u32;
    for piece in pieces(input, sizes) {
        let mut rest = piece;
        while !rest.is_empty() {
            let (used, steps) = guard.admit_spooling(rest, logged_in);
            assert!(
                used > 0 && used <= rest.len(),
                "{used} of {} used",
                rest.len()
            );
            let mut passed_to = 0;
            for step in steps {
                match step {
                    Step::Verdict(Verdict::Pass(range)) => {
                        assert!(passed_to <= range.start && range.end <= used);
                        passed_to = range.end;
                        parser.take(&rest[range]);
                    }
                    Step::PassBytes(bytes) => parser.take(&bytes),
                    Step::SpoolStart { length } => {
                        assert!(logged_in, "spooled before login");
                        assert!(length <= LIMITS.max_literal, "{length} octets spooled");
                        assert_eq!(spool_left, 0, "a spool started inside another");
                        spool_left = length;
                    }
                    Step::Spool(range) => {
                        assert!(passed_to <= range.start && range.end <= used);
                        passed_to = range.end;
                        let n = u32::try_from(range.len()).unwrap_or(u32::MAX);
                        assert!(n <= spool_left, "more spooled than announced");
                        spool_left -= n;
                    }
                    Step::Verdict(
                        verdict @ (Verdict::RefuseLiteral { reset, .. }
                        | Verdict::DroppedCommand { reset, .. }),
                    ) => {
                        // The session starts a fresh parser exactly when it holds
                        // part of the refused command.
                        assert_eq!(reset, !parser.between_commands());
                        if reset {
                            let received = parser.received;
                            parser = Parser::new(logged_in);
                            parser.received = received;
                        }
                        others.push(verdict);
                    }
                    Step::Verdict(verdict @ Verdict::Fatal(_)) => {
                        others.push(verdict);
                        return others;
                    }
                }
            }
            if guard.between_commands() {
                assert!(
                    parser.between_commands(),
                    "the guard and the parser disagree"
                );
                assert_eq!(spool_left, 0, "a command ended inside a spooled literal");
            }
            if !logged_in {
                assert!(parser.received <= LIMITS.login_budget);
            }
            rest = &rest[used..];
        }
    }
    others
}

/// APPEND literals spooled from a small size on, or never.
fn spool_above() -> impl Strategy<Value = u32> {
    prop_oneof![Just(u32::MAX), 0..60u32]
}

/// A session on a folder of its own; logins are checked by a stand-in:
/// `alice@example.test` / `pw`.
struct Client {
    _dir: tempfile::TempDir,
    session: Session,
}

/// How far a session got with its input.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// It waits for more.
    No,
    /// It closed the connection or asked for TLS: nothing more is read.
    Yes,
}

impl Client {
    fn new() -> Client {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("no temporary folder: {e}"),
        };
        let settings = Settings {
            hostname: "mx.example.test".into(),
            data_dir: dir.path().to_owned(),
            tls_active: true,
            starttls_available: false,
            allow_plaintext_auth: false,
            input: LIMITS,
            max_errors: 20,
            max_login_failures: 3,
            spool: match SpoolDir::open(dir.path().join("spool"), 64) {
                Ok(spool) => spool,
                Err(e) => panic!("no spool folder: {e}"),
            },
            max_list_pattern: 1024,
            search: SearchLimits {
                max_keys: 1000,
                max_depth: 64,
            },
            shared: Arc::new(Shared::default()),
        };
        // One message in alice's INBOX, for FETCH, SEARCH and STORE to work on.
        let delivered = qs_mailstore::mailbox_path(dir.path(), "example.test", "alice")
            .and_then(|root| Mailbox::open(root, "mx"))
            .and_then(|mailbox| {
                mailbox.deliver(
                    &FolderName::inbox(),
                    b"From: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n",
                    "proptest",
                )
            });
        if let Err(e) = delivered {
            panic!("cannot deliver: {e}");
        }
        Client {
            _dir: dir,
            session: Session::new(settings),
        }
    }

    /// Runs the session until it waits for input; returns its output.
    fn run(&mut self) -> (Vec<u8>, Ended) {
        let mut out = Vec::new();
        loop {
            let action = self.session.progress();
            out.append(self.session.output());
            match action {
                Action::Flush => {}
                Action::NeedInput | Action::Idle => return (out, Ended::No),
                Action::StartTls | Action::Close => return (out, Ended::Yes),
                Action::Login(c) => {
                    let good = c.login == "alice@example.test" && c.password.expose() == b"pw";
                    self.session.login_done(if good {
                        LoginResult::Accepted(c.login)
                    } else {
                        LoginResult::Rejected
                    });
                }
            }
        }
    }
}

/// A command line without its line end (and without literals), as a client
/// writes it: a tag, a command and its arguments.
fn command_line() -> impl Strategy<Value = Vec<u8>> {
    let tag = prop::sample::select(vec!["a", "A1", "t.2", "*", "+", "", "x\"y"]);
    let command = prop::sample::select(vec![
        "CAPABILITY",
        "NOOP",
        "LOGIN alice@example.test pw",
        "LOGIN \"alice@example.test\" \"pw\"",
        "LOGIN alice@example.test wrong",
        "AUTHENTICATE PLAIN",
        "AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==",
        "SELECT INBOX",
        "EXAMINE INBOX",
        "CREATE Work",
        "CREATE \"&AOk-t&AOk-\"",
        "DELETE Work",
        "RENAME Work Play",
        "SUBSCRIBE Work",
        "LIST \"\" *",
        "LIST \"\" %",
        "LIST (SPECIAL-USE) \"\" *",
        "LSUB \"\" *",
        "STATUS INBOX (MESSAGES UIDNEXT UNSEEN)",
        "FETCH 1:* (FLAGS UID)",
        "UID FETCH 1:* (BODY.PEEK[HEADER] BINARY.SIZE[1])",
        "SEARCH ALL",
        "SEARCH OR (FROM x SUBJECT y) NOT TEXT z",
        "UID SEARCH 1:* UNSEEN",
        "STORE 1 +FLAGS (\\Seen)",
        "UID STORE 1:* FLAGS.SILENT ($Forwarded)",
        "COPY 1 Work",
        "UID MOVE 1 Work",
        "EXPUNGE",
        "UID EXPUNGE 1:*",
        "APPEND INBOX",
        "IDLE",
        "DONE",
        "ENABLE UTF8=ACCEPT",
        "NAMESPACE",
        "ID NIL",
        "ID (\"name\" \"x\")",
        "CHECK",
        "CLOSE",
        "UNSELECT",
        "STARTTLS",
        "LOGOUT",
        "XYZZY",
        "",
    ]);
    let argument = prop_oneof![
        6 => Just(""),
        1 => prop::sample::select(vec![
            " ", " *", " 0", " 4294967296", " \"\"", " ()", " (", ")", " \\", " NIL",
        ]),
    ];
    (tag, command, argument).prop_map(|(tag, command, argument)| {
        let mut line = String::new();
        if !tag.is_empty() {
            line.push_str(tag);
            line.push(' ');
        }
        line.push_str(command);
        line.push_str(argument);
        line.into_bytes()
    })
}

/// A command line with some of its bytes changed, inserted or removed.
fn mutated_line() -> impl Strategy<Value = Vec<u8>> {
    qs_testkit::mutated(command_line(), 2)
}

/// A complete line: a command, mutated or not, or random bytes; with no LF
/// inside and no literal announced, so that it must be answered on its own.
fn complete_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => command_line(),
        2 => mutated_line(),
        1 => prop::collection::vec(any::<u8>(), 0..60),
        1 => (100..130usize).prop_map(|n| vec![b'x'; n]),
    ]
    .prop_map(|mut line| {
        for b in &mut line {
            if *b == b'\n' || *b == b'{' {
                *b = b'x';
            }
        }
        line.extend_from_slice(b"\r\n");
        line
    })
}

/// Bytes that steer the guard and the parser: literals of every size and
/// kind, line ends of every kind, and commands.
fn steering_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(vec![
            &b"\r\n"[..], b"\n", b"\r", b"\0", b"{", b"}", b"{0}\r\n", b"{5}\r\n", b"{3+}\r\n",
            b"{40}\r\n", b"{41}\r\n", b"{40+}\r\n", b"{4096+}\r\n", b"{4097+}\r\n",
            b"{5000}\r\n", b"{5001}\r\n", b"{99999999999}\r\n", b"{007}\n", b"~{5}\r\n",
            b"a APPEND INBOX ", b"a LOGIN ", b"l LOGIN alice@example.test pw\r\n",
            b"p APPEND INBOX {70}\r\n", b"\n.\n", b"\r.\r",
        ])
        .prop_map(<[u8]>::to_vec),
        3 => command_line().prop_map(|mut l| {
            l.extend_from_slice(b"\r\n");
            l
        }),
        2 => prop::collection::vec(any::<u8>(), 0..40),
        1 => (100..130usize).prop_map(|n| vec![b'y'; n]),
    ]
}

fn steered_input() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(steering_piece(), 0..30).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_guard_never_passes_over_its_limits_random_bytes(
        input in prop::collection::vec(any::<u8>(), 0..4000),
        sizes in piece_sizes(600),
        logged_in in any::<bool>(),
        spool_above in spool_above(),
    ) {
        let whole = guard_all(&input, &[input.len().max(1)], logged_in, spool_above);
        let pieces = guard_all(&input, &sizes, logged_in, spool_above);
        // How the input was cut changes at most whether the parser must forget.
        let kinds = |v: &[Verdict]| -> Vec<String> {
            v.iter()
                .map(|v| match v {
                    Verdict::RefuseLiteral { tag, .. } => format!("refuse {tag:?}"),
                    Verdict::DroppedCommand { tag, .. } => format!("drop {tag:?}"),
                    other => format!("{other:?}"),
                })
                .collect()
        };
        prop_assert_eq!(kinds(&pieces), kinds(&whole));
    }

    #[test]
    fn the_guard_never_passes_over_its_limits_literals_and_commands(
        input in steered_input(),
        sizes in piece_sizes(600),
        logged_in in any::<bool>(),
        spool_above in spool_above(),
    ) {
        guard_all(&input, &sizes, logged_in, spool_above);
    }

    #[test]
    fn a_session_survives_any_bytes(input in steered_input(), sizes in piece_sizes(600)) {
        let mut client = Client::new();
        client.run();
        for piece in pieces(&input, &sizes) {
            client.session.feed(piece);
            if client.run().1 == Ended::Yes {
                break;
            }
        }
    }

    #[test]
    fn every_complete_line_is_answered(
        logged_in in any::<bool>(),
        lines in prop::collection::vec(complete_line(), 1..12),
        sizes in piece_sizes(600),
    ) {
        let mut client = Client::new();
        client.run();
        let login: &[&[u8]] = if logged_in {
            &[b"l LOGIN alice@example.test pw\r\n", b"s SELECT INBOX\r\n"]
        } else {
            &[]
        };
        for line in login.iter().copied().chain(lines.iter().map(Vec::as_slice)) {
            let mut answer = Vec::new();
            let mut ended = Ended::No;
            for piece in pieces(line, &sizes) {
                client.session.feed(piece);
                let (out, end) = client.run();
                answer.extend_from_slice(&out);
                ended = end;
                if ended == Ended::Yes {
                    break;
                }
            }
            if ended == Ended::Yes {
                break;
            }
            prop_assert!(
                answer.ends_with(b"\r\n"),
                "{:?} was not answered: {:?}",
                String::from_utf8_lossy(line),
                String::from_utf8_lossy(&answer)
            );
        }
    }
}
