//! The userspace L4 proxy of a scaled agent: one listener per published TCP port, each
//! connection sent to the replica in rotation with the fewest open connections (round robin
//! among equals), a refused or timed-out connect retried on the next replica, and a replica
//! taken out of the rotation finishing its open connections ("draining") before it stops.
//! Works alike for root, rootless and the process backend: it only needs to reach the
//! replicas' addresses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long one connect to a replica may take before the next one is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One replica behind one port.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    in_rotation: AtomicBool,
    active: AtomicU64,
    total: AtomicU64,
}

impl Backend {
    pub fn new(name: &str, addr: SocketAddr, in_rotation: bool) -> Backend {
        Backend {
            name: name.to_string(),
            addr,
            in_rotation: AtomicBool::new(in_rotation),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    pub fn in_rotation(&self) -> bool {
        self.in_rotation.load(Ordering::SeqCst)
    }

    pub fn active(&self) -> u64 {
        self.active.load(Ordering::SeqCst)
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }
}

/// The replicas behind one port.
#[derive(Debug, Default)]
pub struct Pool {
    backends: RwLock<Vec<Arc<Backend>>>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    /// Replace the set of replicas: `(name, address, in rotation)`. A replica already known
    /// at the same address keeps its counters (and its open connections).
    pub fn set(&self, wanted: &[(String, SocketAddr, bool)]) {
        let mut list = self.backends.write().unwrap_or_else(|e| e.into_inner());
        let mut next: Vec<Arc<Backend>> = Vec::with_capacity(wanted.len());
        for (name, addr, rotation) in wanted {
            match list.iter().find(|b| b.name == *name && b.addr == *addr) {
                Some(b) => {
                    b.in_rotation.store(*rotation, Ordering::SeqCst);
                    next.push(b.clone());
                }
                None => next.push(Arc::new(Backend::new(name, *addr, *rotation))),
            }
        }
        // A replica dropped from the set leaves the rotation for connections that still
        // hold it.
        for b in list.iter() {
            if !next.iter().any(|n| Arc::ptr_eq(n, b)) {
                b.in_rotation.store(false, Ordering::SeqCst);
            }
        }
        *list = next;
    }

    /// Take a replica out of the rotation at once (draining).
    pub fn remove_from_rotation(&self, name: &str) {
        for b in self
            .backends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if b.name == name {
                b.in_rotation.store(false, Ordering::SeqCst);
            }
        }
    }

    /// Open connections to replica `name`.
    pub fn active(&self, name: &str) -> u64 {
        self.backends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|b| b.name == name)
            .map(|b| b.active())
            .sum()
    }

    pub fn backends(&self) -> Vec<Arc<Backend>> {
        self.backends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The replicas in rotation in the order to try them: fewest open connections first,
    /// ties in round-robin order.
    pub fn order(&self) -> Vec<Arc<Backend>> {
        let list = self.backends();
        let live: Vec<Arc<Backend>> = list.into_iter().filter(|b| b.in_rotation()).collect();
        if live.is_empty() {
            return live;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % live.len();
        let mut rotated: Vec<Arc<Backend>> = live[start..]
            .iter()
            .chain(live[..start].iter())
            .cloned()
            .collect();
        // Stable: equal counts keep the round-robin order.
        rotated.sort_by_key(|b| b.active());
        rotated
    }
}

/// Counts one open connection to a backend while it lives.
struct Open(Arc<Backend>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Connect to the first replica that answers, in [`Pool::order`].
async fn connect(pool: &Pool) -> Option<(TcpStream, Open)> {
    for b in pool.order() {
        b.active.fetch_add(1, Ordering::SeqCst);
        let open = Open(b.clone());
        // Taken out of the rotation meanwhile: a drain may have seen no connection.
        if !b.in_rotation() {
            continue;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(b.addr)).await {
            Ok(Ok(s)) => {
                b.total.fetch_add(1, Ordering::SeqCst);
                return Some((s, open));
            }
            Ok(Err(e)) => tracing::debug!("{} ({}): {e}; trying the next replica", b.name, b.addr),
            Err(_) => tracing::debug!("{} ({}): connect timed out", b.name, b.addr),
        }
    }
    None
}

/// Accept on `listener` for ever, each connection relayed to a replica of `pool`.
pub async fn serve(listener: TcpListener, pool: Arc<Pool>) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: wait a little instead of spinning.
                tracing::warn!("accepting: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Some((upstream, open)) = connect(&pool).await else {
                tracing::warn!("no replica accepted the connection from {peer}");
                return;
            };
            let _ = upstream.set_nodelay(true);
            relay(client, upstream).await;
            drop(open);
        });
    }
}

/// Copy both ways until both sides are done (half-closes passed on).
async fn relay(mut a: TcpStream, mut b: TcpStream) {
    if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
        tracing::debug!("relay: {e}");
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
