//! Container networking with the standard CNI plugins.
//!
//! A container in `bridge` mode (the default network `aac`, bridge `aac0`) or on a user network
//! gets a network namespace pinned at `<run>/netns/<id>` and the CNI chain
//! bridge (+ host-local IPAM) -> portmap -> firewall; `none` gets a namespace with only `lo`
//! (brought up in-process, no plugin); `host` shares the host's network. Every attachment is recorded in
//! `<data>/networks/attachments/<id>.json` (network, address, ports, namespace and the CNI
//! configuration and result), so [`detach`] can tear it down even after a crash.
//!
//! ```text
//! <data>/networks/<name>.json               network definitions
//! <data>/networks/attachments/<id>.json     attachment records
//! <data>/cni/networks/<name>/               host-local IP allocations
//! <data>/containers/<id>/{resolv.conf,hosts,hostname}
//! <run>/netns/<id>                          network namespaces
//! ```

pub mod cni;
pub mod defs;
pub mod files;
pub mod netns;
pub mod ports;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::runtime::{Mount, MountBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::agent::model::{NetworkMode, PortSpec, Protocol, ServiceDep};
use crate::state::{self, StateDirs, StateError};

use crate::io::io_err;

pub use cni::{CniResult, PluginDirs};
pub use defs::{NetworkDef, DEFAULT_BRIDGE, DEFAULT_NETWORK};
pub use ports::PublishedPort;

/// The interface name of the container's end of the network.
pub const CONTAINER_IFNAME: &str = "eth0";
/// How long [`resolve_services`] waits by default for a service to accept connections.
pub const DEFAULT_SERVICE_TIMEOUT: Duration = Duration::from_secs(30);

fn port_label(port: u16, proto: Protocol) -> String {
    match proto {
        Protocol::Tcp => port.to_string(),
        Protocol::Udp => format!("{port}/udp"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Rootlesskit(#[from] crate::rootlesskit::RootlesskitError),
    #[error("port {} is already in use", port_label(*port, *proto))]
    PortInUse { port: u16, proto: Protocol },
    #[error("no free host port found")]
    NoFreePort,
    #[error("cannot publish on {0}: only IPv4 host addresses are supported")]
    UnsupportedHostIp(IpAddr),
    #[error("cannot publish on {0}: not an address of this host")]
    HostIpNotLocal(IpAddr),
    #[error("no such network: {0}")]
    NoSuchNetwork(String),
    #[error("network {0} already exists")]
    NetworkExists(String),
    #[error("invalid network name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid subnet {subnet:?}: {reason}")]
    InvalidSubnet { subnet: String, reason: String },
    #[error("subnet {subnet} overlaps {other}")]
    SubnetOverlap { subnet: String, other: String },
    #[error("no free subnet left in 10.88.0.0/16 to 10.99.0.0/16")]
    NoFreeSubnet,
    #[error("network {name} is in use by container(s) {containers}")]
    NetworkInUse { name: String, containers: String },
    #[error("the default network {0} cannot be removed")]
    DefaultNetwork(String),
    #[error("container {0} is already attached to a network")]
    AlreadyAttached(String),
    #[error("CNI plugin {plugin:?} not found in {path} (set AAC_CNI_PATH)")]
    PluginNotFound { plugin: String, path: String },
    #[error("CNI plugin {plugin} {command} failed: {msg}")]
    Plugin {
        plugin: String,
        command: &'static str,
        code: Option<u32>,
        msg: String,
    },
    #[error("CNI plugin {plugin} returned an unreadable result: {source}")]
    BadResult {
        plugin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("network {network}: the CNI result has no IP address")]
    NoIp { network: String },
    #[error("network namespace {path}: {what}: {source}")]
    Netns {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("service {name:?} is not a container on network {network}")]
    ServiceNotFound { name: String, network: String },
    #[error("service {name:?} ({addr}) did not accept connections within {}", humantime::format_duration(*timeout))]
    ServiceNotReady {
        name: String,
        addr: SocketAddr,
        timeout: Duration,
    },
    #[error("address {ip}: {reason}")]
    Address { ip: IpAddr, reason: String },
    #[error("services cannot be reached with network mode none")]
    ServicesNeedNetwork,
}

/// What [`attach`] needs.
#[derive(Debug, Clone)]
pub struct AttachRequest<'a> {
    pub container_id: &'a str,
    /// Container name: the name peers on the network resolve.
    pub name: &'a str,
    pub network: &'a NetworkMode,
    pub ports: &'a [PortSpec],
    pub dns: &'a [IpAddr],
    /// resolv.conf `search` domains replacing the host's (`["."]`: none).
    pub dns_search: &'a [String],
    /// resolv.conf `options` replacing the host's.
    pub dns_options: &'a [String],
    /// The address to take on a user network (`--ip`).
    pub ip: Option<IpAddr>,
    pub hostname: &'a str,
    /// aac's egress resolver (`crate::egress::resolver_for`): when set, the container's
    /// resolv.conf names only it; the resolver asks `dns` (or the host's servers).
    pub dns_proxy: Option<IpAddr>,
}

/// What [`attach`] set up; feeds the spec builder's `netns_path` and `extra_mounts`.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// The namespace to join; `None` for host networking.
    pub netns_path: Option<PathBuf>,
    pub ip: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    /// `/etc/resolv.conf`, `/etc/hosts`, `/etc/hostname`.
    pub mounts: Vec<Mount>,
    pub ports: Vec<PublishedPort>,
    /// Network name (`aac`, a user network), or `host`/`none`.
    pub network: String,
}

/// The on-disk record of an attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRecord {
    pub container_id: String,
    pub name: String,
    pub hostname: String,
    /// Network name, or `host`/`none`.
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub ports: Vec<PublishedPort>,
    /// The CNI conflist used for ADD (DEL uses the same one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflist: Option<Value>,
    /// The CNI runtime config (`portMappings`).
    #[serde(default)]
    pub runtime_config: Value,
    /// The CNI ADD result; `None` while the ADD is under way (or if it never finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The container's hosts file (rewritten when peers come and go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts_file: Option<PathBuf>,
    /// Ports RootlessKit exposes on the host for this container (rootless containerd).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rootlesskit_ports: Vec<u64>,
    pub created: String,
}

/// A network and the containers attached to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInfo {
    #[serde(flatten)]
    pub def: NetworkDef,
    pub containers: Vec<AttachedContainer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedContainer {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
}

pub(crate) fn attachments_dir(dirs: &StateDirs) -> PathBuf {
    defs::networks_dir(dirs).join("attachments")
}

fn record_path(dirs: &StateDirs, id: &str) -> PathBuf {
    attachments_dir(dirs).join(format!("{id}.json"))
}

/// Exclusive lock over aac's network state (definitions, records, port reservations, hosts
/// files) for the length of one operation.
fn lock(dirs: &StateDirs) -> Result<Flock<File>, NetError> {
    let dir = defs::networks_dir(dirs);
    crate::state::create_private_dir(&dir)?;
    let path = dir.join(".lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("opening", &path))?;
    Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| NetError::Io(crate::io::IoError::new("locking", path, e.into())))
}

fn validate_id(id: &str) -> Result<(), NetError> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        || id.starts_with('.')
    {
        return Err(NetError::State(StateError::NotFound(id.to_string())));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Networks

/// Create the default network `aac` (bridge `aac0`, or `$AAC_DEFAULT_BRIDGE`) unless it exists.
pub fn ensure_default_network(dirs: &StateDirs) -> Result<NetworkDef, NetError> {
    let _lock = lock(dirs)?;
    ensure_default_locked(dirs)
}

fn ensure_default_locked(dirs: &StateDirs) -> Result<NetworkDef, NetError> {
    if let Some(def) = defs::load(dirs, DEFAULT_NETWORK)? {
        return Ok(def);
    }
    let others = defs::list(dirs)?;
    // The default bridge may be left from an earlier aac state: its route must not push the
    // default network off its own subnet.
    let routes: Vec<_> = defs::host_routes();
    let subnet = defs::allocate_subnet(&others, &routes)?;
    let def = NetworkDef {
        id: state::new_id(),
        name: DEFAULT_NETWORK.to_string(),
        gateway: defs::gateway_of(&subnet),
        subnet,
        // A second aac state on one host (tests, a rootless user) needs a bridge of its own.
        bridge: std::env::var("AAC_DEFAULT_BRIDGE")
            .ok()
            .filter(|b| !b.is_empty() && b.len() <= 15)
            .unwrap_or_else(|| DEFAULT_BRIDGE.to_string()),
        created: defs::now_rfc3339(),
        labels: BTreeMap::new(),
    };
    defs::save(dirs, &def)?;
    tracing::info!(subnet = %def.subnet, "created the default network {DEFAULT_NETWORK}");
    Ok(def)
}

/// Create a user network. `subnet` (`10.90.0.0/24`) defaults to the first free /24 from
/// 10.88.0.0/16 on that overlaps neither another network nor a host route.
pub fn create_network(
    dirs: &StateDirs,
    name: &str,
    subnet: Option<&str>,
) -> Result<NetworkDef, NetError> {
    create_network_with_labels(dirs, name, subnet, BTreeMap::new())
}

pub fn create_network_with_labels(
    dirs: &StateDirs,
    name: &str,
    subnet: Option<&str>,
    labels: BTreeMap<String, String>,
) -> Result<NetworkDef, NetError> {
    defs::validate_name(name)?;
    if name == DEFAULT_NETWORK {
        return Err(NetError::NetworkExists(name.to_string()));
    }
    let _lock = lock(dirs)?;
    if defs::load(dirs, name)?.is_some() {
        return Err(NetError::NetworkExists(name.to_string()));
    }
    let others = defs::list(dirs)?;
    let routes = defs::host_routes();
    let subnet = match subnet {
        Some(s) => {
            let net = defs::parse_subnet(s)?;
            if let Some(other) = defs::conflict(&net, &others, &routes) {
                return Err(NetError::SubnetOverlap {
                    subnet: net.to_string(),
                    other,
                });
            }
            net
        }
        None => defs::allocate_subnet(&others, &routes)?,
    };
    let id = state::new_id();
    let def = NetworkDef {
        bridge: format!("aac-{}", &id[..10]),
        id,
        name: name.to_string(),
        gateway: defs::gateway_of(&subnet),
        subnet,
        created: defs::now_rfc3339(),
        labels,
    };
    defs::save(dirs, &def)?;
    tracing::info!(network = name, subnet = %def.subnet, bridge = %def.bridge, "created network");
    Ok(def)
}

/// Every network (the default one included, created if needed).
pub fn list_networks(dirs: &StateDirs) -> Result<Vec<NetworkDef>, NetError> {
    let _lock = lock(dirs)?;
    ensure_default_locked(dirs)?;
    defs::list(dirs)
}

/// A network with its attached containers. `bridge`/`default` name the default network.
pub fn inspect_network(dirs: &StateDirs, name: &str) -> Result<NetworkInfo, NetError> {
    let name = defs::canonical_name(name);
    let def = if name == DEFAULT_NETWORK {
        ensure_default_network(dirs)?
    } else {
        defs::load(dirs, name)?.ok_or_else(|| NetError::NoSuchNetwork(name.to_string()))?
    };
    let containers = list_attachments(dirs)?
        .into_iter()
        .filter(|r| r.network == def.name)
        .map(|r| AttachedContainer {
            id: r.container_id,
            name: r.name,
            ip: r.ip,
            ports: r.ports,
        })
        .collect();
    Ok(NetworkInfo { def, containers })
}

/// Remove a user network (and its bridge and IP allocation directory). Refused while
/// containers are attached, and for the default network.
pub fn remove_network(dirs: &StateDirs, name: &str) -> Result<(), NetError> {
    let name = defs::canonical_name(name);
    if name == DEFAULT_NETWORK {
        return Err(NetError::DefaultNetwork(name.to_string()));
    }
    let _lock = lock(dirs)?;
    let def = defs::load(dirs, name)?.ok_or_else(|| NetError::NoSuchNetwork(name.to_string()))?;
    let users: Vec<String> = list_attachments(dirs)?
        .into_iter()
        .filter(|r| r.network == def.name)
        .map(|r| r.name)
        .collect();
    if !users.is_empty() {
        return Err(NetError::NetworkInUse {
            name: def.name,
            containers: users.join(", "),
        });
    }
    if let Err(e) = defs::delete_bridge(&def.bridge) {
        tracing::warn!(network = name, "removing bridge {}: {e}", def.bridge);
    }
    let ipam = defs::ipam_dir(dirs).join(&def.name);
    if let Err(e) = fs::remove_dir_all(&ipam) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(network = name, "removing {}: {e}", ipam.display());
        }
    }
    defs::delete(dirs, &def.name)
}

// ---------------------------------------------------------------------------------------------
// Attachments

/// Every attachment record.
pub fn list_attachments(dirs: &StateDirs) -> Result<Vec<AttachmentRecord>, NetError> {
    let dir = attachments_dir(dirs);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", &dir)(e).into()),
    };
    let mut out = Vec::new();
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        match state::read_json::<AttachmentRecord>(&path) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => tracing::warn!("skipping attachment record: {e}"),
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// The record of one container's attachment, if any.
pub fn attachment(
    dirs: &StateDirs,
    container_id: &str,
) -> Result<Option<AttachmentRecord>, NetError> {
    validate_id(container_id)?;
    Ok(state::read_json(&record_path(dirs, container_id))?)
}

/// Check host ports for conflicts with host sockets and with other containers' published
/// ports. Ephemeral (`Some(0)`) and unpublished ports always pass.
pub fn check_ports(dirs: &StateDirs, ports: &[PortSpec]) -> Result<(), NetError> {
    let taken = taken_ports(dirs, None)?;
    let fixed: Vec<PortSpec> = ports
        .iter()
        .filter(|p| p.host.is_some_and(|h| h != 0))
        .cloned()
        .collect();
    ports::reserve(&fixed, &taken).map(|_| ())
}

fn taken_ports(dirs: &StateDirs, except: Option<&str>) -> Result<Vec<PublishedPort>, NetError> {
    Ok(list_attachments(dirs)?
        .into_iter()
        .filter(|r| Some(r.container_id.as_str()) != except)
        .flat_map(|r| r.ports)
        .collect())
}

fn bind_mount(dest: &str, source: &Path) -> Result<Mount, NetError> {
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(vec!["rbind".to_string(), "rprivate".to_string()])
        .build()
        .map_err(|e| {
            NetError::Io(crate::io::IoError::new(
                "describing the mount of",
                source.to_path_buf(),
                io::Error::other(e.to_string()),
            ))
        })
}

/// Undo steps of a failed attach, run in reverse.
struct Rollback<'a> {
    dirs: &'a StateDirs,
    id: &'a str,
    netns: Option<PathBuf>,
    record: bool,
    /// conflist, runtime config, ADD result: set once the chain ADD succeeded.
    cni: Option<(Value, Value, Value)>,
    /// Ports RootlessKit was asked to expose.
    rootlesskit_ports: Vec<u64>,
}

impl Rollback<'_> {
    fn run(self) {
        unexpose(self.id, &self.rootlesskit_ports);
        let plugins = PluginDirs::from_env();
        if let (Some(ns), Some((list, rc, result))) = (&self.netns, &self.cni) {
            let inv = cni::Invocation {
                container_id: self.id,
                netns: ns,
                ifname: CONTAINER_IFNAME,
            };
            for e in cni::del_list(&plugins, inv, list, rc, Some(result)) {
                tracing::warn!(container = self.id, "rollback: {e}");
            }
        }
        if let Some(ns) = &self.netns {
            if let Err(e) = netns::remove(ns) {
                tracing::warn!(container = self.id, "rollback: {e}");
            }
        }
        if self.record {
            let path = record_path(self.dirs, self.id);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(
                    container = self.id,
                    "rollback: removing {}: {e}",
                    path.display()
                );
            }
        }
    }
}

/// Connect a container to its network: namespace, CNI chain, published ports, and the
/// resolv.conf/hosts/hostname files. Any failure undoes everything done so far.
pub fn attach(dirs: &StateDirs, req: &AttachRequest<'_>) -> Result<Attachment, NetError> {
    validate_id(req.container_id)?;
    let _lock = lock(dirs)?;
    if state::read_json::<AttachmentRecord>(&record_path(dirs, req.container_id))?.is_some() {
        return Err(NetError::AlreadyAttached(req.container_id.to_string()));
    }
    let hostname = if req.hostname.is_empty() {
        req.name
    } else {
        req.hostname
    };
    let def = match req.network {
        NetworkMode::Bridge => Some(ensure_default_locked(dirs)?),
        NetworkMode::Named(n) if defs::canonical_name(n) == DEFAULT_NETWORK => {
            Some(ensure_default_locked(dirs)?)
        }
        NetworkMode::Named(n) => {
            Some(defs::load(dirs, n)?.ok_or_else(|| NetError::NoSuchNetwork(n.clone()))?)
        }
        NetworkMode::Host | NetworkMode::None => None,
    };
    if let Some(ip) = req.ip {
        check_requested_ip(dirs, ip, def.as_ref(), req.container_id)?;
    }
    let published = if def.is_some() {
        ports::reserve(req.ports, &taken_ports(dirs, Some(req.container_id))?)?
    } else {
        if req.ports.iter().any(|p| p.host.is_some()) {
            tracing::warn!(
                container = req.container_id,
                "published ports are ignored with network mode {}",
                req.network
            );
        }
        Vec::new()
    };
    let mut rb = Rollback {
        dirs,
        id: req.container_id,
        netns: None,
        record: false,
        cni: None,
        rootlesskit_ports: Vec::new(),
    };
    match attach_steps(dirs, req, hostname, def.as_ref(), published, &mut rb) {
        Ok(a) => Ok(a),
        Err(e) => {
            rb.run();
            Err(e)
        }
    }
}

fn attach_steps(
    dirs: &StateDirs,
    req: &AttachRequest<'_>,
    hostname: &str,
    def: Option<&NetworkDef>,
    published: Vec<PublishedPort>,
    rb: &mut Rollback<'_>,
) -> Result<Attachment, NetError> {
    let id = req.container_id;
    let network = match (def, req.network) {
        (Some(d), _) => d.name.clone(),
        (None, mode) => mode.to_string(),
    };
    let mut runtime_config = json!({
        "portMappings": published.iter().map(PublishedPort::cni_mapping).collect::<Vec<_>>(),
    });
    if let (Some(ip), Some(d)) = (req.ip, def) {
        // host-local takes the address it is given (the bridge declares the `ips` capability).
        runtime_config["ips"] = json!([format!("{ip}/{}", d.subnet.prefix_len())]);
    }
    let mut record = AttachmentRecord {
        container_id: id.to_string(),
        name: req.name.to_string(),
        hostname: hostname.to_string(),
        network: network.clone(),
        netns: None,
        ip: None,
        gateway: None,
        ports: published.clone(),
        // portmap only has work to do when a port is published: without any, one process
        // start fewer on attach and on detach.
        conflist: def.map(|d| d.conflist(dirs, !published.is_empty())),
        runtime_config,
        result: None,
        hosts_file: None,
        rootlesskit_ports: Vec::new(),
        created: defs::now_rfc3339(),
    };
    let plugins = PluginDirs::from_env();

    if *req.network != NetworkMode::Host {
        // Fail before creating anything when a plugin is missing.
        if let Some(list) = &record.conflist {
            for p in list["plugins"].as_array().into_iter().flatten() {
                plugins.find(p["type"].as_str().unwrap_or(""))?;
            }
        }
        let ns = netns::netns_path(dirs, id);
        if ns.exists() {
            // Left by a crash between namespace creation and the first record write.
            tracing::warn!(container = id, "removing stale namespace {}", ns.display());
            netns::remove(&ns)?;
        }
        netns::create(&ns)?;
        rb.netns = Some(ns.clone());
        record.netns = Some(ns);
        // Record before any plugin runs, so a crash mid-ADD can still be cleaned up.
        state::write_json(&record_path(dirs, id), &record)?;
        rb.record = true;
    }

    if let Some(ns) = record.netns.clone() {
        // `lo` is up already: netns::create brings it up in-process.
        if let Some(list) = record.conflist.clone() {
            let inv = cni::Invocation {
                container_id: id,
                netns: &ns,
                ifname: CONTAINER_IFNAME,
            };
            // add_list undoes its own partial work when it fails.
            let result = cni::add_list(&plugins, inv, &list, &record.runtime_config)?;
            rb.cni = Some((list.clone(), record.runtime_config.clone(), result.clone()));
            let parsed = CniResult::parse(&result).map_err(|source| NetError::BadResult {
                plugin: "bridge".into(),
                source,
            })?;
            record.result = Some(result);
            record.ip = parsed.ip();
            record.gateway = parsed.gateway();
            state::write_json(&record_path(dirs, id), &record)?;
            if record.ip.is_none() {
                return Err(NetError::NoIp { network });
            }
        }
    }

    // Under RootlessKit the mappings above live in its network namespace: have RootlessKit
    // expose each host port on the host too.
    if crate::rootlesskit::entered_uid().is_some() && !published.is_empty() {
        if let Some(kit) = crate::rootlesskit::Rootlesskit::find()? {
            for p in &published {
                let parent_ip = p
                    .host_ip
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| "0.0.0.0".into());
                let port_id = kit.add_port(p.protocol.as_str(), &parent_ip, p.host_port)?;
                rb.rootlesskit_ports.push(port_id);
                record.rootlesskit_ports.push(port_id);
                state::write_json(&record_path(dirs, id), &record)?;
            }
        }
    }

    // resolv.conf, hosts, hostname.
    let cdir = dirs.container_dir(id);
    let resolv = cdir.join("resolv.conf");
    let hosts = cdir.join("hosts");
    let hostname_file = cdir.join("hostname");
    let mut own_names = vec![hostname.to_string()];
    if req.name != hostname {
        own_names.push(req.name.to_string());
    }
    match req.network {
        NetworkMode::Host => {
            let text = files::host_mode_resolv_conf(req.dns);
            let text = files::with_search_and_options(&text, req.dns_search, req.dns_options);
            files::write_file(&resolv, &text)?;
            files::write_file(&hosts, &files::host_mode_hosts(&own_names))?;
        }
        _ => {
            let text = match req.dns_proxy {
                Some(server) => files::proxy_resolv_conf(server),
                None => files::container_resolv_conf(req.dns),
            };
            let text = files::with_search_and_options(&text, req.dns_search, req.dns_options);
            files::write_file(&resolv, &text)?;
            let own = files::HostEntry::new(
                record
                    .ip
                    .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, 1))),
                req.name,
                hostname,
            )
            .on_network(req.name, &network);
            let peers = peers_of(dirs, &network, id)?;
            files::write_file(&hosts, &files::hosts(&own, &peers))?;
        }
    }
    files::write_file(&hostname_file, &format!("{hostname}\n"))?;
    record.hosts_file = Some(hosts.clone());
    state::write_json(&record_path(dirs, id), &record)?;
    rb.record = true;

    if def.is_some() {
        refresh_peer_hosts(dirs, &network, Some(id));
    }

    let mounts = vec![
        bind_mount("/etc/resolv.conf", &resolv)?,
        bind_mount("/etc/hosts", &hosts)?,
        bind_mount("/etc/hostname", &hostname_file)?,
    ];
    tracing::info!(container = id, network = %network, ip = ?record.ip, "attached");
    Ok(Attachment {
        netns_path: record.netns.clone(),
        ip: record.ip,
        gateway: record.gateway,
        mounts,
        ports: published,
        network,
    })
}

/// Host entries of the containers on `network` other than `except`.
/// `--ip`: on a user network, inside its subnet, not its gateway, network or broadcast
/// address, and not another container's.
fn check_requested_ip(
    dirs: &StateDirs,
    ip: IpAddr,
    def: Option<&NetworkDef>,
    id: &str,
) -> Result<(), NetError> {
    let bad = |reason: String| NetError::Address { ip, reason };
    let Some(def) = def.filter(|d| d.name != DEFAULT_NETWORK) else {
        return Err(bad(
            "an address of your choice is only given on a user-defined network (aac network \
             create NAME; --network NAME), as docker does"
                .into(),
        ));
    };
    let IpAddr::V4(v4) = ip else {
        return Err(bad("aac's networks are IPv4".into()));
    };
    let net = def.subnet;
    if !net.contains(&v4) {
        return Err(bad(format!(
            "not in the subnet {net} of network {}",
            def.name
        )));
    }
    if v4 == def.gateway || v4 == net.network() || v4 == net.broadcast() {
        return Err(bad(format!(
            "the gateway, network or broadcast address of network {}",
            def.name
        )));
    }
    for other in list_attachments(dirs)? {
        if other.container_id != id && other.network == def.name && other.ip == Some(ip) {
            return Err(bad(format!(
                "already in use by container {} on network {}",
                other.name, def.name
            )));
        }
    }
    Ok(())
}

fn peers_of(
    dirs: &StateDirs,
    network: &str,
    except: &str,
) -> Result<Vec<files::HostEntry>, NetError> {
    Ok(list_attachments(dirs)?
        .into_iter()
        .filter(|r| r.network == network && r.container_id != except)
        .filter_map(|r| {
            r.ip.map(|ip| {
                files::HostEntry::new(ip, &r.name, &r.hostname).on_network(&r.name, network)
            })
        })
        .collect())
}

/// Rewrite (in place) the hosts files of every container on `network` except `except`.
fn refresh_peer_hosts(dirs: &StateDirs, network: &str, except: Option<&str>) {
    let records = match list_attachments(dirs) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(network, "updating hosts files: {e}");
            return;
        }
    };
    let on_net: Vec<&AttachmentRecord> = records.iter().filter(|r| r.network == network).collect();
    for r in on_net
        .iter()
        .filter(|r| Some(r.container_id.as_str()) != except)
    {
        let (Some(path), Some(ip)) = (&r.hosts_file, r.ip) else {
            continue;
        };
        let own = files::HostEntry::new(ip, &r.name, &r.hostname).on_network(&r.name, network);
        let peers: Vec<files::HostEntry> = on_net
            .iter()
            .filter(|p| p.container_id != r.container_id)
            .filter_map(|p| {
                p.ip.map(|ip| {
                    files::HostEntry::new(ip, &p.name, &p.hostname).on_network(&p.name, network)
                })
            })
            .collect();
        if let Err(e) = files::rewrite_in_place(path, &files::hosts(&own, &peers)) {
            tracing::warn!(container = %r.container_id, "updating hosts file: {e}");
        }
    }
}

/// Disconnect a container: CNI DEL (reverse chain, with the recorded configuration and
/// result), remove the namespace and the record, update the peers' hosts files. Idempotent:
/// parts that are already gone are logged, not errors.
pub fn detach(dirs: &StateDirs, container_id: &str) -> Result<(), NetError> {
    validate_id(container_id)?;
    let _lock = lock(dirs)?;
    detach_locked(dirs, container_id)
}

fn detach_locked(dirs: &StateDirs, id: &str) -> Result<(), NetError> {
    let path = record_path(dirs, id);
    let record: AttachmentRecord = match state::read_json(&path) {
        Ok(Some(r)) => r,
        Ok(None) => {
            // No record: a namespace may still be left from a crash before the first write.
            let ns = netns::netns_path(dirs, id);
            if ns.exists() {
                tracing::warn!(
                    container = id,
                    "removing unrecorded namespace {}",
                    ns.display()
                );
                if let Err(e) = netns::remove(&ns) {
                    tracing::warn!(container = id, "{e}");
                }
            }
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    unexpose(id, &record.rootlesskit_ports);
    let plugins = PluginDirs::from_env();
    if let Some(ns) = &record.netns {
        if !ns.exists() {
            tracing::warn!(container = id, "namespace {} is already gone", ns.display());
        }
        if let Some(list) = &record.conflist {
            let inv = cni::Invocation {
                container_id: id,
                netns: ns,
                ifname: CONTAINER_IFNAME,
            };
            // Without the ADD result (aac died between the ADD and its record) the firewall
            // plugin's DEL does nothing at all: give it the address host-local handed out.
            let recovered = match &record.result {
                Some(_) => None,
                None => recover_result(dirs, id, list, ns),
            };
            for e in cni::del_list(
                &plugins,
                inv,
                list,
                &record.runtime_config,
                record.result.as_ref().or(recovered.as_ref()),
            ) {
                tracing::warn!(container = id, "detach: {e}");
            }
        }
        if let Err(e) = netns::remove(ns) {
            tracing::warn!(container = id, "detach: {e}");
        }
    }
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", &path)(e).into()),
    }
    if record.conflist.is_some() {
        refresh_peer_hosts(dirs, &record.network, None);
    }
    tracing::info!(container = id, network = %record.network, "detached");
    Ok(())
}

/// Stop RootlessKit exposing the ports `ids` of container `id`; failures are logged.
fn unexpose(id: &str, ids: &[u64]) {
    if ids.is_empty() {
        return;
    }
    match crate::rootlesskit::Rootlesskit::find() {
        Ok(Some(kit)) => {
            for p in ids {
                if let Err(e) = kit.remove_port(*p) {
                    tracing::warn!(container = id, "{e}");
                }
            }
        }
        // RootlessKit is gone, and its ports with it.
        Ok(None) => {}
        Err(e) => tracing::warn!(container = id, "{e}"),
    }
}

/// A stand-in for a lost CNI ADD result: the address host-local allocated to `id` (its files
/// under `<data>/cni/networks/<network>/` are named by address and hold the container ID),
/// with the prefix and gateway of the conflist's range.
fn recover_result(dirs: &StateDirs, id: &str, list: &Value, ns: &Path) -> Option<Value> {
    let network = list.get("name")?.as_str()?;
    let dir = defs::ipam_dir(dirs).join(network);
    let ip = fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let ip: IpAddr = e.file_name().to_str()?.parse().ok()?;
            let owner = fs::read_to_string(e.path()).ok()?;
            (owner.lines().next().map(str::trim) == Some(id)).then_some(ip)
        })?;
    let range = list
        .get("plugins")?
        .as_array()?
        .iter()
        .find_map(|p| p.pointer("/ipam/ranges/0/0"))?;
    let subnet: ipnet::IpNet = range.get("subnet")?.as_str()?.parse().ok()?;
    let mut ip_entry = json!({
        "interface": 0,
        "address": format!("{ip}/{}", subnet.prefix_len()),
    });
    if let Some(gw) = range.get("gateway") {
        ip_entry["gateway"] = gw.clone();
    }
    tracing::info!(container = id, %ip, "recovered the address of an unrecorded CNI result");
    Some(json!({
        "cniVersion": list.get("cniVersion").cloned().unwrap_or(json!(cni::CNI_VERSION)),
        "interfaces": [{"name": CONTAINER_IFNAME, "sandbox": ns}],
        "ips": [ip_entry],
    }))
}

/// Detach every attachment whose container is not in `live_ids`. Returns the IDs detached.
pub fn gc(dirs: &StateDirs, live_ids: &[String]) -> Result<Vec<String>, NetError> {
    let _lock = lock(dirs)?;
    let mut gone = Vec::new();
    for r in list_attachments(dirs)? {
        if !live_ids.contains(&r.container_id) {
            detach_locked(dirs, &r.container_id)?;
            gone.push(r.container_id);
        }
    }
    // Namespaces without a record (crash between creation and the first record write).
    if let Ok(entries) = fs::read_dir(netns::netns_dir(dirs)) {
        for e in entries.filter_map(|e| e.ok()) {
            let Ok(id) = e.file_name().into_string() else {
                continue;
            };
            if !live_ids.contains(&id) && !record_path(dirs, &id).exists() {
                if let Err(err) = netns::remove(&e.path()) {
                    tracing::warn!(container = %id, "gc: {err}");
                }
            }
        }
    }
    Ok(gone)
}

// ---------------------------------------------------------------------------------------------
// Services

/// Env var name prefix of a service: upper case, `-` and `.` become `_`.
pub fn service_env_prefix(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// For each service, the container of that name on `network` (for `host` mode: on any
/// network): `<NAME>_HOST` and `<NAME>_PORT`, once its TCP port accepts connections (UDP
/// services are not waited for). Waits at most `timeout` in all.
pub fn resolve_services(
    dirs: &StateDirs,
    network: &NetworkMode,
    services: &[ServiceDep],
    timeout: Duration,
) -> Result<Vec<(String, String)>, NetError> {
    if services.is_empty() {
        return Ok(Vec::new());
    }
    let net_name = match network {
        NetworkMode::None => return Err(NetError::ServicesNeedNetwork),
        NetworkMode::Host => None,
        NetworkMode::Bridge => Some(DEFAULT_NETWORK.to_string()),
        NetworkMode::Named(n) => Some(defs::canonical_name(n).to_string()),
    };
    let records = list_attachments(dirs)?;
    let mut targets = Vec::new();
    for s in services {
        let found = records
            .iter()
            .filter(|r| net_name.as_deref().is_none_or(|n| r.network == n))
            .find(|r| r.name == s.name && r.ip.is_some());
        let Some(ip) = found.and_then(|r| r.ip) else {
            return Err(NetError::ServiceNotFound {
                name: s.name.clone(),
                network: net_name.clone().unwrap_or_else(|| "any network".into()),
            });
        };
        targets.push((s, SocketAddr::new(ip, s.port)));
    }
    let deadline = Instant::now() + timeout;
    let mut env = Vec::new();
    for (s, addr) in targets {
        if s.protocol == Protocol::Tcp {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let attempt = left
                    .min(Duration::from_secs(1))
                    .max(Duration::from_millis(50));
                if TcpStream::connect_timeout(&addr, attempt).is_ok() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(NetError::ServiceNotReady {
                        name: s.name.clone(),
                        addr,
                        timeout,
                    });
                }
                std::thread::sleep(Duration::from_millis(200).min(left));
            }
        }
        let prefix = service_env_prefix(&s.name);
        env.push((format!("{prefix}_HOST"), addr.ip().to_string()));
        env.push((format!("{prefix}_PORT"), addr.port().to_string()));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_in_use_message_is_exact() {
        let e = NetError::PortInUse {
            port: 8080,
            proto: Protocol::Tcp,
        };
        assert_eq!(e.to_string(), "port 8080 is already in use");
        let e = NetError::PortInUse {
            port: 53,
            proto: Protocol::Udp,
        };
        assert_eq!(e.to_string(), "port 53/udp is already in use");
    }

    #[test]
    fn service_prefixes() {
        assert_eq!(service_env_prefix("my-db"), "MY_DB");
        assert_eq!(service_env_prefix("redis.cache"), "REDIS_CACHE");
    }

    #[test]
    fn bad_container_ids_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
        validate_id("0123abc").unwrap();
    }
}
