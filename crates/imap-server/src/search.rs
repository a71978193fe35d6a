//! SEARCH (RFC 3501 §6.4.4): every key, evaluated against the selected folder. Flags,
//! sizes, UIDs and dates need no file; header and text keys parse each candidate
//! message (the date of the Date: field comes from the parse cache when it is there).
//!
//! The client's keys become a [`Query`], with chains of ORs and of ANDs flattened
//! (`OR OR OR a b c d` is one OR of four keys), within [`SearchLimits`]: at most
//! `max_keys` keys and `max_depth` levels, so a search costs keys × messages
//! evaluations and its evaluation's recursion is bounded. imap-codec refuses keys
//! nested more than 9 deep, which the OR chains of ordinary clients reach (ten
//! alternatives nest ten deep); such a command is parsed again by [`deep`], which
//! builds the query without recursion.

pub mod deep;

use chrono::{DateTime, NaiveDate, Utc};
use imap_next::imap_types::core::AString;
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use qs_mailstore::Flag;

use crate::message::SearchText;
use crate::selected::Msg;
use crate::store::letter_in;

/// How big a SEARCH may be (`max_search_keys`, `max_search_depth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchLimits {
    /// Search keys in all; each OR, NOT and parenthesised list counts as one.
    pub max_keys: usize,
    /// Levels of the flattened query (a key alone is one level).
    pub max_depth: usize,
}

/// Why a SEARCH is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// More keys than `max_keys` (answered `NO [LIMIT]`).
    #[error("SEARCH takes at most {0} search keys")]
    TooManyKeys(usize),
    /// Nested deeper than `max_depth` (answered `NO [LIMIT]`).
    #[error("SEARCH keys may nest at most {0} levels deep")]
    TooDeep(usize),
    /// Not a search the grammar allows (answered `BAD`).
    #[error("syntax error")]
    Syntax,
}

/// A search, ready to evaluate. [`Query::Key`] never holds an AND, OR or NOT.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// Every one matches (never fewer than two).
    And(Vec<Query>),
    /// At least one matches (never fewer than two).
    Or(Vec<Query>),
    /// The query does not match.
    Not(Box<Query>),
    /// One key without keys inside it.
    Key(SearchKey<'static>),
    /// A sequence set or UID set made ready by [`Query::resolve_sets`]: its ranges with
    /// `*` replaced, sorted and merged, so a message is found in log(ranges) steps.
    Numbers {
        /// UIDs, not sequence numbers.
        uid: bool,
        /// Disjoint, in order, each `(first, last)`.
        ranges: Vec<(u32, u32)>,
    },
}

impl Query {
    /// The query of a SEARCH command's keys as imap-codec parsed them (nested at
    /// most 9 deep: the conversion recurses).
    pub fn from_criteria(
        criteria: &[SearchKey<'static>],
        limits: SearchLimits,
    ) -> Result<Query, SearchError> {
        let mut count = KeyCount::new(limits);
        let keys = criteria
            .iter()
            .map(|k| Query::from_key(k, &mut count))
            .collect::<Result<Vec<_>, _>>()?;
        let query = Query::and(keys);
        query.check_depth(limits)?;
        Ok(query)
    }

    fn from_key(key: &SearchKey<'static>, count: &mut KeyCount) -> Result<Query, SearchError> {
        count.one()?;
        Ok(match key {
            SearchKey::And(keys) => Query::and(
                keys.as_ref()
                    .iter()
                    .map(|k| Query::from_key(k, count))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            SearchKey::Or(a, b) => {
                Query::or(Query::from_key(a, count)?, Query::from_key(b, count)?)
            }
            SearchKey::Not(k) => Query::from_key(k, count)?.negated(),
            key => Query::Key(key.clone()),
        })
    }

    /// All of `keys`; nested ANDs are merged, and one key is itself.
    pub fn and(keys: Vec<Query>) -> Query {
        if keys.len() == 1 {
            return keys
                .into_iter()
                .next()
                .unwrap_or(Query::Key(SearchKey::All));
        }
        let mut all = Vec::with_capacity(keys.len());
        for key in keys {
            match key {
                Query::And(inner) => all.extend(inner),
                key => all.push(key),
            }
        }
        Query::And(all)
    }

    /// Either of `a` and `b`; nested ORs are merged.
    pub fn or(a: Query, b: Query) -> Query {
        let mut any = Vec::new();
        for q in [a, b] {
            match q {
                Query::Or(inner) => any.extend(inner),
                q => any.push(q),
            }
        }
        Query::Or(any)
    }

    /// The opposite query; `NOT NOT x` is `x`.
    pub fn negated(self) -> Query {
        match self {
            Query::Not(inner) => *inner,
            q => Query::Not(Box::new(q)),
        }
    }

    /// How many levels the query has (a key alone: one), counted without recursion.
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(self, 1)];
        while let Some((q, level)) = stack.pop() {
            deepest = deepest.max(level);
            match q {
                Query::And(qs) | Query::Or(qs) => stack.extend(qs.iter().map(|q| (q, level + 1))),
                Query::Not(q) => stack.push((q, level + 1)),
                Query::Key(_) | Query::Numbers { .. } => {}
            }
        }
        deepest
    }

    /// `TooDeep` when the query has more than `max_depth` levels.
    pub fn check_depth(&self, limits: SearchLimits) -> Result<(), SearchError> {
        if self.depth() > limits.max_depth {
            return Err(SearchError::TooDeep(limits.max_depth));
        }
        Ok(())
    }

    /// What the keys need beyond the view.
    pub fn needs(&self) -> Needs {
        let mut n = Needs::default();
        let mut stack = vec![self];
        while let Some(q) = stack.pop() {
            match q {
                Query::And(qs) | Query::Or(qs) => stack.extend(qs),
                Query::Not(q) => stack.push(q),
                Query::Key(key) => walk(key, &mut n),
                Query::Numbers { .. } => {}
            }
        }
        n
    }

    /// True if a message matches. Recurses as deep as the query (see `check_depth`).
    pub fn matches(&self, c: &Candidate<'_>, ctx: &Context<'_>) -> bool {
        match self {
            Query::And(qs) => qs.iter().all(|q| q.matches(c, ctx)),
            Query::Or(qs) => qs.iter().any(|q| q.matches(c, ctx)),
            Query::Not(q) => !q.matches(c, ctx),
            Query::Key(key) => matches(key, c, ctx),
            Query::Numbers { uid, ranges } => {
                let n = if *uid { c.msg.uid } else { c.seq };
                let after = ranges.partition_point(|&(first, _)| first <= n);
                after > 0 && ranges[after - 1].1 >= n
            }
        }
    }

    /// Turns the query's sequence and UID sets into [`Query::Numbers`] for a folder of
    /// `ctx.exists` messages and highest UID `ctx.max_uid`, so that a set of many ranges
    /// costs log(ranges), not ranges, per message. Recurses as deep as the query.
    pub fn resolve_sets(&mut self, ctx: &Context<'_>) {
        match self {
            Query::And(qs) | Query::Or(qs) => qs.iter_mut().for_each(|q| q.resolve_sets(ctx)),
            Query::Not(q) => q.resolve_sets(ctx),
            Query::Key(SearchKey::SequenceSet(set)) => {
                *self = Query::Numbers {
                    uid: false,
                    ranges: merged_ranges(set, ctx.exists),
                };
            }
            Query::Key(SearchKey::Uid(set)) => {
                *self = Query::Numbers {
                    uid: true,
                    ranges: merged_ranges(set, ctx.max_uid),
                };
            }
            Query::Key(_) | Query::Numbers { .. } => {}
        }
    }
}

/// The ranges of `set` (`*` is `largest`, `5:2` is `2:5`), sorted and merged.
pub fn merged_ranges(set: &SequenceSet, largest: u32) -> Vec<(u32, u32)> {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    let mut ranges: Vec<(u32, u32)> = set
        .0
        .as_ref()
        .iter()
        .map(|seq| match seq {
            Sequence::Single(s) => (value(s), value(s)),
            Sequence::Range(a, b) => (value(a).min(value(b)), value(a).max(value(b))),
        })
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match merged.last_mut() {
            Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

/// Counts keys against `max_keys`.
struct KeyCount {
    seen: usize,
    max: usize,
}

impl KeyCount {
    fn new(limits: SearchLimits) -> KeyCount {
        KeyCount {
            seen: 0,
            max: limits.max_keys,
        }
    }

    /// One more key; `TooManyKeys` past the limit.
    fn one(&mut self) -> Result<(), SearchError> {
        self.seen += 1;
        if self.seen > self.max {
            return Err(SearchError::TooManyKeys(self.max));
        }
        Ok(())
    }
}

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
    /// A MODSEQ key (RFC 7162): the response carries the highest one found.
    pub modseq: bool,
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
        SearchKey::ModSequence { .. } => n.modseq = true,
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
        // One modification sequence per message, whatever the entry named.
        SearchKey::ModSequence { modseq, .. } => c.msg.modseq >= *modseq,
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
    fn resolved_sets_hold_the_numbers_the_sets_name() {
        for text in [
            "1:*",
            "*",
            "5:2",
            "2,4:5",
            "10:*",
            "3,9:4,*",
            "7,1,3:2,20:30,25:40,6",
        ] {
            let set = set(text);
            let ranges = merged_ranges(&set, 12);
            assert!(
                ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0),
                "{text}: {ranges:?}"
            );
            let mut query = Query::Key(SearchKey::Uid(set.clone()));
            query.resolve_sets(&Context {
                keywords: &[],
                exists: 0,
                max_uid: 12,
            });
            let Query::Numbers {
                uid: true,
                ranges: resolved,
            } = &query
            else {
                panic!("{query:?}");
            };
            assert_eq!(resolved, &ranges);
            for n in 0..45 {
                let found = ranges.partition_point(|&(first, _)| first <= n);
                let inside = found > 0 && ranges[found - 1].1 >= n;
                assert_eq!(inside, contains(&set, n, 12), "{text}, {n}");
            }
        }
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
