//! What runs after `fork`: the waiter (which creates the namespaces and relays the exit status)
//! and the container process (PID 1 of its namespace), up to `execve`.
//!
//! Everything here was prepared by the parent; failures are sent back as
//! `[stage u8][errno i32 LE][detail]` on a close-on-exec pipe (EOF there means exec worked).

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use caps::{CapSet, CapsHashSet};
use nix::errno::Errno;
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::prctl;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{kill, signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{
    chdir, chroot, dup2, execve, fchdir, fork, getpid, read, setgroups, sethostname, setresgid,
    setresuid, write, ForkResult, Gid, Uid,
};

use super::mounts::{self, MountOp};
use super::seccomp;
use super::stage::{Fail, Stage};

/// User namespace set-up for rootless runs: map `host_uid`/`host_gid` to 0 inside.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserNs {
    pub host_uid: u32,
    pub host_gid: u32,
}

/// Capability sets to apply (names resolved in the parent).
#[derive(Debug, Clone, Default)]
pub(crate) struct CapPlan {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

/// Everything the child needs, computed before fork.
#[derive(Debug)]
pub(crate) struct Plan {
    pub userns: Option<UserNs>,
    pub netns_path: Option<PathBuf>,
    pub unshare: CloneFlags,
    pub cgroupns: bool,
    pub new_netns: bool,
    pub hostname: Option<String>,
    pub root_source: PathBuf,
    /// The root is the host's own (never create mount points on it).
    pub host_root: bool,
    pub root_readonly: bool,
    pub mounts: Vec<MountOp>,
    pub masked: Vec<PathBuf>,
    pub readonly: Vec<PathBuf>,
    pub rlimits: Vec<(Resource, u64, u64)>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Whether setgroups(2) may be called (not in a user namespace with setgroups denied).
    pub can_setgroups: bool,
    /// The user namespace to join (root-run agents: their own range of host ids).
    pub userns_fd: Option<OwnedFd>,
    /// For each of `mounts`: the detached tree the parent opened for a bind, if any.
    pub bind_trees: Vec<Option<OwnedFd>>,
    pub caps: Option<CapPlan>,
    pub no_new_privs: bool,
    pub seccomp: Option<seccomp::Program>,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    pub path_dirs: Vec<PathBuf>,
    pub cwd: PathBuf,
}

/// A running container to run a command in: descriptors opened before forking.
pub(crate) struct ExecTarget {
    /// `cgroup.procs` of each of the container's cgroups, open for writing.
    pub cgroup_procs: Vec<OwnedFd>,
    /// The namespaces that differ from the caller's, in the order to join them.
    pub namespaces: Vec<(OwnedFd, CloneFlags, &'static str)>,
    /// The container's root directory.
    pub root: OwnedFd,
}

/// File descriptors handed to the children.
pub(crate) struct Fds {
    /// Write end of the error pipe (close-on-exec).
    pub err_w: OwnedFd,
    /// Write end of the pipe the waiter sends the container's PID on.
    pub pid_w: OwnedFd,
    /// Read end of the pipe the parent says "go" on.
    pub sync_r: OwnedFd,
    /// stdin, stdout, stderr (None: inherit).
    pub stdio: [Option<OwnedFd>; 3],
    /// `tasks` files of the v1 cgroups the container process joins itself, with what they
    /// are (for errors).
    pub join_cgroups: Vec<(OwnedFd, String)>,
    /// Kept open by the waiter while the container runs (see `Stdio::hold`).
    pub hold: Vec<OwnedFd>,
    /// The waiter writes the container's exit code here before leaving.
    pub exit_report: Option<OwnedFd>,
}

fn report(fd: RawFd, f: &Fail) {
    let buf = f.encode();
    // SAFETY: fd is the error pipe's write end, open in this process.
    let _ = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit skips atexit handlers and stdio flushing that belong to the parent.
    unsafe { libc::_exit(code) }
}

/// Close every descriptor except `keep` (and 0-2): the parent may be multi-threaded and have
/// pipes of other spawns open; the waiter must not hold them.
fn close_others(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep.iter().filter_map(|f| u32::try_from(*f).ok()).collect();
    keep.sort_unstable();
    let mut next = 3u32;
    for k in keep.into_iter().filter(|k| *k >= 3) {
        if k > next {
            // SAFETY: closes descriptors this process does not use.
            unsafe { libc::syscall(libc::SYS_close_range, next, k - 1, 0) };
        }
        next = k + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0) };
}

/// The waiter: runs in the forked child of the caller. Never returns.
pub(crate) fn waiter(plan: &Plan, fds: Fds) -> ! {
    // A session of its own: a terminal's signals (^C) reach the monitor's launcher, which
    // forwards them, never the container directly (its monitor may share the launcher's
    // process: `aac run --rm` in the foreground).
    let _ = nix::unistd::setsid();
    let keep: Vec<RawFd> = plan
        .userns_fd
        .iter()
        .chain(plan.bind_trees.iter().flatten())
        .map(|f| f.as_raw_fd())
        .collect();
    run_waiter(
        fds,
        &keep,
        || namespaces(plan),
        |start| container(plan, start),
    )
}

/// The waiter of a command run inside a running container ([`super::exec_in`]): joins the
/// container's cgroups and namespaces, then forks the command (which lands in its PID
/// namespace), which enters its root and runs with the same credentials as the container.
pub(crate) fn exec_waiter(plan: &Plan, target: &ExecTarget, fds: Fds) -> ! {
    let mut extra: Vec<RawFd> = target.cgroup_procs.iter().map(|f| f.as_raw_fd()).collect();
    extra.extend(target.namespaces.iter().map(|(f, _, _)| f.as_raw_fd()));
    extra.push(target.root.as_raw_fd());
    run_waiter(
        fds,
        &extra,
        || enter(target),
        |start| {
            sync_and_stdio(start)?;
            fchdir(target.root.as_raw_fd())
                .map_err(|e| Fail::new(Stage::Pivot, e, "fchdir to the container's root"))?;
            chroot(".")
                .map_err(|e| Fail::new(Stage::Pivot, e, "chroot to the container's root"))?;
            finish(plan)
        },
    )
}

/// Join the target's cgroups (by writing our PID), then its namespaces in order.
fn enter(target: &ExecTarget) -> Result<(), Fail> {
    for f in &target.cgroup_procs {
        // SAFETY: writes two bytes to a descriptor open in this process.
        let rc = unsafe { libc::write(f.as_raw_fd(), b"0\n".as_ptr().cast(), 2) };
        if rc < 0 {
            return Err(Fail::new(
                Stage::Namespaces,
                Errno::last(),
                "join the container's cgroup",
            ));
        }
    }
    for (f, flag, name) in &target.namespaces {
        setns(f, *flag)
            .map_err(|e| Fail::new(Stage::Namespaces, e, format!("join the {name} namespace")))?;
    }
    Ok(())
}

/// What a waiter does around its two steps: `enter` (namespaces) in the waiter, `body` in
/// the forked process, then relay the exit status.
fn run_waiter(
    fds: Fds,
    extra_keep: &[RawFd],
    enter: impl FnOnce() -> Result<(), Fail>,
    body: impl FnOnce(Start) -> Result<Never, Fail>,
) -> ! {
    let mut keep = vec![
        fds.err_w.as_raw_fd(),
        fds.pid_w.as_raw_fd(),
        fds.sync_r.as_raw_fd(),
    ];
    keep.extend(fds.stdio.iter().flatten().map(|f| f.as_raw_fd()));
    keep.extend(fds.join_cgroups.iter().map(|(f, _)| f.as_raw_fd()));
    keep.extend(fds.hold.iter().map(|f| f.as_raw_fd()));
    keep.extend(fds.exit_report.iter().map(|f| f.as_raw_fd()));
    keep.extend_from_slice(extra_keep);
    close_others(&keep);
    let _ = prctl::set_name(c"aac-wait");
    // A container's files get the usual umask, not the monitor's private one (runc's default).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);

    if let Err(f) = enter() {
        report(fds.err_w.as_raw_fd(), &f);
        exit_now(1);
    }

    // SAFETY: this process is single-threaded (a fresh fork).
    match unsafe { fork() } {
        Err(e) => {
            report(fds.err_w.as_raw_fd(), &Fail::new(Stage::Fork, e, "fork"));
            exit_now(1);
        }
        Ok(ForkResult::Child) => {
            let Fds {
                err_w,
                pid_w,
                sync_r,
                stdio,
                join_cgroups,
                hold,
                exit_report,
            } = fds;
            drop((pid_w, hold, exit_report));
            let err_fd = err_w.as_raw_fd();
            match body(Start {
                sync_r,
                stdio,
                join_cgroups,
            }) {
                Ok(never) => match never {},
                Err(f) => {
                    report(err_fd, &f);
                    let code = match (f.stage, f.errno) {
                        (Stage::Exec, Errno::ENOENT) => 127,
                        (Stage::Exec, Errno::EACCES | Errno::ENOEXEC) => 126,
                        _ => 1,
                    };
                    exit_now(code);
                }
            }
        }
        Ok(ForkResult::Parent { child }) => {
            let Fds {
                err_w,
                pid_w,
                sync_r,
                stdio,
                join_cgroups,
                hold,
                exit_report,
            } = fds;
            drop((err_w, sync_r, stdio, join_cgroups));
            let _ = write(&pid_w, &child.as_raw().to_le_bytes());
            drop(pid_w);
            // Job-control and terminal signals are for the container, not for the waiter.
            for s in [
                Signal::SIGINT,
                Signal::SIGQUIT,
                Signal::SIGHUP,
                Signal::SIGTERM,
                Signal::SIGTSTP,
                Signal::SIGTTIN,
                Signal::SIGTTOU,
                Signal::SIGPIPE,
            ] {
                // SAFETY: SIG_IGN installs no handler code.
                let _ = unsafe { signal(s, SigHandler::SigIgn) };
            }
            relay(child, hold, exit_report)
        }
    }
}

/// Join the v1 cgroups the parent left to us: `0` into each `tasks` file moves the calling
/// thread without the threadgroup lock a move through `cgroup.procs` takes (see
/// `cgroup.rs`).
fn join_own_cgroups(files: Vec<(OwnedFd, String)>) -> Result<(), Fail> {
    for (f, what) in &files {
        // SAFETY: writes one byte to a descriptor open in this process.
        let rc = unsafe { libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) };
        if rc < 0 {
            return Err(Fail::new(Stage::Cgroup, Errno::last(), what.clone()));
        }
    }
    Ok(())
}

/// Wait for the container and leave with the same status, after writing it to `exit_report`.
/// `hold` stays open until then.
fn relay(child: nix::unistd::Pid, hold: Vec<OwnedFd>, exit_report: Option<OwnedFd>) -> ! {
    let report = |code: i32| {
        if let Some(f) = &exit_report {
            let text = code.to_string();
            // SAFETY: writes a few bytes to a descriptor open in this process.
            let _ = unsafe { libc::write(f.as_raw_fd(), text.as_ptr().cast(), text.len()) };
        }
    };
    let _hold = hold;
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => {
                report(code);
                exit_now(code)
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                report(128 + sig as i32);
                let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
                let _ = prctl::set_dumpable(false);
                // SAFETY: restoring the default disposition.
                let _ = unsafe { signal(sig, SigHandler::SigDfl) };
                let mut set = SigSet::empty();
                set.add(sig);
                let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
                let _ = kill(getpid(), sig);
                exit_now(128 + sig as i32);
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => exit_now(255),
        }
    }
}

fn write_file(path: &str, content: &str, stage: Stage) -> Result<(), Fail> {
    fs::write(path, content).map_err(|e| {
        Fail::new(
            stage,
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            format!("write {path}"),
        )
    })
}

fn join_netns(plan: &Plan) -> Result<(), Fail> {
    if let Some(p) = &plan.netns_path {
        let f = fs::File::open(p).map_err(|e| {
            Fail::new(
                Stage::Namespaces,
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                format!("open {}", p.display()),
            )
        })?;
        setns(&f, CloneFlags::CLONE_NEWNET)
            .map_err(|e| Fail::new(Stage::Namespaces, e, format!("join {}", p.display())))?;
    }
    Ok(())
}

/// In the waiter: the user namespace (rootless: a new one mapping the caller; root: the one
/// the parent prepared, after the network namespace, which belongs to the initial one), then
/// the new namespaces. The next fork lands in them (PID 1 of the new PID namespace).
fn namespaces(plan: &Plan) -> Result<(), Fail> {
    if let Some(u) = plan.userns {
        unshare(CloneFlags::CLONE_NEWUSER)
            .map_err(|e| Fail::new(Stage::UserNamespace, e, "unshare user namespace"))?;
        write_file("/proc/self/setgroups", "deny", Stage::UserNamespace)?;
        write_file(
            "/proc/self/uid_map",
            &format!("0 {} 1\n", u.host_uid),
            Stage::UserNamespace,
        )?;
        write_file(
            "/proc/self/gid_map",
            &format!("0 {} 1\n", u.host_gid),
            Stage::UserNamespace,
        )?;
    }
    join_netns(plan)?;
    if let Some(ns) = &plan.userns_fd {
        setns(ns, CloneFlags::CLONE_NEWUSER)
            .map_err(|e| Fail::new(Stage::UserNamespace, e, "join the agent's user namespace"))?;
        // Become its root (a host id of the agent's range): files made from here on have
        // owners that exist inside.
        let root_g = Gid::from_raw(0);
        setresgid(root_g, root_g, root_g)
            .map_err(|e| Fail::new(Stage::UserNamespace, e, "setresgid 0"))?;
        setgroups(&[]).map_err(|e| Fail::new(Stage::UserNamespace, e, "setgroups"))?;
        let root_u = Uid::from_raw(0);
        setresuid(root_u, root_u, root_u)
            .map_err(|e| Fail::new(Stage::UserNamespace, e, "setresuid 0"))?;
    }
    unshare(plan.unshare)
        .map_err(|e| Fail::new(Stage::Namespaces, e, format!("unshare {:?}", plan.unshare)))
}

pub(crate) enum Never {}

/// What the forked process starts with.
pub(crate) struct Start {
    sync_r: OwnedFd,
    stdio: [Option<OwnedFd>; 3],
    join_cgroups: Vec<(OwnedFd, String)>,
}

/// Wait for the parent's "go", join the cgroups left to us, then put the standard streams in
/// place.
fn sync_and_stdio(start: Start) -> Result<(), Fail> {
    let Start {
        sync_r,
        stdio,
        join_cgroups,
    } = start;
    // If the waiter dies, so does the container.
    prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| Fail::new(Stage::Sync, e, "set parent-death signal"))?;
    let mut b = [0u8; 1];
    match read(sync_r.as_raw_fd(), &mut b) {
        Ok(1) => {}
        Ok(_) => return Err(Fail::new(Stage::Sync, Errno::EPIPE, "parent went away")),
        Err(e) => return Err(Fail::new(Stage::Sync, e, "read sync pipe")),
    }
    drop(sync_r);
    // Still single-threaded: moving this one thread moves the whole process.
    join_own_cgroups(join_cgroups)?;

    for (target, fd) in stdio.iter().enumerate() {
        if let Some(fd) = fd {
            dup2(fd.as_raw_fd(), target as RawFd)
                .map_err(|e| Fail::new(Stage::Stdio, e, format!("dup2 onto fd {target}")))?;
        }
    }
    drop(stdio);
    Ok(())
}

/// The container process, from the parent's "go" to `execve`.
fn container(plan: &Plan, start: Start) -> Result<Never, Fail> {
    sync_and_stdio(start)?;

    // Our cgroup in the host's hierarchy, read before the cgroup namespace hides it.
    let own_cgroup = plan
        .cgroupns
        .then(crate::cgroups::driver::own_unified_cgroup)
        .flatten()
        .map(PathBuf::from);
    if plan.cgroupns {
        unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| Fail::new(Stage::Namespaces, e, "unshare cgroup namespace"))?;
    }
    if let Some(h) = &plan.hostname {
        sethostname(h).map_err(|e| Fail::new(Stage::Hostname, e, h.clone()))?;
    }
    if plan.new_netns {
        crate::network::netns::loopback_up()
            .map_err(|e| Fail::new(Stage::Namespaces, e, "bring up lo"))?;
    }

    mounts::setup_rootfs(
        &plan.root_source,
        plan.host_root,
        plan.root_readonly,
        &plan.mounts,
        &plan.bind_trees,
        own_cgroup.as_deref(),
    )?;
    mounts::mask_paths(&plan.masked)?;
    mounts::readonly_paths(&plan.readonly)?;

    finish(plan)
}

/// Limits, credentials, capabilities, seccomp, working directory, then `execve`.
fn finish(plan: &Plan) -> Result<Never, Fail> {
    for (res, soft, hard) in &plan.rlimits {
        // Never above the current hard limit: raising it needs CAP_SYS_RESOURCE.
        let (_, cur_hard) =
            getrlimit(*res).map_err(|e| Fail::new(Stage::Rlimits, e, format!("get {res:?}")))?;
        let hard = (*hard).min(cur_hard);
        let soft = (*soft).min(hard);
        setrlimit(*res, soft, hard)
            .map_err(|e| Fail::new(Stage::Rlimits, e, format!("set {res:?}")))?;
    }

    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it while we have it.
    if !plan.no_new_privs {
        if let Some(p) = &plan.seccomp {
            seccomp::install(p).map_err(|e| Fail::new(Stage::Seccomp, e, "install filter"))?;
        }
    }

    switch_user(plan)?;

    if plan.no_new_privs {
        prctl::set_no_new_privs().map_err(|e| Fail::new(Stage::NoNewPrivs, e, "prctl"))?;
    }

    chdir(&plan.cwd).map_err(|e| Fail::new(Stage::Cwd, e, plan.cwd.display().to_string()))?;

    // Signals: default dispositions and an empty mask, as a fresh process expects.
    for s in Signal::iterator() {
        if s != Signal::SIGKILL && s != Signal::SIGSTOP {
            // SAFETY: SIG_DFL installs no handler code.
            let _ = unsafe { signal(s, SigHandler::SigDfl) };
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // Nothing but stdio and the error pipe (already close-on-exec) reaches the program.
    // SAFETY: marks descriptors close-on-exec; no memory is touched.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };

    if plan.no_new_privs {
        if let Some(p) = &plan.seccomp {
            seccomp::install(p).map_err(|e| Fail::new(Stage::Seccomp, e, "install filter"))?;
        }
    }
    exec(plan)
}

fn caps_err(stage: Stage, what: &str) -> impl FnOnce(caps::errors::CapsError) -> Fail + '_ {
    move |e| {
        let errno = Errno::last();
        Fail::new(stage, errno, format!("{what}: {e}"))
    }
}

fn switch_user(plan: &Plan) -> Result<(), Fail> {
    if let Some(c) = &plan.caps {
        // The bounding set first: dropping from it needs CAP_SETPCAP, which we still hold.
        for cap in caps::runtime::thread_all_supported() {
            if !c.bounding.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(caps_err(Stage::Capabilities, "drop from bounding set"))?;
            }
        }
        prctl::set_keepcaps(true).map_err(|e| Fail::new(Stage::User, e, "keepcaps"))?;
    }
    if plan.can_setgroups {
        let groups: Vec<Gid> = plan.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        setgroups(&groups).map_err(|e| Fail::new(Stage::User, e, "setgroups"))?;
    }
    let gid = Gid::from_raw(plan.gid);
    setresgid(gid, gid, gid).map_err(|e| Fail::new(Stage::User, e, format!("setresgid {gid}")))?;
    let uid = Uid::from_raw(plan.uid);
    setresuid(uid, uid, uid).map_err(|e| Fail::new(Stage::User, e, format!("setresuid {uid}")))?;
    if let Some(c) = &plan.caps {
        prctl::set_keepcaps(false).map_err(|e| Fail::new(Stage::User, e, "keepcaps"))?;
        // Effective must stay within permitted at every step: shrink effective first.
        let effective: CapsHashSet = c.effective.intersection(&c.permitted).copied().collect();
        caps::set(None, CapSet::Effective, &effective)
            .map_err(caps_err(Stage::Capabilities, "effective"))?;
        caps::set(None, CapSet::Permitted, &c.permitted)
            .map_err(caps_err(Stage::Capabilities, "permitted"))?;
        caps::set(None, CapSet::Inheritable, &c.inheritable)
            .map_err(caps_err(Stage::Capabilities, "inheritable"))?;
        caps::clear(None, CapSet::Ambient).map_err(caps_err(Stage::Capabilities, "ambient"))?;
        for cap in &c.ambient {
            caps::raise(None, CapSet::Ambient, *cap)
                .map_err(caps_err(Stage::Capabilities, "ambient"))?;
        }
    }
    Ok(())
}

/// `execve` the command, searching the spec's PATH when it has no slash. Like execvp: a
/// permission error is remembered while later directories are tried.
fn exec(plan: &Plan) -> Result<Never, Fail> {
    let Some(arg0) = plan.args.first() else {
        return Err(Fail::new(Stage::Exec, Errno::ENOENT, ""));
    };
    let name = arg0.to_string_lossy().into_owned();
    if name.contains('/') {
        let e = execve(arg0, &plan.args, &plan.env).unwrap_err_errno();
        return Err(Fail::new(Stage::Exec, e, name));
    }
    let mut seen_eacces = None;
    for dir in &plan.path_dirs {
        let Ok(cand) = CString::new(dir.join(&name).into_os_string().into_encoded_bytes()) else {
            continue;
        };
        match execve(&cand, &plan.args, &plan.env).unwrap_err_errno() {
            Errno::ENOENT | Errno::ENOTDIR => {}
            e @ (Errno::EACCES | Errno::EPERM) => seen_eacces = Some(e),
            e => return Err(Fail::new(Stage::Exec, e, name)),
        }
    }
    Err(Fail::new(
        Stage::Exec,
        seen_eacces.unwrap_or(Errno::ENOENT),
        name,
    ))
}

trait ErrnoOnly {
    fn unwrap_err_errno(self) -> Errno;
}

impl ErrnoOnly for nix::Result<std::convert::Infallible> {
    fn unwrap_err_errno(self) -> Errno {
        match self {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }
}
