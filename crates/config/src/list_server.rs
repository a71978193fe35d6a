//! `[list_server]`: the lists' web page and the lists' time limits.

use std::net::SocketAddr;
use std::time::Duration;

use crate::reader::Section;

/// `[list_server]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListServerConfig {
    /// The web page's listener.
    pub web_listen: SocketAddr,
    /// The page's public address, for links in mail.
    pub web_url: String,
    /// Bounces that suspend a member.
    pub bounce_threshold: u32,
    /// How long a held post waits for a moderator before it is dropped
    /// (`hold_expiry_days`).
    pub hold_expiry: Duration,
    /// How long a subscription confirmation link or token stays valid
    /// (`confirm_expiry_days`).
    pub confirm_expiry: Duration,
    /// How long the one-click unsubscribe link of a post stays valid
    /// (`unsubscribe_link_days`).
    pub unsubscribe_link: Duration,
    /// Open connections to the web page at once, from everyone.
    pub web_max_connections: usize,
    /// Open connections to the web page at once from one client address.
    pub web_max_connections_per_ip: usize,
    /// How long a request's line and header fields may take to arrive, all of
    /// them (`web_head_timeout_secs`).
    pub web_head_timeout: Duration,
    /// How long a connection may wait for its next request (`web_idle_timeout_secs`).
    pub web_idle_timeout: Duration,
    /// How long a request may take from its head to the answer, its body
    /// included (`web_request_timeout_secs`).
    pub web_request_timeout: Duration,
    /// The largest request body, in bytes.
    pub web_max_body_bytes: usize,
    /// How long a subscription form stays valid after it was shown
    /// (`web_form_expiry_secs`).
    pub web_form_expiry: Duration,
    /// How long after a confirmation mail no other goes to the same address
    /// for the same list (`confirm_window_secs`).
    pub confirm_window: Duration,
    /// Subscription requests on the web page per client address per hour.
    pub web_requests_per_ip_per_hour: u32,
}

/// Reads `[list_server]`.
pub(crate) fn read(root: &Section<'_>) -> ListServerConfig {
    let day = 86_400;
    let l = root.section("list_server");
    let list_server = ListServerConfig {
        web_listen: l
            .socket_addr("web_listen", "127.0.0.1:8025")
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8025))),
        web_url: l
            .string("web_url", "http://127.0.0.1:8025")
            .trim_end_matches('/')
            .to_string(),
        bounce_threshold: l.count("bounce_threshold", 5, 1, 1000),
        hold_expiry: l.days("hold_expiry_days", 14, 1, 365),
        confirm_expiry: l.days("confirm_expiry_days", 7, 1, 90),
        unsubscribe_link: l.days("unsubscribe_link_days", 90, 1, 3650),
        web_max_connections: l.count("web_max_connections", 256, 1, 1_000_000),
        web_max_connections_per_ip: l.count("web_max_connections_per_ip", 16, 1, 1_000_000),
        web_head_timeout: l.secs("web_head_timeout_secs", 10, 1, 300),
        web_idle_timeout: l.secs("web_idle_timeout_secs", 10, 1, 3600),
        web_request_timeout: l.secs("web_request_timeout_secs", 30, 1, 3600),
        web_max_body_bytes: l.count("web_max_body_bytes", 16_384, 1024, 1 << 20),
        web_form_expiry: l.secs("web_form_expiry_secs", 86_400, 60, 30 * day),
        confirm_window: l.secs("confirm_window_secs", 3600, 1, 30 * day),
        web_requests_per_ip_per_hour: l.count("web_requests_per_ip_per_hour", 20, 1, 1_000_000),
    };
    if !(list_server.web_url.starts_with("http://") || list_server.web_url.starts_with("https://"))
    {
        l.problem("web_url", "must start with http:// or https://");
    }
    l.finish();
    list_server
}
