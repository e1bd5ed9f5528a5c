//! A local registry with htpasswd auth (Debian's `docker-registry`), for the tests of
//! `aac login` and of pulls that need credentials.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn have(bin: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A registry on 127.0.0.1 that lets in `user` with `password` only; killed on drop.
pub struct AuthRegistry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl AuthRegistry {
    /// Start one (installing docker-registry and apache2-utils when missing); `None`, after
    /// saying so, when they cannot be had.
    pub fn start(user: &str, password: &str) -> Option<AuthRegistry> {
        if !have("docker-registry") || !have("htpasswd") {
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-qq", "docker-registry", "apache2-utils"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output();
        }
        if !have("docker-registry") || !have("htpasswd") {
            eprintln!("skipped: docker-registry/htpasswd not available");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .unwrap();
        assert!(out.status.success());
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, out.stdout).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: aac-test\n    path: {}\n",
            dir.path().join("data").display(),
            htpasswd.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(AuthRegistry {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
