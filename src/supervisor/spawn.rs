//! Starting a service (or an exec probe) as its own process group.
//!
//! The environment is exactly what [`crate::env::service_env`] resolved: the
//! inherited one is cleared first, so a secret in the container's env never
//! leaks into a service that did not ask for it. The program is looked up in
//! the `PATH` *of that environment* (what a shell started with it would do),
//! here rather than in std, so a missing program is reported by name.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::reaper::{Reaper, Spawned};

/// `PATH` used when the service's environment has none (Debian's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// `command:` is empty.
    #[error("empty command")]
    EmptyCommand,
    /// No executable of that name in `PATH`.
    #[error("program `{program}` not found in PATH ({path})")]
    NotFound {
        /// The name as written.
        program: String,
        /// The `PATH` searched.
        path: String,
    },
    /// A program named by its path is not there.
    #[error("`{0}` does not exist")]
    NoSuchFile(PathBuf),
    /// The named file exists but cannot be executed.
    #[error("`{0}` is not an executable file")]
    NotExecutable(PathBuf),
    /// `working_dir:` does not exist.
    #[error("working directory `{0}` does not exist")]
    NoWorkingDir(PathBuf),
    /// `fork`/`exec` failed.
    #[error("cannot start `{program}`: {source}")]
    Io {
        /// The resolved program.
        program: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Where the output of the process goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Pipes for stdout and stderr (services: their lines are logged).
    Piped,
    /// `/dev/null` (exec probes).
    Null,
}

/// Start `command` in `dir` with exactly `env`, stdin from /dev/null, in a
/// new process group whose id is the child's pid.
pub fn spawn(
    reaper: &Reaper,
    command: &[String],
    dir: &Path,
    env: &[(String, String)],
    output: Output,
) -> Result<Spawned, SpawnError> {
    let (program, args) = command.split_first().ok_or(SpawnError::EmptyCommand)?;
    if !dir.is_dir() {
        return Err(SpawnError::NoWorkingDir(dir.to_path_buf()));
    }
    let resolved = resolve_program(program, dir, path_of(env), is_executable)?;

    let mut cmd = Command::new(&resolved);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null())
        // Its own group: stop signals reach the whole tree it forks, and a
        // Ctrl-C on a terminal does not hit services directly.
        .process_group(0);
    // argv[0] as the user wrote it, like a shell does.
    cmd.arg0(program);
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed; `signal` and `setrlimit`
    // are plain system calls, and the closure allocates nothing and takes
    // no lock.
    unsafe {
        cmd.pre_exec(|| {
            reset_signal_dispositions();
            super::nofile::restore_in_child();
            Ok(())
        });
    }
    match output {
        Output::Piped => cmd.stdout(Stdio::piped()).stderr(Stdio::piped()),
        Output::Null => cmd.stdout(Stdio::null()).stderr(Stdio::null()),
    };
    reaper.spawn(&mut cmd).map_err(|source| SpawnError::Io {
        program: resolved,
        source,
    })
}

/// Give the child default signal dispositions. Ignored signals survive
/// `exec`, so a stackctl started in the background by a script (SIGINT and
/// SIGQUIT ignored) or under `nohup` would hand that on: a service with
/// `stop_signal: INT` would then never stop before SIGKILL. std resets the
/// signal mask and SIGPIPE itself; this does the rest. Async-signal-safe.
fn reset_signal_dispositions() {
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: plain syscall wrapper; failures (invalid numbers)
            // leave the disposition as it was, which is harmless.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// The `PATH` of an environment (its last setting wins), or [`DEFAULT_PATH`].
pub fn path_of(env: &[(String, String)]) -> &str {
    env.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH)
}

/// Find the file `program` names: a path with a slash is taken relative to
/// the working directory; a bare name is searched in `path_var`.
pub fn resolve_program(
    program: &str,
    dir: &Path,
    path_var: &str,
    executable: impl Fn(&Path) -> Option<bool>,
) -> Result<PathBuf, SpawnError> {
    if program.contains('/') {
        let p = dir.join(program);
        return match executable(&p) {
            Some(true) => Ok(p),
            Some(false) => Err(SpawnError::NotExecutable(p)),
            None => Err(SpawnError::NoSuchFile(p)),
        };
    }
    let mut not_executable = None;
    for entry in path_var.split(':') {
        // An empty PATH entry means the current directory (POSIX).
        let base = if entry.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(entry)
        };
        let candidate = base.join(OsStr::new(program));
        match executable(&candidate) {
            Some(true) => return Ok(candidate),
            Some(false) => not_executable = not_executable.or(Some(candidate)),
            None => {}
        }
    }
    Err(match not_executable {
        Some(p) => SpawnError::NotExecutable(p),
        None => SpawnError::NotFound {
            program: program.to_string(),
            path: path_var.to_string(),
        },
    })
}

/// `Some(true)` for a regular file with an execute bit, `Some(false)` for
/// another existing file, `None` if nothing is there.
pub fn is_executable(p: &Path) -> Option<bool> {
    let meta = std::fs::metadata(p).ok()?;
    Some(meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(files: &'static [(&'static str, bool)]) -> impl Fn(&Path) -> Option<bool> {
        move |p: &Path| {
            files
                .iter()
                .find(|(f, _)| Path::new(f) == p)
                .map(|(_, x)| *x)
        }
    }

    #[test]
    fn bare_names_are_searched_in_the_service_path_in_order() {
        let files = fs(&[("/opt/bin/app", true), ("/usr/bin/app", true)]);
        let got = resolve_program("app", Path::new("/srv"), "/opt/bin:/usr/bin", files).unwrap();
        assert_eq!(got, PathBuf::from("/opt/bin/app"));
    }

    #[test]
    fn a_non_executable_match_is_skipped_for_a_later_executable_one() {
        let files = fs(&[("/a/app", false), ("/b/app", true)]);
        let got = resolve_program("app", Path::new("/"), "/a:/b", files).unwrap();
        assert_eq!(got, PathBuf::from("/b/app"));
    }

    #[test]
    fn a_missing_program_names_the_program_and_the_path() {
        let err = resolve_program("nope", Path::new("/"), "/a:/b", fs(&[])).unwrap_err();
        assert_eq!(err.to_string(), "program `nope` not found in PATH (/a:/b)");
    }

    #[test]
    fn only_non_executable_matches_say_so() {
        let err =
            resolve_program("app", Path::new("/"), "/a", fs(&[("/a/app", false)])).unwrap_err();
        assert_eq!(err.to_string(), "`/a/app` is not an executable file");
    }

    #[test]
    fn relative_paths_with_a_slash_are_taken_from_the_working_dir() {
        let files = fs(&[("/srv/site/./run.sh", true)]);
        let got = resolve_program("./run.sh", Path::new("/srv/site"), "/usr/bin", files).unwrap();
        assert_eq!(got, PathBuf::from("/srv/site/./run.sh"));
        let abs = fs(&[("/bin/sh", true)]);
        assert_eq!(
            resolve_program("/bin/sh", Path::new("/srv"), "", abs).unwrap(),
            PathBuf::from("/bin/sh")
        );
    }

    #[test]
    fn relative_path_entries_are_taken_from_the_working_dir() {
        let files = fs(&[("/srv/node_modules/.bin/app", true)]);
        let got = resolve_program("app", Path::new("/srv"), "node_modules/.bin", files).unwrap();
        assert_eq!(got, PathBuf::from("/srv/node_modules/.bin/app"));
    }
}
