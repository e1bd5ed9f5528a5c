//! Commands on existing containers: ps, stop, kill, rm, inspect, wait, logs, exec.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use aac_runtime::containerd::Stdio as CtrdStdio;
use aac_runtime::events::{self, Event, EventType};
use aac_runtime::logs::{self, Follower, LogFilter, Stream};
use aac_runtime::monitor;
use aac_runtime::network;
use aac_runtime::record::{self, Backend, ContainerRecord};
use aac_runtime::state::new_id;
use aac_runtime::status::{human_duration, parse_time, ContainerStatus, Phase};
use anyhow::{anyhow, Context as _};
use clap::{Args, ValueEnum};
use nix::sys::signal::Signal;

use crate::context::{launch_monitor, Ctx};
use crate::exit::{CliError, CliResult};
use crate::terminal;

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows running ones).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only print container IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Do not truncate IDs and commands.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send (name like SIGTERM/TERM or number).
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep following new output until the container stops.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines ("all" for everything).
    #[arg(long, short = 'n', default_value = "all")]
    pub tail: String,
    /// Prefix each line with its time.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Only lines since this time (10m, 2026-11-25T10:00:00Z, UNIX seconds).
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines until this time.
    #[arg(long)]
    pub until: Option<String>,
    pub name: String,
}

#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Environment variables (KEY=VALUE).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    pub name: String,
    #[arg(required = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// A container with what is known about it.
pub struct Entry {
    pub rec: ContainerRecord,
    pub status: ContainerStatus,
}

pub fn load(ctx: &Ctx, name_or_id: &str) -> CliResult<Entry> {
    let id = ctx.dirs.resolve(name_or_id)?;
    let rec = ContainerRecord::load(&ctx.dirs, &id)?;
    let status = record::load_status(&ctx.dirs, &id)?;
    Ok(Entry { rec, status })
}

/// The monitor recorded in `st` is alive.
pub fn monitor_alive(st: &ContainerStatus) -> bool {
    st.monitor_pid.is_some_and(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| c.windows(8).any(|w| w == b"aac-shim"))
            .unwrap_or(false)
    })
}

/// Mark a container as stopped by its user. On a full disk the file is still created (empty),
/// and its existence is what counts.
fn write_stop_marker(ctx: &Ctx, id: &str, why: &[u8]) -> anyhow::Result<()> {
    let path = record::stop_marker(&ctx.dirs, id);
    match std::fs::write(&path, why) {
        Ok(()) => Ok(()),
        Err(_) if path.exists() => Ok(()),
        Err(e) => Err(anyhow!("marking the container as stopped: {e}")),
    }
}

/// A container that should have a monitor but whose monitor died (`kill -9`, OOM, a reboot
/// of nothing but aac-shim): start a new one, which adopts the running task (or collects its
/// exit and applies the restart policy). Returns the entry as it is afterwards.
pub async fn ensure_monitor(ctx: &Ctx, e: Entry) -> Entry {
    if !matches!(e.status.phase, Phase::Running | Phase::Restarting)
        || e.rec.backend != Backend::Containerd
        || monitor::monitor_running(&ctx.dirs, &e.rec.id)
    {
        return e;
    }
    // One CLI at a time re-attaches; the others then find the new monitor's lock held.
    let run_dir = ctx.dirs.container_run_dir(&e.rec.id);
    let guard = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(run_dir.join("reattach.lock"))
        .ok()
        .and_then(|f| nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok());
    let reload = |e: Entry| Entry {
        status: record::load_status(&ctx.dirs, &e.rec.id).unwrap_or(e.status.clone()),
        rec: e.rec,
    };
    let e = reload(e);
    if !matches!(e.status.phase, Phase::Running | Phase::Restarting)
        || monitor::monitor_running(&ctx.dirs, &e.rec.id)
    {
        return e;
    }
    if record::stop_marker(&ctx.dirs, &e.rec.id).exists() && !is_running(ctx, &e).await {
        // Stopped while nobody watched: record that, do not bring it back.
        if let Err(err) = settle_without_monitor(ctx, &e).await {
            tracing::warn!("recording the exit of {}: {err:#}", e.rec.name);
        }
        return reload(e);
    }
    match launch_monitor(&ctx.dirs, &e.rec.id).map(|(o, _link)| o) {
        Ok(o) if o.ok => tracing::info!("re-attached a monitor to {} (pid {})", e.rec.name, o.pid),
        Ok(o) => eprintln!(
            "aac: warning: re-attaching a monitor to {}: {}",
            e.rec.name, o.error
        ),
        Err(err) => eprintln!(
            "aac: warning: re-attaching a monitor to {}: {err:#}",
            e.rec.name
        ),
    }
    drop(guard);
    reload(e)
}

/// Whether the container's main process is running now, asking the backend when the
/// monitor is gone.
async fn is_running(ctx: &Ctx, e: &Entry) -> bool {
    if e.status.phase != Phase::Running {
        return false;
    }
    if monitor_alive(&e.status) {
        return true;
    }
    match e.rec.backend {
        Backend::Containerd => match ctx.client_for(&e.rec).await {
            Ok(c) => c
                .task_state(&e.rec.id)
                .await
                .map(|s| s.status == aac_runtime::containerd::TaskStatus::Running)
                .unwrap_or(false),
            Err(_) => false,
        },
        Backend::Process => e
            .status
            .pid
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists()),
    }
}

pub async fn signal_container(
    ctx: &Ctx,
    rec: &ContainerRecord,
    signal: i32,
    _all: bool,
) -> anyhow::Result<()> {
    match rec.backend {
        Backend::Containerd => {
            let c = ctx.client_for(rec).await?;
            c.kill(&rec.id, signal as u32, false).await?;
        }
        Backend::Process => {
            let st = record::load_status(&ctx.dirs, &rec.id)?;
            let pid = st
                .pid
                .ok_or_else(|| anyhow!("container {} is not running", rec.name))?;
            let sig = Signal::try_from(signal).context("signal")?;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
                .with_context(|| format!("signalling process {pid}"))?;
        }
    }
    Ok(())
}

fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| anyhow!("{n} is not a signal"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map(|s| s as i32)
        .map_err(|_| anyhow!("{s:?} is not a signal"))
}

/// Whether the backend runs the container's main process now (whatever the records say).
async fn task_running(ctx: &Ctx, e: &Entry) -> bool {
    match e.rec.backend {
        Backend::Containerd => match ctx.client_for(&e.rec).await {
            Ok(c) => c
                .task_state(&e.rec.id)
                .await
                .map(|s| s.status == aac_runtime::containerd::TaskStatus::Running)
                .unwrap_or(false),
            Err(_) => false,
        },
        Backend::Process => is_running(ctx, e).await,
    }
}

/// Signal a container that may exit at any moment: failing because it is already gone is
/// success.
async fn signal_running(ctx: &Ctx, e: &Entry, signal: i32) -> anyhow::Result<()> {
    match signal_container(ctx, &e.rec, signal, false).await {
        Ok(()) => Ok(()),
        Err(err) => {
            if task_running(ctx, e).await {
                Err(err)
            } else {
                Ok(())
            }
        }
    }
}

/// Finish the bookkeeping of an exited container whose monitor is gone.
async fn settle_without_monitor(ctx: &Ctx, e: &Entry) -> anyhow::Result<()> {
    if monitor_alive(&e.status) {
        return Ok(());
    }
    let mut st = record::load_status(&ctx.dirs, &e.rec.id)?;
    if st.phase == Phase::Exited {
        return Ok(());
    }
    if e.rec.backend == Backend::Containerd {
        let c = ctx.client_for(&e.rec).await?;
        if let Ok(Some(exit)) = c.delete_task(&e.rec.id).await {
            st.exit_code = Some(exit.code as i32);
        }
    }
    st.phase = Phase::Exited;
    st.pid = None;
    st.monitor_pid = None;
    st.stopped_by_user = true;
    st.finished_at = Some(logs::format_time(SystemTime::now()));
    record::save_status(&ctx.dirs, &e.rec.id, &st)?;
    Ok(())
}

async fn stop_one(ctx: &Ctx, e: &Entry, grace: Duration, signal: i32) -> anyhow::Result<()> {
    write_stop_marker(ctx, &e.rec.id, b"stop")?;
    // A monitor records the exit (and keeps it from restarting); bring one back if it died.
    let e = &ensure_monitor(
        ctx,
        Entry {
            rec: e.rec.clone(),
            status: e.status.clone(),
        },
    )
    .await;
    // Signal whatever runs until the monitor says it exited: a restart that was already under
    // way when the marker appeared gets its signal too.
    let started = Instant::now();
    let mut signalled: Option<(Option<u32>, Instant)> = None;
    let mut killed = false;
    loop {
        let cur = Entry {
            rec: e.rec.clone(),
            status: record::load_status(&ctx.dirs, &e.rec.id).unwrap_or_default(),
        };
        let monitored = monitor_alive(&cur.status);
        if cur.status.phase == Phase::Exited || (!monitored && !is_running(ctx, &cur).await) {
            break;
        }
        if is_running(ctx, &cur).await {
            match signalled {
                Some((pid, at)) if pid == cur.status.pid => {
                    if !killed && at.elapsed() >= grace {
                        signal_running(ctx, &cur, Signal::SIGKILL as i32).await?;
                        killed = true;
                    }
                }
                _ => {
                    signal_running(ctx, &cur, signal).await?;
                    signalled = Some((cur.status.pid, Instant::now()));
                    killed = signal == Signal::SIGKILL as i32;
                }
            }
        }
        if started.elapsed() > grace + Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settle_without_monitor(ctx, e).await?;
    let _ = events::append(
        &ctx.dirs,
        &Event::new(EventType::Stop, &e.rec.id, &e.rec.name),
    );
    Ok(())
}

pub async fn stop(ctx: &Ctx, args: StopArgs) -> CliResult<u8> {
    let mut all_ok = true;
    for n in &args.names {
        let r = async {
            let e = load(ctx, n)?;
            stop_one(
                ctx,
                &e,
                Duration::from_secs(args.time),
                Signal::SIGTERM as i32,
            )
            .await
            .map_err(CliError::aac)
        }
        .await;
        all_ok &= report(n, r);
    }
    Ok(u8::from(!all_ok))
}

pub async fn kill(ctx: &Ctx, args: KillArgs) -> CliResult<u8> {
    let sig = parse_signal(&args.signal)?;
    let mut all_ok = true;
    for n in &args.names {
        let r: CliResult<()> = async {
            let e = load(ctx, n)?;
            if !is_running(ctx, &e).await {
                return Err(CliError::aac(anyhow!("container {n} is not running")));
            }
            if sig == Signal::SIGKILL as i32 || sig == Signal::SIGTERM as i32 {
                write_stop_marker(ctx, &e.rec.id, b"kill")?;
            }
            signal_container(ctx, &e.rec, sig, false).await?;
            let _ = events::append(
                &ctx.dirs,
                &Event::new(EventType::Kill, &e.rec.id, &e.rec.name).with("signal", sig),
            );
            Ok(())
        }
        .await;
        all_ok &= report(n, r);
    }
    Ok(u8::from(!all_ok))
}

/// Remove a container and everything aac made for it.
pub async fn remove(ctx: &Ctx, e: &Entry, force: bool) -> anyhow::Result<()> {
    if is_running(ctx, e).await {
        if !force {
            return Err(anyhow!(
                "container {} is running: stop it first or use `aac rm -f`",
                e.rec.name
            ));
        }
        stop_one(ctx, e, Duration::from_secs(10), Signal::SIGKILL as i32).await?;
    }
    match e.rec.backend {
        Backend::Containerd => {
            let c = ctx.client_for(&e.rec).await?;
            c.delete(&e.rec.id).await?;
        }
        Backend::Process => {
            // The spec's cgroupsPath holds the cgroup root `aac run` chose for this user.
            aac_runtime::process::cleanup_cgroup(Path::new(&e.rec.cgroup_path()))?;
        }
    }
    network::detach(&ctx.dirs, &e.rec.id)?;
    ctx.dirs.release_name(&e.rec.name, &e.rec.id)?;
    ctx.dirs.remove_container(&e.rec.id)?;
    let _ = events::append(
        &ctx.dirs,
        &Event::new(EventType::Rm, &e.rec.id, &e.rec.name),
    );
    Ok(())
}

pub async fn rm(ctx: &Ctx, args: RmArgs) -> CliResult<u8> {
    let mut all_ok = true;
    for n in &args.names {
        let r = async {
            let e = load(ctx, n)?;
            remove(ctx, &e, args.force).await.map_err(CliError::aac)
        }
        .await;
        all_ok &= report(n, r);
    }
    Ok(u8::from(!all_ok))
}

/// docker's way with several names: print each name done, or its error; false on error.
fn report(name: &str, r: CliResult<()>) -> bool {
    match r {
        Ok(()) => {
            println!("{name}");
            true
        }
        Err(e) => {
            eprintln!("aac: {name}: {:#}", e.error);
            false
        }
    }
}

fn ports_text(rec: &ContainerRecord) -> String {
    rec.ports
        .iter()
        .map(|p| match p.host {
            Some(h) => format!(
                "{}:{}->{}/{}",
                p.host_ip
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                h,
                p.container,
                p.protocol.as_str()
            ),
            None => format!("{}/{}", p.container, p.protocol.as_str()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ago(t: &str, now: SystemTime) -> String {
    parse_time(t)
        .and_then(|t| now.duration_since(t).ok())
        .map(|d| format!("{} ago", human_duration(d)))
        .unwrap_or_default()
}

pub async fn ps(ctx: &Ctx, args: PsArgs) -> CliResult<u8> {
    let now = SystemTime::now();
    let mut entries = Vec::new();
    for id in ctx.dirs.container_ids()? {
        let Ok(rec) = ContainerRecord::load(&ctx.dirs, &id) else {
            continue;
        };
        let status = record::load_status(&ctx.dirs, &id).unwrap_or_default();
        let e = ensure_monitor(ctx, Entry { rec, status }).await;
        let running = matches!(e.status.phase, Phase::Running | Phase::Restarting);
        if args.all || running {
            entries.push(e);
        }
    }
    entries.sort_by(|a, b| b.rec.created.cmp(&a.rec.created));
    if args.quiet {
        for e in &entries {
            println!("{}", short(&e.rec.id, args.no_trunc));
        }
        return Ok(0);
    }
    if args.format == Format::Json {
        let list: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "ID": e.rec.id,
                    "Names": e.rec.name,
                    "Image": e.rec.image.clone().unwrap_or_default(),
                    "Command": e.rec.command.join(" "),
                    "CreatedAt": e.rec.created,
                    "State": e.status.phase,
                    "Status": e.status.describe(now),
                    "Ports": ports_text(&e.rec),
                    "Backend": e.rec.backend,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list).context("json")?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mut cmd = format!("\"{}\"", e.rec.command.join(" "));
            if !args.no_trunc && cmd.chars().count() > 22 {
                cmd = cmd.chars().take(20).collect::<String>() + "…\"";
            }
            vec![
                short(&e.rec.id, args.no_trunc),
                e.rec.image.clone().unwrap_or_else(|| "-".into()),
                cmd,
                ago(&e.rec.created, now),
                e.status.describe(now),
                ports_text(&e.rec),
                e.rec.name.clone(),
                e.rec.backend.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        aac_runtime::stats::format_table(
            &[
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES",
                "BACKEND"
            ],
            &rows
        )
    );
    Ok(0)
}

fn short(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.chars().take(12).collect()
    }
}

pub async fn inspect(ctx: &Ctx, args: NamesArgs) -> CliResult<u8> {
    let mut out = Vec::new();
    for n in &args.names {
        let e = ensure_monitor(ctx, load(ctx, n)?).await;
        let dir = ctx.dirs.container_dir(&e.rec.id);
        out.push(serde_json::json!({
            "Id": e.rec.id,
            "Name": e.rec.name,
            "Created": e.rec.created,
            "Backend": e.rec.backend,
            "Image": e.rec.image,
            "Command": e.rec.command,
            "State": {
                "Status": e.status.phase,
                "Running": e.status.phase == Phase::Running,
                "Restarting": e.status.phase == Phase::Restarting,
                "Pid": e.status.pid.unwrap_or(0),
                "ExitCode": e.status.exit_code.unwrap_or(0),
                "OOMKilled": e.status.oom_killed,
                "Error": e.status.error.clone().unwrap_or_default(),
                "StartedAt": e.status.started_at,
                "FinishedAt": e.status.finished_at,
                "RestartCount": e.status.restart_count,
                "StoppedByUser": e.status.stopped_by_user,
                "Health": e.status.health,
                "LogDroppedLines": e.status.log_dropped_lines,
                "MonitorPid": e.status.monitor_pid,
                "MonitorAlive": monitor::monitor_running(&ctx.dirs, &e.rec.id),
            },
            "Ports": e.rec.ports,
            "Network": network::attachment(&ctx.dirs, &e.rec.id).ok().flatten(),
            "Config": e.rec.agent,
            "LogPath": dir.join(logs::LOG_FILE),
            "Spec": e.rec.spec,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out).context("json")?);
    Ok(0)
}

pub async fn wait(ctx: &Ctx, args: NamesArgs) -> CliResult<u8> {
    for n in &args.names {
        let e = ensure_monitor(ctx, load(ctx, n)?).await;
        loop {
            let st = record::load_status(&ctx.dirs, &e.rec.id).unwrap_or_default();
            let cur = Entry {
                rec: e.rec.clone(),
                status: st.clone(),
            };
            if st.phase == Phase::Exited
                || (st.phase != Phase::Created
                    && !monitor_alive(&st)
                    && !is_running(ctx, &cur).await)
            {
                println!("{}", st.exit_code.unwrap_or(0));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(0)
}

fn print_entry(e: &logs::Entry, timestamps: bool) {
    let line = if timestamps {
        format!("{} {}", e.time, e.log)
    } else {
        e.log.clone()
    };
    let _ = match e.stream {
        Stream::Stdout => std::io::stdout().write_all(line.as_bytes()),
        Stream::Stderr => std::io::stderr().write_all(line.as_bytes()),
    };
}

pub async fn logs(ctx: &Ctx, args: LogsArgs) -> CliResult<u8> {
    let e = ensure_monitor(ctx, load(ctx, &args.name)?).await;
    if e.status.log_dropped_lines > 0 {
        eprintln!(
            "aac: warning: {} log lines of {} were dropped because its log could not be written (disk full?)",
            e.status.log_dropped_lines, e.rec.name
        );
    }
    let now = SystemTime::now();
    let parse = |s: &Option<String>, flag: &str| -> CliResult<Option<SystemTime>> {
        s.as_deref()
            .map(|v| {
                logs::parse_time_arg(v, now).map_err(|m| CliError::aac(anyhow!("{flag}: {m}")))
            })
            .transpose()
    };
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse::<usize>()
                .map_err(|_| CliError::aac(anyhow!("--tail: {n:?} is not a number")))?,
        ),
    };
    let filter = LogFilter {
        since: parse(&args.since, "--since")?,
        until: parse(&args.until, "--until")?,
        tail,
    };
    let dir = ctx.dirs.container_dir(&e.rec.id);
    if !args.follow {
        for entry in logs::read(&dir, &filter) {
            print_entry(&entry, args.timestamps);
        }
        let _ = std::io::stdout().flush();
        return Ok(0);
    }
    // The follower's first poll hands out the stored entries (tail applied), the next ones
    // what came after: nothing is lost or shown twice in between.
    let mut follower = Follower::from_start(&dir, filter);
    let f = &mut follower;
    loop {
        for entry in f.poll() {
            print_entry(&entry, args.timestamps);
        }
        let _ = std::io::stdout().flush();
        let st = record::load_status(&ctx.dirs, &e.rec.id).unwrap_or_default();
        let cur = Entry {
            rec: e.rec.clone(),
            status: st.clone(),
        };
        if st.phase == Phase::Exited
            || !is_running(ctx, &cur).await && st.phase != Phase::Restarting
        {
            for entry in f.poll() {
                print_entry(&entry, args.timestamps);
            }
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn exec(ctx: &Ctx, args: ExecArgs) -> CliResult<u8> {
    let e = load(ctx, &args.name)?;
    if !is_running(ctx, &e).await {
        return Err(CliError::aac(anyhow!(
            "container {} is not running",
            e.rec.name
        )));
    }
    if e.rec.backend == Backend::Process {
        return exec_process(&e, &args);
    }
    let client = ctx.client_for(&e.rec).await?;
    let spec = e.rec.oci_spec().context("reading the stored spec")?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| anyhow!("the container spec has no process"))?;
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(args.tty));
    if let Some(w) = &args.workdir {
        process.set_cwd(w.into());
    }
    if !args.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        env.extend(args.env.iter().cloned());
        process.set_env(Some(env));
    }
    let exec_id = format!("exec-{}", &new_id()[..12]);
    let dir = ctx.dirs.container_run_dir(&e.rec.id).join(&exec_id);
    std::fs::create_dir_all(&dir).context("creating the exec folder")?;
    let fifo = |n: &str| -> anyhow::Result<String> {
        let p = dir.join(n);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .with_context(|| format!("mkfifo {}", p.display()))?;
        Ok(p.to_string_lossy().into_owned())
    };
    let stdout = fifo("stdout")?;
    let stderr = if args.tty {
        None
    } else {
        Some(fifo("stderr")?)
    };
    let stdin = if args.interactive {
        Some(fifo("stdin")?)
    } else {
        None
    };
    let copy = |path: String, err: bool| {
        std::thread::spawn(move || {
            if let Ok(mut f) = std::fs::File::open(&path) {
                if err {
                    let _ = std::io::copy(&mut f, &mut std::io::stderr());
                } else {
                    let mut out = std::io::stdout();
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = std::io::Read::read(&mut f, &mut buf) {
                        if n == 0 || out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let _ = out.flush();
                    }
                }
            }
        })
    };
    let out_thread = copy(stdout.clone(), false);
    let err_thread = stderr.clone().map(|p| copy(p, true));
    let _raw = if args.tty {
        terminal::RawMode::enable_if_tty()
    } else {
        None
    };
    let result = client
        .exec(
            &e.rec.id,
            &exec_id,
            &process,
            CtrdStdio {
                stdin: stdin.clone(),
                stdout: Some(stdout),
                stderr,
                terminal: args.tty,
            },
        )
        .await;
    if let Err(err) = result {
        let _ = std::fs::remove_dir_all(&dir);
        let code = err
            .exit_code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(125);
        return Err(CliError::with_code(code, err.into()));
    }
    if let Some(p) = stdin {
        terminal::forward_stdin(p.into());
    }
    if args.tty {
        if let Some((w, h)) = terminal::size() {
            let _ = client.resize_pty(&e.rec.id, &exec_id, w, h).await;
        }
    }
    let status = client.wait_exec(&e.rec.id, &exec_id).await;
    let _ = client.delete_exec(&e.rec.id, &exec_id).await;
    let _ = out_thread.join();
    if let Some(t) = err_thread {
        let _ = t.join();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let status = status?;
    Ok(u8::try_from(status.code % 256).unwrap_or(125))
}

/// `aac exec` for the process backend: the command joins the main process's namespaces and
/// cgroups with the container's credentials, on this terminal's standard streams.
fn exec_process(e: &Entry, args: &ExecArgs) -> CliResult<u8> {
    use aac_runtime::process::{self, Stdio, StdioSpec};
    let pid = e
        .status
        .pid
        .ok_or_else(|| CliError::aac(anyhow!("container {} is not running", e.rec.name)))?;
    let mut spec = e.rec.oci_spec().context("reading the stored spec")?;
    let process = spec
        .process_mut()
        .as_mut()
        .ok_or_else(|| anyhow!("the container spec has no process"))?;
    process.set_args(Some(args.command.clone()));
    // The process backend allocates no terminal: with -t the command uses this one.
    process.set_terminal(Some(false));
    if let Some(w) = &args.workdir {
        process.set_cwd(w.into());
    }
    if !args.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        env.extend(args.env.iter().cloned());
        process.set_env(Some(env));
    }
    let stdio = Stdio {
        stdin: if args.interactive {
            StdioSpec::Inherit
        } else {
            StdioSpec::Null
        },
        stdout: StdioSpec::Inherit,
        stderr: StdioSpec::Inherit,
    };
    let fail = |err: process::ProcessError| {
        let code = u8::try_from(err.exit_code()).unwrap_or(125);
        CliError::with_code(code, anyhow!("{err}"))
    };
    let mut child = process::exec_in(pid as i32, &spec, &stdio).map_err(fail)?;
    let status = child.wait().map_err(fail)?;
    Ok(u8::try_from(status.code().rem_euclid(256)).unwrap_or(125))
}
