//! The records of a scaled agent (a "group"): what `aac up` was asked for, the count the user
//! asked for last, and what the supervisor made of it.
//!
//! ```text
//! <data>/agents/<name>/agent.json    GroupRecord    written once by `aac up`
//! <data>/agents/<name>/desired.json  ScaleRequest   written by `aac up` / `aac scale`
//! <data>/agents/<name>/status.json   GroupStatus    written by `aac up`, then by the supervisor
//! <run>/agents/<name>/supervisor.lock               held by the live supervisor
//! ```

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::{Agent, PortSpec};
use crate::record::{Backend, ContainerdTarget};
use crate::state::{read_json, write_json, StateDirs, StateError};

use super::hpa::{Decision, Recommendation};

/// What `aac up` was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRecord {
    /// Events of the agent carry this ID.
    pub id: String,
    pub name: String,
    pub created: String,
    /// The agent as given (ports with their host ports).
    pub agent: Agent,
    pub backend: Backend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerd: Option<ContainerdTarget>,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// How often the autoscaler samples and decides.
    #[serde(with = "humantime_serde_compat")]
    pub autoscale_period: Duration,
    /// How long a replica leaving the rotation may take to finish its connections.
    #[serde(with = "humantime_serde_compat")]
    pub drain_timeout: Duration,
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// The count asked for last (`aac up`, `aac scale`); the supervisor applies a generation once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleRequest {
    pub replicas: u32,
    pub generation: u64,
}

/// One replica of the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRef {
    pub index: u32,
    pub id: String,
    pub name: String,
    /// Out of the rotation, finishing its connections before it is stopped.
    #[serde(default)]
    pub draining: bool,
    /// Container port -> the port the replica listens on (differs for host processes).
    #[serde(default)]
    pub ports: std::collections::BTreeMap<u16, u16>,
}

/// One metric as the autoscaler saw it last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    /// `cpu` or `memory`.
    pub resource: String,
    /// Target utilization in percent of the request.
    pub target_utilization: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_utilization: Option<u32>,
    /// Average usage: millicores or bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_average: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The autoscaler's view, in the spirit of `kubectl describe hpa`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoscaleStatus {
    pub enabled: bool,
    pub min_replicas: u32,
    pub max_replicas: u32,
    #[serde(with = "humantime_serde_compat")]
    pub scale_up_window: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub scale_down_window: Duration,
    #[serde(default)]
    pub metrics: Vec<MetricStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision_time: Option<String>,
    /// When the count last changed, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_reason: Option<String>,
    /// Recommendations inside the stabilization windows.
    #[serde(default)]
    pub history: Vec<Recommendation>,
}

/// A backend of the proxy as the supervisor saw it last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    pub name: String,
    pub address: String,
    pub in_rotation: bool,
    pub active_connections: u64,
    pub total_connections: u64,
}

/// What the supervisor made of the group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pid: Option<u32>,
    pub desired: u32,
    /// The generation of the [`ScaleRequest`] applied last.
    #[serde(default)]
    pub observed_generation: u64,
    #[serde(default)]
    pub replicas: Vec<ReplicaRef>,
    #[serde(default)]
    pub backends: Vec<BackendStatus>,
    #[serde(default)]
    pub autoscale: AutoscaleStatus,
    /// Why the supervisor is unhappy (a port it cannot bind, a replica it cannot create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl GroupStatus {
    /// Replicas in service (not draining).
    pub fn active(&self) -> impl Iterator<Item = &ReplicaRef> {
        self.replicas.iter().filter(|r| !r.draining)
    }
}

pub fn groups_dir(dirs: &StateDirs) -> PathBuf {
    dirs.data.join("agents")
}

pub fn group_dir(dirs: &StateDirs, name: &str) -> PathBuf {
    groups_dir(dirs).join(name)
}

pub fn group_run_dir(dirs: &StateDirs, name: &str) -> PathBuf {
    dirs.run.join("agents").join(name)
}

pub fn exists(dirs: &StateDirs, name: &str) -> bool {
    group_dir(dirs, name).join("agent.json").exists()
}

pub fn load_record(dirs: &StateDirs, name: &str) -> Result<GroupRecord, StateError> {
    read_json(&group_dir(dirs, name).join("agent.json"))?
        .ok_or_else(|| StateError::NotFound(name.to_string()))
}

pub fn save_record(dirs: &StateDirs, rec: &GroupRecord) -> Result<(), StateError> {
    write_json(&group_dir(dirs, &rec.name).join("agent.json"), rec)
}

pub fn load_request(dirs: &StateDirs, name: &str) -> Result<Option<ScaleRequest>, StateError> {
    read_json(&group_dir(dirs, name).join("desired.json"))
}

pub fn save_request(dirs: &StateDirs, name: &str, r: &ScaleRequest) -> Result<(), StateError> {
    write_json(&group_dir(dirs, name).join("desired.json"), r)
}

pub fn load_status(dirs: &StateDirs, name: &str) -> Result<GroupStatus, StateError> {
    Ok(read_json(&group_dir(dirs, name).join("status.json"))?.unwrap_or_default())
}

pub fn save_status(dirs: &StateDirs, name: &str, st: &GroupStatus) -> Result<(), StateError> {
    write_json(&group_dir(dirs, name).join("status.json"), st)
}

/// Names of every scaled agent.
pub fn list(dirs: &StateDirs) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(groups_dir(dirs))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("agent.json").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The supervisor's lock: held for its whole life. `None` when another one holds it.
pub fn try_lock_supervisor(
    dirs: &StateDirs,
    name: &str,
) -> Result<Option<nix::fcntl::Flock<File>>, StateError> {
    let dir = group_run_dir(dirs, name);
    crate::state::create_private_dir(&dir)?;
    let path = dir.join("supervisor.lock");
    let f = crate::state::private_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(crate::io::io_err("opening", &path))?;
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(crate::io::io_err("locking", &path)(e.into()).into()),
    }
}

/// Whether a live supervisor holds the group's lock.
pub fn supervisor_running(dirs: &StateDirs, name: &str) -> bool {
    matches!(try_lock_supervisor(dirs, name), Ok(None))
}

/// Remove the group's records.
pub fn remove(dirs: &StateDirs, name: &str) -> Result<(), StateError> {
    for d in [group_dir(dirs, name), group_run_dir(dirs, name)] {
        match std::fs::remove_dir_all(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::io::io_err("removing", &d)(e).into()),
        }
    }
    Ok(())
}

/// The name of replica `index` of agent `name`, docker compose's way without the project.
pub fn replica_name(name: &str, index: u32) -> String {
    format!("{name}-{index}")
}

/// The published ports of a group, as given.
pub fn published(agent: &Agent) -> Vec<PortSpec> {
    agent
        .spec
        .ports
        .iter()
        .filter(|p| p.host.is_some_and(|h| h != 0))
        .cloned()
        .collect()
}
