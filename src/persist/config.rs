//! [`Config`]: what the persistence layer needs from the manifest's
//! `persist:` section (plus tuning for tests), and the blob store
//! `persist.large_files` asks for.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::blob::{self, BlobError, StoreConfig};
use super::remote;
use super::PersistError;

/// Default write-lease TTL: a holder silent this long is taken over.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(120);

/// One persisted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathConfig {
    /// Absolute path of a directory or file.
    pub path: PathBuf,
    /// Excludes for this path only.
    pub exclude: Vec<String>,
}

/// What the persistence layer needs from `persist:` (plus tuning for tests).
#[derive(Debug, Clone)]
pub struct Config {
    /// `owner/repo`, a git URL, or a local path / `file://` URL.
    pub remote: String,
    /// Token for HTTPS (secret).
    pub token: Option<String>,
    /// Branch holding the snapshots.
    pub branch: String,
    /// Where git objects and state live (not a mirror of the data).
    pub workdir: PathBuf,
    /// Persisted paths.
    pub paths: Vec<PathConfig>,
    /// Global exclude globs.
    pub exclude: Vec<String>,
    /// Files at or above this size are skipped (0: no limit).
    pub threshold: u64,
    /// Snapshots kept in the branch (`history.keep`; 0: keep all).
    pub keep: u32,
    /// This instance's id in the write lease (empty: one generated and kept
    /// in the workdir, `hostname-pid-random`).
    pub instance: String,
    /// A lease not renewed for this long may be taken over (zero: no lease).
    pub lease_ttl: Duration,
    /// Written once restore finished (the original's READINESS_FILE).
    pub readiness_file: Option<PathBuf>,
    /// Attempts for each remote operation.
    pub retries: u32,
    /// First retry delay (doubles up to `retry_max`).
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl From<&crate::manifest::Persist> for Config {
    fn from(p: &crate::manifest::Persist) -> Self {
        Config {
            remote: p.remote.clone(),
            token: p.token.clone(),
            branch: p.branch.clone(),
            workdir: p.workdir.clone(),
            paths: p
                .paths
                .iter()
                .map(|x| PathConfig {
                    path: x.path.clone(),
                    exclude: x.exclude.clone(),
                })
                .collect(),
            exclude: p.exclude.clone(),
            threshold: p.large_files.threshold,
            keep: p.keep,
            instance: String::new(),
            lease_ttl: DEFAULT_LEASE_TTL,
            readiness_file: p.readiness_file.clone(),
            retries: 5,
            retry_initial: super::retry::first_delay(),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// The blob store `persist.large_files` asks for.
pub(super) fn store_config(
    cfg: &Config,
    lf: &crate::manifest::LargeFiles,
) -> Result<StoreConfig, PersistError> {
    use crate::manifest::BlobStore as M;
    Ok(match &lf.store {
        M::None => StoreConfig::None,
        M::Dir(p) => StoreConfig::Dir(p.clone()),
        M::Lfs => {
            let url = match &lf.url {
                Some(u) => u.clone(),
                None => {
                    let remote = remote::resolve_url(&cfg.remote)?;
                    blob::lfs_endpoint(&remote.url).ok_or_else(|| {
                        PersistError::BlobStore(BlobError::Unsupported(format!(
                            "the remote `{}` has no LFS endpoint: set `persist.large_files.url`",
                            crate::redact::url(&remote.url)
                        )))
                    })?
                }
            };
            StoreConfig::Lfs { url }
        }
        M::GithubRelease => StoreConfig::GithubRelease {
            repo: blob::github_repo(&cfg.remote).ok_or_else(|| {
                PersistError::BlobStore(BlobError::Unsupported(format!(
                    "`github-release` needs a GitHub remote (owner/repo), not `{}`",
                    crate::redact::url(&cfg.remote)
                )))
            })?,
            tag: lf.tag.clone(),
            api: blob::github::API.to_string(),
        },
    })
}

/// Is `path` one of the persisted roots or below one? (For callers deciding
/// whether a change event matters.)
pub fn is_persisted(cfg: &Config, path: &Path) -> bool {
    cfg.paths.iter().any(|p| path.starts_with(&p.path))
}
