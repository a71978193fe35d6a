//! Connections kept for reuse, the concurrency limits, and the "down" marks.
//!
//! - **Limits**: a delivery holds a permit of its destination (at most
//!   `max_connections_per_host` at once) and one of the whole relay (at most
//!   `max_connections`).
//! - **Reuse**: after a clean transaction the session goes back to its
//!   destination's idle list; the next delivery there takes the most recently
//!   used one. Idle sessions are closed (QUIT) after [`IDLE_TIME`], and at most
//!   `max_connections_per_host` are kept per destination.
//! - **Down marks**: a host address that could not be reached is skipped for
//!   `down_period_secs`, so a dead host costs one connection timeout per period
//!   rather than one per message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client::Session;

/// How long an unused connection is kept open.
pub const IDLE_TIME: Duration = Duration::from_secs(10);

/// The permits of one delivery; released on drop.
#[derive(Debug)]
pub struct Permit {
    _host: Option<OwnedSemaphorePermit>,
    _all: Option<OwnedSemaphorePermit>,
}

/// Pools, limits and marks, shared by every delivery.
#[derive(Debug)]
pub struct Pool {
    all: Arc<Semaphore>,
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    idle: Mutex<HashMap<String, Vec<Session>>>,
    down: Mutex<HashMap<SocketAddr, (Instant, String)>>,
    down_period: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    /// A pool with these limits (each at least 1).
    pub fn new(max_connections: usize, per_host: usize, down_period: Duration) -> Pool {
        Pool {
            all: Arc::new(Semaphore::new(max_connections.max(1))),
            per_host: per_host.max(1),
            hosts: Mutex::default(),
            idle: Mutex::default(),
            down: Mutex::default(),
            down_period,
        }
    }

    /// Waits for a delivery slot to `destination` (its own limit first, then
    /// the relay's).
    pub async fn permit(&self, destination: &str) -> Permit {
        let host = {
            let mut hosts = lock(&self.hosts);
            hosts
                .entry(destination.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
                .clone()
        };
        // The semaphores are never closed, so acquiring does not fail.
        let host = host.acquire_owned().await.ok();
        let all = self.all.clone().acquire_owned().await.ok();
        Permit {
            _host: host,
            _all: all,
        }
    }

    /// The most recently used idle session to `destination`, if one is young
    /// enough.
    pub fn take_idle(&self, destination: &str) -> Option<Session> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(destination)?;
        while let Some(session) = list.pop() {
            if session.idle_since.elapsed() < IDLE_TIME {
                return Some(session);
            }
            // Too old: dropped (the server will have given up on it too).
        }
        None
    }

    /// Keeps `session` for the next delivery to `destination`; returns it when
    /// there are already enough idle ones (the caller closes it).
    pub fn put_idle(&self, destination: &str, session: Session) -> Option<Session> {
        let mut idle = lock(&self.idle);
        let list = idle.entry(destination.to_string()).or_default();
        if list.len() >= self.per_host {
            return Some(session);
        }
        list.push(session);
        None
    }

    /// Idle sessions past [`IDLE_TIME`] (to close), and forgets limits of
    /// destinations nobody uses.
    pub fn expired(&self) -> Vec<Session> {
        let mut out = Vec::new();
        {
            let mut idle = lock(&self.idle);
            for list in idle.values_mut() {
                let (old, young): (Vec<Session>, Vec<Session>) = std::mem::take(list)
                    .into_iter()
                    .partition(|s| s.idle_since.elapsed() >= IDLE_TIME);
                *list = young;
                out.extend(old);
            }
            idle.retain(|_, list| !list.is_empty());
        }
        lock(&self.hosts).retain(|_, sem| Arc::strong_count(sem) > 1);
        let now = Instant::now();
        lock(&self.down).retain(|_, (until, _)| *until > now);
        out
    }

    /// Every idle session (at shutdown).
    pub fn drain(&self) -> Vec<Session> {
        lock(&self.idle)
            .drain()
            .flat_map(|(_, list)| list)
            .collect()
    }

    /// Why `addr` is marked down, while it is.
    pub fn down_reason(&self, addr: SocketAddr) -> Option<String> {
        let down = lock(&self.down);
        let (until, reason) = down.get(&addr)?;
        (*until > Instant::now()).then(|| reason.clone())
    }

    /// Marks `addr` down for the configured period (nothing when it is 0).
    pub fn mark_down(&self, addr: SocketAddr, reason: &str) {
        if self.down_period.is_zero() {
            return;
        }
        lock(&self.down).insert(
            addr,
            (Instant::now() + self.down_period, reason.to_string()),
        );
    }

    /// The configured down period.
    pub fn down_period(&self) -> Duration {
        self.down_period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_per_host_limit_holds_while_other_hosts_go_on() {
        let pool = Arc::new(Pool::new(10, 2, Duration::from_secs(60)));
        let a1 = pool.permit("a.example").await;
        let _a2 = pool.permit("a.example").await;
        // A third to a.example waits...
        let p = pool.clone();
        let third = tokio::spawn(async move { p.permit("a.example").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished());
        // ...while b.example is not held up.
        let _b = tokio::time::timeout(Duration::from_secs(1), pool.permit("b.example"))
            .await
            .unwrap();
        drop(a1);
        tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn the_total_limit_holds_across_hosts() {
        let pool = Arc::new(Pool::new(2, 5, Duration::from_secs(60)));
        let _a = pool.permit("a.example").await;
        let b = pool.permit("b.example").await;
        let p = pool.clone();
        let third = tokio::spawn(async move { p.permit("c.example").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn down_marks_last_for_the_period() {
        let addr: SocketAddr = "192.0.2.1:25".parse().unwrap();
        let pool = Pool::new(1, 1, Duration::from_millis(100));
        assert_eq!(pool.down_reason(addr), None);
        pool.mark_down(addr, "connection refused");
        assert_eq!(
            pool.down_reason(addr).as_deref(),
            Some("connection refused")
        );
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(pool.down_reason(addr), None);
        let off = Pool::new(1, 1, Duration::ZERO);
        off.mark_down(addr, "refused");
        assert_eq!(off.down_reason(addr), None);
    }
}
