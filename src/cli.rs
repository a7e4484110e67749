//! Command-line definitions (clap). No logic lives here: [`crate::cmd`]
//! turns these into actions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run a whole container stack from one `stack.yaml`: services (as PID 1),
/// a gateway on one public port, env mappings, and data persisted to git.
#[derive(Debug, Parser)]
#[command(
    name = "stackctl",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  stackctl check                      validate ./stack.yaml and print the plan\n  stackctl -f examples/quickstart/stack.yaml up\n  stackctl routes get                 show the live route table\n  stackctl status                     what the running `up` is doing\n\nExit codes: 0 clean stop; 1 runtime failure; 2 invalid manifest or usage;\n3 stopped cleanly but the final backup failed."
)]
pub struct Cli {
    /// The manifest to read.
    #[arg(
        short = 'f',
        long = "file",
        env = "STACKCTL_FILE",
        default_value = "stack.yaml",
        global = true
    )]
    pub file: PathBuf,

    /// How stackctl writes its own and its services' log lines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `service | line`, for people and `docker logs`.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Restore data, start the gateway and the services, keep backing up; runs
    /// until SIGTERM/SIGINT (the Docker CMD).
    Up(UpArgs),
    /// Validate the manifest and print the resolved plan (secrets masked);
    /// exits 2 on any error.
    Check(CheckArgs),
    /// Take a snapshot now and push it (asks a running `up` to do it, or the
    /// stack at --url).
    Backup(RemoteArgs),
    /// Restore persisted paths from the remote (or, with --url, restore a
    /// running stack through its admin API).
    Restore(RestoreArgs),
    /// List snapshots: id, time, files, bytes, message.
    Snapshots(RemoteArgs),
    /// Read or change the running gateway's routes.
    Routes(RoutesArgs),
    /// Services, gateway and backup state of the running `up`.
    Status(AdminArgs),
}

/// `check` options.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Validate the manifest alone: do not look on this machine for the
    /// services' programs and working directories (for a manifest that runs
    /// elsewhere, e.g. in an image).
    #[arg(long)]
    pub manifest_only: bool,
}

/// `up` options.
#[derive(Debug, Args)]
pub struct UpArgs {}

/// `restore` options.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Restore an older snapshot: a commit id (prefix) or a date/time.
    #[arg(long, value_name = "REV|DATE", value_parser = crate::persist::at_arg)]
    pub at: Option<String>,
    /// Restore only this persisted path (repeatable).
    #[arg(long = "path", value_name = "P")]
    pub paths: Vec<PathBuf>,
    /// List what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Overwrite local data that is newer than the snapshot (with --url:
    /// restore without asking; the stack snapshots its data first).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// How `backup`, `snapshots` and `restore` reach a stack elsewhere.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// Reach a running stack through its admin API instead of this
    /// machine's workdir, e.g. `https://user-space.hf.space`.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The admin password for --url (else $STACKCTL_ADMIN_PASSWORD, else the
    /// password file `up` wrote).
    #[arg(long, env = "STACKCTL_ADMIN_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

impl RemoteArgs {
    /// The same gateway and password as `routes`/`status` take them.
    pub fn admin(&self) -> AdminArgs {
        AdminArgs {
            password: self.password.clone(),
            url: self.url.clone(),
        }
    }
}

/// How `routes` and `status` reach the running gateway.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The admin password (else $STACKCTL_ADMIN_PASSWORD, else the password
    /// file `up` wrote).
    #[arg(
        long,
        env = "STACKCTL_ADMIN_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    pub password: Option<String>,
    /// The gateway's address, if not the manifest's `gateway.listen`
    /// (http://host:port, or https://host for a stack behind a host's proxy).
    #[arg(long, value_name = "URL", global = true)]
    pub url: Option<String>,
}

/// `routes` and its subcommands.
#[derive(Debug, Args)]
pub struct RoutesArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// What to do with the routes.
    #[command(subcommand)]
    pub action: RoutesAction,
}

/// `routes` subcommands.
#[derive(Debug, Subcommand)]
pub enum RoutesAction {
    /// Print the live route table (JSON).
    Get,
    /// Add or replace a prefix route.
    Set {
        /// Path prefix, e.g. `/gemini/`.
        prefix: String,
        /// Backend URL, e.g. `http://127.0.0.1:8000`.
        backend: String,
        /// Remove the prefix before forwarding.
        #[arg(long)]
        strip_prefix: bool,
        /// Higher priority wins.
        #[arg(long, default_value_t = 0)]
        priority: i64,
        /// Rule id (default: derived from the prefix).
        #[arg(long)]
        id: Option<String>,
    },
    /// Remove a rule by id or prefix.
    Rm {
        /// The rule's id, or its path prefix.
        id_or_prefix: String,
    },
    /// Change the default backend.
    Default {
        /// Backend URL.
        backend: String,
    },
    /// Change the admin password (read from stdin, or --new).
    Password {
        /// The new password (prefer stdin: arguments are visible to other users).
        #[arg(long)]
        new: Option<String>,
    },
}
