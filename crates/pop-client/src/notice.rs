//! Messages to the postmaster: a message too large to fetch, an account that
//! has been failing for a day, and the same account working again. They are
//! queued from `<>` (so nothing ever bounces back) with the postmaster as
//! the From address, `Auto-Submitted: auto-generated` (RFC 3834).

use qs_queue::message::rfc5322_date;

/// A plain-text notice, CRLF line ends, ready to queue.
pub fn message(hostname: &str, postmaster: &str, subject: &str, body: &str, now: u64) -> Vec<u8> {
    let id: u64 = rand::random();
    let mut text = String::new();
    text.push_str(&format!(
        "From: Quicksilver pop-client <{postmaster}>\r\n\
         To: <{postmaster}>\r\n\
         Subject: {}\r\n\
         Date: {}\r\n\
         Message-ID: <{id:016x}.pop-client@{hostname}>\r\n\
         Auto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n",
        one_line(subject),
        rfc5322_date(now),
    ));
    for line in body.lines() {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.into_bytes()
}

/// The text without line breaks or other control characters.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_a_well_formed_message() {
        let m = message(
            "mx.example.test",
            "postmaster@example.test",
            "account \"family\"\r\nBcc: x@y",
            "line one\nline two",
            0,
        );
        let text = String::from_utf8(m).unwrap_or_default();
        assert!(
            text.contains("Subject: account \"family\"  Bcc: x@y\r\n"),
            "{text}"
        );
        assert!(text.contains("Date: Thu, 1 Jan 1970 00:00:00 +0000\r\n"));
        assert!(text.ends_with("\r\n\r\nline one\r\nline two\r\n"), "{text}");
        assert!(!text.replace("\r\n", "").contains('\n'));
    }
}
