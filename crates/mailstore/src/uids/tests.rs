use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use super::*;
use crate::delivery::{Delivery, DeliveryItem};
use crate::folder_name::FolderName;
use crate::names::{Flag, Flags};

fn mailbox() -> (tempfile::TempDir, Mailbox) {
    let tmp = tempfile::tempdir().unwrap();
    let mailbox = Mailbox::open(tmp.path().join("mail/example.org/bob"), "mx").unwrap();
    (tmp, mailbox)
}

fn deliver(mailbox: &Mailbox, key: &str) -> MessageId {
    match mailbox
        .deliver(&FolderName::inbox(), key.as_bytes(), key)
        .unwrap()
    {
        Delivery::Stored { id, .. } => id,
        Delivery::AlreadyDelivered => panic!("{key} was delivered before"),
    }
}

fn deliver_many(mailbox: &Mailbox, prefix: &str, n: usize) -> Vec<MessageId> {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}:bob")).collect();
    let items: Vec<DeliveryItem<'_>> = keys
        .iter()
        .map(|key| DeliveryItem {
            key,
            bytes: key.as_bytes(),
        })
        .collect();
    mailbox
        .deliver_many(&FolderName::inbox(), &items)
        .into_iter()
        .map(|r| match r.unwrap() {
            Delivery::Stored { id, .. } => id,
            Delivery::AlreadyDelivered => panic!("delivered twice"),
        })
        .collect()
}

/// UID of each listed message.
fn uids(index: &mut UidIndex, folder: &Folder) -> BTreeMap<MessageId, u32> {
    index
        .assign(folder.messages().unwrap())
        .unwrap()
        .into_iter()
        .map(|(r, e)| (e.id, r.uid))
        .collect()
}

#[test]
fn uids_are_given_in_delivery_order_and_persist() {
    let (_tmp, mailbox) = mailbox();
    let inbox = mailbox.inbox();
    let a = deliver(&mailbox, "Q1:bob");
    let b = deliver(&mailbox, "Q2:bob");
    let mut index = UidIndex::open(&mailbox, &inbox).unwrap();
    let validity = index.uid_validity();
    assert!(validity > 1_600_000_000, "{validity}");
    assert_eq!(index.uid_next(), 1);
    let listed = index.assign(inbox.messages().unwrap()).unwrap();
    let got: Vec<(u32, MessageId)> = listed.iter().map(|(r, e)| (r.uid, e.id.clone())).collect();
    assert_eq!(got, [(1, a.clone()), (2, b.clone())]);
    assert_eq!(index.uid_next(), 3);
    // INTERNALDATE: the file's time, close to now.
    let date = index.get(&a).unwrap().internal_date;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - date).abs() < 60, "{date} vs {now}");

    // Flag changes and new -> cur keep the UID; a reopened index knows them all.
    inbox.set_flags(&a, Flags::new().with(Flag::Seen)).unwrap();
    let c = deliver(&mailbox, "Q3:bob");
    let mut again = UidIndex::open(&mailbox, &inbox).unwrap();
    assert_eq!(again.uid_validity(), validity);
    let map = uids(&mut again, &inbox);
    assert_eq!(map[&a], 1);
    assert_eq!(map[&b], 2);
    assert_eq!(map[&c], 3);
    assert_eq!(again.get(&a).unwrap().internal_date, date);
    // The first index sees what the second assigned.
    index.refresh().unwrap();
    assert_eq!(index.get(&c).unwrap().uid, 3);
    assert_eq!(index.uid_next(), 4);
}

#[test]
fn uids_are_never_reused_after_expunge_and_compaction() {
    let (_tmp, mailbox) = mailbox();
    let inbox = mailbox.inbox();
    let ids = deliver_many(&mailbox, "Q", 5);
    let mut index = UidIndex::open(&mailbox, &inbox).unwrap();
    uids(&mut index, &inbox);
    for id in &ids {
        inbox.remove(id).unwrap();
    }
    let removed = index.compact(&inbox, &[]).unwrap();
    assert_eq!(removed, 5);
    assert!(index.get(&ids[0]).is_none());
    let text = fs::read_to_string(inbox.path().join(UID_FILE)).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");

    let new = deliver(&mailbox, "Q9:bob");
    let mut reopened = UidIndex::open(&mailbox, &inbox).unwrap();
    assert_eq!(uids(&mut reopened, &inbox)[&new], 6);
    // The first index notices the rewrite (a new inode) and reads it afresh.
    index.refresh().unwrap();
    assert_eq!(index.get(&new).unwrap().uid, 6);
}

#[test]
fn compaction_waits_for_enough_dead_records() {
    let (_tmp, mailbox) = mailbox();
    let inbox = mailbox.inbox();
    let ids = deliver_many(&mailbox, "Q", 3);
    let mut index = UidIndex::open(&mailbox, &inbox).unwrap();
    uids(&mut index, &inbox);
    inbox.remove(&ids[0]).unwrap();
    let listing = inbox.messages().unwrap();
    assert_eq!(index.compact_if_worth_it(&inbox, listing.len()).unwrap(), 0);
    assert_eq!(index.len(), 3);
    assert_eq!(
        index.dead_records(&listing.iter().map(|e| e.id.clone()).collect()),
        1
    );
}

#[test]
fn a_message_missed_by_one_listing_keeps_its_record_at_compaction() {
    let (_tmp, mailbox) = mailbox();
    let inbox = mailbox.inbox();
    let ids = deliver_many(&mailbox, "Q", 3);
    let mut index = UidIndex::open(&mailbox, &inbox).unwrap();
    uids(&mut index, &inbox);
    // A listing that (as a racing readdir might) lacks a message that is still there.
    let partial: Vec<MessageEntry> = inbox
        .messages()
        .unwrap()
        .into_iter()
        .filter(|e| e.id != ids[1])
        .collect();
    assert_eq!(index.compact(&inbox, &partial).unwrap(), 0);
    assert_eq!(index.get(&ids[1]).unwrap().uid, 2);
}

#[test]
fn uid_validity_changes_when_a_folder_is_made_again() {
    let (_tmp, mailbox) = mailbox();
    let name = FolderName::new("Archive").unwrap();
    let folder = mailbox.folder(&name).unwrap();
    let first = UidIndex::open(&mailbox, &folder).unwrap().uid_validity();
    mailbox.delete_folder(&name).unwrap();
    let folder = mailbox.folder(&name).unwrap();
    let second = UidIndex::open(&mailbox, &folder).unwrap().uid_validity();
    assert!(second > first, "{first} then {second}");
}

#[test]
fn a_missing_folder_is_reported() {
    let (_tmp, mailbox) = mailbox();
    let name = FolderName::new("Gone").unwrap();
    let folder = mailbox.folder(&name).unwrap();
    let mut index = UidIndex::open(&mailbox, &folder).unwrap();
    fs::remove_dir_all(folder.path()).unwrap();
    let err = index.refresh().unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn half_written_lines_wait_until_they_are_whole() {
    let (_tmp, mailbox) = mailbox();
    let inbox = mailbox.inbox();
    let mut index = UidIndex::open(&mailbox, &inbox).unwrap();
    let path = inbox.path().join(UID_FILE);
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"7 1700000000 1700000000.x.host").unwrap();
    index.refresh().unwrap();
    let id = MessageId::new("1700000000.x.host").unwrap();
    assert!(index.get(&id).is_none());
    file.write_all(b",S=5\n").unwrap();
    index.refresh().unwrap();
    let id = MessageId::new("1700000000.x.host,S=5").unwrap();
    assert_eq!(index.get(&id).unwrap().uid, 7);
    assert_eq!(index.uid_next(), 8);
}

#[test]
fn keywords_get_letters_that_persist() {
    let (_tmp, mailbox) = mailbox();
    let inbox = mailbox.inbox();
    let mut index = UidIndex::open(&mailbox, &inbox).unwrap();
    assert_eq!(index.define_keyword("$Forwarded").unwrap(), Some('a'));
    assert_eq!(index.define_keyword("Work").unwrap(), Some('b'));
    assert_eq!(index.define_keyword("$forwarded").unwrap(), Some('a'));
    assert!(index.define_keyword("two words").is_err());
    let again = UidIndex::open(&mailbox, &inbox).unwrap();
    assert_eq!(again.keywords(), ["$Forwarded", "Work"]);
    assert_eq!(again.keyword_letter("work"), Some('b'));
    assert_eq!(again.keyword_of('b'), Some("Work"));
    assert_eq!(again.keyword_of('c'), None);
    for i in 2..MAX_KEYWORDS {
        assert!(index.define_keyword(&format!("k{i}")).unwrap().is_some());
    }
    assert_eq!(index.define_keyword("one-too-many").unwrap(), None);
    // Keywords survive a compaction.
    index.compact(&inbox, &[]).unwrap();
    let again = UidIndex::open(&mailbox, &inbox).unwrap();
    assert_eq!(again.keywords().len(), MAX_KEYWORDS);
}

#[test]
fn appended_and_copied_messages_get_the_next_uids() {
    let (_tmp, mailbox) = mailbox();
    let inbox = mailbox.inbox();
    deliver(&mailbox, "Q1:bob");
    let mut index = UidIndex::open(&mailbox, &inbox).unwrap();
    uids(&mut index, &inbox);
    let date = 1_000_000_000;
    let entry = mailbox
        .append(
            &inbox,
            b"Subject: hi\r\n\r\nbody\r\n",
            Flags::new().with(Flag::Seen),
            date,
        )
        .unwrap();
    let got = index.add(&[(entry.id.clone(), date)]).unwrap();
    assert_eq!(got, [2]);
    // A listing finds it with that UID and the client's date, also as a file time.
    let map = uids(&mut index, &inbox);
    assert_eq!(map[&entry.id], 2);
    assert_eq!(index.get(&entry.id).unwrap().internal_date, date);
    let mtime = fs::metadata(&entry.path).unwrap().modified().unwrap();
    assert_eq!(
        mtime,
        UNIX_EPOCH + std::time::Duration::from_secs(date as u64)
    );
    assert!(entry.path.to_string_lossy().ends_with(":2,S"));
}

#[test]
fn concurrent_indexes_agree_on_every_uid() {
    let (_tmp, mailbox) = mailbox();
    let inbox = mailbox.inbox();
    UidIndex::open(&mailbox, &inbox).unwrap();
    let results: Vec<BTreeMap<MessageId, u32>> = thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let mailbox = &mailbox;
                let inbox = &inbox;
                s.spawn(move || {
                    let mut index = UidIndex::open(mailbox, inbox).unwrap();
                    for i in 0..25 {
                        deliver(mailbox, &format!("T{t}-{i}:bob"));
                        uids(&mut index, inbox);
                    }
                    uids(&mut index, inbox)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut fresh = UidIndex::open(&mailbox, &inbox).unwrap();
    let all = uids(&mut fresh, &inbox);
    assert_eq!(all.len(), 100);
    let distinct: HashSet<u32> = all.values().copied().collect();
    assert_eq!(distinct.len(), 100, "a UID was given twice");
    assert_eq!(fresh.uid_next(), 101);
    for seen in results {
        for (id, uid) in seen {
            assert_eq!(all[&id], uid, "{id}");
        }
    }
}

#[test]
fn rescans_during_flag_renames_never_give_a_second_uid() {
    let (_tmp, mailbox) = mailbox();
    let inbox = mailbox.inbox();
    let ids = deliver_many(&mailbox, "Q", 100);
    let mut index = UidIndex::open(&mailbox, &inbox).unwrap();
    let before = uids(&mut index, &inbox);
    assert_eq!(before.len(), 100);
    let done = AtomicBool::new(false);
    let listing = AtomicBool::new(false);
    thread::scope(|s| {
        let renamer = s.spawn(|| {
            // On a busy machine the renames could all be over before a listing began.
            while !listing.load(Ordering::Acquire) {
                thread::yield_now();
            }
            // Another process flipping flags: every message renamed inside cur/, again
            // and again, while the listing runs.
            for round in 0..5 {
                for id in &ids {
                    let flags = if round % 2 == 0 {
                        Flags::new().with(Flag::Seen)
                    } else {
                        Flags::new().with(Flag::Flagged)
                    };
                    inbox.set_flags(id, flags).unwrap();
                }
            }
            done.store(true, Ordering::Release);
        });
        let mut rounds = 0;
        while !done.load(Ordering::Acquire) {
            listing.store(true, Ordering::Release);
            let now = uids(&mut index, &inbox);
            for (id, uid) in &now {
                assert_eq!(before[id], *uid, "{id} changed its UID");
            }
            rounds += 1;
        }
        renamer.join().unwrap();
        assert!(rounds > 0);
    });
    assert_eq!(index.uid_next(), 101, "a message got a second UID");
    assert_eq!(uids(&mut index, &inbox), before);
}

/// Run by `uids_from_several_processes_are_distinct` in child processes; in a
/// normal test run (no worker environment) it returns at once.
#[test]
fn uid_worker_process() {
    let Ok(dir) = std::env::var("QS_UID_WORKER_ROOT") else {
        return;
    };
    let tag = std::env::var("QS_UID_WORKER_TAG").unwrap();
    let mailbox = Mailbox::open(PathBuf::from(dir), "mx").unwrap();
    let inbox = mailbox.inbox();
    let mut index = UidIndex::open(&mailbox, &inbox).unwrap();
    for i in 0..20 {
        deliver(&mailbox, &format!("{tag}-{i}:bob"));
        uids(&mut index, &inbox);
    }
    index.define_keyword(&format!("kw{tag}")).unwrap();
}

#[test]
fn uids_from_several_processes_are_distinct() {
    let (_tmp, mailbox) = mailbox();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|t| {
            Command::new(&exe)
                .args(["uids::tests::uid_worker_process", "--exact", "--quiet"])
                .env("QS_UID_WORKER_ROOT", mailbox.root())
                .env("QS_UID_WORKER_TAG", t.to_string())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let inbox = mailbox.inbox();
    let mut index = UidIndex::open(&mailbox, &inbox).unwrap();
    let all = uids(&mut index, &inbox);
    assert_eq!(all.len(), 60);
    let distinct: HashSet<u32> = all.values().copied().collect();
    assert_eq!(distinct.len(), 60);
    assert_eq!(index.uid_next(), 61);
    let mut keywords = index.keywords().to_vec();
    keywords.sort();
    assert_eq!(keywords, ["kw0", "kw1", "kw2"]);
}

#[test]
fn modification_sequences_grow_persist_and_survive_compaction() {
    let (_tmp, mailbox) = mailbox();
    let inbox = mailbox.inbox();
    let ids = deliver_many(&mailbox, "Q", 3);
    let mut index = UidIndex::open(&mailbox, &inbox).unwrap();
    uids(&mut index, &inbox);
    assert_eq!(index.highest_modseq(), 1);
    assert_eq!(index.flag_state(1), None);

    // A first record of three messages: one new sequence for the batch.
    let none = Flags::new();
    let seen = Flags::new().with(Flag::Seen);
    let got = index
        .record(&[(1, none), (2, none), (3, none)], &[])
        .unwrap();
    assert_eq!(got, [2, 2, 2]);
    // The same state again records nothing and answers the recorded sequence.
    assert_eq!(index.record(&[(2, none)], &[]).unwrap(), [2]);
    assert_eq!(index.highest_modseq(), 2);
    // A change, then an expunge: each gets the next one.
    assert_eq!(index.record(&[(2, seen)], &[]).unwrap(), [3]);
    assert_eq!(index.record(&[], &[3]).unwrap(), Vec::<u64>::new());
    assert_eq!(index.highest_modseq(), 4);
    assert_eq!(index.expunged_at(3), Some(4));
    assert_eq!(index.flag_state(3), None);
    let mut live: Vec<u32> = index.live_uids().collect();
    live.sort_unstable();
    assert_eq!(live, [1, 2]);

    // Another process's index reads what was recorded.
    let mut other = UidIndex::open(&mailbox, &inbox).unwrap();
    assert_eq!(other.highest_modseq(), 4);
    assert_eq!(other.flag_state(2), Some((3, seen)));
    assert_eq!(other.expunged_at(3), Some(4));
    // It records a change the first one sees on its next refresh.
    assert_eq!(other.record(&[(1, seen)], &[]).unwrap(), [5]);
    index.refresh().unwrap();
    assert_eq!(index.flag_state(1), Some((5, seen)));
    assert_eq!(index.highest_modseq(), 5);

    // A compaction keeps the highest sequence, the last state of each message and
    // the expunge, without the older records.
    inbox.remove(&ids[2]).unwrap();
    index.compact(&inbox, &inbox.messages().unwrap()).unwrap();
    let text = fs::read_to_string(inbox.path().join(UID_FILE)).unwrap();
    // HIGHESTMODSEQ 5; nothing forgotten (message 3 left with its `x` record).
    assert!(text.lines().next().unwrap().ends_with(" 5 1"), "{text}");
    assert_eq!(text.matches("\nm ").count(), 2, "{text}");
    assert!(text.contains("\nx 3 4\n"), "{text}");
    let reopened = UidIndex::open(&mailbox, &inbox).unwrap();
    assert_eq!(reopened.highest_modseq(), 5);
    assert_eq!(reopened.flag_state(1), Some((5, seen)));
    assert_eq!(reopened.flag_state(2), Some((3, seen)));
    assert_eq!(reopened.expunged_at(3), Some(4));
    assert_eq!(reopened.expunges_forgotten_by(), 1);
    assert_eq!(reopened.expunged_since(3).collect::<Vec<_>>(), [3]);
    assert_eq!(reopened.expunged_since(4).count(), 0);

    // A message that leaves without an `x` record (never recorded, gone before a
    // listing saw it go) left at an unknown time: expunges up to now may be
    // forgotten.
    let mut index = reopened;
    inbox.remove(&ids[1]).unwrap();
    index.compact(&inbox, &inbox.messages().unwrap()).unwrap();
    assert_eq!(index.flag_state(2), None);
    assert_eq!(index.expunges_forgotten_by(), index.highest_modseq());
    let again = UidIndex::open(&mailbox, &inbox).unwrap();
    assert_eq!(again.expunges_forgotten_by(), 5);
}

#[test]
fn an_index_written_before_modification_sequences_reads_as_sequence_one() {
    let (_tmp, mailbox) = mailbox();
    let inbox = mailbox.inbox();
    let id = deliver(&mailbox, "Q1:bob");
    fs::write(
        inbox.path().join(UID_FILE),
        format!("qs-uids 1 1700000000 8\n7 1700000001 {id}\n"),
    )
    .unwrap();
    let mut index = UidIndex::open(&mailbox, &inbox).unwrap();
    assert_eq!(index.uid_validity(), 1_700_000_000);
    assert_eq!(index.highest_modseq(), 1);
    assert_eq!(uids(&mut index, &inbox)[&id], 7);
    assert_eq!(index.record(&[(7, Flags::new())], &[]).unwrap(), [2]);
    // The UID and UIDVALIDITY stay; a half-written record at the end waits.
    let path = inbox.path().join(UID_FILE);
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"m 7 9 S").unwrap();
    let mut again = UidIndex::open(&mailbox, &inbox).unwrap();
    assert_eq!(again.flag_state(7), Some((2, Flags::new())));
    file.write_all(b"\n").unwrap();
    again.refresh().unwrap();
    assert_eq!(
        again.flag_state(7),
        Some((9, Flags::new().with(Flag::Seen)))
    );
    assert_eq!(again.highest_modseq(), 9);
}
