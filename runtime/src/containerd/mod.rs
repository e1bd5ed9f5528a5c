//! containerd backend: runs OCI specs as containerd containers over gRPC.

pub mod auth;
mod client;
mod containers;
mod content;
mod descriptor;
mod error;
mod images;
mod registry;
mod unpack;

pub use client::{
    default_address, default_namespace, Client, DEFAULT_ADDRESS, DEFAULT_NAMESPACE, SNAPSHOTTER,
};
pub use containers::*;
pub use descriptor::{no_progress, Descriptor, Platform, Progress};
pub use error::RegistryError;
pub use error::{CtrdError, Result};
pub use images::{host_arch, normalize_reference, ImageDetails, ImageSummary};
pub use registry::{check_login, Credentials, Reference, INSECURE_REGISTRIES_ENV};
pub use unpack::chain_ids;
