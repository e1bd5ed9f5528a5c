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
        let path = blob_path(root, &desc.digest)?;
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
        let data = std::fs::read(&path)
            .map_err(|e| CtrdError::io(format!("blob {digest} in archive"), e))?;
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
            &std::fs::read(root.join("index.json"))
                .map_err(|e| CtrdError::io("read index.json", e))?,
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
            &std::fs::read(root.join("manifest.json"))
                .map_err(|e| CtrdError::io("read manifest.json", e))?,
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
            let config_bytes = std::fs::read(&config_path)
                .map_err(|e| CtrdError::io(format!("read {}", entry.config), e))?;
            let mut layers = Vec::new();
            for rel in &entry.layers {
                let path = archive_path(root, rel)?;
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

/// Extracts an (optionally gzipped) tar into a temporary directory.
fn extract_archive(path: &Path) -> Result<tempfile::TempDir> {
    let ctx = |e| CtrdError::io(format!("read archive {}", path.display()), e);
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
    archive.unpack(dir.path()).map_err(ctx)?;
    Ok(dir)
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

    #[test]
    fn blob_paths_are_checked() {
        assert!(blob_path(Path::new("/x"), "sha256:../../etc").is_err());
        assert!(archive_path(Path::new("/x"), "../y").is_err());
        assert!(archive_path(Path::new("/x"), "/y").is_err());
    }
}
