//! `qsctl init`: everything a fresh installation needs, and only what is missing.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use qs_config::{Config, DEFAULT_CONFIG};
use qs_directory::Secret;

/// `qsctl init` options.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The first local domain (used only when the directory has none).
    #[arg(long, default_value = "example.test")]
    domain: String,
    /// The server's host name, written into a new config file.
    #[arg(long)]
    hostname: Option<String>,
    /// Read the postmaster's password from standard input instead of generating one.
    #[arg(long)]
    password_stdin: bool,
}

impl Default for InitArgs {
    fn default() -> Self {
        InitArgs {
            domain: "example.test".into(),
            hostname: None,
            password_stdin: false,
        }
    }
}

/// Runs `qsctl init`.
pub fn run(explicit: Option<&Path>, args: InitArgs) -> Result<()> {
    let path = Config::locate(explicit);
    let mut done: Vec<String> = Vec::new();

    if !path.exists() {
        let mut text = DEFAULT_CONFIG.to_string();
        if let Some(host) = &args.hostname {
            text = text.replacen(
                "hostname = \"mail.example.test\"",
                &format!("hostname = \"{host}\""),
                1,
            );
        }
        // Validate before writing, so a bad --hostname writes nothing.
        Config::parse(&text, &path)?;
        write_new_file(&path, text.as_bytes(), 0o640)
            .with_context(|| format!("cannot write {}", path.display()))?;
        done.push(format!("wrote the default config {}", path.display()));
    }
    let config = Config::load_file(&path)?;

    for dir in [
        config.data_dir.clone(),
        config.data_path("mail"),
        config.data_path("lists"),
        config.queue.maildrop.clone(),
        config
            .queue
            .socket
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    ] {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            done.push(format!("created {}", dir.display()));
        }
    }

    if qs_service::tls::ensure_self_signed(&config.hostname, &config.tls.cert, &config.tls.key)? {
        done.push(format!(
            "created a self-signed certificate for {} in {}",
            config.hostname,
            config.tls.cert.display()
        ));
    }

    let directory = if config.directory.file.exists() {
        crate::admin::open_directory(&config)?
    } else {
        let created = qs_directory::Directory::create(
            &config.directory.file,
            qs_service::directory::options(&config.directory),
        )?;
        done.push(format!(
            "created the directory {}",
            config.directory.file.display()
        ));
        created
    };
    let snapshot = directory.refresh()?;
    let domain = match snapshot.domains().next() {
        Some(existing) => existing.name().to_string(),
        None => {
            directory.add_domain(&args.domain)?;
            done.push(format!(
                "added the domain {}",
                args.domain.to_ascii_lowercase()
            ));
            args.domain.to_ascii_lowercase()
        }
    };

    if snapshot.postmaster().is_none() {
        let address = format!("postmaster@{domain}");
        let (password, generated) = if args.password_stdin {
            (crate::read_password_line()?, false)
        } else {
            (crate::generate_password(), true)
        };
        if directory.refresh()?.user(&address).is_none() {
            directory.add_user(&address, "Postmaster", &Secret::new(password.as_bytes()))?;
            done.push(format!("added the user {address}"));
            if generated {
                println!("password for {address}: {password}");
                println!(
                    "(shown once: write it down or change it with `qsctl user passwd {address}`)"
                );
            }
        }
        directory.set_postmaster(&address)?;
        done.push(format!("made {address} the postmaster"));
    }

    if done.is_empty() {
        println!(
            "nothing to do: {} and its data folder {} are complete",
            path.display(),
            config.data_dir.display()
        );
    } else {
        for line in done {
            println!("{line}");
        }
    }
    Ok(())
}

fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
