//! The handle every module holds: reloading snapshots, logins, and the
//! changes `qsctl` makes.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tracing::{debug, error, info};

use crate::address::{Address, parse_address, parse_domain, valid_separator};
use crate::credentials_cache::{CredentialsCache, CredentialsCacheSettings};
use crate::error::{Error, Result};
use crate::model::{Alias, Domain, FileData, Pop3Options, UserRecord};
use crate::password;
use crate::secret::Secret;
use crate::snapshot::{Snapshot, VerifiedUser};
use crate::store::{Paths, Signature};

/// How the directory interprets addresses; from the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The character that starts a subaddress (`alice+news@…` reaches
    /// `alice@…`); `None` turns subaddressing off. Default `Some('+')`.
    pub subaddress_separator: Option<char>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            subaddress_separator: Some('+'),
        }
    }
}

/// The directory file of one site, opened.
///
/// Cheap to query: [`Directory::snapshot`] costs one `stat` when nothing
/// changed. Share it with `Arc<Directory>`. The changing methods block (file
/// lock, fsync); call them from `qsctl` or from `spawn_blocking`.
pub struct Directory {
    paths: Paths,
    options: Options,
    current: Mutex<Current>,
    hashing: HashLimit,
    /// Logins checked lately, so a client logging in again is not hashed again.
    credentials: CredentialsCache,
}

/// At most this many password checks of one [`Directory`] (a daemon opens
/// one) hash at once, whatever the number of cores: argon2 takes 19 MiB for each (the OWASP parameters),
/// so a crowd of logins (or an attacker opening hundreds of connections and
/// sending LOGIN on each) would otherwise cost hundreds of MiB, which the
/// allocator keeps afterwards. The others wait their turn.
pub const MAX_CONCURRENT_HASHES: usize = 4;

/// Runs password hashes on tokio's blocking pool, a limited number at once.
#[derive(Debug)]
struct HashLimit {
    permits: Arc<tokio::sync::Semaphore>,
}

impl HashLimit {
    /// As many at once as there are cores, at most `MAX_CONCURRENT_HASHES`.
    fn new() -> HashLimit {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        HashLimit::with_limit(cores.clamp(1, MAX_CONCURRENT_HASHES))
    }

    fn with_limit(limit: usize) -> HashLimit {
        HashLimit {
            permits: Arc::new(tokio::sync::Semaphore::new(limit)),
        }
    }

    /// Waits for a turn, then runs `work` on the blocking pool.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _turn = permit;
            work()
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))
    }
}

/// The last version read, and the last reload error reported.
struct Current {
    snapshot: Arc<Snapshot>,
    sig: Signature,
    _file: File,
    reported: Option<String>,
}

impl Directory {
    /// Opens an existing directory file (`qsctl init` creates it); fails if it
    /// is missing, unreadable or invalid, naming the file.
    pub fn open(path: impl Into<PathBuf>, options: Options) -> Result<Directory> {
        let paths = Paths::new(path.into())?;
        check_options(&options)?;
        let loaded = paths.read()?;
        let snapshot = build(&paths, loaded.data, &options)?;
        Ok(Directory::with(
            paths,
            options,
            snapshot,
            loaded.file,
            loaded.sig,
        ))
    }

    /// Creates an empty directory file (mode 0600) and opens it; fails if the
    /// file exists. The folder must exist.
    pub fn create(path: impl Into<PathBuf>, options: Options) -> Result<Directory> {
        let paths = Paths::new(path.into())?;
        check_options(&options)?;
        let lock = paths.lock()?;
        if paths.exists()? {
            return Err(Error::AlreadyExists { path: paths.file });
        }
        let snapshot = build(&paths, FileData::default(), &options)?;
        let (file, sig) = paths.write(&lock, &snapshot.to_file())?;
        info!(path = %paths.file.display(), "created the directory");
        Ok(Directory::with(paths, options, snapshot, file, sig))
    }

    fn with(
        paths: Paths,
        options: Options,
        snapshot: Snapshot,
        file: File,
        sig: Signature,
    ) -> Directory {
        Directory {
            paths,
            options,
            current: Mutex::new(Current {
                snapshot: Arc::new(snapshot),
                sig,
                _file: file,
                reported: None,
            }),
            hashing: HashLimit::new(),
            credentials: CredentialsCache::new(CredentialsCacheSettings::default()),
        }
    }

    /// The directory file's path.
    pub fn path(&self) -> &Path {
        &self.paths.file
    }

    /// The options given at opening.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The current directory. Stats the file on every call and reloads it if
    /// it changed, so a change made by another process is seen at once. If
    /// the file has become unreadable or invalid, logs the error (once per
    /// distinct error) and keeps serving the last good version.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let mut current = self.lock_current();
        match self.reload(&mut current) {
            Ok(()) => current.reported = None,
            Err(e) => {
                let message = e.to_string();
                if current.reported.as_deref() != Some(message.as_str()) {
                    error!(error = %message, "cannot reload the directory; serving the last good version");
                    current.reported = Some(message);
                }
            }
        }
        current.snapshot.clone()
    }

    /// Like [`Directory::snapshot`], but returns the error when the file
    /// cannot be read or is invalid (what `qsctl` wants before listing).
    pub fn refresh(&self) -> Result<Arc<Snapshot>> {
        let mut current = self.lock_current();
        self.reload(&mut current)?;
        current.reported = None;
        Ok(current.snapshot.clone())
    }

    /// Checks a login and password (see [`Snapshot::verify_blocking`]),
    /// hashing on tokio's blocking pool, at most [`MAX_CONCURRENT_HASHES`]
    /// at once. Must run inside a tokio runtime.
    ///
    /// A login that succeeded less than the cache's TTL ago with the same
    /// password and the same stored hash answers at once, without hashing
    /// (see [`Directory::configure_credentials_cache`]); a changed password,
    /// a removed or disabled user never do.
    pub async fn verify(&self, login: &str, password: &Secret) -> Result<Option<VerifiedUser>> {
        let snapshot = self.snapshot();
        let mut cached = None;
        if let Some((address, stored_hash, verified)) = snapshot.login_record(login)
            && let Some(tag) = self.credentials.tag(address, stored_hash, password)
        {
            if self.credentials.contains(&tag, Instant::now()) {
                debug!(user = %verified.address, "login accepted from the credentials cache");
                return Ok(Some(verified));
            }
            cached = Some(tag);
        }
        let login = login.to_owned();
        let password = password.clone();
        let verified = self
            .hashing
            .run(move || snapshot.verify_blocking(&login, &password))
            .await??;
        if let (Some(_), Some(tag)) = (&verified, cached) {
            self.credentials.insert(tag, Instant::now());
        }
        Ok(verified)
    }

    /// Sets how long, and how many, successful logins are remembered (by
    /// default [`crate::credentials_cache::DEFAULT_TTL`] and
    /// [`crate::credentials_cache::DEFAULT_MAX_ENTRIES`]); forgets those
    /// remembered so far.
    pub fn configure_credentials_cache(&self, settings: CredentialsCacheSettings) {
        self.credentials.configure(settings);
    }

    /// Checks a login and password on the calling thread (see
    /// [`Snapshot::verify_blocking`]).
    pub fn verify_blocking(&self, login: &str, password: &Secret) -> Result<Option<VerifiedUser>> {
        self.snapshot().verify_blocking(login, password)
    }

    /// Adds a local domain.
    pub fn add_domain(&self, name: &str) -> Result<()> {
        let name = parse_domain(name)?;
        self.update(|old, data| {
            if old.domain(&name).is_some() {
                return Err(Error::DomainExists(name.clone()));
            }
            data.domains.push(Domain {
                name: name.clone(),
                alias_of: None,
                catch_all: None,
            });
            Ok(())
        })?;
        info!(domain = %name, "added domain");
        Ok(())
    }

    /// Adds `alias` as another name of the local domain `target`: mail to
    /// `x@alias` reaches `x@target`. Chains are refused: `target` must be a
    /// real domain.
    pub fn add_domain_alias(&self, alias: &str, target: &str) -> Result<()> {
        let alias = parse_domain(alias)?;
        let target = parse_domain(target)?;
        self.update(|old, data| {
            if old.domain(&alias).is_some() {
                return Err(Error::DomainExists(alias.clone()));
            }
            real_domain(old, &target)?;
            data.domains.push(Domain {
                name: alias.clone(),
                alias_of: Some(target.clone()),
                catch_all: None,
            });
            Ok(())
        })?;
        info!(domain = %alias, target = %target, "added domain alias");
        Ok(())
    }

    /// Removes a domain or domain alias. Refused while any user, alias,
    /// target, forward, catch-all, domain alias or the postmaster setting
    /// still names it: nothing is removed behind the administrator's back.
    pub fn remove_domain(&self, name: &str) -> Result<()> {
        let name = parse_domain(name)?;
        self.update(|old, data| {
            if old.domain(&name).is_none() {
                return Err(Error::UnknownDomain(name.clone()));
            }
            if let Some(by) = domain_user(data, &name) {
                return Err(Error::DomainInUse {
                    domain: name.clone(),
                    by,
                });
            }
            data.domains.retain(|d| d.name != name);
            Ok(())
        })?;
        info!(domain = %name, "removed domain");
        Ok(())
    }

    /// Adds a user with a new password (hashed here; only the hash is
    /// stored). The domain must be a real local domain.
    pub fn add_user(&self, address: &str, display_name: &str, password: &Secret) -> Result<()> {
        let parsed = new_address(address)?;
        check_display_name(display_name)?;
        if password.is_empty() {
            return Err(Error::EmptyPassword);
        }
        // Hash before taking the lock, so other writers do not wait for it;
        // but first spare the work if the current file already says no.
        free_for_user(&*self.refresh()?, &parsed)?;
        let hash = password::hash(password)?;
        let address = parsed.to_string();
        self.update(|old, data| {
            free_for_user(old, &parsed)?;
            data.users.push(UserRecord {
                address: address.clone(),
                display_name: display_name.to_owned(),
                password_hash: hash,
                enabled: true,
                forward: Default::default(),
                pop3: Pop3Options::default(),
            });
            Ok(())
        })?;
        info!(user = %address, "added user");
        Ok(())
    }

    /// Removes a user. Refused while an alias, forward, catch-all or the
    /// postmaster setting points to the user. The mailbox is not touched.
    pub fn remove_user(&self, address: &str) -> Result<()> {
        let removed = self
            .update(|old, data| {
                let address = existing_user(old, address)?;
                data.users.retain(|u| u.address != address);
                Ok(address)
            })
            .map_err(|e| in_use(e, "user", address))?;
        info!(user = %removed, "removed user");
        Ok(())
    }

    /// Sets a user's password (hashed here; only the hash is stored).
    pub fn set_password(&self, address: &str, password: &Secret) -> Result<()> {
        let hash = password::hash(password)?;
        let changed = self.change_user(address, |u| {
            u.password_hash = hash;
            Ok(())
        })?;
        info!(user = %changed, "changed password");
        Ok(())
    }

    /// Enables or disables a user's logins.
    pub fn set_enabled(&self, address: &str, enabled: bool) -> Result<()> {
        let changed = self.change_user(address, |u| {
            u.enabled = enabled;
            Ok(())
        })?;
        info!(user = %changed, enabled, "changed user");
        Ok(())
    }

    /// Sets a user's display name (no control characters).
    pub fn set_display_name(&self, address: &str, display_name: &str) -> Result<()> {
        check_display_name(display_name)?;
        let changed = self.change_user(address, |u| {
            u.display_name = display_name.to_owned();
            Ok(())
        })?;
        info!(user = %changed, "changed display name");
        Ok(())
    }

    /// Forwards a user's mail to `targets` (local or remote; none turns
    /// forwarding off), keeping a copy in the mailbox if `keep_copy`.
    /// Local targets must exist.
    pub fn set_forward<I, S>(&self, address: &str, targets: I, keep_copy: bool) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let targets = normal_targets(targets)?;
        let changed = self.change_user(address, |u| {
            u.forward.targets = targets;
            u.forward.keep_copy = keep_copy;
            Ok(())
        })?;
        info!(user = %changed, "changed forwarding");
        Ok(())
    }

    /// Sets a user's POP3 options.
    pub fn set_pop3_options(&self, address: &str, options: Pop3Options) -> Result<()> {
        let changed = self.change_user(address, |u| {
            u.pop3 = options;
            Ok(())
        })?;
        info!(user = %changed, "changed POP3 options");
        Ok(())
    }

    /// Changes some of a user's POP3 options inside the directory lock (so two
    /// concurrent changes of different options both hold); returns the result.
    pub fn update_pop3_options(
        &self,
        address: &str,
        change: impl FnOnce(&mut Pop3Options),
    ) -> Result<Pop3Options> {
        let mut result = Pop3Options::default();
        let changed = self.change_user(address, |u| {
            change(&mut u.pop3);
            result = u.pop3;
            Ok(())
        })?;
        info!(user = %changed, "changed POP3 options");
        Ok(result)
    }

    /// Adds an alias whose mail goes to `targets` (local or remote, at least
    /// one). Local targets must exist; the address must not be a user's.
    pub fn add_alias<I, S>(&self, address: &str, targets: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let parsed = new_address(address)?;
        let address = parsed.to_string();
        let targets = alias_targets(&parsed, targets)?;
        self.update(|old, data| {
            home_domain(old, &parsed)?;
            if let Some(a) = old.alias(&address) {
                return Err(Error::AliasExists(a.address.clone()));
            }
            if let Some(u) = old.user_at(&parsed) {
                return Err(Error::AddressTaken {
                    address: u.address().to_owned(),
                    by: "a user",
                });
            }
            data.aliases.push(Alias {
                address: address.clone(),
                targets,
            });
            Ok(())
        })?;
        info!(alias = %address, "added alias");
        Ok(())
    }

    /// Replaces the targets of an existing alias.
    pub fn set_alias_targets<I, S>(&self, address: &str, targets: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let parsed = parse_address(address)?;
        let targets = alias_targets(&parsed, targets)?;
        let changed = self.update(|old, data| {
            let address = existing_alias(old, address)?;
            let alias = data
                .aliases
                .iter_mut()
                .find(|a| a.address == address)
                .ok_or_else(|| Error::UnknownAlias(address.clone()))?;
            alias.targets = targets;
            Ok(address)
        })?;
        info!(alias = %changed, "changed alias");
        Ok(())
    }

    /// Removes an alias. Refused while another alias, a forward or a
    /// catch-all points to it.
    pub fn remove_alias(&self, address: &str) -> Result<()> {
        let removed = self
            .update(|old, data| {
                let address = existing_alias(old, address)?;
                data.aliases.retain(|a| a.address != address);
                Ok(address)
            })
            .map_err(|e| in_use(e, "alias", address))?;
        info!(alias = %removed, "removed alias");
        Ok(())
    }

    /// Sets (or with `None` clears) the address that receives a real local
    /// domain's mail for unknown local parts. A local target must exist.
    pub fn set_catch_all(&self, domain: &str, target: Option<&str>) -> Result<()> {
        let domain = parse_domain(domain)?;
        let target = target
            .map(parse_address)
            .transpose()?
            .map(|t| t.to_string());
        self.update(|old, data| {
            real_domain(old, &domain)?;
            for d in data.domains.iter_mut().filter(|d| d.name == domain) {
                d.catch_all = target.clone();
            }
            Ok(())
        })?;
        info!(domain = %domain, "changed catch-all");
        Ok(())
    }

    /// Makes the user at `address` the postmaster: `postmaster@` every local
    /// domain reaches that user unless an explicit alias says otherwise.
    pub fn set_postmaster(&self, address: &str) -> Result<()> {
        let postmaster = self.update(|old, data| {
            let address = existing_user(old, address)?;
            data.postmaster = Some(address.clone());
            Ok(address)
        })?;
        info!(user = %postmaster, "set postmaster");
        Ok(())
    }

    /// Changes one existing user; returns the canonical address.
    fn change_user(
        &self,
        address: &str,
        change: impl FnOnce(&mut UserRecord) -> Result<()>,
    ) -> Result<String> {
        self.update(|old, data| {
            let address = existing_user(old, address)?;
            let user = data
                .users
                .iter_mut()
                .find(|u| u.address == address)
                .ok_or_else(|| Error::UnknownUser(address.clone()))?;
            change(user)?;
            Ok(address)
        })
    }

    /// One read-modify-write: takes the lock, reads the file afresh, applies
    /// `change`, checks the result (it must load, and it must not leave a new
    /// reference to a local address that reaches nothing), writes it
    /// atomically and makes it this handle's current snapshot. On any error
    /// the file is left as it was.
    fn update<T>(&self, change: impl FnOnce(&Snapshot, &mut FileData) -> Result<T>) -> Result<T> {
        let lock = self.paths.lock()?;
        let loaded = self.paths.read()?;
        let old = build(&self.paths, loaded.data, &self.options)?;
        let mut data = old.to_file();
        let out = change(&old, &mut data)?;
        let new = build(&self.paths, data, &self.options)?;
        let before: HashSet<_> = old.dangling().into_iter().collect();
        if let Some((owner, target)) = new.dangling().into_iter().find(|p| !before.contains(p)) {
            return Err(Error::UnknownTarget { owner, target });
        }
        let (file, sig) = self.paths.write(&lock, &new.to_file())?;
        drop(lock);
        let mut current = self.lock_current();
        current.snapshot = Arc::new(new);
        current.sig = sig;
        current._file = file;
        current.reported = None;
        Ok(out)
    }

    /// Reloads the file if its signature changed.
    fn reload(&self, current: &mut Current) -> Result<()> {
        if self.paths.stat()? == current.sig {
            return Ok(());
        }
        let loaded = self.paths.read()?;
        let snapshot = build(&self.paths, loaded.data, &self.options)?;
        debug!(path = %self.paths.file.display(), "reloaded the directory");
        current.snapshot = Arc::new(snapshot);
        current.sig = loaded.sig;
        current._file = loaded.file;
        Ok(())
    }

    fn lock_current(&self) -> MutexGuard<'_, Current> {
        // The state is replaced whole, never left half-changed: a panic
        // elsewhere while holding the lock does not make it unusable.
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("path", &self.paths.file)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn check_options(options: &Options) -> Result<()> {
    match options.subaddress_separator {
        Some(c) if !valid_separator(c) => Err(Error::BadSeparator(c)),
        _ => Ok(()),
    }
}

fn build(paths: &Paths, data: FileData, options: &Options) -> Result<Snapshot> {
    Snapshot::build(data, options.subaddress_separator).map_err(|detail| Error::Invalid {
        path: paths.file.clone(),
        detail,
    })
}

/// Parses the address of a new user or alias.
fn new_address(address: &str) -> Result<Address> {
    let parsed = parse_address(address)?;
    if parsed.local() == "*" {
        return Err(Error::Wildcard(parsed.to_string()));
    }
    Ok(parsed)
}

/// Checks that `name` is a local domain and not a domain alias.
fn real_domain(snapshot: &Snapshot, name: &str) -> Result<()> {
    match snapshot.domain(name) {
        None => Err(Error::UnknownDomain(name.to_owned())),
        Some(d) => match d.alias_of() {
            Some(target) => Err(Error::DomainIsAlias {
                domain: d.name().to_owned(),
                target: target.to_owned(),
            }),
            None => Ok(()),
        },
    }
}

/// Checks that a new user or alias lives in a real local domain.
fn home_domain(snapshot: &Snapshot, address: &Address) -> Result<()> {
    real_domain(snapshot, address.domain())
}

/// Checks that a user may be added at `address`.
fn free_for_user(snapshot: &Snapshot, address: &Address) -> Result<()> {
    home_domain(snapshot, address)?;
    if let Some(u) = snapshot.user_at(address) {
        return Err(Error::UserExists(u.address().to_owned()));
    }
    if let Some(a) = snapshot.alias(&address.to_string()) {
        return Err(Error::AddressTaken {
            address: a.address.clone(),
            by: "an alias",
        });
    }
    Ok(())
}

/// The canonical address of an existing user (any case, domain aliases followed).
fn existing_user(snapshot: &Snapshot, address: &str) -> Result<String> {
    let parsed = parse_address(address)?;
    snapshot
        .user_at(&parsed)
        .map(|u| u.address().to_owned())
        .ok_or_else(|| Error::UnknownUser(parsed.to_string()))
}

/// The canonical address of an existing alias.
fn existing_alias(snapshot: &Snapshot, address: &str) -> Result<String> {
    let parsed = parse_address(address)?;
    snapshot
        .alias(address)
        .map(|a| a.address.clone())
        .ok_or_else(|| Error::UnknownAlias(parsed.to_string()))
}

/// A removal that would leave a dangling reference is reported as "in use".
fn in_use(e: Error, kind: &str, address: &str) -> Error {
    match e {
        Error::UnknownTarget { owner, target } => {
            let what = parse_address(address).map_or(target, |a| a.to_string());
            Error::InUse {
                what: format!("{kind} {what}"),
                by: owner,
            }
        }
        e => e,
    }
}

/// The first thing in `data` that names domain `name`, described.
fn domain_user(data: &FileData, name: &str) -> Option<String> {
    let in_domain = |address: &str| parse_address(address).is_ok_and(|a| a.domain() == name);
    for d in data.domains.iter().filter(|d| d.name != name) {
        if d.alias_of.as_deref() == Some(name) {
            return Some(format!("domain alias {}", d.name));
        }
        if d.catch_all.as_deref().is_some_and(in_domain) {
            return Some(format!("the catch-all of domain {}", d.name));
        }
    }
    for u in &data.users {
        if in_domain(&u.address) {
            return Some(format!("user {}", u.address));
        }
        if u.forward.targets.iter().any(|t| in_domain(t)) {
            return Some(format!("the forward of user {}", u.address));
        }
    }
    for a in &data.aliases {
        if in_domain(&a.address) || a.targets.iter().any(|t| in_domain(t)) {
            return Some(format!("alias {}", a.address));
        }
    }
    if data.postmaster.as_deref().is_some_and(in_domain) {
        return Some("the postmaster setting".to_owned());
    }
    None
}

fn check_display_name(name: &str) -> Result<()> {
    if name.chars().any(char::is_control) {
        return Err(Error::BadDisplayName(name.to_owned()));
    }
    Ok(())
}

/// Parses and normalises targets, dropping repeats (case-insensitive).
fn normal_targets<I, S>(targets: I) -> Result<Vec<String>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in targets {
        let parsed = parse_address(t.as_ref())?;
        if seen.insert(parsed.key()) {
            out.push(parsed.to_string());
        }
    }
    Ok(out)
}

/// The targets of alias `alias`: at least one, not itself.
fn alias_targets<I, S>(alias: &Address, targets: I) -> Result<Vec<String>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let targets = normal_targets(targets)?;
    if targets.is_empty() {
        return Err(Error::NoTargets(alias.to_string()));
    }
    let key = alias.key();
    if targets
        .iter()
        .any(|t| parse_address(t).is_ok_and(|t| t.key() == key))
    {
        return Err(Error::SelfTarget(alias.to_string()));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::thread;

    use tempfile::TempDir;

    use super::*;
    use crate::snapshot::Resolution;

    fn pw(s: &str) -> Secret {
        Secret::from(s)
    }

    /// A fresh directory with the domain example.test.
    fn setup() -> (TempDir, Directory) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::create(tmp.path().join("directory.json"), Options::default()).unwrap();
        dir.add_domain("example.test").unwrap();
        (tmp, dir)
    }

    fn err(result: Result<()>) -> String {
        match result {
            Ok(()) => panic!("should have failed"),
            Err(e) => e.to_string(),
        }
    }

    fn domains(dir: &Directory) -> Vec<String> {
        dir.refresh()
            .unwrap()
            .domains()
            .map(|d| d.name().to_owned())
            .collect()
    }

    fn users(dir: &Directory) -> Vec<String> {
        dir.refresh()
            .unwrap()
            .users()
            .map(|u| u.address().to_owned())
            .collect()
    }

    /// Every file under `root`, recursively.
    fn files(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(root).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn domains_add_remove_list() {
        let (_tmp, dir) = setup();
        dir.add_domain("Other.TEST").unwrap();
        dir.add_domain_alias("Company.Example", "EXAMPLE.test")
            .unwrap();
        assert_eq!(
            domains(&dir),
            ["company.example", "example.test", "other.test"]
        );
        let s = dir.snapshot();
        assert_eq!(
            s.domain("company.example").unwrap().alias_of(),
            Some("example.test")
        );

        assert_eq!(
            err(dir.add_domain("EXAMPLE.test")),
            "domain example.test already exists"
        );
        assert_eq!(
            err(dir.add_domain("company.example")),
            "domain company.example already exists"
        );
        assert_eq!(
            err(dir.add_domain("bad domain.test")),
            "malformed domain \"bad domain.test\": space in the domain"
        );
        assert_eq!(
            err(dir.add_domain_alias("company.example", "other.test")),
            "domain company.example already exists"
        );
        assert_eq!(
            err(dir.add_domain_alias("x.example", "nowhere.test")),
            "unknown domain nowhere.test"
        );
        assert_eq!(
            err(dir.add_domain_alias("y.example", "company.example")),
            "domain company.example is an alias of example.test; use example.test"
        );
        assert_eq!(
            err(dir.remove_domain("nowhere.test")),
            "unknown domain nowhere.test"
        );
        assert_eq!(
            err(dir.remove_domain("example.test")),
            "domain example.test is still used by domain alias company.example"
        );
        dir.remove_domain("COMPANY.example").unwrap();
        dir.remove_domain("other.test").unwrap();
        assert_eq!(domains(&dir), ["example.test"]);
    }

    #[test]
    fn domain_in_use_is_not_removed() {
        let (_tmp, dir) = setup();
        dir.add_domain_alias("company.example", "example.test")
            .unwrap();
        dir.add_user("jean@example.test", "Jean", &pw("pw one"))
            .unwrap();
        dir.add_alias("sales@example.test", ["Jean@Company.Example"])
            .unwrap();
        assert_eq!(
            err(dir.remove_domain("company.example")),
            "domain company.example is still used by alias sales@example.test"
        );
        dir.remove_alias("sales@example.test").unwrap();
        dir.remove_domain("company.example").unwrap();
        assert_eq!(
            err(dir.remove_domain("example.test")),
            "domain example.test is still used by user jean@example.test"
        );
        dir.remove_user("jean@example.test").unwrap();
        dir.remove_domain("example.test").unwrap();
        assert!(domains(&dir).is_empty());
    }

    #[test]
    fn users_add_remove_list() {
        let (_tmp, dir) = setup();
        dir.add_domain("other.test").unwrap();
        dir.add_domain_alias("company.example", "example.test")
            .unwrap();
        dir.add_user("Alice@EXAMPLE.test", "Alice Example", &pw("pw one"))
            .unwrap();
        dir.add_user("alice@other.test", "", &pw("pw two")).unwrap();
        assert_eq!(users(&dir), ["Alice@example.test", "alice@other.test"]);
        let s = dir.snapshot();
        let alice = s.user("alice@example.test").unwrap();
        assert_eq!(alice.display_name(), "Alice Example");
        assert!(alice.enabled());
        assert!(!alice.forward().is_active());
        assert_eq!(alice.pop3(), Pop3Options::default());

        let bad = |address: &str| err(dir.add_user(address, "", &pw("pw")));
        assert_eq!(
            bad("ALICE@example.test"),
            "user Alice@example.test already exists"
        );
        assert_eq!(
            bad("alice@company.example"),
            "domain company.example is an alias of example.test; use example.test"
        );
        assert_eq!(bad("bob@nowhere.test"), "unknown domain nowhere.test");
        assert_eq!(
            bad("bob@@example.test"),
            "malformed address \"bob@@example.test\": more than one '@' outside quotes"
        );
        assert_eq!(
            bad("*@example.test"),
            "\"*@example.test\" is a wildcard, not an address; set the domain's catch-all instead"
        );
        assert_eq!(
            err(dir.add_user("bob@example.test", "", &pw(""))),
            "the password is empty"
        );
        assert_eq!(
            err(dir.add_user("bob@example.test", "Bob\r\nBcc: x", &pw("pw"))),
            "display name \"Bob\\r\\nBcc: x\" contains a control character"
        );
        dir.add_alias("sales@example.test", ["alice@example.test"])
            .unwrap();
        assert_eq!(
            bad("Sales@example.test"),
            "sales@example.test is already taken by an alias"
        );

        assert_eq!(
            err(dir.remove_user("nobody@example.test")),
            "unknown user nobody@example.test"
        );
        assert_eq!(
            err(dir.remove_user("alice@example.test")),
            "user alice@example.test is still used by alias sales@example.test"
        );
        dir.remove_alias("sales@example.test").unwrap();
        dir.remove_user("ALICE@company.example").unwrap();
        assert_eq!(users(&dir), ["alice@other.test"]);
    }

    #[test]
    fn user_settings() {
        let (_tmp, dir) = setup();
        dir.add_user("jean@example.test", "Jean", &pw("old password"))
            .unwrap();

        dir.set_password("JEAN@example.test", &pw("new password"))
            .unwrap();
        assert!(
            dir.verify_blocking("jean@example.test", &pw("new password"))
                .unwrap()
                .is_some()
        );
        assert!(
            dir.verify_blocking("jean@example.test", &pw("old password"))
                .unwrap()
                .is_none()
        );
        assert_eq!(
            err(dir.set_password("jean@example.test", &pw(""))),
            "the password is empty"
        );

        dir.set_enabled("jean@example.test", false).unwrap();
        assert!(!dir.snapshot().user("jean@example.test").unwrap().enabled());
        dir.set_enabled("jean@example.test", true).unwrap();
        assert!(dir.snapshot().user("jean@example.test").unwrap().enabled());

        dir.set_display_name("jean@example.test", "Jean Dupont")
            .unwrap();
        assert_eq!(
            dir.snapshot()
                .user("jean@example.test")
                .unwrap()
                .display_name(),
            "Jean Dupont"
        );

        dir.set_forward(
            "jean@example.test",
            ["jean@far.example", "JEAN@FAR.example", "x@elsewhere.test"],
            false,
        )
        .unwrap();
        let forward = dir
            .snapshot()
            .user("jean@example.test")
            .unwrap()
            .forward()
            .clone();
        assert_eq!(forward.targets, ["jean@far.example", "x@elsewhere.test"]);
        assert!(!forward.keep_copy);
        assert_eq!(
            err(dir.set_forward("jean@example.test", ["ghost@example.test"], true)),
            "the forward of user jean@example.test points to ghost@example.test, which is not a local user or alias"
        );
        dir.set_forward("jean@example.test", Vec::<String>::new(), true)
            .unwrap();
        assert!(
            !dir.snapshot()
                .user("jean@example.test")
                .unwrap()
                .forward()
                .is_active()
        );

        let pop3 = Pop3Options {
            ignore_dele: true,
            only_unread: true,
        };
        dir.set_pop3_options("jean@example.test", pop3).unwrap();
        assert_eq!(
            dir.snapshot().user("jean@example.test").unwrap().pop3(),
            pop3
        );

        let nobody = "nobody@example.test";
        let unknown = "unknown user nobody@example.test";
        assert_eq!(err(dir.set_password(nobody, &pw("x"))), unknown);
        assert_eq!(err(dir.set_enabled(nobody, true)), unknown);
        assert_eq!(err(dir.set_display_name(nobody, "x")), unknown);
        assert_eq!(err(dir.set_forward(nobody, ["a@b.test"], true)), unknown);
        assert_eq!(err(dir.set_pop3_options(nobody, pop3)), unknown);
        assert_eq!(
            err(dir.set_enabled("jean+tag@example.test", true)),
            "unknown user jean+tag@example.test"
        );
    }

    #[test]
    fn aliases_add_remove_list() {
        let (_tmp, dir) = setup();
        dir.add_domain_alias("company.example", "example.test")
            .unwrap();
        dir.add_user("alice@example.test", "", &pw("pw")).unwrap();
        dir.add_alias(
            "Sales@example.test",
            ["ALICE@example.test", "rep@partner.example"],
        )
        .unwrap();
        dir.add_alias("team@example.test", ["sales@example.test"])
            .unwrap();
        let s = dir.snapshot();
        let listed: Vec<_> = s
            .aliases()
            .map(|a| (a.address(), a.targets().len()))
            .collect();
        assert_eq!(
            listed,
            [("Sales@example.test", 2), ("team@example.test", 1)]
        );
        assert_eq!(
            s.resolve("sales@company.example").unwrap(),
            // Local parts keep their case: a remote server may care.
            Resolution::Alias(vec![
                "ALICE@example.test".into(),
                "rep@partner.example".into()
            ])
        );

        let bad =
            |address: &str, targets: &[&str]| err(dir.add_alias(address, targets.iter().copied()));
        assert_eq!(
            bad("SALES@example.test", &["x@far.example"]),
            "alias Sales@example.test already exists"
        );
        assert_eq!(
            bad("Alice@example.test", &["x@far.example"]),
            "alice@example.test is already taken by a user"
        );
        assert_eq!(
            bad(
                "help@example.test",
                &["alice@example.test", "ghost@example.test"]
            ),
            "alias help@example.test points to ghost@example.test, which is not a local user or alias"
        );
        assert_eq!(
            bad("help@example.test", &[]),
            "alias help@example.test has no targets"
        );
        assert_eq!(
            bad("help@example.test", &["HELP@example.test"]),
            "alias help@example.test cannot point to itself"
        );
        assert_eq!(
            bad("help@example.test", &["a b@far.example"]),
            "malformed address \"a b@far.example\": space outside quotes"
        );
        assert_eq!(
            bad("help@company.example", &["x@far.example"]),
            "domain company.example is an alias of example.test; use example.test"
        );
        assert_eq!(
            bad("help@nowhere.test", &["x@far.example"]),
            "unknown domain nowhere.test"
        );
        assert_eq!(
            bad("*@example.test", &["x@far.example"]),
            "\"*@example.test\" is a wildcard, not an address; set the domain's catch-all instead"
        );

        dir.set_alias_targets("sales@example.test", ["rep@partner.example"])
            .unwrap();
        assert_eq!(
            dir.snapshot()
                .alias("sales@example.test")
                .unwrap()
                .targets(),
            ["rep@partner.example"]
        );
        assert_eq!(
            err(dir.set_alias_targets("nope@example.test", ["a@b.test"])),
            "unknown alias nope@example.test"
        );

        assert_eq!(
            err(dir.remove_alias("sales@example.test")),
            "alias sales@example.test is still used by alias team@example.test"
        );
        assert_eq!(
            err(dir.remove_alias("nope@example.test")),
            "unknown alias nope@example.test"
        );
        dir.remove_alias("team@example.test").unwrap();
        dir.remove_alias("SALES@company.example").unwrap();
        assert_eq!(dir.snapshot().aliases().count(), 0);
    }

    #[test]
    fn catch_all() {
        let (_tmp, dir) = setup();
        dir.add_domain_alias("company.example", "example.test")
            .unwrap();
        dir.add_user("alice@example.test", "", &pw("pw")).unwrap();
        dir.set_catch_all("example.test", Some("Alice@example.test"))
            .unwrap();
        let s = dir.snapshot();
        assert_eq!(
            s.domain("example.test").unwrap().catch_all(),
            Some("Alice@example.test")
        );
        for address in ["whoever@example.test", "whoever@company.example"] {
            assert_eq!(
                s.resolve(address).unwrap(),
                Resolution::Alias(vec!["Alice@example.test".into()])
            );
        }
        assert!(matches!(
            s.resolve("alice@example.test").unwrap(),
            Resolution::User(_)
        ));

        assert_eq!(
            err(dir.set_catch_all("company.example", Some("alice@example.test"))),
            "domain company.example is an alias of example.test; use example.test"
        );
        assert_eq!(
            err(dir.set_catch_all("nowhere.test", None)),
            "unknown domain nowhere.test"
        );
        assert_eq!(
            err(dir.set_catch_all("example.test", Some("ghost@example.test"))),
            "the catch-all of domain example.test points to ghost@example.test, which is not a local user or alias"
        );
        assert_eq!(
            err(dir.remove_user("alice@example.test")),
            "user alice@example.test is still used by the catch-all of domain example.test"
        );
        dir.set_catch_all("example.test", None).unwrap();
        assert_eq!(
            dir.snapshot().resolve("whoever@example.test").unwrap(),
            Resolution::Unknown
        );
        dir.set_catch_all("example.test", Some("list@far.example"))
            .unwrap();
        assert_eq!(
            dir.snapshot().resolve("whoever@example.test").unwrap(),
            Resolution::Alias(vec!["list@far.example".into()])
        );
    }

    #[test]
    fn postmaster_default_and_override() {
        let (_tmp, dir) = setup();
        dir.add_domain("other.test").unwrap();
        dir.add_user("admin@example.test", "Admin", &pw("pw"))
            .unwrap();
        assert_eq!(
            dir.snapshot().resolve("postmaster@example.test").unwrap(),
            Resolution::Unknown
        );
        assert_eq!(
            err(dir.set_postmaster("ghost@example.test")),
            "unknown user ghost@example.test"
        );

        dir.set_postmaster("ADMIN@example.test").unwrap();
        let s = dir.snapshot();
        assert_eq!(s.postmaster(), Some("admin@example.test"));
        for address in ["postmaster@example.test", "POSTMASTER@other.test"] {
            let Resolution::User(u) = s.resolve(address).unwrap() else {
                panic!("{address} should reach the postmaster user");
            };
            assert_eq!(u.address, "admin@example.test");
        }
        dir.add_alias("postmaster@other.test", ["help@far.example"])
            .unwrap();
        assert_eq!(
            dir.snapshot().resolve("postmaster@other.test").unwrap(),
            Resolution::Alias(vec!["help@far.example".into()])
        );
        assert_eq!(
            err(dir.remove_user("admin@example.test")),
            "user admin@example.test is still used by the postmaster setting"
        );
    }

    #[test]
    fn passwords_are_in_no_file() {
        let (tmp, dir) = setup();
        let first = "Tr0ub4dor&3 first-secret";
        let second = "correct horse battery second-secret";
        dir.add_user("alice@example.test", "Alice", &pw(first))
            .unwrap();
        dir.set_password("alice@example.test", &pw(second)).unwrap();
        let all = files(tmp.path());
        assert!(all.len() >= 2, "{all:?}");
        for path in all {
            let bytes = fs::read(&path).unwrap();
            for secret in [first, second] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds a password",
                    path.display()
                );
            }
        }
        let json = fs::read_to_string(dir.path()).unwrap();
        assert!(
            json.contains("\"password_hash\": \"$argon2id$v=19$m=19456,t=2,p=1$"),
            "{json}"
        );
    }

    #[test]
    fn files_are_private() {
        let (_tmp, dir) = setup();
        dir.add_domain("other.test").unwrap();
        let lock = dir.path().with_file_name("directory.json.lock");
        for path in [dir.path(), lock.as_path()] {
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }

    #[test]
    fn file_format() {
        let (_tmp, dir) = setup();
        dir.add_domain_alias("company.example", "example.test")
            .unwrap();
        dir.add_user("alice@example.test", "Alice", &pw("pw"))
            .unwrap();
        dir.set_postmaster("alice@example.test").unwrap();
        dir.add_alias(
            "sales@example.test",
            ["alice@example.test", "rep@far.example"],
        )
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path()).unwrap()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["postmaster"], "alice@example.test");
        assert_eq!(json["domains"][0]["name"], "company.example");
        assert_eq!(json["domains"][0]["alias_of"], "example.test");
        let user = &json["users"][0];
        assert_eq!(user["address"], "alice@example.test");
        assert_eq!(user["display_name"], "Alice");
        assert_eq!(user["enabled"], true);
        assert_eq!(user["forward"]["keep_copy"], true);
        assert_eq!(user["pop3"]["ignore_dele"], false);
        assert!(
            user["password_hash"]
                .as_str()
                .unwrap()
                .starts_with("$argon2id$")
        );
        assert_eq!(json["aliases"][0]["targets"][1], "rep@far.example");
        // What was written reads back the same.
        let again = Directory::open(dir.path(), Options::default()).unwrap();
        assert_eq!(
            format!("{:?}", again.snapshot().to_file()),
            format!("{:?}", dir.snapshot().to_file())
        );
    }

    #[test]
    fn running_reader_sees_changes_at_once() {
        let (_tmp, writer) = setup();
        let reader = Directory::open(writer.path(), Options::default()).unwrap();
        let before = reader.snapshot();
        assert!(
            Arc::ptr_eq(&before, &reader.snapshot()),
            "unchanged file, same snapshot"
        );

        writer
            .add_user("new@example.test", "New", &pw("fresh pw"))
            .unwrap();
        let after = reader.snapshot();
        assert!(after.user("new@example.test").is_some());
        assert!(
            before.user("new@example.test").is_none(),
            "old snapshots stay as they were"
        );
        assert!(
            reader
                .verify_blocking("new@example.test", &pw("fresh pw"))
                .unwrap()
                .is_some()
        );

        writer.set_enabled("new@example.test", false).unwrap();
        assert!(
            !reader
                .snapshot()
                .user("new@example.test")
                .unwrap()
                .enabled()
        );
        writer.set_enabled("new@example.test", true).unwrap();
        writer.set_enabled("new@example.test", false).unwrap();
        assert!(
            !reader
                .snapshot()
                .user("new@example.test")
                .unwrap()
                .enabled()
        );
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let (_tmp, dir) = setup();
        let path = dir.path().to_path_buf();
        let workers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|prefix| {
                let path = path.clone();
                thread::spawn(move || {
                    let own = Directory::open(path, Options::default()).unwrap();
                    for i in 0..20 {
                        own.add_user(&format!("{prefix}{i}@example.test"), "", &pw("pw"))
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let fresh = Directory::open(&path, Options::default()).unwrap();
        assert_eq!(fresh.snapshot().users().count(), 40);
        assert_eq!(dir.snapshot().users().count(), 40);
    }

    #[test]
    fn leftover_temp_file_is_harmless() {
        let (tmp, dir) = setup();
        let temp = tmp.path().join(".directory.json.tmp.4242.00000000deadbeef");
        fs::write(&temp, b"{\"version\": 1, \"users\": [{\"addr").unwrap();
        let reopened = Directory::open(dir.path(), Options::default()).unwrap();
        assert_eq!(reopened.snapshot().domains().count(), 1);
        reopened.add_domain("other.test").unwrap();
        assert!(!temp.exists(), "the next write removes it");
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["directory.json", "directory.json.lock"]);
    }

    #[test]
    fn broken_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("directory.json");
        for (content, start) in [
            ("{\"version\": 1, \"users\": [", "invalid directory file"),
            ("", "invalid directory file"),
            ("{\"version\": 1, \"userz\": []}", "invalid directory file"),
            ("{\"domains\": []}", "no \"version\" field"),
            (
                "{\"version\": 2, \"new\": true}",
                "format version 2 is not supported (this program reads version 1)",
            ),
        ] {
            fs::write(&path, content).unwrap();
            let e = Directory::open(&path, Options::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("{}: {start}", path.display())),
                "{content:?}: {e}"
            );
        }
        fs::write(
            &path,
            "{\"version\": 1, \"domains\": [{\"name\": \"a.test\"}, {\"name\": \"A.test\"}]}",
        )
        .unwrap();
        let e = Directory::open(&path, Options::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("{}: domain a.test is listed twice", path.display())
        );
    }

    #[test]
    fn reader_keeps_last_good_version() {
        let (tmp, dir) = setup();
        let reader = Directory::open(dir.path(), Options::default()).unwrap();
        let broken = tmp.path().join("broken");
        fs::write(&broken, "{ not json").unwrap();
        fs::rename(&broken, dir.path()).unwrap();
        assert_eq!(reader.snapshot().domains().count(), 1);
        let e = reader.refresh().unwrap_err().to_string();
        assert!(e.contains("directory.json: invalid directory file"), "{e}");
        // A change through the API fails too, and names the file.
        let e = err(dir.add_domain("other.test"));
        assert!(e.contains("directory.json: invalid directory file"), "{e}");
    }

    #[test]
    fn missing_or_existing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("directory.json");
        let e = Directory::open(&path, Options::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("directory file {} does not exist", path.display())
        );
        Directory::create(&path, Options::default()).unwrap();
        let e = Directory::create(&path, Options::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("directory file {} already exists", path.display())
        );
        assert!(Directory::open(&path, Options::default()).is_ok());
    }

    #[test]
    fn failed_change_leaves_the_file_untouched() {
        let (tmp, dir) = setup();
        dir.add_user("alice@example.test", "", &pw("pw")).unwrap();
        let before = fs::read(dir.path()).unwrap();
        let ino = fs::metadata(dir.path()).unwrap().ino();
        assert!(
            dir.add_alias(
                "x@example.test",
                ["alice@example.test", "ghost@example.test"]
            )
            .is_err()
        );
        assert!(dir.remove_user("bob@example.test").is_err());
        assert!(dir.add_domain_alias("x.test", "nowhere.test").is_err());
        assert_eq!(fs::read(dir.path()).unwrap(), before);
        assert_eq!(
            fs::metadata(dir.path()).unwrap().ino(),
            ino,
            "not even rewritten"
        );
        assert_eq!(files(tmp.path()).len(), 2, "no temp file left");
    }

    #[test]
    fn separator_is_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let options = Options {
            subaddress_separator: Some('@'),
        };
        let e = Directory::create(tmp.path().join("d.json"), options).unwrap_err();
        assert!(matches!(e, Error::BadSeparator('@')), "{e}");
        let options = Options {
            subaddress_separator: Some('-'),
        };
        let dir = Directory::create(tmp.path().join("d.json"), options).unwrap();
        assert_eq!(dir.snapshot().subaddress_separator(), Some('-'));
        let none = Directory::open(
            dir.path(),
            Options {
                subaddress_separator: None,
            },
        )
        .unwrap();
        assert_eq!(none.snapshot().subaddress_separator(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_run_a_limited_number_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        let limit = Arc::new(HashLimit::with_limit(2));
        let active = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let (limit, active, most) = (limit.clone(), active.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                limit
                    .run(move || {
                        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        // Long enough for the others to pile up behind.
                        thread::sleep(std::time::Duration::from_millis(20));
                        active.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} at once (limit 2)");
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            HashLimit::new().permits.available_permits(),
            cores.clamp(1, MAX_CONCURRENT_HASHES)
        );
    }

    #[tokio::test]
    async fn verify_async() {
        let (_tmp, dir) = setup();
        dir.add_user("alice@example.test", "Alice", &pw("async pw"))
            .unwrap();
        let ok = dir
            .verify("Alice@Example.Test", &pw("async pw"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ok.address, "alice@example.test");
        assert_eq!(ok.display_name, "Alice");
        assert_eq!(
            dir.verify("alice@example.test", &pw("wrong"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            dir.verify("nobody@example.test", &pw("async pw"))
                .await
                .unwrap(),
            None
        );
    }

    /// Polls `verify` once: a login answered from the credentials cache is
    /// ready at once, one that is hashed waits for the blocking pool.
    fn verify_without_hashing(dir: &Directory, login: &str, password: &str) -> Option<bool> {
        use std::future::Future;
        let password = pw(password);
        let mut check = std::pin::pin!(dir.verify(login, &password));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match check.as_mut().poll(&mut context) {
            std::task::Poll::Ready(result) => Some(result.unwrap().is_some()),
            std::task::Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn a_login_checked_lately_is_answered_without_hashing() {
        let (_tmp, dir) = setup();
        dir.add_user("alice@example.test", "Alice", &pw("first pw"))
            .unwrap();
        assert_eq!(
            verify_without_hashing(&dir, "alice@example.test", "first pw"),
            None,
            "the first login is hashed"
        );
        assert!(
            dir.verify("alice@example.test", &pw("first pw"))
                .await
                .unwrap()
                .is_some()
        );
        // Any spelling of the address, from the cache.
        assert_eq!(
            verify_without_hashing(&dir, "Alice@Example.Test", "first pw"),
            Some(true)
        );
        // A wrong password is always hashed, and refused.
        assert_eq!(
            verify_without_hashing(&dir, "alice@example.test", "guess"),
            None
        );
        assert!(
            dir.verify("alice@example.test", &pw("guess"))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_changed_password_or_a_disabled_user_never_hits_the_cache() {
        let (_tmp, dir) = setup();
        dir.add_user("alice@example.test", "Alice", &pw("old pw"))
            .unwrap();
        assert!(
            dir.verify("alice@example.test", &pw("old pw"))
                .await
                .unwrap()
                .is_some()
        );
        dir.set_password("alice@example.test", &pw("new pw"))
            .unwrap();
        assert_eq!(
            verify_without_hashing(&dir, "alice@example.test", "old pw"),
            None
        );
        assert!(
            dir.verify("alice@example.test", &pw("old pw"))
                .await
                .unwrap()
                .is_none(),
            "the old password is refused at once"
        );
        assert!(
            dir.verify("alice@example.test", &pw("new pw"))
                .await
                .unwrap()
                .is_some()
        );
        dir.set_enabled("alice@example.test", false).unwrap();
        assert_eq!(
            verify_without_hashing(&dir, "alice@example.test", "new pw"),
            None
        );
        assert!(
            dir.verify("alice@example.test", &pw("new pw"))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_cache_turned_off_hashes_every_login() {
        let (_tmp, dir) = setup();
        dir.add_user("alice@example.test", "Alice", &pw("pw"))
            .unwrap();
        dir.configure_credentials_cache(CredentialsCacheSettings {
            ttl: std::time::Duration::ZERO,
            max_entries: 16,
        });
        assert!(
            dir.verify("alice@example.test", &pw("pw"))
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            verify_without_hashing(&dir, "alice@example.test", "pw"),
            None
        );
    }

    #[test]
    fn concurrent_pop3_option_changes_both_hold() {
        let (tmp, dir) = setup();
        dir.add_user("alice@example.test", "", &Secret::new(&b"pw"[..]))
            .unwrap();
        let path = tmp.path().join("directory.json");
        let workers: Vec<_> = (0..2)
            .map(|n| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let d = Directory::open(path, Options::default()).unwrap();
                    for _ in 0..10 {
                        d.update_pop3_options("alice@example.test", |o| {
                            if n == 0 {
                                o.ignore_dele = !o.ignore_dele;
                            } else {
                                o.only_unread = !o.only_unread;
                            }
                        })
                        .unwrap();
                    }
                    d.update_pop3_options("alice@example.test", |o| {
                        if n == 0 {
                            o.ignore_dele = true;
                        } else {
                            o.only_unread = true;
                        }
                    })
                    .unwrap();
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let options = dir
            .refresh()
            .unwrap()
            .user("alice@example.test")
            .unwrap()
            .pop3();
        assert!(options.ignore_dele && options.only_unread, "{options:?}");
    }
}
