//! The mail side: workers that lease `list` jobs from core-queue and act on
//! each recipient (a post, a command, mail for the owners, a bounce), and
//! the loop that carries out moderators' decisions on held posts.
//!
//! Durability: a job is completed only after everything it caused is in the
//! queue (each copy of a post, each notice) or on disk (a held post, a list
//! change). Copies are queued with request keys derived from the job, so a
//! job offered again after a crash queues nothing twice.

use std::sync::Arc;
use std::time::Duration;

use qs_directory::lists::ListIndex;
use qs_directory::mailing_list::{Decision, HeldPost, ListError, MailingList};
use qs_queue::message;
use qs_queue::{ClientError, Job, JobClass, JobRecipient, Outcome, RecipientResult, Reply};
use qs_service::shutdown::Shutdown;
use tracing::{error, info, warn};

use crate::actions::{ActionError, Requested, Shared, origin};
use crate::bounce;
use crate::commands::{self, Command};
use crate::headers;
use crate::notice::Notice;
use crate::policy::{self, Verdict};
use crate::token::Action;
use crate::verp::{self, Tag};

/// How long a job is leased: a fan-out to 10,000 members takes seconds.
const LEASE: Duration = Duration::from_secs(300);
/// How often held posts are looked at (decisions also wake the loop).
const HELD_SCAN: Duration = Duration::from_secs(5);
/// A bounce older than this many days no longer adds to a member's score.
const BOUNCE_MEMORY_DAYS: u64 = 30;

/// What an address of a list is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Post,
    Request,
    Owner,
    Bounces,
}

/// Leases list jobs one at a time and handles them, until shutdown. A job in
/// hand is finished even during shutdown: its work is short and keyed, so
/// finishing beats redoing.
pub(crate) async fn worker(shared: Arc<Shared>, n: usize, shutdown: Shutdown) {
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
    Temporary(Reply),
    Permanent(Reply),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Temporary(Reply::new(
            451,
            "4.3.0",
            &format!("mail queue unavailable: {e}"),
        ))
    }
}

impl From<ActionError> for Failure {
    fn from(e: ActionError) -> Failure {
        if e.is_temporary() {
            Failure::Temporary(Reply::new(451, "4.3.0", &e.to_string()))
        } else {
            Failure::Permanent(Reply::new(550, "5.0.0", &e.to_string()))
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

async fn recipient(shared: &Shared, job: &Job, r: &JobRecipient) -> Result<Reply, Failure> {
    let Some((list, target)) = classify(shared, &r.address) else {
        return Err(Failure::Permanent(Reply::new(
            550,
            "5.1.1",
            &format!("<{}>: no such list", r.address),
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

async fn post(shared: &Shared, list: &MailingList, job: &Job, key: &str) -> Result<Reply, Failure> {
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
        return Ok(Reply::new(250, "2.0.0", "a loop: sent to the owners only"));
    }
    let from = from_address(bytes);
    let sender = job.sender.to_lowercase();
    match policy::judge(list, &sender, &from) {
        Verdict::Accept => {
            let (members, copies) = shared.fan_out(list, bytes, &[&sender, &from], key).await?;
            Ok(Reply::new(
                250,
                "2.0.0",
                &format!("sent to {members} members in {copies} messages"),
            ))
        }
        Verdict::Reject(reason) => Err(Failure::Permanent(Reply::new(
            550,
            "5.7.1",
            &reason.to_string(),
        ))),
        Verdict::Hold(reason) => {
            hold(shared, list, job, key, &from, &reason).await?;
            Ok(Reply::new(
                250,
                "2.0.0",
                &format!("held for moderation: {reason}"),
            ))
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
) -> Result<Reply, Failure> {
    let sender = job.sender.to_lowercase();
    if headers::is_automatic(&sender, &job.body) {
        return Ok(Reply::new(250, "2.0.0", "automatic mail: no commands read"));
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
    Ok(Reply::new(
        250,
        "2.0.0",
        &format!("{} commands read", req.commands.len()),
    ))
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
) -> Result<Reply, Failure> {
    let owner_address = list.companion("owner");
    let looped = message::values(&job.body, "X-Loop")
        .iter()
        .any(|v| message::bare_address(v).eq_ignore_ascii_case(&owner_address));
    if looped {
        return Ok(Reply::new(250, "2.0.0", "a loop: dropped"));
    }
    if list.owners.is_empty() {
        return Err(Failure::Permanent(Reply::new(
            550,
            "5.1.1",
            &format!("<{owner_address}>: the list has no owner"),
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
    Ok(Reply::new(
        250,
        "2.0.0",
        &format!("sent to {} owners", list.owners.len()),
    ))
}

async fn bounced(
    shared: &Shared,
    list: &MailingList,
    address: &str,
    bytes: &[u8],
    key: &str,
) -> Result<Reply, Failure> {
    let now = qs_queue::unix_now();
    let Some(tag) = verp::decode(&shared.signer, list, address, now / 86_400) else {
        return Ok(Reply::new(250, "2.0.0", "not a bounce of ours: dropped"));
    };
    let report = bounce::read(bytes);
    let failed: Vec<String> = match tag {
        Tag::Member(mac) => {
            // A report that names no failure (a delay warning) counts for nothing.
            if report.is_report && report.failed.is_empty() {
                return Ok(Reply::new(250, "2.0.0", "a delay report: not counted"));
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
        return Ok(Reply::new(
            250,
            "2.0.0",
            "a bounce naming no member: dropped",
        ));
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
    Ok(Reply::new(
        250,
        "2.0.0",
        &format!("bounce counted for {}", failed.join(", ")),
    ))
}

/// Acts on moderators' decisions and drops expired held posts, until shutdown.
pub(crate) async fn held_loop(shared: Arc<Shared>, mut shutdown: Shutdown) {
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
