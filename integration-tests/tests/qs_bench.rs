//! qs-bench counts what it claims: the real binary against a scripted SMTP
//! server whose every answer is known, its errors for bad flags and closed
//! ports, and short runs of each subcommand against a real installation.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use integration_tests::{Installation, binary, text};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Runs qs-bench with `args`.
fn run(args: &[&str]) -> Output {
    Command::new(binary("qs-bench"))
        .args(args)
        .env_remove("QS_CONFIG")
        .env_remove("QS_BENCH_PASSWORD")
        .env_remove("QS_BENCH_AUTH")
        .output()
        .expect("run qs-bench")
}

/// Runs qs-bench with the words of `line`.
fn qs_bench(line: &str) -> Output {
    run(&line.split_whitespace().collect::<Vec<_>>())
}

/// Runs qs-bench with `--json` and the words of `line`; returns the report.
fn report(line: &str) -> serde_json::Value {
    let out = qs_bench(&format!("--json {line}"));
    assert!(out.status.success(), "qs-bench {line}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// Checks that qs-bench ended with `status` and said `words` on standard error.
fn assert_refused(out: &Output, status: i32, words: &str) {
    assert_eq!(out.status.code(), Some(status), "{}", text(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(words),
        "{words:?} not said: {}",
        text(out)
    );
}

/// A scripted SMTP server. Transactions are numbered by their MAIL across
/// every session: each 7th is refused at RCPT with 550, each other 5th at
/// the end of the data with 451; the rest are accepted. `connections` counts
/// the connections accepted.
async fn scripted_server(
    listener: TcpListener,
    transactions: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
) {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        connections.fetch_add(1, Ordering::SeqCst);
        let transactions = transactions.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            write.write_all(b"220 scripted ESMTP\r\n").await.unwrap();
            let mut current = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let answer: &[u8] = match verb.as_str() {
                    "EHLO" => b"250-scripted\r\n250 8BITMIME\r\n",
                    "MAIL" => {
                        current = transactions.fetch_add(1, Ordering::SeqCst) + 1;
                        b"250 2.1.0 ok\r\n"
                    }
                    "RCPT" if current % 7 == 0 => b"550 5.1.1 no such user\r\n",
                    "DATA" => {
                        write.write_all(b"354 go on\r\n").await.unwrap();
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                        }
                        if current % 5 == 0 {
                            b"451 4.3.0 try again later\r\n"
                        } else {
                            b"250 2.0.0 queued\r\n"
                        }
                    }
                    "QUIT" => {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    }
                    _ => b"250 ok\r\n",
                };
                write.write_all(answer).await.unwrap();
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_counts_each_reply_of_a_scripted_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let transactions = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    tokio::spawn(scripted_server(
        listener,
        transactions.clone(),
        connections.clone(),
    ));

    let json = tokio::task::spawn_blocking(move || {
        report(&format!(
            "smtp --target {addr} --to user@example.test --messages 140 --connections 4 --size 1000"
        ))
    })
    .await
    .unwrap();
    assert_eq!(
        connections.load(Ordering::SeqCst),
        4,
        "each session keeps its connection"
    );
    // Of 140: 20 multiples of 7 (550), 28 - 4 multiples of 5 but not 7 (451).
    assert_eq!(transactions.load(Ordering::SeqCst), 140);
    assert_eq!(json["messages"], 140);
    assert_eq!(json["accepted"], 96, "{json}");
    assert_eq!(json["failed"], 44, "{json}");
    assert_eq!(
        json["errors"],
        serde_json::json!({"451": 24, "550": 20}),
        "{json}"
    );
    assert_eq!(json["latency"]["samples"], 96);
    assert!(
        json["latency"]["p50_ms"].as_f64().unwrap() <= json["latency"]["p99_ms"].as_f64().unwrap()
    );
    assert!(json["accepted_per_second"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_can_send_each_message_on_a_connection_of_its_own() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let transactions = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    tokio::spawn(scripted_server(
        listener,
        transactions.clone(),
        connections.clone(),
    ));

    let json = tokio::task::spawn_blocking(move || {
        report(&format!(
            "smtp --target {addr} --to user@example.test --messages 30 --connections 3 \
             --size 500 --new-connection-per-message"
        ))
    })
    .await
    .unwrap();
    assert_eq!(transactions.load(Ordering::SeqCst), 30);
    // The first connection, made before the clock starts, serves the first message.
    assert_eq!(connections.load(Ordering::SeqCst), 30, "{json}");
    assert_eq!(json["new_connection_per_message"], true, "{json}");
    // 550 for 7, 14, 21, 28; 451 for 5, 10, 15, 20, 25, 30.
    assert_eq!(json["accepted"], 20, "{json}");
    assert_eq!(
        json["errors"],
        serde_json::json!({"451": 6, "550": 4}),
        "{json}"
    );
}

/// A loopback address nothing listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

#[test]
fn bad_flags_and_closed_ports_are_clear_errors() {
    let out = qs_bench("smtp --to a@b.example --messages many");
    assert_refused(&out, 2, "invalid value 'many'");

    let out = qs_bench("smtp --to a@b.example");
    assert_refused(&out, 1, "--target HOST:PORT");

    let out = run(&["smtp", "--target", "127.0.0.1:25", "--to", "not an address"]);
    assert_refused(&out, 1, "--to not an address");

    let closed = closed_port();
    for command in [
        "smtp --to a@b.example",
        "imap --user u --password p",
        "pop3 --user u --password p",
    ] {
        let line = format!("{command} --target {closed}");
        let out = qs_bench(&line);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!("qs-bench: cannot reach {closed}")),
            "{line}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }

    let out = qs_bench("relay --config /nonexistent/quicksilver.toml");
    assert_refused(&out, 1, "/nonexistent/quicksilver.toml");
}

/// The config path as a string.
fn config(inst: &Installation) -> String {
    inst.config.to_string_lossy().into_owned()
}

#[test]
fn smtp_and_deliver_against_an_installation() {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.add_users(&["user@example.test"]);
    let _queue = inst.start("core-queue");
    let _smtp = inst.start("smtp-server");
    let _imap = inst.start("imap-server");
    inst.listening("smtp-server", "smtp_server.listen");
    inst.listening("imap-server", "imap_server.tls_listen");
    let conf = config(&inst);

    let json = report(&format!(
        "deliver --config {conf} --to user@example.test --messages 20 --connections 4"
    ));
    assert_eq!(json["smtp"]["accepted"], 20, "{json}");
    assert_eq!(json["smtp"]["errors"], serde_json::json!({}));
    assert_eq!(json["delivered"], 20, "{json}");
    assert_eq!(inst.inbox("user@example.test").len(), 20);
    // Delivery seen over IMAP (STATUS on the implicit-TLS listener).
    let json = report(&format!(
        "deliver --config {conf} --to user@example.test --messages 5 --check imap \
         --imap-password pw"
    ));
    assert_eq!(json["delivered"], 5, "{json}");
    assert_eq!(json["check"], "imap");
    assert_eq!(inst.inbox("user@example.test").len(), 25);

    // Submission: STARTTLS checked against the installation's certificate,
    // and implicit TLS with any certificate accepted; AUTH on both.
    for tls in ["--tls starttls", "--tls implicit --insecure"] {
        let json = report(&format!(
            "smtp --config {conf} {tls} --auth user@example.test:pw --to user@example.test \
             --messages 5 --connections 2"
        ));
        assert_eq!(json["accepted"], 5, "{tls}: {json}");
    }
    // A wrong password stops the run before the load.
    let out = qs_bench(&format!(
        "smtp --config {conf} --tls starttls --auth user@example.test:wrong --to user@example.test"
    ));
    assert_refused(&out, 1, "535");
}

#[test]
fn imap_and_pop3_against_an_installation() {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("imap_server", "allow_plaintext_auth", "true");
    inst.add_users(&["user@example.test"]);
    let imap = inst.start("imap-server");
    let _pop3 = inst.start("pop3-server");
    inst.listening("imap-server", "imap_server.listen");
    inst.listening("pop3-server", "pop3_server.listen");
    let conf = config(&inst);

    let json = report(&format!(
        "imap --config {conf} --user user@example.test --password pw --messages 20 --idle-connections 4 --warm-up-logins 1 \
         --mixed-clients 3 --mixed-seconds 2"
    ));
    assert_eq!(json["messages"], 20, "{json}");
    assert_eq!(json["appended"], 20, "{json}");
    assert_eq!(json["idle"]["pid"], imap.pid(), "{json}");
    assert_eq!(json["idle"]["logged_in"], 2);
    assert_eq!(json["idle"]["in_idle"], 2);
    for key in [
        "select_first_ms",
        "fetch_warm_ms",
        "search_subject_ms",
        "store_ms",
    ] {
        assert!(json[key].as_f64().unwrap() > 0.0, "{key}: {json}");
    }
    // The mixed load: three clients, every command answered OK.
    let mixed = &json["mixed"];
    assert_eq!(mixed["clients"], 3, "{json}");
    assert_eq!(mixed["errors"], 0, "{json}");
    assert!(mixed["commands"].as_u64().unwrap() > 50, "{json}");
    for command in ["UID FETCH envelopes", "APPEND", "UID EXPUNGE", "UID STORE"] {
        assert!(
            mixed["by_command"][command].as_u64().unwrap() > 0,
            "{command}: {json}"
        );
    }
    assert!(json["expunge_ms"].as_f64().unwrap() > 0.0, "{json}");
    // It changes the folder, so it refuses one the run did not make.
    let out = qs_bench(&format!(
        "imap --config {conf} --user user@example.test --password pw --folder INBOX --mixed-clients 2"
    ));
    assert_refused(&out, 1, "INBOX exists");
    // The folder it made is gone again.
    let folder = inst.data_dir().join("mail/example.test/user/.qs-bench");
    assert!(!folder.exists(), "{}", folder.display());

    // POP3 over implicit TLS (the installation's certificate), filled by IMAP.
    let json = report(&format!(
        "pop3 --config {conf} --tls implicit --user user@example.test --password pw --messages 12"
    ));
    assert_eq!(json["filled"], 12, "{json}");
    assert_eq!(json["messages"], 12, "{json}");
    assert_eq!(json["deleted"], 12, "{json}");
    assert!(json["retr_per_second"].as_f64().unwrap() > 0.0);
    assert!(inst.inbox("user@example.test").is_empty());
}

#[test]
fn relay_and_list_against_an_installation() {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    // The sink takes the port the relay's smarthost names.
    let sink = closed_port();
    inst.set("smtp_relay", "smarthost", &format!("\"{sink}\""));
    inst.set("smtp_relay", "tls", "\"none\"");
    let _queue = inst.start("core-queue");
    let _lists = inst.start("list-server");
    let _relay = inst.start("smtp-relay");
    inst.listening("list-server", "list_server.web_listen");
    let conf = config(&inst);

    let json = report(&format!("relay --config {conf} --messages 20 --size 2000"));
    assert_eq!(json["received"], 20, "{json}");
    assert_eq!(json["sink"], sink.as_str(), "{json}");
    assert!(json["delivered_per_second"].as_f64().unwrap() > 0.0);

    // 120 members in copies of at most 50: three copies, every member once.
    let json = report(&format!(
        "list --config {conf} --members 120 --batch 50 --member-domain far.example"
    ));
    assert_eq!(json["copies"], 3, "{json}");
    assert_eq!(json["received"], 3, "{json}");
    assert_eq!(json["received_recipients"], 120, "{json}");
    assert!(json["fan_out_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(json["list"], "qs-bench@example.test", "{json}");
    // The list it made is gone again.
    let made = inst.data_dir().join("lists/qs-bench@example.test.json");
    assert!(!made.exists(), "{}", made.display());

    // A list of that name that the installation made itself is left alone.
    let out = inst.qsctl(&["list", "create", "qs-bench@example.test"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = qs_bench(&format!("list --config {conf} --members 5"));
    assert_refused(&out, 1, "a list qs-bench@example.test of its own");
    assert!(made.exists());

    // A relay that does not point at a plain sink is named.
    inst.set("smtp_relay", "tls", "\"starttls\"");
    let out = qs_bench(&format!("list --config {conf} --members 5"));
    assert_refused(&out, 1, "tls = \"none\"");
}
