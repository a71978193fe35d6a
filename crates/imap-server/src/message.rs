//! What IMAP asks of a message's content: ENVELOPE, BODY and BODYSTRUCTURE (from
//! mail-parser's MIME tree), the bytes of a body section, and the header fields and
//! texts that SEARCH looks at. Pure functions of the message's bytes.

use std::ops::Range;

use chrono::NaiveDate;
use mail_parser::{Address, HeaderValue, Message, MessageParser, MessagePart, PartType};

use crate::encode::{ascii_or_encoded_word, nstring, number, string};

/// MIME nesting followed at most.
const MAX_DEPTH: usize = 32;

/// The length of the header block (blank line included) at the start of `raw`, or the
/// whole of `raw` when it has no blank line.
pub fn header_len(raw: &[u8]) -> usize {
    let mut i = 0;
    while i < raw.len() {
        match raw[i..].iter().position(|&b| b == b'\n') {
            Some(n) => {
                let line_start = i;
                i += n + 1;
                let line = &raw[line_start..i];
                if line == b"\n" || line == b"\r\n" {
                    return i;
                }
            }
            None => return raw.len(),
        }
    }
    raw.len()
}

/// What a message's header says that FETCH ENVELOPE and SEARCH SENT* need.
#[derive(Debug, Clone)]
pub struct HeaderSummary {
    /// The ENVELOPE, encoded.
    pub envelope: Vec<u8>,
    /// The day of the Date: field, in its own time zone.
    pub sent: Option<NaiveDate>,
}

/// Parses a message's header (the whole message may be given; only the header is read).
pub fn summarize_header(raw: &[u8]) -> HeaderSummary {
    let head = &raw[..header_len(raw)];
    match MessageParser::default().parse_headers(head) {
        Some(message) => match message.parts.first() {
            Some(part) => HeaderSummary {
                envelope: envelope_of(part, &message.raw_message),
                sent: sent_date(part),
            },
            None => empty_summary(),
        },
        None => empty_summary(),
    }
}

fn empty_summary() -> HeaderSummary {
    HeaderSummary {
        envelope: b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)".to_vec(),
        sent: None,
    }
}

/// BODY and BODYSTRUCTURE of a message, encoded.
#[derive(Debug, Clone)]
pub struct Structure {
    /// BODY: the structure without extension data.
    pub body: Vec<u8>,
    /// BODYSTRUCTURE.
    pub bodystructure: Vec<u8>,
}

/// Parses a whole message for its structure.
pub fn structure(raw: &[u8]) -> Structure {
    let parsed = MessageParser::default().parse(raw);
    let tree = parsed.as_ref().and_then(|m| Tree::of(m, raw));
    let mut body = Vec::new();
    let mut bodystructure = Vec::new();
    match &tree {
        Some(tree) => {
            write_structure(&mut body, &tree.root, raw, false);
            write_structure(&mut bodystructure, &tree.root, raw, true);
        }
        None => {
            let lines = count_lines(raw);
            let text = format!(
                "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" {} {lines}",
                raw.len()
            );
            body.extend_from_slice(text.as_bytes());
            body.push(b')');
            bodystructure.extend_from_slice(text.as_bytes());
            bodystructure.extend_from_slice(b" NIL NIL NIL NIL)");
        }
    }
    Structure {
        body,
        bodystructure,
    }
}

/// A body section (RFC 3501 §6.4.5): the part path and what of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionSpec {
    /// Part numbers, outermost first; empty for the message itself.
    pub path: Vec<u32>,
    /// What of the part.
    pub what: SectionWhat,
}

/// The text part of a section specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionWhat {
    /// The whole part (or message).
    All,
    /// Its header (of a message or message/rfc822 part).
    Header,
    /// Only these header fields (names compared without regard to case).
    HeaderFields(Vec<String>),
    /// Every header field but these.
    HeaderFieldsNot(Vec<String>),
    /// The text after the header.
    Text,
    /// The MIME header of a part.
    Mime,
}

impl SectionSpec {
    /// True if only the top-level header is needed, so the rest of the file need not
    /// be read.
    pub fn needs_header_only(&self) -> bool {
        self.path.is_empty()
            && matches!(
                self.what,
                SectionWhat::Header
                    | SectionWhat::HeaderFields(_)
                    | SectionWhat::HeaderFieldsNot(_)
            )
    }
}

/// The bytes of a section; empty when the message has no such part.
pub fn section(raw: &[u8], spec: &SectionSpec) -> Vec<u8> {
    if spec.path.is_empty() {
        let split = header_len(raw);
        return match &spec.what {
            SectionWhat::All => raw.to_vec(),
            SectionWhat::Header => raw[..split].to_vec(),
            SectionWhat::Text => raw[split..].to_vec(),
            SectionWhat::HeaderFields(names) => filter_fields(&raw[..split], names, true),
            SectionWhat::HeaderFieldsNot(names) => filter_fields(&raw[..split], names, false),
            SectionWhat::Mime => Vec::new(),
        };
    }
    let Some(parsed) = MessageParser::default().parse(raw) else {
        // Not MIME at all: the body is part 1.
        let split = header_len(raw);
        return match (spec.path.as_slice(), &spec.what) {
            ([1], SectionWhat::All) => raw[split..].to_vec(),
            _ => Vec::new(),
        };
    };
    let Some(tree) = Tree::of(&parsed, raw) else {
        return Vec::new();
    };
    let Some(node) = tree.find(&spec.path) else {
        return Vec::new();
    };
    let slice = |r: &Range<usize>| raw.get(r.clone()).unwrap_or_default().to_vec();
    match &spec.what {
        SectionWhat::All => slice(&node.body),
        SectionWhat::Mime => slice(&node.header),
        SectionWhat::Header | SectionWhat::HeaderFields(_) | SectionWhat::HeaderFieldsNot(_) => {
            let Kind::Message(inner) = &node.kind else {
                return Vec::new();
            };
            let header = raw.get(inner.header.clone()).unwrap_or_default();
            match &spec.what {
                SectionWhat::HeaderFields(names) => filter_fields(header, names, true),
                SectionWhat::HeaderFieldsNot(names) => filter_fields(header, names, false),
                _ => header.to_vec(),
            }
        }
        SectionWhat::Text => match &node.kind {
            // Up to the end of the part: mail-parser ends an inner multipart at its
            // closing boundary, and the epilogue after it is text of the message too.
            Kind::Message(inner) => slice(&(inner.body.start..node.body.end.max(inner.body.start))),
            _ => Vec::new(),
        },
    }
}

/// Why a BINARY section cannot be given (RFC 3516's `UNKNOWN-CTE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryError {
    /// A Content-Transfer-Encoding this server does not know.
    UnknownEncoding(String),
    /// The part's base64 or quoted-printable text is damaged.
    Damaged(&'static str),
}

impl std::fmt::Display for BinaryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BinaryError::UnknownEncoding(name) => {
                write!(
                    f,
                    "the part's Content-Transfer-Encoding {name:?} is unknown"
                )
            }
            BinaryError::Damaged(name) => write!(f, "the part's {name} text cannot be decoded"),
        }
    }
}

/// The content of a BINARY section (RFC 3516): the part's body with its
/// Content-Transfer-Encoding undone and no charset conversion. `[]` is the whole
/// message as stored; a multipart or message/rfc822 part is given as it is, since
/// only 7bit, 8bit or binary apply to them. No such part: empty, as for BODY.
pub fn binary_section(raw: &[u8], path: &[u32]) -> Result<Vec<u8>, BinaryError> {
    if path.is_empty() {
        return Ok(raw.to_vec());
    }
    let Some(parsed) = MessageParser::default().parse(raw) else {
        // Not MIME at all: the body is part 1.
        let split = header_len(raw);
        return match path {
            [1] => decode_transfer_encoding(&raw[..split], &raw[split..]),
            _ => Ok(Vec::new()),
        };
    };
    let Some(tree) = Tree::of(&parsed, raw) else {
        return Ok(Vec::new());
    };
    let Some(node) = tree.find(path) else {
        return Ok(Vec::new());
    };
    let body = raw.get(node.body.clone()).unwrap_or_default();
    match node.kind {
        Kind::Leaf => {
            let header = raw.get(node.header.clone()).unwrap_or_default();
            decode_transfer_encoding(header, body)
        }
        Kind::Multipart(_) | Kind::Message(_) => Ok(body.to_vec()),
    }
}

/// `body` decoded as the Content-Transfer-Encoding field of `header` says.
fn decode_transfer_encoding(header: &[u8], body: &[u8]) -> Result<Vec<u8>, BinaryError> {
    let encoding = fields(header).into_iter().find_map(|field| {
        let (name, value) = field.split_at(field.iter().position(|&b| b == b':')?);
        if !String::from_utf8_lossy(name)
            .trim_end()
            .eq_ignore_ascii_case("content-transfer-encoding")
        {
            return None;
        }
        let value = String::from_utf8_lossy(&value[1..]).into_owned();
        // A comment may follow the token: `base64 (from the scanner)`.
        let token = value.split(['(', ';']).next().unwrap_or_default();
        Some(token.trim().to_ascii_lowercase())
    });
    match encoding.as_deref() {
        None | Some("" | "7bit" | "8bit" | "binary") => Ok(body.to_vec()),
        Some("base64") => {
            // The decoder wants the text alone: line breaks and spaces out.
            let text: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            mail_parser::decoders::base64::base64_decode(&text)
                .ok_or(BinaryError::Damaged("base64"))
        }
        Some("quoted-printable") => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(body)
                .ok_or(BinaryError::Damaged("quoted-printable"))
        }
        Some(other) => Err(BinaryError::UnknownEncoding(other.to_string())),
    }
}

/// The header fields of `header` whose names are (`keep`) or are not in `names`, and
/// the blank line after them.
pub fn filter_fields(header: &[u8], names: &[String], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields(header) {
        let name_end = field.iter().position(|&b| b == b':').unwrap_or(field.len());
        let name = String::from_utf8_lossy(&field[..name_end]);
        let name = name.trim_end();
        let listed = names.iter().any(|n| n.eq_ignore_ascii_case(name));
        if listed == keep {
            out.extend_from_slice(field);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The fields of a header block, each with its continuation lines and line end; the
/// blank line is not one of them.
pub fn fields(header: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < header.len() {
        let end = header[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(header.len(), |n| i + n + 1);
        let line = &header[i..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            if let Some(s) = start {
                out.push(&header[s..i]);
            }
            start = Some(i);
        }
        i = end;
    }
    if let Some(s) = start {
        out.push(&header[s..i]);
    }
    out
}

/// One node of the MIME tree, with byte ranges into the whole message.
struct Node<'m, 'x> {
    part: &'m MessagePart<'x>,
    /// The buffer that `part`'s header offsets refer to.
    buf: &'m [u8],
    header: Range<usize>,
    body: Range<usize>,
    kind: Kind<'m, 'x>,
}

enum Kind<'m, 'x> {
    Leaf,
    Multipart(Vec<Node<'m, 'x>>),
    /// A message/rfc822 part: the root of the message inside.
    Message(Box<Node<'m, 'x>>),
}

struct Tree<'m, 'x> {
    root: Node<'m, 'x>,
}

impl<'m, 'x> Tree<'m, 'x> {
    fn of(message: &'m Message<'x>, raw: &'m [u8]) -> Option<Tree<'m, 'x>> {
        let root = build(message, 0, 0, raw.len(), 0)?;
        Some(Tree { root })
    }

    /// The node a part path names. The message itself has part 1 when it is not
    /// multipart; a message/rfc822 part's numbers go on into the message inside it.
    fn find(&self, path: &[u32]) -> Option<&Node<'m, 'x>> {
        let mut node = &self.root;
        let mut first = true;
        for &n in path {
            let index = (n as usize).checked_sub(1)?;
            let container = if first {
                node
            } else {
                match &node.kind {
                    Kind::Message(inner) => inner,
                    Kind::Multipart(_) => node,
                    Kind::Leaf => return None,
                }
            };
            first = false;
            node = match &container.kind {
                Kind::Multipart(children) => children.get(index)?,
                _ if index == 0 => container,
                _ => return None,
            };
        }
        Some(node)
    }
}

fn build<'m, 'x>(
    message: &'m Message<'x>,
    index: usize,
    base: usize,
    limit: usize,
    depth: usize,
) -> Option<Node<'m, 'x>> {
    let part = message.parts.get(index)?;
    let at = |offset: u32| (base + offset as usize).min(limit);
    let header = at(part.offset_header)..at(part.offset_body);
    let body = at(part.offset_body)..at(part.offset_end).max(at(part.offset_body));
    let buf: &'m [u8] = &message.raw_message;
    let kind = if depth >= MAX_DEPTH {
        Kind::Leaf
    } else {
        match &part.body {
            PartType::Multipart(children) => Kind::Multipart(
                children
                    .iter()
                    .filter_map(|&c| build(message, c as usize, base, limit, depth + 1))
                    .collect(),
            ),
            PartType::Message(inner) => {
                // mail-parser parses a message inside a multipart in place (offsets into
                // the same buffer) and others from a copy of the part's body.
                let inner_buf: &[u8] = &inner.raw_message;
                let inner_base =
                    if inner_buf.as_ptr() == buf.as_ptr() && inner_buf.len() == buf.len() {
                        Some(base)
                    } else if inner_buf.len() == body.len() {
                        Some(body.start)
                    } else {
                        None
                    };
                match inner_base.and_then(|b| build(inner, 0, b, limit, depth + 1)) {
                    Some(root) => Kind::Message(Box::new(root)),
                    None => Kind::Leaf,
                }
            }
            _ => Kind::Leaf,
        }
    };
    Some(Node {
        part,
        buf,
        header,
        body,
        kind,
    })
}

/// The raw value of the first field called `name` in a part's header, unfolded and
/// trimmed.
fn raw_value(part: &MessagePart<'_>, buf: &[u8], name: &str) -> Option<Vec<u8>> {
    let header = part
        .headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))?;
    let bytes = buf.get(header.offset_start as usize..header.offset_end as usize)?;
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if b != b'\r' && b != b'\n' {
            out.push(b);
        }
    }
    let start = out
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(out.len());
    let end = out
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    Some(out[start..end].to_vec())
}

fn header_value<'p, 'x>(part: &'p MessagePart<'x>, name: &str) -> Option<&'p HeaderValue<'x>> {
    part.headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value())
}

fn sent_date(part: &MessagePart<'_>) -> Option<NaiveDate> {
    match header_value(part, "Date")? {
        HeaderValue::DateTime(d) => {
            NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
        }
        _ => None,
    }
}

/// The ENVELOPE of a message whose top part is `part`.
fn envelope_of(part: &MessagePart<'_>, buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'(');
    nstring(&mut out, raw_value(part, buf, "Date").as_deref());
    out.push(b' ');
    nstring(&mut out, raw_value(part, buf, "Subject").as_deref());
    let from = header_value(part, "From").and_then(HeaderValue::as_address);
    for name in ["From", "Sender", "Reply-To", "To", "Cc", "Bcc"] {
        out.push(b' ');
        let mut list = header_value(part, name).and_then(HeaderValue::as_address);
        if list.is_none() && matches!(name, "Sender" | "Reply-To") {
            list = from;
        }
        address_list(&mut out, list);
    }
    out.push(b' ');
    nstring(&mut out, raw_value(part, buf, "In-Reply-To").as_deref());
    out.push(b' ');
    nstring(&mut out, raw_value(part, buf, "Message-ID").as_deref());
    out.push(b')');
    out
}

fn address_list(out: &mut Vec<u8>, list: Option<&Address<'_>>) {
    let mut items: Vec<u8> = Vec::new();
    match list {
        Some(Address::List(addrs)) => {
            for a in addrs {
                address(&mut items, a.name.as_deref(), a.address.as_deref());
            }
        }
        Some(Address::Group(groups)) => {
            for g in groups {
                match &g.name {
                    Some(name) => {
                        // Group start: (NIL NIL "name" NIL), members, group end.
                        items.extend_from_slice(b"(NIL NIL ");
                        string(&mut items, ascii_or_encoded_word(name).as_bytes());
                        items.extend_from_slice(b" NIL)");
                        for a in &g.addresses {
                            address(&mut items, a.name.as_deref(), a.address.as_deref());
                        }
                        items.extend_from_slice(b"(NIL NIL NIL NIL)");
                    }
                    None => {
                        for a in &g.addresses {
                            address(&mut items, a.name.as_deref(), a.address.as_deref());
                        }
                    }
                }
            }
        }
        None => {}
    }
    if items.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        out.extend_from_slice(&items);
        out.push(b')');
    }
}

fn address(out: &mut Vec<u8>, name: Option<&str>, addr: Option<&str>) {
    let Some(addr) = addr.filter(|a| !a.is_empty()) else {
        return;
    };
    out.push(b'(');
    let name = name.filter(|n| !n.is_empty()).map(ascii_or_encoded_word);
    nstring(out, name.as_deref().map(str::as_bytes));
    // An obsolete source route (`<@relay,@relay2:user@host>`, RFC 5322 §4.4) is the
    // address's "at-domain-list" (RFC 3501 §7.4.2), apart from the mailbox.
    let (route, addr) = match addr.split_once(':') {
        Some((route, rest)) if route.starts_with('@') => (Some(route), rest),
        _ => (None, addr),
    };
    out.push(b' ');
    nstring(out, route.map(str::as_bytes));
    out.push(b' ');
    match addr.rsplit_once('@') {
        Some((local, host)) => {
            string(out, local.as_bytes());
            out.push(b' ');
            string(out, host.as_bytes());
        }
        None => {
            string(out, addr.as_bytes());
            out.extend_from_slice(b" \"MISSING_DOMAIN\"");
        }
    }
    out.push(b')');
}

fn count_lines(bytes: &[u8]) -> usize {
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
    match bytes.last() {
        Some(b'\n') | None => newlines,
        Some(_) => newlines + 1,
    }
}

/// The media type of a part: (type, subtype, parameters).
fn media_type(node: &Node<'_, '_>) -> (String, String, Vec<(String, String)>) {
    match header_value(node.part, "Content-Type").and_then(HeaderValue::as_content_type) {
        Some(ct) => {
            let params = ct
                .attributes
                .as_ref()
                .map(|attrs| {
                    attrs
                        .iter()
                        .map(|a| (a.name.to_string(), a.value.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let subtype = ct.c_subtype.as_deref().unwrap_or(match ct.c_type.as_ref() {
                t if t.eq_ignore_ascii_case("text") => "plain",
                _ => "octet-stream",
            });
            (ct.c_type.to_string(), subtype.to_owned(), params)
        }
        None => match node.kind {
            Kind::Message(_) => ("message".into(), "rfc822".into(), Vec::new()),
            Kind::Multipart(_) => ("multipart".into(), "mixed".into(), Vec::new()),
            Kind::Leaf => (
                "text".into(),
                "plain".into(),
                vec![("charset".into(), "us-ascii".into())],
            ),
        },
    }
}

fn param_list(out: &mut Vec<u8>, params: &[(String, String)]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, name.as_bytes());
        out.push(b' ');
        string(out, ascii_or_encoded_word(value).as_bytes());
    }
    out.push(b')');
}

/// body-fld-dsp, body-fld-lang, body-fld-loc.
fn extension_tail(out: &mut Vec<u8>, node: &Node<'_, '_>) {
    out.push(b' ');
    match header_value(node.part, "Content-Disposition").and_then(HeaderValue::as_content_type) {
        Some(d) => {
            out.push(b'(');
            string(out, d.c_type.as_bytes());
            out.push(b' ');
            let params: Vec<(String, String)> = d
                .attributes
                .as_ref()
                .map(|attrs| {
                    attrs
                        .iter()
                        .map(|a| (a.name.to_string(), a.value.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            param_list(out, &params);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match raw_value(node.part, node.buf, "Content-Language") {
        Some(raw) => {
            let text = String::from_utf8_lossy(&raw).into_owned();
            let tags: Vec<&str> = text
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            match tags.as_slice() {
                [] => out.extend_from_slice(b"NIL"),
                [one] => string(out, one.as_bytes()),
                many => {
                    out.push(b'(');
                    for (i, t) in many.iter().enumerate() {
                        if i > 0 {
                            out.push(b' ');
                        }
                        string(out, t.as_bytes());
                    }
                    out.push(b')');
                }
            }
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    nstring(
        out,
        raw_value(node.part, node.buf, "Content-Location").as_deref(),
    );
}

fn write_structure(out: &mut Vec<u8>, node: &Node<'_, '_>, raw: &[u8], extended: bool) {
    let (type_, subtype, params) = media_type(node);
    out.push(b'(');
    if let Kind::Multipart(children) = &node.kind {
        if children.is_empty() {
            // A multipart without parts: describe it as an empty text part.
            out.extend_from_slice(b"\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0)");
            return;
        }
        for child in children {
            write_structure(out, child, raw, extended);
        }
        out.push(b' ');
        string(out, subtype.as_bytes());
        if extended {
            out.push(b' ');
            param_list(out, &params);
            extension_tail(out, node);
        }
        out.push(b')');
        return;
    }
    string(out, type_.as_bytes());
    out.push(b' ');
    string(out, subtype.as_bytes());
    out.push(b' ');
    param_list(out, &params);
    out.push(b' ');
    nstring(out, raw_value(node.part, node.buf, "Content-ID").as_deref());
    out.push(b' ');
    nstring(
        out,
        raw_value(node.part, node.buf, "Content-Description").as_deref(),
    );
    out.push(b' ');
    let encoding = raw_value(node.part, node.buf, "Content-Transfer-Encoding")
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| b"7bit".to_vec());
    string(out, &encoding);
    out.push(b' ');
    let body = raw.get(node.body.clone()).unwrap_or_default();
    number(out, body.len() as u64);
    match &node.kind {
        Kind::Message(inner) => {
            out.push(b' ');
            out.extend_from_slice(&envelope_of(inner.part, inner.buf));
            out.push(b' ');
            write_structure(out, inner, raw, extended);
            out.push(b' ');
            number(out, count_lines(body) as u64);
        }
        _ if type_.eq_ignore_ascii_case("text") => {
            out.push(b' ');
            number(out, count_lines(body) as u64);
        }
        _ => {}
    }
    if extended {
        out.push(b' ');
        nstring(
            out,
            raw_value(node.part, node.buf, "Content-MD5").as_deref(),
        );
        extension_tail(out, node);
    }
    out.push(b')');
}

/// What SEARCH looks into: the decoded header fields and texts of one message.
pub struct SearchText<'x> {
    message: Option<Message<'x>>,
    raw: &'x [u8],
}

impl<'x> SearchText<'x> {
    /// Parses a message for searching.
    pub fn new(raw: &'x [u8]) -> SearchText<'x> {
        SearchText {
            message: MessageParser::default().parse(raw),
            raw,
        }
    }

    /// True if a field called `name` contains `needle` (lower-cased), decoded; an empty
    /// needle asks only whether the field is there.
    pub fn field_contains(&self, name: &str, needle: &str) -> bool {
        let Some(part) = self.message.as_ref().and_then(|m| m.parts.first()) else {
            return false;
        };
        let buf: &[u8] = self.message.as_ref().map_or(self.raw, |m| &m.raw_message);
        part.headers
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case(name))
            .any(|h| {
                if needle.is_empty() {
                    return true;
                }
                let text = match h.value() {
                    HeaderValue::Address(a) => address_text(a),
                    HeaderValue::Text(t) => t.to_string(),
                    HeaderValue::TextList(l) => l.join(" "),
                    _ => {
                        let raw = buf
                            .get(h.offset_start as usize..h.offset_end as usize)
                            .unwrap_or_default();
                        String::from_utf8_lossy(raw).into_owned()
                    }
                };
                text.to_lowercase().contains(needle)
            })
    }

    /// True if the decoded body text contains `needle` (lower-cased).
    pub fn body_contains(&self, needle: &str) -> bool {
        let Some(message) = &self.message else {
            let body = &self.raw[header_len(self.raw)..];
            return String::from_utf8_lossy(body)
                .to_lowercase()
                .contains(needle);
        };
        parts_contain(message, needle, 0)
    }

    /// True if the header (decoded) or the body contains `needle` (lower-cased).
    pub fn text_contains(&self, needle: &str) -> bool {
        let header = &self.raw[..header_len(self.raw)];
        let decoded = match &self.message {
            Some(m) => m
                .parts
                .first()
                .map(|p| {
                    p.headers
                        .iter()
                        .map(|h| match h.value() {
                            HeaderValue::Address(a) => address_text(a),
                            HeaderValue::Text(t) => t.to_string(),
                            HeaderValue::TextList(l) => l.join(" "),
                            _ => String::new(),
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default(),
            None => String::new(),
        };
        String::from_utf8_lossy(header)
            .to_lowercase()
            .contains(needle)
            || decoded.to_lowercase().contains(needle)
            || self.body_contains(needle)
    }
}

fn parts_contain(message: &Message<'_>, needle: &str, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    message.parts.iter().any(|part| match &part.body {
        PartType::Text(t) | PartType::Html(t) => t.to_lowercase().contains(needle),
        PartType::Message(inner) => parts_contain(inner, needle, depth + 1),
        _ => false,
    })
}

fn address_text(address: &Address<'_>) -> String {
    let mut text = String::new();
    let mut add = |name: Option<&str>, addr: Option<&str>| {
        if let Some(n) = name {
            text.push_str(n);
            text.push(' ');
        }
        if let Some(a) = addr {
            text.push('<');
            text.push_str(a);
            text.push_str("> ");
        }
    };
    match address {
        Address::List(list) => {
            for a in list {
                add(a.name.as_deref(), a.address.as_deref());
            }
        }
        Address::Group(groups) => {
            for g in groups {
                add(g.name.as_deref(), None);
                for a in &g.addresses {
                    add(a.name.as_deref(), a.address.as_deref());
                }
            }
        }
    }
    text
}

#[cfg(test)]
mod tests;
