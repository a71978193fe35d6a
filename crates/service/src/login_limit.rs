//! Failed logins per client address, shared by every server that checks
//! passwords (SMTP AUTH, POP3, IMAP): after `max_failures` failures within
//! `window`, the address is refused every login for `block`, without the
//! password even being checked, so guessing from one address is slow and
//! costs the server nothing.
//!
//! Attempts are counted when they start, not when their (slow) hash ends: an
//! attempt first takes a slot of its address, and an address's attempts under
//! way plus its recorded failures never exceed `max_failures`. So a client
//! that sends many passwords at once on many connections gets at most
//! `max_failures` of them checked; the others wait for a slot, and are refused
//! without a check once the failures block the address. A success gives its
//! slot back.
//!
//! [`FailedLogins::check_password`] is the whole login check of the mailbox
//! servers: the block, the password, the log lines and the delay before a
//! refusal is answered.
//!
//! Memory is bounded: past [`MAX_TRACKED_ADDRESSES`] the records that no longer
//! matter are dropped (a client cannot grow the table without limit).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use qs_directory::{Directory, Secret, VerifiedUser};
use tokio::sync::Notify;
use tracing::{error, info, warn};

/// How many addresses are tracked before stale records are swept.
pub const MAX_TRACKED_ADDRESSES: usize = 4096;

/// The failed-login counts of every client address.
#[derive(Debug)]
pub struct FailedLogins {
    max_failures: u32,
    window: Duration,
    block: Duration,
    by_address: Mutex<HashMap<IpAddr, Record>>,
    /// Woken whenever a slot is given back or a failure recorded, for the
    /// attempts waiting for a slot.
    slot_freed: Notify,
}

#[derive(Debug)]
struct Record {
    count: u32,
    since: Instant,
    blocked_until: Option<Instant>,
    /// Attempts of this address being checked now.
    in_flight: u32,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            count: 0,
            since: now,
            blocked_until: None,
            in_flight: 0,
        }
    }

    /// Forgets a block that is over, and failures older than `window`.
    fn expire(&mut self, now: Instant, window: Duration) {
        if self.blocked_until.is_some_and(|until| until <= now) {
            // The block is over: the address starts afresh.
            self.count = 0;
            self.since = now;
            self.blocked_until = None;
        }
        if self.blocked_until.is_none() && now.duration_since(self.since) >= window {
            self.count = 0;
            self.since = now;
        }
    }

    fn is_blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|until| until > now)
    }

    /// True when the record says nothing any more and may be dropped.
    fn is_idle(&self, now: Instant, window: Duration) -> bool {
        self.in_flight == 0
            && !self.is_blocked(now)
            && (self.count == 0 || now.duration_since(self.since) >= window)
    }
}

/// What recording a failure found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// Failures from this address within the window, this one included.
    pub failures: u32,
    /// True when this failure is the one that blocks the address.
    pub blocked_now: bool,
}

/// What asking for an attempt slot found.
#[derive(Debug)]
pub enum Reservation<'a> {
    /// The attempt may be checked.
    Slot(AttemptSlot<'a>),
    /// The address is blocked: refuse without a check.
    Blocked,
    /// The address's slots are taken by attempts under way: wait for one
    /// to end (see [`FailedLogins::wait_for_slot`]).
    Busy,
}

/// The right of one login attempt from an address to be checked. Dropped
/// without [`AttemptSlot::failed`] (a success, a directory error, a session
/// gone), it is given back and counts nothing.
#[derive(Debug)]
pub struct AttemptSlot<'a> {
    logins: &'a FailedLogins,
    ip: IpAddr,
}

impl AttemptSlot<'_> {
    /// The attempt failed: its slot becomes a recorded failure.
    pub fn failed(self) -> Recorded {
        let recorded = self.logins.settle(self.ip, true);
        std::mem::forget(self);
        recorded
    }
}

impl Drop for AttemptSlot<'_> {
    fn drop(&mut self) {
        self.logins.settle(self.ip, false);
    }
}

impl FailedLogins {
    /// `max_failures` within `window` block an address for `block`.
    pub fn new(max_failures: u32, window: Duration, block: Duration) -> FailedLogins {
        FailedLogins {
            max_failures: max_failures.max(1),
            window,
            block,
            by_address: Mutex::default(),
            slot_freed: Notify::new(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The record of `ip`, made room for in a table that stays bounded.
    fn entry<'t>(
        &self,
        table: &'t mut HashMap<IpAddr, Record>,
        ip: IpAddr,
        now: Instant,
    ) -> &'t mut Record {
        if table.len() >= MAX_TRACKED_ADDRESSES && !table.contains_key(&ip) {
            table.retain(|_, r| !r.is_idle(now, self.window));
        }
        let record = table.entry(ip).or_insert_with(|| Record::new(now));
        record.expire(now, self.window);
        record
    }

    /// True while `ip` is refused every login.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut table = self.table();
        let Some(record) = table.get_mut(&ip) else {
            return false;
        };
        record.expire(now, self.window);
        let blocked = record.is_blocked(now);
        if record.is_idle(now, self.window) {
            table.remove(&ip);
        }
        blocked
    }

    /// Counts a failed login from `ip` (one that took no slot).
    pub fn record(&self, ip: IpAddr) -> Recorded {
        let now = Instant::now();
        let mut table = self.table();
        let record = self.entry(&mut table, ip, now);
        self.count_failure(record, now)
    }

    fn count_failure(&self, record: &mut Record, now: Instant) -> Recorded {
        record.count = record.count.saturating_add(1);
        let blocked_now = record.count >= self.max_failures && record.blocked_until.is_none();
        if blocked_now {
            record.blocked_until = Some(now + self.block);
        }
        Recorded {
            failures: record.count,
            blocked_now,
        }
    }

    /// Takes a slot for an attempt from `ip` if its failures and the
    /// attempts under way leave one.
    pub fn reserve(&self, ip: IpAddr) -> Reservation<'_> {
        let now = Instant::now();
        let mut table = self.table();
        let record = self.entry(&mut table, ip, now);
        if record.is_blocked(now) {
            return Reservation::Blocked;
        }
        if record.count.saturating_add(record.in_flight) >= self.max_failures {
            return Reservation::Busy;
        }
        record.in_flight += 1;
        Reservation::Slot(AttemptSlot { logins: self, ip })
    }

    /// Waits until an attempt from `ip` may be checked; `None` when the
    /// address is blocked (meanwhile, or already).
    pub async fn wait_for_slot(&self, ip: IpAddr) -> Option<AttemptSlot<'_>> {
        loop {
            // Registered before the look, so a slot freed in between wakes it.
            let freed = self.slot_freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            match self.reserve(ip) {
                Reservation::Slot(slot) => return Some(slot),
                Reservation::Blocked => return None,
                Reservation::Busy => freed.await,
            }
        }
    }

    /// Ends an attempt of `ip`: gives its slot back, as a failure or not.
    fn settle(&self, ip: IpAddr, failed: bool) -> Recorded {
        let now = Instant::now();
        let recorded = {
            let mut table = self.table();
            let record = self.entry(&mut table, ip, now);
            record.in_flight = record.in_flight.saturating_sub(1);
            if failed {
                self.count_failure(record, now)
            } else {
                Recorded {
                    failures: record.count,
                    blocked_now: false,
                }
            }
        };
        self.slot_freed.notify_waiters();
        recorded
    }
}

/// How a password check went.
#[derive(Debug)]
pub enum PasswordCheck {
    /// The client's address is refused every login for now: the password
    /// was not even checked.
    Blocked,
    /// The right password.
    Accepted(VerifiedUser),
    /// A wrong password or an unknown login; counted against the address.
    Rejected,
    /// The directory could not be read: try again later.
    Unavailable,
}

/// What a login attempt is, for [`FailedLogins::check_password`].
#[derive(Debug)]
pub struct LoginAttempt<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// The login name as given.
    pub login: &'a str,
    /// The password; dropped once checked.
    pub password: Secret,
    /// How it came (`LOGIN`, `AUTH PLAIN`, `USER`), for the log.
    pub mechanism: &'static str,
    /// How long to wait before a refusal is answered.
    pub delay: Duration,
    /// This connection's failed logins before this one, for the log.
    pub earlier_failures: u32,
}

impl FailedLogins {
    /// Checks `attempt` against `directory` unless its address is blocked.
    /// The attempt first waits for a slot of its address (see the module
    /// header), so that attempts sent at once are counted before they are
    /// hashed, and one still waiting when the address gets blocked is
    /// refused unchecked. Logs the outcome (never the password; the account
    /// only when it exists, since an unknown login may be a password typed
    /// in the wrong field), counts a failure, and waits `attempt.delay`
    /// before returning a refusal, so that guessing is slow.
    pub async fn check_password(
        &self,
        directory: &Directory,
        attempt: LoginAttempt<'_>,
    ) -> PasswordCheck {
        let LoginAttempt {
            ip,
            login,
            password,
            mechanism,
            delay,
            earlier_failures,
        } = attempt;
        let Some(slot) = self.wait_for_slot(ip).await else {
            drop(password);
            info!(
                mechanism,
                "login refused: too many failures from this address"
            );
            tokio::time::sleep(delay).await;
            return PasswordCheck::Blocked;
        };
        let verified = directory.verify(login, &password).await;
        drop(password);
        match verified {
            Ok(Some(user)) => {
                drop(slot);
                PasswordCheck::Accepted(user)
            }
            Ok(None) => {
                let blocked = slot.failed().blocked_now;
                let known = directory
                    .snapshot()
                    .user(login)
                    .map(|u| u.address().to_owned());
                info!(
                    user = known.as_deref().unwrap_or("(no such user)"),
                    mechanism,
                    failures = earlier_failures + 1,
                    "login failed: bad credentials"
                );
                if blocked {
                    warn!(
                        minutes = self.block.as_secs() / 60,
                        "too many failed logins from this address: logins refused for a while"
                    );
                }
                tokio::time::sleep(delay).await;
                PasswordCheck::Rejected
            }
            Err(e) => {
                drop(slot);
                error!(error = %e, "cannot check a login");
                PasswordCheck::Unavailable
            }
        }
    }
}

/// The delay before a refusal is answered: `base`, doubled for each earlier
/// failure of the connection, at most `max`.
pub fn doubling_delay(base: Duration, max: Duration, earlier_failures: u32) -> Duration {
    base.saturating_mul(1u32 << earlier_failures.min(16))
        .min(max)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;

    fn attempt(ip: IpAddr, password: &str) -> LoginAttempt<'static> {
        LoginAttempt {
            ip,
            login: "alice@example.test",
            password: Secret::from(password),
            mechanism: "LOGIN",
            delay: Duration::ZERO,
            earlier_failures: 0,
        }
    }

    /// A directory with alice@example.test, password "pw".
    fn directory(dir: &tempfile::TempDir) -> Directory {
        let directory =
            Directory::create(dir.path().join("directory.json"), Default::default()).unwrap();
        directory.add_domain("example.test").unwrap();
        directory
            .add_user("alice@example.test", "Alice", &Secret::from("pw"))
            .unwrap();
        directory
    }

    #[tokio::test]
    async fn a_blocked_address_is_refused_even_the_right_password() {
        let dir = tempfile::tempdir().unwrap();
        let directory = directory(&dir);
        let logins = FailedLogins::new(2, Duration::from_secs(900), Duration::from_secs(900));
        let check = |ip, pw| logins.check_password(&directory, attempt(ip, pw));
        assert!(
            matches!(check(ip(1), "pw").await, PasswordCheck::Accepted(u) if u.address == "alice@example.test")
        );
        assert!(matches!(
            check(ip(1), "nope").await,
            PasswordCheck::Rejected
        ));
        assert!(matches!(
            check(ip(1), "nope").await,
            PasswordCheck::Rejected
        ));
        assert!(matches!(check(ip(1), "pw").await, PasswordCheck::Blocked));
        assert!(matches!(
            check(ip(2), "pw").await,
            PasswordCheck::Accepted(_)
        ));
    }

    #[test]
    fn the_delay_doubles_up_to_its_ceiling() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(8));
        let delays: Vec<u64> = (0..6)
            .map(|n| doubling_delay(base, max, n).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 8, 8]);
        assert_eq!(doubling_delay(base, max, u32::MAX), max);
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn the_failure_that_reaches_the_limit_blocks_the_address_only() {
        let logins = FailedLogins::new(3, Duration::from_secs(900), Duration::from_secs(900));
        assert_eq!(
            logins.record(ip(1)),
            Recorded {
                failures: 1,
                blocked_now: false
            }
        );
        assert!(!logins.record(ip(1)).blocked_now);
        assert!(!logins.is_blocked(ip(1)));
        assert_eq!(
            logins.record(ip(1)),
            Recorded {
                failures: 3,
                blocked_now: true
            }
        );
        assert!(logins.is_blocked(ip(1)));
        assert!(!logins.is_blocked(ip(2)));
        // Further failures do not block it again (the block does not grow).
        assert!(!logins.record(ip(1)).blocked_now);
    }

    #[test]
    fn blocks_end_and_old_failures_are_forgotten() {
        let logins = FailedLogins::new(2, Duration::ZERO, Duration::ZERO);
        // A zero window: every failure starts a new count.
        assert_eq!(logins.record(ip(1)).failures, 1);
        assert_eq!(logins.record(ip(1)).failures, 1);
        let blocking = FailedLogins::new(1, Duration::from_secs(900), Duration::ZERO);
        assert!(blocking.record(ip(1)).blocked_now);
        // A zero-length block is over at once, and the address starts afresh.
        assert!(!blocking.is_blocked(ip(1)));
        assert!(blocking.record(ip(1)).blocked_now);
    }

    #[test]
    fn the_table_stays_bounded() {
        let logins = FailedLogins::new(5, Duration::ZERO, Duration::ZERO);
        for n in 0..(MAX_TRACKED_ADDRESSES as u32 + 100) {
            logins.record(IpAddr::from(n.to_be_bytes()));
        }
        assert!(logins.table().len() <= MAX_TRACKED_ADDRESSES + 1);
    }

    #[test]
    fn attempts_under_way_count_against_the_limit() {
        let logins = FailedLogins::new(3, Duration::from_secs(900), Duration::from_secs(900));
        let slots: Vec<AttemptSlot<'_>> = (0..3)
            .map(|_| match logins.reserve(ip(1)) {
                Reservation::Slot(slot) => slot,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(matches!(logins.reserve(ip(1)), Reservation::Busy));
        assert!(
            matches!(logins.reserve(ip(2)), Reservation::Slot(_)),
            "another address has its own slots"
        );
        let mut slots = slots.into_iter();
        // A success (or an attempt given up) gives its slot back.
        drop(slots.next());
        let again = match logins.reserve(ip(1)) {
            Reservation::Slot(slot) => slot,
            other => panic!("{other:?}"),
        };
        assert!(!again.failed().blocked_now);
        assert!(!slots.next().unwrap().failed().blocked_now);
        assert!(matches!(logins.reserve(ip(1)), Reservation::Busy));
        assert_eq!(
            slots.next().unwrap().failed(),
            Recorded {
                failures: 3,
                blocked_now: true
            }
        );
        assert!(matches!(logins.reserve(ip(1)), Reservation::Blocked));
        assert!(logins.is_blocked(ip(1)));
    }

    #[tokio::test]
    async fn an_attempt_waiting_for_a_slot_gets_the_one_a_success_gives_back() {
        let logins = Arc::new(FailedLogins::new(
            1,
            Duration::from_secs(900),
            Duration::from_secs(900),
        ));
        let Reservation::Slot(slot) = logins.reserve(ip(1)) else {
            panic!("the first attempt has a slot");
        };
        let waiting = {
            let logins = logins.clone();
            tokio::spawn(async move { logins.wait_for_slot(ip(1)).await.is_some() })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(slot);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn an_attempt_waiting_for_a_slot_is_refused_once_the_address_is_blocked() {
        let logins = Arc::new(FailedLogins::new(
            1,
            Duration::from_secs(900),
            Duration::from_secs(900),
        ));
        let Reservation::Slot(slot) = logins.reserve(ip(1)) else {
            panic!("the first attempt has a slot");
        };
        let waiting = {
            let logins = logins.clone();
            tokio::spawn(async move { logins.wait_for_slot(ip(1)).await.is_some() })
        };
        tokio::task::yield_now().await;
        assert!(slot.failed().blocked_now);
        assert!(!waiting.await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passwords_sent_at_once_are_checked_at_most_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let directory = Arc::new(directory(&dir));
        let limit = 3;
        let logins = Arc::new(FailedLogins::new(
            limit,
            Duration::from_secs(900),
            Duration::from_secs(900),
        ));
        let mut guesses = tokio::task::JoinSet::new();
        for n in 0..12 {
            let (logins, directory) = (logins.clone(), directory.clone());
            guesses.spawn(async move {
                let guess = format!("guess-{n}");
                logins
                    .check_password(&directory, attempt(ip(1), &guess))
                    .await
            });
        }
        let (mut rejected, mut blocked) = (0, 0);
        while let Some(check) = guesses.join_next().await {
            match check.unwrap() {
                PasswordCheck::Rejected => rejected += 1,
                PasswordCheck::Blocked => blocked += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((rejected, blocked), (limit, 12 - limit));
        // The right password, after the block, is refused unchecked too.
        assert!(matches!(
            logins
                .check_password(&directory, attempt(ip(1), "pw"))
                .await,
            PasswordCheck::Blocked
        ));
        assert!(matches!(
            logins
                .check_password(&directory, attempt(ip(2), "pw"))
                .await,
            PasswordCheck::Accepted(_)
        ));
    }
}
