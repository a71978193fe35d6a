//! `qsctl status` and `qsctl health MODULE`: what runs, where it listens, and
//! whether it answers.
//!
//! Each daemon writes `<data_dir>/run/<module>.json` (pid, start time, bound
//! addresses) once it listens; `qsctl up` keeps `<data_dir>/run/up.json` with
//! each module's restart count. `health` is what container healthchecks run:
//! it connects to the module's first listener and checks the greeting (SMTP
//! `220`, POP3 `+OK`, IMAP `* OK`), pings core-queue over its socket, or, for
//! modules without listeners, checks that the recorded process is alive.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use qs_config::Config;

use crate::up::MODULES;

/// `qsctl health` options.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The module to check.
    module: String,
}

/// What a run file says.
struct RunInfo {
    pid: u32,
    started: u64,
    listeners: Vec<(String, Vec<String>)>,
}

fn read_run_file(data_dir: &Path, module: &str) -> Option<RunInfo> {
    let text = std::fs::read_to_string(qs_service::runfile::path(data_dir, module)).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let listeners = json["listeners"]
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(key, addrs)| {
                    let list = addrs
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    (key.clone(), list)
                })
                .collect()
        })
        .unwrap_or_default();
    Some(RunInfo {
        pid: u32::try_from(json["pid"].as_u64()?).ok()?,
        started: json["started"].as_u64().unwrap_or(0),
        listeners,
    })
}

fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    // Signal 0 checks that the process exists without touching it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_ok()
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h{}m", s / 3600, s / 60 % 60),
        s => format!("{}d{}h", s / 86_400, s / 3600 % 24),
    }
}

fn restarts(data_dir: &Path) -> serde_json::Value {
    std::fs::read_to_string(data_dir.join("run/up.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Runs `qsctl status`.
pub fn status(config: &Config) -> Result<()> {
    let now = qs_queue::unix_now();
    let restarts = restarts(&config.data_dir);
    println!(
        "{:<12} {:<8} {:>8} {:>8} {:>8}  listening",
        "module", "state", "pid", "uptime", "restarts"
    );
    for module in MODULES {
        let restarted = restarts["restarts"][module].as_u64().unwrap_or(0);
        match read_run_file(&config.data_dir, module) {
            Some(info) if alive(info.pid) => {
                let listening: Vec<String> = info
                    .listeners
                    .iter()
                    .map(|(key, addrs)| {
                        format!(
                            "{} {}",
                            key.rsplit('.').next().unwrap_or(key),
                            addrs.join(",")
                        )
                    })
                    .collect();
                println!(
                    "{module:<12} {:<8} {:>8} {:>8} {restarted:>8}  {}",
                    "running",
                    info.pid,
                    uptime(now.saturating_sub(info.started)),
                    listening.join("; ")
                );
            }
            Some(info) => println!(
                "{module:<12} {:<8} {:>8} {:>8} {restarted:>8}",
                "dead", info.pid, "-"
            ),
            None => println!(
                "{module:<12} {:<8} {:>8} {:>8} {restarted:>8}",
                "stopped", "-", "-"
            ),
        }
    }
    let client = qs_queue::Client::new(
        qs_queue::Endpoint::Unix(config.queue.socket.clone()),
        qs_queue::ClientOptions {
            retry_for: Duration::from_secs(2),
            ..Default::default()
        },
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(client.stats()) {
        Ok(stats) => {
            let pending: Vec<String> = stats
                .pending
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            println!(
                "queue: {} messages, {} bytes; pending recipients: {}",
                stats.messages,
                stats.bytes,
                if pending.is_empty() {
                    "none".to_string()
                } else {
                    pending.join(", ")
                }
            );
        }
        Err(_) => println!("queue: core-queue does not answer"),
    }
    Ok(())
}

/// Runs `qsctl health MODULE`: success when the module answers.
pub fn health(config: &Config, args: HealthArgs) -> Result<()> {
    let module = args.module.as_str();
    if !MODULES.contains(&module) {
        bail!("unknown module {module} (modules: {})", MODULES.join(", "));
    }
    if module == "core-queue" {
        let client = qs_queue::Client::new(
            qs_queue::Endpoint::Unix(config.queue.socket.clone()),
            qs_queue::ClientOptions {
                retry_for: Duration::from_secs(3),
                ..Default::default()
            },
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime
            .block_on(client.ping())
            .context("core-queue does not answer")?;
        println!("core-queue: ok");
        return Ok(());
    }
    let info = read_run_file(&config.data_dir, module)
        .with_context(|| format!("{module} is not running (no run file)"))?;
    if !alive(info.pid) {
        bail!("{module} is not running (pid {} is gone)", info.pid);
    }
    let expected = match module {
        "smtp-server" => Some(("smtp_server.listen", "220")),
        "pop3-server" => Some(("pop3_server.listen", "+OK")),
        "imap-server" => Some(("imap_server.listen", "* OK")),
        _ => None,
    };
    if let Some((key, greeting)) = expected {
        let addr = info
            .listeners
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, addrs)| addrs.first())
            .with_context(|| format!("{module} has no {key} listener to check"))?;
        let line =
            first_line(addr).with_context(|| format!("{module} at {addr} does not answer"))?;
        if !line.starts_with(greeting) {
            bail!("{module} at {addr} answered {line:?}, not {greeting}");
        }
    }
    if module == "list-server" {
        let addr = info
            .listeners
            .iter()
            .find(|(k, _)| k == "list_server.web_listen")
            .and_then(|(_, addrs)| addrs.first())
            .context("list-server has no list_server.web_listen listener to check")?;
        let line = http_status_line(addr)
            .with_context(|| format!("list-server at {addr} does not answer"))?;
        if !line.contains(" 200 ") {
            bail!("list-server at {addr} answered {line:?}, not 200");
        }
    }
    println!("{module}: ok (pid {})", info.pid);
    Ok(())
}

/// The status line of `GET /healthz` on the web listener.
fn http_status_line(addr: &str) -> Result<String> {
    use std::io::Write;
    let addr: SocketAddr = addr.parse().context("bad address in the run file")?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

fn first_line(addr: &str) -> Result<String> {
    let addr: SocketAddr = addr.parse().context("bad address in the run file")?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}
