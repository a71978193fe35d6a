//! The daemon: the job workers, the held-posts loop and the web page,
//! started together over one [`Shared`] and stopped together.

use std::collections::BTreeMap;
use std::sync::Arc;

use qs_config::Config;
use qs_service::shutdown::Shutdown;
use tokio::task::JoinSet;
use tracing::info;

use crate::ListServerError;
use crate::actions::Shared;
use crate::jobs;

/// Workers leasing list jobs.
const WORKERS: usize = 4;

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
        tasks.spawn(jobs::worker(shared.clone(), n, shutdown.clone()));
    }
    tasks.spawn(jobs::held_loop(shared.clone(), shutdown.clone()));
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
