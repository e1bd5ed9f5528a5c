//! `prune`: what a fault left behind, collected. A CLI killed half-way, a containerd killed
//! during a start, a full disk: each can leave a name without a record, a folder without a
//! record, a network attachment, a cgroup, or containerd objects with aac's labels (a
//! container, its task and runc's waiting init, a snapshot, a lease). Only what belongs to
//! no record and to no creation under way (its creation lock is free) is removed; a container
//! that `run` created but never got to start is one of them.

use std::time::Duration;

use serde::Serialize;

use crate::containerd::Client;
use crate::record::ContainerRecord;
use crate::status::Phase;

use super::{Container, Engine, Result};

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// Records of containers `run` created but never started (its client died).
    pub abandoned: Vec<String>,
    /// Names that pointed at no container.
    pub names: Vec<String>,
    /// Container folders without a record.
    pub folders: Vec<String>,
    /// Network attachments of containers without a record.
    pub networks: Vec<String>,
    /// containerd containers with aac's labels and no record (with their tasks and snapshots).
    pub containers: Vec<String>,
    /// Active snapshots named like an aac container without one.
    pub snapshots: Vec<String>,
    /// Leases aac took for creations that are over.
    pub leases: Vec<String>,
    /// Temporary files of writers killed before they renamed them.
    pub temp_files: Vec<String>,
}

impl PruneReport {
    pub fn is_empty(&self) -> bool {
        *self == PruneReport::default()
    }
}

/// A 64-hex-digit container ID.
fn looks_like_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Engine {
    /// Whether `id` belongs to a container alive in aac's eyes: it has a record (and is not
    /// an abandoned `run`), or its creation is under way.
    fn live(&self, id: &str) -> bool {
        self.dirs.creating(id) || self.dirs.has_record(id)
    }

    /// A record `run` made whose start never happened: created, never started, no monitor,
    /// no creation under way.
    fn abandoned(&self, c: &Container) -> bool {
        c.rec.auto_start
            && c.status.phase == Phase::Created
            && !self.dirs.creating(&c.rec.id)
            && !crate::monitor::monitor_running(&self.dirs, &c.rec.id)
    }

    /// Collect aac's own leftovers (names, folders, attachments, cgroups of known IDs). Cheap:
    /// no containerd call; run before verbs that list or create.
    pub fn collect_local(&self) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        for c in self.all()? {
            if self.abandoned(&c) {
                tracing::info!(container = %c.rec.name, "removing a container whose start never happened");
                if let Err(e) = c.rec.cgroup.remove() {
                    tracing::debug!("{}: {e}", c.rec.name);
                }
                self.discard(&c)?;
                report.abandoned.push(c.rec.id.clone());
            }
        }
        for name in self.dirs.stale_names()? {
            if self.dirs.remove_stale_name(&name)? {
                report.names.push(name);
            }
        }
        for id in self.dirs.orphan_ids()? {
            if self.dirs.creating(&id) {
                continue;
            }
            // A process-backend cgroup made before the record: the plan it would have had.
            let plan = crate::cgroups::CgroupPlan::for_process(&id);
            if let Err(e) = plan.remove() {
                tracing::debug!("{id}: {e}");
            }
            crate::network::detach(&self.dirs, &id)?;
            self.dirs.remove_container(&id)?;
            report.folders.push(id);
        }
        let mut live = self.dirs.container_ids()?;
        // A creation under way is live before any record of it exists: its network namespace
        // and attachment are made before the container's record, and `live` is read before
        // the network lock is taken, so an attachment made meanwhile must not look abandoned.
        for id in self.dirs.orphan_ids()? {
            if self.dirs.creating(&id) {
                live.push(id);
            }
        }
        for r in crate::network::list_attachments(&self.dirs)? {
            if self.dirs.creating(&r.container_id) {
                live.push(r.container_id);
            }
        }
        report.networks = crate::network::gc(&self.dirs, &live)?;
        let mut record_dirs = self.dirs.record_dirs();
        record_dirs.push(crate::network::attachments_dir(&self.dirs));
        for dir in record_dirs {
            for f in crate::state::sweep_stale_temps(&dir)? {
                report.temp_files.push(f.display().to_string());
            }
        }
        Ok(report)
    }

    /// Collect everything a fault left behind: [`Engine::collect_local`], then containerd's
    /// side (containers with aac's labels and no record, their tasks and snapshots, and the
    /// leases of creations that are over) when containerd answers.
    pub async fn prune(&self) -> Result<PruneReport> {
        let mut report = self.collect_local()?;
        if let Ok(client) = self.client().await {
            self.collect_containerd(&client, &mut report).await?;
        }
        Ok(report)
    }

    async fn collect_containerd(&self, client: &Client, report: &mut PruneReport) -> Result<()> {
        let records: Vec<ContainerRecord> = self.all()?.into_iter().map(|c| c.rec).collect();
        for c in client.list_containers().await? {
            if !c.labels.contains_key("dev.aac.name") || self.live(&c.id) {
                continue;
            }
            // A runc init waiting in "created", or a task that ran: kill, then delete.
            let _ = client
                .kill(&c.id, nix::sys::signal::Signal::SIGKILL as u32, true)
                .await;
            for _ in 0..50 {
                match client.delete(&c.id).await {
                    Ok(_) => break,
                    Err(e) if e.is_not_found() => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            report.containers.push(c.id);
        }
        let existing: Vec<String> = client
            .list_containers()
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        for s in client.list_snapshots().await? {
            if s.kind != "committed"
                && looks_like_id(&s.name)
                && !self.live(&s.name)
                && !existing.contains(&s.name)
            {
                client.remove_snapshot(&s.name).await?;
                report.snapshots.push(s.name);
            }
        }
        for (lease, labels) in client.list_leases().await? {
            let Some(id) = labels.get("aac.dev/for") else {
                continue;
            };
            // A creation is over when no record names it, or its monitor (the creator of the
            // containerd side) is gone.
            let creating = self.dirs.creating(id)
                || (records.iter().any(|r| &r.id == id)
                    && crate::monitor::monitor_running(&self.dirs, id));
            if !creating {
                client.delete_lease(&lease).await?;
                report.leases.push(lease);
            }
        }
        Ok(())
    }
}
