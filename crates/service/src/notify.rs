//! The systemd readiness protocol (`sd_notify`), for units of `Type=notify`:
//! a daemon says `READY=1` once it serves, and a successor process that takes
//! over from its predecessor also says `MAINPID=`, so that systemd follows the
//! new process (the units set `NotifyAccess=all`). Without `NOTIFY_SOCKET` in
//! the environment (not under systemd) it does nothing.

use std::os::unix::net::UnixDatagram;

/// Tells systemd that this process is ready and is the service's main process.
pub fn ready() {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("READY=1\nMAINPID={}\n", std::process::id());
    if let Err(e) = send(&socket.to_string_lossy(), message.as_bytes()) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

fn send(socket: &str, message: &[u8]) -> std::io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    match socket.strip_prefix('@') {
        // An abstract socket name.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            datagram.send_to_addr(message, &addr)?;
        }
        None => {
            datagram.send_to(message, socket)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), b"READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }
}
