//! SEARCH (RFC 3501 §6.4.4): every key, evaluated against the selected folder. Flags,
//! sizes, UIDs and dates need no file; header and text keys parse each candidate
//! message (the date of the Date: field comes from the parse cache when it is there).

use chrono::{DateTime, NaiveDate, Utc};
use imap_next::imap_types::core::AString;
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use qs_mailstore::Flag;

use crate::message::SearchText;
use crate::selected::Msg;
use crate::store::letter_in;

/// Everything a key may look at for one message.
pub struct Candidate<'a> {
    /// The message.
    pub msg: &'a Msg,
    /// Its sequence number.
    pub seq: u32,
    /// Its size in bytes.
    pub size: u64,
    /// The day of its Date: field, when a key needs it.
    pub sent: Option<NaiveDate>,
    /// Its parsed text, when a key needs it.
    pub text: Option<&'a SearchText<'a>>,
}

/// What the folder says that applies to every message.
pub struct Context<'a> {
    /// The folder's keywords (the `i`th is the letter `a + i`).
    pub keywords: &'a [String],
    /// The number of messages (`*` in sequence sets).
    pub exists: u32,
    /// The highest UID (`*` in UID sets).
    pub max_uid: u32,
}

/// What the keys need beyond the view.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The Date: field.
    pub sent: bool,
    /// The parsed message.
    pub text: bool,
    /// The size (may need a stat).
    pub size: bool,
}

/// What a search key (and those inside it) needs.
pub fn needs(key: &SearchKey<'_>) -> Needs {
    let mut n = Needs::default();
    walk(key, &mut n);
    n
}

fn walk(key: &SearchKey<'_>, n: &mut Needs) {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().for_each(|k| walk(k, n)),
        SearchKey::Not(k) => walk(k, n),
        SearchKey::Or(a, b) => {
            walk(a, n);
            walk(b, n);
        }
        SearchKey::SentBefore(_) | SearchKey::SentOn(_) | SearchKey::SentSince(_) => n.sent = true,
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_) => n.text = true,
        SearchKey::Larger(_) | SearchKey::Smaller(_) => n.size = true,
        _ => {}
    }
}

/// True if a message matches a key.
pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_>, ctx: &Context<'_>) -> bool {
    let flags = c.msg.flags;
    let day = || {
        DateTime::<Utc>::from_timestamp(c.msg.date, 0)
            .unwrap_or_default()
            .date_naive()
    };
    let text = |s: &AString<'_>| String::from_utf8_lossy(s.as_ref()).to_lowercase();
    let field =
        |name: &str, s: &AString<'_>| c.text.is_some_and(|t| t.field_contains(name, &text(s)));
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| matches(k, c, ctx)),
        SearchKey::SequenceSet(set) => contains(set, c.seq, ctx.exists),
        SearchKey::Uid(set) => contains(set, c.msg.uid, ctx.max_uid),
        SearchKey::All => true,
        SearchKey::Answered => flags.contains(Flag::Replied),
        SearchKey::Deleted => flags.contains(Flag::Trashed),
        SearchKey::Draft => flags.contains(Flag::Draft),
        SearchKey::Flagged => flags.contains(Flag::Flagged),
        SearchKey::Seen => flags.contains(Flag::Seen),
        SearchKey::Unanswered => !flags.contains(Flag::Replied),
        SearchKey::Undeleted => !flags.contains(Flag::Trashed),
        SearchKey::Undraft => !flags.contains(Flag::Draft),
        SearchKey::Unflagged => !flags.contains(Flag::Flagged),
        SearchKey::Unseen => !flags.contains(Flag::Seen),
        SearchKey::Recent => c.msg.recent,
        SearchKey::Old => !c.msg.recent,
        SearchKey::New => c.msg.recent && !flags.contains(Flag::Seen),
        SearchKey::Keyword(k) => {
            letter_in(k.as_ref(), ctx.keywords).is_some_and(|l| flags.has_letter(l))
        }
        SearchKey::Unkeyword(k) => {
            !letter_in(k.as_ref(), ctx.keywords).is_some_and(|l| flags.has_letter(l))
        }
        SearchKey::Larger(n) => c.size > u64::from(*n),
        SearchKey::Smaller(n) => c.size < u64::from(*n),
        SearchKey::Before(d) => day() < *d.as_ref(),
        SearchKey::On(d) => day() == *d.as_ref(),
        SearchKey::Since(d) => day() >= *d.as_ref(),
        SearchKey::SentBefore(d) => c.sent.is_some_and(|s| s < *d.as_ref()),
        SearchKey::SentOn(d) => c.sent.is_some_and(|s| s == *d.as_ref()),
        SearchKey::SentSince(d) => c.sent.is_some_and(|s| s >= *d.as_ref()),
        SearchKey::Not(k) => !matches(k, c, ctx),
        SearchKey::Or(a, b) => matches(a, c, ctx) || matches(b, c, ctx),
        SearchKey::From(s) => field("From", s),
        SearchKey::To(s) => field("To", s),
        SearchKey::Cc(s) => field("Cc", s),
        SearchKey::Bcc(s) => field("Bcc", s),
        SearchKey::Subject(s) => field("Subject", s),
        SearchKey::Header(name, value) => {
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            field(&name, value)
        }
        SearchKey::Body(s) => c.text.is_some_and(|t| t.body_contains(&text(s))),
        SearchKey::Text(s) => c.text.is_some_and(|t| t.text_contains(&text(s))),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// True if `n` is in the set; `*` stands for `largest`. A range may be written either
/// way round (`5:2` is `2:5`).
pub fn contains(set: &SequenceSet, n: u32, largest: u32) -> bool {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(s) => value(s) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (value(a), value(b));
            (a.min(b)..=a.max(b)).contains(&n)
        }
    })
}

/// The highest number a set names outright (ignoring `*`), for checking sequence
/// numbers against EXISTS.
pub fn highest(set: &SequenceSet) -> u32 {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => 0,
    };
    set.0
        .as_ref()
        .iter()
        .map(|seq| match seq {
            Sequence::Single(s) => value(s),
            Sequence::Range(a, b) => value(a).max(value(b)),
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> SequenceSet {
        text.parse().unwrap()
    }

    #[test]
    fn sets_with_stars_and_reversed_ranges() {
        assert!(contains(&set("1:*"), 7, 7));
        assert!(contains(&set("*"), 7, 7));
        assert!(!contains(&set("*"), 6, 7));
        assert!(contains(&set("5:2"), 3, 9));
        assert!(contains(&set("2,4:5"), 4, 9));
        assert!(!contains(&set("2,4:5"), 3, 9));
        // UID 10:* in a folder whose highest UID is 7 means 7:10.
        assert!(contains(&set("10:*"), 7, 7));
        assert_eq!(highest(&set("3,9:4,*")), 9);
    }
}
