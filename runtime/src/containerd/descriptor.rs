//! The OCI descriptor types every image operation passes around, and import progress.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Progress of an import, for a progress bar.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Packing the root file system into a layer.
    Packing,
    /// Writing blob `digest` (`size` bytes) to the content store.
    Writing { digest: String, size: i64 },
    /// Unpacking layer `layer` of `of`.
    Unpacking { layer: usize, of: usize },
    /// The image `name` is ready.
    Done { name: String },
}

/// A progress hook that ignores everything.
pub fn no_progress(_: Progress) {}

/// An OCI content descriptor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An OCI platform.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}
