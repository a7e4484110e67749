//! One cancellation signal that every long-running task watches.
//!
//! `up` owns the root token; each subsystem gets a child token so it can be
//! stopped on its own (services stop before the gateway drains). A
//! [`TaskTracker`] lets the owner wait until every task has really finished.

pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
