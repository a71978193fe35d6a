//! `qsctl up`: runs the chosen modules in the foreground, as child processes of
//! the same build.
//!
//! - Without a config file it runs `qsctl init` first, so a fresh checkout gets a
//!   working server on the loopback defaults.
//! - Each module's log lines are prefixed with its name.
//! - A module that exits on its own is restarted after a back-off that doubles
//!   (1 s to 60 s) while it keeps failing within a minute, and `up` says so.
//! - Ctrl-C or SIGTERM stops every module with SIGTERM (each finishes its
//!   current work), core-queue last, so no module loses the queue under it.
//! - SIGHUP restarts every module without downtime (it is passed on to each);
//!   `qsctl restart MODULE` signals one module directly.
//!
//! Children run in their own process groups: a Ctrl-C in the terminal reaches
//! `up` alone, which then stops them in order.
//!
//! A module restarted without downtime may hand over to a new process that its
//! old process started (`qs_service::restart`). `up` is a child subreaper, so
//! that new process becomes its child when the old one exits; `up` then follows
//! it (the run file names it) instead of counting a crash. Under Docker, where
//! `qsctl up MODULE` is the container's first process, this is what keeps the
//! container up across a `docker compose kill -s HUP`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Every module, in start order (core-queue first, since the others use it).
pub const MODULES: &[&str] = &[
    "core-queue",
    "smtp-server",
    "smtp-relay",
    "pop-client",
    "pop3-server",
    "imap-server",
    "list-server",
];

/// How long modules have to stop before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `qsctl up` options.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Modules to run (default: every module this build has).
    modules: Vec<String>,
}

struct Module {
    name: String,
    binary: PathBuf,
    child: Option<Child>,
    /// The process that took over from `child` (or from an earlier adopted
    /// one) at a restart without downtime.
    adopted: Option<Pid>,
    restarts: u32,
    backoff: Duration,
    started: Instant,
    restart_at: Option<Instant>,
}

/// Runs `qsctl up`.
pub fn run(explicit: Option<&Path>, args: UpArgs) -> Result<()> {
    let config_path = qs_config::Config::locate(explicit);
    if !config_path.exists() {
        println!("no config at {}: running init first", config_path.display());
        crate::init::run(explicit, crate::init::InitArgs::default())?;
    }
    // Check the config before starting anything.
    qs_config::Config::load_file(&config_path)?;
    let here = std::env::current_exe().context("cannot find the qsctl binary")?;
    let dir = here.parent().map(Path::to_path_buf).unwrap_or_default();
    build_missing_modules(&dir)?;
    let wanted: Vec<String> = if args.modules.is_empty() {
        MODULES
            .iter()
            .filter(|m| dir.join(m).exists())
            .map(|m| m.to_string())
            .collect()
    } else {
        for m in &args.modules {
            if !MODULES.contains(&m.as_str()) {
                anyhow::bail!("unknown module {m} (modules: {})", MODULES.join(", "));
            }
            if !dir.join(m).exists() {
                anyhow::bail!(
                    "module {m} is not built here ({} is missing)",
                    dir.join(m).display()
                );
            }
        }
        MODULES
            .iter()
            .filter(|m| args.modules.iter().any(|w| w == *m))
            .map(|m| m.to_string())
            .collect()
    };
    if wanted.is_empty() {
        anyhow::bail!("no module binaries beside {}", here.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(supervise(config_path, dir, wanted))
}

/// Under `cargo run` (which sets `CARGO` and `CARGO_MANIFEST_DIR`), builds the
/// module binaries that are not yet beside qsctl, with qsctl's own profile, so
/// `cargo run --release --bin qsctl -- up` works on a fresh checkout.
fn build_missing_modules(dir: &Path) -> Result<()> {
    // Only under `cargo run` of qsctl itself (not, say, a test that runs qsctl
    // with cargo's variables inherited).
    if std::env::var("CARGO_PKG_NAME").as_deref() != Ok("qsctl") {
        return Ok(());
    }
    let (Some(cargo), Some(manifest_dir)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return Ok(());
    };
    // Modules whose crate is in this checkout (crates/<module>) but not built.
    let crates = PathBuf::from(&manifest_dir).join("..");
    let missing = MODULES
        .iter()
        .any(|m| crates.join(m).is_dir() && !dir.join(m).exists());
    if !missing {
        return Ok(());
    }
    let manifest = PathBuf::from(manifest_dir).join("Cargo.toml");
    let release = dir.ends_with("release");
    println!(
        "building the modules (cargo build{} --workspace --bins)",
        if release { " --release" } else { "" }
    );
    let mut build = std::process::Command::new(cargo);
    build
        .args(["build", "--workspace", "--bins", "--manifest-path"])
        .arg(&manifest);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .context("cannot run cargo to build the modules")?;
    if !status.success() {
        anyhow::bail!("building the modules failed");
    }
    Ok(())
}

async fn supervise(config: PathBuf, dir: PathBuf, wanted: Vec<String>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // An old process that finished its sessions after a restart is reaped when
    // it exits (it became ours when the process that started it exited).
    let mut child_exited = signal(SignalKind::child())?;
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!(
            "qsctl up: cannot become a child subreaper ({e}); a module restarted without downtime will not be followed"
        );
    }
    let data_dir = qs_config::Config::load_file(&config)?.data_dir;
    let mut modules: Vec<Module> = wanted
        .into_iter()
        .map(|name| Module {
            binary: dir.join(&name),
            name,
            child: None,
            adopted: None,
            restarts: 0,
            backoff: Duration::from_secs(1),
            started: Instant::now(),
            restart_at: Some(Instant::now()),
        })
        .collect();
    println!(
        "qsctl up: {} with {} (Ctrl-C stops them)",
        modules
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        config.display()
    );
    loop {
        for m in modules.iter_mut() {
            if m.child.is_none()
                && m.adopted.is_none()
                && m.restart_at.is_some_and(|t| Instant::now() >= t)
            {
                match spawn(&m.binary, &m.name, &config) {
                    Ok(child) => {
                        m.child = Some(child);
                        m.started = Instant::now();
                        m.restart_at = None;
                    }
                    Err(e) => {
                        eprintln!("[{}] cannot start: {e}", m.name);
                        m.restart_at = Some(Instant::now() + m.backoff);
                        m.backoff = (m.backoff * 2).min(Duration::from_secs(60));
                    }
                }
            }
        }
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                println!("qsctl up: SIGHUP: restarting every module without downtime");
                for m in &modules {
                    if let Some(pid) = m.pid() {
                        let _ = kill(pid, Signal::SIGHUP);
                    }
                }
            }
            _ = child_exited.recv() => reap_stray_children(&modules),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let mut restarted = false;
        for m in modules.iter_mut() {
            let exited = match (m.child.as_mut(), m.adopted) {
                (Some(child), _) => match child.try_wait() {
                    Ok(Some(status)) => Some((
                        child.id().map(|p| Pid::from_raw(p as i32)),
                        status.success(),
                        status.to_string(),
                    )),
                    _ => None,
                },
                (None, Some(pid)) => adopted_exit(pid).map(|(ok, how)| (Some(pid), ok, how)),
                (None, None) => None,
            };
            if let Some((old, success, status)) = exited {
                m.child = None;
                m.adopted = None;
                if success && let Some(new) = successor(&data_dir, &m.name, old) {
                    println!("[{}] handed over to pid {new}", m.name);
                    m.adopted = Some(new);
                    continue;
                }
                // A module that ran a while before failing starts again quickly.
                if m.started.elapsed() > Duration::from_secs(60) {
                    m.backoff = Duration::from_secs(1);
                }
                m.restarts += 1;
                eprintln!(
                    "[{}] exited ({status}); restarting in {} s (restart {})",
                    m.name,
                    m.backoff.as_secs(),
                    m.restarts
                );
                m.restart_at = Some(Instant::now() + m.backoff);
                m.backoff = (m.backoff * 2).min(Duration::from_secs(60));
                restarted = true;
            }
        }
        if restarted {
            record_restarts(&config, &modules);
        }
    }
    println!("qsctl up: stopping (core-queue last)");
    // Everything but core-queue first, then core-queue.
    for last in [false, true] {
        for m in modules.iter_mut() {
            if (m.name == "core-queue") == last
                && let Some(pid) = m.pid()
            {
                let _ = kill(pid, Signal::SIGTERM);
                // A new process that has just taken over (still the old one's child).
                if let Some(new) = successor(&data_dir, &m.name, Some(pid)) {
                    let _ = kill(new, Signal::SIGTERM);
                }
            }
        }
        // Old processes still finishing their sessions after a restart stop too.
        if !last {
            for pid in stray_children(&modules) {
                let _ = kill(pid, Signal::SIGTERM);
            }
        }
        for m in modules
            .iter_mut()
            .filter(|m| (m.name == "core-queue") == last)
        {
            if let Some(mut child) = m.child.take() {
                match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
                    Ok(_) => println!("[{}] stopped", m.name),
                    Err(_) => {
                        eprintln!("[{}] did not stop in time; killed", m.name);
                        let _ = child.kill().await;
                    }
                }
            }
            if let Some(pid) = m.adopted.take() {
                let deadline = Instant::now() + STOP_TIMEOUT;
                while adopted_exit(pid).is_none() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if adopted_exit(pid).is_none() {
                    eprintln!("[{}] did not stop in time; killed", m.name);
                    let _ = kill(pid, Signal::SIGKILL);
                    let _ = waitpid(pid, None);
                } else {
                    println!("[{}] stopped", m.name);
                }
            }
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let strays = stray_children(&modules);
        if strays.is_empty() || Instant::now() >= deadline {
            break;
        }
        for pid in strays {
            let _ = kill(pid, Signal::SIGTERM);
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

impl Module {
    /// The process that serves this module now.
    fn pid(&self) -> Option<Pid> {
        match (&self.child, self.adopted) {
            (Some(child), _) => child.id().map(|p| Pid::from_raw(p as i32)),
            (None, adopted) => adopted,
        }
    }
}

/// The new process named by `module`'s run file, when it is not `old` and is
/// alive: `old` handed over to it.
fn successor(data_dir: &Path, module: &str, old: Option<Pid>) -> Option<Pid> {
    let pid = Pid::from_raw(i32::try_from(qs_service::runfile::read_pid(data_dir, module)?).ok()?);
    (Some(pid) != old && kill(pid, None).is_ok()).then_some(pid)
}

/// Whether adopted process `pid` has exited: `Some((success, how))` once it
/// has (and is reaped), `None` while it runs.
fn adopted_exit(pid: Pid) -> Option<(bool, String)> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some((code == 0, format!("exit status: {code}"))),
        Ok(WaitStatus::Signaled(_, signal, _)) => Some((false, format!("signal: {signal}"))),
        Ok(_) => None,
        // Not our child (no subreaper): all we can tell is whether it runs.
        Err(_) => (kill(pid, None).is_err()).then(|| (true, "gone".to_string())),
    }
}

/// Children of `up` that are no module's current process: old processes
/// finishing their sessions after a restart (they became ours when the process
/// that started them exited).
fn stray_children(modules: &[Module]) -> Vec<Pid> {
    let me = std::process::id().to_string();
    let current: Vec<Pid> = modules.iter().filter_map(Module::pid).collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // "pid (name) state ppid ...": the name may hold anything but
                    // ends at the last ')'.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1).map(|ppid| ppid == me)
                })
                .unwrap_or(false)
        })
        .map(Pid::from_raw)
        .filter(|pid| !current.contains(pid))
        .collect()
}

/// Reaps stray children that have exited, so none is left a zombie.
fn reap_stray_children(modules: &[Module]) {
    for pid in stray_children(modules) {
        let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
    }
}

/// Keeps `<data_dir>/run/up.json` with each module's restart count, for
/// `qsctl status`.
fn record_restarts(config: &Path, modules: &[Module]) {
    let Ok(loaded) = qs_config::Config::load_file(config) else {
        return;
    };
    let counts: Vec<String> = modules
        .iter()
        .map(|m| format!("\"{}\":{}", m.name, m.restarts))
        .collect();
    let text = format!(
        "{{\"pid\":{},\"restarts\":{{{}}}}}\n",
        std::process::id(),
        counts.join(",")
    );
    let path = loaded.data_dir.join("run/up.json");
    let temp = path.with_extension("json.tmp");
    if std::fs::write(&temp, text).is_ok() {
        let _ = std::fs::rename(&temp, &path);
    }
}

fn spawn(binary: &Path, name: &str, config: &Path) -> std::io::Result<Child> {
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let prefix = format!("[{name}] ");
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{prefix}{line}");
            }
        });
    }
    Ok(child)
}
