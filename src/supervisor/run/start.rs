//! Starting a run: the process group, its log readers, its group watcher
//! and its probe loops, each a task that reports back as an `Event`.

use std::sync::Arc;

use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, watch};

use super::{unix_now, Event, Run, Supervisor};
use crate::manifest::ProbeCheck;
use crate::shutdown::{catch_panic, CancellationToken, Shutdown};
use crate::supervisor::exit::Exit;
use crate::supervisor::group::{self, Ctl, GroupCfg};
use crate::supervisor::logs::{LogWatch, Stream};
use crate::supervisor::probe::{self, Report};
use crate::supervisor::spawn::{self, Output};
use crate::supervisor::state::{Input, State};

impl Supervisor {
    /// Spawn a run of service `i` and the tasks that watch it.
    pub(super) fn start_run(&mut self, i: usize) {
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
            let reader = self
                .logs
                .reader(i, Stream::Stdout, out.into(), watches.clone());
            self.spawn_task(format!("the stdout reader of service `{name}`"), reader);
        }
        if let Some(err) = spawned.child.stderr.take() {
            let reader = self.logs.reader(i, Stream::Stderr, err.into(), watches);
            self.spawn_task(format!("the stderr reader of service `{name}`"), reader);
        }

        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let cfg = GroupCfg {
            name: name.clone(),
            pgid: pid,
            stop_signal: svc.stop_signal,
            stop_timeout: svc.stop_timeout,
        };
        let (tx, shutdown) = (self.tx.clone(), self.shutdown.clone());
        self.tasks.spawn(async move {
            let rewatch = || {
                let _ = tx.send(Event::Rewatched { svc: i, gen });
            };
            let exit = watch_group(cfg, spawned.exit, ctl_rx, &shutdown, rewatch).await;
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

    /// Liveness checks begin once the service is ready (see [`crate::supervisor::probe`]).
    pub(super) fn start_liveness(&mut self, i: usize) {
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
        let what = format!("a probe of service `{}`", self.m.services[i].name);
        self.spawn_task(what, async move {
            token.run_until_cancelled(fut).await;
        });
    }
}

/// [`group::supervise`], watched again if it panics (a bug): the panic is
/// reported to `shutdown` (logged where it happened, the stop asked), a
/// new watcher takes over the same channels, and `rewatched` tells the
/// event loop, which gives the order it may have lost again; so the ordered
/// stop still reaches the group and the run ends when the group is empty,
/// not when the budget is spent. If that one panics too, the group is
/// killed.
async fn watch_group(
    cfg: GroupCfg,
    mut leader: oneshot::Receiver<Exit>,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    shutdown: &Shutdown,
    rewatched: impl FnOnce(),
) -> Exit {
    let what = format!("the process-group watcher of service `{}`", cfg.name);
    let watched = catch_panic(group::supervise(cfg.clone(), &mut leader, &mut ctl)).await;
    let payload = match watched {
        Ok(exit) => return exit,
        Err(payload) => payload,
    };
    shutdown.caught_panic(&what, payload.as_ref());
    // The leader's status may have gone to the watcher that panicked.
    let mut leader = match leader.try_recv() {
        Err(TryRecvError::Empty) => leader,
        known => {
            let exit = known.unwrap_or_else(|_| {
                tracing::warn!(service = %cfg.name, "exit status lost with the watcher that panicked");
                Exit::Signaled(libc::SIGKILL)
            });
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(exit);
            rx
        }
    };
    rewatched();
    match catch_panic(group::supervise(cfg.clone(), &mut leader, &mut ctl)).await {
        Ok(exit) => exit,
        Err(payload) => {
            shutdown.caught_panic(&what, payload.as_ref());
            tracing::error!(service = %cfg.name, pgid = cfg.pgid, "no one can watch this process group: killing it");
            group::signal_group(&cfg, libc::SIGKILL);
            Exit::Signaled(libc::SIGKILL)
        }
    }
}
