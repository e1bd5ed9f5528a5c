//! The agent.yaml model: types, decoding with source positions, validation, CLI overrides.

pub mod decode;
pub mod diagnostics;
pub mod flags;
pub mod model;
pub mod positions;
pub mod validate;
pub mod values;

pub use decode::{load_file, load_file_with_positions, load_str, load_str_with_positions};
pub use diagnostics::{Diagnostic, Diagnostics, Location};
pub use model::*;
pub use positions::Positions;
pub use validate::validate;
