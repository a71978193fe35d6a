//! What pop-client remembers about each account, kept in the queue's state
//! area (namespace `pop-client/<account>`) through the queue client, so it
//! is on disk, in core-queue's database, before any DELE:
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `u:UIDL` | `FIRST` | this server message was delivered (or was a duplicate); first fetched at `FIRST` |
//! | `m:MESSAGE-ID` | `FIRST ADDR...` | this Message-ID went to these addresses; the first time at `FIRST` |
//! | `big:UIDL` | `WHEN` | the postmaster was told about this oversized message |
//! | `fail` | `SINCE REPORTED` | polls have failed since `SINCE`; `REPORTED` is 1 once the postmaster was told |
//!
//! Times are seconds since the epoch. A UIDL or Message-ID that is long or
//! holds unusual characters is replaced by a hash (`u#…`, `m#…`, `big#…`); a
//! message without a Message-ID is known by a hash of its bytes; without
//! UIDL, an oversized message is known by its size (`big#size-N`).
//! `m:` records expire after [`DEDUP_WINDOW`]; `u:` and `big:` records go
//! once their message has left the server.

use std::collections::{HashMap, HashSet};

use qs_queue::{Client, ClientError};

/// How long a Message-ID is remembered: a copy that arrives later is
/// delivered again.
pub const DEDUP_WINDOW: u64 = 30 * 86_400;

/// Longest namespace the queue accepts.
const MAX_NAMESPACE: usize = 64;
/// Ids longer than this are hashed in keys.
const MAX_ID_IN_KEY: usize = 200;
/// Keys read per state scan.
const PAGE: u32 = 1000;
/// State deletions sent at once.
const PARALLEL: usize = 32;

/// The namespace of one account.
pub fn namespace(account: &str) -> String {
    let plain = format!("pop-client/{account}");
    if plain.len() <= MAX_NAMESPACE && !account.contains('\0') {
        plain
    } else {
        format!("pop-client/#{}", digest(&[account.as_bytes()]))
    }
}

/// The `u:` key of a UIDL.
pub fn uidl_key(uidl: &str) -> String {
    key("u", uidl)
}

/// The `m:` key of a Message-ID (without angle brackets).
pub fn id_key(message_id: &str) -> String {
    key("m", message_id)
}

/// The `m#` key of a message without a Message-ID, from the digest of its bytes.
pub fn content_key(content_digest: &str) -> String {
    format!("m#{content_digest}")
}

/// The `big:` key of an oversized message.
pub fn big_key(uidl: Option<&str>, size: u64) -> String {
    match uidl {
        Some(u) => key("big", u),
        None => format!("big#size-{size}"),
    }
}

fn key(kind: &str, id: &str) -> String {
    let printable = id.bytes().all(|b| (0x21..0x7f).contains(&b));
    if printable && id.len() <= MAX_ID_IN_KEY {
        format!("{kind}:{id}")
    } else {
        format!("{kind}#{}", digest(&[id.as_bytes()]))
    }
}

/// A 128-bit FNV-1a digest of `parts` (each length-prefixed), in hex: stable
/// across versions and machines, for keys, not for security.
pub fn digest(parts: &[&[u8]]) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    for part in parts {
        for b in (part.len() as u64).to_be_bytes().iter().chain(part.iter()) {
            h ^= u128::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    }
    format!("{h:032x}")
}

/// Where a Message-ID has gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// When it was first delivered.
    pub first: u64,
    /// The addresses it was queued for (lower case).
    pub to: Vec<String>,
}

impl Delivered {
    /// Reads a record; `None` for a malformed one.
    pub fn parse(value: &[u8]) -> Option<Delivered> {
        let text = std::str::from_utf8(value).ok()?;
        let mut words = text.split_ascii_whitespace();
        let first = words.next()?.parse().ok()?;
        Some(Delivered {
            first,
            to: words.map(str::to_string).collect(),
        })
    }

    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut text = self.first.to_string();
        for a in &self.to {
            text.push(' ');
            text.push_str(a);
        }
        text.into_bytes()
    }

    /// True while the record still counts at `now`.
    pub fn is_current(&self, now: u64) -> bool {
        now < self.first.saturating_add(DEDUP_WINDOW)
    }

    /// The addresses of `recipients` this Message-ID has not reached yet.
    pub fn not_yet(&self, recipients: &[String]) -> Vec<String> {
        recipients
            .iter()
            .filter(|r| !self.to.iter().any(|t| t.eq_ignore_ascii_case(r)))
            .cloned()
            .collect()
    }

    /// This record with `more` added.
    pub fn with(&self, more: &[String]) -> Delivered {
        let mut to = self.to.clone();
        for r in more {
            let r = r.to_ascii_lowercase();
            if !to.contains(&r) {
                to.push(r);
            }
        }
        Delivered {
            first: self.first,
            to,
        }
    }
}

/// A run of failed polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failing {
    /// When the first failure of the run happened.
    pub since: u64,
    /// Whether the postmaster has been told.
    pub reported: bool,
}

impl Failing {
    fn parse(value: &[u8]) -> Option<Failing> {
        let text = std::str::from_utf8(value).ok()?;
        let mut words = text.split_ascii_whitespace();
        Some(Failing {
            since: words.next()?.parse().ok()?,
            reported: words.next() == Some("1"),
        })
    }

    fn encode(&self) -> Vec<u8> {
        format!("{} {}", self.since, u8::from(self.reported)).into_bytes()
    }
}

/// What the failure tracker decides after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureStep {
    /// Nothing to record.
    Nothing,
    /// The first failure of a run: remember when.
    Start(Failing),
    /// Failing for long enough: tell the postmaster, remember that.
    Report(Failing),
    /// Working again after a run of failures; tell the postmaster if they
    /// were told of it.
    Cleared(Failing),
}

/// The failure tracker: `current` is the stored run, if any.
pub fn failure_step(current: Option<Failing>, failed: bool, now: u64, after: u64) -> FailureStep {
    match (current, failed) {
        (None, false) => FailureStep::Nothing,
        (None, true) => FailureStep::Start(Failing {
            since: now,
            reported: false,
        }),
        (Some(f), true) if !f.reported && now.saturating_sub(f.since) >= after => {
            FailureStep::Report(Failing {
                since: f.since,
                reported: true,
            })
        }
        (Some(_), true) => FailureStep::Nothing,
        (Some(f), false) => FailureStep::Cleared(f),
    }
}

/// One account's records, through the queue client.
#[derive(Debug, Clone)]
pub struct State {
    client: Client,
    ns: String,
}

impl State {
    /// The records of `account`.
    pub fn new(client: Client, account: &str) -> State {
        State {
            client,
            ns: namespace(account),
        }
    }

    /// Every `u:` record: key → first fetched.
    pub async fn handled(&self) -> Result<HashMap<String, u64>, ClientError> {
        let mut out = HashMap::new();
        for prefix in ["u:", "u#"] {
            for (key, value) in self.scan(prefix).await? {
                let first = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0);
                out.insert(key, first);
            }
        }
        Ok(out)
    }

    /// Every `big:` key.
    pub async fn told(&self) -> Result<HashSet<String>, ClientError> {
        let mut out = HashSet::new();
        for prefix in ["big:", "big#"] {
            out.extend(self.scan(prefix).await?.into_iter().map(|(k, _)| k));
        }
        Ok(out)
    }

    /// The `m:` record of an id key, if any.
    pub async fn delivered(&self, id_key: &str) -> Result<Option<Delivered>, ClientError> {
        Ok(self
            .client
            .state_get(&self.ns, id_key)
            .await?
            .and_then(|v| Delivered::parse(&v)))
    }

    /// Writes the `m:` record and, when given, the `u:` record, together
    /// (one flush of the queue serves both).
    pub async fn record(
        &self,
        id_key: &str,
        delivered: &Delivered,
        handled: Option<(&str, u64)>,
    ) -> Result<(), ClientError> {
        let value = delivered.encode();
        let m = self.client.state_put(&self.ns, id_key, &value);
        match handled {
            Some((key, first)) => {
                let value = first.to_string();
                let u = self.client.state_put(&self.ns, key, value.as_bytes());
                let (a, b) = tokio::join!(m, u);
                a.and(b)
            }
            None => m.await,
        }
    }

    /// Writes a `u:` record alone.
    pub async fn mark_handled(&self, key: &str, first: u64) -> Result<(), ClientError> {
        self.client
            .state_put(&self.ns, key, first.to_string().as_bytes())
            .await
    }

    /// Writes a `big:` record.
    pub async fn mark_told(&self, key: &str, when: u64) -> Result<(), ClientError> {
        self.client
            .state_put(&self.ns, key, when.to_string().as_bytes())
            .await
    }

    /// Deletes records, a few at a time.
    pub async fn forget(&self, keys: Vec<String>) -> Result<(), ClientError> {
        for chunk in keys.chunks(PARALLEL) {
            let mut tasks = tokio::task::JoinSet::new();
            for key in chunk {
                let client = self.client.clone();
                let ns = self.ns.clone();
                let key = key.clone();
                tasks.spawn(async move { client.state_delete(&ns, &key).await });
            }
            while let Some(result) = tasks.join_next().await {
                if let Ok(r) = result {
                    r?;
                }
            }
        }
        Ok(())
    }

    /// Deletes `m:` records older than [`DEDUP_WINDOW`]; returns how many.
    pub async fn prune_ids(&self, now: u64) -> Result<usize, ClientError> {
        let mut old = Vec::new();
        for prefix in ["m:", "m#"] {
            for (key, value) in self.scan(prefix).await? {
                if Delivered::parse(&value).is_none_or(|d| !d.is_current(now)) {
                    old.push(key);
                }
            }
        }
        let n = old.len();
        self.forget(old).await?;
        Ok(n)
    }

    /// The current run of failures, if any.
    pub async fn failing(&self) -> Result<Option<Failing>, ClientError> {
        Ok(self
            .client
            .state_get(&self.ns, "fail")
            .await?
            .and_then(|v| Failing::parse(&v)))
    }

    /// Stores the run of failures.
    pub async fn set_failing(&self, f: Failing) -> Result<(), ClientError> {
        self.client.state_put(&self.ns, "fail", &f.encode()).await
    }

    /// Forgets the run of failures.
    pub async fn clear_failing(&self) -> Result<(), ClientError> {
        self.client.state_delete(&self.ns, "fail").await
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, ClientError> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        loop {
            let after = out.last().map(|(k, _)| k.clone());
            let page = self
                .client
                .state_scan(&self.ns, prefix, after.as_deref(), PAGE)
                .await?;
            let done = page.is_empty();
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_stay_within_the_queue_limits() {
        assert_eq!(namespace("family"), "pop-client/family");
        let long = namespace(&"x".repeat(100));
        assert!(long.len() <= MAX_NAMESPACE && long.starts_with("pop-client/#"));
        assert_eq!(uidl_key("000001a5"), "u:000001a5");
        assert!(uidl_key("with space").starts_with("u#"));
        assert!(id_key(&"a".repeat(500)).starts_with("m#"));
        assert_eq!(id_key("x.1@example.test"), "m:x.1@example.test");
        assert_eq!(big_key(None, 12), "big#size-12");
        assert_eq!(big_key(Some("abc"), 12), "big:abc");
    }

    #[test]
    fn the_digest_is_stable_and_separates_parts() {
        assert_eq!(digest(&[b"abc"]), digest(&[b"abc"]));
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        // Pinned: records written by one version are read by the next.
        assert_eq!(digest(&[b""]), "9d30c1f78465995be47dda5e4e4e77ed");
    }

    #[test]
    fn a_message_id_reaches_each_person_once() {
        let d = Delivered {
            first: 1000,
            to: vec!["alice@example.test".into()],
        };
        let again = Delivered::parse(&d.encode()).unwrap();
        assert_eq!(again, d);
        // The same message for Alice again: nothing new.
        assert!(d.not_yet(&["Alice@Example.test".into()]).is_empty());
        // The copy the provider made for Bob (same Message-ID) still goes to Bob.
        let rcpts = vec!["alice@example.test".into(), "bob@example.test".into()];
        assert_eq!(d.not_yet(&rcpts), vec!["bob@example.test".to_string()]);
        let both = d.with(&["Bob@example.test".into()]);
        assert_eq!(both.to, ["alice@example.test", "bob@example.test"]);
        assert_eq!(both.first, 1000);
        assert!(d.is_current(1000 + DEDUP_WINDOW - 1));
        assert!(!d.is_current(1000 + DEDUP_WINDOW));
        assert_eq!(Delivered::parse(b"garbage"), None);
    }

    #[test]
    fn a_failure_is_reported_once_after_the_delay_and_again_when_it_clears() {
        let day = 86_400;
        let start = failure_step(None, true, 100, day);
        let FailureStep::Start(run) = start else {
            panic!("{start:?}")
        };
        assert_eq!(run.since, 100);
        assert_eq!(
            failure_step(Some(run), true, 100 + day - 1, day),
            FailureStep::Nothing
        );
        let report = failure_step(Some(run), true, 100 + day, day);
        let FailureStep::Report(reported) = report else {
            panic!("{report:?}")
        };
        assert!(reported.reported);
        assert_eq!(
            failure_step(Some(reported), true, 100 + 3 * day, day),
            FailureStep::Nothing
        );
        assert_eq!(
            failure_step(Some(reported), false, 100 + 3 * day, day),
            FailureStep::Cleared(reported)
        );
        assert_eq!(failure_step(None, false, 5, day), FailureStep::Nothing);
        let f = Failing {
            since: 7,
            reported: true,
        };
        assert_eq!(Failing::parse(&f.encode()), Some(f));
    }
}
