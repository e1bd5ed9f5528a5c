//! Typed model of an agent: what agent.yaml (or docker-style CLI flags) describe.
//!
//! Every field of agent.yaml has a home here, including those that later features put to work
//! (scaling, autoscaling, secrets, allowedHosts): nothing is silently dropped. Values are stored
//! already normalised (CPU in millicores, memory in bytes, durations as [`Duration`]), so the
//! spec builder and the backends never parse strings again.
//!
//! The types serialize to JSON (for `aac inspect` and the state directory) with the same
//! camelCase names agent.yaml uses.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `apiVersion` aac writes and expects.
pub const API_VERSION: &str = "agent.dev/v1";
/// The upstream docs' other spelling of [`API_VERSION`], accepted with a note.
pub const API_VERSION_ALIAS: &str = "agent.as.code/v1";
/// The only `kind` accepted.
pub const KIND: &str = "Agent";

/// A whole agent document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: AgentSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Everything under `spec:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// Language runtime of the agent (e.g. `python:3.11`); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// `spec.models`: several models, each with its use; informational like `model`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelSpec>,
    /// Agent capabilities (e.g. `chat`, `sentiment-analysis`); informational, not Linux ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Package dependencies of the agent (e.g. `openai==1.0.0`); informational.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// Free configuration map; `environment[].from: config` reads from it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, serde_yaml::Value>,

    /// Image reference. When absent: `<metadata.name>:<metadata.version|latest>`
    /// (see [`Agent::image_ref`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Overrides the image's entrypoint when non-empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Overrides the image's cmd when non-empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Container hostname; defaults to the container name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub network: Network,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceDep>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRef>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default)]
    pub logging: Logging,
    /// `spec.monitoring` (prometheus, logging, tracing): what the agent's own code exposes;
    /// aac does not act on it (`aac validate` says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
}

/// `spec.monitoring`, as the upstream templates write it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// `prometheus: true`, or `{enabled, port, path}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<MonitoringLogging>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSpec {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringLogging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, serde_yaml::Value>,
    /// What the model is used for (`use:` in `spec.models`).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// One environment variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    pub source: EnvSource,
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "from")]
pub enum EnvSource {
    /// `{name, value}`
    Value { value: String },
    /// `{name, from: config, key?}`: `spec.config[key]`, `key` defaulting to `name`.
    Config {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// `{name, from: secret, secretName, secretKey}`: resolved by the secrets store.
    Secret {
        secret_name: String,
        secret_key: String,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A published (or merely exposed) port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    pub container: u16,
    /// Host port; `None` exposes the container port without publishing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
    /// Host address to bind; `None` means all addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeType {
    #[default]
    Bind,
    Volume,
    Tmpfs,
    ConfigMap,
}

/// A mount into the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Bind: absolute host path (relative paths are resolved against the agent.yaml's folder
    /// when decoding). Volume: the volume name. Tmpfs: ignored (may be empty). ConfigMap: a
    /// host file or folder holding the configuration data.
    #[serde(default)]
    pub source: String,
    pub target: String,
    #[serde(rename = "type", default)]
    pub kind: VolumeType,
    #[serde(default)]
    pub read_only: bool,
    /// Extra mount options (tmpfs `size=64m`, `mode=1777`), from `--tmpfs /x:size=64m`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// `healthCheck`: exactly one probe plus timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub probe: Probe,
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    pub retries: u32,
    #[serde(with = "humantime_serde_compat")]
    pub start_period: Duration,
    #[serde(default)]
    pub on_unhealthy: OnUnhealthy,
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_RETRIES: u32 = 3;
    pub const DEFAULT_START_PERIOD: Duration = Duration::ZERO;

    /// A health check with the default timing around `probe`.
    pub fn with_defaults(probe: Probe) -> Self {
        HealthCheck {
            probe,
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            retries: Self::DEFAULT_RETRIES,
            start_period: Self::DEFAULT_START_PERIOD,
            on_unhealthy: OnUnhealthy::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Probe {
    /// Run inside the container; healthy on exit 0.
    Command(Vec<String>),
    /// GET; healthy on 2xx/3xx.
    Http {
        path: String,
        port: u16,
        #[serde(default)]
        scheme: HttpScheme,
    },
    /// Connect succeeds.
    Tcp { port: u16 },
    /// The file exists inside the container.
    File { path: String },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpScheme {
    #[default]
    Http,
    Https,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnhealthy {
    #[default]
    None,
    Restart,
    Stop,
    /// SIGKILL, and the restart policy decides what follows (podman's `kill`).
    Kill,
}

/// CPU amount in millicores (`"2"` = 2000, `"500m"` = 500, `"0.5"` = 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MilliCpu(pub u64);

/// Memory amount in bytes (`"512Mi"`, `"2Gi"`, `"1G"`, `"500M"`, plain bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Bytes(pub u64);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default)]
    pub limits: ResourceLimits,
    #[serde(default)]
    pub requests: ResourceRequests,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<MilliCpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    /// Maximum number of processes; `None` is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// CPUs the agent may run on, in the kernel's list format (`0-2,4`): `--cpuset-cpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    /// Memory plus swap, docker's `--memory-swap`: [`MemorySwap::Unlimited`] for `-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<MemorySwap>,
}

/// docker's `--memory-swap`: the memory and swap the agent may use together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MemorySwap {
    Limit(Bytes),
    Unlimited,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequests {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<MilliCpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    /// The cgroup's relative CPU weight as docker writes it (`--cpu-shares`, 2 to 262144);
    /// when set it replaces the shares derived from `cpu` (1 CPU = 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<ScalingMetric>,
}

/// One autoscaling metric, shaped like a Kubernetes HPA v2 `MetricSpec` of type `Resource`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingMetric {
    /// `Resource` is the only type acted on; others are kept for Kubernetes export.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<MetricResource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricResource {
    /// `cpu` or `memory`.
    pub name: String,
    pub target: MetricTarget,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricTarget {
    /// `Utilization`, `AverageValue` or `Value`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_utilization: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cpu_utilization_percentage: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_memory_utilization_percentage: Option<u32>,
    #[serde(default, with = "humantime_serde_compat::option")]
    pub scale_down_delay: Option<Duration>,
    #[serde(default, with = "humantime_serde_compat::option")]
    pub scale_up_delay: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Security {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<u32>,
    /// Supplementary groups (`--group-add`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supplemental_groups: Vec<u32>,
    #[serde(default)]
    pub read_only_root_filesystem: bool,
    /// Defaults to true.
    pub no_new_privileges: bool,
    #[serde(default)]
    pub capabilities: CapabilityChanges,
    #[serde(default)]
    pub seccomp_profile: SeccompProfile,
    /// docker's `--privileged`: every capability, every host device, no seccomp filter and
    /// no masked paths (containerd only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            run_as_user: None,
            run_as_group: None,
            supplemental_groups: Vec::new(),
            read_only_root_filesystem: false,
            no_new_privileges: true,
            capabilities: CapabilityChanges::default(),
            seccomp_profile: SeccompProfile::Default,
            privileged: false,
        }
    }
}

/// Linux capability changes relative to the default set. Names are stored upper case without
/// the `CAP_` prefix (`NET_BIND_SERVICE`), or `ALL`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityChanges {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SeccompProfile {
    /// aac's built-in profile (at least as strict as moby's default).
    #[default]
    Default,
    /// No seccomp filter.
    Unconfined,
    /// An OCI `linux.seccomp` JSON document (or a docker/moby profile) at this path.
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default)]
    pub mode: NetworkMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// resolv.conf `search` domains (replace the host's); `["."]` means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// resolv.conf `options` (replace the host's), e.g. `ndots:2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// The agent's address on a user network (`--ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default)]
    pub security: NetworkSecurity,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            mode: NetworkMode::Bridge,
            dns: Vec::new(),
            dns_search: Vec::new(),
            dns_options: Vec::new(),
            ip: None,
            security: NetworkSecurity::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NetworkMode {
    /// The default network `aac`.
    #[default]
    Bridge,
    Host,
    None,
    /// A user-defined network.
    Named(String),
}

impl NetworkMode {
    pub fn parse(s: &str) -> NetworkMode {
        match s {
            "bridge" | "default" => NetworkMode::Bridge,
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            other => NetworkMode::Named(other.to_string()),
        }
    }
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetworkMode::Bridge => f.write_str("bridge"),
            NetworkMode::Host => f.write_str("host"),
            NetworkMode::None => f.write_str("none"),
            NetworkMode::Named(n) => f.write_str(n),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSecurity {
    /// Defaults to true.
    pub allow_external_connections: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
}

impl Default for NetworkSecurity {
    fn default() -> Self {
        NetworkSecurity {
            allow_external_connections: true,
            allowed_hosts: Vec::new(),
        }
    }
}

/// A service the agent depends on (`spec.services[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDep {
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

/// `spec.secrets[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub name: String,
    /// Where the secret lives (`secret`, `file`, `env`, `kubernetes-secret`, ...).
    pub from: String,
    pub secret_name: String,
    pub secret_key: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "name")]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure {
        /// `on-failure:N`; `None` retries forever.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_retries: Option<u32>,
    },
    Always,
    UnlessStopped,
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max_retries: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure {
                max_retries: Some(n),
            } => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

/// `spec.logging` / `--log-opt`: json-file log rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Logging {
    /// Rotate when the current file reaches this size (`max-size`, default 10m).
    pub max_size: Bytes,
    /// Keep this many files including the current one (`max-file`, default 3).
    pub max_file: u32,
    /// Labels whose values `logs --details` shows beside each line (docker's `labels=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Environment variables whose values `logs --details` shows (docker's `env=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            max_size: Bytes(10 * 1024 * 1024),
            max_file: 3,
            labels: Vec::new(),
            env: Vec::new(),
        }
    }
}

impl Agent {
    /// A minimal agent for `aac run IMAGE`: everything defaulted.
    pub fn for_image(name: &str, image: &str) -> Agent {
        Agent {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            metadata: Metadata {
                name: name.to_string(),
                ..Metadata::default()
            },
            spec: AgentSpec {
                image: Some(image.to_string()),
                ..AgentSpec::default()
            },
        }
    }

    /// The image to run: `spec.image`, else `<metadata.name>:<metadata.version|latest>`.
    pub fn image_ref(&self) -> String {
        match &self.spec.image {
            Some(i) => i.clone(),
            None => format!(
                "{}:{}",
                self.metadata.name,
                self.metadata.version.as_deref().unwrap_or("latest")
            ),
        }
    }
}

/// Serde helpers: durations as humantime strings (`"30s"`, `"1m 30s"`).
pub mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(s) => humantime::parse_duration(&s)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}
