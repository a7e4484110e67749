//! `stackctl up`: the lifecycle of the whole container.
//!
//! Order at start: reaper (so orphans are reaped from the first instant) →
//! gateway (so the public port answers "starting" at once) → restore →
//! services. Order at stop: services in reverse dependency order → final
//! backup → gateway drain → exit with the contract's code. The stop's
//! tokens, its one deadline and the tasks spawned here belong to
//! [`Shutdown`] (see [`crate::shutdown`]): every wait below ends by that
//! deadline.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing::{error, info, warn};

use crate::cli::LogFormat;
use crate::exit_code as code;
use crate::gateway::restoring;
use crate::manifest::Manifest;
use crate::persist::lifecycle::{self, BoardSink};
use crate::persist::{progress, Persister};
use crate::shutdown::{CancellationToken, Shutdown};
use crate::status::StatusBoard;
use crate::supervisor::{self, Outcome, Reaper};

/// Run the stack until a signal stops it or a service gives up.
pub fn run(manifest: Manifest, log_format: LogFormat) -> u8 {
    // Every panic's log line names where it happened.
    crate::shutdown::record_panic_sites();
    // Before any thread or descriptor exists: a gateway under load needs
    // more than the usual soft limit of 1024 (issue 11).
    if let Some((from, to)) = supervisor::nofile::raise() {
        info!(
            from,
            to, "raised the open-file limit (services keep the one stackctl was started with)"
        );
    }
    // One worker per core, like nginx's `worker_processes auto`: the gateway
    // scales with them, the supervisor needs almost nothing.
    // STACKCTL_WORKERS overrides it (benchmarks pin equal worker counts).
    let workers = std::env::var("STACKCTL_WORKERS")
        .ok()
        .and_then(|w| w.parse::<usize>().ok())
        .filter(|w| *w > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    // One worker: tokio's current-thread scheduler does the same job
    // without the work-stealing machinery (no cross-thread queues or
    // wake-ups to check), which the gateway's per-request cost shows.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let runtime = match builder.thread_name("stackctl").enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return code::FAILURE;
        }
    };
    let shutdown = Shutdown::new(manifest.shutdown_timeout);
    let rescue = Arc::new(Rescue::default());
    // A panic in `up` itself (a bug) must not lose the data since the last
    // snapshot (issue 12 item 8) nor leave the services running: catch it,
    // stop them and take the final snapshot on the way out. Tasks' panics
    // are caught in their tasks (see `Shutdown::spawn`).
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let stack = run_async(manifest, log_format, rescue.clone(), shutdown.clone());
        runtime.block_on(stack)
    }));
    let exit = match ran {
        Ok(exit) => exit,
        Err(payload) => {
            let at = crate::shutdown::describe_panic(payload.as_ref());
            error!("stackctl up panicked at {at} (a bug, please report it with the lines above); stopping the services and taking the final snapshot before exiting");
            // The supervisor is a task of the runtime: it still holds the
            // services and stops them in order once asked, as on SIGTERM.
            shutdown.request_stop_for(&format!("panic: stackctl up panicked at {at}"));
            if let Some(done) = rescue.supervisor.get() {
                runtime.block_on(shutdown.bounded(done.cancelled()));
            }
            if let Some((p, status)) = rescue.persist.get() {
                let budget = shutdown.budget();
                let _ = runtime.block_on(lifecycle::final_backup(p, status, budget));
            }
            code::FAILURE
        }
    };
    // A final backup that ran out of time may still be in a blocking
    // thread; do not wait for it (the contract's exit code already says so).
    runtime.shutdown_timeout(Duration::from_millis(100));
    exit
}

/// What a panicking `up` needs to stop the services and take the final
/// snapshot.
#[derive(Default)]
struct Rescue {
    /// Set once the persister is open.
    persist: OnceLock<(Arc<Persister>, StatusBoard)>,
    /// Set once the supervisor runs; cancelled when it ended.
    supervisor: OnceLock<CancellationToken>,
}

async fn run_async(
    manifest: Manifest,
    log_format: LogFormat,
    rescue: Arc<Rescue>,
    shutdown: Shutdown,
) -> u8 {
    shutdown.watch_deadline();
    spawn_signal_watch(shutdown.clone());
    let mut exit = run_stack(manifest, log_format, rescue, &shutdown).await;
    // A task that panicked asked for the stop, which went as after SIGTERM;
    // but the stack did not stop cleanly, whatever path `run_stack` took.
    if let Some(panic) = shutdown.panicked() {
        error!("stopped because {panic}");
        exit = code::FAILURE;
    }
    // Every task spawned here ends, or the deadline passes.
    shutdown.finish().await;
    exit
}

async fn run_stack(
    manifest: Manifest,
    log_format: LogFormat,
    rescue: Arc<Rescue>,
    shutdown: &Shutdown,
) -> u8 {
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
    // Every service is on the board before anything can read it: the
    // gateway answers `/admin/healthz` from the moment it listens, and an
    // empty board would call the stack healthy before the supervisor ran.
    for s in &manifest.services {
        status.service(&s.name, |st| {
            if !s.enabled {
                st.phase = crate::status::Phase::Disabled;
            }
        });
    }
    // The progress of backups and restores, for the control socket.
    let feed = lifecycle::feed();
    let persister = match &manifest.persist {
        Some(p) => match Persister::open(p) {
            Ok(p) => {
                // Log lines as usual, plus the restore's bytes on the
                // status board for the 503 page, and everything on the feed.
                let log = Arc::new(progress::Lines::log(progress::interval()));
                let sink = Arc::new(BoardSink::new(status.clone(), log, feed.clone()));
                let p = Arc::new(p.with_progress_sink(sink));
                let _ = rescue.persist.set((p.clone(), status.clone()));
                Some(p)
            }
            Err(e) => {
                error!("{e}");
                return code::FAILURE;
            }
        },
        None => None,
    };

    // The public port opens at once: while the data is restored it answers
    // 503 "restoring"; the gateway proper is built from the restored state.
    let listener = match &manifest.gateway {
        Some(cfg) => match tokio::net::TcpListener::bind(cfg.listen).await {
            Ok(l) => Some(l),
            Err(e) => {
                error!(
                    "cannot listen on {}: {e} (is another process using the port? change `gateway.listen`)",
                    cfg.listen
                );
                return code::FAILURE;
            }
        },
        None => None,
    };
    let listener = match &persister {
        Some(p) => match restore_first(p, listener, &status, shutdown, &manifest.services).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                info!("stopped before the restore finished; nothing was started or pushed");
                return code::OK;
            }
            Err(msg) => {
                error!("{msg}");
                return code::FAILURE;
            }
        },
        None => listener,
    };
    status.update(|s| s.restored = true);

    // Before any service starts (and after the restore, which may create a
    // working directory): a required service that cannot start here stops
    // `up` now, with the reason, instead of a crash loop.
    let blocked = crate::supervisor::preflight::check(&manifest, &crate::env::container_env());
    let secrets = manifest.secret_values();
    for b in &blocked {
        let text = crate::check::mask(&b.to_string(), &secrets);
        if b.soft {
            warn!("{text}");
        } else {
            error!("{text}");
        }
    }
    if blocked.iter().any(|b| !b.soft) {
        error!("not starting: a required service cannot start on this machine (fix `command` / `working_dir`, or make the service `optional`)");
        return code::USAGE;
    }

    // The snapshot loop's requests (`stackctl backup`, the admin API) and
    // the supervisor's commands (a restore stops and starts services).
    let (backup_tx, backup_rx) = tokio::sync::mpsc::channel(8);
    let (control, commands) = supervisor::control::channel();
    let recovery = persister.as_ref().map(|p| {
        Arc::new(crate::recovery::Recovery::new(
            p.clone(),
            backup_tx.clone(),
            control.clone(),
            &manifest,
            status.clone(),
            feed.clone(),
        ))
    });

    // The gateway stops after the services (and the final backup), so it
    // keeps answering instead of refusing connections while they stop.
    let gateway_task = match (&manifest.gateway, listener) {
        (Some(cfg), Some(listener)) => match crate::gateway::Gateway::new(cfg, status.clone()) {
            // Knowing which service owns a backend port lets the gateway
            // answer 503 "starting" instead of 502 while it comes up.
            Ok(g) => Some(
                shutdown.spawn(
                    "the gateway",
                    g.with_services(&manifest.services)
                        .with_recovery(recovery.clone())
                        .serve(listener, shutdown.gateway().clone()),
                ),
            ),
            Err(e) => {
                error!("{e}");
                return code::FAILURE;
            }
        },
        _ => None,
    };

    // Periodic work stops as soon as the stop is asked for: a snapshot or
    // upload running then is cancelled while the services stop, so the
    // final snapshot finds the repository free.
    let backup_tasks = persister
        .as_ref()
        .zip(manifest.persist.as_ref())
        .map(|(p, cfg)| {
            let channel = (backup_tx, backup_rx);
            start_backups(p, cfg, &status, &feed, shutdown, channel, recovery)
        });

    let budget = shutdown.services_budget(persister.is_some());
    let opts = supervisor::Options { log_format, budget };
    // Its own task. A panic in its event loop (a bug) is caught there: it
    // still holds the services and stops them in order; any panic asks for
    // the stop, and the final snapshot below is still taken. Unbounded
    // until the stop is asked; from then on, bounded by the deadline.
    let done = rescue
        .supervisor
        .get_or_init(CancellationToken::new)
        .clone();
    let supervise = supervisor::run(
        manifest.clone(),
        reaper,
        status.clone(),
        opts,
        shutdown.clone(),
        commands,
    );
    let supervised = shutdown.spawn("the supervisor", async move {
        // However the task ends: a panicking `up` waits for this.
        let _ended = done.drop_guard();
        supervise.await
    });
    #[cfg(debug_assertions)]
    panic_once_ready(&status, shutdown).await;
    let outcome = shutdown.bounded(supervised).await;

    let mut exit = match &outcome {
        Some(Ok(Outcome::Clean)) => code::OK,
        Some(Ok(Outcome::GaveUp(name))) => {
            error!(service = %name, "stopped because service `{name}` gave up");
            code::FAILURE
        }
        Some(Err(e)) => {
            error!(error = %e, "the supervisor failed (a bug, please report it); taking the final snapshot and stopping");
            code::FAILURE
        }
        None => {
            error!("the services did not stop within `shutdown_timeout`; their process groups were killed, exiting without waiting for them");
            code::FAILURE
        }
    };
    crate::fault::panic_once("up");
    // A service that gave up (or a failed supervisor) asks for the stop
    // here; after a signal this changes nothing. The periodic backups end
    // with it.
    shutdown.request_stop();
    let budget = shutdown.budget();
    // Every wait below ends inside the budget: `up` exits by itself, with
    // its exit code, before Docker's SIGKILL.
    for task in backup_tasks.into_iter().flatten() {
        let until = tokio::time::Instant::from_std(budget.final_backup());
        if tokio::time::timeout_at(until, task).await.is_err() {
            warn!("a snapshot is still waiting for the remote; the final backup waits for it");
        }
    }
    if let Some(p) = &persister {
        // `final_backup` keeps to the budget itself; bounded here as well,
        // so the deadline holds whatever it does.
        let result = shutdown
            .bounded(lifecycle::final_backup(p, &status, budget))
            .await;
        if !matches!(result, Some(Ok(_))) && exit == code::OK {
            exit = code::BACKUP_FAILED;
        }
    }
    shutdown.gateway().cancel();
    if let Some(task) = gateway_task {
        match shutdown.bounded(task).await {
            Some(Ok(())) => {}
            Some(Err(e)) => error!(error = %e, "the gateway failed (a bug, please report it)"),
            None => {
                warn!(
                    "the gateway did not drain within `shutdown_timeout`; closing its connections"
                )
            }
        }
    }
    // After a panic the stop went as usual, but it was not clean: see `run_async`.
    if exit == code::OK && shutdown.panicked().is_none() {
        info!("stopped cleanly");
    }
    exit
}

/// The test hook `STACKCTL_TEST_PANIC=up-running` (debug builds only, see
/// [`crate::fault`]): `up` itself panics once every service is ready.
#[cfg(debug_assertions)]
async fn panic_once_ready(status: &StatusBoard, shutdown: &Shutdown) {
    use crate::status::Phase;
    if !crate::fault::armed("up-running") {
        return;
    }
    while !shutdown.stop().is_cancelled() {
        let board = status.snapshot();
        let ready = |p: Phase| matches!(p, Phase::Ready | Phase::Disabled);
        if board.services.values().all(|s| ready(s.phase)) {
            crate::fault::panic_once("up-running");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Restore before anything starts, answering "restoring" on the public
/// port meanwhile. `Ok(None)`: stopped before the restore finished.
async fn restore_first(
    p: &Arc<Persister>,
    listener: Option<tokio::net::TcpListener>,
    status: &StatusBoard,
    shutdown: &Shutdown,
    services: &[crate::manifest::Service],
) -> Result<Option<Option<tokio::net::TcpListener>>, String> {
    let handover = shutdown.child();
    let placeholder = listener.map(|l| {
        let page = restoring::serve(l, status.clone(), handover.clone());
        shutdown.spawn("the restoring page", page)
    });
    let restored = shutdown
        .bounded(lifecycle::restore_at_start(p, status, shutdown))
        .await;
    handover.cancel();
    let listener = match placeholder {
        Some(task) => match shutdown.bounded(task).await {
            Some(l) => Some(l.map_err(|e| format!("the restoring page failed: {e}"))?),
            // Out of time while stopping: nothing more starts anyway.
            None => return Ok(None),
        },
        None => None,
    };
    // `None`: the deadline passed while the restore was being stopped.
    let Some(restored) = restored else {
        warn!("the restore is still waiting for the remote; leaving it behind");
        return Ok(None);
    };
    match restored {
        Ok(lifecycle::Restored::Done(report)) => {
            match lifecycle::required_but_unrestored(services, &report.applied.failed) {
                Some(msg) => Err(msg),
                None => Ok(Some(listener)),
            }
        }
        Ok(lifecycle::Restored::Stopped) => Ok(None),
        Err(e) => Err(format!("restore failed: {e}")),
    }
}

/// The snapshot loop and the control socket `stackctl backup` talks to.
fn start_backups(
    p: &Arc<Persister>,
    cfg: &crate::manifest::Persist,
    status: &StatusBoard,
    feed: &lifecycle::Feed,
    shutdown: &Shutdown,
    (tx, rx): (
        tokio::sync::mpsc::Sender<lifecycle::Request>,
        tokio::sync::mpsc::Receiver<lifecycle::Request>,
    ),
    recovery: Option<Arc<crate::recovery::Recovery>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let stop = shutdown.backups();
    let looped = shutdown.spawn(
        "the snapshot loop",
        lifecycle::run_loop(
            p.clone(),
            feed.clone(),
            cfg.debounce,
            cfg.interval,
            status.clone(),
            stop.clone(),
            rx,
        ),
    );
    let socket = crate::control::socket_path(&cfg.workdir);
    let (p, stop, feed) = (p.clone(), stop.clone(), feed.clone());
    let control = shutdown.spawn("the control socket", async move {
        let served = crate::control::serve(socket.clone(), p, tx, feed, recovery, stop);
        if let Err(e) = served.await {
            warn!(socket = %socket.display(), error = %e, "no control socket: `stackctl backup` cannot reach this stack");
        }
    });
    vec![looped, control]
}

/// First SIGTERM/SIGINT: graceful stop (the deadline clock starts).
/// Second: kill every service now. Not a tracked task: it must still catch
/// the second signal while `up` waits for the others, and ends with the
/// runtime.
fn spawn_signal_watch(shutdown: Shutdown) {
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
                shutdown.request_stop_for(name);
            } else {
                warn!(signal = name, "second signal: killing every service now");
                shutdown.force_now();
                return;
            }
        }
    });
}
