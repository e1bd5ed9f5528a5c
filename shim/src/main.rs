//! aac-shim: the monitor of one container. `aac` starts it detached (its own session); it
//! starts the container, keeps its log, runs its health checks, applies its restart policy and
//! records its status, then exits when the container is gone for good.
//!
//! The launcher passes one end of a socket as file descriptor `AAC_SYNC_FD`. The shim writes
//! one JSON line ([`StartOutcome`]) there once the first start succeeded or failed, then one
//! line ([`ExitReport`]) per exit of the container's main process, so a foreground `aac run`
//! learns the exit code without polling. For an `--rm` container it waits, before removing
//! the records, until the launcher shuts down its side of the socket (or is gone), and the
//! socket closes when the shim exits: a foreground `aac run --rm` returns once it sees that.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aac_runtime::backend;
use aac_runtime::monitor::{self, ExitReport, StartOutcome, StartReport};
use aac_runtime::record::ContainerRecord;
use aac_runtime::state::StateDirs;
use anyhow::Context;
use clap::Parser;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

#[derive(Parser, Debug)]
#[command(
    name = "aac-shim",
    version,
    about = "Monitor of one aac container (started by aac)"
)]
struct Args {
    /// Container ID.
    #[arg(long)]
    id: String,
    /// aac's volatile state folder.
    #[arg(long)]
    run_dir: PathBuf,
    /// aac's persistent state folder.
    #[arg(long)]
    data_dir: PathBuf,
}

/// Reports to the launcher on the socket (or pipe) at `AAC_SYNC_FD`.
struct SyncPipe {
    file: Option<File>,
    /// The start outcome went out: a later failure is not a failed start.
    reported: bool,
}

impl SyncPipe {
    fn from_env() -> SyncPipe {
        let fd = std::env::var("AAC_SYNC_FD")
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|fd| *fd > 2);
        let Some(fd) = fd else {
            return SyncPipe::closed();
        };
        // Nothing the monitor starts (CNI plugins, health probes) may hold the launcher's
        // socket open: it closes when the monitor is done.
        if let Err(e) = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        ) {
            tracing::warn!("AAC_SYNC_FD={fd}: {e}");
            return SyncPipe::closed();
        }
        SyncPipe {
            // SAFETY: the launcher created this descriptor for us and nothing else owns it.
            file: Some(unsafe { File::from_raw_fd(fd) }),
            reported: false,
        }
    }

    fn closed() -> SyncPipe {
        SyncPipe {
            file: None,
            reported: false,
        }
    }

    /// Write one line; a launcher that is gone (EPIPE; SIGPIPE is ignored) is not told again.
    fn send<T: serde::Serialize>(&mut self, message: &T) {
        let Some(f) = self.file.as_mut() else { return };
        let Ok(mut line) = serde_json::to_vec(message) else {
            return;
        };
        line.push(b'\n');
        if f.write_all(&line).is_err() {
            self.file = None;
        }
    }
}

impl StartReport for SyncPipe {
    fn started(&mut self, pid: u32, warnings: &[String]) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        self.send(&StartOutcome {
            ok: true,
            pid,
            code: 0,
            error: String::new(),
            warnings: warnings.to_vec(),
        });
    }

    fn failed(&mut self, code: i32, message: &str) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        self.send(&StartOutcome {
            ok: false,
            pid: 0,
            code,
            error: message.to_string(),
            warnings: Vec::new(),
        });
        // Nothing follows a failed start.
        self.file = None;
    }

    fn exited(&mut self, code: i32) {
        self.send(&ExitReport { exit_code: code });
    }

    fn wait_released(&mut self, timeout: Duration) {
        let Some(f) = self.file.as_mut() else { return };
        // The launcher sends nothing: end-of-file (or an error) means it is done or gone.
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 64];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            if ms == 0 {
                tracing::warn!("the launcher did not release the container within {timeout:?}");
                return;
            }
            let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => match f.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                },
                Err(_) => return,
            }
        }
    }
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AAC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    // A container's monitor must not die with the terminal that started aac.
    // SAFETY: installing SIG_IGN has no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGHUP,
            nix::sys::signal::SigHandler::SigIgn,
        );
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    // Whatever the monitor writes is its user's alone (logs, status); containers get their
    // own umask.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut sync = SyncPipe::from_env();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            sync.failed(125, &format!("aac-shim: starting its runtime: {e}"));
            std::process::exit(125);
        }
    };
    let dirs = StateDirs {
        run: args.run_dir.clone(),
        data: args.data_dir.clone(),
    };
    let result = rt.block_on(run(&dirs, &args.id, &mut sync));
    if let Err(e) = result {
        sync.failed(125, &format!("{e:#}"));
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

async fn run(dirs: &StateDirs, id: &str, sync: &mut SyncPipe) -> anyhow::Result<()> {
    let record = ContainerRecord::load(dirs, id).context("reading the container record")?;
    let task = backend::open(dirs, &record).await?;
    monitor::run(dirs, &record, task.as_ref(), sync).await?;
    Ok(())
}
