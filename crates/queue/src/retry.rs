//! The retry schedule for temporary failures.

use std::time::Duration;

/// How temporary failures are retried, and when the sender hears about it.
///
/// After the n-th failed attempt a recipient waits `first_retry * 2^(n-1)`,
/// capped at `max_interval` (with the defaults: 5, 10, 20, 40, 60, 60 ...
/// minutes). A temporary failure of a message older than `give_up_after`
/// counts as permanent ("expired"). Once the message is older than
/// `delay_warning_after` and still has pending recipients, one delay warning
/// is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt (default 5 minutes).
    pub first_retry: Duration,
    /// The longest wait between attempts (default 1 hour).
    pub max_interval: Duration,
    /// The age after which a temporary failure becomes permanent
    /// (default 5 days).
    pub give_up_after: Duration,
    /// The age at which the sender gets one delay warning (default 4 hours;
    /// `None`: never).
    pub delay_warning_after: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_retry: Duration::from_secs(5 * 60),
            max_interval: Duration::from_secs(60 * 60),
            give_up_after: Duration::from_secs(5 * 24 * 60 * 60),
            delay_warning_after: Some(Duration::from_secs(4 * 60 * 60)),
        }
    }
}

impl RetryPolicy {
    /// The wait after `attempts` failed attempts (1 for the first failure).
    pub fn delay_after(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(63);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.first_retry
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_interval)
    }

    /// True when a message received at `received_at` is too old to retry at
    /// `now` (seconds since the epoch).
    pub fn expired(&self, received_at: u64, now: u64) -> bool {
        now.saturating_sub(received_at) >= self.give_up_after.as_secs()
    }

    /// True when a message received at `received_at` is old enough at `now`
    /// for a delay warning.
    pub fn warning_due(&self, received_at: u64, now: u64) -> bool {
        self.delay_warning_after
            .is_some_and(|after| now.saturating_sub(received_at) >= after.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_doubles_then_caps() {
        let p = RetryPolicy::default();
        let minutes: Vec<u64> = (1..=8).map(|n| p.delay_after(n).as_secs() / 60).collect();
        assert_eq!(minutes, vec![5, 10, 20, 40, 60, 60, 60, 60]);
        assert_eq!(p.delay_after(u32::MAX), p.max_interval);
        assert_eq!(p.delay_after(0), p.first_retry);
    }

    #[test]
    fn expiry_and_warning_ages() {
        let p = RetryPolicy::default();
        assert!(!p.expired(1000, 1000 + 5 * 86400 - 1));
        assert!(p.expired(1000, 1000 + 5 * 86400));
        assert!(!p.warning_due(1000, 1000 + 4 * 3600 - 1));
        assert!(p.warning_due(1000, 1000 + 4 * 3600));
        let never = RetryPolicy {
            delay_warning_after: None,
            ..p
        };
        assert!(!never.warning_due(0, u64::MAX));
    }
}
