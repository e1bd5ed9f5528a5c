//! Everything about cgroups, in one place: where the filesystems are mounted ([`layout`]),
//! who manages a container's cgroup and where it goes ([`driver`], decided once into a
//! [`CgroupPlan`] that the container's record keeps), creating it and writing limits for the
//! process backend ([`manager`]), and reading its counters ([`counters`]).

pub mod counters;
pub mod driver;
mod freezer;
pub mod layout;
pub mod manager;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use counters::{cgroup_pids, sample, sample_in, Sample};
pub use driver::{CgroupDriver, CGROUP_MOUNT};
pub use layout::{CgroupLayout, CgroupMode};
pub use manager::{Cgroups, Limits};

/// Parent cgroup of every aac container.
pub const CGROUP_PARENT: &str = "aac";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup {0} on this host (is the container running?)")]
    NoCgroup(String),
    #[error("cgroup path {0:?} must be absolute and must not contain '..'")]
    BadPath(String),
    #[error("no cgroup filesystem is mounted (read /proc/self/mountinfo)")]
    NoCgroupFs,
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    #[error("{path}: unexpected content {content:?}")]
    Parse { path: PathBuf, content: String },
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: PathBuf, reason: String },
}

/// A limit of the spec that this run cannot enforce, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotEnforced {
    pub limit: String,
    pub reason: String,
}

impl NotEnforced {
    pub fn new(limit: &str, reason: impl Into<String>) -> NotEnforced {
        NotEnforced {
            limit: limit.to_string(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for NotEnforced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} not enforced: {}", self.limit, self.reason)
    }
}

/// The cgroup of one container, decided once when it is created ([`CgroupPlan::for_containerd`],
/// [`CgroupPlan::for_process`]) and kept in its record: the spec's `linux.cgroupsPath`, where
/// the directory is for reading and writing it, and how strictly limits are enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CgroupPlan {
    pub driver: CgroupDriver,
    /// `linux.cgroupsPath` for the runtime (`/aac/<id>`, `system.slice:aac:<id>`); `None`
    /// when the container gets no cgroup of its own (see `absent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_path: Option<String>,
    /// The cgroup's directory relative to each hierarchy's root (`/aac/<id>`,
    /// `/system.slice/aac-<id>.scope`, `/user.slice/.../aac/<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_path: Option<String>,
    /// A limit that cannot be written is reported instead of failing the start (a rootless
    /// process-backend run in a partly delegated tree).
    #[serde(default)]
    pub lenient: bool,
    /// Why the container has no cgroup; every limit it asks for is then not enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absent: Option<String>,
}

impl CgroupPlan {
    /// For a containerd container: runc's cgroupfs or systemd driver ([`CgroupDriver::detect`]);
    /// inside a rootless containerd's RootlessKit without the user's systemd, no cgroup.
    pub fn for_containerd(id: &str) -> CgroupPlan {
        let driver = CgroupDriver::detect();
        if crate::rootlesskit::entered_uid().is_some() && !driver.is_systemd() {
            return CgroupPlan::none(
                "a rootless containerd gets cgroups only through the user's systemd on \
                 cgroup v2 (this host: no delegation)",
            );
        }
        CgroupPlan::under(driver, id)
    }

    /// Container `id`'s cgroup under `driver` (`/aac/<id>`, or the systemd scope
    /// `aac-<id>.scope` in the driver's slice).
    pub fn under(driver: CgroupDriver, id: &str) -> CgroupPlan {
        let spec_path = driver.cgroups_path(CGROUP_PARENT, id);
        let fs_path = driver::cgroup_fs_path(&spec_path);
        CgroupPlan {
            driver,
            spec_path: Some(spec_path),
            fs_path,
            lenient: false,
            absent: None,
        }
    }

    /// No cgroup of its own, for `reason`.
    pub fn none(reason: &str) -> CgroupPlan {
        CgroupPlan {
            driver: CgroupDriver::Cgroupfs,
            spec_path: None,
            fs_path: None,
            lenient: true,
            absent: Some(reason.to_string()),
        }
    }

    /// For a process-backend container: aac writes the tree itself (cgroupfs), under this
    /// user's cgroup root ([`driver::default_cgroup_root`]); lenient for a rootless caller.
    pub fn for_process(id: &str) -> CgroupPlan {
        let root = driver::default_cgroup_root();
        let mut path = PathBuf::from("/");
        for part in [root.as_path(), Path::new(CGROUP_PARENT), Path::new(id)] {
            for c in part.components() {
                if let std::path::Component::Normal(n) = c {
                    path.push(n);
                }
            }
        }
        let path = path.to_string_lossy().into_owned();
        CgroupPlan {
            driver: CgroupDriver::Cgroupfs,
            spec_path: Some(path.clone()),
            fs_path: Some(path),
            lenient: !nix::unistd::geteuid().is_root(),
            absent: None,
        }
    }

    /// The limits `resources` asks for that this plan cannot enforce (all of them when the
    /// container has no cgroup).
    pub fn not_enforced(
        &self,
        resources: Option<&oci_spec::runtime::LinuxResources>,
    ) -> Vec<NotEnforced> {
        let Some(reason) = &self.absent else {
            return Vec::new();
        };
        Limits::from_spec(resources)
            .requested()
            .into_iter()
            .map(|(limit, _)| NotEnforced::new(limit, reason.clone()))
            .collect()
    }

    /// Whether runc should use its systemd driver.
    pub fn systemd(&self) -> bool {
        self.spec_path.is_some() && self.driver.is_systemd()
    }

    /// Count of OOM kills in the memory cgroup (v1 `memory.oom_control`, v2 `memory.events`);
    /// 0 when unknown.
    pub fn oom_kills(&self) -> u64 {
        let Some(path) = &self.fs_path else { return 0 };
        let Ok(layout) = CgroupLayout::detect() else {
            return 0;
        };
        let Ok(Some((dir, unified))) = layout.controller_dir("memory", path) else {
            return 0;
        };
        let file = if unified {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Remove the cgroup(s), killing anything left in them (the process backend's: runc
    /// removes its own).
    pub fn remove(&self) -> Result<(), CgroupError> {
        let Some(path) = &self.fs_path else {
            return Ok(());
        };
        let rel = path.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == "..") {
            return Err(CgroupError::BadPath(path.clone()));
        }
        if manager::remove_path(Path::new(rel)) {
            Ok(())
        } else {
            Err(CgroupError::Cgroup {
                path: PathBuf::from(path),
                reason: "could not remove it (processes left?)".into(),
            })
        }
    }

    /// Whether process `pid` is in this cgroup now.
    pub fn holds(&self, pid: u32) -> bool {
        let Some(path) = &self.fs_path else {
            return false;
        };
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map(|t| {
                t.lines()
                    .filter_map(|l| l.splitn(3, ':').nth(2))
                    .any(|p| p == path || p.ends_with(path.as_str()))
            })
            .unwrap_or(false)
    }
}
