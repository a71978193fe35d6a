//! `qsctl domain|user|alias`: the user directory.

use anyhow::Result;
use clap::Subcommand;
use qs_config::Config;
use qs_directory::{Directory, Pop3Options, Secret};

/// Opens the installation's directory; a missing one points at `qsctl init`.
pub fn open_directory(config: &Config) -> Result<Directory> {
    if !config.directory.file.exists() {
        anyhow::bail!(
            "the directory {} does not exist (run `qsctl init` first)",
            config.directory.file.display()
        );
    }
    Ok(qs_service::directory::open(&config.directory)?)
}

/// `qsctl domain ...`
#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Add a local domain, or an alias of one.
    Add {
        /// The domain.
        domain: String,
        /// Make it an alias: mail to x@DOMAIN reaches x@TARGET.
        #[arg(long, value_name = "TARGET")]
        alias_of: Option<String>,
    },
    /// Remove a domain (refused while users or aliases use it).
    Del {
        /// The domain.
        domain: String,
    },
    /// List the domains.
    List,
}

/// `qsctl user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; without --password-stdin a password is generated and shown once.
    Add {
        /// The user's address.
        address: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user (the mailbox on disk is kept).
    Del {
        /// The user's address.
        address: String,
    },
    /// Set a new password.
    Passwd {
        /// The user's address.
        address: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Forward a user's mail (no target: stop forwarding).
    Forward {
        /// The user's address.
        address: String,
        /// Where to forward.
        targets: Vec<String>,
        /// Keep a copy in the user's own mailbox too.
        #[arg(long)]
        keep_copy: bool,
    },
    /// Set a user's POP3 options; with none given, show them.
    Pop3 {
        /// The user's address.
        address: String,
        /// Accept DELE but keep the messages (a mailbox that several people fetch).
        #[arg(long, value_name = "on|off")]
        ignore_dele: Option<Switch>,
        /// Offer only the messages not yet marked as seen.
        #[arg(long, value_name = "on|off")]
        only_unread: Option<Switch>,
    },
    /// List users, optionally of one domain.
    List {
        /// Only this domain.
        domain: Option<String>,
    },
}

/// A setting turned on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// `qsctl alias ...`
#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Add an alias to one or more targets; `*@DOMAIN` is the domain's catch-all.
    Add {
        /// The alias address.
        address: String,
        /// Local or remote targets.
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Remove an alias.
    Del {
        /// The alias address.
        address: String,
    },
    /// List the aliases.
    List,
}

/// Runs a domain command.
pub fn domain(config: &Config, cmd: DomainCommand) -> Result<()> {
    let dir = open_directory(config)?;
    match cmd {
        DomainCommand::Add { domain, alias_of } => match alias_of {
            None => {
                dir.add_domain(&domain)?;
                println!("added the domain {}", domain.to_ascii_lowercase());
            }
            Some(target) => {
                dir.add_domain_alias(&domain, &target)?;
                println!(
                    "added the domain {} as an alias of {}",
                    domain.to_ascii_lowercase(),
                    target.to_ascii_lowercase()
                );
            }
        },
        DomainCommand::Del { domain } => {
            dir.remove_domain(&domain)?;
            println!("removed the domain {}", domain.to_ascii_lowercase());
        }
        DomainCommand::List => {
            for d in dir.refresh()?.domains() {
                match d.alias_of() {
                    Some(target) => println!("{}\talias of {target}", d.name()),
                    None => println!("{}", d.name()),
                }
            }
        }
    }
    Ok(())
}

/// Runs a user command.
pub fn user(config: &Config, cmd: UserCommand) -> Result<()> {
    let dir = open_directory(config)?;
    match cmd {
        UserCommand::Add {
            address,
            name,
            password_stdin,
        } => {
            // Check the address before asking for a password.
            qs_directory::parse_address(&address)?;
            let (password, generated) = password(password_stdin)?;
            dir.add_user(&address, &name, &Secret::new(password.as_bytes()))?;
            let canonical = canonical(&address);
            println!("added the user {canonical}");
            if generated {
                println!("password for {canonical}: {password}");
            }
        }
        UserCommand::Del { address } => {
            dir.remove_user(&address)?;
            println!(
                "removed the user {} (the mailbox on disk is kept)",
                canonical(&address)
            );
        }
        UserCommand::Passwd {
            address,
            password_stdin,
        } => {
            qs_directory::parse_address(&address)?;
            if dir.refresh()?.user(&address).is_none() {
                // Say so before reading or generating a password.
                anyhow::bail!("unknown user {address}");
            }
            let (password, generated) = password(password_stdin)?;
            dir.set_password(&address, &Secret::new(password.as_bytes()))?;
            println!("changed the password of {}", canonical(&address));
            if generated {
                println!("password for {}: {password}", canonical(&address));
            }
        }
        UserCommand::Forward {
            address,
            targets,
            keep_copy,
        } => {
            dir.set_forward(&address, targets.iter(), keep_copy)?;
            if targets.is_empty() {
                println!("{} is no longer forwarded", canonical(&address));
            } else {
                println!(
                    "{} is forwarded to {}",
                    canonical(&address),
                    targets.join(", ")
                );
            }
        }
        UserCommand::Pop3 {
            address,
            ignore_dele,
            only_unread,
        } => {
            qs_directory::parse_address(&address)?;
            let Some(user) = dir.refresh()?.user(&address).cloned() else {
                anyhow::bail!("unknown user {address}");
            };
            if ignore_dele.is_none() && only_unread.is_none() {
                println!("{}\t{}", user.address(), describe_pop3(user.pop3()));
                return Ok(());
            }
            // Changed under the directory's lock: a concurrent change of the
            // other option is kept.
            let options = dir.update_pop3_options(&address, |options| {
                if let Some(switch) = ignore_dele {
                    options.ignore_dele = switch == Switch::On;
                }
                if let Some(switch) = only_unread {
                    options.only_unread = switch == Switch::On;
                }
            })?;
            println!(
                "POP3 options of {}: {}",
                user.address(),
                describe_pop3(options)
            );
        }
        UserCommand::List { domain } => {
            let snapshot = dir.refresh()?;
            let domain = domain.map(|d| d.to_ascii_lowercase());
            for user in snapshot.users() {
                if domain.as_deref().is_some_and(|d| {
                    !user
                        .address()
                        .to_ascii_lowercase()
                        .ends_with(&format!("@{d}"))
                }) {
                    continue;
                }
                let mut line = user.address().to_string();
                if !user.display_name().is_empty() {
                    line.push('\t');
                    line.push_str(user.display_name());
                }
                if !user.enabled() {
                    line.push_str("\t(disabled)");
                }
                if !user.forward().targets.is_empty() {
                    line.push_str(&format!(
                        "\tforwarded to {}{}",
                        user.forward().targets.join(", "),
                        if user.forward().keep_copy {
                            " (keeps a copy)"
                        } else {
                            ""
                        }
                    ));
                }
                let pop3 = user.pop3();
                if pop3.ignore_dele || pop3.only_unread {
                    let set: Vec<&str> = [
                        (pop3.ignore_dele, "ignore-dele"),
                        (pop3.only_unread, "only-unread"),
                    ]
                    .into_iter()
                    .filter_map(|(on, name)| on.then_some(name))
                    .collect();
                    line.push_str(&format!("\tpop3: {}", set.join(", ")));
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// `ignore-dele on, only-unread off`.
fn describe_pop3(options: Pop3Options) -> String {
    let word = |on: bool| if on { "on" } else { "off" };
    format!(
        "ignore-dele {}, only-unread {}",
        word(options.ignore_dele),
        word(options.only_unread)
    )
}

/// Runs an alias command.
pub fn alias(config: &Config, cmd: AliasCommand) -> Result<()> {
    let dir = open_directory(config)?;
    match cmd {
        AliasCommand::Add { address, targets } => {
            if let Some(domain) = address.strip_prefix("*@") {
                let [target] = targets.as_slice() else {
                    anyhow::bail!("a catch-all (*@{domain}) takes exactly one target");
                };
                dir.set_catch_all(domain, Some(target))?;
                println!("mail to unknown addresses of {domain} goes to {target}");
            } else {
                dir.add_alias(&address, targets.iter())?;
                println!("{} → {}", canonical(&address), targets.join(", "));
            }
        }
        AliasCommand::Del { address } => {
            if let Some(domain) = address.strip_prefix("*@") {
                dir.set_catch_all(domain, None)?;
            } else {
                dir.remove_alias(&address)?;
            }
            println!("removed the alias {}", canonical(&address));
        }
        AliasCommand::List => {
            let snapshot = dir.refresh()?;
            for alias in snapshot.aliases() {
                println!("{}\t{}", alias.address(), alias.targets().join(", "));
            }
            for d in snapshot.domains() {
                if let Some(target) = d.catch_all() {
                    println!("*@{}\t{target}", d.name());
                }
            }
        }
    }
    Ok(())
}

fn password(from_stdin: bool) -> Result<(String, bool)> {
    if from_stdin {
        Ok((crate::read_password_line()?, false))
    } else {
        Ok((crate::generate_password(), true))
    }
}

fn canonical(address: &str) -> String {
    match qs_directory::parse_address(address) {
        Ok(a) => format!("{}@{}", a.local(), a.domain()),
        Err(_) => address.to_string(),
    }
}
