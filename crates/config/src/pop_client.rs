//! `[pop_client]`: the remote mailboxes to fetch.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reader::Section;
use crate::values::{ClientTls, PasswordSource, looks_like_address, read_password};

/// `[pop_client]`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PopClientConfig {
    /// The remote mailboxes to fetch.
    pub accounts: Vec<PopAccount>,
}

/// One `[[pop_client.account]]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PopAccount {
    /// Name shown in logs and qsctl.
    pub name: String,
    /// The provider's POP3 host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// TLS mode.
    pub tls: ClientTls,
    /// Login.
    pub username: String,
    /// Password.
    pub password: PasswordSource,
    /// The time between polls (`interval_secs`).
    pub interval: Duration,
    /// Single-user mode: everything to this address.
    pub deliver_to: Option<String>,
    /// Where unmatched mail goes.
    pub default_user: String,
    /// Envelope headers read first, in order.
    pub headers: Vec<String>,
    /// Read only `headers`, not To/Cc/Received.
    pub only_listed_headers: bool,
    /// Leave mail on the provider's server.
    pub keep_on_server: bool,
    /// With keep_on_server: delete this long after the first fetch
    /// (`delete_after_days`; zero: never).
    pub delete_after: Duration,
    /// Larger messages stay on the server.
    pub max_message_size: u64,
    /// Extra CA certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// Verify certificates and names.
    pub tls_verify: bool,
    /// Longest wait for the server (connect, TLS, each reply or piece of a
    /// message; `timeout_secs`).
    pub timeout: Duration,
    /// A failure lasting this long is reported to the postmaster (once, and
    /// again when it clears; `report_failure_after_secs`).
    pub report_failure_after: Duration,
}

/// Reads `[pop_client]`; the paths are resolved against `data_dir`.
pub(crate) fn read(root: &Section<'_>, data_dir: &Path) -> PopClientConfig {
    let p = root.section("pop_client");
    let mut accounts: Vec<PopAccount> = Vec::new();
    for account in p.tables("account") {
        let parsed = read_pop_account(account, data_dir);
        if accounts.iter().any(|a| a.name == parsed.name) {
            p.problem(
                "account",
                format!("two accounts are named \"{}\"", parsed.name),
            );
        }
        accounts.push(parsed);
    }
    p.finish();
    PopClientConfig { accounts }
}

fn read_pop_account(mut a: Section<'_>, data_dir: &Path) -> PopAccount {
    let name = a.string("name", "");
    if name.is_empty() {
        a.problem("name", "every account needs a name");
    } else {
        // From here on, problems name the account rather than its position.
        a.rename(format!("pop_client.account \"{name}\""));
    }
    let host = a.string("host", "");
    if host.is_empty() {
        a.problem("host", "missing: the provider's POP3 server name");
    }
    let tls = ClientTls::from_name(&a.choice("tls", "implicit", &["implicit", "starttls", "none"]));
    let default_port = if tls == ClientTls::Implicit { 995 } else { 110 };
    let username = a.string("username", "");
    if username.is_empty() {
        a.problem("username", "missing: the login at the provider");
    }
    let password = read_password(&a, data_dir);
    if password == PasswordSource::None {
        a.problem("password", "missing: give password or password_file");
    }
    let deliver_to = a.string("deliver_to", "");
    let default_user = a.string("default_user", "");
    let check_address = |key: &str, value: &str| {
        if !value.is_empty() && !looks_like_address(value) {
            a.problem(key, format!("\"{value}\" is not an address (user@domain)"));
        }
    };
    check_address("deliver_to", &deliver_to);
    check_address("default_user", &default_user);
    let account = PopAccount {
        port: a.count("port", default_port, 1, 65535),
        interval: a.secs("interval_secs", 200, 10, 86_400),
        deliver_to: (!deliver_to.is_empty()).then_some(deliver_to),
        default_user,
        headers: a.string_list(
            "headers",
            &[
                "Delivered-To",
                "X-Original-To",
                "X-Envelope-To",
                "Envelope-To",
            ],
        ),
        only_listed_headers: a.bool("only_listed_headers", false),
        keep_on_server: a.bool("keep_on_server", false),
        delete_after: a.days("delete_after_days", 0, 0, 36_500),
        max_message_size: a.number("max_message_size", 52_428_800, 1024, 1 << 31),
        tls_ca_file: a.optional_path("tls_ca_file").map(|p| data_dir.join(p)),
        tls_verify: a.bool("tls_verify", true),
        timeout: a.secs("timeout_secs", 60, 1, 3600),
        report_failure_after: a.secs("report_failure_after_secs", 86_400, 1, 31_536_000),
        name,
        host,
        tls,
        username,
        password,
    };
    a.finish();
    account
}
