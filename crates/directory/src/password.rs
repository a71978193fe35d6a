//! Password hashing: argon2id, PHC strings, a random 16-byte salt.

use argon2::Argon2;
use argon2::password_hash::{self, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Checked instead of a real hash when the login names nobody, so that an
/// unknown login costs what a known one does. Same algorithm and parameters as
/// new hashes (argon2id, m=19456, t=2, p=1); no password matches it in practice.
pub(crate) const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$qg8wsGRBwRQ16Kmv/nrcdQ$ZOnuW353M7tLxDDlj+6RH7sBlVtFuxVCxPGNYexbcH8";

/// Hashes a new password with argon2id, the argon2 crate's default parameters
/// and a fresh random salt; returns the PHC string.
pub(crate) fn hash(password: &Secret) -> Result<String> {
    if password.is_empty() {
        return Err(Error::EmptyPassword);
    }
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Hash(e.to_string()))?;
    let hash = Argon2::default()
        .hash_password(password.expose(), &salt)
        .map_err(|e| Error::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// The answer of [`check`] for a hash that could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// The password matches the hash.
    Match,
    /// It does not.
    Mismatch,
    /// The stored string is no usable PHC hash; the dummy hash was checked
    /// instead so the cost stays the same.
    Corrupt,
}

/// Checks `password` against the PHC string `phc`, always doing one full
/// argon2 computation.
pub(crate) fn check(phc: &str, password: &Secret) -> Check {
    match PasswordHash::new(phc) {
        Ok(parsed) if parsed.hash.is_some() && parsed.salt.is_some() => {
            match argon2_verify(&parsed, password) {
                Ok(()) => Check::Match,
                Err(password_hash::Error::Password) => Check::Mismatch,
                Err(_) => Check::Corrupt,
            }
        }
        _ => {
            burn(password);
            Check::Corrupt
        }
    }
}

/// Spends the time of one password check on the dummy hash.
pub(crate) fn burn(password: &Secret) {
    if let Ok(parsed) = PasswordHash::new(DUMMY_HASH) {
        let _ = argon2_verify(&parsed, password);
    }
}

fn argon2_verify(hash: &PasswordHash<'_>, password: &Secret) -> password_hash::Result<()> {
    #[cfg(test)]
    tests::CHECKS.with(|c| c.set(c.get() + 1));
    Argon2::default().verify_password(password.expose(), hash)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    use argon2::Params;

    use super::*;

    thread_local! {
        /// argon2 computations done by this thread, to prove that every path
        /// of a login check costs exactly one.
        pub(crate) static CHECKS: Cell<usize> = const { Cell::new(0) };
    }

    /// The number of argon2 checks `f` does on this thread.
    pub(crate) fn checks_during(f: impl FnOnce()) -> usize {
        let before = CHECKS.with(Cell::get);
        f();
        CHECKS.with(Cell::get) - before
    }

    #[test]
    fn hash_then_check() {
        let phc = hash(&Secret::from("s3cret pass")).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("s3cret"));
        assert_eq!(check(&phc, &Secret::from("s3cret pass")), Check::Match);
        assert_eq!(check(&phc, &Secret::from("s3cret pas")), Check::Mismatch);
        let other = hash(&Secret::from("s3cret pass")).unwrap();
        assert_ne!(phc, other, "salts must differ");
    }

    #[test]
    fn empty_password_refused() {
        assert!(matches!(hash(&Secret::from("")), Err(Error::EmptyPassword)));
    }

    #[test]
    fn dummy_hash_has_default_cost() {
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(parsed.algorithm, argon2::Algorithm::Argon2id.ident());
        let params = Params::try_from(&parsed).unwrap();
        let default = Params::default();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (default.m_cost(), default.t_cost(), default.p_cost())
        );
        assert!(parsed.hash.is_some() && parsed.salt.is_some());
        assert_eq!(checks_during(|| burn(&Secret::from("x"))), 1);
    }

    #[test]
    fn corrupt_hash_still_costs_one_check() {
        let mut n = 0;
        let result = Check::Corrupt;
        n += checks_during(|| assert_eq!(check("not a hash", &Secret::from("x")), result));
        n += checks_during(|| {
            assert_eq!(
                check("$argon2id$v=19$m=19456,t=2,p=1", &Secret::from("x")),
                result
            )
        });
        assert_eq!(n, 2);
    }
}
