//! `stackctl check`: the plan ([`crate::check::render`]), then what this
//! machine lacks to run it (the supervisor's preflight), secrets masked.

use std::path::Path;

use super::manifest_failed;
use crate::cli::CheckArgs;
use crate::exit_code as code;
use crate::manifest::{ContainerEnv, Manifest, ManifestError};

/// Prints the plan and the problems; returns the exit code.
pub fn run(
    file: &Path,
    m: Result<Manifest, ManifestError>,
    args: &CheckArgs,
    container: &ContainerEnv,
) -> u8 {
    let m = match m {
        Ok(m) => m,
        Err(e) => return manifest_failed(&e),
    };
    print!("{}", crate::check::render(&m));
    let blocked = if args.manifest_only {
        Vec::new()
    } else {
        crate::supervisor::preflight::check(&m, container)
    };
    let secrets = m.secret_values();
    for b in &blocked {
        let level = if b.soft { "warning" } else { "error" };
        eprintln!("{level}: {}", crate::check::mask(&b.to_string(), &secrets));
    }
    if blocked.iter().any(|b| !b.soft) {
        eprintln!("hint: install what is missing or fix `command` / `working_dir`; `check --manifest-only` skips this machine's files");
        return code::USAGE;
    }
    println!("\n`{}` is valid", file.display());
    code::OK
}
