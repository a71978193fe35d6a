//! `qs-bench deliver`: the SMTP load of [`crate::smtp`] to a local user of the
//! installation named with `--config`, then the wait until the last accepted
//! message is in that user's INBOX: on disk in the Maildir (the default), or
//! as seen over IMAP (`--check imap`, STATUS on the installation's
//! implicit-TLS listener). The figure runs from the first MAIL to the last
//! message present, so the queue and local delivery are in it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::BenchError;
use crate::install::Installation;
use crate::net::{TlsArgs, TlsMode};
use crate::report::{Row, Summary, count, rate};
use crate::smtp::{Plan, SmtpOptions, SmtpReport};
use crate::stats::per_second;

/// How delivery is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// Files in the INBOX's `new/` and `cur/`.
    Maildir,
    /// `STATUS INBOX (MESSAGES)` over IMAP.
    Imap,
}

/// The flags of `qs-bench deliver`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliverOptions {
    /// The SMTP load (--config is required: it names the Maildir).
    #[command(flatten)]
    pub smtp: SmtpOptions,
    /// How delivery is seen: maildir or imap.
    #[arg(long, value_enum, default_value = "maildir")]
    pub check: Check,
    /// The recipient's password, for --check imap.
    #[arg(long)]
    pub imap_password: Option<String>,
    /// Seconds to wait for the last delivery.
    #[arg(long, default_value_t = 600)]
    pub within: u64,
}

/// What `qs-bench deliver` measured.
#[derive(Debug, Clone, Serialize)]
pub struct DeliverReport {
    /// The SMTP part.
    pub smtp: SmtpReport,
    /// How delivery was seen.
    pub check: Check,
    /// Messages that arrived in the INBOX.
    pub delivered: u64,
    /// From the first MAIL to the last message present.
    pub end_to_end_seconds: f64,
    /// `delivered` per second over that time.
    pub end_to_end_per_second: f64,
}

impl Summary for DeliverReport {
    fn title(&self) -> String {
        self.smtp
            .title()
            .replacen("qs-bench smtp", "qs-bench deliver", 1)
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = self.smtp.rows();
        rows.push(Row::new(
            "end to end",
            format!(
                "{} messages/s ({} in the INBOX {:.2} s after the first MAIL, seen by {:?})",
                rate(self.end_to_end_per_second),
                count(self.delivered),
                self.end_to_end_seconds,
                self.check
            ),
        ));
        rows
    }
}

/// Runs `qs-bench deliver`.
pub async fn run(options: &DeliverOptions) -> Result<DeliverReport, BenchError> {
    let config = options.smtp.config.as_deref().ok_or_else(|| {
        BenchError::Usage(
            "deliver needs --config: the installation whose Maildir is watched".into(),
        )
    })?;
    let installation = Installation::load(config)?;
    let plan = Plan::new(&options.smtp, Some(&installation))?;
    let mut inbox = Inbox::open(options, &installation).await?;
    let before = inbox.count().await?;
    let (smtp, started) = crate::smtp::load(&plan).await?;
    if smtp.accepted == 0 {
        return Err(BenchError::Refused(format!(
            "no message was accepted (errors: {})",
            smtp.errors.describe()
        )));
    }
    let bar = crate::progress::bar(smtp.accepted, "delivered");
    let deadline = Duration::from_secs(options.within);
    let delivered = loop {
        let now = inbox.count().await?.saturating_sub(before);
        bar.set_position(now.min(smtp.accepted));
        if now >= smtp.accepted {
            break now;
        }
        if started.elapsed() > deadline {
            return Err(BenchError::Timeout(format!(
                "{now} of {} messages delivered after {} s",
                smtp.accepted, options.within
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(DeliverReport {
        smtp,
        check: options.check,
        delivered,
        end_to_end_seconds: elapsed.as_secs_f64(),
        end_to_end_per_second: per_second(delivered, elapsed),
    })
}

/// Where the recipient's messages are counted.
enum Inbox {
    Maildir(PathBuf),
    Imap(Box<crate::imap::Session>),
}

impl Inbox {
    async fn open(
        options: &DeliverOptions,
        installation: &Installation,
    ) -> Result<Inbox, BenchError> {
        let to = &options.smtp.to;
        let (local, domain) = to
            .split_once('@')
            .ok_or_else(|| BenchError::Usage(format!("--to {to}: not an address")))?;
        match options.check {
            Check::Maildir => {
                let root = qs_mailstore::mailbox_path(&installation.config.data_dir, domain, local)
                    .map_err(|e| BenchError::Usage(format!("--to {to}: {e}")))?;
                Ok(Inbox::Maildir(root))
            }
            Check::Imap => {
                let password = options.imap_password.as_deref().ok_or_else(|| {
                    BenchError::Usage("--check imap needs --imap-password".into())
                })?;
                let target = installation.listener("imap-server", "imap_server.tls_listen")?;
                let tls = crate::net::Tls::new(
                    &TlsArgs {
                        tls: TlsMode::Implicit,
                        ca_file: None,
                        tls_name: None,
                    },
                    &target,
                    Some(installation),
                )?;
                let session = crate::imap::login(&target, &tls, to, password).await?;
                Ok(Inbox::Imap(Box::new(session)))
            }
        }
    }

    async fn count(&mut self) -> Result<u64, BenchError> {
        match self {
            Inbox::Maildir(root) => {
                let mut n = 0;
                for sub in ["new", "cur"] {
                    // A folder not made yet holds nothing.
                    if let Ok(entries) = std::fs::read_dir(root.join(sub)) {
                        n += entries.count() as u64;
                    }
                }
                Ok(n)
            }
            Inbox::Imap(session) => {
                let status = session
                    .status("INBOX", "(MESSAGES)")
                    .await
                    .map_err(|e| BenchError::Refused(format!("STATUS INBOX: {e}")))?;
                Ok(u64::from(status.exists))
            }
        }
    }
}
