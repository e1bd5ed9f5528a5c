//! `run`: create and start, as one step that leaves nothing behind when the start fails.

use super::{CreateOptions, Created, Engine, Result, Started};

impl Engine {
    /// Create a container and start it. When the first start fails (the command is missing,
    /// a port is taken, containerd went away), everything made for it is removed again and
    /// the error says why (exit code 126/127 when the command could not run).
    pub async fn run(&self, opts: CreateOptions) -> Result<(Created, Started)> {
        self.run_with(opts, false).await
    }

    /// [`Engine::run`] for a caller that follows the container in the foreground until it
    /// exits (and, with `--rm`, is removed): such a container may be monitored from this
    /// process, without an aac-shim of its own (see `start::monitor_in_process`).
    pub async fn run_attached(&self, opts: CreateOptions) -> Result<(Created, Started)> {
        self.run_with(opts, true).await
    }

    async fn run_with(&self, opts: CreateOptions, attached: bool) -> Result<(Created, Started)> {
        // The creation lock stays held until the monitor runs (and holds its own lock), so a
        // concurrent prune never takes the not-yet-started container for an abandoned one.
        let (created, creating) = self.create_container(opts, true).await?;
        let started = self.start_with(&created.container, attached).await;
        drop(creating);
        match started {
            Ok(started) => Ok((created, started)),
            Err(e) => {
                // The monitor rolled back the backend's side; drop ours. A runtime cut off
                // half-way (containerd killed during Tasks.Create) may leave the cgroup.
                if let Err(re) = created.container.rec.cgroup.remove() {
                    tracing::debug!("{}: {re}", created.container.rec.name);
                }
                if let Err(re) = self.discard(&created.container) {
                    tracing::warn!(
                        "removing {} after a failed start: {re}",
                        created.container.rec.name
                    );
                }
                Err(e)
            }
        }
    }
}
