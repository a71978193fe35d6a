//! FETCH: the data items a client asks for, and the response for one message.

use std::io::Read;
use std::sync::Arc;

use imap_next::imap_types::fetch::{
    Macro, MacroOrMessageDataItemNames, MessageDataItemName, Part, Section,
};
use qs_mailstore::{Flag, StoreError};

use crate::encode::{date_time, literal, number};
use crate::message::{self, HeaderSummary, SectionSpec, SectionWhat, Structure};
use crate::selected::{Selected, write_modseq};
use crate::store::write_flags;

/// Bytes of a file read at most when only its header is wanted.
const MAX_HEADER_READ: usize = 1 << 20;

/// One data item of a FETCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// UID.
    Uid,
    /// FLAGS.
    Flags,
    /// INTERNALDATE.
    InternalDate,
    /// RFC822.SIZE.
    Size,
    /// ENVELOPE.
    Envelope,
    /// BODY (the structure without extensions).
    Body,
    /// BODYSTRUCTURE.
    BodyStructure,
    /// A body section (BODY[...], BODY.PEEK[...], RFC822, RFC822.HEADER, RFC822.TEXT).
    Section {
        /// What.
        spec: SectionSpec,
        /// `<origin.length>`.
        partial: Option<(u32, u32)>,
        /// Leaves `\Seen` alone.
        peek: bool,
        /// How the response names it: `BODY[...]` (with the section text) or one of the
        /// RFC822 forms.
        label: String,
    },
    /// BINARY[part]<partial> or BINARY.PEEK (RFC 3516): the part with its
    /// Content-Transfer-Encoding undone.
    Binary {
        /// The part number; empty for the whole message.
        path: Vec<u32>,
        /// `<origin.length>`, in decoded bytes.
        partial: Option<(u32, u32)>,
        /// Leaves `\Seen` alone.
        peek: bool,
    },
    /// BINARY.SIZE[part]: the size of that content.
    BinarySize {
        /// The part number; empty for the whole message.
        path: Vec<u32>,
    },
    /// MODSEQ (RFC 7162 §3.1.4.1).
    ModSeq,
}

/// What [`fetch_one`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Its FETCH response is written.
    Sent,
    /// It is gone from the store.
    Gone,
    /// A BINARY item cannot be decoded; nothing was written for it.
    Undecodable(message::BinaryError),
}

/// The items of a FETCH command, UID first for UID FETCH. Refuses the extensions that
/// are not offered.
pub fn items(
    names: &MacroOrMessageDataItemNames<'_>,
    uid: bool,
) -> Result<Vec<Item>, &'static str> {
    let names: Vec<MessageDataItemName<'_>> = match names {
        MacroOrMessageDataItemNames::Macro(Macro::Fast) => vec![
            MessageDataItemName::Flags,
            MessageDataItemName::InternalDate,
            MessageDataItemName::Rfc822Size,
        ],
        MacroOrMessageDataItemNames::Macro(Macro::All) => vec![
            MessageDataItemName::Flags,
            MessageDataItemName::InternalDate,
            MessageDataItemName::Rfc822Size,
            MessageDataItemName::Envelope,
        ],
        MacroOrMessageDataItemNames::Macro(Macro::Full) => vec![
            MessageDataItemName::Flags,
            MessageDataItemName::InternalDate,
            MessageDataItemName::Rfc822Size,
            MessageDataItemName::Envelope,
            MessageDataItemName::Body,
        ],
        MacroOrMessageDataItemNames::MessageDataItemNames(list) => list.clone(),
        #[allow(unreachable_patterns)]
        _ => return Err("this FETCH macro is not supported"),
    };
    let mut out = Vec::new();
    if uid {
        out.push(Item::Uid);
    }
    for name in names {
        let item = match name {
            MessageDataItemName::Uid => Item::Uid,
            MessageDataItemName::Flags => Item::Flags,
            MessageDataItemName::InternalDate => Item::InternalDate,
            MessageDataItemName::Rfc822Size => Item::Size,
            MessageDataItemName::Envelope => Item::Envelope,
            MessageDataItemName::Body => Item::Body,
            MessageDataItemName::BodyStructure => Item::BodyStructure,
            MessageDataItemName::Rfc822 => Item::Section {
                spec: whole(),
                partial: None,
                peek: false,
                label: "RFC822".into(),
            },
            MessageDataItemName::Rfc822Header => Item::Section {
                spec: SectionSpec {
                    path: Vec::new(),
                    what: SectionWhat::Header,
                },
                partial: None,
                peek: true,
                label: "RFC822.HEADER".into(),
            },
            MessageDataItemName::Rfc822Text => Item::Section {
                spec: SectionSpec {
                    path: Vec::new(),
                    what: SectionWhat::Text,
                },
                partial: None,
                peek: false,
                label: "RFC822.TEXT".into(),
            },
            MessageDataItemName::BodyExt {
                section,
                partial,
                peek,
            } => {
                let spec = match &section {
                    Some(s) => spec_of(s),
                    None => whole(),
                };
                Item::Section {
                    label: format!("BODY[{}]", section_text(&spec)),
                    spec,
                    partial: partial.map(|(o, l)| (o, l.get())),
                    peek,
                }
            }
            MessageDataItemName::Binary {
                section,
                partial,
                peek,
            } => Item::Binary {
                path: section.iter().map(|n| n.get()).collect(),
                partial: partial.map(|(o, l)| (o, l.get())),
                peek,
            },
            MessageDataItemName::BinarySize { section } => Item::BinarySize {
                path: section.iter().map(|n| n.get()).collect(),
            },
            MessageDataItemName::ModSeq => Item::ModSeq,
            #[allow(unreachable_patterns)]
            _ => return Err("this FETCH item is not supported"),
        };
        if !out.contains(&item) {
            out.push(item);
        }
    }
    Ok(out)
}

fn whole() -> SectionSpec {
    SectionSpec {
        path: Vec::new(),
        what: SectionWhat::All,
    }
}

fn path_of(part: Option<&Part>) -> Vec<u32> {
    part.map(|p| p.0.as_ref().iter().map(|n| n.get()).collect())
        .unwrap_or_default()
}

fn names_of(list: &[imap_next::imap_types::core::AString<'_>]) -> Vec<String> {
    list.iter()
        .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
        .collect()
}

fn spec_of(section: &Section<'_>) -> SectionSpec {
    let (path, what) = match section {
        Section::Part(p) => (path_of(Some(p)), SectionWhat::All),
        Section::Header(p) => (path_of(p.as_ref()), SectionWhat::Header),
        Section::HeaderFields(p, names) => (
            path_of(p.as_ref()),
            SectionWhat::HeaderFields(names_of(names.as_ref())),
        ),
        Section::HeaderFieldsNot(p, names) => (
            path_of(p.as_ref()),
            SectionWhat::HeaderFieldsNot(names_of(names.as_ref())),
        ),
        Section::Text(p) => (path_of(p.as_ref()), SectionWhat::Text),
        Section::Mime(p) => (path_of(Some(p)), SectionWhat::Mime),
    };
    SectionSpec { path, what }
}

/// The section as the response names it: `1.2.HEADER.FIELDS (From To)`.
fn section_text(spec: &SectionSpec) -> String {
    let mut text: Vec<String> = spec.path.iter().map(u32::to_string).collect();
    let field_list = |names: &[String]| {
        let quoted: Vec<String> = names
            .iter()
            .map(|n| {
                let atom = !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b));
                if atom {
                    n.clone()
                } else {
                    let mut out = Vec::new();
                    crate::encode::string(&mut out, n.as_bytes());
                    String::from_utf8_lossy(&out).into_owned()
                }
            })
            .collect();
        format!("({})", quoted.join(" "))
    };
    match &spec.what {
        SectionWhat::All => {}
        SectionWhat::Header => text.push("HEADER".into()),
        SectionWhat::HeaderFields(n) => text.push(format!("HEADER.FIELDS {}", field_list(n))),
        SectionWhat::HeaderFieldsNot(n) => {
            text.push(format!("HEADER.FIELDS.NOT {}", field_list(n)));
        }
        SectionWhat::Text => text.push("TEXT".into()),
        SectionWhat::Mime => text.push("MIME".into()),
    }
    text.join(".")
}

/// True if fetching these items marks a message `\Seen`.
pub fn sets_seen(items: &[Item]) -> bool {
    items.iter().any(|i| {
        matches!(
            i,
            Item::Section { peek: false, .. } | Item::Binary { peek: false, .. }
        )
    })
}

/// How much of the file the items need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Nothing,
    Header,
    All,
}

/// Writes the FETCH response for message `index` of the view. Marks it `\Seen` when
/// the items say so (and the folder is writable) and the answer can be given, and
/// then includes FLAGS.
pub fn fetch_one(
    out: &mut Vec<u8>,
    sel: &mut Selected,
    index: usize,
    items: &[Item],
) -> Result<Fetched, StoreError> {
    let Some(mut msg) = sel.msg(index) else {
        return Ok(Fetched::Gone);
    };
    // Its keywords were defined before it got them: announced now, they come
    // before this FETCH names them.
    sel.announce_keywords(out);
    let entry = sel.entry(&msg);

    let mut summary: Option<Arc<HeaderSummary>> = None;
    let mut structure: Option<Arc<Structure>> = None;
    let mut need = Need::Nothing;
    for item in items {
        match item {
            Item::Envelope => {
                summary = sel.state.summary(&msg.id);
                if summary.is_none() {
                    need = need.max(Need::Header);
                }
            }
            Item::Body | Item::BodyStructure => {
                structure = sel.state.structure(&msg.id);
                if structure.is_none() {
                    need = Need::All;
                }
            }
            Item::Section { spec, .. } => {
                need = need.max(if spec.needs_header_only() {
                    Need::Header
                } else {
                    Need::All
                });
            }
            Item::Binary { .. } | Item::BinarySize { .. } => need = Need::All,
            _ => {}
        }
    }
    let raw = match need {
        Need::Nothing => Vec::new(),
        Need::Header | Need::All => {
            let mut file = match sel.folder.open_message(&entry) {
                Ok(file) => file,
                Err(e) if e.is_not_found() => return Ok(Fetched::Gone),
                Err(e) => return Err(e),
            };
            let io = |e| StoreError::Io {
                path: entry.path.clone(),
                source: e,
            };
            if need == Need::All {
                let mut raw = Vec::new();
                file.read_to_end(&mut raw).map_err(io)?;
                raw
            } else {
                read_header(&mut file).map_err(io)?
            }
        }
    };
    if items.contains(&Item::Envelope) && summary.is_none() {
        let s = Arc::new(message::summarize_header(&raw));
        sel.state.put_summary(&msg.id, s.clone());
        summary = Some(s);
    }
    if items
        .iter()
        .any(|i| matches!(i, Item::Body | Item::BodyStructure))
        && structure.is_none()
    {
        let s = Arc::new(message::structure(&raw));
        sel.state.put_structure(&msg.id, s.clone());
        structure = Some(s);
    }
    let size = match items.contains(&Item::Size) {
        true => match msg.size {
            Some(size) => size,
            None => match sel.folder.size_of(&entry) {
                Ok(size) => size,
                Err(e) if e.is_not_found() => return Ok(Fetched::Gone),
                Err(e) => return Err(e),
            },
        },
        false => 0,
    };
    // Decoded before anything is written: a part that cannot be decoded fails the
    // command (RFC 3516), and the response must not be left half written.
    let mut decoded = Vec::new();
    for item in items {
        if let Item::Binary { path, .. } | Item::BinarySize { path } = item {
            match message::binary_section(&raw, path) {
                Ok(data) => decoded.push(data),
                Err(e) => return Ok(Fetched::Undecodable(e)),
            }
        }
    }
    let mut decoded = decoded.into_iter();
    // Only a message whose answer can be given is marked as seen.
    let mut flags_changed = false;
    if sets_seen(items) && !sel.read_only && !msg.flags.contains(Flag::Seen) {
        match sel.set_flags(index, msg.flags.with(Flag::Seen))? {
            Some(now) => {
                msg = now;
                flags_changed = true;
            }
            None => return Ok(Fetched::Gone),
        }
    }

    let seq = index as u64 + 1;
    out.extend_from_slice(b"* ");
    number(out, seq);
    out.extend_from_slice(b" FETCH (");
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b' ');
        }
        first = false;
    };
    let wants_flags = items.contains(&Item::Flags) || flags_changed;
    for item in items {
        match item {
            Item::Uid => {
                sep(out);
                out.extend_from_slice(b"UID ");
                number(out, u64::from(msg.uid));
            }
            Item::Flags => {}
            Item::InternalDate => {
                sep(out);
                out.extend_from_slice(b"INTERNALDATE ");
                date_time(out, msg.date);
            }
            Item::Size => {
                sep(out);
                out.extend_from_slice(b"RFC822.SIZE ");
                number(out, size);
            }
            Item::Envelope => {
                sep(out);
                out.extend_from_slice(b"ENVELOPE ");
                if let Some(s) = &summary {
                    out.extend_from_slice(&s.envelope);
                }
            }
            Item::Body => {
                sep(out);
                out.extend_from_slice(b"BODY ");
                if let Some(s) = &structure {
                    out.extend_from_slice(&s.body);
                }
            }
            Item::BodyStructure => {
                sep(out);
                out.extend_from_slice(b"BODYSTRUCTURE ");
                if let Some(s) = &structure {
                    out.extend_from_slice(&s.bodystructure);
                }
            }
            Item::Section {
                spec,
                partial,
                label,
                ..
            } => {
                sep(out);
                let mut data = message::section(&raw, spec);
                // A literal may hold any octet but NUL (RFC 3501 §4.3); BODY of a
                // binary part shows it as 0x80, as Dovecot does (BINARY gives it).
                for byte in data.iter_mut().filter(|b| **b == 0) {
                    *byte = 0x80;
                }
                out.extend_from_slice(label.as_bytes());
                let data = partial_of(out, &data, *partial);
                out.push(b' ');
                literal(out, data);
            }
            Item::Binary { path, partial, .. } => {
                sep(out);
                let data = decoded.next().unwrap_or_default();
                out.extend_from_slice(b"BINARY[");
                out.extend_from_slice(part_text(path).as_bytes());
                out.push(b']');
                let data = partial_of(out, &data, *partial);
                out.push(b' ');
                // A NUL cannot travel in a plain literal: literal8 (`~{n}`) then.
                if data.contains(&0) {
                    out.push(b'~');
                }
                literal(out, data);
            }
            Item::BinarySize { path } => {
                sep(out);
                let data = decoded.next().unwrap_or_default();
                out.extend_from_slice(b"BINARY.SIZE[");
                out.extend_from_slice(part_text(path).as_bytes());
                out.extend_from_slice(b"] ");
                number(out, data.len() as u64);
            }
            Item::ModSeq => {}
        }
    }
    if wants_flags {
        sep(out);
        out.extend_from_slice(b"FLAGS ");
        let index = sel.state.index();
        write_flags(out, msg.flags, msg.recent, &index);
    }
    // With CONDSTORE on, FLAGS always travel with their MODSEQ (RFC 7162 §3.1.4.1).
    if items.contains(&Item::ModSeq) || (wants_flags && sel.condstore) {
        if first {
            // `write_modseq` writes its own leading space.
            let mut item = Vec::new();
            write_modseq(&mut item, msg.modseq);
            out.extend_from_slice(&item[1..]);
        } else {
            write_modseq(out, msg.modseq);
        }
    }
    out.extend_from_slice(b")\r\n");
    Ok(Fetched::Sent)
}

/// Writes `<origin>` when the client asked for `<origin.length>`, and returns
/// that much of `data` (RFC 3501: a range past the end gives what there is).
fn partial_of<'d>(out: &mut Vec<u8>, data: &'d [u8], partial: Option<(u32, u32)>) -> &'d [u8] {
    let Some((origin, length)) = partial else {
        return data;
    };
    out.push(b'<');
    number(out, u64::from(origin));
    out.push(b'>');
    let start = (origin as usize).min(data.len());
    let end = start.saturating_add(length as usize).min(data.len());
    &data[start..end]
}

/// A part number as the response names it: `1.2`.
fn part_text(path: &[u32]) -> String {
    let parts: Vec<String> = path.iter().map(u32::to_string).collect();
    parts.join(".")
}

/// Reads a message's header (and perhaps a little more), up to the blank line.
fn read_header(file: &mut std::fs::File) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(raw);
        }
        let searched_from = raw.len().saturating_sub(3);
        raw.extend_from_slice(&chunk[..n]);
        let tail = &raw[searched_from..];
        if tail.windows(2).any(|w| w == b"\n\n") || tail.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(raw);
        }
        if raw.len() >= MAX_HEADER_READ {
            return Ok(raw);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_labels_read_like_the_request() {
        let spec = SectionSpec {
            path: vec![1, 2],
            what: SectionWhat::HeaderFields(vec!["From".into(), "X Y".into()]),
        };
        assert_eq!(section_text(&spec), "1.2.HEADER.FIELDS (From \"X Y\")");
        assert_eq!(section_text(&whole()), "");
        let spec = SectionSpec {
            path: vec![3],
            what: SectionWhat::Mime,
        };
        assert_eq!(section_text(&spec), "3.MIME");
    }
}
