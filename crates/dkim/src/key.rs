//! Key files: their names, making them, reading them, and the DNS record of
//! their public half. Only [`generate`], [`load_key`] and [`list`] touch the
//! disk.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::dkim::generate::DkimKeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::DkimError;

/// The size of the RSA keys [`generate`] makes (RFC 8301: at least 1024,
/// 2048 recommended; larger keys do not fit many DNS panels).
pub const RSA_BITS: usize = 2048;

/// What a key file's name ends with.
pub const KEY_SUFFIX: &str = ".key";

/// A DKIM key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Ed25519 (RFC 8463): short keys, but not every verifier knows it yet.
    Ed25519,
    /// RSA with SHA-256: what every verifier checks.
    Rsa,
}

impl Algorithm {
    /// The name used on the command line and in the record's `k=` tag.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::Rsa => "rsa",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = DkimError;

    fn from_str(s: &str) -> Result<Algorithm, DkimError> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(Algorithm::Ed25519),
            "rsa" => Ok(Algorithm::Rsa),
            _ => Err(DkimError::BadAlgorithm(s.to_string())),
        }
    }
}

/// One key as found on disk, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The signing domain (`d=`), lower case.
    pub domain: String,
    /// The selector (`s=`), lower case.
    pub selector: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The key file.
    pub path: PathBuf,
    /// When the file was last written (the newest key of a domain signs).
    pub modified: SystemTime,
    /// The public key as published: the raw 32 bytes for Ed25519 (RFC 8463
    /// §4.2), a DER SubjectPublicKeyInfo for RSA (what `openssl rsa
    /// -pubout` writes and every verifier reads).
    pub public_key: Vec<u8>,
}

impl KeyInfo {
    /// The TXT record that publishes this key.
    pub fn dns_record(&self) -> DnsRecord {
        DnsRecord::new(
            &self.domain,
            &self.selector,
            self.algorithm,
            &self.public_key,
        )
    }
}

/// The DNS TXT record a receiver looks up to check our signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// `<selector>._domainkey.<domain>`.
    pub name: String,
    /// `v=DKIM1; k=...; p=...`.
    pub value: String,
}

/// The longest string in a TXT record (RFC 1035 §3.3.14); a longer value,
/// such as an RSA-2048 key, is published as several strings that the
/// receiver joins without a separator (RFC 6376 §3.6.2.2).
pub const TXT_STRING_MAX: usize = 255;

impl DnsRecord {
    /// The record of a public key.
    pub fn new(domain: &str, selector: &str, algorithm: Algorithm, public_key: &[u8]) -> Self {
        DnsRecord {
            name: format!("{selector}._domainkey.{domain}"),
            value: format!(
                "v=DKIM1; k={}; p={}",
                algorithm.name(),
                BASE64.encode(public_key)
            ),
        }
    }

    /// The value cut into strings of at most [`TXT_STRING_MAX`] octets.
    pub fn strings(&self) -> Vec<&str> {
        // The value is ASCII (tags and base64), so any byte is a boundary.
        self.value
            .as_bytes()
            .chunks(TXT_STRING_MAX)
            .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
            .collect()
    }
}

/// `NAME TXT "string" ["string"...]`, as zone files and most DNS panels take it.
impl fmt::Display for DnsRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} TXT", self.name)?;
        for s in self.strings() {
            write!(f, " \"{s}\"")?;
        }
        Ok(())
    }
}

/// The domain in the form keys are filed under: lower case, without a final
/// dot; at least two labels of letters, digits and hyphens.
pub fn check_domain(domain: &str) -> Result<String, DkimError> {
    let lower = domain.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    if labels.len() < 2 || lower.len() > 253 || !labels.iter().all(|l| is_label(l)) {
        return Err(DkimError::BadDomain(domain.to_string()));
    }
    Ok(lower)
}

/// The selector in the form keys are filed under: one DNS label, lower case.
/// (RFC 6376 allows dotted selectors; one label keeps file names unambiguous.)
pub fn check_selector(selector: &str) -> Result<String, DkimError> {
    let lower = selector.to_ascii_lowercase();
    if !is_label(&lower) {
        return Err(DkimError::BadSelector(selector.to_string()));
    }
    Ok(lower)
}

fn is_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// `<domain>.<selector>.key`.
pub fn key_file_name(domain: &str, selector: &str) -> String {
    format!("{domain}.{selector}{KEY_SUFFIX}")
}

/// The (domain, selector) of a key file name, or `None` when it is not one.
pub fn parse_key_file_name(name: &str) -> Option<(String, String)> {
    let stem = name.strip_suffix(KEY_SUFFIX)?;
    let (domain, selector) = stem.rsplit_once('.')?;
    let domain = check_domain(domain).ok()?;
    let selector = check_selector(selector).ok()?;
    // Only the canonical (lower-case) spelling is ours.
    (key_file_name(&domain, &selector) == name).then_some((domain, selector))
}

/// Makes a key pair for `domain` and `selector` in `dir` (created with mode
/// 0700 when missing) and returns what to publish. The file is written with
/// mode 0600 and never replaces one: an existing key for the selector is
/// [`DkimError::Exists`].
pub fn generate(
    dir: &Path,
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
) -> Result<KeyInfo, DkimError> {
    let domain = check_domain(domain)?;
    let selector = check_selector(selector)?;
    let path = dir.join(key_file_name(&domain, &selector));
    let exists = |path: PathBuf| DkimError::Exists {
        domain: domain.clone(),
        selector: selector.clone(),
        path,
    };
    // Checked first so that nobody waits for an RSA key that cannot be kept.
    if fs::symlink_metadata(&path).is_ok() {
        return Err(exists(path));
    }
    let pem = match algorithm {
        Algorithm::Ed25519 => {
            let pair =
                DkimKeyPair::generate_ed25519().map_err(|e| DkimError::Generate(e.to_string()))?;
            pem("PRIVATE KEY", &ed25519_pkcs8_v1(pair.private_key())?)
        }
        Algorithm::Rsa => {
            let pair = DkimKeyPair::generate_rsa(RSA_BITS)
                .map_err(|e| DkimError::Generate(e.to_string()))?;
            pem("RSA PRIVATE KEY", pair.private_key())
        }
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(DkimError::io(dir))?;
    // Written whole under a temporary name, then linked into place: a crash
    // leaves no half key, and link(2) refuses to replace a file that
    // appeared meanwhile.
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        key_file_name(&domain, &selector),
        std::process::id()
    ));
    let written = write_private(&temporary, pem.as_bytes());
    let linked = written.and_then(|()| fs::hard_link(&temporary, &path));
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(exists(path)),
        Err(e) => return Err(DkimError::io(&path)(e)),
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(DkimError::io(dir))?;
    load_key(&path).map(|(info, _)| info)
}

/// The seed of an Ed25519 key in a PKCS#8 v1 PrivateKeyInfo (RFC 8410 §7).
/// ed25519-dalek writes v2, with the public key in it, which OpenSSL 3.0
/// does not read; v1 is what `openssl genpkey -algorithm ed25519` writes.
fn ed25519_pkcs8_v1(pkcs8: &[u8]) -> Result<Vec<u8>, DkimError> {
    // SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING {
    // OCTET STRING (32 bytes) } }: everything before the seed.
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    // The same after the outer SEQUENCE's header and the version, in v1 or v2.
    let seed = pkcs8
        .get(5..)
        .filter(|rest| rest.len() >= 43 && rest[..11] == V1_PREFIX[5..])
        .map(|rest| &rest[11..43])
        .ok_or_else(|| DkimError::Generate("unexpected Ed25519 key encoding".into()))?;
    let mut v1 = V1_PREFIX.to_vec();
    v1.extend_from_slice(seed);
    Ok(v1)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// PEM text of DER bytes (RFC 7468): base64 in lines of 64.
fn pem(label: &str, der: &[u8]) -> String {
    let encoded = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Reads one key file: refuses it when others may read or write it, or when
/// its name or contents are not a DKIM key's.
pub fn load_key(path: &Path) -> Result<(KeyInfo, DkimKey), DkimError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let (domain, selector) = parse_key_file_name(name).ok_or_else(|| DkimError::BadFileName {
        path: path.to_path_buf(),
    })?;
    let meta = fs::metadata(path).map_err(DkimError::io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DkimError::InsecureMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = fs::read(path).map_err(DkimError::io(path))?;
    let bad = |reason: String| DkimError::BadKey {
        path: path.to_path_buf(),
        reason,
    };
    let der = PrivateKeyDer::from_pem_slice(&text).map_err(|e| bad(e.to_string()))?;
    let (algorithm, key) = parse_private_key(der).map_err(bad)?;
    let public_key = match &key {
        DkimKey::Ed25519(k) => k.public_key(),
        DkimKey::Rsa(k) => rsa_spki(&k.public_key()),
    };
    Ok((
        KeyInfo {
            domain,
            selector,
            algorithm,
            path: path.to_path_buf(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            public_key,
        },
        key,
    ))
}

/// A PKCS#8 key is Ed25519 or RSA (as `openssl genpkey` writes either); a
/// PKCS#1 key is RSA.
fn parse_private_key(der: PrivateKeyDer<'_>) -> Result<(Algorithm, DkimKey), String> {
    match der {
        PrivateKeyDer::Pkcs8(pkcs8) => {
            if let Ok(key) = Ed25519Key::from_pkcs8_der(pkcs8.secret_pkcs8_der()) {
                return Ok((Algorithm::Ed25519, DkimKey::Ed25519(key)));
            }
            let copy = PrivatePkcs8KeyDer::from(pkcs8.secret_pkcs8_der().to_vec());
            RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(copy))
                .map(|key| (Algorithm::Rsa, DkimKey::Rsa(key)))
                .map_err(|_| "a PKCS#8 key that is neither Ed25519 nor RSA".to_string())
        }
        der @ PrivateKeyDer::Pkcs1(_) => RsaKey::<Sha256>::from_key_der(der)
            .map(|key| (Algorithm::Rsa, DkimKey::Rsa(key)))
            .map_err(|e| e.to_string()),
        _ => Err("an EC key (DKIM signs with Ed25519 or RSA)".to_string()),
    }
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (RFC 5280 §4.1.2.7,
/// algorithm rsaEncryption of RFC 8017 Appendix C): the form DKIM records
/// carry in practice, and the only one some verifiers (dkimpy) accept.
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    // SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    const RSA_ENCRYPTION: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    // BIT STRING with no unused bits.
    let mut bits = vec![0x00];
    bits.extend_from_slice(pkcs1);
    let mut body = RSA_ENCRYPTION.to_vec();
    der_element(&mut body, 0x03, &bits);
    let mut out = Vec::with_capacity(body.len() + 4);
    der_element(&mut out, 0x30, &body);
    out
}

/// Appends a DER element: tag, definite length, contents.
fn der_element(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(contents);
}

/// Every key in `dir` (none when it does not exist), by domain, newest
/// first within a domain. Files whose names start with `.` (temporary
/// files) or do not end in `.key` are left alone; a bad `.key` file is an
/// error.
pub fn list(dir: &Path) -> Result<Vec<KeyInfo>, DkimError> {
    Ok(load_dir(dir)?.into_iter().map(|(info, _)| info).collect())
}

pub(crate) fn load_dir(dir: &Path) -> Result<Vec<(KeyInfo, DkimKey)>, DkimError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DkimError::io(dir)(e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.map_err(DkimError::io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(KEY_SUFFIX) {
            continue;
        }
        keys.push(load_key(&entry.path())?);
    }
    keys.sort_by(|(a, _), (b, _)| {
        a.domain
            .cmp(&b.domain)
            .then(b.modified.cmp(&a.modified))
            .then(b.selector.cmp(&a.selector))
    });
    Ok(keys)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn domains_and_selectors_are_checked_and_lowered() {
        assert_eq!(check_domain("Example.ORG.").unwrap(), "example.org");
        assert_eq!(check_domain("a-b.c.example").unwrap(), "a-b.c.example");
        for bad in [
            "example",
            "",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b.c",
            "ex ample.org",
            "é.org",
        ] {
            assert!(check_domain(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_domain(&format!("{}.org", "a".repeat(64))).is_err());
        assert_eq!(check_selector("Qs2026").unwrap(), "qs2026");
        for bad in ["", "a.b", "a_b", "-a", &"s".repeat(64)] {
            assert!(check_selector(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn file_names_round_trip_and_strangers_are_not_keys() {
        let name = key_file_name("mail.example.org", "sel1");
        assert_eq!(name, "mail.example.org.sel1.key");
        assert_eq!(
            parse_key_file_name(&name),
            Some(("mail.example.org".into(), "sel1".into()))
        );
        for other in [
            "example.org.key",
            "sel.key",
            "Example.org.s.key",
            "example.org.s.pem",
        ] {
            assert_eq!(parse_key_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn algorithms_parse_by_name() {
        assert_eq!("ed25519".parse::<Algorithm>().unwrap(), Algorithm::Ed25519);
        assert_eq!("RSA".parse::<Algorithm>().unwrap(), Algorithm::Rsa);
        assert!("dsa".parse::<Algorithm>().is_err());
    }

    #[test]
    fn a_long_record_is_cut_into_txt_strings_of_255() {
        let short = DnsRecord::new("example.org", "s1", Algorithm::Ed25519, &[7; 32]);
        assert_eq!(short.name, "s1._domainkey.example.org");
        assert_eq!(
            short.to_string(),
            format!(
                "s1._domainkey.example.org TXT \"v=DKIM1; k=ed25519; p={}\"",
                BASE64.encode([7; 32])
            )
        );
        let long = DnsRecord::new("example.org", "s1", Algorithm::Rsa, &[1; 294]);
        let strings = long.strings();
        assert_eq!(strings.len(), 2);
        assert_eq!(strings[0].len(), 255);
        assert_eq!(strings.concat(), long.value);
        assert!(
            long.to_string()
                .ends_with(&format!("\" \"{}\"", strings[1]))
        );
    }

    #[test]
    fn der_lengths_use_the_short_and_long_forms() {
        let mut out = Vec::new();
        der_element(&mut out, 0x04, &[9; 3]);
        assert_eq!(out, [0x04, 3, 9, 9, 9]);
        let mut out = Vec::new();
        der_element(&mut out, 0x04, &[0; 200]);
        assert_eq!(&out[..3], &[0x04, 0x81, 200]);
        let mut out = Vec::new();
        der_element(&mut out, 0x04, &[0; 300]);
        assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn ed25519_keys_are_written_0600_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("dkim");
        let info = generate(&keys, "Example.org", "s1", Algorithm::Ed25519).unwrap();
        assert_eq!(info.domain, "example.org");
        assert_eq!(info.path, keys.join("example.org.s1.key"));
        assert_eq!(info.public_key.len(), 32);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&info.path), 0o600);
        assert_eq!(mode(&keys), 0o700);
        let text = fs::read_to_string(&info.path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        // PKCS#8 v1 (version 0, no public key inside), as OpenSSL 3.0 reads.
        let der = PrivateKeyDer::from_pem_slice(text.as_bytes()).unwrap();
        assert_eq!(&der.secret_der()[..5], &[0x30, 0x2e, 0x02, 0x01, 0x00]);
        // A second key for the selector is refused and the first one kept.
        let again = generate(&keys, "example.org", "S1", Algorithm::Rsa).unwrap_err();
        assert!(matches!(again, DkimError::Exists { .. }), "{again}");
        assert!(again.to_string().contains("new selector"), "{again}");
        assert_eq!(fs::read_to_string(&info.path).unwrap(), text);
        assert_eq!(list(&keys).unwrap(), vec![info]);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&keys).unwrap().count(), 1);
    }

    #[test]
    fn rsa_keys_publish_a_subject_public_key_info() {
        let dir = tempfile::tempdir().unwrap();
        let info = generate(dir.path(), "example.org", "r1", Algorithm::Rsa).unwrap();
        let text = fs::read_to_string(&info.path).unwrap();
        assert!(
            text.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
            "{text}"
        );
        // SEQUENCE, rsaEncryption, BIT STRING, then the 2048-bit modulus:
        // the prefix every RSA-2048 DKIM record starts with.
        let record = info.dns_record();
        assert!(
            record
                .value
                .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
            "{}",
            record.value
        );
        assert_eq!(info.public_key.len(), 294);
    }

    #[test]
    fn keys_others_may_read_and_strange_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let info = generate(dir.path(), "example.org", "s1", Algorithm::Ed25519).unwrap();
        fs::set_permissions(&info.path, fs::Permissions::from_mode(0o640)).unwrap();
        let e = list(dir.path()).unwrap_err();
        assert!(
            matches!(e, DkimError::InsecureMode { mode: 0o640, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
        fs::set_permissions(&info.path, fs::Permissions::from_mode(0o600)).unwrap();

        let garbage = dir.path().join("example.org.s2.key");
        write_private(&garbage, b"not a key").unwrap();
        assert!(matches!(list(dir.path()), Err(DkimError::BadKey { .. })));
        fs::remove_file(&garbage).unwrap();

        let misnamed = dir.path().join("example.key");
        write_private(&misnamed, b"").unwrap();
        assert!(matches!(
            list(dir.path()),
            Err(DkimError::BadFileName { .. })
        ));
        fs::remove_file(&misnamed).unwrap();

        // Other files and temporary ones are not keys.
        write_private(&dir.path().join("README"), b"notes").unwrap();
        write_private(&dir.path().join(".example.org.s3.key.1.tmp"), b"").unwrap();
        assert_eq!(list(dir.path()).unwrap().len(), 1);
        assert!(list(&dir.path().join("absent")).unwrap().is_empty());
    }

    #[test]
    fn keys_made_by_openssl_in_pkcs8_are_read_too() {
        // `openssl genpkey -algorithm ed25519` and `-algorithm rsa` both write
        // PKCS#8; re-encode ours that way.
        let dir = tempfile::tempdir().unwrap();
        let rsa = DkimKeyPair::generate_rsa(1024).unwrap();
        let pkcs1 = rsa.private_key();
        // PrivateKeyInfo { version 0, rsaEncryption, OCTET STRING pkcs1 }
        let mut body = vec![0x02, 0x01, 0x00];
        body.extend_from_slice(&[
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00,
        ]);
        der_element(&mut body, 0x04, pkcs1);
        let mut pkcs8 = Vec::new();
        der_element(&mut pkcs8, 0x30, &body);
        let path = dir.path().join("example.org.imported.key");
        write_private(&path, pem("PRIVATE KEY", &pkcs8).as_bytes()).unwrap();
        let (info, _) = load_key(&path).unwrap();
        assert_eq!(info.algorithm, Algorithm::Rsa);
        assert_eq!(info.public_key, rsa_spki(rsa.public_key()));
    }
}
