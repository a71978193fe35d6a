//! core-queue's answers to the queue protocol: enqueue routes the recipients,
//! complete settles bounces and removal; everything else is the plain store's.

use std::sync::Arc;

use qs_queue::{ErrorKind, Handler, Request, Response, StoreError, StoreHandler, unix_now};

use crate::core::Core;

/// The handler behind core-queue's socket.
pub struct CoreHandler {
    core: Arc<Core>,
    plain: StoreHandler,
}

impl CoreHandler {
    /// A handler over the shared core.
    pub fn new(core: Arc<Core>) -> Self {
        let plain = StoreHandler::new(core.store.clone(), qs_queue::JobClass::local(), core.policy);
        CoreHandler { core, plain }
    }

    async fn complete(&self, request: Request) -> Result<Response, StoreError> {
        let Request::Complete {
            id,
            class,
            token,
            results,
        } = request
        else {
            return Ok(Response::error(ErrorKind::BadRequest, "not a completion"));
        };
        let store = &self.core.store;
        let outcome =
            store.complete(&id, &class, token, &results, &self.core.policy, unix_now())?;
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
        Ok(Response::Completed {
            finished: outcome.finished,
        })
    }
}

impl Handler for CoreHandler {
    async fn handle(&self, request: Request, body: Vec<u8>) -> (Response, Vec<u8>) {
        let op = request.op();
        let result = match request {
            Request::Enqueue {
                sender,
                recipients,
                origin,
                request_key,
            } => match request_key.filter(|k| !k.is_empty() && k.len() <= 128) {
                Some(key) => {
                    self.core
                        .accept_once(&key, &sender, &recipients, origin, &body)
                        .await
                }
                None => self.core.accept(&sender, &recipients, origin, &body).await,
            }
            .map(|id| Response::Enqueued { id }),
            complete @ Request::Complete { .. } => self.complete(complete).await,
            other => return self.plain.handle(other, body).await,
        };
        match result {
            Ok(response) => (response, Vec::new()),
            Err(e) => {
                match e.kind() {
                    ErrorKind::Temporary => tracing::error!(op, error = %e, "request failed"),
                    _ => tracing::info!(op, error = %e, "request refused"),
                }
                (e.to_response(), Vec::new())
            }
        }
    }
}
