//! One task per account: polls on the account's interval (with a little
//! jitter, so accounts and installations do not all call at the same second)
//! and whenever `qsctl fetch` asks; keeps track of failures and tells the
//! postmaster about a failure that lasts. A slow or broken account delays
//! nobody else: each has its own task and its own connection.

use std::sync::Arc;
use std::time::Duration;

use qs_queue::unix_now;
use qs_service::shutdown::Shutdown;
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::distribute;
use crate::fetch::{self, Account, Context, PollError, Report};
use crate::state::{Failing, FailureStep, State, failure_step};

/// A request for a poll now; the line the caller gets back says how it went.
#[derive(Debug)]
pub struct Trigger {
    /// Where the result goes (`OK name: ...` or `ERR name: ...`).
    pub reply: oneshot::Sender<String>,
}

/// How often `m:` records older than the dedup window are swept.
const PRUNE_EVERY: Duration = Duration::from_secs(86_400);

/// The first poll after start comes within this.
const FIRST_POLL_WITHIN: Duration = Duration::from_secs(1);

/// Runs the account's task until shutdown.
pub async fn run(
    account: Arc<Account>,
    ctx: Arc<Context>,
    mut triggers: mpsc::Receiver<Trigger>,
    mut shutdown: Shutdown,
) {
    let span = info_span!("account", account = %account.name);
    async move {
        let parser = distribute::parser(&account.rules);
        let state = State::new(ctx.queue.clone(), &account.name);
        let mut next = Instant::now() + jitter_up_to(FIRST_POLL_WITHIN);
        let mut last_prune: Option<Instant> = None;
        info!(
            host = %account.host,
            port = account.port,
            tls = ?account.tls,
            mode = if account.deliver_to.is_some() { "single user" } else { "domain mailbox" },
            interval_secs = account.interval.as_secs(),
            "account ready"
        );
        loop {
            let mut waiters = Vec::new();
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                t = triggers.recv() => match t {
                    Some(t) => waiters.push(t),
                    None => return,
                },
                _ = shutdown.wait() => return,
            }
            while let Ok(t) = triggers.try_recv() {
                waiters.push(t);
            }
            if !waiters.is_empty() {
                info!("poll asked for (qsctl fetch)");
            }
            let started = Instant::now();
            let result = fetch::poll(&account, &parser, &ctx, &shutdown).await;
            let line = match &result {
                Ok(report) => {
                    info!(took_ms = started.elapsed().as_millis() as u64, "{report}");
                    format!("OK {}: {report}", account.name)
                }
                Err(e) => {
                    warn!(error = %e, retry_in_secs = account.interval.as_secs(), "poll failed");
                    format!("ERR {}: {e}", account.name)
                }
            };
            track_failures(&account, &ctx, &state, &result).await;
            if result.is_ok() && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                match state.prune_ids(unix_now()).await {
                    Ok(0) => {}
                    Ok(n) => debug!(records = n, "old Message-IDs forgotten"),
                    Err(e) => warn!(error = %e, "cannot sweep old Message-IDs"),
                }
                last_prune = Some(Instant::now());
            }
            for w in waiters {
                let _ = w.reply.send(line.clone());
            }
            next = Instant::now() + interval_with_jitter(account.interval);
        }
    }
    .instrument(span)
    .await
}

/// A little randomness around the interval: up to a tenth, at most 30 s.
fn interval_with_jitter(interval: Duration) -> Duration {
    let spread = (interval / 10).min(Duration::from_secs(30));
    interval - spread / 2 + jitter_up_to(spread)
}

fn jitter_up_to(max: Duration) -> Duration {
    let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// Records the run of failures; tells the postmaster when one has lasted
/// `report_failure_after`, and again when it ends.
async fn track_failures(
    account: &Account,
    ctx: &Context,
    state: &State,
    result: &Result<Report, PollError>,
) {
    let failed = match result {
        Ok(report) => report.refused > 0,
        Err(_) => true,
    };
    let current = match state.failing().await {
        Ok(current) => current,
        Err(e) => {
            error!(error = %e, "cannot read the failure record");
            return;
        }
    };
    let now = unix_now();
    let after = account.report_failure_after.as_secs();
    let what = match result {
        Ok(report) => format!("{} message(s) refused by the server (RETR)", report.refused),
        Err(e) => e.to_string(),
    };
    let outcome = match failure_step(current, failed, now, after) {
        FailureStep::Nothing => Ok(()),
        FailureStep::Start(f) => state.set_failing(f).await.map_err(PollError::from),
        FailureStep::Report(f) => report_failing(account, ctx, f, now, &what)
            .await
            .and(state.set_failing(f).await.map_err(PollError::from)),
        FailureStep::Cleared(f) => {
            info!(
                failing_for_secs = now.saturating_sub(f.since),
                "the account works again"
            );
            let told = if f.reported {
                report_cleared(account, ctx, f, now).await
            } else {
                Ok(())
            };
            told.and(state.clear_failing().await.map_err(PollError::from))
        }
    };
    if let Err(e) = outcome {
        error!(error = %e, "cannot record or report the account's failures");
    }
}

async fn report_failing(
    account: &Account,
    ctx: &Context,
    f: Failing,
    now: u64,
    what: &str,
) -> Result<(), PollError> {
    warn!(
        failing_for_secs = now.saturating_sub(f.since),
        "failing for too long: the postmaster is told"
    );
    let subject = format!(
        "pop-client: account {} has been failing since {}",
        account.name,
        qs_queue::message::rfc5322_date(f.since)
    );
    let body = format!(
        "Mail for account \"{}\" ({}@{}:{}) has not been fetched since\n\
         {}. pop-client keeps trying every {} seconds.\n\n\
         The last error: {what}\n\n\
         You will get one more message when the account works again.",
        account.name,
        account.username,
        account.host,
        account.port,
        qs_queue::message::rfc5322_date(f.since),
        account.interval.as_secs(),
    );
    let key = format!("failing:{}", f.since);
    fetch::send_notice(ctx, &account.name, &key, &subject, &body).await
}

async fn report_cleared(
    account: &Account,
    ctx: &Context,
    f: Failing,
    now: u64,
) -> Result<(), PollError> {
    let subject = format!("pop-client: account {} works again", account.name);
    let body = format!(
        "Mail for account \"{}\" ({}@{}:{}) is fetched again, after failing\n\
         from {} to {}.",
        account.name,
        account.username,
        account.host,
        account.port,
        qs_queue::message::rfc5322_date(f.since),
        qs_queue::message::rfc5322_date(now),
    );
    let key = format!("cleared:{}", f.since);
    fetch::send_notice(ctx, &account.name, &key, &subject, &body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jitter_stays_close_to_the_interval() {
        for _ in 0..100 {
            let d = interval_with_jitter(Duration::from_secs(200));
            assert!(
                d >= Duration::from_secs(190) && d <= Duration::from_secs(210),
                "{d:?}"
            );
            let d = interval_with_jitter(Duration::from_secs(3600));
            assert!(
                d >= Duration::from_secs(3585) && d <= Duration::from_secs(3615),
                "{d:?}"
            );
        }
        assert_eq!(jitter_up_to(Duration::ZERO), Duration::ZERO);
    }
}
