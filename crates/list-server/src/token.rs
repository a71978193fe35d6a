//! Signed tokens: what a confirmation reply, a web link or a one-click
//! unsubscribe carries, and the short signatures in bounce addresses.
//!
//! A token is `base64url(payload) "." base64url(HMAC-SHA256(key, payload)[..16])`;
//! the payload names the action, the list, the address or held post it
//! concerns, an expiry (seconds since the epoch) and a random nonce. Without
//! the key (`<data_dir>/lists/.secret`, 32 random bytes, mode 0600, made on
//! first start) nobody can make one, and changing any byte breaks the
//! signature. The nonce makes each token single-use: the server records it
//! when the token is used (see [`crate::actions`]) and refuses it afterwards;
//! a form token ([`Action::Form`]) is not recorded, since sending the form
//! again only asks for the same confirmation, which the server sends once.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// Bytes of the signature kept in a token.
const MAC_LEN: usize = 16;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add the address to the list.
    Subscribe,
    /// Remove the address from the list.
    Unsubscribe,
    /// Remove the address at once (the one-click link in a post, RFC 8058).
    OneClick,
    /// Approve or reject a held post (the subject is its id).
    Moderate,
    /// Send the web page's subscription form (the subject is the browser's
    /// form cookie): the form's CSRF token, which changes nothing by itself.
    Form,
}

impl Action {
    fn code(self) -> &'static str {
        match self {
            Action::Subscribe => "s",
            Action::Unsubscribe => "u",
            Action::OneClick => "o",
            Action::Moderate => "m",
            Action::Form => "f",
        }
    }

    fn from_code(code: &str) -> Option<Action> {
        Some(match code {
            "s" => Action::Subscribe,
            "u" => Action::Unsubscribe,
            "o" => Action::OneClick,
            "m" => Action::Moderate,
            "f" => Action::Form,
            _ => return None,
        })
    }
}

/// A verified token's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What it allows.
    pub action: Action,
    /// The list.
    pub list: String,
    /// The member's address, or the held post's id.
    pub subject: String,
    /// When it stops working, seconds since the epoch.
    pub expires: u64,
    /// Random; recorded when the token is used.
    pub nonce: String,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token of ours, or changed.
    #[error("this link or token is not valid")]
    Invalid,
    /// Too old.
    #[error("this link or token has expired")]
    Expired,
    /// Already used once.
    #[error("this link or token has already been used")]
    Used,
}

/// Makes and checks tokens with the installation's key.
#[derive(Clone)]
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    /// A signer with the key `secret`.
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Reads the key file, creating it (32 random bytes, mode 0600) when
    /// missing; a key file that is too short is an error, not replaced.
    pub fn load_or_create(path: &Path) -> std::io::Result<Signer> {
        match fs::read(path) {
            Ok(bytes) if bytes.len() >= 32 => return Ok(Signer::new(&bytes)),
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} holds fewer than 32 bytes; remove it to make a new key",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(folder) = path.parent() {
            fs::create_dir_all(folder)?;
        }
        let secret: [u8; 32] = rand::random();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match &mut file {
            Ok(f) => {
                f.write_all(&secret)?;
                f.sync_all()?;
                Ok(Signer::new(&secret))
            }
            // Another process made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(Signer::new(&fs::read(path)?))
            }
            Err(_) => file.map(|_| Signer::new(&secret)),
        }
    }

    /// A new token.
    pub fn make(&self, action: Action, list: &str, subject: &str, expires: u64) -> String {
        let nonce = format!("{:016x}", rand::random::<u64>());
        let payload = format!("{}\n{list}\n{subject}\n{expires}\n{nonce}", action.code());
        let mac = hmac::sign(&self.key, payload.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(&mac.as_ref()[..MAC_LEN])
        )
    }

    /// Checks a token's signature and expiry (not whether it was used).
    pub fn verify(&self, token: &str, now: u64) -> Result<Token, TokenError> {
        let (payload, mac) = token.trim().split_once('.').ok_or(TokenError::Invalid)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Invalid)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TokenError::Invalid)?;
        let expected = hmac::sign(&self.key, &payload);
        if mac.len() != MAC_LEN || !constant_time_eq(&mac, &expected.as_ref()[..MAC_LEN]) {
            return Err(TokenError::Invalid);
        }
        let text = String::from_utf8(payload).map_err(|_| TokenError::Invalid)?;
        let parts: Vec<&str> = text.split('\n').collect();
        let [action, list, subject, expires, nonce] = parts[..] else {
            return Err(TokenError::Invalid);
        };
        let token = Token {
            action: Action::from_code(action).ok_or(TokenError::Invalid)?,
            list: list.to_string(),
            subject: subject.to_string(),
            expires: expires.parse().map_err(|_| TokenError::Invalid)?,
            nonce: nonce.to_string(),
        };
        if token.expires < now {
            return Err(TokenError::Expired);
        }
        Ok(token)
    }

    /// A short signature (`len` hex digits) of `data`, for bounce addresses.
    pub fn short_mac(&self, data: &str, len: usize) -> String {
        let mac = hmac::sign(&self.key, data.as_bytes());
        let hex: String = mac.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        hex[..len.min(hex.len())].to_string()
    }
}

/// Compares two byte strings in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_cannot_be_forged() {
        let signer = Signer::new(&[7; 32]);
        let t = signer.make(Action::Subscribe, "team@example.test", "a@b.example", 1000);
        let back = signer.verify(&t, 999).unwrap();
        assert_eq!(back.action, Action::Subscribe);
        assert_eq!(back.list, "team@example.test");
        assert_eq!(back.subject, "a@b.example");
        assert_eq!(signer.verify(&t, 1001), Err(TokenError::Expired));
        // Another key, a changed payload, a truncated token: all refused.
        let other = Signer::new(&[8; 32]);
        assert_eq!(other.verify(&t, 0), Err(TokenError::Invalid));
        let (payload, mac) = t.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(format!(
            "u\nteam@example.test\na@b.example\n1000\n{}",
            "0".repeat(16)
        ));
        assert_eq!(
            signer.verify(&format!("{forged_payload}.{mac}"), 0),
            Err(TokenError::Invalid)
        );
        assert_eq!(signer.verify(payload, 0), Err(TokenError::Invalid));
        assert_eq!(signer.verify("garbage", 0), Err(TokenError::Invalid));
        assert_eq!(signer.verify("", 0), Err(TokenError::Invalid));
        // Two tokens for the same thing differ (their nonces do).
        let t2 = signer.make(Action::Subscribe, "team@example.test", "a@b.example", 1000);
        assert_ne!(t, t2);
    }

    #[test]
    fn the_key_file_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lists/.secret");
        let a = Signer::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Signer::load_or_create(&path).unwrap();
        let t = a.make(Action::OneClick, "l@x", "m@y", u64::MAX);
        assert!(b.verify(&t, 0).is_ok());
        fs::write(&path, b"short").unwrap();
        assert!(Signer::load_or_create(&path).is_err());
    }
}
