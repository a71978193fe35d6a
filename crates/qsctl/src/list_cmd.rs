//! `qsctl list …`: mailing lists. The files are list-server's
//! (`<data_dir>/lists/`, see `qs_directory::mailing_list`); a list created
//! here receives mail at once, and a member added or removed here is seen by
//! the next post. Members added by the administrator need no confirmation
//! and get no welcome message. `approve` and `reject` record the decision;
//! the running list-server sends the post (or the notice) within seconds.

use anyhow::{Result, bail};
use clap::Subcommand;
use qs_config::Config;
use qs_directory::mailing_list::{Decision, ListStore, MailingList, check_address};

use crate::admin::Switch;

/// `qsctl list ...`
#[derive(Debug, Subcommand)]
pub enum ListCommand {
    /// Create a list.
    Create {
        /// The list's address.
        list: String,
        /// Its title.
        #[arg(long, default_value = "")]
        title: String,
        /// Its description (for the web page).
        #[arg(long, default_value = "")]
        description: String,
        /// An owner (repeat for more).
        #[arg(long = "owner", value_name = "ADDRESS")]
        owners: Vec<String>,
    },
    /// Delete a list, its members and held posts.
    Delete {
        /// The list.
        list: String,
    },
    /// Show a list's settings, owners and counts.
    Show {
        /// The list.
        list: String,
    },
    /// Every list.
    Ls,
    /// Change a setting: title, description, owners, moderators, posting
    /// (members|anyone|moderators|moderated), non_members (hold|reject),
    /// subject_prefix, reply_to (list|sender), max_recipients, welcome,
    /// farewell, confirm_subscriptions, listed, archive (on|off).
    Set {
        /// The list.
        list: String,
        /// The setting.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Add a member (no confirmation asked).
    AddMember {
        /// The list.
        list: String,
        /// The member's address (several may be given).
        #[arg(required = true)]
        addresses: Vec<String>,
        /// A display name.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Remove a member.
    RemoveMember {
        /// The list.
        list: String,
        /// The member's address.
        address: String,
    },
    /// Change a member's options.
    SetMember {
        /// The list.
        list: String,
        /// The member's address.
        address: String,
        /// Stop (on) or resume (off) delivery; off also clears the bounce score.
        #[arg(long, value_name = "on|off")]
        suspended: Option<Switch>,
        /// Receive one's own posts.
        #[arg(long, value_name = "on|off")]
        own_copy: Option<Switch>,
    },
    /// The members, in order.
    Members {
        /// The list.
        list: String,
    },
    /// Posts held for moderation.
    Held {
        /// The list.
        list: String,
    },
    /// Approve a held post: list-server sends it to the members.
    Approve {
        /// The list.
        list: String,
        /// The held post's id (from `qsctl list held`).
        id: String,
    },
    /// Reject a held post: list-server tells the sender.
    Reject {
        /// The list.
        list: String,
        /// The held post's id.
        id: String,
    },
}

/// Runs a list command.
pub fn list(config: &Config, cmd: ListCommand) -> Result<()> {
    let store = ListStore::new(config.data_path("lists"));
    match cmd {
        ListCommand::Create {
            list,
            title,
            description,
            owners,
        } => {
            let mut new = MailingList::new(&list)?;
            check_not_a_mailbox(config, &new.address)?;
            new.set("title", &title)?;
            new.description = description;
            for o in owners {
                new.owners.push(check_address(&o)?);
            }
            store.create(&new)?;
            println!("created the list {}", new.address);
            if new.owners.is_empty() {
                println!(
                    "note: the list has no owner yet (qsctl list set {} owners ADDRESS)",
                    new.address
                );
            }
        }
        ListCommand::Delete { list } => {
            store.delete(&list)?;
            println!("deleted the list {}", list.to_lowercase());
        }
        ListCommand::Show { list } => {
            let l = store.load(&list)?;
            let s = &l.settings;
            println!("list           {}", l.address);
            println!("title          {}", l.title);
            println!("description    {}", l.description);
            println!("owners         {}", l.owners.join(", "));
            println!("moderators     {}", l.moderators.join(", "));
            println!(
                "members        {} ({} suspended)",
                l.members.len(),
                l.members.iter().filter(|m| m.suspended).count()
            );
            println!("posting        {:?}", s.posting);
            println!("non_members    {:?}", s.non_members);
            println!("subject_prefix {:?}", l.subject_prefix());
            println!("reply_to       {:?}", s.reply_to);
            println!("max_recipients {}", s.max_recipients);
            println!("confirm        {}", on_off(s.confirm_subscriptions));
            println!("listed         {}", on_off(s.listed));
            println!("archive        {}", on_off(s.archive));
            println!("held posts     {}", store.held(&l.address).len());
        }
        ListCommand::Ls => {
            for l in store.all() {
                println!(
                    "{}  {} members  {}",
                    l.address,
                    l.members.len(),
                    l.display_title()
                );
            }
        }
        ListCommand::Set { list, key, value } => {
            store.update(&list, |l| l.set(&key, &value))?;
            println!("{}: {key} set", list.to_lowercase());
        }
        ListCommand::AddMember {
            list,
            addresses,
            name,
        } => {
            let added = store.update(&list, |l| {
                let mut added = Vec::new();
                for a in &addresses {
                    added.push(l.add_member(a, &name)?.address.clone());
                }
                Ok(added)
            })?;
            for a in added {
                println!("added {a} to {}", list.to_lowercase());
            }
        }
        ListCommand::RemoveMember { list, address } => {
            let m = store.update(&list, |l| l.remove_member(&address))?;
            println!("removed {} from {}", m.address, list.to_lowercase());
        }
        ListCommand::SetMember {
            list,
            address,
            suspended,
            own_copy,
        } => {
            store.update(&list, |l| {
                let name = l.address.clone();
                let m = l.member_mut(&address).ok_or_else(|| {
                    qs_directory::mailing_list::ListError::UnknownMember {
                        member: address.clone(),
                        list: name,
                    }
                })?;
                if let Some(s) = suspended {
                    m.suspended = s == Switch::On;
                    if !m.suspended {
                        m.bounce_score = 0;
                    }
                }
                if let Some(c) = own_copy {
                    m.own_copy = c == Switch::On;
                }
                Ok(())
            })?;
            println!("{address}: options set");
        }
        ListCommand::Members { list } => {
            let l = store.load(&list)?;
            for m in &l.members {
                let mut flags = Vec::new();
                if m.suspended {
                    flags.push("suspended".to_string());
                }
                if !m.own_copy {
                    flags.push("no own copy".to_string());
                }
                if m.bounce_score > 0 {
                    flags.push(format!("bounces: {}", m.bounce_score));
                }
                let name = if m.name.is_empty() {
                    String::new()
                } else {
                    format!("  {}", m.name)
                };
                if flags.is_empty() {
                    println!("{}{name}", m.address);
                } else {
                    println!("{}{name}  ({})", m.address, flags.join(", "));
                }
            }
        }
        ListCommand::Held { list } => {
            let l = store.load(&list)?;
            for (p, decision) in store.held(&l.address) {
                let state = match decision {
                    Some(Decision::Approve) => "  [approved, being sent]",
                    Some(Decision::Reject) => "  [rejected]",
                    None => "",
                };
                println!(
                    "{}  from {}  {:?}  ({}){state}",
                    p.id, p.from, p.subject, p.reason
                );
            }
        }
        ListCommand::Approve { list, id } => decide(&store, &list, &id, Decision::Approve)?,
        ListCommand::Reject { list, id } => decide(&store, &list, &id, Decision::Reject)?,
    }
    Ok(())
}

/// Records a decision on a held post (once).
fn decide(store: &ListStore, list: &str, id: &str, decision: Decision) -> Result<()> {
    let l = store.load(list)?;
    if store.decision(&l.address, id).is_some() {
        bail!("post {id} of {} already has a decision", l.address);
    }
    store.decide(&l.address, id, decision)?;
    let verb = match decision {
        Decision::Approve => "approved: list-server sends it to the members",
        Decision::Reject => "rejected: list-server tells the sender",
    };
    println!("post {id} of {} {verb}", l.address);
    Ok(())
}

/// A list address may not be a user's or an alias's.
fn check_not_a_mailbox(config: &Config, address: &str) -> Result<()> {
    if !config.directory.file.exists() {
        return Ok(());
    }
    let dir = crate::admin::open_directory(config)?;
    let snapshot = dir.snapshot();
    // Only the user of exactly this address: a catch-all or the postmaster
    // rule also resolve, and a list rightly takes precedence over those.
    if let Ok(qs_directory::Resolution::User(user)) = snapshot.resolve(address)
        && user.address.eq_ignore_ascii_case(address)
    {
        bail!("{address} is already a local user's address");
    }
    Ok(())
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}
