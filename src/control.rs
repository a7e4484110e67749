//! The control socket of a running `stackctl up`: `<persist.workdir>/control.sock`,
//! or, when that path is too long for a Unix socket (108 bytes with the NUL;
//! issue 17), `/tmp/stackctl-<uid>/<hash of the workdir>.sock` in a
//! directory only this user may use. Both sides compute the same path from
//! the workdir.
//!
//! `stackctl backup` and `stackctl snapshots` must go through the running
//! `up` (it holds the workdir lock and the write lease). A Unix socket with
//! mode 0600 needs no password: only the user who runs the stack can reach
//! it. The protocol is one request line (`backup`, `snapshots`, or
//! `restore <JSON body of POST /admin/persist/restore>`) and one JSON
//! answer line: `{"ok":true,...}` or `{"ok":false,"error":"..."}`. A
//! restore here is the admin API's (dry run, or confirmed: undo snapshot,
//! services stopped and started again); its answer is under `"result"`,
//! and a refusal carries the HTTP `"status"` the API would have given.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use crate::persist::lifecycle::Request;
use crate::persist::{Persister, SnapshotReport};
use crate::recovery::Recovery;
use crate::shutdown::CancellationToken;

/// The longest socket path the kernel takes (`sun_path` holds 108 bytes
/// with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The socket of the `up` using `workdir`.
pub fn socket_path(workdir: &Path) -> PathBuf {
    let beside = workdir.join("control.sock");
    if beside.as_os_str().len() <= MAX_SOCKET_PATH {
        return beside;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(workdir.as_os_str().as_encoded_bytes());
    short_dir().join(format!("{}.sock", &hex::encode(digest)[..24]))
}

/// The directory of sockets whose workdir path is too long.
fn short_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/stackctl-{}", nix::unistd::getuid()))
}

/// Make sure the socket's directory exists and only we can use it: `/tmp`
/// is shared, and another user could have made the directory first.
fn own_socket_dir(socket: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let Some(dir) = socket.parent().filter(|d| *d == short_dir()) else {
        return Ok(());
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() || m.uid() != nix::unistd::getuid().as_raw() || m.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "`{}` is not a private directory of this user; remove it, or give `persist.workdir` a path shorter than {} bytes",
            dir.display(),
            MAX_SOCKET_PATH - "/control.sock".len()
        )));
    }
    Ok(())
}

/// Serve the control socket until `stop`.
pub async fn serve(
    path: PathBuf,
    p: Arc<Persister>,
    backups: mpsc::Sender<Request>,
    recovery: Option<Arc<Recovery>>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    // A socket file left by a killed process would make bind fail; the
    // workdir lock (held by the persister) proves no one else serves it.
    own_socket_dir(&path)?;
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (p, backups, recovery) = (p.clone(), backups.clone(), recovery.clone());
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let answer = match line.trim().strip_prefix("restore ") {
                Some(body) => restore(body, recovery.as_ref()).await,
                None => handle(line.trim(), &p, &backups).await,
            };
            let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

async fn handle(cmd: &str, p: &Arc<Persister>, backups: &mpsc::Sender<Request>) -> Value {
    match cmd {
        "backup" => {
            let (tx, rx) = oneshot::channel();
            if backups.send(Request::Backup(tx)).await.is_err() {
                return json!({"ok": false, "error": "the stack is stopping"});
            }
            match rx.await {
                Ok(Ok(report)) => json!({"ok": true, "report": report_json(&report)}),
                Ok(Err(e)) => json!({"ok": false, "error": e}),
                Err(_) => json!({"ok": false, "error": "the stack is stopping"}),
            }
        }
        "snapshots" => {
            let pc = p.clone();
            match tokio::task::spawn_blocking(move || pc.list_snapshots(1000)).await {
                Ok(Ok(list)) => json!({"ok": true, "snapshots": snapshots_json(&list)}),
                Ok(Err(e)) => json!({"ok": false, "error": e.to_string()}),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            }
        }
        other => json!({"ok": false, "error": format!("unknown request `{other}`")}),
    }
}

/// `restore <json>`: the admin API's restore, without HTTP.
async fn restore(body: &str, recovery: Option<&Arc<Recovery>>) -> Value {
    let refused = |status: u16, e: String| json!({"ok": false, "status": status, "error": e});
    let Some(recovery) = recovery else {
        return refused(503, "the stack is stopping".into());
    };
    let wanted = serde_json::from_str::<Value>(body)
        .map_err(|e| format!("invalid json: {e}"))
        .and_then(|v| crate::recovery::request::restore(&v));
    let wanted = match wanted {
        Ok(w) => w,
        Err(e) => return refused(400, e),
    };
    match recovery.restore(wanted).await {
        Ok(v) => json!({"ok": true, "result": v}),
        Err(e) => {
            use crate::recovery::Error as R;
            let status = match &e {
                R::Conflict(_) => 409,
                R::BadRequest(_) => 400,
                R::NotFound(_) => 404,
                R::Failed(_) => 502,
                R::Stopping => 503,
            };
            refused(status, e.to_string())
        }
    }
}

/// A snapshot report as JSON (the control protocol's and `backup`'s view).
pub fn report_json(r: &SnapshotReport) -> Value {
    json!({
        "commit": r.commit.map(|c| c.to_string()),
        "pushed": r.pushed.map(|c| c.to_string()),
        "reparented": r.reparented,
        "parked": r.parked,
        "squashed": r.squashed,
        "files": r.files,
        "bytes": r.bytes,
        "read": r.read,
        "sqlite": r.sqlite,
        "too_large": r.too_large.iter().map(|(p, s)| json!({"path": p, "size": s})).collect::<Vec<_>>(),
    })
}

/// Snapshots as JSON.
pub fn snapshots_json(list: &[crate::persist::SnapshotInfo]) -> Value {
    Value::Array(
        list.iter()
            .map(|s| {
                json!({"id": s.id, "time": s.time, "files": s.files, "bytes": s.bytes, "message": s.message})
            })
            .collect(),
    )
}

/// How long a backup or restore may take to answer, through the control
/// socket or the admin API alike: it answers when its snapshot is pushed, a
/// restore when the services run again — minutes for a large tree on a slow
/// link. Giving up earlier would report a failure while the operation
/// goes on (it is not cancelled by the client leaving).
pub const LONG_CALL: Duration = Duration::from_secs(3 * 3600);

/// Ask the running `up`. `Ok(None)`: nobody serves the socket.
pub fn request(workdir: &Path, cmd: &str) -> std::io::Result<Option<Value>> {
    let path = socket_path(workdir);
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(LONG_CALL))?;
    stream.write_all(format!("{cmd}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workdir_too_long_for_a_socket_gets_a_short_private_path() {
        let short = Path::new("/data/work");
        assert_eq!(socket_path(short), Path::new("/data/work/control.sock"));
        let long = PathBuf::from(format!("/{}/work", "w".repeat(120)));
        let p = socket_path(&long);
        assert!(p.as_os_str().len() <= MAX_SOCKET_PATH, "{}", p.display());
        assert_eq!(p.parent(), Some(short_dir().as_path()));
        // The same workdir always gives the same path; another, another.
        assert_eq!(socket_path(&long), p);
        assert_ne!(socket_path(&long.join("x")), p);
    }
}
