//! Manifest errors: every problem with its file, line, column and key.

use std::fmt;
use std::path::PathBuf;

use crate::manifest::yaml::Pos;

/// One thing wrong with the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Where it is.
    pub pos: Pos,
    /// The dotted key it concerns, e.g. `services.web.restart`.
    pub key: String,
    /// What is wrong (lowercase, names in backticks).
    pub message: String,
    /// How to fix it, when there is something to say.
    pub hint: Option<String>,
}

/// The manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read `{file}`: {source}")]
    Read {
        /// The manifest path.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// One or more problems in the content.
    #[error("{}", render(file, problems))]
    Invalid {
        /// The manifest path.
        file: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

impl ManifestError {
    /// The problems (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ManifestError::Read { .. } => &[],
            ManifestError::Invalid { problems, .. } => problems,
        }
    }
}

fn render(file: &std::path::Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    let n = problems.len();
    out.push_str(&format!(
        "`{}` is not a valid manifest ({n} problem{}):",
        file.display(),
        if n == 1 { "" } else { "s" }
    ));
    for p in problems {
        out.push_str(&format!(
            "\n  {}:{}:{}: {p}",
            file.display(),
            p.pos.line,
            p.pos.col
        ));
    }
    out
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "`{}`: {}", self.key, self.message)?;
        }
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

/// The known name closest to `name`, if one is close enough to be a typo.
pub fn nearest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_typos_only() {
        let keys = ["restart", "readiness", "depends_on", "command"];
        assert_eq!(nearest("restrat", &keys), Some("restart"));
        assert_eq!(nearest("depends-on", &keys), Some("depends_on"));
        assert_eq!(nearest("readyness", &keys), Some("readiness"));
        assert_eq!(nearest("zzz", &keys), None);
    }
}
