//! `start` of a container that ran before, and `restart`: the same container (name, ID,
//! filesystem, record) started again by a new monitor; it counts as a restart
//! (`RestartCount`).

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::network::{self, AttachRequest};
use crate::record;
use crate::status::Phase;

use super::start::launch_monitor;
use super::{Container, Engine, EngineError, Result, Started};

impl Engine {
    /// Start a container whatever it did before: a created one for the first time
    /// ([`Engine::start`]), an exited one again. A running one is refused.
    pub async fn start_any(&self, c: &Container) -> Result<Started> {
        let c = self.ensure_monitor(self.reload(c)).await;
        match c.status.phase {
            Phase::Created => self.start(&c).await,
            Phase::Exited => self.start_again(&c).await,
            Phase::Running | Phase::Restarting => Err(EngineError::State(format!(
                "container {} is already running",
                c.rec.name
            ))),
        }
    }

    /// Stop a container (SIGTERM, SIGKILL after `grace`) when it runs, then start it again.
    pub async fn restart(&self, c: &Container, grace: Duration) -> Result<Started> {
        let c = self.ensure_monitor(self.reload(c)).await;
        if c.is_up() {
            self.stop(&c, grace, Signal::SIGTERM as i32).await?;
        }
        let c = self.reload(&c);
        match c.status.phase {
            Phase::Created => self.start(&c).await,
            _ => self.start_again(&c).await,
        }
    }

    /// Start an exited container again: its network back, then a new monitor that takes it
    /// for a restart.
    async fn start_again(&self, c: &Container) -> Result<Started> {
        let id = c.rec.id.clone();
        // The monitor of the last run releases its network after recording the exit: let it
        // finish first.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while crate::monitor::monitor_running(&self.dirs, &id) {
            if std::time::Instant::now() > deadline {
                return Err(EngineError::State(format!(
                    "container {}: the monitor of its last run is still running",
                    c.rec.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let marker = record::stop_marker(&self.dirs, &id);
        match std::fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::io::io_err("removing", &marker)(e).into()),
        }
        // The spec names the network namespace aac made for it: make it again.
        let joins_netns = c
            .rec
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| {
                ns.iter().any(|n| {
                    n.typ() == oci_spec::runtime::LinuxNamespaceType::Network && n.path().is_some()
                })
            });
        if joins_netns && self.attachment(c).is_none() {
            let agent = &c.rec.agent;
            let mode = agent.spec.network.mode.clone();
            let hostname = agent
                .spec
                .hostname
                .clone()
                .unwrap_or_else(|| c.rec.name.clone());
            // The host ports it had: a published port keeps its number.
            network::attach(
                &self.dirs,
                &AttachRequest {
                    container_id: &id,
                    name: &c.rec.name,
                    network: &mode,
                    ports: &c.rec.ports,
                    dns: &agent.spec.network.dns,
                    dns_search: &agent.spec.network.dns_search,
                    dns_options: &agent.spec.network.dns_options,
                    ip: agent.spec.network.ip,
                    hostname: &hostname,
                    dns_proxy: crate::egress::resolver_for(agent, &mode),
                },
            )?;
        }
        let mut st = record::load_status(&self.dirs, &id)?;
        st.phase = Phase::Restarting;
        st.pid = None;
        st.monitor_pid = None;
        st.stopped_by_user = false;
        record::save_status_with(&self.dirs, &id, &st, c.rec.durability())?;
        let dirs = self.dirs.clone();
        let launch_id = id.clone();
        let launched = tokio::task::spawn_blocking(move || launch_monitor(&dirs, &launch_id))
            .await
            .map_err(|e| EngineError::State(format!("starting the monitor: {e}")));
        let (outcome, link) = match launched {
            Ok(Ok(v)) => v,
            Ok(Err(e)) | Err(e) => {
                // No monitor runs: record the container as exited again, network released.
                st.phase = Phase::Exited;
                let _ = record::save_status(&self.dirs, &id, &st);
                let _ = network::detach(&self.dirs, &id);
                return Err(e);
            }
        };
        if !outcome.ok {
            return Err(EngineError::Start {
                code: outcome.code,
                message: outcome.error,
            });
        }
        Ok(Started {
            pid: outcome.pid,
            warnings: outcome.warnings,
            link,
        })
    }
}
