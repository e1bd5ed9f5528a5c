//! A container whose monitor died (`kill -9`, an OOM kill of aac-shim) gets a new one, which
//! adopts the running main process (or collects its exit and applies the restart policy).
//! Every verb that looks at a running container goes through [`Engine::ensure_monitor`].

use std::time::SystemTime;

use crate::logs;
use crate::monitor;
use crate::record;
use crate::status::Phase;

use super::start::launch_monitor;
use super::{Container, Engine, Result};

impl Engine {
    /// Start a new monitor for a running or restarting container without one; returns the
    /// container as it is afterwards. One caller at a time re-attaches (`reattach.lock`).
    pub async fn ensure_monitor(&self, c: Container) -> Container {
        if !c.is_up() || monitor::monitor_running(&self.dirs, &c.rec.id) {
            return c;
        }
        let run_dir = self.run_dir(&c.rec.id);
        let guard = crate::state::private_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(run_dir.join("reattach.lock"))
            .ok()
            .and_then(|f| nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok());
        let c = self.reload(&c);
        if !c.is_up() || monitor::monitor_running(&self.dirs, &c.rec.id) {
            return c;
        }
        if record::stop_marker(&self.dirs, &c.rec.id).exists() && !self.is_running(&c).await {
            // Stopped while nobody watched: record that, do not bring it back.
            if let Err(err) = self.settle_without_monitor(&c).await {
                tracing::warn!("recording the exit of {}: {err}", c.rec.name);
            }
            return self.reload(&c);
        }
        let dirs = self.dirs.clone();
        let id = c.rec.id.clone();
        match tokio::task::spawn_blocking(move || launch_monitor(&dirs, &id)).await {
            Ok(Ok((o, _link))) if o.ok => {
                tracing::info!("re-attached a monitor to {} (pid {})", c.rec.name, o.pid)
            }
            Ok(Ok((o, _link))) => {
                tracing::warn!("re-attaching a monitor to {}: {}", c.rec.name, o.error)
            }
            Ok(Err(err)) => tracing::warn!("re-attaching a monitor to {}: {err}", c.rec.name),
            Err(err) => tracing::warn!("re-attaching a monitor to {}: {err}", c.rec.name),
        }
        drop(guard);
        self.reload(&c)
    }

    /// Whether the container's main process runs now, asking the backend when the monitor
    /// is gone.
    pub async fn is_running(&self, c: &Container) -> bool {
        if c.status.phase != Phase::Running {
            return false;
        }
        if self.monitor_running(c) {
            return true;
        }
        self.task_running(c).await
    }

    /// Whether the backend runs the main process now, whatever the records say.
    pub(crate) async fn task_running(&self, c: &Container) -> bool {
        match self.task(c).await {
            Ok(t) => t.is_running().await,
            Err(_) => false,
        }
    }

    /// Finish the bookkeeping of an exited container whose monitor is gone.
    pub(crate) async fn settle_without_monitor(&self, c: &Container) -> Result<()> {
        if self.monitor_running(c) {
            return Ok(());
        }
        let mut st = record::load_status(&self.dirs, &c.rec.id)?;
        if st.phase == Phase::Exited {
            return Ok(());
        }
        if let Ok(task) = self.task(c).await {
            if let Ok(Some(code)) = task.cleanup().await {
                st.exit_code = Some(code);
            }
        }
        st.phase = Phase::Exited;
        st.pid = None;
        st.monitor_pid = None;
        st.stopped_by_user = true;
        st.finished_at = Some(logs::format_time(SystemTime::now()));
        record::save_status(&self.dirs, &c.rec.id, &st)?;
        crate::network::detach(&self.dirs, &c.rec.id)?;
        Ok(())
    }
}
