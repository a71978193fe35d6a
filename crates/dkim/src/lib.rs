//! qs-dkim — DKIM keys and signatures for the mail Quicksilver sends.
//!
//! # Description
//! `qsctl dkim generate` makes a key pair for a sending domain and prints the
//! DNS TXT record to publish; smtp-relay loads the keys at start and adds one
//! `DKIM-Signature` header field at the top of every message whose `From`
//! domain has a key (RFC 6376), in smarthost and direct mode alike. The
//! cryptography and canonicalization are the `mail-auth` crate's; this crate
//! holds what is ours: the key files, the choice of key, the header set and
//! the DNS record.
//!
//! - Keys: Ed25519 (RFC 8463, `ed25519-sha256`) or RSA-2048 (`rsa-sha256`;
//!   RFC 8301 forbids SHA-1 and keys under 1024 bits). One file per key,
//!   `<dkim_dir>/<domain>.<selector>.key`, PEM (PKCS#8 for Ed25519, PKCS#1
//!   for RSA: what `openssl` reads and writes). The public half is derived
//!   from it and never stored apart.
//! - Signatures: relaxed/relaxed canonicalization, a timestamp (`t=`), no
//!   body length (`l=`, which would let anyone append to the body) and no
//!   expiry. Signed: the header fields of [`SIGNED_HEADERS`] that the message
//!   has (every instance), and `From` once more than it has (over-signing,
//!   RFC 6376 §8.15), so that a second `From` added on the way breaks the
//!   signature.
//! - Which key: the one of the `From` header's domain, else of its nearest
//!   parent domain that has one (`d=example.org` for mail from
//!   `news.example.org`). DMARC's relaxed alignment, its default, accepts a
//!   signing domain with the same organizational domain as `From` (RFC 7489
//!   §3.1.1); a domain that publishes `adkim=s` should get its own key. A
//!   message without exactly one `From` field, or whose `From` names
//!   mailboxes of several domains, is not signed (no choice of `d=` would
//!   align). With several keys for one domain, the newest file signs (key
//!   rotation: see the README).
//!
//! # Security
//! Key files are written with mode 0600 in a folder of mode 0700, never
//! replaced (a second key for the same selector is refused), and a key that
//! others may read or write is refused at load, as OpenSSH and OpenDKIM do.
//! Nothing secret is printed or logged: [`SigningKey`]'s `Debug` shows the
//! domain, selector and algorithm only.
//!
//! # Config
//! smtp-relay's `[smtp_relay] dkim` and `dkim_dir`; qsctl reads `dkim_dir`.

pub mod key;
pub mod sign;

pub use key::{
    Algorithm, DnsRecord, KeyInfo, generate, key_file_name, list, load_key, parse_key_file_name,
};
pub use sign::{KeyStore, SIGNED_HEADERS, Signing, SigningKey, from_domain};

use std::io;
use std::path::PathBuf;

/// What can go wrong with DKIM keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DkimError {
    /// The domain cannot carry a DKIM key.
    #[error(
        "\"{0}\" is not a domain name for DKIM (letters, digits, hyphens and dots, at least two labels; give an IDN in its xn-- form)"
    )]
    BadDomain(String),
    /// The selector is not one DNS label.
    #[error(
        "\"{0}\" is not a DKIM selector (one DNS label: letters, digits and hyphens, at most 63)"
    )]
    BadSelector(String),
    /// The algorithm is not one we make.
    #[error("\"{0}\" is not a DKIM key algorithm (ed25519 or rsa)")]
    BadAlgorithm(String),
    /// A key for this domain and selector is already there.
    #[error(
        "a DKIM key for selector {selector} of {domain} already exists ({}); it is never replaced: to rotate, generate a key with a new selector",
        path.display()
    )]
    Exists {
        /// The domain.
        domain: String,
        /// The selector.
        selector: String,
        /// The existing file.
        path: PathBuf,
    },
    /// A file in the key folder is not named `<domain>.<selector>.key`.
    #[error("{}: not a DKIM key file name (<domain>.<selector>.key)", path.display())]
    BadFileName {
        /// The file.
        path: PathBuf,
    },
    /// A key file that other users may read or write.
    #[error("{}: DKIM key readable or writable by others (mode {mode:o}); chmod 600 it", path.display())]
    InsecureMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file that holds no usable private key.
    #[error("{}: not a usable DKIM private key: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Making the key pair failed.
    #[error("cannot generate a DKIM key: {0}")]
    Generate(String),
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
}

impl DkimError {
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> DkimError {
        let path = path.into();
        move |source| DkimError::Io { path, source }
    }
}
