//! When to snapshot, pure: a dirty flag fed by change events, a debounce that
//! waits for quiet, a ceiling so a file written continuously is never starved
//! (notify-debouncer-style timers restart forever on such a file), and a
//! periodic scan every `interval` that catches what a watcher missed (inotify
//! overflow, a directory created before its watch). The caller owns the clock
//! and the timer: it asks [`Schedule::next_wake`], sleeps until then or until
//! a change arrives, and calls [`Schedule::due`].

use std::time::{Duration, Instant};

/// Longest a change may wait for quiet before it is snapshotted anyway.
pub const DEFAULT_CEILING: Duration = Duration::from_secs(60);

/// The snapshot timing state.
#[derive(Debug, Clone)]
pub struct Schedule {
    debounce: Duration,
    ceiling: Duration,
    interval: Duration,
    first_change: Option<Instant>,
    last_change: Option<Instant>,
    last_scan: Instant,
}

impl Schedule {
    /// A schedule starting at `now` (right after the restore).
    pub fn new(debounce: Duration, ceiling: Duration, interval: Duration, now: Instant) -> Self {
        Self {
            debounce,
            // A ceiling below the debounce would make the debounce meaningless.
            ceiling: ceiling.max(debounce),
            interval,
            first_change: None,
            last_change: None,
            last_scan: now,
        }
    }

    /// A watcher saw a change under a persisted path.
    pub fn changed(&mut self, now: Instant) {
        self.first_change.get_or_insert(now);
        self.last_change = Some(now);
    }

    /// Are there changes not yet snapshotted?
    pub fn dirty(&self) -> bool {
        self.first_change.is_some()
    }

    /// When the caller should look again (the earliest deadline).
    pub fn next_wake(&self) -> Instant {
        let periodic = self.last_scan + self.interval;
        match (self.first_change, self.last_change) {
            (Some(first), Some(last)) => (last + self.debounce)
                .min(first + self.ceiling)
                .min(periodic),
            _ => periodic,
        }
    }

    /// Should a snapshot run now?
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_wake()
    }

    /// A snapshot was taken at `now` (whether or not anything changed).
    /// Changes seen after the scan started (`started`) stay pending.
    pub fn snapshot_taken(&mut self, started: Instant, now: Instant) {
        self.last_scan = now;
        match self.last_change {
            Some(last) if last > started => {
                self.first_change = Some(last);
            }
            _ => {
                self.first_change = None;
                self.last_change = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn quiet_after_a_change_triggers_after_the_debounce() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(s(10), s(60), s(180), t0);
        assert!(!sc.due(t0 + s(9)));
        sc.changed(t0 + s(1));
        assert!(!sc.due(t0 + s(10)));
        assert!(sc.due(t0 + s(11)));
        assert_eq!(sc.next_wake(), t0 + s(11));
    }

    #[test]
    fn a_file_written_continuously_is_not_starved() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(s(10), s(60), s(180), t0);
        // A write every 2 s: the debounce alone would never fire.
        let mut due_at = None;
        for i in 0..100 {
            let now = t0 + s(2 * i);
            sc.changed(now);
            if sc.due(now) {
                due_at = Some(2 * i);
                break;
            }
        }
        assert_eq!(due_at, Some(60));
    }

    #[test]
    fn periodic_scans_run_without_events() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(s(10), s(60), s(180), t0);
        assert!(!sc.due(t0 + s(179)));
        assert!(sc.due(t0 + s(180)));
        sc.snapshot_taken(t0 + s(180), t0 + s(181));
        assert_eq!(sc.next_wake(), t0 + s(361));
    }

    #[test]
    fn changes_during_a_snapshot_stay_pending() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(s(10), s(60), s(180), t0);
        sc.changed(t0 + s(1));
        sc.changed(t0 + s(13));
        sc.snapshot_taken(t0 + s(12), t0 + s(14));
        assert!(sc.dirty());
        assert_eq!(sc.next_wake(), t0 + s(23));
        sc.snapshot_taken(t0 + s(23), t0 + s(24));
        assert!(!sc.dirty());
    }

    #[test]
    fn a_ceiling_below_the_debounce_is_raised_to_it() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(s(30), s(5), s(180), t0);
        sc.changed(t0);
        assert_eq!(sc.next_wake(), t0 + s(30));
    }
}
