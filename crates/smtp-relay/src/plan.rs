//! Which recipients travel together: grouped by destination (everything to the
//! smarthost, or one group per recipient domain in direct mode), then cut into
//! SMTP transactions of at most `max_recipients_per_message` recipients (the
//! fan-out that providers with a recipient cap need). No I/O here.

use std::fmt;

use qs_queue::{JobRecipient, Reply};

/// Where a group of recipients is delivered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// The configured smarthost.
    Smarthost,
    /// The MX hosts of this domain (lower case), or the address in an address
    /// literal (`[192.0.2.1]`).
    Domain(String),
}

impl Destination {
    /// The key for connection pools, concurrency limits and logs.
    pub fn key(&self) -> &str {
        match self {
            Destination::Smarthost => "smarthost",
            Destination::Domain(d) => d,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// One SMTP transaction's worth of recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Where they go.
    pub destination: Destination,
    /// At most the configured number, in the job's order.
    pub recipients: Vec<JobRecipient>,
}

/// A recipient that cannot be sent to at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsendable {
    /// The recipient.
    pub recipient: JobRecipient,
    /// Why (for the DSN).
    pub reason: Reply,
}

/// Groups `recipients` by destination and cuts each group into batches of at
/// most `max_per_transaction` (0 counts as 1). Groups keep the order in which
/// their first recipient appears; recipients keep their order.
pub fn batches(
    direct: bool,
    recipients: &[JobRecipient],
    max_per_transaction: usize,
) -> (Vec<Batch>, Vec<Unsendable>) {
    let max = max_per_transaction.max(1);
    let mut groups: Vec<(Destination, Vec<JobRecipient>)> = Vec::new();
    let mut bad = Vec::new();
    for r in recipients {
        if let Err(reason) = check_address(&r.address) {
            bad.push(Unsendable {
                recipient: r.clone(),
                reason,
            });
            continue;
        }
        let destination = if direct {
            match domain_of(&r.address) {
                Some(domain) => Destination::Domain(domain),
                None => {
                    bad.push(Unsendable {
                        recipient: r.clone(),
                        reason: Reply::local("5.1.3", "the address has no domain"),
                    });
                    continue;
                }
            }
        } else {
            Destination::Smarthost
        };
        match groups.iter_mut().find(|(d, _)| *d == destination) {
            Some((_, members)) => members.push(r.clone()),
            None => groups.push((destination, vec![r.clone()])),
        }
    }
    let mut out = Vec::new();
    for (destination, members) in groups {
        for chunk in members.chunks(max) {
            out.push(Batch {
                destination: destination.clone(),
                recipients: chunk.to_vec(),
            });
        }
    }
    (out, bad)
}

/// The domain of an address (after the last `@`), lower case; `None` when
/// there is none.
pub fn domain_of(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.');
    (!domain.is_empty()).then(|| domain.to_lowercase())
}

/// Refuses what must never reach an SMTP command line: control characters
/// (CR and LF above all: command injection), angle brackets, and empty or
/// over-long addresses (RFC 5321 §4.5.3.1: 254 octets in a path).
pub fn check_address(address: &str) -> Result<(), Reply> {
    if address.is_empty() {
        return Err(Reply::local("5.1.3", "empty address"));
    }
    if address.len() > 254 {
        return Err(Reply::local("5.1.3", "address longer than 254 octets"));
    }
    if address
        .chars()
        .any(|c| c.is_control() || c == '<' || c == '>')
    {
        return Err(Reply::local(
            "5.1.3",
            "address with a control character or angle bracket",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpt(index: u32, address: &str) -> JobRecipient {
        JobRecipient {
            index,
            address: address.into(),
            original: None,
            attempts: 0,
        }
    }

    fn addresses(batch: &Batch) -> Vec<&str> {
        batch
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect()
    }

    #[test]
    fn a_hundred_and_twenty_recipients_make_three_transactions_of_at_most_fifty() {
        let all: Vec<JobRecipient> = (0..120)
            .map(|i| rcpt(i, &format!("user{i}@far.example")))
            .collect();
        let (batches, bad) = batches(false, &all, 50);
        assert!(bad.is_empty());
        let sizes: Vec<usize> = batches.iter().map(|b| b.recipients.len()).collect();
        assert_eq!(sizes, vec![50, 50, 20]);
        assert!(
            batches
                .iter()
                .all(|b| b.destination == Destination::Smarthost)
        );
        // Every recipient once, in order.
        let flat: Vec<u32> = batches
            .iter()
            .flat_map(|b| b.recipients.iter().map(|r| r.index))
            .collect();
        assert_eq!(flat, (0..120).collect::<Vec<u32>>());
    }

    #[test]
    fn direct_mode_groups_by_domain_in_order_of_appearance() {
        let all = vec![
            rcpt(0, "a@Far.Example"),
            rcpt(1, "b@near.example"),
            rcpt(2, "c@far.example."),
            rcpt(3, "d@near.example"),
            rcpt(4, "e@far.example"),
        ];
        let (batches, bad) = batches(true, &all, 2);
        assert!(bad.is_empty());
        let got: Vec<(String, Vec<&str>)> = batches
            .iter()
            .map(|b| (b.destination.to_string(), addresses(b)))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "far.example".to_string(),
                    vec!["a@Far.Example", "c@far.example."]
                ),
                ("far.example".to_string(), vec!["e@far.example"]),
                (
                    "near.example".to_string(),
                    vec!["b@near.example", "d@near.example"]
                ),
            ]
        );
    }

    #[test]
    fn smarthost_mode_sends_every_domain_together() {
        let all = vec![rcpt(0, "a@one.example"), rcpt(1, "b@two.example")];
        let (batches, _) = batches(false, &all, 50);
        assert_eq!(batches.len(), 1);
        assert_eq!(
            addresses(&batches[0]),
            vec!["a@one.example", "b@two.example"]
        );
    }

    #[test]
    fn unsendable_addresses_are_set_apart() {
        let all = vec![
            rcpt(0, "ok@far.example"),
            rcpt(1, "evil@far.example>\r\nRCPT TO:<x@y"),
            rcpt(2, "nodomain"),
            rcpt(3, ""),
        ];
        let (batches, bad) = batches(true, &all, 0);
        assert_eq!(batches.len(), 1);
        assert_eq!(addresses(&batches[0]), vec!["ok@far.example"]);
        let bad: Vec<u32> = bad.iter().map(|u| u.recipient.index).collect();
        assert_eq!(bad, vec![1, 2, 3]);
    }

    #[test]
    fn domains_and_addresses() {
        assert_eq!(domain_of("a@B.example"), Some("b.example".into()));
        assert_eq!(domain_of("\"a@b\"@c.example"), Some("c.example".into()));
        assert_eq!(domain_of("a@[192.0.2.1]"), Some("[192.0.2.1]".into()));
        assert_eq!(domain_of("a@"), None);
        assert_eq!(domain_of("a"), None);
        assert!(check_address("\"john doe\"@far.example").is_ok());
        assert!(check_address(&format!("{}@x.example", "a".repeat(250))).is_err());
        assert!(check_address("a\u{0}@x.example").is_err());
    }
}
