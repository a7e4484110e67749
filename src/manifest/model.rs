//! The validated manifest: what the rest of stackctl works from.
//!
//! Every value here has been interpolated, parsed and checked; relative paths
//! are already made absolute against the manifest's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use crate::manifest::yaml::Pos;
use ipnet::IpNet;

/// The container's environment, as stackctl saw it at start.
pub type ContainerEnv = BTreeMap<String, String>;

/// The first candidate set to a non-empty value: `(name, value)`.
pub fn pick(candidates: &[String], container: &ContainerEnv) -> Option<(String, String)> {
    candidates.iter().find_map(|c| {
        container
            .get(c)
            .filter(|v| !v.is_empty())
            .map(|v| (c.clone(), v.clone()))
    })
}

/// The whole `stack.yaml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it was read from.
    pub file: PathBuf,
    /// The directory relative paths are resolved against.
    pub dir: PathBuf,
    /// `version:` (only 1 exists).
    pub version: u32,
    /// `name:` of the stack.
    pub name: String,
    /// Resolved `env:` entries, in manifest order.
    pub env: Vec<EnvVar>,
    /// Every service, enabled or not, in manifest order.
    pub services: Vec<Service>,
    /// `gateway:`, when present.
    pub gateway: Option<Gateway>,
    /// `persist:`, when present and its `remote` is not empty.
    pub persist: Option<Persist>,
    /// `shutdown_timeout:` total budget for stopping services and the final
    /// backup (Docker kills after 10 s, so the default is 9 s).
    pub shutdown_timeout: Duration,
    /// Things worth saying that do not stop the stack (e.g. persistence off
    /// because `remote` is empty).
    pub warnings: Vec<crate::manifest::Problem>,
}

impl Manifest {
    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Every secret value in the stack (declared secret env entries, the
    /// admin password, the persistence token), for masking output.
    pub fn secret_values(&self) -> Vec<String> {
        // A default written in the manifest is no secret (and masking a
        // common default like `[]` would garble unrelated output).
        let mut out: Vec<String> = self
            .env
            .iter()
            .filter(|e| e.secret && matches!(e.source, EnvSource::Variable(_)))
            .filter_map(|e| e.value.clone())
            .collect();
        if let Some(g) = &self.gateway {
            out.extend(g.admin.password.clone());
        }
        if let Some(p) = &self.persist {
            out.extend(p.token.clone());
        }
        out.retain(|v| !v.is_empty());
        out.sort();
        out.dedup();
        out
    }
}

/// One resolved `env:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvVar {
    /// The canonical name services see.
    pub name: String,
    /// The names looked up, in order (`from:`, then the name itself unless listed).
    pub candidates: Vec<String>,
    /// The value, or `None` when no candidate was set and there is no default.
    pub value: Option<String>,
    /// Where the value came from.
    pub source: EnvSource,
    /// `secret: true`: masked everywhere, withheld from services that do not ask.
    pub secret: bool,
    /// `required: true`: an empty value is a manifest error.
    pub required: bool,
    /// `description:` for `check` output and docs.
    pub description: Option<String>,
}

/// Where an env entry's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    /// The container variable of this name.
    Variable(String),
    /// The manifest's `default:`.
    Default,
    /// Nothing set it.
    Unset,
}

/// One `services:` entry.
#[derive(Debug, Clone)]
pub struct Service {
    /// The key under `services:`.
    pub name: String,
    /// Where the service was declared.
    pub pos: Pos,
    /// Program and arguments (`command:` split like a shell, without a shell).
    pub command: Vec<String>,
    /// Absolute working directory (defaults to the manifest's directory).
    pub working_dir: PathBuf,
    /// The service's own `environment:` (and `env_file:`) entries, interpolated.
    /// A `None` value means "pass the variable of that name through", as in
    /// docker-compose's bare `- NAME` form.
    pub environment: Vec<(String, Option<String>)>,
    /// `env_file:` paths, absolute, read when the service starts.
    pub env_files: Vec<PathBuf>,
    /// `depends_on:` in declaration order.
    pub depends_on: Vec<Dependency>,
    /// `readiness:` probe; without one a service is ready once started.
    pub readiness: Option<Probe>,
    /// `liveness:` probe; failing it restarts the service.
    pub liveness: Option<Probe>,
    /// `restart:` policy.
    pub restart: RestartPolicy,
    /// `backoff:` between restarts.
    pub backoff: Backoff,
    /// `max_restarts:` before the service is given up.
    pub max_restarts: MaxRestarts,
    /// `stop_signal:` sent to the process group.
    pub stop_signal: i32,
    /// `stop_timeout:` before SIGKILL.
    pub stop_timeout: Duration,
    /// `enabled:` after interpolation.
    pub enabled: bool,
    /// `optional: true`: giving up on it does not stop the stack.
    pub optional: bool,
    /// `logs:` file with size rotation.
    pub logs: Option<LogFile>,
    /// `required_paths:` persisted paths (absolute) this service cannot run
    /// without: if a large file at or below one cannot be restored, `up`
    /// stops instead of starting the stack without it.
    pub required_paths: Vec<PathBuf>,
}

/// `depends_on:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The service depended on.
    pub service: String,
    /// What it must reach first.
    pub condition: Condition,
}

/// A dependency condition, as in docker-compose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The process was started.
    Started,
    /// Its readiness probe passed (or it started, if it has none).
    Healthy,
    /// It exited with status 0.
    CompletedSuccessfully,
}

/// A readiness or liveness probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// What is checked.
    pub check: ProbeCheck,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Consecutive failures that count (liveness: restart; readiness: not ready).
    pub failures: u32,
    /// Wait this long after start before the first check.
    pub initial_delay: Duration,
}

/// The check a probe runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeCheck {
    /// `http: URL`: a GET answered with a status below 400.
    Http(String),
    /// `tcp: HOST:PORT`: a connection is accepted.
    Tcp(String),
    /// `exec: COMMAND`: the command exits 0.
    Exec(Vec<String>),
    /// `file: PATH`: the file exists.
    File(PathBuf),
    /// `log: TEXT`: the service printed a line containing TEXT.
    Log(String),
}

/// `restart:` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart whatever the exit status.
    Always,
    /// Restart unless it exited 0.
    OnFailure,
    /// Never restart.
    No,
}

/// Exponential backoff between restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The ceiling.
    pub max: Duration,
}

/// Give up after `count` restarts within `within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxRestarts {
    /// How many restarts are allowed in the window.
    pub count: u32,
    /// The sliding window.
    pub within: Duration,
}

/// `logs:` of a service: a file with size rotation.
#[derive(Debug, Clone, PartialEq)]
pub struct LogFile {
    /// Absolute path of the live file.
    pub file: PathBuf,
    /// Rotate when the file reaches this size.
    pub max_size: u64,
    /// Rotated files kept (`file.1` … `file.N`).
    pub keep: u32,
}

/// `gateway:` section.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// `listen:` address.
    pub listen: SocketAddr,
    /// `default_backend:` when no rule matches.
    pub default_backend: Option<String>,
    /// `routes:` as the admin API's rules, validated (ids assigned).
    pub routes: Vec<crate::gateway::rules::Rule>,
    /// Where each route was written, for error messages.
    pub route_pos: Vec<Pos>,
    /// `admin:` settings.
    pub admin: Admin,
    /// `allow_backends:` networks a backend must be inside.
    pub allow_backends: Vec<IpNet>,
    /// `trusted_proxies:` whose X-Forwarded-* headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `state_file:` where live route edits and the password hash are kept.
    /// Default: `<persist.workdir>/state/gateway.json` when `persist:` exists
    /// (persistence snapshots it under `.stackctl/`), else
    /// `<manifest dir>/.stackctl/gateway.json`.
    pub state_file: PathBuf,
    /// `timeouts:`.
    pub timeouts: GatewayTimeouts,
    /// `max_body:` limit on proxied request bodies, in bytes.
    pub max_body: u64,
    /// `backend_connections:` the cap on connections open to each backend.
    pub backend_connections: BackendConnections,
    /// `import_from:` the original deployment's `admin_config.json`, imported
    /// once into a gateway that has no saved route table yet.
    pub import_from: Option<PathBuf>,
}

/// `gateway.admin:`.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The configured password (secret), if any.
    pub password: Option<String>,
    /// `password_file:` where a generated password is written (0600) and
    /// where `stackctl routes` looks for it. Never inside a persisted path.
    /// Default: `$HOME/.config/stackctl/<stack name>-<key>.admin-password`,
    /// `<key>` a hash of the state file's path.
    pub password_file: PathBuf,
    /// The default of earlier versions (`<stack name>.admin-password`, the
    /// name only), read once to migrate: `up` moves it to `password_file`
    /// when it holds this stack's password. `None` when `password_file` is
    /// set in the manifest.
    pub legacy_password_file: Option<PathBuf>,
}

/// `gateway.timeouts:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayTimeouts {
    /// Connecting to a backend.
    pub connect: Duration,
    /// Waiting for a backend's response head (504 past it).
    pub response: Duration,
    /// Idle pooled upstream connections are closed after this.
    pub pool_idle: Duration,
    /// A client must send a whole request head within this (from the
    /// connection's start, or from the first byte of a later request).
    pub header_read: Duration,
    /// A kept-alive client connection with no request in progress is
    /// closed after this.
    pub idle: Duration,
    /// The longest a write to a client may wait (nginx's `send_timeout`:
    /// between two writes, not for the whole response), and the longest a
    /// WebSocket tunnel may pass nothing either way. Never zero.
    pub send: Duration,
}

/// `gateway.backend_connections:` (nginx's `max_conns` and `queue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendConnections {
    /// Connections (busy or idle) open to one backend address at once;
    /// 0: no cap.
    pub max: usize,
    /// How long a request waits for one at the cap before its 503.
    pub queue: Duration,
}

impl Default for BackendConnections {
    fn default() -> Self {
        BackendConnections {
            max: crate::gateway::fanout::DEFAULT_MAX,
            queue: crate::gateway::fanout::DEFAULT_QUEUE,
        }
    }
}

/// `persist:` section.
#[derive(Debug, Clone)]
pub struct Persist {
    /// `remote:` as written after interpolation (owner/repo, URL or path).
    pub remote: String,
    /// `token:` (secret).
    pub token: Option<String>,
    /// `branch:`.
    pub branch: String,
    /// `workdir:` for git objects and state.
    pub workdir: PathBuf,
    /// `interval:` between snapshots while something changed.
    pub interval: Duration,
    /// `debounce:` quiet time after a change.
    pub debounce: Duration,
    /// `paths:` to keep.
    pub paths: Vec<PersistPath>,
    /// Global `exclude:` globs.
    pub exclude: Vec<String>,
    /// `history.keep`.
    pub keep: u32,
    /// `large_files:`.
    pub large_files: LargeFiles,
    /// `readiness_file:` written once restore has finished (the original's READINESS_FILE).
    pub readiness_file: Option<PathBuf>,
}

/// One `persist.paths` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistPath {
    /// Absolute path of a directory or file.
    pub path: PathBuf,
    /// Excludes for this path only.
    pub exclude: Vec<String>,
}

impl PersistPath {
    /// `path` is this persisted path or inside it (whole components, as
    /// [`Path::starts_with`] compares).
    pub fn covers(&self, path: &Path) -> bool {
        path.starts_with(&self.path)
    }

    /// One of `path` and this persisted path is inside the other.
    pub fn overlaps(&self, path: &Path) -> bool {
        self.covers(path) || self.path.starts_with(path)
    }
}

impl Persist {
    /// The persisted path that `path` is in, if any.
    pub fn covering(&self, path: &Path) -> Option<&PersistPath> {
        self.paths.iter().find(|pp| pp.covers(path))
    }
}

/// `persist.large_files`.
#[derive(Debug, Clone, PartialEq)]
pub struct LargeFiles {
    /// Files at or above this size go to the blob store.
    pub threshold: u64,
    /// Where their bytes go.
    pub store: BlobStore,
    /// Release tag for `github-release`.
    pub tag: String,
    /// LFS endpoint override for `lfs`.
    pub url: Option<String>,
    /// `offload_binary:`: binary files below the threshold go to the store too.
    pub offload_binary: OffloadBinary,
}

/// `large_files.offload_binary`: whether a binary file (git's test: a NUL in
/// its first 8000 bytes) below `threshold` is committed as an LFS pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffloadBinary {
    /// When the remote is on Hugging Face and the store is `lfs`.
    #[default]
    Auto,
    /// Whenever there is a blob store (a host with a hook like Hugging Face's).
    Always,
    /// Never: only size decides.
    Never,
}

impl LargeFiles {
    /// Does `offload_binary` hold for this `remote`?
    ///
    /// Hugging Face's pre-receive hook refuses binary files outside LFS/Xet,
    /// and any file of 10 MiB or more outside LFS. What is on record:
    /// huggingface/huggingface_hub#657 and #687 (2022-02, Hub staff): "The hub
    /// now prevents binary files over 1MB from being committed (unless LFS)",
    /// "Non binary files still 10MB"; huggingface/huggingface_hub#825 and
    /// git-lfs/git-lfs#5834 show the message ("Your push was rejected
    /// because it contains binary files."); qdonnars/ohmywind#289 (2026-08)
    /// shows a 1.67 MB mp4 refused with "Please use
    /// `https://huggingface.co/docs/hub/xet` to store binary files" and says
    /// the rule no longer depends on size. No record gives today's lower
    /// bound, so every binary file is offloaded: a pointer is always accepted.
    pub fn offloads_binary(&self, remote: &str) -> bool {
        match self.offload_binary {
            OffloadBinary::Never => false,
            OffloadBinary::Always => self.store != BlobStore::None,
            OffloadBinary::Auto => {
                self.store == BlobStore::Lfs && super::remotes::looks_like_hugging_face(remote)
            }
        }
    }
}

/// `large_files.store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobStore {
    /// Assets of a GitHub release.
    GithubRelease,
    /// A Git LFS server (batch API).
    Lfs,
    /// A directory.
    Dir(PathBuf),
    /// No store: large files are skipped with a warning.
    None,
}

impl Manifest {
    /// Enabled services grouped in start waves: each wave depends only on
    /// earlier ones, so its services start in parallel. Shutdown walks the
    /// waves backwards. Assumes a validated (acyclic) manifest.
    pub fn start_waves(&self) -> Vec<Vec<&Service>> {
        let enabled: Vec<&Service> = self.services.iter().filter(|s| s.enabled).collect();
        let mut placed: Vec<&str> = Vec::new();
        let mut waves = Vec::new();
        while placed.len() < enabled.len() {
            let wave: Vec<&Service> = enabled
                .iter()
                .filter(|s| !placed.contains(&s.name.as_str()))
                .filter(|s| {
                    s.depends_on
                        .iter()
                        .all(|d| placed.contains(&d.service.as_str()))
                })
                .copied()
                .collect();
            if wave.is_empty() {
                // Only possible with a cycle, which validation rejects; stop
                // rather than loop forever.
                break;
            }
            placed.extend(wave.iter().map(|s| s.name.as_str()));
            waves.push(wave);
        }
        waves
    }
}
