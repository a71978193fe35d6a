//! `[tls]`: the certificate every TLS listener presents.

use std::path::{Path, PathBuf};

use crate::reader::Section;

/// `[tls]`: the certificate every TLS listener presents.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Reads `[tls]`; the paths are resolved against `data_dir`.
pub(crate) fn read(root: &Section<'_>, data_dir: &Path) -> TlsConfig {
    let data = |p: PathBuf| data_dir.join(p);
    let tls = root.section("tls");
    let config = TlsConfig {
        cert: data(tls.path("cert", "tls/cert.pem")),
        key: data(tls.path("key", "tls/key.pem")),
    };
    tls.finish();
    config
}
