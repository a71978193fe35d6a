//! SMTP throughput, measured by `qs-bench smtp` / `qs-bench deliver`: C
//! concurrent sessions send 4 KiB messages to a local user over the port-25
//! listener of the real smtp-server; every message is durable in the queue
//! before its 250. Reports accepted messages/s, the time from the end of the
//! data to the 250 (p50/p90/p99), errors by reply code and, unless
//! `--no-delivery`, end to end until the last message is in the Maildir.
//!
//! `cargo bench -p integration-tests --bench smtp -- [--messages N] [--connections C] [--size BYTES] [--no-delivery] [--new-connection-per-message]`
//! (defaults 10000, 20, 4096). A temporary installation from the test harness
//! runs smtp-server and core-queue as processes. With `--no-delivery`
//! core-queue runs in this process with no local delivery worker (the binary
//! has no such switch), which measures the SMTP and queue path alone.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use integration_tests::{Installation, bench_arg, bench_flag};
use qs_bench::report::table;

fn main() {
    let deliver = !bench_flag("--no-delivery");
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("log", "level", "\"warn\"");
    inst.set("smtp_server", "max_connections_per_ip", "1000");
    inst.add_users(&["user@example.test"]);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (trigger, shutdown) = qs_service::shutdown::channel();
    let (_queue_daemon, queue_task) = if deliver {
        (Some(inst.start("core-queue")), None)
    } else {
        let config = qs_config::Config::load_file(&inst.config).unwrap();
        let options = core_queue::RunOptions { local_workers: 0 };
        let task = runtime.spawn(core_queue::run_with(config, options, shutdown));
        (None, Some(task))
    };
    let _smtp = inst.start("smtp-server");
    let target = inst.listening("smtp-server", "smtp_server.listen")[0];

    let smtp = qs_bench::smtp::SmtpOptions {
        target: Some(target.to_string()),
        config: Some(inst.config.clone()),
        to: "user@example.test".into(),
        from: Some("bench@far.example".into()),
        messages: bench_arg("--messages", 10_000),
        connections: bench_arg("--connections", 20),
        size: bench_arg("--size", 4096) as usize,
        auth: None,
        tls: qs_bench::net::TlsMode::None,
        insecure: false,
        ca_file: None,
        tls_name: None,
        timeout: 60,
        new_connection_per_message: bench_flag("--new-connection-per-message"),
    };
    let printed = if deliver {
        let options = qs_bench::deliver::DeliverOptions {
            smtp,
            check: qs_bench::deliver::Check::Maildir,
            imap_password: None,
            within: 600,
        };
        table(&runtime.block_on(qs_bench::deliver::run(&options)).unwrap())
    } else {
        table(&runtime.block_on(qs_bench::smtp::run(&smtp)).unwrap())
    };
    print!("{printed}");
    trigger.fire();
    if let Some(task) = queue_task {
        let _ = runtime.block_on(task);
    }
}
