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
//!
//! That is protocol 1. Protocol 2 is the same with the request line
//! prefixed by `v2 `: then, before its answer line, a restore or a backup
//! sends its progress as lines of their own, each with an `"event"` key
//! (an [`Event`]: the step it is at, a stage of the restore or backup, the
//! bytes of large files; [`event_json`]). `snapshots` answers as in
//! protocol 1. A backup waits for a snapshot the loop is taking already,
//! whose progress then shows as well: it is the same work.
//! The answer is the first line without `"event"`. A request without the
//! prefix is protocol 1 and gets one line, so an older client still works;
//! an older `up` refuses a `v2 ` request as unknown, and the client then
//! asks again in protocol 1 ([`request_with_progress`]).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::persist::lifecycle::{Event, Feed, Request};
use crate::persist::progress::Reading;
use crate::persist::{Persister, Progress, SnapshotReport, Stage};
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

/// The prefix of a protocol 2 request (see the module docs).
const V2: &str = "v2 ";

/// Serve the control socket until `stop`; a restore in protocol 2 streams
/// what `feed` carries meanwhile.
pub async fn serve(
    path: PathBuf,
    p: Arc<Persister>,
    backups: mpsc::Sender<Request>,
    feed: Feed,
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
        let feed = feed.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let line = line.trim();
            let (v2, line) = match line.strip_prefix(V2) {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let answer = match line.strip_prefix("restore ") {
                Some(body) if v2 => {
                    let work = restore(body, recovery.as_ref());
                    streaming(work, recovery.as_ref(), &feed, &mut write).await
                }
                Some(body) => restore(body, recovery.as_ref()).await,
                None if v2 && line == "backup" => {
                    let work = handle(line, &p, &backups);
                    streaming(work, None, &feed, &mut write).await
                }
                None => handle(line, &p, &backups).await,
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

/// Run `work` (a restore or a backup), sending what the feed carries meanwhile to
/// `out` as [`Event`] lines; its answer. A client that left is not written
/// to any more, and the work goes on (it is not cancelled by the client
/// leaving).
async fn streaming(
    work: impl std::future::Future<Output = Value>,
    recovery: Option<&Arc<Recovery>>,
    feed: &Feed,
    out: &mut OwnedWriteHalf,
) -> Value {
    // Subscribed before the work starts: none of its steps is missed.
    let mut events = feed.subscribe();
    tokio::pin!(work);
    let mut step: Option<String> = None;
    let mut listening = true;
    loop {
        let event = tokio::select! {
            answer = &mut work => return answer,
            e = events.recv() => match e {
                Ok(e) => e,
                // Readings were dropped (a slow reader): the next one says
                // where the bytes are, but a step may have been lost too.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    match recovery.and_then(|r| r.step()) {
                        Some(now) if step.as_ref() != Some(&now) => Event::Step(now),
                        _ => continue,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return work.await,
            },
        };
        if let Event::Step(text) = &event {
            step = Some(text.clone());
        }
        if listening {
            let line = format!("{}\n", event_json(&event));
            listening = out.write_all(line.as_bytes()).await.is_ok();
        }
    }
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Fetching => "fetching",
        Stage::Waiting => "waiting",
        Stage::Restoring => "restoring",
        Stage::Uploading => "uploading",
    }
}

/// An [`Event`] as its progress line's JSON (protocol 2).
pub fn event_json(e: &Event) -> Value {
    let bytes = |event: &str, r: &Reading| {
        json!({
            "event": event,
            "label": r.label,
            "done": r.done,
            "total": r.total,
            "file": r.file,
            "file_done": r.file_done,
            "file_size": r.file_size,
            "index": r.index,
            "count": r.count,
            "elapsed_ms": u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
        })
    };
    match e {
        Event::Step(text) => json!({"event": "step", "text": text}),
        Event::Stage(p) => json!({
            "event": "stage",
            "stage": stage_name(p.stage),
            "done": p.done,
            "total": p.total,
        }),
        Event::Bytes(r) => bytes("bytes", r),
        Event::BytesEnd(r) => bytes("bytes_end", r),
    }
}

/// The [`Event`] a progress line carries; `None` for one this side does
/// not know (a newer `up` may send more), or one that does not add up.
pub fn event_from_json(v: &Value) -> Option<Event> {
    let n = |k: &str| v[k].as_u64();
    let reading = || {
        // The label is shown; only the known ones are taken.
        let label = match v["label"].as_str()? {
            "restore" => "restore",
            "backup" => "backup",
            _ => return None,
        };
        Some(Reading {
            label,
            done: n("done")?,
            total: n("total")?,
            file: v["file"].as_str().map(PathBuf::from),
            file_done: n("file_done")?,
            file_size: n("file_size")?,
            index: usize::try_from(n("index")?).ok()?,
            count: usize::try_from(n("count")?).ok()?,
            elapsed: Duration::from_millis(n("elapsed_ms")?),
        })
    };
    Some(match v["event"].as_str()? {
        "step" => Event::Step(v["text"].as_str()?.to_string()),
        "stage" => {
            let stage = match v["stage"].as_str()? {
                "fetching" => Stage::Fetching,
                "waiting" => Stage::Waiting,
                "restoring" => Stage::Restoring,
                "uploading" => Stage::Uploading,
                _ => return None,
            };
            Event::Stage(Progress {
                stage,
                done: n("done")?,
                total: n("total")?,
            })
        }
        "bytes" => Event::Bytes(reading()?),
        "bytes_end" => Event::BytesEnd(reading()?),
        _ => return None,
    })
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
    exchange(workdir, cmd, None)
}

/// [`request`] in protocol 2: the progress the running `up` sends before
/// its answer goes to `on`. An `up` of an older stackctl refuses the
/// request as unknown; it is then asked again in protocol 1 (no progress,
/// the same answer; nothing ran on the refusal).
pub fn request_with_progress(
    workdir: &Path,
    cmd: &str,
    on: &mut dyn FnMut(Event),
) -> std::io::Result<Option<Value>> {
    let answer = exchange(workdir, &format!("{V2}{cmd}"), Some(on))?;
    let unknown = format!("unknown request `{V2}");
    let refused_as_unknown = answer.as_ref().is_some_and(|v| {
        v["ok"] == Value::Bool(false)
            && v["error"].as_str().is_some_and(|e| e.starts_with(&unknown))
    });
    if refused_as_unknown {
        return exchange(workdir, cmd, None);
    }
    Ok(answer)
}

/// Send `line`, pass the progress lines to `on` (dropped without it), and
/// return the answer line.
fn exchange(
    workdir: &Path,
    line: &str,
    mut on: Option<&mut dyn FnMut(Event)>,
) -> std::io::Result<Option<Value>> {
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
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if v.get("event").is_none() {
            return Ok(Some(v));
        }
        if let (Some(on), Some(update)) = (on.as_mut(), event_from_json(&v)) {
            on(update);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_read_back_as_they_were_sent() {
        let reading = Reading {
            label: "restore",
            done: 3 << 20,
            total: 8 << 20,
            file: Some(PathBuf::from("/data/big.db")),
            file_done: 1 << 20,
            file_size: 4 << 20,
            index: 2,
            count: 2,
            elapsed: Duration::from_millis(1500),
        };
        let events = [
            Event::Step("stopping web".into()),
            Event::Stage(Progress::restoring(3, 10)),
            Event::Stage(Progress {
                stage: Stage::Fetching,
                done: 0,
                total: 0,
            }),
            Event::Bytes(reading.clone()),
            Event::BytesEnd(Reading {
                file: None,
                ..reading
            }),
        ];
        for u in events {
            let line = event_json(&u).to_string();
            assert!(!line.contains('\n'), "one line: {line}");
            let back: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(event_from_json(&back), Some(u), "{line}");
        }
    }

    #[test]
    fn a_progress_line_this_side_does_not_know_is_skipped_not_fatal() {
        for line in [
            r#"{"event":"sparkles"}"#,
            r#"{"event":"stage","stage":"dancing","done":1,"total":2}"#,
            r#"{"event":"stage","stage":"restoring","done":-1,"total":2}"#,
            r#"{"event":"bytes","label":"rm -rf","done":1,"total":2,"file_done":0,"file_size":0,"index":0,"count":0,"elapsed_ms":0}"#,
            r#"{"event":"bytes","label":"restore","done":"1"}"#,
            r#"{"event":"step","text":7}"#,
            r#"{"event":7}"#,
        ] {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(event_from_json(&v), None, "{line}");
        }
    }

    /// A socket in `dir` answering each connection in turn with the lines
    /// of `script` (after reading its request line); the requests read.
    fn fake_up(dir: &Path, script: Vec<Vec<String>>) -> std::thread::JoinHandle<Vec<String>> {
        let listener = std::os::unix::net::UnixListener::bind(socket_path(dir)).unwrap();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for lines in script {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                seen.push(request.trim_end().to_string());
                let mut out = stream;
                for l in lines {
                    out.write_all(format!("{l}\n").as_bytes()).unwrap();
                }
            }
            seen
        })
    }

    #[test]
    fn progress_comes_before_the_answer_and_unknown_events_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        let step = event_json(&Event::Step("restoring".into())).to_string();
        let server = fake_up(
            d.path(),
            vec![vec![
                step,
                r#"{"event":"from-the-future"}"#.into(),
                r#"{"ok":true,"result":{"at":"abc"}}"#.into(),
            ]],
        );
        let mut got = Vec::new();
        let answer = request_with_progress(d.path(), "restore {}", &mut |e| got.push(e))
            .unwrap()
            .unwrap();
        assert_eq!(answer["result"]["at"], "abc");
        assert_eq!(got, [Event::Step("restoring".into())]);
        assert_eq!(server.join().unwrap(), ["v2 restore {}"]);
    }

    #[test]
    fn an_up_that_speaks_only_protocol_1_is_asked_again_in_it() {
        let d = tempfile::tempdir().unwrap();
        // What an older `up` says to a request it does not know.
        let unknown = json!({"ok": false, "error": "unknown request `v2 restore {}`"});
        let server = fake_up(
            d.path(),
            vec![
                vec![unknown.to_string()],
                vec![r#"{"ok":true,"result":1}"#.into()],
            ],
        );
        let answer = request_with_progress(d.path(), "restore {}", &mut |_| {})
            .unwrap()
            .unwrap();
        assert_eq!(answer["result"], 1);
        assert_eq!(server.join().unwrap(), ["v2 restore {}", "restore {}"]);
    }

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
