//! Byte transcripts: every input is also fed in chunks of 1, 2, 4 … bytes and
//! must give the same replies.

use super::*;

struct FakeDirectory;

impl Policy for FakeDirectory {
    fn recipient(&self, address: &str) -> RecipientCheck {
        let lower = address.to_ascii_lowercase();
        match lower.rsplit_once('@') {
            // A local part in capitals or with +tag still reaches the mailbox.
            Some((local, "example.test")) => match local.split('+').next().unwrap_or("") {
                "alice" | "bob" => RecipientCheck::Mailbox(format!(
                    "{}@example.test",
                    local.split('+').next().unwrap_or("")
                )),
                "postmaster" | "team" => RecipientCheck::Local,
                _ => RecipientCheck::Unknown,
            },
            _ => RecipientCheck::Remote,
        }
    }

    fn may_send_as(&self, user: &str, address: &str) -> bool {
        user.eq_ignore_ascii_case(address)
            || (user == "alice@example.test" && address == "team@example.test")
    }

    fn postmaster(&self) -> Option<String> {
        Some("postmaster@example.test".into())
    }
}

/// A queued message as the tests compare it: its bytes read back.
#[derive(Debug, PartialEq, Eq)]
struct Queued {
    sender: String,
    recipients: Vec<String>,
    message: Vec<u8>,
    auth_user: Option<String>,
}

impl From<Envelope> for Queued {
    fn from(e: Envelope) -> Queued {
        Queued {
            message: e.message.to_vec().unwrap(),
            sender: e.sender,
            recipients: e.recipients,
            auth_user: e.auth_user,
        }
    }
}

/// Bodies past 64 octets go to a file, so most transcripts read one back.
fn spool() -> Arc<SpoolDir> {
    static DIR: std::sync::OnceLock<(tempfile::TempDir, Arc<SpoolDir>)> =
        std::sync::OnceLock::new();
    let (_, dir) = DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SpoolDir::open(tmp.path(), 64).unwrap();
        (tmp, dir)
    });
    dir.clone()
}

#[derive(Debug, Default)]
struct Run {
    out: String,
    queued: Vec<Queued>,
    closed: bool,
    starttls: bool,
    /// The checks asked for, in order.
    checks: Vec<String>,
}

impl Run {
    /// The reply codes, one per reply (the last line of each).
    fn codes(&self) -> Vec<u16> {
        self.out
            .lines()
            .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
            .filter_map(|l| l[..3].parse().ok())
            .collect()
    }
}

fn config() -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        hostname: "mx.example.test".into(),
        max_message_size: 10_000,
        max_recipients: 3,
        max_recipient_overshoot: 1000,
        max_errors: 10,
        allow_plaintext_auth: false,
        enforce_sender: true,
        spool: spool(),
        check_sender: false,
        check_message: false,
        greylisting: false,
    })
}

fn session(kind: ListenerKind, tls: bool, may_relay: bool) -> Session<FakeDirectory> {
    Session::new(
        config(),
        Arc::new(FakeDirectory),
        kind,
        Peer {
            ip: "192.0.2.1".parse().unwrap(),
            may_relay,
            checked: false,
        },
        tls,
        "S1".into(),
    )
}

/// Runs `input` through a session in chunks of `chunk` bytes; passwords
/// "secret" are right, "unavailable" finds the directory unreadable,
/// enqueues succeed.
fn drive(mut s: Session<FakeDirectory>, input: &[u8], chunk: usize) -> Run {
    let mut run = Run::default();
    let mut pending: Vec<&[u8]> = input.chunks(chunk.max(1)).collect();
    pending.reverse();
    loop {
        while let Some(action) = s.next_action() {
            match action {
                Action::Send(bytes) => run.out.push_str(&String::from_utf8_lossy(&bytes)),
                Action::Verify { login, password } => {
                    let ok = password.expose() == b"secret" && !login.is_empty();
                    s.verified(if ok {
                        AuthOutcome::Accepted(login.to_ascii_lowercase())
                    } else if password.expose() == b"unavailable" {
                        AuthOutcome::Unavailable
                    } else {
                        AuthOutcome::Refused
                    });
                }
                // The queue refuses, told by the subject.
                Action::Enqueue(envelope) => match queue_error(&envelope) {
                    Some(error) => s.enqueued(Err(queue_refusal(&error))),
                    None => {
                        run.queued.push(Queued::from(envelope));
                        s.enqueued(Ok(format!("Q{}", run.queued.len())));
                    }
                },
                // The checks' answers, told by the addresses and subjects.
                Action::CheckSender { helo, sender } => {
                    run.checks.push(format!("sender {sender}"));
                    s.sender_checked(if sender.starts_with("listed@") {
                        SenderVerdict::Refuse(Reply::new(554, "5.7.1", "listed"))
                    } else {
                        let output = mail_auth::SpfOutput::new("far.example".into());
                        SenderVerdict::Accept(Some(SpfCheck::new(
                            s.peer_ip(),
                            &helo,
                            &sender,
                            output,
                        )))
                    });
                }
                Action::CheckRecipient { recipient, .. } => {
                    run.checks.push(format!("recipient {recipient}"));
                    s.recipient_checked(
                        recipient
                            .starts_with("bob@")
                            .then(|| Reply::new(451, "4.7.1", "Greylisted")),
                    );
                }
                Action::CheckMessage(envelope) => {
                    run.checks.push("message".into());
                    let text = envelope.message.to_vec().unwrap();
                    let verdict = if String::from_utf8_lossy(&text).contains("Subject: reject") {
                        MessageVerdict::Refuse(Reply::new(550, "5.7.1", "DMARC says reject"))
                    } else {
                        MessageVerdict::Accept {
                            fields: vec![
                                "Authentication-Results: mx.example.test; dmarc=pass".into(),
                            ],
                        }
                    };
                    s.message_checked(envelope, verdict);
                }
                Action::StartTls => run.starttls = true,
                Action::Close => run.closed = true,
            }
        }
        match pending.pop() {
            Some(bytes) => s.receive(bytes),
            None => return run,
        }
    }
}

/// What the queue answers a message whose subject asks for a refusal.
fn queue_error(envelope: &Envelope) -> Option<ClientError> {
    let text = String::from_utf8_lossy(&envelope.message.to_vec().unwrap()).into_owned();
    let subject = text
        .lines()
        .find_map(|l| l.strip_prefix("Subject: queue "))?;
    Some(match subject {
        "refuses" => ClientError::Refused {
            kind: qs_queue::ErrorKind::BadRequest,
            message: "bad recipient address".into(),
        },
        "too big" => ClientError::Request(qs_queue::ProtoError::TooLarge {
            part: "body",
            len: 1 << 30,
            max: 1 << 28,
        }),
        "locked out" => ClientError::Refused {
            kind: qs_queue::ErrorKind::Unauthorized,
            message: "authentication failed".into(),
        },
        _ => ClientError::Unavailable {
            endpoint: "unix:/run/queue.sock".into(),
            waited: std::time::Duration::from_secs(30),
            last_error: "connection refused".into(),
        },
    })
}

/// Runs in every chunking and checks they agree; returns the run.
fn transcript(kind: ListenerKind, tls: bool, input: &str) -> Run {
    transcript_with(|| session(kind, tls, false), input.as_bytes())
}

/// Like [`transcript`], with `change` made to the config first.
fn transcript_configured(
    kind: ListenerKind,
    may_relay: bool,
    change: impl Fn(&mut SessionConfig),
    input: &str,
) -> Run {
    let mut c = (*config()).clone();
    change(&mut c);
    let config = Arc::new(c);
    transcript_with(
        || {
            Session::new(
                config.clone(),
                Arc::new(FakeDirectory),
                kind,
                Peer {
                    ip: "192.0.2.1".parse().unwrap(),
                    may_relay,
                    checked: false,
                },
                false,
                "S1".into(),
            )
        },
        input.as_bytes(),
    )
}

fn transcript_with(make: impl Fn() -> Session<FakeDirectory>, input: &[u8]) -> Run {
    let whole = drive(make(), input, input.len());
    for n in [1, 2, 3, 4, 8, 16, 64] {
        let chunked = drive(make(), input, n);
        assert_eq!(chunked.out, whole.out, "chunks of {n} differ");
        assert_eq!(
            undated(&chunked.queued),
            undated(&whole.queued),
            "chunks of {n} differ"
        );
    }
    whole
}

/// The messages with the date of our Received field blanked: two runs may
/// straddle a second.
fn undated(queued: &[Queued]) -> Vec<Queued> {
    queued
        .iter()
        .map(|q| {
            let mut message = q.message.clone();
            // Our field comes first; its date follows its last ';'.
            let end = message
                .windows(3)
                .position(|w| w[0] == b'\r' && w[1] == b'\n' && !matches!(w[2], b' ' | b'\t'))
                .unwrap_or(message.len());
            if let Some(semicolon) = message[..end].iter().rposition(|&b| b == b';') {
                message[semicolon..end].fill(b'-');
            }
            Queued {
                message,
                sender: q.sender.clone(),
                recipients: q.recipients.clone(),
                auth_user: q.auth_user.clone(),
            }
        })
        .collect()
}

const TX: &str = "EHLO client.example\r\nMAIL FROM:<someone@far.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: hi\r\n\r\n..dot line\r\nbody\r\n.\r\nQUIT\r\n";

#[test]
fn a_whole_pipelined_transaction_is_queued_once() {
    let run = transcript(ListenerKind::Mx, false, TX);
    assert_eq!(run.codes(), [250, 250, 250, 354, 250, 221], "{}", run.out);
    assert!(run.closed);
    assert_eq!(run.queued.len(), 1);
    let e = &run.queued[0];
    assert_eq!(e.sender, "someone@far.example");
    assert_eq!(e.recipients, ["alice@example.test"]);
    let text = String::from_utf8(e.message.clone()).unwrap();
    assert!(text.starts_with("Received: from client.example ([192.0.2.1])\r\n\tby mx.example.test (Quicksilver) with ESMTP id S1.1\r\n\tfor <alice@example.test>;\r\n\t"), "{text}");
    assert!(
        text.ends_with("\r\nSubject: hi\r\n\r\n.dot line\r\nbody\r\n"),
        "{text}"
    );
    assert!(run.out.contains("250 2.0.0 OK queued as Q1\r\n"));
}

#[test]
fn what_the_queue_will_never_take_is_refused_for_good_and_the_rest_is_451() {
    let message = |subject: &str| {
        format!(
            "MAIL FROM:<a@far.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: queue {subject}\r\n\r\nhi\r\n.\r\n"
        )
    };
    let input = [
        "EHLO c\r\n".to_string(),
        message("too big"),
        message("refuses"),
        message("away"),
        message("locked out"),
        "QUIT\r\n".into(),
    ]
    .concat();
    let run = transcript(ListenerKind::Mx, false, &input);
    let ends: Vec<&str> = run
        .out
        .lines()
        .filter(|l| ["552", "554", "451"].iter().any(|c| l.starts_with(c)))
        .collect();
    assert_eq!(
        ends,
        [
            "552 5.3.4 Message too big for the mail queue",
            "554 5.3.0 The mail queue refused the message",
            "451 4.3.0 Queue temporarily unavailable, try again later",
            "451 4.3.0 Queue temporarily unavailable, try again later",
        ],
        "{}",
        run.out
    );
    assert!(run.queued.is_empty());
    assert_eq!(run.codes().last(), Some(&221), "the session goes on");
}

#[test]
fn ehlo_lists_the_extensions_and_hides_auth_without_tls() {
    let run = transcript(ListenerKind::Mx, false, "EHLO x\r\n");
    for ext in [
        "PIPELINING",
        "SIZE 10000",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
        "STARTTLS",
    ] {
        assert!(
            run.out.contains(&format!("250-{ext}\r\n"))
                || run.out.contains(&format!("250 {ext}\r\n")),
            "{ext}: {}",
            run.out
        );
    }
    assert!(!run.out.contains("AUTH"), "{}", run.out);
    let tls = transcript(ListenerKind::Submission, true, "EHLO x\r\n");
    assert!(tls.out.contains("AUTH PLAIN LOGIN"), "{}", tls.out);
    assert!(!tls.out.contains("STARTTLS"), "{}", tls.out);
}

#[test]
fn auth_without_tls_is_refused_with_538() {
    let run = transcript(
        ListenerKind::Submission,
        false,
        "EHLO x\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n",
    );
    assert_eq!(run.codes(), [250, 538]);
    assert!(run.out.contains("538 5.7.11"));
}

#[test]
fn auth_plain_and_login_work_under_tls_and_failures_get_535() {
    // \0alice@example.test\0secret
    let ok = transcript(
        ListenerKind::Submission,
        true,
        "EHLO x\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n",
    );
    assert_eq!(ok.codes(), [250, 235]);
    let prompt = transcript(
        ListenerKind::Submission,
        true,
        "EHLO x\r\nAUTH PLAIN\r\nAGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n",
    );
    assert_eq!(prompt.codes(), [250, 334, 235]);
    // LOGIN: alice@example.test / secret
    let login = transcript(
        ListenerKind::Submission,
        true,
        "EHLO x\r\nAUTH LOGIN\r\nYWxpY2VAZXhhbXBsZS50ZXN0\r\nc2VjcmV0\r\n",
    );
    assert_eq!(login.codes(), [250, 334, 334, 235], "{}", login.out);
    // \0alice@example.test\0wrong
    let bad = transcript(
        ListenerKind::Submission,
        true,
        "EHLO x\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==\r\n",
    );
    assert_eq!(bad.codes(), [250, 535]);
    assert!(bad.out.contains("535 5.7.8"));
    let cancelled = transcript(
        ListenerKind::Submission,
        true,
        "EHLO x\r\nAUTH LOGIN\r\n*\r\n",
    );
    assert_eq!(cancelled.codes(), [250, 334, 501]);
    let unknown = transcript(
        ListenerKind::Submission,
        true,
        "EHLO x\r\nAUTH CRAM-MD5\r\n",
    );
    assert_eq!(unknown.codes(), [250, 504]);
    // \0alice@example.test\0unavailable: the directory cannot be read.
    let later = transcript(
        ListenerKind::Submission,
        true,
        "EHLO x\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB1bmF2YWlsYWJsZQ==\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n",
    );
    assert_eq!(later.codes(), [250, 454, 235], "{}", later.out);
    assert!(later.out.contains("454 4.7.0"));
}

#[test]
fn submission_requires_auth_before_mail() {
    let run = transcript(
        ListenerKind::Submission,
        true,
        "EHLO x\r\nMAIL FROM:<alice@example.test>\r\n",
    );
    assert_eq!(run.codes(), [250, 530]);
}

#[test]
fn an_authenticated_user_may_send_only_as_their_own_addresses() {
    let auth = "EHLO x\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n";
    let spoof = transcript(
        ListenerKind::Submission,
        true,
        &format!("{auth}MAIL FROM:<bob@example.test>\r\n"),
    );
    assert_eq!(spoof.codes(), [250, 235, 553]);
    assert!(spoof.out.contains("553 5.7.1"));
    let own = transcript(
        ListenerKind::Submission,
        true,
        &format!("{auth}MAIL FROM:<team@example.test>\r\nRCPT TO:<friend@far.example>\r\n"),
    );
    assert_eq!(
        own.codes(),
        [250, 235, 250, 250],
        "an alias they own, relayed because authenticated"
    );
}

#[test]
fn relaying_is_refused_to_strangers_whatever_the_trick() {
    let tricks = [
        "friend@far.example",
        "friend%far.example@example.test",
        "far.example!friend@example.test",
        "@example.test:friend@far.example",
        "\"friend@far.example\"@example.test",
        "friend@far.example.",
        "friend@[203.0.113.5]",
        "friend@example.test.far.example",
    ];
    for trick in tricks {
        let run = transcript(
            ListenerKind::Mx,
            false,
            &format!("EHLO x\r\nMAIL FROM:<a@far.example>\r\nRCPT TO:<{trick}>\r\nDATA\r\n"),
        );
        let codes = run.codes();
        assert!(codes[2] >= 500, "{trick} was accepted: {}", run.out);
        assert!(codes[3] >= 500, "{trick}: DATA accepted: {}", run.out);
        assert!(run.queued.is_empty());
    }
    // A trusted network may relay.
    let trusted = transcript_with(
        || session(ListenerKind::Mx, false, true),
        b"EHLO x\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<friend@far.example>\r\n",
    );
    assert_eq!(trusted.codes(), [250, 250, 250]);
}

#[test]
fn unknown_local_users_are_refused_at_rcpt() {
    let run = transcript(
        ListenerKind::Mx,
        false,
        "EHLO x\r\nMAIL FROM:<a@far.example>\r\nRCPT TO:<nobody@example.test>\r\n",
    );
    assert_eq!(run.codes(), [250, 250, 550]);
    assert!(run.out.contains("550 5.1.1"));
}

#[test]
fn postmaster_without_a_domain_is_accepted() {
    let run = transcript(
        ListenerKind::Mx,
        false,
        "HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\n",
    );
    assert_eq!(run.codes(), [250, 250, 250]);
}

#[test]
fn too_many_recipients_get_452() {
    let run = transcript(
        ListenerKind::Mx,
        false,
        "EHLO x\r\nMAIL FROM:<a@far.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<team@example.test>\r\nRCPT TO:<postmaster@example.test>\r\n",
    );
    assert_eq!(run.codes(), [250, 250, 250, 250, 250, 452]);
    assert!(run.out.contains("452 4.5.3"));
}

/// `MAIL FROM` and `count` recipients r0, r1, ... from `first` on, at a remote domain.
fn recipients(first: usize, count: usize) -> String {
    let mut out = String::from("MAIL FROM:<a@far.example>\r\n");
    for i in first..first + count {
        out.push_str(&format!("RCPT TO:<r{i}@far.example>\r\n"));
    }
    out
}

#[test]
fn recipients_over_the_limit_are_no_error_and_go_in_the_next_transaction() {
    // 120 recipients with a limit of 100: 100 accepted, 20 told 452, and the
    // client sends those 20 in a second transaction on the same connection.
    let input = format!(
        "EHLO x\r\n{}DATA\r\nSubject: 1\r\n\r\nx\r\n.\r\n{}DATA\r\nSubject: 2\r\n\r\nx\r\n.\r\nQUIT\r\n",
        recipients(0, 120),
        recipients(100, 20)
    );
    let run = transcript_configured(ListenerKind::Mx, true, |c| c.max_recipients = 100, &input);
    let codes = run.codes();
    assert_eq!(
        codes.iter().filter(|c| **c == 452).count(),
        20,
        "{}",
        run.out
    );
    assert!(!codes.contains(&421), "{}", run.out);
    assert!(run.out.contains("452 4.5.3 Too many recipients\r\n"));
    assert_eq!(run.queued.len(), 2, "{}", run.out);
    let first: Vec<String> = (0..100).map(|i| format!("r{i}@far.example")).collect();
    let second: Vec<String> = (100..120).map(|i| format!("r{i}@far.example")).collect();
    assert_eq!(run.queued[0].recipients, first);
    assert_eq!(run.queued[1].recipients, second);
    assert_eq!(*codes.last().unwrap(), 221);
}

#[test]
fn recipients_far_over_the_limit_count_as_errors() {
    // Limit 3, overshoot 2, 3 errors allowed: recipients 4 and 5 are free,
    // 6, 7 and 8 are errors, and the third closes the session.
    let run = transcript_configured(
        ListenerKind::Mx,
        true,
        |c| {
            c.max_recipient_overshoot = 2;
            c.max_errors = 3;
        },
        &format!("EHLO x\r\n{}", recipients(0, 10)),
    );
    assert_eq!(
        run.codes(),
        [250, 250, 250, 250, 250, 452, 452, 452, 452, 452, 421],
        "{}",
        run.out
    );
    assert!(run.closed);
    // Each transaction has its own allowance.
    let again = transcript_configured(
        ListenerKind::Mx,
        true,
        |c| {
            c.max_recipient_overshoot = 2;
            c.max_errors = 3;
        },
        &format!("EHLO x\r\n{}RSET\r\n{}", recipients(0, 5), recipients(0, 5)),
    );
    assert!(!again.closed, "{}", again.out);
    assert_eq!(again.codes().iter().filter(|c| **c == 452).count(), 4);
}

#[test]
fn smuggling_attempts_are_refused_and_nothing_is_queued() {
    for smuggled in ["\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\0"] {
        let input = format!(
            "EHLO x\r\nMAIL FROM:<a@far.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhello{smuggled}MAIL FROM:<evil@far.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n"
        );
        let run = transcript(ListenerKind::Mx, false, &input);
        assert!(run.queued.is_empty(), "{smuggled:?} queued something");
        assert_eq!(
            run.codes(),
            [250, 250, 250, 354, 554, 221],
            "{smuggled:?}: {}",
            run.out
        );
    }
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let run = transcript(
        ListenerKind::Mx,
        false,
        "EHLO x\r\nSTARTTLS\r\nMAIL FROM:<a@far.example>\r\nRCPT TO:<alice@example.test>\r\n",
    );
    assert_eq!(run.codes(), [250, 220]);
    assert!(run.starttls);
    let twice = transcript(ListenerKind::Mx, true, "EHLO x\r\nSTARTTLS\r\n");
    assert_eq!(twice.codes(), [250, 503]);
}

#[test]
fn starttls_with_parameters_is_a_syntax_error() {
    // RFC 3207 §4: "STARTTLS" CRLF, nothing more; 501 and no TLS.
    for command in [
        "STARTTLS foo",
        "starttls x y",
        "STARTTLS =",
        "STARTTLS  foo",
    ] {
        let run = transcript(
            ListenerKind::Mx,
            false,
            &format!("EHLO x\r\n{command}\r\nNOOP\r\n"),
        );
        assert_eq!(run.codes(), [250, 501, 250], "{command}: {}", run.out);
        assert!(run.out.contains("501 5.5.4 "), "{}", run.out);
        assert!(!run.starttls, "{command}");
    }
    let lower = transcript(ListenerKind::Submission, false, "EHLO x\r\nstarttls\r\n");
    assert_eq!(lower.codes(), [250, 220]);
    assert!(lower.starttls);
}

#[test]
fn an_oversize_message_is_refused_and_drained() {
    let body = "0123456789012345678901234567890123456789\r\n".repeat(300);
    let run = transcript(
        ListenerKind::Mx,
        false,
        &format!(
            "EHLO x\r\nMAIL FROM:<a@far.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n{body}.\r\nNOOP\r\n"
        ),
    );
    assert_eq!(run.codes(), [250, 250, 250, 354, 552, 250]);
    assert!(run.out.contains("552 5.3.4"));
    assert!(run.queued.is_empty());
    let declared = transcript(
        ListenerKind::Mx,
        false,
        "EHLO x\r\nMAIL FROM:<a@far.example> SIZE=20000\r\n",
    );
    assert_eq!(declared.codes(), [250, 552]);
}

#[test]
fn an_empty_data_is_answered_and_refused() {
    let run = transcript(
        ListenerKind::Mx,
        false,
        "EHLO x\r\nMAIL FROM:<a@far.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(run.codes(), [250, 250, 250, 354, 554, 221]);
    assert!(run.queued.is_empty());
}

#[test]
fn over_long_and_bare_lf_command_lines_are_refused() {
    let long = format!("EHLO x\r\nNOOP {}\r\nNOOP\r\n", "a".repeat(600));
    let run = transcript(ListenerKind::Mx, false, &long);
    assert_eq!(run.codes(), [250, 500, 250], "{}", run.out);
    let bare = transcript(ListenerKind::Mx, false, "EHLO x\nNOOP\r\n");
    assert_eq!(bare.codes(), [500, 250]);
}

#[test]
fn malformed_addresses_and_out_of_order_commands_are_refused() {
    let run = transcript(
        ListenerKind::Mx,
        false,
        "MAIL FROM:<a@far.example>\r\nEHLO x\r\nRCPT TO:<alice@example.test>\r\nMAIL FROM:<not an address>\r\nMAIL FROM:<a@@b>\r\nDATA\r\nFOO\r\n",
    );
    let codes = run.codes();
    assert_eq!(codes[0], 503);
    assert_eq!(codes[1], 250);
    assert_eq!(codes[2], 503);
    assert!(codes[3] >= 500 && codes[4] >= 500, "{}", run.out);
    assert_eq!(codes[5], 503);
    assert_eq!(codes[6], 500);
}

#[test]
fn too_many_errors_close_the_session_with_421() {
    let run = transcript(ListenerKind::Mx, false, &"FOO\r\n".repeat(12));
    assert_eq!(run.codes().len(), 11);
    assert_eq!(*run.codes().last().unwrap(), 421);
    assert!(run.closed);
}

#[test]
fn bdat_chunks_make_one_message() {
    let run = transcript(
        ListenerKind::Mx,
        false,
        "EHLO x\r\nMAIL FROM:<a@far.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 12\r\nSubject: x\r\nBDAT 8 LAST\r\n\r\nbody\r\nQUIT\r\n",
    );
    assert_eq!(run.codes(), [250, 250, 250, 250, 250, 221], "{}", run.out);
    assert_eq!(run.queued.len(), 1);
    assert!(
        run.queued[0]
            .message
            .ends_with(b"Subject: x\r\n\r\nbody\r\n")
    );
    let without_mail = transcript(
        ListenerKind::Mx,
        false,
        "EHLO x\r\nBDAT 4 LAST\r\nabcdNOOP\r\n",
    );
    assert_eq!(
        without_mail.codes(),
        [250, 503, 250],
        "{}",
        without_mail.out
    );
}

#[test]
fn a_message_with_too_many_received_fields_is_a_loop() {
    let hops = "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n".repeat(101);
    let mut c = (*config()).clone();
    c.max_message_size = 1 << 20;
    let config = Arc::new(c);
    let run = transcript_with(
        || {
            Session::new(
                config.clone(),
                Arc::new(FakeDirectory),
                ListenerKind::Mx,
                Peer {
                    ip: "192.0.2.1".parse().unwrap(),
                    may_relay: false,
                    checked: false,
                },
                false,
                "S1".into(),
            )
        },
        format!("EHLO x\r\nMAIL FROM:<a@far.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n{hops}\r\nx\r\n.\r\n").as_bytes(),
    );
    assert_eq!(run.codes(), [250, 250, 250, 354, 554]);
    assert!(run.out.contains("554 5.4.6"));
}

#[test]
fn a_delivered_to_naming_a_recipients_mailbox_is_a_loop_refused_at_the_end_of_data() {
    let tx = |rcpt: &str, header: &str| {
        format!(
            "EHLO x\r\nMAIL FROM:<victim@remote.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n{header}Subject: x\r\n\r\nbuy now\r\n.\r\nQUIT\r\n"
        )
    };
    // The mailbox's canonical address, in any case and however the recipient
    // was written (a +tag, capitals): the loop core-queue's delivery would find.
    for (rcpt, header) in [
        ("alice@example.test", "Delivered-To: alice@example.test\r\n"),
        (
            "Alice+news@example.test",
            "DELIVERED-TO: <ALICE@example.test>\r\n",
        ),
        (
            "alice@example.test",
            "Received: x\r\nDelivered-To: bob@example.test\r\nDelivered-To: Alice@Example.Test\r\n",
        ),
    ] {
        let run = transcript(ListenerKind::Mx, false, &tx(rcpt, header));
        assert_eq!(
            run.codes(),
            [250, 250, 250, 354, 554, 221],
            "{rcpt}: {}",
            run.out
        );
        assert!(run.out.contains("554 5.4.6 Mail loop"), "{}", run.out);
        assert!(run.queued.is_empty());
    }
    // One looping recipient refuses the whole message.
    let both = transcript(
        ListenerKind::Mx,
        false,
        "EHLO x\r\nMAIL FROM:<a@far.example>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nDelivered-To: alice@example.test\r\n\r\nx\r\n.\r\n",
    );
    assert_eq!(both.codes(), [250, 250, 250, 250, 354, 554], "{}", both.out);
    assert!(both.queued.is_empty());
    // Not a loop: another mailbox, a Delivered-To in the body, an alias
    // (its targets are checked as it is delivered).
    for (rcpt, header) in [
        ("alice@example.test", "Delivered-To: bob@example.test\r\n"),
        (
            "alice@example.test",
            "Subject: y\r\n\r\nDelivered-To: alice@example.test\r\n",
        ),
        ("team@example.test", "Delivered-To: team@example.test\r\n"),
    ] {
        let run = transcript(ListenerKind::Mx, false, &tx(rcpt, header));
        assert_eq!(
            run.codes(),
            [250, 250, 250, 354, 250, 221],
            "{rcpt}: {}",
            run.out
        );
        assert_eq!(run.queued.len(), 1);
    }
}

#[test]
fn vrfy_does_not_enumerate_users() {
    let run = transcript(
        ListenerKind::Mx,
        false,
        "EHLO x\r\nVRFY alice\r\nVRFY nobody\r\n",
    );
    assert_eq!(run.codes(), [250, 252, 252]);
}

/// A port-25 session of a checked client, with every check on.
fn checked_transcript(authenticated: bool, input: &str) -> Run {
    let mut c = (*config()).clone();
    c.check_sender = true;
    c.check_message = true;
    c.greylisting = true;
    let config = Arc::new(c);
    let make = || {
        Session::new(
            config.clone(),
            Arc::new(FakeDirectory),
            ListenerKind::Mx,
            Peer {
                ip: "192.0.2.1".parse().unwrap(),
                may_relay: false,
                checked: true,
            },
            authenticated,
            "S1".into(),
        )
    };
    transcript_with(make, input.as_bytes())
}

#[test]
fn a_checked_client_is_checked_at_mail_rcpt_and_the_end_of_data() {
    let input = "EHLO client.example\r\nMAIL FROM:<someone@far.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: hi\r\nAuthentication-Results: MX.example.test; dmarc=pass\r\nX-Quicksilver-Junk: no\r\n\r\nbody\r\n.\r\nQUIT\r\n";
    let run = checked_transcript(false, input);
    assert_eq!(
        run.codes(),
        [250, 250, 250, 451, 354, 250, 221],
        "{}",
        run.out
    );
    assert!(run.out.contains("451 4.7.1 Greylisted\r\n"), "{}", run.out);
    assert_eq!(
        run.checks,
        [
            "sender someone@far.example",
            "recipient alice@example.test",
            "recipient bob@example.test",
            "message"
        ]
    );
    let e = &run.queued[0];
    assert_eq!(e.recipients, ["alice@example.test"]);
    let text = String::from_utf8(e.message.clone()).unwrap();
    // Our result on top, the forged ones gone, the rest byte for byte.
    assert!(
        text.starts_with(
            "Authentication-Results: mx.example.test; dmarc=pass\r\nReceived: from client.example"
        ),
        "{text}"
    );
    assert!(text.ends_with("\r\nSubject: hi\r\n\r\nbody\r\n"), "{text}");
    assert!(!text.contains("MX.example.test"), "{text}");
    assert!(!text.contains("X-Quicksilver-Junk"), "{text}");
}

#[test]
fn the_checks_refuse_at_mail_and_at_the_end_of_data() {
    let input = "EHLO client.example\r\nMAIL FROM:<listed@far.example>\r\nMAIL FROM:<someone@far.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: reject\r\n\r\nbody\r\n.\r\nRSET\r\n";
    let run = checked_transcript(false, input);
    assert_eq!(
        run.codes(),
        [250, 554, 250, 250, 354, 550, 250],
        "{}",
        run.out
    );
    assert!(run.queued.is_empty());
}

#[test]
fn authenticated_and_unchecked_sessions_are_not_checked_but_lose_claimed_fields() {
    // Authenticated on port 25 (under TLS): no check at all.
    let input = "EHLO x\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nAuthentication-Results: mx.example.test; dmarc=pass\r\nSubject: hi\r\n\r\nbody\r\n.\r\n";
    let run = checked_transcript(true, input);
    assert_eq!(run.codes(), [250, 235, 250, 250, 354, 250], "{}", run.out);
    assert!(run.checks.is_empty(), "{:?}", run.checks);
    let text = String::from_utf8(run.queued[0].message.clone()).unwrap();
    assert!(!text.contains("Authentication-Results"), "{text}");
    assert!(text.ends_with("\r\nSubject: hi\r\n\r\nbody\r\n"), "{text}");
    // Submission: not checked, and the forged field goes as well.
    let sub = "EHLO x\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nX-Quicksilver-Junk: yes\r\nSubject: hi\r\n\r\nbody\r\n.\r\n";
    let run = transcript(ListenerKind::Submission, true, sub);
    assert_eq!(run.codes(), [250, 235, 250, 250, 354, 250], "{}", run.out);
    let text = String::from_utf8(run.queued[0].message.clone()).unwrap();
    assert!(!text.contains("X-Quicksilver-Junk"), "{text}");
}
