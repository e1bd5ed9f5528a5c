//! What a container was asked to be: written once by `aac run`, read by the monitor and by
//! every other command.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::agent::{Agent, PortSpec};
use crate::state::{
    read_json, write_json_with, Durability, StateDirs, StateError, CONTAINER_FILE, STATUS_FILE,
};
use crate::status::ContainerStatus;

/// Which executor runs the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Containerd,
    Process,
}

impl Backend {
    /// docker's `GraphDriver`/`Driver` of a container's root file system: containerd's
    /// overlayfs snapshotter, or none (the process backend uses the host's files).
    pub fn storage_driver(self) -> &'static str {
        match self {
            Backend::Containerd => "overlayfs",
            Backend::Process => "",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Containerd => "containerd",
            Backend::Process => "process",
        })
    }
}

/// Where the containerd backend finds its containerd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerdTarget {
    pub address: PathBuf,
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub backend: Backend,
    /// Image reference (containerd backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The process's argv as run.
    pub command: Vec<String>,
    /// RFC 3339.
    pub created: String,
    pub agent: Agent,
    /// The OCI runtime spec as run.
    pub spec: oci_spec::runtime::Spec,
    /// Its cgroup, as decided when it was created.
    pub cgroup: crate::cgroups::CgroupPlan,
    /// Published ports, host ports resolved.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerd: Option<ContainerdTarget>,
    /// `--rm`: remove everything when it exits for good.
    #[serde(default)]
    pub auto_remove: bool,
    /// Made by `run`, to be started at once: still "created" without a live creator, it was
    /// abandoned (its client died) and `prune` removes it.
    #[serde(default)]
    pub auto_start: bool,
    /// `-i`: a stdin FIFO is kept open for `aac attach`/foreground runs.
    #[serde(default)]
    pub stdin: bool,
    /// `-t`: the process has a terminal.
    #[serde(default)]
    pub tty: bool,
}

impl ContainerRecord {
    pub fn load(dirs: &StateDirs, id: &str) -> Result<ContainerRecord, StateError> {
        read_json(&dirs.container_dir(id).join(CONTAINER_FILE))?
            .ok_or_else(|| StateError::NotFound(id.to_string()))
    }

    pub fn save(&self, dirs: &StateDirs) -> Result<(), StateError> {
        write_json_with(
            &dirs.container_dir(&self.id).join(CONTAINER_FILE),
            self,
            self.durability(),
        )
    }

    /// How its records are written: an `--rm` container's are gone when it is, so they are
    /// not flushed to the disk on every change.
    pub fn durability(&self) -> Durability {
        if self.auto_remove {
            Durability::Transient
        } else {
            Durability::Synced
        }
    }
}

pub fn load_status(dirs: &StateDirs, id: &str) -> Result<ContainerStatus, StateError> {
    Ok(read_json(&dirs.container_dir(id).join(STATUS_FILE))?.unwrap_or_default())
}

pub fn save_status(dirs: &StateDirs, id: &str, st: &ContainerStatus) -> Result<(), StateError> {
    save_status_with(dirs, id, st, Durability::Synced)
}

/// [`save_status`] with the given [`Durability`] (see [`ContainerRecord::durability`]).
pub fn save_status_with(
    dirs: &StateDirs,
    id: &str,
    st: &ContainerStatus,
    durability: Durability,
) -> Result<(), StateError> {
    write_json_with(&dirs.container_dir(id).join(STATUS_FILE), st, durability)
}

/// Marker written by `aac stop`/`kill` before signalling: the monitor then treats the exit as
/// requested and applies no restart policy.
pub fn stop_marker(dirs: &StateDirs, id: &str) -> PathBuf {
    dirs.container_dir(id).join("stop-requested")
}
