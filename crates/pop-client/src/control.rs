//! The control socket `<data_dir>/run/pop-client.sock`, through which
//! `qsctl fetch` asks for a poll now.
//!
//! One request line per connection, then answers until the server closes:
//!
//! ```text
//! C: FETCH                     (every account)   or   FETCH family
//! S: QUEUED family             (one per account, at once)
//! S: POLLING                   (every poll is asked for)
//! S: OK family: 2 delivered, 0 duplicates, 2 deleted, 0 kept on the server
//! S: ERR office: login refused: [AUTH] invalid password
//! ```
//!
//! `ERR text` alone answers a request that names no account or is malformed.
//! A poll already running is not interrupted: the request is served by the
//! next one, which starts as soon as it ends. The socket is mode 0660.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qs_service::shutdown::Shutdown;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::account::Trigger;
use crate::notice::one_line;

/// The socket's path under the data folder.
pub const SOCKET: &str = "run/pop-client.sock";

/// Longest request line.
const MAX_REQUEST: u64 = 1024;

/// The socket path of an installation.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Binds the socket, replacing a stale one (the caller holds the lock that
/// makes this pop-client the only one).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves requests until shutdown. `accounts` maps each name to its task.
pub async fn serve(
    listener: UnixListener,
    accounts: BTreeMap<String, mpsc::Sender<Trigger>>,
    mut shutdown: Shutdown,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let accounts = accounts.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &accounts).await {
                debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn answer(
    stream: UnixStream,
    accounts: &BTreeMap<String, mpsc::Sender<Trigger>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return Ok(());
    }
    let request = line.trim_end_matches(['\r', '\n']);
    let wanted: Vec<(&String, &mpsc::Sender<Trigger>)> = match request.split_once(' ') {
        None if request.eq_ignore_ascii_case("FETCH") => accounts.iter().collect(),
        Some((verb, name)) if verb.eq_ignore_ascii_case("FETCH") => {
            match accounts.get_key_value(name.trim()) {
                Some(found) => vec![found],
                None => {
                    let known: Vec<&str> = accounts.keys().map(String::as_str).collect();
                    let text = format!(
                        "ERR no account named \"{}\" (accounts: {})\n",
                        one_line(name.trim()),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    );
                    return write.write_all(text.as_bytes()).await;
                }
            }
        }
        _ => return write.write_all(b"ERR expected FETCH [NAME]\n").await,
    };
    if wanted.is_empty() {
        return write
            .write_all(b"ERR no [[pop_client.account]] in the config\n")
            .await;
    }
    let mut pending = Vec::new();
    for (name, sender) in wanted {
        let (reply, result) = oneshot::channel();
        if sender.send(Trigger { reply }).await.is_err() {
            write
                .write_all(format!("ERR {}: the account is stopping\n", one_line(name)).as_bytes())
                .await?;
            continue;
        }
        write
            .write_all(format!("QUEUED {}\n", one_line(name)).as_bytes())
            .await?;
        pending.push((name, result));
    }
    write.write_all(b"POLLING\n").await?;
    for (name, result) in pending {
        let text = match result.await {
            Ok(text) => one_line(&text),
            Err(_) => format!("ERR {}: stopped before the poll ended", one_line(name)),
        };
        write.write_all(format!("{text}\n").as_bytes()).await?;
    }
    write.shutdown().await
}
