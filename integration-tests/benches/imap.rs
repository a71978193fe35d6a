//! IMAP on a big folder, and the memory of idle connections.
//!
//! `cargo bench -p integration-tests --bench imap -- [--messages N] [--idle C]`
//! (defaults 10000 and 1000). A temporary installation gets one user whose INBOX
//! holds N messages of about 2 KiB; the real imap-server binary (release build)
//! serves it on loopback. Reported:
//!
//! - SELECT INBOX, then `FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)`: the first
//!   time (UIDs given, new mail claimed, every header parsed) and again (cache warm);
//! - `UID SEARCH UNSEEN` (flags only) and `UID SEARCH SUBJECT` (reads every message);
//! - C idle connections, half of them only logged in, half in IDLE on the big INBOX:
//!   the daemon's resident memory per connection.
//!
//! Targets: SELECT + FETCH warm within 0.5 s; at most 64 KiB per idle connection.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use qs_mailstore::{DeliveryItem, FolderName, Mailbox};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut conn = Conn {
            reader: BufReader::new(stream),
        };
        let mut greeting = String::new();
        conn.reader.read_line(&mut greeting).await.unwrap();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        conn
    }

    /// Sends a command and reads to its tagged answer, literals included; returns the
    /// number of bytes read and the tagged line.
    async fn cmd(&mut self, tag: &str, line: &str) -> (usize, String) {
        self.reader
            .get_mut()
            .write_all(format!("{tag} {line}\r\n").as_bytes())
            .await
            .unwrap();
        let mut total = 0;
        loop {
            let mut line = Vec::new();
            let n = self.reader.read_until(b'\n', &mut line).await.unwrap();
            assert!(n > 0, "connection closed");
            total += n;
            // A literal: {N}\r\n then N bytes.
            if line.ends_with(b"}\r\n")
                && let Some(open) = line.iter().rposition(|&b| b == b'{')
            {
                let len: usize = std::str::from_utf8(&line[open + 1..line.len() - 3])
                    .unwrap()
                    .parse()
                    .unwrap();
                let mut skip = vec![0u8; len];
                self.reader.read_exact(&mut skip).await.unwrap();
                total += len;
                continue;
            }
            if line.starts_with(format!("{tag} ").as_bytes()) {
                let text = String::from_utf8_lossy(&line).into_owned();
                assert!(text.starts_with(&format!("{tag} OK")), "{text}");
                return (total, text);
            }
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn main() {
    let messages = arg("--messages", 10_000);
    let idle = arg("--idle", 1000);

    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("quicksilver.toml");
    std::fs::write(
        &config_path,
        format!(
            "[log]\nlevel = \"warn\"\n[imap_server]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = []\n\
             allow_plaintext_auth = true\nmax_connections = {0}\nmax_connections_per_ip = {0}\n\
             max_connections_per_user = {0}\n",
            idle + 10
        ),
    )
    .unwrap();
    let config = qs_config::Config::load_file(&config_path).unwrap();
    std::fs::create_dir_all(&config.data_dir).unwrap();
    qs_service::tls::ensure_self_signed(&config.hostname, &config.tls.cert, &config.tls.key)
        .unwrap();
    let directory =
        qs_directory::Directory::create(&config.directory.file, Default::default()).unwrap();
    directory.add_domain("example.test").unwrap();
    directory
        .add_user(
            "user@example.test",
            "",
            &qs_directory::Secret::new(&b"pw"[..]),
        )
        .unwrap();
    drop(directory);

    // The folder: N messages with different senders and subjects.
    let root = qs_mailstore::mailbox_path(&config.data_dir, "example.test", "user").unwrap();
    let mailbox = Mailbox::open(root, &config.hostname).unwrap();
    let started = Instant::now();
    let bodies: Vec<(String, Vec<u8>)> = (0..messages)
        .map(|i| {
            let text = format!(
                "Return-Path: <sender{i}@example.org>\r\nReceived: from mx.example.org by mail.example.test; Tue, 1 Jul 2025 10:00:00 +0000\r\n\
                 From: Sender {i} <sender{i}@example.org>\r\nTo: User <user@example.test>\r\nCc: other{i}@example.net\r\n\
                 Subject: Message number {i} about the project\r\nDate: Tue, 1 Jul 2025 10:{:02}:00 +0000\r\n\
                 Message-ID: <{i}.bench@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
                i % 60,
                "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(28)
            );
            (format!("bench{i}:user"), text.into_bytes())
        })
        .collect();
    let items: Vec<DeliveryItem<'_>> = bodies
        .iter()
        .map(|(key, bytes)| DeliveryItem { key, bytes })
        .collect();
    for result in mailbox.deliver_many(&FolderName::inbox(), &items) {
        result.unwrap();
    }
    println!("{messages} messages stored in {:.2?}", started.elapsed());

    let binary = integration_tests::binary("imap-server");
    let mut daemon = std::process::Command::new(binary)
        .arg("--config")
        .arg(&config_path)
        .env_remove("RUST_LOG")
        // Two malloc arenas: memory freed by argon2 (19 MiB a login) stays in few
        // arenas instead of one per thread, so what is measured is the connections.
        .env("MALLOC_ARENA_MAX", "2")
        .spawn()
        .unwrap();
    let run_file = config.data_dir.join("run/imap-server.json");
    let addr: std::net::SocketAddr = loop {
        if let Ok(text) = std::fs::read_to_string(&run_file)
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(a) = json["listeners"]["imap_server.listen"][0].as_str()
        {
            break a.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid = daemon.id();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut c = Conn::open(addr).await;
        c.cmd("a", "LOGIN user@example.test pw").await;
        for round in ["first (cold)", "again (warm)", "again (warm)"] {
            let start = Instant::now();
            let (_, selected) = c.cmd("s", "SELECT INBOX").await;
            let select = start.elapsed();
            let (bytes, _) = c
                .cmd("f", "FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
                .await;
            let total = start.elapsed();
            println!(
                "SELECT {select:.2?} + FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE) {:.2?} = {total:.2?}, {bytes} bytes, {round} {}",
                total - select,
                selected.trim()
            );
        }
        for query in ["UID SEARCH UNSEEN", "UID SEARCH SUBJECT \"number 9999\""] {
            let start = Instant::now();
            c.cmd("q", query).await;
            println!("{query}: {:.2?}", start.elapsed());
        }
        let start = Instant::now();
        let (bytes, _) = c.cmd("h", "UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)])").await;
        println!(
            "UID FETCH 1:* header fields: {:.2?}, {bytes} bytes",
            start.elapsed()
        );
        drop(c);

        // Idle connections: half only logged in, half in IDLE on the big INBOX. Logins
        // first run a while, so that the memory the allocator keeps from password
        // hashing (argon2 takes 19 MiB a time) is not counted as the connections'.
        for _ in 0..50 {
            let mut c = Conn::open(addr).await;
            c.cmd("a", "LOGIN user@example.test pw").await;
            c.cmd("s", "SELECT INBOX").await;
            c.cmd("z", "LOGOUT").await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut conns = Vec::with_capacity(idle);
        for (label, selected) in [
            ("logged in", false),
            ("in IDLE on the INBOX", true),
            ("logged in (again)", false),
        ] {
            let before = rss_kib(pid);
            let count = idle / 3;
            for _ in 0..count {
                let mut c = Conn::open(addr).await;
                c.cmd("a", "LOGIN user@example.test pw").await;
                if selected {
                    c.cmd("s", "SELECT INBOX").await;
                    c.reader.get_mut().write_all(b"i IDLE\r\n").await.unwrap();
                    let mut line = String::new();
                    c.reader.read_line(&mut line).await.unwrap();
                    assert!(line.starts_with("+ "), "{line}");
                }
                conns.push(c);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = rss_kib(pid);
            println!(
                "{count} connections {label}: imap-server RSS {before} KiB -> {after} KiB, {:.1} KiB per connection",
                (after.saturating_sub(before)) as f64 / count as f64
            );
        }
        drop(conns);
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
}
