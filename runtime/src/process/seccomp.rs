//! Seccomp for the process backend: the spec's `linux.seccomp` is compiled to a BPF program in
//! the parent (before fork) and installed by the child as its last step before `execve`.

use nix::errno::Errno;
use oci_spec::runtime::LinuxSeccomp;

/// A compiled classic-BPF seccomp program.
pub type Program = seccompiler::BpfProgram;

/// Compile `profile` for the running architecture.
///
/// This is the single place where the OCI profile meets the BPF compiler of
/// `crate::spec::seccomp`. Returns `Ok(None)` when this build has no such compiler: the
/// caller then reports seccomp as not enforced.
pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<Option<Program>, String> {
    let _ = profile;
    Ok(None)
}

/// Whether this build can enforce seccomp profiles (the compiler is present).
pub fn supported() -> bool {
    matches!(compile(&LinuxSeccomp::default()), Ok(Some(_)))
}

/// Install `prog` on the calling thread with `seccomp(SECCOMP_SET_MODE_FILTER)`.
///
/// Unlike `seccompiler::apply_filter`, this does not turn on no_new_privs: the spec decides
/// that. Without no_new_privs the caller must still hold CAP_SYS_ADMIN.
pub(crate) fn install(prog: &Program) -> Result<(), Errno> {
    if prog.is_empty() {
        return Ok(());
    }
    let len = u16::try_from(prog.len()).map_err(|_| Errno::E2BIG)?;
    let fprog = libc::sock_fprog {
        len,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(Errno::last());
    }
    Ok(())
}
