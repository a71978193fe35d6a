//! TLS towards the provider: Mozilla's roots (webpki-roots) plus the
//! account's `tls_ca_file`, the host name checked against the certificate;
//! or no checks at all when the account says `tls_verify = false`.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// Why no TLS client could be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// `tls_ca_file` cannot be read or holds no certificate.
    #[error("tls_ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The host name is not a DNS name or IP address.
    #[error("\"{0}\" is not a host name TLS can check")]
    ServerName(String),
    /// rustls refused the configuration.
    #[error("TLS setup: {0}")]
    Rustls(String),
}

/// A rustls client configuration for one account.
pub fn client_config(
    ca_file: Option<&Path>,
    verify: bool,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let roots = if verify {
        let extra = match ca_file {
            Some(path) => read_certificates(path)?,
            None => Vec::new(),
        };
        let roots = qs_service::tls::web_roots_with(extra).map_err(|e| TlsSetupError::CaFile {
            path: ca_file.map(|p| p.display().to_string()).unwrap_or_default(),
            reason: e.to_string(),
        })?;
        Some(roots)
    } else {
        None
    };
    qs_service::tls::client_config(roots).map_err(|e| TlsSetupError::Rustls(e.to_string()))
}

/// The name TLS checks the certificate against (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsSetupError::ServerName(host.into()))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let fail = |reason: String| TlsSetupError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let err = client_config(Some(&empty), true).unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
        assert!(client_config(Some(&dir.path().join("nope.pem")), true).is_err());
        // Without verification the file is not even read.
        assert!(client_config(Some(&dir.path().join("nope.pem")), false).is_ok());
        assert!(client_config(None, true).is_ok());
    }

    #[test]
    fn host_names_and_addresses_are_names_tls_can_check() {
        assert!(server_name("pop.provider.example").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("not a host").is_err());
    }
}
