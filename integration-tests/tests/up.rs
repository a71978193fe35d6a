//! `qsctl up`: the supervisor that runs the modules in the foreground.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use integration_tests::{Daemon, Installation};

const WAIT: Duration = Duration::from_secs(30);

fn pid_in_run_file(inst: &Installation, module: &str) -> Option<u32> {
    let text =
        std::fs::read_to_string(inst.data_dir().join("run").join(format!("{module}.json"))).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["pid"].as_u64().map(|p| p as u32)
}

fn smtp_send(addr: std::net::SocketAddr, to: &str) {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    let mut expect = |r: &mut BufReader<TcpStream>, code: &str| loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "expected {code}, got {line}");
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    };
    expect(&mut r, "220");
    for (cmd, code) in [
        ("EHLO t\r\n", "250"),
        ("MAIL FROM:<a@far.example>\r\n", "250"),
        (&format!("RCPT TO:<{to}>\r\n"), "250"),
        ("DATA\r\n", "354"),
        ("Subject: via up\r\n\r\nhi\r\n.\r\n", "250"),
        ("QUIT\r\n", "221"),
    ] {
        w.write_all(cmd.as_bytes()).unwrap();
        expect(&mut r, code);
    }
}

#[test]
fn up_runs_the_modules_restarts_a_crashed_one_and_stops_core_queue_last() {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.add_users(&["alice@example.test"]);
    // qsctl up is a daemon of its own here.
    let mut up = Daemon::start_with_args(
        "qsctl",
        &[
            "--config",
            inst.config.to_str().unwrap(),
            "up",
            "core-queue",
            "smtp-server",
        ],
        inst.dir.path().join("up.log"),
    );
    let mx = inst.listening("smtp-server", "smtp_server.listen")[0];
    smtp_send(mx, "alice@example.test");
    inst.wait_for_mail("alice@example.test", 1, WAIT);

    // Kill smtp-server behind up's back: up starts it again.
    let first = pid_in_run_file(&inst, "smtp-server").unwrap();
    nix_kill(first);
    let start = Instant::now();
    loop {
        if let Some(pid) = pid_in_run_file(&inst, "smtp-server")
            && pid != first
        {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "smtp-server was not restarted:\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = up.log();
    assert!(log.contains("[smtp-server] exited"), "{log}");
    let mx = inst.listening("smtp-server", "smtp_server.listen")[0];
    smtp_send(mx, "alice@example.test");
    inst.wait_for_mail("alice@example.test", 2, WAIT);

    // status names each module's state, pid, listeners and restarts.
    let status = inst.ok(&["status"]);
    let smtp_line = status
        .lines()
        .find(|l| l.starts_with("smtp-server"))
        .unwrap();
    assert!(smtp_line.contains("running"), "{status}");
    assert!(smtp_line.contains(&mx.to_string()), "{status}");
    assert!(
        smtp_line.split_whitespace().nth(4) == Some("1"),
        "one restart: {status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("pop3-server") && l.contains("stopped")),
        "{status}"
    );
    assert!(status.contains("queue: 0 messages"), "{status}");
    // health: exit 0 when the module answers, one clear line otherwise.
    assert!(
        inst.ok(&["health", "smtp-server"])
            .contains("smtp-server: ok")
    );
    assert!(
        inst.ok(&["health", "core-queue"])
            .contains("core-queue: ok")
    );
    let err = inst.fails(&["health", "pop3-server"]);
    assert!(err.contains("pop3-server is not running"), "{err}");

    // SIGTERM: everything stops, core-queue last.
    let status = up.terminate(WAIT).expect("qsctl up stops");
    assert!(status.success(), "{}", up.log());
    let log = up.log();
    let smtp_stopped = log
        .find("[smtp-server] stopped")
        .expect("smtp-server stopped");
    let queue_stopped = log
        .find("[core-queue] stopped")
        .expect("core-queue stopped");
    assert!(
        smtp_stopped < queue_stopped,
        "core-queue must stop last:\n{log}"
    );
}

#[test]
fn up_without_a_config_runs_init_first() {
    let inst = Installation::empty();
    let mut up = Daemon::start_with_args(
        "qsctl",
        &[
            "--config",
            inst.config.to_str().unwrap(),
            "up",
            "core-queue",
        ],
        inst.dir.path().join("up.log"),
    );
    let start = Instant::now();
    while !inst.socket().exists() {
        assert!(start.elapsed() < WAIT, "{}", up.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(inst.config.exists());
    assert!(
        up.log().contains("password for postmaster@example.test"),
        "{}",
        up.log()
    );
    up.terminate(WAIT).expect("stops");
}

#[test]
fn up_refuses_an_unknown_module() {
    let inst = Installation::init();
    let err = inst.fails(&["up", "mercury-x"]);
    assert!(err.contains("unknown module mercury-x"), "{err}");
}

fn nix_kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
