//! Port forwarding for the process backend: the agent binds its container port on the host
//! itself; where a published host port differs, the monitor relays host -> 127.0.0.1:container
//! for TCP (a stream per connection) and UDP (an upstream socket per client address).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

use crate::agent::{PortSpec, Protocol};

/// A UDP client with no traffic this long loses its upstream socket.
pub const UDP_IDLE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
#[error("publishing {host_ip}:{host_port}/{protocol} -> {container_port}: {source}")]
pub struct ForwardError {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: &'static str,
    #[source]
    pub source: io::Error,
}

/// The ports that need a relay: published on a host port other than the container port.
pub fn needs_forwarding(ports: &[PortSpec]) -> Vec<&PortSpec> {
    ports
        .iter()
        .filter(|p| p.host.is_some_and(|h| h != 0 && h != p.container))
        .collect()
}

/// Running relays; stopped (every listener and connection) by [`Forwarder::stop`] or drop.
#[derive(Debug, Default)]
pub struct Forwarder {
    tasks: Vec<JoinHandle<()>>,
}

impl Forwarder {
    /// Bind every host port first (a conflict fails before anything runs), then relay.
    pub async fn start(ports: &[PortSpec]) -> Result<Forwarder, ForwardError> {
        let mut fwd = Forwarder::default();
        for p in needs_forwarding(ports) {
            let Some(host_port) = p.host else { continue };
            let host_ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let bind = SocketAddr::new(host_ip, host_port);
            let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p.container);
            let err = |source| ForwardError {
                host_ip,
                host_port,
                container_port: p.container,
                protocol: p.protocol.as_str(),
                source,
            };
            let task = match p.protocol {
                Protocol::Tcp => {
                    let l = TcpListener::bind(bind).await.map_err(err)?;
                    tokio::spawn(relay_tcp(l, target))
                }
                Protocol::Udp => {
                    let s = UdpSocket::bind(bind).await.map_err(err)?;
                    tokio::spawn(relay_udp(Arc::new(s), target))
                }
            };
            fwd.tasks.push(task);
        }
        Ok(fwd)
    }

    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn relay_tcp(listener: TcpListener, target: SocketAddr) {
    // Connections live in the set: aborting this task drops it and ends them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((mut client, peer)) => {
                    conns.spawn(async move {
                        match TcpStream::connect(target).await {
                            Ok(mut upstream) => {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                            }
                            Err(e) => tracing::debug!("forwarding {peer} to {target}: {e}"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("accepting on a forwarded port: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

type UdpClients = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

async fn relay_udp(socket: Arc<UdpSocket>, target: SocketAddr) {
    let clients: UdpClients = Arc::default();
    let mut replies = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, peer) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!("receiving on a forwarded UDP port: {e}");
                        continue;
                    }
                };
                let existing = clients.lock().ok().and_then(|m| m.get(&peer).cloned());
                let upstream = match existing {
                    Some(u) => u,
                    None => match udp_upstream(target).await {
                        Ok(u) => {
                            let u = Arc::new(u);
                            if let Ok(mut m) = clients.lock() {
                                m.insert(peer, u.clone());
                            }
                            replies.spawn(udp_replies(u.clone(), socket.clone(), peer, clients.clone()));
                            u
                        }
                        Err(e) => {
                            tracing::debug!("UDP upstream for {peer}: {e}");
                            continue;
                        }
                    },
                };
                let _ = upstream.send(&buf[..n]).await;
            }
            Some(_) = replies.join_next(), if !replies.is_empty() => {}
        }
    }
}

async fn udp_upstream(target: SocketAddr) -> io::Result<UdpSocket> {
    let u = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await?;
    u.connect(target).await?;
    Ok(u)
}

/// Send the agent's answers back to `peer` until it has been idle for [`UDP_IDLE`].
async fn udp_replies(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    clients: UdpClients,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let _ = socket.send_to(&buf[..n], peer).await;
            }
            // ECONNREFUSED from an earlier send: nothing listens yet; keep the mapping.
            Ok(Err(_)) => {}
            Err(_) => break,
        }
    }
    if let Ok(mut m) = clients.lock() {
        m.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn spec(container: u16, host: u16, protocol: Protocol) -> PortSpec {
        PortSpec {
            container,
            host: Some(host),
            protocol,
            host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn only_differing_host_ports_are_forwarded() {
        let same = spec(80, 80, Protocol::Tcp);
        let diff = spec(80, 8080, Protocol::Tcp);
        let exposed = PortSpec {
            host: None,
            ..same.clone()
        };
        let all = [same, diff.clone(), exposed];
        let v = needs_forwarding(&all);
        assert_eq!(v, vec![&diff]);
    }

    #[tokio::test]
    async fn tcp_and_udp_are_relayed_and_stop() {
        // A TCP echo and a UDP echo on "container" ports.
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_port = tcp.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    let n = s.read(&mut b).await.unwrap();
                    s.write_all(&b[..n]).await.unwrap();
                });
            }
        });
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while let Ok((n, peer)) = udp.recv_from(&mut b).await {
                udp.send_to(&b[..n], peer).await.unwrap();
            }
        });
        let (ht, hu) = (free_port(), free_port());
        let mut fwd = Forwarder::start(&[
            spec(tcp_port, ht, Protocol::Tcp),
            spec(udp_port, hu, Protocol::Udp),
        ])
        .await
        .unwrap();

        let mut c = TcpStream::connect(("127.0.0.1", ht)).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hello");

        let u = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        u.send_to(b"ping", ("127.0.0.1", hu)).await.unwrap();
        let mut b = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), u.recv(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b[..n], b"ping");

        // A second forwarder on the same host port conflicts.
        let e = Forwarder::start(&[spec(tcp_port, ht, Protocol::Tcp)])
            .await
            .unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::AddrInUse, "{e}");

        fwd.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(("127.0.0.1", ht)).await.is_err());
    }
}
