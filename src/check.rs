//! `stackctl check`: the resolved plan, as a person reads it, secrets masked.

use std::fmt::Write;

use crate::gateway::rules::{Action, Rule};
use crate::manifest::units::{format_duration, format_size};
use crate::manifest::{BlobStore, Condition, EnvSource, Manifest, ProbeCheck, RestartPolicy};

/// What replaces a secret in any output.
pub const MASK: &str = "********";

/// Replace every secret value in `text` with [`MASK`].
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    // Longest first, so a secret that contains another is masked whole.
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets {
        out = out.replace(s.as_str(), MASK);
    }
    out
}

/// Render the plan of a valid manifest.
pub fn render(m: &Manifest) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "stack `{}` from {} (version {})",
        m.name,
        m.file.display(),
        m.version
    );

    if !m.env.is_empty() {
        let _ = writeln!(o, "\nenv:");
        let width = m.env.iter().map(|e| e.name.len()).max().unwrap_or(0);
        for e in &m.env {
            let value = match (&e.value, e.secret) {
                (None, _) => "(unset)".to_string(),
                (Some(v), _) if v.is_empty() => "(empty)".to_string(),
                (Some(_), true) => MASK.to_string(),
                (Some(v), false) => v.clone(),
            };
            let mut notes = Vec::new();
            if e.secret {
                notes.push("secret".to_string());
            }
            match &e.source {
                EnvSource::Variable(n) if *n != e.name => notes.push(format!("from {n}")),
                EnvSource::Default => notes.push("default".into()),
                _ => {}
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!("  ({})", notes.join(", "))
            };
            let _ = writeln!(o, "  {:width$} = {value}{notes}", e.name);
        }
    }

    let _ = writeln!(o, "\nservices (start order):");
    let width = m.services.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for (i, wave) in m.start_waves().iter().enumerate() {
        for s in wave {
            let _ = writeln!(
                o,
                "  {}. {:width$}  {}",
                i + 1,
                s.name,
                shell_words::join(&s.command)
            );
            let mut facts = vec![format!(
                "restart {}",
                match s.restart {
                    RestartPolicy::Always => "always",
                    RestartPolicy::OnFailure => "on-failure",
                    RestartPolicy::No => "no",
                }
            )];
            if !s.depends_on.is_empty() {
                let deps: Vec<String> = s
                    .depends_on
                    .iter()
                    .map(|d| {
                        let c = match d.condition {
                            Condition::Started => "started",
                            Condition::Healthy => "healthy",
                            Condition::CompletedSuccessfully => "completed_successfully",
                        };
                        format!("{} {c}", d.service)
                    })
                    .collect();
                facts.push(format!("after {}", deps.join(", ")));
            }
            if let Some(p) = &s.readiness {
                facts.push(format!("ready when {}", describe_check(&p.check)));
            }
            if let Some(p) = &s.liveness {
                facts.push(format!(
                    "alive while {} (every {}, {} failures restart it)",
                    describe_check(&p.check),
                    format_duration(p.interval),
                    p.failures
                ));
            }
            if s.optional {
                facts.push("optional".into());
            }
            let _ = writeln!(o, "     {:width$}  {}", "", facts.join("; "));
        }
    }
    let disabled: Vec<&str> = m
        .services
        .iter()
        .filter(|s| !s.enabled)
        .map(|s| s.name.as_str())
        .collect();
    if !disabled.is_empty() {
        let _ = writeln!(o, "  disabled: {}", disabled.join(", "));
    }

    match &m.gateway {
        Some(g) => {
            let _ = writeln!(o, "\ngateway:");
            let _ = writeln!(o, "  listen          {}", g.listen);
            let _ = writeln!(
                o,
                "  default backend {}",
                g.default_backend
                    .as_deref()
                    .unwrap_or("(none: unmatched requests get 404)")
            );
            let _ = writeln!(
                o,
                "  routes          {} in the manifest{}",
                g.routes.len(),
                if g.routes.is_empty() {
                    ""
                } else {
                    " (id, priority, what it matches → where it goes; the highest priority that matches wins)"
                }
            );
            let width = g.routes.iter().map(|r| r.id.len()).max().unwrap_or(0);
            for r in &g.routes {
                let _ = writeln!(
                    o,
                    "    {:width$}  {:>4}  {}",
                    r.id,
                    r.priority,
                    describe_rule(r)
                );
            }
            let _ = writeln!(
                o,
                "  admin password  {}",
                if g.admin.password.is_some() {
                    format!("{MASK} (from the manifest)")
                } else {
                    format!(
                        "generated at first start into {}",
                        g.admin.password_file.display()
                    )
                }
            );
            let _ = writeln!(o, "  state file      {}", g.state_file.display());
        }
        None => {
            let _ = writeln!(o, "\ngateway: none");
        }
    }

    match &m.persist {
        Some(p) => {
            let _ = writeln!(o, "\npersist:");
            let _ = writeln!(
                o,
                "  remote          {} (branch {})",
                crate::redact::url(&p.remote),
                p.branch
            );
            let _ = writeln!(
                o,
                "  token           {}",
                if p.token.is_some() { MASK } else { "(none)" }
            );
            let _ = writeln!(o, "  workdir         {}", p.workdir.display());
            let _ = writeln!(
                o,
                "  snapshots       after {} of quiet, at least every {} while changed; keep {}",
                format_duration(p.debounce),
                format_duration(p.interval),
                p.keep
            );
            for path in &p.paths {
                let ex = if path.exclude.is_empty() {
                    String::new()
                } else {
                    format!("  (exclude {})", path.exclude.join(", "))
                };
                let _ = writeln!(o, "  path            {}{ex}", path.path.display());
            }
            if !p.exclude.is_empty() {
                let _ = writeln!(o, "  exclude         {}", p.exclude.join(", "));
            }
            let store = match &p.large_files.store {
                BlobStore::GithubRelease => format!("github-release (tag {})", p.large_files.tag),
                BlobStore::Lfs => "lfs".to_string(),
                BlobStore::Dir(d) => format!("dir:{}", d.display()),
                BlobStore::None => "none (skipped with a warning)".to_string(),
            };
            let _ = writeln!(
                o,
                "  large files     ≥ {} → {store}",
                format_size(p.large_files.threshold)
            );
        }
        None => {
            let _ = writeln!(o, "\npersist: off");
        }
    }
    let _ = writeln!(
        o,
        "\nshutdown budget {}",
        format_duration(m.shutdown_timeout)
    );

    if !m.warnings.is_empty() {
        let _ = writeln!(o, "\nwarnings:");
        for w in &m.warnings {
            let _ = writeln!(
                o,
                "  {}:{}:{}: {w}",
                m.file.display(),
                w.pos.line,
                w.pos.col
            );
        }
    }
    mask(&o, &m.secret_values())
}

fn describe_check(c: &ProbeCheck) -> String {
    match c {
        ProbeCheck::Http(u) => format!("GET {u} < 400"),
        ProbeCheck::Tcp(a) => format!("{a} accepts"),
        ProbeCheck::Exec(argv) => format!("`{}` exits 0", shell_words::join(argv)),
        ProbeCheck::File(p) => format!("{} exists", p.display()),
        ProbeCheck::Log(t) => format!("the log says {t:?}"),
    }
}

/// One rule in a line: what it matches → where it goes (what it changes).
fn describe_rule(r: &Rule) -> String {
    let m = &r.matcher;
    let conditions = [
        m.method.as_ref().map(|v| format!("method {v}")),
        m.host.as_ref().map(|v| format!("host {v}")),
        m.path_prefix.as_ref().map(|v| format!("prefix {v}")),
        m.path_equal.as_ref().map(|v| format!("path {v}")),
        m.referer_substr
            .as_ref()
            .map(|v| format!("referer contains {v:?}")),
        m.referer_regex
            .as_ref()
            .map(|v| format!("referer matches `{v}`")),
    ];
    let headers = m.headers.iter().map(|h| match (&h.contains, &h.regex) {
        (None, None) => format!("header {} present", h.name),
        (c, re) => format!(
            "header {}{}{}",
            h.name,
            c.as_ref()
                .map_or(String::new(), |c| format!(" contains {c:?}")),
            re.as_ref()
                .map_or(String::new(), |re| format!(" matches `{re}`"))
        ),
    });
    let when: Vec<String> = conditions.into_iter().flatten().chain(headers).collect();
    let code = r.redirect_code.unwrap_or(302);
    let to = match (r.action, &r.redirect_to_prefix) {
        (Action::Proxy, _) => r.backend.as_deref().unwrap_or("the default backend").into(),
        (Action::Redirect, Some(p)) => format!("redirect {code} to {p} + the rest of the path"),
        (Action::Redirect, None) => format!(
            "redirect {code} to {}",
            r.redirect_to.as_deref().unwrap_or_default()
        ),
    };
    let notes: Vec<String> = (r
        .strip_prefix
        .then(|| "strip prefix".to_string())
        .into_iter())
    .chain(
        r.set_headers
            .iter()
            .map(|h| format!("sets {}: {}", h.name, h.value)),
    )
    .collect();
    let notes = match notes.is_empty() {
        true => String::new(),
        false => format!(" ({})", notes.join(", ")),
    };
    format!("{} → {to}{notes}", when.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_replaces_longest_first() {
        let s = vec!["abc".to_string(), "abcdef".to_string()];
        assert_eq!(mask("x abcdef abc", &s), format!("x {MASK} {MASK}"));
    }
}
