//! What would keep a service from starting on this machine, found before
//! any service starts: a working directory that does not exist, a program
//! that is not there (or not executable) in the `PATH` of the service's own
//! environment, an `env_file` that cannot be read.
//!
//! `check` reports these (unless `--manifest-only`), and `up` looks once the
//! restore has finished (a restore may create a working directory) and
//! refuses to start a stack whose required services cannot start.

use std::path::Path;

use crate::manifest::read::ContainerEnv;
use crate::manifest::{Manifest, Service};
use crate::supervisor::spawn::{is_executable, path_of, resolve_program, SpawnError};

/// A service that cannot start here, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The service.
    pub service: String,
    /// Why, as the spawn would say it.
    pub why: String,
    /// Only worth a warning: the service is optional, or it depends on
    /// others, which may make what it lacks (a setup job creating a venv).
    pub soft: bool,
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "service `{}` cannot start: {}", self.service, self.why)
    }
}

/// Every enabled service that cannot start on this machine.
pub fn check(m: &Manifest, container: &ContainerEnv) -> Vec<Blocked> {
    check_with(m, container, |p| p.is_dir(), is_executable)
}

/// [`check`] with the file system as two functions (for tests).
pub fn check_with(
    m: &Manifest,
    container: &ContainerEnv,
    is_dir: impl Fn(&Path) -> bool,
    executable: impl Fn(&Path) -> Option<bool>,
) -> Vec<Blocked> {
    let mut out = Vec::new();
    for s in m.services.iter().filter(|s| s.enabled) {
        let why = match crate::env::service_env(m, s, container) {
            Err(e) => Some(e.to_string()),
            Ok(env) => blocked(s, &env, &is_dir, &executable).map(|e| e.to_string()),
        };
        if let Some(why) = why {
            out.push(Blocked {
                service: s.name.clone(),
                why,
                soft: s.optional || !s.depends_on.is_empty(),
            });
        }
    }
    out
}

fn blocked(
    s: &Service,
    env: &[(String, String)],
    is_dir: &impl Fn(&Path) -> bool,
    executable: &impl Fn(&Path) -> Option<bool>,
) -> Option<SpawnError> {
    let program = s.command.first()?;
    if !is_dir(&s.working_dir) {
        return Some(SpawnError::NoWorkingDir(s.working_dir.clone()));
    }
    resolve_program(program, &s.working_dir, path_of(env), executable).err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::load_str;

    const YAML: &str = r#"
services:
  ok: { command: tool, working_dir: /srv }
  ghost: { command: no-such-tool --flag, working_dir: /srv }
  gone: { command: /opt/app/run, working_dir: /srv }
  nowhere: { command: tool, working_dir: /missing }
  bridge: { command: /opt/bridge, working_dir: /srv, optional: true }
  later: { command: /srv/.venv/bin/app, working_dir: /srv, depends_on: [ok] }
  off: { command: /nothing, enabled: "" }
"#;

    #[test]
    fn missing_programs_and_directories_are_found_before_anything_starts() {
        // Regression (issue 13, item 14).
        let container: ContainerEnv = [("PATH".to_string(), "/usr/bin".to_string())].into();
        let m = load_str(YAML, Path::new("/x/stack.yaml"), &container).unwrap();
        let got = check_with(
            &m,
            &container,
            |p| p == Path::new("/srv"),
            |p| (p == Path::new("/usr/bin/tool")).then_some(true),
        );
        let shown: Vec<(String, bool)> = got.iter().map(|b| (b.to_string(), b.soft)).collect();
        assert_eq!(
            shown,
            [
                ("service `ghost` cannot start: program `no-such-tool` not found in PATH (/usr/bin)", false),
                ("service `gone` cannot start: `/opt/app/run` does not exist", false),
                ("service `nowhere` cannot start: working directory `/missing` does not exist", false),
                ("service `bridge` cannot start: `/opt/bridge` does not exist", true),
                ("service `later` cannot start: `/srv/.venv/bin/app` does not exist", true),
            ]
            .map(|(t, s)| (t.to_string(), s))
        );
    }
}
