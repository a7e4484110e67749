//! Services held from outside (a restore stops the services that use the
//! restored paths, then starts them again): see [`crate::supervisor::control`].

use super::Supervisor;
use crate::supervisor::control::Command;
use crate::supervisor::state::{Input, State};

impl Supervisor {
    /// Hold or release services (see [`crate::supervisor::control`]).
    pub(super) fn on_command(&mut self, cmd: Command) {
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
    pub(super) fn answer_holds(&mut self) {
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
}
