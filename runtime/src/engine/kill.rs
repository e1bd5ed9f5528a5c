//! `kill`: send a signal to a container's main process.

use nix::sys::signal::Signal;

use crate::events::{Event, EventType};
use crate::record;

use super::{Container, Engine, EngineError, Result};

/// A signal given by name (`TERM`, `SIGTERM`, case-insensitive) or number.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| EngineError::Invalid(format!("{n} is not a signal")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map(|s| s as i32)
        .map_err(|_| EngineError::Invalid(format!("{s:?} is not a signal")))
}

impl Engine {
    /// Mark a container as stopped by its user (the monitor then applies no restart policy).
    /// On a full disk the file is still created (empty), and its existence is what counts.
    pub(crate) fn write_stop_marker(&self, id: &str, why: &[u8]) -> Result<()> {
        let path = record::stop_marker(&self.dirs, id);
        match crate::state::write_private(&path, why) {
            Ok(()) => Ok(()),
            Err(_) if path.exists() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Send `signal` to the main process of a running container. SIGTERM and SIGKILL count as
    /// a stop by the user (no restart follows).
    pub async fn kill(&self, c: &Container, signal: i32) -> Result<()> {
        let c = self.ensure_monitor(c.clone()).await;
        if !self.is_running(&c).await {
            return Err(EngineError::State(format!(
                "container {} is not running",
                c.rec.name
            )));
        }
        if signal == Signal::SIGKILL as i32 || signal == Signal::SIGTERM as i32 {
            self.write_stop_marker(&c.rec.id, b"kill")?;
        }
        self.signal(&c, signal).await?;
        self.thaw_for_signal(&c).await;
        self.event(Event::new(EventType::Kill, &c.rec.id, &c.rec.name).with("signal", signal));
        Ok(())
    }

    /// Forward a signal to the main process (a foreground client's Ctrl-C): no stop marker,
    /// no event.
    pub async fn signal(&self, c: &Container, signal: i32) -> Result<()> {
        Ok(self.task(c).await?.kill(signal).await?)
    }

    /// Tell the main process its terminal's new size.
    pub async fn resize(&self, c: &Container, width: u32, height: u32) {
        if let Ok(t) = self.task(c).await {
            t.resize("", width, height).await;
        }
    }
}
