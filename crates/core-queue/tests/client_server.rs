//! The queue client against core-queue's handler, served over Unix and TCP
//! sockets.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use core_queue::handler::CoreHandler;
use qs_queue::{
    Client, ClientError, ClientOptions, Endpoint, ErrorKind, JobClass, Origin, Outcome,
    RecipientResult, Secret, ServerError, Store, StoreOptions, serve,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct TestServer {
    store: Arc<Store>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl TestServer {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("join").expect("serve");
    }
}

fn open_store(dir: &Path) -> Store {
    Store::open(dir.join("queue"), &StoreOptions::default()).expect("open store")
}

/// Serves `store` on `listener` with core-queue's handler, over a directory
/// with no local domain: every recipient is routed `outbound`.
fn start(
    dir: &Path,
    store: Store,
    listener: impl Into<qs_queue::Listener>,
    secret: Option<Secret>,
) -> TestServer {
    let config_path = dir.join("quicksilver.toml");
    std::fs::write(&config_path, "").expect("write config");
    let config = qs_config::Config::load_file(&config_path).expect("config");
    let file = &config.directory.file;
    let directory = if file.exists() {
        qs_directory::Directory::open(file, Default::default()).expect("open directory")
    } else {
        std::fs::create_dir_all(&config.data_dir).expect("data folder");
        qs_directory::Directory::create(file, Default::default()).expect("create directory")
    };
    let core = Arc::new(core_queue::new_core(&config, directory, store));
    let store = Arc::clone(&core.store);
    let handler = Arc::new(CoreHandler::new(core));
    let (stop, stopped) = oneshot::channel::<()>();
    let listener = listener.into();
    let task = tokio::spawn(async move {
        serve(listener, secret, handler, async {
            let _ = stopped.await;
        })
        .await
    });
    TestServer {
        store,
        stop: Some(stop),
        task,
    }
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("queue.sock")
}

fn unix_client(dir: &Path, retry_for: Duration) -> Client {
    let options = ClientOptions {
        retry_for,
        ..ClientOptions::default()
    };
    Client::new(Endpoint::Unix(socket(dir)), options)
}

fn origin() -> Origin {
    Origin {
        module: "smtp-server".into(),
        peer: Some("192.0.2.7".into()),
        auth_user: Some("alice".into()),
    }
}

#[tokio::test]
async fn enqueue_then_lease_and_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        open_store(dir.path()),
        UnixListener::bind(socket(dir.path())).expect("bind"),
        None,
    );
    let client = unix_client(dir.path(), Duration::from_secs(5));
    client.ping().await.expect("ping");

    let body = b"From: a@example.org\r\nSubject: t\r\n\r\nhello\r\n";
    let recipients = vec!["x@example.net".to_owned(), "y@example.net".to_owned()];
    let id = client
        .enqueue("a@example.org", recipients, origin(), body)
        .await
        .expect("enqueue");
    assert_eq!(
        server.store.get(&id).expect("get").expect("stored").size,
        body.len() as u64
    );

    let job = client
        .lease(&JobClass::outbound(), "relay-1", Duration::from_secs(60))
        .await
        .expect("lease")
        .expect("a job");
    assert_eq!(job.id, id);
    assert_eq!(job.body, body);
    assert_eq!(job.origin, origin());
    assert_eq!(job.recipients.len(), 2);
    assert!(
        client
            .lease(&JobClass::outbound(), "relay-2", Duration::from_secs(60))
            .await
            .expect("lease")
            .is_none()
    );

    let results = vec![
        RecipientResult {
            index: 0,
            outcome: Outcome::Delivered {
                reply: "250 ok".into(),
            },
        },
        RecipientResult {
            index: 1,
            outcome: Outcome::TemporaryFailure {
                reply: "451 later".into(),
            },
        },
    ];
    let finished = client
        .complete(&job.id, &job.class, job.token, results)
        .await
        .expect("complete");
    assert!(!finished);
    let stale = client.release(&job.id, &job.class, job.token).await;
    assert!(
        matches!(
            stale,
            Err(ClientError::Refused {
                kind: ErrorKind::LeaseLost,
                ..
            })
        ),
        "{stale:?}"
    );

    // Admin requests.
    let list = client.list(10).await.expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].pending, 1);
    let envelope = client.show(&id).await.expect("show");
    assert_eq!(
        envelope.recipients[1]
            .last_reply
            .as_ref()
            .map(|r| r.to_string()),
        Some("451 later".to_string())
    );
    assert_eq!(client.body(&id).await.expect("body"), body);
    client.retry(&id).await.expect("retry");
    let again = client
        .lease(&JobClass::outbound(), "relay-1", Duration::from_secs(60))
        .await
        .expect("lease")
        .expect("due again after retry");
    assert_eq!(again.recipients.len(), 1);
    client
        .release(&again.id, &again.class, again.token)
        .await
        .expect("release");
    let stats = client.stats().await.expect("stats");
    assert_eq!(stats.messages, 1);
    assert_eq!(stats.pending.get("outbound"), Some(&1));
    client.delete(&id).await.expect("delete");
    let gone = client.show(&id).await;
    assert!(
        matches!(
            gone,
            Err(ClientError::Refused {
                kind: ErrorKind::NotFound,
                ..
            })
        ),
        "{gone:?}"
    );
    assert!(matches!(
        client.delete(&id).await,
        Err(ClientError::Refused {
            kind: ErrorKind::NotFound,
            ..
        })
    ));

    // Refusals are returned, not retried.
    let started = Instant::now();
    let bad = client
        .enqueue("a@example.org", vec![], origin(), b"x")
        .await;
    assert!(
        matches!(
            bad,
            Err(ClientError::Refused {
                kind: ErrorKind::BadRequest,
                ..
            })
        ),
        "{bad:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    server.stop().await;
}

#[tokio::test]
async fn state_area_over_the_wire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        open_store(dir.path()),
        UnixListener::bind(socket(dir.path())).expect("bind"),
        None,
    );
    let client = unix_client(dir.path(), Duration::from_secs(5));
    assert_eq!(
        client.state_get("pop-client", "acct/1").await.expect("get"),
        None
    );
    for (k, v) in [
        ("acct/1", &b""[..]),
        ("acct/2", b"two"),
        ("acct/3", &[0, 255, 10][..]),
        ("other", b"o"),
    ] {
        client.state_put("pop-client", k, v).await.expect("put");
    }
    assert_eq!(
        client
            .state_get("pop-client", "acct/2")
            .await
            .expect("get")
            .as_deref(),
        Some(&b"two"[..])
    );
    let all = client
        .state_scan("pop-client", "acct/", None, 100)
        .await
        .expect("scan");
    assert_eq!(
        all,
        vec![
            ("acct/1".to_owned(), vec![]),
            ("acct/2".to_owned(), b"two".to_vec()),
            ("acct/3".to_owned(), vec![0, 255, 10]),
        ]
    );
    let page = client
        .state_scan("pop-client", "acct/", Some("acct/1"), 1)
        .await
        .expect("scan");
    assert_eq!(page, vec![("acct/2".to_owned(), b"two".to_vec())]);
    client
        .state_delete("pop-client", "acct/2")
        .await
        .expect("delete");
    assert_eq!(
        client.state_get("pop-client", "acct/2").await.expect("get"),
        None
    );
    let bad = client.state_put("", "k", b"v").await;
    assert!(
        matches!(
            bad,
            Err(ClientError::Refused {
                kind: ErrorKind::BadRequest,
                ..
            })
        ),
        "{bad:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_client_waits_for_a_server_that_starts_late() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = unix_client(dir.path(), Duration::from_secs(5));
    let started = Instant::now();
    let pending = tokio::spawn(async move {
        client
            .enqueue(
                "a@example.org",
                vec!["b@example.net".into()],
                origin(),
                b"late",
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!pending.is_finished());
    let server = start(
        dir.path(),
        open_store(dir.path()),
        UnixListener::bind(socket(dir.path())).expect("bind"),
        None,
    );
    let id = pending
        .await
        .expect("join")
        .expect("enqueue once the server is up");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(server.store.get(&id).expect("get").is_some());
    server.stop().await;
}

#[tokio::test]
async fn a_server_that_never_starts_is_unavailable_after_retry_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = unix_client(dir.path(), Duration::from_secs(1));
    let started = Instant::now();
    let err = client.ping().await.expect_err("nobody listens");
    let elapsed = started.elapsed();
    match &err {
        ClientError::Unavailable {
            endpoint,
            waited,
            last_error,
        } => {
            assert!(endpoint.contains("queue.sock"), "{endpoint}");
            assert!(*waited >= Duration::from_secs(1));
            assert!(!last_error.is_empty());
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(err.is_temporary() && !err.is_permanent());
    assert!(err.to_string().contains("unavailable after 1."), "{err}");
}

#[tokio::test]
async fn a_restart_of_the_server_is_a_delay_not_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = unix_client(dir.path(), Duration::from_secs(5));
    let server = start(
        dir.path(),
        open_store(dir.path()),
        UnixListener::bind(socket(dir.path())).expect("bind"),
        None,
    );
    let first = client
        .enqueue(
            "a@example.org",
            vec!["b@example.net".into()],
            origin(),
            b"one",
        )
        .await
        .expect("enqueue");
    // The client now holds an idle connection to the old server.
    server.stop().await;
    std::fs::remove_file(socket(dir.path())).expect("remove socket");

    let dir_path = dir.path().to_owned();
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        start(
            &dir_path,
            open_store(&dir_path),
            UnixListener::bind(socket(&dir_path)).expect("bind"),
            None,
        )
    });
    let second = client
        .enqueue(
            "a@example.org",
            vec!["b@example.net".into()],
            origin(),
            b"two",
        )
        .await
        .expect("enqueue across the restart");
    let server = restart.await.expect("join");
    assert!(
        server.store.get(&first).expect("get").is_some(),
        "queued before the restart"
    );
    assert!(server.store.get(&second).expect("get").is_some());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_connections_and_flushes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        open_store(dir.path()),
        UnixListener::bind(socket(dir.path())).expect("bind"),
        None,
    );
    let client = unix_client(dir.path(), Duration::from_secs(5));
    let body = vec![b'x'; 4096];
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let client = client.clone();
            let body = body.clone();
            tokio::spawn(async move {
                for j in 0..4 {
                    client
                        .enqueue(
                            "a@example.org",
                            vec![format!("r{i}-{j}@example.net")],
                            origin(),
                            &body,
                        )
                        .await
                        .expect("enqueue");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("join");
    }
    assert_eq!(server.store.stats().expect("stats").messages, 128);
    let flushes = server.store.committer().flushes();
    assert!(flushes < 128, "{flushes} flushes for 128 enqueues");
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_announcement_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        open_store(dir.path()),
        UnixListener::bind(socket(dir.path())).expect("bind"),
        None,
    );
    let mut raw = UnixStream::connect(socket(dir.path()))
        .await
        .expect("connect");
    // A 4 GiB body is announced; the server must answer, not allocate.
    raw.write_all(&[0, 0, 0, 13, 0xFF, 0xFF, 0xFF, 0xFF])
        .await
        .expect("write");
    raw.write_all(br#"{"op":"ping"}"#).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer))
        .await
        .expect("server closes")
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains(r#""kind":"bad_request""#), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn tcp_needs_the_shared_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = start(
        dir.path(),
        open_store(dir.path()),
        listener,
        Some(Secret::new("right secret")),
    );
    let options = ClientOptions {
        retry_for: Duration::from_secs(5),
        ..ClientOptions::default()
    };

    let good = Client::new(
        Endpoint::Tcp {
            addr: addr.clone(),
            secret: Secret::new("right secret"),
        },
        options.clone(),
    );
    let id = good
        .enqueue(
            "a@example.org",
            vec!["b@example.net".into()],
            origin(),
            b"over tcp",
        )
        .await
        .expect("enqueue over tcp");
    assert_eq!(good.body(&id).await.expect("body"), b"over tcp");

    let bad = Client::new(
        Endpoint::Tcp {
            addr: addr.clone(),
            secret: Secret::new("wrong secret"),
        },
        options,
    );
    let started = Instant::now();
    let err = bad.ping().await.expect_err("wrong secret");
    assert!(
        matches!(
            err,
            ClientError::Refused {
                kind: ErrorKind::Unauthorized,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "not retried");
    // Our configuration's fault, not the message's: never a 5xx.
    assert!(!err.is_permanent());
    assert!(
        !format!("{bad:?}").contains("wrong secret"),
        "secret in Debug"
    );

    // A raw peer that skips hello, or sends garbage first, is refused and
    // disconnected.
    for header in [&br#"{"op":"stats"}"#[..], b"not json"] {
        let mut raw = TcpStream::connect(&addr).await.expect("connect");
        let mut frame = (header.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(header);
        raw.write_all(&frame).await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer))
            .await
            .expect("server closes")
            .expect("read");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.contains(r#""kind":"unauthorized""#), "{text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn tcp_without_a_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = start(dir.path(), open_store(dir.path()), listener, None);
    let result = server.task.await.expect("join");
    assert!(matches!(result, Err(ServerError::TcpWithoutSecret)));
}

#[tokio::test]
async fn a_request_over_the_limit_or_a_refused_envelope_fails_at_once_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        open_store(dir.path()),
        UnixListener::bind(socket(dir.path())).expect("bind"),
        None,
    );
    let options = ClientOptions {
        retry_for: Duration::from_secs(5),
        limits: qs_queue::Limits {
            max_header: 1024,
            max_body: 16,
        },
        ..ClientOptions::default()
    };
    let client = Client::new(Endpoint::Unix(socket(dir.path())), options);
    let started = Instant::now();
    let err = client
        .enqueue(
            "a@example.org",
            vec!["b@example.net".into()],
            origin(),
            &[b'x'; 17],
        )
        .await
        .expect_err("too large");
    assert!(matches!(err, ClientError::Request(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(err.is_permanent() && err.is_too_large(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "not retried");
    // What core-queue will never queue is refused for good too.
    for recipients in [vec![], vec!["b@exam\u{1}ple.net".to_string()]] {
        let err = client
            .enqueue("a@example.org", recipients.clone(), origin(), b"x")
            .await
            .expect_err("refused");
        assert!(
            matches!(err, ClientError::Refused { .. }) && err.is_permanent(),
            "{recipients:?}: {err:?}"
        );
        assert!(!err.is_too_large());
    }
    client
        .enqueue(
            "a@example.org",
            vec!["b@example.net".into()],
            origin(),
            &[b'x'; 16],
        )
        .await
        .expect("at the limit");
    server.stop().await;
}

/// A body read at most `step` octets at a time, which claims `extra` octets
/// more than it has.
struct Pieces {
    bytes: Vec<u8>,
    step: usize,
    extra: u64,
}

impl qs_queue::BodySource for Pieces {
    fn len(&self) -> u64 {
        self.bytes.len() as u64 + self.extra
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = (offset as usize).min(self.bytes.len());
        let n = buf.len().min(self.step).min(self.bytes.len() - start);
        buf[..n].copy_from_slice(&self.bytes[start..start + n]);
        Ok(n)
    }
}

#[tokio::test]
async fn a_body_read_in_pieces_is_queued_as_the_same_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        open_store(dir.path()),
        UnixListener::bind(socket(dir.path())).expect("bind"),
        None,
    );
    let client = unix_client(dir.path(), Duration::from_secs(5));
    // Several of the client's 64 KiB pieces, each read in short reads.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let body = Pieces {
        bytes: bytes.clone(),
        step: 1000,
        extra: 0,
    };
    let id = client
        .enqueue_from(
            "a@example.org",
            vec!["b@example.net".into()],
            origin(),
            &body,
        )
        .await
        .expect("enqueue_from");
    let job = client
        .lease(&JobClass::outbound(), "relay-1", Duration::from_secs(60))
        .await
        .expect("lease")
        .expect("a job");
    assert_eq!(job.id, id);
    assert_eq!(job.body, bytes);

    // A source that ends before its length is refused without a frame being
    // completed; the broken connection is not reused.
    let short = Pieces {
        bytes: b"Subject: x\r\n\r\nshort\r\n".to_vec(),
        step: 4096,
        extra: 100,
    };
    let err = client
        .enqueue_from(
            "a@example.org",
            vec!["b@example.net".into()],
            origin(),
            &short,
        )
        .await
        .expect_err("short body");
    assert!(matches!(err, ClientError::Body(_)), "{err:?}");
    assert!(err.is_temporary() && !err.is_permanent());
    let again = client
        .enqueue(
            "a@example.org",
            vec!["b@example.net".into()],
            origin(),
            b"x\r\n",
        )
        .await
        .expect("the client still works");
    let queued = client.list(10).await.expect("list");
    assert_eq!(queued.len(), 2, "{queued:?}");
    assert!(queued.iter().any(|m| m.id == again));
    server.stop().await;
}
