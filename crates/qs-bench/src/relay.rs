//! `qs-bench relay`: deliveries/s out of smtp-relay. The tool runs its own
//! SMTP sink (PIPELINING, 8BITMIME, answers at once, keeps nothing) on the
//! address the installation's `smtp_relay.smarthost` names, which must be
//! plain (`tls = "none"`, no AUTH): point a test installation's relay at it.
//! It queues N messages to an outside recipient through core-queue's client,
//! then lets the relay in and times it until the sink has every message and
//! core-queue every result (each lease and each result durable in the queue).
//!
//! The sink accepts connections while the queue fills but holds its greeting,
//! so that the figure is the relay's and not the filling's. It holds it at
//! most half of `smtp_relay.connect_timeout_secs` (20 s at the most); a fill
//! that takes longer overlaps the relay, and the report says so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::BenchError;
use crate::install::Installation;
use crate::report::{Row, Summary, count, rate};
use crate::stats::per_second;

/// How long the sink may see no new message before the run gives up.
const STALL: Duration = Duration::from_secs(60);

/// The flags of `qs-bench relay`.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayOptions {
    /// The installation: its queue, and the smarthost address the sink takes.
    #[arg(long, value_name = "PATH")]
    pub config: PathBuf,
    /// How many messages.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Size of each message in bytes.
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// The envelope sender.
    #[arg(long, default_value = "qs-bench@load.invalid")]
    pub from: String,
    /// The recipient (in a domain that is not local).
    #[arg(long, default_value = "qs-bench@sink.invalid")]
    pub to: String,
    /// Concurrent clients filling the queue.
    #[arg(long, default_value_t = 32)]
    pub enqueuers: u64,
    /// Seconds the whole run may take.
    #[arg(long, default_value_t = 600)]
    pub within: u64,
}

/// What `qs-bench relay` measured.
#[derive(Debug, Clone, Serialize)]
pub struct RelayReport {
    /// The sink's address.
    pub sink: String,
    /// Messages queued.
    pub messages: u64,
    /// Bytes per message.
    pub size: usize,
    /// Time to queue them.
    pub queue_seconds: f64,
    /// Whether the relay was let in before the queue was full.
    pub fill_overlapped: bool,
    /// Messages the sink received.
    pub received: u64,
    /// From the sink's first greeting to the last result in the queue.
    pub seconds: f64,
    /// `messages` per second over that time.
    pub delivered_per_second: f64,
    /// SMTP connections the relay opened to the sink.
    pub connections: u64,
}

impl Summary for RelayReport {
    fn title(&self) -> String {
        format!(
            "qs-bench relay: {} queued messages of {} bytes through smtp-relay to the sink at {}",
            count(self.messages),
            count(self.size as u64),
            self.sink
        )
    }

    fn rows(&self) -> Vec<Row> {
        vec![
            Row::new(
                "queued",
                format!(
                    "{} in {:.2} s{}",
                    count(self.messages),
                    self.queue_seconds,
                    if self.fill_overlapped {
                        " (longer than the sink could hold: overlapping the relay)"
                    } else {
                        ""
                    }
                ),
            ),
            Row::new(
                "delivered",
                format!(
                    "{} messages/s ({} received in {:.2} s, every result durable in the queue)",
                    rate(self.delivered_per_second),
                    count(self.received),
                    self.seconds
                ),
            ),
            Row::new("SMTP connections", count(self.connections)),
        ]
    }
}

/// What the sink counts.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    messages: AtomicU64,
    /// Recipients of the accepted messages.
    recipients: AtomicU64,
}

/// What a started sink has accepted so far.
#[derive(Debug, Clone)]
pub struct SinkCounts(Arc<Counters>);

impl SinkCounts {
    /// Messages accepted.
    pub fn messages(&self) -> u64 {
        self.0.messages.load(Ordering::Relaxed)
    }

    /// Recipients of the messages accepted.
    pub fn recipients(&self) -> u64 {
        self.0.recipients.load(Ordering::Relaxed)
    }

    /// Connections accepted.
    pub fn connections(&self) -> u64 {
        self.0.connections.load(Ordering::Relaxed)
    }
}

/// The SMTP sink smtp-relay delivers to.
pub struct Sink {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Sink {
    /// Listens on `addr` (port 0: any free port).
    pub async fn bind(addr: SocketAddr) -> Result<Sink, BenchError> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            BenchError::Usage(format!(
                "the sink cannot listen on {addr}: {e} (smtp_relay.smarthost must be a free local address)"
            ))
        })?;
        let addr = listener.local_addr().map_err(|source| BenchError::Io {
            what: "the sink's address".into(),
            source,
        })?;
        Ok(Sink { listener, addr })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves at once, in the background, for as long as the runtime runs.
    pub fn start(self) -> SinkCounts {
        let counters = Arc::new(Counters::default());
        let (_open, opened) = watch::channel(true);
        drop(self.serve(counters.clone(), opened));
        SinkCounts(counters)
    }

    /// Serves in the background but holds every greeting until
    /// [`HeldSink::release`], or at most half of the relay's
    /// `connect_timeout_secs` (20 s at the most), so that what is timed is
    /// the relay's delivery and not the filling of the queue.
    pub(crate) fn hold(self, config: &qs_config::Config) -> HeldSink {
        let counters = Arc::new(Counters::default());
        let (open, opened) = watch::channel(false);
        let server = self.serve(counters.clone(), opened);
        let hold = (config.smtp_relay.connect_timeout / 2).min(Duration::from_secs(20));
        let deadline = Instant::now() + hold;
        let timer = {
            let open = open.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline.into()).await;
                let _ = open.send(true);
            })
        };
        HeldSink {
            counts: SinkCounts(counters),
            open,
            server,
            timer,
        }
    }

    /// Accepts connections until dropped; greets each once `open` is true.
    fn serve(
        self,
        counters: Arc<Counters>,
        open: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = self.listener.accept().await else {
                    continue;
                };
                counters.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(sink_session(stream, counters.clone(), open.clone()));
            }
        })
    }
}

/// A sink that has not greeted anyone yet; stops serving when dropped.
pub(crate) struct HeldSink {
    counts: SinkCounts,
    open: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    timer: tokio::task::JoinHandle<()>,
}

impl HeldSink {
    /// Greets the waiting and the coming sessions; true when the hold had
    /// already run out (the relay was let in before the load was ready).
    pub(crate) fn release(&self) -> bool {
        let overlapped = *self.open.borrow();
        self.timer.abort();
        let _ = self.open.send(true);
        overlapped
    }

    /// What it has accepted so far.
    pub(crate) fn counts(&self) -> SinkCounts {
        self.counts.clone()
    }
}

impl Drop for HeldSink {
    fn drop(&mut self) {
        self.timer.abort();
        self.server.abort();
    }
}

/// One sink session: 250 to everything, 354 to DATA, reads to the dot.
async fn sink_session(stream: TcpStream, counters: Arc<Counters>, mut open: watch::Receiver<bool>) {
    if open.wait_for(|open| *open).await.is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    if write
        .write_all(b"220 qs-bench sink ESMTP\r\n")
        .await
        .is_err()
    {
        return;
    }
    let mut line = Vec::new();
    let mut out = Vec::new();
    let mut recipients = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let verb = line
            .get(..4)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default();
        match verb.as_slice() {
            b"EHLO" => out.extend_from_slice(
                b"250-qs-bench sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
            ),
            b"RCPT" => {
                recipients += 1;
                out.extend_from_slice(b"250 2.1.5 Ok\r\n");
            }
            b"DATA" => {
                out.extend_from_slice(b"354 go ahead\r\n");
                if write.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
                loop {
                    line.clear();
                    if reader.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == b".\r\n" {
                        break;
                    }
                }
                counters.messages.fetch_add(1, Ordering::Relaxed);
                counters
                    .recipients
                    .fetch_add(std::mem::take(&mut recipients), Ordering::Relaxed);
                out.extend_from_slice(b"250 2.0.0 Ok: queued\r\n");
            }
            b"QUIT" => {
                let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
                return;
            }
            _ => out.extend_from_slice(b"250 2.0.0 Ok\r\n"),
        }
        // Answer once the client has nothing more pipelined.
        if reader.buffer().is_empty() && !out.is_empty() {
            if write.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// The smarthost address of a relay that can deliver to the sink.
pub(crate) fn sink_address(installation: &Installation) -> Result<SocketAddr, BenchError> {
    let relay = &installation.config.smtp_relay;
    let wrong = |what: &str| {
        BenchError::Usage(format!(
            "smtp-relay must deliver to the sink: set [smtp_relay] {what} in the config"
        ))
    };
    if relay.mode != qs_config::RelayMode::Smarthost {
        return Err(wrong("mode = \"smarthost\""));
    }
    if relay.tls != qs_config::ClientTls::None {
        return Err(wrong("tls = \"none\""));
    }
    if !relay.username.is_empty() {
        return Err(wrong("username = \"\" (the sink offers no AUTH)"));
    }
    relay
        .smarthost
        .parse()
        .map_err(|_| wrong("smarthost = \"127.0.0.1:PORT\" (an address the sink can listen on)"))
}

/// Runs `qs-bench relay`: binds the sink where the config's relay delivers.
pub async fn run(options: &RelayOptions) -> Result<RelayReport, BenchError> {
    let installation = Installation::load(&options.config)?;
    let sink = Sink::bind(sink_address(&installation)?).await?;
    run_with_sink(options, &installation, sink).await
}

/// Runs `qs-bench relay` with a sink already bound (the benchmark binds it on
/// port 0 before it writes the relay's config).
pub async fn run_with_sink(
    options: &RelayOptions,
    installation: &Installation,
    sink: Sink,
) -> Result<RelayReport, BenchError> {
    let sink_addr = check_sink(installation, &sink)?;
    let client = qs_service::queue::client(&installation.config)
        .map_err(|e| BenchError::Installation(e.to_string()))?;
    let baseline = queued(&client).await?;

    let held = sink.hold(&installation.config);
    let filled = Instant::now();
    fill(&client, options).await?;
    let queue_seconds = filled.elapsed().as_secs_f64();
    let fill_overlapped = held.release();
    let started = Instant::now();

    let counts = held.counts();
    let seconds = until_delivered(
        "messages",
        options.messages,
        || counts.messages(),
        &client,
        baseline,
        started,
        Duration::from_secs(options.within),
    )
    .await?;
    Ok(RelayReport {
        sink: sink_addr.to_string(),
        messages: options.messages,
        size: options.size,
        queue_seconds,
        fill_overlapped,
        received: counts.messages(),
        seconds: seconds.as_secs_f64(),
        delivered_per_second: per_second(options.messages, seconds),
        connections: counts.connections(),
    })
}

/// Checks that the installation's relay delivers to `sink`; its address.
pub(crate) fn check_sink(
    installation: &Installation,
    sink: &Sink,
) -> Result<SocketAddr, BenchError> {
    let sink_addr = sink.addr();
    if sink_address(installation)? != sink_addr {
        return Err(BenchError::Usage(format!(
            "smtp_relay.smarthost is not the sink's address {sink_addr}"
        )));
    }
    Ok(sink_addr)
}

/// How many messages core-queue holds.
pub(crate) async fn queued(client: &qs_queue::Client) -> Result<u64, BenchError> {
    Ok(client
        .stats()
        .await
        .map_err(|e| BenchError::Installation(format!("core-queue: {e}")))?
        .messages)
}

/// Queues the messages from `enqueuers` concurrent clients.
async fn fill(client: &qs_queue::Client, options: &RelayOptions) -> Result<(), BenchError> {
    let marker = crate::message::run_marker();
    let body = Arc::new(crate::message::build(
        &marker,
        0,
        &options.from,
        &options.to,
        options.size,
    ));
    let bar = crate::progress::bar(options.messages, "queued");
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..options.enqueuers.max(1) {
        let (client, body, next, bar) = (client.clone(), body.clone(), next.clone(), bar.clone());
        let (from, to, total) = (options.from.clone(), options.to.clone(), options.messages);
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                client
                    .enqueue(&from, vec![to.clone()], qs_queue::Origin::default(), &body)
                    .await
                    .map_err(|e| {
                        BenchError::Refused(format!("core-queue refused a message: {e}"))
                    })?;
                bar.inc(1);
            }
            Ok::<(), BenchError>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| BenchError::Usage(format!("an enqueuer stopped: {e}")))??;
    }
    bar.finish_and_clear();
    Ok(())
}

/// Waits for `count` (the sink's messages or recipients) to reach
/// `expected`, then for core-queue to hold no more than `baseline`; returns
/// the time since `started`.
pub(crate) async fn until_delivered(
    unit: &str,
    expected: u64,
    count: impl Fn() -> u64,
    client: &qs_queue::Client,
    baseline: u64,
    started: Instant,
    within: Duration,
) -> Result<Duration, BenchError> {
    let bar = crate::progress::bar(expected, "delivered");
    let (mut last, mut last_change) = (0, Instant::now());
    // The sink's counter is cheap to watch; a stats request reads every
    // queued envelope, so it is asked only at the end.
    loop {
        let now = count();
        bar.set_position(now.min(expected));
        if now >= expected {
            break;
        }
        if now != last {
            (last, last_change) = (now, Instant::now());
        } else if last_change.elapsed() > STALL {
            return Err(BenchError::Timeout(format!(
                "the sink got {now} of {expected} {unit} and nothing for {} s: is smtp-relay running?",
                STALL.as_secs()
            )));
        }
        if started.elapsed() > within {
            return Err(BenchError::Timeout(format!(
                "the sink got {now} of {expected} {unit} in {} s",
                within.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bar.finish_and_clear();
    loop {
        let held = queued(client).await?;
        if held <= baseline {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            return Err(BenchError::Timeout(format!(
                "core-queue still holds {} messages after {} s",
                held - baseline,
                within.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
