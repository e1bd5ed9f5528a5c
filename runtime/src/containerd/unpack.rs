//! Unpacking image layers into the overlayfs snapshotter, and chain IDs.

use std::collections::HashMap;

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::ApplyRequest;
use containerd_client::types::Descriptor as CtrdDescriptor;

use super::client::{unique_suffix, Client, SNAPSHOTTER};
use super::descriptor::{Descriptor, Progress};
use super::error::{CtrdError, Result};

/// Chain IDs of a layer stack: c0 = diff0, ci = sha256("{c(i-1)} {diff_i}").
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => super::content::sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

impl Client {
    /// Does the snapshot `key` exist?
    pub(crate) async fn snapshot_exists(&self, key: &str) -> Result<bool> {
        let snaps = self.snapshots();
        let r = self
            .retry("Snapshots.Stat", || {
                let mut s = snaps.clone();
                let req = self.req(StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: key.to_string(),
                });
                async move { s.stat(req).await }
            })
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes snapshot `key`; NotFound is success.
    pub(crate) async fn remove_snapshot(&self, key: &str) -> Result<()> {
        let snaps = self.snapshots();
        let r = self
            .retry("Snapshots.Remove", || {
                let mut s = snaps.clone();
                let req = self.req(RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: key.to_string(),
                });
                async move { s.remove(req).await }
            })
            .await;
        match r {
            Err(e) if e.is_not_found() => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Applies `layers` (with their `diff_ids`) as committed snapshots named by chain ID,
    /// skipping those that exist. Returns the top chain ID.
    pub(crate) async fn unpack_layers(
        &self,
        lease: &str,
        layers: &[Descriptor],
        diff_ids: &[String],
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<String> {
        if layers.len() != diff_ids.len() {
            return Err(CtrdError::InvalidImage(format!(
                "manifest has {} layers but the config lists {} diff_ids",
                layers.len(),
                diff_ids.len()
            )));
        }
        if layers.is_empty() {
            return Err(CtrdError::InvalidImage("image has no layers".into()));
        }
        let chains = chain_ids(diff_ids);
        for (i, layer) in layers.iter().enumerate() {
            let chain = &chains[i];
            progress(Progress::Unpacking {
                layer: i + 1,
                of: layers.len(),
            });
            self.lease_resource(lease, &format!("snapshots/{SNAPSHOTTER}"), chain)
                .await?;
            if self.snapshot_exists(chain).await? {
                continue;
            }
            let parent = if i == 0 {
                String::new()
            } else {
                chains[i - 1].clone()
            };
            let key = format!("extract-{} {chain}", unique_suffix());
            let mut labels = HashMap::new();
            labels.insert("containerd.io/snapshot.ref".to_string(), chain.clone());
            let req = self.req_leased(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: key.clone(),
                    parent,
                    labels,
                },
                lease,
            )?;
            let mounts = self
                .snapshots()
                .prepare(req)
                .await
                .map_err(|s| CtrdError::grpc("Snapshots.Prepare", s))?
                .into_inner()
                .mounts;
            let applied = self
                .apply_and_commit(lease, &key, chain, layer, &diff_ids[i], mounts)
                .await;
            if let Err(e) = applied {
                if let Err(re) = self.remove_snapshot(&key).await {
                    tracing::warn!(key, error = %re, "could not remove extraction snapshot");
                }
                return Err(e);
            }
        }
        chains
            .last()
            .cloned()
            .ok_or_else(|| CtrdError::InvalidImage("image has no layers".into()))
    }

    async fn apply_and_commit(
        &self,
        lease: &str,
        key: &str,
        chain: &str,
        layer: &Descriptor,
        diff_id: &str,
        mounts: Vec<containerd_client::types::Mount>,
    ) -> Result<()> {
        let req = self.req_leased(
            ApplyRequest {
                diff: Some(CtrdDescriptor {
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.clone(),
                    size: layer.size,
                    annotations: HashMap::new(),
                }),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            },
            lease,
        )?;
        let applied = self
            .diff()
            .apply(req)
            .await
            .map_err(|s| CtrdError::grpc("Diff.Apply", s))?
            .into_inner()
            .applied
            .map(|d| d.digest)
            .unwrap_or_default();
        if applied != diff_id {
            return Err(CtrdError::DigestMismatch {
                what: format!("uncompressed layer {}", layer.digest),
                expected: diff_id.to_string(),
                actual: applied,
            });
        }
        let req = self.req_leased(
            CommitSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                name: chain.to_string(),
                key: key.to_string(),
                labels: HashMap::new(),
            },
            lease,
        )?;
        match self.snapshots().commit(req).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => self.remove_snapshot(key).await,
            Err(s) => Err(CtrdError::grpc("Snapshots.Commit", s)),
        }
    }
}

impl Client {
    /// Bytes a snapshot holds by itself (its upper folder for an active one) and its parent's key.
    pub async fn snapshot_usage(&self, key: &str) -> Result<(u64, Option<String>)> {
        use containerd_client::services::v1::snapshots::UsageRequest;
        let snaps = self.snapshots();
        let usage = self
            .retry("Snapshots.Usage", || {
                let mut s = snaps.clone();
                let req = self.req(UsageRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: key.to_string(),
                });
                async move { s.usage(req).await }
            })
            .await?;
        let info = self
            .retry("Snapshots.Stat", || {
                let mut s = snaps.clone();
                let req = self.req(StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: key.to_string(),
                });
                async move { s.stat(req).await }
            })
            .await?;
        let parent = info.info.map(|i| i.parent).filter(|p| !p.is_empty());
        Ok((u64::try_from(usage.size).unwrap_or(0), parent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_of_one_is_the_diff() {
        let d = vec!["sha256:aa".to_string()];
        assert_eq!(chain_ids(&d), d);
    }

    #[test]
    fn chain_of_two() {
        let d = vec!["sha256:aa".to_string(), "sha256:bb".to_string()];
        let c = chain_ids(&d);
        assert_eq!(
            c[1],
            super::super::content::sha256_digest(b"sha256:aa sha256:bb")
        );
    }
}
