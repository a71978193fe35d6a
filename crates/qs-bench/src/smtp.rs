//! `qs-bench smtp`: C sessions send N messages to one address as fast as the
//! server takes them. Reported: messages/s accepted, the time from the end of
//! the data to the server's reply (p50/p90/p99), and every failure by reply
//! code. The client is lettre's connection (EHLO, STARTTLS or implicit TLS,
//! AUTH PLAIN/LOGIN), driven one command at a time so that each reply is seen.
//!
//! With `--new-connection-per-message` each session says QUIT after every
//! message and connects again for the next, as MTAs deliver to each other
//! (and Postfix's smtp-source sends by default); the figure then includes the
//! connection, the greeting and EHLO of every message.
//!
//! A refused command ends that message (counted under its code) and the
//! session goes on after RSET; a broken connection is counted
//! (`connection`, `timeout`) and the session reconnects. The first connection
//! is made before the clock starts: a target that cannot be reached, or that
//! refuses TLS or the login, stops the run with an error instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;
use serde::Serialize;

use crate::BenchError;
use crate::install::{self, Installation};
use crate::net::{TlsMode, host_of};
use crate::report::{Row, Summary, count, rate};
use crate::stats::{ErrorTally, Latencies, LatencySummary, per_second};

/// The flags of `qs-bench smtp` (and of the SMTP part of `deliver`).
#[derive(Debug, Clone, clap::Args)]
pub struct SmtpOptions {
    /// The SMTP server, HOST:PORT (default with --config: its smtp-server's
    /// listener for the --tls mode chosen).
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    /// A Quicksilver config file, to find the target (and, for deliver, the Maildir).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The recipient of every message.
    #[arg(long, value_name = "ADDRESS")]
    pub to: String,
    /// The envelope sender (default: the --auth user, else qs-bench@load.invalid).
    #[arg(long, value_name = "ADDRESS")]
    pub from: Option<String>,
    /// How many messages.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Concurrent SMTP sessions.
    #[arg(long, default_value_t = 20)]
    pub connections: u64,
    /// Size of each message in bytes.
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Log in with AUTH, PLAIN or LOGIN (or $QS_BENCH_AUTH, kept out of the
    /// process list).
    #[arg(
        long,
        value_name = "USER:PASS",
        env = "QS_BENCH_AUTH",
        hide_env_values = true
    )]
    pub auth: Option<String>,
    /// TLS: none, starttls (submission) or implicit (submissions).
    #[arg(long, value_enum, default_value = "none")]
    pub tls: TlsMode,
    /// Accept any certificate (the self-signed default one, say).
    #[arg(long)]
    pub insecure: bool,
    /// PEM file of the certificate (or its CA) to trust.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// The name to check the certificate against (default: the target's host).
    #[arg(long, value_name = "NAME")]
    pub tls_name: Option<String>,
    /// Seconds to wait for any one reply.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// QUIT after each message and connect again for the next.
    #[arg(long)]
    pub new_connection_per_message: bool,
}

/// What `qs-bench smtp` measured.
#[derive(Debug, Clone, Serialize)]
pub struct SmtpReport {
    /// HOST:PORT.
    pub target: String,
    /// TLS mode.
    pub tls: TlsMode,
    /// Messages tried.
    pub messages: u64,
    /// Concurrent sessions.
    pub connections: u64,
    /// Whether each message had a connection of its own.
    pub new_connection_per_message: bool,
    /// Bytes per message.
    pub size: usize,
    /// Messages the server answered 250 to at the end of the data.
    pub accepted: u64,
    /// Messages that failed (the sum of `errors`).
    pub failed: u64,
    /// From the first MAIL to the last reply.
    pub seconds: f64,
    /// `accepted` per second.
    pub accepted_per_second: f64,
    /// End of data to 250, over the accepted messages.
    pub latency: LatencySummary,
    /// Failures by reply code, or `connection` / `timeout` / `tls` / `other`.
    pub errors: ErrorTally,
}

impl Summary for SmtpReport {
    fn title(&self) -> String {
        format!(
            "qs-bench smtp: {} messages of {} bytes to {} ({}) over {} {}",
            count(self.messages),
            count(self.size as u64),
            self.target,
            self.tls.describe(),
            self.connections,
            if self.new_connection_per_message {
                "sessions, a new connection per message"
            } else {
                "connections"
            }
        )
    }

    fn rows(&self) -> Vec<Row> {
        vec![
            Row::new(
                "accepted",
                format!(
                    "{} messages/s ({} of {} in {:.2} s)",
                    rate(self.accepted_per_second),
                    count(self.accepted),
                    count(self.messages),
                    self.seconds
                ),
            ),
            Row::new("end of data to 250", self.latency.describe()),
            Row::new("failed", count(self.failed)),
            Row::new("errors by reply", self.errors.describe()),
        ]
    }
}

/// Runs `qs-bench smtp`.
pub async fn run(options: &SmtpOptions) -> Result<SmtpReport, BenchError> {
    let installation = install::optional(options.config.as_deref())?;
    let plan = Plan::new(options, installation.as_ref())?;
    Ok(load(&plan).await?.0)
}

/// A run, resolved from the flags.
#[derive(Clone)]
pub struct Plan {
    target: String,
    port: u16,
    tls: TlsMode,
    tls_parameters: Option<TlsParameters>,
    credentials: Option<Credentials>,
    from: Address,
    to: Address,
    /// The data, dot-stuffed, with its final dot.
    data: Arc<String>,
    messages: u64,
    connections: u64,
    new_connection_per_message: bool,
    size: usize,
    timeout: Duration,
    hello: ClientId,
}

impl Plan {
    /// Checks the flags and builds the message.
    pub fn new(
        options: &SmtpOptions,
        installation: Option<&Installation>,
    ) -> Result<Plan, BenchError> {
        let key = match options.tls {
            TlsMode::None => "smtp_server.listen",
            TlsMode::Starttls => "smtp_server.submission",
            TlsMode::Implicit => "smtp_server.submissions",
        };
        let target = install::target(options.target.as_deref(), installation, "smtp-server", key)?;
        let port = target
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .ok_or_else(|| BenchError::Usage(format!("--target {target}: not HOST:PORT")))?;
        if options.messages == 0 || options.connections == 0 {
            return Err(BenchError::Usage(
                "--messages and --connections must be at least 1".into(),
            ));
        }
        let credentials = options
            .auth
            .as_deref()
            .map(|auth| {
                auth.split_once(':')
                    .map(|(u, p)| Credentials::new(u.to_string(), p.to_string()))
                    .ok_or_else(|| BenchError::Usage("--auth takes USER:PASS".into()))
            })
            .transpose()?;
        let auth_user = options.auth.as_deref().and_then(|a| a.split_once(':'));
        let from = options
            .from
            .clone()
            .or_else(|| auth_user.map(|(u, _)| u.to_string()))
            .unwrap_or_else(|| "qs-bench@load.invalid".into());
        let address = |flag: &str, value: &str| {
            value
                .parse::<Address>()
                .map_err(|e| BenchError::Usage(format!("--{flag} {value}: {e}")))
        };
        let tls_parameters = match options.tls {
            TlsMode::None => None,
            TlsMode::Starttls | TlsMode::Implicit => {
                Some(tls_parameters(options, &target, installation)?)
            }
        };
        let marker = crate::message::run_marker();
        let body = crate::message::build(&marker, 0, &from, &options.to, options.size);
        Ok(Plan {
            port,
            tls: options.tls,
            tls_parameters,
            credentials,
            from: address("from", &from)?,
            to: address("to", &options.to)?,
            data: Arc::new(crate::message::smtp_data(&body)),
            messages: options.messages,
            connections: options.connections,
            new_connection_per_message: options.new_connection_per_message,
            size: options.size,
            timeout: Duration::from_secs(options.timeout.max(1)),
            hello: ClientId::Domain("qs-bench.localhost".into()),
            target,
        })
    }
}

fn tls_parameters(
    options: &SmtpOptions,
    target: &str,
    installation: Option<&Installation>,
) -> Result<TlsParameters, BenchError> {
    let name = options
        .tls_name
        .clone()
        .or_else(|| {
            // The installation's certificate names its hostname, not 127.0.0.1.
            (options.ca_file.is_none() && !options.insecure)
                .then(|| installation.map(|i| i.config.hostname.clone()))
                .flatten()
        })
        .unwrap_or_else(|| host_of(target).to_string());
    let mut builder = TlsParameters::builder(name).dangerous_accept_invalid_certs(options.insecure);
    let ca_file = options.ca_file.clone().or_else(|| {
        (!options.insecure)
            .then(|| installation.map(|i| i.config.tls.cert.clone()))
            .flatten()
    });
    if let Some(path) = ca_file {
        let pem = std::fs::read(&path).map_err(|source| BenchError::Io {
            what: path.display().to_string(),
            source,
        })?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| BenchError::Usage(format!("{}: {e}", path.display())))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map_err(|e| BenchError::Usage(format!("TLS setup: {e}")))
}

type SmtpError = lettre::transport::smtp::Error;

/// What one failure is counted under: the reply code, else its kind.
fn error_key(error: &SmtpError) -> String {
    if let Some(code) = error.status() {
        code.to_string()
    } else if error.is_timeout() {
        "timeout".into()
    } else if error.is_tls() {
        "tls".into()
    } else if error.to_string().contains("network") || error.is_transport_shutdown() {
        "connection".into()
    } else {
        "other".into()
    }
}

/// Connects, says EHLO, starts TLS and logs in, as the plan says.
async fn open(plan: &Plan) -> Result<AsyncSmtpConnection, SmtpError> {
    let implicit = match plan.tls {
        TlsMode::Implicit => plan.tls_parameters.clone(),
        _ => None,
    };
    let mut conn = AsyncSmtpConnection::connect_tokio1(
        (crate::net::host_of(&plan.target), plan.port),
        Some(plan.timeout),
        &plan.hello,
        implicit,
        None,
    )
    .await?;
    if let (TlsMode::Starttls, Some(parameters)) = (plan.tls, &plan.tls_parameters) {
        conn.starttls(parameters.clone(), &plan.hello).await?;
    }
    if let Some(credentials) = &plan.credentials {
        conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
            .await?;
    }
    Ok(conn)
}

/// One message: MAIL, RCPT, DATA, the data; returns the time from the end of
/// the data to the reply.
async fn transaction(conn: &mut AsyncSmtpConnection, plan: &Plan) -> Result<Duration, SmtpError> {
    conn.command(Mail::new(Some(plan.from.clone()), vec![]))
        .await?;
    conn.command(Rcpt::new(plan.to.clone(), vec![])).await?;
    conn.command(Data).await?;
    // lettre's own `message` writes the final dot apart from the text, where
    // it waits for a delayed ACK; sent as one command, it goes at once.
    let sent = Instant::now();
    conn.command(plan.data.as_str()).await?;
    Ok(sent.elapsed())
}

/// What one session counted.
#[derive(Default)]
struct Tally {
    accepted: u64,
    latencies: Latencies,
    errors: ErrorTally,
}

/// One session: takes message numbers until there are none left.
async fn session(
    plan: Arc<Plan>,
    mut conn: Option<AsyncSmtpConnection>,
    next: Arc<AtomicU64>,
    bar: indicatif::ProgressBar,
) -> Tally {
    let mut tally = Tally::default();
    while next.fetch_add(1, Ordering::Relaxed) < plan.messages {
        bar.inc(1);
        let mut c = match conn.take() {
            Some(c) => c,
            None => match tokio::time::timeout(plan.timeout, open(&plan)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tally.errors.add(error_key(&e));
                    // A server refusing connections is not hammered.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(_) => {
                    tally.errors.add("timeout");
                    continue;
                }
            },
        };
        // A whole transaction gets four replies' worth of time.
        match tokio::time::timeout(plan.timeout * 4, transaction(&mut c, &plan)).await {
            Ok(Ok(latency)) => {
                tally.accepted += 1;
                tally.latencies.record(latency);
                if plan.new_connection_per_message {
                    let _ = c.quit().await;
                } else {
                    conn = Some(c);
                }
            }
            Ok(Err(e)) if e.status().is_some() => {
                tally.errors.add(error_key(&e));
                // The server answered: the session goes on after RSET.
                if c.command(Rset).await.is_ok() {
                    if plan.new_connection_per_message {
                        let _ = c.quit().await;
                    } else {
                        conn = Some(c);
                    }
                }
            }
            Ok(Err(e)) => tally.errors.add(error_key(&e)),
            Err(_) => tally.errors.add("timeout"),
        }
    }
    if let Some(mut c) = conn {
        let _ = c.quit().await;
    }
    tally
}

/// Sends the plan's messages; returns the report and when the first MAIL went.
pub async fn load(plan: &Plan) -> Result<(SmtpReport, Instant), BenchError> {
    let first = tokio::time::timeout(plan.timeout, open(plan))
        .await
        .map_err(|_| BenchError::Unreachable {
            target: plan.target.clone(),
            reason: format!("no greeting within {:?}", plan.timeout),
        })?
        .map_err(|e| refused(plan, &e))?;
    let plan = Arc::new(plan.clone());
    let bar = crate::progress::bar(plan.messages, "sent");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut first = Some(first);
    let mut tasks = Vec::new();
    for _ in 0..plan.connections {
        tasks.push(tokio::spawn(session(
            plan.clone(),
            first.take(),
            next.clone(),
            bar.clone(),
        )));
    }
    let mut total = Tally::default();
    for task in tasks {
        let tally = task
            .await
            .map_err(|e| BenchError::Usage(format!("a session stopped: {e}")))?;
        total.accepted += tally.accepted;
        total.latencies.merge(tally.latencies);
        total.errors.merge(tally.errors);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let report = SmtpReport {
        target: plan.target.clone(),
        tls: plan.tls,
        messages: plan.messages,
        connections: plan.connections,
        new_connection_per_message: plan.new_connection_per_message,
        size: plan.size,
        accepted: total.accepted,
        failed: total.errors.total(),
        seconds: elapsed.as_secs_f64(),
        accepted_per_second: per_second(total.accepted, elapsed),
        latency: total.latencies.summary(),
        errors: total.errors,
    };
    Ok((report, started))
}

/// The error for a first connection that failed.
fn refused(plan: &Plan, error: &SmtpError) -> BenchError {
    match error.status() {
        Some(code) => BenchError::Refused(format!(
            "{} refused the session ({code}): {error}",
            plan.target
        )),
        None if error.is_tls() => BenchError::Refused(format!("TLS with {}: {error}", plan.target)),
        None => BenchError::Unreachable {
            target: plan.target.clone(),
            reason: error.to_string(),
        },
    }
}
