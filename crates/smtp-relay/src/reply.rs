//! What replies mean for a recipient: 2xx delivered, 4xx temporary, 5xx
//! permanent, anything else temporary (an error nobody classified is retried,
//! not lost). Replies are qs-queue's [`Reply`]: a peer's as lettre read it
//! ([`from_response`]), a failure found here as a reply without a code
//! ([`temporary`], [`permanent`]). The text reported to core-queue, and so to
//! the sender in a DSN, names the host that gave it. No I/O here.

use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::response::Response;
use qs_queue::{Outcome, Reply};

/// A peer's reply as lettre read it: its code and its lines.
pub fn from_response(response: &Response) -> Reply {
    let lines: Vec<&str> = response.message().collect();
    Reply::from_lines(u16::from(response.code()), &lines)
}

/// The peer's reply inside a lettre error (a 4xx or 5xx refusal, whose lines
/// lettre has joined), if the error is one.
pub fn from_error(e: &SmtpError) -> Option<Reply> {
    let code = u16::from(e.status()?);
    let text = std::error::Error::source(e)
        .map(|t| t.to_string())
        .unwrap_or_default();
    Some(Reply::from_lines(code, &[text]))
}

/// The outcome for a recipient that got `reply` as its final answer, with
/// `host` named after its text. A 3xx is not a final answer: temporary.
pub fn outcome(reply: &Reply, host: &str) -> Outcome {
    Outcome::from_reply(reply.clone().with_note(&format!("({host})")))
}

/// A temporary failure found here rather than answered by a server: its
/// enhanced code and text (`4.4.1`, `connect to ...: Connection refused`).
pub fn temporary(enhanced: &str, text: &str) -> Outcome {
    Outcome::TemporaryFailure {
        reply: Reply::local(enhanced, text),
    }
}

/// A permanent failure found here (`5.6.3`, `remote server does not accept ...`).
pub fn permanent(enhanced: &str, text: &str) -> Outcome {
    Outcome::PermanentFailure {
        reply: Reply::local(enhanced, text),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_replies_name_the_host_after_their_text() {
        let host = "mx.far.example[192.0.2.1]:25";
        let queued = Reply::from_lines(250, &["2.0.0 Ok: queued as 4XYZ"]);
        assert_eq!(
            outcome(&queued, host),
            Outcome::Delivered {
                reply: "250 2.0.0 Ok: queued as 4XYZ (mx.far.example[192.0.2.1]:25)".into()
            }
        );
        let later = outcome(&Reply::from_lines(451, &["4.3.0 try later"]), host);
        assert!(
            matches!(&later, Outcome::TemporaryFailure { .. }),
            "{later:?}"
        );
        assert_eq!(
            later.reply().to_string(),
            "451 4.3.0 try later (mx.far.example[192.0.2.1]:25)"
        );
        let unknown = Reply::from_lines(550, &["5.1.1 <x@far.example>:", "5.1.1 user unknown"]);
        let bounced = outcome(&unknown, host);
        assert!(matches!(&bounced, Outcome::PermanentFailure { .. }));
        assert_eq!(
            bounced.reply().to_string(),
            "550 5.1.1 <x@far.example>: user unknown (mx.far.example[192.0.2.1]:25)"
        );
        assert_eq!(bounced.reply().enhanced(), unknown.enhanced());
    }

    #[test]
    fn odd_codes_are_temporary() {
        for code in [100, 354, 600, 999, 0] {
            assert!(
                matches!(
                    outcome(&Reply::from_lines(code, &["odd"]), "h"),
                    Outcome::TemporaryFailure { .. }
                ),
                "{code}"
            );
        }
    }

    #[test]
    fn failures_found_here_have_no_code() {
        let t = temporary("4.4.1", "connect failed");
        assert_eq!(status_word(&t), "deferred");
        assert_eq!(t.reply().code(), None);
        assert_eq!(t.reply().to_string(), "4.4.1 connect failed");
        let p = permanent("5.0.0", "no");
        assert_eq!(status_word(&p), "bounced");
        assert_eq!(p.reply().to_string(), "5.0.0 no");
        assert_eq!(Reply::from_lines(250, &[""]).to_string(), "250");
    }
}
