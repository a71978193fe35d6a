//! Who a message fetched from a domain mailbox is for.
//!
//! A domain mailbox holds the mail of many people; the provider's envelope
//! is gone, so the header is all there is. The envelope headers the account
//! lists (`headers`: `Delivered-To` of RFC 9228, `X-Original-To`,
//! `X-Envelope-To`, `Envelope-To` by default) are read first, in that order:
//! the first of them that names a local address decides. A Bcc recipient is
//! found only this way, in the copy the provider made for them. When none
//! does, and `only_listed_headers` is false, To, Cc, Bcc, Resent-To,
//! Resent-Cc and the `for <addr>` clause of every Received field are read.
//! Every distinct local address found gets the message once (a user's
//! several forms count once; aliases are left for core-queue to resolve).
//! Nobody local: the message goes to `default_user` (else the postmaster)
//! with an `X-Quicksilver-Fetch` field saying why. Nothing is ever dropped.

use std::collections::HashSet;

use mail_parser::{HeaderName, HeaderValue, MessageParser};
use qs_directory::{Resolution, Snapshot};

/// The field added when nobody local was found.
pub const REASON_FIELD: &str = "X-Quicksilver-Fetch";

/// The account's distribution settings.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Envelope headers, read first, in order.
    pub headers: Vec<String>,
    /// Read only those.
    pub only_listed_headers: bool,
    /// Where mail for nobody goes ("" = the postmaster).
    pub default_user: String,
}

/// What the fetcher needs from a message's header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// The Message-ID, without angle brackets.
    pub message_id: Option<String>,
    /// The address of the first Return-Path (the provider's envelope sender).
    pub return_path: Option<String>,
    /// The addresses of each envelope header, in the configured order.
    pub envelope: Vec<(String, Vec<String>)>,
    /// The addresses of To, Cc, Bcc, Resent-To, Resent-Cc and Received `for`.
    pub visible: Vec<String>,
}

/// Where the recipients were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The account's single user (`deliver_to`).
    SingleUser,
    /// In this envelope header.
    Envelope(String),
    /// In To, Cc, Bcc, Resent-* or Received.
    Visible,
    /// Nowhere: the default user.
    Default,
}

/// The recipients of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    /// The addresses to queue it for, each distinct.
    pub recipients: Vec<String>,
    /// Where they came from.
    pub found: Found,
    /// Addresses in a local domain that reach nobody.
    pub unknown: Vec<String>,
}

impl Distribution {
    /// The text of the [`REASON_FIELD`] to add, if any.
    pub fn reason(&self) -> Option<String> {
        if self.found != Found::Default {
            return None;
        }
        let mut text = "no local recipient found in the header".to_string();
        if !self.unknown.is_empty() {
            text.push_str(&format!(" (unknown here: {})", self.unknown.join(", ")));
        }
        Some(text)
    }
}

/// A header parser that reads the account's envelope headers as addresses.
pub fn parser(rules: &Rules) -> MessageParser {
    let mut parser = MessageParser::new()
        .with_address_headers()
        .header_id(HeaderName::MessageId)
        .header_received(HeaderName::Received);
    for name in &rules.headers {
        parser = parser.header_address(HeaderName::from(name.as_str()).into_owned());
    }
    parser
}

/// Reads what distribution needs from a message (only its header is parsed).
pub fn read_header(parser: &MessageParser, message: &[u8], rules: &Rules) -> Header {
    let mut header = Header {
        return_path: qs_queue::message::values(message, "Return-Path")
            .first()
            .map(|v| qs_queue::message::bare_address(v))
            .filter(|a| plausible(a)),
        ..Header::default()
    };
    let Some(parsed) = parser.parse_headers(message) else {
        return header;
    };
    header.message_id = parsed
        .message_id()
        .map(|id| id.trim().trim_matches(['<', '>']).to_string())
        .filter(|id| !id.is_empty());
    for name in &rules.headers {
        let mut found = Vec::new();
        for value in parsed.header_values(HeaderName::from(name.as_str())) {
            addresses(value, &mut found);
        }
        header.envelope.push((name.clone(), found));
    }
    for name in [
        HeaderName::To,
        HeaderName::Cc,
        HeaderName::Bcc,
        HeaderName::ResentTo,
        HeaderName::ResentCc,
    ] {
        for value in parsed.header_values(name) {
            addresses(value, &mut header.visible);
        }
    }
    for value in parsed.header_values(HeaderName::Received) {
        if let Some(for_) = value.as_received().and_then(|r| r.for_.as_deref()) {
            push_address(for_, &mut header.visible);
        }
    }
    header
}

/// Decides the recipients of a message in a domain mailbox; `None` when
/// nobody local is named and there is no default user or postmaster either.
pub fn distribute(header: &Header, rules: &Rules, directory: &Snapshot) -> Option<Distribution> {
    let mut unknown = Vec::new();
    for (name, addrs) in &header.envelope {
        let local = local_recipients(addrs, directory, &mut unknown);
        if !local.is_empty() {
            return Some(Distribution {
                recipients: local,
                found: Found::Envelope(name.clone()),
                unknown: Vec::new(),
            });
        }
    }
    if !rules.only_listed_headers {
        let local = local_recipients(&header.visible, directory, &mut unknown);
        if !local.is_empty() {
            return Some(Distribution {
                recipients: local,
                found: Found::Visible,
                unknown: Vec::new(),
            });
        }
    }
    let fallback = default_user(rules, directory)?;
    let mut seen = HashSet::new();
    unknown.retain(|a| seen.insert(a.to_ascii_lowercase()));
    Some(Distribution {
        recipients: vec![fallback],
        found: Found::Default,
        unknown,
    })
}

/// `default_user`, else the postmaster, else `postmaster@` the first local domain.
pub fn default_user(rules: &Rules, directory: &Snapshot) -> Option<String> {
    if !rules.default_user.is_empty() {
        return Some(rules.default_user.clone());
    }
    postmaster(directory)
}

/// The postmaster's address, else `postmaster@` the first local domain.
pub fn postmaster(directory: &Snapshot) -> Option<String> {
    if let Some(p) = directory.postmaster() {
        return Some(p.to_string());
    }
    directory
        .domains()
        .find(|d| d.alias_of().is_none())
        .map(|d| format!("postmaster@{}", d.name()))
}

/// The local, deliverable addresses among `addrs`, one per person (a user's
/// address forms count once); local addresses that reach nobody go to
/// `unknown`.
fn local_recipients(addrs: &[String], dir: &Snapshot, unknown: &mut Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for addr in addrs {
        let key = match dir.resolve(addr) {
            Ok(Resolution::User(user)) => user.address.to_ascii_lowercase(),
            Ok(Resolution::Alias(_)) => addr.to_ascii_lowercase(),
            Ok(Resolution::Unknown) => {
                unknown.push(addr.clone());
                continue;
            }
            _ => continue,
        };
        if seen.insert(key) {
            out.push(addr.clone());
        }
    }
    out
}

/// The addresses of a parsed header value.
fn addresses(value: &HeaderValue<'_>, out: &mut Vec<String>) {
    match value {
        HeaderValue::Address(list) => {
            for addr in list.iter() {
                if let Some(a) = addr.address() {
                    push_address(a, out);
                }
            }
        }
        HeaderValue::Text(text) => {
            for part in text.split(',') {
                push_address(&qs_queue::message::bare_address(part), out);
            }
        }
        HeaderValue::TextList(list) => {
            for text in list {
                for part in text.split(',') {
                    push_address(&qs_queue::message::bare_address(part), out);
                }
            }
        }
        _ => {}
    }
}

fn push_address(raw: &str, out: &mut Vec<String>) {
    let a = raw.trim().trim_matches(['<', '>']).trim();
    if plausible(a) {
        out.push(a.to_string());
    }
}

/// Looks like `local@domain`, with nothing that cannot be in an envelope.
fn plausible(a: &str) -> bool {
    match a.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && a.len() <= 320
                && !a.chars().any(|c| c.is_control() || c.is_whitespace())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests;
