//! Import of the original deployment's `admin_config.json`
//! (`{admin_password, default_backend, rules}`), so its users keep their
//! routes when they move to stackctl.
//!
//! Pure: the file's text in, a validated table and the old password out.
//! The original shipped a stock rule set (NapCat, Gemini, their Referer
//! rules); the manifest has stackctl's own equivalents of those (with the
//! prefix stripping today's Gemini Balance needs, and without the broad
//! Referer rules that misrouted), so stock rules are replaced by the
//! manifest's and only the rules a user added are carried over.
//! The original accepted things stackctl refuses (duplicate ids, rules with
//! no condition, `{}` left by its editor); such rules are dropped or
//! renamed with a warning instead of failing the whole import.

use serde_json::Value;

use crate::gateway::rules::{parse_rule, validate, BackendPolicy, Rule, RuleError, Table};

/// What an old `admin_config.json` holds, made valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The route table (rules the original had that stackctl refuses are left out).
    pub table: Table,
    /// The plaintext password, unless empty or the universal default `admin`.
    pub password: Option<String>,
    /// One line per rule left out or renamed.
    pub warnings: Vec<String>,
}

/// The match conditions of the original deployment's stock rules.
const STOCK_MATCHES: &[(&str, &str)] = &[
    ("path_prefix", "/api/ws/"),
    ("referer_substr", "gemini"),
    ("referer_substr", "webui"),
    ("path_equal", "/webui"),
    ("referer_substr", "/webui/"),
    ("path_prefix", "/webui/"),
    ("path_prefix", "/gemini/"),
    ("path_equal", "/gemini"),
];

/// Whether `rule` is one of the original's stock rules (by its conditions).
fn is_stock(rule: &Value) -> bool {
    let Some(m) = rule["match"].as_object() else {
        return false;
    };
    m.len() == 1
        && STOCK_MATCHES
            .iter()
            .any(|(k, v)| m.get(*k).and_then(Value::as_str) == Some(*v))
}

/// A rule to import: as the file wrote it, or one of the manifest's,
/// already read (and valid, so it goes to the validator as it is).
enum Given {
    Wire(Value),
    Read(Box<Rule>),
}

impl Given {
    /// The id the duplicate check goes by: only a non-empty string counts.
    /// A missing, `null` or `""` one never collides: the table assigns
    /// such a rule `rule-N`, as the admin API does.
    fn id(&self) -> Option<&str> {
        let id = match self {
            Given::Wire(v) => v["id"].as_str(),
            Given::Read(r) => Some(r.id.as_str()),
        };
        id.filter(|id| !id.is_empty())
    }

    /// Only called when [`Given::id`] found one, so a wire rule is an object.
    fn rename(&mut self, id: String) {
        match self {
            Given::Wire(v) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert("id".into(), Value::String(id));
                }
            }
            Given::Read(r) => r.id = id,
        }
    }

    /// The rule read for a table of its own (errors name it `rules[0]`).
    fn read(self) -> Result<Rule, RuleError> {
        match self {
            Given::Wire(v) => parse_rule(0, &v),
            Given::Read(r) => Ok(*r),
        }
    }
}

/// The file's JSON and the rules taken out of it (none unless `rules` is
/// a list). A file that is not an object has no fields, as `null` has.
fn parse(text: &str) -> Result<(Value, Vec<Value>), String> {
    let mut v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let rules = match v.get_mut("rules").map(Value::take) {
        Some(Value::Array(rules)) => rules,
        _ => Vec::new(),
    };
    Ok((v, rules))
}

/// Parse an original `admin_config.json` and merge it into the manifest's
/// table: the manifest's rules first, then the user's own rules (stock
/// ones dropped), ids kept unique.
pub fn import_merged(
    text: &str,
    manifest: &Table,
    policy: &BackendPolicy,
) -> Result<Imported, String> {
    let (file, all) = parse(text)?;
    let count = all.len();
    let kept: Vec<Given> = all
        .into_iter()
        .filter(|r| !is_stock(r))
        .map(Given::Wire)
        .collect();
    let dropped = count - kept.len();
    let rules = manifest
        .rules
        .iter()
        .map(|r| Given::Read(Box::new(r.clone())))
        .chain(kept);
    let mut imp = import_rules(&file, rules, policy)?;
    if dropped > 0 {
        imp.warnings.push(format!(
            "{dropped} stock rule(s) of the original replaced by the manifest's routes"
        ));
    }
    Ok(imp)
}

/// Parse and validate an original `admin_config.json`.
pub fn import(text: &str, policy: &BackendPolicy) -> Result<Imported, String> {
    let (file, rules) = parse(text)?;
    import_rules(&file, rules.into_iter().map(Given::Wire), policy)
}

/// Validate the `rules` of the original's `file` (its other fields read
/// from it) one by one, leaving out or renaming what stackctl refuses.
fn import_rules(
    file: &Value,
    rules: impl IntoIterator<Item = Given>,
    policy: &BackendPolicy,
) -> Result<Imported, String> {
    let default_backend = file["default_backend"].as_str().unwrap_or("").to_string();
    let mut warnings = Vec::new();
    let default_ok = validate(&default_backend, [], policy).is_ok();
    let default_backend = if default_ok {
        default_backend
    } else {
        warnings.push(format!(
            "default_backend `{default_backend}` is not allowed here; keeping the manifest's"
        ));
        String::new()
    };
    let mut kept: Vec<Rule> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for (i, mut rule) in rules.into_iter().enumerate() {
        // Duplicate ids were accepted by the original: keep both, renamed.
        if let Some(id) = rule.id().map(str::to_string) {
            if ids.contains(&id) {
                let mut n = 2;
                while ids.contains(&format!("{id}-{n}")) {
                    n += 1;
                }
                let new = format!("{id}-{n}");
                warnings.push(format!(
                    "rule {i}: id `{id}` is used twice; renamed to `{new}`"
                ));
                rule.rename(new);
            }
        }
        let id = rule.id().map(str::to_string);
        // Alone, so that one refused rule does not sink the others; the
        // rule kept is the one read, not normalised, so ids are assigned
        // by its place in the whole table below.
        let alone = |r: Rule| validate(&default_backend, [Ok(r.clone())], policy).map(|_| r);
        match rule.read().and_then(alone) {
            Ok(r) => {
                ids.extend(id);
                kept.push(r);
            }
            Err(e) => warnings.push(format!("rule {i} left out: {e}")),
        }
    }
    let table =
        validate(&default_backend, kept.into_iter().map(Ok), policy).map_err(|e| e.to_string())?;
    let password = file["admin_password"]
        .as_str()
        .filter(|p| !p.is_empty() && *p != "admin")
        .map(str::to_string);
    Ok(Imported {
        table,
        password,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackendPolicy {
        BackendPolicy::default()
    }

    #[test]
    fn the_originals_default_file_imports() {
        let text = r#"{
          "admin_password": "admin",
          "default_backend": "http://127.0.0.1:6185",
          "rules": [
            {"id":"napcat-ws","priority":200,"action":"proxy","backend":"http://127.0.0.1:6099","match":{"path_prefix":"/api/ws/"}},
            {"id":"gemini","priority":180,"action":"proxy","backend":"http://127.0.0.1:8000","match":{"path_prefix":"/gemini/"}},
            {"id":"gemini","priority":175,"action":"redirect","redirect_to":"/gemini/","match":{"path_equal":"/gemini"}},
            {}
          ]
        }"#;
        let imp = import(text, &policy()).unwrap();
        assert_eq!(imp.table.default_backend, "http://127.0.0.1:6185");
        let ids: Vec<&str> = imp.table.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["napcat-ws", "gemini", "gemini-2"]);
        assert_eq!(imp.password, None, "the universal default is not kept");
        assert_eq!(imp.warnings.len(), 2, "{:?}", imp.warnings);
        assert!(
            imp.warnings[1].starts_with("rule 3 left out"),
            "{:?}",
            imp.warnings
        );
    }

    #[test]
    fn a_real_password_is_kept_for_hashing() {
        let imp = import(
            r#"{"admin_password":"s3cret-long-pass","rules":[]}"#,
            &policy(),
        )
        .unwrap();
        assert_eq!(imp.password.as_deref(), Some("s3cret-long-pass"));
    }

    #[test]
    fn a_backend_outside_the_allow_list_is_left_out() {
        let imp = import(
            r#"{"default_backend":"http://10.0.0.1:80","rules":[{"id":"x","backend":"http://8.8.8.8:80","match":{"path_prefix":"/x/"}}]}"#,
            &policy(),
        )
        .unwrap();
        assert!(imp.table.rules.is_empty());
        assert_eq!(imp.table.default_backend, "");
        assert_eq!(imp.warnings.len(), 2);
    }

    #[test]
    fn stock_rules_give_way_to_the_manifests_and_own_rules_stay() {
        let manifest = import(
            r#"{"rules":[{"id":"gemini","backend":"http://127.0.0.1:8000","strip_prefix":true,"match":{"path_prefix":"/gemini/"}}]}"#,
            &policy(),
        )
        .unwrap()
        .table;
        let text = r#"{"admin_password":"pw-long-enough","rules":[
            {"id":"proxy-gemini","priority":180,"backend":"http://127.0.0.1:8000","match":{"path_prefix":"/gemini/"}},
            {"id":"gem-ref","priority":195,"backend":"http://127.0.0.1:8000","match":{"referer_substr":"gemini"}},
            {"id":"mine","priority":50,"backend":"http://127.0.0.1:9000","match":{"path_prefix":"/mine/"}},
            {"id":"gemini","priority":10,"backend":"http://127.0.0.1:9001","match":{"path_prefix":"/g2/"}}]}"#;
        let imp = import_merged(text, &manifest, &policy()).unwrap();
        let ids: Vec<&str> = imp.table.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["gemini", "mine", "gemini-2"]);
        assert!(imp.table.rules[0].strip_prefix, "the manifest's rule wins");
        assert!(
            imp.warnings.iter().any(|w| w.contains("2 stock rule(s)")),
            "{:?}",
            imp.warnings
        );
    }

    /// The manifest's rules enter the merge as they are (already valid):
    /// first, unchanged (assigned ids, normalised host and method,
    /// `set_headers` in their order); the file's rules are renamed,
    /// numbered and refused around them as before.
    #[test]
    fn the_manifests_rules_are_merged_unchanged() {
        let manifest = import(
            r#"{"rules":[
            {"match":{"path_prefix":"/a/","host":"A.Example","method":"get"},"set_headers":[{"name":"X-B","value":"2"},{"name":"X-A","value":"1"}]},
            {"id":"r","action":"redirect","redirect_to_prefix":"/s/","redirect_code":308,"match":{"path_prefix":"/r/"}}]}"#,
            &policy(),
        )
        .unwrap()
        .table;
        assert_eq!(manifest.rules[0].id, "rule-1");
        let text = r#"{"default_backend":"http://127.0.0.1:6185","rules":[
            {"id":"rule-1","match":{"path_prefix":"/mine/"}},
            {"match":{"path_equal":"/x"},"backend":"http://127.0.0.1:9000"},
            {"id":"r","action":"jump","match":{"path_prefix":"/j/"}},
            {"id":"r","match":{"path_prefix":"/r2/"}}]}"#;
        let imp = import_merged(text, &manifest, &policy()).unwrap();
        assert_eq!(imp.table.default_backend, "http://127.0.0.1:6185");
        assert_eq!(imp.table.rules[..2], manifest.rules[..]);
        let ids: Vec<&str> = imp.table.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["rule-1", "r", "rule-1-2", "rule-4", "r-2"]);
        assert_eq!(
            imp.warnings,
            [
                "rule 2: id `rule-1` is used twice; renamed to `rule-1-2`",
                "rule 4: id `r` is used twice; renamed to `r-2`",
                "rule 4 left out: rules[0] (`r-2`): `action`: unknown variant `jump`, expected `proxy` or `redirect`",
                "rule 5: id `r` is used twice; renamed to `r-2`",
            ]
        );
    }

    /// `"id": ""` is no id, as for the admin API: two such rules are not
    /// duplicates (the original's editor left them so), each is assigned
    /// `rule-N` by its place, with no warning.
    #[test]
    fn empty_ids_are_assigned_not_renamed() {
        let text = r#"{"rules":[
            {"id":"","match":{"path_prefix":"/a/"},"backend":"http://127.0.0.1:9000"},
            {"id":"","match":{"path_prefix":"/b/"},"backend":"http://127.0.0.1:9000"}]}"#;
        let imp = import(text, &policy()).unwrap();
        let ids: Vec<&str> = imp.table.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["rule-1", "rule-2"]);
        assert_eq!(imp.warnings, Vec::<String>::new());
    }

    /// A file that is JSON but not an object has no fields to import (as
    /// `null` had): the manifest's rules stand. Merging it used to panic.
    #[test]
    fn a_file_that_is_not_an_object_imports_nothing() {
        let manifest = import(r#"{"rules":[{"match":{"path_prefix":"/a/"}}]}"#, &policy())
            .unwrap()
            .table;
        for text in ["[]", "[{\"id\":\"x\"}]", "5", "\"rules\"", "true", "null"] {
            let imp = import_merged(text, &manifest, &policy()).unwrap();
            assert_eq!(imp.table, manifest, "{text}");
            assert_eq!((imp.password, imp.warnings.len()), (None, 0), "{text}");
        }
    }

    #[test]
    fn broken_json_is_an_error() {
        assert!(import("{", &policy())
            .unwrap_err()
            .contains("not valid JSON"));
    }
}
