//! `list-server`: mailing lists and their web page.

fn main() -> std::process::ExitCode {
    qs_service::daemon::from_command_line(
        "list-server",
        "Quicksilver's list server",
        qs_service::restart::Style::Successor,
        list_server::run,
    )
}
