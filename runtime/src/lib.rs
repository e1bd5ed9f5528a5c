//! aac runtime library: the agent.yaml model, the OCI spec builder and the backends that
//! execute that spec (containerd over gRPC, or a plain host process).

pub use aac_agent as agent;
pub mod backend;
pub mod cgroups;
pub mod containerd;
pub mod egress;
pub mod engine;
pub mod events;
pub mod health;
pub mod host;
pub mod image_config;
pub mod io;
pub mod logs;
pub mod monitor;
pub mod network;
pub mod process;
pub mod record;
pub mod rootlesskit;
pub mod scale;
pub mod secrets;
pub mod spec;
pub mod state;
pub mod stats;
pub mod status;
pub mod volumes;
