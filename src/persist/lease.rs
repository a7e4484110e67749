//! One writer per repository: a lease kept in the repository itself, as the
//! ref `refs/stackctl/lease` pointing at a tiny orphan commit whose message
//! names the holder and its last heartbeat. Two containers on the same
//! repository (a Space restarted while the old one drains) never interleave
//! pushes: the second waits, or takes over a lease whose heartbeat is older
//! than the TTL, and says so. Every change of the lease is pushed with a
//! lease of its own (compare-and-swap), so two takers cannot both win.
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
}

/// Render a lease commit message.
pub fn render(info: &LeaseInfo) -> String {
    format!(
        "stackctl lease\n\ninstance: {}\nheartbeat: {}\n",
        info.instance, info.heartbeat
    )
}

/// Parse a lease commit message; `None` if it is not one.
pub fn parse(message: &str) -> Option<LeaseInfo> {
    let mut lines = message.lines();
    if lines.next()? != "stackctl lease" {
        return None;
    }
    let mut instance = None;
    let mut heartbeat = None;
    for l in lines {
        if let Some(v) = l.strip_prefix("instance: ") {
            instance = Some(v.trim().to_string());
        } else if l == "instance:" {
            instance = Some(String::new());
        } else if let Some(v) = l.strip_prefix("heartbeat: ") {
            heartbeat = v.trim().parse().ok();
        }
    }
    Some(LeaseInfo {
        instance: instance?,
        heartbeat: heartbeat?,
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
    /// Someone else holds it: do not push.
    Wait {
        /// The holder.
        holder: String,
        /// Seconds until its lease expires.
        expires_in: i64,
    },
}

/// Decide, given the current lease (if any), our id, the time and the TTL.
pub fn decide(current: Option<&LeaseInfo>, me: &str, now: i64, ttl: Duration) -> Decision {
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
    match current {
        None => Decision::Acquire,
        Some(l) if l.instance.is_empty() => Decision::Acquire,
        Some(l) if l.instance == me => Decision::Renew,
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
        };
        assert_eq!(parse(&render(&l)), Some(l));
        let released = LeaseInfo {
            instance: String::new(),
            heartbeat: 5,
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
        };
        let table: &[(Option<LeaseInfo>, Decision)] = &[
            (None, Decision::Acquire),
            (
                Some(LeaseInfo {
                    instance: String::new(),
                    heartbeat: 999,
                }),
                Decision::Acquire,
            ),
            (
                Some(LeaseInfo {
                    instance: "me".into(),
                    heartbeat: 0,
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
                &decide(current.as_ref(), "me", 1_000, ttl),
                want,
                "{current:?}"
            );
        }
    }
}
