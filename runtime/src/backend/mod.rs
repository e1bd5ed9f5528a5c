//! The two executors of a container behind one trait: [`containerd`] (gRPC to containerd,
//! runc) and [`process`] (the same spec applied to a host process). [`open`] selects one for a
//! container record, once; nothing else in the library or the CLI asks which backend runs a
//! container. The monitor drives a [`Task`] (start, wait, restart); the engine acts on one
//! (kill, exec, remove) with or without a monitor.

pub mod containerd;
pub mod forward;
pub mod process;
mod tmpfs_modes;

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use crate::record::{Backend, ContainerRecord};
use crate::state::StateDirs;

/// A boxed future: [`Task`] is used as `dyn Task`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A backend call failed; `exit_code` is 126/127 when a command could not be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub message: String,
    pub exit_code: Option<i32>,
}

impl BackendError {
    pub fn new(message: impl std::fmt::Display, exit_code: Option<i32>) -> BackendError {
        BackendError {
            message: message.to_string(),
            exit_code,
        }
    }

    pub fn msg(message: impl std::fmt::Display) -> BackendError {
        BackendError::new(message, None)
    }

    /// docker-style exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        self.exit_code.unwrap_or(125)
    }
}

impl From<crate::io::IoError> for BackendError {
    fn from(e: crate::io::IoError) -> BackendError {
        BackendError::msg(e)
    }
}

/// Paths of the stdio FIFOs of a container's main process.
#[derive(Debug, Clone)]
pub struct StdioPaths {
    pub stdin: Option<PathBuf>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl StdioPaths {
    pub fn for_container(dirs: &StateDirs, rec: &ContainerRecord) -> StdioPaths {
        let run = dirs.container_run_dir(&rec.id);
        StdioPaths {
            stdin: rec.stdin.then(|| run.join("stdin")),
            stdout: run.join("stdout"),
            stderr: run.join("stderr"),
        }
    }
}

/// A command to run in a running container (`aac exec`), on the caller's own standard
/// streams.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub args: Vec<String>,
    /// `KEY=VALUE` added to (or replacing in) the container's environment.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// `UID[:GID]` inside the container, replacing the container's user.
    pub user: Option<(u32, Option<u32>)>,
    /// Keep stdin open and connect it.
    pub interactive: bool,
    /// Allocate a terminal (where the backend can).
    pub tty: bool,
    /// The container's secret environment variables (set by the engine; never put in a spec
    /// that leaves this process: the backend hands them over like at start).
    pub secret_env: crate::secrets::SecretEnv,
}

impl ExecRequest {
    /// The container's process spec with this request applied.
    pub fn process(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<oci_spec::runtime::Process, BackendError> {
        let mut process = spec
            .process()
            .clone()
            .ok_or_else(|| BackendError::msg("the container spec has no process"))?;
        process.set_args(Some(self.args.clone()));
        process.set_terminal(Some(self.tty));
        if let Some(w) = &self.workdir {
            process.set_cwd(w.into());
        }
        if !self.env.is_empty() {
            let mut env = process.env().clone().unwrap_or_default();
            for kv in &self.env {
                let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
                env.push(kv.clone());
            }
            process.set_env(Some(env));
        }
        if let Some((uid, gid)) = self.user {
            let mut user = process.user().clone();
            user.set_uid(uid);
            user.set_gid(gid.unwrap_or(uid));
            process.set_user(user);
        }
        Ok(process)
    }
}

/// Runs a command inside a container and captures its exit code and combined output (health
/// probes: containerd Exec, or entering the process's namespaces).
pub trait CommandRunner: Send + Sync {
    fn run<'a>(
        &'a self,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(i32, Vec<u8>), String>>;
}

/// One backend's handle on one container.
pub trait Task: CommandRunner {
    /// Create and start the main process with its output on `stdio`; returns its host PID.
    fn start<'a>(&'a self, stdio: &'a StdioPaths) -> BoxFuture<'a, Result<u32, BackendError>>;
    /// PID of the main process when a new monitor adopts the container: it is running, or it
    /// exited and nobody has collected its exit yet (then [`Task::wait`] returns at once).
    fn running_pid(&self) -> BoxFuture<'_, Option<u32>>;
    /// Wait for the main process to exit; returns the exit code (128+n for signal n).
    fn wait(&self) -> BoxFuture<'_, Result<i32, BackendError>>;
    /// Signal the main process (the one the monitor started or adopted, else the one the
    /// status names).
    fn kill(&self, signal: i32) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Whether the main process runs now, whatever the records say.
    fn is_running(&self) -> BoxFuture<'_, bool>;
    /// Release the exited process (keeps the container for a restart); returns its exit code
    /// when the backend still knew it (a task nobody waited for).
    fn cleanup(&self) -> BoxFuture<'_, Result<Option<i32>, BackendError>>;
    /// Remove the container for good (the backend's side: task, snapshot, cgroup).
    fn remove(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Run a command in the container on the caller's standard streams; returns its exit code.
    fn exec<'a>(&'a self, req: &'a ExecRequest) -> BoxFuture<'a, Result<i32, BackendError>>;
    /// Freeze every process of the container (`aac pause`).
    fn pause(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Thaw a frozen container (`aac unpause`).
    fn resume(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Tell the main process (`exec_id` empty) or an exec its terminal's size.
    fn resize<'a>(&'a self, _exec_id: &'a str, _width: u32, _height: u32) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    /// The main process's stdin has ended (a foreground client's input is over): let the
    /// process read end-of-file.
    fn close_stdin(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// What the last start could not enforce (limits without a writable cgroup, ...), one
    /// sentence each.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// The backend reported an OOM kill since the last start (containerd's `/tasks/oom`
    /// event), when its cgroup may already be gone at exit.
    fn oom_reported(&self) -> bool {
        false
    }
}

/// Copy this process's stdin into the FIFO at `fifo` on a thread; the receiver fires when
/// stdin ended (and the FIFO was closed).
pub fn forward_stdin(fifo: std::path::PathBuf) -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        if let Ok(mut out) = std::fs::OpenOptions::new().write(true).open(&fifo) {
            let mut buf = [0u8; 8192];
            let mut stdin = std::io::stdin();
            loop {
                match std::io::Read::read(&mut stdin, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        let _ = tx.send(());
    });
    rx
}

/// This process's terminal (on stdin) in raw mode while alive.
pub struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    pub fn enable_if_tty() -> Option<RawMode> {
        use nix::sys::termios::{self, SetArg};
        use std::os::fd::AsFd;
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use std::os::fd::AsFd;
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin().as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// The executor of container `rec`, connected.
pub async fn open(dirs: &StateDirs, rec: &ContainerRecord) -> Result<Box<dyn Task>, BackendError> {
    Ok(match rec.backend {
        Backend::Containerd => Box::new(containerd::ContainerdTask::connect(rec, dirs).await?),
        Backend::Process => Box::new(process::ProcessTask::new(rec.clone(), dirs.clone())),
    })
}
