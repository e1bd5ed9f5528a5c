//! The process backend's sandbox, through the `aac` binary, asserted from inside the agent:
//! as root (its own user namespace on aac's subordinate ids, its own network on aac's
//! bridge) and as an unprivileged user the test creates (rootless: a user namespace mapping
//! only that user). The host's tree is read-only, /etc/shadow unreadable, device nodes cannot
//! be made or opened, the agent sees only its own interfaces, a volume may sit at a path the
//! host does not have, port 80 binds as uid 1000 with NET_BIND_SERVICE only, and a published
//! port answers from the host and from another agent by name.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aac_tests::cli::{aac, bin, free_port, text};
use aac_tests::IMAGE;

fn root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (and creates a user for the rootless runs)");
        return false;
    }
    true
}

/// A folder outside /tmp (the agent has a private /tmp) that everyone may read.
fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(format!("/var/tmp/aac-sbx-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    d
}

/// What the agent reports about its sandbox, one `key=value` line each.
const PROBE: &str = r#"
import os, socket, sys
def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return "errno%d" % e.errno
host_file = sys.argv[1]
def write_host():
    with open(host_file, "a") as f:
        f.write("changed by the agent\n")
def write_root():
    open("/aac-sbx-new-file", "w").close()
def write_usr():
    open("/usr/aac-sbx-new-file", "w").close()
def shadow():
    open("/etc/shadow").read()
def dev(kind, major, minor, name):
    def f():
        path = "/tmp/" + name
        os.mknod(path, 0o600 | kind, os.makedev(major, minor))
        os.close(os.open(path, os.O_RDWR))
    return f
print("write_host=" + attempt(write_host))
print("write_root=" + attempt(write_root))
print("write_usr=" + attempt(write_usr))
print("shadow=" + attempt(shadow))
print("mknod_block=" + attempt(dev(0o060000, 7, 0, "blk")))
print("mknod_char=" + attempt(dev(0o020000, 1, 1, "mem")))
print("uid_map=" + " ".join(open("/proc/self/uid_map").read().split()))
print("dev=" + " ".join(sorted(os.listdir("/dev"))))
print("ifaces=" + " ".join(sorted(n for _, n in socket.if_nameindex())))
try:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.settimeout(2)
    seen = set()
    s.bind(("", 0))
    try:
        for _ in range(20):
            _, addr = s.recvfrom(65535)
            seen.add(addr[0])
    except socket.timeout:
        pass
    print("packet=" + " ".join(sorted(seen)))
except OSError as e:
    print("packet=errno%d" % e.errno)
print("tmp=" + attempt(lambda: open("/tmp/aac-sbx-ok", "w").close()))
"#;

fn field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
        .to_string()
}

trait Runner {
    fn run(&self, args: &[&str]) -> Output;
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "aac {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }
}

struct AsRoot;

impl Runner for AsRoot {
    fn run(&self, args: &[&str]) -> Output {
        aac().run(args)
    }
}

const USER: &str = "aac-sandbox-test";

/// `aac` run as [`USER`] with state of its own (no containerd: the process backend).
struct AsUser {
    base: PathBuf,
}

impl Runner for AsUser {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("runuser")
            .args(["-u", USER, "--", "env"])
            .arg(format!("AAC_RUN_DIR={}", self.base.join("run").display()))
            .arg(format!("AAC_DATA_DIR={}", self.base.join("data").display()))
            .arg(format!("AAC_SHIM={}", bin("aac-shim").display()))
            .arg("CONTAINERD_ADDRESS=/nonexistent/containerd.sock")
            .arg(bin("aac"))
            .args(args)
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }
}

fn ensure_user() -> u32 {
    let exists = Command::new("id").args(["-u", USER]).output().unwrap();
    if !exists.status.success() {
        let ok = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", USER])
            .status()
            .unwrap();
        assert!(ok.success(), "useradd {USER}");
    }
    let out = Command::new("id").args(["-u", USER]).output().unwrap();
    text(&out.stdout).trim().parse().unwrap()
}

fn chown(path: &Path, uid: u32) {
    let ok = Command::new("chown")
        .arg("-R")
        .arg(uid.to_string())
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// The probe with no network, then (root) on aac's bridge.
fn probe(r: &impl Runner, dir: &Path, network: &str) -> String {
    let host_file = dir.join("host-file");
    std::fs::write(&host_file, "host\n").unwrap();
    std::fs::set_permissions(
        &host_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    std::fs::write(dir.join("probe.py"), PROBE).unwrap();
    let out = r.ok(&[
        "run",
        "--rm",
        "--runtime",
        "process",
        "--network",
        network,
        "python3",
        &dir.join("probe.py").to_string_lossy(),
        &host_file.to_string_lossy(),
    ]);
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "host\n");
    assert!(!Path::new("/aac-sbx-new-file").exists());
    assert!(!Path::new("/usr/aac-sbx-new-file").exists());
    out
}

/// What holds for every run: as root or not, with a network or not.
fn assert_sandboxed(out: &str) {
    // EROFS (30) for the host's tree, EACCES (13) for /etc/shadow, EPERM (1) for mknod.
    assert_eq!(field(out, "write_host"), "errno30", "{out}");
    assert_eq!(field(out, "write_root"), "errno30", "{out}");
    assert_eq!(field(out, "write_usr"), "errno30", "{out}");
    assert_eq!(field(out, "shadow"), "errno13", "{out}");
    assert_eq!(field(out, "mknod_block"), "errno1", "{out}");
    assert_eq!(field(out, "mknod_char"), "errno1", "{out}");
    assert_ne!(field(out, "uid_map"), "0 0 4294967295", "{out}");
    assert_eq!(field(out, "tmp"), "ok", "{out}");
    for d in field(out, "dev").split(' ') {
        assert!(
            [
                "console", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm",
                "stderr", "stdin", "stdout", "tty", "urandom", "zero"
            ]
            .contains(&d),
            "/dev/{d} in {out}"
        );
    }
}

#[test]
fn as_root_the_host_is_read_only_and_devices_are_denied() {
    if !root() {
        return;
    }
    let dir = scratch("root");
    let out = probe(&AsRoot, &dir, "none");
    assert_sandboxed(&out);
    // Root inside is an unprivileged range of host ids (aac's subordinate ids).
    let map: Vec<u64> = field(&out, "uid_map")
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(map[0], 0, "{out}");
    assert!(map[1] >= 65536, "{out}");
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
    assert!(
        subuid
            .lines()
            .any(|l| l == format!("aac:{}:{}", map[1], map[2])),
        "{subuid}"
    );
    assert_eq!(field(&out, "ifaces"), "lo", "{out}");

    // On aac's bridge: its own interfaces only.
    let out = probe(&AsRoot, &dir, "bridge");
    assert_sandboxed(&out);
    assert_eq!(field(&out, "ifaces"), "eth0 lo", "{out}");
    let packet = field(&out, "packet");
    assert!(
        packet.starts_with("errno") || packet.split(' ').all(|i| i == "lo" || i == "eth0"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn as_a_user_the_host_is_read_only_and_devices_are_denied() {
    if !root() {
        return;
    }
    let uid = ensure_user();
    let base = scratch("user");
    chown(&base, uid);
    let dir = base.join("probe");
    std::fs::create_dir_all(&dir).unwrap();
    let r = AsUser { base: base.clone() };
    let out = probe(&r, &dir, "none");
    assert_sandboxed(&out);
    assert_eq!(field(&out, "uid_map"), format!("0 {uid} 1"), "{out}");
    assert_eq!(field(&out, "ifaces"), "lo", "{out}");

    // A volume at a path the host does not have.
    let vol = base.join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    chown(&vol, uid);
    let out = r.ok(&[
        "run",
        "--rm",
        "--runtime",
        "process",
        "--network",
        "none",
        "-v",
        &format!("{}:/aac-sbx-absent/data", vol.display()),
        "sh",
        "-c",
        "echo from-the-agent > /aac-sbx-absent/data/f && ls /aac-sbx-absent",
    ]);
    assert_eq!(out, "data\n");
    assert_eq!(
        std::fs::read_to_string(vol.join("f")).unwrap(),
        "from-the-agent\n"
    );
    assert!(!Path::new("/aac-sbx-absent").exists());
    aac_tests::cli::kill_monitors(&base);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_volume_at_a_path_absent_on_the_host_is_the_agents_roots() {
    if !root() {
        return;
    }
    let dir = scratch("vol");
    let vol = dir.join("data");
    std::fs::create_dir_all(&vol).unwrap();
    // Two levels missing at the root, one below an existing host folder.
    let out = AsRoot.ok(&[
        "run",
        "--rm",
        "--runtime",
        "process",
        "--network",
        "none",
        "-v",
        &format!("{}:/aac-sbx-absent/deep/data", vol.display()),
        "-v",
        &format!("{}:/usr/share/aac-sbx-absent", vol.display()),
        "sh",
        "-c",
        "echo one > /aac-sbx-absent/deep/data/f && cat /usr/share/aac-sbx-absent/f && \
         ls -ln /aac-sbx-absent/deep/data/f | cut -d' ' -f3,4 && ls /usr/share | grep -c . && \
         touch /usr/share/aac-sbx-other 2>&1 || echo refused",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "one", "{out}");
    // The agent's root owns what it writes as the host's root does (an idmapped volume).
    assert_eq!(lines[1], "0 0", "{out}");
    // /usr/share still shows the host's entries, and stays read-only.
    let host_entries = std::fs::read_dir("/usr/share").unwrap().count();
    assert_eq!(lines[2], (host_entries + 1).to_string(), "{out}");
    assert_eq!(lines.last(), Some(&"refused"), "{out}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(vol.join("f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert!(!Path::new("/aac-sbx-absent").exists());
    assert!(!Path::new("/usr/share/aac-sbx-absent").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bind port 80 as uid 1000 with every capability dropped, and NET_BIND_SERVICE added or not.
fn bind_80(args_before_cmd: &[&str], cmd: &[&str], add: bool) -> Output {
    let mut args = vec!["run", "--rm", "-u", "1000", "--cap-drop", "ALL"];
    if add {
        args.extend(["--cap-add", "NET_BIND_SERVICE"]);
    }
    args.extend(args_before_cmd);
    args.extend(cmd);
    aac().run(&args)
}

#[test]
fn port_80_binds_as_uid_1000_with_net_bind_service_on_both_backends() {
    if !root() {
        return;
    }
    let py = [
        "python3",
        "-c",
        "import socket; s = socket.socket(); s.bind(('0.0.0.0', 80)); print('bound')",
    ];
    for net in ["bridge", "none"] {
        let proc_args = ["--runtime", "process", "--network", net];
        let out = bind_80(&proc_args, &py, true);
        assert_eq!(text(&out.stdout), "bound\n", "{net}: {}", text(&out.stderr));
        let out = bind_80(&proc_args, &py, false);
        assert_ne!(out.status.code(), Some(0), "{net}");
        assert!(text(&out.stderr).contains("Permission denied"), "{net}");
    }
    // containerd: busybox httpd binds, then goes to the background (exit 0) or says why not.
    let httpd = [IMAGE, "httpd", "-p", "80", "-h", "/"];
    let out = bind_80(&["--runtime", "containerd"], &httpd, true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = bind_80(&["--runtime", "containerd"], &httpd, false);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    let out = aac().ok(&[
        "run",
        "--rm",
        "-u",
        "1000",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        "--runtime",
        "process",
        "--network",
        "none",
        "grep",
        "CapAmb",
        "/proc/self/status",
    ]);
    assert_eq!(out.split_whitespace().nth(1), Some("0000000000000400"));
}

const SERVER: &str = r#"
import http.server, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from %s\n" % socket.gethostname()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"#;

#[test]
fn a_published_port_answers_from_the_host_and_from_another_agent_by_name() {
    if !root() {
        return;
    }
    let a = aac();
    let dir = scratch("net");
    std::fs::write(dir.join("server.py"), SERVER).unwrap();
    let port = free_port();
    a.ok(&[
        "run",
        "-d",
        "--runtime",
        "process",
        "--name",
        "sbx-server",
        "-p",
        &format!("{port}:8080"),
        "python3",
        &dir.join("server.py").to_string_lossy(),
    ]);
    let get = |url: String| -> String {
        let script = format!(
            "import time, urllib.request\nfor i in range(100):\n    try:\n        \
             print(urllib.request.urlopen('{url}', timeout=5).read().decode(), end='')\n        \
             break\n    except OSError:\n        time.sleep(0.1)\n"
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        text(&out.stdout)
    };
    assert_eq!(
        get(format!("http://127.0.0.1:{port}/")),
        "hello from sbx-server\n"
    );

    // Another agent on the network finds it by name.
    let client = "import urllib.request, time\nfor i in range(100):\n    try:\n        \
                  print(urllib.request.urlopen('http://sbx-server:8080/', timeout=5).read().decode(), end='')\n        \
                  break\n    except OSError:\n        time.sleep(0.1)\n";
    let out = a.ok(&[
        "run",
        "--rm",
        "--runtime",
        "process",
        "python3",
        "-c",
        client,
    ]);
    assert_eq!(out, "hello from sbx-server\n");
    // ... and so does a container.
    let out = a.ok(&[
        "run",
        "--rm",
        IMAGE,
        "wget",
        "-q",
        "-O",
        "-",
        "http://sbx-server:8080/",
    ]);
    assert_eq!(out, "hello from sbx-server\n");
    let ns = a.inspect("sbx-server")["Network"]["netns"]
        .as_str()
        .map(PathBuf::from)
        .expect("a network namespace");
    a.ok(&["rm", "-f", "sbx-server"]);
    assert!(!ns.exists(), "{} is left", ns.display());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn network_host_is_an_explicit_choice() {
    if !root() {
        return;
    }
    let out = aac().ok(&[
        "run",
        "--rm",
        "--runtime",
        "process",
        "--network",
        "host",
        "python3",
        "-c",
        "import socket; print(len(socket.if_nameindex()) > 1)",
    ]);
    // The host has more than loopback (the test's own bridge at least).
    assert_eq!(out, "True\n");
}

#[test]
fn an_image_with_a_0755_tmp_still_gives_a_non_root_agent_a_writable_tmp() {
    if !root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("tmp0755");
    let rootfs = dir.join("rootfs");
    aac_tests::busybox_rootfs(&rootfs);
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = format!("aac-sbx-tmp0755-{}:latest", std::process::id());
    let a = aac();
    a.ok(&[
        "image",
        "import",
        "--rootfs",
        &rootfs.to_string_lossy(),
        &image,
    ]);
    let script = "stat -c %a /tmp; echo hi > /tmp/f && cat /tmp/f";
    for extra in [&[][..], &["--read-only"][..]] {
        let mut args = vec!["run", "--rm", "--runtime", "containerd", "-u", "1000"];
        args.extend(extra);
        args.extend([image.as_str(), "sh", "-c", script]);
        let out = a.run(&args);
        assert_eq!(
            text(&out.stdout),
            "1777\nhi\n",
            "{extra:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{extra:?}");
    }
    let _ = a.run(&["rmi", &image]);
    let _ = std::fs::remove_dir_all(&dir);
}
