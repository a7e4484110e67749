//! Why a route table was refused, naming the rule and the field.

/// A problem with a route table, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// `default_backend` is invalid.
    #[error("`default_backend`: {0}")]
    DefaultBackend(String),
    /// A rule is invalid.
    #[error("rules[{index}]{}: `{field}`: {message}", id_part(.id))]
    Rule {
        /// Position in `rules` (0-based, as in the JSON array).
        index: usize,
        /// The rule's id, when it has one.
        id: Option<String>,
        /// The field at fault, dotted (`match.path_prefix`).
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The table as a whole is invalid (`rules` not a list, …).
    #[error("{0}")]
    Table(String),
}

fn id_part(id: &Option<String>) -> String {
    match id {
        Some(id) if !id.is_empty() => format!(" (`{id}`)"),
        _ => String::new(),
    }
}

impl RuleError {
    /// The rule's index, when the error is about one rule.
    pub fn rule_index(&self) -> Option<usize> {
        match self {
            RuleError::Rule { index, .. } => Some(*index),
            _ => None,
        }
    }
}
