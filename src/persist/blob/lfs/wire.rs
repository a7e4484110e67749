//! The batch API's JSON: the request, the answer and its actions.

use super::*;

#[derive(serde::Serialize)]
pub(super) struct BatchRequest<'a> {
    pub(super) operation: &'a str,
    pub(super) transfers: [&'a str; 2],
    pub(super) objects: Vec<ObjectSpec>,
    pub(super) hash_algo: &'a str,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ObjectSpec {
    pub(super) oid: String,
    pub(super) size: u64,
}

#[derive(serde::Deserialize)]
pub(super) struct BatchResponse {
    #[serde(default)]
    pub(super) transfer: Option<String>,
    #[serde(default)]
    pub(super) objects: Vec<ObjectResponse>,
}

#[derive(serde::Deserialize)]
pub(super) struct ObjectResponse {
    pub(super) oid: String,
    #[serde(default)]
    pub(super) actions: Option<HashMap<String, Action>>,
    #[serde(default)]
    pub(super) error: Option<ObjectError>,
}

#[derive(serde::Deserialize, Clone, Debug)]
pub(super) struct Action {
    pub(super) href: String,
    #[serde(default, deserialize_with = "header_map")]
    pub(super) header: HashMap<String, String>,
}

/// An action's `header`, tolerating `null` and numbers (Hugging Face's own
/// client accepts `chunk_size` as a number too) so one odd value does not
/// make the whole answer unreadable.
pub(super) fn header_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<HashMap<String, String>, D::Error> {
    use serde::Deserialize;
    let raw: Option<HashMap<String, serde_json::Value>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k, s)),
            serde_json::Value::Number(n) => Some((k, n.to_string())),
            _ => None,
        })
        .collect())
}

#[derive(serde::Deserialize)]
pub(super) struct ObjectError {
    pub(super) code: u16,
    #[serde(default)]
    pub(super) message: String,
}

/// What the server said about one object.
pub(super) enum Answer {
    /// Stored already (upload) / nothing to do.
    Present,
    /// These actions to carry out.
    Actions(HashMap<String, Action>),
    /// Not there (download of a missing object).
    Missing,
}
