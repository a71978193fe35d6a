//! What a post looks like when it leaves the list, and the checks made on
//! every message that arrives.
//!
//! An accepted post gets, at the top of its header: `List-Id` (RFC 2919),
//! `List-Help`, `List-Subscribe`, `List-Unsubscribe` (mailto and https),
//! `List-Post`, `List-Owner` (RFC 2369), `List-Unsubscribe-Post:
//! List-Unsubscribe=One-Click` when the https link names the one member the
//! copy goes to (RFC 8058), `Precedence: list`, `X-Loop` naming the list, the
//! subject prefix (not added again when a reply already has it) and, when the
//! list asks for it, `Reply-To` the list. The same fields coming from outside
//! are removed first; everything else in the message stays byte-identical
//! (no re-encoding). `X-Loop` fields of other lists are kept: they are how
//! lists subscribed to one another notice a message coming round again.

use qs_directory::mailing_list::{MailingList, PostingPolicy, ReplyTo};
use qs_queue::message;

/// Fields a post may not bring with it: the list sets its own.
const REPLACED: &[&str] = &[
    "List-Id",
    "List-Post",
    "List-Help",
    "List-Subscribe",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Owner",
    "List-Archive",
    "Precedence",
    "Return-Path",
    "Subject",
];

/// The RFC 2919 list identifier: the address with `@` as a dot.
pub fn list_id(list: &MailingList) -> String {
    list.address.replace('@', ".")
}

/// True when the message has already been through this list: it carries the
/// list's List-Id or an X-Loop naming it. Such a message is never sent out
/// again.
pub fn is_loop(list: &MailingList, bytes: &[u8]) -> bool {
    let id = format!("<{}>", list_id(list));
    message::values(bytes, "List-Id")
        .iter()
        .any(|v| v.to_lowercase().contains(&id))
        || message::values(bytes, "X-Loop")
            .iter()
            .any(|v| message::bare_address(v).eq_ignore_ascii_case(&list.address))
}

/// True when no automatic answer may go to this message's sender: the null
/// sender, an `Auto-Submitted` other than `no` (RFC 3834), list mail
/// (`List-*`, `Precedence: bulk|list|junk`), or a sender address that is
/// itself a mailer or a list's.
pub fn is_automatic(sender: &str, bytes: &[u8]) -> bool {
    if sender.is_empty() {
        return true;
    }
    let auto = message::values(bytes, "Auto-Submitted")
        .iter()
        .any(|v| !v.trim().to_lowercase().starts_with("no"));
    let list_mail = ["List-Id", "List-Unsubscribe", "List-Post"]
        .iter()
        .any(|n| message::count(bytes, n) > 0);
    let bulk = message::values(bytes, "Precedence")
        .iter()
        .any(|v| matches!(v.trim().to_lowercase().as_str(), "bulk" | "list" | "junk"));
    let local = sender
        .rsplit_once('@')
        .map_or(sender, |(l, _)| l)
        .to_lowercase();
    let mailer = local == "mailer-daemon"
        || local.starts_with("owner-")
        || local.ends_with("-request")
        || local.ends_with("-owner")
        || local.contains("-bounces");
    auto || list_mail || bulk || mailer
}

/// How a copy's List-Unsubscribe https link reads.
#[derive(Debug, Clone, Copy)]
pub enum Unsubscribe<'a> {
    /// The copy goes to one member: a one-click link with their token.
    OneClick(&'a str),
    /// The copy goes to several members: the list's page, where each can ask.
    Page,
}

/// A post with the list's fields in place but the per-copy ones still to
/// add; [`Prepared::render`] makes each copy.
#[derive(Debug, Clone)]
pub struct Prepared {
    fields: Vec<String>,
    base: Vec<u8>,
    web_url: String,
    list_url: String,
    unsubscribe_mailto: String,
}

impl Prepared {
    /// Prepares `bytes` (a post accepted for `list`) for sending.
    pub fn new(list: &MailingList, bytes: &[u8], web_url: &str) -> Prepared {
        let mut remove: Vec<&str> = REPLACED.to_vec();
        if list.settings.reply_to == ReplyTo::List {
            remove.push("Reply-To");
        }
        let subject = message::values(bytes, "Subject").into_iter().next();
        let base = message::remove_fields(bytes, &remove);
        let request = list.companion("request");
        let list_url = format!("{web_url}/list/{}", url_segment(&list.address));
        let mut fields = vec![format!("List-Id: {}", list_id_field(list))];
        fields.push(format!("List-Help: <mailto:{request}?subject=help>"));
        fields.push(format!(
            "List-Subscribe: <mailto:{request}?subject=subscribe>,\r\n <{list_url}>"
        ));
        fields.push(if list.settings.posting == PostingPolicy::Moderators {
            "List-Post: NO".to_string()
        } else {
            format!("List-Post: <mailto:{}>", list.address)
        });
        fields.push(format!("List-Owner: <mailto:{}>", list.companion("owner")));
        fields.push("Precedence: list".to_string());
        fields.push(format!("X-Loop: {}", list.address));
        if list.settings.reply_to == ReplyTo::List {
            fields.push(format!("Reply-To: <{}>", list.address));
        }
        fields.push(format!(
            "Subject: {}",
            prefixed_subject(&list.subject_prefix(), subject.as_deref())
        ));
        Prepared {
            fields,
            base,
            web_url: web_url.to_string(),
            list_url,
            unsubscribe_mailto: format!("<mailto:{request}?subject=unsubscribe>"),
        }
    }

    /// One copy's bytes.
    pub fn render(&self, unsubscribe: Unsubscribe<'_>) -> Vec<u8> {
        let mut lines = self.fields.clone();
        match unsubscribe {
            Unsubscribe::OneClick(token) => {
                lines.push(format!(
                    "List-Unsubscribe: {},\r\n <{}/u/{token}>",
                    self.unsubscribe_mailto, self.web_url
                ));
                lines.push("List-Unsubscribe-Post: List-Unsubscribe=One-Click".to_string());
            }
            Unsubscribe::Page => lines.push(format!(
                "List-Unsubscribe: {},\r\n <{}>",
                self.unsubscribe_mailto, self.list_url
            )),
        }
        message::prepend(&lines, &self.base)
    }
}

/// `"Title" <team.example.test>`, or the bare id when the title cannot be a
/// plain quoted string.
fn list_id_field(list: &MailingList) -> String {
    let id = list_id(list);
    let title = list.title.trim();
    if !title.is_empty()
        && title
            .chars()
            .all(|c| c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\')
    {
        format!("\"{title}\" <{id}>")
    } else {
        format!("<{id}>")
    }
}

/// The subject with the list's prefix, unless it already has it (a reply).
pub fn prefixed_subject(prefix: &str, subject: Option<&str>) -> String {
    let subject = subject.unwrap_or("").trim();
    if prefix.is_empty() {
        return subject.to_string();
    }
    let rest = crate::commands::strip_reply_prefixes(subject);
    if rest.to_lowercase().starts_with(&prefix.to_lowercase()) {
        return subject.to_string();
    }
    let prefix = if prefix.is_ascii() {
        prefix.to_string()
    } else {
        use base64::Engine;
        format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(prefix)
        )
    };
    if subject.is_empty() {
        prefix
    } else {
        format!("{prefix} {subject}")
    }
}

/// `s` as one URL path segment (RFC 3986 unreserved characters and `@` kept).
pub fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> MailingList {
        let mut l = MailingList::new("team@example.test").unwrap();
        l.title = "The Team".into();
        l
    }

    const POST: &[u8] = b"From: Alice <alice@example.test>\r\nList-Id: <other.example.org>\r\nPrecedence: bulk\r\nSubject: Hello\r\nX-Loop: other@example.org\r\n\r\nBody\r\n";

    #[test]
    fn a_post_gets_the_list_fields_and_keeps_the_rest() {
        let p = Prepared::new(&list(), POST, "https://lists.example.test");
        let out = p.render(Unsubscribe::OneClick("TOKEN"));
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            message::values(&out, "List-Id"),
            ["\"The Team\" <team.example.test>"]
        );
        assert_eq!(message::values(&out, "Subject"), ["[team] Hello"]);
        assert_eq!(message::values(&out, "Precedence"), ["list"]);
        assert_eq!(
            message::values(&out, "List-Unsubscribe"),
            [
                "<mailto:team-request@example.test?subject=unsubscribe>, <https://lists.example.test/u/TOKEN>"
            ]
        );
        assert_eq!(
            message::values(&out, "List-Unsubscribe-Post"),
            ["List-Unsubscribe=One-Click"]
        );
        assert_eq!(
            message::values(&out, "List-Post"),
            ["<mailto:team@example.test>"]
        );
        assert!(message::values(&out, "List-Help")[0].contains("subject=help"));
        assert!(
            message::values(&out, "List-Subscribe")[0]
                .contains("https://lists.example.test/list/team@example.test")
        );
        // Other lists' loop marks stay, ours is added; the body is untouched.
        assert_eq!(
            message::values(&out, "X-Loop"),
            ["team@example.test", "other@example.org"]
        );
        assert!(text.ends_with("\r\n\r\nBody\r\n"));
        assert!(is_loop(&list(), &out));
        assert!(!is_loop(&list(), POST));
        // A batch copy links to the page and has no one-click promise.
        let batch = p.render(Unsubscribe::Page);
        assert!(message::values(&batch, "List-Unsubscribe-Post").is_empty());
    }

    #[test]
    fn the_prefix_is_not_doubled_on_replies() {
        assert_eq!(prefixed_subject("[team]", Some("Hi")), "[team] Hi");
        assert_eq!(
            prefixed_subject("[team]", Some("Re: [team] Hi")),
            "Re: [team] Hi"
        );
        assert_eq!(
            prefixed_subject("[team]", Some("RE: AW: [Team] Hi")),
            "RE: AW: [Team] Hi"
        );
        assert_eq!(prefixed_subject("[team]", None), "[team]");
        assert_eq!(prefixed_subject("", Some("Hi")), "Hi");
        assert!(prefixed_subject("[équipe]", Some("Hi")).starts_with("=?utf-8?b?"));
    }

    #[test]
    fn reply_to_and_announcement_lists() {
        let mut l = list();
        l.settings.reply_to = ReplyTo::List;
        l.settings.posting = PostingPolicy::Moderators;
        let msg = b"From: a@b.example\r\nReply-To: a@b.example\r\n\r\nx\r\n";
        let out = Prepared::new(&l, msg, "http://h").render(Unsubscribe::Page);
        assert_eq!(message::values(&out, "Reply-To"), ["<team@example.test>"]);
        assert_eq!(message::values(&out, "List-Post"), ["NO"]);
    }

    #[test]
    fn automatic_mail_is_recognised() {
        let plain = b"From: a@b.example\r\n\r\nx\r\n";
        assert!(!is_automatic("a@b.example", plain));
        assert!(is_automatic("", plain));
        assert!(is_automatic(
            "a@b.example",
            b"Auto-Submitted: auto-replied\r\n\r\n"
        ));
        assert!(!is_automatic("a@b.example", b"Auto-Submitted: no\r\n\r\n"));
        assert!(is_automatic("a@b.example", b"List-Id: <x.y>\r\n\r\n"));
        assert!(is_automatic("a@b.example", b"Precedence: bulk\r\n\r\n"));
        assert!(is_automatic("MAILER-DAEMON@b.example", plain));
        assert!(is_automatic("x-bounces+abc@b.example", plain));
    }

    #[test]
    fn url_segments_are_escaped() {
        assert_eq!(url_segment("team@example.test"), "team@example.test");
        assert_eq!(url_segment("a#b?c@d"), "a%23b%3Fc@d");
    }
}
