//! The stack's stop: the budget clock, stop signals capped by what is left
//! of it, SIGKILL for everyone when it is spent (or forced), and a
//! non-optional service that gives up stopping the stack.

use super::{now, Supervisor};
use crate::supervisor::exit::signal_name;
use crate::supervisor::group::Ctl;
use crate::supervisor::state::State;
use crate::supervisor::Outcome;

impl Supervisor {
    pub(super) fn begin_shutdown(&mut self, why: &str) {
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
    pub(super) fn kill_all(&mut self, why: &str) {
        self.forced = true;
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(run) = &slot.run {
                tracing::warn!(service = %self.m.services[i].name, reason = why, "killing process group");
                let _ = run.ctl.send(Ctl::Kill);
            }
        }
    }

    pub(super) fn send_stop(&mut self, i: usize) {
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
        tracing::info!(service = %svc.name, signal = %signal_name(svc.stop_signal), timeout_ms = timeout.as_millis() as u64, "stopping");
        let _ = run.ctl.send(Ctl::Stop {
            signal: svc.stop_signal,
            timeout,
        });
    }

    /// Give service `i`'s group the stop order again, if it is stopping
    /// (its watcher was replaced and may have lost the first one).
    pub(super) fn resend_stop(&mut self, i: usize) {
        if let State::Running {
            stopping: Some(_), ..
        } = self.trackers[i].state
        {
            self.send_stop(i);
        }
    }

    pub(super) fn give_up(&mut self, i: usize, reason: &str) {
        let svc = self.svc(i);
        let name = svc.name.clone();
        if svc.optional {
            tracing::error!(service = %name, reason, "gave up on optional service; the stack keeps running");
            return;
        }
        tracing::error!(service = %name, reason, "gave up on service; stopping the stack");
        if self.outcome == Outcome::Clean {
            self.outcome = Outcome::GaveUp(name.clone());
        }
        // Through `up`'s stop request, as a signal's: the periodic backups
        // end too, and the stop's log line names the service.
        let why = format!("service `{name}` gave up");
        self.shutdown.request_stop_for(&why);
        self.begin_shutdown(&why);
    }
}
