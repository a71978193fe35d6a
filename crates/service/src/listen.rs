//! Binding listeners, with errors that say which address and which key, and
//! the hand-over of listening sockets from a process to its successor.
//!
//! Every listener a daemon binds through [`bind_all`] is remembered (a
//! duplicate of its descriptor, keyed by the config key and the configured
//! address). At a restart ([`crate::restart`]) the successor process inherits
//! those descriptors and their description in the `QS_LISTEN_FDS` environment
//! variable; its own [`bind_all`] then adopts the inherited socket instead of
//! binding a new one. The socket never closes, so a connection that arrives
//! during the restart waits in its backlog instead of being refused, and the
//! old and the new process accept from the same queue until the old one stops.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};

use tokio::net::TcpListener;

use crate::ServiceError;

/// The environment variable that describes inherited listeners:
/// `KEY|CONFIGURED ADDRESS|FD` entries separated by `;`.
pub const LISTEN_FDS_VAR: &str = "QS_LISTEN_FDS";

/// A listener this process serves, as a successor will inherit it.
#[derive(Debug)]
pub struct Registered {
    /// The config key (`smtp_server.submission`).
    pub key: String,
    /// The address as configured (it may say port 0).
    pub configured: SocketAddr,
    /// A duplicate of the listening socket.
    pub fd: OwnedFd,
}

/// Listeners bound or adopted by this process.
fn registry() -> &'static Mutex<Vec<Registered>> {
    static REGISTRY: OnceLock<Mutex<Vec<Registered>>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// Listeners inherited from the predecessor and not yet adopted, by
/// (key, configured address).
fn inherited() -> &'static Mutex<HashMap<(String, SocketAddr), OwnedFd>> {
    static INHERITED: OnceLock<Mutex<HashMap<(String, SocketAddr), OwnedFd>>> = OnceLock::new();
    INHERITED.get_or_init(|| {
        let spec = std::env::var(LISTEN_FDS_VAR).unwrap_or_default();
        Mutex::new(take_inherited(&spec))
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Binds every address of one config key (e.g. `smtp_server.submission`), or
/// adopts the socket a predecessor handed over for it.
pub async fn bind_all(key: &str, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, ServiceError> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let bind_error = |source| ServiceError::Bind {
            addr: *addr,
            key: key.to_string(),
            source,
        };
        let adopted = lock(inherited()).remove(&(key.to_string(), *addr));
        let listener = match adopted {
            Some(fd) => {
                let std_listener = std::net::TcpListener::from(fd);
                std_listener.set_nonblocking(true).map_err(bind_error)?;
                let listener = TcpListener::from_std(std_listener).map_err(bind_error)?;
                tracing::info!(listener = key, addr = ?listener.local_addr().ok(), "listening socket taken over");
                listener
            }
            None => TcpListener::bind(addr).await.map_err(bind_error)?,
        };
        let fd = listener.as_fd().try_clone_to_owned().map_err(bind_error)?;
        lock(registry()).push(Registered {
            key: key.to_string(),
            configured: *addr,
            fd,
        });
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Closes the inherited sockets that no key asked for (the config no longer
/// names them). Called once the daemon has bound everything.
pub fn close_unclaimed() {
    let left: Vec<_> = lock(inherited()).drain().collect();
    for ((key, addr), _fd) in left {
        tracing::info!(listener = %key, %addr, "inherited socket no longer configured: closed");
    }
}

/// Runs `f` with the registered listeners (for the hand-over to a successor).
pub fn with_registered<T>(f: impl FnOnce(&[Registered]) -> T) -> T {
    f(&lock(registry()))
}

/// The `QS_LISTEN_FDS` value that describes `listeners` to a successor.
pub fn describe(listeners: &[Registered]) -> String {
    listeners
        .iter()
        .map(|l| format!("{}|{}|{}", l.key, l.configured, l.fd.as_raw_fd()))
        .collect::<Vec<_>>()
        .join(";")
}

/// Parses `spec` and takes ownership of each descriptor it names that really
/// is an open socket of this process; anything else is skipped with a warning.
fn take_inherited(spec: &str) -> HashMap<(String, SocketAddr), OwnedFd> {
    let mut taken = HashMap::new();
    for entry in spec.split(';').filter(|e| !e.is_empty()) {
        let Some((key, addr, fd)) = parse_entry(entry) else {
            tracing::warn!(entry, "{LISTEN_FDS_VAR}: malformed entry ignored");
            continue;
        };
        if taken.contains_key(&(key.clone(), addr)) {
            tracing::warn!(entry, "{LISTEN_FDS_VAR}: duplicate entry ignored");
            continue;
        }
        match adopt(fd) {
            Some(owned) => {
                taken.insert((key, addr), owned);
            }
            None => tracing::warn!(entry, "{LISTEN_FDS_VAR}: not an open socket; ignored"),
        }
    }
    taken
}

fn parse_entry(entry: &str) -> Option<(String, SocketAddr, RawFd)> {
    let mut parts = entry.split('|');
    let key = parts.next()?.to_string();
    let addr = parts.next()?.parse().ok()?;
    let fd = parts.next()?.parse().ok()?;
    if parts.next().is_some() || key.is_empty() || fd < 3 {
        return None;
    }
    Some((key, addr, fd))
}

/// Takes ownership of inherited descriptor `fd` if it is an open socket.
///
/// This is the one place where the workspace allows `unsafe`: a descriptor
/// received across `exec` has no owner in Rust until one is made from its
/// number. It is sound because (1) the number comes from our predecessor, which
/// cleared close-on-exec on exactly these descriptors for this process, (2)
/// `/proc/self/fd` shows it open and a socket, so it is not a file, pipe or
/// epoll instance that something else in this process owns, and (3) this runs
/// once per descriptor (the parsed table is built once, under a `OnceLock`,
/// and duplicates are skipped), so no second owner can be made.
#[allow(unsafe_code)]
fn adopt(fd: RawFd) -> Option<OwnedFd> {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    if !target.to_string_lossy().starts_with("socket:[") {
        return None;
    }
    // SAFETY: see above: an open socket descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Inherited descriptors are not close-on-exec; ours are.
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_entry("smtp_server.listen|127.0.0.1:0|7"),
            Some((
                "smtp_server.listen".to_string(),
                "127.0.0.1:0".parse().unwrap(),
                7
            ))
        );
        assert_eq!(
            parse_entry("imap_server.listen|[::1]:143|9").map(|e| e.2),
            Some(9)
        );
        for bad in [
            "",
            "key|127.0.0.1:25",
            "key|not an address|7",
            "key|127.0.0.1:25|x",
            "key|127.0.0.1:25|1",
            "key|127.0.0.1:25|7|extra",
            "|127.0.0.1:25|7",
        ] {
            assert_eq!(parse_entry(bad), None, "{bad}");
        }
    }

    #[test]
    fn descriptors_that_are_not_sockets_are_not_adopted() {
        let file = tempfile::tempfile().unwrap();
        let spec = format!("k|127.0.0.1:1|{};k2|127.0.0.1:2|999999", file.as_raw_fd());
        assert!(take_inherited(&spec).is_empty());
        // The file is still ours and open.
        assert!(file.metadata().is_ok());
    }

    #[tokio::test]
    async fn a_bound_listener_is_registered_under_its_key() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listeners = bind_all("test.registered", &[addr]).await.unwrap();
        let bound = listeners[0].local_addr().unwrap();
        let description = with_registered(|r| {
            let ours: Vec<_> = r.iter().filter(|l| l.key == "test.registered").collect();
            assert_eq!(ours.len(), 1);
            assert_eq!(ours[0].configured, addr);
            // The duplicate is the same socket.
            let dup = std::net::TcpListener::from(ours[0].fd.try_clone().unwrap());
            assert_eq!(dup.local_addr().unwrap(), bound);
            describe(r)
        });
        assert!(
            description.contains("test.registered|127.0.0.1:0|"),
            "{description}"
        );
    }
}
