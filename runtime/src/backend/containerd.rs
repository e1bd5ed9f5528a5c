//! The containerd executor: a container and its task on containerd, run by runc.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::containerd::{Client, CreateRequest, CtrdError, Stdio, TaskStatus};
use crate::record::ContainerRecord;
use crate::state::{new_id, StateDirs};

use super::{BackendError, BoxFuture, CommandRunner, ExecRequest, StdioPaths, Task};

/// Labels aac puts on its containerd containers (visible to `ctr -n aac containers ls`).
pub fn container_labels(rec: &ContainerRecord) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = rec
        .agent
        .metadata
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert("dev.aac.name".into(), rec.name.clone());
    labels.insert("dev.aac.agent".into(), rec.agent.metadata.name.clone());
    if let Some(v) = &rec.agent.metadata.version {
        labels.insert("dev.aac.agent.version".into(), v.clone());
    }
    labels.insert("dev.aac.created".into(), rec.created.clone());
    labels
}

/// How long a monitor waits for containerd to come back before giving up on a container.
const CONTAINERD_OUTAGE: Duration = Duration::from_secs(300);

/// containerd went away or the call was cut: worth retrying.
fn is_transient(e: &CtrdError) -> bool {
    match e {
        CtrdError::Unreachable { .. } => true,
        CtrdError::Grpc { code, .. } => matches!(
            code,
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ),
        _ => false,
    }
}

impl From<CtrdError> for BackendError {
    fn from(e: CtrdError) -> BackendError {
        let code = e.exit_code();
        BackendError::new(e, code)
    }
}

pub struct ContainerdTask {
    pub client: Client,
    pub record: ContainerRecord,
    pub dirs: StateDirs,
    /// Raised by the OOM event watch of the current run.
    oom: Arc<AtomicBool>,
    oom_watch: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ContainerdTask {
    pub fn new(client: Client, record: ContainerRecord, dirs: StateDirs) -> ContainerdTask {
        ContainerdTask {
            client,
            record,
            dirs,
            oom: Arc::new(AtomicBool::new(false)),
            oom_watch: Mutex::new(None),
        }
    }

    /// Connect to the containerd the container was created on.
    pub async fn connect(
        rec: &ContainerRecord,
        dirs: &StateDirs,
    ) -> Result<ContainerdTask, BackendError> {
        let target = rec
            .containerd
            .as_ref()
            .ok_or_else(|| BackendError::msg("the record names no containerd"))?;
        let client = Client::connect(&target.address, &target.namespace).await?;
        Ok(ContainerdTask::new(client, rec.clone(), dirs.clone()))
    }

    fn id(&self) -> &str {
        &self.record.id
    }

    /// Watch for OOM events of this run (started after the task exists: containerd answers a
    /// subscription only with its first event).
    fn watch_oom(&self) {
        self.oom.store(false, Ordering::SeqCst);
        let handle = self.client.watch_oom(&self.record.id, self.oom.clone());
        if let Ok(mut w) = self.oom_watch.lock() {
            if let Some(old) = w.replace(handle) {
                old.abort();
            }
        }
    }

    async fn start_task(&self, stdio: &StdioPaths) -> Result<u32, BackendError> {
        // The secrets tmpfs: files as the store has them now, the wrapper init's environment.
        crate::secrets::delivery::prepare(&self.dirs, &self.record).map_err(BackendError::msg)?;
        let started = self.start_prepared(stdio).await;
        if started.is_err() {
            // The wrapper init never ran: its environment file goes.
            crate::secrets::delivery::remove_env_file(
                &self.dirs,
                self.id(),
                crate::secrets::delivery::MAIN_ENV,
            );
        }
        started
    }

    async fn start_prepared(&self, stdio: &StdioPaths) -> Result<u32, BackendError> {
        let io = Stdio {
            stdin: stdio
                .stdin
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            stdout: Some(stdio.stdout.to_string_lossy().into_owned()),
            stderr: (!self.record.tty).then(|| stdio.stderr.to_string_lossy().into_owned()),
            terminal: self.record.tty,
        };
        let exists = self
            .client
            .list_containers()
            .await?
            .iter()
            .any(|c| c.id == self.record.id);
        let pid = if exists {
            // A task left behind (created but never started, or exited and not deleted by a
            // monitor that died) would block the new one.
            let _ = self.client.delete_task(self.id()).await;
            self.client.create_task(self.id(), &io).await?
        } else {
            self.client
                .create(CreateRequest {
                    id: self.record.id.clone(),
                    image_ref: self.record.image.clone().unwrap_or_default(),
                    spec: self.record.spec.clone(),
                    labels: container_labels(&self.record),
                    stdio: io,
                    systemd_cgroup: self.record.cgroup.systemd(),
                })
                .await?
        };
        // Created, not started: the mounts are in place and nothing of the agent runs yet.
        super::tmpfs_modes::apply(pid, &self.record.spec);
        self.watch_oom();
        match self.client.start(self.id()).await {
            Ok(pid) => Ok(pid),
            Err(e) => {
                let _ = self.client.delete_task(self.id()).await;
                Err(e.into())
            }
        }
    }

    async fn wait_task(&self) -> Result<i32, BackendError> {
        // containerd may restart while the container runs (an upgrade, a crash): its shim and
        // the container live on, so keep waiting until containerd answers again.
        let deadline = std::time::Instant::now() + CONTAINERD_OUTAGE;
        loop {
            match self.client.wait(self.id()).await {
                Ok(s) => return Ok(s.code as i32),
                // containerd deletes a task whose shim died (and kills its processes): the
                // container ended as if by SIGKILL.
                Err(CtrdError::Grpc {
                    code: tonic::Code::NotFound,
                    ..
                }) => {
                    return Err(BackendError::new(
                        "the container's shim died and containerd removed its task \
                         (the container was killed)",
                        Some(128 + 9),
                    ))
                }
                Err(e) if is_transient(&e) && std::time::Instant::now() < deadline => {
                    tracing::warn!("waiting for {}: {e}; retrying", self.id());
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn run_captured(
        &self,
        argv: &[String],
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>), String> {
        let mut process = self
            .record
            .spec
            .process()
            .clone()
            .ok_or_else(|| "the container spec has no process".to_string())?;
        process.set_args(Some(shell_merged(argv)));
        process.set_terminal(Some(false));
        let exec_id = format!("probe-{}", &new_id()[..12]);
        let out = self
            .dirs
            .container_run_dir(self.id())
            .join(format!("{exec_id}.out"));
        // One FIFO for both streams, read to its end: the shim's two writers append in the
        // order the lines come, and the output is complete only once the shim has closed
        // them (a file read at exit lost late stderr lines, or had one stream overwrite the
        // other).
        let collector = ProbeOutput::open(&out)?;
        let path = out.to_string_lossy().into_owned();
        let stdio = Stdio {
            stdin: None,
            stdout: Some(path.clone()),
            stderr: Some(path),
            terminal: false,
        };
        let result = async {
            let (_, exit) = self
                .client
                .exec(self.id(), &exec_id, &process, stdio)
                .await
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(timeout, exit.wait()).await {
                Ok(r) => r.map(|s| s.code as i32).map_err(|e| e.to_string()),
                Err(_) => {
                    let _ = self.client.kill_exec(self.id(), &exec_id, 9).await;
                    Err(format!(
                        "timed out after {}",
                        humantime::format_duration(timeout)
                    ))
                }
            }
        }
        .await;
        let _ = self.client.delete_exec(self.id(), &exec_id).await;
        let output = collector.finish().await;
        let _ = std::fs::remove_file(&out);
        result.map(|code| (code, output))
    }

    /// `aac exec`: FIFOs in the container's volatile folder, copied to and from the caller's
    /// standard streams; stdin's end reaches the command (CloseIO).
    async fn exec_attached(&self, req: &ExecRequest) -> Result<i32, BackendError> {
        let mut process = req.process(&self.record.spec)?;
        let exec_id = format!("exec-{}", &new_id()[..12]);
        if !req.secret_env.is_empty() {
            // Like the main process: through the wrapper init, from a file on the tmpfs.
            let mut as_run = self.record.spec.clone();
            as_run.set_process(Some(process.clone()));
            let (uid, gid) = crate::secrets::delivery::host_owner(&as_run);
            crate::secrets::delivery::write_env_file(
                &self.dirs,
                self.id(),
                &exec_id,
                &req.secret_env,
                uid,
                gid,
            )
            .map_err(BackendError::msg)?;
            let mut args = crate::secrets::delivery::init_args(&exec_id);
            args.extend(req.args.iter().cloned());
            process.set_args(Some(args));
        }
        let result = self.exec_with(req, &process, &exec_id).await;
        crate::secrets::delivery::remove_env_file(&self.dirs, self.id(), &exec_id);
        result
    }

    async fn exec_with(
        &self,
        req: &ExecRequest,
        process: &oci_spec::runtime::Process,
        exec_id: &str,
    ) -> Result<i32, BackendError> {
        let exec_id = exec_id.to_string();
        let dir = self.dirs.container_run_dir(self.id()).join(&exec_id);
        crate::state::create_private_dir(&dir)?;
        let fifo = |n: &str| -> Result<String, BackendError> {
            let p = dir.join(n);
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| BackendError::msg(format!("mkfifo {}: {e}", p.display())))?;
            Ok(p.to_string_lossy().into_owned())
        };
        let stdout = fifo("stdout")?;
        let stderr = if req.tty { None } else { Some(fifo("stderr")?) };
        let stdin = if req.interactive {
            Some(fifo("stdin")?)
        } else {
            None
        };
        let copy = |path: String, err: bool| {
            std::thread::spawn(move || {
                let Ok(mut f) = std::fs::File::open(&path) else {
                    return;
                };
                let mut buf = [0u8; 8192];
                while let Ok(n) = std::io::Read::read(&mut f, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    let w = if err {
                        std::io::stderr().write_all(&buf[..n])
                    } else {
                        let mut out = std::io::stdout();
                        out.write_all(&buf[..n]).and_then(|()| out.flush())
                    };
                    if w.is_err() {
                        break;
                    }
                }
            })
        };
        let out_thread = copy(stdout.clone(), false);
        let err_thread = stderr.clone().map(|p| copy(p, true));
        let started = self
            .client
            .exec(
                self.id(),
                &exec_id,
                process,
                Stdio {
                    stdin: stdin.clone(),
                    stdout: Some(stdout),
                    stderr,
                    terminal: req.tty,
                },
            )
            .await;
        let exit = match started {
            Ok((_, exit)) => exit,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e.into());
            }
        };
        // The command's terminal is in the container: ours passes keys through untouched.
        let _raw = req.tty.then(super::RawMode::enable_if_tty).flatten();
        if let Some(p) = stdin {
            let done = super::forward_stdin(p.into());
            let client = self.client.clone();
            let (id, exec) = (self.id().to_string(), exec_id.clone());
            tokio::spawn(async move {
                if done.await.is_ok() {
                    let _ = client.close_stdin(&id, &exec).await;
                }
            });
        }
        let status = exit.wait().await;
        let _ = self.client.delete_exec(self.id(), &exec_id).await;
        let _ = out_thread.join();
        if let Some(t) = err_thread {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(status?.code as i32)
    }
}

impl Drop for ContainerdTask {
    fn drop(&mut self) {
        if let Ok(mut w) = self.oom_watch.lock() {
            if let Some(h) = w.take() {
                h.abort();
            }
        }
    }
}

impl CommandRunner for ContainerdTask {
    fn run<'a>(
        &'a self,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(i32, Vec<u8>), String>> {
        Box::pin(self.run_captured(argv, timeout))
    }
}

impl Task for ContainerdTask {
    fn start<'a>(&'a self, stdio: &'a StdioPaths) -> BoxFuture<'a, Result<u32, BackendError>> {
        Box::pin(self.start_task(stdio))
    }

    fn running_pid(&self) -> BoxFuture<'_, Option<u32>> {
        Box::pin(async move {
            match self.client.task_state(self.id()).await {
                Ok(s) if matches!(s.status, TaskStatus::Running | TaskStatus::Stopped) => {
                    if s.status == TaskStatus::Running {
                        self.watch_oom();
                    }
                    Some(s.pid)
                }
                _ => None,
            }
        })
    }

    fn wait(&self) -> BoxFuture<'_, Result<i32, BackendError>> {
        Box::pin(self.wait_task())
    }

    fn kill(&self, signal: i32) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { Ok(self.client.kill(self.id(), signal as u32, false).await?) })
    }

    fn is_running(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            self.client
                .task_state(self.id())
                .await
                .map(|s| s.status == TaskStatus::Running)
                .unwrap_or(false)
        })
    }

    fn cleanup(&self) -> BoxFuture<'_, Result<Option<i32>, BackendError>> {
        Box::pin(async move {
            Ok(self
                .client
                .delete_task(self.id())
                .await?
                .map(|s| s.code as i32))
        })
    }

    fn remove(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { Ok(self.client.delete(self.id()).await.map(drop)?) })
    }

    fn exec<'a>(&'a self, req: &'a ExecRequest) -> BoxFuture<'a, Result<i32, BackendError>> {
        Box::pin(self.exec_attached(req))
    }

    fn pause(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { Ok(self.client.pause(self.id()).await?) })
    }

    fn resume(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { Ok(self.client.resume(self.id()).await?) })
    }

    fn resize<'a>(&'a self, exec_id: &'a str, width: u32, height: u32) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self
                .client
                .resize_pty(self.id(), exec_id, width, height)
                .await;
        })
    }

    fn close_stdin(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.client.close_stdin(self.id(), "").await {
                tracing::debug!("closing the stdin of {}: {e}", self.id());
            }
        })
    }

    fn oom_reported(&self) -> bool {
        self.oom.load(Ordering::SeqCst)
    }
}

/// A probe's output FIFO, drained by a thread while the probe runs.
struct ProbeOutput {
    /// Our own writer, so the FIFO has no end-of-file before the shim opens its writers.
    keep: Option<std::fs::File>,
    reader: tokio::task::JoinHandle<Vec<u8>>,
}

impl ProbeOutput {
    /// Output kept; the rest is read and dropped so the probe never blocks on a full pipe.
    const KEEP: usize = 64 * 1024;
    /// How long the shim may take to close its writers once the probe has ended.
    const DRAIN: Duration = Duration::from_secs(5);

    fn open(path: &std::path::Path) -> Result<ProbeOutput, String> {
        use std::os::unix::fs::OpenOptionsExt;
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| format!("mkfifo {}: {e}", path.display()))?;
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        let keep = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        let reader = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            let mut idle_since: Option<std::time::Instant> = None;
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        idle_since = None;
                        let room = Self::KEEP.saturating_sub(out.len());
                        out.extend_from_slice(&buf[..n.min(room)]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        // Bounded only after a long silence: a writer that never closes
                        // does not keep this thread for good.
                        let since = *idle_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() > Duration::from_secs(600) {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            out
        });
        Ok(ProbeOutput {
            keep: Some(keep),
            reader,
        })
    }

    /// Everything written, once the shim's writers are closed (or after [`Self::DRAIN`]).
    async fn finish(mut self) -> Vec<u8> {
        drop(self.keep.take());
        match tokio::time::timeout(Self::DRAIN, &mut self.reader).await {
            Ok(Ok(out)) => out,
            _ => {
                self.reader.abort();
                Vec::new()
            }
        }
    }
}

/// The shim copies stdout and stderr through two pipes, so their lines can pass each other.
/// A shell-form probe (`sh -c SCRIPT`, what `--health-cmd` makes) sends its stderr to its
/// stdout first, so they share one pipe and keep their order; other commands keep each
/// stream's order.
fn shell_merged(argv: &[String]) -> Vec<String> {
    match argv {
        [sh, c, script, rest @ ..]
            if c == "-c" && matches!(sh.as_str(), "/bin/sh" | "sh" | "/bin/bash" | "bash") =>
        {
            let mut v = vec![sh.clone(), c.clone(), format!("exec 2>&1\n{script}")];
            v.extend(rest.iter().cloned());
            v
        }
        _ => argv.to_vec(),
    }
}
