//! `container prune`: every container that does not run (exited, or created and never
//! started) removed, as `rm` would.

use crate::status::Phase;

use super::{Engine, Result};

impl Engine {
    /// Remove every stopped container; returns the IDs removed, and the errors of those that
    /// could not be (by name).
    pub async fn prune_containers(&self) -> Result<(Vec<String>, Vec<(String, String)>)> {
        let mut removed = Vec::new();
        let mut failed = Vec::new();
        for c in self.all()? {
            let c = self.ensure_monitor(c).await;
            let stopped = matches!(c.status.phase, Phase::Exited | Phase::Created)
                && !self.dirs.creating(&c.rec.id)
                && !crate::monitor::monitor_running(&self.dirs, &c.rec.id)
                && !self.is_running(&c).await;
            if !stopped {
                continue;
            }
            match self.remove(&c, false).await {
                Ok(()) => removed.push(c.rec.id.clone()),
                Err(e) => failed.push((c.rec.name.clone(), e.to_string())),
            }
        }
        Ok((removed, failed))
    }
}
