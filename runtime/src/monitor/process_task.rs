//! The monitor's handle on a process-backend container: the agent's command run on the host by
//! [`crate::process`], with its output on the monitor's FIFOs and its published ports relayed
//! by [`super::forward`] when the host port differs.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::health::CommandRunner;
use crate::process::{self, Child, PidFd, RootMode, SpawnOptions, Stdio, StdioSpec};
use crate::record::{self, ContainerRecord};
use crate::state::{new_id, StateDirs};

use super::forward::Forwarder;
use super::{MonitorError, StdioPaths, Task};

#[derive(Default)]
struct State {
    /// Our child while nobody waits for it (the waiting thread holds it meanwhile).
    child: Option<Child>,
    /// Signals the running process (ours or adopted).
    pidfd: Option<Arc<PidFd>>,
    /// The running process is not our child (adopted from an earlier monitor).
    adopted: bool,
    forwarder: Option<Forwarder>,
    /// Copies the stdin FIFO into the agent's stdin pipe (`-i` without a terminal).
    stdin_copier: Option<tokio::task::JoinHandle<()>>,
    warnings: Vec<String>,
}

pub struct ProcessTask {
    pub record: ContainerRecord,
    pub dirs: StateDirs,
    state: Mutex<State>,
}

fn backend(e: impl std::fmt::Display) -> MonitorError {
    MonitorError::backend(e, None)
}

fn process_err(e: process::ProcessError) -> MonitorError {
    let code = e.exit_code();
    MonitorError::backend(e, Some(code))
}

fn open_write(p: &Path) -> Result<OwnedFd, MonitorError> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(p)
        .map(OwnedFd::from)
        .map_err(|source| MonitorError::Io {
            context: format!("opening {}", p.display()),
            source,
        })
}

/// The agent's stdin for `-i`: a pipe whose read end is returned, fed from the FIFO at `fifo`
/// by a task. Before a client ever opened the FIFO for writing, epoll reports nothing for it
/// (no early end-of-file); once the client closed it, the pipe is closed too.
fn stdin_pipe(fifo: &Path) -> Result<(OwnedFd, tokio::task::JoinHandle<()>), MonitorError> {
    let io = |context: String| move |source| MonitorError::Io { context, source };
    let mut rx = tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(fifo)
        .map_err(io(format!("opening {}", fifo.display())))?;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io("creating the stdin pipe".into())(std::io::Error::from(e)))?;
    let mut tx = tokio::net::unix::pipe::Sender::from_owned_fd(w)
        .map_err(io("registering the stdin pipe".into()))?;
    let copier = tokio::spawn(async move {
        if let Err(e) = tokio::io::copy(&mut rx, &mut tx).await {
            tracing::debug!("stdin: {e}");
        }
        // Dropping the sender closes the agent's stdin.
    });
    Ok((r, copier))
}

impl ProcessTask {
    pub fn new(record: ContainerRecord, dirs: StateDirs) -> ProcessTask {
        ProcessTask {
            record,
            dirs,
            state: Mutex::new(State::default()),
        }
    }

    fn id(&self) -> &str {
        &self.record.id
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cgroup_path(&self) -> PathBuf {
        PathBuf::from(self.record.cgroup_path())
    }

    fn running(&self) -> Option<Arc<PidFd>> {
        self.state().pidfd.clone()
    }

    fn release(&self) -> Result<(), MonitorError> {
        let (child, adopted) = {
            let mut st = self.state();
            if let Some(mut f) = st.forwarder.take() {
                f.stop();
            }
            st.pidfd = None;
            let adopted = std::mem::take(&mut st.adopted);
            (st.child.take(), adopted)
        };
        match child {
            Some(c) => c.cleanup().map_err(process_err),
            None if adopted => process::cleanup_cgroup(&self.cgroup_path()).map_err(process_err),
            None => Ok(()),
        }
    }
}

/// `pid` is alive (not a zombie) and in the cgroup at `cgroup_path`.
fn alive_in_cgroup(pid: u32, cgroup_path: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, None | Some("Z") | Some("X")) {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|c| {
            c.lines()
                .filter_map(|l| l.splitn(3, ':').nth(2))
                .any(|p| p == cgroup_path || p.ends_with(cgroup_path))
        })
        .unwrap_or(false)
}

impl CommandRunner for ProcessTask {
    async fn run(&self, argv: &[String], timeout: Duration) -> Result<(i32, Vec<u8>), String> {
        let pid = self
            .running()
            .map(|p| p.pid())
            .ok_or_else(|| "the container is not running".to_string())?;
        let mut spec = self.record.oci_spec().map_err(|e| e.to_string())?;
        if let Some(p) = spec.process_mut() {
            p.set_args(Some(argv.to_vec()));
            p.set_terminal(Some(false));
        }
        let out = self
            .dirs
            .container_run_dir(self.id())
            .join(format!("probe-{}.out", &new_id()[..12]));
        std::fs::write(&out, b"").map_err(|e| format!("{}: {e}", out.display()))?;
        let stdio = Stdio {
            stdin: StdioSpec::Null,
            stdout: StdioSpec::Path(out.clone()),
            stderr: StdioSpec::Path(out.clone()),
        };
        let result = tokio::task::spawn_blocking(move || {
            let mut child = process::exec_in(pid, &spec, &stdio).map_err(|e| e.to_string())?;
            child.wait_timeout(timeout).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("running the command: {e}"))
        .and_then(|r| r);
        let output = std::fs::read(&out).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        match result? {
            Some(status) => Ok((status.code(), output)),
            None => Err(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            )),
        }
    }
}

impl Task for ProcessTask {
    async fn start(&self, stdio: &StdioPaths) -> Result<u32, MonitorError> {
        let spec = self
            .record
            .oci_spec()
            .map_err(|e| backend(format!("stored spec: {e}")))?;
        // Host ports first: a conflict fails before anything runs.
        let forwarder = Forwarder::start(&self.record.ports)
            .await
            .map_err(backend)?;
        let stdin = match &stdio.stdin {
            // Without a terminal the agent reads a pipe the monitor fills from the FIFO, and
            // gets end-of-file when the attached client closes its end (docker run -i).
            Some(p) if !self.record.tty => {
                let (fd, copier) = stdin_pipe(p)?;
                if let Ok(mut st) = self.state.lock() {
                    if let Some(old) = st.stdin_copier.replace(copier) {
                        old.abort();
                    }
                }
                StdioSpec::Fd(fd)
            }
            // A terminal: read-write, so opening never waits for a writer and the agent never
            // reads an early end-of-file between attaches.
            Some(p) => StdioSpec::Fd(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(p)
                    .map(OwnedFd::from)
                    .map_err(|source| MonitorError::Io {
                        context: format!("opening {}", p.display()),
                        source,
                    })?,
            ),
            None => StdioSpec::Null,
        };
        let out = open_write(&stdio.stdout)?;
        let err = if self.record.tty {
            StdioSpec::Fd(out.try_clone().map_err(|source| MonitorError::Io {
                context: "duplicating stdout".into(),
                source,
            })?)
        } else {
            StdioSpec::Fd(open_write(&stdio.stderr)?)
        };
        let opts = SpawnOptions {
            id: self.record.id.clone(),
            stdio: Stdio {
                stdin,
                stdout: StdioSpec::Fd(out),
                stderr: err,
            },
            root_mode: RootMode::Host,
            // The spec's cgroupsPath already holds the cgroup root chosen by `aac run`.
            cgroup_root: PathBuf::from("/"),
            rootless: !crate::rootlesskit::is_real_root(),
        };
        let child = tokio::task::spawn_blocking(move || process::spawn(&spec, &opts))
            .await
            .map_err(|e| backend(format!("starting the process: {e}")))?
            .map_err(process_err)?;
        let pid = child.pid;
        let pidfd = child.pidfd().map_err(process_err)?;
        let mut st = self.state();
        st.warnings = child.warnings.iter().map(|w| w.to_string()).collect();
        st.child = Some(child);
        st.pidfd = Some(Arc::new(pidfd));
        st.adopted = false;
        st.forwarder = Some(forwarder);
        Ok(pid as u32)
    }

    async fn running_pid(&self) -> Option<u32> {
        let st = record::load_status(&self.dirs, self.id()).ok()?;
        let pid = st.pid?;
        if !alive_in_cgroup(pid, &self.record.cgroup_path()) {
            return None;
        }
        let pidfd = PidFd::open(pid as i32).ok()?;
        // Its ports: relay again (best effort: the old monitor's relays died with it).
        let forwarder = match Forwarder::start(&self.record.ports).await {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!("adopting {}: {e}", self.id());
                None
            }
        };
        let mut s = self.state();
        s.pidfd = Some(Arc::new(pidfd));
        s.adopted = true;
        s.forwarder = forwarder;
        Some(pid)
    }

    async fn wait(&self) -> Result<i32, MonitorError> {
        let (child, pidfd) = {
            let mut st = self.state();
            (st.child.take(), st.pidfd.clone())
        };
        if let Some(mut child) = child {
            let (r, child) = tokio::task::spawn_blocking(move || {
                let r = child.wait();
                (r, child)
            })
            .await
            .map_err(|e| backend(format!("waiting for the process: {e}")))?;
            self.state().child = Some(child);
            return r.map(|s| s.code()).map_err(process_err);
        }
        let Some(pidfd) = pidfd else {
            return Err(backend("the container is not running"));
        };
        // Adopted: not our child, so its exit status is not ours to read.
        tokio::task::spawn_blocking(move || pidfd.wait_exit())
            .await
            .map_err(|e| backend(format!("waiting for the process: {e}")))?
            .map_err(process_err)?;
        Err(backend(
            "the process exited; its exit status is unknown (it was adopted from an earlier monitor)",
        ))
    }

    async fn kill(&self, signal: i32) -> Result<(), MonitorError> {
        let sig = Signal::try_from(signal).map_err(|e| backend(format!("signal {signal}: {e}")))?;
        match self.running() {
            Some(p) => p.signal(sig).map_err(process_err),
            None => Err(backend("the container is not running")),
        }
    }

    async fn cleanup(&self) -> Result<(), MonitorError> {
        self.release()
    }

    async fn remove(&self) -> Result<(), MonitorError> {
        if let Some(p) = self.running() {
            let _ = p.signal(Signal::SIGKILL);
        }
        self.release()?;
        process::cleanup_cgroup(&self.cgroup_path()).map_err(process_err)
    }

    fn warnings(&self) -> Vec<String> {
        self.state().warnings.clone()
    }
}
