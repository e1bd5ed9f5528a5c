//! The process backend: run an agent's command directly on the host, isolated by the same OCI
//! spec the containerd backend uses.
//!
//! [`spawn`] forks a waiter that creates the namespaces (mount, PID, UTS, IPC, and network when
//! the spec asks for a new one; a user namespace too when rootless) and forks the container
//! process, PID 1 of the new PID namespace. The parent places that process in the cgroup(s)
//! it created, then lets it build its filesystem view (a recursive bind of the host root, or of
//! a prepared rootfs), pivot into it, drop to the spec's user and capabilities, install seccomp
//! and `execve`. The waiter stays behind, reaps the container and exits with its status, so
//! [`Child::wait`] reports it.
//!
//! Rootless runs apply cgroup limits only where the cgroup tree is writable by the user and
//! report the rest as [`NotEnforced`] warnings.

mod child;
mod mounts;
pub mod seccomp;
mod stage;
pub mod userns;

pub use mounts::NO_IDMAP;
pub use stage::Stage;

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use caps::CapsHashSet;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe2, read, write, ForkResult, Pid};
use oci_spec::runtime::{Capabilities, LinuxNamespaceType, PosixRlimitType, Spec};

use self::child::{CapPlan, ExecTarget, Fds, Plan, UserNs};
use self::stage::Fail;
use crate::cgroups::manager::{procs_files, relative_path};
use crate::cgroups::{Cgroups, Limits};
use crate::spec::builder::DEFAULT_PATH;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("container id {0:?}: use letters, digits, '-', '_' and '.' (at most 128)")]
    InvalidId(String),
    #[error("the spec cannot run as a host process: {0}")]
    InvalidSpec(String),
    #[error("command not found: {command}")]
    CommandNotFound { command: String },
    #[error("command not executable: {command}: {errno}")]
    CommandNotExecutable { command: String, errno: Errno },
    #[error("{stage}: {detail}: {errno}")]
    Setup {
        stage: Stage,
        detail: String,
        errno: Errno,
    },
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: PathBuf, reason: String },
    #[error(transparent)]
    Cgroups(#[from] crate::cgroups::CgroupError),
    #[error("opening {what} {path}: {source}")]
    Stdio {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {errno}")]
    Sys { context: &'static str, errno: Errno },
    #[error("the container process exited during set-up without saying why")]
    SetupVanished,
}

impl ProcessError {
    /// The exit code a CLI should use for this error (docker's conventions).
    pub fn exit_code(&self) -> i32 {
        match self {
            ProcessError::CommandNotFound { .. } => 127,
            ProcessError::CommandNotExecutable { .. } => 126,
            _ => 125,
        }
    }

    fn from_fail(f: Fail) -> ProcessError {
        match (f.stage, f.errno) {
            (Stage::Exec, Errno::ENOENT) => ProcessError::CommandNotFound { command: f.detail },
            (Stage::Exec, e @ (Errno::EACCES | Errno::ENOEXEC | Errno::EPERM)) => {
                ProcessError::CommandNotExecutable {
                    command: f.detail,
                    errno: e,
                }
            }
            (stage, errno) => ProcessError::Setup {
                stage,
                detail: f.detail,
                errno,
            },
        }
    }
}

fn sys(context: &'static str) -> impl FnOnce(Errno) -> ProcessError {
    move |errno| ProcessError::Sys { context, errno }
}

pub use crate::cgroups::NotEnforced;

/// One of the container's standard streams.
#[derive(Debug, Default)]
pub enum StdioSpec {
    /// The caller's own.
    #[default]
    Inherit,
    /// /dev/null.
    Null,
    /// An open descriptor (a pipe end, a terminal, a file).
    Fd(OwnedFd),
    /// A file: created if needed and appended to (read for stdin).
    Path(PathBuf),
}

#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: StdioSpec,
    pub stdout: StdioSpec,
    pub stderr: StdioSpec,
    /// Descriptors the waiter keeps open for as long as the container runs, never reading
    /// them: the read ends of the output FIFOs, so that the container's writes wait instead
    /// of failing with EPIPE while its monitor is gone (a new one reads on).
    pub hold: Vec<OwnedFd>,
    /// Where the waiter writes the container's exit code (decimal, 128+n for signal n) before
    /// it leaves, so a monitor that adopted the container (not the waiter's parent) learns it.
    pub exit_report: Option<OwnedFd>,
}

/// What the container sees as `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RootMode {
    /// The host's own root, bound recursively (read-only when `root.readonly`); `/tmp` and
    /// `/run` get private tmpfs mounts.
    #[default]
    Host,
    /// A prepared root filesystem (an unpacked image), bound recursively.
    Rootfs(PathBuf),
}

#[derive(Debug)]
pub struct SpawnOptions {
    /// Container ID.
    pub id: String,
    pub stdio: Stdio,
    pub root_mode: RootMode,
    /// Run without privileges: a user namespace maps the caller to root inside, and cgroup
    /// limits apply only where the cgroup tree is writable.
    pub rootless: bool,
    /// When run by root: the agent's root is an unprivileged range of host ids (the `aac`
    /// user's subordinate ids, see [`userns`]) rather than the host's root.
    pub own_ids: bool,
}

impl SpawnOptions {
    /// Defaults: inherited stdio, the host root, rootless when the caller is not root.
    pub fn new(id: &str) -> SpawnOptions {
        SpawnOptions {
            id: id.to_string(),
            stdio: Stdio::default(),
            root_mode: RootMode::Host,
            rootless: !nix::unistd::geteuid().is_root(),
            own_ids: true,
        }
    }
}

/// How the container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(Signal),
}

impl ExitStatus {
    /// The shell's view: the exit code, or 128 + the signal number.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Exited(c) => *c,
            ExitStatus::Signaled(s) => 128 + *s as i32,
        }
    }

    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }
}

/// A running container process.
#[derive(Debug)]
pub struct Child {
    /// Host PID of the container's process (PID 1 inside).
    pub pid: i32,
    /// Limits the spec asks for that this run does not enforce.
    pub warnings: Vec<NotEnforced>,
    id: String,
    waiter: Pid,
    pidfd: Option<OwnedFd>,
    cgroups: Cgroups,
    status: Option<ExitStatus>,
}

impl Child {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's cgroup path relative to each hierarchy's root.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroups.path
    }

    /// Wait for the container to exit. Its cgroup stays until [`Child::cleanup`].
    pub fn wait(&mut self) -> Result<ExitStatus, ProcessError> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        loop {
            match waitpid(self.waiter, None) {
                Ok(WaitStatus::Exited(_, code)) => {
                    let s = ExitStatus::Exited(code);
                    self.status = Some(s);
                    self.pidfd = None;
                    return Ok(s);
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    let s = ExitStatus::Signaled(sig);
                    self.status = Some(s);
                    self.pidfd = None;
                    return Ok(s);
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(sys("waiting for the container")(e)),
            }
        }
    }

    /// The exit status if the container has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        loop {
            let s = match waitpid(self.waiter, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => ExitStatus::Exited(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => ExitStatus::Signaled(sig),
                Ok(WaitStatus::StillAlive) => return Ok(None),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(sys("waiting for the container")(e)),
            };
            self.status = Some(s);
            self.pidfd = None;
            return Ok(Some(s));
        }
    }

    /// Wait at most `timeout`; then kill the process (SIGKILL) and report `None`.
    pub fn wait_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<Option<ExitStatus>, ProcessError> {
        let deadline = std::time::Instant::now() + timeout;
        let mut nap = std::time::Duration::from_millis(1);
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.kill(Signal::SIGKILL);
                self.wait()?;
                return Ok(None);
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(std::time::Duration::from_millis(20));
        }
    }

    /// A handle that signals the container's process from elsewhere (another thread) while
    /// this one waits for it.
    pub fn pidfd(&self) -> Result<PidFd, ProcessError> {
        match &self.pidfd {
            Some(fd) => Ok(PidFd {
                fd: fd.try_clone().map_err(|e| ProcessError::Sys {
                    context: "duplicating the pidfd",
                    errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
                })?,
                pid: self.pid,
            }),
            None => PidFd::open(self.pid),
        }
    }

    /// Send `sig` to the container's process. Uses a pidfd, so a recycled PID is never hit.
    pub fn kill(&self, sig: Signal) -> Result<(), ProcessError> {
        if self.status.is_some() {
            return Err(ProcessError::Sys {
                context: "signalling the container",
                errno: Errno::ESRCH,
            });
        }
        if let Some(fd) = &self.pidfd {
            // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig as libc::c_int,
                    std::ptr::null::<libc::siginfo_t>(),
                    0u32,
                )
            };
            if rc == 0 {
                return Ok(());
            }
            let e = Errno::last();
            if e != Errno::ENOSYS {
                return Err(sys("signalling the container")(e));
            }
        }
        kill(Pid::from_raw(self.pid), sig).map_err(sys("signalling the container"))
    }

    /// Remove the container's cgroup(s), killing anything left in them.
    pub fn cleanup(&self) -> Result<(), ProcessError> {
        if self.cgroups.remove() {
            Ok(())
        } else {
            Err(ProcessError::Cgroup {
                path: self.cgroups.path.clone(),
                reason: "could not remove it (processes left?)".into(),
            })
        }
    }
}

/// A process file descriptor: signals reach this process and never one that got its PID
/// later; it becomes readable when the process exits.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    pub fn open(pid: i32) -> Result<PidFd, ProcessError> {
        match pidfd_open(pid) {
            Some(fd) => Ok(PidFd { fd, pid }),
            None => Err(sys("opening a pidfd")(Errno::last())),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn signal(&self, sig: Signal) -> Result<(), ProcessError> {
        // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(sys("signalling the container")(Errno::last()))
        }
    }

    /// Block until the process has exited (works for processes that are not our children).
    pub fn wait_exit(&self) -> Result<(), ProcessError> {
        loop {
            let mut p = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut p, 1, -1) };
            if rc > 0 {
                return Ok(());
            }
            let e = Errno::last();
            if rc < 0 && e != Errno::EINTR {
                return Err(sys("waiting for the container")(e));
            }
        }
    }
}

/// Run `spec`'s process (its `args` are the command) inside the running container whose
/// main process is `pid`: in its cgroups and namespaces (user, cgroup, ipc, uts, net, pid,
/// mount, whichever differ from the caller's), under its root, with the spec's user, groups,
/// capabilities, no_new_privs, seccomp profile and rlimits. Returns once the command was
/// executed (or failed to); its cgroups belong to the container ([`Child::cleanup`] is a no-op).
pub fn exec_in(pid: i32, spec: &Spec, stdio: &Stdio) -> Result<Child, ProcessError> {
    let target = open_target(pid)?;
    let joins_userns = target
        .namespaces
        .iter()
        .any(|(_, f, _)| *f == CloneFlags::CLONE_NEWUSER);
    let opts = SpawnOptions {
        id: format!("exec-{pid}"),
        stdio: Stdio::default(),
        root_mode: RootMode::Host,
        rootless: joins_userns && !nix::unistd::geteuid().is_root(),
        own_ids: false,
    };
    let mut warnings = Vec::new();
    let plan = make_plan(spec, &opts, false, &mut warnings)?;
    let mut cgroups = Cgroups::none();
    let (cpid, waiter, pidfd) = start(stdio, &mut cgroups, |fds| {
        child::exec_waiter(&plan, &target, fds)
    })?;
    Ok(Child {
        pid: cpid,
        warnings,
        id: opts.id,
        waiter,
        pidfd,
        cgroups,
        status: None,
    })
}

fn open_flags(path: &Path, flags: OFlag) -> Result<OwnedFd, ProcessError> {
    nix::fcntl::open(
        path,
        flags | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    // SAFETY: open returned a new descriptor we own.
    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
    .map_err(|errno| ProcessError::Setup {
        stage: Stage::Namespaces,
        detail: format!("open {}", path.display()),
        errno,
    })
}

/// Open what [`exec_in`] needs of the container whose main process is `pid`.
fn open_target(pid: i32) -> Result<ExecTarget, ProcessError> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if !proc_dir.exists() {
        return Err(sys("finding the container's process")(Errno::ESRCH));
    }
    let mut namespaces = Vec::new();
    for (name, flag) in [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let theirs = proc_dir.join("ns").join(name);
        let same = match (
            std::fs::metadata(format!("/proc/self/ns/{name}")),
            std::fs::metadata(&theirs),
        ) {
            (Ok(a), Ok(b)) => {
                use std::os::unix::fs::MetadataExt;
                a.ino() == b.ino() && a.dev() == b.dev()
            }
            (_, Err(_)) => {
                return Err(ProcessError::Setup {
                    stage: Stage::Namespaces,
                    detail: format!("stat {}", theirs.display()),
                    errno: Errno::ESRCH,
                })
            }
            (Err(_), Ok(_)) => false,
        };
        if !same {
            namespaces.push((open_flags(&theirs, OFlag::O_RDONLY)?, flag, name));
        }
    }
    let rootless = namespaces
        .iter()
        .any(|(_, f, _)| *f == CloneFlags::CLONE_NEWUSER);
    if nix::unistd::geteuid().is_root() {
        // Root joins the others first (some, like a network namespace aac made, belong to
        // the initial user namespace, out of reach from inside the agent's), its user
        // namespace last. An unprivileged caller needs the user namespace first.
        if let Some(i) = namespaces
            .iter()
            .position(|(_, f, _)| *f == CloneFlags::CLONE_NEWUSER)
        {
            let user = namespaces.remove(i);
            namespaces.push(user);
        }
    }
    let root = open_flags(&proc_dir.join("root"), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    Ok(ExecTarget {
        cgroup_procs: procs_files(pid, rootless)?,
        namespaces,
        root,
    })
}

fn check_id(id: &str) -> Result<(), ProcessError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ProcessError::InvalidId(id.to_string()))
    }
}

fn cstring(s: &str, what: &str) -> Result<CString, ProcessError> {
    CString::new(s).map_err(|_| ProcessError::InvalidSpec(format!("{what} contains a NUL byte")))
}

fn rlimit_resource(t: PosixRlimitType) -> Option<Resource> {
    use PosixRlimitType as T;
    Some(match t {
        T::RlimitCpu => Resource::RLIMIT_CPU,
        T::RlimitFsize => Resource::RLIMIT_FSIZE,
        T::RlimitData => Resource::RLIMIT_DATA,
        T::RlimitStack => Resource::RLIMIT_STACK,
        T::RlimitCore => Resource::RLIMIT_CORE,
        T::RlimitRss => Resource::RLIMIT_RSS,
        T::RlimitNproc => Resource::RLIMIT_NPROC,
        T::RlimitNofile => Resource::RLIMIT_NOFILE,
        T::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        T::RlimitAs => Resource::RLIMIT_AS,
        T::RlimitLocks => Resource::RLIMIT_LOCKS,
        T::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        T::RlimitNice => Resource::RLIMIT_NICE,
        T::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        T::RlimitRttime => Resource::RLIMIT_RTTIME,
    })
}

fn cap_set(set: &Option<Capabilities>) -> Result<CapsHashSet, ProcessError> {
    let mut out = CapsHashSet::new();
    for c in set.iter().flatten() {
        let name = serde_json::to_value(c)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let cap = name
            .parse::<caps::Capability>()
            .map_err(|_| ProcessError::InvalidSpec(format!("unknown capability {name:?}")))?;
        out.insert(cap);
    }
    Ok(out)
}

/// Turn the spec into the child's plan. Everything that can be checked is checked here.
fn make_plan(
    spec: &Spec,
    opts: &SpawnOptions,
    spawning: bool,
    warnings: &mut Vec<NotEnforced>,
) -> Result<Plan, ProcessError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| ProcessError::InvalidSpec("no process".into()))?;
    let args_s = process.args().clone().unwrap_or_default();
    if args_s.is_empty() {
        return Err(ProcessError::InvalidSpec("process.args is empty".into()));
    }
    let args = args_s
        .iter()
        .map(|a| cstring(a, "an argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let env_s = process.env().clone().unwrap_or_default();
    let env = env_s
        .iter()
        .map(|e| cstring(e, "an environment variable"))
        .collect::<Result<Vec<_>, _>>()?;
    let path_var = env_s
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let path_dirs = path_var
        .split(':')
        .map(|d| if d.is_empty() { "." } else { d })
        .map(PathBuf::from)
        .collect();
    if process.terminal().unwrap_or(false) {
        warnings.push(NotEnforced::new(
            "terminal",
            "the process backend does not allocate a terminal; pass one as stdio",
        ));
    }

    let linux = spec.linux().as_ref();
    let mut unshare = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    let mut netns_path = None;
    let mut new_netns = false;
    let mut cgroupns = false;
    for ns in linux
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        match ns.typ() {
            LinuxNamespaceType::Network => match ns.path() {
                Some(p) => netns_path = Some(p.clone()),
                None => {
                    unshare |= CloneFlags::CLONE_NEWNET;
                    new_netns = true;
                }
            },
            LinuxNamespaceType::Cgroup => cgroupns = true,
            LinuxNamespaceType::User => {}
            LinuxNamespaceType::Pid
            | LinuxNamespaceType::Mount
            | LinuxNamespaceType::Uts
            | LinuxNamespaceType::Ipc => {
                if ns.path().is_some() {
                    return Err(ProcessError::InvalidSpec(format!(
                        "joining an existing {:?} namespace is not supported",
                        ns.typ()
                    )));
                }
            }
            other => {
                return Err(ProcessError::InvalidSpec(format!(
                    "namespace {other:?} is not supported"
                )))
            }
        }
    }

    let user = process.user();
    let (uid, gid) = (user.uid(), user.gid());
    let groups = user.additional_gids().clone().unwrap_or_default();
    let userns = if opts.rootless {
        if uid != 0 || gid != 0 || !groups.is_empty() {
            return Err(ProcessError::InvalidSpec(format!(
                "rootless runs map only the caller to root: user {uid}:{gid} (groups {groups:?}) \
                 is not mapped"
            )));
        }
        Some(UserNs {
            host_uid: nix::unistd::geteuid().as_raw(),
            host_gid: nix::unistd::getegid().as_raw(),
        })
    } else {
        None
    };
    // Root: the agent's own range of host ids, prepared here (see [`userns`]).
    let id_range = if spawning && !opts.rootless && opts.own_ids {
        Some(userns::host_range()?)
    } else {
        None
    };
    if let Some(r) = id_range {
        if [uid, gid].iter().chain(&groups).any(|id| !r.maps(*id)) {
            return Err(ProcessError::InvalidSpec(format!(
                "user {uid}:{gid} (groups {groups:?}) is outside the agent's user namespace ({})",
                r.describe()
            )));
        }
    }
    let userns_fd = id_range.map(userns::create).transpose()?;

    let caps = match process.capabilities() {
        Some(c) => Some(CapPlan {
            bounding: cap_set(c.bounding())?,
            effective: cap_set(c.effective())?,
            permitted: cap_set(c.permitted())?,
            inheritable: cap_set(c.inheritable())?,
            ambient: cap_set(c.ambient())?,
        }),
        None => None,
    };

    let mut rlimits = Vec::new();
    for r in process.rlimits().iter().flatten() {
        if let Some(res) = rlimit_resource(r.typ()) {
            rlimits.push((res, r.soft(), r.hard()));
        }
    }

    let seccomp = match linux.and_then(|l| l.seccomp().as_ref()) {
        None => None,
        Some(profile) => match seccomp::compile(profile) {
            Ok(Some(p)) => Some(p),
            Ok(None) => {
                warnings.push(NotEnforced::new(
                    "seccomp",
                    "this build has no seccomp compiler for OCI profiles",
                ));
                None
            }
            Err(e) => return Err(ProcessError::InvalidSpec(format!("seccomp profile: {e}"))),
        },
    };

    let (root_source, host_root) = match &opts.root_mode {
        RootMode::Host => (PathBuf::from("/"), true),
        RootMode::Rootfs(p) => (p.clone(), false),
    };
    let root_readonly = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let mut mounts = mounts::plan(spec.mounts().as_deref().unwrap_or(&[]), host_root, cgroupns);
    if userns.is_some() {
        mounts::drop_unmapped_ids(&mut mounts);
    }
    // Volumes (and the network files) as detached trees the parent opened: the agent may not
    // be able to reach their paths (aac's 0700 state), and in its own range of ids they are
    // idmapped so that its root owns what the host's root owns.
    let mut bind_trees = Vec::with_capacity(mounts.len());
    for op in &mounts {
        bind_trees.push(match (op, &userns_fd) {
            (mounts::MountOp::Bind { source, opts, .. }, Some(ns)) => {
                let (tree, mapped) =
                    userns::idmapped_tree(source, opts.recursive, (!opts.no_idmap).then_some(ns))?;
                if !mapped && !opts.readonly && !opts.no_idmap {
                    warnings.push(NotEnforced::new(
                        "volume ownership",
                        format!(
                            "{} cannot be idmapped (filesystem without idmapped mounts): the \
                             agent sees the host's owners there",
                            source.display()
                        ),
                    ));
                }
                Some(tree)
            }
            _ => None,
        });
    }
    let paths = |v: Option<&Vec<String>>| -> Vec<PathBuf> {
        v.into_iter().flatten().map(PathBuf::from).collect()
    };

    Ok(Plan {
        userns,
        netns_path,
        unshare,
        cgroupns,
        new_netns,
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        root_source,
        host_root,
        root_readonly,
        mounts,
        masked: paths(linux.and_then(|l| l.masked_paths().as_ref())),
        readonly: paths(linux.and_then(|l| l.readonly_paths().as_ref())),
        rlimits,
        uid,
        gid,
        can_setgroups: userns.is_none(),
        userns_fd,
        bind_trees,
        groups,
        caps,
        no_new_privs: process.no_new_privileges().unwrap_or(false),
        seccomp,
        args,
        env,
        path_dirs,
        cwd: process.cwd().clone(),
    })
}

/// The network namespace aac made for the agent belongs to the initial user namespace, where
/// the agent's capabilities (held in its own) count for nothing: what they would allow there,
/// the namespace's own sysctls allow instead. NET_BIND_SERVICE: ports below 1024
/// (`ip_unprivileged_port_start`); NET_RAW: ICMP echo sockets (`ping_group_range`). The
/// namespace is the agent's alone, so this reaches no one else.
fn network_sysctls(ns: &Path, caps: Option<&CapPlan>) -> Result<(), ProcessError> {
    let has = |c: caps::Capability| {
        caps.is_none_or(|p| p.effective.contains(&c) || p.ambient.contains(&c))
    };
    let mut writes: Vec<(&'static str, &'static str)> = Vec::new();
    if has(caps::Capability::CAP_NET_BIND_SERVICE) {
        writes.push(("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0"));
    }
    if has(caps::Capability::CAP_NET_RAW) {
        writes.push(("/proc/sys/net/ipv4/ping_group_range", "0 2147483647"));
    }
    if writes.is_empty() {
        return Ok(());
    }
    let ns = ns.to_path_buf();
    // A thread of its own joins the namespace (setns changes only the calling thread) and
    // ends there.
    std::thread::spawn(move || -> Result<(), ProcessError> {
        let err = |detail: String| {
            move |errno| ProcessError::Setup {
                stage: Stage::Namespaces,
                detail,
                errno,
            }
        };
        let f = std::fs::File::open(&ns)
            .map_err(|e| err(format!("open {}", ns.display()))(io_errno(&e)))?;
        nix::sched::setns(&f, CloneFlags::CLONE_NEWNET)
            .map_err(err(format!("join {}", ns.display())))?;
        for (path, value) in writes {
            std::fs::write(path, value).map_err(|e| err(format!("write {path}"))(io_errno(&e)))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| sys("setting the network namespace's sysctls")(Errno::EIO))?
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn open_stdio(s: &StdioSpec, fd: RawFd) -> Result<Option<OwnedFd>, ProcessError> {
    let what = ["stdin", "stdout", "stderr"][fd as usize];
    let open = |path: &Path, input: bool| {
        let mut o = OpenOptions::new();
        if input {
            o.read(true);
        } else {
            o.append(true).create(true);
        }
        o.custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map(OwnedFd::from)
            .map_err(|source| ProcessError::Stdio {
                what,
                path: path.to_path_buf(),
                source,
            })
    };
    Ok(match s {
        StdioSpec::Inherit => None,
        StdioSpec::Null => Some(open(Path::new("/dev/null"), fd == 0)?),
        StdioSpec::Fd(f) => Some(f.try_clone().map_err(|source| ProcessError::Stdio {
            what,
            path: PathBuf::from(format!("fd {}", f.as_raw_fd())),
            source,
        })?),
        StdioSpec::Path(p) => Some(open(p, fd == 0)?),
    })
}

/// Read a pipe to EOF.
fn read_all(fd: &OwnedFd) -> Result<Vec<u8>, Errno> {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn reap(pid: Pid) {
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            _ => return,
        }
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Start `spec`'s process on the host. Returns once the command was executed (or failed to).
pub fn spawn(spec: &Spec, opts: &SpawnOptions) -> Result<Child, ProcessError> {
    check_id(&opts.id)?;
    let mut warnings = Vec::new();
    let plan = make_plan(spec, opts, true, &mut warnings)?;
    if plan.userns_fd.is_some() {
        if let Some(ns) = &plan.netns_path {
            network_sysctls(ns, plan.caps.as_ref())?;
        }
    }

    // The spec's cgroups path is the cgroup's place in each hierarchy
    // ([`crate::cgroups::CgroupPlan::for_process`]); none means no cgroup of its own.
    let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    let path = cgroups_path
        .as_deref()
        .map(|p| relative_path(Path::new("/"), p));
    if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        return Err(ProcessError::InvalidSpec(
            "linux.cgroupsPath names the cgroup root".into(),
        ));
    }
    let limits = Limits::from_spec(spec.linux().as_ref().and_then(|l| l.resources().as_ref()));
    let mut cgroups = match &path {
        Some(path) => Cgroups::create(path, &limits, !opts.rootless, &mut warnings)?,
        None => Cgroups::none(),
    };

    match start(&opts.stdio, &mut cgroups, |fds| child::waiter(&plan, fds)) {
        Ok((pid, waiter, pidfd)) => {
            for w in &warnings {
                tracing::warn!(container = %opts.id, "{w}");
            }
            Ok(Child {
                pid,
                warnings,
                id: opts.id.clone(),
                waiter,
                pidfd,
                cgroups,
                status: None,
            })
        }
        Err(e) => {
            cgroups.remove();
            Err(e)
        }
    }
}

/// Fork, place the container in its cgroups (it joins those it can itself), let it run, and
/// learn whether `execve` worked.
fn start(
    stdio: &Stdio,
    cgroups: &mut Cgroups,
    run_waiter: impl FnOnce(Fds),
) -> Result<(i32, Pid, Option<OwnedFd>), ProcessError> {
    let dup = |f: &OwnedFd| {
        f.try_clone().map_err(|source| ProcessError::Stdio {
            what: "a held descriptor",
            path: PathBuf::from(format!("fd {}", f.as_raw_fd())),
            source,
        })
    };
    let hold = stdio.hold.iter().map(dup).collect::<Result<Vec<_>, _>>()?;
    let exit_report = stdio.exit_report.as_ref().map(dup).transpose()?;
    let stdio = [
        open_stdio(&stdio.stdin, 0)?,
        open_stdio(&stdio.stdout, 1)?,
        open_stdio(&stdio.stderr, 2)?,
    ];
    let join_cgroups = cgroups.self_join_files();
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(sys("creating a pipe"))?;
    let (pid_r, pid_w) = pipe2(OFlag::O_CLOEXEC).map_err(sys("creating a pipe"))?;
    let (sync_r, sync_w) = pipe2(OFlag::O_CLOEXEC).map_err(sys("creating a pipe"))?;

    // SAFETY: the child only runs the prepared plan and leaves with execve or _exit.
    let waiter = match unsafe { fork() }.map_err(sys("forking"))? {
        ForkResult::Child => {
            drop((err_r, pid_r, sync_w));
            run_waiter(Fds {
                err_w,
                pid_w,
                sync_r,
                stdio,
                join_cgroups,
                hold,
                exit_report,
            });
            // The waiter never returns; should it, leave without touching the parent's state.
            // SAFETY: _exit in a forked child.
            unsafe { libc::_exit(1) }
        }
        ForkResult::Parent { child } => child,
    };
    drop((err_w, pid_w, sync_r, stdio, join_cgroups, hold, exit_report));

    let fail = |e: ProcessError| {
        let _ = kill(waiter, Signal::SIGKILL);
        reap(waiter);
        e
    };

    let pid_bytes = read_all(&pid_r).map_err(|e| fail(sys("reading the container pid")(e)))?;
    let Ok(raw) = <[u8; 4]>::try_from(pid_bytes.as_slice()) else {
        // The waiter failed before forking: its reason is on the error pipe.
        let msg = read_all(&err_r).unwrap_or_default();
        reap(waiter);
        return Err(Fail::decode(&msg)
            .map(ProcessError::from_fail)
            .unwrap_or(ProcessError::SetupVanished));
    };
    let pid = i32::from_le_bytes(raw);
    let pidfd = pidfd_open(pid);

    cgroups.add(pid).map_err(|e| fail(e.into()))?;
    write(&sync_w, &[1u8]).map_err(|e| fail(sys("starting the container")(e)))?;
    drop(sync_w);

    let msg = read_all(&err_r).map_err(|e| fail(sys("reading the set-up result")(e)))?;
    if msg.is_empty() {
        return Ok((pid, waiter, pidfd));
    }
    reap(waiter);
    Err(Fail::decode(&msg)
        .map(ProcessError::from_fail)
        .unwrap_or(ProcessError::SetupVanished))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(check_id("abc-1_2.3").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn failures_round_trip_and_map_to_typed_errors() {
        let f = Fail::new(Stage::Mounts, Errno::EPERM, "mount /tmp");
        let back = Fail::decode(&f.encode()).unwrap();
        let e = ProcessError::from_fail(back);
        assert_eq!(
            e.to_string(),
            "setting up mounts: mount /tmp: EPERM: Operation not permitted"
        );
        let nf = ProcessError::from_fail(Fail::new(Stage::Exec, Errno::ENOENT, "nope"));
        assert!(matches!(nf, ProcessError::CommandNotFound { .. }));
        assert_eq!(nf.exit_code(), 127);
        let ne = ProcessError::from_fail(Fail::new(Stage::Exec, Errno::EACCES, "x"));
        assert_eq!(ne.exit_code(), 126);
        assert!(Fail::decode(&[99, 0, 0, 0, 0]).is_none());
    }
}
