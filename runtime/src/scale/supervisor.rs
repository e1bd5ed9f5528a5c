//! The supervisor of one scaled agent (`aac-supervisor`): it holds the group's lock for its
//! whole life, publishes the agent's ports through the [`proxy`](super::proxy), keeps the
//! replica count at what was asked (`aac scale`) or what the autoscaler decided, replaces
//! replicas that are gone, drains a replica before it stops it, and records all of it in the
//! group's status. Every replica is created, stopped and removed through the library engine.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::cgroups::CgroupLayout;
use crate::engine::{Container, Engine, EngineError};
use crate::events::{Event, EventType};
use crate::logs::format_time;
use crate::scale::group::{
    self, BackendStatus, GroupRecord, GroupStatus, MetricStatus, ReplicaRef,
};
use crate::scale::hpa::{self, Behavior, ReplicaMetric, ReplicaState, Resource};
use crate::scale::proxy::{self, Pool};
use crate::state::StateError;
use crate::status::{HealthStatus, Phase};

/// How often the supervisor looks at its replicas.
const TICK: Duration = Duration::from_millis(250);

/// One utilization metric the autoscaler acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtilizationTarget {
    pub resource: Resource,
    pub percent: u32,
}

/// The utilization metrics of an agent: `targetCPUUtilizationPercentage`,
/// `targetMemoryUtilizationPercentage` and `scaling.metrics` of type Resource/Utilization.
pub fn utilization_targets(agent: &Agent) -> Vec<UtilizationTarget> {
    let mut out = Vec::new();
    let enabled = agent.spec.autoscaling.as_ref().is_some_and(|a| a.enabled);
    if let Some(a) = &agent.spec.autoscaling {
        if let Some(p) = a.target_cpu_utilization_percentage {
            out.push(UtilizationTarget {
                resource: Resource::Cpu,
                percent: p,
            });
        }
        if let Some(p) = a.target_memory_utilization_percentage {
            out.push(UtilizationTarget {
                resource: Resource::Memory,
                percent: p,
            });
        }
    }
    if let Some(s) = &agent.spec.scaling {
        for m in &s.metrics {
            let Some(r) = &m.resource else { continue };
            if m.kind != "Resource" || r.target.kind != "Utilization" {
                continue;
            }
            let resource = match r.name.as_str() {
                "cpu" => Resource::Cpu,
                "memory" => Resource::Memory,
                _ => continue,
            };
            if let Some(p) = r.target.average_utilization {
                let t = UtilizationTarget {
                    resource,
                    percent: p,
                };
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
    }
    if !enabled
        && agent
            .spec
            .scaling
            .as_ref()
            .is_none_or(|s| s.metrics.is_empty())
    {
        out.clear();
    }
    out
}

/// The running supervisor.
struct Supervisor {
    engine: Engine,
    rec: GroupRecord,
    status: GroupStatus,
    /// Container port -> its pool.
    pools: BTreeMap<u16, Arc<Pool>>,
    targets: Vec<UtilizationTarget>,
    behavior: Behavior,
    layout: Option<CgroupLayout>,
    /// Replica ID -> (CPU ns, when).
    cpu_seen: HashMap<String, (u64, Instant)>,
    last_autoscale: Instant,
    /// Until when creating replicas waits after a failure.
    create_backoff: Option<Instant>,
    drained_tx: mpsc::UnboundedSender<String>,
    drained_rx: mpsc::UnboundedReceiver<String>,
}

/// Run the supervisor of group `name` until SIGTERM. `ready` hears once whether the ports
/// are bound (or why not).
pub async fn run(
    engine: Engine,
    name: &str,
    ready: impl FnOnce(Result<(), String>),
) -> Result<(), EngineError> {
    let dirs = engine.dirs().clone();
    let Some(lock) = group::try_lock_supervisor(&dirs, name)? else {
        // Another supervisor runs this agent: nothing to do.
        ready(Ok(()));
        return Ok(());
    };
    let rec = match group::load_record(&dirs, name) {
        Ok(r) => r,
        Err(e) => {
            ready(Err(e.to_string()));
            return Err(e.into());
        }
    };
    let mut status = group::load_status(&dirs, name)?;
    status.supervisor_pid = Some(std::process::id());
    status.error = None;
    let mut pools = BTreeMap::new();
    let mut listeners = Vec::new();
    for p in group::published(&rec.agent) {
        let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let addr = SocketAddr::new(ip, p.host.unwrap_or(0));
        match bind(addr) {
            Ok(l) => {
                let pool = Arc::new(Pool::new());
                pools.insert(p.container, pool.clone());
                listeners.push((l, pool));
            }
            Err(e) => {
                let msg = format!("publishing port {addr}: {e}");
                ready(Err(msg.clone()));
                return Err(EngineError::Invalid(msg));
            }
        }
    }
    let mut tasks = Vec::new();
    for (l, pool) in listeners {
        tasks.push(tokio::spawn(proxy::serve(l, pool)));
    }
    let (up, down) = crate::engine::windows(&rec.agent);
    let (drained_tx, drained_rx) = mpsc::unbounded_channel();
    let mut sup = Supervisor {
        targets: utilization_targets(&rec.agent),
        behavior: Behavior {
            scale_up_window: up,
            scale_down_window: down,
            min_replicas: rec.min_replicas,
            max_replicas: rec.max_replicas,
        },
        layout: CgroupLayout::detect().ok(),
        engine,
        pools,
        cpu_seen: HashMap::new(),
        last_autoscale: Instant::now(),
        create_backoff: None,
        drained_tx,
        drained_rx,
        status,
        rec,
    };
    sup.status.autoscale.enabled = !sup.targets.is_empty();
    sup.status.autoscale.min_replicas = sup.rec.min_replicas;
    sup.status.autoscale.max_replicas = sup.rec.max_replicas;
    sup.status.autoscale.scale_up_window = up;
    sup.status.autoscale.scale_down_window = down;
    // Drains cut short by an earlier supervisor's death are finished now.
    for r in sup.status.replicas.clone() {
        if r.draining {
            sup.start_drain(&r);
        }
    }
    sup.refresh_pools().await;
    sup.save();
    ready(Ok(()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| EngineError::State(format!("SIGTERM handler: {e}")))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| EngineError::State(format!("SIGINT handler: {e}")))?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
        if !group::exists(&dirs, name) {
            // The agent's records are gone (removed by hand): nothing left to supervise.
            tracing::warn!("{name}: the agent's records are gone; exiting");
            break;
        }
        sup.tick().await;
    }
    for t in tasks {
        t.abort();
    }
    sup.status.supervisor_pid = None;
    sup.save();
    drop(lock);
    Ok(())
}

/// A listening socket with SO_REUSEADDR (a restarted supervisor rebinds at once).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Supervisor {
    fn save(&self) {
        if let Err(e) = group::save_status(self.engine.dirs(), &self.rec.name, &self.status) {
            tracing::warn!("recording the status of {}: {e}", self.rec.name);
        }
    }

    fn event(&self, from: u32, to: u32, reason: &str, by: &str) {
        let e = Event::new(EventType::Scale, &self.rec.id, &self.rec.name)
            .with("from", from)
            .with("replicas", to)
            .with("by", by)
            .with("reason", reason);
        if let Err(err) = crate::events::append(self.engine.dirs(), &e) {
            tracing::warn!("recording event: {err}");
        }
    }

    fn set_desired(&mut self, to: u32, reason: &str, by: &str) {
        let to = to.clamp(self.rec.min_replicas, self.rec.max_replicas);
        if to == self.status.desired {
            return;
        }
        let from = self.status.desired;
        self.status.desired = to;
        self.status.autoscale.last_scale_time = Some(format_time(SystemTime::now()));
        self.status.autoscale.last_scale_reason = Some(format!("{by}: {reason}"));
        tracing::info!(
            "{}: {from} -> {to} replicas ({by}: {reason})",
            self.rec.name
        );
        self.event(from, to, reason, by);
    }

    async fn tick(&mut self) {
        while let Ok(id) = self.drained_rx.try_recv() {
            self.status.replicas.retain(|r| r.id != id);
            self.cpu_seen.remove(&id);
        }
        let dirs = self.engine.dirs().clone();
        if let Ok(Some(req)) = group::load_request(&dirs, &self.rec.name) {
            if req.generation > self.status.observed_generation {
                self.status.observed_generation = req.generation;
                self.set_desired(req.replicas, "asked for with aac scale", "user");
            }
        }
        if !self.targets.is_empty() && self.last_autoscale.elapsed() >= self.rec.autoscale_period {
            self.last_autoscale = Instant::now();
            self.autoscale().await;
        }
        self.reconcile().await;
        self.refresh_pools().await;
        self.save();
    }

    /// The replicas' containers as recorded now (a removed one is `None`).
    fn containers(&self) -> Vec<(ReplicaRef, Option<Container>)> {
        self.status
            .replicas
            .iter()
            .map(|r| (r.clone(), self.engine.load(&r.id).ok()))
            .collect()
    }

    async fn reconcile(&mut self) {
        // Replicas removed by hand leave the group; ones that exited for good are replaced.
        // A replica leaves the status only once its record is gone: its name and index are
        // then free for the one that replaces it.
        for r in self.status.replicas.clone() {
            if r.draining {
                continue;
            }
            match self.engine.load(&r.id) {
                Err(EngineError::Records(StateError::NotFound(_))) => {
                    tracing::info!("{}: {} is gone", self.rec.name, r.name);
                    self.status.replicas.retain(|x| x.id != r.id);
                }
                Err(e) => {
                    // Unreadable for now: looked at again next round.
                    tracing::warn!("{}: reading {}: {e}", self.rec.name, r.name);
                }
                Ok(c) if c.status.phase == Phase::Exited => {
                    tracing::info!("{}: {} exited; replacing it", self.rec.name, r.name);
                    match self.engine.remove(&c, true).await {
                        Ok(()) => self.status.replicas.retain(|x| x.id != r.id),
                        Err(e) => tracing::warn!("removing {}: {e}", r.name),
                    }
                }
                Ok(c) => {
                    self.engine.ensure_monitor(c).await;
                }
            }
        }
        let desired = self.status.desired as usize;
        let active = self.status.active().count();
        if active < desired && self.create_backoff.is_none_or(|t| Instant::now() >= t) {
            for _ in active..desired {
                let index = (1..)
                    .find(|i| !self.status.replicas.iter().any(|r| r.index == *i))
                    .unwrap_or(1);
                match self.engine.create_replica_of(&self.rec, index).await {
                    Ok((c, ports)) => {
                        tracing::info!("{}: started {}", self.rec.name, c.rec.name);
                        self.status.replicas.push(ReplicaRef {
                            index,
                            id: c.rec.id.clone(),
                            name: c.rec.name.clone(),
                            draining: false,
                            ports,
                        });
                        self.status.error = None;
                        self.create_backoff = None;
                        self.save();
                    }
                    Err(e) => {
                        tracing::warn!("{}: creating replica {index}: {e}", self.rec.name);
                        self.status.error = Some(format!("creating replica {index}: {e}"));
                        self.create_backoff = Some(Instant::now() + Duration::from_secs(2));
                        break;
                    }
                }
            }
        } else if active > desired {
            // The newest (highest index) go first.
            let mut live: Vec<ReplicaRef> = self.status.active().cloned().collect();
            live.sort_by_key(|r| std::cmp::Reverse(r.index));
            for r in live.into_iter().take(active - desired) {
                if let Some(x) = self.status.replicas.iter_mut().find(|x| x.id == r.id) {
                    x.draining = true;
                }
                self.start_drain(&r);
            }
        }
    }

    /// Out of the rotation now; stopped and removed once its connections are done (or the
    /// drain timeout passed).
    fn start_drain(&self, r: &ReplicaRef) {
        for pool in self.pools.values() {
            pool.remove_from_rotation(&r.name);
        }
        let engine = self.engine.clone();
        let pools: Vec<Arc<Pool>> = self.pools.values().cloned().collect();
        let timeout = self.rec.drain_timeout;
        let tx = self.drained_tx.clone();
        let r = r.clone();
        let group = self.rec.name.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            while pools.iter().map(|p| p.active(&r.name)).sum::<u64>() > 0 {
                if started.elapsed() > timeout {
                    tracing::warn!("{group}: {} still has connections; stopping it", r.name);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Ok(c) = engine.load(&r.id) {
                if let Err(e) = engine
                    .stop(&c, Duration::from_secs(10), Signal::SIGTERM as i32)
                    .await
                {
                    tracing::warn!("{group}: stopping {}: {e}", r.name);
                }
                if let Err(e) = engine.remove(&c, true).await {
                    tracing::warn!("{group}: removing {}: {e}", r.name);
                }
            }
            tracing::info!("{group}: {} drained and removed", r.name);
            let _ = tx.send(r.id);
        });
    }

    /// Whether a replica takes traffic: running, and healthy when it has a health check.
    fn serving(c: &Container) -> bool {
        c.status.phase == Phase::Running
            && c.status
                .health
                .as_ref()
                .is_none_or(|h| h.status == HealthStatus::Healthy)
    }

    async fn refresh_pools(&mut self) {
        let mut wanted: BTreeMap<u16, Vec<(String, SocketAddr, bool)>> = BTreeMap::new();
        for (r, c) in self.containers() {
            let Some(c) = c else { continue };
            let ip = self
                .engine
                .attachment(&c)
                .and_then(|a| a.ip)
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let rotation = !r.draining && Self::serving(&c);
            for port in self.pools.keys() {
                let target = r.ports.get(port).copied().unwrap_or(*port);
                wanted.entry(*port).or_default().push((
                    r.name.clone(),
                    SocketAddr::new(ip, target),
                    rotation,
                ));
            }
        }
        let mut backends = Vec::new();
        for (port, pool) in &self.pools {
            pool.set(wanted.get(port).map(Vec::as_slice).unwrap_or(&[]));
            for b in pool.backends() {
                backends.push(BackendStatus {
                    name: b.name.clone(),
                    address: b.addr.to_string(),
                    in_rotation: b.in_rotation(),
                    active_connections: b.active(),
                    total_connections: b.total(),
                });
            }
        }
        self.status.backends = backends;
    }

    /// Sample every replica's cgroup, run the HPA over each metric, apply the decision.
    async fn autoscale(&mut self) {
        let now = Instant::now();
        let requests = &self.rec.agent.spec.resources.requests;
        let mut samples: Vec<(ReplicaState, Option<u64>, Option<u64>)> = Vec::new();
        for (r, c) in self.containers() {
            let Some(c) = c else { continue };
            let state = if r.draining || c.status.phase != Phase::Running {
                ReplicaState::Ignored
            } else if Self::serving(&c) {
                ReplicaState::Ready
            } else {
                ReplicaState::Unready
            };
            let (cpu, mem) = match (&self.layout, state) {
                (Some(layout), s) if s != ReplicaState::Ignored => {
                    let s = self.engine.sample(layout, &c);
                    let cpu = match self.cpu_seen.insert(r.id.clone(), (s.cpu_usage_ns, now)) {
                        Some((ns, at)) if s.cpu_usage_ns >= ns => {
                            let dt = now.duration_since(at).as_nanos().max(1);
                            Some(
                                u64::try_from(u128::from(s.cpu_usage_ns - ns) * 1000 / dt)
                                    .unwrap_or(u64::MAX),
                            )
                        }
                        _ => None,
                    };
                    (cpu, (s.mem_usage > 0).then_some(s.mem_usage))
                }
                _ => (None, None),
            };
            samples.push((state, cpu, mem));
        }
        let current = self.status.desired;
        let mut metrics = Vec::new();
        let mut proposals = Vec::new();
        for t in &self.targets {
            let request = match t.resource {
                Resource::Cpu => requests.cpu.map(|c| c.0),
                Resource::Memory => requests.memory.map(|m| m.0),
            }
            .unwrap_or(0);
            let input: Vec<ReplicaMetric> = samples
                .iter()
                .map(|(state, cpu, mem)| ReplicaMetric {
                    state: *state,
                    usage: match t.resource {
                        Resource::Cpu => *cpu,
                        Resource::Memory => *mem,
                    },
                    request,
                })
                .collect();
            let mut m = MetricStatus {
                resource: t.resource.as_str().to_string(),
                target_utilization: t.percent,
                current_utilization: None,
                current_average: None,
                proposal: None,
                error: None,
            };
            match hpa::resource_replicas(current, &input, t.resource, t.percent, hpa::TOLERANCE) {
                Ok(p) => {
                    m.current_utilization = Some(p.utilization);
                    m.current_average = Some(p.average_usage);
                    m.proposal = Some(p.replicas);
                    proposals.push(Some(p.replicas));
                }
                Err(e) => {
                    m.error = Some(e.to_string());
                    proposals.push(None);
                }
            }
            metrics.push(m);
        }
        let mut history = std::mem::take(&mut self.status.autoscale.history);
        let d = hpa::decide(
            current,
            &proposals,
            &mut history,
            &self.behavior,
            SystemTime::now(),
        );
        self.status.autoscale.history = history;
        self.status.autoscale.metrics = metrics;
        self.status.autoscale.last_decision_time = Some(format_time(SystemTime::now()));
        let reason = d.reason.clone();
        let desired = d.desired;
        self.status.autoscale.last_decision = Some(d);
        if proposals.iter().any(Option::is_some) {
            self.set_desired(desired, &reason, "autoscaler");
        }
    }
}
