//! `wait`: until a container exits; its exit code.

use std::time::{Duration, Instant};

use crate::status::{HealthStatus, Phase};

use super::{Container, Engine, EngineError, Result};

/// docker's `wait --condition`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WaitCondition {
    /// Until it is not running: at once for an exited (or restarting) container; the first
    /// exit of a running one, even when a restart policy starts it again.
    #[default]
    NotRunning,
    /// Until its next exit from now.
    NextExit,
    /// Until it has been removed.
    Removed,
}

impl std::str::FromStr for WaitCondition {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<WaitCondition, String> {
        match s {
            "not-running" => Ok(WaitCondition::NotRunning),
            "next-exit" => Ok(WaitCondition::NextExit),
            "removed" => Ok(WaitCondition::Removed),
            other => Err(format!(
                "{other:?} is not a wait condition (not-running, next-exit, removed)"
            )),
        }
    }
}

impl Engine {
    /// Wait until the container is not running (docker's default condition) and return its
    /// exit code.
    pub async fn wait(&self, c: &Container) -> Result<i32> {
        self.wait_until(c, WaitCondition::NotRunning).await
    }

    /// Wait for `cond` and return the exit code of the exit that ended the wait.
    pub async fn wait_until(&self, c: &Container, cond: WaitCondition) -> Result<i32> {
        let c = self.ensure_monitor(c.clone()).await;
        let first = c.status.finished_at.clone();
        loop {
            if cond == WaitCondition::Removed {
                match self.load_id(&c.rec.id) {
                    Err(_) => {
                        return Ok(crate::record::load_status(&self.dirs, &c.rec.id)
                            .ok()
                            .and_then(|s| s.exit_code)
                            .or(c.status.exit_code)
                            .unwrap_or(0))
                    }
                    Ok(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            let cur = self.reload(&c);
            let st = &cur.status;
            let exited_since = st.finished_at.is_some() && st.finished_at != first;
            let done = match cond {
                WaitCondition::NotRunning => {
                    matches!(st.phase, Phase::Exited | Phase::Restarting) || exited_since
                }
                WaitCondition::NextExit => exited_since,
                WaitCondition::Removed => false,
            };
            if done
                || (st.phase != Phase::Created
                    && !self.monitor_running(&cur)
                    && !self.is_running(&cur).await)
            {
                return Ok(st.exit_code.unwrap_or(0));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until the container's health check passes (at once when it has none); fail with
    /// the last probe's output when it does not within its start period and retries.
    pub async fn wait_healthy(&self, c: &Container) -> Result<()> {
        let Some(h) = &c.rec.agent.spec.health_check else {
            return Ok(());
        };
        let budget =
            h.start_period + (h.interval + h.timeout) * (h.retries + 1) + Duration::from_secs(5);
        let deadline = Instant::now() + budget;
        loop {
            let st = self.reload(c).status;
            let health = st.health.as_ref();
            match (st.phase, health.map(|h| h.status)) {
                (Phase::Running, Some(HealthStatus::Healthy)) => return Ok(()),
                (Phase::Running, Some(HealthStatus::Unhealthy)) | (Phase::Exited, _) => {
                    let last = health
                        .and_then(|h| h.log.last())
                        .map(|p| p.output.trim().to_string())
                        .unwrap_or_default();
                    let why = if st.phase == Phase::Exited {
                        format!(
                            "the container exited with code {}",
                            st.exit_code.unwrap_or(-1)
                        )
                    } else {
                        "the health check failed".to_string()
                    };
                    return Err(EngineError::State(format!(
                        "container {} did not become healthy: {why}; last probe: {last}",
                        c.rec.name
                    )));
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(EngineError::State(format!(
                    "container {} did not become healthy within {}",
                    c.rec.name,
                    humantime::format_duration(budget)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
