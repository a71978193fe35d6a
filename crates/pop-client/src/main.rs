//! `pop-client`: fetches the provider's POP3 mailboxes. See the library part.

fn main() -> std::process::ExitCode {
    qs_service::daemon::from_command_line(
        "pop-client",
        "Quicksilver's POP3 client (MercuryD)",
        qs_service::restart::Style::InPlace,
        pop_client::run,
    )
}
