//! A small blocking client for the running gateway's admin API (see the
//! spec's admin API table), behind `stackctl routes`, `status` and the
//! `--url` forms of `backup`, `restore` and `snapshots` (their glue is in
//! [`crate::cmd`]).
//!
//! These commands send one or two requests and exit, so they use reqwest's
//! blocking client (no async runtime of their own to start). Route tables
//! are handled as JSON values, so fields this version does not know survive
//! a `routes set`.
//!
//! - [`http`]: the transport: the base URL, one request, errors that say
//!   what to check.
//! - [`admin`]: the admin API with its password sources.
//! - [`table`]: route table edits and the status table (pure).

mod admin;
mod http;
mod table;
#[cfg(test)]
pub(crate) mod tests;

pub(crate) use admin::Admin;
#[cfg(test)]
pub(crate) use admin::Source;
pub(crate) use http::Response;
pub(crate) use table::{
    id_from_prefix, prefix_rule, remove, render_status, rules_mut, simple_prefix_rule, upsert,
};
