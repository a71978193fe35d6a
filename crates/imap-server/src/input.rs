//! The guard in front of the IMAP parser: it frames the client's bytes into lines and
//! literals exactly as imap-codec does, and enforces the limits before any byte reaches
//! the parser's buffer, so that what a client can make the server hold is bounded.
//!
//! - a line (a command without its literals) longer than `max_line` ends the session;
//! - a literal larger than the limit of the state (`max_literal` once logged in,
//!   `max_literal_before_login` before) is refused: a synchronizing one with a tagged
//!   `NO [TOOBIG]` before the client sends it, a non-synchronizing one (LITERAL+, RFC
//!   7888 §4: the client is already sending it) by reading and dropping it and the rest
//!   of its command, then a tagged `BAD [TOOBIG]`; the bytes dropped are never held,
//!   and before login they count against the budget like any others;
//! - before login, every byte counts against `login_budget`; a client that exceeds it
//!   is disconnected.
//!
//! The guard hands over bytes up to the end of one command at a time, so the limits
//! that apply to a command are those of the state it starts in (a login pipelined with
//! the next command is judged before the next one is).
//!
//! Once logged in, the literal of an APPEND larger than the spool threshold never
//! reaches the parser, which would hold it in memory: its bytes are handed out to be
//! spooled ([`Verdict::Spool`]) and the parser is told of an empty literal instead
//! (`{0}`, `{0+}`), so it still answers a synchronizing literal with its continuation
//! request. For that, the announcement of a literal in an APPEND is held back from its
//! brace to its line end; one that turns out to be no announcement goes on unchanged.
//! A guard made by [`InputGuard::new`] never spools.

use std::ops::Range;

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

/// What to do with a stretch of input when APPEND literals are spooled
/// ([`InputGuard::admit_spooling`]): a [`Verdict`], or one of the steps of spooling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// As without spooling.
    Verdict(Verdict),
    /// Give these bytes to the parser (an announcement held back, or the one that
    /// stands for a spooled literal).
    PassBytes(Vec<u8>),
    /// A literal of `length` octets of an APPEND is spooled, not parsed: its bytes
    /// follow as [`Step::Spool`]; the parser gets an empty literal in its place.
    SpoolStart {
        /// The announced length.
        length: u32,
    },
    /// These bytes (of the chunk) belong to the spooled literal.
    Spool(Range<usize>),
}

impl From<Verdict> for Step {
    fn from(verdict: Verdict) -> Step {
        Step::Verdict(verdict)
    }
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

impl Latest {
    /// Within what may still become a literal announcement.
    fn announcing(self) -> bool {
        matches!(
            self,
            Latest::Open
                | Latest::Digit(_)
                | Latest::Plus(_)
                | Latest::Close(..)
                | Latest::Cr(Some(_))
        )
    }
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
    /// APPEND literals larger than this are spooled.
    spool_above: u32,
    /// Words of the command's first line seen: 0 in the tag, 1 in the name, 2 past it.
    word: u8,
    /// The start of the command's name.
    name: Vec<u8>,
    /// An announcement held back from an earlier chunk.
    held: Vec<u8>,
    /// The current literal is spooled.
    spooling: bool,
}

/// Bytes of a command kept for its tag.
const HEAD: usize = 64;
/// Bytes of a command's name kept, enough for `APPEND`.
const NAME: usize = 8;

impl InputGuard {
    /// A guard at the start of a connection.
    pub fn new(limits: InputLimits) -> InputGuard {
        InputGuard::with_spooling(limits, u32::MAX)
    }

    /// A guard at the start of a connection that has APPEND literals larger than
    /// `spool_above` spooled once logged in ([`InputGuard::admit_spooling`]).
    pub fn with_spooling(limits: InputLimits, spool_above: u32) -> InputGuard {
        InputGuard {
            limits,
            latest: Latest::Other,
            line_len: 0,
            literal_left: 0,
            head: Vec::new(),
            started: false,
            dropping: false,
            before_login: 0,
            spool_above,
            word: 0,
            name: Vec::new(),
            held: Vec::new(),
            spooling: false,
        }
    }

    /// Looks at `chunk` up to the end of the first command it completes, and says what
    /// to do with it. Returns how many bytes of `chunk` were looked at (the rest waits
    /// for the next call) and the verdicts, in order.
    pub fn admit(&mut self, chunk: &[u8], logged_in: bool) -> (usize, Vec<Verdict>) {
        let (used, steps) = self.admit_spooling(chunk, logged_in);
        let verdicts = steps
            .into_iter()
            .filter_map(|step| match step {
                Step::Verdict(verdict) => Some(verdict),
                // Only a guard made by `with_spooling` takes these steps.
                Step::PassBytes(_) | Step::SpoolStart { .. } | Step::Spool(_) => None,
            })
            .collect();
        (used, verdicts)
    }

    /// Like [`InputGuard::admit`], with the steps of spooling an APPEND literal.
    pub fn admit_spooling(&mut self, chunk: &[u8], logged_in: bool) -> (usize, Vec<Step>) {
        let mut verdicts = Vec::new();
        let mut pos = 0;
        let mut pass_from = 0;
        // Where the announcement held back starts in this chunk (0: in an earlier one).
        let mut hold_from = (!self.held.is_empty()).then_some(0);
        let flush = |verdicts: &mut Vec<Step>, from: usize, to: usize, dropping: bool| {
            if to > from && !dropping {
                verdicts.push(Verdict::Pass(from..to).into());
            }
        };
        while pos < chunk.len() {
            if self.literal_left > 0 {
                let take = (chunk.len() - pos).min(self.literal_left as usize);
                if !logged_in && !self.spend(take) {
                    verdicts.push(Verdict::Fatal("too much data before login").into());
                    return (chunk.len(), verdicts);
                }
                if self.spooling {
                    verdicts.push(Step::Spool(pos..pos + take));
                    pass_from = pos + take;
                }
                pos += take;
                self.literal_left -= take as u32;
                if self.literal_left == 0 {
                    self.spooling = false;
                }
                continue;
            }
            let byte = chunk[pos];
            pos += 1;
            if !logged_in && !self.spend(1) {
                verdicts.push(Verdict::Fatal("too much data before login").into());
                return (chunk.len(), verdicts);
            }
            if self.head.len() < HEAD {
                self.head.push(byte);
            }
            if self.word < 2 {
                if byte == b' ' {
                    self.word += 1;
                } else if self.word == 1 && self.name.len() < NAME {
                    self.name.push(byte);
                }
            }
            self.line_len += 1;
            if self.line_len > self.limits.max_line {
                verdicts.push(Verdict::Fatal("command line too long").into());
                return (chunk.len(), verdicts);
            }
            let ended = self.scan(byte);
            if self.may_spool(logged_in) {
                if byte == b'{' {
                    // A brace starts what may be an announcement; one held before was none.
                    self.release(&mut verdicts);
                    hold_from = Some(pos - 1);
                } else if hold_from.is_some()
                    && !matches!(ended, Some(Some(_)))
                    && !self.latest.announcing()
                {
                    self.release(&mut verdicts);
                    hold_from = None;
                }
            }
            let Some(announcement) = ended else {
                continue;
            };
            // A line ended.
            self.line_len = 0;
            match announcement {
                None => {
                    // The command is complete.
                    flush(&mut verdicts, pass_from, pos, self.dropping);
                    if self.dropping {
                        verdicts.push(
                            Verdict::DroppedCommand {
                                tag: self.tag(),
                                reset: self.started,
                            }
                            .into(),
                        );
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
                            verdicts.push(Verdict::Fatal("literal after a refused literal").into());
                            return (chunk.len(), verdicts);
                        }
                        if length > limit {
                            verdicts.push(
                                Verdict::RefuseLiteral {
                                    tag: self.tag(),
                                    reset: self.started,
                                }
                                .into(),
                            );
                            self.end_command();
                            return (pos, verdicts);
                        }
                    } else if length > limit && !self.dropping {
                        // Drop this command: what of it is in this chunk goes nowhere;
                        // what went to the parser before is undone by a reset.
                        self.dropping = true;
                        self.held.clear();
                        hold_from = None;
                        pass_from = pos;
                    }
                    self.literal_left = length;
                    match hold_from.take() {
                        Some(from) if length > self.spool_above && self.may_spool(logged_in) => {
                            // The parser gets an empty literal; the bytes go to the spool.
                            flush(&mut verdicts, pass_from, from, false);
                            let mut announced = std::mem::take(&mut self.held);
                            announced.extend_from_slice(&chunk[from..pos]);
                            verdicts.push(Step::PassBytes(empty_literal(&announced)));
                            verdicts.push(Step::SpoolStart { length });
                            self.started = true;
                            self.spooling = true;
                            pass_from = pos;
                        }
                        Some(_) => self.release(&mut verdicts),
                        None => {}
                    }
                }
            }
        }
        // What is held back waits for the rest of its line.
        let pass_to = match hold_from {
            Some(from) => {
                self.held.extend_from_slice(&chunk[from..pos]);
                from
            }
            None => pos,
        };
        flush(&mut verdicts, pass_from, pass_to, self.dropping);
        if pass_to > pass_from && !self.dropping {
            self.started = true;
        }
        (pos, verdicts)
    }

    /// Whether an announcement in the current command may be spooled: an APPEND of a
    /// logged-in session that is not being dropped.
    fn may_spool(&self, logged_in: bool) -> bool {
        self.spool_above < u32::MAX
            && logged_in
            && !self.dropping
            && self.word == 2
            && self.name.eq_ignore_ascii_case(b"APPEND")
    }

    /// Gives the parser what was held back from an earlier chunk (what is held in the
    /// current one simply stays in its range).
    fn release(&mut self, verdicts: &mut Vec<Step>) {
        if !self.held.is_empty() {
            verdicts.push(Step::PassBytes(std::mem::take(&mut self.held)));
            self.started = true;
        }
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
        self.word = 0;
        self.name.clear();
        self.held.clear();
        self.spooling = false;
        self.started = false;
        self.dropping = false;
        self.latest = Latest::Other;
        self.line_len = 0;
        self.literal_left = 0;
    }
}

/// The announcement `{N}` or `{N+}` (with its line end) as one of an empty literal.
fn empty_literal(announced: &[u8]) -> Vec<u8> {
    let digits = announced
        .iter()
        .skip(1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let mut out = b"{0".to_vec();
    out.extend_from_slice(&announced[(1 + digits).min(announced.len())..]);
    out
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

    /// APPEND literals over this many octets are spooled.
    const SPOOL_ABOVE: u32 = 20;

    /// Feeds `input` in chunks of `size`, as a session would (each call up to one
    /// command end), and collects what the parser would get and the other verdicts.
    fn run(input: &[u8], size: usize, logged_in: bool) -> (Vec<u8>, Vec<Verdict>) {
        let run = run_spooling(input, size, logged_in);
        assert!(run.spooled.is_empty() && run.starts.is_empty());
        (run.parser, run.others)
    }

    /// What a run gave the parser and the spool.
    struct Spooling {
        parser: Vec<u8>,
        others: Vec<Verdict>,
        spooled: Vec<u8>,
        /// The lengths of spooled literals.
        starts: Vec<u32>,
    }

    /// Like `run`, and what went to the spool.
    fn run_spooling(input: &[u8], size: usize, logged_in: bool) -> Spooling {
        let mut guard = InputGuard::with_spooling(limits(), SPOOL_ABOVE);
        let mut parser = Vec::new();
        let mut others = Vec::new();
        let mut spooled = Vec::new();
        let mut starts = Vec::new();
        'read: for chunk in input.chunks(size) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let (used, steps) = guard.admit_spooling(rest, logged_in);
                for step in steps {
                    match step {
                        Step::Verdict(Verdict::Pass(r)) => parser.extend_from_slice(&rest[r]),
                        Step::PassBytes(bytes) => parser.extend_from_slice(&bytes),
                        Step::Spool(r) => spooled.extend_from_slice(&rest[r]),
                        Step::Verdict(other) => others.push(other),
                        Step::SpoolStart { length } => starts.push(length),
                    }
                }
                if others.iter().any(|v| matches!(v, Verdict::Fatal(_))) {
                    break 'read;
                }
                rest = &rest[used..];
            }
        }
        Spooling {
            parser,
            others,
            spooled,
            starts,
        }
    }

    #[test]
    fn a_large_append_literal_goes_to_the_spool_and_the_parser_gets_an_empty_one() {
        let message = b"Subject: x\r\n\r\nmore than twenty octets\r\n";
        for (announce, stands_for) in [
            (&b"{39}"[..], &b"{0}"[..]),
            (b"{39+}", b"{0+}"),
            (b"~{39}", b"~{0}"),
            (b"{00039}", b"{0}"),
        ] {
            let mut input = b"a append \"x{5}y\" (\\Seen) ".to_vec();
            input.extend_from_slice(announce);
            input.extend_from_slice(b"\r\n");
            input.extend_from_slice(message);
            input.extend_from_slice(b"\r\nb NOOP\r\n");
            let mut expected = b"a append \"x{5}y\" (\\Seen) ".to_vec();
            expected.extend_from_slice(stands_for);
            expected.extend_from_slice(b"\r\n\r\nb NOOP\r\n");
            for size in [1, 2, 3, 5, 8, 13, 100] {
                let run = run_spooling(&input, size, true);
                let shown = String::from_utf8_lossy(&run.parser);
                assert_eq!(
                    run.parser, expected,
                    "{announce:?} in chunks of {size}: {shown}"
                );
                assert_eq!(run.spooled, message);
                assert_eq!(run.starts, [39]);
                assert!(run.others.is_empty(), "{:?}", run.others);
            }
        }
    }

    #[test]
    fn small_append_literals_other_commands_and_logins_are_not_spooled() {
        for (input, logged_in) in [
            (
                &b"a APPEND INBOX {20}\r\n01234567890123456789\r\n"[..],
                true,
            ),
            (b"a SEARCH TEXT {21}\r\n012345678901234567890\r\n", true),
            (b"a APPEND INBOX {21}\r\n012345678901234567890\r\n", false),
            (b"a APPENDX INBOX {21}\r\n012345678901234567890\r\n", true),
        ] {
            for size in [1, 4, 100] {
                let (parser, others) = run(input, size, logged_in);
                assert_eq!(parser, input);
                assert!(others.is_empty(), "{others:?}");
            }
        }
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
    fn a_non_sync_literal_up_to_the_limit_passes() {
        // LITERAL+: no 4096-octet cap below the state's limit.
        let mut input = b"t1 SEARCH TEXT {10000+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10_000));
        input.extend_from_slice(b"\r\nt2 NOOP\r\n");
        for size in [1, 1000, 20_000] {
            let (parser, others) = run(&input, size, true);
            assert_eq!(parser, input, "chunks of {size}");
            assert!(others.is_empty(), "{others:?}");
        }
    }

    #[test]
    fn a_too_big_non_sync_literal_is_dropped_with_its_command() {
        let mut input = b"t1 APPEND INBOX {10001+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10_001));
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
