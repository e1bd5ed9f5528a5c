//! A rootless containerd, as `containerd-rootless.sh` (nerdctl) starts it, runs under
//! RootlessKit: in a user namespace where the user is root, with its own mount and network
//! namespaces, its socket at `$XDG_RUNTIME_DIR/containerd/containerd.sock` and RootlessKit's
//! state (`child_pid`, the port API `api.sock`) in `$XDG_RUNTIME_DIR/containerd-rootless`.
//!
//! aac talks to it over gRPC like to any containerd, and, as nerdctl does, runs inside
//! RootlessKit's user, mount and network namespaces: what it sets up for a container (its
//! network namespace, the CNI bridge and iptables rules, bind-mounted files) must be where
//! containerd and runc are. Published ports then live in RootlessKit's network namespace;
//! RootlessKit's port API exposes them on the host.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use serde::Deserialize;
use thiserror::Error;

/// RootlessKit's state folder (default `$XDG_RUNTIME_DIR/containerd-rootless`).
pub const STATE_DIR_ENV: &str = "AAC_ROOTLESSKIT_STATE_DIR";
/// Set by aac once it runs inside RootlessKit's namespaces: the user's uid outside, which
/// owns aac's files and whose systemd instance holds the containers' cgroups.
pub const UID_ENV: &str = "AAC_ROOTLESS_UID";

#[derive(Debug, Error)]
pub enum RootlesskitError {
    #[error("reading RootlessKit's child pid {path}: {source}")]
    ChildPid {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("entering RootlessKit's {ns} namespace (process {pid}): {source}")]
    Enter {
        ns: &'static str,
        pid: i32,
        source: std::io::Error,
    },
    #[error("RootlessKit's port API ({socket}): {detail}")]
    Api { socket: PathBuf, detail: String },
}

/// The calling user's runtime folder: `$XDG_RUNTIME_DIR`, else `/run/user/<uid>`.
fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(format!("/run/user/{}", nix::unistd::getuid())),
    }
}

/// The rootless containerd socket of the calling user, when one exists (never for root).
pub fn user_containerd_socket() -> Option<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return None;
    }
    let p = runtime_dir().join("containerd/containerd.sock");
    p.exists().then_some(p)
}

/// Inside RootlessKit's namespaces (entered by aac): the user's uid outside.
pub fn entered_uid() -> Option<u32> {
    std::env::var(UID_ENV).ok()?.parse().ok()
}

/// The uid that owns aac's files and cgroups: the user's own when inside RootlessKit (where
/// the process is root of the user namespace), else the effective uid.
pub fn host_uid() -> u32 {
    entered_uid().unwrap_or_else(|| nix::unistd::geteuid().as_raw())
}

/// Whether this process is root of the initial user namespace (not only of RootlessKit's).
pub fn is_real_root() -> bool {
    nix::unistd::geteuid().is_root() && entered_uid().is_none()
}

/// A running RootlessKit: its state folder and the pid of its child (whose namespaces
/// containerd runs in).
#[derive(Debug, Clone)]
pub struct Rootlesskit {
    pub state_dir: PathBuf,
    pub child_pid: i32,
}

impl Rootlesskit {
    /// The RootlessKit of the calling user's rootless containerd, if one runs.
    pub fn find() -> Result<Option<Rootlesskit>, RootlesskitError> {
        let state_dir = match std::env::var_os(STATE_DIR_ENV) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => runtime_dir().join("containerd-rootless"),
        };
        let path = state_dir.join("child_pid");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RootlesskitError::ChildPid { path, source }),
        };
        let child_pid = text
            .trim()
            .parse::<i32>()
            .map_err(|e| RootlesskitError::ChildPid {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
        if !Path::new(&format!("/proc/{child_pid}")).exists() {
            // A stale file: RootlessKit is gone.
            return Ok(None);
        }
        Ok(Some(Rootlesskit {
            state_dir,
            child_pid,
        }))
    }

    /// Join the child's user, mount and network namespaces (`nsenter -U -m -n
    /// --preserve-credentials`), staying in the same working directory. Joining a user
    /// namespace needs a single-threaded process: call this before starting any thread.
    pub fn enter(&self) -> Result<(), RootlesskitError> {
        let cwd = std::env::current_dir().ok();
        let pid = self.child_pid;
        let open = |ns: &'static str| {
            std::fs::File::open(format!("/proc/{pid}/ns/{ns}"))
                .map_err(|source| RootlesskitError::Enter { ns, pid, source })
        };
        // Open all three first: once in the new mount namespace /proc may differ.
        let user = open("user")?;
        let mnt = open("mnt")?;
        let net = open("net")?;
        for (ns, file, flag) in [
            ("user", &user, CloneFlags::CLONE_NEWUSER),
            ("mnt", &mnt, CloneFlags::CLONE_NEWNS),
            ("net", &net, CloneFlags::CLONE_NEWNET),
        ] {
            setns(file, flag).map_err(|e| RootlesskitError::Enter {
                ns,
                pid,
                source: std::io::Error::from(e),
            })?;
        }
        // Joining a mount namespace moves the root and working directory to its root.
        if let Some(d) = cwd {
            let _ = std::env::set_current_dir(d);
        }
        Ok(())
    }

    fn api_socket(&self) -> PathBuf {
        self.state_dir.join("api.sock")
    }

    /// Expose `parent_ip:port` on the host, forwarded to `port` in RootlessKit's network
    /// namespace (where the CNI port mapping picks it up). Returns the port's API id.
    pub fn add_port(
        &self,
        proto: &str,
        parent_ip: &str,
        port: u16,
    ) -> Result<u64, RootlesskitError> {
        let body = serde_json::json!({
            "proto": proto,
            "parentIP": parent_ip,
            "parentPort": port,
            "childPort": port,
        })
        .to_string();
        #[derive(Deserialize)]
        struct Added {
            id: u64,
        }
        let reply = self.call("POST", "/v1/ports", Some(&body))?;
        serde_json::from_str::<Added>(&reply)
            .map(|a| a.id)
            .map_err(|e| self.api_err(format!("unexpected reply {reply:?}: {e}")))
    }

    /// Stop exposing port `id` (from [`Rootlesskit::add_port`]).
    pub fn remove_port(&self, id: u64) -> Result<(), RootlesskitError> {
        self.call("DELETE", &format!("/v1/ports/{id}"), None)
            .map(drop)
    }

    fn api_err(&self, detail: String) -> RootlesskitError {
        RootlesskitError::Api {
            socket: self.api_socket(),
            detail,
        }
    }

    /// One HTTP/1.1 request on the API's Unix socket; the body of a 2xx answer.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<String, RootlesskitError> {
        let socket = self.api_socket();
        let mut s = UnixStream::connect(&socket).map_err(|e| self.api_err(e.to_string()))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: rootlesskit\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())
            .map_err(|e| self.api_err(e.to_string()))?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)
            .map_err(|e| self.api_err(e.to_string()))?;
        let (head, rest) = reply.split_once("\r\n\r\n").unwrap_or((reply.as_str(), ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(0);
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
        });
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(self.api_err(format!("{method} {path}: status {status}: {}", body.trim())))
        }
    }
}

/// The payload of a chunked HTTP body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("7\r\n{\"id\":1\r\n1\r\n}\r\n0\r\n\r\n"),
            "{\"id\":1}"
        );
        assert_eq!(dechunk(""), "");
    }
}
