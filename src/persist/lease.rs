//! One writer per repository: a lease kept in the repository itself, as the
//! ref `refs/stackctl/lease` pointing at a tiny orphan commit whose message
//! names the holder and its last heartbeat. Two containers on the same
//! repository (a Space restarted while the old one drains) never interleave
//! pushes: the second waits, or takes over a lease whose heartbeat is older
//! than the TTL, and says so. Every change of the lease is pushed with a
//! lease of its own (compare-and-swap), so two takers cannot both win.
//!
//! A lease also names the holder's host (hostname and PID namespace) and
//! process (pid and start time): like git's `gc.pid`, a lease whose holder
//! ran on this host and whose process is gone (a SIGKILLed container, a
//! one-shot command) is free at once, without waiting for the TTL.
//!
//! This file is the pure part: parsing, rendering, deciding.

use std::time::Duration;

/// The ref holding the lease on the remote.
pub const LEASE_REF: &str = "refs/stackctl/lease";

/// What the lease commit says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The holder's instance id; empty when released.
    pub instance: String,
    /// Last heartbeat, seconds since the epoch.
    pub heartbeat: i64,
    /// Where the holder runs (absent in leases of older versions).
    pub holder: Option<Holder>,
}

/// The process holding a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The hostname.
    pub host: String,
    /// The PID namespace (`pid:[4026531836]`): a pid means something only in it.
    pub ns: String,
    /// The process id.
    pub pid: u32,
    /// Its start time (clock ticks since boot; 0: unknown), so a reused pid is not taken for it.
    pub start: u64,
}

/// Render a lease commit message.
pub fn render(info: &LeaseInfo) -> String {
    let mut out = format!(
        "stackctl lease\n\ninstance: {}\nheartbeat: {}\n",
        info.instance, info.heartbeat
    );
    if let Some(h) = &info.holder {
        out.push_str(&format!(
            "host: {}\nns: {}\npid: {}\nstart: {}\n",
            h.host, h.ns, h.pid, h.start
        ));
    }
    out
}

/// Parse a lease commit message; `None` if it is not one.
pub fn parse(message: &str) -> Option<LeaseInfo> {
    let mut lines = message.lines();
    if lines.next()? != "stackctl lease" {
        return None;
    }
    let mut instance = None;
    let mut heartbeat = None;
    let (mut host, mut ns, mut pid, mut start) = (None, None, None, None);
    for l in lines {
        let (key, v) = l.split_once(':').map_or((l, ""), |(k, v)| (k, v.trim()));
        match key {
            "instance" => instance = Some(v.to_string()),
            "heartbeat" => heartbeat = v.parse().ok(),
            "host" => host = Some(v.to_string()),
            "ns" => ns = Some(v.to_string()),
            "pid" => pid = v.parse().ok(),
            "start" => start = v.parse().ok(),
            _ => {}
        }
    }
    let holder = match (host, ns, pid) {
        (Some(host), Some(ns), Some(pid)) => Some(Holder {
            host,
            ns,
            pid,
            start: start.unwrap_or(0),
        }),
        _ => None,
    };
    Some(LeaseInfo {
        instance: instance?,
        heartbeat: heartbeat?,
        holder,
    })
}

/// What to do about the lease before pushing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (absent, released or unreadable): take it.
    Acquire,
    /// We hold it: refresh the heartbeat.
    Renew,
    /// Someone else held it but stopped beating: take it over.
    TakeOver {
        /// The previous holder.
        from: String,
        /// Seconds since its last heartbeat.
        age: i64,
    },
    /// Someone else's lease, but its process is gone from this host: take it.
    Abandoned {
        /// The previous holder.
        from: String,
        /// Its pid.
        pid: u32,
    },
    /// Someone else holds it: do not push.
    Wait {
        /// The holder.
        holder: String,
        /// Seconds until its lease expires.
        expires_in: i64,
    },
}

/// Decide, given the current lease (if any), our id, the time, the TTL,
/// and whether its holder is known gone (it ran on this host, in this PID
/// namespace, and its process no longer exists: see [`Holder`]).
pub fn decide(
    current: Option<&LeaseInfo>,
    me: &str,
    now: i64,
    ttl: Duration,
    holder_gone: bool,
) -> Decision {
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
    match current {
        None => Decision::Acquire,
        Some(l) if l.instance.is_empty() => Decision::Acquire,
        Some(l) if l.instance == me => Decision::Renew,
        Some(l) if holder_gone => Decision::Abandoned {
            from: l.instance.clone(),
            pid: l.holder.as_ref().map_or(0, |h| h.pid),
        },
        Some(l) => {
            let age = now.saturating_sub(l.heartbeat);
            if age >= ttl {
                Decision::TakeOver {
                    from: l.instance.clone(),
                    age,
                }
            } else {
                Decision::Wait {
                    holder: l.instance.clone(),
                    expires_in: ttl - age,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let l = LeaseInfo {
            instance: "host-12-ab".into(),
            heartbeat: 1_700_000_000,
            holder: Some(Holder {
                host: "box".into(),
                ns: "pid:[4026531836]".into(),
                pid: 12,
                start: 345,
            }),
        };
        assert_eq!(parse(&render(&l)), Some(l));
        let released = LeaseInfo {
            instance: String::new(),
            heartbeat: 5,
            holder: None,
        };
        assert_eq!(parse(&render(&released)), Some(released));
        assert_eq!(parse("snapshot 2026-01-01"), None);
        assert_eq!(parse("stackctl lease\n\ninstance: x\n"), None);
    }

    #[test]
    fn decisions() {
        let ttl = Duration::from_secs(120);
        let other = |hb| LeaseInfo {
            instance: "other".into(),
            heartbeat: hb,
            holder: None,
        };
        let table: &[(Option<LeaseInfo>, Decision)] = &[
            (None, Decision::Acquire),
            (
                Some(LeaseInfo {
                    instance: String::new(),
                    heartbeat: 999,
                    holder: None,
                }),
                Decision::Acquire,
            ),
            (
                Some(LeaseInfo {
                    instance: "me".into(),
                    heartbeat: 0,
                    holder: None,
                }),
                Decision::Renew,
            ),
            (
                Some(other(950)),
                Decision::Wait {
                    holder: "other".into(),
                    expires_in: 70,
                },
            ),
            (
                Some(other(880)),
                Decision::TakeOver {
                    from: "other".into(),
                    age: 120,
                },
            ),
            // A heartbeat from the future (clock skew) is a live holder.
            (
                Some(other(1_100)),
                Decision::Wait {
                    holder: "other".into(),
                    expires_in: 220,
                },
            ),
        ];
        for (current, want) in table {
            assert_eq!(
                &decide(current.as_ref(), "me", 1_000, ttl, false),
                want,
                "{current:?}"
            );
        }
    }

    #[test]
    fn a_holder_gone_from_this_host_frees_its_lease_at_once() {
        let ttl = Duration::from_secs(120);
        let fresh = LeaseInfo {
            instance: "backup".into(),
            heartbeat: 1_000,
            holder: Some(Holder {
                host: "box".into(),
                ns: "pid:[1]".into(),
                pid: 42,
                start: 7,
            }),
        };
        assert_eq!(
            decide(Some(&fresh), "me", 1_001, ttl, true),
            Decision::Abandoned {
                from: "backup".into(),
                pid: 42
            }
        );
        assert!(matches!(
            decide(Some(&fresh), "me", 1_001, ttl, false),
            Decision::Wait { .. }
        ));
        // Our own lease stays ours whatever the pid says.
        assert_eq!(
            decide(Some(&fresh), "backup", 1_001, ttl, true),
            Decision::Renew
        );
    }
}
