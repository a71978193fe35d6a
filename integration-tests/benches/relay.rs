//! Relay throughput, measured by `qs-bench relay`: N queued 4 KiB messages,
//! each to one outside recipient, delivered by the real smtp-relay to the
//! tool's SMTP sink over reused connections. Reports deliveries/s from the
//! sink's first greeting until core-queue has every result (each lease and
//! each result durable in the queue), and how many SMTP connections carried
//! them.
//!
//! `cargo bench -p integration-tests --bench relay -- [--messages N] [--connections C] [--size BYTES]`
//! (defaults 10000, 20, 4096). The sink listens on a free loopback port; a
//! temporary installation from the test harness points smtp-relay at it and
//! runs core-queue and smtp-relay as processes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use integration_tests::{Installation, bench_arg};
use qs_bench::relay::{RelayOptions, Sink};

fn main() {
    let connections = bench_arg("--connections", 20);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sink = runtime
        .block_on(Sink::bind("127.0.0.1:0".parse().unwrap()))
        .unwrap();

    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.relay_to_sink(sink.addr(), connections);
    let _queue = inst.start("core-queue");
    let _relay = inst.start("smtp-relay");

    let options = RelayOptions {
        config: inst.config.clone(),
        messages: bench_arg("--messages", 10_000),
        size: bench_arg("--size", 4096) as usize,
        from: "bench@example.test".into(),
        to: "user@far.example".into(),
        enqueuers: 32,
        within: 600,
    };
    let installation = qs_bench::install::Installation::load(&inst.config).unwrap();
    let report = runtime
        .block_on(qs_bench::relay::run_with_sink(
            &options,
            &installation,
            sink,
        ))
        .unwrap();
    print!("{}", qs_bench::report::table(&report));
    assert_eq!(
        report.received, options.messages,
        "the sink did not get every message once"
    );
}
