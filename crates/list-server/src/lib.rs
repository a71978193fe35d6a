//! list-server — Quicksilver's mailing lists (Mercury's list manager and MercuryB).
//!
//! # Description
//! core-queue hands list-server, as `list` jobs, the mail for every list
//! address (`<data_dir>/lists/<list>.json` exists) and its companions:
//!
//! - `NAME@domain`, a post: the loop guard first (a message carrying this
//!   list's List-Id or X-Loop goes to the owners, never out again), then the
//!   posting policy against the envelope sender and From ([`policy`]). An
//!   accepted post gets the list's header fields ([`headers`]) and is queued
//!   in copies of at most `max_recipients` members each, member order kept,
//!   every copy with a bounce address that identifies it ([`verp`]). A post
//!   the policy does not let through is held for the moderators (who get a
//!   notice to approve by reply or on the web page) or refused with a
//!   delivery failure notice.
//! - `NAME-request@`, commands ([`commands`]): subscribe, unsubscribe, help,
//!   who, confirm, approve, reject. Subscribing and leaving are confirmed by
//!   a reply carrying a signed, single-use token ([`token`]) unless an owner
//!   asks.
//! - `NAME-owner@`: passed to the owners.
//! - `NAME-bounces+TAG@`: bounces ([`bounce`]); each counts against the
//!   member, and at `bounce_threshold` the member is suspended and the owners
//!   are told.
//!
//! The web page ([`web`], on `list_server.web_listen`) lists the lists,
//! takes subscription and unsubscription requests (answered by a
//! confirmation mail), confirmation links, moderation links and the RFC 8058
//! one-click unsubscribe POST.
//!
//! The code: [`actions`] holds what mail and the web page both do (tokens
//! carried out once, members added and removed, moderation, the fan-out);
//! [`jobs`] the mail side (the `list` job workers, the held-posts loop);
//! [`web`] the page, which uses the actions only; [`server`] starts them.
//!
//! Standards: RFC 2369 and 2919 (List-* fields), RFC 8058 (one-click
//! unsubscription), RFC 3834 (automatic replies), RFC 3464 (reading DSNs).
//!
//! # Security
//! - Automatic mail (command answers, confirmations, notices) carries
//!   `Auto-Submitted: auto-replied`, comes from `<>`, and is never sent to
//!   `<>`, to automatic mail or to list mail ([`headers::is_automatic`]).
//! - Tokens are HMAC-SHA256 signed with a key kept in
//!   `<data_dir>/lists/.secret` (0600), expire, and are recorded when used
//!   (in the queue's state area), so they cannot be forged or replayed.
//!   Bounce tags are signed with the same key.
//! - The web page answers a subscription request the same way whether or
//!   not the address is a member, and changes nothing on a GET. It refuses
//!   POSTs from other sites and subscription forms without their CSRF
//!   token, sends one confirmation per address and list per
//!   `confirm_window_secs`, and bounds connections, request heads, idle
//!   time, request time and bodies ([`web`]).
//!
//! # Durability
//! A job is completed only once every copy and notice it caused is in the
//! queue, queued with request keys derived from the job, so a crash
//! mid-fan-out never sends a copy twice. List files are written atomically
//! under a lock (`qs_directory::mailing_list`).
//!
//! # Config
//! `hostname`, `[queue]` (the client), and `[list_server]`: `web_listen`,
//! `web_url`, `bounce_threshold`, `hold_expiry_days`, `confirm_expiry_days`,
//! `unsubscribe_link_days`, `confirm_window_secs`, and the web page's limits
//! (see [`web`]): `web_max_connections`, `web_max_connections_per_ip`,
//! `web_head_timeout_secs`, `web_idle_timeout_secs`,
//! `web_request_timeout_secs`, `web_max_body_bytes`, `web_form_expiry_secs`,
//! `web_requests_per_ip_per_hour`.

pub mod actions;
pub mod bounce;
pub mod commands;
pub mod headers;
pub mod jobs;
pub mod notice;
pub mod policy;
pub mod server;
pub mod token;
pub mod verp;
pub mod web;

pub use server::run;

/// Why list-server cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListServerError {
    /// The signing key cannot be read or made.
    #[error("the lists' key file: {0}")]
    Secret(String),
    /// The queue client cannot be set up.
    #[error(transparent)]
    Service(#[from] qs_service::ServiceError),
    /// The web listener cannot be bound.
    #[error("cannot listen on {0} (list_server.web_listen): {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
    /// The run file cannot be written.
    #[error("cannot write the run file: {0}")]
    RunFile(std::io::Error),
}
