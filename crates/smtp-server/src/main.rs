//! `smtp-server`: SMTP in and submission. See the library part.

fn main() -> std::process::ExitCode {
    qs_service::daemon::from_command_line(
        "smtp-server",
        "Quicksilver's SMTP server",
        qs_service::restart::Style::Successor,
        smtp_server::run,
    )
}
