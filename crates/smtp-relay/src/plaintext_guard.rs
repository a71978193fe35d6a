//! The plaintext part of a STARTTLS connection, watched (CVE-2011-0411).
//!
//! Before TLS begins, anyone on the path can write to the connection. A
//! server (or a man in the middle) that sends its `220` to STARTTLS together
//! with replies to commands the client has not sent yet (EHLO, MAIL, RCPT,
//! DATA, the end of data) would have those replies sit in the SMTP client's
//! read buffer and be taken, after the handshake, as the encrypted server's
//! answers: the message reported sent when nobody received it.
//!
//! [`GuardedStream`] sits between the TCP socket and the SMTP client until
//! the handshake starts. It counts the command lines written and the replies
//! read, and ends the connection with an error when
//! - a reply arrives before the command it would answer was written (more
//!   replies than the greeting plus the commands sent), or
//! - any byte follows the reply to STARTTLS before the TLS handshake.
//!
//! Either is a protocol violation: the connection is closed, and the delivery
//! is a temporary failure, so the message stays queued. Once TLS is under way
//! (or the connection goes on without STARTTLS) the stream only passes bytes.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A reply line longer than this is not parsed further (its code is in the
/// first four bytes, which is all the accounting needs).
const LINE_HEAD: usize = 4;

/// What the guard refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A complete reply arrived before the command it answers was sent.
    EarlyReply {
        /// Complete replies read, the greeting included.
        replies: usize,
        /// Command lines written.
        commands: usize,
    },
    /// Bytes followed the reply to STARTTLS before the handshake.
    AfterStartTls {
        /// How many bytes came after the reply in the same read.
        extra: usize,
    },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::EarlyReply { replies, commands } => write!(
                f,
                "reply {replies} arrived before TLS when only {commands} command(s) had been sent (injected replies)"
            ),
            Violation::AfterStartTls { extra } => write!(
                f,
                "{extra} byte(s) followed the reply to STARTTLS before the TLS handshake (injected data)"
            ),
        }
    }
}

/// The sans-IO accounting: fed the bytes written and read while the
/// connection is plaintext.
#[derive(Debug, Default)]
pub struct ReplyAccounting {
    /// Complete command lines written.
    commands: usize,
    /// The start of the command line being written, upper-cased.
    out_line: Vec<u8>,
    /// The last complete command line was STARTTLS.
    starttls_sent: bool,
    /// Complete replies read (a reply ends with its line `NNN ` or `NNN`).
    replies: usize,
    /// The first bytes of the reply line being read.
    in_head: Vec<u8>,
    /// STARTTLS was answered: from here on the bytes are TLS.
    handed_over: bool,
}

impl ReplyAccounting {
    /// Bytes the client wrote.
    pub fn wrote(&mut self, bytes: &[u8]) {
        if self.handed_over {
            return;
        }
        for &b in bytes {
            if b == b'\n' {
                self.commands += 1;
                self.starttls_sent = self.out_line.trim_ascii_end() == b"STARTTLS";
                self.out_line.clear();
            } else if self.out_line.len() < 10 {
                self.out_line.push(b.to_ascii_uppercase());
            }
        }
    }

    /// Bytes the server sent, as one read returned them.
    pub fn read(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        if self.handed_over {
            return Ok(());
        }
        for (i, &b) in bytes.iter().enumerate() {
            if b != b'\n' {
                if self.in_head.len() < LINE_HEAD {
                    self.in_head.push(b);
                }
                continue;
            }
            // A line `NNN-text` continues the reply; anything else ends it.
            let continues = self.in_head.get(3) == Some(&b'-');
            self.in_head.clear();
            if continues {
                continue;
            }
            self.replies += 1;
            if self.replies > self.commands + 1 {
                return Err(Violation::EarlyReply {
                    replies: self.replies,
                    commands: self.commands,
                });
            }
            if self.starttls_sent && self.replies == self.commands + 1 {
                let extra = bytes.len() - i - 1;
                if extra > 0 {
                    return Err(Violation::AfterStartTls { extra });
                }
                self.handed_over = true;
                return Ok(());
            }
        }
        Ok(())
    }
}

/// What the connection's owner learns from the guard.
#[derive(Debug, Default)]
pub struct GuardReport {
    violation: Mutex<Option<Violation>>,
    /// Set when no STARTTLS will follow: the guard then only passes bytes.
    off: std::sync::atomic::AtomicBool,
}

impl GuardReport {
    /// The violation that ended the connection, if any.
    pub fn violation(&self) -> Option<Violation> {
        self.violation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The connection goes on without STARTTLS: stop watching.
    pub fn switch_off(&self) {
        self.off.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_off(&self) -> bool {
        self.off.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn record(&self, violation: Violation) {
        *self
            .violation
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(violation);
    }
}

/// A stream that refuses what [`ReplyAccounting`] refuses.
#[derive(Debug)]
pub struct GuardedStream<S> {
    inner: S,
    accounting: ReplyAccounting,
    report: Arc<GuardReport>,
}

impl<S> GuardedStream<S> {
    /// Watches `inner`; the report says what was refused.
    pub fn new(inner: S) -> (GuardedStream<S>, Arc<GuardReport>) {
        let report = Arc::new(GuardReport::default());
        let stream = GuardedStream {
            inner,
            accounting: ReplyAccounting::default(),
            report: report.clone(),
        };
        (stream, report)
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn watching(&self) -> bool {
        !self.accounting.handed_over && !self.report.is_off()
    }

    fn refused(&self) -> Option<io::Error> {
        self.report
            .violation()
            .map(|v| io::Error::new(io::ErrorKind::InvalidData, v.to_string()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.refused() {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll
            && this.watching()
            && let Err(violation) = this.accounting.read(&buf.filled()[before..])
        {
            // Nothing of this read reaches the client.
            buf.set_filled(before);
            tracing::debug!(%violation, "plaintext guard");
            let e = io::Error::new(io::ErrorKind::InvalidData, violation.to_string());
            this.report.record(violation);
            return Poll::Ready(Err(e));
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.refused() {
            return Poll::Ready(Err(e));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll
            && this.watching()
        {
            this.accounting.wrote(&buf[..n]);
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a dialogue: `C:` lines are written, `S:` chunks read as one read
    /// each (with `\n` standing for CRLF).
    fn run(dialogue: &[&str]) -> Result<ReplyAccounting, Violation> {
        let mut acc = ReplyAccounting::default();
        for step in dialogue {
            let text = step[2..].replace('\n', "\r\n");
            match &step[..2] {
                "C:" => acc.wrote(text.as_bytes()),
                "S:" => acc.read(text.as_bytes())?,
                other => panic!("bad step {other}"),
            }
        }
        Ok(acc)
    }

    #[test]
    fn an_honest_starttls_dialogue_hands_over_to_tls() {
        let acc = run(&[
            "S:220-sink.test ESMTP\n220 ready\n",
            "C:EHLO me\n",
            "S:250-sink.test\n250-PIPELINING\n",
            "S:250 STARTTLS\n",
            "C:STARTTLS\n",
            "S:220 2.0.0 go ahead\n",
        ])
        .unwrap();
        assert!(acc.handed_over);
    }

    #[test]
    fn replies_split_anywhere_are_counted_once() {
        let mut acc = ReplyAccounting::default();
        let greeting = b"220 sink.test ESMTP\r\n";
        for b in greeting {
            acc.read(std::slice::from_ref(b)).unwrap();
        }
        acc.wrote(b"EH");
        acc.wrote(b"LO me\r\n");
        for chunk in b"250-a\r\n250 STARTTLS\r\n".chunks(3) {
            acc.read(chunk).unwrap();
        }
        acc.wrote(b"starttls\r\n");
        acc.read(b"22").unwrap();
        acc.read(b"0 go\r").unwrap();
        assert!(!acc.handed_over);
        acc.read(b"\n").unwrap();
        assert!(acc.handed_over);
        // TLS records pass unexamined.
        acc.read(b"\x16\x03\x03 anything\r\n250 x\r\n").unwrap();
    }

    #[test]
    fn replies_injected_after_the_starttls_reply_are_refused() {
        let err = run(&[
            "S:220 sink.test\n",
            "C:EHLO me\n",
            "S:250 STARTTLS\n",
            "C:STARTTLS\n",
            "S:220 go ahead\n250 fake EHLO\n250 ok\n250 ok\n354 go\n250 queued\n",
        ])
        .unwrap_err();
        assert_eq!(err, Violation::AfterStartTls { extra: 51 });
    }

    #[test]
    fn even_a_partial_line_after_the_starttls_reply_is_refused() {
        let err = run(&[
            "S:220 sink.test\n",
            "C:EHLO me\n",
            "S:250 STARTTLS\n",
            "C:STARTTLS\n",
            "S:220 go ahead\n2",
        ])
        .unwrap_err();
        assert_eq!(err, Violation::AfterStartTls { extra: 1 });
    }

    #[test]
    fn replies_sent_ahead_of_their_commands_are_refused() {
        // The EHLO reply carries the STARTTLS reply and more: they would sit
        // in the client's buffer across the handshake.
        let err = run(&[
            "S:220 sink.test\n",
            "C:EHLO me\n",
            "S:250 STARTTLS\n220 go ahead\n250 fake\n",
        ])
        .unwrap_err();
        assert_eq!(
            err,
            Violation::EarlyReply {
                replies: 3,
                commands: 1
            }
        );
        // A greeting with the EHLO reply glued to it, likewise.
        let err = run(&["S:220 sink.test\n250 STARTTLS\n"]).unwrap_err();
        assert_eq!(
            err,
            Violation::EarlyReply {
                replies: 2,
                commands: 0
            }
        );
    }

    #[tokio::test]
    async fn the_stream_refuses_and_keeps_refusing() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(1024);
        let (mut guarded, report) = GuardedStream::new(client);
        server.write_all(b"220 hi\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = guarded.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"220 hi\r\n");
        guarded.write_all(b"STARTTLS\r\n").await.unwrap();
        server
            .write_all(b"220 go\r\n250 injected\r\n")
            .await
            .unwrap();
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            report.violation(),
            Some(Violation::AfterStartTls { extra: 14 })
        );
        // Nothing more goes either way.
        assert!(guarded.read(&mut buf).await.is_err());
        assert!(guarded.write_all(b"QUIT\r\n").await.is_err());
    }

    #[tokio::test]
    async fn switched_off_it_only_passes_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(1024);
        let (mut guarded, report) = GuardedStream::new(client);
        report.switch_off();
        // A pipelining server's replies in one packet are fine in plaintext.
        server
            .write_all(b"220 hi\r\n250 a\r\n250 b\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = guarded.read(&mut buf).await.unwrap();
        assert_eq!(n, 22);
        assert_eq!(report.violation(), None);
    }
}
