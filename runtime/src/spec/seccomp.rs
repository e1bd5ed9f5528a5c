//! aac's default seccomp profile, loading of user profiles, and compilation to BPF.
//!
//! The default profile is an allowlist: every syscall not named here fails with `EPERM`.
//! The tables below are aac's own. They were checked against Docker/moby's default profile
//! by the tests at the bottom of this file, which assert that whatever moby denies (for any
//! capability set, on x86_64 and aarch64), aac denies too. aac is stricter in a few places:
//!
//! * `socket` is allowed only for the address families a service uses (`AF_UNIX`, `AF_INET`,
//!   `AF_INET6`, `AF_NETLINK`, `AF_PACKET`), where moby allows all but `AF_ALG` and `AF_VSOCK`;
//! * `ptrace`, `process_vm_readv` and `process_vm_writev` need `CAP_SYS_PTRACE` (moby allows
//!   them to everyone on kernels >= 4.8);
//! * the obsolete `epoll_ctl_old`, `epoll_wait_old` and `remap_file_pages` are not allowed.
//!
//! The profile is an OCI `linux.seccomp` object ([`LinuxSeccomp`]) so that containerd/runc can
//! use it as is. [`compile_bpf`] turns the same object into classic BPF with the `seccompiler`
//! crate for the plain-process backend, and [`install_filters`] installs the result.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
    LinuxSyscallBuilder,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Deserialize;

/// `EPERM`: what a denied syscall returns.
pub const EPERM: u32 = 1;
/// `ENOSYS`: what `clone3` returns without `CAP_SYS_ADMIN`, so that libc falls back to `clone`
/// (whose flags the profile can inspect, unlike `clone3`'s, which live in memory).
pub const ENOSYS: u32 = 38;

/// The namespace flags of `clone(2)`: `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS |
/// CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`. Without `CAP_SYS_ADMIN`,
/// `clone` is allowed only when none of them is set.
pub const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// Errors from building, loading or compiling seccomp profiles.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot read seccomp profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("seccomp profile {path} is not a valid profile: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("seccomp profile {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot build the OCI seccomp section: {0}")]
    Build(#[from] oci_spec::OciSpecError),
    #[error("cannot read the host kernel version (needed for minKernel in {path}): {reason}")]
    KernelVersion { path: PathBuf, reason: String },
    #[error("syscall {syscall:?} cannot be compiled to BPF: {reason}")]
    UnsupportedForBpf { syscall: String, reason: String },
    #[error("seccomp BPF compilation failed: {0}")]
    Compile(#[from] seccompiler::BackendError),
    #[error("installing the seccomp filter failed: {0}")]
    Install(seccompiler::Error),
}

/// The architectures aac's default profile and BPF compiler support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeccompArch {
    X86_64,
    Aarch64,
}

impl SeccompArch {
    /// The architecture this binary runs on, if supported.
    pub fn host() -> Option<Self> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Self::X86_64),
            "aarch64" => Some(Self::Aarch64),
            _ => None,
        }
    }

    /// The OCI architectures a profile for this host lists: the native one and the 32-bit
    /// ABIs the kernel can also run (as moby's `archMap` does).
    pub fn oci_architectures(self) -> Vec<Arch> {
        match self {
            Self::X86_64 => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
            Self::Aarch64 => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        }
    }

    fn target(self) -> TargetArch {
        match self {
            Self::X86_64 => TargetArch::x86_64,
            Self::Aarch64 => TargetArch::aarch64,
        }
    }

    /// The number of `name` on this architecture, or `None` if it has no such syscall.
    pub fn syscall_number(self, name: &str) -> Option<i64> {
        match self {
            Self::X86_64 => syscalls::x86_64::Sysno::from_str(name)
                .ok()
                .map(|s| i64::from(s.id())),
            Self::Aarch64 => syscalls::aarch64::Sysno::from_str(name)
                .ok()
                .map(|s| i64::from(s.id())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The default profile's tables.
// ---------------------------------------------------------------------------------------------

/// When a group of syscalls is allowed.
struct Gate {
    /// Only on this architecture.
    arch: Option<SeccompArch>,
    /// Only when the container has this capability (name without `CAP_`).
    cap: Option<&'static str>,
}

struct AllowGroup {
    gate: Gate,
    names: &'static [&'static str],
}

const ALWAYS: Gate = Gate {
    arch: None,
    cap: None,
};

const fn with_cap(cap: &'static str) -> Gate {
    Gate {
        arch: None,
        cap: Some(cap),
    }
}

const fn on_arch(arch: SeccompArch) -> Gate {
    Gate {
        arch: Some(arch),
        cap: None,
    }
}

/// Reading and writing file descriptors.
const FD_IO: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "preadv2",
    "pwritev",
    "pwritev2",
    "lseek",
    "_llseek",
    "sendfile",
    "sendfile64",
    "splice",
    "tee",
    "vmsplice",
    "copy_file_range",
    "fadvise64",
    "fadvise64_64",
    "readahead",
    "fallocate",
    "ftruncate",
    "ftruncate64",
    "truncate",
    "truncate64",
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "flock",
    "fcntl",
    "fcntl64",
    "ioctl",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "pipe",
    "pipe2",
    "cachestat",
];

/// Paths, directories and file metadata.
const FILESYSTEM: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "access",
    "faccessat",
    "faccessat2",
    "stat",
    "stat64",
    "lstat",
    "lstat64",
    "fstat",
    "fstat64",
    "fstatat64",
    "newfstatat",
    "statx",
    "statfs",
    "statfs64",
    "fstatfs",
    "fstatfs64",
    "getdents",
    "getdents64",
    "getcwd",
    "chdir",
    "fchdir",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "unlink",
    "unlinkat",
    "readlink",
    "readlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "chown32",
    "fchown",
    "fchown32",
    "fchownat",
    "lchown",
    "lchown32",
    "umask",
    "utime",
    "utimes",
    "utimensat",
    "utimensat_time64",
    "futimesat",
    "name_to_handle_at",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "fanotify_mark",
    "listmount",
    "statmount",
];

/// Extended attributes.
const XATTR: &[&str] = &[
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "getxattrat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "setxattrat",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "listxattrat",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "removexattrat",
];

/// Memory management.
const MEMORY: &[&str] = &[
    "brk",
    "mmap",
    "mmap2",
    "munmap",
    "mremap",
    "mprotect",
    "pkey_mprotect",
    "pkey_alloc",
    "pkey_free",
    "madvise",
    "mincore",
    "msync",
    "mlock",
    "mlock2",
    "mlockall",
    "munlock",
    "munlockall",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mseal",
    "map_shadow_stack",
    "process_mrelease",
];

/// Process and thread life cycle, self-inspection and self-restriction.
const PROCESS: &[&str] = &[
    "execve",
    "execveat",
    "fork",
    "vfork",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "waitpid",
    "getpid",
    "getppid",
    "gettid",
    "getpgid",
    "getpgrp",
    "setpgid",
    "getsid",
    "setsid",
    "prctl",
    "capget",
    "capset",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "restart_syscall",
    "seccomp",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "pidfd_open",
    "pidfd_send_signal",
    "uname",
    "sysinfo",
    "getrandom",
    "getcpu",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futex_wait",
    "futex_wake",
    "futex_requeue",
    "get_thread_area",
    "set_thread_area",
    "uretprobe",
];

/// User and group identities (changing them is still checked by the kernel's capability rules).
const IDENTITY: &[&str] = &[
    "getuid",
    "getuid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getegid",
    "getegid32",
    "getresuid",
    "getresuid32",
    "getresgid",
    "getresgid32",
    "getgroups",
    "getgroups32",
    "setuid",
    "setuid32",
    "setgid",
    "setgid32",
    "setreuid",
    "setreuid32",
    "setregid",
    "setregid32",
    "setresuid",
    "setresuid32",
    "setresgid",
    "setresgid32",
    "setfsuid",
    "setfsuid32",
    "setfsgid",
    "setfsgid32",
    "setgroups",
    "setgroups32",
];

/// Resource limits, accounting and scheduling of the caller's own processes.
const LIMITS_AND_SCHEDULING: &[&str] = &[
    "getrlimit",
    "ugetrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "getpriority",
    "setpriority",
    "times",
    "ioprio_get",
    "ioprio_set",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getattr",
    "sched_setattr",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
];

/// Signals.
const SIGNALS: &[&str] = &[
    "kill",
    "tkill",
    "tgkill",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "sigprocmask",
    "sigreturn",
    "signalfd",
    "signalfd4",
    "pause",
    "alarm",
];

/// Clocks and timers (setting the clock needs `CAP_SYS_TIME`, see below).
const TIME: &[&str] = &[
    "time",
    "gettimeofday",
    "clock_gettime",
    "clock_gettime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "nanosleep",
    "adjtimex",
    "clock_adjtime",
    "clock_adjtime64",
    "getitimer",
    "setitimer",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
];

/// Waiting for events.
const EVENTS: &[&str] = &[
    "poll",
    "ppoll",
    "ppoll_time64",
    "select",
    "_newselect",
    "pselect6",
    "pselect6_time64",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
];

/// Sockets once created (`socket` itself is filtered by address family below).
const NETWORK: &[&str] = &[
    "socketpair",
    "bind",
    "connect",
    "listen",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "shutdown",
    "send",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "recv",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "recvmmsg_time64",
    "socketcall",
];

/// System V and POSIX IPC (private to the container's IPC namespace).
const IPC: &[&str] = &[
    "ipc",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "semctl",
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_notify",
    "mq_getsetattr",
];

/// Everything `CAP_SYS_ADMIN` unlocks: namespaces, mounts, and a few admin interfaces.
const SYS_ADMIN: &[&str] = &[
    "bpf",
    "clone",
    "clone3",
    "fanotify_init",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "lookup_dcookie",
    "lsm_get_self_attr",
    "lsm_list_modules",
    "lsm_set_self_attr",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "perf_event_open",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "setns",
    "syslog",
    "umount",
    "umount2",
    "unshare",
];

const ALLOW_GROUPS: &[AllowGroup] = &[
    AllowGroup {
        gate: ALWAYS,
        names: FD_IO,
    },
    AllowGroup {
        gate: ALWAYS,
        names: FILESYSTEM,
    },
    AllowGroup {
        gate: ALWAYS,
        names: XATTR,
    },
    AllowGroup {
        gate: ALWAYS,
        names: MEMORY,
    },
    AllowGroup {
        gate: ALWAYS,
        names: PROCESS,
    },
    AllowGroup {
        gate: ALWAYS,
        names: IDENTITY,
    },
    AllowGroup {
        gate: ALWAYS,
        names: LIMITS_AND_SCHEDULING,
    },
    AllowGroup {
        gate: ALWAYS,
        names: SIGNALS,
    },
    AllowGroup {
        gate: ALWAYS,
        names: TIME,
    },
    AllowGroup {
        gate: ALWAYS,
        names: EVENTS,
    },
    AllowGroup {
        gate: ALWAYS,
        names: NETWORK,
    },
    AllowGroup {
        gate: ALWAYS,
        names: IPC,
    },
    // Architecture-private syscalls.
    AllowGroup {
        gate: on_arch(SeccompArch::X86_64),
        names: &["arch_prctl", "modify_ldt"],
    },
    AllowGroup {
        gate: on_arch(SeccompArch::Aarch64),
        names: &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
    },
    // Capability-gated syscalls: the kernel checks the capability too, but keeping the
    // syscall out of reach shrinks the kernel surface a container without it can touch.
    AllowGroup {
        gate: with_cap("SYS_ADMIN"),
        names: SYS_ADMIN,
    },
    AllowGroup {
        gate: with_cap("DAC_READ_SEARCH"),
        names: &["open_by_handle_at"],
    },
    AllowGroup {
        gate: with_cap("SYS_BOOT"),
        names: &["reboot"],
    },
    AllowGroup {
        gate: with_cap("SYS_CHROOT"),
        names: &["chroot"],
    },
    AllowGroup {
        gate: with_cap("SYS_MODULE"),
        names: &["init_module", "finit_module", "delete_module"],
    },
    AllowGroup {
        gate: with_cap("SYS_PACCT"),
        names: &["acct"],
    },
    AllowGroup {
        gate: with_cap("SYS_PTRACE"),
        names: &[
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
        ],
    },
    AllowGroup {
        gate: Gate {
            arch: Some(SeccompArch::X86_64),
            cap: Some("SYS_RAWIO"),
        },
        names: &["iopl", "ioperm"],
    },
    AllowGroup {
        gate: with_cap("SYS_TIME"),
        names: &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    },
    AllowGroup {
        gate: with_cap("SYS_TTY_CONFIG"),
        names: &["vhangup"],
    },
    AllowGroup {
        gate: with_cap("SYS_NICE"),
        names: &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    },
    AllowGroup {
        gate: with_cap("SYSLOG"),
        names: &["syslog"],
    },
    AllowGroup {
        gate: with_cap("BPF"),
        names: &["bpf"],
    },
    AllowGroup {
        gate: with_cap("PERFMON"),
        names: &["perf_event_open"],
    },
];

/// Address families `socket(2)` may create: `AF_UNIX`, `AF_INET`, `AF_INET6`, `AF_NETLINK`
/// (the resolver and `ip` need it) and `AF_PACKET` (DHCP clients, packet capture with
/// `CAP_NET_RAW`).
const SOCKET_FAMILIES: &[u64] = &[1, 2, 10, 16, 17];

/// `personality(2)` values a program may set: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `UNAME26 | PER_LINUX32`, and `0xffffffff`, which only queries the current persona. Anything
/// else (notably `ADDR_NO_RANDOMIZE`) is denied.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// A set of capability names, normalised to upper case without `CAP_`; `ALL` means all.
struct CapSet {
    names: BTreeSet<String>,
    all: bool,
}

impl CapSet {
    fn new<S: AsRef<str>>(caps: &[S]) -> Self {
        let names: BTreeSet<String> = caps.iter().map(|c| normalize_cap(c.as_ref())).collect();
        let all = names.contains("ALL");
        Self { names, all }
    }

    fn has(&self, cap: &str) -> bool {
        self.all || self.names.contains(&normalize_cap(cap))
    }
}

fn normalize_cap(cap: &str) -> String {
    let up = cap.trim().to_ascii_uppercase();
    match up.strip_prefix("CAP_") {
        Some(rest) => rest.to_string(),
        None => up,
    }
}

/// aac's default seccomp profile for the host's architecture and the container's effective
/// capabilities (names without `CAP_`, e.g. `SYS_ADMIN`; `ALL` grants every gated syscall).
///
/// On a host architecture aac has no tables for, the profile keeps the portable allowlist,
/// leaves out architecture-private syscalls and lists no architectures (native only).
pub fn default_profile(capabilities: &[String]) -> LinuxSeccomp {
    let arch = SeccompArch::host();
    if arch.is_none() {
        tracing::warn!(
            arch = std::env::consts::ARCH,
            "no seccomp tables for this architecture; using the portable allowlist only"
        );
    }
    build_default_or_deny_all(arch, capabilities)
}

/// [`default_profile`] for a given architecture (for building specs for another host).
pub fn default_profile_for_arch(arch: SeccompArch, capabilities: &[String]) -> LinuxSeccomp {
    build_default_or_deny_all(Some(arch), capabilities)
}

fn build_default_or_deny_all(arch: Option<SeccompArch>, capabilities: &[String]) -> LinuxSeccomp {
    match build_default(arch, capabilities) {
        Ok(profile) => profile,
        Err(error) => {
            // The builders only fail on missing fields, and every field has a default, so this
            // is not expected; if it ever happens, fail closed rather than run unconfined.
            tracing::error!(%error, "building the default seccomp profile failed; denying all syscalls");
            let mut deny_all = LinuxSeccomp::default();
            deny_all.set_default_action(LinuxSeccompAction::ScmpActErrno);
            deny_all.set_default_errno_ret(Some(EPERM));
            deny_all
        }
    }
}

fn build_default(
    arch: Option<SeccompArch>,
    capabilities: &[String],
) -> Result<LinuxSeccomp, SeccompError> {
    let caps = CapSet::new(capabilities);
    let mut allowed: BTreeSet<&'static str> = BTreeSet::new();
    for group in ALLOW_GROUPS {
        let arch_ok = group.gate.arch.is_none() || group.gate.arch == arch;
        let cap_ok = match group.gate.cap {
            None => true,
            Some(cap) => caps.has(cap),
        };
        if arch_ok && cap_ok {
            allowed.extend(group.names.iter().copied());
        }
    }

    let mut syscalls = vec![rule(
        allowed.iter().copied(),
        LinuxSeccompAction::ScmpActAllow,
        None,
        Vec::new(),
    )?];
    for &family in SOCKET_FAMILIES {
        syscalls.push(rule(
            ["socket"],
            LinuxSeccompAction::ScmpActAllow,
            None,
            vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, family, None)?],
        )?);
    }
    for &persona in PERSONALITIES {
        syscalls.push(rule(
            ["personality"],
            LinuxSeccompAction::ScmpActAllow,
            None,
            vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, persona, None)?],
        )?);
    }
    if !caps.has("SYS_ADMIN") {
        // clone: no new namespaces. clone3 passes its flags in memory, which seccomp cannot
        // read, so it reports ENOSYS and libc falls back to clone.
        syscalls.push(rule(
            ["clone"],
            LinuxSeccompAction::ScmpActAllow,
            None,
            vec![arg(
                0,
                LinuxSeccompOperator::ScmpCmpMaskedEq,
                CLONE_NAMESPACE_FLAGS,
                Some(0),
            )?],
        )?);
        syscalls.push(rule(
            ["clone3"],
            LinuxSeccompAction::ScmpActErrno,
            Some(ENOSYS),
            Vec::new(),
        )?);
    }

    let architectures = arch.map(SeccompArch::oci_architectures).unwrap_or_default();
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(architectures)
        .flags(Vec::<LinuxSeccompFilterFlag>::new())
        .syscalls(syscalls)
        .build()?)
}

fn rule<'a>(
    names: impl IntoIterator<Item = &'a str>,
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    args: Vec<LinuxSeccompArg>,
) -> Result<LinuxSyscall, SeccompError> {
    let mut builder = LinuxSyscallBuilder::default()
        .names(names.into_iter().map(str::to_string).collect::<Vec<_>>())
        .action(action);
    if let Some(errno) = errno_ret {
        builder = builder.errno_ret(errno);
    }
    if !args.is_empty() {
        builder = builder.args(args);
    }
    Ok(builder.build()?)
}

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> Result<LinuxSeccompArg, SeccompError> {
    let mut builder = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    if let Some(two) = value_two {
        builder = builder.value_two(two);
    }
    Ok(builder.build()?)
}

// ---------------------------------------------------------------------------------------------
// Loading user profiles (OCI `linux.seccomp` or Docker/moby format).
// ---------------------------------------------------------------------------------------------

/// A profile file: the union of the OCI `linux.seccomp` object and moby's format (which adds
/// `archMap`, `includes`/`excludes` and the single-name `name`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileProfile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    #[serde(default)]
    arch_map: Option<Vec<FileArchMap>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<FileSyscall>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileArchMap {
    /// Kept as a string so that an architecture oci-spec does not know only matters on it.
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileSyscall {
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<FileArg>>,
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<String>,
    #[serde(default)]
    includes: Option<FileFilter>,
    #[serde(default)]
    excludes: Option<FileFilter>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileArg {
    index: usize,
    value: u64,
    #[serde(default)]
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileFilter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

/// What a moby-format profile is resolved against.
#[derive(Debug, Clone)]
struct Host {
    /// Go's name for the architecture (`amd64`, `arm64`, ...), which moby's `arches` use.
    go_arch: &'static str,
    /// The seccomp name of the native architecture, matched against `archMap`.
    seccomp_arch: Option<&'static str>,
    /// `(major, minor)` of the running kernel, or why it is unknown.
    kernel: Result<(u64, u64), String>,
}

impl Host {
    fn current() -> Self {
        let (go_arch, seccomp_arch) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", Some("SCMP_ARCH_X86_64")),
            "aarch64" => ("arm64", Some("SCMP_ARCH_AARCH64")),
            "x86" => ("386", Some("SCMP_ARCH_X86")),
            "arm" => ("arm", Some("SCMP_ARCH_ARM")),
            "riscv64" => ("riscv64", Some("SCMP_ARCH_RISCV64")),
            "s390x" => ("s390x", Some("SCMP_ARCH_S390X")),
            "powerpc64" => ("ppc64le", Some("SCMP_ARCH_PPC64LE")),
            "loongarch64" => ("loong64", Some("SCMP_ARCH_LOONGARCH64")),
            other => (other, None),
        };
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_err(|e| format!("/proc/sys/kernel/osrelease: {e}"))
            .and_then(|release| {
                parse_kernel_version(release.trim())
                    .ok_or_else(|| format!("cannot parse kernel release {:?}", release.trim()))
            });
        Self {
            go_arch,
            seccomp_arch,
            kernel,
        }
    }
}

/// `"6.8.0-45-generic"` or `"4.8"` -> `(6, 8)` / `(4, 8)`.
fn parse_kernel_version(s: &str) -> Option<(u64, u64)> {
    let mut parts = s.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor_part = parts.next()?;
    let digits: String = minor_part
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let minor = digits.parse().ok()?;
    Some((major, minor))
}

/// Load a seccomp profile file: either an OCI `linux.seccomp` object or a Docker/moby profile.
/// moby's conditions are resolved for `capabilities` (names with or without `CAP_`), the host
/// architecture and the running kernel, the way dockerd resolves them, and the result is a
/// plain OCI profile.
pub fn load_profile(path: &Path, capabilities: &[String]) -> Result<LinuxSeccomp, SeccompError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeccompError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: FileProfile = serde_json::from_str(&text).map_err(|source| SeccompError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    resolve_profile(file, &CapSet::new(capabilities), &Host::current(), path)
}

fn resolve_profile(
    file: FileProfile,
    caps: &CapSet,
    host: &Host,
    path: &Path,
) -> Result<LinuxSeccomp, SeccompError> {
    let invalid = |reason: String| SeccompError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    for key in file.unknown.keys() {
        tracing::warn!(path = %path.display(), key, "ignoring unknown field in seccomp profile");
    }
    if file.default_action == LinuxSeccompAction::ScmpActNotify {
        return Err(invalid(
            "defaultAction SCMP_ACT_NOTIFY is not allowed (the runtime itself would be stopped)"
                .into(),
        ));
    }

    let mut architectures = file.architectures.unwrap_or_default();
    if let Some(native) = host.seccomp_arch {
        for entry in file.arch_map.iter().flatten() {
            if entry.architecture != native {
                continue;
            }
            let subs = entry.sub_architectures.iter().flatten();
            for name in std::iter::once(&entry.architecture).chain(subs) {
                let arch = Arch::from_str(name)
                    .map_err(|_| invalid(format!("unknown architecture {name:?} in archMap")))?;
                if !architectures.contains(&arch) {
                    architectures.push(arch);
                }
            }
        }
    }

    let mut syscalls = Vec::new();
    for (i, call) in file.syscalls.into_iter().flatten().enumerate() {
        for key in call.unknown.keys() {
            tracing::warn!(path = %path.display(), entry = i, key, "ignoring unknown field in seccomp syscall entry");
        }
        if !condition_holds(call.includes.as_ref(), true, caps, host, path, i)?
            || condition_holds(call.excludes.as_ref(), false, caps, host, path, i)?
        {
            continue;
        }
        let mut names = call.names.unwrap_or_default();
        names.extend(call.name);
        if names.is_empty() || names.iter().any(|n| n.trim().is_empty()) {
            return Err(invalid(format!(
                "syscalls[{i}] has an empty syscall name list or name"
            )));
        }
        let mut args = Vec::new();
        for a in call.args.into_iter().flatten() {
            if a.index > 5 {
                return Err(invalid(format!(
                    "syscalls[{i}] ({}) compares argument {}, but syscalls have 6 (0-5)",
                    names.join(","),
                    a.index
                )));
            }
            args.push(arg(a.index, a.op, a.value, a.value_two)?);
        }
        syscalls.push(rule(
            names.iter().map(String::as_str),
            call.action,
            call.errno_ret,
            args,
        )?);
    }

    let mut builder = LinuxSeccompBuilder::default()
        .default_action(file.default_action)
        .architectures(architectures)
        .flags(file.flags.unwrap_or_default())
        .syscalls(syscalls);
    if let Some(errno) = file.default_errno_ret {
        builder = builder.default_errno_ret(errno);
    }
    if let Some(listener) = file.listener_path {
        builder = builder.listener_path(listener);
    }
    if let Some(metadata) = file.listener_metadata {
        builder = builder.listener_metadata(metadata);
    }
    Ok(builder.build()?)
}

/// Evaluate moby's `includes` (every listed condition must hold) or `excludes` (any listed
/// condition excludes). `absent` is the result when there is no filter object.
fn condition_holds(
    filter: Option<&FileFilter>,
    absent: bool,
    caps: &CapSet,
    host: &Host,
    path: &Path,
    index: usize,
) -> Result<bool, SeccompError> {
    let Some(filter) = filter else {
        return Ok(absent);
    };
    for key in filter.unknown.keys() {
        tracing::warn!(path = %path.display(), entry = index, key, "ignoring unknown field in includes/excludes");
    }
    let arches = filter.arches.as_deref().unwrap_or_default();
    let filter_caps = filter.caps.as_deref().unwrap_or_default();
    let arch_hit = arches.iter().any(|a| a == host.go_arch);
    let kernel_hit = match &filter.min_kernel {
        None => None,
        Some(min) => {
            let wanted = parse_kernel_version(min).ok_or_else(|| SeccompError::Invalid {
                path: path.to_path_buf(),
                reason: format!("syscalls[{index}]: minKernel {min:?} is not major.minor"),
            })?;
            let running = host
                .kernel
                .clone()
                .map_err(|reason| SeccompError::KernelVersion {
                    path: path.to_path_buf(),
                    reason,
                })?;
            Some(running >= wanted)
        }
    };
    if absent {
        // includes: all conditions must hold.
        Ok((arches.is_empty() || arch_hit)
            && filter_caps.iter().all(|c| caps.has(c))
            && kernel_hit.unwrap_or(true))
    } else {
        // excludes: any condition excludes.
        Ok((!arches.is_empty() && arch_hit)
            || filter_caps.iter().any(|c| caps.has(c))
            || kernel_hit.unwrap_or(false))
    }
}

// ---------------------------------------------------------------------------------------------
// Compilation to BPF (for the plain-process backend).
// ---------------------------------------------------------------------------------------------

/// The rules of one syscall number while compiling.
struct NumberRules {
    action: SeccompAction,
    /// `None`: matches unconditionally.
    rules: Option<Vec<SeccompRule>>,
}

fn bpf_action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    name: &str,
) -> Result<SeccompAction, SeccompError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno_ret.unwrap_or(EPERM)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno_ret.unwrap_or(EPERM)),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::UnsupportedForBpf {
                syscall: name.to_string(),
                reason: "SCMP_ACT_NOTIFY needs a seccomp agent, which the process backend lacks"
                    .into(),
            })
        }
    })
}

/// The seccompiler rules of one OCI syscall entry, with runc's semantics: all conditions
/// must hold, except that when one argument index is compared more than once, each condition
/// is a rule of its own (any may match).
fn bpf_rules(entry: &LinuxSyscall, name: &str) -> Result<Option<Vec<SeccompRule>>, SeccompError> {
    let args = entry.args().as_deref().unwrap_or_default();
    if args.is_empty() {
        return Ok(None);
    }
    let mut conditions = Vec::with_capacity(args.len());
    for a in args {
        let unsupported = |reason: String| SeccompError::UnsupportedForBpf {
            syscall: name.to_string(),
            reason,
        };
        let index = u8::try_from(a.index())
            .ok()
            .filter(|i| *i <= 5)
            .ok_or_else(|| unsupported(format!("argument index {} is out of range", a.index())))?;
        let (op, value) = match a.op() {
            LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
            LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
            LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
            LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
            LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
            LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
            // OCI/libseccomp: (arg & value) == valueTwo.
            LinuxSeccompOperator::ScmpCmpMaskedEq => (
                SeccompCmpOp::MaskedEq(a.value()),
                a.value_two().unwrap_or(0),
            ),
        };
        conditions.push(SeccompCondition::new(
            index,
            SeccompCmpArgLen::Qword,
            op,
            value,
        )?);
    }
    let mut seen = BTreeSet::new();
    let repeated = args.iter().any(|a| !seen.insert(a.index()));
    let rules = if repeated {
        conditions
            .into_iter()
            .map(|c| SeccompRule::new(vec![c]))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![SeccompRule::new(conditions)?]
    };
    Ok(Some(rules))
}

/// Compile an OCI seccomp profile to BPF for `arch` with `seccompiler`.
///
/// seccompiler gives each filter one action for matches and one for the rest, so the profile
/// becomes a list of filters to install in order (see [`install_filters`]): the first allows
/// every syscall some rule matches and applies the default action to the rest; each further
/// filter applies one non-allow action to the syscalls of that action and allows the rest. As
/// the kernel applies the most restrictive result (the later filter's for equal kinds), the
/// stack gives every syscall its own rule's action, or the default.
///
/// Limits: each syscall's rules must share one action (the order of rules with different
/// actions for one syscall is not kept); names unknown on `arch` are skipped, like runc does;
/// only the native ABI is allowed: a syscall through another ABI (32-bit x86 `int 0x80`,
/// AArch32) kills the process.
pub fn compile_bpf(
    profile: &LinuxSeccomp,
    arch: SeccompArch,
) -> Result<Vec<BpfProgram>, SeccompError> {
    let default = bpf_action(
        profile.default_action(),
        profile.default_errno_ret(),
        "<default>",
    )?;
    let mut by_number: BTreeMap<i64, NumberRules> = BTreeMap::new();
    for entry in profile.syscalls().as_deref().unwrap_or_default() {
        for name in entry.names() {
            let Some(number) = arch.syscall_number(name) else {
                tracing::debug!(syscall = %name, ?arch, "syscall unknown on this architecture; skipped");
                continue;
            };
            let action = bpf_action(entry.action(), entry.errno_ret(), name)?;
            let rules = bpf_rules(entry, name)?;
            match by_number.get_mut(&number) {
                None => {
                    by_number.insert(number, NumberRules { action, rules });
                }
                // An earlier unconditional rule decides every call: later ones never match.
                Some(existing) if existing.rules.is_none() => {}
                Some(existing) if existing.action != action => {
                    return Err(SeccompError::UnsupportedForBpf {
                        syscall: name.clone(),
                        reason: format!(
                            "rules with different actions ({:?} and {:?})",
                            existing.action, action
                        ),
                    });
                }
                Some(existing) => match (rules, existing.rules.as_mut()) {
                    (None, _) => existing.rules = None,
                    (Some(new), Some(old)) => old.extend(new),
                    (Some(_), None) => {}
                },
            }
        }
    }
    by_number.retain(|_, r| r.action != default);
    tracing::debug!(
        syscalls = by_number.len(),
        "compiling seccomp profile to BPF"
    );

    let chain = |r: &NumberRules| r.rules.clone().unwrap_or_default();
    let mut filters = Vec::new();
    if default != SeccompAction::Allow {
        let rules = by_number
            .iter()
            .map(|(nr, r)| (*nr, chain(r)))
            .collect::<BTreeMap<_, _>>();
        filters.push(SeccompFilter::new(
            rules,
            default.clone(),
            SeccompAction::Allow,
            arch.target(),
        )?);
    }
    let mut actions: Vec<SeccompAction> = Vec::new();
    for r in by_number.values() {
        if r.action != SeccompAction::Allow && !actions.contains(&r.action) {
            actions.push(r.action.clone());
        }
    }
    for action in actions {
        let rules = by_number
            .iter()
            .filter(|(_, r)| r.action == action)
            .map(|(nr, r)| (*nr, chain(r)))
            .collect::<BTreeMap<_, _>>();
        filters.push(SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            action,
            arch.target(),
        )?);
    }
    if filters.is_empty() {
        // An allow-everything profile: still install a filter so the process is in filter
        // mode, as runc does. seccompiler needs two distinct actions; nothing matches the
        // log rule of an empty rule set.
        filters.push(SeccompFilter::new(
            BTreeMap::new(),
            SeccompAction::Allow,
            SeccompAction::Log,
            arch.target(),
        )?);
    }
    tracing::debug!(filters = filters.len(), "seccomp profile compiled");
    filters
        .into_iter()
        .map(|f| BpfProgram::try_from(f).map_err(SeccompError::Compile))
        .collect()
}

/// Install the filters from [`compile_bpf`] on the calling thread, in order, after setting
/// `no_new_privs`. It does not allocate, so a child may call it between `fork` and `exec`
/// (e.g. from `CommandExt::pre_exec`).
pub fn install_filters(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(SeccompError::Install)?;
    }
    Ok(())
}
