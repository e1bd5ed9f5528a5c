//! `start`: launch the container's monitor (aac-shim) in its own session and wait for its
//! first report. The monitor creates and starts the backend's task, copies its output into
//! the log, runs health checks, applies the restart policy, and reports on a socket: its start
//! outcome, then one [`ExitReport`] per exit of the main process; the socket closes when the
//! monitor is done (after removing an `--rm` container).

use std::ffi::OsStr;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::io::io_err;
use crate::monitor::{ExitReport, StartOutcome};
use crate::state::StateDirs;
use crate::status::Phase;

use super::{Container, Engine, EngineError, Result};

/// A started container.
pub struct Started {
    pub pid: u32,
    /// What the backend could not enforce.
    pub warnings: Vec<String>,
    /// The monitor's reports from here on.
    pub link: MonitorLink,
}

/// The aac-shim binary: `$AAC_SHIM`, next to this executable, else on PATH.
pub fn shim_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("AAC_SHIM") {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let p = dir.join("aac-shim");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("aac-shim")
}

/// The launcher's end of the socket a monitor reports on.
pub struct MonitorLink {
    reader: BufReader<UnixStream>,
}

/// Start the monitor of container `id` in its own session and wait for its first report.
pub(crate) fn launch_monitor(dirs: &StateDirs, id: &str) -> Result<(StartOutcome, MonitorLink)> {
    let run_dir = dirs.container_run_dir(id);
    crate::state::create_private_dir(&run_dir)?;
    let log_path = run_dir.join("shim.log");
    let args: [&OsStr; 6] = [
        "--id".as_ref(),
        id.as_ref(),
        "--run-dir".as_ref(),
        dirs.run.as_os_str(),
        "--data-dir".as_ref(),
        dirs.data.as_os_str(),
    ];
    let spawned = super::session::spawn(&shim_binary(), &args, &[], &log_path)?;
    start_outcome(spawned, || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        format!(
            "the monitor (aac-shim) exited without reporting: {}",
            log.trim()
        )
    })
}

/// The monitor's first report (its [`StartOutcome`]) and the link for the rest; `silent` says
/// why there was none.
fn start_outcome(
    spawned: super::session::Spawned,
    silent: impl FnOnce() -> String,
) -> Result<(StartOutcome, MonitorLink)> {
    match spawned
        .first
        .as_deref()
        .and_then(|l| serde_json::from_str::<StartOutcome>(l).ok())
    {
        Some(o) => Ok((
            o,
            MonitorLink {
                reader: spawned.reader,
            },
        )),
        None => Err(EngineError::Start {
            code: 125,
            message: silent(),
        }),
    }
}

/// Whether container `c` can be monitored from inside a foreground `aac run` that stays
/// attached until it exits and is removed: an `--rm` container without a terminal, health
/// check or restart policy needs its monitor only while that command runs. Sparing the
/// separate process is most of a short run's cost. Should the command be killed, the
/// container runs on and the next aac command that looks at it gives it a monitor, as for a
/// monitor that died.
pub(crate) fn monitor_in_process(c: &Container) -> bool {
    let spec = &c.rec.agent.spec;
    c.rec.auto_remove
        && !c.rec.tty
        && spec.health_check.is_none()
        && spec.restart_policy == crate::agent::RestartPolicy::No
        && std::env::var_os("AAC_MONITOR_PROCESS").is_none()
}

/// [`launch_monitor`] on a thread of this process rather than in aac-shim: the same monitor
/// reports on the same kind of socket.
pub(crate) fn launch_monitor_here(
    dirs: &StateDirs,
    id: &str,
) -> Result<(StartOutcome, MonitorLink)> {
    let sock_err = |e: std::io::Error| {
        EngineError::Io(crate::io::IoError::new("using", "the monitor's socket", e))
    };
    let (ours, theirs) = UnixStream::pair().map_err(sock_err)?;
    let dirs = dirs.clone();
    let thread_id = id.to_string();
    std::thread::Builder::new()
        .name("aac-monitor".into())
        .spawn(move || {
            let mut report = crate::monitor::SyncPipe::new(theirs.into());
            if let Err(e) = crate::monitor::run_blocking(&dirs, &thread_id, &mut report) {
                tracing::warn!("monitor of {thread_id}: {e}");
            }
        })
        .map_err(sock_err)?;
    let spawned = super::session::first_report(ours).map_err(sock_err)?;
    start_outcome(spawned, || {
        format!("the monitor of {id} ended without reporting")
    })
}

impl MonitorLink {
    /// Follow the monitor's later reports from async code.
    pub fn into_async(self) -> Result<AsyncMonitorLink> {
        // Lines the monitor sent with its start outcome are already in our buffer.
        let buffered = std::io::Cursor::new(self.reader.buffer().to_vec());
        let stream = self.reader.into_inner();
        let wrap = |e: std::io::Error| {
            EngineError::Io(crate::io::IoError::new("using", "the monitor's socket", e))
        };
        stream.set_nonblocking(true).map_err(wrap)?;
        let (read, write) = tokio::net::UnixStream::from_std(stream)
            .map_err(wrap)?
            .into_split();
        Ok(AsyncMonitorLink {
            lines: tokio::io::BufReader::new(buffered.chain(read)).lines(),
            write: Some(write),
            closed: false,
        })
    }
}

type LinkLines = tokio::io::Lines<
    tokio::io::BufReader<tokio::io::Chain<std::io::Cursor<Vec<u8>>, OwnedReadHalf>>,
>;

/// [`MonitorLink`] for async code.
pub struct AsyncMonitorLink {
    lines: LinkLines,
    /// Dropping it tells the monitor we are done (shutdown of our sending side).
    write: Option<OwnedWriteHalf>,
    /// The monitor closed its side: it is done, or died, or was replaced.
    pub closed: bool,
}

impl AsyncMonitorLink {
    /// The exit code of the next exit of the main process; `None` once the monitor has closed
    /// its side without reporting one. Cancel-safe (`tokio::select!`).
    pub async fn next_exit(&mut self) -> Option<i32> {
        while !self.closed {
            match self.lines.next_line().await {
                Ok(Some(line)) => {
                    if let Ok(r) = serde_json::from_str::<ExitReport>(&line) {
                        return Some(r.exit_code);
                    }
                    tracing::debug!("monitor said: {line}");
                }
                Ok(None) | Err(_) => self.closed = true,
            }
        }
        None
    }

    /// Tell the monitor we no longer read the container's records (an `--rm` container's
    /// monitor waits for that before removing them), then wait, at most `timeout`, until it
    /// closes its side. Returns whether it did.
    pub async fn release(&mut self, timeout: Duration) -> bool {
        drop(self.write.take());
        let closed = async { while self.next_exit().await.is_some() {} };
        tokio::time::timeout(timeout, closed).await.is_ok()
    }
}

impl Engine {
    /// Start a created container: its monitor starts the main process. On failure the
    /// monitor has undone the backend's side; the container stays recorded (see
    /// [`Engine::run`], which removes it).
    pub async fn start(&self, c: &Container) -> Result<Started> {
        self.start_with(c, false).await
    }

    /// [`Engine::start`]; `attached` when the caller follows the container until it is gone
    /// (a foreground `aac run`), which may then run its monitor ([`monitor_in_process`]).
    pub(crate) async fn start_with(&self, c: &Container, attached: bool) -> Result<Started> {
        if c.status.phase != Phase::Created {
            return Err(EngineError::State(format!(
                "container {} has already been started",
                c.rec.name
            )));
        }
        let dirs = self.dirs.clone();
        let id = c.rec.id.clone();
        let here = attached && monitor_in_process(c);
        let (outcome, link) = tokio::task::spawn_blocking(move || {
            if here {
                launch_monitor_here(&dirs, &id)
            } else {
                launch_monitor(&dirs, &id)
            }
        })
        .await
        .map_err(|e| EngineError::State(format!("starting the monitor: {e}")))??;
        if !outcome.ok {
            return Err(EngineError::Start {
                code: outcome.code,
                message: outcome.error,
            });
        }
        tracing::debug!(pid = outcome.pid, "container started");
        Ok(Started {
            pid: outcome.pid,
            warnings: outcome.warnings,
            link,
        })
    }

    /// Copy this process's stdin into the container's stdin FIFO (`-i`); when it ends, the
    /// main process reads end-of-file.
    pub fn attach_stdin(&self, c: &Container) -> Result<()> {
        let fifo = self.run_dir(&c.rec.id).join("stdin");
        let done = crate::backend::forward_stdin(fifo);
        let engine = self.clone();
        let c = c.clone();
        tokio::spawn(async move {
            if done.await.is_ok() {
                if let Ok(task) = engine.task(&c).await {
                    task.close_stdin().await;
                }
            }
        });
        Ok(())
    }

    /// The container's status as recorded now.
    pub fn status(&self, c: &Container) -> crate::status::ContainerStatus {
        self.reload(c).status
    }

    /// A shared lock a foreground client holds while it reads a container's final status:
    /// the monitor of an `--rm` container waits for it before removing the records.
    pub fn attach_lock(&self, c: &Container) -> Result<nix::fcntl::Flock<std::fs::File>> {
        let run_dir = self.run_dir(&c.rec.id);
        crate::state::create_private_dir(&run_dir)?;
        let path = run_dir.join("attach.lock");
        let f = crate::state::private_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockShared)
            .map_err(|(_, e)| io_err("locking", &path)(e.into()).into())
    }
}
