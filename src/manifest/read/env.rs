//! The `env:` section: declared variables, their sources, defaults and checks.

use serde::Deserialize;

use super::*;

/// An env entry written as a mapping; the field order is the order of
/// the key hints.
#[derive(Deserialize)]
struct RawEnvVar {
    from: Option<Field>,
    default: Option<Leaf<String>>,
    required: Option<Leaf<bool>>,
    secret: Option<Leaf<bool>>,
    description: Option<Leaf<String>>,
    deprecated: Option<Leaf<String>>,
    format: Option<Leaf<EnvFormat>>,
}

impl Reader<'_> {
    pub(super) fn env(&mut self, node: &Node) -> Vec<EnvVar> {
        let Some(section) = self.mapping(node, "env") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // Variables a default read before any entry declared them (the
        // first place each), to tell apart once every entry is known.
        let mut early: Vec<(String, Pos, String)> = Vec::new();
        for (k, v) in section {
            let key = format!("env.{}", k.name);
            if !valid_var_name(&k.name) {
                self.problem(
                    k.pos,
                    &key,
                    "not a valid variable name",
                    Some("use letters, digits and `_`, not starting with a digit".into()),
                );
                continue;
            }
            let mut decl = EnvVar {
                name: k.name.clone(),
                candidates: Vec::new(),
                value: None,
                source: EnvSource::Unset,
                secret: false,
                required: false,
                description: None,
            };
            let mut default = None;
            let mut deprecated = None;
            let mut format = None;
            match &v.value {
                // `NAME: value` is shorthand for `NAME: { default: value }`.
                Value::Scalar { .. } => {
                    let l = self.leaf(v, &key);
                    self.note_early(l.as_ref(), &k.name, &mut early);
                    default = self.val(&l);
                }
                Value::Null => {}
                _ => {
                    let Some(f) = self.section::<RawEnvVar>(v, &key) else {
                        continue;
                    };
                    if let Some(from) = &f.from {
                        decl.candidates = self.text_list(&from.node, &from.key);
                        for c in &decl.candidates {
                            if !valid_var_name(c) {
                                self.problem(
                                    from.node.pos,
                                    &from.key,
                                    format!("`{c}` is not a valid variable name"),
                                    None,
                                );
                            }
                        }
                    }
                    self.note_early(f.default.as_ref(), &k.name, &mut early);
                    default = self.val(&f.default);
                    decl.secret = self.val(&f.secret).unwrap_or(false);
                    decl.required = self.val(&f.required).unwrap_or(false);
                    decl.description = self.val(&f.description);
                    deprecated = self.val(&f.deprecated);
                    format = self.val(&f.format);
                }
            }
            // The entry's own name is always a candidate, after the listed
            // ones unless the list places it.
            if !decl.candidates.contains(&decl.name) {
                decl.candidates.push(decl.name.clone());
            }
            match pick(&decl.candidates, self.container) {
                Some((name, value)) => {
                    decl.value = Some(value);
                    decl.source = EnvSource::Variable(name);
                }
                None if default.is_some() => {
                    decl.value = default;
                    decl.source = EnvSource::Default;
                }
                None => {}
            }
            if decl.required && decl.value.as_deref().unwrap_or("").is_empty() {
                let names = backticked(&decl.candidates, " or ");
                self.problem(
                    k.pos,
                    &key,
                    "is required but not set",
                    Some(format!("set {names} in the container's environment")),
                );
            }
            if decl.secret {
                self.secrets.extend(decl.candidates.iter().cloned());
            }
            if let (Some(EnvFormat::JsonList), Some(v)) = (format, &decl.value) {
                if !v.trim().is_empty() && !is_json_string_list(v) {
                    // The value is never quoted: it may be a list of keys.
                    let from = match &decl.source {
                        EnvSource::Variable(n) => format!("`{n}`"),
                        _ => format!("the default of `{}`", decl.name),
                    };
                    self.problem(
                        k.pos,
                        &key,
                        format!("{from} is not a JSON list of strings"),
                        Some(format!(
                            "write it as a JSON list, e.g. {}=[\"first\",\"second\"]",
                            match &decl.source {
                                EnvSource::Variable(n) => n.as_str(),
                                _ => decl.name.as_str(),
                            }
                        )),
                    );
                }
            }
            // A variable that no longer means anything is accepted, with a
            // word on why, so an old deployment's settings keep working.
            if let (Some(why), EnvSource::Variable(name)) = (&deprecated, &decl.source) {
                let msg = format!("`{name}` is set but no longer has any effect: {why}");
                self.warn(k.pos, &key, msg);
            }
            if let Some(v) = &decl.value {
                self.declared.insert(decl.name.clone(), v.clone());
            }
            out.push(decl);
        }
        // `env:` is read from top to bottom: a default that read an entry
        // declared further down got that entry's blank (or its own
        // fallback), never its value.
        for (name, pos, key) in early {
            let below = out.iter().find(|e| e.name == name);
            if below.is_some_and(|e| e.value.as_deref().is_some_and(|v| !v.is_empty())) {
                let msg = format!(
                    "reads `{name}` before `env:` declares it (further down), so not its value"
                );
                let hint =
                    format!("move `{name}` above this entry: `env:` is read from top to bottom");
                self.warn_hinted(pos, &key, msg, Some(hint));
            }
        }
        out
    }

    /// Note each variable the default `l` of entry `entry` read that
    /// neither an entry above nor the container has.
    fn note_early(
        &self,
        l: Option<&Leaf<String>>,
        entry: &str,
        early: &mut Vec<(String, Pos, String)>,
    ) {
        let Some(l) = l else {
            return;
        };
        for name in &l.used {
            let known = self.declared.contains_key(name) || self.container.contains_key(name);
            if !known && name != entry && !early.iter().any(|(n, ..)| n == name) {
                early.push((name.clone(), l.pos, l.key.clone()));
            }
        }
    }
}

/// A value checked by an env entry's `format:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EnvFormat {
    /// A JSON list of strings, as Gemini Balance reads `API_KEYS`.
    JsonList,
}

impl FromText for EnvFormat {
    fn from_text(t: &str) -> Result<EnvFormat, String> {
        let words: &[(&[&str], _)] = &[(&["json-list"], EnvFormat::JsonList)];
        one_of(t, words, "unknown format `{}` (use json-list)")
    }
}

pub(super) fn is_json_string_list(v: &str) -> bool {
    matches!(serde_json::from_str::<serde_json::Value>(v), Ok(serde_json::Value::Array(a)) if a.iter().all(|x| x.is_string()))
}
