//! containerd-shim-aac-v2: aac's containerd runtime shim (runtime type `io.containerd.aac.v2`).
//!
//! One small process per container instead of containerd's Go `containerd-shim-runc-v2`: it
//! speaks shim v2 over ttrpc (rust-extensions' `containerd-shim`, synchronous: no async
//! runtime), runs runc itself and hands the container process the output FIFOs or files
//! directly (no copy through the shim). Task events go to containerd, so `ctr tasks ls`,
//! `Tasks.Wait` and event subscribers see the tasks as with runc's shim.

mod oom;
mod runc;
mod service;
mod stdio;

use std::io::{Read, Write};

fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    if let Ok(flags) = containerd_shim::parse(&args[1..]) {
        if flags.action == "start" {
            start(flags);
        }
        if flags.action.is_empty() && !flags.socket.is_empty() && !flags.namespace.is_empty() {
            serve(flags);
        }
    }
    containerd_shim::run::<service::Service>(service::RUNTIME_ID, None)
}

/// The `start` action: spawn the serving shim and print its socket address. containerd 1.6
/// and 1.7 read a plain address (containerd-shim's own `start` answers in JSON, which 1.6
/// cannot parse); newer ones accept it too.
fn start(flags: containerd_shim::Flags) -> ! {
    // containerd may pipe the runtime options; the task's Create carries them again.
    let mut ignored = Vec::new();
    let _ = std::io::stdin().take(1 << 20).read_to_end(&mut ignored);
    let opts = containerd_shim::StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        ..Default::default()
    };
    match containerd_shim::spawn(opts, &flags.id, Vec::new()) {
        Ok((_pid, address)) => {
            let _ = containerd_shim::util::write_address(&address);
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(address.as_bytes());
            let _ = out.flush();
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{}: {e}", service::RUNTIME_ID);
            std::process::exit(1)
        }
    }
}

/// Serve one container: the task service under containerd 2.x's `containerd.task.v3.Task`
/// and 1.6/1.7's `containerd.task.v2.Task` names (the messages are the same on the wire).
fn serve(flags: containerd_shim::Flags) -> ! {
    match serve_inner(&flags) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            log::error!("{e}");
            eprintln!("{}: {e}", service::RUNTIME_ID);
            std::process::exit(1)
        }
    }
}

fn serve_inner(flags: &containerd_shim::Flags) -> Result<(), String> {
    use containerd_shim::protos::shim::shim_ttrpc::create_task;
    use containerd_shim::protos::ttrpc::Server;
    use containerd_shim::Shim;
    use std::os::fd::IntoRawFd;
    use std::sync::Arc;

    let signals = signal_hook::iterator::Signals::new([
        libc::SIGCHLD,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGPIPE,
    ])
    .map_err(|e| format!("signals: {e}"))?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "becoming a subreaper: {}",
            std::io::Error::last_os_error()
        ));
    }
    let _ = containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id);
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || reap(signals))
        .map_err(|e| format!("reaper thread: {e}"))?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
    let publisher = containerd_shim::publisher::RemotePublisher::new(&ttrpc_address)
        .map_err(|e| format!("connecting to containerd at {ttrpc_address}: {e}"))?;
    let mut config = containerd_shim::Config::default();
    let mut shim = service::Service::new(service::RUNTIME_ID, flags, &mut config);
    let task: Arc<dyn containerd_shim::Task + Send + Sync> =
        Arc::new(shim.create_task_service(publisher));
    let mut methods = create_task(task.clone());
    for (name, handler) in create_task(task) {
        methods.insert(
            name.replace("/containerd.task.v3.", "/containerd.task.v2."),
            handler,
        );
    }
    let path = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket)
        .to_string();
    if let Some(dir) = std::path::Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(&path);
    let listener =
        std::os::unix::net::UnixListener::bind(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut server = Server::new()
        .add_listener(listener.into_raw_fd())
        .map_err(|e| format!("ttrpc: {e}"))?
        .register_service(methods);
    server.start().map_err(|e| format!("ttrpc: {e}"))?;
    // The `start` action reads our stdout until it closes: we serve now.
    // SAFETY: dup2 onto our own stdout.
    unsafe {
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
    shim.wait();
    server.shutdown();
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Reap every child and tell the exit subscribers (runc commands, the task service).
fn reap(mut signals: signal_hook::iterator::Signals) {
    use containerd_shim::synchronous::monitor::monitor_notify_by_pid;
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    for sig in signals.forever() {
        if sig != libc::SIGCHLD {
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    let _ = monitor_notify_by_pid(pid.as_raw(), code);
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    let _ = monitor_notify_by_pid(pid.as_raw(), 128 + sig as i32);
                }
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }
}
