//! The PID-1 process supervisor behind `stackctl up`.
//!
//! Pure core, thin I/O shell:
//!
//! - [`state`]: one service's life as a pure state machine (table-tested).
//! - [`deps`]: `depends_on` conditions and reverse-order stopping (pure).
//! - [`backoff`]: restart delays with jitter and the give-up window (pure).
//! - [`exit`]: how a process ended, kept as exit code or signal.
//! - [`reaper`]: subreaper + the one `waitpid(-1)` loop and its pid table.
//! - [`fds`]: inherited descriptors, sealed so services do not get them.
//! - [`spawn`]: starting a process group with exactly the service's env.
//! - [`nofile`]: the open-file limit, raised for stackctl, as it was for services.
//! - [`preflight`]: what would keep a service from starting here, found first.
//! - [`group`]: a run's process group until it is really empty.
//! - [`probe`]: readiness and liveness checks (http, tcp, exec, file, log).
//! - [`logs`]: service output to stdout (text or JSON) and rotated files.
//! - [`control`]: stop and start named services from outside (a restore).
//! - [`run`](mod@run): the event loop that ties them together.

pub mod backoff;
pub mod control;
pub mod deps;
pub mod exit;
pub mod fds;
pub mod group;
pub mod logs;
pub mod nofile;
pub mod preflight;
pub mod probe;
pub mod reaper;
pub mod run;
pub mod spawn;
pub mod state;
#[cfg(test)]
pub(crate) mod testutil;

use std::time::Duration;

pub use exit::Exit;
pub use reaper::Reaper;
pub use run::run;

/// How `run` behaves.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Format of the service log lines on stdout.
    pub log_format: crate::cli::LogFormat,
    /// Total time for stopping every service at shutdown (then SIGKILL).
    pub budget: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            log_format: crate::cli::LogFormat::Text,
            // Docker sends SIGKILL 10 s after SIGTERM; keep a second for the
            // rest of the shutdown.
            budget: Duration::from_secs(9),
        }
    }
}

/// How the supervisor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on request; every service ended as its policy allows.
    Clean,
    /// This non-optional service failed for good (gave up, or could never
    /// start), and the stack was stopped because of it.
    GaveUp(String),
}
