//! The container's filesystem view on the host: a recursive bind of the host root (or of a
//! prepared rootfs), read-only when the spec says so, with the spec's mounts on top, then
//! `pivot_root` into it. Planned in the parent, applied in the child.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, pivot_root};
use oci_spec::runtime::Mount;

use super::stage::{Fail, Stage};

/// Where the new root is assembled, inside the child's private mount namespace: a tmpfs mounted
/// over the host's `/tmp` there (the host never sees it) holds the mount point.
const STAGE_DIR: &str = "/tmp";
const NEW_ROOT: &str = "/tmp/aac-root";

/// Device nodes bound from the host into a fresh `/dev` tmpfs.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// A bind mount option of aac's own (`x-` options are for user space, never passed to the
/// kernel): the source's files are already owned by the agent's ids as the host sees them
/// (its secrets), so the process backend binds them without idmapping.
pub const NO_IDMAP: &str = "x-aac.no-idmap";

/// Parsed `mount` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    pub flags: MsFlags,
    pub bind: bool,
    pub recursive: bool,
    pub readonly: bool,
    /// A bind never idmapped into the agent's user namespace ([`NO_IDMAP`]).
    pub no_idmap: bool,
    /// Filesystem-specific options, comma-joined (`mode=755,size=65536k`).
    pub data: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flags: MsFlags::empty(),
            bind: false,
            recursive: false,
            readonly: false,
            no_idmap: false,
            data: String::new(),
        }
    }
}

pub(crate) fn parse_options(opts: &[String]) -> Options {
    let mut o = Options::default();
    let mut data = Vec::new();
    for opt in opts {
        match opt.as_str() {
            "ro" => o.readonly = true,
            "rw" => o.readonly = false,
            NO_IDMAP => o.no_idmap = true,
            "bind" => o.bind = true,
            "rbind" => {
                o.bind = true;
                o.recursive = true;
            }
            "nosuid" => o.flags |= MsFlags::MS_NOSUID,
            "suid" => o.flags &= !MsFlags::MS_NOSUID,
            "nodev" => o.flags |= MsFlags::MS_NODEV,
            "dev" => o.flags &= !MsFlags::MS_NODEV,
            "noexec" => o.flags |= MsFlags::MS_NOEXEC,
            "exec" => o.flags &= !MsFlags::MS_NOEXEC,
            "relatime" => o.flags |= MsFlags::MS_RELATIME,
            "norelatime" => o.flags &= !MsFlags::MS_RELATIME,
            "strictatime" => o.flags |= MsFlags::MS_STRICTATIME,
            "noatime" => o.flags |= MsFlags::MS_NOATIME,
            "nodiratime" => o.flags |= MsFlags::MS_NODIRATIME,
            "sync" => o.flags |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => o.flags |= MsFlags::MS_DIRSYNC,
            "mand" => o.flags |= MsFlags::MS_MANDLOCK,
            // Propagation: every mount of the container is private anyway.
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" | "defaults" => {}
            other => data.push(other.to_string()),
        }
    }
    o.data = data.join(",");
    o
}

/// One step of the filesystem set-up. Destinations are absolute paths inside the container.
#[derive(Debug, Clone)]
pub(crate) enum MountOp {
    /// A fresh procfs for the new PID namespace.
    Proc { dest: PathBuf, opts: Options },
    /// Keep the host's tree at `dest` (already in the recursive bind), read-only if asked.
    KeepHost { dest: PathBuf, readonly: bool },
    /// A fresh cgroup2 mount (the container has its own cgroup namespace).
    Cgroup2 { dest: PathBuf, opts: Options },
    /// A tmpfs on /dev holding the host's standard device nodes.
    Dev { dest: PathBuf, opts: Options },
    /// Bind `source` (host path) onto `dest`.
    Bind {
        source: PathBuf,
        dest: PathBuf,
        opts: Options,
    },
    /// Any other filesystem (tmpfs, devpts, mqueue...).
    Fs {
        fstype: String,
        source: String,
        dest: PathBuf,
        opts: Options,
    },
}

impl MountOp {
    pub fn dest(&self) -> &Path {
        match self {
            MountOp::Proc { dest, .. }
            | MountOp::KeepHost { dest, .. }
            | MountOp::Cgroup2 { dest, .. }
            | MountOp::Dev { dest, .. }
            | MountOp::Bind { dest, .. }
            | MountOp::Fs { dest, .. } => dest,
        }
    }
}

/// In a user namespace that maps only the caller, `uid=`/`gid=` options name ids that do not
/// exist there (devpts' `gid=5`) and the kernel refuses the mount: drop them.
pub(crate) fn drop_unmapped_ids(ops: &mut [MountOp]) {
    for op in ops {
        if let MountOp::Fs { opts, .. } | MountOp::Dev { opts, .. } | MountOp::Proc { opts, .. } =
            op
        {
            opts.data = opts
                .data
                .split(',')
                .filter(|o| !o.is_empty() && !o.starts_with("uid=") && !o.starts_with("gid="))
                .collect::<Vec<_>>()
                .join(",");
        }
    }
}

/// What the process backend makes of the spec's mounts.
///
/// `host_root`: the root is the host's own, so `/sys` and `/sys/fs/cgroup` are the host's
/// (read-only), and `/tmp` and `/run` get private tmpfs mounts even when the spec has none.
/// `cgroupns`: the container has its own cgroup namespace (v2), so it gets a fresh cgroup2.
pub(crate) fn plan(mounts: &[Mount], host_root: bool, cgroupns: bool) -> Vec<MountOp> {
    let mut out = Vec::new();
    for m in mounts {
        let dest = m.destination().clone();
        let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
        let typ = m.typ().as_deref().unwrap_or("");
        let source = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let op = match typ {
            "proc" => MountOp::Proc { dest, opts },
            "sysfs" => MountOp::KeepHost {
                dest,
                readonly: opts.readonly,
            },
            "cgroup" | "cgroup2" if cgroupns => MountOp::Cgroup2 { dest, opts },
            "cgroup" | "cgroup2" => MountOp::KeepHost {
                dest,
                readonly: opts.readonly,
            },
            "tmpfs" if dest == Path::new("/dev") => MountOp::Dev { dest, opts },
            _ if typ == "bind" || opts.bind => MountOp::Bind {
                source: PathBuf::from(source),
                dest,
                opts,
            },
            _ => MountOp::Fs {
                fstype: typ.to_string(),
                source: if source.is_empty() {
                    typ.to_string()
                } else {
                    source
                },
                dest,
                opts,
            },
        };
        out.push(op);
    }
    if host_root {
        for (dir, mode) in [("/tmp", "mode=1777"), ("/run", "mode=755")] {
            if !out.iter().any(|op| op.dest() == Path::new(dir)) {
                // Before any mount inside it, and before the volumes.
                let at = out
                    .iter()
                    .position(|op| op.dest().starts_with(dir) || matches!(op, MountOp::Bind { .. }))
                    .unwrap_or(out.len());
                out.insert(
                    at,
                    MountOp::Fs {
                        fstype: "tmpfs".into(),
                        source: "tmpfs".into(),
                        dest: PathBuf::from(dir),
                        opts: Options {
                            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                            data: mode.into(),
                            ..Options::default()
                        },
                    },
                );
            }
        }
    }
    out
}

/// Whether a missing mount point at `dest` may be created where it is: always in a prepared
/// rootfs; on the host root only inside a filesystem the container mounted itself or a
/// writable volume (never on the host's own tree: that one is spliced first, see [`splice`]).
fn may_create(dest: &Path, host_root: bool, done: &[MountOp]) -> bool {
    !host_root
        || done.iter().any(|op| {
            let own = match op {
                MountOp::Fs { .. } | MountOp::Dev { .. } => true,
                MountOp::Bind { opts, .. } => !opts.readonly,
                _ => false,
            };
            own && dest.starts_with(op.dest())
        })
}

fn fail(detail: impl Into<String>) -> impl FnOnce(Errno) -> Fail {
    let d = detail.into();
    move |e| Fail::new(Stage::Mounts, e, d)
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `dest` inside the new root, before the pivot.
fn staged(dest: &Path) -> PathBuf {
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    Path::new(NEW_ROOT).join(rel)
}

/// Mount flags that are locked in a user namespace and must be kept on a bind remount.
fn kept_flags(path: &Path) -> MsFlags {
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

fn remount_bind(path: &Path, extra: MsFlags, readonly: bool) -> Result<(), Errno> {
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | kept_flags(path) | extra;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
}

/// Undo the octal escapes of /proc/self/mountinfo (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `top`, parents first.
fn mounts_under(top: &Path) -> Result<Vec<PathBuf>, Errno> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(|e| io_errno(&e))?;
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(top))
        .collect();
    out.sort_by_key(|p| p.components().count());
    out.dedup();
    Ok(out)
}

/// Make every mount at or below `top` read-only, nosuid and nodev: one recursive
/// `mount_setattr` (flags locked in a user namespace can be added, never cleared), else one
/// bind remount per mount, skipping those that cannot be reached (hidden, or below a
/// directory the caller may not enter: the agent cannot reach them either).
fn readonly_tree(top: &Path) -> Result<(), Fail> {
    match setattr_recursive(
        top,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    ) {
        Ok(()) => return Ok(()),
        Err(Errno::ENOSYS | Errno::EINVAL) => {}
        Err(e) => return Err(fail(format!("make {} read-only", top.display()))(e)),
    }
    for p in mounts_under(top).map_err(fail(format!("reading mounts under {}", top.display())))? {
        match remount_bind(&p, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, true) {
            Ok(()) | Err(Errno::ENOENT | Errno::EACCES) => {}
            Err(e) => return Err(fail(format!("remount {} read-only", p.display()))(e)),
        }
    }
    Ok(())
}

const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
pub(crate) struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// mount_setattr(2) on `dirfd`/`path` with `flags` (AT_RECURSIVE, AT_EMPTY_PATH...).
pub(crate) fn mount_setattr(
    dirfd: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_uint,
    attr: &MountAttr,
) -> Result<(), Errno> {
    // SAFETY: path is NUL-terminated and attr a properly sized mount_attr, both outliving
    // the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// Attach a detached mount tree (from open_tree) at `target`.
fn move_tree(tree: &std::os::fd::OwnedFd, target: &Path) -> Result<(), Errno> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let c =
        std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: move_mount with a descriptor we hold and NUL-terminated paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

fn setattr_recursive(path: &Path, set: u64) -> Result<(), Errno> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    mount_setattr(
        libc::AT_FDCWD,
        &c,
        AT_RECURSIVE,
        &MountAttr {
            attr_set: set,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        },
    )
}

/// Turn `dir` (a directory of the read-only host tree inside the new root) into a tmpfs that
/// holds binds of everything that was in it, so that mount points missing on the host can be
/// created there without touching the host (bwrap's tmpfs root, one level at a time). The
/// binds keep the read-only flags of what they show; the tmpfs is made read-only once the
/// mount points exist (see [`seal`]).
fn splice(dir: &Path, n: usize) -> Result<(), Fail> {
    let scratch = Path::new(STAGE_DIR).join(format!("aac-splice-{n}"));
    ensure_dir(&scratch)?;
    let what = || format!("splice {}", unstaged(dir).display());
    mount(
        Some(dir),
        &scratch,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail(what()))?;
    let mode = fs::metadata(&scratch)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o755);
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode={mode:o},size=64k").as_str()),
    )
    .map_err(fail(what()))?;
    let entries = fs::read_dir(&scratch).map_err(|e| fail(what())(io_errno(&e)))?;
    for entry in entries {
        let entry = entry.map_err(|e| fail(what())(io_errno(&e)))?;
        let ft = entry.file_type().map_err(|e| fail(what())(io_errno(&e)))?;
        let from = entry.path();
        let to = dir.join(entry.file_name());
        let made = if ft.is_symlink() {
            fs::read_link(&from).and_then(|t| symlink(t, &to))
        } else if ft.is_dir() {
            fs::create_dir(&to)
        } else {
            fs::File::create(&to).map(drop)
        };
        made.map_err(|e| fail(format!("splice {}", unstaged(&to).display()))(io_errno(&e)))?;
        if !ft.is_symlink() {
            mount(
                Some(from.as_path()),
                &to,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(fail(format!("splice {}", unstaged(&to).display())))?;
        }
    }
    umount2(&scratch, MntFlags::MNT_DETACH).map_err(fail(what()))?;
    let _ = fs::remove_dir(&scratch);
    Ok(())
}

/// Make the spliced tmpfs directories read-only, like the host tree they stand for.
fn seal(spliced: &[PathBuf]) -> Result<(), Fail> {
    for d in spliced.iter().rev() {
        remount_bind(d, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, true)
            .map_err(fail(format!("remount {} read-only", unstaged(d).display())))?;
    }
    Ok(())
}

/// A staged path as the container will see it.
fn unstaged(p: &Path) -> PathBuf {
    match p.strip_prefix(NEW_ROOT) {
        Ok(rel) => Path::new("/").join(rel),
        Err(_) => p.to_path_buf(),
    }
}

/// The deepest existing directory on the way to `target` (staged).
fn existing_ancestor(target: &Path) -> PathBuf {
    target
        .ancestors()
        .skip(1)
        .find(|a| a.exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(NEW_ROOT))
}

fn ensure_dir(path: &Path) -> Result<(), Fail> {
    if path.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(path).map_err(|e| fail(format!("create {}", path.display()))(io_errno(&e)))
}

fn ensure_file(path: &Path) -> Result<(), Fail> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map(drop)
        .map_err(|e| fail(format!("create {}", path.display()))(io_errno(&e)))
}

fn data(opts: &Options) -> Option<&str> {
    (!opts.data.is_empty()).then_some(opts.data.as_str())
}

fn mount_fs(
    source: &str,
    target: &Path,
    fstype: &str,
    opts: &Options,
    shown: &Path,
) -> Result<(), Fail> {
    ensure_dir(target)?;
    let mut flags = opts.flags;
    if opts.readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(Some(source), target, Some(fstype), flags, data(opts))
        .map_err(fail(format!("mount {} ({fstype})", shown.display())))
}

/// A cgroup2 mount that shows the container's cgroup namespace, read-only if asked.
///
/// With the host's root, the host's cgroup2 is already mounted at the target, and the kernel
/// refuses a second mount of the same superblock on the same mount point (EBUSY): detach the
/// host's first. In a user namespace that mount is locked to its parent and cannot be
/// detached: then bind the container's own cgroup directory (`own`, its path in the host's
/// hierarchy) from it, which shows the same tree a fresh mount would.
fn mount_cgroup2(
    target: &Path,
    shown: &Path,
    opts: &Options,
    own: Option<&Path>,
) -> Result<(), Fail> {
    ensure_dir(target)?;
    let attempt = || {
        mount(
            Some("cgroup2"),
            target,
            Some("cgroup2"),
            opts.flags,
            data(opts),
        )
    };
    let what = || format!("mount {} (cgroup2)", shown.display());
    let first = attempt();
    let detached = match first {
        Ok(()) => None,
        Err(Errno::EBUSY) => Some(umount2(target, MntFlags::MNT_DETACH).is_ok()),
        // Not allowed here at all (a user namespace that does not own the cgroup namespace).
        Err(Errno::EPERM | Errno::EACCES) => Some(false),
        Err(e) => return Err(fail(what())(e)),
    };
    match detached {
        None => {}
        Some(true) => attempt().map_err(fail(what()))?,
        Some(false) => {
            let Some(own) = own else {
                return Err(fail(what())(first.err().unwrap_or(Errno::EBUSY)));
            };
            let source = target.join(own.strip_prefix("/").unwrap_or(own));
            mount(
                Some(source.as_path()),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(fail(format!(
                "bind the container's cgroup {} on {}",
                own.display(),
                shown.display()
            )))?;
        }
    }
    // Each bind remount changes this mount only, never the shared cgroup2 superblock.
    let extra = opts.flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    remount_bind(target, extra, opts.readonly).map_err(fail(format!("remount {}", shown.display())))
}

/// Build the filesystem view and pivot into it. Runs in the child, in its own mount namespace.
pub(crate) fn setup_rootfs(
    root_source: &Path,
    host_root: bool,
    readonly: bool,
    ops: &[MountOp],
    trees: &[Option<std::os::fd::OwnedFd>],
    own_cgroup: Option<&Path>,
) -> Result<(), Fail> {
    let stage = Path::new(STAGE_DIR);
    let new_root = Path::new(NEW_ROOT);
    // Bind sources are host paths, but the staging tmpfs hides the host's /tmp: open them
    // (O_PATH) first and bind through /proc/self/fd.
    let mut sources = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let has_tree = matches!(trees.get(i), Some(Some(_)));
        sources.push(match op {
            MountOp::Bind { source, .. } if !has_tree => Some(
                fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                    .open(source)
                    .map_err(|e| fail(format!("bind source {}", source.display()))(io_errno(&e)))?,
            ),
            _ => None,
        });
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(fail("make / private"))?;
    mount(
        Some("tmpfs"),
        stage,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=700,size=64k"),
    )
    .map_err(fail(format!("mount staging tmpfs on {STAGE_DIR}")))?;
    ensure_dir(new_root)?;
    mount(
        Some(root_source),
        new_root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail(format!("bind {} as the root", root_source.display())))?;
    // The host's own tree is never the agent's to change; a prepared rootfs is read-only
    // when the spec says so.
    if readonly || host_root {
        readonly_tree(new_root)?;
    }
    let mut spliced: Vec<PathBuf> = Vec::new();

    for (i, op) in ops.iter().enumerate() {
        let target = staged(op.dest());
        let shown = op.dest();
        if !matches!(op, MountOp::KeepHost { .. })
            && !target.exists()
            && !may_create(shown, host_root, &ops[..i])
        {
            let dir = existing_ancestor(&target);
            if !spliced.contains(&dir) {
                splice(&dir, spliced.len())?;
                spliced.push(dir);
            }
        }
        match op {
            MountOp::Proc { opts, .. } => mount_fs("proc", &target, "proc", opts, shown)?,
            MountOp::KeepHost { readonly, .. } => {
                if *readonly && target.exists() {
                    readonly_tree(&target)?;
                }
            }
            MountOp::Cgroup2 { opts, .. } => mount_cgroup2(&target, shown, opts, own_cgroup)?,
            MountOp::Dev { opts, .. } => {
                mount_fs("tmpfs", &target, "tmpfs", opts, shown)?;
                populate_dev(&target)?;
            }
            MountOp::Fs {
                fstype,
                source,
                opts,
                ..
            } => mount_fs(source, &target, fstype, opts, shown)?,
            MountOp::Bind { source, opts, .. } => {
                let shown_source = source;
                if let Some(Some(tree)) = trees.get(i) {
                    let meta = nix::sys::stat::fstat(tree.as_raw_fd())
                        .map_err(fail(format!("bind source {}", shown_source.display())))?;
                    if meta.st_mode & libc::S_IFMT == libc::S_IFDIR {
                        ensure_dir(&target)?;
                    } else {
                        ensure_file(&target)?;
                    }
                    move_tree(tree, &target).map_err(fail(format!(
                        "bind {} on {}",
                        shown_source.display(),
                        shown.display()
                    )))?;
                } else {
                    let Some(Some(src)) = sources.get(i) else {
                        return Err(fail(format!("bind source {}", source.display()))(
                            Errno::EBADF,
                        ));
                    };
                    let meta = src.metadata().map_err(|e| {
                        fail(format!("bind source {}", shown_source.display()))(io_errno(&e))
                    })?;
                    let source = &PathBuf::from(format!("/proc/self/fd/{}", src.as_raw_fd()));
                    if meta.is_dir() {
                        ensure_dir(&target)?;
                    } else {
                        ensure_file(&target)?;
                    }
                    let mut flags = MsFlags::MS_BIND;
                    if opts.recursive {
                        flags |= MsFlags::MS_REC;
                    }
                    mount(
                        Some(source.as_path()),
                        &target,
                        None::<&str>,
                        flags,
                        None::<&str>,
                    )
                    .map_err(fail(format!(
                        "bind {} on {}",
                        shown_source.display(),
                        shown.display()
                    )))?;
                }
                // The bound tree may be read-only (read-only root): a volume is writable
                // unless asked otherwise.
                let mut extra = opts.flags;
                extra.remove(MsFlags::MS_RDONLY);
                let mut fl = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra;
                let kept = kept_flags(&target) & !MsFlags::MS_RDONLY;
                fl |= kept;
                if opts.readonly {
                    fl |= MsFlags::MS_RDONLY;
                }
                mount(None::<&str>, &target, None::<&str>, fl, None::<&str>)
                    .map_err(fail(format!("remount {}", shown.display())))?;
            }
        }
    }

    drop(sources);
    seal(&spliced)?;
    chdir(new_root).map_err(fail("chdir to the new root"))?;
    pivot_root(".", ".").map_err(|e| Fail::new(Stage::Pivot, e, "pivot_root"))?;
    // The old root now sits on top of the new one: detach it.
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| Fail::new(Stage::Pivot, e, "detach old root"))?;
    chdir("/").map_err(|e| Fail::new(Stage::Pivot, e, "chdir /"))?;
    Ok(())
}

fn populate_dev(dev: &Path) -> Result<(), Fail> {
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let target = dev.join(name);
        ensure_file(&target)?;
        mount(
            Some(host.as_path()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(fail(format!("bind /dev/{name}")))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        symlink(to, dev.join(link))
            .map_err(|e| fail(format!("symlink /dev/{link}"))(io_errno(&e)))?;
    }
    Ok(())
}

/// Hide `linux.maskedPaths`: /dev/null over files, an empty read-only tmpfs over directories.
pub(crate) fn mask_paths(paths: &[PathBuf]) -> Result<(), Fail> {
    for p in paths {
        let path = p.as_path();
        let err = |e| Fail::new(Stage::MaskedPaths, e, path.display().to_string());
        let r = if path.is_dir() {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )
        } else {
            mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        match r {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
}

/// `linux.readonlyPaths`: bind each onto itself and make it read-only.
pub(crate) fn readonly_paths(paths: &[PathBuf]) -> Result<(), Fail> {
    for p in paths {
        let path = p.as_path();
        let err = |e| Fail::new(Stage::ReadonlyPaths, e, path.display().to_string());
        match mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => {}
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(err(e)),
        }
        remount_bind(
            path,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            true,
        )
        .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let o = parse_options(&[
            "nosuid".into(),
            "strictatime".into(),
            "mode=755".into(),
            "size=65536k".into(),
            "ro".into(),
        ]);
        assert!(o.readonly);
        assert!(o
            .flags
            .contains(MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME));
        assert_eq!(o.data, "mode=755,size=65536k");
        let b = parse_options(&["rbind".into(), "rw".into()]);
        assert!(b.bind && b.recursive && !b.readonly);
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
