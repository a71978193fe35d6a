//! pop-client — Quicksilver's POP3 client (Mercury's MercuryD).
//!
//! # Description
//! Fetches the mail of any number of remote POP3 accounts (the provider's
//! mailboxes) and hands each message to core-queue for the right local
//! people. It opens no port and needs no DNS record: it calls out.
//!
//! Each account has its own task ([`account`]) that polls on its
//! `interval_secs` with a little jitter, and at once when `qsctl fetch [NAME]`
//! asks through the control socket `<data_dir>/run/pop-client.sock`
//! ([`control`]). One slow or broken account never delays another.
//!
//! An account either delivers everything to one address (`deliver_to`,
//! single-user mode) or distributes a domain mailbox by its header
//! ([`distribute`]): the envelope headers the account lists, in order, then
//! To, Cc, Bcc, Resent-To, Resent-Cc and Received `for` clauses; every
//! distinct local recipient gets one copy, and mail for nobody goes to
//! `default_user` (else the postmaster) with an `X-Quicksilver-Fetch` field
//! saying why. Each queued message gets a Received field recording the
//! fetch; the provider's `Return-Path` becomes the envelope sender (core-queue
//! writes it back on delivery) and its `Delivered-To` fields are renamed
//! `X-Original-Delivered-To`, so core-queue's loop check does not take the
//! provider's own delivery for a loop.
//!
//! # Safety and duplicates
//! For each message: RETR, a durable enqueue with a request key derived from
//! the account, UIDL and bytes (`qs_queue::Client::enqueue_with_key`), durable records in the queue's
//! state area ([`state`]), and only then DELE; QUIT last ([`fetch`]). A crash
//! or a dropped connection at any point delivers nothing twice: the records
//! let the next poll delete what was delivered without fetching it again, and
//! a message fetched again is enqueued with the same key, which core-queue
//! answers with the first queue id. A Message-ID already delivered from the
//! account to a recipient in the last 30 days is not delivered to them again
//! (the whole batch and every poll, not only neighbours); a server without
//! UIDL is handled by Message-ID alone, and the log says so.
//! `keep_on_server` fetches only new UIDLs and deletes each message
//! `delete_after_days` after its first fetch (0 = never). A message over
//! `max_message_size` (from LIST, before reading it) stays on the server and
//! the postmaster is told once.
//!
//! # Failures
//! Every failure (connection, TLS, timeout, login refused, -ERR on RETR) is
//! logged with the account name and retried at the next interval. A failure
//! that lasts `report_failure_after_secs` (a day) is reported to the
//! postmaster once, and again when it clears.
//!
//! # Standards
//! RFC 1939 (POP3), RFC 2449 (CAPA), RFC 2595 (STLS), RFC 5034 and RFC 4616
//! (AUTH PLAIN), RFC 8314 (implicit TLS), RFC 5322 (Received), RFC 9228
//! (Delivered-To), RFC 3834 (Auto-Submitted on notices).
//!
//! # Security
//! TLS is rustls with Mozilla's roots plus `tls_ca_file`; the certificate and
//! the host name are checked unless `tls_verify = false`. `tls = "starttls"`
//! never falls back to plaintext, and every byte received before the
//! handshake is thrown away. AUTH PLAIN is used when offered, else USER/PASS.
//! Passwords live in `qs_directory::Secret` and are never logged; the start
//! warns when the config file holds passwords and others can read it.
//!
//! # Limits
//! `max_message_size` (52428800, at most the queue's 256 MiB), `timeout_secs`
//! (60) for every wait on the server, status lines of 4096 octets, listings
//! of 64 MiB. A message is held once in memory, with room for its trace
//! fields reserved from LIST's size.
//!
//! # Config
//! `hostname`, `data_dir`, `[directory]`, `[queue]` (the client), `[log]`, and
//! every `[[pop_client.account]]`: `name`, `host`, `port`, `tls`, `username`,
//! `password` / `password_file`, `interval_secs`, `deliver_to`,
//! `default_user`, `headers`, `only_listed_headers`, `keep_on_server`,
//! `delete_after_days`, `max_message_size`, `tls_ca_file`, `tls_verify`,
//! `timeout_secs`, `report_failure_after_secs`. The run file
//! `<data_dir>/run/pop-client.json` names the process (no listeners); the
//! lock `<data_dir>/run/pop-client.lock` keeps a second pop-client away.

pub mod account;
pub mod connection;
pub mod control;
pub mod distribute;
pub mod fetch;
pub mod notice;
pub mod pop3;
pub mod state;
pub mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use qs_config::{Config, PasswordSource};
use qs_queue::{Client, ClientOptions};
use qs_service::shutdown::Shutdown;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::fetch::{Account, Context};

/// The module's name: run file, logs, queue origins.
pub const MODULE: &str = fetch::MODULE;

/// How long the accounts have to finish their poll at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Why pop-client cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PopClientError {
    /// The user directory cannot be opened.
    #[error("{0} (run `qsctl init` to create it)")]
    Directory(#[from] qs_directory::Error),
    /// The queue client cannot be set up.
    #[error(transparent)]
    Service(#[from] qs_service::ServiceError),
    /// Another pop-client runs on this data folder.
    #[error("another pop-client is running ({} is locked)", path.display())]
    AlreadyRunning {
        /// The lock file.
        path: PathBuf,
    },
    /// A file under `<data_dir>/run` cannot be made.
    #[error("cannot create {}: {source}", path.display())]
    RunDir {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// Polls every account until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), PopClientError> {
    let run_dir = config.data_dir.join("run");
    let run_error = |path: PathBuf| move |source| PopClientError::RunDir { path, source };
    std::fs::create_dir_all(&run_dir).map_err(run_error(run_dir.clone()))?;
    let lock_path = run_dir.join("pop-client.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(run_error(lock_path.clone()))?;
    if lock.try_lock().is_err() {
        return Err(PopClientError::AlreadyRunning { path: lock_path });
    }

    warn_about_secrets(&config);
    let directory = qs_service::directory::open(&config.directory)?;
    let queue = qs_service::queue::client(&config)?;
    // Keyed enqueues carry whole fetched messages: give them a longer answer time.
    let keyed = Client::new(
        queue.endpoint().clone(),
        ClientOptions {
            retry_for: config.queue.client_retry,
            io_timeout: Duration::from_secs(120),
            ..ClientOptions::default()
        },
    );
    let ctx = Arc::new(Context {
        hostname: config.hostname.clone(),
        keyed,
        queue,
        directory: Arc::new(directory),
    });

    let mut senders = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for a in &config.pop_client.accounts {
        let account = Arc::new(Account::from_config(a));
        if a.max_message_size > account.max_message_size {
            warn!(account = %a.name, max_message_size = a.max_message_size,
                used = account.max_message_size, "max_message_size is above what the queue takes");
        }
        if a.tls == qs_config::ClientTls::None {
            warn!(account = %a.name, "tls = \"none\": the password crosses the network in clear");
        }
        if !a.tls_verify {
            warn!(account = %a.name, "tls_verify = false: the server's certificate is not checked");
        }
        let (tx, rx) = mpsc::channel(16);
        senders.insert(a.name.clone(), tx);
        tasks.spawn(account::run(account, ctx.clone(), rx, shutdown.clone()));
    }

    let socket = control::socket_path(&config.data_dir);
    let listener = control::bind(&socket).map_err(run_error(socket.clone()))?;
    let control_task = tokio::spawn(control::serve(listener, senders, shutdown.clone()));
    qs_service::runfile::write(&config.data_dir, MODULE, &BTreeMap::new()).map_err(run_error(
        qs_service::runfile::path(&config.data_dir, MODULE),
    ))?;
    if config.pop_client.accounts.is_empty() {
        info!("no [[pop_client.account]] in the config: nothing to fetch");
    } else {
        info!(
            accounts = config.pop_client.accounts.len(),
            socket = %socket.display(),
            "started"
        );
    }

    let mut stop = shutdown.clone();
    stop.wait().await;
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("accounts still polling after {STOP_GRACE:?}: stopping them");
        tasks.abort_all();
    }
    control_task.abort();
    let _ = std::fs::remove_file(&socket);
    qs_service::runfile::remove(&config.data_dir, MODULE);
    drop(lock);
    info!("stopped");
    Ok(())
}

/// Warns when passwords can be read by other users: in the config file, or
/// in a password file.
fn warn_about_secrets(config: &Config) {
    use std::os::unix::fs::PermissionsExt;
    if config.readable_by_others() {
        warn!(file = %config.file.display(),
            "the config file holds passwords and other users can read it (chmod 600 it, or use password_file)");
    }
    for a in &config.pop_client.accounts {
        if let PasswordSource::File(path) = &a.password
            && std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
        {
            warn!(account = %a.name, file = %path.display(),
                "the password file can be read by other users (chmod 600 it)");
        }
    }
}
