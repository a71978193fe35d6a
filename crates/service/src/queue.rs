//! The queue client every module uses, built from `[queue]`: the Unix socket,
//! or core-queue on another host over TCP with the shared secret.

use std::time::Duration;

use qs_config::Config;
use qs_queue::{Client, ClientOptions, Endpoint, Secret};

use crate::ServiceError;

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
            retry_for: Duration::from_secs(config.queue.client_retry_secs),
            ..ClientOptions::default()
        },
    ))
}
