//! `Agent -> Kubernetes manifests`.
//!
//! One Deployment always; a Service when the agent has ports; an `autoscaling/v2`
//! HorizontalPodAutoscaler when it autoscales (the Deployment then has no `replicas`); a
//! ConfigMap for `spec.config` and one for each configMap volume; a PersistentVolumeClaim for
//! each named volume; a NetworkPolicy for `spec.network.security` and, with
//! [`FqdnPolicy::Cilium`], a CiliumNetworkPolicy for the allowed host names. Secrets are
//! referenced by name and key and only written out with `include_secrets`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use aac_agent::decode::render_config_value;
use aac_agent::*;
use base64::Engine;
use serde_yaml::{Mapping, Value};

use crate::annotations as ann;
use crate::manifest::{string_map, Manifest, Obj};
use crate::names;
use crate::quantity;

/// The label every object carries and every selector selects on: the agent's name.
pub const APP_NAME: &str = "app.kubernetes.io/name";
pub const APP_VERSION: &str = "app.kubernetes.io/version";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "aac";

/// Where secrets live in the container, as aac delivers them locally.
pub const SECRETS_DIR: &str = "/run/secrets";

/// The size a PersistentVolumeClaim asks for: aac's volumes have none.
pub const DEFAULT_CLAIM_SIZE: &str = "1Gi";

/// A ConfigMap holds at most 1 MiB.
const CONFIG_MAP_MAX: usize = 1 << 20;

/// Kubernetes' largest stabilization window.
const MAX_STABILIZATION: u64 = 3600;

/// How host names in `allowedHosts` are exported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FqdnPolicy {
    /// Not at all: a NetworkPolicy cannot name hosts; the output says so.
    #[default]
    None,
    /// A CiliumNetworkPolicy with `toFQDNs`.
    Cilium,
}

/// Where secret values come from when they are written out (`include_secrets`), and which
/// keys a secret has (for a secret referenced by name only).
pub trait SecretSource {
    /// The key names of the local secret `name`.
    fn keys(&self, name: &str) -> Result<Vec<String>, String>;
    /// The value of `key` in the local secret `name`.
    fn value(&self, name: &str, key: &str) -> Result<Vec<u8>, String>;
}

/// No secrets store: every look-up fails and says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSecrets;

impl SecretSource for NoSecrets {
    fn keys(&self, name: &str) -> Result<Vec<String>, String> {
        Err(format!(
            "secret {name}: no secrets store is configured on this host"
        ))
    }
    fn value(&self, name: &str, key: &str) -> Result<Vec<u8>, String> {
        Err(format!(
            "secret {name}/{key}: no secrets store is configured on this host"
        ))
    }
}

/// What a configMap volume's source holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFiles {
    /// One file: its name and content.
    File(String, Vec<u8>),
    /// A folder: its regular files, by name.
    Folder(Vec<(String, Vec<u8>)>),
}

/// Reads the host files behind configMap volumes.
pub trait FileSource {
    fn read(&self, path: &Path) -> Result<SourceFiles, String>;
}

/// The host's file system: a file, or the regular files directly in a folder.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFiles;

impl FileSource for HostFiles {
    fn read(&self, path: &Path) -> Result<SourceFiles, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name_of = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        if meta.is_file() {
            let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            return Ok(SourceFiles::File(name_of(path), data));
        }
        let mut files = Vec::new();
        let dir = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for entry in dir {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
            let p = entry.path();
            if p.is_file() {
                let data = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                files.push((name_of(&p), data));
            }
        }
        files.sort();
        Ok(SourceFiles::Folder(files))
    }
}

/// How to generate.
pub struct Options<'a> {
    pub fqdn_policy: FqdnPolicy,
    /// Write the secrets' values into Secret objects (from `secrets`).
    pub include_secrets: bool,
    /// Export bind mounts as `hostPath` volumes (else as emptyDir, with a warning).
    pub host_path: bool,
    pub secrets: &'a dyn SecretSource,
    pub files: &'a dyn FileSource,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            fqdn_policy: FqdnPolicy::None,
            include_secrets: false,
            host_path: false,
            secrets: &NoSecrets,
            files: &HostFiles,
        }
    }
}

/// Something the output does differently from aac, about the agent field at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The manifests, in output order, and the warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub manifests: Vec<Manifest>,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// Every field that cannot be exported, at once.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Fields(Vec<Warning>),
}

/// What the HorizontalPodAutoscaler does: `spec.scaling` and `spec.autoscaling` together.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscaler {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// `Resource` metrics, one per resource name, `scaling.metrics` first.
    pub metrics: Vec<ScalingMetric>,
    pub scale_up_delay: Option<Duration>,
    pub scale_down_delay: Option<Duration>,
}

/// The autoscaler an agent asks for: when `autoscaling.enabled`, or (without an
/// `autoscaling` block) when `scaling.metrics` are given. Without any metric, CPU at 80%
/// (Kubernetes' own default).
pub fn effective_autoscaler(spec: &AgentSpec) -> Option<Autoscaler> {
    let scaling = spec.scaling.clone().unwrap_or_default();
    let on = match &spec.autoscaling {
        Some(a) => a.enabled,
        None => !scaling.metrics.is_empty(),
    };
    if !on {
        return None;
    }
    let auto = spec.autoscaling.clone().unwrap_or_default();
    let mut metrics: Vec<ScalingMetric> = Vec::new();
    let mut push = |m: ScalingMetric| {
        let name = m.resource.as_ref().map(|r| r.name.clone());
        if m.kind == "Resource"
            && name.is_some()
            && !metrics
                .iter()
                .any(|x| x.resource.as_ref().map(|r| &r.name) == name.as_ref())
        {
            metrics.push(m);
        }
    };
    for m in &scaling.metrics {
        push(m.clone());
    }
    for (name, pct) in [
        ("cpu", auto.target_cpu_utilization_percentage),
        ("memory", auto.target_memory_utilization_percentage),
    ] {
        if let Some(pct) = pct {
            push(utilization(name, pct));
        }
    }
    if metrics.is_empty() {
        metrics.push(utilization("cpu", 80));
    }
    let min = scaling.min_replicas.unwrap_or(1).max(1);
    let max = scaling
        .max_replicas
        .unwrap_or_else(|| min.max(scaling.replicas.unwrap_or(1)))
        .max(min);
    Some(Autoscaler {
        min_replicas: min,
        max_replicas: max,
        metrics,
        scale_up_delay: auto.scale_up_delay,
        scale_down_delay: auto.scale_down_delay,
    })
}

fn utilization(name: &str, pct: u32) -> ScalingMetric {
    ScalingMetric {
        kind: "Resource".into(),
        resource: Some(MetricResource {
            name: name.into(),
            target: MetricTarget {
                kind: "Utilization".into(),
                average_utilization: Some(pct),
                average_value: None,
                value: None,
            },
        }),
    }
}

/// Export `agent` (validated) as Kubernetes manifests.
pub fn generate(agent: &Agent, opts: &Options) -> Result<Generated, GenerateError> {
    let mut g = Gen::new(agent, opts);
    g.run();
    if g.errors.is_empty() {
        Ok(Generated {
            manifests: g.out,
            warnings: g.warnings,
        })
    } else {
        Err(GenerateError::Fields(g.errors))
    }
}

/// A Secret the output refers to: its Kubernetes name, the local one, and the keys used.
#[derive(Debug, Clone)]
struct SecretUse {
    local: String,
    keys: BTreeSet<String>,
    /// Kubernetes key -> local key.
    local_keys: BTreeMap<String, String>,
}

struct Gen<'a> {
    agent: &'a Agent,
    opts: &'a Options<'a>,
    warnings: Vec<Warning>,
    errors: Vec<Warning>,
    /// Deployment, container and object name prefix.
    base: String,
    /// The selector's value: the agent's own name.
    app: String,
    labels: Mapping,
    annotations: Obj,
    deployment_comments: Vec<String>,
    secrets: BTreeMap<String, SecretUse>,
    config_maps: Vec<Manifest>,
    claims: Vec<Manifest>,
    /// Output, in order.
    out: Vec<Manifest>,
}

fn warn(list: &mut Vec<Warning>, path: &str, message: impl Into<String>) {
    list.push(Warning {
        path: path.to_string(),
        message: message.into(),
    });
}

/// Whole seconds, rounded up, at least 1.
fn seconds(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl<'a> Gen<'a> {
    fn new(agent: &'a Agent, opts: &'a Options<'a>) -> Gen<'a> {
        Gen {
            agent,
            opts,
            warnings: Vec::new(),
            errors: Vec::new(),
            base: String::new(),
            app: agent.metadata.name.clone(),
            labels: Mapping::new(),
            annotations: Obj::new(),
            deployment_comments: Vec::new(),
            secrets: BTreeMap::new(),
            config_maps: Vec::new(),
            claims: Vec::new(),
            out: Vec::new(),
        }
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        warn(&mut self.warnings, path, message);
    }

    fn error(&mut self, path: &str, message: impl Into<String>) {
        warn(&mut self.errors, path, message);
    }

    fn annotate(&mut self, key: &str, value: impl Into<String>) {
        self.annotations.put(key, value.into());
    }

    fn metadata(&self, name: &str) -> Obj {
        Obj::new()
            .set("name", name)
            .set("labels", Value::Mapping(self.labels.clone()))
    }

    fn selector(&self) -> Value {
        string_map([(APP_NAME, self.app.as_str())])
    }

    fn run(&mut self) {
        self.names_and_labels();
        self.informational_annotations();
        let config = self.config_map();
        let container = self.container();
        let pod = self.pod_spec(container);
        // Secrets, claims and config maps are known once the container is built.
        if let Some(cm) = config {
            self.out.push(cm);
        }
        let cms = std::mem::take(&mut self.config_maps);
        self.out.extend(cms);
        self.secret_manifests();
        let claims = std::mem::take(&mut self.claims);
        self.out.extend(claims);
        let deployment = self.deployment(pod);
        self.out.push(deployment);
        if let Some(svc) = self.service() {
            self.out.push(svc);
        }
        if let Some(hpa) = self.autoscaler() {
            self.out.push(hpa);
        }
        self.network_policies();
    }

    // ---- names, labels, annotations ----

    fn names_and_labels(&mut self) {
        let m = &self.agent.metadata;
        self.base = names::dns1123_label(&m.name, "agent");
        if self.base != m.name {
            let msg = format!(
                "{:?} is not a valid Kubernetes name; the objects are named {:?}",
                m.name, self.base
            );
            self.warn("metadata.name", msg);
            let name = m.name.clone();
            self.annotate(ann::NAME, name);
        }
        let mut labels = Mapping::new();
        labels.insert(APP_NAME.into(), m.name.clone().into());
        if let Some(v) = &m.version {
            if names::is_label_value(v) {
                labels.insert(APP_VERSION.into(), v.clone().into());
            } else {
                let v = v.clone();
                self.annotate(ann::VERSION, v);
            }
        }
        labels.insert(MANAGED_BY.into(), MANAGER.into());
        let mut odd = BTreeMap::new();
        for (k, v) in &m.labels {
            if [APP_NAME, APP_VERSION, MANAGED_BY].contains(&k.as_str()) {
                self.warn(
                    &format!("metadata.labels.{k}"),
                    format!("{k} is set by aac kube generate; the agent's value is kept in the {} annotation", ann::LABELS),
                );
                odd.insert(k.clone(), v.clone());
            } else if names::is_qualified_name(k) && names::is_label_value(v) {
                labels.insert(k.clone().into(), v.clone().into());
            } else {
                self.warn(
                    &format!("metadata.labels.{k}"),
                    format!(
                        "{k}={v} is not a valid Kubernetes label; kept in the {} annotation",
                        ann::LABELS
                    ),
                );
                odd.insert(k.clone(), v.clone());
            }
        }
        if !odd.is_empty() {
            self.annotate(ann::LABELS, json(&odd));
        }
        self.labels = labels;
    }

    fn informational_annotations(&mut self) {
        let m = &self.agent.metadata;
        let s = &self.agent.spec;
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(d) = &m.description {
            pairs.push((ann::DESCRIPTION, d.clone()));
        }
        if let Some(a) = &m.author {
            pairs.push((ann::AUTHOR, a.clone()));
        }
        if !m.tags.is_empty() {
            pairs.push((ann::TAGS, json(&m.tags)));
        }
        if let Some(r) = &s.runtime {
            pairs.push((ann::RUNTIME, r.clone()));
        }
        if let Some(model) = &s.model {
            pairs.push((ann::MODEL, json(model)));
        }
        if !s.capabilities.is_empty() {
            pairs.push((ann::CAPABILITIES, json(&s.capabilities)));
        }
        if !s.dependencies.is_empty() {
            pairs.push((ann::DEPENDENCIES, json(&s.dependencies)));
        }
        match s.restart_policy {
            RestartPolicy::Always => {}
            other => {
                pairs.push((ann::RESTART_POLICY, other.to_string()));
                self.deployment_comments.push(format!(
                    "restartPolicy {other}: a Deployment's pods always restart (kept as the {} annotation)",
                    ann::RESTART_POLICY
                ));
            }
        }
        if s.logging != Logging::default() {
            pairs.push((
                ann::LOGGING,
                format!(
                    "max-size={},max-file={}",
                    quantity::format_docker_size(s.logging.max_size),
                    s.logging.max_file
                ),
            ));
        }
        match &s.network.mode {
            NetworkMode::Bridge | NetworkMode::Host => {}
            NetworkMode::None => {
                pairs.push((ann::NETWORK, "none".into()));
                self.warn(
                    "spec.network.mode",
                    "a pod always has a network; network mode none is kept as an annotation only",
                );
            }
            NetworkMode::Named(n) => {
                pairs.push((ann::NETWORK, n.clone()));
                self.warn(
                    "spec.network.mode",
                    format!("Kubernetes has one pod network; network {n:?} is kept as an annotation only"),
                );
            }
        }
        if !s.services.is_empty() {
            pairs.push((ann::SERVICES, ann::format_services(&s.services)));
        }
        for (k, v) in pairs {
            self.annotate(k, v);
        }
    }

    // ---- config ----

    fn config_map_name(&self) -> String {
        names::dns1123_subdomain(&format!("{}-config", self.base), "agent-config")
    }

    /// Kubernetes key for a `spec.config` key.
    fn config_key(&self, key: &str) -> String {
        if names::is_config_key(key) {
            key.to_string()
        } else {
            names::config_key(key)
        }
    }

    fn config_map(&mut self) -> Option<Manifest> {
        let config = &self.agent.spec.config;
        if config.is_empty() {
            return None;
        }
        let name = self.config_map_name();
        let mut data = Mapping::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in config {
            let key = self.config_key(k);
            if key != *k {
                self.warn(
                    &format!("spec.config.{k}"),
                    format!("{k:?} is not a valid ConfigMap key; written as {key:?}"),
                );
            }
            if let Some(prev) = seen.insert(key.clone(), k.clone()) {
                self.error(
                    &format!("spec.config.{k}"),
                    format!("{k:?} and {prev:?} are both written as the ConfigMap key {key:?}"),
                );
            }
            data.insert(key.into(), render_config_value(v).into());
        }
        self.annotate(ann::CONFIG, name.clone());
        let body = Obj::new()
            .set("apiVersion", "v1")
            .set("kind", "ConfigMap")
            .set("metadata", self.metadata(&name))
            .set("data", Value::Mapping(data));
        Some(Manifest {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name,
            comments: vec![format!("spec.config of agent {}", self.app)],
            body: body.into(),
        })
    }

    // ---- the container ----

    fn container(&mut self) -> Obj {
        let s = &self.agent.spec;
        let mut c = Obj::new()
            .set("name", self.base.clone())
            .set("image", self.agent.image_ref());
        if !s.command.is_empty() {
            c.put("command", s.command.clone());
        }
        if !s.args.is_empty() {
            c.put("args", s.args.clone());
        }
        if let Some(w) = &s.working_dir {
            c.put("workingDir", w.clone());
        }
        let env = self.env();
        let mut c = c.non_empty("env", env);
        let ports = self.container_ports();
        c = c.non_empty("ports", ports);
        let resources = self.resources();
        c = c.non_empty("resources", resources);
        if let Some(h) = &s.health_check {
            let h = h.clone();
            let (ready, live, startup) = self.probes(&h);
            c.put("readinessProbe", ready);
            if let Some(l) = live {
                c.put("livenessProbe", l);
            }
            if let Some(st) = startup {
                c.put("startupProbe", st);
            }
        }
        let sc = self.container_security();
        c.non_empty("securityContext", sc)
    }

    fn env(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        let env = self.agent.spec.environment.clone();
        for (i, e) in env.iter().enumerate() {
            let path = format!("spec.environment[{i}]");
            let v = match &e.source {
                EnvSource::Value { value } => Obj::new()
                    .set("name", e.name.clone())
                    .set("value", value.clone()),
                EnvSource::Config { key } => {
                    let k = key.clone().unwrap_or_else(|| e.name.clone());
                    let r = Obj::new()
                        .set("name", self.config_map_name())
                        .set("key", self.config_key(&k));
                    Obj::new()
                        .set("name", e.name.clone())
                        .set("valueFrom", Obj::new().set("configMapKeyRef", r))
                }
                EnvSource::Secret {
                    secret_name,
                    secret_key,
                } => {
                    let (name, key) = self.use_secret(&path, &e.name, secret_name, secret_key);
                    let r = Obj::new().set("name", name).set("key", key);
                    Obj::new()
                        .set("name", e.name.clone())
                        .set("valueFrom", Obj::new().set("secretKeyRef", r))
                }
            };
            out.push(v.into());
        }
        out
    }

    /// Record a use of a local secret; returns the Kubernetes Secret name and key. A secret
    /// given by name only (`secret_name` empty) is the secret named like `var`, with its only
    /// key.
    fn use_secret(
        &mut self,
        path: &str,
        var: &str,
        secret_name: &str,
        secret_key: &str,
    ) -> (String, String) {
        let local = if secret_name.is_empty() {
            var
        } else {
            secret_name
        };
        let local_key = if !secret_key.is_empty() {
            secret_key.to_string()
        } else {
            match self.opts.secrets.keys(local) {
                Ok(keys) if keys.len() == 1 => keys[0].clone(),
                Ok(keys) if keys.is_empty() => {
                    self.error(path, format!("secret {local} has no keys"));
                    var.to_string()
                }
                Ok(keys) => {
                    self.error(
                        path,
                        format!(
                            "secret {local} has {} keys ({}); name one with secretKey",
                            keys.len(),
                            keys.join(", ")
                        ),
                    );
                    var.to_string()
                }
                Err(_) => {
                    self.warn(
                        path,
                        format!("secret {local} is named without a key, and its keys are not known here: the Kubernetes Secret must hold the key {var}"),
                    );
                    var.to_string()
                }
            }
        };
        let name = names::dns1123_subdomain(local, "secret");
        if name != local {
            self.warn(
                path,
                format!("secret {local:?} is not a valid Kubernetes name; referenced as {name:?}"),
            );
        }
        let key = if names::is_config_key(&local_key) {
            local_key.clone()
        } else {
            let k = names::config_key(&local_key);
            self.warn(
                path,
                format!(
                    "secret key {local_key:?} is not a valid Kubernetes key; referenced as {k:?}"
                ),
            );
            k
        };
        let entry = self
            .secrets
            .entry(name.clone())
            .or_insert_with(|| SecretUse {
                local: local.to_string(),
                keys: BTreeSet::new(),
                local_keys: BTreeMap::new(),
            });
        entry.keys.insert(key.clone());
        entry.local_keys.insert(key.clone(), local_key);
        if entry.local != local {
            let other = entry.local.clone();
            self.error(
                path,
                format!(
                    "secrets {local:?} and {other:?} would both be the Kubernetes Secret {name:?}"
                ),
            );
        }
        (name, key)
    }

    fn port_name(p: u16, proto: Protocol) -> String {
        format!("{}-{p}", proto.as_str())
    }

    fn container_ports(&mut self) -> Vec<Value> {
        let s = &self.agent.spec;
        let mut seen: BTreeSet<(u16, &str)> = BTreeSet::new();
        let mut out = Vec::new();
        for p in &s.ports {
            if seen.insert((p.container, p.protocol.as_str())) {
                out.push(
                    Obj::new()
                        .set("name", Self::port_name(p.container, p.protocol))
                        .set("containerPort", u64::from(p.container))
                        .set("protocol", p.protocol.as_str().to_ascii_uppercase())
                        .into(),
                );
            }
        }
        // A probe's port is declared too, so that the probe names a port the pod has.
        if let Some(h) = &s.health_check {
            let port = match &h.probe {
                Probe::Http { port, .. } | Probe::Tcp { port } => Some(*port),
                _ => None,
            };
            if let Some(port) = port {
                if seen.insert((port, "tcp")) {
                    out.push(
                        Obj::new()
                            .set("name", format!("health-{port}"))
                            .set("containerPort", u64::from(port))
                            .set("protocol", "TCP")
                            .into(),
                    );
                }
            }
        }
        out
    }

    fn resources(&mut self) -> Obj {
        let r = &self.agent.spec.resources;
        let limits = Obj::new()
            .opt("cpu", r.limits.cpu.map(quantity::format_cpu))
            .opt("memory", r.limits.memory.map(quantity::format_bytes));
        let requests = Obj::new()
            .opt("cpu", r.requests.cpu.map(quantity::format_cpu))
            .opt("memory", r.requests.memory.map(quantity::format_bytes));
        if let Some(p) = r.limits.pids {
            self.annotate(ann::PIDS_LIMIT, p.to_string());
            self.warn(
                "spec.resources.limits.pids",
                format!("Kubernetes has no per-pod process limit (the node sets one); {p} is kept as the {} annotation", ann::PIDS_LIMIT),
            );
        }
        Obj::new()
            .non_empty("limits", limits)
            .non_empty("requests", requests)
    }

    fn probe_handler(&mut self, probe: &Probe) -> Obj {
        match probe {
            Probe::Command(argv) => Obj::new().set("exec", Obj::new().set("command", argv.clone())),
            Probe::Http { path, port, scheme } => {
                let mut h = Obj::new()
                    .set("path", path.clone())
                    .set("port", u64::from(*port));
                if *scheme == HttpScheme::Https {
                    h.put("scheme", "HTTPS");
                }
                Obj::new().set("httpGet", h)
            }
            Probe::Tcp { port } => {
                Obj::new().set("tcpSocket", Obj::new().set("port", u64::from(*port)))
            }
            Probe::File { path } => {
                let path = path.clone();
                self.annotate(ann::HEALTH_FILE, path.clone());
                self.warn(
                    "spec.healthCheck.file",
                    "Kubernetes has no file probe: it runs `/bin/sh -c test -e` in the container, which needs a shell in the image",
                );
                Obj::new().set(
                    "exec",
                    Obj::new().set(
                        "command",
                        vec![
                            "/bin/sh".to_string(),
                            "-c".to_string(),
                            format!("test -e {}", shell_quote(&path)),
                        ],
                    ),
                )
            }
        }
    }

    fn timing_warnings(&mut self, h: &HealthCheck) {
        for (field, d) in [
            ("interval", h.interval),
            ("timeout", h.timeout),
            ("startPeriod", h.start_period),
        ] {
            if d.subsec_nanos() > 0 || (d.is_zero() && field != "startPeriod") {
                self.warn(
                    &format!("spec.healthCheck.{field}"),
                    format!(
                        "Kubernetes counts probe times in whole seconds (at least 1); {d:?} becomes {}s",
                        seconds(d)
                    ),
                );
            }
        }
        if h.retries == 0 {
            self.warn(
                "spec.healthCheck.retries",
                "Kubernetes needs at least one failure to act; failureThreshold is 1",
            );
        }
    }

    /// Readiness always; liveness when the agent is restarted (or stopped) on failure;
    /// startup when there is a start period.
    fn probes(&mut self, h: &HealthCheck) -> (Obj, Option<Obj>, Option<Obj>) {
        self.timing_warnings(h);
        let handler = self.probe_handler(&h.probe);
        let with_timing = |mut o: Obj, period: u64, threshold: u64| {
            o.put("periodSeconds", period);
            o.put("timeoutSeconds", seconds(h.timeout));
            o.put("failureThreshold", threshold);
            o
        };
        let interval = seconds(h.interval);
        let retries = u64::from(h.retries.max(1));
        let ready = with_timing(handler.clone(), interval, retries);
        let live = match h.on_unhealthy {
            OnUnhealthy::None => None,
            // A failed liveness probe kills the container; its restart policy decides, as
            // with `kill`.
            OnUnhealthy::Restart | OnUnhealthy::Kill => {
                Some(with_timing(handler.clone(), interval, retries))
            }
            OnUnhealthy::Stop => {
                self.annotate(ann::ON_UNHEALTHY, "stop");
                self.warn(
                    "spec.healthCheck.onUnhealthy",
                    "Kubernetes restarts a container whose liveness probe fails; it cannot stop it",
                );
                Some(with_timing(handler.clone(), interval, retries))
            }
        };
        let startup = if h.start_period.is_zero() {
            None
        } else {
            let start = seconds(h.start_period);
            let period = gcd(start, interval).max(1);
            Some(with_timing(handler, period, start / period))
        };
        (ready, live, startup)
    }

    fn container_security(&mut self) -> Obj {
        let sec = self.agent.spec.security.clone();
        let mut o = Obj::new();
        if let Some(u) = sec.run_as_user {
            o.put("runAsUser", u64::from(u));
            if u != 0 {
                o.put("runAsNonRoot", true);
            }
        }
        if let Some(g) = sec.run_as_group {
            o.put("runAsGroup", u64::from(g));
        }
        if sec.read_only_root_filesystem {
            o.put("readOnlyRootFilesystem", true);
        }
        if sec.privileged {
            o.put("privileged", true);
        }
        let sys_admin = sec.privileged
            || sec
                .capabilities
                .add
                .iter()
                .any(|c| c == "SYS_ADMIN" || c == "ALL");
        if sec.no_new_privileges && sys_admin {
            self.warn(
                "spec.security.capabilities.add",
                "Kubernetes refuses allowPrivilegeEscalation: false together with SYS_ADMIN; it is left out",
            );
        } else {
            o.put("allowPrivilegeEscalation", !sec.no_new_privileges);
        }
        let caps = Obj::new()
            .non_empty("drop", sec.capabilities.drop.clone())
            .non_empty("add", sec.capabilities.add.clone());
        let mut o = o.non_empty("capabilities", caps);
        let seccomp = match &sec.seccomp_profile {
            SeccompProfile::Default => Obj::new().set("type", "RuntimeDefault"),
            SeccompProfile::Unconfined => Obj::new().set("type", "Unconfined"),
            SeccompProfile::Path(p) => {
                let file = p
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "profile.json".into());
                self.annotate(ann::SECCOMP_PROFILE, p.to_string_lossy().into_owned());
                self.warn(
                    "spec.security.seccompProfile",
                    format!("the profile must be installed on every node as aac/{file} in the kubelet's seccomp folder"),
                );
                Obj::new()
                    .set("type", "Localhost")
                    .set("localhostProfile", format!("aac/{file}"))
            }
        };
        o.put("seccompProfile", seccomp);
        o
    }

    // ---- pod: volumes, secrets, network ----

    fn pod_spec(&mut self, mut container: Obj) -> Obj {
        let (volumes, mounts) = self.volumes();
        if !mounts.is_empty() {
            container.put("volumeMounts", mounts);
        }
        let s = self.agent.spec.clone();
        let mut pod = Obj::new().set("automountServiceAccountToken", false);
        if let Some(h) = &s.hostname {
            let first = h.split('.').next().unwrap_or(h).to_string();
            if first != *h {
                self.annotate(ann::HOSTNAME, h.clone());
                self.warn(
                    "spec.hostname",
                    format!("a pod's hostname is one label: {first:?} (the full name is kept as an annotation)"),
                );
            }
            pod.put("hostname", names::dns1123_label(&first, "agent"));
        }
        if s.network.mode == NetworkMode::Host {
            pod.put("hostNetwork", true);
            pod.put("dnsPolicy", "ClusterFirstWithHostNet");
        }
        if !s.network.dns.is_empty() {
            let servers: Vec<String> = s.network.dns.iter().map(ToString::to_string).collect();
            pod.put("dnsConfig", Obj::new().set("nameservers", servers));
        }
        let mut psc = Obj::new();
        if !s.security.supplemental_groups.is_empty() {
            psc.put(
                "supplementalGroups",
                s.security
                    .supplemental_groups
                    .iter()
                    .map(|g| u64::from(*g))
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(fs) = self.fs_group() {
            psc.put("fsGroup", u64::from(fs));
        }
        let pod = pod.non_empty("securityContext", psc);
        pod.set("containers", vec![Value::from(container)])
            .non_empty("volumes", volumes)
    }

    /// Secret files are 0440 with the agent's group, as the agent owns them locally.
    fn fs_group(&self) -> Option<u32> {
        let sec = &self.agent.spec.security;
        if self.agent.spec.secrets.is_empty() {
            return None;
        }
        match (sec.run_as_group, sec.run_as_user) {
            (Some(g), _) if g != 0 => Some(g),
            (_, Some(u)) if u != 0 => Some(u),
            _ => None,
        }
    }

    fn volumes(&mut self) -> (Vec<Value>, Vec<Value>) {
        let mut volumes: Vec<Value> = Vec::new();
        let mut mounts: Vec<Value> = Vec::new();
        let vols = self.agent.spec.volumes.clone();
        let mut used_targets: BTreeSet<String> = BTreeSet::new();
        for (i, v) in vols.iter().enumerate() {
            let path = format!("spec.volumes[{i}]");
            used_targets.insert(v.target.trim_end_matches('/').to_string());
            let mount = |name: &str, sub: Option<String>| -> Value {
                let mut m = Obj::new()
                    .set("name", name)
                    .set("mountPath", v.target.clone());
                if let Some(s) = sub {
                    m.put("subPath", s);
                }
                if v.read_only {
                    m.put("readOnly", true);
                }
                m.into()
            };
            match v.kind {
                VolumeType::Bind => {
                    let name = format!("host-{i}");
                    if self.opts.host_path {
                        volumes.push(
                            Obj::new()
                                .set("name", name.as_str())
                                .set("hostPath", Obj::new().set("path", v.source.clone()))
                                .into(),
                        );
                    } else {
                        self.annotate(
                            &format!("{}{name}", ann::HOST_PATH_PREFIX),
                            v.source.clone(),
                        );
                        self.warn(
                            &path,
                            format!("the bind mount of {} becomes an empty emptyDir (--host-path mounts the node's path instead)", v.source),
                        );
                        volumes.push(
                            Obj::new()
                                .set("name", name.as_str())
                                .set("emptyDir", Obj::new())
                                .into(),
                        );
                    }
                    mounts.push(mount(&name, None));
                }
                VolumeType::Volume => {
                    let name = format!("data-{i}");
                    let claim = names::dns1123_subdomain(&v.source, "data");
                    if claim != v.source {
                        self.warn(
                            &format!("{path}.source"),
                            format!(
                                "{:?} is not a valid Kubernetes name; the claim is {claim:?}",
                                v.source
                            ),
                        );
                    }
                    self.claim(&path, &claim);
                    let mut pvc = Obj::new().set("claimName", claim);
                    if v.read_only {
                        pvc.put("readOnly", true);
                    }
                    volumes.push(
                        Obj::new()
                            .set("name", name.as_str())
                            .set("persistentVolumeClaim", pvc)
                            .into(),
                    );
                    mounts.push(mount(&name, None));
                }
                VolumeType::Tmpfs => {
                    let name = format!("tmpfs-{i}");
                    let mut dir = Obj::new().set("medium", "Memory");
                    let mut other = Vec::new();
                    for o in &v.options {
                        match o.strip_prefix("size=").map(values::parse_memory) {
                            Some(Ok(b)) => dir.put("sizeLimit", quantity::format_bytes(b)),
                            _ => other.push(o.clone()),
                        }
                    }
                    if !other.is_empty() {
                        self.annotate(
                            &format!("{}{name}", ann::TMPFS_OPTIONS_PREFIX),
                            other.join(","),
                        );
                        self.warn(
                            &format!("{path}.options"),
                            format!(
                                "an emptyDir has no mount options ({}); kept as an annotation",
                                other.join(",")
                            ),
                        );
                    }
                    volumes.push(
                        Obj::new()
                            .set("name", name.as_str())
                            .set("emptyDir", dir)
                            .into(),
                    );
                    mounts.push(mount(&name, None));
                }
                VolumeType::ConfigMap => {
                    let name = format!("config-{i}");
                    let Some((cm_name, sub)) = self.config_volume(&path, v) else {
                        continue;
                    };
                    volumes.push(
                        Obj::new()
                            .set("name", name.as_str())
                            .set("configMap", Obj::new().set("name", cm_name))
                            .into(),
                    );
                    mounts.push(mount(&name, sub));
                }
            }
        }
        if self.agent.spec.security.read_only_root_filesystem {
            for (name, target) in ann::READ_ONLY_ROOT_VOLUMES.iter().zip(["/tmp", "/run"]) {
                if used_targets.contains(target) {
                    continue;
                }
                volumes.push(
                    Obj::new()
                        .set("name", *name)
                        .set("emptyDir", Obj::new().set("medium", "Memory"))
                        .into(),
                );
                mounts.push(
                    Obj::new()
                        .set("name", *name)
                        .set("mountPath", target)
                        .into(),
                );
            }
        }
        if let Some((v, m)) = self.secret_volume(&used_targets) {
            volumes.push(v);
            mounts.push(m);
        }
        (volumes, mounts)
    }

    fn claim(&mut self, path: &str, claim: &str) {
        if self.claims.iter().any(|c| c.name == claim) {
            return;
        }
        let shared = self
            .agent
            .spec
            .scaling
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            > 1
            || effective_autoscaler(&self.agent.spec).is_some_and(|a| a.max_replicas > 1);
        if shared {
            self.warn(
                path,
                format!("the claim {claim} is ReadWriteOnce: all replicas must run on one node"),
            );
        }
        let body = Obj::new()
            .set("apiVersion", "v1")
            .set("kind", "PersistentVolumeClaim")
            .set(
                "metadata",
                Obj::new()
                    .set("name", claim)
                    .set("labels", string_map([(MANAGED_BY, MANAGER)])),
            )
            .set(
                "spec",
                Obj::new().set("accessModes", vec!["ReadWriteOnce"]).set(
                    "resources",
                    Obj::new().set("requests", Obj::new().set("storage", DEFAULT_CLAIM_SIZE)),
                ),
            );
        self.claims.push(Manifest {
            api_version: "v1".into(),
            kind: "PersistentVolumeClaim".into(),
            name: claim.to_string(),
            comments: vec![format!(
                "aac volume {claim}: aac volumes have no size, {DEFAULT_CLAIM_SIZE} is a default"
            )],
            body: body.into(),
        });
    }

    /// A ConfigMap with the files of a configMap volume; returns its name and the subPath
    /// (for a single file).
    fn config_volume(&mut self, path: &str, v: &VolumeSpec) -> Option<(String, Option<String>)> {
        let files = match self.opts.files.read(Path::new(&v.source)) {
            Ok(f) => f,
            Err(e) => {
                self.error(&format!("{path}.source"), format!("cannot read {e}"));
                return None;
            }
        };
        let stem = Path::new(&v.source)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let first = names::dns1123_label(
            &format!("{}-{}", self.base, names::dns1123_label(&stem, "files")),
            "agent-files",
        );
        let mut cm_name = first.clone();
        let mut n = 2;
        while self.config_maps.iter().any(|c| c.name == cm_name)
            || cm_name == self.config_map_name()
        {
            cm_name = format!("{}-{n}", first.trim_end_matches('-'));
            n += 1;
        }
        let (entries, single) = match files {
            SourceFiles::File(name, data) => (vec![(name, data)], true),
            SourceFiles::Folder(f) => (f, false),
        };
        let mut data = Mapping::new();
        let mut binary = Mapping::new();
        let mut total = 0usize;
        let mut sub = None;
        for (name, bytes) in entries {
            let key = if names::is_config_key(&name) {
                name.clone()
            } else {
                let k = names::config_key(&name);
                if !single {
                    self.warn(
                        &format!("{path}.source"),
                        format!("file {name:?} is not a valid ConfigMap key; it appears as {k:?}"),
                    );
                }
                k
            };
            total += bytes.len();
            if single {
                sub = Some(key.clone());
            }
            match String::from_utf8(bytes) {
                Ok(text) => {
                    data.insert(key.into(), text.into());
                }
                Err(e) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(e.into_bytes());
                    binary.insert(key.into(), b64.into());
                }
            }
        }
        if total > CONFIG_MAP_MAX {
            self.error(
                &format!("{path}.source"),
                format!(
                    "{} holds {total} bytes; a ConfigMap holds at most 1 MiB",
                    v.source
                ),
            );
            return None;
        }
        let body = Obj::new()
            .set("apiVersion", "v1")
            .set("kind", "ConfigMap")
            .set("metadata", self.metadata(&cm_name))
            .non_empty("data", Value::Mapping(data))
            .non_empty("binaryData", Value::Mapping(binary));
        self.config_maps.push(Manifest {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: cm_name.clone(),
            comments: vec![format!("the files of {} ({path})", v.source)],
            body: body.into(),
        });
        Some((cm_name, sub))
    }

    /// `spec.secrets` as one projected volume at /run/secrets: each secret a file named like
    /// the entry, as aac delivers them locally (no subPath, so updates reach the pod).
    fn secret_volume(&mut self, used_targets: &BTreeSet<String>) -> Option<(Value, Value)> {
        let secrets = self.agent.spec.secrets.clone();
        if secrets.is_empty() {
            return None;
        }
        if used_targets.contains(SECRETS_DIR) {
            self.error(
                "spec.secrets",
                format!("a volume is mounted at {SECRETS_DIR}, where the secrets go"),
            );
            return None;
        }
        // Kubernetes Secret -> items, in order of first use.
        let mut sources: Vec<(String, Vec<Value>)> = Vec::new();
        for (i, s) in secrets.iter().enumerate() {
            let path = format!("spec.secrets[{i}]");
            if !matches!(s.from.as_str(), "secret" | "kubernetes-secret") {
                self.warn(
                    &format!("{path}.from"),
                    format!("`from: {}` is read on this host; in Kubernetes the file comes from the Secret {:?}", s.from, s.secret_name),
                );
            }
            if s.name.starts_with('/') || s.name.split('/').any(|c| c == ".." || c.is_empty()) {
                self.error(
                    &format!("{path}.name"),
                    format!("{:?} is not a file name under {SECRETS_DIR}", s.name),
                );
                continue;
            }
            let (name, key) = self.use_secret(&path, &s.name, &s.secret_name, &s.secret_key);
            let item: Value = Obj::new()
                .set("key", key)
                .set("path", s.name.clone())
                .into();
            match sources.iter_mut().find(|(n, _)| *n == name) {
                Some((_, items)) => items.push(item),
                None => sources.push((name, vec![item])),
            }
        }
        let mode: u64 = if self.fs_group().is_some() {
            0o440
        } else {
            0o400
        };
        let projected = Obj::new().set("defaultMode", mode).set(
            "sources",
            sources
                .into_iter()
                .map(|(name, items)| {
                    Value::from(
                        Obj::new().set("secret", Obj::new().set("name", name).set("items", items)),
                    )
                })
                .collect::<Vec<_>>(),
        );
        let volume = Obj::new()
            .set("name", "secrets")
            .set("projected", projected);
        let mount = Obj::new()
            .set("name", "secrets")
            .set("mountPath", SECRETS_DIR)
            .set("readOnly", true);
        Some((volume.into(), mount.into()))
    }

    fn secret_manifests(&mut self) {
        if self.secrets.is_empty() {
            return;
        }
        let uses = self.secrets.clone();
        let renamed: BTreeMap<&str, &str> = uses
            .iter()
            .filter(|(name, u)| **name != u.local)
            .map(|(name, u)| (name.as_str(), u.local.as_str()))
            .collect();
        if !renamed.is_empty() {
            let j = json(&renamed);
            self.annotate(ann::SECRET_NAMES, j);
        }
        if !self.opts.include_secrets {
            let list: Vec<String> = uses
                .iter()
                .map(|(name, u)| {
                    format!(
                        "{name} ({})",
                        u.keys.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                })
                .collect();
            self.deployment_comments.push(format!(
                "Secrets referenced, not included (create them in the cluster, or use --include-secrets): {}",
                list.join("; ")
            ));
            return;
        }
        self.warn(
            "spec",
            format!(
                "the output holds the values of {} secret{}: keep it as private as the secrets",
                uses.len(),
                if uses.len() == 1 { "" } else { "s" }
            ),
        );
        for (name, u) in uses {
            let mut data = Mapping::new();
            for key in &u.keys {
                let local_key = u
                    .local_keys
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| key.clone());
                match self.opts.secrets.value(&u.local, &local_key) {
                    Ok(v) => {
                        let b64 = base64::engine::general_purpose::STANDARD.encode(v);
                        data.insert(key.clone().into(), b64.into());
                    }
                    Err(e) => self.error("spec", e),
                }
            }
            let body = Obj::new()
                .set("apiVersion", "v1")
                .set("kind", "Secret")
                .set(
                    "metadata",
                    Obj::new()
                        .set("name", name.as_str())
                        .set("labels", string_map([(MANAGED_BY, MANAGER)])),
                )
                .set("type", "Opaque")
                .set("data", Value::Mapping(data));
            self.out.push(Manifest {
                api_version: "v1".into(),
                kind: "Secret".into(),
                name: name.clone(),
                comments: vec![format!("secret values from the local secret {}", u.local)],
                body: body.into(),
            });
        }
    }

    // ---- the objects ----

    fn deployment(&mut self, pod: Obj) -> Manifest {
        let hpa = effective_autoscaler(&self.agent.spec);
        let replicas = self.agent.spec.scaling.as_ref().and_then(|s| s.replicas);
        let mut spec = Obj::new();
        match (&hpa, replicas) {
            (Some(_), Some(r)) => {
                self.annotate(ann::REPLICAS, r.to_string());
                self.deployment_comments.push(format!(
                    "no replicas: the HorizontalPodAutoscaler {} governs them (aac starts {r})",
                    self.base
                ));
            }
            (None, Some(r)) => spec.put("replicas", u64::from(r)),
            _ => {}
        }
        let spec = spec
            .set("selector", Obj::new().set("matchLabels", self.selector()))
            .set(
                "template",
                Obj::new()
                    .set(
                        "metadata",
                        Obj::new().set("labels", Value::Mapping(self.labels.clone())),
                    )
                    .set("spec", pod),
            );
        let meta = self
            .metadata(&self.base)
            .non_empty("annotations", self.annotations.clone());
        let body = Obj::new()
            .set("apiVersion", "apps/v1")
            .set("kind", "Deployment")
            .set("metadata", meta)
            .set("spec", spec);
        let mut comments = vec![format!("agent {} exported by aac kube generate", self.app)];
        comments.append(&mut self.deployment_comments);
        Manifest {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: self.base.clone(),
            comments,
            body: body.into(),
        }
    }

    fn service(&mut self) -> Option<Manifest> {
        let ports = self.agent.spec.ports.clone();
        if ports.is_empty() {
            return None;
        }
        let name = names::dns1035_label(&self.base, "agent");
        if name != self.base {
            self.warn(
                "metadata.name",
                format!("a Service name starts with a letter: the Service is {name:?}"),
            );
        }
        let mut seen: BTreeSet<(u16, &str)> = BTreeSet::new();
        let mut out = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let port = match p.host {
                Some(h) if h > 0 => h,
                _ => p.container,
            };
            if !seen.insert((port, p.protocol.as_str())) {
                self.warn(
                    &format!("spec.ports[{i}]"),
                    format!(
                        "the Service already has port {port}/{}; this one is left out",
                        p.protocol.as_str()
                    ),
                );
                continue;
            }
            out.push(Value::from(
                Obj::new()
                    .set("name", Self::port_name(port, p.protocol))
                    .set("port", u64::from(port))
                    .set("targetPort", u64::from(p.container))
                    .set("protocol", p.protocol.as_str().to_ascii_uppercase()),
            ));
        }
        let publish: Vec<String> = ports
            .iter()
            .filter(|p| p.host.is_some())
            .map(ann::format_port)
            .collect();
        let meta = self.metadata(&name).set(
            "annotations",
            string_map([(ann::PUBLISH, publish.join(",").as_str())]),
        );
        let body = Obj::new()
            .set("apiVersion", "v1")
            .set("kind", "Service")
            .set("metadata", meta)
            .set(
                "spec",
                Obj::new()
                    .set("type", "ClusterIP")
                    .set("selector", self.selector())
                    .set("ports", out),
            );
        Some(Manifest {
            api_version: "v1".into(),
            kind: "Service".into(),
            name,
            comments: vec![format!(
                "the ports of agent {}; {} says which ones aac publishes on the host",
                self.app,
                ann::PUBLISH
            )],
            body: body.into(),
        })
    }

    fn autoscaler(&mut self) -> Option<Manifest> {
        let a = effective_autoscaler(&self.agent.spec)?;
        let s = &self.agent.spec;
        if s.scaling.as_ref().and_then(|x| x.max_replicas).is_none() {
            self.warn(
                "spec.scaling.maxReplicas",
                format!(
                    "autoscaling without maxReplicas: the HPA allows at most {}",
                    a.max_replicas
                ),
            );
        }
        for (i, m) in s.scaling.iter().flat_map(|x| x.metrics.iter()).enumerate() {
            if m.kind != "Resource" || m.resource.is_none() {
                let kind = m.kind.clone();
                self.warn(
                    &format!("spec.scaling.metrics[{i}]"),
                    format!(
                        "only Resource metrics are exported; a {kind} metric needs its own fields"
                    ),
                );
            }
        }
        let r = &s.resources;
        for m in &a.metrics {
            let Some(res) = &m.resource else { continue };
            if res.target.kind != "Utilization" {
                continue;
            }
            let has_request = match res.name.as_str() {
                "cpu" => r.requests.cpu.is_some() || r.limits.cpu.is_some(),
                "memory" => r.requests.memory.is_some() || r.limits.memory.is_some(),
                _ => true,
            };
            if !has_request {
                let n = res.name.clone();
                self.warn(
                    "spec.resources.requests",
                    format!("the HPA's {n} utilisation is relative to the {n} request, and there is none"),
                );
            }
        }
        let metrics: Vec<Value> = a
            .metrics
            .iter()
            .filter_map(|m| {
                let res = m.resource.as_ref()?;
                let t = &res.target;
                let target = Obj::new()
                    .set("type", t.kind.clone())
                    .opt("averageUtilization", t.average_utilization.map(u64::from))
                    .opt("averageValue", t.average_value.clone())
                    .opt("value", t.value.clone());
                Some(
                    Obj::new()
                        .set("type", "Resource")
                        .set(
                            "resource",
                            Obj::new()
                                .set("name", res.name.clone())
                                .set("target", target),
                        )
                        .into(),
                )
            })
            .collect();
        for m in &a.metrics {
            if let Some(t) = m.resource.as_ref().map(|r| &r.target) {
                for q in [&t.average_value, &t.value].into_iter().flatten() {
                    if quantity::parse_nanos(q).is_none() {
                        self.error(
                            "spec.scaling.metrics",
                            format!("{q:?} is not a Kubernetes quantity"),
                        );
                    }
                }
            }
        }
        let mut behavior = Obj::new();
        for (field, key, d) in [
            ("scaleUpDelay", "scaleUp", a.scale_up_delay),
            ("scaleDownDelay", "scaleDown", a.scale_down_delay),
        ] {
            if let Some(d) = d {
                let mut secs = d.as_secs();
                if secs > MAX_STABILIZATION {
                    self.warn(
                        &format!("spec.autoscaling.{field}"),
                        format!("Kubernetes allows at most {MAX_STABILIZATION}s; {secs}s becomes {MAX_STABILIZATION}s"),
                    );
                    secs = MAX_STABILIZATION;
                }
                behavior.put(key, Obj::new().set("stabilizationWindowSeconds", secs));
            }
        }
        let spec = Obj::new()
            .set(
                "scaleTargetRef",
                Obj::new()
                    .set("apiVersion", "apps/v1")
                    .set("kind", "Deployment")
                    .set("name", self.base.clone()),
            )
            .set("minReplicas", u64::from(a.min_replicas))
            .set("maxReplicas", u64::from(a.max_replicas))
            .set("metrics", metrics)
            .non_empty("behavior", behavior);
        let body = Obj::new()
            .set("apiVersion", "autoscaling/v2")
            .set("kind", "HorizontalPodAutoscaler")
            .set("metadata", self.metadata(&self.base))
            .set("spec", spec);
        Some(Manifest {
            api_version: "autoscaling/v2".into(),
            kind: "HorizontalPodAutoscaler".into(),
            name: self.base.clone(),
            comments: vec![format!(
                "spec.scaling and spec.autoscaling of agent {}",
                self.app
            )],
            body: body.into(),
        })
    }

    fn network_policies(&mut self) {
        let sec = self.agent.spec.network.security.clone();
        if sec.allow_external_connections {
            if !sec.allowed_hosts.is_empty() {
                self.warn(
                    "spec.network.security.allowedHosts",
                    "allowExternalConnections is true, so egress is not restricted and the list has no effect",
                );
            }
            return;
        }
        let name = names::dns1123_subdomain(&format!("{}-egress", self.base), "agent-egress");
        let dns_ports = vec![
            Value::from(Obj::new().set("protocol", "UDP").set("port", 53u64)),
            Value::from(Obj::new().set("protocol", "TCP").set("port", 53u64)),
        ];
        let mut egress = vec![Value::from(
            Obj::new()
                .set(
                    "to",
                    vec![Value::from(
                        Obj::new()
                            .set(
                                "namespaceSelector",
                                Obj::new().set(
                                    "matchLabels",
                                    string_map([("kubernetes.io/metadata.name", "kube-system")]),
                                ),
                            )
                            .set(
                                "podSelector",
                                Obj::new()
                                    .set("matchLabels", string_map([("k8s-app", "kube-dns")])),
                            ),
                    )],
                )
                .set("ports", dns_ports),
        )];
        for d in &self.agent.spec.services {
            egress.push(Value::from(
                Obj::new()
                    .set(
                        "to",
                        vec![Value::from(
                            Obj::new().set(
                                "podSelector",
                                Obj::new()
                                    .set("matchLabels", string_map([(APP_NAME, d.name.as_str())])),
                            ),
                        )],
                    )
                    .set(
                        "ports",
                        vec![Value::from(
                            Obj::new()
                                .set("protocol", d.protocol.as_str().to_ascii_uppercase())
                                .set("port", u64::from(d.port)),
                        )],
                    ),
            ));
        }
        let mut comments = vec![format!(
            "spec.network.security of agent {}: egress only to DNS (kube-dns) and its services (pods labelled {APP_NAME}=<service>)",
            self.app
        )];
        let hosts = sec.allowed_hosts.clone();
        let mut meta = self.metadata(&name);
        if !hosts.is_empty() {
            meta.put(
                "annotations",
                string_map([(ann::ALLOWED_HOSTS, hosts.join(",").as_str())]),
            );
            if self.opts.fqdn_policy == FqdnPolicy::None {
                comments.push(format!(
                    "NOT ENFORCED: the allowed hosts ({}) cannot be named in a NetworkPolicy; their traffic is denied here. Use --fqdn-policy cilium on a Cilium cluster.",
                    hosts.join(", ")
                ));
                self.warn(
                    "spec.network.security.allowedHosts",
                    "a NetworkPolicy cannot name hosts: they are not reachable in the cluster (use --fqdn-policy cilium)",
                );
            }
        }
        let body = Obj::new()
            .set("apiVersion", "networking.k8s.io/v1")
            .set("kind", "NetworkPolicy")
            .set("metadata", meta)
            .set(
                "spec",
                Obj::new()
                    .set(
                        "podSelector",
                        Obj::new().set("matchLabels", self.selector()),
                    )
                    .set("policyTypes", vec!["Egress"])
                    .set("egress", egress),
            );
        self.out.push(Manifest {
            api_version: "networking.k8s.io/v1".into(),
            kind: "NetworkPolicy".into(),
            name,
            comments,
            body: body.into(),
        });
        if self.opts.fqdn_policy == FqdnPolicy::Cilium && !hosts.is_empty() {
            let cnp = self.cilium_policy(&hosts);
            self.out.push(cnp);
        }
    }

    fn cilium_policy(&mut self, hosts: &[String]) -> Manifest {
        let name = names::dns1123_subdomain(&format!("{}-fqdn", self.base), "agent-fqdn");
        // Host names by port (None: any port), in order of first appearance.
        let mut groups: Vec<(Option<u16>, Vec<Value>)> = Vec::new();
        let mut wildcard = false;
        for (i, h) in hosts.iter().enumerate() {
            let (host, port) = ann::split_host_port(h.trim());
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            let selector = if let Some(rest) = host.strip_prefix("*.") {
                wildcard = true;
                Obj::new().set("matchPattern", format!("**.{rest}"))
            } else if host.contains('*') {
                self.error(
                    &format!("spec.network.security.allowedHosts[{i}]"),
                    format!("{h:?}: a wildcard is only allowed as the first label (*.example.com)"),
                );
                continue;
            } else {
                Obj::new().set("matchName", host)
            };
            match groups.iter_mut().find(|(p, _)| *p == port) {
                Some((_, list)) => list.push(selector.into()),
                None => groups.push((port, vec![selector.into()])),
            }
        }
        let dns_rule = Obj::new()
            .set(
                "toEndpoints",
                vec![Value::from(Obj::new().set(
                    "matchLabels",
                    string_map([
                        ("k8s:io.kubernetes.pod.namespace", "kube-system"),
                        ("k8s:k8s-app", "kube-dns"),
                    ]),
                ))],
            )
            .set(
                "toPorts",
                vec![Value::from(
                    Obj::new()
                        .set(
                            "ports",
                            vec![Value::from(
                                Obj::new().set("port", "53").set("protocol", "ANY"),
                            )],
                        )
                        .set(
                            "rules",
                            Obj::new().set(
                                "dns",
                                vec![Value::from(Obj::new().set("matchPattern", "*"))],
                            ),
                        ),
                )],
            );
        let mut egress = vec![Value::from(dns_rule)];
        for (port, selectors) in groups {
            let mut rule = Obj::new().set("toFQDNs", selectors);
            if let Some(p) = port {
                rule.put(
                    "toPorts",
                    vec![Value::from(Obj::new().set(
                        "ports",
                        vec![Value::from(
                            Obj::new().set("port", p.to_string()).set("protocol", "ANY"),
                        )],
                    ))],
                );
            }
            egress.push(rule.into());
        }
        let mut comments = vec![format!(
            "the allowed hosts of agent {}, enforced by Cilium's DNS proxy (all lookups go through it)",
            self.app
        )];
        if wildcard {
            comments.push(
                "**.example.com matches subdomains at any depth (Cilium 1.19 and later; earlier versions match one label)"
                    .into(),
            );
        }
        let body = Obj::new()
            .set("apiVersion", "cilium.io/v2")
            .set("kind", "CiliumNetworkPolicy")
            .set("metadata", self.metadata(&name))
            .set(
                "spec",
                Obj::new()
                    .set(
                        "endpointSelector",
                        Obj::new().set("matchLabels", self.selector()),
                    )
                    .set("egress", egress),
            );
        Manifest {
            api_version: "cilium.io/v2".into(),
            kind: "CiliumNetworkPolicy".into(),
            name,
            comments,
            body: body.into(),
        }
    }
}
