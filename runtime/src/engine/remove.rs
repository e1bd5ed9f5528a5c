//! `remove`: a container and everything aac made for it.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::events::{Event, EventType};
use crate::network;

use super::{Container, Engine, EngineError, Result};

impl Engine {
    /// Remove a container: refused while it runs unless `force` (then it is killed first).
    /// Its anonymous volumes stay (see [`Engine::remove_with_volumes`]).
    pub async fn remove(&self, c: &Container, force: bool) -> Result<()> {
        self.remove_with_volumes(c, force, false).await
    }

    /// [`Engine::remove`]; with `volumes` (`rm -v`) its anonymous volumes go too, unless
    /// another container uses them.
    pub async fn remove_with_volumes(
        &self,
        c: &Container,
        force: bool,
        volumes: bool,
    ) -> Result<()> {
        if self.is_running(c).await {
            if !force {
                return Err(EngineError::State(format!(
                    "container {} is running: stop it first or use `aac rm -f`",
                    c.rec.name
                )));
            }
            self.stop(c, Duration::from_secs(10), Signal::SIGKILL as i32)
                .await?;
        }
        self.task(c).await?.remove().await?;
        self.discard(c)?;
        if volumes {
            crate::volumes::remove_anonymous_of(&self.dirs, &c.rec);
        }
        self.event(Event::new(EventType::Rm, &c.rec.id, &c.rec.name));
        Ok(())
    }

    /// Drop aac's own side of a container: network, name, records and volatile files.
    pub(crate) fn discard(&self, c: &Container) -> Result<()> {
        network::detach(&self.dirs, &c.rec.id)?;
        self.dirs.release_name(&c.rec.name, &c.rec.id)?;
        self.dirs.remove_container(&c.rec.id)?;
        Ok(())
    }
}
