//! Delivery status notifications (RFC 3464 `multipart/report`): the bounce sent
//! from `<>` to the envelope sender when recipients fail permanently, and the
//! delay warning sent once when a message has waited too long.
//!
//! The report carries the original message's header only (`text/rfc822-headers`,
//! what RFC 3461 calls `RET=HDRS`), which is what the sender needs to recognise
//! it, and never its body. For mail from an unauthenticated port-25 client this
//! is a rule, not a default: its sender address is the client's word, and a
//! report that returned the body would carry the client's own text to whatever
//! address it named (backscatter). smtp-server does not offer the DSN extension,
//! and a `RET=FULL` such a client sends anyway changes nothing.
//!
//! Each recipient's `Status` is the enhanced status code of its last reply
//! (qs-queue's `Reply`; `5.0.0` or `4.0.0` when it has none), and its
//! `Diagnostic-Code` is that reply: `smtp; 550 5.1.1 ...` for an SMTP reply,
//! `x-quicksilver; ...` for a failure found here, which has no code (RFC 3464
//! §2.3.6).
//!
//! Loops and policy refusals ([`is_loop_or_policy_refusal`]) of such mail are
//! not reported to the sender at all, only to the postmaster (see
//! `Core::settle`).

use qs_queue::Reply;
use qs_queue::message::{self, rfc5322_date};

/// What happened to one recipient, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The recipient as first given (before alias expansion).
    pub original: Option<String>,
    /// The address that failed.
    pub address: String,
    /// The remote or local reply, e.g. `550 5.1.1 <x@y>: no such user`: its
    /// enhanced code is the `Status`, and it is the `Diagnostic-Code`.
    pub reply: Reply,
    /// The host that gave the reply, when it was a remote one.
    pub remote_host: Option<String>,
}

/// Failed (a bounce) or still waiting (a delay warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// Permanent failure: the message will not be delivered to these recipients.
    Failed,
    /// Still being retried.
    Delayed,
}

/// Everything needed to write a report.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// Bounce or warning.
    pub kind: ReportKind,
    /// Our host name (Reporting-MTA, From).
    pub hostname: &'a str,
    /// The queue id of the original message.
    pub queue_id: &'a str,
    /// Who gets the report (the original envelope sender).
    pub to: &'a str,
    /// When the original arrived (unix seconds).
    pub arrival: u64,
    /// Now (unix seconds).
    pub now: u64,
    /// The recipients concerned.
    pub recipients: &'a [RecipientReport],
    /// The original message (only its header is included).
    pub original: &'a [u8],
}

/// Builds the report message, CRLF line ends throughout.
pub fn build(report: &Report<'_>) -> Vec<u8> {
    let boundary = format!("{}/{}", report.queue_id, report.hostname);
    let (subject, action, default_status) = match report.kind {
        ReportKind::Failed => ("Undelivered Mail Returned to Sender", "failed", "5.0.0"),
        ReportKind::Delayed => ("Delayed Mail (still being retried)", "delayed", "4.0.0"),
    };
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push_str("\r\n");
    };
    line(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{}>",
        report.hostname
    ));
    line(&format!("To: <{}>", report.to));
    line(&format!("Subject: {subject}"));
    line(&format!("Date: {}", rfc5322_date(report.now)));
    line(&format!(
        "Message-ID: <{}.{}.{}@{}>",
        report.queue_id, action, report.now, report.hostname
    ));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\""
    ));
    line("");
    line("This is a MIME-encapsulated message.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=utf-8");
    line("Content-Transfer-Encoding: 8bit");
    line("");
    match report.kind {
        ReportKind::Failed => {
            line(&format!(
                "This is the mail system at {}. Your message could not be",
                report.hostname
            ));
            line("delivered to the recipients below. This is a permanent error;");
            line("it will not be tried again.");
        }
        ReportKind::Delayed => {
            line(&format!(
                "This is the mail system at {}. Your message has not yet been",
                report.hostname
            ));
            line("delivered to the recipients below. It is still being retried;");
            line("you do not need to send it again.");
        }
    }
    line("");
    for r in report.recipients {
        line(&format!("<{}>: {}", r.address, r.reply));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: message/delivery-status");
    line("");
    line(&format!("Reporting-MTA: dns; {}", report.hostname));
    line(&format!("X-Quicksilver-Queue-ID: {}", report.queue_id));
    line(&format!("Arrival-Date: {}", rfc5322_date(report.arrival)));
    for r in report.recipients {
        line("");
        if let Some(original) = &r.original {
            line(&format!("Original-Recipient: rfc822; {original}"));
        }
        line(&format!("Final-Recipient: rfc822; {}", r.address));
        line(&format!("Action: {action}"));
        match r.reply.enhanced() {
            Some(status) => line(&format!("Status: {status}")),
            None => line(&format!("Status: {default_status}")),
        }
        if let Some(host) = &r.remote_host {
            line(&format!("Remote-MTA: dns; {host}"));
        }
        line(&format!("Diagnostic-Code: {}", diagnostic(&r.reply)));
        line(&format!("Last-Attempt-Date: {}", rfc5322_date(report.now)));
        if report.kind == ReportKind::Delayed {
            line("Will-Retry-Until: (see the sender's server policy)");
        }
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/rfc822-headers");
    line("");
    let mut bytes = out.into_bytes();
    let header = &report.original[..message::header_end(report.original)];
    let header = String::from_utf8_lossy(header);
    for l in header.lines() {
        if !l.is_empty() {
            bytes.extend_from_slice(l.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

/// `smtp; 550 ...` for an SMTP reply (one with a code, RFC 3464 §2.3.6),
/// else our own diagnostic type for a failure found here.
fn diagnostic(reply: &Reply) -> String {
    match reply.code() {
        Some(_) => format!("smtp; {reply}"),
        None => format!("x-quicksilver; {reply}"),
    }
}

/// Whether a failure is a mail loop (`X.4.6`) or a refusal for security or
/// policy reasons (`X.7.*`, RFC 3463), by the reply's enhanced status code.
/// Those are failures a forged sender gains nothing from hearing about, and
/// the kind a spammer provokes on purpose.
pub fn is_loop_or_policy_refusal(reply: &Reply) -> bool {
    reply
        .enhanced()
        .is_some_and(|code| matches!((code.subject(), code.detail()), (4, 6) | (7, _)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report from mail.example.test about queue id ABC123, to the sender
    /// victim@remote.example.
    fn report(kind: ReportKind, recipients: &[RecipientReport], original: &[u8]) -> Vec<u8> {
        build(&Report {
            kind,
            hostname: "mail.example.test",
            queue_id: "ABC123",
            to: "victim@remote.example",
            arrival: 0,
            now: 60,
            recipients,
            original,
        })
    }

    fn bounce_of(original: &[u8]) -> Vec<u8> {
        let recipients = [RecipientReport {
            original: None,
            address: "alice@example.test".into(),
            reply: Reply::new(554, "5.4.6", "<alice@example.test>: mail loop"),
            remote_host: None,
        }];
        report(ReportKind::Failed, &recipients, original)
    }

    /// The returned part: what follows its Content-Type, up to the closing boundary.
    fn returned_part(report: &[u8]) -> String {
        let text = String::from_utf8_lossy(report).into_owned();
        let start = text
            .find("Content-Type: text/rfc822-headers\r\n\r\n")
            .unwrap();
        let part = &text[start + "Content-Type: text/rfc822-headers\r\n\r\n".len()..];
        part[..part.find("\r\n--ABC123/mail.example.test--").unwrap()].to_string()
    }

    #[test]
    fn the_returned_part_is_the_header_alone_and_never_the_body() {
        // A folded field, and a body that looks like more header and like a
        // MIME boundary: none of the body may come back.
        let original = b"From: spammer@far.example\r\nSubject: buy\r\n\tnow\r\n\r\nVisit http://spam.example\r\nX-Fake: header\r\n--ABC123/mail.example.test--\r\n";
        let report = bounce_of(original);
        assert_eq!(
            returned_part(&report),
            "From: spammer@far.example\r\nSubject: buy\r\n\tnow\r\n"
        );
        let text = String::from_utf8_lossy(&report);
        assert!(!text.contains("spam.example"), "{text}");
        assert!(!text.contains("X-Fake"), "{text}");
        assert!(!text.contains("message/rfc822\r\n"), "{text}");
        // Bare LF line ends and a message without a body give the same form.
        assert_eq!(
            returned_part(&bounce_of(b"Subject: lf\n\nbody text\n")),
            "Subject: lf\r\n"
        );
        assert_eq!(
            returned_part(&bounce_of(b"Subject: only a header")),
            "Subject: only a header\r\n"
        );
    }

    #[test]
    fn loops_and_policy_refusals_are_told_apart_by_their_status() {
        let refusal =
            |code, enhanced, text| is_loop_or_policy_refusal(&Reply::new(code, enhanced, text));
        assert!(refusal(554, "5.4.6", "<a@b>: mail loop"));
        assert!(refusal(550, "5.7.1", "message refused as spam"));
        assert!(refusal(554, "5.7.26", "DMARC policy"));
        assert!(!refusal(550, "5.1.1", "<a@b>: no such user"));
        assert!(!refusal(552, "5.3.4", "message too big"));
        assert!(!refusal(451, "4.4.1", "no answer (retried for too long)"));
        assert!(!refusal(550, "", "refused"));
        assert!(!refusal(550, "", "refused: 5.7.1 later in the text"));
        assert!(is_loop_or_policy_refusal(&Reply::local(
            "5.7.0",
            "found here"
        )));
    }

    #[test]
    fn status_and_diagnostic_code_come_from_the_reply() {
        let fields = |kind, reply: Reply| {
            let recipients = [RecipientReport {
                original: None,
                address: "x@far.example".into(),
                reply,
                remote_host: None,
            }];
            let text = String::from_utf8(report(kind, &recipients, b"Subject: s\r\n\r\n")).unwrap();
            let field = |name: &str| {
                let start = text.find(&format!("\r\n{name}: ")).unwrap() + name.len() + 4;
                text[start..start + text[start..].find("\r\n").unwrap()].to_string()
            };
            (field("Status"), field("Diagnostic-Code"))
        };
        let remote = Reply::from_lines(550, &["5.1.1 <x@far.example>:", "5.1.1 user unknown"])
            .with_note("(mx.far.example[192.0.2.1]:25)");
        assert_eq!(
            fields(ReportKind::Failed, remote),
            (
                "5.1.1".to_string(),
                "smtp; 550 5.1.1 <x@far.example>: user unknown (mx.far.example[192.0.2.1]:25)"
                    .to_string()
            )
        );
        assert_eq!(
            fields(ReportKind::Failed, Reply::new(550, "", "no such user")),
            ("5.0.0".to_string(), "smtp; 550 no such user".to_string())
        );
        assert_eq!(
            fields(
                ReportKind::Delayed,
                Reply::local("4.4.1", "connect to mx: refused")
            ),
            (
                "4.4.1".to_string(),
                "x-quicksilver; 4.4.1 connect to mx: refused".to_string()
            )
        );
        assert_eq!(
            fields(ReportKind::Delayed, Reply::local("", "not yet delivered")),
            (
                "4.0.0".to_string(),
                "x-quicksilver; not yet delivered".to_string()
            )
        );
        // A reply read back from the queue with a line break inside stays on
        // one line of the report.
        let (_, diagnostic) = fields(ReportKind::Failed, "550 5.2.2 mailbox\r\nfull".into());
        assert_eq!(diagnostic, "smtp; 550 5.2.2 mailbox full");
    }

    #[test]
    fn a_bounce_is_a_multipart_report_naming_each_recipient() {
        let original = b"From: a@example.test\r\nSubject: hello\r\n\r\nsecret body\r\n";
        let recipients = [RecipientReport {
            original: Some("info@example.test".into()),
            address: "nobody@example.test".into(),
            reply: Reply::new(550, "5.1.1", "<nobody@example.test>: user unknown"),
            remote_host: None,
        }];
        let bytes = report(ReportKind::Failed, &recipients, original);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status"));
        assert!(text.contains("Final-Recipient: rfc822; nobody@example.test\r\n"));
        assert!(text.contains("Original-Recipient: rfc822; info@example.test\r\n"));
        assert!(text.contains("Status: 5.1.1\r\n"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1"));
        assert!(text.contains("Subject: hello\r\n"));
        assert!(!text.contains("secret body"));
        assert!(text.contains("Auto-Submitted: auto-replied"));
        // CRLF only: no bare LF anywhere.
        assert!(!bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        // A real MIME parser sees the three parts.
        let parsed = mail_parser::MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(parsed.parts.len(), 4); // the container and three parts
    }
}
