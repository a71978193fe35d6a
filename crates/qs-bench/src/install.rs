//! An installation named with `--config`: its config file, and the run files
//! its daemons write once they listen (`<data_dir>/run/<module>.json`), which
//! give the addresses actually bound and the process ids.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::BenchError;
use crate::net::TlsMode;

/// Where the IMAP and POP3 subcommands connect, and as whom.
#[derive(Debug, Clone, clap::Args)]
pub struct MailboxArgs {
    /// The server, HOST:PORT (default with --config: the installation's
    /// daemon, on its listener for the --tls mode).
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    /// A Quicksilver config file: the targets, the certificate, the pid.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The user to log in as.
    #[arg(long)]
    pub user: String,
    /// The password (or $QS_BENCH_PASSWORD, kept out of the process list).
    #[arg(long, env = "QS_BENCH_PASSWORD", hide_env_values = true)]
    pub password: String,
}

/// A loaded installation.
#[derive(Debug, Clone)]
pub struct Installation {
    /// Its config.
    pub config: qs_config::Config,
}

impl Installation {
    /// Loads the config file at `path`.
    pub fn load(path: &Path) -> Result<Installation, BenchError> {
        let config = qs_config::Config::load_file(path)
            .map_err(|e| BenchError::Installation(format!("{}: {e}", path.display())))?;
        Ok(Installation { config })
    }

    fn run_file(&self, module: &str) -> Result<serde_json::Value, BenchError> {
        let path = self
            .config
            .data_dir
            .join("run")
            .join(format!("{module}.json"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            BenchError::Installation(format!("{}: {e} (is {module} running?)", path.display()))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| BenchError::Installation(format!("{}: {e}", path.display())))
    }

    /// The first address `module` listens on for the config key `key`
    /// (`imap_server.listen`); a wildcard address is reached on loopback.
    pub fn listener(&self, module: &str, key: &str) -> Result<String, BenchError> {
        let run = self.run_file(module)?;
        let addr: SocketAddr = run["listeners"][key]
            .as_array()
            .and_then(|list| list.first())
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                BenchError::Installation(format!("{module} does not listen for {key}"))
            })?;
        Ok(reachable(addr).to_string())
    }

    /// The process id of the running `module`.
    pub fn pid(&self, module: &str) -> Result<u32, BenchError> {
        let run = self.run_file(module)?;
        run["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| BenchError::Installation(format!("{module}'s run file has no pid")))
    }
}

/// `0.0.0.0:25` is reached as `127.0.0.1:25` (and `[::]` as `[::1]`).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// `--target`, else the listener of `module` for `key` in `--config`.
pub fn target(
    explicit: Option<&str>,
    installation: Option<&Installation>,
    module: &str,
    key: &str,
) -> Result<String, BenchError> {
    match (explicit, installation) {
        (Some(target), _) => Ok(target.to_string()),
        (None, Some(installation)) => installation.listener(module, key),
        (None, None) => Err(BenchError::Usage(
            "name the server with --target HOST:PORT, or an installation with --config PATH".into(),
        )),
    }
}

/// `--target`, else the listener of the `imap` or `pop3` server of
/// `--config` that speaks `tls`: the implicit-TLS one, or the plain one
/// (also used for STARTTLS).
pub fn mail_target(
    explicit: Option<&str>,
    installation: Option<&Installation>,
    protocol: &str,
    tls: TlsMode,
) -> Result<String, BenchError> {
    let listener = match tls {
        TlsMode::Implicit => "tls_listen",
        TlsMode::None | TlsMode::Starttls => "listen",
    };
    target(
        explicit,
        installation,
        &format!("{protocol}-server"),
        &format!("{protocol}_server.{listener}"),
    )
}

/// Loads `--config` when it is given.
pub fn optional(path: Option<&Path>) -> Result<Option<Installation>, BenchError> {
    path.map(Installation::load).transpose()
}

/// The VmRSS line of `/proc/<pid>/status`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        what: path.clone(),
        source,
    })?;
    parse_rss(&status).ok_or_else(|| BenchError::Installation(format!("{path}: no VmRSS line")))
}

fn parse_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn targets_come_from_the_flag_or_the_run_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("quicksilver.toml");
        std::fs::write(&config, "").unwrap();
        std::fs::create_dir_all(dir.path().join("var/run")).unwrap();
        std::fs::write(
            dir.path().join("var/run/imap-server.json"),
            r#"{"module":"imap-server","pid":4242,"started":1,
                "listeners":{"imap_server.listen":["0.0.0.0:1143"],"imap_server.tls_listen":["127.0.0.2:1993"]}}"#,
        )
        .unwrap();
        let inst = Installation::load(&config).unwrap();
        assert_eq!(
            target(None, Some(&inst), "imap-server", "imap_server.listen").unwrap(),
            "127.0.0.1:1143"
        );
        assert_eq!(
            inst.listener("imap-server", "imap_server.tls_listen")
                .unwrap(),
            "127.0.0.2:1993"
        );
        assert_eq!(inst.pid("imap-server").unwrap(), 4242);
        assert_eq!(
            target(Some("h:1"), Some(&inst), "imap-server", "x").unwrap(),
            "h:1"
        );
        let err = inst
            .listener("pop3-server", "pop3_server.listen")
            .unwrap_err();
        assert!(err.to_string().contains("is pop3-server running?"), "{err}");
        assert!(matches!(
            target(None, None, "imap-server", "imap_server.listen"),
            Err(BenchError::Usage(_))
        ));
    }

    #[test]
    fn rss_is_read_from_the_status_file() {
        let status = "Name:\timap-server\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_rss(status), Some(12345));
        assert_eq!(parse_rss("Name: x\n"), None);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
