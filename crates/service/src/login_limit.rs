//! Failed logins per client address, shared by every server that checks
//! passwords (SMTP AUTH, POP3, IMAP): after `max_failures` failures within
//! `window`, the address is refused every login for `block`, without the
//! password even being checked, so guessing from one address is slow and
//! costs the server nothing.
//!
//! Memory is bounded: past [`MAX_TRACKED_ADDRESSES`] the records that no longer
//! matter are dropped (a client cannot grow the table without limit).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::*;

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
