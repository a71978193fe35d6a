use super::*;

/// A multipart/mixed with a text part, an encapsulated multipart/alternative message
/// and a base64 attachment with a UTF-8 file name.
const NESTED: &[u8] = b"From: =?UTF-8?Q?Zo=C3=AB?= <zoe@example.org>\r\n\
To: undisclosed: ;, Bob <bob@example.test>\r\n\
Subject: =?UTF-8?B?w6l0w6k=?= report\r\n\
Date: Tue, 1 Jul 2025 10:00:00 +0200\r\n\
Message-ID: <m1@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\
\r\n\
preamble\r\n\
--XX\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
h\xc3\xa9llo\r\n\
--XX\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: c@d.example\r\n\
Subject: inner\r\n\
Content-Type: multipart/alternative; boundary=YY\r\n\
\r\n\
--YY\r\n\
\r\n\
inner text\r\n\
--YY\r\n\
Content-Type: text/html\r\n\
\r\n\
<b>x</b>\r\n\
--YY--\r\n\
\r\n\
--XX\r\n\
Content-Type: application/pdf; name=\"=?UTF-8?Q?r=C3=A9sum=C3=A9.pdf?=\"\r\n\
Content-Disposition: attachment; filename=\"cv.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Language: en, fr\r\n\
\r\n\
SGVsbG8=\r\n\
--XX--\r\n\
epilogue\r\n";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn spec(path: &[u32], what: SectionWhat) -> SectionSpec {
    SectionSpec {
        path: path.to_vec(),
        what,
    }
}

#[test]
fn envelope_keeps_raw_text_and_splits_addresses() {
    let summary = summarize_header(NESTED);
    assert_eq!(
        text(&summary.envelope),
        "(\"Tue, 1 Jul 2025 10:00:00 +0200\" \"=?UTF-8?B?w6l0w6k=?= report\" \
         ((\"=?UTF-8?B?Wm/Dqw==?=\" NIL \"zoe\" \"example.org\")) \
         ((\"=?UTF-8?B?Wm/Dqw==?=\" NIL \"zoe\" \"example.org\")) \
         ((\"=?UTF-8?B?Wm/Dqw==?=\" NIL \"zoe\" \"example.org\")) \
         ((NIL NIL \"undisclosed\" NIL)(NIL NIL NIL NIL)(\"Bob\" NIL \"bob\" \"example.test\")) \
         NIL NIL NIL \"<m1@example.org>\")"
    );
    assert_eq!(summary.sent, NaiveDate::from_ymd_opt(2025, 7, 1));
}

#[test]
fn envelope_of_a_bare_message() {
    let summary = summarize_header(b"no header at all");
    assert!(text(&summary.envelope).starts_with("(NIL NIL"));
    let summary = summarize_header(b"Subject: one\r\n\ttwo\r\n\r\nbody");
    assert_eq!(
        text(&summary.envelope),
        "(NIL \"one\ttwo\" NIL NIL NIL NIL NIL NIL NIL NIL)"
    );
    assert_eq!(summary.sent, None);
}

#[test]
fn bodystructure_of_nested_multiparts() {
    let s = structure(NESTED);
    let expected_body = "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"8bit\" 6 1)\
(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 158 \
(NIL \"inner\" ((NIL NIL \"c\" \"d.example\")) ((NIL NIL \"c\" \"d.example\")) ((NIL NIL \"c\" \"d.example\")) NIL NIL NIL NIL NIL) \
((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 1)(\"text\" \"html\" NIL NIL NIL \"7bit\" 8 1) \"alternative\") 12)\
(\"application\" \"pdf\" (\"name\" \"=?UTF-8?B?csOpc3Vtw6kucGRm?=\") NIL NIL \"base64\" 8) \"mixed\")";
    assert_eq!(text(&s.body), expected_body);
    let bs = text(&s.bodystructure);
    assert!(
        bs.starts_with(
            "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"8bit\" 6 1 NIL NIL NIL NIL)"
        ),
        "{bs}"
    );
    assert!(
        bs.contains(
            "\"base64\" 8 NIL (\"attachment\" (\"filename\" \"cv.pdf\")) (\"en\" \"fr\") NIL)"
        ),
        "{bs}"
    );
    assert!(
        bs.ends_with(" \"mixed\" (\"boundary\" \"XX\") NIL NIL NIL)"),
        "{bs}"
    );
}

#[test]
fn bodystructure_of_a_simple_message() {
    let s = structure(b"Subject: x\r\n\r\nline one\r\nline two\r\n");
    assert_eq!(
        text(&s.bodystructure),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 20 2 NIL NIL NIL NIL)"
    );
    assert_eq!(
        text(&s.body),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 20 2)"
    );
}

#[test]
fn sections_address_parts_headers_and_texts() {
    let cases: Vec<(SectionSpec, &str)> = vec![
        (spec(&[1], SectionWhat::All), "h\u{e9}llo"),
        (
            spec(&[1], SectionWhat::Mime),
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        ),
        (
            spec(&[2], SectionWhat::Header),
            "From: c@d.example\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n",
        ),
        (
            spec(&[2], SectionWhat::HeaderFields(vec!["subject".into()])),
            "Subject: inner\r\n\r\n",
        ),
        (
            spec(&[2], SectionWhat::Text),
            "--YY\r\n\r\ninner text\r\n--YY\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n--YY--\r\n",
        ),
        (spec(&[2, 1], SectionWhat::All), "inner text"),
        (spec(&[2, 2], SectionWhat::All), "<b>x</b>"),
        (
            spec(&[2, 2], SectionWhat::Mime),
            "Content-Type: text/html\r\n\r\n",
        ),
        (spec(&[3], SectionWhat::All), "SGVsbG8="),
        (spec(&[4], SectionWhat::All), ""),
        (spec(&[1, 1], SectionWhat::All), ""),
        (spec(&[1], SectionWhat::Header), ""),
        (
            spec(
                &[],
                SectionWhat::HeaderFields(vec!["Message-Id".into(), "X-None".into()]),
            ),
            "Message-ID: <m1@example.org>\r\n\r\n",
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(text(&section(NESTED, &spec)), want, "{spec:?}");
    }
    let all = section(NESTED, &spec(&[], SectionWhat::All));
    assert_eq!(all, NESTED);
    let header = section(NESTED, &spec(&[], SectionWhat::Header));
    let body = section(NESTED, &spec(&[], SectionWhat::Text));
    assert_eq!([header.clone(), body].concat(), NESTED);
    assert!(header.ends_with(b"boundary=\"XX\"\r\n\r\n"));
    let not = section(
        NESTED,
        &spec(
            &[],
            SectionWhat::HeaderFieldsNot(vec![
                "from".into(),
                "to".into(),
                "subject".into(),
                "date".into(),
            ]),
        ),
    );
    assert!(text(&not).starts_with("Message-ID:"), "{}", text(&not));
}

#[test]
fn a_non_multipart_message_has_part_one() {
    let raw = b"Subject: x\r\n\r\nthe body\r\n";
    assert_eq!(section(raw, &spec(&[1], SectionWhat::All)), b"the body\r\n");
    assert_eq!(section(raw, &spec(&[2], SectionWhat::All)), b"");
    // message/rfc822 at the top: part 1 is the message inside.
    let raw = b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\ninner\r\n";
    assert_eq!(
        section(raw, &spec(&[1], SectionWhat::All)),
        b"Subject: in\r\n\r\ninner\r\n"
    );
    assert_eq!(section(raw, &spec(&[1, 1], SectionWhat::All)), b"inner\r\n");
    assert_eq!(
        section(raw, &spec(&[1], SectionWhat::Header)),
        b"Subject: in\r\n\r\n"
    );
}

#[test]
fn header_fields_keep_continuations() {
    let header = b"A: 1\r\nB: two\r\n  more\r\nC: 3\r\n\r\nbody";
    assert_eq!(
        filter_fields(header, &["b".into()], true),
        b"B: two\r\n  more\r\n\r\n"
    );
    assert_eq!(
        filter_fields(header, &["b".into()], false),
        b"A: 1\r\nC: 3\r\n\r\n"
    );
    assert_eq!(header_len(header), 30);
    assert_eq!(header_len(b"A: 1\n\nx"), 6);
    assert_eq!(header_len(b"A: 1\r\n"), 6);
}

#[test]
fn search_reads_decoded_fields_and_text() {
    let s = SearchText::new(NESTED);
    assert!(s.field_contains("from", "zoë"));
    assert!(s.field_contains("from", "zoe@example.org"));
    assert!(s.field_contains("subject", "été"));
    assert!(s.field_contains("message-id", ""));
    assert!(!s.field_contains("x-missing", ""));
    assert!(s.body_contains("héllo"));
    assert!(s.body_contains("inner text"));
    assert!(!s.body_contains("preamble-not-there"));
    assert!(s.text_contains("report"));
    assert!(s.text_contains("héllo"));
}

#[test]
fn binary_sections_undo_the_transfer_encoding() {
    // Not MIME: part 1 is the body, decoded as the message's header says.
    let single =
        b"Subject: x\r\nContent-Transfer-Encoding: base64 (scanned)\r\n\r\naGVs\r\nbG8=\r\n";
    assert_eq!(binary_section(single, &[1]).unwrap(), b"hello");
    assert_eq!(binary_section(single, &[]).unwrap(), single.to_vec());
    assert_eq!(binary_section(single, &[2]).unwrap(), b"");

    let multi = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
        --b\r\nContent-Type: text/plain\r\n\r\nplain =41\r\n\
        --b\r\nContent-Transfer-Encoding: base64\r\n\r\n!!not base64!!\r\n\
        --b\r\nContent-Transfer-Encoding: x-gzip\r\n\r\nxx\r\n\
        --b--\r\n";
    // No Content-Transfer-Encoding: 7bit, given as it is.
    assert_eq!(binary_section(multi, &[1]).unwrap(), b"plain =41");
    assert_eq!(
        binary_section(multi, &[2]),
        Err(BinaryError::Damaged("base64"))
    );
    assert_eq!(
        binary_section(multi, &[3]),
        Err(BinaryError::UnknownEncoding("x-gzip".into()))
    );
    assert_eq!(binary_section(multi, &[4]).unwrap(), b"");
}
