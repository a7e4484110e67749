//! One cancellation signal that every long-running task watches.
//!
//! `up` owns the root token (a signal or a service that gave up cancels it).
//! Subsystems that must outlive it get tokens of their own, cancelled by
//! `up` in order: the periodic backups (a child token, stopped once the
//! services are down) and the gateway (a separate token, stopped after the
//! final backup, so the restoring page and the admin API answer until
//! then). A [`TaskTracker`] lets an owner wait until its tasks have really
//! finished.

pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
