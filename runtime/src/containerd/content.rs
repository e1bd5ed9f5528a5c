//! Content store: writing blobs (Content.Write) and reading small documents (Content.Read).

use std::collections::HashMap;
use std::path::PathBuf;

use containerd_client::services::v1::{
    Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use tokio::io::AsyncReadExt;
use tokio_stream::StreamExt;
use tonic::Code;

use super::client::{unique_suffix, Client};
use super::error::{CtrdError, Result};

/// Size of one Content.Write chunk.
const CHUNK: usize = 1 << 20;
/// Largest JSON document (manifest, index, config) we read into memory.
const MAX_DOCUMENT: usize = 16 << 20;

/// Where a blob's bytes come from.
pub(crate) enum BlobSource {
    Bytes(Vec<u8>),
    File(PathBuf),
    /// Chunks from a producer (e.g. an HTTP download); an `Err` aborts the write before its
    /// commit, so nothing is stored.
    Stream(tokio::sync::mpsc::Receiver<Result<Vec<u8>>>),
}

/// sha256 digest string `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

impl Client {
    /// Does the content store hold `digest`?
    pub(crate) async fn blob_info(&self, digest: &str) -> Result<Option<Info>> {
        let content = self.content();
        let r = self
            .retry("Content.Info", || {
                let mut c = content.clone();
                let req = self.req(InfoRequest {
                    digest: digest.to_string(),
                });
                async move { c.info(req).await }
            })
            .await;
        match r {
            Ok(r) => Ok(r.info),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a blob of known `digest` and `size` under `lease`, with GC `labels`. A blob that
    /// exists already only gets its labels updated.
    pub(crate) async fn write_blob(
        &self,
        lease: &str,
        digest: &str,
        size: i64,
        source: BlobSource,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        self.lease_resource(lease, "content", digest).await?;
        if let Some(info) = self.blob_info(digest).await? {
            let missing: Vec<String> = labels
                .iter()
                .filter(|(k, v)| info.labels.get(*k) != Some(*v))
                .map(|(k, _)| format!("labels.{k}"))
                .collect();
            if !missing.is_empty() {
                let req = self.req_leased(
                    UpdateRequest {
                        info: Some(Info {
                            digest: digest.to_string(),
                            labels,
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask { paths: missing }),
                    },
                    lease,
                )?;
                self.content()
                    .update(req)
                    .await
                    .map_err(|s| CtrdError::grpc("Content.Update", s))?;
            }
            return Ok(());
        }

        let reference = format!("aac-{}-{}", digest.replace(':', "-"), unique_suffix());
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let expected = digest.to_string();
        let producer = tokio::spawn(async move {
            let mut offset: i64 = 0;
            let base = |action: WriteAction, offset: i64, data: Vec<u8>| WriteContentRequest {
                action: action as i32,
                r#ref: reference.clone(),
                total: size,
                expected: expected.clone(),
                offset,
                data,
                labels: HashMap::new(),
            };
            match source {
                BlobSource::Bytes(bytes) => {
                    for chunk in bytes.chunks(CHUNK) {
                        let n = chunk.len() as i64;
                        if tx
                            .send(base(WriteAction::Write, offset, chunk.to_vec()))
                            .await
                            .is_err()
                        {
                            return Ok(());
                        }
                        offset += n;
                    }
                }
                BlobSource::File(path) => {
                    let mut f = tokio::fs::File::open(&path)
                        .await
                        .map_err(|e| CtrdError::io(format!("open {}", path.display()), e))?;
                    loop {
                        let mut buf = vec![0u8; CHUNK];
                        let mut filled = 0;
                        while filled < CHUNK {
                            let n = f.read(&mut buf[filled..]).await.map_err(|e| {
                                CtrdError::io(format!("read {}", path.display()), e)
                            })?;
                            if n == 0 {
                                break;
                            }
                            filled += n;
                        }
                        if filled == 0 {
                            break;
                        }
                        buf.truncate(filled);
                        if tx
                            .send(base(WriteAction::Write, offset, buf))
                            .await
                            .is_err()
                        {
                            return Ok(());
                        }
                        offset += filled as i64;
                        if filled < CHUNK {
                            break;
                        }
                    }
                }
                BlobSource::Stream(mut chunks) => {
                    while let Some(chunk) = chunks.recv().await {
                        let chunk = chunk?;
                        if chunk.is_empty() {
                            continue;
                        }
                        let n = chunk.len() as i64;
                        if tx
                            .send(base(WriteAction::Write, offset, chunk))
                            .await
                            .is_err()
                        {
                            return Ok(());
                        }
                        offset += n;
                    }
                }
            }
            let mut commit = base(WriteAction::Commit, offset, Vec::new());
            commit.labels = labels;
            let _ = tx.send(commit).await;
            Ok::<(), CtrdError>(())
        });

        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let req = self.req_leased(stream, lease)?;
        let result = async {
            let mut responses = self
                .content()
                .write(req)
                .await
                .map_err(|s| CtrdError::grpc("Content.Write", s))?
                .into_inner();
            let mut last = None;
            while let Some(r) = responses.next().await {
                last = Some(r.map_err(|s| CtrdError::grpc("Content.Write", s))?);
            }
            Ok::<_, CtrdError>(last)
        }
        .await;
        let produced = producer.await.map_err(|e| CtrdError::Grpc {
            op: "Content.Write",
            code: Code::Internal,
            message: format!("writer task failed: {e}"),
        })?;
        produced?;
        match result {
            Ok(Some(last)) if !last.digest.is_empty() && last.digest != digest => {
                Err(CtrdError::DigestMismatch {
                    what: "written blob".into(),
                    expected: digest.to_string(),
                    actual: last.digest,
                })
            }
            Ok(_) => Ok(()),
            Err(CtrdError::Grpc {
                code: Code::AlreadyExists,
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Copies blob `digest` into the file `path` (created), checking its digest; returns
    /// its size.
    pub(crate) async fn copy_blob_to_file(
        &self,
        digest: &str,
        path: &std::path::Path,
    ) -> Result<u64> {
        use sha2::Digest;
        use std::io::Write;
        let req = self.req(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        });
        let mut stream = match self.content().read(req).await {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == Code::NotFound => {
                return Err(CtrdError::NotFound {
                    kind: "blob",
                    name: digest.to_string(),
                })
            }
            Err(s) => return Err(CtrdError::grpc("Content.Read", s)),
        };
        let io = |e| CtrdError::io(format!("writing {}", path.display()), e);
        let mut f = std::fs::File::create(path).map_err(io)?;
        let mut hasher = sha2::Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| CtrdError::grpc("Content.Read", s))?;
            hasher.update(&chunk.data);
            f.write_all(&chunk.data).map_err(io)?;
            n += chunk.data.len() as u64;
        }
        f.sync_all().map_err(io)?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if digest.starts_with("sha256:") && actual != digest {
            return Err(CtrdError::DigestMismatch {
                what: "read blob".into(),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(n)
    }

    /// Reads a small blob (manifest, index, config) completely.
    pub(crate) async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let req = self.req(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        });
        let mut stream = match self.content().read(req).await {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == Code::NotFound => {
                return Err(CtrdError::NotFound {
                    kind: "blob",
                    name: digest.to_string(),
                })
            }
            Err(s) => return Err(CtrdError::grpc("Content.Read", s)),
        };
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| CtrdError::grpc("Content.Read", s))?;
            out.extend_from_slice(&chunk.data);
            if out.len() > MAX_DOCUMENT {
                return Err(CtrdError::InvalidImage(format!(
                    "document {digest} is larger than {MAX_DOCUMENT} bytes"
                )));
            }
        }
        let actual = sha256_digest(&out);
        if digest.starts_with("sha256:") && actual != digest {
            return Err(CtrdError::DigestMismatch {
                what: "read blob".into(),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(out)
    }
}
