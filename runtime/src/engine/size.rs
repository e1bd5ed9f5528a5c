//! `ps -s` / `inspect -s`: what a container's writable layer holds, and its image under it.

use super::{Container, Engine, EngineError, Result};
use crate::record::Backend;

/// Sizes in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerSize {
    /// The writable layer.
    pub rw: u64,
    /// The read-only image layers under it.
    pub image: u64,
}

impl Engine {
    /// The sizes of a containerd container's snapshot and its parents (the process backend
    /// runs on a rootfs it does not own: no size to tell).
    pub async fn container_size(&self, c: &Container) -> Result<ContainerSize> {
        if c.rec.backend != Backend::Containerd {
            return Err(EngineError::State(
                "the process backend runs on a rootfs it does not own: no layer size".into(),
            ));
        }
        let client = self.client().await?;
        let (rw, mut parent) = client.snapshot_usage(&c.rec.id).await?;
        let mut image = 0;
        // A layer stack is a few dozen deep at most; stop at a loop regardless.
        for _ in 0..256 {
            let Some(p) = parent else { break };
            let (n, next) = client.snapshot_usage(&p).await?;
            image += n;
            parent = next;
        }
        Ok(ContainerSize { rw, image })
    }
}
