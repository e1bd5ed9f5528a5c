//! The process backend against real processes. Needs root (skips with a message otherwise).

use std::path::{Path, PathBuf};

use aac_runtime::agent::*;
use aac_runtime::process::{self, ExitStatus, ProcessError, SpawnOptions, StdioSpec};
use aac_runtime::spec::builder::{self, HostLimits, SpecContext};
use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder, Spec};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipping: the process backend tests need root");
            return;
        }
    };
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("aac-proc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn agent(name: &str, script: &str) -> Agent {
    let mut a = Agent::for_image(name, "host");
    a.spec.command = vec!["/bin/sh".into(), "-c".into(), script.into()];
    a
}

fn spec_for(a: &Agent, id: &str) -> Spec {
    let host = HostLimits::current();
    let cgroup = aac_runtime::cgroups::CgroupPlan::for_process(id);
    let ctx = SpecContext {
        container_id: id,
        name: &a.metadata.name,
        image: None,
        host: &host,
        cgroup: &cgroup,
        volumes_dir: Path::new("/var/lib/aac/volumes"),
        netns_path: None,
        extra_mounts: Vec::new(),
        terminal: false,
    };
    builder::build(a, &ctx).unwrap()
}

/// Run to completion with stdout+stderr in a file; returns (status, output).
fn run(a: &Agent, id: &str) -> (ExitStatus, String) {
    run_spec(&spec_for(a, id), id)
}

fn run_spec(spec: &Spec, id: &str) -> (ExitStatus, String) {
    run_spec_with(spec, id, false, true)
}

/// `rootless`: in a user namespace, as a rootless run is (the mounts inherited from the host
/// are then locked to their parents).
/// `own_ids`: run by root, the agent's root is a range of aac's subordinate ids.
fn run_spec_with(spec: &Spec, id: &str, rootless: bool, own_ids: bool) -> (ExitStatus, String) {
    let dir = scratch(id);
    let out = dir.join("out");
    let mut opts = SpawnOptions::new(id);
    opts.rootless = rootless;
    opts.own_ids = own_ids;
    opts.stdio.stdout = StdioSpec::Path(out.clone());
    opts.stdio.stderr = StdioSpec::Path(out.clone());
    let mut child = process::spawn(spec, &opts).unwrap_or_else(|e| panic!("spawn {id}: {e}"));
    let status = child.wait().unwrap();
    child.cleanup().unwrap();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (status, text)
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .trim()
}

fn cgroup_gone(id: &str) -> bool {
    ["memory", "pids", "cpu"]
        .iter()
        .all(|c| !Path::new(&format!("/sys/fs/cgroup/{c}/aac/{id}")).exists())
        && !Path::new(&format!("/sys/fs/cgroup/aac/{id}")).exists()
}

#[test]
fn default_caps_no_new_privs_and_seccomp() {
    need_root!();
    let id = "aac-t-caps";
    let a = agent("caps", "cat /proc/self/status; cat /proc/self/cgroup");
    let (status, out) = run(&a, id);
    assert!(status.success(), "{status:?}: {out}");
    assert_eq!(field(&out, "CapEff"), "00000000a80425fb", "{out}");
    assert_eq!(field(&out, "CapBnd"), "00000000a80425fb", "{out}");
    assert_eq!(field(&out, "CapAmb"), "0000000000000000");
    assert_eq!(field(&out, "NoNewPrivs"), "1");
    if process::seccomp::supported() {
        assert_eq!(field(&out, "Seccomp"), "2", "{out}");
    } else {
        eprintln!("seccomp compiler not in this build: Seccomp field not checked");
    }
    assert!(out.contains(&format!("/aac/{id}")), "{out}");
    assert!(cgroup_gone(id));
}

#[test]
fn resource_limits_are_in_the_cgroup() {
    need_root!();
    let id = "aac-t-limits";
    let mut a = agent(
        "limits",
        r#"set -e
for line in $(cat /proc/self/cgroup); do
  hier=$(echo "$line" | cut -d: -f2); path=$(echo "$line" | cut -d: -f3)
  case "$hier" in
    memory) echo "mem=$(cat /sys/fs/cgroup/memory$path/memory.limit_in_bytes)";;
    pids) echo "pids=$(cat /sys/fs/cgroup/pids$path/pids.max)";;
    cpu|cpu,cpuacct) echo "quota=$(cat /sys/fs/cgroup/$hier$path/cpu.cfs_quota_us)";
         echo "period=$(cat /sys/fs/cgroup/$hier$path/cpu.cfs_period_us)";;
    "") if [ -f /sys/fs/cgroup$path/memory.max ]; then
          echo "mem=$(cat /sys/fs/cgroup$path/memory.max)"
          echo "pids=$(cat /sys/fs/cgroup$path/pids.max)"
          set -- $(cat /sys/fs/cgroup$path/cpu.max); echo "quota=$1"; echo "period=$2"
        fi;;
  esac
done"#,
    );
    a.spec.resources.limits.memory = Some(Bytes(64 * 1024 * 1024));
    a.spec.resources.limits.cpu = Some(MilliCpu(500));
    a.spec.resources.limits.pids = Some(32);
    // With the host's ids: in its own range the agent cannot enter aac's cgroup folders
    // (0700, root's) of a cgroup v1 hierarchy.
    let (status, out) = run_spec_with(&spec_for(&a, id), id, false, false);
    assert!(status.success(), "{status:?}: {out}");
    assert!(out.contains("mem=67108864"), "{out}");
    assert!(out.contains("pids=32"), "{out}");
    assert!(out.contains("quota=50000"), "{out}");
    assert!(out.contains("period=100000"), "{out}");
    assert!(cgroup_gone(id));
}

#[test]
fn read_only_root_with_private_tmp() {
    need_root!();
    let id = "aac-t-rofs";
    let marker = format!("aac-rofs-{}", std::process::id());
    let mut a = agent(
        "rofs",
        &format!(
            "touch /usr/aac-test 2>&1; echo usr=$?; touch /tmp/{marker} && echo tmp=ok; \
             touch /run/x && echo run=ok"
        ),
    );
    a.spec.security.read_only_root_filesystem = true;
    let (status, out) = run(&a, id);
    assert!(status.success(), "{status:?}: {out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!out.contains("usr=0"), "{out}");
    assert!(out.contains("tmp=ok") && out.contains("run=ok"), "{out}");
    assert!(!Path::new("/usr/aac-test").exists());
    assert!(!Path::new("/tmp").join(&marker).exists());
}

fn bind(source: &Path, target: &str, read_only: bool) -> VolumeSpec {
    VolumeSpec {
        kind: VolumeType::Bind,
        source: source.to_string_lossy().into_owned(),
        target: target.into(),
        read_only,
        options: Vec::new(),
    }
}

#[test]
fn bind_volume_is_visible_and_writable() {
    need_root!();
    let id = "aac-t-vol";
    let dir = scratch("vol-src");
    std::fs::write(dir.join("in.txt"), "hello from host").unwrap();
    let mut a = agent(
        "vol",
        "cat /srv/in.txt; echo; echo written > /srv/out.txt; cat /tmp/vol/in.txt; echo; \
         (echo no > /tmp/ro/x) 2>/dev/null || echo ro-refused",
    );
    a.spec.security.read_only_root_filesystem = true;
    // /srv exists on the host; /tmp/vol and /tmp/ro live in the container's own /tmp.
    a.spec.volumes.push(bind(&dir, "/srv", false));
    a.spec.volumes.push(bind(&dir, "/tmp/vol", false));
    a.spec.volumes.push(bind(&dir, "/tmp/ro", true));
    let (status, out) = run(&a, id);
    assert!(status.success(), "{status:?}: {out}");
    assert_eq!(out, "hello from host\nhello from host\nro-refused\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "written\n"
    );
    assert!(!dir.join("x").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mount_points_absent_on_the_host_are_made_in_the_agents_view_only() {
    need_root!();
    let id = "aac-t-nomkdir";
    let dir = scratch("nomkdir-src");
    let mut a = agent(
        "nomkdir",
        "echo made > /aac-no-such-dir/deep/f && ls / | grep -c aac-no-such-dir",
    );
    a.spec
        .volumes
        .push(bind(&dir, "/aac-no-such-dir/deep", false));
    let (status, out) = run(&a, id);
    assert!(status.success(), "{out}");
    assert_eq!(out, "1\n");
    assert_eq!(std::fs::read_to_string(dir.join("f")).unwrap(), "made\n");
    assert!(!Path::new("/aac-no-such-dir").exists());
    assert!(cgroup_gone(id));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pids_limit_contains_a_fork_bomb() {
    need_root!();
    let id = "aac-t-bomb";
    let mut a = agent(
        "bomb",
        "for i in $(seq 100); do sleep 3 & done; echo procs=$(ls /proc | grep -c '^[0-9]')",
    );
    a.spec.resources.limits.pids = Some(16);
    let (status, out) = run(&a, id);
    // The shell gives up when fork fails (EAGAIN from the pids controller).
    assert!(!status.success(), "{status:?}: {out}");
    assert!(
        out.contains("Cannot fork") || out.contains("Resource temporarily unavailable"),
        "{out}"
    );
    // The host still forks.
    assert!(std::process::Command::new("true")
        .status()
        .unwrap()
        .success());
    assert!(cgroup_gone(id));
}

#[test]
fn pid_namespace_and_hostname() {
    need_root!();
    let id = "aac-t-pidns";
    let a = agent(
        "pidns-agent",
        "echo pid=$$; echo host=$(cat /proc/sys/kernel/hostname)",
    );
    let (status, out) = run(&a, id);
    assert!(status.success(), "{status:?}: {out}");
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(out.contains("host=pidns-agent\n"), "{out}");
}

#[test]
fn exit_codes_and_signals_come_back() {
    need_root!();
    let (status, _) = run(&agent("exit", "exit 7"), "aac-t-exit");
    assert_eq!(status, ExitStatus::Exited(7));

    let id = "aac-t-kill";
    let spec = spec_for(&agent("kill", "sleep 30"), id);
    let mut child = process::spawn(&spec, &SpawnOptions::new(id)).unwrap();
    child.kill(nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_eq!(
        child.wait().unwrap(),
        ExitStatus::Signaled(nix::sys::signal::Signal::SIGKILL)
    );
    child.cleanup().unwrap();
    assert!(cgroup_gone(id));
}

#[test]
fn command_not_found_is_typed_and_leaves_no_cgroup() {
    need_root!();
    let id = "aac-t-notfound";
    let mut a = agent("nf", "");
    a.spec.command = vec!["aac-no-such-command".into()];
    a.spec.resources.limits.pids = Some(8);
    let spec = spec_for(&a, id);
    let err = process::spawn(&spec, &SpawnOptions::new(id)).unwrap_err();
    assert!(
        matches!(&err, ProcessError::CommandNotFound { command } if command == "aac-no-such-command"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 127);
    assert!(cgroup_gone(id));

    let id = "aac-t-noexec";
    let mut a = agent("ne", "");
    a.spec.command = vec!["/etc/hostname".into()];
    let err = process::spawn(&spec_for(&a, id), &SpawnOptions::new(id)).unwrap_err();
    assert!(
        matches!(err, ProcessError::CommandNotExecutable { .. }),
        "{err}"
    );
    assert_eq!(err.exit_code(), 126);
    assert!(cgroup_gone(id));
}

#[test]
fn non_root_user_has_no_capabilities() {
    need_root!();
    let id = "aac-t-nobody";
    let mut a = agent(
        "nobody",
        "id -u; id -g; grep -E '^Cap(Eff|Prm)' /proc/self/status",
    );
    a.spec.security.run_as_user = Some(65534);
    let (status, out) = run(&a, id);
    assert!(status.success(), "{status:?}: {out}");
    assert!(out.starts_with("65534\n65534\n"), "{out}");
    assert_eq!(field(&out, "CapEff"), "0000000000000000");
    assert_eq!(field(&out, "CapPrm"), "0000000000000000");
}

#[test]
fn rlimits_are_clamped_to_the_hard_limit() {
    need_root!();
    let id = "aac-t-rlimit";
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let mut spec = spec_for(&agent("rl", "ulimit -Sn; ulimit -Hn"), id);
    // Ask for more than the host allows: clamped, not a failure.
    let mut process = spec.process().clone().unwrap();
    process.set_rlimits(Some(vec![oci_spec::runtime::PosixRlimitBuilder::default()
        .typ(oci_spec::runtime::PosixRlimitType::RlimitNofile)
        .soft(hard.saturating_add(1000))
        .hard(hard.saturating_add(1000))
        .build()
        .unwrap()]));
    spec.set_process(Some(process));
    let dir = scratch(id);
    let mut opts = SpawnOptions::new(id);
    opts.stdio.stdout = StdioSpec::Path(dir.join("out"));
    let mut child = process::spawn(&spec, &opts).unwrap();
    assert!(child.wait().unwrap().success());
    child.cleanup().unwrap();
    let out = std::fs::read_to_string(dir.join("out")).unwrap();
    assert_eq!(out, format!("{hard}\n{hard}\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn new_network_namespace_has_only_loopback() {
    need_root!();
    let id = "aac-t-netns";
    let (status, out) = run(
        &agent(
            "net",
            "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '",
        ),
        id,
    );
    assert!(status.success(), "{status:?}: {out}");
    assert_eq!(out.trim(), "lo");
}

#[test]
fn masked_and_readonly_paths() {
    need_root!();
    let id = "aac-t-mask";
    let (status, out) = run(
        &agent(
            "mask",
            "wc -c < /proc/keys; ls /proc/acpi 2>/dev/null | wc -l; \
             echo 1 > /proc/sys/kernel/domainname 2>&1 || echo ro=yes",
        ),
        id,
    );
    assert!(status.success(), "{status:?}: {out}");
    assert!(out.starts_with("0\n0\n"), "{out}");
    assert!(out.contains("ro=yes"), "{out}");
}

#[test]
fn seccomp_without_no_new_privs() {
    need_root!();
    if !process::seccomp::supported() {
        eprintln!("skipping: no seccomp compiler for this architecture");
        return;
    }
    let id = "aac-t-seccomp-nnp";
    let mut a = agent("sc", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status");
    a.spec.security.no_new_privileges = false;
    a.spec.security.run_as_user = Some(65534);
    let (status, out) = run(&a, id);
    assert!(status.success(), "{status:?}: {out}");
    assert_eq!(field(&out, "NoNewPrivs"), "0");
    assert_eq!(field(&out, "Seccomp"), "2");
}

/// Where the host has cgroup2 mounted: /sys/fs/cgroup on v2, /sys/fs/cgroup/unified on hybrid.
fn host_cgroup2_mount() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(sep + 1) == Some(&"cgroup2") && f[4].starts_with("/sys/fs/cgroup"))
            .then(|| f[4].to_string())
    })
}

/// With its own cgroup namespace the process gets its own cgroup2 mount, read-only, even
/// though the host's root view already has the host's cgroup2 at that mount point (the kernel
/// refuses the same superblock twice on one mount point: EBUSY unless the host's is detached).
#[test]
fn own_cgroup2_mount_replaces_the_hosts() {
    own_cgroup2_mount(false);
}

/// The same in a user namespace, where the host's cgroup2 mount is locked and cannot be
/// detached: the process's own cgroup directory is bound there instead.
#[test]
fn own_cgroup2_mount_in_a_user_namespace() {
    own_cgroup2_mount(true);
}

fn own_cgroup2_mount(rootless: bool) {
    need_root!();
    let Some(point) = host_cgroup2_mount() else {
        eprintln!("skipping: no cgroup2 mounted under /sys/fs/cgroup");
        return;
    };
    let id = if rootless {
        "aac-t-cg2-userns"
    } else {
        "aac-t-cg2"
    };
    let a = agent(
        "cg2",
        &format!(
            "cat /proc/self/mountinfo; cat /proc/self/cgroup; \
             mkdir {point}/aac-probe 2>/dev/null && echo WRITABLE || echo REFUSED"
        ),
    );
    let mut spec = spec_for(&a, id);
    let mut linux = spec.linux().clone().unwrap();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    if !namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
    {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Cgroup)
                .build()
                .unwrap(),
        );
    }
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    // On a hybrid host the spec's cgroup mount is the v1 tree at /sys/fs/cgroup: keep the
    // host's there, and ask for the v2 one at the host's cgroup2 mount point.
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| {
        !matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2"))
            || m.destination() == Path::new(&point)
    });
    if !mounts.iter().any(|m| m.destination() == Path::new(&point)) {
        mounts.push(
            MountBuilder::default()
                .destination(&point)
                .typ("cgroup2")
                .source("cgroup")
                .options(vec![
                    "nosuid".into(),
                    "noexec".into(),
                    "nodev".into(),
                    "ro".into(),
                ])
                .build()
                .unwrap(),
        );
    }
    spec.set_mounts(Some(mounts));

    let (status, out) = run_spec_with(&spec, id, rootless, true);
    assert!(status.success(), "{status:?}: {out}");
    let at_point: Vec<&str> = out
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(point.as_str()))
        .collect();
    // The top-most mount there (listed last) is a read-only cgroup2 rooted at the namespace.
    let top: Vec<&str> = at_point
        .last()
        .expect("a mount at the point")
        .split(' ')
        .collect();
    assert!(at_point.join("\n").contains(" - cgroup2 "), "{out}");
    assert_eq!(top[3], "/", "rooted at the cgroup namespace:\n{out}");
    assert!(top[5].starts_with("ro"), "{out}");
    assert!(
        out.lines().any(|l| l == "0::/"),
        "own cgroup namespace:\n{out}"
    );
    assert!(out.contains("REFUSED"), "{out}");
    assert!(!Path::new(&point).join("aac-probe").exists());
    assert!(cgroup_gone(id));
}
