//! Transcripts of CONDSTORE and QRESYNC (RFC 7162): modification sequences in FETCH,
//! STORE and SEARCH, conditional STORE, STATUS HIGHESTMODSEQ, and a client that
//! comes back with what it knew and learns only what changed.

use super::*;

/// The number in `KEY (n)` or `[KEY n]` of the first line that has `key`.
fn number_after(out: &str, key: &str) -> u64 {
    let at = out
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in\n{out}"))
        + key.len();
    out[at..]
        .trim_start_matches([' ', '('])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key} in\n{out}"))
}

#[test]
fn modification_sequences_grow_with_each_change_and_survive_a_new_process() {
    let h = Harness::new();
    for body in ["one", "two", "three"] {
        h.deliver(body);
    }
    let mut c = h.logged_in();
    let out = c.ok("s SELECT INBOX");
    let first = number_after(&out, "[HIGHESTMODSEQ");
    assert!(first >= 1, "{out}");
    // FETCH MODSEQ turns CONDSTORE on: from now on FLAGS carry MODSEQ.
    let out = c.ok("f1 FETCH 1:3 (MODSEQ)");
    assert_eq!(out.matches("MODSEQ (").count(), 3, "{out}");
    let out = c.ok("st STORE 2 +FLAGS (\\Seen)");
    let after_store = number_after(&out, "MODSEQ");
    assert!(after_store > first, "{out}");
    assert!(
        out.contains("* 2 FETCH (FLAGS (\\Seen \\Recent) MODSEQ ("),
        "{out}"
    );
    // CHANGEDSINCE: only what changed.
    let out = c.ok(&format!("f2 FETCH 1:* (FLAGS) (CHANGEDSINCE {first})"));
    assert!(out.contains("* 2 FETCH ("), "{out}");
    assert!(
        !out.contains("* 1 FETCH") && !out.contains("* 3 FETCH"),
        "{out}"
    );
    // SEARCH MODSEQ, with the highest sequence found.
    let out = c.ok(&format!("se SEARCH MODSEQ {after_store}"));
    assert!(
        out.contains(&format!("* SEARCH 2 (MODSEQ {after_store})")),
        "{out}"
    );
    let out = c.ok("sa STATUS INBOX (HIGHESTMODSEQ MESSAGES)");
    assert!(
        out.contains(&format!("(HIGHESTMODSEQ {after_store} MESSAGES 3)")),
        "{out}"
    );
    c.ok("l LOGOUT");

    // Another process (its own shared state) reads the same sequences from the
    // index: nothing went backwards, and an unchanged folder keeps its sequence.
    let other = Harness {
        _tmp: tempfile::tempdir().unwrap(),
        settings: Settings {
            shared: Arc::new(Shared::default()),
            ..h.settings.clone()
        },
    };
    let mut c = other.logged_in();
    let out = c.ok("s SELECT INBOX");
    assert_eq!(number_after(&out, "[HIGHESTMODSEQ"), after_store, "{out}");
    let out = c.ok("f UID FETCH 1:* (FLAGS MODSEQ)");
    assert!(
        out.contains(&format!("FLAGS (\\Seen) MODSEQ ({after_store})")),
        "{out}"
    );
}

#[test]
fn a_conditional_store_changes_only_what_did_not_change_since() {
    let h = Harness::new();
    for body in ["one", "two"] {
        h.deliver(body);
    }
    let mut c = h.logged_in();
    let out = c.ok("s SELECT INBOX (CONDSTORE)");
    let known = number_after(&out, "[HIGHESTMODSEQ");
    // Another client changes message 1 meanwhile.
    let mut other = h.logged_in();
    other.ok("s SELECT INBOX");
    other.ok("st STORE 1 +FLAGS.SILENT (\\Flagged)");
    // UNCHANGEDSINCE the sequence we knew: message 1 fails, 2 is changed.
    let out = c.cmd(&format!(
        "cs UID STORE 1:2 (UNCHANGEDSINCE {known}) +FLAGS.SILENT (\\Deleted)"
    ));
    assert!(out.contains("cs OK [MODIFIED 1]"), "{out}");
    // Silent, but each new MODSEQ is told (RFC 7162 §3.1.3).
    assert!(out.contains("FETCH (UID 2 MODSEQ ("), "{out}");
    let out = c.ok("f FETCH 1:2 (FLAGS)");
    assert!(
        out.contains("* 1 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ ("),
        "{out}"
    );
    assert!(
        out.contains("* 2 FETCH (FLAGS (\\Deleted \\Recent) MODSEQ ("),
        "{out}"
    );
    // The other session, CONDSTORE off, hears of the change without MODSEQ.
    let out = other.ok("n NOOP");
    assert!(out.contains("* 2 FETCH (FLAGS (\\Deleted))"), "{out}");
    // UNCHANGEDSINCE 0 fails for every message that exists.
    let out = c.cmd("c0 STORE 1:2 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)");
    assert!(out.contains("c0 OK [MODIFIED 1:2]"), "{out}");
}

#[test]
fn qresync_tells_a_returning_client_what_vanished_and_what_changed() {
    let h = Harness::new();
    for body in ["one", "two", "three", "four"] {
        h.deliver(body);
    }
    let mut c = h.logged_in();
    // Without ENABLE QRESYNC the parameter is refused.
    let out = c.cmd("s0 SELECT INBOX (QRESYNC (1 1))");
    assert!(out.contains("s0 BAD"), "{out}");
    let out = c.ok("e ENABLE QRESYNC");
    assert!(out.contains("* ENABLED QRESYNC"), "{out}");
    let out = c.ok("s SELECT INBOX");
    let validity = number_after(&out, "[UIDVALIDITY");
    let known = number_after(&out, "[HIGHESTMODSEQ");
    c.ok("l LOGOUT");

    // Meanwhile: message 2 is expunged, message 3 flagged.
    let mut other = h.logged_in();
    other.ok("s SELECT INBOX");
    other.ok("d STORE 2 +FLAGS.SILENT (\\Deleted)");
    other.ok("x EXPUNGE");
    other.ok("f STORE 2 +FLAGS.SILENT (\\Flagged)");

    let mut c = h.logged_in();
    c.ok("e ENABLE QRESYNC");
    let out = c.ok(&format!("s SELECT INBOX (QRESYNC ({validity} {known}))"));
    assert!(out.contains("* VANISHED (EARLIER) 2\r\n"), "{out}");
    assert!(
        out.contains("* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ ("),
        "{out}"
    );
    assert!(!out.contains("UID 1 ") && !out.contains("UID 4 "), "{out}");
    // Reselecting says the old folder closed before the new one's answers.
    let out = c.ok(&format!(
        "s2 EXAMINE INBOX (QRESYNC ({validity} {known} 1:4))"
    ));
    assert!(out.starts_with("* OK [CLOSED]"), "{out}");
    assert!(out.contains("* VANISHED (EARLIER) 2\r\n"), "{out}");
    // A wrong UIDVALIDITY gets a plain SELECT.
    let out = c.ok(&format!(
        "s3 SELECT INBOX (QRESYNC ({} {known}))",
        validity + 1
    ));
    assert!(!out.contains("VANISHED") && !out.contains("FETCH"), "{out}");

    // With QRESYNC on, expunges are told as VANISHED, and UID FETCH can ask for
    // them.
    other.ok("d STORE 1 +FLAGS.SILENT (\\Deleted)");
    other.ok("x EXPUNGE");
    let out = c.ok("n NOOP");
    assert!(out.contains("* VANISHED 1\r\n"), "{out}");
    assert!(!out.contains("EXPUNGE"), "{out}");
    let out = c.ok(&format!(
        "f UID FETCH 1:* (FLAGS) (CHANGEDSINCE {known} VANISHED)"
    ));
    assert!(out.contains("* VANISHED (EARLIER) 1:2\r\n"), "{out}");
    assert!(
        out.contains("FETCH (UID 3 FLAGS (\\Flagged) MODSEQ ("),
        "{out}"
    );
    let out = c.cmd(&format!(
        "v FETCH 1:* (FLAGS) (CHANGEDSINCE {known} VANISHED)"
    ));
    assert!(out.contains("v BAD"), "{out}");
}

#[test]
fn flags_changed_by_another_program_get_a_new_sequence() {
    let h = Harness::new();
    h.deliver("one");
    let mut c = h.logged_in();
    let out = c.ok("s SELECT INBOX (CONDSTORE)");
    let known = number_after(&out, "[HIGHESTMODSEQ");
    // A program renames the file to add the Seen flag, as a Maildir client would.
    let cur = h.mailbox().inbox().path().join("cur");
    let file = std::fs::read_dir(&cur)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let base = name.split(":2,").next().unwrap();
    std::fs::rename(&file, cur.join(format!("{base}:2,S"))).unwrap();
    let out = c.ok("n NOOP");
    assert!(
        out.contains("* 1 FETCH (FLAGS (\\Seen \\Recent) MODSEQ ("),
        "{out}"
    );
    assert!(number_after(&out, "MODSEQ") > known, "{out}");
}
