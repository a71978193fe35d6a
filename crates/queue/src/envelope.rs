//! Messages as the queue sees them: queue ids, job classes, envelopes,
//! recipients, and the records handed to workers and administrators.
//!
//! Everything here is plain data with serde: it is stored in sled as JSON and
//! travels in the header of a protocol frame. The message bytes never live in
//! these types (except [`Job::body`], which is skipped by serde and carried in
//! the frame body).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::reply::{Class, Reply};

/// Number of hex digits of the microsecond timestamp in a [`QueueId`].
const ID_TIME_DIGITS: usize = 14;
/// Number of hex digits of the random suffix in a [`QueueId`].
const ID_RANDOM_DIGITS: usize = 4;
/// Longest accepted [`JobClass`] name, in bytes.
const MAX_CLASS_LEN: usize = 32;

/// The last timestamp handed out by [`QueueId::generate`] in this process.
static LAST_ID_MICROS: AtomicU64 = AtomicU64::new(0);

/// A value that failed validation when parsed from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A queue id that is not 18 upper-case hex digits.
    #[error("invalid queue id {0:?}: expected 18 upper-case hex digits")]
    QueueId(String),
    /// A job class name that is empty, too long or has characters other
    /// than `a-z`, `0-9`, `-` and `_`.
    #[error("invalid job class {0:?}: expected 1 to 32 of a-z, 0-9, '-', '_'")]
    JobClass(String),
    /// Not an RFC 3463 enhanced status code (`class.subject.detail`: 2, 4
    /// or 5, then two numbers of 1 to 3 digits).
    #[error("invalid enhanced status code {0:?}: expected e.g. 5.1.1")]
    EnhancedCode(String),
}

/// The seconds since the Unix epoch, by the system clock (0 if the clock is
/// before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The name of one queued message, as Postfix's queue ids are: it appears on
/// every log line about the message in every module.
///
/// 14 upper-case hex digits of the microseconds since the Unix epoch at
/// creation, then 4 random hex digits (18 characters, e.g.
/// `000642F3A1B2C39A0B`). Ids sort by creation time; within one process
/// they are strictly increasing even if the clock stalls, and the random part
/// keeps them apart across restarts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueId(String);

impl QueueId {
    /// A fresh id, later than every id generated before it in this process.
    pub fn generate() -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut last = LAST_ID_MICROS.load(Ordering::Relaxed);
        let micros = loop {
            let next = now.max(last.saturating_add(1));
            match LAST_ID_MICROS.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break next,
                Err(seen) => last = seen,
            }
        };
        let micros = micros & ((1u64 << (4 * ID_TIME_DIGITS)) - 1);
        let suffix: u16 = rand::random();
        QueueId(format!("{micros:014X}{suffix:04X}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The creation time encoded in the id, in microseconds since the epoch.
    pub fn created_micros(&self) -> u64 {
        u64::from_str_radix(&self.0[..ID_TIME_DIGITS], 16).unwrap_or(0)
    }
}

impl FromStr for QueueId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == ID_TIME_DIGITS + ID_RANDOM_DIGITS
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        if ok {
            Ok(QueueId(s.to_owned()))
        } else {
            Err(ParseError::QueueId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for QueueId {
    type Error = ParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<QueueId> for String {
    fn from(id: QueueId) -> String {
        id.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The kind of worker that handles a recipient: an open set of short names.
///
/// Three are known to every module: [`JobClass::local`] (core-queue's own
/// Maildir delivery), [`JobClass::outbound`] (smtp-relay) and
/// [`JobClass::list`] (list-server). A name is 1 to 32 bytes of `a-z`, `0-9`,
/// `-` and `_`, so it can prefix a sled key with a NUL separator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobClass(String);

impl JobClass {
    /// Checks and wraps a class name.
    pub fn new(name: impl Into<String>) -> Result<JobClass, ParseError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= MAX_CLASS_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(JobClass(name))
        } else {
            Err(ParseError::JobClass(name))
        }
    }

    /// `local`: delivery into a local Maildir by core-queue.
    pub fn local() -> JobClass {
        JobClass("local".to_owned())
    }

    /// `outbound`: delivery to another domain by smtp-relay.
    pub fn outbound() -> JobClass {
        JobClass("outbound".to_owned())
    }

    /// `list`: a posting to a mailing list, for list-server.
    pub fn list() -> JobClass {
        JobClass("list".to_owned())
    }

    /// The class name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for JobClass {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobClass::new(s)
    }
}

impl TryFrom<String> for JobClass {
    type Error = ParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        JobClass::new(s)
    }
}

impl From<JobClass> for String {
    fn from(c: JobClass) -> String {
        c.0
    }
}

impl fmt::Display for JobClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The module that enqueued it (`smtp-server`, `pop-client`, ...).
    pub module: String,
    /// The peer it came from (an IP address, a POP3 account), if any.
    #[serde(default)]
    pub peer: Option<String>,
    /// The authenticated user who submitted it, if any.
    #[serde(default)]
    pub auth_user: Option<String>,
}

impl Origin {
    /// The [`Origin::module`] of messages received by smtp-server.
    pub const SMTP_SERVER: &'static str = "smtp-server";

    /// Whether the message came from an SMTP client that did not
    /// authenticate: smtp-server's port-25 role (submission requires AUTH
    /// before MAIL, so this is the only way in without it). Nobody vouches
    /// for such a sender address, so a report about the message must not
    /// carry more than the sender needs (no backscatter).
    pub fn is_unauthenticated_smtp(&self) -> bool {
        self.module == Origin::SMTP_SERVER && self.auth_user.is_none()
    }
}

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientStatus {
    /// Not yet delivered; a worker of its class will be offered it.
    Pending,
    /// Delivered; nothing more to do.
    Delivered,
    /// Failed for good (a permanent error, or retried for too long).
    Failed,
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The address to deliver to.
    pub address: String,
    /// The address as first given, before alias expansion (for DSNs).
    #[serde(default)]
    pub original: Option<String>,
    /// The kind of worker that delivers to it.
    pub class: JobClass,
    /// Where it stands.
    pub status: RecipientStatus,
    /// Delivery attempts reported so far.
    #[serde(default)]
    pub attempts: u32,
    /// The last reply from the delivery target (an SMTP reply, an error).
    #[serde(default)]
    pub last_reply: Option<Reply>,
    /// When it may next be tried, seconds since the epoch.
    #[serde(default)]
    pub next_attempt: u64,
}

impl Recipient {
    /// A pending recipient of `class`, due at once.
    pub fn new(address: impl Into<String>, class: JobClass) -> Recipient {
        Recipient {
            address: address.into(),
            original: None,
            class,
            status: RecipientStatus::Pending,
            attempts: 0,
            last_reply: None,
            next_attempt: 0,
        }
    }

    /// True while the recipient still waits for delivery.
    pub fn is_pending(&self) -> bool {
        self.status == RecipientStatus::Pending
    }
}

/// Everything the queue knows about a message except its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The queue id.
    pub id: QueueId,
    /// The envelope sender (`MAIL FROM`); empty for the null sender `<>`.
    pub sender: String,
    /// The recipients, in the order given; their index names them in jobs.
    pub recipients: Vec<Recipient>,
    /// Where the message came from.
    pub origin: Origin,
    /// When it was queued, seconds since the epoch.
    pub received_at: u64,
    /// The size of the message bytes.
    pub size: u64,
    /// Whether a delay warning has already been sent for it.
    #[serde(default)]
    pub delay_warning_sent: bool,
    /// The client's request key, when the enqueue carried one (core-queue
    /// keeps a record of it so that a retried request is not queued twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_key: Option<String>,
}

impl Envelope {
    /// A new envelope with a fresh queue id.
    pub fn new(
        sender: impl Into<String>,
        recipients: Vec<Recipient>,
        origin: Origin,
        received_at: u64,
        size: u64,
    ) -> Envelope {
        Envelope {
            id: QueueId::generate(),
            sender: sender.into(),
            recipients,
            origin,
            received_at,
            size,
            delay_warning_sent: false,
            request_key: None,
        }
    }

    /// True for the null sender `<>`: such a message never causes a bounce.
    pub fn is_null_sender(&self) -> bool {
        self.sender.is_empty()
    }

    /// True when every recipient is delivered or failed.
    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| !r.is_pending())
    }

    /// The number of recipients still pending.
    pub fn pending_count(&self) -> usize {
        self.recipients.iter().filter(|r| r.is_pending()).count()
    }

    /// The earliest `next_attempt` among the pending recipients of `class`,
    /// or `None` when the class has nothing pending.
    pub fn next_due(&self, class: &JobClass) -> Option<u64> {
        self.recipients
            .iter()
            .filter(|r| r.is_pending() && &r.class == class)
            .map(|r| r.next_attempt)
            .min()
    }

    /// The distinct classes of all recipients, sorted.
    pub fn classes(&self) -> Vec<JobClass> {
        let mut classes: Vec<JobClass> = self.recipients.iter().map(|r| r.class.clone()).collect();
        classes.sort();
        classes.dedup();
        classes
    }
}

/// The proof that a worker holds a lease; any other value is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseToken(pub u64);

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One recipient offered in a [`Job`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecipient {
    /// Its index in the envelope: results name recipients by it.
    pub index: u32,
    /// The address to deliver to.
    pub address: String,
    /// The address as first given, before alias expansion.
    #[serde(default)]
    pub original: Option<String>,
    /// Delivery attempts reported before this one.
    pub attempts: u32,
}

/// Work leased to a worker: the due recipients of one class of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The message.
    pub id: QueueId,
    /// The class leased.
    pub class: JobClass,
    /// The lease; needed to complete or release the job.
    pub token: LeaseToken,
    /// When the lease ends, seconds since the epoch; after that the job is
    /// offered again and this token stops working once someone else leases it.
    pub lease_until: u64,
    /// The envelope sender; empty for `<>`.
    pub sender: String,
    /// Where the message came from.
    pub origin: Origin,
    /// When it was queued, seconds since the epoch.
    pub received_at: u64,
    /// The size of the message bytes.
    pub size: u64,
    /// The recipients to try now.
    pub recipients: Vec<JobRecipient>,
    /// The message bytes (carried in the frame body, not the header).
    #[serde(skip)]
    pub body: Vec<u8>,
}

/// What a worker reports for one recipient. The reply travels and is stored
/// as its one-line text (`{"result":"temporary_failure","reply":"451 4.3.0
/// try later"}`), as before there was a [`Reply`] type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// Delivered.
    Delivered {
        /// The target's reply (e.g. `250 2.0.0 ok`).
        reply: Reply,
    },
    /// Not delivered this time; try again later.
    TemporaryFailure {
        /// The target's reply or the local error.
        reply: Reply,
    },
    /// Never deliverable.
    PermanentFailure {
        /// The target's reply or the local error.
        reply: Reply,
    },
}

impl Outcome {
    /// The outcome a final reply means: delivered for 2xx, a permanent
    /// failure for 5xx, a temporary one for anything else (a 3xx is no final
    /// answer, and an error nobody classified is retried, not lost).
    pub fn from_reply(reply: Reply) -> Outcome {
        match reply.class() {
            Class::Success => Outcome::Delivered { reply },
            Class::Permanent => Outcome::PermanentFailure { reply },
            Class::Intermediate | Class::Temporary => Outcome::TemporaryFailure { reply },
        }
    }

    /// The reply it carries.
    pub fn reply(&self) -> &Reply {
        match self {
            Outcome::Delivered { reply }
            | Outcome::TemporaryFailure { reply }
            | Outcome::PermanentFailure { reply } => reply,
        }
    }
}

/// The outcome for the recipient at `index` of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientResult {
    /// The recipient's index in the envelope ([`JobRecipient::index`]).
    pub index: u32,
    /// What happened.
    pub outcome: Outcome,
}

/// A recipient that has just failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRecipient {
    /// Its index in the envelope.
    pub index: u32,
    /// The address.
    pub address: String,
    /// The address as first given, before alias expansion.
    #[serde(default)]
    pub original: Option<String>,
    /// The last reply.
    pub reply: Reply,
    /// True when it failed because it was retried for too long.
    pub expired: bool,
}

/// What the store's `complete` tells the caller (core-queue) to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteOutcome {
    /// Recipients that became permanently failed by this call: a DSN is due
    /// for them (unless the sender is `<>`).
    pub newly_failed: Vec<FailedRecipient>,
    /// A delay warning is due now; it has been marked as sent.
    pub delay_warning: bool,
    /// Every recipient is delivered or failed: after any DSN the caller
    /// removes the message.
    pub finished: bool,
    /// The envelope as stored after this call.
    pub envelope: Envelope,
}

/// One line of the queue listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The queue id.
    pub id: QueueId,
    /// The envelope sender; empty for `<>`.
    pub sender: String,
    /// All recipients.
    pub recipients: u32,
    /// Recipients still pending.
    pub pending: u32,
    /// The size of the message bytes.
    pub size: u64,
    /// When it was queued, seconds since the epoch.
    pub received_at: u64,
    /// The earliest next attempt among pending recipients, if any.
    pub next_attempt: Option<u64>,
}

impl Summary {
    /// Seconds since the message was queued.
    pub fn age(&self, now: u64) -> u64 {
        now.saturating_sub(self.received_at)
    }
}

/// Counts over the whole queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Messages queued.
    pub messages: u64,
    /// Sum of their sizes.
    pub bytes: u64,
    /// Pending recipients per class.
    pub pending: BTreeMap<String, u64>,
    /// The database's size on disk.
    pub disk_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_sort_by_creation_and_parse_back() {
        let ids: Vec<QueueId> = (0..1000).map(|_| QueueId::generate()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
        let id = &ids[0];
        assert_eq!(id.as_str().len(), 18);
        assert_eq!(id.as_str().parse::<QueueId>().as_ref(), Ok(id));
        let now_micros = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_micros(),
        )
        .expect("fits");
        assert!(id.created_micros() <= now_micros + 1_000_000);
        assert!(id.created_micros() + 60_000_000 > now_micros);
    }

    #[test]
    fn bad_queue_ids_are_refused() {
        for bad in [
            "",
            "abc",
            "00062a1b3c4d5e6f9a",
            "00062A1B3C4D5E6F9A0",
            "00062A1B3C4D5E6F9G",
        ] {
            assert!(bad.parse::<QueueId>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<QueueId>("\"../../etc\"").is_err());
    }

    #[test]
    fn job_classes_are_validated() {
        assert_eq!(JobClass::new("local"), Ok(JobClass::local()));
        assert!(JobClass::new("fax-gateway_2").is_ok());
        for bad in ["", "Local", "a\0b", "a b", &"x".repeat(33)] {
            assert!(JobClass::new(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<JobClass>("\"BAD\"").is_err());
    }

    /// An envelope and a job's results as the queue stored and sent them
    /// when replies were strings.
    const OLD_ENVELOPE: &str = concat!(
        r#"{"id":"000642F3A1B2C39A0B","sender":"s@x","recipients":["#,
        r#"{"address":"a@far","original":null,"class":"outbound","status":"pending","attempts":2,"#,
        r#""last_reply":"451 4.3.0 try later (mx.far[192.0.2.1]:25)","next_attempt":7},"#,
        r#"{"address":"b@far","original":"info@x","class":"outbound","status":"pending","attempts":1,"#,
        r#""last_reply":"4.4.1 connect to mx.far[192.0.2.1]:25: Connection refused","next_attempt":7},"#,
        r#"{"address":"c@x","original":null,"class":"local","status":"failed","attempts":1,"#,
        r#""last_reply":"mailbox full, try\r\nnext week","next_attempt":0},"#,
        r#"{"address":"d@x","original":null,"class":"local","status":"pending","attempts":0,"#,
        r#""last_reply":null,"next_attempt":0}],"#,
        r#""origin":{"module":"smtp-server","peer":"192.0.2.9","auth_user":null},"#,
        r#""received_at":1,"size":5,"delay_warning_sent":false}"#
    );

    #[test]
    fn records_written_when_replies_were_strings_read_back_unchanged() {
        let env: Envelope = serde_json::from_str(OLD_ENVELOPE).expect("old envelope");
        let replies: Vec<Option<&Reply>> = env
            .recipients
            .iter()
            .map(|r| r.last_reply.as_ref())
            .collect();
        let first = replies[0].expect("a reply");
        assert_eq!(first.code(), Some(451));
        assert_eq!(
            first.enhanced().map(|e| e.to_string()).as_deref(),
            Some("4.3.0")
        );
        assert_eq!(first.text(), "try later (mx.far[192.0.2.1]:25)");
        let second = replies[1].expect("a reply");
        assert_eq!(
            (second.code(), second.enhanced().map(|e| e.subject())),
            (None, Some(4))
        );
        assert_eq!(
            replies[2].expect("a reply").lines(),
            ["mailbox full, try", "next week"]
        );
        assert_eq!(replies[3], None);
        // Written again, it is the same record (the text with CR LF inside
        // comes back on one line, as every reader showed it anyway).
        let again = serde_json::to_string(&env).expect("json");
        assert_eq!(again, OLD_ENVELOPE.replace(r"try\r\nnext", "try next"));

        let old_results = concat!(
            r#"[{"index":0,"outcome":{"result":"delivered","reply":"250 2.0.0 ok (mx)"}},"#,
            r#"{"index":1,"outcome":{"result":"temporary_failure","reply":"4.0.0 not attempted"}},"#,
            r#"{"index":2,"outcome":{"result":"permanent_failure","reply":"550 5.1.1 <c@x>: no such user"}}]"#
        );
        let results: Vec<RecipientResult> = serde_json::from_str(old_results).expect("old results");
        assert!(
            matches!(&results[1].outcome, Outcome::TemporaryFailure { reply } if reply.code().is_none())
        );
        assert_eq!(results[2].outcome.reply().code(), Some(550));
        assert_eq!(serde_json::to_string(&results).expect("json"), old_results);
    }

    #[test]
    fn a_final_reply_makes_its_outcome() {
        for (reply, status) in [
            (Reply::new(250, "2.0.0", "ok"), "delivered"),
            (Reply::new(451, "4.3.0", "later"), "temporary_failure"),
            (Reply::new(354, "", "go on"), "temporary_failure"),
            (Reply::new(999, "", "odd"), "temporary_failure"),
            (Reply::local("", "no code"), "temporary_failure"),
            (Reply::new(550, "5.1.1", "no"), "permanent_failure"),
            (Reply::local("5.1.2", "bad domain"), "permanent_failure"),
        ] {
            let outcome = Outcome::from_reply(reply.clone());
            assert_eq!(outcome.reply(), &reply);
            let json = serde_json::to_value(&outcome).expect("json");
            assert_eq!(json["result"], status, "{reply}");
        }
    }

    #[test]
    fn next_due_looks_only_at_pending_recipients_of_the_class() {
        let mut a = Recipient::new("a@x", JobClass::local());
        a.next_attempt = 50;
        let mut b = Recipient::new("b@x", JobClass::local());
        b.next_attempt = 10;
        b.status = RecipientStatus::Delivered;
        let mut c = Recipient::new("c@y", JobClass::outbound());
        c.next_attempt = 5;
        let env = Envelope::new("s@x", vec![a, b, c], Origin::default(), 0, 1);
        assert_eq!(env.next_due(&JobClass::local()), Some(50));
        assert_eq!(env.next_due(&JobClass::outbound()), Some(5));
        assert_eq!(env.next_due(&JobClass::list()), None);
        assert_eq!(env.classes(), vec![JobClass::local(), JobClass::outbound()]);
        assert_eq!(env.pending_count(), 2);
    }
}
