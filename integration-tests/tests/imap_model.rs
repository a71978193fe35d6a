//! Several IMAP clients at once on one folder, each checking every response against
//! its own model of what it has been told (what Dovecot's imaptest tracks).
//!
//! Two imap-server processes share the installation; the clients connect to either,
//! so changes reach a session both from its own process and from a listing of the
//! Maildir. Each client does seeded random APPEND, STORE, COPY, MOVE, EXPUNGE, FETCH,
//! SEARCH, NOOP and IDLE, some pipelined, and checks (RFC 3501 §5.5, §7.4.1):
//! sequence numbers stay within the EXISTS it was told; EXPUNGE names a message it
//! knows and never comes while it has a FETCH, STORE or SEARCH by sequence number
//! in progress or waiting; keywords in FETCH FLAGS were announced by FLAGS first;
//! UIDs increase with sequence numbers and a message's UID never changes or comes
//! back; a STORE without .SILENT answers with the new flags of every message it
//! named; no BAD to a valid command. The run is bounded in operations and seconds;
//! the seed is printed, and `QS_MODEL_SEED=<n>` replays the same commands.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use integration_tests::{Daemon, Installation};
use qs_mailstore::{Delivery, FolderName, Mailbox};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ALICE: &str = "alice@example.test";
/// Clients at once; the first ones use the first process, the others the second.
const CLIENTS: usize = 5;
const ON_FIRST_PROCESS: usize = 3;
/// Command batches per client at most, and the time they may take together.
const BATCHES: usize = 150;
const TIME_LIMIT: Duration = Duration::from_secs(40);
const KEYWORDS: [&str; 5] = ["$Label1", "$Label2", "$Label3", "$Label4", "$Label5"];
const SYSTEM_FLAGS: [&str; 4] = ["\\Seen", "\\Flagged", "\\Answered", "\\Draft"];

#[test]
fn clients_on_one_folder_agree_with_their_models() {
    let seed = std::env::var("QS_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("imap model seed: {seed} (QS_MODEL_SEED={seed} replays it)");

    let inst = Installation::init();
    inst.use_ephemeral_ports();
    inst.set("imap_server", "allow_plaintext_auth", "true");
    inst.add_users(&[ALICE]);
    let mailbox = {
        let root = qs_mailstore::mailbox_path(&inst.data_dir(), "example.test", "alice").unwrap();
        Mailbox::open(root, "mx.test").unwrap()
    };
    for i in 0..20 {
        let body = message(&format!("first {i}"));
        match mailbox
            .deliver(&FolderName::inbox(), &body, &format!("{i}:{seed}"))
            .unwrap()
        {
            Delivery::Stored { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    let first = inst.start("imap-server");
    let first_addr = address(&inst, &first);
    let second = Daemon::start(
        "imap-server",
        &inst.config,
        inst.dir.path().join("imap-server-2.log"),
    );
    let second_addr = address(&inst, &second);
    {
        let mut setup = Client::connect(first_addr, 99, seed);
        setup.login();
        setup.run_batch(&[Cmd::plain("CREATE Archive", Kind::Other)]);
        setup.logout();
    }

    let deadline = Instant::now() + TIME_LIMIT;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = if i < ON_FIRST_PROCESS {
                first_addr
            } else {
                second_addr
            };
            std::thread::spawn(move || {
                let mut client = Client::connect(addr, i, seed);
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    client.login();
                    client.select();
                    for _ in 0..BATCHES {
                        if Instant::now() > deadline {
                            break;
                        }
                        client.random_batch();
                    }
                    client.logout();
                }));
                match result {
                    Ok(()) => Ok(client.batches),
                    Err(e) => Err(format!(
                        "client {i}: {}\n--- its last lines ---\n{}",
                        e.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default(),
                        client
                            .transcript
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("\n")
                    )),
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut batches = 0;
    for t in threads {
        match t.join().unwrap() {
            Ok(n) => batches += n,
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "seed {seed} (QS_MODEL_SEED={seed} replays it):\n{}\n--- first log ---\n{}\n--- second log ---\n{}",
        failures.join("\n\n"),
        tail(&first.log()),
        tail(&second.log()),
    );
    // The run did something: most batches ran before the deadline.
    assert!(
        batches >= CLIENTS * 10,
        "only {batches} batches ran (seed {seed})"
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The plain listener of a daemon, from the run file it wrote.
fn address(inst: &Installation, daemon: &Daemon) -> SocketAddr {
    let path = inst.data_dir().join("run/imap-server.json");
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
            && json["pid"].as_u64() == Some(u64::from(daemon.pid()))
        {
            return json["listeners"]["imap_server.listen"][0]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "imap-server wrote no run file; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: Bob <bob@example.test>\r\nTo: Alice <alice@example.test>\r\nSubject: {subject}\r\n\
         Date: Tue, 1 Jul 2025 10:00:00 +0000\r\n\r\nThis is {subject}.\r\n"
    )
    .into_bytes()
}

/// What a command is, for the rules about untagged responses during it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// FETCH, STORE or SEARCH by sequence numbers: no EXPUNGE during it.
    BySequence,
    /// COPY or MOVE by sequence numbers: an EXPUNGE may come during it, but not
    /// while it waits behind another command.
    SequenceSet,
    /// UID FETCH, UID STORE, UID SEARCH, UID COPY, UID MOVE.
    ByUid,
    /// EXPUNGE, NOOP, CHECK, APPEND, IDLE and the rest.
    Other,
}

/// A STORE without .SILENT: each message it names must be answered with flags that
/// show the change.
#[derive(Debug, Clone)]
struct StoreCheck {
    seqs: Vec<usize>,
    /// '+', '-' or ' ' (replace).
    op: char,
    flags: Vec<String>,
    /// Sequence numbers answered so far (shifted by expunges, which cannot come).
    answered: HashSet<usize>,
}

#[derive(Debug, Clone)]
struct Cmd {
    text: String,
    kind: Kind,
    /// Set when the command changes the sequence numbers itself (EXPUNGE, MOVE):
    /// nothing that uses them may follow it in the same batch.
    renumbers: bool,
    /// A literal to send after the line (APPEND, as LITERAL-: `{n+}`).
    literal: Option<Vec<u8>>,
    /// An IDLE, ended with DONE after a pause.
    idle: bool,
    store: Option<StoreCheck>,
    /// The NO response codes this command may get.
    may_fail: &'static [&'static str],
}

impl Cmd {
    fn plain(text: &str, kind: Kind) -> Cmd {
        Cmd {
            text: text.to_owned(),
            kind,
            renumbers: false,
            literal: None,
            idle: false,
            store: None,
            may_fail: &[],
        }
    }
}

/// One message as the client knows it.
#[derive(Debug, Clone, Default)]
struct Known {
    uid: Option<u32>,
}

struct Client {
    id: usize,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    rng: StdRng,
    next_tag: u32,
    /// The view: sequence number - 1 → what is known of the message.
    messages: Vec<Known>,
    /// Keywords announced by FLAGS and PERMANENTFLAGS.
    keywords: HashSet<String>,
    /// UIDs the client saw expunged: they never come back.
    expunged_uids: HashSet<u32>,
    /// Commands sent and not answered yet, oldest first.
    in_flight: VecDeque<Cmd>,
    transcript: VecDeque<String>,
    batches: usize,
}

impl Client {
    fn connect(addr: SocketAddr, id: usize, seed: u64) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut client = Client {
            id,
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            rng: StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            next_tag: 0,
            messages: Vec::new(),
            keywords: HashSet::new(),
            expunged_uids: HashSet::new(),
            in_flight: VecDeque::new(),
            transcript: VecDeque::new(),
            batches: 0,
        };
        let greeting = client.read_response();
        assert!(greeting.starts_with("* OK"), "greeting: {greeting}");
        client
    }

    fn note(&mut self, line: String) {
        if self.transcript.len() >= 80 {
            self.transcript.pop_front();
        }
        self.transcript.push_back(line);
    }

    fn fail(&self, what: String) -> ! {
        panic!("{what}")
    }

    fn login(&mut self) {
        self.run_batch(&[Cmd::plain(&format!("LOGIN {ALICE} pw"), Kind::Other)]);
    }

    fn select(&mut self) {
        self.run_batch(&[Cmd::plain("SELECT INBOX", Kind::Other)]);
    }

    fn logout(&mut self) {
        self.send_batch(&[Cmd::plain("LOGOUT", Kind::Other)]);
        while !self.in_flight.is_empty() {
            let line = self.read_response();
            if line.starts_with("* BYE") {
                continue;
            }
            self.handle(&line);
        }
    }

    /// One full response: a line, and the literals it announces with the lines that
    /// follow them (literal contents are replaced by `""`).
    fn read_response(&mut self) -> String {
        let mut text = String::new();
        loop {
            let mut line = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .unwrap_or_else(|e| {
                    self.fail(format!("no answer (in flight: {:?}): {e}", self.tags()))
                });
            if n == 0 {
                self.fail(format!("connection closed (in flight: {:?})", self.tags()));
            }
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            let literal = line
                .strip_suffix('}')
                .and_then(|l| l.rfind('{').map(|i| (i, &l[i + 1..])))
                .and_then(|(i, n)| n.parse::<usize>().ok().map(|n| (i, n)));
            match literal {
                Some((start, size)) => {
                    text.push_str(&line[..start]);
                    text.push_str("\"\"");
                    let mut skip = vec![0u8; size];
                    self.reader.read_exact(&mut skip).unwrap();
                }
                None => {
                    text.push_str(&line);
                    break;
                }
            }
        }
        self.note(format!("S: {}", shorten(&text)));
        text
    }

    fn tags(&self) -> Vec<String> {
        self.in_flight
            .iter()
            .map(|c| c.text.split(' ').next().unwrap_or("").to_owned())
            .collect()
    }

    fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("c{}.{}", self.id, self.next_tag)
    }

    /// Sends the commands in one write (so that the server has them all waiting
    /// behind the first), then reads until each is answered.
    fn run_batch(&mut self, cmds: &[Cmd]) {
        self.send_batch(cmds);
        while !self.in_flight.is_empty() {
            let line = self.read_response();
            self.handle(&line);
        }
        self.batches += 1;
    }

    fn send_batch(&mut self, cmds: &[Cmd]) {
        let mut bytes = Vec::new();
        for cmd in cmds {
            let tag = self.tag();
            let mut cmd = cmd.clone();
            cmd.text = format!("{tag} {}", cmd.text);
            bytes.extend_from_slice(cmd.text.as_bytes());
            bytes.extend_from_slice(b"\r\n");
            if let Some(literal) = &cmd.literal {
                bytes.extend_from_slice(literal);
                bytes.extend_from_slice(b"\r\n");
            }
            self.note(format!("C: {}", cmd.text));
            let idle = cmd.idle;
            self.in_flight.push_back(cmd);
            if idle {
                // IDLE stands alone: wait for the continuation, pause, DONE.
                self.writer.write_all(&bytes).unwrap();
                bytes.clear();
                loop {
                    let line = self.read_response();
                    if line.starts_with("+ ") || line == "+" {
                        break;
                    }
                    self.handle(&line);
                }
                std::thread::sleep(Duration::from_millis(self.rng.random_range(20..200)));
                self.note("C: DONE".into());
                bytes.extend_from_slice(b"DONE\r\n");
            }
        }
        self.writer.write_all(&bytes).unwrap();
    }

    /// Checks one response against the model and moves the model on.
    fn handle(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("* ") else {
            return self.tagged(line);
        };
        let words: Vec<&str> = rest.splitn(3, ' ').collect();
        let exists = self.messages.len();
        if let Ok(n) = words[0].parse::<usize>() {
            match words.get(1).copied() {
                Some("EXISTS") => {
                    if n < exists {
                        self.fail(format!("EXISTS dropped from {exists} to {n}"));
                    }
                    self.messages.resize(n, Known::default());
                }
                Some("RECENT") => {}
                Some("EXPUNGE") => self.expunge(n),
                Some("FETCH") => self.fetch(n, words.get(2).copied().unwrap_or("")),
                _ => self.fail(format!("unexpected response: {line}")),
            }
            return;
        }
        if let Some(list) = rest.strip_prefix("FLAGS (") {
            self.keywords = flag_list(list)
                .into_iter()
                .filter(|f| !f.starts_with('\\'))
                .collect();
        } else if let Some(list) = rest.strip_prefix("OK [PERMANENTFLAGS (") {
            self.keywords
                .extend(flag_list(list).into_iter().filter(|f| !f.starts_with('\\')));
        } else if let Some(numbers) = rest.strip_prefix("SEARCH") {
            let current = self.in_flight.front().map(|c| c.kind);
            for n in numbers.split_whitespace() {
                let n: usize = n
                    .parse()
                    .unwrap_or_else(|_| self.fail(format!("bad SEARCH: {line}")));
                if current == Some(Kind::BySequence) && (n == 0 || n > exists) {
                    self.fail(format!("SEARCH names {n} with EXISTS {exists}"));
                }
            }
        } else if rest.starts_with("BYE") {
            self.fail(format!("unexpected BYE: {line}"));
        }
    }

    fn expunge(&mut self, n: usize) {
        let exists = self.messages.len();
        if n == 0 || n > exists {
            self.fail(format!("EXPUNGE {n} with EXISTS {exists}"));
        }
        let Some(current) = self.in_flight.front() else {
            self.fail("EXPUNGE with no command in progress".into());
        };
        if current.kind == Kind::BySequence {
            self.fail(format!("EXPUNGE {n} during {}", current.text));
        }
        if let Some(waiting) = self
            .in_flight
            .iter()
            .skip(1)
            .find(|c| matches!(c.kind, Kind::BySequence | Kind::SequenceSet))
        {
            self.fail(format!(
                "EXPUNGE {n} while {} waits behind {}",
                waiting.text, current.text
            ));
        }
        let gone = self.messages.remove(n - 1);
        if let Some(uid) = gone.uid {
            self.expunged_uids.insert(uid);
        }
    }

    fn fetch(&mut self, n: usize, data: &str) {
        let exists = self.messages.len();
        if n == 0 || n > exists {
            self.fail(format!("FETCH for {n} with EXISTS {exists}"));
        }
        if let Some(uid) = fetch_uid(data) {
            if self.expunged_uids.contains(&uid) {
                self.fail(format!("UID {uid} of an expunged message came back at {n}"));
            }
            match self.messages[n - 1].uid {
                Some(known) if known != uid => {
                    self.fail(format!("UID of {n} changed from {known} to {uid}"))
                }
                Some(_) => {}
                None => {
                    let below = self.messages[..n - 1].iter().filter_map(|m| m.uid).max();
                    let above = self.messages[n..].iter().filter_map(|m| m.uid).min();
                    if below.is_some_and(|b| b >= uid) || above.is_some_and(|a| a <= uid) {
                        self.fail(format!(
                            "UID {uid} at {n} is out of order (below {below:?}, above {above:?})"
                        ));
                    }
                    self.messages[n - 1].uid = Some(uid);
                }
            }
        }
        if let Some(flags) = fetch_flags(data) {
            for f in flags.iter().filter(|f| !f.starts_with('\\')) {
                if !self.keywords.contains(f) {
                    self.fail(format!("keyword {f} in FETCH before FLAGS announced it"));
                }
            }
            if let Some(check) = self.in_flight.front_mut().and_then(|c| c.store.as_mut())
                && check.seqs.contains(&n)
            {
                let shows = |f: &String| flags.contains(f);
                let ok = match check.op {
                    '+' => check.flags.iter().all(shows),
                    '-' => !check.flags.iter().any(shows),
                    _ => check.flags.iter().all(shows),
                };
                if ok {
                    check.answered.insert(n);
                }
            }
        }
    }

    fn tagged(&mut self, line: &str) {
        let Some(cmd) = self.in_flight.pop_front() else {
            self.fail(format!("tagged answer with nothing in flight: {line}"));
        };
        let tag = cmd.text.split(' ').next().unwrap_or("");
        let Some(status) = line.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) else {
            self.fail(format!("answer {line} out of order: expected {tag}"));
        };
        if status.starts_with("OK") {
            if let Some(check) = &cmd.store {
                let missing: Vec<_> = check
                    .seqs
                    .iter()
                    .filter(|s| !check.answered.contains(s))
                    .collect();
                if !missing.is_empty() {
                    self.fail(format!(
                        "{} did not answer the new flags of {missing:?}",
                        cmd.text
                    ));
                }
            }
        } else if status.starts_with("NO") {
            if !cmd.may_fail.iter().any(|code| status.contains(code)) {
                self.fail(format!("{} failed: {line}", cmd.text));
            }
        } else {
            self.fail(format!("{} got {line}", cmd.text));
        }
    }

    /// A random sequence set of up to `max` messages the client knows.
    fn seq_set(&mut self, max: usize) -> Option<Vec<usize>> {
        let exists = self.messages.len();
        if exists == 0 {
            return None;
        }
        let count = self.rng.random_range(1..=max.min(exists));
        let mut seqs: BTreeSet<usize> = BTreeSet::new();
        if self.rng.random_bool(0.3) {
            let start = self.rng.random_range(1..=exists);
            let end = (start + count - 1).min(exists);
            seqs.extend(start..=end);
        } else {
            for _ in 0..count {
                seqs.insert(self.rng.random_range(1..=exists));
            }
        }
        Some(seqs.into_iter().collect())
    }

    fn random_flags(&mut self) -> Vec<String> {
        let mut flags: Vec<String> = Vec::new();
        while flags.is_empty() {
            for f in SYSTEM_FLAGS.iter().chain(KEYWORDS.iter()) {
                if self.rng.random_bool(0.2) {
                    flags.push((*f).to_owned());
                }
            }
        }
        flags
    }

    fn random_command(&mut self) -> Option<Cmd> {
        let exists = self.messages.len();
        let choice = if exists > 60 {
            // Keep the folder small: delete and expunge more often.
            *[3, 4, 8, 9].get(self.rng.random_range(0..4)).unwrap_or(&3)
        } else {
            self.rng.random_range(0..14)
        };
        Some(match choice {
            0 => {
                let flags = if self.rng.random_bool(0.5) {
                    format!(" ({})", self.random_flags().join(" "))
                } else {
                    String::new()
                };
                let body = message(&format!("c{} {}", self.id, self.next_tag));
                let mut cmd = Cmd::plain(
                    &format!("APPEND INBOX{flags} {{{}+}}", body.len()),
                    Kind::Other,
                );
                cmd.literal = Some(body);
                cmd
            }
            1 | 2 => {
                let seqs = self.seq_set(8)?;
                let items = [
                    "(UID FLAGS)",
                    "(FLAGS UID)",
                    "FLAGS",
                    "(UID RFC822.SIZE INTERNALDATE)",
                    "(UID ENVELOPE)",
                    "(UID BODY.PEEK[HEADER.FIELDS (Subject)])",
                    "(UID BODY.PEEK[])",
                    "(FLAGS BODY.PEEK[TEXT])",
                ];
                let items = items[self.rng.random_range(0..items.len())];
                let mut cmd = Cmd::plain(
                    &format!("FETCH {} {items}", set_text(&seqs)),
                    Kind::BySequence,
                );
                cmd.may_fail = &["[EXPUNGEISSUED]"];
                cmd
            }
            3 => {
                let seqs = self.seq_set(6)?;
                let silent = self.rng.random_bool(0.4);
                let op = ['+', '-', ' '][self.rng.random_range(0..3)];
                let mut flags = self.random_flags();
                if self.rng.random_bool(0.4) && op == '+' {
                    flags.push("\\Deleted".into());
                }
                let mut cmd = Cmd::plain(
                    &format!(
                        "STORE {} {}FLAGS{} ({})",
                        set_text(&seqs),
                        op.to_string().trim(),
                        if silent { ".SILENT" } else { "" },
                        flags.join(" ")
                    ),
                    Kind::BySequence,
                );
                if !silent {
                    cmd.store = Some(StoreCheck {
                        seqs,
                        op,
                        flags,
                        answered: HashSet::new(),
                    });
                }
                cmd
            }
            4 => {
                let seqs = self.seq_set(4)?;
                Cmd::plain(
                    &format!("STORE {} +FLAGS.SILENT (\\Deleted)", set_text(&seqs)),
                    Kind::BySequence,
                )
            }
            5 => {
                let mut cmd = Cmd::plain(
                    &format!(
                        "UID FETCH 1:* (FLAGS{})",
                        if self.rng.random_bool(0.5) {
                            " RFC822.SIZE"
                        } else {
                            ""
                        }
                    ),
                    Kind::ByUid,
                );
                cmd.may_fail = &["[EXPUNGEISSUED]"];
                cmd
            }
            6 => {
                let flag = KEYWORDS[self.rng.random_range(0..KEYWORDS.len())];
                let known: Vec<u32> = self.messages.iter().filter_map(|m| m.uid).collect();
                let uid = *known.get(self.rng.random_range(0..known.len().max(1)))?;
                Cmd::plain(&format!("UID STORE {uid} +FLAGS ({flag})"), Kind::ByUid)
            }
            7 => {
                let keys = [
                    "ALL",
                    "DELETED",
                    "UNSEEN",
                    "KEYWORD $Label1",
                    "FLAGGED NOT SEEN",
                ];
                let key = keys[self.rng.random_range(0..keys.len())];
                if self.rng.random_bool(0.5) {
                    Cmd::plain(&format!("UID SEARCH {key}"), Kind::ByUid)
                } else {
                    Cmd::plain(&format!("SEARCH {key}"), Kind::BySequence)
                }
            }
            8 => {
                let mut cmd = Cmd::plain("EXPUNGE", Kind::Other);
                cmd.renumbers = true;
                cmd
            }
            9 => {
                let seqs = self.seq_set(3)?;
                let target = if self.rng.random_bool(0.5) {
                    "INBOX"
                } else {
                    "Archive"
                };
                let mut cmd = Cmd::plain(
                    &format!("COPY {} {target}", set_text(&seqs)),
                    Kind::SequenceSet,
                );
                cmd.may_fail = &["[EXPUNGEISSUED]"];
                cmd
            }
            10 => {
                let seqs = self.seq_set(2)?;
                let mut cmd = Cmd::plain(
                    &format!("MOVE {} Archive", set_text(&seqs)),
                    Kind::SequenceSet,
                );
                cmd.renumbers = true;
                cmd.may_fail = &["[EXPUNGEISSUED]"];
                cmd
            }
            11 => Cmd::plain(
                if self.rng.random_bool(0.5) {
                    "NOOP"
                } else {
                    "CHECK"
                },
                Kind::Other,
            ),
            12 => {
                let mut cmd = Cmd::plain("IDLE", Kind::Other);
                cmd.idle = true;
                cmd
            }
            _ => Cmd::plain("STATUS INBOX (MESSAGES UIDNEXT)", Kind::Other),
        })
    }

    /// One to four commands sent together. Nothing that uses sequence numbers
    /// follows a command that renumbers (a client may not rely on them then, RFC
    /// 3501 §5.5), and IDLE stands alone.
    fn random_batch(&mut self) {
        let want = match self.rng.random_range(0..10) {
            0..=4 => 1,
            5..=7 => 2,
            _ => self.rng.random_range(3..=4),
        };
        let mut batch: Vec<Cmd> = Vec::new();
        let mut tries = 0;
        while batch.len() < want && tries < 20 {
            tries += 1;
            let Some(cmd) = self.random_command() else {
                continue;
            };
            let after_renumbering = batch.iter().any(|c| c.renumbers);
            if cmd.idle && !batch.is_empty() {
                continue;
            }
            if batch.iter().any(|c| c.idle) {
                break;
            }
            if after_renumbering && matches!(cmd.kind, Kind::BySequence | Kind::SequenceSet) {
                continue;
            }
            batch.push(cmd);
        }
        if batch.is_empty() {
            batch.push(Cmd::plain("NOOP", Kind::Other));
        }
        self.run_batch(&batch);
    }
}

fn shorten(text: &str) -> String {
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    } else {
        text.to_owned()
    }
}

/// `1,3:5` for [1, 3, 4, 5].
fn set_text(seqs: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let start = seqs[i];
        while i + 1 < seqs.len() && seqs[i + 1] == seqs[i] + 1 {
            i += 1;
        }
        parts.push(if seqs[i] == start {
            start.to_string()
        } else {
            format!("{start}:{}", seqs[i])
        });
        i += 1;
    }
    parts.join(",")
}

/// The flags of `(a b c) ...`, up to the closing parenthesis.
fn flag_list(list: &str) -> Vec<String> {
    let end = list.find(')').unwrap_or(list.len());
    list[..end].split_whitespace().map(str::to_owned).collect()
}

/// The UID of a FETCH response's data, `(UID 7 FLAGS ...)`.
fn fetch_uid(data: &str) -> Option<u32> {
    let at = find_item(data, "UID ")?;
    data[at + 4..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The FLAGS of a FETCH response's data.
fn fetch_flags(data: &str) -> Option<Vec<String>> {
    let at = find_item(data, "FLAGS (")?;
    Some(flag_list(&data[at + 7..]))
}

/// Where an item name starts in FETCH data: after `(` or a space, outside strings
/// (literal contents are already gone).
fn find_item(data: &str, name: &str) -> Option<usize> {
    let bytes = data.as_bytes();
    let mut quoted = false;
    let mut escaped = false;
    let mut depth = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'"' => quoted = !quoted,
            b'\\' if quoted => escaped = true,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
        if !quoted
            && depth == 1
            && (i > 0 && (bytes[i - 1] == b'(' || bytes[i - 1] == b' '))
            && data[i..].starts_with(name)
        {
            return Some(i);
        }
    }
    None
}

#[test]
fn the_model_reads_fetch_data() {
    assert_eq!(fetch_uid("(FLAGS (\\Seen) UID 12)"), Some(12));
    assert_eq!(
        fetch_uid("(ENVELOPE (\"UID 5\" NIL) BODY[HEADER.FIELDS (UID)] \"\")"),
        None
    );
    assert_eq!(
        fetch_flags("(UID 3 FLAGS (\\Seen $Label1))"),
        Some(vec!["\\Seen".to_owned(), "$Label1".to_owned()])
    );
    assert_eq!(set_text(&[1, 3, 4, 5, 9]), "1,3:5,9");
}
