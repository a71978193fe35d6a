//! SMTP replies as values (RFC 5321 §4.2): a three-digit code, an optional
//! enhanced status code (RFC 3463, `5.1.1`), and text, possibly on several
//! lines. smtp-server answers with them, smtp-relay reads its peers' replies
//! into them, every worker reports a recipient's [`Outcome`](crate::Outcome)
//! with one, and core-queue's delivery status notifications take their
//! `Status` and `Diagnostic-Code` fields from one.
//!
//! A failure found here rather than answered by an SMTP server (a refused
//! connection, a DNS error) is a reply without a code ([`Reply::local`]):
//! the report gives it as our own diagnostic, not as an SMTP reply.
//!
//! No line of a reply ever holds a CR or an LF: they are dropped (or, in
//! text read back from the queue, end a line), so a reply written to the wire
//! cannot carry a second one.
//!
//! In the queue a reply is stored and sent as its one-line text
//! (`451 4.3.0 try later (mx.far.example[192.0.2.1]:25)`), the form it always
//! had there: records written before the type existed read back as replies,
//! and any text at all reads as one.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::envelope::ParseError;

/// An RFC 3463 enhanced status code, `class.subject.detail`: the class is 2,
/// 4 or 5, subject and detail 0 to 999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedCode {
    /// The code `class.subject.detail`, if it is one.
    pub fn new(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
        (matches!(class, 2 | 4 | 5) && subject < 1000 && detail < 1000).then_some(EnhancedCode {
            class,
            subject,
            detail,
        })
    }

    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub fn class(self) -> u8 {
        self.class
    }

    /// The subject: 1 addressing, 2 mailbox, 3 mail system, 4 network and
    /// routing, 5 protocol, 6 content, 7 security or policy.
    pub fn subject(self) -> u16 {
        self.subject
    }

    /// The detail within the subject.
    pub fn detail(self) -> u16 {
        self.detail
    }
}

impl FromStr for EnhancedCode {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |part: &str, max_len: usize| {
            let digits =
                (1..=max_len).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit());
            digits.then(|| part.parse::<u16>().ok()).flatten()
        };
        let parts: Vec<&str> = s.split('.').collect();
        let code = match parts[..] {
            [class, subject, detail] => {
                match (number(class, 1), number(subject, 3), number(detail, 3)) {
                    (Some(class), Some(subject), Some(detail)) => u8::try_from(class)
                        .ok()
                        .and_then(|class| EnhancedCode::new(class, subject, detail)),
                    _ => None,
                }
            }
            _ => None,
        };
        code.ok_or_else(|| ParseError::EnhancedCode(s.to_string()))
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// What a reply means for the command it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx: done.
    Success,
    /// 3xx: go on (after DATA, or within AUTH).
    Intermediate,
    /// 4xx, and anything unexpected: try again later (an error nobody
    /// classified is retried, not lost).
    Temporary,
    /// 5xx: never going to work.
    Permanent,
}

/// One reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Reply {
    /// The three-digit code; `None` for a failure found here.
    code: Option<u16>,
    /// The enhanced status code, given once for all lines.
    enhanced: Option<EnhancedCode>,
    /// The text of each line, without code and enhanced code, CR and LF
    /// dropped; at least one line.
    lines: Vec<String>,
}

impl Reply {
    /// A one-line reply; `enhanced` is an RFC 3463 code (`5.1.1`) or empty.
    /// Something else in `enhanced` (not a code, or a code of another class
    /// than `code`, RFC 2034 §4) is kept, in front of the text.
    pub fn new(code: u16, enhanced: &str, text: &str) -> Reply {
        Reply::with_code(Some(code), enhanced, text)
    }

    /// A failure found here, not answered by an SMTP server: no code, an
    /// enhanced code (`4.4.1`) or empty, and the text.
    pub fn local(enhanced: &str, text: &str) -> Reply {
        Reply::with_code(None, enhanced, text)
    }

    /// A reply of several lines written here without an enhanced code (the
    /// EHLO answer), each taken as it is.
    pub fn multiline<S: AsRef<str>>(code: u16, lines: &[S]) -> Reply {
        let mut lines: Vec<String> = lines.iter().map(|l| clean(l.as_ref())).collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Reply {
            code: Some(code),
            enhanced: None,
            lines,
        }
    }

    /// A reply of several lines (each without its code) as a peer sent it.
    /// An enhanced code that starts the first line is the reply's; later
    /// lines lose the same code at their start (RFC 2034 §4 repeats it on
    /// every line).
    pub fn from_lines<S: AsRef<str>>(code: u16, lines: &[S]) -> Reply {
        let mut lines = lines.iter().map(|l| clean(l.as_ref()));
        let first = lines.next().unwrap_or_default();
        let (enhanced, first) = split_enhanced(&first, Some(code));
        let mut out = vec![first.to_string()];
        for line in lines {
            let rest = match (enhanced, split_enhanced(&line, Some(code))) {
                (Some(ours), (Some(theirs), rest)) if ours == theirs => rest.to_string(),
                _ => line,
            };
            out.push(rest);
        }
        Reply {
            code: Some(code),
            enhanced,
            lines: out,
        }
    }

    fn with_code(code: Option<u16>, enhanced: &str, text: &str) -> Reply {
        let parsed = enhanced.parse().ok().filter(|e| agrees(*e, code));
        let (enhanced, text) = match (parsed, enhanced.is_empty()) {
            (Some(e), _) => (Some(e), clean(text)),
            (None, true) => (None, clean(text)),
            (None, false) => (None, clean(&join(enhanced, text))),
        };
        Reply {
            code,
            enhanced,
            lines: vec![text],
        }
    }

    /// The three-digit code, `None` for a failure found here.
    pub fn code(&self) -> Option<u16> {
        self.code
    }

    /// The enhanced status code, if the reply has one.
    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    /// The text of each line, without code and enhanced code.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The text of all lines joined by spaces, without code and enhanced code.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// Its class, by the code's first digit; a reply without a code by its
    /// enhanced code's class; anything else is temporary.
    pub fn class(&self) -> Class {
        match (self.code, self.enhanced.map(EnhancedCode::class)) {
            (Some(200..=299), _) | (None, Some(2)) => Class::Success,
            (Some(300..=399), _) => Class::Intermediate,
            (Some(500..=599), _) | (None, Some(5)) => Class::Permanent,
            _ => Class::Temporary,
        }
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        self.class() == Class::Success
    }

    /// True for 4xx and 5xx (and for a failure found here).
    pub fn is_failure(&self) -> bool {
        matches!(self.class(), Class::Temporary | Class::Permanent)
    }

    /// True for 5xx.
    pub fn is_permanent(&self) -> bool {
        self.class() == Class::Permanent
    }

    /// The same reply with `note` after the text of its last line (the host
    /// that gave it, why it is final).
    pub fn with_note(mut self, note: &str) -> Reply {
        let note = clean(note);
        if let Some(last) = self.lines.last_mut() {
            *last = join(last, &note);
        }
        self
    }

    /// Appends the wire form to `out`: each line `code-text` but the last,
    /// `code text`, the enhanced code on every line, CRLF after each. A reply
    /// without a code is written with 250, 451 or 554 by its class.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let code = self.code.unwrap_or(match self.class() {
            Class::Success => 250,
            Class::Permanent => 554,
            Class::Intermediate | Class::Temporary => 451,
        });
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let text = match self.enhanced {
                Some(e) => join(&e.to_string(), line),
                None => line.clone(),
            };
            out.extend_from_slice(format!("{code}{sep}{text}\r\n").as_bytes());
        }
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

/// The one-line form: code, enhanced code and the lines, each after a space
/// when there is one (`550 5.1.1 <a@b>: no such user`).
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.code.map(|c| c.to_string()).unwrap_or_default();
        if let Some(e) = self.enhanced {
            line = join(&line, &e.to_string());
        }
        f.write_str(&join(&line, &self.text()))
    }
}

/// Reads the one-line form back, as the queue stores it, and any other text:
/// a code is three digits alone or before a space, an enhanced code the word
/// after it; CR and LF end lines, and empty lines are dropped.
impl FromStr for Reply {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut lines = s.split(['\r', '\n']).filter(|l| !l.is_empty());
        let first = lines.next().unwrap_or_default();
        let (code, rest) = match first.as_bytes() {
            [a, b, c, tail @ ..]
                if [a, b, c].iter().all(|d| d.is_ascii_digit())
                    && matches!(tail.first(), None | Some(b' ')) =>
            {
                let rest = first.get(4..).unwrap_or_default();
                (first[..3].parse::<u16>().ok(), rest)
            }
            _ => (None, first),
        };
        let (enhanced, text) = split_enhanced(rest, code);
        let mut all = vec![text.to_string()];
        all.extend(lines.map(str::to_string));
        Ok(Reply {
            code,
            enhanced,
            lines: all,
        })
    }
}

impl From<String> for Reply {
    fn from(s: String) -> Reply {
        match s.parse() {
            Ok(reply) => reply,
            Err(never) => match never {},
        }
    }
}

impl From<&str> for Reply {
    fn from(s: &str) -> Reply {
        Reply::from(s.to_string())
    }
}

impl From<Reply> for String {
    fn from(reply: Reply) -> String {
        reply.to_string()
    }
}

/// An enhanced code at the start of `text` (a word of its own) that agrees
/// with the reply's `code`, and the rest after its space.
fn split_enhanced(text: &str, code: Option<u16>) -> (Option<EnhancedCode>, &str) {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    match word.parse().ok().filter(|e| agrees(*e, code)) {
        Some(enhanced) => (Some(enhanced), rest),
        None => (None, text),
    }
}

/// RFC 2034 §4: an enhanced code's class is the reply code's first digit (a
/// reply without a code takes any).
fn agrees(enhanced: EnhancedCode, code: Option<u16>) -> bool {
    code.is_none_or(|code| code / 100 == u16::from(enhanced.class()))
}

/// `a b`, or whichever is not empty.
fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (false, true) => a.to_string(),
        (false, false) => format!("{a} {b}"),
    }
}

/// The text without CR and LF.
fn clean(text: &str) -> String {
    text.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_write_themselves_with_and_without_enhanced_codes() {
        assert_eq!(
            Reply::new(250, "2.1.0", "OK").to_bytes(),
            b"250 2.1.0 OK\r\n"
        );
        assert_eq!(
            Reply::new(354, "", "go ahead").to_bytes(),
            b"354 go ahead\r\n"
        );
        assert_eq!(Reply::new(334, "", "").to_bytes(), b"334 \r\n");
        assert_eq!(Reply::new(250, "2.0.0", "").to_bytes(), b"250 2.0.0\r\n");
        assert_eq!(
            Reply::from_lines(250, &["mx greets a", "PIPELINING"]).to_bytes(),
            b"250-mx greets a\r\n250 PIPELINING\r\n"
        );
        // Our own lines are not read for an enhanced code.
        let ehlo = Reply::multiline(250, &["2.0.0 greets a", "SIZE 10\r\n"]);
        assert_eq!(ehlo.enhanced(), None);
        assert_eq!(ehlo.to_bytes(), b"250-2.0.0 greets a\r\n250 SIZE 10\r\n");
        assert_eq!(Reply::multiline::<&str>(250, &[]).to_bytes(), b"250 \r\n");
        assert_eq!(
            Reply::from_lines(550, &["5.1.1 no such user", "5.1.1 here"]).to_bytes(),
            b"550-5.1.1 no such user\r\n550 5.1.1 here\r\n"
        );
        // Not an enhanced code: kept in front of the text, bytes unchanged.
        let odd = Reply::new(451, "9.9.9", "x");
        assert_eq!(odd.enhanced(), None);
        assert_eq!(odd.to_bytes(), b"451 9.9.9 x\r\n");
        let other_class = Reply::new(250, "5.0.0", "x");
        assert_eq!(other_class.enhanced(), None);
        assert_eq!(other_class.to_bytes(), b"250 5.0.0 x\r\n");
    }

    #[test]
    fn no_text_carries_cr_or_lf_onto_the_wire() {
        assert_eq!(
            Reply::new(550, "5.1.1", "x\r\ny").to_bytes(),
            b"550 5.1.1 xy\r\n"
        );
        assert_eq!(
            Reply::from_lines(250, &["a\r\n250 injected", "b\n"]).to_bytes(),
            b"250-a250 injected\r\n250 b\r\n"
        );
        let noted = Reply::new(250, "", "ok").with_note("(h\r\n)");
        assert_eq!(noted.to_bytes(), b"250 ok (h)\r\n");
        let read: Reply = "451 4.3.0 a\r\n451 injected\nb".parse().unwrap();
        assert_eq!(read.lines(), ["a", "451 injected", "b"]);
        let wire = read.to_bytes();
        assert_eq!(
            wire,
            b"451-4.3.0 a\r\n451-4.3.0 451 injected\r\n451 4.3.0 b\r\n"
        );
        assert_eq!(wire.iter().filter(|b| **b == b'\n').count(), 3);
        for reply in [noted, read] {
            assert!(!reply.to_string().contains(['\r', '\n']), "{reply}");
        }
    }

    #[test]
    fn peers_replies_are_read_with_their_enhanced_codes() {
        let r = Reply::from_lines(250, &["2.0.0 Ok: queued as 4XYZ"]);
        assert_eq!(r.code(), Some(250));
        assert_eq!(r.enhanced(), EnhancedCode::new(2, 0, 0));
        assert_eq!(r.text(), "Ok: queued as 4XYZ");
        assert_eq!(r.to_string(), "250 2.0.0 Ok: queued as 4XYZ");

        // Multi-line: the code repeated on each line is the reply's once.
        let r = Reply::from_lines(550, &["5.1.1 <x@far.example>:", "5.1.1 user unknown"]);
        assert_eq!(r.lines(), ["<x@far.example>:", "user unknown"]);
        assert_eq!(r.to_string(), "550 5.1.1 <x@far.example>: user unknown");
        // A later line with another code keeps it as text.
        let r = Reply::from_lines(550, &["5.1.1 a", "5.7.1 b"]);
        assert_eq!(r.lines(), ["a", "5.7.1 b"]);

        // Missing and odd enhanced codes are text.
        for (line, text) in [
            ("try later", "try later"),
            ("4.3 short", "4.3 short"),
            ("4.3.0.1 long", "4.3.0.1 long"),
            ("3.1.1 bad class", "3.1.1 bad class"),
            ("4.1234.1 wide", "4.1234.1 wide"),
            ("4.a.1 letters", "4.a.1 letters"),
            ("4.3.0: glued", "4.3.0: glued"),
            ("5.3.0 not the reply's class", "5.3.0 not the reply's class"),
            ("", ""),
        ] {
            let r = Reply::from_lines(451, &[line]);
            assert_eq!(r.enhanced(), None, "{line}");
            assert_eq!(r.text(), text);
        }
        let r = Reply::from_lines(451, &["4.3.0"]);
        assert_eq!(
            (r.enhanced(), r.text()),
            (EnhancedCode::new(4, 3, 0), String::new())
        );
        assert_eq!(Reply::from_lines::<&str>(421, &[]).to_string(), "421");
    }

    #[test]
    fn replies_are_classified_by_their_first_digit() {
        assert_eq!(Reply::new(250, "", "").class(), Class::Success);
        assert_eq!(Reply::new(354, "", "go").class(), Class::Intermediate);
        assert_eq!(Reply::new(451, "4.3.0", "later").class(), Class::Temporary);
        assert_eq!(Reply::new(550, "5.1.1", "no").class(), Class::Permanent);
        for odd in [0, 100, 600, 999] {
            assert_eq!(
                Reply::new(odd, "", "odd").class(),
                Class::Temporary,
                "{odd}"
            );
        }
        assert_eq!(
            Reply::local("5.1.2", "bad domain").class(),
            Class::Permanent
        );
        assert_eq!(Reply::local("4.4.1", "refused").class(), Class::Temporary);
        assert_eq!(Reply::local("", "what").class(), Class::Temporary);
        assert!(Reply::local("", "what").is_failure());
        assert!(!Reply::new(354, "", "go").is_failure());
    }

    #[test]
    fn the_one_line_form_reads_back_as_it_was_written() {
        for text in [
            "550 5.1.1 <a@b>: no such user",
            "451 try later",
            "250",
            "250 2.0.0",
            "4.4.1 connect to mx[192.0.2.1]:25: Connection refused",
            "not yet delivered",
            "ok",
            "451  two spaces",
            "451-not a code",
            "4511 not a code",
            "250 5.1.1 another class",
            "0 odd",
            "",
        ] {
            let reply: Reply = text.parse().unwrap();
            assert_eq!(reply.to_string(), text);
            let json = serde_json::to_string(&reply).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            assert_eq!(serde_json::from_str::<Reply>(&json).unwrap(), reply);
        }
        let r: Reply = "554 5.4.6 <a@b>: mail loop".parse().unwrap();
        assert_eq!(r.code(), Some(554));
        assert_eq!(r.enhanced(), EnhancedCode::new(5, 4, 6));
        assert_eq!(r.text(), "<a@b>: mail loop");
        let r: Reply = "4.4.1 connect failed".parse().unwrap();
        assert_eq!((r.code(), r.enhanced()), (None, EnhancedCode::new(4, 4, 1)));
        assert_eq!(
            Reply::local("4.4.1", "refused")
                .with_note("(mx)")
                .to_string(),
            "4.4.1 refused (mx)"
        );
        assert_eq!(
            Reply::new(250, "", "").with_note("(mx)").to_string(),
            "250 (mx)"
        );
    }

    #[test]
    fn enhanced_codes_parse_and_print() {
        let code: EnhancedCode = "5.7.26".parse().unwrap();
        assert_eq!((code.class(), code.subject(), code.detail()), (5, 7, 26));
        assert_eq!(code.to_string(), "5.7.26");
        for bad in [
            "", "5", "5.1", "5.1.1.1", "6.1.1", "5..1", "5.1.x", "05.1.1", "5.1000.1",
        ] {
            assert!(bad.parse::<EnhancedCode>().is_err(), "{bad}");
        }
        assert_eq!(EnhancedCode::new(3, 1, 1), None);
        assert_eq!(
            "4.x.1".parse::<EnhancedCode>(),
            Err(ParseError::EnhancedCode("4.x.1".into()))
        );
    }
}
