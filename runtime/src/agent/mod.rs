//! The agent.yaml model: types, decoding with source positions, validation, CLI overrides.

pub mod diagnostics;
pub mod flags;
pub mod model;
pub mod values;

pub use diagnostics::{Diagnostic, Diagnostics, Location};
pub use model::*;
