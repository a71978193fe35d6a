//! The queue protocol: frames, requests and responses. No I/O here.
//!
//! # Frames
//!
//! ```text
//! +----------------+----------------+-------------------+----------------+
//! | header length  | body length    | header            | body           |
//! | u32 big-endian | u32 big-endian | JSON, UTF-8       | raw bytes      |
//! +----------------+----------------+-------------------+----------------+
//! ```
//!
//! The header is a [`Request`] (tagged by `"op"`) or a [`Response`] (tagged
//! by `"type"`); the body carries message bytes or state values, and is empty
//! otherwise. Both lengths are checked against [`Limits`] as soon as the
//! 8-byte prefix is in, before anything is allocated for them; the buffer then
//! grows only as bytes actually arrive.
//!
//! A connection is a sequence of request/response pairs. Over TCP the first
//! request must be [`Request::Hello`] with the shared secret.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::envelope::{
    Envelope, Job, JobClass, LeaseToken, Origin, QueueId, RecipientResult, Stats, Summary,
};

/// Length of the frame prefix: two u32 lengths.
pub const PREFIX_LEN: usize = 8;
/// Default largest header: 1 MiB.
pub const DEFAULT_MAX_HEADER: u32 = 1024 * 1024;
/// Default largest body: 256 MiB.
pub const DEFAULT_MAX_BODY: u32 = 256 * 1024 * 1024;

/// The largest header and body a peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest header in bytes.
    pub max_header: u32,
    /// Largest body in bytes.
    pub max_body: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header: DEFAULT_MAX_HEADER,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// A frame or header that cannot be accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The peer announced (or we tried to send) a part over the limit.
    #[error("{part} of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// `header` or `body`.
        part: &'static str,
        /// The announced length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The header is not valid JSON for the expected message.
    #[error("bad frame header: {0}")]
    BadHeader(#[from] serde_json::Error),
}

/// A shared secret; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in time that depends only on the lengths.
    pub fn matches(&self, other: &Secret) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let mut diff = u8::from(a.len() != b.len());
        for (i, x) in a.iter().enumerate() {
            diff |= x ^ b.get(i).copied().unwrap_or(!x);
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A request from a module to core-queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Authenticates a TCP connection; the first frame there.
    Hello {
        /// The shared secret.
        secret: Secret,
    },
    /// Queues the message in the body.
    Enqueue {
        /// The envelope sender; empty for `<>`.
        sender: String,
        /// The recipients, as given (core-queue routes them).
        recipients: Vec<String>,
        /// Where the message came from.
        origin: Origin,
        /// Chosen by the client once per message and sent again on every
        /// retry, so a request whose answer was lost is not queued twice.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_key: Option<String>,
    },
    /// Asks for due work of a class.
    Lease {
        /// The class of work.
        class: JobClass,
        /// The worker's name, for logs.
        worker: String,
        /// How long the worker may hold the job.
        lease_secs: u64,
    },
    /// Reports results for a leased job and ends the lease.
    Complete {
        /// The message.
        id: QueueId,
        /// The class leased.
        class: JobClass,
        /// The lease token.
        token: LeaseToken,
        /// One result per recipient tried.
        results: Vec<RecipientResult>,
    },
    /// Gives a leased job back untouched.
    Release {
        /// The message.
        id: QueueId,
        /// The class leased.
        class: JobClass,
        /// The lease token.
        token: LeaseToken,
    },
    /// Lists queued messages, oldest first.
    List {
        /// At most this many.
        limit: u32,
    },
    /// The envelope of a message.
    Show {
        /// The message.
        id: QueueId,
    },
    /// The bytes of a message (in the response body).
    Body {
        /// The message.
        id: QueueId,
    },
    /// Makes every pending recipient of a message due now.
    Retry {
        /// The message.
        id: QueueId,
    },
    /// Removes a message without a bounce.
    Delete {
        /// The message.
        id: QueueId,
    },
    /// Counts over the queue.
    Stats,
    /// Reads a state value (answered in the response body).
    StateGet {
        /// The owner's namespace, e.g. `pop-client`.
        namespace: String,
        /// The key.
        key: String,
    },
    /// Sets a state value to the request body.
    StatePut {
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
    },
    /// Deletes a state value.
    StateDelete {
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
    },
    /// Lists state keys with a prefix, with their values.
    StateScan {
        /// The namespace.
        namespace: String,
        /// Only keys starting with this.
        prefix: String,
        /// Only keys after this one (for paging).
        #[serde(default)]
        after: Option<String>,
        /// At most this many.
        limit: u32,
    },
    /// Checks that core-queue answers.
    Ping,
}

impl Request {
    /// The operation's name, for logs.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Enqueue { .. } => "enqueue",
            Request::Lease { .. } => "lease",
            Request::Complete { .. } => "complete",
            Request::Release { .. } => "release",
            Request::List { .. } => "list",
            Request::Show { .. } => "show",
            Request::Body { .. } => "body",
            Request::Retry { .. } => "retry",
            Request::Delete { .. } => "delete",
            Request::Stats => "stats",
            Request::StateGet { .. } => "state_get",
            Request::StatePut { .. } => "state_put",
            Request::StateDelete { .. } => "state_delete",
            Request::StateScan { .. } => "state_scan",
            Request::Ping => "ping",
        }
    }
}

/// The class of a refused request, which tells the client what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Try again later (an SMTP server answers 4xx).
    Temporary,
    /// Will never succeed (an SMTP server answers 5xx).
    Permanent,
    /// No such message or value.
    NotFound,
    /// Missing or wrong shared secret.
    Unauthorized,
    /// The request is malformed or breaks a limit.
    BadRequest,
    /// The lease is no longer held by this worker.
    LeaseLost,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Temporary => "temporary",
            ErrorKind::Permanent => "permanent",
            ErrorKind::NotFound => "not found",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::BadRequest => "bad request",
            ErrorKind::LeaseLost => "lease lost",
        })
    }
}

/// One key of a [`Response::StateEntries`]; its value is the next `len`
/// bytes of the response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    /// The key.
    pub key: String,
    /// The length of its value in the body.
    pub len: u64,
}

/// core-queue's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Done (hello, release, retry, delete, state put and delete).
    Ok,
    /// The answer to ping.
    Pong,
    /// The message is queued and on disk.
    Enqueued {
        /// Its queue id.
        id: QueueId,
    },
    /// A leased job; the message bytes are the body.
    Job {
        /// The job ([`Job::body`] travels in the frame body).
        job: Job,
    },
    /// Nothing is due.
    NoJob,
    /// The results are recorded.
    Completed {
        /// Every recipient of the message is now done.
        finished: bool,
    },
    /// The queue listing.
    List {
        /// One summary per message.
        messages: Vec<Summary>,
    },
    /// An envelope.
    Envelope {
        /// The envelope.
        envelope: Envelope,
    },
    /// The message bytes are the body.
    Body,
    /// Queue counts.
    Stats {
        /// The counts.
        stats: Stats,
    },
    /// A state value; when found, it is the body.
    StateValue {
        /// Whether the key is set.
        found: bool,
    },
    /// State keys; their values are the body, one after the other.
    StateEntries {
        /// The keys and the lengths of their values.
        entries: Vec<StateEntry>,
    },
    /// The request was refused.
    Error {
        /// What kind of refusal.
        kind: ErrorKind,
        /// A generic description (details go to core-queue's log).
        message: String,
    },
}

impl Response {
    /// The response's name on the wire, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Ok => "ok",
            Response::Pong => "pong",
            Response::Enqueued { .. } => "enqueued",
            Response::Job { .. } => "job",
            Response::NoJob => "no_job",
            Response::Completed { .. } => "completed",
            Response::List { .. } => "list",
            Response::Envelope { .. } => "envelope",
            Response::Body => "body",
            Response::Stats { .. } => "stats",
            Response::StateValue { .. } => "state_value",
            Response::StateEntries { .. } => "state_entries",
            Response::Error { .. } => "error",
        }
    }

    /// An error response.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error {
            kind,
            message: message.into(),
        }
    }
}

/// One complete frame, header and body still undecoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The JSON header.
    pub header: Vec<u8>,
    /// The body.
    pub body: Vec<u8>,
}

/// Cuts frames out of a byte stream fed in pieces of any size.
#[derive(Debug)]
pub struct FrameDecoder {
    limits: Limits,
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> FrameDecoder {
        FrameDecoder {
            limits,
            buf: Vec::new(),
        }
    }

    /// Adds bytes read from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet returned in a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame; `Ok(None)` means more bytes are needed. An
    /// over-limit length is an error as soon as the prefix is in; the
    /// connection cannot continue after it.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        let Some((prefix, _)) = self.buf.split_first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let header_len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let body_len = u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        check_lengths(&self.limits, u64::from(header_len), u64::from(body_len))?;
        // Both fit in u32 and are checked: the sum fits in usize on any
        // platform that can hold the buffer.
        let header_len = header_len as usize;
        let body_len = body_len as usize;
        let total = PREFIX_LEN + header_len + body_len;
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        let mut frame = std::mem::replace(&mut self.buf, rest);
        let body = frame.split_off(PREFIX_LEN + header_len);
        frame.drain(..PREFIX_LEN);
        Ok(Some(Frame {
            header: frame,
            body,
        }))
    }
}

fn check_lengths(limits: &Limits, header: u64, body: u64) -> Result<(), ProtoError> {
    if header > u64::from(limits.max_header) {
        return Err(ProtoError::TooLarge {
            part: "header",
            len: header,
            max: limits.max_header,
        });
    }
    if body > u64::from(limits.max_body) {
        return Err(ProtoError::TooLarge {
            part: "body",
            len: body,
            max: limits.max_body,
        });
    }
    Ok(())
}

/// The prefix and header of a frame whose body of `body_len` bytes follows;
/// lets a large body be written without copying it.
pub fn encode_head<T: Serialize>(
    message: &T,
    body_len: usize,
    limits: &Limits,
) -> Result<Vec<u8>, ProtoError> {
    let header = serde_json::to_vec(message)?;
    let body_len64 = u64::try_from(body_len).unwrap_or(u64::MAX);
    check_lengths(limits, header.len() as u64, body_len64)?;
    // Checked against u32 limits just above.
    let (h, b) = (header.len() as u32, body_len as u32);
    let mut out = Vec::with_capacity(PREFIX_LEN + header.len());
    out.extend_from_slice(&h.to_be_bytes());
    out.extend_from_slice(&b.to_be_bytes());
    out.extend_from_slice(&header);
    Ok(out)
}

/// A whole frame: prefix, header and body.
pub fn encode<T: Serialize>(
    message: &T,
    body: &[u8],
    limits: &Limits,
) -> Result<Vec<u8>, ProtoError> {
    let mut out = encode_head(message, body.len(), limits)?;
    out.extend_from_slice(body);
    Ok(out)
}

/// Decodes a frame's header as `T`, returning it with the body.
pub fn decode<T: DeserializeOwned>(frame: Frame) -> Result<(T, Vec<u8>), ProtoError> {
    let message = serde_json::from_slice(&frame.header)?;
    Ok((message, frame.body))
}

/// Encodes a request frame.
pub fn encode_request(
    request: &Request,
    body: &[u8],
    limits: &Limits,
) -> Result<Vec<u8>, ProtoError> {
    encode(request, body, limits)
}

/// Decodes a request frame.
pub fn decode_request(frame: Frame) -> Result<(Request, Vec<u8>), ProtoError> {
    decode(frame)
}

/// Encodes a response frame.
pub fn encode_response(
    response: &Response,
    body: &[u8],
    limits: &Limits,
) -> Result<Vec<u8>, ProtoError> {
    encode(response, body, limits)
}

/// Decodes a response frame; a [`Response::Job`] gets its body back.
pub fn decode_response(frame: Frame) -> Result<(Response, Vec<u8>), ProtoError> {
    let (mut response, body) = decode::<Response>(frame)?;
    if let Response::Job { job } = &mut response {
        job.body = body;
        return Ok((response, Vec::new()));
    }
    Ok((response, body))
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{JobRecipient, Outcome, Recipient};

    fn id() -> QueueId {
        "000642F3A1B2C39A0B".parse().expect("id")
    }

    fn requests() -> Vec<(Request, Vec<u8>)> {
        let origin = Origin {
            module: "smtp-server".into(),
            peer: Some("192.0.2.1".into()),
            auth_user: None,
        };
        vec![
            (
                Request::Hello {
                    secret: Secret::new("s3cret"),
                },
                vec![],
            ),
            (
                Request::Enqueue {
                    sender: "".into(),
                    recipients: vec!["a@example.org".into(), "b@example.org".into()],
                    origin,
                    request_key: Some("k1".into()),
                },
                b"Subject: hi\r\n\r\nbody\r\n".to_vec(),
            ),
            (
                Request::Lease {
                    class: JobClass::outbound(),
                    worker: "relay-1".into(),
                    lease_secs: 300,
                },
                vec![],
            ),
            (
                Request::Complete {
                    id: id(),
                    class: JobClass::outbound(),
                    token: LeaseToken(u64::MAX),
                    results: vec![
                        RecipientResult {
                            index: 0,
                            outcome: Outcome::Delivered {
                                reply: "250 ok".into(),
                            },
                        },
                        RecipientResult {
                            index: 1,
                            outcome: Outcome::TemporaryFailure {
                                reply: "451 later".into(),
                            },
                        },
                        RecipientResult {
                            index: 2,
                            outcome: Outcome::PermanentFailure {
                                reply: "550 no".into(),
                            },
                        },
                    ],
                },
                vec![],
            ),
            (
                Request::Release {
                    id: id(),
                    class: JobClass::list(),
                    token: LeaseToken(7),
                },
                vec![],
            ),
            (Request::List { limit: 10 }, vec![]),
            (Request::Show { id: id() }, vec![]),
            (Request::Body { id: id() }, vec![]),
            (Request::Retry { id: id() }, vec![]),
            (Request::Delete { id: id() }, vec![]),
            (Request::Stats, vec![]),
            (
                Request::StateGet {
                    namespace: "pop-client".into(),
                    key: "acct/uidl/1".into(),
                },
                vec![],
            ),
            (
                Request::StatePut {
                    namespace: "pop-client".into(),
                    key: "k".into(),
                },
                vec![0, 1, 2, 255],
            ),
            (
                Request::StateDelete {
                    namespace: "pop-client".into(),
                    key: "k".into(),
                },
                vec![],
            ),
            (
                Request::StateScan {
                    namespace: "pop-client".into(),
                    prefix: "acct/".into(),
                    after: Some("acct/3".into()),
                    limit: 100,
                },
                vec![],
            ),
            (Request::Ping, vec![]),
        ]
    }

    fn responses() -> Vec<(Response, Vec<u8>)> {
        let env = Envelope::new(
            "s@example.org",
            vec![Recipient::new("r@example.org", JobClass::local())],
            Origin::default(),
            1_700_000_000,
            5,
        );
        let job = Job {
            id: id(),
            class: JobClass::local(),
            token: LeaseToken(42),
            lease_until: 1_700_000_300,
            sender: "".into(),
            origin: Origin::default(),
            received_at: 1_700_000_000,
            size: 5,
            recipients: vec![JobRecipient {
                index: 0,
                address: "r@example.org".into(),
                original: Some("alias@example.org".into()),
                attempts: 2,
            }],
            body: vec![],
        };
        let summary = Summary {
            id: id(),
            sender: "s@x".into(),
            recipients: 3,
            pending: 1,
            size: 4096,
            received_at: 1,
            next_attempt: Some(2),
        };
        let mut stats = Stats::default();
        stats.pending.insert("local".into(), 3);
        vec![
            (Response::Ok, vec![]),
            (Response::Pong, vec![]),
            (Response::Enqueued { id: id() }, vec![]),
            (Response::Job { job }, b"hello".to_vec()),
            (Response::NoJob, vec![]),
            (Response::Completed { finished: true }, vec![]),
            (
                Response::List {
                    messages: vec![summary],
                },
                vec![],
            ),
            (Response::Envelope { envelope: env }, vec![]),
            (Response::Body, b"bytes".to_vec()),
            (Response::Stats { stats }, vec![]),
            (Response::StateValue { found: true }, b"v".to_vec()),
            (
                Response::StateEntries {
                    entries: vec![
                        StateEntry {
                            key: "a".into(),
                            len: 1,
                        },
                        StateEntry {
                            key: "b".into(),
                            len: 2,
                        },
                    ],
                },
                b"xyz".to_vec(),
            ),
            (Response::error(ErrorKind::LeaseLost, "lease lost"), vec![]),
        ]
    }

    /// Feeds `bytes` to a decoder `chunk` bytes at a time, collecting frames.
    fn feed_chunked(bytes: &[u8], chunk: usize) -> Vec<Frame> {
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut frames = Vec::new();
        for piece in bytes.chunks(chunk) {
            decoder.feed(piece);
            while let Some(frame) = decoder.next_frame().expect("frame") {
                frames.push(frame);
            }
        }
        assert_eq!(decoder.buffered(), 0);
        frames
    }

    #[test]
    fn every_request_round_trips_in_any_chunking() {
        let limits = Limits::default();
        let all = requests();
        let mut stream = Vec::new();
        for (req, body) in &all {
            stream.extend(encode_request(req, body, &limits).expect("encode"));
        }
        for chunk in [1, 2, 3, 4, 8, 16, 64, 4096, stream.len()] {
            let frames = feed_chunked(&stream, chunk);
            assert_eq!(frames.len(), all.len(), "chunk {chunk}");
            for (frame, expected) in frames.into_iter().zip(&all) {
                assert_eq!(&decode_request(frame).expect("decode"), expected);
            }
        }
    }

    #[test]
    fn every_response_round_trips_in_any_chunking() {
        let limits = Limits::default();
        let all = responses();
        let mut stream = Vec::new();
        for (resp, body) in &all {
            stream.extend(encode_response(resp, body, &limits).expect("encode"));
        }
        for chunk in [1, 2, 4, 7, 32, stream.len()] {
            let frames = feed_chunked(&stream, chunk);
            assert_eq!(frames.len(), all.len());
            for (frame, (resp, body)) in frames.into_iter().zip(&all) {
                let (got, got_body) = decode_response(frame).expect("decode");
                match (&got, resp) {
                    (Response::Job { job: got_job }, Response::Job { job }) => {
                        assert_eq!(got_job.body, *body);
                        assert_eq!(got_job.token, job.token);
                        assert_eq!(got_job.recipients, job.recipients);
                        assert!(got_body.is_empty());
                    }
                    _ => {
                        assert_eq!(&got, resp);
                        assert_eq!(&got_body, body);
                    }
                }
            }
        }
    }

    #[test]
    fn wire_names_are_stable() {
        let bytes = encode_request(
            &Request::Lease {
                class: JobClass::local(),
                worker: "w".into(),
                lease_secs: 60,
            },
            &[],
            &Limits::default(),
        )
        .expect("encode");
        let header = std::str::from_utf8(&bytes[PREFIX_LEN..]).expect("utf8");
        assert_eq!(
            header,
            r#"{"op":"lease","class":"local","worker":"w","lease_secs":60}"#
        );
        assert_eq!(&bytes[..4], &(header.len() as u32).to_be_bytes());
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0]);
        let err = serde_json::to_string(&Response::error(ErrorKind::NotFound, "x")).expect("json");
        assert_eq!(err, r#"{"type":"error","kind":"not_found","message":"x"}"#);
    }

    #[test]
    fn oversized_announcements_are_refused_before_allocating() {
        let mut decoder = FrameDecoder::new(Limits::default());
        // 4 GiB - 1 of body announced, nothing else sent.
        decoder.feed(&[0, 0, 0, 2, 0xFF, 0xFF, 0xFF, 0xFF]);
        match decoder.next_frame() {
            Err(ProtoError::TooLarge {
                part: "body", len, ..
            }) => assert_eq!(len, u32::MAX as u64),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(
            decoder.buf.capacity() < 1024,
            "no allocation for the announced body"
        );

        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.feed(&(DEFAULT_MAX_HEADER + 1).to_be_bytes());
        decoder.feed(&[0, 0, 0, 0]);
        assert!(matches!(
            decoder.next_frame(),
            Err(ProtoError::TooLarge { part: "header", .. })
        ));

        // Exactly at the limit is fine (small limits keep the test cheap).
        let small = Limits {
            max_header: 64,
            max_body: 16,
        };
        let ok = encode(&Request::Ping, &[7; 16], &small).expect("at limit");
        let mut decoder = FrameDecoder::new(small);
        decoder.feed(&ok);
        assert!(decoder.next_frame().expect("ok").is_some());
        assert!(matches!(
            encode(&Request::Ping, &[7; 17], &small),
            Err(ProtoError::TooLarge { part: "body", .. })
        ));
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        for header in [
            &b"{"[..],
            b"{\"op\":\"launch\"}",
            b"\xff\xfe",
            b"{\"op\":\"show\",\"id\":\"nope\"}",
        ] {
            let frame = Frame {
                header: header.to_vec(),
                body: vec![],
            };
            assert!(decode_request(frame).is_err(), "{header:?}");
        }
    }

    #[test]
    fn secrets_compare_and_stay_hidden() {
        let s = Secret::new("correct horse");
        assert!(s.matches(&Secret::new("correct horse")));
        assert!(!s.matches(&Secret::new("correct hors")));
        assert!(!s.matches(&Secret::new("correct horsf")));
        assert!(!s.matches(&Secret::new("")));
        assert!(Secret::new("").matches(&Secret::new("")));
        let shown = format!("{:?}", Request::Hello { secret: s });
        assert!(!shown.contains("horse"), "{shown}");
    }
}
