//! The per-container monitor that aac-shim runs: it starts the container's main process,
//! copies its output into the json-file log, runs health checks, applies the restart policy
//! and records everything in the container's status file. It outlives the CLI; the container
//! outlives it (a new monitor can adopt a running container).
//!
//! The monitor owns stdout/stderr FIFOs in the container's volatile folder. They are opened
//! read-write so the monitor never sees end-of-file between restarts; after a task is gone,
//! what is left in them is drained without blocking.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::agent::{OnUnhealthy, RestartPolicy};
use crate::backend::{BackendError, StdioPaths, Task};
use crate::events::{self, Event, EventType};
use crate::health;
use crate::logs::{format_time, LogWriter, Stream};
use crate::record::{self, ContainerRecord};
use crate::state::{StateDirs, StateError};
use crate::status::{Health, HealthStatus, Phase};

mod report;
pub use report::SyncPipe;

/// First restart delay; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// `onUnhealthy: stop`: time between SIGTERM and SIGKILL (docker's stop default).
pub const UNHEALTHY_STOP_GRACE: Duration = Duration::from_secs(10);
/// A run this long resets the back-off.
pub const BACKOFF_RESET: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Log(#[from] crate::logs::LogError),
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    /// The backend failed; its exit code is 126/127 when the command could not run.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl MonitorError {
    pub fn backend(message: impl std::fmt::Display, exit_code: Option<i32>) -> Self {
        MonitorError::Backend(BackendError::new(message, exit_code))
    }

    /// docker-style exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            MonitorError::Backend(e) => e.exit_code(),
            _ => 125,
        }
    }
}

/// How the monitor reports to the CLI that launched it: the first start, then each exit of
/// the main process, and, for an `--rm` container, when its records are gone.
pub trait StartReport {
    /// `warnings`: what the backend could not enforce ([`Task::warnings`]).
    fn started(&mut self, pid: u32, warnings: &[String]);
    fn failed(&mut self, code: i32, message: &str);
    /// The main process exited with `code`; its output is in the log and its status is saved.
    fn exited(&mut self, _code: i32) {}
    /// Before an `--rm` container's records go: wait, at most `timeout`, until the launcher
    /// says it has read what it needs from them (or is gone).
    fn wait_released(&mut self, _timeout: Duration) {}
}

/// What the monitor sends after the [`StartOutcome`], one JSON line per exit of the main
/// process: `{"exitCode":0}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitReport {
    pub exit_code: i32,
}

/// How long the monitor of an `--rm` container waits for a foreground CLI to finish reading
/// before it removes the records.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome the launcher reads from the sync pipe, one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StartOutcome {
    pub ok: bool,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub code: i32,
    #[serde(default)]
    pub error: String,
    /// Limits or settings the backend could not enforce, one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The buffer asked for the output FIFOs (`/proc/sys/fs/pipe-max-size` is 1 MiB by default).
const PIPE_SIZE: nix::libc::c_int = 1 << 20;

/// Create the FIFOs (if needed) and open their read ends without blocking.
pub fn open_fifos(stdio: &StdioPaths) -> Result<(pipe::Receiver, pipe::Receiver), MonitorError> {
    let mut paths = vec![stdio.stdout.clone(), stdio.stderr.clone()];
    paths.extend(stdio.stdin.clone());
    for p in &paths {
        if let Some(dir) = p.parent() {
            crate::state::create_private_dir(dir)?;
        }
        match nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(crate::io::IoError::new("creating the FIFO", p, e.into()).into()),
        }
    }
    let open = |p: &Path| {
        let rx = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(p)
            .map_err(|e| MonitorError::from(crate::io::IoError::new("opening", p, e)))?;
        // A bigger pipe buffer (the kernel's default is 64 KiB) lets a chatty container run on
        // while the monitor writes the log; the limit for unprivileged users may be lower, and
        // the default is kept then.
        let _ = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&rx),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE),
        );
        Ok::<_, MonitorError>(rx)
    };
    Ok((open(&stdio.stdout)?, open(&stdio.stderr)?))
}

type SharedLog = Arc<Mutex<LogWriter>>;

fn log_write(log: &SharedLog, stream: Stream, data: &[u8], tty: bool) {
    if let Ok(mut w) = log.lock() {
        w.write(stream, data);
        if tty {
            // A terminal shows prompts without newlines: hand them out at once.
            w.flush_partial();
        }
    }
}

/// Copy one FIFO into the log until the task is told to stop; then drain what is buffered.
async fn pump(
    mut rx: pipe::Receiver,
    stream: Stream,
    log: SharedLog,
    tty: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> pipe::Receiver {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            r = rx.read(&mut buf) => match r {
                Ok(0) => break,
                Ok(n) => log_write(&log, stream, &buf[..n], tty),
                Err(e) => {
                    tracing::warn!("reading container {stream:?}: {e}");
                    break;
                }
            },
            _ = stop.changed() => {
                // Writers are gone: whatever remains is in the pipe buffer. Read the (non-
                // blocking) descriptor directly: `try_read` answers WouldBlock while the
                // reactor has not yet seen the last readiness event, which lost output.
                loop {
                    match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&rx), &mut buf) {
                        Ok(0) => break,
                        Ok(n) => log_write(&log, stream, &buf[..n], tty),
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(_) => break,
                    }
                }
                break;
            }
        }
    }
    rx
}

struct Pumps {
    stop: tokio::sync::watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<pipe::Receiver>>,
}

impl Pumps {
    fn spawn(out: pipe::Receiver, err: pipe::Receiver, log: &SharedLog, tty: bool) -> Pumps {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let handles = vec![
            tokio::spawn(pump(out, Stream::Stdout, log.clone(), tty, rx.clone())),
            tokio::spawn(pump(err, Stream::Stderr, log.clone(), tty, rx)),
        ];
        Pumps { stop, handles }
    }

    /// Stop and drain; returns the FIFOs for the next run.
    async fn finish(self) -> Option<(pipe::Receiver, pipe::Receiver)> {
        let _ = self.stop.send(true);
        let mut rxs = Vec::new();
        for h in self.handles {
            if let Ok(rx) = h.await {
                rxs.push(rx);
            }
        }
        let err = rxs.pop()?;
        let out = rxs.pop()?;
        Some((out, err))
    }
}

fn record_event(dirs: &StateDirs, e: Event) {
    if let Err(err) = events::append(dirs, &e) {
        tracing::warn!("recording event: {err}");
    }
}

/// File in the container's volatile folder that its monitor holds an exclusive `flock` on for
/// as long as it runs: the kernel drops the lock when the monitor dies, however it dies.
pub const MONITOR_LOCK: &str = "monitor.lock";

fn open_monitor_lock(dirs: &StateDirs, id: &str, create: bool) -> io::Result<std::fs::File> {
    let dir = dirs.container_run_dir(id);
    if create {
        crate::state::create_private_dir(&dir).map_err(|e| e.source)?;
    }
    std::fs::OpenOptions::new()
        .create(create)
        .truncate(false)
        .write(true)
        .open(dir.join(MONITOR_LOCK))
}

/// Take the monitor lock of container `id`, waiting a little for a concurrent check
/// ([`monitor_running`] holds it for an instant). Fails when another monitor holds it.
pub fn lock_monitor(
    dirs: &StateDirs,
    id: &str,
) -> Result<nix::fcntl::Flock<std::fs::File>, MonitorError> {
    let mut f = open_monitor_lock(dirs, id, true).map_err(|e| {
        crate::io::IoError::new("opening", dirs.container_run_dir(id).join(MONITOR_LOCK), e)
    })?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, e)) => {
                if Instant::now() >= deadline {
                    return Err(MonitorError::backend(
                        format!("container {id} already has a monitor ({e})"),
                        None,
                    ));
                }
                f = back;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a live monitor holds the lock of container `id`.
pub fn monitor_running(dirs: &StateDirs, id: &str) -> bool {
    let Ok(f) = open_monitor_lock(dirs, id, false) else {
        return false;
    };
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_free) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Save the status; never fatal for the monitor. On a full disk the atomic write (a new file)
/// fails, so the record is then overwritten in place, which usually needs no new blocks.
pub fn save_status(dirs: &StateDirs, rec: &ContainerRecord, st: &crate::status::ContainerStatus) {
    let id = rec.id.as_str();
    let Err(e) = record::save_status_with(dirs, id, st, rec.durability()) else {
        return;
    };
    let path = dirs.container_dir(id).join(crate::state::STATUS_FILE);
    let in_place = || -> io::Result<()> {
        use std::io::Write;
        let body = serde_json::to_vec(st).map_err(io::Error::other)?;
        let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
        f.write_all(&body)?;
        f.set_len(body.len() as u64)?;
        Ok(())
    };
    if let Err(e2) = in_place() {
        tracing::warn!("recording the status of {id}: {e}; in place: {e2}");
    }
}

/// The restart policy as recorded now (`aac update --restart` changes it while it runs).
fn current_policy(dirs: &StateDirs, id: &str, started_with: RestartPolicy) -> RestartPolicy {
    ContainerRecord::load(dirs, id)
        .map(|r| r.agent.spec.restart_policy)
        .unwrap_or(started_with)
}

/// Whether restart policy `policy` restarts after exit `code`, `restarts` restarts so far.
pub fn should_restart(policy: RestartPolicy, code: i32, restarts: u32) -> bool {
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure { max_retries } => {
            code != 0 && max_retries.is_none_or(|m| restarts < m)
        }
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
    }
}

/// The delay before the next restart, given the current back-off and how long the process
/// ran, and the back-off after that: 100 ms doubling to 1 min, reset by a 10 s run.
pub fn restart_delay(current: Duration, ran: Duration) -> (Duration, Duration) {
    let delay = if ran >= BACKOFF_RESET {
        FIRST_BACKOFF
    } else {
        current
    };
    (delay, (delay * 2).min(MAX_BACKOFF))
}

/// Load container `id`'s record, open its backend and [`run`] its monitor.
pub async fn run_container(
    dirs: &StateDirs,
    id: &str,
    report: &mut dyn StartReport,
) -> Result<(), MonitorError> {
    let record = match ContainerRecord::load(dirs, id) {
        Ok(r) => r,
        Err(e) => {
            report.failed(125, &format!("reading the container record: {e}"));
            return Err(e.into());
        }
    };
    let task = match crate::backend::open(dirs, &record).await {
        Ok(t) => t,
        Err(e) => {
            report.failed(e.exit_code(), &e.to_string());
            return Err(e.into());
        }
    };
    run(dirs, &record, task.as_ref(), report).await
}

/// [`run_container`] on this thread, in a runtime of its own (aac-shim's main thread, or the
/// thread of `aac run` that monitors its own container). A failed start is reported on
/// `report`; a failure after a reported start is returned only (the caller logs it).
pub fn run_blocking(dirs: &StateDirs, id: &str, report: &mut SyncPipe) -> Result<(), MonitorError> {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            MonitorError::from(crate::io::IoError::new(
                "starting",
                "the monitor's runtime",
                e,
            ))
        })
        .and_then(|rt| rt.block_on(run_container(dirs, id, report)));
    if let Err(e) = &result {
        if !report.has_started() {
            report.failed(e.exit_code(), &e.to_string());
        }
    }
    result
}

/// Run the monitor for container `id` until it is gone for good.
pub async fn run(
    dirs: &StateDirs,
    rec: &ContainerRecord,
    task: &dyn Task,
    report: &mut dyn StartReport,
) -> Result<(), MonitorError> {
    let id = rec.id.as_str();
    let _lock = match lock_monitor(dirs, id) {
        Ok(l) => l,
        Err(e) => {
            report.failed(125, &e.to_string());
            return Err(e);
        }
    };
    let mut status = record::load_status(dirs, id)?;
    // A container that ran before is adopted (its monitor died), never rolled back.
    let initial = status.phase == Phase::Created;
    if status.phase == Phase::Exited {
        let e = MonitorError::backend(format!("container {id} has exited"), None);
        report.failed(125, &e.to_string());
        return Err(e);
    }
    let stdio = StdioPaths::for_container(dirs, rec);
    let (mut out, mut err) = open_fifos(&stdio)?;
    let logging = &rec.agent.spec.logging;
    let log: SharedLog = Arc::new(Mutex::new(LogWriter::open(
        &dirs.container_dir(id),
        logging.max_size.0,
        logging.max_file,
    )?));
    status.monitor_pid = Some(std::process::id());
    let health_check = rec.agent.spec.health_check.clone();
    let policy = rec.agent.spec.restart_policy;
    let stop_marker = record::stop_marker(dirs, id);
    let mut backoff = FIRST_BACKOFF;
    let mut first = true;
    let mut adopted = if initial {
        None
    } else {
        task.running_pid().await
    };
    if !initial && adopted.is_none() && stop_marker.exists() {
        // Stopped while it had no monitor: it stays stopped.
        status.phase = Phase::Exited;
        status.pid = None;
        status.monitor_pid = None;
        status.stopped_by_user = true;
        save_status(dirs, rec, &status);
        report.failed(125, &format!("container {id} was stopped"));
        release_network(dirs, id);
        return Ok(());
    }
    // Egress policy (spec.network.security): rules and resolver in the agent's network
    // namespace before its first instruction; a monitor that adopts it starts them again.
    let egress = match crate::egress::Guard::for_container(dirs, rec) {
        Ok(g) => g,
        Err(e) if initial => {
            let e = MonitorError::backend(e, None);
            report.failed(125, &e.to_string());
            return Err(e);
        }
        Err(e) => {
            tracing::error!("container {id}: egress policy: {e}; its DNS fails until a monitor starts the resolver");
            None
        }
    };
    match adopted {
        Some(pid) => tracing::info!("adopting container {id} (pid {pid})"),
        // Its monitor died while it was restarting: this start is the restart.
        None if !initial => status.restart_count += 1,
        None => {}
    }

    loop {
        let pumps = Pumps::spawn(out, err, &log, rec.tty);
        let oom_before = rec.cgroup.oom_kills();
        let was_adopted = adopted.is_some();
        let pid = match adopted.take() {
            Some(pid) => pid,
            None => match task.start(&stdio).await {
                Ok(pid) => {
                    status.started_at = Some(format_time(SystemTime::now()));
                    pid
                }
                Err(e) => {
                    let code = e.exit_code();
                    let _ = pumps.finish().await;
                    if first && initial {
                        // Nothing ran: undo the backend's side; the launcher, told below,
                        // undoes its own (records, name, network).
                        if let Err(re) = task.remove().await {
                            tracing::warn!("rolling back container {id}: {re}");
                        }
                        report.failed(code, &e.to_string());
                        return Err(e.into());
                    }
                    status.phase = Phase::Exited;
                    status.exit_code = Some(code);
                    status.error = Some(e.to_string());
                    status.finished_at = Some(format_time(SystemTime::now()));
                    status.pid = None;
                    status.monitor_pid = None;
                    save_status(dirs, rec, &status);
                    if first {
                        report.failed(code, &e.to_string());
                    }
                    record_event(
                        dirs,
                        Event::new(EventType::Die, id, &rec.name).with("exitCode", code),
                    );
                    drop(egress);
                    release_network(dirs, id);
                    if rec.auto_remove {
                        report.wait_released(RELEASE_TIMEOUT);
                        remove_all(dirs, rec, task).await;
                    }
                    return Err(e.into());
                }
            },
        };
        let started = Instant::now();
        status.phase = Phase::Running;
        status.pid = Some(pid);
        status.error = None;
        if !(was_adopted && status.health.is_some()) {
            status.health = health_check.as_ref().map(|_| Health::default());
        }
        save_status(dirs, rec, &status);
        if !was_adopted {
            record_event(
                dirs,
                Event::new(
                    if first && initial {
                        EventType::Start
                    } else {
                        EventType::Restart
                    },
                    id,
                    &rec.name,
                ),
            );
        }
        if first {
            report.started(pid, &task.warnings());
            first = false;
        }

        // Wait for the exit, probing health meanwhile.
        let mut forced_restart = false;
        let code = {
            let wait = task.wait();
            tokio::pin!(wait);
            let mut next_probe = health_check.as_ref().map(|h| started + h.interval);
            // `onUnhealthy: stop` sends SIGTERM, then SIGKILL after this.
            let mut kill_at: Option<Instant> = None;
            // Lines dropped on a full disk are reported while it runs, not only at its exit.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let sleep_for = next_probe
                    .map(|t| t.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_secs(3600));
                tokio::select! {
                    r = &mut wait => break r,
                    _ = tokio::time::sleep(kill_at.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or_default()), if kill_at.is_some() => {
                        kill_at = None;
                        let _ = task.kill(libc_sigkill()).await;
                    }
                    _ = tick.tick() => {
                        let dropped = log.lock().map(|w| w.dropped).unwrap_or(0);
                        if dropped != status.log_dropped_lines {
                            status.log_dropped_lines = dropped;
                            save_status(dirs, rec, &status);
                        }
                    }
                    _ = tokio::time::sleep(sleep_for), if next_probe.is_some() => {
                        let Some(h) = health_check.as_ref() else { continue };
                        next_probe = Some(Instant::now() + h.interval);
                        let result = health::run_probe(&h.probe, pid, h.timeout, task).await;
                        let in_start = started.elapsed() < h.start_period;
                        let health = status.health.get_or_insert_with(Health::default);
                        if let Some(changed) = health.record(result, in_start, h.retries) {
                            record_event(dirs, Event::new(EventType::HealthStatus, id, &rec.name)
                                .with("health", format!("{changed:?}").to_lowercase()));
                            if changed == HealthStatus::Unhealthy {
                                match h.on_unhealthy {
                                    OnUnhealthy::None => {}
                                    OnUnhealthy::Restart => {
                                        forced_restart = true;
                                        let _ = task.kill(libc_sigkill()).await;
                                    }
                                    // SIGKILL, not a stop: the restart policy decides.
                                    OnUnhealthy::Kill => {
                                        let _ = task.kill(libc_sigkill()).await;
                                    }
                                    OnUnhealthy::Stop => {
                                        let _ = std::fs::write(&stop_marker, b"unhealthy");
                                        let _ = task.kill(libc_sigterm()).await;
                                        kill_at = Some(Instant::now() + UNHEALTHY_STOP_GRACE);
                                    }
                                }
                            }
                        }
                        if let Ok(w) = log.lock() {
                            status.log_dropped_lines = w.dropped;
                        }
                        save_status(dirs, rec, &status);
                    }
                }
            }
        };
        let code = match code {
            Ok(c) => c,
            Err(e) => {
                // containerd went away or the task vanished: record what we know.
                tracing::warn!("waiting for the container: {e}");
                status.error = Some(e.to_string());
                // A backend that knows how the task ended says so (a killed shim: 137).
                e.exit_code.unwrap_or(-1)
            }
        };
        let ran = started.elapsed();
        // Any OOM kill in its cgroup during this run (docker's rule); the count starts over
        // with each new cgroup.
        let oom = rec.cgroup.oom_kills() > oom_before || task.oom_reported();
        if let Err(e) = task.cleanup().await {
            tracing::warn!("releasing the exited task: {e}");
        }
        match pumps.finish().await {
            Some((o, r)) => {
                out = o;
                err = r;
            }
            None => {
                let (o, r) = open_fifos(&stdio)?;
                out = o;
                err = r;
            }
        }
        if let Ok(mut w) = log.lock() {
            w.flush_partial();
            status.log_dropped_lines = w.dropped;
        }
        status.pid = None;
        status.exit_code = Some(code);
        status.oom_killed = oom;
        status.finished_at = Some(format_time(SystemTime::now()));
        let stopped = stop_marker.exists();
        status.stopped_by_user = stopped;
        if oom {
            record_event(dirs, Event::new(EventType::Oom, id, &rec.name));
        }
        record_event(
            dirs,
            Event::new(EventType::Die, id, &rec.name).with("exitCode", code),
        );

        let restart = !stopped
            && (forced_restart
                || should_restart(current_policy(dirs, id, policy), code, status.restart_count));
        if !restart {
            // The final status: exited, and no monitor from now on.
            status.phase = Phase::Exited;
            status.monitor_pid = None;
            save_status(dirs, rec, &status);
            report.exited(code);
            break;
        }
        let (delay, next) = restart_delay(backoff, ran);
        backoff = next;
        status.phase = Phase::Restarting;
        save_status(dirs, rec, &status);
        report.exited(code);
        // Sleep the back-off, but give in at once to a stop request.
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline && !stop_marker.exists() {
            tokio::time::sleep(Duration::from_millis(50).min(delay)).await;
        }
        if stop_marker.exists() {
            status.phase = Phase::Exited;
            status.stopped_by_user = true;
            status.monitor_pid = None;
            save_status(dirs, rec, &status);
            break;
        }
        status.restart_count += 1;
    }
    // Gone for good: stop its resolver, give back its address, port mappings and namespace.
    drop(egress);
    release_network(dirs, id);
    if rec.auto_remove {
        report.wait_released(RELEASE_TIMEOUT);
        remove_all(dirs, rec, task).await;
    }
    Ok(())
}

fn release_network(dirs: &StateDirs, id: &str) {
    if let Err(e) = crate::network::detach(dirs, id) {
        tracing::warn!("releasing the network of {id}: {e}");
    }
}

/// Wait (bounded) until no foreground `aac run` holds the container's attach lock, so it can
/// read the final status before the records go.
fn wait_for_attached_cli(dirs: &StateDirs, id: &str) {
    let path = dirs.container_run_dir(id).join("attach.lock");
    let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut f = f;
    loop {
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(_lock) => return,
            Err((back, _)) => f = back,
        }
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--rm`: the container, its records, its name.
pub async fn remove_all(dirs: &StateDirs, rec: &ContainerRecord, task: &dyn Task) {
    wait_for_attached_cli(dirs, &rec.id);
    release_network(dirs, &rec.id);
    if let Err(e) = task.remove().await {
        tracing::warn!("removing container {}: {e}", rec.id);
    }
    let _ = dirs.release_name(&rec.name, &rec.id);
    let _ = dirs.remove_container(&rec.id);
    // docker's --rm takes the anonymous volumes along
    crate::volumes::remove_anonymous_of(dirs, rec);
    record_event(dirs, Event::new(EventType::Rm, &rec.id, &rec.name));
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_decide() {
        let of = |m| RestartPolicy::OnFailure { max_retries: m };
        assert!(!should_restart(RestartPolicy::No, 1, 0));
        assert!(should_restart(of(None), 1, 100));
        assert!(!should_restart(of(None), 0, 0));
        assert!(should_restart(of(Some(2)), 1, 1));
        assert!(!should_restart(of(Some(2)), 1, 2));
        assert!(should_restart(RestartPolicy::Always, 0, 5));
        assert!(should_restart(RestartPolicy::UnlessStopped, 0, 5));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = FIRST_BACKOFF;
        let mut delays = vec![];
        for _ in 0..12 {
            let (d, next) = restart_delay(b, Duration::from_millis(10));
            delays.push(d);
            b = next;
        }
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[3], Duration::from_millis(800));
        assert_eq!(*delays.last().unwrap(), MAX_BACKOFF);
        assert_eq!(restart_delay(MAX_BACKOFF, BACKOFF_RESET).0, FIRST_BACKOFF);
    }
}
