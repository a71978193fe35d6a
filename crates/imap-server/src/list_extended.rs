//! LIST with the extensions of RFC 5258 (LIST-EXTENDED: selection options, several
//! patterns, return options) and RFC 5819 (LIST-STATUS: `RETURN (STATUS (...))`),
//! which imap-codec does not read.
//!
//! When imap-codec refuses a command, the session hands its bytes (the whole command,
//! literals included) to [`parse`]. The options are read here; the reference and each
//! pattern are given back to imap-codec inside a plain `LIST`, so both paths read
//! mailbox names, strings and literals by the same grammar. The session bounds the
//! reference and patterns together by `max_list_pattern_length`, as for a plain LIST.
//!
//! ```text
//! list             = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat
//!                    [SP list-return-opts]
//! list-select-opts = "(" [option *(SP option)] ")"
//! mbox-or-pat      = list-mailbox / "(" list-mailbox *(SP list-mailbox) ")"
//! list-return-opts = "RETURN" SP "(" [return-option *(SP return-option)] ")"
//! return-option    = "SUBSCRIBED" / "CHILDREN" / "STATUS" SP "(" status-att *(SP status-att) ")"
//! ```

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_next::imap_types::IntoStatic;
use imap_next::imap_types::command::CommandBody;
use imap_next::imap_types::core::Tag;
use imap_next::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_next::imap_types::status::StatusDataItemName;

/// What a LIST asks for, extended or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    /// The reference name, as the client wrote it (INBOX as `INBOX`).
    pub reference: Vec<u8>,
    /// The patterns, as the client wrote them.
    pub patterns: Vec<Vec<u8>>,
    /// Selection `SUBSCRIBED`: subscribed names, whether they exist or not.
    pub subscribed_only: bool,
    /// Selection `RECURSIVEMATCH`: also names with subscribed names below them.
    pub recursive_match: bool,
    /// Return option `SUBSCRIBED` (implied by the selection option).
    pub return_subscribed: bool,
    /// Return option `STATUS`: these items for each folder that can be selected.
    pub status: Vec<StatusDataItemName>,
    /// Written in the extended syntax (an empty pattern is then not special).
    pub extended: bool,
}

impl ListRequest {
    /// A plain `LIST reference pattern`.
    pub fn basic(reference: &Mailbox<'_>, pattern: &ListMailbox<'_>) -> ListRequest {
        ListRequest {
            reference: mailbox_bytes(reference),
            patterns: vec![pattern_bytes(pattern)],
            subscribed_only: false,
            recursive_match: false,
            return_subscribed: false,
            status: Vec::new(),
            extended: false,
        }
    }
}

fn mailbox_bytes(mailbox: &Mailbox<'_>) -> Vec<u8> {
    match mailbox {
        Mailbox::Inbox => b"INBOX".to_vec(),
        Mailbox::Other(other) => other.as_ref().to_vec(),
    }
}

fn pattern_bytes(pattern: &ListMailbox<'_>) -> Vec<u8> {
    match pattern {
        ListMailbox::Token(t) => t.as_ref().to_vec(),
        ListMailbox::String(s) => s.as_ref().to_vec(),
    }
}

/// Reads `message` (a whole command, CRLF included) as an extended LIST. `None` when
/// it is not a tagged LIST; otherwise its tag, and the request or why it is refused
/// (a `BAD`).
pub fn parse(message: &[u8]) -> Option<(Tag<'static>, Result<ListRequest, &'static str>)> {
    let mut r = Reader {
        bytes: message,
        pos: 0,
    };
    let tag = Tag::try_from(r.word()).ok()?.into_static();
    r.space().ok()?;
    if !r.word().eq_ignore_ascii_case(b"LIST") {
        return None;
    }
    Some((tag, list(&mut r)))
}

/// What follows `LIST`.
fn list(r: &mut Reader<'_>) -> Result<ListRequest, &'static str> {
    r.space()?;
    let mut request = ListRequest {
        reference: Vec::new(),
        patterns: Vec::new(),
        subscribed_only: false,
        recursive_match: false,
        return_subscribed: false,
        status: Vec::new(),
        extended: true,
    };
    if r.peek() == Some(b'(') {
        let mut base = false;
        for option in r.words_in_parentheses()? {
            match option.to_ascii_uppercase().as_slice() {
                b"SUBSCRIBED" => {
                    request.subscribed_only = true;
                    request.return_subscribed = true;
                    base = true;
                }
                // No folder lives on another server.
                b"REMOTE" => {}
                b"RECURSIVEMATCH" => request.recursive_match = true,
                _ => return Err("unknown LIST selection option"),
            }
        }
        // RFC 5258 §3.1: RECURSIVEMATCH qualifies a selection option, alone it is an error.
        if request.recursive_match && !base {
            return Err("RECURSIVEMATCH needs another selection option");
        }
        r.space()?;
    }
    let reference = r.argument()?;
    r.space()?;
    let mut patterns = Vec::new();
    if r.peek() == Some(b'(') {
        r.pos += 1;
        loop {
            patterns.push(r.argument()?);
            match r.peek() {
                Some(b' ') => r.pos += 1,
                Some(b')') => {
                    r.pos += 1;
                    break;
                }
                _ => return Err("syntax error in the LIST patterns"),
            }
        }
    } else {
        patterns.push(r.argument()?);
    }
    if r.peek() == Some(b' ') {
        r.pos += 1;
        if !r.word().eq_ignore_ascii_case(b"RETURN") {
            return Err("syntax error after the LIST patterns");
        }
        r.space()?;
        return_options(r, &mut request)?;
    }
    if !r.at_line_end() {
        return Err("syntax error at the end of LIST");
    }
    // The reference and patterns, read by imap-codec as those of a plain LIST.
    let reference_bytes = &r.bytes[reference.0..reference.1];
    for (start, end) in patterns {
        let (reference, pattern) = plain_list(reference_bytes, &r.bytes[start..end])?;
        request.reference = reference;
        request.patterns.push(pattern);
    }
    Ok(request)
}

/// `"(" [return-option *(SP return-option)] ")"`.
fn return_options(r: &mut Reader<'_>, request: &mut ListRequest) -> Result<(), &'static str> {
    if r.peek() != Some(b'(') {
        return Err("RETURN takes a parenthesised list");
    }
    r.pos += 1;
    if r.peek() == Some(b')') {
        r.pos += 1;
        return Ok(());
    }
    loop {
        let option = r.word().to_ascii_uppercase();
        match option.as_slice() {
            b"SUBSCRIBED" => request.return_subscribed = true,
            // Children are always told (\HasChildren, \HasNoChildren).
            b"CHILDREN" => {}
            b"STATUS" => {
                r.space()?;
                for item in r.words_in_parentheses()? {
                    let item = match item.to_ascii_uppercase().as_slice() {
                        b"MESSAGES" => StatusDataItemName::Messages,
                        b"RECENT" => StatusDataItemName::Recent,
                        b"UIDNEXT" => StatusDataItemName::UidNext,
                        b"UIDVALIDITY" => StatusDataItemName::UidValidity,
                        b"UNSEEN" => StatusDataItemName::Unseen,
                        b"HIGHESTMODSEQ" => StatusDataItemName::HighestModSeq,
                        _ => return Err("unknown STATUS item"),
                    };
                    if !request.status.contains(&item) {
                        request.status.push(item);
                    }
                }
                if request.status.is_empty() {
                    return Err("STATUS takes at least one item");
                }
            }
            _ => return Err("unknown LIST return option"),
        }
        match r.peek() {
            Some(b' ') => r.pos += 1,
            Some(b')') => {
                r.pos += 1;
                return Ok(());
            }
            _ => return Err("syntax error in the LIST return options"),
        }
    }
}

/// Reads `reference` and `pattern` with imap-codec, as `LIST reference pattern`.
fn plain_list(reference: &[u8], pattern: &[u8]) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
    let mut command = b"x LIST ".to_vec();
    command.extend_from_slice(reference);
    command.push(b' ');
    command.extend_from_slice(pattern);
    command.extend_from_slice(b"\r\n");
    match CommandCodec::default().decode(&command) {
        Ok((
            _,
            imap_next::imap_types::command::Command {
                body:
                    CommandBody::List {
                        reference,
                        mailbox_wildcard,
                    },
                ..
            },
        )) => Ok((mailbox_bytes(&reference), pattern_bytes(&mailbox_wildcard))),
        _ => Err("syntax error in a LIST name or pattern"),
    }
}

/// The command's bytes, read left to right.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// A word: up to a space, a parenthesis, a quote, a brace or the line end.
    fn word(&mut self) -> &'a [u8] {
        let start = self.pos;
        while let Some(b) = self.peek()
            && !matches!(b, b' ' | b'(' | b')' | b'"' | b'{' | b'\r' | b'\n')
        {
            self.pos += 1;
        }
        &self.bytes[start..self.pos]
    }

    fn space(&mut self) -> Result<(), &'static str> {
        if self.peek() == Some(b' ') {
            self.pos += 1;
            Ok(())
        } else {
            Err("syntax error in LIST")
        }
    }

    /// `"(" [word *(SP word)] ")"`.
    fn words_in_parentheses(&mut self) -> Result<Vec<&'a [u8]>, &'static str> {
        if self.peek() != Some(b'(') {
            return Err("syntax error in LIST: a parenthesised list was expected");
        }
        self.pos += 1;
        let mut words = Vec::new();
        loop {
            match self.peek() {
                Some(b')') => {
                    self.pos += 1;
                    return Ok(words);
                }
                Some(b' ') if !words.is_empty() => self.pos += 1,
                _ => {}
            }
            let word = self.word();
            if word.is_empty() {
                return Err("syntax error in LIST options");
            }
            words.push(word);
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return Err("syntax error in LIST options");
            }
        }
    }

    /// A mailbox name or pattern: a quoted string, a literal, or a word. Returns
    /// where it lies; imap-codec reads it.
    fn argument(&mut self) -> Result<(usize, usize), &'static str> {
        const BAD: &str = "syntax error in a LIST name or pattern";
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                loop {
                    match self.peek() {
                        Some(b'"') => break,
                        Some(b'\\') => self.pos += 2,
                        Some(b'\r' | b'\n') | None => return Err(BAD),
                        Some(_) => self.pos += 1,
                    }
                }
                self.pos += 1;
            }
            Some(b'{') => {
                let close = self.bytes[start..]
                    .iter()
                    .position(|&b| b == b'}')
                    .ok_or(BAD)?;
                let inside = &self.bytes[start + 1..start + close];
                let digits = inside.strip_suffix(b"+").unwrap_or(inside);
                let length: usize = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .ok_or(BAD)?;
                self.pos = start + close + 1;
                if self.bytes[self.pos..].starts_with(b"\r\n") {
                    self.pos += 2;
                } else if self.peek() == Some(b'\n') {
                    self.pos += 1;
                } else {
                    return Err(BAD);
                }
                if self.bytes.len() - self.pos < length {
                    return Err(BAD);
                }
                self.pos += length;
            }
            _ => {
                if self.word().is_empty() {
                    return Err(BAD);
                }
            }
        }
        Ok((start, self.pos))
    }

    /// Only the line's end is left.
    fn at_line_end(&self) -> bool {
        matches!(&self.bytes[self.pos..], b"\r\n" | b"\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &str) -> Result<ListRequest, &'static str> {
        let (tag, request) = parse(command.as_bytes()).expect("a LIST");
        assert_eq!(tag.as_ref(), "a");
        request
    }

    #[test]
    fn selection_and_return_options_and_several_patterns() {
        let r = request(
            "a LIST (SUBSCRIBED RecursiveMatch) \"\" (\"Work.%\" {4}\r\nInbo %) \
             RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n",
        )
        .unwrap();
        assert!(r.subscribed_only && r.recursive_match && r.return_subscribed && r.extended);
        assert_eq!(r.reference, b"");
        assert_eq!(r.patterns, [&b"Work.%"[..], b"Inbo", b"%"]);
        assert_eq!(
            r.status,
            [StatusDataItemName::Messages, StatusDataItemName::Unseen]
        );
        let r = request("a list (remote) INBOX * return (subscribed)\n").unwrap();
        assert!(!r.subscribed_only && r.return_subscribed);
        assert_eq!(
            (r.reference, r.patterns),
            (b"INBOX".to_vec(), vec![b"*".to_vec()])
        );
        let r = request("a LIST () \"\" \"\" RETURN ()\r\n").unwrap();
        assert_eq!(r.patterns, [b""]);
    }

    #[test]
    fn what_rfc_5258_calls_errors() {
        for command in [
            "a LIST (imaptest) \"\" \"\"\r\n",
            "a LIST (RECURSIVEMATCH) \"\" \"\"\r\n",
            "a LIST (RECURSIVEMATCH REMOTE) \"\" \"\"\r\n",
            "a LIST \"\" \"\" RETURN (imaptest)\r\n",
            "a LIST \"\" \"\" RETURN (STATUS (SIZE))\r\n",
            "a LIST \"\" \"\" RETURN (STATUS ())\r\n",
            "a LIST \"\" (a b\r\n",
            "a LIST \"\" * extra\r\n",
            "a LIST ( ) \"\" *\r\n",
        ] {
            assert!(request(command).is_err(), "{command}");
        }
        assert!(parse(b"a LSUB \"\" (x)\r\n").is_none());
    }
}
