//! Transcripts of what the RFCs ask of commands that imaptest's scripted groups
//! check (one test per group, the expected answers taken from the group's script),
//! and of the extensions announced: LITERAL+, LIST-EXTENDED, LIST-STATUS.

use super::*;

#[test]
fn literal_plus_takes_a_large_pipelined_append_and_refuses_a_too_big_one() {
    let h = Harness::with(|s| s.input.max_literal = 200_000);
    let mut c = h.logged_in();
    // 100 KiB, non-synchronizing, with the next command in the same packet: no
    // continuation request, both answered (the message went through the spool).
    let body = format!("Subject: big\r\n\r\n{}", "0123456789abcde\n".repeat(6400));
    let out = c.send(&format!(
        "a1 APPEND INBOX {{{}+}}\r\n{body}\r\na2 STATUS INBOX (MESSAGES)\r\n",
        body.len()
    ));
    assert!(!out.contains("+ "), "{out}");
    assert!(out.starts_with("a1 OK [APPENDUID "), "{out}");
    assert!(
        out.contains("* STATUS \"INBOX\" (MESSAGES 1)\r\na2 OK"),
        "{out}"
    );
    c.ok("s SELECT INBOX");
    let out = c.ok("f FETCH 1 BODY.PEEK[]");
    assert!(out.contains(&body), "the message comes back whole");
    // Over APPENDLIMIT: read and dropped with the rest of its command (RFC 7888 §4),
    // answered BAD [TOOBIG], and the session goes on.
    let big = "x".repeat(200_001);
    let out = c.send(&format!(
        "b1 APPEND INBOX (\\Seen) {{200001+}}\r\n{big}\r\nb2 NOOP\r\n"
    ));
    assert!(out.starts_with("b1 BAD [TOOBIG]"), "{out}");
    assert!(out.contains("b2 OK"), "{out}");
    assert!(!out.contains("EXISTS"), "nothing was stored: {out}");
    // A small one in any other command (a mailbox name) is taken too.
    c.ok("c CREATE {4+}\r\nWork");
    let out = c.ok("d LIST \"\" Work");
    assert!(
        out.contains("* LIST (\\HasNoChildren) \".\" \"Work\""),
        "{out}"
    );
}

#[test]
fn literal_plus_before_login_keeps_the_smaller_limits() {
    let h = Harness::new();
    let mut c = h.session();
    // Within the pre-login literal limit (1000 here): taken.
    c.ok("a LOGIN {18+}\r\nalice@example.test {2+}\r\npw");
    let mut d = h.session();
    // Over it: dropped and refused, the session goes on.
    let out = d.send(&format!("b LOGIN {{1001+}}\r\n{} pw\r\n", "y".repeat(1001)));
    assert!(out.starts_with("b BAD [TOOBIG]"), "{out}");
    d.ok("c LOGIN alice@example.test pw");
    // What is dropped still counts against the login budget (4096 here).
    let mut e = h.session();
    let out = e.send(&format!("b LOGIN {{5000+}}\r\n{} pw\r\n", "y".repeat(5000)));
    assert!(out.starts_with("* BYE"), "{out}");
    assert_eq!(e.state, Step::Closed);
}
