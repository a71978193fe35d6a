//! LIST and LSUB patterns (RFC 3501 §6.3.8): `*` matches any run of characters, `%`
//! any run without the hierarchy delimiter, every other byte itself.
//!
//! The matcher follows every way the pattern could have consumed the name so far at
//! once (a set of positions in the pattern, one step per byte of the name), so
//! matching costs at most name length × pattern length comparisons, whatever the
//! pattern. A matcher that tries one way and backtracks takes exponential time on
//! patterns like `*a*a*a*a*ab` against a long run of `a`s.

/// A LIST pattern, ready to match names.
#[derive(Debug, Clone)]
pub struct ListPattern {
    tokens: Vec<Token>,
    delimiter: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `*`: any run of bytes.
    Any,
    /// `%`: any run of bytes without the delimiter.
    AnyInLevel,
    /// This byte.
    Byte(u8),
}

impl ListPattern {
    /// The pattern `pattern` for a hierarchy with `delimiter`. A run of wildcards
    /// matches what its widest member matches, so it is kept as one.
    pub fn new(pattern: &[u8], delimiter: u8) -> ListPattern {
        let mut tokens: Vec<Token> = Vec::with_capacity(pattern.len());
        for &b in pattern {
            let token = match b {
                b'*' => Token::Any,
                b'%' => Token::AnyInLevel,
                b => Token::Byte(b),
            };
            match (tokens.last_mut(), token) {
                (Some(last @ (Token::Any | Token::AnyInLevel)), Token::Any) => *last = Token::Any,
                (Some(Token::Any | Token::AnyInLevel), Token::AnyInLevel) => {}
                _ => tokens.push(token),
            }
        }
        ListPattern { tokens, delimiter }
    }

    /// True if `name` matches the whole pattern.
    pub fn matches(&self, name: &[u8]) -> bool {
        self.matches_counting(name, &mut 0)
    }

    /// [`ListPattern::matches`], adding the comparisons made to `steps`.
    fn matches_counting(&self, name: &[u8], steps: &mut u64) -> bool {
        let end = self.tokens.len();
        // at[i]: the bytes of the name read so far can be matched by tokens[..i].
        let mut at = vec![false; end + 1];
        let mut next = vec![false; end + 1];
        at[0] = true;
        self.add_empty_wildcards(&mut at);
        for &b in name {
            next.fill(false);
            let mut alive = false;
            for i in 0..end {
                if !at[i] {
                    continue;
                }
                *steps += 1;
                match self.tokens[i] {
                    Token::Any => next[i] = true,
                    Token::AnyInLevel if b != self.delimiter => next[i] = true,
                    Token::AnyInLevel => {}
                    Token::Byte(p) if p == b => next[i + 1] = true,
                    Token::Byte(_) => {}
                }
                alive = true;
            }
            if !alive {
                return false;
            }
            self.add_empty_wildcards(&mut next);
            std::mem::swap(&mut at, &mut next);
        }
        at[end]
    }

    /// A wildcard may match nothing: where one may start, the token after it may too.
    fn add_empty_wildcards(&self, at: &mut [bool]) {
        for (i, token) in self.tokens.iter().enumerate() {
            if at[i] && matches!(token, Token::Any | Token::AnyInLevel) {
                at[i + 1] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        ListPattern::new(pattern.as_bytes(), b'.').matches(name.as_bytes())
    }

    #[test]
    fn wildcards_as_rfc_3501_describes_them() {
        assert!(matches("*", "A.B.C"));
        assert!(matches("%", "A"));
        assert!(!matches("%", "A.B"));
        assert!(matches("A.%", "A.B"));
        assert!(!matches("A.%", "A.B.C"));
        assert!(matches("A*", "A.B.C"));
        assert!(matches("*B", "A.B"));
        assert!(matches("%.%", "A.B"));
        assert!(!matches("B", "A"));
        assert!(matches("", ""));
        assert!(!matches("", "A"));
        assert!(!matches("A", ""));
        assert!(matches("%", ""));
        assert!(matches("A%B", "AB"));
        assert!(matches("A%B", "AxyB"));
        assert!(!matches("A%B", "A.B"));
        assert!(matches("A*B", "A.x.B"));
        assert!(matches("*.*", "A.B"));
        assert!(!matches("*.*", "AB"));
        assert!(matches("%*%", "A.B"));
        assert!(matches("*%", "A.B"));
        assert!(matches("%%", "AB"));
        assert!(!matches("%%", "A.B"));
        assert!(matches("Sent*", "Sent"));
        assert!(!matches("Sent", "Sent Items"));
        assert!(matches("*a*b", "xaxxb"));
        assert!(!matches("*a*b", "xbxxa"));
    }

    #[test]
    fn a_pattern_built_to_backtrack_costs_name_times_pattern_comparisons() {
        // `*a*a*a*a*ab` against 200 `a`s: a backtracking matcher tries every way of
        // splitting the name among the stars (20.9 s at five stars, never done at six).
        let name = "a".repeat(200);
        for stars in [5, 6, 20, 100] {
            let pattern = format!("{}b", "*a".repeat(stars));
            let list = ListPattern::new(pattern.as_bytes(), b'.');
            let mut steps = 0;
            assert!(!list.matches_counting(name.as_bytes(), &mut steps));
            let bound = (name.len() * pattern.len()) as u64;
            assert!(steps <= bound, "{stars} stars: {steps} steps > {bound}");
        }
        let pattern = format!("{}b", "%a".repeat(100));
        let list = ListPattern::new(pattern.as_bytes(), b'.');
        let mut steps = 0;
        assert!(!list.matches_counting(name.as_bytes(), &mut steps));
        assert!(steps <= (name.len() * pattern.len()) as u64, "{steps}");
    }

    #[test]
    fn runs_of_wildcards_are_one() {
        let stars = ListPattern::new(b"**%*%%x", b'.');
        assert_eq!(stars.tokens, [Token::Any, Token::Byte(b'x')]);
        let levels = ListPattern::new(b"%%%x", b'.');
        assert_eq!(levels.tokens, [Token::AnyInLevel, Token::Byte(b'x')]);
        assert!(stars.matches(b"a.b.x"));
        assert!(!levels.matches(b"a.b.x"));
    }
}
