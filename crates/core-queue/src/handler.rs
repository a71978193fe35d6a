//! core-queue's answers to the queue protocol, every request in one place:
//! enqueue routes the recipients, complete settles bounces and removal, and
//! the workers' and administrators' requests are the store's, committed
//! before the answer.

use std::sync::Arc;
use std::time::Duration;

use qs_queue::proto::StateEntry;
use qs_queue::{ErrorKind, Handler, Request, Response, StoreError, unix_now};

use crate::core::Core;

/// Most summaries one list request returns.
const MAX_LIST: u32 = 1000;
/// Most entries one state scan returns.
const MAX_SCAN: u32 = 1000;
/// Longest lease granted: one day.
const MAX_LEASE_SECS: u64 = 24 * 60 * 60;
/// Longest enqueue request key remembered; a longer one is ignored.
const MAX_REQUEST_KEY_LEN: usize = 128;

/// The handler behind core-queue's socket.
pub struct CoreHandler {
    core: Arc<Core>,
}

impl CoreHandler {
    /// A handler over the shared core.
    pub fn new(core: Arc<Core>) -> Self {
        CoreHandler { core }
    }

    async fn dispatch(
        &self,
        request: Request,
        body: Vec<u8>,
    ) -> Result<(Response, Vec<u8>), StoreError> {
        let store = &self.core.store;
        let now = unix_now();
        let reply = match request {
            Request::Hello { .. } => Response::Ok,
            Request::Ping => Response::Pong,
            Request::Enqueue {
                sender,
                recipients,
                origin,
                request_key,
            } => {
                let key = request_key.filter(|k| !k.is_empty() && k.len() <= MAX_REQUEST_KEY_LEN);
                let id = match key {
                    Some(key) => {
                        self.core
                            .accept_once(&key, &sender, &recipients, origin, &body)
                            .await?
                    }
                    None => {
                        self.core
                            .accept(&sender, &recipients, origin, &body)
                            .await?
                    }
                };
                Response::Enqueued { id }
            }
            Request::Lease {
                class,
                worker,
                lease_secs,
            } => {
                let lease = Duration::from_secs(lease_secs.clamp(1, MAX_LEASE_SECS));
                match store.lease(&class, &worker, lease, now)? {
                    Some(mut job) => {
                        store.commit().await?;
                        let body = std::mem::take(&mut job.body);
                        return Ok((Response::Job { job }, body));
                    }
                    None => Response::NoJob,
                }
            }
            Request::Complete {
                id,
                class,
                token,
                results,
            } => {
                let outcome =
                    store.complete(&id, &class, token, &results, &self.core.policy, now)?;
                for r in &results {
                    tracing::info!(queue_id = %id, %class, index = r.index, outcome = ?r.outcome, "result");
                }
                let needs_body = !outcome.newly_failed.is_empty() || outcome.delay_warning;
                let body = if needs_body {
                    store.body(&id)?.unwrap_or_default()
                } else {
                    Vec::new()
                };
                self.core.settle(&outcome, &body)?;
                store.commit().await?;
                Response::Completed {
                    finished: outcome.finished,
                }
            }
            Request::Release { id, class, token } => {
                store.release(&id, &class, token)?;
                store.commit().await?;
                Response::Ok
            }
            Request::List { limit } => Response::List {
                messages: store.list(limit.min(MAX_LIST) as usize)?,
            },
            Request::Show { id } => match store.get(&id)? {
                Some(envelope) => Response::Envelope { envelope },
                None => return Err(StoreError::NotFound(id)),
            },
            Request::Body { id } => match store.body(&id)? {
                Some(bytes) => return Ok((Response::Body, bytes)),
                None => return Err(StoreError::NotFound(id)),
            },
            Request::Retry { id } => {
                store.retry(&id, now)?;
                store.commit().await?;
                Response::Ok
            }
            Request::Delete { id } => {
                if !store.remove(&id)? {
                    return Err(StoreError::NotFound(id));
                }
                store.commit().await?;
                Response::Ok
            }
            Request::Stats => Response::Stats {
                stats: store.stats()?,
            },
            Request::StateGet { namespace, key } => {
                return Ok(match store.state_get(&namespace, &key)? {
                    Some(value) => (Response::StateValue { found: true }, value),
                    None => (Response::StateValue { found: false }, Vec::new()),
                });
            }
            Request::StatePut { namespace, key } => {
                store.state_put(&namespace, &key, &body)?;
                store.commit().await?;
                Response::Ok
            }
            Request::StateDelete { namespace, key } => {
                store.state_delete(&namespace, &key)?;
                store.commit().await?;
                Response::Ok
            }
            Request::StateScan {
                namespace,
                prefix,
                after,
                limit,
            } => {
                let found = store.state_scan(
                    &namespace,
                    &prefix,
                    after.as_deref(),
                    limit.min(MAX_SCAN) as usize,
                )?;
                let mut entries = Vec::with_capacity(found.len());
                let mut values = Vec::new();
                for (key, value) in found {
                    entries.push(StateEntry {
                        key,
                        len: value.len() as u64,
                    });
                    values.extend_from_slice(&value);
                }
                return Ok((Response::StateEntries { entries }, values));
            }
        };
        Ok((reply, Vec::new()))
    }
}

impl Handler for CoreHandler {
    async fn handle(&self, request: Request, body: Vec<u8>) -> (Response, Vec<u8>) {
        let op = request.op();
        // A refused enqueue or completion concerns a message and is worth a
        // line; a refused lookup or lease (a stale id, a lost lease) is not.
        let about_a_message = matches!(request, Request::Enqueue { .. } | Request::Complete { .. });
        match self.dispatch(request, body).await {
            Ok(answer) => answer,
            Err(e) => {
                match e.kind() {
                    ErrorKind::Temporary => tracing::error!(op, error = %e, "request failed"),
                    _ if about_a_message => tracing::info!(op, error = %e, "request refused"),
                    _ => tracing::debug!(op, error = %e, "request refused"),
                }
                (e.to_response(), Vec::new())
            }
        }
    }
}
