//! core-queue — Quicksilver's core module: the owner of the queue.
//!
//! # Description
//! core-queue is the only process that opens the queue database. Every other
//! module reaches it through the `qs-queue` client over `[queue] socket` (or TCP
//! with a shared secret). For each new message it:
//!
//! 1. routes every recipient with the user directory: a local user's mail goes to
//!    their Maildir (done here, by the local delivery workers); an alias or a
//!    forward is replaced by its targets; a list address becomes a `list` job for
//!    list-server; any other domain an `outbound` job for smtp-relay;
//! 2. stores and flushes it to disk (group commit) before answering, so the
//!    producer may then answer `250`, send `DELE` or remove a dropped file;
//! 3. retries temporary failures on the configured back-off and, on a permanent
//!    failure or when the retry period ends, sends a delivery status notification
//!    (RFC 3464) from `<>` to the sender with a copy to the postmaster. A message
//!    from `<>` never causes a bounce: its failures go to the postmaster alone. A
//!    delay warning is sent once after `delay_warning_secs`. A report returns
//!    the original's header, never its body.
//!
//! It also takes files from the application drop folder ([`maildrop`]).
//!
//! # Loops
//! An alias chain deeper than 10, an alias loop, a recipient already named in a
//! `Delivered-To` field, or more than 100 `Received` fields fail permanently
//! (`qs_queue::message::LoopTrace`, which smtp-server applies at the end of
//! DATA too). A loop or a policy refusal (`X.4.6`, `X.7.*`) of mail from an
//! unauthenticated SMTP client is reported to the postmaster alone, never to a
//! sender who may be forged (backscatter).
//!
//! # Limits
//! A queue listing and a state scan return at most 1000 entries; a lease lasts
//! at most one day; an enqueue request key over 128 bytes is ignored.
//!
//! # Durability
//! Local delivery is Maildir tmp → fsync → rename → fsync, idempotent per
//! (queue id, recipient), so a crash anywhere delivers at most once more, never
//! twice into a mailbox and never zero times.
//!
//! # Config
//! `data_dir`, `hostname`, `[directory]`, and `[queue]`: `socket`, `store`,
//! `tcp_listen`, `secret_file`, the retry keys, `bounce_copy_to_postmaster`,
//! `maildrop`, `maildrop_scan_secs`.

pub mod core;
pub mod dsn;
pub mod handler;
pub mod local;
pub mod maildrop;
pub mod route;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use qs_config::Config;
use qs_directory::Directory;
use qs_queue::{RetryPolicy, Secret, Store, StoreOptions};
use qs_service::shutdown::Shutdown;
use tokio::net::UnixListener;
use tracing::{error, info};

use crate::core::Core;
use crate::handler::CoreHandler;
use crate::route::Router;
use qs_directory::lists::ListIndex;

/// Local delivery workers.
const LOCAL_WORKERS: usize = 4;

/// Why core-queue cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The queue database cannot be opened (e.g. another core-queue holds it).
    #[error(transparent)]
    Store(#[from] qs_queue::StoreError),
    /// The user directory cannot be opened.
    #[error("{0} (run `qsctl init` to create it)")]
    Directory(#[from] qs_directory::Error),
    /// A folder or socket cannot be set up.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path concerned.
        path: std::path::PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Another process already serves the socket.
    #[error("another core-queue is already serving {}", path.display())]
    SocketInUse {
        /// The socket.
        path: std::path::PathBuf,
    },
    /// The TCP listener cannot run.
    #[error(transparent)]
    Service(#[from] qs_service::ServiceError),
}

/// The retry schedule from `[queue]`.
pub fn retry_policy(config: &Config) -> RetryPolicy {
    let q = &config.queue;
    RetryPolicy {
        first_retry: q.first_retry,
        max_interval: q.max_retry_interval,
        give_up_after: q.give_up_after,
        delay_warning_after: q.delay_warning,
    }
}

/// How core-queue runs, beyond the config file (for embedding and benchmarks).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Local delivery workers; 0 queues local mail without delivering it.
    pub local_workers: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            local_workers: LOCAL_WORKERS,
        }
    }
}

/// Runs core-queue until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), CoreError> {
    run_with(config, RunOptions::default(), shutdown).await
}

/// Runs core-queue with `options` until `shutdown` fires.
pub async fn run_with(
    config: Config,
    options: RunOptions,
    shutdown: Shutdown,
) -> Result<(), CoreError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| CoreError::Io { what, path, source }
    };
    let socket_dir = config
        .queue
        .socket
        .parent()
        .unwrap_or(&config.data_dir)
        .to_path_buf();
    for dir in [&config.data_dir, &socket_dir, &config.data_path("lists")] {
        std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    }

    let directory = qs_service::directory::open(&config.directory)?;
    let store = Store::open(&config.queue.store, &StoreOptions::default())?;
    info!(store = %config.queue.store.display(), "queue database opened");

    let core = Arc::new(new_core(&config, directory, store));
    // This process is the only local worker: leases of an earlier one are stale.
    core.store.release_all(&qs_queue::JobClass::local())?;
    let handler = Arc::new(CoreHandler::new(core.clone()));

    let socket = &config.queue.socket;
    remove_stale_socket(socket).await?;
    let unix = UnixListener::bind(socket).map_err(io("cannot listen on", socket))?;
    info!(socket = %socket.display(), "serving the queue");

    let mut tasks = tokio::task::JoinSet::new();
    {
        let handler = handler.clone();
        let mut stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) =
                qs_queue::serve(unix, None, handler, async move { stop.wait().await }).await
            {
                error!(error = %e, "queue socket server stopped");
            }
        });
    }
    if let Some(addr) = config.queue.tcp_listen {
        let secret_file = config.queue.secret_file.clone().unwrap_or_default();
        let secret = std::fs::read_to_string(&secret_file)
            .map_err(io("cannot read the queue secret", &secret_file))?;
        let listeners = qs_service::listen::bind_all("queue.tcp_listen", &[addr]).await?;
        for listener in listeners {
            let handler = handler.clone();
            let mut stop = shutdown.clone();
            let secret = Secret::new(secret.trim().to_string());
            tasks.spawn(async move {
                if let Err(e) =
                    qs_queue::serve(
                        listener,
                        Some(secret),
                        handler,
                        async move { stop.wait().await },
                    )
                    .await
                {
                    error!(error = %e, "queue TCP server stopped");
                }
            });
            info!(%addr, "serving the queue over TCP");
        }
    }
    for i in 0..options.local_workers {
        tasks.spawn(local::run_worker(
            core.clone(),
            format!("local-{i}"),
            shutdown.clone(),
        ));
    }
    tasks.spawn(maildrop::run(
        core.clone(),
        config.queue.maildrop.clone(),
        config.queue.maildrop_scan,
        shutdown.clone(),
    ));

    tasks.spawn(housekeeping(core.clone(), shutdown.clone()));

    // Ready: the run file says so to `qsctl status`, `qsctl restart` and systemd.
    let mut bound = std::collections::BTreeMap::new();
    if let Some(addr) = config.queue.tcp_listen {
        bound.insert("queue.tcp_listen".to_string(), vec![addr]);
    }
    let run_file = qs_service::runfile::path(&config.data_dir, "core-queue");
    qs_service::runfile::write(&config.data_dir, "core-queue", &bound)
        .map_err(io("cannot write the run file", &run_file))?;

    let mut stop = shutdown.clone();
    stop.wait().await;
    info!("stopping: finishing current work");
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        error!("some tasks did not finish in time");
        tasks.abort_all();
    }
    if let Err(e) = core.store.commit().await {
        error!(error = %e, "final flush failed");
    }
    let _ = std::fs::remove_file(socket);
    qs_service::runfile::remove(&config.data_dir, "core-queue");
    info!("stopped");
    Ok(())
}

/// The state core-queue's tasks share, over an opened directory and store,
/// with the routing, retry and bounce settings of `config`.
pub fn new_core(config: &Config, directory: Directory, store: Store) -> Core {
    Core {
        store: Arc::new(store),
        router: Router::new(
            Arc::new(directory),
            ListIndex::new(config.data_path("lists")),
        ),
        policy: retry_policy(config),
        hostname: config.hostname.clone(),
        data_dir: config.data_dir.clone(),
        bounce_copy_to_postmaster: config.queue.bounce_copy_to_postmaster,
        local_work: tokio::sync::Notify::new(),
        keys_in_flight: std::sync::Mutex::default(),
    }
}

/// Periodic chores: forget old enqueue request keys.
async fn housekeeping(core: Arc<Core>, mut shutdown: Shutdown) {
    loop {
        match core.prune_request_keys() {
            Ok(0) => {}
            Ok(n) => info!(pruned = n, "old request keys forgotten"),
            Err(e) => error!(error = %e, "cannot prune request keys"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Removes a socket file left by a process that is gone; refuses if someone
/// still answers on it.
async fn remove_stale_socket(path: &Path) -> Result<(), CoreError> {
    if !path.exists() {
        return Ok(());
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(CoreError::SocketInUse {
            path: path.to_path_buf(),
        });
    }
    std::fs::remove_file(path).map_err(|source| CoreError::Io {
        what: "cannot remove the stale socket",
        path: path.to_path_buf(),
        source,
    })
}
