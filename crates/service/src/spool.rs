//! Message bodies and literals held while they arrive: in memory up to a
//! threshold, then in a file of the module's spool folder, so that what a
//! client uploads costs disk, not memory. Without it, 20 unfinished 24 MiB
//! uploads hold 480 MiB of the server's memory.
//!
//! A [`Spool`] is appended to, then read back from its start as often as
//! needed ([`Spool::reader`], [`Spool::read_at`], and as a
//! [`qs_queue::BodySource`] that the queue client streams from).
//!
//! # Security
//! The folder is `<data_dir>/spool/<module>/`, mode 0700. A spool file is
//! created with mode 0600 and unlinked at once: it has no name while it is
//! used, and its space is given back with its last handle, also when the
//! process is killed. [`SpoolDir::open`] removes whatever an earlier process
//! left in the folder between creating a file and unlinking it.
//!
//! The files are written and read with plain file calls from the caller's
//! thread: the bytes land in the page cache, and a hand-off to the blocking
//! pool for each 64 KiB would cost more than the copy.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Once in a file, appends are gathered up to this size before they are written.
const WRITE_BUFFER: usize = 64 * 1024;
/// Names tried before creating a spool file is given up.
const NAME_ATTEMPTS: u32 = 100;

/// Where a module's spools go, and how much of each stays in memory.
#[derive(Debug)]
pub struct SpoolDir {
    path: PathBuf,
    threshold: usize,
    next_name: AtomicU64,
}

impl SpoolDir {
    /// The spool folder of `module`, `<data_dir>/spool/<module>`: see
    /// [`SpoolDir::open`].
    pub fn for_module(
        data_dir: &Path,
        module: &str,
        threshold: usize,
    ) -> io::Result<Arc<SpoolDir>> {
        SpoolDir::open(data_dir.join("spool").join(module), threshold)
    }

    /// Creates `path` (mode 0700) if needed and removes the files an earlier
    /// process left in it. Spools made from it keep up to `threshold` octets
    /// in memory; past that, everything goes to a file.
    pub fn open(path: impl Into<PathBuf>, threshold: usize) -> io::Result<Arc<SpoolDir>> {
        let path = path.into();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|e| annotate(&path, e))?;
        for entry in fs::read_dir(&path).map_err(|e| annotate(&path, e))? {
            let entry = entry.map_err(|e| annotate(&path, e))?;
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                remove_unless_gone(&entry.path()).map_err(|e| annotate(&entry.path(), e))?;
            }
        }
        Ok(Arc::new(SpoolDir {
            path,
            threshold,
            next_name: AtomicU64::new(0),
        }))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Octets a spool keeps in memory before it moves to a file.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// An empty spool.
    pub fn spool(self: &Arc<Self>) -> Spool {
        Spool {
            dir: Arc::clone(self),
            threshold: self.threshold,
            len: 0,
            store: Store::Memory(Vec::new()),
        }
    }

    /// An empty spool that goes to a file with its first octet: for what is
    /// known to be larger than the threshold (memory given back by a spool that
    /// moved to its file mostly stays with the process).
    pub fn file_spool(self: &Arc<Self>) -> Spool {
        Spool {
            threshold: 0,
            ..self.spool()
        }
    }

    /// A new file, already unlinked.
    fn create_file(&self) -> io::Result<File> {
        let pid = std::process::id();
        for _ in 0..NAME_ATTEMPTS {
            let n = self.next_name.fetch_add(1, Ordering::Relaxed);
            let path = self.path.join(format!("{pid}.{n}"));
            let created = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            match created {
                Ok(file) => {
                    remove_unless_gone(&path).map_err(|e| annotate(&path, e))?;
                    return Ok(file);
                }
                // Left by an earlier process with the same id.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(annotate(&path, e)),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{}: no free name for a spool file", self.path.display()),
        ))
    }
}

/// Removes `path`; a file already gone (a successor process cleaning the
/// folder at its start) is not an error.
fn remove_unless_gone(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// An error that names the file it is about.
fn annotate(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Bytes being received: in memory up to the threshold of its [`SpoolDir`],
/// then in an unlinked file. Dropping it gives the space back.
pub struct Spool {
    dir: Arc<SpoolDir>,
    /// Octets kept in memory before the file.
    threshold: usize,
    len: u64,
    store: Store,
}

enum Store {
    Memory(Vec<u8>),
    /// `pending` is the tail not yet written to `file`.
    File {
        file: File,
        pending: Vec<u8>,
    },
}

impl fmt::Debug for Spool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spool")
            .field("len", &self.len)
            .field("in_file", &self.in_file())
            .finish()
    }
}

impl Spool {
    /// Adds `bytes` at the end. After an error the content is undefined:
    /// [`Spool::clear`] or drop it.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match &mut self.store {
            Store::Memory(data) if data.len() + bytes.len() <= self.threshold => {
                data.extend_from_slice(bytes);
            }
            Store::Memory(data) => {
                let mut file = self.dir.create_file()?;
                file.write_all(data)?;
                file.write_all(bytes)?;
                self.store = Store::File {
                    file,
                    pending: Vec::new(),
                };
            }
            Store::File { file, pending } => {
                if pending.len() + bytes.len() > WRITE_BUFFER {
                    file.write_all(pending)?;
                    pending.clear();
                }
                if bytes.len() >= WRITE_BUFFER {
                    file.write_all(bytes)?;
                } else {
                    if pending.capacity() == 0 {
                        pending.reserve_exact(WRITE_BUFFER);
                    }
                    pending.extend_from_slice(bytes);
                }
            }
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Octets held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes went to a file (more than the threshold came).
    pub fn in_file(&self) -> bool {
        matches!(self.store, Store::File { .. })
    }

    /// What is held, leaving this spool empty (its folder and threshold are the
    /// same).
    pub fn take(&mut self) -> Spool {
        let empty = Spool {
            dir: Arc::clone(&self.dir),
            threshold: self.threshold,
            len: 0,
            store: Store::Memory(Vec::new()),
        };
        std::mem::replace(self, empty)
    }

    /// Forgets everything; a file is given back.
    pub fn clear(&mut self) {
        self.store = Store::Memory(Vec::new());
        self.len = 0;
    }

    /// Copies octets from `offset` on into `buf`; returns how many, 0 only
    /// at the end.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let tail = |bytes: &[u8], from: u64, buf: &mut [u8]| {
            // `from` is below `bytes.len()`, which is a usize.
            let from = from as usize;
            let n = buf.len().min(bytes.len() - from);
            buf[..n].copy_from_slice(&bytes[from..from + n]);
            n
        };
        match &self.store {
            Store::Memory(data) => Ok(tail(data, offset, buf)),
            Store::File { file, pending } => {
                let written = self.len - pending.len() as u64;
                if offset >= written {
                    return Ok(tail(pending, offset - written, buf));
                }
                let left = usize::try_from(written - offset).unwrap_or(usize::MAX);
                let n = buf.len().min(left);
                file.read_at(&mut buf[..n], offset)
            }
        }
    }

    /// A reader from the first octet.
    pub fn reader(&self) -> SpoolReader<'_> {
        SpoolReader {
            spool: self,
            offset: 0,
        }
    }

    /// The first `max` octets (all of them when there are fewer).
    pub fn head(&self, max: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.reader()
            .take(u64::try_from(max).unwrap_or(u64::MAX))
            .read_to_end(&mut out)?;
        Ok(out)
    }

    /// Every octet, in memory: for spools known to be small, and tests.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        self.head(usize::try_from(self.len).unwrap_or(usize::MAX))
    }
}

impl qs_queue::BodySource for Spool {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        Spool::read_at(self, offset, buf)
    }
}

/// Reads a [`Spool`] from its start ([`Spool::reader`]).
#[derive(Debug)]
pub struct SpoolReader<'a> {
    spool: &'a Spool,
    offset: u64,
}

impl Read for SpoolReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.spool.read_at(self.offset, buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn contents(spool: &Spool) -> Vec<u8> {
        let mut out = Vec::new();
        spool.reader().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn small_spools_stay_in_memory_and_large_ones_leave_no_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SpoolDir::for_module(tmp.path(), "test", 10).unwrap();
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        let mut small = dir.spool();
        small.append(b"0123456789").unwrap();
        assert!(!small.in_file());
        assert_eq!(contents(&small), b"0123456789");

        let mut large = dir.spool();
        large.append(b"01234").unwrap();
        large.append(b"567890").unwrap();
        assert!(large.in_file());
        // The file was unlinked as soon as it was made.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(large.len(), 11);
        assert_eq!(contents(&large), b"01234567890");
    }

    #[test]
    fn everything_appended_reads_back_in_any_piece_size() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SpoolDir::for_module(tmp.path(), "test", 1000).unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        // Small appends (gathered), appends larger than the write buffer, and
        // a tail that is only in the buffer when it is read.
        for piece in [1, 7, 4096, 70_000, 300_000] {
            let mut spool = dir.spool();
            for chunk in bytes.chunks(piece) {
                spool.append(chunk).unwrap();
            }
            assert!(spool.in_file());
            assert_eq!(spool.len(), bytes.len() as u64);
            assert_eq!(contents(&spool), bytes, "appends of {piece}");
            let mut buf = [0u8; 333];
            let n = spool.read_at(299_900, &mut buf).unwrap();
            assert_eq!(&buf[..n], &bytes[299_900..]);
            assert_eq!(spool.read_at(300_000, &mut buf).unwrap(), 0);
            assert_eq!(spool.head(5).unwrap(), &bytes[..5]);
            assert_eq!(spool.to_vec().unwrap(), bytes);
        }
    }

    #[test]
    fn a_file_spool_starts_in_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SpoolDir::for_module(tmp.path(), "test", 1 << 20).unwrap();
        let mut spool = dir.file_spool();
        spool.append(b"x").unwrap();
        assert!(spool.in_file());
        assert_eq!(contents(&spool), b"x");
        let mut taken = spool.take();
        assert!(taken.in_file() && spool.is_empty());
        spool.append(b"y").unwrap();
        assert!(spool.in_file(), "take keeps the threshold");
        taken.clear();
        assert!(!taken.in_file());
    }

    #[test]
    fn clear_gives_the_file_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SpoolDir::for_module(tmp.path(), "test", 4).unwrap();
        let mut spool = dir.spool();
        spool.append(b"more than four").unwrap();
        assert!(spool.in_file());
        spool.clear();
        assert!(!spool.in_file() && spool.is_empty());
        spool.append(b"abc").unwrap();
        assert_eq!(contents(&spool), b"abc");
    }

    #[test]
    fn leftovers_of_an_earlier_process_are_removed_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("spool").join("test");
        fs::create_dir_all(&folder).unwrap();
        fs::write(folder.join("123.0"), b"left behind").unwrap();
        let dir = SpoolDir::for_module(tmp.path(), "test", 4).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_spool_folder_that_cannot_be_made_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("spool"), b"a file, not a folder").unwrap();
        let err = SpoolDir::for_module(tmp.path(), "test", 4).unwrap_err();
        assert!(err.to_string().contains("spool"), "{err}");
    }
}
