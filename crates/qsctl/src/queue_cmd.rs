//! `qsctl queue ...`, `qsctl send` (Mercury's MSendTo) and `qsctl sendmail`:
//! everything that talks to core-queue through the queue client.

use std::io::{BufRead, Read};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use qs_config::Config;
use qs_queue::message::{envelope_from_header, normalize_line_ends, rfc5322_date};
use qs_queue::{Client, Origin, QueueId, RecipientStatus, unix_now};

/// `qsctl queue ...`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queued messages, oldest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one message's envelope and each recipient's state.
    Show {
        /// The queue id.
        id: String,
    },
    /// Try every pending recipient of a message now.
    Retry {
        /// The queue id.
        id: String,
    },
    /// Delete a message from the queue (no bounce is sent).
    Delete {
        /// The queue id.
        id: String,
    },
    /// Counts: messages, pending recipients per class, bytes.
    Stats,
}

/// `qsctl send`: compose and queue a plain-text message.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The sender's address.
    #[arg(long)]
    from: String,
    /// Recipients.
    #[arg(long, required = true, num_args = 1..)]
    to: Vec<String>,
    /// The subject.
    #[arg(long, default_value = "")]
    subject: String,
    /// A file holding the body (default: standard input).
    file: Option<PathBuf>,
}

/// `qsctl sendmail`: the sendmail command line that scripts and web
/// applications call, message on standard input.
#[derive(Debug, Args)]
pub struct SendmailArgs {
    /// Read the recipients from the message's To, Cc and Bcc (Bcc is removed).
    #[arg(short = 't')]
    header_recipients: bool,
    /// A line with a single dot does not end the message.
    #[arg(short = 'i')]
    ignore_dots: bool,
    /// The envelope sender.
    #[arg(short = 'f', value_name = "ADDRESS")]
    sender: Option<String>,
    /// sendmail options (`-oi`, `-odq`, ...): `-oi` is the same as -i, others are accepted and ignored.
    #[arg(short = 'o', value_name = "OPTION")]
    options: Vec<String>,
    /// Recipients (with -t, added to those of the header).
    recipients: Vec<String>,
}

/// A client for the installation's core-queue.
pub fn client(config: &Config) -> Result<Client> {
    Ok(qs_service::queue::client(config)?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn queue_id(text: &str) -> Result<QueueId> {
    text.parse::<QueueId>()
        .map_err(|e| anyhow::anyhow!("\"{text}\" is not a queue id: {e}"))
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Runs a queue command.
pub fn queue(config: &Config, cmd: QueueCommand) -> Result<()> {
    let client = client(config)?;
    let rt = runtime()?;
    let now = unix_now();
    match cmd {
        QueueCommand::List { limit } => {
            let messages = rt.block_on(client.list(limit))?;
            if messages.is_empty() {
                println!("the queue is empty");
            }
            for m in messages {
                let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
                println!(
                    "{}\t{}\t{} bytes\tfrom {}\t{} pending",
                    m.id,
                    age(m.age(now)),
                    m.size,
                    sender,
                    m.pending
                );
            }
        }
        QueueCommand::Show { id } => {
            let envelope = rt.block_on(client.show(&queue_id(&id)?))?;
            let sender = if envelope.sender.is_empty() {
                "<>"
            } else {
                &envelope.sender
            };
            println!("id:       {}", envelope.id);
            println!("from:     {sender}");
            println!("size:     {} bytes", envelope.size);
            println!(
                "queued:   {} ({} ago)",
                rfc5322_date(envelope.received_at),
                age(now.saturating_sub(envelope.received_at))
            );
            println!(
                "origin:   {}{}{}",
                envelope.origin.module,
                envelope
                    .origin
                    .peer
                    .map(|p| format!(" from {p}"))
                    .unwrap_or_default(),
                envelope
                    .origin
                    .auth_user
                    .map(|u| format!(" as {u}"))
                    .unwrap_or_default()
            );
            for r in envelope.recipients {
                let state = match r.status {
                    RecipientStatus::Pending if r.next_attempt > now => {
                        format!("pending, next try in {}", age(r.next_attempt - now))
                    }
                    RecipientStatus::Pending => "pending, due now".to_string(),
                    RecipientStatus::Delivered => "delivered".to_string(),
                    RecipientStatus::Failed => "failed".to_string(),
                };
                println!(
                    "to:       {} [{}] {state}, {} attempts{}{}",
                    r.address,
                    r.class,
                    r.attempts,
                    r.original.map(|o| format!(", for {o}")).unwrap_or_default(),
                    r.last_reply
                        .map(|l| format!(", last reply: {l}"))
                        .unwrap_or_default()
                );
            }
        }
        QueueCommand::Retry { id } => {
            rt.block_on(client.retry(&queue_id(&id)?))?;
            println!("{id}: every pending recipient is due now");
        }
        QueueCommand::Delete { id } => {
            rt.block_on(client.delete(&queue_id(&id)?))?;
            println!("{id}: deleted");
        }
        QueueCommand::Stats => {
            let stats = rt.block_on(client.stats())?;
            println!("messages:\t{}", stats.messages);
            println!("bytes:\t{}", stats.bytes);
            for (class, pending) in &stats.pending {
                println!("pending {class}:\t{pending}");
            }
        }
    }
    Ok(())
}

/// Runs `qsctl send`.
pub fn send(config: &Config, args: SendArgs) -> Result<()> {
    let body = match &args.file {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read the body from standard input")?;
            bytes
        }
    };
    for address in std::iter::once(&args.from).chain(&args.to) {
        qs_directory::parse_address(address)?;
    }
    let now = unix_now();
    let id: u64 = rand::random();
    let header = format!(
        "Date: {}\r\nFrom: {}\r\nTo: {}\r\nSubject: {}\r\nMessage-ID: <{id:016x}.{now}@{}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        rfc5322_date(now),
        args.from,
        args.to.join(", "),
        args.subject.replace(['\r', '\n'], " "),
        config.hostname,
    );
    let mut message = header.into_bytes();
    message.extend_from_slice(&normalize_line_ends(&body));
    if !message.ends_with(b"\r\n") {
        message.extend_from_slice(b"\r\n");
    }
    let origin = Origin {
        module: "qsctl".into(),
        peer: None,
        auth_user: None,
    };
    let queued = runtime()?.block_on(client(config)?.enqueue(
        &args.from,
        args.to.clone(),
        origin,
        &message,
    ))?;
    println!("queued as {queued}");
    Ok(())
}

/// Runs `qsctl sendmail`.
pub fn sendmail(config: &Config, args: SendmailArgs) -> Result<()> {
    let ignore_dots = args.ignore_dots || args.options.iter().any(|o| o == "i");
    let mut raw = Vec::new();
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    loop {
        let mut line = Vec::new();
        let n = lock
            .read_until(b'\n', &mut line)
            .context("cannot read the message from standard input")?;
        if n == 0 {
            break;
        }
        // Traditional sendmail: a line with a single dot ends the message.
        if !ignore_dots && (line == b".\n" || line == b".\r\n" || line == b".") {
            break;
        }
        raw.extend_from_slice(&line);
    }
    if !args.header_recipients && args.recipients.is_empty() {
        anyhow::bail!("no recipients: name them on the command line or use -t");
    }
    let envelope = envelope_from_header(&raw, args.header_recipients, &args.recipients)
        .map_err(|reason| anyhow::anyhow!("the message cannot be sent: {reason}"))?;
    let sender = args.sender.unwrap_or(envelope.sender);
    let origin = Origin {
        module: "sendmail".into(),
        peer: None,
        auth_user: std::env::var("USER").ok(),
    };
    runtime()?.block_on(client(config)?.enqueue(
        &sender,
        envelope.recipients,
        origin,
        &envelope.message,
    ))?;
    Ok(())
}
