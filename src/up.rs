//! `stackctl up`: the lifecycle of the whole container.
//!
//! Order at start: reaper (so orphans are reaped from the first instant) →
//! gateway (so the public port answers "starting" at once) → restore →
//! services. Order at stop: services in reverse dependency order → final
//! backup → gateway drain → exit with the contract's code.

use std::sync::Arc;

use tracing::{error, info, warn};

use crate::app::code;
use crate::cli::LogFormat;
use crate::manifest::read::ContainerEnv;
use crate::manifest::Manifest;
use crate::shutdown::CancellationToken;
use crate::status::StatusBoard;
use crate::supervisor::{self, Outcome, Reaper};

/// Run the stack until a signal stops it or a service gives up.
pub fn run(manifest: Manifest, _container: ContainerEnv, log_format: LogFormat) -> u8 {
    // One worker per core, like nginx's `worker_processes auto`: the gateway
    // scales with them, the supervisor needs almost nothing.
    // STACKCTL_WORKERS overrides it (benchmarks pin equal worker counts).
    let workers = std::env::var("STACKCTL_WORKERS")
        .ok()
        .and_then(|w| w.parse::<usize>().ok())
        .filter(|w| *w > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("stackctl")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return code::FAILURE;
        }
    };
    runtime.block_on(run_async(manifest, log_format))
}

async fn run_async(manifest: Manifest, log_format: LogFormat) -> u8 {
    let reaper = match Reaper::start() {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot set up child reaping");
            return code::FAILURE;
        }
    };
    for w in &manifest.warnings {
        warn!("{}:{}: {w}", w.pos.line, w.pos.col);
    }
    let manifest = Arc::new(manifest);
    let status = StatusBoard::new();
    let shutdown = CancellationToken::new();
    let force = CancellationToken::new();
    spawn_signal_watch(shutdown.clone(), force.clone());

    // The gateway stops after the services (and the final backup), so it
    // keeps answering "stopping" instead of refusing connections.
    let gateway_stop = CancellationToken::new();
    let gateway_task = match &manifest.gateway {
        Some(cfg) => {
            match start_gateway(&manifest, cfg, status.clone(), gateway_stop.clone()).await {
                Ok(task) => Some(task),
                Err(msg) => {
                    error!("{msg}");
                    return code::FAILURE;
                }
            }
        }
        None => None,
    };

    if manifest.persist.is_some() {
        warn!("persistence is configured but not part of this build yet: data is not restored or backed up");
    }
    status.update(|s| s.restored = true);

    let opts = supervisor::Options {
        log_format,
        budget: manifest.shutdown_timeout,
    };
    let outcome = supervisor::run(
        manifest.clone(),
        reaper,
        status.clone(),
        opts,
        shutdown.clone(),
        force,
    )
    .await;

    gateway_stop.cancel();
    if let Some(task) = gateway_task {
        let _ = task.await;
    }
    match outcome {
        Outcome::Clean => {
            info!("stopped cleanly");
            code::OK
        }
        Outcome::GaveUp(name) => {
            error!(service = %name, "stopped because service `{name}` gave up");
            code::FAILURE
        }
    }
}

async fn start_gateway(
    manifest: &Manifest,
    cfg: &crate::manifest::Gateway,
    status: StatusBoard,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e} (is another process using the port? change `gateway.listen`)", cfg.listen))?;
    // Knowing which service owns a backend port lets the gateway answer
    // 503 "starting" instead of 502 while that service comes up.
    let gateway = crate::gateway::Gateway::new(cfg, status)
        .map_err(|e| format!("{e}"))?
        .with_services(&manifest.services);
    Ok(tokio::spawn(gateway.serve(listener, stop)))
}

/// First SIGTERM/SIGINT: graceful stop. Second: stop now.
fn spawn_signal_watch(shutdown: CancellationToken, force: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            error!("cannot install signal handlers; stop with SIGKILL");
            return;
        };
        let mut count = 0;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            count += 1;
            if count == 1 {
                info!(signal = name, "stopping (send it again to stop at once)");
                shutdown.cancel();
            } else {
                warn!(signal = name, "second signal: killing every service now");
                force.cancel();
                return;
            }
        }
    });
}
