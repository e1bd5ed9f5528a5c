//! Seccomp for the process backend: the spec's `linux.seccomp` is compiled to a BPF program in
//! the parent (before fork) and installed by the child as its last step before `execve`.

use nix::errno::Errno;
use oci_spec::runtime::LinuxSeccomp;

use crate::spec::seccomp::{compile_bpf, SeccompArch};

/// A compiled seccomp profile: classic-BPF filters, installed in order.
pub type Program = Vec<seccompiler::BpfProgram>;

/// Compile `profile` for the running architecture with the spec module's compiler.
///
/// `Ok(None)` when this architecture has no compiler support: the caller then reports seccomp
/// as not enforced.
pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<Option<Program>, String> {
    let Some(arch) = SeccompArch::host() else {
        return Ok(None);
    };
    compile_bpf(profile, arch)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Whether this build can enforce seccomp profiles on this architecture.
pub fn supported() -> bool {
    SeccompArch::host().is_some()
}

/// Install every filter of `prog`, in order (see [`install_one`]).
pub(crate) fn install(prog: &Program) -> Result<(), Errno> {
    if prog.is_empty() {
        // Installing nothing would leave the process unconfined.
        return Err(Errno::EINVAL);
    }
    prog.iter().try_for_each(install_one)
}

/// Install one filter on the calling thread with `seccomp(SECCOMP_SET_MODE_FILTER)`.
///
/// Unlike `seccompiler::apply_filter`, this does not turn on no_new_privs: the spec decides
/// that. Without no_new_privs the caller must still hold CAP_SYS_ADMIN.
fn install_one(prog: &seccompiler::BpfProgram) -> Result<(), Errno> {
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
