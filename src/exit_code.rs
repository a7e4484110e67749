//! Exit codes of the contract: what `docker` and scripts see.
//!
//! Its own module, below both [`crate::cmd`] (which maps errors to them)
//! and [`crate::up`] (which returns them), so neither imports the other.

/// Clean stop.
pub const OK: u8 = 0;
/// Runtime failure.
pub const FAILURE: u8 = 1;
/// Invalid manifest or usage.
pub const USAGE: u8 = 2;
/// Stopped cleanly, but the final backup failed.
pub const BACKUP_FAILED: u8 = 3;
