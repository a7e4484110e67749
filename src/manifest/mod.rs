//! `stack.yaml`: parse, interpolate, validate, and resolve into a [`Manifest`].
//!
//! Two stages, as in the house style: [`yaml`] turns text into a tree that
//! remembers positions; [`read`] turns the tree into the typed [`model`],
//! collecting every problem with its line, column and key.

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
