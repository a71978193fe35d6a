//! SEARCH commands whose keys nest deeper than imap-codec follows (9 levels: it
//! recurses once per level, and stops there so as not to overflow the stack).
//! Ordinary clients go past that: "from, to, cc, subject or body contains x" for two
//! words is `OR OR OR … FROM x TO x …`, ten keys nested ten deep.
//!
//! When imap-codec refuses a command, the session hands its bytes (the whole
//! command, literals included) to [`parse`]. The nesting (`OR`, `NOT`, parentheses)
//! is followed here with a stack of its own, never by recursion, counting keys
//! against `max_keys` as it goes; each key without keys inside it (`FROM x`,
//! `SINCE 1-Feb-1994`, `1:5`) is given back to imap-codec alone, so both paths read
//! keys, strings, literals and dates by the same grammar.

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_next::imap_types::IntoStatic;
use imap_next::imap_types::command::CommandBody;
use imap_next::imap_types::core::Tag;
use imap_next::imap_types::search::SearchKey;

use super::{KeyCount, Query, SearchError, SearchLimits};

/// A SEARCH or UID SEARCH command read by [`parse`].
#[derive(Debug)]
pub struct DeepSearch {
    /// `UID SEARCH`.
    pub uid: bool,
    /// The CHARSET argument.
    pub charset: Option<String>,
    /// The keys.
    pub query: Query,
}

/// Reads `message` (a whole command, CRLF included) as a SEARCH. `None` when it is
/// not a tagged SEARCH or UID SEARCH; otherwise its tag, and the search or why it
/// cannot be run.
pub fn parse(
    message: &[u8],
    limits: SearchLimits,
) -> Option<(Tag<'static>, Result<DeepSearch, SearchError>)> {
    let mut r = Reader {
        bytes: message,
        pos: 0,
    };
    let tag = Tag::try_from(r.atom()).ok()?.into_static();
    r.space().ok()?;
    let mut command = r.atom();
    let uid = command.eq_ignore_ascii_case(b"UID");
    if uid {
        r.space().ok()?;
        command = r.atom();
    }
    if !command.eq_ignore_ascii_case(b"SEARCH") {
        return None;
    }
    Some((tag, search(&mut r, uid, limits)))
}

/// What follows `SEARCH`.
fn search(r: &mut Reader<'_>, uid: bool, limits: SearchLimits) -> Result<DeepSearch, SearchError> {
    r.space()?;
    let mut charset = None;
    let save = r.pos;
    if r.atom().eq_ignore_ascii_case(b"CHARSET") {
        r.space()?;
        let (start, end) = r.argument()?;
        let name = &r.bytes[start..end];
        let name = name
            .strip_prefix(b"\"")
            .and_then(|n| n.strip_suffix(b"\""))
            .unwrap_or(name);
        charset = Some(String::from_utf8_lossy(name).into_owned());
        r.space()?;
    } else {
        r.pos = save;
    }
    let query = keys(r, limits)?;
    query.check_depth(limits)?;
    Ok(DeepSearch {
        uid,
        charset,
        query,
    })
}

/// A key that waits for the keys inside it.
enum Open {
    /// The command's list of keys (the bottom of the stack) or a parenthesised list.
    List(Vec<Query>),
    /// `OR`, with its first key once read.
    Or(Option<Query>),
    /// `NOT`.
    Not,
}

/// The keys up to the end of the line, as one query.
fn keys(r: &mut Reader<'_>, limits: SearchLimits) -> Result<Query, SearchError> {
    let mut count = KeyCount::new(limits);
    let mut open = vec![Open::List(Vec::new())];
    loop {
        // A key starts here.
        if r.peek() == Some(b'(') {
            r.pos += 1;
            count.one()?;
            open.push(Open::List(Vec::new()));
            continue;
        }
        let start = r.pos;
        let word = r.atom();
        if word.eq_ignore_ascii_case(b"OR") || word.eq_ignore_ascii_case(b"NOT") {
            count.one()?;
            r.space()?;
            open.push(if word.len() == 2 {
                Open::Or(None)
            } else {
                Open::Not
            });
            continue;
        }
        for _ in 0..arguments(word)? {
            r.space()?;
            r.argument()?;
        }
        count.one()?;
        let mut done = Query::Key(leaf(&r.bytes[start..r.pos])?);
        // Close every key that `done` completes.
        loop {
            match open.last_mut() {
                Some(Open::Not) => {
                    open.pop();
                    done = done.negated();
                }
                Some(Open::Or(first @ None)) => {
                    *first = Some(done);
                    r.space()?;
                    break;
                }
                Some(Open::Or(Some(_))) => {
                    let Some(Open::Or(Some(first))) = open.pop() else {
                        return Err(SearchError::Syntax);
                    };
                    done = Query::or(first, done);
                }
                Some(Open::List(list)) => {
                    list.push(done);
                    let nested = open.len() > 1;
                    match r.peek() {
                        Some(b' ') => {
                            r.pos += 1;
                            break;
                        }
                        Some(b')') if nested => {
                            r.pos += 1;
                            let Some(Open::List(list)) = open.pop() else {
                                return Err(SearchError::Syntax);
                            };
                            done = Query::and(list);
                        }
                        _ if !nested && r.at_line_end() => {
                            let Some(Open::List(list)) = open.pop() else {
                                return Err(SearchError::Syntax);
                            };
                            return Ok(Query::and(list));
                        }
                        _ => return Err(SearchError::Syntax),
                    }
                }
                None => return Err(SearchError::Syntax),
            }
        }
    }
}

/// How many arguments a key without keys inside it takes (RFC 3501 §6.4.4, and
/// RFC 5032's OLDER and YOUNGER); a sequence set takes none.
fn arguments(word: &[u8]) -> Result<usize, SearchError> {
    const NONE: [&str; 14] = [
        "ALL",
        "ANSWERED",
        "DELETED",
        "DRAFT",
        "FLAGGED",
        "NEW",
        "OLD",
        "RECENT",
        "SEEN",
        "UNANSWERED",
        "UNDELETED",
        "UNDRAFT",
        "UNFLAGGED",
        "UNSEEN",
    ];
    const ONE: [&str; 20] = [
        "BCC",
        "BEFORE",
        "BODY",
        "CC",
        "FROM",
        "KEYWORD",
        "LARGER",
        "ON",
        "SENTBEFORE",
        "SENTON",
        "SENTSINCE",
        "SINCE",
        "SMALLER",
        "SUBJECT",
        "TEXT",
        "TO",
        "UID",
        "UNKEYWORD",
        "OLDER",
        "YOUNGER",
    ];
    let is = |names: &[&str]| {
        names
            .iter()
            .any(|n| word.eq_ignore_ascii_case(n.as_bytes()))
    };
    if is(&NONE)
        || word
            .first()
            .is_some_and(|b| b.is_ascii_digit() || *b == b'*')
    {
        Ok(0)
    } else if is(&ONE) {
        Ok(1)
    } else if word.eq_ignore_ascii_case(b"HEADER") {
        Ok(2)
    } else {
        Err(SearchError::Syntax)
    }
}

/// One key without keys inside it, read by imap-codec.
fn leaf(key: &[u8]) -> Result<SearchKey<'static>, SearchError> {
    let command = [b"x SEARCH ", key, b"\r\n"].concat();
    match CommandCodec::default().decode(&command) {
        Ok(([], command)) => match command.body {
            CommandBody::Search { criteria, .. } => {
                match criteria.into_inner().into_iter().next() {
                    Some(key) if !matches!(key, SearchKey::And(_)) => Ok(key.into_static()),
                    _ => Err(SearchError::Syntax),
                }
            }
            _ => Err(SearchError::Syntax),
        },
        _ => Err(SearchError::Syntax),
    }
}

/// The command's bytes, read left to right.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// A word: up to a space, a parenthesis, a quote, a brace or the line end.
    fn atom(&mut self) -> &'a [u8] {
        let start = self.pos;
        while let Some(b) = self.peek()
            && !matches!(b, b' ' | b'(' | b')' | b'"' | b'{' | b'\r' | b'\n')
        {
            self.pos += 1;
        }
        &self.bytes[start..self.pos]
    }

    fn space(&mut self) -> Result<(), SearchError> {
        if self.peek() == Some(b' ') {
            self.pos += 1;
            Ok(())
        } else {
            Err(SearchError::Syntax)
        }
    }

    /// An argument of a key: a quoted string, a literal, or a word (an atom, a date,
    /// a number, a sequence set). Returns where it lies; imap-codec reads it.
    fn argument(&mut self) -> Result<(usize, usize), SearchError> {
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                loop {
                    match self.peek() {
                        Some(b'"') => break,
                        Some(b'\\') => self.pos += 2,
                        Some(b'\r' | b'\n') | None => return Err(SearchError::Syntax),
                        Some(_) => self.pos += 1,
                    }
                }
                self.pos += 1;
            }
            Some(b'{') => {
                let close = self.bytes[start..]
                    .iter()
                    .position(|&b| b == b'}')
                    .ok_or(SearchError::Syntax)?;
                let digits = self.bytes[start + 1..start + close]
                    .strip_suffix(b"+")
                    .unwrap_or(&self.bytes[start + 1..start + close]);
                let length: usize = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .ok_or(SearchError::Syntax)?;
                self.pos = start + close + 1;
                if self.bytes[self.pos..].starts_with(b"\r\n") {
                    self.pos += 2;
                } else if self.peek() == Some(b'\n') {
                    self.pos += 1;
                } else {
                    return Err(SearchError::Syntax);
                }
                if self.bytes.len() - self.pos < length {
                    return Err(SearchError::Syntax);
                }
                self.pos += length;
            }
            _ => {
                if self.atom().is_empty() {
                    return Err(SearchError::Syntax);
                }
            }
        }
        Ok((start, self.pos))
    }

    /// Only the line's end is left.
    fn at_line_end(&self) -> bool {
        matches!(&self.bytes[self.pos..], b"\r\n" | b"\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SearchLimits = SearchLimits {
        max_keys: 1000,
        max_depth: 64,
    };

    fn query(command: &str) -> Result<DeepSearch, SearchError> {
        let (tag, result) = parse(command.as_bytes(), LIMITS).expect("a SEARCH");
        assert_eq!(tag.as_ref(), "a1");
        result
    }

    fn key(text: &str) -> Query {
        Query::Key(leaf(text.as_bytes()).unwrap())
    }

    #[test]
    fn an_or_of_ten_keys_is_one_or() {
        let terms = ["FROM", "TO", "CC", "BCC", "SUBJECT"]
            .iter()
            .flat_map(|k| [format!("{k} x"), format!("{k} \"y z\"")])
            .collect::<Vec<_>>();
        let command = format!("a1 UID SEARCH {}{}\r\n", "OR ".repeat(9), terms.join(" "));
        let search = query(&command).unwrap();
        assert!(search.uid);
        let expected: Vec<Query> = terms.iter().map(|t| key(t)).collect();
        assert_eq!(search.query, Query::Or(expected));
        assert_eq!(search.query.depth(), 2);
    }

    #[test]
    fn parentheses_not_and_the_keys_around_them() {
        let search =
            query("a1 search charset \"UTF-8\" undeleted (or (from a) (or to b cc c)) not not seen 1:5\r\n")
                .unwrap();
        assert_eq!(search.charset.as_deref(), Some("UTF-8"));
        assert_eq!(
            search.query,
            Query::And(vec![
                key("UNDELETED"),
                Query::Or(vec![key("FROM a"), key("TO b"), key("CC c")]),
                key("SEEN"),
                key("1:5"),
            ])
        );
        let negated = query("a1 SEARCH NOT (SEEN FLAGGED)\r\n").unwrap();
        assert_eq!(
            negated.query,
            Query::Not(Box::new(Query::And(vec![key("SEEN"), key("FLAGGED")])))
        );
    }

    #[test]
    fn literals_dates_and_headers_are_read_by_imap_codec() {
        let search = query(
            "a1 SEARCH OR SUBJECT {5}\r\nh\"llo HEADER X-Spam {3+}\r\nyes SINCE \"1-Feb-1994\" LARGER 10\r\n",
        )
        .unwrap();
        assert_eq!(
            search.query,
            Query::And(vec![
                Query::Or(vec![
                    key("SUBJECT {5}\r\nh\"llo"),
                    key("HEADER X-Spam {3+}\r\nyes")
                ]),
                key("SINCE 1-Feb-1994"),
                key("LARGER 10"),
            ])
        );
    }

    #[test]
    fn nesting_as_deep_as_the_keys_allow_costs_no_recursion() {
        // 999 ORs, right-nested with parentheses: 2,998 keys, over the limit.
        let deep = format!(
            "a1 SEARCH {}ALL{}\r\n",
            "OR ALL (".repeat(999),
            ")".repeat(999)
        );
        assert!(matches!(query(&deep), Err(SearchError::TooManyKeys(1000))));
        // Half a million open parentheses stop at the limit too.
        let absurd = format!("a1 SEARCH {}ALL\r\n", "(".repeat(500_000));
        assert!(matches!(
            query(&absurd),
            Err(SearchError::TooManyKeys(1000))
        ));
        // Alternating OR and AND cannot be flattened: each pair is two levels.
        let alternating = format!(
            "a1 SEARCH {}ALL{}\r\n",
            "OR SEEN (FLAGGED ".repeat(40),
            ")".repeat(40)
        );
        assert!(matches!(query(&alternating), Err(SearchError::TooDeep(64))));
        let right = format!(
            "a1 SEARCH {}ALL{}\r\n",
            "OR SEEN (".repeat(300),
            ")".repeat(300)
        );
        assert_eq!(query(&right).unwrap().query.depth(), 2);
    }

    #[test]
    fn what_is_not_a_search_or_not_a_key() {
        assert!(parse(b"a1 FETCH 1 (FLAGS)\r\n", LIMITS).is_none());
        assert!(parse(b"a1 UID FETCH 1 (FLAGS)\r\n", LIMITS).is_none());
        for bad in [
            "a1 SEARCH\r\n",
            "a1 SEARCH \r\n",
            "a1 SEARCH FROM\r\n",
            "a1 SEARCH OR SEEN\r\n",
            "a1 SEARCH (SEEN\r\n",
            "a1 SEARCH SEEN)\r\n",
            "a1 SEARCH ()\r\n",
            "a1 SEARCH BOGUS\r\n",
            "a1 SEARCH SEEN  FLAGGED\r\n",
            "a1 SEARCH SUBJECT {10}\r\nshort\r\n",
            "a1 SEARCH SUBJECT \"open\r\n",
            "a1 SEARCH SINCE yesterday\r\n",
            "a1 SEARCH SEEN",
        ] {
            assert!(matches!(query(bad), Err(SearchError::Syntax)), "{bad:?}");
        }
    }
}
