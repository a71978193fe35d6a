//! What uploads cost the servers' memory: 20 clients at once each send 24 MiB of a
//! DATA (smtp-server) or an APPEND literal (imap-server) that they never finish. The
//! bodies go to the spool folder, not memory: the resident size (VmRSS of
//! `/proc/PID/status`) may grow by at most `MAX_GROWTH` while they arrive, and must
//! come back down once the clients are gone. Held in memory, the uploads alone would be
//! 480 MiB.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use integration_tests::{Daemon, Installation};

/// Clients at once.
const CLIENTS: usize = 20;
/// What each sends of its upload.
const UPLOAD: usize = 24 << 20;
/// How much the resident size may grow while the uploads arrive.
const MAX_GROWTH_KIB: u64 = 40 << 10;
/// How far above where it started the resident size may stay once the clients left.
const MAX_LEFT_KIB: u64 = 16 << 10;
/// What a spool keeps back before it writes to its file.
const WRITE_BUFFER: u64 = 64 << 10;
/// How long the servers may take to read everything (or to notice the clients left).
const WAIT: Duration = Duration::from_secs(120);

/// A number of `/proc/<pid>/status` (sizes are in KiB).
fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The sizes of the spool files `pid` has open (unlinked files under `folder`).
fn spool_files(pid: u32, folder: &str) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(Result::ok)
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.to_string_lossy().into_owned();
                target.contains(folder) && target.ends_with(" (deleted)")
            })
        })
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .map(|m| m.len())
        .collect()
}

/// Text lines of 78 octets and CRLF, about 64 KiB.
fn lines() -> Vec<u8> {
    let line = format!("{}\r\n", "x".repeat(78));
    line.repeat(65_536 / line.len()).into_bytes()
}

/// A line-based client.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    /// Sends `command` and reads up to the SMTP reply's last line, which must
    /// have `code`.
    fn smtp(&mut self, command: &str, code: &str) {
        self.writer.write_all(command.as_bytes()).unwrap();
        loop {
            let line = self.line();
            assert!(line.starts_with(code), "{command:?}: {line:?}");
            if line.as_bytes().get(3) == Some(&b' ') {
                return;
            }
        }
    }

    /// Sends `command` and reads up to the line that starts with `until`.
    fn imap(&mut self, command: &str, until: &str) -> String {
        self.writer.write_all(command.as_bytes()).unwrap();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "{command:?}: connection closed");
            if line.starts_with(until) {
                return line;
            }
        }
    }
}

/// Sends `UPLOAD` octets on every client at once and watches the resident size of
/// `daemon` until its spool files hold them all (but for the last write buffer of
/// each); returns the highest resident size seen, and whether they did.
fn upload_and_watch(daemon: &Daemon, clients: &mut [Client], spool: &str) -> (u64, bool) {
    let pid = daemon.pid();
    let mut highest = status_field(pid, "VmRSS:");
    let mut spooled = false;
    std::thread::scope(|scope| {
        for client in clients.iter_mut() {
            scope.spawn(move || {
                let chunk = lines();
                let mut sent = 0;
                while sent < UPLOAD {
                    let n = chunk.len().min(UPLOAD - sent);
                    client.writer.write_all(&chunk[..n]).unwrap();
                    sent += n;
                }
            });
        }
        let started = Instant::now();
        loop {
            highest = highest.max(status_field(pid, "VmRSS:"));
            let files = spool_files(pid, spool);
            spooled =
                files.len() == CLIENTS && files.iter().all(|&n| n + WRITE_BUFFER >= UPLOAD as u64);
            if spooled || started.elapsed() > WAIT {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (highest, spooled)
}

/// Closes the clients and waits until `daemon` has let go of its spool files and
/// of the threads it started for them (imap-server runs sessions on tokio's
/// blocking pool, whose threads end after 10 s without work); returns its resident
/// size then.
fn close_and_settle(daemon: &Daemon, clients: Vec<Client>, spool: &str, threads: u64) -> u64 {
    drop(clients);
    let pid = daemon.pid();
    let started = Instant::now();
    while !spool_files(pid, spool).is_empty() || status_field(pid, "Threads:") > threads {
        assert!(
            started.elapsed() < WAIT,
            "the spool files or the threads stayed after the clients left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    status_field(pid, "VmRSS:")
}

fn report(what: &str, before: u64, highest: u64, after: u64) {
    println!(
        "{what}: VmRSS {} MiB before, {} MiB at most with {CLIENTS} uploads of {} MiB, {} MiB after they closed",
        before >> 10,
        highest >> 10,
        UPLOAD >> 20,
        after >> 10
    );
}

#[test]
fn twenty_unfinished_data_uploads_cost_smtp_server_little_memory() {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("smtp_server", "max_connections_per_ip", "25");
    inst.add_users(&["alice@example.test"]);
    let smtp = inst.start("smtp-server");
    let mx = inst.listening("smtp-server", "smtp_server.listen")[0];

    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| {
            let mut c = Client::connect(mx);
            assert!(c.line().starts_with("220 "));
            c.smtp("EHLO client.example\r\n", "250");
            c.smtp("MAIL FROM:<someone@far.example>\r\n", "250");
            c.smtp("RCPT TO:<alice@example.test>\r\n", "250");
            c.smtp("DATA\r\n", "354");
            c
        })
        .collect();
    let before = status_field(smtp.pid(), "VmRSS:");
    let threads = status_field(smtp.pid(), "Threads:");
    let (highest, spooled) = upload_and_watch(&smtp, &mut clients, "/spool/smtp-server/");
    let after = close_and_settle(&smtp, clients, "/spool/smtp-server/", threads);
    report("smtp-server", before, highest, after);
    assert!(
        highest < before + MAX_GROWTH_KIB,
        "smtp-server grew from {before} KiB to {highest} KiB with {CLIENTS} uploads"
    );
    assert!(spooled, "smtp-server did not spool every upload");
    assert!(
        after < before + MAX_LEFT_KIB,
        "smtp-server kept {after} KiB after the uploads (from {before} KiB)"
    );
    // The messages were never finished: nothing was queued, and the server goes on.
    let mut c = Client::connect(mx);
    assert!(c.line().starts_with("220 "));
    c.smtp("NOOP\r\n", "250");
}

#[test]
fn twenty_unfinished_append_uploads_cost_imap_server_little_memory() {
    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("imap_server", "allow_plaintext_auth", "true");
    inst.set("imap_server", "max_connections_per_ip", "25");
    inst.set("imap_server", "max_connections_per_user", "25");
    inst.add_users(&["alice@example.test"]);
    let imap = inst.start("imap-server");
    let addr = inst.listening("imap-server", "imap_server.listen")[0];

    // Each announces a literal of the largest size allowed and sends 24 MiB of it.
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| {
            let mut c = Client::connect(addr);
            assert!(c.line().starts_with("* OK"));
            let ok = c.imap("a LOGIN alice@example.test pw\r\n", "a ");
            assert!(ok.starts_with("a OK"), "{ok}");
            let go = c.imap("b APPEND INBOX {26214400}\r\n", "+");
            assert!(go.starts_with("+ "), "{go}");
            c
        })
        .collect();
    let before = status_field(imap.pid(), "VmRSS:");
    let threads = status_field(imap.pid(), "Threads:");
    let (highest, spooled) = upload_and_watch(&imap, &mut clients, "/spool/imap-server/");
    let after = close_and_settle(&imap, clients, "/spool/imap-server/", threads);
    report("imap-server", before, highest, after);
    assert!(
        highest < before + MAX_GROWTH_KIB,
        "imap-server grew from {before} KiB to {highest} KiB with {CLIENTS} uploads"
    );
    assert!(spooled, "imap-server did not spool every upload");
    assert!(
        after < before + MAX_LEFT_KIB,
        "imap-server kept {after} KiB after the uploads (from {before} KiB)"
    );
    // Nothing was appended, and the server goes on.
    let mut c = Client::connect(addr);
    assert!(c.line().starts_with("* OK"));
    let ok = c.imap("a LOGIN alice@example.test pw\r\n", "a ");
    assert!(ok.starts_with("a OK"), "{ok}");
    let status = c.imap("s STATUS INBOX (MESSAGES)\r\n", "* STATUS");
    assert!(status.contains("(MESSAGES 0)"), "{status}");
}
