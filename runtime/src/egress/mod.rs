//! Egress by host name: the agent's `spec.network.security` enforced in its own network
//! namespace.
//!
//! ```text
//!   agent ──DNS──► 127.0.0.11:53 (aac's resolver, a socket in the agent's namespace)
//!     │                 │ allowed name: forward upstream, addresses of the answer (CNAMEs
//!     │                 │   followed) into the allow sets, timeout = TTL clamped 5 s..1 h
//!     │                 │ other names: NXDOMAIN (counted, an `egress-denied` event)
//!     ▼                 ▼
//!   nftables in the agent's namespace (table inet aac_egress, hook output, policy drop):
//!     lo, established/related, the agent's own network (not the host's gateway),
//!     @allow4/@allow6 (any port), @allow4p/@allow6p (address . protocol . port)
//!     everything else: NFLOG to the resolver (counted, an event), TCP reset / ICMP prohibited
//! ```
//!
//! The rules and sets live in the namespace and go with it. The resolver runs in a thread of
//! the container's monitor (aac-shim) with its own small runtime; its sockets are created by
//! a thread that joined the namespace, the upstream queries leave from the monitor's own
//! network. A monitor that adopts a running container starts it again: the rules are
//! re-applied (sets and their addresses kept) and the resolver binds its socket anew; while no
//! monitor runs, the agent's DNS fails (nothing is let through).
//!
//! What a backend needs: the path of the agent's network namespace (`/proc/<pid>/ns/net`
//! serves too) before the agent runs, its resolv.conf naming [`RESOLVER_IP`], and
//! [`Guard::start`] with a [`Config`]; dropping the guard stops the resolver.

pub mod dns;
pub mod netlink;
pub mod report;
pub mod rules;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncWriteExt;

use crate::agent::egress::EgressPolicy;
use crate::agent::{Agent, NetworkMode};
use crate::network::{self, netns, NetError};
use crate::record::{Backend, ContainerRecord};
use crate::state::StateDirs;

pub use rules::RulesetParams;

/// The address aac's resolver listens on inside the agent's namespace (port 53).
pub const RESOLVER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// Allowed addresses stay in the sets at least this long ...
pub const MIN_TTL: Duration = Duration::from_secs(5);
/// ... and at most this long after the answer that named them.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// How often the counters are saved (when they changed).
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// A TCP client idle this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error(
        "the process backend enforces an egress policy (spec.network.security) only in a network of its own, which a rootless process backend does not get: the agent shares the host's network; use the containerd backend, or network mode none"
    )]
    ProcessBackend,
    #[error("container {0} has no network namespace to enforce its egress policy in")]
    NoNamespace(String),
    #[error("{0}")]
    Nft(String),
    #[error("egress resolver: {0}")]
    Netlink(#[from] netlink::NetlinkError),
    #[error("egress resolver: binding {addr} in the agent's namespace: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("egress resolver: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Net(#[from] NetError),
}

/// The sets' timeout for an answer's TTL.
pub fn clamp_ttl(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl)).clamp(MIN_TTL, MAX_TTL)
}

/// The resolver the agent's resolv.conf must name, when its egress is limited and it has a
/// network namespace of its own (`None`: its usual DNS servers).
pub fn resolver_for(agent: &Agent, mode: &NetworkMode) -> Option<IpAddr> {
    agent.spec.network.security.egress_policy()?;
    match mode {
        NetworkMode::Host | NetworkMode::None => None,
        _ => Some(IpAddr::V4(RESOLVER_IP)),
    }
}

/// The servers the resolver asks: the agent's `dns`, else the nameservers of this
/// process's resolv.conf (loopback ones included: the queries leave from here, not from the
/// agent's namespace).
pub fn upstream_servers(dns: &[IpAddr]) -> Vec<SocketAddr> {
    let servers: Vec<IpAddr> = if dns.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        network::files::parse_resolv(&text).nameservers
    } else {
        dns.to_vec()
    };
    servers
        .into_iter()
        .filter(|ip| *ip != IpAddr::V4(RESOLVER_IP))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Everything the enforcement for one agent needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub container_id: String,
    pub name: String,
    /// The agent's network namespace (a pinned file or `/proc/<pid>/ns/net`).
    pub netns: PathBuf,
    pub policy: EgressPolicy,
    pub upstream: Vec<SocketAddr>,
    pub rules: RulesetParams,
    /// The agent's hosts file: names of its own network, answered locally.
    pub hosts_file: Option<PathBuf>,
}

impl Config {
    /// The configuration for a container from its records; `None` when its egress is open or
    /// it has no network at all.
    pub fn for_container(
        dirs: &StateDirs,
        rec: &ContainerRecord,
    ) -> Result<Option<Config>, EgressError> {
        let Some(policy) = rec.agent.spec.network.security.egress_policy() else {
            return Ok(None);
        };
        if rec.agent.spec.network.mode == NetworkMode::None {
            // Nothing but loopback: nothing to let out.
            return Ok(None);
        }
        let att = network::attachment(dirs, &rec.id)?;
        if rec.backend == Backend::Process && att.as_ref().is_none_or(|a| a.netns.is_none()) {
            return Err(EgressError::ProcessBackend);
        }
        let att = att.ok_or_else(|| EgressError::NoNamespace(rec.name.clone()))?;
        let ns = att
            .netns
            .clone()
            .ok_or_else(|| EgressError::NoNamespace(rec.name.clone()))?;
        let mut params = RulesetParams::default();
        if let Some(def) = network::defs::load(dirs, &att.network)? {
            params.own_networks.push(ipnet::IpNet::V4(def.subnet));
            params.host_addresses.push(IpAddr::V4(def.gateway));
        }
        if let Some(gw) = att.gateway {
            if !params.host_addresses.contains(&gw) {
                params.host_addresses.push(gw);
            }
        }
        Ok(Some(Config {
            container_id: rec.id.clone(),
            name: rec.name.clone(),
            netns: ns,
            policy,
            upstream: upstream_servers(&rec.agent.spec.network.dns),
            rules: params,
            hosts_file: att.hosts_file.clone(),
        }))
    }
}

/// The running enforcement of one agent; dropping it stops the resolver (the rules stay
/// with the namespace).
pub struct Guard {
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Sockets {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    sets: netlink::SetWriter,
    nflog: netlink::Nflog,
}

fn open_sockets() -> Result<Sockets, EgressError> {
    let addr = SocketAddr::new(IpAddr::V4(RESOLVER_IP), 53);
    let bind_err = |source| EgressError::Bind { addr, source };
    let udp = std::net::UdpSocket::bind(addr).map_err(bind_err)?;
    let tcp = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    Ok(Sockets {
        udp,
        tcp,
        sets: netlink::SetWriter::open()?,
        nflog: netlink::Nflog::open(rules::LOG_GROUP)?,
    })
}

impl Guard {
    /// Apply the rules in the agent's namespace and start its resolver. The sockets exist
    /// when this returns: the agent's first query waits in them.
    pub fn start(dirs: &StateDirs, cfg: Config) -> Result<Guard, EgressError> {
        rules::apply(&cfg.netns, &rules::ruleset(&cfg.rules))?;
        let sockets = netns::run_in(&cfg.netns, open_sockets)??;
        let report = report::Reporter::new(dirs, &cfg.container_id, &cfg.name);
        let resolver = Arc::new(dns::Resolver::new(
            cfg.policy.clone(),
            cfg.upstream.clone(),
            cfg.hosts_file.clone(),
            sockets.sets,
            report,
        ));
        let statics: Vec<(IpAddr, Option<u16>)> = cfg.policy.addresses().collect();
        resolver.allow_static(&statics)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (udp, tcp, nflog) = (sockets.udp, sockets.tcp, sockets.nflog);
        let id = cfg.container_id.clone();
        let thread = std::thread::Builder::new()
            .name("aac-egress".into())
            .spawn(move || {
                if let Err(e) = runtime.block_on(serve(resolver, udp, tcp, nflog, stop_rx)) {
                    tracing::error!(container = %id, "egress resolver stopped: {e}");
                }
            })?;
        tracing::info!(
            container = %cfg.container_id,
            upstream = ?cfg.upstream,
            "egress policy in force: {}",
            describe(&cfg.policy)
        );
        Ok(Guard {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Start the enforcement a container's records ask for (`None`: its egress is open).
    pub fn for_container(
        dirs: &StateDirs,
        rec: &ContainerRecord,
    ) -> Result<Option<Guard>, EgressError> {
        match Config::for_container(dirs, rec)? {
            Some(cfg) => Guard::start(dirs, cfg).map(Some),
            None => Ok(None),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `allowedHosts` in one line, for logs.
fn describe(p: &EgressPolicy) -> String {
    if p.allowed.is_empty() {
        "nothing beyond the agent's network".into()
    } else {
        p.allowed
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

async fn serve(
    resolver: Arc<dns::Resolver>,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    nflog: netlink::Nflog,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> io::Result<()> {
    let udp = Arc::new(tokio::net::UdpSocket::from_std(udp)?);
    let tcp = tokio::net::TcpListener::from_std(tcp)?;
    // SAFETY: `Nflog` owns its netlink socket and always returns that one descriptor; the
    // AsyncFd owns the `Nflog` until it is dropped.
    let mut nflog =
        unsafe { AsyncFd::register_with_interest(nflog, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 65535];
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = udp.recv_from(&mut buf) => match r {
                Ok((n, peer)) => {
                    let query = buf[..n].to_vec();
                    let (res, udp) = (resolver.clone(), udp.clone());
                    tokio::spawn(async move {
                        if let Some(answer) = res.handle(&query, false).await {
                            let _ = udp.send_to(&answer, peer).await;
                        }
                    });
                }
                Err(e) => tracing::debug!("egress resolver: udp: {e}"),
            },
            r = tcp.accept() => match r {
                Ok((stream, _)) => {
                    tokio::spawn(serve_tcp(resolver.clone(), stream));
                }
                Err(e) => tracing::debug!("egress resolver: tcp: {e}"),
            },
            r = nflog.readable_mut() => {
                let mut ready = r?;
                // `drain` reads until the socket would block: then it is no longer ready.
                let denied = ready.get_inner_mut().drain();
                ready.clear_ready();
                match denied {
                    Ok(denied) => {
                        for d in denied {
                            let host = resolver.name_of(d.dst);
                            if let Ok(mut rep) = resolver.report.lock() {
                                rep.denied_connection(&d, host);
                            }
                        }
                    }
                    Err(e) => tracing::warn!("egress resolver: reading denials: {e}"),
                }
            }
            _ = tick.tick() => {
                if let Ok(mut rep) = resolver.report.lock() {
                    rep.flush();
                }
            }
        }
    }
    if let Ok(mut rep) = resolver.report.lock() {
        rep.flush();
    }
    Ok(())
}

async fn serve_tcp(resolver: Arc<dns::Resolver>, mut stream: tokio::net::TcpStream) {
    loop {
        let q = match tokio::time::timeout(TCP_IDLE, dns::read_framed(&mut stream)).await {
            Ok(Ok(Some(q))) => q,
            _ => return,
        };
        let Some(answer) = resolver.handle(&q, true).await else {
            continue;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&answer);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// What `aac inspect` shows under `Egress`: the policy in force and what it refused;
/// `null` when egress is open.
pub fn inspect(dirs: &StateDirs, rec: &ContainerRecord) -> serde_json::Value {
    let Some(policy) = rec.agent.spec.network.security.egress_policy() else {
        return serde_json::Value::Null;
    };
    let c = report::load(dirs, &rec.id);
    let enforced = match rec.agent.spec.network.mode {
        NetworkMode::None => "no network: nothing leaves the agent",
        _ if rec.backend == Backend::Process
            && network::attachment(dirs, &rec.id)
                .ok()
                .flatten()
                .and_then(|a| a.netns)
                .is_none() =>
        {
            "not enforced (process backend sharing the host's network)"
        }
        _ => "nftables in the agent's network namespace, resolver 127.0.0.11",
    };
    json!({
        "AllowExternalConnections": false,
        "AllowedHosts": policy.allowed,
        "Enforcement": enforced,
        "AllowedQueries": c.allowed_queries,
        "DeniedQueries": c.denied_queries,
        "DeniedConnections": c.denied_connections,
        "AllowedAddresses": c.allowed_addresses,
        "RecentDenials": c.recent,
    })
}

/// The report file of a container (for tests and tools).
pub fn report_file(dirs: &StateDirs, id: &str) -> PathBuf {
    report::report_path(dirs, id)
}
