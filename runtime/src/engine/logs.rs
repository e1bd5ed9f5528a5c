//! `logs`: a container's output from its json-file log, stored or followed.

use crate::logs::{self, Entry, Follower, LogFilter};
use crate::status::Phase;

use super::{Container, Engine};

impl Engine {
    /// The stored log entries that pass `filter`.
    pub fn logs(&self, c: &Container, filter: &LogFilter) -> Vec<Entry> {
        logs::read(&self.log_dir(c), filter)
    }

    /// A follower that hands out the stored entries first (tail applied), then what comes.
    pub fn follow_logs(&self, c: &Container, filter: LogFilter) -> Follower {
        Follower::from_start(&self.log_dir(c), filter)
    }

    /// A follower that starts at the end (a foreground run follows from its first line).
    pub fn follow_new_logs(&self, c: &Container) -> Follower {
        Follower::from_end(&self.log_dir(c), LogFilter::default())
    }

    /// Whether a followed container may still write: it runs or waits for a restart.
    pub async fn still_writing(&self, c: &Container) -> bool {
        let cur = self.reload(c);
        match cur.status.phase {
            Phase::Exited => false,
            Phase::Restarting => true,
            _ => self.is_running(&cur).await,
        }
    }
}
