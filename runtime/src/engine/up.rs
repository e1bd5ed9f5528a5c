//! `up`, `scale`, `down`: an agent with `spec.scaling` runs as replicas `NAME-1..N` behind its
//! published ports, with a supervisor process (`aac-supervisor`, its own session, like a
//! monitor) that owns the proxy on those ports and the autoscaler, and creates and removes
//! replicas through this engine. An agent without `spec.scaling` is one container, as `run`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, EnvSource, EnvVar};
use crate::events::{Event, EventType};
use crate::io::io_err;
use crate::logs::format_time;
use crate::record::Backend;
use crate::scale::group::{self, GroupRecord, GroupStatus, ReplicaRef, ScaleRequest};
use crate::scale::hpa;

use super::{Container, CreateOptions, Engine, EngineError, Result, RuntimeChoice};

/// What to bring up.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The agent, validated.
    pub agent: Agent,
    /// The agent's name; default `metadata.name`.
    pub name: Option<String>,
    pub runtime: RuntimeChoice,
    /// The agent.yaml it came from (errors name its lines).
    pub agent_file: Option<PathBuf>,
}

/// What came up.
#[derive(Debug, Clone)]
pub struct UpReport {
    pub name: String,
    /// The containers (one for an agent without `spec.scaling`).
    pub containers: Vec<Container>,
    /// Whether a supervisor runs the agent (replicas behind one port, autoscaling).
    pub supervised: bool,
    pub warnings: Vec<String>,
}

/// A scaled agent as `aac ps` groups it.
#[derive(Debug, Clone)]
pub struct AgentGroup {
    pub record: GroupRecord,
    pub status: GroupStatus,
    pub supervisor_running: bool,
    pub replicas: Vec<Container>,
}

/// The supervisor's first report on its sync descriptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorReady {
    pub ok: bool,
    #[serde(default)]
    pub error: String,
}

/// Whether an agent runs as a supervised group: it has `spec.scaling` or autoscaling.
pub fn is_scaled(agent: &Agent) -> bool {
    agent.spec.scaling.is_some() || agent.spec.autoscaling.as_ref().is_some_and(|a| a.enabled)
}

/// (initial, min, max) replicas of a scaled agent.
pub fn replica_bounds(agent: &Agent) -> (u32, u32, u32) {
    let s = agent.spec.scaling.clone().unwrap_or_default();
    let min = s.min_replicas.unwrap_or(1).max(1);
    let initial = s.replicas.unwrap_or(min).max(min);
    let max = s.max_replicas.unwrap_or(initial).max(initial);
    (initial, min, max)
}

/// The autoscaler's windows: `scaleUpDelay` (default 0, as the HPA) and `scaleDownDelay`
/// (default 300 s).
pub fn windows(agent: &Agent) -> (Duration, Duration) {
    let a = agent.spec.autoscaling.clone().unwrap_or_default();
    (
        a.scale_up_delay.unwrap_or(Duration::ZERO),
        a.scale_down_delay.unwrap_or(hpa::DEFAULT_SCALE_DOWN_WINDOW),
    )
}

/// `$NAME` as a duration, or `default`.
fn env_duration(name: &str, default: Duration) -> Result<Duration> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => humantime::parse_duration(v.trim()).map_err(|e| {
            EngineError::Invalid(format!(
                "{name}={v:?} is not a duration (like 10s or 1m): {e}"
            ))
        }),
        _ => Ok(default),
    }
}

/// A port nobody listens on now (for process-backend replicas, which share the host's ports).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(io_err("binding a free port on", Path::new("127.0.0.1")))?;
    Ok(l.local_addr()
        .map_err(io_err("reading the address of", Path::new("127.0.0.1")))?
        .port())
}

/// The agent of replica `index`: no host ports (the supervisor publishes them), its name
/// and index in `AAC_REPLICA` / `AAC_REPLICA_INDEX`. A host process shares the host's ports,
/// so each process-backend replica gets ports of its own in `PORT` and `AAC_PORT_<port>`;
/// returns the container port -> port the replica listens on.
pub(crate) fn replica_agent(
    agent: &Agent,
    group: &str,
    index: u32,
    backend: Backend,
) -> Result<(Agent, BTreeMap<u16, u16>)> {
    let mut a = agent.clone();
    let name = group::replica_name(group, index);
    let mut map = BTreeMap::new();
    let mut env = vec![
        ("AAC_AGENT".to_string(), group.to_string()),
        ("AAC_REPLICA".to_string(), name),
        ("AAC_REPLICA_INDEX".to_string(), index.to_string()),
    ];
    for (i, p) in a.spec.ports.iter_mut().enumerate() {
        p.host = None;
        p.host_ip = None;
        let port = if backend == Backend::Process {
            let port = free_port()?;
            env.push((format!("AAC_PORT_{}", p.container), port.to_string()));
            if i == 0 {
                env.push(("PORT".to_string(), port.to_string()));
            }
            port
        } else {
            p.container
        };
        map.insert(p.container, port);
    }
    if backend == Backend::Process {
        // Nothing is published by the replica itself.
        a.spec.ports.clear();
    }
    for (k, v) in env {
        a.spec.environment.retain(|e| e.name != k);
        a.spec.environment.push(EnvVar {
            name: k,
            source: EnvSource::Value { value: v },
        });
    }
    Ok((a, map))
}

/// The aac-supervisor binary: `$AAC_SUPERVISOR`, next to this executable, next to the
/// monitor, else on PATH.
pub fn supervisor_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("AAC_SUPERVISOR") {
        return PathBuf::from(p);
    }
    let beside = |p: PathBuf| p.parent().map(|d| d.join("aac-supervisor"));
    for candidate in [
        std::env::current_exe().ok().and_then(beside),
        beside(super::start::shim_binary()),
    ]
    .into_iter()
    .flatten()
    {
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from("aac-supervisor")
}

impl Engine {
    /// Bring an agent up: one container, or (with `spec.scaling`) its replicas and their
    /// supervisor. A failure leaves nothing behind.
    pub async fn up(&self, opts: UpOptions) -> Result<UpReport> {
        if !is_scaled(&opts.agent) {
            let (created, started) = self
                .run(CreateOptions {
                    agent: opts.agent,
                    name: opts.name,
                    runtime: opts.runtime,
                    auto_remove: false,
                    interactive: false,
                    tty: false,
                    image_arg: None,
                    from_file: true,
                    agent_file: opts.agent_file,
                })
                .await?;
            let mut warnings = created.warnings;
            warnings.extend(started.warnings);
            return Ok(UpReport {
                name: created.container.rec.name.clone(),
                containers: vec![created.container],
                supervised: false,
                warnings,
            });
        }
        let agent = opts.agent;
        let name = opts.name.unwrap_or_else(|| agent.metadata.name.clone());
        crate::agent::validate::check_agent_name(&name)
            .map_err(|e| EngineError::Invalid(format!("--name: {e}")))?;
        if group::exists(&self.dirs, &name) {
            return Err(EngineError::Invalid(format!(
                "agent {name} is already up: change its count with `aac scale {name} N` or remove it with `aac down {name}`"
            )));
        }
        if self.dirs.resolve(&name).is_ok() {
            return Err(EngineError::Invalid(format!(
                "the name {name} is in use by a container"
            )));
        }
        // Every secret and key the agent names exists, before any replica or group state.
        crate::secrets::refs::check(
            &crate::secrets::Store::new(&self.dirs),
            &agent,
            opts.agent_file.as_deref(),
        )?;
        let (initial, min, max) = replica_bounds(&agent);
        let (backend, notice) = self.choose_backend(opts.runtime).await;
        if let Some(n) = &notice {
            self.notice(n);
        }
        let published = group::published(&agent);
        if published
            .iter()
            .any(|p| p.protocol == crate::agent::Protocol::Udp)
        {
            return Err(EngineError::Invalid(
                "a scaled agent publishes TCP ports only (the supervisor's proxy is TCP)".into(),
            ));
        }
        // The supervisor binds these on the host.
        self.check_published_ports("", Backend::Process, &published)?;
        let rec = GroupRecord {
            id: crate::state::new_id(),
            name: name.clone(),
            created: format_time(SystemTime::now()),
            agent: agent.clone(),
            backend,
            containerd: (backend == Backend::Containerd).then(|| self.containerd.clone()),
            min_replicas: min,
            max_replicas: max,
            autoscale_period: env_duration("AAC_AUTOSCALE_PERIOD", Duration::from_secs(15))?,
            drain_timeout: env_duration("AAC_DRAIN_TIMEOUT", Duration::from_secs(30))?,
        };
        // The supervisor's lock is held while the first replicas are made: a command that
        // brings back dead supervisors (`aac ps`, say) must not start one meanwhile, which
        // would make the replicas not recorded yet a second time.
        let mut creating = group::try_lock_supervisor(&self.dirs, &name)?;
        group::save_record(&self.dirs, &rec)?;
        group::save_request(
            &self.dirs,
            &name,
            &ScaleRequest {
                replicas: initial,
                generation: 1,
            },
        )?;
        let mut status = GroupStatus {
            desired: initial,
            observed_generation: 1,
            ..GroupStatus::default()
        };
        let mut containers = Vec::new();
        let mut warnings = Vec::new();
        let outcome: Result<()> = async {
            for index in 1..=initial {
                let (c, w) = self.create_replica(&rec, index).await?;
                status.replicas.push(ReplicaRef {
                    index,
                    id: c.rec.id.clone(),
                    name: c.rec.name.clone(),
                    draining: false,
                    ports: replica_ports(&c, &rec),
                });
                warnings.extend(w);
                containers.push(c);
                group::save_status(&self.dirs, &name, &status)?;
            }
            drop(creating.take());
            self.launch_supervisor(&rec).await
        }
        .await;
        drop(creating);
        if let Err(e) = outcome {
            for c in &containers {
                if let Err(re) = self.remove(c, true).await {
                    tracing::warn!("removing {} after a failed up: {re}", c.rec.name);
                }
            }
            self.stop_supervisor(&name).await;
            let _ = group::remove(&self.dirs, &name);
            return Err(e);
        }
        self.event(
            Event::new(EventType::Scale, &rec.id, &name)
                .with("replicas", initial)
                .with("reason", "aac up"),
        );
        Ok(UpReport {
            name,
            containers,
            supervised: true,
            warnings,
        })
    }

    /// Create and start replica `index` of a group.
    pub(crate) async fn create_replica(
        &self,
        rec: &GroupRecord,
        index: u32,
    ) -> Result<(Container, Vec<String>)> {
        let (agent, _) = replica_agent(&rec.agent, &rec.name, index, rec.backend)?;
        let runtime = match rec.backend {
            Backend::Containerd => RuntimeChoice::Containerd,
            Backend::Process => RuntimeChoice::Process,
        };
        let (created, started) = self
            .run(CreateOptions {
                agent,
                name: Some(group::replica_name(&rec.name, index)),
                runtime,
                auto_remove: false,
                interactive: false,
                tty: false,
                image_arg: None,
                from_file: true,
                agent_file: None,
            })
            .await?;
        let mut w = created.warnings;
        w.extend(started.warnings);
        Ok((created.container, w))
    }

    /// Create and start replica `index` of a group (the supervisor's way): the container and
    /// where it listens.
    pub(crate) async fn create_replica_of(
        &self,
        rec: &GroupRecord,
        index: u32,
    ) -> Result<(Container, BTreeMap<u16, u16>)> {
        let (c, warnings) = self.create_replica(rec, index).await?;
        for w in warnings {
            tracing::warn!("{}: {w}", c.rec.name);
        }
        let ports = replica_ports(&c, rec);
        Ok((c, ports))
    }

    /// Start the supervisor of a group and wait for its first report (its ports bound).
    pub async fn launch_supervisor(&self, rec: &GroupRecord) -> Result<()> {
        let dirs = self.dirs.clone();
        let name = rec.name.clone();
        let ready = tokio::task::spawn_blocking(move || spawn_supervisor(&dirs, &name))
            .await
            .map_err(|e| EngineError::State(format!("starting the supervisor: {e}")))??;
        if ready.ok {
            Ok(())
        } else {
            Err(EngineError::Start {
                code: 125,
                message: format!("the supervisor of {}: {}", rec.name, ready.error),
            })
        }
    }

    /// Bring back the supervisor of a group whose supervisor died (as monitors are).
    pub async fn ensure_supervisor(&self, name: &str) {
        if !group::exists(&self.dirs, name) || group::supervisor_running(&self.dirs, name) {
            return;
        }
        let Ok(rec) = group::load_record(&self.dirs, name) else {
            return;
        };
        match self.launch_supervisor(&rec).await {
            Ok(()) => tracing::info!("re-attached a supervisor to agent {name}"),
            Err(e) => tracing::warn!("re-attaching a supervisor to agent {name}: {e}"),
        }
    }

    /// SIGTERM the supervisor of a group and wait (bounded) until it is gone.
    async fn stop_supervisor(&self, name: &str) {
        let st = group::load_status(&self.dirs, name).unwrap_or_default();
        if let Some(pid) = st.supervisor_pid {
            if group::supervisor_running(&self.dirs, name) && is_supervisor(pid) {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while group::supervisor_running(&self.dirs, name) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every scaled agent, its supervisor brought back where it died.
    pub async fn list_agents(&self) -> Result<Vec<AgentGroup>> {
        let mut out = Vec::new();
        for name in group::list(&self.dirs) {
            if let Ok(g) = self.agent_group(&name).await {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// One scaled agent, its supervisor brought back where it died.
    pub async fn agent_group(&self, name: &str) -> Result<AgentGroup> {
        if !group::exists(&self.dirs, name) {
            return Err(EngineError::Invalid(format!(
                "no scaled agent named {name} (only agents with spec.scaling are)"
            )));
        }
        self.ensure_supervisor(name).await;
        let record = group::load_record(&self.dirs, name)?;
        let status = group::load_status(&self.dirs, name)?;
        let mut replicas = Vec::new();
        for r in &status.replicas {
            if let Ok(c) = self.load_id(&r.id) {
                replicas.push(self.ensure_monitor(c).await);
            }
        }
        Ok(AgentGroup {
            supervisor_running: group::supervisor_running(&self.dirs, name),
            record,
            status,
            replicas,
        })
    }

    /// Wait until the supervisor sends traffic to every replica of the agent (each healthy
    /// and in the proxy's rotation), bounded by `timeout`.
    pub async fn wait_serving(&self, name: &str, timeout: Duration) -> Result<()> {
        let rec = group::load_record(&self.dirs, name)?;
        if group::published(&rec.agent).is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let st = group::load_status(&self.dirs, name)?;
            let serving = st.active().all(|r| {
                st.backends
                    .iter()
                    .any(|b| b.name == r.name && b.in_rotation)
            });
            if serving && st.active().count() as u32 == st.desired {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EngineError::State(format!(
                    "not every replica of {name} takes traffic after {}s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `name` is a scaled agent.
    pub fn is_agent_group(&self, name: &str) -> bool {
        group::exists(&self.dirs, name)
    }

    /// Ask for `replicas` replicas (within minReplicas..maxReplicas) and wait until the
    /// supervisor runs that many (bounded by `timeout`).
    pub async fn scale(&self, name: &str, replicas: u32, timeout: Duration) -> Result<()> {
        let g = self.agent_group(name).await?;
        let (min, max) = (g.record.min_replicas, g.record.max_replicas);
        if replicas < min || replicas > max {
            return Err(EngineError::Invalid(format!(
                "{replicas} replicas is outside minReplicas..maxReplicas ({min}..{max}) of agent {name}"
            )));
        }
        let generation = group::load_request(&self.dirs, name)?
            .map(|r| r.generation)
            .unwrap_or(0)
            + 1;
        group::save_request(
            &self.dirs,
            name,
            &ScaleRequest {
                replicas,
                generation,
            },
        )?;
        if !g.supervisor_running {
            return Err(EngineError::State(format!(
                "the supervisor of agent {name} is not running (see {})",
                group::group_run_dir(&self.dirs, name)
                    .join("supervisor.log")
                    .display()
            )));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let st = group::load_status(&self.dirs, name)?;
            if st.observed_generation >= generation
                && st.replicas.len() as u32 == st.desired
                && st.active().count() as u32 == st.desired
            {
                // ...and each takes traffic (healthy, in the proxy's rotation).
                let left = deadline.saturating_duration_since(Instant::now());
                return self
                    .wait_serving(name, left.max(Duration::from_secs(1)))
                    .await;
            }
            if Instant::now() > deadline {
                return Err(EngineError::State(format!(
                    "agent {name} did not reach {replicas} replicas within {}s{}",
                    timeout.as_secs(),
                    st.error.map(|e| format!(": {e}")).unwrap_or_default()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Remove a scaled agent: its supervisor (and so its published ports), then every replica
    /// and the group's records.
    pub async fn down(&self, name: &str) -> Result<()> {
        if !group::exists(&self.dirs, name) {
            return Err(EngineError::Invalid(format!(
                "no scaled agent named {name}"
            )));
        }
        let rec = group::load_record(&self.dirs, name)?;
        // Stopped, and its lock held until the records are gone: a command that brings back
        // dead supervisors (`aac ps`, say) must not start one that replaces the replicas
        // being removed. One started between the stop and the lock is stopped again.
        let mut held = None;
        for _ in 0..5 {
            self.stop_supervisor(name).await;
            held = group::try_lock_supervisor(&self.dirs, name)?;
            if held.is_some() {
                break;
            }
        }
        let st = group::load_status(&self.dirs, name).unwrap_or_default();
        let mut ids: Vec<String> = st.replicas.iter().map(|r| r.id.clone()).collect();
        // A replica the supervisor was creating when it stopped is not in the status yet.
        let prefix = format!("{name}-");
        for c in self.all()? {
            let is_replica = c
                .rec
                .name
                .strip_prefix(&prefix)
                .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
                && c.rec.agent.spec.environment.iter().any(|e| {
                    e.name == "AAC_AGENT"
                        && matches!(&e.source, EnvSource::Value { value } if value == name)
                });
            if is_replica && !ids.contains(&c.rec.id) {
                ids.push(c.rec.id.clone());
            }
        }
        let mut first_err = None;
        for id in ids {
            let Ok(c) = self.load_id(&id) else { continue };
            if let Err(e) = self.remove(&c, true).await {
                tracing::warn!("removing {}: {e}", c.rec.name);
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        group::remove(&self.dirs, name)?;
        drop(held);
        self.event(Event::new(EventType::Rm, &rec.id, name));
        Ok(())
    }
}

/// The address parts of a replica the proxy needs: container port -> port it listens on.
pub(crate) fn replica_ports(c: &Container, rec: &GroupRecord) -> BTreeMap<u16, u16> {
    let mut map = BTreeMap::new();
    for p in &rec.agent.spec.ports {
        let port = c
            .rec
            .agent
            .spec
            .environment
            .iter()
            .find(|e| e.name == format!("AAC_PORT_{}", p.container))
            .and_then(|e| match &e.source {
                EnvSource::Value { value } => value.parse().ok(),
                _ => None,
            })
            .unwrap_or(p.container);
        map.insert(p.container, port);
    }
    map
}

/// Whether `pid` is an aac-supervisor.
fn is_supervisor(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.windows(14).any(|w| w == b"aac-supervisor"))
        .unwrap_or(false)
}

/// Start `aac-supervisor` for group `name` in its own session; read its first report.
fn spawn_supervisor(dirs: &crate::state::StateDirs, name: &str) -> Result<SupervisorReady> {
    let run_dir = group::group_run_dir(dirs, name);
    crate::state::create_private_dir(&run_dir)?;
    let log_path = run_dir.join("supervisor.log");
    let args: [&OsStr; 6] = [
        "--agent".as_ref(),
        name.as_ref(),
        "--run-dir".as_ref(),
        dirs.run.as_os_str(),
        "--data-dir".as_ref(),
        dirs.data.as_os_str(),
    ];
    let shim = super::start::shim_binary();
    let env: [(&str, &OsStr); 1] = [("AAC_SHIM", shim.as_os_str())];
    let spawned = super::session::spawn(&supervisor_binary(), &args, &env, &log_path)?;
    match spawned
        .first
        .as_deref()
        .and_then(|l| serde_json::from_str::<SupervisorReady>(l).ok())
    {
        Some(r) => Ok(r),
        None => {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            Ok(SupervisorReady {
                ok: false,
                error: format!(
                    "exited without reporting: {}",
                    log.lines().last().unwrap_or("").trim()
                ),
            })
        }
    }
}
