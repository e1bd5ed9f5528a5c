//! `create`: everything a container needs before its first start, recorded once. The backend
//! is chosen, the image or command checked, the name claimed, ports checked, the network
//! attached, volumes made, the OCI spec built and the record written; any failure undoes what
//! was done. The container's creation lock is held throughout, so a concurrent `prune` never
//! takes a half-made container for garbage.

use std::path::Path;
use std::time::{Duration, SystemTime};

use oci_spec::runtime::Spec;

use crate::agent::{self, Agent, NetworkMode, PortSpec, VolumeType};
use crate::cgroups::CgroupPlan;
use crate::events::{Event, EventType};
use crate::image_config::ImageConfig;
use crate::logs::format_time;
use crate::network::{self, AttachRequest, Attachment};
use crate::record::{self, Backend, ContainerRecord};
use crate::spec::builder::{self, HostLimits, SpecContext};
use crate::state::new_id;
use crate::status::Phase;

use super::{Container, Engine, EngineError, Result};

/// Which backend runs a new container.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum RuntimeChoice {
    /// containerd when its socket answers, else the process backend.
    #[default]
    Auto,
    Containerd,
    Process,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The agent, validated.
    pub agent: Agent,
    /// The container's name; default: the agent's name (from an agent.yaml) or
    /// `<agent>-<first six of the ID>`.
    pub name: Option<String>,
    pub runtime: RuntimeChoice,
    /// `--rm`: remove everything when it exits for good.
    pub auto_remove: bool,
    /// `-i`: keep a stdin FIFO.
    pub interactive: bool,
    /// `-t`: give the process a terminal.
    pub tty: bool,
    /// The IMAGE of `aac run IMAGE` (for the process backend: the command).
    pub image_arg: Option<String>,
    /// The agent came from an agent.yaml: its name is the container's default name.
    pub from_file: bool,
    /// That agent.yaml: errors about its secret references name its lines.
    pub agent_file: Option<std::path::PathBuf>,
}

/// A created container.
#[derive(Debug, Clone)]
pub struct Created {
    pub container: Container,
    /// What will not be enforced (limits without a cgroup, ...).
    pub warnings: Vec<String>,
}

/// How long to wait for `spec.services`: `$AAC_SERVICE_TIMEOUT` (`2s`, `1m30s`) or 30 s.
fn service_timeout() -> Result<Duration> {
    match std::env::var("AAC_SERVICE_TIMEOUT") {
        Ok(v) if !v.trim().is_empty() => humantime::parse_duration(v.trim()).map_err(|e| {
            EngineError::Invalid(format!(
                "AAC_SERVICE_TIMEOUT={v:?} is not a duration (like 10s or 1m): {e}"
            ))
        }),
        _ => Ok(network::DEFAULT_SERVICE_TIMEOUT),
    }
}

/// "insufficient memory" when the agent asks for more than the host has available; docker's
/// CPU range check.
fn check_host(agent: &Agent) -> Result<()> {
    let res = &agent.spec.resources;
    if let Some(cpu) = res.limits.cpu {
        let cpus = crate::stats::online_cpus();
        if cpu.0 == 0 || cpu.0 > u64::from(cpus) * 1000 {
            return Err(EngineError::Invalid(format!(
                "range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available \
                 (asked for {:.2})",
                cpu.0 as f64 / 1000.0
            )));
        }
    }
    let Some(wanted) = res.requests.memory.or(res.limits.memory) else {
        return Ok(());
    };
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024);
    match available {
        Some(avail) if wanted.0 > avail => Err(EngineError::Invalid(format!(
            "insufficient memory: the agent requests {} but the host has {} available",
            crate::stats::human_binary(wanted.0),
            crate::stats::human_binary(avail)
        ))),
        _ => Ok(()),
    }
}

/// A process-backend command must exist on the host: an image reference given by mistake
/// gets a clear error.
fn check_process_command(
    agent: &Agent,
    image_arg: Option<&str>,
    choice: RuntimeChoice,
) -> Result<()> {
    let Some(cmd) = agent.spec.command.first().or(agent.spec.args.first()) else {
        return Err(EngineError::Invalid(
            "the process backend needs a command: give spec.command in agent.yaml or a command after the flags".into(),
        ));
    };
    let found = if cmd.contains('/') {
        Path::new(cmd).exists()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
            .unwrap_or(false)
    };
    if found {
        return Ok(());
    }
    let looks_like_image = image_arg.is_some_and(|i| i.contains(':') || i.contains('/'));
    if choice == RuntimeChoice::Auto && looks_like_image {
        return Err(EngineError::Invalid(format!(
            "{cmd:?} looks like an image, but containerd is not reachable and the process backend runs host commands; start containerd or pass --address"
        )));
    }
    Err(EngineError::Start {
        code: 127,
        message: format!("{cmd:?}: executable file not found on this host"),
    })
}

/// What was made so far; undone in reverse unless disarmed.
struct Undo<'a> {
    engine: &'a Engine,
    id: String,
    name: Option<String>,
    network: bool,
    /// Anonymous volumes made for this container.
    volumes: Vec<String>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let dirs = &self.engine.dirs;
        if self.network {
            if let Err(e) = network::detach(dirs, &self.id) {
                tracing::warn!("releasing the network of {}: {e}", self.id);
            }
        }
        for v in &self.volumes {
            let _ = crate::volumes::remove_unchecked(dirs, v);
        }
        let _ = dirs.remove_container(&self.id);
        if let Some(name) = &self.name {
            let _ = dirs.release_name(name, &self.id);
        }
    }
}

impl Engine {
    /// Which backend to use, and a notice when `auto` fell back to the process backend.
    pub(crate) async fn choose_backend(&self, choice: RuntimeChoice) -> (Backend, Option<String>) {
        match choice {
            RuntimeChoice::Containerd => (Backend::Containerd, None),
            RuntimeChoice::Process => (Backend::Process, None),
            RuntimeChoice::Auto => match self.client().await {
                Ok(_) => (Backend::Containerd, None),
                Err(e) => (
                    Backend::Process,
                    Some(format!(
                        "containerd is not reachable ({e}); using the process backend"
                    )),
                ),
            },
        }
    }

    /// Host ports published by other aac containers (either backend) are taken; for the
    /// process backend, which binds on the host itself, so is any port something else holds.
    pub(crate) fn check_published_ports(
        &self,
        id: &str,
        backend: Backend,
        ports: &[PortSpec],
    ) -> Result<()> {
        let wanted: Vec<&PortSpec> = ports
            .iter()
            .filter(|p| p.host.is_some_and(|h| h != 0))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        for other in self.all()? {
            if other.rec.id == id
                || !matches!(other.status.phase, Phase::Running | Phase::Restarting)
            {
                continue;
            }
            for p in &wanted {
                if other
                    .rec
                    .ports
                    .iter()
                    .any(|q| q.host == p.host && q.protocol == p.protocol)
                {
                    return Err(EngineError::Invalid(format!(
                        "port {}/{} is already published by container {}",
                        p.host.unwrap_or(0),
                        p.protocol.as_str(),
                        other.rec.name
                    )));
                }
            }
        }
        if backend == Backend::Process {
            for p in &wanted {
                let ip = p
                    .host_ip
                    .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
                let addr = std::net::SocketAddr::new(ip, p.host.unwrap_or(0));
                let r = match p.protocol {
                    agent::Protocol::Tcp => std::net::TcpListener::bind(addr).map(drop),
                    agent::Protocol::Udp => std::net::UdpSocket::bind(addr).map(drop),
                };
                if let Err(e) = r {
                    return Err(EngineError::Invalid(format!(
                        "port {addr}/{} is not available on this host: {e}",
                        p.protocol.as_str()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Create a container: recorded, not started.
    pub async fn create(&self, opts: CreateOptions) -> Result<Created> {
        self.create_container(opts, false).await.map(|(c, _lock)| c)
    }

    /// [`Engine::create`]; `auto_start` for a container [`Engine::run`] starts at once, which
    /// keeps the returned creation lock until its monitor runs.
    pub(crate) async fn create_container(
        &self,
        opts: CreateOptions,
        auto_start: bool,
    ) -> Result<(Created, nix::fcntl::Flock<std::fs::File>)> {
        let CreateOptions {
            mut agent,
            name,
            runtime,
            auto_remove,
            interactive,
            tty,
            image_arg,
            from_file,
            agent_file,
        } = opts;
        let (backend, notice) = self.choose_backend(runtime).await;
        if let Some(n) = &notice {
            self.notice(n);
        }
        if backend == Backend::Process && agent.spec.security.privileged {
            return Err(EngineError::Invalid(
                "--privileged is refused on the process backend: its agent is a host process, \
                 and every capability, every host device and no seccomp filter there would \
                 leave nothing between it and the host; run it on containerd (--runtime \
                 containerd) or name the capabilities it needs with --cap-add"
                    .into(),
            ));
        }
        let image_ref = agent.image_ref();
        check_host(&agent)?;
        // Every secret and key the agent names exists, before anything is created.
        crate::secrets::refs::check(
            &crate::secrets::Store::new(&self.dirs),
            &agent,
            agent_file.as_deref(),
        )?;

        // The image (containerd) or the command (process backend).
        let image_config: Option<ImageConfig> = match backend {
            Backend::Containerd => {
                let client = self.client().await?;
                if !client.image_exists(&image_ref).await? {
                    return Err(EngineError::Invalid(format!(
                        "image '{image_ref}' not found locally: import it with `aac image import` or pull it with `aac pull {image_ref}`"
                    )));
                }
                Some(client.image_config(&image_ref).await?)
            }
            Backend::Process => {
                if agent.spec.command.is_empty() {
                    // `aac run --runtime process CMD ARGS`: the "image" is the command.
                    if let Some(cmd) = image_arg.clone() {
                        agent.spec.command = vec![cmd];
                    }
                }
                check_process_command(&agent, image_arg.as_deref(), runtime)?;
                None
            }
        };

        let id = new_id();
        let name = name.unwrap_or_else(|| {
            if from_file {
                agent.metadata.name.clone()
            } else {
                format!("{}-{}", agent.metadata.name, &id[..6])
            }
        });
        agent::validate::check_agent_name(&name)
            .map_err(|e| EngineError::Invalid(format!("--name: {e}")))?;

        // From here on the creation lock says "under way" to a concurrent prune.
        let creating = self.dirs.lock_create(&id)?;
        let mut undo = Undo {
            engine: self,
            id: id.clone(),
            name: None,
            network: false,
            volumes: Vec::new(),
            armed: true,
        };
        self.dirs.reserve_name(&name, &id)?;
        undo.name = Some(name.clone());

        // Network: ports are checked before anything is created.
        let mode = match (backend, &agent.spec.network.mode) {
            // Run by root, a host process joins aac's networks as a container does; rootless,
            // it shares the host's network unless it asks for none.
            (Backend::Process, NetworkMode::None) => NetworkMode::None,
            (Backend::Process, _) if !crate::rootlesskit::is_real_root() => NetworkMode::Host,
            (_, m) => m.clone(),
        };
        network::check_ports(&self.dirs, &agent.spec.ports)?;
        self.check_published_ports(&id, backend, &agent.spec.ports)?;
        let hostname = agent.spec.hostname.clone().unwrap_or_else(|| name.clone());
        // A process with no network or the host's makes no namespace here (it unshares its
        // own for `none`).
        let attaches = backend == Backend::Containerd
            || !matches!(mode, NetworkMode::Host | NetworkMode::None);
        let attachment: Option<Attachment> = if attaches {
            let a = network::attach(
                &self.dirs,
                &AttachRequest {
                    container_id: &id,
                    name: &name,
                    network: &mode,
                    ports: &agent.spec.ports,
                    dns: &agent.spec.network.dns,
                    dns_search: &agent.spec.network.dns_search,
                    dns_options: &agent.spec.network.dns_options,
                    ip: agent.spec.network.ip,
                    hostname: &hostname,
                    dns_proxy: crate::egress::resolver_for(&agent, &mode),
                },
            )?;
            undo.network = true;
            Some(a)
        } else {
            None
        };
        if !agent.spec.services.is_empty() {
            let vars = network::resolve_services(
                &self.dirs,
                &mode,
                &agent.spec.services,
                service_timeout()?,
            )?;
            for (k, v) in vars {
                agent.spec.environment.push(agent::EnvVar {
                    name: k,
                    source: agent::EnvSource::Value { value: v },
                });
            }
        }

        // Named volumes live in aac's state (made on first use, docker's way); `-v /path`
        // gets an anonymous one of its own. A shared lock keeps `volume rm` from taking one
        // away before the record that uses it is written.
        let _volumes_guard = if agent
            .spec
            .volumes
            .iter()
            .any(|v| v.kind == VolumeType::Volume)
        {
            Some(crate::volumes::lock(&self.dirs, false)?)
        } else {
            None
        };
        for v in agent.spec.volumes.iter_mut() {
            if v.kind == VolumeType::Volume {
                let anonymous = v.source.is_empty();
                if anonymous {
                    v.source = crate::volumes::anonymous_name()?;
                }
                let existed = crate::volumes::path(&self.dirs, &v.source).exists();
                crate::volumes::create(&self.dirs, &v.source, Default::default(), anonymous)?;
                if anonymous && !existed {
                    undo.volumes.push(v.source.clone());
                }
            }
        }

        let cgroup = match backend {
            Backend::Containerd => CgroupPlan::for_containerd(&id),
            Backend::Process => CgroupPlan::for_process(&id),
        };
        let mut spec = self.build_spec(
            &agent,
            &id,
            &name,
            image_config.as_ref(),
            &cgroup,
            attachment.as_ref(),
            tty,
        )?;
        if backend == Backend::Process && mode == NetworkMode::Host {
            // The process backend's namespaces follow the mode it really uses.
            if let Some(ns) = spec
                .linux_mut()
                .as_mut()
                .and_then(|l| l.namespaces_mut().as_mut())
            {
                ns.retain(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Network);
            }
        }
        let warnings: Vec<String> = cgroup
            .not_enforced(Some(&builder::resources_of(&agent)?))
            .iter()
            .map(ToString::to_string)
            .collect();
        let command = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        // Secrets: mounts of the agent's secrets tmpfs, and the wrapper init that hands a
        // containerd agent its secret environment; paths only, never a value.
        crate::secrets::delivery::patch_spec(&mut spec, &self.dirs, &id, &agent, backend)?;
        let ports: Vec<PortSpec> = match &attachment {
            Some(a) => a
                .ports
                .iter()
                .map(|p| PortSpec {
                    container: p.container_port,
                    host: Some(p.host_port),
                    protocol: p.protocol,
                    host_ip: p.host_ip,
                })
                .collect(),
            None => agent.spec.ports.clone(),
        };
        let rec = ContainerRecord {
            id: id.clone(),
            name: name.clone(),
            backend,
            image: (backend == Backend::Containerd).then(|| image_ref.clone()),
            command,
            created: format_time(SystemTime::now()),
            agent,
            spec,
            cgroup,
            ports,
            containerd: (backend == Backend::Containerd).then(|| self.containerd.clone()),
            auto_remove,
            auto_start,
            stdin: interactive,
            tty,
        };
        // No status file yet: a missing one reads as "created".
        rec.save(&self.dirs)?;
        undo.armed = false;
        let mut created = Event::new(EventType::Create, &rec.id, &rec.name);
        if let Some(image) = &rec.image {
            created = created.with("image", image);
        }
        self.event(created);
        let created = Created {
            container: Container {
                status: record::load_status(&self.dirs, &id).unwrap_or_default(),
                rec,
            },
            warnings,
        };
        Ok((created, creating))
    }

    /// The OCI spec a container of `agent` gets.
    #[allow(clippy::too_many_arguments)]
    fn build_spec(
        &self,
        agent: &Agent,
        id: &str,
        name: &str,
        image: Option<&ImageConfig>,
        cgroup: &CgroupPlan,
        attachment: Option<&Attachment>,
        terminal: bool,
    ) -> Result<Spec> {
        let host = HostLimits::current();
        let volumes_dir = self.dirs.volumes_dir();
        let ctx = SpecContext {
            container_id: id,
            name,
            image,
            host: &host,
            cgroup,
            volumes_dir: &volumes_dir,
            netns_path: attachment.and_then(|a| a.netns_path.as_deref()),
            extra_mounts: attachment.map(|a| a.mounts.clone()).unwrap_or_default(),
            terminal,
        };
        Ok(builder::build(agent, &ctx)?)
    }

    /// The spec `aac run` would build for `agent` under `name` (`aac spec`): the image's
    /// settings when containerd has it, the cgroup of a containerd container, no network
    /// attachment; secret environment variables are not in it (they never are), `-e` values
    /// whose names look secret show `***`.
    pub async fn preview_spec(&self, agent: &Agent, name: &str) -> Result<Spec> {
        let image = match self.client().await {
            Ok(c) => c.image_config(&agent.image_ref()).await.ok(),
            Err(_) => None,
        };
        let host = HostLimits::current();
        let volumes_dir = self.dirs.volumes_dir();
        let cgroup = CgroupPlan::for_containerd(name);
        let ctx = SpecContext {
            container_id: name,
            name,
            image: image.as_ref(),
            host: &host,
            cgroup: &cgroup,
            volumes_dir: &volumes_dir,
            netns_path: None,
            extra_mounts: Vec::new(),
            terminal: false,
        };
        match builder::build(agent, &ctx) {
            Ok(mut s) => {
                crate::secrets::redact::spec(&mut s);
                Ok(s)
            }
            Err(builder::SpecError::NoCommand) => Err(EngineError::Invalid(format!(
                "the agent has no command: set spec.command, or import or pull its image {} so its entrypoint is known",
                agent.image_ref()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Append an event to the journal; never fatal.
    pub(crate) fn event(&self, e: Event) {
        if let Err(err) = crate::events::append(&self.dirs, &e) {
            tracing::warn!("recording event: {err}");
        }
    }
}
