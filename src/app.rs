//! The binary's entry point: the PID-1 split, the command line, logging;
//! then [`crate::cmd::run`] runs the command and gives its exit code.

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, LogFormat};
use crate::exit_code as code;

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
    ExitCode::from(crate::cmd::run(cli))
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
