//! The daemon: workers that lease `outbound` jobs from core-queue, deliver
//! each job's recipients in batches (concurrently, within the pool's limits),
//! and report one result per recipient.
//!
//! A job is leased for longer than a delivery attempt may take: an attempt is
//! cut off after `connect_timeout_secs + 3 × command_timeout_secs`, and the
//! lease lasts a minute more. On SIGTERM the workers stop leasing; jobs in hand
//! get [`DRAIN_TIME`] to finish, then what is done is reported and the rest is
//! left due at once (or the job released when nothing was done).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use qs_config::{ClientTls, Config, RelayMode};
use qs_dkim::{KeyStore, Signing};
use qs_queue::{Client, Job, JobClass, JobRecipient, Outcome, QueueId, RecipientResult, Reply};
use qs_service::shutdown::Shutdown;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::RelayError;
use crate::client::{self, Body, Session, Settings, TlsMode};
use crate::dns::Dns;
use crate::message;
use crate::plan::{self, Batch, Destination};
use crate::pool::Pool;
use crate::reply;

/// How long jobs in hand may take to finish after a stop was asked for.
pub const DRAIN_TIME: Duration = Duration::from_secs(20);

/// Where outbound mail goes.
enum Mode {
    /// Everything to one host.
    Smarthost {
        host: String,
        port: u16,
        tls: TlsMode,
    },
    /// To each domain's MX.
    Direct { dns: Box<Dns>, port: u16 },
}

/// What every worker shares.
struct Shared {
    queue: Client,
    pool: Pool,
    mode: Mode,
    settings: Settings,
    max_per_transaction: usize,
    lease: Duration,
    deadline: Duration,
    /// The DKIM keys (`None` with `dkim = false`).
    dkim: Option<Arc<KeyStore>>,
}

/// One leased message, as the batches of its delivery see it.
struct Message {
    id: QueueId,
    sender: String,
    body: Vec<u8>,
    eight_bit: bool,
}

impl Shared {
    fn from_config(config: &Config) -> Result<Shared, RelayError> {
        let r = &config.smtp_relay;
        // A login belongs to the smarthost; MX hosts are never sent one.
        let credentials = if r.username.is_empty() || r.mode == RelayMode::Direct {
            None
        } else {
            match r.password.read() {
                Ok(Some(password)) => Some(Credentials::new(r.username.clone(), password)),
                Ok(None) => {
                    return Err(RelayError::Config(
                        "smtp_relay.username is set but neither password nor password_file is"
                            .into(),
                    ));
                }
                Err(e) => {
                    return Err(RelayError::Config(format!(
                        "cannot read smtp_relay.password_file: {e}"
                    )));
                }
            }
        };
        let mode = match r.mode {
            RelayMode::Smarthost => {
                let (host, port) = qs_config::split_host_port(&r.smarthost).ok_or_else(|| {
                    RelayError::Config(format!(
                        "smtp_relay.smarthost {:?} is not host:port",
                        r.smarthost
                    ))
                })?;
                let ca = match &r.tls_ca_file {
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        RelayError::Config(format!(
                            "cannot read smtp_relay.tls_ca_file {}: {e}",
                            path.display()
                        ))
                    })?),
                    None => None,
                };
                let params = || {
                    client::tls_parameters(&host, ca.as_deref(), r.tls_verify)
                        .map_err(|e| RelayError::Config(format!("smtp_relay TLS settings: {e}")))
                };
                let tls = match r.tls {
                    ClientTls::StartTls => TlsMode::Required(params()?),
                    ClientTls::Implicit => {
                        let (connector, name) =
                            client::implicit_tls(&host, ca.as_deref(), r.tls_verify).map_err(
                                |e| RelayError::Config(format!("smtp_relay TLS settings: {e}")),
                            )?;
                        TlsMode::Implicit(connector, name)
                    }
                    ClientTls::None => TlsMode::None,
                };
                if credentials.is_some() && matches!(tls, TlsMode::None) {
                    warn!(
                        "smtp_relay.tls = \"none\": the password goes to the smarthost unencrypted"
                    );
                }
                if !r.tls_verify && !matches!(tls, TlsMode::None) {
                    warn!(
                        "smtp_relay.tls_verify = false: the smarthost's certificate is not checked"
                    );
                }
                Mode::Smarthost { host, port, tls }
            }
            RelayMode::Direct => Mode::Direct {
                dns: Box::new(Dns::new(r.dns_server).map_err(RelayError::Config)?),
                port: r.mx_port,
            },
        };
        let dkim = if r.dkim {
            let keys = KeyStore::load(&r.dkim_dir)
                .map_err(|e| RelayError::Config(format!("smtp_relay.dkim_dir: {e}")))?;
            for key in keys.signing_keys() {
                info!(domain = %key.info.domain, selector = %key.info.selector, algorithm = %key.info.algorithm, "DKIM key");
            }
            for old in keys.older() {
                info!(domain = %old.domain, selector = %old.selector, "DKIM key kept but not signing: the domain has a newer one");
            }
            Some(Arc::new(keys))
        } else {
            None
        };
        let (connect_timeout, command_timeout) = (r.connect_timeout, r.command_timeout);
        let deadline = connect_timeout + command_timeout * 3;
        Ok(Shared {
            queue: qs_service::queue::client(config)?,
            pool: Pool::new(r.max_connections, r.max_connections_per_host, r.down_period),
            mode,
            settings: Settings {
                hello: ClientId::Domain(config.hostname.clone()),
                connect_timeout,
                command_timeout,
                credentials,
            },
            max_per_transaction: r.max_recipients_per_message,
            lease: deadline + Duration::from_secs(60),
            deadline,
            dkim,
        })
    }

    fn direct(&self) -> bool {
        matches!(self.mode, Mode::Direct { .. })
    }
}

/// Runs smtp-relay until `shutdown` fires, then lets the jobs in hand finish
/// (up to [`DRAIN_TIME`]) and closes the idle connections.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), RelayError> {
    let shared = Arc::new(Shared::from_config(&config)?);
    qs_service::runfile::write(&config.data_dir, "smtp-relay", &BTreeMap::new())
        .map_err(RelayError::RunFile)?;
    let workers = config.smtp_relay.max_connections.max(1);
    match &shared.mode {
        Mode::Smarthost { host, port, tls } => {
            info!(smarthost = %format!("{host}:{port}"), tls = ?tls, workers, "started")
        }
        Mode::Direct { port, .. } => info!(mode = "direct", port, workers, "started"),
    }
    let mut tasks = JoinSet::new();
    for n in 0..workers {
        tasks.spawn(worker(shared.clone(), n, shutdown.clone()));
    }
    let reaper = tokio::spawn(reap(shared.clone(), shutdown.clone()));
    while tasks.join_next().await.is_some() {}
    let _ = reaper.await;
    let closing: Vec<_> = shared
        .pool
        .drain()
        .into_iter()
        .map(|s| s.close(Duration::from_secs(2)))
        .collect();
    for close in closing {
        close.await;
    }
    qs_service::runfile::remove(&config.data_dir, "smtp-relay");
    info!("stopped");
    Ok(())
}

/// Closes idle connections that have waited too long.
async fn reap(shared: Arc<Shared>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait() => return,
        }
        for session in shared.pool.expired() {
            debug!(host = %session.host, "closing an idle connection");
            tokio::spawn(session.close(Duration::from_secs(5)));
        }
    }
}

/// Leases jobs one at a time and delivers them, until shutdown.
async fn worker(shared: Arc<Shared>, n: usize, shutdown: Shutdown) {
    let name = format!("smtp-relay/{}/{n}", std::process::id());
    qs_service::queue::lease_jobs(
        &shared.queue,
        &JobClass::outbound(),
        &name,
        shared.lease,
        &shutdown,
        |job| handle(&shared, job, &shutdown),
    )
    .await;
}

/// Delivers one job and reports its results.
async fn handle(shared: &Arc<Shared>, job: Job, shutdown: &Shutdown) {
    let id = job.id.clone();
    let class = job.class.clone();
    let token = job.token;
    if shutdown.is_fired() {
        release(shared, &id, &class, token).await;
        return;
    }
    let indices: Vec<u32> = job.recipients.iter().map(|r| r.index).collect();
    let results = Arc::new(Mutex::new(Vec::<RecipientResult>::new()));
    let mut delivering = Box::pin(deliver(shared.clone(), job, results.clone()));
    let mut stop = shutdown.clone();
    let ending = tokio::select! {
        () = &mut delivering => Ending::Done,
        _ = tokio::time::sleep(shared.deadline) => Ending::Deadline,
        () = async { stop.wait().await; tokio::time::sleep(DRAIN_TIME).await } => Ending::Stopped,
    };
    // Dropping the delivery aborts batches still under way.
    drop(delivering);
    let mut results = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    let missing: Vec<u32> = indices
        .iter()
        .copied()
        .filter(|i| !results.iter().any(|r| r.index == *i))
        .collect();
    match ending {
        Ending::Done | Ending::Deadline => {
            let why = match ending {
                Ending::Deadline => Reply::local(
                    "4.4.7",
                    &format!(
                        "delivery attempt took longer than {}s",
                        shared.deadline.as_secs()
                    ),
                ),
                _ => Reply::local("4.3.0", "delivery attempt ended without a result"),
            };
            if !missing.is_empty() {
                warn!(queue_id = %id, recipients = missing.len(), reason = %why, "no result");
            }
            results.extend(missing.into_iter().map(|index| RecipientResult {
                index,
                outcome: Outcome::TemporaryFailure { reply: why.clone() },
            }));
        }
        Ending::Stopped => {
            info!(queue_id = %id, unfinished = missing.len(), "stopping: unfinished recipients stay due");
            if results.is_empty() {
                release(shared, &id, &class, token).await;
                return;
            }
        }
    }
    if let Err(e) = shared.queue.complete(&id, &class, token, results).await {
        error!(queue_id = %id, error = %e, "cannot report results; the job returns when its lease ends");
    }
}

enum Ending {
    Done,
    Deadline,
    Stopped,
}

async fn release(shared: &Shared, id: &QueueId, class: &JobClass, token: qs_queue::LeaseToken) {
    if let Err(e) = shared.queue.release(id, class, token).await {
        warn!(queue_id = %id, error = %e, "cannot release the job; it returns when its lease ends");
    }
}

/// Delivers every recipient of `job`, pushing results as batches finish.
async fn deliver(shared: Arc<Shared>, job: Job, results: Arc<Mutex<Vec<RecipientResult>>>) {
    let push = |index: u32, outcome: Outcome| {
        results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(RecipientResult { index, outcome });
    };
    if let Err(e) = message::check_line_ends(&job.body) {
        error!(queue_id = %job.id, problem = %e, "the queued message is not CRLF-only; not sent");
        for r in &job.recipients {
            push(
                r.index,
                reply::permanent(
                    "5.6.0",
                    &format!("the message has {e} (queue id {}); it was not sent", job.id),
                ),
            );
        }
        return;
    }
    let (batches, unsendable) =
        plan::batches(shared.direct(), &job.recipients, shared.max_per_transaction);
    for u in unsendable {
        info!(queue_id = %job.id, to = %u.recipient.address, status = "bounced", reply = %u.reason, "delivery");
        push(
            u.recipient.index,
            Outcome::PermanentFailure { reply: u.reason },
        );
    }
    let body = match &shared.dkim {
        Some(keys) => dkim_sign(keys.clone(), &job.id, job.body).await,
        None => job.body,
    };
    let message = Arc::new(Message {
        id: job.id,
        sender: job.sender,
        eight_bit: message::is_8bit(&body),
        body,
    });
    let mut tasks = JoinSet::new();
    for batch in batches {
        tasks.spawn(deliver_batch(shared.clone(), message.clone(), batch));
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(list) => {
                for r in list {
                    push(r.index, r.outcome);
                }
            }
            Err(e) => error!(queue_id = %message.id, error = %e, "a delivery task failed"),
        }
    }
}

/// The message with a `DKIM-Signature` field at the top when its From
/// domain has a key; unchanged otherwise. Signed on the blocking pool: the
/// body hash and an RSA signature take a while for a large message.
async fn dkim_sign(keys: Arc<KeyStore>, id: &QueueId, body: Vec<u8>) -> Vec<u8> {
    let body = Arc::new(body);
    let signing = {
        let body = body.clone();
        tokio::task::spawn_blocking(move || keys.sign(&body)).await
    };
    // The signing task has let go of its reference, finished or not.
    let body = Arc::try_unwrap(body).unwrap_or_else(|shared| (*shared).clone());
    match signing {
        Ok(Signing::Signed {
            header,
            domain,
            selector,
        }) => {
            debug!(queue_id = %id, domain = %domain, selector = %selector, "DKIM-signed");
            let mut signed = Vec::with_capacity(header.len() + body.len());
            signed.extend_from_slice(header.as_bytes());
            signed.extend_from_slice(&body);
            signed
        }
        Ok(Signing::NoKey { from_domain }) => {
            debug!(queue_id = %id, from_domain = %from_domain, "no DKIM key for the From domain: sent unsigned");
            body
        }
        Ok(Signing::NoFromDomain { reason }) => {
            debug!(queue_id = %id, reason, "no single From domain: sent unsigned");
            body
        }
        Ok(Signing::Failed {
            domain,
            selector,
            reason,
        }) => {
            warn!(queue_id = %id, domain = %domain, selector = %selector, error = %reason, "DKIM signing failed: sent unsigned");
            body
        }
        Err(e) => {
            error!(queue_id = %id, error = %e, "DKIM signing task failed: sent unsigned");
            body
        }
    }
}

/// One transaction's worth of recipients to one destination.
async fn deliver_batch(
    shared: Arc<Shared>,
    message: Arc<Message>,
    batch: Batch,
) -> Vec<RecipientResult> {
    let key = batch.destination.key().to_string();
    let addresses: Vec<&str> = batch
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    let _permit = shared.pool.permit(&key).await;
    let body = Body {
        payload: message::data_payload(&message.body),
        eight_bit: message.eight_bit,
        size: message.body.len(),
    };
    let mut pooled = shared.pool.take_idle(&key);
    let (outcomes, host) = loop {
        let reused = pooled.is_some();
        let mut session = match pooled.take() {
            Some(session) => session,
            None => match connect(&shared, &batch.destination).await {
                Ok(session) => session,
                Err((outcome, host)) => break (vec![outcome; addresses.len()], host),
            },
        };
        let report = session
            .send(
                &message.sender,
                &addresses,
                body,
                shared.settings.command_timeout,
            )
            .await;
        if report.stale && reused {
            debug!(host = %session.host, "a kept connection was closed by the server; connecting again");
            continue;
        }
        let host = session.host.clone();
        if report.reusable
            && let Some(extra) = shared.pool.put_idle(&key, session)
        {
            tokio::spawn(extra.close(Duration::from_secs(5)));
        }
        break (report.outcomes, host);
    };
    log_attempt(&message.id, &batch.recipients, &host, &outcomes);
    batch
        .recipients
        .iter()
        .zip(outcomes)
        .map(|(r, outcome)| RecipientResult {
            index: r.index,
            outcome,
        })
        .collect()
}

/// A connection to `destination`, trying its hosts in order and skipping
/// those marked down. `Err` has the outcome for the batch and the host that
/// failed last.
async fn connect(shared: &Shared, destination: &Destination) -> Result<Session, (Outcome, String)> {
    let (targets, tls): (Vec<(String, Vec<SocketAddr>)>, &TlsMode) =
        match (&shared.mode, destination) {
            (Mode::Smarthost { host, port, tls }, _) => {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(addrs) => (vec![(host.clone(), addrs.collect())], tls),
                    Err(e) => {
                        return Err((
                            reply::temporary(
                                "4.4.3",
                                &format!("cannot resolve the smarthost {host}: {e}"),
                            ),
                            host.clone(),
                        ));
                    }
                }
            }
            (Mode::Direct { dns, port }, Destination::Domain(domain)) => {
                let targets = dns
                    .targets(domain)
                    .await
                    .map_err(|outcome| (outcome, domain.clone()))?;
                let targets = targets
                    .into_iter()
                    .map(|t| {
                        let addrs = t
                            .addrs
                            .iter()
                            .map(|ip| SocketAddr::new(*ip, *port))
                            .collect();
                        (t.name, addrs)
                    })
                    .collect();
                (targets, &TlsMode::Opportunistic)
            }
            (Mode::Direct { .. }, Destination::Smarthost) => {
                return Err((
                    reply::temporary("4.3.5", "no smarthost in direct mode"),
                    "none".into(),
                ));
            }
        };
    let mut last: Option<(Reply, String)> = None;
    let mut skipped = Vec::new();
    for (name, addrs) in &targets {
        for addr in addrs {
            let label = client::host_label(name, *addr);
            if let Some(reason) = shared.pool.down_reason(*addr) {
                debug!(host = %label, "skipped: marked down");
                skipped.push(format!("{label} ({reason})"));
                continue;
            }
            match client::open(*addr, name, tls, &shared.settings).await {
                Ok(session) => {
                    debug!(host = %session.host, encrypted = session.encrypted, "connected");
                    return Ok(session);
                }
                Err(e) => {
                    info!(host = %label, reply = %e.reply, "connection failed");
                    if e.unreachable {
                        shared.pool.mark_down(*addr, &e.reply.to_string());
                    }
                    last = Some((e.reply, label));
                }
            }
        }
    }
    match last {
        Some((reply, host)) => Err((Outcome::TemporaryFailure { reply }, host)),
        None if skipped.is_empty() => Err((
            reply::temporary(
                "4.4.4",
                &format!("no address to connect to for {destination}"),
            ),
            destination.to_string(),
        )),
        None => Err((
            reply::temporary(
                "4.4.1",
                &format!(
                    "not tried, marked down for {}s after a failed connection: {}",
                    shared.pool.down_period().as_secs(),
                    skipped.join("; ")
                ),
            ),
            destination.to_string(),
        )),
    }
}

/// One log line per distinct result of an attempt: queue id, recipients,
/// host, status and reply.
fn log_attempt(id: &QueueId, recipients: &[JobRecipient], host: &str, outcomes: &[Outcome]) {
    let mut groups: Vec<(&Outcome, Vec<&str>)> = Vec::new();
    for (r, outcome) in recipients.iter().zip(outcomes) {
        match groups.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, list)) => list.push(&r.address),
            None => groups.push((outcome, vec![&r.address])),
        }
    }
    for (outcome, to) in groups {
        info!(
            queue_id = %id,
            to = %to.join(","),
            relay = %host,
            status = %reply::status_word(outcome),
            reply = %outcome.reply(),
            "delivery"
        );
    }
}
