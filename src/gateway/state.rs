//! The gateway's state file: the live route table and the admin password
//! hash, written atomically (temp file, fsync, rename, fsync of the
//! directory) with mode 0600, so a crash leaves the old or the new file,
//! never half of one.
//!
//! The file lives inside a persisted path by default, so it is backed up with
//! the data: route edits survive a wiped disk. It never holds a plaintext
//! password.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::gateway::rules::Table;

/// State-file failures.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading failed.
    #[error("cannot read the gateway state file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid state JSON.
    #[error("the gateway state file `{path}` is not valid ({source}); fix it, or move it away to start from the manifest's routes")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// Writing failed.
    #[error("cannot write `{path}`: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version (1).
    #[serde(default = "one")]
    pub version: u32,
    /// The live route table, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<Table>,
    /// Fingerprint of the manifest routes the table was seeded from; when
    /// the manifest's routes change, they replace the live table. It is
    /// `v2:` and the FNV-1a hash (16 hex digits) of the manifest's
    /// validated table as JSON, so it follows what the routes mean, not how
    /// they are written. The form earlier versions wrote (16 hex digits
    /// alone, a hash of the routes as written) cannot be compared: it
    /// counts as unchanged once, and the start rewrites it in the `v2:`
    /// form (see `manifest_fingerprint` in [`crate::gateway::seed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_routes: Option<String>,
    /// Argon2id PHC hash of the admin password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Argon2id hash of the configured (`admin.password`) password the
    /// current one was seeded from: when the configured one changes, it
    /// replaces a password set through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured_password_hash: Option<String>,
}

fn one() -> u32 {
    1
}

/// Read the state file; `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> Result<Option<State>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

/// Write the state file atomically, mode 0600.
pub fn save(path: &Path, state: &State) -> Result<(), StateError> {
    let mut json = serde_json::to_vec_pretty(state).map_err(|e| StateError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    json.push(b'\n');
    write_atomic(path, &json)
}

/// Write `bytes` to `path` atomically with mode 0600, creating missing
/// parent directories with mode 0700.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_is_atomic_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/state/gateway.json");
        assert_eq!(load(&path).unwrap(), None);
        let s = State {
            version: 1,
            table: Some(Table {
                default_backend: "http://127.0.0.1:1".into(),
                rules: vec![],
            }),
            manifest_routes: Some("abc".into()),
            password_hash: Some("$argon2id$x".into()),
            configured_password_hash: None,
        };
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), Some(s.clone()));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let entries: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries.len(), 1, "no temp file left: {entries:?}");
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.json");
        fs::write(&path, "{not json").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "the gateway state file `{}` is not valid",
                path.display()
            )),
            "{e}"
        );
    }
}
