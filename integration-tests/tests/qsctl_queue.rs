//! qsctl against a running core-queue: send, sendmail, and the queue commands.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::time::Duration;

use integration_tests::{Installation, binary, text};

const WAIT: Duration = Duration::from_secs(20);

fn setup() -> (Installation, integration_tests::Daemon) {
    let inst = Installation::init();
    inst.add_users(&[
        "alice@example.test",
        "bob@example.test",
        "sender@example.test",
    ]);
    let daemon = inst.start("core-queue");
    (inst, daemon)
}

#[test]
fn send_composes_and_queues_a_message() {
    let (inst, _d) = setup();
    let out = inst.qsctl_stdin(
        &[
            "send",
            "--from",
            "sender@example.test",
            "--to",
            "alice@example.test",
            "--subject",
            "Réunion",
        ],
        "Bonjour,\nà demain.\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("queued as "));
    let mail = inst.wait_for_mail("alice@example.test", 1, WAIT);
    let text = String::from_utf8_lossy(&mail[0]);
    assert!(text.contains("Subject: Réunion\r\n"), "{text}");
    assert!(text.contains("From: sender@example.test\r\n"), "{text}");
    assert!(text.contains("Message-ID: <"), "{text}");
    assert!(
        text.ends_with("\r\n\r\nBonjour,\r\nà demain.\r\n"),
        "{text}"
    );
}

#[test]
fn sendmail_reads_recipients_from_the_header_and_removes_bcc() {
    let (inst, _d) = setup();
    let out = inst.qsctl_stdin(
        &["sendmail", "-t", "-i"],
        "From: Web App <sender@example.test>\nTo: alice@example.test\nBcc: bob@example.test\nSubject: order 42\n\n.this line starts with a dot\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let alice = inst.wait_for_mail("alice@example.test", 1, WAIT);
    let bob = inst.wait_for_mail("bob@example.test", 1, WAIT);
    for m in [&alice[0], &bob[0]] {
        let t = String::from_utf8_lossy(m);
        assert!(!t.contains("Bcc:"), "{t}");
        assert!(t.contains("Return-Path: <sender@example.test>"), "{t}");
        assert!(
            t.ends_with("\r\n\r\n.this line starts with a dot\r\n"),
            "{t}"
        );
    }
}

#[test]
fn sendmail_without_i_stops_at_a_lone_dot_and_honours_f() {
    let (inst, _d) = setup();
    let out = inst.qsctl_stdin(
        &[
            "sendmail",
            "-f",
            "bounces@example.test",
            "alice@example.test",
        ],
        "Subject: dot\n\nbefore\n.\nafter\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let mail = inst.wait_for_mail("alice@example.test", 1, WAIT);
    let t = String::from_utf8_lossy(&mail[0]);
    assert!(t.contains("Return-Path: <bounces@example.test>"), "{t}");
    assert!(t.contains("before\r\n") && !t.contains("after"), "{t}");
}

#[test]
fn a_link_named_sendmail_behaves_as_qsctl_sendmail() {
    let (inst, _d) = setup();
    let link = inst.dir.path().join("sendmail");
    std::os::unix::fs::symlink(binary("qsctl"), &link).unwrap();
    let mut child = std::process::Command::new(&link)
        .args(["-t"])
        .env("QS_CONFIG", &inst.config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"From: sender@example.test\nTo: bob@example.test\nSubject: via link\n\nhi\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mail = inst.wait_for_mail("bob@example.test", 1, WAIT);
    assert!(String::from_utf8_lossy(&mail[0]).contains("Subject: via link"));
}

#[test]
fn sendmail_refuses_a_message_it_cannot_use() {
    let (inst, _d) = setup();
    let err = inst.qsctl_stdin(&["sendmail", "-t"], "Subject: nobody\n\nbody\n");
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("no recipients"),
        "{}",
        text(&err)
    );
    let err = inst.qsctl_stdin(&["sendmail"], "Subject: x\n\nbody\n");
    assert!(!err.status.success());
}

#[test]
fn queue_list_show_stats_retry_and_delete() {
    let (inst, _d) = setup();
    let out = inst.qsctl_stdin(
        &[
            "send",
            "--from",
            "sender@example.test",
            "--to",
            "friend@far.example",
            "--subject",
            "out",
        ],
        "x\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("queued as ")
        .to_string();

    let list = inst.ok(&["queue", "list"]);
    assert!(list.contains(&id), "{list}");
    assert!(list.contains("from sender@example.test"), "{list}");
    let show = inst.ok(&["queue", "show", &id]);
    assert!(
        show.contains("friend@far.example [outbound] pending"),
        "{show}"
    );
    let stats = inst.ok(&["queue", "stats"]);
    assert!(stats.contains("messages:\t1"), "{stats}");
    assert!(stats.contains("pending outbound:\t1"), "{stats}");
    inst.ok(&["queue", "retry", &id]);
    inst.ok(&["queue", "delete", &id]);
    assert!(inst.ok(&["queue", "list"]).contains("the queue is empty"));

    let err = inst.fails(&["queue", "show", &id]);
    assert!(
        err.contains("not found") || err.contains("not_found"),
        "{err}"
    );
    let err = inst.fails(&["queue", "show", "nonsense"]);
    assert!(err.contains("not a queue id"), "{err}");
}

#[test]
fn queue_commands_say_clearly_when_core_queue_is_down() {
    let inst = Installation::init();
    inst.set("queue", "client_retry_secs", "1");
    let err = inst.fails(&["queue", "list"]);
    assert!(err.contains("unavailable"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
