//! Which services use the paths a restore writes (pure): those are stopped
//! while it runs, and started again afterwards.
//!
//! The rule, from what the manifest says of each enabled service:
//!
//! - a `required_paths` entry, an absolute path in its `command`, or an
//!   absolute path in an `environment` value lies at, below or above a
//!   restored path (a service given `/data` writes `/data/bot`; one given
//!   `/data/bot/db.sqlite` uses the restored `/data/bot`);
//! - or its `working_dir` is at or below a restored path (it runs inside
//!   the data). A working directory *above* the data does not count: every
//!   service runs in the manifest's directory unless told otherwise, and
//!   that says nothing about which data it touches.
//!
//! When no service matches, the manifest cannot tell who writes there, and
//! every enabled service is stopped: nothing is overwritten under a writer.

use std::path::{Path, PathBuf};

use crate::manifest::Service;

/// The enabled services that use any of `paths`, in manifest order (all
/// enabled services when none can be told to).
pub fn services_using(services: &[Service], paths: &[PathBuf]) -> Vec<String> {
    let enabled = || services.iter().filter(|s| s.enabled);
    let users: Vec<String> = enabled()
        .filter(|s| uses(s, paths))
        .map(|s| s.name.clone())
        .collect();
    if users.is_empty() {
        enabled().map(|s| s.name.clone()).collect()
    } else {
        users
    }
}

fn uses(s: &Service, paths: &[PathBuf]) -> bool {
    let overlaps = |p: &Path| paths.iter().any(|r| p.starts_with(r) || r.starts_with(p));
    let named = s
        .required_paths
        .iter()
        .map(PathBuf::as_path)
        .chain(s.command.iter().flat_map(|a| absolute_paths(a)))
        .chain(
            s.environment
                .iter()
                .filter_map(|(_, v)| v.as_deref())
                .flat_map(absolute_paths),
        )
        .any(|p| meaningful(p) && overlaps(p));
    let inside = meaningful(&s.working_dir) && paths.iter().any(|r| s.working_dir.starts_with(r));
    named || inside
}

/// `/` names everything and so tells nothing.
fn meaningful(p: &Path) -> bool {
    p.components().count() > 1
}

/// The absolute paths in a command argument or variable value: pieces
/// that begin with `/`, split where a shell or a flag would split them
/// (`--data=/data/x`, `PATH`-like lists, `sh -c "… > /data/x/log; …"`).
fn absolute_paths(text: &str) -> impl Iterator<Item = &Path> {
    text.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '=' | ':' | ';' | ',' | '|' | '&' | '<' | '>' | '\'' | '"' | '(' | ')' | '`'
            )
    })
    .filter(|piece| piece.starts_with('/'))
    .map(Path::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, f: impl FnOnce(&mut Service)) -> Service {
        let mut s = crate::supervisor::testutil::service(name);
        s.working_dir = PathBuf::from("/app");
        s.command = vec!["bot".into()];
        f(&mut s);
        s
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn services_are_matched_by_what_their_manifest_names() {
        let services = [
            svc("db", |s| s.required_paths = vec![p("/data/db")]),
            svc("bot", |s| {
                s.command = vec![
                    "sh".into(),
                    "-c".into(),
                    "exec bot --data=/data/bot/state.json >> /data/bot/log; true".into(),
                ]
            }),
            svc("web", |s| {
                s.environment = vec![
                    ("HOME".into(), Some("/".into())),
                    ("UPLOADS".into(), Some("/srv:/data/uploads".into())),
                    ("PASS".into(), None),
                ]
            }),
            svc("inside", |s| s.working_dir = p("/data/site/www")),
            svc("off", |s| {
                s.enabled = false;
                s.required_paths = vec![p("/data/bot")];
            }),
        ];
        let cases: &[(&[&str], &[&str])] = &[
            (&["/data/db"], &["db"]),
            (&["/data/db/main.sqlite"], &["db"]),
            (&["/data/bot"], &["bot"]),
            (&["/data/uploads"], &["web"]),
            (&["/data/site"], &["inside"]),
            (&["/data/bot", "/data/db"], &["db", "bot"]),
            // `/data` holds everyone's data.
            (&["/data"], &["db", "bot", "web", "inside"]),
            // Nobody names it: every enabled service stops.
            (&["/data/other"], &["db", "bot", "web", "inside"]),
        ];
        for (paths, want) in cases {
            let paths: Vec<PathBuf> = paths.iter().map(|s| p(s)).collect();
            assert_eq!(services_using(&services, &paths), *want, "{paths:?}");
        }
    }

    #[test]
    fn a_working_dir_above_the_data_or_at_the_root_is_no_use() {
        let services = [
            svc("a", |s| s.working_dir = p("/")),
            svc("b", |s| s.working_dir = p("/data")),
            svc("c", |s| s.required_paths = vec![p("/data/c")]),
        ];
        assert_eq!(services_using(&services, &[p("/data/c")]), ["c"]);
        // A sibling is not a prefix match.
        assert_eq!(services_using(&services, &[p("/data/cc")]), ["a", "b", "c"]);
    }
}
