//! Direct delivery's DNS: a domain's MX hosts in the order of [`crate::mx`],
//! each with its addresses; the domain's own addresses when it has no MX (the
//! implicit MX of RFC 5321 §5.1); and the failures that decide a recipient's
//! fate: a null MX or a domain that does not exist is permanent, a name server
//! that does not answer is temporary.
//!
//! The resolver is hickory-resolver, configured from `/etc/resolv.conf` or, when
//! `smtp_relay.dns_server` is set, asking that one server (UDP, then TCP).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use qs_queue::{Outcome, Reply};

use crate::mx::{self, MxPlan};
use crate::reply;

/// One host to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its name (the MX exchange, or the domain itself), for TLS and logs.
    pub name: String,
    /// Its addresses, IPv4 first.
    pub addrs: Vec<IpAddr>,
}

/// The resolver for direct delivery.
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
}

impl Dns {
    /// A resolver asking `server`, or the system's name servers when `None`.
    /// Must be called inside the tokio runtime.
    pub fn new(server: Option<SocketAddr>) -> Result<Dns, String> {
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
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.timeout = Duration::from_secs(5);
        options.attempts = 2;
        if server.is_some() {
            options.use_hosts_file = ResolveHosts::Never;
        }
        let resolver = builder
            .build()
            .map_err(|e| format!("cannot build the DNS resolver: {e}"))?;
        Ok(Dns { resolver })
    }

    /// The hosts to try for `domain` (lower case, or an address literal
    /// `[192.0.2.1]` / `[IPv6:2001:db8::1]`), best first; `Err` is the outcome
    /// for every recipient of the domain.
    pub async fn targets(&self, domain: &str) -> Result<Vec<Target>, Outcome> {
        if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let text = literal.strip_prefix("IPv6:").unwrap_or(literal);
            return match text.parse::<IpAddr>() {
                Ok(ip) => Ok(vec![Target {
                    name: domain.to_string(),
                    addrs: vec![ip],
                }]),
                Err(_) => Err(reply::permanent(
                    "5.1.2",
                    &format!("bad address literal {domain}"),
                )),
            };
        }
        let name = Name::from_utf8(format!("{domain}."))
            .map_err(|e| reply::permanent("5.1.2", &format!("bad domain name {domain}: {e}")))?;
        let records: Vec<(u16, String)> = match self.resolver.mx_lookup(name.clone()).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_nx_domain() => {
                return Err(reply::permanent(
                    "5.1.2",
                    &format!("domain {domain} does not exist (DNS: no such domain)"),
                ));
            }
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => {
                return Err(reply::temporary(
                    "4.4.3",
                    &format!("DNS lookup of the MX of {domain} failed: {e}"),
                ));
            }
        };
        if records.is_empty() {
            // No MX: the domain itself is the host (RFC 5321 §5.1).
            return match self.addresses(&name).await {
                Ok(addrs) if !addrs.is_empty() => Ok(vec![Target {
                    name: domain.to_string(),
                    addrs,
                }]),
                Ok(_) => Err(reply::permanent(
                    "5.1.2",
                    &format!("domain {domain} has no MX and no address record"),
                )),
                Err(e) => Err(reply::temporary(
                    "4.4.3",
                    &format!("DNS lookup of {domain} failed: {e}"),
                )),
            };
        }
        let hosts = match mx::order(&records, &mut rand::rng()) {
            MxPlan::NullMx => {
                return Err(Outcome::PermanentFailure {
                    reply: Reply::new(
                        556,
                        "5.1.10",
                        &format!("domain {domain} accepts no mail (null MX, RFC 7505)"),
                    ),
                });
            }
            MxPlan::Hosts(hosts) => hosts,
        };
        let mut targets = Vec::with_capacity(hosts.len());
        let mut last_error = String::new();
        for host in hosts {
            let addrs = match Name::from_ascii(format!("{host}.")) {
                Ok(n) => self.addresses(&n).await,
                Err(e) => Err(e.to_string()),
            };
            match addrs {
                Ok(addrs) if !addrs.is_empty() => targets.push(Target { name: host, addrs }),
                Ok(_) => last_error = format!("{host} has no address record"),
                Err(e) => last_error = format!("{host}: {e}"),
            }
        }
        if targets.is_empty() {
            return Err(reply::temporary(
                "4.4.3",
                &format!("no MX host of {domain} has an address ({last_error})"),
            ));
        }
        Ok(targets)
    }

    /// The A and AAAA records of `name`; no records is an empty list.
    async fn addresses(&self, name: &Name) -> Result<Vec<IpAddr>, String> {
        match self.resolver.lookup_ip(name.clone()).await {
            Ok(lookup) => Ok(lookup.iter().collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }
}
