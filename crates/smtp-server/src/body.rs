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
//!
//! What is kept goes to a [`Spool`]: memory up to `[smtp_server]
//! spool_threshold`, then an unlinked file, so a large message costs the
//! session a few KiB of memory while it arrives and while it is queued
//! ([`Message`] is read by the queue client in pieces).

use std::io;

use qs_service::spool::Spool;

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
    /// The spool could not keep the body (a full disk): a temporary failure.
    Unstored,
}

impl Flaw {
    /// Which flaw decides the reply when a body has several: a smuggling
    /// attempt over size, size over a long line. Every flaw of a body is
    /// found whatever pieces it arrives in, so the reply is the same too.
    fn outranks(self, other: Flaw) -> bool {
        let rank = |flaw| match flaw {
            Flaw::BadLineEnding => 3,
            Flaw::TooBig => 2,
            Flaw::LineTooLong => 1,
            Flaw::Unstored => 0,
        };
        rank(self) > rank(other)
    }
}

/// The outcome of a body once its end was read.
#[derive(Debug)]
pub enum Body {
    /// The message, with CRLF line ends and dot-stuffing undone.
    Complete(Spool),
    /// Refused; everything was read and dropped.
    Refused(Flaw),
}

/// Reads a DATA body.
#[derive(Debug)]
pub struct DataReader {
    limit: usize,
    /// What one [`DataReader::feed`] kept; it goes to `spool` at its end.
    data: Vec<u8>,
    spool: Spool,
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
    /// A reader keeping at most `limit` octets in `spool` (empty).
    pub fn new(limit: usize, spool: Spool) -> Self {
        DataReader {
            limit,
            data: Vec::new(),
            spool,
            line_len: 0,
            line_is_dot: false,
            at_line_start: true,
            pending_cr: false,
            size: 0,
            flaw: None,
        }
    }

    fn flaw(&mut self, flaw: Flaw) {
        if self.flaw.is_none_or(|had| flaw.outranks(had)) {
            self.flaw = Some(flaw);
        }
        self.data = Vec::new();
        self.spool.clear();
    }

    /// Moves what this feed kept to the spool.
    fn store_kept(&mut self) {
        if self.flaw.is_none()
            && let Err(e) = self.spool.append(&self.data)
        {
            tracing::warn!(error = %e, "cannot spool the message");
            self.flaw(Flaw::Unstored);
        }
        self.data.clear();
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
                    // No line end, so no line start either: a dot after it
                    // must not end the body (`<CRLF><CR>.<CRLF>` is no end).
                    self.line_is_dot = false;
                    self.at_line_start = false;
                } else {
                    // CRLF: end of line.
                    if self.line_is_dot {
                        self.store_kept();
                        let body = match self.flaw {
                            Some(flaw) => Body::Refused(flaw),
                            None => Body::Complete(self.spool.take()),
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
        self.store_kept();
        None
    }
}

/// Checks a BDAT chunk's content (binary transport is not offered, so the
/// same line rules as DATA hold) and keeps it within the size limit.
#[derive(Debug)]
pub struct ChunkReader {
    limit: usize,
    spool: Spool,
    size: usize,
    line_len: usize,
    pending_cr: bool,
    flaw: Option<Flaw>,
}

impl ChunkReader {
    /// A reader keeping at most `limit` octets over all chunks in `spool`
    /// (empty).
    pub fn new(limit: usize, spool: Spool) -> Self {
        ChunkReader {
            limit,
            spool,
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
        if self.flaw.is_none()
            && let Err(e) = self.spool.append(bytes)
        {
            tracing::warn!(error = %e, "cannot spool the message");
            self.set_flaw(Flaw::Unstored);
        }
    }

    fn set_flaw(&mut self, flaw: Flaw) {
        if self.flaw.is_none_or(|had| flaw.outranks(had)) {
            self.flaw = Some(flaw);
        }
        self.spool.clear();
    }

    /// The body after the last chunk.
    pub fn finish(mut self) -> Body {
        if self.pending_cr {
            self.set_flaw(Flaw::BadLineEnding);
        }
        match self.flaw {
            Some(flaw) => Body::Refused(flaw),
            None => Body::Complete(self.spool),
        }
    }

    /// Octets received so far.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// The longest header block read for the checks at the end of a message.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;
/// The header block is read in steps of this size.
const HEADER_STEP: usize = 16 * 1024;

/// The header block of a spooled message, up to its empty line, or its first
/// [`MAX_HEADER_BLOCK`] octets when it is longer (or has no body).
pub fn header_block(message: &Spool) -> io::Result<Vec<u8>> {
    let mut step = HEADER_STEP;
    loop {
        let mut head = message.head(step)?;
        let end = qs_queue::message::header_end(&head);
        if end < head.len() || head.len() as u64 == message.len() || step >= MAX_HEADER_BLOCK {
            head.truncate(end);
            return Ok(head);
        }
        step = (step * 4).min(MAX_HEADER_BLOCK);
    }
}

/// A message as it is queued: our trace fields (and the header block, when
/// fields were taken out of it), then the rest of the message as received,
/// which stays where the [`Spool`] has it.
#[derive(Debug)]
pub struct Message {
    trace: Vec<u8>,
    body: Spool,
    /// Octets at the start of `body` replaced by what `trace` holds.
    skip: u64,
}

impl Message {
    /// `fields` (each a whole field without its line end) before `body`.
    pub fn new(fields: &[String], body: Spool) -> Message {
        Message {
            trace: qs_queue::message::prepend(fields, b""),
            body,
            skip: 0,
        }
    }

    /// `fields`, then `header` in place of the first `replaced` octets of
    /// `body` (its header block, with fields taken out).
    pub fn with_header(fields: &[String], header: &[u8], body: Spool, replaced: usize) -> Message {
        Message {
            trace: qs_queue::message::prepend(fields, header),
            skip: (replaced as u64).min(body.len()),
            body,
        }
    }

    /// Puts `fields` above everything else.
    pub fn prepend_fields(&mut self, fields: &[String]) {
        if !fields.is_empty() {
            self.trace = qs_queue::message::prepend(fields, &self.trace);
        }
    }

    /// Its length in octets.
    pub fn len(&self) -> u64 {
        self.trace.len() as u64 + self.body.len() - self.skip
    }

    /// Whether it has no octets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole message in memory (for tests and small messages).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        out.extend_from_slice(&self.trace);
        let mut offset = self.skip;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.body.read_at(offset, &mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
            offset += n as u64;
        }
    }
}

impl qs_queue::BodySource for Message {
    fn len(&self) -> u64 {
        Message::len(self)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let trace_len = self.trace.len() as u64;
        if offset >= trace_len {
            return self.body.read_at(offset - trace_len + self.skip, buf);
        }
        qs_queue::BodySource::read_at(self.trace.as_slice(), offset, buf)
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use qs_service::spool::SpoolDir;

    use super::*;

    /// Spools that move to a file past 16 octets, so that most cases here
    /// are also read back from a file.
    fn spool() -> Spool {
        static DIR: OnceLock<(tempfile::TempDir, Arc<SpoolDir>)> = OnceLock::new();
        let (_, dir) = DIR.get_or_init(|| {
            let tmp = tempfile::tempdir().unwrap();
            let dir = SpoolDir::open(tmp.path(), 16).unwrap();
            (tmp, dir)
        });
        dir.spool()
    }

    /// A body as bytes, or why it was refused.
    type Outcome = Result<Vec<u8>, Flaw>;

    fn outcome(body: Body) -> Outcome {
        match body {
            Body::Complete(spool) => Ok(spool.to_vec().unwrap()),
            Body::Refused(flaw) => Err(flaw),
        }
    }

    /// Feeds `input` in chunks of `n` bytes; returns the body and the bytes left.
    fn read(input: &[u8], n: usize, limit: usize) -> Option<(Outcome, Vec<u8>)> {
        let mut r = DataReader::new(limit, spool());
        let mut offset = 0;
        for chunk in input.chunks(n) {
            if let Some((body, used)) = r.feed(chunk) {
                let rest = input[offset + used..].to_vec();
                return Some((outcome(body), rest));
            }
            offset += chunk.len();
        }
        None
    }

    fn all_chunkings(input: &[u8], limit: usize) -> Option<(Outcome, Vec<u8>)> {
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
        assert_eq!(body, Ok(b"Subject: x\r\n\r\n.leading\r\n".to_vec()));
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn an_empty_body_ends() {
        let (body, rest) = all_chunkings(b".\r\nQUIT\r\n", 1 << 20).unwrap();
        assert_eq!(body, Ok(Vec::new()));
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
            assert_eq!(body, Err(Flaw::BadLineEnding), "{attack:?}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn long_lines_and_large_bodies_are_refused_but_read_to_the_end() {
        let mut long = vec![b'a'; 999];
        long.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(
            all_chunkings(&long, 1 << 20).unwrap().0,
            Err(Flaw::LineTooLong)
        );
        let mut ok = vec![b'a'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        assert!(all_chunkings(&ok, 1 << 20).unwrap().0.is_ok());

        let mut big = Vec::new();
        for _ in 0..100 {
            big.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
        }
        big.extend_from_slice(b".\r\nNOOP\r\n");
        let (body, rest) = all_chunkings(&big, 1000).unwrap();
        assert_eq!(body, Err(Flaw::TooBig));
        assert_eq!(rest, b"NOOP\r\n");
    }

    #[test]
    fn chunks_follow_the_same_line_rules() {
        let mut c = ChunkReader::new(100, spool());
        c.add(b"Subject: x\r\n");
        c.add(b"\r\nbody\r\n");
        assert_eq!(
            outcome(c.finish()),
            Ok(b"Subject: x\r\n\r\nbody\r\n".to_vec())
        );
        let mut c = ChunkReader::new(100, spool());
        c.add(b"a\nb\r\n");
        assert_eq!(outcome(c.finish()), Err(Flaw::BadLineEnding));
        let mut c = ChunkReader::new(10, spool());
        c.add(b"0123456789\r\n");
        assert_eq!(outcome(c.finish()), Err(Flaw::TooBig));
        // A CRLF split across two chunks is fine.
        let mut c = ChunkReader::new(100, spool());
        c.add(b"a\r");
        c.add(b"\nb\r\n");
        assert_eq!(outcome(c.finish()), Ok(b"a\r\nb\r\n".to_vec()));
    }

    /// Found by the property tests: a body both too big and with a line too
    /// long was refused for the one the reader met first, so the reply
    /// depended on how the chunks were cut.
    #[test]
    fn a_body_with_several_flaws_gets_one_reply_however_it_is_cut() {
        let line = vec![b'a'; MAX_LINE + 10];
        let mut whole = ChunkReader::new(20, spool());
        whole.add(&line);
        let mut cut = ChunkReader::new(20, spool());
        cut.add(&line[..21]);
        cut.add(&line[21..]);
        assert_eq!(outcome(whole.finish()), Err(Flaw::TooBig));
        assert_eq!(outcome(cut.finish()), Err(Flaw::TooBig));
        let mut data = line.clone();
        data.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(all_chunkings(&data, 20).unwrap().0, Err(Flaw::TooBig));
    }

    #[test]
    fn a_spooled_body_reads_back_whole_and_its_header_block_alone() {
        let header = "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n".repeat(300);
        let mut input = format!("{header}\r\n").into_bytes();
        for i in 0..20_000 {
            input.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        let expected = input.clone();
        input.extend_from_slice(b".\r\n");
        let mut r = DataReader::new(1 << 20, spool());
        let mut body = None;
        for chunk in input.chunks(4096) {
            if let Some((b, _)) = r.feed(chunk) {
                body = Some(b);
            }
        }
        let Some(Body::Complete(spool)) = body else {
            panic!("not complete");
        };
        assert!(spool.in_file());
        assert!(spool.to_vec().unwrap() == expected);
        let block = header_block(&spool).unwrap();
        assert!(
            block == format!("{header}\r\n").as_bytes(),
            "{}",
            block.len()
        );

        let message = Message::new(&["Received: by us".into()], spool);
        let mut whole = b"Received: by us\r\n".to_vec();
        whole.extend_from_slice(&expected);
        assert_eq!(message.len(), whole.len() as u64);
        assert!(message.to_vec().unwrap() == whole);
        // The queue client reads it in pieces, across the trace field's end.
        let mut read = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = qs_queue::BodySource::read_at(&message, read.len() as u64, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&buf[..n]);
        }
        assert!(read == whole);
    }

    #[test]
    fn a_header_without_an_end_is_read_up_to_the_limit() {
        let mut s = spool();
        let line = "X-Long: 0123456789012345678901234567890123456789\r\n";
        while s.len() < 2 * MAX_HEADER_BLOCK as u64 {
            s.append(line.as_bytes()).unwrap();
        }
        assert_eq!(header_block(&s).unwrap().len(), MAX_HEADER_BLOCK);
    }

    #[test]
    fn a_body_the_spool_cannot_keep_is_read_to_its_end_and_refused_for_now() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SpoolDir::open(tmp.path().join("gone"), 16).unwrap();
        std::fs::remove_dir(dir.path()).unwrap();
        let input = b"Subject: more than sixteen octets\r\n\r\nbody\r\n.\r\nQUIT\r\n";
        let mut r = DataReader::new(1 << 20, dir.spool());
        let (body, used) = r.feed(input).unwrap();
        assert_eq!(outcome(body), Err(Flaw::Unstored));
        assert_eq!(&input[used..], b"QUIT\r\n");
        // A smuggling attempt still decides the answer.
        let mut r = DataReader::new(1 << 20, dir.spool());
        let (body, _) = r
            .feed(b"Subject: more than sixteen octets\r\n\r\na\nb\r\n.\r\n")
            .unwrap();
        assert_eq!(outcome(body), Err(Flaw::BadLineEnding));
        let mut c = ChunkReader::new(1 << 20, dir.spool());
        c.add(b"Subject: more than sixteen octets\r\n");
        assert_eq!(outcome(c.finish()), Err(Flaw::Unstored));
    }
}
