//! The `persist:` section: the remote, the persisted paths and the large-file store.

use serde::Deserialize;

use super::*;

/// `persist:` as written; the field order is the order of the key hints.
#[derive(Deserialize)]
struct RawPersist {
    remote: Option<Leaf<String>>,
    token: Option<Leaf<String>>,
    branch: Option<Leaf<String>>,
    workdir: Option<Leaf<String>>,
    interval: Option<Leaf<Duration>>,
    debounce: Option<Leaf<Duration>>,
    paths: Option<Field>,
    exclude: Option<Many<String>>,
    history: Option<Field>,
    large_files: Option<Field>,
    readiness_file: Option<Leaf<String>>,
}

/// One `persist.paths` entry written as a mapping.
#[derive(Deserialize)]
struct RawPath {
    path: Option<Leaf<String>>,
    exclude: Option<Many<String>>,
}

#[derive(Deserialize)]
struct RawHistory {
    keep: Option<Leaf<u32>>,
}

#[derive(Deserialize)]
struct RawLargeFiles {
    threshold: Option<Leaf<Size>>,
    store: Option<Leaf<BlobStore>>,
    tag: Option<Leaf<String>>,
    url: Option<Leaf<String>>,
    offload_binary: Option<Leaf<OffloadBinary>>,
}

impl Reader<'_> {
    pub(super) fn persist(&mut self, node: &Node) -> Option<Persist> {
        let f: RawPersist = self.section(node, "persist")?;
        let mut remote = self.val(&f.remote).unwrap_or_default();
        let remote_vars = f
            .remote
            .as_ref()
            .map(|r| r.used.clone())
            .unwrap_or_default();
        // A relative local path is relative to the manifest, like every path.
        if remote.starts_with("./") || remote.starts_with("../") {
            remote = self.at_dir(&remote).display().to_string();
        }
        let remote_pos = pos_or(&f.remote, node.pos);
        if crate::persist::remote::is_ssh(&remote) {
            // Issue 17 item 8: it passed `check`, then failed at every start.
            self.problem(
                remote_pos,
                "persist.remote",
                format!(
                    "`{}`: SSH remotes are not supported (stackctl's git has no SSH)",
                    crate::redact::url(&remote)
                ),
                Some("use the repository's https URL (or `owner/repo` for GitHub) and put a token in `persist.token`".into()),
            );
        } else {
            self.url_credentials(remote_pos, "persist.remote", &remote, &remote_vars);
        }
        let token = self.val(&f.token).filter(|t| !t.is_empty());
        let branch = self
            .val(&f.branch)
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "main".into());
        let workdir = (self.opt_path(&f.workdir)).unwrap_or_else(|| self.dir.join(".stackctl"));
        let mut paths: Vec<PersistPath> = Vec::new();
        match &f.paths {
            Some(Field {
                node:
                    Node {
                        value: Value::Seq(items),
                        ..
                    },
                ..
            }) => {
                for (i, n) in items.iter().enumerate() {
                    let pkey = format!("persist.paths[{i}]");
                    let (p, exclude) = match &n.value {
                        Value::Map(_) => {
                            let Some(pf) = self.section::<RawPath>(n, &pkey) else {
                                continue;
                            };
                            let Some(p) = self.val(&pf.path) else {
                                self.problem(n.pos, &pkey, "`path` is missing", None);
                                continue;
                            };
                            (p, pf.exclude.map(|e| self.texts(&e)).unwrap_or_default())
                        }
                        _ => match self.scalar(n, &pkey) {
                            Some(p) => (p, Vec::new()),
                            None => continue,
                        },
                    };
                    let path = self.at_dir(&p);
                    if path == Path::new("/") {
                        self.problem(
                            n.pos,
                            &pkey,
                            "cannot persist the whole filesystem `/`",
                            None,
                        );
                        continue;
                    }
                    if let Some(other) = paths.iter().find(|o| o.overlaps(&path)) {
                        let msg = format!("overlaps `{}`", other.path.display());
                        self.problem(
                            n.pos,
                            &pkey,
                            msg,
                            Some(
                                "list each directory once; use `exclude` for parts to skip".into(),
                            ),
                        );
                        continue;
                    }
                    paths.push(PersistPath { path, exclude });
                }
            }
            Some(p) => self.problem(
                p.node.pos,
                "persist.paths",
                format!("expected a list, found {}", p.node.kind()),
                None,
            ),
            None => {}
        }
        if paths.is_empty() {
            self.problem(
                node.pos,
                "persist.paths",
                "no paths to persist",
                Some("list the data directories, e.g. `paths: [/home/user/AstrBot/data]`".into()),
            );
        }
        let exclude = f.exclude.map(|e| self.texts(&e)).unwrap_or_default();
        let keep = match &f.history {
            Some(h) => match self.section::<RawHistory>(&h.node, &h.key) {
                Some(hf) => self.val(&hf.keep).unwrap_or(50).max(1),
                None => 50,
            },
            None => 50,
        };
        let github = looks_like_github(&remote);
        let mut large_files = LargeFiles {
            threshold: 50 << 20,
            store: if github {
                BlobStore::GithubRelease
            } else {
                BlobStore::None
            },
            tag: "blobs".into(),
            url: None,
            offload_binary: OffloadBinary::Auto,
        };
        let lf_pos = f.large_files.as_ref().map_or(node.pos, |l| l.node.pos);
        let raw_lf = f
            .large_files
            .as_ref()
            .and_then(|lf| self.section::<RawLargeFiles>(&lf.node, &lf.key));
        if let Some(l) = &raw_lf {
            if let Some(Size(t)) = self.val(&l.threshold) {
                large_files.threshold = t;
            }
            if let Some(store) = self.val(&l.store) {
                large_files.store = match store {
                    // `dir:PATH` is relative to the manifest (not normalised).
                    BlobStore::Dir(p) => BlobStore::Dir(self.dir.join(p)),
                    store => store,
                };
            }
            if let Some(tag) = self.val(&l.tag).filter(|t| !t.is_empty()) {
                large_files.tag = tag;
            }
            large_files.url = self.val(&l.url).filter(|u| !u.is_empty());
            if let (Some(url), Some(u)) = (large_files.url.clone(), &l.url) {
                self.url_credentials(u.pos, "persist.large_files.url", &url, &[]);
            }
            if let Some(o) = self.val(&l.offload_binary) {
                large_files.offload_binary = o;
            }
            if large_files.store == BlobStore::GithubRelease && !github && !remote.is_empty() {
                self.problem(
                    lf_pos,
                    "persist.large_files.store",
                    "`github-release` needs a GitHub remote (owner/repo or a github.com URL)",
                    Some("use `lfs`, `dir:PATH` or `none` with this remote".into()),
                );
            }
        }
        if looks_like_hugging_face(&remote) {
            // Each warning points at its key, or at `large_files:` (or
            // `persist:`) when the key is not written.
            let at = match &raw_lf {
                Some(l) => [
                    pos_or(&l.store, lf_pos),
                    pos_or(&l.threshold, lf_pos),
                    pos_or(&l.offload_binary, lf_pos),
                ],
                None => [lf_pos; 3],
            };
            self.hugging_face_warnings(at, &large_files);
        }
        if let Some(inside) = paths.iter().find(|pp| pp.overlaps(&workdir)) {
            let pos = pos_or(&f.workdir, node.pos);
            let msg = format!(
                "`{}` overlaps the persisted path `{}`: the workdir holds git objects, not data",
                workdir.display(),
                inside.path.display()
            );
            self.problem(
                pos,
                "persist.workdir",
                msg,
                Some("put the workdir outside every persisted path".into()),
            );
        }
        let readiness_file = self.opt_path(&f.readiness_file);
        let interval = self.val(&f.interval).unwrap_or(Duration::from_secs(180));
        let debounce = self.val(&f.debounce).unwrap_or(Duration::from_secs(10));
        if remote.is_empty() {
            // A Space without credentials still runs; it just keeps nothing.
            self.warn(
                node.pos,
                "persist.remote",
                "is empty: persistence is off and data is lost when the container stops (set the repository variable, e.g. `GITHUB_REPO`)",
            );
            return None;
        }
        Some(Persist {
            remote,
            token,
            branch,
            workdir,
            interval,
            debounce,
            paths,
            exclude,
            keep,
            large_files,
            readiness_file,
        })
    }

    /// Credentials belong in `persist.token`, never in a URL (issue 12 item
    /// 5): user-info would be sent as it is and lands in logs and files, so
    /// it is refused; a query string is allowed (some servers want one) but
    /// warned about, since stackctl hides it everywhere it shows the URL.
    /// `used`: the variables the URL was made of, named in the error.
    pub(super) fn url_credentials(&mut self, pos: Pos, key: &str, url: &str, used: &[String]) {
        let shown = crate::redact::url(url);
        if crate::redact::has_userinfo(url) {
            self.problem(
                pos,
                key,
                format!("`{shown}` holds credentials (`user:password@`){}: they would end up in logs and files", from_vars(used)),
                Some("remove them from the URL and put the token in `persist.token`".into()),
            );
        } else if crate::redact::has_query(url) {
            self.warn(
                pos,
                key,
                format!("`{shown}` has a query string: if it carries a token, put the token in `persist.token` instead (stackctl hides the query in its messages, but the server may log it)"),
            );
        }
    }

    /// Hugging Face refuses a push holding a file of 10 MiB or more, or a
    /// binary file, outside LFS (see [`LargeFiles::offloads_binary`]): say
    /// which setting would make every push fail, and what to set instead.
    /// `at`: where `store`, `threshold` and `offload_binary` are written.
    fn hugging_face_warnings(&mut self, at: [Pos; 3], lf: &LargeFiles) {
        if lf.store != BlobStore::Lfs {
            self.warn(
                at[0],
                "persist.large_files.store",
                "Hugging Face refuses pushes with binary files or files of 10 MiB or more outside LFS: set `store: lfs` (and `threshold: 1MiB`)",
            );
            return;
        }
        if lf.threshold == 0 || lf.threshold > HF_MAX_NON_LFS {
            self.warn(
                at[1],
                "persist.large_files.threshold",
                "Hugging Face refuses pushes with files of 10 MiB or more outside LFS: set `threshold: 10MiB` or lower (`1MiB` is a good choice)",
            );
        }
        if lf.offload_binary == OffloadBinary::Never {
            self.warn(
                at[2],
                "persist.large_files.offload_binary",
                "Hugging Face refuses pushes with binary files outside LFS: remove `offload_binary: never` (the default, `auto`, offloads them)",
            );
        }
    }
}

impl FromText for BlobStore {
    fn from_text(t: &str) -> Result<BlobStore, String> {
        match t {
            "github-release" => Ok(BlobStore::GithubRelease),
            "lfs" => Ok(BlobStore::Lfs),
            "none" | "" => Ok(BlobStore::None),
            _ => match t.strip_prefix("dir:") {
                Some(p) if !p.is_empty() => Ok(BlobStore::Dir(p.into())),
                _ => Err(format!(
                    "unknown store `{t}` (use github-release, lfs, dir:PATH or none)"
                )),
            },
        }
    }
}

impl FromText for OffloadBinary {
    fn from_text(t: &str) -> Result<OffloadBinary, String> {
        use OffloadBinary::*;
        let words: &[(&[&str], _)] = &[
            (&["auto", ""], Auto),
            (&["always"], Always),
            (&["never"], Never),
        ];
        one_of(t, words, "unknown value `{}` (use auto, always or never)")
    }
}

/// Largest file Hugging Face takes outside LFS (it refuses 10 MiB or more).
const HF_MAX_NON_LFS: u64 = 10 << 20;
