//! Replies and what they mean for a recipient: 2xx delivered, 4xx temporary,
//! 5xx permanent, anything else temporary (an error nobody classified is
//! retried, not lost). The text reported to core-queue, and so to the sender
//! in a DSN, names the host that gave it. No I/O here.

use std::fmt;

use qs_queue::Outcome;

/// An SMTP reply as received: its code and its text, lines joined by spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text after the code (with its enhanced status code, if any).
    pub text: String,
}

/// What a reply means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx: done.
    Success,
    /// 3xx: go on (only right after DATA).
    Intermediate,
    /// 4xx, and anything unexpected: try again later.
    Temporary,
    /// 5xx: never going to work.
    Permanent,
}

impl Reply {
    /// A reply from its parts.
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            text: text.into(),
        }
    }

    /// Its class by the first digit.
    pub fn class(&self) -> Class {
        match self.code {
            200..=299 => Class::Success,
            300..=399 => Class::Intermediate,
            500..=599 => Class::Permanent,
            _ => Class::Temporary,
        }
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        self.class() == Class::Success
    }

    /// The outcome for a recipient that got this reply as its final answer,
    /// with `host` named in the text. A 3xx is not a final answer: temporary.
    pub fn outcome(&self, host: &str) -> Outcome {
        let reply = format!("{self} ({host})");
        match self.class() {
            Class::Success => Outcome::Delivered {
                reply: reply.into(),
            },
            Class::Permanent => Outcome::PermanentFailure {
                reply: reply.into(),
            },
            Class::Intermediate | Class::Temporary => Outcome::TemporaryFailure {
                reply: reply.into(),
            },
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, self.text)
        }
    }
}

/// A temporary failure found here rather than answered by a server
/// (`4.4.1 connect to ...: Connection refused`).
pub fn temporary(text: impl Into<String>) -> Outcome {
    Outcome::TemporaryFailure {
        reply: text.into().into(),
    }
}

/// A permanent failure found here (`5.6.3 remote server does not accept ...`).
pub fn permanent(text: impl Into<String>) -> Outcome {
    Outcome::PermanentFailure {
        reply: text.into().into(),
    }
}

/// A short word for logs: `sent`, `deferred` or `bounced` (Postfix's words).
pub fn status_word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Delivered { .. } => "sent",
        Outcome::TemporaryFailure { .. } => "deferred",
        Outcome::PermanentFailure { .. } => "bounced",
    }
}

/// The reply text of an outcome.
pub fn outcome_text(outcome: &Outcome) -> String {
    outcome.reply().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_classified_by_their_first_digit() {
        let host = "mx.far.example[192.0.2.1]:25";
        assert_eq!(
            Reply::new(250, "2.0.0 Ok: queued as 4XYZ").outcome(host),
            Outcome::Delivered {
                reply: "250 2.0.0 Ok: queued as 4XYZ (mx.far.example[192.0.2.1]:25)".into()
            }
        );
        assert_eq!(
            Reply::new(451, "4.3.0 try later").outcome(host),
            Outcome::TemporaryFailure {
                reply: "451 4.3.0 try later (mx.far.example[192.0.2.1]:25)".into()
            }
        );
        assert_eq!(
            Reply::new(550, "5.1.1 <x@far.example>: user unknown").outcome(host),
            Outcome::PermanentFailure {
                reply: "550 5.1.1 <x@far.example>: user unknown (mx.far.example[192.0.2.1]:25)"
                    .into()
            }
        );
    }

    #[test]
    fn odd_codes_are_temporary() {
        for code in [100, 354, 600, 999, 0] {
            assert!(
                matches!(
                    Reply::new(code, "odd").outcome("h"),
                    Outcome::TemporaryFailure { .. }
                ),
                "{code}"
            );
        }
        assert_eq!(Reply::new(354, "go").class(), Class::Intermediate);
    }

    #[test]
    fn a_reply_without_text_prints_its_code() {
        assert_eq!(Reply::new(250, "").to_string(), "250");
        assert_eq!(status_word(&temporary("x")), "deferred");
        assert_eq!(status_word(&permanent("x")), "bounced");
        assert_eq!(outcome_text(&permanent("5.0.0 no")), "5.0.0 no");
    }
}
