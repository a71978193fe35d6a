//! Reading a message body, sans I/O: DATA (dot-terminated, dot-stuffed) and
//! BDAT chunks (RFC 3030).
//!
//! Only `<CRLF>.<CRLF>` ends DATA. A bare LF, a bare CR or a NUL anywhere in the
//! body poisons the transaction (SMTP smuggling, CVE-2023-51764: another server
//! may read `\n.\n` as the end of the message, and what follows as a second one):
//! the body is read to its real end and refused, and nothing is queued. Lines
//! longer than 1000 octets (CRLF included, RFC 5321 §4.5.3.1.6) are refused the
//! same way. Past the size limit the bytes are counted and dropped, not kept.
//!
//! smtp-proto's `DataReceiver` only undoes dot-stuffing (it returns the body
//! without the CRLF before the final dot and never ends an empty DATA), so the
//! rules above live here instead.

/// The longest text line, CRLF included.
pub const MAX_LINE: usize = 1000;

/// Why a body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// A bare CR or LF, or a NUL.
    BadLineEnding,
    /// A line over [`MAX_LINE`] octets.
    LineTooLong,
    /// More than the size limit.
    TooBig,
}

/// The outcome of a body once its end was read.
#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    /// The message, with CRLF line ends and dot-stuffing undone.
    Complete(Vec<u8>),
    /// Refused; everything was read and dropped.
    Refused(Flaw),
}

/// Reads a DATA body.
#[derive(Debug)]
pub struct DataReader {
    limit: usize,
    data: Vec<u8>,
    /// Octets of the current line so far (CR included when pending).
    line_len: usize,
    /// The current line is exactly "." so far.
    line_is_dot: bool,
    /// At the start of a line.
    at_line_start: bool,
    /// The previous octet was a CR not yet known to be followed by LF.
    pending_cr: bool,
    /// Total message octets seen (after unstuffing).
    size: usize,
    flaw: Option<Flaw>,
}

impl DataReader {
    /// A reader keeping at most `limit` octets.
    pub fn new(limit: usize) -> Self {
        DataReader {
            limit,
            data: Vec::new(),
            line_len: 0,
            line_is_dot: false,
            at_line_start: true,
            pending_cr: false,
            size: 0,
            flaw: None,
        }
    }

    fn flaw(&mut self, flaw: Flaw) {
        // The first flaw decides the reply; a smuggling attempt wins over size.
        if self.flaw.is_none() || flaw == Flaw::BadLineEnding {
            self.flaw = Some(flaw);
        }
        self.data = Vec::new();
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.size += bytes.len();
        if self.size > self.limit {
            if self.flaw.is_none() {
                self.flaw(Flaw::TooBig);
            }
            return;
        }
        if self.flaw.is_none() {
            self.data.extend_from_slice(bytes);
        }
    }

    /// Consumes bytes; returns the body and how many bytes it used once the
    /// end was seen (the rest belongs to the next command), or `None` when it
    /// needs more.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<(Body, usize)> {
        for (i, &b) in bytes.iter().enumerate() {
            if self.pending_cr {
                self.pending_cr = false;
                if b != b'\n' {
                    // A CR not followed by LF.
                    self.flaw(Flaw::BadLineEnding);
                    // Treat the octet after the bare CR as starting afresh.
                    self.line_is_dot = false;
                } else {
                    // CRLF: end of line.
                    if self.line_is_dot {
                        let body = match self.flaw {
                            Some(flaw) => Body::Refused(flaw),
                            None => Body::Complete(std::mem::take(&mut self.data)),
                        };
                        return Some((body, i + 1));
                    }
                    self.keep(b"\r\n");
                    self.at_line_start = true;
                    self.line_len = 0;
                    self.line_is_dot = false;
                    continue;
                }
            }
            match b {
                b'\r' => {
                    self.pending_cr = true;
                    self.line_len += 1;
                }
                b'\n' => {
                    // LF without CR: not a line end, so what follows is no line
                    // start either (only <CRLF>.<CRLF> ends the body).
                    self.flaw(Flaw::BadLineEnding);
                    self.at_line_start = false;
                    self.line_len = 0;
                    self.line_is_dot = false;
                }
                0 => {
                    self.flaw(Flaw::BadLineEnding);
                    self.at_line_start = false;
                    self.line_is_dot = false;
                }
                b'.' if self.at_line_start => {
                    // Either the end marker or a stuffed dot: both drop this dot.
                    self.at_line_start = false;
                    self.line_is_dot = true;
                    self.line_len += 1;
                }
                _ => {
                    if self.line_is_dot {
                        // ".x": a stuffed dot, removed; the line goes on.
                        self.line_is_dot = false;
                    }
                    self.at_line_start = false;
                    self.line_len += 1;
                    // The line's octets so far plus the CRLF still to come.
                    if self.line_len + 2 > MAX_LINE {
                        self.flaw(Flaw::LineTooLong);
                    }
                    self.keep(&[b]);
                }
            }
        }
        None
    }
}

/// Checks a BDAT chunk's content (binary transport is not offered, so the
/// same line rules as DATA hold) and keeps it within the size limit.
#[derive(Debug)]
pub struct ChunkReader {
    limit: usize,
    data: Vec<u8>,
    size: usize,
    line_len: usize,
    pending_cr: bool,
    flaw: Option<Flaw>,
}

impl ChunkReader {
    /// A reader keeping at most `limit` octets over all chunks.
    pub fn new(limit: usize) -> Self {
        ChunkReader {
            limit,
            data: Vec::new(),
            size: 0,
            line_len: 0,
            pending_cr: false,
            flaw: None,
        }
    }

    /// Adds the bytes of a chunk.
    pub fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.pending_cr && b != b'\n' {
                self.set_flaw(Flaw::BadLineEnding);
            }
            match b {
                b'\n' if !self.pending_cr => self.set_flaw(Flaw::BadLineEnding),
                b'\n' => self.line_len = 0,
                0 => self.set_flaw(Flaw::BadLineEnding),
                _ => {
                    self.line_len += 1;
                    // Octets so far (a CR included) plus the LF still to come.
                    if self.line_len >= MAX_LINE {
                        self.set_flaw(Flaw::LineTooLong);
                    }
                }
            }
            self.pending_cr = b == b'\r';
        }
        self.size += bytes.len();
        if self.size > self.limit {
            self.set_flaw(Flaw::TooBig);
        }
        if self.flaw.is_none() {
            self.data.extend_from_slice(bytes);
        }
    }

    fn set_flaw(&mut self, flaw: Flaw) {
        if self.flaw.is_none() || flaw == Flaw::BadLineEnding {
            self.flaw = Some(flaw);
        }
        self.data = Vec::new();
    }

    /// The body after the last chunk.
    pub fn finish(mut self) -> Body {
        if self.pending_cr {
            self.set_flaw(Flaw::BadLineEnding);
        }
        match self.flaw {
            Some(flaw) => Body::Refused(flaw),
            None => Body::Complete(self.data),
        }
    }

    /// Octets received so far.
    pub fn size(&self) -> usize {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `n` bytes; returns the body and the bytes left.
    fn read(input: &[u8], n: usize, limit: usize) -> Option<(Body, Vec<u8>)> {
        let mut r = DataReader::new(limit);
        let mut offset = 0;
        for chunk in input.chunks(n) {
            if let Some((body, used)) = r.feed(chunk) {
                let rest = input[offset + used..].to_vec();
                return Some((body, rest));
            }
            offset += chunk.len();
        }
        None
    }

    fn all_chunkings(input: &[u8], limit: usize) -> Option<(Body, Vec<u8>)> {
        let first = read(input, input.len().max(1), limit);
        for n in [1, 2, 3, 4, 7, 8, 16, 64] {
            assert_eq!(read(input, n, limit), first, "chunks of {n}");
        }
        first
    }

    #[test]
    fn a_plain_body_ends_at_crlf_dot_crlf_and_unstuffs() {
        let (body, rest) =
            all_chunkings(b"Subject: x\r\n\r\n..leading\r\n.\r\nQUIT\r\n", 1 << 20).unwrap();
        assert_eq!(
            body,
            Body::Complete(b"Subject: x\r\n\r\n.leading\r\n".to_vec())
        );
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn an_empty_body_ends() {
        let (body, rest) = all_chunkings(b".\r\nQUIT\r\n", 1 << 20).unwrap();
        assert_eq!(body, Body::Complete(Vec::new()));
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn smuggling_variants_never_end_the_body_and_are_refused() {
        for attack in [
            &b"a\n.\nMAIL FROM:<x@y>\r\n"[..],
            b"a\r.\rMAIL FROM:<x@y>\r\n",
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\r\rMAIL\r\n",
            b"a\0b\r\n",
        ] {
            let mut input = attack.to_vec();
            // The smuggled "end" did not end it: only the real one does.
            assert!(
                read(&input, 1, 1 << 20).is_none(),
                "{attack:?} ended the body"
            );
            input.extend_from_slice(b"\r\n.\r\n");
            let (body, rest) = all_chunkings(&input, 1 << 20).unwrap();
            assert_eq!(body, Body::Refused(Flaw::BadLineEnding), "{attack:?}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn long_lines_and_large_bodies_are_refused_but_read_to_the_end() {
        let mut long = vec![b'a'; 999];
        long.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(
            all_chunkings(&long, 1 << 20).unwrap().0,
            Body::Refused(Flaw::LineTooLong)
        );
        let mut ok = vec![b'a'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        assert!(matches!(
            all_chunkings(&ok, 1 << 20).unwrap().0,
            Body::Complete(_)
        ));

        let mut big = Vec::new();
        for _ in 0..100 {
            big.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
        }
        big.extend_from_slice(b".\r\nNOOP\r\n");
        let (body, rest) = all_chunkings(&big, 1000).unwrap();
        assert_eq!(body, Body::Refused(Flaw::TooBig));
        assert_eq!(rest, b"NOOP\r\n");
    }

    #[test]
    fn chunks_follow_the_same_line_rules() {
        let mut c = ChunkReader::new(100);
        c.add(b"Subject: x\r\n");
        c.add(b"\r\nbody\r\n");
        assert_eq!(
            c.finish(),
            Body::Complete(b"Subject: x\r\n\r\nbody\r\n".to_vec())
        );
        let mut c = ChunkReader::new(100);
        c.add(b"a\nb\r\n");
        assert_eq!(c.finish(), Body::Refused(Flaw::BadLineEnding));
        let mut c = ChunkReader::new(10);
        c.add(b"0123456789\r\n");
        assert_eq!(c.finish(), Body::Refused(Flaw::TooBig));
        // A CRLF split across two chunks is fine.
        let mut c = ChunkReader::new(100);
        c.add(b"a\r");
        c.add(b"\nb\r\n");
        assert_eq!(c.finish(), Body::Complete(b"a\r\nb\r\n".to_vec()));
    }
}
