//! SMTP throughput: C concurrent sessions each sending 4 KiB messages to a
//! local user over the port-25 listener; every message durable in the queue
//! before its 250. Reports accepted messages/s, the time from the end of DATA
//! to the 250 (p50, p99), and end to end until the last message is in the
//! Maildir.
//!
//! `cargo bench -p integration-tests --bench smtp -- [--messages N] [--sessions C] [--size BYTES] [--no-delivery]`
//! With `--no-delivery` core-queue queues without delivering, which measures the
//! SMTP and queue path alone; without it, local delivery runs alongside, as in
//! production.
//! (defaults 10000, 20, 4096). core-queue and smtp-server run in this process
//! on a temporary data folder; the clients speak SMTP over loopback TCP.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn reply(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap() == 0 {
            panic!("connection closed after {all:?}");
        }
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] == b' ' {
            return all;
        }
    }
}

fn main() {
    let messages = arg("--messages", 10_000);
    let sessions = arg("--sessions", 20);
    let size = arg("--size", 4096);
    let deliver = !std::env::args().any(|a| a == "--no-delivery");

    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("quicksilver.toml");
    std::fs::write(
        &config_path,
        "[log]\nlevel = \"warn\"\n[smtp_server]\nlisten = [\"127.0.0.1:0\"]\nsubmission = []\nsubmissions = []\nmax_connections_per_ip = 1000\n",
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

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (trigger, shutdown) = qs_service::shutdown::channel();
    let options = core_queue::RunOptions {
        local_workers: if deliver {
            core_queue::RunOptions::default().local_workers
        } else {
            0
        },
    };
    let queue = runtime.spawn(core_queue::run_with(
        config.clone(),
        options,
        shutdown.clone(),
    ));
    let smtp = runtime.spawn(smtp_server::run(config.clone(), shutdown));
    let run_file = qs_service::runfile::path(&config.data_dir, "smtp-server");
    let addr: std::net::SocketAddr = loop {
        if let Ok(text) = std::fs::read_to_string(&run_file)
            && let Some(start) = text.find("\"smtp_server.listen\":[\"")
        {
            let rest = &text[start + 23..];
            break rest[..rest.find('"').unwrap()].parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    let mut body =
        b"From: bench@far.example\r\nTo: user@example.test\r\nSubject: benchmark\r\n\r\n".to_vec();
    while body.len() < size {
        body.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n",
        );
    }
    body.extend_from_slice(b".\r\n");
    let body = Arc::new(body);

    println!(
        "smtp benchmark: {messages} messages of {size} bytes over {sessions} sessions, durable before 250"
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let latencies: Vec<Duration> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..sessions {
            let next = next.clone();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                reply(&mut reader).await;
                write.write_all(b"EHLO bench.example\r\n").await.unwrap();
                reply(&mut reader).await;
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < messages {
                    // MAIL, RCPT and DATA pipelined, as a real client does.
                    write
                        .write_all(b"MAIL FROM:<bench@far.example>\r\nRCPT TO:<user@example.test>\r\nDATA\r\n")
                        .await
                        .unwrap();
                    for expect in ["250", "250", "354"] {
                        let r = reply(&mut reader).await;
                        assert!(r.starts_with(expect), "{r}");
                    }
                    write.write_all(&body).await.unwrap();
                    let t = Instant::now();
                    let r = reply(&mut reader).await;
                    lat.push(t.elapsed());
                    assert!(r.starts_with("250"), "{r}");
                }
                write.write_all(b"QUIT\r\n").await.unwrap();
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let accepted = started.elapsed();
    let new = config.data_dir.join("mail/example.test/user/new");
    while deliver && std::fs::read_dir(&new).map(|d| d.count()).unwrap_or(0) < messages {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "delivery did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let end_to_end = started.elapsed();
    let mut latencies = latencies;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "accepted:   {:>7.0} messages/s  ({messages} in {:.2} s; end of data to 250: p50 {:.1} ms, p99 {:.1} ms)",
        messages as f64 / accepted.as_secs_f64(),
        accepted.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    if deliver {
        println!(
            "end to end: {:>7.0} messages/s  (first MAIL to the last message in the Maildir: {:.2} s)",
            messages as f64 / end_to_end.as_secs_f64(),
            end_to_end.as_secs_f64()
        );
    }
    trigger.fire();
    let _ = runtime.block_on(async { tokio::join!(queue, smtp) });
}
