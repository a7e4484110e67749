//! The subcommands: one module each with its command-line glue (which
//! arguments lead where, local or `--url` or the control socket, what is
//! printed, the exit code), over the libraries that do the work: the
//! admin client ([`crate::client`]), persistence ([`crate::persist`]), the
//! recovery API ([`crate::recovery`]) and the runtime of `up`
//! ([`crate::up`]).
//!
//! [`run`] dispatches a parsed command line; it is the one place where
//! errors become exit codes and messages for the user.
//!
//! - [`check`], [`up`](mod@up), [`routes`], [`status`]: one command each.
//! - [`backup`], [`restore`], [`snapshots`]: local (through the running
//!   `up` when there is one) or `--url` (the admin API; issue 14).
//! - [`print`](mod@print): what both paths of those print, so they print the same.
//! - [`local`]: the workdir and the control socket of the local path.
//! - [`api`]: the `--url` path's calls, progress and error messages.
//! - [`progress`]: the local path's progress bars and lines.

mod api;
pub mod backup;
pub mod check;
mod local;
mod print;
mod progress;
pub mod restore;
pub mod routes;
pub mod snapshots;
pub mod status;
#[cfg(test)]
mod tests;
pub mod up;

use crate::cli::{Cli, Command};
use crate::exit_code as code;
use crate::manifest::{self, Manifest, ManifestError};

/// Run a command; returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let container = crate::env::container_env();
    // Every command reads the manifest once; with `--url` a missing one is
    // no error (see `with_admin`).
    let m = manifest::load(&cli.file, &container);
    match &cli.command {
        Command::Check(args) => check::run(&cli.file, m, args, &container),
        Command::Up(_) => up::run(m, cli.log_format),
        Command::Routes(args) => with_admin(&cli, m, &args.admin.url, |m| routes::run(m, args)),
        Command::Status(args) => with_admin(&cli, m, &args.url, |m| status::run(m, args)),
        Command::Backup(args) => backup::run(&cli, m, args),
        Command::Restore(args) => restore::run(&cli, m, args),
        Command::Snapshots(args) => snapshots::run(&cli, m, args),
    }
}

/// A command that talks to a gateway's admin API. With `--url` it needs no
/// manifest (run from your own machine against a remote stack): a manifest
/// that does not exist is then skipped; one that exists must be valid (its
/// password file and password are used).
fn with_admin(
    cli: &Cli,
    m: Result<Manifest, ManifestError>,
    url: &Option<String>,
    f: impl FnOnce(Option<&Manifest>) -> anyhow::Result<()>,
) -> u8 {
    match m {
        Err(_) if url.is_some() && !cli.file.exists() => match f(None) {
            Ok(()) => code::OK,
            Err(e) => {
                eprintln!("error: {e:#}");
                code::FAILURE
            }
        },
        m => with_manifest(m, |m| f(Some(m))),
    }
}

/// A command that needs a valid manifest; its errors are printed with the
/// manifest's secrets masked.
fn with_manifest(
    m: Result<Manifest, ManifestError>,
    f: impl FnOnce(&Manifest) -> anyhow::Result<()>,
) -> u8 {
    match m {
        Ok(m) => match f(&m) {
            Ok(()) => code::OK,
            Err(e) => {
                let text = crate::check::mask(&format!("{e:#}"), &m.secret_values());
                eprintln!("error: {text}");
                code::FAILURE
            }
        },
        Err(e) => manifest_failed(&e),
    }
}

fn manifest_failed(e: &ManifestError) -> u8 {
    // Problem messages are masked where they are made (see manifest::read).
    eprintln!("error: {e}");
    code::USAGE
}
