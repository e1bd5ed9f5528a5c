//! Shared helpers of aac's integration tests: a private containerd per test binary, the
//! `aac-busybox:latest` test image, a minimal OCI spec and leftover checks.
//!
//! Each test binary starts its own containerd under `/tmp/aac-ctrd/<binary>-<pid>/` (short
//! paths: unix socket names are limited to 108 bytes) once, on first use, and kills it when
//! the process exits (`atexit`). Directories of earlier runs whose test process is gone are
//! swept on start (their containerd is killed, mounts detached, files removed).

pub mod auth_registry;
pub mod cli;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aac_runtime::containerd::Client;
use aac_runtime::image_config::ImageConfig;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    Mount, MountBuilder, Process, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

/// Namespace all tests use.
pub const NAMESPACE: &str = "aac-test";
/// The test image.
pub const IMAGE: &str = "aac-busybox:latest";
const BASE: &str = "/tmp/aac-ctrd";

/// The private containerd of this test binary.
pub struct Env {
    pub dir: PathBuf,
    pub socket: PathBuf,
}

static ENV: OnceLock<Env> = OnceLock::new();
static CONTAINERD_PID: AtomicI32 = AtomicI32::new(0);
static ENV_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn stop_containerd() {
    let pid = CONTAINERD_PID.load(Ordering::SeqCst);
    if pid > 0 {
        stop_pid(pid);
    }
    if let Some(dir) = ENV_DIR.get() {
        kill_shims(dir);
        remove_dir(dir);
    }
}

/// Kills the runc shims (and their containers) that serve the containerd under `dir`; a test
/// that failed half-way may have left a running container.
fn kill_shims(dir: &Path) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let needle = format!("{}/c.sock", dir.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut all: Vec<(i32, i32)> = Vec::new(); // (pid, ppid)
    let mut shims = Vec::new();
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|s| s.parse::<i32>().ok())
            .unwrap_or(0);
        all.push((pid, ppid));
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("containerd-shim") && cmd.contains(&needle) {
            shims.push(pid);
        }
    }
    for shim in shims {
        for (pid, _) in all.iter().filter(|(_, pp)| *pp == shim) {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(shim), Signal::SIGKILL);
    }
}

fn stop_pid(pid: i32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(pid);
    if kill(pid, Signal::SIGTERM).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        // Reap it if it is our child; otherwise poll for its disappearance.
        let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        if kill(pid, None).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(pid, Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Detaches mounts below `dir` and removes it.
fn remove_dir(dir: &Path) {
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        let mut targets: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|t| Path::new(t).starts_with(dir))
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for t in targets {
            let _ = nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Kills containerds of earlier runs of this binary whose test process is gone.
fn sweep_stale(name: &str) {
    let Ok(entries) = std::fs::read_dir(BASE) else {
        return;
    };
    for e in entries.flatten() {
        let fname = e.file_name().to_string_lossy().to_string();
        let Some(pid) = fname
            .strip_prefix(&format!("{name}-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue; // still running (a concurrent run of the same binary)
        }
        let dir = e.path();
        if let Some(cpid) = std::fs::read_to_string(dir.join("containerd.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{cpid}/cmdline")).unwrap_or_default();
            let dir_str = dir.to_string_lossy();
            if String::from_utf8_lossy(&cmdline).contains(dir_str.as_ref()) {
                stop_pid(cpid);
            }
        }
        kill_shims(&dir);
        remove_dir(&dir);
    }
}

fn binary_name() -> String {
    let exe = std::env::current_exe().unwrap();
    let stem = exe.file_stem().unwrap().to_string_lossy().to_string();
    // `containers-0123456789abcdef` -> `containers`, keep paths short.
    let base = stem.rsplit_once('-').map(|(a, _)| a).unwrap_or(&stem);
    base.chars().take(24).collect()
}

fn start_containerd() -> Env {
    let name = binary_name();
    std::fs::create_dir_all(BASE).unwrap();
    sweep_stale(&name);
    let dir = PathBuf::from(format!("{BASE}/{name}-{}", std::process::id()));
    remove_dir(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("c.sock");
    let config = format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{d}/c.sock"

[ttrpc]
  address = "{d}/t.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
        d = dir.display()
    );
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config).unwrap();
    let _ = ENV_DIR.set(dir.clone());
    // SAFETY: registers a plain extern "C" function without captured state.
    unsafe {
        libc::atexit(stop_containerd);
    }
    spawn_containerd(&dir);
    Env { dir, socket }
}

/// Start containerd on `dir`'s config and wait for its socket.
fn spawn_containerd(dir: &Path) {
    let socket = dir.join("c.sock");
    let _ = std::fs::remove_file(&socket);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start containerd (is it installed?)");
    let pid = child.id() as i32;
    std::fs::write(dir.join("containerd.pid"), pid.to_string()).unwrap();
    CONTAINERD_PID.store(pid, Ordering::SeqCst);
    std::mem::forget(child); // reaped in stop_containerd
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if Instant::now() > deadline {
            panic!(
                "containerd did not create {} within 30 s; log:\n{}",
                socket.display(),
                std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stop this binary's containerd (its shims and containers keep running) and start it again
/// on the same root, state and socket.
pub fn restart_containerd() {
    let dir = env().dir.clone();
    stop_pid(CONTAINERD_PID.load(Ordering::SeqCst));
    spawn_containerd(&dir);
}

/// Kill this binary's containerd with SIGKILL (a crash: nothing is cleaned up), then start it
/// again on the same root, state and socket.
pub fn crash_containerd() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let dir = env().dir.clone();
    let pid = Pid::from_raw(CONTAINERD_PID.load(Ordering::SeqCst));
    let _ = kill(pid, Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
    spawn_containerd(&dir);
}

/// Runs an async block on a fresh runtime in another thread (usable from inside tests'
/// own runtimes).
fn block_on_thread<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .join()
    .unwrap()
}

/// The private containerd, started on first use, with the test image imported.
pub fn env() -> &'static Env {
    ENV.get_or_init(|| {
        let env = start_containerd();
        let socket = env.socket.clone();
        block_on_thread(move || {
            Box::pin(async move {
                let client = Client::connect(&socket, NAMESPACE).await.unwrap();
                let rootfs = tempfile::tempdir().unwrap();
                busybox_rootfs(rootfs.path());
                client
                    .import_rootfs(rootfs.path(), IMAGE, image_config())
                    .await
                    .unwrap();
            })
        });
        env
    })
}

/// The process settings of the test image.
pub fn image_config() -> ImageConfig {
    ImageConfig {
        cmd: vec!["/bin/sh".into()],
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    }
}

/// A client of the private containerd (one per test: a channel belongs to its runtime).
pub async fn client() -> Client {
    let socket = env().socket.clone();
    Client::connect(&socket, NAMESPACE).await.unwrap()
}

/// Fills `dir` with a busybox root file system: /bin/busybox plus applet links, passwd,
/// group, hostname, /tmp.
pub fn busybox_rootfs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/usr/bin/busybox", bin.join("busybox")).unwrap();
    let list = Command::new("/usr/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    for d in ["etc", "proc", "sys", "dev", "tmp", "root", "home"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(dir.join("etc/hostname"), "aac-image\n").unwrap();
    // A file that exists but cannot be executed.
    std::fs::write(dir.join("bin/notexec"), "#!/bin/sh\necho no\n").unwrap();
    std::fs::set_permissions(
        dir.join("bin/notexec"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
}

/// A unique container id.
pub fn unique_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn caps() -> std::collections::HashSet<Capability> {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect()
}

/// A process spec running `args` as root with PATH=/bin.
pub fn process(args: &[&str]) -> Process {
    ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .additional_gids(Vec::<u32>::new())
                .build()
                .unwrap(),
        )
        .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/bin".to_string(), "HOME=/root".to_string()])
        .cwd("/")
        .no_new_privileges(true)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps())
                .effective(caps())
                .permitted(caps())
                .inheritable(std::collections::HashSet::new())
                .ambient(std::collections::HashSet::new())
                .build()
                .unwrap(),
        )
        .rlimits(vec![])
        .build()
        .unwrap()
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .unwrap()
}

/// A minimal complete OCI spec for container `id` running `args`.
pub fn spec(id: &str, args: &[&str]) -> Spec {
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build().unwrap())
    .collect::<Vec<_>>();
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(format!("/aac/{id}")))
        .masked_paths(vec!["/proc/kcore".to_string(), "/sys/firmware".to_string()])
        .readonly_paths(vec![
            "/proc/sys".to_string(),
            "/proc/sysrq-trigger".to_string(),
        ])
        .build()
        .unwrap();
    linux.set_resources(None);
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .process(process(args))
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()
                .unwrap(),
        )
        .hostname(id)
        .mounts(vec![
            mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
            mount(
                "/dev",
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            mount(
                "/dev/pts",
                "devpts",
                "devpts",
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            ),
            mount(
                "/dev/shm",
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            ),
            mount(
                "/sys",
                "sysfs",
                "sysfs",
                &["nosuid", "noexec", "nodev", "ro"],
            ),
        ])
        .linux(linux)
        .build()
        .unwrap();
    spec.set_annotations(None);
    spec
}

/// What a namespace holds that a test could have leaked.
#[derive(Debug, Default, PartialEq)]
pub struct Leftovers {
    pub containers: Vec<String>,
    /// Active (non-committed) snapshots.
    pub snapshots: Vec<String>,
    pub leases: Vec<String>,
}

/// Leftovers whose name contains `needle` (tests run in parallel: filter by own ids).
pub async fn leftovers(client: &Client, needle: &str) -> Leftovers {
    Leftovers {
        containers: client
            .list_containers()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .filter(|i| i.contains(needle))
            .collect(),
        snapshots: client
            .list_snapshots()
            .await
            .unwrap()
            .into_iter()
            .filter(|s| s.kind != "committed" && s.name.contains(needle))
            .map(|s| s.name)
            .collect(),
        leases: client
            .list_leases()
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, labels)| {
                labels
                    .get("aac.dev/for")
                    .is_some_and(|f| f.contains(needle))
            })
            .map(|(id, _)| id)
            .collect(),
    }
}

/// A regular file for a container's stdout; the shim appends to it.
pub fn output_file(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, b"").unwrap();
    p
}

/// Answer every connection to `listener` with an HTTP/1.0 200 carrying `body`, on a thread.
/// The request is read before the answer: closing with it unread would reset the connection,
/// and a client would then fail although it got the answer.
pub fn serve_http(listener: std::net::TcpListener, body: &'static [u8]) {
    use std::io::{BufRead, Write};
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let mut r = std::io::BufReader::new(&s);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let mut s = &s;
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
            let _ = s.write_all(body);
        }
    });
}
