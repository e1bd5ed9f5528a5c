//! Images: import of a root file system directory or an image archive, list, remove and
//! image configuration lookup. Written on the Content, Images, Diff and Snapshots services.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use containerd_client::services::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
    UpdateImageRequest,
};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tonic::Code;

use super::client::Client;
use super::content::{sha256_digest, BlobSource};
use super::descriptor::{no_progress, Descriptor, Progress};
use super::error::{CtrdError, Result};
use super::unpack::chain_ids;
use crate::image_config::ImageConfig;

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// One image in containerd's image store.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSummary {
    /// Full name, e.g. `busybox:latest`.
    pub name: String,
    /// Digest of the target (manifest or index).
    pub digest: String,
    /// Media type of the target.
    pub media_type: String,
    /// Size of the target document in bytes.
    pub size: i64,
    /// Creation time in the image store.
    pub created: Option<SystemTime>,
    /// Image labels.
    pub labels: HashMap<String, String>,
}

/// What `image inspect` shows of one image: its documents as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDetails {
    pub summary: ImageSummary,
    /// The platform manifest's digest (the target's when it is no index).
    pub manifest_digest: String,
    /// The config document's digest: docker's image ID.
    pub config_digest: String,
    /// The config document as stored (`architecture`, `os`, `config`, `rootfs`, `created`, ...).
    pub config: serde_json::Value,
    /// Every blob of this image on this platform, `(digest, size)`: index (when there is
    /// one), manifest, config, layers.
    pub blobs: Vec<(String, i64)>,
}

impl ImageDetails {
    /// Bytes of the layers (compressed, as stored in the content store).
    pub fn layers_size(&self) -> u64 {
        self.blobs
            .iter()
            .skip(2 + usize::from(self.summary.digest != self.manifest_digest))
            .map(|(_, n)| u64::try_from(*n).unwrap_or(0))
            .sum()
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub(crate) schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    pub(crate) config: Descriptor,
    pub(crate) layers: Vec<Descriptor>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Index {
    #[serde(rename = "schemaVersion")]
    pub(crate) schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    pub(crate) manifests: Vec<Descriptor>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    pub(crate) diff_ids: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop_signal: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ConfigDoc {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<ConfigSection>,
    #[serde(default)]
    pub(crate) rootfs: RootFs,
}

impl From<&ImageConfig> for ConfigSection {
    fn from(c: &ImageConfig) -> Self {
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        ConfigSection {
            entrypoint: non_empty(&c.entrypoint),
            cmd: non_empty(&c.cmd),
            env: non_empty(&c.env),
            working_dir: (!c.working_dir.is_empty()).then(|| c.working_dir.clone()),
            user: (!c.user.is_empty()).then(|| c.user.clone()),
            exposed_ports: (!c.exposed_ports.is_empty()).then(|| {
                c.exposed_ports
                    .iter()
                    .map(|p| (p.clone(), serde_json::json!({})))
                    .collect()
            }),
            labels: (!c.labels.is_empty()).then(|| c.labels.clone()),
            stop_signal: c.stop_signal.clone(),
        }
    }
}

impl From<ConfigSection> for ImageConfig {
    fn from(c: ConfigSection) -> Self {
        ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            exposed_ports: c
                .exposed_ports
                .map(|m| m.into_keys().collect())
                .unwrap_or_default(),
            labels: c.labels.unwrap_or_default(),
            stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
        }
    }
}

/// The OCI architecture name of this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Normalizes an image reference the simple way: a name without tag or digest gets `:latest`.
pub fn normalize_reference(reference: &str) -> Result<String> {
    let r = reference.trim();
    let bad = r.is_empty()
        || r.starts_with(['/', ':', '@', '.', '-'])
        || r.ends_with(['/', ':', '@'])
        || !r
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c));
    if bad {
        return Err(CtrdError::InvalidReference(reference.to_string()));
    }
    if r.contains('@') {
        return Ok(r.to_string());
    }
    let last = r.rsplit('/').next().unwrap_or(r);
    if last.contains(':') {
        Ok(r.to_string())
    } else {
        Ok(format!("{r}:latest"))
    }
}

pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(data: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| CtrdError::json(format!("parse {what}"), e))
}

fn to_json<T: Serialize>(v: &T, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| CtrdError::json(format!("serialize {what}"), e))
}

fn timestamp(t: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    t.as_ref().and_then(|t| SystemTime::try_from(*t).ok())
}

fn summary(img: Image) -> ImageSummary {
    let target = img.target.unwrap_or_default();
    ImageSummary {
        name: img.name,
        digest: target.digest,
        media_type: target.media_type,
        size: target.size,
        created: timestamp(&img.created_at),
        labels: img.labels,
    }
}

pub(crate) fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

/// Picks the manifest of this platform from an index.
pub(crate) fn pick_platform(index: &Index) -> Result<Descriptor> {
    let arch = host_arch();
    let found = index.manifests.iter().find(|d| match &d.platform {
        Some(p) => p.os == "linux" && p.architecture == arch,
        None => false,
    });
    match found {
        Some(d) => Ok(d.clone()),
        None if index.manifests.len() == 1 && index.manifests[0].platform.is_none() => {
            Ok(index.manifests[0].clone())
        }
        None => Err(CtrdError::InvalidImage(format!(
            "no linux/{arch} manifest in the image index"
        ))),
    }
}

/// Labels that keep a manifest's config and layers alive.
pub(crate) fn manifest_gc_labels(m: &Manifest) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    labels.insert(
        "containerd.io/gc.ref.content.config".to_string(),
        m.config.digest.clone(),
    );
    for (i, l) in m.layers.iter().enumerate() {
        labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.clone(),
        );
    }
    labels
}

pub(crate) fn config_gc_labels(diff_ids: &[String]) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    if let Some(top) = chain_ids(diff_ids).last() {
        labels.insert(
            format!(
                "containerd.io/gc.ref.snapshot.{}",
                super::client::SNAPSHOTTER
            ),
            top.clone(),
        );
    }
    labels
}

/// A writer that hashes what passes through it.
struct HashWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    count: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A packed layer on disk.
struct PackedLayer {
    file: tempfile::NamedTempFile,
    digest: String,
    size: i64,
    diff_id: String,
}

/// Tars and gzips `dir` into a temporary file.
fn pack_layer(dir: &Path) -> Result<PackedLayer> {
    let meta =
        std::fs::metadata(dir).map_err(|e| CtrdError::io(format!("{}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(CtrdError::InvalidImage(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let file = tempfile::NamedTempFile::new().map_err(|e| CtrdError::io("create temp file", e))?;
    let out = file
        .reopen()
        .map_err(|e| CtrdError::io("open temp file", e))?;
    let blob = HashWriter {
        inner: std::io::BufWriter::new(out),
        hasher: sha2::Sha256::new(),
        count: 0,
    };
    let gz = flate2::write::GzEncoder::new(blob, flate2::Compression::fast());
    let tar_w = HashWriter {
        inner: gz,
        hasher: sha2::Sha256::new(),
        count: 0,
    };
    let mut builder = tar::Builder::new(tar_w);
    builder.follow_symlinks(false);
    let ctx = |e| CtrdError::io(format!("pack {}", dir.display()), e);
    builder.append_dir_all(".", dir).map_err(ctx)?;
    let tar_w = builder.into_inner().map_err(ctx)?;
    let diff_id = format!("sha256:{}", hex::encode(tar_w.hasher.finalize()));
    let mut blob = tar_w.inner.finish().map_err(ctx)?;
    blob.flush().map_err(ctx)?;
    let digest = format!("sha256:{}", hex::encode(blob.hasher.finalize()));
    Ok(PackedLayer {
        file,
        digest,
        size: blob.count as i64,
        diff_id,
    })
}

/// sha256 and size of a file, plus whether it starts with the gzip magic.
fn hash_file(path: &Path) -> Result<(String, i64, bool)> {
    let ctx = |e| CtrdError::io(format!("read {}", path.display()), e);
    let mut f = std::fs::File::open(path).map_err(ctx)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0i64;
    let mut gz = None;
    loop {
        let n = f.read(&mut buf).map_err(ctx)?;
        if n == 0 {
            break;
        }
        if gz.is_none() {
            gz = Some(n >= 2 && buf[0] == 0x1f && buf[1] == 0x8b);
        }
        h.update(&buf[..n]);
        size += n as i64;
    }
    Ok((
        format!("sha256:{}", hex::encode(h.finalize())),
        size,
        gz.unwrap_or(false),
    ))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CtrdError::Io {
            context: "background task".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

/// Only the file name part of a path found in an archive, checked to stay inside `root`.
fn archive_path(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(CtrdError::InvalidImage(format!(
            "archive path {rel:?} escapes the archive"
        )));
    }
    Ok(root.join(p))
}

fn blob_path(root: &Path, digest: &str) -> Result<PathBuf> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| CtrdError::InvalidImage(format!("bad digest {digest:?}")))?;
    if !alg.chars().all(|c| c.is_ascii_alphanumeric())
        || !hex.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(CtrdError::InvalidImage(format!("bad digest {digest:?}")));
    }
    Ok(root.join("blobs").join(alg).join(hex))
}

impl Client {
    /// All images in the namespace.
    pub async fn list_images(&self) -> Result<Vec<ImageSummary>> {
        let images = self.images();
        let r = self
            .retry("Images.List", || {
                let mut c = images.clone();
                let req = self.req(ListImagesRequest { filters: vec![] });
                async move { c.list(req).await }
            })
            .await?;
        Ok(r.images.into_iter().map(summary).collect())
    }

    pub(crate) async fn get_image(&self, name: &str) -> Result<Option<Image>> {
        let images = self.images();
        let r = self
            .retry("Images.Get", || {
                let mut c = images.clone();
                let req = self.req(GetImageRequest {
                    name: name.to_string(),
                });
                async move { c.get(req).await }
            })
            .await;
        match r {
            Ok(r) => Ok(r.image),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `image tag`: image `target` names what `source` names (both normalized).
    pub async fn tag_image(&self, source: &str, target: &str) -> Result<ImageSummary> {
        let src = normalize_reference(source)?;
        let dst = normalize_reference(target)?;
        let image = self
            .get_image(&src)
            .await?
            .ok_or_else(|| CtrdError::NotFound {
                kind: "image",
                name: source.to_string(),
            })?;
        let Some(t) = image.target else {
            return Err(CtrdError::NotFound {
                kind: "image target",
                name: source.to_string(),
            });
        };
        let lease = self.create_lease("tag").await?;
        let r = self
            .put_image(
                &lease,
                &dst,
                Descriptor {
                    media_type: t.media_type,
                    digest: t.digest,
                    size: t.size,
                    annotations: HashMap::new(),
                    platform: None,
                },
            )
            .await;
        if let Err(e) = self.delete_lease(&lease).await {
            tracing::debug!("deleting lease {lease}: {e}");
        }
        r
    }

    /// Does the image exist? The reference is normalized first.
    pub async fn image_exists(&self, reference: &str) -> Result<bool> {
        let name = normalize_reference(reference)?;
        Ok(self.get_image(&name).await?.is_some())
    }

    /// Removes an image (its content goes to GC once unreferenced).
    pub async fn remove_image(&self, reference: &str) -> Result<()> {
        let name = normalize_reference(reference)?;
        let images = self.images();
        let r = self
            .retry("Images.Delete", || {
                let mut c = images.clone();
                let req = self.req(DeleteImageRequest {
                    name: name.clone(),
                    sync: false,
                    target: None,
                });
                async move { c.delete(req).await }
            })
            .await;
        match r {
            Err(e) if e.is_not_found() => Err(CtrdError::NotFound {
                kind: "image",
                name,
            }),
            r => r.map(|_| ()),
        }
    }

    /// Resolves an image to its platform manifest and config document.
    async fn resolve(&self, reference: &str) -> Result<(String, Manifest, ConfigDoc)> {
        let name = normalize_reference(reference)?;
        let img = self
            .get_image(&name)
            .await?
            .ok_or_else(|| CtrdError::NotFound {
                kind: "image",
                name: name.clone(),
            })?;
        let mut target = img
            .target
            .ok_or_else(|| CtrdError::InvalidImage(format!("image {name} has no target")))?;
        if is_index(&target.media_type) {
            let index: Index = parse_json(&self.read_blob(&target.digest).await?, "image index")?;
            let d = pick_platform(&index)?;
            target.media_type = d.media_type;
            target.digest = d.digest;
        }
        let manifest: Manifest =
            parse_json(&self.read_blob(&target.digest).await?, "image manifest")?;
        let config: ConfigDoc = parse_json(
            &self.read_blob(&manifest.config.digest).await?,
            "image config",
        )?;
        Ok((name, manifest, config))
    }

    /// An image's documents for `image inspect` and disk usage.
    pub async fn image_details(&self, reference: &str) -> Result<ImageDetails> {
        let name = normalize_reference(reference)?;
        let img = self
            .get_image(&name)
            .await?
            .ok_or_else(|| CtrdError::NotFound {
                kind: "image",
                name: name.clone(),
            })?;
        let summary = summary(img);
        let mut blobs = Vec::new();
        let (mut digest, mut size) = (summary.digest.clone(), summary.size);
        if is_index(&summary.media_type) {
            blobs.push((digest.clone(), size));
            let index: Index = parse_json(&self.read_blob(&digest).await?, "image index")?;
            let d = pick_platform(&index)?;
            digest = d.digest;
            size = d.size;
        }
        blobs.push((digest.clone(), size));
        let manifest: Manifest = parse_json(&self.read_blob(&digest).await?, "image manifest")?;
        let config: serde_json::Value = parse_json(
            &self.read_blob(&manifest.config.digest).await?,
            "image config",
        )?;
        blobs.push((manifest.config.digest.clone(), manifest.config.size));
        blobs.extend(manifest.layers.iter().map(|l| (l.digest.clone(), l.size)));
        Ok(ImageDetails {
            summary,
            manifest_digest: digest,
            config_digest: manifest.config.digest,
            config,
            blobs,
        })
    }

    /// The process settings of an image.
    pub async fn image_config(&self, reference: &str) -> Result<ImageConfig> {
        let (_, _, config) = self.resolve(reference).await?;
        Ok(config.config.map(ImageConfig::from).unwrap_or_default())
    }

    /// The committed snapshot a container of this image starts from (its top chain ID);
    /// unpacks the image first if its snapshots are missing.
    pub(crate) async fn image_snapshot_parent(&self, reference: &str) -> Result<String> {
        let (_, manifest, config) = self.resolve(reference).await?;
        let top = chain_ids(&config.rootfs.diff_ids)
            .last()
            .cloned()
            .ok_or_else(|| CtrdError::InvalidImage(format!("image {reference} has no layers")))?;
        if !self.snapshot_exists(&top).await? {
            let lease = self.create_lease("unpack").await?;
            let r = self
                .unpack_layers(
                    &lease,
                    &manifest.layers,
                    &config.rootfs.diff_ids,
                    &no_progress,
                )
                .await;
            self.delete_lease(&lease).await?;
            r?;
        }
        Ok(top)
    }

    /// Creates the image `name` pointing at `target`, or repoints an existing one.
    pub(crate) async fn put_image(
        &self,
        lease: &str,
        name: &str,
        target: Descriptor,
    ) -> Result<ImageSummary> {
        let image = Image {
            name: name.to_string(),
            labels: HashMap::new(),
            target: Some(containerd_client::types::Descriptor {
                media_type: target.media_type,
                digest: target.digest,
                size: target.size,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let req = self.req_leased(
            CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            },
            lease,
        )?;
        let created = match self.images().create(req).await {
            Ok(r) => r.into_inner().image,
            Err(s) if s.code() == Code::AlreadyExists => {
                let req = self.req_leased(
                    UpdateImageRequest {
                        image: Some(image),
                        update_mask: None,
                        source_date_epoch: None,
                    },
                    lease,
                )?;
                self.images()
                    .update(req)
                    .await
                    .map_err(|s| CtrdError::grpc("Images.Update", s))?
                    .into_inner()
                    .image
            }
            Err(s) => return Err(CtrdError::grpc("Images.Create", s)),
        };
        created.map(summary).ok_or_else(|| {
            CtrdError::InvalidImage(format!("containerd returned no image for {name}"))
        })
    }

    /// Writes a manifest (and its config) whose layers are already in the store, names it,
    /// unpacks it.
    async fn finish_image(
        &self,
        lease: &str,
        names: &[String],
        manifest: &Manifest,
        config_bytes: Vec<u8>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<ImageSummary>> {
        let config: ConfigDoc = parse_json(&config_bytes, "image config")?;
        progress(Progress::Writing {
            digest: manifest.config.digest.clone(),
            size: manifest.config.size,
        });
        self.write_blob(
            lease,
            &manifest.config.digest,
            manifest.config.size,
            BlobSource::Bytes(config_bytes),
            config_gc_labels(&config.rootfs.diff_ids),
        )
        .await?;
        let manifest_bytes = to_json(manifest, "manifest")?;
        let manifest_desc = Descriptor {
            media_type: MEDIA_OCI_MANIFEST.to_string(),
            digest: sha256_digest(&manifest_bytes),
            size: manifest_bytes.len() as i64,
            ..Default::default()
        };
        self.write_blob(
            lease,
            &manifest_desc.digest,
            manifest_desc.size,
            BlobSource::Bytes(manifest_bytes),
            manifest_gc_labels(manifest),
        )
        .await?;
        self.unpack_layers(lease, &manifest.layers, &config.rootfs.diff_ids, progress)
            .await?;
        let mut out = Vec::new();
        for name in names {
            let s = self.put_image(lease, name, manifest_desc.clone()).await?;
            progress(Progress::Done {
                name: s.name.clone(),
            });
            out.push(s);
        }
        Ok(out)
    }

    /// Turns directory `dir` into a one-layer image named `reference` with process settings
    /// `config`, and unpacks it so it can run.
    pub async fn import_rootfs(
        &self,
        dir: &Path,
        reference: &str,
        config: ImageConfig,
    ) -> Result<ImageSummary> {
        self.import_rootfs_with_progress(dir, reference, config, &no_progress)
            .await
    }

    /// [`Client::import_rootfs`] reporting progress.
    pub async fn import_rootfs_with_progress(
        &self,
        dir: &Path,
        reference: &str,
        config: ImageConfig,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<ImageSummary> {
        let name = normalize_reference(reference)?;
        progress(Progress::Packing);
        let d = dir.to_path_buf();
        let layer = blocking(move || pack_layer(&d)).await?;
        let doc = ConfigDoc {
            architecture: host_arch().to_string(),
            os: "linux".to_string(),
            config: Some(ConfigSection::from(&config)),
            rootfs: RootFs {
                kind: "layers".to_string(),
                diff_ids: vec![layer.diff_id.clone()],
            },
        };
        let config_bytes = to_json(&doc, "image config")?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_MANIFEST.to_string()),
            config: Descriptor {
                media_type: MEDIA_OCI_CONFIG.to_string(),
                digest: sha256_digest(&config_bytes),
                size: config_bytes.len() as i64,
                ..Default::default()
            },
            layers: vec![Descriptor {
                media_type: MEDIA_OCI_LAYER_GZIP.to_string(),
                digest: layer.digest.clone(),
                size: layer.size,
                ..Default::default()
            }],
        };
        let lease = self.create_lease("import").await?;
        let result = async {
            progress(Progress::Writing {
                digest: layer.digest.clone(),
                size: layer.size,
            });
            let mut labels = HashMap::new();
            labels.insert(
                "containerd.io/uncompressed".to_string(),
                layer.diff_id.clone(),
            );
            self.write_blob(
                &lease,
                &layer.digest,
                layer.size,
                BlobSource::File(layer.file.path().to_path_buf()),
                labels,
            )
            .await?;
            self.finish_image(
                &lease,
                std::slice::from_ref(&name),
                &manifest,
                config_bytes,
                progress,
            )
            .await
        }
        .await;
        self.delete_lease(&lease).await?;
        let mut images = result?;
        images
            .pop()
            .ok_or_else(|| CtrdError::InvalidImage(format!("no image created for {name}")))
    }

    /// Imports an OCI image layout tar or a `docker save` tar (gzipped or not) and unpacks
    /// every named image in it.
    pub async fn import_archive(&self, path: &Path) -> Result<Vec<ImageSummary>> {
        self.import_archive_with_progress(path, &no_progress).await
    }

    /// [`Client::import_archive`] reporting progress.
    pub async fn import_archive_with_progress(
        &self,
        path: &Path,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<ImageSummary>> {
        let p = path.to_path_buf();
        let dir = blocking(move || extract_archive(&p)).await?;
        let root = dir.path().to_path_buf();
        let lease = self.create_lease("import").await?;
        let result = if root.join("index.json").is_file() {
            self.import_oci_layout(&lease, &root, progress).await
        } else if root.join("manifest.json").is_file() {
            self.import_docker_save(&lease, &root, progress).await
        } else {
            Err(CtrdError::InvalidImage(format!(
                "{} is neither an OCI image layout (index.json) nor a docker save archive (manifest.json)",
                path.display()
            )))
        };
        self.delete_lease(&lease).await?;
        drop(dir);
        let images = result?;
        if images.is_empty() {
            return Err(CtrdError::InvalidImage(format!(
                "{} contains no named image (no org.opencontainers.image.ref.name annotation or RepoTags)",
                path.display()
            )));
        }
        Ok(images)
    }

    async fn write_layout_blob(
        &self,
        lease: &str,
        root: &Path,
        desc: &Descriptor,
        labels: HashMap<String, String>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<()> {
        let path = archive_file(
            root,
            &blob_path(root, &desc.digest)?,
            &format!("blob {}", desc.digest),
        )?;
        let size = std::fs::metadata(&path)
            .map_err(|e| CtrdError::io(format!("blob {} in archive", desc.digest), e))?
            .len() as i64;
        if size != desc.size {
            return Err(CtrdError::InvalidImage(format!(
                "blob {} has {size} bytes, its descriptor says {}",
                desc.digest, desc.size
            )));
        }
        progress(Progress::Writing {
            digest: desc.digest.clone(),
            size,
        });
        self.write_blob(lease, &desc.digest, size, BlobSource::File(path), labels)
            .await
    }

    fn read_layout_doc(root: &Path, digest: &str) -> Result<Vec<u8>> {
        let path = blob_path(root, digest)?;
        let data = read_archive_doc(root, &path, &format!("blob {digest}"))?;
        let actual = sha256_digest(&data);
        if actual != digest {
            return Err(CtrdError::DigestMismatch {
                what: "archive blob".into(),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(data)
    }

    async fn import_oci_layout(
        &self,
        lease: &str,
        root: &Path,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<ImageSummary>> {
        let index: Index = parse_json(
            &read_archive_doc(root, &root.join("index.json"), "index.json")?,
            "index.json",
        )?;
        let mut out = Vec::new();
        for entry in &index.manifests {
            let name = entry
                .annotations
                .get("io.containerd.image.name")
                .or_else(|| entry.annotations.get("org.opencontainers.image.ref.name"));
            let Some(name) = name else {
                tracing::warn!(digest = %entry.digest, "skipping unnamed manifest in OCI layout");
                continue;
            };
            let name = normalize_reference(name)?;
            // Resolve to this platform's manifest, writing index documents on the way.
            let mut target = entry.clone();
            if is_index(&target.media_type) {
                let bytes = Self::read_layout_doc(root, &target.digest)?;
                let idx: Index = parse_json(&bytes, "image index")?;
                let chosen = pick_platform(&idx)?;
                let manifest = self
                    .import_layout_manifest(lease, root, &chosen, progress)
                    .await?;
                let mut labels = HashMap::new();
                for (i, m) in idx.manifests.iter().enumerate() {
                    if blob_path(root, &m.digest)?.is_file() {
                        labels.insert(
                            format!("containerd.io/gc.ref.content.m.{i}"),
                            m.digest.clone(),
                        );
                    }
                }
                self.write_layout_blob(lease, root, &target, labels, progress)
                    .await?;
                let _ = manifest;
            } else {
                self.import_layout_manifest(lease, root, &target, progress)
                    .await?;
            }
            target.annotations.clear();
            target.platform = None;
            let s = self.put_image(lease, &name, target).await?;
            progress(Progress::Done {
                name: s.name.clone(),
            });
            out.push(s);
        }
        Ok(out)
    }

    /// Writes a manifest and its blobs from an OCI layout and unpacks it.
    async fn import_layout_manifest(
        &self,
        lease: &str,
        root: &Path,
        desc: &Descriptor,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Manifest> {
        let bytes = Self::read_layout_doc(root, &desc.digest)?;
        let manifest: Manifest = parse_json(&bytes, "image manifest")?;
        let config_bytes = Self::read_layout_doc(root, &manifest.config.digest)?;
        let config: ConfigDoc = parse_json(&config_bytes, "image config")?;
        for layer in &manifest.layers {
            self.write_layout_blob(lease, root, layer, HashMap::new(), progress)
                .await?;
        }
        self.write_layout_blob(
            lease,
            root,
            &manifest.config,
            config_gc_labels(&config.rootfs.diff_ids),
            progress,
        )
        .await?;
        self.write_layout_blob(lease, root, desc, manifest_gc_labels(&manifest), progress)
            .await?;
        self.unpack_layers(lease, &manifest.layers, &config.rootfs.diff_ids, progress)
            .await?;
        Ok(manifest)
    }

    async fn import_docker_save(
        &self,
        lease: &str,
        root: &Path,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<ImageSummary>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = parse_json(
            &read_archive_doc(root, &root.join("manifest.json"), "manifest.json")?,
            "manifest.json",
        )?;
        let mut out = Vec::new();
        for entry in entries {
            let names: Vec<String> = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| normalize_reference(t))
                .collect::<Result<_>>()?;
            if names.is_empty() {
                tracing::warn!(config = %entry.config, "skipping untagged image in docker archive");
                continue;
            }
            let config_path = archive_path(root, &entry.config)?;
            let config_bytes = read_archive_doc(root, &config_path, &entry.config)?;
            let mut layers = Vec::new();
            for rel in &entry.layers {
                let path = archive_file(root, &archive_path(root, rel)?, &format!("layer {rel}"))?;
                let p = path.clone();
                let (digest, size, gz) = blocking(move || hash_file(&p)).await?;
                let desc = Descriptor {
                    media_type: if gz {
                        MEDIA_OCI_LAYER_GZIP
                    } else {
                        MEDIA_OCI_LAYER
                    }
                    .to_string(),
                    digest,
                    size,
                    ..Default::default()
                };
                progress(Progress::Writing {
                    digest: desc.digest.clone(),
                    size,
                });
                self.write_blob(
                    lease,
                    &desc.digest,
                    size,
                    BlobSource::File(path),
                    HashMap::new(),
                )
                .await?;
                layers.push(desc);
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(MEDIA_OCI_MANIFEST.to_string()),
                config: Descriptor {
                    media_type: MEDIA_OCI_CONFIG.to_string(),
                    digest: sha256_digest(&config_bytes),
                    size: config_bytes.len() as i64,
                    ..Default::default()
                },
                layers,
            };
            out.extend(
                self.finish_image(lease, &names, &manifest, config_bytes, progress)
                    .await?,
            );
        }
        Ok(out)
    }
}

/// The largest JSON document (manifest.json, index.json, a manifest or config) read from an
/// archive.
const MAX_ARCHIVE_DOC: u64 = 16 << 20;

/// Extracts an (optionally gzipped) tar into a temporary directory.
///
/// The archive comes from the user, so only what an image archive holds is unpacked: regular
/// files, folders, and relative symbolic links that stay inside the archive (`docker save`
/// links duplicate and legacy layer paths to `blobs/`). A link to a host file or device, a
/// hard link, a device or a FIFO is refused with the entry's name, before anything is read
/// through it.
fn extract_archive(path: &Path) -> Result<tempfile::TempDir> {
    let ctx = |e| CtrdError::io(format!("read archive {}", path.display()), e);
    let meta = std::fs::metadata(path).map_err(ctx)?;
    if !meta.is_file() {
        return Err(CtrdError::InvalidImage(format!(
            "{} is not a regular file (an image archive is a tar file)",
            path.display()
        )));
    }
    let mut f = std::fs::File::open(path).map_err(ctx)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(ctx)?;
    let f = std::fs::File::open(path).map_err(ctx)?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)))
    } else {
        Box::new(std::io::BufReader::new(f))
    };
    let dir = tempfile::TempDir::new().map_err(|e| CtrdError::io("create temp dir", e))?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(ctx)? {
        let mut entry = entry.map_err(ctx)?;
        let name = entry.path().map_err(ctx)?.display().to_string();
        let refuse = |what: String| {
            CtrdError::InvalidImage(format!(
                "{}: entry {name:?} {what}; an image archive holds only regular files, \
                 folders and links inside itself",
                path.display()
            ))
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => {}
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(ctx)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let entry_path = entry.path().map_err(ctx)?.into_owned();
                if !link_stays_inside(&entry_path, &target) {
                    return Err(refuse(format!(
                        "is a symbolic link to {}, outside the archive",
                        target.display()
                    )));
                }
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            tar::EntryType::Link => return Err(refuse("is a hard link".into())),
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refuse("is a device".into()))
            }
            tar::EntryType::Fifo => return Err(refuse("is a FIFO".into())),
            other => return Err(refuse(format!("has unsupported type {other:?}"))),
        }
        if !entry.unpack_in(dir.path()).map_err(ctx)? {
            return Err(refuse("escapes the archive".into()));
        }
    }
    Ok(dir)
}

/// Whether a symbolic link at `entry` (a path inside the archive) pointing to `target` stays
/// inside the archive, judged lexically.
fn link_stays_inside(entry: &Path, target: &Path) -> bool {
    use std::path::Component;
    if target.as_os_str().is_empty() || target.is_absolute() {
        return false;
    }
    let mut depth: Vec<&std::ffi::OsStr> = Vec::new();
    let parent = entry.parent().unwrap_or(Path::new(""));
    for c in parent.components().chain(target.components()) {
        match c {
            Component::Normal(n) => depth.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// A file the import reads from the extracted archive: it must resolve (through any links)
/// to a regular file inside `root`.
fn archive_file(root: &Path, path: &Path, what: &str) -> Result<PathBuf> {
    let bad = |why: &str| CtrdError::InvalidImage(format!("{what} in the archive {why}"));
    let real_root = std::fs::canonicalize(root).map_err(|e| CtrdError::io("archive folder", e))?;
    let real = std::fs::canonicalize(path).map_err(|e| CtrdError::io(what.to_string(), e))?;
    if !real.starts_with(&real_root) {
        return Err(bad("points outside the archive"));
    }
    let meta = std::fs::metadata(&real).map_err(|e| CtrdError::io(what.to_string(), e))?;
    if !meta.is_file() {
        return Err(bad("is not a regular file"));
    }
    Ok(real)
}

/// A JSON document of the archive, at most [`MAX_ARCHIVE_DOC`] bytes.
fn read_archive_doc(root: &Path, path: &Path, what: &str) -> Result<Vec<u8>> {
    let real = archive_file(root, path, what)?;
    let f = std::fs::File::open(&real).map_err(|e| CtrdError::io(what.to_string(), e))?;
    let mut data = Vec::new();
    f.take(MAX_ARCHIVE_DOC + 1)
        .read_to_end(&mut data)
        .map_err(|e| CtrdError::io(what.to_string(), e))?;
    if data.len() as u64 > MAX_ARCHIVE_DOC {
        return Err(CtrdError::InvalidImage(format!(
            "{what} in the archive is larger than {MAX_ARCHIVE_DOC} bytes"
        )));
    }
    Ok(data)
}

impl Client {
    /// `image save`: `references` as one archive written to `out`, readable both as an OCI
    /// image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) and as a `docker save`
    /// archive (`manifest.json` naming the same blobs), as docker 25 writes it. Each image is
    /// saved with this platform's manifest. Returns the names saved.
    pub async fn save_images(
        &self,
        references: &[String],
        out: Box<dyn std::io::Write + Send>,
    ) -> Result<Vec<String>> {
        let stage = tempfile::tempdir()
            .map_err(|e| CtrdError::io("making a folder to stage the archive", e))?;
        let blobs = stage.path().join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| CtrdError::io("staging blobs", e))?;
        let mut names = Vec::new();
        let mut index_entries = Vec::new();
        let mut docker_entries: Vec<serde_json::Value> = Vec::new();
        let mut saved: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for r in references {
            let d = self.image_details(r).await?;
            let name = d.summary.name.clone();
            if names.contains(&name) {
                continue;
            }
            // The platform manifest, config and layers (an index's other platforms are
            // not in this content store).
            let skip = usize::from(d.summary.digest != d.manifest_digest);
            for (digest, _) in d.blobs.iter().skip(skip) {
                if saved.insert(digest.clone()) {
                    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
                        CtrdError::InvalidImage(format!("blob {digest} is not sha256"))
                    })?;
                    self.copy_blob_to_file(digest, &blobs.join(hex)).await?;
                }
            }
            let manifest_size = d.blobs[skip].1;
            let manifest_media = if skip == 1 {
                // The platform manifest's own media type, from the document.
                let doc: serde_json::Value =
                    parse_json(&self.read_blob(&d.manifest_digest).await?, "image manifest")?;
                doc["mediaType"]
                    .as_str()
                    .unwrap_or(MEDIA_OCI_MANIFEST)
                    .to_string()
            } else {
                d.summary.media_type.clone()
            };
            let tag = name
                .rsplit_once(':')
                .filter(|(_, t)| !t.contains('/'))
                .map(|(_, t)| t.to_string())
                .unwrap_or_else(|| "latest".into());
            index_entries.push(serde_json::json!({
                "mediaType": manifest_media,
                "digest": d.manifest_digest,
                "size": manifest_size,
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }));
            let path_of = |digest: &str| {
                format!(
                    "blobs/sha256/{}",
                    digest.strip_prefix("sha256:").unwrap_or(digest)
                )
            };
            let layers: Vec<String> = d
                .blobs
                .iter()
                .skip(skip + 2)
                .map(|(dg, _)| path_of(dg))
                .collect();
            match docker_entries
                .iter_mut()
                .find(|e| e["Config"] == path_of(&d.config_digest))
            {
                Some(e) => {
                    if let Some(tags) = e["RepoTags"].as_array_mut() {
                        tags.push(name.clone().into());
                    }
                }
                None => docker_entries.push(serde_json::json!({
                    "Config": path_of(&d.config_digest),
                    "RepoTags": [name],
                    "Layers": layers,
                })),
            }
            names.push(name);
        }
        let write = |file: &str, v: &serde_json::Value| {
            std::fs::write(
                stage.path().join(file),
                serde_json::to_vec(v).unwrap_or_default(),
            )
            .map_err(|e| CtrdError::io(format!("staging {file}"), e))
        };
        write(
            "oci-layout",
            &serde_json::json!({"imageLayoutVersion": "1.0.0"}),
        )?;
        write(
            "index.json",
            &serde_json::json!({
                "schemaVersion": 2,
                "mediaType": MEDIA_OCI_INDEX,
                "manifests": index_entries,
            }),
        )?;
        write("manifest.json", &serde_json::Value::Array(docker_entries))?;
        let root = stage.path().to_path_buf();
        blocking(move || {
            let mut tar = tar::Builder::new(out);
            tar.mode(tar::HeaderMode::Deterministic);
            let io = |e| CtrdError::io("writing the archive", e);
            for f in ["oci-layout", "index.json", "manifest.json"] {
                tar.append_path_with_name(root.join(f), f).map_err(io)?;
            }
            let mut blobs: Vec<_> = std::fs::read_dir(root.join("blobs/sha256"))
                .map_err(io)?
                .flatten()
                .map(|e| e.file_name())
                .collect();
            blobs.sort();
            tar.append_dir("blobs", root.join("blobs")).map_err(io)?;
            tar.append_dir("blobs/sha256", root.join("blobs/sha256"))
                .map_err(io)?;
            for b in blobs {
                let rel = format!("blobs/sha256/{}", b.to_string_lossy());
                tar.append_path_with_name(root.join(&rel), &rel)
                    .map_err(io)?;
            }
            tar.into_inner().and_then(|mut w| w.flush()).map_err(io)?;
            Ok(())
        })
        .await?;
        drop(stage);
        Ok(names)
    }
}

impl Client {
    /// `image load` from a stream (stdin): spooled to a temporary file, then imported as
    /// [`Client::import_archive_with_progress`] does.
    pub async fn import_archive_stream(
        &self,
        mut input: Box<dyn std::io::Read + Send>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<ImageSummary>> {
        let spool = blocking(move || {
            let mut f = tempfile::NamedTempFile::new()
                .map_err(|e| CtrdError::io("making a file to read the archive into", e))?;
            std::io::copy(&mut input, f.as_file_mut())
                .map_err(|e| CtrdError::io("reading the archive", e))?;
            Ok(f)
        })
        .await?;
        self.import_archive_with_progress(spool.path(), progress)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(normalize_reference("busybox").unwrap(), "busybox:latest");
        assert_eq!(normalize_reference("a/b:1").unwrap(), "a/b:1");
        assert_eq!(
            normalize_reference("localhost:5000/b").unwrap(),
            "localhost:5000/b:latest"
        );
        assert_eq!(normalize_reference("a@sha256:00").unwrap(), "a@sha256:00");
        assert!(normalize_reference("").is_err());
        assert!(normalize_reference("a b").is_err());
        assert!(normalize_reference("a:").is_err());
    }

    #[test]
    fn config_roundtrip() {
        let c = ImageConfig {
            entrypoint: vec!["/bin/sh".into()],
            cmd: vec!["-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            working_dir: "/tmp".into(),
            user: "65534".into(),
            exposed_ports: vec!["80/tcp".into()],
            labels: [("a".to_string(), "b".to_string())].into_iter().collect(),
            stop_signal: Some("SIGINT".into()),
        };
        let json = serde_json::to_string(&ConfigSection::from(&c)).unwrap();
        assert!(json.contains("\"Entrypoint\""), "{json}");
        let back: ConfigSection = serde_json::from_str(&json).unwrap();
        assert_eq!(ImageConfig::from(back), c);
    }

    #[test]
    fn docker_null_fields() {
        let s: ConfigSection = serde_json::from_str(r#"{"Cmd":null,"Env":["A=1"]}"#).unwrap();
        let c = ImageConfig::from(s);
        assert!(c.cmd.is_empty());
        assert_eq!(c.env, vec!["A=1"]);
    }

    fn tar_with(add: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> tempfile::NamedTempFile {
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b);
        let data = b.into_inner().unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        f
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_entry_type(kind);
        b.append_link(&mut h, name, target).unwrap();
    }

    #[test]
    fn archives_hold_only_files_folders_and_inner_links() {
        // docker save's legacy layer paths link into blobs/: fine
        let ok = tar_with(|b| {
            file(b, "blobs/sha256/aa", b"layer");
            link(
                b,
                tar::EntryType::Symlink,
                "abc/layer.tar",
                "../blobs/sha256/aa",
            );
        });
        let dir = extract_archive(ok.path()).unwrap();
        let real = archive_file(
            dir.path(),
            &dir.path().join("abc/layer.tar"),
            "layer abc/layer.tar",
        )
        .unwrap();
        assert_eq!(std::fs::read(real).unwrap(), b"layer");
        for (kind, target, want) in [
            (
                tar::EntryType::Symlink,
                "/etc/passwd",
                "is a symbolic link to /etc/passwd, outside the archive",
            ),
            (
                tar::EntryType::Symlink,
                "/dev/zero",
                "is a symbolic link to /dev/zero, outside the archive",
            ),
            (
                tar::EntryType::Symlink,
                "../../../etc/passwd",
                "outside the archive",
            ),
            (tar::EntryType::Link, "blobs/x", "is a hard link"),
        ] {
            let bad = tar_with(|b| {
                file(b, "manifest.json", b"[]");
                link(b, kind, "abc/layer.tar", target);
            });
            let e = extract_archive(bad.path()).unwrap_err().to_string();
            assert!(
                e.contains("entry \"abc/layer.tar\"") && e.contains(want),
                "{e}"
            );
        }
        let e = extract_archive(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a regular file"), "{e}");
    }

    #[test]
    fn links_are_judged_lexically() {
        let inside = |e: &str, t: &str| link_stays_inside(Path::new(e), Path::new(t));
        assert!(inside("a/layer.tar", "../blobs/sha256/x"));
        assert!(inside("layer.tar", "blobs/x"));
        assert!(!inside("layer.tar", "../x"));
        assert!(!inside("a/b", "../../x"));
        assert!(!inside("a/b", "/x"));
        assert!(!inside("a/b", ""));
    }

    #[test]
    fn blob_paths_are_checked() {
        assert!(blob_path(Path::new("/x"), "sha256:../../etc").is_err());
        assert!(archive_path(Path::new("/x"), "../y").is_err());
        assert!(archive_path(Path::new("/x"), "/y").is_err());
    }
}
