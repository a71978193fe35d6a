//! Connections for the IMAP and POP3 clients: TCP with a time-out and an error
//! that names the target, and TLS (implicit, or after STARTTLS/STLS) checked
//! against one CA file, by default the installation's own certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::BenchError;
use crate::install::Installation;

/// How a client protects its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text.
    None,
    /// Plain text, then STARTTLS (STLS in POP3).
    Starttls,
    /// TLS from the first byte.
    Implicit,
}

impl TlsMode {
    /// `no TLS`, `STARTTLS`, `implicit TLS`.
    pub fn describe(self) -> &'static str {
        match self {
            TlsMode::None => "no TLS",
            TlsMode::Starttls => "STARTTLS",
            TlsMode::Implicit => "implicit TLS",
        }
    }
}

/// The TLS flags of the IMAP and POP3 subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// TLS: none, starttls or implicit.
    #[arg(long, value_enum, default_value = "none")]
    pub tls: TlsMode,
    /// PEM file of the certificate (or its CA) to trust (default with --config:
    /// the installation's certificate).
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// The name to check the certificate against (default with --config: the
    /// installation's hostname; else the target's host).
    #[arg(long, value_name = "NAME")]
    pub tls_name: Option<String>,
}

/// A byte stream the clients run over: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {
    /// The TCP connection itself, when no TLS runs over it yet (STARTTLS).
    fn into_tcp(self: Box<Self>) -> Option<TcpStream>;
}

impl Io for TcpStream {
    fn into_tcp(self: Box<Self>) -> Option<TcpStream> {
        Some(*self)
    }
}

impl Io for TlsStream<TcpStream> {
    fn into_tcp(self: Box<Self>) -> Option<TcpStream> {
        None
    }
}

/// A plain or TLS connection.
pub type Stream = Box<dyn Io>;

/// Opens a TCP connection to `target` (`HOST:PORT`) within `within`.
pub async fn connect(target: &str, within: Duration) -> Result<TcpStream, BenchError> {
    let unreachable = |reason: String| BenchError::Unreachable {
        target: target.to_string(),
        reason,
    };
    let stream = tokio::time::timeout(within, TcpStream::connect(target))
        .await
        .map_err(|_| unreachable(format!("no connection within {within:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The host part of `HOST:PORT` (brackets of an IPv6 address removed).
pub fn host_of(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Everything needed to start TLS on a connection.
#[derive(Clone)]
pub struct Tls {
    /// The mode.
    pub mode: TlsMode,
    connector: Option<(TlsConnector, ServerName<'static>)>,
}

impl Tls {
    /// Sets up TLS from the flags; `installation` gives the defaults.
    pub fn new(
        args: &TlsArgs,
        target: &str,
        installation: Option<&Installation>,
    ) -> Result<Tls, BenchError> {
        if args.tls == TlsMode::None {
            return Ok(Tls {
                mode: TlsMode::None,
                connector: None,
            });
        }
        let ca_file = args
            .ca_file
            .clone()
            .or_else(|| installation.map(|i| i.config.tls.cert.clone()))
            .ok_or_else(|| {
                BenchError::Usage(
                    "--tls needs --ca-file (the server's certificate or its CA) or --config".into(),
                )
            })?;
        let name = args
            .tls_name
            .clone()
            .or_else(|| installation.map(|i| i.config.hostname.clone()))
            .unwrap_or_else(|| host_of(target).to_string());
        let name = ServerName::try_from(name.clone())
            .map_err(|_| BenchError::Usage(format!("\"{name}\" is not a name TLS can check")))?;
        let config = client_config(&ca_file)?;
        Ok(Tls {
            mode: args.tls,
            connector: Some((TlsConnector::from(config), name)),
        })
    }

    /// The TLS handshake over `tcp`.
    pub async fn wrap(&self, tcp: TcpStream, target: &str) -> Result<Stream, BenchError> {
        let Some((connector, name)) = &self.connector else {
            return Ok(Box::new(tcp));
        };
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| BenchError::Refused(format!("TLS with {target}: {e}")))?;
        Ok(Box::new(tls))
    }
}

fn client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, BenchError> {
    let bad = |reason: String| BenchError::Usage(format!("{}: {reason}", ca_file.display()));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_a_target() {
        assert_eq!(host_of("127.0.0.1:25"), "127.0.0.1");
        assert_eq!(host_of("mail.example.test:587"), "mail.example.test");
        assert_eq!(host_of("[::1]:143"), "::1");
    }

    #[test]
    fn tls_without_a_ca_file_is_a_usage_error() {
        let args = TlsArgs {
            tls: TlsMode::Implicit,
            ca_file: None,
            tls_name: None,
        };
        let err = Tls::new(&args, "127.0.0.1:993", None).err();
        assert!(matches!(err, Some(BenchError::Usage(_))), "{err:?}");
        let missing = TlsArgs {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..args
        };
        let err = Tls::new(&missing, "127.0.0.1:993", None).err();
        assert!(
            err.is_some_and(|e| e.to_string().contains("/nonexistent/ca.pem")),
            "the error names the file"
        );
    }
}
