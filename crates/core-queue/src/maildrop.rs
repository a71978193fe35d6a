//! The application drop folder (Mercury's "maildrop"): an application writes a
//! file in `<data_dir>/maildrop/`, then renames it to `NAME.eml`; core-queue
//! queues it and removes the file.
//!
//! - Only `*.eml` files are taken; names starting with `.` or ending in `.tmp`
//!   are in progress and left alone.
//! - The envelope comes from `X-Envelope-From` / `X-Envelope-To` when present
//!   (then removed), else from Sender/From and To/Cc/Bcc, Bcc removed, as
//!   `sendmail -t` does. Line ends become CRLF.
//! - The file is removed only after the enqueue is durable: a crash leaves the
//!   file (queued again later: at worst a duplicate) or the queued message,
//!   never neither.
//! - A file that cannot be used is moved to `maildrop/failed/NAME.eml` with
//!   `NAME.eml.reason` beside it saying why; nothing is deleted unprocessed.
//!
//! Changes are noticed through inotify, and a periodic scan catches anything
//! the notification missed (or a folder on a file system without it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use qs_queue::Origin;
use qs_service::shutdown::Shutdown;
use tracing::{error, info, warn};

use crate::core::Core;
use qs_queue::message;

/// The largest file taken from the folder.
pub const MAX_FILE_SIZE: u64 = 256 * 1024 * 1024;

/// Watches `folder` until shutdown.
pub async fn run(core: Arc<Core>, folder: PathBuf, scan_every: Duration, mut shutdown: Shutdown) {
    if let Err(e) = std::fs::create_dir_all(folder.join("failed")) {
        error!(folder = %folder.display(), error = %e, "cannot create the maildrop folder");
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Only a file appearing (created, or renamed into place) matters. Our
        // own scan opens the folder, which is an event too: reacting to every
        // event would make each scan trigger the next.
        if let Ok(event) = event
            && is_arrival(&event.kind)
        {
            let _ = tx.try_send(());
        }
    })
    .and_then(|mut w| {
        w.watch(&folder, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(folder = %folder.display(), error = %e,
                "no change notification for the maildrop; scanning periodically only");
            None
        }
    };
    info!(folder = %folder.display(), "watching the maildrop folder");
    loop {
        scan_once(&core, &folder).await;
        tokio::select! {
            _ = rx.recv() => {}
            _ = tokio::time::sleep(scan_every) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Whether a change notification can mean a new file to take.
fn is_arrival(kind: &notify::EventKind) -> bool {
    use notify::event::{CreateKind, ModifyKind};
    matches!(
        kind,
        notify::EventKind::Create(CreateKind::File | CreateKind::Any)
            | notify::EventKind::Modify(ModifyKind::Name(_))
            | notify::EventKind::Modify(ModifyKind::Any)
    )
}

/// Takes every ready file in `folder` once; returns how many were queued.
pub async fn scan_once(core: &Core, folder: &Path) -> usize {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(folder) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_ready(p))
            .collect(),
        Err(e) => {
            error!(folder = %folder.display(), error = %e, "cannot read the maildrop folder");
            return 0;
        }
    };
    names.sort();
    let mut queued = 0;
    for path in names {
        if take(core, folder, &path).await {
            queued += 1;
        }
    }
    queued
}

fn is_ready(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && !name.ends_with(".tmp") && name.ends_with(".eml") && path.is_file()
}

async fn take(core: &Core, folder: &Path, path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE_SIZE => {
            reject(
                folder,
                path,
                &name,
                &format!("the file is larger than {MAX_FILE_SIZE} bytes"),
            );
            return false;
        }
        Ok(_) => match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(file = %name, error = %e, "cannot read a maildrop file; will try again");
                return false;
            }
        },
        // Gone meanwhile (another scan took it): nothing to do.
        Err(_) => return false,
    };
    let envelope = match message::envelope_from_header(&bytes, true, &[]) {
        Ok(envelope) => envelope,
        Err(reason) => {
            reject(folder, path, &name, &reason);
            return false;
        }
    };
    let origin = Origin {
        module: "maildrop".into(),
        peer: Some(name.clone()),
        auth_user: None,
    };
    match core
        .accept(
            &envelope.sender,
            &envelope.recipients,
            origin,
            &envelope.message,
        )
        .await
    {
        Ok(id) => {
            // Durable: only now may the file go.
            if let Err(e) = std::fs::remove_file(path) {
                error!(queue_id = %id, file = %name, error = %e,
                    "queued, but the maildrop file cannot be removed (it may be queued again)");
            }
            if let Ok(dir) = std::fs::File::open(folder) {
                let _ = dir.sync_all();
            }
            info!(queue_id = %id, file = %name, "taken from the maildrop");
            true
        }
        Err(e) => {
            warn!(file = %name, error = %e, "cannot queue a maildrop file; will try again");
            false
        }
    }
}

/// Moves an unusable file to `failed/` with a `.reason` file beside it.
fn reject(folder: &Path, path: &Path, name: &str, reason: &str) {
    let failed = folder.join("failed");
    let target = failed.join(name);
    let reason_file = failed.join(format!("{name}.reason"));
    let written = std::fs::write(&reason_file, format!("{reason}\n"))
        .and_then(|()| std::fs::rename(path, &target))
        .and_then(|()| std::fs::File::open(&failed)?.sync_all());
    match written {
        Ok(()) => warn!(file = %name, reason, "maildrop file refused; moved to failed/"),
        Err(e) => {
            error!(file = %name, reason, error = %e, "maildrop file refused but cannot be moved")
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};

    use super::is_arrival;

    #[test]
    fn only_new_files_wake_the_scan() {
        assert!(is_arrival(&EventKind::Create(CreateKind::File)));
        assert!(is_arrival(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        // Opening the folder to scan it must not start another scan.
        assert!(!is_arrival(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_arrival(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
    }
}
