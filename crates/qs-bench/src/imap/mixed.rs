//! `qs-bench imap --mixed-clients N`: N clients at once on the filled folder,
//! each doing what mail clients do, in a fixed mix, for `--mixed-seconds`. The
//! figure is commands per second, the measure of imaptest's default load.
//!
//! The mix, out of 100 steps: 30 `UID FETCH` of the envelopes, flags and sizes of
//! ten messages; 10 `UID FETCH` of one whole message (`BODY.PEEK[]`); 10
//! `UID SEARCH UNSEEN`; 20 `UID STORE` of `\Seen` or `\Flagged`, set or taken off;
//! 10 `APPEND`; 10 `UID STORE +FLAGS.SILENT (\Deleted)` then `UID EXPUNGE` of one
//! message (two commands); 10 `NOOP`. Appends and expunges balance, so the folder
//! keeps about its size. UIDs are drawn up to the folder's UIDNEXT plus the
//! appends made so far: a UID that was expunged meanwhile is answered with
//! nothing, as a client with a stale view would be.
//!
//! It changes the folder, so it runs only on a folder the run made.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Session, answers, failed, login};
use crate::BenchError;
use crate::net::Tls;

/// What the mixed load measured.
#[derive(Debug, Clone, Serialize)]
pub struct MixedReport {
    /// Clients at once.
    pub clients: u64,
    /// How long they ran.
    pub seconds: f64,
    /// Commands answered OK, all clients.
    pub commands: u64,
    /// Those per second.
    pub commands_per_second: f64,
    /// Commands answered otherwise (NO, BAD, a dropped connection).
    pub errors: u64,
    /// Commands answered OK, by command.
    pub by_command: BTreeMap<String, u64>,
}

/// One step of the mix.
#[derive(Debug, Clone, Copy)]
enum Step {
    FetchEnvelopes,
    FetchMessage,
    SearchUnseen,
    StoreFlag,
    Append,
    Expunge,
    Noop,
}

impl Step {
    /// The step for a number drawn in 0..100.
    fn of(draw: u64) -> Step {
        match draw {
            0..30 => Step::FetchEnvelopes,
            30..40 => Step::FetchMessage,
            40..50 => Step::SearchUnseen,
            50..70 => Step::StoreFlag,
            70..80 => Step::Append,
            80..90 => Step::Expunge,
            _ => Step::Noop,
        }
    }
}

/// A small random number generator (xorshift64*): the mix needs no more, and
/// a seed per client makes the runs comparable.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `1..=max`.
    fn upto(&mut self, max: u32) -> u32 {
        (self.next() % u64::from(max.max(1))) as u32 + 1
    }
}

/// What all clients share.
struct Load {
    user: String,
    folder: String,
    size: usize,
    marker: String,
    /// The highest UID there may be: UIDNEXT at the start, plus every append.
    max_uid: AtomicU32,
    deadline: Instant,
}

/// What one client counted.
#[derive(Default)]
struct Counts {
    ok: BTreeMap<&'static str, u64>,
    errors: u64,
}

impl Counts {
    fn record<T>(&mut self, command: &'static str, result: Result<T, async_imap::error::Error>) {
        match result {
            Ok(_) => *self.ok.entry(command).or_default() += 1,
            Err(_) => self.errors += 1,
        }
    }
}

/// Runs `clients` clients on `folder` for `seconds`.
#[allow(clippy::too_many_arguments)] // the options of one subcommand, passed on
pub async fn run(
    target: &str,
    tls: &Tls,
    user: &str,
    password: &str,
    folder: &str,
    size: usize,
    clients: u64,
    seconds: u64,
) -> Result<MixedReport, BenchError> {
    let mut sessions = Vec::new();
    let mut uid_next = 1;
    for _ in 0..clients {
        let mut session = login(target, tls, user, password).await?;
        let mailbox = session
            .select(folder)
            .await
            .map_err(|e| failed(&format!("SELECT {folder}"), e))?;
        uid_next = mailbox.uid_next.unwrap_or(uid_next);
        sessions.push(session);
    }
    let started = Instant::now();
    let load = Arc::new(Load {
        user: user.to_string(),
        folder: folder.to_string(),
        size,
        marker: crate::message::run_marker(),
        max_uid: AtomicU32::new(uid_next.saturating_sub(1).max(1)),
        deadline: started + Duration::from_secs(seconds.max(1)),
    });
    let bar = crate::progress::spinner("mixed load running");
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(n, session)| tokio::spawn(client(Arc::clone(&load), session, n as u64)))
        .collect();
    let mut by_command: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors = 0;
    for task in tasks {
        let counts = task
            .await
            .map_err(|e| BenchError::Refused(format!("a mixed-load client failed: {e}")))?;
        for (command, n) in counts.ok {
            *by_command.entry(command.to_string()).or_default() += n;
        }
        errors += counts.errors;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let commands = by_command.values().sum();
    Ok(MixedReport {
        clients,
        seconds: elapsed.as_secs_f64(),
        commands,
        commands_per_second: crate::stats::per_second(commands, elapsed),
        errors,
        by_command,
    })
}

/// One client: steps of the mix until the deadline, then LOGOUT.
async fn client(load: Arc<Load>, mut session: Session, seed: u64) -> Counts {
    let mut draw = Draw(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0x1000_0000_01B3));
    let mut counts = Counts::default();
    let mut appended = 0u64;
    while Instant::now() < load.deadline {
        let max_uid = load.max_uid.load(Ordering::Relaxed);
        let uid = draw.upto(max_uid);
        match Step::of(draw.next() % 100) {
            Step::FetchEnvelopes => {
                let range = format!("{uid}:{}", uid.saturating_add(9));
                let result = answers(
                    session
                        .uid_fetch(&range, "(UID FLAGS RFC822.SIZE ENVELOPE)")
                        .await,
                )
                .await;
                counts.record("UID FETCH envelopes", result);
            }
            Step::FetchMessage => {
                let result = answers(
                    session
                        .uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
                        .await,
                )
                .await;
                counts.record("UID FETCH BODY.PEEK[]", result);
            }
            Step::SearchUnseen => {
                let result = session.uid_search("UNSEEN").await;
                counts.record("UID SEARCH UNSEEN", result);
            }
            Step::StoreFlag => {
                let sign = if draw.next().is_multiple_of(2) {
                    '+'
                } else {
                    '-'
                };
                let flag = if draw.next().is_multiple_of(2) {
                    "\\Seen"
                } else {
                    "\\Flagged"
                };
                let change = format!("{sign}FLAGS ({flag})");
                let result = answers(session.uid_store(uid.to_string(), &change).await).await;
                counts.record("UID STORE", result);
            }
            Step::Append => {
                let bytes = crate::message::build(
                    &load.marker,
                    seed * 1_000_000 + appended,
                    "mixed@example.org",
                    &load.user,
                    load.size,
                );
                appended += 1;
                let result = session.append(&load.folder, None, None, &bytes).await;
                if result.is_ok() {
                    load.max_uid.fetch_add(1, Ordering::Relaxed);
                }
                counts.record("APPEND", result);
            }
            Step::Expunge => {
                let result = answers(
                    session
                        .uid_store(uid.to_string(), "+FLAGS.SILENT (\\Deleted)")
                        .await,
                )
                .await;
                counts.record("UID STORE \\Deleted", result);
                let result = answers(session.uid_expunge(uid.to_string()).await).await;
                counts.record("UID EXPUNGE", result);
            }
            Step::Noop => {
                let result = session.noop().await;
                counts.record("NOOP", result);
            }
        }
        // Other clients' changes arrive unasked; this client has no use for them.
        while session.unsolicited_responses.try_recv().is_ok() {}
    }
    let _ = session.logout().await;
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_adds_up_to_its_weights() {
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        for n in 0..100 {
            *seen.entry(format!("{:?}", Step::of(n))).or_default() += 1;
        }
        let expected: BTreeMap<String, u64> = [
            ("FetchEnvelopes", 30),
            ("FetchMessage", 10),
            ("SearchUnseen", 10),
            ("StoreFlag", 20),
            ("Append", 10),
            ("Expunge", 10),
            ("Noop", 10),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn draws_stay_in_range_and_differ_by_seed() {
        let mut a = Draw(1);
        let mut b = Draw(2);
        let first: Vec<u32> = (0..50).map(|_| a.upto(7)).collect();
        assert!(first.iter().all(|n| (1..=7).contains(n)));
        let second: Vec<u32> = (0..50).map(|_| b.upto(7)).collect();
        assert_ne!(first, second);
        assert_eq!(
            Draw(5).upto(0),
            1,
            "an empty folder still has a UID to ask for"
        );
    }
}
