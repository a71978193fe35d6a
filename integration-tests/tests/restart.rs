//! Restart without downtime: under `qsctl up`, while clients keep sending
//! SMTP, reading over IMAP (one of them in IDLE) and over POP3, every module is
//! restarted five times with `qsctl restart`. No client operation may fail (an
//! IDLE client that gets BYE and reconnects is fine), no message may be lost or
//! doubled, and no module may log an error.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use integration_tests::{Daemon, Installation};
use lettre::address::Envelope;
use lettre::transport::smtp::client::Tls;
use lettre::{SmtpTransport, Transport};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(60);
const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";
const MODULES: &[&str] = &[
    "core-queue",
    "smtp-server",
    "smtp-relay",
    "pop-client",
    "pop3-server",
    "imap-server",
    "list-server",
];

/// What the clients did.
#[derive(Default)]
struct Tally {
    sent_alice: AtomicU64,
    sent_bob: AtomicU64,
    imap_reads: AtomicU64,
    pop3_reads: AtomicU64,
    idle_reconnects: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        eprintln!("client failure: {what}");
        self.failures.lock().unwrap().push(what);
    }
}

fn send_one(smtp: SocketAddr, to: &str, n: u64) -> Result<(), String> {
    // One connection per message, as an MTA that is not pipelining would.
    let transport = SmtpTransport::builder_dangerous(smtp.ip().to_string())
        .port(smtp.port())
        .tls(Tls::None)
        .timeout(Some(WAIT))
        .build();
    let envelope = Envelope::new(
        Some("sender@far.example".parse().unwrap()),
        vec![to.parse().unwrap()],
    )
    .unwrap();
    let body = format!(
        "From: sender@far.example\r\nTo: {to}\r\nSubject: load {n}\r\nMessage-ID: <load-{n}@far.example>\r\n\r\nmessage {n}\r\n"
    );
    transport
        .send_raw(&envelope, body.as_bytes())
        .map(|_| ())
        .map_err(|e| format!("SMTP message {n} to {to}: {e}"))
}

async fn imap_login(
    addr: SocketAddr,
    user: &str,
) -> Result<async_imap::Session<tokio::net::TcpStream>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = async_imap::Client::new(stream);
    client
        .read_response()
        .await
        .map_err(|e| format!("greeting: {e}"))?
        .ok_or("no greeting")?;
    client
        .login(user, "pw")
        .await
        .map_err(|(e, _)| format!("LOGIN: {e}"))
}

/// Polls like a mail client that checks now and then: log in, select, fetch the
/// flags and sizes, log out.
async fn imap_read_once(addr: SocketAddr) -> Result<(), String> {
    let mut session = imap_login(addr, ALICE).await?;
    let mailbox = session
        .select("INBOX")
        .await
        .map_err(|e| format!("SELECT: {e}"))?;
    if mailbox.exists > 0 {
        let fetched: Vec<_> = session
            .fetch("1:*", "(FLAGS RFC822.SIZE)")
            .await
            .map_err(|e| format!("FETCH: {e}"))?
            .try_collect()
            .await
            .map_err(|e| format!("FETCH: {e}"))?;
        if fetched.len() as u32 != mailbox.exists {
            return Err(format!(
                "FETCH gave {} of {}",
                fetched.len(),
                mailbox.exists
            ));
        }
    }
    session.logout().await.map_err(|e| format!("LOGOUT: {e}"))
}

/// Stays in IDLE; when the server says BYE (its process hands over), logs in
/// again. Returns when `stop` is set.
async fn imap_idler(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    while !stop.load(Ordering::SeqCst) {
        let mut session = match imap_login(addr, BOB).await {
            Ok(s) => s,
            Err(e) => {
                tally.fail(format!("IDLE client: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if let Err(e) = session.select("INBOX").await {
            tally.fail(format!("IDLE client: SELECT: {e}"));
            continue;
        }
        loop {
            let mut idle = session.idle();
            if idle.init().await.is_err() {
                // BYE between two IDLE commands.
                tally.idle_reconnects.fetch_add(1, Ordering::SeqCst);
                break;
            }
            let (wait, _interrupt) = idle.wait_with_timeout(Duration::from_secs(2));
            let outcome = wait.await;
            let done = idle.done().await;
            match (outcome, done) {
                (Ok(_), Ok(s)) if !stop.load(Ordering::SeqCst) => session = s,
                (Ok(_), Ok(mut s)) => {
                    let _ = s.logout().await;
                    return;
                }
                // The server ended the session (BYE) while we idled.
                _ => {
                    tally.idle_reconnects.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
        }
    }
}

/// A POP3 session that counts the mailbox and leaves it as it is.
async fn pop3_read_once(addr: SocketAddr) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut expect_ok = async |what: &str| -> Result<String, String> {
        let line = lines
            .next_line()
            .await
            .map_err(|e| format!("{what}: {e}"))?
            .ok_or(format!("{what}: connection closed"))?;
        if line.starts_with("+OK") {
            Ok(line)
        } else {
            Err(format!("{what}: {line}"))
        }
    };
    expect_ok("greeting").await?;
    for (command, what) in [
        (format!("USER {BOB}\r\n"), "USER"),
        ("PASS pw\r\n".to_string(), "PASS"),
        ("STAT\r\n".to_string(), "STAT"),
        ("QUIT\r\n".to_string(), "QUIT"),
    ] {
        write
            .write_all(command.as_bytes())
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        expect_ok(what).await?;
    }
    Ok(())
}

fn count_mail(inst: &Installation, address: &str) -> usize {
    inst.inbox(address).len()
}

#[test]
fn every_module_restarts_five_times_under_load_without_a_failed_operation() {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.add_users(&[ALICE, BOB]);
    inst.set("imap_server", "allow_plaintext_auth", "true");
    inst.set("pop3_server", "allow_plaintext_auth", "true");
    inst.set("restart", "grace_secs", "5");
    let mut args = vec!["--config", inst.config.to_str().unwrap(), "up"];
    args.extend(MODULES);
    let mut up = Daemon::start_with_args("qsctl", &args, inst.dir.path().join("up.log"));
    let smtp = inst.listening("smtp-server", "smtp_server.listen")[0];
    let imap = inst.listening("imap-server", "imap_server.listen")[0];
    let pop3 = inst.listening("pop3-server", "pop3_server.listen")[0];
    for module in MODULES {
        let start = Instant::now();
        while qs_service::runfile::read_pid(&inst.data_dir(), module).is_none() {
            assert!(
                start.elapsed() < WAIT,
                "{module} did not start:\n{}",
                up.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut clients = Vec::new();
    for sender in 0..2u64 {
        let (stop, tally) = (stop.clone(), tally.clone());
        clients.push(runtime.spawn_blocking(move || {
            let mut n = sender * 1_000_000;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let (to, counter) = if n % 2 == 0 {
                    (ALICE, &tally.sent_alice)
                } else {
                    (BOB, &tally.sent_bob)
                };
                match send_one(smtp, to, n) {
                    Ok(()) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => tally.fail(e),
                }
            }
        }));
    }
    {
        let (stop, tally) = (stop.clone(), tally.clone());
        clients.push(runtime.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match imap_read_once(imap).await {
                    Ok(()) => {
                        tally.imap_reads.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => tally.fail(format!("IMAP reader: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    {
        let (stop, tally) = (stop.clone(), tally.clone());
        clients.push(runtime.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match pop3_read_once(pop3).await {
                    Ok(()) => {
                        tally.pop3_reads.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => tally.fail(format!("POP3 reader: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    clients.push(runtime.spawn(imap_idler(imap, stop.clone(), tally.clone())));

    // Load first, then the restarts.
    std::thread::sleep(Duration::from_secs(1));
    for module in MODULES {
        for round in 1..=5 {
            let started = Instant::now();
            let out = inst.qsctl(&["restart", module]);
            let said = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "qsctl restart {module} (round {round}): {}\n{}",
                integration_tests::text(&out),
                up.log()
            );
            println!(
                "restart {module} #{round}: {} ms ({})",
                started.elapsed().as_millis(),
                said.trim()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    runtime.block_on(async {
        for client in clients {
            tokio::time::timeout(WAIT, client).await.unwrap().unwrap();
        }
    });

    let alice = tally.sent_alice.load(Ordering::SeqCst) as usize;
    let bob = tally.sent_bob.load(Ordering::SeqCst) as usize;
    println!(
        "sent {alice} to alice and {bob} to bob; {} IMAP and {} POP3 reads; the IDLE client reconnected {} times",
        tally.imap_reads.load(Ordering::SeqCst),
        tally.pop3_reads.load(Ordering::SeqCst),
        tally.idle_reconnects.load(Ordering::SeqCst)
    );
    let failures = tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "failed client operations: {failures:#?}\n{}",
        up.log()
    );
    assert!(alice > 0 && bob > 0);
    assert!(tally.imap_reads.load(Ordering::SeqCst) > 0);
    assert!(tally.pop3_reads.load(Ordering::SeqCst) > 0);
    // Every accepted message arrives, once.
    inst.wait_for_mail(ALICE, alice, WAIT);
    inst.wait_for_mail(BOB, bob, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count_mail(&inst, ALICE), alice, "alice's mail");
    assert_eq!(count_mail(&inst, BOB), bob, "bob's mail");

    // Each restart was a hand-over, not a crash, and nothing logged an error.
    let log = up.log();
    assert!(!log.contains("exited ("), "a module crashed:\n{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "errors logged: {errors:#?}");
    assert!(
        up.terminate(WAIT).is_some_and(|s| s.success()),
        "{}",
        up.log()
    );
    // up stopped every process, old and new.
    for module in MODULES {
        if let Some(pid) = qs_service::runfile::read_pid(&inst.data_dir(), module) {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "{module} (pid {pid}) still runs"
            );
        }
    }
}

#[test]
fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    let mut smtp = inst.start("smtp-server");
    let addr = inst.listening("smtp-server", "smtp_server.listen")[0];
    let before = qs_service::runfile::read_instance(&inst.data_dir(), "smtp-server").unwrap();

    // A config the new process refuses (a bad value).
    inst.set("smtp_server", "max_recipients", "\"many\"");
    let refused = inst.fails(&["restart", "smtp-server"]);
    assert!(refused.contains("smtp_server.max_recipients"), "{refused}");

    // Signalled all the same (as systemctl reload would), the module stays up.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(smtp.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let start = Instant::now();
    while !smtp.log().contains("restart failed") {
        assert!(start.elapsed() < WAIT, "{}", smtp.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        smtp.log().contains("smtp_server.max_recipients"),
        "{}",
        smtp.log()
    );
    assert_eq!(
        qs_service::runfile::read_instance(&inst.data_dir(), "smtp-server"),
        Some(before)
    );
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut greeting = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut greeting).unwrap();
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(smtp.terminate(WAIT).is_some_and(|s| s.success()));
}

/// Whether process `pid` is gone (or only a zombie nobody has reaped yet).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn a_stop_while_the_new_process_starts_abandons_the_restart_at_once() {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("restart", "ready_timeout_secs", "120");
    // The module runs from a copy of its program, so that the program can
    // be replaced by one that never becomes ready.
    let bin = inst.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let program = bin.join("pop3-server");
    std::fs::copy(integration_tests::binary("pop3-server"), &program).unwrap();
    let log = std::fs::File::create(inst.dir.path().join("pop3-server.log")).unwrap();
    let mut daemon = std::process::Command::new(&program)
        .args(["--config", &inst.config.to_string_lossy()])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    inst.listening("pop3-server", "pop3_server.listen");

    let marker = inst.dir.path().join("successor.pid");
    let stuck = bin.join("stuck");
    std::fs::write(
        &stuck,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 120\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &stuck,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    std::fs::rename(&stuck, &program).unwrap();

    let pid = nix::unistd::Pid::from_raw(daemon.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let start = Instant::now();
    let successor = loop {
        if let Ok(text) = std::fs::read_to_string(&marker)
            && let Ok(n) = text.trim().parse::<i32>()
        {
            break n;
        }
        assert!(start.elapsed() < WAIT, "the new program did not start");
        std::thread::sleep(Duration::from_millis(20));
    };

    // Stopped while it waits for the new process: it stops at once (not
    // after ready_timeout_secs), and takes the new process with it.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still running {} s after SIGTERM",
            start.elapsed().as_secs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let start = Instant::now();
    while !gone(successor) {
        assert!(
            start.elapsed() < WAIT,
            "the new process {successor} still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let logged = std::fs::read_to_string(inst.dir.path().join("pop3-server.log")).unwrap();
    assert!(
        logged.contains("the restart under way is abandoned"),
        "{logged}"
    );
}
