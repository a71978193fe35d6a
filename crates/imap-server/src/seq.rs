//! A session's message sequence: the UIDs its client knows, in order, kept as runs of
//! consecutive UIDs. A folder's UIDs are mostly such runs, so a session on a big folder
//! holds a few bytes instead of four per message.

/// Consecutive UIDs `uid..uid + len` at sequence indices `start..start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: u32,
    uid: u32,
    len: u32,
}

/// Ascending UIDs, addressed by index (sequence number - 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UidSeq {
    runs: Vec<Run>,
    len: u32,
}

impl UidSeq {
    /// No UIDs.
    pub fn new() -> UidSeq {
        UidSeq::default()
    }

    /// How many UIDs.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The highest UID.
    pub fn last(&self) -> Option<u32> {
        self.runs.last().map(|r| r.uid + r.len - 1)
    }

    /// Adds a UID above every other; a lower one is ignored.
    pub fn push(&mut self, uid: u32) {
        if self.last().is_some_and(|last| uid <= last) {
            return;
        }
        match self.runs.last_mut() {
            Some(run) if run.uid + run.len == uid => run.len += 1,
            _ => self.runs.push(Run {
                start: self.len,
                uid,
                len: 1,
            }),
        }
        self.len += 1;
    }

    /// The UID at `index`.
    pub fn get(&self, index: usize) -> Option<u32> {
        let index = u32::try_from(index).ok()?;
        if index >= self.len {
            return None;
        }
        let i = self.runs.partition_point(|r| r.start <= index) - 1;
        let run = self.runs[i];
        Some(run.uid + (index - run.start))
    }

    /// The index of `uid`, if it is there.
    pub fn position(&self, uid: u32) -> Option<usize> {
        let i = self.runs.partition_point(|r| r.uid <= uid).checked_sub(1)?;
        let run = self.runs[i];
        (uid < run.uid + run.len).then(|| (run.start + (uid - run.uid)) as usize)
    }

    /// The UIDs in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.runs.iter().flat_map(|r| r.uid..r.uid + r.len)
    }

    /// Keeps the UIDs for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        let old = std::mem::take(self);
        for uid in old.iter() {
            if keep(uid) {
                self.push(uid);
            }
        }
        self.runs.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_behave_like_a_list() {
        let mut seq = UidSeq::new();
        let uids = [1, 2, 3, 7, 8, 10, 20, 21, 22, 23];
        for uid in uids {
            seq.push(uid);
        }
        seq.push(5); // lower than the last: ignored
        assert_eq!(seq.len(), uids.len());
        assert_eq!(seq.runs.len(), 4);
        assert_eq!(seq.iter().collect::<Vec<_>>(), uids);
        for (i, uid) in uids.iter().enumerate() {
            assert_eq!(seq.get(i), Some(*uid));
            assert_eq!(seq.position(*uid), Some(i));
        }
        assert_eq!(seq.get(uids.len()), None);
        assert_eq!(seq.position(4), None);
        assert_eq!(seq.position(0), None);
        assert_eq!(seq.position(99), None);
        assert_eq!(seq.last(), Some(23));
        seq.retain(|uid| uid % 2 == 0 || uid > 20);
        assert_eq!(seq.iter().collect::<Vec<_>>(), [2, 8, 10, 20, 21, 22, 23]);
        assert_eq!(seq.position(21), Some(4));
        let empty = UidSeq::new();
        assert!(empty.is_empty());
        assert_eq!(empty.last(), None);
        assert_eq!(empty.get(0), None);
    }

    #[test]
    fn a_full_folder_is_one_run() {
        let mut seq = UidSeq::new();
        for uid in 1..=10_000 {
            seq.push(uid);
        }
        assert_eq!(seq.runs.len(), 1);
        assert_eq!(seq.get(9_999), Some(10_000));
    }
}
