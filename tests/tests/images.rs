//! Image import (directory, OCI layout tar, docker save tar), list, config and remove.

use std::path::Path;

use aac_runtime::containerd::{Client, CreateRequest, CtrdError, Stdio};
use aac_runtime::image_config::ImageConfig;
use aac_tests::*;
use sha2::Digest;

fn sha(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An uncompressed layer tar of a busybox rootfs with /etc/origin = `origin`.
fn layer(origin: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path());
    std::fs::write(dir.path().join("etc/origin"), format!("{origin}\n")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir.path()).unwrap();
    b.into_inner().unwrap()
}

fn config_json(diff_id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin", "FROM_ARCHIVE=1"], "WorkingDir": "/tmp"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    }))
    .unwrap()
}

fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, path, data).unwrap();
}

/// A gzipped OCI image layout tar holding `name`.
fn oci_layout_tar(name: &str) -> Vec<u8> {
    let layer = layer("oci");
    let diff_id = sha(&layer);
    let layer_gz = gzip(&layer);
    let config = config_json(&diff_id);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", sha(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{}", sha(&layer_gz)), "size": layer_gz.len()}],
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha(&manifest)),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    }))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add(&mut b, "index.json", &index);
    for blob in [&layer_gz, &config, &manifest] {
        add(&mut b, &format!("blobs/sha256/{}", sha(blob)), blob);
    }
    gzip(&b.into_inner().unwrap())
}

/// An uncompressed `docker save` tar holding `name`.
fn docker_save_tar(name: &str) -> Vec<u8> {
    let layer = layer("docker");
    let diff_id = sha(&layer);
    let config = config_json(&diff_id);
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{}.json", sha(&config)),
        "RepoTags": [name],
        "Layers": [format!("{diff_id}/layer.tar")],
    }]))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "manifest.json", &manifest);
    add(&mut b, &format!("{}.json", sha(&config)), &config);
    add(&mut b, &format!("{diff_id}/layer.tar"), &layer);
    b.into_inner().unwrap()
}

/// Runs `cat /etc/origin` in `image` and returns the output.
async fn run_origin(c: &Client, image: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = output_file(tmp.path(), "out");
    let id = unique_id("img");
    c.create(CreateRequest {
        id: id.clone(),
        image_ref: image.to_string(),
        spec: spec(&id, &["cat", "/etc/origin"]),
        labels: Default::default(),
        stdio: Stdio {
            stdout: Some(out.display().to_string()),
            ..Default::default()
        },
        systemd_cgroup: false,
    })
    .await
    .unwrap();
    c.start(&id).await.unwrap();
    assert_eq!(c.wait(&id).await.unwrap().code, 0);
    c.delete(&id).await.unwrap();
    assert_eq!(leftovers(c, &id).await, Leftovers::default());
    std::fs::read_to_string(out).unwrap()
}

async fn import_file(c: &Client, data: Vec<u8>, name: &str) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join(name);
    std::fs::write(&p, data).unwrap();
    c.import_archive(&p)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect()
}

#[tokio::test]
async fn import_oci_layout_and_run() {
    let c = client().await;
    let names = import_file(&c, oci_layout_tar("oci-import:v1"), "oci.tar.gz").await;
    assert_eq!(names, vec!["oci-import:v1"]);
    let cfg = c.image_config("oci-import:v1").await.unwrap();
    assert_eq!(cfg.env, vec!["PATH=/bin", "FROM_ARCHIVE=1"]);
    assert_eq!(cfg.working_dir, "/tmp");
    assert_eq!(run_origin(&c, "oci-import:v1").await, "oci\n");
}

#[tokio::test]
async fn import_docker_save_and_run() {
    let c = client().await;
    let names = import_file(&c, docker_save_tar("docker-import"), "docker.tar").await;
    assert_eq!(names, vec!["docker-import:latest"]);
    assert_eq!(run_origin(&c, "docker-import").await, "docker\n");
    // Importing again is idempotent.
    let again = import_file(&c, docker_save_tar("docker-import"), "docker.tar").await;
    assert_eq!(again, vec!["docker-import:latest"]);
    assert_eq!(run_origin(&c, "docker-import:latest").await, "docker\n");
}

#[tokio::test]
async fn garbage_archive_is_rejected() {
    let c = client().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "hello.txt", b"hi");
    let p = tmp.path().join("x.tar");
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    let err = c.import_archive(&p).await.unwrap_err();
    assert!(matches!(err, CtrdError::InvalidImage(_)), "{err:?}");
    let err = c
        .import_archive(Path::new("/nonexistent.tar"))
        .await
        .unwrap_err();
    assert!(matches!(err, CtrdError::Io { .. }), "{err:?}");
}

#[tokio::test]
async fn list_config_remove() {
    let c = client().await;
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path());
    std::fs::write(dir.path().join("etc/origin"), "dir\n").unwrap();
    let config = ImageConfig {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo hi".into()],
        env: vec!["PATH=/bin".into()],
        user: "65534".into(),
        exposed_ports: vec!["8080/tcp".into()],
        stop_signal: Some("SIGINT".into()),
        ..Default::default()
    };
    let s = c
        .import_rootfs(dir.path(), "aac-small", config.clone())
        .await
        .unwrap();
    assert_eq!(s.name, "aac-small:latest");
    assert!(c.image_exists("aac-small").await.unwrap());
    assert!(c
        .list_images()
        .await
        .unwrap()
        .iter()
        .any(|i| i.name == "aac-small:latest" && i.digest == s.digest));
    assert_eq!(c.image_config("aac-small:latest").await.unwrap(), config);
    assert_eq!(run_origin(&c, "aac-small").await, "dir\n");
    c.remove_image("aac-small").await.unwrap();
    assert!(!c.image_exists("aac-small").await.unwrap());
    let err = c.remove_image("aac-small").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let err = c.image_config("aac-small").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}
