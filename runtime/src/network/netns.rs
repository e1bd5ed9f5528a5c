//! Persistent network namespaces: a namespace created by a thread that `unshare`s, kept alive by
//! a bind mount of that thread's `/proc/thread-self/ns/net` onto a file (as `ip netns add`
//! does). Removing one is `umount` + `unlink`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::NetError;
use crate::state::StateDirs;

/// `<run>/netns`.
pub fn netns_dir(dirs: &StateDirs) -> PathBuf {
    dirs.run.join("netns")
}

/// `<run>/netns/<id>`.
pub fn netns_path(dirs: &StateDirs, id: &str) -> PathBuf {
    netns_dir(dirs).join(id)
}

fn ns_err(path: &Path, what: &'static str) -> impl FnOnce(nix::Error) -> NetError {
    let path = path.to_path_buf();
    move |source| NetError::Netns { path, what, source }
}

/// Create a new network namespace pinned at `path` (which must not exist).
pub fn create(path: &Path) -> Result<(), NetError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| {
            NetError::Io(crate::io::IoError::new(
                "creating",
                dir.to_path_buf(),
                source,
            ))
        })?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| {
            NetError::Io(crate::io::IoError::new(
                "creating",
                path.to_path_buf(),
                source,
            ))
        })?;
    // unshare(CLONE_NEWNET) changes only the calling thread: do it in a thread of its own, so
    // the caller's thread stays in its namespace.
    let result = std::thread::scope(|s| {
        s.spawn(|| -> Result<(), NetError> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(ns_err(path, "unshare"))?;
            loopback_up().map_err(ns_err(path, "bringing up lo"))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(ns_err(path, "bind-mounting"))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(NetError::Netns {
                path: path.to_path_buf(),
                what: "creating (thread panicked)",
                source: nix::Error::EIO,
            })
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Set `lo` up in the calling thread's network namespace (what the CNI `loopback` plugin does,
/// without starting a process for it). Also used by the process backend's child, after fork:
/// it allocates nothing.
pub fn loopback_up() -> Result<(), nix::Error> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) with constant arguments; the descriptor is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero ifreq is valid; the name is NUL-terminated within IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which lives across both calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(nix::Error::last());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(nix::Error::last());
        }
    }
    Ok(())
}

/// Unmount and delete the namespace file. Already-gone parts are not errors.
pub fn remove(path: &Path) -> Result<(), NetError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (never mounted, or already unmounted).
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(ns_err(path, "unmounting")(e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetError::Io(crate::io::IoError::new(
            "removing",
            path.to_path_buf(),
            source,
        ))),
    }
}

/// Run `f` on a thread that has joined the network namespace at `path`. Sockets created by `f`
/// stay in that namespace wherever they are used afterwards.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetError> {
    let ns = File::open(path).map_err(|source| {
        NetError::Io(crate::io::IoError::new(
            "opening",
            path.to_path_buf(),
            source,
        ))
    })?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T, NetError> {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(ns_err(path, "joining"))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
