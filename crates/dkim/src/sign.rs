//! Signing: which key signs a message, which header fields are signed, and
//! the `DKIM-Signature` field itself. No I/O here but [`KeyStore::load`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use mail_auth::common::crypto::{self, DkimKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};
use mail_parser::{HeaderName, HeaderValue, MessageParser};

use crate::DkimError;
use crate::key::{KeyInfo, load_dir};

/// The header fields signed when the message has them, after RFC 6376
/// §5.4.1's list: those a reader sees or a client threads and displays by,
/// and those that say how to read the body. `Received`, `Return-Path` and
/// other trace fields are left out: they change on the way.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "Resent-Message-ID",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
];

/// A private key ready to sign, with what is known about it.
pub struct SigningKey {
    /// Domain, selector, algorithm, file and public half.
    pub info: KeyInfo,
    key: DkimKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("domain", &self.info.domain)
            .field("selector", &self.info.selector)
            .field("algorithm", &self.info.algorithm)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The keys that sign, one per domain.
#[derive(Debug, Default)]
pub struct KeyStore {
    by_domain: BTreeMap<String, SigningKey>,
    older: Vec<KeyInfo>,
}

/// What [`KeyStore::sign`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    /// Signed: `header` is the `DKIM-Signature` field, CRLF included, to put
    /// before the first line of the message.
    Signed {
        /// The field.
        header: String,
        /// Its `d=`.
        domain: String,
        /// Its `s=`.
        selector: String,
    },
    /// Neither the `From` domain nor a parent of it has a key.
    NoKey {
        /// The `From` domain.
        from_domain: String,
    },
    /// The message has no single `From` domain to sign for.
    NoFromDomain {
        /// Why.
        reason: &'static str,
    },
    /// A key was found but signing failed.
    Failed {
        /// The key's domain.
        domain: String,
        /// Its selector.
        selector: String,
        /// The library's reason.
        reason: String,
    },
}

impl KeyStore {
    /// Reads every key in `dir` (no keys when it does not exist). Of several
    /// keys for one domain the newest file signs; the others are kept in
    /// [`KeyStore::older`] to be named in the log. Any bad key file is an
    /// error: a key that is there and cannot be used must be fixed, not
    /// skipped.
    pub fn load(dir: &Path) -> Result<KeyStore, DkimError> {
        let mut store = KeyStore::default();
        // load_dir sorts each domain's keys newest first.
        for (info, key) in load_dir(dir)? {
            if store.by_domain.contains_key(&info.domain) {
                store.older.push(info);
            } else {
                store
                    .by_domain
                    .insert(info.domain.clone(), SigningKey { info, key });
            }
        }
        Ok(store)
    }

    /// True when there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// The key that signs for each domain.
    pub fn signing_keys(&self) -> impl Iterator<Item = &SigningKey> {
        self.by_domain.values()
    }

    /// Keys that a newer key of the same domain replaced.
    pub fn older(&self) -> &[KeyInfo] {
        &self.older
    }

    /// The key for mail from `domain`: its own, else that of its nearest
    /// parent that has one (see the crate header for why parents).
    pub fn key_for(&self, domain: &str) -> Option<&SigningKey> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut candidate = domain.as_str();
        loop {
            if let Some(key) = self.by_domain.get(candidate) {
                return Some(key);
            }
            candidate = candidate.split_once('.')?.1;
        }
    }

    /// Signs `message` (CRLF line ends, as queued) for its `From` domain.
    /// The message itself is not changed: on [`Signing::Signed`] the caller
    /// sends the header field and then the message.
    pub fn sign(&self, message: &[u8]) -> Signing {
        let headers = match read_headers(message) {
            Ok(headers) => headers,
            Err(reason) => return Signing::NoFromDomain { reason },
        };
        let Some(key) = self.key_for(&headers.from_domain) else {
            return Signing::NoKey {
                from_domain: headers.from_domain,
            };
        };
        let info = &key.info;
        // Each present field once in the list (mail-auth then signs every
        // instance of it), and `From` once more: an instance that does not
        // exist, so that one added later breaks the signature.
        let mut names: Vec<&str> = SIGNED_HEADERS
            .iter()
            .copied()
            .filter(|name| headers.present.iter().any(|p| p.eq_ignore_ascii_case(name)))
            .collect();
        names.push("From");
        let signer = DkimSigner::from_key(Borrowed(&key.key))
            .domain(info.domain.as_str())
            .selector(info.selector.as_str())
            .headers(names)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        match signer.sign(message) {
            Ok(signature) => Signing::Signed {
                header: signature.to_header(),
                domain: info.domain.clone(),
                selector: info.selector.clone(),
            },
            Err(e) => Signing::Failed {
                domain: info.domain.clone(),
                selector: info.selector.clone(),
                reason: e.to_string(),
            },
        }
    }
}

/// The one domain of the message's `From` field (lower case), or why there
/// is none.
pub fn from_domain(message: &[u8]) -> Result<String, &'static str> {
    read_headers(message).map(|h| h.from_domain)
}

struct Headers {
    from_domain: String,
    /// The names of the header fields the message has.
    present: Vec<String>,
}

fn read_headers(message: &[u8]) -> Result<Headers, &'static str> {
    let parsed = MessageParser::new()
        .parse_headers(message)
        .ok_or("the message has no header")?;
    let mut from = None;
    let mut present = Vec::new();
    for header in parsed.headers() {
        if header.name == HeaderName::From {
            if from.is_some() {
                return Err("the message has more than one From field");
            }
            from = Some(&header.value);
        }
        present.push(header.name.as_str().to_string());
    }
    let Some(HeaderValue::Address(address)) = from else {
        return Err("the message has no From address");
    };
    let mut domain: Option<String> = None;
    for addr in address.iter() {
        let Some((_, d)) = addr.address().and_then(|a| a.rsplit_once('@')) else {
            return Err("a From mailbox has no domain");
        };
        let d = d.trim_end_matches('.').to_ascii_lowercase();
        match &domain {
            Some(first) if *first != d => return Err("the From field names several domains"),
            Some(_) => {}
            None => domain = Some(d),
        }
    }
    Ok(Headers {
        from_domain: domain.ok_or("the message has no From address")?,
        present,
    })
}

/// mail-auth's signer owns its key; this lends it one of ours for one
/// signature, so that the header list can differ per message.
struct Borrowed<'a>(&'a DkimKey);

impl crypto::SigningKey for Borrowed<'_> {
    type Hasher = <DkimKey as crypto::SigningKey>::Hasher;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        crypto::SigningKey::sign(self.0, input)
    }

    fn algorithm(&self) -> crypto::Algorithm {
        crypto::SigningKey::algorithm(self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::time::Instant;

    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, ResolverCache, Txt};

    use super::*;
    use crate::key::{Algorithm, generate};

    /// The verifier's DNS: the one record that `qsctl dkim show` prints.
    struct Zone(Vec<(String, Txt)>);

    impl Zone {
        fn of(store: &KeyStore) -> Zone {
            Zone(
                store
                    .signing_keys()
                    .map(|k| {
                        let record = k.info.dns_record();
                        let key = DomainKey::parse(record.strings().concat().as_bytes()).unwrap();
                        (format!("{}.", record.name), Txt::DomainKey(Arc::new(key)))
                    })
                    .collect(),
            )
        }
    }

    impl ResolverCache<Box<str>, Txt> for Zone {
        fn get<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            self.0
                .iter()
                .find(|(n, _)| {
                    let key: Box<str> = n.as_str().into();
                    std::borrow::Borrow::<Q>::borrow(&key) == name
                })
                .map(|(_, txt)| txt.clone())
        }
        fn remove<Q>(&self, _: &Q) -> Option<Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            None
        }
        fn insert(&self, _: Box<str>, _: Txt, _: Instant) {}
    }

    /// mail-auth's verdicts on every signature of `message`.
    fn verify(zone: &Zone, message: &[u8]) -> Vec<DkimResult> {
        let authenticator = MessageAuthenticator::new_system_conf()
            .or_else(|_| MessageAuthenticator::new_cloudflare())
            .unwrap();
        let parsed = AuthenticatedMessage::parse(message).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            authenticator
                .verify_dkim(mail_auth::Parameters::new(&parsed).with_txt_cache(zone))
                .await
                .into_iter()
                .map(|o| o.result().clone())
                .collect()
        })
    }

    fn signed(header: &str, message: &[u8]) -> Vec<u8> {
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(message);
        out
    }

    const MESSAGE: &[u8] = b"From: Alice <alice@example.org>\r\n\
        To: bob@far.example\r\n\
        Subject: hello\r\n\
        Date: Mon, 1 Dec 2026 10:00:00 +0000\r\n\
        Message-ID: <1@example.org>\r\n\
        Received: from somewhere\r\n\
        X-Mailer: test\r\n\
        \r\n\
        Line one.\r\n\
        .leading dot\r\n";

    fn store_with(algorithm: Algorithm, domain: &str) -> (tempfile::TempDir, KeyStore) {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), domain, "s1", algorithm).unwrap();
        let store = KeyStore::load(dir.path()).unwrap();
        (dir, store)
    }

    fn sign_ok(store: &KeyStore, message: &[u8]) -> String {
        match store.sign(message) {
            Signing::Signed { header, .. } => header,
            other => panic!("not signed: {other:?}"),
        }
    }

    #[test]
    fn ed25519_and_rsa_signatures_verify_and_name_what_they_sign() {
        for algorithm in [Algorithm::Ed25519, Algorithm::Rsa] {
            let (_dir, store) = store_with(algorithm, "example.org");
            let zone = Zone::of(&store);
            let header = sign_ok(&store, MESSAGE);
            assert!(header.starts_with("DKIM-Signature: v=1; a="), "{header}");
            assert!(header.ends_with(";\r\n"), "{header}");
            let a = match algorithm {
                Algorithm::Ed25519 => "a=ed25519-sha256;",
                Algorithm::Rsa => "a=rsa-sha256;",
            };
            assert!(header.contains(a), "{header}");
            assert!(
                header.contains("s=s1; d=example.org; c=relaxed/relaxed;"),
                "{header}"
            );
            let unfolded = header.replace("\r\n\t", "");
            let h = unfolded
                .split("h=")
                .nth(1)
                .and_then(|rest| rest.split(';').next())
                .unwrap()
                .to_ascii_lowercase();
            let mut names: Vec<&str> = h.split(':').collect();
            // From twice (over-signed); trace and unknown fields not at all.
            assert_eq!(names.iter().filter(|n| **n == "from").count(), 2, "{h}");
            names.sort();
            assert_eq!(
                names,
                ["date", "from", "from", "message-id", "subject", "to"],
                "{h}"
            );
            assert!(!unfolded.contains("l="), "no body length: {header}");
            let message = signed(&header, MESSAGE);
            assert_eq!(verify(&zone, &message), [DkimResult::Pass], "{algorithm}");
        }
    }

    #[test]
    fn changes_on_the_way_break_the_signature_but_refolding_does_not() {
        let (_dir, store) = store_with(Algorithm::Ed25519, "example.org");
        let zone = Zone::of(&store);
        let header = sign_ok(&store, MESSAGE);
        let message = signed(&header, MESSAGE);
        let text = String::from_utf8(message).unwrap();
        let fails = |changed: String| {
            // A changed body is mail-auth's `Neutral` (RFC 6376 §6.1.3: the
            // signature is ignored), a changed header its `Fail`.
            let results = verify(&zone, changed.as_bytes());
            assert!(
                matches!(
                    results.as_slice(),
                    [DkimResult::Fail(_) | DkimResult::Neutral(_)]
                ),
                "{results:?} for {changed}"
            );
        };
        fails(text.replace("Line one.", "Line 1."));
        fails(text.replace("Subject: hello", "Subject: hullo"));
        // A second From, above or below the first, is caught by over-signing.
        fails(text.replacen(
            "From: Alice",
            "From: mallory@evil.example\r\nFrom: Alice",
            1,
        ));
        fails(text.replacen("To: bob", "From: mallory@evil.example\r\nTo: bob", 1));
        // Relaxed canonicalization: folding, spacing and trailing blank
        // lines may change; so may unsigned fields.
        let refolded = text
            .replacen("Subject: hello", "Subject:\r\n   hello  ", 1)
            .replacen("X-Mailer: test", "X-Mailer: other", 1)
            + "\r\n\r\n";
        assert_eq!(verify(&zone, refolded.as_bytes()), [DkimResult::Pass]);
    }

    #[test]
    fn the_from_domain_or_its_nearest_parent_with_a_key_signs() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), "example.org", "s1", Algorithm::Ed25519).unwrap();
        generate(dir.path(), "lists.example.org", "s1", Algorithm::Ed25519).unwrap();
        let store = KeyStore::load(dir.path()).unwrap();
        let d = |from: &str| {
            let message = format!("From: {from}\r\nSubject: x\r\n\r\nbody\r\n");
            match store.sign(message.as_bytes()) {
                Signing::Signed { domain, .. } => Ok(domain),
                Signing::NoKey { from_domain } => Err(from_domain),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(d("a@example.org"), Ok("example.org".into()));
        assert_eq!(d("a@EXAMPLE.org"), Ok("example.org".into()));
        assert_eq!(d("a@news.example.org"), Ok("example.org".into()));
        assert_eq!(d("a@lists.example.org"), Ok("lists.example.org".into()));
        assert_eq!(d("a@x.lists.example.org"), Ok("lists.example.org".into()));
        // Not a subdomain: a name that merely ends the same way.
        assert_eq!(d("a@badexample.org"), Err("badexample.org".into()));
        assert_eq!(d("a@elsewhere.example"), Err("elsewhere.example".into()));
        assert_eq!(d("a@org"), Err("org".into()));
    }

    #[test]
    fn messages_without_one_from_domain_are_not_signed() {
        let (_dir, store) = store_with(Algorithm::Ed25519, "example.org");
        for (message, why) in [
            (&b"Subject: x\r\n\r\nbody\r\n"[..], "no From address"),
            (
                b"From: a@example.org\r\nFrom: b@example.org\r\n\r\nbody\r\n",
                "more than one From",
            ),
            (
                b"From: a@example.org, b@elsewhere.example\r\n\r\nbody\r\n",
                "several domains",
            ),
            (b"From: undisclosed\r\n\r\nbody\r\n", "no domain"),
        ] {
            match store.sign(message) {
                Signing::NoFromDomain { reason } => assert!(reason.contains(why), "{reason}"),
                other => panic!("{other:?} for {}", String::from_utf8_lossy(message)),
            }
        }
        // Several mailboxes of one domain, in a group too, are one domain.
        let group = b"From: Team: a@example.org, b@Example.org;\r\nSubject: x\r\n\r\nb\r\n";
        assert!(matches!(store.sign(group), Signing::Signed { .. }));
        assert_eq!(
            from_domain(b"From: \"Alice, A.\" <alice@example.org>\r\n\r\n"),
            Ok("example.org".to_string())
        );
    }

    #[test]
    fn the_newest_key_of_a_domain_signs_and_the_older_ones_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let old = generate(dir.path(), "example.org", "old", Algorithm::Ed25519).unwrap();
        let new = generate(dir.path(), "example.org", "new", Algorithm::Ed25519).unwrap();
        // Make the order plain whatever the file system's time resolution.
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&old.path)
            .unwrap()
            .set_modified(past)
            .unwrap();
        let store = KeyStore::load(dir.path()).unwrap();
        let keys: Vec<&str> = store
            .signing_keys()
            .map(|k| k.info.selector.as_str())
            .collect();
        assert_eq!(keys, ["new"]);
        assert_eq!(store.older().len(), 1);
        assert_eq!(store.older()[0].selector, "old");
        assert!(matches!(
            store.sign(MESSAGE),
            Signing::Signed { selector, .. } if selector == new.selector
        ));
        let debug = format!("{:?}", store);
        assert!(
            debug.contains("<redacted>") && !debug.contains("PRIVATE"),
            "{debug}"
        );
    }

    #[test]
    fn an_empty_store_signs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::load(&dir.path().join("none")).unwrap();
        assert!(store.is_empty());
        assert_eq!(
            store.sign(MESSAGE),
            Signing::NoKey {
                from_domain: "example.org".into()
            }
        );
    }
}
