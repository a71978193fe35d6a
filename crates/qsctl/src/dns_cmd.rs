//! `qsctl dns [DOMAIN]`: the DNS records a local domain needs so that its mail is
//! delivered to us and the mail we send is accepted (MX, SPF, DKIM, DMARC), as
//! zone-file lines with a comment saying what each is for. Only public halves of
//! keys are printed; nothing is looked up or changed.

use anyhow::{Result, bail};
use clap::Args;
use qs_config::{Config, RelayMode};

use crate::admin::open_directory;

/// `qsctl dns ...`
#[derive(Debug, Args)]
pub struct DnsArgs {
    /// One local domain (default: every local domain that is not an alias).
    pub domain: Option<String>,
}

/// Prints the records.
pub fn dns(config: &Config, args: DnsArgs) -> Result<()> {
    let snapshot = open_directory(config)?.refresh()?;
    let mut domains: Vec<String> = snapshot
        .domains()
        .filter(|d| d.alias_of().is_none())
        .map(|d| d.name().to_owned())
        .collect();
    if let Some(wanted) = &args.domain {
        let wanted = wanted.trim_end_matches('.').to_ascii_lowercase();
        let known = snapshot.domains().any(|d| d.name() == wanted);
        if !known {
            bail!("{wanted} is not a local domain (qsctl domain list shows them)");
        }
        domains = vec![wanted];
    }
    if domains.is_empty() {
        bail!("there is no local domain yet (add one with `qsctl domain add DOMAIN`)");
    }
    let keys = qs_dkim::list(&config.smtp_relay.dkim_dir)?;
    for (i, domain) in domains.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", records(config, domain, &keys));
    }
    Ok(())
}

/// The records of one domain, as text.
fn records(config: &Config, domain: &str, keys: &[qs_dkim::KeyInfo]) -> String {
    let host = config.hostname.trim_end_matches('.');
    let mut out = format!("; {domain}: the records to publish in its zone\n");
    out.push_str(&format!(
        "; mail for {domain} comes to this server ({host}, which needs an A/AAAA record)\n"
    ));
    out.push_str(&format!("{domain}. MX 10 {host}.\n"));
    let spf = match config.smtp_relay.mode {
        RelayMode::Direct => {
            out.push_str(&format!(
                "; SPF (RFC 7208): mail from {domain} leaves from this server only\n"
            ));
            format!("v=spf1 mx a:{host} -all")
        }
        RelayMode::Smarthost => {
            let relay = smarthost_host(&config.smtp_relay.smarthost);
            let mechanism = match relay.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(ip)) => format!("ip4:{ip}"),
                Ok(std::net::IpAddr::V6(ip)) => format!("ip6:{ip}"),
                Err(_) => format!("a:{relay}"),
            };
            out.push_str(&format!(
                "; SPF (RFC 7208): mail leaves through the smarthost {relay}; if your provider \
                 documents an include: for its senders, put it in place of {mechanism}\n"
            ));
            format!("v=spf1 mx {mechanism} ~all")
        }
    };
    out.push_str(&format!("{domain}. TXT \"{spf}\"\n"));
    let ours: Vec<&qs_dkim::KeyInfo> = keys.iter().filter(|k| k.domain == domain).collect();
    if ours.is_empty() {
        out.push_str(&format!(
            "; DKIM (RFC 6376): no key yet; `qsctl dkim generate {domain}` makes one and \
             prints its record\n"
        ));
    } else {
        out.push_str(&format!(
            "; DKIM (RFC 6376): smtp-relay signs mail from {domain} with the first key; keep \
             an older one published until mail signed with it has been read\n"
        ));
        for key in ours {
            let record = key.dns_record();
            out.push_str(&format!("{}.", record.name));
            out.push_str(" TXT");
            for s in record.strings() {
                out.push_str(&format!(" \"{s}\""));
            }
            out.push('\n');
        }
    }
    out.push_str(
        "; DMARC (RFC 7489): reports to the postmaster; once they show every message \
         passing, make it p=quarantine, then p=reject\n",
    );
    out.push_str(&format!(
        "_dmarc.{domain}. TXT \"v=DMARC1; p=none; rua=mailto:postmaster@{domain}\"\n"
    ));
    out
}

/// The host of `host:port` (or `[v6]:port`).
fn smarthost_host(smarthost: &str) -> &str {
    let host = match smarthost.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => smarthost,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smarthost_s_host_is_named_without_its_port() {
        assert_eq!(
            smarthost_host("smtp.provider.example:587"),
            "smtp.provider.example"
        );
        assert_eq!(
            smarthost_host("smtp.provider.example"),
            "smtp.provider.example"
        );
        assert_eq!(smarthost_host("[2001:db8::1]:25"), "2001:db8::1");
    }
}
