//! Test-only fault injection: `STACKCTL_TEST_PANIC=<point>` makes the named
//! point panic once per process (or every time, for `group-always`), so
//! tests can prove that a panicking task fails alone (issue 12 item 8).
//! Debug builds only: in a release build [`panic_once`] is empty and the
//! variable is ignored.
//!
//! Points: `conn` (the first gateway connection task), `supervisor` (the
//! supervisor's event loop, once every service runs and is ready),
//! `up-running` (`stackctl up` itself, once every service is ready),
//! `group` (a process-group watcher, on the first stop order one gets), `up`
//! (`stackctl up` itself, once the services have stopped, before the final
//! snapshot), `group-always` (a process-group watcher, on every stop order:
//! its replacement panics too, so the group is killed), `reaper` (the
//! reaping task, right after it hands the first exit status of a child it
//! spawned to its waiter, with the table locked).

/// Panic if `STACKCTL_TEST_PANIC` names `point` and it has not fired yet.
/// The panic is located at the caller: that is the place it stands for.
#[track_caller]
pub fn panic_once(point: &'static str) {
    #[cfg(debug_assertions)]
    {
        use std::sync::Mutex;
        static FIRED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
        if !armed(point) {
            return;
        }
        let first = match FIRED.lock() {
            Ok(mut fired) if !fired.contains(&point) => {
                fired.push(point);
                true
            }
            _ => false,
        };
        if first {
            panic!("STACKCTL_TEST_PANIC: injected panic at `{point}`");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// Panic every time, if `STACKCTL_TEST_PANIC` names `point`: for a place
/// whose second panic has its own way out.
#[track_caller]
pub fn panic_always(point: &'static str) {
    if armed(point) {
        panic!("STACKCTL_TEST_PANIC: injected panic at `{point}`");
    }
}

/// Whether `STACKCTL_TEST_PANIC` names `point` (never in a release build),
/// for a point that has to wait for its moment first.
pub fn armed(point: &str) -> bool {
    #[cfg(debug_assertions)]
    return std::env::var("STACKCTL_TEST_PANIC").ok().as_deref() == Some(point);
    #[cfg(not(debug_assertions))]
    {
        let _ = point;
        false
    }
}
