//! Maildir file names: the message identity, its size and its flags.
//!
//! A message in `new/` is named `<secs>.<unique>.<host>,S=<size>`; in `cur/` the same name
//! carries `:2,<flags>`. Everything before `:` is the base name, the message's identity.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, StoreError};

/// Longest message identity accepted from outside, in bytes (a file name holds 255).
const MAX_ID_LEN: usize = 200;

/// The stable identity of a message: its Maildir base name, the part of the file name
/// before `:2,`. Flag changes and the move from `new/` to `cur/` keep it; it is the key
/// the persistent IMAP UID index uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(String);

impl MessageId {
    /// Checks a base name coming from outside (a UID index, a client) and wraps it.
    pub fn new(id: &str) -> Result<MessageId> {
        let refuse = |reason| StoreError::InvalidName {
            what: "message id",
            name: id.to_owned(),
            reason,
        };
        if id.is_empty() {
            return Err(refuse("empty"));
        }
        if id.len() > MAX_ID_LEN {
            return Err(refuse("too long"));
        }
        if id.starts_with('.') {
            return Err(refuse("starts with '.'"));
        }
        if id.contains(['/', ':', '\0']) {
            return Err(refuse("contains '/', ':' or NUL"));
        }
        Ok(MessageId(id.to_owned()))
    }

    /// The base name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One of the six standard Maildir flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// `D`: the message is a draft (IMAP `\Draft`).
    Draft,
    /// `F`: flagged for attention (IMAP `\Flagged`).
    Flagged,
    /// `P`: passed on, forwarded or bounced.
    Passed,
    /// `R`: replied to (IMAP `\Answered`).
    Replied,
    /// `S`: seen (IMAP `\Seen`).
    Seen,
    /// `T`: trashed, to be removed (IMAP `\Deleted`).
    Trashed,
}

impl Flag {
    /// All six, in the (ASCII) order they appear in a file name.
    pub const ALL: [Flag; 6] = [
        Flag::Draft,
        Flag::Flagged,
        Flag::Passed,
        Flag::Replied,
        Flag::Seen,
        Flag::Trashed,
    ];

    /// The flag's letter in a Maildir file name.
    pub fn letter(self) -> char {
        match self {
            Flag::Draft => 'D',
            Flag::Flagged => 'F',
            Flag::Passed => 'P',
            Flag::Replied => 'R',
            Flag::Seen => 'S',
            Flag::Trashed => 'T',
        }
    }
}

/// The flags of a message: any ASCII letters of a Maildir `:2,` suffix. Upper case
/// letters are flags ([`Flag`] names the six standard ones); lower case letters are
/// keywords, kept as they are so that a flag change never drops them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u64);

impl Flags {
    /// No flags.
    pub fn new() -> Flags {
        Flags(0)
    }

    /// Parses the letters after `:2,`; anything that is not an ASCII letter is ignored.
    pub fn from_info(info: &str) -> Flags {
        info.chars().fold(Flags::new(), |flags, c| match bit(c) {
            Some(b) => Flags(flags.0 | b),
            None => flags,
        })
    }

    /// These flags with `flag` set.
    #[must_use]
    pub fn with(self, flag: Flag) -> Flags {
        let mut flags = self;
        flags.insert(flag);
        flags
    }

    /// Sets a flag.
    pub fn insert(&mut self, flag: Flag) {
        self.0 |= bit(flag.letter()).unwrap_or(0);
    }

    /// Clears a flag.
    pub fn remove(&mut self, flag: Flag) {
        self.0 &= !bit(flag.letter()).unwrap_or(0);
    }

    /// True if the flag is set.
    pub fn contains(self, flag: Flag) -> bool {
        self.0 & bit(flag.letter()).unwrap_or(0) != 0
    }

    /// The standard flags that are set, in file name order.
    pub fn iter(self) -> impl Iterator<Item = Flag> {
        Flag::ALL.into_iter().filter(move |f| self.contains(*f))
    }

    /// True if no letter at all is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True if the ASCII letter `c` is set (an upper-case flag or a lower-case keyword).
    pub fn has_letter(self, c: char) -> bool {
        bit(c).is_some_and(|b| self.0 & b != 0)
    }

    /// These flags with the ASCII letter `c` set (anything else is ignored).
    #[must_use]
    pub fn with_letter(self, c: char) -> Flags {
        Flags(self.0 | bit(c).unwrap_or(0))
    }

    /// These flags without the ASCII letter `c`.
    #[must_use]
    pub fn without_letter(self, c: char) -> Flags {
        Flags(self.0 & !bit(c).unwrap_or(0))
    }

    /// The keyword letters (`a` to `z`) that are set, in order.
    pub fn keyword_letters(self) -> impl Iterator<Item = char> {
        ('a'..='z').filter(move |&c| self.has_letter(c))
    }
}

/// Writes the letters in ASCII order, as the `:2,` suffix wants them.
impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in ('A'..='Z').chain('a'..='z') {
            if bit(c).is_some_and(|b| self.0 & b != 0) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// The bit of an ASCII letter: `A`..`Z` are bits 0..25, `a`..`z` bits 26..51.
fn bit(c: char) -> Option<u64> {
    match c {
        'A'..='Z' => Some(1 << (c as u32 - 'A' as u32)),
        'a'..='z' => Some(1 << (26 + c as u32 - 'a' as u32)),
        _ => None,
    }
}

/// What a file name in `new/` or `cur/` says about its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedName {
    pub id: MessageId,
    pub size: Option<u64>,
    pub flags: Flags,
}

/// Reads a file name from `new/` or `cur/`. Hidden files (a leading `.`) and names that
/// cannot be a message give `None`.
pub(crate) fn parse_file_name(name: &str) -> Option<ParsedName> {
    let (base, info) = match name.split_once(':') {
        Some((base, info)) => (base, Some(info)),
        None => (name, None),
    };
    if base.is_empty() || base.starts_with('.') || base.contains(['/', '\0']) {
        return None;
    }
    let flags = match info.and_then(|i| i.strip_prefix("2,")) {
        Some(letters) => Flags::from_info(letters),
        None => Flags::new(),
    };
    let size = base
        .split(',')
        .skip(1)
        .find_map(|field| field.strip_prefix("S="))
        .and_then(|s| s.parse().ok());
    Some(ParsedName {
        id: MessageId(base.to_owned()),
        size,
        flags,
    })
}

/// The file name of a message in `cur/`.
pub(crate) fn cur_name(id: &MessageId, flags: Flags) -> String {
    format!("{id}:2,{flags}")
}

/// Makes a host name safe for a Maildir file name. The Maildir specification asks for
/// `/` as `\057` and `:` as `\072`; `,` (which would confuse the `,S=` field), `\` and
/// control characters are written the same way. An empty name becomes `localhost`.
pub(crate) fn sanitize_hostname(host: &str) -> String {
    if host.is_empty() {
        return "localhost".to_owned();
    }
    let mut out = String::with_capacity(host.len());
    for c in host.chars() {
        if matches!(c, '/' | ':' | ',' | '\\') || c.is_control() {
            for byte in c.to_string().bytes() {
                out.push_str(&format!("\\{byte:03o}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Deliveries made by this process, for the `Q` part of unique names.
static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// A new base name `<secs>.M<usec>P<pid>Q<n>.<host>,S=<size>`: unique because no two
/// deliveries of one process share `n`, and no two processes share a pid at the same
/// microsecond.
pub(crate) fn new_base_name(host: &str, size: u64) -> MessageId {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    MessageId(format!(
        "{}.M{:06}P{}Q{}.{},S={}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        n,
        host,
        size
    ))
}

/// The number a base name starts with (its delivery time), for sorting.
pub(crate) fn leading_secs(id: &MessageId) -> u64 {
    let digits = id.0.split('.').next().unwrap_or_default();
    digits.parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_through_names() {
        let id = new_base_name("mx.example.org", 1234);
        let flags = Flags::new()
            .with(Flag::Trashed)
            .with(Flag::Seen)
            .with(Flag::Draft);
        let name = cur_name(&id, flags);
        assert!(name.ends_with(":2,DST"), "{name}");
        let parsed = parse_file_name(&name).unwrap();
        assert_eq!(parsed.id, id);
        assert_eq!(parsed.flags, flags);
        assert_eq!(parsed.size, Some(1234));
        for flag in Flag::ALL {
            assert_eq!(
                parsed.flags.contains(flag),
                flags.contains(flag),
                "{flag:?}"
            );
        }
    }

    #[test]
    fn every_flag_has_its_letter_in_order() {
        let all = Flag::ALL.iter().fold(Flags::new(), |f, x| f.with(*x));
        assert_eq!(all.to_string(), "DFPRST");
        let mut some = all;
        some.remove(Flag::Passed);
        some.remove(Flag::Draft);
        assert_eq!(some.to_string(), "FRST");
        assert_eq!(
            some.iter().collect::<Vec<_>>(),
            [Flag::Flagged, Flag::Replied, Flag::Seen, Flag::Trashed]
        );
    }

    #[test]
    fn keywords_and_unknown_letters_survive() {
        let flags = Flags::from_info("Sab,Z");
        assert_eq!(flags.to_string(), "SZab");
        assert!(flags.contains(Flag::Seen));
        assert!(flags.has_letter('b') && flags.has_letter('Z') && !flags.has_letter('c'));
        assert_eq!(flags.keyword_letters().collect::<String>(), "ab");
        let changed = flags.with_letter('q').without_letter('a').with_letter('1');
        assert_eq!(changed.to_string(), "SZbq");
    }

    #[test]
    fn names_from_other_software_parse() {
        let p = parse_file_name("1700000000.123_4.host:2,RS").unwrap();
        assert_eq!(p.id.as_str(), "1700000000.123_4.host");
        assert_eq!(p.size, None);
        assert!(p.flags.contains(Flag::Replied) && p.flags.contains(Flag::Seen));
        let p = parse_file_name("1.2.host,S=77,W=80:2,").unwrap();
        assert_eq!(p.size, Some(77));
        assert!(p.flags.is_empty());
        let p = parse_file_name("1.2.host:1,whatever").unwrap();
        assert!(p.flags.is_empty());
        assert_eq!(parse_file_name(".hidden"), None);
        assert_eq!(parse_file_name(":2,S"), None);
    }

    #[test]
    fn hostname_is_sanitised() {
        assert_eq!(sanitize_hostname("a/b:c"), "a\\057b\\072c");
        assert_eq!(sanitize_hostname("x,S=1"), "x\\054S=1");
        assert_eq!(sanitize_hostname(""), "localhost");
        let id = new_base_name(&sanitize_hostname("evil:2,host/x"), 5);
        let p = parse_file_name(id.as_str()).unwrap();
        assert_eq!(p.id, id);
        assert_eq!(p.size, Some(5));
        assert!(p.flags.is_empty());
    }

    #[test]
    fn base_names_are_unique_and_sortable() {
        let a = new_base_name("h", 1);
        let b = new_base_name("h", 1);
        assert_ne!(a, b);
        assert!(leading_secs(&a) > 1_600_000_000);
    }

    #[test]
    fn message_ids_from_outside_are_checked() {
        assert!(MessageId::new("1.2.host,S=3").is_ok());
        for bad in ["", ".x", "a/b", "a:2,S", "a\0b", "x".repeat(300).as_str()] {
            assert!(MessageId::new(bad).is_err(), "{bad:?}");
        }
    }
}
