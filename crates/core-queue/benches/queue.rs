//! Queue throughput: N messages of S bytes enqueued by C concurrent clients
//! over core-queue's Unix socket (every enqueue durable before its answer),
//! then delivered into one Maildir (tmp → fsync → rename → fsync). The two
//! phases are measured apart: first core-queue runs without local delivery
//! while the clients enqueue, then it restarts with its workers and drains
//! the queue into the Maildir.
//!
//! `cargo bench -p core-queue --bench queue -- [--messages N] [--clients C] [--size BYTES]`
//! (defaults 10000, 32, 4096). The daemon runs in this process on a temporary
//! data folder; the clients are the real `qs-queue` client.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qs_queue::{Client, ClientOptions, Endpoint, Origin};

struct Options {
    messages: usize,
    clients: usize,
    size: usize,
}

fn options() -> Options {
    let mut o = Options {
        messages: 10_000,
        clients: 32,
        size: 4096,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = || args.get(i + 1).and_then(|v| v.parse::<usize>().ok());
        match args[i].as_str() {
            "--messages" => o.messages = value().expect("--messages N"),
            "--clients" => o.clients = value().expect("--clients C"),
            "--size" => o.size = value().expect("--size BYTES"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn message(size: usize, n: usize) -> Vec<u8> {
    let mut m = format!(
        "From: bench@far.example\r\nTo: user@example.test\r\nSubject: message {n}\r\nMessage-ID: <{n}@bench>\r\n\r\n"
    )
    .into_bytes();
    let line =
        b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef\r\n";
    while m.len() < size {
        m.extend_from_slice(&line[..line.len().min(size - m.len()).max(2)]);
    }
    m
}

fn count_delivered(new: &Path) -> usize {
    std::fs::read_dir(new).map(|d| d.count()).unwrap_or(0)
}

fn main() {
    let o = options();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("quicksilver.toml");
    std::fs::write(&config_path, "[log]\nlevel = \"warn\"\n").unwrap();
    let config = qs_config::Config::load_file(&config_path).unwrap();
    std::fs::create_dir_all(&config.data_dir).unwrap();
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
    // Phase 1: core-queue without local delivery, so the enqueue figure is the
    // queue's alone.
    let (trigger, shutdown) = qs_service::shutdown::channel();
    let no_delivery = core_queue::RunOptions { local_workers: 0 };
    let daemon = runtime.spawn(core_queue::run_with(config.clone(), no_delivery, shutdown));
    let socket = config.queue.socket.clone();
    let client_options = ClientOptions {
        retry_for: Duration::from_secs(30),
        ..ClientOptions::default()
    };
    runtime.block_on(async {
        Client::new(Endpoint::Unix(socket.clone()), client_options.clone())
            .ping()
            .await
            .unwrap();
    });

    let new = config.data_dir.join("mail/example.test/user/new");
    let total = o.messages;
    println!(
        "queue benchmark: {total} messages of {} bytes from {} clients, durable enqueue, delivery into one Maildir",
        o.size, o.clients
    );
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let latencies = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..o.clients {
            let client = Arc::new(Client::new(
                Endpoint::Unix(socket.clone()),
                client_options.clone(),
            ));
            let size = o.size;
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let body = message(size, n);
                    let t = Instant::now();
                    client
                        .enqueue(
                            "bench@far.example",
                            vec!["user@example.test".into()],
                            Origin::default(),
                            &body,
                        )
                        .await
                        .unwrap();
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let enqueue_time = started.elapsed();
    trigger.fire();
    runtime.block_on(daemon).unwrap().unwrap();

    // Phase 2: core-queue with its local workers drains the queue.
    let (trigger, shutdown) = qs_service::shutdown::channel();
    let delivery_started = Instant::now();
    let daemon = runtime.spawn(core_queue::run(config.clone(), shutdown));
    let mut first: Option<Duration> = None;
    loop {
        let delivered = count_delivered(&new);
        if first.is_none() && delivered > 0 {
            first = Some(delivery_started.elapsed());
        }
        if delivered >= total {
            break;
        }
        assert!(
            delivery_started.elapsed() < Duration::from_secs(600),
            "delivery did not finish"
        );
        std::thread::sleep(Duration::from_millis(if first.is_some() { 100 } else { 5 }));
    }
    let delivery_time = delivery_started.elapsed();
    let startup = first.unwrap_or_default();

    let mut latencies = latencies;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "enqueue:  {:>8.0} messages/s  ({total} in {:.2} s; latency p50 {:.1} ms, p99 {:.1} ms)",
        total as f64 / enqueue_time.as_secs_f64(),
        enqueue_time.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
    println!(
        "delivery: {:>8.0} messages/s  ({total} from the queue into the Maildir in {:.2} s after a start-up of {:.2} s)",
        total as f64 / (delivery_time - startup).as_secs_f64(),
        (delivery_time - startup).as_secs_f64(),
        startup.as_secs_f64()
    );
    trigger.fire();
    let _ = runtime.block_on(daemon);
}
