//! aac runtime library: the agent.yaml model, the OCI spec builder and the backends that
//! execute that spec (containerd over gRPC, or a plain host process).

pub mod agent;
pub mod health;
pub mod image_config;
pub mod logs;
pub mod network;
pub mod spec;
pub mod state;
pub mod status;
