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

/// Appends `message` to the INBOX with a literal.
fn append(c: &mut Client, message: &str) {
    let out = c.send(&format!(
        "ap APPEND INBOX {{{}+}}\r\n{message}\r\n",
        message.len()
    ));
    assert!(out.starts_with("ap OK"), "{out}");
}

#[test]
fn atoms_a_legal_name_that_is_not_modified_utf7_is_no_not_bad() {
    // imaptest's "atoms": every ATOM-CHAR but the letters.
    let h = Harness::new();
    let mut c = h.logged_in();
    let out = c.cmd("a1 SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}");
    assert!(out.starts_with("a1 NO [CANNOT]"), "{out}");
    c.ok("a2 LIST \"\" !#$&'+,-.0123456789:;<=>?@^_`|[}%*");
    c.ok("a3 LIST \"\" ~foo");
    let out = c.cmd("a4 SELECT ~foo");
    assert!(out.starts_with("a4 NO"), "{out}");
    // None of that was a protocol error.
    assert_eq!(c.session.errors, 0);
}

#[test]
fn fetch_envelope_splits_a_source_route_off_the_mailbox() {
    // imaptest's "fetch-envelope", message 6.
    let h = Harness::new();
    let mut c = h.logged_in();
    append(
        &mut c,
        "Date: Thu, 15 Feb 2007 01:02:03 +0200\r\nFrom: <@route:user@domain>\r\n\r\nbody\r\n",
    );
    c.ok("s SELECT INBOX");
    let out = c.ok("f FETCH 1 ENVELOPE");
    assert!(
        out.starts_with(
            "* 1 FETCH (ENVELOPE (\"Thu, 15 Feb 2007 01:02:03 +0200\" NIL \
             ((NIL \"@route\" \"user\" \"domain\")) ((NIL \"@route\" \"user\" \"domain\")) \
             ((NIL \"@route\" \"user\" \"domain\")) NIL NIL NIL NIL NIL))\r\n"
        ),
        "{out}"
    );
}

#[test]
fn fetch_body_message_rfc822_text_runs_to_the_end_of_the_part() {
    // imaptest's "fetch-body-message-rfc822-mime": the TEXT of a message/rfc822 part
    // holding a multipart keeps the epilogue after its closing boundary.
    let inner_text = "prologue\r\n\r\n--foo \r\n\r\nFrom: m1@example.com\r\nSubject: m1\r\n\r\n\
                      m1 body\r\n\r\n--foo \r\nX-Mime: m2 header\r\n\r\nFrom: m2@example.com\r\n\
                      Subject: m2\r\n\r\nm2 body\r\n\r\n--foo--\r\n\r\nepilogue\r\n";
    let message = format!(
        "From: user@domain.org\r\nDate: Sat, 24 Mar 2007 23:00:00 +0200\r\nMime-Version: 1.0\r\n\
         Content-Type: message/rfc822\r\n\r\nFrom: sub@domain.org\r\n\
         Date: Sun, 12 Aug 2012 12:34:56 +0300\r\nSubject: submsg\r\n\
         Content-Type: multipart/digest; boundary=\"foo\"\r\n\r\n{inner_text}"
    );
    let h = Harness::new();
    let mut c = h.logged_in();
    append(&mut c, &message);
    c.ok("s SELECT INBOX");
    let out = c.ok("f FETCH 1 (BODY.PEEK[1.TEXT])");
    assert!(
        out.starts_with(&format!(
            "* 1 FETCH (BODY[1.TEXT] {{{}}}\r\n{inner_text})\r\n",
            inner_text.len()
        )),
        "{out}"
    );
    let out = c.ok("f FETCH 1 (BODY.PEEK[1.1])");
    assert!(
        out.starts_with(
            "* 1 FETCH (BODY[1.1] {46}\r\nFrom: m1@example.com\r\nSubject: m1\r\n\r\nm1 body\r\n)"
        ),
        "{out}"
    );
}

#[test]
fn append_binary_body_of_a_part_with_a_nul_is_a_plain_literal() {
    // imaptest's "append-binary": BODY[1] of a binary part cannot carry its NUL in a
    // literal (RFC 3501 §4.3); it shows as 0x80, and BINARY[1] gives the octets.
    let h = Harness::new();
    let mut c = h.logged_in();
    let message = "From: user@domain.org\r\nMime-Version: 1.0\r\n\
                   Content-Type: application/octet-stream\r\n\
                   Content-Transfer-Encoding: binary\r\n\r\n\0-x\n\r\n\n";
    let out = c.send(&format!(
        "ap APPEND INBOX ~{{{}+}}\r\n{message}\r\n",
        message.len()
    ));
    assert!(out.starts_with("ap OK"), "{out}");
    c.ok("s SELECT INBOX");
    let out = c.ok("f FETCH 1 (BODY.PEEK[1])");
    assert!(
        out.starts_with("* 1 FETCH (BODY[1] {7}\r\n\u{fffd}-x\n\r\n\n)\r\n"),
        "{out:?}"
    );
    let out = c.ok("f FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])");
    assert!(
        out.starts_with("* 1 FETCH (BINARY.SIZE[1] 7 BINARY[1] ~{7}\r\n\0-x\n\r\n\n)\r\n"),
        "{out:?}"
    );
}

fn appended(subject: &str) -> String {
    format!("From: a@example.test\r\nSubject: {subject}\r\n\r\n{subject}\r\n")
}

#[test]
fn select_appended_messages_are_recent_to_the_first_read_write_session() {
    // imaptest's "select": EXAMINE and STATUS only look; SELECT takes them.
    let h = Harness::new();
    let mut c = h.logged_in();
    c.ok("c CREATE Box");
    for subject in ["one", "two"] {
        let message = appended(subject);
        let out = c.send(&format!(
            "ap APPEND Box {{{}+}}\r\n{message}\r\n",
            message.len()
        ));
        assert!(out.starts_with("ap OK"), "{out}");
    }
    let out = c.ok("e EXAMINE Box");
    assert!(out.contains("* 2 EXISTS\r\n* 2 RECENT\r\n"), "{out}");
    assert!(out.contains("* OK [UNSEEN 1]"), "{out}");
    c.ok("cl CLOSE");
    let out = c.ok("st STATUS Box (MESSAGES RECENT UNSEEN)");
    assert!(out.contains("(MESSAGES 2 RECENT 2 UNSEEN 2)"), "{out}");
    let out = c.ok("s SELECT Box");
    assert!(out.contains("* 2 EXISTS\r\n* 2 RECENT\r\n"), "{out}");
    let out = c.ok("f FETCH 1 FLAGS");
    assert!(out.contains("* 1 FETCH (FLAGS (\\Recent))"), "{out}");
    c.ok("cl CLOSE");
    let out = c.ok("st STATUS Box (RECENT)");
    assert!(out.contains("(RECENT 0)"), "{out}");
    // Taken: no other session sees them recent.
    let out = h.logged_in().ok("s SELECT Box");
    assert!(out.contains("* 2 EXISTS\r\n* 0 RECENT\r\n"), "{out}");
}

#[test]
fn copy_makes_recent_messages_with_their_flags_in_the_other_session() {
    // imaptest's "copy": the session that has the target selected is told of the
    // copies as new and recent, with the flags they had.
    let h = Harness::new();
    let mut one = h.logged_in();
    let mut two = h.logged_in();
    one.ok("c CREATE Box");
    for subject in ["one", "two", "three"] {
        append(&mut one, &appended(subject));
    }
    one.ok("s SELECT INBOX");
    one.ok("st1 STORE 1 FLAGS (\\Seen)");
    one.ok("st2 STORE 2 FLAGS (\\Answered \\Flagged)");
    two.ok("s SELECT Box");
    let out = one.ok("cp COPY 1:3 Box");
    assert!(out.contains("[COPYUID "), "{out}");
    let out = two.ok("n NOOP");
    assert!(out.contains("* 3 EXISTS\r\n* 3 RECENT\r\n"), "{out}");
    let out = two.ok("f FETCH 1:3 FLAGS");
    assert!(out.contains("* 1 FETCH (FLAGS (\\Seen \\Recent))"), "{out}");
    assert!(
        out.contains("* 2 FETCH (FLAGS (\\Answered \\Flagged \\Recent))"),
        "{out}"
    );
    assert!(out.contains("* 3 FETCH (FLAGS (\\Recent))"), "{out}");
    // The copying session selects the folder after: they are not recent for it.
    let out = one.ok("s2 SELECT Box");
    assert!(out.contains("* 3 EXISTS\r\n* 0 RECENT\r\n"), "{out}");
}

#[test]
fn search_flags_recent_new_and_old() {
    // imaptest's "search-flags": appended messages are recent, NEW is recent and
    // unseen, OLD is not recent.
    let h = Harness::new();
    let mut c = h.logged_in();
    for subject in ["one", "two", "three"] {
        append(&mut c, &appended(subject));
    }
    c.ok("s SELECT INBOX");
    c.ok("st STORE 2 FLAGS (\\Seen)");
    assert!(c.ok("a SEARCH RECENT").contains("* SEARCH 1 2 3\r\n"));
    assert!(c.ok("b SEARCH NEW").contains("* SEARCH 1 3\r\n"));
    assert!(c.ok("d SEARCH OLD").contains("* SEARCH\r\n"));
    // In the next session they are old.
    let mut d = h.logged_in();
    d.ok("s SELECT INBOX");
    assert!(d.ok("a SEARCH RECENT").contains("* SEARCH\r\n"));
    assert!(d.ok("b SEARCH OLD").contains("* SEARCH 1 2 3\r\n"));
}

/// The folders of imaptest's "listext": `t.test6` subscribed, then deleted.
fn listext_folders(c: &mut Client) {
    for name in [
        "t.test1",
        "t.test2.test1",
        "t.test3",
        "t.test4.test5",
        "t.test4.test52",
        "t.test6",
        "t.test7.test7",
        "t.test8.test8",
        "t.test8.test9",
    ] {
        c.ok(&format!("c CREATE {name}"));
    }
    for name in [
        "t.test1",
        "t.test2.test1",
        "t.test6",
        "t.test7.test7",
        "t.test8.test8",
        "t.test8.test9",
    ] {
        c.ok(&format!("s SUBSCRIBE {name}"));
    }
    c.ok("d DELETE t.test6");
}

/// The LIST lines of an answer, in order.
fn list_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("* LIST ")).collect()
}

#[test]
fn list_extended_patterns_selection_and_return_options() {
    let h = Harness::new();
    let mut c = h.logged_in();
    assert!(
        c.ok("cap CAPABILITY")
            .contains(" LIST-EXTENDED LIST-STATUS ")
    );
    listext_folders(&mut c);
    // Several patterns: each name once (t.test2 is only a parent here).
    let out = c.ok("l1 LIST \"\" (t.*2 t.test3 t.test3)");
    assert_eq!(
        list_lines(&out),
        [
            "* LIST (\\Noselect \\HasChildren) \".\" \"t.test2\"",
            "* LIST (\\HasNoChildren) \".\" \"t.test3\"",
            "* LIST (\\HasNoChildren) \".\" \"t.test4.test52\"",
        ],
        "{out}"
    );
    // Subscribed names, one of them gone.
    let out = c.ok("l2 LIST (SUBSCRIBED) \"\" t.*");
    assert_eq!(
        list_lines(&out),
        [
            "* LIST (\\HasNoChildren \\Subscribed) \".\" \"t.test1\"",
            "* LIST (\\HasNoChildren \\Subscribed) \".\" \"t.test2.test1\"",
            "* LIST (\\NonExistent \\Subscribed) \".\" \"t.test6\"",
            "* LIST (\\HasNoChildren \\Subscribed) \".\" \"t.test7.test7\"",
            "* LIST (\\HasNoChildren \\Subscribed) \".\" \"t.test8.test8\"",
            "* LIST (\\HasNoChildren \\Subscribed) \".\" \"t.test8.test9\"",
        ],
        "{out}"
    );
    // RECURSIVEMATCH: a parent whose subscribed children the pattern leaves out.
    let out = c.ok("l3 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" t.test2% RETURN (CHILDREN)");
    assert_eq!(
        list_lines(&out),
        ["* LIST (\\Noselect \\HasChildren) \".\" \"t.test2\" (\"CHILDINFO\" (\"SUBSCRIBED\"))"],
        "{out}"
    );
    let out = c.ok("l4 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" t*test8");
    assert_eq!(
        list_lines(&out),
        [
            "* LIST (\\Noselect \\HasChildren) \".\" \"t.test8\" (\"CHILDINFO\" (\"SUBSCRIBED\"))",
            "* LIST (\\HasNoChildren \\Subscribed) \".\" \"t.test8.test8\"",
        ],
        "{out}"
    );
    let out = c.ok("l5 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (t.test2 t.test2.test1)");
    assert_eq!(
        list_lines(&out),
        ["* LIST (\\HasNoChildren \\Subscribed) \".\" \"t.test2.test1\""],
        "{out}"
    );
    // RETURN (SUBSCRIBED) marks them among all folders.
    let out = c.ok("l6 LIST \"\" t.% RETURN (CHILDREN SUBSCRIBED)");
    assert!(
        out.contains("* LIST (\\HasNoChildren \\Subscribed) \".\" \"t.test1\"\r\n"),
        "{out}"
    );
    assert!(
        out.contains("* LIST (\\Noselect \\HasChildren) \".\" \"t.test2\"\r\n"),
        "{out}"
    );
    // REMOTE changes nothing here; a plain LIST is as before.
    let remote = c.ok("l7 LIST (REMOTE) \"\" t.%");
    let plain = c.ok("l7 LIST \"\" t.%");
    assert_eq!(remote, plain);
    // What RFC 5258 calls errors.
    for (i, command) in [
        "LIST (imaptest) \"\" \"\"",
        "LIST (RECURSIVEMATCH) \"\" \"\"",
        "LIST (RECURSIVEMATCH REMOTE) \"\" \"\"",
        "LIST \"\" \"\" RETURN (imaptest)",
    ]
    .into_iter()
    .enumerate()
    {
        let out = c.cmd(&format!("e{i} {command}"));
        assert!(out.starts_with(&format!("e{i} BAD ")), "{command}: {out}");
    }
}

#[test]
fn list_status_gives_each_selectable_folder_its_counts() {
    let h = Harness::new();
    h.deliver("one");
    h.deliver("two");
    let mut c = h.logged_in();
    c.ok("c CREATE Work.Plans");
    c.ok("s SELECT INBOX");
    c.ok("st STORE 1 +FLAGS (\\Seen)");
    c.ok("u UNSELECT");
    let out = c.ok("l LIST \"\" (INBOX Work*) RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "* LIST (\\HasNoChildren) \".\" \"INBOX\"",
            "* STATUS \"INBOX\" (MESSAGES 2 UNSEEN 1 UIDNEXT 3)",
            "* LIST (\\HasNoChildren) \".\" \"Work.Plans\"",
            "* STATUS \"Work.Plans\" (MESSAGES 0 UNSEEN 0 UIDNEXT 1)",
            "l OK LIST completed",
        ],
        "{out}"
    );
    // Not a folder: no STATUS (RFC 5819 §2).
    let out = c.ok("l1 LIST \"\" Work% RETURN (STATUS (MESSAGES))");
    assert_eq!(
        out,
        "* LIST (\\Noselect \\HasChildren) \".\" \"Work\"\r\nl1 OK LIST completed\r\n"
    );
    let out = c.cmd("l2 LIST \"\" * RETURN (STATUS (SIZE))");
    assert!(out.starts_with("l2 BAD"), "{out}");
    // Reference and patterns together stay within max_list_pattern_length (1024).
    let patterns = vec!["x".repeat(100); 11].join(" ");
    let out = c.cmd(&format!("l3 LIST \"\" ({patterns})"));
    assert!(out.starts_with("l3 NO [LIMIT]"), "{out}");
}
