//! The stable hash that names a delivery key's marker and staging file.

/// FNV-1a, 128-bit: simple, defined by its constants, and the same on every platform and
/// Rust version (unlike std's `DefaultHasher`), so markers written today still match
/// after an upgrade.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u128::from(b)).wrapping_mul(PRIME)
    })
}

/// The key's hash as 32 lower-case hex digits: safe as a file name whatever the key holds.
pub(crate) fn key_hash(key: &str) -> String {
    format!("{:032x}", fnv1a_128(key.as_bytes()))
}

/// True if `name` looks like a [`key_hash`].
pub(crate) fn is_key_hash(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_128_matches_the_reference_values() {
        assert_eq!(key_hash(""), "6c62272e07bb014262b821756295c58d");
        assert_eq!(key_hash("a"), "d228cb696f1a8caf78912b704e4a8964");
        assert_eq!(key_hash("foobar"), "343e1662793c64bf6f0d3597ba446f18");
    }

    #[test]
    fn hashes_are_file_names() {
        let h = key_hash("Q1234:../../etc/passwd\0@example.org");
        assert!(is_key_hash(&h));
        assert!(!is_key_hash("not-a-hash"));
        assert_ne!(key_hash("q:a@b"), key_hash("q:a@c"));
    }
}
