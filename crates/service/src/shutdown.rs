//! The shutdown signal. Every task holds a [`Shutdown`] and finishes its work
//! when it fires. It fires in one of two ways:
//!
//! - a stop (SIGTERM, SIGINT): stop accepting, let sessions finish what they
//!   are in the middle of, exit;
//! - a hand-over (SIGHUP, once a successor process serves the listeners): stop
//!   accepting at once, but let open sessions go on for a grace period, so that
//!   a client between two commands is not cut off by a restart.
//!
//! Accept loops and workers wait with [`Shutdown::wait`]; sessions wait with
//! [`Shutdown::wait_sessions_end`].

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Where the daemon is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    /// A successor serves new connections since `at`; sessions may go on until
    /// `at + grace`.
    HandedOver {
        at: Instant,
        grace: Duration,
    },
    Stopping,
}

/// A cloneable handle that tells when the daemon should stop.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<State>,
}

/// The side that fires the shutdown.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<State>,
}

/// A new, unfired shutdown pair.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(State::Running);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// True once a stop or a hand-over has fired.
    pub fn is_fired(&self) -> bool {
        *self.tx.borrow() != State::Running
    }

    /// Asks every holder of the matching [`Shutdown`] to stop now.
    pub fn fire(&self) {
        let _ = self.tx.send(State::Stopping);
    }

    /// A successor has taken over: stop accepting, and let sessions go on for
    /// `grace`. Does nothing once a stop has fired.
    pub fn hand_over(&self, grace: Duration) {
        self.tx.send_if_modified(|state| {
            if *state == State::Running {
                *state = State::HandedOver {
                    at: Instant::now(),
                    grace,
                };
                true
            } else {
                false
            }
        });
    }
}

impl Shutdown {
    /// True once the shutdown has fired (stop or hand-over).
    pub fn is_fired(&self) -> bool {
        *self.rx.borrow() != State::Running
    }

    /// True once this daemon has handed over to a successor.
    pub fn is_handed_over(&self) -> bool {
        matches!(*self.rx.borrow(), State::HandedOver { .. })
    }

    /// Waits until the shutdown fires (at once if it already has).
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|state| *state != State::Running).await;
    }

    /// True once open sessions should end: at a stop, or when the grace period
    /// of a hand-over is over.
    pub fn sessions_must_end(&self) -> bool {
        match *self.rx.borrow() {
            State::Running => false,
            State::Stopping => true,
            State::HandedOver { at, grace } => Instant::now() >= at + grace,
        }
    }

    /// How much longer than usual sessions may take to drain: the grace period
    /// after a hand-over, nothing after a stop.
    pub fn extra_drain_time(&self) -> Duration {
        match *self.rx.borrow() {
            State::HandedOver { at, grace } => {
                (at + grace).saturating_duration_since(Instant::now())
            }
            State::Running | State::Stopping => Duration::ZERO,
        }
    }

    /// Waits until open sessions should end (see [`Shutdown::sessions_must_end`]).
    pub async fn wait_sessions_end(&mut self) {
        loop {
            let state = *self.rx.borrow_and_update();
            match state {
                State::Stopping => return,
                State::HandedOver { at, grace } => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at + grace) => return,
                        changed = self.rx.changed() => {
                            if changed.is_err() {
                                tokio::time::sleep_until(at + grace).await;
                                return;
                            }
                        }
                    }
                }
                State::Running => {
                    if self.rx.changed().await.is_err() {
                        // The trigger is gone without firing: never.
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

/// A shutdown that fires on SIGTERM or SIGINT. Must be called inside a runtime.
/// Daemons that can restart use [`crate::restart::on_signals`] instead.
pub fn on_signals() -> std::io::Result<Shutdown> {
    use tokio::signal::unix::{SignalKind, signal};
    let (trigger, shutdown) = channel();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        trigger.fire();
    });
    Ok(shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_holder_sees_the_shutdown() {
        let (trigger, shutdown) = channel();
        let mut a = shutdown.clone();
        let mut b = shutdown;
        assert!(!a.is_fired());
        let waiter = tokio::spawn(async move { b.wait().await });
        trigger.fire();
        a.wait().await;
        waiter.await.unwrap();
        assert!(a.is_fired());
        assert!(a.sessions_must_end());
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_hand_over_sessions_get_the_grace_period() {
        let (trigger, shutdown) = channel();
        let mut accept = shutdown.clone();
        let mut session = shutdown.clone();
        trigger.hand_over(Duration::from_secs(30));
        accept.wait().await;
        assert!(shutdown.is_handed_over());
        assert!(!shutdown.sessions_must_end());
        let started = Instant::now();
        session.wait_sessions_end().await;
        assert_eq!(started.elapsed().as_secs(), 30);
        assert!(shutdown.sessions_must_end());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_the_grace_period_ends_sessions_at_once() {
        let (trigger, shutdown) = channel();
        let mut session = shutdown.clone();
        trigger.hand_over(Duration::from_secs(30));
        let waiter = tokio::spawn(async move {
            let started = Instant::now();
            session.wait_sessions_end().await;
            started.elapsed()
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        trigger.fire();
        let waited = waiter.await.unwrap();
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        // A hand-over after a stop changes nothing.
        trigger.hand_over(Duration::from_secs(30));
        assert!(shutdown.sessions_must_end());
    }
}
