//! runc gives a tmpfs the mode of the folder it covers (it chmods the fresh tmpfs to the
//! mount point's mode), so the `mode=1777` /tmp of a read-only root over an image's 0755 /tmp
//! ends up 0755, and a non-root agent cannot write its /tmp. Once the task exists (its mounts
//! are in place, its process not started), aac gives each such tmpfs the mode its options
//! ask for; on a writable root without a /tmp mount, the container's own /tmp (in its layer,
//! the image is unchanged) becomes 1777 as well.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

/// The folders (absolute, inside the container) and the modes they should have.
pub(crate) fn wanted(spec: &Spec) -> Vec<(PathBuf, u32)> {
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    let mut out: Vec<(PathBuf, u32)> = mounts
        .iter()
        .filter(|m| m.typ().as_deref() == Some("tmpfs"))
        .filter_map(|m| {
            let mode = m
                .options()
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter_map(|o| o.strip_prefix("mode="))
                .next_back()?;
            let mode = u32::from_str_radix(mode, 8).ok()?;
            Some((m.destination().clone(), mode & 0o7777))
        })
        .collect();
    // A later mount at the same place is the one the agent sees.
    let mut seen = std::collections::HashSet::new();
    out.reverse();
    out.retain(|(d, _)| seen.insert(d.clone()));
    out.reverse();
    let read_only = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let tmp_mounted = mounts.iter().any(|m| m.destination() == Path::new("/tmp"));
    if !read_only && !tmp_mounted {
        out.push((PathBuf::from("/tmp"), 0o1777));
    }
    out
}

/// Gives the folders of [`wanted`] their modes, seen through the root of the created task's
/// init `pid`. Paths are resolved inside that root and never through a symlink, so an image
/// cannot point aac at a host file. A folder that is missing or not a folder is left alone;
/// one that cannot be changed (a read-only tmpfs) is logged and left as runc made it.
pub(crate) fn apply(pid: u32, spec: &Spec) {
    let list = wanted(spec);
    if list.is_empty() {
        return;
    }
    // The task's init lives in a mount namespace of its own; anything else (a pid from
    // another pid namespace) is not the container, and nothing is changed.
    let mnt = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
    let theirs = mnt(&pid.to_string());
    if theirs.is_none() || theirs == mnt("self") {
        tracing::warn!("tmpfs modes: pid {pid} is not in a mount namespace of its own");
        return;
    }
    let root = match std::fs::File::open(format!("/proc/{pid}/root")) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("tmpfs modes: cannot open the root of pid {pid}: {e}");
            return;
        }
    };
    for (dest, mode) in list {
        if let Err(e) = set_mode(&root, &dest, mode) {
            tracing::warn!("tmpfs modes: {} stays as runc made it: {e}", dest.display());
        }
    }
}

fn set_mode(root: &std::fs::File, dest: &Path, mode: u32) -> std::io::Result<()> {
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    let fd = match open_in_root(root, rel) {
        Ok(fd) => fd,
        Err(e) if is_skippable(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(std::io::Error::from)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR || st.st_mode & 0o7777 == mode {
        return Ok(());
    }
    // SAFETY: fchmod on a descriptor this function owns.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Missing, a symlink, or not a folder: nothing of aac's to fix there.
fn is_skippable(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EXDEV)
    )
}

/// openat2(root, rel, O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS).
fn open_in_root(root: &std::fs::File, rel: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: valid pointers for the duration of the call; the result is a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_read_only_root_asks_for_its_tmpfs_modes() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": true},
            "mounts": [
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "mode=1777", "size=65536k"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "nodev", "mode=1777"]},
                {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                 "options": ["mode=755"]},
                {"destination": "/data", "type": "bind", "source": "/srv",
                 "options": ["rbind", "mode=700"]},
                {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                 "options": ["mode=700"]}
            ]
        }));
        assert_eq!(
            wanted(&s),
            vec![
                (PathBuf::from("/dev/shm"), 0o1777),
                (PathBuf::from("/tmp"), 0o1777),
                (PathBuf::from("/run"), 0o700),
            ]
        );
    }

    #[test]
    fn a_writable_root_gets_a_1777_tmp_unless_something_is_mounted_there() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}]
        }));
        assert_eq!(
            wanted(&s),
            vec![
                (PathBuf::from("/dev"), 0o755),
                (PathBuf::from("/tmp"), 0o1777)
            ]
        );
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/tmp", "type": "bind", "source": "/var/tmp",
                        "options": ["rbind"]}]
        }));
        assert!(wanted(&s).is_empty());
    }
}
