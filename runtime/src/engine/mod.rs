//! The container lifecycle as a library: one verb per file (create, start, run, stop, kill,
//! remove, exec, inspect/list, wait, logs, events, stats, prune), used by the `aac` CLI and by
//! any other process that drives containers. The engine writes every record and lifecycle
//! event the CLI used to; callers parse their input, call a verb and show the result.
//!
//! ```text
//! agent model ──► create (name, network, spec, record) ──► start (monitor: aac-shim)
//!                                                              └─► backend::Task (containerd | process)
//! ```

mod adopt;
mod container_prune;
mod copy;
mod create;
mod error;
mod events;
mod exec;
mod images;
mod inspect;
mod kill;
mod logs;
mod pause;
mod port;
mod prune;
mod remove;
mod rename;
mod restart;
mod run;
mod secrets;
mod session;
mod size;
mod start;
mod stats;
mod stop;
mod up;
mod update;
mod volumes;
mod wait;

use std::path::PathBuf;

pub use copy::{copy_helper_main, HostSide, COPY_HELPER_ARG};
pub use create::{CreateOptions, Created, RuntimeChoice};
pub use error::EngineError;
pub use images::{DiskUsage, ImageInspect, ImagePruneReport, UsageLine};
pub use kill::parse_signal;
pub use port::PortMapping;
pub use prune::PruneReport;
pub use secrets::{SecretUpdate, SecretUser};
pub use size::ContainerSize;
pub use start::{AsyncMonitorLink, MonitorLink, Started};
pub use up::{
    is_scaled, replica_bounds, supervisor_binary, windows, AgentGroup, SupervisorReady, UpOptions,
    UpReport,
};
pub use update::UpdateRequest;
pub use wait::WaitCondition;

use crate::backend::{self, Task};
use crate::containerd::{self, Client};
use crate::record::{self, ContainerRecord, ContainerdTarget};
use crate::state::StateDirs;
use crate::status::{ContainerStatus, Phase};

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Where containerd is, as the caller says (`--address`, `--namespace`); `None` for the
/// defaults (`$CONTAINERD_ADDRESS`, `$AAC_NAMESPACE`, ...).
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    pub address: Option<PathBuf>,
    pub namespace: Option<String>,
}

/// Who hears what the engine decided on the caller's behalf (`containerd is not reachable;
/// using the process backend`).
pub type Notify = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// The engine: aac's state folders and the containerd to use for new containers.
#[derive(Clone)]
pub struct Engine {
    dirs: StateDirs,
    containerd: ContainerdTarget,
    notify: Option<Notify>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dirs", &self.dirs)
            .field("containerd", &self.containerd)
            .finish()
    }
}

/// A container as the engine knows it: what was asked, and what happened.
#[derive(Debug, Clone)]
pub struct Container {
    pub rec: ContainerRecord,
    pub status: ContainerStatus,
}

impl Container {
    pub fn id(&self) -> &str {
        &self.rec.id
    }

    pub fn name(&self) -> &str {
        &self.rec.name
    }

    /// Running, or waiting for a restart.
    pub fn is_up(&self) -> bool {
        matches!(self.status.phase, Phase::Running | Phase::Restarting)
    }
}

impl Engine {
    /// The engine for this user: its state folders (created 0700, refused when unsafe) and
    /// containerd target.
    pub fn new(config: EngineConfig) -> Result<Engine> {
        Ok(Engine::with_dirs(StateDirs::from_env()?, config))
    }

    /// The engine on given state folders (tests, other tools).
    pub fn with_dirs(dirs: StateDirs, config: EngineConfig) -> Engine {
        Engine {
            dirs,
            containerd: ContainerdTarget {
                address: containerd::default_address(config.address.as_deref()),
                namespace: containerd::default_namespace(config.namespace.as_deref()),
            },
            notify: None,
        }
    }

    /// Tell `notify` what the engine decides on the caller's behalf, when it decides it.
    pub fn with_notices(mut self, notify: Notify) -> Engine {
        self.notify = Some(notify);
        self
    }

    pub(crate) fn notice(&self, text: &str) {
        match &self.notify {
            Some(n) => n(text),
            None => tracing::info!("{text}"),
        }
    }

    pub fn dirs(&self) -> &StateDirs {
        &self.dirs
    }

    /// The containerd new containers go to.
    pub fn containerd_target(&self) -> &ContainerdTarget {
        &self.containerd
    }

    /// Connect to that containerd; the error says where it looked and how to start it.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::connect(&self.containerd.address, &self.containerd.namespace).await?)
    }

    /// The container `name_or_id` names (a name, an ID or a unique ID prefix), as recorded.
    pub fn load(&self, name_or_id: &str) -> Result<Container> {
        let id = self.dirs.resolve(name_or_id)?;
        self.load_id(&id)
    }

    fn load_id(&self, id: &str) -> Result<Container> {
        Ok(Container {
            rec: ContainerRecord::load(&self.dirs, id)?,
            status: record::load_status(&self.dirs, id)?,
        })
    }

    /// The status as it is now.
    fn reload(&self, c: &Container) -> Container {
        Container {
            rec: c.rec.clone(),
            status: record::load_status(&self.dirs, &c.rec.id).unwrap_or_else(|_| c.status.clone()),
        }
    }

    /// The executor of a container (its backend, chosen once, here).
    async fn task(&self, c: &Container) -> Result<Box<dyn Task>> {
        Ok(backend::open(&self.dirs, &c.rec).await?)
    }

    /// Every container with a record.
    fn all(&self) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        for id in self.dirs.container_ids()? {
            // A record removed meanwhile (an `--rm` container ending) is skipped.
            if let Ok(c) = self.load_id(&id) {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Where a container's log files are.
    pub fn log_dir(&self, c: &Container) -> PathBuf {
        self.dirs.container_dir(&c.rec.id)
    }

    /// The container's volatile folder (FIFOs, locks).
    fn run_dir(&self, id: &str) -> PathBuf {
        self.dirs.container_run_dir(id)
    }
}
