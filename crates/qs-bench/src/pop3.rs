//! `qs-bench pop3`: a whole maildrop through POP3, as a client that downloads
//! everything does it: USER/PASS, STAT, LIST, UIDL, then RETR of every
//! message. With `--messages N` the INBOX is first filled with N messages by
//! IMAP APPEND (the installation's imap-server, or `--imap-target`), and the
//! run deletes exactly those (DELE, then QUIT) at the end; without it the
//! maildrop is only read, and left as it was (RSET before QUIT).
//!
//! The client is a small one of our own: one command at a time, multi-line
//! answers read to the final dot.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::BenchError;
use crate::install;
use crate::net::{Stream, Tls, TlsArgs, TlsMode};
use crate::report::{Row, Summary, count, rate};
use crate::stats::{ms, per_second};

/// The flags of `qs-bench pop3`.
#[derive(Debug, Clone, clap::Args)]
pub struct Pop3Options {
    /// The server and the login.
    #[command(flatten)]
    pub account: install::MailboxArgs,
    /// Fill the INBOX with this many messages first (by IMAP APPEND), and
    /// delete them at the end.
    #[arg(long)]
    pub messages: Option<u64>,
    /// The IMAP server used to fill (default with --config: its imap-server).
    #[arg(long, value_name = "HOST:PORT")]
    pub imap_target: Option<String>,
    /// Size of each message filled in, in bytes.
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Seconds to wait for any one answer.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// TLS (the same for the IMAP fill).
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// What `qs-bench pop3` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Pop3Report {
    /// HOST:PORT.
    pub target: String,
    /// Messages this run put in by IMAP first.
    pub filled: u64,
    /// Messages in the maildrop (STAT).
    pub messages: u64,
    /// Their size (STAT).
    pub bytes: u64,
    /// Greeting to the answer to PASS.
    pub login_ms: f64,
    /// STAT.
    pub stat_ms: f64,
    /// LIST of every message.
    pub list_ms: f64,
    /// UIDL of every message.
    pub uidl_ms: f64,
    /// RETR of every message, one after the other.
    pub retr_seconds: f64,
    /// Messages retrieved per second.
    pub retr_per_second: f64,
    /// MiB retrieved per second (as sent: dot-stuffed, CRLF).
    pub retr_mib_per_second: f64,
    /// Messages of this run deleted at the end.
    pub deleted: u64,
    /// QUIT: the server's UPDATE state, which removes the deleted messages
    /// and marks the retrieved ones as seen before it answers.
    pub quit_ms: f64,
}

impl Summary for Pop3Report {
    fn title(&self) -> String {
        format!(
            "qs-bench pop3: a maildrop of {} messages ({} bytes) at {}",
            count(self.messages),
            count(self.bytes),
            self.target
        )
    }

    fn rows(&self) -> Vec<Row> {
        vec![
            Row::new("login (USER/PASS)", format!("{:.1} ms", self.login_ms)),
            Row::new(
                "STAT / LIST / UIDL",
                format!(
                    "{:.1} ms / {:.1} ms / {:.1} ms",
                    self.stat_ms, self.list_ms, self.uidl_ms
                ),
            ),
            Row::new(
                "RETR every message",
                format!(
                    "{} messages/s, {:.1} MiB/s ({:.2} s)",
                    rate(self.retr_per_second),
                    self.retr_mib_per_second,
                    self.retr_seconds
                ),
            ),
            Row::new(
                "QUIT (removals, seen flags)",
                format!("{:.1} ms", self.quit_ms),
            ),
            Row::new(
                "filled / deleted",
                format!("{} / {}", count(self.filled), count(self.deleted)),
            ),
        ]
    }
}

/// A POP3 connection.
struct Pop3 {
    io: BufReader<Stream>,
    target: String,
    timeout: Duration,
}

impl Pop3 {
    /// Connects and reads the greeting; STLS as `tls` says.
    async fn open(target: &str, tls: &Tls, timeout: Duration) -> Result<Pop3, BenchError> {
        let tcp = crate::net::connect(target, timeout).await?;
        let stream = match tls.mode {
            TlsMode::Implicit => tls.wrap(tcp, target).await?,
            TlsMode::None | TlsMode::Starttls => Box::new(tcp),
        };
        let mut pop = Pop3 {
            io: BufReader::new(stream),
            target: target.to_string(),
            timeout,
        };
        pop.reply("the greeting")
            .await
            .map_err(|e| BenchError::Unreachable {
                target: target.to_string(),
                reason: e.to_string(),
            })?;
        if tls.mode == TlsMode::Starttls {
            pop.command("STLS").await?;
            // Bytes read before the handshake are dropped with the buffer.
            let Some(tcp) = pop.io.into_inner().into_tcp() else {
                return Err(BenchError::Refused("STLS over TLS".into()));
            };
            pop.io = BufReader::new(tls.wrap(tcp, target).await?);
        }
        Ok(pop)
    }

    async fn line(&mut self, into: &mut Vec<u8>) -> Result<usize, BenchError> {
        let read = tokio::time::timeout(self.timeout, self.io.read_until(b'\n', into))
            .await
            .map_err(|_| BenchError::Timeout(format!("{}: no answer in time", self.target)))?
            .map_err(|e| BenchError::Unreachable {
                target: self.target.clone(),
                reason: e.to_string(),
            })?;
        if read == 0 {
            return Err(BenchError::Unreachable {
                target: self.target.clone(),
                reason: "connection closed".into(),
            });
        }
        Ok(read)
    }

    /// One status line; `-ERR` is an error naming `what`.
    async fn reply(&mut self, what: &str) -> Result<String, BenchError> {
        let mut line = Vec::new();
        self.line(&mut line).await?;
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.starts_with("+OK") {
            Ok(text)
        } else {
            Err(BenchError::Refused(format!("{what}: {text}")))
        }
    }

    async fn send(&mut self, command: &str) -> Result<(), BenchError> {
        let stream = self.io.get_mut();
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .map_err(|e| BenchError::Unreachable {
                target: self.target.clone(),
                reason: e.to_string(),
            })
    }

    /// A command with a one-line answer.
    async fn command(&mut self, command: &str) -> Result<String, BenchError> {
        self.send(command).await?;
        let what = command.split(' ').next().unwrap_or(command).to_string();
        self.reply(&what).await
    }

    /// A command with a multi-line answer: its lines, up to the final dot
    /// (each with its CRLF, still dot-stuffed).
    async fn multi(&mut self, command: &str) -> Result<Vec<u8>, BenchError> {
        self.command(command).await?;
        let mut body = Vec::new();
        loop {
            let start = body.len();
            self.line(&mut body).await?;
            if &body[start..] == b".\r\n" || &body[start..] == b".\n" {
                body.truncate(start);
                return Ok(body);
            }
        }
    }
}

/// `+OK 12 34567` → (12, 34567).
fn parse_stat(line: &str) -> Option<(u64, u64)> {
    let mut words = line.split_whitespace().skip(1);
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// Runs `qs-bench pop3`.
pub async fn run(options: &Pop3Options) -> Result<Pop3Report, BenchError> {
    let account = &options.account;
    let installation = install::optional(account.config.as_deref())?;
    let target = install::mail_target(
        account.target.as_deref(),
        installation.as_ref(),
        "pop3",
        options.tls.tls,
    )?;
    let tls = Tls::new(&options.tls, &target, installation.as_ref())?;
    let timeout = Duration::from_secs(options.timeout.max(1));
    let marker = crate::message::run_marker();

    let filled = options.messages.unwrap_or(0);
    if filled > 0 {
        let imap_target = install::mail_target(
            options.imap_target.as_deref(),
            installation.as_ref(),
            "imap",
            options.tls.tls,
        )?;
        let imap_tls = Tls::new(&options.tls, &imap_target, installation.as_ref())?;
        let mut session =
            crate::imap::login(&imap_target, &imap_tls, &account.user, &account.password).await?;
        crate::imap::append_range(
            &mut session,
            "INBOX",
            0..filled,
            &marker,
            &account.user,
            options.size,
        )
        .await?;
        let _ = session.logout().await;
    }

    let started = Instant::now();
    let mut pop = Pop3::open(&target, &tls, timeout).await?;
    pop.command(&format!("USER {}", account.user)).await?;
    pop.command(&format!("PASS {}", account.password))
        .await
        .map_err(|e| BenchError::Refused(format!("login as {} refused: {e}", account.user)))?;
    let login_ms = ms(started.elapsed());

    let started = Instant::now();
    let stat = pop.command("STAT").await?;
    let stat_ms = ms(started.elapsed());
    let (messages, bytes) =
        parse_stat(&stat).ok_or_else(|| BenchError::Refused(format!("STAT answered {stat}")))?;
    let started = Instant::now();
    pop.multi("LIST").await?;
    let list_ms = ms(started.elapsed());
    let started = Instant::now();
    pop.multi("UIDL").await?;
    let uidl_ms = ms(started.elapsed());

    let bar = crate::progress::bar(messages, "retrieved");
    let started = Instant::now();
    let mut received = 0u64;
    let mut ours = Vec::new();
    for n in 1..=messages {
        let body = pop.multi(&format!("RETR {n}")).await?;
        received += body.len() as u64;
        if filled > 0 && crate::message::is_from_run(&body, &marker) {
            ours.push(n);
        }
        bar.inc(1);
    }
    let retr = started.elapsed();
    bar.finish_and_clear();

    for n in &ours {
        pop.command(&format!("DELE {n}")).await?;
    }
    if ours.is_empty() {
        pop.command("RSET").await?;
    }
    let started = Instant::now();
    pop.command("QUIT").await?;
    let quit_ms = ms(started.elapsed());
    Ok(Pop3Report {
        target,
        filled,
        messages,
        bytes,
        login_ms,
        stat_ms,
        list_ms,
        uidl_ms,
        retr_seconds: retr.as_secs_f64(),
        retr_per_second: per_second(messages, retr),
        retr_mib_per_second: per_second(received, retr) / (1024.0 * 1024.0),
        deleted: ours.len() as u64,
        quit_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        assert_eq!(parse_stat("+OK 12 34567"), Some((12, 34567)));
        assert_eq!(parse_stat("+OK 0 0 maildrop empty"), Some((0, 0)));
        assert_eq!(parse_stat("+OK"), None);
        assert_eq!(parse_stat("+OK x 1"), None);
    }
}
