//! The container's cgroup(s), through `cgroups-rs`: created before the process starts, the
//! process placed in them by the parent, removed after exit.
//!
//! On cgroup v1 (and hybrid hosts, whose v1 controllers are the ones that count) each controller
//! is its own hierarchy, so each is created and filled on its own: a rootless user may own a
//! memory subtree but not a cpu one, and then only the memory limit is enforced. On v2 there is
//! one directory; a limit whose controller is not delegated is reported, not faked.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, MaxValue};
use cgroups_rs::CgroupPid;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use super::{NotEnforced, ProcessError};

/// Controllers aac creates a cgroup in on v1 hosts.
const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids"];
/// Controllers aac asks for on v2 hosts.
const V2_CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];

/// The limits a spec asks for, in cgroup terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    pub memory_limit: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub pids: Option<i64>,
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
        }
    }

    /// `(limit name, controller)` of every limit that is set.
    fn requested(&self) -> Vec<(&'static str, &'static str)> {
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
pub(crate) struct Cgroups {
    /// `(controller name or "unified", handle)`.
    groups: Vec<(String, Cgroup)>,
    pub path: PathBuf,
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
) -> ProcessError {
    let cause = std::error::Error::source(&e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    ProcessError::Cgroup {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}{cause}"),
    }
}

impl Cgroups {
    /// No cgroups of its own (a command run in an existing container's).
    pub fn none() -> Cgroups {
        Cgroups {
            groups: Vec::new(),
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
    ) -> Result<Cgroups, ProcessError> {
        let v2 = hierarchies::is_cgroup2_unified_mode();
        let mut out = Cgroups {
            groups: Vec::new(),
            path: path.to_path_buf(),
        };
        let result = if v2 {
            out.create_v2(limits, strict, warnings)
        } else {
            out.create_v1(limits, strict, warnings)
        };
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                out.remove();
                Err(e)
            }
        }
    }

    fn create_v1(
        &mut self,
        limits: &Limits,
        strict: bool,
        warnings: &mut Vec<NotEnforced>,
    ) -> Result<(), ProcessError> {
        let requested = limits.requested();
        for ctrl in V1_CONTROLLERS {
            let hier = hierarchies::auto();
            let mounted = hier
                .subsystems()
                .iter()
                .any(|s| s.controller_name() == *ctrl);
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
    ) -> Result<(), ProcessError> {
        let available =
            std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        let ctrls: Vec<String> = V2_CONTROLLERS
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| c.to_string())
            .collect();
        let requested = limits.requested();
        match Cgroup::new_with_specified_controllers(hierarchies::auto(), &self.path, Some(ctrls)) {
            Ok(cg) => {
                self.groups.push(("unified".to_string(), cg));
                for ctrl in V2_CONTROLLERS {
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
    ) -> Result<(), ProcessError> {
        let Some((_, cg)) = self.groups.get(idx) else {
            return Ok(());
        };
        let v2 = cg.v2();
        let missing = |limit: &str, warnings: &mut Vec<NotEnforced>| -> Result<(), ProcessError> {
            if strict {
                Err(ProcessError::Cgroup {
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
         -> Result<(), ProcessError> {
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
                if limits.memory_limit.is_none() && limits.memory_reservation.is_none() {
                    return Ok(());
                }
                let Some(mem) = cg.controller_of::<MemController>() else {
                    if limits.memory_limit.is_some() {
                        missing("memory limit", warnings)?;
                    }
                    if limits.memory_reservation.is_some() {
                        missing("memory reservation", warnings)?;
                    }
                    return Ok(());
                };
                if let Some(l) = limits.memory_limit {
                    outcome("memory limit", mem.set_limit(l), warnings)?;
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

    /// Move process `pid` (all its threads) into every group.
    pub fn add(&self, pid: i32) -> Result<(), ProcessError> {
        let tgid = CgroupPid::from(pid as u64);
        for (name, cg) in &self.groups {
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
    let v2 = hierarchies::is_cgroup2_unified_mode();
    let groups: Vec<(String, Cgroup)> = if v2 {
        vec![("unified".into(), Cgroup::load(hierarchies::auto(), path))]
    } else {
        V1_CONTROLLERS
            .iter()
            .map(|c| {
                (
                    c.to_string(),
                    Cgroup::load_with_specified_controllers(
                        hierarchies::auto(),
                        path,
                        vec![c.to_string()],
                    ),
                )
            })
            .collect()
    };
    groups
        .iter()
        .rev()
        .fold(true, |ok, (n, cg)| remove_group(n, cg) && ok)
}

/// `cgroup.procs` of the cgroups process `pid` is in (those of the controllers aac limits,
/// or the unified tree on v2 hosts) that differ from the caller's, open for writing. A
/// rootless caller skips those it may not write (their limits were not enforced either).
pub(crate) fn procs_files(pid: i32, lenient: bool) -> Result<Vec<OwnedFd>, ProcessError> {
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
    let theirs = std::fs::read_to_string(&theirs_path).map_err(|e| ProcessError::Cgroup {
        path: PathBuf::from(&theirs_path),
        reason: format!("reading it: {e}"),
    })?;
    let ours = parse(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
    let layout = crate::stats::CgroupLayout::detect().map_err(|e| ProcessError::Cgroup {
        path: PathBuf::from("/proc/self/mountinfo"),
        reason: e.to_string(),
    })?;
    let v2 = layout.mode() == crate::stats::CgroupMode::Unified;
    let mut out = Vec::new();
    for (ctrls, path) in parse(&theirs) {
        if ours.iter().any(|(c, p)| *c == ctrls && *p == path) {
            continue;
        }
        let dir = if ctrls.is_empty() {
            if !v2 {
                continue;
            }
            layout.unified_dir(&path)
        } else {
            let Some(ctrl) = ctrls.split(',').find(|c| V1_CONTROLLERS.contains(c)) else {
                continue;
            };
            layout.v1_dir(ctrl, &path)
        };
        let Ok(Some(dir)) = dir else { continue };
        let file = dir.join("cgroup.procs");
        match std::fs::OpenOptions::new().write(true).open(&file) {
            Ok(f) => out.push(OwnedFd::from(f)),
            Err(e) if lenient => {
                tracing::warn!("not joining {}: {e}", file.display());
            }
            Err(e) => {
                return Err(ProcessError::Cgroup {
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
