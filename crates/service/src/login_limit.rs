//! Failed logins per client address, shared by every server that checks
//! passwords (SMTP AUTH, POP3, IMAP): after `max_failures` failures within
//! `window`, the address is refused every login for `block`, without the
//! password even being checked, so guessing from one address is slow and
//! costs the server nothing.
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
}

#[derive(Debug)]
struct Record {
    count: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

/// What recording a failure found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// Failures from this address within the window, this one included.
    pub failures: u32,
    /// True when this failure is the one that blocks the address.
    pub blocked_now: bool,
}

impl FailedLogins {
    /// `max_failures` within `window` block an address for `block`.
    pub fn new(max_failures: u32, window: Duration, block: Duration) -> FailedLogins {
        FailedLogins {
            max_failures,
            window,
            block,
            by_address: Mutex::default(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True while `ip` is refused every login.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut table = self.table();
        match table.get(&ip).and_then(|r| r.blocked_until) {
            Some(until) if until > now => true,
            Some(_) => {
                // The block is over: the address starts afresh.
                table.remove(&ip);
                false
            }
            None => false,
        }
    }

    /// Counts a failed login from `ip`.
    pub fn record(&self, ip: IpAddr) -> Recorded {
        let now = Instant::now();
        let mut table = self.table();
        if table.len() >= MAX_TRACKED_ADDRESSES {
            table.retain(|_, r| {
                r.blocked_until.is_some_and(|until| until > now)
                    || now.duration_since(r.since) < self.window
            });
        }
        let record = table.entry(ip).or_insert(Record {
            count: 0,
            since: now,
            blocked_until: None,
        });
        if now.duration_since(record.since) >= self.window {
            record.count = 0;
            record.since = now;
        }
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
    /// Logs the outcome (never the password; the account only when it
    /// exists, since an unknown login may be a password typed in the wrong
    /// field), counts a failure, and waits `attempt.delay` before returning
    /// a refusal, so that guessing is slow.
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
        if self.is_blocked(ip) {
            info!(
                mechanism,
                "login refused: too many failures from this address"
            );
            tokio::time::sleep(delay).await;
            return PasswordCheck::Blocked;
        }
        let verified = directory.verify(login, &password).await;
        drop(password);
        match verified {
            Ok(Some(user)) => PasswordCheck::Accepted(user),
            Ok(None) => {
                let blocked = self.record(ip).blocked_now;
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

    #[tokio::test]
    async fn a_blocked_address_is_refused_even_the_right_password() {
        let dir = tempfile::tempdir().unwrap();
        let directory =
            Directory::create(dir.path().join("directory.json"), Default::default()).unwrap();
        directory.add_domain("example.test").unwrap();
        directory
            .add_user("alice@example.test", "Alice", &Secret::from("pw"))
            .unwrap();
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
}
