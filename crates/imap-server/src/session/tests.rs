//! Byte transcripts of whole sessions, on a real Maildir in a temporary folder. Logins
//! are checked by a stand-in: `alice@example.test` / `pw`.

use qs_mailstore::Delivery;

use super::*;

const USER: &str = "alice@example.test";

struct Harness {
    _tmp: tempfile::TempDir,
    settings: Settings,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(|_| {})
    }

    fn with(change: impl FnOnce(&mut Settings)) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            hostname: "mx.example.test".into(),
            data_dir: tmp.path().to_owned(),
            tls_active: true,
            starttls_available: false,
            allow_plaintext_auth: false,
            input: InputLimits {
                max_line: 8192,
                max_literal: 100_000,
                max_literal_before_login: 1000,
                login_budget: 4096,
            },
            max_errors: 5,
            max_login_failures: 3,
            // Messages over 64 octets are spooled, so APPENDs here are read back
            // from a file.
            spool: SpoolDir::open(tmp.path().join("spool"), 64).unwrap(),
            max_list_pattern: 1024,
            search: SearchLimits {
                max_keys: 1000,
                max_depth: 64,
            },
            shared: Arc::new(Shared::default()),
        };
        change(&mut settings);
        Harness {
            _tmp: tmp,
            settings,
        }
    }

    fn mailbox(&self) -> Mailbox {
        let root =
            qs_mailstore::mailbox_path(&self.settings.data_dir, "example.test", "alice").unwrap();
        Mailbox::open(root, "mx").unwrap()
    }

    fn deliver(&self, body: &str) {
        let mailbox = self.mailbox();
        let key = format!("{body}:{}", crate::encode::now_secs());
        let message = format!(
            "From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: {body}\r\nDate: Mon, 7 Jul 2025 10:00:00 +0000\r\n\r\n{body} text\r\n"
        );
        match mailbox
            .deliver(&FolderName::inbox(), message.as_bytes(), &key)
            .unwrap()
        {
            Delivery::Stored { .. } => {}
            Delivery::AlreadyDelivered => panic!("delivered twice"),
        }
    }

    fn session(&self) -> Client {
        let mut client = Client {
            session: Session::new(self.settings.clone()),
            state: Step::Open,
        };
        let greeting = client.run();
        assert!(
            greeting
                .to_ascii_uppercase()
                .starts_with("* OK [CAPABILITY IMAP4REV1"),
            "{greeting}"
        );
        client
    }

    fn logged_in(&self) -> Client {
        let mut c = self.session();
        c.ok("a LOGIN alice@example.test pw");
        c
    }
}

#[derive(Debug, PartialEq)]
enum Step {
    Open,
    Idle,
    StartTls,
    Closed,
}

struct Client {
    session: Session,
    state: Step,
}

impl Client {
    /// Runs the session until it waits, answering logins; returns the output.
    fn run(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let action = self.session.progress();
            out.append(self.session.output());
            match action {
                Action::Flush => continue,
                Action::NeedInput => {
                    self.state = Step::Open;
                    break;
                }
                Action::Idle => {
                    self.state = Step::Idle;
                    break;
                }
                Action::StartTls => {
                    self.state = Step::StartTls;
                    break;
                }
                Action::Close => {
                    self.state = Step::Closed;
                    break;
                }
                Action::Login(c) => {
                    let good = c.login == USER && c.password.expose() == b"pw";
                    self.session.login_done(if good {
                        LoginResult::Accepted(USER.into())
                    } else {
                        LoginResult::Rejected
                    });
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn send(&mut self, bytes: &str) -> String {
        self.session.feed(bytes.as_bytes());
        self.run()
    }

    /// Sends a command line; returns every line of the answer.
    fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n"))
    }

    /// Sends a command and checks the tagged answer is OK.
    fn ok(&mut self, line: &str) -> String {
        let out = self.cmd(line);
        let tag = line.split(' ').next().unwrap();
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{tag} OK"))),
            "{line}\n{out}"
        );
        out
    }
}

#[test]
fn without_tls_login_is_disabled() {
    let h = Harness::with(|s| {
        s.tls_active = false;
        s.starttls_available = true;
    });
    let mut c = h.session();
    let caps = c.cmd("1 CAPABILITY");
    assert!(
        caps.contains("STARTTLS") && caps.contains("LOGINDISABLED"),
        "{caps}"
    );
    assert!(!caps.contains("AUTH=PLAIN"), "{caps}");
    let out = c.cmd("2 LOGIN alice@example.test pw");
    assert!(out.starts_with("2 NO [PRIVACYREQUIRED]"), "{out}");
    let out = c.cmd("3 AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==");
    assert!(out.starts_with("3 NO [PRIVACYREQUIRED]"), "{out}");
    let out = c.cmd("4 SELECT INBOX");
    assert!(out.starts_with("4 BAD"), "{out}");
    // STARTTLS: everything after it in the same packet is never read.
    let out = c.send("5 STARTTLS\r\n6 LOGIN alice@example.test pw\r\n");
    assert_eq!(out, "5 OK begin TLS negotiation now\r\n");
    assert_eq!(c.state, Step::StartTls);
    let mut tls = Client {
        session: Session::after_starttls(Settings {
            tls_active: true,
            starttls_available: false,
            ..h.settings.clone()
        }),
        state: Step::Open,
    };
    assert_eq!(tls.run(), "", "no greeting after STARTTLS");
    let caps = tls.cmd("7 CAPABILITY");
    assert!(
        caps.contains("AUTH=PLAIN") && !caps.contains("STARTTLS"),
        "{caps}"
    );
    tls.ok("8 LOGIN alice@example.test pw");
}

#[test]
fn plaintext_login_can_be_allowed() {
    let h = Harness::with(|s| {
        s.tls_active = false;
        s.allow_plaintext_auth = true;
    });
    let mut c = h.session();
    let out = c.ok("1 LOGIN \"alice@example.test\" {2+}\r\npw");
    assert!(out.contains("[CAPABILITY IMAP4rev1"), "{out}");
    assert!(c.session.user() == Some(USER));
}

#[test]
fn authenticate_plain_with_and_without_initial_response() {
    let h = Harness::new();
    let mut c = h.session();
    // \0alice@example.test\0pw
    c.ok("1 AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==");
    let mut c = h.session();
    let out = c.cmd("1 AUTHENTICATE PLAIN");
    assert_eq!(out, "+ \r\n");
    let out = c.cmd("AGFsaWNlQGV4YW1wbGUudGVzdABwdw==");
    assert!(out.starts_with("1 OK"), "{out}");
    // Cancelled, and a wrong password.
    let mut c = h.session();
    assert_eq!(c.cmd("2 AUTHENTICATE PLAIN"), "+ \r\n");
    assert!(c.cmd("*").starts_with("2 BAD"));
    let out = c.cmd("3 AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB4eA==");
    assert!(out.starts_with("3 NO [AUTHENTICATIONFAILED]"), "{out}");
    let out = c.cmd("4 AUTHENTICATE CRAM-MD5");
    assert!(out.starts_with("4 NO"), "{out}");
    c.ok("5 NOOP");
}

#[test]
fn three_failed_logins_close_the_session() {
    let h = Harness::new();
    let mut c = h.session();
    for i in 1..=3 {
        let out = c.cmd(&format!("{i} LOGIN alice@example.test wrong"));
        assert!(
            out.starts_with(&format!("{i} NO [AUTHENTICATIONFAILED]")),
            "{out}"
        );
    }
    assert_eq!(c.state, Step::Closed);
}

#[test]
fn select_fetch_store_search_expunge() {
    let h = Harness::new();
    h.deliver("one");
    h.deliver("two");
    h.deliver("three");
    let mut c = h.logged_in();
    let out = c.ok("s SELECT INBOX");
    assert!(out.contains("* 3 EXISTS\r\n"), "{out}");
    assert!(out.contains("* 3 RECENT\r\n"), "{out}");
    assert!(out.contains("* OK [UNSEEN 1]"), "{out}");
    assert!(out.contains("* OK [UIDNEXT 4]"), "{out}");
    assert!(
        out.contains(
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded \\*)]"
        ),
        "{out}"
    );
    assert!(out.contains("s OK [READ-WRITE]"), "{out}");

    let out = c.ok("f1 FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)");
    assert!(out.contains("* 1 FETCH (UID 1 RFC822.SIZE "), "{out}");
    assert!(out.contains("ENVELOPE (\"Mon, 7 Jul 2025 10:00:00 +0000\" \"one\" ((\"Bob\" NIL \"bob\" \"example.test\"))"), "{out}");
    assert!(out.contains("FLAGS (\\Recent))"), "{out}");
    assert_eq!(out.matches("FETCH (").count(), 3);

    // BODY[] marks \Seen and says so; BODY.PEEK does not.
    let out = c.ok("f2 FETCH 2 BODY.PEEK[HEADER.FIELDS (SUBJECT)]");
    assert!(
        out.contains("BODY[HEADER.FIELDS (SUBJECT)] {16}\r\nSubject: two\r\n\r\n"),
        "{out}"
    );
    assert!(!out.contains("FLAGS"), "{out}");
    let out = c.ok("f3 FETCH 2 (BODY[TEXT] BODY[]<0.4>)");
    assert!(out.contains("BODY[TEXT] {10}\r\ntwo text\r\n"), "{out}");
    assert!(out.contains("BODY[]<0> {4}\r\nFrom"), "{out}");
    assert!(out.contains("FLAGS (\\Seen \\Recent)"), "{out}");

    let out = c.ok("t1 STORE 1 +FLAGS (\\Flagged $Work)");
    assert!(
        out.contains("* 1 FETCH (FLAGS (\\Flagged \\Recent $Work))"),
        "{out}"
    );
    let out = c.ok("t2 UID STORE 3 +FLAGS.SILENT (\\Deleted)");
    assert!(!out.contains("FETCH"), "{out}");
    let out = c.ok("t3 STORE 1 -FLAGS ($Work)");
    assert!(
        out.contains("* 1 FETCH (FLAGS (\\Flagged \\Recent))"),
        "{out}"
    );

    assert!(c.ok("q1 SEARCH FLAGGED").contains("* SEARCH 1\r\n"));
    assert!(c.ok("q2 UID SEARCH UNSEEN").contains("* SEARCH 1 3\r\n"));
    assert!(c.ok("q3 SEARCH SUBJECT tw").contains("* SEARCH 2\r\n"));
    assert!(
        c.ok("q4 SEARCH OR BODY three DELETED")
            .contains("* SEARCH 3\r\n")
    );
    assert!(c.ok("q5 SEARCH NOT FROM bob").contains("* SEARCH\r\n"));
    assert!(
        c.ok("q6 SEARCH SENTON 7-Jul-2025 2:3")
            .contains("* SEARCH 2 3\r\n")
    );
    assert!(
        c.ok("q7 SEARCH HEADER To alice LARGER 10")
            .contains("* SEARCH 1 2 3\r\n")
    );
    assert!(
        c.ok("q8 SEARCH CHARSET UTF-8 TEXT \"ONE TEXT\"")
            .contains("* SEARCH 1\r\n")
    );
    let out = c.cmd("q9 SEARCH CHARSET KOI8-R ALL");
    assert!(out.starts_with("q9 NO [BADCHARSET"), "{out}");

    let out = c.ok("e EXPUNGE");
    assert!(out.contains("* 3 EXPUNGE\r\n"), "{out}");
    let out = c.cmd("f4 FETCH 3 FLAGS");
    assert!(out.starts_with("f4 BAD"), "{out}");
    let out = c.ok("f5 UID FETCH 1:* FLAGS");
    assert!(
        out.contains("* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent))"),
        "{out}"
    );
    c.ok("c CLOSE");
    let out = c.cmd("f6 FETCH 1 FLAGS");
    assert!(out.starts_with("f6 BAD"), "{out}");
}

#[test]
fn uids_and_flags_survive_a_new_session() {
    let h = Harness::new();
    h.deliver("one");
    h.deliver("two");
    let mut c = h.logged_in();
    let out = c.ok("s SELECT INBOX");
    let validity = out
        .lines()
        .find_map(|l| l.strip_prefix("* OK [UIDVALIDITY "))
        .and_then(|l| l.split(']').next())
        .unwrap()
        .to_owned();
    c.ok("t UID STORE 2 +FLAGS (\\Answered Later)");
    c.ok("l LOGOUT");
    let mut c = h.logged_in();
    let out = c.ok("s EXAMINE INBOX");
    assert!(out.contains(&format!("[UIDVALIDITY {validity}]")), "{out}");
    assert!(
        out.contains("* 0 RECENT"),
        "recent in one session only: {out}"
    );
    assert!(out.contains("s OK [READ-ONLY]"), "{out}");
    let out = c.ok("f UID FETCH 1:* (FLAGS)");
    assert!(
        out.contains("* 2 FETCH (UID 2 FLAGS (\\Answered Later))"),
        "{out}"
    );
    let out = c.cmd("t STORE 1 +FLAGS (\\Seen)");
    assert!(out.starts_with("t NO [READ-ONLY]"), "{out}");
}

#[test]
fn two_sessions_see_each_other() {
    let h = Harness::new();
    h.deliver("one");
    h.deliver("two");
    let mut a = h.logged_in();
    let mut b = h.logged_in();
    let out = a.ok("a1 SELECT INBOX");
    assert!(out.contains("* 2 RECENT"), "{out}");
    let out = b.ok("b1 SELECT INBOX");
    assert!(
        out.contains("* 0 RECENT"),
        "the first session took them: {out}"
    );

    a.ok("a2 STORE 1 +FLAGS (\\Seen \\Deleted)");
    let out = b.ok("b2 NOOP");
    assert!(
        out.contains("* 1 FETCH (FLAGS (\\Deleted \\Seen))"),
        "{out}"
    );

    h.deliver("three");
    let out = b.ok("b3 NOOP");
    assert!(out.contains("* 3 EXISTS\r\n* 1 RECENT\r\n"), "{out}");
    let out = a.ok("a3 NOOP");
    // The new one is b's; a still has its own two.
    assert!(out.contains("* 3 EXISTS\r\n* 2 RECENT\r\n"), "{out}");

    a.ok("a4 EXPUNGE");
    // FETCH must not move sequence numbers: the expunge waits, and the message that
    // is gone is answered from what is known of it (RFC 2180 §4.1)...
    let out = b.cmd("b4 FETCH 1:2 FLAGS");
    assert!(!out.contains("EXPUNGE\r\n"), "{out}");
    assert!(
        out.contains("* 1 FETCH (FLAGS (\\Deleted \\Seen))"),
        "{out}"
    );
    assert!(out.contains("* 2 FETCH (FLAGS ("), "{out}");
    assert!(out.ends_with("b4 OK FETCH completed\r\n"), "{out}");
    // ... unless its text is asked for: the others are answered, the command is
    // NO [EXPUNGEISSUED] (RFC 5530) in the words clients know.
    let out = b.cmd("b4b FETCH 1:2 BODY.PEEK[TEXT]");
    assert!(!out.contains("* 1 FETCH"), "{out}");
    assert!(out.contains("* 2 FETCH (BODY[TEXT] {"), "{out}");
    assert!(
        out.ends_with("b4b NO [EXPUNGEISSUED] Some of the requested messages no longer exist.\r\n"),
        "{out}"
    );
    let out = b.ok("b5 NOOP");
    assert!(out.contains("* 1 EXPUNGE\r\n"), "{out}");
    let out = b.ok("b6 FETCH 1:* UID");
    assert!(
        out.contains("* 1 FETCH (UID 2)") && out.contains("* 2 FETCH (UID 3)"),
        "{out}"
    );
}

/// Two sessions on one INBOX of three messages; `a` has expunged the first, which
/// `b` has not been told of.
fn expunged_under_b(h: &Harness) -> (Client, Client) {
    h.deliver("one");
    h.deliver("two");
    h.deliver("three");
    let mut a = h.logged_in();
    let mut b = h.logged_in();
    a.ok("a1 SELECT INBOX");
    b.ok("b1 SELECT INBOX");
    a.ok("a2 STORE 1 +FLAGS.SILENT (\\Deleted)");
    let out = a.ok("a3 EXPUNGE");
    assert!(out.contains("* 1 EXPUNGE\r\n"), "{out}");
    (a, b)
}

#[test]
fn expunges_wait_while_pipelined_commands_do() {
    let h = Harness::new();
    let (_a, mut b) = expunged_under_b(&h);
    // The client sent a FETCH behind the NOOP: had the NOOP told of the expunge,
    // the FETCH's sequence numbers would name other messages than the client meant.
    let out = b.send("b2 NOOP\r\nb3 FETCH 3 (UID)\r\n");
    assert!(!out.contains("EXPUNGE"), "{out}");
    assert!(out.contains("b2 OK NOOP completed\r\n"), "{out}");
    assert!(out.contains("* 3 FETCH (UID 3)\r\n"), "{out}");
    // The same for UID commands, which may tell of expunges otherwise.
    let out = b.send("b4 UID FETCH 1:* (FLAGS)\r\nb5 STORE 3 +FLAGS.SILENT (\\Seen)\r\n");
    assert!(!out.contains("EXPUNGE"), "{out}");
    assert!(out.contains("b5 OK STORE completed\r\n"), "{out}");
    // Alone, the NOOP tells.
    let out = b.ok("b6 NOOP");
    assert!(out.contains("* 1 EXPUNGE\r\n"), "{out}");
    let out = b.ok("b7 FETCH 2 (UID)");
    assert!(out.contains("* 2 FETCH (UID 3)\r\n"), "{out}");
}

#[test]
fn a_fetch_that_asks_for_the_uid_first_is_no_uid_fetch() {
    let h = Harness::new();
    let (_a, mut b) = expunged_under_b(&h);
    let out = b.ok("b2 FETCH 1:3 (UID FLAGS)");
    assert!(!out.contains("EXPUNGE"), "{out}");
    // The expunged message is answered from what is known of it.
    assert!(
        out.contains("* 1 FETCH (UID 1 FLAGS (\\Deleted))\r\n"),
        "{out}"
    );
    assert!(out.contains("* 3 FETCH (UID 3 FLAGS ())\r\n"), "{out}");
    // A UID FETCH may tell of it: before its answer, so that the numbers agree.
    let out = b.ok("b3 UID FETCH 1:* (FLAGS)");
    assert!(out.starts_with("* 1 EXPUNGE\r\n"), "{out}");
    assert!(out.contains("* 2 FETCH (UID 3 FLAGS ())\r\n"), "{out}");
}

#[test]
fn a_store_on_a_message_expunged_meanwhile_answers_its_flags() {
    let h = Harness::new();
    let (_a, mut b) = expunged_under_b(&h);
    // As Dovecot: the STORE succeeds on what the client sees, and a client that
    // tracks flags gets the new flags of every message it named (RFC 2180 §4.2).
    let out = b.cmd("b2 STORE 1:2 +FLAGS (\\Flagged)");
    assert!(!out.contains("EXPUNGE"), "{out}");
    assert!(
        out.contains("* 1 FETCH (FLAGS (\\Flagged \\Deleted))\r\n"),
        "{out}"
    );
    assert!(out.contains("* 2 FETCH (FLAGS (\\Flagged))\r\n"), "{out}");
    assert!(out.ends_with("b2 OK STORE completed\r\n"), "{out}");
    let out = b.ok("b3 FETCH 1 FLAGS");
    assert!(
        out.contains("* 1 FETCH (FLAGS (\\Flagged \\Deleted))\r\n"),
        "{out}"
    );
    let out = b.ok("b4 NOOP");
    assert!(out.contains("* 1 EXPUNGE\r\n"), "{out}");
    let out = b.ok("b5 FETCH 1 (UID FLAGS)");
    assert!(
        out.contains("* 1 FETCH (UID 2 FLAGS (\\Flagged))\r\n"),
        "{out}"
    );
}

#[test]
fn a_fetch_announces_a_keyword_another_session_defined() {
    let h = Harness::new();
    h.deliver("one");
    let mut a = h.logged_in();
    let mut b = h.logged_in();
    a.ok("a1 SELECT INBOX");
    b.ok("b1 SELECT INBOX");
    a.ok("a2 STORE 1 +FLAGS.SILENT ($Label4)");
    // No NOOP first: the FETCH itself reads the new keyword.
    let out = b.ok("b2 FETCH 1 FLAGS");
    let flags = out.find("* FLAGS (").expect(&out);
    let fetch = out.find("* 1 FETCH (FLAGS ($Label4))").expect(&out);
    assert!(flags < fetch, "{out}");
}

#[test]
fn a_new_keyword_is_announced_before_a_fetch_names_it() {
    let h = Harness::new();
    h.deliver("one");
    let mut a = h.logged_in();
    let mut b = h.logged_in();
    a.ok("a1 SELECT INBOX");
    b.ok("b1 SELECT INBOX");
    let announced_first = |out: &str| {
        let flags = out.find("* FLAGS (").expect(out);
        let permanent = out.find("* OK [PERMANENTFLAGS (").expect(out);
        let fetch = out.find("* 1 FETCH (FLAGS (").expect(out);
        assert!(flags < fetch && permanent < fetch, "{out}");
        assert!(out[flags..permanent].contains("$Label3"), "{out}");
    };
    // The session that defines it, in its own STORE's answer.
    announced_first(&a.ok("a2 STORE 1 +FLAGS ($Label3)"));
    // Another session, when it learns of the change.
    announced_first(&b.ok("b2 NOOP"));
}

#[test]
fn idle_reports_new_mail_and_ends_with_done() {
    let h = Harness::new();
    let mut c = h.logged_in();
    c.ok("s SELECT INBOX");
    let out = c.cmd("i IDLE");
    assert_eq!(out, "+ idling\r\n");
    assert_eq!(c.state, Step::Idle);
    assert!(c.session.idle_folder().is_some());
    h.deliver("late");
    c.session.idle_changed();
    let out = c.run();
    assert_eq!(out, "* 1 EXISTS\r\n* 1 RECENT\r\n");
    assert_eq!(c.state, Step::Idle);
    let out = c.cmd("DONE");
    assert_eq!(out, "i OK IDLE terminated\r\n");
    assert_eq!(c.state, Step::Open);
    // IDLE before login is refused.
    let mut d = h.session();
    assert!(d.cmd("x IDLE").starts_with("x BAD"));
}

#[test]
fn a_large_append_is_spooled_and_stored_whole() {
    let h = Harness::new();
    let mut c = h.logged_in();
    let body: String = (0..2000).map(|i| format!("line {i}\r\n")).collect();
    let message = format!("Subject: big\r\n\r\n{body}");
    let len = message.len();
    // The parser is told of an empty literal and asks for it as for any other.
    assert_eq!(c.cmd(&format!("ap APPEND INBOX {{{len}}}")), "+ ...\r\n");
    let mut out = String::new();
    for piece in message.as_bytes().chunks(1000) {
        out.push_str(&c.send(std::str::from_utf8(piece).unwrap()));
    }
    assert_eq!(out, "");
    let out = c.send("\r\n");
    assert!(out.starts_with("ap OK [APPENDUID "), "{out}");
    // Non-synchronizing (LITERAL+) and literal8.
    let small = format!("Subject: small\r\n\r\n{}\r\n", "x".repeat(100));
    let out = c.send(&format!(
        "ap2 APPEND INBOX {{{}+}}\r\n{small}\r\n",
        small.len()
    ));
    assert!(out.starts_with("ap2 OK [APPENDUID "), "{out}");
    assert_eq!(c.cmd(&format!("ap3 APPEND INBOX ~{{{len}}}")), "+ ...\r\n");
    let out = c.send(&format!("{message}\r\n"));
    assert!(out.starts_with("ap3 OK [APPENDUID "), "{out}");

    c.ok("s SELECT INBOX");
    let out = c.ok("f FETCH 1:3 (RFC822.SIZE BODY.PEEK[])");
    assert!(
        out.contains(&format!("1 FETCH (RFC822.SIZE {len} ")),
        "{out}"
    );
    assert!(
        out.contains(&format!("3 FETCH (RFC822.SIZE {len} ")),
        "{out}"
    );
    assert_eq!(out.matches(message.as_str()).count(), 2);
    assert!(out.contains(&small));

    // A large literal that is not the message is refused; the session goes on.
    let name = "x".repeat(100);
    assert_eq!(c.cmd("ap4 APPEND {100}"), "+ ...\r\n");
    assert_eq!(c.send(&format!("{name} {{5}}\r\n")), "+ ...\r\n");
    let out = c.send("hello\r\n");
    assert!(
        out.starts_with("ap4 BAD") || out.starts_with("ap4 NO"),
        "{out}"
    );
    let out = c.ok("n NOOP");
    assert!(!out.contains("EXISTS"), "{out}");
}

#[test]
fn append_copy_move_with_uidplus() {
    let h = Harness::new();
    let mut c = h.logged_in();
    let validity_sent = {
        let out = c.ok("st STATUS Sent (UIDVALIDITY UIDNEXT MESSAGES)");
        assert!(out.contains("UIDNEXT 1 MESSAGES 0)"), "{out}");
        out.split("UIDVALIDITY ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    // A synchronizing literal gets a continuation request.
    let out = c.cmd("ap APPEND Sent (\\Seen) \"05-Jan-2024 10:00:00 +0100\" {23}");
    assert_eq!(out, "+ ...\r\n");
    let out = c.send("Subject: hi\r\n\r\nhello\r\n\r\n");
    assert!(
        out.starts_with(&format!("ap OK [APPENDUID {validity_sent} 1]")),
        "{out}"
    );
    let out = c.cmd("ap2 APPEND Nowhere {1+}\r\nx");
    assert!(out.starts_with("ap2 NO [TRYCREATE]"), "{out}");

    c.ok("s SELECT Sent");
    let out = c.ok("f FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE)");
    assert!(
        out.contains("INTERNALDATE \" 5-Jan-2024 09:00:00 +0000\""),
        "{out}"
    );
    assert!(out.contains("RFC822.SIZE 23"), "{out}");
    // Appended, then selected: new to this session (RFC 3501 §2.3.2).
    assert!(out.contains("FLAGS (\\Seen \\Recent)"), "{out}");

    c.ok("cr CREATE Archive");
    let out = c.ok("cp COPY 1 Archive");
    assert!(out.contains("[COPYUID "), "{out}");
    assert!(out.contains(" 1 1] COPY completed"), "{out}");
    let out = c.ok("mv UID MOVE 1 Trash");
    assert!(
        out.contains("* OK [COPYUID ") && out.contains(" 1 1] moved\r\n"),
        "{out}"
    );
    assert!(out.contains("* 1 EXPUNGE\r\n"), "{out}");
    let out = c.ok("st2 STATUS Archive (MESSAGES UNSEEN)");
    assert!(out.contains("(MESSAGES 1 UNSEEN 0)"), "{out}");
    let out = c.cmd("cp2 COPY 1:* Nowhere");
    assert!(
        out.starts_with("cp2 BAD") || out.starts_with("cp2 NO"),
        "{out}"
    );
}

#[test]
fn folders_are_created_listed_renamed_and_deleted() {
    let h = Harness::new();
    let mut c = h.logged_in();
    let out = c.ok("l LIST \"\" *");
    assert!(
        out.starts_with("* LIST (\\HasNoChildren) \".\" \"INBOX\"\r\n"),
        "{out}"
    );
    assert!(
        out.contains("* LIST (\\HasNoChildren \\Sent) \".\" \"Sent\"\r\n"),
        "{out}"
    );
    assert!(out.contains("\\Trash) \".\" \"Trash\""), "{out}");
    let out = c.ok("d LIST \"\" \"\"");
    assert!(out.contains("* LIST (\\Noselect) \".\" \"\""), "{out}");

    c.ok("c1 CREATE Projekte.B&APw-ro");
    c.ok("c2 CREATE \"Tom &- Jerry\"");
    assert!(
        c.cmd("c2b CREATE \"Tom & Jerry\"")
            .starts_with("c2b NO [CANNOT]")
    );
    assert!(c.cmd("c3 CREATE INBOX").starts_with("c3 NO"));
    assert!(c.cmd("c4 CREATE Tom").starts_with("c4 OK"));
    assert!(c.cmd("c5 CREATE Tom").starts_with("c5 NO [ALREADYEXISTS]"));
    let out = c.ok("l2 LIST \"\" %");
    assert!(
        out.contains("* LIST (\\Noselect \\HasChildren) \".\" \"Projekte\""),
        "{out}"
    );
    assert!(out.contains("\"Tom &- Jerry\""), "{out}");
    assert!(!out.contains("B&APw-ro"), "{out}");
    let out = c.ok("l3 LIST Projekte. %");
    assert!(
        out.contains("* LIST (\\HasNoChildren) \".\" \"Projekte.B&APw-ro\""),
        "{out}"
    );

    c.ok("r RENAME Projekte.B&APw-ro Archiv.2025");
    let out = c.ok("l4 LIST \"\" Archiv*");
    assert!(out.contains("\"Archiv.2025\""), "{out}");
    assert!(
        c.cmd("r2 RENAME Nope Other")
            .starts_with("r2 NO [NONEXISTENT]")
    );

    h.deliver("inbox mail");
    c.ok("r3 RENAME INBOX Old");
    let out = c.ok("st STATUS Old (MESSAGES)");
    assert!(out.contains("(MESSAGES 1)"), "{out}");
    let out = c.ok("st2 STATUS INBOX (MESSAGES)");
    assert!(out.contains("(MESSAGES 0)"), "{out}");

    c.ok("x DELETE Old");
    assert!(c.cmd("x2 DELETE Old").starts_with("x2 NO [NONEXISTENT]"));
    assert!(c.cmd("x3 DELETE INBOX").starts_with("x3 NO"));
    assert!(c.cmd("x4 SELECT ../../etc").starts_with("x4 NO"));

    c.ok("u1 SUBSCRIBE Archiv.2025");
    let out = c.ok("u2 LSUB \"\" *");
    assert!(out.contains("* LSUB () \".\" \"Archiv.2025\""), "{out}");
    assert!(out.contains("* LSUB () \".\" \"INBOX\""), "{out}");
    c.ok("u3 UNSUBSCRIBE Archiv.2025");
    assert!(!c.ok("u4 LSUB \"\" Archiv*").contains("2025"));
}

#[test]
fn namespace_id_enable_unselect() {
    let h = Harness::new();
    let mut c = h.logged_in();
    assert!(
        c.ok("n NAMESPACE")
            .contains("* NAMESPACE ((\"\" \".\")) NIL NIL")
    );
    assert!(
        c.ok("i ID (\"name\" \"test\")")
            .contains("* ID (\"name\" \"Quicksilver\"")
    );
    assert!(c.ok("e ENABLE CONDSTORE").contains("* ENABLED"));
    c.ok("s SELECT INBOX");
    c.ok("u UNSELECT");
    assert!(c.cmd("f FETCH 1 FLAGS").starts_with("f BAD"));
    let caps = c.ok("c CAPABILITY");
    for cap in [
        "IDLE",
        "UIDPLUS",
        "MOVE",
        "SPECIAL-USE",
        "LITERAL+",
        "APPENDLIMIT=100000",
        "CHILDREN",
        "UNSELECT",
        "NAMESPACE",
        "ID",
        "ENABLE",
        "SASL-IR",
    ] {
        assert!(caps.contains(cap), "{cap}: {caps}");
    }
    assert!(!caps.contains("AUTH=PLAIN"), "{caps}");
}

#[test]
fn bad_input_is_answered_and_counted() {
    let h = Harness::new();
    let mut c = h.session();
    let out = c.cmd("1 FROB");
    assert!(out.starts_with("1 BAD"), "{out}");
    let out = c.cmd("garbage");
    assert!(
        out.starts_with("* BAD") || out.starts_with("garbage BAD"),
        "{out}"
    );
    // A literal too big before login is refused before it is sent.
    let out = c.cmd("2 LOGIN {5000}");
    assert!(out.starts_with("2 NO [TOOBIG]"), "{out}");
    // A non-synchronizing literal over the limit is read, dropped and refused.
    let out = c.send(&format!("3 LOGIN {{5000+}}\r\n{} x\r\n", "y".repeat(5000)));
    assert!(
        out.starts_with("* BYE") || out.contains("3 BAD [TOOBIG]"),
        "{out}"
    );
    // The fifth error closes the session.
    let mut d = h.session();
    for i in 0..5 {
        d.cmd(&format!("{i} NOPE"));
    }
    assert_eq!(d.state, Step::Closed);
}

#[test]
fn the_login_budget_ends_a_chatty_client() {
    let h = Harness::new();
    let mut c = h.session();
    let mut out = String::new();
    for i in 0..1000 {
        out += &c.cmd(&format!("{i} CAPABILITY"));
        if c.state == Step::Closed {
            break;
        }
    }
    assert_eq!(c.state, Step::Closed);
    assert!(
        out.ends_with("* BYE too much data before login\r\n"),
        "{}",
        &out[out.len() - 200..]
    );
}

#[test]
fn fetch_of_many_messages_comes_in_steps() {
    let h = Harness::new();
    let mailbox = h.mailbox();
    let big = format!("Subject: big\r\n\r\n{}\r\n", "z".repeat(20_000));
    for i in 0..10 {
        mailbox
            .deliver(&FolderName::inbox(), big.as_bytes(), &format!("big{i}"))
            .unwrap();
    }
    let mut c = h.logged_in();
    c.ok("s SELECT INBOX");
    c.session.feed(b"f FETCH 1:* BODY.PEEK[]\r\n");
    let mut flushes = 0;
    let mut total = 0;
    loop {
        let action = c.session.progress();
        total += c.session.output().len();
        assert!(
            c.session.output().len() < FLUSH_AT + 30_000,
            "output bounded"
        );
        c.session.output().clear();
        match action {
            Action::Flush => flushes += 1,
            Action::NeedInput => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(flushes >= 2, "{flushes}");
    assert!(total > 200_000);
}

#[test]
fn random_bytes_never_panic_and_stay_bounded() {
    let h = Harness::new();
    h.deliver("one");
    // A small xorshift: the same bytes every run.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pieces: [&[u8]; 12] = [
        b"a LOGIN alice@example.test pw\r\n",
        b"b SELECT INBOX\r\n",
        b"c FETCH 1:* (BODY[1.MIME] BODYSTRUCTURE ENVELOPE BODY.PEEK[HEADER.FIELDS.NOT (x)]<0.10>)\r\n",
        b"{5}\r\n",
        b"{99999999+}\r\n",
        b"\r\n",
        b" (\"",
        b"d UID STORE * +FLAGS (\\Seen)\r\n",
        b"e SEARCH OR NOT (",
        b"f IDLE\r\nDONE\r\n",
        b"\x00\xff\x7f",
        b"g APPEND INBOX {3+}\r\nabc\r\n",
    ];
    for round in 0..200 {
        let mut c = Client {
            session: Session::new(h.settings.clone()),
            state: Step::Open,
        };
        c.run();
        for _ in 0..40 {
            let n = next();
            let piece = pieces[(n % pieces.len() as u64) as usize];
            let mut bytes = piece.to_vec();
            if n & 0x100 != 0 {
                // Mangle a byte.
                let at = (n >> 16) as usize % bytes.len();
                bytes[at] = (n >> 32) as u8;
            }
            c.session.feed(&bytes);
            let out = c.run();
            assert!(out.len() < 1 << 20, "round {round}");
            if c.state == Step::Closed || c.state == Step::StartTls {
                break;
            }
        }
    }
}

#[test]
fn binary_fetch_decodes_parts_and_append_takes_literal8() {
    let h = Harness::new();
    let mut c = h.logged_in();
    let out = c.ok("c CAPABILITY");
    assert!(out.contains(" BINARY"), "{out}");
    // Parts in base64 (with a NUL), quoted-printable, and an encoding nobody knows.
    let message = "From: bob@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
        --b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAGJpbgE=\r\n\
        --b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\ncaf=E9 =\r\nau lait\r\n\
        --b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n\
        --b--\r\n";
    h.mailbox()
        .deliver(&FolderName::inbox(), message.as_bytes(), "Q1:alice")
        .unwrap();
    c.ok("s SELECT INBOX");

    let out = c.ok("f FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1] BINARY.SIZE[2])");
    assert!(out.contains("BINARY[1] ~{5}\r\n\0bin\u{1}"), "{out:?}");
    assert!(out.contains("BINARY.SIZE[1] 5"), "{out}");
    assert!(out.contains("BINARY.SIZE[2] 12"), "{out}");
    assert!(!out.contains("FLAGS"), "PEEK leaves \\Seen alone: {out}");
    let out = c.ok("f2 FETCH 1 (BINARY.PEEK[2]<4.3>)");
    assert!(out.contains("BINARY[2]<4> {3}\r\n au)"), "{out:?}");
    // The whole message is given as stored.
    let out = c.ok("f3 FETCH 1 (BINARY.SIZE[])");
    assert!(
        out.contains(&format!("BINARY.SIZE[] {}", message.len())),
        "{out}"
    );

    let out = c.cmd("f4 FETCH 1 (BINARY[3])");
    assert!(
        out.starts_with("f4 NO [UNKNOWN-CTE]") && out.contains("x-uuencode"),
        "{out}"
    );
    let out = c.ok("fl FETCH 1 FLAGS");
    assert!(!out.contains("Seen"), "a failed FETCH marks nothing: {out}");
    let out = c.ok("f5 FETCH 1 (BINARY[2])");
    assert!(out.contains("FLAGS (\\Seen \\Recent)"), "{out}");

    // APPEND takes a literal8, as RFC 3516 asks of a server that offers BINARY.
    let out = c.cmd("ap APPEND INBOX ~{17}");
    assert_eq!(out, "+ ...\r\n");
    let out = c.send("Subject: \0\r\n\r\nx\r\n\r\n");
    assert!(out.contains("\r\nap OK [APPENDUID "), "{out}");
    assert!(!out.contains("BAD"), "{out}");
    let out = c.ok("f6 FETCH 2 (BINARY.SIZE[] BINARY.PEEK[1])");
    assert!(
        out.contains("BINARY.SIZE[] 17 BINARY[1] {3}\r\nx\r\n"),
        "{out:?}"
    );
}

mod compliance;
mod condstore;
