//! `qs-bench list`: a list's fan-out and its delivery. The tool makes a
//! list of N members (all in the sink's domain) in the installation's lists
//! folder, queues one post to it through core-queue, and times list-server
//! until the post's lease is complete, which it is only once every copy is
//! durable in the queue. Then it lets smtp-relay deliver the copies to the
//! tool's sink (as `qs-bench relay` does: the relay must point at it) and
//! times recipients/s until core-queue has every result. The list is removed
//! at the end, also when the run fails.
//!
//! core-queue, list-server and smtp-relay must be running.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use qs_directory::mailing_list::{ListStore, MailingList, Member};
use qs_queue::ClientError;
use serde::Serialize;

use crate::BenchError;
use crate::install::Installation;
use crate::relay::{Sink, check_sink, queued, sink_address, until_delivered};
use crate::report::{Row, Summary, count, rate};
use crate::stats::per_second;

/// The run's list is `qs-bench@DOMAIN`: one name, so that runs leave no
/// more behind than one lock file in the lists folder.
const LIST_NAME: &str = "qs-bench";

/// The description that marks a list as the tool's own, which a later run
/// may replace (a run that was killed leaves its list behind).
const MADE_BY_QS_BENCH: &str = "made by qs-bench for one run; removed at its end";

/// How long list-server may leave the post untouched before the run gives up.
const STALL: Duration = Duration::from_secs(60);

/// The flags of `qs-bench list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListOptions {
    /// The installation: its queue, its lists folder, and the smarthost
    /// address the sink takes.
    #[arg(long, value_name = "PATH")]
    pub config: PathBuf,
    /// How many members the list has.
    #[arg(long, default_value_t = 10_000)]
    pub members: u64,
    /// Recipients per copy (the list's `max_recipients`, 1 to 10000).
    #[arg(long, default_value_t = 50)]
    pub batch: u32,
    /// Size of the post in bytes.
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// The list's domain (default: the directory's first local domain).
    #[arg(long)]
    pub domain: Option<String>,
    /// The members' domain: one the relay sends to the sink.
    #[arg(long, default_value = "sink.invalid")]
    pub member_domain: String,
    /// The post's sender.
    #[arg(long, default_value = "qs-bench@load.invalid")]
    pub from: String,
    /// Seconds the whole run may take.
    #[arg(long, default_value_t = 600)]
    pub within: u64,
}

/// What `qs-bench list` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ListReport {
    /// The list's address, `qs-bench@DOMAIN` (removed again).
    pub list: String,
    /// The sink's address.
    pub sink: String,
    /// Members of the list.
    pub members: u64,
    /// Recipients per copy.
    pub batch: u32,
    /// Bytes of the post.
    pub size: usize,
    /// Copies list-server queued.
    pub copies: u64,
    /// From queueing the post to its lease complete (every copy queued).
    pub fan_out_seconds: f64,
    /// Members per second over that time.
    pub queued_recipients_per_second: f64,
    /// Whether the relay was let in before the fan-out was complete.
    pub fan_out_overlapped: bool,
    /// Messages the sink received.
    pub received: u64,
    /// Recipients of those messages.
    pub received_recipients: u64,
    /// From the sink's release to the last result in the queue.
    pub seconds: f64,
    /// Recipients per second over that time.
    pub delivered_recipients_per_second: f64,
    /// SMTP connections the relay opened to the sink.
    pub connections: u64,
}

impl Summary for ListReport {
    fn title(&self) -> String {
        format!(
            "qs-bench list: one post of {} bytes to {} members in copies of at most {}, \
             through list-server and smtp-relay to the sink at {}",
            count(self.size as u64),
            count(self.members),
            count(u64::from(self.batch)),
            self.sink
        )
    }

    fn rows(&self) -> Vec<Row> {
        vec![
            Row::new(
                "fan-out",
                format!(
                    "{} copies for {} members in {:.3} s ({} recipients/s, every copy durable in the queue){}",
                    count(self.copies),
                    count(self.members),
                    self.fan_out_seconds,
                    rate(self.queued_recipients_per_second),
                    if self.fan_out_overlapped {
                        " (longer than the sink could hold: overlapping the relay)"
                    } else {
                        ""
                    }
                ),
            ),
            Row::new(
                "delivered",
                format!(
                    "{} recipients/s ({} recipients in {} messages in {:.2} s, every result durable in the queue)",
                    rate(self.delivered_recipients_per_second),
                    count(self.received_recipients),
                    count(self.received),
                    self.seconds
                ),
            ),
            Row::new("SMTP connections", count(self.connections)),
        ]
    }
}

/// Runs `qs-bench list`: binds the sink where the config's relay delivers.
pub async fn run(options: &ListOptions) -> Result<ListReport, BenchError> {
    let installation = Installation::load(&options.config)?;
    let sink = Sink::bind(sink_address(&installation)?).await?;
    run_with_sink(options, &installation, sink).await
}

/// Runs `qs-bench list` with a sink already bound.
pub async fn run_with_sink(
    options: &ListOptions,
    installation: &Installation,
    sink: Sink,
) -> Result<ListReport, BenchError> {
    if options.members == 0 {
        return Err(BenchError::Usage("--members must be at least 1".into()));
    }
    let sink_addr = check_sink(installation, &sink)?;
    let config = &installation.config;
    let domain = match &options.domain {
        Some(domain) => domain.to_ascii_lowercase(),
        None => first_local_domain(config)?,
    };
    let list = build_list(options, &domain)?;
    let store = ListStore::new(config.data_path("lists"));
    if let Ok(left) = store.load(&list.address) {
        if left.description != MADE_BY_QS_BENCH {
            return Err(BenchError::Installation(format!(
                "the installation has a list {} of its own: name another domain with --domain",
                list.address
            )));
        }
        let _ = store.delete(&list.address);
    }
    store
        .create(&list)
        .map_err(|e| BenchError::Installation(format!("cannot create {}: {e}", list.address)))?;
    let _remove = RemoveList {
        store: &store,
        address: &list.address,
    };

    let client =
        qs_service::queue::client(config).map_err(|e| BenchError::Installation(e.to_string()))?;
    let baseline = queued(&client).await?;
    let held = sink.hold(config);
    let within = Duration::from_secs(options.within);

    let marker = crate::message::run_marker();
    let post = crate::message::build(&marker, 0, &options.from, &list.address, options.size);
    let started = Instant::now();
    let id = client
        .enqueue(
            &options.from,
            vec![list.address.clone()],
            qs_queue::Origin::default(),
            &post,
        )
        .await
        .map_err(|e| BenchError::Refused(format!("core-queue refused the post: {e}")))?;
    let spinner = crate::progress::spinner(&format!(
        "list-server queues copies for {} members",
        count(options.members)
    ));
    let fanned_out = wait_for_fan_out(&client, &id, started, within).await;
    spinner.finish_and_clear();
    fanned_out?;
    let fan_out = started.elapsed();
    let fan_out_overlapped = held.release();

    let copies = options.members.div_ceil(u64::from(options.batch));
    let now_queued = queued(&client).await?;
    if !fan_out_overlapped && now_queued < baseline + copies {
        return Err(BenchError::Refused(format!(
            "list-server queued {} messages for the post, not {copies}: see its log",
            now_queued.saturating_sub(baseline)
        )));
    }

    let released = Instant::now();
    let counts = held.counts();
    let seconds = until_delivered(
        "recipients",
        options.members,
        || counts.recipients(),
        &client,
        baseline,
        released,
        within.saturating_sub(started.elapsed()),
    )
    .await?;
    Ok(ListReport {
        list: list.address.clone(),
        sink: sink_addr.to_string(),
        members: options.members,
        batch: options.batch,
        size: options.size,
        copies,
        fan_out_seconds: fan_out.as_secs_f64(),
        queued_recipients_per_second: per_second(options.members, fan_out),
        fan_out_overlapped,
        received: counts.messages(),
        received_recipients: counts.recipients(),
        seconds: seconds.as_secs_f64(),
        delivered_recipients_per_second: per_second(options.members, seconds),
        connections: counts.connections(),
    })
}

/// The list the run posts to: open to anyone, `members` addresses in the
/// sink's domain, copies of at most `batch` recipients.
fn build_list(options: &ListOptions, domain: &str) -> Result<MailingList, BenchError> {
    let usage = |e: &dyn std::fmt::Display| BenchError::Usage(e.to_string());
    let mut list = MailingList::new(&format!("{LIST_NAME}@{domain}")).map_err(|e| usage(&e))?;
    list.description = MADE_BY_QS_BENCH.into();
    list.set("posting", "anyone").map_err(|e| usage(&e))?;
    list.set("max_recipients", &options.batch.to_string())
        .map_err(|e| BenchError::Usage(format!("--batch {}: {e}", options.batch)))?;
    // The addresses differ only in their digits: one is checked, and all are
    // added without the duplicate check of `add_member`, which would make a
    // list of N members cost N² comparisons.
    let domain = qs_directory::mailing_list::check_address(&format!(
        "member0000000@{}",
        options.member_domain
    ))
    .map_err(|e| BenchError::Usage(format!("--member-domain: {e}")))?
    .rsplit_once('@')
    .map(|(_, domain)| domain.to_string())
    .unwrap_or_default();
    list.members = (0..options.members)
        .map(|i| Member::new(format!("member{i:07}@{domain}"), ""))
        .collect();
    Ok(list)
}

/// The directory's first local domain (not a domain alias).
fn first_local_domain(config: &qs_config::Config) -> Result<String, BenchError> {
    let path = &config.directory.file;
    let directory = qs_directory::Directory::open(path, Default::default())
        .map_err(|e| BenchError::Installation(e.to_string()))?;
    let snapshot = directory.snapshot();
    snapshot
        .domains()
        .find(|d| d.alias_of().is_none())
        .map(|d| d.name().to_string())
        .ok_or_else(|| {
            BenchError::Installation(format!(
                "{} has no local domain: add one (qsctl domain add) or name it with --domain",
                path.display()
            ))
        })
}

/// Waits until core-queue no longer holds the post: list-server completes
/// its lease only once every copy is queued. A post that list-server could
/// not take (a temporary failure) ends the run with list-server's reply.
async fn wait_for_fan_out(
    client: &qs_queue::Client,
    id: &qs_queue::QueueId,
    started: Instant,
    within: Duration,
) -> Result<(), BenchError> {
    loop {
        match client.show(id).await {
            Ok(envelope) => {
                if let Some(reply) = envelope
                    .recipients
                    .iter()
                    .find(|r| r.attempts > 0)
                    .and_then(|r| r.last_reply.clone())
                {
                    return Err(BenchError::Refused(format!(
                        "list-server did not take the post: {reply}"
                    )));
                }
            }
            Err(ClientError::Refused {
                kind: qs_queue::ErrorKind::NotFound,
                ..
            }) => return Ok(()),
            Err(e) => return Err(BenchError::Installation(format!("core-queue: {e}"))),
        }
        let waited = started.elapsed();
        if waited > STALL.min(within) {
            return Err(BenchError::Timeout(format!(
                "the post is still queued after {} s: is list-server running?",
                waited.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Removes the run's list when the run ends, however it ends.
struct RemoveList<'a> {
    store: &'a ListStore,
    address: &'a str,
}

impl Drop for RemoveList<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.store.delete(self.address) {
            eprintln!("qs-bench: cannot remove the list {}: {e}", self.address);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn options(members: u64, batch: u32) -> ListOptions {
        ListOptions {
            config: PathBuf::new(),
            members,
            batch,
            size: 1000,
            domain: None,
            member_domain: "sink.invalid".into(),
            from: "a@b.invalid".into(),
            within: 10,
        }
    }

    #[test]
    fn the_list_is_open_and_split_as_asked() {
        let list = build_list(&options(120, 50), "example.test").unwrap();
        assert_eq!(list.address, "qs-bench@example.test");
        assert_eq!(list.members.len(), 120);
        assert_eq!(list.settings.max_recipients, 50);
        assert_eq!(list.members[0].address, "member0000000@sink.invalid");
        assert_eq!(list.members[119].address, "member0000119@sink.invalid");
        let mut bad = options(1, 50);
        bad.member_domain = "not a domain".into();
        let err = build_list(&bad, "example.test").unwrap_err();
        assert!(err.to_string().starts_with("--member-domain:"), "{err}");
    }

    #[test]
    fn a_batch_out_of_range_is_a_usage_error() {
        let err = build_list(&options(1, 0), "example.test").unwrap_err();
        assert!(err.to_string().starts_with("--batch 0:"), "{err}");
        let err = build_list(&options(1, 10_001), "example.test").unwrap_err();
        assert!(err.to_string().contains("1 to 10000"), "{err}");
    }
}
