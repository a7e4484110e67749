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
//! spent, or on the second signal (`force`), every group is SIGKILLed.
//! `run` returns once every group is empty.
//!
//! When every service has finished on its own (one-shot jobs, `restart: no`)
//! the loop idles until shutdown, like supervisord: `up` keeps the gateway
//! and backups going, and the container's lifetime stays the platform's call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use super::control::{Command, Commands};
use super::deps::{self, DepStatus};
use super::exit::Exit;
use super::group::{self, Ctl, GroupCfg};
use super::logs::{LogHub, LogWatch, Stream};
use super::probe::{self, Report};
use super::reaper::Reaper;
use super::spawn::{self, Output};
use super::state::{Effect, Input, State, StopReason, Tracker};
use super::{Options, Outcome};
use crate::manifest::{Manifest, ProbeCheck, Service};
use crate::shutdown::{CancellationToken, TaskTracker};
use crate::status::StatusBoard;

/// How long to wait, once every group is empty, for the last log lines.
const LOG_GRACE: Duration = Duration::from_millis(500);

/// Run every enabled service of `manifest` until `shutdown` (or a
/// non-optional service gives up), then stop them all; `force` kills at once.
/// `commands` stop and start named services meanwhile (see
/// [`super::control`]).
pub async fn run(
    manifest: Arc<Manifest>,
    reaper: Reaper,
    status: StatusBoard,
    opts: Options,
    shutdown: CancellationToken,
    force: CancellationToken,
    commands: Commands,
) -> Outcome {
    crate::fault::panic_once("supervisor");
    let mut sup = match Supervisor::new(manifest, reaper, status, opts) {
        Ok(s) => s,
        Err(e) => {
            // Without the log writer nothing of the services could be seen.
            tracing::error!(error = %e, "cannot start the log writer");
            return Outcome::GaveUp("stackctl".to_string());
        }
    };
    sup.event_loop(shutdown, force, commands).await;
    sup.finish().await
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
    /// Held by a [`Command::Stop`]: not started until released.
    held: Vec<bool>,
    /// Stop commands not answered yet: the services, and the reply sent
    /// once none of them runs.
    holds: Vec<(Vec<usize>, tokio::sync::oneshot::Sender<Vec<String>>)>,
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
        };
        for i in 0..sup.slots.len() {
            sup.publish(i);
        }
        Ok(sup)
    }

    async fn event_loop(
        &mut self,
        shutdown: CancellationToken,
        force: CancellationToken,
        mut commands: Commands,
    ) {
        loop {
            self.schedule();
            self.answer_holds();
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
                _ = shutdown.cancelled(), if self.deadline.is_none() => {
                    self.begin_shutdown("signal");
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

    /// Hold or release services (see [`super::control`]).
    fn on_command(&mut self, cmd: Command) {
        let indices = |names: &[String]| {
            let mut v: Vec<usize> = names
                .iter()
                .filter_map(|n| self.index.get(n).copied())
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        match cmd {
            Command::Stop { names, reply } => {
                let mut set = Vec::new();
                for i in indices(&names) {
                    let held = match self.trackers[i].state {
                        State::Running { .. } | State::Waiting => true,
                        State::Backoff { .. } => {
                            self.slots[i].wake = None;
                            self.step(i, Input::Hold);
                            true
                        }
                        _ => false,
                    };
                    if held {
                        tracing::info!(service = %self.svc(i).name, "stopping on request (held until started again)");
                        self.held[i] = true;
                        set.push(i);
                    }
                }
                self.holds.push((set, reply));
            }
            Command::Start { names, reply } => {
                let mut released = Vec::new();
                for i in indices(&names) {
                    if std::mem::take(&mut self.held[i]) {
                        tracing::info!(service = %self.svc(i).name, "starting again on request");
                        released.push(self.svc(i).name.clone());
                    }
                }
                let _ = reply.send(released);
            }
        }
    }

    /// Answer the stop commands whose services have all exited.
    fn answer_holds(&mut self) {
        let mut i = 0;
        while i < self.holds.len() {
            let done = self.holds[i]
                .0
                .iter()
                .all(|&s| !self.trackers[s].is_running() && self.slots[s].run.is_none());
            if done {
                let (set, reply) = self.holds.swap_remove(i);
                let names = set.iter().map(|&s| self.svc(s).name.clone()).collect();
                let _ = reply.send(names);
            } else {
                i += 1;
            }
        }
    }

    fn begin_shutdown(&mut self, why: &str) {
        if self.deadline.is_none() {
            tracing::info!(
                reason = why,
                budget_ms = self.budget.as_millis() as u64,
                "stopping services"
            );
            self.deadline = Some(now() + self.budget);
        }
    }

    /// SIGKILL every group now; from here on, stops are kills.
    fn kill_all(&mut self, why: &str) {
        self.forced = true;
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(run) = &slot.run {
                tracing::warn!(service = %self.m.services[i].name, reason = why, "killing process group");
                let _ = run.ctl.send(Ctl::Kill);
            }
        }
    }

    fn send_stop(&mut self, i: usize) {
        let svc = &self.m.services[i];
        let Some(run) = &self.slots[i].run else {
            return;
        };
        if self.forced {
            let _ = run.ctl.send(Ctl::Kill);
            return;
        }
        let mut timeout = svc.stop_timeout;
        if let Some(d) = self.deadline {
            timeout = timeout.min(d.saturating_duration_since(now()));
        }
        tracing::info!(service = %svc.name, signal = %super::exit::signal_name(svc.stop_signal), timeout_ms = timeout.as_millis() as u64, "stopping");
        let _ = run.ctl.send(Ctl::Stop {
            signal: svc.stop_signal,
            timeout,
        });
    }

    fn give_up(&mut self, i: usize, reason: &str) {
        let svc = self.svc(i);
        let name = svc.name.clone();
        if svc.optional {
            tracing::error!(service = %name, reason, "gave up on optional service; the stack keeps running");
            return;
        }
        tracing::error!(service = %name, reason, "gave up on service; stopping the stack");
        if self.outcome == Outcome::Clean {
            self.outcome = Outcome::GaveUp(name);
        }
        self.begin_shutdown("a service gave up");
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

    /// Spawn a run of service `i` and the tasks that watch it.
    fn start_run(&mut self, i: usize) {
        let m = self.m.clone();
        let svc = &m.services[i];
        let env = match crate::env::service_env(&m, svc, &self.container) {
            Ok(env) => env,
            Err(e) => {
                tracing::error!(service = %svc.name, error = %e, "cannot start service");
                self.step(i, Input::SpawnFailed(e.to_string()));
                return;
            }
        };
        let mut spawned = match spawn::spawn(
            &self.reaper,
            &svc.command,
            &svc.working_dir,
            &env,
            Output::Piped,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(service = %svc.name, error = %e, "cannot start service");
                self.step(i, Input::SpawnFailed(e.to_string()));
                return;
            }
        };
        let pid = spawned.pid();
        self.next_gen += 1;
        let gen = self.next_gen;
        let name: Arc<str> = Arc::from(svc.name.as_str());

        // `log:` probes watch the output.
        let (seen_tx, seen_rx) = watch::channel(false);
        let watches: Vec<LogWatch> = [&svc.readiness, &svc.liveness]
            .into_iter()
            .flatten()
            .filter_map(|p| match &p.check {
                ProbeCheck::Log(text) => Some(LogWatch {
                    needle: text.clone(),
                    seen: seen_tx.clone(),
                }),
                _ => None,
            })
            .collect();
        if let Some(out) = spawned.child.stdout.take() {
            self.logs
                .attach(&self.tasks, i, Stream::Stdout, out.into(), watches.clone());
        }
        if let Some(err) = spawned.child.stderr.take() {
            self.logs
                .attach(&self.tasks, i, Stream::Stderr, err.into(), watches);
        }

        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let cfg = GroupCfg {
            name: name.clone(),
            pgid: pid,
            stop_signal: svc.stop_signal,
            stop_timeout: svc.stop_timeout,
        };
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            let exit = group::supervise(cfg, spawned.exit, ctl_rx).await;
            let _ = tx.send(Event::Ended { svc: i, gen, exit });
        });

        let ctx = probe::Ctx {
            reaper: self.reaper.clone(),
            env: Arc::new(env),
            dir: svc.working_dir.clone(),
            log_seen: Some(seen_rx),
        };
        let probes = CancellationToken::new();
        if let Some(p) = svc.readiness.clone() {
            let (ctx, name) = (ctx.clone(), name.clone());
            self.spawn_probe(i, gen, &probes, move |report| {
                probe::readiness(name, p, ctx, report)
            });
        }
        tracing::info!(service = %svc.name, pid, "started");
        self.slots[i].run = Some(Run {
            gen,
            pid,
            ctl: ctl_tx,
            probes,
            ctx,
            liveness_started: false,
        });
        self.slots[i].started_at = Some(unix_now());
        self.step(i, Input::Spawned);
        if matches!(self.trackers[i].state, State::Running { ready: true, .. }) {
            self.start_liveness(i);
        }
    }

    /// Liveness checks begin once the service is ready (see [`probe`]).
    fn start_liveness(&mut self, i: usize) {
        let Some(p) = self.m.services[i].liveness.clone() else {
            return;
        };
        let name: Arc<str> = Arc::from(self.m.services[i].name.as_str());
        let Some(run) = self.slots[i].run.as_mut() else {
            return;
        };
        if run.liveness_started {
            return;
        }
        run.liveness_started = true;
        let (gen, ctx, token) = (run.gen, run.ctx.clone(), run.probes.clone());
        self.spawn_probe(i, gen, &token, move |report| {
            probe::liveness(name, p, ctx, report)
        });
    }

    /// Run a probe loop for run `gen` of service `i` until `token` is
    /// cancelled, its reports sent to the event loop.
    fn spawn_probe<F, Fut>(&mut self, i: usize, gen: u64, token: &CancellationToken, probe: F)
    where
        F: FnOnce(Box<dyn Fn(Report) + Send + Sync>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let tx = self.tx.clone();
        let report = Box::new(move |report| {
            let _ = tx.send(Event::Probe {
                svc: i,
                gen,
                report,
            });
        });
        let fut = probe(report);
        let token = token.clone();
        self.tasks.spawn(async move {
            token.run_until_cancelled(fut).await;
        });
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
