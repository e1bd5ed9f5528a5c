//! `aac login`/`logout` against a real registry (Debian's `docker-registry` with htpasswd
//! auth on 127.0.0.1): the credentials are checked, kept in docker's config.json format
//! (0600 in a 0700 folder) and used by `aac pull`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aac_runtime::containerd::Credentials;
use aac_tests::cli::{aac, text};
use aac_tests::IMAGE;
use base64::Engine as _;
use serde_json::Value;

fn have(bin: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A registry with htpasswd auth for `user`; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(user: &str, pass: &str) -> Option<Registry> {
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
            .args(["-Bbn", user, pass])
            .output()
            .unwrap();
        assert!(out.status.success());
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, out.stdout).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: aac-login\n    path: {}\n",
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
        Some(Registry {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// aac in a namespace of its own (so a pull really downloads) with its own config folder
/// and HOME (so no one's saved credentials are read).
struct Own {
    ns: String,
    home: tempfile::TempDir,
}

impl Own {
    fn config_dir(&self) -> PathBuf {
        self.home.path().join("cfg").join("aac")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = aac().command(args);
        c.env("AAC_NAMESPACE", &self.ns)
            .env("AAC_CONFIG", self.config_dir())
            .env("HOME", self.home.path())
            .env_remove("DOCKER_CONFIG")
            .env_remove("AAC_REGISTRY_USER")
            .env_remove("AAC_REGISTRY_PASSWORD");
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.command(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "aac {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn login_keeps_checked_credentials_that_pull_uses() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (containerd)");
        return;
    }
    let secret = "s3cret-login-7731";
    let Some(reg) = Registry::start("agent", secret) else {
        return;
    };
    let addr = format!("127.0.0.1:{}", reg.port);
    let remote = format!("{addr}/team/agent:1");
    // the image is in the registry (pushed with the runtime's client)
    aac();
    let client = aac_tests::client().await;
    client
        .push_as(
            IMAGE,
            &remote,
            Some(&Credentials::new("agent", secret)),
            &|_| {},
        )
        .await
        .unwrap();

    let own = Own {
        ns: format!("login-{}", std::process::id()),
        home: tempfile::tempdir().unwrap(),
    };
    // not logged in: the registry refuses, and the error says how to log in
    let out = own.run(&["pull", &remote], None);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("authentication required") && err.contains("aac login"),
        "{err}"
    );

    // a wrong password: exit 1, nothing kept, the password in no output
    let out = own.run(
        &["login", "-u", "agent", "--password-stdin", &addr],
        Some("wrong-pass-5512\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unauthorized"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("wrong-pass-5512"));
    assert!(!own.config_dir().join("config.json").exists());

    // what else the file holds is kept
    std::fs::create_dir_all(own.config_dir()).unwrap();
    std::fs::set_permissions(own.config_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        own.config_dir().join("config.json"),
        r#"{"auths": {"other.example:5000": {"auth": "b3RoZXI6b25l"}}, "detachKeys": "ctrl-q"}"#,
    )
    .unwrap();
    let out = own.run(
        &["login", "-u", "agent", "--password-stdin", &addr],
        Some(&format!("{secret}\n")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Login Succeeded\n");
    assert!(!text(&out.stdout).contains(secret) && !text(&out.stderr).contains(secret));
    let file = own.config_dir().join("config.json");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&own.config_dir()), 0o700);
    let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let auth = doc["auths"][&addr]["auth"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(auth)
            .unwrap(),
        format!("agent:{secret}").as_bytes()
    );
    assert_eq!(doc["auths"]["other.example:5000"]["auth"], "b3RoZXI6b25l");
    assert_eq!(doc["detachKeys"], "ctrl-q");

    // pull uses them; the image runs
    let out = own.ok(&["pull", &remote], None);
    assert_eq!(out.trim(), remote);
    let out = own.ok(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &remote,
            "echo",
            "pulled",
        ],
        None,
    );
    assert_eq!(out.trim(), "pulled");

    // -p works too, with docker's warning
    let out = own.run(&["login", "-u", "agent", "-p", secret, &addr], None);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("--password-stdin"));

    // logout: the entry goes, the rest stays, pull is refused again
    assert_eq!(
        own.ok(&["logout", &addr], None),
        format!("Removing login credentials for {addr}\n")
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(doc["auths"].get(&addr).is_none(), "{doc}");
    assert_eq!(doc["auths"]["other.example:5000"]["auth"], "b3RoZXI6b25l");
    assert_eq!(mode(&file), 0o600);
    own.ok(&["image", "rm", &remote], None);
    let out = own.run(&["pull", &remote], None);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        own.ok(&["logout", &addr], None),
        format!("Not logged in to {addr}\n")
    );

    // bad input: 125 with one line
    let out = own.run(
        &["login", "-u", "agent", "--password-stdin", "bad host"],
        Some("x\n"),
    );
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(text(&out.stderr).trim_end().lines().count(), 1);
    let out = own.run(&["login", &addr], None);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
}
