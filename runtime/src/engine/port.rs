//! `port`: where a container's published ports answer on the host.

use std::net::{IpAddr, Ipv4Addr};

use crate::agent::Protocol;
use crate::record::Backend;

use super::{Container, Engine};

/// One published port: the container's port and the host address it answers on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortMapping {
    pub container_port: u16,
    pub protocol: Protocol,
    pub host_ip: IpAddr,
    pub host_port: u16,
}

impl std::fmt::Display for PortMapping {
    /// docker's `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} -> {}",
            self.container_port,
            self.protocol.as_str(),
            self.host_address()
        )
    }
}

impl PortMapping {
    /// `0.0.0.0:8080`, `[::1]:8080`.
    pub fn host_address(&self) -> String {
        std::net::SocketAddr::new(self.host_ip, self.host_port).to_string()
    }
}

impl Engine {
    /// The published ports of a container, in the order they were asked for. A host process
    /// (the process backend) listens on the host itself: a port published without a host
    /// port answers as it is.
    pub fn ports(&self, c: &Container) -> Vec<PortMapping> {
        c.rec
            .ports
            .iter()
            .filter_map(|p| {
                let host_port = match c.rec.backend {
                    Backend::Process => p.host.filter(|h| *h != 0).unwrap_or(p.container),
                    Backend::Containerd => p.host.filter(|h| *h != 0)?,
                };
                Some(PortMapping {
                    container_port: p.container,
                    protocol: p.protocol,
                    host_ip: p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                    host_port,
                })
            })
            .collect()
    }
}
