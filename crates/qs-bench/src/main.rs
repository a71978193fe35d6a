//! `qs-bench`: the command line over the library. Parses the flags, runs one
//! subcommand, prints its summary table (or JSON with `--json`); errors are
//! one line on standard error and a non-zero exit status.

use clap::{Parser, Subcommand};
use qs_bench::report::{Summary, render};

/// qs-bench's command line.
#[derive(Debug, Parser)]
#[command(
    name = "qs-bench",
    version,
    about = "Load and timings for Quicksilver's SMTP, delivery, IMAP, POP3, relay and lists"
)]
struct Cli {
    /// Print the report as one JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// SMTP: messages/s accepted, end of data to 250, errors by reply code.
    Smtp(qs_bench::smtp::SmtpOptions),
    /// SMTP, then until every message is in the recipient's INBOX.
    Deliver(qs_bench::deliver::DeliverOptions),
    /// IMAP: APPEND, SELECT, FETCH, UID SEARCH, STORE; memory per idle connection.
    Imap(qs_bench::imap::ImapOptions),
    /// POP3: login, STAT, LIST, UIDL, RETR of the whole maildrop.
    Pop3(qs_bench::pop3::Pop3Options),
    /// smtp-relay: deliveries/s into a sink of this tool's.
    Relay(qs_bench::relay::RelayOptions),
    /// list-server: one post to N members, fan-out and delivery to the sink.
    List(qs_bench::list::ListOptions),
}

fn print(report: &impl Summary, json: bool) {
    print!("{}", render(report, json));
}

async fn run(cli: Cli) -> Result<(), qs_bench::BenchError> {
    match &cli.command {
        Command::Smtp(o) => print(&qs_bench::smtp::run(o).await?, cli.json),
        Command::Deliver(o) => print(&qs_bench::deliver::run(o).await?, cli.json),
        Command::Imap(o) => print(&qs_bench::imap::run(o).await?, cli.json),
        Command::Pop3(o) => print(&qs_bench::pop3::run(o).await?, cli.json),
        Command::Relay(o) => print(&qs_bench::relay::run(o).await?, cli.json),
        Command::List(o) => print(&qs_bench::list::run(o).await?, cli.json),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("qs-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qs-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
