//! The queue client every module uses, built from `[queue]`: the Unix socket,
//! or core-queue on another host over TCP with the shared secret; and the
//! loop of a worker that leases jobs of one class ([`lease_jobs`]).

use std::future::Future;
use std::time::Duration;

use qs_config::Config;
use qs_queue::{Client, ClientOptions, Endpoint, Job, JobClass, Secret};
use tracing::warn;

use crate::ServiceError;
use crate::shutdown::Shutdown;

/// A worker with nothing to do asks again after this, doubling up to
/// [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(50);
/// See [`FIRST_POLL`]; also the pause after the queue could not be reached.
const MAX_POLL: Duration = Duration::from_secs(1);
/// At a stop, how long a lease request under way may still take.
const LEASE_AT_STOP: Duration = Duration::from_secs(2);

/// A client for the installation's core-queue.
pub fn client(config: &Config) -> Result<Client, ServiceError> {
    let endpoint = match config.queue.tcp_connect {
        Some(addr) => {
            let path = config.queue.secret_file.clone().unwrap_or_default();
            let secret = std::fs::read_to_string(&path)
                .map_err(|source| ServiceError::QueueSecret { path, source })?;
            Endpoint::Tcp {
                addr: addr.to_string(),
                secret: Secret::new(secret.trim().to_string()),
            }
        }
        None => Endpoint::Unix(config.queue.socket.clone()),
    };
    Ok(Client::new(
        endpoint,
        ClientOptions {
            retry_for: config.queue.client_retry,
            ..ClientOptions::default()
        },
    ))
}

/// Leases jobs of `class` one at a time as `worker`, for `lease` each, and
/// hands each to `handle`, until `shutdown` fires. A lease request under way
/// when the stop comes may still finish (for a moment), so that a job the
/// queue has just leased is handled (or released by `handle`) rather than
/// left until its lease runs out.
pub async fn lease_jobs<F, Fut>(
    client: &Client,
    class: &JobClass,
    worker: &str,
    lease: Duration,
    shutdown: &Shutdown,
    mut handle: F,
) where
    F: FnMut(Job) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut pause = FIRST_POLL;
    let mut stop = shutdown.clone();
    while !shutdown.is_fired() {
        let leasing = client.lease(class, worker, lease);
        tokio::pin!(leasing);
        let leased = tokio::select! {
            leased = &mut leasing => leased,
            _ = stop.wait() => match tokio::time::timeout(LEASE_AT_STOP, &mut leasing).await {
                Ok(leased) => leased,
                Err(_) => break,
            },
        };
        match leased {
            Ok(Some(job)) => {
                pause = FIRST_POLL;
                handle(job).await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait() => break,
                }
                pause = (pause * 2).min(MAX_POLL);
            }
            Err(e) => {
                warn!(%class, error = %e, "cannot lease jobs from the queue");
                tokio::select! {
                    _ = tokio::time::sleep(MAX_POLL) => {}
                    _ = stop.wait() => break,
                }
            }
        }
    }
}
