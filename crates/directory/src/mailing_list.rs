//! Mailing lists on disk: the list model, its file store and the posts held
//! for moderation. Both `qsctl list …` and list-server use this module; it
//! lives here, beside [`crate::lists::ListIndex`] (which routes on the same
//! files) and the directory's atomic file store, because a tool may not depend
//! on a daemon crate and every module that knows lists already links this one.
//!
//! # Files
//! - `<data_dir>/lists/<list address>.json`: one list (see [`MailingList`]),
//!   written like the directory: under an exclusive `flock` on
//!   `<file>.lock`, read afresh, changed, written to a temporary file (mode
//!   0600), fsynced, renamed over, the folder fsynced. A crash leaves the old
//!   file or the new one.
//! - `<data_dir>/lists/.held/<list address>/<id>.eml` and `<id>.json`: a post
//!   held for moderation, its bytes and what is known of it ([`HeldPost`]).
//!   A decision is an empty `<id>.approved` or `<id>.rejected` beside them,
//!   which list-server acts on (fan-out, or a notice) before removing all
//!   three. The folder's name starts with a dot, so no list can be named so.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::address::parse_address;
use crate::store::Paths;

/// The list file format this code reads and writes.
pub const LIST_FORMAT_VERSION: u32 = 1;

/// What can go wrong with a list.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// No list has that address.
    #[error("unknown list {0}")]
    UnknownList(String),
    /// A list of that address already exists.
    #[error("list {0} already exists")]
    ListExists(String),
    /// The address cannot name a list.
    #[error("{address:?} cannot be a list address: {reason}")]
    BadListAddress {
        /// The address as given.
        address: String,
        /// Why.
        reason: String,
    },
    /// A member, owner or moderator address is malformed.
    #[error(transparent)]
    Address(crate::Error),
    /// The address is already a member.
    #[error("{member} is already a member of {list}")]
    MemberExists {
        /// The member.
        member: String,
        /// The list.
        list: String,
    },
    /// The address is not a member.
    #[error("{member} is not a member of {list}")]
    UnknownMember {
        /// The address.
        member: String,
        /// The list.
        list: String,
    },
    /// A setting name is unknown or its value cannot be used.
    #[error("setting {key}: {message}")]
    BadSetting {
        /// The setting's name.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// No held post has that id.
    #[error("no post {id} is held for {list}")]
    UnknownHeld {
        /// The id given.
        id: String,
        /// The list.
        list: String,
    },
    /// Reading or writing a file failed, or a file cannot be decoded.
    #[error(transparent)]
    Store(crate::Error),
}

/// The result type of this module.
pub type ListResult<T> = std::result::Result<T, ListError>;

/// Who may post to a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PostingPolicy {
    /// Members, owners and moderators.
    #[default]
    Members,
    /// Anybody.
    Anyone,
    /// Only owners and moderators (an announcement list).
    Moderators,
    /// Owners and moderators post; members' posts are held for approval.
    Moderated,
}

/// What happens to a post from someone the policy does not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NonMemberAction {
    /// Held for a moderator's decision.
    #[default]
    Hold,
    /// Refused at once: the sender gets a delivery failure notice.
    Reject,
}

/// Where replies to a post go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReplyTo {
    /// To the list (a Reply-To naming the list is set).
    List,
    /// To the author (the post's own Reply-To, if any, is kept).
    #[default]
    Sender,
}

fn yes() -> bool {
    true
}
fn fifty() -> u32 {
    50
}

/// A list's settings; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Who may post.
    #[serde(default)]
    pub posting: PostingPolicy,
    /// What happens to a post the policy does not let through.
    #[serde(default)]
    pub non_members: NonMemberAction,
    /// Put before the subject (not again on replies); `None`: `[name]`; `""`: none.
    #[serde(default)]
    pub subject_prefix: Option<String>,
    /// Where replies go.
    #[serde(default)]
    pub reply_to: ReplyTo,
    /// Recipients per queued copy of a post.
    #[serde(default = "fifty")]
    pub max_recipients: u32,
    /// Sent to a new member.
    #[serde(default)]
    pub welcome: String,
    /// Sent to a member who leaves.
    #[serde(default)]
    pub farewell: String,
    /// Subscriptions and unsubscriptions need a confirming reply.
    #[serde(default = "yes")]
    pub confirm_subscriptions: bool,
    /// Shown on the web page's index.
    #[serde(default = "yes")]
    pub listed: bool,
    /// Accepted posts are kept under `<data_dir>/lists/.archive/`.
    #[serde(default)]
    pub archive: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            posting: PostingPolicy::default(),
            non_members: NonMemberAction::default(),
            subject_prefix: None,
            reply_to: ReplyTo::default(),
            max_recipients: fifty(),
            welcome: String::new(),
            farewell: String::new(),
            confirm_subscriptions: true,
            listed: true,
            archive: false,
        }
    }
}

/// One member of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The address (compared without regard to case).
    pub address: String,
    /// A display name, possibly empty.
    #[serde(default)]
    pub name: String,
    /// The member also receives their own posts.
    #[serde(default = "yes")]
    pub own_copy: bool,
    /// Receives nothing (set by hand, or when bounces pass the threshold).
    #[serde(default)]
    pub suspended: bool,
    /// Bounces counted since the last reset.
    #[serde(default)]
    pub bounce_score: u32,
    /// When the last bounce was counted, seconds since the epoch.
    #[serde(default)]
    pub last_bounce: u64,
}

impl Member {
    /// A member with the default options.
    pub fn new(address: impl Into<String>, name: impl Into<String>) -> Member {
        Member {
            address: address.into(),
            name: name.into(),
            own_copy: true,
            suspended: false,
            bounce_score: 0,
            last_bounce: 0,
        }
    }
}

/// One mailing list, as stored in its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailingList {
    /// [`LIST_FORMAT_VERSION`].
    pub version: u32,
    /// The list's address (lowercase).
    pub address: String,
    /// A short title, for the web page and List-Id.
    #[serde(default)]
    pub title: String,
    /// A longer description, for the web page.
    #[serde(default)]
    pub description: String,
    /// Who keeps the list; they get NAME-owner@ mail and notices.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Who approves held posts (the owners may too).
    #[serde(default)]
    pub moderators: Vec<String>,
    /// The members, in the order they joined.
    #[serde(default)]
    pub members: Vec<Member>,
    /// The settings.
    #[serde(default)]
    pub settings: Settings,
}

impl MailingList {
    /// A new list with default settings and no members.
    pub fn new(address: &str) -> ListResult<MailingList> {
        let address = check_list_address(address)?;
        Ok(MailingList {
            version: LIST_FORMAT_VERSION,
            address,
            title: String::new(),
            description: String::new(),
            owners: Vec::new(),
            moderators: Vec::new(),
            members: Vec::new(),
            settings: Settings::default(),
        })
    }

    /// The local part (`team` of `team@example.test`).
    pub fn name(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map_or(self.address.as_str(), |(l, _)| l)
    }

    /// The domain.
    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map_or("", |(_, d)| d)
    }

    /// `NAME-SUFFIX@domain`, e.g. `team-request@example.test`.
    pub fn companion(&self, suffix: &str) -> String {
        format!("{}-{suffix}@{}", self.name(), self.domain())
    }

    /// The title, or the address when there is none.
    pub fn display_title(&self) -> &str {
        if self.title.is_empty() {
            &self.address
        } else {
            &self.title
        }
    }

    /// The subject prefix in force (`[name]` unless set).
    pub fn subject_prefix(&self) -> String {
        match &self.settings.subject_prefix {
            Some(p) => p.clone(),
            None => format!("[{}]", self.name()),
        }
    }

    /// The member with that address.
    pub fn member(&self, address: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.address.eq_ignore_ascii_case(address))
    }

    /// The member with that address, to change.
    pub fn member_mut(&mut self, address: &str) -> Option<&mut Member> {
        self.members
            .iter_mut()
            .find(|m| m.address.eq_ignore_ascii_case(address))
    }

    /// True for an owner.
    pub fn is_owner(&self, address: &str) -> bool {
        self.owners.iter().any(|o| o.eq_ignore_ascii_case(address))
    }

    /// True for a moderator or an owner.
    pub fn is_moderator(&self, address: &str) -> bool {
        self.is_owner(address)
            || self
                .moderators
                .iter()
                .any(|o| o.eq_ignore_ascii_case(address))
    }

    /// Adds a member (address checked and lowercased in its domain).
    pub fn add_member(&mut self, address: &str, name: &str) -> ListResult<&Member> {
        let address = check_address(address)?;
        if self.member(&address).is_some() {
            return Err(ListError::MemberExists {
                member: address,
                list: self.address.clone(),
            });
        }
        if name.chars().any(char::is_control) {
            return Err(ListError::BadSetting {
                key: "name".into(),
                message: "contains a control character".into(),
            });
        }
        self.members.push(Member::new(address, name));
        Ok(self.members.last().expect("just pushed"))
    }

    /// Removes a member.
    pub fn remove_member(&mut self, address: &str) -> ListResult<Member> {
        match self
            .members
            .iter()
            .position(|m| m.address.eq_ignore_ascii_case(address.trim()))
        {
            Some(i) => Ok(self.members.remove(i)),
            None => Err(ListError::UnknownMember {
                member: address.to_string(),
                list: self.address.clone(),
            }),
        }
    }

    /// Changes one setting from its text form (`qsctl list set`).
    pub fn set(&mut self, key: &str, value: &str) -> ListResult<()> {
        let bad = |message: &str| ListError::BadSetting {
            key: key.to_string(),
            message: message.to_string(),
        };
        let flag = |value: &str| match value {
            "on" | "true" | "yes" => Ok(true),
            "off" | "false" | "no" => Ok(false),
            _ => Err(bad("expected on or off")),
        };
        let line = |value: &str| {
            if value.chars().any(char::is_control) {
                Err(bad("must be one line without control characters"))
            } else {
                Ok(value.to_string())
            }
        };
        let s = &mut self.settings;
        match key {
            "title" => self.title = line(value)?,
            "description" => self.description = value.to_string(),
            "owners" | "moderators" => {
                let mut list = Vec::new();
                for a in value.split([',', ' ']).filter(|a| !a.is_empty()) {
                    list.push(check_address(a)?);
                }
                if key == "owners" {
                    self.owners = list;
                } else {
                    self.moderators = list;
                }
            }
            "posting" => {
                s.posting = match value {
                    "members" => PostingPolicy::Members,
                    "anyone" => PostingPolicy::Anyone,
                    "moderators" => PostingPolicy::Moderators,
                    "moderated" => PostingPolicy::Moderated,
                    _ => return Err(bad("expected members, anyone, moderators or moderated")),
                }
            }
            "non_members" => {
                s.non_members = match value {
                    "hold" => NonMemberAction::Hold,
                    "reject" => NonMemberAction::Reject,
                    _ => return Err(bad("expected hold or reject")),
                }
            }
            "subject_prefix" => s.subject_prefix = Some(line(value)?),
            "reply_to" => {
                s.reply_to = match value {
                    "list" => ReplyTo::List,
                    "sender" => ReplyTo::Sender,
                    _ => return Err(bad("expected list or sender")),
                }
            }
            "max_recipients" => {
                s.max_recipients = match value.parse::<u32>() {
                    Ok(n) if (1..=10_000).contains(&n) => n,
                    _ => return Err(bad("expected a number from 1 to 10000")),
                }
            }
            "welcome" => s.welcome = value.to_string(),
            "farewell" => s.farewell = value.to_string(),
            "confirm_subscriptions" => s.confirm_subscriptions = flag(value)?,
            "listed" => s.listed = flag(value)?,
            "archive" => s.archive = flag(value)?,
            _ => {
                return Err(bad(
                    "unknown setting (title, description, owners, moderators, posting, \
                     non_members, subject_prefix, reply_to, max_recipients, welcome, farewell, \
                     confirm_subscriptions, listed, archive)",
                ));
            }
        }
        Ok(())
    }
}

/// Checks a member, owner or moderator address; returns it as stored.
pub fn check_address(address: &str) -> ListResult<String> {
    let parsed = parse_address(address.trim()).map_err(ListError::Address)?;
    Ok(format!("{}@{}", parsed.local(), parsed.domain()).to_lowercase())
}

/// Checks a list address: a plain address whose local part does not end like
/// one of the companions (`-request`, `-owner`, `-bounces`) nor contain `+`.
pub fn check_list_address(address: &str) -> ListResult<String> {
    let bad = |reason: &str| ListError::BadListAddress {
        address: address.to_string(),
        reason: reason.to_string(),
    };
    let parsed = parse_address(address.trim()).map_err(ListError::Address)?;
    let local = parsed.local().to_lowercase();
    if parsed.is_quoted() || local.starts_with('.') {
        return Err(bad("the local part must be a plain word"));
    }
    if local.contains('+') || local.contains("-bounces") {
        return Err(bad("'+' and '-bounces' are reserved for bounce addresses"));
    }
    if local.ends_with("-request") || local.ends_with("-owner") {
        return Err(bad(
            "'-request' and '-owner' name the list's companion addresses",
        ));
    }
    Ok(format!("{local}@{}", parsed.domain().to_lowercase()))
}

/// The lists folder: one file per list.
#[derive(Debug, Clone)]
pub struct ListStore {
    folder: PathBuf,
}

impl ListStore {
    /// Lists live in `folder` (`<data_dir>/lists`).
    pub fn new(folder: impl Into<PathBuf>) -> ListStore {
        ListStore {
            folder: folder.into(),
        }
    }

    /// The folder.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    fn paths(&self, address: &str) -> ListResult<Paths> {
        Paths::new(self.folder.join(format!("{address}.json"))).map_err(ListError::Store)
    }

    /// Creates a new list; refused when one of that address exists.
    pub fn create(&self, list: &MailingList) -> ListResult<()> {
        fs::create_dir_all(&self.folder)
            .map_err(|e| ListError::Store(crate::Error::io("create", &self.folder)(e)))?;
        let paths = self.paths(&list.address)?;
        let lock = paths.lock().map_err(ListError::Store)?;
        if paths.exists().map_err(ListError::Store)? {
            return Err(ListError::ListExists(list.address.clone()));
        }
        paths
            .write_bytes(&lock, &encode(list)?)
            .map_err(ListError::Store)?;
        Ok(())
    }

    /// Reads one list.
    pub fn load(&self, address: &str) -> ListResult<MailingList> {
        let address = address.trim().to_lowercase();
        if address.contains(['/', '\\', '\0']) || address.starts_with('.') {
            return Err(ListError::UnknownList(address));
        }
        let file = self.folder.join(format!("{address}.json"));
        let bytes = match fs::read(&file) {
            Ok(b) => b,
            // A name too long for a file cannot be a list that exists.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidFilename
                ) =>
            {
                return Err(ListError::UnknownList(address));
            }
            Err(e) => return Err(ListError::Store(crate::Error::io("read", &file)(e))),
        };
        decode(&file, &bytes)
    }

    /// Every list, sorted by address; files that cannot be read are skipped
    /// with a warning, so one broken file does not hide the others.
    pub fn all(&self) -> Vec<MailingList> {
        let Ok(entries) = fs::read_dir(&self.folder) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(address) = name.strip_suffix(".json") else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            match self.load(address) {
                Ok(list) => out.push(list),
                Err(e) => tracing::warn!(file = name, error = %e, "skipping a list file"),
            }
        }
        out.sort_by(|a, b| a.address.cmp(&b.address));
        out
    }

    /// Applies `change` to a list under its lock and writes it back when
    /// `change` succeeds; on error the file is untouched.
    pub fn update<T>(
        &self,
        address: &str,
        change: impl FnOnce(&mut MailingList) -> ListResult<T>,
    ) -> ListResult<T> {
        let address = address.trim().to_lowercase();
        let current = self.load(&address)?;
        let paths = self.paths(&current.address)?;
        let lock = paths.lock().map_err(ListError::Store)?;
        // Read again under the lock: another writer may have changed it.
        let mut list = self.load(&address)?;
        let out = change(&mut list)?;
        paths
            .write_bytes(&lock, &encode(&list)?)
            .map_err(ListError::Store)?;
        Ok(out)
    }

    /// Deletes a list (its held posts too).
    pub fn delete(&self, address: &str) -> ListResult<()> {
        let list = self.load(address)?;
        let paths = self.paths(&list.address)?;
        let lock = paths.lock().map_err(ListError::Store)?;
        paths.remove(&lock).map_err(ListError::Store)?;
        let _ = fs::remove_dir_all(self.held_folder(&list.address));
        Ok(())
    }

    /// The folder of a list's held posts.
    pub fn held_folder(&self, address: &str) -> PathBuf {
        self.folder.join(".held").join(address)
    }

    /// Holds a post: its bytes, then its description (which makes it visible).
    pub fn hold(&self, post: &HeldPost, bytes: &[u8]) -> ListResult<()> {
        let folder = self.held_folder(&post.list);
        fs::create_dir_all(&folder)
            .map_err(|e| ListError::Store(crate::Error::io("create", &folder)(e)))?;
        let json = serde_json::to_vec_pretty(post).map_err(|error| {
            ListError::Store(crate::Error::Json {
                path: folder.clone(),
                error,
            })
        })?;
        write_durably(&folder, &format!("{}.eml", post.id), bytes)?;
        write_durably(&folder, &format!("{}.json", post.id), &json)?;
        Ok(())
    }

    /// The posts held for a list, oldest first, with any decision taken.
    pub fn held(&self, list: &str) -> Vec<(HeldPost, Option<Decision>)> {
        let folder = self.held_folder(&list.to_lowercase());
        let Ok(entries) = fs::read_dir(&folder) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Some(post) = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<HeldPost>(&b).ok())
            else {
                continue;
            };
            let decision = self.decision(&post.list, &post.id);
            out.push((post, decision));
        }
        out.sort_by_key(|(p, _)| (p.received_at, p.id.clone()));
        out
    }

    /// One held post and its bytes.
    pub fn held_post(&self, list: &str, id: &str) -> ListResult<(HeldPost, Vec<u8>)> {
        let unknown = || ListError::UnknownHeld {
            id: id.to_string(),
            list: list.to_string(),
        };
        if !is_held_id(id) {
            return Err(unknown());
        }
        let folder = self.held_folder(&list.to_lowercase());
        let post = fs::read(folder.join(format!("{id}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice::<HeldPost>(&b).ok())
            .ok_or_else(unknown)?;
        let bytes = fs::read(folder.join(format!("{id}.eml"))).map_err(|_| unknown())?;
        Ok((post, bytes))
    }

    /// Records a moderator's decision on a held post; list-server acts on it.
    pub fn decide(&self, list: &str, id: &str, decision: Decision) -> ListResult<()> {
        let (post, _) = self.held_post(list, id)?;
        let folder = self.held_folder(&post.list);
        write_durably(&folder, &format!("{id}.{}", decision.extension()), b"")
    }

    /// The decision taken on a held post, if any.
    pub fn decision(&self, list: &str, id: &str) -> Option<Decision> {
        let folder = self.held_folder(&list.to_lowercase());
        [Decision::Approve, Decision::Reject]
            .into_iter()
            .find(|d| folder.join(format!("{id}.{}", d.extension())).exists())
    }

    /// Forgets a held post (after it was acted on, or expired).
    pub fn drop_held(&self, list: &str, id: &str) {
        let folder = self.held_folder(&list.to_lowercase());
        // The description first: without it the post is invisible.
        for ext in ["json", "eml", "approved", "rejected"] {
            let _ = fs::remove_file(folder.join(format!("{id}.{ext}")));
        }
        if let Ok(dir) = File::open(&folder) {
            let _ = dir.sync_all();
        }
    }
}

/// A moderator's decision on a held post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it to the members.
    Approve,
    /// Drop it and tell the sender.
    Reject,
}

impl Decision {
    fn extension(self) -> &'static str {
        match self {
            Decision::Approve => "approved",
            Decision::Reject => "rejected",
        }
    }
}

/// What is kept about a held post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldPost {
    /// Its id (the queue id it arrived with, letters and digits).
    pub id: String,
    /// The list.
    pub list: String,
    /// The envelope sender ("" for `<>`).
    pub sender: String,
    /// The From field's address.
    pub from: String,
    /// The subject.
    pub subject: String,
    /// Why it is held.
    pub reason: String,
    /// When it arrived, seconds since the epoch.
    pub received_at: u64,
    /// The sender may be sent notices (a real person's address, not `<>`,
    /// not automatic or list mail).
    #[serde(default)]
    pub notify_sender: bool,
}

/// A held post's id is letters, digits and `-` (no path tricks).
pub fn is_held_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn encode(list: &MailingList) -> ListResult<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(list).map_err(|error| {
        ListError::Store(crate::Error::Json {
            path: PathBuf::from(&list.address),
            error,
        })
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn decode(file: &Path, bytes: &[u8]) -> ListResult<MailingList> {
    let list: MailingList = serde_json::from_slice(bytes).map_err(|error| {
        ListError::Store(crate::Error::Json {
            path: file.to_path_buf(),
            error,
        })
    })?;
    if list.version != LIST_FORMAT_VERSION {
        return Err(ListError::Store(crate::Error::Invalid {
            path: file.to_path_buf(),
            detail: format!(
                "list file version {} (this program reads {LIST_FORMAT_VERSION})",
                list.version
            ),
        }));
    }
    Ok(list)
}

/// Writes `name` in `folder`: temp file, fsync, rename, fsync of the folder.
fn write_durably(folder: &Path, name: &str, bytes: &[u8]) -> ListResult<()> {
    let temp = folder.join(format!(".{name}.tmp.{:016x}", rand::random::<u64>()));
    let target = folder.join(name);
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e| ListError::Store(crate::Error::io(op, &path)(e))
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io("create", &temp))?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temp, &target));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(io("write", &target)(e));
    }
    File::open(folder)
        .and_then(|d| d.sync_all())
        .map_err(io("sync the folder", folder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_addresses_are_checked() {
        assert_eq!(
            check_list_address("Team@Example.Test").unwrap(),
            "team@example.test"
        );
        for bad in [
            "team-request@example.test",
            "team-owner@example.test",
            "a+b@example.test",
            "team-bounces@example.test",
            "nobody",
        ] {
            assert!(check_list_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_store_creates_updates_and_deletes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = ListStore::new(dir.path().join("lists"));
        let list = MailingList::new("team@example.test").unwrap();
        store.create(&list).unwrap();
        assert!(matches!(store.create(&list), Err(ListError::ListExists(_))));
        store
            .update("team@example.test", |l| {
                l.add_member("Alice@Example.Test", "Alice")?;
                l.set("max_recipients", "2")
            })
            .unwrap();
        // A failed change leaves the file as it was.
        let err = store
            .update("team@example.test", |l| {
                l.add_member("bob@example.test", "")?;
                l.set("posting", "everybody")
            })
            .unwrap_err();
        assert!(err.to_string().contains("setting posting"), "{err}");
        let back = store.load("TEAM@example.test").unwrap();
        assert_eq!(back.members.len(), 1);
        assert_eq!(back.members[0].address, "alice@example.test");
        assert_eq!(back.settings.max_recipients, 2);
        assert!(
            crate::lists::ListIndex::new(store.folder())
                .list_for("team-request@example.test")
                .is_some()
        );
        assert_eq!(store.all().len(), 1);
        store.delete("team@example.test").unwrap();
        assert!(matches!(
            store.load("team@example.test"),
            Err(ListError::UnknownList(_))
        ));
    }

    #[test]
    fn a_name_too_long_for_a_file_is_an_unknown_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = ListStore::new(dir.path());
        let address = format!("{}@example.test", "a".repeat(250));
        assert!(matches!(
            store.load(&address),
            Err(ListError::UnknownList(_))
        ));
    }

    #[test]
    fn held_posts_and_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let store = ListStore::new(dir.path());
        let post = HeldPost {
            id: "abc123".into(),
            list: "team@example.test".into(),
            sender: "x@far.example".into(),
            from: "x@far.example".into(),
            subject: "hi".into(),
            reason: "not a member".into(),
            received_at: 1,
            notify_sender: true,
        };
        store.hold(&post, b"Subject: hi\r\n\r\nbody\r\n").unwrap();
        assert_eq!(store.held("team@example.test").len(), 1);
        assert!(
            store
                .decide("team@example.test", "../x", Decision::Approve)
                .is_err()
        );
        store
            .decide("team@example.test", "abc123", Decision::Approve)
            .unwrap();
        assert_eq!(
            store.decision("team@example.test", "abc123"),
            Some(Decision::Approve)
        );
        store.drop_held("team@example.test", "abc123");
        assert!(store.held("team@example.test").is_empty());
    }

    #[test]
    fn settings_errors_name_the_key() {
        let mut list = MailingList::new("team@example.test").unwrap();
        let e = list.set("max_recipients", "0").unwrap_err().to_string();
        assert!(e.starts_with("setting max_recipients:"), "{e}");
        let e = list.set("colour", "blue").unwrap_err().to_string();
        assert!(e.contains("unknown setting"), "{e}");
        list.set("listed", "off").unwrap();
        assert!(!list.settings.listed);
    }
}
