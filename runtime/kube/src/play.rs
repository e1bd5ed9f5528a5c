//! Kubernetes YAML -> agents, for `aac kube play`.
//!
//! Reads Deployments and Pods (one agent per container), the Services that select them (their
//! ports are published on the host), ConfigMaps and Secrets (to create locally), and what
//! `aac kube generate` writes besides: HorizontalPodAutoscalers (scaling), PersistentVolumeClaims
//! (named volumes), NetworkPolicies and CiliumNetworkPolicies (egress). Probes become aac health
//! checks, run by aac's monitor (an `httpGet` is an HTTP request from the monitor, not curl in
//! the container). Every field aac does not carry out is named in a warning with its line;
//! nothing is dropped silently. Problems that make an object impossible to run are errors,
//! all reported at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aac_agent::*;
use base64::Engine;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::annotations as ann;
use crate::generate::{APP_NAME, APP_VERSION, MANAGED_BY, SECRETS_DIR};
use crate::positions::{join_index, join_key, DocPositions};
use crate::quantity;

/// How to convert.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// Where `play` will write the ConfigMaps' files: `<config_dir>/<configmap>/<key>`;
    /// configMap volumes point there.
    pub config_dir: PathBuf,
}

/// Everything a Kubernetes YAML asks to run here.
#[derive(Debug, Clone, Default)]
pub struct Play {
    pub agents: Vec<PlayedAgent>,
    /// Secrets to create in the local store before the agents start.
    pub secrets: Vec<SecretObject>,
    /// ConfigMaps to write under [`PlayOptions::config_dir`].
    pub config_maps: Vec<ConfigMapObject>,
    /// Named volumes the agents use.
    pub volumes: Vec<PlayVolume>,
    /// Every field not carried out, with its line.
    pub warnings: Vec<Diagnostic>,
}

/// One agent and how many replicas to start.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayedAgent {
    pub agent: Agent,
    pub replicas: u32,
    /// `Deployment/name` or `Pod/name`.
    pub source: String,
}

/// A Secret from the file. Its values never appear in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretObject {
    pub name: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for SecretObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretObject")
            .field("name", &self.name)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A ConfigMap from the file and the folder its keys are written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapObject {
    pub name: String,
    pub data: BTreeMap<String, Vec<u8>>,
    pub dir: PathBuf,
}

/// A named volume an agent uses; `ephemeral` ones (from an emptyDir) go with the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayVolume {
    pub name: String,
    pub ephemeral: bool,
}

/// Convert Kubernetes YAML text. `file` labels diagnostics.
pub fn play(src: &str, file: Option<&Path>, opts: &PlayOptions) -> Result<Play, Diagnostics> {
    let pos = DocPositions::from_str(src, file);
    let mut r = Rep {
        pos: &pos,
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(src).enumerate() {
        match Value::deserialize(de) {
            Ok(v) => docs.push((i, v)),
            Err(e) => {
                let location = e.location().map(|l| Location {
                    file: file.map(Path::to_path_buf),
                    line: l.line(),
                    column: l.column(),
                });
                let msg = e.to_string();
                let msg = match msg.find(" at line ") {
                    Some(i) => msg[..i].to_string(),
                    None => msg,
                };
                return Err(Diagnostics(vec![Diagnostic::new("", msg).at(location)]));
            }
        }
    }
    let mut objects = Vec::new();
    for (doc, v) in &docs {
        collect(&mut r, *doc, "", v, &mut objects);
    }
    if objects.is_empty() && r.errors.is_empty() {
        r.errors
            .push(Diagnostic::new("", "no Kubernetes objects in the text").at(pos.value(0, "")));
    }
    let mut p = Player {
        r,
        opts,
        objects,
        config_maps: BTreeMap::new(),
        secrets: BTreeMap::new(),
        claims: BTreeSet::new(),
        out: Play::default(),
        workloads: Vec::new(),
    };
    p.run();
    let Player { mut r, mut out, .. } = p;
    if r.errors.is_empty() {
        aac_agent::diagnostics::sort(&mut r.warnings);
        out.warnings = r.warnings;
        Ok(out)
    } else {
        aac_agent::diagnostics::sort(&mut r.errors);
        Err(Diagnostics(r.errors))
    }
}

// ---- reporting ----

struct Rep<'p> {
    pos: &'p DocPositions,
    warnings: Vec<Diagnostic>,
    errors: Vec<Diagnostic>,
}

/// Where an object is: its document, the path of the object in it (`items[2]` in a List), and
/// how messages name it (`Deployment/web`).
#[derive(Debug, Clone)]
struct Cx {
    doc: usize,
    base: String,
    object: String,
}

impl Cx {
    fn path(&self, p: &str) -> String {
        if self.base.is_empty() {
            p.to_string()
        } else if p.is_empty() {
            self.base.clone()
        } else if p.starts_with('[') {
            format!("{}{p}", self.base)
        } else {
            format!("{}.{p}", self.base)
        }
    }
}

impl Rep<'_> {
    fn diag(&self, cx: &Cx, path: &str, key: bool, msg: String) -> Diagnostic {
        let full = cx.path(path);
        let location = if key {
            self.pos.key(cx.doc, &full)
        } else {
            self.pos.value(cx.doc, &full)
        };
        let shown = if path.is_empty() {
            cx.object.clone()
        } else {
            format!("{} {path}", cx.object)
        };
        Diagnostic::new(shown, msg).at(location)
    }

    fn warn(&mut self, cx: &Cx, path: &str, msg: impl Into<String>) {
        let d = self.diag(cx, path, true, msg.into());
        self.warnings.push(d);
    }

    fn error(&mut self, cx: &Cx, path: &str, msg: impl Into<String>) {
        let d = self.diag(cx, path, false, msg.into());
        self.errors.push(d);
    }

    fn ignored(&mut self, cx: &Cx, path: &str) {
        self.warn(cx, path, "is not supported by aac; ignored");
    }
}

fn untag(v: &Value) -> &Value {
    let mut v = v;
    while let Value::Tagged(t) = v {
        v = &t.value;
    }
    v
}

fn kind_of(v: &Value) -> &'static str {
    match untag(v) {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The keys of one mapping: `take` marks a key as understood, `finish` warns about the rest.
struct Fields<'v> {
    path: String,
    map: Option<&'v Mapping>,
    known: Vec<&'static str>,
}

impl<'v> Fields<'v> {
    fn new(r: &mut Rep, cx: &Cx, v: &'v Value, path: &str) -> Fields<'v> {
        let map = match untag(v) {
            Value::Mapping(m) => Some(m),
            Value::Null => None,
            other => {
                r.error(
                    cx,
                    path,
                    format!("expected a mapping, found {}", kind_of(other)),
                );
                None
            }
        };
        Fields {
            path: path.to_string(),
            map,
            known: Vec::new(),
        }
    }

    fn take(&mut self, name: &'static str) -> Option<(&'v Value, String)> {
        self.known.push(name);
        let v = untag(self.map?.get(name)?);
        if v.is_null() {
            return None;
        }
        Some((v, join_key(&self.path, name)))
    }

    /// Mark keys that need no action (server-written or meaningless here).
    fn accept(&mut self, names: &[&'static str]) {
        self.known.extend_from_slice(names);
    }

    fn finish(self, r: &mut Rep, cx: &Cx) {
        let Some(map) = self.map else { return };
        for (k, _) in map {
            let k = untag(k).as_str().unwrap_or("?");
            if !self.known.contains(&k) {
                r.ignored(cx, &join_key(&self.path, k));
            }
        }
    }
}

fn string(r: &mut Rep, cx: &Cx, v: &Value, path: &str) -> Option<String> {
    match untag(v) {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => {
            r.error(
                cx,
                path,
                format!("expected a string, found {}", kind_of(other)),
            );
            None
        }
    }
}

fn opt_string(r: &mut Rep, cx: &Cx, f: &mut Fields, name: &'static str) -> Option<String> {
    let (v, p) = f.take(name)?;
    string(r, cx, v, &p)
}

fn integer(r: &mut Rep, cx: &Cx, v: &Value, path: &str) -> Option<i64> {
    let n = match untag(v) {
        Value::Number(n) => n.as_i64(),
        _ => None,
    };
    if n.is_none() {
        r.error(
            cx,
            path,
            format!("expected a whole number, found {}", kind_of(v)),
        );
    }
    n
}

fn opt_u32(r: &mut Rep, cx: &Cx, f: &mut Fields, name: &'static str) -> Option<u32> {
    let (v, p) = f.take(name)?;
    let n = integer(r, cx, v, &p)?;
    match u32::try_from(n) {
        Ok(n) => Some(n),
        Err(_) => {
            r.error(cx, &p, format!("{n} is out of range"));
            None
        }
    }
}

fn boolean(r: &mut Rep, cx: &Cx, v: &Value, path: &str) -> Option<bool> {
    match untag(v) {
        Value::Bool(b) => Some(*b),
        other => {
            r.error(
                cx,
                path,
                format!("expected true or false, found {}", kind_of(other)),
            );
            None
        }
    }
}

fn opt_bool(r: &mut Rep, cx: &Cx, f: &mut Fields, name: &'static str) -> Option<bool> {
    let (v, p) = f.take(name)?;
    boolean(r, cx, v, &p)
}

fn seq<'v>(r: &mut Rep, cx: &Cx, v: &'v Value, path: &str) -> Vec<(&'v Value, String)> {
    match untag(v) {
        Value::Sequence(s) => s
            .iter()
            .enumerate()
            .map(|(i, x)| (untag(x), join_index(path, i)))
            .collect(),
        other => {
            r.error(
                cx,
                path,
                format!("expected a list, found {}", kind_of(other)),
            );
            Vec::new()
        }
    }
}

fn string_list(r: &mut Rep, cx: &Cx, v: &Value, path: &str) -> Vec<String> {
    seq(r, cx, v, path)
        .into_iter()
        .filter_map(|(x, p)| string(r, cx, x, &p))
        .collect()
}

fn string_map(r: &mut Rep, cx: &Cx, v: &Value, path: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match untag(v) {
        Value::Mapping(m) => {
            for (k, x) in m {
                let Some(k) = untag(k).as_str() else {
                    r.error(cx, path, "keys must be strings");
                    continue;
                };
                let p = join_key(path, k);
                let s = if untag(x).is_null() {
                    Some(String::new())
                } else {
                    string(r, cx, x, &p)
                };
                if let Some(s) = s {
                    out.insert(k.to_string(), s);
                }
            }
        }
        other => r.error(
            cx,
            path,
            format!("expected a mapping, found {}", kind_of(other)),
        ),
    }
    out
}

// ---- the objects of the text ----

#[derive(Debug, Clone)]
struct Object<'v> {
    cx: Cx,
    kind: String,
    api_version: String,
    name: String,
    value: &'v Value,
}

/// Objects of a document (a `List`'s items each).
fn collect<'v>(r: &mut Rep, doc: usize, base: &str, v: &'v Value, out: &mut Vec<Object<'v>>) {
    let v = untag(v);
    if v.is_null() {
        return;
    }
    let cx = Cx {
        doc,
        base: base.to_string(),
        object: if base.is_empty() {
            format!("document {}", doc + 1)
        } else {
            format!("document {} {base}", doc + 1)
        },
    };
    let Value::Mapping(m) = v else {
        r.error(
            &cx,
            "",
            format!("a Kubernetes object is a mapping, found {}", kind_of(v)),
        );
        return;
    };
    let get = |k: &str| {
        m.get(k)
            .map(untag)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (Some(api_version), Some(kind)) = (get("apiVersion"), get("kind")) else {
        r.error(&cx, "", "needs apiVersion and kind");
        return;
    };
    if kind == "List" {
        if let Some(Value::Sequence(items)) = m.get("items").map(untag) {
            for (i, item) in items.iter().enumerate() {
                collect(r, doc, &join_index(&cx.path("items"), i), item, out);
            }
        }
        return;
    }
    let name = m
        .get("metadata")
        .and_then(|md| untag(md).get("name"))
        .map(untag)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let cx = Cx {
        object: format!("{kind}/{}", if name.is_empty() { "?" } else { &name }),
        ..cx
    };
    if name.is_empty() {
        r.error(&cx, "metadata.name", "is required");
        return;
    }
    out.push(Object {
        cx,
        kind,
        api_version,
        name,
        value: v,
    });
}

/// Metadata of an object: labels and annotations; everything a server writes is accepted.
#[derive(Debug, Clone, Default)]
struct Meta {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

fn metadata(r: &mut Rep, cx: &Cx, v: Option<(&Value, String)>) -> Meta {
    let mut meta = Meta::default();
    let Some((v, path)) = v else { return meta };
    let mut f = Fields::new(r, cx, v, &path);
    f.accept(&["name"]);
    f.accept(SERVER_METADATA);
    if let Some((ns, p)) = f.take("namespace") {
        let ns = string(r, cx, ns, &p).unwrap_or_default();
        r.warn(cx, &p, format!("aac has no namespaces; {ns:?} is ignored"));
    }
    if let Some((v, p)) = f.take("labels") {
        meta.labels = string_map(r, cx, v, &p);
    }
    if let Some((v, p)) = f.take("annotations") {
        meta.annotations = string_map(r, cx, v, &p);
    }
    f.finish(r, cx);
    meta
}

/// Which label selector picks which labels.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// ---- the conversion ----

/// A Deployment or Pod: its pod template and what it tells about the agents.
#[derive(Debug, Clone)]
struct Workload {
    cx: Cx,
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    replicas: Option<u32>,
    /// Index of its agents in `out.agents`.
    agents: Vec<usize>,
    /// Container port name -> (agent index, port).
    port_names: BTreeMap<String, (usize, u16)>,
    /// Container ports declared -> agent index.
    ports: HashMap<(u16, Protocol), usize>,
    is_deployment: bool,
}

struct Player<'a, 'v> {
    r: Rep<'a>,
    opts: &'a PlayOptions,
    objects: Vec<Object<'v>>,
    config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    claims: BTreeSet<String>,
    workloads: Vec<Workload>,
    out: Play,
}

impl Player<'_, '_> {
    fn run(&mut self) {
        let objects = self.objects.clone();
        for o in &objects {
            match o.kind.as_str() {
                "ConfigMap" => self.config_map(o),
                "Secret" => self.secret(o),
                "PersistentVolumeClaim" => self.claim(o),
                _ => {}
            }
        }
        for o in &objects {
            match o.kind.as_str() {
                "Deployment" => self.workload(o, true),
                "Pod" => self.workload(o, false),
                _ => {}
            }
        }
        for o in &objects {
            match o.kind.as_str() {
                "Service" => self.service(o),
                "HorizontalPodAutoscaler" => self.autoscaler(o),
                "NetworkPolicy" => self.network_policy(o),
                "CiliumNetworkPolicy" => self.cilium_policy(o),
                "ConfigMap" | "Secret" | "PersistentVolumeClaim" | "Deployment" | "Pod" => {}
                other => {
                    let msg = format!(
                        "kind {other} ({}) is not supported by aac kube play; ignored",
                        o.api_version
                    );
                    self.r.warn(&o.cx, "kind", msg);
                }
            }
        }
        self.finish_agents();
    }

    fn expect_api(&mut self, o: &Object, want: &[&str]) {
        if !want.contains(&o.api_version.as_str()) {
            let msg = format!(
                "apiVersion {} is not {}; read as if it were",
                o.api_version,
                want.join(" or ")
            );
            self.r.warn(&o.cx, "apiVersion", msg);
        }
    }

    fn top<'v>(&mut self, o: &Object<'v>) -> Fields<'v> {
        let mut f = Fields::new(&mut self.r, &o.cx, o.value, "");
        f.accept(&["apiVersion", "kind", "status"]);
        f
    }

    fn data_map(
        &mut self,
        cx: &Cx,
        f: &mut Fields,
        text: &'static str,
        binary: &'static str,
    ) -> BTreeMap<String, Vec<u8>> {
        let mut data = BTreeMap::new();
        if let Some((v, p)) = f.take(text) {
            for (k, s) in string_map(&mut self.r, cx, v, &p) {
                data.insert(k, s.into_bytes());
            }
        }
        if let Some((v, p)) = f.take(binary) {
            for (k, s) in string_map(&mut self.r, cx, v, &p) {
                match base64::engine::general_purpose::STANDARD.decode(s.trim()) {
                    Ok(b) => {
                        data.insert(k, b);
                    }
                    Err(_) => self.r.error(
                        cx,
                        &join_key(&p, &k),
                        "is not base64 (the value is not shown)",
                    ),
                }
            }
        }
        data
    }

    fn config_map(&mut self, o: &Object) {
        self.expect_api(o, &["v1"]);
        let mut f = self.top(o);
        metadata(&mut self.r, &o.cx, f.take("metadata"));
        let data = self.data_map(&o.cx, &mut f, "data", "binaryData");
        f.accept(&["immutable"]);
        f.finish(&mut self.r, &o.cx);
        self.config_maps.insert(o.name.clone(), data.clone());
        self.out.config_maps.push(ConfigMapObject {
            name: o.name.clone(),
            data,
            dir: self.opts.config_dir.join(&o.name),
        });
    }

    fn secret(&mut self, o: &Object) {
        self.expect_api(o, &["v1"]);
        let mut f = self.top(o);
        metadata(&mut self.r, &o.cx, f.take("metadata"));
        // stringData wins over data, as in Kubernetes
        let mut data = self.data_map(&o.cx, &mut f, "stringData", "data");
        if let Some((v, p)) = f.take("stringData") {
            for (k, s) in string_map(&mut self.r, &o.cx, v, &p) {
                data.insert(k, s.into_bytes());
            }
        }
        if let Some(t) = opt_string(&mut self.r, &o.cx, &mut f, "type") {
            if t != "Opaque" {
                self.r.warn(
                    &o.cx,
                    "type",
                    format!("{t}: its keys become secret files like any other"),
                );
            }
        }
        f.accept(&["immutable"]);
        f.finish(&mut self.r, &o.cx);
        self.secrets.insert(o.name.clone(), data.clone());
        self.out.secrets.push(SecretObject {
            name: o.name.clone(),
            data,
        });
    }

    fn claim(&mut self, o: &Object) {
        self.expect_api(o, &["v1"]);
        let mut f = self.top(o);
        metadata(&mut self.r, &o.cx, f.take("metadata"));
        if let Some((v, p)) = f.take("spec") {
            let mut s = Fields::new(&mut self.r, &o.cx, v, &p);
            // A local volume has no size and is reachable from every agent on the host.
            s.accept(&["accessModes", "resources", "volumeMode"]);
            s.finish(&mut self.r, &o.cx);
        }
        f.finish(&mut self.r, &o.cx);
        self.claims.insert(o.name.clone());
    }

    fn add_volume(&mut self, name: &str, ephemeral: bool) {
        if !self.out.volumes.iter().any(|v| v.name == name) {
            self.out.volumes.push(PlayVolume {
                name: name.to_string(),
                ephemeral,
            });
        }
    }

    // ---- Deployment and Pod ----

    fn workload(&mut self, o: &Object, is_deployment: bool) {
        self.expect_api(o, if is_deployment { &["apps/v1"] } else { &["v1"] });
        let cx = o.cx.clone();
        let mut f = self.top(o);
        let meta = metadata(&mut self.r, &cx, f.take("metadata"));
        let Some((spec, sp)) = f.take("spec") else {
            self.r.error(&cx, "spec", "is required");
            return;
        };
        f.finish(&mut self.r, &cx);
        let mut labels = meta.labels.clone();
        let mut annotations = meta.annotations.clone();
        let mut replicas = None;
        let (pod, pod_path) = if is_deployment {
            let mut s = Fields::new(&mut self.r, &cx, spec, &sp);
            replicas = opt_u32(&mut self.r, &cx, &mut s, "replicas");
            let selector = match s.take("selector") {
                Some((v, p)) => {
                    let mut sel = Fields::new(&mut self.r, &cx, v, &p);
                    let m = match sel.take("matchLabels") {
                        Some((v, p)) => string_map(&mut self.r, &cx, v, &p),
                        None => BTreeMap::new(),
                    };
                    if let Some((_, p)) = sel.take("matchExpressions") {
                        self.r
                            .warn(&cx, &p, "match expressions are not checked here");
                    }
                    sel.finish(&mut self.r, &cx);
                    Some((m, p))
                }
                None => {
                    self.r.error(&cx, "spec.selector", "is required");
                    None
                }
            };
            let Some((template, tp)) = s.take("template") else {
                self.r.error(&cx, "spec.template", "is required");
                return;
            };
            for k in [
                "strategy",
                "minReadySeconds",
                "revisionHistoryLimit",
                "progressDeadlineSeconds",
                "paused",
            ] {
                if let Some((_, p)) = s.take(k) {
                    self.r
                        .warn(&cx, &p, "is about rollouts across a cluster; ignored");
                }
            }
            s.finish(&mut self.r, &cx);
            let mut t = Fields::new(&mut self.r, &cx, template, &tp);
            let tmeta = metadata(&mut self.r, &cx, t.take("metadata"));
            let Some((pod, pp)) = t.take("spec") else {
                self.r.error(&cx, &join_key(&tp, "spec"), "is required");
                return;
            };
            t.finish(&mut self.r, &cx);
            if let Some((sel, p)) = selector {
                if !selects(&sel, &tmeta.labels) {
                    self.r.error(
                        &cx,
                        &p,
                        "does not select the template's labels (Kubernetes refuses this Deployment)",
                    );
                }
            }
            // The template's labels are the pods' (what Services select).
            labels = tmeta.labels.clone();
            for (k, v) in &meta.labels {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in tmeta.annotations {
                annotations.entry(k).or_insert(v);
            }
            (pod, pp)
        } else {
            (spec, sp)
        };
        let mut w = Workload {
            cx: cx.clone(),
            name: o.name.clone(),
            labels,
            annotations,
            replicas,
            agents: Vec::new(),
            port_names: BTreeMap::new(),
            ports: HashMap::new(),
            is_deployment,
        };
        self.pod(&mut w, pod, &pod_path);
        self.workloads.push(w);
    }

    fn pod(&mut self, w: &mut Workload, v: &Value, path: &str) {
        let cx = w.cx.clone();
        let mut f = Fields::new(&mut self.r, &cx, v, path);
        // Pod-wide settings, applied to each container's agent.
        let mut base = AgentSpec::default();
        let mut pod_sec = PodSecurity::default();
        if let Some((h, p)) = f.take("hostname") {
            base.hostname = string(&mut self.r, &cx, h, &p);
        }
        if let Some((s, p)) = f.take("subdomain") {
            if let (Some(h), Some(s)) = (&base.hostname, string(&mut self.r, &cx, s, &p)) {
                base.hostname = Some(format!("{h}.{s}"));
            }
        }
        if let Some(h) = w.annotations.get(ann::HOSTNAME) {
            base.hostname = Some(h.clone());
        }
        if opt_bool(&mut self.r, &cx, &mut f, "hostNetwork") == Some(true) {
            base.network.mode = NetworkMode::Host;
        }
        f.accept(&["dnsPolicy"]);
        if let Some((d, p)) = f.take("dnsConfig") {
            let mut dc = Fields::new(&mut self.r, &cx, d, &p);
            if let Some((ns, np)) = dc.take("nameservers") {
                for (s, sp) in seq(&mut self.r, &cx, ns, &np) {
                    match string(&mut self.r, &cx, s, &sp).map(|s| s.parse()) {
                        Some(Ok(ip)) => base.network.dns.push(ip),
                        Some(Err(_)) => self.r.error(&cx, &sp, "is not an IP address"),
                        None => {}
                    }
                }
            }
            dc.finish(&mut self.r, &cx);
        }
        if let Some((s, p)) = f.take("securityContext") {
            pod_sec = self.pod_security(&cx, s, &p);
        }
        let restart = if w.is_deployment {
            if let Some((_, p)) = f.take("restartPolicy") {
                // a Deployment's pods can only restart always
                self.r.warn(&cx, &p, "a Deployment's pods restart always");
            }
            RestartPolicy::Always
        } else {
            match opt_string(&mut self.r, &cx, &mut f, "restartPolicy").as_deref() {
                None | Some("Always") => RestartPolicy::Always,
                Some("OnFailure") => RestartPolicy::OnFailure { max_retries: None },
                Some("Never") => RestartPolicy::No,
                Some(other) => {
                    self.r.error(
                        &cx,
                        &join_key(path, "restartPolicy"),
                        format!("{other:?} is not Always, OnFailure or Never"),
                    );
                    RestartPolicy::Always
                }
            }
        };
        base.restart_policy = restart;
        if opt_bool(&mut self.r, &cx, &mut f, "automountServiceAccountToken") == Some(true) {
            self.r.warn(
                &cx,
                &join_key(path, "automountServiceAccountToken"),
                "there is no service account here; nothing is mounted",
            );
        }
        if opt_bool(&mut self.r, &cx, &mut f, "enableServiceLinks") == Some(true) {
            self.r.warn(
                &cx,
                &join_key(path, "enableServiceLinks"),
                "aac does not set Service environment variables",
            );
        }
        for k in [
            "terminationGracePeriodSeconds",
            "activeDeadlineSeconds",
            "serviceAccountName",
            "serviceAccount",
            "nodeSelector",
            "nodeName",
            "affinity",
            "tolerations",
            "topologySpreadConstraints",
            "priorityClassName",
            "priority",
            "schedulerName",
            "imagePullSecrets",
            "initContainers",
            "ephemeralContainers",
            "shareProcessNamespace",
            "hostPID",
            "hostIPC",
            "hostUsers",
            "hostAliases",
            "runtimeClassName",
            "preemptionPolicy",
            "overhead",
            "readinessGates",
            "resourceClaims",
            "os",
            "setHostnameAsFQDN",
        ] {
            if f.take(k).is_some() {
                self.r.ignored(&cx, &join_key(path, k));
            }
        }
        let volumes: BTreeMap<String, (Value, String)> = match f.take("volumes") {
            Some((v, p)) => seq(&mut self.r, &cx, v, &p)
                .into_iter()
                .filter_map(|(item, ip)| {
                    let name = item.get("name").and_then(Value::as_str)?.to_string();
                    Some((name, (item.clone(), ip)))
                })
                .collect(),
            None => BTreeMap::new(),
        };
        let containers = match f.take("containers") {
            Some((v, p)) => seq(&mut self.r, &cx, v, &p),
            None => Vec::new(),
        };
        f.finish(&mut self.r, &cx);
        if containers.is_empty() {
            self.r.error(
                &cx,
                &join_key(path, "containers"),
                "needs at least one container",
            );
            return;
        }
        if containers.len() > 1 {
            self.r.warn(
                &cx,
                &join_key(path, "containers"),
                format!(
                    "{} containers become {} agents; they do not share localhost or volumes' emptyDirs",
                    containers.len(),
                    containers.len()
                ),
            );
        }
        let single = containers.len() == 1;
        let mut used_volumes = BTreeSet::new();
        for (c, cp) in containers {
            let idx = self.container(
                w,
                &base,
                &pod_sec,
                &volumes,
                &mut used_volumes,
                c,
                &cp,
                single,
            );
            if let Some(i) = idx {
                w.agents.push(i);
            }
        }
        for (name, (_, p)) in &volumes {
            if !used_volumes.contains(name) {
                self.r.warn(
                    &cx,
                    p,
                    format!("volume {name} is not mounted by any container; ignored"),
                );
            }
        }
    }

    fn pod_security(&mut self, cx: &Cx, v: &Value, path: &str) -> PodSecurity {
        let mut s = PodSecurity::default();
        let mut f = Fields::new(&mut self.r, cx, v, path);
        s.common = self.security_common(cx, &mut f);
        if let Some((g, p)) = f.take("supplementalGroups") {
            for (x, xp) in seq(&mut self.r, cx, g, &p) {
                if let Some(n) = integer(&mut self.r, cx, x, &xp) {
                    match u32::try_from(n) {
                        Ok(n) => s.supplemental_groups.push(n),
                        Err(_) => self.r.error(cx, &xp, format!("{n} is out of range")),
                    }
                }
            }
        }
        // Secret files are owned by the agent's user here; fsGroup has nothing to change.
        f.accept(&["fsGroup", "fsGroupChangePolicy"]);
        for k in [
            "sysctls",
            "seLinuxOptions",
            "windowsOptions",
            "appArmorProfile",
            "supplementalGroupsPolicy",
            "seLinuxChangePolicy",
        ] {
            if f.take(k).is_some() {
                self.r.ignored(cx, &join_key(path, k));
            }
        }
        f.finish(&mut self.r, cx);
        s
    }

    /// Fields pod and container security contexts share.
    fn security_common(&mut self, cx: &Cx, f: &mut Fields) -> SecurityCommon {
        let mut s = SecurityCommon {
            run_as_user: opt_u32(&mut self.r, cx, f, "runAsUser"),
            run_as_group: opt_u32(&mut self.r, cx, f, "runAsGroup"),
            ..SecurityCommon::default()
        };
        if let Some((v, p)) = f.take("runAsNonRoot") {
            s.run_as_non_root = boolean(&mut self.r, cx, v, &p).map(|b| (b, p));
        }
        if let Some((v, p)) = f.take("seccompProfile") {
            let mut sf = Fields::new(&mut self.r, cx, v, &p);
            let t = opt_string(&mut self.r, cx, &mut sf, "type");
            let local = opt_string(&mut self.r, cx, &mut sf, "localhostProfile");
            sf.finish(&mut self.r, cx);
            s.seccomp = match t.as_deref() {
                Some("RuntimeDefault") => Some(SeccompChoice::Default),
                Some("Unconfined") => Some(SeccompChoice::Unconfined),
                Some("Localhost") => Some(SeccompChoice::Localhost(local.unwrap_or_default(), p)),
                Some(other) => {
                    self.r.error(
                        cx,
                        &join_key(&p, "type"),
                        format!("{other:?} is not RuntimeDefault, Unconfined or Localhost"),
                    );
                    None
                }
                None => None,
            };
        }
        s
    }

    #[allow(clippy::too_many_arguments)]
    fn container(
        &mut self,
        w: &mut Workload,
        base: &AgentSpec,
        pod_sec: &PodSecurity,
        volumes: &BTreeMap<String, (Value, String)>,
        used_volumes: &mut BTreeSet<String>,
        v: &Value,
        path: &str,
        single: bool,
    ) -> Option<usize> {
        let cx = w.cx.clone();
        let mut f = Fields::new(&mut self.r, &cx, v, path);
        let cname = opt_string(&mut self.r, &cx, &mut f, "name").unwrap_or_default();
        let agent_name = self.agent_name(w, &cname, single, path);
        let mut spec = base.clone();
        spec.image = opt_string(&mut self.r, &cx, &mut f, "image");
        if spec.image.is_none() {
            self.r.error(&cx, &join_key(path, "image"), "is required");
        }
        match opt_string(&mut self.r, &cx, &mut f, "imagePullPolicy").as_deref() {
            None | Some("IfNotPresent") => {}
            Some(other) => self.r.warn(
                &cx,
                &join_key(path, "imagePullPolicy"),
                format!("{other}: aac uses the local image when there is one (IfNotPresent)"),
            ),
        }
        if let Some((c, p)) = f.take("command") {
            spec.command = string_list(&mut self.r, &cx, c, &p);
        }
        if let Some((a, p)) = f.take("args") {
            spec.args = string_list(&mut self.r, &cx, a, &p);
        }
        spec.working_dir = opt_string(&mut self.r, &cx, &mut f, "workingDir");
        self.own_config(w, &mut spec);
        if let Some((e, p)) = f.take("env") {
            self.env(&cx, w, &mut spec, e, &p);
        }
        if let Some((e, p)) = f.take("envFrom") {
            self.env_from(&cx, &mut spec, e, &p);
        }
        let mut declared: Vec<(u16, Protocol, Option<String>, String)> = Vec::new();
        if let Some((ports, p)) = f.take("ports") {
            for (port, pp) in seq(&mut self.r, &cx, ports, &p) {
                if let Some(d) = self.container_port(&cx, &mut spec, port, &pp) {
                    declared.push(d);
                }
            }
        }
        if let Some((res, p)) = f.take("resources") {
            spec.resources = self.resources(&cx, res, &p);
        }
        if let Some(pids) = w.annotations.get(ann::PIDS_LIMIT) {
            match pids.parse::<i64>() {
                Ok(n) if n > 0 => spec.resources.limits.pids = Some(n),
                _ => self.r.warn(
                    &cx,
                    "metadata.annotations",
                    format!("{}: {pids:?} is not a process count", ann::PIDS_LIMIT),
                ),
            }
        }
        let probes = [
            f.take("readinessProbe"),
            f.take("livenessProbe"),
            f.take("startupProbe"),
        ];
        let mut sec = ContainerSecurity::default();
        if let Some((s, p)) = f.take("securityContext") {
            sec = self.container_security(&cx, s, &p);
        }
        let mounts = f.take("volumeMounts");
        for k in [
            "stdin",
            "stdinOnce",
            "tty",
            "lifecycle",
            "terminationMessagePath",
            "terminationMessagePolicy",
            "volumeDevices",
            "resizePolicy",
            "restartPolicy",
            "restartPolicyRules",
        ] {
            if f.take(k).is_some() {
                self.r.ignored(&cx, &join_key(path, k));
            }
        }
        f.finish(&mut self.r, &cx);

        // security: container settings over the pod's
        let common = sec.common.or(&pod_sec.common);
        spec.security.run_as_user = common.run_as_user;
        spec.security.run_as_group = common.run_as_group;
        spec.security.supplemental_groups = pod_sec.supplemental_groups.clone();
        if let Some((true, p)) = &common.run_as_non_root {
            match common.run_as_user {
                Some(0) => self.r.error(
                    &cx,
                    p,
                    "runAsNonRoot with runAsUser 0: Kubernetes would not start it",
                ),
                Some(_) => {}
                None => self.r.warn(
                    &cx,
                    p,
                    "aac does not check that the image's user is not root; set runAsUser",
                ),
            }
        }
        spec.security.read_only_root_filesystem = sec.read_only_root_filesystem;
        spec.security.no_new_privileges = sec.no_new_privileges;
        spec.security.capabilities = sec.capabilities;
        spec.security.seccomp_profile = match common.seccomp {
            None | Some(SeccompChoice::Default) => SeccompProfile::Default,
            Some(SeccompChoice::Unconfined) => SeccompProfile::Unconfined,
            Some(SeccompChoice::Localhost(name, p)) => {
                match w.annotations.get(ann::SECCOMP_PROFILE) {
                    Some(path) => SeccompProfile::Path(PathBuf::from(path)),
                    None => {
                        self.r.warn(&cx, &p, format!("the node profile {name:?} is not on this host; aac's default profile applies"));
                        SeccompProfile::Default
                    }
                }
            }
        };

        // volumes
        if let Some((m, p)) = mounts {
            for (mount, mp) in seq(&mut self.r, &cx, m, &p) {
                self.mount(
                    w,
                    &cx,
                    &agent_name,
                    &mut spec,
                    volumes,
                    used_volumes,
                    mount,
                    &mp,
                );
            }
        }

        // probes
        let [ready, live, startup] = probes;
        let port_names: BTreeMap<String, u16> = declared
            .iter()
            .filter_map(|(port, _, name, _)| name.clone().map(|n| (n, *port)))
            .collect();
        spec.health_check = self.health_check(&cx, w, &port_names, ready, live, startup);

        // ports: what the container declares; Services publish them later
        let probe_port = match spec.health_check.as_ref().map(|h| &h.probe) {
            Some(Probe::Http { port, .. }) | Some(Probe::Tcp { port }) => Some(*port),
            _ => None,
        };
        for (port, proto, name, _) in &declared {
            let generated_probe_port = name.as_deref() == Some(format!("health-{port}").as_str())
                && probe_port == Some(*port);
            if !generated_probe_port
                && !spec
                    .ports
                    .iter()
                    .any(|x| x.container == *port && x.protocol == *proto)
            {
                spec.ports.push(PortSpec {
                    container: *port,
                    host: None,
                    protocol: *proto,
                    host_ip: None,
                });
            }
        }

        if let Some(r) = w.replicas {
            spec.scaling = Some(Scaling {
                replicas: Some(r),
                ..Scaling::default()
            });
        }
        let agent = self.agent_from(w, agent_name, spec);
        let idx = self.out.agents.len();
        for (port, proto, name, _) in &declared {
            w.ports.entry((*port, *proto)).or_insert(idx);
            if let Some(n) = name {
                w.port_names.insert(n.clone(), (idx, *port));
            }
        }
        self.out.agents.push(PlayedAgent {
            agent,
            replicas: w.replicas.unwrap_or(1),
            source: format!(
                "{}/{}",
                if w.is_deployment { "Deployment" } else { "Pod" },
                w.name
            ),
        });
        Some(idx)
    }

    fn agent_name(&mut self, w: &Workload, container: &str, single: bool, path: &str) -> String {
        let wanted = match w.annotations.get(ann::NAME) {
            Some(n) if single && validate::check_agent_name(n).is_ok() => return n.clone(),
            _ if single => w.name.clone(),
            _ => format!("{}-{container}", w.name),
        };
        if validate::check_agent_name(&wanted).is_ok() {
            return wanted;
        }
        let mut n = crate::names::dns1123_label(&wanted, "agent");
        n.truncate(63);
        let n = n.trim_end_matches('-').to_string();
        self.r.warn(
            &w.cx,
            &join_key(path, "name"),
            format!("{wanted:?} is not an agent name; the agent is {n:?}"),
        );
        n
    }

    /// The agent: metadata from the workload's labels and annotations.
    fn agent_from(&mut self, w: &Workload, name: String, mut spec: AgentSpec) -> Agent {
        let cx = &w.cx;
        let a = &w.annotations;
        let mut meta = Metadata {
            name,
            version: w
                .labels
                .get(APP_VERSION)
                .cloned()
                .or_else(|| a.get(ann::VERSION).cloned()),
            description: a.get(ann::DESCRIPTION).cloned(),
            author: a.get(ann::AUTHOR).cloned(),
            ..Metadata::default()
        };
        for (k, v) in &w.labels {
            if ![APP_NAME, APP_VERSION, MANAGED_BY].contains(&k.as_str()) {
                meta.labels.insert(k.clone(), v.clone());
            }
        }
        let mut json_ann = |key: &str| -> Option<serde_json::Value> {
            let s = a.get(key)?;
            match serde_json::from_str(s) {
                Ok(v) => Some(v),
                Err(_) => {
                    self.r.warn(
                        cx,
                        "metadata.annotations",
                        format!("{key} is not JSON; ignored"),
                    );
                    None
                }
            }
        };
        let list = |v: Option<serde_json::Value>| -> Vec<String> {
            v.and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default()
        };
        meta.tags = list(json_ann(ann::TAGS));
        if let Some(v) = json_ann(ann::LABELS) {
            let m: BTreeMap<String, String> = serde_json::from_value(v).unwrap_or_default();
            meta.labels.extend(m);
        }
        spec.capabilities = list(json_ann(ann::CAPABILITIES));
        spec.dependencies = list(json_ann(ann::DEPENDENCIES));
        spec.model = json_ann(ann::MODEL).and_then(|v| serde_json::from_value(v).ok());
        spec.runtime = a.get(ann::RUNTIME).cloned();
        if let Some(p) = a.get(ann::RESTART_POLICY) {
            match values::parse_restart_policy(p) {
                Ok(rp) => spec.restart_policy = rp,
                Err(e) => self.r.warn(
                    cx,
                    "metadata.annotations",
                    format!("{}: {e}", ann::RESTART_POLICY),
                ),
            }
        }
        if let Some(l) = a.get(ann::LOGGING) {
            for part in l.split(',') {
                match part.split_once('=') {
                    Some(("max-size", v)) => match values::parse_memory(v) {
                        Ok(b) => spec.logging.max_size = b,
                        Err(e) => self.r.warn(
                            cx,
                            "metadata.annotations",
                            format!("{}: {e}", ann::LOGGING),
                        ),
                    },
                    Some(("max-file", v)) => match v.parse() {
                        Ok(n) => spec.logging.max_file = n,
                        Err(_) => self.r.warn(
                            cx,
                            "metadata.annotations",
                            format!("{}: {v:?} is not a count", ann::LOGGING),
                        ),
                    },
                    _ => self.r.warn(
                        cx,
                        "metadata.annotations",
                        format!(
                            "{}: {part:?} is not max-size=... or max-file=...",
                            ann::LOGGING
                        ),
                    ),
                }
            }
        }
        if let Some(n) = a.get(ann::NETWORK) {
            spec.network.mode = NetworkMode::parse(n);
        }
        if let Some(s) = a.get(ann::SERVICES) {
            match ann::parse_services(s) {
                Ok(s) => spec.services = s,
                Err(e) => self.r.warn(
                    cx,
                    "metadata.annotations",
                    format!("{}: {e}", ann::SERVICES),
                ),
            }
        }
        let known: BTreeSet<&str> = [
            ann::NAME,
            ann::DESCRIPTION,
            ann::AUTHOR,
            ann::TAGS,
            ann::VERSION,
            ann::LABELS,
            ann::RUNTIME,
            ann::MODEL,
            ann::CAPABILITIES,
            ann::DEPENDENCIES,
            ann::REPLICAS,
            ann::RESTART_POLICY,
            ann::ON_UNHEALTHY,
            ann::HEALTH_FILE,
            ann::PIDS_LIMIT,
            ann::LOGGING,
            ann::NETWORK,
            ann::SERVICES,
            ann::HOSTNAME,
            ann::SECCOMP_PROFILE,
            ann::CONFIG,
            ann::SECRET_NAMES,
        ]
        .into_iter()
        .collect();
        let unused: Vec<&str> = a
            .keys()
            .map(String::as_str)
            .filter(|k| {
                !known.contains(k)
                    && !k.starts_with(ann::HOST_PATH_PREFIX)
                    && !k.starts_with(ann::TMPFS_OPTIONS_PREFIX)
            })
            .collect();
        if !unused.is_empty() {
            self.r.warn(
                cx,
                "metadata.annotations",
                format!("not used by aac: {}", unused.join(", ")),
            );
        }
        Agent {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            metadata: meta,
            spec,
        }
    }

    // ---- environment ----

    /// `spec.config` whole, from the ConfigMap `generate` wrote it to.
    fn own_config(&mut self, w: &Workload, spec: &mut AgentSpec) {
        let Some(cm) = w.annotations.get(ann::CONFIG) else {
            return;
        };
        match self.config_maps.get(cm) {
            Some(data) => {
                for (k, bytes) in data {
                    let text = String::from_utf8_lossy(bytes).into_owned();
                    spec.config.insert(k.clone(), Value::String(text));
                }
            }
            None => self.r.warn(
                &w.cx,
                "metadata.annotations",
                format!("{}: ConfigMap {cm} is not in the file", ann::CONFIG),
            ),
        }
    }

    fn env(&mut self, cx: &Cx, w: &Workload, spec: &mut AgentSpec, v: &Value, path: &str) {
        let own_config = w.annotations.get(ann::CONFIG).cloned();
        for (item, ip) in seq(&mut self.r, cx, v, path) {
            let mut f = Fields::new(&mut self.r, cx, item, &ip);
            let name = opt_string(&mut self.r, cx, &mut f, "name").unwrap_or_default();
            let value = opt_string(&mut self.r, cx, &mut f, "value");
            let from = f.take("valueFrom");
            f.finish(&mut self.r, cx);
            let source = match (value, from) {
                (Some(value), None) => Some(EnvSource::Value { value }),
                (None, None) => Some(EnvSource::Value {
                    value: String::new(),
                }),
                (Some(_), Some((_, p))) => {
                    self.r.error(cx, &p, "cannot be combined with value");
                    None
                }
                (None, Some((vf, p))) => {
                    self.value_from(cx, w, spec, own_config.as_deref(), &name, vf, &p)
                }
            };
            if let Some(source) = source {
                spec.environment.push(EnvVar { name, source });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn value_from(
        &mut self,
        cx: &Cx,
        w: &Workload,
        spec: &mut AgentSpec,
        own_config: Option<&str>,
        var: &str,
        v: &Value,
        path: &str,
    ) -> Option<EnvSource> {
        let mut f = Fields::new(&mut self.r, cx, v, path);
        let cm = f.take("configMapKeyRef");
        let sec = f.take("secretKeyRef");
        let field = f.take("fieldRef");
        if let Some((_, p)) = f.take("resourceFieldRef") {
            self.r.ignored(cx, &p);
        }
        f.finish(&mut self.r, cx);
        if let Some((r, p)) = cm {
            let (name, key, optional) = self.key_ref(cx, r, &p);
            let data = self.config_maps.get(&name).cloned();
            let Some(data) = data else {
                if optional {
                    self.r.warn(
                        cx,
                        &p,
                        format!("ConfigMap {name} is not in the file; {var} is left unset"),
                    );
                } else {
                    self.r
                        .error(cx, &p, format!("ConfigMap {name} is not in the file"));
                }
                return None;
            };
            let Some(bytes) = data.get(&key) else {
                if optional {
                    self.r.warn(
                        cx,
                        &p,
                        format!("ConfigMap {name} has no key {key}; {var} is left unset"),
                    );
                } else {
                    self.r
                        .error(cx, &p, format!("ConfigMap {name} has no key {key}"));
                }
                return None;
            };
            let Ok(text) = String::from_utf8(bytes.clone()) else {
                self.r
                    .error(cx, &p, format!("ConfigMap {name} key {key} is not text"));
                return None;
            };
            // spec.config keeps the agent's own ConfigMap as it is, others under name/key when
            // their key is taken
            let text_v = Value::String(text);
            let local_key = if own_config == Some(name.as_str()) {
                key.clone()
            } else {
                match spec.config.get(&key) {
                    Some(existing) if *existing != text_v => format!("{name}/{key}"),
                    _ => key.clone(),
                }
            };
            spec.config.insert(local_key.clone(), text_v);
            return Some(EnvSource::Config {
                key: (local_key != var).then_some(local_key),
            });
        }
        if let Some((r, p)) = sec {
            let (name, key, optional) = self.key_ref(cx, r, &p);
            if let Some(data) = self.secrets.get(&name) {
                if !data.contains_key(&key) {
                    if optional {
                        self.r.warn(
                            cx,
                            &p,
                            format!("Secret {name} has no key {key}; {var} is left unset"),
                        );
                        return None;
                    }
                    self.r
                        .error(cx, &p, format!("Secret {name} has no key {key}"));
                    return None;
                }
            } else if optional {
                self.r.warn(cx, &p, format!("optional: Secret {name} must be in the local store, or aac refuses to start"));
            }
            return Some(EnvSource::Secret {
                secret_name: name,
                secret_key: key,
            });
        }
        if let Some((r, p)) = field {
            let mut ff = Fields::new(&mut self.r, cx, r, &p);
            let fp = opt_string(&mut self.r, cx, &mut ff, "fieldPath").unwrap_or_default();
            ff.accept(&["apiVersion"]);
            ff.finish(&mut self.r, cx);
            return match fp.as_str() {
                "metadata.name" => Some(EnvSource::Value {
                    value: w.name.clone(),
                }),
                "metadata.namespace" => Some(EnvSource::Value {
                    value: "default".into(),
                }),
                other => {
                    self.r.warn(
                        cx,
                        &p,
                        format!("field {other:?} is not known here; {var} is left unset"),
                    );
                    None
                }
            };
        }
        let _ = spec;
        self.r
            .error(cx, path, "needs configMapKeyRef, secretKeyRef or fieldRef");
        None
    }

    /// `{name, key, optional}`.
    fn key_ref(&mut self, cx: &Cx, v: &Value, path: &str) -> (String, String, bool) {
        let mut f = Fields::new(&mut self.r, cx, v, path);
        let name = opt_string(&mut self.r, cx, &mut f, "name");
        let key = opt_string(&mut self.r, cx, &mut f, "key");
        let optional = opt_bool(&mut self.r, cx, &mut f, "optional").unwrap_or(false);
        f.finish(&mut self.r, cx);
        if name.is_none() {
            self.r.error(cx, &join_key(path, "name"), "is required");
        }
        if key.is_none() {
            self.r.error(cx, &join_key(path, "key"), "is required");
        }
        (name.unwrap_or_default(), key.unwrap_or_default(), optional)
    }

    fn env_from(&mut self, cx: &Cx, spec: &mut AgentSpec, v: &Value, path: &str) {
        for (item, ip) in seq(&mut self.r, cx, v, path) {
            let mut f = Fields::new(&mut self.r, cx, item, &ip);
            let prefix = opt_string(&mut self.r, cx, &mut f, "prefix").unwrap_or_default();
            let cm = f.take("configMapRef");
            let sec = f.take("secretRef");
            f.finish(&mut self.r, cx);
            for (is_secret, r) in [(false, cm), (true, sec)] {
                let Some((r, p)) = r else { continue };
                let mut rf = Fields::new(&mut self.r, cx, r, &p);
                let name = opt_string(&mut self.r, cx, &mut rf, "name").unwrap_or_default();
                let optional = opt_bool(&mut self.r, cx, &mut rf, "optional").unwrap_or(false);
                rf.finish(&mut self.r, cx);
                let data = if is_secret {
                    self.secrets.get(&name)
                } else {
                    self.config_maps.get(&name)
                }
                .cloned();
                let Some(data) = data else {
                    let what = if is_secret { "Secret" } else { "ConfigMap" };
                    if optional {
                        self.r.warn(
                            cx,
                            &p,
                            format!("{what} {name} is not in the file; nothing is set"),
                        );
                    } else {
                        self.r.error(
                            cx,
                            &p,
                            format!("{what} {name} is not in the file, so its keys are not known"),
                        );
                    }
                    continue;
                };
                for (key, bytes) in data {
                    let var = format!("{prefix}{key}");
                    let source = if is_secret {
                        EnvSource::Secret {
                            secret_name: name.clone(),
                            secret_key: key,
                        }
                    } else {
                        let text = String::from_utf8_lossy(&bytes).into_owned();
                        let text_v = Value::String(text);
                        let local_key = match spec.config.get(&key) {
                            Some(existing) if *existing != text_v => format!("{name}/{key}"),
                            _ => key.clone(),
                        };
                        spec.config.insert(local_key.clone(), text_v);
                        EnvSource::Config {
                            key: (local_key != var).then_some(local_key),
                        }
                    };
                    spec.environment.retain(|e| e.name != var);
                    spec.environment.push(EnvVar { name: var, source });
                }
            }
        }
    }

    // ---- ports and resources ----

    /// A declared container port: number, protocol, name.
    fn container_port(
        &mut self,
        cx: &Cx,
        spec: &mut AgentSpec,
        v: &Value,
        path: &str,
    ) -> Option<(u16, Protocol, Option<String>, String)> {
        let mut f = Fields::new(&mut self.r, cx, v, path);
        let port = f.take("containerPort").and_then(|(v, p)| {
            let n = integer(&mut self.r, cx, v, &p)?;
            match values::check_port(i128::from(n)) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.r.error(cx, &join_key(path, "containerPort"), e);
                    None
                }
            }
        });
        let protocol = match opt_string(&mut self.r, cx, &mut f, "protocol").as_deref() {
            None | Some("TCP") => Protocol::Tcp,
            Some("UDP") => Protocol::Udp,
            Some(other) => {
                self.r.error(
                    cx,
                    &join_key(path, "protocol"),
                    format!("{other:?}: aac publishes TCP and UDP"),
                );
                Protocol::Tcp
            }
        };
        let name = opt_string(&mut self.r, cx, &mut f, "name");
        let host_port = f.take("hostPort").and_then(|(v, p)| {
            let n = integer(&mut self.r, cx, v, &p)?;
            values::check_port(i128::from(n)).ok()
        });
        let host_ip = f.take("hostIP").and_then(|(v, p)| {
            let s = string(&mut self.r, cx, v, &p)?;
            match s.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.r.error(cx, &p, format!("{s:?} is not an IP address"));
                    None
                }
            }
        });
        f.finish(&mut self.r, cx);
        let Some(port) = port else {
            if f_missing(v, "containerPort") {
                self.r
                    .error(cx, &join_key(path, "containerPort"), "is required");
            }
            return None;
        };
        if let Some(h) = host_port {
            // a hostPort publishes directly, as aac does
            spec.ports.push(PortSpec {
                container: port,
                host: Some(h),
                protocol,
                host_ip,
            });
        }
        Some((port, protocol, name, path.to_string()))
    }

    fn resources(&mut self, cx: &Cx, v: &Value, path: &str) -> Resources {
        let mut out = Resources::default();
        let mut f = Fields::new(&mut self.r, cx, v, path);
        for which in ["limits", "requests"] {
            let Some((m, p)) = f.take(if which == "limits" {
                "limits"
            } else {
                "requests"
            }) else {
                continue;
            };
            for (k, s) in string_map(&mut self.r, cx, m, &p) {
                let kp = join_key(&p, &k);
                match k.as_str() {
                    "cpu" => match quantity::parse_cpu(&s) {
                        Some(c) if which == "limits" => out.limits.cpu = Some(c),
                        Some(c) => out.requests.cpu = Some(c),
                        None => self
                            .r
                            .error(cx, &kp, format!("{s:?} is not a CPU quantity")),
                    },
                    "memory" => match quantity::parse_bytes(&s) {
                        Some(b) if which == "limits" => out.limits.memory = Some(b),
                        Some(b) => out.requests.memory = Some(b),
                        None => self
                            .r
                            .error(cx, &kp, format!("{s:?} is not a memory quantity")),
                    },
                    _ => self.r.ignored(cx, &kp),
                }
            }
        }
        if let Some((_, p)) = f.take("claims") {
            self.r.ignored(cx, &p);
        }
        f.finish(&mut self.r, cx);
        out
    }

    // ---- security ----

    fn container_security(&mut self, cx: &Cx, v: &Value, path: &str) -> ContainerSecurity {
        let mut s = ContainerSecurity::default();
        let mut f = Fields::new(&mut self.r, cx, v, path);
        s.common = self.security_common(cx, &mut f);
        s.read_only_root_filesystem =
            opt_bool(&mut self.r, cx, &mut f, "readOnlyRootFilesystem").unwrap_or(false);
        if let Some(b) = opt_bool(&mut self.r, cx, &mut f, "allowPrivilegeEscalation") {
            s.no_new_privileges = !b;
        }
        if let Some((c, p)) = f.take("capabilities") {
            let mut cf = Fields::new(&mut self.r, cx, c, &p);
            for (name, out) in [
                ("drop", &mut s.capabilities.drop),
                ("add", &mut s.capabilities.add),
            ] {
                let Some((l, lp)) = cf.take(if name == "drop" { "drop" } else { "add" }) else {
                    continue;
                };
                for (item, ip) in seq(&mut self.r, cx, l, &lp) {
                    if let Some(text) = string(&mut self.r, cx, item, &ip) {
                        match values::parse_capability(&text) {
                            Ok(c) => out.push(c),
                            Err(e) => self.r.error(cx, &ip, e),
                        }
                    }
                }
            }
            cf.finish(&mut self.r, cx);
        }
        if opt_bool(&mut self.r, cx, &mut f, "privileged") == Some(true) {
            self.r.warn(
                cx,
                &join_key(path, "privileged"),
                "aac does not run privileged containers; ignored (add capabilities instead)",
            );
        }
        for k in [
            "procMount",
            "seLinuxOptions",
            "windowsOptions",
            "appArmorProfile",
        ] {
            if f.take(k).is_some() {
                self.r.ignored(cx, &join_key(path, k));
            }
        }
        f.finish(&mut self.r, cx);
        s
    }

    // ---- volumes ----

    #[allow(clippy::too_many_arguments)]
    fn mount(
        &mut self,
        w: &Workload,
        cx: &Cx,
        agent_name: &str,
        spec: &mut AgentSpec,
        volumes: &BTreeMap<String, (Value, String)>,
        used: &mut BTreeSet<String>,
        v: &Value,
        path: &str,
    ) {
        let mut f = Fields::new(&mut self.r, cx, v, path);
        let name = opt_string(&mut self.r, cx, &mut f, "name").unwrap_or_default();
        let target = opt_string(&mut self.r, cx, &mut f, "mountPath").unwrap_or_default();
        let read_only = opt_bool(&mut self.r, cx, &mut f, "readOnly").unwrap_or(false);
        let sub = opt_string(&mut self.r, cx, &mut f, "subPath");
        for k in ["mountPropagation", "subPathExpr", "recursiveReadOnly"] {
            if f.take(k).is_some() {
                self.r.ignored(cx, &join_key(path, k));
            }
        }
        f.finish(&mut self.r, cx);
        let Some((vol, vp)) = volumes.get(&name) else {
            self.r.error(
                cx,
                &join_key(path, "name"),
                format!("no volume named {name:?} in the pod"),
            );
            return;
        };
        used.insert(name.clone());
        if spec.security.read_only_root_filesystem
            && ann::READ_ONLY_ROOT_VOLUMES.contains(&name.as_str())
            && ["/tmp", "/run"].contains(&target.as_str())
        {
            // aac gives a read-only root these itself
            return;
        }
        let mut vf = Fields::new(&mut self.r, cx, vol, vp);
        vf.accept(&["name"]);
        let kinds = [
            "hostPath",
            "emptyDir",
            "persistentVolumeClaim",
            "configMap",
            "secret",
            "projected",
        ];
        let mut found = None;
        for k in kinds {
            if let Some(x) = vf.take(k) {
                found = Some((k, x));
                break;
            }
        }
        // report other volume kinds as unsupported
        vf.finish(&mut self.r, cx);
        let Some((kind, (src, sp))) = found else {
            self.r.warn(
                cx,
                vp,
                format!("volume {name}: this kind of volume is not supported by aac; not mounted"),
            );
            return;
        };
        let vol_spec = |source: String, kind: VolumeType, options: Vec<String>| VolumeSpec {
            source,
            target: target.clone(),
            kind,
            read_only,
            options,
        };
        match kind {
            "hostPath" => {
                let mut hf = Fields::new(&mut self.r, cx, src, &sp);
                let p = opt_string(&mut self.r, cx, &mut hf, "path").unwrap_or_default();
                match opt_string(&mut self.r, cx, &mut hf, "type").as_deref() {
                    None | Some("") | Some("Directory") | Some("File") => {}
                    Some(t) => self.r.warn(
                        cx,
                        &join_key(&sp, "type"),
                        format!("{t}: aac mounts the path as it is and creates nothing"),
                    ),
                }
                hf.finish(&mut self.r, cx);
                let source = match &sub {
                    Some(s) => format!("{}/{s}", p.trim_end_matches('/')),
                    None => p,
                };
                spec.volumes
                    .push(vol_spec(source, VolumeType::Bind, Vec::new()));
            }
            "emptyDir" => {
                let mut ef = Fields::new(&mut self.r, cx, src, &sp);
                let medium = opt_string(&mut self.r, cx, &mut ef, "medium").unwrap_or_default();
                let size = opt_string(&mut self.r, cx, &mut ef, "sizeLimit");
                ef.finish(&mut self.r, cx);
                if sub.is_some() {
                    self.r.warn(
                        cx,
                        &join_key(path, "subPath"),
                        "is not supported for an emptyDir; the whole volume is mounted",
                    );
                }
                if let Some(hp) = w
                    .annotations
                    .get(&format!("{}{name}", ann::HOST_PATH_PREFIX))
                {
                    spec.volumes
                        .push(vol_spec(hp.clone(), VolumeType::Bind, Vec::new()));
                } else if medium == "Memory" {
                    let mut options = Vec::new();
                    if let Some(s) = size {
                        match quantity::parse_bytes(&s) {
                            Some(b) => {
                                options.push(format!("size={}", quantity::format_docker_size(b)))
                            }
                            None => self.r.error(
                                cx,
                                &join_key(&sp, "sizeLimit"),
                                format!("{s:?} is not a quantity"),
                            ),
                        }
                    }
                    if let Some(o) = w
                        .annotations
                        .get(&format!("{}{name}", ann::TMPFS_OPTIONS_PREFIX))
                    {
                        options.extend(o.split(',').filter(|x| !x.is_empty()).map(str::to_string));
                    }
                    spec.volumes
                        .push(vol_spec(String::new(), VolumeType::Tmpfs, options));
                } else {
                    if !medium.is_empty() {
                        self.r.warn(
                            cx,
                            &join_key(&sp, "medium"),
                            format!("{medium:?}: a disk folder is used"),
                        );
                    }
                    if size.is_some() {
                        self.r.warn(
                            cx,
                            &join_key(&sp, "sizeLimit"),
                            "a local volume has no size limit",
                        );
                    }
                    let vname =
                        crate::names::dns1123_label(&format!("{agent_name}-{name}"), "scratch");
                    self.add_volume(&vname, true);
                    spec.volumes
                        .push(vol_spec(vname, VolumeType::Volume, Vec::new()));
                }
            }
            "persistentVolumeClaim" => {
                let mut pf = Fields::new(&mut self.r, cx, src, &sp);
                let claim = opt_string(&mut self.r, cx, &mut pf, "claimName").unwrap_or_default();
                let ro = opt_bool(&mut self.r, cx, &mut pf, "readOnly").unwrap_or(false);
                pf.finish(&mut self.r, cx);
                if sub.is_some() {
                    self.r.warn(
                        cx,
                        &join_key(path, "subPath"),
                        "is not supported for a volume; the whole volume is mounted",
                    );
                }
                if !self.claims.contains(&claim) {
                    self.r.warn(cx, &join_key(&sp, "claimName"), format!("PersistentVolumeClaim {claim} is not in the file; the local volume {claim} is used (and made when missing)"));
                }
                self.add_volume(&claim, false);
                let mut v = vol_spec(claim, VolumeType::Volume, Vec::new());
                v.read_only |= ro;
                spec.volumes.push(v);
            }
            "configMap" => {
                let mut cf = Fields::new(&mut self.r, cx, src, &sp);
                let cm = opt_string(&mut self.r, cx, &mut cf, "name").unwrap_or_default();
                let optional = opt_bool(&mut self.r, cx, &mut cf, "optional").unwrap_or(false);
                if let Some((_, ip)) = cf.take("items") {
                    self.r.warn(
                        cx,
                        &ip,
                        "items are not supported: every key is a file named like it",
                    );
                }
                cf.accept(&["defaultMode"]);
                cf.finish(&mut self.r, cx);
                let Some(data) = self.config_maps.get(&cm) else {
                    if optional {
                        self.r.warn(
                            cx,
                            &sp,
                            format!("ConfigMap {cm} is not in the file; not mounted"),
                        );
                    } else {
                        self.r
                            .error(cx, &sp, format!("ConfigMap {cm} is not in the file"));
                    }
                    return;
                };
                let dir = self.opts.config_dir.join(&cm);
                let source = match &sub {
                    Some(s) => {
                        if !data.contains_key(s) {
                            self.r.error(
                                cx,
                                &join_key(path, "subPath"),
                                format!("ConfigMap {cm} has no key {s}"),
                            );
                            return;
                        }
                        dir.join(s)
                    }
                    None => dir,
                };
                spec.volumes.push(vol_spec(
                    source.to_string_lossy().into_owned(),
                    VolumeType::ConfigMap,
                    Vec::new(),
                ));
            }
            "secret" => {
                let mut sf = Fields::new(&mut self.r, cx, src, &sp);
                let secret = opt_string(&mut self.r, cx, &mut sf, "secretName").unwrap_or_default();
                let items = sf.take("items");
                sf.accept(&["defaultMode", "optional"]);
                sf.finish(&mut self.r, cx);
                self.secret_files(cx, spec, &secret, items, &target, sub.as_deref(), path);
            }
            "projected" => {
                let mut pf = Fields::new(&mut self.r, cx, src, &sp);
                pf.accept(&["defaultMode"]);
                if let Some((sources, ssp)) = pf.take("sources") {
                    for (s, p) in seq(&mut self.r, cx, sources, &ssp) {
                        let mut one = Fields::new(&mut self.r, cx, s, &p);
                        if let Some((sec, secp)) = one.take("secret") {
                            let mut sf = Fields::new(&mut self.r, cx, sec, &secp);
                            let secret =
                                opt_string(&mut self.r, cx, &mut sf, "name").unwrap_or_default();
                            let items = sf.take("items");
                            sf.accept(&["optional"]);
                            sf.finish(&mut self.r, cx);
                            self.secret_files(
                                cx,
                                spec,
                                &secret,
                                items,
                                &target,
                                sub.as_deref(),
                                path,
                            );
                        }
                        one.finish(&mut self.r, cx);
                    }
                }
                pf.finish(&mut self.r, cx);
            }
            _ => {}
        }
    }

    /// Secret files: aac puts each at /run/secrets/<name>.
    #[allow(clippy::too_many_arguments)]
    fn secret_files(
        &mut self,
        cx: &Cx,
        spec: &mut AgentSpec,
        secret: &str,
        items: Option<(&Value, String)>,
        target: &str,
        sub: Option<&str>,
        mount_path: &str,
    ) {
        let dir = target.trim_end_matches('/');
        let mut files: Vec<(String, String)> = Vec::new(); // (file name, key)
        match items {
            Some((list, lp)) => {
                for (item, ip) in seq(&mut self.r, cx, list, &lp) {
                    let mut f = Fields::new(&mut self.r, cx, item, &ip);
                    let key = opt_string(&mut self.r, cx, &mut f, "key").unwrap_or_default();
                    let path =
                        opt_string(&mut self.r, cx, &mut f, "path").unwrap_or_else(|| key.clone());
                    f.accept(&["mode"]);
                    f.finish(&mut self.r, cx);
                    files.push((path, key));
                }
            }
            None => match self.secrets.get(secret) {
                Some(data) => files.extend(data.keys().map(|k| (k.clone(), k.clone()))),
                None => {
                    self.r.error(
                        cx,
                        mount_path,
                        format!("Secret {secret} is not in the file, so its keys are not known: list them as items"),
                    );
                    return;
                }
            },
        }
        if let Some(s) = sub {
            // one key mounted as a file at the mount path
            files.retain(|(p, _)| p == s);
            if files.is_empty() {
                self.r.error(
                    cx,
                    &join_key(mount_path, "subPath"),
                    format!("Secret {secret} has no file {s}"),
                );
                return;
            }
            let file = match target
                .strip_prefix(SECRETS_DIR)
                .and_then(|r| r.strip_prefix('/'))
            {
                Some(name) if !name.is_empty() => name.to_string(),
                _ => {
                    let name = Path::new(target)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| s.to_string());
                    self.r.warn(cx, &join_key(mount_path, "mountPath"), format!("aac delivers secrets under {SECRETS_DIR}: the file is {SECRETS_DIR}/{name}, not {target}"));
                    name
                }
            };
            files = vec![(file, files[0].1.clone())];
        } else if dir != SECRETS_DIR {
            // aac's delivery puts every secret file directly in /run/secrets
            self.r.warn(cx, &join_key(mount_path, "mountPath"), format!("aac delivers secrets as files directly in {SECRETS_DIR}: the files are in {SECRETS_DIR}, not {target}"));
        }
        for (name, key) in files {
            if let Some(data) = self.secrets.get(secret) {
                if !data.contains_key(&key) {
                    self.r
                        .error(cx, mount_path, format!("Secret {secret} has no key {key}"));
                    continue;
                }
            }
            if spec.secrets.iter().any(|s| s.name == name) {
                self.r.warn(
                    cx,
                    mount_path,
                    format!("{SECRETS_DIR}/{name} is already delivered; this one is left out"),
                );
                continue;
            }
            spec.secrets.push(SecretRef {
                name,
                from: "secret".into(),
                secret_name: secret.to_string(),
                secret_key: key,
            });
        }
    }

    // ---- probes ----

    fn health_check(
        &mut self,
        cx: &Cx,
        w: &Workload,
        port_names: &BTreeMap<String, u16>,
        ready: Option<(&Value, String)>,
        live: Option<(&Value, String)>,
        startup: Option<(&Value, String)>,
    ) -> Option<HealthCheck> {
        let ready = ready.and_then(|(v, p)| self.probe(cx, port_names, v, &p).map(|x| (x, p)));
        let live = live.and_then(|(v, p)| self.probe(cx, port_names, v, &p).map(|x| (x, p)));
        let startup = startup.and_then(|(v, p)| self.probe(cx, port_names, v, &p).map(|x| (x, p)));
        let (main, main_path) = match (&ready, &live) {
            (Some(r), _) => r.clone(),
            (None, Some(l)) => l.clone(),
            (None, None) => {
                if let Some((s, p)) = &startup {
                    self.r.warn(
                        cx,
                        p,
                        "a startup probe alone: aac checks it as the health check",
                    );
                    let mut h = s.check.clone();
                    h.start_period = Duration::ZERO;
                    return Some(h);
                }
                return None;
            }
        };
        let mut h = main.check.clone();
        if let (Some(_), Some((l, lp))) = (&ready, &live) {
            if l.check.probe != h.probe
                || l.check.interval != h.interval
                || l.check.retries != h.retries
            {
                self.r.warn(cx, lp, format!("differs from the readiness probe; aac runs one health check ({main_path}) and restarts the agent when it fails"));
            }
        }
        h.on_unhealthy = if live.is_some() {
            OnUnhealthy::Restart
        } else {
            OnUnhealthy::None
        };
        if w.annotations.get(ann::ON_UNHEALTHY).map(String::as_str) == Some("stop") {
            h.on_unhealthy = OnUnhealthy::Stop;
        }
        h.start_period = main.initial_delay;
        if let Some((s, sp)) = &startup {
            if s.check.probe != h.probe {
                self.r.warn(cx, sp, "differs from the health check; aac waits for the health check during the start period instead");
            }
            h.start_period += s.initial_delay + s.check.interval * s.check.retries.max(1);
        }
        if let Some(f) = w.annotations.get(ann::HEALTH_FILE) {
            h.probe = Probe::File { path: f.clone() };
        }
        Some(h)
    }

    fn probe(
        &mut self,
        cx: &Cx,
        port_names: &BTreeMap<String, u16>,
        v: &Value,
        path: &str,
    ) -> Option<ParsedProbe> {
        let mut f = Fields::new(&mut self.r, cx, v, path);
        let period = opt_u32(&mut self.r, cx, &mut f, "periodSeconds")
            .unwrap_or(10)
            .max(1);
        let timeout = opt_u32(&mut self.r, cx, &mut f, "timeoutSeconds")
            .unwrap_or(1)
            .max(1);
        let failures = opt_u32(&mut self.r, cx, &mut f, "failureThreshold")
            .unwrap_or(3)
            .max(1);
        let initial = opt_u32(&mut self.r, cx, &mut f, "initialDelaySeconds").unwrap_or(0);
        if let Some(n) = opt_u32(&mut self.r, cx, &mut f, "successThreshold") {
            if n > 1 {
                self.r.warn(
                    cx,
                    &join_key(path, "successThreshold"),
                    format!("aac counts one success as healthy, not {n}"),
                );
            }
        }
        if f.take("terminationGracePeriodSeconds").is_some() {
            self.r
                .ignored(cx, &join_key(path, "terminationGracePeriodSeconds"));
        }
        let mut probe = None;
        if let Some((e, p)) = f.take("exec") {
            let mut ef = Fields::new(&mut self.r, cx, e, &p);
            let argv = match ef.take("command") {
                Some((c, cp)) => string_list(&mut self.r, cx, c, &cp),
                None => Vec::new(),
            };
            ef.finish(&mut self.r, cx);
            if argv.is_empty() {
                self.r.error(cx, &join_key(&p, "command"), "is required");
            } else {
                probe = Some(Probe::Command(argv));
            }
        }
        if let Some((h, p)) = f.take("httpGet") {
            let mut hf = Fields::new(&mut self.r, cx, h, &p);
            let hpath = opt_string(&mut self.r, cx, &mut hf, "path").unwrap_or_else(|| "/".into());
            let port = hf
                .take("port")
                .and_then(|(v, pp)| self.probe_port(cx, port_names, v, &pp));
            let scheme = match opt_string(&mut self.r, cx, &mut hf, "scheme").as_deref() {
                None | Some("HTTP") => HttpScheme::Http,
                Some("HTTPS") => HttpScheme::Https,
                Some(other) => {
                    self.r.error(
                        cx,
                        &join_key(&p, "scheme"),
                        format!("{other:?} is not HTTP or HTTPS"),
                    );
                    HttpScheme::Http
                }
            };
            for k in ["host", "httpHeaders"] {
                if hf.take(k).is_some() {
                    self.r.warn(cx, &join_key(&p, k), "is not supported: aac's monitor asks the agent itself, without extra headers");
                }
            }
            hf.finish(&mut self.r, cx);
            if let Some(port) = port {
                probe = Some(Probe::Http {
                    path: hpath,
                    port,
                    scheme,
                });
            }
        }
        if let Some((t, p)) = f.take("tcpSocket") {
            let mut tf = Fields::new(&mut self.r, cx, t, &p);
            let port = tf
                .take("port")
                .and_then(|(v, pp)| self.probe_port(cx, port_names, v, &pp));
            if tf.take("host").is_some() {
                self.r.warn(
                    cx,
                    &join_key(&p, "host"),
                    "is not supported: aac's monitor connects to the agent itself",
                );
            }
            tf.finish(&mut self.r, cx);
            if let Some(port) = port {
                probe = Some(Probe::Tcp { port });
            }
        }
        if let Some((_, p)) = f.take("grpc") {
            self.r.warn(
                cx,
                &p,
                "gRPC probes are not supported by aac; this probe is left out",
            );
        }
        f.finish(&mut self.r, cx);
        let probe = probe?;
        Some(ParsedProbe {
            check: HealthCheck {
                probe,
                interval: Duration::from_secs(u64::from(period)),
                timeout: Duration::from_secs(u64::from(timeout)),
                retries: failures,
                start_period: Duration::ZERO,
                on_unhealthy: OnUnhealthy::None,
            },
            initial_delay: Duration::from_secs(u64::from(initial)),
        })
    }

    fn probe_port(
        &mut self,
        cx: &Cx,
        names: &BTreeMap<String, u16>,
        v: &Value,
        path: &str,
    ) -> Option<u16> {
        match untag(v) {
            Value::Number(_) => {
                let n = integer(&mut self.r, cx, v, path)?;
                match values::check_port(i128::from(n)) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        self.r.error(cx, path, e);
                        None
                    }
                }
            }
            Value::String(s) => match names.get(s) {
                Some(p) => Some(*p),
                None => match s.parse::<u16>() {
                    Ok(p) if p > 0 => Some(p),
                    _ => {
                        self.r
                            .error(cx, path, format!("no container port is named {s:?}"));
                        None
                    }
                },
            },
            other => {
                self.r.error(
                    cx,
                    path,
                    format!("expected a port, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    // ---- Services, HPAs, policies ----

    fn matching(&self, selector: &BTreeMap<String, String>) -> Vec<usize> {
        self.workloads
            .iter()
            .enumerate()
            .filter(|(_, w)| !w.agents.is_empty() && selects(selector, &w.labels))
            .map(|(i, _)| i)
            .collect()
    }

    fn service(&mut self, o: &Object) {
        self.expect_api(o, &["v1"]);
        let cx = o.cx.clone();
        let mut f = self.top(o);
        let meta = metadata(&mut self.r, &cx, f.take("metadata"));
        let Some((spec, sp)) = f.take("spec") else {
            self.r.error(&cx, "spec", "is required");
            return;
        };
        f.finish(&mut self.r, &cx);
        let mut s = Fields::new(&mut self.r, &cx, spec, &sp);
        let selector = match s.take("selector") {
            Some((v, p)) => string_map(&mut self.r, &cx, v, &p),
            None => BTreeMap::new(),
        };
        let kind =
            opt_string(&mut self.r, &cx, &mut s, "type").unwrap_or_else(|| "ClusterIP".into());
        let headless = opt_string(&mut self.r, &cx, &mut s, "clusterIP").as_deref() == Some("None");
        let ports = s.take("ports");
        for k in [
            "clusterIPs",
            "externalIPs",
            "sessionAffinity",
            "sessionAffinityConfig",
            "loadBalancerIP",
            "loadBalancerSourceRanges",
            "loadBalancerClass",
            "externalName",
            "externalTrafficPolicy",
            "internalTrafficPolicy",
            "healthCheckNodePort",
            "publishNotReadyAddresses",
            "ipFamilies",
            "ipFamilyPolicy",
            "allocateLoadBalancerNodePorts",
            "trafficDistribution",
        ] {
            if s.take(k).is_some() {
                self.r.ignored(&cx, &join_key(&sp, k));
            }
        }
        s.finish(&mut self.r, &cx);
        if kind == "ExternalName" {
            self.r.warn(
                &cx,
                &join_key(&sp, "type"),
                "an ExternalName Service has nothing to run here; ignored",
            );
            return;
        }
        if selector.is_empty() {
            self.r.warn(
                &cx,
                &join_key(&sp, "selector"),
                "a Service without a selector publishes nothing here",
            );
            return;
        }
        let targets = self.matching(&selector);
        if targets.is_empty() {
            self.r.warn(
                &cx,
                &join_key(&sp, "selector"),
                "selects no Deployment or Pod in the file; nothing is published",
            );
            return;
        }
        if headless {
            self.r.warn(
                &cx,
                &join_key(&sp, "clusterIP"),
                "a headless Service publishes nothing",
            );
            return;
        }
        let publish = meta.annotations.get(ann::PUBLISH).cloned();
        // (agent, port) to publish
        let mut wanted: Vec<(usize, PortSpec)> = Vec::new();
        if let Some((pv, pp)) = ports {
            for (port, p) in seq(&mut self.r, &cx, pv, &pp) {
                let mut pf = Fields::new(&mut self.r, &cx, port, &p);
                let number = pf.take("port").and_then(|(v, x)| {
                    let n = integer(&mut self.r, &cx, v, &x)?;
                    values::check_port(i128::from(n))
                        .map_err(|e| self.r.error(&cx, &x, e))
                        .ok()
                });
                let protocol = match opt_string(&mut self.r, &cx, &mut pf, "protocol").as_deref() {
                    None | Some("TCP") => Protocol::Tcp,
                    Some("UDP") => Protocol::Udp,
                    Some(other) => {
                        self.r.error(
                            &cx,
                            &join_key(&p, "protocol"),
                            format!("{other:?}: aac publishes TCP and UDP"),
                        );
                        Protocol::Tcp
                    }
                };
                let target = pf.take("targetPort");
                pf.accept(&["name", "appProtocol"]);
                if let Some((_, np)) = pf.take("nodePort") {
                    self.r.warn(
                        &cx,
                        &np,
                        "aac publishes the Service's port itself, not a node port",
                    );
                }
                pf.finish(&mut self.r, &cx);
                let Some(number) = number else {
                    self.r.error(&cx, &join_key(&p, "port"), "is required");
                    continue;
                };
                for &wi in &targets {
                    let w = &self.workloads[wi];
                    let (agent, container) = match target {
                        Some((t, _)) if untag(t).is_string() => {
                            let n = untag(t).as_str().unwrap_or_default();
                            match w.port_names.get(n) {
                                Some(&(a, c)) => (a, c),
                                None => {
                                    let msg =
                                        format!("no container port of {} is named {n:?}", w.name);
                                    self.r.error(&cx, &join_key(&p, "targetPort"), msg);
                                    continue;
                                }
                            }
                        }
                        Some((t, ref tp)) => {
                            let Some(n) = integer(&mut self.r, &cx, t, tp) else {
                                continue;
                            };
                            let Ok(c) = values::check_port(i128::from(n)) else {
                                self.r.error(&cx, tp, format!("{n} is not a port"));
                                continue;
                            };
                            (
                                w.ports.get(&(c, protocol)).copied().unwrap_or(w.agents[0]),
                                c,
                            )
                        }
                        None => (
                            w.ports
                                .get(&(number, protocol))
                                .copied()
                                .unwrap_or(w.agents[0]),
                            number,
                        ),
                    };
                    wanted.push((
                        agent,
                        PortSpec {
                            container,
                            host: Some(number),
                            protocol,
                            host_ip: None,
                        },
                    ));
                }
            }
        }
        if let Some(list) = publish {
            // what aac published when the agent was exported, exactly
            match ann::parse_publish(&list) {
                Ok(ports) => {
                    let agents: BTreeSet<usize> = targets
                        .iter()
                        .flat_map(|&wi| self.workloads[wi].agents.clone())
                        .collect();
                    wanted = agents
                        .into_iter()
                        .flat_map(|a| ports.iter().map(move |p| (a, p.clone())))
                        .collect();
                }
                Err(e) => self.r.warn(
                    &cx,
                    "metadata.annotations",
                    format!(
                        "{}: {e}; the Service's ports are published instead",
                        ann::PUBLISH
                    ),
                ),
            }
        }
        for &wi in &targets {
            let w = &self.workloads[wi];
            if w.agents.len() == 1 {
                let agent_name = &self.out.agents[w.agents[0]].agent.metadata.name;
                if *agent_name != o.name {
                    let msg = format!(
                        "other agents reach {} by its name {agent_name:?}, not by the Service name",
                        w.name
                    );
                    self.r.warn(&cx, "metadata.name", msg);
                }
            }
        }
        for (a, p) in wanted {
            let clash = self.out.agents.iter().enumerate().any(|(i, other)| {
                i != a
                    && p.host.is_some_and(|h| h > 0)
                    && other
                        .agent
                        .spec
                        .ports
                        .iter()
                        .any(|q| q.host == p.host && q.protocol == p.protocol)
            });
            if clash {
                let msg = format!(
                    "host port {}/{} is published by another agent already",
                    p.host.unwrap_or(0),
                    p.protocol.as_str()
                );
                self.r.warn(&cx, &join_key(&sp, "ports"), msg);
                continue;
            }
            let ports = &mut self.out.agents[a].agent.spec.ports;
            if ports.iter().any(|q| {
                q.host == p.host
                    && q.container == p.container
                    && q.protocol == p.protocol
                    && q.host_ip == p.host_ip
            }) {
                continue;
            }
            match ports.iter_mut().find(|q| {
                q.container == p.container && q.protocol == p.protocol && q.host.is_none()
            }) {
                Some(q) => {
                    q.host = p.host;
                    q.host_ip = p.host_ip;
                }
                None => ports.push(p),
            }
        }
    }

    fn autoscaler(&mut self, o: &Object) {
        self.expect_api(o, &["autoscaling/v2", "autoscaling/v1"]);
        let cx = o.cx.clone();
        let mut f = self.top(o);
        metadata(&mut self.r, &cx, f.take("metadata"));
        let Some((spec, sp)) = f.take("spec") else {
            self.r.error(&cx, "spec", "is required");
            return;
        };
        f.finish(&mut self.r, &cx);
        let mut s = Fields::new(&mut self.r, &cx, spec, &sp);
        let mut target = None;
        if let Some((t, tp)) = s.take("scaleTargetRef") {
            let mut tf = Fields::new(&mut self.r, &cx, t, &tp);
            let kind = opt_string(&mut self.r, &cx, &mut tf, "kind").unwrap_or_default();
            let name = opt_string(&mut self.r, &cx, &mut tf, "name").unwrap_or_default();
            tf.accept(&["apiVersion"]);
            tf.finish(&mut self.r, &cx);
            if kind != "Deployment" {
                self.r.warn(
                    &cx,
                    &join_key(&tp, "kind"),
                    format!("{kind}: aac scales Deployments only; ignored"),
                );
            } else {
                target = self
                    .workloads
                    .iter()
                    .position(|w| w.is_deployment && w.name == name);
                if target.is_none() {
                    self.r.warn(
                        &cx,
                        &join_key(&tp, "name"),
                        format!("Deployment {name} is not in the file; ignored"),
                    );
                }
            }
        } else {
            self.r
                .error(&cx, &join_key(&sp, "scaleTargetRef"), "is required");
        }
        let min = opt_u32(&mut self.r, &cx, &mut s, "minReplicas").unwrap_or(1);
        let max = opt_u32(&mut self.r, &cx, &mut s, "maxReplicas");
        if max.is_none() {
            self.r
                .error(&cx, &join_key(&sp, "maxReplicas"), "is required");
        }
        let mut metrics = Vec::new();
        if let Some(pct) = opt_u32(&mut self.r, &cx, &mut s, "targetCPUUtilizationPercentage") {
            metrics.push(resource_metric("cpu", "Utilization", Some(pct), None, None));
        }
        if let Some((m, mp)) = s.take("metrics") {
            for (item, ip) in seq(&mut self.r, &cx, m, &mp) {
                let mut mf = Fields::new(&mut self.r, &cx, item, &ip);
                let kind = opt_string(&mut self.r, &cx, &mut mf, "type").unwrap_or_default();
                if kind != "Resource" {
                    mf.accept(&["pods", "object", "external", "containerResource"]);
                    mf.finish(&mut self.r, &cx);
                    self.r.warn(
                        &cx,
                        &ip,
                        format!("{kind} metrics are not supported by aac's autoscaler; left out"),
                    );
                    continue;
                }
                let Some((res, rp)) = mf.take("resource") else {
                    self.r.error(&cx, &join_key(&ip, "resource"), "is required");
                    continue;
                };
                mf.finish(&mut self.r, &cx);
                let mut rf = Fields::new(&mut self.r, &cx, res, &rp);
                let name = opt_string(&mut self.r, &cx, &mut rf, "name").unwrap_or_default();
                let Some((t, tp)) = rf.take("target") else {
                    self.r.error(&cx, &join_key(&rp, "target"), "is required");
                    continue;
                };
                rf.finish(&mut self.r, &cx);
                let mut tf = Fields::new(&mut self.r, &cx, t, &tp);
                let tkind = opt_string(&mut self.r, &cx, &mut tf, "type").unwrap_or_default();
                let util = opt_u32(&mut self.r, &cx, &mut tf, "averageUtilization");
                let avg = opt_string(&mut self.r, &cx, &mut tf, "averageValue");
                let value = opt_string(&mut self.r, &cx, &mut tf, "value");
                tf.finish(&mut self.r, &cx);
                if !matches!(name.as_str(), "cpu" | "memory") {
                    self.r.warn(
                        &cx,
                        &join_key(&rp, "name"),
                        format!("{name}: aac scales on cpu and memory; left out"),
                    );
                    continue;
                }
                metrics.push(resource_metric(&name, &tkind, util, avg, value));
            }
        }
        let mut up = None;
        let mut down = None;
        if let Some((b, bp)) = s.take("behavior") {
            let mut bf = Fields::new(&mut self.r, &cx, b, &bp);
            for (key, out) in [("scaleUp", &mut up), ("scaleDown", &mut down)] {
                let Some((d, dp)) = bf.take(if key == "scaleUp" {
                    "scaleUp"
                } else {
                    "scaleDown"
                }) else {
                    continue;
                };
                let mut df = Fields::new(&mut self.r, &cx, d, &dp);
                if let Some(secs) = opt_u32(&mut self.r, &cx, &mut df, "stabilizationWindowSeconds")
                {
                    *out = Some(Duration::from_secs(u64::from(secs)));
                }
                for k in ["policies", "selectPolicy", "tolerance"] {
                    if df.take(k).is_some() {
                        self.r.warn(
                            &cx,
                            &join_key(&dp, k),
                            "aac's autoscaler uses stabilization windows only; ignored",
                        );
                    }
                }
                df.finish(&mut self.r, &cx);
            }
            bf.finish(&mut self.r, &cx);
        }
        s.finish(&mut self.r, &cx);
        let (Some(wi), Some(max)) = (target, max) else {
            return;
        };
        let w = &self.workloads[wi];
        let start = w
            .annotations
            .get(ann::REPLICAS)
            .and_then(|r| r.parse::<u32>().ok())
            .or(w.replicas);
        for &a in &w.agents.clone() {
            let pa = &mut self.out.agents[a];
            // Utilization is a share of the container's request: a container without one
            // (a sidecar, say) is not scaled on that resource. Kubernetes would refuse to
            // compute the metric for the whole pod; here each container is its own agent.
            let req = &pa.agent.spec.resources.requests;
            let (kept, dropped): (Vec<_>, Vec<_>) = metrics.iter().cloned().partition(|m| {
                let Some(r) = &m.resource else { return true };
                r.target.kind != "Utilization"
                    || match r.name.as_str() {
                        "cpu" => req.cpu.is_some(),
                        "memory" => req.memory.is_some(),
                        _ => true,
                    }
            });
            for m in &dropped {
                let r = m.resource.as_ref().map_or("", |r| r.name.as_str());
                let msg = format!(
                    "{} has no resources.requests.{r}: it is not scaled on {r} utilization",
                    pa.agent.metadata.name
                );
                self.r.warn(&cx, &join_key(&sp, "metrics"), msg);
            }
            if kept.is_empty() && !dropped.is_empty() {
                // Nothing left to scale on: the container keeps the Deployment's count.
                pa.agent.spec.scaling = Some(Scaling {
                    replicas: start,
                    ..Scaling::default()
                });
                pa.replicas = start.unwrap_or(1).max(1);
                continue;
            }
            pa.agent.spec.scaling = Some(Scaling {
                replicas: start,
                min_replicas: Some(min),
                max_replicas: Some(max),
                metrics: kept,
            });
            pa.agent.spec.autoscaling = Some(Autoscaling {
                enabled: true,
                target_cpu_utilization_percentage: None,
                target_memory_utilization_percentage: None,
                scale_down_delay: down,
                scale_up_delay: up,
            });
            pa.replicas = start.unwrap_or(1).clamp(min.max(1), max.max(min.max(1)));
        }
    }

    fn policy_targets(&mut self, cx: &Cx, v: &Value, path: &str) -> Vec<usize> {
        let mut f = Fields::new(&mut self.r, cx, v, path);
        let labels = match f.take("matchLabels") {
            Some((m, p)) => string_map(&mut self.r, cx, m, &p),
            None => BTreeMap::new(),
        };
        if let Some((_, p)) = f.take("matchExpressions") {
            self.r
                .warn(cx, &p, "match expressions are not checked here");
        }
        f.finish(&mut self.r, cx);
        if labels.is_empty() {
            self.r.warn(
                cx,
                path,
                "selects every pod: applied to every agent of the file",
            );
            return (0..self.out.agents.len()).collect();
        }
        let agents: Vec<usize> = self
            .matching(&labels)
            .into_iter()
            .flat_map(|wi| self.workloads[wi].agents.clone())
            .collect();
        if agents.is_empty() {
            self.r.warn(
                cx,
                path,
                "selects no Deployment or Pod in the file; ignored",
            );
        }
        agents
    }

    fn network_policy(&mut self, o: &Object) {
        self.expect_api(o, &["networking.k8s.io/v1"]);
        let cx = o.cx.clone();
        let mut f = self.top(o);
        let meta = metadata(&mut self.r, &cx, f.take("metadata"));
        let Some((spec, sp)) = f.take("spec") else {
            self.r.error(&cx, "spec", "is required");
            return;
        };
        f.finish(&mut self.r, &cx);
        let mut s = Fields::new(&mut self.r, &cx, spec, &sp);
        let agents = match s.take("podSelector") {
            Some((v, p)) => self.policy_targets(&cx, v, &p),
            None => Vec::new(),
        };
        let types = match s.take("policyTypes") {
            Some((v, p)) => string_list(&mut self.r, &cx, v, &p),
            None => Vec::new(),
        };
        if let Some((_, p)) = s.take("ingress") {
            self.r.warn(
                &cx,
                &p,
                "aac does not restrict incoming connections; ignored",
            );
        }
        let egress = s.take("egress");
        s.finish(&mut self.r, &cx);
        let restricts_egress = types.iter().any(|t| t == "Egress") || egress.is_some();
        if !restricts_egress {
            return;
        }
        let mut services: Vec<ServiceDep> = Vec::new();
        if let Some((rules, rp)) = egress {
            for (rule, p) in seq(&mut self.r, &cx, rules, &rp) {
                if let Some(dep) = self.egress_rule(&cx, rule, &p) {
                    services.extend(dep);
                }
            }
        }
        let hosts: Vec<String> = meta
            .annotations
            .get(ann::ALLOWED_HOSTS)
            .map(|h| {
                h.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for a in agents {
            let spec = &mut self.out.agents[a].agent.spec;
            spec.network.security.allow_external_connections = false;
            for h in &hosts {
                if !spec.network.security.allowed_hosts.contains(h) {
                    spec.network.security.allowed_hosts.push(h.clone());
                }
            }
            for d in &services {
                if !spec.services.contains(d) {
                    spec.services.push(d.clone());
                }
            }
        }
    }

    /// One egress rule: DNS to kube-dns (aac's own resolver does that), or a service of
    /// agents selected by name; anything else is not carried out.
    fn egress_rule(&mut self, cx: &Cx, v: &Value, path: &str) -> Option<Vec<ServiceDep>> {
        let mut f = Fields::new(&mut self.r, cx, v, path);
        let to = f.take("to");
        let ports = f.take("ports");
        f.finish(&mut self.r, cx);
        let mut port_list: Vec<(u16, Protocol)> = Vec::new();
        if let Some((pv, pp)) = ports {
            for (port, p) in seq(&mut self.r, cx, pv, &pp) {
                let mut pf = Fields::new(&mut self.r, cx, port, &p);
                let protocol = match opt_string(&mut self.r, cx, &mut pf, "protocol").as_deref() {
                    Some("UDP") => Protocol::Udp,
                    _ => Protocol::Tcp,
                };
                let n = pf.take("port").and_then(|(x, xp)| match untag(x) {
                    Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                    _ => {
                        self.r.warn(cx, &xp, "named ports are not carried out here");
                        None
                    }
                });
                if pf.take("endPort").is_some() {
                    self.r.warn(
                        cx,
                        &join_key(&p, "endPort"),
                        "port ranges are not carried out here",
                    );
                }
                pf.finish(&mut self.r, cx);
                if let Some(n) = n {
                    port_list.push((n, protocol));
                }
            }
        }
        let Some((peers, tp)) = to else {
            self.r.warn(cx, path, "a rule without peers (anywhere) is not carried out: aac allows named hosts and services only");
            return None;
        };
        let mut out = Vec::new();
        for (peer, p) in seq(&mut self.r, cx, peers, &tp) {
            let mut pf = Fields::new(&mut self.r, cx, peer, &p);
            let ns = pf.take("namespaceSelector");
            let pods = pf.take("podSelector");
            if let Some((_, ip)) = pf.take("ipBlock") {
                self.r.warn(
                    cx,
                    &ip,
                    "address blocks are not carried out: aac allows named hosts and services only",
                );
            }
            pf.finish(&mut self.r, cx);
            let pod_labels = pods.map(|(v, pp)| {
                let mut sf = Fields::new(&mut self.r, cx, v, &pp);
                let m = match sf.take("matchLabels") {
                    Some((m, mp)) => string_map(&mut self.r, cx, m, &mp),
                    None => BTreeMap::new(),
                };
                sf.accept(&["matchExpressions"]);
                sf.finish(&mut self.r, cx);
                m
            });
            let is_dns = ns.is_some()
                && pod_labels
                    .as_ref()
                    .is_some_and(|l| l.get("k8s-app").map(String::as_str) == Some("kube-dns"));
            if is_dns {
                continue; // aac's resolver
            }
            match pod_labels.as_ref().and_then(|l| l.get(APP_NAME)) {
                Some(name) if ns.is_none() => {
                    if port_list.is_empty() {
                        self.r.warn(
                            cx,
                            &p,
                            format!("service {name} without ports is not carried out"),
                        );
                    }
                    for (port, protocol) in &port_list {
                        out.push(ServiceDep {
                            name: name.clone(),
                            port: *port,
                            protocol: *protocol,
                        });
                    }
                }
                _ => self.r.warn(
                    cx,
                    &p,
                    format!("only pods selected by {APP_NAME} are carried out (as agent services)"),
                ),
            }
        }
        Some(out)
    }

    fn cilium_policy(&mut self, o: &Object) {
        self.expect_api(o, &["cilium.io/v2"]);
        let cx = o.cx.clone();
        let mut f = self.top(o);
        metadata(&mut self.r, &cx, f.take("metadata"));
        let Some((spec, sp)) = f.take("spec") else {
            self.r.error(&cx, "spec", "is required");
            return;
        };
        f.finish(&mut self.r, &cx);
        let mut s = Fields::new(&mut self.r, &cx, spec, &sp);
        let agents = match s.take("endpointSelector") {
            Some((v, p)) => self.policy_targets(&cx, v, &p),
            None => Vec::new(),
        };
        s.accept(&["description"]);
        let mut hosts = Vec::new();
        if let Some((rules, rp)) = s.take("egress") {
            for (rule, p) in seq(&mut self.r, &cx, rules, &rp) {
                let mut rf = Fields::new(&mut self.r, &cx, rule, &p);
                let fqdns = rf.take("toFQDNs");
                let endpoints = rf.take("toEndpoints");
                let ports = rf.take("toPorts");
                rf.finish(&mut self.r, &cx);
                let mut port_numbers: Vec<u16> = Vec::new();
                let mut is_dns = false;
                if let Some((pv, pp)) = ports {
                    for (tp, tpp) in seq(&mut self.r, &cx, pv, &pp) {
                        let mut tf = Fields::new(&mut self.r, &cx, tp, &tpp);
                        if let Some((list, lp)) = tf.take("ports") {
                            for (one, op) in seq(&mut self.r, &cx, list, &lp) {
                                let mut of = Fields::new(&mut self.r, &cx, one, &op);
                                let port = opt_string(&mut self.r, &cx, &mut of, "port")
                                    .unwrap_or_default();
                                of.accept(&["protocol", "endPort"]);
                                of.finish(&mut self.r, &cx);
                                match port.parse::<u16>() {
                                    Ok(53) if endpoints.is_some() => is_dns = true,
                                    Ok(n) if n > 0 => port_numbers.push(n),
                                    _ => {
                                        self.r.warn(&cx, &op, "only numbered ports are carried out")
                                    }
                                }
                            }
                        }
                        tf.accept(&[
                            "rules",
                            "terminatingTLS",
                            "originatingTLS",
                            "serverNames",
                            "listener",
                        ]);
                        tf.finish(&mut self.r, &cx);
                    }
                }
                if is_dns && fqdns.is_none() {
                    continue; // DNS to kube-dns: aac's resolver does this
                }
                if endpoints.is_some() {
                    self.r.warn(&cx, &p, "endpoint rules are not carried out here: aac allows named hosts and services only");
                }
                let Some((list, lp)) = fqdns else { continue };
                for (sel, selp) in seq(&mut self.r, &cx, list, &lp) {
                    let mut sf = Fields::new(&mut self.r, &cx, sel, &selp);
                    let name = opt_string(&mut self.r, &cx, &mut sf, "matchName");
                    let pattern = opt_string(&mut self.r, &cx, &mut sf, "matchPattern");
                    sf.finish(&mut self.r, &cx);
                    let host = match (name, pattern) {
                        (Some(n), None) => n.trim_end_matches('.').to_string(),
                        (None, Some(pt)) => {
                            match pt.strip_prefix("**.") {
                                Some(rest) if !rest.contains('*') => {
                                    format!("*.{}", rest.trim_end_matches('.'))
                                }
                                _ => match pt.strip_prefix("*.") {
                                    Some(rest) if !rest.contains('*') => {
                                        self.r.warn(&cx, &selp, format!("{pt}: aac's *.{rest} also matches deeper subdomains"));
                                        format!("*.{}", rest.trim_end_matches('.'))
                                    }
                                    _ => {
                                        self.r.warn(&cx, &selp, format!("{pt}: aac allows names and *.suffix only; left out"));
                                        continue;
                                    }
                                },
                            }
                        }
                        _ => {
                            self.r
                                .error(&cx, &selp, "needs one of matchName or matchPattern");
                            continue;
                        }
                    };
                    if port_numbers.is_empty() {
                        hosts.push(host);
                    } else {
                        hosts.extend(port_numbers.iter().map(|p| format!("{host}:{p}")));
                    }
                }
            }
        }
        for k in [
            "ingress",
            "ingressDeny",
            "egressDeny",
            "nodeSelector",
            "labels",
            "enableDefaultDeny",
        ] {
            if s.take(k).is_some() {
                self.r.ignored(&cx, &join_key(&sp, k));
            }
        }
        s.finish(&mut self.r, &cx);
        for a in agents {
            let sec = &mut self.out.agents[a].agent.spec.network.security;
            sec.allow_external_connections = false;
            for h in &hosts {
                if !sec.allowed_hosts.contains(h) {
                    sec.allowed_hosts.push(h.clone());
                }
            }
        }
    }

    /// Secrets whose local names Kubernetes could not take get them back, in the agents and
    /// in the Secrets to create.
    fn local_secret_names(&mut self) {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for w in &self.workloads {
            let Some(j) = w.annotations.get(ann::SECRET_NAMES) else {
                continue;
            };
            match serde_json::from_str::<BTreeMap<String, String>>(j) {
                Ok(m) => map.extend(m),
                Err(_) => self.r.warn(
                    &w.cx,
                    "metadata.annotations",
                    format!(
                        "{} is not a JSON object of names; ignored",
                        ann::SECRET_NAMES
                    ),
                ),
            }
        }
        if map.is_empty() {
            return;
        }
        let local = |n: &mut String| {
            if let Some(l) = map.get(n.as_str()) {
                *n = l.clone();
            }
        };
        for a in &mut self.out.agents {
            for e in &mut a.agent.spec.environment {
                if let EnvSource::Secret { secret_name, .. } = &mut e.source {
                    local(secret_name);
                }
            }
            for s in &mut a.agent.spec.secrets {
                local(&mut s.secret_name);
            }
        }
        for s in &mut self.out.secrets {
            local(&mut s.name);
        }
    }

    fn finish_agents(&mut self) {
        self.local_secret_names();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for wi in 0..self.workloads.len() {
            let w = self.workloads[wi].clone();
            for &a in &w.agents {
                let agent = self.out.agents[a].agent.clone();
                if let Some(prev) = names.insert(
                    agent.metadata.name.clone(),
                    self.out.agents[a].source.clone(),
                ) {
                    self.r.error(
                        &w.cx,
                        "metadata.name",
                        format!("agent {} is also made from {prev}", agent.metadata.name),
                    );
                }
                for d in validate(&agent, None) {
                    self.r.error(
                        &w.cx,
                        "",
                        format!("the agent {} would be invalid: {d}", agent.metadata.name),
                    );
                }
            }
        }
    }
}

/// Whether `key` is missing from a mapping (the error for it is not reported yet).
fn f_missing(v: &Value, key: &str) -> bool {
    untag(v).get(key).is_none()
}

fn resource_metric(
    name: &str,
    kind: &str,
    util: Option<u32>,
    avg: Option<String>,
    value: Option<String>,
) -> ScalingMetric {
    ScalingMetric {
        kind: "Resource".into(),
        resource: Some(MetricResource {
            name: name.into(),
            target: MetricTarget {
                kind: kind.into(),
                average_utilization: util,
                average_value: avg,
                value,
            },
        }),
    }
}

#[derive(Debug, Clone)]
struct ParsedProbe {
    check: HealthCheck,
    initial_delay: Duration,
}

#[derive(Debug, Clone)]
enum SeccompChoice {
    Default,
    Unconfined,
    /// The node profile's name, and where it was written.
    Localhost(String, String),
}

#[derive(Debug, Clone, Default)]
struct SecurityCommon {
    run_as_user: Option<u32>,
    run_as_group: Option<u32>,
    run_as_non_root: Option<(bool, String)>,
    seccomp: Option<SeccompChoice>,
}

impl SecurityCommon {
    /// These settings, the pod's where these have none.
    fn or(&self, pod: &SecurityCommon) -> SecurityCommon {
        SecurityCommon {
            run_as_user: self.run_as_user.or(pod.run_as_user),
            run_as_group: self.run_as_group.or(pod.run_as_group),
            run_as_non_root: self
                .run_as_non_root
                .clone()
                .or_else(|| pod.run_as_non_root.clone()),
            seccomp: self.seccomp.clone().or_else(|| pod.seccomp.clone()),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct PodSecurity {
    common: SecurityCommon,
    supplemental_groups: Vec<u32>,
}

#[derive(Debug, Clone)]
struct ContainerSecurity {
    common: SecurityCommon,
    read_only_root_filesystem: bool,
    no_new_privileges: bool,
    capabilities: CapabilityChanges,
}

impl Default for ContainerSecurity {
    fn default() -> Self {
        ContainerSecurity {
            common: SecurityCommon::default(),
            read_only_root_filesystem: false,
            // aac's default stands unless the manifest allows privilege escalation
            no_new_privileges: true,
            capabilities: CapabilityChanges::default(),
        }
    }
}
