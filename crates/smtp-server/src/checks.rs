//! The sender checks of the port-25 role, for clients that are neither
//! authenticated nor in `relay_networks` nor in `unchecked_networks`:
//!
//! - DNS blacklists (RFC 5782), asked when the client connects and answered at
//!   MAIL FROM: a listed client gets `554 5.7.1` naming the list.
//! - SPF (RFC 7208) at MAIL FROM, of the sender's domain or, for `<>`, of the
//!   HELO name: `fail` is marked, or refused with `550 5.7.23` when
//!   `spf_fail_reject`.
//! - DKIM (RFC 6376), ARC (RFC 8617) when the message has ARC sets, and DMARC
//!   (RFC 7489) at the end of the message: `p=reject` is refused with
//!   `550 5.7.1` (`dmarc_reject`), `p=quarantine` goes to the recipients' Junk
//!   folders (`dmarc_quarantine`, through the [`JUNK_FIELD`] field that only
//!   smtp-server writes).
//! - Greylisting at RCPT (`greylisting`): a (client /24, sender, recipient)
//!   triplet not seen for `greylist_delay_secs` gets `451 4.7.1`; what was
//!   seen is kept in core-queue's state area, and forgotten after
//!   `greylist_expiry_days` without mail.
//!
//! The results go into one `Authentication-Results` field (RFC 8601) naming
//! our host name, above the others. A DNS lookup that fails or times out
//! (`dns_timeout_secs` each, `check_timeout_secs` for all the checks of one
//! step) is `451 4.4.3`: never a pass and never a permanent refusal.
//!
//! The DNS side and the cryptography are the mail-auth crate's; what to do
//! with its results ([`decide`]) and which fields to remove
//! ([`without_claimed_fields`]) are here, without I/O.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfOutput, SpfResult,
};
use qs_config::SenderChecksConfig;
use qs_queue::Reply;
use qs_queue::message::{self, JUNK_FIELD};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::body::Message;

/// The namespace of core-queue's state area that holds greylisting's triplets.
pub const GREYLIST_NAMESPACE: &str = "greylist";

/// The SPF result of MAIL FROM, kept for the checks at the end of the message.
#[derive(Debug, Clone)]
pub struct SpfCheck {
    ip: IpAddr,
    helo: String,
    sender: String,
    output: SpfOutput,
}

impl SpfCheck {
    /// The SPF `output` for `sender` ("" for `<>`) from `ip`, which said `helo`.
    pub fn new(ip: IpAddr, helo: &str, sender: &str, output: SpfOutput) -> SpfCheck {
        SpfCheck {
            ip,
            helo: helo.to_string(),
            sender: sender.to_string(),
            output,
        }
    }
}

/// What the checks of MAIL FROM decided.
#[derive(Debug)]
pub enum SenderVerdict {
    /// Go on; the SPF result when SPF was checked.
    Accept(Option<SpfCheck>),
    /// Refuse MAIL FROM with this reply.
    Refuse(Reply),
}

/// What the checks at the end of a message decided.
#[derive(Debug)]
pub enum MessageVerdict {
    /// Queue it with these fields on top (`Authentication-Results`, maybe
    /// [`JUNK_FIELD`]).
    Accept {
        /// Whole fields without their line ends.
        fields: Vec<String>,
    },
    /// Refuse it with this reply.
    Refuse(Reply),
}

/// The checks, with their resolver.
pub struct Checker {
    authenticator: MessageAuthenticator,
    hostname: String,
    config: SenderChecksConfig,
    /// KiB of messages held in memory for their checks.
    memory: Arc<Semaphore>,
    /// All of `memory`'s permits.
    memory_kib: u64,
}

impl Checker {
    /// The checks of `config`, asking its `dns_server` or the system's name
    /// servers. Must be called inside the tokio runtime.
    pub fn new(hostname: &str, config: &SenderChecksConfig) -> Result<Checker, String> {
        let resolver = resolver(config.dns_server, config.dns_timeout)?;
        // Bounded by the config (16 GiB), so a u32 of KiB.
        let memory_kib = (config.memory_limit / 1024).clamp(1, u64::from(u32::MAX));
        Ok(Checker {
            authenticator: MessageAuthenticator(resolver),
            hostname: hostname.to_string(),
            config: config.clone(),
            memory: Arc::new(Semaphore::new(
                usize::try_from(memory_kib).unwrap_or(Semaphore::MAX_PERMITS),
            )),
            memory_kib,
        })
    }

    /// Whether any DNS blacklist is to be asked.
    pub fn asks_dnsbl(&self) -> bool {
        !self.config.dnsbl_zones.is_empty()
    }

    fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Asks every `dnsbl_zones` list about `ip`: the refusal of MAIL FROM
    /// when one lists it or cannot be asked, `None` when none lists it.
    pub async fn dnsbl(&self, ip: IpAddr) -> Option<Reply> {
        let asked = async {
            for zone in &self.config.dnsbl_zones {
                match self.dnsbl_lookup(ip, zone).await {
                    Ok(None) => {}
                    Ok(Some(text)) => {
                        info!(%ip, %zone, reason = %text, "refused: listed by a DNS blacklist");
                        let text = if text.is_empty() {
                            format!("Service unavailable; client [{ip}] blocked using {zone}")
                        } else {
                            format!(
                                "Service unavailable; client [{ip}] blocked using {zone}: {text}"
                            )
                        };
                        return Some(Reply::new(554, "5.7.1", &text));
                    }
                    Err(e) => {
                        warn!(%ip, %zone, error = %e, "DNS blacklist lookup failed");
                        return Some(dns_failure(&format!("asking {zone} about [{ip}]")));
                    }
                }
            }
            None
        };
        match tokio::time::timeout(self.timeout(), asked).await {
            Ok(verdict) => verdict,
            Err(_) => {
                warn!(%ip, "DNS blacklist lookups timed out");
                Some(dns_failure(&format!(
                    "asking the DNS blacklists about [{ip}]"
                )))
            }
        }
    }

    /// `Ok(Some(text))` when `zone` lists `ip` (with the TXT text, or ""),
    /// `Ok(None)` when it does not.
    async fn dnsbl_lookup(&self, ip: IpAddr, zone: &str) -> Result<Option<String>, String> {
        let name = Name::from_ascii(dnsbl_name(ip, zone)).map_err(|e| e.to_string())?;
        let resolver = &self.authenticator.0;
        let listed = match resolver.ipv4_lookup(name.clone()).await {
            Ok(lookup) => lookup.answers().iter().any(|r| match &r.data {
                // RFC 5782 §2.3: listings are 127.0.0.0/8; 127.255.255.0/24
                // is what some lists answer to a query they refuse to serve.
                RData::A(a) => {
                    let octets = a.0.octets();
                    octets[0] == 127 && !(octets[1] == 255 && octets[2] == 255)
                }
                _ => false,
            }),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => false,
            Err(e) => return Err(e.to_string()),
        };
        if !listed {
            return Ok(None);
        }
        // The TXT record says why, when the list publishes one; its absence
        // or failure does not change the listing.
        let text = match resolver.txt_lookup(name).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .next()
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        Ok(Some(printable(&text, 200)))
    }

    /// SPF of MAIL FROM (RFC 7208 §2.4), or of the HELO name for `<>`
    /// (§2.3), when `check_senders`.
    pub async fn sender(&self, ip: IpAddr, helo: &str, sender: &str) -> SenderVerdict {
        if !self.config.enabled {
            return SenderVerdict::Accept(None);
        }
        let params = if sender.is_empty() {
            SpfParameters::verify_ehlo(ip, helo, &self.hostname)
        } else {
            SpfParameters::verify_mail_from(ip, helo, &self.hostname, sender)
        };
        let output =
            match tokio::time::timeout(self.timeout(), self.authenticator.verify_spf(params)).await
            {
                Ok(output) => output,
                Err(_) => {
                    warn!(%ip, %sender, "SPF check timed out");
                    return SenderVerdict::Refuse(dns_failure("checking SPF"));
                }
            };
        let domain = output.domain().to_string();
        info!(%ip, %sender, %helo, spf = %output.result(), %domain, "SPF checked");
        match output.result() {
            SpfResult::TempError => {
                SenderVerdict::Refuse(dns_failure(&format!("checking the SPF record of {domain}")))
            }
            SpfResult::Fail if self.config.spf_fail_reject => {
                let text = format!(
                    "SPF validation failed: {domain} does not allow [{ip}] to send its mail"
                );
                SenderVerdict::Refuse(Reply::new(550, "5.7.23", &text))
            }
            _ => SenderVerdict::Accept(Some(SpfCheck::new(ip, helo, sender, output))),
        }
    }

    /// DKIM, ARC and DMARC of `message`, which came after `spf`.
    pub async fn message(&self, spf: &SpfCheck, message: &Message) -> MessageVerdict {
        // DKIM hashes the whole message: it is read into memory, within
        // check_memory_limit for all sessions together.
        // A message larger than the limit waits for all of it.
        let kib = message.len().div_ceil(1024).clamp(1, self.memory_kib);
        let needed = u32::try_from(kib).unwrap_or(u32::MAX);
        let Ok(_permit) = self.memory.acquire_many(needed).await else {
            return MessageVerdict::Refuse(Reply::new(
                451,
                "4.3.0",
                "Temporary failure, try again later",
            ));
        };
        let bytes = match blocking(|| message.to_vec()) {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(error = %e, "cannot read the spooled message");
                return MessageVerdict::Refuse(Reply::new(
                    451,
                    "4.3.0",
                    "Temporary failure storing the message, try again later",
                ));
            }
        };
        match tokio::time::timeout(self.timeout(), self.verify(spf, &bytes)).await {
            Ok(verdict) => verdict,
            Err(_) => {
                warn!(ip = %spf.ip, "DKIM and DMARC checks timed out");
                MessageVerdict::Refuse(dns_failure("checking DKIM and DMARC"))
            }
        }
    }

    async fn verify(&self, spf: &SpfCheck, bytes: &[u8]) -> MessageVerdict {
        // Parsing hashes the body for every signature: CPU work kept off
        // the threads that serve the other sessions.
        let Some(parsed) = blocking(|| AuthenticatedMessage::parse(bytes)) else {
            // Our own Received field is on top: this does not happen.
            return MessageVerdict::Refuse(Reply::new(554, "5.6.0", "Message refused: no header"));
        };
        let dkim = self.authenticator.verify_dkim(&parsed).await;
        let has_arc = !parsed.as_headers.is_empty() || !parsed.ams_headers.is_empty();
        let arc = if has_arc {
            Some(self.authenticator.verify_arc(&parsed).await)
        } else {
            None
        };
        let mail_from_domain = match spf.sender.rsplit_once('@') {
            Some((_, domain)) => domain,
            None => spf.helo.as_str(),
        };
        let dmarc = self
            .authenticator
            .verify_dmarc(DmarcParameters::new(
                &parsed,
                &dkim,
                mail_from_domain,
                &spf.output,
            ))
            .await;

        let mut results = AuthenticationResults::new(&self.hostname);
        results = if spf.sender.is_empty() {
            results.with_spf_ehlo_result(&spf.output, spf.ip, &spf.helo)
        } else {
            results.with_spf_mailfrom_result(&spf.output, spf.ip, &spf.sender, &spf.helo)
        };
        results = results.with_dkim_results(&dkim, parsed.from());
        if let Some(arc) = &arc {
            results = results.with_arc_result(arc, spf.ip);
        }
        if !dmarc.domain().is_empty() {
            results = results.with_dmarc_result(&dmarc);
        }
        // RFC 8601 §2.7: a method that found nothing to check says none.
        let mut field = format!("Authentication-Results: {results}");
        if dkim.is_empty() {
            field.push_str(";\r\n\tdkim=none");
        }
        if dmarc.domain().is_empty() {
            field.push_str(";\r\n\tdmarc=none");
        }

        let summary = Summary {
            dmarc: match dmarc.result() {
                DmarcResult::Pass => Outcome::Pass,
                DmarcResult::Fail(_) => Outcome::Fail,
                DmarcResult::TempError(_) => Outcome::TempError,
                DmarcResult::PermError(_) | DmarcResult::None => Outcome::None,
            },
            policy: match dmarc.policy() {
                Policy::Reject => DmarcPolicy::Reject,
                Policy::Quarantine => DmarcPolicy::Quarantine,
                Policy::None | Policy::Unspecified => DmarcPolicy::None,
            },
            dkim_temperror: dkim
                .iter()
                .any(|d| matches!(d.result(), DkimResult::TempError(_))),
        };
        let domain = dmarc.domain().to_string();
        let decision = decide(&summary, &self.config);
        info!(ip = %spf.ip, from_domain = %domain, dmarc = %dmarc.result(),
            dkim = dkim.len(), ?decision, "DKIM and DMARC checked");
        match decision {
            Decision::Accept => MessageVerdict::Accept {
                fields: vec![field],
            },
            Decision::Junk => MessageVerdict::Accept {
                fields: vec![
                    field,
                    format!(
                        "{JUNK_FIELD}: dmarc=fail policy.dmarc=quarantine header.from={domain}"
                    ),
                ],
            },
            Decision::Reject => MessageVerdict::Refuse(Reply::new(
                550,
                "5.7.1",
                &format!(
                    "Message refused: it fails the DMARC policy of {domain}, which says reject"
                ),
            )),
            Decision::TryLater => {
                MessageVerdict::Refuse(dns_failure(&format!("checking DKIM and DMARC of {domain}")))
            }
        }
    }

    /// Greylisting of (the client's /24 or /64, `sender`, `recipient`): the
    /// refusal while the triplet is younger than `greylist_delay_secs`.
    pub async fn greylist(
        &self,
        queue: &qs_queue::Client,
        ip: IpAddr,
        sender: &str,
        recipient: &str,
        now: u64,
    ) -> Option<Reply> {
        let unavailable = || Reply::new(451, "4.3.0", "Temporary failure, try again later");
        let key = greylist_key(ip, sender, recipient);
        let entry = match queue.state_get(GREYLIST_NAMESPACE, &key).await {
            Ok(value) => value.as_deref().and_then(Triplet::parse),
            Err(e) => {
                warn!(error = %e, "cannot read greylisting's state");
                return Some(unavailable());
            }
        };
        let (wait, write) = greylist_step(entry, now, &self.config);
        if let Some(triplet) = write
            && let Err(e) = queue
                .state_put(GREYLIST_NAMESPACE, &key, triplet.to_string().as_bytes())
                .await
        {
            warn!(error = %e, "cannot write greylisting's state");
            return Some(unavailable());
        }
        let wait = wait?;
        info!(%ip, %sender, %recipient, wait, "greylisted");
        Some(Reply::new(
            451,
            "4.7.1",
            &format!("Greylisted: please try again in {wait} seconds"),
        ))
    }

    /// Removes the triplets not seen for `greylist_expiry_days`; returns how
    /// many.
    pub async fn sweep_greylist(
        &self,
        queue: &qs_queue::Client,
        now: u64,
    ) -> Result<usize, qs_queue::ClientError> {
        const PAGE: u32 = 1000;
        let mut after: Option<String> = None;
        let mut removed = 0;
        loop {
            let page = queue
                .state_scan(GREYLIST_NAMESPACE, "", after.as_deref(), PAGE)
                .await?;
            for (key, value) in &page {
                let expired = Triplet::parse(value)
                    .is_none_or(|t| t.expired(now, self.config.greylist_expiry));
                if expired {
                    queue.state_delete(GREYLIST_NAMESPACE, key).await?;
                    removed += 1;
                }
            }
            match page.last() {
                Some((key, _)) if page.len() >= PAGE as usize => after = Some(key.clone()),
                _ => return Ok(removed),
            }
        }
    }
}

/// What greylisting keeps of a triplet: when it was first seen, and when
/// last (a passed triplet's last accepted delivery, updated at most daily).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Triplet {
    first_seen: u64,
    last_seen: u64,
}

impl Triplet {
    fn parse(value: &[u8]) -> Option<Triplet> {
        let text = std::str::from_utf8(value).ok()?;
        let (first, last) = text.split_once(' ')?;
        Some(Triplet {
            first_seen: first.parse().ok()?,
            last_seen: last.parse().ok()?,
        })
    }

    fn expired(&self, now: u64, expiry: Duration) -> bool {
        now.saturating_sub(self.last_seen) > expiry.as_secs()
    }
}

impl std::fmt::Display for Triplet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.first_seen, self.last_seen)
    }
}

/// Greylisting's decision for a triplet known as `entry`: the seconds still
/// to wait (`None`: let in), and what to write back, if anything.
fn greylist_step(
    entry: Option<Triplet>,
    now: u64,
    config: &SenderChecksConfig,
) -> (Option<u64>, Option<Triplet>) {
    let entry = entry.filter(|t| !t.expired(now, config.greylist_expiry));
    let Some(known) = entry else {
        let new = Triplet {
            first_seen: now,
            last_seen: now,
        };
        return (Some(config.greylist_delay.as_secs()), Some(new));
    };
    let ready = known
        .first_seen
        .saturating_add(config.greylist_delay.as_secs());
    if now < ready {
        return (Some(ready - now), None);
    }
    // Let in; the last delivery is written down once a day, not per message.
    let refresh = now.saturating_sub(known.last_seen) >= 86_400 || known.last_seen < ready;
    let update = refresh.then_some(Triplet {
        first_seen: known.first_seen,
        last_seen: now,
    });
    (None, update)
}

/// The state area key of a triplet: the client's network (/24 for IPv4, /64
/// for IPv6: a sender's pool of outgoing servers retries from another
/// address), the sender and the recipient, in lower case.
pub fn greylist_key(ip: IpAddr, sender: &str, recipient: &str) -> String {
    let network = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => return greylist_key(IpAddr::V4(v4), sender, recipient),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    };
    format!(
        "{network} {} {}",
        sender.to_ascii_lowercase(),
        recipient.to_ascii_lowercase()
    )
}

/// `451 4.4.3` for a DNS lookup that failed or timed out while `doing`.
fn dns_failure(doing: &str) -> Reply {
    Reply::new(
        451,
        "4.4.3",
        &format!("Temporary DNS failure {doing}, try again later"),
    )
}

/// Runs CPU or file work without holding up the runtime's other tasks (on a
/// multi-threaded runtime, as the daemon's is).
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// The resolver of the checks: `server` alone (UDP, then TCP) or the system's.
fn resolver(server: Option<SocketAddr>, timeout: Duration) -> Result<TokioResolver, String> {
    let mut builder = match server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        }
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
    };
    let options = builder.options_mut();
    options.timeout = timeout;
    // One try per lookup: dns_timeout_secs is the bound the user set.
    options.attempts = 1;
    if server.is_some() {
        options.use_hosts_file = ResolveHosts::Never;
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the DNS resolver: {e}"))
}

/// The name asked of a DNS blacklist (RFC 5782 §2.1, §2.4): the address's
/// octets, or an IPv6 address's nibbles, in reverse, then the zone.
pub fn dnsbl_name(ip: IpAddr, zone: &str) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let zone = zone.trim_end_matches('.');
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}.")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(64 + zone.len() + 1);
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            name.push_str(zone);
            name.push('.');
            name
        }
    }
}

/// `text` with anything but printable ASCII dropped, at most `max` characters:
/// a list's TXT record is put into our reply.
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect()
}

/// A DMARC evaluation, reduced to what the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The DMARC result.
    pub dmarc: Outcome,
    /// The policy the author domain asks for.
    pub policy: DmarcPolicy,
    /// A DKIM key could not be looked up.
    pub dkim_temperror: bool,
}

/// A DMARC result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An aligned SPF or DKIM pass.
    Pass,
    /// A DMARC record, and no aligned pass.
    Fail,
    /// A lookup failed.
    TempError,
    /// No DMARC record (or a broken one, or no single From domain).
    None,
}

/// A DMARC policy (`p=`, or `sp=`/`np=` for subdomains).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    /// `none`.
    None,
    /// `quarantine`.
    Quarantine,
    /// `reject`.
    Reject,
}

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Queue it.
    Accept,
    /// Queue it for the Junk folder.
    Junk,
    /// 550 5.7.1.
    Reject,
    /// 451 4.4.3.
    TryLater,
}

/// The policy: an aligned pass is accepted; a DNS failure that could change
/// the result is a temporary refusal; a failure is refused, filed as junk or
/// only marked, as the domain asks and the config allows (a `p=reject` not
/// honoured is still quarantined, RFC 7489 §6.7).
pub fn decide(summary: &Summary, config: &SenderChecksConfig) -> Decision {
    match summary.dmarc {
        Outcome::Pass => Decision::Accept,
        Outcome::TempError => Decision::TryLater,
        _ if summary.dkim_temperror => Decision::TryLater,
        Outcome::None => Decision::Accept,
        Outcome::Fail => match summary.policy {
            DmarcPolicy::Reject if config.dmarc_reject => Decision::Reject,
            DmarcPolicy::Reject | DmarcPolicy::Quarantine if config.dmarc_quarantine => {
                Decision::Junk
            }
            _ => Decision::Accept,
        },
    }
}

/// The header block without the fields that only we may write: every
/// `Authentication-Results` whose authserv-id is `hostname` (RFC 8601 §5) and
/// every [`JUNK_FIELD`]. `None` when there are none (the block stays as it is).
pub fn without_claimed_fields(header: &[u8], hostname: &str) -> Option<Vec<u8>> {
    let fields = message::fields(header);
    let claimed: Vec<_> = fields
        .iter()
        .filter(|f| {
            f.name.eq_ignore_ascii_case(JUNK_FIELD)
                || (f.name.eq_ignore_ascii_case("Authentication-Results")
                    && authserv_id(&f.value()).is_some_and(|id| id.eq_ignore_ascii_case(hostname)))
        })
        .map(|f| f.span.clone())
        .collect();
    if claimed.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(header.len());
    let mut at = 0;
    for span in claimed {
        out.extend_from_slice(&header[at..span.start]);
        at = span.end;
    }
    out.extend_from_slice(&header[at..]);
    Some(out)
}

/// The authserv-id of an `Authentication-Results` value: the first token,
/// after any comments (RFC 8601 §2.2), without a trailing `;`.
fn authserv_id(value: &str) -> Option<&str> {
    let mut rest = value.trim_start();
    while let Some(after) = rest.strip_prefix('(') {
        // A comment may nest; one level of parentheses per depth.
        let mut depth = 1usize;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = after[end? + 1..].trim_start();
    }
    let id = rest
        .split(|c: char| c == ';' || c.is_whitespace() || c == '(')
        .next()?;
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SenderChecksConfig {
        qs_config::Config::defaults_at(std::path::Path::new("/tmp/q.toml"))
            .smtp_server
            .checks
    }

    #[test]
    fn fields_that_claim_our_name_are_removed_and_others_kept() {
        let header = b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n\
Authentication-Results: MX.example.test;\r\n\tdkim=pass header.d=evil.example\r\n\
Authentication-Results: (forged) mx.example.test; spf=pass\r\n\
Authentication-Results: other.example; dkim=fail\r\n\
X-Quicksilver-Junk: no\r\n\
Subject: hi\r\n\r\n";
        let kept = without_claimed_fields(header, "mx.example.test").unwrap();
        assert_eq!(
            kept,
            b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n\
Authentication-Results: other.example; dkim=fail\r\n\
Subject: hi\r\n\r\n"
        );
        assert_eq!(
            without_claimed_fields(b"Subject: hi\r\n\r\n", "mx.example.test"),
            None
        );
        // A name that only starts like ours is someone else's.
        assert_eq!(
            without_claimed_fields(
                b"Authentication-Results: mx.example.test.evil; none\r\n\r\n",
                "mx.example.test"
            ),
            None
        );
    }

    #[test]
    fn authserv_ids_are_read_past_comments() {
        assert_eq!(authserv_id(" mx.example; spf=pass"), Some("mx.example"));
        assert_eq!(
            authserv_id("(a (nested) c) mx.example;"),
            Some("mx.example")
        );
        assert_eq!(authserv_id("mx.example 1; none"), Some("mx.example"));
        assert_eq!(authserv_id("(unclosed mx.example"), None);
        assert_eq!(authserv_id(""), None);
    }

    #[test]
    fn blacklist_names_follow_rfc_5782() {
        assert_eq!(
            dnsbl_name("192.0.2.99".parse().unwrap(), "bl.example"),
            "99.2.0.192.bl.example."
        );
        assert_eq!(
            dnsbl_name("::ffff:192.0.2.99".parse().unwrap(), "bl.example."),
            "99.2.0.192.bl.example."
        );
        assert_eq!(
            dnsbl_name("2001:db8:1:2:3:4:567:89ab".parse().unwrap(), "ugly.example"),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example."
        );
    }

    #[test]
    fn the_dmarc_policy_is_applied_as_configured() {
        let summary = |dmarc, policy, dkim_temperror| Summary {
            dmarc,
            policy,
            dkim_temperror,
        };
        let mut config = config();
        use DmarcPolicy as P;
        use Outcome as O;
        let cases = [
            (summary(O::Pass, P::Reject, true), Decision::Accept),
            (summary(O::Fail, P::Reject, false), Decision::Reject),
            (summary(O::Fail, P::Quarantine, false), Decision::Junk),
            (summary(O::Fail, P::None, false), Decision::Accept),
            (summary(O::None, P::None, false), Decision::Accept),
            (summary(O::TempError, P::None, false), Decision::TryLater),
            (summary(O::Fail, P::Reject, true), Decision::TryLater),
            (summary(O::None, P::None, true), Decision::TryLater),
        ];
        for (summary, expected) in cases {
            assert_eq!(decide(&summary, &config), expected, "{summary:?}");
        }
        config.dmarc_reject = false;
        assert_eq!(
            decide(&summary(O::Fail, P::Reject, false), &config),
            Decision::Junk
        );
        config.dmarc_quarantine = false;
        assert_eq!(
            decide(&summary(O::Fail, P::Reject, false), &config),
            Decision::Accept
        );
        assert_eq!(
            decide(&summary(O::Fail, P::Quarantine, false), &config),
            Decision::Accept
        );
    }

    #[test]
    fn greylisting_keys_take_the_network_and_wait_the_delay() {
        assert_eq!(
            greylist_key("192.0.2.77".parse().unwrap(), "A@Example.org", "b@x.test"),
            "192.0.2.0/24 a@example.org b@x.test"
        );
        assert_eq!(
            greylist_key("2001:db8:0:1::5".parse().unwrap(), "", "b@x.test"),
            "2001:db8:0:1::/64  b@x.test"
        );
        let mut config = config();
        config.greylist_delay = Duration::from_secs(300);
        config.greylist_expiry = Duration::from_secs(35 * 86_400);
        let day = 86_400;
        let t = |first_seen, last_seen| Triplet {
            first_seen,
            last_seen,
        };
        // New: refused for the whole delay, remembered.
        assert_eq!(
            greylist_step(None, 1000, &config),
            (Some(300), Some(t(1000, 1000)))
        );
        // Too early a retry: the rest of the delay, nothing written.
        assert_eq!(
            greylist_step(Some(t(1000, 1000)), 1299, &config),
            (Some(1), None)
        );
        // After the delay: let in, the pass written down.
        assert_eq!(
            greylist_step(Some(t(1000, 1000)), 1300, &config),
            (None, Some(t(1000, 1300)))
        );
        // Later deliveries the same day write nothing; the next day's do.
        assert_eq!(
            greylist_step(Some(t(1000, 1300)), 5000, &config),
            (None, None)
        );
        assert_eq!(
            greylist_step(Some(t(1000, 1300)), 1300 + day, &config),
            (None, Some(t(1000, 1300 + day)))
        );
        // Not seen for longer than the expiry: a stranger again.
        let late = 1300 + 35 * day + 1;
        assert_eq!(
            greylist_step(Some(t(1000, 1300)), late, &config),
            (Some(300), Some(t(late, late)))
        );
        let expiry = config.greylist_expiry;
        assert!(t(0, 0).expired(35 * day + 1, expiry) && !t(0, 0).expired(35 * day, expiry));
        assert_eq!(Triplet::parse(b"1000 1300"), Some(t(1000, 1300)));
        assert_eq!(
            Triplet::parse(t(7, 9).to_string().as_bytes()),
            Some(t(7, 9))
        );
        assert_eq!(Triplet::parse(b"1000"), None);
    }

    #[test]
    fn list_texts_are_made_printable_and_short() {
        assert_eq!(printable("see\r\nhttp://x/\u{7f}é", 200), "seehttp://x/");
        assert_eq!(printable("abcdef", 3), "abc");
    }
}
