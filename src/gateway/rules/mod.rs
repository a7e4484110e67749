//! The route rule model: the JSON wire format of `/admin/routes.json`,
//! compatible with the original OpenResty gateway's `admin_config.json`,
//! and its validation (pure: no I/O).
//!
//! Validation ([`validate()`]) turns untrusted rules (the manifest's `routes:`,
//! read straight into [`Rule`]s; an admin POST's JSON, through
//! [`validate_table`]; the original's, rule by rule through `parse_rule`;
//! the state file) into a normalised [`Table`],
//! or a [`RuleError`] that names the rule (index and id) and the field, so
//! both `stackctl check` and the admin API can tell the user exactly what
//! to fix.
//!
//! Leniency kept for the original's files: empty strings mean "absent",
//! `priority` may be a numeric string, and `set_headers` may be the
//! original's list of `{name, value}` or a map. Rules are written back in
//! the original's shape (a `set_headers` list), so its page and scripts can
//! read what we write.

mod backend;
mod error;
mod model;
mod validate;

pub use backend::{loopback_nets, parse_backend, Backend, BackendPolicy};
pub use error::RuleError;
pub use model::{Action, HeaderMatch, Match, Rule, SetHeader, Table};
pub(crate) use validate::{compile_regex, parse_rule};
pub use validate::{validate, validate_table};

#[cfg(test)]
mod tests;
