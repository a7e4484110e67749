//! The life of one service as a pure state machine.
//!
//! [`Tracker::step`] takes an [`Input`] (something that happened) and returns
//! at most one [`Effect`] (something the I/O shell must do). Time and jitter
//! are arguments, so the table tests at the bottom read as behaviour. The
//! event loop ([`super::run`](mod@super::run)) owns one tracker per service and decides *when*
//! inputs like `Start` and `Shutdown` are due (dependencies, stop order).

use std::time::{Duration, Instant};

use super::backoff::{self, RestartWindow};
use super::exit::Exit;
use crate::manifest::{RestartPolicy, Service};
use crate::status::Phase;

/// How `last_exit` begins when a run never became a process (the program or
/// working directory is missing); the gateway's 503 page says "cannot start".
pub const SPAWN_FAILED: &str = "failed to start: ";

/// Where a service is; richer than [`Phase`], which is what users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `enabled:` is off; never started.
    Disabled,
    /// Not started yet: waiting for its dependencies.
    Waiting,
    /// A run is in progress (its process group exists).
    Running {
        /// When the process was spawned.
        since: Instant,
        /// The readiness probe has passed (always true without one).
        ready: bool,
        /// A stop was requested, and why.
        stopping: Option<StopReason>,
    },
    /// Waiting out a restart delay.
    Backoff {
        /// When the restart is due.
        until: Instant,
    },
    /// Finished and not restarted (by its restart policy).
    Exited,
    /// Given up, or could never start.
    Failed,
    /// Stopped by a stack shutdown.
    Stopped,
}

/// Why a running service is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Its liveness probe failed: the run counts as failed and the restart
    /// policy applies afterwards.
    Liveness,
    /// The stack is shutting down: it ends as [`State::Stopped`].
    Shutdown,
    /// Held from outside (a restore of its data): it ends as
    /// [`State::Waiting`] without counting as a failed run, and the
    /// supervisor starts it again once the hold is released.
    Hold,
}

/// Something that happened to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Its dependencies are met: start it.
    Start,
    /// The process was spawned.
    Spawned,
    /// It could not be spawned (no such program, …).
    SpawnFailed(String),
    /// The readiness probe passed.
    Ready,
    /// The readiness probe failed `failures` times in a row after passing.
    Unready,
    /// The liveness probe failed `failures` times in a row.
    LivenessFailed,
    /// The run is over: the leader was reaped and its group is empty.
    Ended(Exit),
    /// The restart delay is over.
    BackoffElapsed,
    /// The stack is shutting down and it is this service's turn.
    Shutdown,
    /// A dependency can never be met.
    CannotStart(String),
    /// Stop it for a while (see [`StopReason::Hold`]); the supervisor does
    /// not start it again until the hold is released.
    Hold,
}

/// What the I/O shell must do after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Spawn a new run now.
    Spawn,
    /// Send `stop_signal` to the group; SIGKILL after `stop_timeout`.
    Stop,
    /// Deliver [`Input::BackoffElapsed`] at this time.
    WakeAt(Instant),
    /// The service failed for good (the reason, for logs and status).
    GiveUp(String),
}

/// One service's state plus the history its decisions need.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// Current state.
    pub state: State,
    /// Restarts so far (shown by `status`).
    pub restarts: u32,
    /// Restarts in the current `max_restarts` window.
    window: RestartWindow,
    /// Consecutive failed runs since the last stable one (backoff exponent).
    attempt: u32,
    /// Spawned at least once (`depends_on: started`).
    pub ever_started: bool,
    /// Passed readiness at least once (`depends_on: healthy`).
    pub ever_ready: bool,
    /// A run ended with exit 0 (`depends_on: completed_successfully`).
    pub completed_ok: bool,
    /// How the last run ended, as `status` shows it.
    pub last_exit: Option<String>,
}

impl Tracker {
    /// A tracker for a service that is `enabled` or not.
    pub fn new(enabled: bool) -> Self {
        Tracker {
            state: if enabled {
                State::Waiting
            } else {
                State::Disabled
            },
            restarts: 0,
            window: RestartWindow::new(),
            attempt: 0,
            ever_started: false,
            ever_ready: false,
            completed_ok: false,
            last_exit: None,
        }
    }

    /// The phase users see.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Disabled => Phase::Disabled,
            State::Waiting => Phase::Waiting,
            State::Running {
                stopping: Some(_), ..
            } => Phase::Stopping,
            State::Running { ready: true, .. } => Phase::Ready,
            State::Running { .. } => Phase::Starting,
            State::Backoff { .. } => Phase::Backoff,
            State::Exited => Phase::Exited,
            State::Failed => Phase::Failed,
            State::Stopped => Phase::Stopped,
        }
    }

    /// Nothing more will happen to it (until the next `up`).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.state,
            State::Disabled | State::Exited | State::Failed | State::Stopped
        )
    }

    /// A process group of it may exist.
    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// Apply `input` at `now`; `jitter` is a uniform sample from [0, 1).
    pub fn step(
        &mut self,
        input: Input,
        svc: &Service,
        now: Instant,
        jitter: f64,
    ) -> Option<Effect> {
        match (self.state, input) {
            (State::Waiting, Input::Start) => Some(Effect::Spawn),
            (State::Backoff { until }, Input::BackoffElapsed) if now >= until => {
                self.restarts = self.restarts.saturating_add(1);
                Some(Effect::Spawn)
            }
            (State::Waiting | State::Backoff { .. }, Input::Spawned) => {
                self.ever_started = true;
                let ready = svc.readiness.is_none();
                self.ever_ready |= ready;
                self.state = State::Running {
                    since: now,
                    ready,
                    stopping: None,
                };
                None
            }
            (State::Waiting | State::Backoff { .. }, Input::SpawnFailed(why)) => {
                self.last_exit = Some(format!("{SPAWN_FAILED}{why}"));
                self.after_run(None, true, svc, now, jitter)
            }
            (
                State::Running {
                    since,
                    stopping: None,
                    ..
                },
                Input::Ready,
            ) => {
                self.ever_ready = true;
                self.state = State::Running {
                    since,
                    ready: true,
                    stopping: None,
                };
                None
            }
            (
                State::Running {
                    since,
                    stopping: None,
                    ..
                },
                Input::Unready,
            ) => {
                self.state = State::Running {
                    since,
                    ready: false,
                    stopping: None,
                };
                None
            }
            (
                State::Running {
                    since,
                    ready,
                    stopping: None,
                },
                Input::LivenessFailed,
            ) => {
                self.state = State::Running {
                    since,
                    ready,
                    stopping: Some(StopReason::Liveness),
                };
                Some(Effect::Stop)
            }
            (
                State::Running {
                    since, stopping, ..
                },
                Input::Ended(exit),
            ) => {
                self.last_exit = Some(exit.to_string());
                let liveness = stopping == Some(StopReason::Liveness);
                if exit.success() && !liveness {
                    self.completed_ok = true;
                }
                if stopping == Some(StopReason::Shutdown) {
                    self.state = State::Stopped;
                    return None;
                }
                if stopping == Some(StopReason::Hold) {
                    // Stopped on purpose, not a failure: no restart policy,
                    // no backoff; it waits to be started again.
                    self.state = State::Waiting;
                    return None;
                }
                let failed = !exit.success() || liveness;
                let ran = now.saturating_duration_since(since);
                self.after_run(Some(ran), failed, svc, now, jitter)
            }
            (State::Running { since, ready, .. }, Input::Shutdown) => {
                self.state = State::Running {
                    since,
                    ready,
                    stopping: Some(StopReason::Shutdown),
                };
                // Sent again if it was already stopping for liveness: the
                // shell then caps the stop timeout by the shutdown budget.
                Some(Effect::Stop)
            }
            (State::Waiting | State::Backoff { .. }, Input::Shutdown) => {
                self.state = State::Stopped;
                None
            }
            (
                State::Running {
                    since,
                    ready,
                    stopping: None | Some(StopReason::Liveness),
                },
                Input::Hold,
            ) => {
                self.state = State::Running {
                    since,
                    ready,
                    stopping: Some(StopReason::Hold),
                };
                Some(Effect::Stop)
            }
            (State::Backoff { .. }, Input::Hold) => {
                self.state = State::Waiting;
                None
            }
            (State::Waiting, Input::CannotStart(why)) => {
                self.state = State::Failed;
                Some(Effect::GiveUp(why))
            }
            // Anything else is stale or irrelevant (a probe result after the
            // run ended, a second shutdown, …): ignore it.
            _ => None,
        }
    }

    /// A run that lasted `ran` ended (`None`: it never began); apply the
    /// restart policy.
    fn after_run(
        &mut self,
        ran: Option<Duration>,
        failed: bool,
        svc: &Service,
        now: Instant,
        jitter: f64,
    ) -> Option<Effect> {
        let restart = match svc.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::No => false,
        };
        if !restart {
            if ran.is_some() {
                self.state = State::Exited;
                return None;
            }
            // It never ran at all: that is a broken service, not a finished one.
            self.state = State::Failed;
            return Some(Effect::GiveUp("could not be started".to_string()));
        }
        if ran.is_some_and(|r| r >= backoff::stable_after(&svc.backoff)) {
            self.attempt = 0;
        }
        if !self.window.try_restart(&svc.max_restarts, now) {
            self.state = State::Failed;
            return Some(Effect::GiveUp(format!(
                "restarted {} times within {:?}",
                svc.max_restarts.count, svc.max_restarts.within
            )));
        }
        let until = now + backoff::delay(&svc.backoff, self.attempt, jitter);
        self.attempt = self.attempt.saturating_add(1);
        self.state = State::Backoff { until };
        Some(Effect::WakeAt(until))
    }
}

/// Phase changes that may happen, as data: a step producing any other
/// change is a bug (checked by the tests over every state × input).
pub const ALLOWED: &[(Phase, Phase)] = &[
    (Phase::Waiting, Phase::Starting),
    (Phase::Waiting, Phase::Ready),
    (Phase::Waiting, Phase::Backoff),
    (Phase::Waiting, Phase::Failed),
    (Phase::Waiting, Phase::Stopped),
    (Phase::Starting, Phase::Ready),
    (Phase::Starting, Phase::Stopping),
    (Phase::Starting, Phase::Backoff),
    (Phase::Starting, Phase::Exited),
    (Phase::Starting, Phase::Failed),
    (Phase::Ready, Phase::Starting),
    (Phase::Ready, Phase::Stopping),
    (Phase::Ready, Phase::Backoff),
    (Phase::Ready, Phase::Exited),
    (Phase::Ready, Phase::Failed),
    (Phase::Stopping, Phase::Backoff),
    (Phase::Stopping, Phase::Exited),
    (Phase::Stopping, Phase::Failed),
    (Phase::Stopping, Phase::Stopped),
    (Phase::Stopping, Phase::Waiting),
    (Phase::Backoff, Phase::Starting),
    (Phase::Backoff, Phase::Ready),
    (Phase::Backoff, Phase::Backoff),
    (Phase::Backoff, Phase::Failed),
    (Phase::Backoff, Phase::Stopped),
    (Phase::Backoff, Phase::Waiting),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Backoff, MaxRestarts, Probe, ProbeCheck};
    use std::path::PathBuf;

    fn svc(restart: RestartPolicy) -> Service {
        let mut s = crate::supervisor::testutil::service("web");
        s.restart = restart;
        s.backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
        };
        s.max_restarts = MaxRestarts {
            count: 2,
            within: Duration::from_secs(60),
        };
        s
    }

    fn with_readiness(mut s: Service) -> Service {
        s.readiness = Some(Probe {
            check: ProbeCheck::File(PathBuf::from("/ready")),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failures: 1,
            initial_delay: Duration::ZERO,
        });
        s
    }

    /// (name, service, state before, input, state after, effect)
    type Row<'a> = (&'a str, &'a Service, State, Input, State, Option<Effect>);

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    fn running(t0: Instant, ready: bool, stopping: Option<StopReason>) -> State {
        State::Running {
            since: t0,
            ready,
            stopping,
        }
    }

    #[test]
    fn transitions_follow_the_table() {
        let t0 = Instant::now();
        let always = svc(RestartPolicy::Always);
        let on_failure = svc(RestartPolicy::OnFailure);
        let no = svc(RestartPolicy::No);
        let probed = with_readiness(svc(RestartPolicy::Always));
        let now = secs(t0, 1);
        let backoff_until = Some(Effect::WakeAt(now + Duration::from_secs(1)));
        let b1 = State::Backoff {
            until: now + Duration::from_secs(1),
        };
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("start spawns", &always, State::Waiting, Input::Start, State::Waiting, Some(Effect::Spawn)),
            ("spawned without probe is ready", &always, State::Waiting, Input::Spawned, running(now, true, None), None),
            ("spawned with probe is starting", &probed, State::Waiting, Input::Spawned, running(now, false, None), None),
            ("readiness makes ready", &probed, running(t0, false, None), Input::Ready, running(t0, true, None), None),
            ("unready after ready", &probed, running(t0, true, None), Input::Unready, running(t0, false, None), None),
            ("liveness failure stops", &always, running(t0, true, None), Input::LivenessFailed, running(t0, true, Some(StopReason::Liveness)), Some(Effect::Stop)),
            ("crash with always backs off", &always, running(t0, true, None), Input::Ended(Exit::Exited(1)), b1, backoff_until.clone()),
            ("clean exit with always backs off", &always, running(t0, true, None), Input::Ended(Exit::Exited(0)), b1, backoff_until.clone()),
            ("crash with on-failure backs off", &on_failure, running(t0, true, None), Input::Ended(Exit::Signaled(9)), b1, backoff_until.clone()),
            ("clean exit with on-failure is exited", &on_failure, running(t0, true, None), Input::Ended(Exit::Exited(0)), State::Exited, None),
            ("liveness kill with on-failure restarts even on exit 0", &on_failure, running(t0, true, Some(StopReason::Liveness)), Input::Ended(Exit::Exited(0)), b1, backoff_until.clone()),
            ("crash with no is exited", &no, running(t0, true, None), Input::Ended(Exit::Exited(3)), State::Exited, None),
            ("end during shutdown is stopped", &always, running(t0, true, Some(StopReason::Shutdown)), Input::Ended(Exit::Signaled(15)), State::Stopped, None),
            ("backoff elapsed spawns", &always, State::Backoff { until: t0 }, Input::BackoffElapsed, State::Backoff { until: t0 }, Some(Effect::Spawn)),
            ("early wake is ignored", &always, State::Backoff { until: secs(t0, 5) }, Input::BackoffElapsed, State::Backoff { until: secs(t0, 5) }, None),
            ("spawn failure with always backs off", &always, State::Waiting, Input::SpawnFailed("x".into()), b1, backoff_until.clone()),
            ("spawn failure with no gives up", &no, State::Waiting, Input::SpawnFailed("x".into()), State::Failed, Some(Effect::GiveUp("could not be started".into()))),
            ("shutdown stops a running service", &always, running(t0, true, None), Input::Shutdown, running(t0, true, Some(StopReason::Shutdown)), Some(Effect::Stop)),
            ("shutdown during liveness stop re-stops", &always, running(t0, true, Some(StopReason::Liveness)), Input::Shutdown, running(t0, true, Some(StopReason::Shutdown)), Some(Effect::Stop)),
            ("shutdown while waiting", &always, State::Waiting, Input::Shutdown, State::Stopped, None),
            ("shutdown during backoff", &always, State::Backoff { until: t0 }, Input::Shutdown, State::Stopped, None),
            ("unmeetable dependency fails", &always, State::Waiting, Input::CannotStart("db failed".into()), State::Failed, Some(Effect::GiveUp("db failed".into()))),
            ("disabled ignores start", &always, State::Disabled, Input::Start, State::Disabled, None),
            ("late probe result after exit is ignored", &always, State::Exited, Input::Ready, State::Exited, None),
            ("probe result while stopping is ignored", &always, running(t0, false, Some(StopReason::Shutdown)), Input::Ready, running(t0, false, Some(StopReason::Shutdown)), None),
            ("second shutdown is ignored", &always, State::Stopped, Input::Shutdown, State::Stopped, None),
            ("hold stops a running service", &always, running(t0, true, None), Input::Hold, running(t0, true, Some(StopReason::Hold)), Some(Effect::Stop)),
            ("held end waits, not a failure", &always, running(t0, true, Some(StopReason::Hold)), Input::Ended(Exit::Signaled(15)), State::Waiting, None),
            ("held end with no restart still waits", &no, running(t0, true, Some(StopReason::Hold)), Input::Ended(Exit::Exited(1)), State::Waiting, None),
            ("hold during backoff waits", &always, State::Backoff { until: t0 }, Input::Hold, State::Waiting, None),
            ("shutdown wins over a hold", &always, running(t0, true, Some(StopReason::Hold)), Input::Shutdown, running(t0, true, Some(StopReason::Shutdown)), Some(Effect::Stop)),
            ("hold of an exited service is ignored", &always, State::Exited, Input::Hold, State::Exited, None),
        ];
        for (name, s, before, input, after, effect) in table {
            let mut t = Tracker::new(true);
            t.state = before;
            let got = t.step(input, s, now, 0.0);
            assert_eq!(t.state, after, "{name}: state");
            assert_eq!(got, effect, "{name}: effect");
        }
    }

    #[test]
    fn every_phase_change_is_in_the_allowed_table() {
        let t0 = Instant::now();
        let now = secs(t0, 1);
        let states = [
            State::Disabled,
            State::Waiting,
            running(t0, false, None),
            running(t0, true, None),
            running(t0, true, Some(StopReason::Liveness)),
            running(t0, true, Some(StopReason::Shutdown)),
            running(t0, true, Some(StopReason::Hold)),
            State::Backoff { until: t0 },
            State::Exited,
            State::Failed,
            State::Stopped,
        ];
        let inputs = [
            Input::Start,
            Input::Spawned,
            Input::SpawnFailed("x".into()),
            Input::Ready,
            Input::Unready,
            Input::LivenessFailed,
            Input::Ended(Exit::Exited(0)),
            Input::Ended(Exit::Exited(1)),
            Input::BackoffElapsed,
            Input::Shutdown,
            Input::CannotStart("x".into()),
            Input::Hold,
        ];
        for s in [
            svc(RestartPolicy::Always),
            svc(RestartPolicy::No),
            with_readiness(svc(RestartPolicy::OnFailure)),
        ] {
            for state in states {
                for input in inputs.clone() {
                    let mut t = Tracker::new(true);
                    t.state = state;
                    let from = t.phase();
                    t.step(input.clone(), &s, now, 0.5);
                    let to = t.phase();
                    assert!(
                        from == to || ALLOWED.contains(&(from, to)),
                        "{from:?} -> {to:?} on {input:?} is not in ALLOWED"
                    );
                }
            }
        }
    }

    #[test]
    fn a_crash_loop_backs_off_exponentially_then_gives_up() {
        let s = svc(RestartPolicy::Always); // count 2 within 60 s
        let mut t = Tracker::new(true);
        let mut now = Instant::now();
        t.step(Input::Spawned, &s, now, 0.0);
        let mut delays = vec![];
        loop {
            now += Duration::from_millis(100);
            match t.step(Input::Ended(Exit::Exited(1)), &s, now, 0.0) {
                Some(Effect::WakeAt(at)) => {
                    delays.push(at - now);
                    now = at;
                    assert_eq!(
                        t.step(Input::BackoffElapsed, &s, now, 0.0),
                        Some(Effect::Spawn)
                    );
                    t.step(Input::Spawned, &s, now, 0.0);
                }
                Some(Effect::GiveUp(why)) => {
                    assert_eq!(why, "restarted 2 times within 60s");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(delays, [Duration::from_secs(1), Duration::from_secs(2)]);
        assert_eq!(t.phase(), Phase::Failed);
        assert_eq!(t.restarts, 2);
        assert_eq!(t.last_exit.as_deref(), Some("exited 1"));
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut s = svc(RestartPolicy::Always);
        s.max_restarts.count = 100;
        let mut t = Tracker::new(true);
        let t0 = Instant::now();
        t.step(Input::Spawned, &s, t0, 0.0);
        // Two quick crashes: 1 s then 2 s.
        let mut now = t0;
        for want in [1, 2] {
            now += Duration::from_millis(10);
            let Some(Effect::WakeAt(at)) = t.step(Input::Ended(Exit::Exited(1)), &s, now, 0.0)
            else {
                panic!("expected a restart")
            };
            assert_eq!(at - now, Duration::from_secs(want));
            now = at;
            t.step(Input::BackoffElapsed, &s, now, 0.0);
            t.step(Input::Spawned, &s, now, 0.0);
        }
        // Then it runs for 10 s (stable_after = max(10 s, 8 s)) and crashes.
        now += Duration::from_secs(10);
        let Some(Effect::WakeAt(at)) = t.step(Input::Ended(Exit::Exited(1)), &s, now, 0.0) else {
            panic!("expected a restart")
        };
        assert_eq!(at - now, Duration::from_secs(1));
    }

    #[test]
    fn dependency_facts_are_remembered() {
        let s = with_readiness(svc(RestartPolicy::OnFailure));
        let mut t = Tracker::new(true);
        let now = Instant::now();
        assert!(!t.ever_started);
        t.step(Input::Spawned, &s, now, 0.0);
        assert!(t.ever_started && !t.ever_ready);
        t.step(Input::Ready, &s, now, 0.0);
        assert!(t.ever_ready && !t.completed_ok);
        t.step(Input::Ended(Exit::Exited(0)), &s, now, 0.0);
        assert!(t.completed_ok);
        assert_eq!(t.phase(), Phase::Exited);
    }

    #[test]
    fn a_liveness_kill_that_exits_zero_is_not_a_completion() {
        let s = svc(RestartPolicy::No);
        let mut t = Tracker::new(true);
        let now = Instant::now();
        t.step(Input::Spawned, &s, now, 0.0);
        t.step(Input::LivenessFailed, &s, now, 0.0);
        t.step(Input::Ended(Exit::Exited(0)), &s, now, 0.0);
        assert!(!t.completed_ok);
        assert_eq!(t.phase(), Phase::Exited);
    }
}
