//! core-queue end to end: the real daemon, the real queue client, the real
//! Maildir. Routing, retries, bounces, leases, the maildrop folder, and
//! durability under SIGKILL.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use integration_tests::{Daemon, Installation};
use qs_queue::{JobClass, Origin, Outcome, RecipientResult};

const WAIT: Duration = Duration::from_secs(20);

fn origin() -> Origin {
    Origin {
        module: "test".into(),
        peer: None,
        auth_user: None,
    }
}

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: sender@example.test\r\nTo: someone@example.test\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\r\nHello.\r\n.leading dot\r\n"
    )
    .into_bytes()
}

/// An installation with users and aliases, and a running core-queue.
fn setup() -> (Installation, Daemon) {
    let inst = Installation::init();
    inst.set("queue", "first_retry_secs", "1");
    inst.set("queue", "max_retry_interval_secs", "1");
    inst.set("queue", "maildrop_scan_secs", "1");
    inst.add_users(&[
        "alice@example.test",
        "bob@example.test",
        "carol@example.test",
        "dave@example.test",
        "sender@example.test",
    ]);
    inst.ok(&[
        "alias",
        "add",
        "team@example.test",
        "alice@example.test",
        "bob@example.test",
    ]);
    inst.ok(&["alias", "add", "loop1@example.test", "alice@example.test"]);
    inst.ok(&["alias", "add", "loop2@example.test", "loop1@example.test"]);
    // Close the loop: loop1 → loop2 → loop1.
    let dir =
        qs_directory::Directory::open(inst.data_dir().join("directory.json"), Default::default())
            .unwrap();
    dir.set_alias_targets("loop1@example.test", ["loop2@example.test"])
        .unwrap();
    inst.ok(&[
        "user",
        "forward",
        "carol@example.test",
        "alice@example.test",
    ]);
    inst.ok(&[
        "user",
        "forward",
        "dave@example.test",
        "bob@example.test",
        "--keep-copy",
    ]);
    let daemon = inst.start("core-queue");
    (inst, daemon)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn enqueue(inst: &Installation, sender: &str, rcpts: &[&str], body: &[u8]) -> String {
    let client = inst.client(WAIT);
    let rcpts: Vec<String> = rcpts.iter().map(|s| s.to_string()).collect();
    runtime()
        .block_on(client.enqueue(sender, rcpts, origin(), body))
        .unwrap()
        .to_string()
}

#[test]
fn local_delivery_adds_trace_headers_and_keeps_the_body_byte_identical() {
    let (inst, daemon) = setup();
    let body = message("local");
    let id = enqueue(&inst, "someone@far.example", &["Alice@Example.test"], &body);
    let mail = inst.wait_for_mail("alice@example.test", 1, WAIT);
    let mut expected =
        b"Return-Path: <someone@far.example>\r\nDelivered-To: alice@example.test\r\n".to_vec();
    expected.extend_from_slice(&body);
    assert_eq!(mail[0], expected, "log:\n{}", daemon.log());
    // Every log line about the message carries its queue id.
    daemon.wait_for_log_line(WAIT, |l| l.contains(&id) && l.contains("delivered"));
}

#[test]
fn aliases_and_forwards_fan_out_once_each() {
    let (inst, _daemon) = setup();
    enqueue(
        &inst,
        "someone@far.example",
        &[
            "team@example.test",
            "carol@example.test",
            "dave@example.test",
            "alice@example.test",
        ],
        &message("fan-out"),
    );
    // alice: via team and via carol's forward and directly — one copy.
    // bob: via team and via dave's forward — one copy. carol: none. dave: a copy.
    inst.wait_for_mail("alice@example.test", 1, WAIT);
    inst.wait_for_mail("bob@example.test", 1, WAIT);
    inst.wait_for_mail("dave@example.test", 1, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inst.inbox("alice@example.test").len(), 1);
    assert_eq!(inst.inbox("bob@example.test").len(), 1);
    assert_eq!(inst.inbox("dave@example.test").len(), 1);
    assert_eq!(
        inst.inbox("carol@example.test").len(),
        0,
        "carol forwards without a copy"
    );
}

#[test]
fn unknown_users_and_alias_loops_bounce_to_the_sender_with_a_copy_to_the_postmaster() {
    let (inst, daemon) = setup();
    enqueue(
        &inst,
        "sender@example.test",
        &[
            "nobody@example.test",
            "loop1@example.test",
            "alice@example.test",
        ],
        &message("bounce"),
    );
    inst.wait_for_mail("alice@example.test", 1, WAIT);
    let dsn = inst.wait_for_mail("sender@example.test", 1, WAIT);
    let text = String::from_utf8_lossy(&dsn[0]);
    assert!(text.contains("Return-Path: <>"), "{text}");
    assert!(text.contains("report-type=delivery-status"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; nobody@example.test"),
        "{text}"
    );
    assert!(text.contains("550 5.1.1"), "{text}");
    assert!(text.contains("alias loop"), "{text}");
    assert!(text.contains("Subject: bounce"), "{text}");
    let copy = inst.wait_for_mail("postmaster@example.test", 1, WAIT);
    assert!(String::from_utf8_lossy(&copy[0]).contains("nobody@example.test"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        inst.inbox("sender@example.test").len(),
        1,
        "{}",
        daemon.log()
    );
}

#[test]
fn a_message_from_the_null_sender_never_bounces_to_anyone_but_the_postmaster() {
    let (inst, _daemon) = setup();
    enqueue(&inst, "", &["nobody@example.test"], &message("null"));
    let copy = inst.wait_for_mail("postmaster@example.test", 1, WAIT);
    assert!(String::from_utf8_lossy(&copy[0]).contains("nobody@example.test"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inst.inbox("postmaster@example.test").len(), 1);
    // And the report itself is from <>, so it cannot loop.
    assert!(String::from_utf8_lossy(&copy[0]).starts_with("Return-Path: <>"));
}

#[test]
fn outbound_work_is_retried_after_a_temporary_failure_then_bounced() {
    let (inst, _daemon) = setup();
    let id = enqueue(
        &inst,
        "sender@example.test",
        &["friend@far.example"],
        &message("outbound"),
    );
    let rt = runtime();
    let client = inst.client(WAIT);
    let outbound = JobClass::outbound();
    let job = rt
        .block_on(client.lease(&outbound, "test-relay", Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    assert_eq!(job.id.to_string(), id);
    assert_eq!(job.recipients[0].address, "friend@far.example");
    assert_eq!(job.body, message("outbound"));
    rt.block_on(client.complete(
        &job.id,
        &outbound,
        job.token,
        vec![RecipientResult {
            index: job.recipients[0].index,
            outcome: Outcome::TemporaryFailure {
                reply: "451 4.7.1 try later".into(),
            },
        }],
    ))
    .unwrap();
    // Not offered again at once: it waits for its retry time (1 s here).
    assert!(
        rt.block_on(client.lease(&outbound, "test-relay", Duration::from_secs(30)))
            .unwrap()
            .is_none()
    );
    std::thread::sleep(Duration::from_millis(1200));
    let again = rt
        .block_on(client.lease(&outbound, "test-relay", Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    assert_eq!(again.id, job.id);
    assert_eq!(again.recipients[0].attempts, 1);
    rt.block_on(client.complete(
        &again.id,
        &outbound,
        again.token,
        vec![RecipientResult {
            index: again.recipients[0].index,
            outcome: Outcome::PermanentFailure {
                reply: "550 5.1.1 <friend@far.example>: unknown".into(),
            },
        }],
    ))
    .unwrap();
    let dsn = inst.wait_for_mail("sender@example.test", 1, WAIT);
    let text = String::from_utf8_lossy(&dsn[0]);
    assert!(
        text.contains("Final-Recipient: rfc822; friend@far.example"),
        "{text}"
    );
    assert!(
        text.contains("Diagnostic-Code: smtp; 550 5.1.1 <friend@far.example>: unknown"),
        "{text}"
    );
    inst.wait_for_mail("postmaster@example.test", 1, WAIT);
    // The original is gone from the queue once settled.
    let listed = rt.block_on(client.list(100)).unwrap();
    assert!(listed.iter().all(|s| s.id.to_string() != id), "{listed:?}");
}

#[test]
fn an_expired_lease_comes_back_to_another_worker() {
    let (inst, _daemon) = setup();
    let id = enqueue(
        &inst,
        "sender@example.test",
        &["friend@far.example"],
        &message("lease"),
    );
    let rt = runtime();
    let client = inst.client(WAIT);
    let outbound = JobClass::outbound();
    let first = rt
        .block_on(client.lease(&outbound, "crashing-worker", Duration::from_secs(1)))
        .unwrap()
        .unwrap();
    assert_eq!(first.id.to_string(), id);
    assert!(
        rt.block_on(client.lease(&outbound, "other", Duration::from_secs(30)))
            .unwrap()
            .is_none()
    );
    std::thread::sleep(Duration::from_millis(2100));
    let second = rt
        .block_on(client.lease(&outbound, "other", Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    assert_eq!(second.id, first.id);
    // The crashed worker's token no longer works.
    let stale = rt.block_on(client.complete(
        &first.id,
        &outbound,
        first.token,
        vec![RecipientResult {
            index: 0,
            outcome: Outcome::Delivered {
                reply: "250 ok".into(),
            },
        }],
    ));
    assert!(stale.is_err());
}

#[test]
fn the_maildrop_folder_queues_good_files_and_sets_bad_ones_aside() {
    let (inst, daemon) = setup();
    let drop = inst.data_dir().join("maildrop");
    std::fs::write(
        drop.join("good.eml"),
        "From: app@example.test\nTo: alice@example.test\nSubject: from the drop folder\n\nhi\n",
    )
    .unwrap();
    std::fs::write(
        drop.join("bcc.eml"),
        "From: app@example.test\nBcc: bob@example.test\nSubject: blind\n\nhi\n",
    )
    .unwrap();
    std::fs::write(drop.join("broken.eml"), "this is not a message\n").unwrap();
    std::fs::write(
        drop.join("pending.eml.tmp"),
        "From: a@b\nTo: alice@example.test\n\nx\n",
    )
    .unwrap();
    std::fs::write(
        drop.join(".hidden.eml"),
        "From: a@b\nTo: alice@example.test\n\nx\n",
    )
    .unwrap();

    let alice = inst.wait_for_mail("alice@example.test", 1, WAIT);
    let text = String::from_utf8_lossy(&alice[0]);
    assert!(text.contains("Subject: from the drop folder\r\n"), "{text}");
    assert!(text.contains("Return-Path: <app@example.test>"), "{text}");
    let bob = inst.wait_for_mail("bob@example.test", 1, WAIT);
    assert!(
        !String::from_utf8_lossy(&bob[0]).contains("Bcc"),
        "Bcc must be removed"
    );

    let start = std::time::Instant::now();
    while drop.join("broken.eml").exists() && start.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!drop.join("good.eml").exists());
    assert!(!drop.join("bcc.eml").exists());
    assert!(drop.join("failed/broken.eml").exists(), "{}", daemon.log());
    let reason = std::fs::read_to_string(drop.join("failed/broken.eml.reason")).unwrap();
    assert!(reason.contains("no header"), "{reason}");
    assert!(
        drop.join("pending.eml.tmp").exists(),
        "in-progress files are left alone"
    );
    assert!(
        drop.join(".hidden.eml").exists(),
        "hidden files are left alone"
    );
    assert_eq!(inst.inbox("alice@example.test").len(), 1);
}

#[test]
fn killing_core_queue_during_maildrop_pickup_loses_no_file() {
    let inst = Installation::init();
    inst.set("queue", "maildrop_scan_secs", "1");
    inst.add_users(&["alice@example.test"]);
    let drop = inst.data_dir().join("maildrop");
    std::fs::create_dir_all(&drop).unwrap();
    let count = 60;
    for i in 0..count {
        std::fs::write(
            drop.join(format!("m{i:03}.eml")),
            format!(
                "From: app@example.test\nTo: alice@example.test\nSubject: drop {i}\n\nbody {i}\n"
            ),
        )
        .unwrap();
    }
    let mut daemon = inst.start("core-queue");
    std::thread::sleep(Duration::from_millis(150));
    daemon.kill9();
    daemon.restart();
    // Every file ends up delivered (possibly twice, never zero times).
    let start = std::time::Instant::now();
    loop {
        let inbox = inst.inbox("alice@example.test");
        let mut missing = Vec::new();
        for i in 0..count {
            let needle = format!("Subject: drop {i}\r\n");
            if !inbox
                .iter()
                .any(|m| String::from_utf8_lossy(m).contains(&needle))
            {
                missing.push(i);
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "never delivered: {missing:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        std::fs::read_dir(&drop)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .count(),
        0,
        "every file is taken"
    );
}

#[test]
fn a_second_core_queue_is_refused_with_the_owner_named() {
    let (inst, _daemon) = setup();
    // Wait until the first one serves.
    runtime().block_on(inst.client(WAIT).ping()).unwrap();
    let mut second = inst.start("core-queue");
    let status = second
        .wait_exit(WAIT)
        .expect("the second instance must exit");
    assert!(!status.success());
    let log = second.log();
    assert!(log.contains("in use"), "{log}");
}

#[test]
fn every_acknowledged_enqueue_is_delivered_exactly_once_despite_sigkill() {
    const KILLS: usize = 6;
    let inst = Installation::init();
    inst.add_users(&["alice@example.test"]);
    let daemon = Arc::new(std::sync::Mutex::new(inst.start("core-queue")));
    let stop = Arc::new(AtomicBool::new(false));

    // The killer: SIGKILL at random moments, restart at once.
    let killer = {
        let daemon = daemon.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            for _ in 0..KILLS {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                std::thread::sleep(Duration::from_millis(100 + state % 300));
                daemon.lock().unwrap().restart();
            }
            // The clients stop once every kill has happened.
            stop.store(true, Ordering::Relaxed);
            KILLS
        })
    };

    let rt = runtime();
    let acknowledged: Vec<String> = rt.block_on(async {
        let client = Arc::new(inst.client(Duration::from_secs(30)));
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let client = client.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let tag = format!("w{worker}-m{i}");
                    let body = format!("From: a@far.example\r\nSubject: {tag}\r\nMessage-ID: <{tag}@test>\r\n\r\n{tag}\r\n");
                    if client
                        .enqueue("a@far.example", vec!["alice@example.test".to_string()], origin(), body.as_bytes())
                        .await
                        .is_ok()
                    {
                        ok.push(tag);
                    }
                }
                ok
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let kills = killer.join().unwrap();
    assert!(!acknowledged.is_empty());

    // Let the last incarnation deliver everything.
    let start = std::time::Instant::now();
    let counts = loop {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for m in inst.inbox("alice@example.test") {
            let text = String::from_utf8_lossy(&m).into_owned();
            if let Some(tag) = text.lines().find_map(|l| l.strip_prefix("Subject: ")) {
                *counts.entry(tag.trim().to_string()).or_default() += 1;
            }
        }
        if acknowledged.iter().all(|t| counts.contains_key(t))
            || start.elapsed() > Duration::from_secs(60)
        {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for tag in &acknowledged {
        assert_eq!(
            counts.get(tag).copied().unwrap_or(0),
            1,
            "{tag} delivered {:?} times",
            counts.get(tag)
        );
    }
    eprintln!(
        "{} acknowledged enqueues, {kills} kills, all delivered exactly once",
        acknowledged.len()
    );
}

#[test]
fn a_delay_warning_is_sent_once_while_mail_waits() {
    let inst = Installation::init();
    inst.set("queue", "first_retry_secs", "1");
    inst.set("queue", "max_retry_interval_secs", "1");
    inst.set("queue", "delay_warning_secs", "1");
    inst.add_users(&["sender@example.test"]);
    let _daemon = inst.start("core-queue");
    enqueue(
        &inst,
        "sender@example.test",
        &["friend@far.example"],
        &message("slow"),
    );
    let rt = runtime();
    let client = inst.client(WAIT);
    let outbound = JobClass::outbound();
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(1200));
        let job = rt
            .block_on(client.lease(&outbound, "relay", Duration::from_secs(30)))
            .unwrap()
            .unwrap_or_else(|| panic!("no job in round {round}"));
        rt.block_on(client.complete(
            &job.id,
            &outbound,
            job.token,
            vec![RecipientResult {
                index: job.recipients[0].index,
                outcome: Outcome::TemporaryFailure {
                    reply: "421 4.4.2 busy".into(),
                },
            }],
        ))
        .unwrap();
    }
    let warning = inst.wait_for_mail("sender@example.test", 1, WAIT);
    let text = String::from_utf8_lossy(&warning[0]);
    assert!(text.contains("Subject: Delayed Mail"), "{text}");
    assert!(text.contains("Action: delayed"), "{text}");
    assert!(text.contains("421 4.4.2 busy"), "{text}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        inst.inbox("sender@example.test").len(),
        1,
        "one warning only"
    );
    // The postmaster gets no copy of a mere warning.
    assert_eq!(inst.inbox("postmaster@example.test").len(), 0);
}

#[test]
fn mail_loops_are_stopped_and_bounced() {
    let (inst, _daemon) = setup();
    // Already delivered to alice once: delivering it to her again is a loop.
    let looped = b"Delivered-To: alice@example.test\r\nFrom: sender@example.test\r\nSubject: looped\r\n\r\nx\r\n";
    enqueue(
        &inst,
        "sender@example.test",
        &["alice@example.test"],
        looped,
    );
    // More than 100 Received fields is a loop too.
    let mut hops = String::new();
    for i in 0..101 {
        hops.push_str(&format!(
            "Received: from hop{i}.example by hop{}.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n",
            i + 1
        ));
    }
    let hopped = format!("{hops}From: sender@example.test\r\nSubject: hopped\r\n\r\nx\r\n");
    enqueue(
        &inst,
        "sender@example.test",
        &["bob@example.test"],
        hopped.as_bytes(),
    );

    let reports = inst.wait_for_mail("sender@example.test", 2, WAIT);
    let all: String = reports
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    assert!(
        all.contains("mail loop (already delivered to this address)"),
        "{all}"
    );
    assert!(
        all.contains("too many Received header fields (101)"),
        "{all}"
    );
    assert!(inst.inbox("alice@example.test").is_empty());
    assert!(inst.inbox("bob@example.test").is_empty());
}

#[test]
fn loops_of_unauthenticated_smtp_mail_are_reported_to_the_postmaster_alone() {
    let (inst, daemon) = setup();
    // What smtp-server's port-25 role hands over: no authenticated user, so
    // the sender address is only the client's word.
    let port_25 = Origin {
        module: Origin::SMTP_SERVER.into(),
        peer: Some("192.0.2.7".into()),
        auth_user: None,
    };
    let looped = b"Delivered-To: alice@example.test\r\nSubject: looped\r\n\r\nattacker text\r\n";
    let client = inst.client(WAIT);
    runtime()
        .block_on(client.enqueue(
            "sender@example.test",
            vec!["alice@example.test".into(), "loop1@example.test".into()],
            port_25,
            looped,
        ))
        .unwrap();
    // The Delivered-To loop at local delivery, and the alias loop at routing.
    let reports = inst.wait_for_mail("postmaster@example.test", 2, WAIT);
    let all: String = reports
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    assert!(
        all.contains("mail loop (already delivered to this address)"),
        "{all}"
    );
    assert!(all.contains("alias loop"), "{all}");
    assert!(!all.contains("attacker text"), "{all}");
    // Once the queue is empty, no report went to the sender.
    let start = std::time::Instant::now();
    while !runtime().block_on(client.list(10)).unwrap().is_empty() {
        assert!(start.elapsed() < WAIT, "the queue never emptied");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        inst.inbox("sender@example.test").is_empty(),
        "{}",
        daemon.log()
    );
    assert_eq!(inst.inbox("postmaster@example.test").len(), 2);
    assert!(
        daemon.log().contains("no report to the sender"),
        "{}",
        daemon.log()
    );
}
