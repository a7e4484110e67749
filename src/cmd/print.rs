//! What the commands print, in one place: the local commands and their
//! `--url` twins show a backup report, a restore plan, a restored snapshot
//! and the snapshot table through the same functions, so the two paths
//! cannot drift apart (the admin API's answers are brought into the local
//! shapes first).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

/// A snapshot report (the shape of [`crate::control::report_json`]) as `backup`
/// prints it; `backup --url` prints the API's answer through it too.
pub(super) fn print_report(r: &Value) {
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

/// What a dry run found (`restore --dry-run`, local or through --url):
/// deletions first, they are what a forced restore cannot take back.
pub(super) fn print_plan(deletions: &[PathBuf], changes: &[PathBuf], with: &str) {
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
pub(super) fn print_restored(id: &str, files: u64, bytes: u64) {
    println!(
        "restored snapshot {} ({files} files, {bytes} bytes written)",
        shorten(id)
    );
}

/// The snapshot table of `snapshots` (local, through `up`, or --url). A
/// time is Unix seconds (local) or RFC 3339 (the admin API); a snapshot
/// the API marks `pending` is not pushed yet.
pub(super) fn print_snapshot_table(list: &[Value]) {
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
        println!(
            "{:<12}  {:<19}  {:>7}  {:>12}  {}{queued}",
            shorten(id),
            time,
            count(&s["files"]),
            count(&s["bytes"]),
            s["message"].as_str().unwrap_or("")
        );
    }
}

/// A snapshot id as the tables show it (12 characters).
pub(super) fn shorten(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `2026-12-05T12:00:00Z` as `2026-12-05 12:00:00` (the local table's
/// look); anything else as it came.
fn rfc3339_shown(t: &str) -> String {
    let utc = t.ends_with('Z') || t.ends_with("+00:00");
    match (t.get(..10), t.get(10..11), t.get(11..19)) {
        (Some(date), Some("T" | "t" | " "), Some(time)) if utc => format!("{date} {time}"),
        _ => t.to_string(),
    }
}

/// `running` as one progress line, or `None` when nothing runs.
pub(super) fn running_line(running: &Value) -> Option<String> {
    let op = running["op"].as_str()?;
    Some(match running["progress"].as_str() {
        Some(p) if !p.is_empty() => format!("{op}: {p}"),
        _ => format!("{op}: running"),
    })
}

/// An RFC 3339 time as the snapshot table shows it, marked UTC.
pub(super) fn time(v: &Value) -> String {
    match v.as_str() {
        Some(t) => {
            let shown = rfc3339_shown(t);
            if shown == t {
                shown
            } else {
                format!("{shown} UTC")
            }
        }
        None => "-".to_string(),
    }
}

/// A count from the API, or `-` where it sent none.
pub(super) fn count(v: &Value) -> String {
    v.as_u64()
        .map(|n| n.to_string())
        .unwrap_or_else(|| "-".into())
}

/// Writes a line to stdout; a closed pipe (`stackctl routes get | head`) is not an error.
pub(super) fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
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
