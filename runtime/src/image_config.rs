//! The parts of an OCI image configuration that shape a container's process.

use serde::{Deserialize, Serialize};

/// `config` of an OCI image config (or docker image config), as far as aac uses it.
/// Absent when the backend has no image (the process backend).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// `Cmd`
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `Env`, `KEY=VALUE` strings.
    #[serde(default)]
    pub env: Vec<String>,
    /// `WorkingDir`; empty means `/`.
    #[serde(default)]
    pub working_dir: String,
    /// `User`: `uid[:gid]` or a name.
    #[serde(default)]
    pub user: String,
    /// `ExposedPorts` keys such as `8080/tcp`.
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    /// `Labels`
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `StopSignal`, e.g. `SIGTERM`.
    #[serde(default)]
    pub stop_signal: Option<String>,
}
