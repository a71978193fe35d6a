//! The list actions that mail and the web page share: confirmations and
//! one-click tokens carried out once, members added and removed with their
//! welcome and farewell, moderators' decisions, and the fan-out of a post.
//!
//! Durability: every copy and notice is queued with a request key derived
//! from what caused it, so an action done again after a crash queues nothing
//! twice.

use std::sync::Arc;

use qs_config::Config;
use qs_directory::mailing_list::{Decision, ListError, ListStore, MailingList};
use qs_queue::{Client, ClientError, Origin};
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::ListServerError;
use crate::headers::{Prepared, Unsubscribe};
use crate::notice::{self, Notice};
use crate::token::{Action, Signer, Token, TokenError};
use crate::verp;

/// Copies of one post being queued at once.
const FANOUT_CONCURRENCY: usize = 16;
/// The queue's state namespace where used tokens are recorded.
const USED_TOKENS: &str = "list-tokens";
/// The queue's state namespace where the time of the last confirmation
/// request of each list and address (`LIST/ADDRESS`) is recorded.
const CONFIRMATIONS_ASKED: &str = "list-confirmations";

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
    pub(crate) bounce_threshold: u32,
    pub(crate) hold_expiry_secs: u64,
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
            hold_expiry_secs: l.hold_expiry.as_secs(),
            confirm_expiry_secs: l.confirm_expiry.as_secs(),
            unsubscribe_secs: l.unsubscribe_link.as_secs(),
            confirm_window_secs: l.confirm_window.as_secs(),
            form_expiry_secs: l.web_form_expiry.as_secs(),
            claims: Mutex::new(()),
            confirmations: Mutex::new(()),
            held_changed: Notify::new(),
        })
    }

    /// Queues an automatic message from `<>`; `key` makes it exactly-once.
    pub(crate) async fn send_notice(&self, key: &str, n: &Notice<'_>) -> Result<(), ClientError> {
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
    pub(crate) async fn reply(
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
    pub(crate) async fn tell_owners(
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

/// The origin of everything list-server queues.
pub(crate) fn origin() -> Origin {
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
