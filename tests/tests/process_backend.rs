//! The `aac` binary with `--runtime process`: a Python agent run as a host process, isolated
//! by the OCI spec; checked from its cgroup files and /proc, once as root and once as an
//! unprivileged user the test creates (rootless: a user namespace, cgroup v1 subtrees chowned
//! to that user, and without them the "not enforced" warnings).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aac_tests::cli::{aac, bin, free_port, text};

const AGENT: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n" if self.path == "/health" else b"hello from the agent\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        print("request", self.path, flush=True)
print("listening", flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"#;

const FORK_BOMB: &str = r#"
import os, time
n = 0
err = None
for i in range(500):
    try:
        pid = os.fork()
    except OSError as e:
        err = e
        break
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    n += 1
print("forked", n, "refused:", err, flush=True)
"#;

fn root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (cgroups, and creating a user for the rootless run)");
        return false;
    }
    true
}

/// A folder outside /tmp (the agent gets a private /tmp) holding the agent scripts, readable
/// by everyone.
fn scripts() -> PathBuf {
    let d = PathBuf::from(format!("/var/tmp/aac-proc-tests-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("agent.py"), AGENT).unwrap();
    std::fs::write(d.join("forkbomb.py"), FORK_BOMB).unwrap();
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&d)
        .status()
        .unwrap();
    d
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{key} missing from:\n{status}"))
}

/// The directory of `pid`'s cgroup for v1 `controller` (or the unified tree).
fn cgroup_dir(pid: u64, controller: &str) -> PathBuf {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cg.lines() {
        let mut p = line.splitn(3, ':');
        let (_, ctrls, path) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
        if ctrls.split(',').any(|c| c == controller) {
            let mount = Path::new("/sys/fs/cgroup").join(ctrls);
            let mount = if mount.exists() {
                mount
            } else {
                Path::new("/sys/fs/cgroup").join(controller)
            };
            return mount.join(path.trim_start_matches('/'));
        }
        if ctrls.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            return Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        }
    }
    panic!("no {controller} cgroup for {pid} in:\n{cg}");
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The agent's limits as its cgroup files say: (memory, pids, cpu quota, cpu period).
fn limits_of(pid: u64) -> (String, String, String, String) {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let d = cgroup_dir(pid, "");
        let cpu = read_trim(&d.join("cpu.max"));
        let (q, p) = cpu.split_once(' ').unwrap();
        return (
            read_trim(&d.join("memory.max")),
            read_trim(&d.join("pids.max")),
            q.to_string(),
            p.to_string(),
        );
    }
    let cpu = cgroup_dir(pid, "cpu");
    (
        read_trim(&cgroup_dir(pid, "memory").join("memory.limit_in_bytes")),
        read_trim(&cgroup_dir(pid, "pids").join("pids.max")),
        read_trim(&cpu.join("cpu.cfs_quota_us")),
        read_trim(&cpu.join("cpu.cfs_period_us")),
    )
}

fn http_get(port: u16, path: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                    .unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                if !out.is_empty() {
                    return out;
                }
                last = "empty answer".into();
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET 127.0.0.1:{port}{path}: {last}");
}

fn health_cmd(port: u16) -> String {
    format!(
        "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=2)\""
    )
}

/// Runs `aac` either as root with the shared test state or as another user with its own.
trait Runner {
    fn run(&self, args: &[&str]) -> Output;
    /// The agent gets a network of its own (root: aac's bridge); rootless it shares the
    /// host's.
    fn own_network(&self) -> bool;

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

    fn inspect(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }

    fn wait_for(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.inspect(name);
            if pred(&v) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: timed out waiting for {what}: {}",
                v["State"]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

struct AsRoot;

impl Runner for AsRoot {
    fn run(&self, args: &[&str]) -> Output {
        aac().run(args)
    }
    fn own_network(&self) -> bool {
        true
    }
}

/// The same checks as root and rootless: limits in the cgroup files, security from
/// /proc/PID/status, the port forward, health, exec (same namespaces and cgroup), logs, ps,
/// stop and rm (cgroup gone).
fn agent_end_to_end(r: &impl Runner, name: &str, scripts: &Path) -> String {
    let agent_port = free_port();
    let host_port = loop {
        let p = free_port();
        if p != agent_port {
            break p;
        }
    };
    let publish = format!("{host_port}:{agent_port}");
    let agent = scripts.join("agent.py");
    let agent_port_s = agent_port.to_string();
    let hc = health_cmd(agent_port);
    r.ok(&[
        "run",
        "-d",
        "--runtime",
        "process",
        "--name",
        name,
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "32",
        "--read-only",
        "-p",
        &publish,
        "--health-cmd",
        &hc,
        "--health-interval",
        "1s",
        "python3",
        &agent.to_string_lossy(),
        &agent_port_s,
    ]);
    let v = r.wait_for(name, "healthy", |v| {
        v["State"]["Health"]["Status"] == "healthy"
    });
    assert_eq!(v["Backend"], "process");
    let pid = v["State"]["Pid"].as_u64().unwrap();
    assert!(pid > 0);

    // Limits from the cgroup files of the agent's own process.
    let (mem, pids, quota, period) = limits_of(pid);
    assert_eq!(mem, (64u64 << 20).to_string());
    assert_eq!(pids, "32");
    let (quota, period): (u64, u64) = (quota.parse().unwrap(), period.parse().unwrap());
    assert_eq!(quota * 2, period, "cpu 0.5: quota {quota} period {period}");
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let id = v["Id"].as_str().unwrap();
    assert!(cg.contains(&format!("/aac/{id}")), "{cg}");

    // Security from /proc/PID/status.
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(status_field(&st, "CapEff"), "00000000a80425fb");
    assert_eq!(status_field(&st, "Seccomp"), "2");
    assert_eq!(status_field(&st, "NoNewPrivs"), "1");

    // The published port answers on the host; sharing the host's network, the agent itself
    // listens on the host's port, in a network of its own on its own.
    let answer = http_get(host_port, "/through-forward");
    assert!(answer.contains("hello from the agent"), "{answer}");
    if !r.own_network() {
        assert!(http_get(agent_port, "/direct").contains("hello from the agent"));
    }

    // exec: same cgroup, same PID namespace (the agent is PID 1), the exit code comes back.
    let out = r.ok(&[
        "exec",
        name,
        "sh",
        "-c",
        "cat /proc/self/cgroup; cat /proc/1/cmdline | tr '\\0' ' '; echo; grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status",
    ]);
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        // cgroup v2: exec joins the agent's cgroup namespace, rooted at its cgroup.
        assert!(out.lines().any(|l| l == "0::/"), "{out}");
    } else {
        assert!(out.contains(&format!("/aac/{id}")), "{out}");
    }
    assert!(out.contains("agent.py"), "{out}");
    assert_eq!(status_field(&out, "CapEff"), "00000000a80425fb", "{out}");
    assert_eq!(status_field(&out, "Seccomp"), "2");
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
    let e = r.run(&["exec", name, "sh", "-c", "exit 7"]);
    assert_eq!(e.status.code(), Some(7));
    // The read-only root holds for exec'd commands too; /tmp is private and writable.
    let e = r.run(&["exec", name, "sh", "-c", "touch /usr/aac-proc-test"]);
    assert_ne!(e.status.code(), Some(0));
    assert!(!Path::new("/usr/aac-proc-test").exists());
    r.ok(&["exec", name, "sh", "-c", "touch /tmp/ok"]);

    let logs = r.ok(&["logs", name]);
    assert!(logs.contains("listening"), "{logs}");
    assert!(logs.contains("request /through-forward"), "{logs}");
    assert!(logs.contains("request /health"), "{logs}");
    let ps = r.ok(&["ps"]);
    let row = ps
        .lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(row.trim_end().ends_with("process"), "{row}");

    r.ok(&["stop", "-t", "1", name]);
    let v = r.inspect(name);
    assert_eq!(v["State"]["Status"], "exited");
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || !alive(pid));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", host_port)).is_err(),
        "the forward outlived the agent"
    );
    r.ok(&["rm", name]);
    assert!(r.run(&["inspect", name]).status.code() != Some(0));
    id.to_string()
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false)
}

#[test]
fn python_agent_as_root() {
    if !root() {
        return;
    }
    let s = scripts();
    let id = agent_end_to_end(&AsRoot, "proc-agent", &s);
    // The cgroup is gone with the container.
    for c in ["memory", "pids", "cpu", ""] {
        let d = Path::new("/sys/fs/cgroup").join(c).join("aac").join(&id);
        assert!(!d.exists(), "left: {}", d.display());
    }
}

#[test]
fn read_only_root_refuses_writes() {
    if !root() {
        return;
    }
    let out = aac().run(&[
        "run",
        "--rm",
        "--runtime",
        "process",
        "--read-only",
        "sh",
        "-c",
        "touch /etc/aac-proc-ro; echo tmp > /tmp/x && cat /tmp/x",
    ]);
    assert_eq!(text(&out.stdout), "tmp\n");
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "{}",
        text(&out.stderr)
    );
    assert!(!Path::new("/etc/aac-proc-ro").exists());
}

#[test]
fn pids_limit_contains_a_fork_bomb() {
    if !root() {
        return;
    }
    let s = scripts();
    let out = aac().ok(&[
        "run",
        "--rm",
        "--runtime",
        "process",
        "--pids-limit",
        "20",
        "python3",
        &s.join("forkbomb.py").to_string_lossy(),
    ]);
    let n: u32 = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(n < 20, "{out}");
    assert!(out.contains("Resource temporarily unavailable"), "{out}");
}

#[test]
fn restart_on_failure_restarts_twice() {
    if !root() {
        return;
    }
    aac().ok(&[
        "run",
        "-d",
        "--runtime",
        "process",
        "--name",
        "proc-restarts",
        "--restart",
        "on-failure:2",
        "sh",
        "-c",
        "echo attempt; exit 3",
    ]);
    let v = aac().wait_for(
        "proc-restarts",
        Duration::from_secs(60),
        "the last exit",
        |v| v["State"]["Status"] == "exited" && v["State"]["RestartCount"] == 2,
    );
    assert_eq!(v["State"]["ExitCode"], 3);
    let logs = aac().ok(&["logs", "proc-restarts"]);
    assert_eq!(logs.matches("attempt").count(), 3, "{logs}");
    aac().ok(&["rm", "proc-restarts"]);
}

/// `-i` without a terminal: the agent reads what the client sends and gets end-of-file when
/// the client's stdin ends (then exits by itself); without `-i` its stdin is empty.
#[test]
fn interactive_stdin_reaches_the_agent_and_ends() {
    if !root() {
        return;
    }
    use std::io::Write;
    let mut c = aac().command(&[
        "run",
        "-i",
        "--rm",
        "--runtime",
        "process",
        "sh",
        "-c",
        "while read x; do echo got $x; done; echo end-of-input",
    ]);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"one\ntwo\n").unwrap();
    drop(input);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent never saw the end of its input");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "got one\ngot two\nend-of-input\n");

    let out = aac().ok(&[
        "run",
        "--rm",
        "--runtime",
        "process",
        "sh",
        "-c",
        "cat; echo empty",
    ]);
    assert_eq!(out, "empty\n");
}

#[test]
fn names_are_shared_and_missing_commands_explained() {
    if !root() {
        return;
    }
    aac().ok(&[
        "run",
        "-d",
        "--runtime",
        "process",
        "--name",
        "proc-name",
        "sleep",
        "30",
    ]);
    let dup = aac().run(&[
        "run",
        "-d",
        "--runtime",
        "process",
        "--name",
        "proc-name",
        "sleep",
        "30",
    ]);
    assert_ne!(dup.status.code(), Some(0));
    assert!(
        text(&dup.stderr).contains("proc-name"),
        "{}",
        text(&dup.stderr)
    );
    aac().ok(&["rm", "-f", "proc-name"]);

    // auto with containerd unreachable and an image reference: a clear error.
    let out = aac().run(&[
        "--address",
        "/nonexistent/containerd.sock",
        "run",
        "--rm",
        "docker.io/library/alpine:3.20",
        "true",
    ]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("using the process backend"), "{err}");
    assert!(err.contains("containerd is not reachable"), "{err}");
    assert!(err.contains("looks like an image"), "{err}");

    let out = aac().run(&["run", "--rm", "--runtime", "process", "no-such-cmd-xyz"]);
    assert_eq!(out.status.code(), Some(127));
}

// ---------------------------------------------------------------------------------------------
// Rootless

const USER: &str = "aac-rootless-test";

/// `aac` run as [`USER`] with state (and optionally a cgroup root) of its own.
struct AsUser {
    run_dir: PathBuf,
    data_dir: PathBuf,
    cgroup_root: Option<String>,
    /// cgroup v2: the leaf of the delegated subtree the user's commands start in (v2 lets a
    /// user move a process only below a common ancestor it owns).
    start_in: Option<PathBuf>,
}

impl Runner for AsUser {
    fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new("runuser");
        c.args(["-u", USER, "--", "env"])
            .arg(format!("AAC_RUN_DIR={}", self.run_dir.display()))
            .arg(format!("AAC_DATA_DIR={}", self.data_dir.display()))
            .arg(format!("AAC_SHIM={}", bin("aac-shim").display()))
            .arg("CONTAINERD_ADDRESS=/nonexistent/containerd.sock")
            .arg(format!(
                "AAC_CGROUP_ROOT={}",
                self.cgroup_root.clone().unwrap_or_default()
            ))
            .arg(bin("aac"))
            .args(args)
            .current_dir("/")
            .stdin(std::process::Stdio::null());
        if let Some(leaf) = &self.start_in {
            let procs =
                std::ffi::CString::new(leaf.join("cgroup.procs").to_string_lossy().into_owned())
                    .unwrap();
            // SAFETY: open/write/close only, between fork and exec.
            unsafe {
                use std::os::unix::process::CommandExt;
                c.pre_exec(move || {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                    Ok(())
                });
            }
        }
        c.output().unwrap()
    }
    fn own_network(&self) -> bool {
        false
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
        .arg(format!("{uid}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Remove a cgroup subtree bottom-up (cgroup directories go with rmdir only).
fn remove_cgroup_tree(d: &Path) {
    if let Ok(entries) = std::fs::read_dir(d) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(d);
}

#[test]
fn rootless_user_with_and_without_delegated_cgroups() {
    if !root() {
        return;
    }
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        eprintln!("note: cgroup v2 host: the delegated subtree is made the v2 way");
    }
    let uid = ensure_user();
    let s = scripts();
    let base = PathBuf::from(format!("/tmp/aac-rootless-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    chown(&base, uid);

    // A cgroup subtree per controller, owned by the user (cgroup v1), or one delegated v2
    // subtree with the controllers enabled.
    let sub = format!("aac-rootless-{}", std::process::id());
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let dirs: Vec<PathBuf> = if v2 {
        let d = Path::new("/sys/fs/cgroup").join(&sub);
        std::fs::create_dir_all(&d).unwrap();
        let _ = std::fs::write(
            "/sys/fs/cgroup/cgroup.subtree_control",
            "+memory +pids +cpu",
        );
        let _ = std::fs::write(d.join("cgroup.subtree_control"), "+memory +pids +cpu");
        std::fs::create_dir_all(d.join("cli")).unwrap();
        vec![d]
    } else {
        ["memory", "pids", "cpu"]
            .iter()
            .map(|c| {
                let d = Path::new("/sys/fs/cgroup").join(c).join(&sub);
                std::fs::create_dir_all(&d).unwrap();
                d
            })
            .collect()
    };
    for d in &dirs {
        chown(d, uid);
    }

    let delegated = AsUser {
        run_dir: base.join("run"),
        data_dir: base.join("data"),
        cgroup_root: Some(format!("/{sub}")),
        start_in: v2.then(|| dirs[0].join("cli")),
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let id = agent_end_to_end(&delegated, "rootless-agent", &s);
        for d in &dirs {
            assert!(!d.join("aac").join(&id).exists(), "left in {}", d.display());
        }

        // The agent ran as the user (root only inside its user namespace).
        delegated.ok(&[
            "run",
            "-d",
            "--runtime",
            "process",
            "--name",
            "rl-sleep",
            "sleep",
            "60",
        ]);
        let v = delegated.inspect("rl-sleep");
        let pid = v["State"]["Pid"].as_u64().unwrap();
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uids = status_field(&st, "Uid");
        assert!(uids.starts_with(&uid.to_string()), "{uids}");
        let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
        let map: Vec<&str> = map.split_whitespace().collect();
        assert_eq!(map, vec!["0", &uid.to_string(), "1"]);
        assert!(std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap()
            .contains(&format!("/{sub}/aac/")));
        delegated.ok(&["rm", "-f", "rl-sleep"]);

        // The fork bomb is contained by the delegated pids cgroup too.
        let out = delegated.ok(&[
            "run",
            "--rm",
            "--runtime",
            "process",
            "--pids-limit",
            "20",
            "python3",
            &s.join("forkbomb.py").to_string_lossy(),
        ]);
        let n: u32 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(n < 20, "{out}");

        // Without a delegated cgroup: it runs, and says exactly which limits it cannot enforce.
        let undelegated = AsUser {
            run_dir: base.join("run2"),
            data_dir: base.join("data2"),
            cgroup_root: None,
            start_in: None,
        };
        let out = undelegated.run(&[
            "run",
            "--rm",
            "--runtime",
            "process",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "32",
            "sh",
            "-c",
            "echo ran",
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert_eq!(text(&out.stdout), "ran\n");
        for limit in ["memory limit", "cpu limit", "pids limit"] {
            assert!(err.contains(&format!("{limit} not enforced")), "{err}");
        }
        assert!(err.contains("AAC_CGROUP_ROOT"), "{err}");
    }));

    // Clean up whatever the user left, then the subtrees and the state.
    for r in [&delegated] {
        if let Ok(ids) = std::fs::read_dir(r.data_dir.join("containers")) {
            for id in ids.flatten() {
                let _ = r.run(&["rm", "-f", &id.file_name().to_string_lossy()]);
            }
        }
    }
    // Monitors first: on cgroup v2 they live in the subtree's `cli` leaf.
    aac_tests::cli::kill_monitors(&base);
    std::thread::sleep(std::time::Duration::from_millis(200));
    for d in &dirs {
        remove_cgroup_tree(d);
    }
    let _ = std::fs::remove_dir_all(&base);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
