//! The OCI runtime spec: built from the agent model, used by every backend.

pub mod builder;
pub mod seccomp;
