//! Mail addresses: parsing (RFC 5321 §4.1.2, RFC 6531) and the normal form the
//! directory stores and compares.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Longest local part, in octets (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_LEN: usize = 64;
/// Longest domain, in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN_LEN: usize = 255;
/// Longest domain label, in octets (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;
/// The characters RFC 5322 `atext` allows besides letters and digits ('/' left
/// out: the directory refuses it because addresses become folder names).
const ATEXT_SPECIALS: &str = "!#$%&'*+-=?^_`{|}~";

/// A parsed mail address in normal form.
///
/// The domain is lowercase. The local part keeps its case (it is compared
/// case-insensitively everywhere in this crate); a quoted local part whose
/// content is a plain dot-atom loses its quotes (`"bob"@x` is `bob@x`), any
/// other quoted local part keeps them, with only `"` and `\` escaped.
/// The local part therefore never starts with a dot and never is a bare `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    local: String,
    domain: String,
}

impl Address {
    /// The local part, in normal form (quoted only when it has to be).
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The domain, lowercase.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether the local part is a quoted string.
    pub fn is_quoted(&self) -> bool {
        self.local.starts_with('"')
    }

    /// The key under which the directory finds this address.
    pub(crate) fn key(&self) -> String {
        lookup_key(&self.local, &self.domain)
    }

    /// The local part without its subaddress ("alice" for "alice+tag"), if it
    /// has one; quoted local parts have none.
    pub(crate) fn base_local(&self, separator: Option<char>) -> Option<&str> {
        let separator = separator?;
        if self.is_quoted() {
            return None;
        }
        match self.local.split_once(separator) {
            Some((base, _)) if !base.is_empty() && !base.ends_with('.') => Some(base),
            _ => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_address(s)
    }
}

/// The case-insensitive lookup key of `local@domain` (`domain` already lowercase).
pub(crate) fn lookup_key(local: &str, domain: &str) -> String {
    format!("{}@{}", local.to_lowercase(), domain)
}

/// Parses `local@domain` (no angle brackets, no surrounding spaces).
///
/// Accepts RFC 5321 dot-atom and quoted-string local parts, UTF-8 in both parts
/// (RFC 6531), and host-name domains. Refuses address literals (`[192.0.2.1]`),
/// '/', NUL, CR, LF and every other control character, spaces outside quotes,
/// local parts over 64 octets and domains over 255.
pub fn parse_address(input: &str) -> Result<Address> {
    split_address(input).map_err(|reason| Error::MalformedAddress {
        input: input.to_owned(),
        reason,
    })
}

/// Parses a domain name and returns it lowercase.
pub fn parse_domain(input: &str) -> Result<String> {
    forbidden(input)
        .and_then(|()| domain(input))
        .map_err(|reason| Error::MalformedDomain {
            input: input.to_owned(),
            reason,
        })
}

fn split_address(input: &str) -> Result<Address, String> {
    if input.is_empty() {
        return Err("empty address".into());
    }
    forbidden(input)?;
    let (local, rest) = if input.starts_with('"') {
        let (content, after) = quoted(input)?;
        let rest = match after.strip_prefix('@') {
            Some(rest) => rest,
            None if after.is_empty() => return Err("missing '@'".into()),
            None => return Err("text between the closing quote and '@'".into()),
        };
        if content.is_empty() {
            return Err("empty local part".into());
        }
        (normal_quoted(&content), rest)
    } else {
        let (local, rest) = input.split_once('@').ok_or("missing '@'")?;
        dot_atom(local)?;
        (local.to_owned(), rest)
    };
    if local.len() > MAX_LOCAL_LEN {
        return Err(format!("local part longer than {MAX_LOCAL_LEN} octets"));
    }
    let domain = domain(rest)?;
    Ok(Address { local, domain })
}

/// Characters refused anywhere, quoted or not.
fn forbidden(input: &str) -> Result<(), String> {
    for c in input.chars() {
        match c {
            '\0' => return Err("contains NUL".into()),
            '\r' | '\n' => return Err("contains CR or LF".into()),
            '/' => return Err("contains '/'".into()),
            c if c.is_control() => return Err(format!("contains the control character {c:?}")),
            _ => {}
        }
    }
    Ok(())
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || ATEXT_SPECIALS.contains(c) || !c.is_ascii()
}

fn dot_atom(local: &str) -> Result<(), String> {
    if local.is_empty() {
        return Err("empty local part".into());
    }
    for atom in local.split('.') {
        if atom.is_empty() {
            return Err("local part starts or ends with a dot, or has two in a row".into());
        }
        if let Some(c) = atom.chars().find(|&c| !is_atext(c)) {
            return Err(match c {
                ' ' => "space outside quotes".into(),
                '"' => "quote inside an unquoted local part".into(),
                c => format!("{c:?} is not allowed in an unquoted local part"),
            });
        }
    }
    Ok(())
}

fn is_dot_atom(s: &str) -> bool {
    dot_atom(s).is_ok()
}

/// Reads a quoted string at the start of `input`; returns its content
/// (escapes removed) and what follows the closing quote.
fn quoted(input: &str) -> Result<(String, &str), String> {
    let mut content = String::new();
    let mut chars = input.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((content, &input[i + 1..])),
            '\\' => match chars.next() {
                Some((_, c)) => content.push(c),
                None => break,
            },
            c => content.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

fn normal_quoted(content: &str) -> String {
    if is_dot_atom(content) {
        return content.to_owned();
    }
    let mut out = String::with_capacity(content.len() + 2);
    out.push('"');
    for c in content.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn domain(input: &str) -> Result<String, String> {
    if input.is_empty() {
        return Err("empty domain".into());
    }
    if input.starts_with('[') {
        return Err("address literals are not supported".into());
    }
    if input.contains('@') {
        return Err("more than one '@' outside quotes".into());
    }
    if input.len() > MAX_DOMAIN_LEN {
        return Err(format!("domain longer than {MAX_DOMAIN_LEN} octets"));
    }
    if input.ends_with('.') {
        return Err("domain ends with a dot".into());
    }
    for label in input.split('.') {
        if label.is_empty() {
            return Err("domain has an empty label".into());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!("domain label longer than {MAX_LABEL_LEN} octets"));
        }
        if let Some(c) = label.chars().find(|&c| !(c.is_alphanumeric() || c == '-')) {
            return Err(match c {
                ' ' => "space in the domain".into(),
                c => format!("{c:?} is not allowed in a domain"),
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("domain label starts or ends with '-'".into());
        }
    }
    Ok(input.to_lowercase())
}

/// Whether `c` may serve as the subaddress separator.
pub(crate) fn valid_separator(c: char) -> bool {
    ATEXT_SPECIALS.contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> String {
        match parse_address(input) {
            Ok(a) => a.to_string(),
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }

    fn reason(input: &str) -> String {
        match parse_address(input) {
            Ok(a) => panic!("{input:?} should not parse, got {a}"),
            Err(Error::MalformedAddress { reason, .. }) => reason,
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn accepts_and_normalises() {
        assert_eq!(ok("alice@example.test"), "alice@example.test");
        assert_eq!(ok("Alice@EXAMPLE.Test"), "Alice@example.test");
        assert_eq!(
            ok("first.last+tag@mail.example.test"),
            "first.last+tag@mail.example.test"
        );
        assert_eq!(ok("o'neil{x}~@example.test"), "o'neil{x}~@example.test");
        assert_eq!(ok("\"bob\"@example.test"), "bob@example.test");
        assert_eq!(ok("\"john doe\"@example.test"), "\"john doe\"@example.test");
        assert_eq!(ok("\"a\\\"b\"@example.test"), "\"a\\\"b\"@example.test");
        assert_eq!(ok("\"a@b\"@example.test"), "\"a@b\"@example.test");
        assert_eq!(ok("jérôme@exemple.test"), "jérôme@exemple.test");
        assert_eq!(ok("x@localhost"), "x@localhost");
        let a = ok(&format!("{}@example.test", "a".repeat(64)));
        assert!(a.starts_with("aaaa"));
    }

    #[test]
    fn parts() {
        let a = parse_address("\"x y\"@Example.TEST").unwrap();
        assert_eq!(a.local(), "\"x y\"");
        assert_eq!(a.domain(), "example.test");
        assert!(a.is_quoted());
        assert_eq!(a, "\"x y\"@example.test".parse().unwrap());
    }

    #[test]
    fn refuses() {
        assert_eq!(reason("a@@b"), "more than one '@' outside quotes");
        assert_eq!(reason(""), "empty address");
        assert_eq!(reason("alice"), "missing '@'");
        assert_eq!(reason("@example.test"), "empty local part");
        assert_eq!(reason("alice@"), "empty domain");
        assert_eq!(reason("a b@example.test"), "space outside quotes");
        assert_eq!(reason(" a@example.test"), "space outside quotes");
        assert_eq!(reason("a@exa mple.test"), "space in the domain");
        assert_eq!(reason("../x@example.test"), "contains '/'");
        assert_eq!(reason("\"a/b\"@example.test"), "contains '/'");
        assert_eq!(reason("a\0@example.test"), "contains NUL");
        assert_eq!(reason("a\r@example.test"), "contains CR or LF");
        assert_eq!(reason("\"a\nb\"@example.test"), "contains CR or LF");
        assert!(reason("a\t@example.test").contains("control"));
        assert!(reason(".a@example.test").contains("dot"));
        assert!(reason("a.@example.test").contains("dot"));
        assert!(reason("a..b@example.test").contains("dot"));
        assert!(reason("a(b)@example.test").contains("not allowed"));
        assert_eq!(reason("\"ab@example.test"), "unterminated quoted string");
        assert_eq!(reason("\"\"@example.test"), "empty local part");
        assert_eq!(
            reason("\"a\"b@example.test"),
            "text between the closing quote and '@'"
        );
        assert!(reason(&format!("{}@example.test", "a".repeat(65))).contains("64"));
        assert_eq!(
            reason("a@[192.0.2.1]"),
            "address literals are not supported"
        );
        assert_eq!(reason("a@example.test."), "domain ends with a dot");
        assert_eq!(reason("a@example..test"), "domain has an empty label");
        assert!(reason("a@-example.test").contains("'-'"));
        assert!(reason("a@exa_mple.test").contains("not allowed"));
        assert!(reason(&format!("a@{}.test", "b".repeat(64))).contains("63"));
    }

    #[test]
    fn error_message_names_the_input() {
        let e = parse_address("a@@b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed address \"a@@b\": more than one '@' outside quotes"
        );
    }

    #[test]
    fn domains() {
        assert_eq!(parse_domain("Example.TEST").unwrap(), "example.test");
        let e = parse_domain("exa mple.test").unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed domain \"exa mple.test\": space in the domain"
        );
        assert!(parse_domain("a/b").is_err());
    }

    #[test]
    fn subaddress_base() {
        let a = parse_address("alice+news+x@example.test").unwrap();
        assert_eq!(a.base_local(Some('+')), Some("alice"));
        assert_eq!(a.base_local(None), None);
        assert_eq!(a.base_local(Some('-')), None);
        assert_eq!(
            parse_address("+x@example.test")
                .unwrap()
                .base_local(Some('+')),
            None
        );
        assert_eq!(
            parse_address("\"a+b c\"@example.test")
                .unwrap()
                .base_local(Some('+')),
            None
        );
    }

    #[test]
    fn keys_ignore_case() {
        let a = parse_address("Alice.B@Example.test").unwrap();
        assert_eq!(a.key(), "alice.b@example.test");
    }
}
