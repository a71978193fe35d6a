//! `qsctl dkim generate|show|list`: the DKIM keys smtp-relay signs with, and
//! the DNS records that publish them. Only public halves are ever printed.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::Subcommand;
use qs_config::Config;
use qs_dkim::{Algorithm, KeyInfo};

/// `qsctl dkim ...`
#[derive(Debug, Subcommand)]
pub enum DkimCommand {
    /// Make a signing key for DOMAIN (mode 0600 in dkim_dir, never
    /// replaced) and print the DNS TXT record to publish.
    Generate {
        /// The sending domain (the From address's domain).
        domain: String,
        /// The selector: one DNS label, new for each key (default:
        /// qsYYYYMMDD, today's date in UTC).
        #[arg(long)]
        selector: Option<String>,
        /// rsa (RSA-2048, checked by every receiver) or ed25519 (RFC 8463,
        /// not yet checked everywhere).
        #[arg(long, default_value = "rsa")]
        algorithm: String,
    },
    /// Print the DNS records of DOMAIN's keys again, the signing one first.
    Show {
        /// The domain.
        domain: String,
    },
    /// Every key: domain, selector, algorithm, whether it signs, file.
    List,
}

/// Runs one `qsctl dkim` command.
pub fn dkim(config: &Config, cmd: DkimCommand) -> Result<()> {
    let dir = &config.smtp_relay.dkim_dir;
    match cmd {
        DkimCommand::Generate {
            domain,
            selector,
            algorithm,
        } => {
            let algorithm: Algorithm = algorithm.parse()?;
            let selector = selector.unwrap_or_else(|| default_selector(SystemTime::now()));
            let key = qs_dkim::generate(dir, &domain, &selector, algorithm)?;
            println!("{}", key.dns_record());
            eprintln!(
                "wrote the {} key {} (mode 0600); publish the record above, then \
                 `qsctl restart smtp-relay` to sign mail from {} with it",
                key.algorithm,
                key.path.display(),
                key.domain
            );
            if !config.smtp_relay.dkim {
                eprintln!("note: [smtp_relay] dkim = false: nothing is signed until it is true");
            }
        }
        DkimCommand::Show { domain } => {
            let wanted = qs_dkim::key::check_domain(&domain)?;
            let keys: Vec<KeyInfo> = qs_dkim::list(dir)?
                .into_iter()
                .filter(|k| k.domain == wanted)
                .collect();
            if keys.is_empty() {
                anyhow::bail!(
                    "no DKIM key for {wanted} in {} (make one with `qsctl dkim generate {wanted}`)",
                    dir.display()
                );
            }
            // list() puts each domain's signing key first.
            for key in keys {
                println!("{}", key.dns_record());
            }
        }
        DkimCommand::List => {
            let keys = qs_dkim::list(dir)?;
            if keys.is_empty() {
                println!("no DKIM keys in {}", dir.display());
            }
            let mut previous: Option<&str> = None;
            for key in &keys {
                let state = if previous == Some(key.domain.as_str()) {
                    "older"
                } else {
                    "signing"
                };
                previous = Some(&key.domain);
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    key.domain,
                    key.selector,
                    key.algorithm,
                    state,
                    key.path.display()
                );
            }
        }
    }
    Ok(())
}

/// `qsYYYYMMDD` for `now` in UTC: a new selector every day, so a key made
/// to replace another gets a new name without thinking of one.
fn default_selector(now: SystemTime) -> String {
    let days = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) / 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!("qs{year:04}{month:02}{day:02}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_default_selector_is_the_date_in_utc() {
        let at = |secs: u64| default_selector(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "qs19700101");
        assert_eq!(at(86_399), "qs19700101");
        // 2000-02-29 (a leap day of a century year) and 2026-12-31.
        assert_eq!(at(951_782_400), "qs20000229");
        assert_eq!(at(1_798_675_200), "qs20261231");
        assert_eq!(at(1_798_761_600), "qs20270101");
    }
}
