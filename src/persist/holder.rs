//! This process as a write-lease holder, and whether a recorded holder is
//! gone (the I/O half of [`super::lease`]'s `gc.pid`-like rule): a holder
//! that ran on this host, in this PID namespace, whose pid no longer names
//! the same live process.

use super::lease::Holder;

/// The hostname (`/proc/sys/kernel/hostname`), `host` if unknown.
pub fn hostname() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if host.is_empty() {
        "host".to_string()
    } else {
        host
    }
}

/// This process's PID namespace, as `/proc/self/ns/pid` names it (empty if unknown).
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The start time of `pid` (clock ticks since boot) and whether it is a
/// zombie; `None` when there is no such process.
fn process(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let zombie = fields.first() == Some(&"Z");
    // Field 22 of stat; the first after `)` is field 3.
    let start = fields.get(19)?.parse().ok()?;
    Some((start, zombie))
}

/// This process as a lease holder.
pub fn me() -> Holder {
    let pid = std::process::id();
    Holder {
        host: hostname(),
        ns: pid_namespace(),
        pid,
        start: process(pid).map_or(0, |(s, _)| s),
    }
}

/// Is `h` known to be gone? Only a holder of this host and PID namespace can
/// be checked; anything else (another container, unknown namespace) is
/// taken as alive and left to the TTL.
pub fn gone(h: &Holder) -> bool {
    let here = me();
    if h.host != here.host || h.ns.is_empty() || h.ns != here.ns || h.pid == 0 {
        return false;
    }
    match process(h.pid) {
        None => true,
        Some((_, true)) => true,
        // The pid was reused by another process.
        Some((start, false)) => h.start != 0 && start != h.start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_child_is_gone() {
        let me = me();
        assert!(me.start > 0 && me.pid > 0, "{me:?}");
        assert!(!gone(&me));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Holder { pid, ..me.clone() };
        assert!(gone(&dead));
        // Elsewhere, or a reused pid: only what can be checked counts.
        let elsewhere = Holder {
            host: format!("{}-other", me.host),
            ..dead.clone()
        };
        assert!(!gone(&elsewhere));
        let reused = Holder {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(gone(&reused));
    }
}
