//! `stop`: SIGTERM (or the given signal), SIGKILL after the grace period; never restarted.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::events::{Event, EventType};
use crate::status::Phase;

use super::{Container, Engine, Result};

impl Engine {
    /// Stop a container: write the stop marker (so its monitor applies no restart policy),
    /// send `signal`, then SIGKILL after `grace`; returns once it has exited.
    pub async fn stop(&self, c: &Container, grace: Duration, signal: i32) -> Result<()> {
        self.write_stop_marker(&c.rec.id, b"stop")?;
        // A monitor records the exit (and keeps it from restarting); bring one back if it died.
        let c = self.ensure_monitor(c.clone()).await;
        self.thaw_for_signal(&c).await;
        // Signal whatever runs until the monitor says it exited: a restart that was already
        // under way when the marker appeared gets its signal too.
        let started = Instant::now();
        let mut signalled: Option<(Option<u32>, Instant)> = None;
        let mut killed = false;
        loop {
            let cur = self.reload(&c);
            let monitored = self.monitor_running(&cur);
            let running = self.is_running(&cur).await;
            if cur.status.phase == Phase::Exited || (!monitored && !running) {
                break;
            }
            if running {
                match signalled {
                    Some((pid, at)) if pid == cur.status.pid => {
                        if !killed && at.elapsed() >= grace {
                            self.signal_running(&cur, Signal::SIGKILL as i32).await?;
                            killed = true;
                        }
                    }
                    _ => {
                        self.signal_running(&cur, signal).await?;
                        signalled = Some((cur.status.pid, Instant::now()));
                        killed = signal == Signal::SIGKILL as i32;
                    }
                }
            }
            if started.elapsed() > grace + Duration::from_secs(20) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.settle_without_monitor(&self.reload(&c)).await?;
        self.event(Event::new(EventType::Stop, &c.rec.id, &c.rec.name));
        Ok(())
    }

    /// Signal a container that may exit at any moment: failing because it is already gone
    /// is success.
    async fn signal_running(&self, c: &Container, signal: i32) -> Result<()> {
        match self.signal(c, signal).await {
            Ok(()) => Ok(()),
            Err(err) => {
                if self.task_running(c).await {
                    Err(err)
                } else {
                    Ok(())
                }
            }
        }
    }
}
