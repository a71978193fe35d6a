//! Shared harness for Quicksilver's whole-system tests.
//!
//! The tests under `tests/` drive the real binaries. [`binary`] builds them once
//! per test process with the same cargo that runs the tests (a no-op when they are
//! up to date) and returns their path; [`Installation`] is a throw-away config and
//! data folder made with the real `qsctl init`.

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
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
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
