//! Health probes, run by the monitor: `command` (inside the container), `http`, `tcp` (in the
//! container's network namespace, against 127.0.0.1) and `file` (inside its root).
//!
//! Network probes enter the container's network namespace on a short-lived thread (setns only
//! changes the calling thread), so they reach ports the agent binds on loopback and need no
//! published port. When the container shares the caller's namespace they connect directly.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::agent::{HttpScheme, Probe};
use crate::logs::format_time;
use crate::status::{ProbeResult, MAX_PROBE_OUTPUT};

pub use crate::backend::CommandRunner;

/// Run `probe` against the container whose main process is `pid`.
pub async fn run_probe(
    probe: &Probe,
    pid: u32,
    timeout: Duration,
    runner: &dyn CommandRunner,
) -> ProbeResult {
    let start = SystemTime::now();
    let (healthy, exit_code, http_status, output) = match probe {
        Probe::Command(argv) => match runner.run(argv, timeout).await {
            Ok((code, out)) => (code == 0, code, None, out),
            Err(e) => (false, -1, None, e.into_bytes()),
        },
        Probe::File { path } => {
            let p = container_path(pid, path);
            if p.exists() {
                (true, 0, None, Vec::new())
            } else {
                (false, 1, None, format!("{path}: no such file").into_bytes())
            }
        }
        Probe::Tcp { port } => {
            let port = *port;
            match in_netns(pid, move || tcp_probe(port, timeout)).await {
                Ok(()) => (true, 0, None, Vec::new()),
                Err(e) => (false, 1, None, e.into_bytes()),
            }
        }
        Probe::Http { path, port, scheme } => {
            let url = format!(
                "{}://127.0.0.1:{port}{}{path}",
                match scheme {
                    HttpScheme::Http => "http",
                    HttpScheme::Https => "https",
                },
                if path.starts_with('/') { "" } else { "/" }
            );
            match in_netns(pid, move || http_probe(&url, timeout)).await {
                Ok((status, body)) => (
                    (200..400).contains(&status),
                    if (200..400).contains(&status) { 0 } else { 1 },
                    Some(status),
                    body,
                ),
                Err(e) => (false, 1, None, e.into_bytes()),
            }
        }
    };
    let mut output = String::from_utf8_lossy(&output).into_owned();
    if output.len() > MAX_PROBE_OUTPUT {
        let mut cut = MAX_PROBE_OUTPUT;
        while !output.is_char_boundary(cut) {
            cut -= 1;
        }
        output.truncate(cut);
    }
    ProbeResult {
        start: format_time(start),
        end: format_time(SystemTime::now()),
        healthy,
        exit_code,
        http_status,
        output,
    }
}

/// `path` inside the root filesystem of process `pid`.
pub fn container_path(pid: u32, path: &str) -> PathBuf {
    Path::new("/proc")
        .join(pid.to_string())
        .join("root")
        .join(path.trim_start_matches('/'))
}

/// Run `f` on a fresh thread inside the network namespace of `pid`.
async fn in_netns<T: Send + 'static>(
    pid: u32,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let task = tokio::task::spawn_blocking(move || {
        let target = format!("/proc/{pid}/ns/net");
        let same = match (
            std::fs::metadata(&target),
            std::fs::metadata("/proc/self/ns/net"),
        ) {
            (Ok(a), Ok(b)) => {
                use std::os::unix::fs::MetadataExt;
                a.ino() == b.ino() && a.dev() == b.dev()
            }
            (Err(e), _) => return Err(format!("container process {pid} is gone: {e}")),
            _ => false,
        };
        if same {
            return f();
        }
        // A dedicated thread: its namespace change dies with it and never leaks into the
        // blocking pool.
        std::thread::spawn(move || {
            let ns = File::open(&target).map_err(|e| format!("{target}: {e}"))?;
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("entering the network namespace of {pid}: {e}"))?;
            f()
        })
        .join()
        .map_err(|_| "probe thread panicked".to_string())?
    });
    task.await.map_err(|e| format!("probe task failed: {e}"))?
}

fn tcp_probe(port: u16, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, timeout)
        .map(drop)
        .map_err(|e| format!("connect to port {port}: {e}"))
}

fn http_probe(url: &str, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let started = Instant::now();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                // Health endpoints commonly use self-signed certificates; the probe checks
                // liveness, not identity.
                .disable_verification(true)
                .build(),
        )
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let remaining = timeout.saturating_sub(started.elapsed());
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_PROBE_OUTPUT as u64)
        .read_to_vec()
        .or_else(|e| {
            if remaining.is_zero() {
                Ok(Vec::new())
            } else {
                Err(e)
            }
        })
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    struct NoExec;
    impl CommandRunner for NoExec {
        fn run<'a>(
            &'a self,
            argv: &'a [String],
            _t: Duration,
        ) -> crate::backend::BoxFuture<'a, Result<(i32, Vec<u8>), String>> {
            Box::pin(async move {
                let out = std::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .output()
                    .map_err(|e| e.to_string())?;
                Ok((out.status.code().unwrap_or(-1), out.stdout))
            })
        }
    }

    fn me() -> u32 {
        std::process::id()
    }

    #[tokio::test]
    async fn tcp_and_http_probes_see_real_servers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for (i, conn) in listener.incoming().take(3).enumerate() {
                let mut c = conn.unwrap();
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let status = if i == 1 { "200 OK" } else { "503 Unavailable" };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        let t = Duration::from_secs(2);
        let r = run_probe(&Probe::Tcp { port }, me(), t, &NoExec).await;
        assert!(r.healthy, "{r:?}");
        let probe = Probe::Http {
            path: "/health".into(),
            port,
            scheme: HttpScheme::Http,
        };
        let r = run_probe(&probe, me(), t, &NoExec).await;
        assert!(r.healthy, "{r:?}");
        assert_eq!(r.http_status, Some(200));
        assert_eq!(r.output, "ok");
        let r = run_probe(&probe, me(), t, &NoExec).await;
        assert!(!r.healthy);
        assert_eq!(r.http_status, Some(503));
        server.join().unwrap();
        // A port that is bound (so no other test can take it) but not listening refuses.
        use nix::sys::socket::{
            bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
        };
        let sock = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            &SockaddrIn::new(127, 0, 0, 1, 0),
        )
        .unwrap();
        let closed: SockaddrIn = getsockname(std::os::fd::AsRawFd::as_raw_fd(&sock)).unwrap();
        let port = closed.port();
        let r = run_probe(&Probe::Tcp { port }, me(), t, &NoExec).await;
        assert!(!r.healthy);
        assert!(r.output.contains("connect"), "{}", r.output);
    }

    #[tokio::test]
    async fn file_and_command_probes() {
        let r = run_probe(
            &Probe::File {
                path: "/proc/self/status".into(),
            },
            me(),
            Duration::from_secs(1),
            &NoExec,
        )
        .await;
        assert!(r.healthy);
        let r = run_probe(
            &Probe::File {
                path: "/does/not/exist".into(),
            },
            me(),
            Duration::from_secs(1),
            &NoExec,
        )
        .await;
        assert!(!r.healthy);
        let big = Probe::Command(vec![
            "/bin/sh".into(),
            "-c".into(),
            "head -c 10000 /dev/zero | tr '\\0' x; exit 3".into(),
        ]);
        let r = run_probe(&big, me(), Duration::from_secs(5), &NoExec).await;
        assert!(!r.healthy);
        assert_eq!(r.exit_code, 3);
        assert_eq!(r.output.len(), MAX_PROBE_OUTPUT);
    }
}
