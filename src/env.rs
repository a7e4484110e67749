//! Environment resolution: aliases, defaults, secrets. The resolution is
//! pure; reading the container's environment and `env_file`s is the thin
//! I/O at its edge.
//!
//! A declared entry takes the first non-empty of its candidate names from the
//! container's environment, else its default. Services inherit the
//! container's environment (as under docker-compose or supervisord) plus the
//! declared entries under their canonical names, minus every secret and every
//! alias of a secret, unless the service's own `environment:` names it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::manifest::{ContainerEnv, Manifest, Service};

/// Variables stackctl itself reads that must never reach a service.
pub const OWN_SECRETS: &[&str] = &["STACKCTL_ADMIN_PASSWORD"];

/// The process environment as a map (non-UTF-8 entries are skipped: the
/// manifest can only name UTF-8 variables).
pub fn container_env() -> ContainerEnv {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Names withheld from services unless a service asks for them.
pub fn withheld(manifest: &Manifest) -> Vec<String> {
    let mut names: Vec<String> = OWN_SECRETS.iter().map(|s| s.to_string()).collect();
    for e in manifest.env.iter().filter(|e| e.secret) {
        names.extend(e.candidates.iter().cloned());
    }
    names.sort();
    names.dedup();
    names
}

/// An `env_file:` could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read env_file `{path}`: {source}")]
pub struct EnvFileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// The complete environment of `service`, reading its `env_file`s.
pub fn service_env(
    manifest: &Manifest,
    service: &Service,
    container: &ContainerEnv,
) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut files = Vec::new();
    for path in &service.env_files {
        files.extend(read_env_file(path)?);
    }
    Ok(compose_env(manifest, service, container, &files))
}

/// The pure part of [`service_env`]: precedence is the service's
/// `environment:` over its env files over declared entries over the
/// container's variables.
pub fn compose_env(
    manifest: &Manifest,
    service: &Service,
    container: &ContainerEnv,
    env_files: &[(String, String)],
) -> Vec<(String, String)> {
    let withheld = withheld(manifest);
    let mut out: BTreeMap<String, String> = container
        .iter()
        .filter(|(k, _)| !withheld.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let declared: BTreeMap<&str, &str> = manifest
        .env
        .iter()
        .filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?)))
        .collect();
    for e in manifest.env.iter().filter(|e| !e.secret) {
        if let Some(v) = &e.value {
            out.insert(e.name.clone(), v.clone());
        }
    }
    for (k, v) in env_files {
        out.insert(k.clone(), v.clone());
    }
    for (k, v) in &service.environment {
        let value = match v {
            Some(v) => Some(v.clone()),
            // A bare name passes the variable through, secrets included:
            // naming it is how a service asks for it.
            None => declared
                .get(k.as_str())
                .map(|v| v.to_string())
                .or_else(|| container.get(k).cloned()),
        };
        match value {
            Some(v) => {
                out.insert(k.clone(), v);
            }
            None => {
                out.remove(k);
            }
        }
    }
    out.into_iter().collect()
}

/// Read a docker-compose style env file: `NAME=value` lines, `#` comments,
/// blank lines, optional `export ` and matching quotes around the value.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| EnvFileError {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_env_file(&text))
}

/// Parse env-file text (see [`read_env_file`]).
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (k, v) = line.split_once('=')?;
            let v = v.trim();
            let v = ['"', '\'']
                .iter()
                .find_map(|q| v.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::load_str;

    fn env(pairs: &[(&str, &str)]) -> ContainerEnv {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MANIFEST: &str = r#"
env:
  GITHUB_REPO: { from: [github_project, GITHUB_REPO] }
  GITHUB_TOKEN: { from: [github_secret, GITHUB_PAT], secret: true }
  GIT_BRANCH: { default: main }
services:
  plain: { command: "true" }
  asks: { command: "true", environment: [GITHUB_TOKEN, "EXTRA=1"] }
"#;

    fn svc_env(container: &ContainerEnv, svc: &str) -> BTreeMap<String, String> {
        let m = load_str(MANIFEST, Path::new("/x/stack.yaml"), container).unwrap();
        let s = m.service(svc).unwrap();
        compose_env(&m, s, container, &[]).into_iter().collect()
    }

    #[test]
    fn first_non_empty_alias_wins() {
        let c = env(&[("github_project", ""), ("GITHUB_REPO", "me/data")]);
        let e = svc_env(&c, "plain");
        assert_eq!(e["GITHUB_REPO"], "me/data");
        assert_eq!(e["GIT_BRANCH"], "main");
    }

    #[test]
    fn secrets_and_their_aliases_are_withheld() {
        let c = env(&[
            ("github_secret", "s3cr3t"),
            ("GITHUB_PAT", "p"),
            ("PATH", "/bin"),
            ("STACKCTL_ADMIN_PASSWORD", "pw"),
        ]);
        let e = svc_env(&c, "plain");
        assert!(!e.contains_key("github_secret"));
        assert!(!e.contains_key("GITHUB_PAT"));
        assert!(!e.contains_key("GITHUB_TOKEN"));
        assert!(!e.contains_key("STACKCTL_ADMIN_PASSWORD"));
        assert_eq!(e["PATH"], "/bin", "undeclared variables pass through");
    }

    #[test]
    fn a_service_that_names_a_secret_gets_it() {
        let c = env(&[("github_secret", "s3cr3t")]);
        let e = svc_env(&c, "asks");
        assert_eq!(e["GITHUB_TOKEN"], "s3cr3t");
        assert_eq!(e["EXTRA"], "1");
        assert!(
            !e.contains_key("github_secret"),
            "only the name it asked for"
        );
    }

    #[test]
    fn env_files_parse_like_compose() {
        let parsed = parse_env_file("# c\nA=1\nexport B=\"two words\"\n\nC='x'\nbad line\n");
        assert_eq!(
            parsed,
            [("A", "1"), ("B", "two words"), ("C", "x")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }
}
