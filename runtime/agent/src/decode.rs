//! Decoding agent.yaml into the model, collecting every problem at once.
//!
//! serde_yaml parses the text into a [`serde_yaml::Value`] (syntax errors come back with their
//! line and column); [`Positions`] indexes the same text so each later problem can point at
//! its key or value. The value is then walked by hand, mapping by mapping ([`Fields`]), so that
//! one bad field does not hide the others: unknown keys, type errors and bad values are all
//! collected, then [`validate`] adds the semantic checks on the finished model.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use crate::diagnostics::{Diagnostic, Diagnostics, Location};
use crate::model::*;
use crate::positions::{is_prefix_path, join_index, join_key, Positions};
use crate::values;

/// An agent.yaml decoded into the model, not yet validated: CLI flags may still change it
/// (see [`crate::check`]).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub agent: Agent,
    pub positions: Positions,
    /// Problems found while decoding; the values they are about hold placeholders.
    pub problems: Vec<Diagnostic>,
    /// Accepted, but worth saying: another spelling than the canonical one, or a field aac
    /// does not act on (see [`crate::notices`]).
    pub notes: Vec<Diagnostic>,
}

/// Read and decode an agent.yaml. Relative bind-volume sources (and configMap sources, and a
/// relative seccompProfile path) resolve against the file's folder.
pub fn decode_file(path: &Path) -> Result<Decoded, Diagnostics> {
    let src = crate::source::read_agent_file(path)
        .map_err(|e| Diagnostics(vec![Diagnostic::new("", e.to_string())]))?;
    decode_source(&src, path)
}

/// Decode the text read from `path` (see [`crate::source::read_agent_file`]).
pub fn decode_source(src: &str, path: &Path) -> Result<Decoded, Diagnostics> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = std::path::absolute(&dir).unwrap_or(dir);
    decode_str(src, Some(path), &base)
}

/// Same from a string; `file` only labels diagnostics, `base_dir` resolves relative paths.
/// Fails only when the text is not YAML at all; field problems are in [`Decoded::problems`].
pub fn decode_str(src: &str, file: Option<&Path>, base_dir: &Path) -> Result<Decoded, Diagnostics> {
    crate::limits::check(src).map_err(|e| {
        let location = Location {
            file: file.map(Path::to_path_buf),
            line: e.line,
            column: e.column,
        };
        Diagnostics(vec![Diagnostic::new("", e.message).at(Some(location))])
    })?;
    let value: Value = serde_yaml::from_str(src).map_err(|e| {
        let location = e.location().map(|l| Location {
            file: file.map(Path::to_path_buf),
            line: l.line(),
            column: l.column(),
        });
        Diagnostics(vec![
            Diagnostic::new("", syntax_message(&e.to_string())).at(location)
        ])
    })?;
    let mut positions = Positions::from_str(src, file);
    let mut d = Decoder {
        diags: Vec::new(),
        notes: Vec::new(),
        positions: &mut positions,
        base_dir,
    };
    let agent = d.agent(&value);
    let problems = d.diags;
    let mut notes = d.notes;
    notes.extend(crate::notices::not_acted_on(&agent, &positions));
    crate::diagnostics::sort(&mut notes);
    Ok(Decoded {
        agent,
        positions,
        problems,
        notes,
    })
}

/// Whether a validation problem at `path` is about a value whose decoding already failed
/// (it holds a placeholder), given the paths of the decoding problems.
pub(crate) fn about_undecoded(decoded: &[String], path: &str) -> bool {
    decoded
        .iter()
        .any(|p| is_prefix_path(p, path) || (is_prefix_path(path, p) && !path.is_empty()))
}

/// serde_yaml appends ` at line L column C`; the location is shown in front instead.
fn syntax_message(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The string an environment variable gets from a `spec.config` value: scalars as written,
/// sequences and mappings as JSON.
pub fn render_config_value(v: &Value) -> String {
    match untag(v) {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => serde_json::to_string(other).unwrap_or_default(),
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

/// Lexically clean `base/rel` (no `.`; `..` pops) without touching the file system.
fn resolve(base: &Path, p: &str) -> PathBuf {
    let joined = base.join(p);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn parse_scheme(s: &str) -> Result<HttpScheme, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "http" => Ok(HttpScheme::Http),
        "https" => Ok(HttpScheme::Https),
        _ => Err(format!("{s:?} is not a scheme (http or https)")),
    }
}

#[derive(Clone, Copy)]
enum At {
    Key,
    Value,
}

/// The keys of one mapping: each `take` marks a key as known, `finish` reports the rest.
struct Fields<'v> {
    path: String,
    map: Option<&'v Mapping>,
    known: Vec<&'static str>,
}

impl<'v> Fields<'v> {
    /// The value of `name` (absent or null: None) and its path.
    fn take(&mut self, name: &'static str) -> Option<(&'v Value, String)> {
        self.known.push(name);
        let v = self.map?.get(name)?;
        let v = untag(v);
        if v.is_null() {
            return None;
        }
        Some((v, join_key(&self.path, name)))
    }

    /// Whether `name` is written (even as null).
    fn has(&self, name: &str) -> bool {
        self.map.is_some_and(|m| m.get(name).is_some())
    }

    /// A leaf decoded by serde (type errors are collected).
    fn get<T: DeserializeOwned>(&mut self, d: &mut Decoder<'_>, name: &'static str) -> Option<T> {
        let (v, path) = self.take(name)?;
        match serde_yaml::from_value::<T>(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                d.err(&path, At::Value, e.to_string());
                None
            }
        }
    }

    /// Report every key that no `take` asked for.
    fn finish(self, d: &mut Decoder<'_>) {
        let Some(map) = self.map else { return };
        for (k, _) in map {
            match untag(k) {
                Value::String(s) => {
                    if self.known.contains(&s.as_str()) {
                        continue;
                    }
                    let hint = values::did_you_mean(s, self.known.iter().copied())
                        .map(|c| format!("; did you mean `{c}`?"))
                        .unwrap_or_default();
                    d.err(
                        &join_key(&self.path, s),
                        At::Key,
                        format!("unknown field `{s}`{hint}"),
                    );
                }
                other => {
                    let shown = serde_yaml::to_string(other).unwrap_or_default();
                    d.err(
                        &self.path,
                        At::Value,
                        format!("keys must be strings, found `{}`", shown.trim()),
                    );
                }
            }
        }
    }
}

struct Decoder<'a> {
    diags: Vec<Diagnostic>,
    notes: Vec<Diagnostic>,
    positions: &'a mut Positions,
    base_dir: &'a Path,
}

impl Decoder<'_> {
    fn err(&mut self, path: &str, at: At, msg: impl Into<String>) {
        let location = match at {
            At::Key => self.positions.key(path),
            At::Value => self.positions.value(path),
        };
        self.diags.push(Diagnostic::new(path, msg).at(location));
    }

    /// Accepted, with a note (an alternative spelling, say).
    fn note(&mut self, path: &str, at: At, msg: impl Into<String>) {
        let location = match at {
            At::Key => self.positions.key(path),
            At::Value => self.positions.value(path),
        };
        self.notes.push(Diagnostic::new(path, msg).at(location));
    }

    fn type_err(&mut self, path: &str, expected: &str, v: &Value) {
        self.err(
            path,
            At::Value,
            format!("expected {expected}, found {}", kind_of(v)),
        );
    }

    fn fields<'v>(&mut self, v: &'v Value, path: &str) -> Fields<'v> {
        let map = match untag(v) {
            Value::Mapping(m) => Some(m),
            Value::Null => None,
            other => {
                self.type_err(path, "a mapping", other);
                None
            }
        };
        Fields {
            path: path.to_string(),
            map,
            known: Vec::new(),
        }
    }

    /// The items of a list, each with its path.
    fn seq<'v>(&mut self, v: &'v Value, path: &str) -> Vec<(&'v Value, String)> {
        match untag(v) {
            Value::Sequence(s) => s
                .iter()
                .enumerate()
                .map(|(i, item)| (untag(item), join_index(path, i)))
                .collect(),
            other => {
                self.type_err(path, "a list", other);
                Vec::new()
            }
        }
    }

    /// A scalar as text (numbers and booleans as written).
    fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        match untag(v) {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                self.type_err(path, "a string", other);
                None
            }
        }
    }

    fn opt_string(&mut self, f: &mut Fields, name: &'static str) -> Option<String> {
        let (v, p) = f.take(name)?;
        self.string(v, &p)
    }

    fn required_string(&mut self, f: &mut Fields, name: &'static str) -> String {
        match f.take(name) {
            Some((v, p)) => self.string(v, &p).unwrap_or_default(),
            None => {
                if f.map.is_some() {
                    self.err(&join_key(&f.path, name), At::Key, "is required");
                }
                String::new()
            }
        }
    }

    fn string_list(&mut self, v: &Value, path: &str) -> Vec<String> {
        self.seq(v, path)
            .into_iter()
            .filter_map(|(item, p)| self.string(item, &p))
            .collect()
    }

    /// A list of strings, or one string as a one-element list.
    fn string_or_list(&mut self, v: &Value, path: &str) -> Vec<String> {
        match untag(v) {
            Value::Sequence(_) => self.string_list(v, path),
            other => self.string(other, path).into_iter().collect(),
        }
    }

    fn opt_list(&mut self, f: &mut Fields, name: &'static str) -> Vec<String> {
        match f.take(name) {
            Some((v, p)) => self.string_list(v, &p),
            None => Vec::new(),
        }
    }

    fn string_map(&mut self, v: &Value, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match untag(v) {
            Value::Mapping(m) => {
                for (k, item) in m {
                    let Some(k) = untag(k).as_str() else {
                        self.err(path, At::Value, "keys must be strings");
                        continue;
                    };
                    let p = join_key(path, k);
                    let item = untag(item);
                    let s = if item.is_null() {
                        Some(String::new())
                    } else {
                        self.string(item, &p)
                    };
                    if let Some(s) = s {
                        out.insert(k.to_string(), s);
                    }
                }
            }
            other => self.type_err(path, "a mapping", other),
        }
        out
    }

    fn bool(&mut self, v: &Value, path: &str) -> Option<bool> {
        match untag(v) {
            Value::Bool(b) => Some(*b),
            other => {
                self.type_err(path, "true or false", other);
                None
            }
        }
    }

    fn opt_bool(&mut self, f: &mut Fields, name: &'static str) -> Option<bool> {
        let (v, p) = f.take(name)?;
        self.bool(v, &p)
    }

    /// A whole number of any size, as written (numeric strings accepted).
    fn integer(&mut self, v: &Value, path: &str) -> Option<i128> {
        let v = untag(v);
        let n = match v {
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from)),
            Value::String(s) => s.trim().parse::<i128>().ok(),
            _ => None,
        };
        if n.is_none() {
            match v {
                Value::Number(n) => self.err(path, At::Value, format!("{n} is not a whole number")),
                Value::String(s) => {
                    self.err(path, At::Value, format!("{s:?} is not a whole number"))
                }
                other => self.type_err(path, "a whole number", other),
            }
        }
        n
    }

    fn u32(&mut self, v: &Value, path: &str) -> Option<u32> {
        let n = self.integer(v, path)?;
        match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.err(
                    path,
                    At::Value,
                    format!("{n} is out of range (0-{})", u32::MAX),
                );
                None
            }
        }
    }

    fn opt_u32(&mut self, f: &mut Fields, name: &'static str) -> Option<u32> {
        let (v, p) = f.take(name)?;
        self.u32(v, &p)
    }

    fn port(&mut self, v: &Value, path: &str) -> Option<u16> {
        let n = self.integer(v, path)?;
        match values::check_port(n) {
            Ok(p) => Some(p),
            Err(e) => {
                self.err(path, At::Value, e);
                None
            }
        }
    }

    fn required_port(&mut self, f: &mut Fields, name: &'static str) -> u16 {
        match f.take(name) {
            Some((v, p)) => self.port(v, &p).unwrap_or(0),
            None => {
                if f.map.is_some() {
                    self.err(&join_key(&f.path, name), At::Key, "is required");
                }
                0
            }
        }
    }

    /// Run a values.rs parser on a scalar.
    fn parsed<T>(
        &mut self,
        v: &Value,
        path: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = match untag(v) {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                self.type_err(path, "a string", other);
                return None;
            }
        };
        match parse(&s) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(path, At::Value, e);
                None
            }
        }
    }

    fn opt_parsed<T>(
        &mut self,
        f: &mut Fields,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (v, p) = f.take(name)?;
        self.parsed(v, &p, parse)
    }

    fn ip(&mut self, v: &Value, path: &str) -> Option<std::net::IpAddr> {
        self.parsed(v, path, |s| {
            s.trim()
                .parse()
                .map_err(|_| format!("{s:?} is not an IP address"))
        })
    }

    // ---- the document ----

    fn agent(&mut self, v: &Value) -> Agent {
        let mut agent = Agent {
            api_version: String::new(),
            kind: KIND.to_string(),
            metadata: Metadata::default(),
            spec: AgentSpec::default(),
        };
        if untag(v).is_null() {
            self.err("", At::Value, "the file is empty");
            return agent;
        }
        let mut f = self.fields(v, "");
        if f.map.is_none() {
            return agent;
        }
        agent.api_version = self.opt_string(&mut f, "apiVersion").unwrap_or_default();
        if agent.api_version.trim() == API_VERSION_ALIAS {
            self.note(
                "apiVersion",
                At::Value,
                format!("`{API_VERSION_ALIAS}` is read as `{API_VERSION}`, the canonical spelling"),
            );
            agent.api_version = API_VERSION.to_string();
        }
        if let Some(k) = self.opt_string(&mut f, "kind") {
            agent.kind = k;
        }
        match f.take("metadata") {
            Some((m, p)) => agent.metadata = self.metadata(m, &p),
            None => self.err("metadata", At::Key, "is required"),
        }
        if let Some((s, p)) = f.take("spec") {
            agent.spec = self.spec(s, &p);
        }
        f.finish(self);
        agent
    }

    fn metadata(&mut self, v: &Value, path: &str) -> Metadata {
        let mut f = self.fields(v, path);
        let m = Metadata {
            name: self.opt_string(&mut f, "name").unwrap_or_default(),
            version: self.opt_string(&mut f, "version"),
            description: self.opt_string(&mut f, "description"),
            author: self.opt_string(&mut f, "author"),
            tags: self.opt_list(&mut f, "tags"),
            labels: match f.take("labels") {
                Some((v, p)) => self.string_map(v, &p),
                None => BTreeMap::new(),
            },
        };
        f.finish(self);
        m
    }

    fn spec(&mut self, v: &Value, path: &str) -> AgentSpec {
        let mut f = self.fields(v, path);
        let mut s = AgentSpec {
            runtime: self.opt_string(&mut f, "runtime"),
            ..AgentSpec::default()
        };
        if let Some((v, p)) = f.take("model") {
            s.model = Some(self.model(v, &p, false));
        }
        if let Some((v, p)) = f.take("models") {
            s.models = self
                .seq(v, &p)
                .into_iter()
                .map(|(item, ip)| self.model(item, &ip, true))
                .collect();
        }
        s.capabilities = self.opt_list(&mut f, "capabilities");
        s.dependencies = self.opt_list(&mut f, "dependencies");
        s.config = f.get(self, "config").unwrap_or_default();
        s.image = self.opt_string(&mut f, "image");
        if let Some((v, p)) = f.take("command") {
            s.command = self.string_or_list(v, &p);
        }
        if let Some((v, p)) = f.take("args") {
            s.args = self.string_or_list(v, &p);
        }
        s.working_dir = self.opt_string(&mut f, "workingDir");
        s.hostname = self.opt_string(&mut f, "hostname");
        if let Some((v, p)) = f.take("environment") {
            s.environment = self
                .seq(v, &p)
                .into_iter()
                .map(|(item, ip)| self.env(item, &ip))
                .collect();
        }
        if let Some((v, p)) = f.take("ports") {
            s.ports = self
                .seq(v, &p)
                .into_iter()
                .map(|(item, ip)| self.port_spec(item, &ip))
                .collect();
        }
        if let Some((v, p)) = f.take("volumes") {
            s.volumes = self
                .seq(v, &p)
                .into_iter()
                .map(|(item, ip)| self.volume(item, &ip))
                .collect();
        }
        let canonical = f.take("healthCheck");
        let lower = f.take("healthcheck");
        match (canonical, lower) {
            (Some(_), Some((_, p))) => self.err(&p, At::Key, "duplicates `healthCheck`"),
            (Some((v, p)), None) => s.health_check = self.health_check(v, &p),
            (None, Some((v, p))) => {
                self.note(
                    &p,
                    At::Key,
                    "`healthcheck` is read as `healthCheck`, the canonical spelling",
                );
                self.positions.add_alias("spec.healthCheck", p.clone());
                s.health_check = self.health_check(v, &p);
            }
            (None, None) => {}
        }
        if let Some((v, p)) = f.take("resources") {
            s.resources = self.resources(v, &p);
        }
        if let Some((v, p)) = f.take("scaling") {
            s.scaling = Some(self.scaling(v, &p));
        }
        if let Some((v, p)) = f.take("replicas") {
            if let Some(n) = self.u32(v, &p) {
                let scaling = s.scaling.get_or_insert_with(Scaling::default);
                if scaling.replicas.is_some() {
                    self.err(&p, At::Key, "duplicates `spec.scaling.replicas`");
                } else {
                    self.note(
                        &p,
                        At::Key,
                        "`spec.replicas` is read as `spec.scaling.replicas`, the canonical \
                         spelling",
                    );
                    self.positions.add_alias("spec.scaling.replicas", p.clone());
                    scaling.replicas = Some(n);
                }
            }
        }
        if let Some((v, p)) = f.take("autoscaling") {
            s.autoscaling = Some(self.autoscaling(v, &p));
        }
        if let Some((v, p)) = f.take("security") {
            s.security = self.security(v, &p);
        }
        if let Some((v, p)) = f.take("network") {
            let (network, extra_ports) = self.network(v, &p, s.ports.len());
            s.network = network;
            s.ports.extend(extra_ports);
        }
        if let Some((v, p)) = f.take("services") {
            s.services = self
                .seq(v, &p)
                .into_iter()
                .map(|(item, ip)| self.service(item, &ip))
                .collect();
        }
        if let Some((v, p)) = f.take("secrets") {
            s.secrets = self
                .seq(v, &p)
                .into_iter()
                .map(|(item, ip)| self.secret(item, &ip))
                .collect();
        }
        if let Some(r) = self.opt_parsed(&mut f, "restartPolicy", values::parse_restart_policy) {
            s.restart_policy = r;
        }
        if let Some((v, p)) = f.take("logging") {
            s.logging = self.logging(v, &p);
        }
        if let Some((v, p)) = f.take("monitoring") {
            s.monitoring = Some(self.monitoring(v, &p));
        }
        f.finish(self);
        s
    }

    /// `spec.monitoring`: `prometheus: true` or `{enabled, port, path}`, `logging: {level,
    /// format}`, `tracing: {enabled, provider, endpoint}`.
    fn monitoring(&mut self, v: &Value, path: &str) -> Monitoring {
        let mut f = self.fields(v, path);
        let mut m = Monitoring::default();
        if let Some((v, p)) = f.take("prometheus") {
            m.prometheus = match untag(v) {
                Value::Bool(b) => Some(PrometheusSpec {
                    enabled: *b,
                    ..PrometheusSpec::default()
                }),
                Value::Mapping(_) => {
                    let mut pf = self.fields(v, &p);
                    let spec = PrometheusSpec {
                        enabled: self.opt_bool(&mut pf, "enabled").unwrap_or(true),
                        port: pf.take("port").and_then(|(v, pp)| self.port(v, &pp)),
                        path: self.opt_string(&mut pf, "path"),
                    };
                    pf.finish(self);
                    Some(spec)
                }
                other => {
                    self.type_err(&p, "true, false or {enabled, port, path}", other);
                    None
                }
            };
        }
        if let Some((v, p)) = f.take("logging") {
            let mut lf = self.fields(v, &p);
            m.logging = Some(MonitoringLogging {
                level: self.opt_string(&mut lf, "level"),
                format: self.opt_string(&mut lf, "format"),
            });
            lf.finish(self);
        }
        if let Some((v, p)) = f.take("tracing") {
            m.tracing = match untag(v) {
                Value::Bool(b) => Some(TracingSpec {
                    enabled: *b,
                    ..TracingSpec::default()
                }),
                _ => {
                    let mut tf = self.fields(v, &p);
                    let t = TracingSpec {
                        enabled: self.opt_bool(&mut tf, "enabled").unwrap_or(true),
                        provider: self.opt_string(&mut tf, "provider"),
                        endpoint: self.opt_string(&mut tf, "endpoint"),
                    };
                    tf.finish(self);
                    Some(t)
                }
            };
        }
        f.finish(self);
        m
    }

    /// `spec.model`, or one item of `spec.models` (`in_list`: which may say its `use`).
    fn model(&mut self, v: &Value, path: &str, in_list: bool) -> ModelSpec {
        let mut f = self.fields(v, path);
        let m = ModelSpec {
            provider: self.opt_string(&mut f, "provider"),
            name: self.opt_string(&mut f, "name"),
            config: f.get(self, "config").unwrap_or_default(),
            purpose: if in_list {
                self.opt_string(&mut f, "use")
            } else {
                None
            },
        };
        f.finish(self);
        m
    }

    fn env(&mut self, v: &Value, path: &str) -> EnvVar {
        let mut f = self.fields(v, path);
        let name = self.required_string(&mut f, "name");
        let value = f.take("value");
        let value_written = f.has("value");
        let from = self.opt_string(&mut f, "from");
        let key = self.opt_string(&mut f, "key");
        let secret_name = f.take("secretName");
        let secret_key = f.take("secretKey");
        let source = match from.as_deref().map(str::trim) {
            None => {
                if key.is_some() || secret_name.is_some() || secret_key.is_some() {
                    self.err(
                        &join_key(path, "from"),
                        At::Key,
                        "is required with `key`, `secretName` or `secretKey` (config or secret)",
                    );
                }
                let value = match value {
                    Some((v, p)) => self.string(v, &p).unwrap_or_default(),
                    None => {
                        if !value_written
                            && f.map.is_some()
                            && key.is_none()
                            && secret_name.is_none()
                            && secret_key.is_none()
                        {
                            self.err(
                                path,
                                At::Value,
                                "needs a `value` or `from: config` / `from: secret`",
                            );
                        }
                        String::new()
                    }
                };
                EnvSource::Value { value }
            }
            Some(src) => {
                if let Some((_, p)) = &value {
                    self.err(p, At::Key, "cannot be combined with `from`");
                }
                match src.to_ascii_lowercase().as_str() {
                    "config" => {
                        for (name, given) in
                            [("secretName", &secret_name), ("secretKey", &secret_key)]
                        {
                            if given.is_some() {
                                self.err(
                                    &join_key(path, name),
                                    At::Key,
                                    "only applies to `from: secret`",
                                );
                            }
                        }
                        EnvSource::Config { key }
                    }
                    "secret" | "kubernetes-secret" => {
                        if key.is_some() {
                            self.err(
                                &join_key(path, "key"),
                                At::Key,
                                "only applies to `from: config` (use `secretKey`)",
                            );
                        }
                        // `- name: OPENAI_API_KEY / from: secret`: the secret named like the
                        // variable, its only key (empty here).
                        let secret_name = match secret_name {
                            Some(_) => self.secret_part(secret_name, path, "secretName"),
                            None => name.clone(),
                        };
                        let secret_key = match secret_key {
                            Some(_) => self.secret_part(secret_key, path, "secretKey"),
                            None => String::new(),
                        };
                        EnvSource::Secret {
                            secret_name,
                            secret_key,
                        }
                    }
                    _ => {
                        self.err(
                            &join_key(path, "from"),
                            At::Value,
                            format!("{src:?} is not a source (config or secret)"),
                        );
                        EnvSource::Value {
                            value: String::new(),
                        }
                    }
                }
            }
        };
        f.finish(self);
        EnvVar { name, source }
    }

    fn secret_part(&mut self, x: Option<(&Value, String)>, path: &str, name: &str) -> String {
        match x {
            Some((v, p)) => self.string(v, &p).unwrap_or_default(),
            None => {
                self.err(
                    &join_key(path, name),
                    At::Key,
                    "is required with `from: secret`",
                );
                String::new()
            }
        }
    }

    fn port_spec(&mut self, v: &Value, path: &str) -> PortSpec {
        let placeholder = PortSpec {
            container: 0,
            host: None,
            protocol: Protocol::Tcp,
            host_ip: None,
        };
        match untag(v) {
            Value::String(_) | Value::Number(_) => self
                .parsed(v, path, values::parse_port_mapping)
                .unwrap_or(placeholder),
            Value::Mapping(_) => {
                let mut f = self.fields(v, path);
                let container = self.required_port(&mut f, "container");
                let host = f.take("host").and_then(|(v, p)| self.port(v, &p));
                let protocol = self
                    .opt_parsed(&mut f, "protocol", values::parse_protocol)
                    .unwrap_or_default();
                let host_ip = f.take("hostIP").and_then(|(v, p)| self.ip(v, &p));
                f.finish(self);
                PortSpec {
                    container,
                    host,
                    protocol,
                    host_ip,
                }
            }
            other => {
                self.type_err(
                    path,
                    "a port mapping (\"8080:80\" or {container, host})",
                    other,
                );
                placeholder
            }
        }
    }

    fn volume(&mut self, v: &Value, path: &str) -> VolumeSpec {
        let mut f = self.fields(v, path);
        let source = self.opt_string(&mut f, "source").unwrap_or_default();
        let target = self.required_string(&mut f, "target");
        let kind = self
            .opt_parsed(&mut f, "type", |s| {
                match s.trim().to_ascii_lowercase().as_str() {
                    "bind" => Ok(VolumeType::Bind),
                    "volume" => Ok(VolumeType::Volume),
                    "tmpfs" => Ok(VolumeType::Tmpfs),
                    "configmap" => Ok(VolumeType::ConfigMap),
                    _ => Err(format!(
                        "{s:?} is not a volume type (bind, volume, tmpfs or configMap)"
                    )),
                }
            })
            .unwrap_or_default();
        let read_only = self.opt_bool(&mut f, "readOnly").unwrap_or(false);
        let options = self.opt_list(&mut f, "options");
        f.finish(self);
        let source = match kind {
            VolumeType::Bind | VolumeType::ConfigMap if !source.is_empty() => {
                resolve(self.base_dir, &source)
                    .to_string_lossy()
                    .into_owned()
            }
            _ => source,
        };
        VolumeSpec {
            source,
            target,
            kind,
            read_only,
            options,
        }
    }

    fn health_check(&mut self, v: &Value, path: &str) -> Option<HealthCheck> {
        let mut f = self.fields(v, path);
        let mut probes: Vec<(Probe, String)> = Vec::new();
        let mut broken = false;
        if let Some((v, p)) = f.take("command") {
            let mut argv = self.string_or_list(v, &p);
            if !matches!(untag(v), Value::Sequence(_)) {
                argv = vec!["/bin/sh".into(), "-c".into(), argv.concat()];
            } else if argv.first().map(String::as_str) == Some("CMD") {
                argv.remove(0);
            } else if argv.first().map(String::as_str) == Some("CMD-SHELL") {
                argv = vec!["/bin/sh".into(), "-c".into(), argv[1..].join(" ")];
            }
            probes.push((Probe::Command(argv), p));
        }
        let shorthand = ["path", "port", "scheme"].iter().any(|k| f.has(k));
        if shorthand {
            // `healthCheck: {path: /health, port: 8080}`, as the upstream templates write it
            let hpath = self
                .opt_string(&mut f, "path")
                .unwrap_or_else(|| "/".to_string());
            let port = match f.take("port") {
                Some((v, pp)) => self.port(v, &pp).unwrap_or(0),
                None => {
                    self.err(
                        path,
                        At::Key,
                        "an HTTP check needs a `port`: write `http: {path: /health, port: 8080}`",
                    );
                    broken = true;
                    0
                }
            };
            let scheme = self
                .opt_parsed(&mut f, "scheme", parse_scheme)
                .unwrap_or_default();
            if f.has("http") {
                self.err(
                    &join_key(path, "path"),
                    At::Key,
                    "`path`, `port` and `scheme` belong inside `http:` (not beside it)",
                );
            } else {
                self.note(
                    path,
                    At::Key,
                    format!(
                        "read as an HTTP check; the canonical spelling is `http: {{path: {hpath}, \
                         port: {port}}}`"
                    ),
                );
            }
            self.positions
                .add_alias(format!("{}.http", "spec.healthCheck"), path.to_string());
            probes.push((
                Probe::Http {
                    path: hpath,
                    port,
                    scheme,
                },
                path.to_string(),
            ));
        }
        if let Some((v, p)) = f.take("http") {
            let mut h = self.fields(v, &p);
            let hpath = self
                .opt_string(&mut h, "path")
                .unwrap_or_else(|| "/".to_string());
            let port = self.required_port(&mut h, "port");
            let scheme = self
                .opt_parsed(&mut h, "scheme", parse_scheme)
                .unwrap_or_default();
            broken |= h.map.is_none();
            h.finish(self);
            probes.push((
                Probe::Http {
                    path: hpath,
                    port,
                    scheme,
                },
                p,
            ));
        }
        if let Some((v, p)) = f.take("tcp") {
            let mut t = self.fields(v, &p);
            let port = self.required_port(&mut t, "port");
            broken |= t.map.is_none();
            t.finish(self);
            probes.push((Probe::Tcp { port }, p));
        }
        if let Some((v, p)) = f.take("file") {
            let mut t = self.fields(v, &p);
            let fpath = self.required_string(&mut t, "path");
            broken |= t.map.is_none();
            t.finish(self);
            probes.push((Probe::File { path: fpath }, p));
        }
        let interval = self.opt_parsed(&mut f, "interval", values::parse_duration);
        let timeout = self.opt_parsed(&mut f, "timeout", values::parse_duration);
        let retries = self.opt_u32(&mut f, "retries");
        let start_period = self.opt_parsed(&mut f, "startPeriod", values::parse_duration);
        let on_unhealthy = self.opt_parsed(&mut f, "onUnhealthy", |s| {
            match s.trim().to_ascii_lowercase().as_str() {
                "none" => Ok(OnUnhealthy::None),
                "restart" => Ok(OnUnhealthy::Restart),
                "stop" => Ok(OnUnhealthy::Stop),
                "kill" => Ok(OnUnhealthy::Kill),
                _ => Err(format!(
                    "{s:?} is not an action (none, kill, restart or stop)"
                )),
            }
        });
        let is_map = f.map.is_some();
        f.finish(self);
        if probes.len() > 1 {
            for (_, p) in &probes[1..] {
                self.err(
                    p,
                    At::Key,
                    "only one of `command`, `http`, `tcp` or `file` may be set",
                );
            }
        }
        let Some((probe, _)) = probes.into_iter().next() else {
            if is_map {
                self.err(
                    path,
                    At::Value,
                    "needs one of `command`, `http`, `tcp` or `file`",
                );
            }
            return None;
        };
        if broken {
            return None;
        }
        let mut h = HealthCheck::with_defaults(probe);
        h.interval = interval.unwrap_or(h.interval);
        h.timeout = timeout.unwrap_or(h.timeout);
        h.retries = retries.unwrap_or(h.retries);
        h.start_period = start_period.unwrap_or(h.start_period);
        h.on_unhealthy = on_unhealthy.unwrap_or(h.on_unhealthy);
        Some(h)
    }

    fn resources(&mut self, v: &Value, path: &str) -> Resources {
        let mut f = self.fields(v, path);
        let mut r = Resources::default();
        if let Some((v, p)) = f.take("limits") {
            let mut l = self.fields(v, &p);
            r.limits.cpu = self.opt_parsed(&mut l, "cpu", values::parse_cpu);
            r.limits.memory = self.opt_parsed(&mut l, "memory", values::parse_memory);
            if let Some((v, p)) = l.take("pids") {
                if let Some(n) = self.integer(v, &p) {
                    match n {
                        -1 => {}
                        n if n > 0 && n <= i128::from(i64::MAX) => r.limits.pids = Some(n as i64),
                        n => self.err(
                            &p,
                            At::Value,
                            format!("{n} is not a process count (1 or more, or -1 for no limit)"),
                        ),
                    }
                }
            }
            r.limits.cpuset_cpus = self.opt_parsed(&mut l, "cpusetCpus", values::parse_cpuset);
            r.limits.memory_swap = self.opt_parsed(&mut l, "memorySwap", values::parse_memory_swap);
            l.finish(self);
        }
        if let Some((v, p)) = f.take("requests") {
            let mut q = self.fields(v, &p);
            r.requests.cpu = self.opt_parsed(&mut q, "cpu", values::parse_cpu);
            r.requests.memory = self.opt_parsed(&mut q, "memory", values::parse_memory);
            r.requests.cpu_shares = self.opt_parsed(&mut q, "cpuShares", values::parse_cpu_shares);
            q.finish(self);
        }
        f.finish(self);
        r
    }

    fn scaling(&mut self, v: &Value, path: &str) -> Scaling {
        let mut f = self.fields(v, path);
        let mut s = Scaling {
            replicas: self.opt_u32(&mut f, "replicas"),
            min_replicas: self.opt_u32(&mut f, "minReplicas"),
            max_replicas: self.opt_u32(&mut f, "maxReplicas"),
            metrics: Vec::new(),
        };
        if let Some((v, p)) = f.take("metrics") {
            for (item, ip) in self.seq(v, &p) {
                let mut m = self.fields(item, &ip);
                let kind = self.required_string(&mut m, "type");
                let resource = match m.take("resource") {
                    Some((v, rp)) => {
                        let mut r = self.fields(v, &rp);
                        let name = self.required_string(&mut r, "name");
                        let target = match r.take("target") {
                            Some((v, tp)) => {
                                let mut t = self.fields(v, &tp);
                                let target = MetricTarget {
                                    kind: self.required_string(&mut t, "type"),
                                    average_utilization: self.opt_u32(&mut t, "averageUtilization"),
                                    average_value: self.opt_string(&mut t, "averageValue"),
                                    value: self.opt_string(&mut t, "value"),
                                };
                                t.finish(self);
                                Some(target)
                            }
                            None => {
                                if r.map.is_some() {
                                    self.err(&join_key(&rp, "target"), At::Key, "is required");
                                }
                                None
                            }
                        };
                        r.finish(self);
                        target.map(|target| MetricResource { name, target })
                    }
                    None => None,
                };
                m.finish(self);
                s.metrics.push(ScalingMetric { kind, resource });
            }
        }
        f.finish(self);
        s
    }

    fn autoscaling(&mut self, v: &Value, path: &str) -> Autoscaling {
        let mut f = self.fields(v, path);
        let a = Autoscaling {
            enabled: self.opt_bool(&mut f, "enabled").unwrap_or(false),
            target_cpu_utilization_percentage: self
                .opt_u32(&mut f, "targetCPUUtilizationPercentage"),
            target_memory_utilization_percentage: self
                .opt_u32(&mut f, "targetMemoryUtilizationPercentage"),
            scale_down_delay: self.opt_parsed(&mut f, "scaleDownDelay", values::parse_duration),
            scale_up_delay: self.opt_parsed(&mut f, "scaleUpDelay", values::parse_duration),
        };
        f.finish(self);
        a
    }

    fn security(&mut self, v: &Value, path: &str) -> Security {
        let mut f = self.fields(v, path);
        let mut s = Security {
            run_as_user: self.opt_u32(&mut f, "runAsUser"),
            run_as_group: self.opt_u32(&mut f, "runAsGroup"),
            ..Security::default()
        };
        if let Some((v, p)) = f.take("supplementalGroups") {
            s.supplemental_groups = self
                .seq(v, &p)
                .into_iter()
                .filter_map(|(item, ip)| self.u32(item, &ip))
                .collect();
        }
        if let Some(b) = self.opt_bool(&mut f, "readOnlyRootFilesystem") {
            s.read_only_root_filesystem = b;
        }
        if let Some(b) = self.opt_bool(&mut f, "noNewPrivileges") {
            s.no_new_privileges = b;
        }
        if let Some(b) = self.opt_bool(&mut f, "privileged") {
            s.privileged = b;
        }
        if let Some((v, p)) = f.take("capabilities") {
            let mut c = self.fields(v, &p);
            for (name, out) in [
                ("drop", &mut s.capabilities.drop),
                ("add", &mut s.capabilities.add),
            ] {
                if let Some((v, lp)) = c.take(name) {
                    for (item, ip) in self.seq(v, &lp) {
                        if let Some(cap) = self.parsed(item, &ip, values::parse_capability) {
                            out.push(cap);
                        }
                    }
                }
            }
            c.finish(self);
        }
        let base = self.base_dir;
        if let Some(p) = self.opt_parsed(&mut f, "seccompProfile", |s| {
            let t = s.trim();
            match t {
                "" => Err("must not be empty (default, unconfined or a file path)".to_string()),
                "default" | "runtime/default" | "RuntimeDefault" => Ok(SeccompProfile::Default),
                "unconfined" | "Unconfined" => Ok(SeccompProfile::Unconfined),
                path => Ok(SeccompProfile::Path(resolve(base, path))),
            }
        }) {
            s.seccomp_profile = p;
        }
        f.finish(self);
        s
    }

    /// The network, and the ports written under `network.ports` (their model index starts
    /// at `first_port`).
    fn network(&mut self, v: &Value, path: &str, first_port: usize) -> (Network, Vec<PortSpec>) {
        let mut f = self.fields(v, path);
        let mut n = Network::default();
        if let Some(mode) = self.opt_string(&mut f, "mode") {
            if mode.trim().is_empty() {
                self.err(&join_key(path, "mode"), At::Value, "must not be empty");
            } else {
                n.mode = NetworkMode::parse(mode.trim());
            }
        }
        let mut ports = Vec::new();
        if let Some((v, p)) = f.take("ports") {
            for (i, (item, ip)) in self.seq(v, &p).into_iter().enumerate() {
                self.positions
                    .add_alias(join_index("spec.ports", first_port + i), ip.clone());
                ports.push(self.port_spec(item, &ip));
            }
        }
        if let Some((v, p)) = f.take("dns") {
            n.dns = self
                .seq(v, &p)
                .into_iter()
                .filter_map(|(item, ip)| self.ip(item, &ip))
                .collect();
        }
        n.dns_search = self.opt_list(&mut f, "dnsSearch");
        n.dns_options = self.opt_list(&mut f, "dnsOptions");
        if let Some((v, p)) = f.take("ip") {
            n.ip = self.ip(v, &p);
        }
        if let Some((v, p)) = f.take("security") {
            let mut s = self.fields(v, &p);
            if let Some(b) = self.opt_bool(&mut s, "allowExternalConnections") {
                n.security.allow_external_connections = b;
            }
            n.security.allowed_hosts = self.opt_list(&mut s, "allowedHosts");
            s.finish(self);
        }
        f.finish(self);
        (n, ports)
    }

    fn service(&mut self, v: &Value, path: &str) -> ServiceDep {
        let mut f = self.fields(v, path);
        let s = ServiceDep {
            name: self.required_string(&mut f, "name"),
            port: self.required_port(&mut f, "port"),
            protocol: self
                .opt_parsed(&mut f, "protocol", values::parse_protocol)
                .unwrap_or_default(),
        };
        f.finish(self);
        s
    }

    fn secret(&mut self, v: &Value, path: &str) -> SecretRef {
        let mut f = self.fields(v, path);
        let s = SecretRef {
            name: self.required_string(&mut f, "name"),
            from: self.required_string(&mut f, "from"),
            secret_name: self.required_string(&mut f, "secretName"),
            secret_key: self.required_string(&mut f, "secretKey"),
        };
        f.finish(self);
        s
    }

    fn logging(&mut self, v: &Value, path: &str) -> Logging {
        let mut f = self.fields(v, path);
        let mut l = Logging::default();
        for name in ["maxSize", "max-size"] {
            if let Some(b) = self.opt_parsed(&mut f, name, values::parse_memory) {
                l.max_size = b;
            }
        }
        for name in ["maxFile", "max-file"] {
            if let Some(n) = self.opt_u32(&mut f, name) {
                l.max_file = n;
            }
        }
        l.labels = self.opt_list(&mut f, "labels");
        l.env = self.opt_list(&mut f, "env");
        for (a, b) in [("maxSize", "max-size"), ("maxFile", "max-file")] {
            if f.has(a) && f.has(b) {
                self.err(&join_key(path, b), At::Key, format!("duplicates `{a}`"));
            }
        }
        f.finish(self);
        l
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{load_file, load_str, validate};

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
    }

    fn errors(src: &str) -> Vec<String> {
        match load_str(src, Some(Path::new("agent.yaml")), Path::new("/base")) {
            Ok(a) => panic!("accepted: {a:?}"),
            Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn ok(src: &str) -> Agent {
        match load_str(src, Some(Path::new("agent.yaml")), Path::new("/base")) {
            Ok(a) => a,
            Err(d) => panic!("rejected:\n{d}"),
        }
    }

    const HEAD: &str = "apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: demo\n";

    #[test]
    fn every_example_loads() {
        let mut n = 0;
        for entry in std::fs::read_dir(examples()).unwrap() {
            let dir = entry.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            let file = dir.join("agent.yaml");
            if let Err(d) = load_file(&file) {
                panic!("{}:\n{d}", file.display());
            }
            n += 1;
        }
        assert!(n >= 3);
    }

    #[test]
    fn chatbot_example_decodes_fully() {
        let dir = examples().join("chatbot");
        let a = load_file(&dir.join("agent.yaml")).unwrap();
        let s = &a.spec;
        assert_eq!(a.metadata.name, "chatbot");
        assert_eq!(a.metadata.version.as_deref(), Some("1.0.0"));
        assert_eq!(s.ports.len(), 1);
        assert_eq!((s.ports[0].container, s.ports[0].host), (8080, Some(8080)));
        assert_eq!(
            s.environment[1].source,
            EnvSource::Config {
                key: Some("model_name".into())
            }
        );
        assert_eq!(
            s.environment[2].source,
            EnvSource::Secret {
                secret_name: "agent-secrets".into(),
                secret_key: "openai-api-key".into()
            }
        );
        // the relative bind source is resolved against the file's folder
        let want = resolve(&std::path::absolute(&dir).unwrap(), "data");
        assert_eq!(Path::new(&s.volumes[0].source), want);
        assert!(Path::new(&s.volumes[0].source).is_absolute());
        assert_eq!(s.volumes[1].source, "model-cache");
        assert_eq!(s.volumes[1].kind, VolumeType::Volume);
        let h = s.health_check.as_ref().unwrap();
        assert_eq!(
            h.probe,
            Probe::Http {
                path: "/health".into(),
                port: 8080,
                scheme: HttpScheme::Http
            }
        );
        assert_eq!(h.start_period, Duration::from_secs(5));
        assert_eq!(s.resources.limits.cpu, Some(MilliCpu(2000)));
        assert_eq!(s.resources.limits.memory, Some(Bytes(2 << 30)));
        assert_eq!(s.resources.requests.cpu, Some(MilliCpu(500)));
        assert_eq!(s.resources.requests.memory, Some(Bytes(512 << 20)));
        assert_eq!(s.scaling.as_ref().unwrap().max_replicas, Some(10));
        let auto = s.autoscaling.as_ref().unwrap();
        assert_eq!(auto.scale_down_delay, Some(Duration::from_secs(300)));
        assert_eq!(s.security.run_as_user, Some(1000));
        assert!(s.security.read_only_root_filesystem);
        assert!(s.security.no_new_privileges);
        assert_eq!(s.security.capabilities.drop, vec!["ALL"]);
        assert_eq!(s.security.capabilities.add, vec!["NET_BIND_SERVICE"]);
        assert_eq!(s.network.dns.len(), 2);
        assert!(!s.network.security.allow_external_connections);
        assert_eq!(s.services[1].port, 6379);
        assert_eq!(s.secrets[0].from, "kubernetes-secret");
        assert_eq!(
            s.restart_policy,
            RestartPolicy::OnFailure {
                max_retries: Some(5)
            }
        );
        assert_eq!(
            render_config_value(&s.model.as_ref().unwrap().config["temperature"]),
            "0.7"
        );
    }

    #[test]
    fn all_problems_at_once_with_positions() {
        let src = "\
apiVersion: agent.dev/v1
metadata:
  name: demo
spec:
  ports:
    - container: 8080
    - container: 70000
  prots: []
  resources:
    limits:
      cpu: 1
      memory: lots
    requests:
      cpu: \"2\"
  healthCheck:
    tcp: {port: 8080}
    retries: many
  environment:
    - name: A
      from: config
      key: missing
";
        assert_eq!(
            errors(src),
            vec![
                "agent.yaml:7:18: spec.ports[1].container: 70000 is not a port (1-65535)",
                "agent.yaml:8:3: spec.prots: unknown field `prots`; did you mean `ports`?",
                "agent.yaml:12:15: spec.resources.limits.memory: \"lots\" is not a memory amount (use bytes or a suffix: \"512Mi\", \"2Gi\", \"1G\", \"500M\", \"512m\")",
                "agent.yaml:14:12: spec.resources.requests.cpu: request 2 is above the limit 1",
                "agent.yaml:17:14: spec.healthCheck.retries: \"many\" is not a whole number",
                "agent.yaml:21:12: spec.environment[0].key: `missing` is not in spec.config",
            ]
        );
    }

    #[test]
    fn unknown_fields_everywhere() {
        let src = format!(
            "{HEAD}  nmae: x\nspec:\n  image: a\n  healthCheck:\n    tcp: {{port: 1, hots: 2}}\nextra: 1\n"
        );
        assert_eq!(
            errors(&src),
            vec![
                "agent.yaml:5:3: metadata.nmae: unknown field `nmae`; did you mean `name`?",
                "agent.yaml:9:20: spec.healthCheck.tcp.hots: unknown field `hots`",
                "agent.yaml:10:1: extra: unknown field `extra`",
            ]
        );
    }

    #[test]
    fn type_errors() {
        let src = format!(
            "{HEAD}  tags: chat\nspec:\n  ports: 8080\n  command: {{a: b}}\n  security:\n    readOnlyRootFilesystem: yes\n    runAsUser: -1\n  network:\n    dns: [8.8.8]\n"
        );
        assert_eq!(
            errors(&src),
            vec![
                "agent.yaml:5:9: metadata.tags: expected a list, found a string",
                "agent.yaml:7:10: spec.ports: expected a list, found a number",
                "agent.yaml:8:12: spec.command: expected a string, found a mapping",
                "agent.yaml:10:29: spec.security.readOnlyRootFilesystem: expected true or false, found a string",
                "agent.yaml:11:16: spec.security.runAsUser: -1 is out of range (0-4294967295)",
                "agent.yaml:13:11: spec.network.dns[0]: \"8.8.8\" is not an IP address",
            ]
        );
    }

    #[test]
    fn egress_entries_point_at_their_line() {
        let src = format!(
            "{HEAD}spec:\n  security:\n    capabilities: {{add: [NET_ADMIN]}}\n  network:\n    security:\n      allowExternalConnections: false\n      allowedHosts:\n        - api.example.com\n        - \"api.*.com\"\n        - \"x.test:99999\"\n"
        );
        assert_eq!(
            errors(&src),
            vec![
                "agent.yaml:7:26: spec.security.capabilities.add[0]: NET_ADMIN would let the agent change or go around its egress policy (spec.network.security); it cannot be added while egress is limited",
                "agent.yaml:13:11: spec.network.security.allowedHosts[1]: \"api.*.com\": only a leading `*.` wildcard is supported (like *.example.com)",
                "agent.yaml:14:11: spec.network.security.allowedHosts[2]: \"x.test:99999\": \"99999\" is not a port (1-65535); write NAME:PORT, like api.example.com:443",
            ]
        );
        // `true` next to a list is only a warning; the list is still in force.
        let a = ok(&format!(
            "{HEAD}spec:\n  network:\n    security:\n      allowExternalConnections: true\n      allowedHosts: [\"*.example.com:443\"]\n"
        ));
        let policy = a.spec.network.security.egress_policy().unwrap();
        assert_eq!(policy.allowed[0].to_string(), "*.example.com:443");
    }

    #[test]
    fn missing_required_fields() {
        assert_eq!(
            errors("kind: Agent\nspec:\n  ports:\n    - host: 80\n"),
            vec![
                "agent.yaml:1:1: metadata: is required",
                "agent.yaml:1:1: apiVersion: is required (agent.dev/v1)",
                "agent.yaml:4:7: spec.ports[0].container: is required",
            ]
        );
        assert_eq!(
            errors(&format!("{HEAD}spec:\n  healthCheck:\n    interval: 5s\n")),
            vec![
                "agent.yaml:7:5: spec.healthCheck: needs one of `command`, `http`, `tcp` or `file`"
            ]
        );
        assert_eq!(errors(""), vec!["the file is empty"]);
        assert_eq!(
            errors("apiVersion: agent.dev/v2\nkind: Pod\nmetadata: {name: My}\n"),
            vec![
                "agent.yaml:1:13: apiVersion: \"agent.dev/v2\" is not supported (use agent.dev/v1)",
                "agent.yaml:2:7: kind: \"Pod\" is not supported (use Agent)",
                "agent.yaml:3:18: metadata.name: \"My\" is not a valid name (lowercase letters, digits, '-', '_', '.'; starts and ends with a letter or digit; at most 63 characters)",
            ]
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let e = errors("apiVersion: agent.dev/v1\nmetadata:\n  name: [a\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("agent.yaml:4:1: "), "{}", e[0]);
        let e = errors("a: 1\na: 2\n");
        assert!(e[0].contains("duplicate"), "{}", e[0]);
    }

    #[test]
    fn defaults_applied() {
        let a = ok(&format!(
            "{HEAD}spec:\n  image: x\n  healthCheck:\n    command: curl -f localhost\n"
        ));
        let h = a.spec.health_check.unwrap();
        assert_eq!(
            h.probe,
            Probe::Command(vec![
                "/bin/sh".into(),
                "-c".into(),
                "curl -f localhost".into()
            ])
        );
        assert_eq!(h.interval, HealthCheck::DEFAULT_INTERVAL);
        assert_eq!(h.timeout, HealthCheck::DEFAULT_TIMEOUT);
        assert_eq!(h.retries, HealthCheck::DEFAULT_RETRIES);
        assert_eq!(h.start_period, HealthCheck::DEFAULT_START_PERIOD);
        assert_eq!(h.on_unhealthy, OnUnhealthy::None);
        assert!(a.spec.security.no_new_privileges);
        assert_eq!(a.spec.security.seccomp_profile, SeccompProfile::Default);
        assert!(a.spec.network.security.allow_external_connections);
        assert_eq!(a.spec.network.mode, NetworkMode::Bridge);
        assert_eq!(a.spec.restart_policy, RestartPolicy::No);
        assert_eq!(a.spec.logging, Logging::default());
        assert_eq!(a.kind, KIND);
        // kind may be left out
        let a = ok("apiVersion: agent.dev/v1\nmetadata: {name: x}\n");
        assert_eq!(a.kind, KIND);
        assert_eq!(a.image_ref(), "x:latest");
    }

    #[test]
    fn environment_forms() {
        let a = ok(&format!(
            "{HEAD}spec:\n  config: {{model: gpt-4, n: 3}}\n  environment:\n    - {{name: N, value: 3}}\n    - {{name: B, value: true}}\n    - {{name: model, from: config}}\n    - {{name: E, value: }}\n"
        ));
        let env = &a.spec.environment;
        assert_eq!(env[0].source, EnvSource::Value { value: "3".into() });
        assert_eq!(
            env[1].source,
            EnvSource::Value {
                value: "true".into()
            }
        );
        assert_eq!(env[2].source, EnvSource::Config { key: None });
        assert_eq!(env[3].source, EnvSource::Value { value: "".into() });
        assert_eq!(render_config_value(&a.spec.config["n"]), "3");
        assert_eq!(
            errors(&format!(
                "{HEAD}spec:\n  environment:\n    - name: X\n    - {{name: Y, from: secret, secretName: s}}\n    - {{name: Z, from: vault}}\n    - {{name: model, from: config}}\n"
            )),
            vec![
                "agent.yaml:7:7: spec.environment[0]: needs a `value` or `from: config` / `from: secret`",
                "agent.yaml:9:23: spec.environment[2].from: \"vault\" is not a source (config or secret)",
                "agent.yaml:10:27: spec.environment[3].from: `model` is not in spec.config",
            ]
        );
    }

    #[test]
    fn secret_shorthand() {
        let a = ok(&format!(
            "{HEAD}spec:\n  environment:\n    - name: OPENAI_API_KEY\n      from: secret\n    - {{name: DB, from: secret, secretName: db, secretKey: password}}\n"
        ));
        assert_eq!(
            a.spec.environment[0].source,
            EnvSource::Secret {
                secret_name: "OPENAI_API_KEY".into(),
                secret_key: "".into()
            }
        );
        assert_eq!(
            a.spec.environment[1].source,
            EnvSource::Secret {
                secret_name: "db".into(),
                secret_key: "password".into()
            }
        );
    }

    #[test]
    fn port_shorthand_and_network_ports() {
        let a = ok(&format!(
            "{HEAD}spec:\n  ports:\n    - 8080:8080\n    - \"127.0.0.1:80:8080/UDP\"\n    - 9000\n    - {{container: 53, protocol: UDP}}\n  network:\n    mode: bridge\n    ports: [\"9090:9090\"]\n"
        ));
        let p = &a.spec.ports;
        assert_eq!(p.len(), 5);
        assert_eq!((p[0].host, p[0].container), (Some(8080), 8080));
        assert_eq!(p[1].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!((p[1].protocol, p[1].host), (Protocol::Udp, Some(80)));
        assert_eq!((p[2].host, p[2].container), (None, 9000));
        assert_eq!(p[3].protocol, Protocol::Udp);
        assert_eq!((p[4].host, p[4].container), (Some(9090), 9090));
        // problems in network.ports are reported where they were written
        assert_eq!(
            errors(&format!(
                "{HEAD}spec:\n  ports: [\"8080:80\"]\n  network:\n    ports:\n      - \"8080:81\"\n      - \"1:2:3:4\"\n"
            )),
            vec![
                "agent.yaml:9:9: spec.network.ports[0].host: host port 8080/tcp is already published by spec.ports[0]",
                "agent.yaml:10:9: spec.network.ports[1]: \"1:2:3:4\" is not a port mapping (use \"8080\", \"80:8080\", \"127.0.0.1:80:8080/udp\")",
            ]
        );
    }

    #[test]
    fn relative_paths_resolve_against_base_dir() {
        let a = ok(&format!(
            "{HEAD}spec:\n  volumes:\n    - {{source: ./data, target: /d}}\n    - {{source: ../cfg/app.yaml, target: /c, type: configMap}}\n    - {{source: /abs, target: /a, readOnly: true}}\n    - {{source: cache, target: /v, type: volume}}\n  security:\n    seccompProfile: profiles/strict.json\n"
        ));
        let v = &a.spec.volumes;
        assert_eq!(v[0].source, "/base/data");
        assert_eq!(v[1].source, "/cfg/app.yaml");
        assert_eq!(v[1].kind, VolumeType::ConfigMap);
        assert_eq!(v[2].source, "/abs");
        assert!(v[2].read_only);
        assert_eq!(v[3].source, "cache");
        assert_eq!(
            a.spec.security.seccomp_profile,
            SeccompProfile::Path("/base/profiles/strict.json".into())
        );
    }

    #[test]
    fn validate_again_after_overrides_keeps_positions() {
        let src = format!("{HEAD}spec:\n  ports:\n    - {{container: 80, host: 8080}}\n");
        let Decoded {
            agent: mut a,
            positions: pos,
            ..
        } = decode_str(&src, Some(Path::new("agent.yaml")), Path::new("/")).unwrap();
        assert!(validate(&a, Some(&pos)).is_empty());
        a.spec.ports[0].container = 0;
        a.spec.resources.limits.memory = Some(Bytes(1));
        a.spec.resources.requests.memory = Some(Bytes(2));
        let d: Vec<String> = validate(&a, Some(&pos))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            d,
            vec![
                "agent.yaml:5:1: spec.resources.requests.memory: request 2 is above the limit 1",
                "agent.yaml:7:19: spec.ports[0].container: 0 is not a port (1-65535)",
            ]
        );
    }

    #[test]
    fn docker_run_flag_fields() {
        let a = ok(&format!(
            "{HEAD}spec:\n  resources:\n    limits: {{memory: 64Mi, memorySwap: -1, cpusetCpus: '0-1'}}\n    requests: {{cpuShares: 512}}\n  security: {{privileged: true}}\n  network: {{mode: team, ip: 10.89.0.9, dnsSearch: [a.example], dnsOptions: ['ndots:2']}}\n  logging: {{labels: [team], env: [STAGE]}}\n  healthCheck: {{tcp: {{port: 8080}}, onUnhealthy: kill}}\n"
        ));
        let r = &a.spec.resources;
        assert_eq!(r.limits.memory_swap, Some(MemorySwap::Unlimited));
        assert_eq!(r.limits.cpuset_cpus.as_deref(), Some("0-1"));
        assert_eq!(r.requests.cpu_shares, Some(512));
        assert!(a.spec.security.privileged);
        assert_eq!(a.spec.network.ip, Some("10.89.0.9".parse().unwrap()));
        assert_eq!(a.spec.network.dns_search, vec!["a.example"]);
        assert_eq!(a.spec.network.dns_options, vec!["ndots:2"]);
        assert_eq!(a.spec.logging.labels, vec!["team"]);
        assert_eq!(a.spec.logging.env, vec!["STAGE"]);
        assert_eq!(
            a.spec.health_check.as_ref().map(|h| h.on_unhealthy),
            Some(OnUnhealthy::Kill)
        );
        // memory plus swap below the memory, and an address off a user network
        let e = errors(&format!(
            "{HEAD}spec:\n  resources: {{limits: {{memory: 64Mi, memorySwap: 32Mi}}}}\n  network: {{ip: 10.89.0.9}}\n"
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("spec.resources.limits.memorySwap"), "{e:?}");
        assert!(e[1].contains("spec.network.ip"), "{e:?}");
    }

    #[test]
    fn logging_and_misc_fields() {
        let a = ok(&format!(
            "{HEAD}spec:\n  logging: {{max-size: 1m, max-file: 5}}\n  restartPolicy: always\n  resources: {{limits: {{cpu: 0.5, memory: 268435456, pids: -1}}}}\n  args: --verbose\n"
        ));
        assert_eq!(a.spec.logging.max_size, Bytes(1 << 20));
        assert_eq!(a.spec.logging.max_file, 5);
        assert_eq!(a.spec.restart_policy, RestartPolicy::Always);
        assert_eq!(a.spec.resources.limits.cpu, Some(MilliCpu(500)));
        assert_eq!(a.spec.resources.limits.memory, Some(Bytes(1 << 28)));
        assert_eq!(a.spec.resources.limits.pids, None);
        assert_eq!(a.spec.args, vec!["--verbose"]);
        assert_eq!(
            errors(&format!(
                "{HEAD}spec:\n  restartPolicy: sometimes\n  logging: {{maxSize: 1m, max-size: 2m}}\n"
            )),
            vec![
                "agent.yaml:6:18: spec.restartPolicy: \"sometimes\" is not a restart policy (no, on-failure[:N], always, unless-stopped)",
                "agent.yaml:7:26: spec.logging.max-size: duplicates `maxSize`",
            ]
        );
    }

    #[test]
    fn odd_documents_do_not_panic() {
        for src in [
            "[]",
            "42",
            "~",
            "? [a]\n: b\n",
            "apiVersion: !tag agent.dev/v1\nmetadata: {name: x}\n",
            "a: &x [*x]\n",
            "metadata: {name: x}\nspec: {ports: [[1]], volumes: [1], environment: [x]}\n",
            "metadata: {name: x}\nspec: {healthCheck: {command: [], http: 1, tcp: {}, file: {}}}\n",
            "metadata: {name: x}\nspec: {resources: {limits: {pids: 99999999999999999999999}}}\n",
            "metadata: {name: x}\nspec: {ports: [{container: 1e9}], scaling: {replicas: 1.5}}\n",
            "---\na: 1\n---\nb: 2\n",
        ] {
            let _ = load_str(src, None, Path::new("/"));
        }
    }
}

/// agent.yaml as the upstream templates and docs write it (issue 19).
#[cfg(test)]
mod upstream_spellings {
    use super::*;
    use crate::check_noted;

    fn noted(src: &str) -> (Agent, Vec<String>) {
        let d = decode_str(src, Some(Path::new("agent.yaml")), Path::new("/base")).unwrap();
        match check_noted(d, Vec::new()) {
            Ok((a, notes)) => (a, notes.iter().map(|n| n.to_string()).collect()),
            Err(d) => panic!("rejected:\n{d}"),
        }
    }

    fn errors(src: &str) -> Vec<String> {
        match crate::load_str(src, Some(Path::new("agent.yaml")), Path::new("/base")) {
            Ok(a) => panic!("accepted: {a:?}"),
            Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    const HEAD: &str = "kind: Agent\nmetadata:\n  name: demo\nspec:\n  image: busybox\n";

    #[test]
    fn api_version_alias() {
        let (a, notes) = noted(&format!("apiVersion: agent.as.code/v1\n{HEAD}"));
        assert_eq!(a.api_version, API_VERSION);
        assert_eq!(
            notes,
            ["agent.yaml:1:13: apiVersion: `agent.as.code/v1` is read as `agent.dev/v1`, the canonical spelling"]
        );
        let e = errors(&format!("apiVersion: agent.as.code/v2\n{HEAD}"));
        assert!(
            e[0].contains("is not supported (use agent.dev/v1)"),
            "{e:?}"
        );
    }

    #[test]
    fn health_check_spellings() {
        let (a, notes) = noted(&format!(
            "apiVersion: agent.dev/v1\n{HEAD}  healthcheck:\n    path: /health\n    port: 8080\n    interval: 7s\n"
        ));
        let h = a.spec.health_check.unwrap();
        assert_eq!(
            h.probe,
            Probe::Http {
                path: "/health".into(),
                port: 8080,
                scheme: HttpScheme::Http
            }
        );
        assert_eq!(h.interval, std::time::Duration::from_secs(7));
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("spec.healthcheck: `healthcheck` is read as `healthCheck`"));
        assert!(notes[1].contains("the canonical spelling is `http: {path: /health, port: 8080}`"));
        // canonical key, shorthand body
        let (a, notes) = noted(&format!(
            "apiVersion: agent.dev/v1\n{HEAD}  healthCheck: {{path: /health, port: 8080}}\n"
        ));
        assert!(matches!(
            a.spec.health_check.unwrap().probe,
            Probe::Http { port: 8080, .. }
        ));
        assert_eq!(notes.len(), 1);
        // what to write instead
        let e = errors(&format!(
            "apiVersion: agent.dev/v1\n{HEAD}  healthcheck:\n    path: /health\n    interval: 30s\n"
        ));
        assert_eq!(
            e,
            ["agent.yaml:7:3: spec.healthcheck: an HTTP check needs a `port`: write `http: {path: /health, port: 8080}`"]
        );
        let e = errors(&format!(
            "apiVersion: agent.dev/v1\n{HEAD}  healthcheck: {{path: health, port: 80}}\n"
        ));
        assert_eq!(
            e,
            ["agent.yaml:7:23: spec.healthcheck.path: \"health\" must start with /"]
        );
        let e = errors(&format!(
            "apiVersion: agent.dev/v1\n{HEAD}  healthCheck: {{tcp: {{port: 1}}}}\n  healthcheck: {{tcp: {{port: 1}}}}\n"
        ));
        assert_eq!(
            e,
            ["agent.yaml:8:3: spec.healthcheck: duplicates `healthCheck`"]
        );
        // unknown fields stay errors
        let e = errors(&format!(
            "apiVersion: agent.dev/v1\n{HEAD}  healthcheck: {{path: /h, port: 80, verb: GET}}\n"
        ));
        assert!(
            e[0].contains("spec.healthcheck.verb: unknown field `verb`"),
            "{e:?}"
        );
    }

    #[test]
    fn replicas_models_monitoring() {
        let (a, notes) = noted(&format!(
            "apiVersion: agent.dev/v1\n{HEAD}  replicas: 3\n  models:\n    - {{name: gpt-4, provider: openai, use: text-generation}}\n    - {{name: llama2, provider: ollama}}\n  monitoring:\n    prometheus: true\n    logging: {{level: INFO, format: json}}\n    tracing: {{enabled: true, provider: jaeger}}\n"
        ));
        assert_eq!(a.spec.scaling.as_ref().unwrap().replicas, Some(3));
        assert_eq!(a.spec.models.len(), 2);
        assert_eq!(a.spec.models[0].purpose.as_deref(), Some("text-generation"));
        let m = a.spec.monitoring.unwrap();
        assert!(m.prometheus.unwrap().enabled);
        assert_eq!(m.logging.unwrap().format.as_deref(), Some("json"));
        assert_eq!(m.tracing.unwrap().provider.as_deref(), Some("jaeger"));
        let joined = notes.join("\n");
        assert!(
            joined.contains(
                "agent.yaml:7:3: spec.replicas: `spec.replicas` is read as `spec.scaling.replicas`"
            ),
            "{joined}"
        );
        // `spec.replicas` is acted on (as `spec.scaling.replicas`); the other two are not.
        for field in ["spec.models", "spec.monitoring"] {
            assert!(
                joined.contains(&format!(
                    "{field}: not acted on by aac when it runs the agent"
                )),
                "{field}: {joined}"
            );
        }
        let e = errors(&format!(
            "apiVersion: agent.dev/v1\n{HEAD}  replicas: 2\n  scaling: {{replicas: 3}}\n"
        ));
        assert_eq!(
            e,
            ["agent.yaml:7:3: spec.replicas: duplicates `spec.scaling.replicas`"]
        );
        let e = errors(&format!(
            "apiVersion: agent.dev/v1\n{HEAD}  monitoring:\n    grafana: true\n  models:\n    - {{name: x, temperature: 1}}\n"
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("spec.monitoring.grafana: unknown field"),
            "{e:?}"
        );
        assert!(
            e[1].contains("spec.models[0].temperature: unknown field"),
            "{e:?}"
        );
        // `use` only in the list
        let e = errors(&format!(
            "apiVersion: agent.dev/v1\n{HEAD}  model: {{name: x, use: chat}}\n"
        ));
        assert!(e[0].contains("spec.model.use: unknown field"), "{e:?}");
    }

    #[test]
    fn canonical_files_have_no_spelling_notes() {
        let (_, notes) = noted(&format!(
            "apiVersion: agent.dev/v1\n{HEAD}  healthCheck:\n    http: {{path: /h, port: 80}}\n"
        ));
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn environment_and_mount_limits() {
        let big = "x".repeat(1 << 20);
        let e = errors(&format!(
            "apiVersion: agent.dev/v1\n{HEAD}  environment:\n    - {{name: BIG, value: {big}}}\n"
        ));
        assert_eq!(
            e.len(),
            2,
            "{:?}",
            e.iter().map(|l| &l[..80.min(l.len())]).collect::<Vec<_>>()
        );
        assert!(
            e.iter().all(|l| !l.contains("xxxx")),
            "the value is not echoed"
        );
        assert!(e
            .iter()
            .any(|l| l.contains("`BIG` is 1048576 bytes long; Linux passes at most 131071 bytes")));
        for target in [
            "/proc",
            "/proc/sys",
            "/sys/fs/cgroup",
            "/x/../sys",
            "/proc/",
        ] {
            let e = errors(&format!(
                "apiVersion: agent.dev/v1\n{HEAD}  volumes:\n    - {{type: tmpfs, target: \"{target}\"}}\n"
            ));
            assert_eq!(e.len(), 1, "{target}: {e:?}");
            assert!(e[0].contains("which the runtime mounts itself"), "{e:?}");
        }
        // near misses
        let (a, _) = noted(&format!(
            "apiVersion: agent.dev/v1\n{HEAD}  volumes:\n    - {{type: tmpfs, target: /process}}\n    - {{type: tmpfs, target: /app/proc}}\n"
        ));
        assert_eq!(a.spec.volumes.len(), 2);
    }
}
