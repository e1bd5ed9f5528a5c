//! The container's cgroup(s), through `cgroups-rs`: created before the process starts, joined
//! before it runs anything of its own, removed after exit.
//!
//! On cgroup v1 the container process joins its groups itself, by writing `0` into each
//! group's `tasks` file while it is still single-threaded: moving one thread takes no
//! threadgroup lock, whereas moving a process through `cgroup.procs` (what a parent has to do)
//! write-locks `cgroup_threadgroup_rwsem` and waits for an RCU grace period, several
//! milliseconds per start. On v2 (and for any v1 group whose `tasks` file cannot be opened)
//! the parent moves the process through `cgroup.procs`.
//!
//! On cgroup v1 (and hybrid hosts, whose v1 controllers are the ones that count) each controller
//! is its own hierarchy, so each is created and filled on its own: a rootless user may own a
//! memory subtree but not a cpu one, and then only the memory limit is enforced. On v2 there is
//! one directory; a limit whose controller is not delegated is reported, not faked.

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::hierarchies::{self, V1, V2};
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, Hierarchy, MaxValue};
use cgroups_rs::CgroupPid;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use super::driver::{V1_CONTROLLERS, V2_CONTROLLERS};
use super::{CgroupError, NotEnforced};

/// The controller the process backend adds for `--cpuset-cpus` only.
const CPUSET: &str = "cpuset";

/// The limits a spec asks for, in cgroup terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_limit: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub pids: Option<i64>,
    /// Memory plus swap (`-1`: unlimited swap), as the OCI spec gives it.
    pub memory_swap: Option<i64>,
    /// CPUs to run on (`0-2,4`).
    pub cpuset_cpus: Option<String>,
}

impl Limits {
    pub fn from_spec(res: Option<&LinuxResources>) -> Limits {
        let Some(res) = res else {
            return Limits::default();
        };
        let mem = res.memory().as_ref();
        let cpu = res.cpu().as_ref();
        Limits {
            memory_limit: mem.and_then(|m| m.limit()).filter(|v| *v > 0),
            memory_reservation: mem.and_then(|m| m.reservation()).filter(|v| *v > 0),
            cpu_quota: cpu.and_then(|c| c.quota()).filter(|v| *v > 0),
            cpu_period: cpu.and_then(|c| c.period()).filter(|v| *v > 0),
            cpu_shares: cpu.and_then(|c| c.shares()).filter(|v| *v > 0),
            pids: res.pids().as_ref().map(|p| p.limit()).filter(|v| *v > 0),
            memory_swap: mem.and_then(|m| m.swap()).filter(|v| *v > 0 || *v == -1),
            cpuset_cpus: cpu.and_then(|c| c.cpus().clone()).filter(|c| !c.is_empty()),
        }
    }

    /// `(limit name, controller)` of every limit that is set.
    pub fn requested(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if self.memory_limit.is_some() {
            out.push(("memory limit", "memory"));
        }
        if self.memory_reservation.is_some() {
            out.push(("memory reservation", "memory"));
        }
        if self.cpu_quota.is_some() {
            out.push(("cpu limit", "cpu"));
        }
        if self.cpu_shares.is_some() {
            out.push(("cpu shares", "cpu"));
        }
        if self.pids.is_some() {
            out.push(("pids limit", "pids"));
        }
        if self.memory_swap.is_some() {
            out.push(("memory swap", "memory"));
        }
        if self.cpuset_cpus.is_some() {
            out.push(("cpuset", "cpuset"));
        }
        out
    }
}

/// The path of the container's cgroup relative to each hierarchy's root:
/// `<cgroup_root>/<linux.cgroupsPath>`.
pub(crate) fn relative_path(cgroup_root: &Path, cgroups_path: &Path) -> PathBuf {
    let mut p = PathBuf::new();
    for part in [cgroup_root, cgroups_path] {
        for c in part.components() {
            if let std::path::Component::Normal(n) = c {
                p.push(n);
            }
        }
    }
    p
}

/// The cgroups one container lives in.
#[derive(Debug)]
pub struct Cgroups {
    /// `(controller name or "unified", handle)`.
    groups: Vec<(String, Cgroup)>,
    /// Names of the groups the container process joins itself ([`Cgroups::self_join_files`]).
    self_joined: Vec<String>,
    pub path: PathBuf,
}

/// The cgroup hierarchy of this host, read once (cgroups-rs reads /proc/self/mountinfo for
/// every handle it is given).
fn hierarchy() -> (bool, Option<V1>) {
    if hierarchies::is_cgroup2_unified_mode() {
        (true, None)
    } else {
        (false, Some(V1::new()))
    }
}

fn boxed(v1: &Option<V1>) -> Box<dyn Hierarchy> {
    match v1 {
        Some(h) => Box::new(h.clone()),
        None => Box::new(V2::new()),
    }
}

/// The underlying cause of a cgroups-rs error ("Permission denied (os error 13)").
fn cause(e: &cgroups_rs::fs::error::Error) -> String {
    std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_else(|| e.to_string())
}

fn cg_err(
    path: &Path,
    what: impl std::fmt::Display,
    e: cgroups_rs::fs::error::Error,
) -> CgroupError {
    let cause = std::error::Error::source(&e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    CgroupError::Cgroup {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}{cause}"),
    }
}

impl Cgroups {
    /// No cgroups of its own (a command run in an existing container's).
    pub fn none() -> Cgroups {
        Cgroups {
            groups: Vec::new(),
            self_joined: Vec::new(),
            path: PathBuf::new(),
        }
    }

    /// Create the cgroup(s) at `path` and apply `limits`. Strict mode (root) fails on any
    /// error and removes what it created; lenient mode (rootless) enforces what it can and
    /// returns the rest as warnings.
    pub fn create(
        path: &Path,
        limits: &Limits,
        strict: bool,
        warnings: &mut Vec<NotEnforced>,
    ) -> Result<Cgroups, CgroupError> {
        let (v2, v1) = hierarchy();
        let mut out = Cgroups {
            groups: Vec::new(),
            self_joined: Vec::new(),
            path: path.to_path_buf(),
        };
        let result = match (v2, v1) {
            (false, Some(v1)) => out.create_v1(&v1, limits, strict, warnings),
            _ => out.create_v2(limits, strict, warnings),
        };

        match result {
            Ok(()) => {
                out.open_for_traversal();
                Ok(out)
            }
            Err(e) => {
                out.remove();
                Err(e)
            }
        }
    }

    /// Folders made under aac's umask (077) are 0700; a cgroup folder is normally 0755, and a
    /// process agent whose root is mapped in a user namespace must be able to reach its own
    /// cgroup to bind it on /sys/fs/cgroup. Opens the folders of `path` that this process
    /// owns and left at 0700; the files inside stay as the kernel made them.
    fn open_for_traversal(&self) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let depth = self
            .path
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .count();
        let me = nix::unistd::geteuid().as_raw();
        let mut dirs: Vec<PathBuf> = self
            .groups
            .iter()
            .flat_map(|(_, cg)| {
                cg.subsystems()
                    .iter()
                    .map(|s| s.to_controller().path().to_path_buf())
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            for d in dir.ancestors().take(depth) {
                let Ok(m) = std::fs::metadata(d) else {
                    continue;
                };
                if m.uid() == me && m.mode() & 0o777 == 0o700 {
                    if let Err(e) =
                        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                    {
                        tracing::debug!("{}: {e}", d.display());
                    }
                }
            }
        }
    }

    fn create_v1(
        &mut self,
        v1: &V1,
        limits: &Limits,
        strict: bool,
        warnings: &mut Vec<NotEnforced>,
    ) -> Result<(), CgroupError> {
        let requested = limits.requested();
        let subsystems = v1.subsystems();
        // A cpuset group only when one is asked for (cgroups-rs fills in the parent's
        // cpus and mems when it makes one).
        let cpuset = limits.cpuset_cpus.is_some().then_some(&CPUSET);
        for ctrl in V1_CONTROLLERS.iter().chain(cpuset) {
            let hier: Box<dyn Hierarchy> = Box::new(v1.clone());
            let mounted = subsystems.iter().any(|s| s.controller_name() == *ctrl);
            if !mounted {
                for (limit, c) in &requested {
                    if c == ctrl {
                        warnings.push(NotEnforced::new(
                            limit,
                            format!("the {ctrl} cgroup controller is not mounted"),
                        ));
                    }
                }
                continue;
            }
            match Cgroup::new_with_specified_controllers(
                hier,
                &self.path,
                Some(vec![ctrl.to_string()]),
            ) {
                Ok(cg) => {
                    self.groups.push((ctrl.to_string(), cg));
                    let idx = self.groups.len() - 1;
                    self.apply(idx, ctrl, limits, strict, warnings)?;
                }
                Err(e) if !strict => {
                    let reason = format!(
                        "cannot create the {ctrl} cgroup {}: {} (not delegated to this user; \
                         set AAC_CGROUP_ROOT to a cgroup subtree it owns)",
                        self.path.display(),
                        cause(&e)
                    );
                    for (limit, c) in &requested {
                        if c == ctrl {
                            warnings.push(NotEnforced::new(limit, reason.clone()));
                        }
                    }
                }
                Err(e) => return Err(cg_err(&self.path, format!("creating {ctrl} cgroup"), e)),
            }
        }
        Ok(())
    }

    fn create_v2(
        &mut self,
        limits: &Limits,
        strict: bool,
        warnings: &mut Vec<NotEnforced>,
    ) -> Result<(), CgroupError> {
        let available =
            std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        let cpuset = limits.cpuset_cpus.is_some().then_some(&CPUSET);
        let wanted: Vec<&str> = V2_CONTROLLERS.iter().chain(cpuset).copied().collect();
        let ctrls: Vec<String> = wanted
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| c.to_string())
            .collect();
        let requested = limits.requested();
        match Cgroup::new_with_specified_controllers(Box::new(V2::new()), &self.path, Some(ctrls)) {
            Ok(cg) => {
                self.groups.push(("unified".to_string(), cg));
                for ctrl in &wanted {
                    self.apply(0, ctrl, limits, strict, warnings)?;
                }
                Ok(())
            }
            Err(e) if !strict => {
                let reason = format!(
                    "cannot create cgroup {}: {} (no delegated cgroup v2 subtree for this user; \
                     set AAC_CGROUP_ROOT to one)",
                    self.path.display(),
                    cause(&e)
                );
                for (limit, _) in requested {
                    warnings.push(NotEnforced::new(limit, reason.clone()));
                }
                Ok(())
            }
            Err(e) => Err(cg_err(&self.path, "creating cgroup", e)),
        }
    }

    /// Write the limits of one controller into group `idx`.
    fn apply(
        &self,
        idx: usize,
        ctrl: &str,
        limits: &Limits,
        strict: bool,
        warnings: &mut Vec<NotEnforced>,
    ) -> Result<(), CgroupError> {
        let Some((_, cg)) = self.groups.get(idx) else {
            return Ok(());
        };
        let v2 = cg.v2();
        let missing = |limit: &str, warnings: &mut Vec<NotEnforced>| -> Result<(), CgroupError> {
            if strict {
                Err(CgroupError::Cgroup {
                    path: self.path.clone(),
                    reason: format!("{limit}: the {ctrl} controller is not available"),
                })
            } else {
                warnings.push(NotEnforced::new(
                    limit,
                    format!(
                        "the {ctrl} controller is not enabled in {}",
                        self.path.display()
                    ),
                ));
                Ok(())
            }
        };
        let outcome = |limit: &str,
                       r: cgroups_rs::fs::error::Result<()>,
                       warnings: &mut Vec<NotEnforced>|
         -> Result<(), CgroupError> {
            match r {
                Ok(()) => Ok(()),
                Err(e) if !strict => {
                    warnings.push(NotEnforced::new(
                        limit,
                        format!("writing {ctrl} settings of {}: {e}", self.path.display()),
                    ));
                    Ok(())
                }
                Err(e) => Err(cg_err(&self.path, format!("setting {limit}"), e)),
            }
        };
        match ctrl {
            "memory" => {
                if limits.memory_limit.is_none()
                    && limits.memory_reservation.is_none()
                    && limits.memory_swap.is_none()
                {
                    return Ok(());
                }
                let Some(mem) = cg.controller_of::<MemController>() else {
                    if limits.memory_limit.is_some() {
                        missing("memory limit", warnings)?;
                    }
                    if limits.memory_reservation.is_some() {
                        missing("memory reservation", warnings)?;
                    }
                    if limits.memory_swap.is_some() {
                        missing("memory swap", warnings)?;
                    }
                    return Ok(());
                };
                if let Some(l) = limits.memory_limit {
                    outcome("memory limit", mem.set_limit(l), warnings)?;
                }
                if let Some(sw) = limits.memory_swap {
                    // v1 takes memory plus swap; v2's memory.swap.max is the swap alone.
                    let value = match (v2, sw, limits.memory_limit) {
                        (true, -1, _) => -1,
                        (true, sw, Some(l)) => (sw - l).max(0),
                        (_, sw, _) => sw,
                    };
                    outcome("memory swap", mem.set_memswap_limit(value), warnings)?;
                }
                if let Some(r) = limits.memory_reservation {
                    outcome("memory reservation", mem.set_soft_limit(r), warnings)?;
                }
            }
            "cpu" => {
                if limits.cpu_quota.is_none() && limits.cpu_shares.is_none() {
                    return Ok(());
                }
                let Some(cpu) = cg.controller_of::<CpuController>() else {
                    if limits.cpu_quota.is_some() {
                        missing("cpu limit", warnings)?;
                    }
                    if limits.cpu_shares.is_some() {
                        missing("cpu shares", warnings)?;
                    }
                    return Ok(());
                };
                if let Some(q) = limits.cpu_quota {
                    let r = cpu.set_cfs_quota_and_period(Some(q), limits.cpu_period);
                    outcome("cpu limit", r, warnings)?;
                }
                if let Some(s) = limits.cpu_shares {
                    let value = if v2 { shares_to_weight(s) } else { s };
                    outcome("cpu shares", cpu.set_shares(value), warnings)?;
                }
            }
            "cpuset" => {
                let Some(cpus) = &limits.cpuset_cpus else {
                    return Ok(());
                };
                let Some(set) = cg.controller_of::<CpuSetController>() else {
                    return missing("cpuset", warnings);
                };
                outcome("cpuset", set.set_cpus(cpus), warnings)?;
            }
            "pids" => {
                let Some(max) = limits.pids else {
                    return Ok(());
                };
                let Some(pids) = cg.controller_of::<PidController>() else {
                    return missing("pids limit", warnings);
                };
                outcome(
                    "pids limit",
                    pids.set_pid_max(MaxValue::Value(max)),
                    warnings,
                )?;
            }
            _ => {}
        }
        Ok(())
    }

    /// `tasks` files of the v1 groups, open for writing, for the container process to write
    /// `0` into while it is single-threaded (it joins those groups itself; [`Cgroups::add`]
    /// then leaves them alone). A group whose file cannot be opened is left to `add`.
    pub fn self_join_files(&mut self) -> Vec<(OwnedFd, String)> {
        let mut out = Vec::new();
        for (name, cg) in &self.groups {
            if cg.v2() {
                continue;
            }
            let Some(dir) = cg.subsystems().first().map(|s| s.to_controller().path()) else {
                continue;
            };
            let file = dir.join("tasks");
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&file)
            {
                Ok(f) => {
                    out.push((OwnedFd::from(f), format!("the {name} cgroup")));
                    self.self_joined.push(name.clone());
                }
                Err(e) => {
                    tracing::debug!("{}: {e}; the parent moves the process", file.display())
                }
            }
        }
        out
    }

    /// Move process `pid` (all its threads) into every group it does not join itself.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        let tgid = CgroupPid::from(pid as u64);
        for (name, cg) in &self.groups {
            if self.self_joined.contains(name) {
                continue;
            }
            cg.add_task_by_tgid(tgid)
                .map_err(|e| cg_err(&self.path, format!("joining {name} cgroup"), e))?;
        }
        Ok(())
    }

    /// Kill what is left inside and remove the directories. Best effort: logs what it cannot
    /// remove and reports whether everything went.
    pub fn remove(&self) -> bool {
        let mut ok = true;
        for (name, cg) in self.groups.iter().rev() {
            ok &= remove_group(name, cg);
        }
        ok
    }
}

fn remove_group(name: &str, cg: &Cgroup) -> bool {
    if !cg.exists() {
        return true;
    }
    for attempt in 0..100 {
        for pid in cg.procs() {
            if let Ok(p) = i32::try_from(pid.pid) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        match cg.delete() {
            Ok(()) if !cg.exists() => return true,
            Ok(()) => {}
            Err(e) if attempt == 99 => {
                tracing::warn!(cgroup = cg.path(), controller = name, error = %e, "cannot remove cgroup");
                return false;
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !cg.exists()
}

/// cgroup v1 `cpu.shares` (2..=262144) to v2 `cpu.weight` (1..=10000), as runc converts.
fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// Remove the cgroups of container `id` at `<cgroup_root>/<cgroups_path>` wherever they exist.
pub(crate) fn remove_path(path: &Path) -> bool {
    let (v2, v1) = hierarchy();
    let groups: Vec<(String, Cgroup)> = if v2 {
        vec![("unified".into(), Cgroup::load(boxed(&v1), path))]
    } else {
        V1_CONTROLLERS
            .iter()
            .chain(std::iter::once(&CPUSET))
            .map(|c| {
                (
                    c.to_string(),
                    Cgroup::load_with_specified_controllers(boxed(&v1), path, vec![c.to_string()]),
                )
            })
            .collect()
    };
    let removed = groups
        .iter()
        .rev()
        .fold(true, |ok, (n, cg)| remove_group(n, cg) && ok);
    // runc also makes the cgroup in the v1 hierarchies whose controllers aac does not limit
    // (blkio, devices, `name=systemd`, a hybrid host's unified tree): empty once the others
    // are, they are left behind when aac removes a cgroup runc could not (a start cut off).
    if v2 || !removed {
        return removed;
    }
    let dirs = super::CgroupLayout::detect()
        .and_then(|l| l.all_dirs(&format!("/{}", path.display())))
        .unwrap_or_default();
    dirs.iter()
        .fold(removed, |ok, d| match std::fs::remove_dir(d) {
            Ok(()) => ok,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ok,
            Err(e) => {
                tracing::warn!(cgroup = %d.display(), error = %e, "cannot remove cgroup");
                false
            }
        })
}

/// The files to join the cgroups process `pid` is in (those of the controllers aac limits,
/// or the unified tree on v2 hosts) that differ from the caller's, open for writing: `tasks`
/// on v1 (the single-threaded waiter moves itself without the threadgroup lock, see the
/// module documentation), `cgroup.procs` on v2. A rootless caller skips those it may not
/// write (their limits were not enforced either).
pub(crate) fn procs_files(pid: i32, lenient: bool) -> Result<Vec<OwnedFd>, CgroupError> {
    let parse = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| {
                let mut p = l.splitn(3, ':');
                let _ = p.next()?;
                Some((p.next()?.to_string(), p.next()?.to_string()))
            })
            .collect()
    };
    let theirs_path = format!("/proc/{pid}/cgroup");
    let theirs = std::fs::read_to_string(&theirs_path).map_err(|e| CgroupError::Cgroup {
        path: PathBuf::from(&theirs_path),
        reason: format!("reading it: {e}"),
    })?;
    let ours = parse(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
    let layout = super::CgroupLayout::detect().map_err(|e| CgroupError::Cgroup {
        path: PathBuf::from("/proc/self/mountinfo"),
        reason: e.to_string(),
    })?;
    let v2 = layout.mode() == super::CgroupMode::Unified;
    let mut out = Vec::new();
    for (ctrls, path) in parse(&theirs) {
        if ours.iter().any(|(c, p)| *c == ctrls && *p == path) {
            continue;
        }
        let (dir, name) = if ctrls.is_empty() {
            if !v2 {
                continue;
            }
            (layout.unified_dir(&path), "cgroup.procs")
        } else {
            let Some(ctrl) = ctrls
                .split(',')
                .find(|c| V1_CONTROLLERS.contains(c) || *c == CPUSET)
            else {
                continue;
            };
            (layout.v1_dir(ctrl, &path), "tasks")
        };
        let Ok(Some(dir)) = dir else { continue };
        let file = dir.join(name);
        match std::fs::OpenOptions::new().write(true).open(&file) {
            Ok(f) => out.push(OwnedFd::from(f)),
            Err(e) if lenient => {
                tracing::warn!("not joining {}: {e}", file.display());
            }
            Err(e) => {
                return Err(CgroupError::Cgroup {
                    path: file,
                    reason: format!("opening it to join the container's cgroup: {e}"),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_path_joins_root_and_spec_path() {
        assert_eq!(
            relative_path(Path::new("/"), Path::new("/aac/c1")),
            PathBuf::from("aac/c1")
        );
        assert_eq!(
            relative_path(Path::new("/user/1000"), Path::new("/aac/c1")),
            PathBuf::from("user/1000/aac/c1")
        );
        assert_eq!(
            relative_path(Path::new("/x"), Path::new("../aac/../c")),
            PathBuf::from("x/aac/c")
        );
    }

    #[test]
    fn weight_conversion_matches_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
