//! An immutable view of the directory: lookups, routing resolution, logins.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::iter;

use tracing::debug;

use crate::address::{Address, lookup_key, parse_address, parse_domain};
use crate::error::{Error, Result};
use crate::model::{Alias, Domain, FORMAT_VERSION, FileData, Forward, Pop3Options, User};
use crate::password::{self, Check};
use crate::secret::Secret;

/// The local part that reaches the postmaster in every local domain
/// (RFC 5321 §4.5.1); compared case-insensitively.
const POSTMASTER: &str = "postmaster";

/// What a recipient address stands for, as the router needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolution {
    /// A local user's mailbox.
    User(UserRef),
    /// An alias or a domain's catch-all: the mail goes to these addresses
    /// instead, each to be resolved in turn (they may be remote).
    Alias(Vec<String>),
    /// The domain is not one of ours.
    NotLocal,
    /// The domain is ours but nothing has this address.
    Unknown,
}

/// A local user as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserRef {
    /// The canonical address; the mailbox belongs to it.
    pub address: String,
    /// The display name, possibly empty.
    pub display_name: String,
    /// Whether the user may log in. Resolution does not look at it: whether a
    /// disabled user still receives mail is the router's decision.
    pub enabled: bool,
    /// Where the mail is forwarded to, and whether a copy stays.
    pub forward: Forward,
}

impl From<&User> for UserRef {
    fn from(u: &User) -> Self {
        UserRef {
            address: u.address().to_owned(),
            display_name: u.display_name().to_owned(),
            enabled: u.enabled(),
            forward: u.forward().clone(),
        }
    }
}

/// A user whose password has just been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedUser {
    /// The canonical address, whatever form the login used.
    pub address: String,
    /// The display name, possibly empty.
    pub display_name: String,
    /// The user's POP3 options.
    pub pop3: Pop3Options,
}

/// The directory as read from one version of the file. Cheap to share
/// (`Arc<Snapshot>`), never changes; [`crate::Directory::snapshot`] hands out
/// a new one when the file changes.
pub struct Snapshot {
    postmaster: Option<String>,
    domains: Vec<Domain>,
    users: Vec<User>,
    aliases: Vec<Alias>,
    separator: Option<char>,
    domain_index: HashMap<String, usize>,
    user_index: HashMap<String, usize>,
    alias_index: HashMap<String, usize>,
}

impl Snapshot {
    /// Checks and normalises the file's records and indexes them. The error
    /// says what is inconsistent; the caller adds the file name.
    pub(crate) fn build(mut data: FileData, separator: Option<char>) -> Result<Snapshot, String> {
        let domain_index = index_domains(&mut data)?;
        let user_index = index_users(&mut data, &domain_index)?;
        let alias_index = index_aliases(&mut data, &domain_index, &user_index)?;
        if let Some(p) = &mut data.postmaster {
            *p = normal(p).map_err(|e| format!("postmaster: {e}"))?;
        }
        Ok(Snapshot {
            postmaster: data.postmaster,
            domains: data.domains,
            users: data
                .users
                .into_iter()
                .map(|record| User { record })
                .collect(),
            aliases: data.aliases,
            separator,
            domain_index,
            user_index,
            alias_index,
        })
    }

    /// The records, normalised and sorted, as they are written to the file.
    pub(crate) fn to_file(&self) -> FileData {
        FileData {
            version: FORMAT_VERSION,
            postmaster: self.postmaster.clone(),
            domains: self.domains.clone(),
            users: self.users.iter().map(|u| u.record.clone()).collect(),
            aliases: self.aliases.clone(),
        }
    }

    /// The subaddress separator this snapshot applies (`+` unless configured).
    pub fn subaddress_separator(&self) -> Option<char> {
        self.separator
    }

    /// Local domains and domain aliases, sorted by name.
    pub fn domains(&self) -> impl Iterator<Item = &Domain> {
        self.domains.iter()
    }

    /// Users, sorted by address.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.iter()
    }

    /// Aliases, sorted by address.
    pub fn aliases(&self) -> impl Iterator<Item = &Alias> {
        self.aliases.iter()
    }

    /// The postmaster user's address, if one is set.
    pub fn postmaster(&self) -> Option<&str> {
        self.postmaster.as_deref()
    }

    /// The domain or domain alias of that name (any case).
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domain_index
            .get(&name.to_lowercase())
            .map(|&i| &self.domains[i])
    }

    /// Whether mail for `domain` is ours: a local domain or a domain alias.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.domain(domain).is_some()
    }

    /// The real local domain behind `domain` (itself, or what it is an alias of).
    pub fn canonical_domain(&self, domain: &str) -> Option<&str> {
        self.domain(domain)
            .map(|d| d.alias_of.as_deref().unwrap_or(&d.name))
    }

    /// The user of that address: case-insensitive, domain aliases followed,
    /// no subaddress (the lookup a login uses). None for a malformed address.
    pub fn user(&self, address: &str) -> Option<&User> {
        parse_address(address).ok().and_then(|a| self.user_at(&a))
    }

    /// The alias of that address: case-insensitive, domain aliases followed.
    pub fn alias(&self, address: &str) -> Option<&Alias> {
        let a = parse_address(address).ok()?;
        let domain = self.canonical_domain(a.domain())?;
        self.alias_by_key(&lookup_key(a.local(), domain))
    }

    /// What mail to `address` becomes; an error only when it is malformed.
    ///
    /// The order: a domain that is not ours gives [`Resolution::NotLocal`];
    /// domain aliases are followed; an alias or user of the exact local part
    /// (any case); the same without the subaddress (`alice+news` → `alice`);
    /// `postmaster` goes to the postmaster user; then the domain's catch-all;
    /// else [`Resolution::Unknown`].
    pub fn resolve(&self, address: &str) -> Result<Resolution> {
        Ok(self.resolve_address(&parse_address(address)?))
    }

    /// [`Snapshot::resolve`] for an address already parsed.
    pub fn resolve_address(&self, address: &Address) -> Resolution {
        self.resolve_with(address, true)
    }

    /// Every address that reaches `user` directly and that the user may
    /// therefore send as: the user's address and its forms in each domain
    /// alias, the aliases that list the user among their targets, and
    /// `postmaster@` of each domain where that reaches the user. Catch-alls
    /// are left out. Empty for an unknown user.
    pub fn addresses_of(&self, user: &str) -> Vec<String> {
        let Some(me) = self.user(user).map(|u| u.address().to_owned()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut add = |address: &str| {
            let Ok(a) = parse_address(address) else {
                return;
            };
            let forms = iter::once(a.domain()).chain(
                self.domains
                    .iter()
                    .filter(|d| d.alias_of.as_deref() == Some(a.domain()))
                    .map(|d| d.name.as_str()),
            );
            for domain in forms {
                if seen.insert(lookup_key(a.local(), domain)) {
                    out.push(format!("{}@{domain}", a.local()));
                }
            }
        };
        add(&me);
        for alias in &self.aliases {
            if alias.targets.iter().any(|t| self.reaches(t, &me)) {
                add(&alias.address);
            }
        }
        if self.postmaster.as_deref() == Some(me.as_str()) {
            for d in self.domains.iter().filter(|d| d.alias_of.is_none()) {
                let pm = format!("{POSTMASTER}@{}", d.name);
                if self.reaches(&pm, &me) {
                    add(&pm);
                }
            }
        }
        out
    }

    /// Whether `user` may use `address` as a sender: it is one of
    /// [`Snapshot::addresses_of`], possibly with a subaddress.
    pub fn may_send_as(&self, user: &str, address: &str) -> bool {
        let Ok(a) = parse_address(address) else {
            return false;
        };
        let mine: HashSet<String> = self
            .addresses_of(user)
            .iter()
            .filter_map(|m| parse_address(m).ok())
            .map(|m| m.key())
            .collect();
        iter::once(a.local())
            .chain(a.base_local(self.separator))
            .any(|local| mine.contains(&lookup_key(local, a.domain())))
    }

    /// Checks a login and its password; blocks for one argon2 computation
    /// (tens of milliseconds), whatever the outcome.
    ///
    /// `login` is the full address, any case, domain aliases allowed, no
    /// subaddress. `Ok(None)` for an unknown login, a wrong password or a
    /// disabled user, which all cost the same time. Errors only for a stored
    /// hash that cannot be read. Neither the password nor an unknown login
    /// (which may be a mistyped password) is logged.
    pub fn verify_blocking(&self, login: &str, password: &Secret) -> Result<Option<VerifiedUser>> {
        let Some(user) = parse_address(login).ok().and_then(|a| self.user_at(&a)) else {
            password::burn(password);
            debug!("login refused: no such user");
            return Ok(None);
        };
        let user = &user.record;
        match password::check(&user.password_hash, password) {
            Check::Corrupt => Err(Error::CorruptHash(user.address.clone())),
            Check::Mismatch => {
                debug!(user = %user.address, "login refused: wrong password");
                Ok(None)
            }
            Check::Match if !user.enabled => {
                debug!(user = %user.address, "login refused: user disabled");
                Ok(None)
            }
            Check::Match => Ok(Some(VerifiedUser {
                address: user.address.clone(),
                display_name: user.display_name.clone(),
                pop3: user.pop3,
            })),
        }
    }

    /// The enabled user `login` names, as (canonical address, stored password
    /// hash, what a successful check answers): what the credentials cache
    /// keys on. `None` for an unknown login or a disabled user.
    pub(crate) fn login_record(&self, login: &str) -> Option<(&str, &str, VerifiedUser)> {
        let user = &parse_address(login)
            .ok()
            .and_then(|a| self.user_at(&a))?
            .record;
        user.enabled.then(|| {
            let verified = VerifiedUser {
                address: user.address.clone(),
                display_name: user.display_name.clone(),
                pop3: user.pop3,
            };
            (user.address.as_str(), user.password_hash.as_str(), verified)
        })
    }

    /// The user of a parsed address (no subaddress).
    pub(crate) fn user_at(&self, a: &Address) -> Option<&User> {
        let domain = self.canonical_domain(a.domain())?;
        self.user_by_key(&lookup_key(a.local(), domain))
    }

    /// References to local addresses that reach nothing (catch-alls do not
    /// count), as (what holds it, target) pairs.
    pub(crate) fn dangling(&self) -> Vec<(String, String)> {
        let unknown = |t: &str| {
            parse_address(t).map_or(true, |a| {
                self.resolve_with(&a, false) == Resolution::Unknown
            })
        };
        let mut out = Vec::new();
        for a in &self.aliases {
            for t in a.targets.iter().filter(|t| unknown(t)) {
                out.push((format!("alias {}", a.address), t.clone()));
            }
        }
        for u in &self.users {
            for t in u.forward().targets.iter().filter(|t| unknown(t)) {
                out.push((format!("the forward of user {}", u.address()), t.clone()));
            }
        }
        for d in &self.domains {
            if let Some(t) = d.catch_all.as_ref().filter(|t| unknown(t)) {
                out.push((format!("the catch-all of domain {}", d.name), t.clone()));
            }
        }
        if let Some(p) = &self.postmaster
            && self.user(p).is_none()
        {
            out.push(("the postmaster setting".to_owned(), p.clone()));
        }
        out
    }

    fn resolve_with(&self, address: &Address, catch_all: bool) -> Resolution {
        let Some(domain) = self.canonical_domain(address.domain()) else {
            return Resolution::NotLocal;
        };
        let locals = || iter::once(address.local()).chain(address.base_local(self.separator));
        for local in locals() {
            let key = lookup_key(local, domain);
            if let Some(alias) = self.alias_by_key(&key) {
                return Resolution::Alias(alias.targets.clone());
            }
            if let Some(user) = self.user_by_key(&key) {
                return Resolution::User(user.into());
            }
        }
        if locals().any(|l| l.eq_ignore_ascii_case(POSTMASTER))
            && let Some(user) = self.postmaster.as_deref().and_then(|p| self.user(p))
        {
            return Resolution::User(user.into());
        }
        if catch_all && let Some(target) = self.domain(domain).and_then(|d| d.catch_all.clone()) {
            return Resolution::Alias(vec![target]);
        }
        Resolution::Unknown
    }

    /// Whether `target` reaches the user `me` directly.
    fn reaches(&self, target: &str, me: &str) -> bool {
        parse_address(target).is_ok_and(
            |a| matches!(self.resolve_with(&a, false), Resolution::User(u) if u.address == me),
        )
    }

    fn user_by_key(&self, key: &str) -> Option<&User> {
        self.user_index.get(key).map(|&i| &self.users[i])
    }

    fn alias_by_key(&self, key: &str) -> Option<&Alias> {
        self.alias_index.get(key).map(|&i| &self.aliases[i])
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("domains", &self.domains.len())
            .field("users", &self.users.len())
            .field("aliases", &self.aliases.len())
            .field("postmaster", &self.postmaster)
            .field("separator", &self.separator)
            .finish()
    }
}

/// The normal form of an address held in the file.
fn normal(address: &str) -> Result<String> {
    parse_address(address).map(|a| a.to_string())
}

fn normal_all(targets: &mut [String], owner: &str) -> Result<(), String> {
    for t in targets {
        *t = normal(t).map_err(|e| format!("{owner}: {e}"))?;
    }
    Ok(())
}

/// Parses the address of a user or alias and checks that its domain is a
/// listed real domain; returns it with its lookup key.
fn home(
    address: &str,
    what: &str,
    data: &FileData,
    domains: &HashMap<String, usize>,
) -> Result<(Address, String), String> {
    let a = parse_address(address).map_err(|e| format!("{what}: {e}"))?;
    match domains.get(a.domain()).map(|&i| &data.domains[i]) {
        None => Err(format!("{what} {a}: unknown domain {}", a.domain())),
        Some(d) if d.alias_of.is_some() => {
            Err(format!("{what} {a}: domain {} is a domain alias", d.name))
        }
        Some(_) => {
            let key = a.key();
            Ok((a, key))
        }
    }
}

fn index_domains(data: &mut FileData) -> Result<HashMap<String, usize>, String> {
    for d in &mut data.domains {
        d.name = parse_domain(&d.name).map_err(|e| e.to_string())?;
        if let Some(t) = &mut d.alias_of {
            *t = parse_domain(t).map_err(|e| format!("domain {}: {e}", d.name))?;
        }
        if let Some(c) = &mut d.catch_all {
            *c = normal(c).map_err(|e| format!("catch-all of domain {}: {e}", d.name))?;
        }
    }
    data.domains.sort_by(|a, b| a.name.cmp(&b.name));
    let mut index = HashMap::new();
    for (i, d) in data.domains.iter().enumerate() {
        if index.insert(d.name.clone(), i).is_some() {
            return Err(format!("domain {} is listed twice", d.name));
        }
    }
    for d in &data.domains {
        let Some(t) = &d.alias_of else { continue };
        match index.get(t).map(|&i| &data.domains[i]) {
            None => {
                return Err(format!(
                    "domain {} is an alias of {t}, which is not listed",
                    d.name
                ));
            }
            Some(target) if target.alias_of.is_some() => {
                return Err(format!(
                    "domain {} is an alias of {t}, which is itself an alias",
                    d.name
                ));
            }
            Some(_) => {}
        }
        if d.catch_all.is_some() {
            return Err(format!("domain alias {} cannot have a catch-all", d.name));
        }
    }
    Ok(index)
}

fn index_users(
    data: &mut FileData,
    domains: &HashMap<String, usize>,
) -> Result<HashMap<String, usize>, String> {
    let mut keyed = Vec::with_capacity(data.users.len());
    for mut u in std::mem::take(&mut data.users) {
        let (a, key) = home(&u.address, "user", data, domains)?;
        u.address = a.to_string();
        normal_all(
            &mut u.forward.targets,
            &format!("forward of user {}", u.address),
        )?;
        keyed.push((key, u));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut index = HashMap::new();
    for (i, (key, u)) in keyed.iter().enumerate() {
        if index.insert(key.clone(), i).is_some() {
            return Err(format!("user {} is listed twice", u.address));
        }
    }
    data.users = keyed.into_iter().map(|(_, u)| u).collect();
    Ok(index)
}

fn index_aliases(
    data: &mut FileData,
    domains: &HashMap<String, usize>,
    users: &HashMap<String, usize>,
) -> Result<HashMap<String, usize>, String> {
    let mut keyed = Vec::with_capacity(data.aliases.len());
    for mut a in std::mem::take(&mut data.aliases) {
        let (parsed, key) = home(&a.address, "alias", data, domains)?;
        a.address = parsed.to_string();
        if a.targets.is_empty() {
            return Err(format!("alias {} has no targets", a.address));
        }
        if users.contains_key(&key) {
            return Err(format!("{} is both a user and an alias", a.address));
        }
        normal_all(&mut a.targets, &format!("alias {}", a.address))?;
        keyed.push((key, a));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut index = HashMap::new();
    for (i, (key, a)) in keyed.iter().enumerate() {
        if index.insert(key.clone(), i).is_some() {
            return Err(format!("alias {} is listed twice", a.address));
        }
    }
    data.aliases = keyed.into_iter().map(|(_, a)| a).collect();
    Ok(index)
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::password::tests::checks_during;

    /// One real hash of "right password", made once for all tests.
    fn hash() -> &'static str {
        static HASH: OnceLock<String> = OnceLock::new();
        HASH.get_or_init(|| password::hash(&Secret::from("right password")).unwrap())
    }

    fn snapshot(separator: Option<char>) -> Snapshot {
        let json = r#"{
          "version": 1,
          "postmaster": "Admin@Example.TEST",
          "domains": [
            { "name": "example.test", "catch_all": "admin@example.test" },
            { "name": "Company.Example", "alias_of": "example.test" },
            { "name": "other.test" }
          ],
          "users": [
            { "address": "Admin@example.test", "display_name": "Site Admin", "password_hash": "HASH" },
            { "address": "bob@example.test", "password_hash": "HASH", "enabled": false },
            { "address": "jean@example.test", "password_hash": "HASH",
              "forward": { "targets": ["jean@far.example"], "keep_copy": false } },
            { "address": "jean@other.test", "display_name": "Other Jean", "password_hash": "HASH",
              "pop3": { "ignore_dele": true } }
          ],
          "aliases": [
            { "address": "sales@example.test", "targets": ["jean@example.test", "rep@partner.example"] },
            { "address": "postmaster@other.test", "targets": ["jean@other.test"] },
            { "address": "team@other.test", "targets": ["jean+team@Example.test"] }
          ]
        }"#
        .replace("HASH", hash());
        let data: FileData = serde_json::from_str(&json).unwrap();
        Snapshot::build(data, separator).unwrap()
    }

    fn user(address: &str) -> String {
        match snapshot(Some('+')).resolve(address).unwrap() {
            Resolution::User(u) => u.address,
            other => panic!("{address} resolved to {other:?}"),
        }
    }

    fn targets(s: &Snapshot, address: &str) -> Vec<String> {
        match s.resolve(address).unwrap() {
            Resolution::Alias(t) => t,
            other => panic!("{address} resolved to {other:?}"),
        }
    }

    fn build_err(json: &str) -> String {
        let data: FileData = serde_json::from_str(json).unwrap();
        match Snapshot::build(data, Some('+')) {
            Ok(_) => panic!("should not build: {json}"),
            Err(e) => e,
        }
    }

    #[test]
    fn lookups_ignore_case() {
        assert_eq!(user("admin@example.test"), "Admin@example.test");
        assert_eq!(user("ADMIN@EXAMPLE.TEST"), "Admin@example.test");
        assert_eq!(user("JEAN@Other.Test"), "jean@other.test");
        let s = snapshot(Some('+'));
        assert!(s.is_local_domain("EXAMPLE.test"));
        assert!(s.is_local_domain("company.example"));
        assert!(!s.is_local_domain("far.example"));
        assert_eq!(
            s.user("BOB@example.test").map(User::address),
            Some("bob@example.test")
        );
        assert_eq!(
            s.alias("SALES@example.TEST").map(Alias::address),
            Some("sales@example.test")
        );
    }

    #[test]
    fn same_local_part_in_two_domains() {
        let s = snapshot(Some('+'));
        assert_eq!(s.user("jean@example.test").unwrap().display_name(), "");
        assert_eq!(
            s.user("jean@other.test").unwrap().display_name(),
            "Other Jean"
        );
        assert!(s.user("jean@other.test").unwrap().pop3().ignore_dele);
        assert!(!s.user("jean@other.test").unwrap().pop3().only_unread);
    }

    #[test]
    fn subaddress() {
        assert_eq!(user("jean+news@example.test"), "jean@example.test");
        assert_eq!(user("Jean+News+x@Company.Example"), "jean@example.test");
        let s = snapshot(Some('+'));
        assert_eq!(targets(&s, "sales+q3@example.test").len(), 2);
        // Without subaddressing, the catch-all takes it; in a domain without one, nobody.
        let off = snapshot(None);
        assert_eq!(
            targets(&off, "jean+news@example.test"),
            ["admin@example.test"]
        );
        assert_eq!(
            off.resolve("jean+news@other.test").unwrap(),
            Resolution::Unknown
        );
        // Another separator.
        let dash = snapshot(Some('-'));
        assert!(matches!(
            dash.resolve("jean-news@other.test").unwrap(),
            Resolution::User(_)
        ));
        assert_eq!(
            dash.resolve("jean+news@other.test").unwrap(),
            Resolution::Unknown
        );
    }

    #[test]
    fn domain_alias() {
        assert_eq!(user("jean@company.example"), "jean@example.test");
        let s = snapshot(Some('+'));
        assert_eq!(s.canonical_domain("COMPANY.example"), Some("example.test"));
        assert_eq!(
            s.user("bob@company.example").map(User::address),
            Some("bob@example.test")
        );
        assert_eq!(targets(&s, "sales@company.example").len(), 2);
    }

    #[test]
    fn foreign_unknown_and_malformed() {
        let s = snapshot(Some('+'));
        assert_eq!(s.resolve("jean@far.example").unwrap(), Resolution::NotLocal);
        assert_eq!(s.resolve("nobody@other.test").unwrap(), Resolution::Unknown);
        let e = s.resolve("jean@@other.test").unwrap_err();
        assert!(matches!(e, Error::MalformedAddress { .. }), "{e}");
        assert!(s.user("not an address").is_none());
    }

    #[test]
    fn catch_all() {
        let s = snapshot(Some('+'));
        assert_eq!(targets(&s, "nobody@example.test"), ["admin@example.test"]);
        assert_eq!(
            targets(&s, "nobody@company.example"),
            ["admin@example.test"]
        );
        assert!(matches!(
            s.resolve("bob@example.test").unwrap(),
            Resolution::User(_)
        ));
    }

    #[test]
    fn postmaster_default_and_override() {
        assert_eq!(user("postmaster@example.test"), "Admin@example.test");
        assert_eq!(user("PostMaster@company.example"), "Admin@example.test");
        assert_eq!(
            user("postmaster+bounces@example.test"),
            "Admin@example.test"
        );
        let s = snapshot(Some('+'));
        assert_eq!(targets(&s, "postmaster@other.test"), ["jean@other.test"]);
        assert_eq!(s.postmaster(), Some("Admin@example.test"));

        let mut data = s.to_file();
        data.postmaster = None;
        let unset = Snapshot::build(data, Some('+')).unwrap();
        // No postmaster user: the catch-all, or nobody.
        assert_eq!(
            targets(&unset, "postmaster@example.test"),
            ["admin@example.test"]
        );
        let mut data = unset.to_file();
        data.domains.iter_mut().for_each(|d| d.catch_all = None);
        let bare = Snapshot::build(data, Some('+')).unwrap();
        assert_eq!(
            bare.resolve("postmaster@example.test").unwrap(),
            Resolution::Unknown
        );
    }

    #[test]
    fn user_ref_carries_forward_and_flags() {
        let s = snapshot(Some('+'));
        let Resolution::User(jean) = s.resolve("jean@example.test").unwrap() else {
            panic!("jean is a user");
        };
        assert_eq!(jean.forward.targets, ["jean@far.example"]);
        assert!(!jean.forward.keep_copy);
        assert!(jean.enabled);
        let Resolution::User(bob) = s.resolve("bob@example.test").unwrap() else {
            panic!("bob is a user");
        };
        assert!(!bob.enabled);
        assert!(!bob.forward.is_active());
        let Resolution::User(admin) = s.resolve("admin@example.test").unwrap() else {
            panic!("admin is a user");
        };
        assert_eq!(admin.display_name, "Site Admin");
    }

    #[test]
    fn alias_with_several_targets() {
        let s = snapshot(Some('+'));
        assert_eq!(
            targets(&s, "sales@example.test"),
            ["jean@example.test", "rep@partner.example"]
        );
        // Targets were normalised when loaded.
        assert_eq!(targets(&s, "team@other.test"), ["jean+team@example.test"]);
    }

    #[test]
    fn listings_are_sorted_and_normalised() {
        let s = snapshot(Some('+'));
        let domains: Vec<_> = s.domains().map(Domain::name).collect();
        assert_eq!(domains, ["company.example", "example.test", "other.test"]);
        assert_eq!(
            s.domain("company.example").unwrap().alias_of(),
            Some("example.test")
        );
        assert_eq!(
            s.domain("example.test").unwrap().catch_all(),
            Some("admin@example.test")
        );
        let users: Vec<_> = s.users().map(User::address).collect();
        assert_eq!(
            users,
            [
                "Admin@example.test",
                "bob@example.test",
                "jean@example.test",
                "jean@other.test"
            ]
        );
        let aliases: Vec<_> = s.aliases().map(Alias::address).collect();
        assert_eq!(
            aliases,
            [
                "postmaster@other.test",
                "sales@example.test",
                "team@other.test"
            ]
        );
    }

    #[test]
    fn debug_hides_hashes() {
        let s = snapshot(Some('+'));
        let text = format!("{:?} {:?}", s, s.users().collect::<Vec<_>>());
        assert!(!text.contains("argon2"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn addresses_of_a_user() {
        let s = snapshot(Some('+'));
        assert_eq!(
            s.addresses_of("JEAN@example.test"),
            [
                "jean@example.test",
                "jean@company.example",
                "sales@example.test",
                "sales@company.example",
                // points to jean+team@example.test
                "team@other.test"
            ]
        );
        assert_eq!(
            s.addresses_of("jean@other.test"),
            ["jean@other.test", "postmaster@other.test"]
        );
        // The postmaster: not through the catch-all, nor postmaster@other.test (an alias).
        assert_eq!(
            s.addresses_of("admin@example.test"),
            [
                "Admin@example.test",
                "Admin@company.example",
                "postmaster@example.test",
                "postmaster@company.example"
            ]
        );
        assert!(s.addresses_of("nobody@example.test").is_empty());
        let mut data = s.to_file();
        data.aliases.retain(|a| a.address != "sales@example.test");
        let s = Snapshot::build(data, Some('+')).unwrap();
        assert_eq!(s.addresses_of("jean@example.test").len(), 3);
    }

    #[test]
    fn may_send_as() {
        let s = snapshot(Some('+'));
        assert!(s.may_send_as("jean@example.test", "Jean@Example.test"));
        assert!(s.may_send_as("jean@example.test", "jean+list@company.example"));
        assert!(s.may_send_as("jean@example.test", "sales@example.test"));
        assert!(s.may_send_as("jean@example.test", "team@other.test"));
        assert!(!s.may_send_as("jean@example.test", "bob@example.test"));
        assert!(!s.may_send_as("jean@example.test", "jean@other.test"));
        assert!(
            !s.may_send_as("admin@example.test", "whatever@example.test"),
            "not via the catch-all"
        );
        assert!(s.may_send_as("admin@example.test", "postmaster@example.test"));
        assert!(!s.may_send_as("jean@example.test", "a@@b"));
    }

    #[test]
    fn verify_outcomes() {
        let s = snapshot(Some('+'));
        let right = Secret::from("right password");
        let wrong = Secret::from("wrong password");
        let ok = s
            .verify_blocking("ADMIN@example.test", &right)
            .unwrap()
            .unwrap();
        assert_eq!(ok.address, "Admin@example.test");
        assert_eq!(ok.display_name, "Site Admin");
        let via_alias = s
            .verify_blocking("jean@company.example", &right)
            .unwrap()
            .unwrap();
        assert_eq!(via_alias.address, "jean@example.test");
        let other = s.verify_blocking("jean@other.test", &right).unwrap();
        assert!(other.unwrap().pop3.ignore_dele);
        assert_eq!(
            s.verify_blocking("admin@example.test", &wrong).unwrap(),
            None
        );
        assert_eq!(
            s.verify_blocking("bob@example.test", &right).unwrap(),
            None,
            "disabled"
        );
        assert_eq!(
            s.verify_blocking("nobody@example.test", &right).unwrap(),
            None
        );
        assert_eq!(
            s.verify_blocking("jean+tag@example.test", &right).unwrap(),
            None,
            "subaddress"
        );
        assert_eq!(
            s.verify_blocking("sales@example.test", &right).unwrap(),
            None,
            "alias"
        );
        assert_eq!(s.verify_blocking("not an address", &right).unwrap(), None);
    }

    #[test]
    fn every_login_costs_one_hash() {
        let s = snapshot(Some('+'));
        let right = Secret::from("right password");
        for login in [
            "admin@example.test",
            "bob@example.test",
            "nobody@example.test",
            "nobody@far.example",
            "jean+tag@example.test",
            "",
        ] {
            let n = checks_during(|| {
                let _ = s.verify_blocking(login, &right);
            });
            assert_eq!(n, 1, "{login:?}");
        }
    }

    #[test]
    fn corrupt_hash_is_an_error() {
        let mut data = snapshot(Some('+')).to_file();
        data.users[0].password_hash = "$argon2id$garbage".into();
        let s = Snapshot::build(data, Some('+')).unwrap();
        let e = s
            .verify_blocking("admin@example.test", &Secret::from("x"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the stored password hash of Admin@example.test is not a valid argon2 PHC string"
        );
    }

    #[test]
    fn inconsistent_files_are_refused() {
        let head = r#""version": 1, "domains": [{ "name": "example.test" }, { "name": "alias.test", "alias_of": "example.test" }]"#;
        let cases = [
            (
                r#""users": [{ "address": "a@example.test", "password_hash": "x" }, { "address": "A@Example.test", "password_hash": "y" }]"#,
                "user A@example.test is listed twice",
            ),
            (
                r#""users": [{ "address": "a@nowhere.test", "password_hash": "x" }]"#,
                "user a@nowhere.test: unknown domain nowhere.test",
            ),
            (
                r#""users": [{ "address": "a@alias.test", "password_hash": "x" }]"#,
                "user a@alias.test: domain alias.test is a domain alias",
            ),
            (
                r#""users": [{ "address": "a b@example.test", "password_hash": "x" }]"#,
                "user: malformed address \"a b@example.test\": space outside quotes",
            ),
            (
                r#""users": [{ "address": "a@example.test", "password_hash": "x" }], "aliases": [{ "address": "A@example.test", "targets": ["b@c.test"] }]"#,
                "A@example.test is both a user and an alias",
            ),
            (
                r#""aliases": [{ "address": "a@example.test", "targets": [] }]"#,
                "alias a@example.test has no targets",
            ),
            (
                r#""aliases": [{ "address": "a@example.test", "targets": ["x@@y"] }]"#,
                "alias a@example.test: malformed address \"x@@y\": more than one '@' outside quotes",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(build_err(&format!("{{ {head}, {body} }}")), expected);
        }
        assert_eq!(
            build_err(
                r#"{ "version": 1, "domains": [{ "name": "a.test" }, { "name": "A.TEST" }] }"#
            ),
            "domain a.test is listed twice"
        );
        assert_eq!(
            build_err(
                r#"{ "version": 1, "domains": [{ "name": "a.test", "alias_of": "b.test" }] }"#
            ),
            "domain a.test is an alias of b.test, which is not listed"
        );
        assert_eq!(
            build_err(
                r#"{ "version": 1, "domains": [{ "name": "a.test" }, { "name": "b.test", "alias_of": "a.test" }, { "name": "c.test", "alias_of": "b.test" }] }"#
            ),
            "domain c.test is an alias of b.test, which is itself an alias"
        );
        assert_eq!(
            build_err(
                r#"{ "version": 1, "domains": [{ "name": "a.test" }, { "name": "b.test", "alias_of": "a.test", "catch_all": "x@a.test" }] }"#
            ),
            "domain alias b.test cannot have a catch-all"
        );
    }

    #[test]
    fn dangling_references_are_listed() {
        let s = snapshot(Some('+'));
        assert!(s.dangling().is_empty(), "{:?}", s.dangling());
        let mut data = s.to_file();
        data.users.retain(|u| u.address != "jean@other.test");
        data.postmaster = Some("gone@example.test".into());
        data.domains[1].catch_all = Some("ghost@example.test".into());
        let s = Snapshot::build(data, Some('+')).unwrap();
        assert_eq!(
            s.dangling(),
            [
                (
                    "alias postmaster@other.test".to_owned(),
                    "jean@other.test".to_owned()
                ),
                (
                    "the catch-all of domain example.test".to_owned(),
                    "ghost@example.test".to_owned()
                ),
                (
                    "the postmaster setting".to_owned(),
                    "gone@example.test".to_owned()
                ),
            ]
        );
    }
}
