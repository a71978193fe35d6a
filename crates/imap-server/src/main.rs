//! `imap-server`: IMAP for local users. See the library part.

fn main() -> std::process::ExitCode {
    qs_service::daemon::from_command_line(
        "imap-server",
        "Quicksilver's IMAP server (MercuryI)",
        qs_service::restart::Style::Successor,
        imap_server::run,
    )
}
