//! Docker-style `run` flags (`-p`, `-e`, `-v`, `--cpus`, `--security-opt`, ...) and how they
//! override an [`Agent`] read from agent.yaml (or built for a bare image).
//!
//! Override semantics follow docker/compose:
//! - scalar flags (`--cpus`, `--memory`, `--user`, `--restart`, `--network`, ...) replace the
//!   agent.yaml value;
//! - `-p` is merged: a flag port for the same container port and protocol replaces the file's
//!   entries for it, other flag ports are appended;
//! - `--env-file` then `-e` are merged by name: a flag variable replaces the same-named one in
//!   place, new names are appended, later flags win;
//! - `-v` / `--tmpfs` are merged by target path: a flag mount replaces the file's mount at the
//!   same target, others are appended (two flag mounts at one target are an error, as in docker);
//! - `--cap-add` / `--cap-drop` are appended (a flag also removes the same capability from the
//!   file's opposite list); `--group-add` is appended; `-l` labels are merged by key;
//! - `--dns` replaces the file's DNS server list; `--security-opt` / `--log-opt` replace just
//!   the setting they name;
//! - `--allow-host` replaces the file's `allowedHosts` and limits egress to them,
//!   `--deny-egress` sets `allowExternalConnections: false`, `--allow-egress` lifts the file's
//!   egress policy.
//!
//! Relative paths in flags (`-v ./data:/data`, `--env-file .env`, `seccomp=./profile.json`) are
//! resolved against the `base_dir` given to [`RunFlags::apply`] (the current directory for
//! `aac run`).
//!
//! Port convention: [`PortSpec::host`] `None` means "exposed, not published";
//! `Some(0)` means "published on an ephemeral host port chosen at start", which is what docker
//! does for `-p 8080` and `-p 127.0.0.1::8080`.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use aac_runtime::agent::diagnostics::Diagnostic;
use aac_runtime::agent::model::{
    Agent, Bytes, EnvSource, EnvVar, HealthCheck, NetworkMode, OnUnhealthy, PortSpec, Probe,
    Protocol, SeccompProfile, VolumeSpec, VolumeType,
};
use aac_runtime::agent::values;

/// Docker-style flags that describe the container. Run-behaviour flags (`-d`, `-i`, `-t`,
/// `--rm`, `--name`, `--runtime`) belong to the CLI, not here. `-h` is not used for
/// `--hostname` because clap uses it for help.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct RunFlags {
    /// Publish a container port, e.g. 8080:80, 127.0.0.1:53:53/udp, [::1]:80:80, ranges
    /// 8000-8001:8000-8001, comma lists; `-p 80` picks an ephemeral host port
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[IP:][HOST:]CONTAINER[/PROTO]"
    )]
    pub publish: Vec<String>,

    /// Set an environment variable: KEY=VALUE, or KEY to copy it from the host (dropped when unset)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,

    /// Read environment variables from a file (KEY=VALUE lines, # comments, no quote handling)
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// Mount a volume: SRC:DST[:ro|rw|z|Z|nocopy|rshared...]; SRC is an absolute path, ./ or ../
    /// relative path, or a volume name; DST alone makes an anonymous volume
    #[arg(short = 'v', long = "volume", value_name = "[SRC:]DST[:OPTS]")]
    pub volume: Vec<String>,

    /// Mount a tmpfs: DST[:size=64m,mode=1777,...]
    #[arg(long = "tmpfs", value_name = "DST[:OPTS]")]
    pub tmpfs: Vec<String>,

    /// Mount, docker's long form: type=bind|volume|tmpfs,source=SRC,target=DST[,readonly]
    /// [,bind-propagation=rprivate][,tmpfs-size=BYTES][,tmpfs-mode=1777]
    #[arg(long = "mount", value_name = "type=TYPE,source=SRC,target=DST[,...]")]
    pub mount: Vec<String>,

    /// CPU limit in CPUs (1.5) or millicores (1500m)
    #[arg(long = "cpus", value_name = "CPUS", allow_negative_numbers = true)]
    pub cpus: Option<String>,

    /// Memory limit (512m, 2g, 512Mi, bytes)
    #[arg(
        short = 'm',
        long = "memory",
        value_name = "BYTES",
        allow_negative_numbers = true
    )]
    pub memory: Option<String>,

    /// Memory soft limit / request (256m, 1Gi)
    #[arg(long = "memory-reservation", value_name = "BYTES")]
    pub memory_reservation: Option<String>,

    /// CPUs the container may run on: 0-2,4
    #[arg(long = "cpuset-cpus", value_name = "CPUS")]
    pub cpuset_cpus: Option<String>,

    /// Relative CPU weight (2 to 262144; 1024 is one CPU's)
    #[arg(short = 'c', long = "cpu-shares", value_name = "N")]
    pub cpu_shares: Option<String>,

    /// Memory plus swap (needs --memory); -1 for unlimited swap
    #[arg(
        long = "memory-swap",
        value_name = "BYTES",
        allow_negative_numbers = true
    )]
    pub memory_swap: Option<String>,

    /// Maximum number of processes; -1 or 0 for unlimited
    #[arg(long = "pids-limit", value_name = "N", allow_negative_numbers = true)]
    pub pids_limit: Option<String>,

    /// Run as this numeric user: UID[:GID]
    #[arg(short = 'u', long = "user", value_name = "UID[:GID]")]
    pub user: Option<String>,

    /// Add a supplementary group (numeric GID)
    #[arg(long = "group-add", value_name = "GID")]
    pub group_add: Vec<String>,

    /// Mount the root filesystem read-only (--read-only=false undoes agent.yaml's setting)
    #[arg(
        long = "read-only",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub read_only: Option<bool>,

    /// Add a Linux capability (NET_ADMIN, cap_sys_time, ALL)
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,

    /// Drop a Linux capability (NET_RAW, ALL)
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,

    /// Security options: seccomp=unconfined|default|PROFILE.json, no-new-privileges[=true|false]
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,

    /// Network to join: bridge, host, none or a network name
    #[arg(long = "network", visible_alias = "net", value_name = "NETWORK")]
    pub network: Option<String>,

    /// DNS server address (replaces agent.yaml's list)
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,

    /// DNS search domain (replaces the host's; `.` for none)
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,

    /// DNS resolver option, e.g. ndots:2 (replaces the host's)
    #[arg(long = "dns-opt", visible_alias = "dns-option", value_name = "OPT")]
    pub dns_opt: Vec<String>,

    /// IPv4 address on a user-defined network
    #[arg(long = "ip", value_name = "IP")]
    pub ip: Option<String>,

    /// Give the container every capability and host device, no seccomp filter and no masked
    /// paths (containerd only)
    #[arg(long = "privileged")]
    pub privileged: bool,

    /// Allow egress to this host only (repeatable; replaces agent.yaml's allowedHosts):
    /// api.example.com, *.example.com (subdomains, not the apex), an address; optional :PORT
    #[arg(long = "allow-host", value_name = "NAME[:PORT]")]
    pub allow_host: Vec<String>,

    /// No egress beyond the agent's own network, except to --allow-host / allowedHosts
    #[arg(long = "deny-egress", conflicts_with = "allow_egress")]
    pub deny_egress: bool,

    /// Lift agent.yaml's egress policy (allowExternalConnections: true, no allowedHosts)
    #[arg(long = "allow-egress", conflicts_with = "allow_host")]
    pub allow_egress: bool,

    /// Restart policy: no, on-failure[:N], always, unless-stopped
    #[arg(long = "restart", value_name = "POLICY")]
    pub restart: Option<String>,

    /// Health check command, run with /bin/sh -c inside the container
    #[arg(long = "health-cmd", value_name = "CMD")]
    pub health_cmd: Option<String>,

    /// Time between health checks (30s, 1m)
    #[arg(long = "health-interval", value_name = "DURATION")]
    pub health_interval: Option<String>,

    /// Maximum time one health check may take (10s)
    #[arg(long = "health-timeout", value_name = "DURATION")]
    pub health_timeout: Option<String>,

    /// Consecutive failures before the container is unhealthy
    #[arg(long = "health-retries", value_name = "N")]
    pub health_retries: Option<String>,

    /// Grace period after start during which failures do not count (0s, 1m)
    #[arg(long = "health-start-period", value_name = "DURATION")]
    pub health_start_period: Option<String>,

    /// Disable any health check (agent.yaml's included)
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,

    /// What to do when the container turns unhealthy: none, kill, restart, stop
    #[arg(long = "health-on-failure", value_name = "ACTION")]
    pub health_on_failure: Option<String>,

    /// Working directory inside the container (absolute path)
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,

    /// Container hostname
    #[arg(long = "hostname", value_name = "NAME")]
    pub hostname: Option<String>,

    /// Program to run instead of the image's ENTRYPOINT (one path, not split on spaces)
    #[arg(long = "entrypoint", value_name = "PROGRAM")]
    pub entrypoint: Option<String>,

    /// Set a label: KEY=VALUE (KEY alone sets an empty value)
    #[arg(short = 'l', long = "label", value_name = "KEY[=VALUE]")]
    pub label: Vec<String>,

    /// Log options: max-size=10m, max-file=3 (rotation), labels=K[,K], env=V[,V] (shown by
    /// `logs --details`)
    #[arg(long = "log-opt", value_name = "OPT")]
    pub log_opt: Vec<String>,
}

impl RunFlags {
    /// Apply these flags on top of `agent`. Every problem is collected (path = the flag,
    /// e.g. `--publish`); when any is found `agent` is left untouched.
    ///
    /// `base_dir` resolves relative paths in flags; `host_env` looks up host variables for
    /// `-e NAME` and bare names in `--env-file` (pass `&|k| std::env::var(k).ok()`).
    pub fn apply(
        &self,
        agent: &mut Agent,
        base_dir: &Path,
        host_env: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<Diagnostic> {
        let mut d = Vec::new();
        let mut next = agent.clone();
        self.apply_ports(&mut next, &mut d);
        self.apply_env(&mut next, base_dir, host_env, &mut d);
        self.apply_mounts(&mut next, base_dir, &mut d);
        self.apply_resources(&mut next, &mut d);
        self.apply_security(&mut next, base_dir, &mut d);
        self.apply_network(&mut next, &mut d);
        self.apply_health(&mut next, &mut d);
        self.apply_process(&mut next, &mut d);
        self.apply_logging(&mut next, &mut d);
        if d.is_empty() {
            *agent = next;
        }
        d
    }

    fn apply_ports(&self, agent: &mut Agent, d: &mut Vec<Diagnostic>) {
        let mut flag_ports = Vec::new();
        for p in &self.publish {
            match parse_publish(p) {
                Ok(ports) => flag_ports.extend(ports),
                Err(e) => d.push(Diagnostic::new("--publish", e)),
            }
        }
        if flag_ports.is_empty() {
            return;
        }
        let ports = &mut agent.spec.ports;
        ports.retain(|old| {
            !flag_ports
                .iter()
                .any(|new| new.container == old.container && new.protocol == old.protocol)
        });
        ports.extend(flag_ports);
    }

    fn apply_env(
        &self,
        agent: &mut Agent,
        base_dir: &Path,
        host_env: &dyn Fn(&str) -> Option<String>,
        d: &mut Vec<Diagnostic>,
    ) {
        let mut vars = Vec::new();
        for f in &self.env_file {
            match parse_env_file(&resolve(base_dir, f), host_env) {
                Ok(v) => vars.extend(v),
                Err(errs) => d.extend(errs.into_iter().map(|e| Diagnostic::new("--env-file", e))),
            }
        }
        for e in &self.env {
            match parse_env(e, host_env) {
                Ok(Some(v)) => vars.push(v),
                Ok(None) => tracing::debug!(name = %e, "-e NAME is unset on the host; dropped"),
                Err(e) => d.push(Diagnostic::new("--env", e)),
            }
        }
        let env = &mut agent.spec.environment;
        for v in vars {
            match env.iter_mut().find(|old| old.name == v.name) {
                Some(old) => *old = v,
                None => env.push(v),
            }
        }
    }

    fn apply_mounts(&self, agent: &mut Agent, base_dir: &Path, d: &mut Vec<Diagnostic>) {
        let mut mounts: Vec<(&'static str, VolumeSpec)> = Vec::new();
        for v in &self.volume {
            match parse_volume(v, base_dir) {
                Ok(m) => mounts.push(("--volume", m)),
                Err(e) => d.push(Diagnostic::new("--volume", e)),
            }
        }
        for t in &self.tmpfs {
            match parse_tmpfs(t) {
                Ok(m) => mounts.push(("--tmpfs", m)),
                Err(e) => d.push(Diagnostic::new("--tmpfs", e)),
            }
        }
        for m in &self.mount {
            match parse_mount(m, base_dir) {
                Ok(m) => mounts.push(("--mount", m)),
                Err(e) => d.push(Diagnostic::new("--mount", e)),
            }
        }
        for (i, (flag, m)) in mounts.iter().enumerate() {
            if mounts[..i].iter().any(|(_, o)| o.target == m.target) {
                d.push(Diagnostic::new(
                    *flag,
                    format!("duplicate mount point {}", m.target),
                ));
            }
        }
        let vols = &mut agent.spec.volumes;
        for (_, m) in mounts {
            match vols.iter_mut().find(|old| old.target == m.target) {
                Some(old) => *old = m,
                None => vols.push(m),
            }
        }
    }

    fn apply_resources(&self, agent: &mut Agent, d: &mut Vec<Diagnostic>) {
        let res = &mut agent.spec.resources;
        if let Some(c) = &self.cpus {
            match values::parse_cpu(c) {
                Ok(c) => res.limits.cpu = Some(c),
                Err(e) => d.push(Diagnostic::new("--cpus", e)),
            }
        }
        if let Some(m) = &self.memory {
            match values::parse_memory(m) {
                Ok(m) => res.limits.memory = Some(m),
                Err(e) => d.push(Diagnostic::new("--memory", e)),
            }
        }
        if let Some(m) = &self.memory_reservation {
            match values::parse_memory(m) {
                Ok(m) => res.requests.memory = Some(m),
                Err(e) => d.push(Diagnostic::new("--memory-reservation", e)),
            }
        }
        if let Some(c) = &self.cpuset_cpus {
            match values::parse_cpuset(c) {
                Ok(c) => res.limits.cpuset_cpus = Some(c),
                Err(e) => d.push(Diagnostic::new("--cpuset-cpus", e)),
            }
        }
        if let Some(c) = &self.cpu_shares {
            match values::parse_cpu_shares(c) {
                Ok(c) => res.requests.cpu_shares = Some(c),
                Err(e) => d.push(Diagnostic::new("--cpu-shares", e)),
            }
        }
        if let Some(m) = &self.memory_swap {
            match values::parse_memory_swap(m) {
                Ok(m) => res.limits.memory_swap = Some(m),
                Err(e) => d.push(Diagnostic::new("--memory-swap", e)),
            }
        }
        if let Some(p) = &self.pids_limit {
            match parse_pids_limit(p) {
                Ok(p) => res.limits.pids = p,
                Err(e) => d.push(Diagnostic::new("--pids-limit", e)),
            }
        }
        if self.memory.is_some() || self.memory_reservation.is_some() {
            if let (Some(Bytes(limit)), Some(Bytes(req))) = (res.limits.memory, res.requests.memory)
            {
                if req > limit {
                    let flag = if self.memory_reservation.is_some() {
                        "--memory-reservation"
                    } else {
                        "--memory"
                    };
                    d.push(Diagnostic::new(
                        flag,
                        format!(
                            "the memory reservation ({req} bytes) is larger than the memory \
                             limit ({limit} bytes)"
                        ),
                    ));
                }
            }
        }
    }

    fn apply_security(&self, agent: &mut Agent, base_dir: &Path, d: &mut Vec<Diagnostic>) {
        let sec = &mut agent.spec.security;
        if let Some(u) = &self.user {
            match parse_user(u) {
                Ok((uid, gid)) => {
                    // `-u` replaces the whole user setting, group included.
                    sec.run_as_user = Some(uid);
                    sec.run_as_group = gid;
                }
                Err(e) => d.push(Diagnostic::new("--user", e)),
            }
        }
        for g in &self.group_add {
            match parse_group(g) {
                Ok(g) => {
                    if !sec.supplemental_groups.contains(&g) {
                        sec.supplemental_groups.push(g);
                    }
                }
                Err(e) => d.push(Diagnostic::new("--group-add", e)),
            }
        }
        if let Some(ro) = self.read_only {
            sec.read_only_root_filesystem = ro;
        }
        if self.privileged {
            sec.privileged = true;
        }

        let mut add = Vec::new();
        let mut drop = Vec::new();
        for (flag, list, out) in [
            ("--cap-add", &self.cap_add, &mut add),
            ("--cap-drop", &self.cap_drop, &mut drop),
        ] {
            for c in list {
                match values::parse_capability(c) {
                    Ok(c) => {
                        if !out.contains(&c) {
                            out.push(c)
                        }
                    }
                    Err(e) => d.push(Diagnostic::new(flag, e)),
                }
            }
        }
        let caps = &mut sec.capabilities;
        caps.drop.retain(|c| !add.contains(c) || drop.contains(c));
        caps.add.retain(|c| !drop.contains(c) || add.contains(c));
        for c in add {
            if !caps.add.contains(&c) {
                caps.add.push(c);
            }
        }
        for c in drop {
            if !caps.drop.contains(&c) {
                caps.drop.push(c);
            }
        }

        for o in &self.security_opt {
            match parse_security_opt(o, base_dir) {
                Ok(SecurityOpt::Seccomp(p)) => sec.seccomp_profile = p,
                Ok(SecurityOpt::NoNewPrivileges(b)) => sec.no_new_privileges = b,
                Err(e) => d.push(Diagnostic::new("--security-opt", e)),
            }
        }
    }

    fn apply_network(&self, agent: &mut Agent, d: &mut Vec<Diagnostic>) {
        let net = &mut agent.spec.network;
        if let Some(n) = &self.network {
            match parse_network(n) {
                Ok(m) => net.mode = m,
                Err(e) => d.push(Diagnostic::new("--network", e)),
            }
        }
        if !self.dns.is_empty() {
            let mut servers = Vec::new();
            for s in &self.dns {
                match parse_dns(s) {
                    Ok(ip) => servers.push(ip),
                    Err(e) => d.push(Diagnostic::new("--dns", e)),
                }
            }
            net.dns = servers;
        }
        if !self.dns_search.is_empty() {
            net.dns_search = self
                .dns_search
                .iter()
                .map(|s| s.trim().to_string())
                .collect();
        }
        if !self.dns_opt.is_empty() {
            net.dns_options = self.dns_opt.iter().map(|s| s.trim().to_string()).collect();
        }
        if let Some(ip) = &self.ip {
            match ip.trim().parse::<IpAddr>() {
                Ok(ip) => net.ip = Some(ip),
                Err(_) => d.push(Diagnostic::new(
                    "--ip",
                    format!("{ip:?} is not an IPv4 address"),
                )),
            }
        }
        // Egress policy: --allow-host replaces the file's list and limits egress to it.
        if self.allow_egress {
            net.security.allow_external_connections = true;
            net.security.allowed_hosts.clear();
        }
        if self.deny_egress {
            net.security.allow_external_connections = false;
        }
        if !self.allow_host.is_empty() {
            let mut hosts = Vec::new();
            for h in &self.allow_host {
                match aac_runtime::agent::HostPattern::parse(h) {
                    Ok(p) => hosts.push(p.to_string()),
                    Err(e) => d.push(Diagnostic::new("--allow-host", e)),
                }
            }
            net.security.allow_external_connections = false;
            net.security.allowed_hosts = hosts;
        }
    }

    fn apply_health(&self, agent: &mut Agent, d: &mut Vec<Diagnostic>) {
        let given: Vec<&str> = [
            ("--health-cmd", self.health_cmd.is_some()),
            ("--health-interval", self.health_interval.is_some()),
            ("--health-timeout", self.health_timeout.is_some()),
            ("--health-retries", self.health_retries.is_some()),
            ("--health-start-period", self.health_start_period.is_some()),
            ("--health-on-failure", self.health_on_failure.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, on)| on.then_some(f))
        .collect();

        if self.no_healthcheck {
            if given.is_empty() {
                agent.spec.health_check = None;
            } else {
                d.push(Diagnostic::new(
                    "--no-healthcheck",
                    format!("conflicts with {}", given.join(", ")),
                ));
            }
            return;
        }
        if given.is_empty() {
            return;
        }

        let probe = match &self.health_cmd {
            Some(cmd) => match parse_health_cmd(cmd) {
                Ok(p) => Some(p),
                Err(e) => {
                    d.push(Diagnostic::new("--health-cmd", e));
                    None
                }
            },
            None => None,
        };
        let mut hc = match (agent.spec.health_check.take(), probe) {
            (Some(mut hc), Some(p)) => {
                hc.probe = p;
                Some(hc)
            }
            (Some(hc), None) => Some(hc),
            (None, Some(p)) => Some(HealthCheck::with_defaults(p)),
            (None, None) => {
                if self.health_cmd.is_none() {
                    d.push(Diagnostic::new(
                        given[0],
                        "there is no health check to adjust: give --health-cmd or define \
                         spec.healthCheck in agent.yaml",
                    ));
                }
                None
            }
        };
        // Parse the timing flags even without a health check, so every error is reported.
        let dur = |flag: &'static str, v: &Option<String>, d: &mut Vec<Diagnostic>| {
            v.as_deref()
                .and_then(|s| match parse_health_duration(s, flag) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        d.push(Diagnostic::new(flag, e));
                        None
                    }
                })
        };
        let interval = dur("--health-interval", &self.health_interval, d);
        let timeout = dur("--health-timeout", &self.health_timeout, d);
        let start = dur("--health-start-period", &self.health_start_period, d);
        let retries = self
            .health_retries
            .as_deref()
            .and_then(|s| match parse_health_retries(s) {
                Ok(r) => Some(r),
                Err(e) => {
                    d.push(Diagnostic::new("--health-retries", e));
                    None
                }
            });
        let on_failure =
            self.health_on_failure
                .as_deref()
                .and_then(|s| match parse_health_on_failure(s) {
                    Ok(o) => Some(o),
                    Err(e) => {
                        d.push(Diagnostic::new("--health-on-failure", e));
                        None
                    }
                });
        if let Some(hc) = hc.as_mut() {
            if let Some(v) = interval {
                hc.interval = v;
            }
            if let Some(v) = timeout {
                hc.timeout = v;
            }
            if let Some(v) = start {
                hc.start_period = v;
            }
            if let Some(v) = retries {
                hc.retries = v;
            }
            if let Some(v) = on_failure {
                hc.on_unhealthy = v;
            }
        }
        agent.spec.health_check = hc;
    }

    fn apply_process(&self, agent: &mut Agent, d: &mut Vec<Diagnostic>) {
        let spec = &mut agent.spec;
        if let Some(w) = &self.workdir {
            match parse_workdir(w) {
                Ok(w) => spec.working_dir = Some(w),
                Err(e) => d.push(Diagnostic::new("--workdir", e)),
            }
        }
        if let Some(h) = &self.hostname {
            match parse_hostname(h) {
                Ok(h) => spec.hostname = Some(h),
                Err(e) => d.push(Diagnostic::new("--hostname", e)),
            }
        }
        if let Some(e) = &self.entrypoint {
            if e.trim().is_empty() {
                d.push(Diagnostic::new(
                    "--entrypoint",
                    "an empty entrypoint (clearing the image's) is not supported; name the \
                     program to run",
                ));
            } else {
                spec.command = vec![e.clone()];
            }
        }
        if let Some(r) = &self.restart {
            match values::parse_restart_policy(r) {
                Ok(r) => spec.restart_policy = r,
                Err(e) => d.push(Diagnostic::new("--restart", e)),
            }
        }
        for l in &self.label {
            match parse_label(l) {
                Ok((k, v)) => {
                    agent.metadata.labels.insert(k, v);
                }
                Err(e) => d.push(Diagnostic::new("--label", e)),
            }
        }
    }

    fn apply_logging(&self, agent: &mut Agent, d: &mut Vec<Diagnostic>) {
        for o in &self.log_opt {
            match parse_log_opt(o) {
                Ok(LogOpt::MaxSize(b)) => agent.spec.logging.max_size = b,
                Ok(LogOpt::MaxFile(n)) => agent.spec.logging.max_file = n,
                Ok(LogOpt::Labels(l)) => agent.spec.logging.labels = l,
                Ok(LogOpt::Env(e)) => agent.spec.logging.env = e,
                Err(e) => d.push(Diagnostic::new("--log-opt", e)),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ports

/// `-p` in every docker form: `8080:80`, `8080:80/udp`, `127.0.0.1:80:8080`, `127.0.0.1::8080`,
/// `[::1]:80:8080`, `8080` (ephemeral host port), `8000-8001:8000-8001` (expanded), and comma
/// lists `8080:80,9090:90`. Ephemeral host ports are `host: Some(0)`.
pub fn parse_publish(s: &str) -> Result<Vec<PortSpec>, String> {
    if s.trim().is_empty() {
        return Err(
            "empty port mapping; use [IP:][HOST:]CONTAINER[/tcp|udp], e.g. 8080:80".to_string(),
        );
    }
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        out.extend(parse_one_publish(item).map_err(|e| format!("{item:?}: {e}"))?);
    }
    Ok(out)
}

fn parse_one_publish(item: &str) -> Result<Vec<PortSpec>, String> {
    if item.is_empty() {
        return Err("empty port mapping".to_string());
    }
    let (body, protocol) = match item.rsplit_once('/') {
        Some((b, p)) => (b, parse_protocol(p)?),
        None => (item, Protocol::Tcp),
    };
    // Like docker: the container port is the last `:` field, the host port the one before,
    // and anything before that is the host IP (which may itself contain `:` for IPv6).
    let parts: Vec<&str> = body.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => (None, None, *c),
        [h, c] => (None, Some(*h), *c),
        [ip @ .., h, c] => (Some(ip.join(":")), Some(*h), *c),
        [] => return Err("empty port mapping".to_string()),
    };
    let host_ip = match ip.as_deref() {
        None | Some("") => None,
        Some(ip) => {
            let bare = ip
                .strip_prefix('[')
                .and_then(|i| i.strip_suffix(']'))
                .unwrap_or(ip);
            Some(bare.parse::<IpAddr>().map_err(|_| {
                format!("{ip:?} is not an IP address (write IPv6 in brackets: [::1]:80:8080)")
            })?)
        }
    };
    let (c_lo, c_hi) = parse_port_range(container, false)?;
    let count = u32::from(c_hi - c_lo) + 1;
    let host_ports: Vec<u16> = match host {
        None | Some("") => vec![0; count as usize],
        Some(h) => {
            let (h_lo, h_hi) = parse_port_range(h, true)?;
            let h_count = u32::from(h_hi - h_lo) + 1;
            if h_lo == 0 {
                vec![0; count as usize]
            } else if h_count == count {
                (h_lo..=h_hi).collect()
            } else {
                return Err(format!(
                    "the host port range {h} and the container port range {container} differ \
                     in size"
                ));
            }
        }
    };
    Ok((c_lo..=c_hi)
        .zip(host_ports)
        .map(|(c, h)| PortSpec {
            container: c,
            host: Some(h),
            protocol,
            host_ip,
        })
        .collect())
}

fn parse_protocol(p: &str) -> Result<Protocol, String> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "" => Err("missing protocol after \"/\" (use tcp or udp)".to_string()),
        _ => Err(format!("unknown protocol {p:?} (use tcp or udp)")),
    }
}

/// `80` or `8000-8010`. `0` is accepted only when `allow_zero` (host side: ephemeral).
fn parse_port_range(s: &str, allow_zero: bool) -> Result<(u16, u16), String> {
    match s.split_once('-') {
        Some((lo, hi)) => {
            let lo = parse_port(lo, false)?;
            let hi = parse_port(hi, false)?;
            if lo > hi {
                return Err(format!(
                    "{s:?} is not a port range (the start is above the end)"
                ));
            }
            Ok((lo, hi))
        }
        None => {
            let p = parse_port(s, allow_zero)?;
            Ok((p, p))
        }
    }
}

fn parse_port(s: &str, allow_zero: bool) -> Result<u16, String> {
    if s.is_empty() {
        return Err("missing port number".to_string());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a port number"));
    }
    match s.parse::<u32>() {
        Ok(0) if allow_zero => Ok(0),
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(format!("{s} is not a port (1-65535)")),
    }
}

// ---------------------------------------------------------------------------------------------
// Environment

/// `-e KEY=VALUE`, `-e KEY=` (empty value), `-e KEY` (copied from the host; `None` when the
/// host does not have it, which docker also drops).
pub fn parse_env(
    s: &str,
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<EnvVar>, String> {
    let (name, value) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (s, None),
    };
    // the value may be a secret: errors name the variable only
    check_env_name(name)?;
    let value = match value {
        Some(v) => v,
        None => match host_env(name) {
            Some(v) => v,
            None => return Ok(None),
        },
    };
    Ok(Some(EnvVar {
        name: name.to_string(),
        source: EnvSource::Value { value },
    }))
}

fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the variable name is empty".to_string());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the variable name {name:?} contains whitespace or control characters"
        ));
    }
    Ok(())
}

/// The largest `--env-file` read: 4 MiB.
const ENV_FILE_LIMIT: u64 = 4 << 20;

/// A docker `--env-file`: one `KEY=VALUE` per line (the value taken verbatim, quotes
/// included), `KEY` alone copies the host variable (dropped when unset), blank lines and lines
/// starting with `#` are skipped. Errors are `file:line: message`, all of them.
pub fn parse_env_file(
    path: &Path,
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<EnvVar>, Vec<String>> {
    // a regular file of bounded size: a FIFO or /dev/zero must not hang or fill memory
    let text = aac_runtime::agent::source::read_text(path, ENV_FILE_LIMIT)
        .map_err(|e| vec![format!("env file {e}")])?;
    let mut vars = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = if i == 0 {
            raw.strip_prefix('\u{feff}').unwrap_or(raw)
        } else {
            raw
        };
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = match line.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (line.trim_end(), None),
        };
        if let Err(e) = check_env_name(name) {
            errors.push(format!("{}:{}: {e}", path.display(), i + 1));
            continue;
        }
        let value = match value {
            Some(v) => v.to_string(),
            None => match host_env(name) {
                Some(v) => v,
                None => continue,
            },
        };
        vars.push(EnvVar {
            name: name.to_string(),
            source: EnvSource::Value { value },
        });
    }
    if errors.is_empty() {
        Ok(vars)
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------------------------
// Mounts

const PROPAGATION: &[&str] = &[
    "shared", "rshared", "slave", "rslave", "private", "rprivate",
];
const VOLUME_OPTIONS: &[&str] = &[
    "ro",
    "rw",
    "z",
    "Z",
    "nocopy",
    "consistent",
    "cached",
    "delegated",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
];

/// `-v`: `SRC:DST[:OPTS]` or `DST` (anonymous volume, empty source).
///
/// SRC is an absolute host path, a `./` or `../` path resolved against `base_dir` (both
/// [`VolumeType::Bind`]), or a volume name (`model-cache`, [`VolumeType::Volume`]). OPTS is a
/// comma list of `ro`/`rw`, mount propagation (`rshared`, ... kept in `options`), and `z`, `Z`,
/// `nocopy`, `consistent`, `cached`, `delegated`, which are accepted and ignored.
pub fn parse_volume(s: &str, base_dir: &Path) -> Result<VolumeSpec, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [dst] => (None, *dst, None),
        [src, dst] => {
            if src.starts_with('/') && VOLUME_OPTIONS.contains(dst) {
                return Err(format!(
                    "{s:?}: an anonymous volume takes no options; use NAME:{src}:{dst}"
                ));
            }
            (Some(*src), *dst, None)
        }
        [src, dst, opts] => (Some(*src), *dst, Some(*opts)),
        _ => {
            return Err(format!(
                "{s:?} is not a volume specification (use SRC:DST[:OPTS] or DST)"
            ))
        }
    };
    let target = check_target(dst).map_err(|e| format!("{s:?}: {e}"))?;

    let (kind, source) = match src {
        None => (VolumeType::Volume, String::new()),
        Some("") => return Err(format!("{s:?}: the source before \":\" is empty")),
        Some(p) if p.starts_with('/') => (VolumeType::Bind, path_string(&clean(Path::new(p)))?),
        Some(p) if p == "." || p == ".." || p.starts_with("./") || p.starts_with("../") => {
            (VolumeType::Bind, path_string(&clean(&base_dir.join(p)))?)
        }
        Some(p) if p.starts_with('~') => {
            return Err(format!(
                "{s:?}: \"~\" is not expanded here; use an absolute or ./ path"
            ))
        }
        Some(p) if p.contains('/') => {
            return Err(format!(
                "{s:?}: the relative host path {p:?} must start with ./ or ../ (or be absolute)"
            ))
        }
        Some(p) => {
            check_volume_name(p).map_err(|e| format!("{s:?}: {e}"))?;
            (VolumeType::Volume, p.to_string())
        }
    };

    let mut read_only = false;
    let mut rw = false;
    let mut options = Vec::new();
    if let Some(opts) = opts {
        for o in opts.split(',') {
            match o {
                "ro" => read_only = true,
                "rw" => rw = true,
                "z" | "Z" | "nocopy" | "consistent" | "cached" | "delegated" => {}
                p if PROPAGATION.contains(&p) => {
                    if kind != VolumeType::Bind {
                        return Err(format!(
                            "{s:?}: mount propagation {p:?} applies to bind mounts only"
                        ));
                    }
                    options.push(p.to_string());
                }
                "" => return Err(format!("{s:?}: empty mount option")),
                other => {
                    let hint = values::did_you_mean(other, VOLUME_OPTIONS.iter().copied())
                        .map(|c| format!("; did you mean {c}?"))
                        .unwrap_or_default();
                    return Err(format!(
                        "{s:?}: unknown mount option {other:?} (ro, rw, z, Z, nocopy, \
                         rshared, rslave, rprivate, ...){hint}"
                    ));
                }
            }
        }
    }
    if read_only && rw {
        return Err(format!("{s:?}: \"ro\" and \"rw\" contradict each other"));
    }
    Ok(VolumeSpec {
        source,
        target,
        kind,
        read_only,
        options,
    })
}

const TMPFS_FLAGS: &[&str] = &[
    "ro",
    "rw",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "sync",
    "async",
    "dirsync",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
];
const TMPFS_DATA: &[&str] = &[
    "size",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "mpol",
    "huge",
];

/// `--tmpfs /path[:opts]`: a [`VolumeType::Tmpfs`] mount with an empty source. `ro`/`rw` set
/// `read_only`; other options (`size=64m`, `mode=1777`, `noexec`, ...) are kept in `options`.
/// `--mount type=bind,source=/src,target=/dst,readonly`: docker's long form, checked by the
/// same rules as `-v` and `--tmpfs` (it is turned into their short forms).
pub fn parse_mount(s: &str, base_dir: &Path) -> Result<VolumeSpec, String> {
    let mut kind = "volume".to_string();
    let (mut source, mut target) = (None::<String>, None::<String>);
    let mut read_only = false;
    let mut propagation = None::<String>;
    let mut tmpfs_opts = Vec::new();
    for field in s.split(',') {
        let field = field.trim();
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (field, None),
        };
        let flag = |v: Option<&str>| -> Result<bool, String> {
            match v {
                None | Some("true") | Some("1") => Ok(true),
                Some("false") | Some("0") => Ok(false),
                Some(o) => Err(format!("{s:?}: {k}={o} is not true or false")),
            }
        };
        let value = |v: Option<&str>| -> Result<String, String> {
            match v {
                Some(v) if !v.is_empty() => {
                    if v.contains(':') {
                        return Err(format!("{s:?}: {k}={v}: ':' is not allowed here"));
                    }
                    Ok(v.to_string())
                }
                _ => Err(format!("{s:?}: {k} needs a value")),
            }
        };
        match k {
            "type" => kind = value(v)?,
            "source" | "src" => source = Some(value(v)?),
            "target" | "destination" | "dst" => target = Some(value(v)?),
            "readonly" | "ro" => read_only = flag(v)?,
            "bind-propagation" => propagation = Some(value(v)?),
            "tmpfs-size" => tmpfs_opts.push(format!("size={}", value(v)?)),
            "tmpfs-mode" => tmpfs_opts.push(format!("mode={}", value(v)?)),
            "consistency" | "volume-nocopy" | "bind-nonrecursive" => {}
            "" => return Err(format!("{s:?}: empty field")),
            other => {
                return Err(format!(
                    "{s:?}: {other:?} is not supported (type, source, target, readonly,                      bind-propagation, tmpfs-size, tmpfs-mode)"
                ))
            }
        }
    }
    let Some(target) = target else {
        return Err(format!("{s:?}: target= is required"));
    };
    match kind.as_str() {
        "bind" | "volume" => {
            if kind == "bind" && source.is_none() {
                return Err(format!("{s:?}: a bind mount needs source="));
            }
            if kind == "volume" && propagation.is_some() {
                return Err(format!(
                    "{s:?}: bind-propagation applies to bind mounts only"
                ));
            }
            if !tmpfs_opts.is_empty() {
                return Err(format!(
                    "{s:?}: tmpfs-size/tmpfs-mode apply to type=tmpfs only"
                ));
            }
            let mut opts = Vec::new();
            if read_only {
                opts.push("ro".to_string());
            }
            opts.extend(propagation);
            let short = match (&source, opts.is_empty()) {
                (None, true) => target.clone(),
                (None, false) => {
                    return Err(format!(
                        "{s:?}: an anonymous volume takes no options here; give it a source= name"
                    ))
                }
                (Some(src), true) => format!("{src}:{target}"),
                (Some(src), false) => format!("{src}:{target}:{}", opts.join(",")),
            };
            let v = parse_volume(&short, base_dir)?;
            let want = if kind == "bind" {
                VolumeType::Bind
            } else {
                VolumeType::Volume
            };
            if v.kind != want {
                return Err(format!(
                    "{s:?}: source {:?} is {} for type={kind}",
                    source.unwrap_or_default(),
                    if want == VolumeType::Bind {
                        "not a host path (absolute or ./relative)"
                    } else {
                        "a host path, not a volume name"
                    }
                ));
            }
            Ok(v)
        }
        "tmpfs" => {
            if source.is_some() {
                return Err(format!("{s:?}: a tmpfs mount takes no source"));
            }
            if read_only {
                tmpfs_opts.push("ro".into());
            }
            let short = if tmpfs_opts.is_empty() {
                target
            } else {
                format!("{target}:{}", tmpfs_opts.join(","))
            };
            parse_tmpfs(&short)
        }
        other => Err(format!(
            "{s:?}: type={other} is not supported (bind, volume, tmpfs)"
        )),
    }
}

pub fn parse_tmpfs(s: &str) -> Result<VolumeSpec, String> {
    let (dst, opts) = match s.split_once(':') {
        Some((d, o)) => (d, Some(o)),
        None => (s, None),
    };
    let target = check_target(dst).map_err(|e| format!("{s:?}: {e}"))?;
    let mut read_only = false;
    let mut options = Vec::new();
    for o in opts.into_iter().flat_map(|o| o.split(',')) {
        let o = o.trim();
        match o.split_once('=') {
            _ if o == "ro" => read_only = true,
            _ if o == "rw" => read_only = false,
            None if TMPFS_FLAGS.contains(&o) => options.push(o.to_string()),
            Some((k, v)) if TMPFS_DATA.contains(&k) => {
                if v.is_empty() {
                    return Err(format!("{s:?}: tmpfs option {k:?} needs a value"));
                }
                if k == "mode" && !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                    return Err(format!(
                        "{s:?}: tmpfs mode {v:?} is not an octal mode (e.g. 1777)"
                    ));
                }
                options.push(o.to_string());
            }
            _ if o.is_empty() => return Err(format!("{s:?}: empty tmpfs option")),
            _ => {
                let key = o.split('=').next().unwrap_or(o);
                let hint =
                    values::did_you_mean(key, TMPFS_DATA.iter().chain(TMPFS_FLAGS.iter()).copied())
                        .map(|c| format!("; did you mean {c}?"))
                        .unwrap_or_default();
                return Err(format!(
                    "{s:?}: unknown tmpfs option {o:?} (size=, mode=, uid=, gid=, noexec, \
                     nosuid, nodev, ...){hint}"
                ));
            }
        }
    }
    Ok(VolumeSpec {
        source: String::new(),
        target,
        kind: VolumeType::Tmpfs,
        read_only,
        options,
    })
}

fn check_target(dst: &str) -> Result<String, String> {
    if dst.is_empty() {
        return Err("the container path is empty".to_string());
    }
    if !dst.starts_with('/') {
        return Err(format!(
            "the container path {dst:?} must be absolute (start with /)"
        ));
    }
    let t = path_string(&clean(Path::new(dst)))?;
    if t == "/" {
        return Err("the container path cannot be \"/\"".to_string());
    }
    Ok(t)
}

/// Docker's volume name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn check_volume_name(n: &str) -> Result<(), String> {
    let mut chars = n.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && n.len() >= 2 {
        Ok(())
    } else {
        Err(format!(
            "{n:?} is not a volume name (2+ letters, digits, _ . -, starting with a letter or \
             digit) nor a path (absolute, ./ or ../)"
        ))
    }
}

/// Lexical cleanup: drops `.`, resolves `..` against the preceding component, no trailing `/`.
fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
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

fn path_string(p: &Path) -> Result<String, String> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{} is not valid UTF-8", p.display()))
}

fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

// ---------------------------------------------------------------------------------------------
// Users and groups

/// `-u UID[:GID]`, numeric only. Names are refused with a hint.
pub fn parse_user(s: &str) -> Result<(u32, Option<u32>), String> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = parse_id(u, "user").map_err(|e| format!("{s:?}: {e}"))?;
    let gid = g
        .map(|g| parse_id(g, "group"))
        .transpose()
        .map_err(|e| format!("{s:?}: {e}"))?;
    Ok((uid, gid))
}

/// `--group-add GID`, numeric only.
pub fn parse_group(s: &str) -> Result<u32, String> {
    parse_id(s, "group")
}

fn parse_id(s: &str, what: &str) -> Result<u32, String> {
    if s.is_empty() {
        return Err(format!("the {what} id is empty"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u32>()
            .map_err(|_| format!("{s} is not a {what} id (0-4294967295)"))
    } else {
        Err(format!(
            "{what} names such as {s:?} are not resolved here; give a numeric id (e.g. 1000)"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Security, network, logging, process

/// One `--security-opt` setting aac supports.
#[derive(Debug, Clone, PartialEq)]
pub enum SecurityOpt {
    Seccomp(SeccompProfile),
    NoNewPrivileges(bool),
}

const SECURITY_OPTS: &[&str] = &["seccomp", "no-new-privileges"];

/// `seccomp=unconfined|default|PROFILE.json` (relative paths against `base_dir`),
/// `no-new-privileges`, `no-new-privileges=true|false`. Docker's legacy `:` separator is
/// accepted too (`seccomp:unconfined`).
pub fn parse_security_opt(s: &str, base_dir: &Path) -> Result<SecurityOpt, String> {
    let (key, value) = match s.split_once('=').or_else(|| s.split_once(':')) {
        Some((k, v)) => (k, Some(v)),
        None => (s, None),
    };
    match (key, value) {
        ("seccomp", Some("unconfined")) => Ok(SecurityOpt::Seccomp(SeccompProfile::Unconfined)),
        ("seccomp", Some("default")) => Ok(SecurityOpt::Seccomp(SeccompProfile::Default)),
        ("seccomp", Some("")) | ("seccomp", None) => Err(format!(
            "{s:?}: seccomp needs a value: unconfined, default or a profile path"
        )),
        ("seccomp", Some(p)) => Ok(SecurityOpt::Seccomp(SeccompProfile::Path(clean(&resolve(
            base_dir,
            Path::new(p),
        ))))),
        ("no-new-privileges", None) => Ok(SecurityOpt::NoNewPrivileges(true)),
        ("no-new-privileges", Some(v)) => match v {
            "true" => Ok(SecurityOpt::NoNewPrivileges(true)),
            "false" => Ok(SecurityOpt::NoNewPrivileges(false)),
            _ => Err(format!(
                "{s:?}: no-new-privileges takes true or false, not {v:?}"
            )),
        },
        ("apparmor" | "label" | "systempaths" | "writable-cgroups" | "mask" | "unmask", _) => {
            Err(format!(
                "{s:?}: {key} is not supported by aac (supported: seccomp=..., \
                 no-new-privileges[=true|false])"
            ))
        }
        _ => {
            let hint = values::did_you_mean(key, SECURITY_OPTS.iter().copied())
                .map(|c| format!("; did you mean {c}?"))
                .unwrap_or_default();
            Err(format!(
                "{s:?} is not a security option (seccomp=unconfined|default|PATH, \
                 no-new-privileges[=true|false]){hint}"
            ))
        }
    }
}

/// One `--log-opt` setting aac supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOpt {
    MaxSize(Bytes),
    MaxFile(u32),
    /// `labels=a,b`: labels `logs --details` shows.
    Labels(Vec<String>),
    /// `env=A,B`: environment variables `logs --details` shows.
    Env(Vec<String>),
}

const LOG_OPTS: &[&str] = &["max-size", "max-file", "labels", "env"];

/// `max-size=10m` (a memory amount), `max-file=3` (at least 1).
pub fn parse_log_opt(s: &str) -> Result<LogOpt, String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!(
            "{s:?} is not a log option (use max-size=10m, max-file=3, labels=NAME or env=NAME)"
        ));
    };
    match key {
        "max-size" => values::parse_memory(value)
            .map(LogOpt::MaxSize)
            .map_err(|e| format!("max-size: {e}")),
        "labels" | "env" => {
            let names: Vec<String> = value
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect();
            if names.is_empty() {
                return Err(format!("{key}: name at least one ({key}=NAME[,NAME...])"));
            }
            Ok(if key == "labels" {
                LogOpt::Labels(names)
            } else {
                LogOpt::Env(names)
            })
        }
        "max-file" => match value.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(LogOpt::MaxFile(n)),
            _ => Err(format!(
                "max-file: {value:?} is not a file count (a whole number, at least 1)"
            )),
        },
        _ => {
            let hint = values::did_you_mean(key, LOG_OPTS.iter().copied())
                .map(|c| format!("; did you mean {c}?"))
                .unwrap_or_default();
            Err(format!(
                "unknown log option {key:?} (supported: max-size, max-file, labels, env){hint}"
            ))
        }
    }
}

/// `--network`: `bridge`/`default`, `host`, `none` or a network name.
pub fn parse_network(s: &str) -> Result<NetworkMode, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("the network name is empty".to_string());
    }
    if t.starts_with("container:") {
        return Err(format!(
            "{s:?}: sharing another container's network is not supported"
        ));
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "{s:?} is not a network name (letters, digits, _ . -)"
        ));
    }
    Ok(NetworkMode::parse(t))
}

/// `--dns`: an IPv4 or IPv6 address.
pub fn parse_dns(s: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not an IP address (--dns takes a DNS server's address)"))
}

/// `--pids-limit N`: `-1` and `0` mean unlimited (`None`).
pub fn parse_pids_limit(s: &str) -> Result<Option<i64>, String> {
    match s.trim().parse::<i64>() {
        Ok(-1) | Ok(0) => Ok(None),
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!(
            "{s:?} is not a process count (a positive number, or -1 for unlimited)"
        )),
    }
}

/// `--health-cmd CMD`: run as `/bin/sh -c CMD`, like docker's `CMD-SHELL`.
pub fn parse_health_cmd(s: &str) -> Result<Probe, String> {
    if s.trim().is_empty() {
        return Err("the health check command is empty".to_string());
    }
    Ok(Probe::Command(vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        s.to_string(),
    ]))
}

fn parse_health_duration(s: &str, flag: &str) -> Result<Duration, String> {
    let d = values::parse_duration(s)?;
    if d.is_zero() && flag != "--health-start-period" {
        return Err(format!("{s:?} must be greater than zero"));
    }
    Ok(d)
}

/// `--health-retries N`, at least 1.
pub fn parse_health_retries(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a retry count (a whole number, at least 1)"
        )),
    }
}

/// `--health-on-failure none|kill|restart|stop`.
pub fn parse_health_on_failure(s: &str) -> Result<OnUnhealthy, String> {
    match s.trim() {
        "none" => Ok(OnUnhealthy::None),
        "restart" => Ok(OnUnhealthy::Restart),
        "stop" => Ok(OnUnhealthy::Stop),
        "kill" => Ok(OnUnhealthy::Kill),
        _ => Err(format!(
            "{s:?} is not a health failure action (none, kill, restart, stop)"
        )),
    }
}

/// `-w DIR`: an absolute path inside the container.
pub fn parse_workdir(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        path_string(&clean(Path::new(s)))
    } else {
        Err(format!(
            "the working directory {s:?} must be an absolute path"
        ))
    }
}

/// `--hostname`: RFC 1123 labels separated by dots, at most 253 characters.
pub fn parse_hostname(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a hostname (letters, digits and -, dot-separated labels of 1-63)"
        ))
    }
}

/// `-l KEY=VALUE` or `-l KEY` (empty value).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    if k.trim().is_empty() {
        return Err(format!("{s:?}: the label key is empty"));
    }
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {

    #[test]
    fn mount_long_form() {
        let base = Path::new("/base");
        let b = parse_mount("type=bind,source=/srv/data,target=/data,readonly", base).unwrap();
        assert_eq!(
            (b.kind, b.source.as_str(), b.target.as_str(), b.read_only),
            (VolumeType::Bind, "/srv/data", "/data", true)
        );
        let v = parse_mount("type=volume,src=cache,dst=/cache", base).unwrap();
        assert_eq!((v.kind, v.source.as_str()), (VolumeType::Volume, "cache"));
        let a = parse_mount("target=/anon", base).unwrap();
        assert_eq!((a.kind, a.source.as_str()), (VolumeType::Volume, ""));
        let t = parse_mount(
            "type=tmpfs,target=/t,tmpfs-size=1048576,tmpfs-mode=1770",
            base,
        )
        .unwrap();
        assert_eq!(t.kind, VolumeType::Tmpfs);
        assert_eq!(t.options, ["size=1048576", "mode=1770"]);
        let p = parse_mount(
            "type=bind,source=./d,target=/d,bind-propagation=rshared",
            base,
        )
        .unwrap();
        assert_eq!(p.source, "/base/d");
        assert_eq!(p.options, ["rshared"]);
        for bad in [
            "type=bind,target=/x",
            "type=nfs,target=/x",
            "type=bind,source=cache,target=/x",
            "type=volume,source=/abs,target=/x",
            "source=x",
            "type=volume,source=v,target=/x,volume-opt=a=b",
            "type=tmpfs,source=x,target=/t",
            "type=bind,source=/a,target=/b,readonly=maybe",
        ] {
            assert!(parse_mount(bad, base).is_err(), "{bad}");
        }
    }

    use super::*;
    use aac_runtime::agent::model::{MilliCpu, RestartPolicy};
    use clap::Parser;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn host_env(k: &str) -> Option<String> {
        match k {
            "HOME_TOKEN" => Some("from-host".to_string()),
            _ => None,
        }
    }

    fn port(container: u16, host: Option<u16>) -> PortSpec {
        PortSpec {
            container,
            host,
            protocol: Protocol::Tcp,
            host_ip: None,
        }
    }

    fn val(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.to_string(),
            source: EnvSource::Value {
                value: value.to_string(),
            },
        }
    }

    fn tmp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("aac-flags-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn publish_simple_forms() {
        assert_eq!(parse_publish("8080:8080"), Ok(vec![port(8080, Some(8080))]));
        assert_eq!(parse_publish("80:8080"), Ok(vec![port(8080, Some(80))]));
        assert_eq!(
            parse_publish("8080:8080/tcp"),
            Ok(vec![port(8080, Some(8080))])
        );
        let udp = parse_publish("53:5353/udp").unwrap();
        assert_eq!(udp[0].protocol, Protocol::Udp);
        assert_eq!((udp[0].host, udp[0].container), (Some(53), 5353));
        assert_eq!(
            parse_publish("8080/UDP").unwrap()[0].protocol,
            Protocol::Udp
        );
        // Bare container port: ephemeral host port.
        assert_eq!(parse_publish("8080"), Ok(vec![port(8080, Some(0))]));
        assert_eq!(parse_publish("0:8080"), Ok(vec![port(8080, Some(0))]));
    }

    #[test]
    fn publish_lists_ips_and_ranges() {
        assert_eq!(
            parse_publish("8080:8080,9090:90"),
            Ok(vec![port(8080, Some(8080)), port(90, Some(9090))])
        );
        let p = parse_publish("127.0.0.1:80:8080").unwrap();
        assert_eq!(p[0].host_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!((p[0].host, p[0].container), (Some(80), 8080));
        let p = parse_publish("127.0.0.1::8080").unwrap();
        assert_eq!(p[0].host_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(p[0].host, Some(0));
        let p = parse_publish("[::1]:80:8080/udp").unwrap();
        assert_eq!(p[0].host_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!((p[0].host, p[0].container), (Some(80), 8080));
        assert_eq!(p[0].protocol, Protocol::Udp);
        let p = parse_publish("[::1]::8080").unwrap();
        assert_eq!((p[0].host, p[0].host_ip.is_some()), (Some(0), true));
        assert_eq!(
            parse_publish("8000-8002:9000-9002"),
            Ok(vec![
                port(9000, Some(8000)),
                port(9001, Some(8001)),
                port(9002, Some(8002))
            ])
        );
        assert_eq!(
            parse_publish("8000-8001"),
            Ok(vec![port(8000, Some(0)), port(8001, Some(0))])
        );
    }

    #[test]
    fn publish_errors() {
        let e = parse_publish("70000:80").unwrap_err();
        assert!(e.contains("70000 is not a port (1-65535)"), "{e}");
        let e = parse_publish("80:70000").unwrap_err();
        assert!(e.contains("70000 is not a port (1-65535)"), "{e}");
        let e = parse_publish("80:80/sctp").unwrap_err();
        assert!(e.contains("unknown protocol \"sctp\""), "{e}");
        let e = parse_publish("80:80,abc").unwrap_err();
        assert!(e.contains("\"abc\" is not a port number"), "{e}");
        let e = parse_publish("999.1.1.1:80:80").unwrap_err();
        assert!(e.contains("not an IP address"), "{e}");
        let e = parse_publish("8000-8001:80").unwrap_err();
        assert!(e.contains("differ in size"), "{e}");
        let e = parse_publish("8001-8000:8001-8000").unwrap_err();
        assert!(e.contains("start is above the end"), "{e}");
        for bad in ["", ":", "80:", "0", "80:0", "80:80/", "80:80,,90", "-1:80"] {
            assert!(parse_publish(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn env_forms() {
        assert_eq!(parse_env("A=b=c", &no_env), Ok(Some(val("A", "b=c"))));
        assert_eq!(parse_env("EMPTY=", &no_env), Ok(Some(val("EMPTY", ""))));
        assert_eq!(
            parse_env("HOME_TOKEN", &host_env),
            Ok(Some(val("HOME_TOKEN", "from-host")))
        );
        assert_eq!(parse_env("NOT_ON_HOST", &host_env), Ok(None));
        assert!(parse_env("=x", &no_env).unwrap_err().contains("empty"));
        let e = parse_env("A B=s3cr3t", &no_env).unwrap_err();
        assert!(e.contains("whitespace") && e.contains("\"A B\""), "{e}");
        assert!(!e.contains("s3cr3t"), "the value is not echoed: {e}");
        assert!(parse_env("", &no_env).is_err());
    }

    #[test]
    fn env_file_format() {
        let dir = tmp_dir("envfile");
        let f = dir.join("app.env");
        std::fs::write(
            &f,
            "\u{feff}# comment\n\nA=1\n  B=two words \nQ=\"quoted\"\nHOME_TOKEN\nUNSET\nE=\r\n",
        )
        .unwrap();
        let vars = parse_env_file(&f, &host_env).unwrap();
        assert_eq!(
            vars,
            vec![
                val("A", "1"),
                val("B", "two words "),
                val("Q", "\"quoted\""),
                val("HOME_TOKEN", "from-host"),
                val("E", ""),
            ]
        );

        let bad = dir.join("bad.env");
        std::fs::write(&bad, "OK=1\nBAD NAME=1\n=x\n").unwrap();
        let errs = parse_env_file(&bad, &no_env).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].ends_with("bad.env:2: the variable name \"BAD NAME\" contains whitespace or control characters"), "{errs:?}");
        assert!(errs[1].contains("bad.env:3: "), "{errs:?}");

        let missing = parse_env_file(&dir.join("nope.env"), &no_env).unwrap_err();
        assert!(missing[0].contains("cannot read"), "{missing:?}");
    }

    #[test]
    fn volume_forms() {
        let base = Path::new("/srv/agent");
        let v = parse_volume("/host/data:/data", base).unwrap();
        assert_eq!(
            v,
            VolumeSpec {
                source: "/host/data".into(),
                target: "/data".into(),
                kind: VolumeType::Bind,
                read_only: false,
                options: vec![],
            }
        );
        let v = parse_volume("./data:/app/data:ro", base).unwrap();
        assert_eq!(v.source, "/srv/agent/data");
        assert!(v.read_only);
        let v = parse_volume("../shared/:/shared/:rw,z", base).unwrap();
        assert_eq!(
            (v.source.as_str(), v.target.as_str()),
            ("/srv/shared", "/shared")
        );
        assert!(!v.read_only);
        let v = parse_volume("model-cache:/app/models", base).unwrap();
        assert_eq!(
            (v.kind, v.source.as_str()),
            (VolumeType::Volume, "model-cache")
        );
        let v = parse_volume("/cache", base).unwrap();
        assert_eq!((v.kind, v.source.as_str()), (VolumeType::Volume, ""));
        assert_eq!(v.target, "/cache");
        let v = parse_volume("/h:/c:ro,Z,rshared", base).unwrap();
        assert_eq!(v.options, vec!["rshared".to_string()]);
        assert!(v.read_only);
    }

    #[test]
    fn volume_errors() {
        let base = Path::new("/srv");
        let cases = [
            ("/h:data", "must be absolute"),
            ("/h:/", "cannot be \"/\""),
            ("data/x:/d", "must start with ./ or ../"),
            ("~/x:/d", "\"~\" is not expanded"),
            ("my vol:/d", "is not a volume name"),
            ("/h:/d:ro,rw", "contradict"),
            ("/h:/d:r0", "unknown mount option \"r0\""),
            ("/h:/d:x:y", "is not a volume specification"),
            (":/d", "source before \":\" is empty"),
            ("/data:ro", "anonymous volume takes no options"),
            ("vol:/d:rshared", "bind mounts only"),
            ("relative", "must be absolute"),
        ];
        for (spec, want) in cases {
            let e = parse_volume(spec, base).unwrap_err();
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    #[test]
    fn tmpfs_forms() {
        let t = parse_tmpfs("/run").unwrap();
        assert_eq!((t.kind, t.target.as_str()), (VolumeType::Tmpfs, "/run"));
        assert!(t.options.is_empty());
        let t = parse_tmpfs("/tmp:size=64m,mode=1777,noexec,ro").unwrap();
        assert_eq!(t.options, vec!["size=64m", "mode=1777", "noexec"]);
        assert!(t.read_only);
        assert!(parse_tmpfs("tmp").unwrap_err().contains("absolute"));
        assert!(parse_tmpfs("/t:mode=rwx").unwrap_err().contains("octal"));
        assert!(parse_tmpfs("/t:sise=1m")
            .unwrap_err()
            .contains("did you mean size"));
        assert!(parse_tmpfs("/t:size=")
            .unwrap_err()
            .contains("needs a value"));
    }

    #[test]
    fn users_and_groups() {
        assert_eq!(parse_user("1000"), Ok((1000, None)));
        assert_eq!(parse_user("1000:2000"), Ok((1000, Some(2000))));
        assert_eq!(parse_user("0:0"), Ok((0, Some(0))));
        assert!(parse_user("app").unwrap_err().contains("numeric id"));
        assert!(parse_user("1000:staff").unwrap_err().contains("numeric id"));
        assert!(parse_user(":1").is_err());
        assert!(parse_user("99999999999")
            .unwrap_err()
            .contains("0-4294967295"));
        assert_eq!(parse_group("44"), Ok(44));
        assert!(parse_group("video").is_err());
    }

    #[test]
    fn security_and_log_opts() {
        let base = Path::new("/etc/aac");
        assert_eq!(
            parse_security_opt("seccomp=unconfined", base),
            Ok(SecurityOpt::Seccomp(SeccompProfile::Unconfined))
        );
        assert_eq!(
            parse_security_opt("seccomp:unconfined", base),
            Ok(SecurityOpt::Seccomp(SeccompProfile::Unconfined))
        );
        assert_eq!(
            parse_security_opt("seccomp=default", base),
            Ok(SecurityOpt::Seccomp(SeccompProfile::Default))
        );
        assert_eq!(
            parse_security_opt("seccomp=./p.json", base),
            Ok(SecurityOpt::Seccomp(SeccompProfile::Path(
                "/etc/aac/p.json".into()
            )))
        );
        assert_eq!(
            parse_security_opt("no-new-privileges", base),
            Ok(SecurityOpt::NoNewPrivileges(true))
        );
        assert_eq!(
            parse_security_opt("no-new-privileges=false", base),
            Ok(SecurityOpt::NoNewPrivileges(false))
        );
        assert!(parse_security_opt("no-new-privileges=maybe", base).is_err());
        assert!(parse_security_opt("apparmor=unconfined", base)
            .unwrap_err()
            .contains("not supported"));
        assert!(parse_security_opt("seccom=unconfined", base)
            .unwrap_err()
            .contains("did you mean seccomp"));
        assert!(parse_security_opt("seccomp=", base).is_err());

        assert_eq!(
            parse_log_opt("max-size=10m"),
            Ok(LogOpt::MaxSize(Bytes(10 << 20)))
        );
        assert_eq!(parse_log_opt("max-file=5"), Ok(LogOpt::MaxFile(5)));
        assert!(parse_log_opt("max-file=0").is_err());
        assert!(parse_log_opt("max-size=huge").is_err());
        assert!(parse_log_opt("max-sise=1m")
            .unwrap_err()
            .contains("did you mean max-size"));
        assert!(parse_log_opt("compress").is_err());
    }

    #[test]
    fn small_scalars() {
        assert_eq!(parse_pids_limit("-1"), Ok(None));
        assert_eq!(parse_pids_limit("0"), Ok(None));
        assert_eq!(parse_pids_limit("100"), Ok(Some(100)));
        assert!(parse_pids_limit("-2").is_err());
        assert!(parse_pids_limit("many").is_err());
        assert_eq!(parse_network("host"), Ok(NetworkMode::Host));
        assert_eq!(parse_network("net"), Ok(NetworkMode::Named("net".into())));
        assert!(parse_network("container:abc").is_err());
        assert!(parse_network("a b").is_err());
        assert_eq!(
            parse_dns("1.1.1.1"),
            Ok(IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)))
        );
        assert!(parse_dns("dns.example").is_err());
        assert_eq!(parse_workdir("/app/./x/"), Ok("/app/x".into()));
        assert!(parse_workdir("app").is_err());
        assert!(parse_hostname("agent-1.local").is_ok());
        assert!(parse_hostname("-bad").is_err());
        assert!(parse_hostname("under_score").is_err());
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_label("tier"), Ok(("tier".into(), String::new())));
        assert!(parse_label("=x").is_err());
        assert_eq!(
            parse_health_cmd("curl -f http://localhost/"),
            Ok(Probe::Command(vec![
                "/bin/sh".into(),
                "-c".into(),
                "curl -f http://localhost/".into()
            ]))
        );
        assert!(parse_health_cmd(" ").is_err());
        assert_eq!(parse_health_retries("5"), Ok(5));
        assert!(parse_health_retries("0").is_err());
        assert_eq!(parse_health_on_failure("restart"), Ok(OnUnhealthy::Restart));
        assert_eq!(parse_health_on_failure("kill"), Ok(OnUnhealthy::Kill));
        assert!(parse_health_on_failure("explode").is_err());
    }

    /// An agent as agent.yaml might describe it.
    fn file_agent() -> Agent {
        let mut a = Agent::for_image("bot", "bot:1");
        a.spec.ports = vec![
            port(8080, Some(8080)),
            PortSpec {
                container: 53,
                host: Some(53),
                protocol: Protocol::Udp,
                host_ip: None,
            },
            port(9000, None),
        ];
        a.spec.environment = vec![val("A", "file"), val("B", "file")];
        a.spec.volumes = vec![
            parse_volume("/host/data:/data", Path::new("/")).unwrap(),
            parse_volume("cache:/cache", Path::new("/")).unwrap(),
        ];
        a.spec.resources.limits.cpu = Some(MilliCpu(2000));
        a.spec.resources.limits.memory = Some(Bytes(1 << 30));
        a.spec.security.capabilities.drop = vec!["ALL".into(), "NET_ADMIN".into()];
        a.spec.security.run_as_user = Some(1);
        a.spec.security.run_as_group = Some(2);
        a.spec.health_check = Some(HealthCheck {
            probe: Probe::Tcp { port: 8080 },
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            retries: 7,
            start_period: Duration::from_secs(1),
            on_unhealthy: OnUnhealthy::None,
        });
        a.metadata.labels.insert("team".into(), "a".into());
        a
    }

    #[test]
    fn apply_merges_lists_and_replaces_scalars() {
        let mut a = file_agent();
        let flags = RunFlags {
            publish: vec!["9999:8080".into(), "127.0.0.1:7000:7000".into()],
            env: vec![
                "B=flag".into(),
                "C=new".into(),
                "HOME_TOKEN".into(),
                "GONE".into(),
            ],
            volume: vec!["/other:/data:ro".into(), "./logs:/logs".into()],
            tmpfs: vec!["/tmp:size=16m".into()],
            cpus: Some("1.5".into()),
            memory_reservation: Some("256m".into()),
            pids_limit: Some("-1".into()),
            user: Some("1000".into()),
            cap_add: vec!["net_admin".into()],
            cap_drop: vec!["NET_RAW".into()],
            health_interval: Some("1m".into()),
            restart: Some("on-failure:3".into()),
            label: vec!["team=b".into(), "env=dev".into()],
            log_opt: vec!["max-file=5".into()],
            read_only: Some(true),
            entrypoint: Some("/bin/agent".into()),
            dns: vec!["9.9.9.9".into()],
            network: Some("none".into()),
            security_opt: vec!["no-new-privileges=false".into()],
            ..RunFlags::default()
        };
        let d = flags.apply(&mut a, Path::new("/work/dir"), &host_env);
        assert!(d.is_empty(), "{d:?}");
        let s = &a.spec;
        // The file's 8080/tcp is replaced, 53/udp and 9000 kept, 7000 appended.
        assert_eq!(s.ports.len(), 4);
        assert_eq!(s.ports[0].container, 53);
        assert_eq!(s.ports[1], port(9000, None));
        assert_eq!(s.ports[2], port(8080, Some(9999)));
        assert_eq!(s.ports[3].host_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(
            s.environment,
            vec![
                val("A", "file"),
                val("B", "flag"),
                val("C", "new"),
                val("HOME_TOKEN", "from-host")
            ]
        );
        assert_eq!(s.volumes.len(), 4);
        assert_eq!(
            (s.volumes[0].source.as_str(), s.volumes[0].read_only),
            ("/other", true)
        );
        assert_eq!(s.volumes[1].source, "cache");
        assert_eq!(s.volumes[2].source, "/work/dir/logs");
        assert_eq!(s.volumes[3].kind, VolumeType::Tmpfs);
        assert_eq!(s.resources.limits.cpu, Some(MilliCpu(1500)));
        assert_eq!(s.resources.limits.memory, Some(Bytes(1 << 30)));
        assert_eq!(s.resources.requests.memory, Some(Bytes(256 << 20)));
        assert_eq!(s.resources.limits.pids, None);
        assert_eq!(
            (s.security.run_as_user, s.security.run_as_group),
            (Some(1000), None)
        );
        assert_eq!(s.security.capabilities.add, vec!["NET_ADMIN".to_string()]);
        assert_eq!(
            s.security.capabilities.drop,
            vec!["ALL".to_string(), "NET_RAW".to_string()]
        );
        assert!(s.security.read_only_root_filesystem);
        assert!(!s.security.no_new_privileges);
        let hc = s.health_check.as_ref().unwrap();
        assert_eq!(hc.probe, Probe::Tcp { port: 8080 });
        assert_eq!((hc.interval, hc.retries), (Duration::from_secs(60), 7));
        assert_eq!(
            s.restart_policy,
            RestartPolicy::OnFailure {
                max_retries: Some(3)
            }
        );
        assert_eq!(a.metadata.labels["team"], "b");
        assert_eq!(a.metadata.labels["env"], "dev");
        assert_eq!(s.logging.max_file, 5);
        assert_eq!(s.command, vec!["/bin/agent".to_string()]);
        assert_eq!(s.network.dns, vec![IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9))]);
        assert_eq!(s.network.mode, NetworkMode::None);
    }

    #[test]
    fn apply_env_file_then_env() {
        let dir = tmp_dir("apply-env");
        std::fs::write(dir.join(".env"), "A=envfile\nD=envfile\n").unwrap();
        let mut a = file_agent();
        let flags = RunFlags {
            env_file: vec![".env".into()],
            env: vec!["D=flag".into()],
            ..RunFlags::default()
        };
        assert!(flags.apply(&mut a, &dir, &no_env).is_empty());
        assert_eq!(
            a.spec.environment,
            vec![val("A", "envfile"), val("B", "file"), val("D", "flag")]
        );
    }

    #[test]
    fn apply_health_check() {
        // A new command check with defaults plus the given timing.
        let mut a = Agent::for_image("x", "x");
        let flags = RunFlags {
            health_cmd: Some("curl -f localhost".into()),
            health_retries: Some("5".into()),
            health_on_failure: Some("restart".into()),
            ..RunFlags::default()
        };
        assert!(flags.apply(&mut a, Path::new("/"), &no_env).is_empty());
        let hc = a.spec.health_check.unwrap();
        assert_eq!(hc.interval, HealthCheck::DEFAULT_INTERVAL);
        assert_eq!(hc.timeout, HealthCheck::DEFAULT_TIMEOUT);
        assert_eq!(hc.retries, 5);
        assert_eq!(hc.on_unhealthy, OnUnhealthy::Restart);

        // The file's timing survives a new --health-cmd.
        let mut a = file_agent();
        let flags = RunFlags {
            health_cmd: Some("true".into()),
            ..RunFlags::default()
        };
        assert!(flags.apply(&mut a, Path::new("/"), &no_env).is_empty());
        let hc = a.spec.health_check.unwrap();
        assert_eq!(hc.interval, Duration::from_secs(5));
        assert!(matches!(hc.probe, Probe::Command(ref c) if c[2] == "true"));

        // --no-healthcheck removes it; with other health flags it is an error.
        let mut a = file_agent();
        let flags = RunFlags {
            no_healthcheck: true,
            ..RunFlags::default()
        };
        assert!(flags.apply(&mut a, Path::new("/"), &no_env).is_empty());
        assert!(a.spec.health_check.is_none());
        let flags = RunFlags {
            no_healthcheck: true,
            health_timeout: Some("1s".into()),
            ..RunFlags::default()
        };
        let d = flags.apply(&mut file_agent(), Path::new("/"), &no_env);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "--no-healthcheck");

        // Timing without any health check to adjust.
        let flags = RunFlags {
            health_interval: Some("10s".into()),
            ..RunFlags::default()
        };
        let d = flags.apply(&mut Agent::for_image("x", "x"), Path::new("/"), &no_env);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].message.contains("no health check to adjust"));
    }

    #[test]
    fn apply_collects_every_error_and_leaves_agent_alone() {
        let mut a = file_agent();
        let before = a.clone();
        let flags = RunFlags {
            publish: vec!["70000:80".into(), "80:80".into(), "1:2/sctp".into()],
            env: vec!["=x".into()],
            volume: vec!["/h:rel".into(), "/a:/same".into(), "/b:/same".into()],
            cpus: Some("lots".into()),
            memory: Some("1q".into()),
            user: Some("root".into()),
            cap_add: vec!["NET_ADMN".into()],
            security_opt: vec!["apparmor=x".into()],
            dns: vec!["nope".into()],
            restart: Some("sometimes".into()),
            health_interval: Some("soon".into()),
            log_opt: vec!["max-size=0".into()],
            workdir: Some("rel".into()),
            pids_limit: Some("-5".into()),
            ..RunFlags::default()
        };
        let d = flags.apply(&mut a, Path::new("/"), &no_env);
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "--publish",
                "--publish",
                "--env",
                "--volume",
                "--volume",
                "--cpus",
                "--memory",
                "--pids-limit",
                "--user",
                "--cap-add",
                "--security-opt",
                "--dns",
                "--health-interval",
                "--workdir",
                "--restart",
                "--log-opt",
            ],
            "{d:#?}"
        );
        assert!(d[0].message.contains("70000 is not a port (1-65535)"));
        assert!(d[1].message.contains("sctp"));
        assert!(d[4].message.contains("duplicate mount point /same"));
        assert!(d[9].message.contains("did you mean NET_ADMIN"));
        assert_eq!(a, before);
        assert_eq!(
            d[0].to_string(),
            "--publish: \"70000:80\": 70000 is not a port (1-65535)"
        );
    }

    #[test]
    fn apply_memory_reservation_above_limit() {
        let mut a = file_agent();
        let flags = RunFlags {
            memory: Some("256m".into()),
            memory_reservation: Some("512m".into()),
            ..RunFlags::default()
        };
        let d = flags.apply(&mut a, Path::new("/"), &no_env);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "--memory-reservation");
    }

    #[test]
    fn apply_issue_19_flags() {
        let mut a = Agent::for_image("x", "x");
        let flags = RunFlags {
            cpuset_cpus: Some("0-1, 3".into()),
            cpu_shares: Some("512".into()),
            memory: Some("64m".into()),
            memory_swap: Some("-1".into()),
            dns_search: vec!["corp.example".into()],
            dns_opt: vec!["ndots:2".into()],
            ip: Some("10.97.0.5".into()),
            privileged: true,
            ..RunFlags::default()
        };
        assert!(flags.apply(&mut a, Path::new("/"), &no_env).is_empty());
        let r = &a.spec.resources;
        assert_eq!(r.limits.cpuset_cpus.as_deref(), Some("0-1,3"));
        assert_eq!(r.requests.cpu_shares, Some(512));
        assert_eq!(
            r.limits.memory_swap,
            Some(aac_runtime::agent::MemorySwap::Unlimited)
        );
        assert_eq!(a.spec.network.dns_search, vec!["corp.example"]);
        assert_eq!(a.spec.network.dns_options, vec!["ndots:2"]);
        assert_eq!(a.spec.network.ip, Some("10.97.0.5".parse().unwrap()));
        assert!(a.spec.security.privileged);

        let bad = RunFlags {
            cpuset_cpus: Some("2-1".into()),
            cpu_shares: Some("1".into()),
            memory_swap: Some("lots".into()),
            ip: Some("nope".into()),
            ..RunFlags::default()
        };
        let d = bad.apply(&mut a, Path::new("/"), &no_env);
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["--cpuset-cpus", "--cpu-shares", "--memory-swap", "--ip"]
        );
    }

    #[derive(Parser, Debug)]
    struct T {
        #[command(flatten)]
        f: RunFlags,
        rest: Vec<String>,
    }

    #[test]
    fn clap_parses_a_docker_command_line() {
        let mut argv: Vec<&str> = "aac -p 8080:80 --publish=9090:90/udp -e A=1 --env B \
             --env-file x.env -v ./data:/data:ro --tmpfs /tmp --cpus 1.5 -m 512m \
             --memory-reservation 256m --pids-limit -1 -u 1000:1000 --group-add 44 --read-only \
             --cap-add NET_ADMIN --cap-drop ALL --security-opt seccomp=unconfined \
             --security-opt no-new-privileges --net host --dns 1.1.1.1 --restart always \
             --health-interval 10s --health-timeout 2s --health-retries 4 \
             --health-start-period 5s --health-on-failure restart -w /app --hostname bot \
             --entrypoint /bin/sh -l a=b --log-opt max-size=1m"
            .split_whitespace()
            .collect();
        argv.extend([
            "--health-cmd",
            "curl -f http://localhost/",
            "image:tag",
            "echo",
            "hi",
        ]);
        let t = T::try_parse_from(argv).unwrap();
        let f = &t.f;
        assert_eq!(f.publish, vec!["8080:80", "9090:90/udp"]);
        assert_eq!(f.env, vec!["A=1", "B"]);
        assert_eq!(f.env_file, vec![PathBuf::from("x.env")]);
        assert_eq!(f.volume, vec!["./data:/data:ro"]);
        assert_eq!(f.pids_limit.as_deref(), Some("-1"));
        assert_eq!(f.read_only, Some(true));
        assert_eq!(f.security_opt.len(), 2);
        assert_eq!(f.network.as_deref(), Some("host"));
        assert_eq!(f.health_cmd.as_deref(), Some("curl -f http://localhost/"));
        assert_eq!(f.workdir.as_deref(), Some("/app"));
        assert_eq!(f.label, vec!["a=b"]);
        assert!(!f.no_healthcheck);
        assert_eq!(t.rest, vec!["image:tag", "echo", "hi"]);

        let dir = tmp_dir("clap");
        std::fs::write(dir.join("x.env"), "FROM_FILE=1\n").unwrap();
        let mut a = Agent::for_image("bot", "image:tag");
        let d = f.apply(&mut a, &dir, &no_env);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(a.spec.network.mode, NetworkMode::Host);
        assert_eq!(a.spec.ports.len(), 2);
        assert_eq!(
            a.spec.environment,
            vec![val("FROM_FILE", "1"), val("A", "1")]
        );

        let t =
            T::try_parse_from(["aac", "--read-only=false", "--network", "mynet", "img"]).unwrap();
        assert_eq!(t.f.read_only, Some(false));
        assert_eq!(t.f.network.as_deref(), Some("mynet"));
        assert_eq!(t.rest, vec!["img"]);

        assert!(T::try_parse_from(["aac", "--rm", "img"]).is_err());
        assert!(T::try_parse_from(["aac", "--read-only=maybe", "img"]).is_err());
    }

    #[test]
    fn egress_flags_build_the_policy() {
        let t = T::try_parse_from([
            "aac",
            "--allow-host",
            "API.example.com:443",
            "--allow-host",
            "*.cdn.test",
            "img",
        ])
        .unwrap();
        let mut a = file_agent();
        a.spec.network.security.allowed_hosts = vec!["file.test".into()];
        assert!(t.f.apply(&mut a, Path::new("/"), &no_env).is_empty());
        let sec = &a.spec.network.security;
        assert!(!sec.allow_external_connections);
        assert_eq!(sec.allowed_hosts, vec!["api.example.com:443", "*.cdn.test"]);

        let t = T::try_parse_from(["aac", "--deny-egress", "img"]).unwrap();
        let mut a = Agent::for_image("bot", "img");
        assert!(t.f.apply(&mut a, Path::new("/"), &no_env).is_empty());
        let policy = a.spec.network.security.egress_policy().unwrap();
        assert!(policy.allowed.is_empty());

        // --allow-egress lifts a file's policy.
        let t = T::try_parse_from(["aac", "--allow-egress", "img"]).unwrap();
        let mut a = file_agent();
        a.spec.network.security.allow_external_connections = false;
        a.spec.network.security.allowed_hosts = vec!["file.test".into()];
        assert!(t.f.apply(&mut a, Path::new("/"), &no_env).is_empty());
        assert_eq!(a.spec.network.security.egress_policy(), None);

        assert!(T::try_parse_from(["aac", "--allow-egress", "--deny-egress", "img"]).is_err());
        assert!(
            T::try_parse_from(["aac", "--allow-egress", "--allow-host", "a.test", "img"]).is_err()
        );

        let t = T::try_parse_from([
            "aac",
            "--allow-host",
            "bad host",
            "--allow-host",
            "a.*.b",
            "img",
        ])
        .unwrap();
        let mut a = Agent::for_image("bot", "img");
        let d = t.f.apply(&mut a, Path::new("/"), &no_env);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].to_string()
                .starts_with("--allow-host: \"bad host\" is not a host name"),
            "{d:?}"
        );
        assert!(
            d[1].to_string().contains("only a leading `*.` wildcard"),
            "{d:?}"
        );
    }
}
