//! `pop3-server`: POP3 for local users. See the library part.

fn main() -> std::process::ExitCode {
    qs_service::daemon::from_command_line(
        "pop3-server",
        "Quicksilver's POP3 server (MercuryP)",
        qs_service::restart::Style::Successor,
        pop3_server::run,
    )
}
