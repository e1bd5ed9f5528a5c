//! `stats` and `top`: resource use and processes of a container, from its cgroup.

use std::time::SystemTime;

use crate::cgroups::{CgroupLayout, Sample};
use crate::stats::ProcessRow;

use super::{Container, Engine, EngineError, Result};

/// The network namespace of `pid` differs from ours (else its counters are the host's).
fn own_netns(pid: u32) -> bool {
    match (
        std::fs::read_link(format!("/proc/{pid}/ns/net")),
        std::fs::read_link("/proc/self/ns/net"),
    ) {
        (Ok(theirs), Ok(ours)) => theirs != ours,
        _ => false,
    }
}

impl Engine {
    /// A reading of a container's counters; a stopped one (or one that stops while being
    /// read) reads as zeros.
    pub fn sample(&self, layout: &CgroupLayout, c: &Container) -> Sample {
        let zero = Sample {
            timestamp: SystemTime::now(),
            cpu_usage_ns: 0,
            mem_usage: 0,
            mem_limit: None,
            pids: 0,
            net_rx_bytes: 0,
            net_tx_bytes: 0,
            blk_read_bytes: 0,
            blk_write_bytes: 0,
        };
        let cur = self.reload(c);
        let Some(path) = cur.rec.cgroup.fs_path.as_deref() else {
            return zero;
        };
        if !cur.is_up() {
            return zero;
        }
        let net_pid = cur.status.pid.filter(|p| own_netns(*p));
        match crate::cgroups::sample_in(layout, path, net_pid) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(container = %c.rec.name, "no reading: {e}");
                zero
            }
        }
    }

    /// The processes of a running container.
    pub fn top(&self, c: &Container) -> Result<Vec<ProcessRow>> {
        if !c.is_up() {
            return Err(EngineError::State(format!(
                "container {} is not running",
                c.rec.name
            )));
        }
        let path = c.rec.cgroup.fs_path.as_deref().ok_or_else(|| {
            EngineError::State(format!("container {} has no cgroup of its own", c.rec.name))
        })?;
        Ok(crate::stats::top(path)?)
    }

    /// The containers `aac stats` shows: the named ones, or every running (every, with
    /// `all`) one, by name.
    pub fn watched(&self, names: &[String], all: bool) -> Result<Vec<Container>> {
        if !names.is_empty() {
            return names.iter().map(|n| self.load(n)).collect();
        }
        let mut out: Vec<Container> = self
            .all()?
            .into_iter()
            .filter(|c| all || c.is_up())
            .collect();
        out.sort_by(|a, b| a.rec.name.cmp(&b.rec.name));
        Ok(out)
    }
}
