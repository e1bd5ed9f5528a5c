//! The agent.yaml model: types, decoding with source positions, validation, CLI overrides.

pub mod model;

pub use model::*;
