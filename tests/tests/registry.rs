//! Pull and push against a real registry: Debian's `docker-registry` (distribution 2.x),
//! started by each test on 127.0.0.1:<free port> with storage in a temporary directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio as ProcStdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aac_runtime::containerd::{
    Client, CreateRequest, Credentials, CtrdError, Progress, RegistryError, Stdio,
};
use aac_tests::*;

/// Installs docker-registry and htpasswd if missing; false (with the reason printed) if
/// that is impossible.
fn tools_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let have = |bin: &str| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {bin}"))
                .stdout(ProcStdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if have("docker-registry") && have("htpasswd") {
            return true;
        }
        let out = Command::new("apt-get")
            .args(["install", "-y", "-qq", "docker-registry", "apache2-utils"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        match out {
            Ok(o) if o.status.success() && have("docker-registry") && have("htpasswd") => true,
            Ok(o) => {
                eprintln!(
                    "SKIP: cannot install docker-registry/apache2-utils: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                false
            }
            Err(e) => {
                eprintln!("SKIP: cannot run apt-get to install docker-registry: {e}");
                false
            }
        }
    })
}

/// A private registry process; killed on drop.
struct Registry {
    child: Mutex<Option<Child>>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; with `user` a htpasswd (bcrypt) auth for that user and password.
    fn start(user: Option<(&str, &str)>) -> Option<Registry> {
        Self::start_with(user.map(Auth::Htpasswd))
    }

    fn start_with(auth: Option<Auth>) -> Option<Registry> {
        if !tools_available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some(Auth::Token(t)) = &auth {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    \
                 rootcertbundle: {}\n",
                t.realm(),
                t.cert.display()
            ));
        }
        if let Some(Auth::Htpasswd((u, p))) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .unwrap();
            assert!(out.status.success(), "htpasswd failed");
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: aac-test\n    path: {}\n",
                path.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(ProcStdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = Registry {
            child: Mutex::new(Some(child)),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                panic!("registry did not listen on {port}; log:\n{}", reg.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(reg)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The file holding blob `digest` in the registry's storage.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client of a namespace of its own, so that nothing is in its content store yet and a
/// pull really downloads.
async fn fresh_client(tag: &str) -> Client {
    let socket = env().socket.clone();
    Client::connect(&socket, &unique_id(&format!("aac-{tag}")))
        .await
        .unwrap()
}

/// Progress events, collected.
#[derive(Default)]
struct Events(Mutex<Vec<Progress>>);

impl Events {
    fn push(&self, p: Progress) {
        self.0.lock().unwrap().push(p);
    }
    fn written(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| match p {
                Progress::Writing { digest, .. } => Some(digest.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Runs `echo <word>` in `image` and returns the output.
async fn run_echo(c: &Client, image: &str, word: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = output_file(tmp.path(), "out");
    let id = unique_id("pulled");
    c.create(CreateRequest {
        id: id.clone(),
        image_ref: image.to_string(),
        spec: spec(&id, &["echo", word]),
        labels: Default::default(),
        stdio: Stdio {
            stdout: Some(out.display().to_string()),
            ..Default::default()
        },
        systemd_cgroup: false,
    })
    .await
    .unwrap();
    c.start(&id).await.unwrap();
    assert_eq!(c.wait(&id).await.unwrap().code, 0);
    c.delete(&id).await.unwrap();
    assert_eq!(leftovers(c, &id).await, Leftovers::default());
    std::fs::read_to_string(out).unwrap()
}

async fn assert_no_lease(c: &Client, name: &str) {
    let leases = c.list_leases().await.unwrap();
    assert!(
        !leases
            .iter()
            .any(|(_, l)| l.get("aac.dev/for").map(String::as_str) == Some(name)),
        "lease left behind: {leases:?}"
    );
}

/// Asserts that a failed pull of `name` left no image, no lease and no extraction snapshot.
async fn assert_nothing_left(c: &Client, name: &str) {
    let images = c.list_images().await.unwrap();
    assert!(
        !images.iter().any(|i| i.name == name),
        "image record left behind: {images:?}"
    );
    assert_no_lease(c, name).await;
    let active: Vec<_> = c
        .list_snapshots()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.kind != "committed")
        .collect();
    assert!(
        active.is_empty(),
        "active snapshots left behind: {active:?}"
    );
}

#[tokio::test]
async fn push_pull_and_run() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let c = client().await;
    let remote = format!("{}/aac/busybox:1", reg.addr());
    let pushed_events = Events::default();
    let pushed = c
        .push_as(IMAGE, &remote, None, &|p| pushed_events.push(p))
        .await
        .unwrap();
    let local = c
        .list_images()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.name == IMAGE)
        .unwrap();
    assert_eq!(
        pushed.digest, local.digest,
        "the manifest is pushed unchanged"
    );
    assert_eq!(
        pushed_events.written().len(),
        2,
        "layer and config uploaded"
    );
    // Pushing again uploads nothing: the registry has the blobs.
    let again = Events::default();
    c.push_as(IMAGE, &remote, None, &|p| again.push(p))
        .await
        .unwrap();
    assert!(again.written().is_empty(), "{:?}", again.written());

    // Pull into an empty namespace: everything is downloaded.
    let fresh = fresh_client("pull").await;
    assert!(!fresh.image_exists(&remote).await.unwrap());
    let events = Events::default();
    let s = fresh
        .pull(&remote, None, &|p| events.push(p))
        .await
        .unwrap();
    assert_eq!(s.name, remote);
    assert_eq!(s.digest, pushed.digest);
    let mut written = events.written();
    written.sort();
    let mut uploaded = pushed_events.written();
    uploaded.sort();
    assert_eq!(written, uploaded, "config and layer downloaded");
    assert_eq!(
        fresh.image_config(&remote).await.unwrap(),
        image_config(),
        "image config travels"
    );
    assert_eq!(run_echo(&fresh, &remote, "pulled").await, "pulled\n");
    assert_no_lease(&fresh, &remote).await;

    // Remove the local image and pull it back, this time by digest too.
    fresh.remove_image(&remote).await.unwrap();
    assert!(!fresh.image_exists(&remote).await.unwrap());
    fresh.pull(&remote, None, &|_| {}).await.unwrap();
    assert_eq!(run_echo(&fresh, &remote, "again").await, "again\n");
    let by_digest = format!("{}/aac/busybox@{}", reg.addr(), pushed.digest);
    let s = fresh.pull(&by_digest, None, &|_| {}).await.unwrap();
    assert_eq!(s.name, by_digest);
    assert_eq!(run_echo(&fresh, &by_digest, "digest").await, "digest\n");

    // A pull into the namespace that holds the blobs downloads no layer.
    let events = Events::default();
    c.pull(&remote, None, &|p| events.push(p)).await.unwrap();
    assert!(events.written().is_empty(), "{:?}", events.written());
    assert_eq!(run_echo(&c, &remote, "shared").await, "shared\n");
    c.remove_image(&remote).await.unwrap();
}

#[tokio::test]
async fn basic_auth() {
    let Some(reg) = Registry::start(Some(("user", "pass"))) else {
        return;
    };
    let c = client().await;
    let remote = format!("{}/aac/private:1", reg.addr());
    let good = Credentials::new("user", "pass");
    let bad = Credentials::new("user", "wrong");

    let err = c.push_as(IMAGE, &remote, None, &|_| {}).await.unwrap_err();
    assert!(
        matches!(err, CtrdError::Registry(RegistryError::AuthRequired { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("authentication required for {}", reg.addr())),
        "{err}"
    );
    let err = c
        .push_as(IMAGE, &remote, Some(&bad), &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, CtrdError::Registry(RegistryError::Unauthorized { .. })),
        "{err:?}"
    );
    c.push_as(IMAGE, &remote, Some(&good), &|_| {})
        .await
        .unwrap();

    let fresh = fresh_client("auth").await;
    let err = fresh.pull(&remote, None, &|_| {}).await.unwrap_err();
    assert!(
        matches!(err, CtrdError::Registry(RegistryError::AuthRequired { .. })),
        "{err:?}"
    );
    let err = fresh.pull(&remote, Some(&bad), &|_| {}).await.unwrap_err();
    assert!(
        matches!(err, CtrdError::Registry(RegistryError::Unauthorized { .. })),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("unauthorized: "), "{err}");
    assert_nothing_left(&fresh, &remote).await;
    let s = fresh.pull(&remote, Some(&good), &|_| {}).await.unwrap();
    assert_eq!(s.name, remote);
    assert_eq!(run_echo(&fresh, &remote, "authed").await, "authed\n");
}

#[tokio::test]
async fn missing_tag_and_unreachable_registry() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let c = client().await;
    c.push_as(
        IMAGE,
        &format!("{}/aac/busybox:1", reg.addr()),
        None,
        &|_| {},
    )
    .await
    .unwrap();
    let missing = format!("{}/aac/busybox:nope", reg.addr());
    let err = c.pull(&missing, None, &|_| {}).await.unwrap_err();
    assert!(
        matches!(err, CtrdError::Registry(RegistryError::NotFound { .. })),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("image '{missing}' not found in registry {}", reg.addr())
    );
    assert_nothing_left(&c, &missing).await;
    // An unknown repository is not found either.
    let err = c
        .pull(&format!("{}/aac/nothing", reg.addr()), None, &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, CtrdError::Registry(RegistryError::NotFound { .. })),
        "{err:?}"
    );

    let addr = reg.addr();
    reg.kill();
    let err = c
        .pull(&format!("{addr}/aac/busybox:1"), None, &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, CtrdError::Registry(RegistryError::Unreachable { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr), "{err}");
}

/// Pushes the test image to a fresh registry and returns it with the layer digest.
async fn registry_with_image(c: &Client) -> Option<(Registry, String, String)> {
    let reg = Registry::start(None)?;
    let remote = format!("{}/aac/busybox:1", reg.addr());
    let events = Events::default();
    let pushed = c
        .push_as(IMAGE, &remote, None, &|p| events.push(p))
        .await
        .unwrap();
    let layer = events
        .written()
        .into_iter()
        .next()
        .expect("a layer was uploaded");
    assert_ne!(layer, pushed.digest);
    Some((reg, remote, layer))
}

#[tokio::test]
async fn interrupted_pulls_leave_nothing() {
    let c = client().await;

    // The registry dies while the pull runs (at the start of the layer download).
    let Some((reg, remote, _)) = registry_with_image(&c).await else {
        return;
    };
    let fresh = fresh_client("kill").await;
    let count = Mutex::new(0);
    let err = fresh
        .pull(&remote, None, &|p| {
            if let Progress::Writing { .. } = p {
                let mut n = count.lock().unwrap();
                *n += 1;
                if *n == 2 {
                    // The first write is the config, the second the layer.
                    reg.kill();
                }
            }
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, CtrdError::Registry(RegistryError::Unreachable { .. })),
        "{err:?}"
    );
    assert_eq!(*count.lock().unwrap(), 2);
    assert_nothing_left(&fresh, &remote).await;
    drop(reg);

    // A manifest pointing at a blob the registry lost.
    let Some((reg, remote, layer)) = registry_with_image(&c).await else {
        return;
    };
    std::fs::remove_file(reg.blob_file(&layer)).unwrap();
    let fresh = fresh_client("lost").await;
    let err = fresh.pull(&remote, None, &|_| {}).await.unwrap_err();
    assert!(
        matches!(err, CtrdError::Registry(RegistryError::Http { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains(&layer), "{err}");
    assert_nothing_left(&fresh, &remote).await;
    drop(reg);

    // A blob whose bytes changed (same size): the digest check refuses it.
    let Some((reg, remote, layer)) = registry_with_image(&c).await else {
        return;
    };
    let path = reg.blob_file(&layer);
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::write(&path, vec![0x5a; size]).unwrap();
    let fresh = fresh_client("garbled").await;
    let err = fresh.pull(&remote, None, &|_| {}).await.unwrap_err();
    assert!(matches!(err, CtrdError::DigestMismatch { .. }), "{err:?}");
    assert_nothing_left(&fresh, &remote).await;
    assert!(
        !fresh
            .list_images()
            .await
            .unwrap()
            .iter()
            .any(|i| i.name.contains("aac/busybox")),
        "no image at all"
    );
}

enum Auth<'a> {
    Htpasswd((&'a str, &'a str)),
    Token(&'a TokenServer),
}

const SERVICE: &str = "aac-registry";
const ISSUER: &str = "aac-test-issuer";

/// A token server implementing the registry token protocol: GET /token?scope=..&service=..
/// with basic auth answers `{"token": <RS256 JWT>}` whose x5c certificate the registry
/// trusts (`rootcertbundle`). Signing is done with the openssl command line tool.
struct TokenServer {
    port: u16,
    dir: tempfile::TempDir,
    cert: PathBuf,
    /// Scopes asked for, in order.
    scopes: std::sync::Arc<Mutex<Vec<String>>>,
}

impl TokenServer {
    fn start(user: &'static str, password: &'static str) -> Option<TokenServer> {
        use base64::Engine;
        use std::io::{BufRead, BufReader, Write};
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=aac-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(ProcStdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIP: openssl cannot make a signing certificate");
            return None;
        }
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let std_b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let scopes = std::sync::Arc::new(Mutex::new(Vec::new()));
        let seen = scopes.clone();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        std::thread::spawn(move || {
            let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let mut authorization = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authorization = Some(v.trim().to_string());
                        }
                    }
                }
                let target = first.split(' ').nth(1).unwrap_or("").to_string();
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let param = |name: &str| {
                    query
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| percent_decode(v))
                        .unwrap_or_default()
                };
                let scope = param("scope");
                seen.lock().unwrap().push(scope.clone());
                let (status, body) = if authorization.as_deref() != Some(expected.as_str()) {
                    (
                        "401 Unauthorized",
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#
                            .to_string(),
                    )
                } else {
                    let access: Vec<serde_json::Value> = scope
                        .split(' ')
                        .filter_map(|s| {
                            let mut parts = s.splitn(3, ':');
                            let (t, n, a) = (parts.next()?, parts.next()?, parts.next()?);
                            Some(serde_json::json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
                        })
                        .collect();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let header =
                        serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [std_b64]});
                    let claims = serde_json::json!({
                        "iss": ISSUER, "sub": user, "aud": param("service"),
                        "exp": now + 600, "nbf": now - 10, "iat": now,
                        "jti": format!("{now}-{}", seen.lock().unwrap().len()),
                        "access": access,
                    });
                    let input = format!(
                        "{}.{}",
                        url.encode(header.to_string()),
                        url.encode(claims.to_string())
                    );
                    let mut sign = Command::new("openssl")
                        .args(["dgst", "-sha256", "-sign"])
                        .arg(&key)
                        .stdin(ProcStdio::piped())
                        .stdout(ProcStdio::piped())
                        .spawn()
                        .unwrap();
                    sign.stdin
                        .take()
                        .unwrap()
                        .write_all(input.as_bytes())
                        .unwrap();
                    let sig = sign.wait_with_output().unwrap().stdout;
                    let token = format!("{input}.{}", url.encode(sig));
                    ("200 OK", serde_json::json!({"token": token}).to_string())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Some(TokenServer {
            port,
            dir,
            cert,
            scopes,
        })
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn bearer_token_auth() {
    let Some(tokens) = TokenServer::start("user", "pass") else {
        return;
    };
    let Some(reg) = Registry::start_with(Some(Auth::Token(&tokens))) else {
        return;
    };
    let _keep = &tokens.dir;
    let c = client().await;
    let remote = format!("{}/aac/bearer:1", reg.addr());
    let good = Credentials::new("user", "pass");
    let bad = Credentials::new("user", "nope");

    let err = c.push_as(IMAGE, &remote, None, &|_| {}).await.unwrap_err();
    assert!(
        matches!(err, CtrdError::Registry(RegistryError::AuthRequired { .. })),
        "{err:?}"
    );
    c.push_as(IMAGE, &remote, Some(&good), &|_| {})
        .await
        .unwrap();
    assert!(
        tokens
            .scopes
            .lock()
            .unwrap()
            .iter()
            // The actions are the registry's challenge echoed back, in its order (which
            // varies): compare them as a set.
            .any(|s| {
                let Some(actions) = s.strip_prefix("repository:aac/bearer:") else {
                    return false;
                };
                let mut a: Vec<&str> = actions.split(',').collect();
                a.sort_unstable();
                a == ["pull", "push"]
            }),
        "{:?}",
        tokens.scopes.lock().unwrap()
    );

    let fresh = fresh_client("bearer").await;
    let err = fresh.pull(&remote, None, &|_| {}).await.unwrap_err();
    assert!(
        matches!(err, CtrdError::Registry(RegistryError::AuthRequired { .. })),
        "{err:?}"
    );
    let err = fresh.pull(&remote, Some(&bad), &|_| {}).await.unwrap_err();
    assert!(
        matches!(err, CtrdError::Registry(RegistryError::Unauthorized { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("bad credentials"), "{err}");
    assert_nothing_left(&fresh, &remote).await;
    let s = fresh.pull(&remote, Some(&good), &|_| {}).await.unwrap();
    assert_eq!(s.name, remote);
    assert_eq!(run_echo(&fresh, &remote, "bearer").await, "bearer\n");
}

#[tokio::test]
async fn pull_resolves_an_index_to_this_platform() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let c = client().await;
    let pushed = c
        .push_as(
            IMAGE,
            &format!("{}/aac/multi:single", reg.addr()),
            None,
            &|_| {},
        )
        .await
        .unwrap();
    // An index with a foreign platform first and ours second, put by hand.
    let arch = aac_runtime::containerd::host_arch();
    let other = if arch == "amd64" { "arm64" } else { "amd64" };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": pushed.media_type, "digest": pushed.digest, "size": pushed.size,
             "platform": {"architecture": other, "os": "linux"}},
            {"mediaType": pushed.media_type, "digest": pushed.digest, "size": pushed.size,
             "platform": {"architecture": arch, "os": "linux"}},
        ],
    })
    .to_string();
    let resp = ureq::put(format!(
        "http://{}/v2/aac/multi/manifests/latest",
        reg.addr()
    ))
    .header("Content-Type", "application/vnd.oci.image.index.v1+json")
    .send(index.as_bytes())
    .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    let fresh = fresh_client("index").await;
    let remote = format!("{}/aac/multi", reg.addr());
    let s = fresh.pull(&remote, None, &|_| {}).await.unwrap();
    assert_eq!(s.name, format!("{remote}:latest"));
    assert_eq!(s.media_type, "application/vnd.oci.image.index.v1+json");
    assert_eq!(s.size, index.len() as i64);
    // Deleting the pull's lease schedules a GC: give it time; the GC labels must keep the
    // index, the manifest, its config and layers and the snapshots alive.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(fresh.image_config(&remote).await.unwrap(), image_config());
    assert_eq!(run_echo(&fresh, &remote, "indexed").await, "indexed\n");
    assert_no_lease(&fresh, &s.name).await;
    // Pushing an image whose target is an index pushes this platform's manifest.
    let back = fresh
        .push_as(
            &remote,
            &format!("{}/aac/multi:flat", reg.addr()),
            None,
            &|_| {},
        )
        .await
        .unwrap();
    assert_eq!(back.digest, pushed.digest);
}

/// `aac pull --username U --password-stdin`, as `docker login`: the password comes from stdin
/// (its trailing newline dropped), a wrong one is refused, and it is in no output, not even at
/// trace level; misuse is exit 125 with one line.
#[tokio::test]
async fn pull_password_stdin() {
    use std::io::Write;
    let password = format!("pw-{}-canary", std::process::id());
    let Some(reg) = Registry::start(Some(("agent", &password))) else {
        return;
    };
    let a = aac_tests::cli::aac();
    let c = client().await;
    let remote = format!("{}/aac/stdin:1", reg.addr());
    c.push_as(
        IMAGE,
        &remote,
        Some(&Credentials::new("agent", &password)),
        &|_| {},
    )
    .await
    .unwrap();
    let pull = |args: &[&str], stdin: &[u8]| {
        let mut all = vec!["pull"];
        all.extend_from_slice(args);
        all.push(&remote);
        let mut child = a
            .command(&all)
            .env("AAC_LOG", "trace")
            .stdin(ProcStdio::piped())
            .stdout(ProcStdio::piped())
            .stderr(ProcStdio::piped())
            .spawn()
            .unwrap();
        // aac may refuse before reading: a closed pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        let out = child.wait_with_output().unwrap();
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            !so.contains(&password) && !se.contains(&password),
            "aac pull {args:?} shows the password:\n{so}\n{se}"
        );
        (out.status.code(), so, se)
    };
    let stdin = ["--username", "agent", "--password-stdin"];

    // Wrong password: the registry refuses it, nothing is stored.
    let (code, _, err) = pull(&stdin, b"wrong\n");
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("unauthorized"), "{err}");
    assert!(!a.ok(&["images", "-q"]).lines().any(|l| l == remote));
    // Misuse.
    for (args, input, says) in [
        (
            &["--password-stdin"][..],
            &b"x\n"[..],
            "--password-stdin needs --username",
        ),
        (&stdin[..], &b""[..], "stdin held no password"),
        (&stdin[..], &b"\n"[..], "stdin held no password"),
        (
            &["--username", "agent", "--password-stdin", "--password", "x"][..],
            &b"x\n"[..],
            "--password",
        ),
    ] {
        let (code, _, err) = pull(args, input);
        assert_eq!(code, Some(125), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // The right one, with docker's trailing newline (and \r\n).
    let (code, out, err) = pull(&stdin, format!("{password}\r\n").as_bytes());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), remote);
    assert!(a.ok(&["images", "-q"]).lines().any(|l| l == remote));
    // It runs.
    let out = a.ok(&["run", "--rm", &remote, "/bin/busybox", "echo", "pulled"]);
    assert_eq!(out.trim(), "pulled");
    a.ok(&["image", "rm", &remote]);
    let (code, _, err) = pull(&stdin, format!("{password}\n").as_bytes());
    assert_eq!(code, Some(0), "{err}");
}
