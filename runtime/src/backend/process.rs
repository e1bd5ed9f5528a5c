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

use crate::process::{self, Child, PidFd, RootMode, SpawnOptions, Stdio, StdioSpec};
use crate::record::{self, ContainerRecord};
use crate::state::{new_id, StateDirs};

use super::forward::Forwarder;
use super::{BackendError, BoxFuture, CommandRunner, ExecRequest, StdioPaths, Task};

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

fn backend(e: impl std::fmt::Display) -> BackendError {
    BackendError::msg(e)
}

fn process_err(e: process::ProcessError) -> BackendError {
    let code = e.exit_code();
    BackendError::new(e, Some(code))
}

fn open_write(p: &Path) -> Result<OwnedFd, BackendError> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(p)
        .map(OwnedFd::from)
        .map_err(|e| crate::io::IoError::new("opening", p, e).into())
}

/// The agent's stdin for `-i`: a pipe whose read end is returned, fed from the FIFO at `fifo`
/// by a task. Before a client ever opened the FIFO for writing, epoll reports nothing for it
/// (no early end-of-file); once the client closed it, the pipe is closed too.
fn stdin_pipe(fifo: &Path) -> Result<(OwnedFd, tokio::task::JoinHandle<()>), BackendError> {
    let mut rx = tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(fifo)
        .map_err(crate::io::io_err("opening", fifo))?;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| backend(format!("creating the stdin pipe: {e}")))?;
    let mut tx = tokio::net::unix::pipe::Sender::from_owned_fd(w)
        .map_err(|e| backend(format!("registering the stdin pipe: {e}")))?;
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

    fn running(&self) -> Option<Arc<PidFd>> {
        self.state().pidfd.clone()
    }

    fn release(&self) -> Result<(), BackendError> {
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
            None if adopted => self.record.cgroup.remove().map_err(backend),
            None => Ok(()),
        }
    }
}

/// The agent joins a network namespace aac made (CNI): no relays of its own.
fn own_netns(spec: &oci_spec::runtime::Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network && n.path().is_some())
}

/// `pid` is alive (not a zombie) and in the container's cgroup.
fn alive_in_cgroup(pid: u32, cgroup: &crate::cgroups::CgroupPlan) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, None | Some("Z") | Some("X")) {
        return false;
    }
    cgroup.holds(pid)
}

impl ProcessTask {
    /// The main process: the one this task started or adopted, else the one the status
    /// names when it still runs in the container's cgroup (the engine, without a monitor).
    fn main_pid(&self) -> Option<i32> {
        if let Some(p) = self.running() {
            return Some(p.pid());
        }
        let pid = record::load_status(&self.dirs, self.id()).ok()?.pid?;
        alive_in_cgroup(pid, &self.record.cgroup).then_some(pid as i32)
    }

    async fn run_captured(
        &self,
        argv: &[String],
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>), String> {
        let pid = self
            .main_pid()
            .ok_or_else(|| "the container is not running".to_string())?;
        let mut spec = self.record.spec.clone();
        if let Some(p) = spec.process_mut() {
            p.set_args(Some(argv.to_vec()));
            p.set_terminal(Some(false));
        }
        let out = self
            .dirs
            .container_run_dir(self.id())
            .join(format!("probe-{}.out", &new_id()[..12]));
        // One open file for both streams: the lines stay in the order they were written.
        let file = crate::state::private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&out)
            .map_err(|e| format!("creating {}: {e}", out.display()))?;
        let second = file
            .try_clone()
            .map_err(|e| format!("duplicating {}: {e}", out.display()))?;
        let stdio = Stdio {
            stdin: StdioSpec::Null,
            stdout: StdioSpec::Fd(file.into()),
            stderr: StdioSpec::Fd(second.into()),
            ..Stdio::default()
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

    /// `aac exec`: the command joins the main process's namespaces and cgroups with the
    /// container's credentials, on the caller's standard streams (no terminal of its own:
    /// with -t the command uses the caller's).
    async fn exec_inherit(&self, req: &ExecRequest) -> Result<i32, BackendError> {
        let pid = self
            .main_pid()
            .ok_or_else(|| backend(format!("container {} is not running", self.record.name)))?;
        let mut spec = self.record.spec.clone();
        let mut process = req.process(&spec)?;
        process.set_terminal(Some(false));
        if !req.secret_env.is_empty() {
            // Straight to execve, like at start.
            let mut env = process.env().clone().unwrap_or_default();
            req.secret_env.apply_to(&mut env);
            process.set_env(Some(env));
        }
        spec.set_process(Some(process));
        let stdio = Stdio {
            stdin: if req.interactive {
                StdioSpec::Inherit
            } else {
                StdioSpec::Null
            },
            stdout: StdioSpec::Inherit,
            stderr: StdioSpec::Inherit,
            ..Stdio::default()
        };
        tokio::task::spawn_blocking(move || {
            let mut child = process::exec_in(pid, &spec, &stdio).map_err(process_err)?;
            let status = child.wait().map_err(process_err)?;
            Ok(status.code())
        })
        .await
        .map_err(|e| backend(format!("running the command: {e}")))?
    }

    async fn start_process(&self, stdio: &StdioPaths) -> Result<u32, BackendError> {
        let mut spec = self.record.spec.clone();
        // Secrets: the files on the agent's tmpfs; the environment goes to execve directly
        // (this spec stays in memory).
        let secret_env =
            crate::secrets::delivery::prepare(&self.dirs, &self.record).map_err(backend)?;
        if !secret_env.is_empty() {
            if let Some(p) = spec.process_mut() {
                let mut env = p.env().clone().unwrap_or_default();
                secret_env.apply_to(&mut env);
                p.set_env(Some(env));
            }
        }
        // Host ports first: a conflict fails before anything runs. In a network of its own
        // the agent's ports are published by CNI (portmap), as a container's.
        let forwarder = if own_netns(&spec) {
            Forwarder::default()
        } else {
            Forwarder::start(&self.record.ports)
                .await
                .map_err(backend)?
        };
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
                    .map_err(crate::io::io_err("opening", p))?,
            ),
            None => StdioSpec::Null,
        };
        let out = open_write(&stdio.stdout)?;
        let err = if self.record.tty {
            StdioSpec::Fd(
                out.try_clone()
                    .map_err(|e| backend(format!("duplicating stdout: {e}")))?,
            )
        } else {
            StdioSpec::Fd(open_write(&stdio.stderr)?)
        };
        // The waiter holds read ends of the output FIFOs (the agent never sees EPIPE while no
        // monitor reads) and reports the exit code into a file an adopting monitor reads.
        let hold = [&stdio.stdout, &stdio.stderr]
            .into_iter()
            .map(|p| {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
                    .open(p)
                    .map(OwnedFd::from)
                    .map_err(crate::io::io_err("opening", p))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let exit_path = self.exit_file();
        let exit_report = crate::state::private_options()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&exit_path)
            .map(OwnedFd::from)
            .map_err(crate::io::io_err("creating", &exit_path))?;
        let opts = SpawnOptions {
            id: self.record.id.clone(),
            stdio: Stdio {
                stdin,
                stdout: StdioSpec::Fd(out),
                stderr: err,
                hold,
                exit_report: Some(exit_report),
            },
            root_mode: RootMode::Host,
            rootless: !crate::rootlesskit::is_real_root(),
            own_ids: true,
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

    async fn adopt(&self) -> Option<u32> {
        let st = record::load_status(&self.dirs, self.id()).ok()?;
        let pid = st.pid?;
        if !alive_in_cgroup(pid, &self.record.cgroup) {
            return None;
        }
        let pidfd = PidFd::open(pid as i32).ok()?;
        // Its ports: relay again (best effort: the old monitor's relays died with it).
        let forwarder = match Forwarder::start(if own_netns(&self.record.spec) {
            &[]
        } else {
            &self.record.ports
        })
        .await
        {
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

    async fn wait_exit(&self) -> Result<i32, BackendError> {
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
        // Adopted: not our child; its waiter writes the exit code into the exit file just
        // after the container process is gone.
        tokio::task::spawn_blocking(move || pidfd.wait_exit())
            .await
            .map_err(|e| backend(format!("waiting for the process: {e}")))?
            .map_err(process_err)?;
        let exit_path = self.exit_file();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let text = std::fs::read_to_string(&exit_path).unwrap_or_default();
            if let Ok(code) = text.trim().parse::<i32>() {
                return Ok(code);
            }
            if std::time::Instant::now() >= deadline {
                return Err(backend(
                    "the process exited; its exit status is unknown (it was adopted from an \
                     earlier monitor and its waiter did not report)",
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Where the waiter reports the exit code of the current run.
    fn exit_file(&self) -> PathBuf {
        self.dirs.container_run_dir(self.id()).join("exit")
    }

    fn signal(&self, signal: i32) -> Result<(), BackendError> {
        let sig = Signal::try_from(signal).map_err(|e| backend(format!("signal {signal}: {e}")))?;
        if let Some(p) = self.running() {
            return p.signal(sig).map_err(process_err);
        }
        match self.main_pid() {
            Some(pid) => PidFd::open(pid)
                .and_then(|p| p.signal(sig))
                .map_err(process_err),
            None => Err(backend("the container is not running")),
        }
    }

    /// The cgroup freezer: the process backend's cgroup is aac's own.
    fn freeze(&self, freeze: bool) -> Result<(), BackendError> {
        if self.main_pid().is_none() {
            return Err(backend(format!(
                "container {} is not running",
                self.record.name
            )));
        }
        self.record.cgroup.set_frozen(freeze).map_err(backend)
    }

    fn remove_all(&self) -> Result<(), BackendError> {
        if let Some(p) = self.running() {
            let _ = p.signal(Signal::SIGKILL);
        }
        self.release()?;
        self.record.cgroup.remove().map_err(backend)
    }
}

impl CommandRunner for ProcessTask {
    fn run<'a>(
        &'a self,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(i32, Vec<u8>), String>> {
        Box::pin(self.run_captured(argv, timeout))
    }
}

impl Task for ProcessTask {
    fn start<'a>(&'a self, stdio: &'a StdioPaths) -> BoxFuture<'a, Result<u32, BackendError>> {
        Box::pin(self.start_process(stdio))
    }

    fn running_pid(&self) -> BoxFuture<'_, Option<u32>> {
        Box::pin(self.adopt())
    }

    fn wait(&self) -> BoxFuture<'_, Result<i32, BackendError>> {
        Box::pin(self.wait_exit())
    }

    fn kill(&self, signal: i32) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { self.signal(signal) })
    }

    fn is_running(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.main_pid().is_some() })
    }

    fn cleanup(&self) -> BoxFuture<'_, Result<Option<i32>, BackendError>> {
        Box::pin(async move { self.release().map(|()| None) })
    }

    fn remove(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { self.remove_all() })
    }

    fn exec<'a>(&'a self, req: &'a ExecRequest) -> BoxFuture<'a, Result<i32, BackendError>> {
        Box::pin(self.exec_inherit(req))
    }

    fn pause(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { self.freeze(true) })
    }

    fn resume(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { self.freeze(false) })
    }

    fn warnings(&self) -> Vec<String> {
        self.state().warnings.clone()
    }
}
