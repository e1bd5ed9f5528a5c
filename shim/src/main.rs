//! aac-shim: the monitor of one container. `aac` starts it detached (its own session); it
//! starts the container, keeps its log, runs its health checks, applies its restart policy and
//! records its status, then exits when the container is gone for good.
//!
//! The launcher passes one end of a socket as file descriptor `AAC_SYNC_FD`; the shim reports
//! on it ([`SyncPipe`]): its start outcome, then each exit of the container's main process, so
//! a foreground `aac run` learns the exit code without polling; the socket closes when the
//! shim exits.

use std::path::PathBuf;

use aac_runtime::monitor::{self, SyncPipe};
use aac_runtime::state::StateDirs;
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
    let dirs = StateDirs {
        run: args.run_dir.clone(),
        data: args.data_dir.clone(),
    };
    if let Err(e) = monitor::run_blocking(&dirs, &args.id, &mut sync) {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}
