//! Routing: what becomes of each recipient of a new message.
//!
//! A local user's address is delivered into their Maildir (class `local`); an
//! alias or a forward is replaced by its targets, each routed in turn; a list
//! address goes to list-server (class `list`); any other domain to smtp-relay
//! (class `outbound`). A local address that matches nothing, an alias loop, or a
//! chain deeper than [`MAX_ALIAS_DEPTH`] fails at once, permanently, with the
//! reply that the bounce will carry.

use std::collections::HashSet;

use qs_directory::{Directory, Resolution};
use qs_queue::{JobClass, Recipient, RecipientStatus, Reply};

use qs_directory::lists::ListIndex;

/// How deep an alias or forward chain may go.
pub const MAX_ALIAS_DEPTH: usize = 10;

/// Routes recipients with the directory and the lists folder.
pub struct Router {
    directory: std::sync::Arc<Directory>,
    lists: ListIndex,
}

impl Router {
    /// A router over `directory` and the lists in `lists`.
    pub fn new(directory: std::sync::Arc<Directory>, lists: ListIndex) -> Self {
        Router { directory, lists }
    }

    /// The directory routed with.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Routes every recipient as given (`RCPT TO`, a header, a command line).
    /// The result holds no duplicates; failed recipients carry their reply.
    pub fn route(&self, recipients: &[String], now: u64) -> Vec<Recipient> {
        let snapshot = self.directory.snapshot();
        let mut out: Vec<Recipient> = Vec::new();
        let mut seen: HashSet<(String, &'static str)> = HashSet::new();
        for given in recipients {
            let mut path = Vec::new();
            self.expand(
                &snapshot, given, given, 0, &mut path, &mut out, &mut seen, now,
            );
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn expand(
        &self,
        snapshot: &qs_directory::Snapshot,
        given: &str,
        address: &str,
        depth: usize,
        path: &mut Vec<String>,
        out: &mut Vec<Recipient>,
        seen: &mut HashSet<(String, &'static str)>,
        now: u64,
    ) {
        let original = (given != address).then(|| given.to_string());
        let mut push = |address: String, class: JobClass, failure: Option<Reply>| {
            push_unique(out, seen, original.clone(), address, class, failure, now);
        };

        let lower = address.to_ascii_lowercase();
        if path.contains(&lower) {
            push(
                address.to_string(),
                JobClass::local(),
                Some(Reply::new(
                    554,
                    "5.4.6",
                    &format!("<{address}>: alias loop"),
                )),
            );
            return;
        }
        if depth > MAX_ALIAS_DEPTH {
            push(
                address.to_string(),
                JobClass::local(),
                Some(Reply::new(
                    554,
                    "5.4.6",
                    &format!("<{given}>: alias chain deeper than {MAX_ALIAS_DEPTH}"),
                )),
            );
            return;
        }
        let parsed = match qs_directory::parse_address(address) {
            Ok(a) => a,
            Err(e) => {
                push(
                    address.to_string(),
                    JobClass::local(),
                    Some(Reply::new(553, "5.1.3", &format!("<{address}>: {e}"))),
                );
                return;
            }
        };
        if snapshot.is_local_domain(parsed.domain()) {
            let canonical_domain = snapshot
                .canonical_domain(parsed.domain())
                .unwrap_or(parsed.domain())
                .to_string();
            let as_list = format!(
                "{}@{}",
                parsed.local().to_ascii_lowercase(),
                canonical_domain
            );
            if let Some(_list) = self.lists.list_for(&as_list) {
                push(as_list, JobClass::list(), None);
                return;
            }
        }
        match snapshot.resolve_address(&parsed) {
            Resolution::User(user) => {
                if user.forward.is_active() {
                    path.push(lower);
                    for target in &user.forward.targets {
                        self.expand(snapshot, given, target, depth + 1, path, out, seen, now);
                    }
                    path.pop();
                    if !user.forward.keep_copy {
                        return;
                    }
                }
                push_unique(
                    out,
                    seen,
                    original,
                    user.address.clone(),
                    JobClass::local(),
                    None,
                    now,
                );
            }
            Resolution::Alias(targets) => {
                path.push(lower);
                for target in &targets {
                    self.expand(snapshot, given, target, depth + 1, path, out, seen, now);
                }
                path.pop();
            }
            Resolution::NotLocal => push(
                format!("{}@{}", parsed.local(), parsed.domain()),
                JobClass::outbound(),
                None,
            ),
            Resolution::Unknown => push(
                address.to_string(),
                JobClass::local(),
                Some(Reply::new(
                    550,
                    "5.1.1",
                    &format!("<{address}>: no such user here"),
                )),
            ),
            _ => push(
                address.to_string(),
                JobClass::local(),
                Some(Reply::new(
                    451,
                    "4.3.0",
                    &format!("<{address}>: cannot be routed"),
                )),
            ),
        }
    }
}

/// Adds a recipient unless the same address already went the same way.
fn push_unique(
    out: &mut Vec<Recipient>,
    seen: &mut HashSet<(String, &'static str)>,
    original: Option<String>,
    address: String,
    class: JobClass,
    failure: Option<Reply>,
    now: u64,
) {
    let kind = match (&failure, class.as_str()) {
        (Some(_), _) => "failed",
        (None, "local") => "local",
        (None, "list") => "list",
        (None, _) => "outbound",
    };
    if !seen.insert((address.to_ascii_lowercase(), kind)) {
        return;
    }
    let mut r = Recipient::new(address, class);
    r.original = original;
    r.next_attempt = now;
    if let Some(reply) = failure {
        r.status = RecipientStatus::Failed;
        r.last_reply = Some(reply);
    }
    out.push(r);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use qs_directory::{Options, Secret};

    use super::*;

    fn router() -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().unwrap();
        let d = Directory::create(dir.path().join("directory.json"), Options::default()).unwrap();
        d.add_domain("example.test").unwrap();
        d.add_domain_alias("company.example", "example.test")
            .unwrap();
        let pw = Secret::new(&b"pw"[..]);
        for u in ["alice", "bob", "carol", "dave", "postmaster"] {
            d.add_user(&format!("{u}@example.test"), "", &pw).unwrap();
        }
        d.set_postmaster("postmaster@example.test").unwrap();
        d.add_alias(
            "team@example.test",
            [
                "alice@example.test",
                "bob@example.test",
                "friend@far.example",
            ],
        )
        .unwrap();
        // Targets must exist when an alias is made: close the loop afterwards.
        d.add_alias("loop1@example.test", ["alice@example.test"])
            .unwrap();
        d.add_alias("loop2@example.test", ["loop1@example.test"])
            .unwrap();
        d.set_alias_targets("loop1@example.test", ["loop2@example.test"])
            .unwrap();
        d.set_forward("carol@example.test", ["carol@far.example"], true)
            .unwrap();
        d.set_forward("dave@example.test", ["alice@example.test"], false)
            .unwrap();
        let lists = dir.path().join("lists");
        std::fs::create_dir(&lists).unwrap();
        std::fs::write(lists.join("news@example.test.json"), "{}").unwrap();
        let r = Router::new(Arc::new(d), ListIndex::new(lists));
        (dir, r)
    }

    fn summary(rs: &[Recipient]) -> Vec<String> {
        rs.iter()
            .map(|r| match r.status {
                RecipientStatus::Failed => format!("FAILED {}", r.address),
                _ => format!("{} {}", r.class, r.address),
            })
            .collect()
    }

    #[test]
    fn local_remote_alias_forward_and_list() {
        let (_d, r) = router();
        let routed = r.route(
            &[
                "Alice@Example.TEST".into(),
                "team@example.test".into(),
                "carol@example.test".into(),
                "dave@example.test".into(),
                "x@far.example".into(),
                "news@example.test".into(),
                "news-request@company.example".into(),
                "bob+tag@company.example".into(),
            ],
            0,
        );
        assert_eq!(
            summary(&routed),
            [
                "local alice@example.test",
                "local bob@example.test",
                "outbound friend@far.example",
                "outbound carol@far.example",
                "local carol@example.test",
                "outbound x@far.example",
                "list news@example.test",
                "list news-request@example.test",
            ]
        );
        // The alias's targets remember the address first given.
        assert_eq!(routed[2].original.as_deref(), Some("team@example.test"));
        // A recipient that was not expanded has no separate original.
        assert_eq!(routed[0].original, None);
    }

    #[test]
    fn unknown_users_and_loops_fail_permanently() {
        let (_d, r) = router();
        let routed = r.route(
            &["nobody@example.test".into(), "loop1@example.test".into()],
            0,
        );
        assert_eq!(routed.len(), 2);
        assert!(routed.iter().all(|x| x.status == RecipientStatus::Failed));
        assert!(
            routed[0]
                .last_reply
                .as_ref()
                .unwrap()
                .to_string()
                .starts_with("550 5.1.1")
        );
        assert!(
            routed[1]
                .last_reply
                .as_ref()
                .unwrap()
                .to_string()
                .contains("alias loop")
        );
    }

    #[test]
    fn postmaster_of_every_domain_reaches_the_postmaster() {
        let (_d, r) = router();
        let routed = r.route(&["POSTMASTER@company.example".into()], 0);
        assert_eq!(summary(&routed), ["local postmaster@example.test"]);
    }

    #[test]
    fn a_long_chain_fails() {
        let dir = tempfile::tempdir().unwrap();
        let d = Directory::create(dir.path().join("d.json"), Options::default()).unwrap();
        d.add_domain("example.test").unwrap();
        d.add_alias("a12@example.test", ["far@away.example"])
            .unwrap();
        for i in (0..12).rev() {
            d.add_alias(
                &format!("a{i}@example.test"),
                [format!("a{}@example.test", i + 1)],
            )
            .unwrap();
        }
        let r = Router::new(Arc::new(d), ListIndex::new(dir.path().join("lists")));
        let routed = r.route(&["a0@example.test".into()], 0);
        assert_eq!(routed.len(), 1);
        assert!(
            routed[0]
                .last_reply
                .as_ref()
                .unwrap()
                .to_string()
                .contains("deeper than 10")
        );
    }
}
