//! `update`: change the limits (CPU, memory, pids) and the restart policy of a container
//! while it runs, as `docker update` does. containerd applies new limits through
//! `Tasks.Update` (runc rewrites the cgroup); a host process gets them written into its
//! cgroup's files. The record keeps what was asked, for `inspect` and later starts.

use std::path::Path;

use crate::agent::{Bytes, MilliCpu, RestartPolicy};
use crate::cgroups::CgroupLayout;
use crate::events::{Event, EventType};
use crate::record::Backend;
use crate::spec::builder::CPU_PERIOD_US;

use super::{Container, Engine, EngineError, Result};

/// What to change; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateRequest {
    pub cpus: Option<MilliCpu>,
    pub memory: Option<Bytes>,
    /// `Some(None)`: unlimited.
    pub pids: Option<Option<i64>>,
    pub restart: Option<RestartPolicy>,
}

impl UpdateRequest {
    pub fn is_empty(&self) -> bool {
        self.cpus.is_none()
            && self.memory.is_none()
            && self.pids.is_none()
            && self.restart.is_none()
    }

    fn limits(&self) -> bool {
        self.cpus.is_some() || self.memory.is_some() || self.pids.is_some()
    }

    /// The OCI resources to apply: only what changes.
    fn resources(&self) -> serde_json::Value {
        let mut r = serde_json::Map::new();
        if let Some(c) = self.cpus {
            r.insert(
                "cpu".into(),
                serde_json::json!({ "quota": cpu_quota(c), "period": CPU_PERIOD_US }),
            );
        }
        if let Some(m) = self.memory {
            r.insert(
                "memory".into(),
                serde_json::json!({ "limit": i64::try_from(m.0).unwrap_or(i64::MAX) }),
            );
        }
        if let Some(p) = self.pids {
            r.insert(
                "pids".into(),
                serde_json::json!({ "limit": p.unwrap_or(-1) }),
            );
        }
        serde_json::Value::Object(r)
    }
}

fn cpu_quota(c: MilliCpu) -> i64 {
    i64::try_from((c.0.saturating_mul(CPU_PERIOD_US) / 1000).max(1000)).unwrap_or(i64::MAX)
}

/// Write one cgroup file.
fn write_file(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value)
        .map_err(|e| EngineError::Invalid(format!("writing {value:?} to {}: {e}", path.display())))
}

/// New limits into the cgroup files of a host process (v1 or v2).
fn write_cgroup(layout: &CgroupLayout, cgroup_path: &str, req: &UpdateRequest) -> Result<()> {
    let dir = |controller: &str| -> Result<(std::path::PathBuf, bool)> {
        layout
            .controller_dir(controller, cgroup_path)?
            .ok_or_else(|| EngineError::State(format!("no {controller} cgroup for {cgroup_path}")))
    };
    if let Some(m) = req.memory {
        let (d, v2) = dir("memory")?;
        if v2 {
            write_file(&d.join("memory.max"), &m.0.to_string())?;
        } else {
            write_file(&d.join("memory.limit_in_bytes"), &m.0.to_string())?;
        }
    }
    if let Some(c) = req.cpus {
        let (d, v2) = dir("cpu")?;
        if v2 {
            write_file(
                &d.join("cpu.max"),
                &format!("{} {CPU_PERIOD_US}", cpu_quota(c)),
            )?;
        } else {
            write_file(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write_file(&d.join("cpu.cfs_quota_us"), &cpu_quota(c).to_string())?;
        }
    }
    if let Some(p) = req.pids {
        let (d, _) = dir("pids")?;
        let v = p.map(|n| n.to_string()).unwrap_or_else(|| "max".into());
        write_file(&d.join("pids.max"), &v)?;
    }
    Ok(())
}

impl Engine {
    /// Apply `req` to a container: live when it runs, recorded either way.
    pub async fn update(&self, c: &Container, req: &UpdateRequest) -> Result<()> {
        if req.is_empty() {
            return Err(EngineError::Invalid(
                "nothing to update: give --cpus, --memory, --pids-limit or --restart".into(),
            ));
        }
        if let Some(cpu) = req.cpus {
            let cpus = crate::stats::online_cpus();
            if cpu.0 == 0 || cpu.0 > u64::from(cpus) * 1000 {
                return Err(EngineError::Invalid(format!(
                    "range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"
                )));
            }
        }
        if let (Some(m), Some(r)) = (req.memory, c.rec.agent.spec.resources.requests.memory) {
            if m.0 < r.0 {
                return Err(EngineError::Invalid(format!(
                    "the memory limit {} is below the memory request {}",
                    m.0, r.0
                )));
            }
        }
        let c = self.ensure_monitor(c.clone()).await;
        if req.limits() && self.is_running(&c).await {
            match c.rec.backend {
                Backend::Containerd => self.update_task(&c, req).await?,
                Backend::Process => {
                    let path = c.rec.cgroup.fs_path.as_deref().ok_or_else(|| {
                        EngineError::State(format!(
                            "container {} has no cgroup of its own: its limits cannot change",
                            c.rec.name
                        ))
                    })?;
                    write_cgroup(&CgroupLayout::detect()?, path, req)?;
                }
            }
        }
        // Recorded: the monitor reads the restart policy from here at the next exit.
        let mut rec = crate::record::ContainerRecord::load(&self.dirs, &c.rec.id)?;
        let limits = &mut rec.agent.spec.resources.limits;
        if let Some(cpu) = req.cpus {
            limits.cpu = Some(cpu);
        }
        if let Some(m) = req.memory {
            limits.memory = Some(m);
        }
        if let Some(p) = req.pids {
            limits.pids = p;
        }
        if let Some(r) = req.restart {
            rec.agent.spec.restart_policy = r;
        }
        if req.limits() {
            if let Ok(res) = crate::spec::builder::resources_of(&rec.agent) {
                if let Some(linux) = rec.spec.linux_mut() {
                    linux.set_resources(Some(res));
                }
            }
        }
        rec.save(&self.dirs)?;
        let mut e = Event::new(EventType::Update, &c.rec.id, &c.rec.name);
        if let Some(cpu) = req.cpus {
            e = e.with("cpus", format!("{:.2}", cpu.0 as f64 / 1000.0));
        }
        if let Some(m) = req.memory {
            e = e.with("memory", m.0);
        }
        if let Some(p) = req.pids {
            e = e.with("pidsLimit", p.unwrap_or(-1));
        }
        if let Some(r) = req.restart {
            e = e.with("restart", r);
        }
        self.event(e);
        Ok(())
    }

    /// containerd's Tasks.Update with the changed OCI resources.
    async fn update_task(&self, c: &Container, req: &UpdateRequest) -> Result<()> {
        let target = c.rec.containerd.as_ref().ok_or_else(|| {
            EngineError::State(format!("container {} names no containerd", c.rec.name))
        })?;
        let client = crate::containerd::Client::connect(&target.address, &target.namespace).await?;
        let value = serde_json::to_vec(&req.resources())
            .map_err(|e| EngineError::Invalid(format!("encoding the resources: {e}")))?;
        let msg = containerd_client::services::v1::UpdateTaskRequest {
            container_id: c.rec.id.clone(),
            resources: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                value,
            }),
            annotations: Default::default(),
        };
        client
            .tasks()
            .update(client.req(msg))
            .await
            .map_err(|s| crate::containerd::CtrdError::grpc("Tasks.Update", s))?;
        Ok(())
    }
}
