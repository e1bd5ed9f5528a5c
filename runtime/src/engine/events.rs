//! `events`: what happens to containers, from the journal, live.

use std::time::SystemTime;

use crate::events::{Event, EventFilter, EventFollower};

use super::{Engine, Result};

impl Engine {
    /// Stored events since `since` that pass `filter`, and a follower for what comes next.
    pub fn events(
        &self,
        since: Option<SystemTime>,
        filter: EventFilter,
    ) -> Result<(Vec<Event>, EventFollower)> {
        Ok(match since {
            Some(s) => EventFollower::read_then_follow(&self.dirs, Some(s), filter)?,
            None => (Vec::new(), EventFollower::from_end(&self.dirs, filter)?),
        })
    }
}
