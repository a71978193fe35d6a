//! TLS for every listener: the acceptor built from `[tls]`, and the self-signed
//! certificate that `qsctl init` creates so the defaults run with no editing.
//! And the client side shared by the modules that connect out (pop-client to
//! the provider, smtp-relay's implicit TLS): Mozilla's roots plus the
//! administrator's CA file, or, when the config turns checks off, any
//! certificate.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::TlsAcceptor;

use crate::ServiceError;

/// Loads a PEM certificate chain and private key into a rustls server config.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, ServiceError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ServiceError::Tls {
            what: "certificate",
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| ServiceError::Tls {
            what: "certificate",
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ServiceError::Tls {
            what: "certificate",
            path: cert.to_path_buf(),
            reason: "no CERTIFICATE block in the file".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| ServiceError::Tls {
        what: "key",
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|e| ServiceError::Tls {
            what: "key",
            path: key.to_path_buf(),
            reason: format!("does not match the certificate or is unusable: {e}"),
        })?;
    Ok(Arc::new(config))
}

/// A TLS acceptor for the configured certificate.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServiceError> {
    server_config(cert, key).map(TlsAcceptor::from)
}

/// Creates a self-signed certificate for `hostname` (and localhost) unless the
/// certificate file exists. Returns true when it created one.
pub fn ensure_self_signed(hostname: &str, cert: &Path, key: &Path) -> Result<bool, ServiceError> {
    if cert.exists() {
        return Ok(false);
    }
    let fail = |reason: String| ServiceError::CertificateGeneration {
        path: cert.to_path_buf(),
        reason,
    };
    let names = vec![
        hostname.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| fail(e.to_string()))?;
    for path in [cert, key] {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
        }
    }
    write_new(key, generated.signing_key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| fail(format!("key {}: {e}", key.display())))?;
    write_new(cert, generated.cert.pem().as_bytes(), 0o644).map_err(|e| fail(e.to_string()))?;
    Ok(true)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Mozilla's roots (webpki-roots) plus `extra`, the certificates of an
/// administrator's CA file.
pub fn web_roots_with(
    extra: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<RootCertStore, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// A TLS client that checks the certificate and the name against `roots`, or,
/// with `None` (`tls_verify = false`), accepts any certificate and any name.
pub fn client_config(roots: Option<RootCertStore>) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match roots {
        Some(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// `tls_verify = false`: any certificate, any name. The handshake signatures
/// are still checked, so the session is encrypted to whoever answered.
#[derive(Debug)]
struct AcceptAnything {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_generated_certificate_loads_and_its_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls/cert.pem");
        let key = dir.path().join("tls/key.pem");
        assert!(ensure_self_signed("mail.example.test", &cert, &key).unwrap());
        assert!(!ensure_self_signed("mail.example.test", &cert, &key).unwrap());
        server_config(&cert, &key).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_broken_certificate_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let err = server_config(&cert, &key).unwrap_err().to_string();
        assert!(err.contains("cert.pem"), "{err}");
    }
}
