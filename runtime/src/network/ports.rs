//! Host-port conflicts and ephemeral host ports.
//!
//! Published ports are iptables DNAT rules (CNI portmap), not sockets: a bind test sees host
//! processes but not other containers' ports, so both are checked.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

use super::NetError;
use crate::agent::model::{PortSpec, Protocol};

/// A port that is actually published: the host side is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedPort {
    /// `None`: all host addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PublishedPort {
    /// portmap's `portMappings` runtime-config entry.
    pub fn cni_mapping(&self) -> serde_json::Value {
        let mut m = serde_json::json!({
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol.as_str(),
        });
        if let Some(ip) = self.host_ip {
            m["hostIP"] = serde_json::json!(ip.to_string());
        }
        m
    }
}

/// The host address to publish on: `None` for all. Only IPv4 is supported (aac's networks are
/// IPv4); `::` means all addresses.
fn host_ip(p: &PortSpec) -> Result<Option<IpAddr>, NetError> {
    match p.host_ip {
        None => Ok(None),
        Some(ip) if ip.is_unspecified() => Ok(None),
        Some(ip @ IpAddr::V4(_)) => Ok(Some(ip)),
        Some(ip) => Err(NetError::UnsupportedHostIp(ip)),
    }
}

fn same_addr(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Can a host process bind this port? (TCP listen / UDP bind.)
fn bindable(ip: Option<IpAddr>, port: u16, proto: Protocol) -> std::io::Result<u16> {
    let addr = SocketAddr::new(ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), port);
    match proto {
        Protocol::Tcp => TcpListener::bind(addr)?.local_addr().map(|a| a.port()),
        Protocol::Udp => UdpSocket::bind(addr)?.local_addr().map(|a| a.port()),
    }
}

fn taken_by(taken: &[PublishedPort], ip: Option<IpAddr>, port: u16, proto: Protocol) -> bool {
    taken
        .iter()
        .any(|t| t.host_port == port && t.protocol == proto && same_addr(t.host_ip, ip))
}

/// Check the requested host ports against host sockets and `taken` (other containers'
/// published ports), and pick free ports for ephemeral ones (`host: Some(0)`). Ports without
/// a host side are only exposed and are skipped.
pub fn reserve(
    ports: &[PortSpec],
    taken: &[PublishedPort],
) -> Result<Vec<PublishedPort>, NetError> {
    let mut slots: Vec<Option<PublishedPort>> = vec![None; ports.len()];
    let claimed = |slots: &[Option<PublishedPort>], ip, port, proto| {
        let done: Vec<PublishedPort> = slots.iter().flatten().copied().collect();
        taken_by(taken, ip, port, proto) || taken_by(&done, ip, port, proto)
    };
    // Fixed ports first, so an ephemeral pick never steals one asked for explicitly.
    for (i, p) in ports.iter().enumerate() {
        let Some(port) = p.host.filter(|h| *h != 0) else {
            continue;
        };
        let ip = host_ip(p)?;
        if claimed(&slots, ip, port, p.protocol) {
            return Err(NetError::PortInUse {
                port,
                proto: p.protocol,
            });
        }
        match bindable(ip, port, p.protocol) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(NetError::PortInUse {
                    port,
                    proto: p.protocol,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                return Err(NetError::HostIpNotLocal(unspecified_or(ip)))
            }
            // EACCES for ports < 1024 as non-root: not a conflict; the DNAT rule still works.
            Err(e) => tracing::debug!(port, "bind test inconclusive: {e}"),
        }
        slots[i] = Some(PublishedPort {
            host_ip: ip,
            host_port: port,
            container_port: p.container,
            protocol: p.protocol,
        });
    }
    for (i, p) in ports.iter().enumerate() {
        if p.host != Some(0) {
            continue;
        }
        let ip = host_ip(p)?;
        let mut picked = None;
        for _ in 0..64 {
            let port = bindable(ip, 0, p.protocol).map_err(|e| match e.kind() {
                std::io::ErrorKind::AddrNotAvailable => {
                    NetError::HostIpNotLocal(unspecified_or(ip))
                }
                _ => NetError::Io(crate::io::IoError::new(
                    "picking a free port",
                    "<socket>",
                    e,
                )),
            })?;
            if !claimed(&slots, ip, port, p.protocol) {
                picked = Some(port);
                break;
            }
        }
        let port = picked.ok_or(NetError::NoFreePort)?;
        slots[i] = Some(PublishedPort {
            host_ip: ip,
            host_port: port,
            container_port: p.container,
            protocol: p.protocol,
        });
    }
    Ok(slots.into_iter().flatten().collect())
}

fn unspecified_or(ip: Option<IpAddr>) -> IpAddr {
    ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(container: u16, host: Option<u16>, protocol: Protocol) -> PortSpec {
        PortSpec {
            container,
            host,
            protocol,
            host_ip: None,
        }
    }

    #[test]
    fn held_port_is_in_use_with_the_exact_message() {
        let l = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let err = reserve(&[spec(80, Some(port), Protocol::Tcp)], &[]).unwrap_err();
        assert_eq!(err.to_string(), format!("port {port} is already in use"));
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        let uport = u.local_addr().unwrap().port();
        let err = reserve(&[spec(53, Some(uport), Protocol::Udp)], &[]).unwrap_err();
        assert!(matches!(
            err,
            NetError::PortInUse {
                proto: Protocol::Udp,
                ..
            }
        ));
    }

    #[test]
    fn recorded_ports_and_duplicates_conflict_per_protocol() {
        let free = bindable(None, 0, Protocol::Tcp).unwrap();
        let taken = [PublishedPort {
            host_ip: None,
            host_port: free,
            container_port: 1,
            protocol: Protocol::Tcp,
        }];
        assert!(matches!(
            reserve(&[spec(80, Some(free), Protocol::Tcp)], &taken),
            Err(NetError::PortInUse { port, .. }) if port == free
        ));
        // Same number over UDP is another port.
        let mut udp = spec(80, Some(free), Protocol::Udp);
        udp.host_ip = Some("127.0.0.1".parse().unwrap());
        if bindable(udp.host_ip, free, Protocol::Udp).is_ok() {
            reserve(&[udp], &taken).unwrap();
        }
        let dup = [
            spec(80, Some(free), Protocol::Tcp),
            spec(81, Some(free), Protocol::Tcp),
        ];
        assert!(reserve(&dup, &[]).is_err());
    }

    #[test]
    fn ephemeral_ports_are_resolved_and_exposed_ones_skipped() {
        let got = reserve(
            &[
                spec(80, Some(0), Protocol::Tcp),
                spec(81, None, Protocol::Tcp),
                spec(82, Some(0), Protocol::Udp),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].container_port, 80);
        assert_ne!(got[0].host_port, 0);
        assert_eq!(got[1].container_port, 82);
        assert_eq!(got[1].protocol, Protocol::Udp);
    }

    #[test]
    fn ipv6_host_ips_are_refused() {
        let mut p = spec(80, Some(0), Protocol::Tcp);
        p.host_ip = Some("fd00::1".parse().unwrap());
        assert!(matches!(
            reserve(&[p], &[]),
            Err(NetError::UnsupportedHostIp(_))
        ));
    }
}
