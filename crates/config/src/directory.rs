//! `[directory]`: the directory's file, sub-addresses and the credentials cache.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reader::Section;

/// `[directory]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DirectoryConfig {
    /// The directory's JSON file.
    pub file: PathBuf,
    /// The sub-address separator (`+` in `user+tag@domain`), if any.
    pub subaddress_separator: Option<char>,
    /// How long a successful login is remembered, so the same credentials
    /// again are not hashed again (`credentials_cache_secs`; zero: never).
    pub credentials_cache_ttl: Duration,
    /// The most successful logins remembered by each process (0 = none).
    pub credentials_cache_entries: usize,
}

/// Reads `[directory]`; the file is resolved against `data_dir`.
pub(crate) fn read(root: &Section<'_>, data_dir: &Path) -> DirectoryConfig {
    let data = |p: PathBuf| data_dir.join(p);
    let dir = root.section("directory");
    let separator = dir.string("subaddress_separator", "+");
    let mut chars = separator.chars();
    let subaddress_separator = match (chars.next(), chars.next()) {
        (None, _) => None,
        (Some(c), None) if c.is_ascii_punctuation() && c != '@' && c != '"' => Some(c),
        _ => {
            dir.problem(
                "subaddress_separator",
                format!("\"{separator}\" must be one punctuation character (not @ or \"), or \"\""),
            );
            Some('+')
        }
    };
    let directory = DirectoryConfig {
        file: data(dir.path("file", "directory.json")),
        subaddress_separator,
        credentials_cache_ttl: dir.secs("credentials_cache_secs", 600, 0, 86_400),
        credentials_cache_entries: dir.count("credentials_cache_entries", 1024, 0, 1_000_000),
    };
    dir.finish();
    directory
}
