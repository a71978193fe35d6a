//! Verified credentials, remembered for a short time, so that a client that
//! logs in again and again (a phone polling POP3 every few minutes, a client
//! opening several IMAP connections) costs one argon2id check per TTL instead
//! of one per login. Dovecot's `auth_cache` is the model.
//!
//! An entry is a tag, HMAC-SHA256 under a random key made when the process
//! starts (never written anywhere), of the user's canonical address, the
//! stored password hash and the password. Neither the password nor anything
//! that can be checked offline without that key is kept. Because the stored
//! hash is part of the tag, a changed password (a new hash, with a new salt)
//! can never match an entry made with the old one; a user removed or disabled
//! is found out from the directory before the cache is asked. Only successful
//! checks are remembered: a wrong password always costs a full check.
//!
//! Every entry lives at most `ttl` from the check that made it (a hit does not
//! extend it), and at most `max_entries` are kept; past that the oldest goes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use ring::hmac;

use crate::secret::Secret;

/// How long a verified login is remembered by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// How many verified logins are remembered by default.
pub const DEFAULT_MAX_ENTRIES: usize = 1024;

/// How the cache of verified credentials behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialsCacheSettings {
    /// How long a successful check is remembered; zero turns the cache off.
    pub ttl: Duration,
    /// The most entries kept; zero turns the cache off.
    pub max_entries: usize,
}

impl Default for CredentialsCacheSettings {
    fn default() -> Self {
        CredentialsCacheSettings {
            ttl: DEFAULT_TTL,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

impl CredentialsCacheSettings {
    fn is_off(&self) -> bool {
        self.ttl.is_zero() || self.max_entries == 0
    }
}

/// The tag of one set of credentials: what the cache keeps instead of them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Tag([u8; 32]);

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tag(<redacted>)")
    }
}

/// Successful password checks of the last `ttl`, at most `max_entries`.
pub(crate) struct CredentialsCache {
    settings: Mutex<CredentialsCacheSettings>,
    key: OnceLock<hmac::Key>,
    entries: Mutex<Entries>,
}

/// The tags with the time each was made, and the same in the order made
/// (which is also the order they expire in, every entry having the same TTL).
#[derive(Default)]
struct Entries {
    made: HashMap<Tag, Instant>,
    order: VecDeque<(Tag, Instant)>,
}

impl CredentialsCache {
    /// An empty cache.
    pub(crate) fn new(settings: CredentialsCacheSettings) -> CredentialsCache {
        CredentialsCache {
            settings: Mutex::new(settings),
            key: OnceLock::new(),
            entries: Mutex::new(Entries::default()),
        }
    }

    /// Changes the settings; forgets everything.
    pub(crate) fn configure(&self, settings: CredentialsCacheSettings) {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = settings;
        *self.lock_entries() = Entries::default();
    }

    fn settings(&self) -> CredentialsCacheSettings {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tag of `password` for the user `address` whose stored hash is
    /// `stored_hash`; `None` when the cache is off.
    pub(crate) fn tag(&self, address: &str, stored_hash: &str, password: &Secret) -> Option<Tag> {
        if self.settings().is_off() {
            return None;
        }
        let key = self.key.get_or_init(|| {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            let key = hmac::Key::new(hmac::HMAC_SHA256, &bytes);
            bytes.fill(0);
            std::hint::black_box(&bytes);
            key
        });
        let mut context = hmac::Context::with_key(key);
        // Each part with its length first, so no two triples give the same input.
        for part in [
            address.as_bytes(),
            stored_hash.as_bytes(),
            password.expose(),
        ] {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        let mut tag = [0u8; 32];
        tag.copy_from_slice(context.sign().as_ref());
        Some(Tag(tag))
    }

    /// Whether `tag` was remembered less than `ttl` before `now`.
    pub(crate) fn contains(&self, tag: &Tag, now: Instant) -> bool {
        let ttl = self.settings().ttl;
        let mut entries = self.lock_entries();
        entries.expire(now, ttl);
        entries
            .made
            .get(tag)
            .is_some_and(|made| now.saturating_duration_since(*made) < ttl)
    }

    /// Remembers a successful check made at `now`.
    pub(crate) fn insert(&self, tag: Tag, now: Instant) {
        let settings = self.settings();
        if settings.is_off() {
            return;
        }
        let mut entries = self.lock_entries();
        entries.expire(now, settings.ttl);
        if entries.made.contains_key(&tag) {
            // Checked twice at once: the first entry stands.
            return;
        }
        while entries.made.len() >= settings.max_entries {
            let Some((oldest, _)) = entries.order.pop_front() else {
                break;
            };
            entries.made.remove(&oldest);
        }
        entries.made.insert(tag, now);
        entries.order.push_back((tag, now));
    }

    /// How many entries are kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock_entries().made.len()
    }
}

impl Entries {
    /// Drops the entries made `ttl` or longer before `now`.
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some(&(tag, made)) = self.order.front() {
            if now.saturating_duration_since(made) < ttl {
                break;
            }
            self.order.pop_front();
            if self.made.get(&tag) == Some(&made) {
                self.made.remove(&tag);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g";

    fn cache(ttl_secs: u64, max_entries: usize) -> CredentialsCache {
        CredentialsCache::new(CredentialsCacheSettings {
            ttl: Duration::from_secs(ttl_secs),
            max_entries,
        })
    }

    fn pw(text: &str) -> Secret {
        Secret::new(text.as_bytes())
    }

    #[test]
    fn a_remembered_check_hits_and_others_miss() {
        let cache = cache(60, 16);
        let now = Instant::now();
        let tag = cache.tag("alice@example.test", HASH, &pw("right")).unwrap();
        assert!(!cache.contains(&tag, now), "nothing remembered yet");
        cache.insert(tag, now);
        assert!(cache.contains(&tag, now + Duration::from_secs(1)));
        let wrong = cache.tag("alice@example.test", HASH, &pw("wrong")).unwrap();
        assert!(!cache.contains(&wrong, now));
        let other_user = cache.tag("bob@example.test", HASH, &pw("right")).unwrap();
        assert!(!cache.contains(&other_user, now));
    }

    #[test]
    fn an_entry_expires_after_its_ttl_and_a_hit_does_not_extend_it() {
        let cache = cache(60, 16);
        let now = Instant::now();
        let tag = cache.tag("alice@example.test", HASH, &pw("right")).unwrap();
        cache.insert(tag, now);
        assert!(cache.contains(&tag, now + Duration::from_secs(59)));
        assert!(!cache.contains(&tag, now + Duration::from_secs(60)));
        assert_eq!(cache.len(), 0, "an expired entry is dropped");
    }

    #[test]
    fn a_new_stored_hash_never_matches_an_entry_of_the_old_one() {
        let cache = cache(60, 16);
        let now = Instant::now();
        let old = cache.tag("alice@example.test", HASH, &pw("same")).unwrap();
        cache.insert(old, now);
        let changed = HASH.replace("c2FsdHNhbHQ", "bmV3c2FsdA");
        let new = cache
            .tag("alice@example.test", &changed, &pw("same"))
            .unwrap();
        assert!(!cache.contains(&new, now));
    }

    #[test]
    fn the_parts_cannot_be_shifted_into_one_another() {
        let cache = cache(60, 16);
        let a = cache.tag("ab", "c", &pw("d")).unwrap();
        let b = cache.tag("a", "bc", &pw("d")).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn the_cache_is_bounded_and_drops_the_oldest() {
        let cache = cache(600, 3);
        let now = Instant::now();
        let tags: Vec<Tag> = (0..5)
            .map(|i| {
                cache
                    .tag(&format!("u{i}@example.test"), HASH, &pw("pw"))
                    .unwrap()
            })
            .collect();
        for (i, tag) in tags.iter().enumerate() {
            cache.insert(*tag, now + Duration::from_secs(i as u64));
        }
        assert_eq!(cache.len(), 3);
        let later = now + Duration::from_secs(10);
        assert!(!cache.contains(&tags[0], later));
        assert!(!cache.contains(&tags[1], later));
        assert!(tags[2..].iter().all(|t| cache.contains(t, later)));
    }

    #[test]
    fn the_password_is_not_kept() {
        let cache = cache(60, 16);
        let password = "a very particular password";
        let tag = cache
            .tag("alice@example.test", HASH, &pw(password))
            .unwrap();
        cache.insert(tag, Instant::now());
        // All the cache holds is the tag: 32 bytes that contain no part of it.
        let held = tag.0;
        assert!(
            !held
                .windows(4)
                .any(|w| password.as_bytes().windows(4).any(|p| p == w))
        );
        assert_eq!(format!("{tag:?}"), "Tag(<redacted>)");
    }

    #[test]
    fn a_cache_turned_off_remembers_nothing() {
        for off in [cache(0, 16), cache(60, 0)] {
            assert!(off.tag("alice@example.test", HASH, &pw("pw")).is_none());
        }
        let on = cache(60, 16);
        let tag = on.tag("alice@example.test", HASH, &pw("pw")).unwrap();
        on.insert(tag, Instant::now());
        on.configure(CredentialsCacheSettings {
            ttl: Duration::ZERO,
            max_entries: 16,
        });
        assert!(!on.contains(&tag, Instant::now()));
    }
}
