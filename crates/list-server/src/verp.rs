//! Bounce addresses (VERP): the envelope sender of every copy of a post is
//! `NAME-bounces+TAG@domain`, so a delivery failure comes back to list-server
//! and says which copy it was.
//!
//! - A copy for one member carries `m` and 12 hex digits of
//!   HMAC(key, list, member): the bounce names the member by itself, whatever
//!   the report looks like.
//! - A copy for a batch of members carries `b`, the day it was sent and 10
//!   hex digits of HMAC(key, list, day): the bounce is ours and recent, and
//!   the failed member is read from the report (RFC 3464 `Final-Recipient`).
//!
//! Both fit the 64-octet local part with room for the list's name, and
//! neither can be made without the key, so forged bounces count for nothing.

use qs_directory::mailing_list::{MailingList, Member};

use crate::token::Signer;

/// Hex digits of a member tag's signature.
const MEMBER_MAC: usize = 12;
/// Hex digits of a batch tag's signature.
const BATCH_MAC: usize = 10;
/// Bounces of copies older than this many days are ignored.
pub const BATCH_TAG_DAYS: u64 = 30;

/// What a bounce address says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    /// A copy for one member: the member's signature.
    Member(String),
    /// A copy for a batch, sent on this day (days since the epoch).
    Batch(u64),
}

/// The bounce address of a copy for one member.
pub fn member_address(signer: &Signer, list: &MailingList, member: &str) -> String {
    let mac = member_mac(signer, &list.address, member);
    list.companion(&format!("bounces+m{mac}"))
}

/// The bounce address of a copy for a batch, sent on `day`.
pub fn batch_address(signer: &Signer, list: &MailingList, day: u64) -> String {
    let mac = signer.short_mac(&format!("b\n{}\n{day}", list.address), BATCH_MAC);
    list.companion(&format!("bounces+b{day}-{mac}"))
}

fn member_mac(signer: &Signer, list: &str, member: &str) -> String {
    signer.short_mac(&format!("m\n{list}\n{}", member.to_lowercase()), MEMBER_MAC)
}

/// Reads and checks the tag of `recipient` (a `NAME-bounces+TAG@` address of
/// `list`); `None` when it has none, or one that is not ours or too old.
pub fn decode(signer: &Signer, list: &MailingList, recipient: &str, today: u64) -> Option<Tag> {
    let (local, _) = recipient.rsplit_once('@')?;
    let tag = local
        .to_lowercase()
        .strip_prefix(&format!("{}-bounces+", list.name()))?
        .to_string();
    if let Some(mac) = tag.strip_prefix('m') {
        return (mac.len() == MEMBER_MAC && mac.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Tag::Member(mac.to_string()));
    }
    let (day, mac) = tag.strip_prefix('b')?.split_once('-')?;
    let day: u64 = day.parse().ok()?;
    let expected = signer.short_mac(&format!("b\n{}\n{day}", list.address), BATCH_MAC);
    (mac == expected && day <= today && today - day <= BATCH_TAG_DAYS).then_some(Tag::Batch(day))
}

/// The member a member tag names.
pub fn find_member<'a>(signer: &Signer, list: &'a MailingList, mac: &str) -> Option<&'a Member> {
    list.members
        .iter()
        .find(|m| member_mac(signer, &list.address, &m.address) == mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> MailingList {
        let mut l = MailingList::new("team@example.test").unwrap();
        l.add_member("alice@far.example", "").unwrap();
        l.add_member("bob@far.example", "").unwrap();
        l
    }

    #[test]
    fn member_tags_name_the_member() {
        let signer = Signer::new(&[1; 32]);
        let l = list();
        let a = member_address(&signer, &l, "bob@far.example");
        assert!(a.starts_with("team-bounces+m"), "{a}");
        assert!(a.split('@').next().unwrap().len() <= 64);
        let Some(Tag::Member(mac)) = decode(&signer, &l, &a.to_uppercase(), 0) else {
            panic!("no member tag in {a}");
        };
        assert_eq!(
            find_member(&signer, &l, &mac).unwrap().address,
            "bob@far.example"
        );
        // Another key's tag names nobody.
        let other = member_address(&Signer::new(&[2; 32]), &l, "bob@far.example");
        let Some(Tag::Member(mac)) = decode(&signer, &l, &other, 0) else {
            panic!()
        };
        assert!(find_member(&signer, &l, &mac).is_none());
    }

    #[test]
    fn batch_tags_are_signed_and_expire() {
        let signer = Signer::new(&[1; 32]);
        let l = list();
        let a = batch_address(&signer, &l, 20_000);
        assert_eq!(decode(&signer, &l, &a, 20_001), Some(Tag::Batch(20_000)));
        assert_eq!(decode(&signer, &l, &a, 20_000 + BATCH_TAG_DAYS + 1), None);
        let forged = a.replace("b20000", "b20001");
        assert_eq!(decode(&signer, &l, &forged, 20_001), None);
        assert_eq!(decode(&signer, &l, "team-bounces@example.test", 1), None);
        assert_eq!(
            decode(&signer, &l, "team-bounces+zzz@example.test", 1),
            None
        );
    }
}
