//! POP3 command lines: the line buffer with its length limit, and the parser.
//!
//! No I/O here: bytes go in, lines and commands come out.

use qs_directory::Secret;

/// The longest command line accepted, CRLF included, in octets.
///
/// RFC 2449 caps commands at 255 octets; a SASL response line (RFC 5034) may be
/// longer, and an AUTH PLAIN response carrying two 254-octet addresses and a
/// 1000-octet passphrase, base64-encoded, takes about 2015. So 2048.
pub const MAX_LINE: usize = 2048;

/// One line taken from the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its line end (CRLF, or a bare LF).
    Complete(Vec<u8>),
    /// A line longer than the limit; its bytes were thrown away, up to and
    /// including its line end.
    TooLong,
}

/// Collects bytes from the network and cuts them into lines.
///
/// Memory stays bounded as long as the caller takes every complete line before
/// feeding more: the buffer holds at most one partial line of `max` octets plus
/// what one `feed` brought; a longer line is dropped as it arrives.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    max: usize,
    /// Inside an over-long line: drop bytes until its LF.
    discarding: bool,
}

impl LineBuffer {
    /// An empty buffer for lines of at most `max` octets (line end included).
    pub fn new(max: usize) -> LineBuffer {
        LineBuffer {
            buf: Vec::new(),
            max,
            discarding: false,
        }
    }

    /// Appends bytes read from the network.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.discarding {
            if let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
                self.discarding = false;
                self.buf.extend_from_slice(&bytes[pos + 1..]);
            }
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next line, if a complete one (or an over-long one) is there.
    pub fn next_line(&mut self) -> Option<Line> {
        if self.discarding {
            return None;
        }
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(pos) if pos + 1 > self.max => {
                self.buf.drain(..=pos);
                Some(Line::TooLong)
            }
            Some(pos) => {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(Line::Complete(line))
            }
            None if self.buf.len() >= self.max => {
                self.buf.clear();
                self.discarding = true;
                Some(Line::TooLong)
            }
            None => None,
        }
    }

    /// How many bytes are waiting (for tests and the log).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// A POP3 command (RFC 1939, RFC 2449, RFC 2595, RFC 5034).
#[derive(Debug)]
pub enum Command {
    /// `USER name`.
    User(String),
    /// `PASS string` (the rest of the line, spaces included).
    Pass(Secret),
    /// `APOP name digest`: recognised, never offered.
    Apop,
    /// `AUTH [mechanism [initial-response]]`.
    Auth {
        /// The SASL mechanism, upper-cased; `None` asks for the list.
        mechanism: Option<String>,
        /// The initial response (SASL-IR), still base64; `=` is an empty one.
        initial: Option<Secret>,
    },
    /// `CAPA`.
    Capa,
    /// `STLS`.
    Stls,
    /// `QUIT`.
    Quit,
    /// `STAT`.
    Stat,
    /// `LIST [msg]`.
    List(Option<u64>),
    /// `RETR msg`.
    Retr(u64),
    /// `DELE msg`.
    Dele(u64),
    /// `NOOP`.
    Noop,
    /// `RSET`.
    Rset,
    /// `TOP msg n`.
    Top(u64, u64),
    /// `UIDL [msg]`.
    Uidl(Option<u64>),
}

/// Why a line is not a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// An empty line, or a keyword we do not know.
    Unknown,
    /// A known keyword with missing, extra or malformed arguments; the text says
    /// what the command wants.
    Syntax(&'static str),
}

/// Parses one command line (without its line end).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
        Some(pos) => (&line[..pos], &line[pos + 1..]),
        None => (line, &[][..]),
    };
    if keyword.is_empty() || keyword.len() > 4 || !keyword.iter().all(u8::is_ascii_alphabetic) {
        return Err(ParseError::Unknown);
    }
    let keyword = keyword.to_ascii_uppercase();
    // PASS takes the rest of the line as it is: a password may hold spaces.
    if keyword == b"PASS" {
        if rest.is_empty() {
            return Err(ParseError::Syntax("PASS needs a password"));
        }
        return Ok(Command::Pass(Secret::new(rest)));
    }
    let args: Vec<&[u8]> = rest
        .split(|&b| b == b' ')
        .filter(|a| !a.is_empty())
        .collect();
    let command = match (keyword.as_slice(), args.as_slice()) {
        (b"USER", [name]) => Command::User(
            std::str::from_utf8(name)
                .map_err(|_| ParseError::Syntax("USER needs a name in UTF-8"))?
                .to_owned(),
        ),
        (b"USER", _) => return Err(ParseError::Syntax("USER needs one name")),
        (b"APOP", _) => Command::Apop,
        (b"AUTH", []) => Command::Auth {
            mechanism: None,
            initial: None,
        },
        (b"AUTH", [mechanism]) => Command::Auth {
            mechanism: Some(mechanism_name(mechanism)?),
            initial: None,
        },
        (b"AUTH", [mechanism, initial]) => Command::Auth {
            mechanism: Some(mechanism_name(mechanism)?),
            initial: Some(Secret::new(*initial)),
        },
        (b"AUTH", _) => return Err(ParseError::Syntax("AUTH mechanism [initial-response]")),
        (b"CAPA", []) => Command::Capa,
        (b"STLS", []) => Command::Stls,
        (b"QUIT", []) => Command::Quit,
        (b"STAT", []) => Command::Stat,
        (b"NOOP", []) => Command::Noop,
        (b"RSET", []) => Command::Rset,
        (b"CAPA" | b"STLS" | b"QUIT" | b"STAT" | b"NOOP" | b"RSET", _) => {
            return Err(ParseError::Syntax("this command takes no argument"));
        }
        (b"LIST", []) => Command::List(None),
        (b"LIST", [n]) => Command::List(Some(number(n)?)),
        (b"LIST", _) => return Err(ParseError::Syntax("LIST [message-number]")),
        (b"UIDL", []) => Command::Uidl(None),
        (b"UIDL", [n]) => Command::Uidl(Some(number(n)?)),
        (b"UIDL", _) => return Err(ParseError::Syntax("UIDL [message-number]")),
        (b"RETR", [n]) => Command::Retr(number(n)?),
        (b"RETR", _) => return Err(ParseError::Syntax("RETR message-number")),
        (b"DELE", [n]) => Command::Dele(number(n)?),
        (b"DELE", _) => return Err(ParseError::Syntax("DELE message-number")),
        (b"TOP", [n, lines]) => Command::Top(number(n)?, number(lines)?),
        (b"TOP", _) => return Err(ParseError::Syntax("TOP message-number lines")),
        _ => return Err(ParseError::Unknown),
    };
    Ok(command)
}

/// A decimal number; one too large for a `u64` saturates (it names no message).
fn number(arg: &[u8]) -> Result<u64, ParseError> {
    if arg.is_empty() || !arg.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::Syntax("a number was expected"));
    }
    Ok(arg.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// A SASL mechanism name (RFC 4422: upper-case letters, digits, '-' and '_').
fn mechanism_name(arg: &[u8]) -> Result<String, ParseError> {
    let valid = !arg.is_empty()
        && arg.len() <= 20
        && arg
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    if !valid {
        return Err(ParseError::Syntax("not a SASL mechanism name"));
    }
    Ok(String::from_utf8_lossy(arg).to_ascii_uppercase())
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn lines(input: &[u8], chunk: usize) -> Vec<Line> {
        let mut buffer = LineBuffer::new(16);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buffer.feed(piece);
            while let Some(line) = buffer.next_line() {
                out.push(line);
            }
            assert!(buffer.pending() <= 16 + chunk, "the buffer grew");
        }
        out
    }

    #[test]
    fn lines_are_cut_whatever_the_chunks() {
        let input = b"STAT\r\nLIST 1\nNOOP\r\n\r\n";
        for chunk in [1, 2, 3, 4, 7, 64] {
            assert_eq!(
                lines(input, chunk),
                [
                    Line::Complete(b"STAT".to_vec()),
                    Line::Complete(b"LIST 1".to_vec()),
                    Line::Complete(b"NOOP".to_vec()),
                    Line::Complete(b"".to_vec()),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn an_over_long_line_is_dropped_to_its_end() {
        // The limit counts the line end: 14 letters + CRLF = 16 fits, 15 does not.
        let input = b"AAAAAAAAAAAAAA\r\nBBBBBBBBBBBBBBB\r\nCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC\r\nSTAT\r\n";
        for chunk in [1, 2, 4, 64] {
            assert_eq!(
                lines(input, chunk),
                [
                    Line::Complete(b"AAAAAAAAAAAAAA".to_vec()),
                    Line::TooLong,
                    Line::TooLong,
                    Line::Complete(b"STAT".to_vec()),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn commands_parse() {
        assert!(
            matches!(parse(b"user alice@example.test"), Ok(Command::User(u)) if u == "alice@example.test")
        );
        match parse(b"PASS two words ") {
            Ok(Command::Pass(p)) => assert_eq!(p.expose(), b"two words "),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(b"list"), Ok(Command::List(None))));
        assert!(matches!(parse(b"LIST 3"), Ok(Command::List(Some(3)))));
        assert!(matches!(parse(b"TOP 1 0"), Ok(Command::Top(1, 0))));
        assert!(matches!(
            parse(b"RETR 99999999999999999999999"),
            Ok(Command::Retr(u64::MAX))
        ));
        assert!(matches!(
            parse(b"AUTH plain AGE="),
            Ok(Command::Auth { mechanism: Some(m), initial: Some(_) }) if m == "PLAIN"
        ));
        assert!(matches!(
            parse(b"AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        ));
        assert!(matches!(parse(b"APOP a b"), Ok(Command::Apop)));
    }

    #[test]
    fn bad_commands_are_refused() {
        for (line, expected) in [
            (&b""[..], ParseError::Unknown),
            (b"XYZZY", ParseError::Unknown),
            (b"HELO x", ParseError::Unknown),
            (b"ST\xffT", ParseError::Unknown),
            (b"LIST x", ParseError::Syntax("a number was expected")),
            (b"LIST -1", ParseError::Syntax("a number was expected")),
            (b"RETR", ParseError::Syntax("RETR message-number")),
            (b"RETR 1 2", ParseError::Syntax("RETR message-number")),
            (b"TOP 1", ParseError::Syntax("TOP message-number lines")),
            (
                b"STAT 1",
                ParseError::Syntax("this command takes no argument"),
            ),
            (b"PASS", ParseError::Syntax("PASS needs a password")),
            (b"USER", ParseError::Syntax("USER needs one name")),
            (
                b"AUTH PL/AIN",
                ParseError::Syntax("not a SASL mechanism name"),
            ),
        ] {
            match parse(line) {
                Err(e) => assert_eq!(e, expected, "{:?}", String::from_utf8_lossy(line)),
                Ok(c) => panic!("{:?} parsed as {c:?}", String::from_utf8_lossy(line)),
            }
        }
    }
}
