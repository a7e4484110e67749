//! The tracker's behaviour as tables: every transition, every phase change
//! checked against [`super::ALLOWED`], and the restart policy over time.

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
        let Some(Effect::WakeAt(at)) = t.step(Input::Ended(Exit::Exited(1)), &s, now, 0.0) else {
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
