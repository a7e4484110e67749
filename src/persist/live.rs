//! What this process last saw of persistence while `up` runs, for
//! `GET /admin/persist` and `stackctl status`: the last push, the write
//! lease, the large files of the current snapshot, the next scheduled
//! snapshot and the changes not snapshotted yet.
//!
//! Everything here is an observation, never a question asked on demand: the
//! admin API must answer at once even while a snapshot holds the repository
//! for minutes, so the persister and the snapshot loop record what they see
//! as they see it ([`Live`]), and a reader only copies it ([`Live::seen`]).
//! A field stays `None` until there is something to say (no lease taken yet,
//! no blob store, the snapshot loop not started).
//!
//! Times are seconds since the epoch; the loop's monotonic deadlines are
//! turned into wall-clock times when recorded.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::lease::LeaseInfo;
use super::schedule::{Schedule, Wake};
use super::Persister;

/// The newest snapshot on the remote, and when this process pushed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The commit id.
    pub snapshot: String,
    /// When the push succeeded.
    pub time: i64,
}

/// The write lease as this process last read or wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The holder's instance id.
    pub holder: String,
    /// Its hostname (leases of older versions do not name it).
    pub host: Option<String>,
    /// This process holds it.
    pub mine: bool,
    /// Since when this holder holds it, as far as this process knows (the
    /// first heartbeat of it seen here).
    pub since: i64,
    /// Its last heartbeat.
    pub renewed: i64,
    /// When it may be taken over without a further heartbeat.
    pub expires: i64,
}

/// The large files of the newest snapshot (taken or restored here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LargeFiles {
    /// The blob store, as its logs name it (no secret).
    pub store: String,
    /// How many large files the snapshot refers to.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// When the snapshot loop will look next, and why then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    /// The time.
    pub time: i64,
    /// What set it.
    pub reason: Wake,
}

/// Changes the watcher saw that no snapshot holds yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// There are some.
    pub dirty: bool,
    /// The first of them.
    pub since: Option<i64>,
}

/// A copy of everything observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// The last push of this process.
    pub last_push: Option<Push>,
    /// The write lease (`None`: none taken or seen yet, or released).
    pub lease: Option<Lease>,
    /// `None` without a blob store, or before the first snapshot or restore.
    pub large_files: Option<LargeFiles>,
    /// `None` while the snapshot loop does not run.
    pub next_snapshot: Option<Next>,
    /// `None` while the snapshot loop does not run.
    pub changes: Option<Changes>,
}

/// The shared observations (one per persister).
#[derive(Debug, Default)]
pub struct Live(Mutex<Seen>);

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `at` (monotonic) as wall-clock seconds, given the same moment on both clocks.
fn wall(at: Instant, now: Instant, wall_now: SystemTime) -> i64 {
    let t = if at >= now {
        wall_now.checked_add(at - now)
    } else {
        wall_now.checked_sub(now - at)
    };
    t.map_or(0, unix)
}

impl Live {
    fn with<R>(&self, f: impl FnOnce(&mut Seen) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A copy of what was seen.
    pub fn seen(&self) -> Seen {
        self.with(|s| s.clone())
    }

    /// The snapshot `id` reached the remote at `time`.
    pub fn pushed(&self, id: String, time: SystemTime) {
        self.with(|s| {
            s.last_push = Some(Push {
                snapshot: id,
                time: unix(time),
            })
        });
    }

    /// The lease ref says `info` (`None`, or no instance: nobody holds it);
    /// `me` is this process's instance id, `ttl` the lease's lifetime.
    pub fn lease(&self, info: Option<&LeaseInfo>, me: &str, ttl: Duration) {
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        self.with(|s| {
            s.lease = info.filter(|l| !l.instance.is_empty()).map(|l| {
                let since = match &s.lease {
                    Some(before) if before.holder == l.instance => before.since.min(l.heartbeat),
                    _ => l.heartbeat,
                };
                Lease {
                    holder: l.instance.clone(),
                    host: l.holder.as_ref().map(|h| h.host.clone()),
                    mine: l.instance == me,
                    since,
                    renewed: l.heartbeat,
                    expires: l.heartbeat.saturating_add(ttl),
                }
            })
        });
    }

    /// The newest snapshot refers to `files` large files of `bytes` in `store`
    /// (`None`: there is no blob store).
    pub fn large_files(&self, store: Option<String>, files: u64, bytes: u64) {
        self.with(|s| {
            s.large_files = store.map(|store| LargeFiles {
                store,
                files,
                bytes,
            })
        });
    }

    /// The snapshot loop's schedule as of now; `None` once the loop stopped.
    pub fn scheduled(&self, schedule: Option<&Schedule>) {
        self.scheduled_at(schedule, Instant::now(), SystemTime::now());
    }

    fn scheduled_at(&self, schedule: Option<&Schedule>, now: Instant, wall_now: SystemTime) {
        self.with(|s| match schedule {
            Some(sc) => {
                let (at, reason) = sc.next();
                s.next_snapshot = Some(Next {
                    time: wall(at, now, wall_now),
                    reason,
                });
                s.changes = Some(Changes {
                    dirty: sc.dirty(),
                    since: sc.dirty_since().map(|t| wall(t, now, wall_now)),
                });
            }
            None => {
                s.next_snapshot = None;
                s.changes = None;
            }
        });
    }
}

impl Persister {
    /// What this process saw (see the module docs).
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Record the lease ref as read or written (`None`: absent).
    pub(super) fn saw_lease(&self, info: Option<&LeaseInfo>) {
        if !self.tuning.lease_ttl.is_zero() {
            self.live.lease(info, &self.instance, self.tuning.lease_ttl);
        }
    }

    /// Record the large files (count, bytes) of a snapshot just taken or
    /// restored in full.
    pub(super) fn saw_large(&self, files: u64, bytes: u64) {
        let store = self.blobs.as_ref().map(|b| b.describe());
        self.live.large_files(store, files, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::lease::Holder;

    fn lease(instance: &str, heartbeat: i64) -> LeaseInfo {
        LeaseInfo {
            instance: instance.into(),
            heartbeat,
            holder: Some(Holder {
                host: "box".into(),
                ns: "pid:[1]".into(),
                pid: 7,
                start: 1,
            }),
        }
    }

    #[test]
    fn a_lease_keeps_its_holders_first_heartbeat_and_a_new_holder_starts_over() {
        let live = Live::default();
        let ttl = Duration::from_secs(120);
        live.lease(None, "me", ttl);
        assert_eq!(live.seen().lease, None);
        live.lease(Some(&lease("me", 1_000)), "me", ttl);
        live.lease(Some(&lease("me", 1_030)), "me", ttl);
        assert_eq!(
            live.seen().lease,
            Some(Lease {
                holder: "me".into(),
                host: Some("box".into()),
                mine: true,
                since: 1_000,
                renewed: 1_030,
                expires: 1_150,
            })
        );
        let other = LeaseInfo {
            holder: None,
            ..lease("other", 2_000)
        };
        live.lease(Some(&other), "me", ttl);
        let seen = live.seen().lease.unwrap();
        assert_eq!(
            (seen.mine, seen.since, seen.host),
            (false, 2_000, None),
            "another holder, of an older version"
        );
        // Released: nobody holds it.
        live.lease(Some(&lease("", 2_100)), "me", ttl);
        assert_eq!(live.seen().lease, None);
    }

    #[test]
    fn large_files_need_a_store() {
        let live = Live::default();
        live.large_files(Some("dir:/b".into()), 2, 300);
        assert_eq!(
            live.seen().large_files,
            Some(LargeFiles {
                store: "dir:/b".into(),
                files: 2,
                bytes: 300
            })
        );
        live.large_files(None, 0, 0);
        assert_eq!(live.seen().large_files, None);
    }

    #[test]
    fn the_schedule_becomes_wall_clock_times_with_a_reason() {
        let live = Live::default();
        let (now, wall_now) = (Instant::now(), UNIX_EPOCH + Duration::from_secs(10_000));
        let s = Duration::from_secs;
        let mut sc = Schedule::new(s(10), s(60), s(180), now);
        live.scheduled_at(Some(&sc), now, wall_now);
        let seen = live.seen();
        assert_eq!(
            seen.next_snapshot,
            Some(Next {
                time: 10_180,
                reason: Wake::Periodic
            })
        );
        assert_eq!(
            seen.changes,
            Some(Changes {
                dirty: false,
                since: None
            })
        );
        sc.changed(now + s(5));
        live.scheduled_at(Some(&sc), now + s(6), wall_now + s(6));
        let seen = live.seen();
        assert_eq!(
            seen.next_snapshot,
            Some(Next {
                time: 10_015,
                reason: Wake::FirstChange
            })
        );
        assert_eq!(
            seen.changes,
            Some(Changes {
                dirty: true,
                since: Some(10_005)
            })
        );
        live.scheduled_at(None, now, wall_now);
        assert_eq!(
            (live.seen().next_snapshot, live.seen().changes),
            (None, None)
        );
    }

    #[test]
    fn a_push_is_recorded_with_its_time() {
        let live = Live::default();
        live.pushed("abc".into(), UNIX_EPOCH + Duration::from_secs(42));
        assert_eq!(
            live.seen().last_push,
            Some(Push {
                snapshot: "abc".into(),
                time: 42
            })
        );
    }
}
