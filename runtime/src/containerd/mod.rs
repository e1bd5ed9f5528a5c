//! containerd backend: runs OCI specs as containerd containers over gRPC.

mod client;
mod containers;
mod content;
mod error;
mod images;
mod registry;
mod unpack;

pub use client::{
    default_address, default_namespace, Client, DEFAULT_ADDRESS, DEFAULT_NAMESPACE, SNAPSHOTTER,
};
pub use containers::*;
pub use error::{CtrdError, Result};
pub use images::{
    host_arch, no_progress, normalize_reference, Descriptor, ImageSummary, Platform, Progress,
};
pub use registry::{Credentials, Reference, RegistryError, INSECURE_REGISTRIES_ENV};
pub use unpack::chain_ids;
