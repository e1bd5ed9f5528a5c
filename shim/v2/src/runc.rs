//! Running runc. The shim is the subreaper of everything it starts and containerd-shim's
//! signal thread reaps every child, so a runc command's exit is collected through a monitor
//! subscription taken before the command starts (never `Child::wait`).

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use containerd_shim::monitor::{ExitEvent, Subject, Topic};
use containerd_shim::synchronous::monitor::monitor_subscribe;

/// Where runc keeps its state (the Go shim's default, so `runc list` and tools agree).
pub const DEFAULT_ROOT: &str = "/run/containerd/runc";

/// How the shim runs runc for one container.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Runc {
    pub binary: String,
    /// runc's `--root` (already joined with the namespace).
    pub root: String,
    pub systemd_cgroup: bool,
    /// Where runc's JSON logs go (one file per command, removed afterwards).
    pub log_dir: PathBuf,
}

/// The standard streams a runc command passes on to the container process.
#[derive(Default)]
pub struct ProcIo {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Runc {
    /// Run `runc GLOBAL... args` with `io` as its standard streams (null where absent). Returns
    /// runc's stdout when `capture` (then `io.stdout` must be empty). A failure carries runc's
    /// last error message.
    pub fn run(&self, args: &[&str], io: ProcIo, capture: bool) -> Result<Vec<u8>, String> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let log = self
            .log_dir
            .join(format!("runc-{}-{n}.log", std::process::id()));
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        cmd.arg("--log").arg(&log).arg("--log-format").arg("json");
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd.args(args);
        cmd.stdin(io.stdin.map_or_else(Stdio::null, Stdio::from));
        if capture {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(io.stdout.map_or_else(Stdio::null, Stdio::from));
        }
        cmd.stderr(io.stderr.map_or_else(Stdio::null, Stdio::from));
        let sub = monitor_subscribe(Topic::Pid).map_err(|e| format!("runc: {e}"))?;
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("running {}: {e}", self.binary))?;
        // Our copies of the container's streams must not outlive the command.
        drop(cmd);
        let mut out = Vec::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_end(&mut out);
        }
        let pid = child.id() as i32;
        let code = loop {
            match sub.rx.recv() {
                Ok(ExitEvent {
                    subject: Subject::Pid(p),
                    exit_code,
                }) if p == pid => break exit_code,
                Ok(_) => continue,
                Err(_) => break -1,
            }
        };
        let message = last_error(&log);
        let _ = std::fs::remove_file(&log);
        if code == 0 {
            Ok(out)
        } else {
            let what = args.first().copied().unwrap_or("");
            Err(match message {
                Some(m) => format!("runc {what} failed: {m}"),
                None => format!("runc {what} failed: exit status {code}"),
            })
        }
    }
}

/// The last `error` (or fatal) message in a runc JSON log.
fn last_error(log: &Path) -> Option<String> {
    let mut s = String::new();
    File::open(log).ok()?.read_to_string(&mut s).ok()?;
    let mut last = None;
    for line in s.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let level = v.get("level").and_then(|l| l.as_str()).unwrap_or("");
        if matches!(level, "error" | "fatal") {
            if let Some(m) = v.get("msg").and_then(|m| m.as_str()) {
                last = Some(m.to_string());
            }
        }
    }
    last
}

/// The pid runc wrote to `path`.
pub fn read_pid(path: &Path) -> Result<u32, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    s.trim()
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))
}
