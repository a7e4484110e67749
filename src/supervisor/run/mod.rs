//! The event loop: turns what happened (process ends, probe reports, timers,
//! signals) into tracker inputs, and tracker effects into I/O.
//!
//! One task owns every [`Tracker`]; everything else (group watchers, probe
//! loops, log readers) runs in its own task and only sends `Event`s back,
//! tagged with the run's generation so a report from an old run is ignored.
//!
//! Shutdown: services stop in reverse dependency order (a service is sent
//! its stop signal once nothing that depends on it is running), each with
//! `stop_timeout` capped by what is left of the budget; when the budget is
//! spent, or on `force` (the second signal, or `up`'s overall deadline:
//! see [`crate::shutdown`]), every group is SIGKILLed. `run` returns once
//! every group is empty.
//!
//! By concern: this file holds the loop and the scheduling; `start`
//! starts a run and its watcher tasks, `stopping` the stack's stop, and
//! `holds` the services held from outside.
//!
//! When every service has finished on its own (one-shot jobs, `restart: no`)
//! the loop idles until shutdown, like supervisord: `up` keeps the gateway
//! and backups going, and the container's lifetime stays the platform's call.

mod holds;
mod start;
mod stopping;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::control::Commands;
use super::deps::{self, DepStatus};
use super::exit::Exit;
use super::group::Ctl;
use super::logs::LogHub;
use super::probe::{self, Report};
use super::reaper::Reaper;
use super::state::{Effect, Input, State, StopReason, Tracker};
use super::{Options, Outcome};
use crate::manifest::{Manifest, Service};
use crate::shutdown::{catch_panic, CancellationToken, Shutdown, TaskTracker};
use crate::status::StatusBoard;

/// How long to wait, once every group is empty, for the last log lines.
const LOG_GRACE: Duration = Duration::from_millis(500);

/// Run every enabled service of `manifest` until `shutdown` asks for the
/// stop (or a non-optional service gives up), then stop them all; its
/// `force` kills at once. `commands` stop and start named services
/// meanwhile (see [`super::control`]).
///
/// A panic in the event loop (a bug) must not leave the services running
/// with no one to stop them: it is caught here, reported to `shutdown`
/// (which asks for the stop, as SIGTERM does), and the loop runs again to
/// stop them in reverse dependency order. If that panics too, every group
/// is killed. A panic in a task the supervisor starts (a group watcher, a
/// probe, a log reader) or in the reaper is reported the same way, and the
/// same ordered stop follows (a panicked group watcher is replaced: see
/// `start`).
pub async fn run(
    manifest: Arc<Manifest>,
    reaper: Reaper,
    status: StatusBoard,
    opts: Options,
    shutdown: Shutdown,
    mut commands: Commands,
) -> Outcome {
    let reaped = watch_reaper(&reaper, &shutdown);
    let mut sup = match Supervisor::new(manifest, reaper, status, opts, shutdown.clone()) {
        Ok(s) => s,
        Err(e) => {
            // Without the log writer nothing of the services could be seen.
            tracing::error!(error = %e, "cannot start the log writer");
            reaped.abort();
            return Outcome::GaveUp("stackctl".to_string());
        }
    };
    let mut attempt = 0;
    loop {
        let ran = catch_panic(sup.event_loop(&shutdown, &mut commands)).await;
        let Err(payload) = ran else { break };
        shutdown.caught_panic("the supervisor", payload.as_ref());
        attempt += 1;
        if attempt == 1 {
            sup.begin_shutdown(shutdown.stop_reason().unwrap_or("the supervisor panicked"));
        } else {
            // The same bug again, perhaps in the stopping itself.
            sup.kill_all("the supervisor panicked again while stopping");
            break;
        }
    }
    reaped.abort();
    sup.finish().await
}

/// Report a panic of the reaper's task (it goes on reaping) to `shutdown`,
/// as one of the supervisor's own tasks would be; the task ends with `run`.
fn watch_reaper(reaper: &Reaper, shutdown: &Shutdown) -> tokio::task::JoinHandle<()> {
    let (reaper, shutdown) = (reaper.clone(), shutdown.clone());
    tokio::spawn(async move { shutdown.panicked_at(reaper.panicked().await) })
}

/// What the helper tasks report.
#[derive(Debug)]
enum Event {
    /// A probe loop of run `gen` of service `svc` reported.
    Probe {
        svc: usize,
        gen: u64,
        report: Report,
    },
    /// Run `gen` of service `svc` is over: leader reaped, group empty.
    Ended { svc: usize, gen: u64, exit: Exit },
    /// The group watcher of run `gen` of service `svc` panicked and was
    /// replaced; a stop order it was carrying out may be lost.
    Rewatched { svc: usize, gen: u64 },
}

/// The I/O side of a live run.
struct Run {
    gen: u64,
    pid: i32,
    ctl: mpsc::UnboundedSender<Ctl>,
    /// Cancels the probe loops when the run ends.
    probes: CancellationToken,
    ctx: probe::Ctx,
    liveness_started: bool,
}

/// The I/O side of a service (its pure side is in `Supervisor::trackers`).
struct Slot {
    run: Option<Run>,
    wake: Option<Instant>,
    started_at: Option<u64>,
}

struct Supervisor {
    m: Arc<Manifest>,
    reaper: Reaper,
    status: StatusBoard,
    /// Pure state per service, in manifest order.
    trackers: Vec<Tracker>,
    /// I/O state per service, same order.
    slots: Vec<Slot>,
    index: HashMap<String, usize>,
    dependents: Vec<Vec<usize>>,
    container: crate::manifest::read::ContainerEnv,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    tasks: TaskTracker,
    logs: LogHub,
    next_gen: u64,
    budget: Duration,
    /// Set once shutdown began: when the budget runs out.
    deadline: Option<Instant>,
    forced: bool,
    outcome: Outcome,
    /// Held by a [`Command::Stop`](crate::supervisor::control::Command::Stop): not started until released.
    held: Vec<bool>,
    /// Stop commands not answered yet: the services, and the reply sent
    /// once none of them runs.
    holds: Vec<(Vec<usize>, tokio::sync::oneshot::Sender<Vec<String>>)>,
    /// Where the panics of the tasks it starts go, and a service's give-up.
    shutdown: Shutdown,
}

/// `now` from tokio's clock, so tests with a paused clock stay exact.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Supervisor {
    fn new(
        m: Arc<Manifest>,
        reaper: Reaper,
        status: StatusBoard,
        opts: Options,
        shutdown: Shutdown,
    ) -> std::io::Result<Self> {
        let names: Vec<String> = m.services.iter().map(|s| s.name.clone()).collect();
        let width = m
            .services
            .iter()
            .filter(|s| s.enabled)
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0);
        let files = m.services.iter().map(|s| s.logs.clone()).collect();
        let logs = LogHub::start(opts.log_format, names, width, files)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let slots = m
            .services
            .iter()
            .map(|_| Slot {
                run: None,
                wake: None,
                started_at: None,
            })
            .collect();
        let trackers = m.services.iter().map(|s| Tracker::new(s.enabled)).collect();
        let index = m
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let dependents = deps::dependents(&m.services);
        let m_len = m.services.len();
        let sup = Supervisor {
            m,
            reaper,
            status,
            trackers,
            slots,
            index,
            dependents,
            container: crate::env::container_env(),
            tx,
            rx,
            tasks: TaskTracker::new(),
            logs,
            next_gen: 0,
            budget: opts.budget,
            deadline: None,
            forced: false,
            outcome: Outcome::Clean,
            held: vec![false; m_len],
            holds: Vec::new(),
            shutdown,
        };
        for i in 0..sup.slots.len() {
            sup.publish(i);
        }
        Ok(sup)
    }

    async fn event_loop(&mut self, shutdown: &Shutdown, commands: &mut Commands) {
        let (stop, force) = (shutdown.stop(), shutdown.force());
        loop {
            self.schedule();
            self.answer_holds();
            #[cfg(debug_assertions)]
            if self.deadline.is_none() && self.all_ready() {
                // The test hook: a panic while every service runs.
                crate::fault::panic_once("supervisor");
            }
            if self.deadline.is_some() && self.all_stopped() {
                return;
            }
            let wake = self.slots.iter().filter_map(|s| s.wake).min();
            tokio::select! {
                biased;
                _ = force.cancelled(), if !self.forced => {
                    self.begin_shutdown("second signal");
                    self.kill_all("forced stop");
                }
                _ = stop.cancelled(), if self.deadline.is_none() => {
                    self.begin_shutdown(shutdown.stop_reason().unwrap_or("stop requested"));
                }
                _ = sleep_until(self.deadline), if self.deadline.is_some() && !self.forced => {
                    tracing::warn!(budget_ms = self.budget.as_millis() as u64, "shutdown budget spent");
                    self.kill_all("shutdown budget spent");
                }
                Some(ev) = self.rx.recv() => self.on_event(ev),
                Some(cmd) = commands.recv() => self.on_command(cmd),
                _ = sleep_until(wake), if wake.is_some() => self.fire_wakes(),
            }
        }
    }

    /// Spawn `fut`, a task of the supervisor's (`what` names it in the
    /// log). Its panic (a bug) is reported to `shutdown`, so the stop
    /// follows as for the event loop's own, not a silent hang.
    fn spawn_task<F>(&self, what: String, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            if let Err(payload) = catch_panic(fut).await {
                shutdown.caught_panic(&what, payload.as_ref());
            }
        });
    }

    async fn finish(self) -> Outcome {
        let Supervisor {
            tasks,
            logs,
            outcome,
            tx,
            rx,
            ..
        } = self;
        drop((tx, rx));
        tasks.close();
        // Group watchers are done; what is left are log readers draining
        // the last bytes (and probe loops being cancelled).
        let _ = tokio::time::timeout(LOG_GRACE, tasks.wait()).await;
        logs.close(LOG_GRACE).await;
        outcome
    }

    /// Every enabled service runs and is ready.
    #[cfg(debug_assertions)]
    fn all_ready(&self) -> bool {
        let ready = |t: &Tracker| matches!(t.state, State::Running { ready: true, .. });
        self.m
            .services
            .iter()
            .zip(&self.trackers)
            .all(|(s, t)| !s.enabled || ready(t))
    }

    fn all_stopped(&self) -> bool {
        self.trackers.iter().all(Tracker::is_terminal) && self.slots.iter().all(|s| s.run.is_none())
    }

    fn svc(&self, i: usize) -> &Service {
        &self.m.services[i]
    }

    /// Feed an input to service `i`'s tracker, then carry out the effect.
    fn step(&mut self, i: usize, input: Input) {
        let jitter: f64 = rand::random();
        let m = self.m.clone();
        let effect = self.trackers[i].step(input, &m.services[i], now(), jitter);
        self.publish(i);
        match effect {
            None => {}
            Some(Effect::Spawn) => self.start_run(i),
            Some(Effect::Stop) => self.send_stop(i),
            Some(Effect::WakeAt(at)) => {
                let delay = at.saturating_duration_since(now());
                tracing::info!(service = %self.svc(i).name, delay_ms = delay.as_millis() as u64, "restart scheduled");
                self.slots[i].wake = Some(at);
            }
            Some(Effect::GiveUp(reason)) => self.give_up(i, &reason),
        }
    }

    /// Start what can start; during shutdown, stop what may stop.
    fn schedule(&mut self) {
        if self.deadline.is_some() {
            for i in 0..self.slots.len() {
                match self.trackers[i].state {
                    State::Waiting | State::Backoff { .. } => {
                        self.slots[i].wake = None;
                        self.step(i, Input::Shutdown);
                    }
                    State::Running { stopping, .. }
                        if stopping != Some(StopReason::Shutdown)
                            && (self.forced
                                || deps::may_stop(i, &self.dependents, &self.trackers)) =>
                    {
                        self.step(i, Input::Shutdown);
                    }
                    _ => {}
                }
            }
            return;
        }
        // Held services stop in reverse dependency order among themselves.
        for i in 0..self.slots.len() {
            if !self.held[i] {
                continue;
            }
            if let State::Running { stopping, .. } = self.trackers[i].state {
                if !matches!(stopping, Some(StopReason::Hold | StopReason::Shutdown))
                    && deps::may_stop_within(i, &self.dependents, &self.trackers, &self.held)
                {
                    self.step(i, Input::Hold);
                }
            }
        }
        // Until nothing changes: a service without a readiness probe is
        // ready at spawn, which may let its dependents start in this pass.
        loop {
            let mut changed = false;
            for i in 0..self.slots.len() {
                if self.trackers[i].state != State::Waiting
                    || self.deadline.is_some()
                    || self.held[i]
                {
                    continue;
                }
                let status = deps::all(self.svc(i), &self.trackers, |n| self.index.get(n).copied());
                match status {
                    DepStatus::Pending => {}
                    DepStatus::Met => {
                        self.step(i, Input::Start);
                        changed = true;
                    }
                    DepStatus::Never(why) => {
                        self.step(i, Input::CannotStart(why));
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn fire_wakes(&mut self) {
        let t = now();
        for i in 0..self.slots.len() {
            if self.slots[i].wake.is_some_and(|w| w <= t) {
                self.slots[i].wake = None;
                self.step(i, Input::BackoffElapsed);
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Probe { svc, gen, report } => {
                if self.slots[svc].run.as_ref().map(|r| r.gen) != Some(gen) {
                    return;
                }
                match report {
                    Report::Ready => {
                        tracing::info!(service = %self.svc(svc).name, "ready");
                        self.step(svc, Input::Ready);
                        self.start_liveness(svc);
                    }
                    Report::Unready => self.step(svc, Input::Unready),
                    Report::Hung => self.step(svc, Input::LivenessFailed),
                }
            }
            Event::Rewatched { svc, gen } => {
                if self.slots[svc].run.as_ref().map(|r| r.gen) != Some(gen) {
                    return;
                }
                self.resend_stop(svc);
            }
            Event::Ended { svc, gen, exit } => {
                let slot = &mut self.slots[svc];
                if slot.run.as_ref().map(|r| r.gen) != Some(gen) {
                    return;
                }
                if let Some(run) = slot.run.take() {
                    run.probes.cancel();
                }
                let stopping = matches!(
                    self.trackers[svc].state,
                    State::Running {
                        stopping: Some(_),
                        ..
                    }
                );
                let name = &self.m.services[svc].name;
                if exit.success() || stopping {
                    tracing::info!(service = %name, exit = %exit, "exited");
                } else {
                    tracing::warn!(service = %name, exit = %exit, "exited");
                }
                self.step(svc, Input::Ended(exit));
            }
        }
    }

    /// Copy service `i`'s state to the status board.
    fn publish(&self, i: usize) {
        let slot = &self.slots[i];
        let t = &self.trackers[i];
        self.status.service(&self.m.services[i].name, |s| {
            s.phase = t.phase();
            s.pid = slot.run.as_ref().map(|r| r.pid as u32);
            s.restarts = t.restarts;
            s.last_exit = t.last_exit.clone();
            s.started_at = slot.started_at;
        });
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
