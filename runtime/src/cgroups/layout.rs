//! Where the cgroup filesystems are mounted on this host, as `/proc/self/mountinfo` tells:
//!
//! * **legacy (v1)**: one mount per controller (`/sys/fs/cgroup/memory/aac/<id>`, ...);
//! * **unified (v2)**: one tree (`/sys/fs/cgroup/aac/<id>`);
//! * **hybrid**: v1 controllers plus an (often controller-less) cgroup2 mount at
//!   `/sys/fs/cgroup/unified`.
//!
//! Each controller's files are read from its v1 mount when it is mounted as v1, else from the
//! unified tree, so the three layouts share one code path.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::CgroupError;
use crate::io::io_err;

/// How cgroups are mounted on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controllers plus a cgroup2 mount (systemd's "hybrid" setup).
    Hybrid,
    /// Only cgroup2.
    Unified,
}

/// One v1 hierarchy: its controllers, where it is mounted and which cgroup the mount shows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct V1Mount {
    controllers: Vec<String>,
    mount_point: PathBuf,
    root: String,
}

/// Where the cgroup filesystems are mounted, as `/proc/self/mountinfo` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    v1: Vec<V1Mount>,
    /// The cgroup2 mount point and the cgroup it shows.
    unified: Option<(PathBuf, String)>,
}

/// Undo mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl CgroupLayout {
    /// Read `/proc/self/mountinfo`, once per process: cgroup file systems are mounted at boot,
    /// and the kernel takes long to print a mountinfo of many containers' overlay mounts (`aac
    /// ps` looks at every container's freezer).
    pub fn detect() -> Result<CgroupLayout, CgroupError> {
        static DETECTED: std::sync::OnceLock<CgroupLayout> = std::sync::OnceLock::new();
        if let Some(layout) = DETECTED.get() {
            return Ok(layout.clone());
        }
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(io_err("reading", path))?;
        let layout = CgroupLayout::from_mountinfo(&text);
        if layout.v1.is_empty() && layout.unified.is_none() {
            return Err(CgroupError::NoCgroupFs);
        }
        Ok(DETECTED.get_or_init(|| layout).clone())
    }

    /// Parse the text of a `mountinfo` file. Lines that are not cgroup mounts are ignored.
    pub fn from_mountinfo(text: &str) -> CgroupLayout {
        let mut layout = CgroupLayout {
            v1: Vec::new(),
            unified: None,
        };
        for line in text.lines() {
            // id parent maj:min root mount-point options [optional...] - fstype source super-options
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.len() < 5 || right.len() < 3 {
                continue;
            }
            let root = unescape_mountinfo(left[3]);
            let mount_point = PathBuf::from(unescape_mountinfo(left[4]));
            match right[0] {
                "cgroup2" if layout.unified.is_none() => {
                    layout.unified = Some((mount_point, root));
                }
                "cgroup" => {
                    let controllers: Vec<String> = right[2]
                        .split(',')
                        .filter(|o| {
                            !matches!(
                                *o,
                                "rw" | "ro"
                                    | "noprefix"
                                    | "xattr"
                                    | "cpuset_v2_mode"
                                    | "clone_children"
                            ) && !o.starts_with("release_agent=")
                        })
                        .map(str::to_string)
                        .collect();
                    // The same hierarchy can be mounted twice; the first mount wins.
                    if !layout.v1.iter().any(|m| m.controllers == controllers) {
                        layout.v1.push(V1Mount {
                            controllers,
                            mount_point,
                            root,
                        });
                    }
                }
                _ => {}
            }
        }
        layout
    }

    pub fn mode(&self) -> CgroupMode {
        match (self.v1.is_empty(), self.unified.is_some()) {
            (true, _) => CgroupMode::Unified,
            (false, true) => CgroupMode::Hybrid,
            (false, false) => CgroupMode::Legacy,
        }
    }

    /// The v1 mount of `controller` (`memory`, `cpuacct`, `pids`, `blkio`, `name=systemd`).
    pub fn v1_mount(&self, controller: &str) -> Option<&Path> {
        self.v1_hierarchy(controller)
            .map(|m| m.mount_point.as_path())
    }

    fn v1_hierarchy(&self, controller: &str) -> Option<&V1Mount> {
        self.v1
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller))
    }

    /// The controllers of the v1 hierarchies (named ones such as `name=systemd` left out).
    pub fn v1_controllers(&self) -> Vec<String> {
        self.v1
            .iter()
            .flat_map(|m| m.controllers.iter())
            .filter(|c| !c.starts_with("name="))
            .cloned()
            .collect()
    }

    /// The cgroup2 mount point, if any.
    pub fn unified_mount(&self) -> Option<&Path> {
        self.unified.as_ref().map(|(p, _)| p.as_path())
    }

    /// Directory of `cgroup_path` (`/aac/<id>`) under the v1 `controller`.
    pub fn v1_dir(
        &self,
        controller: &str,
        cgroup_path: &str,
    ) -> Result<Option<PathBuf>, CgroupError> {
        let rel = relative(cgroup_path)?;
        Ok(self
            .v1_hierarchy(controller)
            .map(|m| join_under(&m.mount_point, &m.root, &rel)))
    }

    /// Directory of `cgroup_path` in every mounted hierarchy: each v1 one (those without
    /// controllers aac limits too, such as `name=systemd`), then the unified tree.
    pub fn all_dirs(&self, cgroup_path: &str) -> Result<Vec<PathBuf>, CgroupError> {
        let rel = relative(cgroup_path)?;
        Ok(self
            .v1
            .iter()
            .map(|m| join_under(&m.mount_point, &m.root, &rel))
            .chain(
                self.unified
                    .iter()
                    .map(|(mp, root)| join_under(mp, root, &rel)),
            )
            .collect())
    }

    /// Directory of `cgroup_path` in the unified tree.
    pub fn unified_dir(&self, cgroup_path: &str) -> Result<Option<PathBuf>, CgroupError> {
        let rel = relative(cgroup_path)?;
        Ok(self
            .unified
            .as_ref()
            .map(|(mp, root)| join_under(mp, root, &rel)))
    }

    /// Where to read `controller`'s files for `cgroup_path`: its v1 directory when the
    /// controller is mounted as v1, else the unified directory. The flag tells which.
    pub fn controller_dir(
        &self,
        controller: &str,
        cgroup_path: &str,
    ) -> Result<Option<(PathBuf, bool)>, CgroupError> {
        if let Some(d) = self.v1_dir(controller, cgroup_path)? {
            return Ok(Some((d, false)));
        }
        Ok(self.unified_dir(cgroup_path)?.map(|d| (d, true)))
    }
}

/// `cgroup_path` (a directory relative to each hierarchy's root, `/aac/<id>`) without its
/// leading `/`, refusing `..` so that input cannot leave the tree.
fn relative(cgroup_path: &str) -> Result<String, CgroupError> {
    if !cgroup_path.starts_with('/') || cgroup_path.split('/').any(|c| c == "..") {
        return Err(CgroupError::BadPath(cgroup_path.to_string()));
    }
    Ok(cgroup_path.trim_matches('/').to_string())
}

/// The directory of cgroup `rel` under a mount that shows cgroup `root` (not `/` inside
/// some containers, where the mount shows only a subtree).
fn join_under(mount_point: &Path, root: &str, rel: &str) -> PathBuf {
    let root = root.trim_matches('/');
    let inner = if root.is_empty() {
        rel
    } else {
        match rel.strip_prefix(root) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.trim_start_matches('/'),
            _ => rel,
        }
    };
    if inner.is_empty() {
        mount_point.to_path_buf()
    } else {
        mount_point.join(inner)
    }
}
