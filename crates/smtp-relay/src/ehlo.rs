//! The EHLO reply read as a list of extensions (RFC 5321 §4.1.1.1). lettre
//! keeps only STARTTLS, 8BITMIME, SMTPUTF8 and AUTH; the relay also needs
//! PIPELINING (RFC 2920) and SIZE (RFC 1870). No I/O here.

/// What a server offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING: MAIL, RCPT and DATA may be sent in one go.
    pub pipelining: bool,
    /// 8BITMIME: 8-bit message bodies are accepted.
    pub eight_bit_mime: bool,
    /// SMTPUTF8: UTF-8 addresses and header fields are accepted.
    pub smtputf8: bool,
    /// STARTTLS.
    pub starttls: bool,
    /// SIZE, with its limit when the server gave one (0 = no fixed limit).
    pub size: Option<u64>,
    /// AUTH mechanisms, upper case.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// Reads the lines of an EHLO reply (the text after each code; the first
    /// line is the server's name and greeting, and is skipped).
    pub fn from_ehlo<'a>(lines: impl IntoIterator<Item = &'a str>) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in lines.into_iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "AUTH" => {
                    caps.auth.extend(
                        words
                            .map(|m| m.to_ascii_uppercase())
                            .filter(|m| !m.is_empty()),
                    );
                }
                _ => {}
            }
        }
        caps
    }

    /// The largest message the server takes, when it announced one.
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }

    /// True when the server offers AUTH PLAIN or LOGIN.
    pub fn has_plain_or_login(&self) -> bool {
        self.auth.iter().any(|m| m == "PLAIN" || m == "LOGIN")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_style_ehlo_is_understood() {
        let caps = Capabilities::from_ehlo([
            "mx.far.example",
            "PIPELINING",
            "SIZE 10240000",
            "VRFY",
            "ETRN",
            "STARTTLS",
            "AUTH PLAIN LOGIN",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "DSN",
            "SMTPUTF8",
            "CHUNKING",
        ]);
        assert!(caps.pipelining && caps.eight_bit_mime && caps.smtputf8 && caps.starttls);
        assert_eq!(caps.size_limit(), Some(10_240_000));
        assert_eq!(caps.auth, vec!["PLAIN", "LOGIN"]);
        assert!(caps.has_plain_or_login());
    }

    #[test]
    fn a_bare_server_offers_nothing() {
        let caps = Capabilities::from_ehlo(["old.far.example Hello"]);
        assert_eq!(caps, Capabilities::default());
        assert!(!caps.has_plain_or_login());
    }

    #[test]
    fn the_greeting_line_is_not_a_keyword_and_case_does_not_matter() {
        let caps = Capabilities::from_ehlo(["PIPELINING is my name", "size", "auth cram-md5"]);
        assert!(!caps.pipelining);
        assert_eq!(caps.size, Some(0));
        assert_eq!(caps.size_limit(), None);
        assert_eq!(caps.auth, vec!["CRAM-MD5"]);
        assert!(!caps.has_plain_or_login());
    }
}
