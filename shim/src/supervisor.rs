//! aac-supervisor: the supervisor of one scaled agent. `aac up` starts it detached (its own
//! session, like a monitor); it publishes the agent's ports through its proxy, keeps the
//! replica count, runs the autoscaler, and exits on SIGTERM (`aac down`). The launcher passes
//! one end of a socket as `AAC_SYNC_FD`; one JSON line ([`SupervisorReady`]) says whether the
//! ports are bound.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use aac_runtime::engine::{Engine, EngineConfig, SupervisorReady};
use aac_runtime::scale::{group, supervisor};
use aac_runtime::state::StateDirs;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "aac-supervisor",
    version,
    about = "Supervisor of one scaled aac agent (started by aac up)"
)]
struct Args {
    /// The agent's name.
    #[arg(long)]
    agent: String,
    /// aac's volatile state folder.
    #[arg(long)]
    run_dir: PathBuf,
    /// aac's persistent state folder.
    #[arg(long)]
    data_dir: PathBuf,
}

fn sync_file() -> Option<File> {
    let fd = std::env::var("AAC_SYNC_FD")
        .ok()?
        .parse::<i32>()
        .ok()
        .filter(|fd| *fd > 2)?;
    // Nothing the supervisor starts (monitors, CNI plugins) may hold the launcher's socket.
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .ok()?;
    // SAFETY: the launcher created this descriptor for us and nothing else owns it.
    Some(unsafe { File::from_raw_fd(fd) })
}

fn main() -> std::process::ExitCode {
    // SAFETY: setting signal dispositions before any thread exists.
    unsafe {
        nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_IGN);
        nix::libc::signal(nix::libc::SIGHUP, nix::libc::SIG_IGN);
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AAC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let mut sync = sync_file();
    let mut report = move |r: Result<(), String>| {
        let Some(f) = sync.as_mut() else { return };
        let msg = match r {
            Ok(()) => SupervisorReady {
                ok: true,
                error: String::new(),
            },
            Err(error) => SupervisorReady { ok: false, error },
        };
        if let Ok(mut line) = serde_json::to_vec(&msg) {
            line.push(b'\n');
            let _ = f.write_all(&line);
        }
        sync = None;
    };
    let dirs = StateDirs {
        run: args.run_dir,
        data: args.data_dir,
    };
    let rec = match group::load_record(&dirs, &args.agent) {
        Ok(r) => r,
        Err(e) => {
            report(Err(e.to_string()));
            eprintln!("aac-supervisor: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let config = EngineConfig {
        address: rec.containerd.as_ref().map(|c| c.address.clone()),
        namespace: rec.containerd.as_ref().map(|c| c.namespace.clone()),
    };
    let engine = Engine::with_dirs(dirs, config);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(Err(e.to_string()));
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(supervisor::run(engine, &args.agent, report)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::from(1)
        }
    }
}
