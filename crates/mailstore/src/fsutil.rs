//! Where mailboxes live, and the few file system steps every part of the store shares.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

/// Mode of every directory the store creates: the owner only.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of every message file the store writes: the owner only.
pub(crate) const FILE_MODE: u32 = 0o600;

/// The root directory of a user's mailbox: `<data_dir>/mail/<domain>/<local>`. The domain
/// is lower-cased; the local part is kept as given (the directory decides which spellings
/// are the same user). A domain or local part that is empty, longer than 255 bytes, starts
/// with `.`, or contains `/`, `..`, NUL or another control character is refused, so no
/// address can name a path outside the tree.
pub fn mailbox_path(data_dir: &Path, domain: &str, local: &str) -> Result<PathBuf> {
    let domain = domain.to_lowercase();
    check_component("domain", &domain)?;
    check_component("local part", local)?;
    Ok(data_dir.join("mail").join(domain).join(local))
}

fn check_component(what: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 255 {
        Some("too long")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains("..") {
        Some("contains '..'")
    } else if name.chars().any(char::is_control) {
        Some("contains NUL or a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Creates `dir` (and any missing parents) with mode 0700, and makes each new entry
/// durable by syncing the directory that holds it. Existing directories are left alone.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(StoreError::io(
                dir,
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(dir, e)),
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir_durable(parent)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        // Another process made it at the same moment; it syncs its parent too.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(StoreError::io(dir, e)),
    }
    match parent {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Flushes a directory's entries to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Options to open a message file for writing, mode 0600.
pub(crate) fn write_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).write(true).mode(FILE_MODE);
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_path_lowercases_the_domain() {
        let path = mailbox_path(Path::new("/data"), "Example.ORG", "Alice").unwrap();
        assert_eq!(path, Path::new("/data/mail/example.org/Alice"));
    }

    #[test]
    fn mailbox_path_refuses_escapes() {
        let data = Path::new("/data");
        for (domain, local) in [
            ("", "a"),
            ("a", ""),
            ("..", "a"),
            ("a", ".."),
            ("a", "."),
            ("a", ".profile"),
            ("../etc", "a"),
            ("a", "b/c"),
            ("a", "x..y"),
            ("a", "nul\0"),
            ("a/b", "c"),
        ] {
            let err = mailbox_path(data, domain, local).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidName { .. }),
                "{domain:?} {local:?}"
            );
        }
    }

    #[test]
    fn directories_are_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/c");
        create_dir_durable(&dir).unwrap();
        create_dir_durable(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, DIR_MODE);
        fs::write(tmp.path().join("file"), b"x").unwrap();
        assert!(create_dir_durable(&tmp.path().join("file")).is_err());
    }
}
