//! Who may post: the list's posting policy applied to a post's envelope
//! sender and From address. A post is let through when either address
//! qualifies (a member's mail program may send with another envelope sender,
//! e.g. through a forwarding service); otherwise it is held or refused as the
//! list's `non_members` setting says.
//!
//! | posting | owners, moderators | members | others |
//! |---|---|---|---|
//! | `anyone` | sent | sent | sent |
//! | `members` | sent | sent | `non_members` |
//! | `moderators` (announcements) | sent | `non_members` | `non_members` |
//! | `moderated` | sent | held | `non_members` |

use qs_directory::mailing_list::{MailingList, NonMemberAction, PostingPolicy};

/// What happens to a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Sent to the members.
    Accept,
    /// Kept for a moderator; the reason is shown to them.
    Hold(String),
    /// Refused; the reason goes back to the sender.
    Reject(String),
}

/// Applies the list's policy to a post from `sender` (envelope) and `from`.
pub fn judge(list: &MailingList, sender: &str, from: &str) -> Verdict {
    let who: Vec<&str> = [sender, from]
        .into_iter()
        .filter(|a| !a.is_empty())
        .collect();
    let moderator = who.iter().any(|a| list.is_moderator(a));
    let member = who
        .iter()
        .any(|a| list.member(a).is_some_and(|m| !m.suspended));
    let outsider = |what: &str| match list.settings.non_members {
        NonMemberAction::Hold => Verdict::Hold(format!("{what} may not post without approval")),
        NonMemberAction::Reject => {
            Verdict::Reject(format!("{what} may not post to {}", list.address))
        }
    };
    match list.settings.posting {
        PostingPolicy::Anyone => Verdict::Accept,
        _ if moderator => Verdict::Accept,
        PostingPolicy::Members if member => Verdict::Accept,
        PostingPolicy::Members => outsider("only members may post; a non-member"),
        PostingPolicy::Moderators => {
            outsider("this is an announcement list: only its moderators post; the sender")
        }
        PostingPolicy::Moderated if member => {
            Verdict::Hold("the list is moderated: every post is approved first".into())
        }
        PostingPolicy::Moderated => outsider("a non-member"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(posting: PostingPolicy, non_members: NonMemberAction) -> MailingList {
        let mut l = MailingList::new("team@example.test").unwrap();
        l.add_member("member@example.test", "").unwrap();
        l.owners.push("owner@example.test".into());
        l.moderators.push("mod@example.test".into());
        l.settings.posting = posting;
        l.settings.non_members = non_members;
        l
    }

    #[test]
    fn the_policy_table() {
        use NonMemberAction::*;
        use PostingPolicy::*;
        let accept = |l: &MailingList, a: &str| judge(l, a, a) == Verdict::Accept;
        let held = |l: &MailingList, a: &str| matches!(judge(l, a, a), Verdict::Hold(_));
        let refused = |l: &MailingList, a: &str| matches!(judge(l, a, a), Verdict::Reject(_));

        let l = list(Anyone, Hold);
        assert!(accept(&l, "stranger@far.example"));

        let l = list(Members, Hold);
        assert!(accept(&l, "member@example.test"));
        assert!(accept(&l, "MEMBER@example.test"));
        assert!(accept(&l, "owner@example.test"));
        assert!(held(&l, "stranger@far.example"));
        let l = list(Members, Reject);
        assert!(refused(&l, "stranger@far.example"));

        let l = list(Moderators, Reject);
        assert!(accept(&l, "mod@example.test"));
        assert!(refused(&l, "member@example.test"));

        let l = list(Moderated, Reject);
        assert!(accept(&l, "owner@example.test"));
        assert!(held(&l, "member@example.test"));
        assert!(refused(&l, "stranger@far.example"));
    }

    #[test]
    fn either_the_envelope_or_from_may_qualify_but_not_a_suspended_member() {
        let mut l = list(PostingPolicy::Members, NonMemberAction::Reject);
        assert_eq!(
            judge(&l, "srs0=x@fwd.example", "member@example.test"),
            Verdict::Accept
        );
        l.member_mut("member@example.test").unwrap().suspended = true;
        assert!(matches!(
            judge(&l, "member@example.test", "member@example.test"),
            Verdict::Reject(_)
        ));
    }
}
