//! qsctl — the Quicksilver console.
//!
//! # Description
//! Administration of a Quicksilver installation, as Mercury's console did it:
//!
//! - `qsctl init [--domain D] [--hostname H] [--password-stdin]`: writes the
//!   commented default config (when there is none), creates the data folder, a
//!   self-signed certificate, the first domain and the postmaster. Running it
//!   again creates only what is missing and says so.
//! - `qsctl domain add|del|list`, `qsctl user add|del|passwd|list`,
//!   `qsctl alias add|del|list`: the user directory, shared by every module;
//!   changes are seen by running servers at once; `qsctl user pop3` sets a
//!   user's POP3 options (ignore DELE, offer only unread mail).
//!
//! Every misuse (unknown domain, duplicate user, malformed address, missing
//! config) prints one line naming the problem and exits non-zero; the directory
//! is written atomically, so nothing is ever half-written.
//!
//! - `qsctl up [MODULE...]`: runs the modules in the foreground (see [`up`]).
//! - `qsctl status`, `qsctl health MODULE`: what runs and whether it answers.
//! - `qsctl restart MODULE`: restart one module without downtime.
//! - `qsctl queue list|show ID|retry ID|delete ID|stats`: the mail queue.
//! - `qsctl list create|delete|show|ls|set|add-member|remove-member|set-member|members|held|approve|reject`:
//!   mailing lists (see `list_cmd`).
//! - `qsctl send --from A --to B [--subject S] [FILE]`: queue a plain-text message
//!   (Mercury's MSendTo).
//! - `qsctl sendmail [-t] [-i] [-f ADDR] [RCPT...]`: the sendmail command line, so
//!   scripts and web applications that call sendmail work unchanged; a link named
//!   `sendmail` to qsctl behaves the same.
//! - `qsctl dkim generate DOMAIN [--selector S] [--algorithm rsa|ed25519]`,
//!   `qsctl dkim show DOMAIN`, `qsctl dkim list`: smtp-relay's DKIM keys
//!   (files of mode 0600 in `dkim_dir`, never replaced) and the DNS TXT
//!   records that publish them (see `dkim_cmd`).
//! - `qsctl dns [DOMAIN]`: the MX, SPF, DKIM and DMARC records each local
//!   domain needs, as zone-file lines (see `dns_cmd`).
//! - `qsctl fetch [NAME] [--no-wait]`: asks the running pop-client to poll
//!   now, through its control socket `<data_dir>/run/pop-client.sock`.
//!
//! # Security
//! Passwords are read from standard input (`--password-stdin`) or generated and
//! printed once; they are stored only as argon2id hashes and never logged.
//! DKIM private keys are never printed, only the public half in DNS form.
//!
//! # Config
//! Reads the file named by `--config`, `QS_CONFIG` or `./quicksilver.toml`.

mod admin;
mod dkim_cmd;
mod dns_cmd;
mod fetch;
mod init;
mod list_cmd;
mod queue_cmd;
mod restart;
mod status;
pub mod up;

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use qs_config::Config;

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "qsctl", version, about = "Quicksilver's console")]
pub struct Cli {
    /// The config file (default: $QS_CONFIG, else ./quicksilver.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the default config, create the data folder, a certificate, the
    /// first domain and the postmaster (only what is missing).
    Init(init::InitArgs),
    /// Local domains.
    #[command(subcommand)]
    Domain(admin::DomainCommand),
    /// Users (mailboxes).
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Aliases.
    #[command(subcommand)]
    Alias(admin::AliasCommand),
    /// The mail queue (through core-queue).
    #[command(subcommand)]
    Queue(queue_cmd::QueueCommand),
    /// Run the modules in the foreground (all that are built, or those named);
    /// runs init first when there is no config.
    Up(up::UpArgs),
    /// Each module's state, pid, uptime, restarts and listeners, and the queue depth.
    Status,
    /// Exit 0 when MODULE answers (its greeting, or core-queue's socket).
    Health(status::HealthArgs),
    /// Restart MODULE without downtime (its new process takes over, the old
    /// one finishes its sessions).
    Restart(restart::RestartArgs),
    /// Compose and queue a plain-text message (body from a file or standard input).
    Send(queue_cmd::SendArgs),
    /// sendmail-compatible submission: the message on standard input.
    /// A link named `sendmail` pointing at qsctl behaves the same.
    Sendmail(queue_cmd::SendmailArgs),
    /// Ask the running pop-client to poll now (every account, or the one
    /// named) and show how it went.
    Fetch(fetch::FetchArgs),
    /// Mailing lists (list-server's files).
    #[command(subcommand)]
    List(list_cmd::ListCommand),
    /// DKIM signing keys of outgoing mail and their DNS records.
    #[command(subcommand)]
    Dkim(dkim_cmd::DkimCommand),
    /// The DNS records each local domain needs (MX, SPF, DKIM, DMARC), as
    /// zone-file lines.
    Dns(dns_cmd::DnsArgs),
}

/// Runs one command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(args) => init::run(cli.config.as_deref(), args),
        Command::Up(args) => up::run(cli.config.as_deref(), args),
        Command::Status => status::status(&load_config(&cli.config)?),
        Command::Health(args) => status::health(&load_config(&cli.config)?, args),
        Command::Restart(args) => restart::restart(&load_config(&cli.config)?, args),
        Command::Domain(cmd) => admin::domain(&load_config(&cli.config)?, cmd),
        Command::User(cmd) => admin::user(&load_config(&cli.config)?, cmd),
        Command::Alias(cmd) => admin::alias(&load_config(&cli.config)?, cmd),
        Command::Queue(cmd) => queue_cmd::queue(&load_config(&cli.config)?, cmd),
        Command::Send(args) => queue_cmd::send(&load_config(&cli.config)?, args),
        Command::Sendmail(args) => queue_cmd::sendmail(&load_config(&cli.config)?, args),
        Command::Fetch(args) => fetch::fetch(&load_config(&cli.config)?, args),
        Command::List(cmd) => list_cmd::list(&load_config(&cli.config)?, cmd),
        Command::Dkim(cmd) => dkim_cmd::dkim(&load_config(&cli.config)?, cmd),
        Command::Dns(args) => dns_cmd::dns(&load_config(&cli.config)?, args),
    }
}

fn load_config(explicit: &Option<PathBuf>) -> Result<Config> {
    Ok(Config::load(explicit.as_deref())?)
}

/// Reads one password line from standard input (without its line end).
fn read_password_line() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        anyhow::bail!("--password-stdin: standard input held no password");
    }
    Ok(password)
}

/// A random password of 20 characters from an unambiguous alphabet.
fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
