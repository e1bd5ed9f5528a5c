//! Who manages a container's cgroup and where it goes: runc's cgroupfs or systemd driver, and
//! for rootless runs the subtree delegated to the user (by systemd or by
//! `aac system setup-rootless`).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CgroupLayout, CgroupMode};

/// Where cgroup filesystems live.
pub const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
/// Overrides the cgroup driver detection: `systemd` or `cgroupfs`.
pub const CGROUP_DRIVER_ENV: &str = "AAC_CGROUP_DRIVER";
/// The prefix of container scopes under the systemd driver (`aac-<id>.scope`).
pub const SYSTEMD_SCOPE_PREFIX: &str = "aac";
/// v1 controllers the process backend uses (cpu and cpuacct may share one hierarchy).
pub(crate) const V1_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "cpuacct", "freezer"];
/// v2 controllers the process backend enables.
pub(crate) const V2_CONTROLLERS: &[&str] = &["memory", "pids", "cpu"];

/// How containerd's runc manages container cgroups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "driver")]
pub enum CgroupDriver {
    /// runc writes the cgroup tree itself; cgroups path `/aac/<id>`.
    Cgroupfs,
    /// runc asks systemd for a transient scope `aac-<id>.scope` in `slice`.
    Systemd { slice: String },
}

impl CgroupDriver {
    /// systemd's driver when root runs on a host with systemd as PID 1 (`/run/systemd/system`)
    /// and pure cgroup v2, else cgroupfs. Rootless runs keep cgroupfs unless asked: runc's
    /// systemd driver would have to reach the user's systemd from inside rootlesskit.
    /// `AAC_CGROUP_DRIVER=systemd|cgroupfs` overrides the detection; the slice is
    /// `system.slice` for root and `user.slice` (of the user's systemd instance) otherwise.
    pub fn detect() -> CgroupDriver {
        let root = crate::rootlesskit::is_real_root();
        let unified_systemd = Path::new("/run/systemd/system").is_dir()
            && Path::new(CGROUP_MOUNT).join("cgroup.controllers").exists();
        let systemd = match std::env::var(CGROUP_DRIVER_ENV).as_deref() {
            Ok("systemd") => true,
            Ok("cgroupfs") => false,
            // Inside RootlessKit (rootless containerd) runc reaches the user's systemd
            // instance on its session bus, as with containerd-rootless.sh's systemd driver.
            _ if crate::rootlesskit::entered_uid().is_some() => {
                unified_systemd && user_bus_exists()
            }
            _ => root && unified_systemd,
        };
        if systemd {
            let slice = if root { "system.slice" } else { "user.slice" };
            CgroupDriver::Systemd {
                slice: slice.to_string(),
            }
        } else {
            CgroupDriver::Cgroupfs
        }
    }

    /// `linux.cgroupsPath` of container `id` under this driver.
    pub fn cgroups_path(&self, parent: &str, id: &str) -> String {
        match self {
            CgroupDriver::Cgroupfs => format!("/{parent}/{id}"),
            CgroupDriver::Systemd { slice } => format!("{slice}:{SYSTEMD_SCOPE_PREFIX}:{id}"),
        }
    }

    pub fn is_systemd(&self) -> bool {
        matches!(self, CgroupDriver::Systemd { .. })
    }
}

/// Whether the user's systemd instance has a session bus (`$DBUS_SESSION_BUS_ADDRESS`, else
/// `$XDG_RUNTIME_DIR/bus`).
fn user_bus_exists() -> bool {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| Path::new(&d).join("bus").exists())
        .unwrap_or(false)
}

/// Whether `cgroups_path` has runc's systemd form `slice:prefix:name`.
pub fn is_systemd_cgroups_path(cgroups_path: &str) -> bool {
    !cgroups_path.starts_with('/') && cgroups_path.split(':').count() == 3
}

/// systemd's slice nesting: `a-b-c.slice` lives in `/a.slice/a-b.slice/a-b-c.slice`;
/// `-.slice` is the root. `None` for a name that is not a valid slice.
fn expand_slice(slice: &str) -> Option<String> {
    let name = slice.strip_suffix(".slice")?;
    if name == "-" {
        return Some(String::new());
    }
    if name.is_empty()
        || name.contains('/')
        || name.starts_with('-')
        || name.ends_with('-')
        || name.contains("--")
    {
        return None;
    }
    let mut out = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push('/');
        out.push_str(&prefix);
        out.push_str(".slice");
    }
    Some(out)
}

/// The cgroup directory (relative to the cgroup2 mount, with a leading `/`) of a cgroups path
/// as runc's systemd driver lays it out for user `uid`: `system.slice:aac:<id>` is
/// `/system.slice/aac-<id>.scope`; a rootless user's slices live inside its systemd
/// instance (`/user.slice/user-<uid>.slice/user@<uid>.service/...`). A path in the plain
/// `/a/b` form is returned unchanged; `None` for a malformed systemd form.
pub fn cgroup_fs_path_for(cgroups_path: &str, uid: u32) -> Option<String> {
    if !is_systemd_cgroups_path(cgroups_path) {
        return Some(cgroups_path.to_string());
    }
    let mut parts = cgroups_path.splitn(3, ':');
    let (slice, prefix, name) = (parts.next()?, parts.next()?, parts.next()?);
    if name.is_empty() || name.contains('/') || prefix.contains('/') || name == ".." {
        return None;
    }
    let slice = if slice.is_empty() {
        if uid == 0 {
            "system.slice"
        } else {
            "user.slice"
        }
    } else {
        slice
    };
    let slice_dir = expand_slice(slice)?;
    // runc: a name ending in ".slice" is a slice itself, else the scope `prefix-name.scope`.
    let unit = if name.ends_with(".slice") {
        expand_slice(name)?.rsplit('/').next()?.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    let manager = if uid == 0 {
        String::new()
    } else {
        format!("/user.slice/user-{uid}.slice/user@{uid}.service")
    };
    Some(format!("{manager}{slice_dir}/{unit}"))
}

/// [`cgroup_fs_path_for`] for the calling user.
pub fn cgroup_fs_path(cgroups_path: &str) -> Option<String> {
    cgroup_fs_path_for(cgroups_path, crate::rootlesskit::host_uid())
}

/// Name of the subtree [`setup_rootless`] makes for `user`, under each hierarchy's root.
pub fn rootless_subtree_name(user: &str) -> String {
    format!("aac-{user}")
}

/// The directories of `user`'s subtree: one per v1 hierarchy of the process backend's
/// controllers (deduplicated), or the one v2 directory.
pub(crate) fn subtree_dirs(layout: &CgroupLayout, user: &str) -> Vec<(Vec<String>, PathBuf)> {
    let name = rootless_subtree_name(user);
    if layout.mode() == CgroupMode::Unified {
        let mount = layout
            .unified_mount()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(CGROUP_MOUNT));
        return vec![(
            V2_CONTROLLERS.iter().map(|s| s.to_string()).collect(),
            mount.join(name),
        )];
    }
    let mut out: Vec<(Vec<String>, PathBuf)> = Vec::new();
    for ctrl in V1_CONTROLLERS {
        let Some(mount) = layout.v1_mount(ctrl) else {
            continue;
        };
        let dir = mount.join(&name);
        match out.iter_mut().find(|(_, d)| *d == dir) {
            Some((ctrls, _)) => ctrls.push(ctrl.to_string()),
            None => out.push((vec![ctrl.to_string()], dir)),
        }
    }
    out
}

pub(crate) fn owned_by(path: &Path, uid: u32) -> bool {
    fs::metadata(path)
        .map(|m| m.is_dir() && m.uid() == uid)
        .unwrap_or(false)
}

/// The cgroup the calling process is in on the unified hierarchy (`0::/path`).
pub(crate) fn own_unified_cgroup() -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// The cgroup root (relative to each hierarchy's root, e.g. `/aac-alice`) where the process
/// backend puts the containers of user `uid`, when `aac system setup-rootless` made one for
/// them: on v1 the subtree must exist and belong to the user in at least one of the
/// controllers; on v2 it must belong to the user and the caller must already run inside it
/// (v2 lets a user move processes only between cgroups below a common ancestor it owns).
/// `None` for root, for an unknown uid, or when there is no such subtree.
pub fn rootless_cgroup_root(uid: u32) -> Option<PathBuf> {
    if uid == 0 {
        return None;
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()?;
    let layout = CgroupLayout::detect().ok()?;
    let name = rootless_subtree_name(&user.name);
    let dirs = subtree_dirs(&layout, &user.name);
    if !dirs.iter().any(|(_, d)| owned_by(d, uid)) {
        return None;
    }
    if layout.mode() == CgroupMode::Unified {
        let own = own_unified_cgroup()?;
        let inside = own == format!("/{name}") || own.starts_with(&format!("/{name}/"));
        if !inside {
            tracing::debug!(cgroup = %own, subtree = %name, "not running inside the rootless cgroup subtree");
            return None;
        }
    }
    Some(PathBuf::from(format!("/{name}")))
}

/// A cgroup v2 subtree delegated to `uid` (by systemd, or by hand) that holds the caller: the
/// highest cgroup between the root and the caller's own that `uid` owns and that has no
/// processes of its own, so controllers can be enabled below it. Started inside a scope of the
/// user's systemd instance (`systemd-run --user --scope`), that is
/// `/user.slice/user-<uid>.slice/user@<uid>.service`. Moving a process between two cgroups
/// needs write access to their common ancestor, which this root is for the caller's cgroup
/// and any cgroup made below it. `None` for root, on v1/hybrid, or when no such cgroup exists
/// (an ssh session's scope belongs to root: nothing above it is the user's).
pub fn delegated_cgroup_root(uid: u32) -> Option<PathBuf> {
    if uid == 0 {
        return None;
    }
    let layout = CgroupLayout::detect().ok()?;
    if layout.mode() != CgroupMode::Unified {
        return None;
    }
    let base = layout
        .unified_mount()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(CGROUP_MOUNT));
    let own = own_unified_cgroup()?;
    let mut rel = PathBuf::from("/");
    for part in own.split('/').filter(|p| !p.is_empty()) {
        rel.push(part);
        let dir = base.join(rel.strip_prefix("/").ok()?);
        let empty = fs::read_to_string(dir.join("cgroup.procs"))
            .map(|t| t.trim().is_empty())
            .unwrap_or(false);
        let writable = nix::unistd::access(
            &dir.join("cgroup.subtree_control"),
            nix::unistd::AccessFlags::W_OK,
        )
        .is_ok();
        if owned_by(&dir, uid) && empty && writable {
            return Some(rel);
        }
    }
    None
}

/// The cgroup root (the part of the tree the spec's `linux.cgroupsPath` goes under) for runs
/// by this user: `$AAC_CGROUP_ROOT` when set; `/` for root; for other users the subtree
/// `aac system setup-rootless` made, else the top of a delegated v2 subtree they run in, else
/// the cgroup they are in when it is writable by them, else `/` (where creating fails and the
/// limits are reported as not enforced).
pub fn default_cgroup_root() -> PathBuf {
    if let Some(v) = std::env::var_os("AAC_CGROUP_ROOT").filter(|v| !v.is_empty()) {
        return PathBuf::from(v);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/");
    }
    // A subtree `aac system setup-rootless` prepared for this user.
    if let Some(r) = rootless_cgroup_root(nix::unistd::getuid().as_raw()) {
        return r;
    }
    // A delegated v2 subtree the caller runs in (a scope of the user's systemd instance).
    if let Some(r) = delegated_cgroup_root(nix::unistd::geteuid().as_raw()) {
        return r;
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Ok(layout) = CgroupLayout::detect() else {
        return PathBuf::from("/");
    };
    let v2 = layout.mode() == CgroupMode::Unified;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let dir = if v2 && ctrls.is_empty() {
            layout.unified_dir(path).ok().flatten()
        } else if !v2 && ctrls.split(',').any(|c| c == "memory") {
            layout.v1_dir("memory", path).ok().flatten()
        } else {
            None
        };
        if let Some(d) = dir {
            if path != "/" && nix::unistd::access(&d, nix::unistd::AccessFlags::W_OK).is_ok() {
                return PathBuf::from(path);
            }
        }
    }
    PathBuf::from("/")
}
