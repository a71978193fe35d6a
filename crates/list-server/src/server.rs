//! The daemon: workers that lease `list` jobs from core-queue and act on each
//! recipient (a post, a command, mail for the owners, a bounce), the loop
//! that carries out moderators' decisions on held posts, and the actions the
//! web page shares with mail (confirmations, one-click unsubscription).
//!
//! Durability: a job is completed only after everything it caused is in the
//! queue (each copy of a post, each notice) or on disk (a held post, a list
//! change). Copies are queued with request keys derived from the job, so a
//! job offered again after a crash queues nothing twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use qs_config::Config;
use qs_directory::lists::ListIndex;
use qs_directory::mailing_list::{Decision, HeldPost, ListError, ListStore, MailingList};
use qs_queue::message;
use qs_queue::{
    Client, ClientError, Job, JobClass, JobRecipient, Origin, Outcome, RecipientResult,
};
use qs_service::shutdown::Shutdown;
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::ListServerError;
use crate::bounce;
use crate::commands::{self, Command};
use crate::headers::{self, Prepared, Unsubscribe};
use crate::notice::{self, Notice};
use crate::policy::{self, Verdict};
use crate::token::{Action, Signer, Token, TokenError};
use crate::verp::{self, Tag};

/// How long a job is leased: a fan-out to 10,000 members takes seconds.
const LEASE: Duration = Duration::from_secs(300);
/// How often held posts are looked at (decisions also wake the loop).
const HELD_SCAN: Duration = Duration::from_secs(5);
/// Workers leasing list jobs.
const WORKERS: usize = 4;
/// Copies of one post being queued at once.
const FANOUT_CONCURRENCY: usize = 16;
/// The queue's state namespace where used tokens are recorded.
const USED_TOKENS: &str = "list-tokens";
/// The queue's state namespace where the time of the last confirmation
/// request of each list and address (`LIST/ADDRESS`) is recorded.
const CONFIRMATIONS_ASKED: &str = "list-confirmations";
/// A bounce older than this many days no longer adds to a member's score.
const BOUNCE_MEMORY_DAYS: u64 = 30;

/// What every worker and the web page share.
pub struct Shared {
    /// core-queue.
    pub queue: Client,
    /// The lists.
    pub lists: ListStore,
    /// Signs and checks tokens.
    pub signer: Signer,
    /// `hostname` of the config.
    pub hostname: String,
    /// The web page's public address, without a final `/`.
    pub web_url: String,
    bounce_threshold: u32,
    hold_expiry_secs: u64,
    confirm_expiry_secs: u64,
    unsubscribe_secs: u64,
    /// After a confirmation request, no other for the same list and address.
    confirm_window_secs: u64,
    /// How long the web page's subscription form stays valid.
    pub form_expiry_secs: u64,
    /// Serialises the check-then-record of used tokens.
    claims: Mutex<()>,
    /// Serialises the check-then-record of confirmation requests.
    confirmations: Mutex<()>,
    /// Wakes the held-posts loop when a decision is taken.
    pub held_changed: Notify,
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// The token is forged, expired or used.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The list refused the change (unknown list, not a member …).
    #[error(transparent)]
    List(#[from] ListError),
    /// core-queue could not be reached: try again later.
    #[error("the mail queue is unavailable: {0}")]
    Queue(#[from] ClientError),
}

impl ActionError {
    /// True when trying again later may work.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            ActionError::Queue(_) | ActionError::List(ListError::Store(_))
        )
    }
}

/// What asking for a confirmation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The confirmation request is queued, or nothing needed confirming (the
    /// answer is the same, so it tells nothing of membership).
    Sent,
    /// One was asked for this list and address within `confirm_window_secs`:
    /// nothing was sent.
    AlreadySent {
        /// Seconds until another may be asked for.
        retry_after_secs: u64,
    },
}

/// What an address of a list is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Post,
    Request,
    Owner,
    Bounces,
}

impl Shared {
    /// Everything from the config; creates the key file when missing.
    pub fn from_config(config: &Config) -> Result<Shared, ListServerError> {
        let lists = ListStore::new(config.data_path("lists"));
        let signer = Signer::load_or_create(&lists.folder().join(".secret"))
            .map_err(|e| ListServerError::Secret(e.to_string()))?;
        let l = &config.list_server;
        Ok(Shared {
            queue: qs_service::queue::client(config)?,
            lists,
            signer,
            hostname: config.hostname.clone(),
            web_url: l.web_url.clone(),
            bounce_threshold: l.bounce_threshold,
            hold_expiry_secs: l.hold_expiry_days * 86_400,
            confirm_expiry_secs: l.confirm_expiry_days * 86_400,
            unsubscribe_secs: l.unsubscribe_link_days * 86_400,
            confirm_window_secs: l.confirm_window_secs,
            form_expiry_secs: l.web_form_expiry_secs,
            claims: Mutex::new(()),
            confirmations: Mutex::new(()),
            held_changed: Notify::new(),
        })
    }

    /// Queues an automatic message from `<>`; `key` makes it exactly-once.
    async fn send_notice(&self, key: &str, n: &Notice<'_>) -> Result<(), ClientError> {
        if n.to.is_empty() {
            return Ok(());
        }
        let bytes = notice::build(&self.hostname, n, qs_queue::unix_now());
        self.queue
            .enqueue_with_key(key, "", n.to.to_vec(), origin(), &bytes)
            .await
            .map(|_| ())
    }

    /// A notice from the list's request address.
    async fn reply(
        &self,
        key: &str,
        list: &MailingList,
        to: &[String],
        subject: &str,
        body: &str,
    ) -> Result<(), ClientError> {
        let request = list.companion("request");
        self.send_notice(
            key,
            &Notice {
                from: &request,
                from_name: list.display_title(),
                to,
                reply_to: Some(&request),
                subject,
                body,
                list: &list.address,
                attach: None,
            },
        )
        .await
    }

    /// A notice to the owners, with an attachment when given.
    async fn tell_owners(
        &self,
        key: &str,
        list: &MailingList,
        subject: &str,
        body: &str,
        attach: Option<&[u8]>,
    ) -> Result<(), ClientError> {
        let owner = list.companion("owner");
        self.send_notice(
            key,
            &Notice {
                from: &owner,
                from_name: list.display_title(),
                to: &list.owners,
                reply_to: None,
                subject,
                body,
                list: &list.address,
                attach,
            },
        )
        .await
    }

    /// Records a token as used; refused when it already was.
    async fn claim(&self, token: &Token) -> Result<(), ActionError> {
        let _guard = self.claims.lock().await;
        if self.used(token).await? {
            return Err(TokenError::Used.into());
        }
        self.queue
            .state_put(
                USED_TOKENS,
                &token.nonce,
                token.expires.to_string().as_bytes(),
            )
            .await?;
        Ok(())
    }

    /// Checks a token for `list` (any list when `None`) without using it.
    pub fn check(&self, token: &str, list: Option<&str>) -> Result<Token, ActionError> {
        let t = self.signer.verify(token, qs_queue::unix_now())?;
        if list.is_some_and(|l| !l.eq_ignore_ascii_case(&t.list)) {
            return Err(TokenError::Invalid.into());
        }
        Ok(t)
    }

    /// Checks a token as [`check`](Self::check) does, and that it has not been
    /// used yet: a page that offers to carry a token out must not offer a
    /// button that can only fail.
    pub async fn check_unused(
        &self,
        token: &str,
        list: Option<&str>,
    ) -> Result<Token, ActionError> {
        let t = self.check(token, list)?;
        if self.used(&t).await? {
            return Err(TokenError::Used.into());
        }
        Ok(t)
    }

    /// Whether a token was carried out already.
    async fn used(&self, token: &Token) -> Result<bool, ActionError> {
        Ok(self
            .queue
            .state_get(USED_TOKENS, &token.nonce)
            .await?
            .is_some())
    }

    /// Sends a confirmation request for `action` on `address`, or nothing
    /// when there is nothing to confirm (already a member, or not one); the
    /// answer is the same either way, so the page reveals no membership.
    /// At most one request per list and address is sent within
    /// `confirm_window_secs`, so nobody can have the list mail an address
    /// over and over; the window starts even when nothing was sent, for the
    /// same reason as the answer.
    pub async fn request_confirmation(
        &self,
        list: &MailingList,
        address: &str,
        action: Action,
    ) -> Result<Requested, ActionError> {
        let address = qs_directory::mailing_list::check_address(address)?;
        let _guard = self.confirmations.lock().await;
        let now = qs_queue::unix_now();
        let asked_key = format!("{}/{address}", list.address);
        if let Some(asked) = self
            .queue
            .state_get(CONFIRMATIONS_ASKED, &asked_key)
            .await?
        {
            let asked: u64 = String::from_utf8_lossy(&asked).parse().unwrap_or(0);
            let window_end = asked.saturating_add(self.confirm_window_secs);
            if now < window_end {
                info!(list = %list.address, member = %address, "confirmation asked again within the window: nothing sent");
                return Ok(Requested::AlreadySent {
                    retry_after_secs: window_end - now,
                });
            }
        }
        self.send_confirmation(list, &address, action).await?;
        self.queue
            .state_put(CONFIRMATIONS_ASKED, &asked_key, now.to_string().as_bytes())
            .await?;
        Ok(Requested::Sent)
    }

    /// Queues the confirmation request itself, when there is something to confirm.
    async fn send_confirmation(
        &self,
        list: &MailingList,
        address: &str,
        action: Action,
    ) -> Result<(), ActionError> {
        let member = list.member(address).is_some();
        let (verb, needed) = match action {
            Action::Subscribe => ("subscribe", !member),
            _ => ("unsubscribe", member),
        };
        if !needed {
            return Ok(());
        }
        let expires = qs_queue::unix_now() + self.confirm_expiry_secs;
        let token = self.signer.make(action, &list.address, address, expires);
        let body = format!(
            "Someone, perhaps you, asked to {verb} {address} {} the list {} ({}).\n\n\
             To confirm, reply to this message without changing its subject,\n\
             or open this page and press the button:\n\n  {}/confirm/{token}\n\n\
             If you did not ask for this, ignore this message: nothing will change.\n",
            if action == Action::Subscribe {
                "to"
            } else {
                "from"
            },
            list.address,
            list.display_title(),
            self.web_url,
        );
        let key = format!("list-confirm:{}", token_key(&token));
        self.reply(
            &key,
            list,
            &[address.to_string()],
            &format!("confirm {token}"),
            &body,
        )
        .await?;
        Ok(())
    }

    /// Carries out a confirmation or one-click token (once); returns what
    /// was done, for the page or the reply.
    pub async fn confirm(&self, token: &str, list: Option<&str>) -> Result<String, ActionError> {
        let t = self.check(token, list)?;
        match t.action {
            Action::Subscribe | Action::Unsubscribe | Action::OneClick => {}
            Action::Moderate | Action::Form => return Err(TokenError::Invalid.into()),
        }
        self.claim(&t).await?;
        let key = format!("list-token:{}", t.nonce);
        if t.action == Action::Subscribe {
            self.add_member(&t.list, &t.subject, "", &key).await?;
            Ok(format!("{} is now a member of {}.", t.subject, t.list))
        } else {
            self.remove_member(&t.list, &t.subject, &key).await?;
            Ok(format!("{} has left {}.", t.subject, t.list))
        }
    }

    /// Adds a member and sends the welcome text.
    pub async fn add_member(
        &self,
        list: &str,
        address: &str,
        name: &str,
        key: &str,
    ) -> Result<(), ActionError> {
        let list = self.lists.update(list, |l| {
            if l.member(address).is_none() {
                l.add_member(address, name)?;
            }
            Ok(l.clone())
        })?;
        info!(list = %list.address, member = address, "subscribed");
        let welcome = if list.settings.welcome.is_empty() {
            format!(
                "Welcome to {} ({}).\n\nTo post, write to {}.\nTo leave, write \"unsubscribe\" to {}.\n",
                list.display_title(),
                list.address,
                list.address,
                list.companion("request")
            )
        } else {
            list.settings.welcome.clone()
        };
        self.reply(
            &format!("{key}:welcome"),
            &list,
            &[address.to_lowercase()],
            &format!("Welcome to {}", list.display_title()),
            &welcome,
        )
        .await?;
        Ok(())
    }

    /// Removes a member and sends the farewell text.
    pub async fn remove_member(
        &self,
        list: &str,
        address: &str,
        key: &str,
    ) -> Result<(), ActionError> {
        let list = self.lists.update(list, |l| {
            l.remove_member(address)?;
            Ok(l.clone())
        })?;
        info!(list = %list.address, member = address, "unsubscribed");
        let farewell = if list.settings.farewell.is_empty() {
            format!(
                "You have left {} ({}).\n",
                list.display_title(),
                list.address
            )
        } else {
            list.settings.farewell.clone()
        };
        self.reply(
            &format!("{key}:farewell"),
            &list,
            &[address.to_lowercase()],
            &format!("You have left {}", list.display_title()),
            &farewell,
        )
        .await?;
        Ok(())
    }

    /// Records a moderator's decision carried by a token (once).
    pub async fn moderate(
        &self,
        token: &str,
        list: Option<&str>,
        decision: Decision,
    ) -> Result<String, ActionError> {
        let t = self.check(token, list)?;
        if t.action != Action::Moderate {
            return Err(TokenError::Invalid.into());
        }
        // Check the post exists before using up the token.
        self.lists.held_post(&t.list, &t.subject)?;
        self.claim(&t).await?;
        self.lists.decide(&t.list, &t.subject, decision)?;
        self.held_changed.notify_one();
        Ok(match decision {
            Decision::Approve => format!(
                "The post {} is approved and goes to the members.",
                t.subject
            ),
            Decision::Reject => format!("The post {} is rejected.", t.subject),
        })
    }

    /// Queues the copies of an accepted post: one per batch of at most
    /// `max_recipients` members, in member order; a copy for a single
    /// member is personal (its bounce address and one-click link name the
    /// member). Returns (members, copies). `key` identifies the post.
    pub async fn fan_out(
        &self,
        list: &MailingList,
        bytes: &[u8],
        poster: &[&str],
        key: &str,
    ) -> Result<(usize, usize), ClientError> {
        let recipients: Vec<&str> = list
            .members
            .iter()
            .filter(|m| !m.suspended)
            .filter(|m| m.own_copy || !poster.iter().any(|p| p.eq_ignore_ascii_case(&m.address)))
            .map(|m| m.address.as_str())
            .collect();
        let batches = batches(&recipients, list.settings.max_recipients as usize);
        let now = qs_queue::unix_now();
        let prepared = Prepared::new(list, bytes, &self.web_url);
        let shared_copy = Arc::new(prepared.render(Unsubscribe::Page));
        let batch_sender = verp::batch_address(&self.signer, list, now / 86_400);
        let limit = Arc::new(Semaphore::new(FANOUT_CONCURRENCY));
        let mut tasks = JoinSet::new();
        for (i, batch) in batches.iter().enumerate() {
            let (sender, body) = if let [only] = batch[..] {
                let token = self.signer.make(
                    Action::OneClick,
                    &list.address,
                    only,
                    now + self.unsubscribe_secs,
                );
                (
                    verp::member_address(&self.signer, list, only),
                    Arc::new(prepared.render(Unsubscribe::OneClick(&token))),
                )
            } else {
                (batch_sender.clone(), shared_copy.clone())
            };
            let to: Vec<String> = batch.iter().map(|a| a.to_string()).collect();
            let queue = self.queue.clone();
            let key = format!("list-post:{key}:{i}");
            let limit = limit.clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                queue
                    .enqueue_with_key(&key, &sender, to, origin(), &body)
                    .await
            });
        }
        let mut failure = None;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => failure = Some(e),
                Err(e) => {
                    failure = Some(ClientError::Protocol(format!("a fan-out task failed: {e}")))
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if list.settings.archive {
            self.archive(list, key, bytes);
        }
        Ok((recipients.len(), batches.len()))
    }

    /// Keeps a copy of an accepted post under `.archive/<list>/`.
    fn archive(&self, list: &MailingList, key: &str, bytes: &[u8]) {
        let folder = self.lists.folder().join(".archive").join(&list.address);
        let name: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let written = std::fs::create_dir_all(&folder)
            .and_then(|()| std::fs::write(folder.join(format!("{name}.eml")), bytes));
        if let Err(e) = written {
            warn!(list = %list.address, error = %e, "cannot archive a post");
        }
    }
}

/// Splits `members` into batches of at most `max` (at least 1), in order.
pub fn batches<'a>(members: &[&'a str], max: usize) -> Vec<Vec<&'a str>> {
    members.chunks(max.max(1)).map(<[&str]>::to_vec).collect()
}

fn origin() -> Origin {
    Origin {
        module: "list-server".into(),
        peer: None,
        auth_user: None,
    }
}

/// A short request key for a token (its signature part is unique).
fn token_key(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

/// Runs list-server until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), ListServerError> {
    let shared = Arc::new(Shared::from_config(&config)?);
    let web_listen = config.list_server.web_listen;
    let listener = qs_service::listen::bind_all("list_server.web_listen", &[web_listen])
        .await?
        .pop()
        .ok_or_else(|| {
            ListServerError::Listen(web_listen, std::io::Error::other("nothing was bound"))
        })?;
    qs_service::listen::close_unclaimed();
    let bound = listener
        .local_addr()
        .map_err(|e| ListServerError::Listen(web_listen, e))?;
    let mut listeners = BTreeMap::new();
    listeners.insert("list_server.web_listen".to_string(), vec![bound]);
    qs_service::runfile::write(&config.data_dir, "list-server", &listeners)
        .map_err(ListServerError::RunFile)?;
    info!(web = %bound, url = %shared.web_url, "started");
    let mut tasks = JoinSet::new();
    for n in 0..WORKERS {
        tasks.spawn(worker(shared.clone(), n, shutdown.clone()));
    }
    tasks.spawn(held_loop(shared.clone(), shutdown.clone()));
    tasks.spawn(crate::web::serve(
        listener,
        shared.clone(),
        crate::web::WebLimits::from_config(&config.list_server),
        shutdown.clone(),
    ));
    while tasks.join_next().await.is_some() {}
    qs_service::runfile::remove(&config.data_dir, "list-server");
    info!("stopped");
    Ok(())
}

/// Leases list jobs one at a time and handles them, until shutdown. A job in
/// hand is finished even during shutdown: its work is short and keyed, so
/// finishing beats redoing.
async fn worker(shared: Arc<Shared>, n: usize, shutdown: Shutdown) {
    let name = format!("list-server/{}/{n}", std::process::id());
    qs_service::queue::lease_jobs(
        &shared.queue,
        &JobClass::list(),
        &name,
        LEASE,
        &shutdown,
        |job| handle(&shared, job),
    )
    .await;
}

/// Handles every recipient of a job and reports the results.
async fn handle(shared: &Shared, job: Job) {
    let mut results = Vec::with_capacity(job.recipients.len());
    for r in &job.recipients {
        let outcome = match recipient(shared, &job, r).await {
            Ok(reply) => {
                info!(queue_id = %job.id, rcpt = %r.address, result = %reply, "done");
                Outcome::Delivered { reply }
            }
            Err(Failure::Temporary(reply)) => {
                warn!(queue_id = %job.id, rcpt = %r.address, reply = %reply, "will try again");
                Outcome::TemporaryFailure { reply }
            }
            Err(Failure::Permanent(reply)) => {
                info!(queue_id = %job.id, rcpt = %r.address, reply = %reply, "refused");
                Outcome::PermanentFailure { reply }
            }
        };
        results.push(RecipientResult {
            index: r.index,
            outcome,
        });
    }
    if let Err(e) = shared
        .queue
        .complete(&job.id, &job.class, job.token, results)
        .await
    {
        // The lease runs out and the job comes back; its keyed copies are
        // not queued again.
        error!(queue_id = %job.id, error = %e, "cannot report list results");
    }
}

/// Why a recipient was not handled.
enum Failure {
    Temporary(String),
    Permanent(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Temporary(format!("451 4.3.0 mail queue unavailable: {e}"))
    }
}

impl From<ActionError> for Failure {
    fn from(e: ActionError) -> Failure {
        if e.is_temporary() {
            Failure::Temporary(format!("451 4.3.0 {e}"))
        } else {
            Failure::Permanent(format!("550 5.0.0 {e}"))
        }
    }
}

impl From<ListError> for Failure {
    fn from(e: ListError) -> Failure {
        ActionError::from(e).into()
    }
}

/// Finds the list and the role of an address.
fn classify(shared: &Shared, address: &str) -> Option<(MailingList, Target)> {
    let address = address.to_lowercase();
    let list_address = ListIndex::new(shared.lists.folder()).list_for(&address)?;
    let list = shared.lists.load(&list_address).ok()?;
    let local = address.rsplit_once('@').map_or("", |(l, _)| l);
    let name = list.name();
    let target = if local == name {
        Target::Post
    } else if local == format!("{name}-request") {
        Target::Request
    } else if local == format!("{name}-owner") {
        Target::Owner
    } else {
        Target::Bounces
    };
    Some((list, target))
}

async fn recipient(shared: &Shared, job: &Job, r: &JobRecipient) -> Result<String, Failure> {
    let Some((list, target)) = classify(shared, &r.address) else {
        return Err(Failure::Permanent(format!(
            "550 5.1.1 <{}>: no such list",
            r.address
        )));
    };
    let key = format!("{}.{}", job.id, r.index);
    match target {
        Target::Post => post(shared, &list, job, &key).await,
        Target::Request => request(shared, &list, job, &key).await,
        Target::Owner => to_owners(shared, &list, job, &key).await,
        Target::Bounces => bounced(shared, &list, &r.address, &job.body, &key).await,
    }
}

/// The From field's address, lowercase ("" when there is none).
fn from_address(bytes: &[u8]) -> String {
    message::values(bytes, "From")
        .first()
        .map(|v| message::bare_address(v).to_lowercase())
        .unwrap_or_default()
}

async fn post(
    shared: &Shared,
    list: &MailingList,
    job: &Job,
    key: &str,
) -> Result<String, Failure> {
    let bytes = &job.body;
    if headers::is_loop(list, bytes) {
        shared
            .tell_owners(
                &format!("list-loop:{key}"),
                list,
                &format!("A message came back to {}", list.address),
                &format!(
                    "This message already went through {} (it carries the list's List-Id or X-Loop),\n\
                     so it was not sent to the members again. A list among the members, or a\n\
                     member forwarding to the list, makes such a loop.\n",
                    list.address
                ),
                Some(bytes),
            )
            .await?;
        return Ok("250 2.0.0 a loop: sent to the owners only".into());
    }
    let from = from_address(bytes);
    let sender = job.sender.to_lowercase();
    match policy::judge(list, &sender, &from) {
        Verdict::Accept => {
            let (members, copies) = shared.fan_out(list, bytes, &[&sender, &from], key).await?;
            Ok(format!(
                "250 2.0.0 sent to {members} members in {copies} messages"
            ))
        }
        Verdict::Reject(reason) => Err(Failure::Permanent(format!("550 5.7.1 {reason}"))),
        Verdict::Hold(reason) => {
            hold(shared, list, job, key, &from, &reason).await?;
            Ok(format!("250 2.0.0 held for moderation: {reason}"))
        }
    }
}

async fn hold(
    shared: &Shared,
    list: &MailingList,
    job: &Job,
    key: &str,
    from: &str,
    reason: &str,
) -> Result<(), Failure> {
    let id: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let subject = message::values(&job.body, "Subject")
        .into_iter()
        .next()
        .unwrap_or_default();
    let notify_sender = !headers::is_automatic(&job.sender, &job.body);
    let post = HeldPost {
        id: id.clone(),
        list: list.address.clone(),
        sender: job.sender.to_lowercase(),
        from: from.to_string(),
        subject: subject.clone(),
        reason: reason.to_string(),
        received_at: job.received_at,
        notify_sender,
    };
    shared.lists.hold(&post, &job.body)?;
    let expires = job.received_at + shared.hold_expiry_secs;
    let token = shared
        .signer
        .make(Action::Moderate, &list.address, &id, expires);
    let mut moderators: Vec<String> = list.owners.clone();
    for m in &list.moderators {
        if !moderators.iter().any(|o| o.eq_ignore_ascii_case(m)) {
            moderators.push(m.clone());
        }
    }
    let body = format!(
        "A post to {} is held for your approval.\n\n  From:    {from}\n  Sender:  {}\n  Subject: {subject}\n  Reason:  {reason}\n\n\
         To approve it, reply to this message (its subject starts with \"approve\").\n\
         To reject it, send \"reject {token}\" to {}.\n\
         Or decide on the web page:\n\n  {}/moderate/{token}\n\n\
         Without a decision it is dropped after {} days. The post is attached.\n",
        list.address,
        if job.sender.is_empty() {
            "<>"
        } else {
            &job.sender
        },
        list.companion("request"),
        shared.web_url,
        shared.hold_expiry_secs / 86_400,
    );
    let request = list.companion("request");
    shared
        .send_notice(
            &format!("list-held:{key}"),
            &Notice {
                from: &request,
                from_name: list.display_title(),
                to: &moderators,
                reply_to: Some(&request),
                subject: &format!("approve {token}"),
                body: &body,
                list: &list.address,
                attach: Some(&job.body),
            },
        )
        .await?;
    if notify_sender {
        shared
            .reply(
                &format!("list-held-sender:{key}"),
                list,
                std::slice::from_ref(&job.sender),
                &format!("Your post to {} awaits approval", list.address),
                &format!(
                    "Your message \"{subject}\" to {} is held for a moderator: {reason}.\n\
                     You will hear again if it is rejected.\n",
                    list.address
                ),
            )
            .await?;
    }
    info!(queue_id = %job.id, list = %list.address, held = %id, reason, "held");
    Ok(())
}

async fn request(
    shared: &Shared,
    list: &MailingList,
    job: &Job,
    key: &str,
) -> Result<String, Failure> {
    let sender = job.sender.to_lowercase();
    if headers::is_automatic(&sender, &job.body) {
        return Ok("250 2.0.0 automatic mail: no commands read".into());
    }
    let parsed = mail_parser::MessageParser::default().parse(&job.body);
    let subject = parsed
        .as_ref()
        .and_then(|m| m.subject())
        .map(str::to_string);
    let body = parsed
        .as_ref()
        .and_then(|m| m.body_text(0))
        .map(|b| b.into_owned())
        .unwrap_or_default();
    let req = commands::parse(subject.as_deref(), &body);
    let mut answers: Vec<String> = req.errors.iter().map(|e| format!("Error: {e}")).collect();
    let owner = list.is_owner(&sender);
    for (i, command) in req.commands.iter().enumerate() {
        let ckey = format!("{key}:{i}");
        let answer = match command {
            Command::Help => Some(help(list, &shared.web_url)),
            Command::Who if owner => {
                let current = shared.lists.load(&list.address)?;
                let mut text = format!(
                    "{} members of {}:\n",
                    current.members.len(),
                    current.address
                );
                for m in &current.members {
                    text.push_str(&format!(
                        "  {}{}{}\n",
                        m.address,
                        if m.name.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", m.name)
                        },
                        if m.suspended { " [suspended]" } else { "" }
                    ));
                }
                Some(text)
            }
            Command::Who => Some("who: only the list's owners may see the members.".into()),
            Command::Subscribe(target) | Command::Unsubscribe(target) => {
                let subscribe = matches!(command, Command::Subscribe(_));
                let target = target.clone().unwrap_or_else(|| sender.clone());
                let is_self = target.eq_ignore_ascii_case(&sender);
                let verb = if subscribe {
                    "subscribe"
                } else {
                    "unsubscribe"
                };
                if !is_self && !owner {
                    Some(format!(
                        "{verb} {target}: only the list's owners may name another address."
                    ))
                } else if owner || !list.settings.confirm_subscriptions {
                    let done = if subscribe {
                        shared.add_member(&list.address, &target, "", &ckey).await
                    } else {
                        shared.remove_member(&list.address, &target, &ckey).await
                    };
                    match done {
                        Ok(()) => Some(format!("{verb} {target}: done.")),
                        Err(e) if e.is_temporary() => return Err(e.into()),
                        Err(e) => Some(format!("{verb} {target}: {e}")),
                    }
                } else {
                    let action = if subscribe {
                        Action::Subscribe
                    } else {
                        Action::Unsubscribe
                    };
                    match shared.request_confirmation(list, &target, action).await {
                        // The confirmation request is the answer.
                        Ok(Requested::Sent) => None,
                        Ok(Requested::AlreadySent { retry_after_secs }) => Some(format!(
                            "{verb} {target}: a confirmation request was sent a short while ago; \
                             reply to it, or ask again in {} minutes.",
                            retry_after_secs.div_ceil(60)
                        )),
                        Err(e) if e.is_temporary() => return Err(e.into()),
                        Err(e) => Some(format!("{verb} {target}: {e}")),
                    }
                }
            }
            Command::Confirm(token) => match shared.confirm(token, Some(&list.address)).await {
                // The welcome or farewell message is the answer.
                Ok(_) => None,
                Err(e) if e.is_temporary() => return Err(e.into()),
                Err(e) => Some(format!("confirm: {e}")),
            },
            Command::Approve(token) | Command::Reject(token) => {
                let decision = if matches!(command, Command::Approve(_)) {
                    Decision::Approve
                } else {
                    Decision::Reject
                };
                match shared.moderate(token, Some(&list.address), decision).await {
                    Ok(done) => Some(done),
                    Err(e) if e.is_temporary() => return Err(e.into()),
                    Err(e) => Some(format!("moderation: {e}")),
                }
            }
        };
        answers.extend(answer);
    }
    if req.commands.is_empty() && req.errors.is_empty() {
        answers.push(format!(
            "No command was found in your message.\n\n{}",
            help(list, &shared.web_url)
        ));
    }
    if !answers.is_empty() {
        shared
            .reply(
                &format!("list-answer:{key}"),
                list,
                std::slice::from_ref(&sender),
                &format!("Re: {}", subject.as_deref().unwrap_or("your request")),
                &answers.join("\n\n"),
            )
            .await?;
    }
    Ok(format!("250 2.0.0 {} commands read", req.commands.len()))
}

fn help(list: &MailingList, web_url: &str) -> String {
    format!(
        "Commands for {title} ({address}), sent to {request} in the subject or\n\
         the first lines of the message:\n\n\
         \x20 subscribe            join the list (you will be asked to confirm)\n\
         \x20 unsubscribe          leave the list (you will be asked to confirm)\n\
         \x20 help                 this text\n\
         \x20 who                  the members (owners only)\n\
         \x20 confirm TOKEN        confirm a request (reply to the confirmation message)\n\n\
         To post, write to {address}. The list's page: {web_url}/list/{segment}\n",
        title = list.display_title(),
        address = list.address,
        request = list.companion("request"),
        segment = headers::url_segment(&list.address),
    )
}

async fn to_owners(
    shared: &Shared,
    list: &MailingList,
    job: &Job,
    key: &str,
) -> Result<String, Failure> {
    let owner_address = list.companion("owner");
    let looped = message::values(&job.body, "X-Loop")
        .iter()
        .any(|v| message::bare_address(v).eq_ignore_ascii_case(&owner_address));
    if looped {
        return Ok("250 2.0.0 a loop: dropped".into());
    }
    if list.owners.is_empty() {
        return Err(Failure::Permanent(format!(
            "550 5.1.1 <{owner_address}>: the list has no owner"
        )));
    }
    let bytes = message::prepend(&[format!("X-Loop: {owner_address}")], &job.body);
    shared
        .queue
        .enqueue_with_key(
            &format!("list-owner:{key}"),
            &list.companion("bounces"),
            list.owners.clone(),
            origin(),
            &bytes,
        )
        .await?;
    Ok(format!("250 2.0.0 sent to {} owners", list.owners.len()))
}

async fn bounced(
    shared: &Shared,
    list: &MailingList,
    address: &str,
    bytes: &[u8],
    key: &str,
) -> Result<String, Failure> {
    let now = qs_queue::unix_now();
    let Some(tag) = verp::decode(&shared.signer, list, address, now / 86_400) else {
        return Ok("250 2.0.0 not a bounce of ours: dropped".into());
    };
    let report = bounce::read(bytes);
    let failed: Vec<String> = match tag {
        Tag::Member(mac) => {
            // A report that names no failure (a delay warning) counts for nothing.
            if report.is_report && report.failed.is_empty() {
                return Ok("250 2.0.0 a delay report: not counted".into());
            }
            verp::find_member(&shared.signer, list, &mac)
                .map(|m| vec![m.address.clone()])
                .unwrap_or_default()
        }
        Tag::Batch(_) => report
            .failed
            .into_iter()
            .filter(|a| list.member(a).is_some())
            .collect(),
    };
    if failed.is_empty() {
        return Ok("250 2.0.0 a bounce naming no member: dropped".into());
    }
    let threshold = shared.bounce_threshold;
    let suspended = shared.lists.update(&list.address, |l| {
        let mut suspended = Vec::new();
        for a in &failed {
            if let Some(m) = l.member_mut(a) {
                if now.saturating_sub(m.last_bounce) > BOUNCE_MEMORY_DAYS * 86_400 {
                    m.bounce_score = 0;
                }
                m.bounce_score += 1;
                m.last_bounce = now;
                if m.bounce_score >= threshold && !m.suspended {
                    m.suspended = true;
                    suspended.push((m.address.clone(), m.bounce_score));
                }
            }
        }
        Ok(suspended)
    })?;
    for (member, score) in &suspended {
        warn!(list = %list.address, member, score, "member suspended after bounces");
        shared
            .tell_owners(
                &format!("list-suspended:{key}:{member}"),
                list,
                &format!("{member} is suspended from {}", list.address),
                &format!(
                    "Mail to {member} has bounced {score} times, so {member} no longer receives\n\
                     posts of {}. The last bounce is attached. To resume delivery:\n\n\
                     \x20 qsctl list set-member {} {member} --suspended off\n",
                    list.address, list.address
                ),
                Some(bytes),
            )
            .await?;
    }
    Ok(format!(
        "250 2.0.0 bounce counted for {}",
        failed.join(", ")
    ))
}

/// Acts on moderators' decisions and drops expired held posts, until shutdown.
async fn held_loop(shared: Arc<Shared>, mut shutdown: Shutdown) {
    loop {
        for list in shared.lists.all() {
            for (post, decision) in shared.lists.held(&list.address) {
                if let Err(e) = act_on_held(&shared, &list, &post, decision).await {
                    warn!(list = %list.address, held = %post.id, error = %e, "cannot act on a held post yet");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HELD_SCAN) => {}
            _ = shared.held_changed.notified() => {}
            _ = shutdown.wait() => return,
        }
    }
}

async fn act_on_held(
    shared: &Shared,
    list: &MailingList,
    post: &HeldPost,
    decision: Option<Decision>,
) -> Result<(), ActionError> {
    let key = format!("held-{}", post.id);
    let expired = qs_queue::unix_now() > post.received_at + shared.hold_expiry_secs;
    let end_key = format!("list-held-end:{key}");
    let end_key = end_key.as_str();
    let tell_sender = |subject: String, body: String| async move {
        if post.notify_sender {
            shared
                .reply(
                    end_key,
                    list,
                    std::slice::from_ref(&post.sender),
                    &subject,
                    &body,
                )
                .await?;
        }
        Ok::<(), ClientError>(())
    };
    match decision {
        Some(Decision::Approve) => {
            let (_, bytes) = shared.lists.held_post(&list.address, &post.id)?;
            let (members, copies) = shared
                .fan_out(list, &bytes, &[&post.sender, &post.from], &key)
                .await?;
            info!(list = %list.address, held = %post.id, members, copies, "approved post sent");
        }
        Some(Decision::Reject) => {
            tell_sender(
                format!("Your post to {} was not accepted", list.address),
                format!(
                    "A moderator of {} declined your message \"{}\".\n",
                    list.address, post.subject
                ),
            )
            .await?;
            info!(list = %list.address, held = %post.id, "held post rejected");
        }
        None if expired => {
            tell_sender(
                format!("Your post to {} was not approved in time", list.address),
                format!(
                    "Your message \"{}\" to {} waited {} days for a moderator and was dropped.\n",
                    post.subject,
                    list.address,
                    shared.hold_expiry_secs / 86_400
                ),
            )
            .await?;
            info!(list = %list.address, held = %post.id, "held post expired");
        }
        None => return Ok(()),
    }
    shared.lists.drop_held(&list.address, &post.id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_order_and_the_limit() {
        let members: Vec<String> = (0..120).map(|i| format!("m{i:03}@far.example")).collect();
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        let b = batches(&refs, 50);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [50, 50, 20]);
        assert_eq!(b.concat(), refs);
        assert_eq!(batches(&refs[..3], 1).len(), 3);
        assert_eq!(batches(&refs[..3], 0).len(), 3);
        assert!(batches(&[], 50).is_empty());
    }
}
