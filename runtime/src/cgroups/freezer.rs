//! The cgroup freezer of a container (`aac pause`/`unpause`): v1 `freezer.state`
//! (`FROZEN`/`THAWED`), v2 `cgroup.freeze` (`1`/`0`, with `frozen 1` in `cgroup.events`
//! once every process is stopped).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{CgroupError, CgroupLayout, CgroupPlan};
use crate::io::io_err;

/// How long a freeze may take before it is reported as failed (a process in an
/// uninterruptible sleep delays it).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

impl CgroupPlan {
    /// The freezer's directory and whether it is the unified (v2) one.
    fn freezer_dir(&self) -> Result<(PathBuf, bool), CgroupError> {
        let Some(path) = &self.fs_path else {
            return Err(CgroupError::NoCgroup(
                self.absent
                    .clone()
                    .unwrap_or_else(|| "(the container has no cgroup)".into()),
            ));
        };
        let layout = CgroupLayout::detect()?;
        let found = match layout.v1_dir("freezer", path)? {
            Some(d) => Some((d, false)),
            None => layout.unified_dir(path)?.map(|d| (d, true)),
        };
        match found {
            Some((d, unified)) if d.exists() => Ok((d, unified)),
            Some((d, _)) => Err(CgroupError::NoCgroup(d.display().to_string())),
            None => Err(CgroupError::NoCgroupFs),
        }
    }

    /// Whether the container's cgroup is frozen now; `None` when it has none (not running,
    /// or no freezer on this host).
    pub fn frozen(&self) -> Option<bool> {
        let (dir, unified) = self.freezer_dir().ok()?;
        if unified {
            let events = std::fs::read_to_string(dir.join("cgroup.events")).ok()?;
            let frozen = events.lines().any(|l| l.trim() == "frozen 1");
            let asked = std::fs::read_to_string(dir.join("cgroup.freeze"))
                .map(|s| s.trim() == "1")
                .unwrap_or(false);
            Some(frozen || asked)
        } else {
            let state = std::fs::read_to_string(dir.join("freezer.state")).ok()?;
            Some(state.trim() != "THAWED")
        }
    }

    /// Freeze (`true`) or thaw every process of the cgroup, and wait until the kernel says
    /// it is done.
    pub fn set_frozen(&self, freeze: bool) -> Result<(), CgroupError> {
        let (dir, unified) = self.freezer_dir()?;
        // (file to write, value, file that says when it is done, what it then says)
        let (file, value, done_file, done) = match (unified, freeze) {
            (true, true) => ("cgroup.freeze", "1", "cgroup.events", "frozen 1"),
            (true, false) => ("cgroup.freeze", "0", "cgroup.events", "frozen 0"),
            (false, true) => ("freezer.state", "FROZEN", "freezer.state", "FROZEN"),
            (false, false) => ("freezer.state", "THAWED", "freezer.state", "THAWED"),
        };
        let path = dir.join(file);
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        loop {
            // v1 may stay FREEZING while a task is in an uninterruptible sleep: writing the
            // state again retries.
            std::fs::write(&path, value).map_err(io_err("writing", &path))?;
            let done_path = dir.join(done_file);
            let now = std::fs::read_to_string(&done_path).map_err(io_err("reading", &done_path))?;
            if now.lines().any(|l| l.trim() == done) {
                return Ok(());
            }
            if Instant::now() > deadline {
                if freeze {
                    let _ = std::fs::write(&path, if unified { "0" } else { "THAWED" });
                }
                return Err(CgroupError::Cgroup {
                    path: dir,
                    reason: format!(
                        "the freezer did not reach {value} within {}s",
                        FREEZE_TIMEOUT.as_secs()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
