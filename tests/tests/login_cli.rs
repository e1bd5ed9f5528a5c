//! `aac login`/`logout` against a real registry (Debian's `docker-registry` with htpasswd
//! auth on 127.0.0.1): the credentials are checked, kept in docker's config.json format
//! (0600 in a 0700 folder) and used by `aac pull`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aac_runtime::containerd::Credentials;
use aac_tests::auth_registry::AuthRegistry;
use aac_tests::cli::{aac, text};
use aac_tests::IMAGE;
use base64::Engine as _;
use serde_json::Value;

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
    let Some(reg) = AuthRegistry::start("agent", secret) else {
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
