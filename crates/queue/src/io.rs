//! Moving frames over a stream: the only I/O around the sans-IO codec.

use std::io;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proto::{Frame, FrameDecoder, Limits, ProtoError, encode_head};

/// Read size; frames larger than this arrive in several reads.
const READ_CHUNK: usize = 64 * 1024;
/// Bodies up to this size are sent in the same write as the header.
const COALESCE_BODY: usize = 64 * 1024;

/// A byte stream the queue protocol runs over.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameIoError {
    /// The stream failed or ended in the middle of a frame.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The peer broke the protocol.
    #[error(transparent)]
    Proto(#[from] ProtoError),
}

/// One side of a connection: the stream and what has been read from it.
pub(crate) struct Connection {
    stream: Box<dyn Stream>,
    decoder: FrameDecoder,
    limits: Limits,
    chunk: Vec<u8>,
}

impl Connection {
    pub(crate) fn new(stream: Box<dyn Stream>, limits: Limits) -> Connection {
        Connection {
            stream,
            decoder: FrameDecoder::new(limits),
            limits,
            chunk: vec![0; READ_CHUNK],
        }
    }

    /// The next frame, or `None` when the peer closed cleanly between frames.
    /// Cancel-safe: bytes read so far stay in the decoder.
    pub(crate) async fn read_frame(&mut self) -> Result<Option<Frame>, FrameIoError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            let n = self.stream.read(&mut self.chunk).await?;
            if n == 0 {
                if self.decoder.buffered() == 0 {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-frame",
                )
                .into());
            }
            self.decoder.feed(&self.chunk[..n]);
        }
    }

    /// Writes one frame and flushes it.
    pub(crate) async fn write_frame<T: Serialize>(
        &mut self,
        message: &T,
        body: &[u8],
    ) -> Result<(), FrameIoError> {
        let mut head = encode_head(message, body.len(), &self.limits)?;
        if body.len() <= COALESCE_BODY {
            head.extend_from_slice(body);
            self.stream.write_all(&head).await?;
        } else {
            self.stream.write_all(&head).await?;
            self.stream.write_all(body).await?;
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Writes the prefix and header of a frame whose body of `body_len` octets
    /// follows in [`Connection::write_body_piece`]s; the caller flushes after
    /// the last one. The frame is the same as [`Connection::write_frame`]'s.
    pub(crate) async fn write_head<T: Serialize>(
        &mut self,
        message: &T,
        body_len: usize,
    ) -> Result<(), FrameIoError> {
        let head = encode_head(message, body_len, &self.limits)?;
        self.stream.write_all(&head).await?;
        Ok(())
    }

    /// Writes a piece of the body announced by [`Connection::write_head`].
    pub(crate) async fn write_body_piece(&mut self, piece: &[u8]) -> io::Result<()> {
        self.stream.write_all(piece).await
    }

    /// Flushes what was written.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        self.stream.flush().await
    }

    /// Closes the write side (the server's, at the end of a connection).
    #[cfg(feature = "store")]
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
