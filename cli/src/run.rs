//! `aac run` and `aac up`: validate, prepare, create, start, wait for readiness, report.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use aac_runtime::agent::flags::RunFlags;
use aac_runtime::agent::{self, Agent, Diagnostics, NetworkMode, PortSpec, VolumeType};
use aac_runtime::logs::{format_time, Follower, LogFilter, Stream};
use aac_runtime::network::{self, AttachRequest, Attachment};
use aac_runtime::record::{self, Backend, ContainerRecord};
use aac_runtime::spec::builder::{self, HostLimits, SpecContext};
use aac_runtime::state::new_id;
use aac_runtime::status::{HealthStatus, Phase};
use anyhow::{anyhow, Context as _};
use clap::{Args, ValueEnum};

use crate::agent_input::load_agent;
use crate::context::{launch_monitor, AsyncMonitorLink, Ctx};
use crate::exit::{CliError, CliResult};
use crate::terminal;

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum RuntimeChoice {
    /// containerd when its socket answers, else the process backend.
    #[default]
    Auto,
    Containerd,
    Process,
}

/// Behaviour of a run, shared by `run` and `up`.
#[derive(Args, Debug, Clone, Default)]
pub struct RunBehaviour {
    /// Run in the background and print the container ID.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep stdin open and connect it to the container.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal for the container.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Container name (unique).
    #[arg(long)]
    pub name: Option<String>,
    /// Which backend runs the agent.
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
    pub runtime: RuntimeChoice,
    /// With -d: return at once instead of waiting until the health check passes.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    #[command(flatten)]
    pub behaviour: RunBehaviour,
    #[command(flatten)]
    pub flags: RunFlags,
    /// Image to run (with --runtime process: the command).
    pub image: String,
    /// Command and arguments (replace the image's CMD).
    #[arg(allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// agent.yaml, or a folder holding one.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    #[command(flatten)]
    pub behaviour: RunBehaviour,
    #[command(flatten)]
    pub flags: RunFlags,
}

fn invalid(d: Diagnostics) -> CliError {
    CliError::aac(anyhow!("invalid agent:\n{d}"))
}

/// A name usable as a container name from an image reference: `docker.io/x/my-agent:1` ->
/// `my-agent`.
fn base_name(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let last = last.split(['@', ':']).next().unwrap_or(last);
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if clean.is_empty() {
        "agent".to_string()
    } else {
        clean.chars().take(40).collect()
    }
}

pub async fn run(ctx: &Ctx, args: RunArgs) -> CliResult<u8> {
    let name = base_name(&args.image);
    let mut agent = Agent::for_image(&name, &args.image);
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let host_env = |k: &str| std::env::var(k).ok();
    let mut problems = args.flags.apply(&mut agent, &cwd, &host_env);
    if !args.command.is_empty() {
        agent.spec.args = args.command.clone();
    }
    problems.extend(agent::validate(&agent, None));
    if !problems.is_empty() {
        return Err(invalid(Diagnostics(problems)));
    }
    launch(ctx, agent, &args.behaviour, Some(args.image.clone()), false).await
}

pub async fn up(ctx: &Ctx, args: UpArgs) -> CliResult<u8> {
    let agent = load_agent(&args.path, &args.flags).map_err(invalid)?;
    launch(ctx, agent, &args.behaviour, None, true).await
}

/// Which backend to use; `auto` says on stderr what it picked.
async fn choose_backend(ctx: &Ctx, choice: RuntimeChoice) -> anyhow::Result<Backend> {
    match choice {
        RuntimeChoice::Containerd => Ok(Backend::Containerd),
        RuntimeChoice::Process => Ok(Backend::Process),
        RuntimeChoice::Auto => match ctx.client().await {
            Ok(_) => Ok(Backend::Containerd),
            Err(e) => {
                eprintln!("aac: containerd is not reachable ({e:#}); using the process backend");
                Ok(Backend::Process)
            }
        },
    }
}

/// "insufficient memory" when the agent asks for more than the host has available.
fn check_memory(agent: &Agent) -> anyhow::Result<()> {
    let res = &agent.spec.resources;
    let Some(wanted) = res.requests.memory.or(res.limits.memory) else {
        return Ok(());
    };
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024);
    match available {
        Some(avail) if wanted.0 > avail => Err(anyhow!(
            "insufficient memory: the agent requests {} but the host has {} available",
            aac_runtime::stats::human_binary(wanted.0),
            aac_runtime::stats::human_binary(avail)
        )),
        _ => Ok(()),
    }
}

/// Resources created for a container so far; undone in reverse unless disarmed.
struct Prepared<'a> {
    ctx: &'a Ctx,
    id: String,
    name: String,
    name_reserved: bool,
    network: bool,
    armed: bool,
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.network {
            if let Err(e) = network::detach(&self.ctx.dirs, &self.id) {
                tracing::warn!("releasing the network of {}: {e}", self.id);
            }
        }
        let _ = self.ctx.dirs.remove_container(&self.id);
        if self.name_reserved {
            let _ = self.ctx.dirs.release_name(&self.name, &self.id);
        }
    }
}

async fn launch(
    ctx: &Ctx,
    mut agent: Agent,
    how: &RunBehaviour,
    image_arg: Option<String>,
    from_file: bool,
) -> CliResult<u8> {
    let backend = choose_backend(ctx, how.runtime).await?;
    let image_ref = agent.image_ref();
    check_memory(&agent)?;

    // The image (containerd) or the command (process backend).
    let image_config = match backend {
        Backend::Containerd => {
            let client = ctx.client().await?;
            if !client.image_exists(&image_ref).await? {
                return Err(CliError::aac(anyhow!(
                    "image '{image_ref}' not found locally: import it with `aac image import` or pull it with `aac pull {image_ref}`"
                )));
            }
            Some(client.image_config(&image_ref).await?)
        }
        Backend::Process => {
            if agent.spec.command.is_empty() {
                // `aac run --runtime process CMD ARGS`: the "image" is the command, ARGS its
                // arguments.
                if let Some(cmd) = image_arg.clone() {
                    agent.spec.command = vec![cmd];
                }
            }
            check_process_command(&agent, image_arg.as_deref(), how.runtime)?;
            None
        }
    };

    let id = new_id();
    let name = how.name.clone().unwrap_or_else(|| {
        if from_file {
            agent.metadata.name.clone()
        } else {
            format!("{}-{}", agent.metadata.name, &id[..6])
        }
    });
    agent::validate::check_agent_name(&name).map_err(|e| CliError::aac(anyhow!("--name: {e}")))?;

    let mut prepared = Prepared {
        ctx,
        id: id.clone(),
        name: name.clone(),
        name_reserved: false,
        network: false,
        armed: true,
    };
    ctx.dirs.reserve_name(&name, &id)?;
    prepared.name_reserved = true;

    // Network: ports are checked before anything is created.
    let mode = match (backend, &agent.spec.network.mode) {
        // A host process shares the host's network unless it asks for none.
        (Backend::Process, NetworkMode::None) => NetworkMode::None,
        (Backend::Process, _) => NetworkMode::Host,
        (_, m) => m.clone(),
    };
    network::check_ports(&ctx.dirs, &agent.spec.ports)?;
    check_published_ports(ctx, &id, backend, &agent.spec.ports)?;
    let hostname = agent.spec.hostname.clone().unwrap_or_else(|| name.clone());
    let attachment: Option<Attachment> = if backend == Backend::Containerd {
        let a = network::attach(
            &ctx.dirs,
            &AttachRequest {
                container_id: &id,
                name: &name,
                network: &mode,
                ports: &agent.spec.ports,
                dns: &agent.spec.network.dns,
                hostname: &hostname,
            },
        )?;
        prepared.network = true;
        Some(a)
    } else {
        None
    };
    if !agent.spec.services.is_empty() {
        let vars =
            network::resolve_services(&ctx.dirs, &mode, &agent.spec.services, service_timeout()?)?;
        for (k, v) in vars {
            agent.spec.environment.push(agent::EnvVar {
                name: k,
                source: agent::EnvSource::Value { value: v },
            });
        }
    }

    // Named volumes live in aac's state.
    let volumes_dir = ctx.dirs.volumes_dir();
    for (i, v) in agent.spec.volumes.iter().enumerate() {
        if v.kind == VolumeType::Volume {
            let p = builder::volume_path(&volumes_dir, v, &id, i);
            std::fs::create_dir_all(&p)
                .with_context(|| format!("creating volume {}", p.display()))?;
        }
    }

    let mut host = HostLimits::current();
    if backend == Backend::Process {
        // runc's systemd driver is the containerd backend's; the process backend uses cgroupfs.
        host.cgroup_driver = aac_runtime::host::CgroupDriver::Cgroupfs;
    }
    let secrets = |name: &str, key: &str| {
        Err(format!(
            "secret {name}/{key}: no secrets store is configured on this host"
        ))
    };
    let mut extra_mounts = Vec::new();
    if let Some(a) = &attachment {
        extra_mounts.extend(a.mounts.iter().cloned());
    }
    let spec_ctx = SpecContext {
        container_id: &id,
        name: &name,
        image: image_config.as_ref(),
        host: &host,
        volumes_dir: &volumes_dir,
        netns_path: attachment.as_ref().and_then(|a| a.netns_path.as_deref()),
        extra_mounts,
        terminal: how.tty,
        secrets: &secrets,
    };
    let mut spec = builder::build(&agent, &spec_ctx).map_err(|e| CliError::aac(e.into()))?;
    if backend == Backend::Process {
        // The cgroup goes under this user's cgroup root (a delegated subtree when rootless),
        // so the monitor, `aac rm` and `aac stats` all find it from the spec alone.
        let root = aac_runtime::process::default_cgroup_root();
        let path = root.join(builder::CGROUP_PARENT).join(&id);
        if let Some(linux) = spec.linux_mut() {
            linux.set_cgroups_path(Some(path));
        }
        // The process backend's namespaces follow the mode it really uses.
        if mode == NetworkMode::Host {
            if let Some(linux) = spec.linux_mut() {
                if let Some(ns) = linux.namespaces_mut() {
                    ns.retain(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Network);
                }
            }
        }
    }
    if backend == Backend::Containerd
        && aac_runtime::rootlesskit::entered_uid().is_some()
        && !host.cgroup_driver.is_systemd()
    {
        // runc in RootlessKit's user namespace gets cgroups only from the user's systemd.
        for limit in aac_runtime::rootlesskit::drop_cgroups(&mut spec) {
            eprintln!(
                "aac: warning: {limit} not enforced: a rootless containerd gets cgroups only \
                 through the user's systemd on cgroup v2 (this host: no delegation)"
            );
        }
    }
    let command = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    let ports: Vec<PortSpec> = match &attachment {
        Some(a) => a
            .ports
            .iter()
            .map(|p| PortSpec {
                container: p.container_port,
                host: Some(p.host_port),
                protocol: p.protocol,
                host_ip: p.host_ip,
            })
            .collect(),
        None => agent.spec.ports.clone(),
    };
    let rec = ContainerRecord {
        id: id.clone(),
        name: name.clone(),
        backend,
        image: (backend == Backend::Containerd).then(|| image_ref.clone()),
        command,
        created: format_time(SystemTime::now()),
        agent: agent.clone(),
        spec: serde_json::to_value(&spec).context("serializing the spec")?,
        ports,
        containerd: (backend == Backend::Containerd).then(|| ctx.containerd_target()),
        auto_remove: how.rm,
        stdin: how.interactive,
        tty: how.tty,
    };
    // No status file yet: a missing one reads as "created".
    rec.save(&ctx.dirs)?;
    crate::monitoring::record_create(ctx, &rec);

    // Foreground runs follow the log from its first line, so start following before the
    // container exists; --rm waits for our lock before removing the records we read.
    let follower = (!how.detach)
        .then(|| Follower::from_end(&ctx.dirs.container_dir(&id), LogFilter::default()));
    let attach_lock = (!how.detach)
        .then(|| attach_lock(&ctx.dirs.container_run_dir(&id)))
        .transpose()?;

    let (outcome, link) = launch_monitor(&ctx.dirs, &id)?;
    if !outcome.ok {
        // The monitor rolled back the backend's side; drop ours.
        let code = u8::try_from(outcome.code).unwrap_or(125);
        return Err(CliError::with_code(code, anyhow!("{}", outcome.error)));
    }
    prepared.armed = false;
    tracing::debug!(pid = outcome.pid, "container started");
    for w in &outcome.warnings {
        eprintln!("aac: warning: {w}");
    }

    if how.detach {
        if agent.spec.health_check.is_some() && !how.no_wait {
            wait_healthy(ctx, &rec).await?;
        }
        println!("{id}");
        return Ok(0);
    }
    let mut link = link.into_async()?;
    let code = attach(ctx, &rec, follower, &mut link, how).await?;
    drop(attach_lock);
    if how.rm {
        // Like docker, return once the container is gone: its name is free again then. The
        // monitor removes it once we let go of the link, and closes the link when done.
        if !link.release(REMOVE_TIMEOUT).await {
            tracing::warn!("container {id} was not removed within {REMOVE_TIMEOUT:?}");
        } else if ctx.dirs.container_dir(&id).exists() {
            // The monitor that closed the link died, or another one took over.
            wait_removed(ctx, &id).await;
        }
    }
    Ok(code)
}

/// How long a foreground `--rm` run waits for the container's removal.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Host ports published by other aac containers (either backend) are taken; for the process
/// backend, which binds on the host itself, so is any port something else holds now.
fn check_published_ports(
    ctx: &Ctx,
    id: &str,
    backend: Backend,
    ports: &[PortSpec],
) -> CliResult<()> {
    let wanted: Vec<&PortSpec> = ports
        .iter()
        .filter(|p| p.host.is_some_and(|h| h != 0))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    for other in ctx.dirs.container_ids()? {
        if other == id {
            continue;
        }
        let Ok(rec) = ContainerRecord::load(&ctx.dirs, &other) else {
            continue;
        };
        let st = record::load_status(&ctx.dirs, &other).unwrap_or_default();
        if !matches!(st.phase, Phase::Running | Phase::Restarting) {
            continue;
        }
        for p in &wanted {
            if rec
                .ports
                .iter()
                .any(|q| q.host == p.host && q.protocol == p.protocol)
            {
                return Err(CliError::aac(anyhow!(
                    "port {}/{} is already published by container {}",
                    p.host.unwrap_or(0),
                    p.protocol.as_str(),
                    rec.name
                )));
            }
        }
    }
    if backend == Backend::Process {
        for p in &wanted {
            let ip = p
                .host_ip
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            let addr = std::net::SocketAddr::new(ip, p.host.unwrap_or(0));
            let r = match p.protocol {
                agent::Protocol::Tcp => std::net::TcpListener::bind(addr).map(drop),
                agent::Protocol::Udp => std::net::UdpSocket::bind(addr).map(drop),
            };
            if let Err(e) = r {
                return Err(CliError::aac(anyhow!(
                    "port {addr}/{} is not available on this host: {e}",
                    p.protocol.as_str()
                )));
            }
        }
    }
    Ok(())
}

/// How long to wait for `spec.services`: `$AAC_SERVICE_TIMEOUT` (`2s`, `1m30s`) or 30 s.
fn service_timeout() -> CliResult<Duration> {
    match std::env::var("AAC_SERVICE_TIMEOUT") {
        Ok(v) if !v.trim().is_empty() => humantime::parse_duration(v.trim()).map_err(|e| {
            CliError::aac(anyhow!(
                "AAC_SERVICE_TIMEOUT={v:?} is not a duration (like 10s or 1m): {e}"
            ))
        }),
        _ => Ok(network::DEFAULT_SERVICE_TIMEOUT),
    }
}

/// Wait (bounded) until a monitor we have no link to has removed an `--rm` container's
/// records.
async fn wait_removed(ctx: &Ctx, id: &str) {
    let dir = ctx.dirs.container_dir(id);
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    while dir.exists() {
        if Instant::now() > deadline {
            tracing::warn!("container {id} was not removed within {REMOVE_TIMEOUT:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A process-backend command must exist on the host: an image reference given by mistake
/// gets a clear error.
fn check_process_command(
    agent: &Agent,
    image_arg: Option<&str>,
    choice: RuntimeChoice,
) -> CliResult<()> {
    let Some(cmd) = agent.spec.command.first().or(agent.spec.args.first()) else {
        return Err(CliError::aac(anyhow!(
            "the process backend needs a command: give spec.command in agent.yaml or a command after the flags"
        )));
    };
    let found = if cmd.contains('/') {
        Path::new(cmd).exists()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
            .unwrap_or(false)
    };
    if found {
        return Ok(());
    }
    let looks_like_image = image_arg.is_some_and(|i| i.contains(':') || i.contains('/'));
    if choice == RuntimeChoice::Auto && looks_like_image {
        return Err(CliError::aac(anyhow!(
            "{cmd:?} looks like an image, but containerd is not reachable and the process backend runs host commands; start containerd or pass --address"
        )));
    }
    Err(CliError::with_code(
        crate::exit::EXIT_NOT_FOUND,
        anyhow!("{cmd:?}: executable file not found on this host"),
    ))
}

/// A shared lock the foreground CLI holds while it reads the container's final status.
fn attach_lock(run_dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(run_dir)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(run_dir.join("attach.lock"))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockShared)
        .map_err(|(_, e)| anyhow!("locking: {e}"))
}

/// Wait until the health check passes; fail with the last probe's output if it does not.
async fn wait_healthy(ctx: &Ctx, rec: &ContainerRecord) -> CliResult<()> {
    let Some(h) = &rec.agent.spec.health_check else {
        return Ok(());
    };
    let budget =
        h.start_period + (h.interval + h.timeout) * (h.retries + 1) + Duration::from_secs(5);
    let deadline = Instant::now() + budget;
    loop {
        let st = record::load_status(&ctx.dirs, &rec.id)?;
        let health = st.health.as_ref();
        match (st.phase, health.map(|h| h.status)) {
            (Phase::Running, Some(HealthStatus::Healthy)) => return Ok(()),
            (Phase::Running, Some(HealthStatus::Unhealthy)) | (Phase::Exited, _) => {
                let last = health
                    .and_then(|h| h.log.last())
                    .map(|p| p.output.trim().to_string())
                    .unwrap_or_default();
                let why = if st.phase == Phase::Exited {
                    format!(
                        "the container exited with code {}",
                        st.exit_code.unwrap_or(-1)
                    )
                } else {
                    "the health check failed".to_string()
                };
                return Err(CliError::aac(anyhow!(
                    "container {} did not become healthy: {why}; last probe: {last}",
                    rec.name
                )));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(CliError::aac(anyhow!(
                "container {} did not become healthy within {}",
                rec.name,
                humantime::format_duration(budget)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stream the container's output, forward signals and stdin, and return its exit code. The
/// monitor reports the exit on `link`; should it close the link without one (it died, or was
/// replaced), the status file says when the container exits.
async fn attach(
    ctx: &Ctx,
    rec: &ContainerRecord,
    follower: Option<Follower>,
    link: &mut AsyncMonitorLink,
    how: &RunBehaviour,
) -> CliResult<u8> {
    let mut follower = follower.ok_or_else(|| anyhow!("no log follower"))?;
    let _raw = if how.tty {
        terminal::RawMode::enable_if_tty()
    } else {
        None
    };
    if how.interactive {
        terminal::forward_stdin(ctx.dirs.container_run_dir(&rec.id).join("stdin"));
    }
    let client = match rec.backend {
        Backend::Containerd => Some(ctx.client_for(rec).await?),
        Backend::Process => None,
    };
    if how.tty {
        if let Some(c) = &client {
            if let Some((w, h)) = terminal::size() {
                let _ = c.resize_pty(&rec.id, "", w, h).await;
            }
        }
    }
    let mut signals = terminal::Signals::new()?;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let mut copy_output = |follower: &mut Follower| {
        for e in follower.poll() {
            let _ = match e.stream {
                Stream::Stdout => stdout.write_all(e.log.as_bytes()),
                Stream::Stderr => stderr.write_all(e.log.as_bytes()),
            };
        }
        let _ = stdout.flush();
    };
    let exit_code = |code: i32| u8::try_from(code.rem_euclid(256)).unwrap_or(125);
    // Output is read from the log: often at first, then at a calmer pace.
    let started = Instant::now();
    loop {
        let poll = if how.tty || started.elapsed() < Duration::from_secs(2) {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(25)
        };
        copy_output(&mut follower);
        if link.closed {
            let st = record::load_status(&ctx.dirs, &rec.id).unwrap_or_default();
            if matches!(st.phase, Phase::Exited | Phase::Restarting) && st.exit_code.is_some() {
                copy_output(&mut follower);
                return Ok(exit_code(st.exit_code.unwrap_or(0)));
            }
        }
        tokio::select! {
            code = link.next_exit(), if !link.closed => {
                if let Some(code) = code {
                    // The monitor reports the exit after the output is in the log.
                    copy_output(&mut follower);
                    return Ok(exit_code(code));
                }
            }
            _ = tokio::time::sleep(poll) => {}
            sig = signals.next() => {
                match sig {
                    terminal::Event::Signal(s) => {
                        if let Err(e) = crate::containers::signal_container(ctx, rec, s, false).await {
                            eprintln!("aac: forwarding signal: {e:#}");
                        }
                    }
                    terminal::Event::Resize => {
                        if let (Some(c), Some((w, h))) = (&client, terminal::size()) {
                            let _ = c.resize_pty(&rec.id, "", w, h).await;
                        }
                    }
                }
            }
        }
    }
}
