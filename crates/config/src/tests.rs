use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/qs/quicksilver.toml"))
}

fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Err(ConfigError::Invalid { errors, .. }) => errors.iter().map(|e| e.to_string()).collect(),
        Err(other) => panic!("expected key errors, got {other}"),
        Ok(_) => panic!("expected key errors, the config loaded"),
    }
}

#[test]
fn the_default_file_parses_to_the_built_in_defaults() {
    let written = parse(DEFAULT_CONFIG).expect("default config loads");
    let built_in = Config::defaults_at(Path::new("/etc/qs/quicksilver.toml"));
    // Debug output covers every field, so this compares the whole structure.
    assert_eq!(format!("{written:?}"), format!("{built_in:?}"));
}

#[test]
fn an_empty_file_takes_every_default() {
    let c = parse("").unwrap();
    assert_eq!(c.hostname, "mail.example.test");
    assert_eq!(c.data_dir, PathBuf::from("/etc/qs/var"));
    assert_eq!(c.queue.socket, PathBuf::from("/etc/qs/var/run/queue.sock"));
    assert_eq!(c.tls.cert, PathBuf::from("/etc/qs/var/tls/cert.pem"));
    assert_eq!(
        c.smtp_server.listen,
        vec!["127.0.0.1:2525".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(c.smtp_server.max_message_size, 26_214_400);
    assert_eq!(c.smtp_relay.mode, RelayMode::Smarthost);
    assert_eq!(c.smtp_relay.tls, ClientTls::StartTls);
    assert_eq!(c.smtp_relay.max_recipients_per_message, 50);
    assert!(c.smtp_relay.dkim);
    assert_eq!(c.smtp_relay.dkim_dir, PathBuf::from("/etc/qs/var/dkim"));
    assert_eq!(c.directory.subaddress_separator, Some('+'));
    assert_eq!(c.queue.delay_warning, Some(Duration::from_secs(14_400)));
    assert_eq!(
        c.list_server.web_listen,
        "127.0.0.1:8025".parse::<SocketAddr>().unwrap()
    );
    assert!(c.pop_client.accounts.is_empty());
}

#[test]
fn the_binding_example_from_the_issue_loads() {
    let c = parse(
        r#"
hostname = "mail.example.test"
data_dir = "var"
[tls]
cert = "tls/cert.pem"
key = "tls/key.pem"
[queue]
socket = "run/queue.sock"
[smtp_server]
listen = ["127.0.0.1:2525"]
submission = ["127.0.0.1:5587"]
submissions = ["127.0.0.1:5465"]
max_message_size = 26214400
relay_networks = []
allow_plaintext_auth = false
[imap_server]
listen = ["127.0.0.1:1143"]
tls_listen = ["127.0.0.1:1993"]
allow_plaintext_auth = false
[pop3_server]
listen = ["127.0.0.1:1110"]
tls_listen = ["127.0.0.1:1995"]
allow_plaintext_auth = false
[smtp_relay]
mode = "smarthost"
smarthost = "127.0.0.1:2626"
tls = "starttls"
username = ""
password = ""
max_recipients_per_message = 50
[pop_client]
[list_server]
web_listen = "127.0.0.1:8025"
"#,
    )
    .unwrap();
    assert_eq!(c.imap_server.tls_listen.len(), 1);
}

#[test]
fn data_dir_is_relative_to_the_config_file_and_paths_to_data_dir() {
    let c = parse("data_dir = \"../data\"\n[tls]\ncert = \"/abs/cert.pem\"\n").unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/etc/qs/../data"));
    assert_eq!(c.tls.cert, PathBuf::from("/abs/cert.pem"));
    assert_eq!(c.tls.key, PathBuf::from("/etc/qs/../data/tls/key.pem"));
}

#[test]
fn the_dkim_keys_can_be_elsewhere_or_unused() {
    let c = parse("[smtp_relay]\ndkim = false\ndkim_dir = \"/srv/keys\"\n").unwrap();
    assert!(!c.smtp_relay.dkim);
    assert_eq!(c.smtp_relay.dkim_dir, PathBuf::from("/srv/keys"));
    assert_eq!(
        problems("[smtp_relay]\ndkim = \"yes\"\ndkim_dir = \"\"\n"),
        [
            "smtp_relay.dkim: expected true or false, found a string",
            "smtp_relay.dkim_dir: a path may not be empty",
        ]
    );
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let found = problems(
        r#"
hostnme = "typo"
[smtp_server]
listen = ["127.0.0.1:2525", "nowhere"]
max_message_size = "big"
relay_networks = ["10.0.0.0/33"]
[smtp_relay]
mode = "carrier-pigeon"
[bogus]
"#,
    );
    let expect = [
        "hostnme: unknown key",
        "bogus: unknown key",
        "smtp_server.listen[1]: \"nowhere\" is not a socket address",
        "smtp_server.max_message_size: expected a whole number, found a string",
        "smtp_server.relay_networks[0]: \"10.0.0.0/33\": prefix length 33 is over 32",
        "smtp_relay.mode: \"carrier-pigeon\" is not one of: smarthost, direct",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "missing {e:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn numbers_out_of_range_and_wrong_types_are_refused() {
    let found = problems("[queue]\nclient_retry_secs = 0\n[imap_server]\nlisten = \"x\"\n");
    assert!(found.contains(&"queue.client_retry_secs: 0 is out of range (1 to 3600)".to_string()));
    assert!(
        found.contains(
            &"imap_server.listen: expected a list of strings, found a string".to_string()
        )
    );
}

#[test]
fn syntax_errors_name_the_file() {
    let err = parse("hostname = ").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("config file /etc/qs/quicksilver.toml is not valid TOML"),
        "{text}"
    );
}

#[test]
fn a_missing_file_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = Config::load_file(&dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::NotFound { .. }));
    assert!(err.to_string().contains("qsctl init"));
}

#[test]
fn pop_accounts_are_read_and_their_errors_name_the_account() {
    let c = parse(
        r#"
[[pop_client.account]]
name = "family"
host = "pop.provider.example"
username = "dupont"
password_file = "secrets/family"
deliver_to = "alice@example.test"
"#,
    )
    .unwrap();
    let a = &c.pop_client.accounts[0];
    assert_eq!(a.port, 995);
    assert_eq!(a.tls, ClientTls::Implicit);
    assert_eq!(a.interval, Duration::from_secs(200));
    assert_eq!(
        a.password,
        PasswordSource::File(PathBuf::from("/etc/qs/var/secrets/family"))
    );
    assert_eq!(a.headers[0], "Delivered-To");
    assert_eq!(a.timeout, Duration::from_secs(60));
    assert_eq!(a.report_failure_after, Duration::from_secs(86_400));

    let found = problems(
        r#"
[[pop_client.account]]
name = "office"
host = "pop.provider.example"
username = "x"
password = "y"
deliver_to = "not an address"
colour = "blue"
timeout_secs = 0
[[pop_client.account]]
host = "h"
"#,
    );
    assert!(found.contains(
        &"pop_client.account \"office\".deliver_to: \"not an address\" is not an address (user@domain)"
            .to_string()
    ), "{found:#?}");
    assert!(found.contains(&"pop_client.account \"office\".colour: unknown key".to_string()));
    assert!(
        found
            .iter()
            .any(|e| e.starts_with("pop_client.account \"office\".timeout_secs:")),
        "{found:#?}"
    );
    assert!(found.contains(&"pop_client.account[1].name: every account needs a name".to_string()));
}

#[test]
fn passwords_never_show_in_debug_output() {
    let c = parse("[smtp_relay]\nusername = \"u\"\npassword = \"hunter2\"\n").unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn the_tcp_transport_needs_a_secret() {
    let found = problems("[queue]\ntcp_listen = \"127.0.0.1:7025\"\n");
    assert_eq!(
        found,
        vec![
            "queue.secret_file: the TCP transport (tcp_listen or tcp_connect) needs a shared secret file"
        ]
    );
}

#[test]
fn each_listener_role_has_its_own_connection_budget() {
    let c = parse("").unwrap();
    let s = &c.smtp_server;
    assert_eq!(
        (
            s.max_connections,
            s.submission_max_connections,
            s.submissions_max_connections
        ),
        (200, 100, 100)
    );
    assert_eq!(
        (
            c.imap_server.max_connections,
            c.imap_server.tls_max_connections
        ),
        (200, 200)
    );
    let c = parse(
        "[smtp_server]\nmax_connections = 50\nsubmission_max_connections = 7\nsubmissions_max_connections = 8\n\
         [pop3_server]\nmax_connections = 3\ntls_max_connections = 4\n",
    )
    .unwrap();
    assert_eq!(
        (
            c.smtp_server.max_connections,
            c.smtp_server.submission_max_connections,
            c.smtp_server.submissions_max_connections
        ),
        (50, 7, 8)
    );
    assert_eq!(
        (
            c.pop3_server.max_connections,
            c.pop3_server.tls_max_connections
        ),
        (3, 4)
    );
    let errors = problems(
        "[imap_server]\ntls_max_connections = 0\n[smtp_server]\nsubmission_max_connections = 0\n",
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("smtp_server.submission_max_connections: "),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("imap_server.tls_max_connections: "),
        "{errors:?}"
    );
}

#[test]
fn networks_match_addresses() {
    let net: IpNetwork = "192.168.1.0/24".parse().unwrap();
    assert!(net.contains("192.168.1.77".parse().unwrap()));
    assert!(!net.contains("192.168.2.1".parse().unwrap()));
    assert!(net.contains("::ffff:192.168.1.5".parse().unwrap()));
    let host: IpNetwork = "10.0.0.7".parse().unwrap();
    assert!(host.contains("10.0.0.7".parse().unwrap()));
    assert!(!host.contains("10.0.0.8".parse().unwrap()));
    let all: IpNetwork = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("8.8.8.8".parse().unwrap()));
    let v6: IpNetwork = "fd00::/8".parse().unwrap();
    assert!(v6.contains("fd12::1".parse().unwrap()));
    assert!("nonsense".parse::<IpNetwork>().is_err());
}

#[test]
fn the_credentials_cache_keys_have_defaults_and_bounds() {
    let c = parse("").unwrap();
    assert_eq!(c.directory.credentials_cache_ttl, Duration::from_secs(600));
    assert_eq!(c.directory.credentials_cache_entries, 1024);
    let off =
        parse("[directory]\ncredentials_cache_secs = 0\ncredentials_cache_entries = 0\n").unwrap();
    assert_eq!(off.directory.credentials_cache_ttl, Duration::ZERO);
    assert_eq!(off.directory.credentials_cache_entries, 0);
    let err = parse("[directory]\ncredentials_cache_secs = 86401\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("directory.credentials_cache_secs"), "{err}");
}

#[test]
fn the_subaddress_separator_can_be_turned_off_or_refused() {
    assert_eq!(
        parse("[directory]\nsubaddress_separator = \"\"\n")
            .unwrap()
            .directory
            .subaddress_separator,
        None
    );
    assert_eq!(
        parse("[directory]\nsubaddress_separator = \"-\"\n")
            .unwrap()
            .directory
            .subaddress_separator,
        Some('-')
    );
    assert_eq!(
        problems("[directory]\nsubaddress_separator = \"ab\"\n").len(),
        1
    );
}

#[test]
fn locate_prefers_the_argument_then_the_environment() {
    assert_eq!(
        Config::locate(Some(Path::new("/x/y.toml"))),
        PathBuf::from("/x/y.toml")
    );
}

#[test]
fn the_container_config_in_deploy_loads() {
    let text = include_str!("../../../deploy/quicksilver.docker.toml");
    let c = parse(text).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/quicksilver"));
    assert_eq!(
        c.tls.cert,
        PathBuf::from("/var/lib/quicksilver/tls/cert.pem")
    );
}

#[test]
fn the_production_example_in_deploy_loads() {
    let text = include_str!("../../../deploy/quicksilver.example.toml");
    let c = parse(text).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/quicksilver"));
    assert_eq!(c.pop_client.accounts.len(), 1);
    assert_eq!(c.smtp_server.relay_networks.len(), 1);
}

#[test]
fn the_sender_checks_are_on_with_safe_defaults_and_blacklists_must_be_zones() {
    let c = parse("").unwrap();
    let checks = &c.smtp_server.checks;
    assert!(checks.enabled && checks.dmarc_reject && checks.dmarc_quarantine);
    assert!(!checks.spf_fail_reject && !checks.greylisting);
    assert!(checks.dnsbl_zones.is_empty() && checks.dns_server.is_none());
    assert!(
        checks
            .unchecked_networks
            .iter()
            .any(|n| n.contains("127.0.0.1".parse().unwrap()))
    );
    assert_eq!(
        (checks.dns_timeout, checks.greylist_delay),
        (Duration::from_secs(5), Duration::from_secs(300))
    );
    let found = problems(
        "[smtp_server]\ndnsbl_zones = [\"bl.example\", \"not a zone\"]\ndns_server = \"x\"\n",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("smtp_server.dns_server: "),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("smtp_server.dnsbl_zones[1]: \"not a zone\""),
        "{found:?}"
    );
}

#[test]
fn times_are_read_in_the_unit_of_their_key() {
    let c = parse(
        "[restart]\ngrace_secs = 0\n[smtp_server]\ngreylist_expiry_days = 2\n\
         [list_server]\nhold_expiry_days = 1\nconfirm_window_secs = 90\n\
         [[pop_client.account]]\nname = \"a\"\nhost = \"h\"\nusername = \"u\"\n\
         password = \"p\"\nkeep_on_server = true\ndelete_after_days = 3\n",
    )
    .unwrap();
    assert_eq!(c.restart.grace, Duration::ZERO);
    assert_eq!(c.restart.ready_timeout, Duration::from_secs(60));
    assert_eq!(
        c.smtp_server.checks.greylist_expiry,
        Duration::from_secs(2 * 86_400)
    );
    assert_eq!(c.list_server.hold_expiry, Duration::from_secs(86_400));
    assert_eq!(c.list_server.confirm_window, Duration::from_secs(90));
    assert_eq!(
        c.pop_client.accounts[0].delete_after,
        Duration::from_secs(3 * 86_400)
    );
    let defaults = parse("").unwrap();
    assert_eq!(
        defaults.smtp_server.checks.greylist_expiry,
        Duration::from_secs(35 * 86_400)
    );
    assert_eq!(
        defaults.queue.give_up_after,
        Duration::from_secs(5 * 86_400)
    );
}

#[test]
fn a_delay_warning_of_zero_is_none() {
    let c = parse("[queue]\ndelay_warning_secs = 0\n").unwrap();
    assert_eq!(c.queue.delay_warning, None);
}

#[test]
fn a_time_of_zero_where_zero_is_not_allowed_is_refused() {
    assert_eq!(
        problems(
            "[smtp_server]\nidle_timeout_secs = 0\ngreylist_expiry_days = 0\n\
             [imap_server]\nidle_timeout_secs = 60\n"
        ),
        [
            "smtp_server.idle_timeout_secs: 0 is out of range (1 to 86400)",
            "smtp_server.greylist_expiry_days: 0 is out of range (1 to 3650)",
            "imap_server.idle_timeout_secs: 60 is out of range (1800 to 86400)",
        ]
    );
}

#[test]
fn a_huge_or_negative_time_is_refused_not_wrapped() {
    assert_eq!(
        problems(
            "[list_server]\nunsubscribe_link_days = 9223372036854775807\n\
             [queue]\ngive_up_after_secs = -1\n"
        ),
        [
            "queue.give_up_after_secs: -1 is out of range (60 to 5184000)",
            "list_server.unsubscribe_link_days: 9223372036854775807 is out of range (1 to 3650)",
        ]
    );
}

#[test]
fn a_count_the_program_cannot_hold_is_out_of_range() {
    let table: toml::Table = "fits = 255\ntoo_big = 300\n".parse().unwrap();
    let problems = Problems::default();
    let root = Section::root(&table, &problems);
    let fits: u8 = root.count("fits", 1, 1, 1000);
    let too_big: u8 = root.count("too_big", 7, 1, 1000);
    let absent: u8 = root.count("absent", 7, 1, 1000);
    drop(root);
    assert_eq!((fits, too_big, absent), (255, 7, 7));
    let found: Vec<String> = problems
        .into_inner()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found, ["too_big: 300 is out of range (1 to 255)"]);
}

#[test]
fn counts_come_in_the_type_the_daemons_use() {
    let c = parse(
        "[smtp_server]\nmax_message_size = 2048\nmax_auth_failures = 7\n\
         [imap_server]\nmax_literal_size = 1073741823\n[smtp_relay]\nmx_port = 2525\n\
         [list_server]\nweb_requests_per_ip_per_hour = 1000000\n",
    )
    .unwrap();
    let size: usize = c.smtp_server.max_message_size;
    let failures: u32 = c.smtp_server.max_auth_failures;
    let literal: u32 = c.imap_limits.max_literal_size;
    let port: u16 = c.smtp_relay.mx_port;
    let per_hour: u32 = c.list_server.web_requests_per_ip_per_hour;
    assert_eq!(
        (size, failures, literal, port, per_hour),
        (2048, 7, 1_073_741_823, 2525, 1_000_000)
    );
    let defaults = parse("").unwrap();
    assert_eq!(defaults.imap_server.max_connections, 200);
    assert_eq!(defaults.pop3_server.max_errors, 10);
    assert_eq!(defaults.list_server.bounce_threshold, 5);
    assert_eq!(defaults.directory.credentials_cache_entries, 1024);
}

#[test]
fn a_huge_count_or_zero_where_zero_is_not_allowed_is_refused() {
    assert_eq!(
        problems(
            "[smtp_server]\nmax_message_size = 9223372036854775807\nmax_recipients = 0\n\
             [imap_server]\nmax_literal_size = 4294967296\n[smtp_relay]\nmx_port = 65536\n\
             [[pop_client.account]]\nname = \"a\"\nhost = \"h\"\nusername = \"u\"\n\
             password = \"p\"\nport = 0\n"
        ),
        [
            "smtp_server.max_message_size: 9223372036854775807 is out of range (1024 to 1073741824)",
            "smtp_server.max_recipients: 0 is out of range (1 to 100000)",
            "imap_server.max_literal_size: 4294967296 is out of range (1024 to 1073741823)",
            "smtp_relay.mx_port: 65536 is out of range (1 to 65535)",
            "pop_client.account \"a\".port: 0 is out of range (1 to 65535)",
        ]
    );
}
