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
mod tests;
