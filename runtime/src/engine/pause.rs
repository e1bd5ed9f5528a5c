//! `pause`/`unpause`: the cgroup freezer stops every process of a container without a signal
//! (containerd: Tasks.Pause/Resume through runc; the process backend: aac's own cgroup, v1
//! `freezer.state` or v2 `cgroup.freeze`).

use crate::events::{Event, EventType};

use super::{Container, Engine, EngineError, Result};

impl Engine {
    /// Whether the container's processes are frozen now.
    pub fn is_paused(&self, c: &Container) -> bool {
        c.status.phase == crate::status::Phase::Running && c.rec.cgroup.frozen() == Some(true)
    }

    /// Freeze a running container.
    pub async fn pause(&self, c: &Container) -> Result<()> {
        let c = self.ensure_monitor(c.clone()).await;
        if !self.is_running(&c).await {
            return Err(EngineError::State(format!(
                "container {} is not running",
                c.rec.name
            )));
        }
        if self.is_paused(&c) {
            return Err(EngineError::State(format!(
                "container {} is already paused",
                c.rec.name
            )));
        }
        self.task(&c).await?.pause().await?;
        self.event(Event::new(EventType::Pause, &c.rec.id, &c.rec.name));
        Ok(())
    }

    /// Thaw a paused container.
    pub async fn unpause(&self, c: &Container) -> Result<()> {
        if !self.is_paused(c) {
            return Err(EngineError::State(format!(
                "container {} is not paused",
                c.rec.name
            )));
        }
        self.task(c).await?.resume().await?;
        self.event(Event::new(EventType::Unpause, &c.rec.id, &c.rec.name));
        Ok(())
    }

    /// Thaw a container before it is signalled (a frozen process does not act on SIGTERM).
    pub(crate) async fn thaw_for_signal(&self, c: &Container) {
        if self.is_paused(c) {
            if let Ok(t) = self.task(c).await {
                if let Err(e) = t.resume().await {
                    tracing::warn!("unpausing {}: {e}", c.rec.name);
                }
            }
        }
    }
}
