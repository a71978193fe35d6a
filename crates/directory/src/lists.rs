//! Which addresses belong to a mailing list. list-server keeps one file per list
//! in `<data_dir>/lists/`, named `<list address>.json` (lowercase); a list exists
//! as soon as its file does, so a list created with qsctl receives mail at once.
//! The list's own address, `NAME-request@`, `NAME-owner@` and
//! `NAME-bounces+TOKEN@` all go to list-server.

use std::path::{Path, PathBuf};

/// Looks list addresses up in the lists folder.
#[derive(Debug, Clone)]
pub struct ListIndex {
    folder: PathBuf,
}

impl ListIndex {
    /// Lists live in `folder` (`<data_dir>/lists`).
    pub fn new(folder: impl Into<PathBuf>) -> Self {
        ListIndex {
            folder: folder.into(),
        }
    }

    /// The list that `address` (lowercase `local@domain`) belongs to, if any.
    pub fn list_for(&self, address: &str) -> Option<String> {
        let (local, domain) = address.rsplit_once('@')?;
        let candidates = [
            Some(local),
            local.strip_suffix("-request"),
            local.strip_suffix("-owner"),
            local.split_once("-bounces+").map(|(name, _)| name),
            local.strip_suffix("-bounces"),
        ];
        candidates
            .into_iter()
            .flatten()
            .filter(|name| is_safe_name(name))
            .map(|name| format!("{name}@{domain}"))
            .find(|list| list_file(&self.folder, list).exists())
    }
}

fn is_safe_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0'])
}

fn list_file(folder: &Path, list: &str) -> PathBuf {
    folder.join(format!("{list}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_addresses_and_their_companions_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("team@example.test.json"), "{}").unwrap();
        let lists = ListIndex::new(dir.path());
        for a in [
            "team@example.test",
            "team-request@example.test",
            "team-owner@example.test",
            "team-bounces+abc123@example.test",
        ] {
            assert_eq!(
                lists.list_for(a).as_deref(),
                Some("team@example.test"),
                "{a}"
            );
        }
        assert_eq!(lists.list_for("team@other.example"), None);
        assert_eq!(lists.list_for("alice@example.test"), None);
        assert_eq!(lists.list_for("../team@example.test"), None);
    }
}
