//! `stack.yaml`: parse, interpolate, validate, and resolve into a [`Manifest`].
//!
//! Two stages, as in the house style: [`yaml`] turns text into a tree that
//! remembers positions; [`read`] turns the tree into the typed [`model`],
//! collecting every problem with its line, column and key. Inside `read`, a
//! section's keys are a raw `#[derive(Deserialize)]` struct read through
//! [`de`], a `serde::Deserializer` over that same tree, and a validation
//! step turns the raw struct into the model.
//!
//! Why a deserializer over our own tree rather than a serde YAML crate
//! (serde-saphyr was tried): one parser, so syntax errors keep yaml-rust2's
//! texts and places, which the tests pin; every leaf keeps its exact text
//! and its line and column, where a serde YAML crate types scalars (`1.0`,
//! `012`, `yes`) and gives derive fields no key position; and unknown keys
//! come out of `deserialize_struct` with their place, with no second
//! position lookup.

pub mod de;
pub mod error;
pub mod interp;
pub mod model;
pub mod read;
pub mod remotes;
pub mod units;
pub mod yaml;

pub use error::{ManifestError, Problem};
pub use model::*;
pub use read::{load, load_str};
