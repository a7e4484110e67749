//! From the position-aware YAML tree to the validated [`Manifest`].
//!
//! Each section is first read into a raw `#[derive(Deserialize)]` struct
//! through [`de`](crate::manifest::de), which reports unknown keys with the
//! nearest valid one and types scalars into [`Leaf`]s (interpolated, parsed
//! by [`FromText`]); then validated into the model, taking each leaf's value
//! with `Reader::val` (which reports a bad one: wrong type, bad duration…)
//! and checking across keys (unknown dependency, cycle…). Every problem is collected
//! with its line and column, so a user fixes a broken manifest in one round
//! instead of one error at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use crate::manifest::de::{from_vars, one_of, pos_or, Field, FromText, Leaf, Many};
use crate::manifest::error::{nearest, ManifestError, Problem};
use crate::manifest::model::*;
use crate::manifest::remotes::{looks_like_github, looks_like_hugging_face};
use crate::manifest::units::{parse_duration, parse_size};
use crate::manifest::yaml::{self, Key, Node, Pos, Value};

// Kept here for its callers; it lives in `model` so that `env` needs
// nothing from this reader.
pub use crate::manifest::model::ContainerEnv;

mod env;
mod gateway;
mod persist;
mod probe;
mod services;
#[cfg(test)]
mod tests;
mod values;

pub(crate) use services::find_cycle;
pub use values::truthy;
use values::*;

/// The manifest as written; the field order is the order of the key hints.
#[derive(serde::Deserialize, Default)]
struct RawTop {
    version: Option<Leaf<u32>>,
    name: Option<Leaf<String>>,
    env: Option<Field>,
    services: Option<Field>,
    gateway: Option<Field>,
    persist: Option<Field>,
    shutdown_timeout: Option<Leaf<Duration>>,
}

/// Read and validate the manifest at `file`.
pub fn load(file: &Path, container: &ContainerEnv) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    load_str(&text, file, container)
}

/// Validate manifest `text` as if read from `file` (relative paths resolve
/// against `file`'s directory).
pub fn load_str(
    text: &str,
    file: &Path,
    container: &ContainerEnv,
) -> Result<Manifest, ManifestError> {
    let invalid = |problems| ManifestError::Invalid {
        file: file.to_path_buf(),
        problems,
    };
    let root = yaml::parse(text).map_err(|e| {
        invalid(vec![Problem {
            pos: e.pos,
            key: String::new(),
            message: format!("YAML syntax error: {}", e.message),
            hint: None,
        }])
    })?;
    let dir = absolute_dir(file);
    let mut r = Reader {
        problems: Vec::new(),
        warnings: Vec::new(),
        container,
        declared: BTreeMap::new(),
        secrets: Vec::new(),
        blank: BTreeMap::new(),
        dir,
    };
    let manifest = r.manifest(&root, file);
    if r.problems.is_empty() {
        let mut m = manifest;
        // In file order, as problems are (sections are read in the
        // reader's order, and unset variables only once `env:` is known).
        m.warnings = r.warnings;
        m.warnings.sort_by_key(|w| (w.pos.line, w.pos.col));
        Ok(m)
    } else {
        let mut problems = r.problems;
        problems.sort_by_key(|p| (p.pos.line, p.pos.col));
        Err(invalid(problems))
    }
}

fn absolute_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new("."));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

struct Reader<'e> {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    container: &'e ContainerEnv,
    /// Resolved values of declared env entries (they shadow container variables).
    declared: BTreeMap<String, String>,
    /// Names of secret entries and their aliases.
    secrets: Vec<String>,
    /// Each variable a bare `${NAME}` read while it was unset, at its
    /// first place (position, key); warned about once the whole `env:`
    /// is known, since a declared entry is blank on purpose.
    blank: BTreeMap<String, (Pos, String)>,
    dir: PathBuf,
}

impl Reader<'_> {
    fn problem(&mut self, pos: Pos, key: &str, message: impl Into<String>, hint: Option<String>) {
        // A message may quote a value that came from a secret (`interval:
        // ${API_KEYS}`); errors must never show one.
        let message = crate::check::mask(&message.into(), &self.secret_values());
        self.problems.push(Problem {
            pos,
            key: key.to_string(),
            message,
            hint,
        });
    }

    fn warn(&mut self, pos: Pos, key: &str, message: impl Into<String>) {
        self.warn_hinted(pos, key, message, None);
    }

    fn warn_hinted(
        &mut self,
        pos: Pos,
        key: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let message = crate::check::mask(&message.into(), &self.secret_values());
        self.warnings.push(Problem {
            pos,
            key: key.to_string(),
            message,
            hint,
        });
    }

    /// One warning per variable that a bare `${NAME}` read as blank
    /// although neither `env:` declares it nor the container sets it: a
    /// mistyped name would otherwise pass unnoticed (docker-compose warns
    /// the same way). A declared one is blank on purpose, or read before
    /// its declaration (`env` warns about that). Each at its first place.
    fn warn_unset(&mut self, env: &[EnvVar]) {
        let container = self.container;
        let blank = std::mem::take(&mut self.blank)
            .into_iter()
            .filter(|(name, _)| !env.iter().any(|e| &e.name == name));
        let known: Vec<&str> = (env.iter().map(|e| e.name.as_str()))
            .chain(container.keys().map(String::as_str))
            .collect();
        for (name, (pos, key)) in blank {
            let silence = format!("write `${{{name}:-}}` if blank is meant");
            let hint = match nearest(&name, &known) {
                Some(n) => format!("did you mean `{n}`? {silence}"),
                None => format!("declare it in `env:`, or {silence}"),
            };
            let msg = format!("variable `{name}` is not set, so it reads as blank");
            self.warn_hinted(pos, &key, msg, Some(hint));
        }
    }

    fn secret_values(&self) -> Vec<String> {
        self.secrets.iter().filter_map(|n| self.lookup(n)).collect()
    }

    /// `name` (declared or a container variable) has a value that means
    /// something: not empty, and not an empty JSON list or object (`[]` is
    /// how the original deployment spelled "no tokens").
    fn is_set(&self, name: &str) -> bool {
        self.lookup(name)
            .is_some_and(|v| match serde_json::from_str(&v) {
                Ok(serde_json::Value::Array(a)) => !a.is_empty(),
                Ok(serde_json::Value::Object(o)) => !o.is_empty(),
                _ => !v.trim().is_empty(),
            })
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.declared
            .get(name)
            .or_else(|| self.container.get(name))
            .cloned()
    }

    /// `node` (at dotted `path`) as the raw section type `T`; unknown keys
    /// and a value that is not a mapping are recorded as problems.
    fn section<T: for<'de> serde::Deserialize<'de>>(
        &mut self,
        node: &Node,
        path: &str,
    ) -> Option<T> {
        let mut problems = std::mem::take(&mut self.problems);
        let lookup = |n: &str| self.lookup(n);
        let out = crate::manifest::de::from_node_in(node, path, &lookup, &mut problems);
        self.problems = problems;
        out
    }

    /// One scalar read as a leaf (for a key whose shape varies).
    fn leaf<T: FromText>(&mut self, node: &Node, key: &str) -> Option<Leaf<T>> {
        self.section(node, key)
    }

    /// A leaf's value; one that failed reports its problem now.
    fn val<'l, T: Clone + 'l>(&mut self, l: impl Into<Option<&'l Leaf<T>>>) -> Option<T> {
        let l = l.into()?;
        // Sections are read in the reader's order, not the file's: keep the
        // use that is written first.
        for name in &l.unset {
            match self.blank.get(name) {
                Some((p, _)) if (p.line, p.col) <= (l.pos.line, l.pos.col) => {}
                _ => {
                    self.blank.insert(name.clone(), (l.pos, l.key.clone()));
                }
            }
        }
        if let Some(p) = &l.problem {
            self.problem(l.pos, &l.key, p.clone(), None);
        }
        l.value.clone()
    }

    /// One scalar's value (a leaf read and taken at once).
    fn scalar<T: FromText + Clone>(&mut self, node: &Node, key: &str) -> Option<T> {
        let l = self.leaf(node, key)?;
        self.val(&l)
    }

    /// `text` as an absolute, normalised path (relative to `base`).
    fn path(&self, base: &Path, text: &str) -> PathBuf {
        let p = Path::new(text);
        normalize(&if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        })
    }

    /// A string or a list of strings.
    fn text_list(&mut self, node: &Node, key: &str) -> Vec<String> {
        let many = self.section::<Many<String>>(node, key).unwrap_or_default();
        self.texts(&many)
    }

    fn texts(&mut self, many: &Many<String>) -> Vec<String> {
        many.0.iter().filter_map(|l| self.val(l)).collect()
    }

    /// Paths relative to the manifest's directory.
    fn paths(&mut self, many: &Option<Many<String>>) -> Vec<PathBuf> {
        let texts: Vec<String> = many.iter().flat_map(|m| self.texts(m)).collect();
        texts.iter().map(|t| self.at_dir(t)).collect()
    }

    /// `text` as an absolute, normalised path relative to the manifest.
    fn at_dir(&self, text: &str) -> PathBuf {
        self.path(&self.dir, text)
    }

    /// A path relative to the manifest, unless absent or written empty.
    fn opt_path(&mut self, l: &Option<Leaf<String>>) -> Option<PathBuf> {
        let text = self.val(l).filter(|t| !t.is_empty())?;
        Some(self.at_dir(&text))
    }

    /// A command: a string split like a shell (without one), or a list.
    fn command(&mut self, node: &Node, key: &str) -> Option<Vec<String>> {
        let (argv, used) = match &node.value {
            Value::Seq(items) => {
                let mut argv = Vec::new();
                let mut used = Vec::new();
                for (i, n) in items.iter().enumerate() {
                    let l = self.leaf(n, &format!("{key}[{i}]"))?;
                    argv.push(self.val(&l)?);
                    used.extend(l.used);
                }
                (argv, used)
            }
            _ => {
                let l = self.leaf::<String>(node, key)?;
                match shell_words::split(&self.val(&l)?) {
                    Ok(argv) => (argv, l.used),
                    Err(e) => {
                        self.problem(
                            node.pos,
                            key,
                            format!("cannot split the command: {e}"),
                            None,
                        );
                        return None;
                    }
                }
            }
        };
        if argv.is_empty() || argv[0].is_empty() {
            self.problem(
                node.pos,
                key,
                "the command is empty",
                Some("give the program to run, e.g. `python3 -m http.server 9001`".into()),
            );
            return None;
        }
        if let Some(secret) = used.iter().find(|u| self.secrets.contains(u)) {
            // Arguments are visible to every process through /proc/PID/cmdline.
            let msg = format!(
                "puts secret `{secret}` on a command line, where every process can read it; pass it through `environment:` instead"
            );
            self.warn(node.pos, key, msg);
        }
        Some(argv)
    }

    /// A mapping whose keys are names chosen by the user; null counts as
    /// an empty mapping.
    fn mapping<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [(Key, Node)]> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            Value::Null => Some(&[]),
            _ => {
                self.problem(
                    node.pos,
                    path,
                    format!("expected a mapping, found {}", node.kind()),
                    None,
                );
                None
            }
        }
    }

    fn manifest(&mut self, root: &Node, file: &Path) -> Manifest {
        let top: RawTop = self.section(root, "").unwrap_or_default();
        let version = match &top.version {
            None => 1,
            Some(l) => {
                let v = self.val(l).unwrap_or(1);
                if v != 1 {
                    self.problem(
                        l.pos,
                        "version",
                        format!("unsupported version `{v}`"),
                        Some("this stackctl reads `version: 1`".into()),
                    );
                }
                v
            }
        };
        let name = self.val(&top.name).unwrap_or_else(|| {
            self.dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "stack".into())
        });
        let env = match &top.env {
            Some(n) => self.env(&n.node),
            None => Vec::new(),
        };
        let services = match &top.services {
            Some(n) => self.services(&n.node),
            None => Vec::new(),
        };
        let shutdown_timeout = self
            .val(&top.shutdown_timeout)
            .unwrap_or(Duration::from_secs(9));
        let persist = top.persist.as_ref().and_then(|n| self.persist(&n.node));
        let gateway = top
            .gateway
            .as_ref()
            .and_then(|n| self.gateway(&n.node, &name, persist.as_ref()));
        self.check_required_paths(&services, persist.as_ref());
        self.warn_unset(&env);
        let mut persist = persist;
        if let (Some(p), Some(g)) = (persist.as_mut(), gateway.as_ref()) {
            // Live route edits and the password hash must survive a wiped
            // disk: their directory is persisted with the data.
            if p.covering(&g.state_file).is_none() {
                if let Some(dir) = g.state_file.parent() {
                    p.paths.push(PersistPath {
                        path: dir.to_path_buf(),
                        exclude: Vec::new(),
                    });
                }
            }
        }
        Manifest {
            file: file.to_path_buf(),
            dir: self.dir.clone(),
            version,
            name,
            env,
            services,
            gateway,
            persist,
            shutdown_timeout,
            warnings: Vec::new(),
        }
    }
}
