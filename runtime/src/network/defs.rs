//! Network definitions (`<data>/networks/<name>.json`), subnet allocation and the CNI
//! configuration generated from a definition.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{cni, NetError};
use crate::state::{self, StateDirs};

/// The network `bridge` mode uses; created on first use.
pub const DEFAULT_NETWORK: &str = "aac";
/// Its Linux bridge.
pub const DEFAULT_BRIDGE: &str = "aac0";

/// A network aac manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkDef {
    /// Random 64-hex-digit ID.
    pub id: String,
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Linux bridge device name.
    pub bridge: String,
    /// RFC 3339.
    pub created: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl NetworkDef {
    /// The CNI conflist for this network: bridge (+ host-local IPAM under `<data>/cni/`) ->
    /// portmap (when `ports`) -> firewall.
    pub fn conflist(&self, dirs: &StateDirs, ports: bool) -> Value {
        let mut list = json!({
            "cniVersion": cni::CNI_VERSION,
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "capabilities": {"ips": true},
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{
                            "subnet": self.subnet.to_string(),
                            "gateway": self.gateway.to_string(),
                        }]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": ipam_dir(dirs),
                    }
                },
                {
                    "type": "portmap",
                    "capabilities": {"portMappings": true},
                    "snat": true,
                },
                {
                    "type": "firewall",
                    "backend": "iptables",
                }
            ]
        });
        if !ports {
            if let Some(plugins) = list["plugins"].as_array_mut() {
                plugins.retain(|p| p["type"] != "portmap");
            }
        }
        list
    }
}

/// host-local's `dataDir`: allocations live in `<data>/cni/networks/<network>/`.
pub fn ipam_dir(dirs: &StateDirs) -> PathBuf {
    dirs.data.join("cni").join("networks")
}

pub fn networks_dir(dirs: &StateDirs) -> PathBuf {
    dirs.data.join("networks")
}

fn def_path(dirs: &StateDirs, name: &str) -> PathBuf {
    networks_dir(dirs).join(format!("{name}.json"))
}

/// `bridge`/`default` are spellings of the default network.
pub fn canonical_name(name: &str) -> &str {
    match name {
        "bridge" | "default" => DEFAULT_NETWORK,
        n => n,
    }
}

pub fn validate_name(name: &str) -> Result<(), NetError> {
    let bad = |reason: &'static str| {
        Err(NetError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("must be 1 to 64 characters");
    }
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return bad("must start with a letter or digit");
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return bad("may contain only letters, digits, '_', '.' and '-'");
    }
    if matches!(name, "host" | "none" | "bridge" | "default") {
        return bad("is reserved for a network mode");
    }
    Ok(())
}

pub fn load(dirs: &StateDirs, name: &str) -> Result<Option<NetworkDef>, NetError> {
    let name = canonical_name(name);
    if validate_name(name).is_err() && name != DEFAULT_NETWORK {
        return Ok(None);
    }
    Ok(state::read_json(&def_path(dirs, name))?)
}

pub fn list(dirs: &StateDirs) -> Result<Vec<NetworkDef>, NetError> {
    let dir = networks_dir(dirs);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NetError::Io(crate::io::IoError::new(
                "listing", dir, source,
            )))
        }
    };
    let mut out = Vec::new();
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        if let Some(def) = state::read_json::<NetworkDef>(&path)? {
            out.push(def);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub fn save(dirs: &StateDirs, def: &NetworkDef) -> Result<(), NetError> {
    Ok(state::write_json(&def_path(dirs, &def.name), def)?)
}

pub fn delete(dirs: &StateDirs, name: &str) -> Result<(), NetError> {
    let path = def_path(dirs, name);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetError::Io(crate::io::IoError::new(
            "removing", path, source,
        ))),
    }
}

/// The IPv4 routes of the host (except default routes): subnets in use.
pub fn host_routes() -> Vec<Ipv4Net> {
    let text = fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The kernel prints the network-order value as a native integer.
            let dest = Ipv4Addr::from(dest.to_ne_bytes());
            let prefix = u8::try_from(mask.count_ones()).ok()?;
            (prefix > 0).then(|| Ipv4Net::new(dest, prefix).ok())?
        })
        .collect()
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Parse a user-given subnet (`10.90.0.0/24`), normalised to its network address.
pub fn parse_subnet(s: &str) -> Result<Ipv4Net, NetError> {
    let bad = |reason: String| NetError::InvalidSubnet {
        subnet: s.to_string(),
        reason,
    };
    let net: Ipv4Net = s
        .trim()
        .parse()
        .map_err(|_| bad("expected an IPv4 CIDR like 10.90.0.0/24".into()))?;
    if net.prefix_len() > 30 {
        return Err(bad("the prefix must be /30 or shorter".into()));
    }
    if net.prefix_len() < 8 {
        return Err(bad("the prefix must be /8 or longer".into()));
    }
    Ok(net.trunc())
}

/// Why `subnet` cannot be used: another network's or a host route's subnet overlaps it.
pub fn conflict(subnet: &Ipv4Net, others: &[NetworkDef], routes: &[Ipv4Net]) -> Option<String> {
    if let Some(o) = others.iter().find(|o| overlaps(subnet, &o.subnet)) {
        return Some(format!("network {} ({})", o.name, o.subnet));
    }
    routes
        .iter()
        .find(|r| overlaps(subnet, r))
        .map(|r| format!("host route {r}"))
}

/// The first free /24 in 10.88.0.0/16, then 10.89.0.0/16, ... 10.99.0.0/16.
pub fn allocate_subnet(others: &[NetworkDef], routes: &[Ipv4Net]) -> Result<Ipv4Net, NetError> {
    for second in 88u8..=99 {
        for third in 0u8..=255 {
            let Ok(net) = Ipv4Net::new(Ipv4Addr::new(10, second, third, 0), 24) else {
                continue;
            };
            if conflict(&net, others, routes).is_none() {
                return Ok(net);
            }
        }
    }
    Err(NetError::NoFreeSubnet)
}

/// The gateway (bridge) address: the first host address of the subnet.
pub fn gateway_of(net: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).saturating_add(1))
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Delete a Linux bridge device (the CNI bridge plugin creates bridges but never deletes
/// them). Uses the bridge ioctls: bring it down, then `SIOCBRDELBR`. A missing device is fine.
pub fn delete_bridge(name: &str) -> Result<(), NetError> {
    use nix::libc;
    use std::os::fd::AsRawFd;

    if !PathBuf::from("/sys/class/net").join(name).exists() {
        return Ok(());
    }
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Ok(());
    }
    let io = |what: &'static str| {
        let name = name.to_string();
        move |source: io::Error| {
            NetError::Io(crate::io::IoError::new(
                what,
                PathBuf::from("/sys/class/net").join(name),
                source,
            ))
        }
    };
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| io("opening a socket for")(e.into()))?;
    let fd = sock.as_raw_fd();
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is an open socket and req a properly initialised ifreq that outlives the call.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io("reading flags of")(io::Error::last_os_error()));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io("bringing down")(io::Error::last_os_error()));
    }
    const SIOCBRDELBR: libc::c_ulong = 0x89a1;
    let cname = std::ffi::CString::new(bytes).map_err(|e| io("naming")(io::Error::other(e)))?;
    // SAFETY: SIOCBRDELBR takes a NUL-terminated interface name.
    if unsafe { libc::ioctl(fd, SIOCBRDELBR as _, cname.as_ptr()) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENXIO) {
            return Err(io("deleting")(e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, subnet: &str) -> NetworkDef {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        NetworkDef {
            id: "x".into(),
            name: name.into(),
            gateway: gateway_of(&subnet),
            subnet,
            bridge: "b".into(),
            created: now_rfc3339(),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn allocation_skips_networks_and_routes() {
        let others = vec![def("a", "10.88.0.0/24"), def("b", "10.88.2.0/23")];
        let routes = vec!["10.88.1.0/24".parse().unwrap()];
        assert_eq!(
            allocate_subnet(&others, &routes).unwrap().to_string(),
            "10.88.4.0/24"
        );
        let wide = vec!["10.88.0.0/16".parse().unwrap()];
        assert_eq!(
            allocate_subnet(&[], &wide).unwrap().to_string(),
            "10.89.0.0/24"
        );
        let all = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(matches!(
            allocate_subnet(&[], &all),
            Err(NetError::NoFreeSubnet)
        ));
    }

    #[test]
    fn subnets_parse_and_normalise() {
        assert_eq!(
            parse_subnet("10.90.3.7/24").unwrap().to_string(),
            "10.90.3.0/24"
        );
        assert_eq!(
            gateway_of(&parse_subnet("10.90.3.0/24").unwrap()),
            Ipv4Addr::new(10, 90, 3, 1)
        );
        for bad in ["10.90.3.0", "10.90.3.0/31", "fd00::/64", "x", "10.0.0.0/4"] {
            assert!(parse_subnet(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_validated() {
        validate_name("my-net_1.x").unwrap();
        for bad in [
            "",
            "-x",
            "a/b",
            "host",
            "none",
            "bridge",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_routes_are_parsed() {
        // Every machine running the tests has at least a route for its own link (or none at
        // all in an empty namespace): parsing must not panic and gives sane prefixes.
        for r in host_routes() {
            assert!(r.prefix_len() > 0 && r.prefix_len() <= 32);
        }
    }
}
