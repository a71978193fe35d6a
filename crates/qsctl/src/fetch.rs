//! `qsctl fetch [NAME]`: asks the running pop-client to poll now (every
//! account, or the one named) and prints how each poll went.
//!
//! pop-client listens on the Unix socket `<data_dir>/run/pop-client.sock`:
//! one line `FETCH` or `FETCH NAME`, then it answers `QUEUED NAME` for each
//! account and `POLLING` at once, and `OK NAME: summary` or `ERR NAME: error`
//! as each poll ends; a lone `ERR text` refuses the request (an unknown name). No restart
//! is involved, and a poll already running finishes first. qsctl does not
//! depend on the pop-client crate: this small text protocol is all they share.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use qs_config::Config;

/// pop-client's control socket, under the data folder.
const SOCKET: &str = "run/pop-client.sock";

/// How long to wait for the polls to end.
const WAIT: Duration = Duration::from_secs(30 * 60);

/// `qsctl fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The account to poll (its `name`); default: every account.
    name: Option<String>,
    /// Ask for the poll and return at once, without waiting for its result.
    #[arg(long)]
    no_wait: bool,
}

/// Asks pop-client to poll now; prints each account's result. Fails when
/// pop-client is not running, the account is unknown, or a poll failed.
pub fn fetch(config: &Config, args: FetchArgs) -> Result<()> {
    let path = config.data_dir.join(SOCKET);
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "pop-client is not running (no answer on {}); start it with `qsctl up` or `pop-client`",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(WAIT))?;
    let request = match &args.name {
        Some(name) => format!("FETCH {}\n", name.trim()),
        None => "FETCH\n".to_string(),
    };
    stream
        .write_all(request.as_bytes())
        .context("cannot talk to pop-client")?;
    let mut queued = 0;
    let mut done = 0;
    let mut failed = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = line.context("pop-client stopped answering")?;
        if let Some(name) = line.strip_prefix("QUEUED ") {
            queued += 1;
            if args.no_wait {
                println!("{name}: poll asked for");
            }
        } else if line == "POLLING" {
            if args.no_wait {
                return Ok(());
            }
        } else if let Some(text) = line.strip_prefix("OK ") {
            done += 1;
            println!("{text}");
        } else if let Some(text) = line.strip_prefix("ERR ") {
            if queued == 0 {
                bail!("pop-client: {text}");
            }
            done += 1;
            eprintln!("qsctl: fetch {text}");
            failed.push(text.split(':').next().unwrap_or(text).to_string());
        }
    }
    if queued == 0 {
        bail!("pop-client closed the connection without an answer");
    }
    if !args.no_wait && done < queued {
        bail!("pop-client stopped before every poll ended");
    }
    if !failed.is_empty() {
        bail!("the poll failed for: {}", failed.join(", "));
    }
    Ok(())
}
