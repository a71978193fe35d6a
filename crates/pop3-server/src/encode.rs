//! A stored message as it goes on the wire (RFC 1939 §3): every line ends in
//! CRLF, a line that begins with '.' gets another '.', and `.` CRLF ends it.
//!
//! The same encoder, without stuffing and terminator, counts the octets that
//! STAT and LIST announce, so the sizes always match what RETR sends: a file
//! with bare LF line ends is counted with the CR that goes out, and a last line
//! without a line end is counted with the CRLF added to it. A CR not followed
//! by LF is data and goes out as it is.
//!
//! It works on chunks of any size and keeps a few flags of state, so a message
//! of any size is sent with bounded memory.

/// Turns message bytes into their wire form, chunk by chunk.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// Double a leading '.' (transfer) or not (size count).
    stuff: bool,
    /// TOP: the number of body lines to send; `None` sends all.
    top: Option<u64>,
    at_line_start: bool,
    pending_cr: bool,
    in_body: bool,
    /// Body lines completed.
    body_lines: u64,
    /// TOP has sent all it should.
    done: bool,
}

impl Encoder {
    /// For RETR (`top` = `None`) or TOP (`top` = the number of body lines).
    pub fn transfer(top: Option<u64>) -> Encoder {
        Encoder::new(true, top)
    }

    /// For counting the size that RETR will send, stuffing excluded (RFC 1939 §11).
    pub fn size() -> Encoder {
        Encoder::new(false, None)
    }

    fn new(stuff: bool, top: Option<u64>) -> Encoder {
        Encoder {
            stuff,
            top,
            at_line_start: true,
            pending_cr: false,
            in_body: false,
            body_lines: 0,
            done: false,
        }
    }

    /// Encodes a chunk of the stored message, appending to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 32 + 4);
        for &byte in input {
            if self.done {
                return;
            }
            if self.pending_cr {
                self.pending_cr = false;
                if byte == b'\n' {
                    self.end_line(out);
                    continue;
                }
                // A bare CR is data.
                self.data(b'\r', out);
                if self.done {
                    return;
                }
            }
            match byte {
                b'\r' => {
                    if self.line_start_check() {
                        return;
                    }
                    self.pending_cr = true;
                }
                b'\n' => {
                    if self.line_start_check() {
                        return;
                    }
                    self.end_line(out);
                }
                _ => self.data(byte, out),
            }
        }
    }

    /// True once TOP has sent all its lines: the rest need not be read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Ends the message: a CR left over goes out as data, a last line without
    /// its line end gets one, and a transfer gets its terminating `.` CRLF.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if self.pending_cr && !self.done {
            self.pending_cr = false;
            self.data(b'\r', out);
        }
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        if self.stuff {
            out.extend_from_slice(b".\r\n");
        }
    }

    /// True (and stops) if TOP has sent its lines and a new line begins.
    fn line_start_check(&mut self) -> bool {
        if self.at_line_start && self.in_body && self.top.is_some_and(|n| self.body_lines >= n) {
            self.done = true;
        }
        self.done
    }

    fn data(&mut self, byte: u8, out: &mut Vec<u8>) {
        if self.at_line_start {
            if self.line_start_check() {
                return;
            }
            if self.stuff && byte == b'.' {
                out.push(b'.');
            }
        }
        out.push(byte);
        self.at_line_start = false;
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        let empty = self.at_line_start;
        out.extend_from_slice(b"\r\n");
        self.at_line_start = true;
        if self.in_body {
            self.body_lines += 1;
        } else if empty {
            self.in_body = true;
        }
    }
}

/// The wire form of a whole message (tests, small messages).
pub fn transfer(message: &[u8], top: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = Encoder::transfer(top);
    encoder.encode(message, &mut out);
    encoder.finish(&mut out);
    out
}

/// The size STAT and LIST announce for a whole message.
pub fn size(message: &[u8]) -> u64 {
    let mut out = Vec::new();
    let mut encoder = Encoder::size();
    encoder.encode(message, &mut out);
    encoder.finish(&mut out);
    out.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes in chunks of `chunk` bytes.
    fn chunked(message: &[u8], top: Option<u64>, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = Encoder::transfer(top);
        for piece in message.chunks(chunk) {
            encoder.encode(piece, &mut out);
        }
        encoder.finish(&mut out);
        out
    }

    /// What a client gets back after undoing the stuffing and dropping `.` CRLF.
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").expect("terminator");
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    const CASES: &[(&[u8], &[u8])] = &[
        (b"", b".\r\n"),
        (b"A: b\r\n\r\nbody\r\n", b"A: b\r\n\r\nbody\r\n.\r\n"),
        (b"A: b\n\nbody\n", b"A: b\r\n\r\nbody\r\n.\r\n"),
        (b"A: b\r\n\r\nno end", b"A: b\r\n\r\nno end\r\n.\r\n"),
        (
            b"A: b\r\n\r\n.\r\n..x\r\n.\n",
            b"A: b\r\n\r\n..\r\n...x\r\n..\r\n.\r\n",
        ),
        (b"a\rb\r\n", b"a\rb\r\n.\r\n"),
        (b"ends in cr\r", b"ends in cr\r\r\n.\r\n"),
        (b"\r\n.", b"\r\n..\r\n.\r\n"),
        (
            b"h: \xe9t\xe9\r\n\r\n\xff\x00\x80\r\n",
            b"h: \xe9t\xe9\r\n\r\n\xff\x00\x80\r\n.\r\n",
        ),
    ];

    #[test]
    fn messages_are_stuffed_and_crlf_terminated_whatever_the_chunks() {
        for (message, wire) in CASES {
            for chunk in [1, 2, 3, 4, 1000] {
                assert_eq!(
                    chunked(message, None, chunk),
                    *wire,
                    "{:?} in chunks of {chunk}",
                    String::from_utf8_lossy(message)
                );
            }
        }
    }

    #[test]
    fn the_size_is_what_the_client_receives() {
        for (message, wire) in CASES {
            assert_eq!(
                size(message),
                unstuff(wire).len() as u64,
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
        // A CRLF message: the stored size exactly.
        let stored = b"Subject: x\r\n\r\n.hidden\r\nline\r\n";
        assert_eq!(size(stored), stored.len() as u64);
        assert_eq!(unstuff(&transfer(stored, None)), stored);
        // Bare LF: one more octet per line.
        assert_eq!(size(b"a\nb\n"), 6);
    }

    #[test]
    fn top_sends_the_header_and_n_body_lines() {
        let message = b"A: 1\r\nB: 2\r\n\r\nl1\r\n.l2\r\nl3\r\n";
        for chunk in [1, 2, 4, 100] {
            assert_eq!(
                chunked(message, Some(0), chunk),
                b"A: 1\r\nB: 2\r\n\r\n.\r\n"
            );
            assert_eq!(
                chunked(message, Some(2), chunk),
                b"A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\n.\r\n"
            );
            assert_eq!(chunked(message, Some(9), chunk), chunked(message, None, 7));
        }
        // No body at all: the whole header.
        assert_eq!(transfer(b"A: 1\r\nB: 2", Some(0)), b"A: 1\r\nB: 2\r\n.\r\n");
        // LF-only header separator.
        assert_eq!(
            transfer(b"A: 1\n\nx\ny\n", Some(1)),
            b"A: 1\r\n\r\nx\r\n.\r\n"
        );
        // An empty body line counts as a line.
        assert_eq!(
            transfer(b"A: 1\r\n\r\n\r\nx\r\n", Some(1)),
            b"A: 1\r\n\r\n\r\n.\r\n"
        );
    }
}
