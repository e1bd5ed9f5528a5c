//! The proxy against real sockets on the loopback: round robin, least connections, a refused
//! connect retried elsewhere, rotation changes, drain counts.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A server answering each connection with `id` and closing it.
async fn server(id: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(id.as_bytes()).await;
            });
        }
    });
    addr
}

/// An address nobody listens on.
fn refused() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn proxy(pool: Arc<Pool>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve(l, pool));
    addr
}

async fn ask(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"hi").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn round_robin_over_replicas_and_retry_on_refused() {
    let a = server("a").await;
    let b = server("b").await;
    let dead = refused();
    let pool = Arc::new(Pool::new());
    pool.set(&[
        ("a".into(), a, true),
        ("dead".into(), dead, true),
        ("b".into(), b, true),
    ]);
    let p = proxy(pool.clone()).await;
    let mut seen = Vec::new();
    for _ in 0..12 {
        seen.push(ask(p).await);
    }
    // Every request answered (the dead one retried elsewhere), both live replicas used.
    assert_eq!(seen.len(), 12);
    assert!(seen.iter().all(|s| s == "a" || s == "b"), "{seen:?}");
    assert!(seen.iter().any(|s| s == "a") && seen.iter().any(|s| s == "b"));
    // Out of the rotation: no more traffic.
    pool.remove_from_rotation("a");
    for _ in 0..6 {
        assert_eq!(ask(p).await, "b");
    }
    pool.set(&[("a".into(), a, true)]);
    for _ in 0..3 {
        assert_eq!(ask(p).await, "a");
    }
}

#[tokio::test]
async fn least_connections_and_drain_counts() {
    // A server that holds connections open until told.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            held.push(s);
        }
    });
    let fast = server("fast").await;
    let pool = Arc::new(Pool::new());
    pool.set(&[("slow".into(), slow, true)]);
    let p = proxy(pool.clone()).await;
    // One open connection to slow...
    let _held = TcpStream::connect(p).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pool.active("slow") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no connection reached slow"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // (a new set keeps the counters of replicas it keeps)
    pool.set(&[("slow".into(), slow, true), ("fast".into(), fast, true)]);
    assert_eq!(pool.active("slow"), 1);
    // ...then every short request goes to the replica with fewer open connections.
    for _ in 0..5 {
        assert_eq!(ask(p).await, "fast");
    }
    assert!(pool.active("slow") >= 1);
    pool.remove_from_rotation("slow");
    assert!(pool
        .backends()
        .iter()
        .any(|b| b.name == "slow" && !b.in_rotation()));
}

#[tokio::test]
async fn no_replica_closes_the_client() {
    let pool = Arc::new(Pool::new());
    pool.set(&[("dead".into(), refused(), true)]);
    let p = proxy(pool).await;
    let mut s = TcpStream::connect(p).await.unwrap();
    let mut out = Vec::new();
    let n = s.read_to_end(&mut out).await.unwrap_or(0);
    assert_eq!(n, 0);
}
