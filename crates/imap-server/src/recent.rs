//! Which messages are `\Recent` (RFC 3501 §2.3.2): new to the folder, and this the
//! first session to be told of them.
//!
//! Each folder keeps, in `qs-recent` beside its UID index, the highest UID that a
//! read-write session has already taken as recent, with the UIDVALIDITY it belongs to
//! (the way Dovecot keeps `first_recent_uid` in its index). Every message with a
//! higher UID is recent, however it arrived (delivery, APPEND, COPY, MOVE) and
//! whatever its flags. A read-write session that sees such messages moves the mark up
//! under a lock on the file, so each message is recent in exactly one of them, in any
//! process; read-only sessions (EXAMINE) and STATUS only look.
//!
//! The mark is not synced: a crash may lose its last move, which only makes those
//! messages recent once more. A folder without the file (made before there was one)
//! counts all its messages recent once.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use qs_mailstore::{Folder, StoreError};

/// The file in each folder.
pub const RECENT_FILE: &str = "qs-recent";

/// The UIDs up to this one are no longer recent; `uid_validity` says which UIDs.
fn parse(text: &str, uid_validity: u32) -> u32 {
    let mut words = text.split_ascii_whitespace();
    match (words.next(), words.next()) {
        (Some(validity), Some(floor)) if validity.parse() == Ok(uid_validity) => {
            floor.parse().unwrap_or(0)
        }
        // Missing, damaged, or of UIDs given before the folder's UIDVALIDITY changed.
        _ => 0,
    }
}

fn read_all(file: &mut File) -> io::Result<String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))?;
    file.take(64).read_to_string(&mut text)?;
    Ok(text)
}

/// The highest UID no longer recent in `folder`.
pub fn peek(folder: &Folder, uid_validity: u32) -> Result<u32, StoreError> {
    let path = folder.path().join(RECENT_FILE);
    match File::open(&path) {
        Ok(mut file) => {
            let text = read_all(&mut file).map_err(|e| StoreError::Io {
                path: path.clone(),
                source: e,
            })?;
            Ok(parse(&text, uid_validity))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StoreError::Io {
            path: path.clone(),
            source: e,
        }),
    }
}

/// Takes the messages up to `upto` as recent for the caller: returns the highest UID
/// that was no longer recent before (the caller's are those above it, up to `upto`).
pub fn claim(folder: &Folder, uid_validity: u32, upto: u32) -> Result<u32, StoreError> {
    let path = folder.path().join(RECENT_FILE);
    claim_at(&path, uid_validity, upto).map_err(|e| StoreError::Io {
        path: path.clone(),
        source: e,
    })
}

fn claim_at(path: &Path, uid_validity: u32, upto: u32) -> io::Result<u32> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    // Held until the file is closed.
    file.lock()?;
    let floor = parse(&read_all(&mut file)?, uid_validity);
    if upto > floor {
        // Fixed width, so a new mark never leaves the tail of a longer old one.
        let line = format!("{uid_validity:010} {upto:010}\n");
        file.seek(SeekFrom::Start(0))?;
        file.write_all(line.as_bytes())?;
        file.set_len(line.len() as u64)?;
    }
    Ok(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_uid_is_claimed_once_and_a_new_uidvalidity_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECENT_FILE);
        assert_eq!(claim_at(&path, 7, 3).unwrap(), 0);
        // Nothing new: the mark stays.
        assert_eq!(claim_at(&path, 7, 3).unwrap(), 3);
        assert_eq!(claim_at(&path, 7, 2).unwrap(), 3);
        assert_eq!(claim_at(&path, 7, 10).unwrap(), 3);
        assert_eq!(
            parse(&std::fs::read_to_string(&path).unwrap(), 7),
            10,
            "the mark moved up"
        );
        // Other UIDs: every message is recent again.
        assert_eq!(claim_at(&path, 8, 2).unwrap(), 0);
        assert_eq!(claim_at(&path, 8, 2).unwrap(), 2);
        assert_eq!(parse("garbage", 8), 0);
        assert_eq!(parse("", 8), 0);
    }
}
