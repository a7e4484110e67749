//! `stackctl backup`, `restore` and `snapshots`: through the running `up`
//! when there is one (it owns the workdir), on their own otherwise.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::cli::RestoreArgs;
use crate::control;
use crate::manifest::{Manifest, Persist};
use crate::persist::progress::{self, Lines, ProgressSink, Reading};
use crate::persist::{Persister, Progress, RestoreOptions, RestoreState};

/// Shows a restore or a backup: on a terminal, a bar for the stage (files
/// restored, objects fetched) and, while large files move, one for the
/// current file (bytes, rate, ETA) and one for the bytes of all of them;
/// otherwise plain lines on stderr at most every [`progress::interval`]
/// (an operation shorter than that prints nothing; logs stay readable).
struct ProgressView {
    mode: Mode,
    /// When the last plain stage line was printed (or the view was made).
    last: Mutex<Instant>,
    every: Duration,
}

enum Mode {
    Bars {
        multi: MultiProgress,
        stage: ProgressBar,
        /// The file and total bars of the transfer under way, and the file
        /// number the file bar shows.
        bytes: Mutex<Option<ByteBars>>,
    },
    Plain(Lines),
}

struct ByteBars {
    file: ProgressBar,
    total: ProgressBar,
    index: usize,
}

/// A bar in `style`, or the default look if the (fixed) template were
/// refused: a bad template would only cost the looks.
fn styled(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

impl ProgressView {
    fn new() -> Arc<Self> {
        let every = progress::interval();
        let mode = if std::io::stdout().is_terminal() {
            let multi = MultiProgress::new();
            let stage = multi.add(styled(0, "{bar:30.cyan/blue} {msg}"));
            Mode::Bars {
                multi,
                stage,
                bytes: Mutex::new(None),
            }
        } else {
            Mode::Plain(Lines::stderr(every))
        };
        Arc::new(Self {
            mode,
            last: Mutex::new(Instant::now()),
            every,
        })
    }

    fn show(&self, p: Progress) {
        match &self.mode {
            Mode::Bars { stage, .. } => {
                stage.set_length(p.total);
                stage.set_position(p.done);
                stage.set_message(p.to_string());
            }
            Mode::Plain(_) => {
                let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= self.every {
                    *last = Instant::now();
                    eprintln!("{p}");
                }
            }
        }
    }
}

impl ProgressSink for ProgressView {
    fn update(&self, r: &Reading) {
        let (multi, bytes) = match &self.mode {
            Mode::Plain(lines) => return lines.update(r),
            // No file has started yet: nothing worth a bar.
            Mode::Bars { .. } if r.index == 0 => return,
            Mode::Bars { multi, bytes, .. } => (multi, bytes),
        };
        let mut bytes = bytes.lock().unwrap_or_else(|e| e.into_inner());
        let bars = bytes.get_or_insert_with(|| ByteBars {
            file: multi.add(styled(
                0,
                "{bar:30.green/blue} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )),
            total: multi.add(styled(
                r.total,
                "{bar:30.green/blue} {bytes}/{total_bytes} ({percent}%) ETA {eta} {msg}",
            )),
            index: 0,
        });
        if bars.index != r.index {
            // A new file: its own rate and ETA from zero.
            bars.index = r.index;
            bars.file.reset();
            bars.file.set_length(r.file_size);
            let name = r.file.as_ref().map(|f| f.display().to_string());
            bars.file.set_message(name.unwrap_or_default());
            bars.total.set_message(if r.count > 1 {
                format!("{} total, file {} of {}", r.label, r.index, r.count)
            } else {
                format!("{} total", r.label)
            });
        }
        bars.file.set_position(r.file_done);
        bars.total.set_length(r.total);
        bars.total.set_position(r.done);
    }

    fn finish(&self, r: &Reading) {
        match &self.mode {
            Mode::Plain(lines) => lines.finish(r),
            Mode::Bars { multi, bytes, .. } => {
                let taken = bytes.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(bars) = taken {
                    for bar in [bars.file, bars.total] {
                        bar.finish_and_clear();
                        multi.remove(&bar);
                    }
                }
            }
        }
    }

    fn tick(&self) -> Duration {
        match &self.mode {
            Mode::Plain(lines) => lines.tick(),
            // Often enough for a smooth bar and rate.
            Mode::Bars { .. } => Duration::from_millis(100),
        }
    }
}

impl Drop for ProgressView {
    fn drop(&mut self) {
        if let Mode::Bars { stage, .. } = &self.mode {
            stage.finish_and_clear();
        }
    }
}

fn persist(m: &Manifest) -> Result<&Persist> {
    m.persist.as_ref().ok_or_else(|| {
        anyhow!("persistence is off in `{}`: set `persist.remote` (e.g. GITHUB_REPO) and `persist.paths`", m.file.display())
    })
}

/// Ask the running `up`, if any.
fn ask(p: &Persist, cmd: &str) -> Result<Option<Value>> {
    let answer = control::request(&p.workdir, cmd).with_context(|| {
        format!(
            "cannot talk to the running `stackctl up` through `{}`",
            control::socket_path(&p.workdir).display()
        )
    })?;
    match answer {
        None => Ok(None),
        Some(v) if v["ok"] == Value::Bool(true) => Ok(Some(v)),
        Some(v) => bail!(
            "{}",
            v["error"]
                .as_str()
                .unwrap_or("the running `stackctl up` refused")
        ),
    }
}

/// Open the workdir for a command run without `up`.
fn open(p: &Persist) -> Result<Persister> {
    Persister::open(p).map_err(|e| anyhow!("{e}"))
}

/// Whether a restore into the workdir completed (its marker; not merely a
/// `repo.git` that opening it or a look at the remote created).
fn restored_here(p: &Persist) -> bool {
    crate::persist::restore::marker::exists(&p.workdir)
}

/// `stackctl backup`.
pub fn backup(m: &Manifest) -> Result<()> {
    let p = persist(m)?;
    if let Some(v) = ask(p, "backup")? {
        print_report(&v["report"]);
        return Ok(());
    }
    // No `up` runs: do it here, but never push over the remote from a
    // workdir that has not seen it (that is how a fresh container would
    // overwrite a good backup with empty data, or roll newer local files
    // back to the remote's). Opened first: it records a restore that an
    // earlier version completed.
    let view = ProgressView::new();
    let persister = open(p)?.with_progress_sink(view.clone());
    if !restored_here(p) {
        bail!(
            "no `stackctl up` is running and workdir `{}` has never restored: run `stackctl restore` first (or `stackctl up`)",
            p.workdir.display()
        );
    }
    let restored = persister
        .restore_with_progress(
            &RestoreOptions {
                keep_newer_local: true,
                ..RestoreOptions::default()
            },
            &|pr| view.show(pr),
        )
        .map_err(|e| anyhow!("{e}"))?;
    for (path, why) in &restored.applied.failed {
        eprintln!("warning: not restored: {}: {why}", path.display());
    }
    if restored.state != RestoreState::ConfirmedEmpty && !restored.changes.is_empty() {
        eprintln!(
            "restored {} newer file(s) from the remote before the snapshot",
            restored.changes.len()
        );
    }
    let report = persister.snapshot_and_push_with_progress(&|pr| view.show(pr));
    // A one-shot command gives the lease up at once: a container starting
    // next (a wiped disk, a new instance) must not wait for it to expire.
    if let Err(e) = persister.release_lease() {
        eprintln!(
            "warning: cannot release the write lease ({e}); the next writer waits for it to expire"
        );
    }
    let report = report.map_err(|e| anyhow!("{e}"))?;
    // The persister holds the view too: both go before the report is
    // printed, so the bars are cleared first.
    drop(persister);
    drop(view);
    print_report(&control::report_json(&report));
    if report.commit.is_some() && report.pushed.is_none() && report.parked.is_none() {
        bail!("the snapshot was taken but not pushed; it is queued in the workdir and goes out with the next backup");
    }
    Ok(())
}

/// A snapshot report (the shape of [`control::report_json`]) as `backup`
/// prints it; `backup --url` prints the API's answer through it too.
pub(crate) fn print_report(r: &Value) {
    match r["commit"].as_str() {
        Some(c) => println!(
            "snapshot {} ({} files, {} bytes){}",
            shorten(c),
            r["files"],
            r["bytes"],
            if r["pushed"].is_string() {
                ", pushed".to_string()
            } else if let Some(p) = r["parked"].as_str() {
                format!(", parked in `{p}`: another stackctl holds the write lease and folds it in")
            } else {
                ", not pushed yet".to_string()
            }
        ),
        None => println!("nothing changed since the last snapshot"),
    }
    if let Some(list) = r["too_large"].as_array() {
        for f in list {
            println!(
                "warning: skipped {} ({} bytes): at or above `large_files.threshold`",
                f["path"].as_str().unwrap_or("?"),
                f["size"]
            );
        }
    }
}

/// `stackctl restore`.
pub fn restore(m: &Manifest, args: &RestoreArgs) -> Result<()> {
    let p = persist(m)?;
    if control::request(&p.workdir, "snapshots")
        .ok()
        .flatten()
        .is_some()
    {
        // The running `up` owns the workdir: it restores as the admin API
        // does (undo snapshot first, the services using the paths stopped).
        return crate::cmd::restore::restore_through_up(&p.workdir, args);
    }
    let view = ProgressView::new();
    let persister = open(p)?.with_progress_sink(view.clone());
    let mut opts = RestoreOptions {
        dry_run: args.dry_run,
        at: args.at.clone(),
        paths: args.paths.clone(),
        force: args.force,
        keep_newer_local: false,
    };
    // A workdir that has never seen these files cannot tell newer local data
    // from old: look first, and ask for --force before overwriting.
    if !args.force && !args.dry_run && !restored_here(p) {
        opts.dry_run = true;
        let plan = persister.restore(&opts).map_err(|e| anyhow!("{e}"))?;
        let clobbered: Vec<_> = plan.changes.iter().filter(|c| c.exists()).collect();
        if !clobbered.is_empty() {
            let list: Vec<String> = clobbered
                .iter()
                .take(10)
                .map(|c| format!("  {}", c.display()))
                .collect();
            bail!(
                "{} local file(s) differ from the snapshot and this workdir has no record of them:\n{}\npass --force to overwrite them, or --dry-run to list all",
                clobbered.len(),
                list.join("\n")
            );
        }
        opts.dry_run = false;
    }
    let report = persister
        .restore_with_progress(&opts, &|pr| view.show(pr))
        .map_err(|e| anyhow!("{e}"))?;
    drop(persister);
    drop(view);
    if args.dry_run {
        let with = if args.force { "" } else { " (with --force)" };
        print_plan(&report.deletions, &report.changes, with);
        return Ok(());
    }
    for d in &report.deletions {
        println!("deleted {} (not in the snapshot)", d.display());
    }
    match report.state {
        RestoreState::ConfirmedEmpty => {
            println!("the remote has no snapshot yet: nothing to restore")
        }
        RestoreState::Restored(oid) | RestoreState::KeptLocal(oid) => {
            print_restored(&oid.to_string(), report.applied.files, report.applied.bytes)
        }
        RestoreState::Pending => {}
    }
    for a in &report.absent {
        println!("note: the snapshot has nothing for {}", a.display());
    }
    unrestored(&report.applied.failed)
}

/// What a dry run found (`restore --dry-run`, local or through --url):
/// deletions first, they are what a forced restore cannot take back.
pub(crate) fn print_plan(deletions: &[PathBuf], changes: &[PathBuf], with: &str) {
    for d in deletions {
        println!("would delete {}{with}", d.display());
    }
    if changes.is_empty() && deletions.is_empty() {
        println!("nothing would change");
    }
    for c in changes {
        println!("would restore {}", c.display());
    }
}

/// The line a completed restore prints.
pub(crate) fn print_restored(id: &str, files: u64, bytes: u64) {
    println!(
        "restored snapshot {} ({files} files, {bytes} bytes written)",
        shorten(id)
    );
}

/// Name every large file a restore left absent; an error if there is one.
fn unrestored(failed: &[(std::path::PathBuf, String)]) -> Result<()> {
    for (path, why) in failed {
        eprintln!("not restored: {}: {why}", path.display());
    }
    if !failed.is_empty() {
        bail!(
            "{} large file(s) could not be restored (their blob is missing or corrupt in the store); everything else was restored. Check `persist.large_files`, or restore an older snapshot",
            failed.len()
        );
    }
    Ok(())
}

/// `stackctl snapshots`.
pub fn snapshots(m: &Manifest) -> Result<()> {
    let p = persist(m)?;
    let mut pending = Vec::new();
    let list = match ask(p, "snapshots")? {
        Some(v) => v["snapshots"].clone(),
        None => {
            let persister = open(p)?;
            // A dry-run restore fetches the branch without writing anything.
            persister
                .restore(&RestoreOptions {
                    dry_run: true,
                    ..RestoreOptions::default()
                })
                .map_err(|e| anyhow!("{e}"))?;
            let list = persister.list_snapshots(1000).map_err(|e| anyhow!("{e}"))?;
            pending = persister.pending_snapshots().map_err(|e| anyhow!("{e}"))?;
            control::snapshots_json(&list)
        }
    };
    let list = list.as_array().cloned().unwrap_or_default();
    print_pending(&pending);
    print_snapshot_table(&list);
    Ok(())
}

/// The snapshot table of `snapshots` (local, through `up`, or --url). A
/// time is Unix seconds (local) or RFC 3339 (the admin API); a snapshot
/// the API marks `pending` is not pushed yet.
pub(crate) fn print_snapshot_table(list: &[Value]) {
    if list.is_empty() {
        println!("no snapshots yet");
        return;
    }
    println!(
        "{:<12}  {:<19}  {:>7}  {:>12}  message",
        "id", "time (UTC)", "files", "bytes"
    );
    for s in list {
        let id = s["id"].as_str().unwrap_or("");
        let time = match &s["time"] {
            Value::String(t) => rfc3339_shown(t),
            t => t
                .as_i64()
                .map(crate::persist::snapshot::format_utc)
                .unwrap_or_default(),
        };
        let queued = if s["pending"] == Value::Bool(true) {
            " (not pushed yet)"
        } else {
            ""
        };
        let num = |v: &Value| {
            v.as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<12}  {:<19}  {:>7}  {:>12}  {}{queued}",
            shorten(id),
            time,
            num(&s["files"]),
            num(&s["bytes"]),
            s["message"].as_str().unwrap_or("")
        );
    }
}

/// A snapshot id as the tables show it (12 characters).
fn shorten(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `2026-12-05T12:00:00Z` as `2026-12-05 12:00:00` (the local table's
/// look); anything else as it came.
pub(crate) fn rfc3339_shown(t: &str) -> String {
    let utc = t.ends_with('Z') || t.ends_with("+00:00");
    match (t.get(..10), t.get(10..11), t.get(11..19)) {
        (Some(date), Some("T" | "t" | " "), Some(time)) if utc => format!("{date} {time}"),
        _ => t.to_string(),
    }
}

/// Snapshots parked in `refs/stackctl/pending/*` (instance, commit, time).
fn print_pending(pending: &[(String, git2::Oid, i64)]) {
    if pending.is_empty() {
        return;
    }
    println!("pending (taken while another stackctl held the write lease; it folds them into the branch at its next push, and a restore takes newer ones into account):");
    for (instance, oid, time) in pending {
        println!(
            "  {}  {}  from `{instance}`",
            &oid.to_string()[..12],
            crate::persist::snapshot::format_utc(*time)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_times_show_like_local_ones() {
        assert_eq!(rfc3339_shown("2026-12-05T12:01:02Z"), "2026-12-05 12:01:02");
        assert_eq!(
            rfc3339_shown("2026-12-05T12:01:02+00:00"),
            "2026-12-05 12:01:02"
        );
        // Not UTC, or not a time: shown as sent (never a panic on odd input).
        for odd in [
            "2026-12-05T12:01:02+02:00",
            "yesterday",
            "",
            "2026-12-05T1é",
        ] {
            assert_eq!(rfc3339_shown(odd), odd);
        }
        assert_eq!(shorten("0123456789abcdef"), "0123456789ab");
        assert_eq!(shorten("abc"), "abc");
    }
}
