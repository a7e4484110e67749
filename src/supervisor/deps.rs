//! Dependency conditions and stop order, as pure functions over trackers.
//!
//! Start: a waiting service starts when every `depends_on` condition is met,
//! and is given up when one can never be met (the dependency failed, or ended
//! without reaching the condition and will not run again). The manifest
//! rejects a dependency on a disabled service; should one get here anyway it
//! counts as met rather than blocking forever.
//!
//! Stop: reverse dependency order — a service is stopped only once nothing
//! that depends on it is still running.

use super::state::Tracker;
use crate::manifest::{Condition, Service};

/// Where one `depends_on` condition stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepStatus {
    /// Met: the dependent may start.
    Met,
    /// Not yet.
    Pending,
    /// Never: the reason, naming the dependency.
    Never(String),
}

/// The status of `cond` on the dependency `name` tracked by `dep`.
pub fn condition(name: &str, cond: Condition, dep: &Tracker) -> DepStatus {
    use super::state::State;
    if dep.state == State::Disabled {
        return DepStatus::Met;
    }
    let (met, what) = match cond {
        Condition::Started => (dep.ever_started, "was never started"),
        Condition::Healthy => (dep.ever_ready, "never became ready"),
        Condition::CompletedSuccessfully => (dep.completed_ok, "did not complete successfully"),
    };
    if met {
        DepStatus::Met
    } else if dep.is_terminal() {
        let how = dep
            .last_exit
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        DepStatus::Never(format!("dependency `{name}` {what}{how}"))
    } else {
        DepStatus::Pending
    }
}

/// All conditions of `svc` together: `Never` wins over `Pending`.
/// `index` maps a service name to its position in `trackers`.
pub fn all(
    svc: &Service,
    trackers: &[Tracker],
    index: impl Fn(&str) -> Option<usize>,
) -> DepStatus {
    let mut pending = false;
    for d in &svc.depends_on {
        // The manifest rejects unknown names; should one slip through,
        // waiting forever would be worse than saying so.
        let Some(i) = index(&d.service) else {
            return DepStatus::Never(format!("unknown dependency `{}`", d.service));
        };
        let Some(t) = trackers.get(i) else {
            return DepStatus::Never(format!("unknown dependency `{}`", d.service));
        };
        match condition(&d.service, d.condition, t) {
            DepStatus::Met => {}
            DepStatus::Pending => pending = true,
            never @ DepStatus::Never(_) => return never,
        }
    }
    if pending {
        DepStatus::Pending
    } else {
        DepStatus::Met
    }
}

/// For each service, the indices of the services that depend on it.
pub fn dependents(services: &[Service]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); services.len()];
    for (i, s) in services.iter().enumerate() {
        for d in &s.depends_on {
            if let Some(j) = services.iter().position(|x| x.name == d.service) {
                if !out[j].contains(&i) {
                    out[j].push(i);
                }
            }
        }
    }
    out
}

/// During shutdown: may service `i` be stopped now? Only when none of its
/// dependents still has a process group.
pub fn may_stop(i: usize, dependents: &[Vec<usize>], trackers: &[Tracker]) -> bool {
    dependents
        .get(i)
        .map(|ds| {
            ds.iter()
                .all(|&d| !matches!(trackers.get(d), Some(t) if t.is_running()))
        })
        .unwrap_or(true)
}

/// While stopping the services in `set` (and only those): may service
/// `i` be stopped now? Only when none of its dependents *in the set*
/// still has a process group — the same reverse order as a shutdown,
/// restricted to the set; dependents outside it keep running.
pub fn may_stop_within(
    i: usize,
    dependents: &[Vec<usize>],
    trackers: &[Tracker],
    set: &[bool],
) -> bool {
    dependents
        .get(i)
        .map(|ds| {
            ds.iter().all(|&d| {
                !set.get(d).copied().unwrap_or(false)
                    || !matches!(trackers.get(d), Some(t) if t.is_running())
            })
        })
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Dependency;
    use crate::supervisor::exit::Exit;
    use crate::supervisor::state::{State, StopReason};
    use std::time::Instant;

    fn tracker(state: State, started: bool, ready: bool, ok: bool) -> Tracker {
        let mut t = Tracker::new(true);
        t.state = state;
        t.ever_started = started;
        t.ever_ready = ready;
        t.completed_ok = ok;
        t
    }

    fn running() -> State {
        State::Running {
            since: Instant::now(),
            ready: false,
            stopping: None,
        }
    }

    #[test]
    fn conditions_are_met_pending_or_never() {
        use Condition::*;
        let starting = tracker(running(), true, false, false);
        let ready = tracker(running(), true, true, false);
        let waiting = tracker(State::Waiting, false, false, false);
        let done_ok = tracker(State::Exited, true, true, true);
        let mut done_bad = tracker(State::Exited, true, true, false);
        done_bad.last_exit = Some(Exit::Exited(1).to_string());
        let failed_never_ran = tracker(State::Failed, false, false, false);
        let crashed_before_ready_restarting = tracker(
            State::Backoff {
                until: Instant::now(),
            },
            true,
            false,
            false,
        );
        let disabled = Tracker::new(false);
        let never = |what: &str| DepStatus::Never(format!("dependency `db` {what}"));
        #[rustfmt::skip]
        let table = [
            ("started: running", Started, &starting, DepStatus::Met),
            ("started: waiting", Started, &waiting, DepStatus::Pending),
            ("started: never ran", Started, &failed_never_ran, never("was never started")),
            ("healthy: starting", Healthy, &starting, DepStatus::Pending),
            ("healthy: ready", Healthy, &ready, DepStatus::Met),
            ("healthy: restarting", Healthy, &crashed_before_ready_restarting, DepStatus::Pending),
            ("healthy: gave up", Healthy, &failed_never_ran, never("never became ready")),
            ("completed: running", CompletedSuccessfully, &ready, DepStatus::Pending),
            ("completed: exit 0", CompletedSuccessfully, &done_ok, DepStatus::Met),
            ("completed: exit 1", CompletedSuccessfully, &done_bad, never("did not complete successfully (exited 1)")),
            ("disabled counts as met", CompletedSuccessfully, &disabled, DepStatus::Met),
        ];
        for (name, cond, t, want) in table {
            assert_eq!(condition("db", cond, t), want, "{name}");
        }
    }

    fn service(name: &str, deps: &[&str]) -> Service {
        let mut s = crate::supervisor::testutil::service(name);
        s.depends_on = deps
            .iter()
            .map(|d| Dependency {
                service: d.to_string(),
                condition: Condition::Started,
            })
            .collect();
        s
    }

    #[test]
    fn never_wins_over_pending_and_all_met_is_met() {
        let services = [
            service("a", &[]),
            service("b", &[]),
            service("c", &["a", "b"]),
        ];
        let index = |n: &str| services.iter().position(|s| s.name == n);
        let waiting = tracker(State::Waiting, false, false, false);
        let up = tracker(running(), true, true, false);
        let dead = tracker(State::Failed, false, false, false);
        let c = &services[2];
        let t = [up.clone(), up.clone(), waiting.clone()];
        assert_eq!(all(c, &t, index), DepStatus::Met);
        let t = [up.clone(), waiting.clone(), waiting.clone()];
        assert_eq!(all(c, &t, index), DepStatus::Pending);
        let t = [waiting.clone(), dead, waiting.clone()];
        assert!(matches!(all(c, &t, index), DepStatus::Never(_)));
    }

    #[test]
    fn services_stop_only_after_their_dependents() {
        // web -> api -> db; worker -> db
        let services = [
            service("db", &[]),
            service("api", &["db"]),
            service("web", &["api"]),
            service("worker", &["db"]),
        ];
        let deps = dependents(&services);
        assert_eq!(deps, vec![vec![1, 3], vec![2], vec![], vec![]]);
        let up = tracker(running(), true, true, false);
        let stopping = tracker(
            State::Running {
                since: Instant::now(),
                ready: true,
                stopping: Some(StopReason::Shutdown),
            },
            true,
            true,
            false,
        );
        let stopped = tracker(State::Stopped, true, true, false);
        let all_up = [up.clone(), up.clone(), up.clone(), up.clone()];
        let may: Vec<bool> = (0..4).map(|i| may_stop(i, &deps, &all_up)).collect();
        assert_eq!(may, [false, false, true, true]);
        // A dependent still stopping holds its dependency back.
        let t = [up.clone(), up.clone(), stopping, stopped.clone()];
        assert_eq!(
            (0..4).map(|i| may_stop(i, &deps, &t)).collect::<Vec<_>>(),
            [false, false, true, true]
        );
        let t = [up.clone(), stopped.clone(), stopped.clone(), stopped];
        assert!(may_stop(0, &deps, &t));
    }

    #[test]
    fn a_held_set_stops_in_reverse_order_without_waiting_for_outsiders() {
        // web -> api -> db; worker -> db. Hold db and api only.
        let services = [
            service("db", &[]),
            service("api", &["db"]),
            service("web", &["api"]),
            service("worker", &["db"]),
        ];
        let deps = dependents(&services);
        let up = tracker(running(), true, true, false);
        let all_up = [up.clone(), up.clone(), up.clone(), up.clone()];
        let set = [true, true, false, false];
        let may: Vec<bool> = (0..2)
            .map(|i| may_stop_within(i, &deps, &all_up, &set))
            .collect();
        // api first (web and worker are outside the set: not waited for).
        assert_eq!(may, [false, true]);
        let waiting = tracker(State::Waiting, true, true, false);
        let t = [up.clone(), waiting, up.clone(), up];
        assert!(may_stop_within(0, &deps, &t, &set));
    }
}
