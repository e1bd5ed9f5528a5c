//! `image inspect`, `image prune` and `system df`: images as containerd holds them, weighed
//! against the containers that use them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Engine, Result};
use crate::containerd::{normalize_reference, ImageDetails, ImageSummary};
use crate::record::Backend;

/// One image with every name that points at the same target (docker's `RepoTags`).
#[derive(Debug, Clone)]
pub struct ImageInspect {
    pub details: ImageDetails,
    pub names: Vec<String>,
    /// Containers (any state) created from one of those names.
    pub containers: usize,
}

/// What `image prune` removed.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagePruneReport {
    /// Image names removed.
    pub untagged: Vec<String>,
    /// Blobs no image left references any more (garbage collected by containerd).
    pub deleted: Vec<String>,
    /// Bytes of those blobs.
    pub reclaimed: u64,
}

/// One line of `system df`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageLine {
    pub total: usize,
    pub active: usize,
    pub size: u64,
    pub reclaimable: u64,
}

/// `system df`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskUsage {
    pub images: UsageLine,
    pub containers: UsageLine,
    pub volumes: UsageLine,
}

fn blob_bytes<'a>(blobs: impl Iterator<Item = &'a (String, i64)>) -> BTreeMap<String, u64> {
    blobs
        .map(|(d, n)| (d.clone(), u64::try_from(*n).unwrap_or(0)))
        .collect()
}

impl Engine {
    /// Image names that containers (any state) of this engine were created from,
    /// normalized.
    fn images_in_use(&self) -> Result<BTreeSet<String>> {
        let mut used = BTreeSet::new();
        for c in self.all()? {
            if c.rec.backend != Backend::Containerd {
                continue;
            }
            if let Some(i) = &c.rec.image {
                used.insert(normalize_reference(i).unwrap_or_else(|_| i.clone()));
            }
        }
        Ok(used)
    }

    /// Every image with its documents; one that cannot be read is left out (and logged).
    async fn all_image_details(&self) -> Result<Vec<ImageDetails>> {
        let client = self.client().await?;
        let mut out = Vec::new();
        for i in client.list_images().await? {
            match client.image_details(&i.name).await {
                Ok(d) => out.push(d),
                Err(e) => tracing::warn!("image {}: {e}", i.name),
            }
        }
        Ok(out)
    }

    /// `image inspect REF`.
    pub async fn image_inspect(&self, reference: &str) -> Result<ImageInspect> {
        let client = self.client().await?;
        let details = client.image_details(reference).await?;
        let all: Vec<ImageSummary> = client.list_images().await?;
        let mut names: Vec<String> = all
            .iter()
            .filter(|i| i.digest == details.summary.digest)
            .map(|i| i.name.clone())
            .collect();
        names.sort();
        let containers = self
            .all()?
            .iter()
            .filter_map(|c| c.rec.image.as_ref())
            .filter(|i| names.contains(&normalize_reference(i).unwrap_or_else(|_| i.to_string())))
            .count();
        Ok(ImageInspect {
            details,
            names,
            containers,
        })
    }

    /// `image prune`: aac's images always have a name, so none is dangling; with `all`,
    /// every image no container was created from is removed.
    pub async fn image_prune(&self, all: bool) -> Result<ImagePruneReport> {
        let mut report = ImagePruneReport::default();
        if !all {
            return Ok(report);
        }
        let client = self.client().await?;
        let used = self.images_in_use()?;
        let images = self.all_image_details().await?;
        let (gone, kept): (Vec<&ImageDetails>, Vec<&ImageDetails>) =
            images.iter().partition(|d| !used.contains(&d.summary.name));
        for d in &gone {
            client.remove_image(&d.summary.name).await?;
            report.untagged.push(d.summary.name.clone());
        }
        let kept_blobs = blob_bytes(kept.iter().flat_map(|d| d.blobs.iter()));
        for (digest, bytes) in blob_bytes(gone.iter().flat_map(|d| d.blobs.iter())) {
            if !kept_blobs.contains_key(&digest) {
                report.reclaimed += bytes;
                report.deleted.push(digest);
            }
        }
        Ok(report)
    }

    /// `system df`: images (content store bytes, shared blobs counted once), containers
    /// (writable layers; active = running) and named volumes (active = in use).
    pub async fn disk_usage(&self) -> Result<DiskUsage> {
        let mut du = DiskUsage::default();
        // Images: what is held for images no container uses is reclaimable.
        if let Ok(images) = self.all_image_details().await {
            let used = self.images_in_use()?;
            let all_blobs = blob_bytes(images.iter().flat_map(|d| d.blobs.iter()));
            let active_blobs = blob_bytes(
                images
                    .iter()
                    .filter(|d| used.contains(&d.summary.name))
                    .flat_map(|d| d.blobs.iter()),
            );
            du.images = UsageLine {
                total: images.len(),
                active: images
                    .iter()
                    .filter(|d| used.contains(&d.summary.name))
                    .count(),
                size: all_blobs.values().sum(),
                reclaimable: all_blobs
                    .iter()
                    .filter(|(d, _)| !active_blobs.contains_key(*d))
                    .map(|(_, n)| n)
                    .sum(),
            };
        }
        for c in self.all()? {
            let running = c.is_up();
            let rw = match self.container_size(&c).await {
                Ok(s) => s.rw,
                Err(_) => 0,
            };
            du.containers.total += 1;
            du.containers.size += rw;
            if running {
                du.containers.active += 1;
            } else {
                du.containers.reclaimable += rw;
            }
        }
        for (v, users) in self.volume_list()? {
            let bytes = crate::volumes::usage(&v).0;
            du.volumes.total += 1;
            du.volumes.size += bytes;
            if users > 0 {
                du.volumes.active += 1;
            } else {
                du.volumes.reclaimable += bytes;
            }
        }
        Ok(du)
    }
}
