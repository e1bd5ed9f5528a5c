//! Semantic checks on a finished [`Agent`], whether it came from agent.yaml, CLI flags or both.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use crate::diagnostics::Diagnostic;
use crate::model::*;
use crate::positions::Positions;
use crate::values;

/// Semantic checks on a finished model (also used after CLI flags override a file): returns
/// every problem; paths like `spec.ports[1].container`. `positions` (when the agent came from
/// a file) attaches file:line:col to each.
pub fn validate(agent: &Agent, positions: Option<&Positions>) -> Vec<Diagnostic> {
    let mut v = Validator {
        positions,
        diags: Vec::new(),
    };
    v.agent(agent);
    let mut diags = v.diags;
    crate::diagnostics::sort(&mut diags);
    diags
}

struct Validator<'a> {
    positions: Option<&'a Positions>,
    diags: Vec<Diagnostic>,
}

/// `name` rules shared by metadata.name: lowercase letters, digits, `-`, `_`, `.`, starting
/// and ending with a letter or digit, at most 63 characters.
pub fn check_agent_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is required".into());
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = name.len() <= 63
        && name
            .chars()
            .all(|c| ok_char(c) || matches!(c, '-' | '_' | '.'))
        && name.starts_with(ok_char)
        && name.ends_with(ok_char);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name (lowercase letters, digits, '-', '_', '.'; starts and ends with a letter or digit; at most 63 characters)"
        ))
    }
}

/// Names of networks and volumes: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
fn is_object_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn cpu_text(c: MilliCpu) -> String {
    if c.0.is_multiple_of(1000) {
        format!("{}", c.0 / 1000)
    } else {
        format!("{}m", c.0)
    }
}

fn bytes_text(b: Bytes) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if b.0 >= size && b.0.is_multiple_of(size) {
            return format!("{}{unit}", b.0 / size);
        }
    }
    b.0.to_string()
}

/// Linux's limit on one argument or environment string given to a program (`MAX_ARG_STRLEN`,
/// 32 pages, terminating NUL included): beyond it execve fails with E2BIG.
pub const MAX_EXEC_STRING: usize = 32 * 4096;

/// The most bytes of arguments and environment aac passes to a program; Linux allows a
/// quarter of the stack limit (2 MiB with the usual 8 MiB), and the image adds its own.
pub const MAX_EXEC_TOTAL: usize = 1 << 20;

/// `/proc` or `/sys` when `target` (lexically cleaned, `..` resolved) is one of them or
/// inside one: mounting there would hide or replace what the kernel shows the container.
pub fn kernel_filesystem(target: &str) -> Option<&'static str> {
    let mut parts: Vec<&str> = Vec::new();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    match parts.first() {
        Some(&"proc") => Some("/proc"),
        Some(&"sys") => Some("/sys"),
        _ => None,
    }
}

fn ips_overlap(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b || a.is_unspecified() || b.is_unspecified(),
        _ => true,
    }
}

impl Validator<'_> {
    fn err(&mut self, path: &str, msg: impl Into<String>) {
        let (shown, location) = match self.positions {
            Some(p) => (p.source_path(path), p.value(path)),
            None => (path.to_string(), None),
        };
        self.diags.push(Diagnostic::new(shown, msg).at(location));
    }

    fn port(&mut self, path: &str, p: u16) {
        if let Err(e) = values::check_port(i128::from(p)) {
            self.err(path, e);
        }
    }

    fn absolute(&mut self, path: &str, p: &str) {
        if p.is_empty() {
            self.err(path, "is required");
        } else if !p.starts_with('/') {
            self.err(path, format!("{p:?} must be an absolute path"));
        }
    }

    fn non_empty(&mut self, path: &str, s: &str) {
        if s.trim().is_empty() {
            self.err(path, "is required");
        }
    }

    fn agent(&mut self, a: &Agent) {
        if a.api_version.is_empty() {
            self.err("apiVersion", format!("is required ({API_VERSION})"));
        } else if a.api_version != API_VERSION {
            self.err(
                "apiVersion",
                format!("{:?} is not supported (use {API_VERSION})", a.api_version),
            );
        }
        if a.kind != KIND {
            self.err(
                "kind",
                format!("{:?} is not supported (use {KIND})", a.kind),
            );
        }
        if let Err(e) = check_agent_name(&a.metadata.name) {
            self.err("metadata.name", e);
        }
        for k in a.metadata.labels.keys() {
            if k.is_empty() {
                self.err("metadata.labels", "label names must not be empty");
            }
        }
        self.spec(&a.spec);
    }

    fn spec(&mut self, s: &AgentSpec) {
        if let Some(image) = &s.image {
            if image.trim().is_empty() {
                self.err("spec.image", "must not be empty");
            } else if image.chars().any(char::is_whitespace) {
                self.err("spec.image", format!("{image:?} is not an image reference"));
            }
        }
        if let Some(dir) = &s.working_dir {
            self.absolute("spec.workingDir", dir);
        }
        if let Some(h) = &s.hostname {
            if !is_hostname(h) {
                self.err("spec.hostname", format!("{h:?} is not a valid hostname"));
            }
        }
        for (i, a) in s.command.iter().chain(&s.args).enumerate() {
            let (field, idx) = if i < s.command.len() {
                ("command", i)
            } else {
                ("args", i - s.command.len())
            };
            if a.contains('\0') {
                self.err(&format!("spec.{field}[{idx}]"), "must not contain NUL");
            } else if a.len() >= MAX_EXEC_STRING {
                self.err(
                    &format!("spec.{field}[{idx}]"),
                    format!(
                        "is {} bytes; Linux passes at most {} bytes per argument",
                        a.len(),
                        MAX_EXEC_STRING - 1
                    ),
                );
            }
        }
        let total: usize = s
            .command
            .iter()
            .chain(&s.args)
            .map(|a| a.len() + 1)
            .chain(s.environment.iter().map(|e| match &e.source {
                EnvSource::Value { value } => e.name.len() + value.len() + 2,
                _ => e.name.len() + 2,
            }))
            .sum();
        if total > MAX_EXEC_TOTAL {
            self.err(
                "spec",
                format!(
                    "the command and environment add up to {total} bytes; aac starts programs \
                     with at most {MAX_EXEC_TOTAL}"
                ),
            );
        }
        self.environment(s);
        self.ports(s);
        self.volumes(&s.volumes);
        if let Some(h) = &s.health_check {
            self.health_check(h);
        }
        self.resources(&s.resources);
        if let Some(sc) = &s.scaling {
            self.scaling(sc);
        }
        if let Some(a) = &s.autoscaling {
            for (name, v) in [
                (
                    "targetCPUUtilizationPercentage",
                    a.target_cpu_utilization_percentage,
                ),
                (
                    "targetMemoryUtilizationPercentage",
                    a.target_memory_utilization_percentage,
                ),
            ] {
                if let Some(v) = v {
                    if !(1..=100).contains(&v) {
                        self.err(
                            &format!("spec.autoscaling.{name}"),
                            format!("{v} is not a percentage (1-100)"),
                        );
                    }
                }
            }
            // Utilization is a share of the request, as for the HPA.
            if a.enabled {
                let req = &s.resources.requests;
                if a.target_cpu_utilization_percentage.is_some() && req.cpu.is_none() {
                    self.err(
                        "spec.autoscaling.targetCPUUtilizationPercentage",
                        "needs spec.resources.requests.cpu (utilization is a share of the request)",
                    );
                }
                if a.target_memory_utilization_percentage.is_some() && req.memory.is_none() {
                    self.err(
                        "spec.autoscaling.targetMemoryUtilizationPercentage",
                        "needs spec.resources.requests.memory (utilization is a share of the request)",
                    );
                }
            }
        }
        if let Some(sc) = &s.scaling {
            for (i, m) in sc.metrics.iter().enumerate() {
                let Some(r) = &m.resource else { continue };
                if m.kind != "Resource" || r.target.kind != "Utilization" {
                    continue;
                }
                let missing = match r.name.as_str() {
                    "cpu" => s.resources.requests.cpu.is_none(),
                    "memory" => s.resources.requests.memory.is_none(),
                    _ => false,
                };
                if missing {
                    self.err(
                        &format!("spec.scaling.metrics[{i}].resource.target.averageUtilization"),
                        format!(
                            "needs spec.resources.requests.{} (utilization is a share of the request)",
                            r.name
                        ),
                    );
                }
            }
        }
        self.security(&s.security);
        self.network(&s.network);
        self.egress(s);
        for (i, svc) in s.services.iter().enumerate() {
            let p = format!("spec.services[{i}]");
            self.non_empty(&format!("{p}.name"), &svc.name);
            self.port(&format!("{p}.port"), svc.port);
        }
        let mut secret_names: HashMap<&str, usize> = HashMap::new();
        for (i, sec) in s.secrets.iter().enumerate() {
            let p = format!("spec.secrets[{i}]");
            self.non_empty(&format!("{p}.name"), &sec.name);
            self.non_empty(&format!("{p}.from"), &sec.from);
            self.non_empty(&format!("{p}.secretName"), &sec.secret_name);
            self.non_empty(&format!("{p}.secretKey"), &sec.secret_key);
            if sec.name.is_empty() {
                continue;
            }
            if let Some(j) = secret_names.insert(&sec.name, i) {
                let prev = self.shown(&format!("spec.secrets[{j}]"));
                self.err(
                    &format!("{p}.name"),
                    format!("`{}` is already defined by {prev}", sec.name),
                );
            }
        }
        if s.logging.max_file == 0 {
            self.err("spec.logging.maxFile", "must be at least 1");
        }
        if s.logging.max_size.0 == 0 {
            self.err("spec.logging.maxSize", "must be greater than zero");
        }
    }

    /// How a path is shown (where the file wrote it).
    fn shown(&self, path: &str) -> String {
        match self.positions {
            Some(p) => p.source_path(path),
            None => path.to_string(),
        }
    }

    fn environment(&mut self, s: &AgentSpec) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, e) in s.environment.iter().enumerate() {
            let p = format!("spec.environment[{i}]");
            let name_path = format!("{p}.name");
            if e.name.is_empty() {
                self.err(&name_path, "is required");
            } else if e.name.contains('=')
                || e.name.contains('\0')
                || e.name.chars().any(char::is_whitespace)
            {
                self.err(
                    &name_path,
                    format!("{:?} is not a valid variable name", e.name),
                );
            } else if let Some(j) = seen.insert(&e.name, i) {
                let prev = self.shown(&format!("spec.environment[{j}]"));
                self.err(&name_path, format!("`{}` is already set by {prev}", e.name));
            }
            match &e.source {
                EnvSource::Value { value } => {
                    // never the value itself in a message: it may be a secret
                    if value.contains('\0') {
                        self.err(&format!("{p}.value"), "must not contain NUL");
                    } else if e.name.len() + 1 + value.len() >= MAX_EXEC_STRING {
                        self.err(
                            &format!("{p}.value"),
                            format!(
                                "`{}` is {} bytes long; Linux passes at most {} bytes per \
                                 environment variable (NAME=VALUE)",
                                e.name,
                                value.len(),
                                MAX_EXEC_STRING - 1
                            ),
                        );
                    }
                }
                EnvSource::Config { key } => {
                    let (k, kp) = match key {
                        Some(k) => (k.as_str(), format!("{p}.key")),
                        None => (e.name.as_str(), format!("{p}.from")),
                    };
                    if !k.is_empty() && !s.config.contains_key(k) {
                        self.err(&kp, format!("`{k}` is not in spec.config"));
                    }
                }
                EnvSource::Secret {
                    secret_name,
                    secret_key,
                } => {
                    self.non_empty(&format!("{p}.secretName"), secret_name);
                    // An empty secretKey takes the secret's only key.
                    let _ = secret_key;
                }
            }
        }
    }

    fn ports(&mut self, s: &AgentSpec) {
        let mode = &s.network.mode;
        let mut published: Vec<(usize, &PortSpec)> = Vec::new();
        for (i, port) in s.ports.iter().enumerate() {
            let p = format!("spec.ports[{i}]");
            self.port(&format!("{p}.container"), port.container);
            let Some(host) = port.host else { continue };
            let hp = format!("{p}.host");
            match mode {
                NetworkMode::None => {
                    self.err(&hp, "cannot publish a port with network mode none");
                    continue;
                }
                NetworkMode::Host => {
                    tracing::warn!(
                        "{}: network mode host publishes nothing; the container port is the host port",
                        self.shown(&hp)
                    );
                }
                _ => {}
            }
            if host == 0 {
                // An ephemeral host port (`-p 8080`), picked when the agent starts.
                continue;
            }
            if let Some((j, _)) = published.iter().find(|(_, q)| {
                q.host == Some(host)
                    && q.protocol == port.protocol
                    && ips_overlap(q.host_ip, port.host_ip)
            }) {
                let prev = self.shown(&format!("spec.ports[{j}]"));
                self.err(
                    &hp,
                    format!(
                        "host port {host}/{} is already published by {prev}",
                        port.protocol.as_str()
                    ),
                );
            } else {
                published.push((i, port));
            }
        }
    }

    fn volumes(&mut self, vols: &[VolumeSpec]) {
        let mut targets: HashMap<String, usize> = HashMap::new();
        for (i, v) in vols.iter().enumerate() {
            let p = format!("spec.volumes[{i}]");
            let tp = format!("{p}.target");
            let sp = format!("{p}.source");
            self.absolute(&tp, &v.target);
            if v.target.starts_with('/') {
                let clean = Path::new(&v.target)
                    .components()
                    .collect::<std::path::PathBuf>()
                    .to_string_lossy()
                    .into_owned();
                if clean == "/" {
                    self.err(&tp, "cannot mount over /");
                } else if let Some(fs) = kernel_filesystem(&v.target) {
                    self.err(
                        &tp,
                        format!(
                            "{:?} is inside {fs}, which the runtime mounts itself; mount \
                             somewhere else",
                            v.target
                        ),
                    );
                } else if let Some(j) = targets.insert(clean, i) {
                    let prev = self.shown(&format!("spec.volumes[{j}]"));
                    self.err(&tp, format!("{:?} is already mounted by {prev}", v.target));
                }
            }
            match v.kind {
                VolumeType::Bind | VolumeType::ConfigMap => {
                    let what = if v.kind == VolumeType::Bind {
                        "a bind mount"
                    } else {
                        "a configMap"
                    };
                    if v.source.is_empty() {
                        self.err(&sp, format!("is required for {what}"));
                    } else if !Path::new(&v.source).is_absolute() {
                        self.err(&sp, format!("{:?} must be an absolute path", v.source));
                    }
                }
                VolumeType::Volume => {
                    // An empty source is an anonymous volume (`-v /path`), named when created.
                    if !v.source.is_empty() && !is_object_name(&v.source) {
                        self.err(
                            &sp,
                            format!(
                                "{:?} is not a volume name (letters, digits, '_', '.', '-')",
                                v.source
                            ),
                        );
                    }
                }
                VolumeType::Tmpfs => {}
            }
        }
    }

    fn health_check(&mut self, h: &HealthCheck) {
        let p = "spec.healthCheck";
        match &h.probe {
            Probe::Command(argv) => {
                if argv.is_empty() || argv.iter().all(|a| a.trim().is_empty()) {
                    self.err(&format!("{p}.command"), "must not be empty");
                }
            }
            Probe::Http { path, port, .. } => {
                if !path.starts_with('/') {
                    self.err(
                        &format!("{p}.http.path"),
                        format!("{path:?} must start with /"),
                    );
                }
                self.port(&format!("{p}.http.port"), *port);
            }
            Probe::Tcp { port } => self.port(&format!("{p}.tcp.port"), *port),
            Probe::File { path } => self.absolute(&format!("{p}.file.path"), path),
        }
        if h.interval.is_zero() {
            self.err(&format!("{p}.interval"), "must be greater than zero");
        }
        if h.timeout.is_zero() {
            self.err(&format!("{p}.timeout"), "must be greater than zero");
        }
    }

    fn resources(&mut self, r: &Resources) {
        let p = "spec.resources";
        if let (Some(limit), Some(req)) = (r.limits.cpu, r.requests.cpu) {
            if req > limit {
                self.err(
                    &format!("{p}.requests.cpu"),
                    format!(
                        "request {} is above the limit {}",
                        cpu_text(req),
                        cpu_text(limit)
                    ),
                );
            }
        }
        if let (Some(limit), Some(req)) = (r.limits.memory, r.requests.memory) {
            if req > limit {
                self.err(
                    &format!("{p}.requests.memory"),
                    format!(
                        "request {} is above the limit {}",
                        bytes_text(req),
                        bytes_text(limit)
                    ),
                );
            }
        }
        if let Some(crate::model::MemorySwap::Limit(swap)) = r.limits.memory_swap {
            match r.limits.memory {
                None => self.err(
                    &format!("{p}.limits.memorySwap"),
                    "needs a memory limit too (--memory / limits.memory): it is memory plus swap",
                ),
                Some(mem) if swap < mem => self.err(
                    &format!("{p}.limits.memorySwap"),
                    format!(
                        "{} is below the memory limit {}: it is memory plus swap, so at least as large",
                        bytes_text(swap),
                        bytes_text(mem)
                    ),
                ),
                Some(_) => {}
            }
        }
        if let Some(c) = &r.limits.cpuset_cpus {
            if let Err(e) = values::parse_cpuset(c) {
                self.err(&format!("{p}.limits.cpusetCpus"), e);
            }
        }
        if let Some(n) = r.requests.cpu_shares {
            if let Err(e) = values::parse_cpu_shares(&n.to_string()) {
                self.err(&format!("{p}.requests.cpuShares"), e);
            }
        }
        if let Some(n) = r.limits.pids {
            if n <= 0 {
                self.err(
                    &format!("{p}.limits.pids"),
                    format!("{n} must be at least 1"),
                );
            }
        }
    }

    fn scaling(&mut self, s: &Scaling) {
        let p = "spec.scaling";
        if let (Some(min), Some(max)) = (s.min_replicas, s.max_replicas) {
            if min > max {
                self.err(
                    &format!("{p}.minReplicas"),
                    format!("{min} is more than maxReplicas {max}"),
                );
            }
        }
        if let Some(r) = s.replicas {
            if let Some(min) = s.min_replicas {
                if r < min {
                    self.err(
                        &format!("{p}.replicas"),
                        format!("{r} is less than minReplicas {min}"),
                    );
                }
            }
            if let Some(max) = s.max_replicas {
                if r > max {
                    self.err(
                        &format!("{p}.replicas"),
                        format!("{r} is more than maxReplicas {max}"),
                    );
                }
            }
        }
        for (i, m) in s.metrics.iter().enumerate() {
            let mp = format!("{p}.metrics[{i}]");
            self.non_empty(&format!("{mp}.type"), &m.kind);
            if m.kind == "Resource" && m.resource.is_none() {
                self.err(&format!("{mp}.resource"), "is required for type Resource");
            }
            let Some(r) = &m.resource else { continue };
            let rp = format!("{mp}.resource");
            if m.kind == "Resource" && !matches!(r.name.as_str(), "cpu" | "memory") {
                self.err(
                    &format!("{rp}.name"),
                    format!("{:?} is not a resource (cpu or memory)", r.name),
                );
            }
            let tp = format!("{rp}.target");
            let t = &r.target;
            match t.kind.as_str() {
                "Utilization" => match t.average_utilization {
                    None => self.err(
                        &format!("{tp}.averageUtilization"),
                        "is required for type Utilization",
                    ),
                    Some(0) => self.err(
                        &format!("{tp}.averageUtilization"),
                        "must be greater than zero",
                    ),
                    _ => {}
                },
                "AverageValue" => {
                    if t.average_value.is_none() {
                        self.err(
                            &format!("{tp}.averageValue"),
                            "is required for type AverageValue",
                        );
                    }
                }
                "Value" => {
                    if t.value.is_none() {
                        self.err(&format!("{tp}.value"), "is required for type Value");
                    }
                }
                other => self.err(
                    &format!("{tp}.type"),
                    format!("{other:?} is not a target type (Utilization, AverageValue or Value)"),
                ),
            }
        }
    }

    fn security(&mut self, s: &Security) {
        let p = "spec.security.capabilities";
        for (name, caps) in [("drop", &s.capabilities.drop), ("add", &s.capabilities.add)] {
            for (i, c) in caps.iter().enumerate() {
                if let Err(e) = values::parse_capability(c) {
                    self.err(&format!("{p}.{name}[{i}]"), e);
                }
            }
        }
        if let SeccompProfile::Path(path) = &s.seccomp_profile {
            if path.as_os_str().is_empty() {
                self.err("spec.security.seccompProfile", "must not be empty");
            }
        }
    }

    fn network(&mut self, n: &Network) {
        let p = "spec.network";
        if let NetworkMode::Named(name) = &n.mode {
            if !is_object_name(name) {
                self.err(
                    &format!("{p}.mode"),
                    format!("{name:?} is not a network (bridge, host, none or a network name)"),
                );
            }
        }
        if let Some(ip) = n.ip {
            if !matches!(&n.mode, NetworkMode::Named(m) if m != "aac") {
                self.err(
                    &format!("{p}.ip"),
                    format!(
                        "an address of your choice ({ip}) is only given on a user-defined network \
                         (aac network create NAME; --network NAME), as docker does"
                    ),
                );
            } else if !ip.is_ipv4() {
                self.err(&format!("{p}.ip"), format!("{ip}: aac's networks are IPv4"));
            }
        }
        for (i, s) in n.dns_search.iter().enumerate() {
            if s.is_empty() || s.chars().any(|c| c.is_whitespace()) {
                self.err(
                    &format!("{p}.dnsSearch[{i}]"),
                    format!("{s:?} is not a search domain"),
                );
            }
        }
        for (i, s) in n.dns_options.iter().enumerate() {
            if s.is_empty() || s.chars().any(|c| c.is_whitespace()) {
                self.err(
                    &format!("{p}.dnsOptions[{i}]"),
                    format!("{s:?} is not a resolver option (like ndots:2)"),
                );
            }
        }
        for (i, h) in n.security.allowed_hosts.iter().enumerate() {
            if let Err(e) = crate::egress::HostPattern::parse(h) {
                self.err(&format!("{p}.security.allowedHosts[{i}]"), e);
            }
        }
    }

    /// An egress policy needs the agent's own network namespace and an agent that cannot
    /// change its rules or go around them.
    fn egress(&mut self, s: &AgentSpec) {
        let sec = &s.network.security;
        let written = |path: &str| self.positions.and_then(|p| p.value_exact(path)).is_some();
        if sec.allow_external_connections
            && !sec.allowed_hosts.is_empty()
            && written("spec.network.security.allowExternalConnections")
        {
            let path = "spec.network.security.allowExternalConnections";
            let at = self
                .positions
                .and_then(|p| p.value(path))
                .map(|l| match &l.file {
                    Some(f) => format!("{}:{}:{}: ", f.display(), l.line, l.column),
                    None => format!("{}:{}: ", l.line, l.column),
                })
                .unwrap_or_default();
            tracing::warn!(
                "{at}{}: true, but allowedHosts is not empty: egress is limited to allowedHosts (write false to say so)",
                self.shown(path)
            );
        }
        if sec.egress_policy().is_none() {
            return;
        }
        if s.network.mode == NetworkMode::Host {
            self.err(
                "spec.network.mode",
                "an egress policy (spec.network.security) needs the agent's own network; network mode host shares the host's",
            );
        }
        if s.security.privileged {
            self.err(
                "spec.security.privileged",
                "a privileged agent has NET_ADMIN and NET_RAW, so it could change or go around its egress policy (spec.network.security); it cannot be privileged while egress is limited",
            );
        }
        for (i, c) in s.security.capabilities.add.iter().enumerate() {
            let cap = c.trim().to_ascii_uppercase();
            let cap = cap.strip_prefix("CAP_").unwrap_or(&cap);
            if matches!(cap, "ALL" | "NET_ADMIN" | "NET_RAW") {
                self.err(
                    &format!("spec.security.capabilities.add[{i}]"),
                    format!(
                        "{c} would let the agent change or go around its egress policy (spec.network.security); it cannot be added while egress is limited"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Agent {
        Agent::for_image("demo", "busybox:latest")
    }

    fn messages(a: &Agent) -> Vec<String> {
        validate(a, None).iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn minimal_agent_is_valid() {
        assert!(messages(&base()).is_empty());
    }

    #[test]
    fn names() {
        for good in ["a", "my-agent", "agent_1.2", &"a".repeat(63)] {
            assert!(check_agent_name(good).is_ok(), "{good}");
        }
        for bad in ["", "My", "-a", "a-", "a b", "ä", &"a".repeat(64)] {
            assert!(check_agent_name(bad).is_err(), "{bad}");
        }
        let mut a = base();
        a.metadata.name = "Bad Name".into();
        assert_eq!(messages(&a).len(), 1);
        assert!(messages(&a)[0].starts_with("metadata.name: \"Bad Name\" is not a valid name"));
    }

    #[test]
    fn header() {
        let mut a = base();
        a.api_version = "agent.dev/v2".into();
        a.kind = "Pod".into();
        assert_eq!(
            messages(&a),
            vec![
                "apiVersion: \"agent.dev/v2\" is not supported (use agent.dev/v1)",
                "kind: \"Pod\" is not supported (use Agent)"
            ]
        );
    }

    #[test]
    fn ports() {
        let mut a = base();
        let p = |container, host, protocol, ip: Option<&str>| PortSpec {
            container,
            host,
            protocol,
            host_ip: ip.map(|s| s.parse().unwrap()),
        };
        a.spec.ports = vec![
            p(80, Some(8080), Protocol::Tcp, None),
            p(81, Some(8080), Protocol::Udp, None),
            p(82, Some(8080), Protocol::Tcp, Some("127.0.0.1")),
            p(0, Some(9000), Protocol::Tcp, None),
            p(83, Some(0), Protocol::Tcp, None),
        ];
        assert_eq!(
            messages(&a),
            vec![
                "spec.ports[2].host: host port 8080/tcp is already published by spec.ports[0]",
                "spec.ports[3].container: 0 is not a port (1-65535)",
            ]
        );
        // Host port 0 is an ephemeral port (`-p 8080`), never a clash, but still published.
        a.spec.ports = vec![
            p(83, Some(0), Protocol::Tcp, None),
            p(84, Some(0), Protocol::Tcp, None),
        ];
        assert!(messages(&a).is_empty());
        a.spec.network.mode = NetworkMode::None;
        assert_eq!(
            messages(&a),
            vec![
                "spec.ports[0].host: cannot publish a port with network mode none",
                "spec.ports[1].host: cannot publish a port with network mode none",
            ]
        );
        a.spec.network.mode = NetworkMode::Bridge;
        // different IPs do not clash
        a.spec.ports = vec![
            p(80, Some(80), Protocol::Tcp, Some("127.0.0.1")),
            p(80, Some(80), Protocol::Tcp, Some("127.0.0.2")),
        ];
        assert!(messages(&a).is_empty());
        a.spec.network.mode = NetworkMode::None;
        assert_eq!(
            messages(&a)[0],
            "spec.ports[0].host: cannot publish a port with network mode none"
        );
        a.spec.network.mode = NetworkMode::Host;
        assert!(messages(&a).is_empty());
    }

    #[test]
    fn resources_limits_above_requests() {
        let mut a = base();
        a.spec.resources.limits.cpu = Some(MilliCpu(500));
        a.spec.resources.requests.cpu = Some(MilliCpu(2000));
        a.spec.resources.limits.memory = Some(Bytes(512 << 20));
        a.spec.resources.requests.memory = Some(Bytes(1 << 30));
        assert_eq!(
            messages(&a),
            vec![
                "spec.resources.requests.cpu: request 2 is above the limit 500m",
                "spec.resources.requests.memory: request 1Gi is above the limit 512Mi",
            ]
        );
        a.spec.resources.requests.cpu = Some(MilliCpu(500));
        a.spec.resources.requests.memory = Some(Bytes(512 << 20));
        assert!(messages(&a).is_empty());
    }

    #[test]
    fn volumes() {
        let mut a = base();
        let v = |source: &str, target: &str, kind| VolumeSpec {
            source: source.into(),
            target: target.into(),
            kind,
            read_only: false,
            options: vec![],
        };
        a.spec.volumes = vec![
            v("/data", "/app/data", VolumeType::Bind),
            v("cache", "/app/data/", VolumeType::Volume),
            v("rel", "/x", VolumeType::Bind),
            v("a/b", "/y", VolumeType::Volume),
            v("", "tmp", VolumeType::Tmpfs),
            v("", "/", VolumeType::Tmpfs),
        ];
        assert_eq!(
            messages(&a),
            vec![
                "spec.volumes[1].target: \"/app/data/\" is already mounted by spec.volumes[0]",
                "spec.volumes[2].source: \"rel\" must be an absolute path",
                "spec.volumes[3].source: \"a/b\" is not a volume name (letters, digits, '_', '.', '-')",
                "spec.volumes[4].target: \"tmp\" must be an absolute path",
                "spec.volumes[5].target: cannot mount over /",
            ]
        );
    }

    #[test]
    fn environment() {
        let mut a = base();
        let e = |name: &str, source| EnvVar {
            name: name.into(),
            source,
        };
        a.spec
            .config
            .insert("model".into(), serde_yaml::Value::from("gpt"));
        a.spec.environment = vec![
            e("A", EnvSource::Value { value: "1".into() }),
            e("A", EnvSource::Value { value: "2".into() }),
            e("B=C", EnvSource::Value { value: "".into() }),
            e("model", EnvSource::Config { key: None }),
            e(
                "M",
                EnvSource::Config {
                    key: Some("nope".into()),
                },
            ),
            e(
                "S",
                EnvSource::Secret {
                    secret_name: "".into(),
                    secret_key: "k".into(),
                },
            ),
        ];
        assert_eq!(
            messages(&a),
            vec![
                "spec.environment[1].name: `A` is already set by spec.environment[0]",
                "spec.environment[2].name: \"B=C\" is not a valid variable name",
                "spec.environment[4].key: `nope` is not in spec.config",
                "spec.environment[5].secretName: is required",
            ]
        );
    }

    #[test]
    fn scaling_and_autoscaling() {
        let mut a = base();
        a.spec.scaling = Some(Scaling {
            replicas: Some(20),
            min_replicas: Some(5),
            max_replicas: Some(3),
            metrics: vec![],
        });
        a.spec.autoscaling = Some(Autoscaling {
            target_cpu_utilization_percentage: Some(150),
            ..Autoscaling::default()
        });
        assert_eq!(
            messages(&a),
            vec![
                "spec.scaling.minReplicas: 5 is more than maxReplicas 3",
                "spec.scaling.replicas: 20 is more than maxReplicas 3",
                "spec.autoscaling.targetCPUUtilizationPercentage: 150 is not a percentage (1-100)",
            ]
        );
    }

    #[test]
    fn utilization_targets_need_requests() {
        let mut a = base();
        a.spec.scaling = Some(Scaling {
            replicas: Some(1),
            min_replicas: None,
            max_replicas: Some(3),
            metrics: vec![ScalingMetric {
                kind: "Resource".into(),
                resource: Some(MetricResource {
                    name: "memory".into(),
                    target: MetricTarget {
                        kind: "Utilization".into(),
                        average_utilization: Some(70),
                        average_value: None,
                        value: None,
                    },
                }),
            }],
        });
        a.spec.autoscaling = Some(Autoscaling {
            enabled: true,
            target_cpu_utilization_percentage: Some(50),
            ..Autoscaling::default()
        });
        assert_eq!(
            messages(&a),
            vec![
                "spec.autoscaling.targetCPUUtilizationPercentage: needs spec.resources.requests.cpu (utilization is a share of the request)",
                "spec.scaling.metrics[0].resource.target.averageUtilization: needs spec.resources.requests.memory (utilization is a share of the request)",
            ]
        );
        a.spec.resources.requests.cpu = Some(MilliCpu(100));
        a.spec.resources.requests.memory = Some(Bytes(64 << 20));
        assert!(messages(&a).is_empty(), "{:?}", messages(&a));
    }

    #[test]
    fn misc() {
        let mut a = base();
        a.spec.working_dir = Some("app".into());
        a.spec.hostname = Some("bad_host".into());
        a.spec.network.mode = NetworkMode::Named("my net".into());
        a.spec.services = vec![ServiceDep {
            name: "".into(),
            port: 0,
            protocol: Protocol::Tcp,
        }];
        a.spec.health_check = Some(HealthCheck::with_defaults(Probe::Http {
            path: "health".into(),
            port: 0,
            scheme: HttpScheme::Http,
        }));
        a.spec.logging.max_file = 0;
        let m = messages(&a);
        assert_eq!(
            m,
            vec![
                "spec.workingDir: \"app\" must be an absolute path",
                "spec.hostname: \"bad_host\" is not a valid hostname",
                "spec.healthCheck.http.path: \"health\" must start with /",
                "spec.healthCheck.http.port: 0 is not a port (1-65535)",
                "spec.network.mode: \"my net\" is not a network (bridge, host, none or a network name)",
                "spec.services[0].name: is required",
                "spec.services[0].port: 0 is not a port (1-65535)",
                "spec.logging.maxFile: must be at least 1",
            ]
        );
    }

    #[test]
    fn egress_policy_checks() {
        let mut a = base();
        a.spec.network.security.allowed_hosts = vec![
            "api.example.com".into(),
            "*.x.test:443".into(),
            "a b".into(),
            "*".into(),
        ];
        a.spec.security.capabilities.add =
            vec!["NET_ADMIN".into(), "cap_net_raw".into(), "CHOWN".into()];
        a.spec.network.mode = NetworkMode::Host;
        let m = messages(&a);
        assert_eq!(m.len(), 5, "{m:#?}");
        assert!(
            m[0].starts_with("spec.network.security.allowedHosts[2]: \"a b\" is not a host name"),
            "{m:#?}"
        );
        assert!(
            m[1].starts_with("spec.network.security.allowedHosts[3]: \"*\" would allow every host"),
            "{m:#?}"
        );
        assert!(
            m[2].starts_with("spec.network.mode: an egress policy"),
            "{m:#?}"
        );
        assert!(m[3].starts_with("spec.security.capabilities.add[0]: NET_ADMIN would let the agent change or go around"), "{m:#?}");
        assert!(
            m[4].starts_with("spec.security.capabilities.add[1]: cap_net_raw would"),
            "{m:#?}"
        );
        // Without a policy the same capabilities and mode are fine.
        a.spec.network.security.allowed_hosts.clear();
        assert!(messages(&a).is_empty(), "{:?}", messages(&a));
        // allowExternalConnections: false alone is a policy (nothing outside).
        a.spec.network.security.allow_external_connections = false;
        assert_eq!(messages(&a).len(), 3);
        a.spec.network.mode = NetworkMode::None;
        a.spec.security.capabilities.add.clear();
        assert!(messages(&a).is_empty());
    }
}
