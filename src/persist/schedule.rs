//! When to snapshot, pure: a dirty flag fed by change events, a debounce that
//! waits for quiet, a ceiling so a file written continuously is never starved
//! (notify-debouncer-style timers restart forever on such a file), and a
//! periodic scan every `interval` that catches what a watcher missed (inotify
//! overflow, a directory created before its watch). The caller owns the clock
//! and the timer: it asks [`Schedule::next_wake`], sleeps until then or until
//! a change arrives, and calls [`Schedule::due`].
//!
//! The first change after a quiet spell (no change for a whole debounce) is
//! snapshotted one debounce after it, whatever follows: a directory written
//! without pause from the start never goes quiet, and waiting for the
//! ceiling would lose a container's first minute (issue 17). Changes after
//! that wait for quiet as usual, up to the ceiling.

use std::time::{Duration, Instant};

/// Longest a change may wait for quiet before it is snapshotted anyway.
pub const DEFAULT_CEILING: Duration = Duration::from_secs(60);

/// Which rule sets the next snapshot's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// One debounce after the first change following a quiet spell.
    FirstChange,
    /// Changes, then a debounce of quiet.
    Debounce,
    /// Changes that never went quiet, at the ceiling.
    Ceiling,
    /// The periodic scan for what a watcher missed.
    Periodic,
}

impl Wake {
    /// The name the admin API and `status` show.
    pub fn as_str(self) -> &'static str {
        match self {
            Wake::FirstChange => "first change",
            Wake::Debounce => "debounce",
            Wake::Ceiling => "ceiling",
            Wake::Periodic => "periodic scan",
        }
    }
}

/// The snapshot timing state.
#[derive(Debug, Clone)]
pub struct Schedule {
    debounce: Duration,
    ceiling: Duration,
    interval: Duration,
    first_change: Option<Instant>,
    last_change: Option<Instant>,
    last_scan: Instant,
    /// The pending changes began after a quiet spell: due one debounce
    /// after the first of them.
    leading: bool,
    /// The last change ever seen, kept across snapshots: it tells a quiet
    /// spell from a pause between two writes.
    last_seen: Option<Instant>,
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
            leading: false,
            last_seen: None,
        }
    }

    /// A watcher saw a change under a persisted path.
    pub fn changed(&mut self, now: Instant) {
        if self.first_change.is_none() {
            self.leading = self
                .last_seen
                .is_none_or(|l| now.saturating_duration_since(l) >= self.debounce);
            self.first_change = Some(now);
        }
        self.last_change = Some(now);
        self.last_seen = Some(now);
    }

    /// Are there changes not yet snapshotted?
    pub fn dirty(&self) -> bool {
        self.first_change.is_some()
    }

    /// Since when changes are pending (`None` when there are none).
    pub fn dirty_since(&self) -> Option<Instant> {
        self.first_change
    }

    /// When the caller should look again (the earliest deadline).
    pub fn next_wake(&self) -> Instant {
        self.next().0
    }

    /// The earliest deadline and which rule set it (for `status`).
    pub fn next(&self) -> (Instant, Wake) {
        let periodic = (self.last_scan + self.interval, Wake::Periodic);
        let change = match (self.first_change, self.last_change) {
            (Some(first), _) if self.leading => Some((first + self.debounce, Wake::FirstChange)),
            (Some(first), Some(last)) => {
                let (quiet, ceiling) = (last + self.debounce, first + self.ceiling);
                Some(if ceiling < quiet {
                    (ceiling, Wake::Ceiling)
                } else {
                    (quiet, Wake::Debounce)
                })
            }
            _ => None,
        };
        match change {
            Some(c) if c.0 <= periodic.0 => c,
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
                // Still being written: from now on, wait for quiet.
                self.first_change = Some(last);
                self.leading = false;
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

    /// Whether there is a write at second `t`.
    type Writes = fn(u64) -> bool;

    /// Seconds at which snapshots run over `horizon` seconds, a write at
    /// every second `writes` says, snapshots taking no time; debounce 10 s,
    /// ceiling 60 s, interval 180 s.
    fn snapshots(horizon: u64, writes: impl Fn(u64) -> bool) -> Vec<u64> {
        let t0 = Instant::now();
        let mut sc = Schedule::new(s(10), s(60), s(180), t0);
        let mut taken = Vec::new();
        for t in 0..=horizon {
            let now = t0 + s(t);
            if writes(t) {
                sc.changed(now);
            }
            if sc.due(now) {
                taken.push(t);
                sc.snapshot_taken(now, now);
            }
        }
        taken
    }

    #[test]
    fn the_first_change_is_snapshotted_within_the_debounce_then_changes_wait_for_quiet() {
        let table: [(&str, Writes, Vec<u64>); 5] = [
            ("one write, then quiet", |t| t == 5, vec![15]),
            // Never quiet: the first snapshot comes one debounce after the
            // first write, not at the ceiling; then the ceiling paces it.
            (
                "a write every 2 s from the start",
                |t| t % 2 == 0,
                vec![10, 72, 134],
            ),
            // A write every 2 s for 20 s: the first after 10 s, the rest
            // once quiet.
            ("a burst of 20 s", |t| t <= 20 && t % 2 == 0, vec![10, 30]),
            // A quiet spell in between: the next burst leads again.
            (
                "two bursts",
                |t| (t <= 20 || (100..=140).contains(&t)) && t % 2 == 0,
                vec![10, 30, 110, 150],
            ),
            // Pauses shorter than the debounce are not quiet spells.
            ("a write every 7 s", |t| t % 7 == 0, vec![10, 74, 137]),
        ];
        for (name, writes, want) in table {
            assert_eq!(snapshots(150, writes), want, "{name}");
        }
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
    fn the_next_wake_names_the_rule_that_set_it() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(s(10), s(60), s(180), t0);
        assert_eq!(sc.next(), (t0 + s(180), Wake::Periodic));
        assert_eq!(sc.dirty_since(), None);
        sc.changed(t0 + s(1));
        assert_eq!(sc.next(), (t0 + s(11), Wake::FirstChange));
        assert_eq!(sc.dirty_since(), Some(t0 + s(1)));
        // Still written during the snapshot: wait for quiet, up to the ceiling.
        sc.changed(t0 + s(12));
        sc.snapshot_taken(t0 + s(11), t0 + s(13));
        assert_eq!(sc.next(), (t0 + s(22), Wake::Debounce));
        for t in (14..80).step_by(5) {
            sc.changed(t0 + s(t));
        }
        assert_eq!(sc.next(), (t0 + s(72), Wake::Ceiling));
        assert_eq!(Wake::Periodic.as_str(), "periodic scan");
    }

    #[test]
    fn a_ceiling_below_the_debounce_is_raised_to_it() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(s(30), s(5), s(180), t0);
        sc.changed(t0);
        assert_eq!(sc.next_wake(), t0 + s(30));
    }
}
