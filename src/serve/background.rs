//! The service's background tasks, on a small tokio runtime beside the timely workers:
//! the gRPC API, the Prometheus `/metrics` endpoint, a progress line in the log every few
//! seconds, and SIGINT/SIGTERM, which ask the workers to stop (and end the API).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use clickflow_api::ApiState;
use clickflow_ingest::status::IngestStatus;
use tokio::runtime::Runtime;
use tracing::info;

/// How often the progress line is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How long a graceful shutdown may take before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// The running background tasks; dropping it stops them.
///
/// Two runtimes: the API's, whose load grows with its clients, and a small one for the
/// signals, the metrics and the progress log, which a busy API must never starve.
pub struct Background {
    control: Runtime,
    api: Option<Runtime>,
}

impl Background {
    /// Starts the tasks: the API on its address (if any), metrics on `metrics_listen` (if
    /// any), the progress log, and the signal handler that sets `shutdown`.
    pub fn start(
        metrics_listen: Option<SocketAddr>,
        api: Option<(SocketAddr, ApiState)>,
        status: IngestStatus,
        shutdown: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let runtime = new_runtime("clickflow-control", 1)?;
        if let Some(address) = metrics_listen {
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(address))
                .with_context(|| format!("metrics.listen {address}: cannot listen"))?;
            let bound = listener.local_addr().ok();
            let metrics_status = status.clone();
            let metrics_api = api.as_ref().map(|(_, state)| state.clone());
            let app = Router::new().route(
                "/metrics",
                get(move || {
                    let mut text = metrics_status.prometheus_text();
                    if let Some(api) = &metrics_api {
                        text.push_str(&api.prometheus_text());
                    }
                    async move { text }
                }),
            );
            runtime.spawn(async move { axum::serve(listener, app).await });
            info!(address = ?bound, "serving metrics at /metrics");
        }
        let api = match api {
            Some((address, state)) => {
                let api_runtime = new_runtime("clickflow-api", 2)?;
                let listener = api_runtime
                    .block_on(tokio::net::TcpListener::bind(address))
                    .with_context(|| format!("api.listen {address}: cannot listen"))?;
                info!(address = ?listener.local_addr().ok(), "serving gRPC");
                let stopped = Arc::clone(&shutdown);
                api_runtime.spawn(async move {
                    if let Err(error) =
                        clickflow_api::serve(listener, state, until_set(stopped)).await
                    {
                        tracing::error!(%error, "the gRPC API stopped");
                    }
                });
                Some(api_runtime)
            }
            None => None,
        };
        runtime.spawn(log_progress(status));
        runtime.spawn(stop_on_signal(shutdown));
        Ok(Self {
            control: runtime,
            api,
        })
    }

    /// Stops the tasks.
    pub fn stop(self) {
        if let Some(api) = self.api {
            api.shutdown_timeout(Duration::from_secs(1));
        }
        self.control.shutdown_timeout(Duration::from_secs(1));
    }
}

fn new_runtime(name: &str, threads: usize) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("cannot start the {name} runtime"))
}

async fn log_progress(status: IngestStatus) {
    let mut ticks = tokio::time::interval(PROGRESS_EVERY);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let partitions = status.partitions();
        let lag: i64 = partitions.values().filter_map(|p| p.lag()).sum();
        let idle = partitions.values().filter(|p| p.idle).count();
        info!(
            events = status.events_counted(),
            dead_letters = status.dead_letters().iter().sum::<u64>(),
            frontier = ?status.published_frontier().flatten(),
            lag,
            partitions = partitions.len(),
            idle,
            "progress"
        );
    }
}

/// Completes once `flag` is set.
async fn until_set(flag: Arc<AtomicBool>) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop_on_signal(shutdown: Arc<AtomicBool>) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => info!("interrupted; stopping"),
        () = terminate => info!("terminated; stopping"),
    }
    shutdown.store(true, Ordering::SeqCst);
    // A shutdown that hangs (a stuck broker, say) must not keep the process forever.
    std::thread::spawn(|| {
        std::thread::sleep(SHUTDOWN_GRACE);
        tracing::error!(grace = ?SHUTDOWN_GRACE, "shutdown did not finish in time; exiting");
        std::process::exit(1);
    });
}
