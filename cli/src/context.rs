//! What every command shares: where containerd is, aac's state folders, launching monitors.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use aac_runtime::containerd::{self, Client};
use aac_runtime::monitor::{ExitReport, StartOutcome};
use aac_runtime::record::{ContainerRecord, ContainerdTarget};
use aac_runtime::state::StateDirs;
use anyhow::{anyhow, Context as _};
use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// Options of every command that talks to containerd.
#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// containerd socket (default: $CONTAINERD_ADDRESS, else /run/containerd/containerd.sock).
    #[arg(long, global = true, value_name = "SOCKET")]
    pub address: Option<PathBuf>,
    /// containerd namespace (default: $AAC_NAMESPACE, else "aac").
    #[arg(long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
}

pub struct Ctx {
    pub global: Global,
    pub dirs: StateDirs,
}

impl Ctx {
    pub fn new(global: Global) -> Ctx {
        Ctx {
            global,
            dirs: StateDirs::from_env(),
        }
    }

    pub fn containerd_target(&self) -> ContainerdTarget {
        ContainerdTarget {
            address: containerd::default_address(self.global.address.as_deref()),
            namespace: containerd::default_namespace(self.global.namespace.as_deref()),
        }
    }

    /// Connect to containerd; the error says where it looked and how to start it.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let t = self.containerd_target();
        Ok(Client::connect(&t.address, &t.namespace).await?)
    }

    /// Connect to the containerd a container was created on.
    pub async fn client_for(&self, rec: &ContainerRecord) -> anyhow::Result<Client> {
        match &rec.containerd {
            Some(t) => Ok(Client::connect(&t.address, &t.namespace).await?),
            None => self.client().await,
        }
    }
}

/// With the calling user's rootless containerd as the target, join RootlessKit's user, mount
/// and network namespaces (as nerdctl does), so that network namespaces, CNI and bind mounts
/// are made where containerd and runc run. Nothing to do for root, for another containerd,
/// or when already inside. Call while the process is still single-threaded.
pub fn enter_rootlesskit(global: &Global) -> anyhow::Result<()> {
    use aac_runtime::rootlesskit::{self, Rootlesskit};
    if rootlesskit::entered_uid().is_some() || nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let Some(socket) = rootlesskit::user_containerd_socket() else {
        return Ok(());
    };
    if containerd::default_address(global.address.as_deref()) != socket {
        return Ok(());
    }
    let Some(kit) = Rootlesskit::find()? else {
        tracing::debug!(socket = %socket.display(), "rootless containerd without RootlessKit state: not entering namespaces");
        return Ok(());
    };
    let uid = nix::unistd::geteuid().as_raw();
    // Still single-threaded (see main): nothing reads the environment concurrently.
    std::env::set_var("CONTAINERD_ADDRESS", &socket);
    std::env::set_var(rootlesskit::UID_ENV, uid.to_string());
    kit.enter()?;
    tracing::debug!(
        pid = kit.child_pid,
        "running inside RootlessKit's namespaces"
    );
    Ok(())
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

/// The launcher's end of the socket a monitor reports on (see aac-shim): its start outcome,
/// then one [`ExitReport`] per exit of the container's main process; it closes when the
/// monitor is done (after removing an `--rm` container).
pub struct MonitorLink {
    reader: BufReader<UnixStream>,
}

/// Start the monitor of container `id` in its own session and wait for its first report.
pub fn launch_monitor(dirs: &StateDirs, id: &str) -> anyhow::Result<(StartOutcome, MonitorLink)> {
    let run_dir = dirs.container_run_dir(id);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let log_path = run_dir.join("shim.log");
    // Appended to: a re-attached monitor keeps what its predecessor said.
    let shim_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    // Both ends close-on-exec; the monitor's end becomes its descriptor 3 (dup2 clears the
    // flag on the copy).
    let (ours, theirs) = UnixStream::pair().context("creating the monitor's socket")?;
    let their_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(shim_binary());
    cmd.arg("--id")
        .arg(id)
        .arg("--run-dir")
        .arg(&dirs.run)
        .arg("--data-dir")
        .arg(&dirs.data)
        .env("AAC_SYNC_FD", "3")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(shim_log);
    // SAFETY: only async-signal-safe calls (setsid, dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if nix::libc::dup2(their_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", shim_binary().display()))?;
    drop(theirs);
    // The monitor lives on in its own session; reap it in the background if we outlive it.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    let mut reader = BufReader::new(ours);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .context("reading the monitor's report")?;
    match serde_json::from_str::<StartOutcome>(line.trim()) {
        Ok(o) => Ok((o, MonitorLink { reader })),
        Err(_) => {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            Err(anyhow!(
                "the monitor (aac-shim) exited without reporting: {}",
                log.trim()
            ))
        }
    }
}

impl MonitorLink {
    /// Follow the monitor's later reports from async code.
    pub fn into_async(self) -> anyhow::Result<AsyncMonitorLink> {
        // Lines the monitor sent with its start outcome are already in our buffer.
        let buffered = std::io::Cursor::new(self.reader.buffer().to_vec());
        let stream = self.reader.into_inner();
        stream.set_nonblocking(true)?;
        let (read, write) = tokio::net::UnixStream::from_std(stream)?.into_split();
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
