//! The open-file limit: stackctl raises its own soft `RLIMIT_NOFILE` to
//! the hard limit at start (the gateway holds one descriptor per client
//! and per backend connection, and a soft limit of 1024 is reached long
//! before memory or CPU run out), and gives services the soft limit it was
//! started with, so that they see the container's limits as if stackctl
//! were not there (systemd does the same for its services).

use std::sync::atomic::{AtomicU64, Ordering};

/// The soft limit stackctl was started with, once raised (`u64::MAX`: not
/// raised, nothing to give back).
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Raise the soft open-file limit to the hard limit. Returns the limits
/// before and after when it changed anything. Call once, early in `up`.
pub fn raise() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes into `lim`, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
    if soft >= hard {
        return None;
    }
    let raised = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: `setrlimit` only reads `raised`.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return None;
    }
    ORIGINAL_SOFT.store(soft, Ordering::Relaxed);
    Some((soft, hard))
}

/// In a child between fork and exec: put back the soft limit stackctl was
/// started with. Async-signal-safe: an atomic load and one system call
/// (glibc's and musl's `setrlimit` are thin wrappers of `prlimit64`).
pub fn restore_in_child() {
    let soft = ORIGINAL_SOFT.load(Ordering::Relaxed);
    if soft == u64::MAX {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct; a failure leaves the
    // raised limit, which is harmless.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = soft.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
