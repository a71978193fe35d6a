//! Golden messages in `fixtures/distribute/`, each run once with LF and once
//! with CRLF line ends. Each fixture says what it expects in its own header:
//! `X-Test-Expect` (the recipients, in order), `X-Test-Found` (`visible`,
//! `default` or `envelope NAME`) and, for the default user, `X-Test-Reason`.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::path::PathBuf;

use qs_directory::{Directory, Options, Secret};

use super::*;

/// example.test (company.example is an alias of it) with alice, bob, carol
/// and the postmaster; info@ is an alias of alice and bob.
fn directory() -> (tempfile::TempDir, Directory) {
    let dir = tempfile::tempdir().unwrap();
    let d = Directory::create(dir.path().join("directory.json"), Options::default()).unwrap();
    d.add_domain("example.test").unwrap();
    d.add_domain_alias("company.example", "example.test")
        .unwrap();
    let pw = Secret::from("pw");
    for u in ["alice", "bob", "carol", "postmaster"] {
        d.add_user(&format!("{u}@example.test"), "", &pw).unwrap();
    }
    d.set_postmaster("postmaster@example.test").unwrap();
    d.add_alias(
        "info@example.test",
        ["alice@example.test", "bob@example.test"],
    )
    .unwrap();
    (dir, d)
}

fn rules() -> Rules {
    Rules {
        headers: [
            "Delivered-To",
            "X-Original-To",
            "X-Envelope-To",
            "Envelope-To",
        ]
        .map(String::from)
        .to_vec(),
        only_listed_headers: false,
        default_user: String::new(),
    }
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/distribute");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The same message with LF and with CRLF line ends.
fn both_line_ends(bytes: &[u8]) -> [Vec<u8>; 2] {
    let lf: Vec<u8> = bytes.iter().copied().filter(|&b| b != b'\r').collect();
    let mut crlf = Vec::with_capacity(lf.len() * 2);
    for &b in &lf {
        if b == b'\n' {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    [lf, crlf]
}

fn expectation(message: &[u8], name: &str) -> Option<String> {
    qs_queue::message::values(message, name).into_iter().next()
}

#[test]
fn golden_messages_reach_the_right_people() {
    let (_dir, d) = directory();
    let snapshot = d.snapshot();
    let rules = rules();
    let parser = parser(&rules);
    let found = fixtures();
    assert!(found.len() >= 8, "fixtures found: {}", found.len());
    for (name, bytes) in found {
        for message in both_line_ends(&bytes) {
            let header = read_header(&parser, &message, &rules);
            let got = distribute(&header, &rules, &snapshot).unwrap();
            let expect: Vec<String> = expectation(&message, "X-Test-Expect")
                .unwrap()
                .split(',')
                .map(|a| a.trim().to_string())
                .collect();
            assert_eq!(got.recipients, expect, "{name}: {got:?}");
            let found = match &got.found {
                Found::Envelope(h) => format!("envelope {h}"),
                Found::Visible => "visible".into(),
                Found::Default => "default".into(),
                Found::SingleUser => "single".into(),
            };
            assert_eq!(
                found,
                expectation(&message, "X-Test-Found").unwrap(),
                "{name}"
            );
            assert_eq!(
                got.reason(),
                expectation(&message, "X-Test-Reason"),
                "{name}"
            );
            assert!(header.message_id.is_some(), "{name}");
        }
    }
}

#[test]
fn only_listed_headers_ignores_to_and_cc() {
    let (_dir, d) = directory();
    let snapshot = d.snapshot();
    let mut rules = rules();
    rules.only_listed_headers = true;
    rules.default_user = "carol@example.test".into();
    let parser = parser(&rules);
    let message = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/distribute/to-and-cc.eml"),
    )
    .unwrap();
    let header = read_header(&parser, &message, &rules);
    let got = distribute(&header, &rules, &snapshot).unwrap();
    assert_eq!(got.recipients, ["carol@example.test"]);
    assert_eq!(got.found, Found::Default);
    assert_eq!(
        got.reason().as_deref(),
        Some("no local recipient found in the header")
    );
}

#[test]
fn the_configured_header_order_decides() {
    let (_dir, d) = directory();
    let snapshot = d.snapshot();
    let message = b"Delivered-To: alice@example.test\r\nX-Original-To: bob@example.test\r\nTo: carol@example.test\r\n\r\nx\r\n";
    let mut rules = rules();
    let header = read_header(&parser(&rules), message, &rules);
    assert_eq!(
        distribute(&header, &rules, &snapshot).unwrap().recipients,
        ["alice@example.test"]
    );
    rules.headers = vec!["X-Original-To".into(), "Delivered-To".into()];
    let header = read_header(&parser(&rules), message, &rules);
    assert_eq!(
        distribute(&header, &rules, &snapshot).unwrap().recipients,
        ["bob@example.test"]
    );
}

#[test]
fn a_message_without_a_header_goes_to_the_default_user() {
    let (_dir, d) = directory();
    let snapshot = d.snapshot();
    let rules = rules();
    for message in [
        &b""[..],
        b"\r\njust a body\r\n",
        b"garbage without colon\r\n",
    ] {
        let header = read_header(&parser(&rules), message, &rules);
        let got = distribute(&header, &rules, &snapshot).unwrap();
        assert_eq!(got.recipients, ["postmaster@example.test"]);
        assert_eq!(header.message_id, None);
    }
}

#[test]
fn the_return_path_is_the_provider_envelope_sender() {
    let rules = rules();
    let p = parser(&rules);
    let h = read_header(&p, b"Return-Path: <bounce@lists.example>\r\n\r\n", &rules);
    assert_eq!(h.return_path.as_deref(), Some("bounce@lists.example"));
    let h = read_header(&p, b"Return-Path: <>\r\n\r\n", &rules);
    assert_eq!(h.return_path, None);
}

#[test]
fn the_same_message_id_twice_in_one_batch_reaches_each_person_once() {
    use std::collections::HashMap;

    use crate::state::{Delivered, id_key};

    let (_dir, d) = directory();
    let snapshot = d.snapshot();
    let rules = rules();
    let parser = parser(&rules);
    // The message to alice and bob; the list's copy of it for alice; the
    // provider's copy of it for carol (in Bcc); the message again.
    let batch: [&[u8]; 4] = [
        b"To: alice@example.test\r\nCc: bob@example.test\r\nMessage-ID: <same@x>\r\n\r\n1\r\n",
        b"X-Original-To: alice@example.test\r\nList-Id: <l.x>\r\nTo: l@lists.x\r\nMessage-ID: <same@x>\r\n\r\n2\r\n",
        b"Delivered-To: carol@example.test\r\nTo: alice@example.test\r\nMessage-ID: <same@x>\r\n\r\n3\r\n",
        b"To: alice@example.test\r\nCc: bob@example.test\r\nMessage-ID: <same@x>\r\n\r\n4\r\n",
    ];
    // The state area, as fetch uses it.
    let mut records: HashMap<String, Delivered> = HashMap::new();
    let mut queued: Vec<Vec<String>> = Vec::new();
    for message in batch {
        let header = read_header(&parser, message, &rules);
        let got = distribute(&header, &rules, &snapshot).unwrap();
        let key = id_key(header.message_id.as_deref().unwrap());
        let previous = records.get(&key);
        let new = match previous {
            Some(p) => p.not_yet(&got.recipients),
            None => got.recipients.clone(),
        };
        if !new.is_empty() {
            let base = previous.cloned().unwrap_or(Delivered {
                first: 1,
                to: Vec::new(),
            });
            records.insert(key, base.with(&new));
        }
        queued.push(new);
    }
    assert_eq!(
        queued,
        vec![
            vec![
                "alice@example.test".to_string(),
                "bob@example.test".to_string()
            ],
            vec![],
            vec!["carol@example.test".to_string()],
            vec![],
        ]
    );
}
