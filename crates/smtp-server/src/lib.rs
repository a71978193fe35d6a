//! smtp-server — Quicksilver's SMTP server (Mercury's MercuryS).
//!
//! # Description
//! Three kinds of listener, each with any number of addresses:
//!
//! - `[smtp_server] listen` (the port-25 role): mail for local domains from
//!   anyone; mail for other domains only from authenticated sessions or clients
//!   in `relay_networks`, anything else is refused at RCPT with 554 5.7.1. There
//!   is no other way to relay.
//! - `submission` (587, RFC 6409): STARTTLS, then AUTH before MAIL.
//! - `submissions` (465, RFC 8314): implicit TLS, AUTH before MAIL.
//!
//! Protocol: RFC 5321 ESMTP with PIPELINING, 8BITMIME, SIZE, ENHANCEDSTATUSCODES,
//! STARTTLS (RFC 3207), AUTH PLAIN and LOGIN (RFC 4954), SMTPUTF8 (RFC 6531) and
//! CHUNKING (RFC 3030). Each accepted message gets a Received field (RFC 3848
//! protocol names) and is answered `250` only once core-queue has it on disk; if
//! core-queue cannot be reached within the client's retry bound the answer is
//! `451 4.3.0`, never `250`, and a message it will never take is refused for
//! good: `552 5.3.4` over the queue's frame limit, `554 5.3.0` for another
//! permanent refusal (see `session::queue_refusal`). Replies are qs-queue's
//! `Reply` values.
//!
//! # Security
//! - AUTH only under TLS unless `allow_plaintext_auth`; otherwise 538 5.7.11 and
//!   not advertised. A failed AUTH gets 535 5.7.8 after a delay that grows with
//!   each failure; an address with `max_auth_failures` failures is refused for a
//!   while. Passwords are never logged.
//! - Local recipients are checked at RCPT (550 5.1.1), and at the end of DATA
//!   a `Delivered-To` naming the mailbox of a recipient, or more than 100
//!   Received fields, is a loop (554 5.4.6): what can be known here is refused
//!   here, not accepted and bounced to a sender who may be forged
//!   (backscatter). VRFY answers 252 for everyone.
//! - STARTTLS with parameters is 501 5.5.4 (RFC 3207).
//! - An authenticated user sends only as one of their addresses (553 5.7.1)
//!   when `enforce_sender`.
//! - Mail on the port-25 role from clients neither authenticated nor in
//!   `relay_networks` or `unchecked_networks` is checked ([`checks`]): DNS
//!   blacklists (RFC 5782, 554 5.7.1 at MAIL FROM), SPF (RFC 7208), DKIM
//!   (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489: p=reject 550 5.7.1,
//!   p=quarantine to the Junk folder), optional greylisting (451 4.7.1); one
//!   Authentication-Results field (RFC 8601) with our host name, after every
//!   one claiming it and every `X-Quicksilver-Junk` was removed (on every
//!   listener). A DNS failure is 451 4.4.3, never a pass.
//! - A bare CR or LF or a NUL in commands or data is refused (SMTP smuggling,
//!   CVE-2023-51764); only `<CRLF>.<CRLF>` ends DATA. STARTTLS throws away every
//!   byte received before the handshake (CVE-2011-0411).
//!
//! # Limits
//! Command lines 512 octets, text lines 1000, `max_message_size` (excess data
//! is drained, not kept), `max_recipients` (452 4.5.3; the client sends the
//! others in a new transaction, RFC 5321 §4.5.3.1.10, so they count as errors
//! only past `max_recipient_overshoot` in one transaction), `max_errors` (then 421),
//! `idle_timeout_secs`, `session_timeout_secs`, `max_connections` (port 25),
//! `submission_max_connections`, `submissions_max_connections` (each listener
//! role a budget of its own), `max_connections_per_ip`; more than 100 Received
//! fields is a loop (554 5.4.6); `dns_timeout_secs` per lookup and
//! `check_timeout_secs` per step of the checks, `check_memory_limit` of
//! messages in memory for DKIM at once.
//!
//! # Config
//! `hostname`, `[tls]`, `[directory]`, `[queue]` (the client), and every key of
//! `[smtp_server]`.

pub mod body;
pub mod checks;
pub mod policy;
pub mod server;
pub mod session;

pub use server::{Listeners, ServerConfig, run, serve};
