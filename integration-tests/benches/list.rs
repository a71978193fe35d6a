//! List fan-out, measured by `qs-bench list`: one 4 KiB post to a list of N
//! members (default 10,000), split by list-server into copies of at most 50
//! recipients. Reports the time from queueing the post until list-server has
//! every copy durable in core-queue, then recipients/s through smtp-relay
//! into the tool's SMTP sink until core-queue has every result.
//!
//! `cargo bench -p integration-tests --bench list -- [--members N] [--batch B] [--connections C]`
//! (defaults 10000, 50, 20). The sink listens on a free loopback port; a
//! temporary installation from the test harness points smtp-relay at it and
//! runs core-queue, list-server and smtp-relay as processes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use integration_tests::{Installation, bench_arg};
use qs_bench::list::ListOptions;
use qs_bench::relay::Sink;

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
    let _lists = inst.start("list-server");
    let _relay = inst.start("smtp-relay");
    inst.listening("list-server", "list_server.web_listen");

    let options = ListOptions {
        config: inst.config.clone(),
        members: bench_arg("--members", 10_000),
        batch: bench_arg("--batch", 50) as u32,
        size: 4096,
        domain: None,
        member_domain: "far.example".into(),
        from: "writer@example.test".into(),
        within: 600,
    };
    let installation = qs_bench::install::Installation::load(&inst.config).unwrap();
    let report = runtime
        .block_on(qs_bench::list::run_with_sink(&options, &installation, sink))
        .unwrap();
    print!("{}", qs_bench::report::table(&report));
    assert_eq!(
        report.received_recipients, options.members,
        "the sink did not get every member once"
    );
}
