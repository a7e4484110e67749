//! Runs a parsed command line. The one place where errors become exit codes
//! and messages for the user.

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat};
use crate::manifest::{self, Manifest, ManifestError};

/// Exit codes of the contract (defined below `up`, which returns them).
pub use crate::exit_code as code;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // First, before any thread exists: as PID 1, become a tiny forwarder
    // whose child runs the rest.
    if let Some(code) = crate::pid1::split() {
        return ExitCode::from(code);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout with exit 0, usage errors
            // to stderr with exit 2 — the contract's code for usage errors.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                code::USAGE
            } else {
                code::OK
            });
        }
    };
    init_tracing(cli.log_format);
    ExitCode::from(run(cli))
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STACKCTL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never in `docker logs`.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.without_time().init(),
    }
}

/// Run a command; returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let container = crate::env::container_env();
    let load = || manifest::load(&cli.file, &container);
    match &cli.command {
        Command::Check(args) => match load() {
            Ok(m) => {
                print!("{}", crate::check::render(&m));
                let blocked = if args.manifest_only {
                    Vec::new()
                } else {
                    crate::supervisor::preflight::check(&m, &container)
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
                println!("\n`{}` is valid", cli.file.display());
                code::OK
            }
            Err(e) => manifest_failed(&e),
        },
        Command::Up(_) => match load() {
            Ok(m) => crate::up::run(m, cli.log_format),
            Err(e) => manifest_failed(&e),
        },
        Command::Routes(args) => with_admin(&cli, load(), &args.admin.url, |m| {
            crate::client::routes(m, args)
        }),
        Command::Status(args) => {
            with_admin(&cli, load(), &args.url, |m| crate::client::status(m, args))
        }
        Command::Backup(r) if r.url.is_some() => with_admin(&cli, load(), &r.url, |m| {
            crate::cmd::restore::backup(m, &r.admin())
        }),
        Command::Backup(_) => with_manifest(load(), crate::cmd::progress::backup),
        Command::Restore(args) if args.remote.url.is_some() => {
            with_admin(&cli, load(), &args.remote.url, |m| {
                crate::cmd::restore::restore(m, args)
            })
        }
        Command::Restore(args) => with_manifest(load(), |m| crate::cmd::progress::restore(m, args)),
        Command::Snapshots(r) if r.url.is_some() => with_admin(&cli, load(), &r.url, |m| {
            crate::cmd::restore::snapshots(m, &r.admin())
        }),
        Command::Snapshots(_) => with_manifest(load(), crate::cmd::progress::snapshots),
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
