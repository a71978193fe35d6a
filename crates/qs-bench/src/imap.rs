//! `qs-bench imap`: fills a folder by APPEND, then times what a mail client
//! does with it: SELECT and `FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE
//! ENVELOPE)` (the first time, then again with the server's caches warm),
//! Thunderbird's header-fields FETCH, `UID SEARCH UNSEEN` and `UID SEARCH
//! SUBJECT` (which reads every message), and `STORE 1:* +FLAGS (\Flagged)`
//! (taken off again afterwards); a folder the run created is emptied by
//! `EXPUNGE` (timed) before it is deleted. With
//! `--idle-connections K` it then opens K authenticated connections, half
//! only logged in and half in IDLE on the folder, and reads the server's
//! resident memory (`/proc/<pid>/status`) before and after each half.
//!
//! The folder (`qs-bench` unless `--folder` says otherwise) is filled up to
//! `--messages`; one the run created is deleted at the end unless `--keep`.
//! With `--mixed-clients N`, N clients then work on the folder at once for
//! `--mixed-seconds`, in the mix of [`mixed`], and the commands per second are
//! reported; that changes the folder, so only one the run made.
//!
//! Before the idle connections, a few logins run first so that the memory
//! the allocator keeps after password hashing (argon2 takes 19 MiB a login)
//! is not counted as the connections'.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde::Serialize;

use crate::BenchError;
use crate::install;
use crate::net::{Stream, Tls, TlsArgs, TlsMode};
use crate::report::{Row, Summary, count, rate};
use crate::stats::{ms, per_second};

pub mod mixed;

/// A logged-in IMAP session.
pub type Session = async_imap::Session<Stream>;

/// The flags of `qs-bench imap`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImapOptions {
    /// The server and the login.
    #[command(flatten)]
    pub account: install::MailboxArgs,
    /// How many messages the folder holds for the timings.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// The folder to fill and time.
    #[arg(long, default_value = "qs-bench")]
    pub folder: String,
    /// Size of each appended message in bytes.
    #[arg(long, default_value_t = 2048)]
    pub size: usize,
    /// Open this many idle connections and report memory per connection.
    #[arg(long, default_value_t = 0)]
    pub idle_connections: u64,
    /// Logins made before the idle connections are measured.
    #[arg(long, default_value_t = 50)]
    pub warm_up_logins: u64,
    /// The server's process id (default with --config: from its run file).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Keep the folder at the end.
    #[arg(long)]
    pub keep: bool,
    /// Leave every message \Flagged while the idle connections are measured
    /// (a folder whose messages carry flags).
    #[arg(long)]
    pub flagged: bool,
    /// Then run this many clients at once on the folder, each doing a mix of
    /// FETCH, SEARCH, STORE, APPEND, EXPUNGE and NOOP, and report commands/s
    /// (only on a folder the run makes: it changes the folder).
    #[arg(long, default_value_t = 0)]
    pub mixed_clients: u64,
    /// How long the mixed load runs, in seconds.
    #[arg(long, default_value_t = 30)]
    pub mixed_seconds: u64,
    /// TLS.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// What `qs-bench imap` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ImapReport {
    /// HOST:PORT.
    pub target: String,
    /// The folder.
    pub folder: String,
    /// Messages in it during the timings.
    pub messages: u64,
    /// Messages this run appended.
    pub appended: u64,
    /// Their APPENDs per second, one connection.
    pub append_per_second: f64,
    /// SELECT, the first time.
    pub select_first_ms: f64,
    /// FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE), the first time.
    pub fetch_first_ms: f64,
    /// SELECT, the faster of two later rounds.
    pub select_warm_ms: f64,
    /// The same FETCH, the faster of two later rounds.
    pub fetch_warm_ms: f64,
    /// UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (...)]).
    pub header_fetch_ms: f64,
    /// UID SEARCH UNSEEN.
    pub search_unseen_ms: f64,
    /// UID SEARCH SUBJECT of the last message.
    pub search_subject_ms: f64,
    /// STORE 1:* +FLAGS (\Flagged), every FETCH answer read.
    pub store_ms: f64,
    /// EXPUNGE of every message (marked \Deleted first, not timed), every
    /// EXPUNGE answer read; only for a folder the run created and deletes.
    pub expunge_ms: Option<f64>,
    /// Idle connections, when asked for.
    pub idle: Option<IdleReport>,
    /// The mixed load, when asked for.
    pub mixed: Option<mixed::MixedReport>,
}

/// The server's memory with idle connections open.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// The pid whose memory was read.
    pub pid: u32,
    /// Connections only logged in.
    pub logged_in: u64,
    /// Resident memory growth per logged-in connection.
    pub logged_in_kib_per_connection: f64,
    /// Connections in IDLE on the folder.
    pub in_idle: u64,
    /// Resident memory growth per connection in IDLE.
    pub idle_kib_per_connection: f64,
    /// Resident memory before the first and after the last, KiB.
    pub rss_kib: (u64, u64),
}

impl Summary for ImapReport {
    fn title(&self) -> String {
        format!(
            "qs-bench imap: folder {} of {} messages at {}",
            self.folder,
            count(self.messages),
            self.target
        )
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = vec![
            Row::new(
                "APPEND",
                if self.appended == 0 {
                    "none (the folder held the messages already)".to_string()
                } else {
                    format!(
                        "{} messages/s ({} appended, one connection)",
                        rate(self.append_per_second),
                        count(self.appended)
                    )
                },
            ),
            Row::new(
                "SELECT + FETCH envelopes, first",
                format!(
                    "{:.0} ms + {:.0} ms",
                    self.select_first_ms, self.fetch_first_ms
                ),
            ),
            Row::new(
                "SELECT + FETCH envelopes, warm",
                format!(
                    "{:.0} ms + {:.0} ms",
                    self.select_warm_ms, self.fetch_warm_ms
                ),
            ),
            Row::new(
                "UID FETCH header fields",
                format!("{:.0} ms", self.header_fetch_ms),
            ),
            Row::new(
                "UID SEARCH UNSEEN / SUBJECT",
                format!(
                    "{:.1} ms / {:.0} ms",
                    self.search_unseen_ms, self.search_subject_ms
                ),
            ),
            Row::new("STORE 1:* +FLAGS", format!("{:.0} ms", self.store_ms)),
        ];
        if let Some(expunge_ms) = self.expunge_ms {
            rows.push(Row::new(
                "EXPUNGE of every message",
                format!("{expunge_ms:.0} ms"),
            ));
        }
        if let Some(idle) = &self.idle {
            rows.push(Row::new(
                "memory per idle connection",
                format!(
                    "{:.1} KiB logged in ({}), {:.1} KiB in IDLE ({}); RSS {} -> {} KiB",
                    idle.logged_in_kib_per_connection,
                    idle.logged_in,
                    idle.idle_kib_per_connection,
                    idle.in_idle,
                    idle.rss_kib.0,
                    idle.rss_kib.1
                ),
            ));
        }
        if let Some(mixed) = &self.mixed {
            rows.push(Row::new(
                "mixed load",
                format!(
                    "{} commands/s, {} clients for {:.0} s ({} commands, {} errors)",
                    rate(mixed.commands_per_second),
                    mixed.clients,
                    mixed.seconds,
                    count(mixed.commands),
                    count(mixed.errors)
                ),
            ));
        }
        rows
    }
}

/// Connects (TLS as `tls` says) and logs in.
pub async fn login(
    target: &str,
    tls: &Tls,
    user: &str,
    password: &str,
) -> Result<Session, BenchError> {
    let within = Duration::from_secs(30);
    let tcp = crate::net::connect(target, within).await?;
    let stream = match tls.mode {
        TlsMode::Implicit => tls.wrap(tcp, target).await?,
        TlsMode::None | TlsMode::Starttls => Box::new(tcp),
    };
    let mut client = async_imap::Client::new(stream);
    let not_imap = |reason: String| BenchError::Unreachable {
        target: target.to_string(),
        reason,
    };
    match tokio::time::timeout(within, client.read_response()).await {
        Ok(Ok(Some(_))) => {}
        Ok(Ok(None)) => return Err(not_imap("closed before its greeting".into())),
        Ok(Err(e)) => return Err(not_imap(e.to_string())),
        Err(_) => return Err(not_imap("no greeting".into())),
    }
    if tls.mode == TlsMode::Starttls {
        client
            .run_command_and_check_ok("STARTTLS", None)
            .await
            .map_err(|e| BenchError::Refused(format!("STARTTLS at {target}: {e}")))?;
        // Whatever came before the handshake is thrown away with the client.
        let Some(tcp) = client.into_inner().into_tcp() else {
            return Err(BenchError::Refused("STARTTLS over TLS".into()));
        };
        client = async_imap::Client::new(tls.wrap(tcp, target).await?);
    }
    client
        .login(user, password)
        .await
        .map_err(|(e, _)| BenchError::Refused(format!("LOGIN {user} at {target}: {e}")))
}

fn failed(what: &str, e: async_imap::error::Error) -> BenchError {
    BenchError::Refused(format!("{what}: {e}"))
}

/// Appends messages `first..last` of run `marker` to `folder`, with progress.
pub async fn append_range(
    session: &mut Session,
    folder: &str,
    range: std::ops::Range<u64>,
    marker: &str,
    to: &str,
    size: usize,
) -> Result<Duration, BenchError> {
    let bar = crate::progress::bar(range.end - range.start, "appended");
    let started = Instant::now();
    for n in range {
        let from = format!("sender{n}@example.org");
        let bytes = crate::message::build(marker, n, &from, to, size);
        session
            .append(folder, None, None, &bytes)
            .await
            .map_err(|e| failed(&format!("APPEND to {folder}"), e))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(started.elapsed())
}

/// Runs `qs-bench imap`.
pub async fn run(options: &ImapOptions) -> Result<ImapReport, BenchError> {
    let account = &options.account;
    let installation = install::optional(account.config.as_deref())?;
    let target = install::mail_target(
        account.target.as_deref(),
        installation.as_ref(),
        "imap",
        options.tls.tls,
    )?;
    let pid = match (options.idle_connections, options.pid, &installation) {
        (0, _, _) => None,
        (_, Some(pid), _) => Some(pid),
        (_, None, Some(installation)) => Some(installation.pid("imap-server")?),
        (_, None, None) => {
            return Err(BenchError::Usage(
                "--idle-connections reads the server's memory: give --pid or --config".into(),
            ));
        }
    };
    let tls = Tls::new(&options.tls, &target, installation.as_ref())?;
    let mut session = login(&target, &tls, &account.user, &account.password).await?;

    // Fill the folder up to --messages.
    let created = session.create(&options.folder).await.is_ok();
    if options.mixed_clients > 0 && !created {
        return Err(BenchError::Usage(format!(
            "--mixed-clients appends, flags and expunges: it runs only on a folder the run \
             makes, and {} exists (choose another --folder)",
            options.folder
        )));
    }
    // STATUS, not SELECT: the first SELECT is one of the timings.
    let existing = u64::from(
        session
            .status(&options.folder, "(MESSAGES)")
            .await
            .map_err(|e| failed(&format!("STATUS {}", options.folder), e))?
            .exists,
    );
    let marker = crate::message::run_marker();
    let wanted = options.messages.max(existing);
    let appended = wanted - existing;
    let fill = append_range(
        &mut session,
        &options.folder,
        existing..wanted,
        &marker,
        &account.user,
        options.size,
    )
    .await?;

    let mut rounds = Vec::new();
    for _ in 0..3 {
        rounds.push(select_and_fetch(&mut session, &options.folder, wanted).await?);
    }
    let best = |pick: fn(&(f64, f64)) -> f64| rounds[1..].iter().map(pick).fold(f64::MAX, f64::min);
    let select_warm_ms = best(|r| r.0);
    let fetch_warm_ms = best(|r| r.1);

    let started = Instant::now();
    let headers = answers(
        session
            .uid_fetch(
                "1:*",
                "(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)])",
            )
            .await,
    )
    .await
    .map_err(|e| failed("UID FETCH", e))?;
    let header_fetch_ms = ms(started.elapsed());
    check_count("UID FETCH", headers, wanted)?;

    let started = Instant::now();
    session
        .uid_search("UNSEEN")
        .await
        .map_err(|e| failed("UID SEARCH UNSEEN", e))?;
    let search_unseen_ms = ms(started.elapsed());
    let started = Instant::now();
    let found = session
        .uid_search(format!("SUBJECT \"number {}\"", wanted.saturating_sub(1)))
        .await
        .map_err(|e| failed("UID SEARCH SUBJECT", e))?;
    let search_subject_ms = ms(started.elapsed());
    if wanted > 0 && found.is_empty() {
        return Err(BenchError::Refused(
            "UID SEARCH SUBJECT found nothing: the folder holds other messages".into(),
        ));
    }

    let started = Instant::now();
    let stored = answers(session.store("1:*", "+FLAGS (\\Flagged)").await)
        .await
        .map_err(|e| failed("STORE", e))?;
    let store_ms = ms(started.elapsed());
    check_count("STORE", stored, wanted)?;
    // The idle connections see the folder as it was, unless --flagged.
    if !options.flagged {
        answers(session.store("1:*", "-FLAGS.SILENT (\\Flagged)").await)
            .await
            .map_err(|e| failed("STORE", e))?;
    }

    let idle = match pid {
        Some(pid) => Some(idle_connections(&target, &tls, options, pid, &mut session).await?),
        None => None,
    };

    let mixed = if options.mixed_clients > 0 {
        Some(
            mixed::run(
                &target,
                &tls,
                &account.user,
                &account.password,
                &options.folder,
                options.size,
                options.mixed_clients,
                options.mixed_seconds,
            )
            .await?,
        )
    } else {
        None
    };

    let mut expunge_ms = None;
    if created && !options.keep {
        // The mixed load appended and expunged: count what is there now.
        let there = session
            .select(&options.folder)
            .await
            .map_err(|e| failed(&format!("SELECT {}", options.folder), e))?
            .exists;
        answers(session.store("1:*", "+FLAGS.SILENT (\\Deleted)").await)
            .await
            .map_err(|e| failed("STORE", e))?;
        let started = Instant::now();
        let expunged = answers(session.expunge().await)
            .await
            .map_err(|e| failed("EXPUNGE", e))?;
        expunge_ms = Some(ms(started.elapsed()));
        check_count("EXPUNGE", expunged, u64::from(there))?;
        session.close().await.map_err(|e| failed("CLOSE", e))?;
        session
            .delete(&options.folder)
            .await
            .map_err(|e| failed(&format!("DELETE {}", options.folder), e))?;
    }
    let _ = session.logout().await;
    Ok(ImapReport {
        target,
        folder: options.folder.clone(),
        messages: wanted,
        appended,
        append_per_second: per_second(appended, fill),
        select_first_ms: rounds[0].0,
        fetch_first_ms: rounds[0].1,
        select_warm_ms,
        fetch_warm_ms,
        header_fetch_ms,
        search_unseen_ms,
        search_subject_ms,
        store_ms,
        expunge_ms,
        idle,
        mixed,
    })
}

/// SELECT, then FETCH of every envelope; the two times in milliseconds.
async fn select_and_fetch(
    session: &mut Session,
    folder: &str,
    expected: u64,
) -> Result<(f64, f64), BenchError> {
    let started = Instant::now();
    session
        .select(folder)
        .await
        .map_err(|e| failed(&format!("SELECT {folder}"), e))?;
    let select = started.elapsed();
    let fetched = answers(
        session
            .fetch("1:*", "(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
            .await,
    )
    .await
    .map_err(|e| failed("FETCH", e))?;
    let total = started.elapsed();
    check_count("FETCH", fetched, expected)?;
    Ok((ms(select), ms(total - select)))
}

/// Reads a command's untagged answers (FETCH, EXPUNGE) to its end; how many
/// there were.
async fn answers<T>(
    command: Result<
        impl futures::Stream<Item = Result<T, async_imap::error::Error>>,
        async_imap::error::Error,
    >,
) -> Result<u64, async_imap::error::Error> {
    command?
        .try_fold(0u64, |n, _| futures::future::ready(Ok(n + 1)))
        .await
}

/// A command that answered for fewer messages than the folder holds did not
/// do the work being timed.
fn check_count(what: &str, got: u64, expected: u64) -> Result<(), BenchError> {
    if got < expected {
        return Err(BenchError::Refused(format!(
            "{what} answered for {got} of {expected} messages"
        )));
    }
    Ok(())
}

/// Opens the idle connections and reads the server's memory around them.
async fn idle_connections(
    target: &str,
    tls: &Tls,
    options: &ImapOptions,
    pid: u32,
    session: &mut Session,
) -> Result<IdleReport, BenchError> {
    let settle = Duration::from_millis(500);
    let bar = crate::progress::spinner("warming up (logins)");
    for _ in 0..options.warm_up_logins {
        let mut s = login(
            target,
            tls,
            &options.account.user,
            &options.account.password,
        )
        .await?;
        s.select(&options.folder)
            .await
            .map_err(|e| failed("SELECT", e))?;
        let _ = s.logout().await;
    }
    bar.finish_and_clear();
    // The timing session stays open but out of the count.
    session.noop().await.map_err(|e| failed("NOOP", e))?;
    tokio::time::sleep(settle).await;

    let logged_in = options.idle_connections / 2;
    let in_idle = options.idle_connections - logged_in;
    let first = crate::install::rss_kib(pid)?;
    let bar = crate::progress::bar(logged_in, "logged in");
    let mut sessions = Vec::new();
    for i in 0..logged_in {
        sessions.push(open_idle(target, tls, options, i).await?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    tokio::time::sleep(settle).await;
    let middle = crate::install::rss_kib(pid)?;

    let bar = crate::progress::bar(in_idle, "in IDLE");
    let mut handles = Vec::new();
    for i in 0..in_idle {
        let mut s = open_idle(target, tls, options, logged_in + i).await?;
        s.select(&options.folder)
            .await
            .map_err(|e| failed("SELECT", e))?;
        let mut handle = s.idle();
        handle.init().await.map_err(|e| failed("IDLE", e))?;
        handles.push(handle);
        bar.inc(1);
    }
    bar.finish_and_clear();
    tokio::time::sleep(settle).await;
    let last = crate::install::rss_kib(pid)?;
    drop(handles);
    drop(sessions);
    let per = |before: u64, after: u64, n: u64| {
        if n == 0 {
            0.0
        } else {
            after.saturating_sub(before) as f64 / n as f64
        }
    };
    Ok(IdleReport {
        pid,
        logged_in,
        logged_in_kib_per_connection: per(first, middle, logged_in),
        in_idle,
        idle_kib_per_connection: per(middle, last, in_idle),
        rss_kib: (first, last),
    })
}

/// Idle connection number `i`, logged in; a refusal names the server limits
/// that usually cause it.
async fn open_idle(
    target: &str,
    tls: &Tls,
    options: &ImapOptions,
    i: u64,
) -> Result<Session, BenchError> {
    login(
        target,
        tls,
        &options.account.user,
        &options.account.password,
    )
    .await
    .map_err(|e| {
        BenchError::Refused(format!(
            "idle connection {} of {}: {e} (imap_server.max_connections, \
                 max_connections_per_ip and max_connections_per_user limit them)",
            i + 1,
            options.idle_connections
        ))
    })
}
