//! Driving the real `aac` binary against the private containerd, with aac state of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{env, IMAGE, NAMESPACE};

/// aac's state for this test binary.
pub struct Aac {
    pub run_dir: PathBuf,
    pub data_dir: PathBuf,
    pub bridge: String,
}

static AAC: OnceLock<Aac> = OnceLock::new();

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Path of a workspace binary (`aac`, `aac-shim`): `$AAC_BIN_DIR`, else the profile folder
/// this test binary was built into (`target/<profile>/deps/..`), else target/debug, built if
/// missing.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("AAC_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    if let Some(p) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
    {
        return p;
    }
    let p = target_dir().join("debug").join(name);
    if !p.exists() {
        let ok = Command::new(env!("CARGO"))
            .args([
                "build",
                "-q",
                "-p",
                "aac",
                "-p",
                "aac-shim",
                "-p",
                "containerd-shim-aac-v2",
            ])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "building aac and aac-shim failed");
    }
    p
}

extern "C" fn cleanup_aac() {
    let Some(a) = AAC.get() else { return };
    // Scaled agents first (their supervisors would replace removed replicas), then every
    // container this binary made, then whatever network state is left.
    if let Ok(groups) = std::fs::read_dir(a.data_dir.join("agents")) {
        for g in groups.flatten() {
            let _ = a
                .command(&["down", &g.file_name().to_string_lossy()])
                .output();
        }
    }
    if let Ok(ids) = std::fs::read_dir(a.data_dir.join("containers")) {
        for id in ids.flatten() {
            let _ = a
                .command(&["rm", "-f", &id.file_name().to_string_lossy()])
                .output();
        }
    }
    let _ = a.command(&["network", "prune"]).output();
    if let Ok(nets) = std::fs::read_dir(a.data_dir.join("networks")) {
        for n in nets.flatten() {
            let name = n.file_name().to_string_lossy().to_string();
            if let Some(net) = name.strip_suffix(".json") {
                let _ = a.command(&["network", "rm", net]).output();
            }
        }
    }
    let _ = Command::new("ip")
        .args(["link", "del", &a.bridge])
        .stderr(Stdio::null())
        .status();
    kill_monitors(&a.run_dir);
    let _ = std::fs::remove_dir_all(a.run_dir.parent().unwrap_or(&a.run_dir));
}

/// PIDs of the processes whose command line (arguments joined by spaces) `pred` accepts.
pub fn pids_where(pred: impl Fn(&str) -> bool) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            pred(&String::from_utf8_lossy(&cmd).replace('\0', " "))
        })
        .collect()
}

/// PIDs of the aac-shim monitors of container `id`.
pub fn shim_pids(id: &str) -> Vec<i32> {
    pids_where(|cmd| cmd.contains("aac-shim") && cmd.contains(id))
}

/// SIGKILL every aac-shim and aac-supervisor that serves the state under `run_dir`.
pub fn kill_monitors(run_dir: &Path) {
    let needle = run_dir.to_string_lossy().to_string();
    let helpers = pids_where(|cmd| {
        (cmd.contains("aac-shim") || cmd.contains("aac-supervisor")) && cmd.contains(&needle)
    });
    for pid in helpers {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// This binary's aac: private containerd, own state, the test image imported through
/// `aac image import --rootfs`.
pub fn aac() -> &'static Aac {
    AAC.get_or_init(|| {
        env();
        let base = PathBuf::from(format!("/tmp/aac-cli/{}", std::process::id()));
        let a = Aac {
            run_dir: base.join("run"),
            data_dir: base.join("data"),
            bridge: format!("aac-t{}", std::process::id() % 100_000),
        };
        std::fs::create_dir_all(&a.run_dir).unwrap();
        std::fs::create_dir_all(&a.data_dir).unwrap();
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(cleanup_aac) };
        let rootfs = tempfile::tempdir().unwrap();
        crate::busybox_rootfs(rootfs.path());
        let out = a
            .command(&[
                "image",
                "import",
                "--rootfs",
                &rootfs.path().to_string_lossy(),
                IMAGE,
                "--cmd",
                "/bin/sh",
                "--env",
                "PATH=/bin",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "image import: {}", text(&out.stderr));
        a
    })
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Aac {
    /// `aac ARGS` with this binary's containerd and state.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("aac"));
        c.args(args)
            .env("CONTAINERD_ADDRESS", &env().socket)
            .env("AAC_NAMESPACE", NAMESPACE)
            .env("AAC_RUN_DIR", &self.run_dir)
            .env("AAC_DATA_DIR", &self.data_dir)
            .env("AAC_DEFAULT_BRIDGE", &self.bridge)
            .env("AAC_SHIM", bin("aac-shim"))
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "aac {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `aac inspect NAME` as JSON.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    /// Poll `inspect` until `pred` holds (or panic after `timeout`).
    pub fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.inspect(name);
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: timed out waiting for {what}; state: {}",
                v["State"]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// IDs of the containers aac has records of.
    pub fn record_ids(&self) -> Vec<String> {
        std::fs::read_dir(self.data_dir.join("containers"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A TCP port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
