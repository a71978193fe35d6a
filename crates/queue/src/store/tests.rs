//! The store's tests: a real sled database in a temporary folder.

use std::path::Path;
use std::time::Duration;

use super::keys::{due_key, encode_envelope};
use super::*;
use crate::envelope::{
    Envelope, Job, JobClass, LeaseToken, Origin, Outcome, Recipient, RecipientResult,
    RecipientStatus,
};
use crate::reply::Reply;
use crate::retry::RetryPolicy;

const T0: u64 = 1_700_000_000;
const MIN: u64 = 60;

fn open(dir: &Path) -> Store {
    Store::open(dir.join("queue"), &StoreOptions::default()).expect("open")
}

fn envelope(recipients: &[(&str, JobClass)]) -> Envelope {
    let rcpts = recipients
        .iter()
        .map(|(a, c)| {
            let mut r = Recipient::new(*a, c.clone());
            r.next_attempt = T0;
            r
        })
        .collect();
    let origin = Origin {
        module: "test".into(),
        ..Origin::default()
    };
    Envelope::new("sender@example.org", rcpts, origin, T0, 5)
}

fn lease(store: &Store, class: &JobClass, now: u64) -> Option<Job> {
    store
        .lease(class, "worker", Duration::from_secs(300), now)
        .expect("lease")
}

fn result(index: u32, outcome: Outcome) -> RecipientResult {
    RecipientResult { index, outcome }
}

fn temp(index: u32) -> RecipientResult {
    result(
        index,
        Outcome::TemporaryFailure {
            reply: "451 try later".into(),
        },
    )
}

#[test]
fn insert_lease_complete_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let env = envelope(&[
        ("a@x", JobClass::local()),
        ("b@y", JobClass::outbound()),
        ("c@x", JobClass::local()),
    ]);
    store.insert(&env, b"hello").expect("insert");
    assert!(matches!(
        store.insert(&env, b"again"),
        Err(StoreError::Exists(_))
    ));

    let job = lease(&store, &JobClass::local(), T0).expect("local job");
    assert_eq!(job.id, env.id);
    assert_eq!(job.body, b"hello");
    assert_eq!(job.sender, "sender@example.org");
    assert_eq!(job.origin.module, "test");
    let indices: Vec<u32> = job.recipients.iter().map(|r| r.index).collect();
    assert_eq!(indices, vec![0, 2]);
    // Leased: not offered again, but the other class is.
    assert!(lease(&store, &JobClass::local(), T0).is_none());
    let out_job = lease(&store, &JobClass::outbound(), T0).expect("outbound job");
    assert_eq!(out_job.recipients[0].address, "b@y");

    let delivered = Outcome::Delivered {
        reply: "250 ok".into(),
    };
    let outcome = store
        .complete(
            &env.id,
            &JobClass::local(),
            job.token,
            &[result(0, delivered.clone()), result(2, delivered.clone())],
            &RetryPolicy::default(),
            T0 + 1,
        )
        .expect("complete");
    assert!(!outcome.finished);
    assert!(outcome.newly_failed.is_empty());
    assert_eq!(store.next_due(&JobClass::local()).expect("due"), None);

    let failed = Outcome::PermanentFailure {
        reply: "550 no such user".into(),
    };
    let outcome = store
        .complete(
            &env.id,
            &JobClass::outbound(),
            out_job.token,
            &[result(1, failed)],
            &RetryPolicy::default(),
            T0 + 2,
        )
        .expect("complete");
    assert!(outcome.finished);
    assert_eq!(outcome.newly_failed.len(), 1);
    assert_eq!(outcome.newly_failed[0].address, "b@y");
    assert_eq!(
        outcome.newly_failed[0].reply.to_string(),
        "550 no such user"
    );
    assert!(!outcome.newly_failed[0].expired);
    let stored = store.get(&env.id).expect("get").expect("still there");
    assert_eq!(stored.recipients[0].status, RecipientStatus::Delivered);
    assert_eq!(stored.recipients[1].status, RecipientStatus::Failed);
    assert_eq!(stored.recipients[1].attempts, 1);

    assert!(store.remove(&env.id).expect("remove"));
    assert!(!store.remove(&env.id).expect("remove again"));
    assert!(store.get(&env.id).expect("get").is_none());
    assert!(store.body(&env.id).expect("body").is_none());
    assert!(store.inner.due.is_empty() && store.inner.slots.is_empty());
}

#[test]
fn results_must_name_recipients_of_the_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let env = envelope(&[("a@x", JobClass::local()), ("b@y", JobClass::outbound())]);
    store.insert(&env, b"m").expect("insert");
    let job = lease(&store, &JobClass::local(), T0).expect("job");
    let policy = RetryPolicy::default();
    for bad in [temp(1), temp(9)] {
        let err = store.complete(&env.id, &JobClass::local(), job.token, &[bad], &policy, T0);
        assert!(
            matches!(err, Err(StoreError::InvalidResult { .. })),
            "{err:?}"
        );
    }
}

#[test]
fn due_index_is_a_range_scan_in_due_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut ids = Vec::new();
    for (i, offset) in [30, 10, 20, 1000].iter().enumerate() {
        let mut env = envelope(&[(&format!("r{i}@x"), JobClass::outbound())]);
        env.recipients[0].next_attempt = T0 + offset;
        store.insert(&env, b"m").expect("insert");
        ids.push(env.id);
    }
    let other = envelope(&[("l@x", JobClass::local())]);
    store.insert(&other, b"m").expect("insert");

    let due = store.due(&JobClass::outbound(), T0 + 30, 100).expect("due");
    assert_eq!(
        due,
        vec![
            (T0 + 10, ids[1].clone()),
            (T0 + 20, ids[2].clone()),
            (T0 + 30, ids[0].clone())
        ]
    );
    assert_eq!(
        store
            .due(&JobClass::outbound(), T0 + 30, 1)
            .expect("due")
            .len(),
        1
    );
    assert_eq!(
        store.next_due(&JobClass::outbound()).expect("next"),
        Some(T0 + 10)
    );
    assert_eq!(
        store.due(&JobClass::local(), T0, 100).expect("due"),
        vec![(T0, other.id.clone())]
    );
    assert!(
        store
            .due(&JobClass::list(), u64::MAX, 100)
            .expect("due")
            .is_empty()
    );

    // Nothing is due before its time; leases come in due order.
    assert!(lease(&store, &JobClass::outbound(), T0 + 9).is_none());
    let order: Vec<QueueId> =
        std::iter::from_fn(|| lease(&store, &JobClass::outbound(), T0 + 999).map(|j| j.id))
            .collect();
    assert_eq!(order, vec![ids[1].clone(), ids[2].clone(), ids[0].clone()]);
}

#[test]
fn an_expired_lease_comes_back_and_the_old_token_is_stale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let env = envelope(&[("a@x", JobClass::outbound())]);
    store.insert(&env, b"m").expect("insert");
    let first = lease(&store, &JobClass::outbound(), T0).expect("job");
    assert_eq!(first.lease_until, T0 + 300);
    assert!(lease(&store, &JobClass::outbound(), T0 + 299).is_none());
    assert_eq!(
        store.next_due(&JobClass::outbound()).expect("next"),
        Some(T0 + 300)
    );
    let second = lease(&store, &JobClass::outbound(), T0 + 300).expect("lease came back");
    assert_ne!(first.token, second.token);

    let policy = RetryPolicy::default();
    let ok = [result(
        0,
        Outcome::Delivered {
            reply: "250".into(),
        },
    )];
    let stale = store.complete(
        &env.id,
        &JobClass::outbound(),
        first.token,
        &ok,
        &policy,
        T0 + 301,
    );
    assert!(
        matches!(stale, Err(StoreError::LeaseLost { .. })),
        "{stale:?}"
    );
    assert!(matches!(
        store.release(&env.id, &JobClass::outbound(), LeaseToken(12345)),
        Err(StoreError::LeaseLost { .. })
    ));
    let done = store
        .complete(
            &env.id,
            &JobClass::outbound(),
            second.token,
            &ok,
            &policy,
            T0 + 301,
        )
        .expect("complete");
    assert!(done.finished);
    // The lease ended with the completion.
    let again = store.complete(
        &env.id,
        &JobClass::outbound(),
        second.token,
        &ok,
        &policy,
        T0 + 302,
    );
    assert!(matches!(again, Err(StoreError::LeaseLost { .. })));
}

#[test]
fn release_gives_the_job_back_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let env = envelope(&[("a@x", JobClass::list())]);
    store.insert(&env, b"m").expect("insert");
    let job = lease(&store, &JobClass::list(), T0).expect("job");
    store
        .release(&env.id, &JobClass::list(), job.token)
        .expect("release");
    let again = lease(&store, &JobClass::list(), T0).expect("offered again");
    assert_eq!(again.recipients[0].attempts, 0);
}

#[test]
fn temporary_failures_back_off_then_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let env = envelope(&[("a@x", JobClass::outbound())]);
    store.insert(&env, b"m").expect("insert");
    let policy = RetryPolicy {
        delay_warning_after: None,
        ..RetryPolicy::default()
    };
    let mut now = T0;
    let mut waits = Vec::new();
    for _ in 0..6 {
        let job = lease(&store, &JobClass::outbound(), now).expect("job due");
        let out = store
            .complete(
                &env.id,
                &JobClass::outbound(),
                job.token,
                &[temp(0)],
                &policy,
                now,
            )
            .expect("complete");
        assert!(!out.finished && out.newly_failed.is_empty());
        let next = store
            .next_due(&JobClass::outbound())
            .expect("next")
            .expect("scheduled");
        waits.push((next - now) / MIN);
        assert!(
            lease(&store, &JobClass::outbound(), next - 1).is_none(),
            "not before its time"
        );
        now = next;
    }
    assert_eq!(waits, vec![5, 10, 20, 40, 60, 60]);
    let stored = store.get(&env.id).expect("get").expect("env");
    assert_eq!(stored.recipients[0].attempts, 6);
    assert_eq!(
        stored.recipients[0]
            .last_reply
            .as_ref()
            .map(Reply::to_string),
        Some("451 try later".to_string())
    );

    // Five days after it was received, a temporary failure is final.
    let late = T0 + 5 * 24 * 3600;
    let job = lease(&store, &JobClass::outbound(), late).expect("job");
    let out = store
        .complete(
            &env.id,
            &JobClass::outbound(),
            job.token,
            &[temp(0)],
            &policy,
            late,
        )
        .expect("complete");
    assert!(out.finished);
    assert_eq!(out.newly_failed.len(), 1);
    assert!(out.newly_failed[0].expired);
    assert_eq!(out.newly_failed[0].reply.to_string(), "451 try later");
    assert_eq!(store.next_due(&JobClass::outbound()).expect("next"), None);
}

#[test]
fn one_delay_warning_while_recipients_are_pending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let env = envelope(&[("a@x", JobClass::outbound()), ("b@x", JobClass::outbound())]);
    store.insert(&env, b"m").expect("insert");
    let policy = RetryPolicy::default();
    let mut warnings = Vec::new();
    let mut now = T0;
    while now < T0 + 6 * 3600 {
        if let Some(job) = lease(&store, &JobClass::outbound(), now) {
            let out = store
                .complete(
                    &env.id,
                    &JobClass::outbound(),
                    job.token,
                    &[temp(0), temp(1)],
                    &policy,
                    now,
                )
                .expect("complete");
            warnings.push((now - T0 >= 4 * 3600, out.delay_warning));
        }
        now += MIN;
    }
    let sent: Vec<_> = warnings.iter().filter(|(_, w)| *w).collect();
    assert_eq!(sent.len(), 1, "{warnings:?}");
    assert!(sent[0].0, "warning only after four hours");
    assert!(
        store
            .get(&env.id)
            .expect("get")
            .expect("env")
            .delay_warning_sent
    );

    // A finished message gets no warning even when it is old.
    let old = envelope(&[("c@x", JobClass::local())]);
    store.insert(&old, b"m").expect("insert");
    let job = lease(&store, &JobClass::local(), T0 + 5 * 3600).expect("job");
    let out = store
        .complete(
            &old.id,
            &JobClass::local(),
            job.token,
            &[result(0, Outcome::Delivered { reply: "ok".into() })],
            &policy,
            T0 + 5 * 3600,
        )
        .expect("complete");
    assert!(out.finished && !out.delay_warning);
}

#[test]
fn retry_and_set_recipients_keep_the_index_right() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let env = envelope(&[("a@x", JobClass::outbound())]);
    store.insert(&env, b"m").expect("insert");
    let job = lease(&store, &JobClass::outbound(), T0).expect("job");
    let policy = RetryPolicy::default();
    store
        .complete(
            &env.id,
            &JobClass::outbound(),
            job.token,
            &[temp(0)],
            &policy,
            T0,
        )
        .expect("complete");
    assert!(lease(&store, &JobClass::outbound(), T0 + 1).is_none());
    store.retry(&env.id, T0 + 1).expect("retry");
    assert!(lease(&store, &JobClass::outbound(), T0 + 1).is_some());

    let mut rcpts = store.get(&env.id).expect("get").expect("env").recipients;
    let mut local = Recipient::new("user@here", JobClass::local());
    local.original = Some("alias@here".into());
    rcpts.push(local);
    let updated = store.set_recipients(&env.id, rcpts).expect("set");
    assert_eq!(updated.recipients.len(), 2);
    // The outbound lease is still held; the new local recipient is due.
    assert!(lease(&store, &JobClass::outbound(), T0 + 2).is_none());
    let job = lease(&store, &JobClass::local(), T0 + 2).expect("local job");
    assert_eq!(job.recipients[0].original.as_deref(), Some("alias@here"));

    // Dropping every outbound recipient ends that class's schedule.
    let only_local = vec![updated.recipients[1].clone()];
    store.set_recipients(&env.id, only_local).expect("set");
    assert_eq!(store.next_due(&JobClass::outbound()).expect("next"), None);
    assert!(matches!(
        store.retry(&QueueId::generate(), T0),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn a_second_open_is_refused_naming_the_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        module: "core-queue-test".into(),
        ..StoreOptions::default()
    };
    let _store = Store::open(dir.path().join("queue"), &options).expect("open");
    match Store::open(dir.path().join("queue"), &options) {
        Err(e @ StoreError::Locked { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!("pid {}", std::process::id())),
                "{text}"
            );
            assert!(text.contains("core-queue-test"), "{text}");
            assert!(text.contains("in use"), "{text}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[tokio::test]
async fn committed_data_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = envelope(&[("a@x", JobClass::outbound()), ("b@x", JobClass::local())]);
    let token = {
        let store = open(dir.path());
        store.insert(&env, b"persistent bytes").expect("insert");
        store
            .state_put("pop-client", "acct1/uidl/42", b"seen")
            .expect("put");
        let job = lease(&store, &JobClass::outbound(), T0).expect("job");
        store.commit().await.expect("commit");
        assert!(store.committer().flushes() >= 1);
        job.token
    };
    let store = open(dir.path());
    assert_eq!(store.get(&env.id).expect("get"), Some(env.clone()));
    assert_eq!(
        store.body(&env.id).expect("body").as_deref(),
        Some(&b"persistent bytes"[..])
    );
    assert_eq!(
        store
            .state_get("pop-client", "acct1/uidl/42")
            .expect("get")
            .as_deref(),
        Some(&b"seen"[..])
    );
    // The lease survived the restart: its holder can still complete.
    assert!(lease(&store, &JobClass::outbound(), T0).is_none());
    assert!(lease(&store, &JobClass::local(), T0).is_some());
    let ok = [result(
        0,
        Outcome::Delivered {
            reply: "250".into(),
        },
    )];
    store
        .complete(
            &env.id,
            &JobClass::outbound(),
            token,
            &ok,
            &RetryPolicy::default(),
            T0,
        )
        .expect("complete");
}

/// Set in the child process of [`committed_data_survives_a_crash`].
const CRASH_DIR_VAR: &str = "QS_QUEUE_CRASH_TEST_DIR";

/// In the child: queue messages, commit, then exit at once, skipping
/// every destructor (and so sled's flush on drop). Does nothing in a
/// normal test run.
#[tokio::test]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_VAR) else {
        return;
    };
    let store = open(Path::new(&dir));
    for i in 0..50 {
        let env = envelope(&[(&format!("r{i}@x"), JobClass::outbound())]);
        store.insert(&env, &[b'm'; 4096]).expect("insert");
    }
    store.state_put("pop-client", "uidl", b"seen").expect("put");
    store.commit().await.expect("commit");
    println!("committed");
    std::process::exit(0);
}

#[test]
fn committed_data_survives_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "store::tests::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_VAR, dir.path())
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("committed"),
        "child failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = open(dir.path());
    assert_eq!(store.stats().expect("stats").messages, 50);
    assert_eq!(
        store
            .due(&JobClass::outbound(), u64::MAX, 100)
            .expect("due")
            .len(),
        50
    );
    assert_eq!(
        store
            .state_get("pop-client", "uidl")
            .expect("get")
            .as_deref(),
        Some(&b"seen"[..])
    );
}

#[test]
fn open_repairs_a_damaged_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = envelope(&[("a@x", JobClass::outbound())]);
    let bodiless = envelope(&[("b@x", JobClass::outbound())]);
    let ghost = QueueId::generate();
    {
        let store = open(dir.path());
        store.insert(&env, b"m").expect("insert");
        // Lose the index entries, and leave a stray one, an orphan body
        // and an envelope whose body never arrived.
        let json = encode_envelope(&bodiless).expect("json");
        store
            .inner
            .envelopes
            .insert(bodiless.id.as_str(), json)
            .expect("insert");
        store.inner.due.clear().expect("clear");
        store.inner.slots.clear().expect("clear");
        store
            .inner
            .due
            .insert(due_key(&JobClass::local(), T0, &ghost), &[])
            .expect("insert");
        store
            .inner
            .bodies
            .insert(ghost.as_str(), &b"orphan"[..])
            .expect("insert");
        store.inner.db.flush().expect("flush");
    }
    let store = open(dir.path());
    assert!(store.get(&bodiless.id).expect("get").is_none());
    assert_eq!(
        store.due(&JobClass::outbound(), T0, 10).expect("due"),
        vec![(T0, env.id.clone())]
    );
    assert!(
        store
            .due(&JobClass::local(), u64::MAX, 10)
            .expect("due")
            .is_empty()
    );
    assert!(store.body(&ghost).expect("body").is_none());
    assert!(lease(&store, &JobClass::outbound(), T0).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_flushes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let env = envelope(&[(&format!("r{i}@x"), JobClass::local())]);
                store.insert(&env, &[b'x'; 4096]).expect("insert");
                store.commit().await.expect("commit");
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("join");
    }
    let flushes = store.committer().flushes();
    assert!(
        (1..32).contains(&flushes),
        "{flushes} flushes for 32 commits"
    );
    assert_eq!(store.stats().expect("stats").messages, 32);
}

#[test]
fn state_area_get_put_delete_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for k in ["a/1", "a/2", "a/3", "b/1"] {
        store.state_put("pop-client", k, k.as_bytes()).expect("put");
    }
    store.state_put("other", "a/9", b"x").expect("put");
    assert_eq!(
        store
            .state_get("pop-client", "a/2")
            .expect("get")
            .as_deref(),
        Some(&b"a/2"[..])
    );
    assert_eq!(store.state_get("pop-client", "a/9").expect("get"), None);
    let keys = |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(
            store
                .state_scan("pop-client", "a/", None, 100)
                .expect("scan")
        ),
        ["a/1", "a/2", "a/3"]
    );
    assert_eq!(
        keys(store.state_scan("pop-client", "a/", None, 2).expect("scan")),
        ["a/1", "a/2"]
    );
    assert_eq!(
        keys(
            store
                .state_scan("pop-client", "a/", Some("a/2"), 100)
                .expect("scan")
        ),
        ["a/3"]
    );
    assert_eq!(
        keys(store.state_scan("pop-client", "", None, 100).expect("scan")).len(),
        4
    );
    assert!(store.state_delete("pop-client", "a/1").expect("delete"));
    assert!(!store.state_delete("pop-client", "a/1").expect("delete"));
    assert_eq!(
        keys(
            store
                .state_scan("pop-client", "a/", None, 100)
                .expect("scan")
        ),
        ["a/2", "a/3"]
    );
    assert!(matches!(
        store.state_put("", "k", b"v"),
        Err(StoreError::InvalidKey(_))
    ));
    assert!(matches!(
        store.state_put("a\0b", "k", b"v"),
        Err(StoreError::InvalidKey(_))
    ));
    assert!(matches!(
        store.state_get("ns", &"k".repeat(2000)),
        Err(StoreError::InvalidKey(_))
    ));
}

#[test]
fn list_and_stats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let first = envelope(&[("a@x", JobClass::local()), ("b@y", JobClass::outbound())]);
    let second = envelope(&[("c@y", JobClass::outbound())]);
    store.insert(&first, b"12345").expect("insert");
    store.insert(&second, b"12345").expect("insert");
    let list = store.list(10).expect("list");
    assert_eq!(
        list.iter().map(|s| &s.id).collect::<Vec<_>>(),
        [&first.id, &second.id]
    );
    assert_eq!(
        (list[0].recipients, list[0].pending, list[0].next_attempt),
        (2, 2, Some(T0))
    );
    assert_eq!(list[0].age(T0 + 60), 60);
    assert_eq!(store.list(1).expect("list").len(), 1);
    store.inner.db.flush().expect("flush");
    let stats = store.stats().expect("stats");
    assert_eq!(stats.messages, 2);
    assert_eq!(stats.bytes, 10);
    assert_eq!(stats.pending.get("outbound"), Some(&2));
    assert_eq!(stats.pending.get("local"), Some(&1));
    assert!(stats.disk_bytes > 0);
    assert!(matches!(
        store.insert(&envelope(&[]), b""),
        Err(StoreError::InvalidEnvelope(_))
    ));
}

#[test]
fn an_envelope_stored_when_replies_were_strings_loads_and_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = envelope(&[
        ("a@far", JobClass::outbound()),
        ("b@far", JobClass::outbound()),
    ]);
    // The record as the queue wrote it before replies had a type.
    let old = format!(
        concat!(
            r#"{{"id":"{}","sender":"sender@example.org","recipients":["#,
            r#"{{"address":"a@far","original":null,"class":"outbound","status":"pending","attempts":1,"#,
            r#""last_reply":"451 4.3.0 try later (mx.far[192.0.2.1]:25)","next_attempt":{}}},"#,
            r#"{{"address":"b@far","original":"info@x","class":"outbound","status":"pending","attempts":1,"#,
            r#""last_reply":"4.4.1 connect to mx.far[192.0.2.1]:25: Connection refused","next_attempt":{}}}],"#,
            r#""origin":{{"module":"test","peer":null,"auth_user":null}},"#,
            r#""received_at":{},"size":5,"delay_warning_sent":false}}"#
        ),
        env.id, T0, T0, T0
    );
    {
        let store = open(dir.path());
        store.insert(&env, b"hello").expect("insert");
        store
            .inner
            .envelopes
            .insert(env.id.as_str(), old.as_bytes())
            .expect("insert");
        store.inner.db.flush().expect("flush");
    }
    let store = open(dir.path());
    let loaded = store.get(&env.id).expect("get").expect("env");
    let reply = loaded.recipients[0].last_reply.clone().expect("reply");
    assert_eq!(
        (reply.code(), reply.text().as_str()),
        (Some(451), "try later (mx.far[192.0.2.1]:25)")
    );
    assert_eq!(loaded.recipients[1].original.as_deref(), Some("info@x"));
    assert_eq!(
        serde_json::to_string(&loaded).expect("json"),
        old,
        "written again it is the same record"
    );
    let job = lease(&store, &JobClass::outbound(), T0).expect("job");
    let failed = Outcome::PermanentFailure {
        reply: Reply::new(550, "5.1.1", "<b@far>: no such user"),
    };
    let out = store
        .complete(
            &job.id,
            &job.class,
            job.token,
            &[temp(0), result(1, failed)],
            &RetryPolicy::default(),
            T0,
        )
        .expect("complete");
    assert_eq!(out.newly_failed.len(), 1);
    assert_eq!(
        out.newly_failed[0].reply.to_string(),
        "550 5.1.1 <b@far>: no such user"
    );
}
