//! Reading bounces: which addresses a delivery report says failed.
//!
//! RFC 3464 reports hold one block of fields per recipient; a block with
//! `Action: failed` names the address in `Final-Recipient` (and maybe
//! `Original-Recipient`, preferred: it is the address the list sent to).
//! Blocks with `delayed`, `delivered`, `relayed` or `expanded` are not
//! failures. Exim's `X-Failed-Recipients` header is read too.

use qs_queue::message;

/// What a report says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Addresses that failed for good (lowercase).
    pub failed: Vec<String>,
    /// The message is a delivery report (failed or not).
    pub is_report: bool,
}

/// Reads a bounce.
pub fn read(bytes: &[u8]) -> Report {
    let mut report = Report::default();
    for value in message::values(bytes, "X-Failed-Recipients") {
        for a in value.split(',') {
            add(&mut report.failed, a);
        }
        report.is_report = true;
    }
    let text = String::from_utf8_lossy(bytes);
    let mut block: Vec<&str> = Vec::new();
    let finish = |block: &mut Vec<&str>, report: &mut Report| {
        let field = |name: &str| {
            block.iter().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        if let Some(action) = field("Action") {
            report.is_report = true;
            if action.to_lowercase().starts_with("failed") {
                let address = field("Original-Recipient").or_else(|| field("Final-Recipient"));
                if let Some(a) = address {
                    // `rfc822; user@host`
                    let a = a.split_once(';').map_or(a.as_str(), |(_, a)| a);
                    add(&mut report.failed, a);
                }
            }
        }
        block.clear();
    };
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            finish(&mut block, &mut report);
        } else {
            block.push(line);
        }
    }
    finish(&mut block, &mut report);
    report
}

fn add(list: &mut Vec<String>, address: &str) {
    let a = message::bare_address(address).to_lowercase();
    if a.contains('@') && !list.contains(&a) {
        list.push(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_recipients_are_read_from_a_dsn() {
        let dsn = b"From: MAILER-DAEMON@example.test\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\n\r\nsorry\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; example.test\r\n\r\nFinal-Recipient: rfc822; Bob@far.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\nOriginal-Recipient: rfc822;carol@far.example\r\nFinal-Recipient: rfc822; x@y.example\r\nAction: failed\r\n\r\nFinal-Recipient: rfc822; dave@far.example\r\nAction: delayed\r\n--b--\r\n";
        let r = read(dsn);
        assert!(r.is_report);
        assert_eq!(r.failed, ["bob@far.example", "carol@far.example"]);
    }

    #[test]
    fn delays_and_plain_mail_are_not_failures() {
        let r = read(b"Subject: x\r\n\r\nFinal-Recipient: rfc822; a@b\r\nAction: delayed\r\n");
        assert!(r.is_report && r.failed.is_empty());
        let r = read(b"Subject: hello\r\n\r\njust text\r\n");
        assert!(!r.is_report && r.failed.is_empty());
        let r = read(b"X-Failed-Recipients: a@b.example, C@D.example\r\n\r\n");
        assert_eq!(r.failed, ["a@b.example", "c@d.example"]);
    }
}
