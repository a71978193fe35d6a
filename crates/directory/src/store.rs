//! The directory file on disk: reading, the write lock, atomic replacement.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tracing::warn;

use crate::error::{Error, Result};
use crate::model::{FORMAT_VERSION, FileData};

/// Permissions of the directory file, its lock file and temporary files.
const MODE: u32 = 0o600;

/// What identifies one version of the file. Every write renames a new file
/// into place, so a new version has a new inode; the reader keeps the file it
/// read open, so that inode cannot be reused while it is compared against.
/// Size and modification time catch edits made in place by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Signature {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Signature {
    fn of(m: &Metadata) -> Self {
        Signature {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

/// One version of the file, read.
pub(crate) struct Loaded {
    /// Its content.
    pub(crate) data: FileData,
    /// The file it came from, kept open (see [`Signature`]).
    pub(crate) file: File,
    /// Its signature.
    pub(crate) sig: Signature,
}

/// The paths of one directory: the file, its lock file, the temp-file prefix.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub(crate) file: PathBuf,
    lock: PathBuf,
    folder: PathBuf,
    temp_prefix: String,
}

impl Paths {
    pub(crate) fn new(file: PathBuf) -> Result<Paths> {
        let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
            return Err(Error::Invalid {
                path: file,
                detail: "not a file name in UTF-8".into(),
            });
        };
        let name = name.to_owned();
        let folder = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(Paths {
            lock: file.with_file_name(format!("{name}.lock")),
            temp_prefix: format!(".{name}.tmp."),
            folder,
            file,
        })
    }

    /// The signature of whatever the path names now.
    pub(crate) fn stat(&self) -> Result<Signature> {
        fs::metadata(&self.file)
            .map(|m| Signature::of(&m))
            .map_err(|e| self.not_found_or("stat", e))
    }

    /// Reads and decodes the file.
    pub(crate) fn read(&self) -> Result<Loaded> {
        let mut file = File::open(&self.file).map_err(|e| self.not_found_or("open", e))?;
        // The signature of what is read: taken from the open file, before reading.
        let meta = file.metadata().map_err(Error::io("stat", &self.file))?;
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut bytes)
            .map_err(Error::io("read", &self.file))?;
        let data = decode(&self.file, &bytes)?;
        Ok(Loaded {
            data,
            file,
            sig: Signature::of(&meta),
        })
    }

    /// Takes the exclusive write lock, waiting for it; released on drop.
    pub(crate) fn lock(&self) -> Result<WriteLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(MODE)
            .open(&self.lock)
            .map_err(Error::io("open", &self.lock))?;
        file.lock().map_err(Error::io("lock", &self.lock))?;
        Ok(WriteLock { _file: file })
    }

    /// Whether the file exists.
    pub(crate) fn exists(&self) -> Result<bool> {
        self.file
            .try_exists()
            .map_err(Error::io("stat", &self.file))
    }

    /// Replaces the file with `data`: temp file beside it (mode 0600), write,
    /// fsync, rename over, fsync the folder. A crash leaves the old file or
    /// the new one, and at worst a temp file that the next write removes.
    /// Call with the lock held.
    pub(crate) fn write(&self, lock: &WriteLock, data: &FileData) -> Result<(File, Signature)> {
        let mut bytes = serde_json::to_vec_pretty(data).map_err(|error| Error::Json {
            path: self.file.clone(),
            error,
        })?;
        bytes.push(b'\n');
        let file = self.write_bytes(lock, &bytes)?;
        let meta = file.metadata().map_err(Error::io("stat", &self.file))?;
        Ok((file, Signature::of(&meta)))
    }

    /// Replaces the file with `bytes`, as [`Paths::write`] does; the mailing
    /// lists' files are written the same way. Call with the lock held.
    pub(crate) fn write_bytes(&self, _lock: &WriteLock, bytes: &[u8]) -> Result<File> {
        self.remove_temps();
        let temp = self.folder.join(format!(
            "{}{}.{:016x}",
            self.temp_prefix,
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .open(&temp)
            .map_err(Error::io("create", &temp))?;
        let written = file
            .set_permissions(fs::Permissions::from_mode(MODE))
            .and_then(|()| file.write_all(bytes))
            .and_then(|()| file.sync_all())
            .map_err(Error::io("write", &temp))
            .and_then(|()| {
                fs::rename(&temp, &self.file).map_err(Error::io("rename onto", &self.file))
            });
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        File::open(&self.folder)
            .and_then(|dir| dir.sync_all())
            .map_err(Error::io("sync the folder", &self.folder))?;
        Ok(file)
    }

    /// Removes the file (under the lock) and fsyncs the folder.
    pub(crate) fn remove(&self, _lock: &WriteLock) -> Result<()> {
        fs::remove_file(&self.file).map_err(|e| self.not_found_or("remove", e))?;
        File::open(&self.folder)
            .and_then(|dir| dir.sync_all())
            .map_err(Error::io("sync the folder", &self.folder))
    }

    /// Removes temp files a crashed writer left. Only writers holding the lock
    /// create temp files, so under the lock every one found is stale.
    fn remove_temps(&self) {
        let Ok(entries) = fs::read_dir(&self.folder) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name
                .to_str()
                .is_some_and(|n| n.starts_with(&self.temp_prefix))
            {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => {
                        warn!(path = %path.display(), "removed a temporary file left by an interrupted write")
                    }
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "cannot remove a leftover temporary file")
                    }
                }
            }
        }
    }

    fn not_found_or(&self, op: &'static str, e: std::io::Error) -> Error {
        if e.kind() == ErrorKind::NotFound {
            Error::NotFound {
                path: self.file.clone(),
            }
        } else {
            Error::io(op, &self.file)(e)
        }
    }
}

/// The exclusive write lock (an flock on the `.lock` file beside the
/// directory file); other writers wait while it is held.
pub(crate) struct WriteLock {
    _file: File,
}

/// Decodes the file's bytes: the version first, so that a newer format is
/// reported as such rather than as unknown fields.
fn decode(path: &Path, bytes: &[u8]) -> Result<FileData> {
    #[derive(Deserialize)]
    struct VersionOnly {
        version: Option<u64>,
    }
    let json = |error| Error::Json {
        path: path.to_path_buf(),
        error,
    };
    let head: VersionOnly = serde_json::from_slice(bytes).map_err(json)?;
    match head.version {
        None => Err(Error::Invalid {
            path: path.to_path_buf(),
            detail: "no \"version\" field".into(),
        }),
        Some(v) if v == u64::from(FORMAT_VERSION) => serde_json::from_slice(bytes).map_err(json),
        Some(found) => Err(Error::Version {
            path: path.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        }),
    }
}
