//! Descriptors stackctl inherited, kept away from the services.
//!
//! Its own module because both the reaper (which seals them once, at
//! start) and [`super::spawn`] (whose children must not receive them) rely
//! on it; neither needs the other for it.

/// Mark every inherited file descriptor above stderr close-on-exec, so
/// services do not receive whatever the process that started stackctl left
/// open (stackctl's own descriptors are close-on-exec already). Best effort.
pub fn seal_inherited_fds() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on
    // descriptors; it closes nothing and touches no memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    // Kernels before 5.11: walk /proc/self/fd instead.
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD on a number that may already be closed
        // (the directory's own fd) only fails with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}
