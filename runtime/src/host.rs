//! What this host offers aac, and preparing it for rootless use.
//!
//! * [`HostReport::gather`] probes the host (`aac system check`): containerd, runc, cgroups and
//!   their delegation to the calling user, user namespaces and subordinate ids, seccomp, CNI
//!   plugins, `CAP_SYS_RESOURCE`, and which backend `--runtime auto` picks.
//! * [`setup_rootless`] (`aac system setup-rootless`, as root) gives a user what rootless runs
//!   need where systemd does not delegate: a chowned cgroup subtree (`aac-<user>`) and
//!   subuid/subgid ranges. [`rootless_cgroup_root`] finds that subtree for the process backend.
//! * The cgroup driver: with systemd as PID 1 on cgroup v2, containers get runc's systemd
//!   driver and a `slice:prefix:name` cgroups path; [`cgroup_fs_path`] maps that form to the
//!   directory runc creates (`/system.slice/aac-<id>.scope`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::cgroups::driver::{
    delegated_cgroup_root, owned_by, rootless_cgroup_root, rootless_subtree_name, subtree_dirs,
    CgroupDriver, CGROUP_MOUNT, SYSTEMD_SCOPE_PREFIX, V1_CONTROLLERS, V2_CONTROLLERS,
};
use crate::cgroups::{CgroupLayout, CgroupMode};
use crate::network::cni::PluginDirs;

use crate::io::io_err;

/// Size of the subuid/subgid range [`setup_rootless`] gives a user.
pub const SUBID_COUNT: u64 = 65_536;
/// Lowest id [`setup_rootless`] hands out (shadow's `SUB_UID_MIN` default).
pub const SUBID_MIN: u64 = 100_000;
/// The CNI plugins aac's networks use.
pub const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "portmap", "firewall"];
/// `(limit, controller)`: which controller enforces which limit.
const LIMITS: &[(&str, &str)] = &[
    ("memory limit", "memory"),
    ("cpu limit", "cpu"),
    ("pids limit", "pids"),
];

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    #[error("no such user {0:?}")]
    NoUser(String),
    #[error("looking up user {name:?}: {source}")]
    UserLookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("{0}")]
    NotRoot(&'static str),
    #[error("user {0:?} is root: root needs no rootless set-up")]
    RootUser(String),
    #[error("no free {file} range of {count} ids above {min}")]
    NoFreeRange {
        file: &'static str,
        count: u64,
        min: u64,
    },
    #[error("no cgroup filesystem is mounted")]
    NoCgroupFs,
    #[error("{path}: {reason}")]
    Cgroup { path: PathBuf, reason: String },
}

// ---------------------------------------------------------------------------------------------
// Subordinate ids

/// One line of /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdRange {
    /// User name or numeric uid, as written.
    pub owner: String,
    pub start: u64,
    pub count: u64,
}

/// Parse /etc/subuid-style text; malformed lines are skipped.
pub fn parse_subids(text: &str) -> Vec<IdRange> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let owner = f.next()?.to_string();
            let start = f.next()?.parse().ok()?;
            let count = f.next()?.parse().ok()?;
            (!owner.is_empty() && count > 0).then_some(IdRange {
                owner,
                start,
                count,
            })
        })
        .collect()
}

/// The ranges of user `name` (uid `uid`) in `ranges`.
pub fn ranges_of<'a>(ranges: &'a [IdRange], name: &str, uid: u32) -> Vec<&'a IdRange> {
    let uid = uid.to_string();
    ranges
        .iter()
        .filter(|r| r.owner == name || r.owner == uid)
        .collect()
}

/// The lowest start `>= min` of `count` ids that overlaps none of `ranges`.
pub fn free_range(ranges: &[IdRange], count: u64, min: u64) -> Option<u64> {
    let mut taken: Vec<(u64, u64)> = ranges
        .iter()
        .map(|r| (r.start, r.start.saturating_add(r.count)))
        .collect();
    taken.sort_unstable();
    let mut start = min;
    for (s, e) in taken {
        if e <= start {
            continue;
        }
        if s >= start.checked_add(count)? {
            break;
        }
        start = e;
    }
    // Keep clear of the top of the id space (u32::MAX is the invalid id).
    (start.checked_add(count)? <= u64::from(u32::MAX)).then_some(start)
}

fn read_subids(path: &Path) -> Result<(String, Vec<IdRange>), HostError> {
    match fs::read_to_string(path) {
        Ok(t) => {
            let r = parse_subids(&t);
            Ok((t, r))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((String::new(), Vec::new())),
        Err(e) => Err(io_err("reading", path)(e).into()),
    }
}

// ---------------------------------------------------------------------------------------------
// setup-rootless

/// What [`setup_rootless`] did: one sentence per change, empty when there was nothing to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SetupReport {
    pub user: String,
    pub uid: u32,
    pub changes: Vec<String>,
    /// Things the administrator still has to know (e.g. v2 placement of the user's sessions).
    pub notes: Vec<String>,
}

/// Files and directories [`setup_rootless`] works on; tests point them elsewhere.
#[derive(Debug, Clone)]
pub struct SetupPaths {
    pub subuid: PathBuf,
    pub subgid: PathBuf,
}

impl Default for SetupPaths {
    fn default() -> SetupPaths {
        SetupPaths {
            subuid: PathBuf::from("/etc/subuid"),
            subgid: PathBuf::from("/etc/subgid"),
        }
    }
}

/// As root, prepare what rootless runs of `user` need where systemd does not delegate:
/// a cgroup subtree `aac-<user>` chowned to the user (v1: in the memory, pids, cpu and cpuacct
/// hierarchies; v2: one directory with those controllers enabled for its children) and a
/// subuid and a subgid range of [`SUBID_COUNT`] ids when the user has none. Idempotent.
pub fn setup_rootless(user: &str, paths: &SetupPaths) -> Result<SetupReport, HostError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(HostError::NotRoot(
            "setup-rootless changes /etc/subuid, /etc/subgid and the cgroup tree: run it as root",
        ));
    }
    let pw = nix::unistd::User::from_name(user)
        .map_err(|source| HostError::UserLookup {
            name: user.to_string(),
            source,
        })?
        .ok_or_else(|| HostError::NoUser(user.to_string()))?;
    if pw.uid.is_root() {
        return Err(HostError::RootUser(user.to_string()));
    }
    let mut report = SetupReport {
        user: pw.name.clone(),
        uid: pw.uid.as_raw(),
        ..SetupReport::default()
    };
    setup_cgroups(&pw, &mut report)?;
    for (file, path) in [("subuid", &paths.subuid), ("subgid", &paths.subgid)] {
        add_subid_range(file, path, &pw.name, pw.uid.as_raw(), &mut report)?;
    }
    Ok(report)
}

fn add_subid_range(
    file: &'static str,
    path: &Path,
    name: &str,
    uid: u32,
    report: &mut SetupReport,
) -> Result<(), HostError> {
    let (text, ranges) = read_subids(path)?;
    if !ranges_of(&ranges, name, uid).is_empty() {
        return Ok(());
    }
    let start = free_range(&ranges, SUBID_COUNT, SUBID_MIN).ok_or(HostError::NoFreeRange {
        file,
        count: SUBID_COUNT,
        min: SUBID_MIN,
    })?;
    let mut line = String::new();
    if !text.is_empty() && !text.ends_with('\n') {
        line.push('\n');
    }
    line.push_str(&format!("{name}:{start}:{SUBID_COUNT}\n"));
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_err("opening", path))?;
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err("writing", path))?;
    report.changes.push(format!(
        "added {name}:{start}:{SUBID_COUNT} to {}",
        path.display()
    ));
    Ok(())
}

fn chown_to(path: &Path, pw: &nix::unistd::User) -> Result<bool, HostError> {
    let meta = fs::metadata(path).map_err(io_err("reading", path))?;
    if meta.uid() == pw.uid.as_raw() && meta.gid() == pw.gid.as_raw() {
        return Ok(false);
    }
    nix::unistd::chown(path, Some(pw.uid), Some(pw.gid)).map_err(|e| {
        HostError::Io(crate::io::IoError::new(
            "chown",
            path.to_path_buf(),
            e.into(),
        ))
    })?;
    Ok(true)
}

/// The controllers listed in a `cgroup.controllers`/`cgroup.subtree_control` file.
fn read_controllers(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Enable `ctrls` in `dir/cgroup.subtree_control` where they are not yet; returns those it
/// enabled.
fn enable_controllers(dir: &Path, ctrls: &[String]) -> Result<Vec<String>, HostError> {
    let file = dir.join("cgroup.subtree_control");
    let on = read_controllers(&file);
    let available = read_controllers(&dir.join("cgroup.controllers"));
    let mut enabled = Vec::new();
    for c in ctrls {
        if on.contains(c) || !available.contains(c) {
            continue;
        }
        fs::write(&file, format!("+{c}")).map_err(|e| HostError::Cgroup {
            path: file.clone(),
            reason: format!("enabling the {c} controller: {e}"),
        })?;
        enabled.push(c.clone());
    }
    Ok(enabled)
}

fn setup_cgroups(pw: &nix::unistd::User, report: &mut SetupReport) -> Result<(), HostError> {
    let layout = CgroupLayout::detect().map_err(|_| HostError::NoCgroupFs)?;
    let unified = layout.mode() == CgroupMode::Unified;
    // Files a delegatee must own: v1 to move processes in, v2 also to enable controllers.
    let owned_files: &[&str] = if unified {
        &["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"]
    } else {
        &["cgroup.procs", "tasks"]
    };
    for (ctrls, dir) in subtree_dirs(&layout, &pw.name) {
        if unified {
            // The parent must hand the controllers down before the subtree can use them.
            let parent = dir.parent().unwrap_or(Path::new(CGROUP_MOUNT));
            let wanted: Vec<String> = V2_CONTROLLERS.iter().map(|s| s.to_string()).collect();
            let enabled = enable_controllers(parent, &wanted)?;
            if !enabled.is_empty() {
                report.changes.push(format!(
                    "enabled {} in {}",
                    enabled.join(" "),
                    parent.join("cgroup.subtree_control").display()
                ));
            }
        }
        if !dir.is_dir() {
            fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
            report.changes.push(format!(
                "created cgroup {} ({})",
                dir.display(),
                ctrls.join(",")
            ));
        }
        if unified {
            let enabled = enable_controllers(&dir, &ctrls)?;
            if !enabled.is_empty() {
                report.changes.push(format!(
                    "enabled {} in {}",
                    enabled.join(" "),
                    dir.join("cgroup.subtree_control").display()
                ));
            }
        }
        let mut chowned = chown_to(&dir, pw)?;
        for f in owned_files {
            let p = dir.join(f);
            if p.exists() {
                chowned |= chown_to(&p, pw)?;
            }
        }
        if chowned {
            report.changes.push(format!(
                "gave {} (and its {}) to {}",
                dir.display(),
                owned_files.join(", "),
                pw.name
            ));
        }
    }
    if unified {
        report.notes.push(format!(
            "cgroup v2 lets {user} move processes only inside a subtree it owns: start \
             {user}'s sessions in /{name} (as root: echo PID > {mount}/{name}/cgroup.procs of a \
             leaf below it), or use systemd's delegation (user@.service with Delegate=yes)",
            user = pw.name,
            name = rootless_subtree_name(&pw.name),
            mount = CGROUP_MOUNT
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The host report

/// How a finding affects aac.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// Works, with something less than full.
    Warn,
    /// Missing; aac works around it or the feature is unavailable.
    Missing,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub item: String,
    pub level: Level,
    pub state: String,
    /// What aac does about it.
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerdInfo {
    pub address: PathBuf,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A rootless containerd under RootlessKit: the pid whose namespaces aac joins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootlesskit_pid: Option<i32>,
}

impl ContainerdInfo {
    /// Connect to containerd at `address` and ask its version.
    pub async fn probe(address: &Path, namespace: &str) -> ContainerdInfo {
        let result = async {
            let client = crate::containerd::Client::connect(address, namespace).await?;
            client.version().await
        }
        .await;
        let rootlesskit_pid = (crate::rootlesskit::user_containerd_socket().as_deref()
            == Some(address))
        .then(|| crate::rootlesskit::Rootlesskit::find().ok().flatten())
        .flatten()
        .map(|k| k.child_pid);
        match result {
            Ok(v) => ContainerdInfo {
                address: address.to_path_buf(),
                reachable: true,
                version: Some(v),
                error: None,
                rootlesskit_pid,
            },
            Err(e) => ContainerdInfo {
                address: address.to_path_buf(),
                reachable: false,
                version: None,
                error: Some(e.to_string()),
                rootlesskit_pid,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuncInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupInfo {
    pub mode: CgroupMode,
    /// The driver aac's containerd backend uses.
    pub driver: CgroupDriver,
    /// Controllers the host has (v1: mounted hierarchies; v2: the root's cgroup.controllers).
    pub controllers: Vec<String>,
    /// Controllers the calling user can limit (all for root).
    pub usable_controllers: Vec<String>,
    /// A non-root user's systemd delegation (v2: `user@<uid>.service`), when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemd_delegation: Option<Delegation>,
    /// The subtree `aac system setup-rootless` made for the user, when it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootless_subtree: Option<Delegation>,
    /// Where the process backend puts this user's containers (`None`: the hierarchy root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_cgroup_root: Option<PathBuf>,
    /// Limits the process backend would not enforce for this user.
    pub not_enforced: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delegation {
    /// Directory (v2) or directories (v1, one per hierarchy).
    pub paths: Vec<PathBuf>,
    /// Whether the user owns them.
    pub writable: bool,
    /// Controllers usable below it (v2: its cgroup.subtree_control or, when it may enable
    /// them, cgroup.controllers; v1: the hierarchies where the user owns the directory).
    pub controllers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserNsInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_user_namespaces: Option<u64>,
    /// `kernel.unprivileged_userns_clone`, on kernels that have it (Debian's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unprivileged_userns_clone: Option<bool>,
    pub subuid: Vec<IdRange>,
    pub subgid: Vec<IdRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeccompInfo {
    /// The kernel reports a `Seccomp:` field in /proc/self/status.
    pub supported: bool,
    /// /proc/sys/kernel/seccomp/actions_avail.
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniInfo {
    pub path: Vec<PathBuf>,
    /// Plugin name to where it was found.
    pub found: BTreeMap<String, PathBuf>,
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceInfo {
    pub cap_sys_resource: bool,
    pub nofile_hard: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoBackend {
    pub backend: crate::record::Backend,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    pub uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub root: bool,
}

/// Everything `aac system check` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostReport {
    pub user: UserInfo,
    pub containerd: ContainerdInfo,
    pub runc: RuncInfo,
    pub cgroup: CgroupInfo,
    pub user_namespaces: UserNsInfo,
    pub seccomp: SeccompInfo,
    pub cni: CniInfo,
    pub resources: ResourceInfo,
    pub auto_backend: AutoBackend,
    /// The report as lines: item, state, what aac does.
    pub items: Vec<Item>,
}

fn read_trim(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// `name` on `$PATH` or in the sbin directories containerd's PATH usually has.
fn find_executable(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|d| d.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn probe_runc() -> RuncInfo {
    let path = find_executable("runc");
    let version = path.as_ref().and_then(|p| {
        let out = Command::new(p).arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let first = text.lines().next()?.trim().to_string();
        Some(
            first
                .strip_prefix("runc version ")
                .unwrap_or(&first)
                .to_string(),
        )
    });
    RuncInfo { path, version }
}

fn v2_root_controllers(layout: &CgroupLayout) -> Vec<String> {
    layout
        .unified_mount()
        .map(|m| read_controllers(&m.join("cgroup.controllers")))
        .unwrap_or_default()
}

fn probe_cgroups(uid: u32, name: Option<&str>) -> CgroupInfo {
    let layout = CgroupLayout::detect().ok();
    let mode = layout
        .as_ref()
        .map(CgroupLayout::mode)
        .unwrap_or(CgroupMode::Legacy);
    let driver = CgroupDriver::detect();
    let unified = mode == CgroupMode::Unified;
    let controllers: Vec<String> = match &layout {
        Some(l) if unified => v2_root_controllers(l),
        Some(l) => l.v1_controllers(),
        None => Vec::new(),
    };
    let wanted: &[&str] = if unified {
        V2_CONTROLLERS
    } else {
        V1_CONTROLLERS
    };
    let mut info = CgroupInfo {
        mode,
        driver,
        controllers: controllers.clone(),
        usable_controllers: Vec::new(),
        systemd_delegation: None,
        rootless_subtree: None,
        process_cgroup_root: None,
        not_enforced: Vec::new(),
    };
    if uid == 0 {
        info.usable_controllers = wanted
            .iter()
            .filter(|c| controllers.iter().any(|h| h == *c))
            .map(|c| c.to_string())
            .collect();
    } else {
        if unified {
            let base = layout
                .as_ref()
                .and_then(|l| l.unified_mount().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from(CGROUP_MOUNT));
            let svc = base.join(format!("user.slice/user-{uid}.slice/user@{uid}.service"));
            if svc.is_dir() {
                let writable = owned_by(&svc, uid);
                let mut ctrls = read_controllers(&svc.join("cgroup.subtree_control"));
                if writable {
                    // The owner can enable what its parent hands down.
                    for c in read_controllers(&svc.join("cgroup.controllers")) {
                        if !ctrls.contains(&c) {
                            ctrls.push(c);
                        }
                    }
                }
                info.systemd_delegation = Some(Delegation {
                    paths: vec![svc],
                    writable,
                    controllers: ctrls,
                });
            }
        }
        if let (Some(l), Some(name)) = (&layout, name) {
            let dirs = subtree_dirs(l, name);
            let present: Vec<&(Vec<String>, PathBuf)> =
                dirs.iter().filter(|(_, d)| d.is_dir()).collect();
            if !present.is_empty() {
                let writable = present.iter().any(|(_, d)| owned_by(d, uid));
                let ctrls: Vec<String> = if unified {
                    present
                        .iter()
                        .filter(|(_, d)| owned_by(d, uid))
                        .flat_map(|(_, d)| read_controllers(&d.join("cgroup.subtree_control")))
                        .collect()
                } else {
                    present
                        .iter()
                        .filter(|(_, d)| owned_by(d, uid))
                        .flat_map(|(c, _)| c.clone())
                        .collect()
                };
                info.rootless_subtree = Some(Delegation {
                    paths: present.iter().map(|(_, d)| d.clone()).collect(),
                    writable,
                    controllers: ctrls,
                });
            }
        }
        // What the process backend uses: the aac subtree, else a delegated subtree it runs in
        // (systemd's delegation counts only when started inside it, e.g. a user scope).
        let delegated = (uid == nix::unistd::geteuid().as_raw())
            .then(|| delegated_cgroup_root(uid))
            .flatten();
        let subtree_root = rootless_cgroup_root(uid);
        info.usable_controllers = match (&subtree_root, &info.rootless_subtree) {
            (Some(_), Some(d)) => d.controllers.clone(),
            _ => match (&delegated, &layout) {
                (Some(r), Some(l)) => l
                    .unified_dir(&r.to_string_lossy())
                    .ok()
                    .flatten()
                    .map(|d| {
                        read_controllers(&d.join("cgroup.controllers"))
                            .into_iter()
                            .filter(|c| V2_CONTROLLERS.contains(&c.as_str()))
                            .collect()
                    })
                    .unwrap_or_default(),
                _ => Vec::new(),
            },
        };
        info.process_cgroup_root = subtree_root.or(delegated);
    }
    info.not_enforced = LIMITS
        .iter()
        .filter(|(_, c)| !info.usable_controllers.iter().any(|u| u == c))
        .map(|(l, _)| l.to_string())
        .collect();
    info
}

fn probe_userns(uid: u32, name: Option<&str>) -> UserNsInfo {
    let max_user_namespaces =
        read_trim("/proc/sys/user/max_user_namespaces").and_then(|s| s.parse().ok());
    let unprivileged_userns_clone =
        read_trim("/proc/sys/kernel/unprivileged_userns_clone").map(|s| s != "0");
    let mine = |path: &str| -> Vec<IdRange> {
        let (_, all) = read_subids(Path::new(path)).unwrap_or_default();
        ranges_of(&all, name.unwrap_or(""), uid)
            .into_iter()
            .cloned()
            .collect()
    };
    UserNsInfo {
        max_user_namespaces,
        unprivileged_userns_clone,
        subuid: mine("/etc/subuid"),
        subgid: mine("/etc/subgid"),
    }
}

fn probe_seccomp() -> SeccompInfo {
    let supported = fs::read_to_string("/proc/self/status")
        .map(|t| t.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false);
    let actions = read_trim("/proc/sys/kernel/seccomp/actions_avail")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    SeccompInfo { supported, actions }
}

fn probe_cni() -> CniInfo {
    let dirs = PluginDirs::from_env();
    let mut found = BTreeMap::new();
    let mut missing = Vec::new();
    for p in CNI_PLUGINS {
        match dirs.find(p) {
            Ok(path) => {
                found.insert(p.to_string(), path);
            }
            Err(_) => missing.push(p.to_string()),
        }
    }
    CniInfo {
        path: dirs.0,
        found,
        missing,
    }
}

fn probe_resources() -> ResourceInfo {
    let cap_sys_resource = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    let nofile_hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(0);
    ResourceInfo {
        cap_sys_resource,
        nofile_hard,
    }
}

impl HostReport {
    /// Probe everything but containerd, which the caller probed (see [`ContainerdInfo::probe`])
    /// at the address aac would use.
    pub fn gather(containerd: ContainerdInfo) -> HostReport {
        let euid = nix::unistd::geteuid();
        let uid = euid.as_raw();
        let name = nix::unistd::User::from_uid(euid)
            .ok()
            .flatten()
            .map(|u| u.name);
        let user = UserInfo {
            uid,
            name: name.clone(),
            root: uid == 0,
        };
        let auto_backend = if containerd.reachable {
            AutoBackend {
                backend: crate::record::Backend::Containerd,
                reason: format!("containerd answers at {}", containerd.address.display()),
            }
        } else {
            AutoBackend {
                backend: crate::record::Backend::Process,
                reason: format!(
                    "containerd does not answer at {}",
                    containerd.address.display()
                ),
            }
        };
        let mut report = HostReport {
            user,
            containerd,
            runc: probe_runc(),
            cgroup: probe_cgroups(uid, name.as_deref()),
            user_namespaces: probe_userns(uid, name.as_deref()),
            seccomp: probe_seccomp(),
            cni: probe_cni(),
            resources: probe_resources(),
            auto_backend,
            items: Vec::new(),
        };
        report.items = report.lines();
        report
    }

    fn lines(&self) -> Vec<Item> {
        let mut out = Vec::new();
        let mut push = |item: &str, level: Level, state: String, action: String| {
            out.push(Item {
                item: item.to_string(),
                level,
                state,
                action,
            })
        };
        let c = &self.containerd;
        if c.reachable {
            push(
                "containerd",
                Level::Ok,
                format!(
                    "reachable at {}, version {}{}",
                    c.address.display(),
                    c.version.as_deref().unwrap_or("?"),
                    match c.rootlesskit_pid {
                        Some(pid) => format!(", rootless (RootlessKit, child {pid})"),
                        None => String::new(),
                    }
                ),
                match c.rootlesskit_pid {
                    Some(_) => "the containerd backend is available; aac joins RootlessKit's \
                                namespaces and publishes ports through its API"
                        .into(),
                    None => "the containerd backend is available".into(),
                },
            );
        } else {
            push(
                "containerd",
                Level::Missing,
                format!(
                    "not reachable at {}: {}",
                    c.address.display(),
                    c.error.as_deref().unwrap_or("no answer")
                ),
                "--runtime auto uses the process backend; --runtime containerd fails".into(),
            );
        }
        match (&self.runc.path, &self.runc.version) {
            (Some(p), v) => push(
                "runc",
                Level::Ok,
                format!(
                    "{} ({})",
                    p.display(),
                    v.as_deref().unwrap_or("version unknown")
                ),
                "containerd's runc v2 shim runs containers with it".into(),
            ),
            (None, _) => push(
                "runc",
                Level::Missing,
                "not found on PATH".into(),
                "the containerd backend cannot start containers".into(),
            ),
        }
        let cg = &self.cgroup;
        let mode = match cg.mode {
            CgroupMode::Legacy => "v1",
            CgroupMode::Hybrid => "hybrid (v1 controllers + empty cgroup2)",
            CgroupMode::Unified => "v2",
        };
        push(
            "cgroups",
            Level::Ok,
            format!("{mode}; controllers: {}", cg.controllers.join(" ")),
            match &cg.driver {
                CgroupDriver::Cgroupfs => {
                    "containers get cgroup /aac/<id> (runc's cgroupfs driver)".to_string()
                }
                CgroupDriver::Systemd { slice } => format!(
                    "systemd is PID 1: containerd containers use runc's systemd driver \
                     ({slice}:{SYSTEMD_SCOPE_PREFIX}:<id>, a scope {SYSTEMD_SCOPE_PREFIX}-<id>.scope)"
                ),
            },
        );
        if self.user.root {
            push(
                "cgroup delegation",
                Level::Ok,
                "running as root: the whole tree is writable".into(),
                "every limit is enforced".into(),
            );
        } else {
            let mut state = Vec::new();
            if let Some(d) = &cg.systemd_delegation {
                state.push(format!(
                    "systemd: {} {} [{}]",
                    d.paths
                        .first()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    if d.writable {
                        "writable"
                    } else {
                        "not writable"
                    },
                    d.controllers.join(" ")
                ));
            }
            if let Some(d) = &cg.rootless_subtree {
                state.push(format!(
                    "aac subtree: {} {} [{}]",
                    d.paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if d.writable {
                        "writable"
                    } else {
                        "not writable"
                    },
                    d.controllers.join(" ")
                ));
            }
            if state.is_empty() {
                state.push("no delegated subtree for this user".into());
            }
            let action = match &cg.process_cgroup_root {
                Some(r) => format!("the process backend puts containers under {}", r.display()),
                None if cg.systemd_delegation.as_ref().is_some_and(|d| d.writable) => {
                    "not running inside it: start aac in a delegated scope of your systemd \
                     (`systemd-run --user --scope -p Delegate=yes aac ...`) for the process \
                     backend's limits"
                        .to_string()
                }
                None => "the process backend cannot create cgroups (run `aac system setup-rootless --user NAME` as root, or use systemd delegation)".to_string(),
            };
            let level = if cg.not_enforced.is_empty() {
                Level::Ok
            } else {
                Level::Warn
            };
            push("cgroup delegation", level, state.join("; "), action);
        }
        if !cg.not_enforced.is_empty() {
            push(
                "limits",
                Level::Warn,
                format!("not enforceable: {}", cg.not_enforced.join(", ")),
                "the process backend runs without them and warns (NotEnforced)".into(),
            );
        }
        let u = &self.user_namespaces;
        let userns_off =
            u.max_user_namespaces == Some(0) || u.unprivileged_userns_clone == Some(false);
        push(
            "user namespaces",
            if userns_off {
                Level::Missing
            } else {
                Level::Ok
            },
            format!(
                "max_user_namespaces={}{}",
                u.max_user_namespaces
                    .map_or("?".to_string(), |v| v.to_string()),
                u.unprivileged_userns_clone
                    .map_or(String::new(), |v| format!(
                        ", unprivileged_userns_clone={}",
                        u8::from(v)
                    ))
            ),
            if userns_off {
                "rootless runs are impossible".into()
            } else {
                "rootless runs map the user to root in a user namespace".into()
            },
        );
        let fmt_ranges = |r: &[IdRange]| {
            r.iter()
                .map(|r| format!("{}:{}", r.start, r.count))
                .collect::<Vec<_>>()
                .join(",")
        };
        let has_ranges = !u.subuid.is_empty() && !u.subgid.is_empty();
        push(
            "subuid/subgid",
            if has_ranges || self.user.root {
                Level::Ok
            } else {
                Level::Warn
            },
            format!(
                "subuid [{}], subgid [{}]",
                fmt_ranges(&u.subuid),
                fmt_ranges(&u.subgid)
            ),
            if self.user.root {
                "not needed as root".into()
            } else if has_ranges {
                "rootless runs map these ranges (newuidmap/newgidmap)".into()
            } else {
                "only the user's own id is mapped; add ranges with `aac system setup-rootless`"
                    .into()
            },
        );
        let s = &self.seccomp;
        push(
            "seccomp",
            if s.supported {
                Level::Ok
            } else {
                Level::Missing
            },
            format!(
                "{}; actions: {}",
                if s.supported {
                    "supported"
                } else {
                    "not supported"
                },
                s.actions.join(" ")
            ),
            if s.supported {
                "containers get the default seccomp profile".into()
            } else {
                "containers run without seccomp filtering".into()
            },
        );
        let n = &self.cni;
        push(
            "CNI plugins",
            if n.missing.is_empty() {
                Level::Ok
            } else {
                Level::Missing
            },
            format!(
                "in {}: found {}{}",
                n.path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
                n.found.keys().cloned().collect::<Vec<_>>().join(" "),
                if n.missing.is_empty() {
                    String::new()
                } else {
                    format!("; missing {}", n.missing.join(" "))
                }
            ),
            if n.missing.is_empty() {
                "bridge networks and published ports work".into()
            } else {
                "bridge networks need the missing plugins (set AAC_CNI_PATH); --network host and none work".into()
            },
        );
        let r = &self.resources;
        push(
            "CAP_SYS_RESOURCE",
            if r.cap_sys_resource {
                Level::Ok
            } else {
                Level::Warn
            },
            format!(
                "{}; nofile hard limit {}",
                if r.cap_sys_resource {
                    "available"
                } else {
                    "not available"
                },
                r.nofile_hard
            ),
            format!(
                "containers get RLIMIT_NOFILE {}",
                crate::spec::builder::DEFAULT_NOFILE.min(r.nofile_hard)
            ),
        );
        push(
            "--runtime auto",
            Level::Ok,
            self.auto_backend.backend.to_string(),
            self.auto_backend.reason.clone(),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::driver::{cgroup_fs_path_for, is_systemd_cgroups_path};

    #[test]
    fn systemd_paths_map_to_scopes() {
        assert_eq!(
            cgroup_fs_path_for("system.slice:aac:abc", 0).as_deref(),
            Some("/system.slice/aac-abc.scope")
        );
        assert_eq!(
            cgroup_fs_path_for("user.slice:aac:abc", 1000).as_deref(),
            Some("/user.slice/user-1000.slice/user@1000.service/user.slice/aac-abc.scope")
        );
        assert_eq!(
            cgroup_fs_path_for("machine-aac.slice:aac:x", 0).as_deref(),
            Some("/machine.slice/machine-aac.slice/aac-x.scope")
        );
        assert_eq!(
            cgroup_fs_path_for(":aac:x", 0).as_deref(),
            Some("/system.slice/aac-x.scope")
        );
        assert_eq!(
            cgroup_fs_path_for("system.slice::x", 0).as_deref(),
            Some("/system.slice/x.scope")
        );
        assert_eq!(cgroup_fs_path_for("/aac/x", 0).as_deref(), Some("/aac/x"));
        assert_eq!(cgroup_fs_path_for("nonsense:aac:x", 0), None);
        assert_eq!(cgroup_fs_path_for("system.slice:aac:a/b", 0), None);
        assert_eq!(cgroup_fs_path_for("-bad.slice:aac:x", 0), None);
    }

    #[test]
    fn drivers_make_their_cgroups_paths() {
        let sd = CgroupDriver::Systemd {
            slice: "system.slice".into(),
        };
        assert_eq!(sd.cgroups_path("aac", "c1"), "system.slice:aac:c1");
        assert!(is_systemd_cgroups_path(&sd.cgroups_path("aac", "c1")));
        assert_eq!(CgroupDriver::Cgroupfs.cgroups_path("aac", "c1"), "/aac/c1");
        assert!(!is_systemd_cgroups_path("/aac/c1"));
        // The mapping of the driver's own path is where runc puts the scope.
        assert_eq!(
            cgroup_fs_path_for(&sd.cgroups_path("aac", "c1"), 0).as_deref(),
            Some("/system.slice/aac-c1.scope")
        );
    }

    #[test]
    fn subids_parse_and_free_ranges_do_not_overlap() {
        let r = parse_subids("alice:100000:65536\n# c\n\nbad\n1001:165536:65536\nx:1:0\n");
        assert_eq!(r.len(), 2);
        assert_eq!(ranges_of(&r, "alice", 1000).len(), 1);
        assert_eq!(ranges_of(&r, "bob", 1001).len(), 1);
        assert_eq!(free_range(&r, 65_536, 100_000), Some(231_072));
        assert_eq!(free_range(&[], 65_536, 100_000), Some(100_000));
        // A gap large enough is used; a too small one is not.
        let r = parse_subids("a:100000:10\nb:300000:10\n");
        assert_eq!(free_range(&r, 65_536, 100_000), Some(100_010));
        let r = parse_subids("a:100000:10\nb:150000:10\n");
        assert_eq!(free_range(&r, 65_536, 100_000), Some(150_010));
        let r = parse_subids("a:100000:4294867295\n");
        assert_eq!(free_range(&r, 65_536, 100_000), None);
    }

    #[test]
    fn report_lines_cover_every_item() {
        let r = HostReport::gather(ContainerdInfo {
            address: PathBuf::from("/nonexistent.sock"),
            reachable: false,
            version: None,
            error: Some("no".into()),
            rootlesskit_pid: None,
        });
        let items: Vec<&str> = r.items.iter().map(|i| i.item.as_str()).collect();
        for want in [
            "containerd",
            "runc",
            "cgroups",
            "cgroup delegation",
            "user namespaces",
            "subuid/subgid",
            "seccomp",
            "CNI plugins",
            "CAP_SYS_RESOURCE",
            "--runtime auto",
        ] {
            assert!(items.contains(&want), "{want} missing from {items:?}");
        }
        assert_eq!(r.auto_backend.backend, crate::record::Backend::Process);
    }
}
