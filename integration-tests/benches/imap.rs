//! IMAP on a big folder, and the memory of idle connections, measured by
//! `qs-bench imap` against the real imap-server (release build) on loopback:
//!
//! - the INBOX holding N messages of about 2 KiB, delivered into `new/` as
//!   core-queue delivers them (so that the first SELECT gives them UIDs and
//!   claims them, as after a night of mail); with `--append`, qs-bench fills
//!   it by APPEND instead and reports the APPEND rate;
//! - SELECT, then `FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)`: the
//!   first time and again (cache warm); Thunderbird's header-fields UID FETCH;
//!   `UID SEARCH UNSEEN` (flags only) and `UID SEARCH SUBJECT` (reads every
//!   message); `STORE 1:* +FLAGS`;
//! - C idle connections, half only logged in, half in IDLE on the INBOX: the
//!   daemon's resident memory per connection.
//!
//! `cargo bench -p integration-tests --bench imap -- [--messages N] [--idle C] [--append]`
//! (defaults 10000 and 1000). Targets: SELECT + FETCH warm within 0.5 s; at
//! most 64 KiB per idle connection. The daemon runs with `MALLOC_ARENA_MAX=2`,
//! so that memory freed by argon2 (19 MiB a login) stays in few arenas instead
//! of one per thread, and what is measured is the connections.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use integration_tests::{Installation, bench_arg, bench_flag};
use qs_bench::imap::ImapOptions;
use qs_bench::net::{TlsArgs, TlsMode};
use qs_mailstore::{DeliveryItem, FolderName, Mailbox};

fn main() {
    let idle = bench_arg("--idle", 1000);
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("log", "level", "\"warn\"");
    inst.set("imap_server", "allow_plaintext_auth", "true");
    for key in [
        "max_connections",
        "max_connections_per_ip",
        "max_connections_per_user",
    ] {
        inst.set("imap_server", key, &(idle + 10).to_string());
    }
    inst.add_users(&["user@example.test"]);
    let messages = bench_arg("--messages", 10_000);
    if !bench_flag("--append") {
        deliver(&inst, messages);
    }
    let _imap = inst.start_with_env("imap-server", &[("MALLOC_ARENA_MAX", "2")]);
    inst.listening("imap-server", "imap_server.listen");

    let options = ImapOptions {
        account: qs_bench::install::MailboxArgs {
            target: None,
            config: Some(inst.config.clone()),
            user: "user@example.test".into(),
            password: "pw".into(),
        },
        messages,
        folder: "INBOX".into(),
        size: 2048,
        idle_connections: idle,
        warm_up_logins: 50,
        pid: None,
        keep: false,
        flagged: bench_flag("--flagged"),
        mixed_clients: 0,
        mixed_seconds: 30,
        tls: TlsArgs {
            tls: TlsMode::None,
            ca_file: None,
            tls_name: None,
        },
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime.block_on(qs_bench::imap::run(&options)).unwrap();
    print!("{}", qs_bench::report::table(&report));
}

/// Delivers `messages` messages into the INBOX the way core-queue does.
fn deliver(inst: &Installation, messages: u64) {
    let data_dir = inst.data_dir();
    let root = qs_mailstore::mailbox_path(&data_dir, "example.test", "user").unwrap();
    let mailbox = Mailbox::open(root, "mail.example.test").unwrap();
    let marker = qs_bench::message::run_marker();
    let bodies: Vec<(String, Vec<u8>)> = (0..messages)
        .map(|n| {
            let from = format!("sender{n}@example.org");
            let bytes = qs_bench::message::build(&marker, n, &from, "user@example.test", 2048);
            (format!("bench{n}:user"), bytes)
        })
        .collect();
    let items: Vec<DeliveryItem<'_>> = bodies
        .iter()
        .map(|(key, bytes)| DeliveryItem { key, bytes })
        .collect();
    for result in mailbox.deliver_many(&FolderName::inbox(), &items) {
        result.unwrap();
    }
}
