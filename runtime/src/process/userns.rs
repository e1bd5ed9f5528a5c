//! The user namespace of an agent run by root: the agent's root is an unprivileged range of
//! host ids, the subordinate ids of a dedicated `aac` user (created on first use, as podman's
//! `--userns=auto` takes its ranges from the `containers` user), so that capabilities inside
//! mean nothing on the host and the host's files are "other" to it.
//!
//! The parent prepares the namespace before forking the waiter ([`create`]): a helper
//! unshares it, the parent (root in the initial namespace) writes its maps and keeps
//! `/proc/HELPER/ns/user` open; the waiter joins it with `setns`. Holding the namespace as a
//! descriptor also lets the parent make idmapped bind mounts for the volumes
//! ([`idmapped_tree`]), so that the agent's root owns them as the host's root does.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, read, write, ForkResult};

use super::mounts::{mount_setattr, MountAttr, MOUNT_ATTR_IDMAP};
use super::{ProcessError, Stage};

/// The user whose subordinate ids agents run as.
pub const USER: &str = "aac";
/// How many ids an agent's namespace maps (uid and gid 0..65535 inside).
pub const COUNT: u32 = 65536;
/// The lowest host id handed out (as useradd's SUB_UID_MIN).
const FIRST: u64 = 100_000;

/// A range of host ids: inside ids `0..count` are host ids `uid..uid+count` (`gid..` for
/// groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub uid: u32,
    pub gid: u32,
    pub count: u32,
}

impl IdRange {
    /// Whether id `id` inside the namespace is mapped to a host id.
    pub fn maps(&self, id: u32) -> bool {
        id < self.count
    }

    /// The host uid and gid of `uid`:`gid` inside, or `None` when either is not mapped.
    pub fn to_host(&self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        if !(self.maps(uid) && self.maps(gid)) {
            return None;
        }
        Some((self.uid.checked_add(uid)?, self.gid.checked_add(gid)?))
    }

    /// What a refusal names: the ids the namespace has.
    pub fn describe(&self) -> String {
        format!("ids 0-{}", self.count.saturating_sub(1))
    }
}

fn setup_err(detail: impl Into<String>) -> impl FnOnce(Errno) -> ProcessError {
    let detail = detail.into();
    move |errno| ProcessError::Setup {
        stage: Stage::UserNamespace,
        detail,
        errno,
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `name:start:count` lines: the range of `name` (or of `uid`, written as a number).
fn find_range(text: &str, name: &str, uid: Option<u32>) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        let ours = who == name || uid.is_some_and(|u| who == u.to_string());
        let (start, count) = (start.parse().ok()?, count.parse().ok()?);
        (ours && count >= COUNT).then_some((start, count))
    })
}

/// The end of the highest range in `text`.
fn highest_end(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':').skip(1);
            let start: u64 = f.next()?.parse().ok()?;
            let count: u64 = f.next()?.parse().ok()?;
            Some(start + count)
        })
        .max()
        .unwrap_or(0)
}

fn ensure_user() -> Result<Option<u32>, ProcessError> {
    if let Ok(Some(u)) = nix::unistd::User::from_name(USER) {
        return Ok(Some(u.uid.as_raw()));
    }
    let out = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "aac agents (subordinate ids)",
            USER,
        ])
        .output();
    match out {
        // Exit 9: created meanwhile by another aac.
        Ok(o) if o.status.success() || o.status.code() == Some(9) => {}
        Ok(o) => {
            return Err(setup_err(format!(
                "creating the {USER} user: useradd: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))(Errno::EPERM))
        }
        Err(e) => {
            return Err(setup_err(format!("creating the {USER} user: useradd"))(
                io_errno(&e),
            ))
        }
    }
    Ok(nix::unistd::User::from_name(USER)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw()))
}

/// The range of `file` (/etc/subuid or /etc/subgid) for the aac user, allocated above every
/// range there (and `floor`) when it has none. Holds an exclusive lock on the file meanwhile.
fn range_in(file: &Path, uid: Option<u32>, floor: u64) -> Result<u32, ProcessError> {
    let what = || format!("reading {}", file.display());
    let f = fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(file)
        .map_err(|e| setup_err(what())(io_errno(&e)))?;
    let f = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| setup_err(format!("locking {}", file.display()))(e))?;
    let mut file_h: &fs::File = &f;
    let mut text = String::new();
    file_h
        .rewind()
        .map_err(|e| setup_err(what())(io_errno(&e)))?;
    file_h
        .read_to_string(&mut text)
        .map_err(|e| setup_err(what())(io_errno(&e)))?;
    if let Some((start, _)) = find_range(&text, USER, uid) {
        return Ok(start);
    }
    let start = highest_end(&text).max(floor).max(FIRST);
    let start = start.div_ceil(u64::from(COUNT)) * u64::from(COUNT);
    let start32 = u32::try_from(start)
        .ok()
        .filter(|s| s.checked_add(COUNT).is_some())
        .ok_or_else(|| {
            setup_err(format!("no free id range in {}", file.display()))(Errno::ERANGE)
        })?;
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    file_h
        .write_all(format!("{sep}{USER}:{start32}:{COUNT}\n").as_bytes())
        .map_err(|e| setup_err(format!("writing {}", file.display()))(io_errno(&e)))?;
    Ok(start32)
}

/// The host range root-run agents get (the aac user and its ranges are created on first use).
pub fn host_range() -> Result<IdRange, ProcessError> {
    static RANGE: OnceLock<Result<IdRange, String>> = OnceLock::new();
    let r = RANGE.get_or_init(|| {
        let find = || -> Result<IdRange, ProcessError> {
            let uid = ensure_user()?;
            let subuid = range_in(Path::new("/etc/subuid"), uid, 0)?;
            let subgid = range_in(Path::new("/etc/subgid"), uid, 0)?;
            Ok(IdRange {
                uid: subuid,
                gid: subgid,
                count: COUNT,
            })
        };
        find().map_err(|e| e.to_string())
    });
    r.clone()
        .map_err(|e| ProcessError::InvalidSpec(format!("the agent's user namespace: {e}")))
}

/// A new user namespace mapping `range`, as a descriptor (see the module's doc).
pub fn create(range: IdRange) -> Result<OwnedFd, ProcessError> {
    let (ready_r, ready_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(setup_err("pipe"))?;
    // SAFETY: the helper only calls close_range, unshare, write, pause and _exit.
    let helper = match unsafe { fork() }.map_err(setup_err("fork"))? {
        ForkResult::Child => {
            // Other threads' pipes (a concurrent spawn's) must not stay open here.
            let keep = ready_w.as_raw_fd() as u32;
            // SAFETY: closing descriptors this process does not use.
            unsafe {
                if keep > 0 {
                    libc::syscall(libc::SYS_close_range, 0u32, keep - 1, 0u32);
                }
                libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
            }
            let ok = unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = write(&ready_w, &[u8::from(ok)]);
            // The parent kills us once it holds the namespace.
            loop {
                // SAFETY: pause has no arguments.
                unsafe { libc::pause() };
            }
        }
        ForkResult::Parent { child } => child,
    };
    drop(ready_w);
    let result = (|| {
        let mut b = [0u8; 1];
        match read(ready_r.as_raw_fd(), &mut b) {
            Ok(1) if b[0] == 1 => {}
            Ok(_) => return Err(setup_err("unshare a user namespace")(Errno::EPERM)),
            Err(e) => return Err(setup_err("unshare a user namespace")(e)),
        }
        let proc_dir = format!("/proc/{}", helper.as_raw());
        for (file, start) in [("uid_map", range.uid), ("gid_map", range.gid)] {
            let p = format!("{proc_dir}/{file}");
            fs::write(&p, format!("0 {start} {}\n", range.count))
                .map_err(|e| setup_err(format!("write {p}"))(io_errno(&e)))?;
        }
        let p = format!("{proc_dir}/ns/user");
        fs::File::open(&p)
            .map(OwnedFd::from)
            .map_err(|e| setup_err(format!("open {p}"))(io_errno(&e)))
    })();
    let _ = nix::sys::signal::kill(helper, nix::sys::signal::Signal::SIGKILL);
    let _ = waitpid(helper, None);
    result
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// A detached copy of the mount tree at `source` (recursive when `recursive`), idmapped
/// through `userns` when given and the filesystem allows it: then the agent's root owns there
/// what the host's root owns. `Ok((fd, false))` when it was not idmapped.
pub fn idmapped_tree(
    source: &Path,
    recursive: bool,
    userns: Option<&OwnedFd>,
) -> Result<(OwnedFd, bool), ProcessError> {
    let c = CString::new(source.as_os_str().as_encoded_bytes())
        .map_err(|_| ProcessError::InvalidSpec("a volume path contains a NUL byte".into()))?;
    let rec = if recursive { AT_RECURSIVE } else { 0 };
    let open = || {
        // SAFETY: open_tree with a NUL-terminated path; returns a new descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                c.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec,
            )
        };
        if fd < 0 {
            Err(Errno::last())
        } else {
            // SAFETY: a fresh descriptor nobody else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
        }
    };
    let what = || format!("bind source {}", source.display());
    let tree = open().map_err(|e| ProcessError::Setup {
        stage: Stage::Mounts,
        detail: what(),
        errno: e,
    })?;
    let Some(userns) = userns else {
        return Ok((tree, false));
    };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    match mount_setattr(
        tree.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH as libc::c_uint | rec,
        &attr,
    ) {
        Ok(()) => Ok((tree, true)),
        Err(e) => {
            tracing::debug!("idmapping {}: {e}", source.display());
            Ok((tree, false))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_found_and_allocated_above_the_others() {
        let text = "alice:100000:65536\naac:165536:65536\n";
        assert_eq!(find_range(text, "aac", None), Some((165536, 65536)));
        assert_eq!(
            find_range("999:200000:65536", "aac", Some(999)),
            Some((200000, 65536))
        );
        assert_eq!(find_range("aac:1:10", "aac", None), None);
        assert_eq!(highest_end(text), 231072);
        assert_eq!(highest_end(""), 0);
    }
}
