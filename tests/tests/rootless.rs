//! aac run by a non-root user on a systemd host: the process backend with its limits in a
//! cgroup v2 subtree systemd delegated to the user, and the containerd backend against the
//! user's rootless containerd under RootlessKit.
//!
//! The test VM runs this binary as user `aac`, inside a scope of its systemd instance
//! (`systemd-run --user --scope -p Delegate=yes`), with a rootless containerd started by
//! vm/guest/rootless-containerd.sh, and sets AAC_ROOTLESS=1 / AAC_ROOTLESS_CONTAINERD=1: then a
//! missing delegation or containerd is a failure. As root the tests skip (they are about a
//! user's view); as another user without those they check what aac reports instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aac_tests::cli::{bin, free_port, text};

fn user_only() -> bool {
    if nix::unistd::geteuid().is_root() {
        eprintln!("skipped: rootless tests run as a non-root user (the VM runs them as `aac`)");
        return false;
    }
    true
}

fn required(var: &str) -> bool {
    std::env::var(var).as_deref() == Ok("1")
}

fn aac(args: &[&str]) -> Output {
    Command::new(bin("aac"))
        .args(args)
        .env("AAC_SHIM", bin("aac-shim"))
        .env_remove("CONTAINERD_ADDRESS")
        .env_remove("AAC_CGROUP_ROOT")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = aac(args);
    assert!(
        out.status.success(),
        "aac {args:?}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn inspect(name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", name])).unwrap();
    v[0].clone()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
        .trim()
}

/// The cgroup v2 directory of `pid`, seen from the host.
fn cgroup_dir(pid: u64) -> PathBuf {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup v2 line in {cg}"));
    Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))
}

fn check_json() -> serde_json::Value {
    serde_json::from_str(&ok(&["system", "check", "--format", "json"])).unwrap()
}

/// What the agent sees: its cgroup, its limits, its credentials, and whether the root is
/// read-only.
const PROBE: &str = "cat /proc/self/cgroup; \
    echo mem=$(cat /sys/fs/cgroup/memory.max); echo pids=$(cat /sys/fs/cgroup/pids.max); \
    echo cpu=$(cat /sys/fs/cgroup/cpu.max); grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
    touch /usr/aac-rootless-probe 2>/dev/null && echo root=writable || echo root=read-only";

#[test]
fn process_backend_limits_in_a_delegated_subtree() {
    if !user_only() {
        return;
    }
    let check = check_json();
    let usable: Vec<String> =
        serde_json::from_value(check["cgroup"]["usable_controllers"].clone()).unwrap();
    let delegated = ["memory", "pids", "cpu"]
        .iter()
        .all(|c| usable.iter().any(|u| u == c));
    if !delegated {
        assert!(
            !required("AAC_ROOTLESS"),
            "AAC_ROOTLESS=1 but no delegated memory+pids+cpu: {}",
            check["cgroup"]
        );
        // No delegation: aac runs the agent and says which limits it cannot enforce.
        let out = aac(&[
            "run",
            "--rm",
            "--runtime",
            "process",
            "--memory",
            "64m",
            "/bin/true",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("memory limit not enforced"),
            "{}",
            text(&out.stderr)
        );
        eprintln!("no delegated cgroup v2 subtree here: checked the not-enforced report only");
        return;
    }

    // Limits, as the agent reads them in its own cgroup namespace.
    let out = ok(&[
        "run",
        "--rm",
        "--runtime",
        "process",
        "--memory",
        "64m",
        "--pids-limit",
        "32",
        "--cpus",
        "0.5",
        "--read-only",
        "/bin/sh",
        "-c",
        PROBE,
    ]);
    assert!(out.lines().any(|l| l == "0::/"), "{out}");
    assert_eq!(field(&out, "mem="), "67108864", "{out}");
    assert_eq!(field(&out, "pids="), "32", "{out}");
    assert_eq!(field(&out, "cpu="), "50000 100000", "{out}");
    assert_eq!(field(&out, "NoNewPrivs:"), "1", "{out}");
    assert_eq!(field(&out, "Seccomp:"), "2", "{out}");
    assert_eq!(field(&out, "root="), "read-only", "{out}");

    // From the host: the agent's cgroup is below the user's systemd instance, with the limit.
    let name = unique("rl-proc");
    ok(&[
        "run",
        "-d",
        "--runtime",
        "process",
        "--name",
        &name,
        "--memory",
        "64m",
        "sleep",
        "300",
    ]);
    let pid = inspect(&name)["State"]["Pid"].as_u64().unwrap();
    let dir = cgroup_dir(pid);
    let uid = nix::unistd::getuid();
    assert!(
        dir.to_string_lossy()
            .contains(&format!("/user@{uid}.service/")),
        "{}",
        dir.display()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("memory.max"))
            .unwrap()
            .trim(),
        "67108864"
    );
    ok(&["rm", "-f", &name]);
    assert!(!dir.exists(), "{} left behind", dir.display());

    // An over-allocation is OOM-killed and reported so.
    let name = unique("rl-oom");
    let out = aac(&[
        "run",
        "--runtime",
        "process",
        "--name",
        &name,
        "--memory",
        "64m",
        "python3",
        "-c",
        "b = bytearray(400 << 20); print('survived', len(b))",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert_eq!(inspect(&name)["State"]["OOMKilled"], true);
    ok(&["rm", "-f", &name]);
}

fn rootless_containerd() -> bool {
    let dir = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    let found = dir.is_some_and(|d| d.join("containerd/containerd.sock").exists());
    if !found {
        assert!(
            !required("AAC_ROOTLESS_CONTAINERD"),
            "AAC_ROOTLESS_CONTAINERD=1 but no $XDG_RUNTIME_DIR/containerd/containerd.sock"
        );
        eprintln!("skipped: no rootless containerd for this user");
    }
    found
}

/// A busybox image in the rootless containerd.
fn busybox_image() -> String {
    let image = format!("aac-rootless-busybox-{}:latest", std::process::id());
    let dir = std::env::temp_dir().join(format!("aac-rootless-rootfs-{}", std::process::id()));
    aac_tests::busybox_rootfs(&dir);
    ok(&[
        "image",
        "import",
        "--rootfs",
        &dir.to_string_lossy(),
        &image,
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    image
}

#[test]
fn containerd_backend_on_rootless_containerd() {
    if !user_only() || !rootless_containerd() {
        return;
    }
    let check = check_json();
    assert_eq!(
        check["containerd"]["reachable"], true,
        "{}",
        check["containerd"]
    );
    assert!(
        check["containerd"]["rootlesskit_pid"].is_u64(),
        "{}",
        check["containerd"]
    );
    assert_eq!(
        check["auto_backend"]["backend"], "containerd",
        "{}",
        check["auto_backend"]
    );
    let image = busybox_image();

    // Limits and credentials from inside; the user is root only in RootlessKit's namespace.
    let run = aac(&[
        "run",
        "--rm",
        "--memory",
        "64m",
        "--pids-limit",
        "32",
        "--read-only",
        &image,
        "sh",
        "-c",
        "echo mem=$(cat /sys/fs/cgroup/memory.max); echo pids=$(cat /sys/fs/cgroup/pids.max); \
         echo map=$(cat /proc/self/uid_map); grep -E '^(CapEff|Seccomp):' /proc/self/status; \
         touch /probe 2>/dev/null && echo root=writable || echo root=read-only",
    ]);
    let (out, err) = (text(&run.stdout), text(&run.stderr));
    assert!(run.status.success(), "{out}\n{err}");
    let uid = nix::unistd::getuid().as_raw();
    if err.contains("memory limit not enforced") {
        // cgroup v1, or no systemd for the user: runc gets no cgroup, and aac says so.
        assert!(
            !required("AAC_ROOTLESS"),
            "AAC_ROOTLESS=1 but the limits were not enforced: {err}"
        );
        assert!(err.contains("pids limit not enforced"), "{err}");
    } else {
        assert_eq!(field(&out, "mem="), "67108864", "{out}\n{err}");
        assert_eq!(field(&out, "pids="), "32", "{out}");
    }
    let map: Vec<&str> = field(&out, "map=").split_whitespace().collect();
    assert_eq!(map[..2], ["0", &uid.to_string()], "{out}");
    assert_eq!(field(&out, "Seccomp:"), "2", "{out}");
    assert_eq!(field(&out, "root="), "read-only", "{out}");

    // A detached agent on the default bridge, its port published on the host through
    // RootlessKit; exec, ps and logs; then nothing left.
    let name = unique("rl-web");
    let port = free_port();
    let publish = format!("{port}:8080");
    ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "-p",
        &publish,
        &image,
        "sh",
        "-c",
        "echo hello-rootless > /tmp/index.html; echo started; exec httpd -f -p 8080 -h /tmp",
    ]);
    assert!(ok(&["ps"]).contains(&name));
    assert_eq!(ok(&["exec", &name, "echo", "inside"]).trim(), "inside");
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
            let _ = s.read_to_string(&mut body);
            if body.contains("hello-rootless") {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(body.contains("hello-rootless"), "port {port}: {body:?}");
    assert!(ok(&["logs", &name]).contains("started"));
    ok(&["rm", "-f", &name]);
    assert!(!ok(&["ps", "-a"]).contains(&name));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still answers after rm"
    );
    ok(&["image", "rm", &image]);
}

/// The host's own non-loopback IPv4 address (the source of its route to the outside; no
/// packet is sent).
fn host_address() -> Option<std::net::Ipv4Addr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("1.1.1.1:53").ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

#[test]
fn egress_policy_on_rootless_containerd() {
    if !user_only() || !rootless_containerd() {
        return;
    }
    let Some(host_ip) = host_address() else {
        eprintln!("skipped: the host has no non-loopback address");
        return;
    };
    // Something outside the agent's network: a server on the host's address, which the
    // agent reaches through RootlessKit's slirp4netns.
    let listener = std::net::TcpListener::bind((host_ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    aac_tests::serve_http(listener, b"host\n");
    let image = busybox_image();
    let url = format!("http://{host_ip}:{port}/");
    let open = ok(&[
        "run", "--rm", &image, "timeout", "10", "wget", "-q", "-O", "-", &url,
    ]);
    assert_eq!(open, "host\n");
    let run = aac(&[
        "run",
        "--rm",
        "--deny-egress",
        &image,
        "sh",
        "-c",
        &format!(
            "grep nameserver /etc/resolv.conf; nslookup example.test 2>&1; \
             timeout 10 wget -q -O - {url} 2>&1; true"
        ),
    ]);
    let out = text(&run.stdout);
    assert!(run.status.success(), "{out}\n{}", text(&run.stderr));
    assert!(out.contains("nameserver 127.0.0.11"), "{out}");
    assert!(out.contains("NXDOMAIN"), "{out}");
    assert!(out.contains("Connection refused"), "{out}");
    assert!(!out.contains("host\n"), "{out}");
    ok(&["image", "rm", &image]);
}

/// Secrets on a rootless containerd: a file in /run/secrets (0400, owned by the agent's user
/// inside the user namespace) and an environment variable, seen by the agent and by `exec`;
/// the value in neither `inspect`, `spec` nor the bundle's config.json.
#[test]
fn secrets_on_rootless_containerd() {
    if !user_only() || !rootless_containerd() {
        return;
    }
    let image = busybox_image();
    let secret = unique("rl-secret");
    let name = unique("rl-sec");
    let value = format!("CANARY-rootless-ctrd-{}", std::process::id());
    let mut child = Command::new(bin("aac"))
        .args(["secret", "create", &secret, "--from-file", "token=-"])
        .env("AAC_SHIM", bin("aac-shim"))
        .env_remove("CONTAINERD_ADDRESS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(value.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "secret create: {}", text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("agent.yaml"),
        format!(
            "apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: {name}\nspec:\n  \
             image: {image}\n  command: [sleep, \"100000\"]\n  security:\n    runAsUser: 1000\n  \
             environment:\n    - name: API_TOKEN\n      from: secret\n      secretName: {secret}\n      \
             secretKey: token\n  secrets:\n    - name: tok\n      from: secret\n      \
             secretName: {secret}\n      secretKey: token\n"
        ),
    )
    .unwrap();
    ok(&["up", "-d", &dir.path().to_string_lossy()]);
    let v = inspect(&name);
    assert_eq!(
        v["Backend"].as_str().unwrap_or("containerd"),
        "containerd",
        "{v}"
    );
    let got = ok(&[
        "exec",
        &name,
        "sh",
        "-c",
        "cat /run/secrets/tok; echo; stat -L -c '%a %u' /run/secrets/tok; echo \"env=$API_TOKEN\"",
    ]);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 3, "{got}");
    assert_eq!(lines[0], value);
    assert_eq!(lines[1], "400 1000");
    assert_eq!(lines[2], format!("env={value}"));
    for args in [&["inspect", name.as_str()][..], &["spec", name.as_str()]] {
        let out = aac(args);
        assert!(
            !text(&out.stdout).contains(&value) && !text(&out.stderr).contains(&value),
            "{args:?} shows the value"
        );
    }
    // The bundle's config.json under the rootless containerd's state.
    let state = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR").unwrap()).join("containerd");
    let mut configs = 0;
    let mut stack = vec![state];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() && p.file_name().is_some_and(|n| n == "config.json") {
                let body = std::fs::read_to_string(&p).unwrap_or_default();
                if body.contains(&name) || body.contains("sleep") {
                    configs += 1;
                }
                assert!(!body.contains(&value), "{} holds the value", p.display());
            }
        }
    }
    assert!(configs > 0, "no bundle config.json found to check");
    ok(&["rm", "-f", &name]);
    ok(&["secret", "rm", &secret]);
    ok(&["image", "rm", &image]);
}
