//! `qsctl restart MODULE`: restart one module without downtime. It sends
//! SIGHUP to the process named in the module's run file and waits until a new
//! instance has written the run file (see `qs_service::restart`: a successor
//! that took over the listening sockets, or the same process after an in-place
//! restart). The old process finishes its sessions in the background.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use qs_config::Config;

use crate::up::MODULES;

/// `qsctl restart` options.
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// The module to restart.
    module: String,
}

/// Runs `qsctl restart MODULE`.
pub fn restart(config: &Config, args: RestartArgs) -> Result<()> {
    let module = args.module.as_str();
    if !MODULES.contains(&module) {
        bail!("unknown module {module} (modules: {})", MODULES.join(", "));
    }
    let data_dir = &config.data_dir;
    let run_file = qs_service::runfile::path(data_dir, module);
    let (Some(pid), Some(before)) = (
        qs_service::runfile::read_pid(data_dir, module),
        qs_service::runfile::read_instance(data_dir, module),
    ) else {
        bail!(
            "{module} is not running here (no run file at {}); start it with `qsctl up`, systemctl or docker compose",
            run_file.display()
        );
    };
    let raw = i32::try_from(pid)
        .map_err(|_| anyhow::anyhow!("bad pid {pid} in {}", run_file.display()))?;
    if let Err(e) = kill(Pid::from_raw(raw), Signal::SIGHUP) {
        bail!(
            "cannot signal {module} (pid {pid}, from {}): {e}",
            run_file.display()
        );
    }
    let started = Instant::now();
    // The new process may need the whole ready time-out, and an in-place
    // restart first lets current work finish.
    let timeout = config.restart.ready_timeout + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = qs_service::runfile::read_instance(data_dir, module);
        if let Some(now) = now
            && now != before
            && let Some(new_pid) = qs_service::runfile::read_pid(data_dir, module)
        {
            let took = started.elapsed();
            if new_pid == pid {
                println!(
                    "{module} restarted in place (pid {pid}) in {} ms",
                    took.as_millis()
                );
            } else {
                println!(
                    "{module} restarted: pid {new_pid} serves, pid {pid} finishes its sessions ({} ms)",
                    took.as_millis()
                );
            }
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!(
                "{module} did not restart within {} s; see its log (the old process goes on serving when the new one fails)",
                timeout.as_secs()
            );
        }
    }
}
