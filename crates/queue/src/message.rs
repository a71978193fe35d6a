//! Message bytes as every module handles them: raw RFC 5322 header handling
//! that never re-encodes anything (finding the header block, reading fields
//! unfolded, removing fields, prepending trace fields: the body and every
//! untouched field stay byte-identical), line-end normalisation, the
//! `sendmail -t` envelope, RFC 5322 dates, and the trace fields that tell a
//! mail loop ([`LoopTrace`]).

use crate::reply::Reply;

/// The field smtp-server adds on top of a message that a DMARC policy of
/// `quarantine` put aside; core-queue's local delivery files such a message
/// into the recipient's Junk folder. smtp-server removes any such field that
/// arrives from outside, on every listener, so local delivery believes it
/// only on mail that came through smtp-server (`Origin::SMTP_SERVER`).
pub const JUNK_FIELD: &str = "X-Quicksilver-Junk";

/// One header field as it stands in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name as written (compare with `eq_ignore_ascii_case`).
    pub name: &'a str,
    /// The raw value, folding included, without the final line end.
    pub raw_value: &'a [u8],
    /// The byte range of the whole field, line end(s) included.
    pub span: std::ops::Range<usize>,
}

impl Field<'_> {
    /// The value unfolded (CRLF/LF followed by white space becomes that white
    /// space) and trimmed, decoded lossily as UTF-8.
    pub fn value(&self) -> String {
        let text = String::from_utf8_lossy(self.raw_value);
        let mut out = String::with_capacity(text.len());
        for line in text.split('\n') {
            out.push_str(line.trim_end_matches('\r'));
        }
        out.trim().to_string()
    }
}

/// Where the header block ends: the index just past the empty line, or the whole
/// length when the message has no body separator.
pub fn header_end(message: &[u8]) -> usize {
    let mut i = 0;
    while i < message.len() {
        // A line starting here that is empty ends the header block.
        if message[i..].starts_with(b"\r\n") {
            return i + 2;
        }
        if message[i] == b'\n' {
            return i + 1;
        }
        match message[i..].iter().position(|&b| b == b'\n') {
            Some(n) => i += n + 1,
            None => return message.len(),
        }
    }
    message.len()
}

/// Every header field, in order. Lines that are not `name: value` (a broken
/// header) end the field list there, as most parsers do.
pub fn fields(message: &[u8]) -> Vec<Field<'_>> {
    let end = header_end(message);
    let block = &message[..end];
    let mut out = Vec::new();
    let mut i = 0;
    while i < block.len() {
        if block[i] == b'\r' || block[i] == b'\n' {
            break; // the empty line
        }
        let Some(colon) = block[i..].iter().position(|&b| b == b':') else {
            break;
        };
        let line_end = block[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(block.len(), |n| i + n + 1);
        if i + colon >= line_end {
            break; // no colon on this line
        }
        let Ok(name) = std::str::from_utf8(&block[i..i + colon]) else {
            break;
        };
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b >= 127) {
            break;
        }
        // The field continues while the next line starts with white space.
        let mut end_of_field = line_end;
        while end_of_field < block.len() && matches!(block[end_of_field], b' ' | b'\t') {
            end_of_field = block[end_of_field..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(block.len(), |n| end_of_field + n + 1);
        }
        let mut value_end = end_of_field;
        while value_end > i + colon + 1 && matches!(block[value_end - 1], b'\r' | b'\n') {
            value_end -= 1;
        }
        out.push(Field {
            name,
            raw_value: &block[i + colon + 1..value_end],
            span: i..end_of_field,
        });
        i = end_of_field;
    }
    out
}

/// The unfolded values of every field called `name`.
pub fn values(message: &[u8], name: &str) -> Vec<String> {
    fields(message)
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case(name))
        .map(Field::value)
        .collect()
}

/// How many fields are called `name`.
pub fn count(message: &[u8], name: &str) -> usize {
    fields(message)
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case(name))
        .count()
}

/// The message without the fields whose names are in `names` (case-insensitive).
pub fn remove_fields(message: &[u8], names: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut at = 0;
    for field in fields(message) {
        if names.iter().any(|n| field.name.eq_ignore_ascii_case(n)) {
            out.extend_from_slice(&message[at..field.span.start]);
            at = field.span.end;
        }
    }
    out.extend_from_slice(&message[at..]);
    out
}

/// `lines` (each a whole field without line end) followed by the message.
pub fn prepend(lines: &[String], message: &[u8]) -> Vec<u8> {
    let extra: usize = lines.iter().map(|l| l.len() + 2).sum();
    let mut out = Vec::with_capacity(extra + message.len());
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(message);
    out
}

/// An RFC 5322 date in UTC, e.g. `Mon, 23 Nov 2026 19:15:00 +0000`.
pub fn rfc5322_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The bare address inside a field value like `Name <a@b>` or `a@b`.
pub fn bare_address(value: &str) -> String {
    let v = value.trim();
    match (v.rfind('<'), v.rfind('>')) {
        (Some(l), Some(r)) if l < r => v[l + 1..r].trim().to_string(),
        _ => v.to_string(),
    }
}

/// More Received fields than this is a mail loop (RFC 5321 §6.3).
pub const MAX_RECEIVED: usize = 100;

/// The trace fields that tell a mail loop: how many `Received` fields a
/// message has, and the mailboxes its `Delivered-To` fields (RFC 9228) say it
/// was already delivered to. smtp-server reads them at the end of DATA and
/// core-queue's local delivery before each copy, with the same rules, so a
/// loop that can be seen on arrival is refused there and never bounced later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopTrace {
    received: usize,
    /// Lower-cased bare addresses.
    delivered_to: Vec<String>,
}

impl LoopTrace {
    /// Reads the header of `message` (never its body).
    pub fn read(message: &[u8]) -> LoopTrace {
        let fields = fields(message);
        LoopTrace {
            received: fields
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case("Received"))
                .count(),
            delivered_to: fields
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case("Delivered-To"))
                .map(|f| bare_address(&f.value()).to_ascii_lowercase())
                .collect(),
        }
    }

    /// How many Received fields there are.
    pub fn received(&self) -> usize {
        self.received
    }

    /// More than [`MAX_RECEIVED`] Received fields: a loop, whoever receives it.
    pub fn too_many_received(&self) -> bool {
        self.received > MAX_RECEIVED
    }

    /// Whether a `Delivered-To` field names `mailbox` (any case).
    pub fn delivered_to(&self, mailbox: &str) -> bool {
        let mailbox = mailbox.to_ascii_lowercase();
        self.delivered_to.contains(&mailbox)
    }

    /// Why delivering to `mailbox` would be a loop, as the permanent failure
    /// reply (`554 5.4.6 ...`), or `None` when it would not.
    pub fn loop_reply(&self, mailbox: &str) -> Option<Reply> {
        if self.too_many_received() {
            return Some(Reply::new(
                554,
                "5.4.6",
                &format!(
                    "too many Received header fields ({}): mail loop",
                    self.received
                ),
            ));
        }
        self.delivered_to(mailbox).then(|| {
            Reply::new(
                554,
                "5.4.6",
                &format!("<{mailbox}>: mail loop (already delivered to this address)"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\nFrom: Alice <alice@example.test>\r\nBcc: secret@example.test,\r\n  other@example.test\r\nSubject: hi\r\n\r\nBody: not a header\r\n";

    #[test]
    fn fields_are_found_and_unfolded() {
        let f = fields(MSG);
        let names: Vec<&str> = f.iter().map(|f| f.name).collect();
        assert_eq!(names, ["Received", "From", "Bcc", "Subject"]);
        assert_eq!(f[0].value(), "from a\tby b; Mon, 1 Jan 2024 00:00:00 +0000");
        assert_eq!(
            values(MSG, "bcc"),
            ["secret@example.test,  other@example.test"]
        );
        assert_eq!(count(MSG, "received"), 1);
    }

    #[test]
    fn removing_a_folded_field_leaves_the_rest_byte_identical() {
        let out = remove_fields(MSG, &["BCC"]);
        assert_eq!(
            out,
            b"Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\nFrom: Alice <alice@example.test>\r\nSubject: hi\r\n\r\nBody: not a header\r\n"
        );
    }

    #[test]
    fn the_body_is_never_read_as_headers() {
        assert!(values(MSG, "Body").is_empty());
        let lf = b"A: 1\n\nB: 2\n";
        assert_eq!(fields(lf).len(), 1);
        assert_eq!(header_end(lf), 6);
    }

    #[test]
    fn a_message_without_a_body_is_all_header() {
        let m = b"Subject: x\r\nFrom: y";
        assert_eq!(header_end(m), m.len());
        assert_eq!(values(m, "from"), ["y"]);
    }

    #[test]
    fn prepending_adds_crlf_lines() {
        let out = prepend(&["Return-Path: <a@b>".into()], b"X: y\r\n\r\n");
        assert_eq!(out, b"Return-Path: <a@b>\r\nX: y\r\n\r\n");
    }

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_461_300),
            "Mon, 23 Nov 2026 19:15:00 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn bare_addresses() {
        assert_eq!(bare_address("Alice <alice@x>"), "alice@x");
        assert_eq!(bare_address(" bob@y "), "bob@y");
    }

    #[test]
    fn loops_are_told_by_delivered_to_and_received_in_the_header_only() {
        let m = b"Delivered-To: Alice <ALICE@example.test>\r\nSubject: x\r\n\r\nDelivered-To: bob@example.test\r\n";
        let trace = LoopTrace::read(m);
        assert!(trace.delivered_to("alice@Example.test"));
        assert!(
            !trace.delivered_to("bob@example.test"),
            "the body is not a header"
        );
        assert_eq!(
            trace
                .loop_reply("alice@example.test")
                .map(|r| r.to_string()),
            Some(
                "554 5.4.6 <alice@example.test>: mail loop (already delivered to this address)"
                    .to_string()
            )
        );
        assert_eq!(trace.loop_reply("bob@example.test"), None);

        let hops = "Received: x\r\n".repeat(MAX_RECEIVED);
        let at_limit = LoopTrace::read(format!("{hops}\r\nx\r\n").as_bytes());
        assert!(!at_limit.too_many_received());
        let over = LoopTrace::read(format!("Received: y\r\n{hops}\r\nx\r\n").as_bytes());
        assert!(over.too_many_received());
        assert_eq!(over.received(), MAX_RECEIVED + 1);
        assert!(
            over.loop_reply("anyone@example.test")
                .unwrap()
                .text()
                .contains("too many Received header fields (101)")
        );
    }
}

/// An envelope read from a message's own header, as `sendmail -t` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEnvelope {
    /// The envelope sender ("" for none).
    pub sender: String,
    /// The recipients, in order, without duplicates.
    pub recipients: Vec<String>,
    /// The message to queue: CRLF line ends, Bcc and X-Envelope-* removed.
    pub message: Vec<u8>,
}

/// Turns every bare LF or bare CR into CRLF, so the queue only ever holds CRLF
/// lines (what SMTP puts on the wire).
pub fn normalize_line_ends(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Reads the envelope from the header: `X-Envelope-From` / `X-Envelope-To` when
/// present (then removed), else the sender from Sender or From and the recipients
/// from To, Cc and Bcc (Bcc removed). `extra_recipients` are added (sendmail's
/// command-line recipients). The error says why the message cannot be used.
pub fn envelope_from_header(
    raw: &[u8],
    use_header_recipients: bool,
    extra_recipients: &[String],
) -> Result<HeaderEnvelope, String> {
    if raw.is_empty() {
        return Err("the message is empty".into());
    }
    if raw.contains(&0) {
        return Err("the message contains a NUL byte".into());
    }
    let message = normalize_line_ends(raw);
    if fields(&message).is_empty() {
        return Err(
            "the message has no header (it must start with fields like \"From: ...\")".into(),
        );
    }
    let parsed = mail_parser::MessageParser::default()
        .parse_headers(&message)
        .ok_or_else(|| "the header cannot be parsed".to_string())?;
    let list = |addr: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        addr.map(|a| {
            a.iter()
                .filter_map(|x| x.address().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
    };

    let envelope_from = values(&message, "X-Envelope-From");
    let envelope_to: Vec<String> = values(&message, "X-Envelope-To")
        .iter()
        .flat_map(|v| v.split(',').map(bare_address).collect::<Vec<_>>())
        .filter(|a| !a.is_empty())
        .collect();

    let sender = match envelope_from.first() {
        Some(v) => bare_address(v),
        None => list(parsed.sender())
            .into_iter()
            .chain(list(parsed.from()))
            .next()
            .unwrap_or_default(),
    };
    let mut recipients: Vec<String> = Vec::new();
    if !envelope_to.is_empty() {
        recipients.extend(envelope_to);
    } else if use_header_recipients {
        recipients.extend(list(parsed.to()));
        recipients.extend(list(parsed.cc()));
        recipients.extend(list(parsed.bcc()));
    }
    recipients.extend(extra_recipients.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    recipients.retain(|r| seen.insert(r.to_ascii_lowercase()));
    if recipients.is_empty() {
        return Err("no recipients: no X-Envelope-To, To, Cc or Bcc address".into());
    }
    if let Some(bad) = recipients
        .iter()
        .find(|r| !r.contains('@') || r.contains(char::is_whitespace))
    {
        return Err(format!("malformed recipient address \"{bad}\""));
    }
    Ok(HeaderEnvelope {
        sender,
        recipients,
        message: remove_fields(&message, &["Bcc", "X-Envelope-From", "X-Envelope-To"]),
    })
}

#[cfg(test)]
mod envelope_tests {
    use super::*;

    #[test]
    fn recipients_come_from_to_cc_and_bcc_and_bcc_is_removed() {
        let m = b"From: App <app@example.test>\nTo: \"Dupont, Jean\" <jean@example.test>, b@example.test\nCc: c@example.test\nBcc: hidden@example.test\nSubject: x\n\nbody\n";
        let e = envelope_from_header(m, true, &[]).unwrap();
        assert_eq!(e.sender, "app@example.test");
        assert_eq!(
            e.recipients,
            [
                "jean@example.test",
                "b@example.test",
                "c@example.test",
                "hidden@example.test"
            ]
        );
        assert!(!String::from_utf8_lossy(&e.message).contains("hidden"));
        assert!(e.message.ends_with(b"\r\n\r\nbody\r\n"));
    }

    #[test]
    fn envelope_headers_win_and_are_removed() {
        let m = b"X-Envelope-From: <bounce@example.test>\r\nX-Envelope-To: a@example.test, <b@example.test>\r\nFrom: x@example.test\r\nTo: other@example.test\r\n\r\nhi\r\n";
        let e = envelope_from_header(m, true, &[]).unwrap();
        assert_eq!(e.sender, "bounce@example.test");
        assert_eq!(e.recipients, ["a@example.test", "b@example.test"]);
        assert!(!String::from_utf8_lossy(&e.message).contains("X-Envelope"));
    }

    #[test]
    fn unusable_messages_say_why() {
        assert!(
            envelope_from_header(b"", true, &[])
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            envelope_from_header(b"just text\n", true, &[])
                .unwrap_err()
                .contains("no header")
        );
        assert!(
            envelope_from_header(b"From: a@b\n\nx\n", true, &[])
                .unwrap_err()
                .contains("no recipients")
        );
        assert!(
            envelope_from_header(b"To: a@b\n\n\0\n", true, &[])
                .unwrap_err()
                .contains("NUL")
        );
    }

    #[test]
    fn line_ends_become_crlf() {
        assert_eq!(normalize_line_ends(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
    }
}
