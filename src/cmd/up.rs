//! `stackctl up`: a valid manifest, then the runtime in [`crate::up`].

use super::manifest_failed;
use crate::cli::LogFormat;
use crate::manifest::{Manifest, ManifestError};

/// Runs the stack until it stops; returns the exit code.
pub fn run(m: Result<Manifest, ManifestError>, log_format: LogFormat) -> u8 {
    match m {
        Ok(m) => crate::up::run(m, log_format),
        Err(e) => manifest_failed(&e),
    }
}
