//! From a validated [`Agent`] to a complete OCI runtime spec, shared by every backend.
//!
//! Every field is set explicitly: oci-spec's builders fall back to `Default` for anything left
//! unset, and those defaults (capabilities in the inheritable and ambient sets, a hostname,
//! rlimits, environment) are not ours to ship.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice,
    LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    LinuxSeccomp, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::agent::values::{ALL_CAPABILITIES, DEFAULT_CAPABILITIES};
use crate::agent::{
    Agent, EnvSource, MemorySwap, NetworkMode, SeccompProfile, VolumeSpec, VolumeType,
};
use crate::cgroups::CgroupPlan;
use crate::image_config::ImageConfig;

use super::seccomp;

/// The OCI runtime-spec version our specs follow (what runc 1.1 implements).
pub const OCI_VERSION: &str = "1.0.2-dev";
/// CFS period used to express CPU limits.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Soft and hard `RLIMIT_NOFILE` we ask for when the host allows it (docker's default).
pub const DEFAULT_NOFILE: u64 = 1_048_576;
/// `PATH` when neither the image nor the agent set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Paths masked in every container, as containerd and moby do.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only in every container, as containerd and moby do.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command to run: the image has no entrypoint or cmd and none was given")]
    NoCommand,
    #[error("environment variable {name}: {reason}")]
    Env { name: String, reason: String },
    #[error("user {user:?} in the image config is not numeric; set security.runAsUser")]
    UserName { user: String },
    #[error("seccomp profile {path}: {source}")]
    Seccomp {
        path: PathBuf,
        #[source]
        source: seccomp::SeccompError,
    },
    #[error("building the OCI spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// Facts about the host that shape a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLimits {
    /// Hard `RLIMIT_NOFILE` of the calling process: a container cannot be given more without
    /// CAP_SYS_RESOURCE.
    pub nofile_hard: u64,
    /// Pure cgroup v2 (unified) host: containers get their own cgroup namespace.
    pub cgroup_v2: bool,
}

impl HostLimits {
    /// Read them from the running host.
    pub fn current() -> HostLimits {
        let nofile_hard =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(_, hard)| hard)
                .unwrap_or(DEFAULT_NOFILE);
        let cgroup_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        HostLimits {
            nofile_hard,
            cgroup_v2,
        }
    }
}

/// Everything besides the agent that a spec depends on.
pub struct SpecContext<'a> {
    /// Container ID: names the cgroup and anonymous volumes.
    pub container_id: &'a str,
    /// Container name; the default hostname.
    pub name: &'a str,
    /// Image configuration (entrypoint, cmd, env, workdir, user), when there is an image.
    pub image: Option<&'a ImageConfig>,
    pub host: &'a HostLimits,
    /// The container's cgroup: `linux.cgroupsPath`, or none (then no resources either).
    pub cgroup: &'a CgroupPlan,
    /// Where named volumes live: `<volumes_dir>/<name>`.
    pub volumes_dir: &'a Path,
    /// Network namespace to join (prepared by the network set-up) instead of a new one.
    pub netns_path: Option<&'a Path>,
    /// Extra mounts from other parts of aac (resolv.conf, hosts), placed after the volumes.
    pub extra_mounts: Vec<Mount>,
    /// Allocate a terminal for the process.
    pub terminal: bool,
}

/// Build the OCI runtime spec for `agent`.
pub fn build(agent: &Agent, ctx: &SpecContext<'_>) -> Result<Spec, SpecError> {
    let spec = &agent.spec;
    let sec = &spec.security;
    let image = ctx.image.cloned().unwrap_or_default();

    let args = process_args(agent, &image)?;
    let env = process_env(agent, &image, ctx)?;
    let cwd = spec
        .working_dir
        .clone()
        .or_else(|| (!image.working_dir.is_empty()).then(|| image.working_dir.clone()))
        .unwrap_or_else(|| "/".to_string());

    let (uid, gid) = user_ids(agent, &image)?;
    let user = UserBuilder::default()
        .uid(uid)
        .gid(gid)
        .additional_gids(sec.supplemental_groups.clone())
        .build()?;

    let caps = capability_set(agent);
    let cap_set: Capabilities = caps
        .iter()
        .filter_map(|c| c.parse::<Capability>().ok())
        .collect();
    // A non-root user keeps across execve only what is in its ambient set: the capabilities
    // agent.yaml adds go there (podman does the same), so `runAsUser: 1000` with
    // `add: [NET_BIND_SERVICE]` can bind port 80. Root needs none.
    let ambient: Capabilities = if uid == 0 {
        Capabilities::new()
    } else {
        added_capabilities(agent, &caps)
            .iter()
            .filter_map(|c| c.parse::<Capability>().ok())
            .collect()
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(cap_set.clone())
        .effective(cap_set.clone())
        .permitted(cap_set)
        .inheritable(ambient.clone())
        .ambient(ambient)
        .build()?;

    let nofile = DEFAULT_NOFILE.min(ctx.host.nofile_hard);
    let rlimits = vec![PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(nofile)
        .hard(nofile)
        .build()?];

    let process = ProcessBuilder::default()
        .terminal(ctx.terminal)
        .user(user)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .rlimits(rlimits)
        .no_new_privileges(sec.no_new_privileges)
        .build()?;

    let root = RootBuilder::default()
        .path("rootfs")
        .readonly(sec.read_only_root_filesystem)
        .build()?;

    let hostname = spec
        .hostname
        .clone()
        .unwrap_or_else(|| ctx.name.chars().take(63).collect());

    // docker's `--privileged`: no seccomp filter, nothing masked or read-only, every host
    // device (and the device cgroup allows them all, see `resources_of`).
    let privileged = sec.privileged;
    let seccomp = if privileged {
        None
    } else {
        seccomp_for(&sec.seccomp_profile, &caps)?
    };
    let listed = |paths: &[&str]| -> Vec<String> {
        if privileged {
            Vec::new()
        } else {
            paths.iter().map(|s| s.to_string()).collect()
        }
    };

    let linux = LinuxBuilder::default()
        .uid_mappings(Vec::new())
        .gid_mappings(Vec::new())
        .sysctl(HashMap::new())
        .namespaces(namespaces(&spec.network.mode, ctx)?)
        .devices(if privileged {
            host_devices()?
        } else {
            Vec::new()
        })
        .masked_paths(listed(MASKED_PATHS))
        .readonly_paths(listed(READONLY_PATHS));
    let linux = match seccomp {
        Some(s) => linux.seccomp(s),
        None => linux,
    };
    // Without a cgroup of its own (a rootless containerd without systemd) runc could not
    // apply limits: the plan says which are then not enforced.
    let linux = match &ctx.cgroup.spec_path {
        Some(path) => linux
            .resources(resources_of(agent)?)
            .cgroups_path(PathBuf::from(path))
            .build()?,
        None => {
            let mut l = linux.build()?;
            // oci-spec fills in an empty device list otherwise.
            l.set_resources(None);
            l
        }
    };

    let mut labels = HashMap::new();
    labels.insert("dev.agent.name".to_string(), agent.metadata.name.clone());
    if let Some(v) = &agent.metadata.version {
        labels.insert("dev.agent.version".to_string(), v.clone());
    }

    Ok(SpecBuilder::default()
        .version(OCI_VERSION)
        .root(root)
        .mounts(mounts(agent, ctx)?)
        .process(process)
        .hostname(hostname)
        .annotations(labels)
        .linux(linux)
        .build()?)
}

/// docker's rules: `command` replaces the entrypoint (and then the image cmd is dropped),
/// `args` replaces the cmd.
fn process_args(agent: &Agent, image: &ImageConfig) -> Result<Vec<String>, SpecError> {
    let spec = &agent.spec;
    let (entrypoint, cmd) = if !spec.command.is_empty() {
        (spec.command.clone(), spec.args.clone())
    } else if !spec.args.is_empty() {
        (image.entrypoint.clone(), spec.args.clone())
    } else {
        (image.entrypoint.clone(), image.cmd.clone())
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

fn process_env(
    agent: &Agent,
    image: &ImageConfig,
    ctx: &SpecContext<'_>,
) -> Result<Vec<String>, SpecError> {
    // Ordered by first appearance; later sources replace earlier values of the same name.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: String, v: String| match env.iter_mut().find(|(n, _)| *n == k) {
        Some(slot) => slot.1 = v,
        None => env.push((k, v)),
    };
    set("PATH".into(), DEFAULT_PATH.into());
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k.to_string(), v.to_string());
    }
    let hostname = agent
        .spec
        .hostname
        .clone()
        .unwrap_or_else(|| ctx.name.chars().take(63).collect());
    set("HOSTNAME".into(), hostname);
    for var in &agent.spec.environment {
        let value = match &var.source {
            EnvSource::Value { value } => value.clone(),
            EnvSource::Config { key } => {
                let key = key.as_deref().unwrap_or(&var.name);
                match agent.spec.config.get(key) {
                    Some(v) => yaml_scalar_string(v),
                    None => {
                        return Err(SpecError::Env {
                            name: var.name.clone(),
                            reason: format!("spec.config has no key {key:?}"),
                        })
                    }
                }
            }
            // Never in a spec: delivered at start (crate::secrets::delivery).
            EnvSource::Secret { .. } => continue,
        };
        set(var.name.clone(), value);
    }
    // An image's value of a name a secret sets is not kept either.
    env.retain(|(k, _)| {
        !agent
            .spec
            .environment
            .iter()
            .any(|v| &v.name == k && matches!(v.source, EnvSource::Secret { .. }))
    });
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// A config value as an environment string: scalars as written, anything else as JSON.
fn yaml_scalar_string(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Null => String::new(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn user_ids(agent: &Agent, image: &ImageConfig) -> Result<(u32, u32), SpecError> {
    let sec = &agent.spec.security;
    let (img_uid, img_gid) = if image.user.is_empty() {
        (0, None)
    } else {
        let (u, g) = match image.user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (image.user.as_str(), None),
        };
        let uid = u.parse::<u32>().map_err(|_| SpecError::UserName {
            user: image.user.clone(),
        })?;
        let gid = match g {
            Some(g) => Some(g.parse::<u32>().map_err(|_| SpecError::UserName {
                user: image.user.clone(),
            })?),
            None => None,
        };
        (uid, gid)
    };
    let uid = sec.run_as_user.unwrap_or(img_uid);
    // Without an explicit group, the group follows the user id (no passwd lookup).
    let gid = sec
        .run_as_group
        .or(if sec.run_as_user.is_some() {
            None
        } else {
            img_gid
        })
        .unwrap_or(uid);
    Ok((uid, gid))
}

/// The container's capability names (without `CAP_`), sorted: docker's default 14 with
/// `add`/`drop` applied; `ALL` in `add` starts from every capability, `ALL` in `drop` from none.
pub fn capability_set(agent: &Agent) -> Vec<String> {
    let changes = &agent.spec.security.capabilities;
    let has_all = |l: &[String]| l.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let privileged = agent.spec.security.privileged;
    let mut set: BTreeSet<String> = if privileged || has_all(&changes.add) {
        // docker's `--cap-add ALL`: every capability this host lets aac hand on (its own
        // bounding set), not one the kernel or an outer sandbox withholds.
        let bounding = caps::read(None, caps::CapSet::Bounding).ok();
        ALL_CAPABILITIES
            .iter()
            .filter(
                |name| match (&bounding, format!("CAP_{name}").parse::<caps::Capability>()) {
                    (Some(b), Ok(c)) => b.contains(&c),
                    (None, _) => true,
                    (Some(_), Err(_)) => false,
                },
            )
            .map(|s| s.to_string())
            .collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    };
    if privileged {
        // docker gives a privileged container every capability, whatever --cap-drop says.
        return set.into_iter().collect();
    }
    if has_all(&changes.drop) {
        set.clear();
    }
    for d in &changes.drop {
        set.remove(d);
    }
    for a in &changes.add {
        if !a.eq_ignore_ascii_case("ALL") {
            set.insert(a.clone());
        }
    }
    // An agent whose egress is limited must neither change its rules (NET_ADMIN) nor send
    // packets around them (NET_RAW: packet sockets bypass the IP hooks). Validation refuses
    // adding either; docker's default NET_RAW goes here.
    if agent.spec.network.security.egress_policy().is_some() {
        set.remove("NET_RAW");
        set.remove("NET_ADMIN");
    }
    set.into_iter().collect()
}

/// The capabilities of `caps` (the final set) that agent.yaml's `add` asked for.
fn added_capabilities(agent: &Agent, caps: &[String]) -> Vec<String> {
    let add = &agent.spec.security.capabilities.add;
    if agent.spec.security.privileged || add.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
        return caps.to_vec();
    }
    caps.iter()
        .filter(|c| add.iter().any(|a| a.eq_ignore_ascii_case(c)))
        .cloned()
        .collect()
}

fn seccomp_for(
    profile: &SeccompProfile,
    caps: &[String],
) -> Result<Option<LinuxSeccomp>, SpecError> {
    match profile {
        SeccompProfile::Default => Ok(Some(seccomp::default_profile(caps))),
        SeccompProfile::Unconfined => Ok(None),
        SeccompProfile::Path(p) => {
            seccomp::load_profile(p, caps)
                .map(Some)
                .map_err(|source| SpecError::Seccomp {
                    path: p.clone(),
                    source,
                })
        }
    }
}

/// The cgroup resources `agent` asks for.
pub fn resources_of(agent: &Agent) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let res = &agent.spec.resources;
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(limit) = res.limits.cpu {
        let quota = (limit.0.saturating_mul(CPU_PERIOD_US) / 1000).max(1000);
        cpu = cpu
            .quota(i64::try_from(quota).unwrap_or(i64::MAX))
            .period(CPU_PERIOD_US);
    }
    if let Some(shares) = res.requests.cpu_shares {
        cpu = cpu.shares(shares);
    } else if let Some(req) = res.requests.cpu {
        // 1 CPU = 1024 shares, as docker and the kubelet do; the kernel's minimum is 2.
        cpu = cpu.shares((req.0.saturating_mul(1024) / 1000).max(2));
    }
    if let Some(cpus) = &res.limits.cpuset_cpus {
        cpu = cpu.cpus(cpus.clone());
    }
    let mut memory = LinuxMemoryBuilder::default();
    if let Some(limit) = res.limits.memory {
        memory = memory.limit(i64::try_from(limit.0).unwrap_or(i64::MAX));
    }
    if let Some(req) = res.requests.memory {
        memory = memory.reservation(i64::try_from(req.0).unwrap_or(i64::MAX));
    }
    match res.limits.memory_swap {
        Some(MemorySwap::Limit(b)) => memory = memory.swap(i64::try_from(b.0).unwrap_or(i64::MAX)),
        Some(MemorySwap::Unlimited) => memory = memory.swap(-1),
        None => {}
    }
    let devices = if agent.spec.security.privileged {
        vec![LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm".to_string())
            .build()?]
    } else {
        device_rules()?
    };
    let mut b = LinuxResourcesBuilder::default()
        .devices(devices)
        .cpu(cpu.build()?)
        .memory(memory.build()?);
    if let Some(p) = res.limits.pids {
        b = b.pids(LinuxPidsBuilder::default().limit(p).build()?);
    }
    Ok(b.build()?)
}

/// Device cgroup: deny everything, then allow the standard character devices runc creates,
/// as containerd's default spec does.
fn device_rules() -> Result<Vec<oci_spec::runtime::LinuxDeviceCgroup>, SpecError> {
    let rule = |allow: bool,
                typ: Option<LinuxDeviceType>,
                major: Option<i64>,
                minor: Option<i64>,
                access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access(access.to_string());
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build()
    };
    use LinuxDeviceType::C;
    Ok(vec![
        rule(false, None, None, None, "rwm")?,
        rule(true, Some(C), Some(1), Some(3), "rwm")?, // null
        rule(true, Some(C), Some(1), Some(5), "rwm")?, // zero
        rule(true, Some(C), Some(1), Some(7), "rwm")?, // full
        rule(true, Some(C), Some(1), Some(8), "rwm")?, // random
        rule(true, Some(C), Some(1), Some(9), "rwm")?, // urandom
        rule(true, Some(C), Some(5), Some(0), "rwm")?, // tty
        rule(true, Some(C), Some(5), Some(1), "rwm")?, // console
        rule(true, Some(C), Some(5), Some(2), "rwm")?, // ptmx
        rule(true, Some(C), Some(136), None, "rwm")?,  // pts
    ])
}

/// Every character and block device under the host's `/dev` (what docker hands a privileged
/// container), but for the folders runc mounts itself and the console.
fn host_devices() -> Result<Vec<LinuxDevice>, SpecError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    const SKIP: &[&str] = &[
        "pts",
        "shm",
        "fd",
        "mqueue",
        ".lxc",
        ".lxd-mounts",
        ".udev",
        "console",
    ];
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::from("/dev")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if dir == Path::new("/dev") && SKIP.iter().any(|s| name == *s) {
                continue;
            }
            // Not followed: a symlink's target is listed in its own right.
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            let ft = meta.file_type();
            let typ = if ft.is_dir() {
                dirs.push(e.path());
                continue;
            } else if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            let rdev = meta.rdev();
            out.push(
                LinuxDeviceBuilder::default()
                    .path(e.path())
                    .typ(typ)
                    .major(i64::from(nix::sys::stat::major(rdev) as u32))
                    .minor(i64::from(nix::sys::stat::minor(rdev) as u32))
                    .file_mode(meta.mode() & 0o7777)
                    .uid(meta.uid())
                    .gid(meta.gid())
                    .build()?,
            );
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

fn namespaces(
    mode: &NetworkMode,
    ctx: &SpecContext<'_>,
) -> Result<Vec<oci_spec::runtime::LinuxNamespace>, SpecError> {
    let ns = |typ: LinuxNamespaceType, path: Option<&Path>| {
        let b = LinuxNamespaceBuilder::default().typ(typ);
        match path {
            Some(p) => b.path(p.to_path_buf()).build(),
            None => b.build(),
        }
    };
    let mut out = vec![
        ns(LinuxNamespaceType::Pid, None)?,
        ns(LinuxNamespaceType::Ipc, None)?,
        ns(LinuxNamespaceType::Uts, None)?,
        ns(LinuxNamespaceType::Mount, None)?,
    ];
    if *mode != NetworkMode::Host {
        out.push(ns(LinuxNamespaceType::Network, ctx.netns_path)?);
    }
    if ctx.host.cgroup_v2 {
        out.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }
    Ok(out)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn mounts(agent: &Agent, ctx: &SpecContext<'_>) -> Result<Vec<Mount>, SpecError> {
    let spec = &agent.spec;
    // A privileged container may write to /sys and its cgroup, as docker's may.
    let sys_rw = if spec.security.privileged { "rw" } else { "ro" };
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
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
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_rw],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_rw],
        )?,
    ];
    let covered = |target: &str| spec.volumes.iter().any(|v| v.target == target);
    if spec.security.read_only_root_filesystem {
        if !covered("/tmp") {
            out.push(mount(
                "/tmp",
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "mode=1777"],
            )?);
        }
        if !covered("/run") {
            out.push(mount(
                "/run",
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "mode=755"],
            )?);
        }
    }
    // A user mount replaces the default at the same place (`--tmpfs /dev/shm:size=1g`), as
    // docker's does, instead of stacking on it.
    out.retain(|m| !covered(&m.destination().to_string_lossy()));
    // docker's order: by depth of the target, so `-v dir:/a/b -v vol:/a` shows dir at /a/b
    // (a stable sort keeps the flag order among equals).
    let mut user: Vec<(usize, &VolumeSpec)> = spec.volumes.iter().enumerate().collect();
    user.sort_by_key(|(_, v)| {
        Path::new(&v.target)
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .count()
    });
    for (i, v) in user {
        out.push(volume_mount(v, i, ctx)?);
    }
    out.extend(ctx.extra_mounts.iter().cloned());
    Ok(out)
}

/// Host folder of a named (or anonymous) volume.
pub fn volume_path(
    volumes_dir: &Path,
    v: &VolumeSpec,
    container_id: &str,
    index: usize,
) -> PathBuf {
    if v.source.is_empty() {
        volumes_dir.join(format!("{container_id}-{index}"))
    } else {
        volumes_dir.join(&v.source)
    }
}

fn volume_mount(v: &VolumeSpec, index: usize, ctx: &SpecContext<'_>) -> Result<Mount, SpecError> {
    let rw = if v.read_only { "ro" } else { "rw" };
    match v.kind {
        VolumeType::Tmpfs => {
            let mut opts = vec!["nosuid", "nodev", "noexec"];
            if v.read_only {
                opts.push("ro");
            }
            opts.extend(v.options.iter().map(String::as_str));
            mount(&v.target, "tmpfs", "tmpfs", &opts)
        }
        VolumeType::Bind | VolumeType::ConfigMap => {
            let ro = if v.kind == VolumeType::ConfigMap {
                "ro"
            } else {
                rw
            };
            let mut opts = vec!["rbind", ro];
            opts.extend(v.options.iter().map(String::as_str));
            mount(&v.target, "bind", &v.source, &opts)
        }
        VolumeType::Volume => {
            let src = volume_path(ctx.volumes_dir, v, ctx.container_id, index);
            let mut opts = vec!["rbind", rw];
            opts.extend(v.options.iter().map(String::as_str));
            mount(&v.target, "bind", &src.to_string_lossy(), &opts)
        }
    }
}

/// The spec as stable, pretty JSON: object keys sorted and capability sets in order, so the
/// same agent always gives the same bytes.
pub fn to_json(spec: &Spec) -> Result<String, serde_json::Error> {
    let mut v = serde_json::to_value(spec)?;
    if let Some(caps) = v
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    {
        for set in caps.values_mut() {
            if let Some(arr) = set.as_array_mut() {
                arr.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    serde_json::to_string_pretty(&v)
}
