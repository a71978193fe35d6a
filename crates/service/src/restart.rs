//! Restart without downtime, the same way for every daemon: SIGHUP (sent by
//! `qsctl restart`, `systemctl reload` or `docker compose kill -s HUP`) starts
//! the new program; SIGTERM and SIGINT stop.
//!
//! Two styles, after what the daemon serves:
//!
//! - [`Style::Successor`], for daemons with listening sockets (smtp-server,
//!   pop3-server, imap-server, list-server): a new process of the same program
//!   is started with the listening sockets ([`crate::listen`]); once it has
//!   written its run file (it serves), this process stops accepting and lets its
//!   sessions finish within the grace period ([`crate::shutdown`]). If the new
//!   process fails or is not ready in time, it is stopped and this one goes on
//!   serving: a broken binary or config never takes a module down.
//! - [`Style::InPlace`], for daemons that own something only one process may
//!   hold (core-queue's database lock, pop-client's mailbox sessions,
//!   smtp-relay's leases): the daemon stops gracefully, then replaces itself
//!   with the new program (`exec`, same process id, so supervisors see nothing).
//!   Queue clients retry meanwhile, so nobody sees an error, only a short delay.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

use crate::shutdown::{self, Shutdown, ShutdownTrigger};

/// How a daemon restarts (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A new process takes over the listening sockets while this one drains.
    Successor,
    /// Stop gracefully, then `exec` the new program in this process.
    InPlace,
}

/// What a daemon needs to know to restart.
#[derive(Clone, Debug)]
pub struct Restart {
    /// The module's name, for the run file (`smtp-server`).
    pub module: String,
    /// Successor or in place.
    pub style: Style,
    /// The data folder (its `run/` holds the run files).
    pub data_dir: PathBuf,
    /// Sessions' grace period after a hand-over (`restart.grace_secs`).
    pub grace: Duration,
    /// How long to wait for a successor (`restart.ready_timeout_secs`).
    pub ready_timeout: Duration,
}

impl Restart {
    /// The restart settings of `module` from `config`.
    pub fn new(module: &str, style: Style, config: &qs_config::Config) -> Restart {
        Restart {
            module: module.to_string(),
            style,
            data_dir: config.data_dir.clone(),
            grace: config.restart.grace,
            ready_timeout: config.restart.ready_timeout,
        }
    }
}

/// Set when SIGHUP asked an in-place daemon to replace itself.
static EXEC_REQUESTED: AtomicBool = AtomicBool::new(false);

/// A shutdown that fires on SIGTERM or SIGINT (stop) and handles SIGHUP
/// (restart) as `restart` says. Must be called inside a runtime.
pub fn on_signals(restart: Restart) -> std::io::Result<Shutdown> {
    use tokio::signal::unix::{SignalKind, signal};
    let (trigger, shutdown) = shutdown::channel();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                signal = stop_requested(&mut term, &mut int) => {
                    tracing::info!("{signal}: stopping");
                    trigger.fire();
                    return;
                }
                _ = hup.recv() => {
                    // A stop while a new process is starting does not wait
                    // for it: the restart is abandoned and that process is
                    // stopped (see `Starting`).
                    tokio::select! {
                        () = on_hangup(&restart, &trigger) => {}
                        signal = stop_requested(&mut term, &mut int) => {
                            tracing::info!("{signal}: stopping; the restart under way is abandoned");
                            trigger.fire();
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok(shutdown)
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn stop_requested(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

async fn on_hangup(restart: &Restart, trigger: &ShutdownTrigger) {
    // Once handed over (or stopping), the successor is the one to restart.
    if trigger.is_fired() {
        tracing::info!("SIGHUP: this process is already stopping; ignored");
        return;
    }
    match restart.style {
        Style::InPlace => {
            tracing::info!("SIGHUP: finishing current work, then starting the new program");
            EXEC_REQUESTED.store(true, Ordering::SeqCst);
            trigger.fire();
        }
        Style::Successor => {
            let started = Instant::now();
            tracing::info!("SIGHUP: starting a new process with the listening sockets");
            match start_successor(restart).await {
                Ok(pid) => {
                    tracing::info!(
                        successor = pid,
                        ready_ms = started.elapsed().as_millis() as u64,
                        grace_secs = restart.grace.as_secs(),
                        "the new process serves; no new connections here, open sessions finish"
                    );
                    trigger.hand_over(restart.grace);
                }
                Err(reason) => {
                    tracing::error!(%reason, "restart failed; this process goes on serving");
                }
            }
        }
    }
}

/// Starts the successor and waits until it serves; returns its process id.
async fn start_successor(restart: &Restart) -> Result<u32, String> {
    let program = current_program()?;
    let child = crate::listen::with_registered(|listeners| {
        // The successor inherits exactly these descriptors: close-on-exec is
        // cleared on our duplicates for the spawn and set again right after.
        // Only this task spawns processes in a daemon, so no other child can
        // inherit them meanwhile.
        for l in listeners {
            fcntl(&l.fd, FcntlArg::F_SETFD(FdFlag::empty()))
                .map_err(|e| format!("cannot pass {} to the new process: {e}", l.key))?;
        }
        let spawned = std::process::Command::new(&program)
            .args(std::env::args_os().skip(1))
            .env(
                crate::listen::LISTEN_FDS_VAR,
                crate::listen::describe(listeners),
            )
            .stdin(std::process::Stdio::null())
            .spawn();
        for l in listeners {
            let _ = fcntl(&l.fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
        spawned.map_err(|e| format!("cannot start {}: {e}", program.display()))
    })?;
    let pid = child.id();
    let mut starting = Starting(Some(child));
    let deadline = Instant::now() + restart.ready_timeout;
    loop {
        if let Some(Ok(Some(status))) = starting.0.as_mut().map(std::process::Child::try_wait) {
            return Err(format!(
                "the new process {pid} exited before serving ({status})"
            ));
        }
        if crate::runfile::read_pid(&restart.data_dir, &restart.module) == Some(pid) {
            // The child outlives us: it is reaped by whoever adopts it.
            starting.0 = None;
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the new process {pid} was not ready within {} s; stopped",
                restart.ready_timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A new process not yet known to serve. If the wait for it ends without
/// it (it is late, or this process is told to stop meanwhile and the wait
/// is dropped), it is killed and reaped, so that it never serves with
/// nobody to stop it.
struct Starting(Option<std::process::Child>);

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// This program's file. When it has been replaced since start (a new build or
/// package), the new file at the same path is the one to run.
fn current_program() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// For in-place daemons, after their `run` has returned and everything is
/// closed: when SIGHUP asked for it, replaces this process with the new
/// program (same arguments, same process id). Returns only if there was no
/// such request, or with the reason the program could not be started.
pub fn exec_if_requested() -> Result<(), String> {
    if !EXEC_REQUESTED.load(Ordering::SeqCst) {
        return Ok(());
    }
    use std::os::unix::process::CommandExt;
    let program = current_program()?;
    let error = std::process::Command::new(&program)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(format!("cannot start {}: {error}", program.display()))
}
