//! List fan-out: one post to a list of N members (default 10,000), split
//! into copies of at most 50 recipients. Reports the time list-server takes
//! to queue every copy (each durable in core-queue before it returns), then
//! recipients/s through smtp-relay to a local SMTP sink until core-queue has
//! every result.
//!
//! `cargo bench -p integration-tests --bench list -- [--members N] [--batch B] [--connections C]`
//! (defaults 10000, 50, 20). core-queue, list-server's fan-out and smtp-relay
//! run in this process on a temporary data folder; qs-bench's sink (PIPELINING,
//! answers at once, keeps nothing) runs here too, over loopback TCP.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use integration_tests::bench_arg;

fn main() {
    let members = bench_arg("--members", 10_000);
    let batch = bench_arg("--batch", 50);
    let connections = bench_arg("--connections", 20);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sink = runtime
        .block_on(qs_bench::relay::Sink::bind("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let sink_addr = sink.addr();
    let delivered = runtime.block_on(async { sink.start() });

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

    let mut list = qs_directory::mailing_list::MailingList::new("bench@example.test").unwrap();
    list.set("max_recipients", &batch.to_string()).unwrap();
    for i in 0..members {
        list.add_member(&format!("member{i:06}@far.example"), "")
            .unwrap();
    }
    let store = qs_directory::mailing_list::ListStore::new(config.data_path("lists"));
    store.create(&list).unwrap();

    let (trigger, shutdown) = qs_service::shutdown::channel();
    let queue = runtime.spawn(core_queue::run_with(
        config.clone(),
        core_queue::RunOptions::default(),
        shutdown.clone(),
    ));
    let lists = list_server::server::Shared::from_config(&config).unwrap();
    let client = lists.queue.clone();
    runtime.block_on(client.ping()).unwrap();

    let mut post =
        b"From: writer@example.test\r\nTo: bench@example.test\r\nSubject: fan-out\r\n\r\n".to_vec();
    while post.len() < 4096 {
        post.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n",
        );
    }
    println!(
        "list benchmark: one 4 KiB post to {members} members in copies of at most {batch}, up to {connections} SMTP connections"
    );
    let started = Instant::now();
    let (sent, copies) = runtime
        .block_on(lists.fan_out(&list, &post, &["writer@example.test"], "bench"))
        .unwrap();
    let queued = started.elapsed();
    println!(
        "queued:    {copies} copies for {sent} members in {:.3} s (every copy durable in core-queue)",
        queued.as_secs_f64()
    );

    let started = Instant::now();
    let relay = runtime.spawn(smtp_relay::run(config.clone(), shutdown));
    let deadline = Duration::from_secs(600);
    while delivered.recipients() < members {
        assert!(
            started.elapsed() < deadline,
            "the sink did not get every recipient"
        );
        assert!(!relay.is_finished(), "smtp-relay stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
    let done = loop {
        let stats = runtime.block_on(client.stats()).unwrap();
        if stats.messages == 0 {
            break started.elapsed();
        }
        assert!(started.elapsed() < deadline, "results missing: {stats:?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    println!(
        "delivered: {:>7.0} recipients/s  ({} recipients in {copies} messages in {:.2} s, every result durable in the queue)",
        members as f64 / done.as_secs_f64(),
        delivered.recipients(),
        done.as_secs_f64()
    );
    trigger.fire();
    let _ = runtime.block_on(async { tokio::join!(queue, relay) });
}
