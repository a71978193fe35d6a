//! The session loop over real sockets: a real directory, a real Maildir, the
//! limits made small.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use qs_directory::{Options, Secret};
use qs_mailstore::{Delivery, FolderName, Mailbox};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::*;

struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    addr: SocketAddr,
    trigger: qs_service::shutdown::ShutdownTrigger,
    server: tokio::task::JoinHandle<()>,
}

async fn start(limits: Limits) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    let directory = Directory::create(data.join("directory.json"), Options::default()).unwrap();
    directory.add_domain("example.test").unwrap();
    directory
        .add_user("alice@example.test", "Alice", &Secret::from("pw"))
        .unwrap();
    let (cert, key) = (data.join("cert.pem"), data.join("key.pem"));
    qs_service::tls::ensure_self_signed("mx.test", &cert, &key).unwrap();
    let config = ServerConfig {
        data_dir: data.clone(),
        hostname: "mx.test".into(),
        directory: Arc::new(directory),
        tls: qs_service::tls::acceptor(&cert, &key).unwrap(),
        allow_plaintext_auth: true,
        limits,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = qs_service::shutdown::channel();
    let listeners = Listeners::plain(LISTENER_KEYS, vec![listener]);
    let server = tokio::spawn(serve(config, listeners, shutdown));
    Fixture {
        _tmp: tmp,
        data,
        addr,
        trigger,
        server,
    }
}

fn quick() -> Limits {
    Limits {
        login_delay: Duration::ZERO,
        ..Limits::default()
    }
}

impl Fixture {
    fn mailbox(&self) -> Mailbox {
        let root = qs_mailstore::mailbox_path(&self.data, "example.test", "alice").unwrap();
        Mailbox::open(root, "mx.test").unwrap()
    }

    fn deliver(&self, bytes: &[u8], key: &str) {
        let delivered = self
            .mailbox()
            .deliver(&FolderName::inbox(), bytes, key)
            .unwrap();
        assert!(matches!(delivered, Delivery::Stored { .. }));
    }

    async fn connect(&self) -> Client {
        let (read, write) = TcpStream::connect(self.addr).await.unwrap().into_split();
        Client {
            read: BufReader::new(read),
            write,
        }
    }
}

struct Client {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl Client {
    async fn line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(10), self.read.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        line
    }

    async fn send(&mut self, text: &str) {
        self.write.write_all(text.as_bytes()).await.unwrap();
    }

    /// Sends a command and returns the first line of the reply.
    async fn cmd(&mut self, text: &str) -> String {
        self.send(&format!("{text}\r\n")).await;
        self.line().await
    }

    async fn login(&mut self) -> String {
        assert!(self.line().await.starts_with("+OK"));
        assert!(self.cmd("USER alice@example.test").await.starts_with("+OK"));
        self.cmd("PASS pw").await
    }

    /// True if the server closed the connection.
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.read.read_to_end(&mut rest)).await,
            Ok(Ok(0))
        )
    }
}

#[tokio::test]
async fn retr_dele_quit_over_a_socket() {
    let f = start(quick()).await;
    f.deliver(b"Subject: a\r\n\r\n.x\r\n", "k1");
    let mut c = f.connect().await;
    assert!(c.login().await.starts_with("+OK"), "login");
    assert_eq!(c.cmd("STAT").await, "+OK 1 18\r\n");
    // Pipelined: both answers come, in order.
    c.send("RETR 1\r\nDELE 1\r\n").await;
    let mut got = String::new();
    for _ in 0..6 {
        got.push_str(&c.line().await);
    }
    assert_eq!(
        got,
        "+OK 18 octets\r\nSubject: a\r\n\r\n..x\r\n.\r\n+OK message 1 deleted\r\n"
    );
    assert_eq!(c.cmd("QUIT").await, "+OK signing off\r\n");
    assert!(c.closed().await);
    assert!(f.mailbox().inbox().messages().unwrap().is_empty());
}

#[tokio::test]
async fn a_second_session_is_in_use_until_the_first_ends() {
    let f = start(quick()).await;
    let mut first = f.connect().await;
    assert!(first.login().await.starts_with("+OK"));
    let mut second = f.connect().await;
    assert!(second.login().await.starts_with("-ERR [IN-USE]"));
    drop(first);
    // The lock goes with the connection; wait for the server to notice.
    let mut reply = String::new();
    for _ in 0..100 {
        second.cmd("USER alice@example.test").await;
        reply = second.cmd("PASS pw").await;
        if reply.starts_with("+OK") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reply.starts_with("+OK"), "{reply}");
}

#[tokio::test]
async fn an_idle_session_is_logged_out_and_changes_nothing() {
    let f = start(Limits {
        idle_timeout: Duration::from_millis(300),
        ..quick()
    })
    .await;
    f.deliver(b"Subject: a\r\n\r\nx\r\n", "k1");
    let mut c = f.connect().await;
    assert!(c.login().await.starts_with("+OK"));
    assert!(c.cmd("RETR 1").await.starts_with("+OK"));
    for _ in 0..4 {
        c.line().await;
    }
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    let started = Instant::now();
    assert!(c.closed().await);
    assert!(started.elapsed() >= Duration::from_millis(250));
    let left = f.mailbox().inbox().messages().unwrap();
    assert_eq!(left.len(), 1, "a dropped session deletes nothing");
    assert!(
        !left[0].flags.contains(qs_mailstore::Flag::Seen),
        "nor marks"
    );
}

#[tokio::test]
async fn connections_per_address_are_limited() {
    let f = start(Limits {
        max_connections_per_address: 2,
        ..quick()
    })
    .await;
    let mut a = f.connect().await;
    let mut b = f.connect().await;
    assert!(a.line().await.starts_with("+OK"));
    assert!(b.line().await.starts_with("+OK"));
    let mut c = f.connect().await;
    assert_eq!(
        c.line().await,
        "-ERR [SYS/TEMP] too many connections; try again later\r\n"
    );
    assert!(c.closed().await);
    drop(a);
    // Once one is gone a new one is admitted.
    let mut admitted = false;
    for _ in 0..100 {
        let mut d = f.connect().await;
        if d.line().await.starts_with("+OK") {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted);
}

#[tokio::test]
async fn failed_logins_are_delayed_and_an_address_gets_blocked() {
    let f = start(Limits {
        login_delay: Duration::from_millis(100),
        max_failures_per_address: 3,
        ..Limits::default()
    })
    .await;
    let mut c = f.connect().await;
    c.line().await;
    c.cmd("USER alice@example.test").await;
    let started = Instant::now();
    assert_eq!(
        c.cmd("PASS wrong").await,
        "-ERR [AUTH] authentication failed\r\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    c.cmd("USER alice@example.test").await;
    let started = Instant::now();
    assert!(c.cmd("PASS wrong").await.starts_with("-ERR [AUTH]"));
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the delay doubles"
    );
    // A new connection, the third failure from this address: blocked from now on.
    let mut d = f.connect().await;
    d.line().await;
    d.cmd("USER nobody@example.test").await;
    assert!(d.cmd("PASS x").await.starts_with("-ERR [AUTH]"));
    let mut e = f.connect().await;
    e.line().await;
    e.cmd("USER alice@example.test").await;
    assert_eq!(
        e.cmd("PASS pw").await,
        "-ERR [SYS/TEMP] too many failed logins from your address; try again later\r\n"
    );
    assert!(e.closed().await);
}

#[tokio::test]
async fn shutdown_ends_sessions_without_update() {
    let f = start(quick()).await;
    f.deliver(b"Subject: a\r\n\r\nx\r\n", "k1");
    let mut c = f.connect().await;
    assert!(c.login().await.starts_with("+OK"));
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    let inbox = f.mailbox().inbox();
    f.trigger.fire();
    assert!(c.closed().await);
    tokio::time::timeout(Duration::from_secs(10), f.server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inbox.messages().unwrap().len(), 1);
}

#[test]
fn the_limits_follow_pop3_server_and_default_to_the_built_in_config() {
    let config = Config::parse(
        "[pop3_server]\nmax_connections = 3\ntls_max_connections = 4\n\
         max_connections_per_ip = 2\nidle_timeout_secs = 900\nmax_auth_failures = 6\n\
         max_errors = 7\n",
        Path::new("/etc/qs/quicksilver.toml"),
    )
    .unwrap();
    let limits = Limits::from_config(&config.pop3_server);
    assert_eq!(
        (
            limits.max_connections,
            limits.max_tls_connections,
            limits.max_connections_per_address,
            limits.idle_timeout,
            limits.max_failures_per_address,
            limits.max_errors,
        ),
        (3, 4, 2, Duration::from_secs(900), 6, 7)
    );
    let defaults = Limits::default();
    assert_eq!(
        (
            defaults.max_connections,
            defaults.max_tls_connections,
            defaults.max_connections_per_address,
            defaults.idle_timeout,
            defaults.max_failures_per_address,
            defaults.max_errors,
        ),
        (200, 200, 20, Duration::from_secs(600), 10, 10)
    );
}
