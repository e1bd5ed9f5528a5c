//! OOM kills of the container, reported to containerd as `/tasks/oom` (what runc's shim does;
//! aac's monitor and `ctr events` read it). Under the systemd cgroup driver the container's
//! scope disappears as soon as its last process exits, so the kernel's counter has to be
//! watched while the container runs: cgroup v2 signals changes of `memory.events` through
//! inotify. The counter is also read once more when the init process exits (cgroup v1, whose
//! `memory.oom_control` sends no inotify events, and a kill the watch thread has not seen yet).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// The OOM counter of one container and how much of it was already reported.
pub struct OomWatch {
    file: PathBuf,
    reported: Mutex<u64>,
}

impl OomWatch {
    /// The counter file of the memory cgroup `pid` is in, with its current value as the
    /// baseline; `None` when there is no memory controller to read.
    pub fn for_pid(pid: u32) -> Option<Arc<OomWatch>> {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let file = counter_file(&cgroup)?;
        let now = read_count(&file)?;
        Some(Arc::new(OomWatch {
            file,
            reported: Mutex::new(now),
        }))
    }

    /// Whether the counter went up since the last call (or since the watch started).
    pub fn new_kills(&self) -> bool {
        let Some(now) = read_count(&self.file) else {
            return false;
        };
        let mut seen = match self.reported.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if now > *seen {
            *seen = now;
            true
        } else {
            false
        }
    }

    /// On cgroup v2: a thread that calls `on_kill` whenever the counter goes up, until the
    /// cgroup is removed.
    pub fn spawn(self: &Arc<Self>, on_kill: impl Fn() + Send + 'static) {
        if !self.file.ends_with("memory.events") {
            return;
        }
        let Ok(inotify) = Inotify::init(InitFlags::IN_CLOEXEC) else {
            return;
        };
        if inotify
            .add_watch(&self.file, AddWatchFlags::IN_MODIFY)
            .is_err()
        {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("oom".into())
            .stack_size(64 * 1024)
            .spawn(move || loop {
                let Ok(events) = inotify.read_events() else {
                    return;
                };
                if me.new_kills() {
                    on_kill();
                }
                // The cgroup went away (runc delete, the end of a systemd scope).
                if events
                    .iter()
                    .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                {
                    return;
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot watch for OOM kills: {e}");
        }
    }
}

/// The counter file for a `/proc/PID/cgroup` text: v2's `memory.events` when the unified
/// hierarchy is mounted at /sys/fs/cgroup with a memory controller, else v1's
/// `memory.oom_control` of the memory hierarchy.
fn counter_file(cgroup: &str) -> Option<PathBuf> {
    let root = PathBuf::from("/sys/fs/cgroup");
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            let f = root.join(rel).join("memory.events");
            if f.exists() {
                return Some(f);
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            let f = root.join("memory").join(rel).join("memory.oom_control");
            if f.exists() {
                return Some(f);
            }
        }
    }
    None
}

/// The `oom_kill` line of either counter file.
fn read_count(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_oom_kill_line() {
        let dir = std::env::temp_dir().join(format!("aac-oom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("memory.events");
        std::fs::write(&f, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(read_count(&f), Some(2));
        std::fs::write(&f, "oom_kill_disable 0\nunder_oom 0\n").unwrap();
        assert_eq!(read_count(&f), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
