//! `inspect` and `list`: containers as recorded, with a monitor brought back where one died.

use super::{Container, Engine, Result};

impl Engine {
    /// One container, after [`Engine::ensure_monitor`].
    pub async fn inspect(&self, name_or_id: &str) -> Result<Container> {
        let c = self.load(name_or_id)?;
        Ok(self.ensure_monitor(c).await)
    }

    /// Running containers (every one with `all`), newest first.
    pub async fn list(&self, all: bool) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        for c in self.all()? {
            let c = self.ensure_monitor(c).await;
            if all || c.is_up() {
                out.push(c);
            }
        }
        out.sort_by(|a, b| b.rec.created.cmp(&a.rec.created));
        Ok(out)
    }

    /// Whether a live monitor (an aac-shim, or the `aac run` that monitors its own container)
    /// holds the container's monitor lock.
    pub fn monitor_running(&self, c: &Container) -> bool {
        crate::monitor::monitor_running(&self.dirs, &c.rec.id)
    }

    /// The network attachment of a container, when it has one.
    pub fn attachment(&self, c: &Container) -> Option<crate::network::AttachmentRecord> {
        crate::network::attachment(&self.dirs, &c.rec.id)
            .ok()
            .flatten()
    }
}
