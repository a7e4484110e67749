//! Test fixtures shared by the supervisor's unit tests.

use std::path::PathBuf;
use std::time::Duration;

use crate::manifest::yaml::Pos;
use crate::manifest::{Backoff, MaxRestarts, RestartPolicy, Service};

/// A plain enabled service running `true`, with small delays.
pub fn service(name: &str) -> Service {
    Service {
        name: name.to_string(),
        pos: Pos { line: 1, col: 1 },
        command: vec!["true".into()],
        working_dir: PathBuf::from("/"),
        environment: vec![],
        env_files: vec![],
        depends_on: vec![],
        readiness: None,
        liveness: None,
        restart: RestartPolicy::Always,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        },
        max_restarts: MaxRestarts {
            count: 5,
            within: Duration::from_secs(60),
        },
        stop_signal: libc::SIGTERM,
        stop_timeout: Duration::from_secs(10),
        enabled: true,
        optional: false,
        logs: None,
        required_paths: vec![],
    }
}
