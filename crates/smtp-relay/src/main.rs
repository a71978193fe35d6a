//! `smtp-relay`: outgoing mail, through a smarthost or to each domain's MX.

fn main() -> std::process::ExitCode {
    qs_service::daemon::from_command_line(
        "smtp-relay",
        "Quicksilver's SMTP relay",
        qs_service::restart::Style::InPlace,
        smtp_relay::run,
    )
}
