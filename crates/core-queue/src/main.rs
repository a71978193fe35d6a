//! `core-queue`: owns the queue, routes and delivers. See the library part.

fn main() -> std::process::ExitCode {
    qs_service::daemon::from_command_line(
        "core-queue",
        "Quicksilver's queue and local delivery",
        qs_service::restart::Style::InPlace,
        core_queue::run,
    )
}
