//! aac-shim: the monitor of one container. `aac` starts it detached (its own session); it
//! starts the container, keeps its log, runs its health checks, applies its restart policy and
//! records its status, then exits when the container is gone for good.
//!
//! The launcher passes a pipe as file descriptor `AAC_SYNC_FD`; the shim writes one JSON line
//! ([`StartOutcome`]) there once the first start succeeded or failed, and closes it.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use aac_runtime::containerd::Client;
use aac_runtime::monitor::process_task::ProcessTask;
use aac_runtime::monitor::{self, containerd_task::ContainerdTask, StartOutcome, StartReport};
use aac_runtime::record::{Backend, ContainerRecord};
use aac_runtime::state::StateDirs;
use anyhow::Context;
use clap::Parser;

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

/// Reports the first start on the sync pipe, once.
struct SyncPipe(Option<File>);

impl SyncPipe {
    fn from_env() -> SyncPipe {
        let fd = std::env::var("AAC_SYNC_FD")
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|fd| *fd > 2);
        // SAFETY: the launcher created this descriptor for us and nothing else owns it.
        SyncPipe(fd.map(|fd| unsafe { File::from_raw_fd(fd) }))
    }

    fn send(&mut self, outcome: &StartOutcome) {
        if let Some(mut f) = self.0.take() {
            if let Ok(line) = serde_json::to_string(outcome) {
                let _ = writeln!(f, "{line}");
            }
        }
    }
}

impl StartReport for SyncPipe {
    fn started(&mut self, pid: u32, warnings: &[String]) {
        self.send(&StartOutcome {
            ok: true,
            pid,
            code: 0,
            error: String::new(),
            warnings: warnings.to_vec(),
        });
    }

    fn failed(&mut self, code: i32, message: &str) {
        self.send(&StartOutcome {
            ok: false,
            pid: 0,
            code,
            error: message.to_string(),
            warnings: Vec::new(),
        });
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
    match record.backend {
        Backend::Containerd => {
            let target = record
                .containerd
                .clone()
                .context("the record names no containerd")?;
            let client = Client::connect(&target.address, &target.namespace).await?;
            let task = ContainerdTask::new(client, record.clone(), dirs.clone());
            monitor::run(dirs, &record, &task, sync).await?;
        }
        Backend::Process => {
            let task = ProcessTask::new(record.clone(), dirs.clone());
            monitor::run(dirs, &record, &task, sync).await?;
        }
    }
    Ok(())
}
