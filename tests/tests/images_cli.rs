//! `image inspect`, `image prune`, `system df` and `info` end to end through the `aac` binary
//! on the private containerd. Each test works in a containerd namespace (and, where it counts
//! containers, an aac state) of its own, so what it counts and prunes is only its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use aac_tests::cli::{aac, text};
use serde_json::Value;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc and CNI)");
    false
}

/// An aac of its own on the shared private containerd: a namespace, and optionally its own
/// state folders.
struct Own {
    ns: String,
    dirs: Option<(PathBuf, PathBuf)>,
    _tmp: tempfile::TempDir,
}

impl Own {
    fn new(tag: &str, own_state: bool) -> Own {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = own_state.then(|| {
            let run = tmp.path().join("run");
            let data = tmp.path().join("data");
            std::fs::create_dir_all(&run).unwrap();
            std::fs::create_dir_all(&data).unwrap();
            (run, data)
        });
        Own {
            ns: format!("{tag}-{}", std::process::id()),
            dirs,
            _tmp: tmp,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = aac().command(args);
        c.env("AAC_NAMESPACE", &self.ns);
        if let Some((run, data)) = &self.dirs {
            c.env("AAC_RUN_DIR", run).env("AAC_DATA_DIR", data);
        }
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "aac {args:?} ({:?}): {}{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// A busybox image NAME with its own command (so its config differs from others').
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

    fn names(&self) -> Vec<String> {
        self.ok(&["images", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The content store file of blob `digest` in the private containerd.
fn blob(digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    fn walk(p: &Path, hex: &str, depth: u32) -> Option<PathBuf> {
        for e in std::fs::read_dir(p).ok()?.flatten() {
            let path = e.path();
            if e.file_name() == hex && path.to_string_lossy().contains("blobs/sha256") {
                return Some(path);
            }
            if depth < 8 && e.file_type().ok()?.is_dir() {
                if let Some(f) = walk(&path, hex, depth + 1) {
                    return Some(f);
                }
            }
        }
        None
    }
    walk(&aac_tests::env().dir, hex, 0)
}

#[test]
fn image_inspect_has_docker_shape() {
    if !root() {
        return;
    }
    let own = Own::new("ii", false);
    own.import("ii-agent:1", "/bin/sh");
    own.ok(&["image", "tag", "ii-agent:1", "ii-other:2"]);
    let out = own.ok(&["image", "inspect", "ii-agent:1"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let i = &v[0];
    // Id: the config document's digest, and the document under it is the one described
    let id = i["Id"].as_str().unwrap();
    let path = blob(id).expect("config blob of the Id");
    let config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    use sha2::Digest;
    let sum = hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap()));
    assert_eq!(id, format!("sha256:{sum}"));
    assert_eq!(i["RootFS"]["Type"], "layers");
    assert_eq!(i["RootFS"]["Layers"], config["rootfs"]["diff_ids"]);
    assert_eq!(i["Os"], "linux");
    assert_eq!(i["Architecture"], config["architecture"]);
    assert_eq!(i["Config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert!(i["Config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&Value::from("PATH=/bin")));
    // both names of the target, and digests as docker writes them
    let tags: Vec<&str> = i["RepoTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, vec!["ii-agent:1", "ii-other:2"]);
    let digest = own.ok(&["images", "--format", "{{.Name}} {{.Digest}}"]);
    let target = digest
        .lines()
        .find_map(|l| l.strip_prefix("ii-agent:1 "))
        .unwrap();
    assert_eq!(i["Digest"], target);
    assert!(i["RepoDigests"]
        .as_array()
        .unwrap()
        .contains(&Value::from(format!("ii-agent@{target}"))));
    assert!(i["Size"].as_u64().unwrap() > 0);
    // templates read the same fields
    assert_eq!(
        own.ok(&[
            "image",
            "inspect",
            "-f",
            "{{.Id}} {{index .RepoTags 1}}",
            "ii-agent:1"
        ])
        .trim(),
        format!("{id} ii-other:2")
    );
    // one missing image: an error naming it; with another found: that one printed, exit 1
    let out = own
        .command(&["image", "inspect", "ii-nope:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ii-nope"),
        "{}",
        text(&out.stderr)
    );
    let out = own
        .command(&["image", "inspect", "ii-agent:1", "ii-nope:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[test]
fn image_prune_removes_what_no_container_uses() {
    if !root() {
        return;
    }
    let own = Own::new("ip", true);
    own.import("ip-used:1", "/bin/sh");
    own.import("ip-unused:1", "/bin/true");
    own.ok(&["create", "--name", "ip-c", "--network", "none", "ip-used:1"]);
    let unused_id = serde_json::from_str::<Value>(&own.ok(&["image", "inspect", "ip-unused:1"]))
        .unwrap()[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();

    // no -f and nobody says yes: nothing happens
    let out = own.command(&["image", "prune", "-a"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(own.names().len(), 2);
    // without -a: aac's images all have names, none is dangling
    let out = own.ok(&["image", "prune", "-f"]);
    assert_eq!(out, "Total reclaimed space: 0B\n");
    assert_eq!(own.names().len(), 2);

    let out = own.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.starts_with("Deleted Images:\n"), "{out}");
    assert!(out.contains("untagged: ip-unused:1\n"), "{out}");
    // its config blob goes; the layers it shares with ip-used stay
    assert!(out.contains(&format!("deleted: {unused_id}\n")), "{out}");
    let layer = serde_json::from_str::<Value>(&own.ok(&["image", "inspect", "ip-used:1"])).unwrap()
        [0]["RootFS"]["Layers"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!out.contains(&layer), "{out}");
    assert!(!out.ends_with("Total reclaimed space: 0B\n"), "{out}");
    assert_eq!(own.names(), vec!["ip-used:1"]);
    // the container's image is still there and runs
    own.ok(&["rm", "ip-c"]);
    let out = own.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "ip-used:1",
        "echo",
        "still",
    ]);
    assert_eq!(out.trim(), "still");
}

#[test]
fn system_df_and_info_count_what_is_there() {
    if !root() {
        return;
    }
    let own = Own::new("df", true);
    own.import("df-img:1", "/bin/sh");
    // an exited container that wrote 5000 bytes, a running one, an unused volume of 1000
    own.ok(&[
        "run",
        "--name",
        "df-done",
        "--network",
        "none",
        "df-img:1",
        "sh",
        "-c",
        "head -c 5000 /dev/zero > /five",
    ]);
    own.ok(&[
        "run",
        "-d",
        "--name",
        "df-up",
        "--network",
        "none",
        "df-img:1",
        "sleep",
        "300",
    ]);
    own.ok(&["volume", "create", "df-vol"]);
    let mp = serde_json::from_str::<Value>(&own.ok(&["volume", "inspect", "df-vol"])).unwrap()[0]
        ["Mountpoint"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(Path::new(&mp).join("k"), vec![7u8; 1000]).unwrap();

    let du: Value = serde_json::from_str(&own.ok(&["system", "df", "--format", "json"])).unwrap();
    assert_eq!(du["images"]["total"], 1);
    assert_eq!(du["images"]["active"], 1);
    assert_eq!(du["images"]["reclaimable"], 0);
    let inspect: Value = serde_json::from_str(&own.ok(&["image", "inspect", "df-img:1"])).unwrap();
    assert!(du["images"]["size"].as_u64().unwrap() >= inspect[0]["Size"].as_u64().unwrap());
    assert_eq!(du["containers"]["total"], 2);
    assert_eq!(du["containers"]["active"], 1);
    // what df-done wrote is reclaimable (it is not running)
    assert!(
        du["containers"]["reclaimable"].as_u64().unwrap() >= 5000,
        "{du}"
    );
    assert_eq!(du["volumes"]["total"], 1);
    assert_eq!(du["volumes"]["active"], 0);
    assert_eq!(du["volumes"]["size"], 1000);
    assert_eq!(du["volumes"]["reclaimable"], 1000);
    // docker's table and templates
    let table = own.ok(&["system", "df"]);
    let head = table.lines().next().unwrap();
    for h in ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"] {
        assert!(head.contains(h), "{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("Local Volumes") && l.contains("1kB (100%)")),
        "{table}"
    );
    let rows = own.ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}}={{.TotalCount}}/{{.Active}}",
    ]);
    assert_eq!(
        rows,
        "Images=1/1\nContainers=2/1\nLocal Volumes=1/0\nBuild Cache=0/0\n"
    );

    // info: the same counts, and the host's facts
    let line = own.ok(&[
        "info",
        "--format",
        "{{.Containers}} {{.ContainersRunning}} {{.ContainersPaused}} {{.ContainersStopped}} {{.Images}}",
    ]);
    assert_eq!(line.trim(), "2 1 0 1 1");
    own.ok(&["pause", "df-up"]);
    let line = own.ok(&[
        "system",
        "info",
        "--format",
        "{{.ContainersRunning}} {{.ContainersPaused}}",
    ]);
    assert_eq!(line.trim(), "0 1");
    own.ok(&["unpause", "df-up"]);
    let info: Value = serde_json::from_str(&own.ok(&["info", "--format", "json"])).unwrap();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(info["KernelVersion"], release.trim());
    assert_eq!(
        info["NCPU"].as_u64().unwrap() as usize,
        std::thread::available_parallelism().unwrap().get()
    );
    let version = own.ok(&["version"]);
    let server = version
        .split("Server: containerd")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.trim().strip_prefix("Version:")))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(info["ServerVersion"], server);
    let text_info = own.ok(&["info"]);
    assert!(
        text_info.contains(" Containers: 2\n  Running: 1\n"),
        "{text_info}"
    );

    own.ok(&["rm", "-f", "df-done", "df-up"]);
    own.ok(&["volume", "rm", "df-vol"]);
}
