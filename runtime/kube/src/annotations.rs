//! The `agent.dev/*` annotations: what an agent says that Kubernetes has no field for.
//! `generate` writes them, `play` reads them back; a Kubernetes cluster ignores them.

/// The agent's own name, when the Kubernetes names had to be changed to be valid.
pub const NAME: &str = "agent.dev/name";
pub const DESCRIPTION: &str = "agent.dev/description";
pub const AUTHOR: &str = "agent.dev/author";
/// JSON list.
pub const TAGS: &str = "agent.dev/tags";
/// `metadata.version` when it is not a valid label value.
pub const VERSION: &str = "agent.dev/version";
/// Agent labels that are not valid Kubernetes labels, as a JSON object.
pub const LABELS: &str = "agent.dev/labels";
pub const RUNTIME: &str = "agent.dev/runtime";
/// JSON object.
pub const MODEL: &str = "agent.dev/model";
/// JSON list.
pub const CAPABILITIES: &str = "agent.dev/capabilities";
/// JSON list.
pub const DEPENDENCIES: &str = "agent.dev/dependencies";
/// The replicas to start with when an HPA governs the Deployment (which then has none).
pub const REPLICAS: &str = "agent.dev/replicas";
/// aac's restart policy when it is not `always` (a Deployment always restarts).
pub const RESTART_POLICY: &str = "agent.dev/restart-policy";
/// `stop`: Kubernetes can only restart on a failed liveness probe.
pub const ON_UNHEALTHY: &str = "agent.dev/on-unhealthy";
/// The file a `file` health check looks for (the probe itself is an exec of `test -e`).
pub const HEALTH_FILE: &str = "agent.dev/health-file";
/// Kubernetes has no per-pod process limit.
pub const PIDS_LIMIT: &str = "agent.dev/pids-limit";
/// `max-size=10m,max-file=3` when not the default.
pub const LOGGING: &str = "agent.dev/logging";
/// `none` or a user-defined network's name.
pub const NETWORK: &str = "agent.dev/network";
/// `name:port/protocol,...`: the services the agent depends on.
pub const SERVICES: &str = "agent.dev/services";
/// The full host name when it has dots (a pod's `hostname` is one label).
pub const HOSTNAME: &str = "agent.dev/hostname";
/// A seccomp profile file (the cluster gets a `Localhost` profile of the same file name).
pub const SECCOMP_PROFILE: &str = "agent.dev/seccomp-profile";
/// Prefix of `agent.dev/host-path.<volume>`: a bind mount exported as an emptyDir.
pub const HOST_PATH_PREFIX: &str = "agent.dev/host-path.";
/// Prefix of `agent.dev/tmpfs-options.<volume>`: tmpfs options other than `size`.
pub const TMPFS_OPTIONS_PREFIX: &str = "agent.dev/tmpfs-options.";
/// Kubernetes Secret name -> the local secret's name, as a JSON object, for the secrets whose
/// names Kubernetes cannot take.
pub const SECRET_NAMES: &str = "agent.dev/secret-names";
/// On the Service: the host ports as aac publishes them, `[ip:]host:container/protocol,...`.
pub const PUBLISH: &str = "agent.dev/publish";
/// On the NetworkPolicy: `spec.network.security.allowedHosts`, comma separated.
pub const ALLOWED_HOSTS: &str = "agent.dev/allowed-hosts";

/// Volumes named like this are the writable /tmp and /run aac gives a read-only root; `play`
/// leaves them to aac.
pub const READ_ONLY_ROOT_VOLUMES: [&str; 2] = ["aac-tmp", "aac-run"];

use std::net::IpAddr;

use aac_agent::{PortSpec, Protocol, ServiceDep};

/// The ConfigMap holding `spec.config`, named on the Deployment.
pub const CONFIG: &str = "agent.dev/config";

/// `[ip:]host:container/protocol` (IPv6 in brackets; host 0 is a port picked at start).
pub fn format_port(p: &PortSpec) -> String {
    let ip = match p.host_ip {
        Some(IpAddr::V6(ip)) => format!("[{ip}]:"),
        Some(ip) => format!("{ip}:"),
        None => String::new(),
    };
    let host = p.host.map(|h| h.to_string()).unwrap_or_default();
    format!("{ip}{host}:{}/{}", p.container, p.protocol.as_str())
}

/// The ports of a [`PUBLISH`] annotation.
pub fn parse_publish(s: &str) -> Result<Vec<PortSpec>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(parse_port)
        .collect()
}

fn parse_port(e: &str) -> Result<PortSpec, String> {
    let bad = || format!("{e:?} is not [ip:]host:container/protocol");
    let (body, proto) = e.rsplit_once('/').ok_or_else(bad)?;
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return Err(bad()),
    };
    let (ip, rest) = if let Some(r) = body.strip_prefix('[') {
        let (ip, after) = r.split_once("]:").ok_or_else(bad)?;
        (Some(ip), after)
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.len() {
            2 => (None, body),
            3 => (Some(parts[0]), &body[parts[0].len() + 1..]),
            _ => return Err(bad()),
        }
    };
    let (host, container) = rest.split_once(':').ok_or_else(bad)?;
    let host_ip = match ip {
        Some(ip) => Some(ip.parse::<IpAddr>().map_err(|_| bad())?),
        None => None,
    };
    let host = if host.is_empty() {
        None
    } else {
        Some(host.parse::<u16>().map_err(|_| bad())?)
    };
    let container = container.parse::<u16>().map_err(|_| bad())?;
    if container == 0 {
        return Err(bad());
    }
    Ok(PortSpec {
        container,
        host,
        protocol,
        host_ip,
    })
}

/// `name:port/protocol,...`.
pub fn format_services(s: &[ServiceDep]) -> String {
    s.iter()
        .map(|d| format!("{}:{}/{}", d.name, d.port, d.protocol.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The services of a [`SERVICES`] annotation.
pub fn parse_services(s: &str) -> Result<Vec<ServiceDep>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let bad = || format!("{e:?} is not name:port/protocol");
            let (body, proto) = e.rsplit_once('/').ok_or_else(bad)?;
            let (name, port) = body.rsplit_once(':').ok_or_else(bad)?;
            let protocol = match proto.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => return Err(bad()),
            };
            Ok(ServiceDep {
                name: name.to_string(),
                port: port.parse().map_err(|_| bad())?,
                protocol,
            })
        })
        .collect()
}

/// An `allowedHosts` entry: `name` or `*.suffix`, with an optional `:port`.
pub fn split_host_port(entry: &str) -> (&str, Option<u16>) {
    match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse::<u16>() {
            Ok(p) if p > 0 => (h, Some(p)),
            _ => (entry, None),
        },
        _ => (entry, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_read_back() {
        for s in [
            "8080:80/tcp",
            "127.0.0.1:53:53/udp",
            "[::1]:80:8080/tcp",
            ":9000/tcp",
            "0:8080/tcp",
        ] {
            let p = parse_publish(s).unwrap();
            assert_eq!(format_port(&p[0]), s);
        }
        assert_eq!(parse_publish("").unwrap(), vec![]);
        for bad in ["80", "a:b/tcp", "1:2:3:4/tcp", "80:0/tcp", "80:80/sctp"] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn services_and_hosts() {
        let s = parse_services("database:5432/tcp,dns:53/udp").unwrap();
        assert_eq!(format_services(&s), "database:5432/tcp,dns:53/udp");
        assert!(parse_services("x").is_err());
        assert_eq!(
            split_host_port("api.example.com:443"),
            ("api.example.com", Some(443))
        );
        assert_eq!(split_host_port("*.example.com"), ("*.example.com", None));
    }
}
