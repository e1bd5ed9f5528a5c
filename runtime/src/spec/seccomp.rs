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
    #[error("no seccomp filter to install")]
    NoFilters,
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
    if !architectures.is_empty() && file.arch_map.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(invalid(
            "both architectures and archMap are given; use one of them (as dockerd requires)"
                .into(),
        ));
    }
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
        if call.name.is_some() && !names.is_empty() {
            return Err(invalid(format!(
                "syscalls[{i}] has both name and names; use one of them (as dockerd requires)"
            )));
        }
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
    if filters.is_empty() {
        // Installing nothing would leave the process unconfined: refuse.
        return Err(SeccompError::NoFilters);
    }
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(SeccompError::Install)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::values::{ALL_CAPABILITIES, DEFAULT_CAPABILITIES};
    use serde_json::Value;
    use std::collections::{HashMap, HashSet};

    // -----------------------------------------------------------------------------------------
    // Fixtures.
    // -----------------------------------------------------------------------------------------

    /// Reference files carried with the tests (tests/data).
    fn data_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
    }

    fn moby_path() -> PathBuf {
        data_dir().join("moby-seccomp/default.json")
    }

    fn read_json(path: &Path) -> Value {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn default_caps() -> Vec<String> {
        caps(DEFAULT_CAPABILITIES)
    }

    // -----------------------------------------------------------------------------------------
    // A small evaluator of profiles: (syscall name, args) -> verdict, with OCI/runc semantics:
    // the first rule naming the syscall whose argument conditions all hold decides (conditions
    // on a repeated argument index are alternatives, as in runc); otherwise the default action.
    // -----------------------------------------------------------------------------------------

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Verdict {
        action: String,
        errno: Option<u32>,
    }

    impl Verdict {
        fn new(action: &str, errno_ret: Option<u32>) -> Self {
            let errno = match action {
                "SCMP_ACT_ERRNO" | "SCMP_ACT_TRACE" => Some(errno_ret.unwrap_or(EPERM)),
                _ => None,
            };
            Self {
                action: action.to_string(),
                errno,
            }
        }

        fn allowed(&self) -> bool {
            self.action == "SCMP_ACT_ALLOW" || self.action == "SCMP_ACT_LOG"
        }
    }

    #[derive(Debug, Clone)]
    struct Cond {
        index: usize,
        op: String,
        value: u64,
        value_two: u64,
    }

    #[derive(Debug, Clone)]
    struct Rule {
        verdict: Verdict,
        conds: Vec<Cond>,
        /// Some argument index is compared more than once: the conditions are alternatives.
        repeated: bool,
    }

    struct Evaluator {
        default: Verdict,
        by_name: HashMap<String, Vec<Rule>>,
    }

    fn json_conds(entry: &Value) -> Vec<Cond> {
        entry["args"]
            .as_array()
            .map(|args| {
                args.iter()
                    .map(|a| Cond {
                        index: a["index"].as_u64().unwrap() as usize,
                        op: a["op"].as_str().unwrap().to_string(),
                        value: a["value"].as_u64().unwrap(),
                        value_two: a["valueTwo"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn json_names(entry: &Value) -> Vec<String> {
        let mut names: Vec<String> = entry["names"]
            .as_array()
            .map(|n| n.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        if let Some(name) = entry["name"].as_str() {
            names.push(name.to_string());
        }
        names
    }

    impl Evaluator {
        fn new(default: Verdict) -> Self {
            Self {
                default,
                by_name: HashMap::new(),
            }
        }

        fn push(&mut self, entry: &Value) {
            let conds = json_conds(entry);
            let mut seen = HashSet::new();
            let repeated = conds.iter().any(|c| !seen.insert(c.index));
            let rule = Rule {
                verdict: Verdict::new(
                    entry["action"].as_str().unwrap(),
                    entry["errnoRet"].as_u64().map(|e| e as u32),
                ),
                conds,
                repeated,
            };
            for name in json_names(entry) {
                self.by_name.entry(name).or_default().push(rule.clone());
            }
        }

        /// An OCI `linux.seccomp` object, read from its JSON form as a runtime would.
        fn oci(profile: &LinuxSeccomp) -> Self {
            let json = serde_json::to_value(profile).unwrap();
            let mut eval = Self::new(Verdict::new(
                json["defaultAction"].as_str().unwrap(),
                json["defaultErrnoRet"].as_u64().map(|e| e as u32),
            ));
            for entry in json["syscalls"].as_array().into_iter().flatten() {
                eval.push(entry);
            }
            eval
        }

        /// moby's profile as dockerd resolves it for a container: on `go_arch`, with the
        /// capabilities `caps` (names with `CAP_`) and a kernel of version `kernel`.
        fn moby(json: &Value, go_arch: &str, caps: &HashSet<String>, kernel: (u64, u64)) -> Self {
            let mut eval = Self::new(Verdict::new(
                json["defaultAction"].as_str().unwrap(),
                json["defaultErrnoRet"].as_u64().map(|e| e as u32),
            ));
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default()
            };
            let kernel_at_least = |v: &Value| -> Option<bool> {
                v.as_str().map(|min| {
                    let (maj, min) = min.split_once('.').unwrap();
                    kernel >= (maj.parse().unwrap(), min.parse().unwrap())
                })
            };
            for entry in json["syscalls"].as_array().unwrap() {
                let inc = &entry["includes"];
                if !inc.is_null() {
                    let arches = strings(&inc["arches"]);
                    if !arches.is_empty() && !arches.iter().any(|a| a == go_arch) {
                        continue;
                    }
                    if !strings(&inc["caps"]).iter().all(|c| caps.contains(c)) {
                        continue;
                    }
                    if kernel_at_least(&inc["minKernel"]) == Some(false) {
                        continue;
                    }
                }
                let exc = &entry["excludes"];
                if !exc.is_null() {
                    if strings(&exc["arches"]).iter().any(|a| a == go_arch) {
                        continue;
                    }
                    if strings(&exc["caps"]).iter().any(|c| caps.contains(c)) {
                        continue;
                    }
                    if kernel_at_least(&exc["minKernel"]) == Some(true) {
                        continue;
                    }
                }
                eval.push(entry);
            }
            eval
        }

        fn verdict(&self, name: &str, args: &[u64; 6]) -> &Verdict {
            for rule in self.by_name.get(name).into_iter().flatten() {
                if rule_matches(rule, args) {
                    return &rule.verdict;
                }
            }
            &self.default
        }
    }

    fn cond_holds(c: &Cond, args: &[u64; 6]) -> bool {
        let v = args[c.index];
        match c.op.as_str() {
            "SCMP_CMP_NE" => v != c.value,
            "SCMP_CMP_LT" => v < c.value,
            "SCMP_CMP_LE" => v <= c.value,
            "SCMP_CMP_EQ" => v == c.value,
            "SCMP_CMP_GE" => v >= c.value,
            "SCMP_CMP_GT" => v > c.value,
            "SCMP_CMP_MASKED_EQ" => v & c.value == c.value_two,
            other => panic!("unknown operator {other}"),
        }
    }

    fn rule_matches(rule: &Rule, args: &[u64; 6]) -> bool {
        if rule.conds.is_empty() {
            return true;
        }
        if rule.repeated {
            rule.conds.iter().any(|c| cond_holds(c, args))
        } else {
            rule.conds.iter().all(|c| cond_holds(c, args))
        }
    }

    // -----------------------------------------------------------------------------------------
    // The sample space: syscall names, argument vectors, capability sets, architectures.
    // -----------------------------------------------------------------------------------------

    /// Every syscall name of x86_64, i386, aarch64 and arm (from the `syscalls` crate), every
    /// name in moby's profile, and every name in ours.
    fn all_syscall_names(moby: &Value) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        names.extend(syscalls::x86_64::Sysno::iter().map(|s| s.name().to_string()));
        names.extend(syscalls::x86::Sysno::iter().map(|s| s.name().to_string()));
        names.extend(syscalls::aarch64::Sysno::iter().map(|s| s.name().to_string()));
        names.extend(syscalls::arm::Sysno::iter().map(|s| s.name().to_string()));
        for entry in moby["syscalls"].as_array().unwrap() {
            names.extend(json_names(entry));
        }
        for arch in [SeccompArch::X86_64, SeccompArch::Aarch64] {
            let profile = default_profile_for_arch(arch, &caps(&["ALL"]));
            for entry in profile.syscalls().as_deref().unwrap() {
                names.extend(entry.names().iter().cloned());
            }
        }
        names
    }

    /// Argument vectors worth trying for syscalls some rule inspects: every compared value and
    /// its neighbours, every single bit, every combination of clone's namespace flags (alone
    /// and with the flags of a thread or fork), all socket families, and extremes; each at
    /// every argument position.
    fn argument_vectors(profiles: &[&Value]) -> Vec<[u64; 6]> {
        let mut values: BTreeSet<u64> = [0, 1, 2, 0x7fff_ffff, 0xffff_ffff, u64::MAX].into();
        for k in 0..64 {
            values.insert(1u64 << k);
        }
        values.extend(0..=64u64);
        let ns_bits: Vec<u64> = (0..64)
            .map(|k| 1u64 << k)
            .filter(|b| CLONE_NAMESPACE_FLAGS & b != 0)
            .collect();
        for subset in 0u32..(1 << ns_bits.len()) {
            let flags: u64 = ns_bits
                .iter()
                .enumerate()
                .filter(|(i, _)| subset & (1 << i) != 0)
                .map(|(_, b)| b)
                .sum();
            values.insert(flags);
            values.insert(flags | 0x003d_0f00); // pthread_create's clone flags
            values.insert(flags | 0x0120_0011); // fork's: CLONE_CHILD_SETTID|CLEARTID|SIGCHLD
        }
        for profile in profiles {
            for entry in profile["syscalls"].as_array().into_iter().flatten() {
                for c in json_conds(entry) {
                    for v in [c.value, c.value_two] {
                        values.extend([v, v.wrapping_sub(1), v.wrapping_add(1), v | 0x4_0000]);
                    }
                }
            }
        }
        let mut vectors = vec![[0u64; 6]];
        for v in values {
            for i in 0..6 {
                let mut args = [0u64; 6];
                args[i] = v;
                vectors.push(args);
            }
        }
        vectors
    }

    /// Names some rule of `profiles` compares arguments of.
    fn names_with_arg_rules(profiles: &[&Value]) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for profile in profiles {
            for entry in profile["syscalls"].as_array().into_iter().flatten() {
                if !json_conds(entry).is_empty() {
                    names.extend(json_names(entry));
                }
            }
        }
        names
    }

    struct Scenario {
        arch: SeccompArch,
        go_arch: &'static str,
        label: String,
        caps: Vec<String>,
        kernel: (u64, u64),
    }

    /// No capabilities, Docker's default 14, the default plus each other capability, each
    /// capability alone, and all of them; on x86_64 and aarch64; on an old and a new kernel.
    fn scenarios() -> Vec<Scenario> {
        let mut sets: Vec<(String, Vec<String>)> = vec![
            ("none".into(), Vec::new()),
            ("default".into(), default_caps()),
            ("all".into(), caps(ALL_CAPABILITIES)),
        ];
        for cap in ALL_CAPABILITIES {
            if !DEFAULT_CAPABILITIES.contains(cap) {
                let mut set = default_caps();
                set.push(cap.to_string());
                sets.push((format!("default+{cap}"), set));
            }
            sets.push((format!("only {cap}"), caps(&[cap])));
        }
        let mut out = Vec::new();
        for (arch, go_arch) in [
            (SeccompArch::X86_64, "amd64"),
            (SeccompArch::Aarch64, "arm64"),
        ] {
            for kernel in [(4, 4), (6, 12)] {
                for (label, caps) in &sets {
                    out.push(Scenario {
                        arch,
                        go_arch,
                        label: label.clone(),
                        caps: caps.clone(),
                        kernel,
                    });
                }
            }
        }
        out
    }

    fn cap_prefixed(caps: &[String]) -> HashSet<String> {
        caps.iter().map(|c| format!("CAP_{c}")).collect()
    }

    /// The (scenario, syscall, args) where moby denies and the profile from `ours` allows.
    struct Looser {
        count: usize,
        syscalls: BTreeSet<String>,
        examples: Vec<String>,
    }

    fn looser_than_moby(ours: impl Fn(&Scenario) -> LinuxSeccomp) -> Looser {
        let moby = read_json(&moby_path());
        let names = all_syscall_names(&moby);
        let mut found = Looser {
            count: 0,
            syscalls: BTreeSet::new(),
            examples: Vec::new(),
        };
        for scenario in scenarios() {
            let profile = ours(&scenario);
            let ours_json = serde_json::to_value(&profile).unwrap();
            let with_args = names_with_arg_rules(&[&moby, &ours_json]);
            let vectors = argument_vectors(&[&moby, &ours_json]);
            let moby_eval = Evaluator::moby(
                &moby,
                scenario.go_arch,
                &cap_prefixed(&scenario.caps),
                scenario.kernel,
            );
            let ours_eval = Evaluator::oci(&profile);
            let zero = [[0u64; 6]];
            for name in &names {
                let args_list: &[[u64; 6]] = if with_args.contains(name) {
                    &vectors
                } else {
                    &zero
                };
                for args in args_list {
                    let theirs = moby_eval.verdict(name, args);
                    let mine = ours_eval.verdict(name, args);
                    if !theirs.allowed() && mine.allowed() {
                        found.count += 1;
                        found.syscalls.insert(name.clone());
                        if found.examples.len() < 40 {
                            found.examples.push(format!(
                                "arch={:?} syscall={name} args={args:x?} caps={} kernel={:?}: \
                                 moby {theirs:?}, aac {mine:?}",
                                scenario.arch, scenario.label, scenario.kernel
                            ));
                        }
                    }
                }
            }
        }
        found
    }

    // -----------------------------------------------------------------------------------------
    // The comparison with moby.
    // -----------------------------------------------------------------------------------------

    #[test]
    fn denies_everything_moby_denies() {
        let found = looser_than_moby(|s| default_profile_for_arch(s.arch, &s.caps));
        assert!(
            found.count == 0,
            "aac's default profile allows {} calls that moby's denies ({:?}), e.g.:\n{}",
            found.count,
            found.syscalls,
            found.examples.join("\n")
        );
    }

    #[test]
    fn the_comparison_catches_a_profile_looser_than_moby() {
        // Our profile plus three holes: keyctl, socket with any family, clone with any flags.
        let holes = looser_than_moby(|s| {
            let mut profile = default_profile_for_arch(s.arch, &s.caps);
            let mut calls = profile.syscalls().clone().unwrap();
            calls.insert(
                0,
                rule(
                    ["keyctl", "socket", "clone"],
                    LinuxSeccompAction::ScmpActAllow,
                    None,
                    Vec::new(),
                )
                .unwrap(),
            );
            profile.set_syscalls(Some(calls));
            profile
        });
        assert!(holes.count > 0, "the comparison found nothing");
        let found: Vec<&str> = holes.syscalls.iter().map(String::as_str).collect();
        assert_eq!(
            found,
            ["clone", "keyctl", "socket"],
            "{}",
            holes.examples.join("\n")
        );
    }

    // -----------------------------------------------------------------------------------------
    // What the default profile allows and denies.
    // -----------------------------------------------------------------------------------------

    fn verdict(profile: &LinuxSeccomp, name: &str, args: &[u64]) -> Verdict {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        Evaluator::oci(profile).verdict(name, &a).clone()
    }

    #[test]
    fn default_profile_allows_what_a_service_needs() {
        for arch in [SeccompArch::X86_64, SeccompArch::Aarch64] {
            let p = default_profile_for_arch(arch, &default_caps());
            let allowed: &[(&str, &[u64])] = &[
                ("read", &[]),
                ("write", &[]),
                ("openat", &[]),
                ("mmap", &[]),
                ("execve", &[]),
                ("exit_group", &[]),
                ("futex", &[]),
                ("epoll_pwait", &[]),
                ("clone", &[0x003d_0f00]),
                ("clone", &[0x0120_0011]),
                ("socket", &[1, 1]),
                ("socket", &[2, 1]),
                ("socket", &[10, 2]),
                ("socket", &[16, 3]),
                ("personality", &[0xffff_ffff]),
                ("personality", &[0x8]),
                ("chroot", &[]), // CAP_SYS_CHROOT is a default capability
                ("setuid", &[]),
                ("prctl", &[]),
                ("getrandom", &[]),
                ("rseq", &[]),
            ];
            for (name, args) in allowed {
                let v = verdict(&p, name, args);
                assert!(v.allowed(), "{arch:?}: {name}({args:x?}) -> {v:?}");
            }
            let denied: &[(&str, &[u64], u32)] = &[
                ("keyctl", &[], EPERM),
                ("add_key", &[], EPERM),
                ("unshare", &[0x1000_0000], EPERM),
                ("mount", &[], EPERM),
                ("ptrace", &[], EPERM),
                ("bpf", &[], EPERM),
                ("io_uring_setup", &[], EPERM),
                ("userfaultfd", &[], EPERM),
                ("kexec_load", &[], EPERM),
                ("open_by_handle_at", &[], EPERM),
                ("clone", &[0x1000_0000 | 0x0120_0011], EPERM),
                ("clone", &[0x0002_0000], EPERM),
                ("clone3", &[], ENOSYS),
                ("socket", &[40, 1], EPERM),
                ("socket", &[38, 5], EPERM),
                ("personality", &[0x0004_0000], EPERM),
                ("settimeofday", &[], EPERM),
                ("reboot", &[], EPERM),
                ("init_module", &[], EPERM),
                ("syslog", &[], EPERM),
                ("perf_event_open", &[], EPERM),
            ];
            for (name, args, errno) in denied {
                let v = verdict(&p, name, args);
                assert_eq!(
                    v,
                    Verdict::new("SCMP_ACT_ERRNO", Some(*errno)),
                    "{arch:?}: {name}({args:x?})"
                );
            }
        }
    }

    #[test]
    fn capability_gated_syscalls_follow_the_capabilities() {
        let arch = SeccompArch::X86_64;
        let gated: &[(&str, &str)] = &[
            ("SYS_ADMIN", "mount"),
            ("SYS_ADMIN", "unshare"),
            ("SYS_ADMIN", "setns"),
            ("SYS_ADMIN", "clone3"),
            ("SYS_PTRACE", "ptrace"),
            ("SYS_PTRACE", "process_vm_readv"),
            ("SYS_MODULE", "finit_module"),
            ("SYS_BOOT", "reboot"),
            ("SYS_TIME", "clock_settime"),
            ("SYS_NICE", "mbind"),
            ("SYSLOG", "syslog"),
            ("SYS_RAWIO", "iopl"),
            ("SYS_PACCT", "acct"),
            ("SYS_TTY_CONFIG", "vhangup"),
            ("BPF", "bpf"),
            ("PERFMON", "perf_event_open"),
            ("DAC_READ_SEARCH", "open_by_handle_at"),
        ];
        for (cap, name) in gated {
            let without = default_profile_for_arch(arch, &default_caps());
            assert!(
                !verdict(&without, name, &[]).allowed(),
                "{name} without {cap}"
            );
            // Spelled the three ways a user might.
            for spelling in [cap.to_string(), format!("CAP_{cap}"), cap.to_lowercase()] {
                let mut set = default_caps();
                set.push(spelling.clone());
                let with = default_profile_for_arch(arch, &set);
                assert!(
                    verdict(&with, name, &[]).allowed(),
                    "{name} with {spelling}"
                );
            }
        }
        let all = default_profile_for_arch(arch, &caps(&["ALL"]));
        assert!(verdict(&all, "clone", &[0x1000_0000]).allowed());
        assert!(verdict(&all, "mount", &[]).allowed());
        // Nothing unlocks what no capability should.
        assert!(!verdict(&all, "keyctl", &[]).allowed());
        assert!(!verdict(&all, "kexec_load", &[]).allowed());
        assert!(!verdict(&all, "socket", &[40]).allowed());
        assert!(!verdict(&all, "personality", &[0x0004_0000]).allowed());
    }

    #[test]
    fn architecture_private_syscalls_follow_the_architecture() {
        let x86 = default_profile_for_arch(SeccompArch::X86_64, &default_caps());
        let arm = default_profile_for_arch(SeccompArch::Aarch64, &default_caps());
        for name in ["arch_prctl", "modify_ldt"] {
            assert!(verdict(&x86, name, &[]).allowed(), "{name} on x86_64");
            assert!(!verdict(&arm, name, &[]).allowed(), "{name} on aarch64");
        }
        for name in [
            "set_tls",
            "cacheflush",
            "arm_fadvise64_64",
            "sync_file_range2",
        ] {
            assert!(verdict(&arm, name, &[]).allowed(), "{name} on aarch64");
            assert!(!verdict(&x86, name, &[]).allowed(), "{name} on x86_64");
        }
        assert_eq!(
            x86.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        assert_eq!(
            arm.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
        let host = default_profile(&default_caps());
        match SeccompArch::host() {
            Some(arch) => assert_eq!(host, default_profile_for_arch(arch, &default_caps())),
            None => assert_eq!(host.architectures().as_deref(), Some(&[][..])),
        }
    }

    // -----------------------------------------------------------------------------------------
    // The JSON form against the OCI runtime-spec schema.
    // -----------------------------------------------------------------------------------------

    /// Checks `value` against `schema`, for the subset of JSON Schema the runtime-spec uses
    /// for `linux.seccomp` ($ref, type, properties, required, enum, items, minItems, minimum,
    /// maximum); besides, objects may only have the keys the schema lists.
    fn check_schema(schema: &Value, file: &str, value: &Value, at: &str, errors: &mut Vec<String>) {
        let dir = data_dir().join("oci-runtime-spec-schema");
        if let Some(reference) = schema["$ref"].as_str() {
            let (ref_file, pointer) = reference.split_once('#').unwrap();
            let ref_file = if ref_file.is_empty() { file } else { ref_file };
            let doc = read_json(&dir.join(ref_file));
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{reference}"));
            return check_schema(target, ref_file, value, at, errors);
        }
        match schema["type"].as_str() {
            Some("object") if !value.is_object() => errors.push(format!("{at}: not an object")),
            Some("array") if !value.is_array() => errors.push(format!("{at}: not an array")),
            Some("string") if !value.is_string() => errors.push(format!("{at}: not a string")),
            Some("integer") if !(value.is_u64() || value.is_i64()) => {
                errors.push(format!("{at}: not an integer"))
            }
            _ => {}
        }
        if let Some(choices) = schema["enum"].as_array() {
            if !choices.contains(value) {
                errors.push(format!("{at}: {value} is not one of {choices:?}"));
            }
        }
        if let Some(min) = schema["minimum"].as_u64() {
            if !matches!(value.as_u64(), Some(v) if v >= min) {
                errors.push(format!("{at}: {value} < {min}"));
            }
        }
        if let Some(max) = schema["maximum"].as_u64() {
            if !matches!(value.as_u64(), Some(v) if v <= max) {
                errors.push(format!("{at}: {value} > {max}"));
            }
        }
        if let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object()) {
            for key in schema["required"].as_array().into_iter().flatten() {
                if !obj.contains_key(key.as_str().unwrap()) {
                    errors.push(format!("{at}: missing required {key}"));
                }
            }
            for (key, v) in obj {
                match props.get(key) {
                    Some(s) => check_schema(s, file, v, &format!("{at}.{key}"), errors),
                    None => errors.push(format!("{at}: unknown key {key}")),
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            if let Some(min) = schema["minItems"].as_u64() {
                if (array.len() as u64) < min {
                    errors.push(format!("{at}: fewer than {min} items"));
                }
            }
            for (i, v) in array.iter().enumerate() {
                check_schema(items, file, v, &format!("{at}[{i}]"), errors);
            }
        }
    }

    fn seccomp_schema() -> Value {
        let doc = read_json(&data_dir().join("oci-runtime-spec-schema/config-linux.json"));
        doc["linux"]["properties"]["seccomp"].clone()
    }

    #[test]
    fn default_profile_json_matches_the_oci_schema() {
        let schema = seccomp_schema();
        for arch in [SeccompArch::X86_64, SeccompArch::Aarch64] {
            for set in [Vec::new(), default_caps(), caps(&["ALL"])] {
                let json = serde_json::to_value(default_profile_for_arch(arch, &set)).unwrap();
                let mut errors = Vec::new();
                check_schema(
                    &schema,
                    "config-linux.json",
                    &json,
                    "linux.seccomp",
                    &mut errors,
                );
                assert!(errors.is_empty(), "{}", errors.join("\n"));

                assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
                assert_eq!(json["defaultErrnoRet"], 1);
                let calls = json["syscalls"].as_array().unwrap();
                assert!(calls.len() > 5);
                for call in calls {
                    let names = call["names"].as_array().unwrap();
                    assert!(!names.is_empty());
                    assert!(names.iter().all(|n| !n.as_str().unwrap().is_empty()));
                }
                let first = calls[0]["names"].as_array().unwrap();
                assert!(
                    first.len() > 250,
                    "main allowlist has {} names",
                    first.len()
                );
            }
        }
    }

    #[test]
    fn the_schema_check_rejects_bad_json() {
        let schema = seccomp_schema();
        let bad = serde_json::json!({
            "defaultAction": "SCMP_ACT_DENY",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW",
                          "args": [{"index": 0, "value": 1, "op": "EQ"}]}],
            "default_errno": 1
        });
        let mut errors = Vec::new();
        check_schema(
            &schema,
            "config-linux.json",
            &bad,
            "linux.seccomp",
            &mut errors,
        );
        let all = errors.join("\n");
        for expected in [
            "SCMP_ACT_DENY",
            "fewer than 1",
            "\"EQ\"",
            "unknown key default_errno",
        ] {
            assert!(all.contains(expected), "{expected} not reported in:\n{all}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Loading profiles.
    // -----------------------------------------------------------------------------------------

    fn temp_file(name: &str, content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aac-seccomp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn moby_profiles_resolve_like_dockerd() {
        // The loader's result, evaluated as an OCI profile, must give exactly the verdicts of
        // moby's profile evaluated directly, for every scenario (as on that architecture).
        let moby = read_json(&moby_path());
        let names = all_syscall_names(&moby);
        let with_args = names_with_arg_rules(&[&moby]);
        let vectors = argument_vectors(&[&moby]);
        let mut mismatches = Vec::new();
        for s in scenarios() {
            let file: FileProfile = serde_json::from_value(moby.clone()).unwrap();
            let host = Host {
                go_arch: s.go_arch,
                seccomp_arch: Some(match s.arch {
                    SeccompArch::X86_64 => "SCMP_ARCH_X86_64",
                    SeccompArch::Aarch64 => "SCMP_ARCH_AARCH64",
                }),
                kernel: Ok(s.kernel),
            };
            let loaded = resolve_profile(file, &CapSet::new(&s.caps), &host, &moby_path()).unwrap();
            assert_eq!(
                loaded.architectures().as_deref(),
                Some(&s.arch.oci_architectures()[..])
            );
            let ours = Evaluator::oci(&loaded);
            let theirs = Evaluator::moby(&moby, s.go_arch, &cap_prefixed(&s.caps), s.kernel);
            for name in &names {
                let zero = [[0u64; 6]];
                let list: &[[u64; 6]] = if with_args.contains(name) {
                    &vectors
                } else {
                    &zero
                };
                for args in list {
                    let (a, b) = (ours.verdict(name, args), theirs.verdict(name, args));
                    if a != b && mismatches.len() < 20 {
                        mismatches.push(format!(
                            "{:?} {} {:?} {name}({args:x?}): loaded {a:?}, moby {b:?}",
                            s.arch, s.label, s.kernel
                        ));
                    }
                }
            }
        }
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }

    #[test]
    fn load_profile_reads_moby_and_oci_files() {
        let loaded = load_profile(&moby_path(), &default_caps()).unwrap();
        assert_eq!(loaded.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(loaded.default_errno_ret(), Some(1));
        if let Some(arch) = SeccompArch::host() {
            assert_eq!(
                loaded.architectures().as_deref(),
                Some(&arch.oci_architectures()[..])
            );
        }
        let eval = Evaluator::oci(&loaded);
        assert!(eval.verdict("read", &[0; 6]).allowed());
        assert!(!eval.verdict("unshare", &[0; 6]).allowed());
        let admin = load_profile(&moby_path(), &caps(&["CAP_SYS_ADMIN"])).unwrap();
        assert!(Evaluator::oci(&admin).verdict("unshare", &[0; 6]).allowed());

        // An OCI profile comes back unchanged.
        let ours = default_profile_for_arch(SeccompArch::Aarch64, &default_caps());
        let path = temp_file("oci.json", &serde_json::to_string_pretty(&ours).unwrap());
        assert_eq!(load_profile(&path, &[]).unwrap(), ours);
    }

    #[test]
    fn load_profile_reports_bad_files() {
        let missing = load_profile(Path::new("/nonexistent/aac/profile.json"), &[]);
        assert!(
            matches!(missing, Err(SeccompError::Read { .. })),
            "{missing:?}"
        );

        let cases: &[(&str, &str, &str)] = &[
            ("syntax.json", "{\"defaultAction\": ", "EOF"),
            (
                "action.json",
                r#"{"defaultAction": "SCMP_ACT_DENY"}"#,
                "SCMP_ACT_DENY",
            ),
            (
                "op.json",
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["socket"],
                   "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "EQ"}]}]}"#,
                "EQ",
            ),
            (
                "index.json",
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["socket"],
                   "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
                "argument 6",
            ),
            (
                "names.json",
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [],
                   "action": "SCMP_ACT_ALLOW"}]}"#,
                "empty syscall name",
            ),
            (
                "kernel.json",
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["ptrace"],
                   "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "four"}}]}"#,
                "minKernel \"four\"",
            ),
            (
                "both-names.json",
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
                   "name": "write", "action": "SCMP_ACT_ALLOW"}]}"#,
                "both name and names",
            ),
            (
                "both-arches.json",
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86"],
                   "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}"#,
                "both architectures and archMap",
            ),
            (
                "notify.json",
                r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#,
                "SCMP_ACT_NOTIFY",
            ),
        ];
        for (file, content, expected) in cases {
            let path = temp_file(file, content);
            let err = load_profile(&path, &[]).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(expected), "{file}: {message}");
            assert!(
                message.contains(&path.display().to_string()),
                "{file}: {message}"
            );
        }
    }

    // -----------------------------------------------------------------------------------------
    // BPF.
    // -----------------------------------------------------------------------------------------

    #[test]
    fn default_profiles_compile_to_bpf() {
        for arch in [SeccompArch::X86_64, SeccompArch::Aarch64] {
            let default =
                compile_bpf(&default_profile_for_arch(arch, &default_caps()), arch).unwrap();
            // Main filter, plus one for clone3's ENOSYS.
            assert_eq!(default.len(), 2, "{arch:?}");
            assert!(default.iter().all(|p| !p.is_empty() && p.len() < 4096));
            let admin =
                compile_bpf(&default_profile_for_arch(arch, &caps(&["SYS_ADMIN"])), arch).unwrap();
            assert_eq!(admin.len(), 1, "{arch:?}: clone3 is allowed with SYS_ADMIN");
            assert!(admin[0].len() > default[0].len());
        }
        // moby's profile (as loaded for this host) compiles too.
        if let Some(arch) = SeccompArch::host() {
            let moby = load_profile(&moby_path(), &default_caps()).unwrap();
            assert_eq!(compile_bpf(&moby, arch).unwrap().len(), 2);
        }
    }

    #[test]
    fn compile_bpf_rejects_what_it_cannot_express() {
        let mut profile = default_profile_for_arch(SeccompArch::X86_64, &default_caps());
        let mut calls = profile.syscalls().clone().unwrap();
        calls.push(
            rule(
                ["socket"],
                LinuxSeccompAction::ScmpActKillProcess,
                None,
                vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, 40, None).unwrap()],
            )
            .unwrap(),
        );
        profile.set_syscalls(Some(calls));
        let err = compile_bpf(&profile, SeccompArch::X86_64).unwrap_err();
        assert!(
            matches!(&err, SeccompError::UnsupportedForBpf { syscall, .. } if syscall == "socket"),
            "{err}"
        );

        assert!(matches!(install_filters(&[]), Err(SeccompError::NoFilters)));

        let mut notify = default_profile_for_arch(SeccompArch::X86_64, &[]);
        notify.set_default_action(LinuxSeccompAction::ScmpActNotify);
        assert!(matches!(
            compile_bpf(&notify, SeccompArch::X86_64),
            Err(SeccompError::UnsupportedForBpf { .. })
        ));
    }

    /// Runs a program of the classic-BPF instructions seccompiler emits on a `seccomp_data`.
    fn run_bpf(program: &[seccompiler::sock_filter], data: &[u8; 64]) -> u32 {
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        loop {
            let ins = &program[pc];
            pc += 1;
            let k = ins.k;
            let jump = |cond: bool| usize::from(if cond { ins.jt } else { ins.jf });
            match ins.code {
                0x20 => {
                    // BPF_LD | BPF_W | BPF_ABS
                    let o = k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                0x54 => acc &= k,             // BPF_ALU | BPF_AND | BPF_K
                0x05 => pc += k as usize,     // BPF_JMP | BPF_JA
                0x15 => pc += jump(acc == k), // BPF_JMP | BPF_JEQ | BPF_K
                0x25 => pc += jump(acc > k),  // BPF_JMP | BPF_JGT | BPF_K
                0x35 => pc += jump(acc >= k), // BPF_JMP | BPF_JGE | BPF_K
                0x06 => return k,             // BPF_RET | BPF_K
                other => panic!("instruction {other:#x} not interpreted"),
            }
        }
    }

    fn audit_arch(arch: SeccompArch) -> u32 {
        match arch {
            SeccompArch::X86_64 => 0xc000_003e,
            SeccompArch::Aarch64 => 0xc000_00b7,
        }
    }

    /// What the kernel decides for a stack of filters: the most restrictive result, the most
    /// recently installed filter's among equals (kernel/seccomp.c, seccomp_run_filters).
    fn run_stack(filters: &[BpfProgram], audit: u32, nr: i64, args: &[u64; 6]) -> Verdict {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as i32).to_le_bytes());
        data[4..8].copy_from_slice(&audit.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let mut ret: u32 = 0x7fff_0000;
        for filter in filters.iter().rev() {
            let cur = run_bpf(filter, &data);
            if ((cur & 0xffff_0000) as i32) < ((ret & 0xffff_0000) as i32) {
                ret = cur;
            }
        }
        let errno = Some(ret & 0xffff);
        match ret & 0xffff_0000 {
            0x7fff_0000 => Verdict::new("SCMP_ACT_ALLOW", None),
            0x7ffc_0000 => Verdict::new("SCMP_ACT_LOG", None),
            0x0005_0000 => Verdict::new("SCMP_ACT_ERRNO", errno),
            0x7ff0_0000 => Verdict::new("SCMP_ACT_TRACE", errno),
            0x0003_0000 => Verdict::new("SCMP_ACT_TRAP", None),
            0x8000_0000 => Verdict::new("SCMP_ACT_KILL_PROCESS", None),
            _ => Verdict::new("SCMP_ACT_KILL_THREAD", None),
        }
    }

    /// Every (syscall, args) of the sample space where the compiled filters and the OCI
    /// evaluator disagree.
    fn bpf_disagreements(profile: &LinuxSeccomp, arch: SeccompArch, label: &str) -> Vec<String> {
        let filters = compile_bpf(profile, arch).unwrap();
        let moby = read_json(&moby_path());
        let json = serde_json::to_value(profile).unwrap();
        let names = all_syscall_names(&moby);
        let with_args = names_with_arg_rules(&[&json]);
        let vectors = argument_vectors(&[&json]);
        let eval = Evaluator::oci(profile);
        let mut out = Vec::new();
        for name in &names {
            let Some(nr) = arch.syscall_number(name) else {
                continue;
            };
            let zero = [[0u64; 6]];
            let list: &[[u64; 6]] = if with_args.contains(name) {
                &vectors
            } else {
                &zero
            };
            for args in list {
                let expected = eval.verdict(name, args);
                let got = run_stack(&filters, audit_arch(arch), nr, args);
                if &got != expected && out.len() < 20 {
                    out.push(format!(
                        "{arch:?} {label} {name}({args:x?}): BPF {got:?}, profile {expected:?}"
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn compiled_bpf_decides_like_the_profile() {
        let mut problems = Vec::new();
        for arch in [SeccompArch::X86_64, SeccompArch::Aarch64] {
            for (label, set) in [
                ("none", Vec::new()),
                ("default", default_caps()),
                ("default+SYS_ADMIN", {
                    let mut c = default_caps();
                    c.push("SYS_ADMIN".into());
                    c
                }),
                ("all", caps(&["ALL"])),
            ] {
                let profile = default_profile_for_arch(arch, &set);
                problems.extend(bpf_disagreements(&profile, arch, label));
            }
            // moby's profile as dockerd would resolve it on that architecture.
            let host = Host {
                go_arch: match arch {
                    SeccompArch::X86_64 => "amd64",
                    SeccompArch::Aarch64 => "arm64",
                },
                seccomp_arch: None,
                kernel: Ok((6, 12)),
            };
            let file: FileProfile = serde_json::from_value(read_json(&moby_path())).unwrap();
            let moby =
                resolve_profile(file, &CapSet::new(&default_caps()), &host, &moby_path()).unwrap();
            problems.extend(bpf_disagreements(&moby, arch, "moby default"));

            // Numbers no rule names (an x32 call, a number past the table) get the default;
            // another ABI is killed.
            let filters =
                compile_bpf(&default_profile_for_arch(arch, &default_caps()), arch).unwrap();
            let eperm = Verdict::new("SCMP_ACT_ERRNO", Some(EPERM));
            assert_eq!(
                run_stack(&filters, audit_arch(arch), 0x4000_0000, &[0; 6]),
                eperm
            );
            assert_eq!(run_stack(&filters, audit_arch(arch), 4000, &[0; 6]), eperm);
            let read = arch.syscall_number("read").unwrap();
            assert_eq!(
                run_stack(&filters, audit_arch(arch), read, &[0; 6]),
                Verdict::new("SCMP_ACT_ALLOW", None)
            );
            assert_eq!(
                run_stack(&filters, 0x4000_0003, read, &[0; 6]).action,
                "SCMP_ACT_KILL_PROCESS"
            );
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// Runs in the forked child: only raw syscalls, no allocation. Returns 0 when every check
    /// passes, otherwise the number of the first failing check.
    fn child_checks(filters: &[BpfProgram]) -> i32 {
        use syscalls::{syscall, Errno, Sysno};
        if install_filters(filters).is_err() {
            return 1;
        }
        // SAFETY (all blocks below): raw syscalls with integer arguments or pointers to live
        // stack buffers; denied ones never reach the kernel's implementation.
        unsafe {
            if !matches!(syscall!(Sysno::getpid), Ok(pid) if pid > 0) {
                return 2;
            }
            if syscall!(Sysno::add_key, 0, 0, 0, 0, 0) != Err(Errno::EPERM) {
                return 3;
            }
            if syscall!(Sysno::keyctl, 0, 0, 0, 0, 0) != Err(Errno::EPERM) {
                return 4;
            }
            if syscall!(Sysno::unshare, 0x1000_0000) != Err(Errno::EPERM) {
                return 5;
            }
            // Without the filter the kernel answers EINVAL (size 0); the filter says ENOSYS.
            if syscall!(Sysno::clone3, 0, 0) != Err(Errno::ENOSYS) {
                return 6;
            }
            if syscall!(Sysno::socket, 40, 1, 0) != Err(Errno::EPERM) {
                return 7;
            }
            match syscall!(Sysno::socket, 2, 1, 0) {
                Ok(fd) => {
                    let _ = syscall!(Sysno::close, fd);
                }
                Err(_) => return 8,
            }
            if syscall!(Sysno::personality, 0xffff_ffffu64).is_err() {
                return 9;
            }
            if syscall!(Sysno::personality, 0x0004_0000) != Err(Errno::EPERM) {
                return 10;
            }
            if syscall!(Sysno::mount, 0, 0, 0, 0, 0) != Err(Errno::EPERM) {
                return 11;
            }
            if syscall!(Sysno::ptrace, 0, 0, 0, 0) != Err(Errno::EPERM) {
                return 12;
            }
            // /proc/self/status must say "Seccomp:\t2" (filter mode).
            let path = b"/proc/self/status\0";
            let at_fdcwd = -100isize as usize;
            let Ok(fd) = syscall!(Sysno::openat, at_fdcwd, path.as_ptr(), 0) else {
                return 13;
            };
            let mut buf = [0u8; 16384];
            let mut len = 0;
            while len < buf.len() {
                match syscall!(Sysno::read, fd, buf.as_mut_ptr().add(len), buf.len() - len) {
                    Ok(0) => break,
                    Ok(n) => len += n,
                    Err(_) => return 14,
                }
            }
            let _ = syscall!(Sysno::close, fd);
            let needle = b"\nSeccomp:\t2\n";
            if !buf[..len].windows(needle.len()).any(|w| w == needle) {
                return 15;
            }
        }
        0
    }

    #[test]
    fn installed_default_filter_denies_in_a_child_process() {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};
        let Some(arch) = SeccompArch::host() else {
            eprintln!("skipped: no seccomp tables for {}", std::env::consts::ARCH);
            return;
        };
        let filters = compile_bpf(&default_profile_for_arch(arch, &default_caps()), arch).unwrap();
        // SAFETY: the child only makes raw syscalls (no allocation, no locks) and _exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code = child_checks(&filters);
                // SAFETY: exit_group ends the child at once, without running atexit handlers.
                unsafe {
                    let _ = syscalls::syscall!(syscalls::Sysno::exit_group, code);
                }
                unreachable!("exit_group returned");
            }
            ForkResult::Parent { child } => {
                let status = waitpid(child, None).unwrap();
                let what = [
                    "",
                    "installing the filters",
                    "getpid allowed",
                    "add_key -> EPERM",
                    "keyctl -> EPERM",
                    "unshare(CLONE_NEWUSER) -> EPERM",
                    "clone3 -> ENOSYS",
                    "socket(AF_VSOCK) -> EPERM",
                    "socket(AF_INET) allowed",
                    "personality(query) allowed",
                    "personality(ADDR_NO_RANDOMIZE) -> EPERM",
                    "mount -> EPERM",
                    "ptrace -> EPERM",
                    "open /proc/self/status",
                    "read /proc/self/status",
                    "Seccomp:\\t2 in /proc/self/status",
                ];
                match status {
                    WaitStatus::Exited(_, 0) => {}
                    WaitStatus::Exited(_, code) => panic!(
                        "check {code} failed in the filtered child: {}",
                        what.get(code as usize).unwrap_or(&"?")
                    ),
                    other => panic!("filtered child ended with {other:?}"),
                }
            }
        }
    }
}
