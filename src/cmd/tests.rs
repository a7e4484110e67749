//! Unit tests of the `--url` paths of `backup`, `restore`, `snapshots`
//! and `status`: the pure renderers, and the calls against a fake gateway
//! (canned answers in the contract's shapes).

use std::path::PathBuf;

use serde_json::json;

use super::api::{failure, Place};
use super::backup::backup_report;
use super::restore::{plan_lists, restored_lines, totals};
use super::snapshots::{list_snapshots, query};
use super::status::render_persist;
use crate::cli::{AdminArgs, RestoreArgs};
use crate::client::tests::{admin, answer, fake_gateway};
use crate::client::Source;

fn ok(body: &str) -> String {
    answer("200 OK", "", body)
}

#[test]
fn a_backup_answer_prints_like_a_local_report() {
    let pushed = backup_report(&json!({"ok": true, "unchanged": false,
        "snapshot": {"id": "0123456789abcdef", "time": "2026-12-05T12:00:00Z", "files": 3, "bytes": 42, "pushed": true}}));
    assert_eq!(pushed["commit"], "0123456789abcdef");
    assert!(pushed["pushed"].is_string());
    assert_eq!(
        (pushed["files"].clone(), pushed["bytes"].clone()),
        (json!(3), json!(42))
    );
    let unchanged = backup_report(&json!({"ok": true, "snapshot": null, "unchanged": true}));
    assert!(unchanged["commit"].is_null());
    // Hostile shapes: no panic, nothing invented.
    for odd in [
        json!(null),
        json!([]),
        json!({"snapshot": {"id": 7}}),
        json!("x"),
    ] {
        assert!(backup_report(&odd)["commit"].is_null(), "{odd}");
    }
}

#[test]
fn a_dry_run_lists_deletions_changes_and_cut_lists() {
    let plan = json!({"dry_run": true, "at": "abc", "paths": [
        {"path": "/data/a", "added": 1, "changed": 1, "removed": 1, "bytes": 9, "files": [
            {"path": "/data/a/new", "change": "added"},
            {"path": "/data/a/old", "change": "removed"},
            {"path": "/data/a/x", "change": "changed"},
            {"change": "added"}
        ]},
        {"path": "/data/b", "added": 5000, "changed": 0, "removed": 0, "bytes": 1, "truncated": true, "files": []},
        "junk"
    ]});
    let (del, chg, cut) = plan_lists(&plan);
    assert_eq!(del, vec![PathBuf::from("/data/a/old")]);
    assert_eq!(
        chg,
        vec![PathBuf::from("/data/a/new"), PathBuf::from("/data/a/x")]
    );
    assert_eq!(
        cut,
        vec!["… the list for /data/b is cut: 5000 added, 0 changed, 0 removed in all".to_string()]
    );
    assert_eq!(totals(&plan["paths"]), (5002, 10));
    assert_eq!(plan_lists(&json!(null)), (vec![], vec![], vec![]));
}

#[test]
fn a_restore_report_names_deletions_and_services() {
    let done = json!({"ok": true, "at": "abc", "undo": "def", "stopped": ["web", "bot"],
        "restarted": ["bot"], "paths": [{"path": "/data", "added": 0, "changed": 2, "removed": 3, "bytes": 5}]});
    assert_eq!(
        restored_lines(&done, &Place::Url("https://s.example")),
        vec![
            "deleted 3 file(s) under /data (not in the snapshot)",
            "stopped: web, bot",
            "started again: bot",
            "warning: not running again: web (see `stackctl status --url https://s.example`)",
        ]
    );
    assert!(restored_lines(&json!({}), &Place::Local).is_empty());
}

#[test]
fn status_shows_the_persistence_state() {
    assert_eq!(
        render_persist(&json!({"enabled": false})),
        "persistence: off (no `persist:` section in the manifest)\n"
    );
    let text = render_persist(&json!({
        "enabled": true, "remote": "https://github.com/o/r.git", "branch": "main",
        "restore": {"state": "restored", "snapshot": "0123456789abcdef", "progress": null, "unrestored": ["/d/big: blob missing"]},
        "last_snapshot": {"id": "fedcba9876543210", "time": "2026-12-05T12:00:00Z", "files": 3, "bytes": 42, "pushed": false},
        "pending": 1, "changes": {"dirty": true, "since": "2026-12-05T12:00:30Z"},
        "last_push": {"snapshot": "0123456789abcdef", "time": "2026-12-05T11:00:00Z"},
        "last_error": "push refused",
        "lease": {"holder": "space-1", "host": "box", "mine": true, "since": "2026-12-05T11:00:00Z",
                  "renewed": "2026-12-05T12:01:00Z", "expires": "2026-12-05T12:03:00Z"},
        "large_files": {"store": "lfs", "files": 1, "bytes": 100},
        "next_snapshot": {"time": "2026-12-05T12:05:00Z", "reason": "debounce"}, "conflicts": ["/d/x"],
        "running": {"op": "backup", "started": "2026-12-05T12:02:00Z", "progress": "3/10 files"}
    }));
    assert_eq!(
        text,
        "persistence:\n\
         \x20 remote: https://github.com/o/r.git (branch main)\n\
         \x20 restored: from snapshot 0123456789ab\n\
         \x20 not restored: /d/big: blob missing\n\
         \x20 last snapshot: fedcba987654 at 2026-12-05 12:00:00 UTC (3 files, 42 bytes, queued)\n\
         \x20 pending: 1 snapshot(s) not pushed yet\n\
         \x20 changes: not snapshotted yet, since 2026-12-05 12:00:30 UTC\n\
         \x20 last push: 0123456789ab at 2026-12-05 11:00:00 UTC\n\
         \x20 last error: push refused\n\
         \x20 write lease: space-1 on box (this stack), since 2026-12-05 11:00:00 UTC, renewed 2026-12-05 12:01:00 UTC, expires 2026-12-05 12:03:00 UTC\n\
         \x20 large files: 1 files, 100 bytes in lfs\n\
         \x20 next snapshot: 2026-12-05 12:05:00 UTC (debounce)\n\
         \x20 conflicts: /d/x\n\
         \x20 running: backup: 3/10 files (since 2026-12-05 12:02:00 UTC)\n"
    );
    // Odd shapes never panic; unknowns are left out.
    for odd in [
        json!({"enabled": true}),
        json!({"enabled": true, "restore": 5, "last_snapshot": {"id": "é"}, "lease": [], "running": {"op": 1}}),
        json!([]),
    ] {
        let _ = render_persist(&odd);
    }
    assert_eq!(
        render_persist(&json!({"enabled": true, "last_snapshot": null})),
        "persistence:\n  last snapshot: none yet\n"
    );
    // Nothing pending, a push of unknown time, a lease of an older version.
    assert_eq!(
        render_persist(&json!({"enabled": true, "last_snapshot": null, "changes": {"dirty": false, "since": null},
            "last_push": {"snapshot": "abc", "time": null}, "lease": {"holder": "other", "mine": false}})),
        "persistence:\n  last snapshot: none yet\n  changes: none since the last snapshot\n  last push: abc\n  write lease: other\n"
    );
}

#[test]
fn query_values_are_encoded() {
    assert_eq!(query("abc123"), "abc123");
    assert_eq!(query("2026-12-05 12:00"), "2026-12-05%2012:00");
    assert_eq!(query("a&b=c#"), "a%26b%3Dc%23");
}

#[test]
fn the_list_follows_pages_and_stops_on_a_stuck_cursor() {
    let (url, seen) = fake_gateway(vec![
        ok(r#"{"snapshots": [{"id": "a1"}, {"id": "a2"}], "next": "a2"}"#),
        // The same cursor again: stop rather than loop.
        ok(r#"{"snapshots": [{"id": "a3"}], "next": "a2"}"#),
    ]);
    let mut a = admin(&url, vec![("pw", Source::Flag)]);
    let list = list_snapshots(&mut a, 1000).unwrap();
    let ids: Vec<&str> = list.iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, ["a1", "a2", "a3"]);
    let first = seen.recv().unwrap();
    assert!(
        first.starts_with("GET /admin/persist/snapshots?limit=500 HTTP/1.1\r\n"),
        "{first}"
    );
    assert!(seen
        .recv()
        .unwrap()
        .starts_with("GET /admin/persist/snapshots?limit=500&after=a2 HTTP/1.1\r\n"));
}

#[test]
fn errors_say_what_to_do_next() {
    let (url, _seen) = fake_gateway(vec![
        answer("409 Conflict", "", r#"{"error": "a restore is running"}"#),
        answer(
            "502 Bad Gateway",
            "",
            r#"{"error": "the push failed: auth"}"#,
        ),
        answer(
            "502 Bad Gateway",
            "",
            r#"{"error": "nothing was restored: try again once the remote answers"}"#,
        ),
        answer("404 Not Found", "", "not found"),
        answer(
            "404 Not Found",
            "",
            r#"{"error": "no snapshot matches `zz`"}"#,
        ),
        answer(
            "409 Conflict",
            "",
            r#"{"error": "persistence is off: add a persist section to stack.yaml"}"#,
        ),
    ]);
    let mut a = admin(&url, vec![("pw", Source::Flag)]);
    let mut next = |op: &str| {
        let res = a.request("POST", "/admin/persist/x", None, None).unwrap();
        failure(&a, &res, op).to_string()
    };
    assert_eq!(
        next("backup"),
        format!("a restore is running; wait for it to finish (`stackctl status --url {url}` shows it), then run the backup again")
    );
    assert_eq!(
        next("backup"),
        format!("the push failed: auth; the snapshot stays queued on the stack and goes out with the next backup: fix the remote (token, network), then run `stackctl backup --url {url}` again")
    );
    assert_eq!(
        next("restore"),
        "nothing was restored: try again once the remote answers; fix the remote (token, network), then run the restore again"
    );
    assert!(next("snapshots").contains("has no backup API"));
    assert_eq!(next("restore"), "no snapshot matches `zz`");
    assert_eq!(
        next("backup"),
        "persistence is off: add a persist section to stack.yaml"
    );
}

#[test]
fn a_backup_checks_the_state_then_posts_json() {
    let (url, seen) = fake_gateway(vec![
        ok(r#"{"enabled": true, "running": null}"#),
        ok(r#"{"ok": true, "snapshot": null, "unchanged": true}"#),
    ]);
    let args = AdminArgs {
        password: Some("secret-pass-1".into()),
        url: Some(url),
    };
    super::backup::remote(None, &args).unwrap();
    assert!(seen
        .recv()
        .unwrap()
        .starts_with("GET /admin/persist HTTP/1.1\r\n"));
    let post = seen.recv().unwrap();
    assert!(
        post.starts_with("POST /admin/persist/backup HTTP/1.1\r\n"),
        "{post}"
    );
    assert!(post.contains("X-Admin-Password: secret-pass-1\r\n"));
    assert!(post.contains("Content-Type: application/json\r\n"));
    assert!(post.ends_with("\r\n\r\n{}"), "{post}");
}

#[test]
fn persistence_off_is_said_before_anything_is_sent() {
    let (url, seen) = fake_gateway(vec![ok(r#"{"enabled": false}"#)]);
    let args = AdminArgs {
        password: Some("pw".into()),
        url: Some(url.clone()),
    };
    let err = super::backup::remote(None, &args).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "persistence is off on the stack at {url}: add a `persist:` section to its stack.yaml"
        )
    );
    assert_eq!(seen.iter().count(), 1);
}

#[test]
fn a_restore_without_force_off_a_terminal_only_previews() {
    let (url, seen) = fake_gateway(vec![
        ok(r#"{"enabled": true}"#),
        ok(r#"{"dry_run": true, "at": "abcdef0123456789", "paths": []}"#),
    ]);
    let args = RestoreArgs {
        at: Some("abcdef01".into()),
        paths: vec![PathBuf::from("/data/x")],
        dry_run: false,
        force: false,
        remote: crate::cli::RemoteArgs {
            url: Some(url.clone()),
            password: Some("pw".into()),
        },
    };
    let err = super::restore::remote(None, &args).unwrap_err().to_string();
    assert!(err.contains("pass --force to do it"), "{err}");
    let _state = seen.recv().unwrap();
    let dry = seen.recv().unwrap();
    assert!(
        dry.ends_with(r#"{"at":"abcdef01","dry_run":true,"paths":["/data/x"]}"#),
        "{dry}"
    );
}

#[test]
fn a_forced_restore_sends_the_confirmation() {
    let (url, seen) = fake_gateway(vec![
        ok(r#"{"enabled": true}"#),
        ok(
            r#"{"ok": true, "at": "abcdef0123456789", "undo": "0000111122223333", "stopped": [], "restarted": [], "paths": []}"#,
        ),
    ]);
    let args = RestoreArgs {
        at: Some("abcdef01".into()),
        paths: vec![],
        dry_run: false,
        force: true,
        remote: crate::cli::RemoteArgs {
            url: Some(url),
            password: Some("pw".into()),
        },
    };
    super::restore::remote(None, &args).unwrap();
    let _state = seen.recv().unwrap();
    let post = seen.recv().unwrap();
    assert!(
        post.ends_with(r#"{"at":"abcdef01","confirm":"abcdef01"}"#),
        "{post}"
    );
}
