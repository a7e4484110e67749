//! `stackctl backup`, `restore` and `snapshots`: through the running `up`
//! when there is one (it owns the workdir), on their own otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::cli::RestoreArgs;
use crate::control;
use crate::manifest::{Manifest, Persist};
use crate::persist::{Persister, Progress, RestoreOptions, RestoreState};

/// How often a plain progress line is printed when stdout is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Shows [`Progress`] of a restore or an upload: a bar when stdout is a
/// terminal, else a plain line on stderr every [`PLAIN_EVERY`] (an
/// operation shorter than that prints nothing; logs stay readable).
struct ProgressView {
    bar: Option<ProgressBar>,
    /// When the last plain line was printed (or the view was made).
    last: Mutex<Instant>,
}

impl ProgressView {
    fn new() -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            // A fixed template: a bad one would only lose the bar.
            if let Ok(style) = ProgressStyle::with_template("{bar:30.cyan/blue} {msg}") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Self {
            bar,
            last: Mutex::new(Instant::now()),
        }
    }

    fn show(&self, p: Progress) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(p.total);
                bar.set_position(p.done);
                bar.set_message(p.to_string());
            }
            None => {
                let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= PLAIN_EVERY {
                    *last = Instant::now();
                    eprintln!("{p}");
                }
            }
        }
    }
}

impl Drop for ProgressView {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
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

/// Whether the workdir has git state from an earlier restore or snapshot.
fn workdir_known(p: &Persist) -> bool {
    p.workdir.join("repo.git").join("HEAD").exists()
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
    // overwrite a good backup with empty data).
    if !workdir_known(p) {
        bail!(
            "no `stackctl up` is running and workdir `{}` has never restored: run `stackctl restore` first (or `stackctl up`)",
            p.workdir.display()
        );
    }
    let persister = open(p)?;
    let view = ProgressView::new();
    let restored = persister
        .restore_with_progress(
            &RestoreOptions {
                keep_newer_local: true,
                ..RestoreOptions::default()
            },
            &|pr| view.show(pr),
        )
        .map_err(|e| anyhow!("{e}"))?;
    if restored.state != RestoreState::ConfirmedEmpty && !restored.changes.is_empty() {
        eprintln!(
            "restored {} newer file(s) from the remote before the snapshot",
            restored.changes.len()
        );
    }
    let report = persister
        .snapshot_and_push_with_progress(&|pr| view.show(pr))
        .map_err(|e| anyhow!("{e}"))?;
    drop(view);
    print_report(&control::report_json(&report));
    if report.commit.is_some() && report.pushed.is_none() {
        bail!("the snapshot was taken but not pushed; it is queued in the workdir and goes out with the next backup");
    }
    Ok(())
}

fn print_report(r: &Value) {
    match r["commit"].as_str() {
        Some(c) => println!(
            "snapshot {} ({} files, {} bytes){}",
            &c[..c.len().min(12)],
            r["files"],
            r["bytes"],
            if r["pushed"].is_string() {
                ", pushed"
            } else {
                ", not pushed yet"
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
        bail!("`stackctl up` is running on this workdir: stop it first (restoring under running services would corrupt their data)");
    }
    let persister = open(p)?;
    let mut opts = RestoreOptions {
        dry_run: args.dry_run,
        at: args.at.clone(),
        paths: args.paths.clone(),
        force: args.force,
        keep_newer_local: false,
    };
    // A workdir that has never seen these files cannot tell newer local data
    // from old: look first, and ask for --force before overwriting.
    if !args.force && !args.dry_run && !workdir_known(p) {
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
    let view = ProgressView::new();
    let report = persister
        .restore_with_progress(&opts, &|pr| view.show(pr))
        .map_err(|e| anyhow!("{e}"))?;
    drop(view);
    if args.dry_run {
        if report.changes.is_empty() {
            println!("nothing would change");
        }
        for c in &report.changes {
            println!("would restore {}", c.display());
        }
        return Ok(());
    }
    match report.state {
        RestoreState::ConfirmedEmpty => {
            println!("the remote has no snapshot yet: nothing to restore")
        }
        RestoreState::Restored(oid) | RestoreState::KeptLocal(oid) => println!(
            "restored snapshot {} ({} files, {} bytes written)",
            &oid.to_string()[..12],
            report.applied.files,
            report.applied.bytes
        ),
        RestoreState::Pending => {}
    }
    for a in &report.absent {
        println!("note: the snapshot has nothing for {}", a.display());
    }
    Ok(())
}

/// `stackctl snapshots`.
pub fn snapshots(m: &Manifest) -> Result<()> {
    let p = persist(m)?;
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
            control::snapshots_json(&list)
        }
    };
    let list = list.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no snapshots yet");
        return Ok(());
    }
    println!(
        "{:<12}  {:<19}  {:>7}  {:>12}  message",
        "id", "time (UTC)", "files", "bytes"
    );
    for s in list {
        let id = s["id"].as_str().unwrap_or("");
        let time = s["time"]
            .as_i64()
            .map(crate::persist::snapshot::format_utc)
            .unwrap_or_default();
        let num = |v: &Value| {
            v.as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<12}  {:<19}  {:>7}  {:>12}  {}",
            &id[..id.len().min(12)],
            time,
            num(&s["files"]),
            num(&s["bytes"]),
            s["message"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
