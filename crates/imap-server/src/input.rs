//! The guard in front of the IMAP parser: it frames the client's bytes into lines and
//! literals exactly as imap-codec does, and enforces the limits before any byte reaches
//! the parser's buffer, so that what a client can make the server hold is bounded.
//!
//! - a line (a command without its literals) longer than `max_line` ends the session;
//! - a literal larger than the limit of the state (`max_literal` once logged in,
//!   `max_literal_before_login` before) is refused: a synchronizing one with a tagged
//!   `NO [TOOBIG]` before the client sends it, a non-synchronizing one (LITERAL-, RFC
//!   7888: at most 4096 octets) by reading and dropping it and the rest of its command,
//!   then a tagged `BAD [TOOBIG]`;
//! - before login, every byte counts against `login_budget`; a client that exceeds it
//!   is disconnected.
//!
//! The guard hands over bytes up to the end of one command at a time, so the limits
//! that apply to a command are those of the state it starts in (a login pipelined with
//! the next command is judged before the next one is).

use std::ops::Range;

/// Non-synchronizing literals accepted (LITERAL-, RFC 7888).
pub const MAX_NON_SYNC_LITERAL: u32 = 4096;

/// The guard's limits.
#[derive(Debug, Clone, Copy)]
pub struct InputLimits {
    /// Longest line, CRLF included, literals excluded.
    pub max_line: usize,
    /// Largest literal once logged in (APPENDLIMIT).
    pub max_literal: u32,
    /// Largest literal before login.
    pub max_literal_before_login: u32,
    /// Bytes a client may send before it has logged in.
    pub login_budget: usize,
}

/// What to do with a stretch of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Give these bytes (of the chunk passed to [`InputGuard::admit`]) to the parser.
    Pass(Range<usize>),
    /// A synchronizing literal that is too big was announced: answer `tag NO [TOOBIG]`
    /// and send no continuation. The parser must forget the command (`reset`: it
    /// already has part of it).
    RefuseLiteral {
        /// The command's tag, if it has a usable one.
        tag: Option<String>,
        /// The parser has earlier parts of this command.
        reset: bool,
    },
    /// A command with a non-synchronizing literal that is too big has ended; its bytes
    /// were dropped. Answer `tag BAD [TOOBIG]`.
    DroppedCommand {
        /// The command's tag, if it has a usable one.
        tag: Option<String>,
        /// The parser has earlier parts of this command.
        reset: bool,
    },
    /// End the session with `* BYE`: the reason, for the client and the log.
    Fatal(&'static str),
}

/// The line scanner's memory of the last byte, as imap-codec's fragmentizer keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Latest {
    Other,
    Open,
    Digit(u32),
    Plus(u32),
    Close(u32, bool),
    Cr(Option<(u32, bool)>),
}

/// The guard of one connection.
#[derive(Debug)]
pub struct InputGuard {
    limits: InputLimits,
    latest: Latest,
    /// Bytes of the current line so far.
    line_len: usize,
    /// Bytes of the current literal still to come.
    literal_left: u32,
    /// The first bytes of the current command, for its tag.
    head: Vec<u8>,
    /// Some bytes of the current command went to the parser.
    started: bool,
    /// The current command is being dropped (a refused non-synchronizing literal).
    dropping: bool,
    /// Bytes received before login.
    before_login: usize,
}

/// Bytes of a command kept for its tag.
const HEAD: usize = 64;

impl InputGuard {
    /// A guard at the start of a connection.
    pub fn new(limits: InputLimits) -> InputGuard {
        InputGuard {
            limits,
            latest: Latest::Other,
            line_len: 0,
            literal_left: 0,
            head: Vec::new(),
            started: false,
            dropping: false,
            before_login: 0,
        }
    }

    /// Looks at `chunk` up to the end of the first command it completes, and says what
    /// to do with it. Returns how many bytes of `chunk` were looked at (the rest waits
    /// for the next call) and the verdicts, in order.
    pub fn admit(&mut self, chunk: &[u8], logged_in: bool) -> (usize, Vec<Verdict>) {
        let mut verdicts = Vec::new();
        let mut pos = 0;
        let mut pass_from = 0;
        let flush = |verdicts: &mut Vec<Verdict>, from: usize, to: usize, dropping: bool| {
            if to > from && !dropping {
                verdicts.push(Verdict::Pass(from..to));
            }
        };
        while pos < chunk.len() {
            if self.literal_left > 0 {
                let take = (chunk.len() - pos).min(self.literal_left as usize);
                if !logged_in && !self.spend(take) {
                    verdicts.push(Verdict::Fatal("too much data before login"));
                    return (chunk.len(), verdicts);
                }
                pos += take;
                self.literal_left -= take as u32;
                continue;
            }
            let byte = chunk[pos];
            pos += 1;
            if !logged_in && !self.spend(1) {
                verdicts.push(Verdict::Fatal("too much data before login"));
                return (chunk.len(), verdicts);
            }
            if self.head.len() < HEAD {
                self.head.push(byte);
            }
            self.line_len += 1;
            if self.line_len > self.limits.max_line {
                verdicts.push(Verdict::Fatal("command line too long"));
                return (chunk.len(), verdicts);
            }
            let Some(announcement) = self.scan(byte) else {
                continue;
            };
            // A line ended.
            self.line_len = 0;
            match announcement {
                None => {
                    // The command is complete.
                    flush(&mut verdicts, pass_from, pos, self.dropping);
                    if self.dropping {
                        verdicts.push(Verdict::DroppedCommand {
                            tag: self.tag(),
                            reset: self.started,
                        });
                    }
                    self.end_command();
                    return (pos, verdicts);
                }
                Some((length, sync)) => {
                    let limit = if logged_in {
                        self.limits.max_literal
                    } else {
                        self.limits.max_literal_before_login
                    };
                    if sync {
                        if self.dropping {
                            // The client waits for a continuation we will not send.
                            verdicts.push(Verdict::Fatal("literal after a refused literal"));
                            return (chunk.len(), verdicts);
                        }
                        if length > limit {
                            verdicts.push(Verdict::RefuseLiteral {
                                tag: self.tag(),
                                reset: self.started,
                            });
                            self.end_command();
                            return (pos, verdicts);
                        }
                    } else if length > limit.min(MAX_NON_SYNC_LITERAL) && !self.dropping {
                        // Drop this command: what of it is in this chunk goes nowhere;
                        // what went to the parser before is undone by a reset.
                        self.dropping = true;
                        pass_from = pos;
                    }
                    self.literal_left = length;
                }
            }
        }
        flush(&mut verdicts, pass_from, pos, self.dropping);
        if pos > pass_from && !self.dropping {
            self.started = true;
        }
        (pos, verdicts)
    }

    /// True when no part of a command is pending (everything passed so far ended a
    /// command).
    pub fn between_commands(&self) -> bool {
        self.head.is_empty() && self.literal_left == 0 && self.line_len == 0
    }

    /// Counts bytes before login; false once the budget is spent.
    fn spend(&mut self, n: usize) -> bool {
        self.before_login = self.before_login.saturating_add(n);
        self.before_login <= self.limits.login_budget
    }

    /// Feeds one byte of a line to the scanner; at the end of a line, returns the
    /// literal it announces (length, synchronizing), if any.
    fn scan(&mut self, byte: u8) -> Option<Option<(u32, bool)>> {
        let (next, ended) = match (self.latest, byte) {
            (Latest::Cr(announced), b'\n') => (Latest::Other, Some(announced)),
            (Latest::Close(n, sync), b'\n') => (Latest::Other, Some(Some((n, sync)))),
            (_, b'\n') => (Latest::Other, Some(None)),
            (Latest::Close(n, sync), b'\r') => (Latest::Cr(Some((n, sync))), None),
            (_, b'\r') => (Latest::Cr(None), None),
            (_, b'{') => (Latest::Open, None),
            (Latest::Open, b'0'..=b'9') => (Latest::Digit(u32::from(byte - b'0')), None),
            (Latest::Digit(n), b'0'..=b'9') => (
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u32::from(byte - b'0')))
                    .map_or(Latest::Other, Latest::Digit),
                None,
            ),
            (Latest::Digit(n), b'+') => (Latest::Plus(n), None),
            (Latest::Digit(n), b'}') => (Latest::Close(n, true), None),
            (Latest::Plus(n), b'}') => (Latest::Close(n, false), None),
            _ => (Latest::Other, None),
        };
        self.latest = next;
        ended
    }

    fn tag(&self) -> Option<String> {
        let end = self.head.iter().position(|&b| b == b' ')?;
        let tag = &self.head[..end];
        let valid = !tag.is_empty()
            && tag.iter().all(|&b| {
                b.is_ascii_graphic()
                    && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
            });
        valid.then(|| String::from_utf8_lossy(tag).into_owned())
    }

    fn end_command(&mut self) {
        self.head.clear();
        self.started = false;
        self.dropping = false;
        self.latest = Latest::Other;
        self.line_len = 0;
        self.literal_left = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> InputLimits {
        InputLimits {
            max_line: 100,
            max_literal: 10_000,
            max_literal_before_login: 50,
            login_budget: 1000,
        }
    }

    /// Feeds `input` in chunks of `size`, as a session would (each call up to one
    /// command end), and collects what the parser would get and the other verdicts.
    fn run(input: &[u8], size: usize, logged_in: bool) -> (Vec<u8>, Vec<Verdict>) {
        let mut guard = InputGuard::new(limits());
        let mut parser = Vec::new();
        let mut others = Vec::new();
        for chunk in input.chunks(size) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let (used, verdicts) = guard.admit(rest, logged_in);
                for v in verdicts {
                    match v {
                        Verdict::Pass(r) => parser.extend_from_slice(&rest[r]),
                        other => others.push(other),
                    }
                }
                if others.iter().any(|v| matches!(v, Verdict::Fatal(_))) {
                    return (parser, others);
                }
                rest = &rest[used..];
            }
        }
        (parser, others)
    }

    #[test]
    fn ordinary_commands_and_literals_pass_in_any_chunking() {
        let input = b"a LOGIN {3}\r\nbob {2+}\r\npw\r\nb APPEND INBOX {5}\r\nhello\r\nc NOOP\r\n";
        for size in [1, 2, 3, 4, 7, 64] {
            let (parser, others) = run(input, size, true);
            assert_eq!(parser, input, "chunks of {size}");
            assert!(others.is_empty(), "{others:?}");
        }
    }

    #[test]
    fn the_guard_knows_when_a_command_is_half_sent() {
        let mut guard = InputGuard::new(limits());
        assert!(guard.between_commands());
        guard.admit(b"a NOOP", true);
        assert!(!guard.between_commands());
        guard.admit(b"\r\n", true);
        assert!(guard.between_commands());
        guard.admit(b"a APPEND x {3}\r\n", true);
        assert!(!guard.between_commands());
        guard.admit(b"abc\r\n", true);
        assert!(guard.between_commands());
    }

    #[test]
    fn literal_bytes_are_not_scanned_for_lines() {
        // A literal holding what looks like a line with an announcement.
        let input = b"a APPEND INBOX {12}\r\nx {99999}\r\n\r\nb NOOP\r\n";
        for size in [1, 5, 100] {
            let (parser, others) = run(input, size, true);
            assert_eq!(parser, input);
            assert!(others.is_empty());
        }
    }

    #[test]
    fn a_too_big_sync_literal_is_refused_before_it_is_sent() {
        let input = b"t1 APPEND INBOX {10001}\r\nt2 NOOP\r\n";
        let (parser, others) = run(input, 100, true);
        assert_eq!(parser, b"t2 NOOP\r\n");
        assert_eq!(
            others,
            [Verdict::RefuseLiteral {
                tag: Some("t1".into()),
                reset: false
            }]
        );
        // The same after an accepted literal: the parser must forget what it got.
        let input = b"t1 LOGIN {1}\r\nx {60}\r\nt2 NOOP\r\n";
        let (parser, others) = run(input, 100, false);
        assert_eq!(parser, b"t2 NOOP\r\n");
        let reset = |r| Verdict::RefuseLiteral {
            tag: Some("t1".into()),
            reset: r,
        };
        assert_eq!(others, [reset(false)]);
        let (parser, others) = run(input, 3, false);
        assert!(parser.ends_with(b"t2 NOOP\r\n"));
        assert_eq!(others, [reset(true)]);
    }

    #[test]
    fn a_too_big_non_sync_literal_is_dropped_with_its_command() {
        let mut input = b"t1 APPEND INBOX {4097+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 4097));
        input.extend_from_slice(b" more {3+}\r\nabc\r\nt2 NOOP\r\n");
        for size in [1, 1000, 10_000] {
            let (parser, others) = run(&input, size, true);
            assert!(parser.ends_with(b"t2 NOOP\r\n"), "chunks of {size}");
            assert!(
                !parser.windows(4).any(|w| w == b"xxxx"),
                "literal bytes passed"
            );
            assert_eq!(
                others,
                [Verdict::DroppedCommand {
                    tag: Some("t1".into()),
                    // Parts of the command reached the parser only when it came in
                    // several chunks.
                    reset: size < 20,
                }]
            );
        }
    }

    #[test]
    fn long_lines_and_the_login_budget_end_the_session() {
        let line = [b'x'; 150];
        let (_, others) = run(&line, 10, true);
        assert_eq!(others, [Verdict::Fatal("command line too long")]);
        // 20 short commands fit the line limit but not the budget.
        let input = b"a NOOP 0123456789012345678901234567890123456789012\r\n".repeat(20);
        let (parser, others) = run(&input, 7, false);
        assert_eq!(others, [Verdict::Fatal("too much data before login")]);
        assert!(parser.len() <= 1000);
        let (parser, others) = run(&input, 7, true);
        assert!(others.is_empty());
        assert_eq!(parser, input);
    }

    #[test]
    fn a_literal_streamed_before_login_never_gets_far() {
        // The CVE-2025-61600 pattern: literal after literal before login.
        let mut input = Vec::new();
        for _ in 0..100 {
            input.extend_from_slice(b"a LOGIN {40+}\r\n");
            input.extend(std::iter::repeat_n(b'y', 40));
            input.extend_from_slice(b" {40+}\r\n");
        }
        let (parser, others) = run(&input, 16, false);
        assert_eq!(others, [Verdict::Fatal("too much data before login")]);
        assert!(parser.len() <= 1000);
    }

    #[test]
    fn odd_announcements_frame_as_imap_codec_does() {
        // Not announcements: overflow, a space, CR not right before LF.
        for line in [
            &b"a X {99999999999}\r\n"[..],
            b"a X { 5}\r\n",
            b"a X {5}\r\r\n",
            b"a X {5}x\r\n",
        ] {
            let (parser, others) = run(line, 1, true);
            assert_eq!(parser, line);
            assert!(others.is_empty());
        }
        // Announcements: leading zeros, bare LF, a second brace.
        let input = b"a X {0003}\nabc {{1}\r\nz\r\n";
        let (parser, others) = run(input, 1, true);
        assert_eq!(parser, input);
        assert!(others.is_empty());
    }
}
