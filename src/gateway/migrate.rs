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

use crate::gateway::rules::{validate_table, BackendPolicy, Table};

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

/// Parse an original `admin_config.json` and merge it into the manifest's
/// table: the manifest's rules first, then the user's own rules (stock
/// ones dropped), ids kept unique.
pub fn import_merged(
    text: &str,
    manifest: &Table,
    policy: &BackendPolicy,
) -> Result<Imported, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let mut own = v.clone();
    let all = v["rules"].as_array().cloned().unwrap_or_default();
    let kept: Vec<Value> = all.iter().filter(|r| !is_stock(r)).cloned().collect();
    let dropped = all.len() - kept.len();
    let mut rules: Vec<Value> = manifest
        .rules
        .iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect();
    rules.extend(kept);
    own["rules"] = Value::Array(rules);
    let mut imp = import(&own.to_string(), policy)?;
    if dropped > 0 {
        imp.warnings.push(format!(
            "{dropped} stock rule(s) of the original replaced by the manifest's routes"
        ));
    }
    Ok(imp)
}

/// Parse and validate an original `admin_config.json`.
pub fn import(text: &str, policy: &BackendPolicy) -> Result<Imported, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let default_backend = v["default_backend"].as_str().unwrap_or("").to_string();
    let mut warnings = Vec::new();
    let default_ok = validate_table(&default_backend, &[], policy).is_ok();
    let default_backend = if default_ok {
        default_backend
    } else {
        warnings.push(format!(
            "default_backend `{default_backend}` is not allowed here; keeping the manifest's"
        ));
        String::new()
    };
    let mut rules: Vec<Value> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for (i, rule) in v["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let mut rule = rule;
        // Duplicate ids were accepted by the original: keep both, renamed.
        if let Some(id) = rule["id"].as_str().map(str::to_string) {
            if ids.contains(&id) {
                let mut n = 2;
                while ids.contains(&format!("{id}-{n}")) {
                    n += 1;
                }
                let new = format!("{id}-{n}");
                warnings.push(format!(
                    "rule {i}: id `{id}` is used twice; renamed to `{new}`"
                ));
                rule["id"] = Value::String(new);
            }
        }
        match validate_table(&default_backend, std::slice::from_ref(&rule), policy) {
            Ok(_) => {
                if let Some(id) = rule["id"].as_str() {
                    ids.push(id.to_string());
                }
                rules.push(rule);
            }
            Err(e) => warnings.push(format!("rule {i} left out: {e}")),
        }
    }
    let table = validate_table(&default_backend, &rules, policy).map_err(|e| e.to_string())?;
    let password = v["admin_password"]
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

    #[test]
    fn broken_json_is_an_error() {
        assert!(import("{", &policy())
            .unwrap_err()
            .contains("not valid JSON"));
    }
}
