//! Persistence inside `stackctl up`: the restore before anything starts,
//! the snapshot loop (file watcher + [`Schedule`] + lease heartbeat +
//! requests from `stackctl backup` and the admin API's backups and
//! restores), and the final backup at shutdown.
//!
//! While the stack runs, the progress of its persistence work (the steps of
//! a recovery, the stages of a restore, the bytes of large files) also goes
//! out on a [`Feed`], for
//! whoever watches: the control socket streams it to a local
//! `stackctl restore`.
//!
//! The [`Persister`] blocks (libgit2, file I/O), so every call runs on
//! tokio's blocking pool; this module is the thin async shell around it.
//! A blocking call cannot be interrupted from here, so each one carries a
//! [`Limit`]: stopping cancels the running restore, snapshot or heartbeat
//! (it gives up at its next check), and the final backup's network steps
//! end by a deadline taken from the shutdown [`Budget`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::persist::deadline::Limit;
use crate::persist::progress::{self, ProgressSink, Reading};
use crate::persist::schedule::{Schedule, DEFAULT_CEILING};
use crate::persist::{
    PersistError, Persister, Progress, RestoreOptions, RestoreReport, SnapshotReport, Stage,
    DEFAULT_LEASE_TTL,
};
use crate::shutdown::{Budget, CancellationToken, Shutdown};
use crate::status::StatusBoard;

/// A request to the running snapshot loop.
#[derive(Debug)]
pub enum Request {
    /// Snapshot and push now; the answer is the report or the error text.
    Backup(oneshot::Sender<Result<SnapshotReport, String>>),
    /// Restore (or plan a restore, `dry_run`) while the stack runs: the
    /// admin API's recovery. The caller stops the services that use the
    /// paths first; the loop only makes sure no snapshot runs meanwhile.
    /// The answer carries the report and the snapshot size of every
    /// planned file, or the error as it is (a missing snapshot and a path
    /// that is not persisted are the caller's to tell apart).
    Restore(
        RestoreOptions,
        oneshot::Sender<Result<(RestoreReport, Sizes), PersistError>>,
    ),
}

/// Snapshot sizes of planned files, by absolute path.
pub type Sizes = std::collections::HashMap<PathBuf, u64>;

/// What the persistence work of the running stack reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// What a backup or restore of the admin API (or the control socket)
    /// does now: `stopping web`, `restoring` (see [`crate::recovery`]).
    Step(String),
    /// A stage of a restore (objects fetched, files written).
    Stage(Progress),
    /// Large files moving (a restore's downloads, a backup's uploads).
    Bytes(Reading),
    /// That transfer ended.
    BytesEnd(Reading),
}

/// Where [`Event`]s go: anyone may subscribe; with no subscriber they are
/// dropped, and a subscriber that falls behind skips the oldest.
pub type Feed = tokio::sync::broadcast::Sender<Event>;

/// A new [`Feed`]. Room for a few seconds of readings at the fastest tick:
/// a watcher that lags loses old readings, never the newest.
pub fn feed() -> Feed {
    tokio::sync::broadcast::channel(256).0
}

/// How the start-up restore ended.
#[derive(Debug)]
pub enum Restored {
    /// Restored, or the remote was confirmed empty: services may start.
    Done(Box<RestoreReport>),
    /// Shutdown was asked for before the restore could finish.
    Stopped,
}

/// Run `f` on the blocking pool with a shared persister, under `limit`.
async fn blocking<T: Send + 'static>(
    p: &Arc<Persister>,
    limit: &Limit,
    f: impl FnOnce(&Persister) -> Result<T, PersistError> + Send + 'static,
) -> Result<T, String> {
    let (p, limit) = (p.clone(), limit.clone());
    match tokio::task::spawn_blocking(move || limit.enter(|| f(&p))).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the persistence task failed: {e}")),
    }
}

/// [`blocking`], cancelled when `stop` fires. The call then gives up at
/// its next check (between files, in a transfer callback, before a
/// connection or a retry) and this waits for it: the repository is free
/// for the final backup once it returns. A read already waiting on a
/// silent remote keeps the timeout it opened with; `up` bounds its wait
/// for this loop, and the final backup its own.
async fn cancellable<T: Send + 'static>(
    p: &Arc<Persister>,
    stop: &CancellationToken,
    f: impl FnOnce(&Persister) -> Result<T, PersistError> + Send + 'static,
) -> Result<T, String> {
    let limit = Limit::new();
    let work = blocking(p, &limit, f);
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => r,
        () = stop.cancelled() => {
            limit.cancel();
            work.await
        }
    }
}

/// Publish the persister's state for `/admin/status` and `stackctl status`.
pub fn publish(p: &Persister, status: &StatusBoard) {
    let value = serde_json::to_value(p.status()).ok();
    status.update(|s| s.backup = value);
}

/// A progress sink for `stackctl up`: every reading goes on to `inner`
/// (the log lines) and to the [`Feed`], and while a restore moves large
/// files their bytes also go to the status board, for the 503 "restoring"
/// page and `/admin/status`.
pub struct BoardSink {
    board: StatusBoard,
    inner: Arc<dyn ProgressSink>,
    feed: Feed,
}

impl BoardSink {
    /// Feed `board` and `feed`, and pass every reading on to `inner`.
    pub fn new(board: StatusBoard, inner: Arc<dyn ProgressSink>, feed: Feed) -> Self {
        BoardSink { board, inner, feed }
    }
}

impl ProgressSink for BoardSink {
    fn update(&self, r: &Reading) {
        if r.label == "restore" {
            let line = progress::public_line(r);
            self.board.update(|s| s.restore_large_files = Some(line));
        }
        // No subscriber: nobody to tell.
        let _ = self.feed.send(Event::Bytes(r.clone()));
        self.inner.update(r);
    }

    fn finish(&self, r: &Reading) {
        if r.label == "restore" {
            self.board.update(|s| s.restore_large_files = None);
        }
        let _ = self.feed.send(Event::BytesEnd(r.clone()));
        self.inner.finish(r);
    }

    fn tick(&self) -> Duration {
        self.inner.tick()
    }
}

/// Restore the persisted paths before any service starts. A remote that
/// cannot be reached is retried with backoff for as long as it takes (a
/// Space must never start on empty data and then push it over a good
/// backup); an error that retrying cannot fix is returned. When the stop
/// is asked the restore is cancelled, and waited for until the final
/// backup's share of `shutdown`'s one budget, counted from the stop request.
pub async fn restore_at_start(
    p: &Arc<Persister>,
    status: &StatusBoard,
    shutdown: &Shutdown,
) -> Result<Restored, PersistError> {
    let stop = shutdown.stop();
    // No end: a Space must not start on empty data (see above).
    let mut delays = super::retry::Policy {
        attempts: u32::MAX,
        initial: super::retry::first_delay(),
        max: Duration::from_secs(60),
    }
    .delays();
    let mut attempt = 1u32;
    // Failed attempts to reach the remote, here and in the persister's own
    // retries: the page counts them all.
    let failures = Arc::new(AtomicU64::new(0));
    let waiting = |n: u64| format!("waiting for the backup repository (attempt {})", n + 1);
    loop {
        if failures.load(Ordering::Relaxed) == 0 {
            status.update(|s| s.restore_progress = Some("fetching the last snapshot".into()));
        }
        info!(remote = %p.remote_url(), attempt, "restoring persisted paths");
        let pc = p.clone();
        let board = status.clone();
        let seen = failures.clone();
        let limit = Limit::new();
        let inside = limit.clone();
        let task = tokio::task::spawn_blocking(move || {
            // "restoring (N of M files)" on `/admin/status` and the 503 page.
            let progress = |pr: Progress| {
                let line = if pr.stage == Stage::Waiting {
                    waiting(seen.fetch_add(1, Ordering::Relaxed) + 1)
                } else {
                    pr.to_string()
                };
                board.update(|s| s.restore_progress = Some(line));
            };
            inside.enter(|| {
                pc.restore_with_progress(
                    &RestoreOptions {
                        // A disk that survived (a VPS, a laptop) may hold data newer
                        // than the last snapshot: keep it rather than roll it back.
                        keep_newer_local: true,
                        ..RestoreOptions::default()
                    },
                    &progress,
                )
            })
        });
        tokio::pin!(task);
        let result = tokio::select! {
            r = &mut task => r,
            () = stop.cancelled() => {
                limit.cancel();
                // It stops at its next check; a read waiting on a silent
                // remote cannot be interrupted: leave it behind when the
                // budget runs out (files are written atomically, nothing
                // was pushed).
                let until = Instant::from_std(shutdown.budget().final_backup());
                if tokio::time::timeout_at(until, task).await.is_err() {
                    warn!("the restore is still waiting for the remote; leaving it behind");
                }
                publish(p, status);
                return Ok(Restored::Stopped);
            }
        };
        publish(p, status);
        match result {
            Ok(Ok(report)) => {
                status.update(|s| s.restore_progress = None);
                // Watch before announcing: a write right after the line is
                // seen and snapshotted one debounce later, not at the next
                // periodic scan. The snapshot loop takes the watch over.
                let roots: Vec<PathBuf> = p.cfg.paths.iter().map(|x| x.path.clone()).collect();
                *super::lock(&p.watch) = Some(Watch::start(&roots));
                info!(
                    state = ?report.state,
                    files = report.applied.files,
                    bytes = report.applied.bytes,
                    "restore finished"
                );
                return Ok(Restored::Done(Box::new(report)));
            }
            Ok(Err(e)) if e.is_retryable() => {
                let delay = delays.next().unwrap_or(Duration::from_secs(60));
                warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "restore failed; retrying (services wait)");
                let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
                status.update(|s| s.restore_progress = Some(waiting(n)));
                if !super::retry::sleep_or_stop(delay, stop).await {
                    return Ok(Restored::Stopped);
                }
                attempt += 1;
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(PersistError::Git(format!("the restore task failed: {e}")));
            }
        }
    }
}

/// The strict opt-in of issue 17: a large file the restore left absent
/// (missing or corrupt blob) lies at or below an enabled service's
/// `required_paths`. Then `up` stops rather than start without it; the
/// message names the service, the file and why.
pub fn required_but_unrestored(
    services: &[crate::manifest::Service],
    failed: &[(PathBuf, String)],
) -> Option<String> {
    services
        .iter()
        .filter(|s| s.enabled)
        .find_map(|s| {
            let (path, why) = failed
                .iter()
                .find(|(f, _)| s.required_paths.iter().any(|r| f.starts_with(r)))?;
            Some(format!(
                "service `{}` requires `{}`, which could not be restored: {why}; check `persist.large_files` (or restore an older snapshot), or drop it from `required_paths` to start without it",
                s.name,
                path.display()
            ))
        })
}

/// The snapshot loop: after a change (debounced, never starved past the
/// ceiling), at least every `interval`, and on request. Runs until `stop`.
/// The stages of the snapshots and restores it runs go to `feed`.
pub async fn run_loop(
    p: Arc<Persister>,
    feed: Feed,
    debounce: Duration,
    interval: Duration,
    status: StatusBoard,
    stop: CancellationToken,
    mut requests: mpsc::Receiver<Request>,
) {
    // The watch the restore at start began, else one of our own. Kept for
    // the loop's life; dropping it stops the watches.
    let taken = super::lock(&p.watch).take();
    let mut watch = taken.unwrap_or_else(|| {
        let paths: Vec<PathBuf> = p.cfg.paths.iter().map(|x| x.path.clone()).collect();
        Watch::start(&paths)
    });
    let mut schedule = Schedule::new(
        debounce,
        DEFAULT_CEILING,
        interval,
        std::time::Instant::now(),
    );
    let mut heartbeat = tokio::time::interval(DEFAULT_LEASE_TTL / 4);
    heartbeat.tick().await;
    loop {
        // What `status` shows as the next snapshot and the pending changes.
        p.live().scheduled(Some(&schedule));
        let wake = Instant::from_std(schedule.next_wake());
        tokio::select! {
            // Stopping wins over any other wake-up: no new work starts.
            biased;
            () = stop.cancelled() => break,
            Some(()) = watch.changes.recv() => schedule.changed(std::time::Instant::now()),
            Some(req) = requests.recv() => match req {
                Request::Backup(reply) => {
                    let started = std::time::Instant::now();
                    let r = snapshot(&p, &status, &stop, &feed).await;
                    schedule.snapshot_taken(started, std::time::Instant::now());
                    let _ = reply.send(r);
                }
                Request::Restore(opts, reply) => {
                    let r = restore_now(&p, &stop, &feed, opts).await;
                    publish(&p, &status);
                    let _ = reply.send(r);
                }
            },
            () = tokio::time::sleep_until(wake) => {
                if schedule.due(std::time::Instant::now()) {
                    let started = std::time::Instant::now();
                    let _ = snapshot(&p, &status, &stop, &feed).await;
                    schedule.snapshot_taken(started, std::time::Instant::now());
                }
            }
            _ = heartbeat.tick() => {
                if let Err(e) = cancellable(&p, &stop, |p| p.heartbeat()).await {
                    warn!(error = %e, "cannot renew the write lease");
                }
            }
        }
    }
    // No snapshot is scheduled any more: the final backup takes over.
    p.live().scheduled(None);
}

/// A restore requested while the stack runs, cancelled by `stop`; its
/// stages go to `feed`.
async fn restore_now(
    p: &Arc<Persister>,
    stop: &CancellationToken,
    feed: &Feed,
    opts: RestoreOptions,
) -> Result<(RestoreReport, Sizes), PersistError> {
    let limit = Limit::new();
    let (pc, inside, feed) = (p.clone(), limit.clone(), feed.clone());
    let work = tokio::task::spawn_blocking(move || {
        inside.enter(|| {
            let stage = |pr: Progress| {
                let _ = feed.send(Event::Stage(pr));
            };
            let report = pc.restore_with_progress(&opts, &stage)?;
            let sizes = pc.planned_sizes(&report.ops);
            Ok((report, sizes))
        })
    });
    tokio::pin!(work);
    let joined = tokio::select! {
        r = &mut work => r,
        () = stop.cancelled() => {
            limit.cancel();
            work.await
        }
    };
    joined.unwrap_or_else(|e| Err(PersistError::Git(format!("the restore task failed: {e}"))))
}

/// One snapshot + push, logged and published, its stages sent to `feed`
/// (a `stackctl backup` through the control socket shows them); cancelled
/// by `stop` (the final backup takes over).
async fn snapshot(
    p: &Arc<Persister>,
    status: &StatusBoard,
    stop: &CancellationToken,
    feed: &Feed,
) -> Result<SnapshotReport, String> {
    let feed = feed.clone();
    let r = cancellable(p, stop, move |p| {
        p.snapshot_and_push_with_progress(&|pr| {
            let _ = feed.send(Event::Stage(pr));
        })
    })
    .await;
    publish(p, status);
    if r.is_err() && stop.is_cancelled() {
        info!("snapshot cancelled: stopping, the final backup takes over");
        return r;
    }
    match &r {
        Ok(rep) => {
            if let Some(pushed) = rep.pushed {
                p.live()
                    .pushed(pushed.to_string(), std::time::SystemTime::now());
            }
            for (path, size) in &rep.too_large {
                warn!(path = %path.display(), size, "file at or above `large_files.threshold` skipped: not backed up");
            }
            match (&rep.commit, &rep.pushed) {
                (Some(c), Some(_)) => {
                    info!(commit = %c, files = rep.files, bytes = rep.bytes, "snapshot pushed")
                }
                (Some(c), None) => info!(commit = %c, "snapshot taken; push pending"),
                (None, _) => tracing::debug!("nothing changed since the last snapshot"),
            }
        }
        Err(e) => warn!(error = %e, "snapshot or push failed; will retry"),
    }
    r
}

/// The last snapshot at shutdown, after the services stopped, within
/// `budget`: its network steps give up by [`Budget::network`] (so the
/// error names what did not answer), and the whole of it is abandoned at
/// [`Budget::final_backup`] (a disk or a cancelled snapshot that holds the
/// repository longer). `Ok(None)` when there was nothing to do (restore
/// never finished, so there is nothing safe to push).
pub async fn final_backup(
    p: &Arc<Persister>,
    status: &StatusBoard,
    budget: Budget,
) -> Result<Option<SnapshotReport>, String> {
    if p.restore_state() == crate::persist::RestoreState::Pending {
        return Ok(None);
    }
    info!("taking the final snapshot");
    let deadline = Instant::from_std(budget.final_backup());
    let limit = Limit::until(budget.network());
    let work = blocking(p, &limit, |p| {
        let report = p.snapshot_and_push()?;
        if let Err(e) = p.release_lease() {
            warn!(error = %e, "cannot release the write lease; the next instance waits for it to expire");
        }
        Ok(report)
    });
    let result = match tokio::time::timeout_at(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err(
            "the final backup did not finish within `shutdown_timeout` (the remote or the disk did not answer in time)"
                .to_string(),
        ),
    };
    publish(p, status);
    match &result {
        Ok(rep) if rep.parked.is_some() => {
            let pending = rep.parked.as_deref().unwrap_or_default();
            warn!(pending, "final snapshot parked: another stackctl holds the write lease and folds it in at its next push")
        }
        Ok(rep) if rep.commit.is_some() && rep.pushed.is_none() => {
            let e = "the final snapshot was taken but could not be pushed".to_string();
            error!("{e}");
            return Err(e);
        }
        Ok(_) => info!("final backup pushed"),
        Err(e) => {
            error!(error = %e, "final backup failed: changes since the last pushed snapshot are at risk")
        }
    }
    result.map(Some)
}

/// A watch on the persisted paths and the wake-ups it sends.
pub(in crate::persist) struct Watch {
    // Kept alive while watching; dropping it stops the watches.
    _watcher: Option<notify::RecommendedWatcher>,
    changes: mpsc::Receiver<()>,
}

impl Watch {
    /// Watch `paths` (without a watcher, snapshots follow the interval).
    fn start(paths: &[PathBuf]) -> Watch {
        let (tx, changes) = mpsc::channel::<()>(1);
        let watcher = match watch(paths, tx) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch the persisted paths; snapshots follow the interval only");
                None
            }
        };
        Watch {
            _watcher: watcher,
            changes,
        }
    }
}

/// Watch `paths` recursively; every event becomes one (coalesced) wake-up.
fn watch(paths: &[PathBuf], tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Access events (reads) change nothing worth a snapshot.
        if let Ok(ev) = res {
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
        }
        // Errors too (e.g. queue overflow) mean "something changed".
        // A full channel already holds a wake-up: dropping this one is fine.
        let _ = tx.try_send(());
    })?;
    for path in paths {
        // A path that does not exist yet is caught by the periodic scan.
        if path.exists() {
            if let Err(e) = w.watch(path, RecursiveMode::Recursive) {
                warn!(path = %path.display(), error = %e, "cannot watch a persisted path");
            }
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what reaches it.
    #[derive(Default)]
    struct Record(Mutex<Vec<String>>);

    impl ProgressSink for Record {
        fn update(&self, r: &Reading) {
            self.0
                .lock()
                .unwrap()
                .push(format!("update {} {}", r.label, r.done));
        }
        fn finish(&self, r: &Reading) {
            self.0
                .lock()
                .unwrap()
                .push(format!("finish {} {}", r.label, r.done));
        }
    }

    #[test]
    fn the_board_sink_shows_restore_bytes_and_passes_everything_on_and_to_the_feed() {
        let board = StatusBoard::new();
        let record = Arc::new(Record::default());
        let feed = feed();
        let mut watched = feed.subscribe();
        let sink = BoardSink::new(board.clone(), record.clone(), feed);
        let restore = progress::Transfer::new("restore", 4 << 20, 1);
        restore.begin_file(std::path::Path::new("data/big.db"), 4 << 20);
        restore.counter().add(1 << 20);
        sink.update(&restore.read());
        assert_eq!(
            board.snapshot().restore_large_files.as_deref(),
            Some("large files: 1 MiB of 4 MiB (25%)")
        );
        sink.finish(&restore.read());
        assert_eq!(board.snapshot().restore_large_files, None);
        // A backup's bytes are not the restore page's business.
        let backup = progress::Transfer::new("backup", 10, 1);
        sink.update(&backup.read());
        assert_eq!(board.snapshot().restore_large_files, None);
        assert_eq!(
            *record.0.lock().unwrap(),
            [
                "update restore 1048576",
                "finish restore 1048576",
                "update backup 0"
            ]
        );
        // The feed got every reading, the restore's end included.
        let mut fed = Vec::new();
        while let Ok(e) = watched.try_recv() {
            fed.push(e);
        }
        assert!(
            matches!(&fed[..], [Event::Bytes(a), Event::BytesEnd(b), Event::Bytes(c)]
                if a.label == "restore" && b.done == 1 << 20 && c.label == "backup"),
            "{fed:?}"
        );
    }

    /// The restore at start returns right after it logs `restore finished`:
    /// a file written then (before the snapshot loop even runs) must wake
    /// the loop, which snapshots one debounce later; the periodic scan is
    /// an hour away and the test gives up long before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_right_after_the_restore_at_start_is_snapshotted_by_the_debounce() {
        use crate::persist::persister::tests::{config, tuning};
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let cfg = config(d.path(), 1 << 20);
        let remote = d.path().join("remote.git");
        let p = Arc::new(Persister::with_config(cfg, tuning()).unwrap());
        let status = StatusBoard::new();
        let shutdown = Shutdown::new(Duration::from_secs(5));
        let restored = restore_at_start(&p, &status, &shutdown).await.unwrap();
        assert!(matches!(restored, Restored::Done(_)), "{restored:?}");
        std::fs::write(data.join("late.txt"), "written right after").unwrap();

        let stop = CancellationToken::new();
        let (_tx, rx) = mpsc::channel(1);
        let looped = tokio::spawn(run_loop(
            p.clone(),
            feed(),
            Duration::from_millis(100),
            Duration::from_secs(3600),
            status,
            stop.clone(),
            rx,
        ));
        let pushed = || {
            let repo = git2::Repository::open_bare(&remote).ok()?;
            let tree = repo
                .find_reference("refs/heads/main")
                .ok()?
                .peel_to_tree()
                .ok()?;
            let rel = data.join("late.txt");
            let rel = rel.strip_prefix("/").ok()?;
            tree.get_path(rel).ok().map(|_| ())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while pushed().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the write right after the restore was not snapshotted within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        looped.await.unwrap();
    }
}
