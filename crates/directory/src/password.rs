//! Password hashing: argon2id, PHC strings, a random 16-byte salt.

use std::sync::Mutex;

use argon2::password_hash::{self, Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

/// argon2's working memory (19 MiB with the default parameters), kept for
/// the next check instead of being freed. Allocating and freeing that much
/// for every login leaves the allocator's heap fragmented: a few hundred
/// logins used to leave a server with hundreds of MiB it could not give
/// back. At most [`crate::MAX_CONCURRENT_HASHES`] buffers are kept (the
/// servers hash no more at once).
static SPARE_MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// A buffer of `blocks` blocks, from the spares if one fits.
fn take_memory(blocks: usize) -> Vec<Block> {
    let spare = SPARE_MEMORY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop();
    match spare {
        Some(mut memory) => {
            memory.resize(blocks, Block::default());
            memory
        }
        None => vec![Block::default(); blocks],
    }
}

/// Keeps `memory` for a later check, unless enough are kept already.
fn give_back(memory: Vec<Block>) {
    let mut spares = SPARE_MEMORY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if spares.len() < crate::MAX_CONCURRENT_HASHES {
        spares.push(memory);
    }
}

/// What `Argon2::verify_password` does, with working memory from the spares.
fn argon2_verify(hash: &PasswordHash<'_>, password: &Secret) -> password_hash::Result<()> {
    #[cfg(test)]
    tests::CHECKS.with(|c| c.set(c.get() + 1));
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return Err(password_hash::Error::Password);
    };
    let algorithm = Algorithm::try_from(hash.algorithm)?;
    let version = hash
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let params = Params::try_from(hash)?;
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let mut memory = take_memory(params.block_count());
    let mut computed = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.expose(),
        salt_bytes,
        &mut computed,
        &mut memory[..],
    );
    give_back(memory);
    hashed?;
    // `Output`'s equality is constant-time.
    if Output::new(&computed)? == *expected {
        Ok(())
    } else {
        Err(password_hash::Error::Password)
    }
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
    fn the_parameters_come_from_the_stored_hash() {
        // A hash made with other parameters (a smaller memory cost, argon2i,
        // as another tool might have written it), then one with the defaults:
        // the kept working memory is resized for each.
        let small = Params::new(1024, 1, 1, None).unwrap();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let other = Argon2::new(Algorithm::Argon2i, Version::V0x13, small)
            .hash_password(b"other tool", &salt)
            .unwrap()
            .to_string();
        assert!(
            other.starts_with("$argon2i$v=19$m=1024,t=1,p=1$"),
            "{other}"
        );
        for _ in 0..2 {
            assert_eq!(check(&other, &Secret::from("other tool")), Check::Match);
            assert_eq!(check(&other, &Secret::from("other tooL")), Check::Mismatch);
            let ours = hash(&Secret::from("ours")).unwrap();
            assert_eq!(check(&ours, &Secret::from("ours")), Check::Match);
        }
        let kept = SPARE_MEMORY.lock().unwrap().len();
        assert!((1..=crate::MAX_CONCURRENT_HASHES).contains(&kept), "{kept}");
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
