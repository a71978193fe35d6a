//! The messages list-server writes itself: confirmation requests, welcome
//! and farewell texts, answers to commands, notices to moderators, owners
//! and senders. Each carries `Auto-Submitted: auto-replied` (RFC 3834) and
//! an `X-Loop` naming the list, and is sent from `<>`, so nothing answers
//! it automatically and a failure of it bounces to no one.

use base64::Engine;
use qs_queue::message::rfc5322_date;

/// One automatic message.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    /// The From address (`NAME-request@` or `NAME-owner@`).
    pub from: &'a str,
    /// A display name for From.
    pub from_name: &'a str,
    /// The recipients (To).
    pub to: &'a [String],
    /// Where replies go, when not to From.
    pub reply_to: Option<&'a str>,
    /// The subject (UTF-8; encoded as needed).
    pub subject: &'a str,
    /// The text (UTF-8).
    pub body: &'a str,
    /// The list, for X-Loop.
    pub list: &'a str,
    /// A message to attach whole (`message/rfc822`).
    pub attach: Option<&'a [u8]>,
}

/// The message's bytes, CRLF line ends.
pub fn build(hostname: &str, notice: &Notice<'_>, now: u64) -> Vec<u8> {
    let mut head = vec![
        format!("Date: {}", rfc5322_date(now)),
        format!("From: {} <{}>", phrase(notice.from_name), notice.from),
        format!("To: {}", notice.to.join(",\r\n ")),
        format!("Subject: {}", encode_word(notice.subject)),
        format!(
            "Message-ID: <{:016x}.{now}.list@{hostname}>",
            rand::random::<u64>()
        ),
        "Auto-Submitted: auto-replied".to_string(),
        format!("X-Loop: {}", notice.list),
        "MIME-Version: 1.0".to_string(),
    ];
    if let Some(r) = notice.reply_to {
        head.push(format!("Reply-To: <{r}>"));
    }
    let (text_headers, text_body) = text_part(notice.body);
    let mut out = String::new();
    for line in &head {
        out.push_str(line);
        out.push_str("\r\n");
    }
    let mut bytes = match notice.attach {
        None => {
            out.push_str(&text_headers);
            out.push_str("\r\n");
            out.push_str(&text_body);
            out.into_bytes()
        }
        Some(original) => {
            let boundary = format!("=_list_{:016x}", rand::random::<u64>());
            out.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
            ));
            out.push_str(&format!("--{boundary}\r\n{text_headers}\r\n{text_body}"));
            out.push_str(&format!(
                "--{boundary}\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"
            ));
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(original);
            if !original.ends_with(b"\r\n") {
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            bytes
        }
    };
    if !bytes.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes
}

/// The text part's header fields and body: plain ASCII as is, anything
/// else in base64 (a 7-bit message goes through every server).
fn text_part(body: &str) -> (String, String) {
    let normalised: String = body
        .lines()
        .map(|l| format!("{}\r\n", l.trim_end_matches('\r')))
        .collect();
    if normalised.is_ascii() && normalised.lines().all(|l| l.len() <= 900) {
        (
            "Content-Type: text/plain; charset=us-ascii\r\n".to_string(),
            normalised,
        )
    } else {
        let encoded = base64::engine::general_purpose::STANDARD.encode(normalised.as_bytes());
        let mut folded = String::new();
        for chunk in encoded.as_bytes().chunks(76) {
            folded.push_str(&String::from_utf8_lossy(chunk));
            folded.push_str("\r\n");
        }
        (
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
                .to_string(),
            folded,
        )
    }
}

/// A header text: as is when plain ASCII, else one RFC 2047 encoded word.
fn encode_word(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    if clean.is_ascii() {
        clean
    } else {
        format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(clean)
        )
    }
}

/// A display name as a quoted string or encoded word.
fn phrase(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    if clean.is_ascii() {
        format!("\"{clean}\"")
    } else {
        encode_word(&clean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qs_queue::message;

    #[test]
    fn notices_are_marked_automatic_and_seven_bit() {
        let to = vec!["bob@far.example".to_string()];
        let n = Notice {
            from: "team-request@example.test",
            from_name: "Team",
            to: &to,
            reply_to: Some("team-request@example.test"),
            subject: "confirm abc",
            body: "Hello\nthere",
            list: "team@example.test",
            attach: None,
        };
        let out = build("mail.example.test", &n, 0);
        assert_eq!(message::values(&out, "Auto-Submitted"), ["auto-replied"]);
        assert_eq!(message::values(&out, "Subject"), ["confirm abc"]);
        assert!(out.ends_with(b"\r\n\r\nHello\r\nthere\r\n"));
        assert!(!out.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        let n = Notice {
            body: "Bienvenue, Zoë",
            subject: "Bienvenue à l'équipe",
            attach: Some(b"Subject: x\r\n\r\nbody\r\n"),
            ..n
        };
        let out = build("mail.example.test", &n, 0);
        assert!(out.is_ascii());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("message/rfc822"));
        assert!(text.contains("Subject: =?utf-8?b?"));
    }
}
