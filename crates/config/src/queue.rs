//! `[queue]`: where the queue lives and how mail is retried.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reader::Section;

/// `[queue]`: where the queue lives and how mail is retried.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueConfig {
    /// core-queue's Unix socket.
    pub socket: PathBuf,
    /// The sled database folder.
    pub store: PathBuf,
    /// Optional TCP listener of core-queue.
    pub tcp_listen: Option<SocketAddr>,
    /// Optional remote core-queue for the clients.
    pub tcp_connect: Option<SocketAddr>,
    /// File with the TCP shared secret.
    pub secret_file: Option<PathBuf>,
    /// How long a client retries while core-queue is unreachable (`client_retry_secs`).
    pub client_retry: Duration,
    /// The wait before the first retry (`first_retry_secs`).
    pub first_retry: Duration,
    /// The longest interval between retries (`max_retry_interval_secs`).
    pub max_retry_interval: Duration,
    /// The age after which undelivered mail is bounced (`give_up_after_secs`).
    pub give_up_after: Duration,
    /// The age at which a delay warning is sent (`delay_warning_secs`; `None`,
    /// written 0: never).
    pub delay_warning: Option<Duration>,
    /// Copy every bounce to the postmaster.
    pub bounce_copy_to_postmaster: bool,
    /// The application drop folder.
    pub maildrop: PathBuf,
    /// Periodic scan interval of the drop folder (`maildrop_scan_secs`).
    pub maildrop_scan: Duration,
}

/// Reads `[queue]`; the paths are resolved against `data_dir`.
pub(crate) fn read(root: &Section<'_>, data_dir: &Path) -> QueueConfig {
    let data = |p: PathBuf| data_dir.join(p);
    let q = root.section("queue");
    let day = 86_400;
    let queue = QueueConfig {
        socket: data(q.path("socket", "run/queue.sock")),
        store: data(q.path("store", "queue")),
        tcp_listen: q.socket_addr("tcp_listen", ""),
        tcp_connect: q.socket_addr("tcp_connect", ""),
        secret_file: q.optional_path("secret_file").map(data),
        client_retry: q.secs("client_retry_secs", 30, 1, 3600),
        first_retry: q.secs("first_retry_secs", 300, 1, day),
        max_retry_interval: q.secs("max_retry_interval_secs", 3600, 1, day),
        give_up_after: q.secs("give_up_after_secs", 5 * day, 60, 60 * day),
        delay_warning: Some(q.secs("delay_warning_secs", 4 * 3600, 0, 60 * day))
            .filter(|after| !after.is_zero()),
        bounce_copy_to_postmaster: q.bool("bounce_copy_to_postmaster", true),
        maildrop: data(q.path("maildrop", "maildrop")),
        maildrop_scan: q.secs("maildrop_scan_secs", 10, 1, 3600),
    };
    if (queue.tcp_listen.is_some() || queue.tcp_connect.is_some()) && queue.secret_file.is_none() {
        q.problem(
            "secret_file",
            "the TCP transport (tcp_listen or tcp_connect) needs a shared secret file",
        );
    }
    q.finish();
    queue
}
