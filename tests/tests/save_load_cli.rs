//! `image save` / `image load` (and `save`/`load`) end to end through the `aac` binary on the
//! private containerd, in a namespace of their own: the archive is an OCI image layout and a
//! `docker save` archive at once, each blob is what its name says, and either half alone
//! loads back into images that run.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};

use aac_tests::cli::{aac, text};
use serde_json::Value;
use sha2::Digest;

struct Own {
    ns: String,
}

impl Own {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = aac().command(args);
        c.env("AAC_NAMESPACE", &self.ns);
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = self.command(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().unwrap();
        if let Some(input) = stdin {
            let mut w = child.stdin.take().unwrap();
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = w.write_all(&input);
            });
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "aac {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn import(&self, name: &str, cmd: &str) {
        let rootfs = tempfile::tempdir().unwrap();
        aac_tests::busybox_rootfs(rootfs.path());
        self.ok(&[
            "image",
            "import",
            "--rootfs",
            &rootfs.path().to_string_lossy(),
            name,
            "--cmd",
            cmd,
            "--env",
            "PATH=/bin",
        ]);
    }

    fn id(&self, name: &str) -> String {
        self.ok(&["image", "inspect", "-f", "{{.Id}}", name])
            .trim()
            .to_string()
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .ok(&["images", "-q"])
            .lines()
            .map(str::to_string)
            .collect();
        n.sort();
        n
    }
}

/// An archive's files by path.
fn entries(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut t = tar::Archive::new(archive);
    for e in t.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_dir() {
            continue;
        }
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(path, data);
    }
    out
}

/// A tar of `files` (paths in order).
fn archive(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn save_writes_both_formats_and_each_loads_back() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (containerd)");
        return;
    }
    let own = Own {
        ns: format!("sl-{}", std::process::id()),
    };
    own.import("sl-a:1", "/bin/sh");
    own.ok(&["image", "tag", "sl-a:1", "sl-b:2"]);
    own.import("sl-c:1", "/bin/true");
    let ids: Vec<String> = ["sl-a:1", "sl-c:1"].iter().map(|n| own.id(n)).collect();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.tar");
    own.ok(&[
        "image",
        "save",
        "-o",
        &file.to_string_lossy(),
        "sl-a:1",
        "sl-b:2",
        "sl-c:1",
    ]);
    let files = entries(&std::fs::read(&file).unwrap());
    // every blob is what its name says
    let blobs: Vec<&String> = files
        .keys()
        .filter(|k| k.starts_with("blobs/sha256/"))
        .collect();
    assert!(blobs.len() >= 4, "{:?}", files.keys());
    for b in &blobs {
        let sum = hex::encode(sha2::Sha256::digest(&files[*b]));
        assert_eq!(b.strip_prefix("blobs/sha256/").unwrap(), sum, "{b}");
    }
    // OCI layout: the three names, each on a manifest in the archive
    let layout: Value = serde_json::from_slice(&files["oci-layout"]).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let mut names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let d = m["digest"]
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap();
            assert!(files.contains_key(&format!("blobs/sha256/{d}")));
            m["annotations"]["io.containerd.image.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    names.sort();
    assert_eq!(names, vec!["sl-a:1", "sl-b:2", "sl-c:1"]);
    // docker save: one entry per config (sl-a and sl-b are one image), its files present
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let m = manifest.as_array().unwrap();
    assert_eq!(m.len(), 2, "{manifest}");
    for e in m {
        let config = e["Config"].as_str().unwrap();
        assert_eq!(
            &format!("sha256:{}", config.strip_prefix("blobs/sha256/").unwrap()),
            if e["RepoTags"] == serde_json::json!(["sl-c:1"]) {
                &ids[1]
            } else {
                &ids[0]
            },
            "{e}"
        );
        for l in e["Layers"].as_array().unwrap() {
            assert!(files.contains_key(l.as_str().unwrap()), "{l}");
        }
    }
    assert!(m
        .iter()
        .any(|e| e["RepoTags"] == serde_json::json!(["sl-a:1", "sl-b:2"])));

    let remove_all = || {
        for n in ["sl-a:1", "sl-b:2", "sl-c:1"] {
            let _ = own.run(&["image", "rm", n], None);
        }
        assert!(own.names().is_empty(), "{:?}", own.names());
    };
    let check_back = |names: &[&str]| {
        let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(own.names(), want);
        assert_eq!(own.id("sl-a:1"), ids[0]);
        let out = own.ok(&["run", "--rm", "--network", "none", "sl-a:1", "echo", "back"]);
        assert_eq!(out.trim(), "back");
    };

    // the whole archive
    remove_all();
    let out = own.ok(&["image", "load", "-i", &file.to_string_lossy()]);
    let mut loaded: Vec<&str> = out.lines().collect();
    loaded.sort();
    assert_eq!(
        loaded,
        vec![
            "Loaded image: sl-a:1",
            "Loaded image: sl-b:2",
            "Loaded image: sl-c:1"
        ]
    );
    check_back(&["sl-a:1", "sl-b:2", "sl-c:1"]);
    assert_eq!(own.id("sl-c:1"), ids[1]);

    // the docker half alone, from stdin
    remove_all();
    let mut docker = files.clone();
    docker.remove("index.json");
    docker.remove("oci-layout");
    let out = own.run(&["load"], Some(&archive(&docker)));
    assert!(out.status.success(), "{}", text(&out.stderr));
    check_back(&["sl-a:1", "sl-b:2", "sl-c:1"]);

    // the OCI half alone
    remove_all();
    let mut oci = files.clone();
    oci.remove("manifest.json");
    let out = own.run(&["image", "load", "-q"], Some(&archive(&oci)));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    check_back(&["sl-a:1", "sl-b:2", "sl-c:1"]);

    // `save` to stdout, piped into `load`
    let out = own.run(&["save", "sl-c:1"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    own.ok(&["image", "rm", "sl-c:1"]);
    let back = own.run(&["load"], Some(&out.stdout));
    assert_eq!(text(&back.stdout), "Loaded image: sl-c:1\n");
    assert_eq!(own.id("sl-c:1"), ids[1]);

    // bad input: 125, one line, no half-written file
    let bad = dir.path().join("bad.tar");
    let out = own.run(
        &["image", "save", "-o", &bad.to_string_lossy(), "sl-nope:1"],
        None,
    );
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        text(&out.stderr).trim_end().lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    assert!(!bad.exists());
    let out = own.run(&["image", "load", "-i", "/etc/hostname"], None);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
}

/// Loading an archive whose blobs are still in the store from an image removed a moment ago
/// (containerd's garbage collection of them still pending) keeps them: the load holds them in
/// its lease before it relies on them, so the image it records is whole. Repeated because the
/// collection runs in the background: without the lease a round or two lost a blob.
#[test]
fn load_right_after_rm_keeps_every_blob() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (containerd)");
        return;
    }
    let own = Own {
        ns: format!("slr-{}", std::process::id()),
    };
    own.import("slr:1", "/bin/true");
    let id = own.id("slr:1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one.tar");
    own.ok(&["image", "save", "-o", &file.to_string_lossy(), "slr:1"]);
    for round in 0..12 {
        own.ok(&["image", "rm", "slr:1"]);
        own.ok(&["image", "load", "-q", "-i", &file.to_string_lossy()]);
        assert_eq!(own.id("slr:1"), id, "round {round}");
    }
    let out = own.ok(&["run", "--rm", "--network", "none", "slr:1", "echo", "whole"]);
    assert_eq!(out.trim(), "whole");
    own.ok(&["image", "rm", "slr:1"]);
}
