//! `qsctl`: Quicksilver's console. See the library part for the commands.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Called as `sendmail` (a link to qsctl): behave as `qsctl sendmail`.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let called_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned());
    if called_as.as_deref() == Some("sendmail") {
        args.insert(1, "sendmail".into());
    }
    let cli = qsctl::Cli::parse_from(args);
    match qsctl::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line (or a few, for a config with several errors).
            eprintln!("qsctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
