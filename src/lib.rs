//! stackctl: one binary that makes a container match its `stack.yaml`.
//!
//! # Layout
//!
//! - [`cli`]: command-line definitions (clap) only.
//! - [`manifest`]: `stack.yaml` → validated [`manifest::Manifest`] (pure).
//! - [`env`](mod@env): resolution of env aliases, defaults and secrets (pure).
//! - [`check`]: the plan as `check` prints it, and the masking of secrets.
//! - [`supervisor`]: the PID-1 process supervisor behind `up`.
//! - [`gateway`]: the reverse proxy on the public port, its admin API and page.
//! - [`client`]: the blocking client of a running gateway's admin API.
//! - [`persist`]: data directories restored at start and snapshotted to git.
//! - [`control`]: the control socket through which `backup` reaches a running `up`.
//! - [`recovery`]: backup, snapshots and restore of a running stack (the admin API's persistence endpoints).
//! - [`up`]: the lifecycle of `stackctl up` (restore → gateway → services).
//! - [`pid1`]: as PID 1, a tiny parent that forwards signals and reaps.
//! - [`status`]: the live state shared by supervisor, gateway and `status`.
//! - [`redact`]: hides credentials in URLs before any message, log line or file.
//! - [`shutdown`]: the one owner of `up`'s stop: phase tokens, one deadline, tracked tasks.
//! - [`cmd`]: one module per subcommand: arguments, local or `--url`, printing,
//!   exit codes; [`cmd::run`] dispatches.
//! - [`app`]: the binary's entry point (PID-1 split, parsing, logging).
//! - [`exit_code`]: the exit codes of the contract (shared by `cmd` and `up`).
//! - [`fault`]: test-only panics (debug builds) proving a panicking task fails alone.

pub mod app;
pub mod check;
pub mod cli;
pub mod client;
mod client_tls;
pub mod cmd;
pub mod control;
pub mod env;
pub mod exit_code;
pub mod fault;
pub mod gateway;
pub mod manifest;
pub mod persist;
pub mod pid1;
pub mod recovery;
pub mod redact;
pub mod shutdown;
pub mod status;
pub mod supervisor;
pub mod up;
mod weburl;
