//! [`Tuning`]: the runtime knobs of persistence that the manifest's
//! `persist:` section does not hold, and the blob store
//! `persist.large_files` asks for.

use std::time::Duration;

use super::blob::{self, BlobError, StoreConfig};
use super::remote;
use super::retry::Policy;
use super::PersistError;
use crate::manifest::Persist;

/// Default write-lease TTL: a holder silent this long is taken over.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(120);

/// The runtime knobs of a [`Persister`](super::Persister) that are not in
/// the manifest: who this writer is, how long its lease lasts, and how
/// remote operations are retried. Everything else comes from the
/// manifest's `persist:` section ([`crate::manifest::Persist`]) as read.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// This instance's id in the write lease (empty: one generated and kept
    /// in the workdir, `hostname-pid-random`).
    pub instance: String,
    /// A lease not renewed for this long may be taken over (zero: no lease).
    pub lease_ttl: Duration,
    /// How remote operations and blob transfers are retried.
    pub retry: Policy,
}

impl Default for Tuning {
    /// What `up` and the commands run with.
    fn default() -> Self {
        Tuning {
            instance: String::new(),
            lease_ttl: DEFAULT_LEASE_TTL,
            retry: Policy {
                attempts: 5,
                initial: super::retry::first_delay(),
                max: Duration::from_secs(30),
            },
        }
    }
}

/// The blob store `persist.large_files` asks for.
pub(super) fn store_config(cfg: &Persist) -> Result<StoreConfig, PersistError> {
    use crate::manifest::BlobStore as M;
    let lf = &cfg.large_files;
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
