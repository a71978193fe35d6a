//! Relay throughput: N queued 4 KiB messages, each to one outside recipient,
//! delivered by smtp-relay to a local SMTP sink over reused connections.
//! Reports deliveries/s from the relay's start until core-queue has every
//! result (each lease and each result durable in the queue), and how many
//! SMTP connections carried them.
//!
//! `cargo bench -p integration-tests --bench relay -- [--messages N] [--connections C] [--size BYTES]`
//! (defaults 10000, 20, 4096). core-queue and smtp-relay run in this process
//! on a temporary data folder; the sink (PIPELINING, 8BITMIME, answers at
//! once, keeps nothing) runs here too, over loopback TCP.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts what it receives.
#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    messages: AtomicUsize,
}

/// A minimal SMTP sink: 250 to everything, 354 to DATA, reads to the dot.
async fn sink(listener: TcpListener, counters: Arc<Counters>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let counters = counters.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            if write.write_all(b"220 sink ESMTP\r\n").await.is_err() {
                return;
            }
            let mut line = Vec::new();
            let mut out = Vec::new();
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let upper = line
                    .get(..4)
                    .map(|v| v.to_ascii_uppercase())
                    .unwrap_or_default();
                match upper.as_slice() {
                    b"EHLO" => out.extend_from_slice(
                        b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
                    ),
                    b"DATA" => {
                        out.extend_from_slice(b"354 go ahead\r\n");
                        if write.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                        loop {
                            line.clear();
                            if reader.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == b".\r\n" {
                                break;
                            }
                        }
                        counters.messages.fetch_add(1, Ordering::Relaxed);
                        out.extend_from_slice(b"250 2.0.0 Ok: queued\r\n");
                    }
                    b"QUIT" => {
                        let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
                        return;
                    }
                    _ => out.extend_from_slice(b"250 2.0.0 Ok\r\n"),
                }
                // Answer once the client has nothing more pipelined.
                if reader.buffer().is_empty() && !out.is_empty() {
                    if write.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            }
        });
    }
}

fn main() {
    let messages = arg("--messages", 10_000);
    let connections = arg("--connections", 20);
    let size = arg("--size", 4096);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let counters = Arc::new(Counters::default());
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let sink_addr = listener.local_addr().unwrap();
    runtime.spawn(sink(listener, counters.clone()));

    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("quicksilver.toml");
    std::fs::write(
        &config_path,
        format!(
            "[log]\nlevel = \"warn\"\n[smtp_relay]\nsmarthost = \"{sink_addr}\"\ntls = \"none\"\n\
             max_connections = {connections}\nmax_connections_per_host = {connections}\n"
        ),
    )
    .unwrap();
    let config = qs_config::Config::load_file(&config_path).unwrap();
    qs_service::logging::init("bench", &config.log.level);
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let directory =
        qs_directory::Directory::create(&config.directory.file, Default::default()).unwrap();
    directory.add_domain("example.test").unwrap();
    drop(directory);

    let (trigger, shutdown) = qs_service::shutdown::channel();
    let queue = runtime.spawn(core_queue::run_with(
        config.clone(),
        core_queue::RunOptions::default(),
        shutdown.clone(),
    ));
    let client = qs_queue::Client::new(
        qs_queue::Endpoint::Unix(config.queue.socket.clone()),
        qs_queue::ClientOptions::default(),
    );

    let mut body =
        b"From: bench@example.test\r\nTo: user@far.example\r\nSubject: benchmark\r\n\r\n".to_vec();
    while body.len() < size {
        body.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n",
        );
    }
    let body = Arc::new(body);

    println!(
        "relay benchmark: {messages} queued messages of {size} bytes to one smarthost, up to {connections} connections"
    );
    // Fill the queue first (smtp-relay is not running yet).
    let filled = Instant::now();
    runtime.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (client, body, next) = (client.clone(), body.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < messages {
                    client
                        .enqueue(
                            "bench@example.test",
                            vec!["user@far.example".into()],
                            qs_queue::Origin::default(),
                            &body,
                        )
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    println!(
        "queued:    {messages} in {:.2} s",
        filled.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let relay = runtime.spawn(smtp_relay::run(config.clone(), shutdown));
    // Watch the sink's counter (cheap), then the queue (a stats request reads
    // every queued envelope, so it is asked only near the end).
    let deadline = Duration::from_secs(600);
    while counters.messages.load(Ordering::Relaxed) < messages {
        assert!(
            started.elapsed() < deadline,
            "the sink did not get every message"
        );
        if relay.is_finished() {
            let result = runtime.block_on(relay);
            panic!("smtp-relay stopped: {result:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let delivered_at = loop {
        let stats = runtime.block_on(client.stats()).unwrap();
        if stats.messages == 0 {
            break started.elapsed();
        }
        assert!(started.elapsed() < deadline, "results missing: {stats:?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    let received = counters.messages.load(Ordering::Relaxed);
    println!(
        "delivered: {:>7.0} messages/s  ({received} received by the sink in {:.2} s, every result durable in the queue; {} SMTP connections)",
        messages as f64 / delivered_at.as_secs_f64(),
        delivered_at.as_secs_f64(),
        counters.connections.load(Ordering::Relaxed),
    );
    assert_eq!(
        received, messages,
        "the sink did not get every message once"
    );
    trigger.fire();
    let _ = runtime.block_on(async { tokio::join!(queue, relay) });
}
