//! `rename`: a container's new name is claimed atomically, its old one freed.

use crate::events::{Event, EventType};

use super::{Container, Engine, EngineError, Result};

impl Engine {
    /// Give container `c` the name `new`; the old name is free afterwards.
    pub fn rename(&self, c: &Container, new: &str) -> Result<Container> {
        crate::agent::validate::check_agent_name(new)
            .map_err(|e| EngineError::Invalid(format!("invalid container name {new:?}: {e}")))?;
        if new == c.rec.name {
            return Err(EngineError::Invalid(format!(
                "renaming container {}: the new name is the same as the old one",
                c.rec.name
            )));
        }
        // Read again: another verb may have rewritten the record meanwhile.
        let mut rec = crate::record::ContainerRecord::load(&self.dirs, &c.rec.id)?;
        let old = rec.name.clone();
        rec.name = new.to_string();
        self.dirs
            .rename(&old, new, &rec.id, || rec.save(&self.dirs))
            .map_err(EngineError::from)?;
        self.event(Event::new(EventType::Rename, &rec.id, new).with("oldName", &old));
        Ok(Container {
            rec,
            status: self.status(c),
        })
    }
}
