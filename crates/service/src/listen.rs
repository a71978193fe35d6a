//! Binding listeners, with errors that say which address and which key.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::ServiceError;

/// Binds every address of one config key (e.g. `smtp_server.submission`).
pub async fn bind_all(key: &str, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, ServiceError> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServiceError::Bind {
                addr: *addr,
                key: key.to_string(),
                source,
            })?;
        listeners.push(listener);
    }
    Ok(listeners)
}
