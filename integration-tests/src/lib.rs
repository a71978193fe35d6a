//! Shared harness for Quicksilver's whole-system tests.
//!
//! The tests under `tests/` drive the real binaries. [`binary`] builds them once
//! per test process with the same cargo that runs the tests (a no-op when they are
//! up to date) and returns their path; [`Installation`] is a throw-away config and
//! data folder made with the real `qsctl init`.

pub mod dns;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The folder holding the workspace's binaries for this test run.
fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps/; binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile> folder")
        .to_path_buf()
}

/// Path to a workspace binary, built (once per test process) if needed.
/// With `QS_TEST_PREBUILT=1` the binaries already in target/ are used as they
/// are (build the ones a test needs with `cargo build -p ...` first).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("QS_TEST_PREBUILT").is_some() {
            return;
        }
        let profile_release = bin_dir().ends_with("release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "--workspace", "--bins"]);
        if profile_release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bins failed");
    });
    let path = bin_dir().join(name);
    assert!(path.exists(), "binary {} not found", path.display());
    path
}

/// A throw-away installation: a config file and data folder in a temp dir.
pub struct Installation {
    /// The temporary folder (removed on drop).
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
}

impl Installation {
    /// An empty folder, no config yet.
    pub fn empty() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("quicksilver.toml");
        Installation { dir, config }
    }

    /// `qsctl init --domain example.test` with a known postmaster password.
    pub fn init() -> Self {
        let inst = Installation::empty();
        let out = inst.qsctl_stdin(
            &["init", "--domain", "example.test", "--password-stdin"],
            "postmaster-secret\n",
        );
        assert!(out.status.success(), "init failed: {}", text(&out));
        inst
    }

    /// The data folder (the default `var` beside the config).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("var")
    }

    /// Runs qsctl with this installation's config.
    pub fn qsctl(&self, args: &[&str]) -> Output {
        self.qsctl_stdin(args, "")
    }

    /// Runs qsctl with this installation's config and `stdin` as input.
    pub fn qsctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(binary("qsctl"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("QS_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qsctl");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
        drop(input);
        child.wait_with_output().expect("qsctl output")
    }

    /// Runs qsctl and asserts success; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.qsctl(args);
        assert!(
            out.status.success(),
            "qsctl {args:?} failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs qsctl and asserts failure; returns its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.qsctl(args);
        assert!(
            !out.status.success(),
            "qsctl {args:?} should have failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// Standard output and error of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

impl Installation {
    /// Sets `key` in `[section]` of the config file (the key must be in the
    /// default file, commented or not, inside that section).
    pub fn set(&self, section: &str, key: &str, value: &str) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let mut current = String::new();
        let mut done = false;
        let mut out = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('[') && !trimmed.starts_with("[[") {
                current = trimmed.trim_matches(['[', ']']).to_string();
            }
            if !done
                && current == section
                && (trimmed.starts_with(&format!("{key} ="))
                    || trimmed.starts_with(&format!("{key}=")))
            {
                out.push(format!("{key} = {value}"));
                done = true;
            } else {
                out.push(line.to_string());
            }
        }
        assert!(done, "no key {key} in [{section}] of the config");
        self.replace_config(&(out.join("\n") + "\n"));
    }

    /// Replaces the config file with `text`: written aside and renamed over,
    /// so that a daemon reading the config meanwhile sees the old file or the
    /// new one, never a truncated one (which would be valid TOML with the
    /// defaults for every section cut off, such as the listening ports).
    pub fn replace_config(&self, text: &str) {
        let aside = self.config.with_extension("toml.new");
        std::fs::write(&aside, text).expect("write config");
        std::fs::rename(&aside, &self.config).expect("replace config");
    }

    /// Adds users (password "pw") with `qsctl user add`.
    pub fn add_users(&self, addresses: &[&str]) {
        for address in addresses {
            let out = self.qsctl_stdin(&["user", "add", address, "--password-stdin"], "pw\n");
            assert!(out.status.success(), "user add {address}: {}", text(&out));
        }
    }

    /// The queue socket of this installation.
    pub fn socket(&self) -> PathBuf {
        self.data_dir().join("run/queue.sock")
    }

    /// A queue client for this installation, retrying for `retry_for`.
    pub fn client(&self, retry_for: std::time::Duration) -> qs_queue::Client {
        qs_queue::Client::new(
            qs_queue::Endpoint::Unix(self.socket()),
            qs_queue::ClientOptions {
                retry_for,
                ..Default::default()
            },
        )
    }

    /// The INBOX `new/` and `cur/` files of `local@domain`, contents sorted.
    pub fn inbox(&self, address: &str) -> Vec<Vec<u8>> {
        let (local, domain) = address.split_once('@').expect("an address");
        let root = self.data_dir().join("mail").join(domain).join(local);
        let mut out: Vec<Vec<u8>> = ["new", "cur"]
            .iter()
            .flat_map(|sub| {
                std::fs::read_dir(root.join(sub))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| std::fs::read(e.path()).unwrap_or_default())
            })
            .collect();
        out.sort();
        out
    }

    /// Waits until `address`'s INBOX holds at least `count` messages.
    pub fn wait_for_mail(
        &self,
        address: &str,
        count: usize,
        within: std::time::Duration,
    ) -> Vec<Vec<u8>> {
        let start = std::time::Instant::now();
        loop {
            let found = self.inbox(address);
            if found.len() >= count {
                return found;
            }
            assert!(
                start.elapsed() < within,
                "{address} has {} messages, expected {count}",
                found.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Starts a daemon of this installation and waits until `ready` holds.
    pub fn start(&self, name: &str) -> Daemon {
        Daemon::start(
            name,
            &self.config,
            self.dir.path().join(format!("{name}.log")),
        )
    }

    /// Starts a daemon of this installation with extra environment variables.
    pub fn start_with_env(&self, name: &str, env: &[(&str, &str)]) -> Daemon {
        let config = self.config.to_string_lossy().into_owned();
        let mut d = Daemon {
            name: name.to_string(),
            args: vec!["--config".into(), config],
            log: self.dir.path().join(format!("{name}.log")),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        d.spawn();
        d
    }
}

/// A running daemon, killed when dropped. Its log goes to a file that the
/// assertion messages can show.
pub struct Daemon {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    /// Extra environment variables (the benchmarks' `MALLOC_ARENA_MAX`).
    env: Vec<(String, String)>,
    child: Option<std::process::Child>,
}

impl Daemon {
    /// Starts `name` with `config`, appending its log to `log`.
    pub fn start(name: &str, config: &Path, log: PathBuf) -> Daemon {
        let config = config.to_string_lossy().into_owned();
        Daemon::start_with_args(name, &["--config", &config], log)
    }

    /// Starts the binary `name` with `args`, appending its log to `log`.
    pub fn start_with_args(name: &str, args: &[&str], log: PathBuf) -> Daemon {
        let mut d = Daemon {
            name: name.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            log,
            env: Vec::new(),
            child: None,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open daemon log");
        let child = Command::new(binary(&self.name))
            .args(&self.args)
            .env_remove("QS_CONFIG")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start daemon");
        self.child = Some(child);
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait up to `within` for a clean exit; returns its status.
    pub fn terminate(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Starts it again after a kill.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Waits for the process to exit by itself; returns its status.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if start.elapsed() > within {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `within` for a log line that `matches`; returns the log,
    /// and panics with it when no such line came (a daemon may write a line
    /// just after what it reports on becomes visible).
    pub fn wait_for_log_line(
        &self,
        within: std::time::Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let start = std::time::Instant::now();
        loop {
            let log = self.log();
            if log.lines().any(&matches) {
                return log;
            }
            assert!(start.elapsed() < within, "no such log line:\n{log}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Installation {
    /// Waits for `module`'s run file and returns the addresses bound for the
    /// config key `key` (e.g. `smtp_server.listen`).
    pub fn listening(&self, module: &str, key: &str) -> Vec<std::net::SocketAddr> {
        let path = self.data_dir().join("run").join(format!("{module}.json"));
        let start = std::time::Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(list) = json["listeners"][key].as_array()
            {
                return list
                    .iter()
                    .filter_map(|v| v.as_str()?.parse().ok())
                    .collect();
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "{module} did not write {} with {key}",
                path.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Points every listener of the default config at port 0 on loopback, so
    /// that tests run in parallel; daemons report the real ports in run files.
    pub fn use_ephemeral_ports(&self) {
        for (section, keys) in [
            ("smtp_server", &["listen", "submission", "submissions"][..]),
            ("imap_server", &["listen", "tls_listen"][..]),
            ("pop3_server", &["listen", "tls_listen"][..]),
        ] {
            for key in keys {
                self.set(section, key, "[\"127.0.0.1:0\"]");
            }
        }
        self.set("list_server", "web_listen", "\"127.0.0.1:0\"");
    }

    /// Points smtp-relay at a plain SMTP server (a benchmark's sink) with up
    /// to `connections` connections to it, and logs only warnings.
    pub fn relay_to_sink(&self, sink: std::net::SocketAddr, connections: u64) {
        self.set("log", "level", "\"warn\"");
        self.set("smtp_relay", "smarthost", &format!("\"{sink}\""));
        self.set("smtp_relay", "tls", "\"none\"");
        self.set("smtp_relay", "max_connections", &connections.to_string());
        self.set(
            "smtp_relay",
            "max_connections_per_host",
            &connections.to_string(),
        );
    }
}

/// A benchmark's `--name N` argument, or `default` (cargo's own `--bench`
/// and anything else are left alone).
pub fn bench_arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether a benchmark was given the flag `name`.
pub fn bench_flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}
