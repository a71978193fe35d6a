//! qs-directory — the domains, users, aliases and postmaster of a Quicksilver site.
//!
//! # Description
//!
//! One source of truth for every module. smtp-server asks whether a recipient
//! is ours and who may send as what, core-queue asks where a recipient's mail
//! goes, imap-server and pop3-server check logins, and `qsctl` changes it all.
//!
//! * **Domains.** A local domain, or a domain alias that stands for one
//!   (`x@company.example` reaches `x@enterprise.example`). Aliases of aliases are refused.
//! * **Users** are identified by their full address, so two domains can each
//!   have their own `jean`. A user has a display name, an argon2id password
//!   hash, an enabled flag (a disabled user cannot log in), optional
//!   forwarding (targets, keep a copy or not) and POP3 options. Users live in
//!   real domains, not in domain aliases.
//! * **Aliases** send an address's mail to one or more targets, local or
//!   remote. Each real domain may have a catch-all address for unknown local parts.
//! * **Postmaster.** `postmaster@` every local domain reaches the postmaster
//!   user set by `qsctl init` (RFC 5321 §4.5.1) unless an explicit alias or
//!   user of that address exists.
//!
//! [`Snapshot::resolve`] applies, in order: a foreign domain is
//! [`Resolution::NotLocal`]; domain aliases are followed; an alias or user of
//! the local part; the same without the subaddress (`alice+news` → `alice`,
//! RFC 5233; the separator is configurable); postmaster; the catch-all;
//! else [`Resolution::Unknown`]. Domains and local parts compare
//! case-insensitively; the stored local part keeps the case it was created with.
//! Alias targets are returned, not expanded: the router resolves each in turn
//! and must bound the depth (aliases may form loops through one another).
//!
//! # Addresses
//!
//! [`parse_address`] takes RFC 5321 dot-atom or quoted local parts and
//! host-name domains, with UTF-8 (RFC 6531). It refuses address literals, '/',
//! NUL, CR, LF and all control characters, spaces outside quotes, local parts
//! over 64 octets. Quotes are dropped when not needed (`"bob"@x` is `bob@x`).
//! Logins are full addresses; a login with a subaddress names nobody.
//!
//! # File format and durability
//!
//! The whole directory is one JSON file whose path the caller gives (by
//! convention `<data_dir>/directory.json`):
//!
//! ```json
//! {
//!   "version": 1,
//!   "postmaster": "admin@example.test",
//!   "domains": [
//!     { "name": "example.test", "catch_all": "admin@example.test" },
//!     { "name": "example.org", "alias_of": "example.test" }
//!   ],
//!   "users": [
//!     {
//!       "address": "admin@example.test",
//!       "display_name": "Site Admin",
//!       "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$…$…",
//!       "enabled": true,
//!       "forward": { "targets": [], "keep_copy": true },
//!       "pop3": { "ignore_dele": false, "only_unread": false }
//!     }
//!   ],
//!   "aliases": [
//!     { "address": "sales@example.test", "targets": ["admin@example.test", "rep@partner.example"] }
//!   ]
//! }
//! ```
//!
//! `version` is required; a file of another version is refused with a message
//! saying so. Unknown fields are refused; optional fields take the defaults
//! shown. Every change takes an exclusive lock (`flock` on `<file>.lock`
//! beside it), reads the file afresh, applies and checks the change, writes a
//! temporary file in the same folder (mode 0600), fsyncs it, renames it over
//! the file and fsyncs the folder; so two `qsctl` runs at once lose nothing,
//! and a crash (even SIGKILL) leaves the old file or the new one, never a mix.
//! A temporary file left by a crash is ignored by readers and removed by the
//! next writer. A change that fails leaves the file untouched.
//!
//! Readers take no lock. [`Directory::snapshot`] stats the file on every call
//! (device, inode, size, modification time) and reloads it when it changed,
//! so a user added with `qsctl` can log in to a running server at once. A file
//! that has turned unreadable or invalid is logged and the last good version
//! kept; [`Directory::open`] and [`Directory::refresh`] return the error,
//! naming the file. Unix only (modes, inodes).
//!
//! Removals are refused while something still refers to what is removed (a
//! domain with users, a user an alias points to, the postmaster user): the
//! error names the first referrer. New local targets must exist.
//!
//! # Security
//!
//! Passwords are hashed with argon2id (the argon2 crate's defaults: m=19 MiB,
//! t=2, p=1) and a random 16-byte salt, stored as PHC strings; no password is
//! stored, printed or logged in clear. They travel in [`Secret`], whose `Debug`
//! prints `<redacted>` and which zeroes its bytes on drop. A login check
//! always costs one argon2 computation: unknown and malformed logins are
//! checked against a fixed dummy hash, and disabled users against their own,
//! so timing does not tell which users exist. [`Directory::verify`] hashes on
//! tokio's blocking pool. Failed logins are logged at debug level, with the
//! address only when it names a user (an unknown login may be a mistyped
//! password). The directory file and its lock file are mode 0600.
//!
//! A login that succeeded is remembered by the process for a short time
//! ([`credentials_cache`], Dovecot's `auth_cache`): the same user and password
//! again answer without hashing. The cache keeps an HMAC-SHA256 tag, under a
//! random key made at start, of the address, the stored hash and the password,
//! never the password; a changed password (a new stored hash), a removed or
//! disabled user never match, and a wrong password is always hashed. Entries
//! live at most `ttl` (600 s by default) and at most `max_entries` (1024) are
//! kept ([`Directory::configure_credentials_cache`]; `[directory]`
//! `credentials_cache_secs` and `credentials_cache_entries` in the servers).
//!
//! # Configuration
//!
//! [`Options::subaddress_separator`]: `Some('+')` by default, `None` to turn
//! subaddressing off, else one of ``!#$%&'*+-=?^_`{|}~``. The path of the
//! directory file comes from the data folder of the config file.
//!
//! # Standards
//!
//! RFC 5321 §4.1.2 (address syntax), §4.5.1 (postmaster), §4.5.3.1 (limits);
//! RFC 6531 (UTF-8 addresses); RFC 5233 (subaddresses); RFC 9106 (Argon2).

mod address;
pub mod credentials_cache;
mod directory;
mod error;
mod model;
mod password;
mod secret;
mod snapshot;
mod store;

pub mod lists;
pub mod mailing_list;
pub use address::{Address, MAX_DOMAIN_LEN, MAX_LOCAL_LEN, parse_address, parse_domain};
pub use credentials_cache::CredentialsCacheSettings;
pub use directory::{Directory, MAX_CONCURRENT_HASHES, Options};
pub use error::{Error, Result};
pub use model::{Alias, Domain, FORMAT_VERSION, Forward, Pop3Options, User};
pub use secret::Secret;
pub use snapshot::{Resolution, Snapshot, UserRef, VerifiedUser};
